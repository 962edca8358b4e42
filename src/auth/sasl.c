/* SPDX-License-Identifier: MIT */
/*
 * sasl.c: the client's messages of the SASL mechanisms sluice offers:
 * PLAIN (RFC 4616) and LOGIN (draft-murchison-sasl-login), in base64
 * (RFC 4648 section 4) as AUTH carries them (RFC 4954).
 *
 * Pure functions: bytes in, fields out, no state. Fuzzed by fuzz/fuzz_sasl.c.
 * Decoding is strict: padding required, no white space, no bits left
 * over in the last group, so one text has one meaning.
 */
#include <string.h>

#include "auth/auth.h"

static const char b64chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int
b64val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

long
auth_b64_decode(const char *in, size_t n, uint8_t *out, size_t cap)
{
	size_t o = 0;

	if (n % 4 != 0)
		return -1;
	for (size_t i = 0; i < n; i += 4) {
		int v[4], pad = 0;
		uint32_t w;

		for (int k = 0; k < 4; k++) {
			unsigned char c = (unsigned char)in[i + k];
			if (c == '=' && i + 4 == n && k >= 2) {
				pad++;
				v[k] = 0;
				continue;
			}
			if (pad > 0 || (v[k] = b64val(c)) < 0)
				return -1;
		}
		w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 |
		    (uint32_t)v[2] << 6 | (uint32_t)v[3];
		/* the bits a padded group does not use must be zero */
		if ((pad == 1 && (w & 0xFF)) || (pad == 2 && (w & 0xFFFF)))
			return -1;
		if (o + 3 - (size_t)pad > cap)
			return -1;
		out[o++] = (uint8_t)(w >> 16);
		if (pad < 2)
			out[o++] = (uint8_t)(w >> 8);
		if (pad < 1)
			out[o++] = (uint8_t)w;
	}
	return (long)o;
}

void
auth_b64_encode(const uint8_t *in, size_t n, char *out, size_t cap)
{
	size_t o = 0;

	for (size_t i = 0; i < n && o + 5 <= cap; i += 3) {
		uint32_t w = (uint32_t)in[i] << 16;
		if (i + 1 < n)
			w |= (uint32_t)in[i + 1] << 8;
		if (i + 2 < n)
			w |= in[i + 2];
		out[o++] = b64chars[(w >> 18) & 63];
		out[o++] = b64chars[(w >> 12) & 63];
		out[o++] = i + 1 < n ? b64chars[(w >> 6) & 63] : '=';
		out[o++] = i + 2 < n ? b64chars[w & 63] : '=';
	}
	if (cap > 0)
		out[o < cap ? o : cap - 1] = '\0';
}

/* The message of one response: "*" cancels; "=" is empty (RFC 4954 4). */
static enum auth_sasl_status
auth_sasl_decode(const char *b64, uint8_t *out, size_t cap, long *n)
{
	size_t len = strlen(b64);

	if (strcmp(b64, "*") == 0)
		return AUTH_SASL_CANCEL;
	if (strcmp(b64, "=") == 0) {
		*n = 0;
		return AUTH_SASL_OK;
	}
	if (len == 0 || (*n = auth_b64_decode(b64, len, out, cap)) < 0)
		return AUTH_SASL_BAD64;
	return AUTH_SASL_OK;
}

enum auth_sasl_status
auth_sasl_plain(const char *b64, char *user, char *pass)
{
	/* authzid NUL authcid NUL passwd, each at most what we take */
	uint8_t buf[2 * (AUTH_NAME_MAX + 1) + AUTH_PASS_MAX];
	enum auth_sasl_status st;
	const uint8_t *z, *u, *p, *end;
	long n;

	if ((st = auth_sasl_decode(b64, buf, sizeof(buf), &n)) != AUTH_SASL_OK)
		return st;
	end = buf + n;
	z = buf;
	if ((u = memchr(z, '\0', (size_t)(end - z))) == NULL)
		goto syntax;
	u++;
	if ((p = memchr(u, '\0', (size_t)(end - u))) == NULL)
		goto syntax;
	p++;
	if (memchr(p, '\0', (size_t)(end - p)) != NULL ||
	    (size_t)(p - u - 1) > AUTH_NAME_MAX || p - u - 1 == 0 ||
	    (size_t)(end - p) > AUTH_PASS_MAX || end == p)
		goto syntax;
	/* acting for another identity is not offered */
	if (u - z - 1 > 0 && (u - z != p - u || memcmp(z, u, (size_t)(u - z)) != 0))
		goto syntax;
	memcpy(user, u, (size_t)(p - u));		/* with its NUL */
	memcpy(pass, p, (size_t)(end - p));
	pass[end - p] = '\0';
	memset(buf, 0, sizeof(buf));
	return AUTH_SASL_OK;
syntax:
	memset(buf, 0, sizeof(buf));
	return AUTH_SASL_SYNTAX;
}

enum auth_sasl_status
auth_sasl_login(const char *b64, char *out, size_t cap)
{
	uint8_t buf[AUTH_PASS_MAX + 1];
	enum auth_sasl_status st;
	long n;

	if ((st = auth_sasl_decode(b64, buf, sizeof(buf), &n)) != AUTH_SASL_OK)
		return st;
	if (n == 0 || (size_t)n >= cap || memchr(buf, '\0', (size_t)n) != NULL) {
		memset(buf, 0, sizeof(buf));
		return AUTH_SASL_SYNTAX;
	}
	memcpy(out, buf, (size_t)n);
	out[n] = '\0';
	memset(buf, 0, sizeof(buf));
	return AUTH_SASL_OK;
}
