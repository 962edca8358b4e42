/* SPDX-License-Identifier: MIT */
/*
 * redis.c: the Redis client of shaping, on the event loop with hiredis's
 * async API (redisLibeventAttach): one connection, commands pipelined,
 * answers in order.
 *
 * Owns the hiredis context, the queue of commands sent and not answered
 * (each with its deadline), the scripts' SHA1s, and two timers: the
 * deadline of the oldest command and the next connection attempt.
 *
 * States (r->state; redis_enter() is the only writer):
 *   DOWN -(attempt)-> RESOLVING -(address)-> CONNECTING -(set-up answered:
 *   AUTH, SELECT, SCRIPT LOAD)-> UP -(error, close, timeout)-> DOWN
 * Any failure goes to DOWN, frees the context (every command waiting gets
 * a NULL answer) and arms the next attempt. Only UP takes commands.
 *
 * Invariants
 *  1. No command waits longer than timeout_ms for its answer: the deadline
 *     timer ends the connection, and each command's callback runs (NULL).
 *  2. The loss of Redis is logged once per time it is lost (or, at start,
 *     once for the first failed attempt); attempts that fail while down
 *     are not logged again. Its return is logged once.
 *  3. A callback never runs from inside the call that sent its command.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <hiredis/adapters/libevent.h>

#include "dns/dns.h"
#include "log/log.h"
#include "shaping/shaping_int.h"
#include "util/util.h"

enum redis_state {
	REDIS_ST_DOWN = 0,
	REDIS_ST_RESOLVING,
	REDIS_ST_CONNECTING,
	REDIS_ST_UP,
};

struct shaping_redis_req {
	TAILQ_ENTRY(shaping_redis_req) entry;
	struct shaping_redis *r;	/* NULL once r is gone */
	int64_t deadline;		/* monotonic ms */
	shaping_redis_reply_fn *cb;	/* NULL: nobody waits (set-up too) */
	void *arg;
	int setup;			/* a set-up command: its error fails */
	int load;			/* SCRIPT LOAD of script load - 1 */
	/* an EVALSHA's command, kept to send again as EVAL on NOSCRIPT */
	int script;			/* -1: none */
	int argc;
	char **argv;
	size_t *lens;
};

TAILQ_HEAD(redis_req_list, shaping_redis_req);

struct shaping_redis {
	struct event_base *base;
	struct dns *dns;
	struct shaping_redis_url url;
	int timeout_ms, retry_ms;
	char *name;
	char **scripts;
	char **sha;			/* from SCRIPT LOAD */
	size_t nscripts;
	shaping_redis_state_fn *fn;
	void *arg;

	int state;			/* enum redis_state */
	redisAsyncContext *ac;
	struct dns_query *query;
	struct redis_req_list reqs;	/* sent, in order */
	size_t setup_left;		/* set-up answers still to come */
	struct event *deadline_ev;
	struct event *retry_ev;
	int down_logged;		/* the loss is logged */
};

static void redis_connect(struct shaping_redis *r);

static void
redis_enter(struct shaping_redis *r, int state)
{
	int was = r->state;

	r->state = state;
	if (was == REDIS_ST_UP && state != REDIS_ST_UP && r->fn)
		r->fn(r->arg, 0);
	else if (state == REDIS_ST_UP && was != REDIS_ST_UP && r->fn)
		r->fn(r->arg, 1);
}

