/* SPDX-License-Identifier: MIT */
/*
 * dsn.c: bounce_build(), the delivery status notification that reports
 * one event (failure, delay, success) about some recipients of one message.
 *
 *   multipart/report; report-type=delivery-status        (RFC 6522)
 *     1. text/plain                 what happened, for a person
 *     2. message/delivery-status    the same, for a program (RFC 3464)
 *     3. message/rfc822             the original (RET=FULL, RFC 3461 4.3), or
 *        text/rfc822-headers        only its header section
 *
 * RFC 6533: when the message came with SMTPUTF8 and any address or header
 * field of it is not ASCII, part 2 is message/global-delivery-status with
 * "utf-8" addresses (report-type=global-delivery-status) and part 3 is
 * message/global or message/global-headers.
 *
 * Invariants
 *  1. Every line we write is CRLF-terminated and at most 998 octets
 *     (RFC 5322 2.1.1); text from peers (diagnostics) and from the envelope
 *     is stripped of CR, LF and other controls before it goes in.
 *  2. The boundary occurs in none of the parts (checked, then changed).
 *  3. The original is returned byte for byte; only the choice between all
 *     of it and its header section is ours.
 *
 * Threads: any; the only shared state is an atomic counter.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "bounce/bounce.h"
#include "spool/spool.h"
#include "util/util.h"

/* Text lines are wrapped here; a generous field line is cut here. */
#define BOUNCE_WRAP 76
#define BOUNCE_FIELD_MAX 900

struct bounce_ctx {
	const struct bounce_info *b;
	int global;		/* RFC 6533 forms */
	int count[4];		/* recipients per enum bounce_action */
	int attach_full;	/* part 3 is the whole original */
	int too_big;		/* RET=FULL asked, max_original said no */
};

static int
bounce_ascii(const char *s)
{
	for (; s != NULL && *s; s++)
		if ((unsigned char)*s >= 0x80)
			return 0;
	return 1;
}

/* 1 if the first n bytes of buf are all ASCII. */
static int
bounce_evb_ascii(struct evbuffer *buf, size_t n)
{
	struct evbuffer_iovec v[16];
	struct evbuffer_ptr at;
	int nv;

	if (evbuffer_ptr_set(buf, &at, 0, EVBUFFER_PTR_SET) < 0)
		return 1;
	while (n > 0) {
		nv = evbuffer_peek(buf, (ev_ssize_t)n, &at, v, 16);
		if (nv <= 0)
			break;
		if (nv > 16)
			nv = 16;
		for (int i = 0; i < nv; i++) {
			size_t len = v[i].iov_len < n ? v[i].iov_len : n;
			const unsigned char *p = v[i].iov_base;

			for (size_t j = 0; j < len; j++)
				if (p[j] >= 0x80)
					return 0;
			n -= len;
			evbuffer_ptr_set(buf, &at, len, EVBUFFER_PTR_ADD);
		}
	}
	return 1;
}

/* Length of a well-formed UTF-8 sequence at p, or 0. */
static size_t
bounce_utf8_len(const char *p)
{
	unsigned char c = (unsigned char)*p;
	size_t k;

	if (c >= 0xc2 && c <= 0xdf)
		k = 2;
	else if (c >= 0xe0 && c <= 0xef)
		k = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		k = 4;
	else
		return 0;
	if (strnlen(p, k) < k || !sl_utf8_valid(p, k))
		return 0;
	return k;
}

/*
 * Copy text from a peer or the envelope into a new string fit for one
 * line: CR, LF and tabs become spaces and runs of spaces one, other
 * controls go, bytes >= 0x80 stay only when utf8 is set and they are
 * well-formed UTF-8 (else '?'), and the result is cut at max bytes on a
 * character boundary. NULL gives "". Returns a new string; free().
 */
