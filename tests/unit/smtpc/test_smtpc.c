/* SPDX-License-Identifier: MIT */
/*
 * test_smtpc.c: the outbound connection of src/smtpc/session.c end to end
 * against a scripted SMTP peer in the same process (an evconnlistener on
 * 127.0.0.1, a free port) on the same event_base.
 *
 * The peer answers from its struct fpeer: greeting, EHLO reply, and per
 * command a reply, a stall (no answer ever) or garbage; RCPT answers by
 * the address ("bad" -> 550, "later" -> 450, else 250). It records each
 * command line with the number of the read that brought it (so a test can
 * see MAIL, RCPT and DATA arrive in one write) and the raw data bytes.
 *
 * With tls_ctx set the peer takes STARTTLS (220, then a libevent OpenSSL
 * filter with a certificate made in memory), records the SNI it was
 * given, and answers EHLO in TLS with ehlo_tls; tls_garbage answers the
 * ClientHello with plaintext instead. The tests of the STARTTLS policy
 * are at the end; the others run with SMTPC_TLS_NONE.
 *
 * With lmtp set the peer speaks LMTP (RFC 2033): LHLO, and after the data
 * one reply per recipient it accepted ("over" in the address: 452 4.2.2,
 * a mailbox over quota); it may listen on a Unix socket (unix_path).
 *
 * Run one test by name: test_smtpc test_reuse (a cmocka filter pattern).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/bufferevent_ssl.h>
#include <event2/listener.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "log/log.h"
#include "spool/spool.h"
#include "smtpc/smtpc.h"

#include "../tlsctx.h"

#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

/* --- the scripted peer --- */

#define FP_MAXCMD 64

struct fpeer {
	struct evconnlistener *lis;
	int port;
	const char *greeting;		/* NULL: "220 fake ESMTP" */
	int greet_stall;		/* say nothing at all */
	const char *ehlo;		/* NULL: the full set below */
	const char *mail_reply;		/* NULL: 250 */
	const char *data_reply;		/* NULL: 354 */
	const char *dot_reply;		/* NULL: 250 */
	const char *stall_at;		/* verb (or "DOT") never answered */
	const char *garbage_at;		/* verb answered with garbage */
	int close_at_ehlo;		/* hang up on EHLO */
	SSL_CTX *tls_ctx;		/* NULL: STARTTLS gets 502 */
	const char *starttls_reply;	/* NULL: 220 and the handshake */
	const char *starttls_extra;	/* sent right after the 220 */
	int tls_garbage;		/* after 220, plaintext, no TLS */
	const char *ehlo_tls;		/* EHLO reply in TLS; NULL: ehlo */
	int tls;			/* this connection is in TLS */
	int tls_up;			/* its handshake finished */
	char sni[256];
	int lmtp;			/* LHLO, a reply per recipient */
	char unix_path[108];		/* listen here instead of TCP */
	char *taken[8];			/* LMTP: the RCPTs accepted */
	int ntaken;

	struct bufferevent *bev;
	int nconn;
	int reads;
	int stalled;
	int in_data;
	size_t bdat_left;
	char *cmd[FP_MAXCMD];		/* lines received; owned */
	int batch[FP_MAXCMD];		/* the read that brought each */
	int ncmd;
	struct evbuffer *data;		/* raw DATA / BDAT bytes */
};

#define EHLO_ALL "250-fake.test\r\n250-PIPELINING\r\n250-SIZE 100000\r\n" \
	"250-8BITMIME\r\n250-SMTPUTF8\r\n250-DSN\r\n250-CHUNKING\r\n" \
	"250 STARTTLS\r\n"

static void
fp_say(struct fpeer *fp, const char *s)
{
	evbuffer_add(bufferevent_get_output(fp->bev), s, strlen(s));
}

static int
fp_is(const char *line, const char *verb)
{
	return strncasecmp(line, verb, strlen(verb)) == 0;
}

static void fp_read(struct bufferevent *bev, void *arg);
static void fp_event(struct bufferevent *bev, short what, void *arg);

/* STARTTLS: the reply, then the handshake (or plaintext garbage). */
static void
fp_starttls(struct fpeer *fp)
{
	struct evbuffer *in = bufferevent_get_input(fp->bev);

	if (fp->starttls_reply != NULL) {
		fp_say(fp, fp->starttls_reply);
		return;
	}
	fp_say(fp, "220 2.0.0 go ahead\r\n");
	if (fp->starttls_extra != NULL)
		fp_say(fp, fp->starttls_extra);
	if (fp->tls_garbage) {
		fp_say(fp, "this is not TLS at all\r\n");
		return;
	}
	evbuffer_drain(in, evbuffer_get_length(in));
	fp->bev = bufferevent_openssl_filter_new(bufferevent_get_base(fp->bev),
	    fp->bev, SSL_new(fp->tls_ctx), BUFFEREVENT_SSL_ACCEPTING,
	    BEV_OPT_CLOSE_ON_FREE);
	assert_non_null(fp->bev);
	bufferevent_openssl_set_allow_dirty_shutdown(fp->bev, 1);
	bufferevent_setcb(fp->bev, fp_read, NULL, fp_event, fp);
	bufferevent_enable(fp->bev, EV_READ | EV_WRITE);
	fp->tls = 1;
}

/* A server context with a self-signed P-256 certificate for mx.test. */
static SSL_CTX *
fp_tls_ctx(void)
{
	return test_tls_server_ctx();
}

/* Reply to a command, or not (stall), or with garbage; 0 if stalled. */
static int
fp_answer(struct fpeer *fp, const char *verb, const char *reply)
{
	if (fp->stall_at != NULL && strcmp(fp->stall_at, verb) == 0) {
		fp->stalled = 1;
		return 0;
	}
	if (fp->garbage_at != NULL && strcmp(fp->garbage_at, verb) == 0)
		reply = "this is not SMTP\r\n";
	fp_say(fp, reply);
	return 1;
}

