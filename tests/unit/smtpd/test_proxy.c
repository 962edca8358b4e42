/* SPDX-License-Identifier: MIT */
/*
 * test_proxy.c: the PROXY protocol header parser of src/smtpd/proxy.c.
 * A table of v1 and v2 headers, good and bad, each parsed whole (with the
 * client's first SMTP bytes behind it, which must not count), and at every
 * prefix: a good header is MORE until its last byte, a bad one turns BAD
 * at some byte and stays BAD (proxy.c invariant 1).
 *
 * Run one test by name: test_proxy test_table (a cmocka filter pattern).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "smtpd/proxy.h"

#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

#define SIG "\r\n\r\n\0\r\nQUIT\n"
/* 46 and 45 bytes of filler */
#define X46 "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
#define X45 "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
#define B(lit) (const uint8_t *)(lit), sizeof(lit) - 1

struct pcase {
	const char *name;
	const uint8_t *in;
	size_t n;
	enum smtpd_proxy_mode mode;
	enum smtpd_proxy_rc rc;
	int local;
	const char *src;	/* "addr port" of the client (DONE, !local) */
	const char *dst;
};

static const struct pcase cases[] = {
	{ "v1 tcp4", B("PROXY TCP4 192.0.2.1 198.51.100.2 41234 25\r\n"),
	  SMTPD_PROXY_V1, SMTPD_PROXY_DONE, 0, "192.0.2.1 41234",
	  "198.51.100.2 25" },
	{ "v1 tcp6", B("PROXY TCP6 2001:db8::1 2001:db8::2 65535 0\r\n"),
	  SMTPD_PROXY_V1, SMTPD_PROXY_DONE, 0, "2001:db8::1 65535",
	  "2001:db8::2 0" },
	{ "v1 longest", B("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
	  "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"),
	  SMTPD_PROXY_ANY, SMTPD_PROXY_DONE, 0,
	  "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535",
	  "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535" },
	{ "v1 unknown", B("PROXY UNKNOWN\r\n"), SMTPD_PROXY_V1,
	  SMTPD_PROXY_DONE, 1 },
	{ "v1 unknown with rest", B("PROXY UNKNOWN x y z\r\n"),
	  SMTPD_PROXY_ANY, SMTPD_PROXY_DONE, 1 },
	{ "v1 in v2 mode", B("PROXY TCP4 192.0.2.1 198.51.100.2 1 2\r\n"),
	  SMTPD_PROXY_V2, SMTPD_PROXY_BAD },
	{ "v1 no header", B("EHLO x\r\n"), SMTPD_PROXY_V1, SMTPD_PROXY_BAD },
	{ "v1 lower case", B("proxy TCP4 192.0.2.1 198.51.100.2 1 2\r\n"),
	  SMTPD_PROXY_V1, SMTPD_PROXY_BAD },
	{ "v1 two spaces", B("PROXY TCP4  192.0.2.1 198.51.100.2 1 2\r\n"),
	  SMTPD_PROXY_V1, SMTPD_PROXY_BAD },
	{ "v1 trailing space", B("PROXY TCP4 192.0.2.1 198.51.100.2 1 2 \r\n"),
	  SMTPD_PROXY_V1, SMTPD_PROXY_BAD },
	{ "v1 six fields", B("PROXY TCP4 192.0.2.1 198.51.100.2 1 2 3\r\n"),
	  SMTPD_PROXY_V1, SMTPD_PROXY_BAD },
	{ "v1 four fields", B("PROXY TCP4 192.0.2.1 198.51.100.2 1\r\n"),
	  SMTPD_PROXY_V1, SMTPD_PROXY_BAD },
	{ "v1 tcp6 address in tcp4", B("PROXY TCP4 ::1 ::1 1 2\r\n"),
	  SMTPD_PROXY_V1, SMTPD_PROXY_BAD },
	{ "v1 tcp4 address in tcp6", B("PROXY TCP6 1.2.3.4 1.2.3.4 1 2\r\n"),
	  SMTPD_PROXY_V1, SMTPD_PROXY_BAD },
	{ "v1 octet over 255", B("PROXY TCP4 192.0.2.256 198.51.100.2 1 2\r\n"),
	  SMTPD_PROXY_V1, SMTPD_PROXY_BAD },
	{ "v1 port over 65535", B("PROXY TCP4 192.0.2.1 198.51.100.2 65536 2\r\n"),
	  SMTPD_PROXY_V1, SMTPD_PROXY_BAD },
	{ "v1 port leading zero", B("PROXY TCP4 192.0.2.1 198.51.100.2 025 2\r\n"),
	  SMTPD_PROXY_V1, SMTPD_PROXY_BAD },
	{ "v1 port sign", B("PROXY TCP4 192.0.2.1 198.51.100.2 +25 2\r\n"),
	  SMTPD_PROXY_V1, SMTPD_PROXY_BAD },
	{ "v1 udp", B("PROXY UDP4 192.0.2.1 198.51.100.2 1 2\r\n"),
	  SMTPD_PROXY_V1, SMTPD_PROXY_BAD },
	{ "v1 bare lf", B("PROXY TCP4 192.0.2.1 198.51.100.2 1 2\n"),
	  SMTPD_PROXY_V1, SMTPD_PROXY_BAD },
	{ "v1 cr alone", B("PROXY TCP4 192.0.2.1 198.51.100.2 1 2\rX\n"),
	  SMTPD_PROXY_V1, SMTPD_PROXY_BAD },
	{ "v1 nul", B("PROXY TCP4 192.0.2.1\0 198.51.100.2 1 2\r\n"),
	  SMTPD_PROXY_V1, SMTPD_PROXY_BAD },
	{ "v1 no crlf in 107", B("PROXY UNKNOWN " X46 X46 "\r\n"),
	  SMTPD_PROXY_V1, SMTPD_PROXY_BAD },
	{ "v1 crlf at 107", B("PROXY UNKNOWN " X46 X45 "\r\n"),
	  SMTPD_PROXY_V1, SMTPD_PROXY_DONE, 1 },
	{ "v2 tcp4", B(SIG "\x21\x11\x00\x0c" "\xc0\x00\x02\x01"
	  "\xc6\x33\x64\x02" "\xa1\x12" "\x00\x19"), SMTPD_PROXY_V2,
	  SMTPD_PROXY_DONE, 0, "192.0.2.1 41234", "198.51.100.2 25" },
	{ "v2 tcp4 with tlvs", B(SIG "\x21\x11\x00\x18" "\xc0\x00\x02\x01"
	  "\xc6\x33\x64\x02" "\xa1\x12" "\x00\x19"
	  "\x04\x00\x02" "\x00\x00" "\x02\x00\x01" "x" "\x05\x00\x00"),
	  SMTPD_PROXY_ANY, SMTPD_PROXY_DONE, 0, "192.0.2.1 41234",
	  "198.51.100.2 25" },
	{ "v2 tcp6", B(SIG "\x21\x21\x00\x24"
	  "\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01"
	  "\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x02" "\x00\x01" "\x00\x02"),
	  SMTPD_PROXY_V2, SMTPD_PROXY_DONE, 0, "2001:db8::1 1",
	  "2001:db8::2 2" },
	{ "v2 local", B(SIG "\x20\x00\x00\x00"), SMTPD_PROXY_V2,
	  SMTPD_PROXY_DONE, 1 },
	{ "v2 local with a block", B(SIG "\x20\x11\x00\x03" "abc"),
	  SMTPD_PROXY_V2, SMTPD_PROXY_DONE, 1 },
	{ "v2 unspec", B(SIG "\x21\x00\x00\x00"), SMTPD_PROXY_V2,
	  SMTPD_PROXY_DONE, 1 },
	{ "v2 in v1 mode", B(SIG "\x20\x00\x00\x00"), SMTPD_PROXY_V1,
	  SMTPD_PROXY_BAD },
	{ "v2 bad signature", B("\r\n\r\n\0\r\nQUIT\r" "\x21\x11\x00\x0c"),
	  SMTPD_PROXY_V2, SMTPD_PROXY_BAD },
	{ "v2 version 1", B(SIG "\x11\x11\x00\x0c" "\xc0\x00\x02\x01"
	  "\xc6\x33\x64\x02" "\xa1\x12" "\x00\x19"), SMTPD_PROXY_V2,
	  SMTPD_PROXY_BAD },
	{ "v2 command 2", B(SIG "\x22\x11\x00\x0c" "\xc0\x00\x02\x01"
	  "\xc6\x33\x64\x02" "\xa1\x12" "\x00\x19"), SMTPD_PROXY_V2,
	  SMTPD_PROXY_BAD },
	{ "v2 udp", B(SIG "\x21\x12\x00\x0c" "\xc0\x00\x02\x01"
	  "\xc6\x33\x64\x02" "\xa1\x12" "\x00\x19"), SMTPD_PROXY_V2,
	  SMTPD_PROXY_BAD },
	{ "v2 family 4", B(SIG "\x21\x41\x00\x0c" "\xc0\x00\x02\x01"
	  "\xc6\x33\x64\x02" "\xa1\x12" "\x00\x19"), SMTPD_PROXY_V2,
	  SMTPD_PROXY_BAD },
	{ "v2 short length", B(SIG "\x21\x11\x00\x0b" "\xc0\x00\x02\x01"
	  "\xc6\x33\x64\x02" "\xa1\x12" "\x00"), SMTPD_PROXY_V2,
	  SMTPD_PROXY_BAD },
	{ "v2 tlv past the end", B(SIG "\x21\x11\x00\x10" "\xc0\x00\x02\x01"
	  "\xc6\x33\x64\x02" "\xa1\x12" "\x00\x19" "\x01\x00\x05" "x"),
	  SMTPD_PROXY_V2, SMTPD_PROXY_BAD },
	{ "v2 tlv cut", B(SIG "\x21\x11\x00\x0e" "\xc0\x00\x02\x01"
	  "\xc6\x33\x64\x02" "\xa1\x12" "\x00\x19" "\x01\x00"),
	  SMTPD_PROXY_V2, SMTPD_PROXY_BAD },
	{ "nothing we know", B("\x16\x03\x01"), SMTPD_PROXY_ANY,
	  SMTPD_PROXY_BAD },
};