static char *
bounce_clean(const char *in, int utf8, size_t max)
{
	size_t len = in ? strlen(in) : 0, n = 0;
	char *out = xmalloc((len < max ? len : max) + 1);

	for (const char *p = in; p != NULL && *p;) {
		unsigned char c = (unsigned char)*p;
		size_t k = 1;

		if (c == '\r' || c == '\n' || c == '\t' || c == ' ') {
			if (n > 0 && out[n - 1] != ' ' && n < max)
				out[n++] = ' ';
			p++;
			continue;
		}
		if (c < 0x20 || c == 0x7f) {
			p++;
			continue;
		}
		if (c >= 0x80 && (!utf8 || (k = bounce_utf8_len(p)) == 0)) {
			c = '?';
			k = 1;
			if (n + 1 > max)
				break;
			out[n++] = (char)c;
			p++;
			continue;
		}
		if (n + k > max)
			break;
		memcpy(out + n, p, k);
		n += k;
		p += k;
	}
	while (n > 0 && out[n - 1] == ' ')
		n--;
	out[n] = '\0';
	return out;
}


/*
 * RFC 3461 4: ENVID and ORCPT arrive as xtext ("+2B" for '+'); the DSN
 * carries the decoded text. Returns a new string; free().
 */
static char *
bounce_xtext_decode(const char *in)
{
	char *out = xmalloc(strlen(in) + 1);
	size_t n = 0;

	for (const char *p = in; *p; p++) {
		int hi, lo;

		if (*p == '+' && (hi = sl_hexval(p[1])) >= 0 &&
		    (lo = sl_hexval(p[2])) >= 0) {
			out[n++] = (char)(hi << 4 | lo);
			p += 2;
		} else
			out[n++] = *p;
	}
	out[n] = '\0';
	return out;
}

/*
 * RFC 6533 3: a "utf-8" address in utf-8-addr-unitext (global: UTF-8 kept)
 * or utf-8-addr-xtext (every non-ASCII character as \x{HEX}); '+', '=',
 * '\' and controls are always escaped. At most max bytes are written.
 */
static void
bounce_put_utf8_addr(struct evbuffer *out, const char *addr, int unitext,
    size_t max)
{
	char esc[16];
	size_t k, n = 0, elen;

	for (const char *p = addr; *p; p += k) {
		unsigned char c = (unsigned char)*p;
		uint32_t cp;

		k = c < 0x80 ? 1 : bounce_utf8_len(p);
		if (c > 0x20 && c < 0x7f && c != '+' && c != '=' && c != '\\') {
			elen = 1;
			esc[0] = (char)c;
		} else if (c < 0x80) {
			elen = (size_t)snprintf(esc, sizeof(esc), "\\x{%02X}", c);
		} else if (k == 0) {
			elen = (size_t)snprintf(esc, sizeof(esc), "\\x{FFFD}");
			k = 1;
		} else if (unitext) {
			elen = k;
			memcpy(esc, p, k);
		} else {
			cp = c & (0xff >> (k + 1));
			for (size_t i = 1; i < k; i++)
				cp = cp << 6 | ((unsigned char)p[i] & 0x3f);
			elen = (size_t)snprintf(esc, sizeof(esc), "\\x{%X}",
			    (unsigned)cp);
		}
		if (n + elen > max)
			break;
		evbuffer_add(out, esc, elen);
		n += elen;
	}
}

/* RFC 3463 2: class "." subject "." detail, each 1..3 digits. */
static int
bounce_status_ok(const char *s)
{
	if (s == NULL || (s[0] != '2' && s[0] != '4' && s[0] != '5') ||
	    s[1] != '.')
		return 0;
	s += 2;
	for (int part = 0; part < 2; part++) {
		int digits = 0;

		while (*s >= '0' && *s <= '9' && digits < 4) {
			s++;
			digits++;
		}
		if (digits < 1 || digits > 3)
			return 0;
		if (part == 0 && *s++ != '.')
			return 0;
	}
	return *s == '\0';
}

static const char *
bounce_status(const struct bounce_rcpt *r)
{
	if (bounce_status_ok(r->status))
		return r->status;
	switch (r->action) {
	case BOUNCE_FAILED:
		return "5.0.0";
	case BOUNCE_DELAYED:
		return "4.0.0";
	default:
		return "2.0.0";
	}
}

