/* SPDX-License-Identifier: MIT */
/*
 * shaping.c: the live state of shaping: sites (a [site] of the file, or
 * implicit: one per set of next hops no [site] matches), their paths (one
 * per source address), and the two questions the scheduler asks of a path:
 * may a connection open (shaping_open), may a message go (shaping_send).
 *
 * Owns the sites (a hash table by name), their paths, the waiters' lists
 * and timers, the file as parsed, and the Redis client (shared.c speaks
 * through it). Configured sites live as long as the file names them, so
 * their counters survive a quiet spell; implicit sites go with their last
 * destination unless an action holds them.
 *
 * A decision is O(1) in the number of sites and of queued messages: a
 * path answers from its own counters (or asks Redis once), and a waiter
 * is woken one at a time, by the event that can let it go on: a token or
 * slot answer, a timer at the end of a wait, a connection's close.
 *
 * Invariants
 *  1. A path with waiters has a request to Redis in flight, a timer
 *     armed, or waits for a connection to close (site->open_at = never);
 *     so no waiter is forgotten, and none is woken in a loop.
 *  2. What this node sends on a path keeps to the limits: the path's own
 *     while Redis is not set; Redis's answer while it is up; limit / nodes
 *     while it is set and down.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "conf/conf.h"
#include "log/log.h"
#include "shaping/shaping_int.h"
#include "util/util.h"

#define SEC 1000000LL

int64_t
shaping_now(const struct shaping *sh)
{
	return sh->now != NULL ? sh->now(sh->now_arg) : sl_now_us();
}

void
shaping_set_clock(struct shaping *sh, int64_t (*now_us)(void *), void *arg)
{
	sh->now = now_us;
	sh->now_arg = arg;
}

int
shaping_shared(const struct shaping *sh)
{
	return sh->redis != NULL && shaping_redis_is_up(sh->redis);
}

static int shaping_alone(const struct shaping *sh);

uint64_t
shaping_share(const struct shaping *sh, uint64_t limit)
{
	uint64_t v;

	if (limit == 0 || !shaping_alone(sh))
		return limit;
	v = limit / (uint64_t)sh->nodes;
	return v > 0 ? v : 1;
}

/* ---- limits of a path ---- */

/* Alone while Redis is set and down: this node keeps its share. */
static int
shaping_alone(const struct shaping *sh)
{
	return sh->redis != NULL && sh->nodes > 1 && !shaping_shared(sh);
}

int64_t
shaping_path_interval_all(const struct shaping_path *p)
{
	const struct shaping_site *site = p->site;

	if (site->act[SHAPING_A_RATE].until > shaping_now(site->sh))
		return shaping_rate_interval(&site->act[SHAPING_A_RATE].rate);
	if (site->conf != NULL && site->conf->rate.n > 0)
		return shaping_rate_interval(&site->conf->rate);
	return 0;
}

int64_t
shaping_path_interval(const struct shaping_path *p)
{
	int64_t iv = shaping_path_interval_all(p);

	return shaping_alone(p->site->sh) ? iv * p->site->sh->nodes : iv;
}

int
shaping_path_conn_limit_all(const struct shaping_path *p)
{
	const struct shaping_site *site = p->site;

	if (site->act[SHAPING_A_CONNS].until > shaping_now(site->sh))
		return site->act[SHAPING_A_CONNS].connections;
	return site->conf != NULL ? site->conf->connections : 0;
}

int
shaping_path_conn_limit(const struct shaping_path *p)
{
	return (int)shaping_share(p->site->sh,
	    (uint64_t)shaping_path_conn_limit_all(p));
}

int64_t
shaping_path_conn_interval_all(const struct shaping_path *p)
{
	const struct shaping_site *site = p->site;

	if (site->conf == NULL || site->conf->connection_rate.n == 0)
		return 0;
	return shaping_rate_interval(&site->conf->connection_rate);
}

int64_t
shaping_path_conn_interval(const struct shaping_path *p)
{
	int64_t iv = shaping_path_conn_interval_all(p);

	return shaping_alone(p->site->sh) ? iv * p->site->sh->nodes : iv;
}

