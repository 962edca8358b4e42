/* SPDX-License-Identifier: MIT */
/*
 * test_bounce.c: the DSNs of src/bounce/dsn.c. Each case builds a report
 * (failure with two recipients, delay, success, RET=FULL and RET=HDRS, an
 * original over max_original, hostile diagnostics, SMTPUTF8) and checks
 * its text: header fields, the boundary lines, every RFC 3464 field with
 * its exact value, CRLF everywhere and no line over 998 octets, and the
 * original's bytes returned exactly (FULL) or only its header section.
 *
 * Then the same report goes through Python's email package, as the system
 * tests will read our bounces: /usr/bin/python3 must find a multipart/report
 * with the right report-type, a message/delivery-status part whose blocks
 * give each recipient's Action, Status and Diagnostic-Code, no parser
 * defects, and the expected type for the returned message.
 *
 * Run one test by name: test_bounce test_failed (a cmocka filter pattern).
 */
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

#include "bounce/bounce.h"
#include "util/util.h"

#define NOW 1795000000		/* 2026-11-18 */
#define ARRIVAL (NOW - 3600)
#define ATTEMPT (NOW - 60)

static const char original[] =
    "Received: from client.example ([192.0.2.1])\r\n"
    "\tby mta.example (sluice) with ESMTP id 0005F1A2B3C4D5E6;\r\n"
    "\tTue, 17 Nov 2026 10:00:00 +0000\r\n"
    "From: Alice <alice@example.com>\r\n"
    "To: bob@example.net, carol@example.org\r\n"
    "Subject: lunch\r\n"
    "Message-ID: <lunch.1@example.com>\r\n"
    "\r\n"
    "Shall we meet at noon?\r\n"
    "\r\n"
    "--\r\n"
    "Alice\r\n";

/* The header section: up to the empty line, without it. */
#define ORIGINAL_HEADERS_LEN (strstr(original, "\r\n\r\n") + 2 - original)

struct dsn {
	char *s;		/* NUL-terminated copy of the report */
	size_t len;
	char bnd[128];		/* its boundary */
};

static void
dsn_free(struct dsn *d)
{
	free(d->s);
	d->s = NULL;
}

/* cmocka cuts long messages, so the report goes to stderr whole. */
#define assert_has(hay, needle) do {					\
	if (strstr((hay), (needle)) == NULL) {				\
		fprintf(stderr, "%s\n", (hay));				\
		fail_msg("missing \"%s\"", (needle));			\
	}								\
} while (0)
#define assert_hasnt(hay, needle) do {					\
	if (strstr((hay), (needle)) != NULL) {				\
		fprintf(stderr, "%s\n", (hay));				\
		fail_msg("unexpected \"%s\"", (needle));		\
	}								\
} while (0)

static size_t
count(const char *hay, const char *needle)
{
	size_t n = 0;

	for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++)
		n++;
	return n;
}

/* CRLF only, no line longer than 998 octets (RFC 5322 2.1.1). */
static void
check_lines(const struct dsn *d)
{
	size_t col = 0;

	for (size_t i = 0; i < d->len; i++) {
		if (d->s[i] == '\r') {
			assert_true(i + 1 < d->len && d->s[i + 1] == '\n');
			assert_true(col <= 998);
			col = 0;
			i++;
		} else {
			assert_true(d->s[i] != '\n');
			assert_true(d->s[i] != '\0');
			col++;
		}
	}
	assert_int_equal(col, 0);
}

static struct bounce_info
info(struct evbuffer *orig)
{
	struct bounce_info b = {
		.reporting_mta = "mta.example",
		.mid = 0x0005F1A2B3C4D5E6ULL,
		.sender = "alice@example.com",
		.arrival = ARRIVAL,
		.ret_full = 1,
		.original = orig,
	};

	return b;
}

static struct evbuffer *
original_buf(void)
{
	struct evbuffer *e = evbuffer_new();

	assert_non_null(e);
	evbuffer_add(e, original, sizeof(original) - 1);
	return e;
}

