/* SPDX-License-Identifier: MIT */
/*
 * test_data.c: the DATA state machine of src/smtpd/data.c. A table of
 * bodies (dot-stuffing, the end marker, size limits, bare CR and LF
 * smuggling sequences), each fed whole, split at every one and every two
 * points, and byte by byte, which must all give the same output, consumed
 * count, size and error bits. Random inputs are checked against a
 * reference model written from the RFC rather than from the state table.
 *
 * Run one test by name: test_data test_split (a cmocka filter pattern).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "smtpd/data.h"

/* The table gives only the fields a case is about; the rest are zero. */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

#define S(lit) lit, sizeof(lit) - 1

struct result {
	char out[4096];
	size_t n;
	size_t consumed;
	size_t calls;
	int err, done;
	uint64_t size;
};

static void
collect(void *ctx, const char *p, size_t n)
{
	struct result *r = ctx;

	assert_true(n > 0);
	assert_true(r->n + n <= sizeof(r->out));
	memcpy(r->out + r->n, p, n);
	r->n += n;
	r->calls++;
}

/*
 * Feed in as pieces ending at the cut points (ascending, <= len), then the
 * rest. Each piece is copied to its own allocation so that ASan sees any
 * read outside it.
 */
static void
feed(const char *in, size_t len, uint64_t max, const size_t *cuts,
    size_t ncuts, struct result *r)
{
	struct smtpd_data d;
	size_t from = 0;

	memset(r, 0, sizeof(*r));
	smtpd_data_init(&d, max);
	for (size_t k = 0; k <= ncuts; k++) {
		size_t to = k < ncuts ? cuts[k] : len;
		char *piece = malloc(to - from + 1);
		size_t used;

		memcpy(piece, in + from, to - from);
		used = smtpd_data_feed(&d, piece, to - from, collect, r);
		free(piece);
		assert_true(used <= to - from);
		/* Less than all is consumed only at the end marker. */
		if (used < to - from)
			assert_true(d.done);
		r->consumed += used;
		if (d.done)
			break;
		from = to;
	}
	r->err = d.err;
	r->done = d.done;
	r->size = d.size;
}

static void
same(const struct result *a, const struct result *b, const char *what,
    size_t at)
{
	if (a->n != b->n || memcmp(a->out, b->out, a->n) != 0 ||
	    a->consumed != b->consumed || a->err != b->err ||
	    a->done != b->done || a->size != b->size)
		fail_msg("%s at %zu: out %zu/%zu consumed %zu/%zu err %d/%d "
		    "done %d/%d size %llu/%llu", what, at, a->n, b->n,
		    a->consumed, b->consumed, a->err, b->err, a->done, b->done,
		    (unsigned long long)a->size, (unsigned long long)b->size);
}

/* Every single cut, every pair of cuts, and one byte at a time. */
static void
check_splits(const char *in, size_t len, uint64_t max,
    const struct result *whole)
{
	struct result r;
	size_t cuts[2];
	size_t *each = malloc((len + 1) * sizeof(size_t));

	for (size_t i = 0; i <= len; i++) {
		cuts[0] = i;
		feed(in, len, max, cuts, 1, &r);
		same(&r, whole, "one cut", i);
		for (size_t j = i; j <= len; j++) {
			cuts[1] = j;
			feed(in, len, max, cuts, 2, &r);
			same(&r, whole, "two cuts", i * 1000 + j);
		}
	}
	for (size_t i = 0; i < len; i++)
		each[i] = i + 1;
	feed(in, len, max, each, len, &r);
	same(&r, whole, "bytewise", 0);
	free(each);
}

struct data_case {
	const char *in;
	size_t len;
	const char *out;
	size_t outlen;
	size_t consumed;	/* 0: all of in */
	int done, err;
	uint64_t max;
	uint64_t size;		/* 0: outlen */
};