int
shaping_redis_url_parse(const char *url, struct shaping_redis_url *out,
    char *err, size_t errlen)
{
	const char *p = url, *at, *slash, *colon, *hostend;
	size_t n;

	memset(out, 0, sizeof(*out));
	out->port = 6379;
	if (strncmp(p, "redis://", 8) != 0) {
		snprintf(err, errlen, "'%s' is not redis://host[:port][/db]",
		    url);
		return -1;
	}
	p += 8;
	slash = strchr(p, '/');
	hostend = slash ? slash : p + strlen(p);
	at = memchr(p, '@', (size_t)(hostend - p));
	if (at != NULL) {
		const char *pw = memchr(p, ':', (size_t)(at - p));
		pw = pw ? pw + 1 : p;
		n = (size_t)(at - pw);
		if (n >= sizeof(out->password))
			goto bad;
		memcpy(out->password, pw, n);
		p = at + 1;
	}
	if (*p == '[') {	/* [v6]:port */
		const char *rb = memchr(p, ']', (size_t)(hostend - p));
		if (rb == NULL)
			goto bad;
		n = (size_t)(rb - p - 1);
		if (n == 0 || n >= sizeof(out->host))
			goto bad;
		memcpy(out->host, p + 1, n);
		colon = rb[1] == ':' ? rb + 1 : NULL;
		if (!colon && rb + 1 != hostend)
			goto bad;
	} else {
		colon = memchr(p, ':', (size_t)(hostend - p));
		n = (size_t)((colon ? colon : hostend) - p);
		if (n == 0 || n >= sizeof(out->host))
			goto bad;
		memcpy(out->host, p, n);
	}
	if (colon != NULL) {
		char *end;
		long port = strtol(colon + 1, &end, 10);
		if (end != hostend || port < 1 || port > 65535)
			goto bad;
		out->port = (int)port;
	}
	if (slash != NULL && slash[1] != '\0') {
		char *end;
		long db = strtol(slash + 1, &end, 10);
		if (*end != '\0' || db < 0 || db > 1000000)
			goto bad;
		out->db = (int)db;
	}
	return 0;
bad:
	snprintf(err, errlen, "'%s' is not redis://[:password@]host[:port][/db]",
	    url);
	return -1;
}

/* ---- the queue of commands and its deadline ---- */

static void
redis_deadline_arm(struct shaping_redis *r)
{
	struct shaping_redis_req *q = TAILQ_FIRST(&r->reqs);
	int64_t wait;
	struct timeval tv;

	if (q == NULL) {
		evtimer_del(r->deadline_ev);
		return;
	}
	wait = q->deadline - sl_mono_ms();
	if (wait < 0)
		wait = 0;
	tv.tv_sec = wait / 1000;
	tv.tv_usec = (wait % 1000) * 1000;
	evtimer_add(r->deadline_ev, &tv);
}

static void
redis_req_free(struct shaping_redis_req *q)
{
	for (int i = 0; i < q->argc; i++)
		free(q->argv[i]);
	free(q->argv);
	free(q->lens);
	free(q);
}

/* Redis is not usable: close, and try again in retry_ms. */
static void
redis_fail(struct shaping_redis *r, const char *why, int free_ctx)
{
	redisAsyncContext *ac = r->ac;
	struct timeval tv = { r->retry_ms / 1000, (r->retry_ms % 1000) * 1000 };
	int was_up = r->state == REDIS_ST_UP;

	r->ac = NULL;
	if (r->query != NULL) {
		dns_query_cancel(r->query);
		r->query = NULL;
	}
	if (was_up || !r->down_logged) {
		char where[300];
		snprintf(where, sizeof(where), "%s:%d", r->url.host, r->url.port);
		log_ev(LOG_WARNING, NULL, "redis unavailable", "part", r->name,
		    "redis", where, "reason", why, "fallback",
		    "each node keeps to its share of the limits", NULL);
		r->down_logged = 1;
	}
	redis_enter(r, REDIS_ST_DOWN);
	evtimer_del(r->deadline_ev);
	evtimer_add(r->retry_ev, &tv);
	/* every command waiting gets its NULL answer from hiredis now (or,
	 * inside a hiredis callback, once that returns) */
	if (ac != NULL && free_ctx)
		redisAsyncFree(ac);
}

static void
redis_deadline_fire(evutil_socket_t fd, short what, void *arg)
{
	struct shaping_redis *r = arg;
	struct shaping_redis_req *q = TAILQ_FIRST(&r->reqs);
	char why[64];

	if (q == NULL)
		return;
	if (q->deadline > sl_mono_ms()) {
		redis_deadline_arm(r);
		return;
	}
	snprintf(why, sizeof(why), "no answer within %d ms", r->timeout_ms);
	redis_fail(r, why, 1);
}

static void redis_reply(redisAsyncContext *ac, void *reply, void *privdata);

