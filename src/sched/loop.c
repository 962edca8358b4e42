/* SPDX-License-Identifier: MIT */
/*
 * loop.c: never deliver to ourselves (issue 9 item 9).
 *
 * A next hop is us when its address and port are one of the [server]
 * listen sockets: the same address, or, for a wildcard listener
 * ("*:25", "0.0.0.0:25", "[::]:25"), any address of this machine (the
 * interfaces' addresses, loopback, the unspecified address). As Postfix
 * does ("mail for D loops back to myself", 5.4.6), an MX host that is us
 * cuts the MX list at its preference: only better MX hosts are tried,
 * and when we are the best (or the static route is us) the recipients
 * fail with 5.4.6.
 *
 * Owns the scheduler's copy of the interface addresses (getifaddrs),
 * read at most once every SCHED_SELF_TTL_MS. Callers: destq.c, when a
 * destination's next hops are resolved.
 */
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sched/sched_int.h"
#include "util/util.h"

#define SCHED_SELF_TTL_MS 60000

/* a with an IPv4-mapped IPv6 address as plain IPv4. */
static struct sockaddr_storage
sched_sa_norm(const struct sockaddr_storage *a)
{
	const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)a;
	struct sockaddr_storage out = *a;

	if (a->ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&out;
		uint16_t port = s6->sin6_port;

		memset(&out, 0, sizeof(out));
		s4->sin_family = AF_INET;
		s4->sin_port = port;
		memcpy(&s4->sin_addr, &s6->sin6_addr.s6_addr[12], 4);
	}
	return out;
}

static int
sched_sa_port(const struct sockaddr_storage *a)
{
	if (a->ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)a)->sin_port);
	if (a->ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)a)->sin6_port);
	return -1;
}

/* "[192.0.2.1]:25" */
static void
sched_sa_fmt(const struct sockaddr_storage *a, char *out, size_t len)
{
	char ip[INET6_ADDRSTRLEN] = "?";
	const void *in = a->ss_family == AF_INET6 ?
	    (const void *)&((const struct sockaddr_in6 *)a)->sin6_addr :
	    (const void *)&((const struct sockaddr_in *)a)->sin_addr;

	inet_ntop(a->ss_family, in, ip, sizeof(ip));
	snprintf(out, len, "[%s]:%d", ip, sched_sa_port(a));
}

/* 1 if a and b (normalized) are the same address, ports aside. */
static int
sched_sa_same(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return 0;
	if (a->ss_family == AF_INET)
		return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
		    ((const struct sockaddr_in *)b)->sin_addr.s_addr;
	if (a->ss_family == AF_INET6)
		return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
		    &((const struct sockaddr_in6 *)b)->sin6_addr, 16) == 0;
	return 0;
}

/* 1 for 0.0.0.0 and ::. */
static int
sched_sa_any(const struct sockaddr_storage *a)
{
	if (a->ss_family == AF_INET)
		return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
		    htonl(INADDR_ANY);
	if (a->ss_family == AF_INET6)
		return IN6_IS_ADDR_UNSPECIFIED(
		    &((const struct sockaddr_in6 *)a)->sin6_addr);
	return 0;
}

/* 1 for 127.0.0.0/8 and ::1. */
static int
sched_sa_loopback(const struct sockaddr_storage *a)
{
	if (a->ss_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)a)->sin_addr.s_addr) >>
		    24) == 127;
	if (a->ss_family == AF_INET6)
		return IN6_IS_ADDR_LOOPBACK(
		    &((const struct sockaddr_in6 *)a)->sin6_addr);
	return 0;
}

/* The addresses of this machine's interfaces, read again when stale. */
static void
sched_self_refresh(struct sched *s)
{
	struct ifaddrs *ifa, *i;
	int64_t now = sched_now_ms();
	size_t n = 0;

	if (s->self_expire > now)
		return;
	s->self_expire = now + SCHED_SELF_TTL_MS;
	if (getifaddrs(&ifa) != 0)
		return;		/* keep what we had: loopback still counts */
	for (i = ifa; i != NULL; i = i->ifa_next)
		if (i->ifa_addr != NULL && (i->ifa_addr->sa_family == AF_INET ||
		    i->ifa_addr->sa_family == AF_INET6))
			n++;
	free(s->self);
	s->self = xcalloc(n ? n : 1, sizeof(*s->self));
	s->nself = 0;
	for (i = ifa; i != NULL; i = i->ifa_next) {
		if (i->ifa_addr == NULL)
			continue;
		if (i->ifa_addr->sa_family == AF_INET)
			memcpy(&s->self[s->nself++], i->ifa_addr,
			    sizeof(struct sockaddr_in));
		else if (i->ifa_addr->sa_family == AF_INET6)
			memcpy(&s->self[s->nself++], i->ifa_addr,
			    sizeof(struct sockaddr_in6));
	}
	freeifaddrs(ifa);
}

/* 1 if a (normalized) is an address of this machine. */
static int
sched_addr_local(struct sched *s, const struct sockaddr_storage *a)
{
	if (sched_sa_any(a) || sched_sa_loopback(a))
		return 1;
	sched_self_refresh(s);
	for (size_t i = 0; i < s->nself; i++) {
		struct sockaddr_storage l = sched_sa_norm(&s->self[i]);
		if (sched_sa_same(&l, a))
			return 1;
	}
	return 0;
}

int
sched_addr_is_self(struct sched *s, const struct sockaddr_storage *addr)
{
	struct sockaddr_storage a = sched_sa_norm(addr);
	int port = sched_sa_port(&a);

	for (size_t i = 0; i < s->conf->nlisten; i++) {
		struct sockaddr_storage l = sched_sa_norm(&s->conf->listen[i].ss);

		if (sched_sa_port(&l) != port)
			continue;
		if (sched_sa_same(&l, &a))
			return 1;
		/* a wildcard takes every local address; [::] IPv4 too */
		if (sched_sa_any(&l) && (l.ss_family == a.ss_family ||
		    l.ss_family == AF_INET6) && sched_addr_local(s, &a))
			return 1;
	}
	return 0;
}

/*
 * Cut r at the first host that is us: it and every host at its preference
 * or worse go (they would hand the mail back to us). Returns 0, or -1 with
 * a reply in why when nothing is left: we are the best next hop.
 */
int
sched_hops_trim_self(struct sched *s, const char *dest, struct dns_result *r,
    char *why, size_t len)
{
	size_t cut = r->nhost;
	const struct dns_host *me = NULL;
	const struct sockaddr_storage *ma = NULL;

	for (size_t i = 0; i < r->nhost && me == NULL; i++) {
		for (size_t a = 0; a < r->hosts[i].naddr; a++) {
			if (!sched_addr_is_self(s, &r->hosts[i].addrs[a]))
				continue;
			me = &r->hosts[i];
			ma = &r->hosts[i].addrs[a];
			break;
		}
	}
	if (me == NULL)
		return 0;
	for (cut = 0; cut < r->nhost && r->hosts[cut].pref < me->pref; cut++)
		;
	if (cut == 0) {
		char addr[INET6_ADDRSTRLEN + 16];
		sched_sa_fmt(ma, addr, sizeof(addr));
		snprintf(why, len, "554 5.4.6 mail loops back to myself (mail "
		    "for %s: %s %s is this server)", dest, me->name, addr);
		return -1;
	}
	for (size_t i = cut; i < r->nhost; i++) {
		free(r->hosts[i].name);
		free(r->hosts[i].addrs);
	}
	r->nhost = cut;
	return 0;
}