static const char *
bounce_action_name(enum bounce_action a)
{
	switch (a) {
	case BOUNCE_FAILED:
		return "failed";
	case BOUNCE_DELAYED:
		return "delayed";
	case BOUNCE_DELIVERED:
		return "delivered";
	case BOUNCE_RELAYED:
		return "relayed";
	}
	SL_PANIC("bad bounce action %d", (int)a);
}

/*
 * Append text wrapped at BOUNCE_WRAP columns: the first line starts with
 * first, the others with indent spaces. A word longer than a line is cut
 * between characters, so no line can grow past the limit.
 */
static void
bounce_wrap(struct evbuffer *out, const char *first, const char *text,
    size_t indent)
{
	size_t col = strlen(first), w;
	int need_space = col > 0;
	const char *p = text;

	evbuffer_add(out, first, col);
	for (;;) {
		while (*p == ' ')
			p++;
		if ((w = strcspn(p, " ")) == 0)
			break;
		if (need_space && col > indent && col + 1 + w > BOUNCE_WRAP) {
			evbuffer_add_printf(out, "\r\n%*s", (int)indent, "");
			col = indent;
			need_space = 0;
		}
		if (need_space) {
			evbuffer_add(out, " ", 1);
			col++;
		}
		need_space = 1;
		if (col + w > BOUNCE_WRAP) {
			/* cut before a character start (not 10xxxxxx) */
			w = BOUNCE_WRAP > col ? BOUNCE_WRAP - col : 1;
			while (w > 1 && ((unsigned char)p[w] & 0xc0) == 0x80)
				w--;
			evbuffer_add(out, p, w);
			evbuffer_add_printf(out, "\r\n%*s", (int)indent, "");
			col = indent;
			need_space = 0;
			p += w;
			continue;
		}
		evbuffer_add(out, p, w);
		col += w;
		p += w;
	}
	evbuffer_add(out, "\r\n", 2);
}

static const char *const bounce_heading[] = {
	[BOUNCE_FAILED] = "Delivery to the following recipients failed "
	    "permanently. The mail system has given up on them and will not "
	    "try again:",
	[BOUNCE_DELAYED] = "Delivery to the following recipients has been "
	    "delayed. The mail system keeps trying, so you need not send the "
	    "message again; you will be told if it finally fails:",
	[BOUNCE_DELIVERED] = "Your message was delivered to the following "
	    "recipients:",
	[BOUNCE_RELAYED] = "Your message was passed on to the following "
	    "recipients' mail systems, which do not send delivery reports, so "
	    "you may not hear whether it reaches them:",
};

static const char *const bounce_outcome[] = {
	[BOUNCE_FAILED] = "delivery failed",
	[BOUNCE_DELAYED] = "delivery delayed",
	[BOUNCE_DELIVERED] = "delivered",
	[BOUNCE_RELAYED] = "relayed to a system without delivery reports",
};

/* One recipient in part 1: "<addr>: host H said: reply (status x.y.z)". */
static void
bounce_text_rcpt(struct bounce_ctx *c, struct evbuffer *out,
    const struct bounce_rcpt *r)
{
	char *addr = bounce_clean(r->addr, c->global, 400);
	char *host = bounce_clean(r->remote_mta, 0, 255);
	char *diag = bounce_clean(r->diagnostic, c->global, BOUNCE_FIELD_MAX);
	char *note = bounce_clean(r->note, 0, 200);
	char *first = xasprintf("<%s>:", addr);
	char *text;

	if (*diag && *host)
		text = xasprintf("%s%shost %s said: %s (status %s)", note,
		    *note ? "; " : "", host, diag, bounce_status(r));
	else if (*diag)
		text = xasprintf("%s%s%s (status %s)", note, *note ? "; " : "",
		    diag, bounce_status(r));
	else
		text = xasprintf("%s (status %s)", *note ? note :
		    bounce_outcome[r->action], bounce_status(r));
	evbuffer_add(out, "\r\n", 2);
	bounce_wrap(out, first, text, 4);
	free(text);
	free(first);
	free(note);
	free(diag);
	free(host);
	free(addr);
}

