/* SPDX-License-Identifier: MIT */
/*
 * rules.c: the failure rules of `sluice sink`: one rule per line, parsed
 * into struct sink_rules, and the glob that matches addresses. Pure: no
 * I/O but reading the rules file, no randomness (sink.c draws).
 *
 * Grammar (docs/SINK.md has examples); words are separated by blanks,
 * "#" starts a comment, REPLY is [CODE] [X.Y.Z] [text]:
 *   rcpt|mail|helo PATTERN CODE [X.Y.Z] [text]
 *   rate 4xx|5xx|421|CODE P at STAGE [X.Y.Z] [text]
 *   greeting-421-after N
 *   drop-in-data P
 *   delay DURATION                 (200ms, 1.5s; a bare number is ms)
 *   max-connections N
 *   limit messages|recipients N/s|min|h [per-ip|total] [CODE [X.Y.Z] [text]]
 * STAGE is greeting (connect), helo, mail, rcpt, data or data-end (eom).
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sink/sink.h"
#include "util/util.h"

#define RULES_MAXWORDS 32

static const char *const stage_names[SINK_NSTAGES] = {
	"greeting", "helo", "mail", "rcpt", "data", "data-end",
};

/* One line cut into words; rest[i] is the line from word i to its end. */
struct words {
	int n;
	char *w[RULES_MAXWORDS];
	const char *rest[RULES_MAXWORDS];
	char buf[1024];
};

struct sink_rules *
sink_rules_new(void)
{
	return xcalloc(1, sizeof(struct sink_rules));
}

struct sink_rules *
sink_rules_free(struct sink_rules *r)
{
	if (r == NULL)
		return NULL;
	for (size_t i = 0; i < r->nmatches; i++) {
		free(r->matches[i].pattern);
		free(r->matches[i].reply);
	}
	for (size_t i = 0; i < r->nrates; i++)
		free(r->rates[i].reply);
	for (size_t i = 0; i < r->nlimits; i++)
		free(r->limits[i].reply);
	for (size_t i = 0; i < r->nlines; i++)
		free(r->lines[i]);
	free(r->lines);
	free(r->matches);
	free(r->rates);
	free(r->limits);
	free(r);
	return NULL;
}

int
sink_stage_parse(const char *name)
{
	if (sl_strcaseeq(name, "connect"))
		return SINK_AT_CONNECT;
	if (sl_strcaseeq(name, "eom") || sl_strcaseeq(name, "data-end") ||
	    sl_strcaseeq(name, "dot"))
		return SINK_AT_EOM;
	for (int i = 0; i < SINK_NSTAGES; i++)
		if (sl_strcaseeq(name, stage_names[i]))
			return i;
	return -1;
}

const char *
sink_stage_name(int stage)
{
	return stage >= 0 && stage < SINK_NSTAGES ? stage_names[stage] : "?";
}

/* Cut line into words; -1 if it is too long or has too many words. */
static int
words_split(struct words *w, const char *line, char *err, size_t errlen)
{
	const char *p = line;
	char *o = w->buf;

	w->n = 0;
	if (strlen(line) >= sizeof(w->buf)) {
		snprintf(err, errlen, "line longer than %zu bytes",
		    sizeof(w->buf) - 1);
		return -1;
	}
	for (;;) {
		while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
			p++;
		if (*p == '\0' || *p == '#')
			break;
		if (w->n == RULES_MAXWORDS) {
			snprintf(err, errlen, "more than %d words",
			    RULES_MAXWORDS);
			return -1;
		}
		w->rest[w->n] = p;
		w->w[w->n++] = o;
		while (*p && *p != ' ' && *p != '\t' && *p != '\r' && *p != '\n')
			*o++ = *p++;
		*o++ = '\0';
	}
	return 0;
}

/* "0.05" or "5%" into [0, 1]. */
static int
parse_prob(const char *s, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno != 0 || end == s)
		return -1;
	if (*end == '%' && end[1] == '\0')
		v /= 100;
	else if (*end != '\0')
		return -1;
	if (!(v >= 0 && v <= 1))
		return -1;
	*out = v;
	return 0;
}

/* "200ms", "1.5s", "200" (ms) into milliseconds. */
static int
parse_ms(const char *s, unsigned *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno != 0 || end == s || !(v >= 0))
		return -1;
	if (strcmp(end, "s") == 0)
		v *= 1000;
	else if (strcmp(end, "ms") != 0 && *end != '\0')
		return -1;
	if (v > 600000)
		return -1;
	*out = (unsigned)(v + 0.5);
	return 0;
}

