/* SPDX-License-Identifier: MIT */
/*
 * fuzz_sasl.c: libFuzzer target for the SASL decoders of src/auth/sasl.c.
 *
 * The input, NUL-terminated, is an AUTH response as the client sends it,
 * given to the PLAIN and LOGIN decoders. Beyond "no crash": what base64
 * decodes encodes back to the same text (one meaning per text), PLAIN's
 * user and password are non-empty, NUL-free and within their limits, and
 * every decoded byte sequence base64-encodes and decodes back to itself.
 * Replayed by scripts/fuzz.sh replay; fuzzed by scripts/fuzz.sh run sasl.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth.h"

#define CHECK(x) do { if (!(x)) abort(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1), *enc;
	char user[AUTH_NAME_MAX + 1], pass[AUTH_PASS_MAX + 1];
	uint8_t *out = malloc(size + 1);
	long n;

	memcpy(text, data, size);
	text[size] = '\0';
	n = auth_b64_decode(text, size, out, size + 1);
	if (n >= 0) {
		/* strict: the decoded bytes encode back to the very text */
		enc = malloc(size + 5);
		auth_b64_encode(out, (size_t)n, enc, size + 5);
		CHECK(strlen(enc) == size && memcmp(enc, text, size) == 0);
		free(enc);
	}
	/* any bytes survive encode then decode */
	enc = malloc(4 * ((size + 2) / 3) + 1);
	auth_b64_encode(data, size, enc, 4 * ((size + 2) / 3) + 1);
	CHECK(auth_b64_decode(enc, strlen(enc), out, size + 1) == (long)size);
	CHECK(size == 0 || memcmp(out, data, size) == 0);
	free(enc);

	if (auth_sasl_plain(text, user, pass) == AUTH_SASL_OK) {
		CHECK(user[0] != '\0' && strlen(user) <= AUTH_NAME_MAX);
		CHECK(pass[0] != '\0' && strlen(pass) <= AUTH_PASS_MAX);
	}
	if (auth_sasl_login(text, pass, sizeof(pass)) == AUTH_SASL_OK)
		CHECK(pass[0] != '\0');
	free(out);
	free(text);
	return 0;
}
