/* SPDX-License-Identifier: MIT */
/*
 * test_util.c: the retry heap, interned strings, chained-table rehash and
 * the small parsers in util.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "util/heap.h"
#include "util/hist.h"
#include "util/intern.h"
#include "util/util.h"

/* Random pushes and removals from the middle: pops come out sorted. */
static void
test_heap_order(void **state)
{
	enum { N = 5000 };
	struct sl_heap h = { 0 };
	struct sl_heap_item *items = calloc(N, sizeof(*items));
	int64_t last = INT64_MIN;
	size_t popped = 0, removed = 0;

	srandom(7);
	for (size_t i = 0; i < N; i++) {
		items[i].key = random() % 1000;
		sl_heap_push(&h, &items[i]);
	}
	/* remove every third item wherever it sits */
	for (size_t i = 0; i < N; i += 3, removed++)
		sl_heap_remove(&h, &items[i]);
	assert_int_equal(h.n, N - removed);
	for (size_t i = 0; i < N; i += 3)
		assert_int_equal(items[i].idx, 0);
	while (sl_heap_top(&h) != NULL) {
		struct sl_heap_item *it = sl_heap_pop(&h);
		assert_true(it->key >= last);
		assert_int_equal(it->idx, 0);
		last = it->key;
		popped++;
	}
	assert_int_equal(popped, N - removed);
	assert_null(sl_heap_pop(&h));
	sl_heap_free(&h);
	free(items);
}

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
		cmocka_unit_test(test_heap_order),
		cmocka_unit_test(test_intern),
		cmocka_unit_test(test_chain_rehash),
		cmocka_unit_test(test_parsers),
		cmocka_unit_test(test_hist),
	};
	return cmocka_run_group_tests_name("util", tests, NULL, NULL);
}
