/* SPDX-License-Identifier: MIT */
/*
 * session.c: one ESMTP session (RFC 5321) on a bufferevent.
 *
 * Reads commands, answers them in order (PIPELINING, RFC 2920: replies to a
 * batch go out together when the read callback returns), feeds DATA and
 * BDAT bytes to the transaction, and hands the finished message to
 * ops->store. While the store is in progress the session reads nothing more;
 * smtpd_session_stored() sends the reply and goes on with what is buffered.
 *
 * States and the functions that move them (smtpd_enter is the only writer
 * of s->state; smtpd_moves[] lists every transition it allows):
 *   PROXY -(no PROXY protocol: smtpd_session_new; the header read and the
 *        client admitted: smtpd_proxy_read)-> GREET; a bad, late or
 *        missing header -> CLOSING without a reply
 *   GREET -(HELO/EHLO: smtpd_cmd_helo)-> IDLE -(MAIL)-> MAIL -(RCPT)-> RCPT
 *   MAIL|RCPT -(RCPT that ops->verify must answer)-> VERIFY
 *        -(smtpd_session_verified)-> RCPT (taken), or back (refused)
 *   RCPT -(DATA)-> DATA -(end of data: smtpd_data_end)-> STORE
 *   any but DATA, STORE -(BDAT)-> BDAT -(chunk read: smtpd_bdat_end)-> RCPT,
 *        or STORE when the chunk was LAST, or back where it came from when
 *        the BDAT was refused (its chunk is still read)
 *   STORE -(smtpd_session_stored)-> IDLE
 *   any -(QUIT, timeout, too many errors, shutdown, a check's 421,
 *         disconnect)-> CLOSING -> freed (smtpd_session_free)
 *   RSET, HELO/EHLO and a rejected message drop the transaction -> IDLE.
 *   IDLE -(STARTTLS, tls.c: 220, s->bev becomes the TLS filter;
 *          smtpd_session_restart)-> GREET, in TLS for the rest of it
 *   IDLE -(AUTH, auth.c: smtpd_cmd_auth)-> AUTH -(235, 535, 501:
 *          smtpd_auth_end)-> IDLE; -(421 after too many failures)-> CLOSING
 *   A session of a tls_listen port starts in TLS (tls.c smtpd_tls_implicit).
 * CLOSING is terminal: smtpd_enter refuses to leave it, so a reject that
 * closed the session (max_errors) is not undone by the reset that follows
 * it, and nothing after the 421 is read, executed or answered.
 *
 * Test-sink hooks (struct smtpd_ops): replied sees each reply's code,
 * no_received stores the data without our Received: header,
 * reply_delay_ms holds each batch of replies (EV_WRITE off, a timer turns
 * it back on), and a check's SMTPD_CHECK_DROP closes without a reply (at
 * DATA: once data bytes arrive).
 *
 * Invariants
 *  1. The 250 that ends DATA or BDAT LAST is sent only from
 *     smtpd_session_stored() with SPOOL_OK: after the store said durable.
 *  2. A session is freed only once nothing uses it. Every entry into it
 *     holds it (smtpd_hold): libevent's callbacks (read, write, event, the
 *     reply delay; tls.c's flush), which a TLS filter also runs from
 *     inside our own writes and enables, and the store until it answers.
 *     smtpd_session_free while held only marks it (CLOSING, s->gone: the
 *     frames up the stack find it CLOSING and stop), and the last
 *     smtpd_release frees it. That is the one free path.
 *  3. Once CLOSING, no input is read and no reply but the closing one is
 *     queued; the session is freed once that reply is out (or its write
 *     timeout fires), which releases its fd and its per-address slot.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "log/log.h"
#include "smtpd/smtpd_int.h"
#include "util/util.h"

static void smtpd_session_read(struct bufferevent *bev, void *arg);
static int smtpd_session_input(struct smtpd_session *s);
static void smtpd_session_destroy(struct smtpd_session *s, const char *why);
static void smtpd_session_event(struct bufferevent *bev, short what, void *arg);
static void smtpd_session_write(struct bufferevent *bev, void *arg);
static void smtpd_tx_reset(struct smtpd_session *s);

#define SMTPD_IDS(s) \
	(&(struct log_ids){ (s)->icid, 0, (s)->tx.mid, -1 })

static const char *const smtpd_state_names[] = {
	[SMTPD_ST_PROXY] = "PROXY", [SMTPD_ST_GREET] = "GREET",
	[SMTPD_ST_IDLE] = "IDLE",
	[SMTPD_ST_MAIL] = "MAIL", [SMTPD_ST_RCPT] = "RCPT",
	[SMTPD_ST_VERIFY] = "VERIFY",
	[SMTPD_ST_DATA] = "DATA", [SMTPD_ST_BDAT] = "BDAT",
	[SMTPD_ST_STORE] = "STORE", [SMTPD_ST_AUTH] = "AUTH",
	[SMTPD_ST_CLOSING] = "CLOSING",
};

#define B(st) (1u << SMTPD_ST_##st)
/* The states each state may move to (the file header draws them). */
static const unsigned smtpd_moves[] = {
	[SMTPD_ST_PROXY] = B(GREET) | B(CLOSING),
	[SMTPD_ST_GREET] = B(GREET) | B(IDLE) | B(BDAT) | B(CLOSING),
	[SMTPD_ST_IDLE] = B(GREET) | B(IDLE) | B(MAIL) | B(BDAT) | B(AUTH) |
	    B(CLOSING),
	[SMTPD_ST_MAIL] = B(IDLE) | B(RCPT) | B(VERIFY) | B(BDAT) | B(CLOSING),
	[SMTPD_ST_RCPT] = B(IDLE) | B(RCPT) | B(VERIFY) | B(DATA) | B(BDAT) |
	    B(CLOSING),
	[SMTPD_ST_VERIFY] = B(MAIL) | B(RCPT) | B(IDLE) | B(CLOSING),
	[SMTPD_ST_DATA] = B(IDLE) | B(STORE) | B(CLOSING),
	[SMTPD_ST_BDAT] = B(GREET) | B(IDLE) | B(MAIL) | B(RCPT) | B(STORE) |
	    B(CLOSING),
	[SMTPD_ST_STORE] = B(IDLE) | B(CLOSING),
	[SMTPD_ST_AUTH] = B(IDLE) | B(CLOSING),
	[SMTPD_ST_CLOSING] = 0,
};
#undef B

int
smtpd_enter(struct smtpd_session *s, enum smtpd_state to)
{
	enum smtpd_state from = s->state;

	if (from == SMTPD_ST_CLOSING)
		return 0;
	if (SL_NEVER(!(smtpd_moves[from] & (1u << to))))
		return 0;
	if (from != to && log_enabled(LOG_DEBUG))
		log_debug("ICID %llu state %s -> %s", (unsigned long long)s->icid,
		    smtpd_state_names[from], smtpd_state_names[to]);
	s->state = to;
	return 1;
}

