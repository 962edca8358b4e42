/* SPDX-License-Identifier: MIT */
/*
 * test_proto.c: the control protocol's lines (src/control/proto.c):
 * request validation with every error message, and the response lines
 * the server writes and the client reads back.
 *
 * Run one test by name: test_proto test_req_errors (a cmocka filter).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "control/control.h"

static void
test_req_ok(void **state)
{
	static const char line[] =
	    "{\"v\":1,\"cmd\":\"queue.list\",\"args\":{\"domain\":\"a.test\"}}";
	const char *cmd;
	json_t *args, *o;
	char err[256];

	o = control_req_parse(line, strlen(line), &cmd, &args, err,
	    sizeof(err));
	assert_non_null(o);
	assert_string_equal(cmd, "queue.list");
	assert_string_equal(json_string_value(json_object_get(args, "domain")),
	    "a.test");
	json_decref(o);
}

static void
test_req_args_default(void **state)
{
	static const char line[] = "{\"v\":1,\"cmd\":\"status\",\"extra\":1}";
	const char *cmd;
	json_t *args, *o;
	char err[256];

	o = control_req_parse(line, strlen(line), &cmd, &args, err,
	    sizeof(err));
	assert_non_null(o);
	assert_true(json_is_object(args));
	assert_int_equal(json_object_size(args), 0);
	json_decref(o);
}

static void
test_req_errors(void **state)
{
	static const struct {
		const char *line;
		const char *err;
	} cases[] = {
		{ "", "not JSON" },
		{ "{\"v\":1,", "not JSON" },
		{ "[1,2]", "expected an object, got an array" },
		{ "\"status\"", "not JSON" },
		{ "{\"cmd\":\"status\"}", "\"v\" is missing" },
		{ "{\"v\":2,\"cmd\":\"status\"}", "protocol version not supported" },
		{ "{\"v\":\"1\",\"cmd\":\"status\"}", "protocol version" },
		{ "{\"v\":1}", "\"cmd\" must be a command name" },
		{ "{\"v\":1,\"cmd\":\"\"}", "\"cmd\" must be a command name" },
		{ "{\"v\":1,\"cmd\":7}", "\"cmd\" must be a command name" },
		{ "{\"v\":1,\"cmd\":\"status\",\"args\":[]}",
		    "\"args\" must be an object, not an array" },
		{ "{\"v\":1,\"cmd\":\"status\",\"args\":null}",
		    "\"args\" must be an object, not null" },
		{ "{\"v\":1,\"v\":1,\"cmd\":\"status\"}", "not JSON" },
	};
	const char *cmd;
	json_t *args;
	char err[256];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		err[0] = '\0';
		assert_null(control_req_parse(cases[i].line,
		    strlen(cases[i].line), &cmd, &args, err, sizeof(err)));
		if (strstr(err, cases[i].err) == NULL)
			fail_msg("%s: got \"%s\", want \"%s\"", cases[i].line,
			    err, cases[i].err);
	}
}

static void
test_req_too_long(void **state)
{
	size_t n = CONTROL_MAX_LINE + 1;
	char *line = malloc(n);
	const char *cmd;
	json_t *args;
	char err[256];

	memset(line, ' ', n);
	assert_null(control_req_parse(line, n, &cmd, &args, err, sizeof(err)));
	assert_non_null(strstr(err, "line longer than"));
	free(line);
}

static void
test_req_line_roundtrip(void **state)
{
	json_t *a = json_pack("{s:[s]}", "mids", "0006610132BCD932");
	char *line = control_req_line("queue.flush", a);
	const char *cmd;
	json_t *args, *o;
	char err[256];

	assert_ptr_equal(strchr(line, '\n'), line + strlen(line) - 1);
	o = control_req_parse(line, strlen(line) - 1, &cmd, &args, err,
	    sizeof(err));
	assert_non_null(o);
	assert_string_equal(cmd, "queue.flush");
	assert_true(json_equal(args, a));
	json_decref(o);
	json_decref(a);
	free(line);
	line = control_req_line("status", NULL);
	assert_string_equal(line, "{\"v\":1,\"cmd\":\"status\",\"args\":{}}\n");
	free(line);
}

static void
test_resp_lines(void **state)
{
	char *ok = control_resp_ok_line(json_pack("{s:i}", "changed", 3));
	char *bad = control_resp_err_line("1 of 2 MIDs not in the queue",
	    json_pack("[s]", "00000000000000AA"));
	char *plain = control_resp_err_line("line with\nnewline", NULL);
	char err[256];
	json_t *o;

	assert_string_equal(ok,
	    "{\"v\":1,\"ok\":true,\"result\":{\"changed\":3}}\n");
	o = control_resp_parse(ok, strlen(ok) - 1, err, sizeof(err));
	assert_non_null(o);
	assert_true(json_is_true(json_object_get(o, "ok")));
	json_decref(o);
	o = control_resp_parse(bad, strlen(bad) - 1, err, sizeof(err));
	assert_non_null(o);
	assert_true(json_is_false(json_object_get(o, "ok")));
	assert_string_equal(json_string_value(json_array_get(
	    json_object_get(o, "unknown"), 0)), "00000000000000AA");
	json_decref(o);
	/* one line even when the text has a newline */
	assert_ptr_equal(strchr(plain, '\n'), plain + strlen(plain) - 1);
	free(ok);
	free(bad);
	free(plain);
}

static void
test_resp_errors(void **state)
{
	static const struct {
		const char *line;
		const char *err;
	} cases[] = {
		{ "{\"v\":1}", "\"ok\" must be true or false" },
		{ "{\"v\":1,\"ok\":1}", "\"ok\" must be true or false" },
		{ "{\"v\":1,\"ok\":false}", "without \"error\"" },
		{ "{\"v\":9,\"ok\":true}", "protocol version" },
		{ "garbage", "not JSON" },
	};
	char err[256];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		err[0] = '\0';
		assert_null(control_resp_parse(cases[i].line,
		    strlen(cases[i].line), err, sizeof(err)));
		if (strstr(err, cases[i].err) == NULL)
			fail_msg("%s: got \"%s\"", cases[i].line, err);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_req_ok),
		cmocka_unit_test(test_req_args_default),
		cmocka_unit_test(test_req_errors),
		cmocka_unit_test(test_req_too_long),
		cmocka_unit_test(test_req_line_roundtrip),
		cmocka_unit_test(test_resp_lines),
		cmocka_unit_test(test_resp_errors),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
