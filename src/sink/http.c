/* SPDX-License-Identifier: MIT */
/*
 * http.c: the sink's inbox page and its JSON API on evhttp
 * (--http 127.0.0.1:8025):
 *
 *   GET    /                       the inbox page (src/sink/www/, compiled in)
 *   GET    /api/messages           {"count", "total", "changes", "messages"};
 *                                  ?q= to= from= subject= order=newest
 *                                  limit= offset= (query.c)
 *   GET    /api/messages/ID        the index object + "headers" (unfolded
 *                                  [name, value] pairs) + "raw" (the text,
 *                                  or null if it is not UTF-8)
 *   GET    /api/messages/ID/raw    the file as message/rfc822
 *   GET    /api/messages/ID/view   the index object + the message parsed by
 *                                  GMime (mime.c): decoded headers, text,
 *                                  "html", "attachments"
 *   GET    /api/messages/ID/html   the HTML body, for a sandboxed iframe
 *   GET    /api/messages/ID/part/N leaf part N decoded, as a download
 *   DELETE /api/messages/ID        remove one; {"deleted": 1}
 *   DELETE /api/messages           remove all; {"deleted": n}
 *   GET    /api/server             addresses, rules in force, AUTH users
 *   GET    /api/stats              the counters (stats.c)
 *
 * Errors are JSON too: {"error": "..."} with 400, 403, 404 or 405.
 *
 * What a message holds never runs: the page writes mail values with
 * textContent only; the HTML body is served with a CSP "sandbox" (no
 * scripts, an opaque origin) that lets nothing load but inline styles and
 * data: images, and the page frames it in an iframe with the sandbox
 * attribute; raw sources and attachments are downloads under the same
 * CSP. Removing needs DELETE from the page's own origin: a browser sends
 * no cross-origin DELETE without a preflight (which gets no CORS answer),
 * and an Origin or Sec-Fetch-Site from elsewhere is refused with 403.
 *
 * Reads of captured files (and GMime's parsing) run on the sink's I/O
 * worker; the answer goes out from the loop when the worker is done.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <netinet/in.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#include "conf/conf.h"
#include "http/http.h"
#include "sink/sink_int.h"
#include "util/util.h"
#include "util/worker.h"
#include "util/www.h"

extern const struct sl_www_file sink_www[], util_www[];

#define HTTP_MAX_BODY (1024 * 1024 * 1024)

/* The page: its own scripts and styles only, nothing from elsewhere. */
static const char http_csp_page[] =
    "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; frame-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'";
/* A message's HTML: no scripts, no origin, nothing remote. */
static const char http_csp_mail[] =
    "sandbox; default-src 'none'; style-src 'unsafe-inline'; "
    "img-src data:; font-src data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'self'";
/* Everything else: data, never a document. */
static const char http_csp_data[] =
    "sandbox; default-src 'none'; frame-ancestors 'none'";

enum http_read_mode { READ_META, READ_RAW, READ_VIEW, READ_HTML, READ_PART };

/* A request that reads a captured file on the worker. */
struct http_read {
	struct sink *k;
	struct evhttp_request *req;
	enum http_read_mode mode;
	int part;
	char *path;
	json_t *meta;		/* a copy of the index object */
	/* the answer, made on the worker */
	int code;
	const char *csp;
	char *type, *filename;
	struct evbuffer *body;
	char err[256];
};

static void
http_headers_common(struct evhttp_request *req, const char *type,
    const char *csp)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);

	evhttp_add_header(h, "Content-Type", type);
	evhttp_add_header(h, "Content-Security-Policy", csp);
	evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
	evhttp_add_header(h, "Referrer-Policy", "no-referrer");
	evhttp_add_header(h, "Cache-Control", "no-store");
}

static void
http_json(struct evhttp_request *req, int code, const char *reason, json_t *o)
{
	struct evbuffer *b = evbuffer_new();
	char *s = json_dumps(o, JSON_COMPACT);

	evbuffer_add_printf(b, "%s\n", s ? s : "null");
	free(s);
	json_decref(o);
	http_headers_common(req, "application/json", http_csp_data);
	evhttp_send_reply(req, code, reason, b);
	evbuffer_free(b);
}

static void
http_error(struct evhttp_request *req, int code, const char *msg)
{
	http_json(req, code, http_reason(code), json_pack("{s:s}", "error",
	    msg));
}

