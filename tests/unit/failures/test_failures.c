/* SPDX-License-Identifier: MIT */
/*
 * test_failures.c: the failure queue's store (src/failures/failures.c):
 * recording is idempotent, list filters by batch, take groups by message
 * with the body and the vars, remove and purge drop rows and orphaned
 * bodies, expiry drops what is older than the cutoff.
 *
 * Run one test by name: test_failures test_record_take (a cmocka filter).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "failures/failures.h"

static char dir[] = "/tmp/sluice-failures-XXXXXX";

static void
test_record_take(void **state)
{
	char err[256];
	struct failures_db *db = failures_db_open(dir, err, sizeof(err));
	struct evbuffer *b1 = evbuffer_new(), *b2 = evbuffer_new();
	struct failure_rcpt r1[] = {
		{ 0, "ann@a.test", "{\"name\":\"Ann\"}", "550 5.1.1 no" },
		{ 2, "cy@a.test", NULL, "550 5.1.1 no" },
	};
	struct failure_rcpt r2[] = { { 0, "bob@b.test", NULL, "554 5.7.1 x" } };
	struct failure_msg m[] = {
		{ 0x10, "news@x.test", NULL, 16, "0000000000000010", 1000, b1,
		  2, r1 },
		{ 0x20, "other@x.test", "env", 0, NULL, 2000, b2, 1, r2 },
	};
	json_t *l, *missing = json_array();
	struct failure_retry *t;
	size_t n;

	assert_non_null(db);
	evbuffer_add(b1, "{\"template\":1}", 14);
	evbuffer_add(b2, "Subject: x\r\n\r\nbody\r\n", 20);
	assert_int_equal(failures_db_add(db, m, 2, err, sizeof(err)), 0);
	/* recording again (after a crash) adds nothing */
	assert_int_equal(failures_db_add(db, m, 2, err, sizeof(err)), 0);
	l = failures_db_list(db, NULL, 100, err, sizeof(err));
	assert_int_equal(json_array_size(l), 3);
	json_decref(l);
	l = failures_db_list(db, "0000000000000010", 100, err, sizeof(err));
	assert_int_equal(json_array_size(l), 2);
	assert_string_equal(json_string_value(json_object_get(
	    json_array_get(l, 0), "reply")), "550 5.1.1 no");
	json_decref(l);

	t = failures_db_take(db, NULL, 0, "0000000000000010", 0, &n, NULL, err,
	    sizeof(err));
	assert_int_equal(n, 1);
	assert_int_equal(t[0].nrcpt, 2);
	assert_int_equal(t[0].flags, 16);
	assert_string_equal(t[0].rcpts[0].vars, "{\"name\":\"Ann\"}");
	assert_null(t[0].rcpts[1].vars);
	assert_memory_equal(evbuffer_pullup(t[0].body, -1), "{\"template\":1}",
	    14);
	int64_t ids[] = { t[0].rcpts[0].id, 999 };
	failures_retry_free(t, n);

	t = failures_db_take(db, ids, 2, NULL, 0, &n, missing, err,
	    sizeof(err));
	assert_int_equal(n, 1);
	assert_int_equal(json_array_size(missing), 1);
	assert_int_equal(json_integer_value(json_array_get(missing, 0)), 999);
	failures_retry_free(t, n);
	assert_int_equal(failures_db_remove(db, ids, 1), 1);
	t = failures_db_take(db, NULL, 0, NULL, 1, &n, NULL, err, sizeof(err));
	assert_int_equal(n, 2);
	failures_retry_free(t, n);

	assert_int_equal(failures_db_expire(db, 1500), 1);
	assert_int_equal(failures_db_purge(db, NULL), 1);
	l = failures_db_list(db, NULL, 100, err, sizeof(err));
	assert_int_equal(json_array_size(l), 0);
	json_decref(l);
	json_decref(missing);
	evbuffer_free(b1);
	evbuffer_free(b2);
	failures_db_close(db);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_record_take),
	};
	char cmd[64];
	int rc;

	if (mkdtemp(dir) == NULL)
		return 1;
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	(void)!system(cmd);
	return rc;
}
