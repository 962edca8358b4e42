/* SPDX-License-Identifier: MIT */
/*
 * fuzz_parse.c: libFuzzer target for src/smtpd/parse.c. Each input is one
 * command line (without CRLF) given to every parser in turn, each on its
 * own NUL-terminated mutable copy, as session.c would hand them over.
 *
 * Beyond "no crash, no sanitizer report" it checks what the parsers
 * promise: results point into the line, an accepted address passes
 * smtpd_addr_valid(), and non-ASCII is accepted only with SMTPUTF8.
 * Replayed by scripts/fuzz.sh replay; fuzzed by scripts/fuzz.sh run parse.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "smtpd/parse.h"

/* Abort (and so fail the run) when a promise is broken. */
#define CHECK(x) do { if (!(x)) abort(); } while (0)

static char *
copy(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);

	memcpy(s, data, size);
	s[size] = '\0';
	return s;
}

static int
inside(const char *p, const char *buf, size_t size)
{
	return p >= buf && p <= buf + size;
}

static int
ascii(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s >= 0x80)
			return 0;
	return 1;
}

static void
check_addr(const char *addr, int utf8, int postmaster_ok)
{
	size_t n = strlen(addr);

	if (postmaster_ok && strcasecmp(addr, "Postmaster") == 0)
		return;
	CHECK(smtpd_addr_valid(addr, n, 1));
	CHECK(smtpd_addr_domain(addr) != NULL);
	if (!utf8)
		CHECK(ascii(addr) && smtpd_addr_valid(addr, n, 0));
}

static void
fuzz_mail(const uint8_t *data, size_t size)
{
	char *buf = copy(data, size);
	struct smtpd_mail_args m;

	if (smtpd_parse_mail(buf, &m) == SMTPD_P_OK) {
		CHECK(inside(m.addr, buf, size));
		if (*m.addr != '\0')
			check_addr(m.addr, m.smtputf8, 0);
		if (m.envid != NULL)
			CHECK(inside(m.envid, buf, size) && ascii(m.envid));
	}
	free(buf);
}

static void
fuzz_rcpt(const uint8_t *data, size_t size, int smtputf8)
{
	char *buf = copy(data, size);
	struct smtpd_rcpt_args r;

	if (smtpd_parse_rcpt(buf, smtputf8, &r) == SMTPD_P_OK) {
		CHECK(inside(r.addr, buf, size));
		check_addr(r.addr, smtputf8, 1);
		if (r.orcpt != NULL)
			CHECK(inside(r.orcpt, buf, size));
	}
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf = copy(data, size), *arg;
	enum smtpd_cmd cmd = smtpd_parse_verb(buf, &arg);
	size_t off = (size_t)(arg - buf);
	uint64_t n;
	int last;

	CHECK(inside(arg, buf, size));
	/* The argument as a whole, whatever the verb, to every parser. */
	fuzz_mail(data + off, size - off);
	fuzz_rcpt(data + off, size - off, cmd == SMTPD_CMD_RCPT);
	fuzz_rcpt(data + off, size - off, cmd != SMTPD_CMD_RCPT);
	(void)smtpd_parse_bdat(arg, &n, &last);
	(void)smtpd_helo_valid(arg);
	(void)smtpd_addr_domain(arg);
	(void)smtpd_addr_valid((const char *)data, size, size & 1);
	free(buf);
	return 0;
}