/* Build, copy out, check the lines and find the boundary. */
static void
build(const struct bounce_info *b, struct dsn *d)
{
	struct evbuffer *out = bounce_build(b, NOW);
	const char *p, *q;

	assert_non_null(out);
	d->len = evbuffer_get_length(out);
	d->s = malloc(d->len + 1);
	assert_non_null(d->s);
	assert_int_equal(evbuffer_remove(out, d->s, d->len), (int)d->len);
	d->s[d->len] = '\0';
	evbuffer_free(out);
	check_lines(d);

	p = strstr(d->s, "\tboundary=\"");
	assert_non_null(p);
	p += strlen("\tboundary=\"");
	q = strchr(p, '"');
	assert_non_null(q);
	assert_true(q > p && (size_t)(q - p) < sizeof(d->bnd) &&
	    q - p <= 70);
	memcpy(d->bnd, p, (size_t)(q - p));
	d->bnd[q - p] = '\0';
}

/* The header section of the report, as a new string. */
static char *
head(const struct dsn *d)
{
	const char *end = strstr(d->s, "\r\n\r\n");

	assert_non_null(end);
	return strndup(d->s, (size_t)(end - d->s) + 2);
}

/* nparts delimiter lines, the close delimiter last, no boundary elsewhere. */
static void
check_boundaries(const struct dsn *d, size_t nparts)
{
	char open[160], close[160];

	snprintf(open, sizeof(open), "\r\n--%s\r\n", d->bnd);
	snprintf(close, sizeof(close), "\r\n--%s--\r\n", d->bnd);
	assert_int_equal(count(d->s, open), nparts);
	assert_int_equal(count(d->s, close), 1);
	assert_int_equal(count(d->s, d->bnd), nparts + 2);
	assert_string_equal(d->s + d->len - strlen(close), close);
}

static void
check_headers(const struct dsn *d, const char *subject, const char *rtype)
{
	char *h = head(d), date[64], line[256];

	assert_has(h, "From: \"Mail Delivery System\" "
	    "<MAILER-DAEMON@mta.example>\r\n");
	assert_has(h, "To: <alice@example.com>\r\n");
	snprintf(line, sizeof(line), "Subject: %s\r\n", subject);
	assert_has(h, line);
	sl_rfc5322_date(NOW, date, sizeof(date));
	snprintf(line, sizeof(line), "Date: %s\r\n", date);
	assert_has(h, line);
	assert_has(h, "Message-ID: <0005F1A2B3C4D5E6.bounce.");
	assert_has(h, "@mta.example>\r\n");
	assert_has(h, "Auto-Submitted: auto-replied\r\n");
	assert_has(h, "MIME-Version: 1.0\r\n");
	snprintf(line, sizeof(line), "Content-Type: multipart/report; "
	    "report-type=%s;\r\n\tboundary=\"%s\"\r\n", rtype, d->bnd);
	assert_has(h, line);
	free(h);
}

/*
 * Python's email package, as the system tests use it. exp lists, one per
 * line: the report-type, the type of part 3 ("-" for none), then per
 * recipient "action\tstatus\tdiagnostic-code" ("" for none, "*" for any).
 */
static const char py_check[] =
    "import email, sys\n"
    "from email import policy\n"
    "m = email.message_from_binary_file(open(sys.argv[1], 'rb'),\n"
    "    policy=policy.default)\n"
    "exp = open(sys.argv[2], encoding='utf-8').read().split('\\n')\n"
    "rtype, ptype, rcpts = exp[0], exp[1], [l for l in exp[2:] if l]\n"
    "assert m.get_content_type() == 'multipart/report', m.get_content_type()\n"
    "assert m.get_param('report-type') == rtype, m.get_param('report-type')\n"
    "assert m['Auto-Submitted'] == 'auto-replied'\n"
    "for p in m.walk():\n"
    "    assert not p.defects, (p.get_content_type(), p.defects)\n"
    "parts = list(m.iter_parts())\n"
    "assert len(parts) == (2 if ptype == '-' else 3), len(parts)\n"
    "assert parts[0].get_content_type() == 'text/plain'\n"
    "assert 'This is the mail system at host' in parts[0].get_content()\n"
    "if rtype == 'delivery-status':\n"
    "    assert parts[1].get_content_type() == 'message/delivery-status'\n"
    "    blocks = parts[1].get_payload()\n"
    "    if rcpts:\n"
    "        assert len(blocks) == 1 + len(rcpts), len(blocks)\n"
    "    assert blocks[0]['Reporting-MTA'] == 'dns; mta.example'\n"
    "    for b, want in zip(blocks[1:], rcpts):\n"
    "        action, status, diag = want.split('\\t')\n"
    "        assert b['Action'] == action, (b['Action'], action)\n"
    "        assert b['Status'] == status, (b['Status'], status)\n"
    "        assert diag == '*' or (b['Diagnostic-Code'] or '') == diag, \\\n"
    "            (b['Diagnostic-Code'], diag)\n"
    "        assert b['Final-Recipient'].startswith(('rfc822;', 'utf-8;'))\n"
    "else:\n"
    "    assert parts[1].get_content_type() ==\\\n"
    "        'message/global-delivery-status'\n"
    "if ptype != '-':\n"
    "    assert parts[2].get_content_type() == ptype, \\\n"
    "        (parts[2].get_content_type(), ptype)\n"
    "if ptype == 'message/rfc822':\n"
    "    assert parts[2].get_payload(0)['Subject'] == 'lunch'\n";

