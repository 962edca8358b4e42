/* SPDX-License-Identifier: MIT */
/*
 * clients.c: what the server remembers of each client address beyond its
 * open sessions: the rate of its new connections ([server]
 * connection_rate_per_ip, per minute) and its AUTH failures (auth.c).
 *
 * A chained hash table keyed by the address bytes, with an LRU list: at
 * SMTPD_CLIENTS_MAX entries the least recently seen address is forgotten,
 * so memory stays bounded whatever the number of addresses (a forgotten
 * address starts again from zero, never blocked longer than it was).
 *
 * The rate is a sliding estimate over two fixed minutes, as Postfix's
 * anvil and most rate limiters do: the count of the current minute plus
 * the previous minute's, weighted by how much of it is still inside the
 * last 60 seconds. Every connection counts, refused ones too.
 */
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "smtpd/smtpd_int.h"
#include "util/util.h"

#define SMTPD_CLIENTS_MAX 65536
#define SMTPD_CLIENTS_BUCKETS 16384
#define SMTPD_RATE_WINDOW_MS 60000

static uint32_t
smtpd_client_key(const struct sockaddr *sa, uint8_t addr[16], int *family)
{
	memset(addr, 0, 16);
	*family = sa->sa_family;
	if (sa->sa_family == AF_INET)
		memcpy(addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
	else if (sa->sa_family == AF_INET6)
		memcpy(addr, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
	return sl_hash(addr, 16) ^ (uint32_t)*family;
}

struct smtpd_client *
smtpd_client_get(struct smtpd_server *srv, const struct sockaddr *sa)
{
	struct smtpd_clients *t = &srv->clients;
	struct smtpd_client *c, **pp;
	uint8_t addr[16];
	int family;
	uint32_t h = smtpd_client_key(sa, addr, &family);

	if (t->tab == NULL) {
		t->tab = xcalloc(SMTPD_CLIENTS_BUCKETS, sizeof(*t->tab));
		TAILQ_INIT(&t->lru);
	}
	for (c = t->tab[h % SMTPD_CLIENTS_BUCKETS]; c != NULL; c = c->hnext) {
		if (c->family == family && memcmp(c->addr, addr, 16) == 0) {
			TAILQ_REMOVE(&t->lru, c, lru);
			TAILQ_INSERT_TAIL(&t->lru, c, lru);
			return c;
		}
	}
	if (t->n >= SMTPD_CLIENTS_MAX) {
		/* forget the address seen least recently */
		c = TAILQ_FIRST(&t->lru);
		TAILQ_REMOVE(&t->lru, c, lru);
		for (pp = &t->tab[c->hash % SMTPD_CLIENTS_BUCKETS]; *pp != c;
		    pp = &(*pp)->hnext)
			;
		*pp = c->hnext;
		free(c);
		t->n--;
	}
	c = xcalloc(1, sizeof(*c));
	memcpy(c->addr, addr, 16);
	c->family = family;
	c->hash = h;
	c->hnext = t->tab[h % SMTPD_CLIENTS_BUCKETS];
	t->tab[h % SMTPD_CLIENTS_BUCKETS] = c;
	TAILQ_INSERT_TAIL(&t->lru, c, lru);
	t->n++;
	return c;
}

int
smtpd_client_rate_over(struct smtpd_server *srv, const struct sockaddr *sa,
    int64_t limit, int64_t now_ms)
{
	struct smtpd_client *c = smtpd_client_get(srv, sa);
	int64_t elapsed;
	uint64_t est;

	if (c->win_start == 0)		/* new */
		c->win_start = now_ms;
	elapsed = now_ms - c->win_start;
	if (elapsed >= SMTPD_RATE_WINDOW_MS) {
		/* a new minute; the last one counts only if it was the one before */
		c->prev_count = elapsed < 2 * SMTPD_RATE_WINDOW_MS ?
		    c->win_count : 0;
		c->win_count = 0;
		c->win_start = now_ms - elapsed % SMTPD_RATE_WINDOW_MS;
		elapsed = now_ms - c->win_start;
	}
	if (c->win_count < UINT32_MAX)
		c->win_count++;
	est = c->win_count + (uint64_t)c->prev_count *
	    (uint64_t)(SMTPD_RATE_WINDOW_MS - elapsed) / SMTPD_RATE_WINDOW_MS;
	return est > (uint64_t)limit;
}

void
smtpd_clients_free(struct smtpd_server *srv)
{
	struct smtpd_client *c;

	if (srv->clients.tab == NULL)
		return;
	while ((c = TAILQ_FIRST(&srv->clients.lru)) != NULL) {
		TAILQ_REMOVE(&srv->clients.lru, c, lru);
		free(c);
	}
	free(srv->clients.tab);
	srv->clients.tab = NULL;
	srv->clients.n = 0;
}
