/* SPDX-License-Identifier: MIT */
/*
 * cmd_queue.c: `sluice queue list|summary|show|flush|delete|hold|release|
 * bounce` (and `mailq`, which is `sluice queue list`). Each is one request
 * to the daemon's control socket (cmd_ctl.c); this file parses the flags
 * and prints tables for people, or the daemon's JSON with --json. A list
 * is printed as its messages come (the daemon streams them), so a queue
 * of any size lists in constant memory and the first lines show at once.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "control/control.h"

struct queue_opts {
	const char *conf;
	const char *domain;
	const char *state;
	int json;
	int all;
	int body;
	int nmids;
	char **mids;
};

struct queue_sub {
	const char *name;
	int (*fn)(struct queue_opts *o);
	const char *usage;
	const char *help;
};

/* ---- list ---- */

static void
queue_print_rcpt(json_t *r, int64_t now)
{
	const char *state = json_string_value(json_object_get(r, "state"));
	json_int_t next = json_integer_value(json_object_get(r, "next_retry"));
	json_t *reply = json_object_get(r, "last_reply");
	json_t *waiting = json_object_get(r, "waiting");
	char when[64] = "";

	if (strcmp(state, "deferred") == 0 && next > now)
		snprintf(when, sizeof(when), " next in %s",
		    cli_fmt_age(next - now, (char[32]){ 0 }, 32));
	printf("    [%lld] %-30s %-9s attempts=%lld%s\n",
	    (long long)json_integer_value(json_object_get(r, "rid")),
	    json_string_value(json_object_get(r, "address")), state,
	    (long long)json_integer_value(json_object_get(r, "attempts")),
	    when);
	if (json_is_string(reply))
		printf("        last reply: %s\n", json_string_value(reply));
	if (json_is_string(waiting))
		printf("        waiting: %s\n", json_string_value(waiting));
}

void
cli_print_msg(json_t *m, int64_t now, const char *node)
{
	char size[32], when[64];
	const char *sender = json_string_value(json_object_get(m, "sender"));
	json_t *r;
	size_t i;

	if (node != NULL)
		printf("%-10s ", node);
	printf("%-16s %7s  %s  <%s>%s\n",
	    json_string_value(json_object_get(m, "mid")),
	    cli_fmt_size((uint64_t)json_integer_value(json_object_get(m,
	    "size")), size, sizeof(size)),
	    cli_fmt_time(json_integer_value(json_object_get(m, "arrival")),
	    when, sizeof(when)), sender ? sender : "",
	    json_is_true(json_object_get(m, "bounce")) ? " (a DSN)" : "");
	json_array_foreach(json_object_get(m, "recipients"), i, r)
		queue_print_rcpt(r, now);
}

void
cli_print_msg_header(const char *node)
{
	if (node != NULL)
		printf("%-10s ", node);
	printf("%-16s %7s  %-19s  %s\n", "MID", "SIZE", "ARRIVAL", "SENDER");
}

/* Printing a streamed listing as the messages come. */
struct queue_list_out {
	int json;
	int64_t now;
	size_t messages, recipients;
};

static int
queue_list_item(void *arg, const char *text, size_t len)
{
	struct queue_list_out *out = arg;
	json_t *m;

	if (out->json) {
		/* the daemon's JSON as it is: one element per line */
		fputs(out->messages++ ? ",\n" : "[\n", stdout);
		fwrite(text, 1, len, stdout);
		return 0;
	}
	if ((m = json_loadb(text, len, 0, NULL)) == NULL)
		return -1;
	if (out->messages++ == 0)
		cli_print_msg_header(NULL);
	cli_print_msg(m, out->now, NULL);
	out->recipients += json_array_size(json_object_get(m, "recipients"));
	json_decref(m);
	return 0;
}