static void
python_check(const struct dsn *d, const char *exp)
{
	char dsnf[] = "/tmp/test_bounce_dsn_XXXXXX";
	char expf[] = "/tmp/test_bounce_exp_XXXXXX";
	char pyf[] = "/tmp/test_bounce_py_XXXXXX";
	char cmd[256];
	FILE *f;
	int fd, rc;

	if (access("/usr/bin/python3", X_OK) != 0) {
		print_message("no /usr/bin/python3: Python check skipped\n");
		return;
	}
	assert_true((fd = mkstemp(dsnf)) >= 0);
	assert_int_equal(write(fd, d->s, d->len), (ssize_t)d->len);
	close(fd);
	assert_true((fd = mkstemp(expf)) >= 0);
	assert_int_equal(write(fd, exp, strlen(exp)), (ssize_t)strlen(exp));
	close(fd);
	assert_true((fd = mkstemp(pyf)) >= 0);
	assert_non_null(f = fdopen(fd, "w"));
	fputs(py_check, f);
	fclose(f);
	snprintf(cmd, sizeof(cmd), "/usr/bin/python3 %s %s %s", pyf, dsnf,
	    expf);
	rc = system(cmd);
	unlink(pyf);
	unlink(expf);
	if (rc != 0)
		fail_msg("python check failed (%d) on %s", rc, dsnf);
	unlink(dsnf);
}

static const struct bounce_rcpt failed_rcpts[] = {
	{
		.addr = "bob@example.net",
		.orcpt = "rfc822;bob@example.net",
		.action = BOUNCE_FAILED,
		.status = "5.1.1",
		.remote_mta = "mx.example.net",
		.diagnostic = "550 5.1.1 <bob@example.net>: User unknown",
		.last_attempt = ATTEMPT,
	},
	{
		.addr = "carol@example.org",
		.action = BOUNCE_FAILED,
		.status = "5.2.2",
		.remote_mta = "mx.example.org",
		.diagnostic = "552 5.2.2 Mailbox full",
		.last_attempt = ATTEMPT,
	},
};

