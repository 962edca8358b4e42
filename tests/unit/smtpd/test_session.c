/* SPDX-License-Identifier: MIT */
/*
 * test_session.c: the session of src/smtpd/session.c on a real listener
 * (127.0.0.1, a free port) and a real client socket in the same process,
 * for what a system test cannot set up on demand: input already buffered
 * in many pieces when the read callback runs, as it is under TLS, where
 * the OpenSSL filter decrypts records into 4 KB pieces and no new read
 * event comes for bytes it has already decrypted.
 *
 * The store answers at once and keeps the message it was given. Under
 * STARTTLS the client is an OpenSSL session on the same socket, driven
 * between turns of the loop; a check hook can break the server's TLS
 * session to make its next write fail (a fault no peer can cause on
 * demand).
 *
 * Run one test by name: test_session test_data_many_chains (a cmocka
 * filter pattern).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
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
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "conf/conf.h"
#include "log/log.h"
#include "smtpd/smtpd_int.h"
#include "spool/spool.h"
#include "util/util.h"

#include "../tlsctx.h"

#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

struct harness {
	struct event_base *base;
	struct sl_conf *conf;
	struct smtpd_server *srv;
	int fd;				/* the client's end */
	char got[65536];		/* replies read so far */
	size_t ngot;
	int stored;			/* messages the store was given */
	struct evbuffer *last;		/* the body of the last one */
	uint64_t mid;
	SSL_CTX *cctx;			/* the client's TLS, after STARTTLS */
	SSL *cssl;
	int break_tls_at_mail;		/* the check at MAIL fails TLS writes */
};

/*
 * MAIL with break_tls_at_mail: the server's TLS session is shut for
 * writing, so the refusal's SSL_write fails inside the read callback,
 * and the filter reports the error from there.
 */
static enum smtpd_check
h_check(void *arg, struct smtpd_session *s, enum smtpd_stage stage,
    const char *param, char *reply, size_t len)
{
	struct harness *h = arg;

	if (stage != SMTPD_STAGE_MAIL || !h->break_tls_at_mail)
		return SMTPD_CHECK_OK;
	SSL_set_shutdown(bufferevent_openssl_get_ssl(s->bev),
	    SSL_SENT_SHUTDOWN);
	snprintf(reply, len, "550 5.7.1 refused");
	return SMTPD_CHECK_REPLY;
}

static void
h_store(void *arg, struct smtpd_session *s, struct spool_msg *msg)
{
	struct harness *h = arg;

	h->stored++;
	if (h->last != NULL)
		evbuffer_free(h->last);
	h->last = msg->body;
	msg->body = NULL;
	spool_msg_free(msg);
	smtpd_session_stored(s, SPOOL_OK);
}

static uint64_t
h_mid(void *arg)
{
	struct harness *h = arg;

	return ++h->mid;
}

/* Turn the loop and read what the server wrote, until want appears. */
static void
h_until(struct harness *h, const char *want)
{
	for (int i = 0; i < 2000 && strstr(h->got, want) == NULL; i++) {
		struct pollfd p = { h->fd, POLLIN, 0 };
		ssize_t n;

		event_base_loop(h->base, EVLOOP_NONBLOCK);
		if (poll(&p, 1, 5) <= 0)
			continue;
		if (h->cssl != NULL)
			n = SSL_read(h->cssl, h->got + h->ngot,
			    (int)(sizeof(h->got) - 1 - h->ngot));
		else
			n = read(h->fd, h->got + h->ngot,
			    sizeof(h->got) - 1 - h->ngot);
		if (n > 0) {
			h->ngot += (size_t)n;
			h->got[h->ngot] = '\0';
		}
	}
	if (strstr(h->got, want) == NULL)
		fail_msg("no '%s' in replies: %s", want, h->got);
}

static void
h_send(struct harness *h, const char *text)
{
	if (h->cssl != NULL)
		assert_int_equal(SSL_write(h->cssl, text, (int)strlen(text)),
		    (int)strlen(text));
	else
		assert_int_equal(write(h->fd, text, strlen(text)),
		    (ssize_t)strlen(text));
}

/* STARTTLS and the handshake, the client's side driven between turns. */
static void
h_starttls(struct harness *h)
{
	int r = 0;

	h->srv->tls_ctx = test_tls_server_ctx();
	h_send(h, "EHLO client.test\r\n");
	h_until(h, "250 CHUNKING");
	h_send(h, "STARTTLS\r\n");
	h_until(h, "220 2.0.0");
	h->ngot = 0;
	h->got[0] = '\0';
	h->cctx = SSL_CTX_new(TLS_client_method());
	h->cssl = SSL_new(h->cctx);
	SSL_set_fd(h->cssl, h->fd);
	fcntl(h->fd, F_SETFL, fcntl(h->fd, F_GETFL) | O_NONBLOCK);
	for (int i = 0; i < 2000 && (r = SSL_connect(h->cssl)) != 1; i++) {
		int e = SSL_get_error(h->cssl, r);
		assert_true(e == SSL_ERROR_WANT_READ ||
		    e == SSL_ERROR_WANT_WRITE);
		event_base_loop(h->base, EVLOOP_NONBLOCK);
		poll(&(struct pollfd){ h->fd, POLLIN, 0 }, 1, 5);
	}
	assert_int_equal(r, 1);
	h_send(h, "EHLO client.test\r\n");
	h_until(h, "250 CHUNKING");
}

