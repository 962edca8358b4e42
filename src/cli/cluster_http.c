/* SPDX-License-Identifier: MIT */
/*
 * cluster_http.c: the HTTP side of `sluice cluster`: GET requests to many
 * nodes' APIs at once (libevent's evhttp client, one event loop), each
 * answer handed to the caller as JSON, or the reason it did not come.
 *
 * Owns the loop, one connection per node, and the requests in flight.
 * Callers: cmd_cluster.c.
 *
 * Invariants
 *  1. Each request's callback runs exactly once: a JSON answer (2xx), or
 *     an error naming the node's failure (refused, timed out, HTTP status
 *     with the API's "error" text, not JSON).
 *  2. Nothing waits longer than the timeout given without an answer: the
 *     connection's timeout bounds the connect, each read and each write.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "cli/cluster.h"
#include "util/util.h"

/* The largest answer taken: a page of 1000 messages is far less. */
#define CL_MAX_BODY (64 * 1024 * 1024)

struct cl_req {
	struct cl_node *node;
	cl_answer_fn *cb;
	void *arg;
	int error;		/* an evhttp_request_error seen */
	int has_error;
};

struct cl_client {
	struct event_base *base;
	char *token;
	int timeout;
	int inflight;
};

struct cl_client *
cl_client_new(const char *token, int timeout)
{
	struct cl_client *cl = xcalloc(1, sizeof(*cl));

	cl->base = event_base_new();
	if (cl->base == NULL)
		SL_PANIC("cluster: event_base_new failed");
	cl->token = token ? xstrdup(token) : NULL;
	cl->timeout = timeout;
	return cl;
}

void
cl_client_run(struct cl_client *cl)
{
	while (cl->inflight > 0)
		event_base_loop(cl->base, EVLOOP_ONCE);
}

void
cl_client_free(struct cl_client *cl)
{
	if (cl == NULL)
		return;
	event_base_free(cl->base);
	free(cl->token);
	free(cl);
}

int
cl_node_init(struct cl_node *n, struct cl_client *cl, const char *name,
    const char *url, char *err, size_t errlen)
{
	struct evhttp_uri *u = evhttp_uri_parse(url);
	const char *host;
	int port;

	memset(n, 0, sizeof(*n));
	n->cl = cl;
	n->name = xstrdup(name);
	n->url = xstrdup(url);
	if (u == NULL || evhttp_uri_get_scheme(u) == NULL ||
	    strcmp(evhttp_uri_get_scheme(u), "http") != 0 ||
	    (host = evhttp_uri_get_host(u)) == NULL || *host == '\0') {
		snprintf(err, errlen, "%s: '%s' is not http://host:port", name,
		    url);
		if (u != NULL)
			evhttp_uri_free(u);
		return -1;
	}
	port = evhttp_uri_get_port(u);
	n->host = xstrdup(host);
	n->port = port > 0 ? port : 80;
	evhttp_uri_free(u);
	return 0;
}

void
cl_node_clean(struct cl_node *n)
{
	if (n->conn != NULL)
		evhttp_connection_free(n->conn);
	free(n->name);
	free(n->url);
	free(n->host);
	free(n->error);
	memset(n, 0, sizeof(*n));
}

static const char *
cl_error_text(int e)
{
	switch (e) {
	case EVREQ_HTTP_TIMEOUT:
		return "timed out";
	case EVREQ_HTTP_EOF:
		return "connection refused or closed";
	case EVREQ_HTTP_INVALID_HEADER:
		return "not an HTTP answer";
	case EVREQ_HTTP_BUFFER_ERROR:
		return "connection error";
	case EVREQ_HTTP_DATA_TOO_LONG:
		return "answer too long";
	default:
		return "request failed";
	}
}

static void
cl_req_error(enum evhttp_request_error e, void *arg)
{
	struct cl_req *r = arg;

	r->error = (int)e;
	r->has_error = 1;
}

static void
cl_req_done(struct evhttp_request *req, void *arg)
{
	struct cl_req *r = arg;
	struct cl_node *n = r->node;
	char why[512];
	json_t *j = NULL;
	int code = req ? evhttp_request_get_response_code(req) : 0;

	n->cl->inflight--;
	if (code == 0) {
		snprintf(why, sizeof(why), "%s", r->has_error ?
		    cl_error_text(r->error) : "connection refused or closed");
	} else {
		struct evbuffer *in = evhttp_request_get_input_buffer(req);
		size_t len = evbuffer_get_length(in);
		json_error_t je;
		j = json_loadb((const char *)evbuffer_pullup(in, -1), len, 0,
		    &je);
		if (code / 100 == 2 && j != NULL) {
			r->cb(r->arg, n, j, NULL);
			json_decref(j);
			free(r);
			return;
		}
		snprintf(why, sizeof(why), "HTTP %d%s%s", code,
		    json_is_string(json_object_get(j, "error")) ? ": " : "",
		    json_is_string(json_object_get(j, "error")) ?
		    json_string_value(json_object_get(j, "error")) :
		    code / 100 == 2 ? " with a body that is not JSON" : "");
		json_decref(j);
	}
	r->cb(r->arg, n, NULL, why);
	free(r);
}

void
cl_get(struct cl_node *n, const char *path, cl_answer_fn *cb, void *arg)
{
	struct cl_client *cl = n->cl;
	struct evhttp_request *req;
	struct evkeyvalq *h;
	struct cl_req *r = xcalloc(1, sizeof(*r));
	char auth[1100];

	r->node = n;
	r->cb = cb;
	r->arg = arg;
	if (n->conn == NULL) {
		n->conn = evhttp_connection_base_new(cl->base, NULL, n->host,
		    (unsigned short)n->port);
		if (n->conn == NULL)
			SL_PANIC("cluster: evhttp_connection_base_new failed");
		evhttp_connection_set_timeout(n->conn, cl->timeout);
		evhttp_connection_set_retries(n->conn, 0);
		evhttp_connection_set_max_body_size(n->conn, CL_MAX_BODY);
	}
	req = evhttp_request_new(cl_req_done, r);
	evhttp_request_set_error_cb(req, cl_req_error);
	h = evhttp_request_get_output_headers(req);
	evhttp_add_header(h, "Host", n->host);
	evhttp_add_header(h, "Accept", "application/json");
	if (cl->token != NULL) {
		snprintf(auth, sizeof(auth), "Bearer %s", cl->token);
		evhttp_add_header(h, "Authorization", auth);
	}
	cl->inflight++;
	if (evhttp_make_request(n->conn, req, EVHTTP_REQ_GET, path) != 0) {
		/* evhttp freed req; answer as a failure (invariant 1) */
		cl->inflight--;
		r->cb(r->arg, n, NULL, "request failed");
		free(r);
	}
}