/* Part 1: the human-readable explanation. */
static void
bounce_text_part(struct bounce_ctx *c, struct evbuffer *out,
    const char *mta)
{
	const struct bounce_info *b = c->b;
	const char *intro;

	evbuffer_add_printf(out, "This is the mail system at host %s.\r\n\r\n",
	    mta);
	if (c->count[BOUNCE_FAILED] > 0)
		intro = "Your message could not be delivered to one or more of "
		    "its recipients. The reasons are listed below.";
	else if (c->count[BOUNCE_DELAYED] > 0)
		intro = "Your message has not yet been delivered to one or more "
		    "of its recipients. This is only a warning; the reasons "
		    "for the delay are listed below.";
	else
		intro = "This is the delivery report you asked for.";
	bounce_wrap(out, "", intro, 0);
	evbuffer_add(out, "\r\n", 2);
	bounce_wrap(out, "", "For help, write to the postmaster of this host "
	    "and include this report. A copy of the report in a form that "
	    "programs can read is attached.", 0);
	for (int a = BOUNCE_FAILED; a <= BOUNCE_RELAYED; a++) {
		if (c->count[a] == 0)
			continue;
		evbuffer_add(out, "\r\n", 2);
		bounce_wrap(out, "", bounce_heading[a], 0);
		for (size_t i = 0; i < b->nrcpt; i++)
			if ((int)b->rcpts[i].action == a)
				bounce_text_rcpt(c, out, &b->rcpts[i]);
	}
	if (b->original == NULL)
		return;
	evbuffer_add(out, "\r\n", 2);
	if (c->attach_full)
		bounce_wrap(out, "", "Your message is attached.", 0);
	else if (c->too_big)
		bounce_wrap(out, "", "Your message was too large to return in "
		    "full; its header section is attached.", 0);
	else
		bounce_wrap(out, "", "The header section of your message is "
		    "attached.", 0);
}

/* RFC 3464 2.3.1 / RFC 3461 4.2: Original-Recipient from the ORCPT kept. */
static void
bounce_put_orcpt(struct bounce_ctx *c, struct evbuffer *out,
    const char *orcpt)
{
	const char *semi = strchr(orcpt, ';');
	char *type, *raw, *value;

	if (semi == NULL || semi == orcpt) {
		type = xstrdup("rfc822");
		raw = xstrdup(orcpt);
	} else {
		raw = xstrndup(orcpt, (size_t)(semi - orcpt));
		type = bounce_clean(raw, 0, 64);
		free(raw);
		raw = xstrdup(semi + 1);
	}
	/* utf-8 addresses are already in their DSN form (RFC 6533 3) */
	if (sl_strcaseeq(type, "utf-8"))
		value = bounce_clean(raw, c->global, BOUNCE_FIELD_MAX);
	else {
		char *dec = bounce_xtext_decode(raw);

		value = bounce_clean(dec, 0, BOUNCE_FIELD_MAX);
		free(dec);
	}
	evbuffer_add_printf(out, "Original-Recipient: %s;%s\r\n", type, value);
	free(value);
	free(raw);
	free(type);
}

/* RFC 3464 2.3.2: rfc822 for an ASCII address, else utf-8 (RFC 6533 3). */
static void
bounce_put_final(struct bounce_ctx *c, struct evbuffer *out, const char *addr)
{
	if (bounce_ascii(addr)) {
		char *a = bounce_clean(addr, 0, BOUNCE_FIELD_MAX);

		evbuffer_add_printf(out, "Final-Recipient: rfc822;%s\r\n", a);
		free(a);
		return;
	}
	evbuffer_add_printf(out, "Final-Recipient: utf-8;");
	bounce_put_utf8_addr(out, addr, c->global, BOUNCE_FIELD_MAX);
	evbuffer_add(out, "\r\n", 2);
}

