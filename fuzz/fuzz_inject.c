/* SPDX-License-Identifier: MIT */
/*
 * fuzz_inject.c: libFuzzer target for the injection request parser
 * (src/inject/request.c). The input is a request body.
 *
 * Beyond "no crash, no sanitizer report, no leak" it checks what inject.h
 * promises: a refused request has a reason and no result; an accepted one
 * has a sender, at least one entry seen, every kept recipient a valid
 * address, every kept vars compact JSON of an object, every rejection a
 * reason, and kept plus rejected never more than the limit.
 * Replayed by scripts/fuzz.sh replay; fuzzed by scripts/fuzz.sh run inject.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "inject/inject.h"
#include "smtpd/parse.h"

#define CHECK(x) do { if (!(x)) abort(); } while (0)

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct inject_limits lim = { 50, 65536, 1024 };
	struct inject_req *r = NULL;
	char err[256] = "";

	if (inject_req_parse((const char *)data, size, &lim, &r, err,
	    sizeof(err)) != 0) {
		CHECK(r == NULL && strlen(err) > 0);
		return 0;
	}
	CHECK(r->sender != NULL && r->nrcpt + r->nrejected >= 1);
	CHECK(r->nrcpt + r->nrejected <= lim.max_recipients);
	for (size_t i = 0; i < r->nrcpt; i++) {
		const char *a = r->rcpts[i].email;
		CHECK(smtpd_addr_valid(a, strlen(a), 1));
		if (r->rcpts[i].vars != NULL) {
			json_t *v = json_loads(r->rcpts[i].vars, 0, NULL);
			CHECK(json_is_object(v));
			CHECK(strlen(r->rcpts[i].vars) <= lim.max_vars);
			json_decref(v);
		}
	}
	for (size_t i = 0; i < r->nrejected; i++)
		CHECK(r->rejected[i].reason[0] != '\0' &&
		    r->rejected[i].index < lim.max_recipients);
	inject_req_free(r);
	return 0;
}
