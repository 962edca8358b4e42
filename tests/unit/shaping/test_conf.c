/* SPDX-License-Identifier: MIT */
/*
 * test_conf.c: the shaping file parser (src/shaping/file.c): the issue's
 * example file, every key, comments and lists, site matching by domain and
 * MX pattern, and the error of every kind of mistake with its file:line.
 *
 * Run one test by name: test_conf test_errors (a cmocka filter pattern).
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

#include "shaping/shaping_int.h"

static const char example[] =
    "; the example of issue 14\n"
    "[site bigmail]\n"
    "mx = *.mx.bigmail.test          ; MX host patterns\n"
    "connections = 10\n"
    "messages_per_connection = 100\n"
    "rate = 600/m                    ; messages per time unit (s, m, h, d)\n"
    "connection_rate = 60/m\n"
    "recipients_per_transaction = 50\n"
    "source = 127.0.0.2, 127.0.0.3   ; local addresses to send from, rotated\n"
    "helo = out.example.test\n"
    "\n"
    "[source 127.0.0.3]\n"
    "warmup = 1000/d, x2 every 2d, until 200000/d   ; a new address's daily budget grows\n"
    "\n"
    "[rule tss04]\n"
    "site = bigmail                  ; or *\n"
    "match = ^421 4\\.7\\.0 .*TSS04    ; POSIX regex on the whole reply\n"
    "threshold = 3 in 10m\n"
    "action = suspend 30m\n";

static struct shaping_conf *
parse_ok(const char *text)
{
	char err[512] = "";
	struct shaping_conf *c = shaping_conf_parse("t.ini", text, strlen(text),
	    err, sizeof(err));

	if (c == NULL)
		fail_msg("%s", err);
	return c;
}

static void
test_example(void **state)
{
	struct shaping_conf *c = parse_ok(example);
	const struct shaping_site_conf *s;
	const struct shaping_rule_conf *r;
	const struct shaping_source_conf *src;

	assert_int_equal(c->nsites, 1);
	s = shaping_conf_site(c, "bigmail");
	assert_non_null(s);
	assert_int_equal(s->nmx, 1);
	assert_string_equal(s->mx[0], "*.mx.bigmail.test");
	assert_int_equal(s->connections, 10);
	assert_int_equal(s->messages_per_connection, 100);
	assert_int_equal(s->rate.n, 600);
	assert_int_equal(s->rate.per_us, 60000000);
	assert_int_equal(shaping_rate_interval(&s->rate), 100000);
	assert_int_equal(s->connection_rate.n, 60);
	assert_int_equal(s->recipients_per_transaction, 50);
	assert_int_equal(s->nsources, 2);
	assert_string_equal(s->sources[1], "127.0.0.3");
	assert_int_equal(s->select, SHAPING_SELECT_ROTATE);
	assert_string_equal(s->helo, "out.example.test");
	assert_int_equal(s->line, 2);

	src = shaping_conf_source(c, "127.0.0.3");
	assert_non_null(src);
	assert_true(src->has_warmup);
	assert_int_equal(src->warmup.start, 1000);
	assert_int_equal(src->warmup.unit_us, 86400LL * 1000000);
	assert_true(src->warmup.factor == 2.0);
	assert_int_equal(src->warmup.every_us, 2 * 86400LL * 1000000);
	assert_int_equal(src->warmup.until, 200000);
	assert_null(shaping_conf_source(c, "127.0.0.2"));

	assert_int_equal(c->nrules, 1);
	r = &c->rules[0];
	assert_string_equal(r->name, "tss04");
	assert_string_equal(r->site, "bigmail");
	assert_string_equal(r->match, "^421 4\\.7\\.0 .*TSS04");
	assert_int_equal(r->threshold, 3);
	assert_int_equal(r->window_us, 600LL * 1000000);
	assert_int_equal(r->action.kind, SHAPING_ACT_SUSPEND);
	assert_int_equal(r->action.dur_us, 1800LL * 1000000);
	assert_true(shaping_rule_matches(r, "bigmail", "421 4.7.0 [TSS04] "
	    "Messages from 1.2.3.4 temporarily deferred"));
	assert_false(shaping_rule_matches(r, "other", "421 4.7.0 [TSS04] x"));
	assert_false(shaping_rule_matches(r, "bigmail", "451 4.7.0 [TSS04] x"));
	assert_int_equal(r->lead, '4');
	assert_false(shaping_rule_matches(r, "bigmail", "250 TSS04"));
	shaping_conf_free(c);
}

static void
test_actions_and_lists(void **state)
{
	static const struct {
		const char *text;
		int kind;
		const char *back;
	} acts[] = {
		{ "suspend 90s", SHAPING_ACT_SUSPEND, "suspend 90s" },
		{ "suspend 2h", SHAPING_ACT_SUSPEND, "suspend 2h" },
		{ "rate 10/m for 1h", SHAPING_ACT_RATE, "rate 10/m for 1h" },
		{ "rate 5/10s for 1d", SHAPING_ACT_RATE, "rate 5/10s for 1d" },
		{ "connections 2 for 15m", SHAPING_ACT_CONNECTIONS,
		  "connections 2 for 15m" },
		{ "bounce", SHAPING_ACT_BOUNCE, "bounce" },
		{ "retry_in 4h", SHAPING_ACT_RETRY_IN, "retry_in 4h" },
	};
	char text[512], back[64];

	for (size_t i = 0; i < sizeof(acts) / sizeof(acts[0]); i++) {
		struct shaping_conf *c;
		snprintf(text, sizeof(text), "[rule r]\nmatch = ^4\naction = %s\n",
		    acts[i].text);
		c = parse_ok(text);
		assert_int_equal(c->rules[0].action.kind, acts[i].kind);
		assert_null(c->rules[0].site);
		assert_int_equal(c->rules[0].threshold, 1);
		assert_true(shaping_rule_matches(&c->rules[0], "any", "451 x"));
		shaping_action_format(&c->rules[0].action, back, sizeof(back));
		assert_string_equal(back, acts[i].back);
		shaping_conf_free(c);
	}

	/* lists append, lower-cased; pin; a '#' comment; CRLF line ends */
	struct shaping_conf *c = parse_ok(
	    "# comment\r\n[site a]\r\ndomains = A.test, b.test\r\n"
	    "domains = c.test\r\nmx = MX?.a.test\r\nsource_select = pin\r\n"
	    "source = ::1\r\n[site b]\r\nmx = *.b.test\r\n");
	const struct shaping_site_conf *a = &c->sites[0];
	assert_int_equal(a->ndomains, 3);
	assert_string_equal(a->domains[0], "a.test");
	assert_string_equal(a->domains[2], "c.test");
	assert_string_equal(a->mx[0], "mx?.a.test");
	assert_int_equal(a->select, SHAPING_SELECT_PIN);
	assert_string_equal(a->sources[0], "::1");
	assert_int_equal(a->rate.n, 0);
	assert_null(a->helo);
	shaping_conf_free(c);
}