/*
 * Time out reading after secs (and writing too when write is set: a client
 * that reads nothing). The command and data timeouts of [server].
 */
static void
smtpd_timeouts(struct smtpd_session *s, int64_t secs, int write)
{
	struct timeval tv = { (time_t)secs, 0 };

	bufferevent_set_timeouts(s->bev, &tv, write ? &tv : NULL);
}

/* ops.reply_delay_ms passed: let the held replies go. */
static void
smtpd_reply_release(evutil_socket_t fd, short what, void *arg)
{
	struct smtpd_session *s = arg;

	if (s->gone != NULL)
		return;
	smtpd_hold(s);
	/* a TLS filter writes, and may call back, from inside the enable */
	bufferevent_enable(s->bev, EV_WRITE);
	smtpd_release(s);
}

void
smtpd_reply(struct smtpd_session *s, const char *fmt, ...)
{
	struct smtpd_server *srv = s->srv;
	struct evbuffer *out = bufferevent_get_output(s->bev);
	char line[1024];
	va_list ap;
	int n;

	/* invariant 3: the closing reply was the last one */
	if (s->state == SMTPD_ST_CLOSING)
		return;
	/* formatted here first so ops.replied can see the code */
	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n >= 0 && (size_t)n < sizeof(line)) {
		evbuffer_add(out, line, (size_t)n);
	} else {
		va_start(ap, fmt);
		evbuffer_add_vprintf(out, fmt, ap);
		va_end(ap);
	}
	evbuffer_add(out, "\r\n", 2);
	if (srv->ops.replied != NULL && n >= 3)
		srv->ops.replied(srv->ops.arg, s, (line[0] - '0') * 100 +
		    (line[1] - '0') * 10 + (line[2] - '0'));
	/* a test sink's slow server: the first reply of a batch starts it */
	if (srv->ops.reply_delay_ms > 0) {
		unsigned ms = srv->ops.reply_delay_ms;
		if (s->delay_ev == NULL)
			s->delay_ev = evtimer_new(srv->base, smtpd_reply_release,
			    s);
		if (!evtimer_pending(s->delay_ev, NULL)) {
			struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
			bufferevent_disable(s->bev, EV_WRITE);
			evtimer_add(s->delay_ev, &tv);
		}
	}
}

void
smtpd_tempfail(struct smtpd_session *s, const char *cmd, const char *reply)
{
	smtpd_reply(s, "%s", reply);
	s->srv->stats.rejected++;
	log_ev(LOG_INFO, SMTPD_IDS(s), "rejected", "cmd", cmd, "reply", reply,
	    NULL);
}

void
smtpd_reject(struct smtpd_session *s, const char *cmd, const char *fmt, ...)
{
	char reply[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reply, sizeof(reply), fmt, ap);
	va_end(ap);
	smtpd_reply(s, "%s", reply);
	s->srv->stats.rejected++;
	log_ev(LOG_INFO, SMTPD_IDS(s), "rejected", "cmd", cmd, "reply", reply,
	    NULL);
	if (++s->errors >= s->srv->conf->server_max_errors &&
	    s->state != SMTPD_ST_CLOSING)
		smtpd_session_close(s, "421 4.7.0 Too many errors, closing",
		    "too many errors");
}

int
smtpd_addr_text(const struct sockaddr *sa, char *buf, size_t len)
{
	char host[INET6_ADDRSTRLEN];
	int port = 0;

	host[0] = '\0';
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const void *)sa;
		inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
		port = ntohs(sin->sin_port);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const void *)sa;
		inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
		port = ntohs(sin6->sin6_port);
		/* show an IPv4-mapped client as IPv4 */
		if (strncmp(host, "::ffff:", 7) == 0 && strchr(host + 7, '.'))
			memmove(host, host + 7, strlen(host + 7) + 1);
	} else {
		sl_strlcpy(host, "unix", sizeof(host));
	}
	sl_strlcpy(buf, host, len);
	return port;
}

/* The client is sa: the address every check, limit and log line uses. */
static void
smtpd_session_set_peer(struct smtpd_session *s, const struct sockaddr *sa)
{
	size_t salen = sa->sa_family == AF_INET ? sizeof(struct sockaddr_in) :
	    sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) :
	    sizeof(s->peer);

	if ((const void *)sa != (void *)&s->peer)
		memcpy(&s->peer, sa, salen);
	s->peer_port = smtpd_addr_text(sa, s->peer_text, sizeof(s->peer_text));
	s->trusted = conf_net_match(s->srv->conf->trusted,
	    s->srv->conf->ntrusted, sa);
}

/* The one line that opens a connection's story in the log. */
static void
smtpd_session_log_new(struct smtpd_session *s)
{
	char portbuf[16];

	snprintf(portbuf, sizeof(portbuf), "%d", s->peer_port);
	log_ev(LOG_INFO, &(struct log_ids){ s->icid, 0, 0, -1 },
	    "New SMTP connection", "address", s->peer_text, "port", portbuf,
	    "trusted", s->trusted ? "yes" : "no",
	    s->proxy_text[0] ? "proxy" : NULL, s->proxy_text, NULL);
}

struct smtpd_session *
smtpd_session_new(struct smtpd_server *srv, int fd, const struct sockaddr *sa,
    socklen_t salen, int proxied)
{
	struct smtpd_session *s = xcalloc(1, sizeof(*s));

	s->srv = srv;
	s->icid = ++srv->next_icid;
	memcpy(&s->peer, sa, salen < sizeof(s->peer) ? salen : sizeof(s->peer));
	smtpd_session_set_peer(s, (struct sockaddr *)&s->peer);
	if (proxied)	/* the client is named by the header to come */
		sl_strlcpy(s->proxy_text, s->peer_text, sizeof(s->proxy_text));
	s->bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (s->bev == NULL) {
		close(fd);
		free(s);
		return NULL;
	}
	smtpd_session_setcb(s);
	smtpd_timeouts(s, proxied ? srv->conf->server_proxy_timeout :
	    srv->conf->server_command_timeout, 0);
	/* a test sink that delays replies holds them with the write event */
	s->direct = srv->ops.reply_delay_ms == 0;
	if (s->direct)	/* a socket bufferevent starts with EV_WRITE on */
		bufferevent_disable(s->bev, EV_WRITE);
	bufferevent_enable(s->bev, s->direct ? EV_READ : EV_READ | EV_WRITE);
	if (!proxied) {
		smtpd_enter(s, SMTPD_ST_GREET);
		smtpd_session_log_new(s);
	}
	return s;
}

