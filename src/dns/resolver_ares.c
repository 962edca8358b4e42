/* SPDX-License-Identifier: MIT */
/*
 * resolver_ares.c: c-ares driven by libevent, and the life of a query.
 *
 * c-ares tells us through its sock_state_cb which sockets it wants watched
 * for reading or writing, and when it closes one; each gets one struct
 * event (struct dns_sock). One timer follows ares_timeout(). Both hand the
 * work to ares_process_fd(), which calls back dns_ares_cb for each answer;
 * that passes it to the handler in mx.c. Nothing here blocks, except
 * ares_init_options() reading /etc/resolv.conf in dns_new().
 * Callers: mx.c (dns_mx_lookup, dns_host_lookup); users through dns.h.
 *
 * Invariants
 *  1. User callbacks run from a query's own done_ev, never from inside a
 *     c-ares call, so a user may call dns_free() from its callback.
 *  2. A cancelled query is freed once c-ares has answered (or given up on)
 *     each of its lookups: c-ares still calls back for them.
 *  3. dns_free() destroys the channel first (c-ares calls back every lookup
 *     with ARES_EDESTRUCTION, and those handlers do nothing), then tells
 *     every query not cancelled and not yet delivered "resolver shut down".
 */
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <ares.h>
#include <event2/event.h>

#include "util/util.h"

#include "dns/dns_int.h"

#define DNS_DEFAULT_TIMEOUT_MS 5000
#define DNS_TRIES 2

/* One c-ares lookup of a query; freed in dns_ares_cb. */
struct dns_sub {
	struct dns_query *q;
	size_t host;
	int type;
	dns_answer_fn *fn;
};

static void dns_sock_cb(evutil_socket_t fd, short what, void *arg);

static void
dns_timer_update(struct dns *d)
{
	struct timeval tv, *tvp;

	tvp = ares_timeout(d->ch, NULL, &tv);
	if (tvp == NULL)
		evtimer_del(d->timer);
	else
		evtimer_add(d->timer, tvp);
}

static void
dns_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dns *d = arg;

	ares_process_fd(d->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	dns_timer_update(d);
}

static void
dns_sock_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dns *d = arg;

	/* May close this very socket: the dns_sock is not touched after. */
	ares_process_fd(d->ch, (what & EV_READ) ? fd : ARES_SOCKET_BAD,
	    (what & EV_WRITE) ? fd : ARES_SOCKET_BAD);
	dns_timer_update(d);
}

static void
dns_sock_drop(struct dns *d, struct dns_sock **pp)
{
	struct dns_sock *s = *pp;

	*pp = s->next;
	event_free(s->ev);
	free(s);
}

/*
 * c-ares (sock_state_cb): watch fd for reading and/or writing, or forget it
 * when both are 0 (c-ares is closing it).
 */
static void
dns_sock_state_cb(void *data, ares_socket_t fd, int readable, int writable)
{
	struct dns *d = data;
	struct dns_sock **pp, *s;
	short what;

	for (pp = &d->socks; *pp != NULL; pp = &(*pp)->next)
		if ((*pp)->fd == fd)
			break;
	if (!readable && !writable) {
		if (*pp != NULL)
			dns_sock_drop(d, pp);
		return;
	}
	what = (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0);
	s = *pp;
	if (s == NULL) {
		s = xcalloc(1, sizeof(*s));
		s->fd = fd;
		s->next = d->socks;
		d->socks = s;
	} else if (s->what == what) {
		return;
	} else {
		event_free(s->ev);
	}
	s->what = what;
	s->ev = event_new(d->base, fd, what | EV_PERSIST, dns_sock_cb, d);
	if (s->ev == NULL || event_add(s->ev, NULL) == -1)
		SL_PANIC("dns: cannot watch socket %d", (int)fd);
}

/* Parse one "ip", "ip:port", "[ipv6]" or "[ipv6]:port" into n. */
static int
dns_server_parse(const char *item, struct ares_addr_port_node *n)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *port = NULL, *end;
	size_t len;
	long p = 53;
	char *ep;

	if (item[0] == '[') {
		if ((end = strchr(item, ']')) == NULL)
			return -1;
		len = end - item - 1;
		item++;
		if (end[1] == ':')
			port = end + 2;
		else if (end[1] != '\0')
			return -1;
	} else if ((end = strchr(item, ':')) != NULL &&
	    strchr(end + 1, ':') == NULL) {
		len = end - item;
		port = end + 1;
	} else {
		len = strlen(item);	/* "1.2.3.4" or a bare "::1" */
	}
	if (len == 0 || len >= sizeof(host))
		return -1;
	memcpy(host, item, len);
	host[len] = '\0';
	if (port != NULL) {
		errno = 0;
		p = strtol(port, &ep, 10);
		if (*port == '\0' || *ep != '\0' || errno || p < 1 || p > 65535)
			return -1;
	}
	n->udp_port = n->tcp_port = (int)p;
	if (inet_pton(AF_INET, host, &n->addr.addr4) == 1)
		n->family = AF_INET;
	else if (inet_pton(AF_INET6, host, &n->addr.addr6) == 1)
		n->family = AF_INET6;
	else
		return -1;
	return 0;
}

