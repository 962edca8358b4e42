/* SPDX-License-Identifier: MIT */
/*
 * fuzz_users.c: libFuzzer target for the users file parser of
 * src/auth/users.c. The input is a users file. Beyond "no crash": a file
 * that parses holds valid names, each once, sorted, each found by
 * auth_users_find; written back (as `sluice user` does) and parsed
 * again, it gives the same table; a refused file names a line.
 * Replayed by scripts/fuzz.sh replay; fuzzed by scripts/fuzz.sh run users.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth.h"

#define CHECK(x) do { if (!(x)) abort(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct auth_users *u, *again;
	char err[512], *text;
	size_t len = 0;

	u = auth_users_parse((const char *)data, size, "users", err,
	    sizeof(err));
	if (u == NULL) {
		CHECK(strncmp(err, "users:", 6) == 0);
		return 0;
	}
	for (size_t i = 0; i < u->n; i++) {
		CHECK(auth_name_valid(u->v[i].name));
		CHECK(i == 0 || strcmp(u->v[i - 1].name, u->v[i].name) < 0);
		CHECK(auth_users_find(u, u->v[i].name) == u->v[i].hash);
		len += strlen(u->v[i].name) + strlen(u->v[i].hash) + 2;
	}
	text = malloc(len + 1);
	len = 0;
	for (size_t i = 0; i < u->n; i++)
		len += (size_t)sprintf(text + len, "%s:%s\n", u->v[i].name,
		    u->v[i].hash);
	again = auth_users_parse(text, len, "users", err, sizeof(err));
	CHECK(again != NULL && again->n == u->n);
	for (size_t i = 0; i < u->n; i++)
		CHECK(strcmp(again->v[i].name, u->v[i].name) == 0 &&
		    strcmp(again->v[i].hash, u->v[i].hash) == 0);
	auth_users_free(again);
	auth_users_free(u);
	free(text);
	return 0;
}