/* An enhanced status code "4.7.1" whose class matches code. */
static int
enh_valid(const char *s, int code)
{
	int a, b, c, n = 0;

	if (sscanf(s, "%1d.%3d.%3d%n", &a, &b, &c, &n) != 3 ||
	    s[n] != '\0')
		return 0;
	return a == code / 100 && b >= 0 && c >= 0;
}

/*
 * The reply of a rule from words[i..]: [X.Y.Z] [text] after a code already
 * known. Fills a new string into *reply.
 */
static char *
reply_build(int code, const struct words *w, int i, int subject,
    const char *deftext)
{
	char enh[16];
	const char *text = deftext;

	snprintf(enh, sizeof(enh), "%d.%d.0", code / 100, subject);
	if (i < w->n && enh_valid(w->w[i], code)) {
		sl_strlcpy(enh, w->w[i], sizeof(enh));
		i++;
	}
	if (i < w->n)
		text = w->rest[i];
	char *r = xasprintf("%d %s %s", code, enh, text);
	/* the rest of the line may carry a comment or a line end */
	char *hash = strstr(r, " #");
	if (hash != NULL)
		*hash = '\0';
	sl_strtrim(r);
	return r;
}

static int
parse_code(const char *s, int *code)
{
	uint64_t v;

	if (strlen(s) != 3 || sl_parse_uint(s, &v) != 0 || v < 400 || v > 599)
		return -1;
	*code = (int)v;
	return 0;
}

static int
rule_match(struct sink_rules *r, int stage, const struct words *w, char *err,
    size_t errlen)
{
	struct sink_match *m;
	int code;

	if (w->n < 3) {
		snprintf(err, errlen, "%s: expected PATTERN CODE [X.Y.Z] "
		    "[text]", w->w[0]);
		return -1;
	}
	if (parse_code(w->w[2], &code) != 0) {
		snprintf(err, errlen, "%s: '%s' is not a reply code 400-599",
		    w->w[0], w->w[2]);
		return -1;
	}
	if (w->n > 3 && isdigit((unsigned char)w->w[3][0]) &&
	    strchr(w->w[3], '.') && !enh_valid(w->w[3], code)) {
		snprintf(err, errlen, "%s: '%s' is not an enhanced status "
		    "code of class %d", w->w[0], w->w[3], code / 100);
		return -1;
	}
	r->matches = xrealloc(r->matches, (r->nmatches + 1) * sizeof(*m));
	m = &r->matches[r->nmatches++];
	m->stage = stage;
	m->pattern = xstrdup(w->w[1]);
	m->code = code;
	m->reply = reply_build(code, w, 3, 0, code < 500 ?
	    "Deferred by sink rule" : "Rejected by sink rule");
	return 0;
}

static int
rule_rate(struct sink_rules *r, const struct words *w, char *err,
    size_t errlen)
{
	struct sink_rate *rt;
	const char *text;
	int code, stage;
	double p;

	if (w->n < 5 || strcmp(w->w[3], "at") != 0) {
		snprintf(err, errlen, "rate: expected 4xx|5xx|421|CODE "
		    "PROBABILITY at STAGE [X.Y.Z] [text]");
		return -1;
	}
	if (strcmp(w->w[1], "4xx") == 0) {
		code = 451;
		text = "Injected temporary failure";
	} else if (strcmp(w->w[1], "5xx") == 0) {
		code = 554;
		text = "Injected permanent failure";
	} else if (parse_code(w->w[1], &code) == 0) {
		text = code == 421 ? "Injected failure, closing connection" :
		    code < 500 ? "Injected temporary failure" :
		    "Injected permanent failure";
	} else {
		snprintf(err, errlen, "rate: '%s' is not 4xx, 5xx, 421 or a "
		    "reply code 400-599", w->w[1]);
		return -1;
	}
	if (parse_prob(w->w[2], &p) != 0) {
		snprintf(err, errlen, "rate: '%s' is not a probability "
		    "between 0 and 1", w->w[2]);
		return -1;
	}
	if ((stage = sink_stage_parse(w->w[4])) < 0) {
		snprintf(err, errlen, "rate: '%s' is not a stage (greeting, "
		    "helo, mail, rcpt, data, data-end)", w->w[4]);
		return -1;
	}
	/* before the greeting only 421 (close) and 554 make sense */
	if (stage == SINK_AT_CONNECT && code < 500 && code != 421) {
		code = 421;
		text = "Injected failure, closing connection";
	}
	r->rates = xrealloc(r->rates, (r->nrates + 1) * sizeof(*rt));
	rt = &r->rates[r->nrates++];
	rt->stage = stage;
	rt->p = p;
	rt->code = code;
	/* X.3.0: "other or undefined mail system status" (RFC 3463) */
	rt->reply = reply_build(code, w, 5, 3, text);
	return 0;
}