static int
queue_list(struct queue_opts *o)
{
	struct queue_list_out out = { .json = o->json,
		.now = (int64_t)time(NULL) };
	struct control_stream_cb cb = { NULL, queue_list_item, &out };
	json_t *args = json_object(), *res;
	int rc;

	if (o->domain)
		json_object_set_new(args, "domain", json_string(o->domain));
	if (o->state)
		json_object_set_new(args, "state", json_string(o->state));
	rc = cli_call_stream(o->conf, "queue.list", args, &cb, &res);
	json_decref(args);
	if (o->json && (out.messages > 0 || rc == CLI_OK))
		fputs(out.messages ? "\n]\n" : "[]\n", stdout);
	if (rc != CLI_OK)
		return rc;
	json_decref(res);
	if (o->json)
		return CLI_OK;
	if (out.messages == 0)
		printf("Mail queue is empty\n");
	else
		printf("-- %zu message%s, %zu recipient%s\n", out.messages,
		    out.messages == 1 ? "" : "s", out.recipients,
		    out.recipients == 1 ? "" : "s");
	return CLI_OK;
}

/* ---- summary ---- */

static int
queue_summary(struct queue_opts *o)
{
	json_t *res;
	int rc;

	if ((rc = cli_call(o->conf, "queue.summary", NULL, &res)) != CLI_OK)
		return rc;
	if (o->json)
		cli_print_json(res);
	else
		cli_print_summary(res);
	json_decref(res);
	return CLI_OK;
}

void
cli_print_summary(json_t *res)
{
	json_t *d, *mins, *v;
	size_t i, j, nb;
	int64_t now;

	now = json_integer_value(json_object_get(res, "now"));
	mins = json_object_get(res, "age_minutes");
	nb = json_array_size(mins);
	printf("%-28s %6s %6s", "DESTINATION", "RCPTS", "T");
	json_array_foreach(mins, i, v)
		printf(" %5lld", (long long)json_integer_value(v));
	if (nb > 0)
		printf(" %5lld+", (long long)json_integer_value(
		    json_array_get(mins, nb - 1)));
	printf("  %s\n", "OLDEST");
	json_array_foreach(json_object_get(res, "destinations"), i, d) {
		char age[32];
		json_t *w = json_object_get(d, "waiting");

		printf("%-28s %6lld %6lld",
		    json_string_value(json_object_get(d, "destination")),
		    (long long)json_integer_value(json_object_get(d,
		    "recipients")),
		    (long long)json_integer_value(json_object_get(d,
		    "messages")));
		json_array_foreach(json_object_get(d, "ages"), j, v)
			printf(" %*lld", j == nb ? 6 : 5,
			    (long long)json_integer_value(v));
		printf("  %s", cli_fmt_age(now - json_integer_value(
		    json_object_get(d, "oldest")), age, sizeof(age)));
		if (json_is_string(w))
			printf("  (%s)", json_string_value(w));
		printf("\n");
	}
	printf("total: %lld message(s), %lld recipient(s)",
	    (long long)json_integer_value(json_object_get(res, "messages")),
	    (long long)json_integer_value(json_object_get(res, "recipients")));
	if (json_integer_value(json_object_get(res, "oldest")) != 0) {
		char age[32];

		printf(", oldest %s", cli_fmt_age(now - json_integer_value(
		    json_object_get(res, "oldest")), age, sizeof(age)));
	}
	printf("; ages in minutes\n");
	json_array_foreach(json_object_get(res, "shaping"), i, v) {
		char when[64];
		printf("shaping: site %s: %s by rule %s until %s\n",
		    json_string_value(json_object_get(v, "site")),
		    json_string_value(json_object_get(v, "action")),
		    json_string_value(json_object_get(v, "rule")),
		    cli_fmt_time(json_integer_value(json_object_get(v,
		    "until")), when, sizeof(when)));
	}
}

/* ---- show ---- */

static int
queue_show(struct queue_opts *o)
{
	json_t *args, *res, *body;
	int rc;

	if (o->nmids != 1) {
		fprintf(stderr, "sluice queue show: give one MID\n");
		return CLI_USAGE;
	}
	args = json_pack("{s:s,s:b}", "mid", o->mids[0], "body", o->body);
	rc = cli_call(o->conf, "queue.show", args, &res);
	json_decref(args);
	if (rc != CLI_OK)
		return rc;
	if (o->json) {
		cli_print_json(res);
	} else {
		cli_print_msg(res, (int64_t)time(NULL), NULL);
		if ((body = json_object_get(res, "body")) != NULL)
			printf("\n%s", json_string_value(body));
	}
	json_decref(res);
	return CLI_OK;
}

