/* SPDX-License-Identifier: MIT */
/*
 * server.c: the HTTP listener's router, limits and token check (http.h).
 *
 * evhttp parses requests and enforces the header and body size bounds we
 * give it (431/413 answers are its own); everything else passes through
 * http_dispatch: method, route, body size per route, token, then the
 * route's handler.
 *
 * The connection cap. libevent 2.1's evhttp has no setting for it, but it
 * lets us make each connection's bufferevent (evhttp_set_bevcb): that is
 * where a connection is counted, and right after evhttp has set the
 * connection up (same loop turn, before any I/O on it: http_conns_attach)
 * we hang a close callback on it, where it is uncounted; a connection over
 * the cap is closed there at once. evhttp passes the connection as the
 * bufferevent's callback argument, which is how we find it.
 *
 * Invariants
 *  1. srv->nconns is the number of connections evhttp holds open.
 *  2. Every struct http_req gets exactly one answer call; if the client (or
 *     the whole server) went first, the answer is dropped and req freed.
 *  3. A token route runs its handler only after http_token_ok().
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <netinet/in.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "conf/conf.h"
#include "http/http.h"
#include "log/log.h"
#include "util/util.h"

#define HTTP_MAX_PATH 1024

struct http_conn {
	struct http_server *srv;
	struct http_conn *prev, *next;
	struct bufferevent *bev;
	struct evhttp_connection *evcon;	/* NULL until attached */
	struct http_req *req;			/* waiting for its answer */
};

struct http_routes {
	struct http_routes *next;
	const struct http_route *routes;
	size_t n;
	void *arg;
};

struct http_req {
	struct http_server *srv;
	struct evhttp_request *ev;	/* NULL once evhttp freed it */
	int left;			/* the client went away */
	struct http_conn *conn;
	struct http_req *prev, *next;	/* srv->reqs: waiting for answers */
	char *path;
	char tail[HTTP_MAX_PATH];
	int has_tail;
	struct evkeyvalq query;
	char peer[64];
	int head;
};

struct http_server {
	struct event_base *base;
	struct evhttp *http;
	struct evhttp_bound_socket *bound;
	struct http_routes *routes, *routes_tail;
	size_t max_body;		/* the largest of the routes' */
	char *token;
	int public_read;		/* HTTP_AUTH_READ without the token */
	char *hostname;			/* a Host public reads may give */
	int max_conns;
	int nconns;
	struct http_conn *conns;	/* attached */
	struct http_conn *fresh;	/* counted, not attached yet */
	struct event *attach_ev;
	struct http_req *reqs;
	uint64_t refused;
	/* refusals logged (HTTP_REFUSED_*): the last, monotonic s, and how
	 * many were not logged since */
	int64_t refused_at[2];
	uint64_t refused_more[2];
};

/* ---- connections and the cap ---- */

static void
http_conn_unlink(struct http_conn **head, struct http_conn *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		*head = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
}

static void
http_conn_push(struct http_conn **head, struct http_conn *c)
{
	c->next = *head;
	c->prev = NULL;
	if (*head)
		(*head)->prev = c;
	*head = c;
}

/*
 * evhttp frees the connection: uncount it. A request still waiting for its
 * answer was either detached from the connection by evhttp (the client
 * left: the request is ours, and answering it frees it) or is freed with
 * the connection right after this call (evhttp_free): then forget it.
 */
static void
http_conn_closed(struct evhttp_connection *evcon, void *arg)
{
	struct http_conn *c = arg;
	struct http_server *srv = c->srv;
	struct http_req *req = c->req;

	if (req != NULL) {
		req->left = 1;
		req->conn = NULL;
		if (req->ev != NULL &&
		    evhttp_request_get_connection(req->ev) != NULL)
			req->ev = NULL;
	}
	http_conn_unlink(&srv->conns, c);
	srv->nconns--;
	free(c);
}

