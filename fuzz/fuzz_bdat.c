/* SPDX-License-Identifier: MIT */
/*
 * fuzz_bdat.c: libFuzzer target for BDAT chunking (RFC 3030): the BDAT
 * argument parser of src/smtpd/parse.c and the body checks of
 * src/smtpd/content.c (bare CR and LF, NUL, Received: fields) across
 * chunk boundaries and read splits.
 *
 * Input: byte 0 seeds the chunk sizes (1-63 bytes each), byte 1 the sizes
 * of the reads (1-32 bytes), the rest is the body. The body is cut into
 * chunks and framed as a client sends it ("BDAT n\r\n" + n bytes, the
 * last "BDAT n LAST\r\n"); that stream is read back in reads of the sizes
 * drawn, as the session does: a command line up to its LF, parsed, then n
 * bytes fed to the checks in whatever pieces the reads give. Then:
 *  - every BDAT line parses to the size and LAST flag it was made with,
 *    and the bytes taken are the body, in order;
 *  - the checks' result (error bits, Received: count) is the one of the
 *    whole body fed at once (content.c invariant 1);
 *  - the error bits are those of a byte-by-byte reference of the rules.
 * Replayed by scripts/fuzz.sh replay; fuzzed by scripts/fuzz.sh run bdat.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtpd/content.h"
#include "smtpd/parse.h"

#define CHECK(x) do { if (!(x)) abort(); } while (0)

/* A small generator of sizes from one byte of the input. */
static unsigned
draw(unsigned *seed, unsigned mod)
{
	*seed = *seed * 1103515245u + 12345u;
	return (*seed >> 16) % mod;
}

/* The body framed as BDAT chunks; returns a new buffer of *len bytes. */
static char *
frame(const char *body, size_t len, unsigned seed, size_t *outlen)
{
	char *out = malloc(len + (len + 1) * 32), *p = out;
	size_t at = 0;

	for (;;) {
		/* at least a byte a chunk; "BDAT 0 LAST" only at the end */
		size_t n = at < len ? 1 + draw(&seed, 63) : 0;
		int last;

		if (n > len - at)
			n = len - at;
		last = at + n == len && (n == 0 || draw(&seed, 4) != 0);
		p += sprintf(p, "BDAT %zu%s\r\n", n, last ? " LAST" : "");
		memcpy(p, body + at, n);
		p += n;
		at += n;
		if (last)
			break;
	}
	*outlen = (size_t)(p - out);
	return out;
}

/* What the session does with the stream: lines, then chunk bytes. */
struct reader {
	char line[64];
	size_t nline;
	uint64_t left;		/* bytes of the current chunk still to take */
	int in_chunk, last, done;
	char *body;		/* the bytes taken, in order */
	size_t nbody;
	struct smtpd_content c;
};

static void
reader_feed(struct reader *r, const char *p, size_t n)
{
	while (n > 0 && !r->done) {
		if (r->in_chunk) {
			size_t k = r->left < n ? (size_t)r->left : n;

			smtpd_content_feed(&r->c, p, k);
			memcpy(r->body + r->nbody, p, k);
			r->nbody += k;
			r->left -= k;
			p += k, n -= k;
		} else {
			char c = *p++;

			n--;
			CHECK(r->nline + 1 < sizeof(r->line));
			r->line[r->nline++] = c;
			if (c != '\n')
				continue;
			r->line[r->nline - 2] = '\0';	/* the CRLF */
			{
				char *arg;
				uint64_t size;
				int last;

				CHECK(smtpd_parse_verb(r->line, &arg) ==
				    SMTPD_CMD_BDAT);
				CHECK(smtpd_parse_bdat(arg, &size, &last) ==
				    SMTPD_P_OK);
				r->left = size;
				r->last = last;
			}
			r->nline = 0;
			r->in_chunk = 1;
		}
		if (r->in_chunk && r->left == 0) {
			r->in_chunk = 0;
			if (r->last) {
				smtpd_content_end(&r->c);
				r->done = 1;
			}
		}
	}
}

/* The rules byte by byte: NUL anywhere, a CR must precede each LF and
 * follow nothing but be followed by an LF. */
static int
reference(const char *b, size_t n)
{
	int err = 0;

	for (size_t i = 0; i < n; i++) {
		if (b[i] == '\0')
			err |= SMTPD_CONTENT_NUL;
		if (b[i] == '\r' && (i + 1 == n || b[i + 1] != '\n'))
			err |= SMTPD_CONTENT_BARE_CR;
		if (b[i] == '\n' && (i == 0 || b[i - 1] != '\r'))
			err |= SMTPD_CONTENT_BARE_LF;
	}
	return err;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct reader r;
	struct smtpd_content whole;
	const char *body;
	char *wire;
	size_t len, wlen, at = 0;
	unsigned rseed;

	if (size < 2)
		return 0;
	body = (const char *)data + 2;
	len = size - 2;
	wire = frame(body, len, data[0], &wlen);
	memset(&r, 0, sizeof(r));
	r.body = malloc(len + 1);
	smtpd_content_init(&r.c, 1);
	rseed = data[1];
	while (at < wlen) {
		size_t n = 1 + draw(&rseed, 32);
		char *piece;

		if (n > wlen - at)
			n = wlen - at;
		/* its own allocation, so ASan sees reads outside the piece */
		piece = malloc(n);
		memcpy(piece, wire + at, n);
		reader_feed(&r, piece, n);
		free(piece);
		at += n;
	}
	CHECK(r.done && r.nbody == len && memcmp(r.body, body, len) == 0);
	smtpd_content_init(&whole, 1);
	smtpd_content_feed(&whole, body, len);
	smtpd_content_end(&whole);
	CHECK(r.c.err == whole.err && r.c.received == whole.received);
	CHECK(whole.err == reference(body, len));
	free(r.body);
	free(wire);
	return 0;
}