static void
test_failed(void **state)
{
	struct evbuffer *orig = original_buf();
	struct bounce_info b = info(orig);
	struct dsn d;
	char date[64], want[1024], *body;

	b.envid = "QQ314159";
	b.nrcpt = 2;
	b.rcpts = failed_rcpts;
	build(&b, &d);
	check_headers(&d, "Undelivered Mail Returned to Sender",
	    "delivery-status");
	check_boundaries(&d, 3);
	assert_has(d.s, "Content-Type: text/plain; charset=us-ascii\r\n");
	assert_has(d.s, "This is the mail system at host mta.example.");
	assert_has(d.s, "<bob@example.net>: host mx.example.net said: 550 "
	    "5.1.1 <bob@example.net>:\r\n    User unknown (status 5.1.1)\r\n");
	assert_has(d.s, "<carol@example.org>: host mx.example.org said: 552 "
	    "5.2.2 Mailbox full\r\n    (status 5.2.2)\r\n");

	/* part 2, whole: per-message fields, one block per recipient */
	sl_rfc5322_date(ARRIVAL, date, sizeof(date));
	body = xasprintf("Content-Type: message/delivery-status\r\n\r\n"
	    "Reporting-MTA: dns; mta.example\r\n"
	    "Original-Envelope-Id: QQ314159\r\n"
	    "Arrival-Date: %s\r\n\r\n", date);
	assert_has(d.s, body);
	free(body);
	sl_rfc5322_date(ATTEMPT, date, sizeof(date));
	snprintf(want, sizeof(want), "\r\n\r\n"
	    "Original-Recipient: rfc822;bob@example.net\r\n"
	    "Final-Recipient: rfc822;bob@example.net\r\n"
	    "Action: failed\r\n"
	    "Status: 5.1.1\r\n"
	    "Remote-MTA: dns; mx.example.net\r\n"
	    "Diagnostic-Code: smtp; 550 5.1.1 <bob@example.net>: User unknown\r\n"
	    "Last-Attempt-Date: %s\r\n\r\n"
	    "Final-Recipient: rfc822;carol@example.org\r\n"
	    "Action: failed\r\n"
	    "Status: 5.2.2\r\n"
	    "Remote-MTA: dns; mx.example.org\r\n"
	    "Diagnostic-Code: smtp; 552 5.2.2 Mailbox full\r\n"
	    "Last-Attempt-Date: %s\r\n"
	    "\r\n--%s\r\n", date, date, d.bnd);
	assert_has(d.s, want);
	assert_int_equal(count(d.s, "Original-Recipient:"), 1);

	/* part 3: the original byte for byte, then the close delimiter */
	snprintf(want, sizeof(want), "Content-Type: message/rfc822\r\n\r\n%s"
	    "\r\n--%s--\r\n", original, d.bnd);
	assert_has(d.s, want);
	assert_hasnt(d.s, "text/rfc822-headers");
	assert_hasnt(d.s, "Content-Transfer-Encoding");

	python_check(&d, "delivery-status\nmessage/rfc822\n"
	    "failed\t5.1.1\tsmtp; 550 5.1.1 <bob@example.net>: User unknown\n"
	    "failed\t5.2.2\tsmtp; 552 5.2.2 Mailbox full\n");
	dsn_free(&d);
	evbuffer_free(orig);
}

static void
test_delayed(void **state)
{
	static const struct bounce_rcpt r = {
		.addr = "bob@example.net",
		.action = BOUNCE_DELAYED,
		.status = "4.4.1",
		.remote_mta = "mx.example.net",
		.diagnostic = "connect to mx.example.net: Connection timed out",
		.last_attempt = ATTEMPT,
	};
	struct evbuffer *orig = original_buf();
	struct bounce_info b = info(orig);
	struct dsn d;
	char want[1024];

	b.ret_full = 0;
	b.nrcpt = 1;
	b.rcpts = &r;
	build(&b, &d);
	check_headers(&d, "Delayed Mail (still being retried)",
	    "delivery-status");
	check_boundaries(&d, 3);
	assert_has(d.s, "Final-Recipient: rfc822;bob@example.net\r\n"
	    "Action: delayed\r\nStatus: 4.4.1\r\n"
	    "Remote-MTA: dns; mx.example.net\r\n"
	    "Diagnostic-Code: X-Sluice; connect to mx.example.net: Connection "
	    "timed out\r\n");
	assert_hasnt(d.s, "Original-Envelope-Id");
	assert_hasnt(d.s, "Original-Recipient");
	assert_hasnt(d.s, "Will-Retry-Until");
	assert_has(d.s, "has been delayed");

	/* RET=HDRS: the header section only */
	snprintf(want, sizeof(want), "Content-Type: text/rfc822-headers\r\n"
	    "\r\n%.*s\r\n--%s--\r\n", (int)ORIGINAL_HEADERS_LEN, original,
	    d.bnd);
	assert_has(d.s, want);
	assert_hasnt(d.s, "Shall we meet");
	assert_hasnt(d.s, "message/rfc822");
	python_check(&d, "delivery-status\ntext/rfc822-headers\n"
	    "delayed\t4.4.1\tX-Sluice; connect to mx.example.net: Connection "
	    "timed out\n");
	dsn_free(&d);
	evbuffer_free(orig);
}