void
smtpd_session_setcb(struct smtpd_session *s)
{
	bufferevent_setcb(s->bev, smtpd_session_read, smtpd_session_write,
	    smtpd_session_event, s);
}

/* Say hello, unless a check refuses the client. */
static void
smtpd_session_greet(struct smtpd_session *s)
{
	struct smtpd_server *srv = s->srv;
	char reply[512];
	enum smtpd_check rc = SMTPD_CHECK_OK;

	if (srv->ops.check)
		rc = srv->ops.check(srv->ops.arg, s, SMTPD_STAGE_CONNECT,
		    s->peer_text, reply, sizeof(reply));
	if (rc == SMTPD_CHECK_CLOSE) {
		smtpd_session_close(s, reply, "refused at connect");
		return;
	}
	if (rc == SMTPD_CHECK_DROP) {
		smtpd_session_close(s, NULL, "dropped at connect by policy");
		return;
	}
	if (rc == SMTPD_CHECK_REPLY)
		smtpd_reply(s, "%s", reply);	/* e.g. 554: only QUIT works */
	else
		smtpd_reply(s, "220 %s ESMTP %s", srv->conf->server_hostname,
		    srv->ops.product ? srv->ops.product : "sluice");
	smtpd_flush(s);
}

void
smtpd_session_start(struct smtpd_session *s)
{
	/* behind a balancer the greeting waits for the PROXY header */
	if (s->state == SMTPD_ST_PROXY)
		return;
	smtpd_hold(s);
	smtpd_session_greet(s);
	smtpd_release(s);
}

/*
 * SMTPD_ST_PROXY: parse what came so far as the PROXY header; 1 if the
 * session moved on (to GREET, or CLOSING), 0 if more input is needed.
 * The client's own bytes behind the header stay in the buffer for GREET.
 */
static int
smtpd_proxy_read(struct smtpd_session *s, struct evbuffer *in)
{
	const struct sl_conf *c = s->srv->conf;
	size_t n = evbuffer_get_length(in);
	struct smtpd_proxy_hdr h;
	char reply[300];

	if (n > SMTPD_PROXY_MAX)
		n = SMTPD_PROXY_MAX;
	switch (smtpd_proxy_parse(evbuffer_pullup(in, (ssize_t)n), n,
	    (enum smtpd_proxy_mode)c->proxy_mode, &h)) {
	case SMTPD_PROXY_MORE:
		return 0;
	case SMTPD_PROXY_BAD:
		log_ev(LOG_INFO, &(struct log_ids){ s->icid, 0, 0, -1 },
		    "PROXY header refused", "proxy", s->proxy_text, "reason",
		    h.why, NULL);
		smtpd_session_close(s, NULL, "bad PROXY header");
		return 1;
	case SMTPD_PROXY_DONE:
		break;
	}
	evbuffer_drain(in, h.len);
	/* v1 UNKNOWN, v2 LOCAL (health checks): the socket's own peer */
	if (!h.local)
		smtpd_session_set_peer(s, (struct sockaddr *)&h.src);
	smtpd_session_log_new(s);
	if (smtpd_server_admit(s->srv, s, reply, sizeof(reply)) != 0) {
		smtpd_session_close(s, reply, "refused at connect");
		return 1;
	}
	smtpd_enter(s, SMTPD_ST_GREET);
	smtpd_timeouts(s, c->server_command_timeout, 0);
	smtpd_session_greet(s);
	return 1;
}

void
smtpd_hold(struct smtpd_session *s)
{
	s->inflight++;
}

int
smtpd_release(struct smtpd_session *s)
{
	if (SL_NEVER(s->inflight == 0) || --s->inflight > 0 ||
	    s->gone == NULL)
		return s->gone == NULL;
	smtpd_session_destroy(s, s->gone);
	return 0;
}

void
smtpd_session_free(struct smtpd_session *s, const char *why)
{
	if (s->gone != NULL)
		return;		/* freed already: the first reason stands */
	smtpd_enter(s, SMTPD_ST_CLOSING);
	if (s->inflight > 0) {
		/* invariant 2: used up the stack, or the store owes an answer */
		s->gone = xstrdup(why);
		bufferevent_disable(s->bev, EV_READ | EV_WRITE);
		return;
	}
	smtpd_session_destroy(s, why);
}

/* The one place a session's memory goes (invariant 2). */
static void
smtpd_session_destroy(struct smtpd_session *s, const char *why)
{
	struct smtpd_server *srv = s->srv;

	log_ev(LOG_INFO, &(struct log_ids){ s->icid, 0, 0, -1 },
	    "connection closed", "reason", why, NULL);
	if (srv->ops.closed)
		srv->ops.closed(srv->ops.arg, s);
	smtpd_tx_reset(s);
	if (s->delay_ev != NULL)
		event_free(s->delay_ev);
	smtpd_auth_session_free(s);
	smtpd_tls_session_free(s);
	bufferevent_free(s->bev);
	free(s->helo);
	free(s->auth_user);
	free(s->gone);
	smtpd_server_session_gone(srv, s);
	free(s);
}

void
smtpd_flush(struct smtpd_session *s)
{
	struct evbuffer *out;

	if (!s->direct || s->tls)
		return;
	out = bufferevent_get_output(s->bev);
	if (evbuffer_get_length(out) == 0)
		return;
	/* the bufferevent freezes its output's front; it unfreezes it around
	 * its own writes, and so do we. An error (EPIPE) is left for the
	 * bufferevent to find and report. */
	evbuffer_unfreeze(out, 1);
	(void)evbuffer_write(out, bufferevent_getfd(s->bev));
	evbuffer_freeze(out, 1);
	if (evbuffer_get_length(out) > 0)
		bufferevent_enable(s->bev, EV_WRITE);
}

/* Bytes of replies not yet written: ours and, under TLS, the socket's. */
static size_t
smtpd_out_pending(struct smtpd_session *s)
{
	struct bufferevent *under;
	size_t n = evbuffer_get_length(bufferevent_get_output(s->bev));

	if (s->tls && (under = bufferevent_get_underlying(s->bev)) != NULL)
		n += evbuffer_get_length(bufferevent_get_output(under));
	return n;
}

/*
 * 1 if the client lets more than SMTPD_OUT_MAX of replies wait: then stop
 * reading (its commands stay in the kernel, which closes its TCP window)
 * until the write callback sees them drain. The socket may take what is
 * queued, so write first.
 */
static int
smtpd_out_full(struct smtpd_session *s)
{
	if (smtpd_out_pending(s) <= SMTPD_OUT_MAX)
		return 0;
	smtpd_flush(s);
	if (smtpd_out_pending(s) <= SMTPD_OUT_MAX)
		return 0;
	if (!s->out_full && log_enabled(LOG_DEBUG))
		log_debug("ICID %llu replies not read: reading paused",
		    (unsigned long long)s->icid);
	s->out_full = 1;
	bufferevent_disable(s->bev, EV_READ);
	/* the read timeout sleeps with reading: a client that reads nothing
	 * for as long meets the write timeout instead */
	smtpd_timeouts(s, s->srv->conf->server_command_timeout, 1);
	return 1;
}

