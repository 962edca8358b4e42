/* SPDX-License-Identifier: MIT */
/*
 * intern.h: shared, reference-counted copies of strings that repeat.
 *
 * A deferred destination gives its thousands of recipients the same last
 * reply; interning keeps one copy. Not thread-safe: the event loop's only.
 */
#ifndef SL_INTERN_H
#define SL_INTERN_H

/* A shared copy of s (NULL gives NULL); release it with sl_unintern(). */
const char *sl_intern(const char *s);
/* Take another reference to an interned string (NULL is fine). */
const char *sl_intern_ref(const char *s);
/* Drop a reference; the copy goes with the last one. NULL is fine. */
void sl_unintern(const char *s);

#endif
