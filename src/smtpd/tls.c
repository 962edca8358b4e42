/* SPDX-License-Identifier: MIT */
/*
 * tls.c: STARTTLS on the server side (RFC 3207): the server's TLS context
 * from [server] tls_cert and tls_key, the STARTTLS command, implicit TLS
 * on [submission] tls_listen (RFC 8314: the handshake first, then the
 * greeting, in TLS), and the end of a closing TLS session: its
 * close_notify and the wait for its last bytes.
 *
 * STARTTLS replies 220 in plaintext, then puts a libevent OpenSSL filter
 * (BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE: freeing it frees the
 * socket's bufferevent and the SSL) over the socket's bufferevent, which
 * from then on only the filter touches; s->bev is the filter.
 * Callers: session.c (the command, the events, closing), listener.c (the
 * context at start and reload).
 *
 * Invariants
 *  1. No byte the client sent before the handshake reaches the session
 *     after it: what is buffered after the STARTTLS line is dropped before
 *     the filter is made (the command injection of CVE-2011-0411).
 *  2. STARTTLS is offered and taken at most once per session, outside a
 *     transaction; after it the session is back in GREET (session.c's
 *     smtpd_session_restart), so the client must say EHLO again.
 *  3. A closing TLS session is freed only once the socket's bufferevent
 *     has written the ciphertext of the last reply, or its write timeout
 *     fired (the filter's output drains into it, not into the socket).
 *  4. A session we close (QUIT, timeout, too many errors, shutdown) ends
 *     its TLS with a close_notify after the last reply (RFC 8446 6.1), in
 *     the same bounded wait: a client that never reads meets the 10 s
 *     write timeout. One that left first (EOF, error) gets none.
 */
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>

#include "log/log.h"
#include "smtpd/smtpd_int.h"
#include "util/tls.h"
#include "util/util.h"

#define SMTPD_TLS_IDS(s) (&(struct log_ids){ (s)->icid, 0, 0, -1 })

static void smtpd_tls_wrap(struct smtpd_session *s, SSL *ssl);

int
smtpd_tls_load(struct smtpd_server *srv, const struct sl_conf *conf,
    char *err, size_t errlen)
{
	SSL_CTX *ctx = NULL;
	char why[512];
	int bad_key;

	if (conf->server_tls_cert[0] == '\0' && conf->server_tls_key[0] != '\0') {
		snprintf(err, errlen, "[server] tls_key %s: tls_cert is not set",
		    conf->server_tls_key);
		return -1;
	}
	if (conf->server_tls_cert[0] != '\0') {
		ctx = sl_tls_server_ctx_new(conf->server_tls_cert,
		    conf->server_tls_key, &bad_key, why, sizeof(why));
		if (ctx == NULL) {
			snprintf(err, errlen, "[server] %s %s", bad_key &&
			    conf->server_tls_key[0] ? "tls_key" : "tls_cert", why);
			return -1;
		}
	}
	/* sessions in TLS hold their own reference to the old context */
	SSL_CTX_free(srv->tls_ctx);
	srv->tls_ctx = ctx;
	return 0;
}

/* RFC 3207 4: the checks before the 220; 0 if STARTTLS may go on. */
static int
smtpd_starttls_refused(struct smtpd_session *s, const char *arg)
{
	if (s->srv->tls_ctx == NULL) {
		smtpd_reject(s, "STARTTLS", "502 5.5.1 Command not implemented");
	} else if (s->tls) {
		smtpd_reject(s, "STARTTLS", "503 5.5.1 Error: TLS already active");
	} else if (*arg != '\0') {
		smtpd_reject(s, "STARTTLS", "501 5.5.4 Syntax: STARTTLS");
	} else if (s->state == SMTPD_ST_GREET) {
		smtpd_reject(s, "STARTTLS", "503 5.5.1 Error: send EHLO first");
	} else if (s->state != SMTPD_ST_IDLE) {
		smtpd_reject(s, "STARTTLS", "503 5.5.1 Error: MAIL transaction "
		    "in progress");
	} else {
		return 0;
	}
	return 1;
}

int
smtpd_cmd_starttls(struct smtpd_session *s, const char *arg)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);
	size_t junk;
	SSL *ssl;

	if (smtpd_starttls_refused(s, arg))
		return 0;
	if ((ssl = SSL_new(s->srv->tls_ctx)) == NULL) {
		smtpd_reject(s, "STARTTLS", "454 4.7.0 TLS not available due "
		    "to temporary reason");
		return 0;
	}
	smtpd_reply(s, "220 2.0.0 Ready to start TLS");
	/* invariant 1: pipelined bytes after STARTTLS are not commands */
	if ((junk = evbuffer_get_length(in)) > 0) {
		char n[24];
		snprintf(n, sizeof(n), "%zu", junk);
		log_ev(LOG_INFO, SMTPD_TLS_IDS(s), "discarded input after "
		    "STARTTLS", "bytes", n, NULL);
		evbuffer_drain(in, junk);
	}
	/* the 220 goes out in the clear */
	smtpd_flush(s);
	smtpd_tls_wrap(s, ssl);
	return 1;
}

