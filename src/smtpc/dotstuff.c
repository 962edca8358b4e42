/* SPDX-License-Identifier: MIT */
/*
 * dotstuff.c: the body as it goes on the wire, after DATA (RFC 5321
 * 4.5.2) or in a BDAT chunk (RFC 3030).
 *
 * DATA: a '.' added before every line that starts with '.', a CRLF added
 * if the body does not end with one, then the ".\r\n" that ends the data.
 * A line starts after CRLF, and also after a bare CR or a bare LF: many
 * receivers end a line at either, and one that did would read an
 * unstuffed "<CR>.<CR><LF>" or "<LF>.<LF>" as the end of the data (SMTP
 * smuggling). NUL bytes at a line start keep it a line start, so a
 * receiver that drops NULs cannot see "<CR><LF><NUL>.<CR><LF>" as the end
 * either. Stuffing a dot more than RFC 5321 asks only ever adds a dot that
 * a receiver reading bare line ends removes again.
 *
 * Both (unless the message is BINARYMIME): no line longer than
 * SMTPC_LINE_MAX octets before its CRLF (RFC 5321 4.5.3.1.6; the stuffed
 * dot does not count). A longer line is folded as Postfix's
 * smtp_line_length_limit does it: "<CR><LF><SPACE>" inserted, which keeps
 * header fields valid (a continuation line) and base64 decodable.
 *
 * The encoder is resumable (struct smtpc_enc): bytes in, in any chunks
 * (a CR that may start a CRLF is held over a chunk boundary), wire bytes
 * out; with out NULL it only counts them (the size of a BDAT chunk).
 * Callers: tx.c, streaming a body in pieces; tests/unit/smtpc/test_dotstuff.c.
 */
#include <stdint.h>
#include <string.h>

#include <event2/buffer.h>

#include "smtpc/smtpc.h"

static void
enc_put(struct smtpc_enc *e, struct evbuffer *out, const char *p, size_t n)
{
	if (out != NULL)
		evbuffer_add(out, p, n);
	e->out += n;
}

/* Content bytes (never a CRLF that ends a line): folded to fit. */
static void
enc_content(struct smtpc_enc *e, struct evbuffer *out, const char *p,
    size_t n)
{
	while (n > 0) {
		size_t k = n;

		if (e->fold && e->col >= SMTPC_LINE_MAX) {
			enc_put(e, out, "\r\n ", 3);
			e->col = 1;
		}
		if (e->fold && k > SMTPC_LINE_MAX - e->col)
			k = SMTPC_LINE_MAX - e->col;
		enc_put(e, out, p, k);
		e->col += k;
		e->crlf = 0;
		p += k;
		n -= k;
	}
}

/* The first CR or LF in p[0..n), or NULL. */
static const char *
enc_brk(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] == '\r' || p[i] == '\n')
			return p + i;
	return NULL;
}

/* 1 if c at a line start needs the slow path (stuffing, line ends, NUL). */
static int
enc_special(char c)
{
	return c == '.' || c == '\0' || c == '\r' || c == '\n';
}

/*
 * The common case in one piece: whole lines of content ended by CRLF,
 * short enough, each followed by one that starts with nothing to mind.
 * Returns where the run ends (p if none); out gets it with one add.
 */
static const char *
enc_run(struct smtpc_enc *e, struct evbuffer *out, const char *p,
    const char *end)
{
	const char *run = p, *nl;

	while ((nl = memchr(p, '\n', (size_t)(end - p))) != NULL &&
	    nl > p && nl[-1] == '\r') {
		size_t len = (size_t)(nl - 1 - p);
		if (memchr(p, '\r', len) != NULL ||
		    (e->fold && e->col + len > SMTPC_LINE_MAX))
			break;
		p = nl + 1;
		e->col = 0;
		e->bol = 1;
		e->crlf = 1;
		if (p == end || enc_special(*p))
			break;
	}
	if (p > run)
		enc_put(e, out, run, (size_t)(p - run));
	return p;
}

