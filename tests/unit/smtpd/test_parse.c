/* SPDX-License-Identifier: MIT */
/*
 * test_parse.c: tables of command lines through the parsers of
 * src/smtpd/parse.c: verbs, MAIL and RCPT with every parameter and every
 * error class, address forms (quoted, UTF-8, source routes, literals,
 * Postmaster), BDAT and HELO.
 *
 * Run one test by name: test_parse test_mail (a cmocka filter pattern).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "spool/spool.h"
#include "smtpd/parse.h"

/* The tables give only the fields a case is about; the rest are zero. */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

/* The case being checked, named in the failure message. */
static const char *case_group, *case_input;
static size_t case_index;

#define CASE(group, i, input) \
	(case_group = (group), case_index = (i), case_input = (input))
#define EQ_INT(got, want) do {						\
	long long g_ = (long long)(got), w_ = (long long)(want);	\
	if (g_ != w_)							\
		fail_msg("%s %zu \"%s\": %s = %lld, want %lld", case_group, \
		    case_index, case_input, #got, g_, w_);		\
} while (0)
#define EQ_STR(got, want) do {						\
	const char *g_ = (got), *w_ = (want);				\
	if ((g_ == NULL) != (w_ == NULL) ||				\
	    (g_ != NULL && strcmp(g_, w_) != 0))			\
		fail_msg("%s %zu \"%s\": %s = \"%s\", want \"%s\"",	\
		    case_group, case_index, case_input, #got,		\
		    g_ ? g_ : "(null)", w_ ? w_ : "(null)");		\
} while (0)

#define LONG64 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define LABEL63 "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

