/* SPDX-License-Identifier: MIT */
/*
 * local.c: the local recipients: which domains are ours, which addresses
 * exist ([local] users_file), where each mailbox is ([mailboxes] and
 * [local] mailbox_map: a backend, else this node's own agent), and the
 * recipient check at RCPT ([local] recipient_check): from the users file
 * at once, or by asking the server that holds the mailbox (an LMTP or
 * SMTP probe: MAIL FROM:<>, RCPT TO, no data) while the session waits.
 *
 * Owns the loaded tables (replaced whole by local_load, so a bad file on
 * reload leaves the old ones), the probe servers with their connections,
 * and the queries in flight.
 * Callers: sluiced (load at start and reload; the smtpd verify hook; the
 * scheduler's routing of local recipients).
 *
 * Invariants
 *  1. A query's callback runs once, from the loop, never from
 *     local_check itself; after local_check_cancel it never runs.
 *  2. At most LOCAL_CONNS probe connections per server; queries beyond
 *     wait in the server's FIFO.
 *  3. A server that cannot be reached answers its queries 451 4.4.1, so a
 *     client is told to come back, never refused for our outage.
 *
 * Query states: WAITING (in a server's FIFO) -> ASKING (its probe on a
 * connection) -> answered and freed; cancelled at any point: no callback
 * (an ASKING one is freed when its probe ends).
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <event2/event.h>

#include "conf/conf.h"
#include "deliver/deliver.h"
#include "log/log.h"
#include "smtpc/smtpc.h"
#include "util/util.h"

#define LOCAL_CONNS 4		/* probe connections per server */
#define LOCAL_IDLE_S 5		/* an idle probe connection is closed */

/* A set of strings (addresses), or a map to backend names. */
struct local_ent {
	struct local_ent *next;
	char *key;
	char *value;		/* a backend name, or NULL in a set */
};

struct local_tab {
	struct local_ent **b;
	size_t size, n;
};

struct local_query;
TAILQ_HEAD(local_query_list, local_query);

struct local_conn;

/* A server probes go to: a backend, or [local] lmtp. */
struct local_server {
	TAILQ_ENTRY(local_server) entry;
	struct local *l;
	char *spec;			/* "lmtp:unix:/path", "smtp:[a]:25" */
	struct smtpc_addr addr;
	int lmtp;
	struct local_conn *conns[LOCAL_CONNS];
	struct local_query_list waiting;
};

struct local_conn {
	struct local_server *srv;
	struct smtpc *c;
	struct local_query *q;		/* the one being asked */
	struct event *idle;
	int ready;
};

struct local_query {
	TAILQ_ENTRY(local_query) entry;
	struct local_server *srv;
	struct local *srv_l;		/* a deferred answer's owner */
	char *addr;
	local_check_fn *cb;		/* NULL once cancelled */
	void *arg;
	struct smtpc_msg m;
	struct smtpc_rcpt r;
	struct event *answer;		/* a local answer, deferred */
	TAILQ_ENTRY(local_query) later;	/* in local.later while deferred */
	int code;
	char reply[512];
};

struct local {
	struct event_base *base;
	const struct sl_conf *conf;
	struct local_tab users;		/* [local] users_file */
	struct local_tab map;		/* [mailboxes] + [local] mailbox_map */
	int have_users;
	TAILQ_HEAD(, local_server) servers;
	struct local_query_list later;	/* answers due next turn */
	uint64_t (*dcid)(void *);
	void *dcid_arg;
	uint64_t own_dcid;
};

/* --- tables --- */

static void
tab_init(struct local_tab *t, size_t n)
{
	t->size = 64;
	while (t->size < n * 2)
		t->size *= 2;
	t->b = xcalloc(t->size, sizeof(*t->b));
	t->n = 0;
}

static void
tab_free(struct local_tab *t)
{
	for (size_t i = 0; t->b != NULL && i < t->size; i++) {
		struct local_ent *e, *n;
		for (e = t->b[i]; e != NULL; e = n) {
			n = e->next;
			free(e->key);
			free(e->value);
			free(e);
		}
	}
	free(t->b);
	memset(t, 0, sizeof(*t));
}