/* ---- actions ---- */

/* {mids:[...]} | {domain:D} | {all:true}; NULL after a usage message. */
static json_t *
queue_sel(struct queue_opts *o, const char *sub, int all_by_default)
{
	int given = (o->nmids > 0) + (o->domain != NULL) + o->all;
	json_t *mids;

	if (given == 0 && all_by_default)
		return json_pack("{s:b}", "all", 1);
	if (given != 1) {
		fprintf(stderr, "sluice queue %s: give MIDs, --domain D or "
		    "--all (one of them)\n", sub);
		return NULL;
	}
	if (o->domain)
		return json_pack("{s:s}", "domain", o->domain);
	if (o->all)
		return json_pack("{s:b}", "all", 1);
	mids = json_array();
	for (int i = 0; i < o->nmids; i++)
		json_array_append_new(mids, json_string(o->mids[i]));
	return json_pack("{s:o}", "mids", mids);
}

static int
queue_act(struct queue_opts *o, const char *sub, const char *what,
    int all_by_default)
{
	char cmd[32];
	json_t *args = queue_sel(o, sub, all_by_default), *res;
	const char *key = strcmp(sub, "delete") == 0 ? "deleted" : "changed";
	int rc;

	if (args == NULL)
		return CLI_USAGE;
	snprintf(cmd, sizeof(cmd), "queue.%s", sub);
	rc = cli_call(o->conf, cmd, args, &res);
	json_decref(args);
	if (rc != CLI_OK)
		return rc;
	if (o->json)
		cli_print_json(res);
	else
		printf("sluice: %s %lld %s\n", what,
		    (long long)json_integer_value(json_object_get(res, key)),
		    strcmp(sub, "delete") == 0 ? "message(s)" : "recipient(s)");
	json_decref(res);
	return CLI_OK;
}

static int
queue_flush(struct queue_opts *o)
{
	return queue_act(o, "flush", "flushed", 1);
}

static int
queue_delete(struct queue_opts *o)
{
	return queue_act(o, "delete", "deleted", 0);
}

static int
queue_hold(struct queue_opts *o)
{
	return queue_act(o, "hold", "held", 0);
}

static int
queue_release(struct queue_opts *o)
{
	return queue_act(o, "release", "released", 0);
}

static int
queue_bounce(struct queue_opts *o)
{
	if (o->domain || o->all) {
		fprintf(stderr, "sluice queue bounce: give MIDs\n");
		return CLI_USAGE;
	}
	return queue_act(o, "bounce", "returned", 0);
}

static const struct queue_sub queue_subs[] = {
	{ "list", queue_list, "[--domain D] [--state deferred|held|active] "
	    "[--json]", "the queued messages and each recipient's state" },
	{ "summary", queue_summary, "[--json]",
	    "per destination: messages by age in minutes (as qshape)" },
	{ "show", queue_show, "MID [--body] [--json]",
	    "one message (and with --body its stored text)" },
	{ "flush", queue_flush, "[MID...|--domain D|--all]",
	    "retry now (no argument: everything)" },
	{ "delete", queue_delete, "MID...|--domain D|--all",
	    "remove messages: they are never delivered" },
	{ "hold", queue_hold, "MID...|--domain D|--all",
	    "no delivery attempt until released" },
	{ "release", queue_release, "MID...|--domain D|--all",
	    "held recipients are retried now" },
	{ "bounce", queue_bounce, "MID...",
	    "fail now and return the message to its sender" },
};

static void
queue_usage(FILE *f)
{
	fprintf(f, "usage: sluice queue COMMAND [-c FILE] [ARGS]\n\n");
	for (size_t i = 0; i < sizeof(queue_subs) / sizeof(queue_subs[0]); i++)
		fprintf(f, "  %-8s %s\n           %s\n", queue_subs[i].name,
		    queue_subs[i].usage, queue_subs[i].help);
	fprintf(f, "\n-c FILE: sluiced's configuration (for its control "
	    "socket).\nExit: 0 done, 1 partly done, 2 usage, 3 sluiced not "
	    "reachable.\n");
}

