/* SPDX-License-Identifier: MIT */
/*
 * file.c: the shaping file's parser, pure: text in, struct shaping_conf
 * out, or "file:line: message". Owns nothing after it returns but the
 * configuration it built.
 *
 * Lines: "[kind NAME]" opens a section; "key = value" sets a key of it;
 * a line starting with ';' or '#' is a comment, and so is what follows
 * " ;" (a ';' after a blank) on a key's line, as in the main file. List
 * keys (mx, domains, source) may repeat and append; any other key may be
 * given once per section. Checks that need the whole file (a rule naming
 * a site that does not exist, a site without mx or domains) run at the
 * end and name the line of the section at fault.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
#include <math.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "shaping/shaping_int.h"
#include "util/util.h"

enum { SEC_NONE, SEC_SITE, SEC_SOURCE, SEC_RULE };

struct parse {
	struct shaping_conf *c;
	const char *file;
	int line;
	int sec;		/* SEC_* of the open section */
	uint32_t seen;		/* keys set in it (bit per key) */
	char *err;
	size_t errlen;
};

static int
fail(struct parse *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int
fail(struct parse *p, const char *fmt, ...)
{
	va_list ap;
	int n = snprintf(p->err, p->errlen, "%s:%d: ", p->file, p->line);

	if (n >= 0 && (size_t)n < p->errlen) {
		va_start(ap, fmt);
		vsnprintf(p->err + n, p->errlen - n, fmt, ap);
		va_end(ap);
	}
	return -1;
}

/* ---- values ---- */

/* A count from 1 to max. */
static int
parse_count(const char *s, uint64_t max, uint64_t *out)
{
	uint64_t v;

	if (sl_parse_uint(s, &v) != 0 || v == 0 || v > max)
		return -1;
	*out = v;
	return 0;
}

/* A duration in microseconds: "30s", "5m", "2h", "1d", "30" (seconds). */
static int
parse_dur(const char *s, int64_t *out)
{
	int64_t v = sl_parse_duration(s);

	if (v <= 0 || v > 366LL * 86400)
		return -1;
	*out = v * 1000000;
	return 0;
}

/* The unit of a rate: "s", "min", "5m", "1d". */
static int
parse_unit(const char *s, int64_t *out)
{
	static const struct { const char *name; int64_t s; } words[] = {
		{ "s", 1 }, { "sec", 1 }, { "m", 60 }, { "min", 60 },
		{ "h", 3600 }, { "hour", 3600 }, { "d", 86400 }, { "day", 86400 },
	};

	for (size_t i = 0; i < SL_ARRAY_LEN(words); i++)
		if (strcmp(s, words[i].name) == 0) {
			*out = words[i].s * 1000000;
			return 0;
		}
	return isdigit((unsigned char)*s) ? parse_dur(s, out) : -1;
}

int
shaping_rate_parse(const char *s, struct shaping_rate *out)
{
	char buf[64], *slash;

	if (sl_strlcpy(buf, s, sizeof(buf)) >= sizeof(buf) ||
	    (slash = strchr(buf, '/')) == NULL)
		return -1;
	*slash = '\0';
	if (parse_count(sl_strtrim(buf), 1000000000, &out->n) != 0 ||
	    parse_unit(sl_strtrim(slash + 1), &out->per_us) != 0)
		return -1;
	return 0;
}

void
shaping_rate_format(const struct shaping_rate *r, char *buf, size_t len)
{
	static const struct { int64_t s; const char *u; } units[] = {
		{ 86400, "d" }, { 3600, "h" }, { 60, "m" }, { 1, "s" },
	};
	int64_t secs = r->per_us / 1000000;

	if (r->n == 0) {
		snprintf(buf, len, "none");
		return;
	}
	for (size_t i = 0; i < SL_ARRAY_LEN(units); i++) {
		if (secs % units[i].s != 0)
			continue;
		if (secs == units[i].s)
			snprintf(buf, len, "%llu/%s", (unsigned long long)r->n,
			    units[i].u);
		else
			snprintf(buf, len, "%llu/%lld%s",
			    (unsigned long long)r->n,
			    (long long)(secs / units[i].s), units[i].u);
		return;
	}
	snprintf(buf, len, "%llu/%llds", (unsigned long long)r->n,
	    (long long)secs);
}

int64_t
shaping_rate_interval(const struct shaping_rate *r)
{
	int64_t t;

	if (r->n == 0)
		return 0;
	t = (int64_t)(((uint64_t)r->per_us + r->n / 2) / r->n);
	return t > 0 ? t : 1;
}

/* Host names, patterns and HELO names: letters, digits, "-._" (and the
 * glob's "*?" when pattern). */
static int
name_valid(const char *s, int pattern)
{
	if (*s == '\0' || strlen(s) > 255)
		return 0;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr("-._", *s) &&
		    !(pattern && (*s == '*' || *s == '?')))
			return 0;
	return 1;
}

