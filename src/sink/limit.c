/* SPDX-License-Identifier: MIT */
/*
 * limit.c: how many events a key (a client address, or "" for all) had in
 * the last window, for the sink's "limit" rules. Pure: the caller passes
 * the time.
 *
 * Each key has a ring of LIMIT_SLOTS counters, each one window/LIMIT_SLOTS
 * wide; the count is the sum of the slots still inside the window, so the
 * window slides in steps of 1/60 of its length (1 s for a minute).
 * Keys stay until the limiter is freed: a test sink sees few addresses.
 */
#include <stdlib.h>
#include <string.h>

#include "sink/sink.h"
#include "util/util.h"

#define LIMIT_SLOTS 60
#define LIMIT_BUCKETS 256

struct limit_key {
	struct limit_key *next;
	char *key;
	int64_t epoch[LIMIT_SLOTS];	/* which step each slot counts */
	uint64_t count[LIMIT_SLOTS];
};

struct sink_limiter {
	int64_t step_ms;
	struct limit_key *tab[LIMIT_BUCKETS];
};

struct sink_limiter *
sink_limiter_new(int64_t window_ms)
{
	struct sink_limiter *l = xcalloc(1, sizeof(*l));

	l->step_ms = window_ms / LIMIT_SLOTS > 0 ? window_ms / LIMIT_SLOTS : 1;
	return l;
}

struct sink_limiter *
sink_limiter_free(struct sink_limiter *l)
{
	if (l == NULL)
		return NULL;
	for (size_t i = 0; i < LIMIT_BUCKETS; i++) {
		struct limit_key *k, *n;
		for (k = l->tab[i]; k != NULL; k = n) {
			n = k->next;
			free(k->key);
			free(k);
		}
	}
	free(l);
	return NULL;
}

static struct limit_key *
limit_find(struct sink_limiter *l, const char *key, int create)
{
	uint32_t h = 2166136261u;	/* FNV-1a */
	struct limit_key *k;

	for (const char *p = key; *p; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	for (k = l->tab[h % LIMIT_BUCKETS]; k != NULL; k = k->next)
		if (strcmp(k->key, key) == 0)
			return k;
	if (!create)
		return NULL;
	k = xcalloc(1, sizeof(*k));
	k->key = xstrdup(key);
	for (int i = 0; i < LIMIT_SLOTS; i++)
		k->epoch[i] = -1;
	k->next = l->tab[h % LIMIT_BUCKETS];
	l->tab[h % LIMIT_BUCKETS] = k;
	return k;
}

uint64_t
sink_limiter_count(struct sink_limiter *l, const char *key, int64_t now_ms)
{
	struct limit_key *k = limit_find(l, key, 0);
	int64_t step = now_ms / l->step_ms;
	uint64_t sum = 0;

	if (k == NULL)
		return 0;
	for (int i = 0; i < LIMIT_SLOTS; i++)
		if (k->epoch[i] > step - LIMIT_SLOTS && k->epoch[i] <= step)
			sum += k->count[i];
	return sum;
}

void
sink_limiter_add(struct sink_limiter *l, const char *key, int64_t now_ms)
{
	struct limit_key *k = limit_find(l, key, 1);
	int64_t step = now_ms / l->step_ms;
	int slot = (int)(step % LIMIT_SLOTS);

	if (k->epoch[slot] != step) {
		k->epoch[slot] = step;
		k->count[slot] = 0;
	}
	k->count[slot]++;
}
