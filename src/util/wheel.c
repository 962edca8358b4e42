/* SPDX-License-Identifier: MIT */
/*
 * wheel.c: the hierarchical timing wheel (wheel.h).
 *
 * Where an item goes, with d = key - cur (0 when the key has passed):
 * d < 256: level 0, slot key & 255; d < 2^16: level 1, slot (key >> 8) &
 * 255; d < 2^24: level 2; else level 3. Level l's slot for key is next
 * reached when cur crosses the multiple of 256^l that starts the key's
 * block, which is always after now and no later than the key: the items
 * are then put back by the same rule, one level lower or more. Level 0's
 * slot cur & 255 holds exactly the items due at cur.
 *
 * Invariants
 *  1. it->slot and it->idx say where it is: slot[l][s].v[idx] == it.
 *  2. A bit of bits[l] is set iff that slot holds items.
 *  3. Level 0's slot for second t holds only items due at t (or, for
 *     slot cur & 255, due at or before cur); nothing else is due yet.
 */
#include <stdlib.h>
#include <string.h>

#include "util/util.h"
#include "util/wheel.h"

#define W_BITS 8
#define W_MASK (SL_WHEEL_SLOTS - 1)

static struct sl_wheel_slot *
wheel_slot_of(struct sl_wheel *w, const struct sl_wheel_item *it,
    int *level, int *s)
{
	*level = (it->slot - 1) >> W_BITS;
	*s = (it->slot - 1) & W_MASK;
	return &w->slot[*level][*s];
}

/* Put it into the slot the rule gives for the current clock. */
static void
wheel_place(struct sl_wheel *w, struct sl_wheel_item *it)
{
	uint32_t key = it->key;
	uint32_t d = key > w->cur ? key - w->cur : 0;
	int level = 0, s;
	struct sl_wheel_slot *sl;

	if (d == 0)
		key = w->cur;
	while (level < SL_WHEEL_LEVELS - 1 &&
	    d >= (uint32_t)1 << (W_BITS * (level + 1)))
		level++;
	s = (int)((key >> (W_BITS * level)) & W_MASK);
	sl = &w->slot[level][s];
	if (sl->n == sl->cap) {
		sl->cap = sl->cap ? sl->cap * 2 : 4;
		sl->v = xrealloc(sl->v, sl->cap * sizeof(*sl->v));
	}
	sl->v[sl->n] = it;
	it->slot = (uint16_t)((level << W_BITS) + s + 1);
	it->idx = sl->n++;
	w->bits[level][s / 64] |= (uint64_t)1 << (s % 64);
}

/* A slot just emptied: its bit off, a large array given back. */
static void
wheel_emptied(struct sl_wheel *w, int level, int s)
{
	struct sl_wheel_slot *sl = &w->slot[level][s];

	w->bits[level][s / 64] &= ~((uint64_t)1 << (s % 64));
	if (sl->cap > 64) {
		free(sl->v);
		sl->v = NULL;
		sl->cap = 0;
	}
}

void
sl_wheel_init(struct sl_wheel *w, uint32_t now)
{
	memset(w, 0, sizeof(*w));
	w->cur = now;
}

void
sl_wheel_add(struct sl_wheel *w, struct sl_wheel_item *it)
{
	wheel_place(w, it);
	w->n++;
}

void
sl_wheel_remove(struct sl_wheel *w, struct sl_wheel_item *it)
{
	struct sl_wheel_slot *sl;
	int level, s;

	if (it->slot == 0)
		return;
	sl = wheel_slot_of(w, it, &level, &s);
	/* the last one fills the hole */
	if (it->idx != --sl->n) {
		sl->v[it->idx] = sl->v[sl->n];
		sl->v[it->idx]->idx = it->idx;
	}
	it->slot = 0;
	w->n--;
	if (sl->n == 0)
		wheel_emptied(w, level, s);
}

/* Level l's slot s is reached: its items move down (or fall due). */
static void
wheel_cascade(struct sl_wheel *w, int level, int s)
{
	struct sl_wheel_slot *sl = &w->slot[level][s];
	struct sl_wheel_item **v = sl->v;
	uint32_t n = sl->n;

	if (n == 0)
		return;
	sl->v = NULL;
	sl->n = sl->cap = 0;
	w->bits[level][s / 64] &= ~((uint64_t)1 << (s % 64));
	for (uint32_t i = 0; i < n; i++) {
		/* the items are scattered in memory: ask for a few ahead */
		if (i + 8 < n)
			__builtin_prefetch(v[i + 8], 1);
		wheel_place(w, v[i]);
	}
	free(v);
}