/* "addr port" of a sockaddr. */
static void
fmt_sa(const struct sockaddr_storage *ss, char *buf, size_t len)
{
	char host[INET6_ADDRSTRLEN];

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *s = (const void *)ss;
		inet_ntop(AF_INET, &s->sin_addr, host, sizeof(host));
		snprintf(buf, len, "%s %u", host, ntohs(s->sin_port));
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s = (const void *)ss;
		inet_ntop(AF_INET6, &s->sin6_addr, host, sizeof(host));
		snprintf(buf, len, "%s %u", host, ntohs(s->sin6_port));
	} else {
		snprintf(buf, len, "none");
	}
}

/* Parse n bytes from their own allocation (ASan sees any overread). */
static enum smtpd_proxy_rc
parse_copy(const uint8_t *in, size_t n, enum smtpd_proxy_mode mode,
    struct smtpd_proxy_hdr *h)
{
	uint8_t *copy = malloc(n ? n : 1);
	enum smtpd_proxy_rc rc;

	memcpy(copy, in, n);
	rc = smtpd_proxy_parse(copy, n, mode, h);
	free(copy);
	return rc;
}

static void
test_table(void **state)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct pcase *c = &cases[i];
		struct smtpd_proxy_hdr h;
		uint8_t buf[512];
		char got[128];
		enum smtpd_proxy_rc rc;

		/* the client's EHLO behind the header is not part of it */
		assert_true(c->n + 8 <= sizeof(buf));
		memcpy(buf, c->in, c->n);
		memcpy(buf + c->n, "EHLO x\r\n", 8);
		rc = parse_copy(buf, c->n + 8, c->mode, &h);
		if (rc != c->rc)
			fail_msg("%s: rc %d, want %d (%s)", c->name, rc, c->rc,
			    h.why ? h.why : "");
		if (rc == SMTPD_PROXY_BAD) {
			assert_non_null(h.why);
			continue;
		}
		assert_int_equal(h.len, c->n);
		assert_int_equal(h.local, c->local);
		if (c->local)
			continue;
		fmt_sa(&h.src, got, sizeof(got));
		assert_string_equal(got, c->src);
		fmt_sa(&h.dst, got, sizeof(got));
		assert_string_equal(got, c->dst);
	}
}