/* evhttp wants a bufferevent for a connection it just accepted. */
static struct bufferevent *
http_bevcb(struct event_base *base, void *arg)
{
	struct http_server *srv = arg;
	struct http_conn *c = xcalloc(1, sizeof(*c));

	c->srv = srv;
	c->bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	http_conn_push(&srv->fresh, c);
	srv->nconns++;
	event_active(srv->attach_ev, EV_TIMEOUT, 0);
	return c->bev;
}

/* After the accept callback: find each new connection, watch its close,
 * and close those over the cap. */
static void
http_conns_attach(evutil_socket_t fd, short what, void *arg)
{
	struct http_server *srv = arg;
	struct http_conn *c;
	void *cbarg;

	while ((c = srv->fresh) != NULL) {
		http_conn_unlink(&srv->fresh, c);
		bufferevent_getcb(c->bev, NULL, NULL, NULL, &cbarg);
		c->evcon = cbarg;
		http_conn_push(&srv->conns, c);
		evhttp_connection_set_closecb(c->evcon, http_conn_closed, c);
		if (srv->nconns > srv->max_conns) {
			if (srv->refused++ % 1000 == 0)
				log_warnx("http: more than %d connections; "
				    "closing the new ones (%llu so far)",
				    srv->max_conns,
				    (unsigned long long)srv->refused);
			evhttp_connection_free(c->evcon);
		}
	}
}

/* ---- answers ---- */

const char *
http_reason(int code)
{
	switch (code) {
	case 200: return "OK";
	case 202: return "Accepted";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 410: return "Gone";
	case 413: return "Payload Too Large";
	case 500: return "Internal Server Error";
	case 503: return "Service Unavailable";
	default: return "Unknown";
	}
}

static void
http_req_free(struct http_req *req)
{
	struct http_server *srv = req->srv;

	if (srv != NULL) {
		if (req->prev)
			req->prev->next = req->next;
		else
			srv->reqs = req->next;
		if (req->next)
			req->next->prev = req->prev;
	}
	if (req->conn != NULL)
		req->conn->req = NULL;
	evhttp_clear_headers(&req->query);
	free(req->path);
	free(req);
}

void
http_reply(struct http_req *req, int code, const char *type,
    struct evbuffer *body)
{
	struct evkeyvalq *h;

	if (req->ev != NULL) {
		h = evhttp_request_get_output_headers(req->ev);
		evhttp_add_header(h, "Content-Type", type);
		evhttp_add_header(h, "Cache-Control", "no-store");
		evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
		if (req->head) {
			/* RFC 9110 9.3.2: the length, not the body (evhttp
			 * 2.1 would send the body and no length) */
			char len[24];

			snprintf(len, sizeof(len), "%zu", body ?
			    evbuffer_get_length(body) : (size_t)0);
			evhttp_add_header(h, "Content-Length", len);
			evhttp_send_reply(req->ev, code, http_reason(code),
			    NULL);
		} else {
			evhttp_send_reply(req->ev, code, http_reason(code),
			    body);
		}
	}
	if (body != NULL)
		evbuffer_free(body);
	http_req_free(req);
}

void
http_reply_json(struct http_req *req, int code, json_t *j)
{
	struct evbuffer *b = evbuffer_new();
	char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);

	if (s == NULL)
		SL_PANIC("json_dumps failed");
	evbuffer_add(b, s, strlen(s));
	evbuffer_add(b, "\n", 1);
	free(s);
	json_decref(j);
	http_reply(req, code, "application/json", b);
}

void
http_reply_error(struct http_req *req, int code, json_t *unknown,
    const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	json_t *o;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	o = json_pack("{s:s}", "error", msg);
	if (o == NULL)	/* msg was not UTF-8 */
		o = json_pack("{s:s}", "error", "(unprintable error)");
	if (unknown != NULL)
		json_object_set_new(o, "unknown", unknown);
	http_reply_json(req, code, o);
}

/* ---- the token ---- */

