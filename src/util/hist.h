/* SPDX-License-Identifier: MIT */
/*
 * hist.h: latency histograms with fixed bounds (1-2-5 steps from 10 us to
 * 10 s), for the per-step timings of a message's way through sluiced
 * (/metrics sluice_step_seconds, bench/steps).
 *
 * A histogram is a plain struct of counters: its owner adds to it on its
 * own thread, and readers take a copy under whatever guards the owner's
 * other counters (or from the same thread). Adding is a few compares and
 * two additions: cheap enough for every message.
 */
#ifndef SL_HIST_H
#define SL_HIST_H

#include <stdint.h>

#define SL_HIST_BUCKETS 19
/* Upper bounds (le) of the buckets in microseconds; one more is +Inf. */
extern const int64_t sl_hist_bounds_us[SL_HIST_BUCKETS];

struct sl_hist {
	uint64_t count[SL_HIST_BUCKETS + 1];
	int64_t sum_us;
};

/* Count one sample of us microseconds (negative counts as 0). */
void sl_hist_add(struct sl_hist *h, int64_t us);
/* Add every count of h to into. */
void sl_hist_merge(struct sl_hist *into, const struct sl_hist *h);
/* The number of samples. */
uint64_t sl_hist_total(const struct sl_hist *h);

/* Monotonic clock in microseconds: what the steps are timed with. */
int64_t sl_mono_us(void);

#endif
