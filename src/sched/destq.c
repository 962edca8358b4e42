/* SPDX-License-Identifier: MIT */
/*
 * destq.c: destinations and their delivery connections.
 *
 * A destination is a recipient domain, or the value of a [routes] entry
 * when a route sends domains to a fixed next hop (so all those domains share
 * one queue), unless the domain has a [tls_policy] entry of its own: its
 * connections need their own TLS level, so it stays a destination of its
 * own on that route. The TLS level of a connection is that of the
 * destination's name at the time it opens. Local recipients
 * (deliver/local.c) have their own: the backend holding their mailbox
 * ("backend:b1", SMTP or LMTP to its one endpoint), [local] lmtp
 * ("local:lmtp"), or this node's Maildirs ("local:maildir", whose
 * "connections" are jobs handed to maildir.c's workers: same queue,
 * retries, limits, logs and DSNs as SMTP); [tls_policy] is not theirs.
 * It owns the ready list of jobs, its resolved next hops (MX or
 * route), and its connections. Connection limits and throttle state live in
 * a site shared by every destination whose next hops are the same hosts.
 *
 * sched_dest_run() is the one place that decides to send: it feeds idle
 * connections, then opens new ones while the backlog exceeds the
 * connections on their way and the site's and the total limits allow.
 * Whatever stops it is logged once per change of reason; a destination
 * held back by its site's limit waits on the site (site->waiting) and is
 * run again when a connection of that site closes, one held back by the
 * total limit on s->starved. Traffic shaping (shape.c) adds its say at
 * three points: a suspended site holds the destination; a connection
 * opens on a path (source address, HELO) only when shaping_open says go;
 * an idle connection takes a job only when its path's token is due, and
 * sends it once the body is in and the token taken (it may wait LOADING
 * for it). A reply a rule matched is not the built-in throttle's.
 *
 * A destination with no job and no connection left is freed (the gc
 * event, so never under a caller's feet), and with it its site once no
 * destination and no connection counts on it (site->refs): memory follows
 * the domains mail is waiting for, not every domain ever mailed.
 *
 * Connection life: one state (sched_int.h draws it), moved only by
 * sched_conn_enter():
 *   CONNECTING -(READY)-> IDLE -(a job)-> LOADING -(its body is in,
 *   body.c)-> BUSY -(done, READY)-> IDLE ... -(idle, limits)-> QUITTING;
 *   LOADING -(no body: the job deferred)-> IDLE; LOADING waits there for
 *   its path's token (shaping); any -(CLOSED or
 *   FAILED)-> freed by sched_conn_free (FAILED also defers or throttles
 *   the destination; a job still LOADING goes back to the ready list).
 * A Maildir "connection" is IDLE at once, BUSY while maildir.c writes its
 * job, and goes after its idle timeout (no smtpc, no CLOSED).
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "deliver/deliver.h"
#include "log/log.h"
#include "sched/sched_int.h"
#include "util/intern.h"
#include "util/util.h"

static void sched_dest_replies_free(struct sched_dest *d);

/* The route for a domain: an exact [routes] key, else "*", else NULL. */
static const char *
sched_route_of(struct sched *s, const char *domain)
{
	const struct sl_conf *c = s->conf;
	const char *star = NULL;

	for (size_t i = 0; i < c->nroutes; i++) {
		if (sl_strcaseeq(c->routes[i].key, domain))
			return c->routes[i].value;
		if (strcmp(c->routes[i].key, "*") == 0)
			star = c->routes[i].value;
	}
	return star;
}

static uint32_t
sched_dest_hash(const void *node)
{
	return sl_hash_str(((const struct sched_dest *)node)->name);
}

static uint32_t
sched_site_hash(const void *node)
{
	return sl_hash_str(((const struct sched_site *)node)->key);
}

/* The destination named key (made with route and kind if new). */
static struct sched_dest *
sched_dest_get(struct sched *s, const char *key, const char *route,
    enum sched_dest_kind kind)
{
	size_t b = sl_hash_str(key) % s->dtab_size;
	struct sched_dest *d;

	for (d = s->dtab[b]; d != NULL; d = d->hnext)
		if (strcmp(d->name, key) == 0)
			return d;
	if (s->ndest >= s->dtab_size) {
		s->dtab = (struct sched_dest **)sl_chain_rehash((void **)s->dtab,
		    s->dtab_size, s->dtab_size * 2,
		    offsetof(struct sched_dest, hnext), sched_dest_hash);
		s->dtab_size *= 2;
		b = sl_hash_str(key) % s->dtab_size;
	}
	d = xcalloc(1, sizeof(*d));
	d->name = xstrdup(key);
	d->route = route ? xstrdup(route) : NULL;
	d->kind = (uint8_t)kind;
	TAILQ_INIT(&d->ready);
	TAILQ_INIT(&d->conns);
	TAILQ_INIT(&d->all);
	d->hnext = s->dtab[b];
	s->dtab[b] = d;
	s->ndest++;
	return d;
}

struct sched_dest *
sched_dest_of(struct sched *s, const char *addr)
{
	const struct conf_kv *be;
	const char *at = strrchr(addr, '@'), *route;
	char key[300];
	size_t i = 0;

	if (s->local != NULL && local_is_local(s->local, addr)) {
		if ((be = local_backend(s->local, addr)) != NULL) {
			snprintf(key, sizeof(key), "backend:%s", be->key);
			return sched_dest_get(s, key, be->value + 5,
			    strncmp(be->value, "lmtp:", 5) == 0 ?
			    SCHED_DEST_LMTP : SCHED_DEST_SMTP);
		}
		if (s->conf->local_lmtp_agent)
			return sched_dest_get(s, "local:lmtp", s->conf->local_lmtp,
			    SCHED_DEST_LMTP);
		return sched_dest_get(s, "local:maildir", NULL,
		    SCHED_DEST_MAILDIR);
	}
	/* the lower-case domain ("" for <Postmaster>) */
	if (at != NULL)
		for (at++; *at && i + 1 < sizeof(key); at++)
			key[i++] = (char)((*at >= 'A' && *at <= 'Z') ? *at + 32 :
			    *at);
	key[i] = '\0';
	route = sched_route_of(s, key);
	/* a domain with a TLS policy of its own keeps its own queue */
	return route != NULL && !conf_tls_policy_has(s->conf, key) ?
	    sched_dest_get(s, route, route, SCHED_DEST_SMTP) :
	    sched_dest_get(s, key, route, SCHED_DEST_SMTP);
}

