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
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "smtpc/smtpc.h"

struct dcase {
	const char *chunks[6];	/* the body, added piece by piece */
	const char *want;
};

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

	if (n != strlen(want) || memcmp(got, want, n) != 0)
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
			evbuffer_add(body, cases[i].chunks[k],
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
			evbuffer_add(body, whole, cut);
			evbuffer_add(tail, whole + cut, n - cut);
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

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_chunks),
		cmocka_unit_test(test_every_cut),
		cmocka_unit_test(test_many_chunks),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
