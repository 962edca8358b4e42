/* SPDX-License-Identifier: MIT */
/*
 * mx.c: what the DNS answers mean for delivery (RFC 5321 5.1, RFC 7505).
 *
 * dns_mx_lookup asks for MX; the answer sets the hosts (sorted, equal
 * preferences shuffled) or a final status (null MX, NXDOMAIN, temporary);
 * NODATA makes the domain its own host (implicit MX). Then every host's
 * A and AAAA are asked at once; dns_mx_complete, run when the last answer
 * is in, keeps the hosts that have an address, in order.
 * dns_host_lookup is the second half alone, for one host.
 * Callers: users through dns.h; resolver_ares.c calls dns_mx_complete.
 *
 * Invariants
 *  1. q->status, once set (not -1), is the answer: hosts are not asked.
 *  2. An IP literal (a host, an MX target, a "[1.2.3.4]" domain) is never
 *     sent to DNS; its address is filled in at once.
 *  3. Addresses of a host: IPv4 first, then IPv6, each as the server gave.
 */
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include <ares.h>

#include "util/util.h"

#include "dns/dns_int.h"

/* An MX record while sorting. */
struct dns_mx {
	int pref;
	const char *host;		/* borrowed from the ares_mx_reply */
};

struct dns_result *
dns_result_fail(enum dns_status st, const char *error)
{
	struct dns_result *res;

	res = xcalloc(1, sizeof(*res));
	res->status = st;
	res->error = error != NULL ? xstrdup(error) : NULL;
	res->ttl = DNS_TTL_DEFAULT;
	return res;
}

struct dns_result *
dns_result_free(struct dns_result *res)
{
	size_t i;

	if (res == NULL)
		return NULL;
	for (i = 0; i < res->nhost; i++) {
		free(res->hosts[i].name);
		free(res->hosts[i].addrs);
	}
	free(res->hosts);
	free(res->error);
	free(res);
	return NULL;
}