/* Read again if the state reads and the replies are not backed up. */
static void
smtpd_session_want_read(struct smtpd_session *s)
{
	if (!s->out_full && s->state != SMTPD_ST_STORE &&
	    s->state != SMTPD_ST_VERIFY && s->state != SMTPD_ST_CLOSING &&
	    (s->state != SMTPD_ST_AUTH || smtpd_auth_reading(s)))
		bufferevent_enable(s->bev, EV_READ);
}

/* Replies were written (the write callback). */
static void
smtpd_session_written(struct smtpd_session *s)
{
	if (s->state == SMTPD_ST_CLOSING && smtpd_session_flushed(s)) {
		smtpd_session_free(s, "closed");
		return;
	}
	/* the remainder is out: back to writing from smtpd_flush() */
	if (s->direct && !s->tls)
		bufferevent_disable(s->bev, EV_WRITE);
	/* the client read its replies: go on with the commands buffered,
	 * then read (the filter may call our read callback from enable) */
	if (s->out_full && !s->in_read &&
	    smtpd_out_pending(s) <= SMTPD_OUT_MAX) {
		s->out_full = 0;
		smtpd_timeouts(s, s->srv->conf->server_command_timeout, 0);
		if (smtpd_session_input(s))
			smtpd_session_want_read(s);
	}
}

static void
smtpd_session_write(struct bufferevent *bev, void *arg)
{
	struct smtpd_session *s = arg;

	if (s->gone != NULL)
		return;
	smtpd_hold(s);
	smtpd_session_written(s);
	smtpd_release(s);
}

void
smtpd_session_close(struct smtpd_session *s, const char *reply,
    const char *why)
{
	if (s->state == SMTPD_ST_CLOSING)
		return;		/* the first reason and reply stand */
	if (reply != NULL)
		smtpd_reply(s, "%s", reply);
	log_ev(LOG_INFO, SMTPD_IDS(s), "closing", "reason", why, NULL);
	smtpd_tx_reset(s);
	/* an AUTH check or delay in progress ends with the session */
	smtpd_auth_session_free(s);
	smtpd_enter(s, SMTPD_ST_CLOSING);
	bufferevent_disable(s->bev, EV_READ);
	/* a write timeout bounds a client that never reads its last reply */
	bufferevent_set_timeouts(s->bev, NULL, &(struct timeval){ 10, 0 });
	if (s->in_read)
		return;		/* smtpd_session_input flushes and frees */
	smtpd_flush(s);
	if (smtpd_session_flushed(s))
		smtpd_session_free(s, why);
}

int
smtpd_session_idle(const struct smtpd_session *s)
{
	/* VERIFY holds no message yet: its check is cancelled with it;
	 * so is AUTH's password check */
	return s->state == SMTPD_ST_PROXY || s->state == SMTPD_ST_GREET ||
	    s->state == SMTPD_ST_IDLE || s->state == SMTPD_ST_MAIL ||
	    s->state == SMTPD_ST_RCPT || s->state == SMTPD_ST_VERIFY ||
	    s->state == SMTPD_ST_AUTH;
}

/* The bufferevent's news: handshake done, timeout, EOF or error. */
static void
smtpd_session_news(struct smtpd_session *s, short what)
{
	char why[256];

	if (what & BEV_EVENT_CONNECTED) {
		smtpd_tls_established(s);
		return;
	}
	if (what & BEV_EVENT_TIMEOUT) {
		if (s->state == SMTPD_ST_CLOSING) {
			smtpd_session_free(s, "write timeout");
			return;
		}
		if (s->state == SMTPD_ST_PROXY) {
			smtpd_session_free(s, "no PROXY header in time");
			return;
		}
		char reply[300];
		snprintf(reply, sizeof(reply),
		    "421 4.4.2 %s Error: timeout exceeded",
		    s->srv->conf->server_hostname);
		bufferevent_enable(s->bev, EV_WRITE);
		smtpd_session_close(s, reply, "timeout");
		return;
	}
	if (what & BEV_EVENT_EOF)
		smtpd_session_free(s, s->state == SMTPD_ST_CLOSING ?
		    "closed" : "client disconnected");
	else if (what & BEV_EVENT_ERROR)
		smtpd_session_free(s, s->tls ? smtpd_tls_error(s, why,
		    sizeof(why)) : evutil_socket_error_to_string(
		    EVUTIL_SOCKET_ERROR()));
}

static void
smtpd_session_event(struct bufferevent *bev, short what, void *arg)
{
	struct smtpd_session *s = arg;

	if (s->gone != NULL)
		return;
	smtpd_hold(s);
	smtpd_session_news(s, what);
	smtpd_release(s);
}

/* ---- the transaction ---- */

static void
smtpd_tx_reset(struct smtpd_session *s)
{
	struct smtpd_tx *tx = &s->tx;

	/* a recipient still being checked goes with its transaction */
	if (tx->verify != NULL) {
		s->srv->ops.verify_cancel(s->srv->ops.arg, tx->verify);
		tx->verify = NULL;
		free(tx->rcpts[tx->nrcpt].addr);
		free(tx->rcpts[tx->nrcpt].orcpt);
	}
	smtpd_body_release(s);
	free(tx->sender);
	free(tx->envid);
	for (size_t i = 0; i < tx->nrcpt; i++) {
		free(tx->rcpts[i].addr);
		free(tx->rcpts[i].orcpt);
	}
	free(tx->rcpts);
	memset(tx, 0, sizeof(*tx));
}

/* Drop the transaction and go back to IDLE (RSET, HELO, a rejection). */
static void
smtpd_session_reset(struct smtpd_session *s)
{
	smtpd_tx_reset(s);
	if (s->state != SMTPD_ST_GREET)
		smtpd_enter(s, SMTPD_ST_IDLE);
}

/* Ask ops->check; 1 if a reply was sent and the command must stop. */
static int
smtpd_check(struct smtpd_session *s, enum smtpd_stage stage, const char *param,
    const char *cmd)
{
	struct smtpd_server *srv = s->srv;
	char reply[512];
	enum smtpd_check rc;

	if (srv->ops.check == NULL)
		return 0;
	rc = srv->ops.check(srv->ops.arg, s, stage, param, reply, sizeof(reply));
	if (rc == SMTPD_CHECK_OK)
		return 0;
	if (rc == SMTPD_CHECK_CLOSE) {
		smtpd_session_close(s, reply, "closed by policy");
		return 1;
	}
	if (rc == SMTPD_CHECK_DROP) {
		/* at DATA: 354 goes out, the first data bytes drop it */
		if (stage == SMTPD_STAGE_DATA) {
			s->tx.drop_in_data = 1;
			return 0;
		}
		smtpd_session_close(s, NULL, "dropped by policy");
		return 1;
	}
	smtpd_reject(s, cmd, "%s", reply);
	return 1;
}

