/* SPDX-License-Identifier: MIT */
/*
 * fuzz_conf.c: libFuzzer target for the configuration reader
 * (src/conf/conf.c), aimed at the sections this issue added: the input is
 * an INI file (the dictionary names [tls_policy], [dkim] sign,
 * [delivery] tls, [submission], [auth]). Beyond "no crash": a refused file
 * names itself and a line ("f.ini:N: ..."); an accepted one has only
 * valid TLS levels, answers conf_tls_level_for for each of its
 * [tls_policy] keys with that key's level (the last one wins), and its
 * [dkim] sign entries parse as domain:selector:keyfile.
 * Replayed by scripts/fuzz.sh replay; fuzzed by scripts/fuzz.sh run conf.
 */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/conf.h"
#include "dkim/dkim.h"

#define CHECK(x) do { if (!(x)) abort(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char path[64];
	struct sl_conf *c;
	char err[1024];
	FILE *f;

	if (path[0] == '\0')
		snprintf(path, sizeof(path), "/tmp/fuzz_conf.%ld.ini",
		    (long)getpid());
	if ((f = fopen(path, "w")) == NULL)
		return 0;
	fwrite(data, 1, size, f);
	fclose(f);
	err[0] = '\0';
	c = conf_load(path, err, sizeof(err));
	if (c == NULL) {
		CHECK(strncmp(err, path, strlen(path)) == 0);
		return 0;
	}
	CHECK(c->delivery_tls_level >= CONF_TLS_NONE &&
	    c->delivery_tls_level <= CONF_TLS_VERIFY);
	for (size_t i = 0; i < c->ntls_policy; i++) {
		const char *k = c->tls_policy[i].key;
		int want = -1;
		for (size_t j = 0; j < c->ntls_policy; j++)
			if (strcmp(c->tls_policy[j].key, k) == 0)
				want = conf_tls_level_parse(c->tls_policy[j].value);
		CHECK(want >= 0);
		if (k[0] != '.' && strcmp(k, "*") != 0)
			CHECK(conf_tls_level_for(c, k) == want);
	}
	{
		char *copy = strdup(c->dkim_sign), *save = NULL, *tok;
		for (tok = strtok_r(copy, ",", &save); tok != NULL;
		    tok = strtok_r(NULL, ",", &save)) {
			char *d, *s, *p, *end;
			/* trimmed as conf.c's list items are (isspace) */
			while (isspace((unsigned char)*tok))
				tok++;
			end = tok + strlen(tok);
			while (end > tok && isspace((unsigned char)end[-1]))
				*--end = '\0';
			if (*tok == '\0')
				continue;
			CHECK(dkim_spec_parse(tok, &d, &s, &p, err,
			    sizeof(err)) == 0);
			free(d);
			free(s);
			free(p);
		}
		free(copy);
	}
	conf_free(c);
	return 0;
}