uint64_t
shaping_path_budget_all(const struct shaping_path *p, int64_t now)
{
	if (p->src == NULL || !p->src->has_warmup)
		return 0;
	return shaping_warmup_budget(&p->src->warmup, p->warm_start, now);
}

uint64_t
shaping_path_budget(const struct shaping_path *p, int64_t now)
{
	return shaping_share(p->site->sh, shaping_path_budget_all(p, now));
}

/* ---- meters: messages in the last minute ---- */

void
shaping_meter_add(struct shaping_meter *m, int64_t now)
{
	int64_t sec = now / SEC;
	size_t i = (size_t)(sec % 60);

	if (m->sec[i] != sec) {
		m->sec[i] = sec;
		m->n[i] = 0;
	}
	m->n[i]++;
}

uint64_t
shaping_meter_minute(const struct shaping_meter *m, int64_t now)
{
	int64_t sec = now / SEC;
	uint64_t sum = 0;

	for (size_t i = 0; i < 60; i++)
		if (m->sec[i] > sec - 60 && m->sec[i] <= sec)
			sum += m->n[i];
	return sum;
}

/* ---- waiters ---- */

static void
wait_add(struct shaping_wait_list *l, struct shaping_wait *w)
{
	if (w == NULL || w->list == l)
		return;
	shaping_wait_cancel(w);
	TAILQ_INSERT_TAIL(l, w, entry);
	w->list = l;
}

void
shaping_wait_cancel(struct shaping_wait *w)
{
	if (w == NULL || w->list == NULL)
		return;
	TAILQ_REMOVE((struct shaping_wait_list *)w->list, w, entry);
	w->list = NULL;
}

/* Wake the first waiter of l; 1 if there was one. */
static int
wait_wake_one(struct shaping_wait_list *l)
{
	struct shaping_wait *w = TAILQ_FIRST(l);

	if (w == NULL)
		return 0;
	TAILQ_REMOVE(l, w, entry);
	w->list = NULL;
	w->fn(w);
	return 1;
}

/* Wake every waiter of l once (those that wait again are not woken
 * twice: they go back to l, not to the list being woken). */
static void
wait_wake_all(struct shaping_wait_list *l)
{
	struct shaping_wait_list all = TAILQ_HEAD_INITIALIZER(all);
	struct shaping_wait *w;

	TAILQ_CONCAT(&all, l, entry);
	TAILQ_FOREACH(w, &all, entry)
		w->list = &all;
	while (wait_wake_one(&all))
		;
}

void
shaping_site_wake_all(struct shaping_site *site)
{
	wait_wake_all(&site->held_waiters);
	wait_wake_all(&site->open_waiters);
	for (size_t i = 0; i < site->npaths; i++) {
		wait_wake_all(&site->paths[i]->send_waiters);
		shaping_path_kick(site->paths[i]);
	}
}

/* Fire ev at `at` (our clock, unix us). The loop's cached time may be
 * behind by a whole turn: refreshed first, so a token's timer does not
 * fire before the token is due. */
static void
timer_at(struct event *ev, int64_t at, int64_t now)
{
	int64_t wait = at > now ? at - now : 0;
	struct timeval tv = { wait / SEC, wait % SEC };

	event_base_update_cache_time(event_get_base(ev));
	evtimer_add(ev, &tv);
}

/* When p's next send is due (our clock). */
static int64_t
path_send_at(const struct shaping_path *p, int64_t now)
{
	int64_t at = p->send_token ? now : p->send_next;

	if (!shaping_shared(p->site->sh) && p->rate.tat > at &&
	    shaping_path_interval(p) > 0)
		at = p->rate.tat;
	return at;
}

/* libevent's clock is coarser than ours (CLOCK_MONOTONIC_COARSE, up to a
 * tick behind): the timer may fire a few ms before the token is due. Then
 * nobody is woken (they would only wait again) and it waits the rest. */
static void
path_send_fire(evutil_socket_t fd, short what, void *arg)
{
	struct shaping_path *p = arg;
	int64_t now = shaping_now(p->site->sh);

	if (path_send_at(p, now) <= now)
		wait_wake_one(&p->send_waiters);
	shaping_path_kick(p);
}

void
shaping_path_kick(struct shaping_path *p)
{
	int64_t now = shaping_now(p->site->sh);

	if (TAILQ_EMPTY(&p->send_waiters) || p->send_req != NULL)
		return;
	timer_at(p->send_ev, path_send_at(p, now), now);
}