void
smtpc_enc_init(struct smtpc_enc *e, int stuff, int fold)
{
	memset(e, 0, sizeof(*e));
	e->stuff = stuff != 0;
	e->fold = fold != 0;
	e->bol = 1;
}

void
smtpc_enc_feed(struct smtpc_enc *e, struct evbuffer *out, const char *p,
    size_t n)
{
	const char *end = p + n, *brk;

	e->in += n;
	while (p < end) {
		const char *q;

		if (!e->cr && !(e->bol && enc_special(*p)) &&
		    (q = enc_run(e, out, p, end)) > p) {
			p = q;
			continue;
		}
		if (e->cr) {
			/* the CR held back: a line end, or a byte of content */
			e->cr = 0;
			if (*p == '\n') {
				enc_put(e, out, "\r\n", 2);
				e->col = 0;
				e->bol = 1;
				e->crlf = 1;
				p++;
				continue;
			}
			enc_content(e, out, "\r", 1);
			e->bol = 1;
			continue;
		}
		if (*p == '\r') {
			e->cr = 1;
			p++;
			continue;
		}
		if (*p == '\n' || (e->bol && *p == '\0')) {
			/* a bare LF starts a line; a NUL keeps one started */
			enc_content(e, out, p++, 1);
			e->bol = 1;
			continue;
		}
		if (e->bol && *p == '.' && e->stuff) {
			/* RFC 5321 4.5.3.1.6 does not count the dot it adds
			 * at the start of a line; after a bare CR, LF or a NUL
			 * a strict receiver does */
			if (e->col == 0)
				enc_put(e, out, ".", 1);
			else
				enc_content(e, out, ".", 1);
		}
		e->bol = 0;
		brk = enc_brk(p, (size_t)(end - p));
		if (brk == NULL)
			brk = end;
		enc_content(e, out, p, (size_t)(brk - p));
		p = brk;
	}
}

void
smtpc_enc_end(struct smtpc_enc *e, struct evbuffer *out)
{
	if (e->cr) {
		/* a CR at the very end is content */
		e->cr = 0;
		enc_content(e, out, "\r", 1);
	}
	if (!e->stuff)
		return;
	/* An empty body needs no line end: ".\r\n" right after DATA ends it. */
	if (e->in > 0 && !e->crlf)
		enc_put(e, out, "\r\n", 2);
	enc_put(e, out, ".\r\n", 3);
}

/* Feed body[off..) through e, at most max bytes; returns bytes taken. */
size_t
smtpc_enc_body(struct smtpc_enc *e, struct evbuffer *out,
    struct evbuffer *body, size_t off, size_t max)
{
	struct evbuffer_iovec iov[16];
	struct evbuffer_ptr pos;
	size_t total = body != NULL ? evbuffer_get_length(body) : 0, done = 0;

	while (off + done < total && done < max) {
		int k;

		if (evbuffer_ptr_set(body, &pos, off + done,
		    EVBUFFER_PTR_SET) != 0)
			break;
		k = evbuffer_peek(body, (ev_ssize_t)(max - done), &pos, iov,
		    16);
		if (k <= 0)
			break;
		if (k > 16)
			k = 16;
		for (int i = 0; i < k && done < max; i++) {
			size_t n = iov[i].iov_len;
			if (n > max - done)
				n = max - done;
			smtpc_enc_feed(e, out, iov[i].iov_base, n);
			done += n;
		}
	}
	return done;
}

void
smtpc_dotstuff(struct evbuffer *out, struct evbuffer *body)
{
	struct smtpc_enc e;

	smtpc_enc_init(&e, 1, 1);
	smtpc_enc_body(&e, out, body, 0, SIZE_MAX);
	smtpc_enc_end(&e, out);
}

uint64_t
smtpc_enc_size(struct evbuffer *body, int stuff, int fold)
{
	struct smtpc_enc e;

	smtpc_enc_init(&e, stuff, fold);
	smtpc_enc_body(&e, NULL, body, 0, SIZE_MAX);
	smtpc_enc_end(&e, NULL);
	return e.out;
}
