/* SPDX-License-Identifier: MIT */
/*
 * tlsctx.h: a TLS server context for the unit tests that speak TLS on
 * both ends in one process (tests/unit/smtpd, tests/unit/smtpc): a
 * self-signed P-256 certificate for mx.test, made in memory. Include it
 * once per test program, after <cmocka.h>.
 */
#ifndef SL_TEST_TLSCTX_H
#define SL_TEST_TLSCTX_H

#include <openssl/ssl.h>
#include <openssl/x509.h>

/* A new server context (SSL_CTX_free) with the certificate and its key. */
static SSL_CTX *
test_tls_server_ctx(void)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	X509_NAME *name = X509_get_subject_name(x);
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	assert_non_null(key);
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_set_pubkey(x, key);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
	    (const unsigned char *)"mx.test", -1, -1, 0);
	X509_set_issuer_name(x, name);
	assert_true(X509_sign(x, key, EVP_sha256()) > 0);
	assert_int_equal(SSL_CTX_use_certificate(ctx, x), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey(ctx, key), 1);
	X509_free(x);
	EVP_PKEY_free(key);
	return ctx;
}

#endif
