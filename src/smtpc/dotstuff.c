/* SPDX-License-Identifier: MIT */
/*
 * dotstuff.c: the body of a DATA command as sent (RFC 5321 4.5.2): a '.'
 * added before every line that starts with '.', a CRLF added if the body
 * does not end with one, then the ".\r\n" that ends the data.
 *
 * A line starts after CRLF, and also after a bare CR or a bare LF: many
 * receivers end a line at either, and one that did would read an
 * unstuffed "<CR>.<CR><LF>" or "<LF>.<LF>" as the end of the data (SMTP
 * smuggling). NUL bytes at a line start keep it a line start, so a
 * receiver that drops NULs cannot see "<CR><LF><NUL>.<CR><LF>" as the end
 * either. Stuffing a dot more than RFC 5321 asks only ever adds a dot that
 * a receiver reading bare line ends removes again.
 *
 * Works over the body's chunks as evbuffer_peek() gives them, so the body
 * is never pulled up into one block; a line start can fall on a chunk
 * boundary, which the state carried between chunks (bol, the last two
 * bytes) covers. Callers: session.c; tests/unit/smtpc/test_dotstuff.c.
 */
#include <event2/buffer.h>

#include <string.h>

#include "smtpc/smtpc.h"

#define DOTSTUFF_IOV 16

struct dotstuff {
	int bol;		/* the next byte starts a line */
	char last[2];		/* the last two bytes seen, last[1] newest */
	size_t seen;
};

/* The first CR or LF in p[0..n), or NULL. */
static const char *
dotstuff_brk(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] == '\r' || p[i] == '\n')
			return p + i;
	return NULL;
}

/* Copy one chunk, a '.' before each line that starts with '.'. */
static void
dotstuff_chunk(struct dotstuff *st, struct evbuffer *out, const char *p,
    size_t n)
{
	const char *end = p + n;

	while (p < end) {
		const char *brk;
		size_t run;

		if (st->bol && *p == '\0') {
			/* a NUL at a line start: the line starts after it */
			evbuffer_add(out, p++, 1);
			continue;
		}
		if (st->bol && *p == '.')
			evbuffer_add(out, ".", 1);
		brk = dotstuff_brk(p, (size_t)(end - p));
		run = brk != NULL ? (size_t)(brk - p) + 1 : (size_t)(end - p);
		evbuffer_add(out, p, run);
		st->bol = brk != NULL;
		p += run;
	}
	if (n >= 2) {
		st->last[0] = end[-2];
		st->last[1] = end[-1];
	} else if (n == 1) {
		st->last[0] = st->last[1];
		st->last[1] = end[-1];
	}
	st->seen += n;
}

void
smtpc_dotstuff(struct evbuffer *out, struct evbuffer *body)
{
	struct dotstuff st = { .bol = 1 };
	struct evbuffer_iovec iov[DOTSTUFF_IOV];
	struct evbuffer_ptr pos;
	size_t total = body != NULL ? evbuffer_get_length(body) : 0;

	if (total > 0)
		evbuffer_ptr_set(body, &pos, 0, EVBUFFER_PTR_SET);
	while (st.seen < total) {
		int k = evbuffer_peek(body, -1, &pos, iov, DOTSTUFF_IOV);
		size_t before = st.seen;

		if (k > DOTSTUFF_IOV)
			k = DOTSTUFF_IOV;
		for (int i = 0; i < k; i++)
			dotstuff_chunk(&st, out, iov[i].iov_base, iov[i].iov_len);
		if (st.seen == before ||
		    evbuffer_ptr_set(body, &pos, st.seen, EVBUFFER_PTR_SET) != 0)
			break;
	}
	/* An empty body needs no line end: ".\r\n" right after DATA ends it. */
	if (st.seen > 0 && (st.last[0] != '\r' || st.last[1] != '\n'))
		evbuffer_add(out, "\r\n", 2);
	evbuffer_add(out, ".\r\n", 3);
}
