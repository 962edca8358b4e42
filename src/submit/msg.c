/* SPDX-License-Identifier: MIT */
/*
 * msg.c: the message handling of `sluice sendmail` (submit.h): input
 * lines, the header section, address lists, and the fields a submission
 * agent adds. Pure: memory in, memory out.
 *
 * A header field is a line "name: value" (name: printable ASCII but ':')
 * and its continuation lines (starting with a space or a tab). The header
 * section ends at the first blank line, or at the first line that is
 * neither (then the body starts there and a blank line is put before it).
 */
#include <stdlib.h>
#include <string.h>

#include "submit/submit.h"
#include "util/util.h"

void
submit_buf_add(struct submit_buf *b, const void *p, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		b->cap = b->cap ? b->cap * 2 : 4096;
		while (b->len + n + 1 > b->cap)
			b->cap *= 2;
		b->data = xrealloc(b->data, b->cap);
	}
	memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
}

void
submit_buf_free(struct submit_buf *b)
{
	free(b->data);
	memset(b, 0, sizeof(*b));
}

int
submit_input_line(struct submit_buf *msg, const char *line, size_t len,
    int ignore_dots)
{
	if (len > 0 && line[len - 1] == '\n')
		len--;
	if (len > 0 && line[len - 1] == '\r')
		len--;
	/* sendmail's classic rule: without -i a line of one "." ends it */
	if (!ignore_dots && len == 1 && line[0] == '.')
		return 1;
	if (msg->len == 0 && len >= 5 && memcmp(line, "From ", 5) == 0)
		return 0;
	submit_buf_add(msg, line, len);
	submit_buf_add(msg, "\r\n", 2);
	return 0;
}

/* Length of the line at p (up to and including its LF), or to the end. */
static size_t
submit_line_len(const char *p, size_t left)
{
	const char *nl = memchr(p, '\n', left);

	return nl ? (size_t)(nl - p) + 1 : left;
}

/* Length of a field name followed by ':' at the start of p, or 0. */
static size_t
submit_field_name(const char *p, size_t n)
{
	size_t i = 0;

	while (i < n && p[i] > 32 && p[i] < 127 && p[i] != ':')
		i++;
	return i > 0 && i < n && p[i] == ':' ? i : 0;
}

/*
 * The header section: *fields_end is where its fields end and *body where
 * the body starts (after the blank line, if there is one).
 */
static void
submit_split(const char *msg, size_t len, size_t *fields_end, size_t *body)
{
	size_t pos = 0, l;

	while (pos < len) {
		l = submit_line_len(msg + pos, len - pos);
		if ((l == 2 && msg[pos] == '\r') || (l == 1 && msg[pos] == '\n')) {
			*fields_end = pos;
			*body = pos + l;
			return;
		}
		if (!(pos > 0 && (msg[pos] == ' ' || msg[pos] == '\t')) &&
		    submit_field_name(msg + pos, l) == 0)
			break;
		pos += l;
	}
	*fields_end = pos;
	*body = pos;
}

size_t
submit_header_len(const char *msg, size_t len)
{
	size_t fields_end, body;

	submit_split(msg, len, &fields_end, &body);
	return body;
}

/*
 * The next field from *pos (within hlen): its name and its whole text
 * (with continuation lines). Returns 0 at the end.
 */
static int
submit_field_next(const char *msg, size_t hlen, size_t *pos,
    const char **name, size_t *nlen, size_t *start, size_t *end)
{
	size_t p = *pos, l;

	if (p >= hlen)
		return 0;
	l = submit_line_len(msg + p, hlen - p);
	if ((*nlen = submit_field_name(msg + p, l)) == 0)
		return 0;
	*name = msg + p;
	*start = p;
	p += l;
	while (p < hlen && (msg[p] == ' ' || msg[p] == '\t'))
		p += submit_line_len(msg + p, hlen - p);
	*end = p;
	*pos = p;
	return 1;
}

void
submit_fields(const char *msg, size_t hlen, submit_field_fn *fn, void *arg)
{
	size_t pos = 0, nlen, start, end;
	const char *name;
	char *v = NULL;

	while (submit_field_next(msg, hlen, &pos, &name, &nlen, &start,
	    &end)) {
		const char *p = msg + start + nlen + 1;
		size_t n = 0;

		v = xrealloc(v, end - start + 1);
		while (p < msg + end && (*p == ' ' || *p == '\t'))
			p++;
		for (; p < msg + end; p++)
			if (*p != '\r' && *p != '\n')
				v[n++] = *p;
		while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
			n--;
		v[n] = '\0';
		fn(arg, name, nlen, v, n);
	}
	free(v);
}

int
submit_has_field(const char *msg, size_t hlen, const char *name)
{
	size_t pos = 0, nlen, start, end;
	const char *n;

	while (submit_field_next(msg, hlen, &pos, &n, &nlen, &start, &end))
		if (nlen == strlen(name) && sl_strncaseeq(n, name, nlen))
			return 1;
	return 0;
}

void
submit_addrs_add(struct submit_addrs *a, const char *addr, size_t n)
{
	a->v = xrealloc(a->v, (a->n + 1) * sizeof(*a->v));
	a->v[a->n++] = xstrndup(addr, n);
}

void
submit_addrs_free(struct submit_addrs *a)
{
	for (size_t i = 0; i < a->n; i++)
		free(a->v[i]);
	free(a->v);
	memset(a, 0, sizeof(*a));
}

