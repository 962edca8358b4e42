/* SPDX-License-Identifier: MIT */
/*
 * test_events.c: the webhook sender (src/events/events.c) against an
 * evhttp receiver on loopback in the same loop: events arrive in batches
 * and in order; a receiver that answers 500 makes them wait on disk and
 * arrive, in order and once, when it answers 200 again; past spool_max
 * they are dropped and counted; what is on disk at the stop is sent by
 * the next start.
 *
 * Run one test by name: test_events test_outage_in_order (a cmocka filter).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <jansson.h>

#include "events/events.h"
#include "util/util.h"

struct recv {
	struct evhttp *http;
	int port;
	int status;		/* the answer to give */
	int posts;
	json_t *got;		/* every "n" accepted, in order */
};

static void
recv_cb(struct evhttp_request *req, void *arg)
{
	struct recv *r = arg;
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	json_t *a = json_loadb((const char *)evbuffer_pullup(in, -1),
	    evbuffer_get_length(in), 0, NULL);
	size_t i;
	json_t *e;

	r->posts++;
	if (r->status == 200)
		json_array_foreach(a, i, e)
			json_array_append(r->got, json_object_get(e, "n"));
	json_decref(a);
	evhttp_send_reply(req, r->status, "x", NULL);
}

static void
recv_start(struct event_base *base, struct recv *r)
{
	struct evhttp_bound_socket *s;

	r->http = evhttp_new(base);
	evhttp_set_gencb(r->http, recv_cb, r);
	s = evhttp_bind_socket_with_handle(r->http, "127.0.0.1", 0);
	assert_non_null(s);
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	getsockname(evhttp_bound_socket_get_fd(s), (struct sockaddr *)&sin,
	    &len);
	r->port = ntohs(sin.sin_port);
	r->status = 200;
	r->got = json_array();
}

static void
run_until(struct event_base *base, int (*done)(void *), void *arg)
{
	int64_t end = sl_mono_ms() + 30000;

	while (!done(arg)) {
		struct timeval tv = { 0, 20000 };
		if (sl_mono_ms() > end)
			fail_msg("timed out");
		event_base_loopexit(base, &tv);
		event_base_loop(base, EVLOOP_ONCE);
	}
}

static size_t want;
static struct recv *cur;

static int
got_all(void *arg)
{
	return json_array_size(cur->got) >= want;
}

static struct events *cur_ev;

static int
sent_all(void *arg)
{
	struct events_stats st;

	events_stats_get(cur_ev, &st);
	return st.sent >= want;
}

static struct events *
start(struct event_base *base, const char *dir, int port, int64_t spool_max)
{
	char url[64], err[128];
	struct events_conf c = { url, dir, spool_max, 10, 1000, 1, 5, NULL };
	struct events *ev;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/hook", port);
	ev = events_new(base, &c, err, sizeof(err));
	assert_non_null(ev);
	return ev;
}

static void
emit(struct events *ev, int from, int to)
{
	for (int i = from; i < to; i++)
		events_emit(ev, json_pack("{s:s,s:i}", "event", "delivered",
		    "n", i));
}

static void
assert_in_order(json_t *got, size_t n)
{
	assert_int_equal(json_array_size(got), n);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(json_integer_value(json_array_get(got, i)),
		    (json_int_t)i);
}

/* A loop, a scratch directory and a receiver; one per test. */
struct fixture {
	struct event_base *base;
	char dir[32];
	struct recv r;
};

static int
setup(void **state)
{
	struct fixture *f = xcalloc(1, sizeof(*f));

	f->base = event_base_new();
	strcpy(f->dir, "/tmp/sluice-events-XXXXXX");
	if (mkdtemp(f->dir) == NULL)
		return -1;
	recv_start(f->base, &f->r);
	cur = &f->r;
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[64];

	evhttp_free(f->r.http);
	json_decref(f->r.got);
	event_base_free(f->base);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	(void)!system(cmd);
	free(f);
	return 0;
}

static void
test_outage_in_order(void **state)
{
	struct fixture *f = *state;
	struct event_base *base = f->base;
	const char *dir = f->dir;
	struct events_stats st;
	struct events *ev;

	f->r.status = 500;
	ev = start(base, dir, f->r.port, 1 << 20);
	emit(ev, 0, 25);
	/* the first POST fails: everything waits on disk */
	while (f->r.posts == 0)
		event_base_loop(base, EVLOOP_ONCE);
	emit(ev, 25, 40);
	f->r.status = 200;
	want = 40;
	run_until(base, got_all, NULL);
	emit(ev, 40, 50);
	want = 50;
	run_until(base, got_all, NULL);
	assert_in_order(f->r.got, 50);
	/* the receiver has them before sluice has its answer */
	cur_ev = ev;
	run_until(base, sent_all, NULL);
	events_stats_get(ev, &st);
	assert_int_equal(st.emitted, 50);
	assert_int_equal(st.sent, 50);
	assert_int_equal(st.dropped, 0);
	assert_true(st.failures >= 1);
	events_free(ev);

	/* stopped with events in memory: the next start sends them */
	json_array_clear(f->r.got);
	f->r.status = 500;
	ev = start(base, dir, f->r.port, 1 << 20);
	emit(ev, 0, 7);
	events_free(ev);
	f->r.status = 200;
	ev = start(base, dir, f->r.port, 1 << 20);
	want = 7;
	run_until(base, got_all, NULL);
	assert_in_order(f->r.got, 7);
	events_free(ev);
}

static int
posted(void *arg)
{
	return cur->posts >= 1;
}

static int
dropped_some(void *arg)
{
	struct events_stats st;

	events_stats_get(cur_ev, &st);
	return st.dropped > 0;
}

static void
test_spool_max_drops_counted(void **state)
{
	struct fixture *f = *state;
	struct event_base *base = f->base;
	const char *dir = f->dir;
	struct events_stats st;
	struct events *ev;

	f->r.status = 503;
	/* room for about 20 lines of {"event":"delivered","n":NN} */
	ev = start(base, dir, f->r.port, 600);
	emit(ev, 0, 10);
	run_until(base, posted, NULL);
	emit(ev, 10, 100);
	/* the retry after the backoff moves memory to disk first */
	cur_ev = ev;
	run_until(base, dropped_some, NULL);
	events_stats_get(ev, &st);
	assert_true(st.spooled_bytes <= 600);
	/* every event is either waiting or counted as dropped */
	assert_int_equal(st.emitted, 100);
	assert_int_equal(st.queued + st.dropped, 100);
	events_free(ev);
	struct stat sb;
	char path[64];
	snprintf(path, sizeof(path), "%s/events.jsonl", dir);
	assert_int_equal(stat(path, &sb), 0);
	assert_true(sb.st_size <= 600);
	assert_true(sb.st_size > 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_outage_in_order, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_spool_max_drops_counted,
		    setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