static void
test_delivered(void **state)
{
	static const struct bounce_rcpt r[] = {
		{
			.addr = "bob@example.net",
			.orcpt = "rfc822;b+2Bob@example.net",
			.action = BOUNCE_DELIVERED,
			.status = "2.0.0",
			.remote_mta = "mx.example.net",
			.diagnostic = "250 2.0.0 Ok: queued as 4AB",
		},
		{
			.addr = "carol@example.org",
			.action = BOUNCE_RELAYED,
			.status = "2.0.0",
		},
	};
	struct evbuffer *orig = original_buf();
	struct bounce_info b = info(orig);
	struct dsn d;

	b.ret_full = 0;
	b.nrcpt = 2;
	b.rcpts = r;
	build(&b, &d);
	check_headers(&d, "Successful Mail Delivery Report", "delivery-status");
	check_boundaries(&d, 3);
	/* RFC 3461 4.2: the xtext of ORCPT is decoded in the report */
	assert_has(d.s, "Original-Recipient: rfc822;b+ob@example.net\r\n"
	    "Final-Recipient: rfc822;bob@example.net\r\n"
	    "Action: delivered\r\nStatus: 2.0.0\r\n");
	assert_has(d.s, "Final-Recipient: rfc822;carol@example.org\r\n"
	    "Action: relayed\r\nStatus: 2.0.0\r\n\r\n--");
	assert_has(d.s, "was delivered to the following");
	assert_has(d.s, "do not send delivery reports");
	python_check(&d, "delivery-status\ntext/rfc822-headers\n"
	    "delivered\t2.0.0\tsmtp; 250 2.0.0 Ok: queued as 4AB\n"
	    "relayed\t2.0.0\t\n");
	dsn_free(&d);
	evbuffer_free(orig);
}

/* RET=FULL, but over max_original: headers only, and the text says so. */
static void
test_max_original(void **state)
{
	struct evbuffer *orig = original_buf();
	struct bounce_info b = info(orig);
	struct dsn d;

	b.nrcpt = 1;
	b.rcpts = failed_rcpts;
	b.max_original = sizeof(original) - 2;
	build(&b, &d);
	assert_has(d.s, "Content-Type: text/rfc822-headers\r\n");
	assert_has(d.s, "Message-ID: <lunch.1@example.com>\r\n");
	assert_hasnt(d.s, "Shall we meet");
	assert_has(d.s, "too large to return in full");
	python_check(&d, "delivery-status\ntext/rfc822-headers\n"
	    "failed\t5.1.1\tsmtp; 550 5.1.1 <bob@example.net>: User unknown\n");
	dsn_free(&d);

	/* exactly at the limit is still returned whole */
	b.max_original = sizeof(original) - 1;
	build(&b, &d);
	assert_has(d.s, "Content-Type: message/rfc822\r\n\r\n");
	assert_has(d.s, "Shall we meet");
	dsn_free(&d);
	evbuffer_free(orig);
}

/* A peer's reply may hold anything: one clean line, cut under 998. */
static void
test_hostile_diagnostic(void **state)
{
	struct bounce_rcpt r = failed_rcpts[0];
	struct evbuffer *orig = original_buf();
	struct bounce_info b = info(orig);
	char *diag = malloc(5000), *line, *end;
	struct dsn d;

	assert_non_null(diag);
	strcpy(diag, "550-5.1.1 first\r\n550-x\rbare\nlf\x01\x1b[31m\x7f"
	    "\xff\xfe 8bit ");
	for (size_t n = strlen(diag); n < 4999; n++)
		diag[n] = n % 7 ? 'a' : ' ';
	diag[4999] = '\0';
	r.diagnostic = diag;
	r.status = "5.1.1\r\nX-Injected: yes";
	r.remote_mta = "mx.example.net\r\nX-Injected: yes";
	b.nrcpt = 1;
	b.rcpts = &r;
	b.envid = "id\r\nX-Injected: yes";
	build(&b, &d);
	assert_hasnt(d.s, "\r\nX-Injected");
	assert_has(d.s, "Status: 5.0.0\r\n");
	assert_has(d.s, "Diagnostic-Code: smtp; 550-5.1.1 first 550-x bare "
	    "lf[31m?? 8bit aaaa aaaaaa");
	line = strstr(d.s, "Diagnostic-Code: ");
	end = strstr(line, "\r\n");
	assert_true(end - line < 998);
	python_check(&d, "delivery-status\nmessage/rfc822\nfailed\t5.0.0\t*\n");
	dsn_free(&d);

	/* an address that grows sixfold as xtext; a reply of nothing */
	for (size_t n = 0; n < 1200; n += 2)
		memcpy(diag + n, "\xc3\xbc", 2);
	strcpy(diag + 1200, "@example.net");
	r.addr = diag;
	r.diagnostic = "\r\n\x01";
	build(&b, &d);
	assert_has(d.s, "Final-Recipient: utf-8;\\x{FC}\\x{FC}");
	assert_hasnt(d.s, "Diagnostic-Code");
	python_check(&d, "delivery-status\nmessage/rfc822\nfailed\t5.0.0\t\n");
	dsn_free(&d);
	free(diag);
	evbuffer_free(orig);
}

