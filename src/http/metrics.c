/* SPDX-License-Identifier: MIT */
/*
 * metrics.c: /metrics (Prometheus text format 0.0.4) and /healthz, two
 * routes of the HTTP listener (server.c), for monitoring and load
 * balancers; neither needs the API token.
 *
 * Every scrape reads the counters of smtpd, the scheduler and the spool
 * (no state here), so the numbers are those of that moment. The gauge per
 * destination is bounded: the METRICS_TOP_DESTINATIONS busiest by queued
 * messages, and one series "_other" for the rest, so a queue of a million
 * domains still makes a page of a few kilobytes.
 */
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "http/http.h"
#include "http/metrics.h"
#include "sched/sched.h"
#include "smtpd/smtpd.h"
#include "spool/spool.h"
#include "util/util.h"

void
metrics_label_escape(const char *v, char *buf, size_t size)
{
	size_t n = 0;

	for (; *v != '\0' && n + 3 < size; v++) {
		if (*v == '\\' || *v == '"') {
			buf[n++] = '\\';
			buf[n++] = *v;
		} else if (*v == '\n') {
			buf[n++] = '\\';
			buf[n++] = 'n';
		} else {
			buf[n++] = *v;
		}
	}
	buf[n] = '\0';
}

void
metrics_sample(struct evbuffer *out, const char *name, const char *labels,
    double v)
{
	if (labels != NULL && labels[0] != '\0')
		evbuffer_add_printf(out, "%s{%s} %.17g\n", name, labels, v);
	else
		evbuffer_add_printf(out, "%s %.17g\n", name, v);
}

static void
metrics_head(struct evbuffer *out, const char *name, const char *type,
    const char *help)
{
	evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help,
	    name, type);
}

void
metrics_one(struct evbuffer *out, const char *name, const char *type,
    const char *help, double v)
{
	metrics_head(out, name, type, help);
	metrics_sample(out, name, NULL, v);
}

/* A histogram from per-bucket counts (the last is +Inf). */
static void
metrics_histogram(struct evbuffer *out, const char *name, const char *help,
    const double *bounds, const uint64_t *counts, size_t nb, double sum)
{
	char sname[128], labels[64];
	uint64_t cum = 0;

	metrics_head(out, name, "histogram", help);
	snprintf(sname, sizeof(sname), "%s_bucket", name);
	for (size_t i = 0; i <= nb; i++) {
		cum += counts[i];
		if (i < nb)
			snprintf(labels, sizeof(labels), "le=\"%g\"", bounds[i]);
		else
			snprintf(labels, sizeof(labels), "le=\"+Inf\"");
		metrics_sample(out, sname, labels, (double)cum);
	}
	snprintf(sname, sizeof(sname), "%s_sum", name);
	metrics_sample(out, sname, NULL, sum);
	snprintf(sname, sizeof(sname), "%s_count", name);
	metrics_sample(out, sname, NULL, (double)cum);
}

struct metrics_top {
	struct sched_dest_view top[METRICS_TOP_DESTINATIONS];
	char names[METRICS_TOP_DESTINATIONS][256];
	size_t n;
	uint64_t other;
};

/* Keep the busiest destinations (by jobs), sorted, in a small array. */
static int
metrics_top_add(void *arg, const struct sched_dest_view *d)
{
	struct metrics_top *t = arg;
	size_t i;

	if (t->n == METRICS_TOP_DESTINATIONS) {
		if (d->jobs <= t->top[t->n - 1].jobs) {
			t->other += d->jobs;
			return 0;
		}
		t->other += t->top[--t->n].jobs;
	}
	for (i = t->n; i > 0 && t->top[i - 1].jobs < d->jobs; i--) {
		t->top[i] = t->top[i - 1];
		memcpy(t->names[i], t->names[i - 1], sizeof(t->names[i]));
	}
	t->top[i] = *d;
	sl_strlcpy(t->names[i], d->name, sizeof(t->names[i]));
	t->n++;
	return 0;
}

static void
metrics_destinations(const struct metrics_src *src, struct evbuffer *out)
{
	struct metrics_top t = { 0 };
	char esc[600], labels[640];

	sched_foreach_dest(src->sched, metrics_top_add, &t);
	metrics_head(out, "sluice_destination_queue", "gauge",
	    "Messages queued for the busiest destinations (_other: the rest).");
	for (size_t i = 0; i < t.n; i++) {
		metrics_label_escape(t.names[i], esc, sizeof(esc));
		snprintf(labels, sizeof(labels), "destination=\"%s\"", esc);
		metrics_sample(out, "sluice_destination_queue", labels,
		    (double)t.top[i].jobs);
	}
	metrics_sample(out, "sluice_destination_queue",
	    "destination=\"_other\"", (double)t.other);
}