/* 1 if the request comes from a page of another origin (origin.c). */
static int
http_cross_origin_req(struct evhttp_request *req)
{
	struct evkeyvalq *h = evhttp_request_get_input_headers(req);

	return http_cross_origin(evhttp_find_header(h, "Origin"),
	    evhttp_find_header(h, "Host"),
	    evhttp_find_header(h, "Sec-Fetch-Site"));
}

/*
 * 1 if the Host header names this server as a browser reached it: an
 * address, localhost, this machine's name or --hostname. A page of any
 * other name is a DNS rebinding of someone's site onto our address, which
 * must not read the captured mail.
 */
static int
http_host_ok(struct sink *k, struct evhttp_request *req)
{
	const char *names[] = { k->host, k->conf->server_hostname, NULL };

	return http_host_local(evhttp_find_header(
	    evhttp_request_get_input_headers(req), "Host"), names);
}

/* ---- reads on the worker ---- */

/* Read a whole file into out; -1 with errno on failure. */
static int
http_slurp(const char *path, struct evbuffer *out)
{
	struct stat sb;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -1;
	if (fstat(fd, &sb) != 0 || sb.st_size > HTTP_MAX_BODY) {
		close(fd);
		errno = EFBIG;
		return -1;
	}
	do
		n = evbuffer_read(out, fd, 1 << 20);
	while (n > 0 || (n < 0 && errno == EINTR));
	close(fd);
	return n < 0 ? -1 : 0;
}

/* GET /api/messages/ID: the index object, the header fields, the text. */
static int
http_read_meta(struct http_read *r)
{
	struct evbuffer *raw = evbuffer_new();
	size_t len;
	const char *p;
	json_t *o;

	if (http_slurp(r->path, raw) != 0) {
		evbuffer_free(raw);
		return -1;
	}
	len = evbuffer_get_length(raw);
	p = (const char *)evbuffer_pullup(raw, -1);
	o = json_deep_copy(r->meta);
	json_object_set_new(o, "headers", sink_mime_headers(p ? p : "", len));
	json_object_set_new(o, "raw", json_stringn(p ? p : "", len) ?:
	    json_null());
	evbuffer_free(raw);
	r->type = xstrdup("application/json");
	char *s = json_dumps(o, JSON_COMPACT);
	evbuffer_add_printf(r->body, "%s\n", s ? s : "null");
	free(s);
	json_decref(o);
	return 0;
}

static int
http_read_view(struct http_read *r)
{
	json_t *v = sink_mime_view(r->path), *o;
	char *s;

	if (v == NULL)
		return -1;
	o = json_deep_copy(r->meta);
	json_object_update(o, v);
	json_decref(v);
	s = json_dumps(o, JSON_COMPACT);
	evbuffer_add_printf(r->body, "%s\n", s ? s : "null");
	free(s);
	json_decref(o);
	r->type = xstrdup("application/json");
	return 0;
}

/* A Content-Type we pass on for a download: type/subtype in a safe
 * alphabet, else application/octet-stream. */
static char *
http_safe_type(char *type)
{
	for (const char *c = type; *c; c++)
		if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
		    (*c >= '0' && *c <= '9') || strchr("/.+-", *c)))
			goto octets;
	if (strchr(type, '/') != NULL)
		return type;
octets:
	free(type);
	return xstrdup("application/octet-stream");
}

static void
http_read_run(void *arg)
{
	struct http_read *r = arg;
	int rc = -1;

	r->body = evbuffer_new();
	r->csp = http_csp_data;
	switch (r->mode) {
	case READ_META:
		rc = http_read_meta(r);
		break;
	case READ_VIEW:
		rc = http_read_view(r);
		break;
	case READ_RAW:
		rc = http_slurp(r->path, r->body);
		r->type = xstrdup("message/rfc822");
		break;
	case READ_HTML:
		rc = sink_mime_html(r->path, r->body);
		r->type = xstrdup("text/html; charset=utf-8");
		r->csp = http_csp_mail;
		break;
	case READ_PART:
		rc = sink_mime_part(r->path, r->part, r->body, &r->type,
		    &r->filename);
		if (rc == 0)
			r->type = http_safe_type(r->type);
		break;
	}
	if (rc == 0) {
		r->code = 200;
		return;
	}
	r->code = errno == ENOENT ? 404 : 500;
	snprintf(r->err, sizeof(r->err), "%s", errno == ENOENT &&
	    r->mode == READ_HTML ? "the message has no HTML part" :
	    errno == ENOENT && r->mode == READ_PART ? "no such part" :
	    strerror(errno));
}

