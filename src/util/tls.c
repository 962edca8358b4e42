/* SPDX-License-Identifier: MIT */
/*
 * tls.c: OpenSSL contexts for STARTTLS (RFC 3207) and the words logs use
 * about a TLS connection.
 *
 * Owns the process's client context (one SSL_CTX for every outbound
 * connection, made on first use and kept until exit). Server contexts
 * belong to their caller (smtpd keeps one per server). Both sides end a
 * TLS session they close with a close_notify (sl_tls_close_notify).
 * Callers: src/smtpd/tls.c, src/smtpc/session.c.
 *
 * Both sides refuse anything older than TLS 1.2. The client does not
 * verify certificates: opportunistic TLS protects against a passive
 * listener only, as Postfix's "may" level does (RFC 7435).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/x509.h>

#include "util/tls.h"
#include "util/util.h"

static SSL_CTX *sl_tls_client;

static SSL_CTX *
sl_tls_ctx_new(const SSL_METHOD *method)
{
	SSL_CTX *ctx = SSL_CTX_new(method);

	if (ctx == NULL)
		return NULL;
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	/* an idle connection keeps no 34 KB read and write buffers */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
	return ctx;
}

SSL_CTX *
sl_tls_client_ctx(void)
{
	if (sl_tls_client == NULL) {
		sl_tls_client = sl_tls_ctx_new(TLS_client_method());
		if (sl_tls_client != NULL)
			SSL_CTX_set_verify(sl_tls_client, SSL_VERIFY_NONE, NULL);
	}
	return sl_tls_client;
}

/* The OpenSSL error e as "reason" (without the library's prefix). */
static const char *
sl_tls_reason(unsigned long e, char *buf, size_t len)
{
	const char *r = ERR_reason_error_string(e);

	if (r != NULL)
		snprintf(buf, len, "%s", r);
	else
		ERR_error_string_n(e, buf, len);
	return buf;
}

/* "file: not a PEM what (why)" for a PEM file that did not load. */
static void
sl_tls_file_err(const char *path, const char *what, char *err, size_t errlen)
{
	unsigned long e = ERR_peek_error();	/* the first says why */
	char why[256];

	if (e != 0 && ERR_GET_LIB(e) == ERR_LIB_X509 &&
	    ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH)
		snprintf(err, errlen, "%s: the key does not match the "
		    "certificate", path);
	else if (e == 0 || ERR_GET_LIB(e) == ERR_LIB_SYS)
		snprintf(err, errlen, "%s: %s", path, strerror(e ?
		    ERR_GET_REASON(e) : errno ? errno : EINVAL));
	else
		snprintf(err, errlen, "%s: not a PEM %s (%s)", path, what,
		    sl_tls_reason(e, why, sizeof(why)));
	ERR_clear_error();
}

SSL_CTX *
sl_tls_server_ctx_new(const char *cert, const char *key, int *bad_key,
    char *err, size_t errlen)
{
	SSL_CTX *ctx;
	FILE *f;

	*bad_key = 0;
	if (key == NULL || key[0] == '\0')
		key = cert;
	if ((ctx = sl_tls_ctx_new(TLS_server_method())) == NULL) {
		snprintf(err, errlen, "%s: cannot create a TLS context", cert);
		return NULL;
	}
	/* fopen first: a missing file is then named with its errno */
	if ((f = fopen(cert, "r")) == NULL) {
		snprintf(err, errlen, "%s: %s", cert, strerror(errno));
		goto fail;
	}
	fclose(f);
	errno = 0;
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
		sl_tls_file_err(cert, "certificate", err, errlen);
		goto fail;
	}
	*bad_key = 1;
	if ((f = fopen(key, "r")) == NULL) {
		snprintf(err, errlen, "%s: %s", key, strerror(errno));
		goto fail;
	}
	fclose(f);
	errno = 0;
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
		sl_tls_file_err(key, "private key", err, errlen);
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		snprintf(err, errlen, "%s: the key does not match the "
		    "certificate %s", key, cert);
		ERR_clear_error();
		goto fail;
	}
	*bad_key = 0;
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

const char *
sl_tls_error(struct bufferevent *bev, const char *fallback, char *buf,
    size_t len)
{
	unsigned long e = 0, next;

	/* libevent keeps the errors of the connection; the first says why */
	while (bev != NULL && (next = bufferevent_get_openssl_error(bev)) != 0)
		e = next;
	if (e == 0)
		e = ERR_get_error();
	ERR_clear_error();
	if (e == 0)
		snprintf(buf, len, "%s", fallback);
	else
		sl_tls_reason(e, buf, len);
	return buf;
}

const char *
sl_tls_version(struct bufferevent *bev)
{
	SSL *ssl = bev ? bufferevent_openssl_get_ssl(bev) : NULL;

	return ssl ? SSL_get_version(ssl) : "";
}

const char *
sl_tls_cipher(struct bufferevent *bev)
{
	SSL *ssl = bev ? bufferevent_openssl_get_ssl(bev) : NULL;
	const char *c = ssl ? SSL_get_cipher_name(ssl) : NULL;

	return c ? c : "";
}

int
sl_tls_close_notify(struct bufferevent *bev)
{
	SSL *ssl = bufferevent_openssl_get_ssl(bev);
	struct bufferevent *under = bufferevent_get_underlying(bev);
	size_t low = 0, high = 0;
	int r;

	if (ssl == NULL || under == NULL || !SSL_is_init_finished(ssl))
		return -1;
	/* the alert goes whole, a record's bytes past the socket's mark,
	 * rather than wait for a peer that may never read */
	bufferevent_getwatermark(under, EV_WRITE, &low, &high);
	bufferevent_setwatermark(under, EV_WRITE, low, 0);
	r = SSL_shutdown(ssl);
	bufferevent_setwatermark(under, EV_WRITE, low, high);
	ERR_clear_error();
	return r < 0 ? -1 : 0;
}

void
sl_tls_push(struct bufferevent *bev)
{
	struct bufferevent *under = bufferevent_get_underlying(bev);
	struct evbuffer *out;

	if (under == NULL)
		return;
	out = bufferevent_get_output(under);
	if (evbuffer_get_length(out) == 0)
		return;
	/* the bufferevent freezes its output's front but around its own
	 * writes; an error is the peer's business now */
	evbuffer_unfreeze(out, 1);
	(void)evbuffer_write(out, bufferevent_getfd(under));
	evbuffer_freeze(out, 1);
}