static void
fp_line(struct fpeer *fp, char *line)
{
	if (fp->ncmd < FP_MAXCMD) {
		fp->cmd[fp->ncmd] = strdup(line);
		fp->batch[fp->ncmd++] = fp->reads;
	}
	if (fp_is(line, "EHLO") || (fp->lmtp && fp_is(line, "LHLO"))) {
		if (fp->close_at_ehlo) {
			bufferevent_free(fp->bev);
			fp->bev = NULL;
			return;
		}
		fp_answer(fp, "EHLO", fp->tls && fp->ehlo_tls ? fp->ehlo_tls :
		    fp->ehlo ? fp->ehlo : EHLO_ALL);
	} else if (fp_is(line, "STARTTLS") && fp->tls_ctx != NULL) {
		fp_starttls(fp);
	} else if (fp_is(line, "HELO")) {
		fp_answer(fp, "HELO", "250 fake.test\r\n");
	} else if (fp_is(line, "MAIL")) {
		fp_answer(fp, "MAIL", fp->mail_reply ? fp->mail_reply :
		    "250 2.1.0 Ok\r\n");
	} else if (fp_is(line, "RCPT")) {
		if (fp->lmtp && !strstr(line, "bad") && !strstr(line, "later") &&
		    fp->ntaken < 8)
			fp->taken[fp->ntaken++] = strdup(line + 8);
		fp_answer(fp, "RCPT", strstr(line, "bad") ?
		    "550 5.1.1 No such user\r\n" : strstr(line, "later") ?
		    "450 4.2.0 Try later\r\n" : "250 2.1.5 Ok\r\n");
	} else if (fp_is(line, "DATA")) {
		const char *r = fp->data_reply ? fp->data_reply : "354 go\r\n";
		if (fp_answer(fp, "DATA", r) && r[0] == '3')
			fp->in_data = 1;
	} else if (fp_is(line, "BDAT")) {
		fp->bdat_left = strtoul(line + 5, NULL, 10);
		fp->in_data = 2;
	} else if (fp_is(line, "RSET")) {
		for (; fp->ntaken > 0; fp->ntaken--)
			free(fp->taken[fp->ntaken - 1]);
		fp_answer(fp, "RSET", "250 2.0.0 Ok\r\n");
	} else if (fp_is(line, "QUIT")) {
		fp_answer(fp, "QUIT", "221 2.0.0 Bye\r\n");
	} else {
		fp_answer(fp, "?", "502 5.5.2 What?\r\n");
	}
}

/* DATA: take bytes up to the end marker; 1 when it came. */
static int
fp_data(struct fpeer *fp, struct evbuffer *in)
{
	struct evbuffer_ptr p;
	size_t len = evbuffer_get_length(fp->data);

	evbuffer_add_buffer(fp->data, in);
	if (evbuffer_get_length(fp->data) == 3 &&
	    memcmp(evbuffer_pullup(fp->data, 3), ".\r\n", 3) == 0)
		return 1;
	p = evbuffer_search(fp->data, "\r\n.\r\n", 5, NULL);
	(void)len;
	return p.pos >= 0 && (size_t)p.pos + 5 == evbuffer_get_length(fp->data);
}

/* LMTP: the end of the data gets a reply for each recipient taken. */
static void
fp_lmtp_dot(struct fpeer *fp)
{
	char line[300];

	for (int i = 0; i < fp->ntaken; i++) {
		if (strstr(fp->taken[i], "over"))
			snprintf(line, sizeof(line), "452 4.2.2 %s Mailbox is "
			    "full\r\n", fp->taken[i]);
		else
			snprintf(line, sizeof(line), "250 2.0.0 %s Saved\r\n",
			    fp->taken[i]);
		fp_say(fp, line);
		free(fp->taken[i]);
	}
	fp->ntaken = 0;
}

static void
fp_read(struct bufferevent *bev, void *arg)
{
	struct fpeer *fp = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	char *line;

	fp->reads++;
	while (fp->bev != NULL && !fp->stalled) {
		if (fp->in_data == 1) {
			if (!fp_data(fp, in))
				return;
			fp->in_data = 0;
			if (fp->lmtp) {
				fp_lmtp_dot(fp);
				continue;
			}
			fp_answer(fp, "DOT", fp->dot_reply ? fp->dot_reply :
			    "250 2.0.0 Queued as X\r\n");
			continue;
		}
		if (fp->in_data == 2) {
			size_t n = evbuffer_get_length(in);
			if (n > fp->bdat_left)
				n = fp->bdat_left;
			evbuffer_remove_buffer(in, fp->data, n);
			fp->bdat_left -= n;
			if (fp->bdat_left > 0)
				return;
			fp->in_data = 0;
			fp_answer(fp, "BDAT", fp->dot_reply ? fp->dot_reply :
			    "250 2.0.0 Queued as Y\r\n");
			continue;
		}
		line = evbuffer_readln(in, NULL, EVBUFFER_EOL_CRLF_STRICT);
		if (line == NULL)
			return;
		fp_line(fp, line);
		free(line);
	}
}

static void
fp_event(struct bufferevent *bev, short what, void *arg)
{
	struct fpeer *fp = arg;

	if (what & BEV_EVENT_CONNECTED) {
		SSL *ssl = bufferevent_openssl_get_ssl(bev);
		const char *sni = SSL_get_servername(ssl,
		    TLSEXT_NAMETYPE_host_name);
		fp->tls_up = 1;
		snprintf(fp->sni, sizeof(fp->sni), "%s", sni ? sni : "");
	}
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
		bufferevent_free(fp->bev);
		fp->bev = NULL;
	}
}

static void
fp_accept(struct evconnlistener *lis, evutil_socket_t fd,
    struct sockaddr *sa, int len, void *arg)
{
	struct fpeer *fp = arg;

	if (fp->bev != NULL)
		bufferevent_free(fp->bev);
	fp->nconn++;
	fp->stalled = fp->in_data = fp->tls = 0;
	fp->bev = bufferevent_socket_new(evconnlistener_get_base(lis), fd,
	    BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(fp->bev, fp_read, NULL, fp_event, fp);
	bufferevent_enable(fp->bev, EV_READ | EV_WRITE);
	if (!fp->greet_stall)
		fp_say(fp, fp->greeting ? fp->greeting : "220 fake ESMTP\r\n");
}

static void
fp_start(struct event_base *base, struct fpeer *fp)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t slen = sizeof(sin);

	fp->data = evbuffer_new();
	if (fp->unix_path[0] != '\0') {
		struct sockaddr_un sun = { .sun_family = AF_UNIX };
		snprintf(sun.sun_path, sizeof(sun.sun_path), "%s",
		    fp->unix_path);
		unlink(fp->unix_path);
		fp->lis = evconnlistener_new_bind(base, fp_accept, fp,
		    LEV_OPT_CLOSE_ON_FREE, 16, (struct sockaddr *)&sun,
		    sizeof(sun));
		assert_non_null(fp->lis);
		return;
	}

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fp->lis = evconnlistener_new_bind(base, fp_accept, fp,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 16,
	    (struct sockaddr *)&sin, sizeof(sin));
	assert_non_null(fp->lis);
	getsockname(evconnlistener_get_fd(fp->lis), (struct sockaddr *)&sin,
	    &slen);
	fp->port = ntohs(sin.sin_port);
}

