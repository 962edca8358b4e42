/* SPDX-License-Identifier: MIT */
/*
 * conf.c: read the INI file with inih, check each value against its row of
 * settings.def, derive the parsed forms (addresses, networks, domains).
 *
 * inih does not tell a handler its line, so the file is read through our own
 * reader (conf_reader) that counts lines; it also catches an unknown section
 * header even when the section has no keys.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/un.h>
#include <string.h>
#include <unistd.h>

#include <ini.h>

#include "conf/conf.h"
#include "dkim/dkim.h"
#include "util/util.h"

enum conf_type { T_STR, T_LIST, T_INT, T_SIZE, T_DURATION, T_BOOL, T_MSEC };

struct conf_row {
	const char *section;
	const char *key;
	enum conf_type type;
	const char *def;
	int64_t min, max;
	size_t off;
	int reloadable;
};

static const struct conf_row conf_rows[] = {
#define SETTING(sec, k, type, def, mn, mx, field, reload) \
	{ #sec, #k, T_##type, def, mn, mx, offsetof(struct sl_conf, field), reload },
#include "conf/settings.def"
#undef SETTING
};

static int conf_backend_valid(const char *key, const char *value,
    char *msg, size_t msglen);
static int conf_mailbox_valid(const char *key, const char *value,
    char *msg, size_t msglen);
static int conf_tls_policy_valid(const char *key, const char *value,
    char *msg, size_t msglen);

/* Sections whose keys are free-form (domains, names, addresses). */
static const struct conf_free_section {
	const char *name;
	size_t kv, n;		/* offsets of the array and its count */
	int (*valid)(const char *key, const char *value, char *msg,
	    size_t msglen);
	int lower;		/* keys are case-insensitive: kept lower-case */
} conf_free_sections[] = {
	{ "routes", offsetof(struct sl_conf, routes),
	  offsetof(struct sl_conf, nroutes), NULL, 0 },
	{ "backends", offsetof(struct sl_conf, backends),
	  offsetof(struct sl_conf, nbackends), conf_backend_valid, 0 },
	{ "mailboxes", offsetof(struct sl_conf, mailboxes),
	  offsetof(struct sl_conf, nmailboxes), conf_mailbox_valid, 1 },
	{ "tls_policy", offsetof(struct sl_conf, tls_policy),
	  offsetof(struct sl_conf, ntls_policy), conf_tls_policy_valid, 1 },
};

struct conf_parse {
	struct sl_conf *c;
	const char *file;
	FILE *fp;
	int line;
	char *err;
	size_t errlen;
	int failed;
	const char *last_key;	/* for LIST continuation lines */
};