/* Put the TLS filter (accepting) over the socket's bufferevent. */
static void
smtpd_tls_wrap(struct smtpd_session *s, SSL *ssl)
{
	struct bufferevent *under = s->bev, *bev;

	/* the socket's own writes are the filter's from now on */
	bufferevent_enable(under, EV_WRITE);
	/* the filter keeps the timeouts from now on (session.c sets them) */
	bufferevent_set_timeouts(under, NULL, NULL);
	/* the filter moves ciphertext into the socket's output only up to
	 * this mark and keeps the rest, so its own output shows a client
	 * that does not read (session.c smtpd_out_full) */
	bufferevent_setwatermark(under, EV_WRITE, 0, SMTPD_OUT_MAX);
	bev = bufferevent_openssl_filter_new(s->srv->base, under, ssl,
	    BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL)	/* only out of memory */
		SL_PANIC("smtpd: bufferevent_openssl_filter_new failed");
	/* a client that closes without close_notify is an EOF, not an error */
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	s->bev = bev;
	s->tls = 1;
}

int
smtpd_tls_implicit(struct smtpd_session *s)
{
	SSL *ssl;

	if (s->srv->tls_ctx == NULL || (ssl = SSL_new(s->srv->tls_ctx)) == NULL)
		return -1;
	smtpd_tls_wrap(s, ssl);
	smtpd_session_setcb(s);
	bufferevent_set_timeouts(s->bev, &(struct timeval){
	    s->srv->conf->server_command_timeout, 0 }, NULL);
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
	return 0;
}

void
smtpd_tls_established(struct smtpd_session *s)
{
	log_ev(LOG_INFO, SMTPD_TLS_IDS(s), "TLS established", "version",
	    sl_tls_version(s->bev), "cipher", sl_tls_cipher(s->bev), NULL);
}

const char *
smtpd_tls_error(struct smtpd_session *s, char *buf, size_t len)
{
	char why[200];

	sl_tls_error(s->bev, evutil_socket_error_to_string(
	    EVUTIL_SOCKET_ERROR()), why, sizeof(why));
	snprintf(buf, len, "TLS: %s", why);
	return buf;
}

/* The socket's output buffer changed: free a closing session once empty. */
static void
smtpd_tls_flushed(struct evbuffer *buf, const struct evbuffer_cb_info *info,
    void *arg)
{
	struct smtpd_session *s = arg;

	if (info->n_deleted > 0 && evbuffer_get_length(buf) == 0 &&
	    s->state == SMTPD_ST_CLOSING && !s->in_read &&
	    evbuffer_get_length(bufferevent_get_output(s->bev)) == 0)
		smtpd_session_free(s, "closed");
}

int
smtpd_session_flushed(struct smtpd_session *s)
{
	struct bufferevent *under;
	struct evbuffer *out;

	/* no reply goes out before the handshake ends: nothing to wait for */
	if (s->tls && !SSL_is_init_finished(bufferevent_openssl_get_ssl(s->bev)))
		return 1;
	if (evbuffer_get_length(bufferevent_get_output(s->bev)) > 0)
		return 0;
	if (!s->tls || (under = bufferevent_get_underlying(s->bev)) == NULL)
		return 1;
	out = bufferevent_get_output(under);
	if (s->flush_cb == NULL) {
		/* invariant 4: the last reply is ciphertext now; the
		 * close_notify goes behind it */
		(void)sl_tls_close_notify(s->bev);
		if (evbuffer_get_length(out) == 0)
			return 1;
		s->flush_cb = evbuffer_add_cb(out, smtpd_tls_flushed, s);
		/* a client that reads nothing more: its TIMEOUT reaches us */
		bufferevent_set_timeouts(under, NULL,
		    &(struct timeval){ 10, 0 });
	}
	return evbuffer_get_length(out) == 0;
}

void
smtpd_tls_session_free(struct smtpd_session *s)
{
	struct bufferevent *under;

	if (s->flush_cb == NULL)
		return;
	if ((under = bufferevent_get_underlying(s->bev)) != NULL)
		evbuffer_remove_cb_entry(bufferevent_get_output(under),
		    s->flush_cb);
	s->flush_cb = NULL;
}
