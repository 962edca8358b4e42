/* SPDX-License-Identifier: MIT */
/*
 * http.h: sluiced's one HTTP listener ([http] listen): a route table, limits,
 * and one bearer-token check, on libevent's evhttp. /metrics and /healthz
 * (metrics.c) and the JSON API under /api/v1/ (api.c, docs/HTTP.md) are
 * routes in it; later features add theirs the same way.
 *
 *   static const struct http_route routes[] = {
 *       { "/api/v1/queue/summary", HTTP_GET, HTTP_AUTH_TOKEN, 0, fn, NULL },
 *       { "/api/v1/queue/ *",      HTTP_GET, HTTP_AUTH_TOKEN, 0, fn, NULL },
 *   };
 *   http_server_add_routes(srv, routes, n, arg);
 *
 * A route's path is exact, or ends in "/ *" (without the space): one more
 * path segment, whatever it is, read with http_req_tail(). The first route
 * whose path and method match answers; a path that matches with another
 * method gets 405 and an Allow header; none gets 404. Errors are JSON
 * ({"error": "..."}) with the reason.
 *
 * What the server enforces before any handler runs:
 *  - methods: GET and HEAD, or POST, as each route says (HEAD wherever GET
 *    is allowed); anything else 405 (or 501 from evhttp for methods it does
 *    not know);
 *  - sizes: request line and headers at most HTTP_MAX_HEADERS bytes; a
 *    body at most the route's max_body (0: none allowed), 413 beyond;
 *  - connections: at most [http] max_connections at once, the next ones
 *    are closed at once; an idle or slow connection closes after
 *    HTTP_TIMEOUT_S;
 *  - the token: a route with HTTP_AUTH_TOKEN needs "Authorization: Bearer
 *    TOKEN" with the token of [http] api_token_file (compared in constant
 *    time), else 401; with no token configured those routes answer 403.
 *    A route with HTTP_AUTH_READ is the same unless public reads are on
 *    (http_server_set_public_read): then a request without the token is
 *    answered if its Host names us (origin.c), else 403;
 *  - other origins: a POST that a browser says comes from a page of
 *    another origin (Origin, Sec-Fetch-Site) gets 403 whatever it
 *    carries. The token travels in a header, never a cookie, so another
 *    site's page could not send it anyway; this is the second lock.
 *
 * Handlers answer exactly once with http_reply*(), now or later (after a
 * spool commit, after slices of a long walk); if the client left first the
 * answer is dropped. Threads: the event loop thread.
 */
#ifndef SL_HTTP_H
#define SL_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct event_base;
struct evbuffer;
struct http_server;
struct http_req;

#define HTTP_MAX_HEADERS (8 * 1024)
#define HTTP_TIMEOUT_S 30
#define HTTP_MAX_TOKEN 4096

/* Methods a route takes (bits). */
enum {
	HTTP_GET = 1,		/* and HEAD */
	HTTP_POST = 2,
};

enum http_auth {
	HTTP_AUTH_NONE = 0,	/* anyone who can connect (/metrics, /healthz) */
	HTTP_AUTH_TOKEN,	/* the bearer token of [http] api_token_file */
	HTTP_AUTH_READ,		/* the token, unless public reads are on
				   ([http] dashboard_public) */
};

typedef void http_handler_fn(void *arg, struct http_req *req);

struct http_route {
	const char *path;	/* "/metrics", or "/api/v1/queue/" "*" */
	unsigned methods;	/* HTTP_GET | HTTP_POST */
	enum http_auth auth;
	size_t max_body;	/* bytes; 0: a request with a body gets 413 */
	http_handler_fn *fn;
};

/*
 * Listen on addr ("127.0.0.1:9025", "[::1]:9025") with at most
 * max_connections open at once. NULL with a message in err if it cannot.
 */
struct http_server *http_server_new(struct event_base *base, const char *addr,
    int max_connections, char *err, size_t errlen);
/* Close the listener and every connection; answers still due are dropped. */
void http_server_free(struct http_server *srv);
/* Add routes (the array is borrowed and must outlive srv); arg goes to
 * each handler. Routes added earlier match first. */
void http_server_add_routes(struct http_server *srv,
    const struct http_route *routes, size_t n, void *arg);
/* The bearer token from now on (copied); NULL: token routes answer 403. */
void http_server_set_token(struct http_server *srv, const char *token);
/* Public reads on or off ([http] dashboard_public); hostname (copied) is
 * a name the Host header may give besides addresses and localhost. */
void http_server_set_public_read(struct http_server *srv, int on,
    const char *hostname);
/* Use a new connection cap from now on (reload). */
void http_server_set_max_connections(struct http_server *srv, int n);
/* Open connections now; the port bound (useful with port 0). */
int http_server_nconns(const struct http_server *srv);
int http_server_port(const struct http_server *srv);

/*
 * Read the token from path: its first line without surrounding white
 * space; it must not be empty. Returns a new string, or NULL with a
 * message in err ("path: ...").
 */
char *http_token_load(const char *path, char *err, size_t errlen);
/* 1 if the Authorization header value is "Bearer <token>" (constant time
 * in the token's bytes). */
int http_token_ok(const char *header, const char *token);

/* ---- a request, for handlers ---- */

/* The path without the query, decoded. */
const char *http_req_path(const struct http_req *req);
/* What the last "*" segment of the route matched (decoded), or NULL. */
const char *http_req_tail(const struct http_req *req);
/* A query parameter (decoded), or NULL. */
const char *http_req_query(const struct http_req *req, const char *name);
/* A request header (any case), or NULL. */
const char *http_req_header(const struct http_req *req, const char *name);
/* 1 for HEAD: the body of the answer is not sent. */
int http_req_is_head(const struct http_req *req);
/* The request body (may be empty). */
struct evbuffer *http_req_body(const struct http_req *req);
/* "127.0.0.1:40212", for logs. */
const char *http_req_peer(const struct http_req *req);
/* 1 once the client went away: the answer will be dropped. */
int http_req_gone(const struct http_req *req);

/* Add a header to the answer (before http_reply*). */
void http_req_set_header(struct http_req *req, const char *name,
    const char *value);

/* Answer with body (taken and freed) of the given type; frees req. */
void http_reply(struct http_req *req, int code, const char *type,
    struct evbuffer *body);
/* Answer with j as compact JSON and a newline (takes j); frees req. */
void http_reply_json(struct http_req *req, int code, json_t *j);
/* Answer {"error": "<fmt>"} (and "unknown": [...] when given; taken). */
void http_reply_error(struct http_req *req, int code, json_t *unknown,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* The reason phrase of a status code ("Not Found"). */
const char *http_reason(int code);

/* ---- pure helpers (unit-tested) ---- */

/*
 * origin.c. 1 if a browser says the request comes from a page of another
 * origin: Sec-Fetch-Site (site) other than same-origin or none, or an
 * Origin that is not http(s)://host. Any may be NULL (not sent).
 */
int http_cross_origin(const char *origin, const char *host, const char *site);
/*
 * 1 if the Host header host names this server as a browser reached it: an
 * IP address, localhost (or a name under it), or one of names (a NULL-
 * terminated list; NULL for none). NULL (no Host) counts as local.
 */
int http_host_local(const char *host, const char *const *names);

/*
 * Match path against a route pattern: 1 if it matches, with the segment
 * that "*" matched copied into tail (at most tailsize-1 bytes; a longer one
 * does not match); 0 if not.
 */
int http_path_match(const char *pattern, const char *path, char *tail,
    size_t tailsize);

#endif
