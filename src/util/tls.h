/* SPDX-License-Identifier: MIT */
/*
 * tls.h: the OpenSSL contexts and the small helpers that the STARTTLS of
 * smtpd (server) and smtpc (client) share.
 *
 * Threads: the event loop thread (the client context is created lazily,
 * without a lock).
 */
#ifndef SL_TLS_H
#define SL_TLS_H

#include <stddef.h>

#include <openssl/ssl.h>

struct bufferevent;

/*
 * The process's one client context (TLS 1.2 or later, no certificate
 * verification: opportunistic), created on first use; NULL if OpenSSL
 * cannot make one. Borrowed: never free it.
 */
SSL_CTX *sl_tls_client_ctx(void);

/*
 * The client context that verifies (levels "verify"): trusts the CAs of
 * ca_file, or the system's store when ca_file is NULL or "". Made on first
 * use and again when ca_file changes (a reload); NULL with the reason in
 * err when the file does not load. Borrowed: never free it.
 */
SSL_CTX *sl_tls_client_verify_ctx(const char *ca_file, char *err,
    size_t errlen);
/*
 * After the handshake of an SSL made with sl_tls_client_verify_ctx and
 * sl_tls_client_expect(): 0 if the peer's chain verified and its
 * certificate is for the name, else -1 with the reason in err
 * ("certificate name mismatch: ..." or "certificate verification
 * failed: ...").
 */
int sl_tls_client_verified(SSL *ssl, const char *name, char *err,
    size_t errlen);
/*
 * Ask ssl to check the peer for name (RFC 6125: DNS-ID in the subject
 * alternative names, CN only without them, wildcards only as the whole
 * leftmost label) or, for an address literal, for that IP address.
 * Returns 0, or -1 if the name cannot be set.
 */
int sl_tls_client_expect(SSL *ssl, const char *name);

/*
 * A new server context (TLS 1.2 or later) with the certificate chain of
 * cert (PEM) and the private key of key (PEM; NULL or "": the key is in
 * cert). Returns NULL with the problem in err, which starts with the file
 * it is about: "/etc/c.pem: No such file or directory". *bad_key is set
 * to 1 when the key file was at fault, else 0. Free with SSL_CTX_free().
 */
SSL_CTX *sl_tls_server_ctx_new(const char *cert, const char *key,
    int *bad_key, char *err, size_t errlen);

/*
 * Why a TLS bufferevent failed: its oldest OpenSSL error, or the thread's,
 * or fallback. Writes into buf and returns it.
 */
const char *sl_tls_error(struct bufferevent *bev, const char *fallback,
    char *buf, size_t len);

/* The protocol and cipher of a TLS bufferevent ("TLSv1.3"); "" if none. */
const char *sl_tls_version(struct bufferevent *bev);
const char *sl_tls_cipher(struct bufferevent *bev);

/*
 * RFC 8446 6.1 (RFC 5246 7.2.1): a TLS filter bufferevent closing on our
 * side sends close_notify. Queues the alert in the socket's bufferevent,
 * behind the ciphertext already there (call it once the filter's own
 * output is empty), whatever that buffer's write mark. 0 if queued, -1 if
 * not (no handshake done, or the session failed).
 */
int sl_tls_close_notify(struct bufferevent *bev);
/*
 * Write what a TLS filter's socket bufferevent holds straight to the
 * socket, now, as far as the socket takes it: for a connection about to
 * be freed, which waits for nothing (the rest is dropped with it).
 */
void sl_tls_push(struct bufferevent *bev);

#endif