/* Hand q's command to hiredis; 0, or -1 (q freed). */
static int
redis_send(struct shaping_redis *r, struct shaping_redis_req *q)
{
	q->r = r;
	q->deadline = sl_mono_ms() + r->timeout_ms;
	if (redisAsyncCommandArgv(r->ac, redis_reply, q, q->argc,
	    (const char **)q->argv, q->lens) != REDIS_OK) {
		redis_req_free(q);
		return -1;
	}
	TAILQ_INSERT_TAIL(&r->reqs, q, entry);
	if (TAILQ_FIRST(&r->reqs) == q)
		redis_deadline_arm(r);
	return 0;
}

static struct shaping_redis_req *
redis_req_new(int argc, const char *const *argv, const size_t *lens)
{
	struct shaping_redis_req *q = xcalloc(1, sizeof(*q));

	q->script = -1;
	q->argc = argc;
	q->argv = xcalloc((size_t)argc, sizeof(*q->argv));
	q->lens = xcalloc((size_t)argc, sizeof(*q->lens));
	for (int i = 0; i < argc; i++) {
		q->lens[i] = lens ? lens[i] : strlen(argv[i]);
		q->argv[i] = xmalloc(q->lens[i] + 1);
		memcpy(q->argv[i], argv[i], q->lens[i]);
		q->argv[i][q->lens[i]] = '\0';
	}
	return q;
}

static int
redis_is_noscript(const redisReply *rep)
{
	return rep != NULL && rep->type == REDIS_REPLY_ERROR &&
	    strncmp(rep->str, "NOSCRIPT", 8) == 0;
}

/* A set-up command answered: the next step, or up once all are. */
static void
redis_setup_reply(struct shaping_redis *r, struct shaping_redis_req *q,
    redisReply *rep)
{
	char why[300];

	if (rep->type == REDIS_REPLY_ERROR) {
		snprintf(why, sizeof(why), "%s: %s", q->argv[0], rep->str);
		redis_fail(r, why, 1);
		return;
	}
	if (q->load > 0 && rep->type == REDIS_REPLY_STRING) {
		free(r->sha[q->load - 1]);
		r->sha[q->load - 1] = xstrdup(rep->str);
	}
	if (--r->setup_left == 0) {
		char where[300];
		snprintf(where, sizeof(where), "%s:%d", r->url.host, r->url.port);
		if (r->down_logged)
			log_ev(LOG_INFO, NULL, "redis available", "part",
			    r->name, "redis", where, NULL);
		r->down_logged = 0;
		redis_enter(r, REDIS_ST_UP);
	}
}

static void
redis_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct shaping_redis_req *q = privdata;
	struct shaping_redis *r = q->r;
	redisReply *rep = reply;

	if (r == NULL) {	/* the client is gone */
		redis_req_free(q);
		return;
	}
	TAILQ_REMOVE(&r->reqs, q, entry);
	redis_deadline_arm(r);
	if (rep == NULL) {
		/* the context is going away; the state follows from the
		 * connect or disconnect callback, or redis_fail already */
		if (ac == r->ac)
			redis_fail(r, ac->errstr[0] ? ac->errstr :
			    "connection lost", 0);
	} else if (q->setup && ac == r->ac) {
		redis_setup_reply(r, q, rep);
		redis_req_free(q);
		return;
	} else if (redis_is_noscript(rep) && q->script >= 0 && ac == r->ac &&
	    q->cb != NULL) {
		/* Redis lost the script (SCRIPT FLUSH): send it whole */
		struct shaping_redis_req *e = q;
		free(e->argv[0]);
		free(e->argv[1]);
		e->argv[0] = xstrdup("EVAL");
		e->argv[1] = xstrdup(r->scripts[e->script]);
		e->lens[0] = 4;
		e->lens[1] = strlen(e->argv[1]);
		e->script = -1;
		if (redis_send(r, e) != 0)
			redis_fail(r, "EVAL could not be sent", 1);
		return;
	}
	if (q->cb != NULL)
		q->cb(q->arg, rep);
	redis_req_free(q);
}

static void
redis_on_connect(const redisAsyncContext *ac, int status)
{
	struct shaping_redis *r = ac->data;

	if (status != REDIS_OK && r != NULL && ac == r->ac)
		/* hiredis frees the context after this */
		redis_fail(r, ac->errstr[0] ? ac->errstr : "connect failed", 0);
}