/* RFC 6266 / RFC 8187: filename*=UTF-8''percent-encoded, and a plain
 * ASCII fallback with anything doubtful replaced by "_". */
static char *
http_disposition(const char *name)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = strlen(name);
	char *ascii = xmalloc(n + 1), *enc = xmalloc(3 * n + 1), *out;
	size_t a = 0, e = 0;

	for (const unsigned char *c = (const unsigned char *)name; *c; c++) {
		int plain = (*c >= 'a' && *c <= 'z') || (*c >= 'A' &&
		    *c <= 'Z') || (*c >= '0' && *c <= '9') ||
		    strchr(".-_", *c) != NULL;
		ascii[a++] = plain ? (char)*c : '_';
		if (plain) {
			enc[e++] = (char)*c;
		} else {
			enc[e++] = '%';
			enc[e++] = hex[*c >> 4];
			enc[e++] = hex[*c & 15];
		}
	}
	ascii[a] = enc[e] = '\0';
	out = xasprintf("attachment; filename=\"%s\"; filename*=UTF-8''%s",
	    ascii, enc);
	free(ascii);
	free(enc);
	return out;
}

static void
http_read_done(void *arg)
{
	struct http_read *r = arg;

	if (r->code != 200) {
		http_error(r->req, r->code, r->err);
	} else {
		struct evkeyvalq *h = evhttp_request_get_output_headers(r->req);
		http_headers_common(r->req, r->type, r->csp);
		if (r->mode == READ_RAW || r->mode == READ_PART) {
			char *d = http_disposition(r->filename ? r->filename :
			    r->mode == READ_RAW ? "message.eml" : "part");
			evhttp_add_header(h, "Content-Disposition", d);
			free(d);
		}
		evhttp_send_reply(r->req, 200, "OK", r->body);
	}
	if (r->body != NULL)
		evbuffer_free(r->body);
	json_decref(r->meta);
	free(r->path);
	free(r->type);
	free(r->filename);
	free(r);
}

static void
http_read_start(struct sink *k, struct evhttp_request *req, json_t *meta,
    enum http_read_mode mode, int part)
{
	struct http_read *r;

	if (k->http_stopping || k->io == NULL) {
		http_error(req, 503, "shutting down");
		return;
	}
	r = xcalloc(1, sizeof(*r));
	r->k = k;
	r->req = req;
	r->mode = mode;
	r->part = part;
	r->path = sink_store_path(k, meta);
	r->meta = json_deep_copy(meta);
	sl_worker_post(k->io, http_read_run, http_read_done, r);
}

/* ---- the routes ---- */

static void
http_static(struct evhttp_request *req, const char *path)
{
	const struct sl_www_file *f = sl_www_find(sink_www, path);
	struct evbuffer *b;

	if (f == NULL)
		f = sl_www_find(util_www, path);
	if (f == NULL) {
		http_error(req, 404, "no such page; the API is under /api/");
		return;
	}
	b = evbuffer_new();
	evbuffer_add_reference(b, f->data, f->len, NULL, NULL);
	http_headers_common(req, f->type, http_csp_page);
	evhttp_add_header(evhttp_request_get_output_headers(req),
	    "X-Frame-Options", "DENY");
	evhttp_send_reply(req, 200, "OK", b);
	evbuffer_free(b);
}

/* A number from the query, or dflt; -1 if it is not a number. */
static long
http_query_num(struct evkeyvalq *q, const char *name, long dflt)
{
	const char *v = evhttp_find_header(q, name);
	char *end;
	long n;

	if (v == NULL || *v == '\0')
		return dflt;
	n = strtol(v, &end, 10);
	return *end != '\0' || n < 0 ? -1 : n;
}

