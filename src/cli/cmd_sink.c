/* SPDX-License-Identifier: MIT */
/*
 * cmd_sink.c: `sluice sink`, the fake SMTP server for tests: flags, the
 * event loop and the signals. The server itself is src/sink/.
 *
 * Prints "sluice sink: listening on ADDR:PORT" once it accepts; the
 * statistics on SIGUSR1 and on exit (SIGTERM, SIGINT), and writes them as
 * JSON to --stats-json at the same moments.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "cli/cli.h"
#include "conf/conf.h"
#include "log/log.h"
#include "util/evloop.h"
#include "sink/sink.h"
#include "util/util.h"

struct cmd_sink {
	struct event_base *base;
	struct sink *sink;
	const char *stats_json;
	int stopping;
};

static void
sink_usage(FILE *f)
{
	fprintf(f,
	    "usage: sluice sink [--listen ADDR:PORT] [--maildir DIR | --discard]\n"
	    "                   [--rules FILE] [--rule 'RULE'] [--http ADDR:PORT]\n"
	    "                   [--stats-json FILE] [--seed N] [--fsync]\n"
	    "                   [--tls-cert FILE [--tls-key FILE]]\n"
	    "                   [--pop3 ADDR:PORT] [--auth USER:PASS]... [--auth-required]\n"
	    "  --listen ADDR:PORT       SMTP address (default 127.0.0.1:2526; port 0: any)\n"
	    "  --maildir DIR            capture each message into the Maildir DIR\n"
	    "  --discard                count messages only (the default)\n"
	    "  --fsync                  fsync each captured file before it is renamed\n"
	    "  --rules FILE             failure rules, one per line (docs/SINK.md)\n"
	    "  --rule 'RULE'            one rule (repeatable), same syntax as the file\n"
	    "  --delay D, --max-connections N, --drop-in-data P,\n"
	    "  --greeting-421-after N   shorthands for those rules\n"
	    "  --seed N                 seed of the random rules (default: the time)\n"
	    "  --http ADDR:PORT         serve the inbox page and the JSON API there\n"
	    "  --pop3 ADDR:PORT         serve the captured mail over POP3 (needs --maildir)\n"
	    "  --pop3-timeout D         drop idle POP3 clients after D (default 10m)\n"
	    "  --auth USER:PASS         offer AUTH PLAIN and LOGIN (with or without TLS) to\n"
	    "                           this user, also for POP3 (repeatable)\n"
	    "  --auth-required          MAIL before AUTH gets 530 5.7.0 (needs --auth)\n"
	    "  --stats-json FILE        write the statistics there on SIGUSR1 and exit\n"
	    "  --max-size SIZE          largest message accepted (default 50M)\n"
	    "  --hostname NAME          name in the greeting\n"
	    "  --tls-cert FILE          offer STARTTLS with this certificate (PEM)\n"
	    "  --tls-key FILE           its private key (PEM; default: in --tls-cert)\n"
	    "  -v, --verbose            log every connection and message\n");
}

static void
sink_report(struct cmd_sink *c)
{
	const struct sink_stats *st = sink_stats(c->sink);

	sink_stats_print(st, stdout);
	if (c->stats_json != NULL && sink_stats_write(st, c->stats_json) != 0)
		log_warn("--stats-json %s", c->stats_json);
	log_flush();
}

static void
sink_drained(void *arg)
{
	struct cmd_sink *c = arg;

	event_base_loopexit(c->base, NULL);
}

static void
sink_signal(evutil_socket_t sig, short what, void *arg)
{
	struct cmd_sink *c = arg;
	struct timeval tv = { 5, 0 };

	if (sig == SIGUSR1) {
		sink_report(c);
		return;
	}
	if (c->stopping++) {
		event_base_loopexit(c->base, NULL);
		return;
	}
	/* open transactions get a moment to finish */
	event_base_loopexit(c->base, &tv);
	sink_stop(c->sink, sink_drained, c);
}

static void
sink_flush(evutil_socket_t fd, short what, void *arg)
{
	log_flush();
}

/* 1 if s is ADDR:PORT; else says why. */
static int
sink_addr_ok(const char *flag, const char *s)
{
	struct conf_addr a;

	if (conf_addr_parse(s, &a) == 0) {
		free(a.text);
		return 1;
	}
	fprintf(stderr, "sluice sink: %s: '%s' is not an address and port "
	    "(127.0.0.1:2526, [::1]:2526)\n", flag, s);
	return 0;
}