static void
dns_servers_free(struct ares_addr_port_node *list)
{
	struct ares_addr_port_node *next;

	for (; list != NULL; list = next) {
		next = list->next;
		free(list);
	}
}

/* Set the servers of a comma list on d->ch; 0, or -1 with err. */
static int
dns_servers_set(struct dns *d, const char *servers, char *err, size_t errlen)
{
	struct ares_addr_port_node *list = NULL, **tail = &list, *n;
	char *copy, *item, *save = NULL;
	int rc = -1, ares_rc;

	copy = xstrdup(servers);
	for (item = strtok_r(copy, ",", &save); item != NULL;
	    item = strtok_r(NULL, ",", &save)) {
		item = sl_strtrim(item);
		n = xcalloc(1, sizeof(*n));
		*tail = n;
		tail = &n->next;
		if (dns_server_parse(item, n) == -1) {
			snprintf(err, errlen, "dns: bad server \"%s\" (want ip, "
			    "ip:port or [ipv6]:port)", item);
			goto fail;
		}
	}
	if (list == NULL) {
		snprintf(err, errlen, "dns: no server in \"%s\"", servers);
		goto fail;
	}
	if ((ares_rc = ares_set_servers_ports(d->ch, list)) != ARES_SUCCESS) {
		snprintf(err, errlen, "dns: setting servers: %s",
		    ares_strerror(ares_rc));
		goto fail;
	}
	rc = 0;
fail:
	dns_servers_free(list);
	free(copy);
	return rc;
}

/*
 * A resolver on base. No search list, no /etc/hosts (ares_query asks only
 * DNS), EDNS on. A server's SERVFAIL or REFUSED is final: the next server
 * is tried only on a timeout or a refused connection (a recursive server
 * that says SERVFAIL has already tried the authorities). Returns NULL with
 * a message in err.
 */
struct dns *
dns_new(struct event_base *base, const char *servers, int timeout_ms,
    char *err, size_t errlen)
{
	struct ares_options opts;
	struct dns *d;
	int rc;

	/* ares_library_init() is a no-op outside Windows (c-ares >= 1.11). */
	d = xcalloc(1, sizeof(*d));
	d->base = base;
	TAILQ_INIT(&d->queries);
	memset(&opts, 0, sizeof(opts));
	/* NOCHECKRESP: c-ares 1.18 reports a SERVFAIL or REFUSED it would
	 * retry elsewhere as ECONNREFUSED "Could not contact DNS servers";
	 * we take the first such answer as final and name it. */
	opts.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_EDNS | ARES_FLAG_NOCHECKRESP;
	opts.timeout = timeout_ms > 0 ? timeout_ms : DNS_DEFAULT_TIMEOUT_MS;
	opts.tries = DNS_TRIES;
	opts.sock_state_cb = dns_sock_state_cb;
	opts.sock_state_cb_data = d;
	rc = ares_init_options(&d->ch, &opts, ARES_OPT_FLAGS |
	    ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_SOCK_STATE_CB);
	if (rc != ARES_SUCCESS) {
		snprintf(err, errlen, "dns: c-ares init: %s", ares_strerror(rc));
		free(d);
		return NULL;
	}
	if (servers != NULL && servers[0] != '\0' &&
	    dns_servers_set(d, servers, err, errlen) == -1) {
		ares_destroy(d->ch);
		free(d);
		return NULL;
	}
	d->timer = evtimer_new(base, dns_timer_cb, d);
	if (d->timer == NULL)
		SL_PANIC("dns: evtimer_new failed");
	return d;
}

/*
 * Destroy the channel, then call back each query neither cancelled nor
 * delivered with DNS_TEMP "resolver shut down", before returning. Those
 * callbacks may cancel queries of d not yet called back, nothing more.
 */
void
dns_free(struct dns *d)
{
	struct dns_query *q;
	struct dns_result *res;
	dns_result_fn *cb;
	void *arg;

	if (d == NULL)
		return;
	d->closing = 1;
	/* Calls back every lookup with ARES_EDESTRUCTION (pending drops to
	 * 0, nothing else happens); then every query is freed below. */
	ares_destroy(d->ch);
	while ((q = TAILQ_FIRST(&d->queries)) != NULL) {
		cb = q->cancelled ? NULL : q->cb;
		arg = q->arg;
		dns_query_free(q);
		if (cb != NULL) {
			res = dns_result_fail(DNS_TEMP, "resolver shut down");
			cb(arg, res);
		}
	}
	while (d->socks != NULL)
		dns_sock_drop(d, &d->socks);
	event_free(d->timer);
	free(d);
}

