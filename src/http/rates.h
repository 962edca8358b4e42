/* SPDX-License-Identifier: MIT */
/*
 * rates.h: how fast mail flows, for the dashboard: messages received,
 * recipients delivered, deferred and bounced per minute over the last
 * hour, made from the running counters sampled every few seconds.
 *
 * Pure: the caller gives the time and the counters (rates.c keeps only
 * what it was given), so it is unit-tested with any clock. Memory and the
 * cost of a sample or a read are fixed: one slot per minute of the hour.
 * Threads: the event loop thread.
 */
#ifndef SL_HTTP_RATES_H
#define SL_HTTP_RATES_H

#include <stdint.h>

#include <jansson.h>

#define RATES_MINUTES 60

enum rates_kind {
	RATES_RECEIVED,		/* messages accepted (250 after the data) */
	RATES_DELIVERED,	/* recipients delivered */
	RATES_DEFERRED,		/* recipients deferred (each attempt) */
	RATES_BOUNCED,		/* recipients failed for good */
	RATES_NKINDS,
};

struct rates {
	int64_t minute;			/* the minute of slot[head] (unix s / 60) */
	int head;
	int started;			/* last[] holds a sample */
	uint64_t last[RATES_NKINDS];	/* the counters at the last sample */
	uint64_t slot[RATES_MINUTES][RATES_NKINDS];
};

/* Start empty. */
void rates_init(struct rates *r);
/*
 * Account what the counters grew by since the last sample to the minute
 * of now_s (unix seconds). A counter that went down (a restart of its
 * source) starts again from its new value. Minutes without a sample count
 * nothing.
 */
void rates_sample(struct rates *r, int64_t now_s,
    const uint64_t counters[RATES_NKINDS]);
/*
 * {"minute_start": unix s of the oldest minute, "received": [60 counts,
 * oldest first, the current minute last], "delivered": [...],
 * "deferred": [...], "bounced": [...], "per_minute": {"received": n, ...}
 * (over the last complete minute)}; a new object.
 */
json_t *rates_json(const struct rates *r, int64_t now_s);

extern const char *const rates_names[RATES_NKINDS];

#endif