static struct sched_site *
sched_site_get(struct sched *s, const char *key)
{
	size_t b = sl_hash_str(key) % s->stab_size;
	struct sched_site *site;

	for (site = s->stab[b]; site != NULL; site = site->hnext)
		if (strcmp(site->key, key) == 0)
			return site;
	if (s->nsite >= s->stab_size) {
		s->stab = (struct sched_site **)sl_chain_rehash((void **)s->stab,
		    s->stab_size, s->stab_size * 2,
		    offsetof(struct sched_site, hnext), sched_site_hash);
		s->stab_size *= 2;
		b = sl_hash_str(key) % s->stab_size;
	}
	s->nsite++;
	site = xcalloc(1, sizeof(*site));
	TAILQ_INIT(&site->waiting);
	site->key = xstrdup(key);
	site->limit = (int)s->conf->delivery_destination_concurrency;
	site->hnext = s->stab[b];
	s->stab[b] = site;
	return site;
}

/* Log why a due job waits, once per change of reason. */
static void
sched_dest_blocked(struct sched_dest *d, const char *why)
{
	if (d->blocked == why)
		return;
	d->blocked = why;
	if (why != NULL) {
		char n[24];
		snprintf(n, sizeof(n), "%llu", (unsigned long long)d->nready);
		log_ev(LOG_INFO, NULL, "delivery waiting", "destination",
		    d->name, "reason", why, "ready_jobs", n, NULL);
	}
}

void
sched_dest_blocked_text(struct sched_dest *d, const char *why)
{
	if (d->blocked != NULL && d->blocked == d->shape_why &&
	    strcmp(d->shape_why, why) == 0)
		return;
	free(d->shape_why);
	d->shape_why = xstrdup(why);
	sched_dest_blocked(d, d->shape_why);
}

static void
sched_dest_wake_fire(evutil_socket_t fd, short what, void *arg)
{
	struct sched_dest *d = arg;

	sched_dest_run(d->wake_s, d);
}

void
sched_dest_wake_at(struct sched *s, struct sched_dest *d, int64_t at_ms)
{
	int64_t now = sched_now_ms(), wait = at_ms > now ? at_ms - now : 0;
	struct timeval tv = { wait / 1000, (wait % 1000) * 1000 };

	if (d->wake == NULL) {
		d->wake = evtimer_new(s->base, sched_dest_wake_fire, d);
		d->wake_s = s;
	}
	evtimer_add(d->wake, &tv);
}

/* ---- next hops ---- */

/* Every ready job of d gets the same outcome (a DNS or connect failure). */
static void
sched_dest_all(struct sched *s, struct sched_dest *d, int perm, int code,
    const char *reply, const char *remote)
{
	struct sched_job *j;

	while ((j = TAILQ_FIRST(&d->ready)) != NULL) {
		if (perm)
			sched_job_fail_all(s, j, reply);
		else
			sched_job_defer_all(s, j, code, reply, remote);
	}
}

static int
sched_name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * The site key: the next hops' names, lower case, sorted, each once; so
 * equal MX sets share limits whatever order DNS (or the shuffle of equal
 * preferences) gave them in. Returns a new string.
 */
static char *
sched_site_key(const struct dns_result *r)
{
	char **names = xcalloc(r->nhost ? r->nhost : 1, sizeof(*names));
	size_t len = 1, n = 0;
	char *key;

	for (size_t i = 0; i < r->nhost; i++) {
		names[i] = xstrdup(r->hosts[i].name);
		for (char *p = names[i]; *p; p++)
			if (*p >= 'A' && *p <= 'Z')
				*p = (char)(*p + 32);
		len += strlen(names[i]) + 1;
	}
	qsort(names, r->nhost, sizeof(*names), sched_name_cmp);
	key = xcalloc(1, len);
	for (size_t i = 0; i < r->nhost; i++) {
		if (i == 0 || strcmp(names[i], names[i - 1]) != 0) {
			if (n++ > 0)
				strcat(key, ",");
			strcat(key, names[i]);
		}
	}
	for (size_t i = 0; i < r->nhost; i++)
		free(names[i]);
	free(names);
	return key;
}

static void sched_site_unref(struct sched *s, struct sched_site *site);

/* d counts on site (or on none: NULL). */
static void
sched_dest_set_site(struct sched *s, struct sched_dest *d,
    struct sched_site *site)
{
	if (d->site == site)
		return;
	if (d->waits_on != NULL) {
		TAILQ_REMOVE(&d->waits_on->waiting, d, site_wait);
		d->waits_on = NULL;
	}
	if (d->site != NULL)
		sched_site_unref(s, d->site);
	d->site = site;
	if (site != NULL)
		site->refs++;
}

static void sched_kick_fire(evutil_socket_t fd, short what, void *arg);

/* Run d when the loop is back (never from inside a connection's callback). */
void
sched_dest_kick_later(struct sched *s, struct sched_dest *d)
{
	if (s->kick_ev == NULL)
		s->kick_ev = event_new(s->base, -1, 0, sched_kick_fire, s);
	if (!d->in_kick) {
		TAILQ_INSERT_TAIL(&s->kick, d, kick);
		d->in_kick = 1;
	}
	event_active(s->kick_ev, EV_TIMEOUT, 1);
}