static const struct data_case cases[] = {
	/* the end marker */
	{ S(".\r\n"), S(""), 3, 1 },
	{ S(".\r\nQUIT\r\n"), S(""), 3, 1 },
	{ S("abc\r\n.\r\n"), S("abc\r\n"), 0, 1 },
	{ S("abc\r\n.\r\nQUIT\r\n"), S("abc\r\n"), 8, 1 },
	{ S("abc\r\n.\r\n.\r\n"), S("abc\r\n"), 8, 1 },
	{ S("\r\n.\r\n"), S("\r\n"), 0, 1 },
	{ S("a\r\n\r\n.\r\n"), S("a\r\n\r\n"), 0, 1 },
	{ S("abc\r\n"), S("abc\r\n"), 0, 0 },
	{ S("abc\r\n."), S("abc\r\n"), 0, 0 },
	{ S("abc\r\n.\r"), S("abc\r\n"), 0, 0 },
	{ S("abc\r"), S("abc"), 0, 0 },
	{ S(""), S(""), 0, 0 },
	{ S("a.\r\n.\r\n"), S("a.\r\n"), 0, 1 },
	{ S(" .\r\n.\r\n"), S(" .\r\n"), 0, 1 },
	/* dot-stuffing */
	{ S("..\r\n.\r\n"), S(".\r\n"), 0, 1 },
	{ S("...\r\n.\r\n"), S("..\r\n"), 0, 1 },
	{ S("..x\r\n.x\r\n.\r\n"), S(".x\r\nx\r\n"), 0, 1 },
	{ S("a\r\n..\r\n"), S("a\r\n.\r\n"), 0, 0 },
	{ S("a.b\r\n.c.\r\n.\r\n"), S("a.b\r\nc.\r\n"), 0, 1 },
	{ S("..\r\n..\r\n.\r\n"), S(".\r\n.\r\n"), 0, 1 },
	/* bytes that are not special */
	{ S("a\0b\r\n\0\r\n.\r\n"), S("a\0b\r\n\0\r\n"), 0, 1 },
	{ S("\xff\xfe\x80\r\n.\r\n"), S("\xff\xfe\x80\r\n"), 0, 1 },
	{ S("\t \x1b\r\n.\r\n"), S("\t \x1b\r\n"), 0, 1 },
	/* bare LF: never an end, never a line break */
	{ S("\n.\n"), S(""), 0, 0, SMTPD_DATA_BARE_LF, 0, 3 },
	{ S("a\n.\n"), S("a"), 0, 0, SMTPD_DATA_BARE_LF, 0, 4 },
	{ S("\r\n.\n"), S("\r\n"), 0, 0, SMTPD_DATA_BARE_LF, 0, 3 },
	{ S("\n.\r\n"), S(""), 0, 0, SMTPD_DATA_BARE_LF, 0, 4 },
	{ S("a\n.\r\nMAIL FROM:<x@y>\r\n"), S("a"), 0, 0,
	    SMTPD_DATA_BARE_LF, 0, 22 },
	{ S("a\r\n.\nMAIL FROM:<x@y>\r\n.\r\n"), S("a\r\n"), 0, 1,
	    SMTPD_DATA_BARE_LF, 0, 21 },
	{ S("a\n.\nb\r\n.\r\n"), S("a"), 0, 1, SMTPD_DATA_BARE_LF, 0, 7 },
	{ S("\nabc\r\n.\r\n"), S(""), 0, 1, SMTPD_DATA_BARE_LF, 0, 6 },
	{ S("ab\ncd\r\n.\r\nX"), S("ab"), 10, 1, SMTPD_DATA_BARE_LF, 0, 7 },
	{ S("a\n\n\n\r\n.\r\n"), S("a"), 0, 1, SMTPD_DATA_BARE_LF, 0, 6 },
	/* bare CR */
	{ S("\r.\r\n"), S(""), 0, 0, SMTPD_DATA_BARE_CR, 0, 4 },
	{ S("a\r.\r\nX\r\n.\r\n"), S("a"), 0, 1, SMTPD_DATA_BARE_CR, 0, 8 },
	{ S("a\r\n.\rX\r\n.\r\n"), S("a\r\n"), 0, 1, SMTPD_DATA_BARE_CR,
	    0, 7 },
	{ S("ab.\rcd\r\n.\r\n"), S("ab."), 0, 1, SMTPD_DATA_BARE_CR, 0, 8 },
	{ S("ab\r\r\n.\r\n"), S("ab"), 0, 1, SMTPD_DATA_BARE_CR, 0, 5 },
	{ S("a\r\n.\r\r\n.\r\n"), S("a\r\n"), 0, 1, SMTPD_DATA_BARE_CR,
	    0, 6 },
	{ S("\r\r\r\n.\r\n"), S(""), 0, 1, SMTPD_DATA_BARE_CR, 0, 4 },
	{ S("a\rb\nc\r\n.\r\n"), S("a"), 0, 1,
	    SMTPD_DATA_BARE_CR | SMTPD_DATA_BARE_LF, 0, 7 },
	{ S("\r\n.\r.\r\n"), S("\r\n"), 0, 0, SMTPD_DATA_BARE_CR, 0, 6 },
	/* size */
	{ S("abcdef\r\n.\r\n"), S("abcdef\r\n"), 0, 1, 0, 8 },
	{ S("abcdef\r\n.\r\n"), S("abcdef\r"), 0, 1, SMTPD_DATA_TOO_BIG, 7,
	    8 },
	{ S("abcdef\r\n.\r\n"), S("abcde"), 0, 1, SMTPD_DATA_TOO_BIG, 5, 8 },
	{ S("abcdef\r\n.\r\n"), S("a"), 0, 1, SMTPD_DATA_TOO_BIG, 1, 8 },
	{ S("..ab\r\n.\r\n"), S(".ab"), 0, 1, SMTPD_DATA_TOO_BIG, 3, 5 },
	{ S("ab\r\ncd\r\n.\r\n"), S("ab\r\nc"), 0, 1, SMTPD_DATA_TOO_BIG, 5,
	    8 },
	{ S(".\r\n"), S(""), 0, 1, 0, 1 },
	{ S("ab\ncd\r\n.\r\n"), S("a"), 0, 1,
	    SMTPD_DATA_BARE_LF | SMTPD_DATA_TOO_BIG, 1, 7 },
};