static void
redis_on_disconnect(const redisAsyncContext *ac, int status)
{
	struct shaping_redis *r = ac->data;

	if (r != NULL && ac == r->ac)
		redis_fail(r, ac->errstr[0] ? ac->errstr : "connection closed",
		    0);
}

/* Queue a set-up command (before the connection is even made). */
static int
redis_setup_cmd(struct shaping_redis *r, int argc, const char *const *argv,
    int load)
{
	struct shaping_redis_req *q = redis_req_new(argc, argv, NULL);

	q->setup = 1;
	q->load = load;
	if (redis_send(r, q) != 0)
		return -1;
	r->setup_left++;
	return 0;
}

static void
redis_connect_addr(struct shaping_redis *r, const char *ip)
{
	char db[16];

	r->ac = redisAsyncConnect(ip, r->url.port);
	if (r->ac == NULL) {
		redis_fail(r, "out of memory", 0);
		return;
	}
	if (r->ac->err) {
		redisAsyncContext *ac = r->ac;
		char why[256];
		sl_strlcpy(why, ac->errstr, sizeof(why));
		r->ac = NULL;
		redisAsyncFree(ac);
		redis_fail(r, why, 0);
		return;
	}
	r->ac->data = r;
	redisLibeventAttach(r->ac, r->base);
	redisAsyncSetConnectCallback(r->ac, redis_on_connect);
	redisAsyncSetDisconnectCallback(r->ac, redis_on_disconnect);
	redis_enter(r, REDIS_ST_CONNECTING);
	r->setup_left = 0;
	/* written once connected; answered in order; the last one makes us
	 * UP. The deadline of the first covers the connect. */
	snprintf(db, sizeof(db), "%d", r->url.db);
	if (r->url.password[0] != '\0' &&
	    redis_setup_cmd(r, 2, (const char *[]){ "AUTH",
	    r->url.password }, 0) != 0)
		goto fail;
	if (redis_setup_cmd(r, 2, (const char *[]){ "SELECT", db }, 0) != 0)
		goto fail;
	for (size_t i = 0; i < r->nscripts; i++)
		if (redis_setup_cmd(r, 3, (const char *[]){ "SCRIPT", "LOAD",
		    r->scripts[i] }, (int)i + 1) != 0)
			goto fail;
	return;
fail:
	redis_fail(r, "set-up commands could not be queued", 1);
}

static void
redis_resolved(void *arg, struct dns_result *res)
{
	struct shaping_redis *r = arg;
	char ip[INET6_ADDRSTRLEN] = "";

	r->query = NULL;
	if (res->status == DNS_OK && res->nhost > 0 && res->hosts[0].naddr > 0) {
		const struct sockaddr_storage *ss = &res->hosts[0].addrs[0];
		if (ss->ss_family == AF_INET)
			inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->
			    sin_addr, ip, sizeof(ip));
		else
			inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->
			    sin6_addr, ip, sizeof(ip));
	}
	if (ip[0] == '\0') {
		char why[300];
		snprintf(why, sizeof(why), "cannot resolve %s: %s", r->url.host,
		    res->error ? res->error : "no address");
		dns_result_free(res);
		redis_fail(r, why, 0);
		return;
	}
	dns_result_free(res);
	redis_connect_addr(r, ip);
}

static int
redis_is_ip(const char *host)
{
	unsigned char buf[16];

	return inet_pton(AF_INET, host, buf) == 1 ||
	    inet_pton(AF_INET6, host, buf) == 1;
}

static void
redis_connect(struct shaping_redis *r)
{
	if (redis_is_ip(r->url.host) || r->dns == NULL) {
		redis_connect_addr(r, r->url.host);
		return;
	}
	redis_enter(r, REDIS_ST_RESOLVING);
	r->query = dns_host_lookup(r->dns, r->url.host, r->url.port,
	    redis_resolved, r);
}

static void
redis_retry_fire(evutil_socket_t fd, short what, void *arg)
{
	struct shaping_redis *r = arg;

	if (r->state == REDIS_ST_DOWN)
		redis_connect(r);
}