static int
conf_fail(struct conf_parse *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int
conf_fail(struct conf_parse *p, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (p->failed)
		return 0;
	p->failed = 1;
	if (p->line == 0)	/* a -o override has no line */
		n = snprintf(p->err, p->errlen, "-o %s: ", p->file);
	else
		n = snprintf(p->err, p->errlen, "%s:%d: ", p->file, p->line);
	if (n < 0 || (size_t)n >= p->errlen)
		return 0;
	va_start(ap, fmt);
	vsnprintf(p->err + n, p->errlen - n, fmt, ap);
	va_end(ap);
	return 0;
}

static int
conf_section_known(const char *name)
{
	for (size_t i = 0; i < SL_ARRAY_LEN(conf_rows); i++)
		if (strcmp(conf_rows[i].section, name) == 0)
			return 1;
	for (size_t i = 0; i < SL_ARRAY_LEN(conf_free_sections); i++)
		if (strcmp(conf_free_sections[i].name, name) == 0)
			return 1;
	return 0;
}

/* Append key = value to a free section's array. */
static void
conf_kv_add(struct sl_conf *c, const struct conf_free_section *fs,
    const char *key, const char *value, int line)
{
	struct conf_kv **kv = (struct conf_kv **)((char *)c + fs->kv);
	size_t *n = (size_t *)((char *)c + fs->n);
	char *k = xstrdup(key);

	if (fs->lower)
		for (char *p = k; *p; p++)
			*p = (char)tolower((unsigned char)*p);
	*kv = xrealloc(*kv, (*n + 1) * sizeof(**kv));
	(*kv)[*n].key = k;
	(*kv)[*n].value = xstrdup(value);
	(*kv)[*n].line = line;
	(*n)++;
}

static const struct conf_row *
conf_row_find(const char *section, const char *key)
{
	for (size_t i = 0; i < SL_ARRAY_LEN(conf_rows); i++)
		if (strcmp(conf_rows[i].section, section) == 0 &&
		    strcmp(conf_rows[i].key, key) == 0)
			return &conf_rows[i];
	return NULL;
}

static int
conf_parse_bool(const char *v)
{
	static const char *yes[] = { "yes", "true", "on", "1" };
	static const char *no[] = { "no", "false", "off", "0" };

	for (size_t i = 0; i < SL_ARRAY_LEN(yes); i++) {
		if (sl_strcaseeq(v, yes[i]))
			return 1;
		if (sl_strcaseeq(v, no[i]))
			return 0;
	}
	return -1;
}

/* "250ms", "2s", "1m", or a bare number of ms; -1 on error. */
static int64_t
conf_parse_msec(const char *v)
{
	size_t n = strlen(v);
	char *end;
	long long ms;

	if (n > 2 && strcmp(v + n - 2, "ms") == 0) {
		errno = 0;
		ms = strtoll(v, &end, 10);
		if (!isdigit((unsigned char)*v) || end != v + n - 2 || errno)
			return -1;
		return ms;
	}
	if (n > 0 && isdigit((unsigned char)v[n - 1])) {
		errno = 0;
		ms = strtoll(v, &end, 10);
		if (!isdigit((unsigned char)*v) || *end != '\0' || errno)
			return -1;
		return ms;
	}
	ms = sl_parse_duration(v);
	return ms < 0 || ms > INT64_MAX / 1000 ? -1 : ms * 1000;
}

/* Set one row from its text; returns 0, or -1 with a message in msg. */
static int
conf_set(struct sl_conf *c, const struct conf_row *r, const char *v,
    int append, char *msg, size_t msglen)
{
	char *base = (char *)c + r->off;
	int64_t n;
	char *end;

	switch (r->type) {
	case T_STR:
		free(*(char **)base);
		*(char **)base = xstrdup(v);
		return 0;
	case T_LIST: {
		char *old = *(char **)base;
		if (append && old != NULL && *old != '\0' && *v != '\0')
			*(char **)base = xasprintf("%s, %s", old, v);
		else
			*(char **)base = xstrdup(v);
		free(old);
		return 0;
	}
	case T_INT:
		errno = 0;
		n = strtoll(v, &end, 10);
		if (*v == '\0' || *end != '\0' || errno != 0) {
			snprintf(msg, msglen, "'%s' is not a whole number", v);
			return -1;
		}
		break;
	case T_SIZE:
		if ((n = sl_parse_size(v)) < 0) {
			snprintf(msg, msglen,
			    "'%s' is not a size (a number with K, M or G)", v);
			return -1;
		}
		break;
	case T_DURATION:
		if ((n = sl_parse_duration(v)) < 0) {
			snprintf(msg, msglen,
			    "'%s' is not a duration (a number with s, m, h or d)",
			    v);
			return -1;
		}
		break;
	case T_MSEC:
		if ((n = conf_parse_msec(v)) < 0) {
			snprintf(msg, msglen, "'%s' is not a duration in "
			    "milliseconds (250ms, 2s)", v);
			return -1;
		}
		break;
	case T_BOOL:
		if ((n = conf_parse_bool(v)) < 0) {
			snprintf(msg, msglen, "'%s' is not yes or no", v);
			return -1;
		}
		break;
	default:
		SL_PANIC("bad setting type %d", r->type);
	}
	if (r->type != T_BOOL && n < r->min) {
		snprintf(msg, msglen, "%s is below the minimum %lld", v,
		    (long long)r->min);
		return -1;
	}
	if (r->type != T_BOOL && r->max > 0 && n > r->max) {
		snprintf(msg, msglen, "%s is above the maximum %lld", v,
		    (long long)r->max);
		return -1;
	}
	*(int64_t *)base = n;
	return 0;
}

static int conf_domain_valid(const char *d);

/* The checks and derived forms of one row that need more than its type. */
static int conf_derive(struct sl_conf *c, const struct conf_row *r,
    char *msg, size_t msglen);

/* [tls_policy] domain, .domain or * = none|may|encrypt|verify */
static int
conf_tls_policy_valid(const char *key, const char *value, char *msg,
    size_t msglen)
{
	if (conf_tls_level_parse(value) < 0) {
		snprintf(msg, msglen, "'%s' is not none, may, encrypt or verify",
		    value);
		return -1;
	}
	if (strcmp(key, "*") != 0 &&
	    !conf_domain_valid(key[0] == '.' ? key + 1 : key)) {
		snprintf(msg, msglen, "'%s' is not a domain, .domain or *", key);
		return -1;
	}
	return 0;
}

int
conf_tls_level_parse(const char *s)
{
	static const char *const names[] = { "none", "may", "encrypt",
		"verify" };

	for (size_t i = 0; i < SL_ARRAY_LEN(names); i++)
		if (strcmp(s, names[i]) == 0)
			return (int)i;
	return -1;
}

/* The [tls_policy] value of exactly key, or NULL. */
static const char *
conf_tls_policy_get(const struct sl_conf *c, const char *key)
{
	for (size_t i = c->ntls_policy; i-- > 0;)	/* the last one wins */
		if (sl_strcaseeq(c->tls_policy[i].key, key))
			return c->tls_policy[i].value;
	return NULL;
}

int
conf_tls_policy_has(const struct sl_conf *c, const char *domain)
{
	const char *d = domain;

	if (conf_tls_policy_get(c, domain) != NULL)
		return 1;
	while ((d = strchr(d, '.')) != NULL) {
		if (conf_tls_policy_get(c, d) != NULL)
			return 1;
		d++;
	}
	return 0;
}

int
conf_tls_level_for(const struct sl_conf *c, const char *domain)
{
	const char *v = conf_tls_policy_get(c, domain), *d = domain;

	/* ".bank.test" covers every name under bank.test, nearest first */
	while (v == NULL && (d = strchr(d, '.')) != NULL) {
		v = conf_tls_policy_get(c, d);
		d++;
	}
	if (v == NULL)
		v = conf_tls_policy_get(c, "*");
	return v != NULL ? conf_tls_level_parse(v) : c->delivery_tls_level;
}

static int
conf_handler(void *user, const char *section, const char *key,
    const char *value)
{
	struct conf_parse *p = user;
	const struct conf_row *r;
	char msg[512];
	int append;

	if (p->failed)
		return 0;
	if (!conf_section_known(section))
		return conf_fail(p, "unknown section [%s]", section);
	for (size_t i = 0; i < SL_ARRAY_LEN(conf_free_sections); i++) {
		const struct conf_free_section *fs = &conf_free_sections[i];
		if (strcmp(section, fs->name) != 0)
			continue;
		if (fs->valid != NULL && fs->valid(key, value, msg,
		    sizeof(msg)) != 0)
			return conf_fail(p, "[%s] %s: %s", section, key, msg);
		conf_kv_add(p->c, fs, key, value, p->line);
		return 1;
	}
	if ((r = conf_row_find(section, key)) == NULL)
		return conf_fail(p, "[%s] unknown key '%s'", section, key);
	/* inih calls again with the same key for an indented continuation line */
	append = p->last_key == r->key;
	p->last_key = r->key;
	if (conf_set(p->c, r, value, append, msg, sizeof(msg)) != 0 ||
	    conf_derive(p->c, r, msg, sizeof(msg)) != 0)
		return conf_fail(p, "[%s] %s: %s", section, key, msg);
	return 1;
}

/* fgets for inih that counts lines and checks section headers as it goes. */
static char *
conf_reader(char *str, int num, void *stream)
{
	struct conf_parse *p = stream;
	char *s, *e;

	if (fgets(str, num, p->fp) == NULL)
		return NULL;
	p->line++;
	s = str;
	while (*s == ' ' || *s == '\t')
		s++;
	if (*s == '[' && !p->failed && (e = strchr(s, ']')) != NULL) {
		char name[128];
		size_t n = (size_t)(e - s - 1);
		if (n < sizeof(name)) {
			memcpy(name, s + 1, n);
			name[n] = '\0';
			if (!conf_section_known(sl_strtrim(name)))
				conf_fail(p, "unknown section [%s]", name);
		}
		p->last_key = NULL;
	}
	return str;
}

int
conf_net_parse(const char *s, struct conf_net *out)
{
	char buf[INET6_ADDRSTRLEN + 8];
	char *slash, *end;
	long bits;

	if (sl_strlcpy(buf, s, sizeof(buf)) >= sizeof(buf))
		return -1;
	memset(out, 0, sizeof(*out));
	if ((slash = strchr(buf, '/')) != NULL)
		*slash++ = '\0';
	if (inet_pton(AF_INET, buf, out->addr) == 1) {
		out->family = AF_INET;
		out->bits = 32;
	} else if (inet_pton(AF_INET6, buf, out->addr) == 1) {
		out->family = AF_INET6;
		out->bits = 128;
	} else {
		return -1;
	}
	if (slash != NULL) {
		errno = 0;
		bits = strtol(slash, &end, 10);
		if (*slash == '\0' || *end != '\0' || errno != 0 || bits < 0 ||
		    bits > out->bits)
			return -1;
		out->bits = (int)bits;
	}
	return 0;
}

static int
conf_prefix_eq(const uint8_t *a, const uint8_t *b, int bits)
{
	int bytes = bits / 8, rest = bits % 8;

	if (memcmp(a, b, bytes) != 0)
		return 0;
	if (rest == 0)
		return 1;
	return ((a[bytes] ^ b[bytes]) & (0xFF << (8 - rest))) == 0;
}

int
conf_net_match(const struct conf_net *nets, size_t n, const struct sockaddr *sa)
{
	const uint8_t *a6 = NULL;
	uint8_t v4[4];
	int v6 = 0;

	if (sa->sa_family == AF_INET) {
		memcpy(v4, &((const struct sockaddr_in *)sa)->sin_addr, 4);
	} else if (sa->sa_family == AF_INET6) {
		a6 = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
		/* an IPv4-mapped address matches the IPv4 networks */
		if (IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)a6))
			memcpy(v4, a6 + 12, 4);
		else
			v6 = 1;
	} else {
		return 0;
	}
	for (size_t i = 0; i < n; i++) {
		const struct conf_net *net = &nets[i];
		if (net->family == AF_INET && !v6 &&
		    conf_prefix_eq(net->addr, v4, net->bits))
			return 1;
		if (net->family == AF_INET6 && v6 &&
		    conf_prefix_eq(net->addr, a6, net->bits))
			return 1;
	}
	return 0;
}