static const char *
smtpd_perr_reply(enum smtpd_perr e)
{
	switch (e) {
	case SMTPD_P_BADADDR:
		return "501 5.1.3 Bad recipient address syntax";
	case SMTPD_P_BADSENDER:
		return "501 5.1.7 Bad sender address syntax";
	case SMTPD_P_UNKPARAM:
		return "555 5.5.4 Unsupported parameter";
	case SMTPD_P_BADPARAM:
		return "501 5.5.4 Invalid parameter value";
	case SMTPD_P_NEEDUTF8:
		return "553 5.6.7 Non-ASCII address requires SMTPUTF8";
	case SMTPD_P_SYNTAX:
	default:
		return "501 5.5.4 Syntax error in parameters";
	}
}

/* ---- commands ---- */

static void
smtpd_cmd_helo(struct smtpd_session *s, char *arg, int esmtp)
{
	const struct sl_conf *c = s->srv->conf;
	const char *verb = esmtp ? "EHLO" : "HELO";

	if (*arg == '\0' || !smtpd_helo_valid(arg)) {
		smtpd_reject(s, verb, "501 5.5.4 Syntax: %s hostname", verb);
		return;
	}
	if (smtpd_check(s, SMTPD_STAGE_HELO, arg, verb))
		return;
	free(s->helo);
	s->helo = xstrdup(arg);
	s->esmtp = esmtp;
	smtpd_tx_reset(s);
	smtpd_enter(s, SMTPD_ST_IDLE);
	if (!esmtp) {
		smtpd_reply(s, "250 %s", c->server_hostname);
		return;
	}
	/* RFC 3207 4.2: not offered again once in TLS; AUTH only in TLS */
	smtpd_reply(s, "250-%s\r\n250-PIPELINING\r\n250-SIZE %lld\r\n"
	    "250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n"
	    "250-DSN\r\n%s%s250 CHUNKING", c->server_hostname,
	    (long long)c->server_max_message_size,
	    s->srv->tls_ctx != NULL && !s->tls ? "250-STARTTLS\r\n" : "",
	    smtpd_auth_offered(s) ? "250-AUTH PLAIN LOGIN\r\n" : "");
}

static void
smtpd_cmd_mail(struct smtpd_session *s, char *arg)
{
	const struct sl_conf *c = s->srv->conf;
	struct smtpd_mail_args m;
	enum smtpd_perr e;
	char sizebuf[24];

	if (s->state == SMTPD_ST_GREET) {
		smtpd_reject(s, "MAIL", "503 5.5.1 Error: send HELO/EHLO first");
		return;
	}
	if (s->state != SMTPD_ST_IDLE) {
		smtpd_reject(s, "MAIL", "503 5.5.1 Error: nested MAIL command");
		return;
	}
	if (smtpd_auth_required(s))
		return;
	if ((e = smtpd_parse_mail(arg, &m)) != SMTPD_P_OK) {
		smtpd_reject(s, "MAIL", "%s", smtpd_perr_reply(e));
		return;
	}
	if (!s->esmtp && (m.size || m.body || m.smtputf8 || m.ret || m.envid)) {
		smtpd_reject(s, "MAIL", "555 5.5.4 ESMTP parameters need EHLO");
		return;
	}
	if (m.body == SMTPD_BODY_BINARYMIME) {
		smtpd_reject(s, "MAIL", "555 5.5.4 BINARYMIME is not offered");
		return;
	}
	if (m.size > (uint64_t)c->server_max_message_size) {
		smtpd_reject(s, "MAIL", "552 5.3.4 Message size exceeds fixed "
		    "maximum message size");
		return;
	}
	if (smtpd_check(s, SMTPD_STAGE_MAIL, m.addr, "MAIL"))
		return;
	s->tx.mid = s->srv->ops.mid_next(s->srv->ops.arg);
	s->tx.sender = xstrdup(m.addr);
	s->tx.envid = m.envid ? xstrdup(m.envid) : NULL;
	s->tx.mail = m;
	s->tx.mail.addr = NULL;
	s->tx.mail.envid = NULL;
	s->tx.start_ms = sl_mono_ms();
	smtpd_enter(s, SMTPD_ST_MAIL);
	s->srv->stats.transactions++;
	snprintf(sizebuf, sizeof(sizebuf), "%llu", (unsigned long long)m.size);
	log_ev(LOG_INFO, SMTPD_IDS(s), "From", "sender", s->tx.sender,
	    "size", sizebuf, NULL);
	smtpd_reply(s, "250 2.1.0 Ok");
}

static void smtpd_rcpt_take(struct smtpd_session *s, const char *for_addr);

static void
smtpd_cmd_rcpt(struct smtpd_session *s, char *arg)
{
	struct smtpd_tx *tx = &s->tx;
	struct smtpd_rcpt_args r;
	struct spool_rcpt *sr;
	enum smtpd_perr e;
	enum smtpd_rcpt_policy p;

	if (s->state != SMTPD_ST_MAIL && s->state != SMTPD_ST_RCPT) {
		smtpd_reject(s, "RCPT", "503 5.5.1 Error: need MAIL command");
		return;
	}
	if ((e = smtpd_parse_rcpt(arg, tx->mail.smtputf8, &r)) != SMTPD_P_OK) {
		smtpd_reject(s, "RCPT", "%s", smtpd_perr_reply(e));
		return;
	}
	if (tx->nrcpt >= (size_t)s->srv->conf->server_max_recipients) {
		smtpd_reject(s, "RCPT", "452 4.5.3 Too many recipients");
		return;
	}
	if ((p = smtpd_policy_rcpt(s, r.addr)) == SMTPD_RCPT_ROUTED) {
		smtpd_reject(s, "RCPT", "550 5.7.1 <%s>: Sender-specified "
		    "routing is not allowed", r.addr);
		return;
	}
	if (p == SMTPD_RCPT_RELAY) {
		smtpd_reject(s, "RCPT", "554 5.7.1 <%s>: Relay access denied",
		    r.addr);
		return;
	}
	if (smtpd_check(s, SMTPD_STAGE_RCPT, r.addr, "RCPT"))
		return;
	if (tx->nrcpt == tx->cap) {
		tx->cap = tx->cap ? tx->cap * 2 : 4;
		tx->rcpts = xrealloc(tx->rcpts, tx->cap * sizeof(*tx->rcpts));
	}
	sr = &tx->rcpts[tx->nrcpt];
	memset(sr, 0, sizeof(*sr));
	sr->rid = (uint32_t)tx->nrcpt;
	sr->notify = (uint8_t)r.notify;
	sr->orcpt = r.orcpt ? xstrdup(r.orcpt) : NULL;
	if (p == SMTPD_RCPT_POSTMASTER) {
		/* policy.c invariant 1: what the client chose gets no DSN */
		sr->addr = xstrdup(s->srv->postmaster);
		if (sr->orcpt == NULL)
			sr->orcpt = smtpd_policy_orcpt(r.addr);
		if (!s->trusted)
			sr->notify = SPOOL_NOTIFY_NEVER;
	} else {
		sr->addr = xstrdup(r.addr);
	}
	sr->state = SPOOL_RCPT_QUEUED;
	if (p != SMTPD_RCPT_POSTMASTER && s->srv->ops.verify != NULL &&
	    (tx->verify = s->srv->ops.verify(s->srv->ops.arg, s,
	    sr->addr)) != NULL) {
		/* rcpts[nrcpt] waits for smtpd_session_verified */
		smtpd_enter(s, SMTPD_ST_VERIFY);
		bufferevent_disable(s->bev, EV_READ);
		return;
	}
	smtpd_rcpt_take(s, p == SMTPD_RCPT_POSTMASTER ? r.addr : NULL);
}

