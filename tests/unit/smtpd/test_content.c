/* SPDX-License-Identifier: MIT */
/*
 * test_content.c: the body checks of src/smtpd/content.c (bare CR and LF,
 * NUL, Received: fields in the header section). A table of bodies, each
 * fed whole, split at every point, and byte by byte, which must all give
 * the same result; random bodies checked against a reference model
 * written from the rules rather than from the code.
 *
 * Run one test by name: test_content test_table (a cmocka filter pattern).
 */
#include <ctype.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "smtpd/content.h"

#define S(lit) lit, sizeof(lit) - 1
#define LF SMTPD_CONTENT_BARE_LF
#define CR SMTPD_CONTENT_BARE_CR
#define NUL SMTPD_CONTENT_NUL

struct result {
	int err;
	uint32_t received;
};

/* Feed in as pieces ending at the cut points, then the rest; each piece
 * in its own allocation so that ASan sees reads outside it. */
static void
feed(const char *in, size_t len, int lines, const size_t *cuts, size_t ncuts,
    struct result *r)
{
	struct smtpd_content c;
	size_t from = 0;

	smtpd_content_init(&c, lines);
	for (size_t k = 0; k <= ncuts; k++) {
		size_t to = k < ncuts ? cuts[k] : len;
		char *piece = malloc(to - from + 1);

		memcpy(piece, in + from, to - from);
		smtpd_content_feed(&c, piece, to - from);
		free(piece);
		from = to;
	}
	smtpd_content_end(&c);
	r->err = c.err;
	r->received = c.received;
}

static const struct tcase {
	const char *in;
	size_t len;
	int lines;
	int err;
	uint32_t received;
} cases[] = {
	{ S("Subject: x\r\n\r\nbody\r\n"), 1, 0, 0 },
	{ S("Received: a\r\nreceived :b\r\nRECEIVED\t: c\r\n\r\nx\r\n"), 1, 0, 3 },
	/* continuation lines, other fields, the body are not counted */
	{ S("Received: a\r\n Received: b\r\nX-Received: c\r\nReceived-SPF: "
	    "d\r\n\r\nReceived: e\r\n"), 1, 0, 1 },
	{ S("Receive: a\r\nReceivedd: b\r\nReceived\r\n\r\n"), 1, 0, 0 },
	/* no empty line: all of it is the header section */
	{ S("Received: a\r\nReceived: b"), 1, 0, 2 },
	/* bare LF, bare CR, a CR at the very end, CR CR LF */
	{ S("a\nb\r\n"), 1, LF, 0 },
	{ S("a\rb\r\n"), 1, CR, 0 },
	{ S("a\r\nb\r"), 1, CR, 0 },
	{ S("a\r\r\n"), 1, CR, 0 },
	{ S("\n"), 1, LF, 0 },
	{ S("\r"), 1, CR, 0 },
	/* the smuggling ends of data, as a BDAT chunk carries them */
	{ S("x\r\n\n.\n\r\n"), 1, LF, 0 },
	{ S("x\r\n\r.\r\n"), 1, CR, 0 },
	/* NUL anywhere, with or without the line checks */
	{ S("a\r\n\0.\r\n"), 1, NUL, 0 },
	{ S("a\r\n\0.\r\n"), 0, NUL, 0 },
	{ S("Subject: \0\r\n\r\n"), 0, NUL, 0 },
	{ S("\r\n\r\nbody \0 here\r\n"), 0, NUL, 0 },
	{ S("\r\0"), 1, NUL | CR, 0 },
	/* without lines, CR and LF are data.c's business */
	{ S("a\nb\rc"), 0, 0, 0 },
	/* the empty message, and one that is only a body */
	{ S(""), 1, 0, 0 },
	{ S("\r\nReceived: x\r\n"), 1, 0, 0 },
};

static void
same(const struct result *got, const struct result *want, const char *how,
    size_t i)
{
	if (got->err != want->err || got->received != want->received)
		fail_msg("case %zu %s: err %d received %u, want %d %u", i, how,
		    got->err, got->received, want->err, want->received);
}

