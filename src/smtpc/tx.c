/* SPDX-License-Identifier: MIT */
/*
 * tx.c: one message on a greeted connection (RFC 5321 3.3, RFC 2920):
 * the checks before sending (SIZE, SMTPUTF8), MAIL FROM, RCPT TO and
 * DATA or BDAT with their parameters, the matching of replies to them and
 * each recipient's outcome.
 *
 * Owns struct smtpc_tx, the message in flight. Callers: session.c (the
 * replies, a broken connection) and the owner through smtpc_send().
 *
 * Invariants
 *  1. A rcpt is NONE until its RCPT reply, ACCEPTED after a 2xx there, and
 *     FINAL with a code once nothing later can change it; done fires only
 *     when all are FINAL and no reply is awaited (or the connection broke).
 *  2. After a failed MAIL, or when no RCPT was taken, or DATA was refused,
 *     the next message starts with RSET (c->need_rset).
 *
 * Stages of sending (struct smtpc_tx.stage), moved by smtpc_tx_pump:
 *   RSET -> MAIL -> RCPT (each) -> DATA -> DONE
 * With PIPELINING, RSET..DATA go in one write; BDAT (carrying the body)
 * waits for the RCPT replies, and so does everything without PIPELINING.
 * MAIL refused -> DONE at once; no RCPT taken -> DONE without DATA.
 * A probe stops at DATA: once the RCPT replies are in, they are final.
 * LMTP (RFC 2033 4.2): the end of the data awaits one reply per recipient
 * RCPT accepted (a SMTPC_CMD_DOT each, idx naming it), in RCPT order.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log/log.h"
#include "spool/spool.h"
#include "util/util.h"
#include "smtpc/smtpc_int.h"

/* What the awaited reply answers, for "451 ... while sending <it>". */
const char *
smtpc_cmd_name(const struct smtpc *c)
{
	static const char *const names[] = { "the greeting", "EHLO", "HELO",
		"RSET", "MAIL FROM", "RCPT TO", "DATA", "end of data",
		"message body", "QUIT", "STARTTLS" };
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

	for (size_t i = 0; i < m->nrcpt && !m->probe; i++)
		log_gw(LOG_GW_START, &(struct log_ids){ 0, c->dcid, m->mid,
		    m->rcpts[i].rid }, "rcpt", m->rcpts[i].addr, "relay",
		    c->peer, NULL);
	if (c->ext & SMTPC_EXT_SIZE)
		snprintf(size, sizeof(size), " SIZE=%llu",
		    (unsigned long long)c->tx.size);
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

/* Fold long lines unless the body is binary (RFC 3030 3). */
static int
smtpc_tx_fold(const struct smtpc *c)
{
	return !(c->tx.m->flags & SPOOL_F_BINARYMIME);
}

/* 1 if the message goes with BDAT (RFC 3030), 0 with DATA. */
static int
smtpc_tx_bdat(const struct smtpc *c)
{
	return c->p.use_bdat && !c->p.lmtp && (c->ext & SMTPC_EXT_CHUNKING);
}

/* Start sending the body (after 354, or with BDAT): in pieces. */
static void
smtpc_body_start(struct smtpc *c, int stuff)
{
	smtpc_enc_init(&c->tx.enc, stuff, smtpc_tx_fold(c));
	c->tx.body_off = 0;
	c->tx.body_left = 1;
	c->tx.body_writing = 1;
	smtpc_body_pump(c);
}

void
smtpc_body_pump(struct smtpc *c)
{
	struct smtpc_tx *tx = &c->tx;
	struct evbuffer *out;
	size_t total;

	if (!tx->body_left || c->bev == NULL || tx->m == NULL)
		return;
	out = bufferevent_get_output(c->bev);
	total = tx->m->body != NULL ? evbuffer_get_length(tx->m->body) : 0;
	while (evbuffer_get_length(out) < SMTPC_BODY_HIWAT) {
		if (tx->body_off >= total) {
			smtpc_enc_end(&tx->enc, out);
			tx->body_left = 0;
			break;
		}
		tx->body_off += smtpc_enc_body(&tx->enc, out, tx->m->body,
		    tx->body_off, SMTPC_BODY_CHUNK);
	}
}

static void
smtpc_send_body_bdat(struct smtpc *c)
{
	/* RFC 3030 2: the chunk is the body as it is, no dot-stuffing; its
	 * size is what folding leaves of it */
	smtpc_cmd(c, SMTPC_CMD_BDAT, 0, "BDAT %llu LAST",
	    (unsigned long long)c->tx.size);
	smtpc_body_start(c, 0);
}

/* A probe's RCPT replies are in: they are its outcomes; RSET comes next. */
static void
smtpc_probe_end(struct smtpc *c)
{
	for (size_t i = 0; i < c->tx.m->nrcpt; i++)
		if (c->tx.rst[i] == SMTPC_R_ACCEPTED)
			c->tx.rst[i] = SMTPC_R_FINAL;
	c->need_rset = 1;
	c->tx.stage = SMTPC_SG_DONE;
}

/* Send what may go now: everything with PIPELINING, else one command. */
static void
smtpc_tx_pump(struct smtpc *c)
{
	struct smtpc_tx *tx = &c->tx;
	int pipe = (c->ext & SMTPC_EXT_PIPELINING) != 0;
	int bdat = smtpc_tx_bdat(c);

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
			if (tx->m->probe) {
				if (c->qlen > 0)
					return;
				smtpc_probe_end(c);
				break;
			}
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
		smtpc_q_push(c, SMTPC_CMD_DOT, 0);
		/* LMTP: a reply for each recipient taken, the first above */
		if (c->p.lmtp && tx->accepted > 0) {
			size_t k = 0;
			for (size_t i = 0; i < tx->m->nrcpt; i++) {
				if (tx->rst[i] != SMTPC_R_ACCEPTED)
					continue;
				if (k++ == 0)
					c->q[c->qhead + c->qlen - 1].idx =
					    (uint32_t)i;
				else
					smtpc_q_push(c, SMTPC_CMD_DOT, i);
			}
		}
		if (tx->mail_failed || tx->accepted == 0)
			evbuffer_add(bufferevent_get_output(c->bev), ".\r\n", 3);
		else
			smtpc_body_start(c, 1);
		return;
	}
	if (tx->mail_failed || tx->accepted == 0)
		return;		/* the 503/554 of a pipelined DATA */
	smtpc_rcpt_all(c, SMTPC_R_ACCEPTED, c->reply.code, c->reply.text);
	c->need_rset = 1;
}