static void
lower(char *s)
{
	for (; *s; s++)
		*s = (char)tolower((unsigned char)*s);
}

static int
addr_parse(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, s, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		*len = sizeof(*sin);
		return 0;
	}
	if (inet_pton(AF_INET6, s, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		*len = sizeof(*sin6);
		return 0;
	}
	return -1;
}

/* "1000/d, x2 every 2d, until 200000/d" */
int
shaping_warmup_parse(const char *s, struct shaping_warmup *w, char *err,
    size_t errlen)
{
	struct shaping_rate r;
	char **items;
	size_t n = sl_split(s, &items);
	int rc = -1, grows = 0;

	memset(w, 0, sizeof(*w));
	w->factor = 1;
	if (n == 0 || shaping_rate_parse(items[0], &r) != 0) {
		snprintf(err, errlen, "'%s' does not start with a budget N/U "
		    "(1000/d)", n ? items[0] : "");
		goto out;
	}
	w->start = w->until = r.n;
	w->unit_us = r.per_us;
	for (size_t i = 1; i < n; i++) {
		char *it = items[i], *every, orig[128];

		sl_strlcpy(orig, it, sizeof(orig));

		if (strncmp(it, "until", 5) == 0 && isspace((unsigned char)it[5])) {
			if (shaping_rate_parse(it + 6, &r) != 0 ||
			    r.per_us != w->unit_us || r.n < w->start) {
				snprintf(err, errlen, "'%s' is not 'until N/U' with "
				    "the unit of the start and N at least the "
				    "start", it);
				goto out;
			}
			w->until = r.n;
			continue;
		}
		every = strstr(it, " every ");
		if ((*it != 'x' && *it != '+') || every == NULL || grows) {
			snprintf(err, errlen, "'%s' is not 'xF every D', "
			    "'+N every D' or 'until N/U'", it);
			goto out;
		}
		*every = '\0';
		if (parse_dur(sl_strtrim(every + 7), &w->every_us) != 0)
			goto bad_growth;
		if (*it == 'x') {
			char *end;
			errno = 0;
			w->factor = strtod(it + 1, &end);
			if (it[1] == '\0' || *sl_strtrim(end) != '\0' ||
			    errno != 0 || !(w->factor > 1 && w->factor <= 1000))
				goto bad_growth;
		} else if (parse_count(sl_strtrim(it + 1), 1000000000,
		    &w->add) != 0) {
			goto bad_growth;
		}
		grows = 1;
		continue;
bad_growth:
		snprintf(err, errlen, "'%s' is not 'xF every D' (F above 1) "
		    "or '+N every D'", orig);
		goto out;
	}
	if (grows && w->until == w->start) {
		snprintf(err, errlen, "a warm-up that grows needs 'until N/U' "
		    "above its start");
		goto out;
	}
	rc = 0;
out:
	sl_strv_free(items, n);
	return rc;
}