static void
test_regex_accepted(void **state)
{
	static const char *ok[] = { "^421 4\\.7\\.0 .*TSS04", "(a|b)*c+",
		"x{2,5}(ab)*", "[*+?]+", "[[:digit:]]{3} [^]*]", "\\++",
		"(a{3}|b)c", "((a)*)*", "^4|^5" };
	char text[256];

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		struct shaping_conf *c;
		snprintf(text, sizeof(text), "[rule r]\nmatch = %s\n"
		    "action = bounce\n", ok[i]);
		c = parse_ok(text);
		shaping_conf_free(c);
	}
	/* an alternative at the top: both leading digits still match */
	{
		struct shaping_conf *c = parse_ok("[rule r]\nmatch = ^4|^5\n"
		    "action = bounce\n");
		assert_int_equal(c->rules[0].lead, 0);
		assert_true(shaping_rule_matches(&c->rules[0], "s", "550 x"));
		assert_false(shaping_rule_matches(&c->rules[0], "s", "250 x"));
		shaping_conf_free(c);
	}
}

static void
test_match_sites(void **state)
{
	struct shaping_conf *c = parse_ok(
	    "[site wide]\nmx = *.mx.big.test, mx?.other.test\n"
	    "[site exact]\ndomains = special.test\n"
	    "[site later]\nmx = *.big.test\n");
	const char *h1[] = { "a.mx.big.test" };
	const char *h2[] = { "x.nope.test", "MX7.Other.TEST" };
	const char *h3[] = { "www.big.test" };
	const char *h4[] = { "mx10.other.test" };

	assert_string_equal(shaping_conf_match(c, "d.test", h1, 1)->name, "wide");
	assert_string_equal(shaping_conf_match(c, "d.test", h2, 2)->name, "wide");
	assert_string_equal(shaping_conf_match(c, "d.test", h3, 1)->name, "later");
	assert_null(shaping_conf_match(c, "d.test", h4, 1));
	/* a domain wins over an mx pattern earlier in the file */
	assert_string_equal(shaping_conf_match(c, "Special.Test", h1, 1)->name,
	    "exact");
	assert_null(shaping_conf_match(c, NULL, NULL, 0));
	shaping_conf_free(c);
}

