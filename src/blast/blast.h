/* SPDX-License-Identifier: MIT */
/*
 * blast.h: `sluice blast`, an SMTP load generator in the manner of Postfix's
 * smtp-source: N concurrent client sessions on one event loop send M
 * messages in total and count how the server answered each.
 *
 * Every message slot ends exactly once: accepted (2xx after the data),
 * rejected (the code that refused it: MAIL, all RCPTs, DATA, the end of
 * the data, or a greeting/EHLO refusal), or failed (the connection broke
 * or timed out before an answer). So accepted + rejected + failed equals
 * the messages asked for.
 */
#ifndef SL_BLAST_H
#define SL_BLAST_H

#include <stddef.h>
#include <stdint.h>

struct blast_opts {
	const char *server;	/* "127.0.0.1:2525" */
	int sessions;		/* concurrent connections */
	uint64_t messages;	/* in total */
	size_t size;		/* bytes of each message (header included) */
	int rcpts;		/* recipients per message */
	int domains;		/* recipients spread over this many domains */
	int reuse;		/* several messages per connection */
	int pipelining;		/* RFC 2920 when the server offers it */
	int starttls;		/* RFC 3207 on every connection; a server
				   that does not offer it fails the session */
	const char *from;	/* MAIL FROM address */
	const char *rcpt_pattern; /* "{n}" the recipient number, "{d}" domain */
	const char *helo;
	int timeout_s;		/* per reply */
};

/* A sorted list of latencies in microseconds. */
struct blast_lat {
	int64_t *v;
	size_t n, cap;
};

struct blast_result {
	uint64_t accepted, rejected, failed;
	uint64_t rcpts_accepted, rcpts_rejected;
	uint64_t bytes_accepted;
	uint64_t connections;	/* TCP connections opened */
	uint64_t rejected_by_code[600];	/* messages, by refusing code */
	uint64_t rcpt_rejected_by_code[600];
	double elapsed_s;
	struct blast_lat connect;	/* connect() to the greeting */
	struct blast_lat data_end;	/* the last data byte sent to reply */
};

/*
 * Run to completion. Returns 0, or -1 with the problem in err (a bad
 * server address). r is filled either way; free with blast_result_clear().
 */
int blast_run(const struct blast_opts *o, struct blast_result *r, char *err,
    size_t errlen);
void blast_result_clear(struct blast_result *r);
/* The p-th percentile (0..100) of l in milliseconds; sorts l. 0 if empty. */
double blast_lat_pct(struct blast_lat *l, double p);
/* The message body blast sends: exactly size bytes ending in CRLF (at
 * least its header); returns a new string, its length in *len. */
char *blast_body(const char *from, size_t size, size_t *len);

#endif
