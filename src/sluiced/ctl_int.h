/* SPDX-License-Identifier: MIT */
/*
 * ctl_int.h: what ctl.c (status, reload, stop, drain, the HTTP listener,
 * the dispatch) and ctl_queue.c (the queue commands) share.
 */
#ifndef SL_CTL_INT_H
#define SL_CTL_INT_H

#include <stdint.h>

#include <jansson.h>

#include "http/metrics.h"
#include "http/rates.h"

struct control_req;
struct http_api;
struct ctl_walk;
struct ctl_cursor;

/* Samples for the rates of `status`: every CTL_SAMPLE_S, CTL_SAMPLES kept. */
#define CTL_SAMPLE_S 5
#define CTL_SAMPLES 61
/* /healthz reports a spool failure this long after it was seen. */
#define CTL_SPOOL_FAIL_S 30

struct ctl_sample {
	int64_t at_ms;
	uint64_t received, delivered;
};

struct sluiced_ctl {
	struct sluiced *d;
	struct event *sample_ev;
	struct ctl_sample samples[CTL_SAMPLES];
	size_t nsamples, next;
	struct metrics_src msrc;	/* for the HTTP routes */
	struct http_api *api;		/* the API's routes */
	char *token;			/* read from [http] api_token_file */
	char *next_token;		/* a reload's, checked, not used yet */
	int draining;			/* `sluice drain`: listeners closed */
	struct ctl_walk *walks;		/* listings in progress */
	struct ctl_cursor *cursors;	/* pages of the HTTP API */
	size_t ncursors;
	struct rates rates;		/* the dashboard's, per minute */
};

typedef void ctl_cmd_fn(struct sluiced_ctl *ctl, struct control_req *req,
    json_t *args);

/* ctl_queue.c: the queue commands (docs/CONTROL.md). */
ctl_cmd_fn ctl_list, ctl_summary, ctl_show, ctl_flush, ctl_hold,
    ctl_release, ctl_bounce, ctl_delete;
struct sched_msg_view;
/* One message as the queue commands show it; a new object. */
json_t *ctl_msg_json(const struct sched_msg_view *m);

/* ctl_dest.c: the dashboard's commands. */
ctl_cmd_fn ctl_dashboard, ctl_destinations, ctl_destination;
/* Take a sample of the counters for the dashboard's rates (ctl.c's
 * sampling timer). */
void ctl_rates_sample(struct sluiced_ctl *ctl);
/* ctl_shaping.c: `sluice shaping status|resume`. */
ctl_cmd_fn ctl_shaping_status, ctl_shaping_resume;
/* End every listing and page cursor (the daemon stops; before sched_free). */
void ctl_queue_stop(struct sluiced_ctl *ctl);

#endif