void
metrics_render(const struct metrics_src *src, struct evbuffer *out)
{
	struct smtpd_stats in;
	struct sched_stats q;
	struct spool_stats sp;

	smtpd_server_stats(src->smtpd, &in);
	sched_stats_get(src->sched, &q);
	spool_stats_get(src->spool, &sp);

	metrics_head(out, "sluice_connections_total", "counter",
	    "SMTP connections accepted.");
	metrics_sample(out, "sluice_connections_total", "direction=\"in\"",
	    (double)in.connections);
	metrics_one(out, "sluice_connections_refused_total", "counter",
	    "SMTP connections turned away by a connection limit.",
	    (double)in.refused);
	metrics_one(out, "sluice_messages_received_total", "counter",
	    "Messages received and stored (answered 250).",
	    (double)in.messages);
	metrics_one(out, "sluice_recipients_received_total", "counter",
	    "Recipients of the messages received.", (double)in.recipients);
	metrics_one(out, "sluice_messages_delivered_total", "counter",
	    "Recipients delivered (a 2xx from the next hop).",
	    (double)q.delivered);
	metrics_one(out, "sluice_messages_deferred_total", "counter",
	    "Delivery attempts of a recipient that failed temporarily.",
	    (double)q.deferred);
	metrics_one(out, "sluice_messages_bounced_total", "counter",
	    "Recipients that failed permanently.", (double)q.failed);
	metrics_one(out, "sluice_messages_expired_total", "counter",
	    "Recipients returned after [delivery] queue_lifetime.",
	    (double)q.expired);
	metrics_one(out, "sluice_dsn_sent_total", "counter",
	    "Delivery status notifications queued.", (double)q.dsn_sent);
	metrics_one(out, "sluice_spool_bodies_missing_total", "counter",
	    "Messages whose body the spool did not have (an inconsistency; "
	    "they fail after a few tries).", (double)q.bodies_missing);
	metrics_one(out, "sluice_queue_messages", "gauge",
	    "Messages in the queue.", (double)q.messages);
	metrics_one(out, "sluice_queue_recipients", "gauge",
	    "Recipients in the queue that are not final.",
	    (double)q.recipients);
	metrics_one(out, "sluice_queue_destinations", "gauge",
	    "Destinations with a queue.", (double)q.destinations);
	metrics_destinations(src, out);
	metrics_head(out, "sluice_connections", "gauge",
	    "Open SMTP connections: in (sessions), out (deliveries).");
	metrics_sample(out, "sluice_connections", "direction=\"in\"",
	    (double)in.sessions);
	metrics_sample(out, "sluice_connections", "direction=\"out\"",
	    (double)q.connections);
	metrics_histogram(out, "sluice_spool_commit_seconds",
	    "Time of one spool transaction (BEGIN..COMMIT and its fsync).",
	    spool_commit_bounds, sp.commit_hist, SPOOL_COMMIT_BUCKETS,
	    sp.commit_ms_sum / 1000.0);
	metrics_histogram(out, "sluice_spool_batch_size",
	    "Requests committed by one spool transaction (group commit).",
	    spool_batch_bounds, sp.batch_hist, SPOOL_BATCH_BUCKETS,
	    (double)sp.requests);
	metrics_histogram(out, "sluice_delivery_latency_seconds",
	    "From arrival to the 2xx of the next hop, per recipient.",
	    sched_lat_bounds, q.lat_count, SCHED_LAT_BUCKETS, q.lat_sum);
	if (src->extra != NULL)
		src->extra(src->extra_arg, out);
}

static void
metrics_page(void *arg, struct http_req *req)
{
	const struct metrics_src *src = arg;
	struct evbuffer *b = evbuffer_new();

	metrics_render(src, b);
	http_reply(req, 200, "text/plain; version=0.0.4; charset=utf-8", b);
}

/* For load balancers: 200 while the node takes mail, 503 (with the
 * reason) while it drains, stops or its spool fails. */
static void
metrics_healthz(void *arg, struct http_req *req)
{
	const struct metrics_src *src = arg;
	const char *why = src->unhealthy ? src->unhealthy(src->arg) : NULL;
	struct evbuffer *b = evbuffer_new();

	if (why == NULL) {
		evbuffer_add_printf(b, "ok\n");
		http_reply(req, 200, "text/plain; charset=utf-8", b);
	} else {
		evbuffer_add_printf(b, "unavailable: %s\n", why);
		http_reply(req, 503, "text/plain; charset=utf-8", b);
	}
}

static const struct http_route metrics_routes[] = {
	{ "/metrics", HTTP_GET, HTTP_AUTH_NONE, 0, metrics_page },
	{ "/healthz", HTTP_GET, HTTP_AUTH_NONE, 0, metrics_healthz },
};

void
metrics_add_routes(struct http_server *srv, const struct metrics_src *src)
{
	http_server_add_routes(srv, metrics_routes,
	    SL_ARRAY_LEN(metrics_routes), (void *)src);
}
