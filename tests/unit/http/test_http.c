/* SPDX-License-Identifier: MIT */
/*
 * test_http.c: the pure parts of the HTTP listener: route patterns, the
 * bearer-token check and reading the token file.
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

#include "http/http.h"

static void
test_path_match(void **state)
{
	static const struct {
		const char *pattern, *path;
		int match;
		const char *tail;
	} cases[] = {
		{ "/metrics", "/metrics", 1, NULL },
		{ "/metrics", "/metrics/", 0, NULL },
		{ "/metrics", "/metricsx", 0, NULL },
		{ "/metrics", "/", 0, NULL },
		{ "/api/v1/queue/*", "/api/v1/queue/0006610132BCD932", 1,
		    "0006610132BCD932" },
		{ "/api/v1/queue/*", "/api/v1/queue/", 0, NULL },
		{ "/api/v1/queue/*", "/api/v1/queue", 0, NULL },
		{ "/api/v1/queue/*", "/api/v1/queue/a/b", 0, NULL },
		{ "/api/v1/queue/*", "/api/v1/queuex/a", 0, NULL },
		{ "/api/v1/queue/*", "/api/v1/queue/summary", 1, "summary" },
	};
	char tail[64];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memset(tail, 0, sizeof(tail));
		assert_int_equal(http_path_match(cases[i].pattern,
		    cases[i].path, tail, sizeof(tail)), cases[i].match);
		if (cases[i].tail != NULL)
			assert_string_equal(tail, cases[i].tail);
	}
	/* a segment longer than the room for it does not match */
	assert_int_equal(http_path_match("/a/*", "/a/0123456789", tail, 8), 0);
	assert_int_equal(http_path_match("/a/*", "/a/0123456", tail, 8), 1);
}

static void
test_token_ok(void **state)
{
	const char *tok = "s3cret-token-0123456789";

	assert_true(http_token_ok("Bearer s3cret-token-0123456789", tok));
	assert_true(http_token_ok("bearer s3cret-token-0123456789", tok));
	assert_true(http_token_ok("Bearer  s3cret-token-0123456789", tok));
	assert_false(http_token_ok("Bearer s3cret-token-012345678", tok));
	assert_false(http_token_ok("Bearer s3cret-token-01234567890", tok));
	assert_false(http_token_ok("Bearer S3CRET-TOKEN-0123456789", tok));
	assert_false(http_token_ok("Basic czNjcmV0", tok));
	assert_false(http_token_ok("s3cret-token-0123456789", tok));
	assert_false(http_token_ok("Bearer ", tok));
	assert_false(http_token_ok("", tok));
	assert_false(http_token_ok(NULL, tok));
	/* no token configured: nothing is accepted */
	assert_false(http_token_ok("Bearer ", NULL));
	assert_false(http_token_ok("Bearer x", NULL));
}

/* Write text into a new temp file; its path in a static buffer. */
static const char *
tmpfile_with(const char *text)
{
	static char path[64];
	FILE *f;
	int fd;

	snprintf(path, sizeof(path), "/tmp/sluice-test-token-XXXXXX");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	f = fdopen(fd, "w");
	fputs(text, f);
	fclose(f);
	return path;
}

static void
test_token_load(void **state)
{
	static const struct {
		const char *text, *token, *err;
	} cases[] = {
		{ "abc123\n", "abc123", NULL },
		{ "  abc123  \r\nsecond line\n", "abc123", NULL },
		{ "abc123", "abc123", NULL },
		{ "", NULL, "no token" },
		{ "\n\nabc\n", NULL, "no token" },
		{ "   \n", NULL, "no token" },
		{ "two words\n", NULL, "space" },
		{ "caf\xC3\xA9\n", NULL, "printable ASCII" },
	};
	char err[256];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *path = tmpfile_with(cases[i].text);
		char *tok = http_token_load(path, err, sizeof(err));

		if (cases[i].token != NULL) {
			assert_non_null(tok);
			assert_string_equal(tok, cases[i].token);
		} else {
			assert_null(tok);
			assert_non_null(strstr(err, cases[i].err));
			assert_non_null(strstr(err, path));
		}
		free(tok);
		unlink(path);
	}
	assert_null(http_token_load("/nonexistent/sluice-token", err,
	    sizeof(err)));
	assert_non_null(strstr(err, "No such file"));
}

static void
test_reason(void **state)
{
	assert_string_equal(http_reason(401), "Unauthorized");
	assert_string_equal(http_reason(413), "Payload Too Large");
	assert_string_equal(http_reason(503), "Service Unavailable");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_path_match),
		cmocka_unit_test(test_token_ok),
		cmocka_unit_test(test_token_load),
		cmocka_unit_test(test_reason),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