/* "3 in 10m" or "1". */
static int
threshold_parse(const char *s, uint32_t *n, int64_t *window)
{
	char buf[64], *in;
	uint64_t v;

	if (sl_strlcpy(buf, s, sizeof(buf)) >= sizeof(buf))
		return -1;
	*window = 0;
	if ((in = strstr(buf, " in ")) != NULL) {
		*in = '\0';
		if (parse_dur(sl_strtrim(in + 4), window) != 0)
			return -1;
	}
	if (parse_count(sl_strtrim(buf), SHAPING_MAX_THRESHOLD, &v) != 0 ||
	    (v > 1 && in == NULL))
		return -1;
	*n = (uint32_t)v;
	return 0;
}

/* suspend D | rate N/U for D | connections N for D | bounce | retry_in D */
static int
action_parse(const char *s, struct shaping_action *a)
{
	char buf[128], *sp, *arg, *forp;
	uint64_t v;

	memset(a, 0, sizeof(*a));
	if (sl_strlcpy(buf, s, sizeof(buf)) >= sizeof(buf))
		return -1;
	sp = buf + strcspn(buf, " \t");
	arg = sl_strtrim(sp);
	*sp = '\0';
	if (strcmp(buf, "bounce") == 0) {
		a->kind = SHAPING_ACT_BOUNCE;
		return *arg == '\0' ? 0 : -1;
	}
	if (strcmp(buf, "suspend") == 0 || strcmp(buf, "retry_in") == 0) {
		a->kind = buf[0] == 's' ? SHAPING_ACT_SUSPEND :
		    SHAPING_ACT_RETRY_IN;
		return parse_dur(arg, &a->dur_us);
	}
	if ((forp = strstr(arg, " for ")) == NULL)
		return -1;
	*forp = '\0';
	if (parse_dur(sl_strtrim(forp + 5), &a->dur_us) != 0)
		return -1;
	arg = sl_strtrim(arg);
	if (strcmp(buf, "rate") == 0) {
		a->kind = SHAPING_ACT_RATE;
		return shaping_rate_parse(arg, &a->rate);
	}
	if (strcmp(buf, "connections") == 0) {
		a->kind = SHAPING_ACT_CONNECTIONS;
		if (parse_count(arg, 100000, &v) != 0)
			return -1;
		a->connections = (int)v;
		return 0;
	}
	return -1;
}

static void
dur_format(int64_t us, char *buf, size_t len)
{
	int64_t s = us / 1000000;

	if (s % 86400 == 0)
		snprintf(buf, len, "%lldd", (long long)(s / 86400));
	else if (s % 3600 == 0)
		snprintf(buf, len, "%lldh", (long long)(s / 3600));
	else if (s % 60 == 0)
		snprintf(buf, len, "%lldm", (long long)(s / 60));
	else
		snprintf(buf, len, "%llds", (long long)s);
}

void
shaping_action_format(const struct shaping_action *a, char *buf, size_t len)
{
	char d[32], r[48];

	dur_format(a->dur_us, d, sizeof(d));
	switch (a->kind) {
	case SHAPING_ACT_SUSPEND:
		snprintf(buf, len, "suspend %s", d);
		break;
	case SHAPING_ACT_RATE:
		shaping_rate_format(&a->rate, r, sizeof(r));
		snprintf(buf, len, "rate %s for %s", r, d);
		break;
	case SHAPING_ACT_CONNECTIONS:
		snprintf(buf, len, "connections %d for %s", a->connections, d);
		break;
	case SHAPING_ACT_BOUNCE:
		snprintf(buf, len, "bounce");
		break;
	case SHAPING_ACT_RETRY_IN:
		snprintf(buf, len, "retry_in %s", d);
		break;
	default:
		snprintf(buf, len, "none");
	}
}

/* ---- sections and keys ---- */

static struct shaping_site_conf *
cur_site(struct parse *p)
{
	return &p->c->sites[p->c->nsites - 1];
}

static struct shaping_source_conf *
cur_source(struct parse *p)
{
	return &p->c->sources[p->c->nsources - 1];
}

static struct shaping_rule_conf *
cur_rule(struct parse *p)
{
	return &p->c->rules[p->c->nrules - 1];
}

