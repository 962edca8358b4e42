/* SPDX-License-Identifier: MIT */
/*
 * content.c: the checks of a message body's bytes that do not depend on
 * how it was framed (content.h): bare CR and LF, NUL, Received: fields.
 *
 * Owns only struct smtpd_content, which body.c keeps per transaction.
 * Callers: body.c; the fuzz target fuzz/fuzz_bdat.c.
 *
 * Invariants
 *  1. The result (err, received) does not depend on how the body is split
 *     into feeds: struct smtpd_content is all that carries over.
 *  2. Outside the first bytes of a header line only NUL (and with lines,
 *     CR and LF) are looked at, so the cost of a large body is a memchr
 *     per piece (with lines, one table lookup per byte).
 */
#include <string.h>

#include "smtpd/content.h"

static const char received[] = "received";

void
smtpd_content_init(struct smtpd_content *c, int lines)
{
	memset(c, 0, sizeof(*c));
	c->lines = lines;
}

/* One byte of the header section: line ends, and the field name. */
static void
content_header_byte(struct smtpd_content *c, char ch)
{
	if (ch == '\n') {
		if (c->len == 0)
			c->body = 1;	/* the empty line */
		c->len = 0;
		c->match = 0;
		return;
	}
	if (ch == '\r')
		return;
	c->len++;
	if (c->match < 0)
		return;
	if (c->match < 8) {
		char l = ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch;
		c->match = l == received[c->match] ? c->match + 1 : -1;
	} else if (ch == ':') {
		c->received++;
		c->match = -1;
	} else if (ch != ' ' && ch != '\t') {
		c->match = -1;		/* "Received-SPF:", "Receivedx:" */
	}
}

/* One byte for the CR/LF rule: a CR must be followed by an LF. */
static void
content_line_byte(struct smtpd_content *c, char ch)
{
	if (c->cr && ch != '\n')
		c->err |= SMTPD_CONTENT_BARE_CR;
	else if (!c->cr && ch == '\n')
		c->err |= SMTPD_CONTENT_BARE_LF;
	c->cr = ch == '\r';
}

/* Bytes the checks look at outside a field name. */
static const unsigned char special[256] = {
	['\0'] = 1, ['\r'] = 1, ['\n'] = 1,
};

/* NUL, and with lines CR and LF, in n bytes that need nothing else. */
static void
content_plain(struct smtpd_content *c, const char *p, size_t n)
{
	if (!c->lines) {
		if (memchr(p, '\0', n) != NULL)
			c->err |= SMTPD_CONTENT_NUL;
		return;
	}
	for (size_t i = 0; i < n; i++) {
		/* a CR before this piece is judged by its first byte */
		if (!special[(unsigned char)p[i]] && !c->cr)
			continue;
		if (p[i] == '\0')
			c->err |= SMTPD_CONTENT_NUL;
		content_line_byte(c, p[i]);
	}
}

void
smtpd_content_feed(struct smtpd_content *c, const char *p, size_t n)
{
	size_t i = 0;

	while (i < n && !c->body) {
		/* the rest of a header line that is no Received: field */
		if (c->match < 0 && c->len > 0) {
			const char *lf = memchr(p + i, '\n', n - i);
			size_t stop = lf ? (size_t)(lf - p) : n;

			content_plain(c, p + i, stop - i);
			i = stop;
			if (i == n)
				break;
		}
		if (p[i] == '\0')
			c->err |= SMTPD_CONTENT_NUL;
		if (c->lines)
			content_line_byte(c, p[i]);
		content_header_byte(c, p[i]);
		i++;
	}
	if (i < n)
		content_plain(c, p + i, n - i);
}

void
smtpd_content_end(struct smtpd_content *c)
{
	if (c->lines && c->cr)
		c->err |= SMTPD_CONTENT_BARE_CR;
	c->cr = 0;
}