int
dns_parse_literal(const char *s, int port, struct sockaddr_storage *ss)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
	char buf[INET6_ADDRSTRLEN + 1];
	size_t len = strlen(s);
	int v6only = 0;

	if (len >= 2 && s[0] == '[' && s[len - 1] == ']') {
		s++;
		len -= 2;
		/* RFC 5321 4.1.3: "[IPv6:2001:db8::1]" */
		if (len > 5 && sl_strncaseeq(s, "IPv6:", 5)) {
			s += 5;
			len -= 5;
			v6only = 1;
		}
	}
	if (len == 0 || len >= sizeof(buf))
		return -1;
	memcpy(buf, s, len);
	buf[len] = '\0';
	memset(ss, 0, sizeof(*ss));
	if (!v6only && inet_pton(AF_INET, buf, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		return 0;
	}
	if (inet_pton(AF_INET6, buf, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		return 0;
	}
	return -1;
}

/* Skip a (possibly compressed) name at p; NULL if it runs past end. */
static const unsigned char *
dns_skip_name(const unsigned char *p, const unsigned char *end)
{
	while (p < end) {
		if (*p == 0)
			return p + 1;
		if ((*p & 0xc0) == 0xc0)
			return p + 2 <= end ? p + 2 : NULL;
		p += *p + 1;
	}
	return NULL;
}

uint32_t
dns_answer_ttl(const unsigned char *abuf, int alen)
{
	const unsigned char *p = abuf + NS_HFIXEDSZ, *end = abuf + alen;
	uint32_t ttl, min = UINT32_MAX;
	unsigned qd, an, rdlen;

	if (abuf == NULL || alen < NS_HFIXEDSZ)
		return UINT32_MAX;
	qd = abuf[4] << 8 | abuf[5];
	an = abuf[6] << 8 | abuf[7];
	for (; qd > 0 && p != NULL; qd--)
		if ((p = dns_skip_name(p, end)) != NULL)
			p += NS_QFIXEDSZ;
	for (; an > 0 && p != NULL; an--) {
		if ((p = dns_skip_name(p, end)) == NULL || end - p < NS_RRFIXEDSZ)
			break;
		ttl = (uint32_t)p[4] << 24 | p[5] << 16 | p[6] << 8 | p[7];
		rdlen = p[8] << 8 | p[9];
		/* RFC 2181 8: a TTL with the top bit set counts as 0. */
		if (ttl > INT32_MAX)
			ttl = 0;
		if (ttl < min)
			min = ttl;
		p += NS_RRFIXEDSZ + rdlen;
	}
	return min;
}

static void
dns_see_ttl(struct dns_query *q, const unsigned char *abuf, int alen)
{
	uint32_t ttl = dns_answer_ttl(abuf, alen);

	if (ttl < q->ttl)
		q->ttl = ttl;
}

/* The first failure becomes the error text: "SERVFAIL looking up MX for x". */
static void
dns_note_error(struct dns_query *q, int status, int type, const char *name)
{
	const char *t = type == ns_t_mx ? "MX" : type == ns_t_a ? "A" : "AAAA";

	if (q->error == NULL)
		q->error = xasprintf("%s looking up %s for %s",
		    dns_ares_errstr(status), t, name);
}

static void
dns_host_add(struct dns_query *q, const char *name, int pref)
{
	struct dns_qhost *h;

	q->hosts = xrealloc(q->hosts, (q->nhost + 1) * sizeof(*q->hosts));
	h = &q->hosts[q->nhost++];
	memset(h, 0, sizeof(*h));
	h->name = xstrdup(name);
	h->pref = pref;
}

static void
dns_addr_answer(struct dns_query *q, size_t i, int type, int status,
    const unsigned char *abuf, int alen)
{
	struct dns_qhost *h = &q->hosts[i];
	struct ares_addrttl a4[DNS_MAX_ADDRS];
	struct ares_addr6ttl a6[DNS_MAX_ADDRS];
	struct sockaddr_in *sin;
	struct sockaddr_in6 *sin6;
	int j, n = DNS_MAX_ADDRS;

	if (status == ARES_SUCCESS) {
		dns_see_ttl(q, abuf, alen);
		if (type == ns_t_a)
			status = ares_parse_a_reply(abuf, alen, NULL, a4, &n);
		else
			status = ares_parse_aaaa_reply(abuf, alen, NULL, a6, &n);
	}
	if (status == ARES_ENOTFOUND || status == ARES_EBADNAME)
		q->nxdomain = 1;
	if (status == ARES_ENOTFOUND || status == ARES_EBADNAME ||
	    status == ARES_ENODATA)
		return;
	if (status != ARES_SUCCESS) {
		q->temp = 1;
		dns_note_error(q, status, type, h->name);
		return;
	}
	if (n <= 0)
		return;
	if (type == ns_t_a) {
		h->a4 = xcalloc(n, sizeof(*h->a4));
		for (j = 0; j < n; j++) {
			sin = (struct sockaddr_in *)&h->a4[j];
			sin->sin_family = AF_INET;
			sin->sin_port = htons(q->port);
			sin->sin_addr = a4[j].ipaddr;
		}
		h->n4 = n;
	} else {
		h->a6 = xcalloc(n, sizeof(*h->a6));
		for (j = 0; j < n; j++) {
			sin6 = (struct sockaddr_in6 *)&h->a6[j];
			sin6->sin6_family = AF_INET6;
			sin6->sin6_port = htons(q->port);
			memcpy(&sin6->sin6_addr, &a6[j].ip6addr,
			    sizeof(sin6->sin6_addr));
		}
		h->n6 = n;
	}
}

/* Ask A and AAAA of every host; literals are filled in at once. */
static void
dns_hosts_resolve(struct dns_query *q)
{
	struct sockaddr_storage ss;
	struct dns_qhost *h;
	size_t i;

	for (i = 0; i < q->nhost; i++) {
		h = &q->hosts[i];
		if (dns_parse_literal(h->name, q->port, &ss) == 0) {
			h->a4 = xmalloc(sizeof(ss));
			h->a4[0] = ss;
			if (ss.ss_family == AF_INET)
				h->n4 = 1;
			else {
				h->a6 = h->a4;
				h->a4 = NULL;
				h->n6 = 1;
			}
			continue;
		}
		dns_query_send(q, h->name, ns_t_a, i, dns_addr_answer);
		dns_query_send(q, h->name, ns_t_aaaa, i, dns_addr_answer);
	}
}

static int
dns_mx_cmp(const void *a, const void *b)
{
	const struct dns_mx *x = a, *y = b;

	return (x->pref > y->pref) - (x->pref < y->pref);
}

/* RFC 5321 5.1: equal preferences in random order. */
static void
dns_mx_shuffle(struct dns_mx *mx, size_t n)
{
	struct dns_mx t;
	size_t lo, hi, i, j;

	for (lo = 0; lo < n; lo = hi) {
		for (hi = lo + 1; hi < n && mx[hi].pref == mx[lo].pref; hi++)
			;
		for (i = hi - 1; i > lo; i--) {
			j = lo + arc4random_uniform(i - lo + 1);
			t = mx[i];
			mx[i] = mx[j];
			mx[j] = t;
		}
	}
}

/* The root as a target: "" from c-ares, or "." */
static int
dns_is_root(const char *host)
{
	return host[0] == '\0' || strcmp(host, ".") == 0;
}

static int
dns_host_known(struct dns_query *q, const char *name)
{
	size_t i;

	for (i = 0; i < q->nhost; i++)
		if (sl_strcaseeq(q->hosts[i].name, name))
			return 1;
	return 0;
}

/* Hosts from the MX records, or a null MX. */
static void
dns_mx_hosts(struct dns_query *q, struct ares_mx_reply *reply)
{
	struct dns_mx mx[DNS_MAX_HOSTS];
	struct ares_mx_reply *r;
	size_t n = 0, i;

	for (r = reply; r != NULL && n < DNS_MAX_HOSTS; r = r->next) {
		mx[n].pref = r->priority;
		mx[n].host = r->host;
		n++;
	}
	/* RFC 7505 3: one record, preference 0, target the root. */
	if (n == 1 && mx[0].pref == 0 && dns_is_root(mx[0].host)) {
		q->status = DNS_NULLMX;
		q->error = xasprintf("null MX: %s accepts no mail", q->domain);
		return;
	}
	qsort(mx, n, sizeof(mx[0]), dns_mx_cmp);
	dns_mx_shuffle(mx, n);
	for (i = 0; i < n; i++)
		if (!dns_is_root(mx[i].host) && !dns_host_known(q, mx[i].host))
			dns_host_add(q, mx[i].host, mx[i].pref);
	dns_hosts_resolve(q);
}

static void
dns_mx_answer(struct dns_query *q, size_t i, int type, int status,
    const unsigned char *abuf, int alen)
{
	struct ares_mx_reply *reply = NULL;

	if (status == ARES_SUCCESS) {
		dns_see_ttl(q, abuf, alen);
		status = ares_parse_mx_reply(abuf, alen, &reply);
		if (status == ARES_SUCCESS && reply == NULL)
			status = ARES_ENODATA;	/* e.g. a CNAME alone */
	}
	switch (status) {
	case ARES_SUCCESS:
		dns_mx_hosts(q, reply);
		break;
	case ARES_ENODATA:
		/* RFC 5321 5.1: no MX, the domain is its own mail host. */
		q->implicit = 1;
		dns_host_add(q, q->domain, 0);
		dns_hosts_resolve(q);
		break;
	case ARES_ENOTFOUND:
	case ARES_EBADNAME:
		q->status = DNS_NXDOMAIN;
		dns_note_error(q, status, type, q->domain);
		break;
	default:
		q->status = DNS_TEMP;
		dns_note_error(q, status, type, q->domain);
		break;
	}
	if (reply != NULL)
		ares_free_data(reply);
}

/* No host has an address: say why. */
static struct dns_result *
dns_no_host(struct dns_query *q)
{
	struct dns_result *res;
	char *msg;

	if (q->temp)
		return dns_result_fail(DNS_TEMP, q->error);
	if (!q->mx && q->nxdomain) {
		msg = xasprintf("NXDOMAIN looking up %s", q->domain);
		res = dns_result_fail(DNS_NXDOMAIN, msg);
	} else if (q->implicit) {
		msg = xasprintf("%s has no MX and no address", q->domain);
		res = dns_result_fail(DNS_NOHOST, msg);
	} else if (q->mx) {
		msg = xasprintf("no MX host of %s has an address", q->domain);
		res = dns_result_fail(DNS_NOHOST, msg);
	} else {
		msg = xasprintf("no address for %s", q->domain);
		res = dns_result_fail(DNS_NOHOST, msg);
	}
	free(msg);
	return res;
}

void
dns_mx_complete(struct dns_query *q)
{
	struct dns_result *res;
	struct dns_qhost *h;
	struct dns_host *o;
	size_t i, n = 0;

	for (i = 0; i < q->nhost; i++)
		if (q->hosts[i].n4 + q->hosts[i].n6 > 0)
			n++;
	if (q->status >= 0)
		res = dns_result_fail(q->status, q->error);
	else if (n == 0)
		res = dns_no_host(q);
	else {
		res = dns_result_fail(DNS_OK, NULL);
		res->hosts = xcalloc(n, sizeof(*res->hosts));
		for (i = 0; i < q->nhost; i++) {
			h = &q->hosts[i];
			if (h->n4 + h->n6 == 0)
				continue;
			o = &res->hosts[res->nhost++];
			o->name = xstrdup(h->name);
			o->pref = h->pref;
			o->naddr = h->n4 + h->n6;
			o->addrs = xcalloc(o->naddr, sizeof(*o->addrs));
			if (h->n4 > 0)
				memcpy(o->addrs, h->a4, h->n4 * sizeof(*h->a4));
			if (h->n6 > 0)
				memcpy(o->addrs + h->n4, h->a6,
				    h->n6 * sizeof(*h->a6));
		}
	}
	if (q->ttl != UINT32_MAX)
		res->ttl = q->ttl;
	if (res->ttl < DNS_TTL_MIN)
		res->ttl = DNS_TTL_MIN;
	if (res->ttl > DNS_TTL_MAX)
		res->ttl = DNS_TTL_MAX;
	q->res = res;
}

/*
 * The mail hosts of domain. A domain literal "[192.0.2.1]" is its own
 * host, with no DNS asked.
 */
struct dns_query *
dns_mx_lookup(struct dns *d, const char *domain, int port, dns_result_fn *cb,
    void *arg)
{
	struct dns_query *q;
	struct sockaddr_storage ss;

	q = dns_query_new(d, domain, port, 1, cb, arg);
	/* Hold a count: answers given at once must not settle q early. */
	q->pending++;
	if (domain[0] == '[') {
		if (dns_parse_literal(domain, port, &ss) == 0) {
			dns_host_add(q, domain, 0);
			dns_hosts_resolve(q);
		} else {
			q->status = DNS_NXDOMAIN;
			q->error = xasprintf("bad address literal %s", domain);
		}
	} else if (domain[0] == '\0') {
		q->status = DNS_NXDOMAIN;
		q->error = xstrdup("empty domain");
	} else {
		dns_query_send(q, domain, ns_t_mx, 0, dns_mx_answer);
	}
	q->pending--;
	dns_query_settle(q);
	return q;
}

/*
 * The addresses of host: a name, or an IP literal with or without
 * brackets ("[IPv6:...]" too) that is answered without DNS.
 */
struct dns_query *
dns_host_lookup(struct dns *d, const char *host, int port, dns_result_fn *cb,
    void *arg)
{
	struct dns_query *q;
	struct sockaddr_storage ss;
	size_t len = strlen(host);
	char *name;

	/* "[mx.example]" (a static route) is the name without brackets. */
	if (len > 2 && host[0] == '[' && host[len - 1] == ']' &&
	    dns_parse_literal(host, port, &ss) == -1)
		name = xstrndup(host + 1, len - 2);
	else
		name = xstrdup(host);
	q = dns_query_new(d, name, port, 0, cb, arg);
	q->pending++;
	if (name[0] == '\0') {
		q->status = DNS_NXDOMAIN;
		q->error = xstrdup("empty host name");
	} else {
		dns_host_add(q, name, 0);
		dns_hosts_resolve(q);
	}
	q->pending--;
	dns_query_settle(q);
	free(name);
	return q;
}
