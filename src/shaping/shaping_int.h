/* SPDX-License-Identifier: MIT */
/*
 * shaping_int.h: what the files of src/shaping share and nothing else
 * sees: the shaping file as parsed and the pure pieces that work on it
 * (file.c: the parser; limit.c: GCRA, warm-up budgets, rule threshold
 * windows; none reads a clock: each is given the time), the Redis client
 * (redis.c) and its scripts (scripts.c), and the live state of sites,
 * paths and actions (shaping.c, shared.c, act.c, status.c).
 *
 * The file (docs/SHAPING.md has the full grammar):
 *   [site NAME]     mx, domains, connections, messages_per_connection,
 *                   rate, connection_rate, recipients_per_transaction,
 *                   source, source_select, helo
 *   [source ADDR]   warmup, warmup_start
 *   [rule NAME]     site, match, threshold, action
 * Errors name the file and line: "shaping.ini:7: [site big] rate: ...".
 */
#ifndef SL_SHAPING_INT_H
#define SL_SHAPING_INT_H

#include <regex.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <event2/event.h>

#include "shaping/shaping.h"

/* n events per per_us microseconds; n == 0: no limit. */
struct shaping_rate {
	uint64_t n;
	int64_t per_us;
};

/* A warm-up schedule: start per unit, grown every `every_us`, capped. */
struct shaping_warmup {
	uint64_t start;		/* budget per window at first */
	int64_t unit_us;	/* the window: 1d for "1000/d" */
	double factor;		/* "x2": multiply (1 when adding) */
	uint64_t add;		/* "+500": add instead */
	int64_t every_us;	/* a growth step every this long */
	uint64_t until;		/* the cap, per window of unit_us */
};

struct shaping_source_conf {
	char *addr;			/* as written */
	struct sockaddr_storage ss;	/* port 0 */
	socklen_t sslen;
	int has_warmup;
	struct shaping_warmup warmup;
	int64_t warmup_start;		/* unix s; 0: first use (state file) */
	int line;
};

enum shaping_select {
	SHAPING_SELECT_ROTATE = 0,	/* each connection the next address */
	SHAPING_SELECT_PIN,		/* each destination keeps one */
};

struct shaping_site_conf {
	char *name;
	char **mx;			/* host patterns (* and ?), lower case */
	size_t nmx;
	char **domains;			/* lower case */
	size_t ndomains;
	int connections;		/* 0: [delivery] destination_concurrency */
	int messages_per_connection;	/* 0: [delivery] */
	int recipients_per_transaction;	/* 0: [delivery] */
	struct shaping_rate rate;	/* messages; n 0: none */
	struct shaping_rate connection_rate;
	char **sources;			/* addresses as written */
	size_t nsources;
	int select;			/* enum shaping_select */
	char *helo;			/* or NULL: [server] hostname */
	int line;
};

enum shaping_act {
	SHAPING_ACT_SUSPEND = 1,	/* suspend D */
	SHAPING_ACT_RATE,		/* rate N/U for D */
	SHAPING_ACT_CONNECTIONS,	/* connections N for D */
	SHAPING_ACT_BOUNCE,		/* bounce: the recipient fails now */
	SHAPING_ACT_RETRY_IN,		/* retry_in D: the recipient waits D */
};

struct shaping_action {
	int kind;			/* enum shaping_act */
	int64_t dur_us;			/* suspend, rate, connections, retry_in */
	struct shaping_rate rate;	/* rate */
	int connections;		/* connections */
};

struct shaping_rule_conf {
	char *name;
	char *site;			/* a site's name, or NULL for "*" */
	char *match;			/* the regex as written */
	regex_t re;
	int has_re;
	char lead;			/* "^4...": only replies starting with
					   this digit can match; 0: any */
	uint32_t threshold;		/* matches ... */
	int64_t window_us;		/* ... within this long */
	struct shaping_action action;
	int line;
};