int
conf_addr_parse(const char *s, struct conf_addr *out)
{
	char host[INET6_ADDRSTRLEN + 2];
	const char *colon, *port;
	char *end;
	long p;
	size_t hlen;

	memset(out, 0, sizeof(*out));
	if (*s == '[') {
		const char *rb = strchr(s, ']');
		if (rb == NULL || rb[1] != ':')
			return -1;
		hlen = (size_t)(rb - s - 1);
		if (hlen >= sizeof(host))
			return -1;
		memcpy(host, s + 1, hlen);
		host[hlen] = '\0';
		port = rb + 2;
	} else {
		if ((colon = strrchr(s, ':')) == NULL)
			return -1;
		hlen = (size_t)(colon - s);
		if (hlen >= sizeof(host))
			return -1;
		memcpy(host, s, hlen);
		host[hlen] = '\0';
		port = colon + 1;
	}
	errno = 0;
	p = strtol(port, &end, 10);
	if (*port == '\0' || *end != '\0' || errno != 0 || p < 0 || p > 65535)
		return -1;
	if (host[0] == '\0' || strcmp(host, "*") == 0) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out->ss;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_addr = in6addr_any;
		sin6->sin6_port = htons((uint16_t)p);
		out->len = sizeof(*sin6);
	} else if (strchr(host, ':') != NULL) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out->ss;
		if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
			return -1;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)p);
		out->len = sizeof(*sin6);
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)&out->ss;
		if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
			return -1;
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)p);
		out->len = sizeof(*sin);
	}
	out->text = xstrdup(s);
	return 0;
}

