/* SPDX-License-Identifier: MIT */
/*
 * limit.c: the arithmetic of shaping, pure and clock-free: the GCRA that
 * spaces events evenly, the warm-up budget of a source address, and the
 * threshold windows of the reply rules. Callers pass the time; tests pass
 * any time they like.
 *
 * Invariants
 *  1. GCRA: of the events shaping_gcra_take() allows, no two are closer
 *     than the interval, so any span of length L holds at most
 *     floor(L / interval) + 1 of them; there is no burst after idleness.
 *  2. The warm-up budget never falls as time goes on and never passes
 *     `until`.
 *  3. shaping_hits_add() returns 1 only when `threshold` matches, the
 *     first of them within the window before the last, were recorded since
 *     it last returned 1.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "shaping/shaping_int.h"
#include "util/util.h"

int64_t
shaping_gcra_take(struct shaping_gcra *g, int64_t interval_us, int64_t now_us)
{
	if (g->tat > now_us)
		return g->tat - now_us;
	g->tat = now_us + interval_us;
	return 0;
}

int64_t
shaping_gcra_peek(const struct shaping_gcra *g, int64_t now_us)
{
	return g->tat > now_us ? g->tat - now_us : 0;
}

int64_t
shaping_warmup_window(const struct shaping_warmup *w, int64_t now_us)
{
	return now_us >= 0 ? now_us / w->unit_us : 0;
}

uint64_t
shaping_warmup_budget(const struct shaping_warmup *w, int64_t start_us,
    int64_t now_us)
{
	int64_t steps = 0;
	double b;

	if (w->every_us > 0 && now_us > start_us)
		steps = (now_us - start_us) / w->every_us;
	if (w->add > 0) {
		b = (double)w->start + (double)w->add * (double)steps;
	} else {
		/* factor^steps overflows double long after it passes until */
		b = (double)w->start * pow(w->factor, (double)(steps > 2000 ?
		    2000 : steps));
	}
	if (!(b < (double)w->until))
		return w->until;
	return (uint64_t)b;
}

void
shaping_hits_init(struct shaping_hits *h, uint32_t threshold)
{
	memset(h, 0, sizeof(*h));
	h->cap = threshold ? threshold : 1;
	h->t = xcalloc(h->cap, sizeof(*h->t));
}

void
shaping_hits_free(struct shaping_hits *h)
{
	free(h->t);
	memset(h, 0, sizeof(*h));
}

int
shaping_hits_add(struct shaping_hits *h, int64_t window_us, int64_t now_us)
{
	/* drop matches that fell out of the window */
	while (h->n > 0 && window_us > 0 && h->t[h->head] <= now_us - window_us) {
		h->head = (h->head + 1) % h->cap;
		h->n--;
	}
	h->t[(h->head + h->n) % h->cap] = now_us;
	h->n++;
	if (h->n < h->cap)
		return 0;
	h->n = 0;
	h->head = 0;
	return 1;
}
