/* SPDX-License-Identifier: MIT */
/*
 * test_dotstuff.c: bodies through smtpc_dotstuff() (src/smtpc/dotstuff.c),
 * each built from several evbuffer_add() calls so that a line start falls
 * on a chunk boundary, and each also cut at every byte into two chunks.
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

#include "smtpc/smtpc.h"

#define SL_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* '#' in chunks and want stands for a NUL byte. */
struct dcase {
	const char *chunks[6];	/* the body, added piece by piece */
	const char *want;
};

/* s with '#' made NUL, in buf (of at least strlen(s) bytes). */
static const char *
nul(const char *s, char *buf)
{
	size_t n = strlen(s);

	for (size_t i = 0; i < n; i++)
		buf[i] = s[i] == '#' ? '\0' : s[i];
	return buf;
}

static void
add(struct evbuffer *b, const char *s, size_t n)
{
	char buf[256];

	evbuffer_add(b, nul(s, buf), n);
}

static const struct dcase cases[] = {
	{ { NULL }, ".\r\n" },
	{ { "a\r\n" }, "a\r\n.\r\n" },
	{ { "a" }, "a\r\n.\r\n" },
	{ { "a\r" }, "a\r\r\n.\r\n" },
	{ { "a\n" }, "a\n\r\n.\r\n" },
	{ { ".\r\n" }, "..\r\n.\r\n" },
	{ { "." }, "..\r\n.\r\n" },
	{ { "a\r\n.b\r\n..c\r\n" }, "a\r\n..b\r\n...c\r\n.\r\n" },
	{ { "a\r\n", ".b\r\n" }, "a\r\n..b\r\n.\r\n" },
	{ { "a\r", "\n", ".", "b" }, "a\r\n..b\r\n.\r\n" },
	{ { "x.y\r\n", "z.\r\n", ".", "\r\n" }, "x.y\r\nz.\r\n..\r\n.\r\n" },
	{ { "Subject: x\r\n\r\n", ".\r\n", "end\r", "\n" },
	    "Subject: x\r\n\r\n..\r\nend\r\n.\r\n" },
	{ { "", "a\r\n", "" }, "a\r\n.\r\n" },
	/* issue 9 item 8: a bare CR or LF starts a line for many receivers */
	{ { "a\r.\r\nb\r\n" }, "a\r..\r\nb\r\n.\r\n" },
	{ { "a\n.\nb\r\n" }, "a\n..\nb\r\n.\r\n" },
	{ { "a\n.\r\nb\r\n" }, "a\n..\r\nb\r\n.\r\n" },
	{ { "a\r\n.\nb\r\n" }, "a\r\n..\nb\r\n.\r\n" },
	{ { "a\r", ".", "\r\n" }, "a\r..\r\n.\r\n" },
	/* a NUL ('#' here) at a line start keeps it one (a receiver may drop
	 * NULs) */
	{ { "a\r\n#.\r\nb\r\n" }, "a\r\n#..\r\nb\r\n.\r\n" },
	{ { "a\r\n#", "#.x\r\n" }, "a\r\n##..x\r\n.\r\n" },
	{ { "a#.\r\n" }, "a#.\r\n.\r\n" },
};

static char *
run(struct evbuffer *body, size_t *n)
{
	struct evbuffer *out = evbuffer_new();
	char *s;

	evbuffer_add(out, "DATA\r\n", 6);	/* appends, keeps what is there */
	smtpc_dotstuff(out, body);
	*n = evbuffer_get_length(out) - 6;
	s = malloc(*n + 1);
	evbuffer_drain(out, 6);
	evbuffer_remove(out, s, *n);
	s[*n] = '\0';
	evbuffer_free(out);
	return s;
}

static void
check(size_t i, const char *how, struct evbuffer *body, const char *want)
{
	size_t n, blen = evbuffer_get_length(body);
	char *got = run(body, &n);
	char w[256];

	if (n != strlen(want) || memcmp(got, nul(want, w), n) != 0)
		fail_msg("case %zu (%s): got \"%s\", want \"%s\"", i, how, got,
		    want);
	/* The body is borrowed: still all there. */
	assert_int_equal(evbuffer_get_length(body), blen);
	free(got);
}

static void
test_chunks(void **state)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct evbuffer *body = evbuffer_new();

		for (int k = 0; cases[i].chunks[k] != NULL; k++)
			add(body, cases[i].chunks[k],
			    strlen(cases[i].chunks[k]));
		check(i, "chunks", body, cases[i].want);
		evbuffer_free(body);
	}
}

