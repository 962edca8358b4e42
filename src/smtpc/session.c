/* SPDX-License-Identifier: MIT */
/*
 * session.c: one outbound SMTP connection (RFC 5321 client) on a
 * bufferevent: connects to each address in turn, greets, and carries one
 * message at a time, pipelined when the peer offers PIPELINING (RFC 2920).
 * With params->source each socket is bound to that local address first:
 * addresses of the other family are skipped, and a bind that fails ends
 * the connection at once (smtpc_bind_failed: the owner's to handle, not
 * the peer's fault). Every reply is shown to cb->reply as it comes.
 *
 * Owns the socket, its timers and the queue of commands sent whose replies
 * have not come yet; the message in flight is tx.c's (smtpc_send there).
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
 *   (LMTP: LHLO in EHLO's place, and a 5xx to it fails the address)
 *   EHLO -(2xx offering STARTTLS, policy not NONE: smtpc_starttls_begin)->
 *     STARTTLS -(220: smtpc_tls_start)-> TLS -(handshake done:
 *     smtpc_tls_done, EHLO again)-> EHLO, in TLS for the rest
 *   STARTTLS -(refused; MAY)-> IDLE in plaintext
 *   TLS -(handshake failed or timed out: smtpc_tls_failed; MAY)-> CONNECT
 *     on the same address, in plaintext this time
 *   EHLO|STARTTLS|TLS -(ENCRYPT or VERIFY and no TLS)-> as a failed address
 *   TLS -(VERIFY, handshake done, chain or name wrong)-> as a failed address
 *   IDLE -(smtpc_send)-> TX -(last reply: smtpc_tx_end)-> IDLE (READY)
 *   TX -(timeout, EOF, garbage: smtpc_tx_break)-> CLOSED (done, CLOSED)
 *   IDLE -(smtpc_quit)-> QUIT -(reply, EOF, timeout)-> CLOSED (CLOSED);
 *     after the reply, in TLS, a close_notify goes first (smtpc_quit_done)
 *   IDLE -(peer closes or speaks)-> CLOSED (CLOSED)
 */
#include <arpa/inet.h>
#include <sys/un.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/bufferevent_ssl.h>

#include "log/log.h"
#include "spool/spool.h"
#include "util/tls.h"
#include "util/util.h"
#include "smtpc/smtpc_int.h"

#define SMTPC_QUIT_TIMEOUT 5	/* seconds to wait for QUIT's reply */

static void smtpc_on_read(struct bufferevent *bev, void *arg);
static void smtpc_on_write(struct bufferevent *bev, void *arg);
static void smtpc_on_event(struct bufferevent *bev, short what, void *arg);
static void smtpc_connect_next(struct smtpc *c);
static void smtpc_tls_failed(struct smtpc *c, const char *why);

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
int
smtpc_emit(struct smtpc *c, enum smtpc_event ev, int code, const char *reason)
{
	if (ev != SMTPC_READY)
		c->closed_reported = 1;
	c->cb.event(c->cb.arg, c, ev, code, reason);
	return c->dead;
}

void
smtpc_defer(struct smtpc *c, unsigned what)
{
	c->pending |= what;
	event_active(c->defer, EV_TIMEOUT, 1);
}

/* --- the socket --- */