static int
h_setup(void **state)
{
	struct harness *h = xcalloc(1, sizeof(*h));
	struct smtpd_ops ops = {
		.store = h_store,
		.check = h_check,
		.mid_next = h_mid,
		.arg = h,
		.no_received = 1,
	};
	struct sockaddr_in sin = { .sin_family = AF_INET };
	char err[256];

	log_open("/dev/null", 0, "info");
	h->base = event_base_new();
	h->conf = conf_load(NULL, err, sizeof(err));
	assert_non_null(h->conf);
	assert_int_equal(conf_override(h->conf, "server.listen=127.0.0.1:0",
	    err, sizeof(err)), 0);
	h->srv = smtpd_server_new(h->base, h->conf, &ops);
	assert_int_equal(smtpd_server_listen(h->srv, err, sizeof(err)), 0);
	sin.sin_port = htons((uint16_t)smtpd_server_port(h->srv));
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	h->fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(connect(h->fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	h_until(h, "220 ");
	*state = h;
	return 0;
}

static int
h_teardown(void **state)
{
	struct harness *h = *state;

	SSL_free(h->cssl);
	SSL_CTX_free(h->cctx);
	close(h->fd);
	smtpd_server_free(h->srv);
	if (h->last != NULL)
		evbuffer_free(h->last);
	conf_free(h->conf);
	event_base_free(h->base);
	log_close();
	free(h);
	return 0;
}

/* The one session of the harness's server. */
static struct smtpd_session *
h_session(struct harness *h)
{
	struct smtpd_session *s = TAILQ_FIRST(&h->srv->sessions);

	assert_non_null(s);
	return s;
}

static const char *const lines[] = {
	"Subject: many pieces\r\n", "\r\n", "one\r\n", "two\r\n", "three\r\n",
	"four\r\n", "five\r\n", "six\r\n", "seven\r\n", "eight\r\n",
	"nine\r\n", "ten\r\n", "..eleven\r\n", "twelve\r\n", ".\r\n",
};

/*
 * The whole body and its final dot are in the session's input, one line
 * per evbuffer chain (15 chains), when the read callback runs once: the
 * message must be stored and answered without another read event.
 */
static void
test_data_many_chains(void **state)
{
	struct harness *h = *state;
	struct smtpd_session *s;
	struct evbuffer *in;
	char body[512];
	size_t len;

	h_send(h, "EHLO client.test\r\nMAIL FROM:<a@client.test>\r\n"
	    "RCPT TO:<b@local.test>\r\nDATA\r\n");
	h_until(h, "354 ");
	s = h_session(h);
	assert_int_equal(s->state, SMTPD_ST_DATA);
	in = bufferevent_get_input(s->bev);
	/* the bufferevent freezes its input's end but around its reads */
	evbuffer_unfreeze(in, 0);
	for (size_t i = 0; i < SL_ARRAY_LEN(lines); i++)
		assert_int_equal(evbuffer_add_reference(in, lines[i],
		    strlen(lines[i]), NULL, NULL), 0);
	evbuffer_freeze(in, 0);
	assert_true(evbuffer_peek(in, -1, NULL, NULL, 0) > 8);
	bufferevent_trigger(s->bev, EV_READ, BEV_TRIG_IGNORE_WATERMARKS);
	assert_int_equal(h->stored, 1);
	assert_int_equal(evbuffer_get_length(in), 0);
	h_until(h, "250 2.0.0 Ok: queued as");
	len = evbuffer_get_length(h->last);
	assert_true(len < sizeof(body));
	evbuffer_remove(h->last, body, len);
	body[len] = '\0';
	assert_string_equal(body, "Subject: many pieces\r\n\r\none\r\ntwo\r\n"
	    "three\r\nfour\r\nfive\r\nsix\r\nseven\r\neight\r\nnine\r\nten\r\n"
	    ".eleven\r\ntwelve\r\n");
}

/*
 * After STARTTLS, a reply written inside the read callback fails in TLS
 * (SSL_write refuses: the session is shut), and the filter reports the
 * error from inside that write. The session must outlive the callback it
 * runs in and be freed once, when the callback returns: on main it was
 * freed inside the write and used after (ASan: heap-use-after-free in
 * smtpd_reject).
 */
static void
test_tls_write_error_in_read_callback(void **state)
{
	struct harness *h = *state;

	h_starttls(h);
	h->break_tls_at_mail = 1;
	h_send(h, "MAIL FROM:<a@client.test>\r\nNOOP\r\nNOOP\r\n");
	for (int i = 0; i < 500 && h->srv->stats.sessions > 0; i++) {
		event_base_loop(h->base, EVLOOP_NONBLOCK);
		poll(NULL, 0, 2);
	}
	assert_int_equal(h->srv->stats.sessions, 0);
	assert_null(TAILQ_FIRST(&h->srv->sessions));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_data_many_chains, h_setup,
		    h_teardown),
		cmocka_unit_test_setup_teardown(
		    test_tls_write_error_in_read_callback, h_setup, h_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
