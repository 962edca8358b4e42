/* SPDX-License-Identifier: MIT */
/*
 * rates.c: per-minute counts of the last hour from sampled counters
 * (rates.h). A ring of RATES_MINUTES slots; slot[head] is the current
 * minute, and moving to a later minute clears the slots passed over.
 */
#include <string.h>

#include "http/rates.h"

const char *const rates_names[RATES_NKINDS] = {
	"received", "delivered", "deferred", "bounced",
};

void
rates_init(struct rates *r)
{
	memset(r, 0, sizeof(*r));
}

/* Make slot[head] the slot of minute m (never backwards). */
static void
rates_advance(struct rates *r, int64_t m)
{
	int64_t steps = m - r->minute;

	if (steps <= 0)
		return;
	if (steps > RATES_MINUTES)
		steps = RATES_MINUTES;
	for (int64_t i = 0; i < steps; i++) {
		r->head = (r->head + 1) % RATES_MINUTES;
		memset(r->slot[r->head], 0, sizeof(r->slot[r->head]));
	}
	r->minute = m;
}

void
rates_sample(struct rates *r, int64_t now_s,
    const uint64_t counters[RATES_NKINDS])
{
	int64_t m = now_s / 60;

	if (!r->started) {
		r->started = 1;
		r->minute = m;
		memcpy(r->last, counters, sizeof(r->last));
		return;
	}
	rates_advance(r, m);
	for (int k = 0; k < RATES_NKINDS; k++) {
		uint64_t d = counters[k] >= r->last[k] ?
		    counters[k] - r->last[k] : counters[k];
		r->slot[r->head][k] += d;
		r->last[k] = counters[k];
	}
}

json_t *
rates_json(const struct rates *r, int64_t now_s)
{
	struct rates view = *r;
	int64_t m = now_s / 60;
	json_t *o = json_object(), *per = json_object();

	/* minutes since the last sample read as empty */
	if (view.started)
		rates_advance(&view, m);
	else
		view.minute = m;
	json_object_set_new(o, "minute_start", json_integer(
	    (json_int_t)((view.minute - RATES_MINUTES + 1) * 60)));
	for (int k = 0; k < RATES_NKINDS; k++) {
		json_t *a = json_array();
		for (int i = 1; i <= RATES_MINUTES; i++) {
			int s = (view.head + i) % RATES_MINUTES;
			json_array_append_new(a, json_integer(
			    (json_int_t)view.slot[s][k]));
		}
		json_object_set_new(o, rates_names[k], a);
		json_object_set_new(per, rates_names[k], json_integer(
		    (json_int_t)view.slot[(view.head + RATES_MINUTES - 1) %
		    RATES_MINUTES][k]));
	}
	json_object_set_new(o, "per_minute", per);
	return o;
}
