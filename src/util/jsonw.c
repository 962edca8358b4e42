/* SPDX-License-Identifier: MIT */
/*
 * jsonw.c: JSON string literals that are valid UTF-8 whatever came in, and
 * small writers into an evbuffer (util/jsonw.h).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>

#include "util/jsonw.h"

size_t
sl_utf8_char(const unsigned char *s, size_t n, size_t *bad)
{
	unsigned c = s[0], lo = 0x80, hi = 0xBF;
	size_t len;

	if (c < 0x80)
		return 1;
	/* RFC 3629 section 4 (Table 3-7 of Unicode): the second byte's range
	 * depends on the first, which rules out overlongs, surrogates and
	 * code points above U+10FFFF */
	if (c >= 0xC2 && c <= 0xDF) {
		len = 2;
	} else if (c == 0xE0) {
		len = 3, lo = 0xA0;
	} else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) {
		len = 3;
	} else if (c == 0xED) {
		len = 3, hi = 0x9F;
	} else if (c == 0xF0) {
		len = 4, lo = 0x90;
	} else if (c >= 0xF1 && c <= 0xF3) {
		len = 4;
	} else if (c == 0xF4) {
		len = 4, hi = 0x8F;
	} else {
		*bad = 1;
		return 0;
	}
	for (size_t i = 1; i < len; i++) {
		if (i >= n || s[i] < lo || s[i] > hi) {
			*bad = i;
			return 0;
		}
		lo = 0x80, hi = 0xBF;
	}
	return len;
}

void
sl_json_quote(const char *str, size_t n, sl_put_fn *put, void *arg)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *s = (const unsigned char *)str;
	size_t run = 0, i = 0, len, bad;

	put(arg, "\"", 1);
	while (i < n) {
		unsigned c = s[i];
		char esc[8];
		size_t elen = 0;

		if (c >= 0x20 && c != '"' && c != '\\' && c != 0x7f && c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0x80 && (len = sl_utf8_char(s + i, n - i, &bad)) > 0) {
			i += len;
			continue;
		}
		/* flush the plain run before the byte that needs work */
		if (i > run)
			put(arg, str + run, i - run);
		if (c >= 0x80) {
			put(arg, "\xEF\xBF\xBD", 3);	/* U+FFFD */
			i += bad;
			run = i;
			continue;
		}
		esc[elen++] = '\\';
		switch (c) {
		case '"': esc[elen++] = '"'; break;
		case '\\': esc[elen++] = '\\'; break;
		case '\n': esc[elen++] = 'n'; break;
		case '\r': esc[elen++] = 'r'; break;
		case '\t': esc[elen++] = 't'; break;
		default:
			memcpy(esc + elen, "u00", 3);
			elen += 3;
			esc[elen++] = hex[c >> 4];
			esc[elen++] = hex[c & 15];
		}
		put(arg, esc, elen);
		run = ++i;
	}
	if (i > run)
		put(arg, str + run, i - run);
	put(arg, "\"", 1);
}

void
sl_put_evbuffer(void *arg, const char *s, size_t n)
{
	evbuffer_add(arg, s, n);
}

void
sl_json_str_ev(struct evbuffer *b, const char *s)
{
	if (s == NULL)
		evbuffer_add(b, "null", 4);
	else
		sl_json_quote(s, strlen(s), sl_put_evbuffer, b);
}

void
sl_json_int_ev(struct evbuffer *b, int64_t v)
{
	char buf[24];
	int n = snprintf(buf, sizeof(buf), "%" PRId64, v);

	evbuffer_add(b, buf, (size_t)n);
}