static void
fp_stop(struct fpeer *fp)
{
	if (fp->bev != NULL)
		bufferevent_free(fp->bev);
	evconnlistener_free(fp->lis);
	evbuffer_free(fp->data);
	SSL_CTX_free(fp->tls_ctx);
	for (int i = 0; i < fp->ncmd; i++)
		free(fp->cmd[i]);
	for (int i = 0; i < fp->ntaken; i++)
		free(fp->taken[i]);
	if (fp->unix_path[0] != '\0')
		unlink(fp->unix_path);
}

/* The data received as a string (for short bodies). */
static char *
fp_data_str(struct fpeer *fp)
{
	size_t n = evbuffer_get_length(fp->data);
	char *s = malloc(n + 1);

	evbuffer_copyout(fp->data, s, n);
	s[n] = '\0';
	return s;
}

/* A port nothing listens on: bound, then closed. */
static int
closed_port(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t slen = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	bind(fd, (struct sockaddr *)&sin, sizeof(sin));
	getsockname(fd, (struct sockaddr *)&sin, &slen);
	close(fd);
	return ntohs(sin.sin_port);
}

/* --- the owner of the connection --- */

struct drv {
	struct event_base *base;
	struct smtpc *c;
	int in_api;		/* a callback now would be synchronous */
	int ready, closed, failed, done;
	int code;
	char reason[512];
	struct smtpc_msg *last;
	/* actions from inside callbacks (re-entrancy) */
	int free_in_done;
	int free_in_ready;
	struct smtpc_msg *send_in_done;
	int quit_in_done;
};

static void
drv_done(void *arg, struct smtpc *c, struct smtpc_msg *m)
{
	struct drv *d = arg;

	assert_false(d->in_api);
	d->done++;
	d->last = m;
	if (d->free_in_done) {
		smtpc_free(c);
		d->c = NULL;
	} else if (d->send_in_done != NULL) {
		struct smtpc_msg *next = d->send_in_done;
		d->send_in_done = NULL;
		smtpc_send(c, next);
	} else if (d->quit_in_done) {
		smtpc_quit(c);
	}
}

static void
drv_event(void *arg, struct smtpc *c, enum smtpc_event ev, int code,
    const char *reason)
{
	struct drv *d = arg;

	assert_false(d->in_api);
	if (ev == SMTPC_READY)
		d->ready++;
	else if (ev == SMTPC_CLOSED)
		d->closed++;
	else
		d->failed++;
	d->code = code;
	snprintf(d->reason, sizeof(d->reason), "%s", reason ? reason : "");
	if (ev == SMTPC_READY && d->free_in_ready) {
		smtpc_free(c);
		d->c = NULL;
	}
}

static void
safety(evutil_socket_t fd, short what, void *arg)
{
	fail_msg("test took too long");
}

/* Run the loop until *counter reaches want (10 s at most). */
static void
run_until(struct drv *d, const int *counter, int want)
{
	struct event *t = evtimer_new(d->base, safety, NULL);
	struct timeval tv = { 10, 0 };

	evtimer_add(t, &tv);
	while (*counter < want)
		event_base_loop(d->base, EVLOOP_ONCE);
	event_free(t);
}

/* Run the loop for ms milliseconds. */
static void
run_for(struct drv *d, int ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	event_base_loopexit(d->base, &tv);
	event_base_dispatch(d->base);
}

static struct smtpc_addr
addr4(int port, const char *host)
{
	struct smtpc_addr a = { 0 };
	struct sockaddr_in *sin = (struct sockaddr_in *)&a.ss;

	sin->sin_family = AF_INET;
	sin->sin_port = htons(port);
	sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	snprintf(a.host, sizeof(a.host), "%s", host);
	return a;
}

static const struct smtpc_params params_fast = {
	.helo = "client.test", .connect_timeout = 2, .command_timeout = 1,
	.data_timeout = 2, .tls = SMTPC_TLS_NONE,
};

static void
drv_connect(struct drv *d, const struct smtpc_params *p,
    const struct smtpc_addr *addrs, size_t n)
{
	struct smtpc_cb cb = { drv_done, drv_event, d };

	d->in_api = 1;
	d->c = smtpc_new(d->base, 7, p, addrs, n, &cb);
	d->in_api = 0;
}

static void
drv_send(struct drv *d, struct smtpc_msg *m)
{
	d->in_api = 1;
	smtpc_send(d->c, m);
	d->in_api = 0;
}

static void
drv_quit(struct drv *d)
{
	d->in_api = 1;
	smtpc_quit(d->c);
	d->in_api = 0;
}

/* A message of n rcpts with the addresses given, body s. */
struct tmsg {
	struct smtpc_msg m;
	struct smtpc_rcpt r[4];
};

static void
tmsg_init(struct tmsg *t, const char *body, const char *a0, const char *a1)
{
	memset(t, 0, sizeof(*t));
	t->m.mid = 0x42;
	t->m.sender = "from@test";
	t->m.body = evbuffer_new();
	evbuffer_add(t->m.body, body, strlen(body));
	t->m.rcpts = t->r;
	t->r[0].rid = 0;
	t->r[0].addr = a0;
	t->m.nrcpt = 1;
	if (a1 != NULL) {
		t->r[1].rid = 1;
		t->r[1].addr = a1;
		t->m.nrcpt = 2;
	}
}

static void
tmsg_free(struct tmsg *t)
{
	evbuffer_free(t->m.body);
}

struct fixture {
	struct event_base *base;
	struct fpeer fp;
	struct drv d;
};

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	f->base = event_base_new();
	f->d.base = f->base;
	fp_start(f->base, &f->fp);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;

	smtpc_free(f->d.c);
	fp_stop(&f->fp);
	event_base_free(f->base);
	free(f);
	return 0;
}

/* Connected and greeted, ready for a message. */
static void
connect_ready(struct fixture *f, const struct smtpc_params *p)
{
	struct smtpc_addr a = addr4(f->fp.port, "mx.test");

	drv_connect(&f->d, p, &a, 1);
	run_until(&f->d, &f->d.ready, 1);
}

/* --- the tests --- */

static void
test_refused_then_next(void **state)
{
	struct fixture *f = *state;
	struct smtpc_addr a[2] = { addr4(closed_port(), "dead.test"),
		addr4(f->fp.port, "mx.test") };

	drv_connect(&f->d, &params_fast, a, 2);
	assert_int_equal(f->d.ready, 0);	/* never from smtpc_new */
	run_until(&f->d, &f->d.ready, 1);
	assert_int_equal(f->d.failed, 0);
	assert_string_equal(smtpc_peer_host(f->d.c), "mx.test");
	assert_string_equal(smtpc_peer_addr(f->d.c), "127.0.0.1");
	assert_int_equal(smtpc_dcid(f->d.c), 7);
	assert_int_equal(smtpc_peer_ext(f->d.c), SMTPC_EXT_PIPELINING |
	    SMTPC_EXT_SIZE | SMTPC_EXT_8BITMIME | SMTPC_EXT_SMTPUTF8 |
	    SMTPC_EXT_DSN | SMTPC_EXT_CHUNKING | SMTPC_EXT_STARTTLS);
	assert_int_equal(smtpc_peer_size(f->d.c), 100000);
	assert_string_equal(f->fp.cmd[0], "EHLO client.test");
}

