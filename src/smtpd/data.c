/* SPDX-License-Identifier: MIT */
/*
 * data.c: the DATA state machine (RFC 5321 4.1.1.4, 4.5.2). Finds the end
 * marker, removes dot-stuffing, counts the size, and refuses bare CR and
 * bare LF, one read at a time.
 *
 * Owns only struct smtpd_data, which the session keeps per transaction.
 * Callers: session.c; the fuzz target fuzz/fuzz_data.c.
 *
 * Invariants
 *  1. The output, the consumed count, d->size and d->err do not depend on
 *     how the input is split into reads: the state in struct smtpd_data is
 *     all that carries over, and no byte of input is kept between calls.
 *  2. Only the strict "\r\n.\r\n" (or ".\r\n" at the very start) ends the
 *     data; "\n.\n", "\n.\r\n", "\r.\r\n" never do (SMTP smuggling).
 *  3. What is emitted is a prefix of the unstuffed body: it stops for good
 *     at the first bare CR or LF, or at d->max bytes.
 *
 * States, and what moves them (as drawn in data.h):
 *   BOL   '.' -> DOT, '\r' -> CR, '\n' -> bare LF, MID; else MID (same byte)
 *   MID   '\r' -> CR, '\n' -> bare LF, MID; else MID (runs found by memchr)
 *   CR    '\n' -> BOL, emit CRLF; else bare CR, MID (same byte)
 *   DOT   '\r' -> DOTCR, '\n' -> bare LF, MID; else drop the dot, MID (same)
 *   DOTCR '\n' -> done; else bare CR, MID (same byte)
 * A bare CR or LF never leads to BOL, so the dot after it cannot end the
 * data.
 */
#include <string.h>

#include "smtpd/data.h"

enum { ST_BOL = 0, ST_MID, ST_CR, ST_DOT, ST_DOTCR };

/*
 * The output of one feed: contiguous input bytes are gathered into one
 * run, so a read of many plain lines reaches emit in one call.
 */
struct out {
	struct smtpd_data *d;
	smtpd_data_emit_fn *emit;
	void *ctx;
	const char *p;
	size_t n;
};

static void
out_flush(struct out *o)
{
	if (o->n > 0)
		o->emit(o->ctx, o->p, o->n);
	o->n = 0;
}

/*
 * Count n unstuffed bytes; emit those that come before the first error
 * and within d->max. stable: p points into the input (may be gathered).
 */
static void
out_put(struct out *o, const char *p, size_t n, int stable)
{
	struct smtpd_data *d = o->d;
	size_t e = n;

	if (d->err != 0)
		e = 0;
	else if (d->max > 0 && d->size + n > d->max)
		e = (size_t)(d->max - d->size);
	d->size += n;
	if (d->max > 0 && d->size > d->max)
		d->err |= SMTPD_DATA_TOO_BIG;
	if (e == 0)
		return;
	if (!stable) {
		out_flush(o);
		o->emit(o->ctx, p, e);
	} else if (o->n > 0 && o->p + o->n == p) {
		o->n += e;
	} else {
		out_flush(o);
		o->p = p;
		o->n = e;
	}
}

void
smtpd_data_init(struct smtpd_data *d, uint64_t max)
{
	memset(d, 0, sizeof(*d));
	d->state = ST_BOL;
	d->max = max;
}

/*
 * A CR seen in an earlier state: at in[i - 1] when i > 0 (every state that
 * follows a CR is entered by consuming it), else in the previous read.
 */
static void
put_cr(struct out *o, const char *in, size_t i, size_t extra)
{
	if (i > 0)
		out_put(o, in + i - 1, 1 + extra, 1);
	else if (extra == 0)
		out_put(o, "\r", 1, 0);
	else
		out_put(o, "\r\n", 2, 0);
}

size_t
smtpd_data_feed(struct smtpd_data *d, const char *in, size_t len,
    smtpd_data_emit_fn *emit, void *ctx)
{
	struct out o = { d, emit, ctx, NULL, 0 };
	size_t i = 0, cr = 0;
	int have_cr = 0;

	while (i < len && !d->done) {
		char c = in[i];

		switch (d->state) {
		case ST_BOL:
			if (c == '.') {
				d->state = ST_DOT;
				i++;
			} else if (c == '\r') {
				d->state = ST_CR;
				i++;
			} else if (c == '\n') {
				d->err |= SMTPD_DATA_BARE_LF;
				out_put(&o, in + i++, 1, 1);
				d->state = ST_MID;
			} else {
				d->state = ST_MID;
			}
			break;
		case ST_MID: {
			const char *lf;
			size_t stop;

			/*
			 * The next CR is found once and reused until passed,
			 * so lines with bare LFs keep the scan linear.
			 */
			if (!have_cr || cr < i) {
				const char *p = memchr(in + i, '\r', len - i);

				cr = p ? (size_t)(p - in) : len;
				have_cr = 1;
			}
			lf = memchr(in + i, '\n', cr - i);
			stop = lf ? (size_t)(lf - in) : cr;
			out_put(&o, in + i, stop - i, 1);
			i = stop;
			if (i == len)
				break;
			if (in[i] == '\n') {
				d->err |= SMTPD_DATA_BARE_LF;
				out_put(&o, in + i, 1, 1);
			} else {
				d->state = ST_CR;
			}
			i++;
			break;
		}
		case ST_CR:
			if (c == '\n') {
				put_cr(&o, in, i, 1);
				d->state = ST_BOL;
				i++;
			} else {
				d->err |= SMTPD_DATA_BARE_CR;
				put_cr(&o, in, i, 0);
				d->state = ST_MID;
			}
			break;
		case ST_DOT:
			/* RFC 5321 4.5.2: a leading dot is dropped. */
			if (c == '\r') {
				d->state = ST_DOTCR;
				i++;
			} else if (c == '\n') {
				d->err |= SMTPD_DATA_BARE_LF;
				out_put(&o, in + i++, 1, 1);
				d->state = ST_MID;
			} else {
				d->state = ST_MID;
			}
			break;
		case ST_DOTCR:
			if (c == '\n') {
				d->done = 1;
				i++;
			} else {
				d->err |= SMTPD_DATA_BARE_CR;
				put_cr(&o, in, i, 0);
				d->state = ST_MID;
			}
			break;
		}
	}
	out_flush(&o);
	return i;
}