struct shaping_conf {
	char *file;
	struct shaping_site_conf *sites;
	size_t nsites;
	struct shaping_source_conf *sources;
	size_t nsources;
	struct shaping_rule_conf *rules;
	size_t nrules;
};

/* Limits of what the parser accepts. */
#define SHAPING_MAX_LINE 4096		/* bytes of a line */
#define SHAPING_MAX_THRESHOLD 10000	/* matches counted by one rule */

/*
 * Parse the text of a shaping file; file names it in errors. Returns a new
 * configuration (free with shaping_conf_free), or NULL with
 * "file:line: message" in err. Pure; len bytes, NULs are an error.
 */
struct shaping_conf *shaping_conf_parse(const char *file, const char *text,
    size_t len, char *err, size_t errlen);
/* Read path and parse it; NULL with "path: reason" or "path:line: ..." */
struct shaping_conf *shaping_conf_load(const char *path, char *err,
    size_t errlen);
struct shaping_conf *shaping_conf_free(struct shaping_conf *c);

/* The site named name, or NULL. */
const struct shaping_site_conf *shaping_conf_site(const struct shaping_conf *c,
    const char *name);
/* The [source] section of addr, or NULL. */
const struct shaping_source_conf *shaping_conf_source(
    const struct shaping_conf *c, const char *addr);
/*
 * The site a destination belongs to: the first whose domains hold domain,
 * else the first (in file order) with an mx pattern matching one of the
 * hosts; NULL if none. Case does not matter.
 */
const struct shaping_site_conf *shaping_conf_match(const struct shaping_conf *c,
    const char *domain, const char *const *hosts, size_t nhosts);

/* "600/m", "10/s", "100/5m": 0, or -1 (not a rate). */
int shaping_rate_parse(const char *s, struct shaping_rate *out);
/* "600/m" back (the largest unit that fits), into buf. */
void shaping_rate_format(const struct shaping_rate *r, char *buf, size_t len);
/* Microseconds between two events at rate r (at least 1). */
int64_t shaping_rate_interval(const struct shaping_rate *r);

/*
 * GCRA (the generic cell rate algorithm): a virtual scheduling limiter that
 * spaces events evenly at the rate, with no burst: an event is allowed once
 * now reaches tat (the theoretical arrival time), and moves tat one
 * interval past max(tat, now).
 */
struct shaping_gcra {
	int64_t tat;		/* microseconds, the clock the caller uses */
};
/* 0 if an event may happen now (it is counted), else microseconds to wait. */
int64_t shaping_gcra_take(struct shaping_gcra *g, int64_t interval_us,
    int64_t now_us);
/* Microseconds until an event would be allowed (0: now); counts nothing. */
int64_t shaping_gcra_peek(const struct shaping_gcra *g, int64_t now_us);

/*
 * The warm-up budget of the window holding now_us: start grown by one step
 * for each full `every` since start_us, capped at until. Windows are
 * aligned to the epoch (a day is a UTC day).
 */
uint64_t shaping_warmup_budget(const struct shaping_warmup *w,
    int64_t start_us, int64_t now_us);
/* The window holding now_us (its number since the epoch). */
int64_t shaping_warmup_window(const struct shaping_warmup *w, int64_t now_us);
/* "1000/d, x2 every 2d, until 200000/d": 0, or -1 with a reason. */
int shaping_warmup_parse(const char *s, struct shaping_warmup *out,
    char *err, size_t errlen);

/*
 * A rule's threshold window: the times of its last `threshold` matches in
 * a ring. shaping_hits_add() records a match at now and returns 1 when the
 * threshold is reached (that many matches within the window), and then
 * empties the ring so the next firing needs as many new matches.
 */
struct shaping_hits {
	int64_t *t;		/* threshold slots, oldest at head */
	uint32_t n, head, cap;
};
void shaping_hits_init(struct shaping_hits *h, uint32_t threshold);
void shaping_hits_free(struct shaping_hits *h);
int shaping_hits_add(struct shaping_hits *h, int64_t window_us,
    int64_t now_us);

