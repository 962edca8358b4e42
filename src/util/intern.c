/* SPDX-License-Identifier: MIT */
/*
 * intern.c: a chained hash table of reference-counted strings. The table
 * doubles when it holds more strings than buckets.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util/intern.h"
#include "util/util.h"

struct istr {
	struct istr *next;
	uint32_t hash;
	uint32_t refs;
	char s[];
};

static struct {
	struct istr **tab;
	size_t size, n;
} it;

static struct istr *
intern_of(const char *s)
{
	return (struct istr *)(void *)(s - offsetof(struct istr, s));
}

static void
intern_grow(void)
{
	size_t size = it.size ? it.size * 2 : 256;
	struct istr **tab = xcalloc(size, sizeof(*tab));

	for (size_t b = 0; b < it.size; b++) {
		struct istr *e, *next;
		for (e = it.tab[b]; e != NULL; e = next) {
			next = e->next;
			e->next = tab[e->hash % size];
			tab[e->hash % size] = e;
		}
	}
	free(it.tab);
	it.tab = tab;
	it.size = size;
}

const char *
sl_intern(const char *s)
{
	uint32_t h;
	struct istr *e;
	size_t len;

	if (s == NULL)
		return NULL;
	if (it.n >= it.size)
		intern_grow();
	h = sl_hash_str(s);
	for (e = it.tab[h % it.size]; e != NULL; e = e->next) {
		if (e->hash == h && strcmp(e->s, s) == 0) {
			e->refs++;
			return e->s;
		}
	}
	len = strlen(s);
	e = xmalloc(sizeof(*e) + len + 1);
	memcpy(e->s, s, len + 1);
	e->hash = h;
	e->refs = 1;
	e->next = it.tab[h % it.size];
	it.tab[h % it.size] = e;
	it.n++;
	return e->s;
}

const char *
sl_intern_ref(const char *s)
{
	if (s != NULL)
		intern_of(s)->refs++;
	return s;
}

void
sl_unintern(const char *s)
{
	struct istr *e, **pp;

	if (s == NULL || --(e = intern_of(s))->refs > 0)
		return;
	for (pp = &it.tab[e->hash % it.size]; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == e) {
			*pp = e->next;
			it.n--;
			free(e);
			return;
		}
	}
	SL_PANIC("unintern of a string not in the table");
}
