/* SPDX-License-Identifier: MIT */
/*
 * session.c: one outbound SMTP connection (RFC 5321 client) on a
 * bufferevent: connects to each address in turn, greets, and carries one
 * message at a time, pipelined when the peer offers PIPELINING (RFC 2920).
 *
 * Owns the socket, its timers and the queue of commands sent whose replies
 * have not come yet; borrows the message in flight until cb->done.
 * Callers: the scheduler through smtpc.h; tests/unit/smtpc/test_smtpc.c.
 *
 * Invariants
 *  1. No callback fires from inside smtpc_new, smtpc_send or smtpc_quit:
 *     what must be reported from there goes through c->defer.
 *  2. After any callback, nothing more is done with c if the owner freed it
 *     there (c->dead); the free itself is finished by smtpc_leave() when
 *     the outermost libevent callback of c returns.
 *  3. Replies are matched to commands strictly in the order sent (c->q);
 *     a reply with nothing awaiting it ends the connection.
 *  4. cb->done fires once per message, and then every rcpt has a code: a
 *     peer's 2xx/4xx/5xx, or our 451 (connection lost) / 552 / 553.
 *
 * States and the functions that move them:
 *   START -(defer: smtpc_connect_next)-> CONNECT -(connected)-> GREETING
 *   CONNECT|GREETING|EHLO -(refused, timeout, non-2xx, garbage:
 *                           smtpc_addr_fail)-> CONNECT on the next address,
 *                           or CLOSED with SMTPC_FAILED when none is left
 *   GREETING -(2xx: EHLO sent)-> EHLO -(2xx, or 5xx then HELO 2xx:
 *                                       smtpc_greeted)-> IDLE (READY)
 *   IDLE -(smtpc_send)-> TX -(last reply: smtpc_tx_end)-> IDLE (READY)
 *   TX -(timeout, EOF, garbage: smtpc_tx_break)-> CLOSED (done, CLOSED)
 *   IDLE -(smtpc_quit)-> QUIT -(reply, EOF, timeout)-> CLOSED (CLOSED)
 *   IDLE -(peer closes or speaks)-> CLOSED (CLOSED)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log/log.h"
#include "spool/spool.h"
#include "util/util.h"
#include "smtpc/smtpc_int.h"

#define SMTPC_QUIT_TIMEOUT 5	/* seconds to wait for QUIT's reply */

static void smtpc_on_read(struct bufferevent *bev, void *arg);
static void smtpc_on_write(struct bufferevent *bev, void *arg);
static void smtpc_on_event(struct bufferevent *bev, short what, void *arg);
static void smtpc_connect_next(struct smtpc *c);
static void smtpc_tx_end(struct smtpc *c);
static void smtpc_quit_send(struct smtpc *c);

#define SMTPC_IDS(c) (&(struct log_ids){ 0, (c)->dcid, 0, -1 })

/* --- entry, exit and the owner's callbacks (invariant 2) --- */

static void
smtpc_enter(struct smtpc *c)
{
	c->depth++;
}

static void smtpc_destroy(struct smtpc *c);

static void
smtpc_leave(struct smtpc *c)
{
	if (--c->depth == 0 && c->dead)
		smtpc_destroy(c);
}

/* Tell the owner; 1 if it freed c meanwhile (stop touching it). */
static int
smtpc_emit(struct smtpc *c, enum smtpc_event ev, int code, const char *reason)
{
	if (ev != SMTPC_READY)
		c->closed_reported = 1;
	c->cb.event(c->cb.arg, c, ev, code, reason);
	return c->dead;
}

static void
smtpc_defer(struct smtpc *c, unsigned what)
{
	c->pending |= what;
	event_active(c->defer, EV_TIMEOUT, 1);
}

/* --- the socket --- */

static void
smtpc_close(struct smtpc *c, const char *why)
{
	if (c->bev != NULL) {
		if (c->connected)
			log_ev(LOG_INFO, SMTPC_IDS(c), "close", "reason", why,
			    NULL);
		bufferevent_free(c->bev);
		c->bev = NULL;
		c->gen++;
	}
	c->connected = 0;
	c->qhead = c->qlen = 0;
	c->tx.body_writing = 0;
	evtimer_del(c->timer);
	if (c->state != SMTPC_ST_START)
		c->state = SMTPC_ST_CLOSED;
}

static void
smtpc_timer_set(struct smtpc *c, int secs)
{
	struct timeval tv = { secs, 0 };

	evtimer_add(c->timer, &tv);
}

/* Arm the timeout for the reply at the head of the queue, if any. */
static void
smtpc_timer_update(struct smtpc *c)
{
	int head;

	if (c->qlen == 0) {
		evtimer_del(c->timer);
		return;
	}
	head = c->q[c->qhead].cmd;
	if (head == SMTPC_CMD_DOT || head == SMTPC_CMD_BDAT) {
		/* While the body goes out, the write timeout watches it. */
		if (c->tx.body_writing)
			evtimer_del(c->timer);
		else
			smtpc_timer_set(c, c->p.data_timeout);
	} else if (head == SMTPC_CMD_QUIT) {
		smtpc_timer_set(c, c->p.command_timeout < SMTPC_QUIT_TIMEOUT ?
		    c->p.command_timeout : SMTPC_QUIT_TIMEOUT);
	} else {
		smtpc_timer_set(c, c->p.command_timeout);
	}
}

