/* SPDX-License-Identifier: MIT */
/*
 * test_util.c: the retry wheel, interned strings, chained-table rehash and
 * the small parsers in util.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/event.h>
#include <pthread.h>

#include "util/hist.h"
#include "util/evloop.h"
#include "util/idtab.h"
#include "util/inbox.h"
#include "util/intern.h"
#include "util/wheel.h"
#include "util/util.h"

static void
test_intern(void **state)
{
	char buf[32];
	const char *a = sl_intern("451 4.4.1 connection refused");
	const char *b;

	snprintf(buf, sizeof(buf), "451 4.4.1 connection %s", "refused");
	b = sl_intern(buf);
	assert_ptr_equal(a, b);	/* one copy */
	assert_ptr_not_equal(a, buf);
	assert_ptr_equal(sl_intern_ref(a), a);
	sl_unintern(a);
	sl_unintern(b);
	assert_string_equal(a, "451 4.4.1 connection refused"); /* one ref left */
	sl_unintern(a);
	assert_null(sl_intern(NULL));
	sl_unintern(NULL);
	/* many distinct strings: the table grows and keeps them apart */
	const char *v[2000];
	for (int i = 0; i < 2000; i++) {
		snprintf(buf, sizeof(buf), "reply %d", i);
		v[i] = sl_intern(buf);
	}
	for (int i = 0; i < 2000; i++) {
		snprintf(buf, sizeof(buf), "reply %d", i);
		assert_string_equal(v[i], buf);
		assert_ptr_equal(sl_intern(buf), v[i]);
		sl_unintern(v[i]);
		sl_unintern(v[i]);
	}
}

struct node {
	struct node *next;
	uint32_t key;
};

static uint32_t
node_hash(const void *n)
{
	return ((const struct node *)n)->key;
}

static void
test_chain_rehash(void **state)
{
	enum { N = 300 };
	struct node nodes[N];
	void **tab = calloc(8, sizeof(*tab));
	size_t seen = 0;

	for (uint32_t i = 0; i < N; i++) {
		nodes[i].key = i * 7919;
		nodes[i].next = tab[nodes[i].key % 8];
		tab[nodes[i].key % 8] = &nodes[i];
	}
	tab = sl_chain_rehash(tab, 8, 64, offsetof(struct node, next),
	    node_hash);
	for (size_t b = 0; b < 64; b++)
		for (struct node *n = tab[b]; n != NULL; n = n->next) {
			assert_int_equal(n->key % 64, b);
			seen++;
		}
	assert_int_equal(seen, N);
	free(tab);
}

static void
test_parsers(void **state)
{
	assert_int_equal(sl_parse_duration("30"), 30);
	assert_int_equal(sl_parse_duration("5m"), 300);
	assert_int_equal(sl_parse_duration("2h"), 7200);
	assert_int_equal(sl_parse_duration("5d"), 432000);
	assert_int_equal(sl_parse_duration("5x"), -1);
	assert_int_equal(sl_parse_duration("m"), -1);
	assert_int_equal(sl_parse_duration("5mm"), -1);
	assert_int_equal(sl_parse_size("50M"), 52428800);
	assert_int_equal(sl_parse_size("10k"), 10240);
	assert_int_equal(sl_parse_size("1G"), 1073741824);
	assert_int_equal(sl_parse_size("-1"), -1);
	assert_int_equal(sl_parse_size("99999999999999999999G"), -1);
	assert_int_equal(sl_hexval('7'), 7);
	assert_int_equal(sl_hexval('b'), 11);
	assert_int_equal(sl_hexval('F'), 15);
	assert_int_equal(sl_hexval('g'), -1);
	assert_true(sl_utf8_valid("caf\xc3\xa9", 5));
	assert_false(sl_utf8_valid("\xc0\xaf", 2));		/* overlong */
	assert_false(sl_utf8_valid("\xed\xa0\x80", 3));	/* surrogate */
	assert_false(sl_utf8_valid("\xe2\x82", 2));		/* cut short */
	assert_int_equal(sl_hash_str("a"), sl_hash("a", 1));
	assert_int_not_equal(sl_hash_str("a"), sl_hash_str("b"));
}

/*
 * The timing wheel hands every item out once, never before its time, in
 * time order (by the second), with removals from anywhere, keys on every
 * level and keys already passed; sl_wheel_next never overshoots.
 */
