/* SPDX-License-Identifier: MIT */
/*
 * fuzz_reply.c: libFuzzer target for the reply parser of src/smtpc/reply.c.
 *
 * Input: byte 0 picks the split point, the rest is what a peer sends. The
 * input is parsed into as many replies as it holds (re-initialising after
 * each, as the connection does), fed whole, split in two at the point
 * chosen, and (when short) byte by byte; all three must give the same
 * replies, consumed counts and error (reply.c invariant 1), and every
 * reply must keep the limits (invariant 3).
 * Replayed by scripts/fuzz.sh replay; fuzzed by scripts/fuzz.sh run reply.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtpc/smtpc.h"

#define CHECK(x) do { if (!(x)) abort(); } while (0)
#define MAX_REPLIES 64

struct run {
	int n;			/* replies completed */
	int code[MAX_REPLIES];
	int lines[MAX_REPLIES];
	size_t textlen[MAX_REPLIES];
	uint32_t texthash[MAX_REPLIES];
	size_t consumed;	/* bytes consumed in all */
	int error;
};

static uint32_t
hash(const char *s)
{
	uint32_t h = 2166136261u;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

static void
check_reply(const struct smtpc_reply *r)
{
	CHECK(r->lines >= 1 && r->lines <= SMTPC_REPLY_MAX_LINES);
	CHECK(r->code >= 200 && r->code <= 599);
	CHECK(r->len <= SMTPC_REPLY_MAX_BYTES);
	CHECK(strlen(r->text) < sizeof(r->text));
	for (const char *p = r->text; *p; p++)
		CHECK((unsigned char)*p >= 0x20 && *p != 0x7f);
}

/* Feed in pieces of step bytes (the first piece first bytes). */
static void
run(const char *in, size_t len, size_t first, size_t step, struct run *out)
{
	struct smtpc_reply r;
	size_t at = 0;

	memset(out, 0, sizeof(*out));
	smtpc_reply_init(&r);
	while (at < len && !out->error && out->n < MAX_REPLIES) {
		size_t piece = at == 0 ? first : step, used;
		char *copy;

		if (piece > len - at)
			piece = len - at;
		if (piece == 0)
			piece = 1;
		/* Its own allocation, so ASan sees reads outside the piece. */
		copy = malloc(piece);
		memcpy(copy, in + at, piece);
		used = smtpc_reply_feed(&r, copy, piece);
		free(copy);
		CHECK(used <= piece);
		CHECK(used == piece || r.complete || r.error);
		at += used;
		out->consumed += used;
		if (r.error) {
			out->error = 1;
		} else if (r.complete) {
			check_reply(&r);
			out->code[out->n] = r.code;
			out->lines[out->n] = r.lines;
			out->textlen[out->n] = strlen(r.text);
			out->texthash[out->n] = hash(r.text);
			out->n++;
			smtpc_reply_init(&r);
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct run whole, split, bytes;
	const char *in;
	size_t len, cut;

	if (size < 1)
		return 0;
	in = (const char *)data + 1;
	len = size - 1;
	cut = len ? data[0] % (len + 1) : 0;
	run(in, len, len, len, &whole);
	run(in, len, cut, len, &split);
	CHECK(memcmp(&whole, &split, sizeof(whole)) == 0);
	if (len <= 4096) {
		run(in, len, 1, 1, &bytes);
		CHECK(memcmp(&whole, &bytes, sizeof(whole)) == 0);
	}
	return 0;
}