/* RFC 6533: SMTPUTF8 mail with UTF-8 addresses or header fields. */
static void
test_utf8(void **state)
{
	static const char uorig[] = "From: J\xc3\xbcrgen <j@example.com>\r\n"
	    "Subject: Gr\xc3\xbc\xc3\x9f" "e\r\n\r\nHallo\r\n";
	static const struct bounce_rcpt r = {
		.addr = "j\xc3\xbcrgen+x@example.net",
		.orcpt = "utf-8;j\\x{FC}rgen+2Bx@example.net",
		.action = BOUNCE_FAILED,
		.status = "5.1.1",
		.diagnostic = "550 5.1.1 unknown",
	};
	struct evbuffer *orig = evbuffer_new();
	struct bounce_info b = info(orig);
	struct dsn d;

	evbuffer_add(orig, uorig, sizeof(uorig) - 1);
	b.smtputf8 = 1;
	b.nrcpt = 1;
	b.rcpts = &r;
	build(&b, &d);
	check_headers(&d, "Undelivered Mail Returned to Sender",
	    "global-delivery-status");
	check_boundaries(&d, 3);
	assert_has(d.s, "Content-Transfer-Encoding: 8bit\r\n");
	assert_has(d.s, "Content-Type: text/plain; charset=utf-8\r\n");
	assert_has(d.s, "<j\xc3\xbcrgen+x@example.net>:");
	assert_has(d.s, "Content-Type: message/global-delivery-status\r\n");
	assert_has(d.s, "Final-Recipient: utf-8;j\xc3\xbcrgen\\x{2B}x@"
	    "example.net\r\n");
	assert_has(d.s, "Original-Recipient: utf-8;j\\x{FC}rgen+2Bx@"
	    "example.net\r\n");
	assert_has(d.s, "Content-Type: message/global\r\n");
	assert_has(d.s, uorig);
	python_check(&d, "global-delivery-status\nmessage/global\n");
	dsn_free(&d);

	b.ret_full = 0;
	build(&b, &d);
	assert_has(d.s, "Content-Type: message/global-headers\r\n");
	assert_hasnt(d.s, "Hallo");
	dsn_free(&d);

	/* without SMTPUTF8 only ASCII: the address as utf-8-addr-xtext */
	b.smtputf8 = 0;
	build(&b, &d);
	check_headers(&d, "Undelivered Mail Returned to Sender",
	    "delivery-status");
	assert_has(d.s, "Final-Recipient: utf-8;j\\x{FC}rgen\\x{2B}x@"
	    "example.net\r\n");
	assert_has(d.s, "Content-Type: message/delivery-status\r\n");
	assert_has(d.s, "<j??rgen+x@example.net>:");
	assert_has(d.s, "Content-Type: text/rfc822-headers\r\n");
	dsn_free(&d);
	evbuffer_free(orig);
}

/* No original at hand: the report has two parts. */
static void
test_no_original(void **state)
{
	struct bounce_info b = info(NULL);
	struct dsn d;

	b.nrcpt = 2;
	b.rcpts = failed_rcpts;
	build(&b, &d);
	check_boundaries(&d, 2);
	assert_hasnt(d.s, "message/rfc822");
	assert_hasnt(d.s, "rfc822-headers");
	python_check(&d, "delivery-status\n-\n"
	    "failed\t5.1.1\tsmtp; 550 5.1.1 <bob@example.net>: User unknown\n"
	    "failed\t5.2.2\tsmtp; 552 5.2.2 Mailbox full\n");
	dsn_free(&d);
}

/* Message-ID and boundary differ between two reports of the same second. */
static void
test_unique(void **state)
{
	struct evbuffer *orig = original_buf();
	struct bounce_info b = info(orig);
	struct dsn d1, d2;
	char *h1, *h2, *m1, *m2;

	b.nrcpt = 1;
	b.rcpts = failed_rcpts;
	build(&b, &d1);
	build(&b, &d2);
	h1 = head(&d1);
	h2 = head(&d2);
	m1 = strstr(h1, "Message-ID: ");
	m2 = strstr(h2, "Message-ID: ");
	assert_non_null(m1);
	assert_non_null(m2);
	*strstr(m1, "\r\n") = '\0';
	*strstr(m2, "\r\n") = '\0';
	assert_string_not_equal(m1, m2);
	assert_string_not_equal(d1.bnd, d2.bnd);
	free(h1);
	free(h2);
	dsn_free(&d1);
	dsn_free(&d2);
	evbuffer_free(orig);
}

