/* SPDX-License-Identifier: MIT */
/*
 * cmd_bulk.c: the failure queue and the archive from the command line,
 * over the control socket (docs/CONTROL.md):
 *
 *   sluice failures list [--batch B] [--json]
 *   sluice failures retry ID... | --batch B | --all
 *   sluice failures purge [--batch B]
 *   sluice archive find --rcpt ADDR | --mid MID | --batch B [--json]
 *   sluice archive show ID        (the message, byte for byte, on stdout)
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>

#include "cli/cli.h"

#define B_S(o, k) (json_string_value(json_object_get((o), (k))))
#define B_I(o, k) ((long long)json_integer_value(json_object_get((o), (k))))

struct bulk_opts {
	const char *conf, *batch, *rcpt, *mid;
	int json, all;
};

/* Common flags; returns optind, or -1 for usage (after printing it). */
static int
bulk_opts(int argc, char **argv, struct bulk_opts *o, const char *usage)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "batch", required_argument, NULL, 'b' },
		{ "rcpt", required_argument, NULL, 'r' },
		{ "mid", required_argument, NULL, 'm' },
		{ "json", no_argument, NULL, 'j' },
		{ "all", no_argument, NULL, 'a' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int ch;

	memset(o, 0, sizeof(*o));
	optind = 1;
	while ((ch = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c': o->conf = optarg; break;
		case 'b': o->batch = optarg; break;
		case 'r': o->rcpt = optarg; break;
		case 'm': o->mid = optarg; break;
		case 'j': o->json = 1; break;
		case 'a': o->all = 1; break;
		case 'h':
			printf("%s", usage);
			exit(CLI_OK);
		default:
			fprintf(stderr, "%s", usage);
			return -1;
		}
	}
	return optind;
}

static const char failures_usage[] =
    "usage: sluice failures list [--batch B] [--json] [-c FILE]\n"
    "       sluice failures retry ID... | --batch B | --all [-c FILE]\n"
    "       sluice failures purge [--batch B] [-c FILE]\n"
    "  recipients that failed for good, kept for [failures] keep\n";

static int
failures_list(struct bulk_opts *o)
{
	json_t *args = json_object(), *res, *f;
	char t[32];
	size_t i;
	int rc;

	if (o->batch)
		json_object_set_new(args, "batch", json_string(o->batch));
	rc = cli_call(o->conf, "failures.list", args, &res);
	json_decref(args);
	if (rc != CLI_OK)
		return rc;
	if (o->json) {
		cli_print_json(res);
	} else {
		printf("%-6s %-16s %-6s %-19s %-30s %s\n", "ID", "MID", "RID",
		    "FAILED", "RECIPIENT", "REPLY");
		json_array_foreach(res, i, f)
			printf("%-6lld %-16s %-6lld %-19s %-30s %s\n", B_I(f, "id"),
			    B_S(f, "mid"), B_I(f, "rid"), cli_fmt_time(B_I(f,
			    "failed_at"), t, sizeof(t)), B_S(f, "rcpt"),
			    B_S(f, "reply") ? B_S(f, "reply") : "");
	}
	json_decref(res);
	return CLI_OK;
}