static void
sched_dest_resolved(void *arg, struct dns_result *r)
{
	struct sched_dest *d = arg;
	struct sched *s = d->wake_s;
	char reply[600];
	char *key;

	d->query = NULL;
	switch (r->status) {
	case DNS_OK:
		if (sched_hops_trim_self(s, d->name, r, reply,
		    sizeof(reply)) != 0) {
			log_ev(LOG_INFO, NULL, "mail loop", "destination",
			    d->name, "reason", reply, NULL);
			sched_dest_all(s, d, 1, 554, reply, NULL);
			break;
		}
		dns_result_free(d->hops);
		d->hops = r;
		d->hops_expire = sched_now_ms() + (int64_t)(r->ttl ? r->ttl :
		    300) * 1000;
		key = d->route ? xstrdup(d->route) : sched_site_key(r);
		sched_dest_set_site(s, d, sched_site_get(s, key));
		sched_shape_attach(s, d, key);
		free(key);
		sched_dest_run(s, d);
		return;
	case DNS_NXDOMAIN:
		snprintf(reply, sizeof(reply), "550 5.1.2 Host or domain name "
		    "not found: %s", r->error ? r->error : d->name);
		sched_dest_all(s, d, 1, 550, reply, NULL);
		break;
	case DNS_NULLMX:
		snprintf(reply, sizeof(reply), "556 5.1.10 Domain %s accepts "
		    "no mail (null MX)", d->name);
		sched_dest_all(s, d, 1, 556, reply, NULL);
		break;
	case DNS_NOHOST:
		snprintf(reply, sizeof(reply), "550 5.4.4 Unable to route: %s",
		    r->error ? r->error : "no address for the mail hosts");
		sched_dest_all(s, d, 1, 550, reply, NULL);
		break;
	case DNS_TEMP:
	default:
		/* hold the whole destination: retry DNS when its jobs are due */
		snprintf(reply, sizeof(reply), "451 4.4.3 DNS lookup failed: %s",
		    r->error ? r->error : d->name);
		log_ev(LOG_INFO, NULL, "destination held", "destination",
		    d->name, "reason", reply, NULL);
		d->paused_until = sched_now_ms() +
		    s->conf->delivery_retry_initial * 1000;
		sched_dest_all(s, d, 0, 451, reply, NULL);
		break;
	}
	dns_result_free(r);
}

/*
 * The next hop of this node's Maildirs or of a Unix socket: one host, no
 * DNS, kept as long as the destination is.
 */
static void
sched_dest_local_hops(struct sched *s, struct sched_dest *d)
{
	struct dns_result *r = xcalloc(1, sizeof(*r));
	struct sockaddr_storage ss;
	socklen_t len;

	r->nhost = 1;
	r->hosts = xcalloc(1, sizeof(*r->hosts));
	r->hosts[0].name = xstrdup(d->kind == SCHED_DEST_MAILDIR ? "maildir" :
	    "lmtp");
	if (d->route != NULL && conf_endpoint_parse(d->route, &ss, &len) == 0) {
		r->hosts[0].naddr = 1;
		r->hosts[0].addrs = xmalloc(sizeof(ss));
		memcpy(r->hosts[0].addrs, &ss, sizeof(ss));
	}
	dns_result_free(d->hops);
	d->hops = r;
	d->hops_expire = INT64_MAX;
	sched_dest_set_site(s, d, sched_site_get(s, d->route ? d->route :
	    d->name));
}

/* Start resolving d's next hops: a static route or the domain's MX. */
static void
sched_dest_resolve(struct sched *s, struct sched_dest *d)
{
	int port = (int)s->conf->delivery_smtp_port;
	char host[300];

	d->wake_s = s;
	if (d->kind == SCHED_DEST_MAILDIR || (d->route != NULL &&
	    strncmp(d->route, "unix:", 5) == 0)) {
		sched_dest_local_hops(s, d);
		return;
	}
	if (d->route != NULL) {
		/* "[host]:port": that host, no MX; "host[:port]": its MX */
		const char *r = d->route, *colon;
		int bracket = *r == '[';
		const char *end = bracket ? strchr(r, ']') : NULL;
		size_t n;

		if (bracket && end != NULL) {
			n = (size_t)(end - r - 1);
			colon = end[1] == ':' ? end + 1 : NULL;
			r++;
		} else {
			colon = strrchr(r, ':');
			n = colon ? (size_t)(colon - r) : strlen(r);
		}
		if (n >= sizeof(host))
			n = sizeof(host) - 1;
		memcpy(host, r, n);
		host[n] = '\0';
		if (colon != NULL)
			port = atoi(colon + 1);
		d->query = bracket ? dns_host_lookup(s->dns, host, port,
		    sched_dest_resolved, d) : dns_mx_lookup(s->dns, host, port,
		    sched_dest_resolved, d);
		return;
	}
	d->query = dns_mx_lookup(s->dns, d->name, port, sched_dest_resolved, d);
}

/* ---- connections ---- */

static const struct smtpc_cb sched_conn_cb;
static void sched_conn_next(struct sched_conn *c);

/* The addresses to try, in MX order; equal preferences rotated per
 * connection so that equal MX hosts share the load. */
static size_t
sched_conn_addrs(struct sched *s, struct sched_dest *d, struct smtpc_addr *out,
    size_t max)
{
	const struct dns_result *r = d->hops;
	size_t n = 0, i = 0;

	while (i < r->nhost && n < max) {
		size_t g = i;
		while (g < r->nhost && r->hosts[g].pref == r->hosts[i].pref)
			g++;
		size_t span = g - i, rot = (size_t)(s->next_dcid % span);
		for (size_t k = 0; k < span && n < max; k++) {
			const struct dns_host *h = &r->hosts[i + (k + rot) % span];
			for (size_t a = 0; a < h->naddr && n < max; a++) {
				out[n].ss = h->addrs[a];
				sl_strlcpy(out[n].host, h->name, sizeof(out[n].host));
				n++;
			}
		}
		i = g;
	}
	return n;
}

