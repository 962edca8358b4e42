/* SPDX-License-Identifier: MIT */
/*
 * dns.h: asynchronous next-hop resolution on the event loop (c-ares).
 *
 * dns_mx_lookup() answers the question delivery asks: "which hosts, in
 * which order, and at which addresses, take mail for this domain?"
 *  - MX records by preference, equal preferences shuffled (RFC 5321 5.1);
 *  - no MX records (NODATA): the domain itself, by its A/AAAA (implicit MX);
 *  - a null MX (one MX "." with preference 0, RFC 7505): DNS_NULLMX;
 *  - NXDOMAIN: DNS_NXDOMAIN;
 *  - SERVFAIL, REFUSED, timeouts: DNS_TEMP (delivery holds the domain).
 * MX hosts whose addresses do not resolve are left out; if none is left, the
 * result is DNS_TEMP when any failure was temporary, else DNS_NOHOST.
 *
 * Threads: the event loop thread of the base given to dns_new().
 */
#ifndef SL_DNS_H
#define SL_DNS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct event_base;
struct dns;
struct dns_query;

enum dns_status {
	DNS_OK = 0,
	DNS_NXDOMAIN,	/* permanent: 5.1.2 bad destination system address */
	DNS_NULLMX,	/* permanent: 5.1.10 null MX */
	DNS_NOHOST,	/* permanent: no MX host and no address (5.4.4) */
	DNS_TEMP,	/* temporary: SERVFAIL, timeout, refused (4.4.3) */
};

struct dns_host {
	char *name;			/* MX target or the domain; owned */
	int pref;			/* MX preference; 0 for implicit MX */
	size_t naddr;
	struct sockaddr_storage *addrs;	/* port set as asked; owned */
};

struct dns_result {
	enum dns_status status;
	char *error;			/* human-readable reason, or NULL; owned */
	size_t nhost;
	struct dns_host *hosts;		/* in delivery order; owned */
	uint32_t ttl;			/* seconds the answer may be reused */
};

/* Called once per query on the loop thread; takes res (dns_result_free). */
typedef void dns_result_fn(void *arg, struct dns_result *res);

/*
 * A resolver. servers: "" for the system's resolv.conf, or a comma list of
 * "ip", "ip:port" or "[ipv6]:port". timeout_ms per try (c-ares retries).
 * Returns NULL with a message in err.
 */
struct dns *dns_new(struct event_base *base, const char *servers,
    int timeout_ms, char *err, size_t errlen);
/*
 * Cancel every query and free. Each query neither cancelled nor delivered
 * gets its callback, DNS_TEMP "resolver shut down", before dns_free returns;
 * those callbacks may cancel other queries of d, nothing more.
 */
void dns_free(struct dns *d);

/*
 * The mail hosts of domain, addresses with port set to port. A domain
 * literal "[192.0.2.1]" is its own host. Error texts read "SERVFAIL looking
 * up MX for example.com". Never NULL; the handle is valid until the callback
 * runs or dns_query_cancel().
 */
struct dns_query *dns_mx_lookup(struct dns *d, const char *domain, int port,
    dns_result_fn *cb, void *arg);
/*
 * The addresses of one host (a static route "[host]:port"): one dns_host.
 * An IP literal ("192.0.2.1", "2001:db8::1", "[...]", "[IPv6:...]") answers
 * without DNS (the callback still runs from the loop); "[name]" is name.
 */
struct dns_query *dns_host_lookup(struct dns *d, const char *host, int port,
    dns_result_fn *cb, void *arg);
/* Stop a query whose callback has not run: it never fires. NULL is fine. */
void dns_query_cancel(struct dns_query *q);

/* Free res and all it owns; returns NULL. */
struct dns_result *dns_result_free(struct dns_result *res);

#endif