static void
smtpc_q_push(struct smtpc *c, int cmd, size_t idx)
{
	if (c->qhead + c->qlen == c->qcap && c->qhead > 0) {
		memmove(c->q, c->q + c->qhead, c->qlen * sizeof(*c->q));
		c->qhead = 0;
	}
	if (c->qlen == c->qcap) {
		c->qcap = c->qcap ? c->qcap * 2 : 8;
		c->q = xrealloc(c->q, c->qcap * sizeof(*c->q));
	}
	c->q[c->qhead + c->qlen].cmd = (uint8_t)cmd;
	c->q[c->qhead + c->qlen].idx = (uint32_t)idx;
	c->qlen++;
}

/*
 * Write one command line and await its reply. Control bytes in it (which
 * the smtpd parser never lets into an address) become '?', so no stored
 * string can inject a command.
 */
static void __attribute__((format(printf, 4, 5)))
smtpc_cmd(struct smtpc *c, int cmd, size_t idx, const char *fmt, ...)
{
	va_list ap;
	char *line;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	line = xmalloc((size_t)n + 1);
	va_start(ap, fmt);
	vsnprintf(line, (size_t)n + 1, fmt, ap);
	va_end(ap);
	for (int i = 0; i < n; i++)
		if ((unsigned char)line[i] < 0x20)
			line[i] = '?';
	evbuffer_add(bufferevent_get_output(c->bev), line, (size_t)n);
	evbuffer_add(bufferevent_get_output(c->bev), "\r\n", 2);
	free(line);
	smtpc_q_push(c, cmd, idx);
}

/* --- connecting --- */

static void smtpc_on_line(void *arg, const char *s, size_t n);

static void
smtpc_reply_reset(struct smtpc *c)
{
	smtpc_reply_init(&c->reply);
	c->reply.on_line = smtpc_on_line;
	c->reply.on_line_arg = c;
}

static void
smtpc_peer_set(struct smtpc *c, const struct smtpc_addr *a)
{
	const void *in;
	int v6 = a->ss.ss_family == AF_INET6;

	in = v6 ? (const void *)&((const struct sockaddr_in6 *)&a->ss)->sin6_addr
	    : (const void *)&((const struct sockaddr_in *)&a->ss)->sin_addr;
	c->port = ntohs(v6 ? ((const struct sockaddr_in6 *)&a->ss)->sin6_port
	    : ((const struct sockaddr_in *)&a->ss)->sin_port);
	if (inet_ntop(a->ss.ss_family, in, c->addr_text,
	    sizeof(c->addr_text)) == NULL)
		sl_strlcpy(c->addr_text, "?", sizeof(c->addr_text));
	if (a->host[0] != '\0')
		snprintf(c->peer, sizeof(c->peer), "%s[%s]", a->host,
		    c->addr_text);
	else
		snprintf(c->peer, sizeof(c->peer), v6 ? "[%s]" : "%s",
		    c->addr_text);
}

/* Start connecting to addrs[ai]; -1 with last_reason set if that failed. */
static int
smtpc_connect_start(struct smtpc *c)
{
	const struct smtpc_addr *a = &c->addrs[c->ai];
	socklen_t len;
	int fd;

	smtpc_peer_set(c, a);
	c->last_code = 0;
	if (a->ss.ss_family == AF_INET)
		len = sizeof(struct sockaddr_in);
	else if (a->ss.ss_family == AF_INET6)
		len = sizeof(struct sockaddr_in6);
	else {
		snprintf(c->last_reason, sizeof(c->last_reason),
		    "connect to %s: address family not supported", c->peer);
		return -1;
	}
	/*
	 * connect(2) here rather than in bufferevent_socket_connect(), so an
	 * error at once (EADDRNOTAVAIL, ENETUNREACH) comes with its errno.
	 */
	fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0);
	if (fd < 0 || (connect(fd, (const struct sockaddr *)&a->ss, len) != 0 &&
	    errno != EINPROGRESS))
		goto fail;
	c->bev = bufferevent_socket_new(c->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (c->bev == NULL)
		goto fail;
	fd = -1;
	bufferevent_setcb(c->bev, smtpc_on_read, smtpc_on_write, smtpc_on_event,
	    c);
	if (bufferevent_socket_connect(c->bev, NULL, 0) != 0)
		goto fail;
	c->state = SMTPC_ST_CONNECT;
	smtpc_reply_reset(c);
	smtpc_timer_set(c, c->p.connect_timeout);
	return 0;
fail:
	snprintf(c->last_reason, sizeof(c->last_reason), "connect to %s:%d: %s",
	    c->peer, c->port, strerror(errno));
	if (fd >= 0)
		close(fd);
	if (c->bev != NULL) {
		bufferevent_free(c->bev);
		c->bev = NULL;
	}
	return -1;
}

