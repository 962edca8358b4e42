/* SPDX-License-Identifier: MIT */
/*
 * fuzz_data.c: libFuzzer target for the DATA machine of src/smtpd/data.c.
 *
 * Input: byte 0 picks the split point, byte 1 the size limit (0-127 none,
 * 128-255 a limit of 0-127 bytes), the rest is the body. The body is fed
 * whole, split in two at the point chosen, and (when short) byte by byte;
 * all three must give the same output, consumed count, size and error
 * bits (data.c invariant 1), and the output must hold no bare CR or LF.
 * Replayed by scripts/fuzz.sh replay; fuzzed by scripts/fuzz.sh run data.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtpd/data.h"

#define CHECK(x) do { if (!(x)) abort(); } while (0)

struct run {
	char *out;
	size_t n, cap;
	size_t consumed;
	int err, done;
	uint64_t size;
};

static void
collect(void *ctx, const char *p, size_t n)
{
	struct run *r = ctx;

	CHECK(n > 0 && r->n + n <= r->cap);
	memcpy(r->out + r->n, p, n);
	r->n += n;
}

/* Feed body in pieces of step bytes (the first piece first bytes). */
static void
run(const char *body, size_t len, uint64_t max, size_t first, size_t step,
    struct run *r)
{
	struct smtpd_data d;
	size_t at = 0;
	int k = 0;

	r->cap = len;
	r->out = malloc(len + 1);
	r->n = r->consumed = 0;
	smtpd_data_init(&d, max);
	while (!d.done) {
		size_t piece = k++ == 0 ? first : step;
		char *copy;
		size_t used;

		if (piece > len - at)
			piece = len - at;
		/* Its own allocation, so ASan sees reads outside the piece. */
		copy = malloc(piece + 1);
		memcpy(copy, body + at, piece);
		used = smtpd_data_feed(&d, copy, piece, collect, r);
		free(copy);
		CHECK(used <= piece && (used == piece || d.done));
		r->consumed += used;
		at += piece;
		if (at == len && k > 1)
			break;
	}
	r->err = d.err;
	r->done = d.done;
	r->size = d.size;
}

static void
same(const struct run *a, const struct run *b)
{
	CHECK(a->n == b->n && memcmp(a->out, b->out, a->n) == 0);
	CHECK(a->consumed == b->consumed && a->err == b->err);
	CHECK(a->done == b->done && a->size == b->size);
}

/* The output is a prefix of well-formed CRLF lines within the limit. */
static void
check_out(const struct run *r, const char *body, uint64_t max)
{
	for (size_t i = 0; i < r->n; i++) {
		if (r->out[i] == '\n')
			CHECK(i > 0 && r->out[i - 1] == '\r');
		if (r->out[i] == '\r' && i + 1 < r->n)
			CHECK(r->out[i + 1] == '\n');
	}
	CHECK(max == 0 || r->n <= max);
	CHECK(r->size >= r->n);
	if (r->done)
		CHECK((r->consumed == 3 && memcmp(body, ".\r\n", 3) == 0) ||
		    (r->consumed >= 5 &&
		    memcmp(body + r->consumed - 5, "\r\n.\r\n", 5) == 0));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct run whole, split, bytes;
	const char *body;
	size_t len, cut;
	uint64_t max;

	if (size < 2)
		return 0;
	body = (const char *)data + 2;
	len = size - 2;
	cut = len ? data[0] % (len + 1) : 0;
	max = data[1] >= 128 ? data[1] - 128 : 0;
	run(body, len, max, len, len, &whole);
	check_out(&whole, body, max);
	run(body, len, max, cut, len, &split);
	same(&split, &whole);
	free(split.out);
	if (len <= 4096) {
		run(body, len, max, 1, 1, &bytes);
		same(&bytes, &whole);
		free(bytes.out);
	}
	free(whole.out);
	return 0;
}