static const char *const sched_conn_state_names[] = {
	[SCHED_CONN_CONNECTING] = "connecting",
	[SCHED_CONN_IDLE] = "idle",
	[SCHED_CONN_LOADING] = "loading",
	[SCHED_CONN_BUSY] = "busy",
	[SCHED_CONN_QUITTING] = "quitting",
};

/* Move c to state st: the one writer of c->state (sched_int.h). */
static void
sched_conn_enter(struct sched_conn *c, enum sched_conn_state st)
{
	static const unsigned ok[] = {
		/* the states each may be entered from */
		[SCHED_CONN_CONNECTING] = 0,
		[SCHED_CONN_IDLE] = 1u << SCHED_CONN_CONNECTING |
		    1u << SCHED_CONN_LOADING | 1u << SCHED_CONN_BUSY,
		[SCHED_CONN_LOADING] = 1u << SCHED_CONN_IDLE,
		[SCHED_CONN_BUSY] = 1u << SCHED_CONN_LOADING,
		[SCHED_CONN_QUITTING] = 1u << SCHED_CONN_IDLE |
		    1u << SCHED_CONN_BUSY,
	};

	if (!(ok[st] & (1u << c->state)))
		SL_PANIC("DCID %llu: %s -> %s", (unsigned long long)c->dcid,
		    sched_conn_state_names[c->state],
		    sched_conn_state_names[st]);
	if (log_enabled(LOG_DEBUG))
		log_ev(LOG_DEBUG, &(struct log_ids){ 0, c->dcid, 0, -1 },
		    "connection state", "from",
		    sched_conn_state_names[c->state], "to",
		    sched_conn_state_names[st], NULL);
	if (c->state == SCHED_CONN_CONNECTING)
		c->dest->nconnecting--;
	c->state = st;
}

/* [delivery] tls and [tls_policy] in smtpc's words. */
static int
sched_tls_level(const struct sl_conf *conf, const char *name)
{
	switch (conf_tls_level_for(conf, name)) {
	case CONF_TLS_NONE:
		return SMTPC_TLS_NONE;
	case CONF_TLS_ENCRYPT:
		return SMTPC_TLS_ENCRYPT;
	case CONF_TLS_VERIFY:
		return SMTPC_TLS_VERIFY;
	default:
		return SMTPC_TLS_MAY;
	}
}

/*
 * The TLS level of a connection of d, taken as it opens. [delivery] tls
 * and [tls_policy] are about recipient domains: a mailbox server next door
 * is spoken to in the clear (LMTP), an SMTP backend of ours with TLS when
 * it offers it.
 */
static int
sched_dest_tls(const struct sl_conf *conf, const struct sched_dest *d)
{
	if (d->kind == SCHED_DEST_LMTP)
		return SMTPC_TLS_NONE;
	if (strncmp(d->name, "backend:", 8) == 0)
		return SMTPC_TLS_MAY;
	return sched_tls_level(conf, d->name);
}

static void
sched_conn_open(struct sched *s, struct sched_dest *d,
    struct shaping_path *path)
{
	struct smtpc_params p = {
		.helo = s->conf->server_hostname,
		.connect_timeout = (int)s->conf->delivery_connect_timeout,
		.command_timeout = (int)s->conf->delivery_command_timeout,
		.data_timeout = (int)s->conf->delivery_data_timeout,
		.tls = sched_dest_tls(s->conf, d),
		.tls_ca_file = s->conf->delivery_tls_ca_file,
		.lmtp = d->kind == SCHED_DEST_LMTP,
	};
	struct smtpc_addr addrs[32];
	struct sched_conn *c = xcalloc(1, sizeof(*c));
	struct smtpc_cb cb = sched_conn_cb;
	size_t n = sched_conn_addrs(s, d, addrs, SL_ARRAY_LEN(addrs));

	if (path != NULL) {
		/* its source address and HELO name (src/shaping) */
		p.source = shaping_path_source(path, &p.source_len);
		if (shaping_path_helo(path) != NULL)
			p.helo = shaping_path_helo(path);
	}
	c->path = path;
	c->s = s;
	c->dest = d;
	c->site = d->site;
	c->site->refs++;
	c->dcid = ++s->next_dcid;
	c->started = sched_now_ms();
	c->state = SCHED_CONN_CONNECTING;
	cb.arg = c;
	TAILQ_INSERT_TAIL(&d->conns, c, entry);
	d->nconn++;
	d->nconnecting++;
	c->site->nconn++;
	s->nconn++;
	if (d->kind == SCHED_DEST_MAILDIR) {
		/* nothing to connect to: ready for a job now */
		c->maildir = 1;
		sched_conn_enter(c, SCHED_CONN_IDLE);
		sched_conn_next(c);
		return;
	}
	c->c = smtpc_new(s->base, c->dcid, &p, addrs, n, &cb);
}

/* The one free path of a connection (smtpc is freed by the caller). */
static void
sched_conn_free(struct sched_conn *c)
{
	struct sched *s = c->s;
	struct sched_dest *d = c->dest;

	if (c->state == SCHED_CONN_LOADING && c->job != NULL) {
		/* never sent: back to the head of the ready list, no attempt
		 * counted; the destination is run again after the close */
		c->job->state = SCHED_JOB_READY;
		TAILQ_INSERT_HEAD(&d->ready, c->job, entry);
		d->nready++;
	}
	if (c->state == SCHED_CONN_CONNECTING)
		d->nconnecting--;
	sched_shape_conn_gone(c);
	TAILQ_REMOVE(&d->conns, c, entry);
	d->nconn--;
	c->site->nconn--;
	sched_site_unref(s, c->site);
	s->nconn--;
	if (d->nconn == 0)
		sched_dest_maybe_idle(s, d);
	if (c->idle_ev)
		event_free(c->idle_ev);
	if (c->wait.body != NULL)
		sched_body_cancel(s, &c->wait);
	else
		sched_body_put(s, c->body);
	free(c->rcpts);
	free(c);
}