char *
http_token_load(const char *path, char *err, size_t errlen)
{
	char buf[HTTP_MAX_TOKEN + 2], *tok;
	struct stat st;
	FILE *f;
	size_t n;

	if ((f = fopen(path, "r")) == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	if (fstat(fileno(f), &st) == 0 && (st.st_mode & 007) != 0)
		log_warnx("[http] api_token_file %s can be read by every "
		    "user: chmod 0600 or 0640", path);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
	tok = sl_strtrim(buf);
	if (tok[0] == '\0') {
		snprintf(err, errlen, "%s: no token in its first line", path);
		return NULL;
	}
	if (strlen(tok) >= HTTP_MAX_TOKEN) {
		snprintf(err, errlen, "%s: the token is longer than %d bytes",
		    path, HTTP_MAX_TOKEN - 1);
		return NULL;
	}
	for (const char *p = tok; *p; p++) {
		if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f) {
			snprintf(err, errlen, "%s: the token has a space or a "
			    "byte that is not printable ASCII", path);
			return NULL;
		}
	}
	return xstrdup(tok);
}

/* SHA-256 of both sides, then CRYPTO_memcmp: the time does not depend on
 * where the first difference is, nor on the token's length. */
int
http_token_ok(const char *header, const char *token)
{
	unsigned char a[EVP_MAX_MD_SIZE], b[EVP_MAX_MD_SIZE];
	unsigned int alen = 0, blen = 0;
	const char *given;

	if (header == NULL || token == NULL ||
	    !sl_strncaseeq(header, "Bearer ", 7))
		return 0;
	given = header + 7;
	while (*given == ' ')
		given++;
	if (EVP_Digest(given, strlen(given), a, &alen, EVP_sha256(), NULL) != 1
	    || EVP_Digest(token, strlen(token), b, &blen, EVP_sha256(),
	    NULL) != 1 || alen != blen)
		return 0;
	return CRYPTO_memcmp(a, b, alen) == 0;
}

/* ---- routing ---- */

int
http_path_match(const char *pattern, const char *path, char *tail,
    size_t tailsize)
{
	size_t plen = strlen(pattern), rest;

	if (plen >= 2 && strcmp(pattern + plen - 2, "/*") == 0) {
		if (strncmp(pattern, path, plen - 1) != 0)
			return 0;
		path += plen - 1;
		rest = strlen(path);
		if (rest == 0 || rest >= tailsize || strchr(path, '/') != NULL)
			return 0;
		memcpy(tail, path, rest + 1);
		return 1;
	}
	return strcmp(pattern, path) == 0;
}

static void
http_allow_header(struct http_req *req, unsigned methods)
{
	char allow[32] = "";

	if (methods & HTTP_GET)
		sl_strlcpy(allow, "GET, HEAD", sizeof(allow));
	if (methods & HTTP_POST)
		snprintf(allow + strlen(allow), sizeof(allow) - strlen(allow),
		    "%sPOST", allow[0] ? ", " : "");
	evhttp_add_header(evhttp_request_get_output_headers(req->ev), "Allow",
	    allow);
}

/* The route for req, or NULL after answering 404 or 405. */
static const struct http_route *
http_route_find(struct http_server *srv, struct http_req *req, unsigned m,
    void **arg)
{
	unsigned seen = 0;
	char tail[HTTP_MAX_PATH];

	for (struct http_routes *rs = srv->routes; rs; rs = rs->next) {
		for (size_t i = 0; i < rs->n; i++) {
			const struct http_route *r = &rs->routes[i];

			if (!http_path_match(r->path, req->path, tail,
			    sizeof(tail)))
				continue;
			seen |= r->methods;
			if (!(r->methods & m))
				continue;
			if (strchr(r->path, '*') != NULL) {
				memcpy(req->tail, tail, sizeof(tail));
				req->has_tail = 1;
			}
			*arg = rs->arg;
			return r;
		}
	}
	if (seen) {
		http_allow_header(req, seen);
		http_reply_error(req, 405, NULL, "%s takes %s", req->path,
		    (seen & HTTP_GET) && (seen & HTTP_POST) ? "GET or POST" :
		    (seen & HTTP_GET) ? "GET (or HEAD)" : "POST");
	} else {
		http_reply_error(req, 404, NULL, "no such resource: %s",
		    req->path);
	}
	return NULL;
}

