/* SPDX-License-Identifier: MIT */
/*
 * shared.c: the Redis side of shaping: a path's message tokens and
 * connection slots asked of Redis (scripts.c makes each atomic), the
 * slots renewed while their connections live, rules' actions told to
 * every node and learned from them, warm-up starts agreed on.
 *
 * Owns the Redis client of the shaping state and its poll timer. Keys
 * (PREFIX is [shaping] redis_prefix; PATH is "site:source"):
 *   PREFIX rate:PATH          GCRA of messages        (lives an interval)
 *   PREFIX warm:PATH:WINDOW   warm-up count           (two windows)
 *   PREFIX conn:PATH          open connections, zset  (30 s unless renewed)
 *   PREFIX crate:PATH         GCRA of connections
 *   PREFIX actions            hash "site\tkind" -> "until_ms rule value"
 *   PREFIX warmstart:ADDR     a source's warm-up start, unix s
 *
 * While Redis is up, each answer decides; when a request fails (Redis
 * went away, or did not answer in time), the path is woken at once and
 * decides alone on its share (shaping.c), and asks Redis again once it is
 * back. Actions taken meanwhile are told to Redis when it returns.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "conf/conf.h"
#include "log/log.h"
#include "shaping/shaping_int.h"
#include "util/util.h"

#define SEC 1000000LL
#define SLOT_TTL_MS 30000		/* a slot lapses unless renewed */
#define RENEW_EVERY (10 * SEC)
#define POLL_EVERY_MS 1000		/* actions learned from the others */

static const char *const act_names[SHAPING_A_N] = {
	[SHAPING_A_SUSPEND] = "suspend",
	[SHAPING_A_RATE] = "rate",
	[SHAPING_A_CONNS] = "connections",
};

static char *
key_of(const struct shaping *sh, const char *what, const char *rest)
{
	return xasprintf("%s%s:%s", sh->prefix, what, rest);
}

/* An answer {code, value}: 0 with both, or -1. */
static int
answer_pair(const redisReply *r, long long *code, long long *value)
{
	if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
	    r->element[0]->type != REDIS_REPLY_INTEGER ||
	    r->element[1]->type != REDIS_REPLY_INTEGER)
		return -1;
	*code = r->element[0]->integer;
	*value = r->element[1]->integer;
	return 0;
}

static void
answer_odd(const char *what, const redisReply *r)
{
	log_ev(LOG_WARNING, NULL, "redis answer not understood", "part",
	    "shaping", "request", what, "reply", r->type == REDIS_REPLY_ERROR ?
	    r->str : "(not the expected form)", NULL);
}

/* ---- messages ---- */

static void
send_answer(void *arg, redisReply *r)
{
	struct shaping_path *p = arg;
	int64_t now = shaping_now(p->site->sh);
	long long code, value;

	p->send_req = NULL;
	if (r == NULL) {
		/* Redis is gone: decide alone, now */
		p->send_next = 0;
	} else if (answer_pair(r, &code, &value) != 0) {
		answer_odd("send", r);
		p->send_next = now + SEC;
	} else if (code == 0) {
		p->send_token = now > 0 ? now : 1;
		p->warm_used = (uint64_t)value;
	} else if (code == 1) {
		p->send_next = now + value;
	} else {
		p->spent = 1;
		p->warm_used = (uint64_t)value;
		p->send_next = (shaping_warmup_window(&p->src->warmup, now) + 1) *
		    p->src->warmup.unit_us;
	}
	shaping_path_kick(p);
}

int
shaping_shared_send(struct shaping_path *p)
{
	struct shaping *sh = p->site->sh;
	int64_t now = shaping_now(sh);
	uint64_t budget = shaping_path_budget_all(p, now);
	int64_t win = budget ? shaping_warmup_window(&p->src->warmup, now) : 0;
	char *rate = key_of(sh, "rate", p->key), *warm, iv[24], b[24], ttl[24];

	warm = xasprintf("%swarm:%s:%lld", sh->prefix, p->key, (long long)win);
	snprintf(iv, sizeof(iv), "%lld", (long long)shaping_path_interval_all(p));
	snprintf(b, sizeof(b), "%llu", (unsigned long long)budget);
	snprintf(ttl, sizeof(ttl), "%lld", budget ?
	    (long long)(2 * p->src->warmup.unit_us / 1000) : 1000LL);
	p->send_req = shaping_redis_eval(sh->redis, SHAPING_LUA_SEND, 2, 5,
	    (const char *[]){ rate, warm, iv, b, ttl }, send_answer, p);
	free(rate);
	free(warm);
	return p->send_req != NULL ? 0 : -1;
}

/* ---- connections ---- */