/* The same bodies whole and cut at every byte into two chunks. */
static void
test_every_cut(void **state)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char whole[256] = "";
		size_t n;

		for (int k = 0; cases[i].chunks[k] != NULL; k++)
			strcat(whole, cases[i].chunks[k]);
		n = strlen(whole);
		for (size_t cut = 0; cut <= n; cut++) {
			struct evbuffer *body = evbuffer_new();
			struct evbuffer *tail = evbuffer_new();

			/* Separate chains: evbuffer_add_buffer moves them. */
			add(body, whole, cut);
			add(tail, whole + cut, n - cut);
			evbuffer_add_buffer(body, tail);
			check(i, "cut", body, cases[i].want);
			evbuffer_free(tail);
			evbuffer_free(body);
		}
	}
}

/* Many chunks (more than one evbuffer_peek batch), a dot after each. */
static void
test_many_chunks(void **state)
{
	struct evbuffer *body = evbuffer_new();
	struct evbuffer *want = evbuffer_new();
	struct evbuffer *out = evbuffer_new();

	for (int i = 0; i < 100; i++) {
		struct evbuffer *piece = evbuffer_new();

		evbuffer_add_printf(piece, "line %d\r\n.", i);
		evbuffer_add_buffer(body, piece);	/* keeps chunks apart */
		evbuffer_free(piece);
		evbuffer_add_printf(want, i == 0 ? "line %d\r\n" :
		    "..line %d\r\n", i);
	}
	evbuffer_add(want, "..\r\n.\r\n", 7);
	smtpc_dotstuff(out, body);
	assert_int_equal(evbuffer_get_length(out), evbuffer_get_length(want));
	assert_memory_equal(evbuffer_pullup(out, -1), evbuffer_pullup(want, -1),
	    evbuffer_get_length(want));
	evbuffer_free(out);
	evbuffer_free(want);
	evbuffer_free(body);
}

/*
 * Issue 9 item 8: whatever the body, no receiver that ends lines at CRLF,
 * a bare CR or a bare LF, and that keeps or drops NUL bytes, finds an end
 * of data ("<line end>.<line end>") before the one we send last. Random
 * bodies over the bytes that matter, a fixed seed.
 */
static const char *const brks[] = { "\r\n", "\r", "\n" };

/* The first end of data a lenient receiver sees in s[0..n), or n. */
static size_t
first_end(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		for (int a = 0; a < 3; a++) {
			size_t la = strlen(brks[a]);
			if (i + la >= n || memcmp(s + i, brks[a], la) != 0 ||
			    s[i + la] != '.')
				continue;
			for (int b = 0; b < 3; b++) {
				size_t lb = strlen(brks[b]);
				if (i + la + 1 + lb <= n &&
				    memcmp(s + i + la + 1, brks[b], lb) == 0)
					return i;
			}
		}
	}
	return n;
}

static void
test_no_early_end(void **state)
{
	static const char alpha[] = { '\r', '\n', '.', 'a', '\0' };
	uint64_t rng = 42;
	char body[48], wire[256], seen[256];

	for (int iter = 0; iter < 300000; iter++) {
		struct evbuffer *b = evbuffer_new(), *out = evbuffer_new();
		size_t len, n;

		rng = rng * 6364136223846793005ull + 1442695040888963407ull;
		len = (size_t)(rng >> 59) % 24;
		for (size_t i = 0; i < len; i++) {
			rng = rng * 6364136223846793005ull + 1;
			body[i] = alpha[(rng >> 33) % sizeof(alpha)];
		}
		evbuffer_add(b, body, len);
		/* the command line before it: the data starts a line */
		evbuffer_add(out, "\r\n", 2);
		smtpc_dotstuff(out, b);
		n = evbuffer_get_length(out);
		assert_true(n < sizeof(wire));
		evbuffer_remove(out, wire, n);
		for (int drop = 0; drop < 2; drop++) {
			size_t m = 0;
			for (size_t i = 0; i < n; i++)
				if (!drop || wire[i] != '\0')
					seen[m++] = wire[i];
			/* the end we sent: the last five bytes */
			if (first_end(seen, m) < m - 5)
				fail_msg("body of %zu bytes ends early (NULs %s)"
				    " at %zu of %zu", len, drop ? "dropped" :
				    "kept", first_end(seen, m), m);
		}
		evbuffer_free(b);
		evbuffer_free(out);
	}
}

