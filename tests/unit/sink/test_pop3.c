/* SPDX-License-Identifier: MIT */
/*
 * test_pop3.c: the pure parts of the sink's POP3 server
 * (src/sink/pop3_wire.c): command lines, the multi-line answer of a
 * message (dot-stuffing, CRLF, TOP) at every split of the input into two
 * chunks and byte by byte, and unique-ids; and the inbox's search
 * (src/sink/query.c).
 *
 * Run one test by name: test_pop3 test_stuff_splits (a cmocka filter).
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
#include <jansson.h>

#include "sink/pop3.h"
#include "sink/sink_int.h"

static void
test_parse(void **state)
{
	struct sink_pop3_cmd c;
	char l1[] = "RETR 1", l2[] = "TOP 12 0", l3[] = "stat",
	    l4[] = "LIST  1", l5[] = "TOOLONG", l6[] = "TOP 1 2 3",
	    l7[] = "", l8[] = "USER "
	    "a123456789b123456789c123456789d123456789e";

	assert_int_equal(sink_pop3_parse(l1, &c), 0);
	assert_string_equal(c.keyword, "RETR");
	assert_int_equal(c.nargs, 1);
	assert_string_equal(c.args[0], "1");
	assert_int_equal(sink_pop3_parse(l2, &c), 0);
	assert_int_equal(c.nargs, 2);
	assert_string_equal(c.args[1], "0");
	assert_int_equal(sink_pop3_parse(l3, &c), 0);
	assert_string_equal(c.keyword, "stat");
	assert_int_equal(c.nargs, 0);
	/* two spaces, a long keyword, three arguments, nothing, 41 bytes */
	assert_int_equal(sink_pop3_parse(l4, &c), -1);
	assert_int_equal(sink_pop3_parse(l5, &c), -1);
	assert_int_equal(sink_pop3_parse(l6, &c), -1);
	assert_int_equal(sink_pop3_parse(l7, &c), -1);
	assert_int_equal(sink_pop3_parse(l8, &c), -1);
	assert_string_equal(sink_pop3_rest("PASS a b  c"), "a b  c");
	assert_string_equal(sink_pop3_rest("PASS"), "");
}

/* The answer for msg, fed in chunks of the sizes given (0 ends). */
static char *
stuff(const char *msg, long lines, const size_t *cuts)
{
	struct sink_pop3_out st;
	struct evbuffer *out = evbuffer_new();
	size_t len = strlen(msg), off = 0;
	char *s;

	sink_pop3_out_init(&st, lines);
	for (; cuts != NULL && *cuts != 0 && off < len; cuts++) {
		size_t n = *cuts < len - off ? *cuts : len - off;
		sink_pop3_stuff(&st, msg + off, n, out);
		off += n;
	}
	sink_pop3_stuff(&st, msg + off, len - off, out);
	sink_pop3_end(&st, out);
	len = evbuffer_get_length(out);
	s = malloc(len + 1);
	evbuffer_remove(out, s, len);
	s[len] = '\0';
	evbuffer_free(out);
	return s;
}

static const struct {
	const char *in;
	long lines;
	const char *out;
} cases[] = {
	{ "A: 1\r\n\r\nbody\r\n", -1, "A: 1\r\n\r\nbody\r\n.\r\n" },
	{ ".\r\n..x\r\n.", -1, "..\r\n...x\r\n..\r\n.\r\n" },
	{ "bare\nlf\n", -1, "bare\r\nlf\r\n.\r\n" },
	{ "no end", -1, "no end\r\n.\r\n" },
	{ "cr at end\r", -1, "cr at end\r\n.\r\n" },
	{ "", -1, ".\r\n" },
	{ "H: 1\r\nH: 2\r\n\r\nb1\r\n.b2\r\nb3\r\n", 0, "H: 1\r\nH: 2\r\n\r\n.\r\n" },
	{ "H: 1\r\nH: 2\r\n\r\nb1\r\n.b2\r\nb3\r\n", 2,
	  "H: 1\r\nH: 2\r\n\r\nb1\r\n..b2\r\n.\r\n" },
	{ "H: 1\r\n\r\nb1\r\n", 5, "H: 1\r\n\r\nb1\r\n.\r\n" },
	{ "H: 1\n\nb1\nb2\n", 1, "H: 1\r\n\r\nb1\r\n.\r\n" },
	{ "only header\r\n", 3, "only header\r\n.\r\n" },
};