int
conf_domain_in(char *const *list, size_t n, const char *domain)
{
	for (size_t i = 0; i < n; i++)
		if (sl_strcaseeq(list[i], domain))
			return 1;
	return 0;
}

static int
conf_domain_valid(const char *d)
{
	if (*d == '\0' || strlen(d) > 255)
		return 0;
	for (const char *p = d; *p; p++)
		if (!isalnum((unsigned char)*p) && *p != '-' && *p != '.' &&
		    *p != '_' && !((unsigned char)*p & 0x80))
			return 0;
	return 1;
}

static int
conf_derive_domains(const char *v, char ***list, size_t *n, char *msg,
    size_t msglen)
{
	char **items;
	size_t k = sl_split(v, &items);

	for (size_t i = 0; i < k; i++) {
		if (!conf_domain_valid(items[i])) {
			snprintf(msg, msglen, "'%s' is not a domain", items[i]);
			sl_strv_free(items, k);
			return -1;
		}
		for (char *p = items[i]; *p; p++)
			*p = (char)tolower((unsigned char)*p);
	}
	sl_strv_free(*list, *n);
	*list = items;
	*n = k;
	return 0;
}

/* A LIST of networks into *nets (replaced only when every item parses). */
static int
conf_derive_nets(const char *v, struct conf_net **nets, size_t *nnets,
    char *msg, size_t msglen)
{
	char **items;
	size_t n = sl_split(v, &items);
	struct conf_net *out = xcalloc(n ? n : 1, sizeof(*out));

	for (size_t i = 0; i < n; i++) {
		if (conf_net_parse(items[i], &out[i]) != 0) {
			snprintf(msg, msglen, "'%s' is not a network "
			    "(10.0.0.0/8, ::1/128)", items[i]);
			sl_strv_free(items, n);
			free(out);
			return -1;
		}
	}
	sl_strv_free(items, n);
	free(*nets);
	*nets = out;
	*nnets = n;
	return 0;
}

int
conf_endpoint_parse(const char *spec, struct sockaddr_storage *ss,
    socklen_t *len)
{
	struct conf_addr a;

	memset(ss, 0, sizeof(*ss));
	if (strncmp(spec, "unix:", 5) == 0) {
		struct sockaddr_un *sun = (struct sockaddr_un *)ss;
		if (spec[5] != '/' || strlen(spec + 5) >= sizeof(sun->sun_path))
			return -1;
		sun->sun_family = AF_UNIX;
		sl_strlcpy(sun->sun_path, spec + 5, sizeof(sun->sun_path));
		*len = sizeof(*sun);
		return 0;
	}
	/* the brackets make it an address, as in [routes] */
	if (spec[0] != '[' || conf_addr_parse(spec, &a) != 0)
		return -1;
	free(a.text);
	if (a.ss.ss_family == AF_INET6 && IN6_IS_ADDR_UNSPECIFIED(
	    &((struct sockaddr_in6 *)&a.ss)->sin6_addr))
		return -1;
	if (a.ss.ss_family == AF_INET &&
	    ((struct sockaddr_in *)&a.ss)->sin_addr.s_addr == INADDR_ANY)
		return -1;
	memcpy(ss, &a.ss, a.len);
	*len = a.len;
	return 0;
}

/* [backends] name = lmtp:ENDPOINT | smtp:ENDPOINT */
static int
conf_backend_valid(const char *key, const char *value, char *msg,
    size_t msglen)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int lmtp = strncmp(value, "lmtp:", 5) == 0;

	if ((lmtp || strncmp(value, "smtp:", 5) == 0) &&
	    conf_endpoint_parse(value + 5, &ss, &len) == 0 &&
	    (lmtp || ss.ss_family != AF_UNIX))
		return 0;
	snprintf(msg, msglen, "'%s' is not lmtp:[address]:port, "
	    "lmtp:unix:/path or smtp:[address]:port", value);
	return -1;
}