static void
test_all_refused(void **state)
{
	struct fixture *f = *state;
	int port = closed_port();
	struct smtpc_addr a = addr4(port, "");
	char want[128];

	drv_connect(&f->d, &params_fast, &a, 1);
	run_until(&f->d, &f->d.failed, 1);
	assert_int_equal(f->d.code, 0);
	snprintf(want, sizeof(want), "connect to 127.0.0.1:%d: Connection "
	    "refused", port);
	assert_string_equal(f->d.reason, want);
	assert_int_equal(f->d.ready + f->d.closed, 0);
}

static void
test_greeting_421(void **state)
{
	struct fixture *f = *state;
	struct fpeer ok = { 0 };
	struct smtpc_addr a[2];

	fp_start(f->base, &ok);
	f->fp.greeting = "421 4.7.0 Too busy\r\n";
	a[0] = addr4(f->fp.port, "busy.test");
	a[1] = addr4(ok.port, "ok.test");
	drv_connect(&f->d, &params_fast, a, 2);
	run_until(&f->d, &f->d.ready, 1);
	assert_string_equal(smtpc_peer_host(f->d.c), "ok.test");
	assert_int_equal(f->fp.ncmd, 0);	/* no EHLO to the busy one */
	smtpc_free(f->d.c);

	/* Only the busy one: FAILED with its reply. */
	memset(&f->d, 0, sizeof(f->d));
	f->d.base = f->base;
	drv_connect(&f->d, &params_fast, a, 1);
	run_until(&f->d, &f->d.failed, 1);
	assert_int_equal(f->d.code, 421);
	assert_string_equal(f->d.reason,
	    "busy.test[127.0.0.1] said: 421 4.7.0 Too busy");
	fp_stop(&ok);
}

static void
test_greeting_garbage_and_stall(void **state)
{
	struct fixture *f = *state;
	struct fpeer quiet = { 0 };
	struct smtpc_addr a[2];

	fp_start(f->base, &quiet);
	quiet.greet_stall = 1;
	f->fp.greeting = "SSH-2.0-OpenSSH\r\n";
	a[0] = addr4(f->fp.port, "ssh.test");
	a[1] = addr4(quiet.port, "quiet.test");
	drv_connect(&f->d, &params_fast, a, 2);
	run_until(&f->d, &f->d.failed, 1);
	assert_int_equal(f->d.code, 0);
	assert_non_null(strstr(f->d.reason, "timed out"));
	assert_non_null(strstr(f->d.reason, "quiet.test[127.0.0.1]"));
	assert_int_equal(f->fp.nconn, 1);
	assert_int_equal(quiet.nconn, 1);
	fp_stop(&quiet);
}

static void
test_ehlo_refused_helo(void **state)
{
	struct fixture *f = *state;

	f->fp.ehlo = "502 5.5.2 EHLO? never heard of it\r\n";
	connect_ready(f, &params_fast);
	assert_int_equal(smtpc_peer_ext(f->d.c), 0);
	assert_string_equal(f->fp.cmd[1], "HELO client.test");
}

static void
test_pipelined_two_rcpts(void **state)
{
	struct fixture *f = *state;
	struct tmsg t;
	char *data;

	connect_ready(f, &params_fast);
	tmsg_init(&t, "Subject: t\r\n\r\n.hidden\r\nlast", "bad@test",
	    "good@test");
	drv_send(&f->d, &t.m);
	assert_int_equal(f->d.done, 0);
	run_until(&f->d, &f->d.done, 1);
	assert_ptr_equal(f->d.last, &t.m);
	assert_int_equal(t.r[0].code, 550);
	assert_string_equal(t.r[0].reply, "550 5.1.1 No such user");
	assert_int_equal(t.r[1].code, 250);
	assert_string_equal(t.r[1].reply, "250 2.0.0 Queued as X");
	assert_int_equal(f->d.ready, 2);	/* idle again */

	/* MAIL, both RCPTs and DATA in one write (RFC 2920). */
	/* 27 bytes, and the line end DATA adds to the last line */
	assert_string_equal(f->fp.cmd[1],
	    "MAIL FROM:<from@test> SIZE=29");
	assert_string_equal(f->fp.cmd[2], "RCPT TO:<bad@test>");
	assert_string_equal(f->fp.cmd[3], "RCPT TO:<good@test>");
	assert_string_equal(f->fp.cmd[4], "DATA");
	assert_int_equal(f->fp.batch[1], f->fp.batch[4]);
	data = fp_data_str(&f->fp);
	assert_string_equal(data,
	    "Subject: t\r\n\r\n..hidden\r\nlast\r\n.\r\n");
	free(data);

	drv_quit(&f->d);
	assert_int_equal(f->d.closed, 0);
	run_until(&f->d, &f->d.closed, 1);
	assert_string_equal(f->fp.cmd[f->fp.ncmd - 1], "QUIT");
	tmsg_free(&t);
}

static void
test_no_pipelining_all_rejected(void **state)
{
	struct fixture *f = *state;
	struct tmsg t, u;

	f->fp.ehlo = "250-fake.test\r\n250 SIZE\r\n";
	connect_ready(f, &params_fast);
	tmsg_init(&t, "x\r\n", "bad@test", "later@test");
	drv_send(&f->d, &t.m);
	run_until(&f->d, &f->d.done, 1);
	assert_int_equal(t.r[0].code, 550);
	assert_int_equal(t.r[1].code, 450);
	assert_string_equal(t.r[1].reply, "450 4.2.0 Try later");
	/* One command a read, and no DATA with no recipient. */
	assert_int_equal(f->fp.ncmd, 4);
	assert_true(f->fp.batch[1] < f->fp.batch[2]);
	assert_true(f->fp.batch[2] < f->fp.batch[3]);
	assert_string_equal(f->fp.cmd[1], "MAIL FROM:<from@test> SIZE=3");

	/* The next message starts with RSET. */
	tmsg_init(&u, "y\r\n", "good@test", NULL);
	drv_send(&f->d, &u.m);
	run_until(&f->d, &f->d.done, 2);
	assert_int_equal(u.r[0].code, 250);
	assert_string_equal(f->fp.cmd[4], "RSET");
	assert_string_equal(f->fp.cmd[5], "MAIL FROM:<from@test> SIZE=3");
	assert_string_equal(f->fp.cmd[7], "DATA");
	tmsg_free(&t);
	tmsg_free(&u);
}