/* 1 if rule applies to site (by name) and its regex matches reply. */
int shaping_rule_matches(const struct shaping_rule_conf *r,
    const char *site, const char *reply);
/* "suspend 30m", "rate 10/m for 1h", ...: the action as written back. */
void shaping_action_format(const struct shaping_action *a, char *buf,
    size_t len);

/* ---- scripts.c: the Lua scripts of shared limits (see there) ---- */
enum {
	SHAPING_LUA_SEND = 0,	/* rate, budget keys; interval_us, budget,
				   ttl_ms -> {0 go, used} {1 wait, us}
				   {2 spent, used} */
	SHAPING_LUA_OPEN,	/* slots, rate keys; member, limit, ttl_ms,
				   interval_us -> {0 go, n} {1 wait, us}
				   {2 full, n} */
	SHAPING_LUA_RENEW,	/* slots key; member, ttl_ms -> 1 */
	SHAPING_LUA_ACTION,	/* KEYS[1]; field, value, until_ms -> 1 or 0 */
	SHAPING_LUA_ACTIONS,	/* KEYS[1] -> field, value, ... */
	SHAPING_LUA_FIRST,	/* KEYS[1]; value -> the value kept (SET NX) */
	SHAPING_LUA_N
};
extern const char *const shaping_scripts[SHAPING_LUA_N];

/* ---- redis.c: a Redis client on the event loop (hiredis, async) ---- */

struct dns;
struct event_base;
struct redisReply;
struct shaping_redis;
struct shaping_redis_req;

/* Where Redis is: "redis://[:password@]host[:port][/db]". */
struct shaping_redis_url {
	char host[256];
	int port;		/* 6379 */
	int db;			/* 0 */
	char password[256];	/* "" for none */
};
/* 0, or -1 with the reason in err. */
int shaping_redis_url_parse(const char *url, struct shaping_redis_url *out,
    char *err, size_t errlen);

struct shaping_redis_params {
	const char *url;
	int timeout_ms;			/* for connecting and each answer */
	int retry_ms;			/* between attempts while down */
	const char *const *scripts;	/* Lua, loaded at each connect */
	size_t nscripts;
	const char *name;		/* in the log lines: "shaping" */
};

/* Redis became usable (up 1: connected, set up, scripts loaded) or not. */
typedef void shaping_redis_state_fn(void *arg, int up);
/*
 * A command's answer, borrowed for the call: NULL when Redis failed, did
 * not answer in time or went away (an error reply is given as it is:
 * type REDIS_REPLY_ERROR).
 */
typedef void shaping_redis_reply_fn(void *arg, struct redisReply *reply);

/*
 * A client that connects now and again after each failure (every retry_ms),
 * never blocking the loop: host names are resolved with dns (NULL: IP
 * addresses only). A failure is logged once, when Redis stops being
 * usable, and the return once. NULL with a reason in err for a bad URL.
 */
struct shaping_redis *shaping_redis_new(struct event_base *base,
    struct dns *dns, const struct shaping_redis_params *p,
    shaping_redis_state_fn *fn, void *arg, char *err, size_t errlen);
/* Close; callbacks of commands not yet answered never run. NULL is fine. */
void shaping_redis_free(struct shaping_redis *r);
/* 1 while commands can be sent. */
int shaping_redis_is_up(const struct shaping_redis *r);
/*
 * Send a command (argv[0] the command) or run script number `script` with
 * nkeys of the args as keys (EVALSHA, and EVAL should Redis have lost the
 * script). Returns a handle, valid until cb runs, or NULL when Redis is not
 * up: then cb never runs and the caller falls back. cb never runs from
 * inside these calls.
 */
struct shaping_redis_req *shaping_redis_command(struct shaping_redis *r,
    int argc, const char *const *argv, shaping_redis_reply_fn *cb, void *arg);