static struct local_ent *
tab_find(const struct local_tab *t, const char *key)
{
	struct local_ent *e;

	if (t->b == NULL)
		return NULL;
	for (e = t->b[sl_hash_str(key) & (t->size - 1)]; e; e = e->next)
		if (strcmp(e->key, key) == 0)
			return e;
	return NULL;
}

/* Add key (lower-cased here); a key already there keeps its value. */
static void
tab_add(struct local_tab *t, const char *key, const char *value)
{
	struct local_ent *e;
	char *k = xstrdup(key);
	size_t h;

	for (char *p = k; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	if (tab_find(t, k) != NULL) {
		free(k);
		return;
	}
	if (t->n * 2 >= t->size) {
		struct local_tab bigger;
		tab_init(&bigger, t->n + 1);
		for (size_t i = 0; i < t->size; i++) {
			struct local_ent *n;
			for (e = t->b[i]; e != NULL; e = n) {
				n = e->next;
				h = sl_hash_str(e->key) & (bigger.size - 1);
				e->next = bigger.b[h];
				bigger.b[h] = e;
			}
		}
		bigger.n = t->n;
		free(t->b);
		*t = bigger;
	}
	e = xcalloc(1, sizeof(*e));
	e->key = k;
	e->value = value ? xstrdup(value) : NULL;
	h = sl_hash_str(k) & (t->size - 1);
	e->next = t->b[h];
	t->b[h] = e;
	t->n++;
}

/*
 * Read path line by line: addresses (users) or "key = backend" (map).
 * Blank lines and '#' comments are skipped. 0, or -1 with file:line.
 */
static int
local_read(const struct sl_conf *c, const char *path, struct local_tab *t,
    int map, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	char line[1024];
	int n = 0;

	if (f == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		char *s = line, *eq, *v = NULL;
		n++;
		if (strchr(line, '\n') == NULL && !feof(f)) {
			snprintf(err, errlen, "%s:%d: line longer than %zu bytes",
			    path, n, sizeof(line) - 2);
			goto fail;
		}
		if ((eq = strchr(s, '#')) != NULL)
			*eq = '\0';
		s = sl_strtrim(s);
		if (*s == '\0')
			continue;
		if (map) {
			if ((eq = strchr(s, '=')) == NULL) {
				snprintf(err, errlen, "%s:%d: expected ADDRESS "
				    "= BACKEND or DOMAIN = BACKEND", path, n);
				goto fail;
			}
			*eq = '\0';
			v = sl_strtrim(eq + 1);
			s = sl_strtrim(s);
			if (conf_backend(c, v) == NULL) {
				snprintf(err, errlen, "%s:%d: no backend '%s' in "
				    "[backends]", path, n, v);
				goto fail;
			}
		}
		if (strchr(s, ' ') != NULL || (!map && strchr(s, '@') == NULL)) {
			snprintf(err, errlen, "%s:%d: '%s' is not %s", path, n,
			    s, map ? "an address or a domain" : "an address");
			goto fail;
		}
		tab_add(t, s, v);
	}
	fclose(f);
	return 0;
fail:
	fclose(f);
	return -1;
}

struct local *
local_new(struct event_base *base, uint64_t (*dcid)(void *), void *dcid_arg)
{
	struct local *l = xcalloc(1, sizeof(*l));

	l->base = base;
	l->dcid = dcid;
	l->dcid_arg = dcid_arg;
	TAILQ_INIT(&l->servers);
	TAILQ_INIT(&l->later);
	return l;
}

int
local_load(struct local *l, const struct sl_conf *c, char *err, size_t errlen)
{
	struct local_tab users = { 0 }, map = { 0 };

	tab_init(&users, 0);
	tab_init(&map, c->nmailboxes);
	for (size_t i = 0; i < c->nmailboxes; i++)
		tab_add(&map, c->mailboxes[i].key, c->mailboxes[i].value);
	if ((c->local_users_file[0] != '\0' && local_read(c,
	    c->local_users_file, &users, 0, err, errlen) != 0) ||
	    (c->local_mailbox_map[0] != '\0' && local_read(c,
	    c->local_mailbox_map, &map, 1, err, errlen) != 0)) {
		tab_free(&users);
		tab_free(&map);
		return -1;
	}
	tab_free(&l->users);
	tab_free(&l->map);
	l->users = users;
	l->map = map;
	l->have_users = c->local_users_file[0] != '\0';
	l->conf = c;
	if (c->nlocal_domains > 0 && c->recipient_check == 1 && !l->have_users)
		log_warnx("[local] recipient_check = file without users_file: "
		    "every address of the local domains is taken");
	return 0;
}

/* --- where a mailbox is --- */

/* addr lower-cased into buf; the domain part or NULL. */
static const char *
local_lower(const char *addr, char *buf, size_t len)
{
	const char *at;

	sl_strlcpy(buf, addr, len);
	for (char *p = buf; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	at = strrchr(buf, '@');
	return at ? at + 1 : NULL;
}

int
local_is_local(const struct local *l, const char *addr)
{
	char buf[1024];
	const char *dom = local_lower(addr, buf, sizeof(buf));

	return dom != NULL && conf_domain_in(l->conf->local_domains,
	    l->conf->nlocal_domains, dom);
}

const struct conf_kv *
local_backend(const struct local *l, const char *addr)
{
	char buf[1024];
	const char *dom = local_lower(addr, buf, sizeof(buf));
	const struct local_ent *e;

	/* the address first, then its domain */
	if ((e = tab_find(&l->map, buf)) == NULL && dom != NULL)
		e = tab_find(&l->map, dom);
	return e != NULL ? conf_backend(l->conf, e->value) : NULL;
}

/* --- the recipient check --- */

static void local_conn_next(struct local_conn *lc);
static void local_server_pump(struct local_server *s);

/* The answer goes to the session (unless cancelled); the query is freed. */
static void
local_answer(struct local_query *q)
{
	if (q->cb != NULL)
		q->cb(q->arg, q->code, q->reply);
	if (q->answer != NULL)
		event_free(q->answer);
	free(q->addr);
	free(q);
}

static void
local_answer_ev(evutil_socket_t fd, short what, void *arg)
{
	struct local_query *q = arg;

	TAILQ_REMOVE(&q->srv_l->later, q, later);
	local_answer(q);
}

/* The probe's RCPT reply as the reply to the client's RCPT. */
static void
local_verdict(struct local_query *q, int code, const char *reply)
{
	q->code = code;
	if (code / 100 == 2)
		snprintf(q->reply, sizeof(q->reply), "250 2.1.5 Ok");
	else if (code / 100 == 5 && code != 552)
		snprintf(q->reply, sizeof(q->reply), "550 5.1.1 <%s>: Recipient "
		    "address rejected: %s", q->addr, reply);
	else if (code / 100 == 5)	/* over quota, as the server said */
		snprintf(q->reply, sizeof(q->reply), "%s", reply);
	else
		snprintf(q->reply, sizeof(q->reply), "451 4.4.1 <%s>: Recipient "
		    "check unavailable, try again later (%s)", q->addr, reply);
	if (q->code / 100 == 5 && q->code != 552)
		q->code = 550;
	else if (q->code / 100 != 2 && q->code / 100 != 5)
		q->code = 451;
}

static void
local_conn_free(struct local_conn *lc)
{
	struct local_server *s = lc->srv;

	for (int i = 0; i < LOCAL_CONNS; i++)
		if (s->conns[i] == lc)
			s->conns[i] = NULL;
	smtpc_free(lc->c);
	event_free(lc->idle);
	free(lc);
}

static void
local_probe_done(void *arg, struct smtpc *c, struct smtpc_msg *m)
{
	struct local_conn *lc = arg;
	struct local_query *q = lc->q;

	lc->q = NULL;
	local_verdict(q, q->r.code, q->r.reply);
	local_answer(q);
}

/* The connection failed or closed: its query and, if it never came up,
 * every waiting one are answered 451 (invariant 3). */
static void
local_probe_event(void *arg, struct smtpc *c, enum smtpc_event ev, int code,
    const char *reason)
{
	struct local_conn *lc = arg;
	struct local_server *s = lc->srv;
	struct local_query *q;

	if (ev == SMTPC_READY) {
		lc->ready = 1;
		local_conn_next(lc);
		return;
	}
	if ((q = lc->q) != NULL) {
		lc->q = NULL;
		local_verdict(q, 451, reason ? reason : "connection closed");
		local_answer(q);
	}
	if (ev == SMTPC_FAILED) {
		log_ev(LOG_WARNING, NULL, "recipient check: server unreachable",
		    "server", s->spec, "reason", reason ? reason : "", NULL);
		while ((q = TAILQ_FIRST(&s->waiting)) != NULL) {
			TAILQ_REMOVE(&s->waiting, q, entry);
			local_verdict(q, 451, reason ? reason : "unreachable");
			local_answer(q);
		}
	}
	local_conn_free(lc);
	local_server_pump(s);
}

static void
local_idle_ev(evutil_socket_t fd, short what, void *arg)
{
	struct local_conn *lc = arg;

	if (lc->q == NULL)
		smtpc_quit(lc->c);	/* CLOSED follows and frees it */
}

/* A ready connection asks the next waiting query, or idles. */
static void
local_conn_next(struct local_conn *lc)
{
	struct local_server *s = lc->srv;
	struct local_query *q = TAILQ_FIRST(&s->waiting);
	struct timeval tv = { LOCAL_IDLE_S, 0 };

	if (q == NULL) {
		evtimer_add(lc->idle, &tv);
		return;
	}
	evtimer_del(lc->idle);
	TAILQ_REMOVE(&s->waiting, q, entry);
	lc->q = q;
	smtpc_send(lc->c, &q->m);
}

/* Waiting queries get a connection: an idle one, or a new one. */
static void
local_server_pump(struct local_server *s)
{
	const struct sl_conf *c = s->l->conf;

	for (int i = 0; i < LOCAL_CONNS && !TAILQ_EMPTY(&s->waiting); i++) {
		struct local_conn *lc = s->conns[i];
		if (lc != NULL) {
			if (lc->ready && lc->q == NULL)
				local_conn_next(lc);
			continue;
		}
		struct smtpc_params p = {
			.helo = c->server_hostname,
			.connect_timeout = (int)c->local_recipient_check_timeout,
			.command_timeout = (int)c->local_recipient_check_timeout,
			.data_timeout = (int)c->local_recipient_check_timeout,
			.tls = SMTPC_TLS_NONE,
			.lmtp = s->lmtp,
		};
		struct smtpc_cb cb = { .done = local_probe_done,
			.event = local_probe_event };
		lc = xcalloc(1, sizeof(*lc));
		lc->srv = s;
		lc->idle = evtimer_new(s->l->base, local_idle_ev, lc);
		cb.arg = lc;
		s->conns[i] = lc;
		lc->c = smtpc_new(s->l->base, s->l->dcid ?
		    s->l->dcid(s->l->dcid_arg) : ++s->l->own_dcid, &p, &s->addr,
		    1, &cb);
		return;		/* one new connection a turn is enough */
	}
}

/* The server for spec ("lmtp:ENDPOINT", "smtp:ENDPOINT"), made on demand. */
static struct local_server *
local_server_get(struct local *l, const char *spec)
{
	struct local_server *s;
	socklen_t len;

	TAILQ_FOREACH(s, &l->servers, entry)
		if (strcmp(s->spec, spec) == 0)
			return s;
	s = xcalloc(1, sizeof(*s));
	s->l = l;
	s->spec = xstrdup(spec);
	s->lmtp = strncmp(spec, "lmtp:", 5) == 0;
	if (conf_endpoint_parse(spec + 5, &s->addr.ss, &len) != 0)
		SL_PANIC("local: endpoint '%s' passed conf", spec);
	sl_strlcpy(s->addr.host, s->lmtp ? "lmtp" : "", sizeof(s->addr.host));
	TAILQ_INIT(&s->waiting);
	TAILQ_INSERT_TAIL(&l->servers, s, entry);
	return s;
}

/* Answer q from here, on the next loop turn (invariant 1). */
static struct local_query *
local_answer_later(struct local *l, struct local_query *q)
{
	struct timeval tv = { 0, 0 };

	q->srv_l = l;
	q->answer = evtimer_new(l->base, local_answer_ev, q);
	evtimer_add(q->answer, &tv);
	TAILQ_INSERT_TAIL(&l->later, q, later);
	return q;
}

struct local_query *
local_check(struct local *l, const char *addr, local_check_fn *cb, void *arg)
{
	const struct sl_conf *c = l->conf;
	struct local_query *q;
	const struct conf_kv *be;
	char buf[1024], spec[600];

	if (c->recipient_check == 0 || !local_is_local(l, addr))
		return NULL;
	q = xcalloc(1, sizeof(*q));
	q->addr = xstrdup(addr);
	q->cb = cb;
	q->arg = arg;
	if (c->recipient_check == 1) {
		local_lower(addr, buf, sizeof(buf));
		if (!l->have_users || tab_find(&l->users, buf) != NULL) {
			free(q->addr);
			free(q);
			return NULL;
		}
		local_verdict(q, 550, "User unknown");
		return local_answer_later(l, q);
	}
	/* lmtp: the server holding the mailbox, by LMTP or SMTP */
	if ((be = local_backend(l, addr)) != NULL)
		sl_strlcpy(spec, be->value, sizeof(spec));
	else if (c->local_lmtp_agent)
		snprintf(spec, sizeof(spec), "lmtp:%s", c->local_lmtp);
	else {
		local_verdict(q, 451, "no server holds this mailbox");
		return local_answer_later(l, q);
	}
	q->srv = local_server_get(l, spec);
	q->m.sender = "";
	q->m.probe = 1;
	q->m.nrcpt = 1;
	q->m.rcpts = &q->r;
	q->r.addr = q->addr;
	TAILQ_INSERT_TAIL(&q->srv->waiting, q, entry);
	local_server_pump(q->srv);
	return q;
}

void
local_check_cancel(struct local_query *q)
{
	if (q == NULL)
		return;
	q->cb = NULL;
	/* a waiting one leaves at once; an asking one when its probe ends */
	if (q->answer == NULL && q->srv != NULL) {
		struct local_conn *lc = NULL;
		for (int i = 0; i < LOCAL_CONNS; i++)
			if (q->srv->conns[i] != NULL &&
			    q->srv->conns[i]->q == q)
				lc = q->srv->conns[i];
		if (lc == NULL) {
			TAILQ_REMOVE(&q->srv->waiting, q, entry);
			free(q->addr);
			free(q);
		}
	}
}

void
local_free(struct local *l)
{
	struct local_server *s;
	struct local_query *q;

	if (l == NULL)
		return;
	while ((q = TAILQ_FIRST(&l->later)) != NULL) {
		TAILQ_REMOVE(&l->later, q, later);
		q->cb = NULL;
		local_answer(q);
	}
	while ((s = TAILQ_FIRST(&l->servers)) != NULL) {
		TAILQ_REMOVE(&l->servers, s, entry);
		for (int i = 0; i < LOCAL_CONNS; i++) {
			struct local_conn *lc = s->conns[i];
			if (lc == NULL)
				continue;
			if (lc->q != NULL) {
				free(lc->q->addr);
				free(lc->q);
			}
			local_conn_free(lc);
		}
		while ((q = TAILQ_FIRST(&s->waiting)) != NULL) {
			TAILQ_REMOVE(&s->waiting, q, entry);
			free(q->addr);
			free(q);
		}
		free(s->spec);
		free(s);
	}
	tab_free(&l->users);
	tab_free(&l->map);
	free(l);
}