/*
 * RFC 3464 2.3.6: "smtp" labels an SMTP reply ("550 5.1.1 ..."); a reason
 * of our own (a timeout, a DNS failure) gets our X- type, as Postfix does.
 */
static const char *
bounce_diag_type(const char *d)
{
	if (d[0] >= '2' && d[0] <= '5' && d[1] >= '0' && d[1] <= '9' &&
	    d[2] >= '0' && d[2] <= '9' &&
	    (d[3] == ' ' || d[3] == '-' || d[3] == '\0'))
		return "smtp";
	return "X-Sluice";
}

/* RFC 3464 2.3: the per-recipient fields of one recipient. */
static void
bounce_rcpt_fields(struct bounce_ctx *c, struct evbuffer *out,
    const struct bounce_rcpt *r)
{
	char date[64];

	if (r->orcpt != NULL && *r->orcpt)
		bounce_put_orcpt(c, out, r->orcpt);
	bounce_put_final(c, out, r->addr ? r->addr : "");
	evbuffer_add_printf(out, "Action: %s\r\nStatus: %s\r\n",
	    bounce_action_name(r->action), bounce_status(r));
	if (r->remote_mta != NULL && *r->remote_mta) {
		char *host = bounce_clean(r->remote_mta, 0, 255);

		evbuffer_add_printf(out, "Remote-MTA: dns; %s\r\n", host);
		free(host);
	}
	if (r->diagnostic != NULL) {
		char *d = bounce_clean(r->diagnostic, c->global,
		    BOUNCE_FIELD_MAX);

		if (*d)
			evbuffer_add_printf(out, "Diagnostic-Code: %s; %s\r\n",
			    bounce_diag_type(d), d);
		free(d);
	}
	if (r->last_attempt > 0) {
		sl_rfc5322_date(r->last_attempt, date, sizeof(date));
		evbuffer_add_printf(out, "Last-Attempt-Date: %s\r\n", date);
	}
}

/* Part 2: per-message fields, then one block per recipient (RFC 3464 2.1). */
static void
bounce_status_part(struct bounce_ctx *c, struct evbuffer *out,
    const char *mta)
{
	const struct bounce_info *b = c->b;
	char date[64];

	evbuffer_add_printf(out, "Reporting-MTA: dns; %s\r\n", mta);
	if (b->envid != NULL && *b->envid) {
		char *dec = bounce_xtext_decode(b->envid);
		char *envid = bounce_clean(dec, 0, BOUNCE_FIELD_MAX);

		evbuffer_add_printf(out, "Original-Envelope-Id: %s\r\n", envid);
		free(envid);
		free(dec);
	}
	if (b->arrival > 0) {
		sl_rfc5322_date(b->arrival, date, sizeof(date));
		evbuffer_add_printf(out, "Arrival-Date: %s\r\n", date);
	}
	for (size_t i = 0; i < b->nrcpt; i++) {
		evbuffer_add(out, "\r\n", 2);
		bounce_rcpt_fields(c, out, &b->rcpts[i]);
	}
}

/*
 * The header section of the original: up to and including the CRLF that
 * ends its last field, so without the empty line; all of it if it has no
 * body, nothing if it starts with the empty line.
 */
static size_t
bounce_header_len(struct evbuffer *orig)
{
	size_t len = evbuffer_get_length(orig);
	struct evbuffer_ptr p;
	char two[2];

	if (len >= 2 && evbuffer_copyout(orig, two, 2) == 2 &&
	    memcmp(two, "\r\n", 2) == 0)
		return 0;
	p = evbuffer_search(orig, "\r\n\r\n", 4, NULL);
	if (p.pos < 0)
		return len;
	return (size_t)p.pos + 2;
}