/* A shorthand flag as the rule line it stands for. */
static int
sink_flag_rule(struct sink_rules *r, const char *name, const char *val)
{
	char line[512], err[512];

	snprintf(line, sizeof(line), "%s %s", name, val);
	if (sink_rules_add(r, line, err, sizeof(err)) == 0)
		return 0;
	fprintf(stderr, "sluice sink: --%s: %s\n", name, err);
	return -1;
}

/* --auth USER:PASS: the name ends at the first colon; both non-empty. */
static int
sink_flag_user(struct sink_user **users, size_t *n, char *arg)
{
	char *colon = strchr(arg, ':');

	if (colon == NULL || colon == arg || colon[1] == '\0') {
		fprintf(stderr, "sluice sink: --auth: give USER:PASS, both "
		    "non-empty\n");
		return -1;
	}
	*colon = '\0';
	*users = xrealloc(*users, (*n + 1) * sizeof(**users));
	(*users)[*n].name = arg;
	(*users)[*n].pass = colon + 1;
	(*n)++;
	return 0;
}

static int
sink_loop(struct cmd_sink *c, struct sink_opts *o)
{
	struct event *evs[5] = { 0 };
	int sigs[] = { SIGTERM, SIGINT, SIGUSR1 };
	struct timeval tv = { 0, 100000 };
	char err[512];
	int rc = 1;

	c->base = sl_evloop_new();
	if ((c->sink = sink_new(c->base, o, err, sizeof(err))) == NULL) {
		fprintf(stderr, "sluice sink: %s\n", err);
		goto done;
	}
	for (size_t i = 0; i < SL_ARRAY_LEN(sigs); i++) {
		evs[i] = evsignal_new(c->base, sigs[i], sink_signal, c);
		evsignal_add(evs[i], NULL);
	}
	evs[3] = event_new(c->base, -1, EV_PERSIST, sink_flush, c);
	evtimer_add(evs[3], &tv);
	printf("sluice sink: listening on %.*s:%d\n",
	    (int)(strrchr(o->listen, ':') - o->listen), o->listen,
	    sink_smtp_port(c->sink));
	if (o->http != NULL)
		printf("sluice sink: http on %.*s:%d\n",
		    (int)(strrchr(o->http, ':') - o->http), o->http,
		    sink_http_port(c->sink));
	if (o->pop3 != NULL)
		printf("sluice sink: pop3 on %.*s:%d\n",
		    (int)(strrchr(o->pop3, ':') - o->pop3), o->pop3,
		    sink_pop3_port(c->sink));
	fflush(stdout);
	event_base_dispatch(c->base);
	sink_report(c);
	rc = 0;
done:
	c->sink = sink_free(c->sink);
	for (size_t i = 0; i < SL_ARRAY_LEN(evs); i++)
		if (evs[i] != NULL)
			event_free(evs[i]);
	event_base_free(c->base);
	return rc;
}

