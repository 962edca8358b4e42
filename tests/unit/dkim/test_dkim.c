/* SPDX-License-Identifier: MIT */
/*
 * test_dkim.c: src/dkim: the relaxed canonicalisation examples of RFC 6376
 * 3.4.5 and more edge cases (empty body, trailing white space, bare LF,
 * lone CR, a body split anywhere), header field splitting, the From:
 * domain, [dkim] sign specs, key look-up by parent domain, and a
 * signature that OpenSSL verifies with the public key (python3-dkim
 * verifies them end to end in tests/system/test_dkim.py).
 *
 * Run one test by name: test_dkim test_body (a cmocka filter pattern).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <openssl/evp.h>

#include "dkim/dkim.h"

struct out {
	char buf[4096];
	size_t n;
};

static void
emit(void *arg, const char *p, size_t n)
{
	struct out *o = arg;

	assert_true(o->n + n <= sizeof(o->buf));
	memcpy(o->buf + o->n, p, n);
	o->n += n;
}

/* The body canonicalised whole and split at every point: all the same. */
static void
body_is(const char *in, const char *want)
{
	size_t n = strlen(in);

	for (size_t cut = 0; cut <= n; cut++) {
		struct out o = { .n = 0 };
		struct dkim_body b;
		dkim_body_init(&b, emit, &o);
		dkim_body_feed(&b, in, cut);
		dkim_body_feed(&b, in + cut, n - cut);
		dkim_body_end(&b);
		if (o.n != strlen(want) || memcmp(o.buf, want, o.n) != 0)
			fail_msg("body \"%s\" cut %zu: got \"%.*s\", want \"%s\"",
			    in, cut, (int)o.n, o.buf, want);
	}
}

static void
test_body(void **state)
{
	/* RFC 6376 3.4.5 */
	body_is(" C \r\nD \t E\r\n\r\n\r\n", " C\r\nD E\r\n");
	body_is("", "");
	body_is("\r\n\r\n", "");
	body_is("  \r\n\t\r\n", "");
	body_is("x", "x\r\n");
	body_is("a\r\n\r\nb\r\n", "a\r\n\r\nb\r\n");
	body_is("a\nb\n", "a\r\nb\r\n");		/* bare LF ends a line */
	body_is("a\rb\r\n", "a\rb\r\n");		/* a lone CR stays */
	body_is("a \r", "a \r\r\n");
	body_is("\t lead\r\n", " lead\r\n");
}

static void
header_is(const char *in, const char *want)
{
	char out[512];
	size_t n = dkim_canon_header(in, strlen(in), 1, NULL, 0);

	assert_int_equal(dkim_canon_header(in, strlen(in), 1, out,
	    sizeof(out)), n);
	if (n != strlen(want) || memcmp(out, want, n) != 0)
		fail_msg("header \"%s\": got \"%.*s\"", in, (int)n, out);
}

static void
test_header(void **state)
{
	/* RFC 6376 3.4.5 */
	header_is("A: X\r\n", "a:X\r\n");
	header_is("B : Y\t\r\n\tZ  \r\n", "b:Y Z\r\n");
	header_is("Subject:\r\n", "subject:\r\n");
	header_is("X-Long:  a  b\r\n  c\r\n", "x-long:a b c\r\n");
}

static void
test_fields_and_from(void **state)
{
	static const char hdr[] = "Received: from x\r\n\tby y\r\n"
	    "From: \"Doe, J\" <J.Doe@Mail.Example.TEST>\r\nbad line\r\n"
	    " cont of bad\r\nTo: a@b\r\n";
	struct dkim_field f[8];
	char d[64];
	size_t n = dkim_fields(hdr, sizeof(hdr) - 1, f, 8);

	assert_int_equal(n, 3);
	assert_int_equal(f[0].rawlen, strlen("Received: from x\r\n\tby y\r\n"));
	assert_int_equal(f[1].namelen, 4);
	assert_int_equal(dkim_from_domain(f[1].raw, f[1].rawlen, d,
	    sizeof(d)), 0);
	assert_string_equal(d, "mail.example.test");
	assert_int_equal(f[2].rawlen, strlen("To: a@b\r\n"));
	assert_int_equal(dkim_from_domain("From: a@b.test (x <c@d.test>)", 29,
	    d, sizeof(d)), 0);
	assert_string_equal(d, "b.test");
	assert_int_equal(dkim_from_domain("From: undisclosed", 17, d,
	    sizeof(d)), -1);
	assert_int_equal(dkim_from_domain("From: <a@b!c>", 13, d, sizeof(d)),
	    -1);
}

