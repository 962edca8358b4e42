/* SPDX-License-Identifier: MIT */
/*
 * idtab.h: a hash table of objects by their 64-bit id (MIDs).
 *
 * Open addressing with linear probing; a slot is one word: the object's
 * pointer with 16 bits of its id's hash in the top bits (user space
 * pointers fit in 48). A lookup reads one cache line of the table, then
 * only the object it finds (a tag that differs rules an object out
 * without reading it); a chained table read every node on the way, a
 * cache miss each at a million entries. Fibonacci hashing spreads ids that
 * come in order (MIDs are arrival times). Deletion shifts the probe run
 * back (no tombstones), reading the ids of the entries it moves. The
 * table doubles past 3/4 full and halves below 1/8: 8 to 21 bytes per
 * object. A large table asks for transparent huge pages (fewer TLB
 * misses). Threads: the owner's only.
 */
#ifndef SL_IDTAB_H
#define SL_IDTAB_H

#include <stddef.h>
#include <stdint.h>

struct sl_idtab {
	uintptr_t *v;		/* tag << 48 | pointer; 0: empty */
	size_t mask;		/* slots - 1 */
	size_t n;
	int shift;		/* 64 - log2(slots) */
	size_t id_off;		/* where the uint64_t id is in an object */
};

/* An empty table of objects whose id is the uint64_t at id_off. */
void sl_idtab_init(struct sl_idtab *t, size_t id_off);
/* The object with id, or NULL. */
void *sl_idtab_get(const struct sl_idtab *t, uint64_t id);
/* Add p (its id != 0, not in the table yet). */
void sl_idtab_put(struct sl_idtab *t, void *p);
/* Remove p if it is there (by pointer: another with its id stays). */
void sl_idtab_del(struct sl_idtab *t, void *p);
void sl_idtab_free(struct sl_idtab *t);

#endif