static void
test_verb(void **state)
{
	static const struct {
		const char *line;
		enum smtpd_cmd cmd;
		const char *arg;
	} cases[] = {
		{ "HELO example.org", SMTPD_CMD_HELO, "example.org" },
		{ "ehlo example.org", SMTPD_CMD_EHLO, "example.org" },
		{ "MAIL FROM:<a@b.c>", SMTPD_CMD_MAIL, "FROM:<a@b.c>" },
		{ "mail from: <a@b.c>", SMTPD_CMD_MAIL, "from: <a@b.c>" },
		{ "RcPt TO:<a@b.c>", SMTPD_CMD_RCPT, "TO:<a@b.c>" },
		{ "DATA", SMTPD_CMD_DATA, "" },
		{ "BDAT 10 LAST", SMTPD_CMD_BDAT, "10 LAST" },
		{ "RSET", SMTPD_CMD_RSET, "" },
		{ "NOOP hello", SMTPD_CMD_NOOP, "hello" },
		{ "QUIT", SMTPD_CMD_QUIT, "" },
		{ "VRFY root", SMTPD_CMD_VRFY, "root" },
		{ "EXPN list", SMTPD_CMD_EXPN, "list" },
		{ "HELP", SMTPD_CMD_HELP, "" },
		{ "starttls", SMTPD_CMD_STARTTLS, "" },
		{ "AUTH PLAIN AGJvYgBwYXNz", SMTPD_CMD_AUTH, "PLAIN AGJvYgBwYXNz" },
		{ "QUIT  ", SMTPD_CMD_QUIT, "" },
		{ "DATA   x", SMTPD_CMD_DATA, "x" },
		{ "", SMTPD_CMD_UNKNOWN, "" },
		{ " DATA", SMTPD_CMD_UNKNOWN, "DATA" },
		{ "DATAX", SMTPD_CMD_UNKNOWN, "" },
		{ "DAT", SMTPD_CMD_UNKNOWN, "" },
		{ "MAIL:FROM:<a@b>", SMTPD_CMD_UNKNOWN, "" },
		{ "GET / HTTP/1.0", SMTPD_CMD_UNKNOWN, "/ HTTP/1.0" },
		{ "STARTTLSX", SMTPD_CMD_UNKNOWN, "" },
		{ "HELO\texample.org", SMTPD_CMD_UNKNOWN, "" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char buf[128];
		char *arg = NULL;

		snprintf(buf, sizeof(buf), "%s", cases[i].line);
		CASE("verb", i, cases[i].line);
		EQ_INT(smtpd_parse_verb(buf, &arg), cases[i].cmd);
		assert_non_null(arg);
		EQ_STR(arg, cases[i].arg);
	}
}

struct mail_case {
	const char *arg;
	enum smtpd_perr err;
	const char *addr;
	uint64_t size;
	int body, smtputf8, ret;
	const char *envid;
};

static const struct mail_case mail_cases[] = {
	/* paths */
	{ "FROM:<a@example.org>", SMTPD_P_OK, "a@example.org" },
	{ "from:<a@example.org>", SMTPD_P_OK, "a@example.org" },
	{ "FROM: <a@example.org>", SMTPD_P_OK, "a@example.org" },
	{ "FROM:<>", SMTPD_P_OK, "" },
	{ "FROM: <>", SMTPD_P_OK, "" },
	{ "FROM:<first.last+tag@sub.example.org>", SMTPD_P_OK,
	    "first.last+tag@sub.example.org" },
	{ "FROM:<!#$%&'*+-/=?^_`{|}~@x.org>", SMTPD_P_OK,
	    "!#$%&'*+-/=?^_`{|}~@x.org" },
	{ "FROM:<\"john doe\"@example.org>", SMTPD_P_OK,
	    "\"john doe\"@example.org" },
	{ "FROM:<\"a>b\"@example.org>", SMTPD_P_OK, "\"a>b\"@example.org" },
	{ "FROM:<\"a\\\"b\"@example.org>", SMTPD_P_OK,
	    "\"a\\\"b\"@example.org" },
	{ "FROM:<\"a@b\"@example.org>", SMTPD_P_OK, "\"a@b\"@example.org" },
	{ "FROM:<\"\"@example.org>", SMTPD_P_OK, "\"\"@example.org" },
	{ "FROM:<@relay.org:a@example.org>", SMTPD_P_OK, "a@example.org" },
	{ "FROM:<@r1.org,@r2.org:a@example.org>", SMTPD_P_OK,
	    "a@example.org" },
	{ "FROM:<a@[192.0.2.1]>", SMTPD_P_OK, "a@[192.0.2.1]" },
	{ "FROM:<a@[IPv6:2001:db8::1]>", SMTPD_P_OK, "a@[IPv6:2001:db8::1]" },
	{ "FROM:<a@[ipv6:::ffff:192.0.2.1]>", SMTPD_P_OK,
	    "a@[ipv6:::ffff:192.0.2.1]" },
	{ "FROM:<" LONG64 "@example.org>", SMTPD_P_OK,
	    LONG64 "@example.org" },
	{ "FROM:<a@" LABEL63 ".org>", SMTPD_P_OK, "a@" LABEL63 ".org" },
	{ "FROM:<a@x-y.example>", SMTPD_P_OK, "a@x-y.example" },
	/* params */
	{ "FROM:<a@b.c> SIZE=1000", SMTPD_P_OK, "a@b.c", 1000 },
	{ "FROM:<a@b.c> size=0", SMTPD_P_OK, "a@b.c", 0 },
	{ "FROM:<a@b.c> SIZE=18446744073709551615", SMTPD_P_OK, "a@b.c",
	    UINT64_MAX },
	{ "FROM:<a@b.c> BODY=7BIT", SMTPD_P_OK, "a@b.c", 0,
	    SMTPD_BODY_7BIT },
	{ "FROM:<a@b.c> body=8bitmime", SMTPD_P_OK, "a@b.c", 0,
	    SMTPD_BODY_8BITMIME },
	{ "FROM:<a@b.c> BODY=BINARYMIME", SMTPD_P_OK, "a@b.c", 0,
	    SMTPD_BODY_BINARYMIME },
	{ "FROM:<a@b.c> SMTPUTF8", SMTPD_P_OK, "a@b.c", 0, 0, 1 },
	{ "FROM:<a@b.c> RET=FULL", SMTPD_P_OK, "a@b.c", 0, 0, 0,
	    SPOOL_RET_FULL },
	{ "FROM:<a@b.c> ret=hdrs", SMTPD_P_OK, "a@b.c", 0, 0, 0,
	    SPOOL_RET_HDRS },
	{ "FROM:<a@b.c> ENVID=QQ314159", SMTPD_P_OK, "a@b.c", 0, 0, 0, 0,
	    "QQ314159" },
	{ "FROM:<a@b.c> ENVID=a+2Bb+3d", SMTPD_P_OK, "a@b.c", 0, 0, 0, 0,
	    "a+2Bb+3d" },
	{ "FROM:<a@b.c> SIZE=5 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=x",
	    SMTPD_P_OK, "a@b.c", 5, SMTPD_BODY_8BITMIME, 1, SPOOL_RET_HDRS,
	    "x" },
	{ "FROM:<a@b.c>  SIZE=5   BODY=7BIT  ", SMTPD_P_OK, "a@b.c", 5,
	    SMTPD_BODY_7BIT },
	{ "FROM:<> SIZE=5", SMTPD_P_OK, "", 5 },
	/* UTF-8 */
	{ "FROM:<j\xc3\xb6rg@example.org> SMTPUTF8", SMTPD_P_OK,
	    "j\xc3\xb6rg@example.org", 0, 0, 1 },
	{ "FROM:<a@b\xc3\xbc\x63her.example> SMTPUTF8", SMTPD_P_OK,
	    "a@b\xc3\xbc\x63her.example", 0, 0, 1 },
	{ "FROM:<\"\xc3\xb6 x\"@example.org> SMTPUTF8", SMTPD_P_OK,
	    "\"\xc3\xb6 x\"@example.org", 0, 0, 1 },
	{ "FROM:<j\xc3\xb6rg@example.org>", SMTPD_P_NEEDUTF8 },
	{ "FROM:<a@b\xc3\xbc\x63her.example>", SMTPD_P_NEEDUTF8 },
	{ "FROM:<j\xc3rg@example.org> SMTPUTF8", SMTPD_P_BADSENDER },
	{ "FROM:<j\xed\xa0\x80rg@example.org> SMTPUTF8", SMTPD_P_BADSENDER },
	{ "FROM:<j\xc0\xafrg@example.org> SMTPUTF8", SMTPD_P_BADSENDER },
	/* framing */
	{ "FROM:a@b.c", SMTPD_P_SYNTAX },
	{ "FROM:<a@b.c", SMTPD_P_SYNTAX },
	{ "FROM:a@b.c>", SMTPD_P_SYNTAX },
	{ "FROM<a@b.c>", SMTPD_P_SYNTAX },
	{ "FROM <a@b.c>", SMTPD_P_SYNTAX },
	{ "TO:<a@b.c>", SMTPD_P_SYNTAX },
	{ "", SMTPD_P_SYNTAX },
	{ "FROM:", SMTPD_P_SYNTAX },
	{ "FROM:<a@b.c>SIZE=1", SMTPD_P_SYNTAX },
	{ "FROM:<\"a@b.c>", SMTPD_P_SYNTAX },
	{ "FROM:<a@b.c> =1", SMTPD_P_SYNTAX },
	{ "FROM:<a@b.c> -X", SMTPD_P_SYNTAX },
	/* bad sender */
	{ "FROM:<a>", SMTPD_P_BADSENDER },
	{ "FROM:<@b.c>", SMTPD_P_BADSENDER },
	{ "FROM:<a@>", SMTPD_P_BADSENDER },
	{ "FROM:<a@@b.c>", SMTPD_P_BADSENDER },
	{ "FROM:<.a@b.c>", SMTPD_P_BADSENDER },
	{ "FROM:<a.@b.c>", SMTPD_P_BADSENDER },
	{ "FROM:<a..b@b.c>", SMTPD_P_BADSENDER },
	{ "FROM:<a b@b.c>", SMTPD_P_BADSENDER },
	{ "FROM:<a(b)@b.c>", SMTPD_P_BADSENDER },
	{ "FROM:<a@b..c>", SMTPD_P_BADSENDER },
	{ "FROM:<a@b.c.>", SMTPD_P_BADSENDER },
	{ "FROM:<a@.b.c>", SMTPD_P_BADSENDER },
	{ "FROM:<a@-b.c>", SMTPD_P_BADSENDER },
	{ "FROM:<a@b-.c>", SMTPD_P_BADSENDER },
	{ "FROM:<a@b_c.d>", SMTPD_P_BADSENDER },
	{ "FROM:<a@[192.0.2.256]>", SMTPD_P_BADSENDER },
	{ "FROM:<a@[192.0.2]>", SMTPD_P_BADSENDER },
	{ "FROM:<a@[IPv6:zz::1]>", SMTPD_P_BADSENDER },
	{ "FROM:<a@[x-tag:abc]>", SMTPD_P_BADSENDER },
	{ "FROM:<a@[]>", SMTPD_P_BADSENDER },
	{ "FROM:<\"a\x01\"@b.c>", SMTPD_P_BADSENDER },
	{ "FROM:<\"a\"b@b.c>", SMTPD_P_BADSENDER },
	{ "FROM:<a\x7f@b.c>", SMTPD_P_BADSENDER },
	{ "FROM:<@r1.org:>", SMTPD_P_BADSENDER },
	{ "FROM:<@r1.org,r2.org:a@b.c>", SMTPD_P_BADSENDER },
	{ "FROM:<@:a@b.c>", SMTPD_P_BADSENDER },
	{ "FROM:<@r1..org:a@b.c>", SMTPD_P_BADSENDER },
	{ "FROM:<a" LONG64 "@example.org>", SMTPD_P_BADSENDER },
	{ "FROM:<a@" LABEL63 "b.org>", SMTPD_P_BADSENDER },
	{ "FROM:<Postmaster>", SMTPD_P_BADSENDER },
	/* params */
	{ "FROM:<a@b.c> SIZE=", SMTPD_P_BADPARAM },
	{ "FROM:<a@b.c> SIZE", SMTPD_P_BADPARAM },
	{ "FROM:<a@b.c> SIZE=12a", SMTPD_P_BADPARAM },
	{ "FROM:<a@b.c> SIZE=-1", SMTPD_P_BADPARAM },
	{ "FROM:<a@b.c> SIZE=18446744073709551616", SMTPD_P_BADPARAM },
	{ "FROM:<a@b.c> SIZE=99999999999999999999999", SMTPD_P_BADPARAM },
	{ "FROM:<a@b.c> SIZE=1 SIZE=2", SMTPD_P_BADPARAM },
	{ "FROM:<a@b.c> BODY=8BIT", SMTPD_P_BADPARAM },
	{ "FROM:<a@b.c> BODY", SMTPD_P_BADPARAM },
	{ "FROM:<a@b.c> BODY=7BIT BODY=7BIT", SMTPD_P_BADPARAM },
	{ "FROM:<a@b.c> SMTPUTF8=yes", SMTPD_P_BADPARAM },
	{ "FROM:<a@b.c> SMTPUTF8 SMTPUTF8", SMTPD_P_BADPARAM },
	{ "FROM:<a@b.c> RET=ALL", SMTPD_P_BADPARAM },
	{ "FROM:<a@b.c> RET", SMTPD_P_BADPARAM },
	{ "FROM:<a@b.c> ENVID=", SMTPD_P_BADPARAM },
	{ "FROM:<a@b.c> ENVID=a+", SMTPD_P_BADPARAM },
	{ "FROM:<a@b.c> ENVID=a+4", SMTPD_P_BADPARAM },
	{ "FROM:<a@b.c> ENVID=a+GG", SMTPD_P_BADPARAM },
	{ "FROM:<a@b.c> ENVID=a=b", SMTPD_P_BADPARAM },
	{ "FROM:<a@b.c> ENVID=\xc3\xb6", SMTPD_P_BADPARAM },
	{ "FROM:<a@b.c> ENVID=" LONG64 LONG64, SMTPD_P_BADPARAM },
	{ "FROM:<a@b.c> ENVID=x ENVID=y", SMTPD_P_BADPARAM },
	{ "FROM:<a@b.c> SIZE=10\tBODY=7BIT", SMTPD_P_BADPARAM },
	/* unknown */
	{ "FROM:<a@b.c> FOO=1", SMTPD_P_UNKPARAM },
	{ "FROM:<a@b.c> X-FOO", SMTPD_P_UNKPARAM },
	{ "FROM:<a@b.c> NOTIFY=NEVER", SMTPD_P_UNKPARAM },
	/* RFC 4954 5: AUTH= is taken (and not trusted) */
	{ "FROM:<a@b.c> SIZE=1 AUTH=<>", SMTPD_P_OK, "a@b.c", 1 },
	{ "FROM:<a@b.c> AUTH=bob+40b.c", SMTPD_P_OK, "a@b.c" },
	{ "FROM:<a@b.c> AUTH", SMTPD_P_BADPARAM },
	{ "FROM:<a@b.c> AUTH=<> AUTH=<>", SMTPD_P_BADPARAM },
	{ "FROM:<a@b.c> AUTH=a b", SMTPD_P_UNKPARAM },
};

static void
test_mail(void **state)
{
	for (size_t i = 0; i < sizeof(mail_cases) / sizeof(mail_cases[0]); i++) {
		const struct mail_case *c = &mail_cases[i];
		struct smtpd_mail_args m;
		char buf[512];

		snprintf(buf, sizeof(buf), "%s", c->arg);
		CASE("mail", i, c->arg);
		EQ_INT(smtpd_parse_mail(buf, &m), c->err);
		if (c->err != SMTPD_P_OK)
			continue;
		EQ_STR(m.addr, c->addr);
		EQ_INT(m.size == c->size, 1);
		EQ_INT(m.body, c->body);
		EQ_INT(m.smtputf8, c->smtputf8);
		EQ_INT(m.ret, c->ret);
		EQ_STR(m.envid, c->envid);
	}
}

/* A path over 256 octets with each part within its own limit. */
static void
test_mail_path_limit(void **state)
{
	char buf[700], dom[300];
	struct smtpd_mail_args m;
	size_t n = 0;

	/* Labels of 9 + dot: a domain of 199 octets. */
	for (int i = 0; i < 20; i++)
		n += (size_t)snprintf(dom + n, sizeof(dom) - n, "%s%s",
		    i ? "." : "", "ccccccccc");
	snprintf(buf, sizeof(buf), "FROM:<" LONG64 "@%s>", dom);
	/* 64 + 1 + 199 + 2 = 266 > 256 */
	EQ_INT(smtpd_parse_mail(buf, &m), SMTPD_P_BADSENDER);
	snprintf(buf, sizeof(buf), "FROM:<a@%s>", dom);
	EQ_INT(smtpd_parse_mail(buf, &m), SMTPD_P_OK);
	/* A route counts toward the path. */
	snprintf(buf, sizeof(buf), "FROM:<@%s:aaaaaaaaaaa@%s>", dom, dom);
	EQ_INT(smtpd_parse_mail(buf, &m), SMTPD_P_BADSENDER);
}

struct rcpt_case {
	const char *arg;
	int smtputf8;
	enum smtpd_perr err;
	const char *addr;
	int notify;
	const char *orcpt;
};

static const struct rcpt_case rcpt_cases[] = {
	{ "TO:<a@example.org>", 0, SMTPD_P_OK, "a@example.org" },
	{ "to:<a@example.org>", 0, SMTPD_P_OK, "a@example.org" },
	{ "To: <a@example.org>", 0, SMTPD_P_OK, "a@example.org" },
	{ "TO:<Postmaster>", 0, SMTPD_P_OK, "Postmaster" },
	{ "TO:<postMASTER>", 0, SMTPD_P_OK, "postMASTER" },
	{ "TO:<Postmaster@example.org>", 0, SMTPD_P_OK,
	    "Postmaster@example.org" },
	{ "TO:<@hub.org:a@example.org>", 0, SMTPD_P_OK, "a@example.org" },
	{ "TO:<\"x y\"@example.org>", 0, SMTPD_P_OK, "\"x y\"@example.org" },
	{ "TO:<a@[IPv6:::1]>", 0, SMTPD_P_OK, "a@[IPv6:::1]" },
	{ "TO:<j\xc3\xb6rg@example.org>", 1, SMTPD_P_OK,
	    "j\xc3\xb6rg@example.org" },
	{ "TO:<\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.\xe5\xb9"
	    "\xbf\xe5\x91\x8a>", 1, SMTPD_P_OK,
	    "\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.\xe5\xb9"
	    "\xbf\xe5\x91\x8a" },
	{ "TO:<j\xc3\xb6rg@example.org>", 0, SMTPD_P_NEEDUTF8 },
	{ "TO:<a@\xc3\xb6.example>", 0, SMTPD_P_NEEDUTF8 },
	{ "TO:<\"\xc3\xb6\"@example.org>", 0, SMTPD_P_NEEDUTF8 },
	{ "TO:<a@\xff.example>", 1, SMTPD_P_BADADDR },
	/* NOTIFY */
	{ "TO:<a@b.c> NOTIFY=NEVER", 0, SMTPD_P_OK, "a@b.c",
	    SPOOL_NOTIFY_NEVER },
	{ "TO:<a@b.c> NOTIFY=SUCCESS", 0, SMTPD_P_OK, "a@b.c",
	    SPOOL_NOTIFY_SUCCESS },
	{ "TO:<a@b.c> notify=failure,delay", 0, SMTPD_P_OK, "a@b.c",
	    SPOOL_NOTIFY_FAILURE | SPOOL_NOTIFY_DELAY },
	{ "TO:<a@b.c> NOTIFY=SUCCESS,FAILURE,DELAY", 0, SMTPD_P_OK, "a@b.c",
	    SPOOL_NOTIFY_SUCCESS | SPOOL_NOTIFY_FAILURE | SPOOL_NOTIFY_DELAY },
	{ "TO:<a@b.c> NOTIFY=NEVER,SUCCESS", 0, SMTPD_P_BADPARAM },
	{ "TO:<a@b.c> NOTIFY=DELAY,NEVER", 0, SMTPD_P_BADPARAM },
	{ "TO:<a@b.c> NOTIFY=", 0, SMTPD_P_BADPARAM },
	{ "TO:<a@b.c> NOTIFY", 0, SMTPD_P_BADPARAM },
	{ "TO:<a@b.c> NOTIFY=SUCCESS,", 0, SMTPD_P_BADPARAM },
	{ "TO:<a@b.c> NOTIFY=,SUCCESS", 0, SMTPD_P_BADPARAM },
	{ "TO:<a@b.c> NOTIFY=SUCCESS,,DELAY", 0, SMTPD_P_BADPARAM },
	{ "TO:<a@b.c> NOTIFY=SOMETIMES", 0, SMTPD_P_BADPARAM },
	{ "TO:<a@b.c> NOTIFY=DELAY NOTIFY=DELAY", 0, SMTPD_P_BADPARAM },
	/* ORCPT */
	{ "TO:<a@b.c> ORCPT=rfc822;a@b.c", 0, SMTPD_P_OK, "a@b.c", 0,
	    "rfc822;a@b.c" },
	{ "TO:<a@b.c> ORCPT=RFC822;a+2Bb@b.c", 0, SMTPD_P_OK, "a@b.c", 0,
	    "RFC822;a+2Bb@b.c" },
	{ "TO:<a@b.c> NOTIFY=FAILURE ORCPT=rfc822;x@y.z", 0, SMTPD_P_OK,
	    "a@b.c", SPOOL_NOTIFY_FAILURE, "rfc822;x@y.z" },
	{ "TO:<a@b.c> ORCPT=utf-8;j\\x{00F6}rg@b.c", 0, SMTPD_P_OK,
	    "a@b.c", 0, "utf-8;j\\x{00F6}rg@b.c" },
	{ "TO:<a@b.c> ORCPT=UTF-8;j\xc3\xb6rg@b.c", 1, SMTPD_P_OK,
	    "a@b.c", 0, "UTF-8;j\xc3\xb6rg@b.c" },
	{ "TO:<a@b.c> ORCPT=utf-8;j\xc3\xb6rg@b.c", 0, SMTPD_P_BADPARAM },
	{ "TO:<a@b.c> ORCPT=utf-8;j\\x{}rg@b.c", 0, SMTPD_P_BADPARAM },
	{ "TO:<a@b.c> ORCPT=utf-8;j\\x{1234567}@b.c", 0, SMTPD_P_BADPARAM },
	{ "TO:<a@b.c> ORCPT=utf-8;j\\y@b.c", 0, SMTPD_P_BADPARAM },
	{ "TO:<a@b.c> ORCPT=utf-8;", 0, SMTPD_P_BADPARAM },
	{ "TO:<a@b.c> ORCPT=rfc822;j\xc3\xb6rg@b.c", 1, SMTPD_P_BADPARAM },
	{ "TO:<a@b.c> ORCPT=rfc822", 0, SMTPD_P_BADPARAM },
	{ "TO:<a@b.c> ORCPT=;a@b.c", 0, SMTPD_P_BADPARAM },
	{ "TO:<a@b.c> ORCPT=rfc 822;a@b.c", 0, SMTPD_P_BADPARAM },
	{ "TO:<a@b.c> ORCPT=rfc822;", 0, SMTPD_P_BADPARAM },
	{ "TO:<a@b.c> ORCPT=rfc822;a+ZZ", 0, SMTPD_P_BADPARAM },
	{ "TO:<a@b.c> ORCPT=rf(c;a@b.c", 0, SMTPD_P_BADPARAM },
	{ "TO:<a@b.c> ORCPT", 0, SMTPD_P_BADPARAM },
	{ "TO:<a@b.c> ORCPT=rfc822;a ORCPT=rfc822;b", 0, SMTPD_P_BADPARAM },
	/* errors */
	{ "TO:<>", 0, SMTPD_P_BADADDR },
	{ "TO:<a>", 0, SMTPD_P_BADADDR },
	{ "TO:<Postmaster2>", 0, SMTPD_P_BADADDR },
	{ "TO:<@hub.org:Postmaster>", 0, SMTPD_P_BADADDR },
	{ "TO:<a@b..c>", 0, SMTPD_P_BADADDR },
	{ "TO:<a..b@c>", 0, SMTPD_P_BADADDR },
	{ "TO:a@b.c", 0, SMTPD_P_SYNTAX },
	{ "TO:<a@b.c", 0, SMTPD_P_SYNTAX },
	{ "TO:<a@b.c>x", 0, SMTPD_P_SYNTAX },
	{ "FROM:<a@b.c>", 0, SMTPD_P_SYNTAX },
	{ "TO <a@b.c>", 0, SMTPD_P_SYNTAX },
	{ "TO:<a@b.c> SIZE=10", 0, SMTPD_P_UNKPARAM },
	{ "TO:<a@b.c> XFOO=bar", 0, SMTPD_P_UNKPARAM },
};

static void
test_rcpt(void **state)
{
	for (size_t i = 0; i < sizeof(rcpt_cases) / sizeof(rcpt_cases[0]); i++) {
		const struct rcpt_case *c = &rcpt_cases[i];
		struct smtpd_rcpt_args r;
		char buf[512];

		snprintf(buf, sizeof(buf), "%s", c->arg);
		CASE("rcpt", i, c->arg);
		EQ_INT(smtpd_parse_rcpt(buf, c->smtputf8, &r), c->err);
		if (c->err != SMTPD_P_OK)
			continue;
		EQ_STR(r.addr, c->addr);
		EQ_INT(r.notify, c->notify);
		EQ_STR(r.orcpt, c->orcpt);
	}
}

static void
test_addr_valid(void **state)
{
	static const struct {
		const char *addr;
		int utf8, valid;
	} cases[] = {
		{ "a@b", 0, 1 },
		{ "a@b.c", 0, 1 },
		{ "\"a b\"@c.d", 0, 1 },
		{ "\"a\\\\b\"@c.d", 0, 1 },
		{ "a@[10.0.0.1]", 0, 1 },
		{ "a@[IPv6:fe80::1]", 0, 1 },
		{ "\xc3\xb6@b.c", 1, 1 },
		{ "\xc3\xb6@b.c", 0, 0 },
		{ "a@\xc3\xb6.c", 0, 0 },
		{ "", 0, 0 },
		{ "@", 0, 0 },
		{ "a@", 0, 0 },
		{ "@b", 0, 0 },
		{ "a", 0, 0 },
		{ "\"a\"", 0, 0 },
		{ "\"a\"@", 0, 0 },
		{ "\"a@b", 0, 0 },
		{ "a@b@c", 0, 0 },
		{ "a@[1.2.3.4", 0, 0 },
		{ "a@[01.2.3.4]", 0, 0 },
		{ LONG64 "@b.c", 0, 1 },
		{ "x" LONG64 "@b.c", 0, 0 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		CASE("addr", i, cases[i].addr);
		EQ_INT(smtpd_addr_valid(cases[i].addr,
		    strlen(cases[i].addr), cases[i].utf8), cases[i].valid);
	}
	/* The length given is what counts, not the NUL. */
	EQ_INT(smtpd_addr_valid("a@b.cXYZ", 5, 0), 1);
	EQ_INT(smtpd_addr_valid("a@b.c\0d", 7, 0), 0);
}

static void
test_addr_domain(void **state)
{
	static const struct {
		const char *addr, *domain;
	} cases[] = {
		{ "a@b.c", "b.c" },
		{ "\"a@x\"@b.c", "b.c" },
		{ "\"a\\\"@x\"@b.c", "b.c" },
		{ "a@[1.2.3.4]", "[1.2.3.4]" },
		{ "a@", "" },
		{ "Postmaster", NULL },
		{ "", NULL },
		{ "\"a@b\"", NULL },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *d = smtpd_addr_domain(cases[i].addr);

		CASE("domain", i, cases[i].addr);
		EQ_STR(d, cases[i].domain);
	}
}

/* Sender-specified routing in the local part (policy.c refuses it). */
static void
test_addr_routed(void **state)
{
	static const struct {
		const char *addr;
		int routed;
	} cases[] = {
		{ "user%host@relay.test", 1 },
		{ "host!user@relay.test", 1 },
		{ "\"a@b\"@relay.test", 1 },
		{ "\"a%b\"@relay.test", 1 },
		{ "user@relay.test", 0 },
		{ "first.last+tag@relay.test", 0 },
		{ "\"a b\"@relay.test", 0 },
		/* only the local part counts */
		{ "user@[IPv6:::1]", 0 },
		{ "Postmaster", 0 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		CASE("routed", i, cases[i].addr);
		EQ_INT(smtpd_addr_routed(cases[i].addr), cases[i].routed);
	}
}

static void
test_addr_postmaster(void **state)
{
	static const struct {
		const char *addr;
		int pm;
	} cases[] = {
		{ "Postmaster", 1 },
		{ "postmaster", 1 },
		{ "POSTMASTER@MX.Example", 1 },
		{ "postmaster@mx.example", 1 },
		{ "\"postmaster\"@mx.example", 1 },
		{ "postmaster@other.example", 0 },
		{ "postmasters@mx.example", 0 },
		{ "post.master@mx.example", 0 },
		{ "abuse@mx.example", 0 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		CASE("postmaster", i, cases[i].addr);
		EQ_INT(smtpd_addr_postmaster(cases[i].addr, "mx.example"),
		    cases[i].pm);
	}
}

static void
test_bdat(void **state)
{
	static const struct {
		const char *arg;
		enum smtpd_perr err;
		uint64_t size;
		int last;
	} cases[] = {
		{ "0", SMTPD_P_OK, 0, 0 },
		{ "1024", SMTPD_P_OK, 1024, 0 },
		{ "1024 LAST", SMTPD_P_OK, 1024, 1 },
		{ "0 last", SMTPD_P_OK, 0, 1 },
		{ "007 LaSt", SMTPD_P_OK, 7, 1 },
		{ "18446744073709551615", SMTPD_P_OK, UINT64_MAX, 0 },
		{ "18446744073709551616", SMTPD_P_SYNTAX },
		{ "99999999999999999999999 LAST", SMTPD_P_SYNTAX },
		{ "", SMTPD_P_SYNTAX },
		{ "LAST", SMTPD_P_SYNTAX },
		{ "-1", SMTPD_P_SYNTAX },
		{ "+1", SMTPD_P_SYNTAX },
		{ " 10", SMTPD_P_SYNTAX },
		{ "10 ", SMTPD_P_SYNTAX },
		{ "10  LAST", SMTPD_P_SYNTAX },
		{ "10 LAST ", SMTPD_P_SYNTAX },
		{ "10 LASTX", SMTPD_P_SYNTAX },
		{ "10 FIRST", SMTPD_P_SYNTAX },
		{ "10x", SMTPD_P_SYNTAX },
		{ "1 2", SMTPD_P_SYNTAX },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t size = 42;
		int last = 42;

		CASE("bdat", i, cases[i].arg);
		EQ_INT(smtpd_parse_bdat(cases[i].arg, &size, &last),
		    cases[i].err);
		if (cases[i].err != SMTPD_P_OK)
			continue;
		EQ_INT(size == cases[i].size, 1);
		EQ_INT(last, cases[i].last);
	}
}

static void
test_helo(void **state)
{
	static const struct {
		const char *arg;
		int valid;
	} cases[] = {
		{ "example.org", 1 },
		{ "mail-1.example.org", 1 },
		{ "localhost", 1 },
		{ "my_host.example.org", 1 },
		{ "_dmarc", 1 },
		{ "192.0.2.1", 1 },
		{ "[192.0.2.1]", 1 },
		{ "[IPv6:2001:db8::25]", 1 },
		{ "b\xc3\xbc\x63her.example", 1 },
		{ "", 0 },
		{ " ", 0 },
		{ "example.org.", 0 },
		{ ".example.org", 0 },
		{ "a..b", 0 },
		{ "-a.org", 0 },
		{ "a-.org", 0 },
		{ "host name", 0 },
		{ "host\tname", 0 },
		{ "host\x01name", 0 },
		{ "host\x7f", 0 },
		{ "host\xff", 0 },
		{ "[192.0.2.1", 0 },
		{ "[300.0.2.1]", 0 },
		{ "[IPv6:nope]", 0 },
		{ "[]", 0 },
		{ "a@b", 0 },
		{ LABEL63 "x.org", 0 },
		{ LABEL63 ".org", 1 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		CASE("helo", i, cases[i].arg);
		EQ_INT(smtpd_helo_valid(cases[i].arg),
		    cases[i].valid);
	}
}

int
main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_verb),
		cmocka_unit_test(test_mail),
		cmocka_unit_test(test_mail_path_limit),
		cmocka_unit_test(test_rcpt),
		cmocka_unit_test(test_addr_valid),
		cmocka_unit_test(test_addr_domain),
		cmocka_unit_test(test_addr_routed),
		cmocka_unit_test(test_addr_postmaster),
		cmocka_unit_test(test_bdat),
		cmocka_unit_test(test_helo),
	};

	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	return cmocka_run_group_tests_name("smtpd_parse", tests, NULL, NULL);
}
