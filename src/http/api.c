/* SPDX-License-Identifier: MIT */
/*
 * api.c: the JSON API under /api/v1/ (api.h, docs/HTTP.md). Each route
 * reads what it needs from the path, the query or the JSON body, makes the
 * control command's arguments of it and hands the command to the same
 * dispatcher as the control socket; the answer comes back through
 * control_req_ops (api_ops below) and goes out as one HTTP response:
 *
 *   ok             200 and the result (a streamed answer assembled: its
 *                  items under their key, the rest of the result beside)
 *   bad request    400 {"error": ...}      not found     404 (+ "unknown")
 *   cursor gone    410                     failed        500
 *   unavailable    503
 *
 * So there is one implementation of every command (src/sluiced/ctl*.c),
 * and this file only translates. A new feature adds its routes here or in
 * its own table (http_server_add_routes).
 */
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <jansson.h>

#include "http/api.h"
#include "http/http.h"
#include "util/util.h"

struct http_api {
	control_cmd_fn *fn;
	void *arg;
};

/* A request of the API as the command handlers see it. */
struct api_req {
	struct control_req r;		/* first */
	struct http_req *h;
	char *key;			/* a streamed answer's key */
	enum control_stream_kind kind;
	struct evbuffer *items;
	size_t nitems;
};

static const struct control_req_ops api_ops;

static int
api_status(enum control_err err)
{
	switch (err) {
	case CONTROL_ERR_BADARG: return 400;
	case CONTROL_ERR_NOTFOUND: return 404;
	case CONTROL_ERR_GONE: return 410;
	case CONTROL_ERR_UNAVAILABLE: return 503;
	default: return 500;
	}
}

static void
api_req_free(struct api_req *a)
{
	if (a->items != NULL)
		evbuffer_free(a->items);
	free(a->key);
	free(a);
}

/* The final answer: the result, with a stream's items under their key. */
static void
api_answer(struct control_req *r, struct evbuffer *result,
    enum control_err err, const char *msg, json_t *unknown,
    void (*done)(void *), void *done_arg)
{
	struct api_req *a = (struct api_req *)r;
	struct evbuffer *out;
	size_t rlen;
	const char *rp;

	if (err != 0) {
		if (result != NULL)
			evbuffer_free(result);
		http_reply_error(a->h, api_status(err), unknown, "%s", msg);
	} else if (a->key == NULL) {
		evbuffer_add(result, "\n", 1);
		http_reply(a->h, 200, "application/json", result);
	} else {
		out = evbuffer_new();
		evbuffer_add_printf(out, "{\"%s\":%s", a->key,
		    a->kind == CONTROL_STREAM_TEXT ? "\"" : "[");
		evbuffer_add_buffer(out, a->items);
		evbuffer_add(out, a->kind == CONTROL_STREAM_TEXT ? "\"" : "]",
		    1);
		/* the result's own members beside it */
		rlen = evbuffer_get_length(result);
		rp = (const char *)evbuffer_pullup(result, -1);
		if (rlen > 2 && rp[0] == '{') {
			evbuffer_add(out, ",", 1);
			evbuffer_add(out, rp + 1, rlen - 1);
		} else {
			evbuffer_add(out, "}", 1);
		}
		evbuffer_add(out, "\n", 1);
		evbuffer_free(result);
		http_reply(a->h, 200, "application/json", out);
	}
	api_req_free(a);
	if (done != NULL)
		done(done_arg);
}

static void
api_begin(struct control_req *r, const char *key,
    enum control_stream_kind kind)
{
	struct api_req *a = (struct api_req *)r;

	a->key = xstrdup(key);
	a->kind = kind;
	a->items = evbuffer_new();
}

/* Items gather in memory: an API answer is bounded (a page, a summary,
 * one message's body). */
static void
api_item(struct control_req *r, const char *json, size_t len)
{
	struct api_req *a = (struct api_req *)r;

	if (a->kind == CONTROL_STREAM_TEXT) {
		/* a JSON string: its content joins the others' */
		if (len >= 2)
			evbuffer_add(a->items, json + 1, len - 2);
		return;
	}
	if (a->nitems++ > 0)
		evbuffer_add(a->items, ",", 1);
	evbuffer_add(a->items, json, len);
}

static size_t
api_backlog(struct control_req *r)
{
	return 0;
}

static void
api_wait(struct control_req *r, void (*fn)(void *), void *arg)
{
	fn(arg);
}

static int
api_gone(struct control_req *r)
{
	return http_req_gone(((struct api_req *)r)->h);
}

static const struct control_req_ops api_ops = {
	.answer = api_answer,
	.begin = api_begin,
	.item = api_item,
	.backlog = api_backlog,
	.wait = api_wait,
	.gone = api_gone,
};

/* Run cmd with args (taken) for the HTTP request h. */
static void
api_run(struct http_api *api, struct http_req *h, const char *cmd,
    json_t *args)
{
	struct api_req *a = xcalloc(1, sizeof(*a));

	a->r.ops = &api_ops;
	a->h = h;
	snprintf(a->r.who, sizeof(a->r.who), "http %s", http_req_peer(h));
	api->fn(api->arg, &a->r, cmd, args);
	json_decref(args);
}