static void sched_conn_gone(struct sched *s, struct sched_dest *d,
    struct sched_site *site);

static void
sched_conn_quit(struct sched_conn *c)
{
	if (c->shape_wait.list != NULL) {
		shaping_wait_cancel(&c->shape_wait);
		c->dest->ntoken_wait--;
	}
	sched_conn_enter(c, SCHED_CONN_QUITTING);
	if (c->maildir) {
		/* only from a timer (sched_conn_worn is 0 and a Maildir site
		 * never pauses), never under a walk of d->conns */
		sched_conn_gone(c->s, c->dest, c->site);
		sched_conn_free(c);
		return;
	}
	smtpc_quit(c->c);
}

static void
sched_conn_idle_fire(evutil_socket_t fd, short what, void *arg)
{
	struct sched_conn *c = arg;

	if (c->state == SCHED_CONN_IDLE)
		sched_conn_quit(c);
}

static void sched_conn_maildir_done(void *arg, struct smtpc_msg *m);

/* The body is in (or not): send the job, or defer it and go on. */
static void
sched_conn_loaded(struct sched_conn *c)
{
	struct sched *s = c->s;
	struct sched_job *job = c->job;
	struct sched_msg *m = job->msg;

	if (c->body->buf == NULL) {
		/* nothing to send: retry later rather than lose it, and let
		 * the connection take the next job or go (issue 9 item 17);
		 * a body the spool does not have is not retried for ever */
		int missing = c->body->missing &&
		    c->body->rid == SCHED_BODY_WHOLE;
		c->job = NULL;
		sched_body_put(s, c->body);
		c->body = NULL;
		sched_conn_enter(c, SCHED_CONN_IDLE);
		if (missing)
			sched_body_missing(s, job);
		else
			sched_job_defer_all(s, job, 451, "451 4.3.0 message "
			    "body could not be read from the spool", NULL);
		sched_conn_next(c);
		return;
	}
	if (!sched_msg_queued(m)) {
		/* deleted while its body was read: forget the job */
		c->job = NULL;
		sched_body_put(s, c->body);
		c->body = NULL;
		sched_conn_enter(c, SCHED_CONN_IDLE);
		sched_job_unlink(s, job);
		sched_msg_gc(s, m);
		sched_conn_next(c);
		return;
	}
	c->rcpts = xrealloc(c->rcpts, job->nrcpt * sizeof(*c->rcpts));
	memset(c->rcpts, 0, job->nrcpt * sizeof(*c->rcpts));
	for (uint32_t i = 0; i < job->nrcpt; i++) {
		const struct sched_rcpt *r = &m->rcpts[job->ridx[i]];
		c->rcpts[i].rid = r->rid;
		c->rcpts[i].addr = r->addr;
		c->rcpts[i].orcpt = sched_rcpt_orcpt(r);
		c->rcpts[i].notify = r->notify;
	}
	memset(&c->m, 0, sizeof(c->m));
	c->m.mid = m->mid;
	c->m.sender = sched_msg_sender(m);
	c->m.flags = m->flags;
	c->m.ret = m->ret;
	c->m.envid = sched_msg_envid(m);
	c->m.body = c->body->buf;	/* shared, read-only, held until done */
	c->m.nrcpt = job->nrcpt;
	c->m.rcpts = c->rcpts;
	c->m.owner = c;
	/* the token last, so the message goes out at once (shaping) */
	if (!sched_shape_send(c))
		return;
	sched_conn_enter(c, SCHED_CONN_BUSY);
	if (c->maildir)
		maildir_deliver(s->maildir, c->dcid, s->conf->local_maildir_root,
		    &c->m, sched_conn_maildir_done, c);
	else
		smtpc_send(c->c, &c->m);
}

/* 1 if c has carried its messages_per_connection or is connection_max_age old. */
static int
sched_conn_worn(const struct sched_conn *c)
{
	const struct sl_conf *conf = c->s->conf;

	if (c->maildir)		/* no peer to spare: only the idle timeout */
		return 0;
	return c->nmsgs >= sched_shape_mpc(c) ||
	    sched_now_ms() - c->started >=
	    conf->delivery_connection_max_age * 1000;
}

static void
sched_conn_body_cb(void *arg, struct sched_body *b)
{
	sched_conn_loaded(arg);
}

/* Hand job to the idle connection c: its body first (body.c). */
static void
sched_conn_send(struct sched_conn *c, struct sched_job *job)
{
	struct sched *s = c->s;
	uint32_t rpt = sched_shape_rpt(s, c->dest);

	if (job->nrcpt > rpt)
		sched_job_split(s, job, rpt);	/* the site takes fewer */
	TAILQ_REMOVE(&c->dest->ready, job, entry);
	c->dest->nready--;
	job->state = SCHED_JOB_ACTIVE;
	c->job = job;
	if (c->idle_ev)
		evtimer_del(c->idle_ev);
	sched_conn_enter(c, SCHED_CONN_LOADING);
	c->wait.cb = sched_conn_body_cb;
	c->wait.arg = c;
	if ((job->msg->flags & SPOOL_F_BATCH) && s->hooks.batch_body != NULL) {
		/* a batch recipient's own message, built off the loop */
		const struct sched_rcpt *r = &job->msg->rcpts[job->ridx[0]];
		c->body = sched_body_get_rcpt(s, job->msg->mid, r->rid, r->addr,
		    &c->wait);
	} else {
		c->body = sched_body_get(s, job->msg->mid, &c->wait);
	}
	if (!c->body->loading)
		sched_conn_loaded(c);
}