/* Fill path, query and peer from the evhttp request; -1 after a 400. */
static int
http_req_parse(struct http_req *req)
{
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req->ev);
	struct evhttp_connection *evcon =
	    evhttp_request_get_connection(req->ev);
	const char *p = uri ? evhttp_uri_get_path(uri) : NULL;
	const char *q = uri ? evhttp_uri_get_query(uri) : NULL;
	char *addr = NULL;
	ev_uint16_t port = 0;

	TAILQ_INIT(&req->query);
	if (evcon != NULL) {
		evhttp_connection_get_peer(evcon, &addr, &port);
		snprintf(req->peer, sizeof(req->peer), "%s:%u",
		    addr ? addr : "?", (unsigned)port);
	}
	if (p == NULL || p[0] != '/' || strlen(p) >= HTTP_MAX_PATH ||
	    (req->path = evhttp_uridecode(p, 0, NULL)) == NULL ||
	    strlen(req->path) != strcspn(req->path, "\0")) {
		http_reply_error(req, 400, NULL, "a bad request path");
		return -1;
	}
	if (q != NULL && evhttp_parse_query_str(q, &req->query) != 0) {
		http_reply_error(req, 400, NULL, "a bad query string");
		return -1;
	}
	return 0;
}

enum { HTTP_REFUSED_TOKEN, HTTP_REFUSED_ORIGIN };

/* One line per second at most of each kind: a client guessing tokens (or
 * a page firing requests) cannot flood the log. */
static void
http_log_refused(struct http_server *srv, struct http_req *req, int kind)
{
	int64_t now = sl_mono_ms() / 1000;
	char more[24];

	if (now == srv->refused_at[kind]) {
		srv->refused_more[kind]++;
		return;
	}
	snprintf(more, sizeof(more), "%llu",
	    (unsigned long long)srv->refused_more[kind]);
	log_ev(LOG_INFO, NULL, kind == HTTP_REFUSED_ORIGIN ?
	    "http: cross-origin request refused" : "http: unauthorized",
	    "peer", req->peer, "path", req->path,
	    srv->refused_more[kind] ? "more" : NULL, more, NULL);
	srv->refused_at[kind] = now;
	srv->refused_more[kind] = 0;
}

/*
 * The token check, the one place it is made (invariant 3): 1 if route r
 * may run for req; else req is answered (401, or 403).
 */
static int
http_authorized(struct http_server *srv, struct http_req *req,
    const struct http_route *r)
{
	const char *auth = http_req_header(req, "Authorization");
	const char *names[] = { srv->hostname, NULL };

	if (r->auth == HTTP_AUTH_NONE)
		return 1;
	if (r->auth == HTTP_AUTH_READ && srv->public_read &&
	    (srv->token == NULL || !http_token_ok(auth, srv->token))) {
		if (http_host_local(http_req_header(req, "Host"), names))
			return 1;
		http_reply_error(req, 403, NULL, "public reads answer only "
		    "requests for this server's address or name");
		return 0;
	}
	if (srv->token == NULL) {
		http_reply_error(req, 403, NULL, "the HTTP API is off: "
		    "[http] api_token_file is not set");
		return 0;
	}
	if (!http_token_ok(auth, srv->token)) {
		evhttp_add_header(evhttp_request_get_output_headers(req->ev),
		    "WWW-Authenticate", "Bearer realm=\"sluice\"");
		http_log_refused(srv, req, HTTP_REFUSED_TOKEN);
		http_reply_error(req, 401, NULL, "a bearer token is needed: "
		    "Authorization: Bearer <the token of [http] "
		    "api_token_file>");
		return 0;
	}
	return 1;
}

