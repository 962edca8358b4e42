/* SPDX-License-Identifier: MIT */
/*
 * dns_int.h: what resolver_ares.c (c-ares on libevent, query life) and mx.c
 * (what the answers mean for delivery) share. Nothing else includes this.
 *
 * Query life (struct dns_query):
 *  new (dns_query_new) -> lookups in flight (pending > 0, dns_query_send)
 *   -> complete (pending == 0: dns_mx_complete builds res, dns_query_done)
 *   -> delivered (dns_deliver_cb on the loop: unlink, free, call the user).
 *  A cancelled query stays until c-ares has called back for all its lookups
 *  (pending == 0), then it is freed without a word to the user.
 *
 * Invariants
 *  1. The user callback runs only from q->done_ev, an event of its own, so
 *     never inside dns_*_lookup() nor inside ares_process_fd(); it may call
 *     any dns_* function, dns_free() included.
 *  2. A query is on d->queries from dns_query_new() until it is freed.
 *  3. pending counts c-ares lookups not yet called back; a handler that
 *     starts more lookups does so before its own lookup is counted off, so
 *     pending reaches 0 exactly once.
 */
#ifndef SL_DNS_INT_H
#define SL_DNS_INT_H

#include <sys/queue.h>

#include <ares.h>

#include "dns/dns.h"

/* At most this many MX hosts, and addresses per family per host, are kept. */
#define DNS_MAX_HOSTS 32
#define DNS_MAX_ADDRS 32
/* Result TTL bounds, and the TTL when no record told one. */
#define DNS_TTL_MIN 1
#define DNS_TTL_MAX 3600
#define DNS_TTL_DEFAULT 300

/* One c-ares socket and the event that watches it. */
struct dns_sock {
	struct dns_sock *next;
	ares_socket_t fd;
	short what;			/* EV_READ|EV_WRITE asked by c-ares */
	struct event *ev;
};

struct dns {
	struct event_base *base;
	ares_channel ch;
	struct dns_sock *socks;
	struct event *timer;		/* ares_timeout() */
	TAILQ_HEAD(, dns_query) queries;
	int closing;			/* in dns_free(): no new lookups */
};

/* One host of a query while its addresses are looked up. */
struct dns_qhost {
	char *name;
	int pref;
	size_t n4, n6;
	struct sockaddr_storage *a4;	/* owned, NULL until an answer */
	struct sockaddr_storage *a6;
};

struct dns_query {
	struct dns *d;
	TAILQ_ENTRY(dns_query) entry;
	dns_result_fn *cb;
	void *arg;
	char *domain;			/* as asked; owned */
	int port;
	int mx;				/* dns_mx_lookup (else dns_host_lookup) */
	int cancelled;
	int pending;			/* c-ares lookups in flight */
	struct event *done_ev;		/* delivers res on the loop */
	struct dns_result *res;		/* set when complete */

	/* Filled by the answers (mx.c). */
	int status;			/* enum dns_status, or -1: from hosts */
	int implicit;			/* no MX: the domain is the host */
	size_t nhost;
	struct dns_qhost *hosts;	/* owned; at most DNS_MAX_HOSTS */
	int temp;			/* some lookup failed temporarily */
	int nxdomain;			/* some address lookup said NXDOMAIN */
	char *error;			/* the first failure, owned */
	uint32_t ttl;			/* min TTL seen; UINT32_MAX: none */
};

/* Handles the answer to one lookup of q (status as ares_callback gives). */
typedef void dns_answer_fn(struct dns_query *q, size_t host, int type,
    int status, const unsigned char *abuf, int alen);

/* resolver_ares.c */
struct dns_query *dns_query_new(struct dns *d, const char *domain, int port,
    int mx, dns_result_fn *cb, void *arg);
/* Look up name/type (ns_t_mx, ns_t_a, ns_t_aaaa); fn runs from c-ares. */
void dns_query_send(struct dns_query *q, const char *name, int type,
    size_t host, dns_answer_fn *fn);
/* q has its result (q->res): deliver it from the loop. */
void dns_query_done(struct dns_query *q);
/* After the last lookup of q was counted off: complete or free it. */
void dns_query_settle(struct dns_query *q);
void dns_query_free(struct dns_query *q);
/* The short name of a c-ares failure: "SERVFAIL", "timeout", ... */
const char *dns_ares_errstr(int status);

/* mx.c */
/* Build q->res from what the answers left in q (pending is 0). */
void dns_mx_complete(struct dns_query *q);
/* A result with only a status and a message; takes nothing. */
struct dns_result *dns_result_fail(enum dns_status st, const char *error);
/* Parse "1.2.3.4", "::1", "[1.2.3.4]", "[IPv6:::1]" with port; 0 or -1. */
int dns_parse_literal(const char *s, int port, struct sockaddr_storage *ss);
/* The smallest TTL of the answer section, or UINT32_MAX if none. */
uint32_t dns_answer_ttl(const unsigned char *abuf, int alen);

#endif
