/* SPDX-License-Identifier: MIT */
/*
 * util.h: allocation, strings, time and assertions that know nothing about mail.
 *
 * x*alloc abort on out-of-memory (as Postfix, OpenSMTPD and Redis do): every
 * input is bounded by a limit, so no peer can drive us there.
 */
#ifndef SL_UTIL_H
#define SL_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define SL_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Our bug: abort with a core dump. Only where no input can reach. */
#define SL_PANIC(...) sl_panic(__FILE__, __LINE__, __VA_ARGS__)
void sl_panic(const char *file, int line, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 3, 4)));

/* Assert in debug builds, still guard (evaluate to the condition) in release. */
#ifdef NDEBUG
#define SL_ALWAYS(x) (x)
#define SL_NEVER(x) (x)
#else
#define SL_ALWAYS(x) ((x) ? 1 : (SL_PANIC("assertion failed: %s", #x), 0))
#define SL_NEVER(x) ((x) ? (SL_PANIC("assertion failed: !(%s)", #x), 1) : 0)
#endif

/* Outcome of an operation where the caller must choose what to do. */
enum sl_status { SL_OK = 0, SL_TEMP = 1, SL_PERM = 2 };

void *xmalloc(size_t n);
void *xcalloc(size_t nmemb, size_t n);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* Returns a new string; free with free(). */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Copy at most size-1 bytes and terminate; returns strlen(src). */
size_t sl_strlcpy(char *dst, const char *src, size_t size);
/* ASCII case-insensitive compare of n bytes / whole strings. */
int sl_strncaseeq(const char *a, const char *b, size_t n);
int sl_strcaseeq(const char *a, const char *b);
/* Strip leading and trailing ASCII white space in place; returns s. */
char *sl_strtrim(char *s);
/* 1 if the n bytes are well-formed UTF-8 (no overlongs, no surrogates). */
int sl_utf8_valid(const char *s, size_t n);

/* Split v at commas into trimmed, non-empty items: a new array of new
 * strings (free with sl_strv_free); returns how many. */
size_t sl_split(const char *v, char ***out);
void sl_strv_free(char **v, size_t n);
/* A whole string of decimal digits into *out: 0, or -1 (empty, a sign,
 * another character, or past UINT64_MAX). */
int sl_parse_uint(const char *s, uint64_t *out);

/* The value of a hex digit (either case), or -1. */
int sl_hexval(int c);

/* FNV-1a hash of n bytes / of a string, for the hash tables. */
uint32_t sl_hash(const void *p, size_t n);
uint32_t sl_hash_str(const char *s);

/*
 * Rehash a chained hash table into a new one of newsize buckets: each node
 * keeps its next pointer next_off bytes in, hash() gives its bucket.
 * Frees the old table; returns the new one.
 */
void **sl_chain_rehash(void **tab, size_t size, size_t newsize,
    size_t next_off, uint32_t (*hash)(const void *node));
/* Take node out of the chain that starts at *bucket; 1 if it was there. */
int sl_chain_unlink(void **bucket, void *node, size_t next_off);

/* Wall clock in microseconds since the epoch; monotonic clock in ms. */
int64_t sl_now_us(void);
int64_t sl_mono_ms(void);
/* RFC 5322 date-time ("Tue, 24 Nov 2026 10:00:00 +0000") into buf (>= 40). */
void sl_rfc5322_date(int64_t unix_s, char *buf, size_t size);

/* Parse "30", "30s", "5m", "2h", "1d" into seconds; -1 on error. */
int64_t sl_parse_duration(const char *s);
/* Parse "512", "10K", "50M", "1G" into bytes; -1 on error. */
int64_t sl_parse_size(const char *s);

/* Raise RLIMIT_NOFILE to the hard limit; returns the new soft limit. */
long sl_raise_nofile(void);

#endif