static void
dns_deliver_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dns_query *q = arg;
	struct dns_result *res = q->res;
	dns_result_fn *cb = q->cb;
	void *cbarg = q->arg;

	/* Free first: the user may call dns_free() from its callback. */
	q->res = NULL;
	dns_query_free(q);
	cb(cbarg, res);
}

struct dns_query *
dns_query_new(struct dns *d, const char *domain, int port, int mx,
    dns_result_fn *cb, void *arg)
{
	struct dns_query *q;

	q = xcalloc(1, sizeof(*q));
	q->d = d;
	q->cb = cb;
	q->arg = arg;
	q->domain = xstrdup(domain);
	q->port = port;
	q->mx = mx;
	q->status = -1;
	q->ttl = UINT32_MAX;
	q->done_ev = event_new(d->base, -1, 0, dns_deliver_cb, q);
	if (q->done_ev == NULL)
		SL_PANIC("dns: event_new failed");
	TAILQ_INSERT_TAIL(&d->queries, q, entry);
	return q;
}

void
dns_query_free(struct dns_query *q)
{
	size_t i;

	TAILQ_REMOVE(&q->d->queries, q, entry);
	event_free(q->done_ev);
	dns_result_free(q->res);
	for (i = 0; i < q->nhost; i++) {
		free(q->hosts[i].name);
		free(q->hosts[i].a4);
		free(q->hosts[i].a6);
	}
	free(q->hosts);
	free(q->error);
	free(q->domain);
	free(q);
}

void
dns_query_done(struct dns_query *q)
{
	event_active(q->done_ev, EV_TIMEOUT, 1);
}

void
dns_query_settle(struct dns_query *q)
{
	if (q->pending > 0 || q->d->closing)
		return;
	if (q->cancelled) {
		dns_query_free(q);
		return;
	}
	dns_mx_complete(q);
	dns_query_done(q);
}

/* c-ares: the answer to one lookup (or its failure, or the shutdown). */
static void
dns_ares_cb(void *arg, int status, int timeouts, unsigned char *abuf,
    int alen)
{
	struct dns_sub *sub = arg;
	struct dns_query *q = sub->q;

	if (!q->cancelled && !q->d->closing && status != ARES_EDESTRUCTION &&
	    status != ARES_ECANCELLED)
		sub->fn(q, sub->host, sub->type, status, abuf, alen);
	free(sub);
	q->pending--;
	dns_query_settle(q);
}

void
dns_query_send(struct dns_query *q, const char *name, int type, size_t host,
    dns_answer_fn *fn)
{
	struct dns *d = q->d;
	struct dns_sub *sub;

	/* From a callback dns_free() runs: the channel is gone, and
	 * dns_free() answers q "resolver shut down". */
	if (d->closing)
		return;
	sub = xcalloc(1, sizeof(*sub));
	sub->q = q;
	sub->host = host;
	sub->type = type;
	sub->fn = fn;
	q->pending++;
	/* May call dns_ares_cb at once (bad name, no server): callers hold
	 * a count in q->pending while they send, so q is not settled yet. */
	ares_query(d->ch, name, ns_c_in, type, dns_ares_cb, sub);
	dns_timer_update(d);
}

/* Stop q: its callback never fires. Freed now, or when c-ares is done. */
void
dns_query_cancel(struct dns_query *q)
{
	if (q == NULL || q->cancelled)
		return;
	q->cancelled = 1;
	if (q->pending == 0 && !q->d->closing)
		dns_query_free(q);
}

const char *
dns_ares_errstr(int status)
{
	switch (status) {
	case ARES_ESERVFAIL:
		return "SERVFAIL";
	case ARES_EREFUSED:
		return "REFUSED";
	case ARES_ENOTFOUND:
		return "NXDOMAIN";
	case ARES_ENODATA:
		return "no records";
	case ARES_ETIMEOUT:
		return "timeout";
	case ARES_ECONNREFUSED:
		return "connection refused";
	case ARES_EFORMERR:
		return "FORMERR";
	case ARES_ENOTIMP:
		return "NOTIMP";
	case ARES_EBADRESP:
		return "bad response";
	case ARES_EBADNAME:
		return "bad name";
	case ARES_EDESTRUCTION:
		return "resolver shut down";
	default:
		return ares_strerror(status);
	}
}
