/* SPDX-License-Identifier: MIT */
/*
 * test_rates.c: the dashboard's per-minute rates (src/http/rates.c):
 * deltas land in the minute of their sample, the ring wraps after an
 * hour, skipped minutes read as zero, a counter that restarts is taken
 * from its new value, and the JSON series is oldest first.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "http/rates.h"

static json_int_t
at(json_t *o, const char *kind, size_t i)
{
	return json_integer_value(json_array_get(json_object_get(o, kind), i));
}

static void
test_minutes(void **state)
{
	struct rates r;
	uint64_t c[RATES_NKINDS] = { 100, 50, 7, 1 };
	int64_t t0 = 6000 * 60 + 10;	/* 10 s into a minute */
	json_t *o;

	rates_init(&r);
	rates_sample(&r, t0, c);	/* the baseline: nothing counted */
	c[RATES_RECEIVED] += 5;
	c[RATES_DELIVERED] += 3;
	rates_sample(&r, t0 + 20, c);
	c[RATES_RECEIVED] += 2;
	rates_sample(&r, t0 + 60, c);	/* the next minute */
	o = rates_json(&r, t0 + 60);
	assert_int_equal(json_array_size(json_object_get(o, "received")),
	    RATES_MINUTES);
	assert_int_equal(at(o, "received", RATES_MINUTES - 1), 2);
	assert_int_equal(at(o, "received", RATES_MINUTES - 2), 5);
	assert_int_equal(at(o, "delivered", RATES_MINUTES - 2), 3);
	assert_int_equal(at(o, "deferred", RATES_MINUTES - 2), 0);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(o,
	    "per_minute"), "received")), 5);	/* the last whole minute */
	assert_int_equal(json_integer_value(json_object_get(o, "minute_start")),
	    (6001 - RATES_MINUTES + 1) * 60);
	json_decref(o);

	/* three minutes later, without samples: zeros in between */
	o = rates_json(&r, t0 + 240);
	assert_int_equal(at(o, "received", RATES_MINUTES - 1), 0);
	assert_int_equal(at(o, "received", RATES_MINUTES - 4), 2);
	assert_int_equal(at(o, "received", RATES_MINUTES - 5), 5);
	json_decref(o);

	/* past an hour everything has aged out */
	c[RATES_BOUNCED] += 9;
	rates_sample(&r, t0 + 3 * 3600, c);
	o = rates_json(&r, t0 + 3 * 3600);
	for (int i = 0; i < RATES_MINUTES - 1; i++)
		assert_int_equal(at(o, "received", i), 0);
	assert_int_equal(at(o, "bounced", RATES_MINUTES - 1), 9);
	json_decref(o);
}

static void
test_restart_and_wrap(void **state)
{
	struct rates r;
	uint64_t c[RATES_NKINDS] = { 1000, 0, 0, 0 };
	json_t *o;
	json_int_t sum = 0;

	rates_init(&r);
	rates_sample(&r, 0, c);
	c[RATES_RECEIVED] = 4;		/* the source restarted */
	rates_sample(&r, 30, c);
	o = rates_json(&r, 30);
	assert_int_equal(at(o, "received", RATES_MINUTES - 1), 4);
	json_decref(o);
	/* 2 hours of one message a minute: the last 60 stay */
	for (int m = 1; m <= 120; m++) {
		c[RATES_RECEIVED]++;
		rates_sample(&r, m * 60 + 5, c);
	}
	o = rates_json(&r, 120 * 60 + 5);
	for (int i = 0; i < RATES_MINUTES; i++)
		sum += at(o, "received", i);
	assert_int_equal(sum, RATES_MINUTES);
	json_decref(o);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_minutes),
		cmocka_unit_test(test_restart_and_wrap),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