static int
section_name_valid(const char *s)
{
	if (*s == '\0' || strlen(s) > 128)
		return 0;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr("-_.:", *s))
			return 0;
	return 1;
}

static int
section_open(struct parse *p, char *line)
{
	char *end = strchr(line, ']'), *kind, *name;
	struct shaping_conf *c = p->c;

	if (end == NULL || *sl_strtrim(end + 1) != '\0')
		return fail(p, "expected [site NAME], [source ADDRESS] or "
		    "[rule NAME]");
	*end = '\0';
	kind = sl_strtrim(line + 1);
	name = kind + strcspn(kind, " \t");
	if (*name != '\0')
		*name++ = '\0';
	name = sl_strtrim(name);
	p->seen = 0;
	if (strcmp(kind, "site") != 0 && strcmp(kind, "source") != 0 &&
	    strcmp(kind, "rule") != 0)
		return fail(p, "unknown section [%s] (expected site, source or "
		    "rule)", kind);
	if (!section_name_valid(name))
		return fail(p, "[%s] needs a name of letters, digits and "
		    "\"-_.:\" ('%s')", kind, name);
	if (strcmp(kind, "site") == 0) {
		if (shaping_conf_site(c, name) != NULL)
			return fail(p, "[site %s] is defined twice", name);
		c->sites = xrealloc(c->sites, (c->nsites + 1) * sizeof(*c->sites));
		memset(&c->sites[c->nsites], 0, sizeof(*c->sites));
		c->sites[c->nsites].name = xstrdup(name);
		c->sites[c->nsites++].line = p->line;
		p->sec = SEC_SITE;
	} else if (strcmp(kind, "source") == 0) {
		struct shaping_source_conf *s;
		if (shaping_conf_source(c, name) != NULL)
			return fail(p, "[source %s] is defined twice", name);
		c->sources = xrealloc(c->sources,
		    (c->nsources + 1) * sizeof(*c->sources));
		s = &c->sources[c->nsources++];
		memset(s, 0, sizeof(*s));
		s->addr = xstrdup(name);
		s->line = p->line;
		p->sec = SEC_SOURCE;
		if (addr_parse(name, &s->ss, &s->sslen) != 0)
			return fail(p, "[source %s]: not an IPv4 or IPv6 address",
			    name);
	} else {
		for (size_t i = 0; i < c->nrules; i++)
			if (strcmp(c->rules[i].name, name) == 0)
				return fail(p, "[rule %s] is defined twice", name);
		c->rules = xrealloc(c->rules, (c->nrules + 1) * sizeof(*c->rules));
		memset(&c->rules[c->nrules], 0, sizeof(*c->rules));
		c->rules[c->nrules].name = xstrdup(name);
		c->rules[c->nrules].threshold = 1;
		c->rules[c->nrules++].line = p->line;
		p->sec = SEC_RULE;
	}
	return 0;
}

/* Append the items of v to a list, each checked and lower-cased. */
static int
list_add(struct parse *p, const char *sec, const char *key, const char *v,
    char ***list, size_t *n, int pattern)
{
	char **items;
	size_t k = sl_split(v, &items);

	for (size_t i = 0; i < k; i++) {
		lower(items[i]);
		if (!name_valid(items[i], pattern)) {
			fail(p, "%s %s: '%s' is not a %s", sec, key, items[i],
			    pattern ? "host pattern" : "domain");
			sl_strv_free(items, k);
			return -1;
		}
	}
	if (k > 0) {
		*list = xrealloc(*list, (*n + k) * sizeof(**list));
		memcpy(*list + *n, items, k * sizeof(*items));
		*n += k;
	}
	free(items);
	return 0;
}

static int
site_int(struct parse *p, const char *sec, const char *key, const char *v,
    int *out)
{
	uint64_t n;

	if (parse_count(v, 100000, &n) != 0)
		return fail(p, "%s %s: '%s' is not a whole number from 1 to "
		    "100000", sec, key, v);
	*out = (int)n;
	return 0;
}

