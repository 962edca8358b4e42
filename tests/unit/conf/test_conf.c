/* SPDX-License-Identifier: MIT */
/*
 * test_conf.c: the configuration parser: defaults, every value type, the
 * derived forms, and errors that name file and line.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>

#include "conf/conf.h"

static char tmpl[] = "/tmp/sluice-conf-XXXXXX";

static const char *
write_ini(const char *text)
{
	static char path[64];
	FILE *f;
	int fd;

	snprintf(path, sizeof(path), "%s", tmpl);
	fd = mkstemp(path);
	assert_true(fd >= 0);
	f = fdopen(fd, "w");
	fputs(text, f);
	fclose(f);
	return path;
}

static void
test_defaults(void **state)
{
	char err[256];
	struct sl_conf *c = conf_load(NULL, err, sizeof(err));

	assert_non_null(c);
	assert_string_equal(c->server_listen, "127.0.0.1:2525");
	assert_int_equal(c->nlisten, 1);
	assert_int_equal(c->server_max_message_size, 50 * 1024 * 1024);
	assert_int_equal(c->server_max_recipients, 1000);
	assert_int_equal(c->server_command_timeout, 300);
	assert_int_equal(c->server_data_timeout, 600);
	assert_string_equal(c->spool_dir, "var/spool");
	assert_string_equal(c->control_socket, "var/run/sluice.sock");
	assert_string_equal(c->log_file, "-");
	assert_int_equal(c->log_json, 0);
	assert_int_equal(c->ntrusted, 2);
	assert_true(c->server_hostname[0] != '\0');
	conf_free(c);
}

static void
test_values(void **state)
{
	char err[256];
	const char *p = write_ini(
	    "; a comment\n"
	    "[server]\n"
	    "listen = 127.0.0.1:2600, [::1]:2601\n"
	    "hostname = mta.example\n"
	    "max_message_size = 10M\n"
	    "command_timeout = 2m\n"
	    "data_timeout = 1h\n"
	    "local_domains = Local.Test, other.test\n"
	    "relay_domains = relay.test\n"
	    "trusted_networks = 10.0.0.0/8\n"
	    "[log]\n"
	    "format = json\n"
	    "[routes]\n"
	    "example.test = [127.0.0.1]:2526\n");
	struct sl_conf *c = conf_load(p, err, sizeof(err));

	assert_non_null(c);
	assert_int_equal(c->nlisten, 2);
	assert_int_equal(c->listen[1].ss.ss_family, AF_INET6);
	assert_string_equal(c->server_hostname, "mta.example");
	assert_int_equal(c->server_max_message_size, 10 * 1024 * 1024);
	assert_int_equal(c->server_command_timeout, 120);
	assert_int_equal(c->server_data_timeout, 3600);
	assert_int_equal(c->nlocal_domains, 2);
	assert_string_equal(c->local_domains[0], "local.test");
	assert_true(conf_domain_in(c->local_domains, c->nlocal_domains,
	    "OTHER.test"));
	assert_false(conf_domain_in(c->relay_domains, c->nrelay_domains,
	    "local.test"));
	assert_int_equal(c->log_json, 1);
	assert_int_equal(c->nroutes, 1);
	assert_string_equal(c->routes[0].key, "example.test");
	assert_int_equal(c->routes[0].line, 14);
	conf_free(c);
	unlink(p);
}

/* Each bad file and the "file:line: text" its error must contain. */
static const struct {
	const char *ini;
	int line;
	const char *text;
} bad_cases[] = {
	{ "[server]\nmax_recipients = 0\n", 2, "below the minimum 1" },
	{ "[server]\n\nbogus = 1\n", 3, "unknown key 'bogus'" },
	{ "[nosuch]\n", 1, "unknown section [nosuch]" },
	{ "[server]\n[nosuch]\nlisten = 1.2.3.4:25\n", 2, "unknown section" },
	{ "[server]\ncommand_timeout = 5x\n", 2, "not a duration" },
	{ "[server]\nmax_message_size = lots\n", 2, "not a size" },
	/* issue 9 item 18: no larger than the spool can store */
	{ "[server]\nmax_message_size = 1G\n", 2,
	    "1G is above the maximum 996147200" },
	{ "[server]\nlisten = nowhere\n", 2, "not an address" },
	{ "[server]\ntrusted_networks = 10.0.0.0/33\n", 2, "not a network" },
	{ "[server]\nmax_recipients = 12abc\n", 2, "not a whole number" },
	{ "[log]\nformat = xml\n", 2, "not text or json" },
	{ "[server]\nthis line has no equals\n", 2, "syntax error" },
	{ "[server]\nlocal_domains = a b.test\n", 2, "not a domain" },
	{ "[server]\nproxy_protocol = v3\n", 2, "not off, v1, v2 or any" },
	{ "[local]\nagent = mbox\n", 2, "not maildir or lmtp" },
	{ "[local]\nlmtp = /run/lmtp\n", 2, "not unix:/path" },
	{ "[local]\nrecipient_check = ldap\n", 2, "not file, lmtp or none" },
	{ "[backends]\nb1 = lmtp:10.0.0.1:24\n", 2, "not lmtp:[address]" },
	{ "[backends]\nb1 = smtp:unix:/x\n", 2, "not lmtp:[address]" },
	{ "[mailboxes]\n@x.test = b1\n", 2, "not an address or a domain" },
	{ "[cluster]\nnodes = fe1=10.0.0.1:9025\n", 2, "name=http://host" },
};