static int
rule_limit(struct sink_rules *r, const struct words *w, char *err,
    size_t errlen)
{
	struct sink_limit *l;
	char *slash;
	uint64_t n;
	int64_t win;
	int i = 3, per_ip = 1, code = 421;

	if (w->n < 3) {
		snprintf(err, errlen, "limit: expected messages|recipients "
		    "N/min [per-ip|total] [CODE [X.Y.Z] [text]]");
		return -1;
	}
	if (strcmp(w->w[1], "messages") != 0 &&
	    strcmp(w->w[1], "recipients") != 0) {
		snprintf(err, errlen, "limit: '%s' is not messages or "
		    "recipients", w->w[1]);
		return -1;
	}
	if ((slash = strchr(w->w[2], '/')) == NULL) {
		snprintf(err, errlen, "limit: '%s' is not N/s, N/min or N/h",
		    w->w[2]);
		return -1;
	}
	*slash++ = '\0';	/* the words are ours to cut */
	if (strcmp(slash, "s") == 0 || strcmp(slash, "sec") == 0)
		win = 1000;
	else if (strcmp(slash, "min") == 0 || strcmp(slash, "m") == 0)
		win = 60000;
	else if (strcmp(slash, "h") == 0 || strcmp(slash, "hour") == 0)
		win = 3600000;
	else {
		snprintf(err, errlen, "limit: '/%s' is not /s, /min or /h",
		    slash);
		return -1;
	}
	if (sl_parse_uint(w->w[2], &n) != 0 || n == 0) {
		snprintf(err, errlen, "limit: '%s' is not a count above 0",
		    w->w[2]);
		return -1;
	}
	if (i < w->n && (strcmp(w->w[i], "per-ip") == 0 ||
	    strcmp(w->w[i], "total") == 0)) {
		per_ip = strcmp(w->w[i], "per-ip") == 0;
		i++;
	}
	if (i < w->n && parse_code(w->w[i], &code) != 0) {
		snprintf(err, errlen, "limit: '%s' is not per-ip, total or a "
		    "reply code 400-599", w->w[i]);
		return -1;
	}
	r->limits = xrealloc(r->limits, (r->nlimits + 1) * sizeof(*l));
	l = &r->limits[r->nlimits++];
	l->what = strcmp(w->w[1], "messages") == 0 ? SINK_LIMIT_MESSAGES :
	    SINK_LIMIT_RECIPIENTS;
	l->n = n;
	l->window_ms = win;
	l->per_ip = per_ip;
	l->code = code;
	if (i < w->n)
		l->reply = reply_build(code, w, i + 1, 7, "Rate limit exceeded, "
		    "try again later");
	else
		l->reply = xstrdup("421 4.7.0 Rate limit exceeded, try again "
		    "later");
	return 0;
}

/* A rule of one word and one value. */
static int
rule_setting(struct sink_rules *r, const struct words *w, char *err,
    size_t errlen)
{
	const char *k = w->w[0];
	uint64_t n;

	if (w->n != 2) {
		snprintf(err, errlen, "%s: expected one value", k);
		return -1;
	}
	if (strcmp(k, "delay") == 0) {
		if (parse_ms(w->w[1], &r->delay_ms) == 0)
			return 0;
		snprintf(err, errlen, "delay: '%s' is not a duration such as "
		    "200ms or 1.5s (at most 600s)", w->w[1]);
		return -1;
	}
	if (strcmp(k, "drop-in-data") == 0) {
		if (parse_prob(w->w[1], &r->drop_in_data) == 0)
			return 0;
		snprintf(err, errlen, "drop-in-data: '%s' is not a probability "
		    "between 0 and 1", w->w[1]);
		return -1;
	}
	if (sl_parse_uint(w->w[1], &n) != 0 || n == 0) {
		snprintf(err, errlen, "%s: '%s' is not a count above 0", k,
		    w->w[1]);
		return -1;
	}
	if (strcmp(k, "max-connections") == 0)
		r->max_connections = n;
	else
		r->greeting_421_after = n;
	return 0;
}