/* The address of one mailbox: <angle> if any, else its plain text. */
static size_t
submit_flush(struct submit_buf *plain, struct submit_buf *angle, int had_angle,
    struct submit_addrs *out)
{
	struct submit_buf *b = had_angle ? angle : plain;
	const char *a = b->data, *colon;
	size_t n = b->len, added = 0;

	/* an obsolete source route "@a,@b:x@y" keeps only x@y */
	if (had_angle && n > 0 && a[0] == '@' &&
	    (colon = memchr(a, ':', n)) != NULL) {
		n -= (size_t)(colon + 1 - a);
		a = colon + 1;
	}
	if (n > 0) {
		submit_addrs_add(out, a, n);
		added = 1;
	}
	plain->len = angle->len = 0;
	return added;
}

size_t
submit_parse_addrs(const char *s, size_t len, struct submit_addrs *out)
{
	struct submit_buf plain = { 0 }, angle = { 0 };
	int depth = 0, quoted = 0, in_angle = 0, had_angle = 0;
	size_t added = 0;

	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		struct submit_buf *b = in_angle ? &angle : &plain;

		if (quoted) {
			submit_buf_add(b, &c, 1);
			if (c == '\\' && i + 1 < len)
				submit_buf_add(b, &s[++i], 1);
			else if (c == '"')
				quoted = 0;
		} else if (depth > 0) {
			if (c == '\\' && i + 1 < len)
				i++;
			else if (c == '(')
				depth++;
			else if (c == ')')
				depth--;
		} else if (c == '(') {
			depth = 1;
		} else if (c == '"') {
			quoted = 1;
			submit_buf_add(b, &c, 1);
		} else if (c == '<' && !in_angle) {
			in_angle = had_angle = 1;
			angle.len = 0;
		} else if (c == '>' && in_angle) {
			in_angle = 0;
		} else if (in_angle) {
			if (c != ' ' && c != '\t' && c != '\r' && c != '\n')
				submit_buf_add(b, &c, 1);
		} else if (c == ':') {
			/* a group's display name: what follows are its members */
			plain.len = 0;
		} else if (c == ',' || c == ';') {
			added += submit_flush(&plain, &angle, had_angle, out);
			had_angle = 0;
		} else if (c != ' ' && c != '\t' && c != '\r' && c != '\n') {
			submit_buf_add(b, &c, 1);
		}
	}
	added += submit_flush(&plain, &angle, had_angle, out);
	submit_buf_free(&plain);
	submit_buf_free(&angle);
	return added;
}

static int
submit_is_rcpt_field(const char *name, size_t nlen)
{
	return (nlen == 2 && (sl_strncaseeq(name, "to", 2) ||
	    sl_strncaseeq(name, "cc", 2))) ||
	    (nlen == 3 && sl_strncaseeq(name, "bcc", 3));
}

size_t
submit_header_rcpts(const char *msg, size_t hlen, struct submit_addrs *out)
{
	size_t pos = 0, nlen, start, end, added = 0;
	const char *n;

	while (submit_field_next(msg, hlen, &pos, &n, &nlen, &start, &end)) {
		if (!submit_is_rcpt_field(n, nlen))
			continue;
		start += nlen + 1;
		added += submit_parse_addrs(msg + start, end - start, out);
	}
	return added;
}

/* "name" as a quoted string (for From: with -F). */
static void
submit_add_quoted(struct submit_buf *out, const char *s)
{
	submit_buf_add(out, "\"", 1);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			submit_buf_add(out, "\\", 1);
		if (*s != '\r' && *s != '\n')
			submit_buf_add(out, s, 1);
	}
	submit_buf_add(out, "\"", 1);
}

static void
submit_add_fields(const char *msg, size_t fields_end,
    const struct submit_opts *o, struct submit_buf *out)
{
	char line[1024], date[64];

	if (!submit_has_field(msg, fields_end, "Date")) {
		sl_rfc5322_date(o->now, date, sizeof(date));
		snprintf(line, sizeof(line), "Date: %s\r\n", date);
		submit_buf_add(out, line, strlen(line));
	}
	if (!submit_has_field(msg, fields_end, "Message-ID")) {
		snprintf(line, sizeof(line), "Message-ID: <%lld.%llx@%s>\r\n",
		    (long long)o->now, (unsigned long long)o->unique,
		    o->hostname);
		submit_buf_add(out, line, strlen(line));
	}
	if (!submit_has_field(msg, fields_end, "From")) {
		submit_buf_add(out, "From: ", 6);
		if (o->full_name != NULL && o->full_name[0] != '\0') {
			submit_add_quoted(out, o->full_name);
			snprintf(line, sizeof(line), " <%s>\r\n", o->sender);
		} else {
			snprintf(line, sizeof(line), "%s\r\n", o->sender);
		}
		submit_buf_add(out, line, strlen(line));
	}
}

void
submit_prepare(const char *msg, size_t len, const struct submit_opts *o,
    struct submit_buf *out)
{
	size_t fields_end, body, pos = 0, nlen, start, end;
	const char *n;

	submit_split(msg, len, &fields_end, &body);
	while (submit_field_next(msg, fields_end, &pos, &n, &nlen, &start,
	    &end)) {
		if (o->strip_bcc && nlen == 3 && sl_strncaseeq(n, "bcc", 3))
			continue;
		submit_buf_add(out, msg + start, end - start);
	}
	submit_add_fields(msg, fields_end, o, out);
	submit_buf_add(out, "\r\n", 2);
	submit_buf_add(out, msg + body, len - body);
}