struct shaping_redis_req *shaping_redis_eval(struct shaping_redis *r,
    size_t script, int nkeys, int nargs, const char *const *args,
    shaping_redis_reply_fn *cb, void *arg);
/* The caller no longer wants the answer of q: its cb will not run. */
void shaping_redis_forget(struct shaping_redis_req *q);

/* ---- the live state: shaping.c, shared.c, act.c, status.c ---- */

TAILQ_HEAD(shaping_wait_list, shaping_wait);

/* An action of a rule in force at a site. */
struct shaping_act_state {
	int64_t until;			/* unix us; 0: none */
	char *rule;			/* the rule's name */
	struct shaping_rate rate;	/* SHAPING_ACT_RATE */
	int connections;		/* SHAPING_ACT_CONNECTIONS */
	int shared;			/* known to Redis */
};
enum { SHAPING_A_SUSPEND, SHAPING_A_RATE, SHAPING_A_CONNS, SHAPING_A_N };

/* Messages a path sent in each of the last 60 seconds. */
struct shaping_meter {
	int64_t sec[60];
	uint32_t n[60];
};

/* One source address -> site pair. */
struct shaping_path {
	struct shaping_site *site;
	char *addr;			/* the source, or NULL: the system's */
	struct sockaddr_storage ss;
	socklen_t sslen;
	const struct shaping_source_conf *src;	/* its [source], or NULL */
	int64_t warm_start;		/* unix us the warm-up began */
	int attached;			/* in site->paths (not left by reload) */
	int refs;			/* open connections, and attached */
	int nconn;			/* connections open from this node */
	int nopening;			/* of them, not greeted yet */
	int64_t unbindable_until;	/* unix us */
	int unbind_logged;
	/* messages: local GCRA, or the shared token asked for */
	struct shaping_gcra rate;
	struct shaping_redis_req *send_req;
	int64_t send_token;		/* unix us a shared token came; 0 */
	int64_t send_next;		/* unix us: not before (wait, spent) */
	int spent;			/* the budget of this window is spent */
	int64_t warm_window;		/* the window warm_used counts */
	uint64_t warm_used;
	struct shaping_wait_list send_waiters;
	struct event *send_ev;
	/* connections: local GCRA and count, or the shared slot asked for */
	struct shaping_gcra crate;
	struct shaping_redis_req *open_req;
	int64_t open_token;		/* unix us a shared slot came; 0 */
	int64_t open_next;
	char **slots;			/* names of the slots held in Redis */
	size_t nslots, slots_cap;
	char *slot_open;		/* the slot being asked for */
	struct shaping_meter meter;
	char *key;			/* "site:source" in Redis keys */
};

struct shaping_site {
	struct shaping_site *hnext;
	struct shaping *sh;
	char *name;
	const struct shaping_site_conf *conf;	/* NULL: implicit */
	int refs;			/* destinations */
	struct shaping_path **paths;	/* one per source, or the one */
	size_t npaths, rr;
	int nconn;			/* open connections, every path */
	struct shaping_wait_list open_waiters;
	struct shaping_wait_list held_waiters;	/* woken when actions end */
	int64_t open_at;		/* unix us to wake the next; INT64_MAX:
					   when a connection closes */
	struct event *open_ev;
	struct shaping_act_state act[SHAPING_A_N];
	struct shaping_hits *hits;	/* per rule of the file */
	int64_t *armed;			/* per rule: a per-recipient action
					   applies until (unix us) */
	size_t nhits;
	char why[512];			/* the last reason given */
};

struct shaping {
	struct event_base *base;
	struct dns *dns;
	struct shaping_conf *file;
	struct shaping_site **tab;
	size_t tab_size, nsites;
	int64_t (*now)(void *);
	void *now_arg;
	/* Redis: NULL when [shaping] redis is empty */
	struct shaping_redis *redis;
	char *redis_url;
	char *prefix;			/* of every key */
	int nodes;
	char node[96];			/* this node's name in slot names */
	uint64_t slot_seq;
	struct event *poll_ev;		/* actions from Redis, slots renewed */
	struct shaping_redis_req *poll_req;
	int64_t renew_at;		/* unix us */
	char *state_path;		/* warm-up starts of this node */
};

