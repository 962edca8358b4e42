/* SPDX-License-Identifier: MIT */
/*
 * cmd_shaping.c: `sluice shaping status [-c FILE] [--json]` (the sites,
 * their limits and current rates, the actions in force and until when,
 * the source addresses and their warm-up, Redis) and `sluice shaping
 * resume [-c FILE] SITE` (end the actions in force at SITE, on every node
 * when Redis shares them).
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

#define SH_I(o, k) ((long long)json_integer_value(json_object_get((o), (k))))
#define SH_S(o, k) (json_string_value(json_object_get((o), (k))))

static const char shaping_usage[] =
    "usage: sluice shaping status [-c FILE] [--json]\n"
    "       sluice shaping resume [-c FILE] SITE\n"
    "  status: sites, limits, current rates, actions in force, sources\n"
    "  resume: end the actions of rules in force at SITE\n";

/* "rate 600/m, connections 10" from the limits that are set. */
static void
shaping_print_limits(json_t *l)
{
	const char *key;
	json_t *v;
	int n = 0;

	json_object_foreach(l, key, v) {
		if (json_is_null(v) || strcmp(key, "source_select") == 0)
			continue;
		if (json_is_string(v))
			printf("%s%s %s", n++ ? ", " : "", key,
			    json_string_value(v));
		else
			printf("%s%s %lld", n++ ? ", " : "", key,
			    (long long)json_integer_value(v));
	}
	printf("%s\n", n ? "" : "none");
}

static void
shaping_print(json_t *r)
{
	json_t *redis = json_object_get(r, "redis"), *site, *a, *src;
	size_t i, j;

	printf("shaping file %s; redis %s%s%s; nodes %lld\n", SH_S(r, "file"),
	    SH_S(redis, "state"), *SH_S(redis, "url") ? " " : "",
	    SH_S(redis, "url"), SH_I(r, "nodes"));
	json_array_foreach(json_object_get(r, "sites"), i, site) {
		printf("\nsite %s%s: %lld connection(s), %lld message(s) in the "
		    "last minute\n", SH_S(site, "site"),
		    json_is_true(json_object_get(site, "configured")) ? "" :
		    " (no [site]: its next hops)", SH_I(site, "connections"),
		    SH_I(site, "sent_last_minute"));
		printf("  limits: ");
		shaping_print_limits(json_object_get(site, "limits"));
		json_array_foreach(json_object_get(site, "actions"), j, a) {
			char when[64];
			printf("  %s by rule %s until %s", SH_S(a, "action"),
			    SH_S(a, "rule"), cli_fmt_time(SH_I(a, "until"),
			    when, sizeof(when)));
			if (json_is_string(json_object_get(a, "rate")))
				printf(" (%s)", SH_S(a, "rate"));
			if (json_is_integer(json_object_get(a, "connections")))
				printf(" (%lld)", SH_I(a, "connections"));
			printf("\n");
		}
		json_array_foreach(json_object_get(site, "sources"), j, src) {
			json_t *w = json_object_get(src, "warmup");
			printf("  from %s: %lld connection(s), %lld message(s) in "
			    "the last minute%s", SH_S(src, "source"),
			    SH_I(src, "connections"),
			    SH_I(src, "sent_last_minute"),
			    json_is_true(json_object_get(src, "unbindable")) ?
			    ", cannot be bound" : "");
			if (w != NULL)
				printf(", warm-up %lld of %lld", SH_I(w, "used"),
				    SH_I(w, "budget"));
			printf("\n");
		}
	}
}

int
cmd_shaping(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *conf = NULL, *sub;
	int json = 0, ch, rc;
	json_t *res, *args = NULL;

	if (argc < 2 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "--help") == 0) {
		fprintf(argc < 2 ? stderr : stdout, "%s", shaping_usage);
		return argc < 2 ? CLI_USAGE : CLI_OK;
	}
	sub = argv[1];
	if (strcmp(sub, "status") != 0 && strcmp(sub, "resume") != 0) {
		fprintf(stderr, "sluice shaping: unknown command '%s'\n%s", sub,
		    shaping_usage);
		return CLI_USAGE;
	}
	optind = 1;
	while ((ch = getopt_long(argc - 1, argv + 1, "c:h", longopts,
	    NULL)) != -1) {
		switch (ch) {
		case 'c':
			conf = optarg;
			break;
		case 'j':
			json = 1;
			break;
		case 'h':
			printf("%s", shaping_usage);
			return CLI_OK;
		default:
			fprintf(stderr, "%s", shaping_usage);
			return CLI_USAGE;
		}
	}
	argc--, argv++;
	if (strcmp(sub, "resume") == 0) {
		if (optind + 1 != argc || json) {
			fprintf(stderr, "sluice shaping resume: one SITE is "
			    "needed\n%s", shaping_usage);
			return CLI_USAGE;
		}
		args = json_pack("{s:s}", "site", argv[optind]);
		rc = cli_call(conf, "shaping.resume", args, &res);
		json_decref(args);
		if (rc != CLI_OK)
			return rc;
		printf("site %s resumed\n", argv[optind]);
		json_decref(res);
		return CLI_OK;
	}
	if (optind < argc) {
		fprintf(stderr, "sluice shaping status: unexpected argument "
		    "'%s'\n%s", argv[optind], shaping_usage);
		return CLI_USAGE;
	}
	if ((rc = cli_call(conf, "shaping.status", NULL, &res)) != CLI_OK)
		return rc;
	if (json)
		cli_print_json(res);
	else
		shaping_print(res);
	json_decref(res);
	return CLI_OK;
}
