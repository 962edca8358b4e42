/* SPDX-License-Identifier: MIT */
/*
 * dashboard.c: GET / and the files of the dashboard's page (dashboard.h),
 * with the headers that keep it to itself: a Content-Security-Policy that
 * runs only its own scripts and styles and lets it talk only to this
 * server, no framing (clickjacking), no referrer.
 */
#include <string.h>

#include <event2/buffer.h>

#include "http/dashboard.h"
#include "http/http.h"
#include "util/util.h"
#include "util/www.h"

extern const struct sl_www_file http_www[], util_www[];

static const char dashboard_csp[] =
    "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'";

static void
dashboard_file(void *arg, struct http_req *req)
{
	const char *path = http_req_path(req);
	const struct sl_www_file *f = sl_www_find(http_www, path);
	struct evbuffer *b;

	if (f == NULL)
		f = sl_www_find(util_www, path);
	if (f == NULL) {
		http_reply_error(req, 404, NULL, "no such page: %s", path);
		return;
	}
	b = evbuffer_new();
	evbuffer_add_reference(b, f->data, f->len, NULL, NULL);
	http_req_set_header(req, "Content-Security-Policy", dashboard_csp);
	http_req_set_header(req, "X-Frame-Options", "DENY");
	http_req_set_header(req, "Referrer-Policy", "no-referrer");
	http_reply(req, 200, f->type, b);
}

#define PAGE(path) { path, HTTP_GET, HTTP_AUTH_NONE, 0, dashboard_file }

static const struct http_route dashboard_routes[] = {
	PAGE("/"),
	PAGE("/index.html"),
	PAGE("/dashboard.js"),
	PAGE("/dashboard.css"),
	PAGE("/base.js"),
	PAGE("/base.css"),
};

void
dashboard_add_routes(struct http_server *srv)
{
	http_server_add_routes(srv, dashboard_routes,
	    SL_ARRAY_LEN(dashboard_routes), NULL);
}