static void
test_table(void **state)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct tcase *t = &cases[i];
		struct result want = { t->err, t->received }, got;
		size_t *every = malloc((t->len + 1) * sizeof(size_t));

		feed(t->in, t->len, t->lines, NULL, 0, &got);
		same(&got, &want, "whole", i);
		for (size_t cut = 0; cut <= t->len; cut++) {
			feed(t->in, t->len, t->lines, &cut, 1, &got);
			same(&got, &want, "split", i);
		}
		for (size_t k = 0; k < t->len; k++)
			every[k] = k;
		feed(t->in, t->len, t->lines, every, t->len, &got);
		same(&got, &want, "byte by byte", i);
		free(every);
	}
}

/* The rules as written: no CR/LF state machine, lines split at LF. */
static void
reference(const char *in, size_t len, int lines, struct result *r)
{
	size_t start = 0;
	int header = 1;

	memset(r, 0, sizeof(*r));
	if (memchr(in, '\0', len) != NULL)
		r->err |= NUL;
	for (size_t i = 0; lines && i < len; i++) {
		if (in[i] == '\r' && (i + 1 == len || in[i + 1] != '\n'))
			r->err |= CR;
		if (in[i] == '\n' && (i == 0 || in[i - 1] != '\r'))
			r->err |= LF;
	}
	while (header && start < len) {
		const char *lf = memchr(in + start, '\n', len - start);
		size_t end = lf ? (size_t)(lf - in) : len, n = 0;
		char line[64];

		for (size_t i = start; i < end && n + 1 < sizeof(line); i++)
			if (in[i] != '\r')
				line[n++] = (char)tolower((unsigned char)in[i]);
		line[n] = '\0';
		if (n == 0 && lf != NULL) {
			header = 0;
		} else if (strncmp(line, "received", 8) == 0) {
			size_t k = 8;
			while (line[k] == ' ' || line[k] == '\t')
				k++;
			if (line[k] == ':')
				r->received++;
		}
		start = end + 1;
	}
}

static void
test_random(void **state)
{
	static const char *const words[] = {
		"\r", "\n", "\r\n", "\0", "Received:", "received :", " ", "x",
		"Received", ":", "\t",
	};
	char in[60];
	struct result want, got;
	unsigned seed = 4242;

	for (int iter = 0; iter < 50000; iter++) {
		size_t len = 0, cut;
		int lines;

		seed = seed * 1103515245 + 12345;
		lines = (seed >> 20) & 1;
		for (int w = (seed >> 16) % 12; w > 0; w--) {
			const char *word;
			size_t wl;

			seed = seed * 1103515245 + 12345;
			word = words[(seed >> 16) % (sizeof(words) / sizeof(*words))];
			wl = word[0] == '\0' ? 1 : strlen(word);
			if (len + wl > sizeof(in))
				break;
			memcpy(in + len, word, wl);
			len += wl;
		}
		cut = len ? (seed >> 3) % (len + 1) : 0;
		reference(in, len, lines, &want);
		feed(in, len, lines, NULL, 0, &got);
		same(&got, &want, "random vs reference", (size_t)iter);
		feed(in, len, lines, &cut, 1, &got);
		same(&got, &want, "random split vs reference", (size_t)iter);
	}
}

/* A large body costs a memchr a piece past the header section. */
static void
test_large(void **state)
{
	size_t n = 8 << 20;
	char *big = malloc(n);
	struct result got;

	for (size_t i = 0; i < n; i++)
		big[i] = (i % 100 == 98) ? '\r' : (i % 100 == 99) ? '\n' : 'a';
	memcpy(big, "Received: x\r\n\r\n", 15);
	feed(big, n, 1, NULL, 0, &got);
	assert_int_equal(got.err, 0);
	assert_int_equal(got.received, 1);
	big[n / 2] = '\0';
	feed(big, n, 0, NULL, 0, &got);
	assert_int_equal(got.err, NUL);
	free(big);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_random),
		cmocka_unit_test(test_large),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