/* Try addrs[ai..] in turn; SMTPC_FAILED when none is left. */
static void
smtpc_connect_next(struct smtpc *c)
{
	for (; c->ai < c->naddr; c->ai++) {
		if (smtpc_connect_start(c) == 0)
			return;
		log_ev(LOG_INFO, SMTPC_IDS(c), "connect failed", "reason",
		    c->last_reason, NULL);
	}
	c->state = SMTPC_ST_CLOSED;
	if (c->naddr == 0)
		sl_strlcpy(c->last_reason, "no address to connect to",
		    sizeof(c->last_reason));
	smtpc_emit(c, SMTPC_FAILED, c->last_code, c->last_reason);
}

/* This address failed (code 0 for a network error): on to the next. */
static void __attribute__((format(printf, 3, 4)))
smtpc_addr_fail(struct smtpc *c, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->last_reason, sizeof(c->last_reason), fmt, ap);
	va_end(ap);
	c->last_code = code;
	log_ev(LOG_INFO, SMTPC_IDS(c), "connect failed", "reason",
	    c->last_reason, NULL);
	smtpc_close(c, "failed");
	c->ai++;
	smtpc_connect_next(c);
}

static void
smtpc_connected(struct smtpc *c)
{
	struct timeval wtv = { c->p.data_timeout, 0 };
	char where[INET6_ADDRSTRLEN + 16];

	c->connected = 1;
	c->state = SMTPC_ST_GREETING;
	c->need_rset = 0;
	snprintf(where, sizeof(where), "[%s]:%d", c->addr_text, c->port);
	log_ev(LOG_INFO, SMTPC_IDS(c), "New SMTP connection", "host",
	    c->addrs[c->ai].host, "addr", where, NULL);
	/* A write must progress within data_timeout (a stalled body). */
	bufferevent_set_timeouts(c->bev, NULL, &wtv);
	bufferevent_enable(c->bev, EV_READ);
	smtpc_q_push(c, SMTPC_CMD_GREETING, 0);
	smtpc_timer_update(c);
}

/* --- greeting, EHLO --- */

/* EHLO keywords, one line at a time (RFC 5321 4.1.1.1). */
static void
smtpc_on_line(void *arg, const char *s, size_t n)
{
	static const struct {
		const char *kw;
		unsigned bit;
	} kws[] = {
		{ "PIPELINING", SMTPC_EXT_PIPELINING },
		{ "SIZE", SMTPC_EXT_SIZE },
		{ "8BITMIME", SMTPC_EXT_8BITMIME },
		{ "SMTPUTF8", SMTPC_EXT_SMTPUTF8 },
		{ "DSN", SMTPC_EXT_DSN },
		{ "CHUNKING", SMTPC_EXT_CHUNKING },
		{ "STARTTLS", SMTPC_EXT_STARTTLS },
	};
	struct smtpc *c = arg;
	size_t kwlen = 0;

	/* Line 1 is the peer's name; a refusal's lines are not keywords. */
	if (c->qlen == 0 || c->q[c->qhead].cmd != SMTPC_CMD_EHLO ||
	    c->reply.lines < 2 || c->reply.code / 100 != 2)
		return;
	while (kwlen < n && s[kwlen] != ' ')
		kwlen++;
	for (size_t i = 0; i < SL_ARRAY_LEN(kws); i++) {
		if (strlen(kws[i].kw) != kwlen ||
		    !sl_strncaseeq(s, kws[i].kw, kwlen))
			continue;
		c->ext |= kws[i].bit;
		if (kws[i].bit == SMTPC_EXT_SIZE) {
			uint64_t v = 0;
			for (size_t j = kwlen + 1; j < n && s[j] >= '0' &&
			    s[j] <= '9' && v < UINT64_MAX / 10 - 10; j++)
				v = v * 10 + (uint64_t)(s[j] - '0');
			c->peer_size = v;
		}
	}
}

/*
 * STARTTLS (RFC 3207) belongs here: when the peer offers it (and policy
 * wants it), send STARTTLS, wrap c->bev in bufferevent_openssl_filter_new()
 * and say EHLO again. TODO(tls): not implemented in this part yet; the
 * offer is recorded in c->ext and the session goes on in plaintext.
 * Returns 1 when it took over the session.
 */
static int
smtpc_starttls_begin(struct smtpc *c)
{
	return 0;
}

static void
smtpc_greeted(struct smtpc *c)
{
	if ((c->ext & SMTPC_EXT_STARTTLS) && smtpc_starttls_begin(c))
		return;
	c->state = SMTPC_ST_IDLE;
	smtpc_emit(c, SMTPC_READY, 0, NULL);
}