static void
test_rates(void **state)
{
	static const struct {
		const char *s;
		uint64_t n;
		int64_t per_s;
		const char *back;
	} ok[] = {
		{ "600/m", 600, 60, "600/m" }, { "10/s", 10, 1, "10/s" },
		{ "1/min", 1, 60, "1/m" }, { "5 / 10s", 5, 10, "5/10s" },
		{ "200000/d", 200000, 86400, "200000/d" },
		{ "3/hour", 3, 3600, "3/h" }, { "7/90s", 7, 90, "7/90s" },
	};
	static const char *bad[] = { "600", "/m", "0/m", "-1/m", "10/x", "10/",
		"1e3/m", "10/0s", "9999999999/s", "10/m/s" };
	struct shaping_rate r;
	char back[32];

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		assert_int_equal(shaping_rate_parse(ok[i].s, &r), 0);
		assert_int_equal(r.n, ok[i].n);
		assert_int_equal(r.per_us, ok[i].per_s * 1000000);
		shaping_rate_format(&r, back, sizeof(back));
		assert_string_equal(back, ok[i].back);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (shaping_rate_parse(bad[i], &r) == 0)
			fail_msg("'%s' parsed", bad[i]);
	r.n = 7, r.per_us = 1000000;
	assert_int_equal(shaping_rate_interval(&r), 142857);
	r.n = 5000000, r.per_us = 1000000;
	assert_int_equal(shaping_rate_interval(&r), 1);
}

