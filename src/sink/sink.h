/* SPDX-License-Identifier: MIT */
/*
 * sink.h: `sluice sink`, an SMTP server that never relays: it captures
 * each message into a Maildir (or counts and discards it), answers with
 * failures injected by rules, keeps statistics, and serves a JSON API.
 *
 * Parts: rules.c parses the rules and matches addresses (pure, no I/O);
 * limit.c counts events in sliding windows (pure); sink.c answers the
 * smtpd checks; store.c writes the Maildir and the index; stats.c prints
 * the counters; http.c is the evhttp API.
 *
 * Threads: everything runs on the event loop thread of the base given.
 */
#ifndef SL_SINK_H
#define SL_SINK_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct event_base;
struct sink;

/* Where a rule applies; the order of the smtpd stages. */
enum sink_stage {
	SINK_AT_CONNECT = 0,	/* the greeting */
	SINK_AT_HELO,
	SINK_AT_MAIL,
	SINK_AT_RCPT,
	SINK_AT_DATA,		/* the DATA command or the first BDAT */
	SINK_AT_EOM,		/* the end of the data */
	SINK_NSTAGES,
};

/* "rcpt|mail|helo PATTERN REPLY": a fixed answer for matching arguments. */
struct sink_match {
	int stage;		/* SINK_AT_HELO, _MAIL or _RCPT */
	char *pattern;		/* glob: * and ?, any case; owned */
	char *reply;		/* "550 5.1.1 User unknown"; owned */
	int code;
};

/* "rate CLASS P at STAGE [REPLY]": a random failure with probability p. */
struct sink_rate {
	int stage;
	double p;
	char *reply;		/* owned */
	int code;
};

enum sink_limit_what { SINK_LIMIT_MESSAGES, SINK_LIMIT_RECIPIENTS };

/* "limit messages N/min per-ip|total [REPLY]". */
struct sink_limit {
	int what;		/* enum sink_limit_what */
	uint64_t n;		/* at most n events ... */
	int64_t window_ms;	/* ... in any window this long */
	int per_ip;		/* 1: per client address; 0: in total */
	char *reply;		/* owned */
	int code;
};

struct sink_rules {
	struct sink_match *matches;
	size_t nmatches;
	struct sink_rate *rates;
	size_t nrates;
	struct sink_limit *limits;
	size_t nlimits;
	uint64_t greeting_421_after;	/* 0: off */
	double drop_in_data;		/* probability; 0: off */
	unsigned delay_ms;		/* before each reply */
	uint64_t max_connections;	/* 0: no limit */
	char **lines;			/* every rule added, words joined by
					   one blank (for the inbox page) */
	size_t nlines;
};

/* rules.c */
/* A new empty rule set; free with sink_rules_free(). */
struct sink_rules *sink_rules_new(void);
struct sink_rules *sink_rules_free(struct sink_rules *r);
/*
 * Add the rule of one line (comments and blank lines are fine). Returns 0,
 * or -1 with the problem in err (without file:line).
 */
int sink_rules_add(struct sink_rules *r, const char *line, char *err,
    size_t errlen);
/* Add every line of a file; -1 with "file:line: problem" in err. */
int sink_rules_load(struct sink_rules *r, const char *path, char *err,
    size_t errlen);
/* The first match rule of stage whose pattern matches arg, or NULL. */
const struct sink_match *sink_rules_match(const struct sink_rules *r,
    int stage, const char *arg);
/* 1 if the glob (* any run, ? one byte; ASCII any case) matches s. */
int sink_glob(const char *pattern, const char *s);
/* "greeting" -> SINK_AT_CONNECT etc.; -1 if unknown. */
int sink_stage_parse(const char *name);
const char *sink_stage_name(int stage);

/* limit.c: counts of events in sliding windows, keyed by a string. */
struct sink_limiter;
struct sink_limiter *sink_limiter_new(int64_t window_ms);
struct sink_limiter *sink_limiter_free(struct sink_limiter *l);
/* Events of key in the window that ends at now_ms. */
uint64_t sink_limiter_count(struct sink_limiter *l, const char *key,
    int64_t now_ms);
void sink_limiter_add(struct sink_limiter *l, const char *key, int64_t now_ms);

/* The counters of one run. */
struct sink_stats {
	uint64_t connections;	/* accepted */
	uint64_t active;	/* open now */
	uint64_t peak_connections;
	uint64_t refused;	/* turned away by max-connections */
	uint64_t dropped;	/* connections dropped by drop-in-data */
	uint64_t transactions;	/* MAIL accepted */
	uint64_t messages;	/* stored (or discarded) after 250 */
	uint64_t recipients;	/* of those messages */
	uint64_t bytes;		/* of those messages, as received */
	uint64_t replies[600];	/* by reply code */
};

/* --auth USER:PASS (borrowed from the command line). */
struct sink_user {
	const char *name;
	const char *pass;
};

struct sink_opts {
	const char *listen;	/* "127.0.0.1:2526" */
	const char *maildir;	/* capture here; NULL: discard */
	int fsync;		/* fsync each file before it is renamed */
	const char *http;	/* "127.0.0.1:8025" or NULL */
	const char *pop3;	/* "127.0.0.1:1100" or NULL */
	int64_t pop3_timeout_s;	/* idle POP3 clients; 0: 10 minutes */
	const struct sink_user *users;	/* --auth; none: anyone */
	size_t nusers;
	int auth_required;	/* --auth-required: 530 to MAIL before AUTH */
	const char *hostname;	/* in the greeting; NULL: the host's */
	const char *tls_cert;	/* PEM files for STARTTLS; NULL: none */
	const char *tls_key;	/* NULL: the key is in tls_cert */
	int64_t max_size;	/* SIZE; 0: the default */
	uint64_t seed;		/* for the random rules */
	const struct sink_rules *rules;	/* borrowed; outlives the sink */
};

/* sink.c */
/*
 * Start listening (SMTP and, if asked, HTTP). Returns a new sink, or NULL
 * with the problem in err. Free with sink_free().
 */
struct sink *sink_new(struct event_base *base, const struct sink_opts *o,
    char *err, size_t errlen);
/* Stop accepting; done(arg) runs once no session is left. */
void sink_stop(struct sink *k, void (*done)(void *), void *arg);
struct sink *sink_free(struct sink *k);
/* The bound ports (useful with port 0); -1 if none. */
int sink_smtp_port(const struct sink *k);
int sink_http_port(const struct sink *k);
int sink_pop3_port(const struct sink *k);
const struct sink_stats *sink_stats(const struct sink *k);

/* stats.c */
/* Print the counters in a few human lines. */
void sink_stats_print(const struct sink_stats *st, FILE *f);
/* The counters as a JSON object text; returns a new string (free()). */
char *sink_stats_json(const struct sink_stats *st);
/* Write the JSON to path (via a temporary file and rename); 0 or -1. */
int sink_stats_write(const struct sink_stats *st, const char *path);

#endif
