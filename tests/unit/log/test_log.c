/* SPDX-License-Identifier: MIT */
/*
 * test_log.c: log lines as written to a file: the text form (ids first,
 * values quoted when needed) and the JSON form, which must parse as JSON in
 * valid UTF-8 whatever bytes a peer put in a value (issue 9 item 22).
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
#include <jansson.h>

#include "log/log.h"

static char path[64];

static int
setup(void **state)
{
	int fd;

	snprintf(path, sizeof(path), "/tmp/sluice-test-log-XXXXXX");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
	return 0;
}

static int
teardown(void **state)
{
	log_close();
	unlink(path);
	return 0;
}

/* Everything written since the file was truncated; free(). */
static char *
log_read(void)
{
	FILE *f;
	char *buf = calloc(1, 1 << 16);
	size_t n;

	log_flush();
	f = fopen(path, "r");
	assert_non_null(f);
	n = fread(buf, 1, (1 << 16) - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

static void
log_restart(int json, const char *level)
{
	FILE *f = fopen(path, "w");

	fclose(f);
	assert_int_equal(log_open(path, json, level), 0);
}

/* The one JSON line in the file, parsed (jansson refuses bad UTF-8). */
static json_t *
json_line(void)
{
	char *text = log_read();
	json_error_t je;
	json_t *o;

	/* exactly one line */
	assert_non_null(strchr(text, '\n'));
	assert_int_equal(strchr(text, '\n')[1], '\0');
	o = json_loads(text, 0, &je);
	if (o == NULL)
		fail_msg("not JSON (%s): %s", je.text, text);
	free(text);
	return o;
}

static void
test_text_line(void **state)
{
	struct log_ids ids = { .icid = 3, .mid = 0x5F1A2B3C4D5E6ULL, .rid = 0 };
	char *text;

	log_restart(0, "info");
	log_ev(LOG_INFO, &ids, "To", "rcpt", "a@b.test", "reply",
	    "250 2.1.5 Ok", "empty", "", NULL);
	log_ev(LOG_DEBUG, &ids, "not at info", NULL);
	text = log_read();
	/* ids first, in the order ICID MID RID; values with spaces quoted */
	assert_non_null(strstr(text, " Info: ICID 3 MID 0005F1A2B3C4D5E6 "
	    "RID [0] To rcpt=a@b.test reply=\"250 2.1.5 Ok\" empty=\"\"\n"));
	assert_null(strstr(text, "not at info"));
	free(text);
}

static void
test_json_line_fields(void **state)
{
	struct log_ids ids = { .dcid = 7, .mid = 0xABCULL, .rid = 2 };
	json_t *o;

	log_restart(1, "info");
	log_ev(LOG_WARNING, &ids, "Delivery start", "relay", "[127.0.0.1]:25",
	    "quote", "say \"hi\"\\ \n\t\x01\x7f", NULL);
	o = json_line();
	assert_string_equal(json_string_value(json_object_get(o, "level")),
	    "warning");
	assert_int_equal(json_integer_value(json_object_get(o, "dcid")), 7);
	assert_string_equal(json_string_value(json_object_get(o, "mid")),
	    "0000000000000ABC");
	assert_int_equal(json_integer_value(json_object_get(o, "rid")), 2);
	assert_null(json_object_get(o, "icid"));
	assert_string_equal(json_string_value(json_object_get(o, "event")),
	    "Delivery start");
	assert_string_equal(json_string_value(json_object_get(o, "quote")),
	    "say \"hi\"\\ \n\t\x01\x7f");
	json_decref(o);
}

/* Each value, as a peer might send it, and what the JSON line must say. */
static const struct {
	const char *in, *out;
} utf8_cases[] = {
	{ "plain", "plain" },
	{ "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80", "caf\xC3\xA9 \xE2\x82\xAC "
	    "\xF0\x9F\x98\x80" },				/* é € 😀 */
	{ "a\xFF" "b", "a\xEF\xBF\xBD" "b" },			/* never valid */
	{ "\x80", "\xEF\xBF\xBD" },				/* lone continuation */
	{ "x\xC3", "x\xEF\xBF\xBD" },				/* cut at the end */
	{ "\xC0\xAF", "\xEF\xBF\xBD\xEF\xBF\xBD" },		/* overlong '/' */
	{ "\xE0\x80\xAF", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD" },
	{ "\xED\xA0\x80", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD" }, /* surrogate */
	{ "\xF4\x90\x80\x80", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"
	    "\xEF\xBF\xBD" },					/* > U+10FFFF */
	{ "\xF0\x9F\x98x", "\xEF\xBF\xBDx" },			/* one maximal part */
	{ "\xE2\x82" "\xE2\x82\xAC", "\xEF\xBF\xBD\xE2\x82\xAC" },
	{ "ok\xFE\xFE" "ok", "ok\xEF\xBF\xBD\xEF\xBF\xBDok" },
};

static void
test_json_line_is_utf8(void **state)
{
	for (size_t i = 0; i < sizeof(utf8_cases) / sizeof(utf8_cases[0]); i++) {
		json_t *o;

		log_restart(1, "info");
		/* in the event text (a free-form line) and in a value */
		log_ev(LOG_INFO, NULL, utf8_cases[i].in, "helo",
		    utf8_cases[i].in, NULL);
		o = json_line();
		assert_string_equal(json_string_value(json_object_get(o,
		    "helo")), utf8_cases[i].out);
		assert_string_equal(json_string_value(json_object_get(o,
		    "event")), utf8_cases[i].out);
		json_decref(o);
	}
	/* log_info formats a line: the same holds */
	log_restart(1, "info");
	log_info("HELO %s", "\xC3\x28 bad");
	json_decref(json_line());
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_text_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_json_line_fields, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_json_line_is_utf8, setup,
		    teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