/* [mailboxes] address-or-domain = backend */
static int
conf_mailbox_valid(const char *key, const char *value, char *msg,
    size_t msglen)
{
	const char *at = strchr(key, '@');

	if ((at != NULL && (at == key || !conf_domain_valid(at + 1))) ||
	    (at == NULL && !conf_domain_valid(key))) {
		snprintf(msg, msglen, "not an address or a domain");
		return -1;
	}
	if (*value == '\0') {
		snprintf(msg, msglen, "a backend of [backends] is needed");
		return -1;
	}
	return 0;
}

/* [cluster] nodes = name=http://host:port, ... */
static int
conf_nodes_valid(const char *v, char *msg, size_t msglen)
{
	char **items;
	size_t n = sl_split(v, &items);
	int rc = 0;

	for (size_t i = 0; i < n && rc == 0; i++) {
		const char *eq = strchr(items[i], '=');
		if (eq == NULL || eq == items[i] ||
		    strncmp(eq + 1, "http://", 7) != 0 || eq[8] == '\0') {
			snprintf(msg, msglen, "'%s' is not name=http://host:port",
			    items[i]);
			rc = -1;
		}
	}
	sl_strv_free(items, n);
	return rc;
}

const struct conf_kv *
conf_backend(const struct sl_conf *c, const char *name)
{
	for (size_t i = 0; i < c->nbackends; i++)
		if (strcmp(c->backends[i].key, name) == 0)
			return &c->backends[i];
	return NULL;
}

static void
conf_addrs_free(struct conf_addr **v, size_t *n)
{
	for (size_t i = 0; i < *n; i++)
		free((*v)[i].text);
	free(*v);
	*v = NULL;
	*n = 0;
}

static void
conf_listen_free(struct sl_conf *c)
{
	conf_addrs_free(&c->listen, &c->nlisten);
	conf_addrs_free(&c->sub_listen, &c->nsub_listen);
	conf_addrs_free(&c->subs_listen, &c->nsubs_listen);
}

/* A list of listening addresses into *out (replacing what was there). */
static int
conf_derive_addrs(const char *v, struct conf_addr **out, size_t *nout,
    char *msg, size_t msglen)
{
	char **items;
	size_t n = sl_split(v, &items);
	struct conf_addr *a = xcalloc(n ? n : 1, sizeof(*a));

	for (size_t i = 0; i < n; i++) {
		if (conf_addr_parse(items[i], &a[i]) != 0) {
			snprintf(msg, msglen, "'%s' is not an address and port "
			    "(127.0.0.1:25, [::1]:25, *:25)", items[i]);
			conf_addrs_free(&a, &i);
			sl_strv_free(items, n);
			return -1;
		}
	}
	sl_strv_free(items, n);
	conf_addrs_free(out, nout);
	*out = a;
	*nout = n;
	return 0;
}

