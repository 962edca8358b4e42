/* SPDX-License-Identifier: MIT */
/*
 * jsonw.h: writing JSON text directly (no jansson tree), for the hot and
 * the hostile paths: log lines and the queue listing.
 *
 * Whatever bytes come in (a peer's HELO, an address, a remote reply), what
 * comes out is valid JSON in valid UTF-8: each ill-formed sequence becomes
 * U+FFFD, one per maximal ill-formed subpart (Unicode 15, section 3.9,
 * "U+FFFD Substitution of Maximal Subparts"), so a JSON parser never
 * refuses the line and the good characters around the bad ones survive.
 *
 * Pure functions: threads do not matter.
 */
#ifndef SL_JSONW_H
#define SL_JSONW_H

#include <stddef.h>
#include <stdint.h>

struct evbuffer;

/* Where the text goes: append n bytes. */
typedef void sl_put_fn(void *arg, const char *s, size_t n);

/*
 * Write s (n bytes, NUL allowed) as a JSON string literal with its quotes:
 * '"' and '\\' escaped, control bytes as \n, \r, \t or \u00XX (and DEL as
 * \u007f), ill-formed UTF-8 as U+FFFD.
 */
void sl_json_quote(const char *s, size_t n, sl_put_fn *put, void *arg);

/*
 * The length of the well-formed UTF-8 character at s (n > 0 bytes left),
 * or 0 when it is ill-formed, with *bad the length of the maximal
 * ill-formed subpart to replace by one U+FFFD (at least 1).
 */
size_t sl_utf8_char(const unsigned char *s, size_t n, size_t *bad);

/* sl_put_fn for an evbuffer (arg). */
void sl_put_evbuffer(void *arg, const char *s, size_t n);

/* The same into an evbuffer: a string (NULL writes null), an integer. */
void sl_json_str_ev(struct evbuffer *b, const char *s);
void sl_json_int_ev(struct evbuffer *b, int64_t v);

#endif