static void
test_errors(void **state)
{
	static const struct {
		const char *text;
		const char *err;
	} cases[] = {
		{ "rate = 1/s\n", "t.ini:1: 'rate' outside a section" },
		{ "[site]\n", "t.ini:1: [site] needs a name" },
		{ "[zone x]\n", "t.ini:1: unknown section [zone]" },
		{ "[site x\n", "t.ini:1: expected [site NAME]" },
		{ "[site a b]\n", "t.ini:1: [site] needs a name" },
		{ "[site a]\nmx = a.test\n\n[site a]\n",
		  "t.ini:4: [site a] is defined twice" },
		{ "[site a]\nmx = a.test\nspeed = 3\n",
		  "t.ini:3: [site a] unknown key 'speed'" },
		{ "[site a]\nmx = a.test\nrate = 600\n",
		  "t.ini:3: [site a] rate: '600' is not N/U" },
		{ "[site a]\nmx = a.test\nconnections = 0\n",
		  "t.ini:3: [site a] connections: '0' is not a whole number" },
		{ "[site a]\nmx = a.test\nconnections = 2\nconnections = 3\n",
		  "t.ini:4: 'connections' is given twice" },
		{ "[site a]\nmx = a.test\nsource = 127.0.0.300\n",
		  "t.ini:3: [site a] source: '127.0.0.300' is not an IPv4" },
		{ "[site a]\nmx = a.test\nsource = 127.0.0.2, 127.0.0.2\n",
		  "t.ini:3: [site a] source: '127.0.0.2' is listed twice" },
		{ "[site a]\nmx = a test\n",
		  "t.ini:2: [site a] mx: 'a test' is not a host pattern" },
		{ "[site a]\ndomains = *.a.test\n",
		  "t.ini:2: [site a] domains: '*.a.test' is not a domain" },
		{ "[site a]\nmx = a.test\nhelo = bad name\n",
		  "t.ini:3: [site a] helo: 'bad name' is not a host name" },
		{ "[site a]\nmx = a.test\nsource_select = random\n",
		  "t.ini:3: [site a] source_select: 'random' is not rotate or pin" },
		{ "\n[site a]\nconnections = 3\n",
		  "t.ini:2: [site a] needs mx or domains" },
		{ "[source 10.0.0.256]\n",
		  "t.ini:1: [source 10.0.0.256]: not an IPv4 or IPv6 address" },
		{ "[source ::1]\nwarmup = lots\n",
		  "t.ini:2: [source ::1] warmup: 'lots' does not start with a budget" },
		{ "[source ::1]\nwarmup = 10/d, x1 every 1d, until 20/d\n",
		  "t.ini:2: [source ::1] warmup: 'x1 every 1d' is not 'xF every D' (F above 1)" },
		{ "[source ::1]\nwarmup = 10/d, x2 every 1d\n",
		  "t.ini:2: [source ::1] warmup: a warm-up that grows needs 'until" },
		{ "[source ::1]\nwarmup = 10/d, x2 every 1d, until 20/h\n",
		  "t.ini:2: [source ::1] warmup: 'until 20/h' is not 'until N/U' with the unit" },
		{ "[source ::1]\nwarmup = 10/d, x2 every 1d, until 5/d\n",
		  "t.ini:2: [source ::1] warmup: 'until 5/d' is not" },
		{ "[source ::1]\nwarmup = 10/d, x2 every 1d, +3 every 1d, until 50/d\n",
		  "t.ini:2: [source ::1] warmup: '+3 every 1d' is not" },
		{ "[source ::1]\nwarmup_start = 24.11.2026\n",
		  "t.ini:2: [source ::1] warmup_start: '24.11.2026' is not a date" },
		{ "[source ::1]\nrate = 1/s\n",
		  "t.ini:2: [source ::1] unknown key 'rate'" },
		{ "[rule r]\nmatch = ^4(\naction = bounce\n",
		  "t.ini:2: [rule r] match: '^4(': " },
		{ "[rule r]\nmatch = ^4 (a+++|b)*c\naction = bounce\n",
		  "t.ini:2: [rule r] match: '^4 (a+++|b)*c': a repetition of a "
		  "repetition" },
		{ "[rule r]\nmatch = ((a{9}b){9}\naction = bounce\n",
		  "t.ini:2: [rule r] match: '((a{9}b){9}': a counted repetition" },
		{ "[rule r]\nmatch = (((a{2})b)c{3}d){9}\naction = bounce\n",
		  "t.ini:2: [rule r] match: '(((a{2})b)c{3}d){9}': a counted" },
		{ "[rule r]\nmatch = a{1,256}\naction = bounce\n",
		  "t.ini:2: [rule r] match: 'a{1,256}': a count {n,m} above 255" },
		{ "[rule r]\nmatch = ^4\naction = explode\n",
		  "t.ini:3: [rule r] action: 'explode' is not suspend D" },
		{ "[rule r]\nmatch = ^4\naction = suspend\n",
		  "t.ini:3: [rule r] action: 'suspend' is not" },
		{ "[rule r]\nmatch = ^4\naction = rate 10/m\n",
		  "t.ini:3: [rule r] action: 'rate 10/m' is not" },
		{ "[rule r]\nmatch = ^4\naction = bounce now\n",
		  "t.ini:3: [rule r] action: 'bounce now' is not" },
		{ "[rule r]\nmatch = ^4\naction = bounce\nthreshold = 3\n",
		  "t.ini:4: [rule r] threshold: '3' is not 'N in D'" },
		{ "[rule r]\nmatch = ^4\naction = bounce\nthreshold = 20000 in 1m\n",
		  "t.ini:4: [rule r] threshold: '20000 in 1m' is not" },
		{ "[rule r]\naction = bounce\n", "t.ini:1: [rule r] needs match" },
		{ "[rule r]\nmatch = x\n", "t.ini:1: [rule r] needs action" },
		{ "[site s]\nmx=a\n[rule r]\nsite = t\nmatch = x\naction = bounce\n",
		  "t.ini:3: [rule r] site: no [site t]" },
		{ "[rule r]\nmatch = x\nmatch = y\n",
		  "t.ini:3: 'match' is given twice" },
		{ "[rule r]\njust words\n", "t.ini:2: expected key = value" },
	};
	char err[512];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct shaping_conf *c;
		err[0] = '\0';
		c = shaping_conf_parse("t.ini", cases[i].text,
		    strlen(cases[i].text), err, sizeof(err));
		if (c != NULL)
			fail_msg("case %zu parsed: %s", i, cases[i].text);
		if (strncmp(err, cases[i].err, strlen(cases[i].err)) != 0)
			fail_msg("case %zu: got \"%s\", want \"%s...\"", i, err,
			    cases[i].err);
	}
}