/* An idle connection: the next job of its destination, or rest, or go. */
static void
sched_conn_next(struct sched_conn *c)
{
	struct sched *s = c->s;
	struct sched_dest *d = c->dest;
	struct timeval tv = { s->conf->delivery_idle_timeout, 0 };

	if (sched_conn_worn(c) ||
	    c->site->paused_until > sched_now_ms() ||
	    sched_shape_suspended(s, d) != 0) {
		sched_conn_quit(c);
		return;
	}
	if (d->nready > 0 && sched_shape_due(c)) {
		sched_conn_send(c, TAILQ_FIRST(&d->ready));
		return;
	}
	/* rest (perhaps waiting for a token): past the idle time, go */
	if (c->idle_ev == NULL)
		c->idle_ev = evtimer_new(s->base, sched_conn_idle_fire, c);
	if (!evtimer_pending(c->idle_ev, NULL))
		evtimer_add(c->idle_ev, &tv);
}

void
sched_conn_resume(struct sched_conn *c)
{
	if (c->state == SCHED_CONN_LOADING)
		sched_conn_loaded(c);
	else
		sched_conn_next(c);
}

/* 421 or "too many connections" from a host of site: fewer connections,
 * and a pause. */
static void
sched_site_throttle(struct sched *s, struct sched_site *site,
    struct sched_dest *d, const char *reply)
{
	int limit = site->nconn > 1 ? site->nconn - 1 : 1;

	if (limit > site->limit / 2 && site->limit > 1)
		limit = site->limit / 2;
	site->limit = limit < 1 ? 1 : limit;
	site->paused_until = sched_now_ms() + s->conf->delivery_throttle_pause *
	    1000;
	{
		char lim[16];
		snprintf(lim, sizeof(lim), "%d", site->limit);
		log_ev(LOG_INFO, NULL, "destination throttled", "destination",
		    d->name, "limit", lim, "reply", reply, NULL);
	}
}

/* A message's outcome; the connection stays BUSY until smtpc says READY
 * (or CLOSED). */
/* Tell hooks.delivered which recipients took body (the archive). */
static void
sched_conn_delivered(struct sched *s, struct sched_job *job,
    const struct smtpc_msg *sm, struct evbuffer *body)
{
	uint32_t *rids = xcalloc(sm->nrcpt + 1, sizeof(*rids));
	const char **addrs = xcalloc(sm->nrcpt + 1, sizeof(*addrs));
	size_t n = 0;

	for (size_t i = 0; i < sm->nrcpt; i++) {
		if (sm->rcpts[i].code < 200 || sm->rcpts[i].code >= 300)
			continue;
		rids[n] = sm->rcpts[i].rid;
		addrs[n++] = sm->rcpts[i].addr;
	}
	if (n > 0)
		s->hooks.delivered(s->hooks.arg, job->msg->mid,
		    sched_msg_sender(job->msg), job->msg->flags, rids, addrs, n,
		    body);
	free(rids);
	free(addrs);
}

static void
sched_conn_done(void *arg, struct smtpc *sc, struct smtpc_msg *m)
{
	struct sched_conn *c = arg;
	struct sched *s = c->s;
	struct sched_job *job = c->job;
	int throttled = 0, delivered = 0;

	c->job = NULL;
	c->nmsgs++;
	if (job != NULL && s->hooks.delivered != NULL && c->body != NULL &&
	    c->body->buf != NULL)
		sched_conn_delivered(s, job, m, c->body->buf);
	sched_body_put(s, c->body);
	c->body = NULL;
	for (size_t i = 0; i < m->nrcpt; i++) {
		if (m->rcpts[i].code == 421)
			throttled = 1;
		if (m->rcpts[i].code >= 200 && m->rcpts[i].code < 300)
			delivered = 1;
	}
	/* a 421 a reply rule answered is the rule's to act on */
	if (throttled && !c->rule_matched)
		sched_site_throttle(s, c->site, c->dest, m->rcpts[0].reply);
	else if (delivered && c->site->limit <
	    s->conf->delivery_destination_concurrency)
		c->site->limit++;	/* recover, one step at a time */
	c->rule_matched = 0;
	/* a mailbox store takes no DSN duty: success notices are ours */
	if (job != NULL)
		sched_job_outcome(s, job, m->rcpts, m->nrcpt,
		    sc != NULL ? smtpc_peer_host(sc) : "maildir",
		    sc != NULL && (smtpc_peer_ext(sc) & SMTPC_EXT_DSN) != 0);
}

/* maildir.c wrote (or could not write) the job: as smtpc's done, then
 * READY; after sched_stop, the connection goes (maildir_free). */
static void
sched_conn_maildir_done(void *arg, struct smtpc_msg *m)
{
	struct sched_conn *c = arg;

	sched_conn_done(c, NULL, m);
	if (c->s->stopping) {
		sched_conn_free(c);
		return;
	}
	sched_conn_enter(c, SCHED_CONN_IDLE);
	sched_conn_next(c);
}

/* The loop is back: run the destinations a closed connection made room
 * for, then those waiting for total capacity. */
static void
sched_kick_fire(evutil_socket_t fd, short what, void *arg)
{
	struct sched *s = arg;
	struct sched_dest *d;

	while ((d = TAILQ_FIRST(&s->kick)) != NULL) {
		TAILQ_REMOVE(&s->kick, d, kick);
		d->in_kick = 0;
		sched_dest_run(s, d);
	}
	sched_run_starved(s);
}

/* A connection of site closed: its destination and those waiting on the
 * site get their turn once the socket is gone. */
static void
sched_conn_gone(struct sched *s, struct sched_dest *d, struct sched_site *site)
{
	struct sched_dest *w;

	sched_dest_kick_later(s, d);
	while ((w = TAILQ_FIRST(&site->waiting)) != NULL) {
		TAILQ_REMOVE(&site->waiting, w, site_wait);
		w->waits_on = NULL;
		sched_dest_kick_later(s, w);
	}
}