static int
site_key(struct parse *p, const char *key, char *v)
{
	struct shaping_site_conf *s = cur_site(p);
	char sec[160];

	snprintf(sec, sizeof(sec), "[site %s]", s->name);
	if (strcmp(key, "mx") == 0)
		return list_add(p, sec, key, v, &s->mx, &s->nmx, 1);
	if (strcmp(key, "domains") == 0)
		return list_add(p, sec, key, v, &s->domains, &s->ndomains, 0);
	if (strcmp(key, "source") == 0) {
		char **items;
		size_t k = sl_split(v, &items);
		for (size_t i = 0; i < k; i++) {
			struct sockaddr_storage ss;
			socklen_t len;
			int dup = 0;
			for (size_t j = 0; j < s->nsources; j++)
				dup |= strcmp(s->sources[j], items[i]) == 0;
			if (addr_parse(items[i], &ss, &len) != 0 || dup) {
				fail(p, "%s source: '%s' is %s", sec, items[i],
				    dup ? "listed twice" :
				    "not an IPv4 or IPv6 address");
				sl_strv_free(items, k);
				return -1;
			}
			s->sources = xrealloc(s->sources,
			    (s->nsources + 1) * sizeof(*s->sources));
			s->sources[s->nsources++] = items[i];
			items[i] = NULL;
		}
		sl_strv_free(items, k);
		return 0;
	}
	if (strcmp(key, "connections") == 0)
		return site_int(p, sec, key, v, &s->connections);
	if (strcmp(key, "messages_per_connection") == 0)
		return site_int(p, sec, key, v, &s->messages_per_connection);
	if (strcmp(key, "recipients_per_transaction") == 0)
		return site_int(p, sec, key, v, &s->recipients_per_transaction);
	if (strcmp(key, "rate") == 0 || strcmp(key, "connection_rate") == 0) {
		struct shaping_rate *r = key[0] == 'r' ? &s->rate :
		    &s->connection_rate;
		if (shaping_rate_parse(v, r) != 0)
			return fail(p, "%s %s: '%s' is not N/U (U: s, m, h or "
			    "d, e.g. 600/m)", sec, key, v);
		return 0;
	}
	if (strcmp(key, "source_select") == 0) {
		if (strcmp(v, "rotate") == 0)
			s->select = SHAPING_SELECT_ROTATE;
		else if (strcmp(v, "pin") == 0)
			s->select = SHAPING_SELECT_PIN;
		else
			return fail(p, "%s source_select: '%s' is not rotate or "
			    "pin", sec, v);
		return 0;
	}
	if (strcmp(key, "helo") == 0) {
		if (!name_valid(v, 0))
			return fail(p, "%s helo: '%s' is not a host name", sec, v);
		s->helo = xstrdup(v);
		return 0;
	}
	return fail(p, "%s unknown key '%s'", sec, key);
}

static int
source_key(struct parse *p, const char *key, char *v)
{
	struct shaping_source_conf *s = cur_source(p);
	char msg[256];

	if (strcmp(key, "warmup") == 0) {
		if (shaping_warmup_parse(v, &s->warmup, msg, sizeof(msg)) != 0)
			return fail(p, "[source %s] warmup: %s", s->addr, msg);
		s->has_warmup = 1;
		return 0;
	}
	if (strcmp(key, "warmup_start") == 0) {
		struct tm tm;
		char *end;
		memset(&tm, 0, sizeof(tm));
		end = strptime(v, "%Y-%m-%d", &tm);
		if (end == NULL || *end != '\0' || tm.tm_year < 70)
			return fail(p, "[source %s] warmup_start: '%s' is not a "
			    "date YYYY-MM-DD", s->addr, v);
		s->warmup_start = (int64_t)timegm(&tm);
		return 0;
	}
	return fail(p, "[source %s] unknown key '%s'", s->addr, key);
}

