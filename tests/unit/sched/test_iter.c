/* SPDX-License-Identifier: MIT */
/*
 * test_iter.c: walks over the queue (sched_iter, src/sched/manage.c) that
 * listings take a slice at a time: messages that leave the queue between
 * two steps, even the one the walk stands on, are skipped; none is shown
 * twice; messages that arrive meanwhile are not shown, so a walk ends. A
 * real
 * scheduler on a real spool (for the deletes), no DNS (nothing is due).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <event2/thread.h>

#include "conf/conf.h"
#include "sched/sched.h"
#include "spool/spool.h"

#define MID0 1700000000000000ull

struct fix {
	struct event_base *base;
	struct sl_conf *conf;
	struct spool *sp;
	struct sched *s;
	char dir[64];
	int pending;
};

static void
add_msgs(struct fix *f, uint64_t from, size_t n)
{
	struct spool_msg sm = { 0 };
	struct spool_rcpt sr = { 0 };
	char addr[64];

	sm.sender = "sender@iter.test";
	sm.client_addr = "127.0.0.1";
	sm.helo = "iter.test";
	sm.size = 100;
	sm.nrcpt = 1;
	sm.rcpts = &sr;
	sm.arrival = (int64_t)time(NULL) - 60;
	sr.addr = addr;
	sr.state = SPOOL_RCPT_DEFERRED;
	sr.attempts = 1;
	sr.next_retry = (int64_t)time(NULL) + 86400;
	for (size_t i = 0; i < n; i++) {
		sm.mid = from + i;
		snprintf(addr, sizeof(addr), "u%zu@d%zu.iter.test", i, i % 3);
		sched_msg_commit(f->s, sched_msg_new(f->s, &sm));
	}
}

static int
setup(void **state)
{
	struct fix *f = calloc(1, sizeof(*f));
	char err[512];

	evthread_use_pthreads();
	snprintf(f->dir, sizeof(f->dir), "/tmp/sluice-test-iter-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	f->base = event_base_new();
	f->conf = conf_load(NULL, err, sizeof(err));
	assert_non_null(f->conf);
	f->sp = spool_open(f->dir, f->base, err, sizeof(err));
	assert_non_null(f->sp);
	f->s = sched_new(f->base, f->conf, f->sp, NULL);
	add_msgs(f, MID0, 100);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fix *f = *state;
	char cmd[128];

	sched_stop(f->s);
	spool_close(f->sp);
	sched_free(f->s);
	conf_free(f->conf);
	event_base_free(f->base);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

static void
deleted(void *arg, int status)
{
	struct fix *f = arg;

	assert_int_equal(status, SPOOL_OK);
	f->pending--;
}

/* Delete these MIDs and wait until the scheduler forgot them. */
static void
delete_mids(struct fix *f, const uint64_t *mids, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		f->pending++;
		sched_delete(f->s, mids[i], deleted, f);
	}
	for (int i = 0; f->pending > 0 && i < 10000; i++)
		event_base_loop(f->base, EVLOOP_ONCE);
	assert_int_equal(f->pending, 0);
}

struct seen {
	uint64_t mids[1000];
	size_t n;
};

static int
record(void *arg, const struct sched_msg_view *m)
{
	struct seen *s = arg;

	s->mids[s->n++] = m->mid;
	return 0;
}

static void
test_walk_all(void **state)
{
	struct fix *f = *state;
	struct sched_iter *it = sched_iter_new(f->s);
	struct seen s = { .n = 0 };

	assert_int_equal(sched_iter_peek(it), MID0);
	while (sched_iter_next(it, record, &s))
		;
	assert_int_equal(s.n, 100);
	for (size_t i = 0; i < 100; i++)
		assert_int_equal(s.mids[i], MID0 + i);
	assert_int_equal(sched_iter_peek(it), 0);
	/* at the end: mail that came later is not shown to a finished walk */
	add_msgs(f, MID0 + 1000, 1);
	assert_int_equal(sched_iter_next(it, record, &s), 0);
	sched_iter_free(it);
	/* nor to one that is still walking: it shows what was queued when it
	 * began, so a listing under a steady flow of mail ends */
	it = sched_iter_new(f->s);
	s.n = 0;
	assert_true(sched_iter_next(it, record, &s));
	add_msgs(f, MID0 + 2000, 5);
	while (sched_iter_next(it, record, &s))
		;
	assert_int_equal(s.n, 101);
	assert_int_equal(s.mids[100], MID0 + 1000);
	sched_iter_free(it);
}

static void
test_messages_leave_while_walking(void **state)
{
	struct fix *f = *state;
	struct sched_iter *it = sched_iter_new(f->s);
	struct sched_iter *other = sched_iter_new(f->s);
	struct seen s = { .n = 0 };
	uint64_t gone[12];
	size_t n = 0;

	for (int i = 0; i < 10; i++)
		assert_true(sched_iter_next(it, record, &s));
	/* the walk stands on MID0+10: delete it and the nine after it,
	 * one far ahead, and one already shown */
	for (uint64_t m = MID0 + 10; m < MID0 + 20; m++)
		gone[n++] = m;
	gone[n++] = MID0 + 50;
	gone[n++] = MID0 + 3;
	delete_mids(f, gone, n);
	assert_int_equal(sched_iter_peek(it), MID0 + 20);
	/* a message that arrives meanwhile is not shown */
	add_msgs(f, MID0 + 500, 1);
	while (sched_iter_next(it, record, &s))
		;
	assert_int_equal(s.n, 10 + 100 - 20 - 1);
	for (size_t i = 0; i < s.n; i++) {
		for (size_t k = 0; k < i; k++)
			assert_true(s.mids[k] < s.mids[i]);	/* once, in order */
		for (size_t g = 0; g + 1 < n; g++)		/* not MID0+3 */
			assert_true(s.mids[i] != gone[g]);
	}
	assert_int_equal(s.mids[s.n - 1], MID0 + 99);
	/* the other walk (on MID0, which stayed) is unharmed */
	assert_int_equal(sched_iter_peek(other), MID0);
	sched_iter_free(other);
	sched_iter_free(it);
}

static void
test_walk_from_a_mid(void **state)
{
	struct fix *f = *state;
	struct sched_iter *it = sched_iter_at(f->s, MID0 + 60);
	struct seen s = { .n = 0 };
	uint64_t last[] = { MID0 + 99 };

	assert_non_null(it);
	while (sched_iter_next(it, record, &s))
		;
	assert_int_equal(s.n, 40);
	assert_int_equal(s.mids[0], MID0 + 60);
	sched_iter_free(it);
	assert_null(sched_iter_at(f->s, MID0 + 100000));
	/* a walk standing on the last message, which then leaves: done */
	it = sched_iter_at(f->s, MID0 + 99);
	delete_mids(f, last, 1);
	assert_int_equal(sched_iter_peek(it), 0);
	assert_int_equal(sched_iter_next(it, record, &s), 0);
	sched_iter_free(it);
	assert_null(sched_iter_at(f->s, MID0 + 99));
}

static void
test_dest_find(void **state)
{
	struct fix *f = *state;
	struct sched_dest_view v;

	assert_int_equal(sched_dest_find(f->s, "d1.iter.test", &v), 0);
	assert_string_equal(v.name, "d1.iter.test");
	assert_int_equal(v.jobs, 33);
	assert_int_equal(sched_dest_find(f->s, "nowhere.test", &v), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_walk_all, setup, teardown),
		cmocka_unit_test_setup_teardown(test_messages_leave_while_walking,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_walk_from_a_mid, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_dest_find, setup,
		    teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
