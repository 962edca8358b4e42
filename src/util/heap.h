/* SPDX-License-Identifier: MIT */
/*
 * heap.h: a binary min-heap of pointers keyed by an int64, with each item's
 * position kept in the item (so removal from the middle is O(log n)).
 */
#ifndef SL_HEAP_H
#define SL_HEAP_H

#include <stddef.h>
#include <stdint.h>

struct sl_heap_item {
	int64_t key;
	size_t idx;		/* position + 1; 0 = not in a heap */
};

/* Keys are kept beside the pointers, so a sift reads one array. */
struct sl_heap_ent {
	int64_t key;
	struct sl_heap_item *it;
};

struct sl_heap {
	struct sl_heap_ent *v;
	size_t n, cap;
};

void sl_heap_push(struct sl_heap *h, struct sl_heap_item *it);
/* The smallest item, or NULL. */
struct sl_heap_item *sl_heap_top(const struct sl_heap *h);
struct sl_heap_item *sl_heap_pop(struct sl_heap *h);
/* Remove it wherever it is (no-op if not in the heap). */
void sl_heap_remove(struct sl_heap *h, struct sl_heap_item *it);
void sl_heap_free(struct sl_heap *h);

#endif