/* Errors across settings (conf_check): the file, and the line if one. */
static const struct {
	const char *ini;
	int line;		/* 0: the message names the file only */
	const char *text;
} check_cases[] = {
	{ "[server]\nproxy_protocol = v2\n", 0,
	  "proxy_protocol = v2 needs [server] proxy_trusted_networks" },
	{ "[local]\nagent = lmtp\n", 0, "agent = lmtp needs [local] lmtp" },
	{ "[local]\nrecipient_check = lmtp\n", 0, "an LMTP server to ask" },
	{ "[server]\nlocal_domains = l.test\n[local]\nrecipient_check = "
	  "none\n[mailboxes]\na@l.test = b9\n", 6, "no backend 'b9'" },
	{ "[local]\nrecipient_check = none\n[backends]\nb1 = smtp:[::1]:25\n"
	  "[mailboxes]\na@other.test = b1\n", 6, "not in [server] "
	  "local_domains" },
};

static void
test_check_errors(void **state)
{
	for (size_t i = 0; i < sizeof(check_cases) / sizeof(check_cases[0]);
	    i++) {
		char err[512], want[128];
		const char *p = write_ini(check_cases[i].ini);
		struct sl_conf *c = conf_load(p, err, sizeof(err));

		assert_non_null(c);
		assert_int_equal(conf_check(c, err, sizeof(err)), -1);
		if (check_cases[i].line > 0)
			snprintf(want, sizeof(want), "%s:%d: ", p,
			    check_cases[i].line);
		else
			snprintf(want, sizeof(want), "%s: ", p);
		if (strstr(err, want) == NULL || strstr(err,
		    check_cases[i].text) == NULL)
			fail_msg("case %zu: got '%s', want '%s' and '%s'", i,
			    err, want, check_cases[i].text);
		conf_free(c);
		unlink(p);
	}
}