static void
test_limits_of_input(void **state)
{
	char err[256];
	char *big = malloc(SHAPING_MAX_LINE + 64);
	struct shaping_conf *c;

	/* a NUL inside a line, and a line over the limit */
	c = shaping_conf_parse("t.ini", "[site a]\nmx = a\0b\n", 17, err,
	    sizeof(err));
	assert_null(c);
	assert_string_equal(err, "t.ini:2: NUL byte in the line");
	memset(big, 'x', SHAPING_MAX_LINE + 10);
	big[SHAPING_MAX_LINE + 10] = '\0';
	c = shaping_conf_parse("t.ini", big, strlen(big), err, sizeof(err));
	assert_null(c);
	assert_string_equal(err, "t.ini:1: line longer than 4096 bytes");
	free(big);
	/* an empty file is an empty configuration */
	c = shaping_conf_parse("t.ini", "", 0, err, sizeof(err));
	assert_non_null(c);
	assert_int_equal(c->nsites + c->nrules + c->nsources, 0);
	shaping_conf_free(c);
}

/* The example that ships in docs/ stays valid (make runs tests from the
 * top of the tree). */
static void
test_docs_example(void **state)
{
	char err[512];
	struct shaping_conf *c = shaping_conf_load("docs/shaping.example.ini",
	    err, sizeof(err));
	const char *gmail[] = { "alt2.gmail-smtp-in.l.google.com" };
	const char *yahoo[] = { "mta7.am0.yahoodns.net" };
	if (c == NULL)
		fail_msg("%s", err);
	assert_string_equal(shaping_conf_match(c, "example.test", gmail, 1)->name,
	    "gmail");
	assert_string_equal(shaping_conf_match(c, "example.test", yahoo, 1)->name,
	    "yahoo");
	assert_true(c->nrules >= 8);
	assert_true(shaping_rule_matches(&c->rules[0], "yahoo", "421 4.7.0 "
	    "[TSS04] Messages from 192.0.2.1 temporarily deferred due to "
	    "unexpected volume or user complaints"));
	shaping_conf_free(c);
}

static void
test_load_file(void **state)
{
	char path[] = "/tmp/test_shaping_XXXXXX", err[512];
	int fd = mkstemp(path);
	struct shaping_conf *c;

	assert_true(fd >= 0);
	assert_int_equal(write(fd, example, strlen(example)),
	    (ssize_t)strlen(example));
	close(fd);
	c = shaping_conf_load(path, err, sizeof(err));
	assert_non_null(c);
	assert_string_equal(c->file, path);
	shaping_conf_free(c);
	unlink(path);
	assert_null(shaping_conf_load(path, err, sizeof(err)));
	assert_non_null(strstr(err, "No such file"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_example),
		cmocka_unit_test(test_actions_and_lists),
		cmocka_unit_test(test_regex_accepted),
		cmocka_unit_test(test_match_sites),
		cmocka_unit_test(test_rates),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_limits_of_input),
		cmocka_unit_test(test_docs_example),
		cmocka_unit_test(test_load_file),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
