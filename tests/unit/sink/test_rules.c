/* SPDX-License-Identifier: MIT */
/*
 * test_rules.c: the sink's rules parser and matcher (src/sink/rules.c) and
 * its sliding-window limiter (src/sink/limit.c): every rule form, the
 * replies they build, every error message, file:line reporting, and globs.
 *
 * Run one test by name: test_rules test_glob (a cmocka filter pattern).
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

#include "sink/sink.h"

static struct sink_rules *
parse_ok(const char *line)
{
	struct sink_rules *r = sink_rules_new();
	char err[512] = "";

	if (sink_rules_add(r, line, err, sizeof(err)) != 0)
		fail_msg("\"%s\": %s", line, err);
	return r;
}

static void
test_match_rules(void **state)
{
	struct sink_rules *r = parse_ok("rcpt *@bounce.test 550 5.1.1 User unknown");
	const struct sink_match *m;

	assert_int_equal(sink_rules_add(r, "rcpt defer+*@* 451 4.7.1 Try later",
	    NULL, 0), 0);
	assert_int_equal(sink_rules_add(r, "mail spam?@* 553", NULL, 0), 0);
	assert_int_equal(sink_rules_add(r, "helo bad.* 550 # comment", NULL, 0), 0);
	assert_int_equal(r->nmatches, 4);
	m = sink_rules_match(r, SINK_AT_RCPT, "Joe@BOUNCE.test");
	assert_non_null(m);
	assert_int_equal(m->code, 550);
	assert_string_equal(m->reply, "550 5.1.1 User unknown");
	m = sink_rules_match(r, SINK_AT_RCPT, "defer+1@x.test");
	assert_string_equal(m->reply, "451 4.7.1 Try later");
	assert_null(sink_rules_match(r, SINK_AT_RCPT, "a@bounce.test.org"));
	assert_null(sink_rules_match(r, SINK_AT_MAIL, "a@bounce.test"));
	m = sink_rules_match(r, SINK_AT_MAIL, "spam1@x");
	assert_string_equal(m->reply, "553 5.0.0 Rejected by sink rule");
	m = sink_rules_match(r, SINK_AT_HELO, "bad.example");
	assert_string_equal(m->reply, "550 5.0.0 Rejected by sink rule");
	sink_rules_free(r);
}

static void
test_rate_rules(void **state)
{
	static const struct {
		const char *line;
		int stage, code;
		double p;
		const char *reply;
	} cases[] = {
		{ "rate 4xx 0.1 at rcpt", SINK_AT_RCPT, 451, 0.1,
		  "451 4.3.0 Injected temporary failure" },
		{ "rate 5xx 5% at mail", SINK_AT_MAIL, 554, 0.05,
		  "554 5.3.0 Injected permanent failure" },
		{ "rate 421 1 at data-end", SINK_AT_EOM, 421, 1,
		  "421 4.3.0 Injected failure, closing connection" },
		{ "rate 4xx 0.5 at greeting", SINK_AT_CONNECT, 421, 0.5,
		  "421 4.3.0 Injected failure, closing connection" },
		{ "rate 450 0.2 at eom 4.2.1 Mailbox busy", SINK_AT_EOM, 450, 0.2,
		  "450 4.2.1 Mailbox busy" },
		{ "rate 5xx 0 at data Custom text", SINK_AT_DATA, 554, 0,
		  "554 5.3.0 Custom text" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct sink_rules *r = parse_ok(cases[i].line);
		assert_int_equal(r->nrates, 1);
		assert_int_equal(r->rates[0].stage, cases[i].stage);
		assert_int_equal(r->rates[0].code, cases[i].code);
		assert_true(r->rates[0].p > cases[i].p - 1e-9 &&
		    r->rates[0].p < cases[i].p + 1e-9);
		assert_string_equal(r->rates[0].reply, cases[i].reply);
		sink_rules_free(r);
	}
}

static void
test_settings_and_limits(void **state)
{
	struct sink_rules *r = sink_rules_new();
	const char *lines[] = {
		"greeting-421-after 100", "drop-in-data 0.05", "delay 200ms",
		"max-connections 50",
		"limit messages 100/min per-ip 421 4.7.0 Too fast",
		"limit recipients 5/s total 451 4.7.1",
		"limit messages 7/h",
		"   # only a comment", "",
	};

	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
		assert_int_equal(sink_rules_add(r, lines[i], NULL, 0), 0);
	assert_int_equal(r->greeting_421_after, 100);
	assert_true(r->drop_in_data > 0.049 && r->drop_in_data < 0.051);
	assert_int_equal(r->delay_ms, 200);
	assert_int_equal(r->max_connections, 50);
	assert_int_equal(r->nlimits, 3);
	assert_int_equal(r->limits[0].what, SINK_LIMIT_MESSAGES);
	assert_int_equal(r->limits[0].n, 100);
	assert_int_equal(r->limits[0].window_ms, 60000);
	assert_int_equal(r->limits[0].per_ip, 1);
	assert_string_equal(r->limits[0].reply, "421 4.7.0 Too fast");
	assert_int_equal(r->limits[1].what, SINK_LIMIT_RECIPIENTS);
	assert_int_equal(r->limits[1].window_ms, 1000);
	assert_int_equal(r->limits[1].per_ip, 0);
	assert_int_equal(r->limits[1].code, 451);
	assert_string_equal(r->limits[1].reply,
	    "451 4.7.1 Rate limit exceeded, try again later");
	assert_int_equal(r->limits[2].window_ms, 3600000);
	assert_string_equal(r->limits[2].reply,
	    "421 4.7.0 Rate limit exceeded, try again later");
	assert_int_equal(sink_rules_add(r, "delay 1.5s", NULL, 0), 0);
	assert_int_equal(r->delay_ms, 1500);
	sink_rules_free(r);
}

static void
test_errors(void **state)
{
	static const struct {
		const char *line, *err;
	} cases[] = {
		{ "bogus 1", "unknown rule 'bogus'" },
		{ "rcpt *@x", "rcpt: expected PATTERN CODE" },
		{ "rcpt *@x 250", "'250' is not a reply code 400-599" },
		{ "rcpt *@x 55", "'55' is not a reply code" },
		{ "rcpt *@x 550 4.1.1", "'4.1.1' is not an enhanced status code "
		  "of class 5" },
		{ "rate 4xx 0.1 rcpt", "rate: expected" },
		{ "rate 3xx 0.1 at rcpt", "'3xx' is not 4xx, 5xx, 421" },
		{ "rate 4xx 1.1 at rcpt", "'1.1' is not a probability" },
		{ "rate 4xx -0.1 at rcpt", "'-0.1' is not a probability" },
		{ "rate 4xx 0.1 at noon", "'noon' is not a stage" },
		{ "delay", "delay: expected one value" },
		{ "delay fast", "'fast' is not a duration" },
		{ "delay 10m", "'10m' is not a duration" },
		{ "drop-in-data 2", "'2' is not a probability" },
		{ "max-connections 0", "'0' is not a count above 0" },
		{ "greeting-421-after -3", "'-3' is not a count above 0" },
		{ "limit messages", "limit: expected" },
		{ "limit msgs 1/min", "'msgs' is not messages or recipients" },
		{ "limit messages 10", "'10' is not N/s, N/min or N/h" },
		{ "limit messages 10/day", "'/day' is not /s, /min or /h" },
		{ "limit messages 0/min", "'0' is not a count above 0" },
		{ "limit messages 5/min everyone", "'everyone' is not per-ip, "
		  "total or a reply code" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct sink_rules *r = sink_rules_new();
		char err[512] = "";
		if (sink_rules_add(r, cases[i].line, err, sizeof(err)) == 0)
			fail_msg("\"%s\" was accepted", cases[i].line);
		if (strstr(err, cases[i].err) == NULL)
			fail_msg("\"%s\": \"%s\" lacks \"%s\"", cases[i].line,
			    err, cases[i].err);
		sink_rules_free(r);
	}
}

static void
test_load_file_line(void **state)
{
	char path[] = "/tmp/test_rules_XXXXXX", err[512];
	const char *text = "# rules\nrcpt *@a.test 550\n\nrate 4xx 7 at rcpt\n";
	struct sink_rules *r = sink_rules_new();
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	assert_int_equal(sink_rules_load(r, path, err, sizeof(err)), -1);
	char want[600];
	snprintf(want, sizeof(want), "%s:4: rate: '7' is not a probability",
	    path);
	if (strncmp(err, want, strlen(want)) != 0)
		fail_msg("got \"%s\", want \"%s\"", err, want);
	unlink(path);
	assert_int_equal(sink_rules_load(r, path, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "No such file"));
	sink_rules_free(r);
}

static void
test_glob(void **state)
{
	static const struct {
		const char *pat, *s;
		int want;
	} cases[] = {
		{ "*", "", 1 }, { "*", "abc", 1 }, { "", "", 1 }, { "", "a", 0 },
		{ "a*c", "abbbc", 1 }, { "a*c", "abbbcd", 0 },
		{ "*@bounce.test", "x@bounce.test", 1 },
		{ "*@bounce.test", "x@sub.bounce.test", 0 },
		{ "*@*bounce.test", "x@sub.bounce.test", 1 },
		{ "defer+*@*", "defer+x@y", 1 }, { "defer+*@*", "defe+x@y", 0 },
		{ "?@x", "a@x", 1 }, { "?@x", "ab@x", 0 },
		{ "A*B", "axxb", 1 }, { "**a", "bba", 1 }, { "*a*a*a", "aaa", 1 },
		{ "*a*a*a", "aa", 0 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		if (sink_glob(cases[i].pat, cases[i].s) != cases[i].want)
			fail_msg("glob \"%s\" \"%s\" != %d", cases[i].pat,
			    cases[i].s, cases[i].want);
}

static void
test_stage_names(void **state)
{
	assert_int_equal(sink_stage_parse("greeting"), SINK_AT_CONNECT);
	assert_int_equal(sink_stage_parse("connect"), SINK_AT_CONNECT);
	assert_int_equal(sink_stage_parse("RCPT"), SINK_AT_RCPT);
	assert_int_equal(sink_stage_parse("data-end"), SINK_AT_EOM);
	assert_int_equal(sink_stage_parse("eom"), SINK_AT_EOM);
	assert_int_equal(sink_stage_parse("later"), -1);
	assert_string_equal(sink_stage_name(SINK_AT_EOM), "data-end");
}

static void
test_limiter_window(void **state)
{
	struct sink_limiter *l = sink_limiter_new(60000);
	int64_t t = 1000000;

	for (int i = 0; i < 5; i++)
		sink_limiter_add(l, "1.2.3.4", t + i * 10000);
	sink_limiter_add(l, "5.6.7.8", t);
	assert_int_equal(sink_limiter_count(l, "1.2.3.4", t + 40000), 5);
	assert_int_equal(sink_limiter_count(l, "5.6.7.8", t + 40000), 1);
	assert_int_equal(sink_limiter_count(l, "9.9.9.9", t), 0);
	/* a minute after the first event, it has left the window */
	assert_int_equal(sink_limiter_count(l, "1.2.3.4", t + 60000), 4);
	assert_int_equal(sink_limiter_count(l, "1.2.3.4", t + 99999), 1);
	assert_int_equal(sink_limiter_count(l, "1.2.3.4", t + 200000), 0);
	/* an old slot is reused, not added to */
	sink_limiter_add(l, "1.2.3.4", t + 200000);
	assert_int_equal(sink_limiter_count(l, "1.2.3.4", t + 200000), 1);
	sink_limiter_free(l);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_match_rules),
		cmocka_unit_test(test_rate_rules),
		cmocka_unit_test(test_settings_and_limits),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_load_file_line),
		cmocka_unit_test(test_glob),
		cmocka_unit_test(test_stage_names),
		cmocka_unit_test(test_limiter_window),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
