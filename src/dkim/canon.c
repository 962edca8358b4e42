/* SPDX-License-Identifier: MIT */
/*
 * canon.c: the pure parts of DKIM signing: splitting a header block into
 * fields, relaxed canonicalisation of a field (RFC 6376 3.4.2) and of the
 * body (3.4.4, streamed), and the domain of a From: field.
 *
 * No I/O, no allocation: fuzzed by fuzz/fuzz_dkim.c, tested against
 * dkimpy's own canonicalisation in tests/unit/dkim and tests/system.
 */
#include <ctype.h>
#include <string.h>

#include "dkim/dkim.h"

#define WSP(c) ((c) == ' ' || (c) == '\t')

/* The name before the colon: printable ASCII, then optional WSP. */
static int
dkim_name_ok(const char *p, size_t n)
{
	while (n > 0 && WSP(p[n - 1]))
		n--;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)p[i] < 33 || (unsigned char)p[i] > 126)
			return 0;
	return n > 0;
}

size_t
dkim_fields(const char *hdr, size_t len, struct dkim_field *out, size_t max)
{
	size_t n = 0, pos = 0;
	int infield = 0;	/* the line before belongs to out[n - 1] */

	while (pos < len && n < max) {
		const char *line = hdr + pos;
		const char *nl = memchr(line, '\n', len - pos);
		size_t end = nl ? (size_t)(nl - hdr) + 1 : len;
		const char *colon;

		if (WSP(*line) && infield) {	/* a continuation line */
			out[n - 1].rawlen = (size_t)(hdr + end - out[n - 1].raw);
			pos = end;
			continue;
		}
		colon = memchr(line, ':', end - pos);
		infield = 0;
		/* RFC 5322 2.2: a field name is printable ASCII but ':' */
		if (colon != NULL && colon > line && dkim_name_ok(line,
		    (size_t)(colon - line))) {
			size_t nl_ = (size_t)(colon - line);
			while (nl_ > 0 && WSP(line[nl_ - 1]))
				nl_--;
			out[n].name = line;
			out[n].namelen = nl_;
			out[n].raw = line;
			out[n].rawlen = end - pos;
			n++;
			infield = 1;
		}
		pos = end;
	}
	return n;
}

/* Append c to out when it fits; count it either way. */
#define PUT(c) do { if (o < cap) out[o] = (char)(c); o++; } while (0)

size_t
dkim_canon_header(const char *raw, size_t len, int crlf, char *out, size_t cap)
{
	const char *colon = memchr(raw, ':', len);
	size_t o = 0, i, nend;
	int wsp = 0;

	if (colon == NULL)
		return 0;
	nend = (size_t)(colon - raw);
	while (nend > 0 && WSP(raw[nend - 1]))
		nend--;
	for (i = 0; i < nend; i++)
		PUT(tolower((unsigned char)raw[i]));
	PUT(':');
	/* the value: unfolded, runs of WSP one SP, none at either end */
	for (i = (size_t)(colon - raw) + 1; i < len; i++) {
		char c = raw[i];
		if (c == '\r' || c == '\n' || WSP(c)) {
			wsp = 1;
			continue;
		}
		if (wsp && o > nend + 1)
			PUT(' ');
		wsp = 0;
		PUT(c);
	}
	if (crlf) {
		PUT('\r');
		PUT('\n');
	}
	return o;
}

static void
dkim_body_put(struct dkim_body *b, const char *p, size_t n)
{
	if (b->nbuf + n > sizeof(b->buf)) {
		b->emit(b->arg, b->buf, b->nbuf);
		b->nbuf = 0;
	}
	if (n > sizeof(b->buf)) {
		b->emit(b->arg, p, n);
		return;
	}
	memcpy(b->buf + b->nbuf, p, n);
	b->nbuf += n;
}

void
dkim_body_init(struct dkim_body *b,
    void (*emit)(void *arg, const char *p, size_t n), void *arg)
{
	memset(b, 0, sizeof(*b));
	b->emit = emit;
	b->arg = arg;
}

/* A byte that is neither white space nor a line end. */
static void
dkim_body_char(struct dkim_body *b, char c)
{
	/* the empty lines before it were not at the end after all */
	for (; b->crlfs > 0; b->crlfs--)
		dkim_body_put(b, "\r\n", 2);
	if (b->wsp)
		dkim_body_put(b, " ", 1);
	b->wsp = 0;
	b->content = 1;
	dkim_body_put(b, &c, 1);
}

void
dkim_body_feed(struct dkim_body *b, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char c = p[i];

		if (b->cr) {
			b->cr = 0;
			if (c == '\n') {
				/* white space at a line's end goes */
				b->wsp = 0;
				b->crlfs++;
				continue;
			}
			dkim_body_char(b, '\r');	/* a lone CR */
		}
		if (c == '\r')
			b->cr = 1;
		else if (c == '\n') {		/* a bare LF ends a line too */
			b->wsp = 0;
			b->crlfs++;
		} else if (WSP(c))
			b->wsp = 1;
		else
			dkim_body_char(b, c);
	}
}

void
dkim_body_end(struct dkim_body *b)
{
	if (b->cr) {
		b->cr = 0;
		dkim_body_char(b, '\r');
	}
	/* trailing empty lines go; a last line without its end gets one */
	if (b->content)
		dkim_body_put(b, "\r\n", 2);
	b->crlfs = 0;
	if (b->nbuf > 0)
		b->emit(b->arg, b->buf, b->nbuf);
	b->nbuf = 0;
}

int
dkim_from_domain(const char *raw, size_t len, char *out, size_t cap)
{
	const char *colon = memchr(raw, ':', len), *end = raw + len;
	const char *p, *at = NULL, *lt = NULL;
	int depth = 0, quoted = 0;
	size_t n = 0;

	if (colon == NULL || cap == 0)
		return -1;
	/* the first '<' outside comments and quotes, if any, starts the address */
	for (p = colon + 1; p < end && lt == NULL; p++) {
		if (quoted) {
			if (*p == '\\' && p + 1 < end)
				p++;
			else if (*p == '"')
				quoted = 0;
		} else if (*p == '"' && depth == 0) {
			quoted = 1;
		} else if (*p == '(') {
			depth++;
		} else if (*p == ')' && depth > 0) {
			depth--;
		} else if (*p == '<' && depth == 0) {
			lt = p;
		} else if (*p == ',' && depth == 0) {
			break;		/* a group of bare addresses: the first */
		}
	}
	p = lt ? lt + 1 : colon + 1;
	for (; p < end && *p != '>' && *p != ',' && *p != '('; p++)
		if (*p == '@')
			at = p;
	if (at == NULL)
		return -1;
	for (p = at + 1; p < end && n + 1 < cap; p++) {
		unsigned char c = (unsigned char)*p;
		if (c == '>' || c == ',' || c == '(' || c == ';' || c == '\r' ||
		    c == '\n' || WSP(c))
			break;
		if (!isalnum(c) && c != '-' && c != '.' && c != '_' && c < 0x80)
			return -1;
		out[n++] = (char)tolower(c);
	}
	out[n] = '\0';
	return n > 0 ? 0 : -1;
}