static void
sched_conn_event(void *arg, struct smtpc *sc, enum smtpc_event ev, int code,
    const char *reason)
{
	struct sched_conn *c = arg;
	struct sched *s = c->s;
	struct sched_dest *d = c->dest;

	switch (ev) {
	case SMTPC_READY:
		if (c->state == SCHED_CONN_QUITTING)
			return;		/* a QUIT asked for while busy */
		if (c->state == SCHED_CONN_CONNECTING && c->path != NULL)
			shaping_conn_ready(c->path);
		sched_conn_enter(c, SCHED_CONN_IDLE);
		sched_conn_next(c);
		return;
	case SMTPC_FAILED: {
		char reply[600];
		if (smtpc_bind_failed(sc) && c->path != NULL) {
			/* not the receiver's doing: another source may do */
			shaping_path_unbindable(c->path, reason);
		} else if (code == 421 || (code >= 400 && code < 500)) {
			/* unless a reply rule answered it */
			snprintf(reply, sizeof(reply), "%s", reason);
			if (!c->rule_matched)
				sched_site_throttle(s, c->site, d, reply);
		} else {
			snprintf(reply, sizeof(reply), "451 4.4.1 %s", reason);
			d->paused_until = sched_now_ms() +
			    s->conf->delivery_retry_initial * 1000;
			log_ev(LOG_INFO, NULL, "destination deferred",
			    "destination", d->name, "reason", reason, NULL);
			/* every ready job of d: all its hosts are down */
			sched_dest_all(s, d, 0, 451, reply, NULL);
		}
		break;
	}
	case SMTPC_CLOSED:
		break;
	}
	/* smtpc closes the socket only once this callback returns: open the
	 * next connection after that, so the receiver never sees one more
	 * than the limit */
	sched_conn_gone(s, d, c->site);
	smtpc_free(sc);	/* the owner releases it (smtpc.h) */
	sched_conn_free(c);
}

static const struct smtpc_cb sched_conn_cb = {
	.done = sched_conn_done,
	.event = sched_conn_event,
	.reply = sched_shape_reply,
};

/* ---- dispatch ---- */

void
sched_dest_run(struct sched *s, struct sched_dest *d)
{
	int64_t now = sched_now_ms(), until;
	struct sched_conn *c;
	struct shaping_path *path;

	d->wake_s = s;
	if (d->nready == 0 || s->stopping) {
		sched_dest_blocked(d, NULL);
		return;
	}
	if (d->paused_until > now) {
		sched_dest_blocked(d, "destination held after a failure");
		sched_dest_wake_at(s, d, d->paused_until);
		return;
	}
	if (d->hops == NULL || d->hops_expire <= now) {
		if (d->query == NULL)
			sched_dest_resolve(s, d);
		if (d->hops == NULL || d->query != NULL) {
			if (d->hops == NULL)
				return;
		}
	}
	if (d->site->paused_until > now) {
		sched_dest_blocked(d, "throttled by the receiver");
		sched_dest_wake_at(s, d, d->site->paused_until);
		return;
	}
	if ((until = sched_shape_suspended(s, d)) != 0) {
		sched_dest_wake_at(s, d, until);
		return;
	}
	TAILQ_FOREACH(c, &d->conns, entry) {
		if (d->nready == 0)
			break;
		if (c->state != SCHED_CONN_IDLE || c->shape_wait.list != NULL)
			continue;
		/* an idle connection is as bound by its limits as a busy one */
		if (sched_conn_worn(c)) {
			sched_conn_quit(c);
			continue;
		}
		if (sched_shape_due(c))
			sched_conn_send(c, TAILQ_FIRST(&d->ready));
	}
	/* connections waiting for a token: the rate, not their number, is
	 * what holds d back */
	while (d->nready > (uint64_t)d->nconnecting && d->ntoken_wait == 0) {
		if (d->site->nconn >= d->site->limit) {
			sched_dest_blocked(d, "destination concurrency limit");
			if (d->waits_on == NULL) {
				TAILQ_INSERT_TAIL(&d->site->waiting, d,
				    site_wait);
				d->waits_on = d->site;
			}
			return;
		}
		if (s->nconn >= s->conf->delivery_total_concurrency) {
			sched_dest_blocked(d, "total concurrency limit");
			if (!d->in_starved) {
				TAILQ_INSERT_TAIL(&s->starved, d, starved);
				d->in_starved = 1;
			}
			return;
		}
		if (!sched_shape_open(s, d, &path))
			return;
		sched_conn_open(s, d, path);
	}
	if (d->ntoken_wait == 0)
		sched_dest_blocked(d, NULL);
}

void
sched_run_starved(struct sched *s)
{
	struct sched_dest *d;

	while (s->nconn < s->conf->delivery_total_concurrency &&
	    (d = TAILQ_FIRST(&s->starved)) != NULL) {
		TAILQ_REMOVE(&s->starved, d, starved);
		d->in_starved = 0;
		sched_dest_run(s, d);
	}
}

/* ---- freeing what is idle ---- */

static void
sched_site_free(struct sched *s, struct sched_site *site)
{
	sl_chain_unlink((void **)&s->stab[sl_hash_str(site->key) %
	    s->stab_size], site, offsetof(struct sched_site, hnext));
	s->nsite--;
	free(site->key);
	free(site);
}

/* What d owns itself: its DNS query and answer, its timer, its names. */
static void
sched_dest_destroy(struct sched_dest *d)
{
	sched_dest_replies_free(d);
	sched_shape_detach(d->wake_s, d);
	if (d->query)
		dns_query_cancel(d->query);
	dns_result_free(d->hops);
	if (d->wake)
		event_free(d->wake);
	free(d->name);
	free(d->route);
	free(d);
}

