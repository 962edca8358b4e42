/* SPDX-License-Identifier: MIT */
/*
 * test_msg.c: what `sluice sendmail` does to a message (src/submit/msg.c):
 * input lines with and without -i, address lists, -t recipients, Bcc
 * removal, and the Date, Message-ID and From added when missing.
 *
 * Run one test by name: test_msg test_parse_addrs (a cmocka filter).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "submit/submit.h"

/* Feed text line by line as sendmail reads stdin. */
static void
feed(struct submit_buf *b, const char *text, int ignore_dots, int *ended)
{
	const char *p = text;

	*ended = 0;
	while (*p != '\0') {
		const char *nl = strchr(p, '\n');
		size_t n = nl ? (size_t)(nl - p) + 1 : strlen(p);

		if (submit_input_line(b, p, n, ignore_dots)) {
			*ended = 1;
			return;
		}
		p += n;
	}
}

static void
test_input_lines(void **state)
{
	struct submit_buf b = { 0 };
	int ended;

	feed(&b, "Subject: x\n\na\n.\nb\n", 0, &ended);
	assert_true(ended);
	assert_string_equal(b.data, "Subject: x\r\n\r\na\r\n");
	submit_buf_free(&b);

	feed(&b, "Subject: x\r\n\r\na\r\n.\r\nb", 1, &ended);
	assert_false(ended);
	assert_string_equal(b.data, "Subject: x\r\n\r\na\r\n.\r\nb\r\n");
	submit_buf_free(&b);

	/* an mbox "From " line first is dropped; later ones are text */
	feed(&b, "From alice Mon Jan  1 00:00:00 2026\nSubject: y\n\n"
	    "From here\n", 1, &ended);
	assert_string_equal(b.data, "Subject: y\r\n\r\nFrom here\r\n");
	submit_buf_free(&b);
}

static void
check_addrs(const char *list, const char *const *want, size_t n)
{
	struct submit_addrs a = { 0 };

	assert_int_equal(submit_parse_addrs(list, strlen(list), &a), n);
	assert_int_equal(a.n, n);
	for (size_t i = 0; i < n; i++)
		if (strcmp(a.v[i], want[i]) != 0)
			fail_msg("%s: #%zu is \"%s\", want \"%s\"", list, i,
			    a.v[i], want[i]);
	submit_addrs_free(&a);
}

static void
test_parse_addrs(void **state)
{
	check_addrs("a@b.test", (const char *[]){ "a@b.test" }, 1);
	check_addrs("Bob <bob@b.test>, carol@c.test (Carol C.)",
	    (const char *[]){ "bob@b.test", "carol@c.test" }, 2);
	check_addrs("\"Doe, John\" <john@d.test>",
	    (const char *[]){ "john@d.test" }, 1);
	check_addrs("friends: x@f.test, Y <y@f.test>; z@z.test",
	    (const char *[]){ "x@f.test", "y@f.test", "z@z.test" }, 3);
	check_addrs("undisclosed-recipients:;", NULL, 0);
	check_addrs("<@relay.test:r@r.test>", (const char *[]){ "r@r.test" },
	    1);
	check_addrs("\"odd local\"@q.test",
	    (const char *[]){ "\"odd local\"@q.test" }, 1);
	check_addrs(" a@x.test ,\r\n\tb@x.test,,",
	    (const char *[]){ "a@x.test", "b@x.test" }, 2);
	check_addrs("(comment (nested)) c@x.test",
	    (const char *[]){ "c@x.test" }, 1);
	check_addrs("<>", NULL, 0);
}

static const char MSG[] =
    "To: Bob <bob@b.test>,\r\n"
    "  carol@c.test\r\n"
    "cc: dave@d.test\r\n"
    "Subject: hello\r\n"
    "BCC: eve@e.test\r\n"
    "\r\n"
    "To: not@a.header\r\n";

static void
test_header_rcpts(void **state)
{
	struct submit_addrs a = { 0 };
	size_t hlen = submit_header_len(MSG, strlen(MSG));

	assert_int_equal(hlen, strlen(MSG) - strlen("To: not@a.header\r\n"));
	assert_int_equal(submit_header_rcpts(MSG, hlen, &a), 4);
	assert_string_equal(a.v[0], "bob@b.test");
	assert_string_equal(a.v[1], "carol@c.test");
	assert_string_equal(a.v[2], "dave@d.test");
	assert_string_equal(a.v[3], "eve@e.test");
	submit_addrs_free(&a);
	assert_true(submit_has_field(MSG, hlen, "subject"));
	assert_false(submit_has_field(MSG, hlen, "Date"));
	/* no header at all */
	assert_int_equal(submit_header_len("just text\r\n", 11), 0);
}

