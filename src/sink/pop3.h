/* SPDX-License-Identifier: MIT */
/*
 * pop3.h: the pure parts of the sink's POP3 server (pop3_wire.c), apart so
 * the unit tests and the fuzz replay can reach them. The server itself is
 * pop3.c, started by sink_new (sink_int.h).
 */
#ifndef SL_SINK_POP3_H
#define SL_SINK_POP3_H

#include <stddef.h>

struct evbuffer;

#define SINK_POP3_MAXARGS 2
#define SINK_POP3_MAXARG 40	/* RFC 1939 3: arguments up to 40 characters */
#define SINK_POP3_UIDMAX 70	/* RFC 1939 7: unique-ids up to 70 */

struct sink_pop3_cmd {
	char *keyword;		/* in the line, any case */
	int nargs;
	char *args[SINK_POP3_MAXARGS];
};

/*
 * Cut line (without CRLF; changed in place) into a keyword of at most 4
 * characters and up to SINK_POP3_MAXARGS arguments separated by single
 * spaces. Returns 0, or -1 if the line is not of that form.
 */
int sink_pop3_parse(char *line, struct sink_pop3_cmd *cmd);
/* What follows the keyword and one space (PASS takes the whole rest). */
const char *sink_pop3_rest(const char *line);

/* The state of one multi-line answer of a message (RETR or TOP). */
struct sink_pop3_out {
	int bol;		/* at the beginning of a line */
	int cr;			/* the last byte was CR */
	size_t line_len;	/* bytes of the current line so far */
	int in_body;		/* past the empty line ending the header */
	long lines;		/* TOP: body lines still to send; -1: all */
	int done;		/* TOP: sent enough; the rest is not wanted */
};

/* Start an answer: lines is TOP's count, or -1 for RETR. */
void sink_pop3_out_init(struct sink_pop3_out *st, long lines);
/* Append the next len bytes of the message to out, dot-stuffed, bare LF as
 * CRLF, stopping once st->done. */
void sink_pop3_stuff(struct sink_pop3_out *st, const char *in, size_t len,
    struct evbuffer *out);
/* End the answer: CRLF if the last line was not ended, then ".\r\n". */
void sink_pop3_end(struct sink_pop3_out *st, struct evbuffer *out);
/* The unique-id of the message whose Maildir name is id, into uid. */
void sink_pop3_uid(const char *id, char *uid, size_t size);

#endif