/* Keep the words of a rule that was added, for the inbox page. */
static void
rules_keep_line(struct sink_rules *r, const struct words *w)
{
	size_t len = 0;
	char *s;

	for (int i = 0; i < w->n; i++)
		len += strlen(w->w[i]) + 1;
	s = xmalloc(len + 1);
	s[0] = '\0';
	for (int i = 0; i < w->n; i++) {
		if (i > 0)
			strcat(s, " ");
		strcat(s, w->w[i]);
	}
	r->lines = xrealloc(r->lines, (r->nlines + 1) * sizeof(*r->lines));
	r->lines[r->nlines++] = s;
}

static int rules_add_words(struct sink_rules *r, const struct words *w,
    char *err, size_t errlen);

int
sink_rules_add(struct sink_rules *r, const char *line, char *err,
    size_t errlen)
{
	struct words w;

	if (words_split(&w, line, err, errlen) != 0)
		return -1;
	if (w.n == 0)
		return 0;
	if (rules_add_words(r, &w, err, errlen) != 0)
		return -1;
	rules_keep_line(r, &w);
	return 0;
}

static int
rules_add_words(struct sink_rules *r, const struct words *w, char *err,
    size_t errlen)
{
	const char *k = w->w[0];

	if (strcmp(k, "rcpt") == 0)
		return rule_match(r, SINK_AT_RCPT, w, err, errlen);
	if (strcmp(k, "mail") == 0)
		return rule_match(r, SINK_AT_MAIL, w, err, errlen);
	if (strcmp(k, "helo") == 0)
		return rule_match(r, SINK_AT_HELO, w, err, errlen);
	if (strcmp(k, "rate") == 0)
		return rule_rate(r, w, err, errlen);
	if (strcmp(k, "limit") == 0)
		return rule_limit(r, w, err, errlen);
	if (strcmp(k, "delay") == 0 || strcmp(k, "drop-in-data") == 0 ||
	    strcmp(k, "max-connections") == 0 ||
	    strcmp(k, "greeting-421-after") == 0)
		return rule_setting(r, w, err, errlen);
	snprintf(err, errlen, "unknown rule '%s' (rcpt, mail, helo, rate, "
	    "limit, delay, drop-in-data, max-connections, "
	    "greeting-421-after)", k);
	return -1;
}

int
sink_rules_load(struct sink_rules *r, const char *path, char *err,
    size_t errlen)
{
	FILE *f = fopen(path, "r");
	char line[2048], msg[512];
	int lineno = 0, rc = 0;

	if (f == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		lineno++;
		if (strchr(line, '\n') == NULL && !feof(f)) {
			snprintf(err, errlen, "%s:%d: line too long", path,
			    lineno);
			rc = -1;
			break;
		}
		if (sink_rules_add(r, line, msg, sizeof(msg)) != 0) {
			snprintf(err, errlen, "%s:%d: %s", path, lineno, msg);
			rc = -1;
			break;
		}
	}
	if (rc == 0 && ferror(f)) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		rc = -1;
	}
	fclose(f);
	return rc;
}

int
sink_glob(const char *p, const char *s)
{
	const char *star = NULL, *mark = NULL;

	/* the classic two-pointer glob: backtrack to the last star only */
	while (*s) {
		if (*p == '*') {
			star = p++;
			mark = s;
		} else if (*p == '?' || (*p && tolower((unsigned char)*p) ==
		    tolower((unsigned char)*s))) {
			p++;
			s++;
		} else if (star != NULL) {
			p = star + 1;
			s = ++mark;
		} else {
			return 0;
		}
	}
	while (*p == '*')
		p++;
	return *p == '\0';
}

const struct sink_match *
sink_rules_match(const struct sink_rules *r, int stage, const char *arg)
{
	for (size_t i = 0; i < r->nmatches; i++)
		if (r->matches[i].stage == stage &&
		    sink_glob(r->matches[i].pattern, arg ? arg : ""))
			return &r->matches[i];
	return NULL;
}