static void
test_mail_rejected_pipelined(void **state)
{
	struct fixture *f = *state;
	struct tmsg t;

	f->fp.mail_reply = "553 5.7.1 Sender refused\r\n";
	f->fp.data_reply = "503 5.5.1 No recipients\r\n";
	connect_ready(f, &params_fast);
	tmsg_init(&t, "x\r\n", "good@test", "other@test");
	drv_send(&f->d, &t.m);
	run_until(&f->d, &f->d.done, 1);
	assert_int_equal(t.r[0].code, 553);
	assert_int_equal(t.r[1].code, 553);
	assert_string_equal(t.r[1].reply, "553 5.7.1 Sender refused");
	assert_int_equal(evbuffer_get_length(f->fp.data), 0);
	run_until(&f->d, &f->d.ready, 2);
	tmsg_free(&t);
}

static void
test_reuse(void **state)
{
	struct fixture *f = *state;
	struct tmsg t, u;
	int mails = 0;

	connect_ready(f, &params_fast);
	tmsg_init(&t, "one\r\n", "a@test", NULL);
	tmsg_init(&u, "two\r\n", "b@test", NULL);
	drv_send(&f->d, &t.m);
	run_until(&f->d, &f->d.done, 1);
	run_until(&f->d, &f->d.ready, 2);
	drv_send(&f->d, &u.m);
	run_until(&f->d, &f->d.done, 2);
	assert_int_equal(t.r[0].code, 250);
	assert_int_equal(u.r[0].code, 250);
	assert_int_equal(f->fp.nconn, 1);
	for (int i = 0; i < f->fp.ncmd; i++) {
		mails += strncmp(f->fp.cmd[i], "MAIL", 4) == 0;
		assert_string_not_equal(f->fp.cmd[i], "RSET");
	}
	assert_int_equal(mails, 2);
	tmsg_free(&t);
	tmsg_free(&u);
}

/* The owner hands the next message, then QUIT, from inside done. */
static void
test_send_from_done(void **state)
{
	struct fixture *f = *state;
	struct tmsg t, u;

	connect_ready(f, &params_fast);
	tmsg_init(&t, "one\r\n", "a@test", NULL);
	tmsg_init(&u, "two\r\n", "b@test", NULL);
	f->d.send_in_done = &u.m;
	drv_send(&f->d, &t.m);
	run_until(&f->d, &f->d.done, 1);
	f->d.quit_in_done = 1;
	run_until(&f->d, &f->d.done, 2);
	assert_int_equal(u.r[0].code, 250);
	assert_int_equal(f->d.ready, 1);	/* none between the two */
	run_until(&f->d, &f->d.closed, 1);
	assert_int_equal(f->d.ready, 1);
	tmsg_free(&t);
	tmsg_free(&u);
}

static void
test_free_from_callbacks(void **state)
{
	struct fixture *f = *state;
	struct tmsg t;

	f->d.free_in_ready = 1;
	connect_ready(f, &params_fast);
	assert_null(f->d.c);
	run_for(&f->d, 50);

	memset(&f->d, 0, sizeof(f->d));
	f->d.base = f->base;
	connect_ready(f, &params_fast);
	f->d.free_in_done = 1;
	tmsg_init(&t, "one\r\n", "a@test", NULL);
	drv_send(&f->d, &t.m);
	run_until(&f->d, &f->d.done, 1);
	assert_null(f->d.c);
	run_for(&f->d, 50);
	assert_int_equal(f->d.ready, 1);	/* nothing after the free */
	assert_int_equal(f->d.closed, 0);
	tmsg_free(&t);
}

static void
test_stall_rcpt(void **state)
{
	struct fixture *f = *state;
	struct tmsg t;

	f->fp.stall_at = "RCPT";
	connect_ready(f, &params_fast);
	tmsg_init(&t, "x\r\n", "a@test", "b@test");
	drv_send(&f->d, &t.m);
	run_until(&f->d, &f->d.done, 1);
	assert_int_equal(t.r[0].code, 451);
	assert_int_equal(t.r[1].code, 451);
	assert_string_equal(t.r[0].reply, "451 4.4.2 conversation with "
	    "mx.test[127.0.0.1] timed out while sending RCPT TO");
	assert_int_equal(f->d.closed, 1);	/* right after done */
	tmsg_free(&t);
}

static void
test_stall_end_of_data(void **state)
{
	struct fixture *f = *state;
	struct tmsg t;

	f->fp.stall_at = "DOT";
	connect_ready(f, &params_fast);
	tmsg_init(&t, "x\r\n", "bad@test", "b@test");
	drv_send(&f->d, &t.m);
	run_until(&f->d, &f->d.done, 1);
	assert_int_equal(t.r[0].code, 550);	/* final at RCPT stays */
	assert_int_equal(t.r[1].code, 451);
	assert_non_null(strstr(t.r[1].reply, "while sending end of data"));
	run_until(&f->d, &f->d.closed, 1);
	tmsg_free(&t);
}

static void
test_garbage_reply(void **state)
{
	struct fixture *f = *state;
	struct tmsg t;

	f->fp.garbage_at = "MAIL";
	connect_ready(f, &params_fast);
	tmsg_init(&t, "x\r\n", "a@test", NULL);
	drv_send(&f->d, &t.m);
	run_until(&f->d, &f->d.done, 1);
	assert_int_equal(t.r[0].code, 451);
	assert_string_equal(t.r[0].reply, "451 4.4.2 lost connection with "
	    "mx.test[127.0.0.1] while sending MAIL FROM (malformed reply)");
	run_until(&f->d, &f->d.closed, 1);
	tmsg_free(&t);
}

static void
test_size_limit(void **state)
{
	struct fixture *f = *state;
	struct tmsg t;

	f->fp.ehlo = "250-fake.test\r\n250-PIPELINING\r\n250 SIZE 10\r\n";
	connect_ready(f, &params_fast);
	tmsg_init(&t, "more than ten bytes\r\n", "a@test", "b@test");
	drv_send(&f->d, &t.m);
	assert_int_equal(f->d.done, 0);		/* deferred, not from send */
	run_until(&f->d, &f->d.done, 1);
	assert_int_equal(t.r[0].code, 552);
	assert_string_equal(t.r[1].reply, "552 5.3.4 Message size exceeds "
	    "the fixed maximum message size of the peer (10)");
	run_until(&f->d, &f->d.ready, 2);
	run_for(&f->d, 50);
	assert_int_equal(f->fp.ncmd, 1);	/* EHLO only */
	tmsg_free(&t);
}