static void
smtpc_ehlo_reply(struct smtpc *c, int cmd)
{
	int code = c->reply.code;

	if (cmd == SMTPC_CMD_GREETING && code / 100 == 2) {
		c->state = SMTPC_ST_EHLO;
		c->ext = 0;
		c->peer_size = 0;
		smtpc_cmd(c, SMTPC_CMD_EHLO, 0, "EHLO %s", c->helo);
	} else if (cmd == SMTPC_CMD_EHLO && code / 100 == 5) {
		/* RFC 5321 3.2: a server without EHLO; fall back to HELO. */
		c->ext = 0;
		c->peer_size = 0;
		smtpc_cmd(c, SMTPC_CMD_HELO, 0, "HELO %s", c->helo);
	} else if (code / 100 == 2) {
		smtpc_greeted(c);
	} else {
		smtpc_addr_fail(c, code, "%s said: %d %s", c->peer, code,
		    c->reply.text);
	}
}

/* --- the message --- */

static const char *
smtpc_cmd_name(const struct smtpc *c)
{
	static const char *const names[] = { "the greeting", "EHLO", "HELO",
		"RSET", "MAIL FROM", "RCPT TO", "DATA", "end of data",
		"message body", "QUIT" };
	int cmd;

	if (c->qlen == 0)
		return c->tx.body_writing ? "message body" : "nothing";
	cmd = c->q[c->qhead].cmd;
	if (cmd == SMTPC_CMD_DOT && c->tx.body_writing)
		return "message body";
	return names[cmd];
}

/* Record rcpt i's reply; state SMTPC_R_ACCEPTED or SMTPC_R_FINAL. */
static void
smtpc_rcpt_set(struct smtpc *c, size_t i, int state, int code,
    const char *text)
{
	struct smtpc_rcpt *r = &c->tx.m->rcpts[i];

	r->code = code;
	if (text[0] != '\0')
		snprintf(r->reply, sizeof(r->reply), "%d %s", code, text);
	else
		snprintf(r->reply, sizeof(r->reply), "%d", code);
	c->tx.rst[i] = (uint8_t)state;
}

/* Every rcpt in state from (NONE or ACCEPTED) gets code and text. */
static void
smtpc_rcpt_all(struct smtpc *c, int from, int code, const char *text)
{
	for (size_t i = 0; i < c->tx.m->nrcpt; i++)
		if (c->tx.rst[i] == from)
			smtpc_rcpt_set(c, i, SMTPC_R_FINAL, code, text);
}

/* "ENVID=" as xtext (RFC 3461 4): stored as given, re-encoded if not. */
static void
smtpc_xtext(char *out, size_t size, const char *s)
{
	size_t n = 0;

	for (; *s && n + 4 < size; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch < 33 || ch > 126 || ch == '=')
			n += (size_t)snprintf(out + n, size - n, "+%02X", ch);
		else
			out[n++] = (char)ch;
	}
	out[n] = '\0';
}

static void
smtpc_send_mail(struct smtpc *c)
{
	const struct smtpc_msg *m = c->tx.m;
	char size[32] = "", envid[320] = "";
	const char *ret = "";

	for (size_t i = 0; i < m->nrcpt; i++)
		log_ev(LOG_INFO, &(struct log_ids){ 0, c->dcid, m->mid,
		    m->rcpts[i].rid }, "Delivery start", "rcpt",
		    m->rcpts[i].addr, "relay", c->peer, NULL);
	if (c->ext & SMTPC_EXT_SIZE)
		snprintf(size, sizeof(size), " SIZE=%zu",
		    m->body ? evbuffer_get_length(m->body) : 0);
	if (c->ext & SMTPC_EXT_DSN) {
		ret = m->ret == SPOOL_RET_FULL ? " RET=FULL" :
		    m->ret == SPOOL_RET_HDRS ? " RET=HDRS" : "";
		if (m->envid != NULL && m->envid[0] != '\0') {
			memcpy(envid, " ENVID=", 7);
			smtpc_xtext(envid + 7, sizeof(envid) - 7, m->envid);
		}
	}
	/*
	 * RFC 6152 3 says a BODY=8BITMIME message to a peer without 8BITMIME
	 * is to be converted or bounced; like most MTAs we send it as it is
	 * (without BODY=), which nearly every server takes.
	 */
	smtpc_cmd(c, SMTPC_CMD_MAIL, 0, "MAIL FROM:<%s>%s%s%s%s%s", m->sender,
	    size, (m->flags & SPOOL_F_8BITMIME) &&
	    (c->ext & SMTPC_EXT_8BITMIME) ? " BODY=8BITMIME" : "",
	    m->flags & SPOOL_F_SMTPUTF8 ? " SMTPUTF8" : "", ret, envid);
}