static struct submit_opts
opts(void)
{
	struct submit_opts o = {
		.sender = "alice@a.test",
		.full_name = NULL,
		.hostname = "mx.a.test",
		.now = 1795507634,
		.unique = 0xabc,
		.strip_bcc = 1,
	};
	return o;
}

static void
test_prepare_adds_fields(void **state)
{
	struct submit_buf out = { 0 };
	struct submit_opts o = opts();

	submit_prepare(MSG, strlen(MSG), &o, &out);
	assert_null(strstr(out.data, "BCC"));
	assert_null(strstr(out.data, "eve@e.test"));
	assert_non_null(strstr(out.data, "To: Bob <bob@b.test>,\r\n"
	    "  carol@c.test\r\ncc: dave@d.test\r\nSubject: hello\r\n"));
	assert_non_null(strstr(out.data, "\r\nDate: Tue, 24 Nov 2026 "));
	assert_non_null(strstr(out.data,
	    "\r\nMessage-ID: <1795507634.abc@mx.a.test>\r\n"));
	assert_non_null(strstr(out.data, "\r\nFrom: alice@a.test\r\n\r\n"
	    "To: not@a.header\r\n"));
	submit_buf_free(&out);
}

static void
test_prepare_keeps_fields(void **state)
{
	static const char m[] = "From: Me <me@m.test>\r\nDate: Mon, 1 Jan "
	    "2024 00:00:00 +0000\r\nMessage-Id: <x@y>\r\nBcc: b@b.test\r\n"
	    "\r\nbody\r\n";
	struct submit_buf out = { 0 };
	struct submit_opts o = opts();

	o.strip_bcc = 0;	/* without -t Bcc stays as it is */
	submit_prepare(m, strlen(m), &o, &out);
	assert_string_equal(out.data, m);
	submit_buf_free(&out);
}

static void
test_prepare_full_name_and_no_header(void **state)
{
	struct submit_buf out = { 0 };
	struct submit_opts o = opts();

	o.full_name = "Alice \"Al\" A.";
	submit_prepare("no header here\r\n", 16, &o, &out);
	assert_non_null(strstr(out.data,
	    "From: \"Alice \\\"Al\\\" A.\" <alice@a.test>\r\n\r\n"
	    "no header here\r\n"));
	assert_int_equal(strncmp(out.data, "Date: ", 6), 0);
	submit_buf_free(&out);
	/* an empty message still gets a header */
	submit_prepare("", 0, &o, &out);
	assert_non_null(strstr(out.data, "Message-ID: "));
	assert_string_equal(out.data + out.len - 5, ">\r\n\r\n");
	submit_buf_free(&out);
}

struct fields {
	int n;
	char names[8][32];
	char values[8][128];
};

static void
collect(void *arg, const char *name, size_t nlen, const char *value,
    size_t vlen)
{
	struct fields *f = arg;

	assert_true(f->n < 8);
	snprintf(f->names[f->n], 32, "%.*s", (int)nlen, name);
	assert_int_equal(strlen(value), vlen);
	snprintf(f->values[f->n], 128, "%s", value);
	f->n++;
}

/* submit_fields: names, unfolded values, the header's end. */
static void
test_fields(void **state)
{
	const char *msg = "Subject:  Hello\r\n  folded\tline \r\n"
	    "From: <a@b>\r\nX-Empty:\r\n\r\nBody: not a field\r\n";
	struct fields f = { 0 };

	submit_fields(msg, submit_header_len(msg, strlen(msg)), collect, &f);
	assert_int_equal(f.n, 3);
	assert_string_equal(f.names[0], "Subject");
	assert_string_equal(f.values[0], "Hello  folded\tline");
	assert_string_equal(f.names[1], "From");
	assert_string_equal(f.values[1], "<a@b>");
	assert_string_equal(f.names[2], "X-Empty");
	assert_string_equal(f.values[2], "");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_input_lines),
		cmocka_unit_test(test_parse_addrs),
		cmocka_unit_test(test_header_rcpts),
		cmocka_unit_test(test_prepare_adds_fields),
		cmocka_unit_test(test_prepare_keeps_fields),
		cmocka_unit_test(test_prepare_full_name_and_no_header),
		cmocka_unit_test(test_fields),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