static int
conf_derive(struct sl_conf *c, const struct conf_row *r, char *msg,
    size_t msglen)
{
	char *v = *(char **)((char *)c + r->off);
	char **items;
	size_t n;

	if (r->off == offsetof(struct sl_conf, server_listen)) {
		if (conf_derive_addrs(v, &c->listen, &c->nlisten, msg,
		    msglen) != 0)
			return -1;
		if (c->nlisten == 0) {
			snprintf(msg, msglen, "at least one address is needed");
			return -1;
		}
	} else if (r->off == offsetof(struct sl_conf, submission_listen)) {
		return conf_derive_addrs(v, &c->sub_listen, &c->nsub_listen, msg,
		    msglen);
	} else if (r->off == offsetof(struct sl_conf, submission_tls_listen)) {
		return conf_derive_addrs(v, &c->subs_listen, &c->nsubs_listen,
		    msg, msglen);
	} else if (r->off == offsetof(struct sl_conf, server_trusted_networks)) {
		return conf_derive_nets(v, &c->trusted, &c->ntrusted, msg,
		    msglen);
	} else if (r->off == offsetof(struct sl_conf,
	    server_proxy_trusted_networks)) {
		return conf_derive_nets(v, &c->proxy_trusted,
		    &c->nproxy_trusted, msg, msglen);
	} else if (r->off == offsetof(struct sl_conf, server_proxy_protocol)) {
		static const char *modes[] = { "off", "v1", "v2", "any" };
		for (size_t i = 0; i < SL_ARRAY_LEN(modes); i++) {
			if (strcmp(v, modes[i]) == 0) {
				c->proxy_mode = (int)i;
				return 0;
			}
		}
		snprintf(msg, msglen, "'%s' is not off, v1, v2 or any", v);
		return -1;
	} else if (r->off == offsetof(struct sl_conf, server_local_domains)) {
		return conf_derive_domains(v, &c->local_domains,
		    &c->nlocal_domains, msg, msglen);
	} else if (r->off == offsetof(struct sl_conf, server_relay_domains)) {
		return conf_derive_domains(v, &c->relay_domains,
		    &c->nrelay_domains, msg, msglen);
	} else if (r->off == offsetof(struct sl_conf, local_agent)) {
		if (strcmp(v, "maildir") != 0 && strcmp(v, "lmtp") != 0) {
			snprintf(msg, msglen, "'%s' is not maildir or lmtp", v);
			return -1;
		}
		c->local_lmtp_agent = strcmp(v, "lmtp") == 0;
	} else if (r->off == offsetof(struct sl_conf, local_recipient_check)) {
		static const char *checks[] = { "none", "file", "lmtp" };
		for (size_t i = 0; i < SL_ARRAY_LEN(checks); i++) {
			if (strcmp(v, checks[i]) == 0) {
				c->recipient_check = (int)i;
				return 0;
			}
		}
		snprintf(msg, msglen, "'%s' is not file, lmtp or none", v);
		return -1;
	} else if (r->off == offsetof(struct sl_conf, local_lmtp)) {
		struct sockaddr_storage ss;
		socklen_t len;
		if (*v != '\0' && conf_endpoint_parse(v, &ss, &len) != 0) {
			snprintf(msg, msglen, "'%s' is not unix:/path or "
			    "[address]:port", v);
			return -1;
		}
	} else if (r->off == offsetof(struct sl_conf, cluster_nodes)) {
		return conf_nodes_valid(v, msg, msglen);
	} else if (r->off == offsetof(struct sl_conf, log_format)) {
		if (strcmp(v, "text") != 0 && strcmp(v, "json") != 0) {
			snprintf(msg, msglen, "'%s' is not text or json", v);
			return -1;
		}
		c->log_json = strcmp(v, "json") == 0;
	} else if (r->off == offsetof(struct sl_conf, log_level)) {
		static const char *levels[] = { "debug", "info", "warning",
			"error" };
		for (size_t i = 0; i < SL_ARRAY_LEN(levels); i++)
			if (strcmp(v, levels[i]) == 0)
				return 0;
		snprintf(msg, msglen, "'%s' is not debug, info, warning or error",
		    v);
		return -1;
	} else if (r->off == offsetof(struct sl_conf, spool_dir) ||
	    r->off == offsetof(struct sl_conf, control_socket)) {
		if (*v == '\0') {
			snprintf(msg, msglen, "a path is needed");
			return -1;
		}
	} else if (r->off == offsetof(struct sl_conf, delivery_tls)) {
		if ((c->delivery_tls_level = conf_tls_level_parse(v)) < 0) {
			snprintf(msg, msglen, "'%s' is not none, may, encrypt or "
			    "verify", v);
			return -1;
		}
	} else if (r->off == offsetof(struct sl_conf, dkim_sign)) {
		/* the syntax here; the key files when sluiced loads them */
		n = sl_split(v, &items);
		for (size_t i = 0; i < n; i++) {
			char *d, *s, *path;
			if (dkim_spec_parse(items[i], &d, &s, &path, msg,
			    msglen) != 0) {
				sl_strv_free(items, n);
				return -1;
			}
			free(d);
			free(s);
			free(path);
		}
		sl_strv_free(items, n);
	} else if (r->off == offsetof(struct sl_conf, shaping_redis)) {
		if (*v != '\0' && strncmp(v, "redis://", 8) != 0) {
			snprintf(msg, msglen, "'%s' is not redis://host[:port]"
			    "[/db], nor empty", v);
			return -1;
		}
	} else if (r->off == offsetof(struct sl_conf, http_listen)) {
		struct conf_addr a;

		if (*v == '\0')
			return 0;
		if (conf_addr_parse(v, &a) != 0) {
			snprintf(msg, msglen, "'%s' is not an address and port "
			    "(127.0.0.1:9025), nor empty", v);
			return -1;
		}
		free(a.text);
	}
	return 0;
}

static int
conf_defaults(struct sl_conf *c, char *err, size_t errlen)
{
	char msg[256], host[256];

	for (size_t i = 0; i < SL_ARRAY_LEN(conf_rows); i++) {
		const struct conf_row *r = &conf_rows[i];
		if (conf_set(c, r, r->def, 0, msg, sizeof(msg)) != 0 ||
		    conf_derive(c, r, msg, sizeof(msg)) != 0) {
			snprintf(err, errlen, "built-in default [%s] %s: %s",
			    r->section, r->key, msg);
			return -1;
		}
	}
	if (gethostname(host, sizeof(host)) != 0 || host[0] == '\0')
		sl_strlcpy(host, "localhost", sizeof(host));
	host[sizeof(host) - 1] = '\0';
	free(c->server_hostname);
	c->server_hostname = xstrdup(host);
	return 0;
}

struct sl_conf *
conf_load(const char *path, char *err, size_t errlen)
{
	struct sl_conf *c = xcalloc(1, sizeof(*c));
	struct conf_parse p = { .c = c, .file = path, .err = err,
		.errlen = errlen };
	int rc;

	if (conf_defaults(c, err, errlen) != 0)
		return conf_free(c);
	if (path == NULL)
		return c;
	c->path = xstrdup(path);
	if ((p.fp = fopen(path, "r")) == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return conf_free(c);
	}
	rc = ini_parse_stream(conf_reader, &p, conf_handler, &p);
	fclose(p.fp);
	if (p.failed)
		return conf_free(c);
	if (rc != 0) {
		snprintf(err, errlen, "%s:%d: syntax error (expected "
		    "[section] or key = value)", path, rc);
		return conf_free(c);
	}
	if (c->server_hostname[0] == '\0') {
		snprintf(err, errlen, "%s: [server] hostname: must not be empty",
		    path);
		return conf_free(c);
	}
	return c;
}