/* A wait of the site's openers is over (a slot freed, a rate's wait
 * ended, Redis answered): each tries again, once. */
static void
site_open_fire(evutil_socket_t fd, short what, void *arg)
{
	struct shaping_site *site = arg;

	site->open_at = INT64_MAX;
	wait_wake_all(&site->open_waiters);
}

void
shaping_site_kick(struct shaping_site *site)
{
	int64_t now = shaping_now(site->sh);

	if (TAILQ_EMPTY(&site->open_waiters) || site->open_at == INT64_MAX)
		return;
	timer_at(site->open_ev, site->open_at, now);
}

/* The openers of site try again at `at` (or sooner, if asked sooner). */
static void
site_open_at(struct shaping_site *site, int64_t at)
{
	if (at < site->open_at)
		site->open_at = at;
	shaping_site_kick(site);
}

void
shaping_site_hold(struct shaping_site *site, struct shaping_wait *w)
{
	wait_add(&site->held_waiters, w);
}

/* ---- paths ---- */

static struct shaping_path *
path_new(struct shaping_site *site, const char *addr)
{
	struct shaping_path *p = xcalloc(1, sizeof(*p));
	struct shaping *sh = site->sh;

	p->site = site;
	p->attached = 1;
	p->refs = 1;
	TAILQ_INIT(&p->send_waiters);
	p->send_ev = evtimer_new(sh->base, path_send_fire, p);
	p->key = xasprintf("%s:%s", site->name, addr ? addr : "-");
	if (addr != NULL) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&p->ss;
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&p->ss;
		p->addr = xstrdup(addr);
		if (inet_pton(AF_INET, addr, &sin->sin_addr) == 1) {
			sin->sin_family = AF_INET;
			p->sslen = sizeof(*sin);
		} else if (inet_pton(AF_INET6, addr, &sin6->sin6_addr) == 1) {
			sin6->sin6_family = AF_INET6;
			p->sslen = sizeof(*sin6);
		}
		p->src = shaping_conf_source(sh->file, addr);
	}
	return p;
}

static void
path_unref(struct shaping_path *p)
{
	if (--p->refs > 0)
		return;
	shaping_shared_forget(p);
	event_free(p->send_ev);
	for (size_t i = 0; i < p->nslots; i++)
		free(p->slots[i]);
	free(p->slots);
	free(p->slot_open);
	free(p->addr);
	free(p->key);
	free(p);
}

/* p leaves its site (reload): its waiters try again elsewhere. */
static void
path_detach(struct shaping_path *p)
{
	p->attached = 0;
	p->src = NULL;		/* in the file being replaced */
	shaping_shared_forget(p);
	evtimer_del(p->send_ev);
	wait_wake_all(&p->send_waiters);
	path_unref(p);
}

/* ---- warm-up starts: the file, else this node's record of first use ---- */

/* The recorded start of addr (unix s), or 0. */
static int64_t
state_lookup(const char *path, const char *addr)
{
	FILE *f = fopen(path, "r");
	char line[512], a[256];
	long long t;
	int64_t found = 0;

	if (f == NULL)
		return 0;
	while (fgets(line, sizeof(line), f) != NULL)
		if (sscanf(line, "warmup_start %255s %lld", a, &t) == 2 &&
		    strcmp(a, addr) == 0)
			found = t;
	fclose(f);
	return found;
}

/* Record addr's start (at load or reload: not on the delivery path). */
static void
state_record(const char *path, const char *addr, int64_t start_s)
{
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	char line[320];
	int n;

	if (fd < 0) {
		log_warn("shaping: %s", path);
		return;
	}
	n = snprintf(line, sizeof(line), "warmup_start %s %lld\n", addr,
	    (long long)start_s);
	if (write(fd, line, (size_t)n) != n || fsync(fd) != 0)
		log_warn("shaping: %s", path);
	close(fd);
}

static int64_t
warm_start_of(struct shaping *sh, const struct shaping_source_conf *src)
{
	int64_t t;

	if (src->warmup_start > 0)
		return src->warmup_start * SEC;
	if ((t = state_lookup(sh->state_path, src->addr)) > 0)
		return t * SEC;
	t = shaping_now(sh) / SEC;
	state_record(sh->state_path, src->addr, t);
	return t * SEC;
}