static void
smtpc_send_rcpt(struct smtpc *c, size_t i)
{
	const struct smtpc_rcpt *r = &c->tx.m->rcpts[i];
	char notify[48] = "";
	int dsn = (c->ext & SMTPC_EXT_DSN) != 0;

	if (dsn && (r->notify & SPOOL_NOTIFY_NEVER)) {
		sl_strlcpy(notify, " NOTIFY=NEVER", sizeof(notify));
	} else if (dsn && r->notify != 0) {
		snprintf(notify, sizeof(notify), " NOTIFY=%s%s%s",
		    r->notify & SPOOL_NOTIFY_SUCCESS ? "SUCCESS," : "",
		    r->notify & SPOOL_NOTIFY_FAILURE ? "FAILURE," : "",
		    r->notify & SPOOL_NOTIFY_DELAY ? "DELAY," : "");
		notify[strlen(notify) - 1] = '\0';	/* the last ',' */
	}
	smtpc_cmd(c, SMTPC_CMD_RCPT, i, "RCPT TO:<%s>%s%s%s", r->addr, notify,
	    dsn && r->orcpt != NULL ? " ORCPT=" : "",
	    dsn && r->orcpt != NULL ? r->orcpt : "");
}

static void
smtpc_send_body_bdat(struct smtpc *c)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	struct evbuffer *body = c->tx.m->body;
	size_t n = body != NULL ? evbuffer_get_length(body) : 0;
	struct evbuffer_iovec iov[16];
	struct evbuffer_ptr pos;
	size_t done = 0;

	/* RFC 3030 2: the chunk is the body as it is, no dot-stuffing. */
	smtpc_cmd(c, SMTPC_CMD_BDAT, 0, "BDAT %zu LAST", n);
	while (done < n) {
		size_t before = done;
		int k;

		evbuffer_ptr_set(body, &pos, done, EVBUFFER_PTR_SET);
		k = evbuffer_peek(body, -1, &pos, iov, 16);
		if (k > 16)
			k = 16;
		for (int i = 0; i < k; i++) {
			evbuffer_add(out, iov[i].iov_base, iov[i].iov_len);
			done += iov[i].iov_len;
		}
		if (done == before)
			break;
	}
	c->tx.body_writing = 1;
}

/* Send what may go now: everything with PIPELINING, else one command. */
static void
smtpc_tx_pump(struct smtpc *c)
{
	struct smtpc_tx *tx = &c->tx;
	int pipe = (c->ext & SMTPC_EXT_PIPELINING) != 0;
	int bdat = c->p.use_bdat && (c->ext & SMTPC_EXT_CHUNKING);

	while (tx->stage != SMTPC_SG_DONE && (pipe || c->qlen == 0)) {
		switch (tx->stage) {
		case SMTPC_SG_RSET:
			if (c->need_rset)
				smtpc_cmd(c, SMTPC_CMD_RSET, 0, "RSET");
			c->need_rset = 0;
			tx->stage = SMTPC_SG_MAIL;
			break;
		case SMTPC_SG_MAIL:
			smtpc_send_mail(c);
			tx->stage = SMTPC_SG_RCPT;
			break;
		case SMTPC_SG_RCPT:
			smtpc_send_rcpt(c, tx->next_rcpt);
			if (++tx->next_rcpt == tx->m->nrcpt)
				tx->stage = SMTPC_SG_DATA;
			break;
		case SMTPC_SG_DATA:
			/*
			 * DATA may go with the RCPTs (RFC 2920 3.1); BDAT
			 * carries the body, so it waits for their replies.
			 */
			if (pipe && !bdat)
				smtpc_cmd(c, SMTPC_CMD_DATA, 0, "DATA");
			else if (c->qlen > 0)
				return;
			else if (tx->accepted > 0 && bdat)
				smtpc_send_body_bdat(c);
			else if (tx->accepted > 0)
				smtpc_cmd(c, SMTPC_CMD_DATA, 0, "DATA");
			tx->stage = SMTPC_SG_DONE;
			break;
		}
	}
}

static void
smtpc_mail_reply(struct smtpc *c)
{
	if (c->reply.code / 100 == 2)
		return;
	smtpc_rcpt_all(c, SMTPC_R_NONE, c->reply.code, c->reply.text);
	c->tx.mail_failed = 1;
	c->tx.stage = SMTPC_SG_DONE;
	c->need_rset = 1;
}

static void
smtpc_rcpt_reply(struct smtpc *c, size_t i)
{
	struct smtpc_tx *tx = &c->tx;

	if (tx->mail_failed || SL_NEVER(i >= tx->m->nrcpt))
		return;
	tx->replied++;
	if (c->reply.code / 100 == 2)
		tx->accepted++;
	smtpc_rcpt_set(c, i, c->reply.code / 100 == 2 ? SMTPC_R_ACCEPTED :
	    SMTPC_R_FINAL, c->reply.code, c->reply.text);
	if (tx->replied == tx->m->nrcpt && tx->accepted == 0)
		c->need_rset = 1;
}