/* Issue 9 item 10: the wire lines of a body, each at most 998 octets. */
static void
check_lines(const char *wire, size_t n, const char *what)
{
	size_t start = 0;

	for (size_t i = 0; i + 1 < n; i++) {
		if (wire[i] != '\r' || wire[i + 1] != '\n')
			continue;
		/* a strict receiver takes the first dot of a line away */
		size_t len = i - start - (wire[start] == '.' ? 1 : 0);
		if (len > SMTPC_LINE_MAX)
			fail_msg("%s: a line of %zu octets at %zu", what, len,
			    start);
		start = i + 2;
	}
}

static char *
encode(const char *body, size_t n, size_t cut, size_t *outlen)
{
	struct evbuffer *b = evbuffer_new(), *t = evbuffer_new();
	struct evbuffer *out = evbuffer_new();
	char *s;

	evbuffer_add(b, body, cut);
	evbuffer_add(t, body + cut, n - cut);
	evbuffer_add_buffer(b, t);
	smtpc_dotstuff(out, b);
	*outlen = evbuffer_get_length(out);
	s = malloc(*outlen + 1);
	evbuffer_remove(out, s, *outlen);
	s[*outlen] = '\0';
	evbuffer_free(out);
	evbuffer_free(t);
	evbuffer_free(b);
	return s;
}

static void
test_fold_long_lines(void **state)
{
	static const struct {
		size_t x;		/* 'x' bytes in the line */
		const char *before;	/* before them */
		const char *after;	/* after them */
		int folds;		/* "\r\n " inserted */
	} fc[] = {
		{ 998, "", "\r\n", 0 },
		{ 999, "", "\r\n", 1 },
		{ 1996, "", "\r\n", 2 },	/* 998 + 997 + 1 */
		{ 2500, "", "", 2 },
		{ 998, ".", "\r\n", 1 },	/* the dot counts, the stuffed not */
		{ 997, ".", "\r\n", 0 },
		{ 998, "Subject: ", "\r\n\r\nbody\r\n", 1 },
		{ 998, "", "\r\r\n", 1 },	/* a bare CR is content */
		{ 3000, "a\n", "\n", 3 },	/* bare LFs do not end lines */
	};
	char *body = malloc(4096);

	for (size_t i = 0; i < SL_LEN(fc); i++) {
		size_t n = 0;

		n += (size_t)sprintf(body, "%s", fc[i].before);
		memset(body + n, 'x', fc[i].x);
		n += fc[i].x;
		n += (size_t)sprintf(body + n, "%s", fc[i].after);
		for (size_t cut = 0; cut <= n; cut += cut < 990 ? 97 : 1) {
			size_t wl, folds = 0;
			char *wire = encode(body, n, cut, &wl), what[64];

			snprintf(what, sizeof(what), "case %zu cut %zu", i, cut);
			check_lines(wire, wl, what);
			for (char *p = wire; (p = strstr(p, "\r\n ")) != NULL;
			    p += 3)
				folds++;
			if (folds != (size_t)fc[i].folds)
				fail_msg("%s: %zu folds, want %d", what, folds,
				    fc[i].folds);
			/* taking the folds out gives the body back */
			{
				char *q = wire, *w = wire;
				size_t k = 0;
				while (q < wire + wl) {
					if (q + 3 <= wire + wl &&
					    memcmp(q, "\r\n ", 3) == 0) {
						q += 3;
						continue;
					}
					w[k++] = *q++;
				}
				assert_true(k >= n);
				/* less the dot stuffed at the start */
				assert_memory_equal(w + (body[0] == '.'), body,
				    n);
			}
			free(wire);
			if (cut >= n)
				break;
		}
	}
	free(body);
}

/* Random bodies with long lines: every wire line fits. */
static void
test_fold_random(void **state)
{
	static const char alpha[] = { '\r', '\n', '.', 'a', '\0' };
	uint64_t rng = 7;
	char *body = malloc(8192);

	for (int iter = 0; iter < 2000; iter++) {
		size_t n = 0, wl;
		char *wire;

		while (n < 6000) {
			rng = rng * 6364136223846793005ull + 1442695040888963407ull;
			if ((rng >> 60) < 2) {
				size_t run = (size_t)(rng >> 40) % 2100;
				memset(body + n, 'y', run);
				n += run;
			} else {
				body[n++] = alpha[(rng >> 33) % sizeof(alpha)];
			}
		}
		wire = encode(body, n, (size_t)(rng >> 20) % n, &wl);
		check_lines(wire, wl, "random");
		free(wire);
	}
	free(body);
}

