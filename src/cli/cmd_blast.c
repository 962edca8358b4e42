/* SPDX-License-Identifier: MIT */
/*
 * cmd_blast.c: `sluice blast`, the SMTP load generator: flags and the
 * report (text, or one JSON object with --json). The engine is src/blast/.
 *
 * Exit: 0 when the run finished, 1 when no message got an answer at all
 * (server unreachable), 2 for a usage error.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "blast/blast.h"
#include "cli/cli.h"
#include "util/util.h"

static void
blast_usage(FILE *f)
{
	fprintf(f,
	    "usage: sluice blast --server ADDR:PORT [--sessions N] [--messages M]\n"
	    "                    [--size SIZE] [--rcpts R] [--domains K]\n"
	    "                    [--no-reuse] [--no-pipelining] [--starttls] [--json]\n"
	    "  --server ADDR:PORT   the SMTP server (default 127.0.0.1:2525)\n"
	    "  --sessions N         concurrent sessions (default 10)\n"
	    "  --messages M         messages in total (default 1000)\n"
	    "  --size SIZE          bytes per message, K/M suffixes (default 1K)\n"
	    "  --rcpts R            recipients per message (default 1)\n"
	    "  --domains K          spread recipients over K domains (default 1)\n"
	    "  --rcpt-pattern P     recipient address; {n} number, {d} domain\n"
	    "                       (default rcpt{n}@d{d}.blast.test)\n"
	    "  --from ADDR          sender (default blast@sluice.test)\n"
	    "  --helo NAME          EHLO name (default blast.sluice.test)\n"
	    "  --no-reuse           one connection per message\n"
	    "  --no-pipelining      one command at a time, even if offered\n"
	    "  --starttls           STARTTLS after EHLO (the server must offer it;\n"
	    "                       its certificate is not checked), then EHLO again\n"
	    "  --timeout D          per reply, seconds (default 60)\n"
	    "  --json               print the report as one JSON object\n");
}

static json_t *
blast_codes_json(const uint64_t *codes, size_t n)
{
	json_t *o = json_object();
	char k[24];

	for (size_t i = 0; i < n; i++) {
		if (codes[i] == 0)
			continue;
		snprintf(k, sizeof(k), "%zu", i);
		json_object_set_new(o, k, json_integer((json_int_t)codes[i]));
	}
	return o;
}

static json_t *
blast_lat_json(struct blast_lat *l)
{
	return json_pack("{s:I,s:f,s:f,s:f,s:f,s:f}", "n", (json_int_t)l->n,
	    "p50", blast_lat_pct(l, 50), "p90", blast_lat_pct(l, 90),
	    "p99", blast_lat_pct(l, 99), "p999", blast_lat_pct(l, 99.9),
	    "max", blast_lat_pct(l, 100));
}

static void
blast_print_json(const struct blast_opts *o, struct blast_result *r)
{
	double rate = r->elapsed_s > 0 ? (double)r->accepted / r->elapsed_s : 0;
	json_t *j = json_pack("{s:s,s:i,s:I,s:I,s:i,s:b,s:b}",
	    "server", o->server, "sessions", o->sessions,
	    "messages", (json_int_t)o->messages, "size", (json_int_t)o->size,
	    "rcpts", o->rcpts, "reuse", o->reuse, "pipelining", o->pipelining);
	json_object_set_new(j, "starttls", json_boolean(o->starttls));
	char *s;

	json_object_set_new(j, "accepted", json_integer((json_int_t)r->accepted));
	json_object_set_new(j, "rejected", json_integer((json_int_t)r->rejected));
	json_object_set_new(j, "failed", json_integer((json_int_t)r->failed));
	json_object_set_new(j, "rejected_by_code", blast_codes_json(
	    r->rejected_by_code, SL_ARRAY_LEN(r->rejected_by_code)));
	json_object_set_new(j, "rcpts_accepted",
	    json_integer((json_int_t)r->rcpts_accepted));
	json_object_set_new(j, "rcpts_rejected",
	    json_integer((json_int_t)r->rcpts_rejected));
	json_object_set_new(j, "rcpt_rejected_by_code", blast_codes_json(
	    r->rcpt_rejected_by_code, SL_ARRAY_LEN(r->rcpt_rejected_by_code)));
	json_object_set_new(j, "bytes_accepted",
	    json_integer((json_int_t)r->bytes_accepted));
	json_object_set_new(j, "connections",
	    json_integer((json_int_t)r->connections));
	json_object_set_new(j, "elapsed_s", json_real(r->elapsed_s));
	json_object_set_new(j, "msgs_per_s", json_real(rate));
	json_object_set_new(j, "latency_ms", json_pack("{s:o,s:o}",
	    "connect", blast_lat_json(&r->connect),
	    "data_end", blast_lat_json(&r->data_end)));
	s = json_dumps(j, JSON_INDENT(2));
	printf("%s\n", s);
	free(s);
	json_decref(j);
}

static void
blast_print_lat(const char *name, struct blast_lat *l)
{
	printf("blast: %s latency ms: p50 %.3f p90 %.3f p99 %.3f max %.3f "
	    "(n=%zu)\n", name, blast_lat_pct(l, 50), blast_lat_pct(l, 90),
	    blast_lat_pct(l, 99), blast_lat_pct(l, 100), l->n);
}

static void
blast_print_text(const struct blast_opts *o, struct blast_result *r)
{
	double rate = r->elapsed_s > 0 ? (double)r->accepted / r->elapsed_s : 0;

	printf("blast: %llu messages in %.3f s: %.1f msgs/s accepted\n",
	    (unsigned long long)o->messages, r->elapsed_s, rate);
	printf("blast: accepted %llu, rejected %llu, failed %llu; recipients "
	    "accepted %llu, rejected %llu; %llu connections\n",
	    (unsigned long long)r->accepted, (unsigned long long)r->rejected,
	    (unsigned long long)r->failed,
	    (unsigned long long)r->rcpts_accepted,
	    (unsigned long long)r->rcpts_rejected,
	    (unsigned long long)r->connections);
	if (r->rejected > 0) {
		printf("blast: rejected by code:");
		for (size_t i = 0; i < SL_ARRAY_LEN(r->rejected_by_code); i++)
			if (r->rejected_by_code[i])
				printf(" %zu:%llu", i, (unsigned long long)
				    r->rejected_by_code[i]);
		printf("\n");
	}
	blast_print_lat("connect", &r->connect);
	blast_print_lat("data-end", &r->data_end);
}

/* A whole number in [min, max] for flag; -1 (after a message) if not. */
static long long
blast_num(const char *flag, const char *v, long long min, long long max)
{
	char *end;
	long long n = strtoll(v, &end, 10);

	if (*v == '\0' || *end != '\0' || n < min || n > max) {
		fprintf(stderr, "sluice blast: --%s: '%s' is not a number from "
		    "%lld to %lld\n", flag, v, min, max);
		return -1;
	}
	return n;
}