/* GET /api/messages: the captured messages that match, a page of them. */
static void
http_list(struct sink *k, struct evhttp_request *req)
{
	const char *qs = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
	static const struct {
		const char *param;
		enum sink_qfield field;
	} fields[] = { { "to", SINK_Q_TO }, { "from", SINK_Q_FROM },
		{ "subject", SINK_Q_SUBJECT } };
	struct evkeyvalq q = { 0 };
	struct sink_query sq = { 0 };
	const char *order, *v;
	size_t total = json_array_size(k->msgs), matched = 0, i;
	long limit, offset;
	json_t *list = json_array(), *m;
	int newest;

	TAILQ_INIT(&q);
	if (qs != NULL && evhttp_parse_query_str(qs, &q) != 0) {
		http_error(req, 400, "bad query string");
		goto done;
	}
	order = evhttp_find_header(&q, "order");
	newest = order != NULL && strcmp(order, "newest") == 0;
	limit = http_query_num(&q, "limit", -2);
	offset = http_query_num(&q, "offset", 0);
	if (limit == -1 || offset < 0 || (order != NULL && !newest &&
	    strcmp(order, "oldest") != 0)) {
		http_error(req, 400, "limit and offset are numbers, order is "
		    "newest or oldest");
		goto done;
	}
	if ((v = evhttp_find_header(&q, "q")) != NULL &&
	    sink_query_parse(&sq, v) != 0)
		goto too_many;
	for (i = 0; i < SL_ARRAY_LEN(fields); i++)
		if ((v = evhttp_find_header(&q, fields[i].param)) != NULL &&
		    sink_query_add(&sq, fields[i].field, v, strlen(v)) != 0)
			goto too_many;
	for (i = 0; i < total; i++) {
		m = json_array_get(k->msgs, newest ? total - 1 - i : i);
		if (!sink_query_match(&sq, m))
			continue;
		if (matched++ >= (size_t)offset &&
		    (limit < 0 || json_array_size(list) < (size_t)limit))
			json_array_append(list, m);
	}
	http_json(req, 200, "OK", json_pack("{s:I,s:I,s:I,s:O}", "count",
	    (json_int_t)matched, "total", (json_int_t)total, "changes",
	    (json_int_t)k->changes, "messages", list));
	goto done;
too_many:
	http_error(req, 400, "too many search words");
done:
	json_decref(list);
	sink_query_free(&sq);
	evhttp_clear_headers(&q);
}

static void
http_server_info(struct sink *k, struct evhttp_request *req)
{
	json_t *rules = json_array(), *users = json_array();

	for (size_t i = 0; i < k->rules->nlines; i++)
		json_array_append_new(rules, json_string(k->rules->lines[i]));
	for (size_t i = 0; i < k->o.nusers; i++)
		json_array_append_new(users, json_string(k->o.users[i].name));
	http_json(req, 200, "OK", json_pack("{s:s,s:i,s:o,s:o,s:o,s:b,s:b,s:b,"
	    "s:I}",
	    "hostname", k->conf->server_hostname,
	    "smtp_port", sink_smtp_port(k),
	    "pop3_port", k->pop3 ? json_integer(sink_pop3_port(k)) :
	    json_null(),
	    "rules", rules,
	    "auth_users", users,
	    "auth_required", k->o.auth_required != 0,
	    "capturing", k->maildir != NULL,
	    "tls", k->o.tls_cert != NULL,
	    "max_size", (json_int_t)k->conf->server_max_message_size));
}

/* /api/messages/ID[/raw|/view|/html|/part/N] */
static void
http_message(struct sink *k, struct evhttp_request *req,
    enum evhttp_cmd_type cmd, const char *rest)
{
	char *id = evhttp_uridecode(rest, 0, NULL), *sub, *end;
	enum http_read_mode mode = READ_META;
	json_t *meta;
	long part = 0;

	if (id == NULL || *id == '\0') {
		http_error(req, 400, "bad message id");
		goto done;
	}
	if ((sub = strchr(id, '/')) != NULL)
		*sub++ = '\0';
	if (sub == NULL)
		mode = READ_META;
	else if (strcmp(sub, "raw") == 0)
		mode = READ_RAW;
	else if (strcmp(sub, "view") == 0)
		mode = READ_VIEW;
	else if (strcmp(sub, "html") == 0)
		mode = READ_HTML;
	else if (strncmp(sub, "part/", 5) == 0 && sub[5] >= '0' &&
	    sub[5] <= '9' && (part = strtol(sub + 5, &end, 10)) >= 0 &&
	    *end == '\0' && part < 100000)
		mode = READ_PART;
	else {
		http_error(req, 404, "no such path");
		goto done;
	}
	meta = k->maildir ? sink_store_find(k, id) : NULL;
	if (meta == NULL) {
		http_error(req, 404, "no such message");
	} else if (cmd == EVHTTP_REQ_DELETE) {
		if (sub != NULL)
			http_error(req, 405, "DELETE /api/messages/ID only");
		else if (http_cross_origin_req(req))
			http_error(req, 403, "cross-origin request refused");
		else if (sink_store_delete(k, id) == 0)
			http_json(req, 200, "OK", json_pack("{s:i}", "deleted",
			    1));
		else
			http_error(req, 404, "no such message");
	} else {
		http_read_start(k, req, meta, mode, (int)part);
	}
done:
	free(id);
}

