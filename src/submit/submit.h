/* SPDX-License-Identifier: MIT */
/*
 * submit.h: what `sluice sendmail` does to a message before it submits it,
 * as pure functions over memory (unit-tested in tests/unit/submit/):
 * read the input lines (-i or a lone "."), find the header section, take
 * the recipients from To/Cc/Bcc (-t), drop Bcc, and add Date, Message-ID
 * and From when missing (RFC 6409 section 8).
 *
 * Messages are kept with CRLF line ends, as SMTP sends them.
 */
#ifndef SL_SUBMIT_H
#define SL_SUBMIT_H

#include <stddef.h>
#include <stdint.h>

/* A growing byte buffer. */
struct submit_buf {
	char *data;
	size_t len, cap;
};

void submit_buf_add(struct submit_buf *b, const void *p, size_t n);
void submit_buf_free(struct submit_buf *b);

/*
 * Feed one input line (with or without its "\n"; a "\r" before it is
 * dropped) into msg with a CRLF end. Returns 1 when the line ends the
 * input: a lone "." unless ignore_dots (-i, -oi). A leading Unix "From "
 * line (mbox) is dropped when it is the first line.
 */
int submit_input_line(struct submit_buf *msg, const char *line, size_t len,
    int ignore_dots);

/* Length of the header section including its blank line (or up to the
 * end if there is none); 0 if the message does not start with a header. */
size_t submit_header_len(const char *msg, size_t len);

/* 1 if the header section has a field of that name (any case). */
int submit_has_field(const char *msg, size_t hlen, const char *name);

/*
 * Call fn for each field of the header section (hlen bytes, as
 * submit_header_len says): its name (nlen bytes, borrowed) and its value
 * unfolded (RFC 5322 2.2.3: the line breaks before continuation lines
 * removed; the blanks after the colon and the last line end dropped),
 * NUL-terminated and valid during the call. Also for the sink's inbox and
 * the dashboard's message page.
 */
typedef void submit_field_fn(void *arg, const char *name, size_t nlen,
    const char *value, size_t vlen);
void submit_fields(const char *msg, size_t hlen, submit_field_fn *fn,
    void *arg);

/* A list of addresses. */
struct submit_addrs {
	char **v;
	size_t n;
};

void submit_addrs_add(struct submit_addrs *a, const char *addr, size_t n);
void submit_addrs_free(struct submit_addrs *a);
/*
 * Parse an RFC 5322 address list ("A <a@b>, c@d (C), grp: e@f;") and add
 * each mailbox's address to out. Returns the number added.
 */
size_t submit_parse_addrs(const char *s, size_t len, struct submit_addrs *out);
/* -t: the addresses of every To, Cc and Bcc field (unfolded). */
size_t submit_header_rcpts(const char *msg, size_t hlen,
    struct submit_addrs *out);

struct submit_opts {
	const char *sender;	/* the envelope sender: From: when added */
	const char *full_name;	/* -F, or NULL */
	const char *hostname;	/* for Message-ID */
	int64_t now;		/* unix seconds, for Date */
	uint64_t unique;	/* distinguishes Message-IDs of one second */
	int strip_bcc;
};

/*
 * The message to send: its header fields (without Bcc when strip_bcc),
 * then the missing Date, Message-ID and From, then the body. A message
 * without a header section gets the added fields and a blank line.
 */
void submit_prepare(const char *msg, size_t len, const struct submit_opts *o,
    struct submit_buf *out);

#endif