static void
test_wheel(void **state)
{
	enum { N = 20000 };
	const uint32_t t0 = 1700000000u;
	struct sl_wheel *w = calloc(1, sizeof(*w));
	struct sl_wheel_item *items = calloc(N, sizeof(*items));
	char *gone = calloc(N, 1);
	uint64_t rng = 42;
	uint32_t now = t0, last = 0;
	size_t left = 0, got = 0;

	sl_wheel_init(w, t0);
	for (size_t i = 0; i < N; i++) {
		rng ^= rng << 13;
		rng ^= rng >> 7;
		rng ^= rng << 17;
		switch (i % 5) {
		case 0: items[i].key = t0 - 10; break;		/* passed */
		case 1: items[i].key = t0 + rng % 250; break;	/* level 0 */
		case 2: items[i].key = t0 + rng % 60000; break;	/* level 1 */
		case 3: items[i].key = t0 + rng % (40 * 86400); break;
		default: items[i].key = t0 + 300 * 86400 + rng % 1000; /* 3 */
		}
		sl_wheel_add(w, &items[i]);
	}
	assert_int_equal(sl_wheel_count(w), N);
	for (size_t i = 0; i < N; i += 3) {
		sl_wheel_remove(w, &items[i]);
		gone[i] = 1;
	}
	sl_wheel_remove(w, &items[0]);		/* twice: no-op */
	for (size_t i = 0; i < N; i++)
		left += !gone[i];
	assert_int_equal(sl_wheel_count(w), left);
	/* nothing is handed out before its time */
	assert_null(sl_wheel_pop_due(w, t0 - 20));
	while (sl_wheel_count(w) > 0) {
		uint32_t next = sl_wheel_next(w), min = UINT32_MAX;
		struct sl_wheel_item *it;
		for (size_t i = 0; i < N; i++)
			if (items[i].slot != 0 && items[i].key < min)
				min = items[i].key;
		assert_true(next <= (min > now ? min : now));
		now = next > now ? next : now;
		while ((it = sl_wheel_pop_due(w, now)) != NULL) {
			size_t i = (size_t)(it - items);
			assert_false(gone[i]);
			gone[i] = 1;
			assert_true(it->key <= now);
			/* by the second: nothing due earlier is left behind */
			assert_true(it->key >= last || it->key < t0);
			if (it->key >= t0)
				last = it->key;
			assert_int_equal(it->slot, 0);
			got++;
		}
	}
	assert_int_equal(got, left);
	assert_int_equal(sl_wheel_next(w), UINT32_MAX);
	/* pop_first: the earliest, the clock moved to it */
	sl_wheel_free(w);
	sl_wheel_init(w, t0);
	items[0].key = t0 + 5000000;
	items[1].key = t0 + 70000;
	sl_wheel_add(w, &items[0]);
	sl_wheel_add(w, &items[1]);
	assert_ptr_equal(sl_wheel_pop_first(w), &items[1]);
	assert_int_equal(w->cur, t0 + 70000);
	assert_ptr_equal(sl_wheel_pop_first(w), &items[0]);
	assert_null(sl_wheel_pop_first(w));
	sl_wheel_free(w);
	free(w);
	free(items);
	free(gone);
}

/*
 * The id table finds every id put and not deleted, whatever the order of
 * deletes (the probe runs are shifted back), across growing and
 * shrinking; ids in arrival order (MIDs) and scattered ones alike.
 */
static void
test_idtab(void **state)
{
	enum { N = 50000 };
	struct sl_idtab t;
	uint64_t *ids = calloc(N, sizeof(*ids)), dup;
	char *in = calloc(N, 1);
	uint64_t rng = 7;

	sl_idtab_init(&t, 0);
	for (size_t i = 0; i < N; i++) {
		rng ^= rng << 13;
		rng ^= rng >> 7;
		rng ^= rng << 17;
		ids[i] = i % 2 ? 1700000000000000ull + i : rng | 1;
		sl_idtab_put(&t, &ids[i]);
		in[i] = 1;
	}
	assert_int_equal(t.n, N);
	assert_true(t.n * 4 <= (t.mask + 1) * 3);
	for (size_t i = 0; i < N; i += 3) {
		sl_idtab_del(&t, &ids[i]);
		in[i] = 0;
	}
	sl_idtab_del(&t, &ids[0]);		/* gone already: no-op */
	dup = ids[1];				/* the same id, not in it */
	sl_idtab_del(&t, &dup);
	assert_ptr_equal(sl_idtab_get(&t, ids[1]), &ids[1]);
	assert_null(sl_idtab_get(&t, 0));
	for (size_t i = 0; i < N; i++)
		assert_ptr_equal(sl_idtab_get(&t, ids[i]), in[i] ? &ids[i] :
		    NULL);
	/* almost all out: the table shrinks, the rest is still found */
	for (size_t i = 0; i < N - 10; i++)
		if (in[i]) {
			sl_idtab_del(&t, &ids[i]);
			in[i] = 0;
		}
	assert_true(t.mask + 1 <= 1024);
	for (size_t i = 0; i < N; i++)
		assert_ptr_equal(sl_idtab_get(&t, ids[i]), in[i] ? &ids[i] :
		    NULL);
	sl_idtab_free(&t);
	free(ids);
	free(in);
}

