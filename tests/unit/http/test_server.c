/* SPDX-License-Identifier: MIT */
/*
 * test_server.c: the HTTP listener (src/http/server.c) on a real loopback
 * socket and a real event loop, in one thread: the client writes a
 * request, the loop turns until the answer is in. Routing (404, 405 with
 * Allow, a "*" segment), the token (401, 403), body limits (413), the
 * connection cap, and answers given later, also after the client left or
 * the server was freed.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/event.h>

#include "http/http.h"

struct fix {
	struct event_base *base;
	struct http_server *srv;
	int port;
	struct http_req *held;		/* a request answered later */
	char tail[64];
};

static void
route_hello(void *arg, struct http_req *req)
{
	struct evbuffer *b = evbuffer_new();

	evbuffer_add_printf(b, "hello %s\n", http_req_query(req, "who") ?
	    http_req_query(req, "who") : "you");
	http_reply(req, 200, "text/plain", b);
}

static void
route_item(void *arg, struct http_req *req)
{
	struct fix *f = arg;

	snprintf(f->tail, sizeof(f->tail), "%s", http_req_tail(req));
	http_reply_json(req, 200, json_pack("{s:s}", "item",
	    http_req_tail(req)));
}

static void
route_post(void *arg, struct http_req *req)
{
	http_reply_json(req, 200, json_pack("{s:I}", "got", (json_int_t)
	    evbuffer_get_length(http_req_body(req))));
}

/* Keeps the request: the test answers it later. */
static void
route_later(void *arg, struct http_req *req)
{
	((struct fix *)arg)->held = req;
}

static const struct http_route routes[] = {
	{ "/hello", HTTP_GET, HTTP_AUTH_NONE, 0, route_hello },
	{ "/api/item/*", HTTP_GET, HTTP_AUTH_TOKEN, 0, route_item },
	{ "/api/post", HTTP_POST, HTTP_AUTH_TOKEN, 100, route_post },
	{ "/later", HTTP_GET, HTTP_AUTH_NONE, 0, route_later },
	{ "/api/big", HTTP_POST, HTTP_AUTH_TOKEN, 1000, route_post },
};

static int
setup(void **state)
{
	struct fix *f = calloc(1, sizeof(*f));
	char err[256];

	f->base = event_base_new();
	f->srv = http_server_new(f->base, "127.0.0.1:0", 3, err, sizeof(err));
	assert_non_null(f->srv);
	http_server_add_routes(f->srv, routes, 5, f);
	http_server_set_token(f->srv, "tok123");
	f->port = http_server_port(f->srv);
	assert_true(f->port > 0);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fix *f = *state;

	http_server_free(f->srv);
	event_base_free(f->base);
	free(f);
	return 0;
}