static void
test_table(void **state)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct data_case *c = &cases[i];
		struct result r;
		size_t consumed = c->consumed ? c->consumed : c->len;
		uint64_t size = c->size ? c->size : c->outlen;

		feed(c->in, c->len, c->max, NULL, 0, &r);
		if (r.n != c->outlen || memcmp(r.out, c->out, r.n) != 0 ||
		    r.consumed != consumed || r.done != c->done ||
		    r.err != c->err || r.size != size)
			fail_msg("case %zu: out %zu \"%.*s\" (want %zu) consumed "
			    "%zu (%zu) done %d (%d) err %d (%d) size %llu (%llu)",
			    i, r.n, (int)r.n, r.out, c->outlen, r.consumed,
			    consumed, r.done, c->done, r.err, c->err,
			    (unsigned long long)r.size,
			    (unsigned long long)size);
		check_splits(c->in, c->len, c->max, &r);
	}
}

/* A feed after the end consumes nothing and emits nothing. */
static void
test_after_done(void **state)
{
	struct smtpd_data d;
	struct result r;

	memset(&r, 0, sizeof(r));
	smtpd_data_init(&d, 0);
	assert_int_equal(smtpd_data_feed(&d, S("x\r\n.\r\n"), collect, &r), 6);
	assert_true(d.done);
	assert_int_equal(smtpd_data_feed(&d, S("y\r\n"), collect, &r), 0);
	assert_int_equal(smtpd_data_feed(&d, S(""), collect, &r), 0);
	assert_int_equal(r.n, 3);
	/* init starts over. */
	smtpd_data_init(&d, 0);
	assert_int_equal(smtpd_data_feed(&d, S(".\r\n"), collect, &r), 3);
	assert_int_equal(r.n, 3);
}

/* Plain lines in one read reach emit as one run, not one call per line. */
static void
test_runs(void **state)
{
	struct result r;

	feed(S("line one\r\nline two\r\n\r\nline four\r\n.\r\n"), 0, NULL, 0,
	    &r);
	assert_int_equal(r.calls, 1);
	/* A removed dot breaks the run once. */
	feed(S("one\r\n..two\r\nthree\r\n.\r\n"), 0, NULL, 0, &r);
	assert_int_equal(r.calls, 2);
	assert_int_equal(r.n, 18);
	assert_memory_equal(r.out, "one\r\n.two\r\nthree\r\n", 18);
}

