/* SPDX-License-Identifier: MIT */
/*
 * test_limit.c: the arithmetic of shaping (src/shaping/limit.c) on an
 * injected clock: GCRA spacing (no burst, even gaps, the rate over a long
 * run), warm-up budgets day by day, and the rules' threshold windows.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "shaping/shaping_int.h"

#define SEC 1000000LL
#define DAY (86400 * SEC)

static void
test_gcra_spacing(void **state)
{
	struct shaping_gcra g = { 0 };
	struct shaping_rate r = { 600, 60 * SEC };
	int64_t iv = shaping_rate_interval(&r), now = 1000 * SEC, last = -1;
	int n = 0;

	/* after a long idle time: one event, then the next only a full
	 * interval later (no burst) */
	assert_int_equal(shaping_gcra_take(&g, iv, now), 0);
	assert_int_equal(shaping_gcra_take(&g, iv, now), iv);
	assert_int_equal(shaping_gcra_peek(&g, now + 40000), iv - 40000);
	assert_int_equal(shaping_gcra_take(&g, iv, now + iv - 1), 1);
	assert_int_equal(shaping_gcra_take(&g, iv, now + iv), 0);

	/* a caller polling every 7 ms for 60 s gets 600 events at most, each
	 * at least one interval after the one before */
	g.tat = 0;
	for (int64_t t = now; t < now + 60 * SEC; t += 7000) {
		if (shaping_gcra_take(&g, iv, t) != 0)
			continue;
		if (last >= 0)
			assert_true(t - last >= iv);
		last = t;
		n++;
	}
	assert_true(n <= 600 && n >= 560);

	/* a caller that waits exactly as told loses nothing */
	g.tat = 0;
	n = 0;
	for (int64_t t = now; t < now + 60 * SEC;) {
		int64_t w = shaping_gcra_take(&g, iv, t);
		if (w == 0)
			n++;
		t += w ? w : 1;
	}
	assert_int_equal(n, 600);
}

static void
test_warmup_budget(void **state)
{
	struct shaping_warmup w;
	char err[256];
	int64_t start = 20000 * DAY;	/* a UTC midnight */

	assert_int_equal(shaping_warmup_parse(
	    "1000/d, x2 every 2d, until 200000/d", &w, err, sizeof(err)), 0);
	assert_int_equal(shaping_warmup_budget(&w, start, start), 1000);
	assert_int_equal(shaping_warmup_budget(&w, start, start + DAY), 1000);
	assert_int_equal(shaping_warmup_budget(&w, start, start + 2 * DAY), 2000);
	assert_int_equal(shaping_warmup_budget(&w, start, start + 5 * DAY), 4000);
	assert_int_equal(shaping_warmup_budget(&w, start, start + 14 * DAY),
	    128000);
	assert_int_equal(shaping_warmup_budget(&w, start, start + 16 * DAY),
	    200000);
	assert_int_equal(shaping_warmup_budget(&w, start, start + 4000 * DAY),
	    200000);
	/* before its start: the first budget */
	assert_int_equal(shaping_warmup_budget(&w, start, start - DAY), 1000);
	/* windows are UTC days */
	assert_int_equal(shaping_warmup_window(&w, start + DAY - 1), 20000);
	assert_int_equal(shaping_warmup_window(&w, start + DAY), 20001);

	/* never falls, never passes until */
	uint64_t prev = 0;
	for (int64_t t = start; t < start + 40 * DAY; t += DAY / 3) {
		uint64_t b = shaping_warmup_budget(&w, start, t);
		assert_true(b >= prev && b <= 200000);
		prev = b;
	}

	/* adding, with a short unit */
	assert_int_equal(shaping_warmup_parse("5/s, +5 every 2s, until 20/s", &w,
	    err, sizeof(err)), 0);
	assert_int_equal(w.unit_us, SEC);
	assert_int_equal(shaping_warmup_budget(&w, 0, SEC), 5);
	assert_int_equal(shaping_warmup_budget(&w, 0, 2 * SEC), 10);
	assert_int_equal(shaping_warmup_budget(&w, 0, 5 * SEC), 15);
	assert_int_equal(shaping_warmup_budget(&w, 0, 9 * SEC), 20);

	/* a fixed budget */
	assert_int_equal(shaping_warmup_parse("300/h", &w, err, sizeof(err)), 0);
	assert_int_equal(shaping_warmup_budget(&w, 0, 400 * DAY), 300);
	/* a factor that would overflow stays at the cap */
	assert_int_equal(shaping_warmup_parse("1/s, x1000 every 1s, "
	    "until 1000000000/s", &w, err, sizeof(err)), 0);
	assert_int_equal(shaping_warmup_budget(&w, 0, 1000000 * SEC),
	    1000000000);
}

static void
test_hits_window(void **state)
{
	struct shaping_hits h;
	int64_t m = 60 * SEC;

	shaping_hits_init(&h, 3);
	/* 3 in 10m: two, then a long pause, then three close together */
	assert_int_equal(shaping_hits_add(&h, 10 * m, 0), 0);
	assert_int_equal(shaping_hits_add(&h, 10 * m, 1 * m), 0);
	assert_int_equal(shaping_hits_add(&h, 10 * m, 11 * m), 0);
	assert_int_equal(shaping_hits_add(&h, 10 * m, 12 * m), 0);
	assert_int_equal(shaping_hits_add(&h, 10 * m, 13 * m), 1);
	/* fired: the count starts again */
	assert_int_equal(shaping_hits_add(&h, 10 * m, 13 * m), 0);
	assert_int_equal(shaping_hits_add(&h, 10 * m, 14 * m), 0);
	assert_int_equal(shaping_hits_add(&h, 10 * m, 15 * m), 1);
	/* exactly at the window's edge the oldest no longer counts */
	assert_int_equal(shaping_hits_add(&h, 10 * m, 20 * m), 0);
	assert_int_equal(shaping_hits_add(&h, 10 * m, 21 * m), 0);
	assert_int_equal(shaping_hits_add(&h, 10 * m, 30 * m), 0);
	assert_int_equal(shaping_hits_add(&h, 10 * m, 30 * m + 1), 1);
	shaping_hits_free(&h);

	/* a threshold of 1 fires every time */
	shaping_hits_init(&h, 1);
	for (int i = 0; i < 5; i++)
		assert_int_equal(shaping_hits_add(&h, 0, i), 1);
	shaping_hits_free(&h);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_gcra_spacing),
		cmocka_unit_test(test_warmup_budget),
		cmocka_unit_test(test_hits_window),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