static int
client(struct fix *f)
{
	struct sockaddr_in sin = { .sin_family = AF_INET,
		.sin_port = htons((uint16_t)f->port),
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	fcntl(fd, F_SETFL, O_NONBLOCK);
	return fd;
}

/* Turn the loop until fd has the whole answer (or EOF); the answer. */
static char *
answer(struct fix *f, int fd)
{
	static char buf[8192];
	size_t n = 0;

	for (int i = 0; i < 2000; i++) {
		ssize_t r;

		event_base_loop(f->base, EVLOOP_NONBLOCK);
		r = read(fd, buf + n, sizeof(buf) - 1 - n);
		if (r > 0) {
			n += (size_t)r;
			buf[n] = '\0';
			/* a whole response: headers and Content-Length bytes */
			char *end = strstr(buf, "\r\n\r\n");
			char *cl = strstr(buf, "Content-Length: ");
			if (end != NULL && cl != NULL && (size_t)(end + 4 - buf) +
			    (size_t)atoi(cl + 16) <= n)
				return buf;
		} else if (r == 0) {
			break;
		}
		usleep(1000);
	}
	buf[n] = '\0';
	return buf;
}

static char *
request(struct fix *f, const char *req)
{
	int fd = client(f);
	char *a;

	assert_int_equal(write(fd, req, strlen(req)), (ssize_t)strlen(req));
	a = answer(f, fd);
	close(fd);
	return a;
}

static void
test_routing(void **state)
{
	struct fix *f = *state;
	char *a;

	a = request(f, "GET /hello?who=me HTTP/1.1\r\nHost: x\r\n\r\n");
	assert_non_null(strstr(a, "HTTP/1.1 200 OK"));
	assert_non_null(strstr(a, "hello me"));
	/* HEAD: the length of the body, not the body (then the next answer
	 * on the same connection is read right) */
	a = request(f, "HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\n"
	    "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
	assert_non_null(strstr(a, "HTTP/1.1 200 OK"));
	assert_non_null(strstr(a, "Content-Length: 10\r\n"));
	assert_null(strstr(a, "hello"));
	a = request(f, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
	assert_non_null(strstr(a, "HTTP/1.1 404"));
	assert_non_null(strstr(a, "{\"error\":\"no such resource: /nope\"}"));
	a = request(f, "POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: "
	    "0\r\n\r\n");
	assert_non_null(strstr(a, "HTTP/1.1 405"));
	assert_non_null(strstr(a, "Allow: GET, HEAD"));
	a = request(f, "GET /api/post HTTP/1.1\r\nHost: x\r\n\r\n");
	assert_non_null(strstr(a, "HTTP/1.1 405"));
	assert_non_null(strstr(a, "Allow: POST"));
	a = request(f, "GET /api/item/abc%20d HTTP/1.1\r\nHost: x\r\n"
	    "Authorization: Bearer tok123\r\n\r\n");
	assert_non_null(strstr(a, "HTTP/1.1 200"));
	assert_string_equal(f->tail, "abc d");
	a = request(f, "GET /api/item/a/b HTTP/1.1\r\nHost: x\r\n\r\n");
	assert_non_null(strstr(a, "HTTP/1.1 404"));
}

static void
test_token_and_sizes(void **state)
{
	struct fix *f = *state;
	char big[512];
	char *a;

	a = request(f, "GET /api/item/x HTTP/1.1\r\nHost: x\r\n\r\n");
	assert_non_null(strstr(a, "HTTP/1.1 401"));
	assert_non_null(strstr(a, "WWW-Authenticate: Bearer"));
	a = request(f, "GET /api/item/x HTTP/1.1\r\nHost: x\r\n"
	    "Authorization: Bearer tok12\r\n\r\n");
	assert_non_null(strstr(a, "HTTP/1.1 401"));
	/* the token check comes before the body's size */
	snprintf(big, sizeof(big), "POST /api/post HTTP/1.1\r\nHost: x\r\n"
	    "Content-Length: 101\r\n\r\n%0101d", 7);
	a = request(f, big);
	assert_non_null(strstr(a, "HTTP/1.1 401"));
	snprintf(big, sizeof(big), "POST /api/post HTTP/1.1\r\nHost: x\r\n"
	    "Authorization: Bearer tok123\r\nContent-Length: 101\r\n\r\n"
	    "%0101d", 7);
	a = request(f, big);
	assert_non_null(strstr(a, "HTTP/1.1 413"));
	a = request(f, "POST /api/post HTTP/1.1\r\nHost: x\r\nAuthorization: "
	    "Bearer tok123\r\nContent-Length: 5\r\n\r\nhello");
	assert_non_null(strstr(a, "{\"got\":5}"));
	a = request(f, "GET /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 3"
	    "\r\n\r\nabc");
	assert_non_null(strstr(a, "HTTP/1.1 413"));
	/* no token configured: token routes are off */
	http_server_set_token(f->srv, NULL);
	a = request(f, "GET /api/item/x HTTP/1.1\r\nHost: x\r\n"
	    "Authorization: Bearer tok123\r\n\r\n");
	assert_non_null(strstr(a, "HTTP/1.1 403"));
	a = request(f, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
	assert_non_null(strstr(a, "HTTP/1.1 200"));
}

static void
test_connection_cap(void **state)
{
	struct fix *f = *state;
	int fds[4];
	char c;

	for (int i = 0; i < 3; i++)
		fds[i] = client(f);
	for (int i = 0; i < 20; i++)
		event_base_loop(f->base, EVLOOP_NONBLOCK);
	assert_int_equal(http_server_nconns(f->srv), 3);
	fds[3] = client(f);
	for (int i = 0; i < 20; i++)
		event_base_loop(f->base, EVLOOP_NONBLOCK);
	/* the fourth was closed at once */
	assert_int_equal(read(fds[3], &c, 1), 0);
	assert_int_equal(http_server_nconns(f->srv), 3);
	for (int i = 0; i < 4; i++)
		close(fds[i]);
	for (int i = 0; i < 50 && http_server_nconns(f->srv) > 0; i++) {
		event_base_loop(f->base, EVLOOP_NONBLOCK);
		usleep(1000);
	}
	assert_int_equal(http_server_nconns(f->srv), 0);
	assert_non_null(strstr(request(f, "GET /hello HTTP/1.1\r\nHost: x\r\n"
	    "\r\n"), "200 OK"));
}

/* Send req on a new connection; turn the loop until route_later has it. */
static int
held_request(struct fix *f, const char *req)
{
	int fd = client(f);

	assert_int_equal(write(fd, req, strlen(req)), (ssize_t)strlen(req));
	for (int i = 0; i < 200 && f->held == NULL; i++) {
		event_base_loop(f->base, EVLOOP_NONBLOCK);
		usleep(1000);
	}
	assert_non_null(f->held);
	return fd;
}

static void
test_answer_later(void **state)
{
	struct fix *f = *state;
	const char *req = "GET /later HTTP/1.1\r\nHost: x\r\n\r\n";
	int fd;

	/* answered later, while the client waits */
	fd = held_request(f, req);
	assert_false(http_req_gone(f->held));
	http_reply_json(f->held, 200, json_pack("{s:b}", "late", 1));
	f->held = NULL;
	assert_non_null(strstr(answer(f, fd), "{\"late\":true}"));
	close(fd);
	/* the client leaves first: the answer is dropped, nothing leaks */
	fd = held_request(f, req);
	close(fd);
	for (int i = 0; i < 50; i++) {
		event_base_loop(f->base, EVLOOP_NONBLOCK);
		usleep(1000);
	}
	http_reply_json(f->held, 200, json_pack("{s:b}", "late", 1));
	f->held = NULL;
	/* the server goes first: answering afterwards is safe too */
	fd = held_request(f, req);
	http_server_free(f->srv);
	f->srv = NULL;
	assert_true(http_req_gone(f->held));
	http_reply_json(f->held, 200, json_pack("{s:b}", "late", 1));
	f->held = NULL;
	close(fd);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_routing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_token_and_sizes, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_connection_cap, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_answer_later, setup,
		    teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