static void
smtpc_data_reply(struct smtpc *c)
{
	struct smtpc_tx *tx = &c->tx;

	if (c->reply.code == 354) {
		/*
		 * With PIPELINING the DATA went out before the RCPT replies
		 * came; a server that still says 354 with no recipient gets
		 * an empty message, whose reply is then ignored.
		 */
		if (tx->mail_failed || tx->accepted == 0) {
			evbuffer_add(bufferevent_get_output(c->bev), ".\r\n", 3);
		} else {
			smtpc_dotstuff(bufferevent_get_output(c->bev),
			    tx->m->body);
			tx->body_writing = 1;
		}
		smtpc_q_push(c, SMTPC_CMD_DOT, 0);
		return;
	}
	if (tx->mail_failed || tx->accepted == 0)
		return;		/* the 503/554 of a pipelined DATA */
	smtpc_rcpt_all(c, SMTPC_R_ACCEPTED, c->reply.code, c->reply.text);
	c->need_rset = 1;
}

/* The reply to the end of the data (or BDAT LAST): final for all taken. */
static void
smtpc_dot_reply(struct smtpc *c)
{
	if (c->tx.mail_failed || c->tx.accepted == 0)
		return;
	smtpc_rcpt_all(c, SMTPC_R_ACCEPTED, c->reply.code, c->reply.text);
}

static void
smtpc_tx_reply(struct smtpc *c, const struct smtpc_sent *s)
{
	switch (s->cmd) {
	case SMTPC_CMD_RSET:
		break;
	case SMTPC_CMD_MAIL:
		smtpc_mail_reply(c);
		break;
	case SMTPC_CMD_RCPT:
		smtpc_rcpt_reply(c, s->idx);
		break;
	case SMTPC_CMD_DATA:
		smtpc_data_reply(c);
		break;
	case SMTPC_CMD_DOT:
	case SMTPC_CMD_BDAT:
		smtpc_dot_reply(c);
		break;
	}
	smtpc_tx_pump(c);
	if (c->qlen > 0 || c->tx.stage != SMTPC_SG_DONE)
		return;
	for (size_t i = 0; i < c->tx.m->nrcpt; i++)
		if (c->tx.rst[i] != SMTPC_R_FINAL)
			return;
	smtpc_tx_end(c);
}

/* The message is over: log each outcome, tell the owner, then idle. */
static void
smtpc_tx_end(struct smtpc *c)
{
	struct smtpc_msg *m = c->tx.m;

	for (size_t i = 0; i < m->nrcpt; i++) {
		struct smtpc_rcpt *r = &m->rcpts[i];
		const char *what;

		if (SL_NEVER(r->code == 0))
			snprintf(r->reply, sizeof(r->reply),
			    "451 4.3.0 no outcome");
		if (r->code == 0)
			r->code = 451;
		what = r->code / 100 == 2 ? "Message done" :
		    r->code / 100 == 5 ? "Rejected" : "Delayed";
		log_ev(LOG_INFO, &(struct log_ids){ 0, c->dcid, m->mid,
		    r->rid }, what, "rcpt", r->addr, "relay", c->peer, "reply",
		    r->reply, NULL);
	}
	free(c->tx.rst);
	memset(&c->tx, 0, sizeof(c->tx));
	if (c->state == SMTPC_ST_TX)
		c->state = SMTPC_ST_IDLE;
	c->cb.done(c->cb.arg, c, m);
	if (c->dead)
		return;
	if (c->state == SMTPC_ST_IDLE && c->tx.m == NULL) {
		if (c->quit_pending)
			smtpc_quit_send(c);
		else
			smtpc_emit(c, SMTPC_READY, 0, NULL);
	} else if (c->state == SMTPC_ST_CLOSED && !c->closed_reported) {
		smtpc_emit(c, SMTPC_CLOSED, 0, NULL);
	}
}

/* The connection broke during a message: 451 for what is not final. */
static void
smtpc_tx_break(struct smtpc *c, const char *why)
{
	char text[480];
	const char *phase = smtpc_cmd_name(c);

	if (strcmp(why, "timed out") == 0)
		snprintf(text, sizeof(text), "4.4.2 conversation with %s timed "
		    "out while sending %s", c->peer, phase);
	else
		snprintf(text, sizeof(text), "4.4.2 lost connection with %s "
		    "while sending %s (%s)", c->peer, phase, why);
	smtpc_close(c, why);
	smtpc_rcpt_all(c, SMTPC_R_NONE, 451, text);
	smtpc_rcpt_all(c, SMTPC_R_ACCEPTED, 451, text);
	smtpc_tx_end(c);
}

/* --- replies and network events --- */

/* The peer went away, stalled or spoke garbage; why says which. */
static void
smtpc_lost(struct smtpc *c, const char *why)
{
	switch (c->state) {
	case SMTPC_ST_CONNECT:
		smtpc_addr_fail(c, 0, "connect to %s:%d: %s", c->peer, c->port,
		    why);
		break;
	case SMTPC_ST_GREETING:
	case SMTPC_ST_EHLO:
		smtpc_addr_fail(c, 0, "%s with %s while receiving %s",
		    strcmp(why, "timed out") == 0 ? "conversation timed out" :
		    why, c->peer, smtpc_cmd_name(c));
		break;
	case SMTPC_ST_TX:
		if (c->tx.m != NULL) {
			smtpc_tx_break(c, why);
			break;
		}
		/* FALLTHROUGH */
	default:
		smtpc_close(c, why);
		if (!c->closed_reported)
			smtpc_emit(c, SMTPC_CLOSED, 0, NULL);
		break;
	}
}