/* The clock one second on; at a level's slot boundary, cascade. */
static void
wheel_tick(struct sl_wheel *w)
{
	w->cur++;
	for (int level = 1; level < SL_WHEEL_LEVELS; level++) {
		uint32_t below = (uint32_t)1 << (W_BITS * level);
		if (w->cur & (below - 1))
			break;
		wheel_cascade(w, level,
		    (int)((w->cur >> (W_BITS * level)) & W_MASK));
	}
}

/* The first set bit of level at or after slot from, circularly: the
 * distance (0..255), or -1 if the level is empty. */
static int
wheel_scan(const struct sl_wheel *w, int level, int from)
{
	for (int i = 0; i < SL_WHEEL_SLOTS / 64 + 1; i++) {
		int word = ((from / 64) + i) % (SL_WHEEL_SLOTS / 64);
		uint64_t b = w->bits[level][word];
		if (i == 0)
			b &= ~(uint64_t)0 << (from % 64);
		else if (i == SL_WHEEL_SLOTS / 64)
			b &= ((uint64_t)1 << (from % 64)) - 1;
		if (b != 0) {
			int s = word * 64 + __builtin_ctzll(b);
			return (s - from + SL_WHEEL_SLOTS) % SL_WHEEL_SLOTS;
		}
	}
	return -1;
}

uint32_t
sl_wheel_next(const struct sl_wheel *w)
{
	uint64_t best = UINT32_MAX;
	int d;

	if (w->n == 0)
		return UINT32_MAX;
	if ((d = wheel_scan(w, 0, (int)(w->cur & W_MASK))) >= 0)
		return w->cur + (uint32_t)d;
	/* each level's next slot to be reached, after the current one */
	for (int level = 1; level < SL_WHEEL_LEVELS; level++) {
		int shift = W_BITS * level;
		int here = (int)((w->cur >> shift) & W_MASK);
		if ((d = wheel_scan(w, level, (here + 1) & W_MASK)) < 0)
			continue;
		uint64_t at = (((uint64_t)w->cur >> shift) + (uint64_t)d + 1) <<
		    shift;
		if (at < best)
			best = at;
	}
	return best > UINT32_MAX ? UINT32_MAX : (uint32_t)best;
}

struct sl_wheel_item *
sl_wheel_pop_due(struct sl_wheel *w, uint32_t now)
{
	for (;;) {
		int s = (int)(w->cur & W_MASK);
		struct sl_wheel_slot *sl = &w->slot[0][s];

		if (sl->n > 0) {
			struct sl_wheel_item *it;
			if (w->cur > now)
				return NULL;
			it = sl->v[--sl->n];
			it->slot = 0;
			/* the next one out of this slot: on its way meanwhile */
			if (sl->n > 0)
				__builtin_prefetch(sl->v[sl->n - 1], 1);
			w->n--;
			if (sl->n == 0)
				wheel_emptied(w, 0, s);
			return it;
		}
		if (w->n == 0 || w->cur >= now)
			return NULL;
		/* on to the next second that holds items or where a slot of
		 * a higher level is reached (sl_wheel_next), or to now: the
		 * seconds and boundaries between hold nothing */
		uint32_t to = sl_wheel_next(w);
		if (to > now)
			to = now;
		if (to > w->cur + 1)
			w->cur = to - 1;
		wheel_tick(w);
	}
}

struct sl_wheel_item *
sl_wheel_pop_first(struct sl_wheel *w)
{
	if (w->n == 0)
		return NULL;
	return sl_wheel_pop_due(w, UINT32_MAX);
}

void
sl_wheel_free(struct sl_wheel *w)
{
	for (int l = 0; l < SL_WHEEL_LEVELS; l++)
		for (int s = 0; s < SL_WHEEL_SLOTS; s++)
			free(w->slot[l][s].v);
	memset(w, 0, sizeof(*w));
}