/* shaping.c */
int64_t shaping_now(const struct shaping *sh);
/* 1 while limits are shared (Redis set and up). */
int shaping_shared(const struct shaping *sh);
/* The share of a limit this node keeps alone: limit / nodes while Redis
 * is set but down, else the limit. At least 1. */
uint64_t shaping_share(const struct shaping *sh, uint64_t limit);
/* A path's limits now: actions first, then the site's file, as they
 * apply to this node (interval 0, limit 0: none). */
int64_t shaping_path_interval(const struct shaping_path *p);
int shaping_path_conn_limit(const struct shaping_path *p);
int64_t shaping_path_conn_interval(const struct shaping_path *p);
uint64_t shaping_path_budget(const struct shaping_path *p, int64_t now);
/* The same, as Redis applies them to every node together. */
int64_t shaping_path_interval_all(const struct shaping_path *p);
int shaping_path_conn_limit_all(const struct shaping_path *p);
int64_t shaping_path_conn_interval_all(const struct shaping_path *p);
uint64_t shaping_path_budget_all(const struct shaping_path *p, int64_t now);
/* Wake one waiter of p (messages) or of site (connections) now or when
 * asking again is worth it. */
void shaping_path_kick(struct shaping_path *p);
void shaping_site_kick(struct shaping_site *site);
void shaping_meter_add(struct shaping_meter *m, int64_t now);
uint64_t shaping_meter_minute(const struct shaping_meter *m, int64_t now);
struct shaping_site *shaping_site_find(struct shaping *sh, const char *name);
/* Every site, for walks (status, actions). */
#define SHAPING_FOREACH_SITE(sh, site) \
	for (size_t b_ = 0; b_ < (sh)->tab_size; b_++) \
		for ((site) = (sh)->tab[b_]; (site) != NULL; \
		    (site) = (site)->hnext)

/* shared.c: the Redis side of paths and actions */
/* Connect to [shaping] redis (conf); -1 with err for a bad URL. */
int shaping_shared_start(struct shaping *sh, const struct sl_conf *conf,
    char *err, size_t errlen);
void shaping_shared_stop(struct shaping *sh);
/* Ask Redis for a message token / a connection slot on p; 0 if asked. */
int shaping_shared_send(struct shaping_path *p);
int shaping_shared_open(struct shaping_path *p);
/* p's connection closed: give back one slot. */
void shaping_shared_release(struct shaping_path *p);
void shaping_shared_forget(struct shaping_path *p);
/* Tell Redis of an action (kind SHAPING_A_*) / of its end. */
void shaping_shared_act(struct shaping_site *site, int kind);
void shaping_shared_resume(struct shaping_site *site);

/* act.c: rules and actions */
void shaping_act_clear(struct shaping_act_state *a);
/* Set an action (from a rule here or from Redis); 1 if it changed. */
int shaping_act_set(struct shaping_site *site, int kind, int64_t until,
    const char *rule, const struct shaping_rate *rate, int connections,
    int shared);
/* Drop actions whose time has passed. */
void shaping_act_expire(struct shaping_site *site, int64_t now);
/* The reply rules' counters of site, sized for the file (after reload). */
void shaping_hits_reset(struct shaping_site *site);
void shaping_hits_drop(struct shaping_site *site);
/* An implicit site nothing holds any more is freed. */
void shaping_site_maybe_free(struct shaping_site *site);
/* Wake every waiter of site: its actions changed. */
void shaping_site_wake_all(struct shaping_site *site);
/* "2026-11-24T10:00:00Z" */
void shaping_iso_time(int64_t us, char *buf, size_t len);

#endif
