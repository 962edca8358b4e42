/* SPDX-License-Identifier: MIT */
/*
 * stats.c: the sink's counters as text (on exit and SIGUSR1) and as JSON
 * (--stats-json, GET /api/stats). Both name the same fields:
 *   connections peak_connections refused dropped transactions messages
 *   recipients bytes replies{"250": n, ...}
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "sink/sink.h"
#include "util/util.h"

void
sink_stats_print(const struct sink_stats *st, FILE *f)
{
	fprintf(f, "sink: connections %llu (peak %llu concurrent, %llu "
	    "refused, %llu dropped), transactions %llu\n",
	    (unsigned long long)st->connections,
	    (unsigned long long)st->peak_connections,
	    (unsigned long long)st->refused, (unsigned long long)st->dropped,
	    (unsigned long long)st->transactions);
	fprintf(f, "sink: messages %llu, recipients %llu, bytes %llu\n",
	    (unsigned long long)st->messages,
	    (unsigned long long)st->recipients,
	    (unsigned long long)st->bytes);
	fprintf(f, "sink: replies");
	for (size_t i = 0; i < SL_ARRAY_LEN(st->replies); i++)
		if (st->replies[i] > 0)
			fprintf(f, " %zu:%llu", i,
			    (unsigned long long)st->replies[i]);
	fprintf(f, "\n");
	fflush(f);
}

char *
sink_stats_json(const struct sink_stats *st)
{
	json_t *o = json_object(), *r = json_object();
	char code[24], *s;

#define SET(field) json_object_set_new(o, #field, \
	json_integer((json_int_t)st->field))
	SET(connections);
	SET(active);
	SET(peak_connections);
	SET(refused);
	SET(dropped);
	SET(transactions);
	SET(messages);
	SET(recipients);
	SET(bytes);
#undef SET
	for (size_t i = 0; i < SL_ARRAY_LEN(st->replies); i++) {
		if (st->replies[i] == 0)
			continue;
		snprintf(code, sizeof(code), "%zu", i);
		json_object_set_new(r, code,
		    json_integer((json_int_t)st->replies[i]));
	}
	json_object_set_new(o, "replies", r);
	s = json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS);
	json_decref(o);
	return s;
}

int
sink_stats_write(const struct sink_stats *st, const char *path)
{
	char *json = sink_stats_json(st), *tmp = xasprintf("%s.tmp", path);
	FILE *f = fopen(tmp, "w");
	int rc = -1;

	if (f != NULL) {
		fprintf(f, "%s\n", json);
		if (fclose(f) == 0 && rename(tmp, path) == 0)
			rc = 0;
	}
	if (rc != 0) {
		int e = errno;
		unlink(tmp);
		errno = e;
	}
	free(json);
	free(tmp);
	return rc;
}