int
cmd_sink(int argc, char **argv)
{
	enum { O_LISTEN = 256, O_MAILDIR, O_DISCARD, O_FSYNC, O_RULES, O_RULE,
		O_DELAY, O_MAXCONN, O_DROP, O_G421, O_SEED, O_HTTP, O_STATS,
		O_MAXSIZE, O_HOST, O_TLSCERT, O_TLSKEY, O_POP3, O_POP3TIMEOUT,
		O_AUTH, O_AUTHREQ };
	static const struct option longopts[] = {
		{ "listen", required_argument, NULL, O_LISTEN },
		{ "maildir", required_argument, NULL, O_MAILDIR },
		{ "discard", no_argument, NULL, O_DISCARD },
		{ "fsync", no_argument, NULL, O_FSYNC },
		{ "rules", required_argument, NULL, O_RULES },
		{ "rule", required_argument, NULL, O_RULE },
		{ "delay", required_argument, NULL, O_DELAY },
		{ "max-connections", required_argument, NULL, O_MAXCONN },
		{ "drop-in-data", required_argument, NULL, O_DROP },
		{ "greeting-421-after", required_argument, NULL, O_G421 },
		{ "seed", required_argument, NULL, O_SEED },
		{ "http", required_argument, NULL, O_HTTP },
		{ "stats-json", required_argument, NULL, O_STATS },
		{ "max-size", required_argument, NULL, O_MAXSIZE },
		{ "hostname", required_argument, NULL, O_HOST },
		{ "tls-cert", required_argument, NULL, O_TLSCERT },
		{ "tls-key", required_argument, NULL, O_TLSKEY },
		{ "pop3", required_argument, NULL, O_POP3 },
		{ "pop3-timeout", required_argument, NULL, O_POP3TIMEOUT },
		{ "auth", required_argument, NULL, O_AUTH },
		{ "auth-required", no_argument, NULL, O_AUTHREQ },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct sink_opts o = { .listen = "127.0.0.1:2526",
		.seed = (uint64_t)time(NULL) };
	struct cmd_sink c = { 0 };
	struct sink_rules *rules = sink_rules_new();
	struct sink_user *users = NULL;
	int ch, discard = 0, verbose = 0, rc = 2;
	char err[1024], *end;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "vh", longopts, NULL)) != -1) {
		switch (ch) {
		case O_LISTEN:
			o.listen = optarg;
			break;
		case O_MAILDIR:
			o.maildir = optarg;
			break;
		case O_DISCARD:
			discard = 1;
			break;
		case O_FSYNC:
			o.fsync = 1;
			break;
		case O_RULES:
			if (sink_rules_load(rules, optarg, err, sizeof(err)) != 0) {
				fprintf(stderr, "sluice sink: %s\n", err);
				goto done;
			}
			break;
		case O_RULE:
			if (sink_rules_add(rules, optarg, err, sizeof(err)) != 0) {
				fprintf(stderr, "sluice sink: --rule '%s': %s\n",
				    optarg, err);
				goto done;
			}
			break;
		case O_DELAY:
		case O_MAXCONN:
		case O_DROP:
		case O_G421:
			if (sink_flag_rule(rules, longopts[ch - O_LISTEN].name,
			    optarg) != 0)
				goto done;
			break;
		case O_SEED:
			o.seed = strtoull(optarg, &end, 0);
			if (*optarg == '\0' || *end != '\0') {
				fprintf(stderr, "sluice sink: --seed: '%s' is not "
				    "a number\n", optarg);
				goto done;
			}
			break;
		case O_HTTP:
			o.http = optarg;
			break;
		case O_STATS:
			c.stats_json = optarg;
			break;
		case O_MAXSIZE:
			if ((o.max_size = sl_parse_size(optarg)) < 1024) {
				fprintf(stderr, "sluice sink: --max-size: '%s' is "
				    "not a size of at least 1K\n", optarg);
				goto done;
			}
			break;
		case O_HOST:
			o.hostname = optarg;
			break;
		case O_TLSCERT:
			o.tls_cert = optarg;
			break;
		case O_TLSKEY:
			o.tls_key = optarg;
			break;
		case O_POP3:
			o.pop3 = optarg;
			break;
		case O_POP3TIMEOUT:
			if ((o.pop3_timeout_s = sl_parse_duration(optarg)) < 1) {
				fprintf(stderr, "sluice sink: --pop3-timeout: '%s' "
				    "is not a duration of at least 1s\n", optarg);
				goto done;
			}
			break;
		case O_AUTH:
			if (sink_flag_user(&users, &o.nusers, optarg) != 0)
				goto done;
			break;
		case O_AUTHREQ:
			o.auth_required = 1;
			break;
		case 'v':
			verbose = 1;
			break;
		case 'h':
			sink_usage(stdout);
			rc = 0;
			goto done;
		default:
			sink_usage(stderr);
			goto done;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "sluice sink: unexpected argument '%s'\n",
		    argv[optind]);
		goto done;
	}
	if (discard && o.maildir != NULL) {
		fprintf(stderr, "sluice sink: --maildir and --discard exclude "
		    "each other\n");
		goto done;
	}
	if (o.auth_required && o.nusers == 0) {
		fprintf(stderr, "sluice sink: --auth-required needs a user: "
		    "give --auth USER:PASS\n");
		goto done;
	}
	if (o.pop3 != NULL && o.maildir == NULL) {
		fprintf(stderr, "sluice sink: --pop3 serves what --maildir "
		    "captures: give --maildir DIR\n");
		goto done;
	}
	if (!sink_addr_ok("--listen", o.listen) ||
	    (o.http != NULL && !sink_addr_ok("--http", o.http)) ||
	    (o.pop3 != NULL && !sink_addr_ok("--pop3", o.pop3)))
		goto done;
	o.rules = rules;
	o.users = users;
	log_open("-", 0, verbose ? "info" : "warning");
	signal(SIGPIPE, SIG_IGN);
	sl_raise_nofile();
	rc = sink_loop(&c, &o);
	log_close();
done:
	sink_rules_free(rules);
	free(users);
	return rc;
}