static void
http_dispatch(struct evhttp_request *ev, void *arg)
{
	struct http_server *srv = arg;
	struct http_req *req = xcalloc(1, sizeof(*req));
	enum evhttp_cmd_type cmd = evhttp_request_get_command(ev);
	const struct http_route *r;
	void *rarg = NULL;
	unsigned m;
	size_t blen;

	req->srv = srv;
	req->ev = ev;
	req->next = srv->reqs;
	if (srv->reqs)
		srv->reqs->prev = req;
	srv->reqs = req;
	for (struct http_conn *c = srv->conns; c != NULL; c = c->next) {
		if (c->evcon == evhttp_request_get_connection(ev)) {
			req->conn = c;
			c->req = req;
			break;
		}
	}
	if (http_req_parse(req) != 0)
		return;
	req->head = cmd == EVHTTP_REQ_HEAD;
	m = cmd == EVHTTP_REQ_GET || cmd == EVHTTP_REQ_HEAD ? HTTP_GET :
	    cmd == EVHTTP_REQ_POST ? HTTP_POST : 0;
	if ((r = http_route_find(srv, req, m, &rarg)) == NULL)
		return;
	if (m == HTTP_POST && http_cross_origin(http_req_header(req, "Origin"),
	    http_req_header(req, "Host"), http_req_header(req,
	    "Sec-Fetch-Site"))) {
		http_log_refused(srv, req, HTTP_REFUSED_ORIGIN);
		http_reply_error(req, 403, NULL, "a request from a page of "
		    "another origin: refused");
		return;
	}
	if (!http_authorized(srv, req, r))
		return;
	blen = evbuffer_get_length(evhttp_request_get_input_buffer(ev));
	if (blen > r->max_body) {
		http_reply_error(req, 413, NULL, "%s takes %s", req->path,
		    r->max_body ? "a smaller body" : "no body");
		return;
	}
	r->fn(rarg, req);
}

/* ---- the server ---- */

struct http_server *
http_server_new(struct event_base *base, const char *addr,
    int max_connections, char *err, size_t errlen)
{
	struct http_server *srv;
	struct conf_addr a;
	evutil_socket_t fd;

	if (conf_addr_parse(addr, &a) != 0) {
		snprintf(err, errlen, "not an address:port");
		return NULL;
	}
	free(a.text);
	fd = socket(a.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0);
	if (fd < 0 || evutil_make_listen_socket_reuseable(fd) != 0 ||
	    bind(fd, (struct sockaddr *)&a.ss, a.len) != 0 ||
	    listen(fd, 64) != 0) {
		snprintf(err, errlen, "%s", strerror(errno));
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	srv = xcalloc(1, sizeof(*srv));
	srv->base = base;
	srv->max_conns = max_connections > 0 ? max_connections : 1;
	srv->http = evhttp_new(base);
	srv->attach_ev = event_new(base, -1, 0, http_conns_attach, srv);
	evhttp_set_allowed_methods(srv->http, EVHTTP_REQ_GET |
	    EVHTTP_REQ_HEAD | EVHTTP_REQ_POST);
	evhttp_set_max_headers_size(srv->http, HTTP_MAX_HEADERS);
	evhttp_set_max_body_size(srv->http, 0);
	evhttp_set_timeout(srv->http, HTTP_TIMEOUT_S);
	evhttp_set_default_content_type(srv->http, "application/json");
	evhttp_set_bevcb(srv->http, http_bevcb, srv);
	evhttp_set_gencb(srv->http, http_dispatch, srv);
	if ((srv->bound = evhttp_accept_socket_with_handle(srv->http, fd)) ==
	    NULL) {
		snprintf(err, errlen, "cannot accept on the socket");
		close(fd);
		http_server_free(srv);
		return NULL;
	}
	return srv;
}

void
http_server_add_routes(struct http_server *srv,
    const struct http_route *routes, size_t n, void *arg)
{
	struct http_routes *rs = xcalloc(1, sizeof(*rs));

	rs->routes = routes;
	rs->n = n;
	rs->arg = arg;
	if (srv->routes_tail)
		srv->routes_tail->next = rs;
	else
		srv->routes = rs;
	srv->routes_tail = rs;
	for (size_t i = 0; i < n; i++)
		if (routes[i].max_body > srv->max_body)
			srv->max_body = routes[i].max_body;
	evhttp_set_max_body_size(srv->http, (ev_ssize_t)srv->max_body);
}

void
http_server_set_token(struct http_server *srv, const char *token)
{
	if (srv->token != NULL)
		OPENSSL_cleanse(srv->token, strlen(srv->token));
	free(srv->token);
	srv->token = token ? xstrdup(token) : NULL;
}

void
http_server_set_public_read(struct http_server *srv, int on,
    const char *hostname)
{
	free(srv->hostname);
	srv->hostname = hostname ? xstrdup(hostname) : NULL;
	srv->public_read = on;
}

void
http_server_set_max_connections(struct http_server *srv, int n)
{
	srv->max_conns = n > 0 ? n : 1;
}

int
http_server_nconns(const struct http_server *srv)
{
	return srv->nconns;
}

int
http_server_port(const struct http_server *srv)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getsockname(evhttp_bound_socket_get_fd(srv->bound),
	    (struct sockaddr *)&ss, &len) != 0)
		return -1;
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