static void
test_stuff_cases(void **state)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *s = stuff(cases[i].in, cases[i].lines, NULL);
		if (strcmp(s, cases[i].out) != 0)
			fail_msg("case %zu: got \"%s\"", i, s);
		free(s);
	}
}

/* Every split in two, and byte by byte, gives the same answer. */
static void
test_stuff_splits(void **state)
{
	static const size_t ones[] = { 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
		1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
		1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0 };

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t len = strlen(cases[i].in);
		for (size_t cut = 1; cut < len; cut++) {
			size_t cuts[] = { cut, 0 };
			char *s = stuff(cases[i].in, cases[i].lines, cuts);
			if (strcmp(s, cases[i].out) != 0)
				fail_msg("case %zu cut %zu: got \"%s\"", i, cut, s);
			free(s);
		}
		char *s = stuff(cases[i].in, cases[i].lines, ones);
		if (strcmp(s, cases[i].out) != 0)
			fail_msg("case %zu byte by byte: got \"%s\"", i, s);
		free(s);
	}
}

static void
test_uid(void **state)
{
	char uid[SINK_POP3_UIDMAX + 1], small[8];
	char longid[200];

	sink_pop3_uid("1796172726.M146631P22317Q1.host.example", uid,
	    sizeof(uid));
	assert_string_equal(uid, "1796172726.M146631P22317Q1");
	sink_pop3_uid("plain", uid, sizeof(uid));
	assert_string_equal(uid, "plain");
	sink_pop3_uid("a b\x01.c", uid, sizeof(uid));
	assert_string_equal(uid, "a_b_.c");
	memset(longid, 'x', sizeof(longid) - 1);
	longid[sizeof(longid) - 1] = '\0';
	sink_pop3_uid(longid, uid, sizeof(uid));
	assert_int_equal(strlen(uid), SINK_POP3_UIDMAX);
	sink_pop3_uid(longid, small, sizeof(small));
	assert_int_equal(strlen(small), sizeof(small) - 1);
}

static json_t *
meta(const char *from, const char *to, const char *subject)
{
	return json_pack("{s:s,s:s,s:[s,s],s:s}", "mail_from", "bounce@x.test",
	    "from", from, "rcpt_to", to, "other@y.test", "subject", subject);
}

static int
matches(const char *q, json_t *m)
{
	struct sink_query sq = { 0 };
	int rc;

	assert_int_equal(sink_query_parse(&sq, q), 0);
	rc = sink_query_match(&sq, m);
	sink_query_free(&sq);
	return rc;
}

static void
test_query(void **state)
{
	json_t *m = meta("Shop <orders@shop.test>", "Ann@Example.test",
	    "Your receipt 42");
	struct sink_query sq = { 0 };
	char many[200] = "";

	assert_true(matches("", m));
	assert_true(matches("receipt", m));
	assert_true(matches("RECEIPT shop", m));
	assert_true(matches("to:ann@example", m));
	assert_true(matches("to:other", m));
	assert_false(matches("to:shop", m));
	assert_true(matches("from:orders", m));
	assert_true(matches("from:bounce@", m));	/* envelope sender */
	assert_false(matches("from:ann", m));
	assert_true(matches("subject:\"receipt 42\"", m));
	assert_false(matches("subject:\"receipt 43\"", m));
	assert_false(matches("receipt nothere", m));
	assert_true(matches("Subject:your To:ann", m));
	for (int i = 0; i < SINK_QUERY_MAX + 1; i++)
		strcat(many, "w ");
	assert_int_equal(sink_query_parse(&sq, many), -1);
	sink_query_free(&sq);
	json_decref(m);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse),
		cmocka_unit_test(test_stuff_cases),
		cmocka_unit_test(test_stuff_splits),
		cmocka_unit_test(test_uid),
		cmocka_unit_test(test_query),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