/* Free d: it has no job and no connection; nothing else keeps it. */
static void
sched_dest_free(struct sched *s, struct sched_dest *d)
{
	sl_chain_unlink((void **)&s->dtab[sl_hash_str(d->name) % s->dtab_size],
	    d, offsetof(struct sched_dest, hnext));
	s->ndest--;
	if (d->in_starved)
		TAILQ_REMOVE(&s->starved, d, starved);
	if (d->in_kick)
		TAILQ_REMOVE(&s->kick, d, kick);
	sched_dest_set_site(s, d, NULL);
	sched_dest_destroy(d);
}

static void
sched_gc_fire(evutil_socket_t fd, short what, void *arg)
{
	struct sched *s = arg;
	struct sched_dest *d;
	struct sched_site *site;

	while ((d = TAILQ_FIRST(&s->idle)) != NULL) {
		TAILQ_REMOVE(&s->idle, d, idle);
		d->in_idle = 0;
		if (d->njobs == 0 && d->nconn == 0)
			sched_dest_free(s, d);
	}
	while ((site = s->idle_sites) != NULL) {
		s->idle_sites = site->idle_next;
		site->in_idle = 0;
		if (site->refs == 0)
			sched_site_free(s, site);
	}
}

static void
sched_gc_later(struct sched *s)
{
	if (s->gc_ev == NULL)
		s->gc_ev = event_new(s->base, -1, 0, sched_gc_fire, s);
	event_active(s->gc_ev, EV_TIMEOUT, 1);
}

void
sched_dest_maybe_idle(struct sched *s, struct sched_dest *d)
{
	if (d->in_idle || s->stopping)
		return;
	TAILQ_INSERT_TAIL(&s->idle, d, idle);
	d->in_idle = 1;
	sched_gc_later(s);
}

/* A destination or connection stops counting on site: once none does,
 * the gc event frees it. */
static void
sched_site_unref(struct sched *s, struct sched_site *site)
{
	if (--site->refs > 0 || site->in_idle || s->stopping)
		return;
	site->idle_next = s->idle_sites;
	s->idle_sites = site;
	site->in_idle = 1;
	sched_gc_later(s);
}

void
sched_stop(struct sched *s)
{
	s->stopping = 1;
	for (size_t b = 0; b < s->dtab_size; b++) {
		for (struct sched_dest *d = s->dtab[b]; d != NULL; d = d->hnext) {
			struct sched_conn *c, *next;
			for (c = TAILQ_FIRST(&d->conns); c != NULL; c = next) {
				next = TAILQ_NEXT(c, entry);
				/* a Maildir write in flight finishes in
				 * maildir_free, which frees its connection */
				if (c->maildir && c->state == SCHED_CONN_BUSY)
					continue;
				smtpc_free(c->c);
				sched_conn_free(c);
			}
		}
	}
}

/* ---- what the dashboard sees of a destination ---- */

void
sched_dest_job_add(struct sched_dest *d, struct sched_job *job,
    struct sched_job *after)
{
	struct sched_job *j = after;

	/* new mail comes last; a job made again for an older message (a
	 * release) goes back to its place; a split's, beside its own */
	if (j == NULL)
		TAILQ_FOREACH_REVERSE(j, &d->all, sched_job_list, all)
			if (j->msg->mid <= job->msg->mid)
				break;
	if (j == NULL)
		TAILQ_INSERT_HEAD(&d->all, job, all);
	else
		TAILQ_INSERT_AFTER(&d->all, j, job, all);
}

void
sched_dest_job_del(struct sched_dest *d, struct sched_job *job)
{
	TAILQ_REMOVE(&d->all, job, all);
}

void
sched_dest_note_reply(struct sched_dest *d, const char *reply,
    const char *host, int64_t now)
{
	struct sched_dest_reply *r = d->replies, hit;
	size_t i;

	if (reply == NULL)
		return;
	if (r == NULL)
		r = d->replies = xcalloc(SCHED_DEST_REPLIES, sizeof(*r));
	for (i = 0; i < SCHED_DEST_REPLIES && r[i].reply != NULL; i++)
		if (r[i].reply == reply && r[i].host == host)
			break;
	if (i == SCHED_DEST_REPLIES || r[i].reply == NULL) {
		/* a new one: the oldest (or an empty slot) makes room */
		if (i == SCHED_DEST_REPLIES)
			i--;
		sl_unintern(r[i].reply);
		sl_unintern(r[i].host);
		r[i] = (struct sched_dest_reply){ sl_intern_ref(reply),
		    sl_intern_ref(host), now, 0 };
	}
	hit = r[i];
	hit.count++;
	hit.at = now;
	memmove(&r[1], &r[0], i * sizeof(*r));	/* newest first */
	r[0] = hit;
}

static void
sched_dest_replies_free(struct sched_dest *d)
{
	for (size_t i = 0; d->replies && i < SCHED_DEST_REPLIES; i++) {
		sl_unintern(d->replies[i].reply);
		sl_unintern(d->replies[i].host);
	}
	free(d->replies);
	d->replies = NULL;
}

void
sched_dest_free_all(struct sched *s)
{
	for (size_t b = 0; b < s->dtab_size; b++) {
		struct sched_dest *d, *dn;
		for (d = s->dtab[b]; d != NULL; d = dn) {
			struct sched_conn *c;
			dn = d->hnext;
			while ((c = TAILQ_FIRST(&d->conns)) != NULL) {
				smtpc_free(c->c);
				sched_conn_free(c);
			}
			sched_dest_destroy(d);	/* the sites go below */
		}
		s->dtab[b] = NULL;
	}
	for (size_t b = 0; b < s->stab_size; b++) {
		struct sched_site *site, *sn;
		for (site = s->stab[b]; site != NULL; site = sn) {
			sn = site->hnext;
			free(site->key);
			free(site);
		}
		s->stab[b] = NULL;
	}
	if (s->kick_ev != NULL)
		event_free(s->kick_ev);
	s->kick_ev = NULL;
	if (s->gc_ev != NULL)
		event_free(s->gc_ev);
	s->gc_ev = NULL;
}