/* A long body of many lines split into odd reads. */
static void
test_long(void **state)
{
	static char in[3000];
	static struct result whole, r;
	size_t n = 0, cuts[64];

	while (n < sizeof(in) - 64) {
		n += (size_t)snprintf(in + n, sizeof(in) - n, "%s line %zu\r\n",
		    n % 7 == 0 ? "." : "", n);
	}
	memcpy(in + n, "\r\n.\r\n", 5);
	n += 5;
	feed(in, n, 0, NULL, 0, &whole);
	assert_true(whole.done);
	assert_int_equal(whole.consumed, n);
	assert_int_equal(whole.err, 0);
	for (size_t step = 1; step < 64; step += 3) {
		size_t k = 0;

		for (size_t at = step; at < n && k < 64; at += step * 7 + 1)
			cuts[k++] = at;
		feed(in, n, 0, cuts, k, &r);
		same(&r, &whole, "step", step);
	}
}

/*
 * The reference model, from RFC 5321 rather than from the state table: the
 * data ends at the first "\r\n.\r\n" of "\r\n" + input; before it, a line
 * loses a leading dot; output stops at the first CR not before LF or LF
 * not after CR; a CR or dot still undecided at the end of input is held.
 */
static void
reference(const char *in, size_t len, uint64_t max, struct result *r)
{
	size_t body = len, pos = 0;
	int bol = 1;

	memset(r, 0, sizeof(*r));
	r->consumed = len;
	if (len >= 3 && memcmp(in, ".\r\n", 3) == 0) {
		body = 0, r->consumed = 3, r->done = 1;
	} else {
		for (size_t k = 0; k + 5 <= len; k++) {
			if (memcmp(in + k, "\r\n.\r\n", 5) == 0) {
				body = k + 2, r->consumed = k + 5, r->done = 1;
				break;
			}
		}
	}
	while (pos < body) {
		const char *unit = in + pos;
		size_t n = 1;

		if (bol && in[pos] == '.') {
			pos++, bol = 0;
			continue;
		}
		bol = 0;
		if (in[pos] == '\r') {
			if (pos + 1 == body)
				break;
			if (in[pos + 1] == '\n')
				n = 2, bol = 1;
			else
				r->err |= SMTPD_DATA_BARE_CR;
		} else if (in[pos] == '\n') {
			r->err |= SMTPD_DATA_BARE_LF;
		}
		if (!(r->err & (SMTPD_DATA_BARE_CR | SMTPD_DATA_BARE_LF))) {
			for (size_t k = 0; k < n; k++)
				if (max == 0 || r->size + k < max)
					r->out[r->n++] = unit[k];
		}
		r->size += n;
		pos += n;
	}
	if (max > 0 && r->size > max)
		r->err |= SMTPD_DATA_TOO_BIG;
}

static void
test_random(void **state)
{
	static const char alphabet[] = ".\r\n\r\nab.";
	char in[40];
	struct result want, got;
	unsigned seed = 12345;

	for (int iter = 0; iter < 20000; iter++) {
		size_t len, cut;
		uint64_t max;

		seed = seed * 1103515245 + 12345;
		len = (seed >> 16) % sizeof(in);
		max = (seed >> 8) % 3 == 0 ? (seed >> 4) % 12 : 0;
		for (size_t i = 0; i < len; i++) {
			seed = seed * 1103515245 + 12345;
			in[i] = alphabet[(seed >> 16) % (sizeof(alphabet) - 1)];
		}
		cut = len ? (seed >> 3) % (len + 1) : 0;
		reference(in, len, max, &want);
		feed(in, len, max, NULL, 0, &got);
		same(&got, &want, "random vs reference", (size_t)iter);
		feed(in, len, max, &cut, 1, &got);
		same(&got, &want, "random split vs reference", (size_t)iter);
	}
}

int
main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_after_done),
		cmocka_unit_test(test_runs),
		cmocka_unit_test(test_long),
		cmocka_unit_test(test_random),
	};

	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	return cmocka_run_group_tests_name("smtpd_data", tests, NULL, NULL);
}