/* Copy the first n bytes of src to the end of dst; src is not changed. */
static void
bounce_copy(struct evbuffer *dst, struct evbuffer *src, size_t n)
{
	struct evbuffer_iovec v[16];
	struct evbuffer_ptr at;
	int nv;

	if (evbuffer_ptr_set(src, &at, 0, EVBUFFER_PTR_SET) < 0)
		return;
	while (n > 0) {
		nv = evbuffer_peek(src, (ev_ssize_t)n, &at, v, 16);
		if (nv <= 0)
			break;
		if (nv > 16)
			nv = 16;
		for (int i = 0; i < nv && n > 0; i++) {
			size_t len = v[i].iov_len < n ? v[i].iov_len : n;

			evbuffer_add(dst, v[i].iov_base, len);
			n -= len;
			evbuffer_ptr_set(src, &at, len, EVBUFFER_PTR_ADD);
		}
	}
}

/* A boundary found in no part (RFC 2046 5.1.1); returns a new string. */
static char *
bounce_boundary(uint64_t mid, struct evbuffer **parts, size_t nparts)
{
	static uint64_t counter;
	char hex[17];
	char *bnd;
	size_t i;

	spool_mid_fmt(mid, hex);
	for (;;) {
		uint64_t n = __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED);

		bnd = xasprintf("=_sluice_%s_%llx_%llx", hex,
		    (unsigned long long)sl_now_us(), (unsigned long long)n);
		for (i = 0; i < nparts; i++)
			if (parts[i] != NULL && evbuffer_search(parts[i], bnd,
			    strlen(bnd), NULL).pos >= 0)
				break;
		if (i == nparts)
			return bnd;
		free(bnd);
	}
}

/* Part 3 and its type; NULL when there is no original to return. */
static struct evbuffer *
bounce_attach(struct bounce_ctx *c, const char **ctype)
{
	const struct bounce_info *b = c->b;
	struct evbuffer *part;
	size_t len, hlen;

	if (b->original == NULL)
		return NULL;
	len = evbuffer_get_length(b->original);
	c->too_big = b->ret_full && b->max_original > 0 &&
	    len > b->max_original;
	c->attach_full = b->ret_full && !c->too_big;
	part = evbuffer_new();
	if (part == NULL)
		SL_PANIC("evbuffer_new: out of memory");
	if (c->attach_full) {
		bounce_copy(part, b->original, len);
		*ctype = c->global ? "message/global" : "message/rfc822";
	} else {
		hlen = bounce_header_len(b->original);
		bounce_copy(part, b->original, hlen);
		*ctype = c->global ? "message/global-headers" :
		    "text/rfc822-headers";
	}
	return part;
}

/*
 * RFC 6533 applies only to SMTPUTF8 mail, and there only when something
 * we report (an address, the envelope id, a diagnostic or the returned
 * header section) is not ASCII.
 */
static int
bounce_need_global(const struct bounce_info *b)
{
	if (!b->smtputf8)
		return 0;
	if (!bounce_ascii(b->sender) || !bounce_ascii(b->envid))
		return 1;
	for (size_t i = 0; i < b->nrcpt; i++) {
		const struct bounce_rcpt *r = &b->rcpts[i];

		if (!bounce_ascii(r->addr) || !bounce_ascii(r->orcpt))
			return 1;
		if (!bounce_ascii(r->diagnostic) &&
		    sl_utf8_valid(r->diagnostic, strlen(r->diagnostic)))
			return 1;
	}
	return b->original != NULL &&
	    !bounce_evb_ascii(b->original, bounce_header_len(b->original));
}

static const char *
bounce_subject(const struct bounce_ctx *c)
{
	if (c->count[BOUNCE_FAILED] > 0)
		return "Undelivered Mail Returned to Sender";
	if (c->count[BOUNCE_DELAYED] > 0)
		return "Delayed Mail (still being retried)";
	return "Successful Mail Delivery Report";
}

