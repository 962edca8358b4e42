/* SPDX-License-Identifier: MIT */
/*
 * test_mime.c: a request parsed (src/inject/request.c), stored as a batch
 * template and built into each recipient's message (src/inject/mime.c):
 * the structure, encodings, headers, escapes, determinism, attachments,
 * List-Unsubscribe, raw messages; and the request's 400s and per-recipient
 * rejections.
 *
 * Run one test by name: test_mime test_alternative (a cmocka filter).
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
#include <gmime/gmime.h>

#include "inject/inject.h"

static const struct inject_limits lim = { 1000, 1 << 20, 4096 };

static struct inject_req *
parse_ok(const char *json)
{
	struct inject_req *r;
	char err[256];

	if (inject_req_parse(json, strlen(json), &lim, &r, err,
	    sizeof(err)) != 0)
		fail_msg("parse: %s", err);
	return r;
}

static void
parse_fails(const char *json, const char *want)
{
	struct inject_req *r;
	char err[256] = "";

	if (inject_req_parse(json, strlen(json), &lim, &r, err,
	    sizeof(err)) == 0)
		fail_msg("parsed: %s", json);
	assert_null(r);
	if (strstr(err, want) == NULL)
		fail_msg("%s: error '%s' lacks '%s'", json, err, want);
}

/* Build rcpt i of the request; returns a new string (free()). */
static char *
build(struct inject_req *r, size_t i)
{
	char *tpl = inject_batch_json(r, 0x66100CD090399ULL, 1790000000,
	    "mx.sluice.test");
	char err[256];
	struct inject_batch *b = inject_batch_new(tpl, strlen(tpl), err,
	    sizeof(err));
	struct evbuffer *out = evbuffer_new();
	char *s;
	size_t n;

	if (b == NULL)
		fail_msg("batch: %s", err);
	if (inject_batch_build(b, r->rcpts[i].email, r->rcpts[i].vars,
	    (uint32_t)i, out, err, sizeof(err)) != 0)
		fail_msg("build: %s", err);
	n = evbuffer_get_length(out);
	s = malloc(n + 1);
	evbuffer_remove(out, s, n);
	s[n] = '\0';
	evbuffer_free(out);
	inject_batch_free(b);
	free(tpl);
	return s;
}

/* Every line ends in CRLF and no line passes 998 octets (RFC 5322 2.1.1). */
static void
assert_lines_ok(const char *m)
{
	const char *p = m;

	while (*p) {
		const char *nl = strchr(p, '\n');
		assert_non_null(nl);
		assert_true(nl > p && nl[-1] == '\r');
		assert_true(nl - p <= 1000);
		p = nl + 1;
	}
}

static const char example[] =
    "{\"from\": \"News <news@example.test>\","
    " \"subject\": \"Hello {{name}}\","
    " \"text\": \"Hi {{name|friend}}, your code is {{code}}.\\n\","
    " \"html\": \"<p>Hi {{name|friend}}</p>\","
    " \"headers\": {\"X-Campaign\": \"c42\"},"
    " \"unsubscribe\": \"https://example.test/u?e={{email}}\","
    " \"vars\": {\"code\": \"default\"},"
    " \"metadata\": {\"campaign\": \"c42\"},"
    " \"recipients\": [{\"email\": \"ann@a.test\", \"vars\": {\"name\": "
    "\"Ann\", \"code\": \"A1\"}}, {\"email\": \"bob@b.test\"}]}";

static void
test_alternative(void **state)
{
	struct inject_req *r = parse_ok(example);
	char *m0, *m1, *again;

	assert_int_equal(r->nrcpt, 2);
	assert_int_equal(r->nrejected, 0);
	assert_string_equal(r->sender, "news@example.test");
	m0 = build(r, 0);
	m1 = build(r, 1);
	assert_lines_ok(m0);
	assert_non_null(strstr(m0, "From: News <news@example.test>\r\n"));
	assert_non_null(strstr(m0, "To: ann@a.test\r\n"));
	assert_non_null(strstr(m0, "Subject: Hello Ann\r\n"));
	assert_non_null(strstr(m0, "Date: "));
	assert_non_null(strcasestr(m0, "Message-ID: <00066100CD090399.0@"
	    "mx.sluice.test>\r\n"));
	assert_non_null(strstr(m0, "X-Campaign: c42\r\n"));
	assert_non_null(strstr(m0, "List-Unsubscribe: <https://example.test/u?e="
	    "ann%40a.test>\r\n"));
	assert_non_null(strstr(m0, "List-Unsubscribe-Post: List-Unsubscribe="
	    "One-Click\r\n"));
	assert_non_null(strstr(m0, "multipart/alternative"));
	assert_non_null(strstr(m0, "Hi Ann, your code is A1.\r\n"));
	assert_non_null(strstr(m0, "<p>Hi Ann</p>"));
	/* the text part comes first (RFC 2046 5.1.4) */
	assert_true(strstr(m0, "text/plain") < strstr(m0, "text/html"));
	assert_non_null(strstr(m1, "Hi friend, your code is default."));
	assert_non_null(strstr(m1, "Subject: Hello \r\n") ?
	    strstr(m1, "Subject: Hello \r\n") : strstr(m1, "Subject: Hello\r\n"));
	/* deterministic: the same inputs make the same bytes */
	again = build(r, 0);
	assert_string_equal(m0, again);
	free(again);
	free(m0);
	free(m1);
	inject_req_free(r);
}

