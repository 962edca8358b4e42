/* SPDX-License-Identifier: MIT */
/*
 * req.c: the answer calls the command handlers use (control.h), passed to
 * the transport that brought the request: the control socket (server.c)
 * or the HTTP API (src/http/api.c). Nothing here knows which.
 *
 * Invariant: a request gets exactly one answer; after it req is not
 * touched again (the transport frees it).
 */
#include <stdarg.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>
#include <jansson.h>

#include "control/control.h"
#include "util/util.h"

/* j as compact JSON text in a new evbuffer; takes j (NULL: null). */
static struct evbuffer *
control_json_text(json_t *j)
{
	struct evbuffer *b = evbuffer_new();
	char *s = j ? json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;

	if (j != NULL && s == NULL)
		SL_PANIC("json_dumps failed");
	if (s != NULL)
		evbuffer_add(b, s, strlen(s));
	else
		evbuffer_add(b, "null", 4);
	free(s);
	json_decref(j);
	return b;
}

void
control_reply(struct control_req *req, json_t *result)
{
	req->ops->answer(req, control_json_text(result), 0, NULL, NULL, NULL,
	    NULL);
}

void
control_reply_raw(struct control_req *req, struct evbuffer *result)
{
	req->ops->answer(req, result, 0, NULL, NULL, NULL, NULL);
}

void
control_reply_then(struct control_req *req, json_t *result,
    void (*done)(void *), void *arg)
{
	req->ops->answer(req, control_json_text(result), 0, NULL, NULL, done,
	    arg);
}

void
control_reply_err(struct control_req *req, enum control_err err,
    json_t *unknown, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	req->ops->answer(req, NULL, err ? err : CONTROL_ERR_FAILED, msg,
	    unknown, NULL, NULL);
}

const char *
control_req_who(const struct control_req *req)
{
	return req->who;
}

int
control_req_gone(struct control_req *req)
{
	return req->ops->gone(req);
}

void
control_stream_begin(struct control_req *req, const char *key,
    enum control_stream_kind kind)
{
	if (SL_NEVER(req->streaming))
		return;
	req->streaming = 1;
	req->ops->begin(req, key, kind);
}

void
control_stream_item(struct control_req *req, const char *json, size_t len)
{
	req->ops->item(req, json, len);
}

int
control_stream_full(struct control_req *req)
{
	return req->ops->backlog(req) > CONTROL_STREAM_HIGH;
}

void
control_stream_wait(struct control_req *req, void (*fn)(void *), void *arg)
{
	req->ops->wait(req, fn, arg);
}
