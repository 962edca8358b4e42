/* SPDX-License-Identifier: MIT */
/*
 * test_template.c: the injection template language (src/inject/template.c):
 * variables, defaults, the escapes of each context, syntax errors, and the
 * size bound.
 *
 * Run one test by name: test_template test_header_no_crlf (a cmocka filter).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "inject/template.h"

/* name=value pairs, NULL-terminated. */
static const char *
lookup(void *arg, const char *name, size_t nlen, size_t *vlen)
{
	const char *const *kv = arg;

	for (; kv[0] != NULL; kv += 2)
		if (strlen(kv[0]) == nlen && memcmp(kv[0], name, nlen) == 0) {
			*vlen = strlen(kv[1]);
			return kv[1];
		}
	return NULL;
}

/* Render src with vars in esc; returns a static copy of the result. */
static const char *
render(const char *src, enum inject_esc esc, const char *const *vars)
{
	static char out[4096];
	struct inject_buf b = { 0 };
	char err[256];
	struct inject_tpl *t = inject_tpl_compile(src, strlen(src), err,
	    sizeof(err));

	if (t == NULL)
		fail_msg("compile %s: %s", src, err);
	assert_int_equal(inject_tpl_render(t, esc, lookup, (void *)vars, &b,
	    1 << 20), 0);
	snprintf(out, sizeof(out), "%s", b.data);
	inject_buf_free(&b);
	inject_tpl_free(t);
	return out;
}

static void
test_vars_and_defaults(void **state)
{
	const char *vars[] = { "name", "Ann", "code", "A1", "empty", "",
		"email", "ann@a.test", NULL };

	assert_string_equal(render("Hello {{name}}", 0, vars), "Hello Ann");
	assert_string_equal(render("{{ name }}/{{code}}", 0, vars), "Ann/A1");
	assert_string_equal(render("Hi {{missing|friend}}!", 0, vars),
	    "Hi friend!");
	assert_string_equal(render("Hi {{ missing | good friend }}!", 0, vars),
	    "Hi good friend!");
	assert_string_equal(render("[{{empty|x}}]", 0, vars), "[x]");
	assert_string_equal(render("[{{missing}}]", 0, vars), "[]");
	assert_string_equal(render("{{name|friend}}", 0, vars), "Ann");
	assert_string_equal(render("to {{email}}", 0, vars), "to ann@a.test");
	assert_string_equal(render("no tags } }} {", 0, vars),
	    "no tags } }} {");
	assert_string_equal(render("literal \\{{name}}", 0, vars),
	    "literal {{name}}");
	assert_string_equal(render("", 0, vars), "");
	/* a value that looks like a tag is not expanded again */
	const char *tricky[] = { "a", "{{b}}", "b", "B", NULL };
	assert_string_equal(render("{{a}}", 0, tricky), "{{b}}");
}

static void
test_html_escape(void **state)
{
	const char *vars[] = { "name", "<script>alert('x')</script>&\"", NULL };

	assert_string_equal(render("<p>{{name}}</p>", INJECT_ESC_HTML, vars),
	    "<p>&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;</p>");
	/* the default is the author's own markup */
	assert_string_equal(render("{{x|<b>you</b>}}", INJECT_ESC_HTML, vars),
	    "<b>you</b>");
	/* text parts are not escaped */
	assert_string_equal(render("{{name}}", INJECT_ESC_TEXT, vars),
	    "<script>alert('x')</script>&\"");
}

static void
test_header_no_crlf(void **state)
{
	const char *vars[] = { "name", "Ann\r\nBcc: victim@x.test\r\n\r\nbody",
		NULL };

	assert_string_equal(render("Hello {{name}}", INJECT_ESC_HEADER, vars),
	    "Hello Ann  Bcc: victim@x.test    body");
	assert_string_equal(render("a\nb\tc", INJECT_ESC_HEADER, vars),
	    "a b c");
}

static void
test_url_escape(void **state)
{
	const char *vars[] = { "email", "a+b@x.test", "sp", "a b&c=d/é",
		NULL };

	assert_string_equal(render("https://u.test/u?e={{email}}",
	    INJECT_ESC_URL, vars), "https://u.test/u?e=a%2Bb%40x.test");
	assert_string_equal(render("{{sp}}", INJECT_ESC_URL, vars),
	    "a%20b%26c%3Dd%2F%C3%A9");
}

static void
compile_fails(const char *src, const char *want)
{
	char err[256] = "";
	struct inject_tpl *t = inject_tpl_compile(src, strlen(src), err,
	    sizeof(err));

	if (t != NULL)
		fail_msg("'%s' compiled", src);
	if (strstr(err, want) == NULL)
		fail_msg("'%s': error '%s' lacks '%s'", src, err, want);
}

static void
test_syntax_errors(void **state)
{
	compile_fails("Hi {{name", "offset 3: \"{{\" without its \"}}\"");
	compile_fails("Hi {{name|x", "without its");
	compile_fails("{{}}", "variable name");
	compile_fails("{{ 9a }}", "variable name");
	compile_fails("{{a b}}", "unexpected 'b'");
	compile_fails("{{a}", "without its");
	char longname[100];
	memset(longname, 'a', sizeof(longname));
	memcpy(longname, "{{", 2);
	memcpy(longname + 95, "}}", 3);
	compile_fails(longname, "longer than");
}

static void
test_literal_and_bound(void **state)
{
	char err[64];
	const char *vars[] = { "v", "0123456789", NULL };
	struct inject_tpl *t = inject_tpl_compile("plain", 5, err, sizeof(err));
	struct inject_buf b = { 0 };

	assert_true(inject_tpl_is_literal(t));
	inject_tpl_free(t);
	t = inject_tpl_compile("{{v}}{{v}}{{v}}", 15, err, sizeof(err));
	assert_false(inject_tpl_is_literal(t));
	assert_int_equal(inject_tpl_render(t, 0, lookup, (void *)vars, &b, 25),
	    -1);
	inject_buf_free(&b);
	assert_int_equal(inject_tpl_render(t, 0, lookup, (void *)vars, &b, 30),
	    0);
	assert_int_equal(b.len, 30);
	inject_buf_free(&b);
	inject_tpl_free(t);
	/* a NUL inside the source is kept as text */
	t = inject_tpl_compile("a\0b", 3, err, sizeof(err));
	assert_int_equal(inject_tpl_render(t, 0, lookup, (void *)vars, &b, 30),
	    0);
	assert_int_equal(b.len, 3);
	inject_buf_free(&b);
	inject_tpl_free(t);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_vars_and_defaults),
		cmocka_unit_test(test_html_escape),
		cmocka_unit_test(test_header_no_crlf),
		cmocka_unit_test(test_url_escape),
		cmocka_unit_test(test_syntax_errors),
		cmocka_unit_test(test_literal_and_bound),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