static void
test_smtputf8_needed(void **state)
{
	struct fixture *f = *state;
	struct tmsg t;

	f->fp.ehlo = "250-fake.test\r\n250 8BITMIME\r\n";
	connect_ready(f, &params_fast);
	tmsg_init(&t, "x\r\n", "a@test", NULL);
	t.m.flags = SPOOL_F_SMTPUTF8;
	drv_send(&f->d, &t.m);
	run_until(&f->d, &f->d.done, 1);
	assert_string_equal(t.r[0].reply,
	    "553 5.6.7 Peer does not support SMTPUTF8");
	tmsg_free(&t);
}

static void
test_params_and_bdat(void **state)
{
	struct fixture *f = *state;
	struct smtpc_params p = params_fast;
	struct tmsg t;
	char *data;

	p.use_bdat = 1;
	connect_ready(f, &p);
	tmsg_init(&t, ".raw\r\n", "a@test", "b@test");
	t.m.flags = SPOOL_F_8BITMIME | SPOOL_F_SMTPUTF8;
	t.m.ret = SPOOL_RET_HDRS;
	t.m.envid = "id+2B1 x";
	t.r[0].notify = SPOOL_NOTIFY_SUCCESS | SPOOL_NOTIFY_FAILURE;
	t.r[0].orcpt = "rfc822;a@test";
	t.r[1].notify = SPOOL_NOTIFY_NEVER;
	drv_send(&f->d, &t.m);
	run_until(&f->d, &f->d.done, 1);
	assert_string_equal(f->fp.cmd[1], "MAIL FROM:<from@test> SIZE=6 "
	    "BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=id+2B1+20x");
	assert_string_equal(f->fp.cmd[2], "RCPT TO:<a@test> "
	    "NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@test");
	assert_string_equal(f->fp.cmd[3], "RCPT TO:<b@test> NOTIFY=NEVER");
	assert_string_equal(f->fp.cmd[4], "BDAT 6 LAST");
	data = fp_data_str(&f->fp);
	assert_string_equal(data, ".raw\r\n");	/* no dot-stuffing */
	free(data);
	assert_string_equal(t.r[1].reply, "250 2.0.0 Queued as Y");
	tmsg_free(&t);
}

/*
 * Issue 9 item 10: a BDAT chunk carries the body folded (its size counted
 * after folding); a BINARYMIME body goes as it is.
 */
static void
test_bdat_folds_long_lines(void **state)
{
	struct fixture *f = *state;
	struct smtpc_params p = params_fast;
	char body[1300], cmd[32];
	struct tmsg t;
	char *data;

	memset(body, 'x', 1200);
	memcpy(body + 1200, "\r\n", 3);
	p.use_bdat = 1;
	connect_ready(f, &p);
	for (int bin = 0; bin < 2; bin++) {
		tmsg_init(&t, body, "a@test", NULL);
		t.m.flags = bin ? SPOOL_F_BINARYMIME : 0;
		evbuffer_drain(f->fp.data, evbuffer_get_length(f->fp.data));
		drv_send(&f->d, &t.m);
		run_until(&f->d, &f->d.done, bin + 1);
		snprintf(cmd, sizeof(cmd), "BDAT %d LAST", bin ? 1202 : 1205);
		assert_string_equal(f->fp.cmd[f->fp.ncmd - 1], cmd);
		data = fp_data_str(&f->fp);
		assert_int_equal(strlen(data), bin ? 1202 : 1205);
		if (!bin) {
			assert_memory_equal(data + 998, "\r\n x", 4);
			assert_int_equal(strspn(data + 1001, "x"), 202);
		}
		free(data);
		assert_int_equal(t.r[0].code, 250);
		tmsg_free(&t);
	}
}

/*
 * SIZE= declares the message as it goes on the wire: after the folding
 * of a line over 998 octets (RFC 1870: the DATA stuffing dots and final
 * dot aside). On main it gave the length before folding (1202 here),
 * less than the 1205 octets sent.
 */
static void
test_size_after_folding(void **state)
{
	struct fixture *f = *state;
	char body[1300];
	struct tmsg t;
	char *data;

	memset(body, 'x', 1200);
	memcpy(body + 1200, "\r\n", 3);
	connect_ready(f, &params_fast);
	tmsg_init(&t, body, "a@test", NULL);
	drv_send(&f->d, &t.m);
	run_until(&f->d, &f->d.done, 1);
	assert_int_equal(t.r[0].code, 250);
	assert_string_equal(f->fp.cmd[1], "MAIL FROM:<from@test> SIZE=1205");
	data = fp_data_str(&f->fp);
	/* what came after DATA, less its final ".\r\n" */
	assert_int_equal(strlen(data) - 3, 1205);
	assert_memory_equal(data + 998, "\r\n x", 4);
	free(data);
	tmsg_free(&t);
}

/* The idle connection: the peer hangs up -> CLOSED. */
static void
test_idle_peer_closes(void **state)
{
	struct fixture *f = *state;

	connect_ready(f, &params_fast);
	bufferevent_free(f->fp.bev);
	f->fp.bev = NULL;
	run_until(&f->d, &f->d.closed, 1);
	assert_int_equal(f->d.done, 0);
}

/* The ids and texts the operators' logs follow. */
static void
test_log_lines(void **state)
{
	struct fixture *f = *state;
	char path[] = "/tmp/test_smtpc_log.XXXXXX";
	struct tmsg t;
	char buf[8192];
	int fd = mkstemp(path);
	ssize_t n;

	assert_true(fd >= 0);
	assert_int_equal(log_open(path, 0, "info"), 0);
	connect_ready(f, &params_fast);
	tmsg_init(&t, "x\r\n", "a@test", "bad@test");
	t.m.mid = 6;
	drv_send(&f->d, &t.m);
	run_until(&f->d, &f->d.done, 1);
	drv_quit(&f->d);
	run_until(&f->d, &f->d.closed, 1);
	log_flush();
	n = read(fd, buf, sizeof(buf) - 1);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_non_null(strstr(buf, "DCID 7 New SMTP connection host=mx.test "
	    "addr=[127.0.0.1]:"));
	/* the gateway's words (issue 9 item 20) */
	assert_non_null(strstr(buf, "Info: Delivery start DCID 7 MID "
	    "0000000000000006 to RID [0] rcpt="));
	assert_non_null(strstr(buf, "Info: Delivery start DCID 7 MID "
	    "0000000000000006 to RID [1] rcpt="));
	assert_non_null(strstr(buf, "Info: Message done DCID 7 MID "
	    "0000000000000006 to RID [0] rcpt="));
	assert_non_null(strstr(buf, "Info: Rejected DCID 7 MID "
	    "0000000000000006 to RID [1] rcpt="));
	assert_non_null(strstr(buf, "DCID 7 close reason=quit"));
	log_open("-", 0, "warning");
	close(fd);
	unlink(path);
	tmsg_free(&t);
}