static void
test_escapes_and_utf8(void **state)
{
	struct inject_req *r = parse_ok("{\"from\": \"a@example.test\","
	    "\"subject\": \"Grüße {{name}}\", \"text\": \"Grüße {{name}}\","
	    "\"html\": \"<b>{{name}}</b>\", \"headers\": {\"X-Tag\": "
	    "\"{{name}}\"}, \"recipients\": [{\"email\": \"c@c.test\", "
	    "\"vars\": {\"name\": \"<script>x</script>\\r\\nBcc: v@x.test\"}}]}");
	char *m = build(r, 0);
	const char *eoh = strstr(m, "\r\n\r\n");

	assert_lines_ok(m);
	/* no header made from a value: Bcc stays inside the other fields */
	for (const char *p = m; p < eoh; p = strstr(p, "\r\n") + 2)
		assert_false(strncmp(p, "Bcc:", 4) == 0);
	assert_non_null(strstr(m, "&lt;script&gt;x&lt;/script&gt;"));
	assert_null(strstr(m, "<b><script>"));
	/* non-ASCII: RFC 2047 in the subject, UTF-8 and QP or base64 in the part */
	assert_non_null(strcasestr(m, "Subject: =?utf-8?"));
	assert_non_null(strstr(m, "charset=utf-8"));
	assert_true(strstr(m, "Content-Transfer-Encoding: quoted-printable") ||
	    strstr(m, "Content-Transfer-Encoding: base64"));
	/* parsed back with GMime: the subject decodes to the value */
	GMimeStream *s = g_mime_stream_mem_new_with_buffer(m, strlen(m));
	GMimeParser *p = g_mime_parser_new_with_stream(s);
	GMimeMessage *msg = g_mime_parser_construct_message(p, NULL);
	assert_non_null(msg);
	assert_string_equal(g_mime_message_get_subject(msg),
	    "Grüße <script>x</script>  Bcc: v@x.test");
	g_object_unref(msg);
	g_object_unref(p);
	g_object_unref(s);
	free(m);
	inject_req_free(r);
}

static void
test_attachment_and_long_lines(void **state)
{
	char json[8192], line[3000];
	struct inject_req *r;
	char *m;

	memset(line, 'x', sizeof(line) - 1);
	line[sizeof(line) - 1] = '\0';
	snprintf(json, sizeof(json), "{\"from\": \"a@example.test\", "
	    "\"subject\": \"s\", \"text\": \"%s\", \"attachments\": "
	    "[{\"filename\": \"a.txt\", \"content_type\": \"text/plain\", "
	    "\"content_base64\": \"aGVsbG8gd29ybGQ=\"}], \"recipients\": "
	    "[{\"email\": \"c@c.test\"}]}", line);
	r = parse_ok(json);
	m = build(r, 0);
	assert_lines_ok(m);
	assert_non_null(strstr(m, "multipart/mixed"));
	assert_non_null(strstr(m, "filename=a.txt"));
	assert_non_null(strstr(m, "aGVsbG8gd29ybGQ="));
	free(m);
	inject_req_free(r);
}

static void
test_raw(void **state)
{
	struct inject_req *r = parse_ok("{\"from\": \"a@example.test\", \"raw\":"
	    " \"Subject: raw one\\nFrom: a@example.test\\n\\nbody {{x}}\\n\","
	    " \"recipients\": [{\"email\": \"c@c.test\"}]}");
	char *m = build(r, 3);

	assert_lines_ok(m);
	assert_non_null(strstr(m, "Message-ID: <00066100CD090399.3@mx.sluice.test>"));
	assert_non_null(strstr(m, "Date: "));
	assert_non_null(strstr(m, "Subject: raw one\r\nFrom: a@example.test\r\n"
	    "\r\nbody {{x}}\r\n"));
	free(m);
	inject_req_free(r);
}

