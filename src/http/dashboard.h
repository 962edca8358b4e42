/* SPDX-License-Identifier: MIT */
/*
 * dashboard.h: the queue dashboard's page at / on sluiced's HTTP listener
 * (http.h): HTML, CSS and JavaScript compiled in from src/http/www and
 * src/util/www (scripts/embed.sh). The page holds no data; it reads the
 * API (api.c) with the token the operator gives it, so these routes need
 * none. Threads: the event loop thread.
 */
#ifndef SL_HTTP_DASHBOARD_H
#define SL_HTTP_DASHBOARD_H

struct http_server;

/* Add GET / and the page's files to srv. */
void dashboard_add_routes(struct http_server *srv);

#endif