/* ---- the routes ---- */

static void
api_status_get(void *arg, struct http_req *h)
{
	api_run(arg, h, "status", json_object());
}

static void
api_summary_get(void *arg, struct http_req *h)
{
	api_run(arg, h, "queue.summary", json_object());
}

/* GET /api/v1/queue?cursor=...&limit=...&domain=...&state=... */
static void
api_queue_get(void *arg, struct http_req *h)
{
	static const char *const keys[] = { "cursor", "domain", "state" };
	const char *limit = http_req_query(h, "limit");
	json_t *args = json_object();
	char *end;
	long n = 100;

	if (limit != NULL) {
		n = strtol(limit, &end, 10);
		if (limit[0] == '\0' || *end != '\0' || n < 1 || n > 1000) {
			json_decref(args);
			http_reply_error(h, 400, NULL, "limit must be a number "
			    "from 1 to 1000");
			return;
		}
	}
	json_object_set_new(args, "limit", json_integer(n));
	for (size_t i = 0; i < SL_ARRAY_LEN(keys); i++) {
		const char *v = http_req_query(h, keys[i]);

		if (v != NULL && sl_utf8_valid(v, strlen(v)))
			json_object_set_new(args, keys[i], json_string(v));
		else if (v != NULL)
			json_object_set_new(args, keys[i], json_integer(0));
	}
	api_run(arg, h, "queue.list", args);
}

/* 1 if the query parameter name is "1" or "true". */
static int
api_query_true(struct http_req *h, const char *name)
{
	const char *v = http_req_query(h, name);

	return v != NULL && (strcmp(v, "1") == 0 || strcmp(v, "true") == 0);
}

/* The query parameters named (UTF-8 ones) as a JSON object. */
static json_t *
api_query_args(struct http_req *h, const char *const *keys, size_t n)
{
	json_t *args = json_object();

	for (size_t i = 0; i < n; i++) {
		const char *v = http_req_query(h, keys[i]);

		if (v != NULL && sl_utf8_valid(v, strlen(v)))
			json_object_set_new(args, keys[i], json_string(v));
	}
	return args;
}

/* GET /api/v1/queue/MID[?body=1][?headers=1] */
static void
api_message_get(void *arg, struct http_req *h)
{
	const char *mid = http_req_tail(h);

	if (!sl_utf8_valid(mid, strlen(mid))) {
		http_reply_error(h, 404, NULL, "no such message");
		return;
	}
	api_run(arg, h, "queue.show", json_pack("{s:s,s:b,s:b}", "mid", mid,
	    "body", api_query_true(h, "body"), "headers",
	    api_query_true(h, "headers")));
}

/* GET /api/v1/dashboard */
static void
api_dashboard_get(void *arg, struct http_req *h)
{
	api_run(arg, h, "dashboard", json_object());
}

/* GET /api/v1/destinations?sort=&order=&q=&state=&limit=&offset= */
static void
api_destinations_get(void *arg, struct http_req *h)
{
	static const char *const keys[] = { "sort", "order", "q", "state",
		"limit", "offset" };

	api_run(arg, h, "queue.destinations", api_query_args(h, keys,
	    SL_ARRAY_LEN(keys)));
}

/* GET /api/v1/destinations/NAME[?messages=N&after=MID] */
static void
api_destination_get(void *arg, struct http_req *h)
{
	static const char *const keys[] = { "messages", "after" };
	const char *name = http_req_tail(h);
	json_t *args;

	if (!sl_utf8_valid(name, strlen(name))) {
		http_reply_error(h, 404, NULL, "no such destination");
		return;
	}
	args = api_query_args(h, keys, SL_ARRAY_LEN(keys));
	json_object_set_new(args, "name", json_string(name));
	api_run(arg, h, "queue.destination", args);
}

/* The request's body as a JSON object, or NULL after a 400 (which says
 * what the body should be: hint). */
static json_t *
api_body_object(struct http_req *h, const char *hint)
{
	struct evbuffer *b = http_req_body(h);
	size_t len = b ? evbuffer_get_length(b) : 0;
	json_error_t je;
	json_t *o;

	if (len == 0) {
		http_reply_error(h, 400, NULL, "a JSON body is needed: %s",
		    hint);
		return NULL;
	}
	o = json_loadb((const char *)evbuffer_pullup(b, -1), len,
	    JSON_REJECT_DUPLICATES, &je);
	if (o == NULL) {
		http_reply_error(h, 400, NULL, "the body is not JSON: %s "
		    "(line %d, column %d)", je.text, je.line, je.column);
		return NULL;
	}
	if (!json_is_object(o)) {
		json_decref(o);
		http_reply_error(h, 400, NULL, "the body must be a JSON "
		    "object");
		return NULL;
	}
	return o;
}

