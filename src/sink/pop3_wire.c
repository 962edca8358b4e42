/* SPDX-License-Identifier: MIT */
/*
 * pop3_wire.c: the pure parts of the sink's POP3 server (pop3.c): a
 * command line cut into its keyword and arguments, a message's bytes made
 * into a multi-line answer (RFC 1939 section 3: CRLF line ends, a "." at
 * the start of a line doubled, the ".\r\n" end; TOP's header and first
 * lines), and the unique-id listing's ids. No I/O: every split of a
 * message into chunks gives the same output (tests/unit/sink/test_pop3.c).
 */
#include <string.h>

#include <event2/buffer.h>

#include "sink/pop3.h"
#include "util/util.h"

int
sink_pop3_parse(char *line, struct sink_pop3_cmd *cmd)
{
	char *p = line;

	cmd->nargs = 0;
	cmd->keyword = p;
	while (*p != '\0' && *p != ' ')
		p++;
	if (p == line || p - line > 4)
		return -1;	/* keywords are 3 or 4 characters */
	if (*p == ' ')
		*p++ = '\0';
	while (*p != '\0') {
		char *arg = p;
		if (cmd->nargs == SINK_POP3_MAXARGS)
			return -1;
		while (*p != '\0' && *p != ' ')
			p++;
		if (p == arg || p - arg > SINK_POP3_MAXARG)
			return -1;	/* one space between, 40 at most */
		if (*p == ' ')
			*p++ = '\0';
		cmd->args[cmd->nargs++] = arg;
	}
	return 0;
}

/* The PASS argument is the rest of the line (RFC 1939 7: a password may
 * hold spaces). */
const char *
sink_pop3_rest(const char *line)
{
	const char *sp = strchr(line, ' ');

	return sp ? sp + 1 : "";
}

void
sink_pop3_out_init(struct sink_pop3_out *st, long lines)
{
	memset(st, 0, sizeof(*st));
	st->bol = 1;
	st->lines = lines;
}

void
sink_pop3_stuff(struct sink_pop3_out *st, const char *in, size_t len,
    struct evbuffer *out)
{
	size_t i, start = 0;

	for (i = 0; i < len && !st->done; i++) {
		char c = in[i];

		if (st->bol && c == '.') {
			/* the span from here on adds the line's own dot */
			evbuffer_add(out, in + start, i - start);
			evbuffer_add(out, ".", 1);
			start = i;
		}
		st->bol = 0;
		if (c != '\n') {
			st->cr = c == '\r';
			st->line_len++;
			continue;
		}
		int empty = st->line_len == 0 || (st->line_len == 1 && st->cr);
		if (!st->cr) {
			/* a bare LF goes out as CRLF */
			evbuffer_add(out, in + start, i - start);
			evbuffer_add(out, "\r\n", 2);
			start = i + 1;
		}
		st->bol = 1;
		st->cr = 0;
		st->line_len = 0;
		if (!st->in_body) {
			if (empty) {
				st->in_body = 1;
				st->done = st->lines == 0;
			}
		} else if (st->lines > 0) {
			st->done = --st->lines == 0;
		}
	}
	evbuffer_add(out, in + start, i - start);
}

void
sink_pop3_end(struct sink_pop3_out *st, struct evbuffer *out)
{
	if (!st->bol)
		evbuffer_add(out, st->cr ? "\n" : "\r\n", st->cr ? 1 : 2);
	evbuffer_add(out, ".\r\n", 3);
}

void
sink_pop3_uid(const char *id, char *uid, size_t size)
{
	const char *dot = strchr(id, '.');
	size_t n;

	/* a Maildir name is TIME.UNIQUE.HOST: TIME.UNIQUE is unique on this
	 * machine and short (RFC 1939 7: 1 to 70 characters 0x21 to 0x7E) */
	if (dot != NULL && (dot = strchr(dot + 1, '.')) != NULL)
		n = (size_t)(dot - id);
	else
		n = strlen(id);
	if (n > SINK_POP3_UIDMAX)
		n = SINK_POP3_UIDMAX;
	if (n >= size)
		n = size - 1;
	for (size_t i = 0; i < n; i++)
		uid[i] = id[i] > 0x20 && id[i] < 0x7f ? id[i] : '_';
	uid[n] = '\0';
}
