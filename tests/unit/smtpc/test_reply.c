/* SPDX-License-Identifier: MIT */
/*
 * test_reply.c: tables of peer replies through the parser of
 * src/smtpc/reply.c: single and multi-line replies, CRLF and bare LF,
 * every split of the input, and each error (bad code, codes that differ,
 * too many lines, a line or a reply too long).
 *
 * Run one test by name: test_reply test_split (a cmocka filter pattern).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "smtpc/smtpc.h"

/* The tables give only the fields a case is about; the rest are zero. */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

/* A reply case: input, then what the first reply in it must be. */
struct rcase {
	const char *in;
	int error;
	int complete;
	int code;
	int lines;
	const char *text;
	size_t used;		/* bytes consumed; 0 means all */
};

static const struct rcase cases[] = {
	{ "250 OK\r\n", 0, 1, 250, 1, "OK" },
	{ "250 OK\n", 0, 1, 250, 1, "OK" },
	{ "220\r\n", 0, 1, 220, 1, "" },
	{ "220 \r\n", 0, 1, 220, 1, "" },
	{ "250-mx.example\r\n250-PIPELINING\r\n250 SIZE 1000\r\n", 0, 1, 250, 3,
	    "mx.example / PIPELINING / SIZE 1000" },
	{ "250-a\n250-b\r\n250 c\n", 0, 1, 250, 3, "a / b / c" },
	{ "250-\r\n250 last\r\n", 0, 1, 250, 2, " / last" },
	{ "550 5.1.1 <a@b>: User unknown\r\n", 0, 1, 550, 1,
	    "5.1.1 <a@b>: User unknown" },
	{ "250 one\r\n250 two\r\n", 0, 1, 250, 1, "one", 9 },
	{ "354 go ahead\r\nleft", 0, 1, 354, 1, "go ahead", 14 },
	{ "250-partial\r\n", 0, 0, 250, 1, "partial" },
	{ "250 no line end", 0, 0, 0, 0, "" },
	{ "421 4.7.0 tab\there\r\n", 0, 1, 421, 1, "4.7.0 tab?here" },
	/* errors */
	{ "abc\r\n", 1, 0, 0, 0, "", 1 },
	{ "25\r\n", 1, 0, 0, 0, "", 3 },
	{ "2500 x\r\n", 1, 0, 0, 0, "", 4 },
	{ "650 x\r\n", 1, 0, 0, 0, "", 1 },
	{ "150 x\r\n", 1, 0, 0, 0, "", 1 },
	{ "250_x\r\n", 1, 0, 0, 0, "", 4 },
	{ "\r\n", 1, 0, 0, 0, "", 1 },
	{ "250\r\r\n", 1, 0, 0, 0, "", 6 },
	{ "250-a\r\n251 b\r\n", 1, 0, 250, 1, "a", 14 },
	{ "250-a\r\n550-b\r\n", 1, 0, 250, 1, "a", 14 },
	{ "HTTP/1.1 400 Bad Request\r\n", 1, 0, 0, 0, "", 1 },
};

static void
check_case(size_t i, const struct rcase *t, const struct smtpc_reply *r,
    size_t used)
{
	size_t want = t->used ? t->used : strlen(t->in);

	if (r->error != t->error || r->complete != t->complete ||
	    (t->error == 0 && (r->code != t->code || r->lines != t->lines ||
	    strcmp(r->text, t->text) != 0)) || used != want)
		fail_msg("case %zu \"%s\": error %d complete %d code %d lines "
		    "%d text \"%s\" used %zu; want %d %d %d %d \"%s\" %zu", i,
		    t->in, r->error, r->complete, r->code, r->lines, r->text,
		    used, t->error, t->complete, t->code, t->lines, t->text,
		    want);
}

/* Feed s in pieces: first `first` bytes, then `step` at a time. */
static size_t
feed_split(struct smtpc_reply *r, const char *s, size_t n, size_t first,
    size_t step)
{
	size_t at = 0, used = 0;

	while (at < n) {
		size_t piece = at == 0 ? first : step;
		size_t u;
		char *copy;

		if (piece > n - at)
			piece = n - at;
		copy = malloc(piece + 1);
		memcpy(copy, s + at, piece);
		u = smtpc_reply_feed(r, copy, piece);
		free(copy);
		assert_true(u <= piece);
		used += u;
		if (u < piece)
			break;
		at += piece;
	}
	return used;
}

static void
test_table(void **state)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct smtpc_reply r;
		size_t n = strlen(cases[i].in);

		smtpc_reply_init(&r);
		check_case(i, &cases[i], &r, smtpc_reply_feed(&r, cases[i].in,
		    n));
	}
}

static void
test_split(void **state)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t n = strlen(cases[i].in);

		for (size_t cut = 0; cut <= n; cut++) {
			struct smtpc_reply r;

			smtpc_reply_init(&r);
			check_case(i, &cases[i], &r,
			    feed_split(&r, cases[i].in, n, cut ? cut : 1,
			    cut ? n : 1));
		}
	}
}

