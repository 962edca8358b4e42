/* SPDX-License-Identifier: MIT */
/*
 * api.h: the JSON API under /api/v1/ (docs/HTTP.md): routes of the HTTP
 * listener (http.h) that turn each request into a control command and
 * answer it through the same handler as the control socket (control.h).
 *
 *   GET  /api/v1/status                 status
 *   GET  /api/v1/queue/summary          queue.summary
 *   GET  /api/v1/queue?cursor&limit&domain&state   queue.list, one page
 *   GET  /api/v1/queue/MID[?body=1]     queue.show
 *   POST /api/v1/queue/flush|hold|release|delete|bounce   queue.*, with a
 *        body {"mids": [...]}, {"domain": "..."} or {"all": true}
 *   POST /api/v1/drain, /api/v1/undrain drain, undrain
 *   GET  /api/v1/dashboard              dashboard (totals, rates, queue)
 *   GET  /api/v1/destinations?sort&order&q&state&limit&offset
 *                                       queue.destinations, one page
 *   GET  /api/v1/destinations/NAME      queue.destination
 *
 * Every route needs the bearer token (server.c checks it), except that
 * with [http] dashboard_public the queue's reading routes (status, queue,
 * dashboard, destinations) answer without it. Threads: the
 * event loop thread.
 */
#ifndef SL_HTTP_API_H
#define SL_HTTP_API_H

#include "control/control.h"

struct http_server;
struct http_api;

/* The largest body a POST route takes. */
#define HTTP_API_MAX_BODY (1024 * 1024)

/* Add the API's routes to srv; commands go to fn(arg, ...). Free with
 * http_api_free after srv. */
struct http_api *http_api_new(struct http_server *srv, control_cmd_fn *fn,
    void *arg);
void http_api_free(struct http_api *api);

#endif