/* Where a setting came from, for the messages of conf_check. */
static const char *
conf_where(const struct sl_conf *c, int line, char *buf, size_t len)
{
	const char *file = c->path ? c->path : "(built-in defaults)";

	if (line > 0)
		snprintf(buf, len, "%s:%d", file, line);
	else
		snprintf(buf, len, "%s", file);
	return buf;
}

/* The checks of [local], [backends] and [mailboxes] (conf_check). */
static int
conf_check_local(struct sl_conf *c, char *err, size_t errlen)
{
	char where[512];
	const char *file = conf_where(c, 0, where, sizeof(where));
	int mapped = c->nmailboxes > 0 || c->local_mailbox_map[0] != '\0';

	for (size_t i = 0; i < c->nmailboxes; i++) {
		const struct conf_kv *m = &c->mailboxes[i];
		const char *at = strchr(m->key, '@');
		if (conf_backend(c, m->value) == NULL) {
			snprintf(err, errlen, "%s: [mailboxes] %s: no backend "
			    "'%s' in [backends]", conf_where(c, m->line, where,
			    sizeof(where)), m->key, m->value);
			return -1;
		}
		if (at != NULL && !conf_domain_in(c->local_domains,
		    c->nlocal_domains, at + 1)) {
			snprintf(err, errlen, "%s: [mailboxes] %s: %s is not in "
			    "[server] local_domains", conf_where(c, m->line,
			    where, sizeof(where)), m->key, at + 1);
			return -1;
		}
	}
	/* a domain whose mailboxes a backend holds is ours to accept */
	for (size_t i = 0; i < c->nmailboxes; i++) {
		const char *k = c->mailboxes[i].key;
		if (strchr(k, '@') != NULL ||
		    conf_domain_in(c->local_domains, c->nlocal_domains, k))
			continue;
		c->local_domains = xrealloc(c->local_domains,
		    (c->nlocal_domains + 1) * sizeof(*c->local_domains));
		c->local_domains[c->nlocal_domains++] = xstrdup(k);
	}
	if (c->local_lmtp_agent && c->local_lmtp[0] == '\0') {
		snprintf(err, errlen, "%s: [local] agent = lmtp needs [local] "
		    "lmtp (unix:/path or [address]:port)", file);
		return -1;
	}
	if (c->recipient_check == 2 && !c->local_lmtp_agent && !mapped) {
		snprintf(err, errlen, "%s: [local] recipient_check = lmtp needs "
		    "an LMTP server to ask: [local] agent = lmtp, or backends "
		    "in [mailboxes] or mailbox_map", file);
		return -1;
	}
	return 0;
}

int
conf_check(struct sl_conf *c, char *err, size_t errlen)
{
	const char *file = c->path ? c->path : "(built-in defaults)";

	/* without the balancers' addresses anyone could claim any client */
	if (c->proxy_mode != 0 && c->nproxy_trusted == 0) {
		snprintf(err, errlen, "%s: [server] proxy_protocol = %s needs "
		    "[server] proxy_trusted_networks (the balancers' addresses)",
		    file, c->server_proxy_protocol);
		return -1;
	}
	return conf_check_local(c, err, errlen);
}

int
conf_override(struct sl_conf *c, const char *spec, char *err, size_t errlen)
{
	struct conf_parse p = { .c = c, .file = spec, .err = err,
		.errlen = errlen };
	const char *dot = strchr(spec, '.'), *eq = strchr(spec, '=');
	char *section, *key, *value;

	if (dot == NULL || eq == NULL || eq < dot || dot == spec || eq == dot + 1) {
		snprintf(err, errlen, "-o %s: expected section.key=value", spec);
		return -1;
	}
	section = xstrndup(spec, (size_t)(dot - spec));
	key = xstrndup(dot + 1, (size_t)(eq - dot - 1));
	value = xstrdup(eq + 1);
	conf_handler(&p, sl_strtrim(section), sl_strtrim(key),
	    sl_strtrim(value));
	free(section);
	free(key);
	free(value);
	return p.failed ? -1 : 0;
}