/* Flags of a subcommand; the rest are MIDs. */
static int
queue_parse(const struct queue_sub *sub, int argc, char **argv,
    struct queue_opts *o)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "domain", required_argument, NULL, 'd' },
		{ "state", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "all", no_argument, NULL, 'a' },
		{ "body", no_argument, NULL, 'b' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int ch, is_list = strcmp(sub->name, "list") == 0;
	int is_show = strcmp(sub->name, "show") == 0;

	optind = 1;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, ":c:h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			o->conf = optarg;
			continue;
		case 'h':
			printf("usage: sluice queue %s [-c FILE] %s\n  %s\n",
			    sub->name, sub->usage, sub->help);
			return -1;
		case 'd':
			o->domain = optarg;
			break;
		case 's':
			o->state = optarg;
			break;
		case 'j':
			o->json = 1;
			break;
		case 'a':
			o->all = 1;
			break;
		case 'b':
			o->body = 1;
			break;
		case ':':
			fprintf(stderr, "sluice queue %s: %s needs a value\n",
			    sub->name, argv[optind - 1]);
			return CLI_USAGE;
		default:
			fprintf(stderr, "sluice queue %s: unknown flag '%s'\n",
			    sub->name, argv[optind - 1]);
			return CLI_USAGE;
		}
		/* each flag is only for some subcommands */
		if ((ch == 's' && !is_list) || (ch == 'b' && !is_show) ||
		    (ch == 'j' && !is_list && !is_show &&
		    strcmp(sub->name, "summary") != 0) ||
		    ((ch == 'a' || ch == 'd') && (is_show ||
		    strcmp(sub->name, "summary") == 0))) {
			fprintf(stderr, "sluice queue %s: %s is not a flag of "
			    "this command\n", sub->name, argv[optind - 1]);
			return CLI_USAGE;
		}
	}
	if (o->state && strcmp(o->state, "deferred") != 0 &&
	    strcmp(o->state, "held") != 0 && strcmp(o->state, "active") != 0 &&
	    strcmp(o->state, "queued") != 0) {
		fprintf(stderr, "sluice queue list: --state %s: expected "
		    "deferred, held, active or queued\n", o->state);
		return CLI_USAGE;
	}
	o->mids = argv + optind;
	o->nmids = argc - optind;
	if (o->nmids > 0 && (is_list || strcmp(sub->name, "summary") == 0)) {
		fprintf(stderr, "sluice queue %s: unexpected argument '%s'\n",
		    sub->name, o->mids[0]);
		return CLI_USAGE;
	}
	return 0;
}

int
cmd_queue(int argc, char **argv)
{
	struct queue_opts o = { 0 };
	int rc;

	if (argc < 2) {
		queue_usage(stderr);
		return CLI_USAGE;
	}
	if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		queue_usage(stdout);
		return CLI_OK;
	}
	for (size_t i = 0; i < sizeof(queue_subs) / sizeof(queue_subs[0]); i++) {
		if (strcmp(argv[1], queue_subs[i].name) != 0)
			continue;
		rc = queue_parse(&queue_subs[i], argc - 1, argv + 1, &o);
		if (rc != 0)
			return rc < 0 ? CLI_OK : rc;
		return queue_subs[i].fn(&o);
	}
	fprintf(stderr, "sluice queue: unknown command '%s'\n", argv[1]);
	queue_usage(stderr);
	return CLI_USAGE;
}

/* `mailq [-c FILE] [--json] ...` is `sluice queue list`. */
int
cmd_mailq(int argc, char **argv)
{
	struct queue_opts o = { 0 };
	int rc = queue_parse(&queue_subs[0], argc, argv, &o);

	if (rc != 0)
		return rc < 0 ? CLI_OK : rc;
	return queue_list(&o);
}
