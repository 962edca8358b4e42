/* SPDX-License-Identifier: MIT */
/*
 * test_archive.c: the archive store (src/archive/archive.c): a put makes
 * entries that find by recipient, MID and batch, show gives the message
 * back byte for byte, expiry removes old days (rows and segment files),
 * and the sender patterns of [archive] match.
 *
 * Run one test by name: test_archive test_put_find_show (a cmocka filter).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "archive/archive.h"

static char dir[] = "/tmp/sluice-archive-XXXXXX";

static struct evbuffer *
body(const char *s, size_t n)
{
	struct evbuffer *b = evbuffer_new();

	evbuffer_add(b, s, n);
	return b;
}

static void
test_put_find_show(void **state)
{
	char err[256];
	struct archive_db *db = archive_db_open(dir, 0, err, sizeof(err));
	/* binary and 8-bit bytes come back exactly */
	static const char m1[] = "Subject: one\r\n\r\n\x01\xff\x00tail\r\n";
	struct archive_entry e[3] = {
		{ 0x10, 0, "ann@a.test", "news@x.test", "0000000000000010",
		  1790000000 },
		{ 0x10, 1, "bob@b.test", "news@x.test", "0000000000000010",
		  1790000000 },
		{ 0x20, 0, "ann@a.test,cy@a.test", "other@x.test", NULL,
		  1700000000 },
	};
	struct evbuffer *bs[3] = { body(m1, sizeof(m1) - 1),
		body("two\r\n", 5), body("three\r\n", 7) };
	struct evbuffer *out = evbuffer_new();
	json_t *r;

	assert_non_null(db);
	assert_int_equal(archive_db_put(db, e, bs, 3, err, sizeof(err)), 0);
	r = archive_db_find(db, "ANN@a.test", 0, NULL, 10, err, sizeof(err));
	assert_int_equal(json_array_size(r), 2);
	/* newest first; a batch's entries are named MID.RID */
	assert_string_equal(json_string_value(json_object_get(
	    json_array_get(r, 0), "id")), "0000000000000010.0");
	assert_string_equal(json_string_value(json_object_get(
	    json_array_get(r, 1), "id")), "0000000000000020");
	json_decref(r);
	r = archive_db_find(db, "cy@a.test", 0, NULL, 10, err, sizeof(err));
	assert_int_equal(json_array_size(r), 1);
	json_decref(r);
	r = archive_db_find(db, NULL, 0, "0000000000000010", 10, err,
	    sizeof(err));
	assert_int_equal(json_array_size(r), 2);
	json_decref(r);
	r = archive_db_find(db, NULL, 0x20, NULL, 10, err, sizeof(err));
	assert_int_equal(json_array_size(r), 1);
	json_decref(r);

	assert_int_equal(archive_db_show(db, "0000000000000010.0", out, err,
	    sizeof(err)), 0);
	assert_int_equal(evbuffer_get_length(out), sizeof(m1) - 1);
	assert_memory_equal(evbuffer_pullup(out, -1), m1, sizeof(m1) - 1);
	evbuffer_drain(out, evbuffer_get_length(out));
	assert_int_equal(archive_db_show(db, "0000000000000010.1", out, err,
	    sizeof(err)), 0);
	assert_memory_equal(evbuffer_pullup(out, -1), "two\r\n", 5);
	evbuffer_drain(out, evbuffer_get_length(out));
	assert_int_equal(archive_db_show(db, "0000000000000099", out, err,
	    sizeof(err)), 1);
	assert_int_equal(archive_db_show(db, "junk", out, err, sizeof(err)), 1);

	/* expiry: the 2023 day goes, rows and file */
	assert_int_equal(archive_db_expire(db, 1750000000), 1);
	r = archive_db_find(db, "ann@a.test", 0, NULL, 10, err, sizeof(err));
	assert_int_equal(json_array_size(r), 1);
	json_decref(r);
	char *seg = NULL;
	assert_true(asprintf(&seg, "%s/2023-11-14.zst", dir) > 0);
	assert_int_equal(access(seg, F_OK), -1);
	free(seg);
	for (int i = 0; i < 3; i++)
		evbuffer_free(bs[i]);
	evbuffer_free(out);
	archive_db_close(db);
}

static void
test_match(void **state)
{
	assert_true(archive_match("*@news.example.test", "a@NEWS.example.test"));
	assert_false(archive_match("*@news.example.test", "a@example.test"));
	assert_true(archive_match("x@y.test, *@news.example.test",
	    "b@news.example.test"));
	assert_false(archive_match("", "a@b.test"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_put_find_show),
		cmocka_unit_test(test_match),
	};
	int rc;

	if (mkdtemp(dir) == NULL)
		return 1;
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	char cmd[64];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	(void)!system(cmd);
	return rc;
}