static void
smtpc_on_reply(struct smtpc *c)
{
	struct smtpc_sent s;

	if (c->qlen == 0) {
		/* Unasked: a 421 before closing, or a confused peer. */
		log_ev(LOG_INFO, SMTPC_IDS(c), "unexpected reply", "reply",
		    c->reply.text, NULL);
		smtpc_lost(c, "unexpected reply");
		return;
	}
	s = c->q[c->qhead];
	c->qhead++;
	c->qlen--;
	switch (s.cmd) {
	case SMTPC_CMD_GREETING:
	case SMTPC_CMD_EHLO:
	case SMTPC_CMD_HELO:
		smtpc_ehlo_reply(c, s.cmd);
		break;
	case SMTPC_CMD_QUIT:
		smtpc_close(c, "quit");
		smtpc_emit(c, SMTPC_CLOSED, 0, NULL);
		break;
	default:
		if (SL_ALWAYS(c->tx.m != NULL))
			smtpc_tx_reply(c, &s);
		break;
	}
	if (!c->dead && c->bev != NULL)
		smtpc_timer_update(c);
}

static void
smtpc_read(struct smtpc *c)
{
	unsigned gen = c->gen;

	while (!c->dead && c->bev != NULL && c->gen == gen) {
		struct evbuffer *in = bufferevent_get_input(c->bev);
		struct evbuffer_iovec v;
		size_t used;

		if (evbuffer_get_length(in) == 0 ||
		    evbuffer_peek(in, -1, NULL, &v, 1) < 1 || v.iov_len == 0)
			return;
		used = smtpc_reply_feed(&c->reply, v.iov_base, v.iov_len);
		evbuffer_drain(in, used);
		if (c->reply.error) {
			smtpc_lost(c, "malformed reply");
			return;
		}
		if (!c->reply.complete)
			continue;
		smtpc_on_reply(c);
		if (!c->dead && c->gen == gen)
			smtpc_reply_reset(c);
	}
}

static void
smtpc_on_read(struct bufferevent *bev, void *arg)
{
	struct smtpc *c = arg;

	smtpc_enter(c);
	smtpc_read(c);
	smtpc_leave(c);
}

static void
smtpc_on_write(struct bufferevent *bev, void *arg)
{
	struct smtpc *c = arg;

	/* The body is out: now the final reply has data_timeout. */
	if (c->tx.body_writing) {
		c->tx.body_writing = 0;
		smtpc_timer_update(c);
	}
}

static void
smtpc_on_event(struct bufferevent *bev, short what, void *arg)
{
	struct smtpc *c = arg;
	int err = errno;

	smtpc_enter(c);
	if (what & BEV_EVENT_CONNECTED) {
		evtimer_del(c->timer);
		smtpc_connected(c);
	} else if (what & BEV_EVENT_TIMEOUT) {
		smtpc_lost(c, "timed out");
	} else if (what & BEV_EVENT_EOF) {
		/* What came before the EOF counts (a 421, QUIT's 221). */
		smtpc_read(c);
		if (!c->dead && c->bev == bev)
			smtpc_lost(c, "connection closed");
	} else {
		smtpc_lost(c, err != 0 ? strerror(err) : "connection error");
	}
	smtpc_leave(c);
}

static void
smtpc_on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct smtpc *c = arg;

	smtpc_enter(c);
	smtpc_lost(c, "timed out");
	smtpc_leave(c);
}

static void
smtpc_on_defer(evutil_socket_t fd, short what, void *arg)
{
	struct smtpc *c = arg;
	unsigned bits = c->pending;

	c->pending = 0;
	smtpc_enter(c);
	if ((bits & SMTPC_DEFER_CONNECT) && c->state == SMTPC_ST_START)
		smtpc_connect_next(c);
	if (!c->dead && (bits & SMTPC_DEFER_LOCAL) && c->tx.m != NULL &&
	    c->tx.local)
		smtpc_tx_end(c);
	if (!c->dead && (bits & SMTPC_DEFER_CLOSED) && !c->closed_reported)
		smtpc_emit(c, SMTPC_CLOSED, 0, NULL);
	smtpc_leave(c);
}

/* --- the API --- */