/* An original with no body, and one with no header section. */
static void
test_odd_originals(void **state)
{
	struct evbuffer *orig = evbuffer_new();
	struct bounce_info b = info(orig);
	struct dsn d;
	char want[512];

	b.ret_full = 0;
	b.nrcpt = 1;
	b.rcpts = failed_rcpts;
	evbuffer_add_printf(orig, "Subject: only headers\r\n");
	build(&b, &d);
	snprintf(want, sizeof(want), "Content-Type: text/rfc822-headers\r\n"
	    "\r\nSubject: only headers\r\n\r\n--%s--\r\n", d.bnd);
	assert_has(d.s, want);
	dsn_free(&d);

	evbuffer_drain(orig, evbuffer_get_length(orig));
	evbuffer_add_printf(orig, "\r\nbody only\r\n");
	build(&b, &d);
	snprintf(want, sizeof(want), "Content-Type: text/rfc822-headers\r\n"
	    "\r\n\r\n--%s--\r\n", d.bnd);
	assert_has(d.s, want);
	assert_hasnt(d.s, "body only");
	dsn_free(&d);
	evbuffer_free(orig);
}

/* An original in many small chains, as the spool may hand it over. */
static void
test_chunked(void **state)
{
	static const char uhead[] = "Subject: Gr\xc3\xbc\xc3\x9f" "e\r\n";
	struct evbuffer *orig = evbuffer_new();
	struct bounce_info b = info(orig);
	struct dsn d;
	char *want;

	/* 40 chains: past the 16 extents peeked at a time */
	for (int i = 0; i < 39; i++)
		evbuffer_add_reference(orig, "X-Pad: 0123456789\r\n", 19, NULL,
		    NULL);
	evbuffer_add_reference(orig, uhead, sizeof(uhead) - 1, NULL, NULL);
	evbuffer_add_reference(orig, "\r\nbody\r\n", 8, NULL, NULL);
	b.smtputf8 = 1;
	b.nrcpt = 1;
	b.rcpts = failed_rcpts;
	build(&b, &d);
	/* the UTF-8 field is found in the last chain of the header section */
	assert_has(d.s, "Content-Type: message/global\r\n");
	want = xasprintf("%s%s\r\nbody\r\n\r\n--%s--\r\n",
	    "X-Pad: 0123456789\r\nX-Pad: 0123456789\r\n", uhead, d.bnd);
	assert_has(d.s, want);
	assert_int_equal(count(d.s, "X-Pad: 0123456789\r\n"), 39);
	free(want);
	dsn_free(&d);

	b.ret_full = 0;
	build(&b, &d);
	want = xasprintf("Content-Type: message/global-headers\r\n"
	    "Content-Transfer-Encoding: 8bit\r\n\r\n"
	    "X-Pad: 0123456789\r\n");
	assert_has(d.s, want);
	free(want);
	want = xasprintf("X-Pad: 0123456789\r\n%s\r\n--%s--\r\n", uhead,
	    d.bnd);
	assert_has(d.s, want);
	assert_hasnt(d.s, "body");
	assert_int_equal(count(d.s, "X-Pad: 0123456789\r\n"), 39);
	assert_int_equal(evbuffer_get_length(orig), 39 * 19 +
	    sizeof(uhead) - 1 + 8);
	free(want);
	dsn_free(&d);
	evbuffer_free(orig);
}

int
main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_failed),
		cmocka_unit_test(test_delayed),
		cmocka_unit_test(test_delivered),
		cmocka_unit_test(test_max_original),
		cmocka_unit_test(test_hostile_diagnostic),
		cmocka_unit_test(test_utf8),
		cmocka_unit_test(test_no_original),
		cmocka_unit_test(test_unique),
		cmocka_unit_test(test_odd_originals),
		cmocka_unit_test(test_chunked),
	};

	setenv("TZ", "UTC", 1);
	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	return cmocka_run_group_tests_name("bounce", tests, NULL, NULL);
}
