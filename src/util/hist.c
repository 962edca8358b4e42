/* SPDX-License-Identifier: MIT */
/*
 * hist.c: latency histograms (hist.h).
 */
#include <time.h>

#include "util/hist.h"

const int64_t sl_hist_bounds_us[SL_HIST_BUCKETS] = {
	10, 20, 50, 100, 200, 500,
	1000, 2000, 5000, 10000, 20000, 50000,
	100000, 200000, 500000, 1000000, 2000000, 5000000, 10000000,
};

void
sl_hist_add(struct sl_hist *h, int64_t us)
{
	int i = 0;

	if (us < 0)
		us = 0;
	/* most samples are short: a linear walk from the bottom is cheapest */
	while (i < SL_HIST_BUCKETS && us > sl_hist_bounds_us[i])
		i++;
	h->count[i]++;
	h->sum_us += us;
}

void
sl_hist_merge(struct sl_hist *into, const struct sl_hist *h)
{
	for (int i = 0; i <= SL_HIST_BUCKETS; i++)
		into->count[i] += h->count[i];
	into->sum_us += h->sum_us;
}

uint64_t
sl_hist_total(const struct sl_hist *h)
{
	uint64_t n = 0;

	for (int i = 0; i <= SL_HIST_BUCKETS; i++)
		n += h->count[i];
	return n;
}

int64_t
sl_mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}