/* POST /api/v1/queue/ACTION: the action is the last path segment. */
static void
api_action_post(void *arg, struct http_req *h)
{
	const char *path = http_req_path(h);
	const char *action = strrchr(path, '/') + 1;
	char cmd[32];
	json_t *args;

	if ((args = api_body_object(h, "{\"mids\": [...]}, {\"domain\": "
	    "\"...\"} or {\"all\": true}")) == NULL)
		return;
	snprintf(cmd, sizeof(cmd), "queue.%s", action);
	api_run(arg, h, cmd, args);
}

/* GET /api/v1/failures[?batch=B] */
static void
api_failures_get(void *arg, struct http_req *h)
{
	static const char *const keys[] = { "batch" };

	api_run(arg, h, "failures.list", api_query_args(h, keys,
	    SL_ARRAY_LEN(keys)));
}

/* POST /api/v1/failures/retry|purge {ids|batch|all} */
static void
api_failures_post(void *arg, struct http_req *h)
{
	char cmd[32];
	json_t *args;

	if ((args = api_body_object(h, "{\"ids\": [...]}, {\"batch\": "
	    "\"...\"} or {\"all\": true}")) == NULL)
		return;
	snprintf(cmd, sizeof(cmd), "failures.%s",
	    strrchr(http_req_path(h), '/') + 1);
	api_run(arg, h, cmd, args);
}

/* GET /api/v1/archive?rcpt=A|mid=M|batch=B */
static void
api_archive_get(void *arg, struct http_req *h)
{
	static const char *const keys[] = { "rcpt", "mid", "batch" };

	api_run(arg, h, "archive.find", api_query_args(h, keys,
	    SL_ARRAY_LEN(keys)));
}

/* GET /api/v1/archive/ID: {id, size, message_base64} */
static void
api_archive_show(void *arg, struct http_req *h)
{
	const char *id = http_req_tail(h);

	if (!sl_utf8_valid(id, strlen(id))) {
		http_reply_error(h, 404, NULL, "no such archived message");
		return;
	}
	api_run(arg, h, "archive.show", json_pack("{s:s}", "id", id));
}

/* GET /api/v1/shaping */
static void
api_shaping_get(void *arg, struct http_req *h)
{
	api_run(arg, h, "shaping.status", json_object());
}

/* POST /api/v1/shaping/resume {"site": "NAME"} */
static void
api_shaping_resume_post(void *arg, struct http_req *h)
{
	json_t *args = api_body_object(h, "{\"site\": \"NAME\"}");

	if (args != NULL)
		api_run(arg, h, "shaping.resume", args);
}

/* POST /api/v1/drain, /api/v1/undrain (no body) */
static void
api_drain_post(void *arg, struct http_req *h)
{
	api_run(arg, h, strrchr(http_req_path(h), '/') + 1, json_object());
}

#define API_GET(path, fn) \
	{ path, HTTP_GET, HTTP_AUTH_TOKEN, 0, fn }
/* What the dashboard reads of the queue: the token unless [http]
 * dashboard_public; actions always need it. */
#define API_READ(path, fn) \
	{ path, HTTP_GET, HTTP_AUTH_READ, 0, fn }
#define API_POST(path, fn, max) \
	{ path, HTTP_POST, HTTP_AUTH_TOKEN, max, fn }

static const struct http_route api_routes[] = {
	API_READ("/api/v1/status", api_status_get),
	API_READ("/api/v1/queue", api_queue_get),
	API_READ("/api/v1/queue/summary", api_summary_get),
	API_POST("/api/v1/queue/flush", api_action_post, HTTP_API_MAX_BODY),
	API_POST("/api/v1/queue/hold", api_action_post, HTTP_API_MAX_BODY),
	API_POST("/api/v1/queue/release", api_action_post, HTTP_API_MAX_BODY),
	API_POST("/api/v1/queue/delete", api_action_post, HTTP_API_MAX_BODY),
	API_POST("/api/v1/queue/bounce", api_action_post, HTTP_API_MAX_BODY),
	API_READ("/api/v1/queue/*", api_message_get),
	API_READ("/api/v1/dashboard", api_dashboard_get),
	API_READ("/api/v1/destinations", api_destinations_get),
	API_READ("/api/v1/destinations/*", api_destination_get),
	API_GET("/api/v1/shaping", api_shaping_get),
	API_POST("/api/v1/shaping/resume", api_shaping_resume_post,
	    HTTP_API_MAX_BODY),
	API_POST("/api/v1/drain", api_drain_post, 0),
	API_POST("/api/v1/undrain", api_drain_post, 0),
	API_GET("/api/v1/failures", api_failures_get),
	API_POST("/api/v1/failures/retry", api_failures_post, HTTP_API_MAX_BODY),
	API_POST("/api/v1/failures/purge", api_failures_post, HTTP_API_MAX_BODY),
	API_GET("/api/v1/archive", api_archive_get),
	API_GET("/api/v1/archive/*", api_archive_show),
};

struct http_api *
http_api_new(struct http_server *srv, control_cmd_fn *fn, void *arg)
{
	struct http_api *api = xcalloc(1, sizeof(*api));

	api->fn = fn;
	api->arg = arg;
	http_server_add_routes(srv, api_routes, SL_ARRAY_LEN(api_routes), api);
	return api;
}

void
http_api_free(struct http_api *api)
{
	free(api);
}