/*
 * glibc's regcomp() takes memory without bound for some patterns (a
 * repetition of a repetition such as "a++++", or counted repetitions
 * inside counted ones), so those are refused before it sees them:
 * returns NULL, or why the pattern is refused. Walks an ERE: escapes,
 * bracket expressions, groups and the quantifiers * + ? {n,m}.
 */
#define SHAPING_MAX_REGEX 1024
#define SHAPING_MAX_BOUND 255
#define SHAPING_MAX_GROUPS 64

static const char *
regex_refused(const char *re)
{
	int bound[SHAPING_MAX_GROUPS + 1] = { 0 }, depth = 0;
	int prev_quant = 0, prev_group = 0, prev_group_bound = 0;

	if (strlen(re) > SHAPING_MAX_REGEX)
		return "longer than 1024 bytes";
	for (const char *p = re; *p; p++) {
		int quant = 0, group = 0;

		switch (*p) {
		case '\\':
			if (p[1] != '\0')
				p++;
			break;
		case '[':
			p++;
			if (*p == '^')
				p++;
			if (*p == ']')
				p++;
			while (*p && *p != ']') {
				if (*p == '[' && (p[1] == ':' || p[1] == '=' ||
				    p[1] == '.')) {
					const char *e = strchr(p + 2, p[1]);
					if (e == NULL || e[1] != ']')
						return NULL;	/* regcomp says */
					p = e + 1;
				}
				p++;
			}
			if (*p == '\0')
				return NULL;
			break;
		case '(':
			if (depth == SHAPING_MAX_GROUPS)
				return "more than 64 groups inside each other";
			bound[++depth] = 0;
			break;
		case ')':
			if (depth == 0)
				break;
			prev_group_bound = bound[depth--];
			bound[depth] |= prev_group_bound;
			group = 1;
			break;
		case '{': {
			char *end;
			long lo, hi;
			if (!isdigit((unsigned char)p[1]))
				break;
			lo = hi = strtol(p + 1, &end, 10);
			if (*end == ',')
				hi = isdigit((unsigned char)end[1]) ?
				    strtol(end + 1, &end, 10) : (end++, lo);
			if (*end != '}')
				break;
			if (lo > SHAPING_MAX_BOUND || hi > SHAPING_MAX_BOUND)
				return "a count {n,m} above 255";
			if (prev_group && prev_group_bound)
				return "a counted repetition of a group that "
				    "holds one";
			bound[depth] = 1;
			p = end;
			quant = 1;
			break;
		}
		case '*':
		case '+':
		case '?':
			quant = 1;
			break;
		}
		if (quant && prev_quant)
			return "a repetition of a repetition";
		prev_quant = quant;
		prev_group = group;
	}
	return NULL;
}

static int
rule_key(struct parse *p, const char *key, char *v)
{
	struct shaping_rule_conf *r = cur_rule(p);
	char msg[256];
	int rc;

	if (strcmp(key, "site") == 0) {
		if (strcmp(v, "*") != 0 && !section_name_valid(v))
			return fail(p, "[rule %s] site: '%s' is not a site name "
			    "or *", r->name, v);
		r->site = strcmp(v, "*") == 0 ? NULL : xstrdup(v);
		return 0;
	}
	if (strcmp(key, "match") == 0) {
		const char *why;
		if (*v == '\0')
			return fail(p, "[rule %s] match: empty", r->name);
		if ((why = regex_refused(v)) != NULL)
			return fail(p, "[rule %s] match: '%.64s': %s", r->name, v,
			    why);
		rc = regcomp(&r->re, v, REG_EXTENDED | REG_NOSUB);
		if (rc != 0) {
			regerror(rc, &r->re, msg, sizeof(msg));
			return fail(p, "[rule %s] match: '%s': %s", r->name, v,
			    msg);
		}
		r->has_re = 1;
		r->match = xstrdup(v);
		/* most rules are for 4xx or 5xx: 250s skip their regex */
		if (v[0] == '^' && v[1] >= '2' && v[1] <= '5' &&
		    strchr(v, '|') == NULL)
			r->lead = v[1];
		return 0;
	}
	if (strcmp(key, "threshold") == 0) {
		if (threshold_parse(v, &r->threshold, &r->window_us) != 0)
			return fail(p, "[rule %s] threshold: '%s' is not 'N in "
			    "D' (3 in 10m; N up to %d) or 1", r->name, v,
			    SHAPING_MAX_THRESHOLD);
		return 0;
	}
	if (strcmp(key, "action") == 0) {
		if (action_parse(v, &r->action) != 0)
			return fail(p, "[rule %s] action: '%s' is not suspend D, "
			    "rate N/U for D, connections N for D, bounce or "
			    "retry_in D", r->name, v);
		return 0;
	}
	return fail(p, "[rule %s] unknown key '%s'", r->name, key);
}

