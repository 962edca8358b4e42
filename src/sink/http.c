/* SPDX-License-Identifier: MIT */
/*
 * http.c: the sink's JSON API on evhttp (--http 127.0.0.1:8025):
 *
 *   GET    /api/messages           {"count": n, "messages": [index objects]}
 *   GET    /api/messages/ID        the index object + "headers" (unfolded
 *                                  [name, value] pairs) + "raw" (the text,
 *                                  or null if it is not UTF-8)
 *   GET    /api/messages/ID/raw    the file as message/rfc822
 *   DELETE /api/messages           remove all; {"deleted": n}
 *   GET    /api/stats              the counters (stats.c)
 *
 * Errors are JSON too: {"error": "..."} with 400, 404 or 405.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <netinet/in.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#include "sink/sink_int.h"
#include "util/util.h"

#define HTTP_MAX_BODY (64 * 1024 * 1024)

static void
http_json(struct evhttp_request *req, int code, const char *reason, json_t *o)
{
	struct evbuffer *b = evbuffer_new();
	char *s = json_dumps(o, JSON_COMPACT);

	evbuffer_add_printf(b, "%s\n", s ? s : "null");
	free(s);
	json_decref(o);
	evhttp_add_header(evhttp_request_get_output_headers(req),
	    "Content-Type", "application/json");
	evhttp_send_reply(req, code, reason, b);
	evbuffer_free(b);
}

static void
http_error(struct evhttp_request *req, int code, const char *reason,
    const char *msg)
{
	http_json(req, code, reason, json_pack("{s:s}", "error", msg));
}

/* Read a whole file into a new buffer; NULL with errno on failure. */
static char *
http_slurp(const char *path, size_t *len)
{
	struct stat sb;
	char *buf;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t got = 0;

	if (fd < 0)
		return NULL;
	if (fstat(fd, &sb) != 0 || sb.st_size > HTTP_MAX_BODY) {
		close(fd);
		errno = EFBIG;
		return NULL;
	}
	buf = xmalloc((size_t)sb.st_size + 1);
	while (got < (size_t)sb.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)sb.st_size - got);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	buf[got] = '\0';
	*len = got;
	return buf;
}

/* The header fields of a message, unfolded, as [[name, value], ...]. */
static json_t *
http_headers(const char *p, size_t len)
{
	json_t *out = json_array(), *cur = NULL;
	const char *end = p + len;
	char *value = NULL;
	size_t vlen = 0;

	while (p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		size_t n = eol ? (size_t)(eol - p) : (size_t)(end - p);
		size_t next = eol ? n + 1 : n;
		if (n > 0 && p[n - 1] == '\r')
			n--;
		if (n == 0)
			break;	/* the empty line ends the header */
		if ((*p == ' ' || *p == '\t') && cur != NULL) {
			/* RFC 5322 2.2.3: unfold by removing the CRLF */
			value = xrealloc(value, vlen + n + 1);
			memcpy(value + vlen, p, n);
			vlen += n;
			value[vlen] = '\0';
		} else {
			const char *colon = memchr(p, ':', n);
			if (cur != NULL)
				json_array_append_new(cur,
				    json_stringn(value, vlen) ?: json_null());
			if (colon == NULL) {
				cur = NULL;
				p += next;
				continue;
			}
			cur = json_array();
			json_array_append_new(cur, json_stringn(p,
			    (size_t)(colon - p)) ?: json_null());
			json_array_append_new(out, cur);
			const char *v = colon + 1;
			while (v < p + n && (*v == ' ' || *v == '\t'))
				v++;
			vlen = (size_t)(p + n - v);
			value = xrealloc(value, vlen + 1);
			memcpy(value, v, vlen);
			value[vlen] = '\0';
		}
		p += next;
	}
	if (cur != NULL)
		json_array_append_new(cur, json_stringn(value, vlen) ?:
		    json_null());
	free(value);
	return out;
}

static void
http_message(struct sink *k, struct evhttp_request *req, const char *id,
    int raw)
{
	json_t *meta = k->maildir ? sink_store_find(k, id) : NULL;
	char *path, *body;
	size_t len = 0;

	if (meta == NULL) {
		http_error(req, 404, "Not Found", "no such message");
		return;
	}
	path = sink_store_path(k, meta);
	body = http_slurp(path, &len);
	free(path);
	if (body == NULL) {
		http_error(req, 404, "Not Found", strerror(errno));
		return;
	}
	if (raw) {
		struct evbuffer *b = evbuffer_new();
		evbuffer_add(b, body, len);
		evhttp_add_header(evhttp_request_get_output_headers(req),
		    "Content-Type", "message/rfc822");
		evhttp_send_reply(req, 200, "OK", b);
		evbuffer_free(b);
	} else {
		json_t *o = json_deep_copy(meta);
		json_object_set_new(o, "headers", http_headers(body, len));
		json_object_set_new(o, "raw", json_stringn(body, len) ?:
		    json_null());
		http_json(req, 200, "OK", o);
	}
	free(body);
}

static void
http_route(struct evhttp_request *req, void *arg)
{
	struct sink *k = arg;
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
	const char *pfx = "/api/messages/";
	char *id;

	if (path == NULL)
		path = "/";
	if (strcmp(path, "/api/stats") == 0 && cmd == EVHTTP_REQ_GET) {
		char *s = sink_stats_json(&k->st);
		http_json(req, 200, "OK", json_loads(s, 0, NULL));
		free(s);
	} else if (strcmp(path, "/api/messages") == 0 && cmd == EVHTTP_REQ_GET) {
		json_t *list = k->msgs ? json_deep_copy(k->msgs) : json_array();
		http_json(req, 200, "OK", json_pack("{s:I,s:o}", "count",
		    (json_int_t)json_array_size(list), "messages", list));
	} else if (strcmp(path, "/api/messages") == 0 &&
	    cmd == EVHTTP_REQ_DELETE) {
		size_t n = k->maildir ? sink_store_delete_all(k) : 0;
		http_json(req, 200, "OK", json_pack("{s:I}", "deleted",
		    (json_int_t)n));
	} else if (strncmp(path, pfx, strlen(pfx)) == 0 &&
	    cmd == EVHTTP_REQ_GET) {
		id = evhttp_uridecode(path + strlen(pfx), 0, NULL);
		size_t n = id ? strlen(id) : 0;
		int raw = n > 4 && strcmp(id + n - 4, "/raw") == 0;
		if (raw)
			id[n - 4] = '\0';
		if (id == NULL || *id == '\0' || strchr(id, '/') != NULL)
			http_error(req, 400, "Bad Request", "bad message id");
		else
			http_message(k, req, id, raw);
		free(id);
	} else if (strncmp(path, "/api/", 5) == 0) {
		http_error(req, 405, "Method Not Allowed",
		    "unknown method or path");
	} else {
		http_error(req, 404, "Not Found", "see /api/messages");
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
	evhttp_set_allowed_methods(k->http, EVHTTP_REQ_GET | EVHTTP_REQ_DELETE);
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
sink_http_stop(struct sink *k)
{
	if (k->http != NULL)
		evhttp_free(k->http);
	k->http = NULL;
}