/*
 * The reply to the end of the data (or BDAT LAST): final for all taken;
 * in LMTP for the one recipient it answers.
 */
static void
smtpc_dot_reply(struct smtpc *c, size_t idx)
{
	if (c->tx.mail_failed || c->tx.accepted == 0)
		return;
	if (c->p.lmtp) {
		if (SL_ALWAYS(idx < c->tx.m->nrcpt &&
		    c->tx.rst[idx] == SMTPC_R_ACCEPTED))
			smtpc_rcpt_set(c, idx, SMTPC_R_FINAL, c->reply.code,
			    c->reply.text);
		return;
	}
	smtpc_rcpt_all(c, SMTPC_R_ACCEPTED, c->reply.code, c->reply.text);
}

void
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
		smtpc_dot_reply(c, s->idx);
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
void
smtpc_tx_end(struct smtpc *c)
{
	struct smtpc_msg *m = c->tx.m;

	for (size_t i = 0; i < m->nrcpt; i++) {
		struct smtpc_rcpt *r = &m->rcpts[i];
		enum log_gw what;

		if (SL_NEVER(r->code == 0))
			snprintf(r->reply, sizeof(r->reply),
			    "451 4.3.0 no outcome");
		if (r->code == 0)
			r->code = 451;
		what = r->code / 100 == 2 ? LOG_GW_DONE :
		    r->code / 100 == 5 ? LOG_GW_REJECTED : LOG_GW_DELAYED;
		if (m->probe)
			log_ev(LOG_DEBUG, &(struct log_ids){ 0, c->dcid, m->mid,
			    r->rid }, "Recipient checked", "rcpt", r->addr,
			    "relay", c->peer, "reply", r->reply, NULL);
		else
			log_gw(what, &(struct log_ids){ 0, c->dcid, m->mid,
			    r->rid }, "rcpt", r->addr, "relay", c->peer,
			    "reply", r->reply, NULL);
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
void
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

/*
 * The message's size on the wire, after folding (RFC 1870: without DATA's
 * stuffing dots and final dot): what SIZE= declares and BDAT counts. With
 * DATA the line end it adds to a body without one is counted. 0 when the
 * peer asks for neither (the scan is not free).
 */
static uint64_t
smtpc_wire_size(const struct smtpc *c)
{
	struct evbuffer *body = c->tx.m->body;
	size_t len = body != NULL ? evbuffer_get_length(body) : 0;
	struct evbuffer_ptr at;
	char end[2];
	uint64_t n;

	if (len == 0 || !(c->ext & SMTPC_EXT_SIZE || smtpc_tx_bdat(c)))
		return 0;
	n = smtpc_enc_size(body, 0, smtpc_tx_fold(c));
	if (!smtpc_tx_bdat(c) && (len < 2 ||
	    evbuffer_ptr_set(body, &at, len - 2, EVBUFFER_PTR_SET) != 0 ||
	    evbuffer_copyout_from(body, &at, end, 2) != 2 ||
	    memcmp(end, "\r\n", 2) != 0))
		n += 2;
	return n;
}

void
smtpc_send(struct smtpc *c, struct smtpc_msg *m)
{
	uint64_t size;
	char text[512];

	if (c->tx.m != NULL)
		SL_PANIC("smtpc_send: DCID %llu has a message in flight",
		    (unsigned long long)c->dcid);
	memset(&c->tx, 0, sizeof(c->tx));
	c->tx.m = m;
	size = c->tx.size = smtpc_wire_size(c);
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