/* Keys that may be given once per section, by bit. */
static int
key_once(struct parse *p, const char *key)
{
	static const char *const keys[] = { "connections",
		"messages_per_connection", "recipients_per_transaction", "rate",
		"connection_rate", "source_select", "helo", "warmup",
		"warmup_start", "site", "match", "threshold", "action" };

	for (size_t i = 0; i < SL_ARRAY_LEN(keys); i++) {
		if (strcmp(keys[i], key) != 0)
			continue;
		if (p->seen & (1u << i))
			return fail(p, "'%s' is given twice in this section", key);
		p->seen |= 1u << i;
	}
	return 0;
}

/* One line, without its line end; 0 or -1. */
static int
parse_line(struct parse *p, char *line)
{
	char *s = sl_strtrim(line), *eq, *key, *v;

	if (*s == '\0' || *s == ';' || *s == '#')
		return 0;
	if (*s == '[')
		return section_open(p, s);
	for (char *q = s + 1; *q; q++)
		if (*q == ';' && (q[-1] == ' ' || q[-1] == '\t')) {
			*q = '\0';
			break;
		}
	if ((eq = strchr(s, '=')) == NULL)
		return fail(p, "expected key = value");
	*eq = '\0';
	key = sl_strtrim(s);
	v = sl_strtrim(eq + 1);
	if (p->sec == SEC_NONE)
		return fail(p, "'%s' outside a section ([site NAME], [source "
		    "ADDRESS] or [rule NAME])", key);
	if (key_once(p, key) != 0)
		return -1;
	switch (p->sec) {
	case SEC_SITE:
		return site_key(p, key, v);
	case SEC_SOURCE:
		return source_key(p, key, v);
	default:
		return rule_key(p, key, v);
	}
}

/* What only the whole file can tell. */
static int
check_all(struct parse *p)
{
	struct shaping_conf *c = p->c;

	for (size_t i = 0; i < c->nsites; i++) {
		const struct shaping_site_conf *s = &c->sites[i];
		p->line = s->line;
		if (s->nmx == 0 && s->ndomains == 0)
			return fail(p, "[site %s] needs mx or domains", s->name);
	}
	for (size_t i = 0; i < c->nrules; i++) {
		const struct shaping_rule_conf *r = &c->rules[i];
		p->line = r->line;
		if (!r->has_re)
			return fail(p, "[rule %s] needs match", r->name);
		if (r->action.kind == 0)
			return fail(p, "[rule %s] needs action", r->name);
		if (r->site != NULL && shaping_conf_site(c, r->site) == NULL)
			return fail(p, "[rule %s] site: no [site %s]", r->name,
			    r->site);
	}
	return 0;
}

