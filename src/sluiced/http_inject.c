/* SPDX-License-Identifier: MIT */
/*
 * http_inject.c: POST /api/v1/inject, a route of the one HTTP listener
 * (src/http: its token check, connection cap and body bound), answered
 * once the batch is durable (sluiced_inject); docs/HTTP.md. The body's
 * chains move to the injection (no copy), so a client that leaves first
 * takes nothing from it; its answer is dropped by the listener.
 */
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "conf/conf.h"
#include "http/http.h"
#include "sluiced/bulk.h"
#include "sluiced/sluiced.h"
#include "util/util.h"

static void
bulk_http_answer(void *arg, int code, json_t *answer)
{
	struct http_req *req = arg;
	const char *e = json_string_value(json_object_get(answer, "error"));

	if (code >= 400 && e != NULL) {
		http_reply_error(req, code, NULL, "%s", e);
		json_decref(answer);
		return;
	}
	http_reply_json(req, code, answer);
}

static void
bulk_http_inject(void *arg, struct http_req *req)
{
	struct sluiced_bulk *b = arg;
	struct evbuffer *body = http_req_body(req), *own = evbuffer_new();

	if (body != NULL)
		evbuffer_add_buffer(own, body);
	sluiced_inject(b, own, http_req_header(req, "Idempotency-Key"),
	    http_req_peer(req), bulk_http_answer, req);
}

void
sluiced_bulk_routes(struct sluiced_bulk *b, struct http_server *srv)
{
	b->routes[0] = (struct http_route){ "/api/v1/inject", HTTP_POST,
		HTTP_AUTH_TOKEN, (size_t)b->d->conf->inject_max_request_size,
		bulk_http_inject };
	http_server_add_routes(srv, b->routes, 1, b);
}
