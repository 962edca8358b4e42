/* SPDX-License-Identifier: MIT */
/*
 * query.c: the inbox's search (GET /api/messages?q=...), pure: no I/O.
 *
 * A query is words; "to:", "from:" and "subject:" in front of a word
 * limit it to the recipients (envelope), the sender (envelope MAIL FROM
 * and the From: header) or the Subject:; a bare word matches any of them.
 * "double quotes" keep blanks inside a word. Every word must match (AND);
 * a word matches when it is a substring, ASCII letters in any case.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "sink/sink_int.h"
#include "util/util.h"

static const struct {
	const char *prefix;
	enum sink_qfield field;
} query_prefixes[] = {
	{ "to:", SINK_Q_TO },
	{ "from:", SINK_Q_FROM },
	{ "subject:", SINK_Q_SUBJECT },
};

void
sink_query_free(struct sink_query *q)
{
	for (size_t i = 0; i < q->n; i++)
		free(q->words[i]);
	q->n = 0;
}

int
sink_query_add(struct sink_query *q, enum sink_qfield field, const char *w,
    size_t len)
{
	if (len == 0)
		return 0;
	if (q->n == SINK_QUERY_MAX)
		return -1;
	q->fields[q->n] = field;
	q->words[q->n++] = xstrndup(w, len);
	return 0;
}

int
sink_query_parse(struct sink_query *q, const char *s)
{
	while (*s != '\0') {
		enum sink_qfield field = SINK_Q_ANY;
		const char *start;

		while (*s == ' ' || *s == '\t')
			s++;
		if (*s == '\0')
			break;
		for (size_t i = 0; i < SL_ARRAY_LEN(query_prefixes); i++) {
			size_t n = strlen(query_prefixes[i].prefix);
			if (sl_strncaseeq(s, query_prefixes[i].prefix, n)) {
				field = query_prefixes[i].field;
				s += n;
				break;
			}
		}
		if (*s == '"') {
			start = ++s;
			while (*s != '\0' && *s != '"')
				s++;
		} else {
			start = s;
			while (*s != '\0' && *s != ' ' && *s != '\t')
				s++;
		}
		if (sink_query_add(q, field, start, (size_t)(s - start)) != 0)
			return -1;
		if (*s == '"')
			s++;
	}
	return 0;
}

/* 1 if needle is in hay, ASCII letters in any case. */
static int
query_contains(const char *hay, const char *needle)
{
	size_t n = strlen(needle);

	if (hay == NULL)
		return 0;
	for (; *hay != '\0'; hay++)
		if (sl_strncaseeq(hay, needle, n))
			return 1;
	return 0;
}

static int
query_field(json_t *meta, enum sink_qfield f, const char *w)
{
	size_t i;
	json_t *v;

	switch (f) {
	case SINK_Q_TO:
		json_array_foreach(json_object_get(meta, "rcpt_to"), i, v)
			if (query_contains(json_string_value(v), w))
				return 1;
		return 0;
	case SINK_Q_FROM:
		return query_contains(json_string_value(json_object_get(meta,
		    "mail_from")), w) || query_contains(json_string_value(
		    json_object_get(meta, "from")), w);
	case SINK_Q_SUBJECT:
		return query_contains(json_string_value(json_object_get(meta,
		    "subject")), w);
	case SINK_Q_ANY:
		return query_field(meta, SINK_Q_TO, w) ||
		    query_field(meta, SINK_Q_FROM, w) ||
		    query_field(meta, SINK_Q_SUBJECT, w);
	}
	return 0;
}

int
sink_query_match(const struct sink_query *q, json_t *meta)
{
	for (size_t i = 0; i < q->n; i++)
		if (!query_field(meta, q->fields[i], q->words[i]))
			return 0;
	return 1;
}