static void
test_rejections(void **state)
{
	struct inject_req *r = parse_ok("{\"from\": \"a@example.test\", "
	    "\"subject\": \"s\", \"text\": \"t\", \"recipients\": ["
	    "{\"email\": \"ok@a.test\"}, {\"email\": \"not an address\"}, 7, "
	    "{\"email\": \"x@a.test\", \"vars\": {\"a\": [1]}}, "
	    "{\"vars\": {}}, {\"email\": \"y@a.test\", \"zzz\": 1}, "
	    "{\"email\": \"ok2@b.test\", \"vars\": {\"n\": 1, \"b\": true}}]}");

	assert_int_equal(r->nrcpt, 2);
	assert_string_equal(r->rcpts[1].email, "ok2@b.test");
	assert_string_equal(r->rcpts[1].vars, "{\"n\":1,\"b\":true}");
	assert_int_equal(r->nrejected, 5);
	assert_int_equal(r->rejected[0].index, 1);
	assert_string_equal(r->rejected[0].email, "not an address");
	assert_string_equal(r->rejected[0].reason, "email: not a valid address");
	assert_int_equal(r->rejected[1].index, 2);
	assert_null(r->rejected[1].email);
	assert_non_null(strstr(r->rejected[2].reason, "'a' is an object"));
	assert_non_null(strstr(r->rejected[3].reason, "email: missing"));
	assert_non_null(strstr(r->rejected[4].reason, "unknown field 'zzz'"));
	inject_req_free(r);
}

static void
test_bad_requests(void **state)
{
	parse_fails("", "not a JSON object");
	parse_fails("[]", "not a JSON object");
	parse_fails("{\"from\": \"a@b.test\"", "expected '}'");
	parse_fails("{\"from\": \"a@b.test\", \"subject\": \"s\", \"text\": \"t\","
	    " \"recipients\": [{\"email\": \"c@d.test\"}]} x", "extra data");
	parse_fails("{\"subject\": \"s\", \"text\": \"t\", \"recipients\": "
	    "[{\"email\": \"c@d.test\"}]}", "from: missing");
	parse_fails("{\"from\": \"bad\", \"subject\": \"s\", \"text\": \"t\", "
	    "\"recipients\": [{\"email\": \"c@d.test\"}]}", "from: 'bad'");
	parse_fails("{\"from\": \"a@b.test\", \"subject\": \"s\", \"text\": \"t\"}",
	    "recipients: missing");
	parse_fails("{\"from\": \"a@b.test\", \"subject\": \"s\", \"text\": \"t\","
	    " \"recipients\": []}", "recipients: missing or empty");
	parse_fails("{\"from\": \"a@b.test\", \"text\": \"t\", \"recipients\": "
	    "[{\"email\": \"c@d.test\"}]}", "subject: missing");
	parse_fails("{\"from\": \"a@b.test\", \"subject\": \"s\", \"recipients\":"
	    " [{\"email\": \"c@d.test\"}]}", "give one or both");
	parse_fails("{\"from\": \"a@b.test\", \"subject\": \"{{x\", \"text\": "
	    "\"t\", \"recipients\": [{\"email\": \"c@d.test\"}]}",
	    "subject: offset 0");
	parse_fails("{\"from\": \"a@b.test\", \"subject\": \"s\", \"text\": \"t\","
	    " \"color\": 1, \"recipients\": [{\"email\": \"c@d.test\"}]}",
	    "unknown field 'color'");
	parse_fails("{\"from\": \"a@b.test\", \"subject\": \"s\", \"text\": \"t\","
	    " \"headers\": {\"Bcc\": \"x@y.test\"}, \"recipients\": "
	    "[{\"email\": \"c@d.test\"}]}", "Bcc is set by sluice");
	parse_fails("{\"from\": \"a@b.test\", \"subject\": \"s\", \"text\": \"t\","
	    " \"headers\": {\"X Bad\": \"v\"}, \"recipients\": "
	    "[{\"email\": \"c@d.test\"}]}", "not a header name");
	parse_fails("{\"from\": \"a@b.test\", \"subject\": \"s\", \"text\": \"t\","
	    " \"unsubscribe\": \"http://x.test/\", \"recipients\": "
	    "[{\"email\": \"c@d.test\"}]}", "https://");
	parse_fails("{\"from\": \"a@b.test\", \"raw\": \"no header\", "
	    "\"recipients\": [{\"email\": \"c@d.test\"}]}", "raw: not an RFC");
	parse_fails("{\"from\": \"a@b.test\", \"raw\": \"A: b\\n\\nc\", "
	    "\"subject\": \"s\", \"recipients\": [{\"email\": \"c@d.test\"}]}",
	    "either raw or subject");
	parse_fails("{\"from\": \"a@b.test\", \"subject\": \"s\", \"text\": \"t\","
	    " \"attachments\": [{\"filename\": \"a\", \"content_type\": \"x\", "
	    "\"content_base64\": \"aa==\"}], \"recipients\": "
	    "[{\"email\": \"c@d.test\"}]}", "content_type");
	parse_fails("{\"from\": \"a@b.test\", \"subject\": \"s\", \"text\": \"t\","
	    " \"attachments\": [{\"filename\": \"a\", \"content_type\": \"a/b\", "
	    "\"content_base64\": \"a*==\"}], \"recipients\": "
	    "[{\"email\": \"c@d.test\"}]}", "not base64");
	parse_fails("{\"from\": \"a@b.test\", \"from\": \"a@b.test\"}",
	    "given twice");
	parse_fails("{\"from\": \"a@b.test\", \"subject\": \"s\", \"text\": \"t\","
	    " \"vars\": {\"a\": {}}, \"recipients\": [{\"email\": \"c@d.test\"}]}",
	    "vars: not an object");
	parse_fails("{\"from\": \"a@b.test\", \"subject\": \"s\", \"text\": \"t\","
	    " \"archive\": 1, \"recipients\": [{\"email\": \"c@d.test\"}]}",
	    "archive: not true or false");
	parse_fails("{\"from\": \"a@b.test\", \"subject\": \"s\", \"text\": \"t\","
	    " \"recipients\": [{\"email\": \"c@d.test\"}], \"recipients\": []}",
	    "given twice");
	parse_fails("{\"from\": \"a@b.test\", \"subject\": \"s\", \"text\": \"t\","
	    " \"recipients\": [{\"email\": \"c@d.test\"} {}]}", "expected ']'");
	parse_fails("{\"from\": \"a@b.test\", \"subject\": \"\xff\"}", "UTF-8");
}

