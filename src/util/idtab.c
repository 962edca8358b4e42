/* SPDX-License-Identifier: MIT */
/*
 * idtab.c: the id table (idtab.h).
 *
 * Invariant: an object sits in its home slot (the top bits of its id's
 * hash) or after it with no empty slot between (linear probing);
 * sl_idtab_del keeps it so by moving back the entries of the run that
 * follows the hole.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "util/idtab.h"
#include "util/util.h"

#define IDTAB_MIN_SLOTS 1024
/* From here on (bytes) the table asks for huge pages. */
#define IDTAB_HUGE (4u << 20)
#define IDTAB_PTR ((((uintptr_t)1) << 48) - 1)

static uint64_t
idtab_hash(uint64_t id)
{
	return id * 0x9E3779B97F4A7C15ull;
}

static uint64_t
idtab_id(const struct sl_idtab *t, uintptr_t e)
{
	uint64_t id;

	memcpy(&id, (const char *)(e & IDTAB_PTR) + t->id_off, sizeof(id));
	return id;
}

/* The slot word for p: the hash's low 16 bits (the home slot comes from
 * the top ones) over the pointer. */
static uintptr_t
idtab_word(uint64_t h, const void *p)
{
	if ((uintptr_t)p > IDTAB_PTR)
		SL_PANIC("pointer %p above 48 bits", p);
	return (uintptr_t)(h & 0xffff) << 48 | (uintptr_t)p;
}

static uintptr_t *
idtab_alloc(size_t slots)
{
	size_t bytes = slots * sizeof(uintptr_t);
	uintptr_t *v;

	if (bytes < IDTAB_HUGE)
		return xcalloc(slots, sizeof(*v));
	/* 2 MB aligned, so the kernel can back it with huge pages */
	if ((v = aligned_alloc(2u << 20, bytes)) == NULL)
		SL_PANIC("out of memory (%zu bytes)", bytes);
	(void)madvise(v, bytes, MADV_HUGEPAGE);
	memset(v, 0, bytes);
	return v;
}

/* Rebuild into slots slots (a power of two). */
static void
idtab_resize(struct sl_idtab *t, size_t slots)
{
	uintptr_t *old = t->v;
	size_t oslots = old ? t->mask + 1 : 0;

	t->v = idtab_alloc(slots);
	t->mask = slots - 1;
	t->shift = 64 - __builtin_ctzll((unsigned long long)slots);
	for (size_t i = 0; i < oslots; i++) {
		if (old[i] == 0)
			continue;
		if (i + 8 < oslots && old[i + 8] != 0)
			__builtin_prefetch((void *)(old[i + 8] & IDTAB_PTR));
		size_t j = (size_t)(idtab_hash(idtab_id(t, old[i])) >> t->shift);
		while (t->v[j] != 0)
			j = (j + 1) & t->mask;
		t->v[j] = old[i];
	}
	free(old);
}

void
sl_idtab_init(struct sl_idtab *t, size_t id_off)
{
	memset(t, 0, sizeof(*t));
	t->id_off = id_off;
}

void *
sl_idtab_get(const struct sl_idtab *t, uint64_t id)
{
	uint64_t h = idtab_hash(id);
	uintptr_t tag = (uintptr_t)(h & 0xffff) << 48;

	if (t->v == NULL || id == 0)
		return NULL;
	for (size_t i = (size_t)(h >> t->shift);; i = (i + 1) & t->mask) {
		uintptr_t e = t->v[i];
		if (e == 0)
			return NULL;
		if ((e & ~IDTAB_PTR) == tag && idtab_id(t, e) == id)
			return (void *)(e & IDTAB_PTR);
	}
}

void
sl_idtab_put(struct sl_idtab *t, void *p)
{
	uint64_t id, h;
	size_t i;

	if (t->v == NULL)
		idtab_resize(t, IDTAB_MIN_SLOTS);
	else if ((t->n + 1) * 4 > (t->mask + 1) * 3)
		idtab_resize(t, (t->mask + 1) * 2);
	memcpy(&id, (const char *)p + t->id_off, sizeof(id));
	h = idtab_hash(id);
	for (i = (size_t)(h >> t->shift); t->v[i] != 0; i = (i + 1) & t->mask)
		;
	t->v[i] = idtab_word(h, p);
	t->n++;
}

void
sl_idtab_del(struct sl_idtab *t, void *p)
{
	uint64_t id;
	size_t i, j;

	if (t->v == NULL)
		return;
	memcpy(&id, (const char *)p + t->id_off, sizeof(id));
	for (i = (size_t)(idtab_hash(id) >> t->shift);
	    (t->v[i] & IDTAB_PTR) != (uintptr_t)p; i = (i + 1) & t->mask)
		if (t->v[i] == 0)
			return;
	/* backward shift: an entry after the hole moves into it unless its
	 * home lies (cyclically) after the hole and up to its own place */
	for (j = (i + 1) & t->mask; t->v[j] != 0; j = (j + 1) & t->mask) {
		size_t h = (size_t)(idtab_hash(idtab_id(t, t->v[j])) >>
		    t->shift);
		if (((j - h) & t->mask) >= ((j - i) & t->mask)) {
			t->v[i] = t->v[j];
			i = j;
		}
	}
	t->v[i] = 0;
	t->n--;
	if (t->mask + 1 > IDTAB_MIN_SLOTS && t->n * 8 < t->mask + 1)
		idtab_resize(t, (t->mask + 1) / 2);
}

void
sl_idtab_free(struct sl_idtab *t)
{
	free(t->v);
	t->v = NULL;
	t->mask = t->n = 0;
}