/* ---- sites ---- */

static uint32_t
site_hash(const void *node)
{
	return sl_hash_str(((const struct shaping_site *)node)->name);
}

struct shaping_site *
shaping_site_find(struct shaping *sh, const char *name)
{
	struct shaping_site *site;

	for (site = sh->tab[sl_hash_str(name) % sh->tab_size]; site != NULL;
	    site = site->hnext)
		if (strcmp(site->name, name) == 0)
			return site;
	return NULL;
}

/* Make site's paths what its [site] says (a new site, or reload). */
static void
site_paths_set(struct shaping_site *site)
{
	struct shaping *sh = site->sh;
	const struct shaping_site_conf *c = site->conf;
	size_t n = c != NULL && c->nsources > 0 ? c->nsources : 1;
	struct shaping_path **np = xcalloc(n, sizeof(*np));

	for (size_t i = 0; i < n; i++) {
		const char *addr = c != NULL && c->nsources > 0 ?
		    c->sources[i] : NULL;
		for (size_t k = 0; k < site->npaths; k++) {
			struct shaping_path *p = site->paths[k];
			if (p != NULL && ((addr == NULL && p->addr == NULL) ||
			    (addr && p->addr && strcmp(addr, p->addr) == 0))) {
				np[i] = p;
				site->paths[k] = NULL;
				break;
			}
		}
		if (np[i] == NULL)
			np[i] = path_new(site, addr);
		np[i]->src = addr ? shaping_conf_source(sh->file, addr) : NULL;
		if (np[i]->src != NULL && np[i]->src->has_warmup)
			np[i]->warm_start = warm_start_of(sh, np[i]->src);
	}
	for (size_t k = 0; k < site->npaths; k++)
		if (site->paths[k] != NULL)
			path_detach(site->paths[k]);
	free(site->paths);
	site->paths = np;
	site->npaths = n;
	if (site->rr >= n)
		site->rr = 0;
}

static struct shaping_site *
site_new(struct shaping *sh, const char *name,
    const struct shaping_site_conf *conf)
{
	struct shaping_site *site = xcalloc(1, sizeof(*site));
	size_t b;

	if (sh->nsites >= sh->tab_size) {
		sh->tab = (struct shaping_site **)sl_chain_rehash(
		    (void **)sh->tab, sh->tab_size, sh->tab_size * 2,
		    offsetof(struct shaping_site, hnext), site_hash);
		sh->tab_size *= 2;
	}
	site->sh = sh;
	site->name = xstrdup(name);
	site->conf = conf;
	TAILQ_INIT(&site->open_waiters);
	TAILQ_INIT(&site->held_waiters);
	site->open_at = INT64_MAX;
	site->open_ev = evtimer_new(sh->base, site_open_fire, site);
	site_paths_set(site);
	shaping_hits_reset(site);
	b = sl_hash_str(name) % sh->tab_size;
	site->hnext = sh->tab[b];
	sh->tab[b] = site;
	sh->nsites++;
	return site;
}

static void
site_free(struct shaping_site *site)
{
	struct shaping *sh = site->sh;

	sl_chain_unlink((void **)&sh->tab[sl_hash_str(site->name) %
	    sh->tab_size], site, offsetof(struct shaping_site, hnext));
	sh->nsites--;
	for (size_t i = 0; i < site->npaths; i++)
		path_detach(site->paths[i]);
	free(site->paths);
	for (int k = 0; k < SHAPING_A_N; k++)
		shaping_act_clear(&site->act[k]);
	shaping_hits_drop(site);
	event_free(site->open_ev);
	free(site->name);
	free(site);
}

/* An implicit site nobody needs any more goes. */
void
shaping_site_maybe_free(struct shaping_site *site)
{
	if (site->conf != NULL || site->refs > 0)
		return;
	shaping_act_expire(site, shaping_now(site->sh));
	for (int k = 0; k < SHAPING_A_N; k++)
		if (site->act[k].until != 0)
			return;
	if (site->nconn > 0 || !TAILQ_EMPTY(&site->open_waiters) ||
	    !TAILQ_EMPTY(&site->held_waiters))
		return;
	site_free(site);
}

