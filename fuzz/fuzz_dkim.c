/* SPDX-License-Identifier: MIT */
/*
 * fuzz_dkim.c: libFuzzer target for DKIM canonicalisation (src/dkim/canon.c).
 *
 * Input: byte 0 picks a split point, the rest is a message. The header
 * part (up to the first empty line) is split into fields, each
 * canonicalised (relaxed) and its From: domain taken; the body part is
 * canonicalised whole and in two pieces at the split point. Checks: the
 * two body runs agree (streaming changes nothing); the canonical body is
 * empty or ends in CRLF, has no CR or LF but in CRLF, no WSP before a
 * CRLF, no two SP in a row, no TAB, no empty line at its end; a canonical
 * field has a lower-case name, one colon before the value, no CR or LF
 * but its final CRLF, no WSP around the colon or at the end; measuring
 * and writing give the same length; a From: domain is lower-case.
 * Replayed by scripts/fuzz.sh replay; fuzzed by scripts/fuzz.sh run dkim.
 */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dkim/dkim.h"

#define CHECK(x) do { if (!(x)) abort(); } while (0)

struct out {
	char *p;
	size_t n, cap;
};

static void
emit(void *arg, const char *p, size_t n)
{
	struct out *o = arg;

	if (o->n + n > o->cap) {
		o->cap = (o->n + n) * 2 + 16;
		o->p = realloc(o->p, o->cap);
	}
	memcpy(o->p + o->n, p, n);
	o->n += n;
}

static void
check_body(const struct out *o)
{
	if (o->n == 0)
		return;
	CHECK(o->n >= 2 && o->p[o->n - 2] == '\r' && o->p[o->n - 1] == '\n');
	CHECK(!(o->n >= 4 && memcmp(o->p + o->n - 4, "\r\n\r\n", 4) == 0));
	for (size_t i = 0; i < o->n; i++) {
		char c = o->p[i];
		CHECK(c != '\t');
		if (c == '\n')
			CHECK(i > 0 && o->p[i - 1] == '\r');
		if (c == '\r' && i + 1 < o->n && o->p[i + 1] == '\n')
			CHECK(i == 0 || o->p[i - 1] != ' ');
		if (c == ' ')
			CHECK(i + 1 < o->n && o->p[i + 1] != ' ');
	}
}

static void
check_field(const struct dkim_field *f)
{
	size_t n = dkim_canon_header(f->raw, f->rawlen, 1, NULL, 0), colon;
	char *c = malloc(n + 1), dom[256];

	CHECK(dkim_canon_header(f->raw, f->rawlen, 1, c, n) == n);
	CHECK(n >= 3 && c[n - 2] == '\r' && c[n - 1] == '\n');
	colon = (size_t)((char *)memchr(c, ':', n) - c);
	for (size_t i = 0; i < colon; i++)
		CHECK(!isupper((unsigned char)c[i]));
	CHECK(colon == 0 || (c[colon - 1] != ' ' && c[colon - 1] != '\t'));
	CHECK(c[colon + 1] != ' ');
	CHECK(n - 2 == colon + 1 || c[n - 3] != ' ');
	for (size_t i = 0; i + 2 < n; i++)
		CHECK(c[i] != '\r' && c[i] != '\n' && c[i] != '\t');
	if (dkim_from_domain(f->raw, f->rawlen, dom, sizeof(dom)) == 0)
		for (char *p = dom; *p; p++)
			CHECK(!isupper((unsigned char)*p));
	free(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct dkim_field fields[64];
	struct out whole = { 0 }, split = { 0 };
	struct dkim_body b;
	const char *msg, *eoh;
	size_t n, hlen, cut, nf;

	if (size == 0)
		return 0;
	msg = (const char *)data + 1;
	n = size - 1;
	eoh = memmem(msg, n, "\r\n\r\n", 4);
	hlen = eoh ? (size_t)(eoh - msg) + 2 : n;
	nf = dkim_fields(msg, hlen, fields, 64);
	for (size_t i = 0; i < nf; i++) {
		CHECK(fields[i].raw >= msg && fields[i].raw + fields[i].rawlen <=
		    msg + hlen);
		check_field(&fields[i]);
	}
	msg += eoh ? hlen + 2 : hlen;
	n -= eoh ? hlen + 2 : hlen;
	cut = n ? data[0] % (n + 1) : 0;
	dkim_body_init(&b, emit, &whole);
	dkim_body_feed(&b, msg, n);
	dkim_body_end(&b);
	dkim_body_init(&b, emit, &split);
	dkim_body_feed(&b, msg, cut);
	dkim_body_feed(&b, msg + cut, n - cut);
	dkim_body_end(&b);
	CHECK(whole.n == split.n && (whole.n == 0 ||
	    memcmp(whole.p, split.p, whole.n) == 0));
	check_body(&whole);
	free(whole.p);
	free(split.p);
	return 0;
}