/* --- STARTTLS (RFC 3207) --- */

static const struct smtpc_params params_tls = {
	.helo = "client.test", .connect_timeout = 2, .command_timeout = 1,
	.data_timeout = 2,	/* .tls: 0, SMTPC_TLS_MAY, the default */
};

/* The commands the peer received, joined by '|'. */
static const char *
fp_cmds(struct fpeer *fp)
{
	static char buf[2048];
	size_t n = 0;

	buf[0] = '\0';
	for (int i = 0; i < fp->ncmd && n < sizeof(buf); i++)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s%s",
		    i ? "|" : "", fp->cmd[i]);
	return buf;
}

/* Offered: STARTTLS, the handshake with SNI, EHLO again, mail in TLS. */
static void
test_tls_may(void **state)
{
	struct fixture *f = *state;
	struct tmsg t;
	char *data;

	f->fp.tls_ctx = fp_tls_ctx();
	f->fp.ehlo_tls = "250-fake.test\r\n250 PIPELINING\r\n";
	connect_ready(f, &params_tls);
	assert_int_equal(smtpc_peer_tls(f->d.c), 1);
	assert_true(f->fp.tls_up);
	assert_string_equal(f->fp.sni, "mx.test");
	assert_string_equal(fp_cmds(&f->fp),
	    "EHLO client.test|STARTTLS|EHLO client.test");
	/* RFC 3207 4.2: only what the peer said in TLS counts */
	assert_int_equal(smtpc_peer_ext(f->d.c), SMTPC_EXT_PIPELINING);
	tmsg_init(&t, "hello\r\n", "a@test", NULL);
	drv_send(&f->d, &t.m);
	run_until(&f->d, &f->d.done, 1);
	assert_int_equal(t.r[0].code, 250);
	data = fp_data_str(&f->fp);
	assert_string_equal(data, "hello\r\n.\r\n");
	free(data);
	drv_quit(&f->d);
	run_until(&f->d, &f->d.closed, 1);
	assert_int_equal(f->fp.nconn, 1);
	tmsg_free(&t);
}

/* A reply pipelined after the 220 is never taken as the EHLO reply. */
static void
test_tls_reply_injection(void **state)
{
	struct fixture *f = *state;

	f->fp.tls_ctx = fp_tls_ctx();
	f->fp.starttls_extra = "250-evil.test\r\n250 SIZE 10\r\n";
	connect_ready(f, &params_tls);
	assert_int_equal(smtpc_peer_tls(f->d.c), 1);
	assert_int_equal(smtpc_peer_size(f->d.c), 100000);
	assert_string_equal(fp_cmds(&f->fp),
	    "EHLO client.test|STARTTLS|EHLO client.test");
}

/* An address literal is no server name: no SNI. */
static void
test_tls_no_sni_for_literal(void **state)
{
	struct fixture *f = *state;
	struct smtpc_addr a = addr4(f->fp.port, "127.0.0.1");

	f->fp.tls_ctx = fp_tls_ctx();
	drv_connect(&f->d, &params_tls, &a, 1);
	run_until(&f->d, &f->d.ready, 1);
	assert_true(f->fp.tls_up);
	assert_string_equal(f->fp.sni, "");
}

/* MAY and a refusal: on in plaintext on the same connection. */
static void
test_tls_refused_plaintext(void **state)
{
	struct fixture *f = *state;
	struct tmsg t;

	f->fp.tls_ctx = fp_tls_ctx();
	f->fp.starttls_reply = "454 4.7.0 TLS not available\r\n";
	connect_ready(f, &params_tls);
	assert_int_equal(smtpc_peer_tls(f->d.c), 0);
	tmsg_init(&t, "x\r\n", "a@test", NULL);
	drv_send(&f->d, &t.m);
	run_until(&f->d, &f->d.done, 1);
	assert_int_equal(t.r[0].code, 250);
	assert_string_equal(f->fp.cmd[1], "STARTTLS");
	assert_string_equal(f->fp.cmd[2], "MAIL FROM:<from@test> SIZE=3");
	assert_int_equal(f->fp.nconn, 1);
	tmsg_free(&t);
}

/* MAY and a broken handshake: the same address again, in plaintext. */
static void
test_tls_handshake_fails_plaintext_retry(void **state)
{
	struct fixture *f = *state;

	f->fp.tls_ctx = fp_tls_ctx();
	f->fp.tls_garbage = 1;
	connect_ready(f, &params_tls);
	assert_int_equal(f->d.failed, 0);
	assert_int_equal(f->fp.nconn, 2);
	assert_int_equal(smtpc_peer_tls(f->d.c), 0);
	assert_string_equal(fp_cmds(&f->fp),
	    "EHLO client.test|STARTTLS|EHLO client.test");
	assert_true(smtpc_peer_ext(f->d.c) & SMTPC_EXT_STARTTLS);
}

/* ENCRYPT: no offer, a refusal or a broken handshake fail the address. */
static void
test_tls_encrypt(void **state)
{
	struct fixture *f = *state;
	struct smtpc_params p = params_tls;
	struct smtpc_addr a = addr4(f->fp.port, "mx.test");
	static const struct {
		const char *ehlo, *reply;
		int garbage;
		const char *want;
	} cases[] = {
		{ "250-fake.test\r\n250 PIPELINING\r\n", NULL, 0,
		  "TLS required but not offered by mx.test[127.0.0.1]" },
		{ NULL, "454 4.7.0 Not now\r\n", 0, "TLS required but "
		  "mx.test[127.0.0.1] refused STARTTLS: 454 4.7.0 Not now" },
		{ NULL, NULL, 1, "TLS required but the handshake with "
		  "mx.test[127.0.0.1] failed: " },
	};

	p.tls = SMTPC_TLS_ENCRYPT;
	f->fp.tls_ctx = fp_tls_ctx();
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		f->fp.ehlo = cases[i].ehlo;
		f->fp.starttls_reply = cases[i].reply;
		f->fp.tls_garbage = cases[i].garbage;
		f->d.failed = 0;
		drv_connect(&f->d, &p, &a, 1);
		run_until(&f->d, &f->d.failed, 1);
		assert_int_equal(f->d.code, 0);
		assert_int_equal(f->d.ready, 0);
		assert_memory_equal(f->d.reason, cases[i].want,
		    strlen(cases[i].want));
		smtpc_free(f->d.c);
		f->d.c = NULL;
	}
	assert_int_equal(f->fp.nconn, 3);	/* no plaintext retry */
}