static void
slot_push(struct shaping_path *p, char *name)
{
	if (p->nslots == p->slots_cap)
		p->slots = xrealloc(p->slots, (p->slots_cap = p->slots_cap ?
		    p->slots_cap * 2 : 4) * sizeof(*p->slots));
	p->slots[p->nslots++] = name;
}

static void
open_answer(void *arg, redisReply *r)
{
	struct shaping_path *p = arg;
	struct shaping_site *site = p->site;
	int64_t now = shaping_now(site->sh);
	long long code, value;
	char *slot = p->slot_open;

	p->open_req = NULL;
	p->slot_open = NULL;
	if (r == NULL) {
		free(slot);		/* Redis is gone: decide alone */
	} else if (answer_pair(r, &code, &value) != 0) {
		answer_odd("open", r);
		free(slot);
		p->open_next = now + SEC;
	} else if (code == 0) {
		slot_push(p, slot);
		p->open_token = now > 0 ? now : 1;
	} else {
		/* a rate wait, or every slot taken: other nodes' closes are
		 * not told to us, so a full path asks again in a second */
		free(slot);
		p->open_next = now + (code == 1 ? value : SEC);
	}
	/* the openers try again: the answer, or alone, or at open_next */
	site->open_at = now;
	shaping_site_kick(site);
}

int
shaping_shared_open(struct shaping_path *p)
{
	struct shaping *sh = p->site->sh;
	char *conn = key_of(sh, "conn", p->key), *crate = key_of(sh, "crate",
	    p->key), lim[16], ttl[16], iv[24];

	free(p->slot_open);
	p->slot_open = xasprintf("%s:%llu", sh->node,
	    (unsigned long long)++sh->slot_seq);
	snprintf(lim, sizeof(lim), "%d", shaping_path_conn_limit_all(p));
	snprintf(ttl, sizeof(ttl), "%d", SLOT_TTL_MS);
	snprintf(iv, sizeof(iv), "%lld",
	    (long long)shaping_path_conn_interval_all(p));
	p->open_req = shaping_redis_eval(sh->redis, SHAPING_LUA_OPEN, 2, 6,
	    (const char *[]){ conn, crate, p->slot_open, lim, ttl, iv },
	    open_answer, p);
	free(conn);
	free(crate);
	return p->open_req != NULL ? 0 : -1;
}

void
shaping_shared_release(struct shaping_path *p)
{
	struct shaping *sh = p->site->sh;
	char *slot, *conn;

	if (p->nslots == 0)
		return;
	slot = p->slots[--p->nslots];
	if (shaping_shared(sh)) {
		conn = key_of(sh, "conn", p->key);
		shaping_redis_command(sh->redis, 3, (const char *[]){ "ZREM",
		    conn, slot }, NULL, NULL);
		free(conn);
	}
	free(slot);
}

/* Count p's open connections in Redis: renew each slot, name those
 * opened while Redis was away, drop a slot nobody took. */
static void
slots_renew(struct shaping_path *p, int64_t now)
{
	struct shaping *sh = p->site->sh;
	char *conn = key_of(sh, "conn", p->key), ttl[16];

	if (p->open_token != 0 && now - p->open_token > 5 * SEC) {
		p->open_token = 0;
		shaping_shared_release(p);
	}
	while (p->nslots < (size_t)p->nconn)
		slot_push(p, xasprintf("%s:%llu", sh->node,
		    (unsigned long long)++sh->slot_seq));
	snprintf(ttl, sizeof(ttl), "%d", SLOT_TTL_MS);
	for (size_t i = 0; i < p->nslots; i++)
		shaping_redis_eval(sh->redis, SHAPING_LUA_RENEW, 1, 3,
		    (const char *[]){ conn, p->slots[i], ttl }, NULL, NULL);
	free(conn);
}

void
shaping_shared_forget(struct shaping_path *p)
{
	shaping_redis_forget(p->send_req);
	shaping_redis_forget(p->open_req);
	p->send_req = p->open_req = NULL;
}

/* ---- actions ---- */

/* What an answer about a site needs: the site may be gone by then. */
struct act_ctx {
	struct shaping *sh;
	char *site;
	int kind;
	int64_t until;
};

static void
act_answer(void *arg, redisReply *r)
{
	struct act_ctx *x = arg;
	struct shaping_site *site = shaping_site_find(x->sh, x->site);

	if (site != NULL && r != NULL && r->type == REDIS_REPLY_INTEGER &&
	    site->act[x->kind].until == x->until)
		site->act[x->kind].shared = 1;
	free(x->site);
	free(x);
}