/* [mailboxes] domains become local; a good local setup passes. */
static void
test_local_sections(void **state)
{
	char err[512];
	const char *p = write_ini("[server]\nlocal_domains = Example.test\n"
	    "[local]\nrecipient_check = lmtp\n[backends]\n"
	    "b1 = lmtp:[10.0.0.11]:24\nb2 = smtp:[10.0.0.12]:25\n"
	    "b3 = lmtp:unix:/run/dovecot/lmtp\n[mailboxes]\n"
	    "Alice@Example.test = b1\nexample.org = b2\n");
	struct sl_conf *c = conf_load(p, err, sizeof(err));

	assert_non_null(c);
	assert_int_equal(conf_check(c, err, sizeof(err)), 0);
	assert_int_equal(c->nbackends, 3);
	assert_string_equal(conf_backend(c, "b3")->value,
	    "lmtp:unix:/run/dovecot/lmtp");
	assert_null(conf_backend(c, "b4"));
	assert_string_equal(c->mailboxes[0].key, "alice@example.test");
	assert_true(conf_domain_in(c->local_domains, c->nlocal_domains,
	    "example.org"));
	assert_int_equal(c->recipient_check, 2);
	conf_free(c);
	unlink(p);
}

static void
test_errors(void **state)
{
	for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		char err[512], want[128];
		const char *p = write_ini(bad_cases[i].ini);
		struct sl_conf *c = conf_load(p, err, sizeof(err));

		assert_null(c);
		snprintf(want, sizeof(want), "%s:%d: ", p, bad_cases[i].line);
		if (strstr(err, want) == NULL || strstr(err,
		    bad_cases[i].text) == NULL)
			fail_msg("case %zu: got '%s', want '%s' and '%s'", i,
			    err, want, bad_cases[i].text);
		unlink(p);
	}
}

static void
test_missing_file(void **state)
{
	char err[256];

	assert_null(conf_load("/nonexistent/sluice.ini", err, sizeof(err)));
	assert_non_null(strstr(err, "/nonexistent/sluice.ini"));
}

static void
test_nets(void **state)
{
	struct conf_net nets[2];
	struct sockaddr_in sin = { .sin_family = AF_INET };
	struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6 };

	assert_int_equal(conf_net_parse("192.168.0.0/16", &nets[0]), 0);
	assert_int_equal(conf_net_parse("2001:db8::/32", &nets[1]), 0);
	inet_pton(AF_INET, "192.168.44.1", &sin.sin_addr);
	assert_true(conf_net_match(nets, 2, (struct sockaddr *)&sin));
	inet_pton(AF_INET, "192.169.0.1", &sin.sin_addr);
	assert_false(conf_net_match(nets, 2, (struct sockaddr *)&sin));
	inet_pton(AF_INET6, "2001:db8:1::5", &sin6.sin6_addr);
	assert_true(conf_net_match(nets, 2, (struct sockaddr *)&sin6));
	/* an IPv4-mapped IPv6 client matches the IPv4 network */
	inet_pton(AF_INET6, "::ffff:192.168.1.1", &sin6.sin6_addr);
	assert_true(conf_net_match(nets, 2, (struct sockaddr *)&sin6));
	assert_int_equal(conf_net_parse("10.0.0.1/x", &nets[0]), -1);
	assert_int_equal(conf_net_parse("::1/129", &nets[0]), -1);
}

static void
test_print_roundtrip(void **state)
{
	char err[256], *buf = NULL;
	size_t len = 0;
	struct sl_conf *c = conf_load(NULL, err, sizeof(err)), *c2;
	FILE *f = open_memstream(&buf, &len);
	const char *p;

	conf_print(c, f);
	fclose(f);
	assert_non_null(strstr(buf, "max_message_size = 50M\n"));
	assert_non_null(strstr(buf, "command_timeout = 5m\n"));
	/* what --print-config prints loads back to the same values */
	p = write_ini(buf);
	c2 = conf_load(p, err, sizeof(err));
	assert_non_null(c2);
	assert_int_equal(c2->server_max_message_size, c->server_max_message_size);
	assert_string_equal(c2->server_trusted_networks,
	    c->server_trusted_networks);
	conf_free(c);
	conf_free(c2);
	free(buf);
	unlink(p);
}