static void
test_spec(void **state)
{
	char *d, *s, *p, err[256];

	assert_int_equal(dkim_spec_parse("Ex.TEST:s2026:/k/a:b.key", &d, &s, &p,
	    err, sizeof(err)), 0);
	assert_string_equal(d, "ex.test");
	assert_string_equal(s, "s2026");
	assert_string_equal(p, "/k/a:b.key");
	free(d), free(s), free(p);
	assert_int_equal(dkim_spec_parse("ex.test:s2026", &d, &s, &p, err,
	    sizeof(err)), -1);
	assert_string_equal(err, "'ex.test:s2026' is not domain:selector:keyfile");
	assert_int_equal(dkim_spec_parse("ex..test:s:/k", &d, &s, &p, err,
	    sizeof(err)), -1);
	assert_int_equal(dkim_spec_parse("ex.test:s s:/k", &d, &s, &p, err,
	    sizeof(err)), -1);
	assert_string_equal(err, "'s s' is not a selector");
}

/* Sign with a fresh Ed25519 key; verify with OpenSSL over the same data. */
static void
test_sign(void **state)
{
	static const char msg[] = "Received: from x\r\n"
	    "From: <a@sub.ex.test>\r\nSubject: hi\r\n\r\nbody \r\n\r\n";
	EVP_PKEY *pk = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	struct dkim_key key = { "ex.test", "s1", "-", DKIM_ED25519_SHA256, pk };
	struct dkim_keys keys = { .v = &key, .n = 1 };
	const struct dkim_key *used = NULL;
	struct evbuffer *b = evbuffer_new();
	char *field = NULL, why[128];

	assert_ptr_equal(dkim_key_for(&keys, "deep.sub.ex.test"), &key);
	assert_null(dkim_key_for(&keys, "other.test"));
	assert_null(dkim_key_for(&keys, "x-ex.test"));
	evbuffer_add(b, msg, sizeof(msg) - 1);
	assert_int_equal(dkim_sign(&keys, b, 1700000000, &field, &used, why,
	    sizeof(why)), DKIM_SIGNED);
	assert_ptr_equal(used, &key);
	assert_non_null(strstr(field, "a=ed25519-sha256; c=relaxed/relaxed;"));
	assert_non_null(strstr(field, "d=ex.test; s=s1; t=1700000000;"));
	assert_non_null(strstr(field, "h=From:From:Subject;"));
	/* "body \r\n\r\n" is "body\r\n": its SHA-256 in base64 */
	assert_non_null(strstr(field, "bh=Ck5SoRNWUpSR4X0COv7R5ub2pUTtl6xz4dTFz++ji4M=;"));
	/* with our signature on top, it is not signed again */
	evbuffer_prepend(b, field, strlen(field));
	free(field);
	field = NULL;
	assert_int_equal(dkim_sign(&keys, b, 1700000000, &field, &used, why,
	    sizeof(why)), DKIM_ALREADY);
	evbuffer_free(b);
	b = evbuffer_new();
	evbuffer_add_printf(b, "From: <a@other.test>\r\n\r\nx\r\n");
	assert_int_equal(dkim_sign(&keys, b, 1, &field, &used, why,
	    sizeof(why)), DKIM_NOKEY);
	evbuffer_free(b);
	EVP_PKEY_free(pk);
}

int
main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_body),
		cmocka_unit_test(test_header),
		cmocka_unit_test(test_fields_and_from),
		cmocka_unit_test(test_spec),
		cmocka_unit_test(test_sign),
	};

	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	return cmocka_run_group_tests_name("dkim", tests, NULL, NULL);
}
