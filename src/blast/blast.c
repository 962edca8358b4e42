/* SPDX-License-Identifier: MIT */
/*
 * blast.c: the load generator's engine: one libevent client state machine
 * per session, all on one event loop.
 *
 * Each command sent pushes the kind of reply it expects onto the session's
 * queue; each complete reply pops one. With pipelining the transaction
 * (RSET if needed, MAIL, every RCPT, DATA) goes out in one write; without
 * it, each command waits for the previous reply.
 *
 * Session states and the function that moves each:
 *   CONNECT -(greeting 2xx: blast_greet)-> EHLO -(2xx: blast_tx_start)-> TX
 *   EHLO -(2xx, --starttls: STARTTLS sent)-> TLS -(220: handshake,
 *         blast_tls_step; done: EHLO again)-> EHLO, in TLS
 *   TX -(DATA 354: blast_data)-> DOT -(reply: blast_msg_done)-> TX|QUIT
 *   TX -(tx refused: blast_msg_done)-> TX (RSET first) | QUIT
 *   QUIT -(221 or EOF)-> closed -> CONNECT again while messages are left
 *   any -(421, EOF, error, timeout: blast_conn_lost)-> closed -> CONNECT
 * Without --reuse (no-reuse), every message ends with QUIT.
 *
 * I/O is raw non-blocking sockets with one read and one write event each:
 * replies are handled as they are read and whatever they caused is written
 * at once, in one write per batch, without waiting for another turn of
 * the loop (a bufferevent would). A watchdog timer enforces --timeout.
 * In TLS the same buffers go through SSL_read / SSL_write on the socket
 * (the handshake driven by the same two events).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "blast/blast.h"
#include "conf/conf.h"
#include "util/tls.h"
#include "util/util.h"

enum blast_kind { BK_GREET, BK_EHLO, BK_RSET, BK_MAIL, BK_RCPT, BK_DATA,
	BK_DOT, BK_QUIT, BK_STARTTLS };
enum blast_state { BS_CONNECT, BS_EHLO, BS_TX, BS_DOT, BS_QUIT, BS_TLS };

struct blast;

struct blast_sess {
	struct blast *b;
	size_t idx;		/* in b->sess */
	int fd;			/* -1 between connections */
	struct event *rev, *wev;
	struct evbuffer *in, *out;
	int64_t last_io_ms;	/* for the timeout watchdog */
	int state;
	int pipelining;		/* offered by the server and wanted */
	int starttls_offered;
	SSL *ssl;		/* in TLS (or its handshake: state BS_TLS) */
	enum blast_kind *q;	/* replies expected, in order */
	size_t qhead, qlen, qcap;
	int has_msg;		/* a slot is taken and not yet counted */
	uint64_t msgno;
	int rcpt_sent, rcpt_ok, need_rset, dot_flushed;
	int fail_code;		/* MAIL's refusal */
	int rcpt_fail_code;	/* the last RCPT refusal */
	int64_t t_connect, t_dot;	/* microseconds */
};

struct blast {
	const struct blast_opts *o;
	struct blast_result *r;
	struct event_base *base;
	struct conf_addr addr;
	char *body;
	size_t body_len;
	uint64_t next_msg;
	int live;		/* sessions running */
	struct blast_sess **sess;	/* NULL once a session ended */
	struct event *watchdog;
};

static void blast_connect(struct blast_sess *s);
static void blast_tx_start(struct blast_sess *s);
static int blast_tls_start(struct blast_sess *s);
static int blast_flush(struct blast_sess *s);

static void
blast_lat_add(struct blast_lat *l, int64_t us)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 1024;
		l->v = xrealloc(l->v, l->cap * sizeof(*l->v));
	}
	l->v[l->n++] = us;
}