/* A recipient whose values would make a part too large is rejected at
 * injection (in order among the others), never failed at delivery. */
static void
test_rejected_for_size(void **state)
{
	static const struct inject_limits small = { 100, 2048, 4096 };
	struct inject_req *r;
	char err[200], json[16384], big[3001], lt[601];

	memset(big, 'x', 3000);
	big[3000] = '\0';
	/* 600 '<' are 600 bytes as given, 2400 as "&lt;": the escape counts */
	memset(lt, '<', 600);
	lt[600] = '\0';
	snprintf(json, sizeof(json), "{\"from\": \"a@b.test\", \"subject\": "
	    "\"s\", \"html\": \"{{v}}\", \"recipients\": [{\"email\": \"c@d.test\","
	    " \"vars\": {\"v\": \"%s\"}}, 7, {\"email\": \"e@d.test\", \"vars\": "
	    "{\"v\": \"%s\"}}, {\"email\": \"f@d.test\", \"vars\": {\"v\": "
	    "\"%s\"}}]}", big + 2000, big, lt);
	assert_int_equal(inject_req_parse(json, strlen(json), &small, &r, err,
	    sizeof(err)), 0);
	assert_int_equal(r->nrcpt, 1);
	assert_string_equal(r->rcpts[0].email, "c@d.test");
	assert_int_equal(r->nrejected, 3);
	assert_int_equal(r->rejected[0].index, 1);
	assert_int_equal(r->rejected[1].index, 2);
	assert_string_equal(r->rejected[1].reason, "the message would be "
	    "larger than 2048 bytes once its values are in");
	assert_int_equal(r->rejected[2].index, 3);
	inject_req_free(r);
}

static void
test_max_recipients(void **state)
{
	static const struct inject_limits two = { 2, 1 << 20, 64 };
	struct inject_req *r;
	char err[200];
	const char *j = "{\"from\": \"a@b.test\", \"subject\": \"s\", \"text\": "
	    "\"t\", \"recipients\": [{\"email\": \"c@d.test\"}, 1, "
	    "{\"email\": \"e@d.test\"}]}";

	assert_int_equal(inject_req_parse(j, strlen(j), &two, &r, err,
	    sizeof(err)), -1);
	assert_non_null(strstr(err, "more than 2"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_alternative),
		cmocka_unit_test(test_escapes_and_utf8),
		cmocka_unit_test(test_attachment_and_long_lines),
		cmocka_unit_test(test_raw),
		cmocka_unit_test(test_rejections),
		cmocka_unit_test(test_bad_requests),
		cmocka_unit_test(test_rejected_for_size),
		cmocka_unit_test(test_max_recipients),
	};

	inject_init();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