/*
 * Every prefix: a good header is MORE until its last byte; a bad one is
 * MORE, then BAD from some byte on, never DONE.
 */
static void
test_prefixes(void **state)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct pcase *c = &cases[i];
		struct smtpd_proxy_hdr h;
		int bad = 0;

		for (size_t k = 0; k <= c->n; k++) {
			enum smtpd_proxy_rc rc = parse_copy(c->in, k, c->mode,
			    &h);
			if (c->rc == SMTPD_PROXY_DONE) {
				if (rc != (k < c->n ? SMTPD_PROXY_MORE :
				    SMTPD_PROXY_DONE))
					fail_msg("%s: prefix %zu rc %d", c->name,
					    k, rc);
				continue;
			}
			if (rc == SMTPD_PROXY_DONE || (bad && rc != SMTPD_PROXY_BAD))
				fail_msg("%s: prefix %zu rc %d after BAD",
				    c->name, k, rc);
			bad |= rc == SMTPD_PROXY_BAD;
		}
		if (c->rc == SMTPD_PROXY_BAD)
			assert_true(bad);
	}
}

/* A bad first byte is refused at once, not after more input. */
static void
test_early(void **state)
{
	struct smtpd_proxy_hdr h;

	assert_int_equal(smtpd_proxy_parse(B("E"), SMTPD_PROXY_ANY, &h),
	    SMTPD_PROXY_BAD);
	assert_int_equal(smtpd_proxy_parse(B("PROXX"), SMTPD_PROXY_V1, &h),
	    SMTPD_PROXY_BAD);
	assert_int_equal(smtpd_proxy_parse(B("\r\n\r\n\1"), SMTPD_PROXY_V2, &h),
	    SMTPD_PROXY_BAD);
	assert_int_equal(smtpd_proxy_parse(B(""), SMTPD_PROXY_ANY, &h),
	    SMTPD_PROXY_MORE);
}

/* The longest v2 header is accepted, and MORE stops short of it. */
static void
test_v2_longest(void **state)
{
	size_t n = SMTPD_PROXY_MAX;
	uint8_t *buf = calloc(1, n);
	struct smtpd_proxy_hdr h;
	size_t at;

	memcpy(buf, SIG "\x21\x11\xff\xff", 16);
	/* addresses, then NOOP TLVs tiling 65535 - 12 bytes */
	at = 16 + 12;
	while (at < n) {
		size_t l = n - at - 3 > 60000 ? 60000 : n - at - 3;
		buf[at] = 0x04;
		buf[at + 1] = (uint8_t)(l >> 8);
		buf[at + 2] = (uint8_t)l;
		at += 3 + l;
	}
	assert_int_equal(at, n);
	assert_int_equal(parse_copy(buf, n - 1, SMTPD_PROXY_V2, &h),
	    SMTPD_PROXY_MORE);
	assert_int_equal(parse_copy(buf, n, SMTPD_PROXY_V2, &h),
	    SMTPD_PROXY_DONE);
	assert_int_equal(h.len, n);
	free(buf);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_prefixes),
		cmocka_unit_test(test_early),
		cmocka_unit_test(test_v2_longest),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
