/* SPDX-License-Identifier: MIT */
/*
 * heap.c: the binary min-heap behind the retry timers. Each slot holds the
 * key and the item, so sifting touches only the array (at a million
 * entries, chasing item pointers for their keys cost 3x).
 */
#include <stdlib.h>

#include "util/heap.h"
#include "util/util.h"

static void
heap_set(struct sl_heap *h, size_t i, struct sl_heap_ent e)
{
	h->v[i] = e;
	e.it->idx = i + 1;
}

static void
heap_up(struct sl_heap *h, size_t i)
{
	struct sl_heap_ent e = h->v[i];

	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (h->v[p].key <= e.key)
			break;
		heap_set(h, i, h->v[p]);
		i = p;
	}
	heap_set(h, i, e);
}

static void
heap_down(struct sl_heap *h, size_t i)
{
	struct sl_heap_ent e = h->v[i];

	for (;;) {
		size_t l = 2 * i + 1, m = i;
		int64_t mk = e.key;
		if (l < h->n && h->v[l].key < mk)
			m = l, mk = h->v[l].key;
		if (l + 1 < h->n && h->v[l + 1].key < mk)
			m = l + 1;
		if (m == i)
			break;
		heap_set(h, i, h->v[m]);
		i = m;
	}
	heap_set(h, i, e);
}

void
sl_heap_push(struct sl_heap *h, struct sl_heap_item *it)
{
	if (h->n == h->cap) {
		h->cap = h->cap ? h->cap * 2 : 64;
		h->v = xrealloc(h->v, h->cap * sizeof(*h->v));
	}
	h->v[h->n].key = it->key;
	h->v[h->n].it = it;
	h->n++;
	heap_up(h, h->n - 1);
}

struct sl_heap_item *
sl_heap_top(const struct sl_heap *h)
{
	return h->n ? h->v[0].it : NULL;
}

void
sl_heap_remove(struct sl_heap *h, struct sl_heap_item *it)
{
	size_t i;

	if (it->idx == 0)
		return;
	i = it->idx - 1;
	it->idx = 0;
	if (--h->n == i)
		return;
	h->v[i] = h->v[h->n];
	h->v[i].it->idx = i + 1;
	heap_up(h, i);
	heap_down(h, h->v[i].it->idx - 1);
}

struct sl_heap_item *
sl_heap_pop(struct sl_heap *h)
{
	struct sl_heap_item *it = sl_heap_top(h);

	if (it != NULL)
		sl_heap_remove(h, it);
	return it;
}

void
sl_heap_free(struct sl_heap *h)
{
	free(h->v);
	h->v = NULL;
	h->n = h->cap = 0;
}
