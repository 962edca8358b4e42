/* SPDX-License-Identifier: MIT */
/*
 * data.h: the DATA state machine (RFC 5321 4.1.1.4, 4.5.2): finds the end of
 * the data, removes dot-stuffing, and detects bare CR and bare LF (the SMTP
 * smuggling defence) across any split of the input into reads. Pure: bytes
 * in, unstuffed bytes out through a callback, no I/O.
 *
 * States (one per byte position), and what moves them:
 *   BOL   start of a line      '.' -> DOT, '\r' -> CR, '\n' -> bare LF, else -> MID
 *   MID   inside a line        '\r' -> CR, '\n' -> bare LF
 *   CR    after '\r'           '\n' -> BOL (emit CRLF), else -> bare CR
 *   DOT   after a leading '.'  '\r' -> DOTCR, '\n' -> bare LF, else drop the
 *                              dot and -> MID
 *   DOTCR after ".\r"          '\n' -> END, else bare CR
 * After a bare CR or LF the machine keeps consuming (emitting nothing) until
 * the strict end "\r\n.\r\n", so smuggled commands are never read as commands.
 */
#ifndef SL_SMTPD_DATA_H
#define SL_SMTPD_DATA_H

#include <stddef.h>
#include <stdint.h>

typedef void smtpd_data_emit_fn(void *ctx, const char *p, size_t n);

enum smtpd_data_err {
	SMTPD_DATA_OK = 0,
	SMTPD_DATA_BARE_LF = 1,
	SMTPD_DATA_BARE_CR = 2,
	SMTPD_DATA_TOO_BIG = 4,
};

struct smtpd_data {
	int state;
	int done;		/* the end marker was consumed */
	int err;		/* SMTPD_DATA_* bits */
	uint64_t size;		/* unstuffed bytes seen (emitted or not) */
	uint64_t max;		/* emit nothing past this; 0 = no limit */
};

/* Start a new DATA body; max bytes at most (0 = unlimited). */
void smtpd_data_init(struct smtpd_data *d, uint64_t max);
/*
 * Feed len bytes; unstuffed data goes to emit (CRLF line ends kept, the final
 * ".\r\n" not). Returns the bytes consumed: all of them, or fewer when the
 * end marker was reached (d->done set; the rest belongs to the next command).
 */
size_t smtpd_data_feed(struct smtpd_data *d, const char *in, size_t len,
    smtpd_data_emit_fn *emit, void *ctx);

#endif
