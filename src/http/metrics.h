/* SPDX-License-Identifier: MIT */
/*
 * metrics.h: the monitoring routes of the HTTP listener (http.h): GET
 * /metrics in the Prometheus text format (version 0.0.4), GET /healthz for
 * load balancers. Names and meanings are listed in docs/HTTP.md.
 *
 * Threads: the event loop thread; the counters are read at each scrape.
 */
#ifndef SL_METRICS_H
#define SL_METRICS_H

#include <stddef.h>

struct event_base;
struct evbuffer;
struct sched;
struct smtpd_server;
struct spool;
struct http_server;

/* The busiest destinations get a gauge each; the rest are summed. */
#define METRICS_TOP_DESTINATIONS 10

/* Where the numbers come from (borrowed; they outlive the listener). */
struct metrics_src {
	struct smtpd_server *smtpd;
	struct sched *sched;
	struct spool *spool;
	/* NULL while the node takes mail; else why /healthz answers 503
	 * ("draining", "the spool fails") */
	const char *(*unhealthy)(void *arg);
	void *arg;
	/* more families written after the built-in ones, or NULL */
	void (*extra)(void *arg, struct evbuffer *out);
	void *extra_arg;
};

/* Add /metrics and /healthz to srv; src is borrowed and outlives srv. */
void metrics_add_routes(struct http_server *srv,
    const struct metrics_src *src);

/* Write the whole /metrics page for src into out. */
void metrics_render(const struct metrics_src *src, struct evbuffer *out);

/* Write a counter or gauge with its HELP and TYPE lines. */
void metrics_one(struct evbuffer *out, const char *name, const char *type,
    const char *help, double v);
/* Write one sample line: name{labels} value (labels may be NULL or ""). */
void metrics_sample(struct evbuffer *out, const char *name,
    const char *labels, double v);
/* Write label value v into buf with \\, \" and \n escaped. */
void metrics_label_escape(const char *v, char *buf, size_t size);

#endif