/* After complete or error, nothing more is consumed until init. */
static void
test_final(void **state)
{
	struct smtpc_reply r;

	smtpc_reply_init(&r);
	assert_int_equal(smtpc_reply_feed(&r, "250 a\r\n", 7), 7);
	assert_int_equal(smtpc_reply_feed(&r, "250 b\r\n", 7), 0);
	assert_string_equal(r.text, "a");
	smtpc_reply_init(&r);
	assert_int_equal(smtpc_reply_feed(&r, "x", 1), 1);
	assert_true(r.error);
	assert_int_equal(smtpc_reply_feed(&r, "250 b\r\n", 7), 0);
}

static char *
repeat_lines(int n, const char *last)
{
	char *s = malloc((size_t)n * 32 + 32), *p = s;

	for (int i = 0; i < n - 1; i++)
		p += sprintf(p, "250-line %d of many\r\n", i);
	sprintf(p, "%s", last);
	return s;
}

static void
test_too_many_lines(void **state)
{
	struct smtpc_reply r;
	char *s = repeat_lines(100, "250 end\r\n");

	smtpc_reply_init(&r);
	assert_int_equal(smtpc_reply_feed(&r, s, strlen(s)), strlen(s));
	assert_true(r.complete);
	assert_int_equal(r.lines, 100);
	assert_int_equal(strlen(r.text), sizeof(r.text) - 1);	/* truncated */
	free(s);

	s = repeat_lines(101, "250 end\r\n");
	smtpc_reply_init(&r);
	smtpc_reply_feed(&r, s, strlen(s));
	assert_true(r.error);
	assert_false(r.complete);
	free(s);

	/* A reply that never ends stops at the line limit, not the input. */
	s = repeat_lines(500, "250-more\r\n");
	smtpc_reply_init(&r);
	assert_true(smtpc_reply_feed(&r, s, strlen(s)) < strlen(s));
	assert_true(r.error);
	free(s);
}

static void
test_too_long(void **state)
{
	struct smtpc_reply r;
	char line[1200];

	/* 1000 bytes without the line end: fine, with CRLF or LF. */
	memset(line, 'x', sizeof(line));
	memcpy(line, "250 ", 4);
	memcpy(line + 1000, "\r\n", 2);
	smtpc_reply_init(&r);
	assert_int_equal(smtpc_reply_feed(&r, line, 1002), 1002);
	assert_true(r.complete);
	assert_int_equal(strlen(r.text), 996);
	line[1000] = '\n';
	smtpc_reply_init(&r);
	assert_int_equal(smtpc_reply_feed(&r, line, 1001), 1001);
	assert_true(r.complete);

	/* 1001 bytes: an error, found before the line end comes. */
	line[1000] = 'x';
	smtpc_reply_init(&r);
	assert_int_equal(smtpc_reply_feed(&r, line, 1100), 1002);
	assert_true(r.error);
	memcpy(line + 1001, "\r\n", 2);
	smtpc_reply_init(&r);
	smtpc_reply_feed(&r, line, 1003);
	assert_true(r.error);
}

static void
test_too_big(void **state)
{
	struct smtpc_reply r;
	char line[1002];
	size_t total = 0;

	/* 99 lines of 1000 bytes: over 64 KB before the line limit. */
	memset(line, 'y', sizeof(line));
	memcpy(line, "250-", 4);
	memcpy(line + 1000, "\r\n", 2);
	smtpc_reply_init(&r);
	for (int i = 0; i < 99 && !r.error; i++)
		total += smtpc_reply_feed(&r, line, sizeof(line));
	assert_true(r.error);
	assert_int_equal(total, SMTPC_REPLY_MAX_BYTES + 1);
	assert_true(r.lines < 99);
}

/* The on_line hook sees every line, even past what text[] holds. */
struct seen {
	int n;
	char last[64];
};

static void
on_line(void *arg, const char *s, size_t n)
{
	struct seen *sn = arg;

	sn->n++;
	snprintf(sn->last, sizeof(sn->last), "%.*s", (int)n, s);
}

static void
test_on_line(void **state)
{
	struct smtpc_reply r;
	struct seen sn = { 0 };
	char *s = repeat_lines(100, "250 CHUNKING\n");

	smtpc_reply_init(&r);
	r.on_line = on_line;
	r.on_line_arg = &sn;
	smtpc_reply_feed(&r, s, strlen(s));
	assert_true(r.complete);
	assert_int_equal(sn.n, 100);
	assert_string_equal(sn.last, "CHUNKING");
	free(s);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_split),
		cmocka_unit_test(test_final),
		cmocka_unit_test(test_too_many_lines),
		cmocka_unit_test(test_too_long),
		cmocka_unit_test(test_too_big),
		cmocka_unit_test(test_on_line),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
