/* SPDX-License-Identifier: MIT */
/*
 * test_origin.c: what a browser's request says about the page that made
 * it (src/http/origin.c): cross-origin actions (CSRF) and foreign Host
 * names (DNS rebinding).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "http/http.h"

static void
test_cross_origin(void **state)
{
	/* scripts and curl send neither */
	assert_false(http_cross_origin(NULL, "127.0.0.1:9025", NULL));
	assert_false(http_cross_origin("http://127.0.0.1:9025",
	    "127.0.0.1:9025", "same-origin"));
	assert_false(http_cross_origin("http://MTA.example:9025",
	    "mta.example:9025", NULL));
	assert_false(http_cross_origin(NULL, "x", "none"));
	assert_true(http_cross_origin("http://evil.test", "127.0.0.1:9025",
	    NULL));
	assert_true(http_cross_origin("http://127.0.0.1:9026",
	    "127.0.0.1:9025", NULL));		/* another port: another origin */
	assert_true(http_cross_origin("https://127.0.0.1:9025x",
	    "127.0.0.1:9025", NULL));
	assert_true(http_cross_origin("null", "127.0.0.1:9025", NULL));
	assert_true(http_cross_origin("http://127.0.0.1:9025", NULL, NULL));
	assert_true(http_cross_origin(NULL, "127.0.0.1:9025", "cross-site"));
	assert_true(http_cross_origin(NULL, "127.0.0.1:9025", "same-site"));
	assert_true(http_cross_origin("http://127.0.0.1:9025",
	    "127.0.0.1:9025", "cross-site"));	/* either says so */
}

static void
test_host_local(void **state)
{
	const char *names[] = { "mta.example", "", NULL };

	assert_true(http_host_local(NULL, NULL));
	assert_true(http_host_local("127.0.0.1:9025", NULL));
	assert_true(http_host_local("10.1.2.3", NULL));
	assert_true(http_host_local("[::1]:9025", NULL));
	assert_true(http_host_local("localhost:80", NULL));
	assert_true(http_host_local("app.LOCALHOST", NULL));
	assert_true(http_host_local("MTA.example:9025", names));
	assert_false(http_host_local("mta.example", NULL));
	assert_false(http_host_local("evil.test:9025", names));
	assert_false(http_host_local("localhost.evil.test", names));
	assert_false(http_host_local("127.0.0.1.evil.test", names));
	assert_false(http_host_local("[::1", names));
	assert_false(http_host_local("", names));	/* "" is not a name */
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cross_origin),
		cmocka_unit_test(test_host_local),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