int
cmd_blast(int argc, char **argv)
{
	enum { O_SERVER = 256, O_SESSIONS, O_MESSAGES, O_SIZE, O_RCPTS,
		O_DOMAINS, O_PATTERN, O_FROM, O_HELO, O_NOREUSE, O_NOPIPE,
		O_TIMEOUT, O_JSON, O_STARTTLS };
	static const struct option longopts[] = {
		{ "server", required_argument, NULL, O_SERVER },
		{ "sessions", required_argument, NULL, O_SESSIONS },
		{ "messages", required_argument, NULL, O_MESSAGES },
		{ "size", required_argument, NULL, O_SIZE },
		{ "rcpts", required_argument, NULL, O_RCPTS },
		{ "domains", required_argument, NULL, O_DOMAINS },
		{ "rcpt-pattern", required_argument, NULL, O_PATTERN },
		{ "from", required_argument, NULL, O_FROM },
		{ "helo", required_argument, NULL, O_HELO },
		{ "no-reuse", no_argument, NULL, O_NOREUSE },
		{ "no-pipelining", no_argument, NULL, O_NOPIPE },
		{ "starttls", no_argument, NULL, O_STARTTLS },
		{ "timeout", required_argument, NULL, O_TIMEOUT },
		{ "json", no_argument, NULL, O_JSON },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct blast_opts o = {
		.server = "127.0.0.1:2525", .sessions = 10, .messages = 1000,
		.size = 1024, .rcpts = 1, .domains = 1, .reuse = 1,
		.pipelining = 1, .from = "blast@sluice.test",
		.rcpt_pattern = "rcpt{n}@d{d}.blast.test",
		.helo = "blast.sluice.test", .timeout_s = 60,
	};
	struct blast_result r;
	int ch, json = 0, rc;
	long long n;
	char err[512];

	optind = 1;
	while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (ch) {
		case O_SERVER:
			o.server = optarg;
			break;
		case O_SESSIONS:
			if ((n = blast_num("sessions", optarg, 1, 100000)) < 0)
				return 2;
			o.sessions = (int)n;
			break;
		case O_MESSAGES:
			if ((n = blast_num("messages", optarg, 1,
			    1000000000LL)) < 0)
				return 2;
			o.messages = (uint64_t)n;
			break;
		case O_SIZE:
			n = sl_parse_size(optarg);
			if (n < 0 || n > 1024LL * 1024 * 1024) {
				fprintf(stderr, "sluice blast: --size: '%s' is not "
				    "a size such as 512, 10K or 1M\n", optarg);
				return 2;
			}
			o.size = (size_t)n;
			break;
		case O_RCPTS:
			if ((n = blast_num("rcpts", optarg, 1, 100000)) < 0)
				return 2;
			o.rcpts = (int)n;
			break;
		case O_DOMAINS:
			if ((n = blast_num("domains", optarg, 1, 1000000)) < 0)
				return 2;
			o.domains = (int)n;
			break;
		case O_PATTERN:
			if (strchr(optarg, '@') == NULL) {
				fprintf(stderr, "sluice blast: --rcpt-pattern: "
				    "'%s' has no @\n", optarg);
				return 2;
			}
			o.rcpt_pattern = optarg;
			break;
		case O_FROM:
			o.from = optarg;
			break;
		case O_HELO:
			o.helo = optarg;
			break;
		case O_NOREUSE:
			o.reuse = 0;
			break;
		case O_STARTTLS:
			o.starttls = 1;
			break;
		case O_NOPIPE:
			o.pipelining = 0;
			break;
		case O_TIMEOUT:
			if ((n = blast_num("timeout", optarg, 1, 3600)) < 0)
				return 2;
			o.timeout_s = (int)n;
			break;
		case O_JSON:
			json = 1;
			break;
		case 'h':
			blast_usage(stdout);
			return 0;
		default:
			blast_usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "sluice blast: unexpected argument '%s'\n",
		    argv[optind]);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	sl_raise_nofile();
	if (blast_run(&o, &r, err, sizeof(err)) != 0) {
		fprintf(stderr, "sluice blast: %s\n", err);
		return 2;
	}
	if (json)
		blast_print_json(&o, &r);
	else
		blast_print_text(&o, &r);
	rc = r.accepted + r.rejected == 0 ? 1 : 0;
	blast_result_clear(&r);
	return rc;
}