struct smtpc *
smtpc_new(struct event_base *base, uint64_t dcid, const struct smtpc_params *p,
    const struct smtpc_addr *addrs, size_t naddr, const struct smtpc_cb *cb)
{
	struct smtpc *c = xcalloc(1, sizeof(*c));

	c->base = base;
	c->dcid = dcid;
	c->p = *p;
	c->helo = xstrdup(p->helo != NULL && p->helo[0] ? p->helo : "localhost");
	c->p.helo = c->helo;
	if (c->p.connect_timeout <= 0)
		c->p.connect_timeout = 30;
	if (c->p.command_timeout <= 0)
		c->p.command_timeout = 300;
	if (c->p.data_timeout <= 0)
		c->p.data_timeout = 600;
	c->addrs = xcalloc(naddr ? naddr : 1, sizeof(*addrs));
	if (naddr > 0)
		memcpy(c->addrs, addrs, naddr * sizeof(*addrs));
	c->naddr = naddr;
	c->cb = *cb;
	c->state = SMTPC_ST_START;
	c->timer = evtimer_new(base, smtpc_on_timer, c);
	c->defer = event_new(base, -1, 0, smtpc_on_defer, c);
	if (c->timer == NULL || c->defer == NULL)
		SL_PANIC("smtpc_new: event_new failed");
	smtpc_reply_reset(c);
	smtpc_defer(c, SMTPC_DEFER_CONNECT);
	return c;
}

/* Fail a message here, all rcpts with one reply; done() comes deferred. */
static void
smtpc_send_local(struct smtpc *c, int code, const char *text)
{
	smtpc_rcpt_all(c, SMTPC_R_NONE, code, text);
	c->tx.local = 1;
	c->tx.stage = SMTPC_SG_DONE;
	if (c->state == SMTPC_ST_IDLE)
		c->state = SMTPC_ST_TX;
	smtpc_defer(c, SMTPC_DEFER_LOCAL);
}

void
smtpc_send(struct smtpc *c, struct smtpc_msg *m)
{
	size_t size = m->body != NULL ? evbuffer_get_length(m->body) : 0;
	char text[400];

	if (c->tx.m != NULL)
		SL_PANIC("smtpc_send: DCID %llu has a message in flight",
		    (unsigned long long)c->dcid);
	memset(&c->tx, 0, sizeof(c->tx));
	c->tx.m = m;
	c->tx.rst = xcalloc(m->nrcpt ? m->nrcpt : 1, 1);
	for (size_t i = 0; i < m->nrcpt; i++) {
		m->rcpts[i].code = 0;
		m->rcpts[i].reply[0] = '\0';
	}
	if (c->state != SMTPC_ST_IDLE) {
		snprintf(text, sizeof(text), "4.4.2 connection with %s not "
		    "ready", c->peer);
		smtpc_send_local(c, 451, text);
	} else if ((c->ext & SMTPC_EXT_SIZE) && c->peer_size > 0 &&
	    size > c->peer_size) {
		snprintf(text, sizeof(text), "5.3.4 Message size exceeds the "
		    "fixed maximum message size of the peer (%llu)",
		    (unsigned long long)c->peer_size);
		smtpc_send_local(c, 552, text);
	} else if ((m->flags & SPOOL_F_SMTPUTF8) &&
	    !(c->ext & SMTPC_EXT_SMTPUTF8)) {
		smtpc_send_local(c, 553, "5.6.7 Peer does not support SMTPUTF8");
	} else if (m->nrcpt == 0) {
		smtpc_send_local(c, 0, "");
	} else {
		c->state = SMTPC_ST_TX;
		smtpc_tx_pump(c);
		smtpc_timer_update(c);
	}
}

static void
smtpc_quit_send(struct smtpc *c)
{
	c->quit_pending = 0;
	c->state = SMTPC_ST_QUIT;
	smtpc_cmd(c, SMTPC_CMD_QUIT, 0, "QUIT");
	smtpc_timer_update(c);
}

void
smtpc_quit(struct smtpc *c)
{
	switch (c->state) {
	case SMTPC_ST_IDLE:
		smtpc_quit_send(c);
		break;
	case SMTPC_ST_TX:
		c->quit_pending = 1;	/* after this message */
		break;
	case SMTPC_ST_QUIT:
	case SMTPC_ST_CLOSED:
		break;
	default:
		smtpc_close(c, "quit");
		c->state = SMTPC_ST_CLOSED;
		smtpc_defer(c, SMTPC_DEFER_CLOSED);
		break;
	}
}

static void
smtpc_destroy(struct smtpc *c)
{
	smtpc_close(c, "shutdown");
	event_free(c->timer);
	event_free(c->defer);
	free(c->tx.rst);
	free(c->q);
	free(c->addrs);
	free(c->helo);
	free(c);
}

void
smtpc_free(struct smtpc *c)
{
	if (c == NULL)
		return;
	if (c->depth > 0) {
		/* Inside one of our callbacks: finish in smtpc_leave(). */
		c->dead = 1;
		smtpc_close(c, "shutdown");
		event_del(c->defer);
		return;
	}
	smtpc_destroy(c);
}

const char *
smtpc_peer_host(const struct smtpc *c)
{
	return c->ai < c->naddr ? c->addrs[c->ai].host : "";
}

const char *
smtpc_peer_addr(const struct smtpc *c)
{
	return c->addr_text;
}

uint64_t
smtpc_dcid(const struct smtpc *c)
{
	return c->dcid;
}

unsigned
smtpc_peer_ext(const struct smtpc *c)
{
	return c->ext;
}

uint64_t
smtpc_peer_size(const struct smtpc *c)
{
	return c->peer_size;
}