/* rcpts[nrcpt] is in: log it, count it, 250. for: what the client named. */
static void
smtpd_rcpt_take(struct smtpd_session *s, const char *for_addr)
{
	struct smtpd_tx *tx = &s->tx;

	log_ev(LOG_INFO, &(struct log_ids){ s->icid, 0, tx->mid,
	    (int64_t)tx->nrcpt }, "To", "rcpt", tx->rcpts[tx->nrcpt].addr,
	    for_addr != NULL ? "for" : NULL, for_addr, NULL);
	tx->nrcpt++;
	smtpd_enter(s, SMTPD_ST_RCPT);
	smtpd_reply(s, "250 2.1.5 Ok");
}

void
smtpd_session_verified(struct smtpd_session *s, int code, const char *reply)
{
	struct smtpd_tx *tx = &s->tx;

	if (SL_NEVER(s->state != SMTPD_ST_VERIFY || tx->verify == NULL))
		return;
	tx->verify = NULL;
	/* invariant 2: an entry from outside libevent's callbacks */
	smtpd_hold(s);
	/* a reject that closes the session (max_errors) must not free it
	 * here: smtpd_session_input does, once the 421 is out */
	s->in_read = 1;
	if (code / 100 == 2) {
		smtpd_rcpt_take(s, NULL);
	} else {
		free(tx->rcpts[tx->nrcpt].addr);
		free(tx->rcpts[tx->nrcpt].orcpt);
		smtpd_enter(s, tx->nrcpt > 0 ? SMTPD_ST_RCPT : SMTPD_ST_MAIL);
		if (code / 100 == 4)
			smtpd_tempfail(s, "RCPT", reply);
		else
			smtpd_reject(s, "RCPT", "%s", reply);
	}
	s->in_read = 0;
	smtpd_session_resume(s);
	smtpd_release(s);
}

static void
smtpd_cmd_data(struct smtpd_session *s, char *arg)
{
	if (*arg != '\0') {
		smtpd_reject(s, "DATA", "501 5.5.4 Syntax: DATA");
		return;
	}
	if (s->state != SMTPD_ST_RCPT || s->tx.bdat_seen) {
		smtpd_reject(s, "DATA", s->state == SMTPD_ST_MAIL ?
		    "503 5.5.1 Error: need RCPT command" :
		    s->tx.bdat_seen ? "503 5.5.1 Error: DATA after BDAT" :
		    "503 5.5.1 Error: need MAIL command");
		return;
	}
	if (smtpd_check(s, SMTPD_STAGE_DATA, NULL, "DATA"))
		return;
	if (smtpd_body_open(s, 0) != 0) {
		smtpd_tempfail(s, "DATA", SMTPD_INFLIGHT_REPLY);
		return;
	}
	smtpd_data_init(&s->tx.data, (uint64_t)s->srv->conf->server_max_message_size);
	smtpd_enter(s, SMTPD_ST_DATA);
	smtpd_timeouts(s, s->srv->conf->server_data_timeout, 0);
	smtpd_reply(s, "354 End data with <CR><LF>.<CR><LF>");
}

static void
smtpd_cmd_bdat(struct smtpd_session *s, char *arg)
{
	struct smtpd_tx *tx = &s->tx;
	uint64_t size;
	int last;

	if (smtpd_parse_bdat(arg, &size, &last) != SMTPD_P_OK) {
		/* without a size we cannot skip the chunk: close (RFC 3030 2) */
		smtpd_session_close(s, "501 5.5.4 Syntax: BDAT size [LAST]",
		    "bad BDAT syntax");
		return;
	}
	/* RFC 3030: the chunk follows whatever the reply; read it all */
	tx->bdat_left = size;
	tx->bdat_last = last;
	tx->bdat_fail = 0;
	if (s->state != SMTPD_ST_RCPT) {
		tx->bdat_fail = s->state == SMTPD_ST_MAIL ? 5031 : 5030;
	} else if (!tx->bdat_seen) {
		if (smtpd_check(s, SMTPD_STAGE_DATA, NULL, "BDAT")) {
			/* the reply is out; still swallow the chunk */
			tx->bdat_fail = -1;
		} else if (smtpd_body_open(s, 1) != 0) {
			tx->bdat_fail = 451;	/* no room: swallow the chunk */
		} else {
			tx->bdat_seen = 1;
		}
	}
	/* size <= max always; n > max - size cannot wrap as size + n can */
	if (tx->bdat_fail == 0 && size >
	    (uint64_t)s->srv->conf->server_max_message_size - tx->size)
		tx->bdat_fail = 552;
	/* a check's 421 closed the session: the chunk is not read */
	if (!smtpd_enter(s, SMTPD_ST_BDAT))
		return;
	smtpd_timeouts(s, s->srv->conf->server_data_timeout, 0);
	if (size == 0)
		smtpd_bdat_end(s);
}

static void
smtpd_cmd_rset(struct smtpd_session *s, char *arg)
{
	smtpd_session_reset(s);
	smtpd_reply(s, "250 2.0.0 Ok");
}