struct shaping_redis *
shaping_redis_new(struct event_base *base, struct dns *dns,
    const struct shaping_redis_params *p, shaping_redis_state_fn *fn,
    void *arg, char *err, size_t errlen)
{
	struct shaping_redis *r;
	struct shaping_redis_url url;

	if (shaping_redis_url_parse(p->url, &url, err, errlen) != 0)
		return NULL;
	if (dns == NULL && !redis_is_ip(url.host)) {
		snprintf(err, errlen, "'%s' is not an IP address", url.host);
		return NULL;
	}
	r = xcalloc(1, sizeof(*r));
	r->base = base;
	r->dns = dns;
	r->url = url;
	r->timeout_ms = p->timeout_ms > 0 ? p->timeout_ms : 250;
	r->retry_ms = p->retry_ms > 0 ? p->retry_ms : 1000;
	r->name = xstrdup(p->name ? p->name : "redis");
	r->nscripts = p->nscripts;
	r->scripts = xcalloc(p->nscripts + 1, sizeof(*r->scripts));
	r->sha = xcalloc(p->nscripts + 1, sizeof(*r->sha));
	for (size_t i = 0; i < p->nscripts; i++)
		r->scripts[i] = xstrdup(p->scripts[i]);
	r->fn = fn;
	r->arg = arg;
	TAILQ_INIT(&r->reqs);
	r->deadline_ev = evtimer_new(base, redis_deadline_fire, r);
	r->retry_ev = evtimer_new(base, redis_retry_fire, r);
	/* the first attempt from the loop, so no callback runs from here */
	{
		struct timeval now = { 0, 0 };
		evtimer_add(r->retry_ev, &now);
	}
	return r;
}

void
shaping_redis_free(struct shaping_redis *r)
{
	struct shaping_redis_req *q;

	if (r == NULL)
		return;
	/* answers that come after this find no client and no callback */
	while ((q = TAILQ_FIRST(&r->reqs)) != NULL) {
		TAILQ_REMOVE(&r->reqs, q, entry);
		q->r = NULL;
		q->cb = NULL;
	}
	if (r->query != NULL)
		dns_query_cancel(r->query);
	if (r->ac != NULL) {
		redisAsyncContext *ac = r->ac;
		r->ac = NULL;
		ac->data = NULL;
		redisAsyncFree(ac);
	}
	event_free(r->deadline_ev);
	event_free(r->retry_ev);
	for (size_t i = 0; i < r->nscripts; i++) {
		free(r->scripts[i]);
		free(r->sha[i]);
	}
	free(r->scripts);
	free(r->sha);
	free(r->name);
	free(r);
}

int
shaping_redis_is_up(const struct shaping_redis *r)
{
	return r != NULL && r->state == REDIS_ST_UP && r->ac != NULL;
}

static struct shaping_redis_req *
redis_submit(struct shaping_redis *r, struct shaping_redis_req *q,
    shaping_redis_reply_fn *cb, void *arg)
{
	q->cb = cb;
	q->arg = arg;
	if (redis_send(r, q) != 0)
		return NULL;
	return q;
}

struct shaping_redis_req *
shaping_redis_command(struct shaping_redis *r, int argc,
    const char *const *argv, shaping_redis_reply_fn *cb, void *arg)
{
	if (!shaping_redis_is_up(r) || argc < 1)
		return NULL;
	return redis_submit(r, redis_req_new(argc, argv, NULL), cb, arg);
}

struct shaping_redis_req *
shaping_redis_eval(struct shaping_redis *r, size_t script, int nkeys,
    int nargs, const char *const *args, shaping_redis_reply_fn *cb, void *arg)
{
	const char *argv[3 + 16];
	char nk[16];
	struct shaping_redis_req *q;

	if (!shaping_redis_is_up(r) || script >= r->nscripts ||
	    r->sha[script] == NULL || nargs > 16 || nkeys > nargs)
		return NULL;
	snprintf(nk, sizeof(nk), "%d", nkeys);
	argv[0] = "EVALSHA";
	argv[1] = r->sha[script];
	argv[2] = nk;
	for (int i = 0; i < nargs; i++)
		argv[3 + i] = args[i];
	q = redis_req_new(3 + nargs, argv, NULL);
	q->script = (int)script;
	return redis_submit(r, q, cb, arg);
}

void
shaping_redis_forget(struct shaping_redis_req *q)
{
	if (q != NULL)
		q->cb = NULL;
}