void
smtpc_close(struct smtpc *c, const char *why)
{
	if (c->bev != NULL) {
		if (c->connected)
			log_ev(LOG_INFO, SMTPC_IDS(c), "close", "reason", why,
			    NULL);
		/* a TLS filter frees the socket's bufferevent and the SSL */
		bufferevent_free(c->bev);
		c->bev = NULL;
		c->gen++;
	}
	c->connected = 0;
	c->tls = 0;
	c->qhead = c->qlen = 0;
	c->tx.body_writing = 0;
	c->tx.body_left = 0;
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
void
smtpc_timer_update(struct smtpc *c)
{
	int head;

	if (c->state == SMTPC_ST_TLS) {
		/* the handshake has the time of a command */
		smtpc_timer_set(c, c->p.command_timeout);
		return;
	}
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

void
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
void
smtpc_cmd(struct smtpc *c, int cmd, size_t idx, const char *fmt, ...)
{
	char buf[1024], *line = buf;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof(buf)) {
		line = xmalloc((size_t)n + 1);
		va_start(ap, fmt);
		vsnprintf(line, (size_t)n + 1, fmt, ap);
		va_end(ap);
	}
	for (int i = 0; i < n; i++)
		if ((unsigned char)line[i] < 0x20)
			line[i] = '?';
	evbuffer_add(bufferevent_get_output(c->bev), line, (size_t)n);
	evbuffer_add(bufferevent_get_output(c->bev), "\r\n", 2);
	if (line != buf)
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

/* EHLO, or LHLO for LMTP. */
static void
smtpc_hello(struct smtpc *c)
{
	smtpc_cmd(c, SMTPC_CMD_EHLO, 0, "%s %s", c->p.lmtp ? "LHLO" : "EHLO",
	    c->helo);
}

static void
smtpc_peer_set(struct smtpc *c, const struct smtpc_addr *a)
{
	const void *in;
	int v6 = a->ss.ss_family == AF_INET6;

	if (a->ss.ss_family == AF_UNIX) {
		const struct sockaddr_un *sun = (const void *)&a->ss;
		c->port = 0;
		snprintf(c->addr_text, sizeof(c->addr_text), "%s",
		    sun->sun_path);
		snprintf(c->peer, sizeof(c->peer), "unix:%s", sun->sun_path);
		return;
	}

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
	else if (a->ss.ss_family == AF_UNIX)
		len = sizeof(struct sockaddr_un);
	else {
		snprintf(c->last_reason, sizeof(c->last_reason),
		    "connect to %s: address family not supported", c->peer);
		return -1;
	}
	if (c->source_len > 0 && c->source.ss_family != a->ss.ss_family) {
		snprintf(c->last_reason, sizeof(c->last_reason), "connect to "
		    "%s: not reachable from the source address", c->peer);
		return -1;
	}
	/*
	 * connect(2) here rather than in bufferevent_socket_connect(), so an
	 * error at once (EADDRNOTAVAIL, ENETUNREACH) comes with its errno.
	 */
	fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0);
	if (fd >= 0 && c->source_len > 0 && bind(fd,
	    (const struct sockaddr *)&c->source, c->source_len) != 0) {
		char src[INET6_ADDRSTRLEN] = "?";
		const void *in = c->source.ss_family == AF_INET ?
		    (const void *)&((const struct sockaddr_in *)&c->source)->sin_addr :
		    (const void *)&((const struct sockaddr_in6 *)&c->source)->sin6_addr;
		inet_ntop(c->source.ss_family, in, src, sizeof(src));
		snprintf(c->last_reason, sizeof(c->last_reason), "cannot bind "
		    "to source address %s: %s", src, strerror(errno));
		close(fd);
		c->bind_failed = 1;
		return -1;
	}
	if (fd < 0 || (connect(fd, (const struct sockaddr *)&a->ss, len) != 0 &&
	    errno != EINPROGRESS))
		goto fail;
	c->bev = bufferevent_socket_new(c->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (c->bev == NULL)
		goto fail;
	fd = -1;
	bufferevent_setcb(c->bev, smtpc_on_read, smtpc_on_write, smtpc_on_event,
	    c);
	bufferevent_setwatermark(c->bev, EV_WRITE, SMTPC_BODY_LOWAT, 0);
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
	for (; c->ai < c->naddr && !c->bind_failed; c->ai++) {
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
	char where[sizeof(c->peer)];

	c->connected = 1;
	c->state = SMTPC_ST_GREETING;
	c->need_rset = 0;
	if (c->port == 0)	/* a Unix socket */
		snprintf(where, sizeof(where), "%s", c->peer);
	else
		snprintf(where, sizeof(where), "[%s]:%d", c->addr_text,
		    c->port);
	log_ev(LOG_INFO, SMTPC_IDS(c), c->p.lmtp ? "New LMTP connection" :
	    "New SMTP connection", "host", c->addrs[c->ai].host, "addr",
	    where, NULL);
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

/* --- STARTTLS (RFC 3207) --- */

/*
 * After EHLO: send STARTTLS when the peer offers it and the policy wants
 * it. Returns 1 when it took over the session (STARTTLS sent, or the
 * address failed for want of TLS).
 */
static int
smtpc_starttls_begin(struct smtpc *c)
{
	if (c->tls || c->p.tls == SMTPC_TLS_NONE || c->tls_off == c->ai + 1)
		return 0;
	if (!(c->ext & SMTPC_EXT_STARTTLS)) {
		if (c->p.tls < SMTPC_TLS_ENCRYPT)
			return 0;
		smtpc_addr_fail(c, 0, "TLS required but not offered by %s",
		    c->peer);
		return 1;
	}
	c->state = SMTPC_ST_STARTTLS;
	smtpc_cmd(c, SMTPC_CMD_STARTTLS, 0, "STARTTLS");
	return 1;
}

/* The MX host's name without a final dot, into name (256 bytes). */
static const char *
smtpc_tls_name(struct smtpc *c, char *name)
{
	size_t n;

	sl_strlcpy(name, c->addrs[c->ai].host, 256);
	n = strlen(name);
	if (n > 0 && name[n - 1] == '.')
		name[--n] = '\0';
	return name;
}

/*
 * SNI (RFC 6066 3): the MX host's name, never an address literal; and at
 * VERIFY, the name (or address) the certificate must be for.
 */
static int
smtpc_tls_sni(struct smtpc *c, SSL *ssl)
{
	char name[256];
	unsigned char bin[16];

	smtpc_tls_name(c, name);
	if (c->p.tls == SMTPC_TLS_VERIFY && sl_tls_client_expect(ssl, name) != 0)
		return -1;
	if (name[0] == '\0' || strchr(name, '[') != NULL ||
	    strchr(name, '.') == NULL || inet_pton(AF_INET, name, bin) == 1 ||
	    inet_pton(AF_INET6, name, bin) == 1)
		return 0;
	SSL_set_tlsext_host_name(ssl, name);
	return 0;
}

/* The 220 to STARTTLS came: wrap the socket's bufferevent in TLS. */
static void
smtpc_tls_start(struct smtpc *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	char why[300] = "cannot create a TLS session";
	SSL_CTX *ctx = c->p.tls == SMTPC_TLS_VERIFY ?
	    sl_tls_client_verify_ctx(c->p.tls_ca_file, why, sizeof(why)) :
	    sl_tls_client_ctx();
	SSL *ssl = ctx != NULL ? SSL_new(ctx) : NULL;
	struct bufferevent *bev;

	if (ssl == NULL || smtpc_tls_sni(c, ssl) != 0) {
		SSL_free(ssl);
		smtpc_tls_failed(c, why);
		return;
	}
	/* bytes after the 220 came unprotected: never read them as replies */
	evbuffer_drain(in, evbuffer_get_length(in));
	/* the filter writes into the socket's buffer up to its high mark
	 * only, so a body streams through TLS in pieces too */
	bufferevent_setwatermark(c->bev, EV_WRITE, SMTPC_BODY_LOWAT,
	    SMTPC_BODY_HIWAT);
	bev = bufferevent_openssl_filter_new(c->base, c->bev, ssl,
	    BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL)	/* only out of memory: the input was drained */
		SL_PANIC("smtpc: bufferevent_openssl_filter_new failed");
	/* a peer that closes without close_notify is an EOF, not an error */
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	/* the socket's bufferevent keeps its write timeout; TIMEOUT comes up */
	c->bev = bev;
	bufferevent_setcb(bev, smtpc_on_read, smtpc_on_write, smtpc_on_event, c);
	bufferevent_setwatermark(bev, EV_WRITE, SMTPC_BODY_LOWAT, 0);
	bufferevent_enable(bev, EV_READ);
	c->state = SMTPC_ST_TLS;
	smtpc_timer_update(c);
}

/* The handshake is done: RFC 3207 4.2, forget the old EHLO, say it again. */
static void
smtpc_tls_done(struct smtpc *c)
{
	char name[256], why[700];

	/* VERIFY: nothing is said to a peer whose certificate is wrong */
	if (c->p.tls == SMTPC_TLS_VERIFY && sl_tls_client_verified(
	    bufferevent_openssl_get_ssl(c->bev), smtpc_tls_name(c, name), why,
	    sizeof(why)) != 0) {
		smtpc_addr_fail(c, 0, "%s (%s)", why, c->peer);
		return;
	}
	c->tls = 1;
	log_ev(LOG_INFO, SMTPC_IDS(c), "TLS established", "relay", c->peer,
	    "version", sl_tls_version(c->bev), "cipher", sl_tls_cipher(c->bev),
	    "verified", c->p.tls == SMTPC_TLS_VERIFY ? "yes" : "no", NULL);
	c->ext = 0;
	c->peer_size = 0;
	c->state = SMTPC_ST_EHLO;
	smtpc_hello(c);
	smtpc_timer_update(c);
}

/*
 * The handshake failed or timed out. MAY: the same address once more, in
 * plaintext (a server with broken TLS still gets its mail). ENCRYPT: on
 * to the next address.
 */
static void
smtpc_tls_failed(struct smtpc *c, const char *why)
{
	if (c->p.tls >= SMTPC_TLS_ENCRYPT) {
		smtpc_addr_fail(c, 0, "TLS required but the handshake with %s "
		    "failed: %s", c->peer, why);
		return;
	}
	log_ev(LOG_INFO, SMTPC_IDS(c), "TLS handshake failed", "relay",
	    c->peer, "reason", why, "then", "plaintext", NULL);
	smtpc_close(c, "TLS handshake failed");
	c->tls_off = c->ai + 1;
	if (smtpc_connect_start(c) == 0)
		return;
	log_ev(LOG_INFO, SMTPC_IDS(c), "connect failed", "reason",
	    c->last_reason, NULL);
	c->ai++;
	smtpc_connect_next(c);
}

static void
smtpc_starttls_reply(struct smtpc *c)
{
	if (c->reply.code == 220) {
		smtpc_tls_start(c);
		return;
	}
	if (c->p.tls >= SMTPC_TLS_ENCRYPT) {
		smtpc_addr_fail(c, 0, "TLS required but %s refused STARTTLS: "
		    "%d %s", c->peer, c->reply.code, c->reply.text);
		return;
	}
	log_ev(LOG_INFO, SMTPC_IDS(c), "STARTTLS refused", "relay", c->peer,
	    "reply", c->reply.text, "then", "plaintext", NULL);
	c->state = SMTPC_ST_IDLE;
	smtpc_emit(c, SMTPC_READY, 0, NULL);
}

static void
smtpc_greeted(struct smtpc *c)
{
	if (smtpc_starttls_begin(c))
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
		smtpc_hello(c);
	} else if (cmd == SMTPC_CMD_EHLO && code / 100 == 5 && !c->p.lmtp) {
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
	case SMTPC_ST_TLS:
		smtpc_tls_failed(c, why);
		break;
	case SMTPC_ST_GREETING:
	case SMTPC_ST_EHLO:
	case SMTPC_ST_STARTTLS:
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

/*
 * QUIT's reply came: in TLS, a close_notify first (RFC 8446 6.1), written
 * to the socket now or never, so a peer that does not read holds nothing.
 */
static void
smtpc_quit_done(struct smtpc *c)
{
	if (c->tls && sl_tls_close_notify(c->bev) == 0)
		sl_tls_push(c->bev);
	smtpc_close(c, "quit");
}

static void
smtpc_on_reply(struct smtpc *c)
{
	struct smtpc_sent s;

	if (c->cb.reply != NULL) {
		char full[sizeof(c->reply.text) + 8];
		snprintf(full, sizeof(full), "%d %s", c->reply.code,
		    c->reply.text);
		c->cb.reply(c->cb.arg, c, full);
	}
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
		smtpc_quit_done(c);
		smtpc_emit(c, SMTPC_CLOSED, 0, NULL);
		break;
	case SMTPC_CMD_STARTTLS:
		smtpc_starttls_reply(c);
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

	/* More of the body; once it is all out, the final reply has
	 * data_timeout. */
	if (c->tx.body_left) {
		smtpc_body_pump(c);
	} else if (c->tx.body_writing) {
		c->tx.body_writing = 0;
		smtpc_timer_update(c);
	}
}

static void
smtpc_on_event(struct bufferevent *bev, short what, void *arg)
{
	struct smtpc *c = arg;
	int err = errno;
	char why[256];

	smtpc_enter(c);
	if ((what & BEV_EVENT_CONNECTED) && c->state == SMTPC_ST_TLS) {
		smtpc_tls_done(c);
	} else if (what & BEV_EVENT_CONNECTED) {
		evtimer_del(c->timer);
		smtpc_connected(c);
	} else if (what & BEV_EVENT_TIMEOUT) {
		smtpc_lost(c, "timed out");
	} else if (what & BEV_EVENT_EOF) {
		/* What came before the EOF counts (a 421, QUIT's 221). */
		smtpc_read(c);
		if (!c->dead && c->bev == bev)
			smtpc_lost(c, "connection closed");
	} else if (c->tls || c->state == SMTPC_ST_TLS) {
		smtpc_lost(c, sl_tls_error(bev, err != 0 ? strerror(err) :
		    "connection error", why, sizeof(why)));
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
	if (p->source != NULL && p->source_len <= sizeof(c->source)) {
		memcpy(&c->source, p->source, p->source_len);
		c->source_len = p->source_len;
	}
	c->p.source = NULL;	/* our copy is c->source */
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

void
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

int
smtpc_bind_failed(const struct smtpc *c)
{
	return c->bind_failed;
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

int
smtpc_peer_tls(const struct smtpc *c)
{
	return c->tls;
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