static void
smtpd_cmd_simple(struct smtpd_session *s, enum smtpd_cmd cmd, char *arg)
{
	switch (cmd) {
	case SMTPD_CMD_NOOP:
		smtpd_reply(s, "250 2.0.0 Ok");
		break;
	case SMTPD_CMD_VRFY:
		if (*arg == '\0')
			smtpd_reject(s, "VRFY", "501 5.5.4 Syntax: VRFY address");
		else
			smtpd_reply(s, "252 2.5.2 Cannot VRFY user, but will "
			    "accept message and attempt delivery");
		break;
	case SMTPD_CMD_EXPN:
		smtpd_reject(s, "EXPN", "502 5.5.1 EXPN not available");
		break;
	case SMTPD_CMD_HELP:
		smtpd_reply(s, "214-2.0.0 Commands: HELO EHLO MAIL RCPT DATA "
		    "BDAT\r\n214-2.0.0 RSET NOOP QUIT VRFY HELP\r\n"
		    "214 2.0.0 See RFC 5321");
		break;
	default:
		smtpd_reject(s, "-", "500 5.5.2 Error: command not recognized");
		break;
	}
}

/*
 * STARTTLS wrapped the connection: RFC 3207 4.2, forget what the client
 * said before (HELO, any transaction); it must say EHLO again.
 */
static void
smtpd_session_restart(struct smtpd_session *s)
{
	smtpd_tx_reset(s);
	free(s->helo);
	s->helo = NULL;
	s->esmtp = 0;
	s->discard_line = 0;
	smtpd_enter(s, SMTPD_ST_GREET);
	smtpd_session_setcb(s);
	smtpd_timeouts(s, s->srv->conf->server_command_timeout, 0);
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
}

/* One command line, without its line end. */
static void
smtpd_session_command(struct smtpd_session *s, char *line, size_t len)
{
	enum smtpd_cmd cmd;
	char *arg;

	if (memchr(line, '\0', len) != NULL || !sl_utf8_valid(line, len)) {
		smtpd_reject(s, "-", "501 5.5.2 Invalid command line: "
		    "not valid UTF-8");
		return;
	}
	if (s->state == SMTPD_ST_AUTH) {	/* a SASL response */
		smtpd_auth_line(s, line);
		return;
	}
	cmd = smtpd_parse_verb(line, &arg);
	switch (cmd) {
	case SMTPD_CMD_AUTH:
		smtpd_cmd_auth(s, arg);
		break;
	case SMTPD_CMD_HELO:
		smtpd_cmd_helo(s, arg, 0);
		break;
	case SMTPD_CMD_EHLO:
		smtpd_cmd_helo(s, arg, 1);
		break;
	case SMTPD_CMD_MAIL:
		smtpd_cmd_mail(s, arg);
		break;
	case SMTPD_CMD_RCPT:
		smtpd_cmd_rcpt(s, arg);
		break;
	case SMTPD_CMD_DATA:
		smtpd_cmd_data(s, arg);
		break;
	case SMTPD_CMD_BDAT:
		smtpd_cmd_bdat(s, arg);
		break;
	case SMTPD_CMD_RSET:
		smtpd_cmd_rset(s, arg);
		break;
	case SMTPD_CMD_QUIT:
		smtpd_session_close(s, "221 2.0.0 Bye", "quit");
		break;
	case SMTPD_CMD_STARTTLS:
		if (smtpd_cmd_starttls(s, arg))
			smtpd_session_restart(s);
		break;
	default:
		smtpd_cmd_simple(s, cmd, arg);
		break;
	}
}

/* ---- the end of a message ---- */

/* Build the spool message from the transaction and hand it to the store. */
static void
smtpd_store(struct smtpd_session *s)
{
	struct smtpd_server *srv = s->srv;
	struct smtpd_tx *tx = &s->tx;
	struct spool_msg *msg;

	if (smtpd_check(s, SMTPD_STAGE_EOM, NULL, "DATA")) {
		smtpd_session_reset(s);
		return;
	}
	msg = xcalloc(1, sizeof(*msg));
	msg->mid = tx->mid;
	msg->arrival = sl_now_us() / 1000000;
	msg->sender = tx->sender;
	msg->envid = tx->envid;
	msg->ret = (uint8_t)tx->mail.ret;
	msg->flags = (tx->mail.body == SMTPD_BODY_8BITMIME ? SPOOL_F_8BITMIME : 0) |
	    (tx->mail.smtputf8 ? SPOOL_F_SMTPUTF8 : 0);
	msg->client_addr = xstrdup(s->peer_text);
	msg->helo = xstrdup(s->helo ? s->helo : "");
	msg->body = tx->body;
	msg->size = evbuffer_get_length(tx->body);
	msg->nrcpt = tx->nrcpt;
	msg->rcpts = tx->rcpts;
	tx->sender = NULL;
	tx->envid = NULL;
	tx->body = NULL;
	tx->rcpts = NULL;
	tx->nrcpt = tx->cap = 0;
	smtpd_enter(s, SMTPD_ST_STORE);
	bufferevent_disable(s->bev, EV_READ);
	srv->stats.recipients += msg->nrcpt;
	srv->stats.bytes += msg->size;
	/* invariant 2: held until the answer; the store may answer at once,
	 * smtpd_session_stored handles both */
	smtpd_hold(s);
	srv->ops.store(srv->ops.arg, s, msg);
}

/*
 * The wait (STORE, VERIFY, AUTH's password check or delay) is over: go on
 * with the pipelined input already buffered, then read again.
 */
void
smtpd_session_resume(struct smtpd_session *s)
{
	if (s->state != SMTPD_ST_CLOSING)
		smtpd_timeouts(s, s->srv->conf->server_command_timeout, 0);
	/* called from the read loop (a store that answers at once): it goes
	 * on with the input and flushes the 250 with its own replies */
	if (s->in_read) {
		smtpd_session_want_read(s);
		return;
	}
	/* go on with pipelined input already buffered, then read */
	if (smtpd_session_input(s))
		smtpd_session_want_read(s);
}

void
smtpd_session_stored(struct smtpd_session *s, enum spool_status status)
{
	struct smtpd_tx *tx = &s->tx;
	char mid[17];

	/* in STORE, or freed (CLOSING) while the store had it */
	SL_ALWAYS(s->state == SMTPD_ST_STORE || s->gone != NULL);
	spool_mid_fmt(tx->mid, mid);
	smtpd_enter(s, SMTPD_ST_IDLE);
	/* a session freed meanwhile (CLOSING) sends no reply */
	if (status == SPOOL_OK) {
		s->srv->stats.messages++;
		log_gw(LOG_GW_QUEUED, SMTPD_IDS(s), NULL);
		smtpd_reply(s, "250 2.0.0 Ok: queued as %s", mid);
	} else {
		log_ev(LOG_WARNING, SMTPD_IDS(s), "not queued", "reason",
		    status == SPOOL_ERR_NOSPACE ? "spool full" : "spool error",
		    NULL);
		smtpd_reply(s, "451 4.3.0 Error: queue file write "
		    "error, try again later");
	}
	smtpd_tx_reset(s);
	if (s->gone != NULL)
		;	/* the client left meanwhile */
	else if (s->srv->stopping)
		smtpd_session_close(s, "421 4.3.2 Service shutting down",
		    "shutdown");
	else
		smtpd_session_resume(s);
	/* the store's hold (smtpd_store): a client gone meanwhile goes now */
	smtpd_release(s);
}

