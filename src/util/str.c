/* SPDX-License-Identifier: MIT */
/*
 * str.c: small string helpers, UTF-8 validation, and the parsers of the
 * duration and size notations used by the configuration and the flags.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

size_t
sl_strlcpy(char *dst, const char *src, size_t size)
{
	size_t len = strlen(src);

	if (size > 0) {
		size_t n = len < size - 1 ? len : size - 1;
		memcpy(dst, src, n);
		dst[n] = '\0';
	}
	return len;
}

static int
lower(int c)
{
	return (c >= 'A' && c <= 'Z') ? c + 32 : c;
}

int
sl_strncaseeq(const char *a, const char *b, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
			return 0;
		if (a[i] == '\0')
			return 1;
	}
	return 1;
}

int
sl_strcaseeq(const char *a, const char *b)
{
	size_t la = strlen(a);

	return la == strlen(b) && sl_strncaseeq(a, b, la);
}

char *
sl_strtrim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' ||
	    e[-1] == '\n'))
		e--;
	*e = '\0';
	return s;
}

int
sl_utf8_valid(const char *str, size_t n)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0;

	while (i < n) {
		unsigned c = s[i];
		size_t len;
		uint32_t cp, min;

		if (c < 0x80) {
			i++;
			continue;
		} else if ((c & 0xE0) == 0xC0) {
			len = 2, cp = c & 0x1F, min = 0x80;
		} else if ((c & 0xF0) == 0xE0) {
			len = 3, cp = c & 0x0F, min = 0x800;
		} else if ((c & 0xF8) == 0xF0) {
			len = 4, cp = c & 0x07, min = 0x10000;
		} else {
			return 0;
		}
		if (i + len > n)
			return 0;
		for (size_t k = 1; k < len; k++) {
			if ((s[i + k] & 0xC0) != 0x80)
				return 0;
			cp = (cp << 6) | (s[i + k] & 0x3F);
		}
		if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
			return 0;
		i += len;
	}
	return 1;
}

/* A number followed by at most one suffix letter from the table. */
static int64_t
parse_scaled(const char *s, const char *suffixes, const int64_t *mult)
{
	char *end;
	long long v;
	int64_t m = 1;

	while (*s == ' ' || *s == '\t')
		s++;
	if (!isdigit((unsigned char)*s))
		return -1;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0)
		return -1;
	if (*end != '\0') {
		const char *p = strchr(suffixes, *end);
		if (p == NULL || end[1] != '\0')
			return -1;
		m = mult[p - suffixes];
	}
	if (v > INT64_MAX / m)
		return -1;
	return (int64_t)v * m;
}

int64_t
sl_parse_duration(const char *s)
{
	static const int64_t mult[] = { 1, 60, 3600, 86400 };

	return parse_scaled(s, "smhd", mult);
}

int64_t
sl_parse_size(const char *s)
{
	static const int64_t mult[] = { 1024, 1024, 1048576, 1048576,
		1073741824, 1073741824 };

	return parse_scaled(s, "KkMmGg", mult);
}

uint32_t
sl_hash(const void *p, size_t n)
{
	const unsigned char *b = p;
	uint32_t h = 2166136261u;

	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 16777619u;
	return h;
}

uint32_t
sl_hash_str(const char *s)
{
	return sl_hash(s, strlen(s));
}

void **
sl_chain_rehash(void **tab, size_t size, size_t newsize, size_t next_off,
    uint32_t (*hash)(const void *node))
{
	void **nt = xcalloc(newsize, sizeof(*nt));

	for (size_t b = 0; b < size; b++) {
		void *node = tab[b], *next;
		for (; node != NULL; node = next) {
			void **link = (void **)((char *)node + next_off);
			size_t nb = hash(node) % newsize;
			next = *link;
			*link = nt[nb];
			nt[nb] = node;
		}
	}
	free(tab);
	return nt;
}

int
sl_chain_unlink(void **bucket, void *node, size_t next_off)
{
	for (void **pp = bucket; *pp != NULL;
	    pp = (void **)((char *)*pp + next_off)) {
		if (*pp == node) {
			*pp = *(void **)((char *)node + next_off);
			return 1;
		}
	}
	return 0;
}

int
sl_hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

size_t
sl_split(const char *v, char ***out)
{
	char *copy = xstrdup(v), *save = NULL, *tok;
	char **items = NULL;
	size_t n = 0;

	for (tok = strtok_r(copy, ",", &save); tok != NULL;
	    tok = strtok_r(NULL, ",", &save)) {
		tok = sl_strtrim(tok);
		if (*tok == '\0')
			continue;
		items = xrealloc(items, (n + 1) * sizeof(*items));
		items[n++] = xstrdup(tok);
	}
	free(copy);
	*out = items;
	return n;
}

void
sl_strv_free(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

int
sl_parse_uint(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (!isdigit((unsigned char)*s))
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0')
		return -1;
	*out = v;
	return 0;
}