struct shaping_site *
shaping_site_get(struct shaping *sh, const char *domain,
    const char *const *hosts, size_t nhosts, const char *key)
{
	const struct shaping_site_conf *c = shaping_conf_match(sh->file, domain,
	    hosts, nhosts);
	const char *name = c != NULL ? c->name : key;
	struct shaping_site *site = shaping_site_find(sh, name);

	if (site == NULL)
		site = site_new(sh, name, c);
	site->refs++;
	return site;
}

void
shaping_site_put(struct shaping_site *site)
{
	if (site == NULL)
		return;
	site->refs--;
	shaping_site_maybe_free(site);
}

const char *
shaping_site_name(const struct shaping_site *site)
{
	return site->name;
}

int
shaping_site_messages_per_connection(const struct shaping_site *site)
{
	return site->conf ? site->conf->messages_per_connection : 0;
}

int
shaping_site_recipients_per_transaction(const struct shaping_site *site)
{
	return site->conf ? site->conf->recipients_per_transaction : 0;
}

void
shaping_iso_time(int64_t us, char *buf, size_t len)
{
	time_t t = (time_t)(us / SEC);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int64_t
shaping_site_suspended(struct shaping_site *site, const char **why)
{
	const struct shaping_act_state *a = &site->act[SHAPING_A_SUSPEND];
	int64_t now = shaping_now(site->sh);
	char until[32];

	if (a->until <= now)
		return 0;
	shaping_iso_time(a->until, until, sizeof(until));
	snprintf(site->why, sizeof(site->why), "site %s suspended by rule %s "
	    "until %s", site->name, a->rule ? a->rule : "?", until);
	*why = site->why;
	return a->until / 1000;
}

/* ---- opening connections ---- */

static int
path_usable(const struct shaping_path *p, unsigned families, int64_t now)
{
	if (p->addr != NULL && !(families & (1u << p->ss.ss_family)))
		return 0;
	return p->unbindable_until <= now;
}

static enum shaping_answer
open_go(struct shaping_site *site, size_t idx, struct shaping_path **out)
{
	struct shaping_path *p = site->paths[idx];

	p->nconn++;
	p->nopening++;
	p->refs++;
	site->nconn++;
	site->rr = (idx + 1) % site->npaths;
	*out = p;
	return SHAPING_GO;
}

/* The warm-up window of now: its counter starts again in a new one. */
static void
send_window(struct shaping_path *p, int64_t now)
{
	int64_t win = shaping_warmup_window(&p->src->warmup, now);

	if (win != p->warm_window) {
		p->warm_window = win;
		p->warm_used = 0;
		p->spent = 0;
	}
}

/* 0 if a message could go on p now; else when one could (unix us). A
 * connection opened before then would only wait. */
static int64_t
send_ready_at(struct shaping_path *p, int64_t now)
{
	uint64_t budget = shaping_path_budget(p, now);

	if (budget > 0) {
		send_window(p, now);
		if (!shaping_shared(p->site->sh) && p->warm_used >= budget)
			p->spent = 1;
		if (p->spent)
			return (p->warm_window + 1) * p->src->warmup.unit_us;
	}
	if (shaping_shared(p->site->sh))
		return p->send_token || p->send_next <= now ? 0 : p->send_next;
	if (shaping_path_interval(p) > 0 && p->rate.tat > now)
		return p->rate.tat;
	return 0;
}

enum shaping_answer
shaping_open(struct shaping_site *site, uint32_t pin, unsigned families,
    struct shaping_wait *w, struct shaping_path **out, const char **why)
{
	struct shaping *sh = site->sh;
	int64_t now = shaping_now(sh), next = INT64_MAX;
	size_t n = site->npaths, start;
	int usable = 0;
	const char *reason = NULL;

	start = site->conf && site->conf->select == SHAPING_SELECT_PIN ?
	    pin % n : site->rr;
	for (size_t k = 0; k < n; k++) {
		size_t idx = (start + k) % n;
		struct shaping_path *p = site->paths[idx];
		int limit = shaping_path_conn_limit(p);
		int64_t iv = shaping_path_conn_interval(p), wait;

		if (!path_usable(p, families, now))
			continue;
		usable = 1;
		if (limit > 0 && p->nconn >= limit) {
			reason = "connection limit";
			continue;
		}
		if ((wait = send_ready_at(p, now)) > 0) {
			if (wait < next)
				next = wait;
			reason = p->spent ? "warm-up budget" : "rate";
			continue;
		}
		/* under a rate, one connection on its way at a time: it takes
		 * the next token; more open only if sending is slower */
		if (p->nopening > 0 && (shaping_path_interval(p) > 0 ||
		    shaping_path_budget(p, now) > 0)) {
			reason = "rate";
			continue;
		}
		if (limit == 0 && iv == 0)
			return open_go(site, idx, out);
		if (shaping_shared(sh)) {
			if (p->open_token != 0) {
				p->open_token = 0;
				return open_go(site, idx, out);
			}
			if (p->open_req != NULL) {
				reason = "Redis";
				continue;
			}
			if (now < p->open_next) {
				if (p->open_next < next)
					next = p->open_next;
				reason = "connection rate";
				continue;
			}
			if (shaping_shared_open(p) == 0) {
				reason = "Redis";
				continue;
			}
		}
		if (iv > 0 && (wait = shaping_gcra_take(&p->crate, iv, now)) > 0) {
			if (now + wait < next)
				next = now + wait;
			reason = "connection rate";
			continue;
		}
		return open_go(site, idx, out);
	}
	if (!usable) {
		snprintf(site->why, sizeof(site->why), "no source address of "
		    "site %s can reach these hosts (unbindable, or another "
		    "address family)", site->name);
		*why = site->why;
		return SHAPING_NONE;
	}
	if (reason == NULL || strcmp(reason, "connection limit") == 0)
		snprintf(site->why, sizeof(site->why), "connection limit of "
		    "site %s", site->name);
	else if (strcmp(reason, "Redis") == 0)
		snprintf(site->why, sizeof(site->why), "connection slot of "
		    "site %s asked of Redis", site->name);
	else if (strcmp(reason, "rate") == 0)
		snprintf(site->why, sizeof(site->why), "rate limit of site %s",
		    site->name);
	else if (strcmp(reason, "warm-up budget") == 0)
		snprintf(site->why, sizeof(site->why), "warm-up budget of "
		    "site %s spent until the next window", site->name);
	else
		snprintf(site->why, sizeof(site->why), "connection rate of "
		    "site %s", site->name);
	*why = site->why;
	wait_add(&site->open_waiters, w);
	site_open_at(site, next);
	return SHAPING_WAIT;
}

void
shaping_conn_ready(struct shaping_path *p)
{
	p->nopening--;
	if (p->attached)
		site_open_at(p->site, shaping_now(p->site->sh));
}

void
shaping_conn_closed(struct shaping_path *p, int ready)
{
	struct shaping_site *site = p->site;

	if (!ready)
		p->nopening--;
	p->nconn--;
	site->nconn--;
	shaping_shared_release(p);
	if (p->attached)
		site_open_at(site, shaping_now(site->sh));
	path_unref(p);
	shaping_site_maybe_free(site);
}

const struct sockaddr_storage *
shaping_path_source(const struct shaping_path *p, socklen_t *len)
{
	if (p->addr == NULL)
		return NULL;
	*len = p->sslen;
	return &p->ss;
}

const char *
shaping_path_name(const struct shaping_path *p)
{
	return p->addr ? p->addr : "default";
}

const char *
shaping_path_helo(const struct shaping_path *p)
{
	return p->site->conf ? p->site->conf->helo : NULL;
}

void
shaping_path_unbindable(struct shaping_path *p, const char *why)
{
	int64_t now = shaping_now(p->site->sh);

	/* skipped a minute, then tried again; logged once until it binds */
	p->unbindable_until = now + 60 * SEC;
	if (!p->unbind_logged)
		log_ev(LOG_WARNING, NULL, "source address unusable", "site",
		    p->site->name, "source", shaping_path_name(p), "reason",
		    why, NULL);
	p->unbind_logged = 1;
}

/* ---- sending messages ---- */

static enum shaping_answer send_wait(struct shaping_path *p,
    struct shaping_wait *w, const char **why, const char *what);

int
shaping_send_due(struct shaping_path *p, struct shaping_wait *w,
    const char **why)
{
	int64_t now = shaping_now(p->site->sh), at = send_ready_at(p, now);

	if (at == 0)
		return 1;
	p->send_next = at > p->send_next ? at : p->send_next;
	send_wait(p, w, why, p->spent ? "warm-up budget" : "rate");
	return 0;
}

static enum shaping_answer
send_go(struct shaping_path *p, int64_t now)
{
	p->unbind_logged = 0;		/* it bound: log the next failure */
	shaping_meter_add(&p->meter, now);
	shaping_path_kick(p);
	return SHAPING_GO;
}

static enum shaping_answer
send_wait(struct shaping_path *p, struct shaping_wait *w, const char **why,
    const char *what)
{
	char r[48] = "";

	if (strcmp(what, "rate") == 0 && p->site->conf != NULL)
		shaping_rate_format(p->site->act[SHAPING_A_RATE].until >
		    shaping_now(p->site->sh) ? &p->site->act[SHAPING_A_RATE].rate :
		    &p->site->conf->rate, r, sizeof(r));
	snprintf(p->site->why, sizeof(p->site->why), "%s%s%s of site %s from "
	    "%s", strcmp(what, "rate") == 0 ? "rate limit" : what,
	    r[0] ? " " : "", r, p->site->name, shaping_path_name(p));
	*why = p->site->why;
	wait_add(&p->send_waiters, w);
	shaping_path_kick(p);
	return SHAPING_WAIT;
}

enum shaping_answer
shaping_send(struct shaping_path *p, struct shaping_wait *w, const char **why)
{
	struct shaping *sh = p->site->sh;
	int64_t now = shaping_now(sh), iv = shaping_path_interval(p), wait;
	uint64_t budget = shaping_path_budget(p, now);

	if (iv == 0 && budget == 0)
		return send_go(p, now);
	if (budget > 0)
		send_window(p, now);
	/* a path the file no longer has decides alone until it closes */
	if (shaping_shared(sh) && p->attached) {
		/* a token is good for one interval after it came */
		if (p->send_token != 0 && now - p->send_token <
		    (iv > SEC ? iv : SEC)) {
			p->send_token = 0;
			return send_go(p, now);
		}
		p->send_token = 0;
		if (p->send_req != NULL)
			return send_wait(p, w, why, "answer from Redis");
		if (now < p->send_next)
			return send_wait(p, w, why, p->spent ?
			    "warm-up budget" : "rate");
		if (shaping_shared_send(p) == 0)
			return send_wait(p, w, why, "answer from Redis");
	}
	if (budget > 0 && p->warm_used >= budget) {
		p->spent = 1;
		p->send_next = (p->warm_window + 1) * p->src->warmup.unit_us;
		return send_wait(p, w, why, "warm-up budget");
	}
	if (iv > 0 && (wait = shaping_gcra_take(&p->rate, iv, now)) > 0) {
		p->send_next = now + wait;
		return send_wait(p, w, why, "rate");
	}
	if (budget > 0)
		p->warm_used++;
	return send_go(p, now);
}

/* ---- the whole ---- */

static void
node_name(struct shaping *sh)
{
	char host[64] = "";

	gethostname(host, sizeof(host) - 1);
	snprintf(sh->node, sizeof(sh->node), "%s:%d:%llx", host, (int)getpid(),
	    (unsigned long long)(sl_now_us() & 0xffffffffffULL));
}

/* Use file (taken) and conf's [shaping] from now on. */
static void
shaping_use(struct shaping *sh, const struct sl_conf *conf,
    struct shaping_conf *file)
{
	struct shaping_conf *old = sh->file;
	struct shaping_site *site, *next;

	sh->file = file;
	sh->nodes = (int)conf->shaping_nodes;
	free(sh->state_path);
	sh->state_path = xasprintf("%s/shaping.state", conf->spool_dir);
	/* every site takes its [site] of the new file, or none */
	for (size_t b = 0; b < sh->tab_size; b++) {
		for (site = sh->tab[b]; site != NULL; site = next) {
			next = site->hnext;
			site->conf = shaping_conf_site(file, site->name);
			site_paths_set(site);
			shaping_hits_reset(site);
			wait_wake_all(&site->open_waiters);
			shaping_site_maybe_free(site);
		}
	}
	/* configured sites exist from the start, so their counters do */
	for (size_t i = 0; i < file->nsites; i++)
		if (shaping_site_find(sh, file->sites[i].name) == NULL)
			site_new(sh, file->sites[i].name, &file->sites[i]);
	shaping_conf_free(old);
}

/* Start, keep, or stop the Redis side as [shaping] redis says. */
static int
shaping_redis_set(struct shaping *sh, const struct sl_conf *conf, char *err,
    size_t errlen)
{
	if (sh->redis_url != NULL &&
	    strcmp(sh->redis_url, conf->shaping_redis) == 0 &&
	    strcmp(sh->prefix, conf->shaping_redis_prefix) == 0)
		return 0;
	shaping_shared_stop(sh);
	free(sh->redis_url);
	free(sh->prefix);
	sh->redis_url = xstrdup(conf->shaping_redis);
	sh->prefix = xstrdup(conf->shaping_redis_prefix);
	if (conf->shaping_redis[0] == '\0')
		return 0;
	return shaping_shared_start(sh, conf, err, errlen);
}

/* The file of conf; none ("") is an empty file: no site, no rule. */
static struct shaping_conf *
shaping_file_load(const struct sl_conf *conf, char *err, size_t errlen)
{
	if (conf->shaping_file[0] == '\0')
		return shaping_conf_parse("(none)", "", 0, err, errlen);
	return shaping_conf_load(conf->shaping_file, err, errlen);
}

struct shaping *
shaping_new(struct event_base *base, struct dns *dns,
    const struct sl_conf *conf, char *err, size_t errlen)
{
	struct shaping *sh;
	struct shaping_conf *file;

	err[0] = '\0';
	if (conf->shaping_file[0] == '\0')
		return NULL;
	if ((file = shaping_file_load(conf, err, errlen)) == NULL)
		return NULL;
	sh = xcalloc(1, sizeof(*sh));
	sh->base = base;
	sh->dns = dns;
	sh->tab_size = 64;
	sh->tab = xcalloc(sh->tab_size, sizeof(*sh->tab));
	node_name(sh);
	shaping_use(sh, conf, file);
	if (shaping_redis_set(sh, conf, err, errlen) != 0) {
		char msg[600];
		snprintf(msg, sizeof(msg), "[shaping] redis: %s", err);
		sl_strlcpy(err, msg, errlen);
		shaping_free(sh);
		return NULL;
	}
	return sh;
}

int
shaping_check(const struct sl_conf *conf, char *err, size_t errlen)
{
	struct shaping_redis_url u;
	struct shaping_conf *file;
	char msg[1024];

	if (conf->shaping_file[0] != '\0') {
		if ((file = shaping_file_load(conf, msg, sizeof(msg))) == NULL) {
			snprintf(err, errlen, "[shaping] file: %s", msg);
			return -1;
		}
		shaping_conf_free(file);
	}
	if (conf->shaping_redis[0] != '\0' && shaping_redis_url_parse(
	    conf->shaping_redis, &u, msg, sizeof(msg)) != 0) {
		snprintf(err, errlen, "[shaping] redis: %s", msg);
		return -1;
	}
	return 0;
}

int
shaping_reload(struct shaping *sh, const struct sl_conf *conf, char *err,
    size_t errlen)
{
	struct shaping_conf *file = shaping_file_load(conf, err, errlen);
	struct shaping_redis_url u;

	if (file == NULL)
		return -1;
	if (conf->shaping_redis[0] != '\0' &&
	    shaping_redis_url_parse(conf->shaping_redis, &u, err, errlen) != 0) {
		shaping_conf_free(file);
		return -1;
	}
	shaping_use(sh, conf, file);
	return shaping_redis_set(sh, conf, err, errlen);
}

void
shaping_free(struct shaping *sh)
{
	if (sh == NULL)
		return;
	shaping_shared_stop(sh);
	for (size_t b = 0; b < sh->tab_size; b++)
		while (sh->tab[b] != NULL)
			site_free(sh->tab[b]);
	free(sh->tab);
	shaping_conf_free(sh->file);
	free(sh->redis_url);
	free(sh->prefix);
	free(sh->state_path);
	free(sh);
}