void
http_server_free(struct http_server *srv)
{
	struct http_conn *c;

	if (srv == NULL)
		return;
	/* evhttp_free closes every attached connection (http_conn_closed);
	 * fresh ones close with it too but were never attached */
	evhttp_free(srv->http);
	while ((c = srv->fresh) != NULL || (c = srv->conns) != NULL) {
		http_conn_unlink(c == srv->fresh ? &srv->fresh : &srv->conns, c);
		if (c->req != NULL)
			c->req->conn = NULL;
		free(c);
	}
	/* answers still due are dropped when they come: a request evhttp
	 * detached is ours to free */
	while (srv->reqs != NULL) {
		struct http_req *r = srv->reqs;

		srv->reqs = r->next;
		if (r->ev != NULL)
			evhttp_request_free(r->ev);
		r->ev = NULL;
		r->left = 1;
		r->srv = NULL;
		r->prev = r->next = NULL;
	}
	event_free(srv->attach_ev);
	while (srv->routes != NULL) {
		struct http_routes *rs = srv->routes;
		srv->routes = rs->next;
		free(rs);
	}
	http_server_set_token(srv, NULL);
	free(srv->hostname);
	free(srv);
}

/* ---- request accessors ---- */

void
http_req_set_header(struct http_req *req, const char *name,
    const char *value)
{
	if (req->ev != NULL)
		evhttp_add_header(evhttp_request_get_output_headers(req->ev),
		    name, value);
}

const char *
http_req_path(const struct http_req *req)
{
	return req->path;
}

const char *
http_req_tail(const struct http_req *req)
{
	return req->has_tail ? req->tail : NULL;
}

const char *
http_req_query(const struct http_req *req, const char *name)
{
	return evhttp_find_header(&req->query, name);
}

const char *
http_req_header(const struct http_req *req, const char *name)
{
	return req->ev ? evhttp_find_header(evhttp_request_get_input_headers(
	    req->ev), name) : NULL;
}

int
http_req_is_head(const struct http_req *req)
{
	return req->head;
}

struct evbuffer *
http_req_body(const struct http_req *req)
{
	return req->ev ? evhttp_request_get_input_buffer(req->ev) : NULL;
}

const char *
http_req_peer(const struct http_req *req)
{
	return req->peer;
}

int
http_req_gone(const struct http_req *req)
{
	return req->left || req->ev == NULL;
}