/* The resumable encoder counts what it would write (the BDAT size). */
static void
test_enc_size(void **state)
{
	struct evbuffer *b = evbuffer_new(), *out = evbuffer_new();
	char line[3000];

	memset(line, 'z', sizeof(line));
	evbuffer_add(b, "a\r\n.b\r\n", 8);
	evbuffer_add(b, line, sizeof(line));
	evbuffer_add(b, "\r\nend", 5);
	for (int stuff = 0; stuff < 2; stuff++) {
		for (int fold = 0; fold < 2; fold++) {
			struct smtpc_enc e;
			size_t took;

			smtpc_enc_init(&e, stuff, fold);
			took = smtpc_enc_body(&e, out, b, 0, 1000);
			assert_int_equal(took, 1000);
			took += smtpc_enc_body(&e, out, b, took, (size_t)-1);
			assert_int_equal(took, evbuffer_get_length(b));
			smtpc_enc_end(&e, out);
			assert_int_equal(e.out, evbuffer_get_length(out));
			assert_int_equal(smtpc_enc_size(b, stuff, fold),
			    evbuffer_get_length(out));
			if (!stuff && !fold)	/* BDAT of a binary body */
				assert_int_equal(e.out, evbuffer_get_length(b));
			evbuffer_drain(out, evbuffer_get_length(out));
		}
	}
	evbuffer_free(out);
	evbuffer_free(b);
}

/* The encoder's output for body fed in pieces of at most step bytes. */
static struct evbuffer *
enc_pieces(const char *body, size_t n, size_t step, int stuff, int fold)
{
	struct evbuffer *out = evbuffer_new();
	struct smtpc_enc e;

	smtpc_enc_init(&e, stuff, fold);
	for (size_t off = 0; off < n; off += step)
		smtpc_enc_feed(&e, out, body + off, n - off < step ? n - off :
		    step);
	smtpc_enc_end(&e, out);
	assert_int_equal(e.out, evbuffer_get_length(out));
	return out;
}

/*
 * Whole lines go out in one piece (enc_run); fed one byte at a time the
 * encoder never takes that path. Random bodies of short and long lines,
 * dots, NULs, bare CRs and LFs: the same bytes either way.
 */
static void
test_run_same_as_bytewise(void **state)
{
	static const char alpha[] = "ab.\r\n\r\n\0 ";
	uint64_t rng = 99;
	char body[4000];

	for (int round = 0; round < 300; round++) {
		size_t n = 0, lines = 1 + round % 40;
		for (size_t l = 0; l < lines && n < sizeof(body) - 1100; l++) {
			rng = rng * 6364136223846793005ull + 1442695040888963407ull;
			size_t len = (rng >> 33) % (round % 3 ? 80 : 1050);
			for (size_t i = 0; i < len; i++) {
				rng = rng * 6364136223846793005ull + 1;
				body[n++] = (rng >> 40) % 5 ? 'x' :
				    alpha[(rng >> 20) % (sizeof(alpha) - 1)];
			}
			body[n++] = '\r';
			body[n++] = '\n';
		}
		for (int mode = 0; mode < 4; mode++) {
			struct evbuffer *a = enc_pieces(body, n, 1, mode & 1,
			    mode & 2);
			struct evbuffer *b = enc_pieces(body, n, n ? n : 1,
			    mode & 1, mode & 2);
			struct evbuffer *c = enc_pieces(body, n, 7 + round % 50,
			    mode & 1, mode & 2);
			size_t la = evbuffer_get_length(a);
			assert_int_equal(la, evbuffer_get_length(b));
			assert_int_equal(la, evbuffer_get_length(c));
			assert_memory_equal(evbuffer_pullup(a, -1),
			    evbuffer_pullup(b, -1), la);
			assert_memory_equal(evbuffer_pullup(a, -1),
			    evbuffer_pullup(c, -1), la);
			evbuffer_free(a);
			evbuffer_free(b);
			evbuffer_free(c);
		}
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_chunks),
		cmocka_unit_test(test_every_cut),
		cmocka_unit_test(test_many_chunks),
		cmocka_unit_test(test_no_early_end),
		cmocka_unit_test(test_fold_long_lines),
		cmocka_unit_test(test_fold_random),
		cmocka_unit_test(test_enc_size),
		cmocka_unit_test(test_run_same_as_bytewise),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
