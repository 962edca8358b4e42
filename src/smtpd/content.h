/* SPDX-License-Identifier: MIT */
/*
 * content.h: what a message body may not hold, found one piece at a time
 * whatever the split (BDAT chunks, reads): bare CR and bare LF (RFC 5321
 * 2.3.8; for BDAT bytes: DATA finds them in data.c while it looks for the
 * end), NUL, and the Received: fields of the header section, counted for
 * the mail loop limit (RFC 5321 6.3). Pure: bytes in, counts and error
 * bits out, no I/O, no allocation.
 *
 * A line ends at LF. The header section ends at the first empty line; a
 * field "Received" (any case), optional blanks, then ':' at the start of
 * one of its lines is counted (continuation lines start with a blank).
 */
#ifndef SL_SMTPD_CONTENT_H
#define SL_SMTPD_CONTENT_H

#include <stddef.h>
#include <stdint.h>

enum smtpd_content_err {
	SMTPD_CONTENT_BARE_LF = 1,	/* an LF without a CR before it */
	SMTPD_CONTENT_BARE_CR = 2,	/* a CR without an LF after it */
	SMTPD_CONTENT_NUL = 4,		/* a zero byte */
};

struct smtpd_content {
	int err;		/* SMTPD_CONTENT_* bits */
	uint32_t received;	/* Received: fields in the header section */
	int lines;		/* check for bare CR and LF */
	int cr;			/* the last byte was a CR */
	int body;		/* past the header section */
	int match;		/* bytes of "received" matched at this line's
				   start, 9 after them, -1 no field */
	size_t len;		/* bytes of this line (CR not counted) so far;
				   only whether it is 0 matters */
};

/*
 * Start a body. lines: also check for bare CR and LF (bytes as the client
 * sent them, not unstuffed by data.c).
 */
void smtpd_content_init(struct smtpd_content *c, int lines);
/* Scan n more bytes of the body. */
void smtpd_content_feed(struct smtpd_content *c, const char *p, size_t n);
/* The body ended: a CR it ends with is bare. */
void smtpd_content_end(struct smtpd_content *c);

#endif