int
cmd_failures(int argc, char **argv)
{
	struct bulk_opts o;
	json_t *args, *res, *ids;
	const char *sub;
	int i, rc;

	if (argc < 2) {
		fprintf(stderr, "%s", failures_usage);
		return CLI_USAGE;
	}
	sub = argv[1];
	if ((i = bulk_opts(argc - 1, argv + 1, &o, failures_usage)) < 0)
		return CLI_USAGE;
	i++;	/* past the subcommand's own argv[0] */
	if (strcmp(sub, "list") == 0 && i == argc)
		return failures_list(&o);
	args = json_object();
	if (o.batch)
		json_object_set_new(args, "batch", json_string(o.batch));
	if (strcmp(sub, "purge") == 0 && i == argc) {
		/* no --batch: every failure */
		if (o.batch == NULL)
			json_object_set_new(args, "all", json_true());
		rc = cli_call(o.conf, "failures.purge", args, &res);
		if (rc == CLI_OK)
			printf("purged %lld failure(s)\n", B_I(res, "purged"));
	} else if (strcmp(sub, "retry") == 0 && ((i < argc) + (o.batch !=
	    NULL) + o.all) == 1) {
		ids = json_array();
		for (; i < argc; i++) {
			char *end;
			long long id = strtoll(argv[i], &end, 10);
			if (*argv[i] == '\0' || *end != '\0' || id <= 0) {
				fprintf(stderr, "sluice failures retry: '%s' is "
				    "not a failure id\n", argv[i]);
				json_decref(ids);
				json_decref(args);
				return CLI_USAGE;
			}
			json_array_append_new(ids, json_integer(id));
		}
		if (json_array_size(ids) > 0)
			json_object_set_new(args, "ids", ids);
		else
			json_decref(ids);
		if (o.all)
			json_object_set_new(args, "all", json_true());
		rc = cli_call(o.conf, "failures.retry", args, &res);
		if (rc == CLI_OK) {
			json_t *mids = json_object_get(res, "mids"), *m;
			size_t k;
			printf("re-queued %lld recipient(s)", B_I(res, "retried"));
			json_array_foreach(mids, k, m)
				printf("%s%s", k ? ", " : " as MID ",
				    json_string_value(m));
			printf("\n");
		}
	} else {
		fprintf(stderr, "%s", failures_usage);
		json_decref(args);
		return CLI_USAGE;
	}
	json_decref(args);
	if (rc == CLI_OK)
		json_decref(res);
	return rc;
}

static const char archive_usage[] =
    "usage: sluice archive find --rcpt ADDR | --mid MID | --batch B [--json]"
    " [-c FILE]\n"
    "       sluice archive show ID [-c FILE]\n"
    "  delivered messages kept in [archive] dir; ID is MID or MID.RID\n";

int
cmd_archive(int argc, char **argv)
{
	struct bulk_opts o;
	json_t *args, *res, *e;
	const char *sub;
	size_t k;
	int i, rc;

	if (argc < 2) {
		fprintf(stderr, "%s", archive_usage);
		return CLI_USAGE;
	}
	sub = argv[1];
	if ((i = bulk_opts(argc - 1, argv + 1, &o, archive_usage)) < 0)
		return CLI_USAGE;
	i++;
	args = json_object();
	if (strcmp(sub, "show") == 0 && i + 1 == argc) {
		json_object_set_new(args, "id", json_string(argv[i]));
		rc = cli_call(o.conf, "archive.show", args, &res);
		json_decref(args);
		if (rc != CLI_OK)
			return rc;
		gsize n = 0;
		guchar *raw = g_base64_decode(B_S(res, "message_base64"), &n);
		rc = fwrite(raw, 1, n, stdout) == n && fflush(stdout) == 0 ?
		    CLI_OK : CLI_FAILED;
		g_free(raw);
		json_decref(res);
		return rc;
	}
	if (strcmp(sub, "find") != 0 || i != argc || (o.rcpt != NULL) +
	    (o.mid != NULL) + (o.batch != NULL) != 1) {
		fprintf(stderr, "%s", archive_usage);
		json_decref(args);
		return CLI_USAGE;
	}
	if (o.rcpt)
		json_object_set_new(args, "rcpt", json_string(o.rcpt));
	if (o.mid)
		json_object_set_new(args, "mid", json_string(o.mid));
	if (o.batch)
		json_object_set_new(args, "batch", json_string(o.batch));
	rc = cli_call(o.conf, "archive.find", args, &res);
	json_decref(args);
	if (rc != CLI_OK)
		return rc;
	if (o.json) {
		cli_print_json(res);
	} else {
		char t[32], sz[32];
		printf("%-24s %-19s %-8s %s\n", "ID", "DELIVERED", "SIZE",
		    "RECIPIENTS");
		json_array_foreach(res, k, e)
			printf("%-24s %-19s %-8s %s\n", B_S(e, "id"),
			    cli_fmt_time(B_I(e, "at"), t, sizeof(t)),
			    cli_fmt_size((uint64_t)B_I(e, "size"), sz,
			    sizeof(sz)), B_S(e, "rcpt"));
	}
	json_decref(res);
	return CLI_OK;
}