static void
test_override(void **state)
{
	char err[256];
	struct sl_conf *c = conf_load(NULL, err, sizeof(err));

	assert_int_equal(conf_override(c, "server.max_recipients=7", err,
	    sizeof(err)), 0);
	assert_int_equal(c->server_max_recipients, 7);
	/* a [routes] key may hold dots and a star */
	assert_int_equal(conf_override(c, "routes.*=[127.0.0.1]:2526", err,
	    sizeof(err)), 0);
	assert_int_equal(conf_override(c, "routes.a.example.test=[::1]:25",
	    err, sizeof(err)), 0);
	assert_int_equal(c->nroutes, 2);
	assert_string_equal(c->routes[1].key, "a.example.test");
	assert_int_equal(conf_override(c, "server.max_recipients=0", err,
	    sizeof(err)), -1);
	assert_non_null(strstr(err, "-o server.max_recipients=0: "));
	assert_non_null(strstr(err, "below the minimum 1"));
	assert_int_equal(conf_override(c, "nodot", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "section.key=value"));
	assert_int_equal(conf_override(c, "server.nosuch=1", err,
	    sizeof(err)), -1);
	assert_non_null(strstr(err, "unknown key 'nosuch'"));
	conf_free(c);
}

/* [delivery] tls, [tls_policy] (exact, .parent, *), [submission] lists. */
static void
test_tls_policy(void **state)
{
	const char *p = write_ini(
	    "[delivery]\ntls = encrypt\n"
	    "[tls_policy]\nBank.test = none\nbank.test = verify\n"
	    ".partner.test = may\n.a.partner.test = none\n"
	    "[submission]\nlisten = 127.0.0.1:2587, [::1]:2587\n"
	    "tls_listen = 127.0.0.1:2465\n");
	struct sl_conf *c;
	char err[256];

	c = conf_load(p, err, sizeof(err));
	assert_non_null(c);
	unlink(p);
	assert_int_equal(c->delivery_tls_level, CONF_TLS_ENCRYPT);
	/* the last entry for a name wins; names are case-blind */
	assert_int_equal(conf_tls_level_for(c, "bank.test"), CONF_TLS_VERIFY);
	assert_int_equal(conf_tls_level_for(c, "BANK.TEST"), CONF_TLS_VERIFY);
	assert_int_equal(conf_tls_level_for(c, "mx.partner.test"), CONF_TLS_MAY);
	assert_int_equal(conf_tls_level_for(c, "x.a.partner.test"),
	    CONF_TLS_NONE);
	assert_int_equal(conf_tls_level_for(c, "partner.test"),
	    CONF_TLS_ENCRYPT);	/* .partner.test is for the names under it */
	assert_int_equal(conf_tls_level_for(c, "other.test"), CONF_TLS_ENCRYPT);
	assert_true(conf_tls_policy_has(c, "bank.test"));
	assert_true(conf_tls_policy_has(c, "mx.partner.test"));
	assert_false(conf_tls_policy_has(c, "other.test"));
	assert_int_equal(c->nsub_listen, 2);
	assert_int_equal(c->nsubs_listen, 1);
	assert_string_equal(c->subs_listen[0].text, "127.0.0.1:2465");
	assert_int_equal(conf_override(c, "tls_policy.*=none", err,
	    sizeof(err)), 0);
	assert_int_equal(conf_tls_level_for(c, "other.test"), CONF_TLS_NONE);
	assert_int_equal(conf_override(c, "delivery.tls=strict", err,
	    sizeof(err)), -1);
	assert_string_equal(err, "-o delivery.tls=strict: [delivery] tls: "
	    "'strict' is not none, may, encrypt or verify");
	assert_int_equal(conf_override(c, "tls_policy.a b=may", err,
	    sizeof(err)), -1);
	assert_non_null(strstr(err, "'a b' is not a domain"));
	conf_free(c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_values),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_check_errors),
		cmocka_unit_test(test_local_sections),
		cmocka_unit_test(test_missing_file),
		cmocka_unit_test(test_nets),
		cmocka_unit_test(test_print_roundtrip),
		cmocka_unit_test(test_override),
		cmocka_unit_test(test_tls_policy),
	};
	return cmocka_run_group_tests_name("conf", tests, NULL, NULL);
}