/* The inbox test: producers post (id, seq) calls; the owner checks. */
enum { INBOX_PRODUCERS = 4, INBOX_CALLS = 20000 };

struct inbox_rx {
	struct event_base *base;
	struct sl_inbox *in;
	uint32_t last[INBOX_PRODUCERS];
	uint32_t got;
	int disorder;
};

struct inbox_arg {
	struct inbox_rx *rx;
	uint32_t id, seq;
};

static void
inbox_take(void *arg)
{
	struct inbox_arg *a = arg;
	struct inbox_rx *rx = a->rx;

	if (a->seq != rx->last[a->id] + 1)
		rx->disorder++;
	rx->last[a->id] = a->seq;
	if (++rx->got == INBOX_PRODUCERS * INBOX_CALLS)
		event_base_loopbreak(rx->base);
	free(a);
}

struct inbox_tx {
	struct inbox_rx *rx;
	uint32_t id;
};

static void *
inbox_produce(void *arg)
{
	struct inbox_tx *t = arg;

	for (uint32_t i = 1; i <= INBOX_CALLS; i++) {
		struct inbox_arg *a = malloc(sizeof(*a));
		*a = (struct inbox_arg){ t->rx, t->id, i };
		sl_inbox_post(t->rx->in, inbox_take, a);
	}
	return NULL;
}

/* Calls posted from four threads at once all run, on the owner's loop,
 * each thread's in the order it posted them. */
static void
test_inbox(void **state)
{
	struct inbox_rx rx = { 0 };
	struct inbox_tx tx[INBOX_PRODUCERS];
	pthread_t th[INBOX_PRODUCERS];

	rx.base = sl_evloop_new();
	assert_non_null(rx.base);
	rx.in = sl_inbox_new(rx.base);
	assert_non_null(rx.in);
	for (uint32_t i = 0; i < INBOX_PRODUCERS; i++) {
		tx[i] = (struct inbox_tx){ &rx, i };
		assert_int_equal(pthread_create(&th[i], NULL, inbox_produce,
		    &tx[i]), 0);
	}
	while (rx.got < INBOX_PRODUCERS * INBOX_CALLS)
		event_base_loop(rx.base, EVLOOP_ONCE);
	for (uint32_t i = 0; i < INBOX_PRODUCERS; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(rx.last[i], INBOX_CALLS);
	}
	assert_int_equal(rx.disorder, 0);
	sl_inbox_free(rx.in);
	event_base_free(rx.base);
}

/* Each sample lands in the first bucket whose bound is >= it. */
static void
test_hist(void **state)
{
	struct sl_hist h = { 0 }, m = { 0 };

	sl_hist_add(&h, -5);		/* a clock step back: 0 */
	sl_hist_add(&h, 10);		/* on a bound: that bucket */
	sl_hist_add(&h, 11);
	sl_hist_add(&h, 999999);
	sl_hist_add(&h, 20000000);	/* past the last bound: +Inf */
	assert_int_equal(h.count[0], 2);
	assert_int_equal(h.count[1], 1);
	assert_int_equal(h.count[15], 1);	/* le 1 s */
	assert_int_equal(h.count[SL_HIST_BUCKETS], 1);
	assert_int_equal(sl_hist_total(&h), 5);
	assert_int_equal(h.sum_us, 10 + 11 + 999999 + 20000000);
	sl_hist_merge(&m, &h);
	sl_hist_merge(&m, &h);
	assert_int_equal(sl_hist_total(&m), 10);
	assert_int_equal(m.count[0], 4);
	assert_true(sl_mono_us() > 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_intern),
		cmocka_unit_test(test_chain_rehash),
		cmocka_unit_test(test_parsers),
		cmocka_unit_test(test_hist),
		cmocka_unit_test(test_wheel),
		cmocka_unit_test(test_idtab),
		cmocka_unit_test(test_inbox),
	};
	return cmocka_run_group_tests_name("util", tests, NULL, NULL);
}
