/* SPDX-License-Identifier: MIT */
/*
 * wheel.h: a hierarchical timing wheel of items keyed by unix seconds (the
 * retry queue of deferred deliveries).
 *
 * Four levels of 256 slots: level 0 holds the items due in the next 256
 * seconds, one slot per second; level l the items due within 256^(l+1)
 * seconds, one slot per 256^l seconds. When the clock crosses a slot
 * boundary of level l, that slot's items move down (at most three moves in
 * an item's life). So insert and remove are O(1), and taking the due items
 * costs O(1) each, whatever the number queued: there is no log n, and no
 * sift that touches other items (a binary heap of a million jobs did a
 * cache miss per level). A slot is an array of item pointers, 8 bytes an
 * item; moving a slot down fetches its items a few ahead of need.
 *
 * The wheel's clock (cur) starts at sl_wheel_init's time and moves only
 * forward, only when asked to (sl_wheel_pop_due): items with a key before
 * it are due at once. Keep it at or behind the real time.
 * Threads: the owner's only.
 */
#ifndef SL_WHEEL_H
#define SL_WHEEL_H

#include <stddef.h>
#include <stdint.h>

#define SL_WHEEL_LEVELS 4
#define SL_WHEEL_SLOTS 256

/* Embedded in what is queued. */
struct sl_wheel_item {
	uint32_t key;		/* due, unix seconds */
	uint16_t slot;		/* level * 256 + slot + 1; 0: not queued */
	uint32_t idx;		/* position in the slot */
};

struct sl_wheel_slot {
	struct sl_wheel_item **v;
	uint32_t n, cap;
};

struct sl_wheel {
	uint32_t cur;		/* every item due before cur was handed out */
	size_t n;		/* items queued */
	uint64_t bits[SL_WHEEL_LEVELS][SL_WHEEL_SLOTS / 64]; /* non-empty */
	struct sl_wheel_slot slot[SL_WHEEL_LEVELS][SL_WHEEL_SLOTS];
};

/* An empty wheel whose clock starts at now (unix seconds). */
void sl_wheel_init(struct sl_wheel *w, uint32_t now);
/* Queue it, due at it->key (set by the caller). */
void sl_wheel_add(struct sl_wheel *w, struct sl_wheel_item *it);
/* Take it out wherever it is (no-op if not queued). */
void sl_wheel_remove(struct sl_wheel *w, struct sl_wheel_item *it);
/*
 * One item due at or before now, taken out; NULL when none is. Moves the
 * wheel's clock up to now at most.
 */
struct sl_wheel_item *sl_wheel_pop_due(struct sl_wheel *w, uint32_t now);
/*
 * When to call sl_wheel_pop_due next: the time the earliest item is due,
 * or earlier (a slot boundary where items move down); UINT32_MAX if empty.
 */
uint32_t sl_wheel_next(const struct sl_wheel *w);
/* The earliest item, taken out, the clock moved to it (tests, benches). */
struct sl_wheel_item *sl_wheel_pop_first(struct sl_wheel *w);
static inline size_t
sl_wheel_count(const struct sl_wheel *w)
{
	return w->n;
}
/* Free the slots (the items are the caller's). */
void sl_wheel_free(struct sl_wheel *w);

#endif
