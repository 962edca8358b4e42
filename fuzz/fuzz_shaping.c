/* SPDX-License-Identifier: MIT */
/*
 * fuzz_shaping.c: libFuzzer target for the shaping file parser
 * (src/shaping/file.c). The input is a whole file.
 *
 * Beyond "no crash, no leak, no sanitizer report" it checks what the parser
 * promises: a failure says "f.ini:LINE: " with LINE within the file; a
 * success keeps every rule it documents (a site has mx or domains and
 * rates above zero; a rule has a regex, an action and a site that
 * exists; a warm-up's budget never falls and never passes its cap), and
 * whatever it accepted can be formatted and matched against.
 * Replayed by scripts/fuzz.sh replay; fuzzed by scripts/fuzz.sh run shaping.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shaping/shaping_int.h"

#define CHECK(x) do { if (!(x)) abort(); } while (0)

static void
check_err(const char *err, const uint8_t *data, size_t size)
{
	size_t lines = 1;
	long line;
	char *end;

	for (size_t i = 0; i < size; i++)
		lines += data[i] == '\n';
	CHECK(strncmp(err, "f.ini:", 6) == 0);
	line = strtol(err + 6, &end, 10);
	CHECK(line >= 1 && (size_t)line <= lines);
	CHECK(end[0] == ':' && end[1] == ' ' && end[2] != '\0');
}

static void
check_conf(const struct shaping_conf *c)
{
	char buf[128];

	for (size_t i = 0; i < c->nsites; i++) {
		const struct shaping_site_conf *s = &c->sites[i];
		const char *host = "mx.example.test";
		CHECK(s->nmx + s->ndomains > 0);
		CHECK(s->rate.n == 0 || s->rate.per_us > 0);
		CHECK(s->connection_rate.n == 0 ||
		    s->connection_rate.per_us > 0);
		shaping_rate_format(&s->rate, buf, sizeof(buf));
		CHECK(shaping_conf_site(c, s->name) == s);
		(void)shaping_conf_match(c, "example.test", &host, 1);
	}
	for (size_t i = 0; i < c->nrules; i++) {
		const struct shaping_rule_conf *r = &c->rules[i];
		CHECK(r->has_re && r->match != NULL);
		CHECK(r->action.kind >= SHAPING_ACT_SUSPEND &&
		    r->action.kind <= SHAPING_ACT_RETRY_IN);
		CHECK(r->threshold >= 1 &&
		    r->threshold <= SHAPING_MAX_THRESHOLD);
		CHECK(r->threshold == 1 || r->window_us > 0);
		CHECK(r->site == NULL || shaping_conf_site(c, r->site) != NULL);
		shaping_action_format(&r->action, buf, sizeof(buf));
		(void)shaping_rule_matches(r, r->site ? r->site : "x",
		    "421 4.7.0 [TSS04] Messages temporarily deferred");
	}
	for (size_t i = 0; i < c->nsources; i++) {
		const struct shaping_warmup *w = &c->sources[i].warmup;
		uint64_t prev = 0;
		if (!c->sources[i].has_warmup)
			continue;
		CHECK(w->start >= 1 && w->start <= w->until);
		for (int64_t t = 0; t < 400LL * 86400 * 1000000;
		    t += 7LL * 86400 * 1000000) {
			uint64_t b = shaping_warmup_budget(w, 0, t);
			CHECK(b >= prev && b <= w->until);
			prev = b;
		}
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[512] = "";
	struct shaping_conf *c = shaping_conf_parse("f.ini",
	    (const char *)data, size, err, sizeof(err));

	if (c == NULL)
		check_err(err, data, size);
	else
		check_conf(c);
	shaping_conf_free(c);
	return 0;
}