/* The header section of the report itself. */
static void
bounce_headers(struct bounce_ctx *c, struct evbuffer *out, const char *mta,
    const char *bnd, int eightbit, int64_t now)
{
	static uint64_t counter;
	uint64_t n = __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED);
	char *sender = bounce_clean(c->b->sender, c->global, BOUNCE_FIELD_MAX);
	char date[64], mid[17];

	sl_rfc5322_date(now, date, sizeof(date));
	spool_mid_fmt(c->b->mid, mid);
	evbuffer_add_printf(out,
	    "From: \"Mail Delivery System\" <MAILER-DAEMON@%s>\r\n"
	    "To: <%s>\r\n"
	    "Subject: %s\r\n"
	    "Date: %s\r\n"
	    "Message-ID: <%s.bounce.%llx.%lx.%llx@%s>\r\n"
	    "Auto-Submitted: auto-replied\r\n"
	    "MIME-Version: 1.0\r\n"
	    "Content-Type: multipart/report; report-type=%s;\r\n"
	    "\tboundary=\"%s\"\r\n",
	    mta, sender, bounce_subject(c), date, mid,
	    (unsigned long long)now, (long)getpid(), (unsigned long long)n,
	    mta, c->global ? "global-delivery-status" : "delivery-status", bnd);
	if (eightbit)
		evbuffer_add_printf(out, "Content-Transfer-Encoding: 8bit\r\n");
	free(sender);
}

/* One body part: delimiter, its header fields, the content moved in. */
static void
bounce_put_part(struct evbuffer *out, const char *bnd, const char *desc,
    const char *ctype, struct evbuffer *content)
{
	int eightbit = !bounce_evb_ascii(content, evbuffer_get_length(content));

	evbuffer_add_printf(out, "\r\n--%s\r\nContent-Description: %s\r\n"
	    "Content-Type: %s\r\n%s\r\n", bnd, desc, ctype,
	    eightbit ? "Content-Transfer-Encoding: 8bit\r\n" : "");
	evbuffer_add_buffer(out, content);
}

int
bounce_8bit(struct evbuffer *dsn)
{
	return !bounce_evb_ascii(dsn, evbuffer_get_length(dsn));
}

struct evbuffer *
bounce_build(const struct bounce_info *b, int64_t now)
{
	struct bounce_ctx c = { .b = b };
	struct evbuffer *out, *parts[3];
	const char *ctype = NULL;
	char *mta, *bnd;
	int eightbit = 0;

	for (size_t i = 0; i < b->nrcpt; i++)
		if (SL_ALWAYS(b->rcpts[i].action <= BOUNCE_RELAYED))
			c.count[b->rcpts[i].action]++;
	c.global = bounce_need_global(b);
	mta = bounce_clean(b->reporting_mta ? b->reporting_mta : "localhost",
	    0, 255);
	parts[2] = bounce_attach(&c, &ctype);
	parts[0] = evbuffer_new();
	parts[1] = evbuffer_new();
	out = evbuffer_new();
	if (parts[0] == NULL || parts[1] == NULL || out == NULL)
		SL_PANIC("evbuffer_new: out of memory");
	bounce_text_part(&c, parts[0], mta);
	bounce_status_part(&c, parts[1], mta);
	bnd = bounce_boundary(b->mid, parts, 3);
	for (int i = 0; i < 3; i++)
		if (parts[i] != NULL &&
		    !bounce_evb_ascii(parts[i], evbuffer_get_length(parts[i])))
			eightbit = 1;

	bounce_headers(&c, out, mta, bnd, eightbit, now);
	evbuffer_add_printf(out, "\r\nThis is a MIME-encapsulated message.\r\n");
	bounce_put_part(out, bnd, "Notification",
	    !bounce_evb_ascii(parts[0], evbuffer_get_length(parts[0])) ?
	    "text/plain; charset=utf-8" :
	    "text/plain; charset=us-ascii", parts[0]);
	bounce_put_part(out, bnd, "Delivery report", c.global ?
	    "message/global-delivery-status" : "message/delivery-status",
	    parts[1]);
	if (parts[2] != NULL)
		bounce_put_part(out, bnd, c.attach_full ? "Returned message" :
		    "Returned message headers", ctype, parts[2]);
	evbuffer_add_printf(out, "\r\n--%s--\r\n", bnd);

	for (int i = 0; i < 3; i++)
		if (parts[i] != NULL)
			evbuffer_free(parts[i]);
	free(bnd);
	free(mta);
	return out;
}