/* The operators' line: version and cipher on the DCID. */
static void
test_tls_log_line(void **state)
{
	struct fixture *f = *state;
	char path[] = "/tmp/test_smtpc_tls_log.XXXXXX";
	char buf[8192];
	int fd = mkstemp(path);
	ssize_t n;

	assert_true(fd >= 0);
	assert_int_equal(log_open(path, 0, "info"), 0);
	f->fp.tls_ctx = fp_tls_ctx();
	connect_ready(f, &params_tls);
	log_flush();
	n = read(fd, buf, sizeof(buf) - 1);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_non_null(strstr(buf, "DCID 7 TLS established "
	    "relay=mx.test[127.0.0.1] version=TLSv1.3 cipher=TLS_"));
	log_open("-", 0, "warning");
	close(fd);
	unlink(path);
}

/* --- LMTP (RFC 2033) and probes --- */

static const struct smtpc_params params_lmtp = {
	.helo = "client.test", .connect_timeout = 2, .command_timeout = 1,
	.data_timeout = 2, .tls = SMTPC_TLS_NONE, .lmtp = 1, .use_bdat = 1,
};

/* Three recipients: one refused at RCPT, one over quota after the data. */
static void
test_lmtp_per_rcpt(void **state)
{
	struct fixture *f = *state;
	struct tmsg t;

	f->fp.lmtp = 1;
	connect_ready(f, &params_lmtp);
	assert_string_equal(f->fp.cmd[0], "LHLO client.test");
	tmsg_init(&t, "Subject: l\r\n\r\nhi\r\n", "a@test", "bad@test");
	t.r[2].rid = 2;
	t.r[2].addr = "over@test";
	t.m.nrcpt = 3;
	drv_send(&f->d, &t.m);
	run_until(&f->d, &f->d.done, 1);
	assert_int_equal(t.r[0].code, 250);
	assert_string_equal(t.r[0].reply, "250 2.0.0 <a@test> Saved");
	assert_int_equal(t.r[1].code, 550);
	assert_int_equal(t.r[2].code, 452);
	assert_string_equal(t.r[2].reply, "452 4.2.2 <over@test> Mailbox is "
	    "full");
	/* DATA even though the peer offers CHUNKING */
	assert_string_equal(f->fp.cmd[5], "DATA");
	/* the connection goes on: a second message, one reply */
	tmsg_free(&t);
	tmsg_init(&t, "x\r\n", "b@test", NULL);
	drv_send(&f->d, &t.m);
	run_until(&f->d, &f->d.done, 2);
	assert_int_equal(t.r[0].code, 250);
	assert_string_equal(t.r[0].reply, "250 2.0.0 <b@test> Saved");
	tmsg_free(&t);
}

/* An LMTP server on a Unix socket; LHLO refused fails the address. */
static void
test_lmtp_unix(void **state)
{
	struct fixture *f = *state;
	struct fpeer u = { .lmtp = 1 };
	struct smtpc_addr a = { 0 };
	struct sockaddr_un *sun = (struct sockaddr_un *)&a.ss;
	struct tmsg t;

	snprintf(u.unix_path, sizeof(u.unix_path), "/tmp/sluice-lmtp-%d",
	    (int)getpid());
	fp_start(f->base, &u);
	sun->sun_family = AF_UNIX;
	snprintf(sun->sun_path, sizeof(sun->sun_path), "%s", u.unix_path);
	drv_connect(&f->d, &params_lmtp, &a, 1);
	run_until(&f->d, &f->d.ready, 1);
	assert_string_equal(smtpc_peer_addr(f->d.c), u.unix_path);
	tmsg_init(&t, "x\r\n", "over@test", "c@test");
	drv_send(&f->d, &t.m);
	run_until(&f->d, &f->d.done, 1);
	assert_int_equal(t.r[0].code, 452);
	assert_int_equal(t.r[1].code, 250);
	tmsg_free(&t);
	smtpc_free(f->d.c);

	memset(&f->d, 0, sizeof(f->d));
	f->d.base = f->base;
	u.ehlo = "500 5.5.1 Unknown command\r\n";
	drv_connect(&f->d, &params_lmtp, &a, 1);
	run_until(&f->d, &f->d.failed, 1);
	assert_int_equal(f->d.code, 500);
	assert_string_equal(u.cmd[u.ncmd - 1], "LHLO client.test");
	fp_stop(&u);
}

/* A probe: MAIL and RCPT, outcomes from RCPT, no data; RSET next. */
static void
test_probe(void **state)
{
	struct fixture *f = *state;
	struct tmsg t, u;

	f->fp.lmtp = 1;
	connect_ready(f, &params_lmtp);
	tmsg_init(&t, "", "good@test", "bad@test");
	t.m.probe = 1;
	drv_send(&f->d, &t.m);
	run_until(&f->d, &f->d.done, 1);
	assert_int_equal(t.r[0].code, 250);
	assert_int_equal(t.r[1].code, 550);
	for (int i = 0; i < f->fp.ncmd; i++)
		assert_false(fp_is(f->fp.cmd[i], "DATA"));
	tmsg_init(&u, "y\r\n", "z@test", NULL);
	drv_send(&f->d, &u.m);
	run_until(&f->d, &f->d.done, 2);
	assert_string_equal(f->fp.cmd[4], "RSET");
	assert_string_equal(u.r[0].reply, "250 2.0.0 <z@test> Saved");
	run_for(&f->d, 100);
	assert_int_equal(f->d.closed, 0);	/* no stray reply */
	tmsg_free(&t);
	tmsg_free(&u);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
		T(test_refused_then_next),
		T(test_all_refused),
		T(test_greeting_421),
		T(test_greeting_garbage_and_stall),
		T(test_ehlo_refused_helo),
		T(test_pipelined_two_rcpts),
		T(test_no_pipelining_all_rejected),
		T(test_mail_rejected_pipelined),
		T(test_reuse),
		T(test_send_from_done),
		T(test_free_from_callbacks),
		T(test_stall_rcpt),
		T(test_stall_end_of_data),
		T(test_garbage_reply),
		T(test_size_limit),
		T(test_smtputf8_needed),
		T(test_params_and_bdat),
		T(test_bdat_folds_long_lines),
		T(test_size_after_folding),
		T(test_idle_peer_closes),
		T(test_log_lines),
		T(test_tls_may),
		T(test_tls_reply_injection),
		T(test_tls_no_sni_for_literal),
		T(test_tls_refused_plaintext),
		T(test_tls_handshake_fails_plaintext_retry),
		T(test_tls_encrypt),
		T(test_tls_log_line),
		T(test_lmtp_per_rcpt),
		T(test_lmtp_unix),
		T(test_probe),
#undef T
	};

	log_open("-", 0, "warning");
	return cmocka_run_group_tests(tests, NULL, NULL);
}
