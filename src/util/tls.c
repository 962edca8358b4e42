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
 * Both sides refuse anything older than TLS 1.2. The client context of
 * the "may" and "encrypt" levels does not verify certificates:
 * opportunistic TLS protects against a passive listener only, as
 * Postfix's levels of those names do (RFC 7435). The "verify" level has
 * its own context with the CA file's (or the system's) trust anchors;
 * the chain and the host name (RFC 6125) are checked once the handshake
 * is done (sl_tls_client_verified), so the reason can name what the peer
 * presented.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "util/tls.h"
#include "util/util.h"

static SSL_CTX *sl_tls_client;
static SSL_CTX *sl_tls_verify;		/* for sl_tls_verify_ca */
static char *sl_tls_verify_ca;

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

SSL_CTX *
sl_tls_client_verify_ctx(const char *ca_file, char *err, size_t errlen)
{
	SSL_CTX *ctx;
	int ok;

	if (ca_file == NULL)
		ca_file = "";
	if (sl_tls_verify != NULL && strcmp(sl_tls_verify_ca, ca_file) == 0)
		return sl_tls_verify;
	if ((ctx = sl_tls_ctx_new(TLS_client_method())) == NULL) {
		snprintf(err, errlen, "cannot create a TLS context");
		return NULL;
	}
	ok = ca_file[0] == '\0' ? SSL_CTX_set_default_verify_paths(ctx) :
	    SSL_CTX_load_verify_locations(ctx, ca_file, NULL);
	if (ok != 1) {
		snprintf(err, errlen, "[delivery] tls_ca_file %s: no CA "
		    "certificates loaded", ca_file[0] ? ca_file : "(system)");
		ERR_clear_error();
		SSL_CTX_free(ctx);
		return NULL;
	}
	/* checked after the handshake, for a reason that names the cause */
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	/* SSL objects still open hold their own reference to the old one */
	SSL_CTX_free(sl_tls_verify);
	free(sl_tls_verify_ca);
	sl_tls_verify = ctx;
	sl_tls_verify_ca = xstrdup(ca_file);
	return ctx;
}

int
sl_tls_client_expect(SSL *ssl, const char *name)
{
	unsigned char bin[16];

	if (inet_pton(AF_INET, name, bin) == 1 ||
	    inet_pton(AF_INET6, name, bin) == 1)
		return X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl),
		    name) == 1 ? 0 : -1;
	SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	return SSL_set1_host(ssl, name) == 1 ? 0 : -1;
}

/* The DNS names (else the CN) of cert, comma-separated, into buf. */
static void
sl_tls_cert_names(X509 *cert, char *buf, size_t len)
{
	GENERAL_NAMES *sans = X509_get_ext_d2i(cert, NID_subject_alt_name,
	    NULL, NULL);
	size_t n = 0;

	buf[0] = '\0';
	for (int i = 0; sans != NULL && i < sk_GENERAL_NAME_num(sans); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
		if (g->type != GEN_DNS)
			continue;
		n += (size_t)snprintf(buf + n, n < len ? len - n : 0, "%s%.*s",
		    n ? ", " : "", ASN1_STRING_length(g->d.dNSName),
		    (const char *)ASN1_STRING_get0_data(g->d.dNSName));
	}
	GENERAL_NAMES_free(sans);
	if (n == 0)
		X509_NAME_get_text_by_NID(X509_get_subject_name(cert),
		    NID_commonName, buf, (int)len);
	if (buf[0] == '\0')
		snprintf(buf, len, "no name");
}

int
sl_tls_client_verified(SSL *ssl, const char *name, char *err, size_t errlen)
{
	X509 *cert = SSL_get0_peer_certificate(ssl);
	long rc = SSL_get_verify_result(ssl);
	char names[512];

	if (cert == NULL) {
		snprintf(err, errlen, "certificate verification failed: the "
		    "server sent no certificate");
		return -1;
	}
	if (rc == X509_V_OK)
		return 0;
	if (rc == X509_V_ERR_HOSTNAME_MISMATCH || rc == X509_V_ERR_IP_ADDRESS_MISMATCH) {
		sl_tls_cert_names(cert, names, sizeof(names));
		snprintf(err, errlen, "certificate name mismatch: %s is not "
		    "among the certificate's names (%s)", name, names);
		return -1;
	}
	snprintf(err, errlen, "certificate verification failed: %s",
	    X509_verify_cert_error_string(rc));
	return -1;
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