int
conf_keep_fixed(struct sl_conf *old, struct sl_conf *nc,
    void (*changed)(const char *section, const char *key))
{
	int n = 0, listen = 0;

	for (size_t i = 0; i < SL_ARRAY_LEN(conf_rows); i++) {
		const struct conf_row *r = &conf_rows[i];
		char *ob = (char *)old + r->off, *nb = (char *)nc + r->off;

		if (r->reloadable)
			continue;
		if (r->type == T_STR || r->type == T_LIST) {
			char **os = (char **)ob, **ns = (char **)nb, *t;
			if (strcmp(*os, *ns) == 0)
				continue;
			/* swap, so each configuration frees its own strings */
			t = *os, *os = *ns, *ns = t;
			listen |= r->off == offsetof(struct sl_conf, server_listen) ||
			    r->off == offsetof(struct sl_conf, submission_listen) ||
			    r->off == offsetof(struct sl_conf,
			    submission_tls_listen);
		} else {
			if (*(int64_t *)ob == *(int64_t *)nb)
				continue;
			*(int64_t *)nb = *(int64_t *)ob;
		}
		changed(r->section, r->key);
		n++;
	}
	if (listen) {	/* the derived addresses follow their settings */
		struct sl_conf t;
		t.listen = old->listen, t.nlisten = old->nlisten;
		t.sub_listen = old->sub_listen, t.nsub_listen = old->nsub_listen;
		t.subs_listen = old->subs_listen;
		t.nsubs_listen = old->nsubs_listen;
		old->listen = nc->listen, old->nlisten = nc->nlisten;
		old->sub_listen = nc->sub_listen;
		old->nsub_listen = nc->nsub_listen;
		old->subs_listen = nc->subs_listen;
		old->nsubs_listen = nc->nsubs_listen;
		nc->listen = t.listen, nc->nlisten = t.nlisten;
		nc->sub_listen = t.sub_listen, nc->nsub_listen = t.nsub_listen;
		nc->subs_listen = t.subs_listen;
		nc->nsubs_listen = t.nsubs_listen;
	}
	return n;
}

struct sl_conf *
conf_free(struct sl_conf *c)
{
	if (c == NULL)
		return NULL;
	for (size_t i = 0; i < SL_ARRAY_LEN(conf_rows); i++)
		if (conf_rows[i].type == T_STR || conf_rows[i].type == T_LIST)
			free(*(char **)((char *)c + conf_rows[i].off));
	conf_listen_free(c);
	free(c->trusted);
	free(c->proxy_trusted);
	sl_strv_free(c->local_domains, c->nlocal_domains);
	sl_strv_free(c->relay_domains, c->nrelay_domains);
	for (size_t i = 0; i < SL_ARRAY_LEN(conf_free_sections); i++) {
		const struct conf_free_section *fs = &conf_free_sections[i];
		struct conf_kv *kv = *(struct conf_kv **)((char *)c + fs->kv);
		size_t n = *(size_t *)((char *)c + fs->n);
		for (size_t k = 0; k < n; k++) {
			free(kv[k].key);
			free(kv[k].value);
		}
		free(kv);
	}
	free(c->path);
	free(c);
	return NULL;
}

/* A size or duration in the largest unit that divides it. */
static void
conf_fmt_scaled(int64_t v, const char *units, const int64_t *mult, size_t n,
    char *buf, size_t len)
{
	for (size_t i = n; i-- > 0;) {
		if (v != 0 && v % mult[i] == 0) {
			snprintf(buf, len, "%lld%c", (long long)(v / mult[i]),
			    units[i]);
			return;
		}
	}
	snprintf(buf, len, "%lld", (long long)v);
}

void
conf_print(const struct sl_conf *c, FILE *f)
{
	static const int64_t smult[] = { 1024, 1048576, 1073741824 };
	static const int64_t dmult[] = { 1, 60, 3600, 86400 };
	const char *section = "";
	char buf[64];

	for (size_t i = 0; i < SL_ARRAY_LEN(conf_rows); i++) {
		const struct conf_row *r = &conf_rows[i];
		const char *base = (const char *)c + r->off;
		int64_t v = *(const int64_t *)base;

		if (strcmp(section, r->section) != 0) {
			fprintf(f, "%s[%s]\n", i ? "\n" : "", r->section);
			section = r->section;
		}
		switch (r->type) {
		case T_STR:
		case T_LIST:
			fprintf(f, "%s = %s\n", r->key, *(char *const *)base);
			break;
		case T_INT:
			fprintf(f, "%s = %lld\n", r->key, (long long)v);
			break;
		case T_SIZE:
			conf_fmt_scaled(v, "KMG", smult, 3, buf, sizeof(buf));
			fprintf(f, "%s = %s\n", r->key, buf);
			break;
		case T_DURATION:
			if (v == 0)
				snprintf(buf, sizeof(buf), "0s");
			else
				conf_fmt_scaled(v, "smhd", dmult, 4, buf,
				    sizeof(buf));
			fprintf(f, "%s = %s\n", r->key, buf);
			break;
		case T_BOOL:
			fprintf(f, "%s = %s\n", r->key, v ? "yes" : "no");
			break;
		case T_MSEC:
			if (v % 1000 == 0 && v != 0)
				conf_fmt_scaled(v / 1000, "smhd", dmult, 4, buf,
				    sizeof(buf));
			else
				snprintf(buf, sizeof(buf), "%lldms", (long long)v);
			fprintf(f, "%s = %s\n", r->key, buf);
			break;
		}
	}
	for (size_t i = 0; i < SL_ARRAY_LEN(conf_free_sections); i++) {
		const struct conf_free_section *fs = &conf_free_sections[i];
		const struct conf_kv *kv = *(struct conf_kv *const *)
		    ((const char *)c + fs->kv);
		size_t n = *(const size_t *)((const char *)c + fs->n);
		if (n > 0)
			fprintf(f, "\n[%s]\n", fs->name);
		for (size_t k = 0; k < n; k++)
			fprintf(f, "%s = %s\n", kv[k].key, kv[k].value);
	}
}