static void
http_route(struct evhttp_request *req, void *arg)
{
	struct sink *k = arg;
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
	const char *pfx = "/api/messages/";
	int get = cmd == EVHTTP_REQ_GET || cmd == EVHTTP_REQ_HEAD;

	if (path == NULL || *path == '\0')
		path = "/";
	if (!http_host_ok(k, req)) {
		http_error(req, 403, "unknown Host: reach the sink by its "
		    "address, localhost or its --hostname");
		return;
	}
	if (strcmp(path, "/api/stats") == 0 && get) {
		char *s = sink_stats_json(&k->st);
		http_json(req, 200, "OK", json_loads(s, 0, NULL));
		free(s);
	} else if (strcmp(path, "/api/server") == 0 && get) {
		http_server_info(k, req);
	} else if (strcmp(path, "/api/messages") == 0 && get) {
		http_list(k, req);
	} else if (strcmp(path, "/api/messages") == 0 &&
	    cmd == EVHTTP_REQ_DELETE) {
		if (http_cross_origin_req(req)) {
			http_error(req, 403, "cross-origin request refused");
			return;
		}
		size_t n = k->maildir ? sink_store_delete_all(k) : 0;
		http_json(req, 200, "OK", json_pack("{s:I}", "deleted",
		    (json_int_t)n));
	} else if (strncmp(path, pfx, strlen(pfx)) == 0 &&
	    (get || cmd == EVHTTP_REQ_DELETE)) {
		http_message(k, req, cmd, path + strlen(pfx));
	} else if (strncmp(path, "/api/", 5) == 0) {
		http_error(req, 405, "unknown method or path");
	} else if (get) {
		http_static(req, path);
	} else {
		http_error(req, 405, "the page is read with GET");
	}
}

int
sink_http_start(struct sink *k, const char *addr, char *err, size_t errlen)
{
	struct evhttp_bound_socket *bs;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[128];
	const char *colon = strrchr(addr, ':');
	char *end;
	long port;

	if (colon == NULL || (size_t)(colon - addr) >= sizeof(host) ||
	    (port = strtol(colon + 1, &end, 10)) < 0 || port > 65535 ||
	    *end != '\0' || colon[1] == '\0') {
		snprintf(err, errlen, "--http: '%s' is not an address and port "
		    "(127.0.0.1:8025)", addr);
		return -1;
	}
	memcpy(host, addr, (size_t)(colon - addr));
	host[colon - addr] = '\0';
	if (host[0] == '[' && host[strlen(host) - 1] == ']') {
		memmove(host, host + 1, strlen(host));
		host[strlen(host) - 1] = '\0';
	}
	k->http = evhttp_new(k->base);
	evhttp_set_allowed_methods(k->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD |
	    EVHTTP_REQ_DELETE);
	/* requests carry no body: small bounds, and idle clients leave */
	evhttp_set_max_headers_size(k->http, 16 * 1024);
	evhttp_set_max_body_size(k->http, 4096);
	evhttp_set_timeout(k->http, 60);
	evhttp_set_gencb(k->http, http_route, k);
	bs = evhttp_bind_socket_with_handle(k->http, host, (uint16_t)port);
	if (bs == NULL) {
		snprintf(err, errlen, "--http: cannot listen on %s: %s", addr,
		    strerror(errno));
		return -1;
	}
	if (getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&ss,
	    &sl) == 0)
		k->http_port = ss.ss_family == AF_INET ?
		    ntohs(((struct sockaddr_in *)&ss)->sin_port) :
		    ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return 0;
}

void
sink_http_quiesce(struct sink *k)
{
	k->http_stopping = 1;
}

void
sink_http_stop(struct sink *k)
{
	if (k->http != NULL)
		evhttp_free(k->http);
	k->http = NULL;
}