static int
blast_cmp(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

double
blast_lat_pct(struct blast_lat *l, double p)
{
	size_t i;

	if (l->n == 0)
		return 0;
	qsort(l->v, l->n, sizeof(*l->v), blast_cmp);
	/* nearest rank */
	i = (size_t)(p / 100 * (double)l->n + 0.999999);
	i = i == 0 ? 0 : i - 1;
	if (i >= l->n)
		i = l->n - 1;
	return (double)l->v[i] / 1000.0;
}

void
blast_result_clear(struct blast_result *r)
{
	free(r->connect.v);
	free(r->data_end.v);
	memset(r, 0, sizeof(*r));
}

char *
blast_body(const char *from, size_t size, size_t *len)
{
	char *hdr = xasprintf("From: <%s>\r\nTo: undisclosed-recipients:;\r\n"
	    "Subject: sluice blast\r\nMessage-ID: <blast@sluice.invalid>\r\n"
	    "\r\n", from);
	size_t h = strlen(hdr), n = size > h ? size : h;
	char *b = xmalloc(n + 1);

	memcpy(b, hdr, h);
	free(hdr);
	/* lines of 78 bytes; the last line is shorter but still ends in CRLF */
	for (size_t i = h; i < n;) {
		size_t left = n - i, line = left > 78 ? 78 : left;
		if (left - line == 1)
			line--;	/* never leave a lone byte for the last line */
		if (line < 2) {
			b[i++] = '\r';
			b[i++] = '\n';
			continue;
		}
		memset(b + i, 'x', line - 2);
		b[i + line - 2] = '\r';
		b[i + line - 1] = '\n';
		i += line;
	}
	b[n] = '\0';
	*len = n;
	return b;
}

static int64_t
blast_now(void)
{
	return sl_now_us();
}

/* Take the next message slot; 0 when none is left. */
static int
blast_take(struct blast_sess *s)
{
	struct blast *b = s->b;

	if (b->next_msg >= b->o->messages)
		return 0;
	s->msgno = b->next_msg++;
	s->has_msg = 1;
	s->rcpt_sent = s->rcpt_ok = s->fail_code = s->rcpt_fail_code = 0;
	return 1;
}

/* Count the current slot's outcome once: code 2xx, 4xx/5xx, or 0 (lost). */
static void
blast_outcome(struct blast_sess *s, int code)
{
	struct blast_result *r = s->b->r;

	if (!s->has_msg)
		return;
	s->has_msg = 0;
	if (code >= 200 && code < 300) {
		r->accepted++;
		r->rcpts_accepted += (uint64_t)s->rcpt_ok;
		r->bytes_accepted += s->b->body_len;
	} else if (code >= 300 && code < 600) {
		r->rejected++;
		r->rejected_by_code[code]++;
	} else {
		r->failed++;
	}
}

static void
blast_push(struct blast_sess *s, enum blast_kind k)
{
	if (s->qlen == s->qcap) {
		enum blast_kind *q = xcalloc(s->qcap * 2 + 8, sizeof(*q));
		for (size_t i = 0; i < s->qlen; i++)
			q[i] = s->q[(s->qhead + i) % s->qcap];
		free(s->q);
		s->q = q;
		s->qhead = 0;
		s->qcap = s->qcap * 2 + 8;
	}
	s->q[(s->qhead + s->qlen++) % s->qcap] = k;
}

static void
blast_send(struct blast_sess *s, enum blast_kind k, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
blast_send(struct blast_sess *s, enum blast_kind k, const char *fmt, ...)
{
	struct evbuffer *out = s->out;
	va_list ap;

	va_start(ap, fmt);
	evbuffer_add_vprintf(out, fmt, ap);
	va_end(ap);
	evbuffer_add(out, "\r\n", 2);
	blast_push(s, k);
}

/* The session is over: free it, and start another while slots are left. */
static void
blast_close(struct blast_sess *s)
{
	struct blast *b = s->b;

	blast_outcome(s, 0);
	if (s->ssl != NULL) {
		SSL_free(s->ssl);
		s->ssl = NULL;
	}
	if (s->fd >= 0) {
		event_free(s->rev);
		event_free(s->wev);
		close(s->fd);
		s->fd = -1;
	}
	evbuffer_drain(s->in, evbuffer_get_length(s->in));
	evbuffer_drain(s->out, evbuffer_get_length(s->out));
	s->qhead = s->qlen = 0;
	if (blast_take(s)) {
		blast_connect(s);
		return;
	}
	b->sess[s->idx] = NULL;
	evbuffer_free(s->in);
	evbuffer_free(s->out);
	free(s->q);
	free(s);
	if (--b->live == 0)
		event_base_loopbreak(b->base);
}

static void
blast_close_cb(evutil_socket_t fd, short what, void *arg)
{
	blast_close(arg);
}

static void
blast_send_rcpt(struct blast_sess *s)
{
	const char *p = s->b->o->rcpt_pattern;
	uint64_t n = s->msgno * (uint64_t)s->b->o->rcpts +
	    (uint64_t)s->rcpt_sent + 1;
	uint64_t d = (n - 1) % (uint64_t)s->b->o->domains + 1;
	char addr[512];
	size_t o = 0;

	/* the pattern's {n} and {d}; everything else as written */
	while (*p && o + 24 < sizeof(addr)) {
		if (strncmp(p, "{n}", 3) == 0) {
			o += (size_t)snprintf(addr + o, sizeof(addr) - o, "%llu",
			    (unsigned long long)n);
			p += 3;
		} else if (strncmp(p, "{d}", 3) == 0) {
			o += (size_t)snprintf(addr + o, sizeof(addr) - o, "%llu",
			    (unsigned long long)d);
			p += 3;
		} else {
			addr[o++] = *p++;
		}
	}
	addr[o] = '\0';
	s->rcpt_sent++;
	blast_send(s, BK_RCPT, "RCPT TO:<%s>", addr);
}

static void
blast_tx_start(struct blast_sess *s)
{
	s->state = BS_TX;
	if (s->need_rset) {
		blast_send(s, BK_RSET, "RSET");
		s->need_rset = 0;
		if (!s->pipelining)
			return;	/* MAIL follows RSET's reply */
	}
	blast_send(s, BK_MAIL, "MAIL FROM:<%s>", s->b->o->from);
	if (!s->pipelining)
		return;
	while (s->rcpt_sent < s->b->o->rcpts)
		blast_send_rcpt(s);
	blast_send(s, BK_DATA, "DATA");
}

/* The message's slot is counted: go on with the next one or say QUIT. */
static void
blast_msg_done(struct blast_sess *s, int code)
{
	blast_outcome(s, code);
	if (s->b->o->reuse && blast_take(s)) {
		blast_tx_start(s);
		return;
	}
	s->state = BS_QUIT;
	blast_send(s, BK_QUIT, "QUIT");
}

static void
blast_data(struct blast_sess *s)
{
	struct evbuffer *out = s->out;

	evbuffer_add(out, s->b->body, s->b->body_len);
	evbuffer_add(out, ".\r\n", 3);
	blast_push(s, BK_DOT);
	s->state = BS_DOT;
	s->dot_flushed = 0;
	s->t_dot = blast_now();
}

/* The transaction was refused before the data: who refused it counts. */
static void
blast_tx_refused(struct blast_sess *s, int code)
{
	s->need_rset = 1;
	/* no recipient taken: the RCPT refusal is the reason, not DATA's */
	if (s->fail_code)
		code = s->fail_code;
	else if (s->rcpt_ok == 0 && s->rcpt_fail_code)
		code = s->rcpt_fail_code;
	blast_msg_done(s, code);
}

/* One complete reply with code to the command of kind k. */
static void
blast_reply(struct blast_sess *s, enum blast_kind k, int code)
{
	struct blast_result *r = s->b->r;
	int ok = code >= 200 && code < 400;

	switch (k) {
	case BK_GREET:
		if (!ok) {
			blast_outcome(s, code);
			s->state = BS_QUIT;
			blast_send(s, BK_QUIT, "QUIT");
			return;
		}
		blast_lat_add(&r->connect, blast_now() - s->t_connect);
		s->state = BS_EHLO;
		blast_send(s, BK_EHLO, "EHLO %s", s->b->o->helo);
		break;
	case BK_EHLO:
		if (!ok) {
			blast_outcome(s, code);
			s->state = BS_QUIT;
			blast_send(s, BK_QUIT, "QUIT");
			return;
		}
		if (s->b->o->starttls && s->ssl == NULL) {
			if (!s->starttls_offered) {
				blast_outcome(s, 0);	/* failed: no TLS */
				s->state = BS_QUIT;
				blast_send(s, BK_QUIT, "QUIT");
				return;
			}
			s->state = BS_TLS;
			blast_send(s, BK_STARTTLS, "STARTTLS");
			return;
		}
		blast_tx_start(s);
		break;
	case BK_STARTTLS:
		if (code != 220 || blast_tls_start(s) != 0) {
			blast_outcome(s, code == 220 ? 0 : code);
			s->state = BS_QUIT;
			blast_send(s, BK_QUIT, "QUIT");
		}
		break;
	case BK_RSET:
		if (!s->pipelining)
			blast_send(s, BK_MAIL, "MAIL FROM:<%s>", s->b->o->from);
		break;
	case BK_MAIL:
		if (!ok && !s->fail_code)
			s->fail_code = code;
		if (!s->pipelining) {
			if (!ok)
				blast_msg_done(s, code);
			else
				blast_send_rcpt(s);
		}
		break;
	case BK_RCPT:
		if (ok) {
			s->rcpt_ok++;
		} else {
			r->rcpts_rejected++;
			r->rcpt_rejected_by_code[code]++;
			s->rcpt_fail_code = code;
		}
		if (s->pipelining || s->fail_code)
			break;
		if (s->rcpt_sent < s->b->o->rcpts)
			blast_send_rcpt(s);
		else if (s->rcpt_ok == 0)
			blast_tx_refused(s, code);
		else
			blast_send(s, BK_DATA, "DATA");
		break;
	case BK_DATA:
		if (code == 354)
			blast_data(s);
		else
			blast_tx_refused(s, code);
		break;
	case BK_DOT:
		if (s->dot_flushed)
			blast_lat_add(&r->data_end, blast_now() - s->t_dot);
		blast_msg_done(s, code);
		break;
	case BK_QUIT:
		break;
	}
}

static void
blast_ehlo_line(struct blast_sess *s, const char *line)
{
	if (sl_strncaseeq(line + 4, "PIPELINING", 10) &&
	    (line[14] == '\0' || line[14] == ' '))
		s->pipelining = s->b->o->pipelining;
	if (sl_strncaseeq(line + 4, "STARTTLS", 8) &&
	    (line[12] == '\0' || line[12] == ' '))
		s->starttls_offered = 1;
}

/* Drive the handshake; 0 while it goes on or once done, -1 if it failed. */
static int
blast_tls_step(struct blast_sess *s)
{
	int rc = SSL_connect(s->ssl);

	if (rc == 1) {
		/* RFC 3207 4.2: what was offered before TLS is forgotten */
		event_del(s->wev);
		s->state = BS_EHLO;
		s->pipelining = 0;
		s->starttls_offered = 0;
		blast_send(s, BK_EHLO, "EHLO %s", s->b->o->helo);
		return blast_flush(s);
	}
	switch (SSL_get_error(s->ssl, rc)) {
	case SSL_ERROR_WANT_READ:
		event_del(s->wev);
		return 0;
	case SSL_ERROR_WANT_WRITE:
		event_add(s->wev, NULL);
		return 0;
	default:
		ERR_clear_error();
		return -1;
	}
}

/* STARTTLS got its 220: wrap the socket. */
static int
blast_tls_start(struct blast_sess *s)
{
	SSL_CTX *ctx = sl_tls_client_ctx();

	if (ctx == NULL || (s->ssl = SSL_new(ctx)) == NULL)
		return -1;
	SSL_set_mode(s->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE |
	    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_set_fd(s->ssl, s->fd);
	/* whatever came after the 220 was not protected: drop it */
	evbuffer_drain(s->in, evbuffer_get_length(s->in));
	return blast_tls_step(s);
}

/* Write out through TLS; 1 if all went, 0 if it waits, -1 if it broke. */
static int
blast_tls_write(struct blast_sess *s)
{
	while (evbuffer_get_length(s->out) > 0) {
		struct evbuffer_iovec v;
		int n;
		evbuffer_peek(s->out, -1, NULL, &v, 1);
		n = SSL_write(s->ssl, v.iov_base, (int)v.iov_len);
		if (n > 0) {
			evbuffer_drain(s->out, (size_t)n);
			continue;
		}
		switch (SSL_get_error(s->ssl, n)) {
		case SSL_ERROR_WANT_WRITE:
			event_add(s->wev, NULL);
			return 0;
		case SSL_ERROR_WANT_READ:
			return 0;
		default:
			ERR_clear_error();
			return -1;
		}
	}
	return 1;
}

/* Read what TLS has; like evbuffer_read: > 0, 0 at EOF, -1 with errno. */
static int
blast_tls_read(struct blast_sess *s)
{
	char buf[16384];
	int total = 0;

	for (;;) {
		int n = SSL_read(s->ssl, buf, sizeof(buf));
		if (n > 0) {
			evbuffer_add(s->in, buf, (size_t)n);
			total += n;
			continue;
		}
		switch (SSL_get_error(s->ssl, n)) {
		case SSL_ERROR_WANT_READ:
			if (total > 0)
				return total;
			errno = EAGAIN;
			return -1;
		case SSL_ERROR_WANT_WRITE:
			event_add(s->wev, NULL);
			if (total > 0)
				return total;
			errno = EAGAIN;
			return -1;
		case SSL_ERROR_ZERO_RETURN:
			return total;
		default:
			ERR_clear_error();
			errno = ECONNRESET;
			return total > 0 ? total : -1;
		}
	}
}

/*
 * Write what is queued now (one write per batch, no loop turn); the write
 * event takes over only when the socket is full. 0, or -1 if it broke.
 */
static int
blast_flush(struct blast_sess *s)
{
	if (s->ssl != NULL && s->state == BS_TLS)
		return 0;	/* the handshake owns the socket */
	if (s->ssl != NULL) {
		int rc = blast_tls_write(s);
		if (rc <= 0)
			return rc;
	}
	while (evbuffer_get_length(s->out) > 0) {
		int n = evbuffer_write(s->out, s->fd);
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			event_add(s->wev, NULL);
			return 0;
		}
		if (n < 0)
			return -1;
	}
	event_del(s->wev);
	s->last_io_ms = sl_mono_ms();
	/* the end of the data reached the kernel: the latency starts now */
	if (s->state == BS_DOT && !s->dot_flushed) {
		s->dot_flushed = 1;
		s->t_dot = blast_now();
	}
	return 0;
}

/* Handle every complete reply in s->in; 0, or -1 if s was closed. */
static int
blast_replies(struct blast_sess *s)
{
	char *line;
	size_t len;

	while ((line = evbuffer_readln(s->in, &len, EVBUFFER_EOL_CRLF)) != NULL) {
		int code = len >= 3 ? atoi(line) : 0;
		int last = len < 4 || line[3] != '-';
		enum blast_kind k;
		if (s->qlen == 0 || code < 200 || code > 599) {
			free(line);
			blast_close(s);	/* a reply nobody asked for */
			return -1;
		}
		k = s->q[s->qhead];
		if (k == BK_EHLO && len > 4)
			blast_ehlo_line(s, line);
		free(line);
		if (!last)
			continue;
		s->qhead = (s->qhead + 1) % s->qcap;
		s->qlen--;
		if (k == BK_QUIT || code == 421) {
			/* the server closes: count what was going on */
			blast_outcome(s, k == BK_QUIT ? 0 : code);
			blast_close(s);
			return -1;
		}
		blast_reply(s, k, code);
	}
	return 0;
}

static void
blast_read(evutil_socket_t fd, short what, void *arg)
{
	struct blast_sess *s = arg;
	int n;

	if (s->ssl != NULL && s->state == BS_TLS) {
		if (blast_tls_step(s) != 0)
			blast_close(s);
		return;
	}
	n = s->ssl ? blast_tls_read(s) : evbuffer_read(s->in, fd, 65536);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (n <= 0) {
		blast_close(s);	/* EOF, reset or refused */
		return;
	}
	s->last_io_ms = sl_mono_ms();
	if (blast_replies(s) != 0)
		return;
	if (blast_flush(s) != 0)
		blast_close(s);
}

static void
blast_write(evutil_socket_t fd, short what, void *arg)
{
	struct blast_sess *s = arg;

	if (s->ssl != NULL && s->state == BS_TLS) {
		if (blast_tls_step(s) != 0)
			blast_close(s);
		return;
	}
	if (blast_flush(s) != 0)
		blast_close(s);
}

/* Once a second: close sessions that waited longer than --timeout. */
static void
blast_watchdog(evutil_socket_t fd, short what, void *arg)
{
	struct blast *b = arg;
	int64_t now = sl_mono_ms();

	for (int i = 0; i < b->o->sessions; i++) {
		struct blast_sess *s = b->sess[i];
		if (s != NULL && s->fd >= 0 &&
		    now - s->last_io_ms > (int64_t)b->o->timeout_s * 1000)
			blast_close(s);
	}
}

static void
blast_connect(struct blast_sess *s)
{
	struct blast *b = s->b;
	int one = 1;

	s->b->r->connections++;
	s->state = BS_CONNECT;
	s->need_rset = 0;
	s->pipelining = 0;
	s->starttls_offered = 0;
	blast_push(s, BK_GREET);
	s->t_connect = blast_now();
	s->last_io_ms = sl_mono_ms();
	s->fd = socket(b->addr.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (s->fd < 0)
		goto fail;
	setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	s->rev = event_new(b->base, s->fd, EV_READ | EV_PERSIST, blast_read, s);
	s->wev = event_new(b->base, s->fd, EV_WRITE | EV_PERSIST, blast_write,
	    s);
	/* the greeting comes first: a failed connect shows up as a read error */
	if (connect(s->fd, (struct sockaddr *)&b->addr.ss, b->addr.len) != 0 &&
	    errno != EINPROGRESS)
		goto fail;
	event_add(s->rev, NULL);
	return;
fail:
	/* refused at once: close from the loop, not recursively */
	event_base_once(b->base, -1, EV_TIMEOUT, blast_close_cb, s,
	    &(struct timeval){ 0, 0 });
}

int
blast_run(const struct blast_opts *o, struct blast_result *r, char *err,
    size_t errlen)
{
	struct blast b = { .o = o, .r = r };
	int64_t t0;

	memset(r, 0, sizeof(*r));
	if (conf_addr_parse(o->server, &b.addr) != 0) {
		snprintf(err, errlen, "--server: '%s' is not an address and "
		    "port (127.0.0.1:2525)", o->server);
		return -1;
	}
	b.base = event_base_new();
	b.body = blast_body(o->from, o->size, &b.body_len);
	b.sess = xcalloc((size_t)o->sessions, sizeof(*b.sess));
	b.watchdog = event_new(b.base, -1, EV_PERSIST, blast_watchdog, &b);
	event_add(b.watchdog, &(struct timeval){ 1, 0 });
	t0 = blast_now();
	for (int i = 0; i < o->sessions; i++) {
		struct blast_sess *s = xcalloc(1, sizeof(*s));
		s->b = &b;
		s->idx = (size_t)i;
		s->fd = -1;
		if (!blast_take(s)) {
			free(s);
			break;
		}
		s->in = evbuffer_new();
		s->out = evbuffer_new();
		b.sess[i] = s;
		b.live++;
		blast_connect(s);
	}
	if (b.live > 0)
		event_base_dispatch(b.base);
	event_free(b.watchdog);
	free(b.sess);
	r->elapsed_s = (double)(blast_now() - t0) / 1e6;
	event_base_free(b.base);
	free(b.body);
	free(b.addr.text);
	return 0;
}
