/* SPDX-License-Identifier: MIT */
/*
 * cmd_status.c: `sluice status [-c FILE] [--json]`: uptime, connections in
 * and out, message counters and rates, queue and spool size.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

#define ST_I(o, k) ((long long)json_integer_value(json_object_get((o), (k))))
#define ST_F(o, k) (json_real_value(json_object_get((o), (k))))

static void
status_print(json_t *r)
{
	json_t *c = json_object_get(r, "connections");
	json_t *m = json_object_get(r, "messages");
	json_t *rt = json_object_get(r, "rates");
	json_t *q = json_object_get(r, "queue");
	json_t *sp = json_object_get(r, "spool");
	json_t *r1 = json_object_get(rt, "last_1m");
	json_t *r5 = json_object_get(rt, "last_5m");
	char up[32], b1[32], b2[32], b3[32];

	printf("sluiced %s, pid %lld, up %s%s\n",
	    json_string_value(json_object_get(r, "version")), ST_I(r, "pid"),
	    cli_fmt_age(ST_I(r, "uptime"), up, sizeof(up)),
	    json_is_true(json_object_get(r, "stopping")) ? " (stopping)" :
	    json_is_true(json_object_get(r, "draining")) ? " (draining: not "
	    "accepting mail)" : "");
	printf("connections  in %lld (%lld since start, %lld refused), "
	    "out %lld\n", ST_I(c, "in"), ST_I(c, "in_total"),
	    ST_I(c, "in_refused"), ST_I(c, "out"));
	printf("messages     received %lld (%lld recipients), delivered %lld, "
	    "deferred %lld, bounced %lld, expired %lld\n", ST_I(m, "received"),
	    ST_I(m, "recipients_received"), ST_I(m, "delivered"),
	    ST_I(m, "deferred"), ST_I(m, "bounced"), ST_I(m, "expired"));
	printf("rates/s      last minute: received %.2f, delivered %.2f; "
	    "last 5 minutes: received %.2f, delivered %.2f\n",
	    ST_F(r1, "received"), ST_F(r1, "delivered"),
	    ST_F(r5, "received"), ST_F(r5, "delivered"));
	printf("queue        %lld messages, %lld recipients, %lld "
	    "destinations\n", ST_I(q, "messages"), ST_I(q, "recipients"),
	    ST_I(q, "destinations"));
	printf("spool        %s: %s (database %s, WAL %s)\n",
	    json_string_value(json_object_get(sp, "dir")),
	    cli_fmt_size((uint64_t)ST_I(sp, "bytes"), b1, sizeof(b1)),
	    cli_fmt_size((uint64_t)ST_I(sp, "db_bytes"), b2, sizeof(b2)),
	    cli_fmt_size((uint64_t)ST_I(sp, "wal_bytes"), b3, sizeof(b3)));
}

int
cmd_status(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	static const char usage[] = "usage: sluice status [-c FILE] [--json]\n"
	    "  uptime, connections, message rates, queue and spool size\n";
	const char *conf = NULL;
	int json = 0, ch, rc;
	json_t *res;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			conf = optarg;
			break;
		case 'j':
			json = 1;
			break;
		case 'h':
			printf("%s", usage);
			return CLI_OK;
		default:
			fprintf(stderr, "%s", usage);
			return CLI_USAGE;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "sluice status: unexpected argument '%s'\n%s",
		    argv[optind], usage);
		return CLI_USAGE;
	}
	if ((rc = cli_call(conf, "status", NULL, &res)) != CLI_OK)
		return rc;
	if (json)
		cli_print_json(res);
	else
		status_print(res);
	json_decref(res);
	return CLI_OK;
}
