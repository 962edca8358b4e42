/* SPDX-License-Identifier: MIT */
/*
 * reply.c: the SMTP reply parser (RFC 5321 4.2), pure: bytes in, one
 * reply out, no I/O, so that every split of the input can be tested and
 * fuzzed (tests/unit/smtpc/test_reply.c, fuzz/fuzz_reply.c).
 *
 * Owns only struct smtpc_reply, which the connection keeps per reply.
 * Callers: session.c; the tests and the fuzz target.
 *
 * Invariants
 *  1. The result (code, lines, text, complete, error) and the consumed
 *     count do not depend on how the input is split into feeds.
 *  2. A feed stops right after the line end of the last line of a reply,
 *     so what follows (the next pipelined reply) stays with the caller.
 *  3. A reply never grows past SMTPC_REPLY_MAX_LINE bytes a line,
 *     SMTPC_REPLY_MAX_LINES lines or SMTPC_REPLY_MAX_BYTES in all: a peer
 *     that sends more gets error set, not more memory or more waiting.
 *
 * States: READING -(line end of a "ddd " or "ddd" line)-> complete
 *         READING -(a bad line or a limit)-> error
 * Both are final until smtpc_reply_init().
 */
#include <string.h>

#include "smtpc/smtpc.h"

/* The text appended for a line: control bytes become '?' (log safety). */
static void
reply_text_add(struct smtpc_reply *r, const char *s, size_t n)
{
	size_t len = strlen(r->text);
	static const char sep[] = " / ";

	if (r->lines > 0) {
		for (size_t i = 0; i < sizeof(sep) - 1 &&
		    len < sizeof(r->text) - 1; i++)
			r->text[len++] = sep[i];
	}
	for (size_t i = 0; i < n && len < sizeof(r->text) - 1; i++) {
		unsigned char ch = (unsigned char)s[i];
		r->text[len++] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
	}
	r->text[len] = '\0';
}

/* The byte at position k of a line could start a valid reply line. */
static int
reply_prefix_ok(size_t k, char ch)
{
	if (k == 0)
		return ch >= '2' && ch <= '5';
	if (k < 3)
		return ch >= '0' && ch <= '9';
	if (k == 3)
		return ch == ' ' || ch == '-' || ch == '\r';
	return 1;
}

/* A line ended (its LF consumed): 1 if the reply is now over. */
static int
reply_line_end(struct smtpc_reply *r)
{
	size_t n = r->linelen;
	int code, last;

	if (n > 0 && r->line[n - 1] == '\r')
		n--;
	if (n < 3 || n > SMTPC_REPLY_MAX_LINE ||
	    (n > 3 && r->line[3] != ' ' && r->line[3] != '-'))
		goto fail;
	code = (r->line[0] - '0') * 100 + (r->line[1] - '0') * 10 +
	    (r->line[2] - '0');
	if (r->lines > 0 && code != r->code)
		goto fail;
	if (r->lines >= SMTPC_REPLY_MAX_LINES)
		goto fail;
	r->code = code;
	last = n == 3 || r->line[3] == ' ';
	reply_text_add(r, r->line + (n > 3 ? 4 : 3), n > 3 ? n - 4 : 0);
	r->lines++;
	if (r->on_line != NULL)
		r->on_line(r->on_line_arg, r->line + (n > 3 ? 4 : 3),
		    n > 3 ? n - 4 : 0);
	r->linelen = 0;
	if (last)
		r->complete = 1;
	return last;
fail:
	r->error = 1;
	return 1;
}

void
smtpc_reply_init(struct smtpc_reply *r)
{
	memset(r, 0, sizeof(*r));
}

size_t
smtpc_reply_feed(struct smtpc_reply *r, const char *p, size_t n)
{
	size_t i = 0;

	if (r->complete || r->error)
		return 0;
	while (i < n) {
		char ch = p[i++];

		if (++r->len > SMTPC_REPLY_MAX_BYTES) {
			r->error = 1;
			return i;
		}
		if (ch == '\n') {
			if (reply_line_end(r))
				return i;
			continue;
		}
		/* Room for SMTPC_REPLY_MAX_LINE bytes and a CR, no more. */
		if (r->linelen > SMTPC_REPLY_MAX_LINE ||
		    !reply_prefix_ok(r->linelen, ch)) {
			r->error = 1;
			return i;
		}
		r->line[r->linelen++] = ch;
	}
	return n;
}