void
shaping_shared_act(struct shaping_site *site, int kind)
{
	struct shaping *sh = site->sh;
	const struct shaping_act_state *a = &site->act[kind];
	char *key, *field, *value, until[24], v[48] = "0";
	struct act_ctx *x;

	if (!shaping_shared(sh))
		return;
	if (kind == SHAPING_A_RATE)
		shaping_rate_format(&a->rate, v, sizeof(v));
	else if (kind == SHAPING_A_CONNS)
		snprintf(v, sizeof(v), "%d", a->connections);
	key = key_of(sh, "actions", "");
	key[strlen(key) - 1] = '\0';	/* "PREFIXactions" */
	field = xasprintf("%s\t%s", site->name, act_names[kind]);
	value = xasprintf("%lld %s %s", (long long)(a->until / 1000),
	    a->rule ? a->rule : "-", v);
	snprintf(until, sizeof(until), "%lld", (long long)(a->until / 1000));
	x = xcalloc(1, sizeof(*x));
	x->sh = sh;
	x->site = xstrdup(site->name);
	x->kind = kind;
	x->until = a->until;
	if (shaping_redis_eval(sh->redis, SHAPING_LUA_ACTION, 1, 4,
	    (const char *[]){ key, field, value, until }, act_answer, x) == NULL) {
		free(x->site);
		free(x);
	}
	free(key);
	free(field);
	free(value);
}

void
shaping_shared_resume(struct shaping_site *site)
{
	struct shaping *sh = site->sh;
	char *key, *f[SHAPING_A_N];

	if (!shaping_shared(sh))
		return;
	key = key_of(sh, "actions", "");
	key[strlen(key) - 1] = '\0';
	for (int k = 0; k < SHAPING_A_N; k++)
		f[k] = xasprintf("%s\t%s", site->name, act_names[k]);
	shaping_redis_command(sh->redis, 5, (const char *[]){ "HDEL", key,
	    f[0], f[1], f[2] }, NULL, NULL);
	for (int k = 0; k < SHAPING_A_N; k++)
		free(f[k]);
	free(key);
}

/* One action as Redis keeps it: "until_ms rule value". */
static void
poll_one(struct shaping *sh, const char *field, const char *value,
    int64_t now)
{
	const char *tab = strchr(field, '\t');
	char name[256], rule[128] = "", v[64] = "";
	long long until_ms = 0;
	struct shaping_rate rate = { 0, 0 };
	struct shaping_site *site;
	int kind = -1;

	if (tab == NULL || (size_t)(tab - field) >= sizeof(name) ||
	    sscanf(value, "%lld %127s %63s", &until_ms, rule, v) < 2)
		return;
	for (int k = 0; k < SHAPING_A_N; k++)
		if (strcmp(tab + 1, act_names[k]) == 0)
			kind = k;
	if (kind < 0 || until_ms * 1000 <= now)
		return;
	memcpy(name, field, (size_t)(tab - field));
	name[tab - field] = '\0';
	if (kind == SHAPING_A_RATE && shaping_rate_parse(v, &rate) != 0)
		return;
	if ((site = shaping_site_find(sh, name)) == NULL) {
		/* an implicit site another node acted on: held by the action */
		site = shaping_site_get(sh, NULL, NULL, 0, name);
		site->refs--;
	}
	shaping_act_set(site, kind, until_ms * 1000, rule, &rate, atoi(v), 1);
}

/* The actions in force, as Redis has them: learn what the others did,
 * forget what they ended, tell what we did while Redis was away. */
static void
poll_answer(void *arg, redisReply *r)
{
	struct shaping *sh = arg;
	int64_t now = shaping_now(sh);
	struct shaping_site *site;

	sh->poll_req = NULL;
	if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
		if (r != NULL)
			answer_odd("actions", r);
		return;
	}
	/* every shared action not listed any more has ended elsewhere */
	SHAPING_FOREACH_SITE(sh, site)
		for (int k = 0; k < SHAPING_A_N; k++)
			if (site->act[k].shared)
				site->act[k].shared = 2;
	for (size_t i = 0; i + 1 < r->elements; i += 2)
		if (r->element[i]->type == REDIS_REPLY_STRING &&
		    r->element[i + 1]->type == REDIS_REPLY_STRING)
			poll_one(sh, r->element[i]->str, r->element[i + 1]->str,
			    now);
	for (size_t b = 0; b < sh->tab_size; b++) {
		struct shaping_site *next;
		for (site = sh->tab[b]; site != NULL; site = next) {
			next = site->hnext;
			for (int k = 0; k < SHAPING_A_N; k++) {
				struct shaping_act_state *a = &site->act[k];
				if (a->shared == 2)
					shaping_act_set(site, k, 0, NULL, NULL,
					    0, 0);
				else if (a->until > now && !a->shared)
					shaping_shared_act(site, k);
			}
			shaping_site_maybe_free(site);
		}
	}
}