/*
 * If the body may not be stored (body.c says why), refuse it and drop the
 * transaction; 1 if it was refused.
 */
static int
smtpd_body_refused(struct smtpd_session *s, const char *cmd)
{
	int tempfail;
	const char *reply = smtpd_body_refusal(s, &tempfail);

	if (reply == NULL)
		return 0;
	if (tempfail)
		smtpd_tempfail(s, cmd, reply);
	else
		smtpd_reject(s, cmd, "%s", reply);
	smtpd_session_reset(s);
	return 1;
}

void
smtpd_data_end(struct smtpd_session *s)
{
	smtpd_timeouts(s, s->srv->conf->server_command_timeout, 0);
	if (!smtpd_body_refused(s, "DATA"))
		smtpd_store(s);
}

void
smtpd_bdat_end(struct smtpd_session *s)
{
	struct smtpd_tx *tx = &s->tx;
	int fail = tx->bdat_fail;

	smtpd_timeouts(s, s->srv->conf->server_command_timeout, 0);
	if (fail != 0) {
		smtpd_enter(s, tx->nrcpt ? SMTPD_ST_RCPT : tx->sender ?
		    SMTPD_ST_MAIL : (s->helo ? SMTPD_ST_IDLE : SMTPD_ST_GREET));
		if (fail == 552) {
			smtpd_reject(s, "BDAT", "552 5.3.4 Message size exceeds "
			    "fixed maximum message size");
			smtpd_session_reset(s);
		} else if (fail == 451) {
			smtpd_tempfail(s, "BDAT", SMTPD_INFLIGHT_REPLY);
			smtpd_session_reset(s);
		} else if (fail == 5031) {
			smtpd_reject(s, "BDAT", "503 5.5.1 Error: need RCPT command");
		} else if (fail == 5030) {
			smtpd_reject(s, "BDAT", "503 5.5.1 Error: need MAIL command");
		}
		/* fail == -1: the check's reply was sent already */
		return;
	}
	/* RFC 3030 4.2: a chunk refused fails the transaction */
	if (smtpd_body_refused(s, "BDAT"))
		return;
	if (tx->bdat_last) {
		smtpd_store(s);
		return;
	}
	smtpd_enter(s, SMTPD_ST_RCPT);
	smtpd_reply(s, "250 2.0.0 %llu octets received",
	    (unsigned long long)tx->size);
}

/* ---- reading ---- */

/*
 * Take one command line from in; 1 if one was handled, 0 if more input is
 * needed. An over-long line gets one 500 and is dropped up to its LF.
 */
static int
smtpd_read_command(struct smtpd_session *s, struct evbuffer *in)
{
	size_t max = (size_t)s->srv->conf->server_max_line_length;
	struct evbuffer_ptr eol;
	char stackbuf[1024], *line;
	size_t len;

	/* max counts the line with its CRLF, as RFC 5321 4.5.3.1.4 does */
	eol = evbuffer_search_eol(in, NULL, NULL, EVBUFFER_EOL_LF);
	if (eol.pos < 0) {
		len = evbuffer_get_length(in);
		if (len >= max) {
			/* keep nothing of a line we will refuse anyway */
			evbuffer_drain(in, len);
			if (!s->discard_line)
				smtpd_reject(s, "-", "500 5.5.2 Error: line too long");
			s->discard_line = 1;
		}
		return 0;
	}
	len = (size_t)eol.pos;
	if (s->discard_line || len + 1 > max) {
		evbuffer_drain(in, len + 1);
		if (!s->discard_line)
			smtpd_reject(s, "-", "500 5.5.2 Error: line too long");
		s->discard_line = 0;
		return 1;
	}
	line = len < sizeof(stackbuf) ? stackbuf : xmalloc(len + 1);
	evbuffer_remove(in, line, len + 1);
	if (len > 0 && line[len - 1] == '\r')
		len--;
	line[len] = '\0';
	smtpd_session_command(s, line, len);
	if (line != stackbuf)
		free(line);
	return 1;
}

/*
 * Handle the buffered input until it is used up or the session must wait:
 * for the store (STORE), for good (CLOSING), or for the client to read its
 * replies (smtpd_out_full). Then write the replies. Returns 0 if the
 * session was freed.
 */
static int
smtpd_session_input(struct smtpd_session *s)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);
	int progress = 1;

	s->in_read = 1;
	while (progress && evbuffer_get_length(in) > 0) {
		switch (s->state) {
		case SMTPD_ST_PROXY:
			progress = smtpd_proxy_read(s, in);
			break;
		case SMTPD_ST_DATA:
			progress = smtpd_body_read_data(s, in);
			break;
		case SMTPD_ST_BDAT:
			progress = smtpd_body_read_bdat(s, in);
			break;
		case SMTPD_ST_AUTH:
			/* a check or a failure's delay: the rest waits */
			progress = smtpd_auth_reading(s) ?
			    smtpd_read_command(s, in) : 0;
			break;
		case SMTPD_ST_STORE:
		case SMTPD_ST_VERIFY:
		case SMTPD_ST_CLOSING:
			progress = 0;
			break;
		default:
			progress = !smtpd_out_full(s) &&
			    smtpd_read_command(s, in);
			break;
		}
	}
	s->in_read = 0;
	smtpd_flush(s);
	if (s->state == SMTPD_ST_CLOSING && (s->gone != NULL ||
	    smtpd_session_flushed(s))) {
		smtpd_session_free(s, "closed");
		return 0;
	}
	return 1;
}

static void
smtpd_session_read(struct bufferevent *bev, void *arg)
{
	struct smtpd_session *s = arg;

	/* a TLS filter runs its read callback from bufferevent_enable(); the
	 * loop already running takes what it decrypted */
	if (s->in_read || s->gone != NULL)
		return;
	smtpd_hold(s);
	(void)smtpd_session_input(s);
	smtpd_release(s);
}

uint64_t
smtpd_session_icid(const struct smtpd_session *s)
{
	return s->icid;
}

const struct sockaddr *
smtpd_session_peer(const struct smtpd_session *s)
{
	return (const struct sockaddr *)&s->peer;
}

const char *
smtpd_session_peer_text(const struct smtpd_session *s)
{
	return s->peer_text;
}

int
smtpd_session_tls(const struct smtpd_session *s)
{
	return s->tls;
}

int
smtpd_session_trusted(const struct smtpd_session *s)
{
	return s->trusted;
}

const char *
smtpd_session_auth_user(const struct smtpd_session *s)
{
	return s->auth_user;
}