struct shaping_conf *
shaping_conf_parse(const char *file, const char *text, size_t len, char *err,
    size_t errlen)
{
	struct parse p = { .file = file, .err = err, .errlen = errlen };
	char line[SHAPING_MAX_LINE + 1];
	size_t at = 0;

	p.c = xcalloc(1, sizeof(*p.c));
	p.c->file = xstrdup(file);
	while (at < len) {
		const char *nl = memchr(text + at, '\n', len - at);
		size_t n = nl ? (size_t)(nl - (text + at)) : len - at;

		p.line++;
		if (n > SHAPING_MAX_LINE) {
			fail(&p, "line longer than %d bytes", SHAPING_MAX_LINE);
			return shaping_conf_free(p.c);
		}
		if (memchr(text + at, '\0', n) != NULL) {
			fail(&p, "NUL byte in the line");
			return shaping_conf_free(p.c);
		}
		memcpy(line, text + at, n);
		line[n] = '\0';
		at += n + (nl != NULL);
		if (parse_line(&p, line) != 0)
			return shaping_conf_free(p.c);
	}
	if (check_all(&p) != 0)
		return shaping_conf_free(p.c);
	return p.c;
}

struct shaping_conf *
shaping_conf_load(const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	char *text = NULL;
	size_t len = 0, cap = 0, n;
	struct shaping_conf *c;

	if (f == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	do {
		if (cap - len < 4096)
			text = xrealloc(text, cap = cap ? cap * 2 : 8192);
		n = fread(text + len, 1, cap - len, f);
		len += n;
	} while (n > 0 && len < 16 * 1024 * 1024);
	if (ferror(f) || len >= 16 * 1024 * 1024) {
		snprintf(err, errlen, "%s: %s", path, ferror(f) ?
		    strerror(errno) : "larger than 16 MB");
		fclose(f);
		free(text);
		return NULL;
	}
	fclose(f);
	c = shaping_conf_parse(path, text, len, err, errlen);
	free(text);
	return c;
}

struct shaping_conf *
shaping_conf_free(struct shaping_conf *c)
{
	if (c == NULL)
		return NULL;
	for (size_t i = 0; i < c->nsites; i++) {
		struct shaping_site_conf *s = &c->sites[i];
		free(s->name);
		sl_strv_free(s->mx, s->nmx);
		sl_strv_free(s->domains, s->ndomains);
		sl_strv_free(s->sources, s->nsources);
		free(s->helo);
	}
	for (size_t i = 0; i < c->nsources; i++)
		free(c->sources[i].addr);
	for (size_t i = 0; i < c->nrules; i++) {
		struct shaping_rule_conf *r = &c->rules[i];
		free(r->name);
		free(r->site);
		free(r->match);
		if (r->has_re)
			regfree(&r->re);
	}
	free(c->sites);
	free(c->sources);
	free(c->rules);
	free(c->file);
	free(c);
	return NULL;
}

const struct shaping_site_conf *
shaping_conf_site(const struct shaping_conf *c, const char *name)
{
	for (size_t i = 0; i < c->nsites; i++)
		if (strcmp(c->sites[i].name, name) == 0)
			return &c->sites[i];
	return NULL;
}

const struct shaping_source_conf *
shaping_conf_source(const struct shaping_conf *c, const char *addr)
{
	for (size_t i = 0; i < c->nsources; i++)
		if (strcmp(c->sources[i].addr, addr) == 0)
			return &c->sources[i];
	return NULL;
}

const struct shaping_site_conf *
shaping_conf_match(const struct shaping_conf *c, const char *domain,
    const char *const *hosts, size_t nhosts)
{
	for (size_t i = 0; domain != NULL && i < c->nsites; i++)
		for (size_t k = 0; k < c->sites[i].ndomains; k++)
			if (sl_strcaseeq(c->sites[i].domains[k], domain))
				return &c->sites[i];
	for (size_t i = 0; i < c->nsites; i++)
		for (size_t k = 0; k < c->sites[i].nmx; k++)
			for (size_t h = 0; h < nhosts; h++)
				if (fnmatch(c->sites[i].mx[k], hosts[h],
				    FNM_CASEFOLD) == 0)
					return &c->sites[i];
	return NULL;
}

int
shaping_rule_matches(const struct shaping_rule_conf *r, const char *site,
    const char *reply)
{
	if (r->site != NULL && strcmp(r->site, site) != 0)
		return 0;
	if (r->lead != 0 && reply[0] != r->lead)
		return 0;
	return regexec(&r->re, reply, 0, NULL, 0) == 0;
}