static void
poll_fire(evutil_socket_t fd, short what, void *arg)
{
	struct shaping *sh = arg;
	struct timeval tv = { POLL_EVERY_MS / 1000, (POLL_EVERY_MS % 1000) * 1000 };
	int64_t now = shaping_now(sh);
	struct shaping_site *site;
	char *key;

	evtimer_add(sh->poll_ev, &tv);
	if (!shaping_shared(sh))
		return;
	if (sh->poll_req == NULL) {
		key = key_of(sh, "actions", "");
		key[strlen(key) - 1] = '\0';
		sh->poll_req = shaping_redis_eval(sh->redis, SHAPING_LUA_ACTIONS,
		    1, 1, (const char *[]){ key }, poll_answer, sh);
		free(key);
	}
	if (now < sh->renew_at)
		return;
	sh->renew_at = now + RENEW_EVERY;
	SHAPING_FOREACH_SITE(sh, site)
		for (size_t i = 0; i < site->npaths; i++)
			slots_renew(site->paths[i], now);
}

/* A source's warm-up start as every node agrees on it (the first). */
struct first_ctx {
	struct shaping *sh;
	char *addr;
};

static void
first_answer(void *arg, redisReply *r)
{
	struct first_ctx *x = arg;
	struct shaping_site *site;

	if (r != NULL && r->type == REDIS_REPLY_STRING) {
		int64_t start = strtoll(r->str, NULL, 10) * SEC;
		SHAPING_FOREACH_SITE(x->sh, site)
			for (size_t i = 0; i < site->npaths; i++)
				if (site->paths[i]->addr != NULL && start > 0 &&
				    strcmp(site->paths[i]->addr, x->addr) == 0)
					site->paths[i]->warm_start = start;
	}
	free(x->addr);
	free(x);
}

static void
warm_starts_agree(struct shaping *sh)
{
	for (size_t i = 0; i < sh->file->nsources; i++) {
		const struct shaping_source_conf *src = &sh->file->sources[i];
		struct shaping_site *site;
		int64_t start = 0;
		char *key, v[24];
		struct first_ctx *x;

		if (!src->has_warmup || src->warmup_start > 0)
			continue;
		SHAPING_FOREACH_SITE(sh, site)
			for (size_t k = 0; k < site->npaths; k++)
				if (site->paths[k]->src == src)
					start = site->paths[k]->warm_start;
		if (start == 0)
			continue;
		key = key_of(sh, "warmstart", src->addr);
		snprintf(v, sizeof(v), "%lld", (long long)(start / SEC));
		x = xcalloc(1, sizeof(*x));
		x->sh = sh;
		x->addr = xstrdup(src->addr);
		if (shaping_redis_eval(sh->redis, SHAPING_LUA_FIRST, 1, 2,
		    (const char *[]){ key, v }, first_answer, x) == NULL) {
			free(x->addr);
			free(x);
		}
		free(key);
	}
}

/* Redis came (up 1) or went: waiters ask again, shared or alone. */
static void
shared_state(void *arg, int up)
{
	struct shaping *sh = arg;
	struct shaping_site *site;

	SHAPING_FOREACH_SITE(sh, site) {
		for (size_t i = 0; i < site->npaths; i++) {
			struct shaping_path *p = site->paths[i];
			p->send_token = p->open_token = 0;
			p->send_next = p->open_next = 0;
			/* starting alone: no burst from an old token time */
			if (!up)
				p->rate.tat = p->crate.tat = 0;
			shaping_path_kick(p);
		}
		site->open_at = shaping_now(sh);
		shaping_site_kick(site);
		shaping_site_wake_all(site);
	}
	if (up) {
		sh->renew_at = 0;
		warm_starts_agree(sh);
		poll_fire(-1, 0, sh);
	}
}

int
shaping_shared_start(struct shaping *sh, const struct sl_conf *conf,
    char *err, size_t errlen)
{
	struct shaping_redis_params p = {
		.url = conf->shaping_redis,
		.timeout_ms = (int)conf->shaping_redis_timeout,
		.retry_ms = (int)conf->shaping_redis_retry * 1000,
		.scripts = shaping_scripts,
		.nscripts = SHAPING_LUA_N,
		.name = "shaping",
	};

	sh->redis = shaping_redis_new(sh->base, sh->dns, &p, shared_state, sh,
	    err, errlen);
	if (sh->redis == NULL)
		return -1;
	sh->poll_ev = evtimer_new(sh->base, poll_fire, sh);
	return 0;
}

void
shaping_shared_stop(struct shaping *sh)
{
	struct shaping_site *site;

	if (sh->redis == NULL)
		return;
	SHAPING_FOREACH_SITE(sh, site)
		for (size_t i = 0; i < site->npaths; i++)
			shaping_shared_forget(site->paths[i]);
	sh->poll_req = NULL;
	shaping_redis_free(sh->redis);
	sh->redis = NULL;
	event_free(sh->poll_ev);
	sh->poll_ev = NULL;
}
