/* SPDX-License-Identifier: MIT */
/*
 * listener.c: the listening sockets ([server] listen, and [submission]
 * listen and tls_listen), connection limits (in total, per client address
 * at once, and per client address per minute), the list of open sessions,
 * and graceful shutdown.
 *
 * Per-address counts live in a small chained hash table keyed by the
 * address bytes; an entry exists only while that address has a session, so
 * its size follows the number of distinct clients connected.
 * As Postfix does for mynetworks, trusted clients are exempt from the
 * per-address limits (the total limit still holds). A client over a limit
 * gets one 421 line written to its fresh socket and the socket closed at
 * once, so it costs no session and delays no one else.
 *
 * Draining (`sluice drain`): smtpd_server_pause closes the listening
 * sockets, so new connections are refused by the kernel (and a load
 * balancer's SMTP check marks the node down) while sessions in progress
 * go on; smtpd_server_resume binds the same addresses again.
 *
 * With loops of their own (loops.c), each shard runs this on its thread;
 * the per-address table, what clients.c remembers per address, the count
 * of sessions against max_connections and the ICIDs are the root's
 * (smtpd_root), the tables under its limits_mu.
 *
 * Behind a balancer ([server] proxy_protocol, on [server] listen), a
 * connection from outside proxy_trusted_networks is closed at accept; the
 * others become sessions in SMTPD_ST_PROXY, and the per-address limits
 * (concurrent and per minute) are applied to the client their PROXY header
 * names (smtpd_server_admit), not to the balancer.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/event.h>

#include "auth/auth.h"
#include "log/log.h"
#include "smtpd/smtpd_int.h"
#include "util/tls.h"
#include "util/util.h"
#include "util/work.h"

#define IPTAB_SIZE 4096

static size_t
iptab_key(const struct sockaddr *sa, uint8_t addr[16], int *family)
{
	memset(addr, 0, 16);
	if (sa->sa_family == AF_INET) {
		memcpy(addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		*family = AF_INET;
	} else if (sa->sa_family == AF_INET6) {
		memcpy(addr, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
		*family = AF_INET6;
	} else {
		*family = sa->sa_family;
	}
	uint32_t h = 2166136261u;	/* FNV-1a */
	for (int i = 0; i < 16; i++)
		h = (h ^ addr[i]) * 16777619u;
	return h % IPTAB_SIZE;
}

/* (the root's limits_mu held) */
static struct smtpd_iptab_entry *
iptab_get(struct smtpd_server *srv, const struct sockaddr *sa, int create)
{
	struct smtpd_iptab_entry *e;
	uint8_t addr[16];
	int family;
	size_t b = iptab_key(sa, addr, &family);

	srv = smtpd_root(srv);
	for (e = srv->iptab[b]; e != NULL; e = e->next)
		if (e->family == family && memcmp(e->addr, addr, 16) == 0)
			return e;
	if (!create)
		return NULL;
	e = xcalloc(1, sizeof(*e));
	memcpy(e->addr, addr, 16);
	e->family = family;
	e->next = srv->iptab[b];
	srv->iptab[b] = e;
	return e;
}

static void
iptab_release(struct smtpd_server *srv, struct smtpd_session *s)
{
	struct smtpd_iptab_entry **pp, *e = s->ipent;
	uint8_t addr[16];
	int family;

	srv = smtpd_root(srv);
	pthread_mutex_lock(&srv->limits_mu);
	if (e == NULL || --e->count > 0) {
		pthread_mutex_unlock(&srv->limits_mu);
		return;
	}
	for (pp = &srv->iptab[iptab_key((struct sockaddr *)&s->peer, addr,
	    &family)]; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == e) {
			*pp = e->next;
			free(e);
			break;
		}
	}
	pthread_mutex_unlock(&srv->limits_mu);
}

struct smtpd_server *
smtpd_server_new(struct event_base *base, const struct sl_conf *conf,
    const struct smtpd_ops *ops)
{
	struct smtpd_server *srv = xcalloc(1, sizeof(*srv));

	srv->base = base;
	srv->conf = conf;
	srv->ops = *ops;
	atomic_init(&srv->inflight_cap, smtpd_inflight_cap(conf));
	atomic_init(&srv->inflight_held, 0);
	TAILQ_INIT(&srv->sessions);
	srv->iptab = xcalloc(IPTAB_SIZE, sizeof(*srv->iptab));
	pthread_mutex_init(&srv->limits_mu, NULL);
	atomic_init(&srv->total, 0);
	atomic_init(&srv->last_icid, 0);
	return srv;
}

/* Turn a client away before any session exists: one line, then close. */
static void
smtpd_refuse(int fd, const char *reply)
{
	/* a fresh socket's send buffer takes one line without blocking */
	struct iovec iov[2] = { { (void *)reply, strlen(reply) },
		{ (void *)"\r\n", 2 } };
	ssize_t n = writev(fd, iov, 2);
	(void)n;
	close(fd);
}

/*
 * The per-address limits, concurrent sessions and new connections per
 * minute: NULL if the client at sa may open one more session, else the
 * setting it is over, with the 421 line (no CRLF) in reply. A connection
 * is counted against the rate whether it is taken or refused for it, so a
 * client that keeps hammering stays over. Behind a balancer sa is the
 * client its PROXY header named (smtpd_server_admit), not the balancer.
 */
/* (the root's limits_mu held) */
static const char *
smtpd_admit(struct smtpd_server *srv, const struct sockaddr *sa, int trusted,
    char *reply, size_t len)
{
	const struct sl_conf *c = srv->conf;
	struct smtpd_iptab_entry *e = iptab_get(srv, sa, 0);

	if (trusted)
		return NULL;
	if (c->server_max_connections_per_ip > 0 && e != NULL &&
	    e->count >= (uint64_t)c->server_max_connections_per_ip) {
		snprintf(reply, len, "421 4.7.0 %s Error: too many "
		    "connections from your address", c->server_hostname);
		return "max_connections_per_ip";
	}
	if (c->server_connection_rate_per_ip > 0 &&
	    smtpd_client_rate_over(srv, sa, c->server_connection_rate_per_ip,
	    sl_mono_ms())) {
		snprintf(reply, len, "421 4.7.0 %s Error: too many "
		    "connections from your address per minute, try again "
		    "later", c->server_hostname);
		return "connection_rate_per_ip";
	}
	return NULL;
}

/* Count s against its client's address (the root's limits_mu held). */
static void
smtpd_ip_hold(struct smtpd_server *srv, struct smtpd_session *s)
{
	struct smtpd_iptab_entry *e = iptab_get(srv,
	    (struct sockaddr *)&s->peer, 1);

	e->count++;
	s->ipent = e;
}

int
smtpd_server_admit(struct smtpd_server *srv, struct smtpd_session *s,
    char *reply, size_t len)
{
	struct smtpd_server *root = smtpd_root(srv);
	const char *why;

	pthread_mutex_lock(&root->limits_mu);
	why = smtpd_admit(srv, (struct sockaddr *)&s->peer, s->trusted, reply,
	    len);
	if (why == NULL)
		smtpd_ip_hold(srv, s);
	pthread_mutex_unlock(&root->limits_mu);
	if (why != NULL) {
		srv->stats.refused++;
		log_ev(LOG_INFO, &(struct log_ids){ s->icid, 0, 0, -1 },
		    "connection refused", "reason", why, NULL);
		return -1;
	}
	return 0;
}

static void
smtpd_accept(struct evconnlistener *l, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct smtpd_listener *sl = arg;
	struct smtpd_server *srv = sl->srv;
	const struct sl_conf *c = srv->conf;
	struct smtpd_session *s;
	const char *why = NULL;
	char reply[300];
	/* the PROXY protocol is spoken on [server] listen only */
	int proxied = sl->kind == SMTPD_L_MTA &&
	    c->proxy_mode != SMTPD_PROXY_OFF;

	srv->stats.connections++;
	pthread_mutex_lock(&smtpd_root(srv)->limits_mu);
	if (atomic_load(&smtpd_root(srv)->total) >=
	    (uint64_t)c->server_max_connections) {
		snprintf(reply, sizeof(reply), "421 4.7.0 %s Error: too many "
		    "connections, try again later", c->server_hostname);
		why = "max_connections";
	} else if (proxied) {
		/* only a balancer may say who the client is */
		if (!conf_net_match(c->proxy_trusted, c->nproxy_trusted, sa))
			why = "not in proxy_trusted_networks";
	} else {
		why = smtpd_admit(srv, sa, conf_net_match(c->trusted,
		    c->ntrusted, sa), reply, sizeof(reply));
	}
	if (why == NULL)
		atomic_fetch_add(&smtpd_root(srv)->total, 1);
	pthread_mutex_unlock(&smtpd_root(srv)->limits_mu);
	if (why != NULL) {
		char addr[64];
		srv->stats.refused++;
		smtpd_addr_text(sa, addr, sizeof(addr));
		log_ev(LOG_INFO, NULL, "connection refused", "reason", why,
		    "address", addr, NULL);
		/* a peer that should have sent a PROXY header gets no SMTP */
		if (proxied && strcmp(why, "max_connections") != 0)
			close(fd);
		else
			smtpd_refuse(fd, reply);
		return;
	}
	evutil_make_socket_nonblocking(fd);
	if ((s = smtpd_session_new(srv, fd, sa, (socklen_t)salen,
	    proxied)) == NULL) {
		atomic_fetch_sub(&smtpd_root(srv)->total, 1);
		return;
	}
	s->submission = sl->kind != SMTPD_L_MTA;
	if (!proxied) {
		pthread_mutex_lock(&smtpd_root(srv)->limits_mu);
		smtpd_ip_hold(srv, s);
		pthread_mutex_unlock(&smtpd_root(srv)->limits_mu);
	}
	TAILQ_INSERT_TAIL(&srv->sessions, s, entry);
	if (++srv->stats.sessions > srv->stats.peak_sessions)
		srv->stats.peak_sessions = srv->stats.sessions;
	/* RFC 8314: the handshake first; the greeting waits in the filter */
	if (sl->kind == SMTPD_L_SUBMISSIONS && smtpd_tls_implicit(s) != 0) {
		smtpd_session_free(s, "TLS not available");
		return;
	}
	smtpd_session_start(s);
}

static void
smtpd_accept_error(struct evconnlistener *l, void *arg)
{
	int err = EVUTIL_SOCKET_ERROR();

	/* EMFILE and friends: back off a moment instead of spinning */
	log_warnx("accept: %s", evutil_socket_error_to_string(err));
	if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
		evconnlistener_disable(l);
		struct timeval tv = { 0, 100000 };
		event_base_once(evconnlistener_get_base(l), -1, EV_TIMEOUT,
		    (void (*)(evutil_socket_t, short, void *))
		    (void (*)(void))evconnlistener_enable, l, &tv);
	}
}

/* Bind the n addresses of one kind. */
static int
smtpd_listen_kind(struct smtpd_server *srv, const struct conf_addr *a,
    size_t n, enum smtpd_listen_kind kind, char *err, size_t errlen)
{
	static const char *const names[] = { "smtp", "submission",
		"submissions" };

	for (size_t i = 0; i < n; i++) {
		struct smtpd_listener *sl = &srv->listeners[srv->nlisteners];
		struct sockaddr_storage ss = a[i].ss;
		socklen_t len = a[i].len;
		unsigned flags = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
		    LEV_OPT_CLOSE_ON_EXEC;

		/* loops of their own share each port (SO_REUSEPORT); the
		 * first one chose it when the configuration says 0 */
		if (srv->parent != NULL) {
			flags |= LEV_OPT_REUSEABLE_PORT;
			if (srv->shard_id > 0 && smtpd_loops_bound(srv->parent,
			    srv->nlisteners, &ss, &len) != 0) {
				snprintf(err, errlen, "listen on %s: the first "
				    "loop has no such socket", a[i].text);
				return -1;
			}
		}
		sl->srv = srv;
		sl->kind = kind;
		sl->l = evconnlistener_new_bind(srv->base, smtpd_accept, sl,
		    flags, 1024, (const struct sockaddr *)&ss, (int)len);
		if (sl->l == NULL) {
			snprintf(err, errlen, "listen on %s: %s", a[i].text,
			    strerror(errno));
			return -1;
		}
		evconnlistener_set_error_cb(sl->l, smtpd_accept_error);
		srv->nlisteners++;
		if (srv->shard_id == 0)
			log_ev(LOG_INFO, NULL, "listening", "address",
			    a[i].text, "service", names[kind], NULL);
	}
	return 0;
}

/* Bind and listen on every address: [server] listen and [submission]. */
static int
smtpd_listen_all(struct smtpd_server *srv, char *err, size_t errlen)
{
	const struct sl_conf *c = srv->conf;

	return smtpd_listen_kind(srv, c->listen, c->nlisten, SMTPD_L_MTA, err,
	    errlen) != 0 || smtpd_listen_kind(srv, c->sub_listen,
	    c->nsub_listen, SMTPD_L_SUBMISSION, err, errlen) != 0 ||
	    smtpd_listen_kind(srv, c->subs_listen, c->nsubs_listen,
	    SMTPD_L_SUBMISSIONS, err, errlen) != 0 ? -1 : 0;
}

int
smtpd_server_listen(struct smtpd_server *srv, char *err, size_t errlen)
{
	const struct sl_conf *c = srv->conf;
	size_t nsub = c->nsub_listen + c->nsubs_listen;

	if (srv->nshards > 0)
		return smtpd_loops_listen(srv, err, errlen);
	/* a certificate that does not load is a configuration error */
	if (smtpd_tls_load(srv, c, err, errlen) != 0)
		return -1;
	if (smtpd_policy_load(srv, c, err, errlen) != 0)
		return -1;
	if (nsub > 0 && srv->tls_ctx == NULL) {
		snprintf(err, errlen, "[submission] %s needs [server] tls_cert "
		    "(AUTH is offered only in TLS)", c->nsub_listen ?
		    "listen" : "tls_listen");
		return -1;
	}
	if (nsub > 0) {
		if (smtpd_auth_load(srv, c, err, errlen) != 0)
			return -1;
		srv->work = sl_work_new(srv->base, 2);
	}
	srv->listeners = xcalloc(c->nlisten + nsub, sizeof(*srv->listeners));
	if (smtpd_listen_all(srv, err, errlen) != 0)
		return -1;
	if (srv->parent == NULL) {
		char cap[24];
		snprintf(cap, sizeof(cap), "%llu",
		    (unsigned long long)srv->inflight_cap);
		log_ev(LOG_INFO, NULL, "message bodies in memory capped",
		    "max_inflight_bytes", cap, NULL);
	}
	return 0;
}

/*
 * Connections the kernel completed but no loop accepted yet would be reset
 * when their listening socket closes (each SO_REUSEPORT socket has its own
 * queue): take them and answer 421, as to any session open at a stop.
 * Bounded by the backlog given at listen; a PROXY listener says nothing
 * before the header and an implicit-TLS one nothing in plaintext, so
 * those are only closed.
 */
static void
smtpd_listen_flush(struct smtpd_listener *sl)
{
	const struct sl_conf *c = sl->srv->conf;
	int lfd = evconnlistener_get_fd(sl->l);
	int speak = sl->kind == SMTPD_L_SUBMISSION || (sl->kind ==
	    SMTPD_L_MTA && c->proxy_mode == SMTPD_PROXY_OFF);
	int n = 0;

	for (int fd; n < 1024 && (fd = accept4(lfd, NULL, NULL,
	    SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0; n++) {
		if (speak)
			smtpd_refuse(fd, "421 4.3.2 Service shutting down");
		else
			close(fd);
	}
	if (n > 0) {
		char count[16];
		snprintf(count, sizeof(count), "%d", n);
		log_ev(LOG_INFO, NULL, "waiting connections refused at close",
		    "count", count, NULL);
	}
}

/* Close the listening sockets; sessions go on. */
static void
smtpd_listen_close(struct smtpd_server *srv)
{
	for (size_t i = 0; i < srv->nlisteners; i++) {
		smtpd_listen_flush(&srv->listeners[i]);
		evconnlistener_free(srv->listeners[i].l);
	}
	srv->nlisteners = 0;
}

int
smtpd_server_pause(struct smtpd_server *srv)
{
	int n = (int)srv->nlisteners;

	if (srv->nshards > 0)
		return smtpd_loops_pause(srv);
	smtpd_listen_close(srv);
	return n;
}

int
smtpd_server_resume(struct smtpd_server *srv, char *err, size_t errlen)
{
	if (srv->nshards > 0)
		return smtpd_loops_resume(srv, err, errlen);
	if (srv->stopping) {
		snprintf(err, errlen, "the server is stopping");
		return -1;
	}
	if (srv->nlisteners > 0 || srv->listeners == NULL)
		return 0;
	if (smtpd_listen_all(srv, err, errlen) != 0) {
		smtpd_listen_close(srv);
		return -1;
	}
	return 0;
}

int
smtpd_server_port(const struct smtpd_server *srv)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (srv->nshards > 0)
		return smtpd_server_port(srv->shards[0]);
	if (srv->nlisteners == 0 || getsockname(evconnlistener_get_fd(
	    srv->listeners[0].l), (struct sockaddr *)&ss, &len) != 0)
		return -1;
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

void
smtpd_server_set_conf(struct smtpd_server *srv, const struct sl_conf *conf)
{
	char err[768];

	/* read the files again: a renewed certificate under the same name */
	if (srv->nshards == 0 && smtpd_tls_load(srv, conf, err,
	    sizeof(err)) != 0)
		log_warnx("reload: %s; the TLS certificate in use stays", err);
	atomic_store(&srv->inflight_cap, smtpd_inflight_cap(conf));
	if (srv->nshards > 0) {
		srv->conf = conf;
		smtpd_loops_set_conf(srv, conf);
		return;
	}
	if (smtpd_policy_load(srv, conf, err, sizeof(err)) != 0)
		log_warnx("reload: %s; %s stays", err, srv->postmaster);
	if (srv->work != NULL && smtpd_auth_load(srv, conf, err,
	    sizeof(err)) != 0)
		log_warnx("reload: %s; the users in use stay", err);
	srv->conf = conf;
}

static void
smtpd_stop_check(struct smtpd_server *srv)
{
	if (srv->stopping && TAILQ_EMPTY(&srv->sessions) && srv->stop_done) {
		void (*done)(void *) = srv->stop_done;
		srv->stop_done = NULL;
		done(srv->stop_arg);
	}
}

void
smtpd_server_session_gone(struct smtpd_server *srv, struct smtpd_session *s)
{
	TAILQ_REMOVE(&srv->sessions, s, entry);
	srv->stats.sessions--;
	atomic_fetch_sub(&smtpd_root(srv)->total, 1);
	iptab_release(srv, s);
	smtpd_stop_check(srv);
}

void
smtpd_server_stop(struct smtpd_server *srv, void (*done)(void *), void *arg)
{
	struct smtpd_session *s, *next;

	srv->stopping = 1;
	srv->stop_done = done;
	srv->stop_arg = arg;
	if (srv->nshards > 0) {
		smtpd_loops_stop(srv);
		return;
	}
	smtpd_listen_close(srv);
	/* sessions in the middle of a message finish it (session.c) */
	for (s = TAILQ_FIRST(&srv->sessions); s != NULL; s = next) {
		next = TAILQ_NEXT(s, entry);
		if (!smtpd_session_idle(s))
			continue;
		/* held: a TLS session's reply may call back into it;
		 * nothing is said before the PROXY header, not even 421 */
		smtpd_hold(s);
		smtpd_session_close(s, s->state == SMTPD_ST_PROXY ? NULL :
		    "421 4.3.2 Service shutting down", "shutdown");
		smtpd_release(s);
	}
	smtpd_stop_check(srv);
}

void
smtpd_server_abort(struct smtpd_server *srv)
{
	struct smtpd_session *s, *next;

	if (srv->nshards > 0) {
		smtpd_loops_abort(srv);
		return;
	}
	for (s = TAILQ_FIRST(&srv->sessions); s != NULL; s = next) {
		next = TAILQ_NEXT(s, entry);
		if (s->state == SMTPD_ST_STORE)
			continue;	/* the store's answer frees it */
		smtpd_session_free(s, "shutdown deadline");
	}
}

void
smtpd_server_free(struct smtpd_server *srv)
{
	if (srv == NULL)
		return;
	smtpd_loops_free(srv);		/* the loops first, if any */
	/* password checks in flight end first: their sessions may be freed */
	sl_work_free(srv->work);
	srv->work = NULL;
	smtpd_server_abort(srv);
	for (size_t i = 0; i < srv->nlisteners; i++)
		evconnlistener_free(srv->listeners[i].l);
	free(srv->listeners);
	auth_users_free(srv->users);
	smtpd_clients_free(srv);
	for (size_t i = 0; i < IPTAB_SIZE; i++) {
		struct smtpd_iptab_entry *e, *n;
		for (e = srv->iptab[i]; e; e = n) {
			n = e->next;
			free(e);
		}
	}
	free(srv->iptab);
	free(srv->postmaster);
	SSL_CTX_free(srv->tls_ctx);
	pthread_mutex_destroy(&srv->limits_mu);
	free(srv);
}

void
smtpd_server_stats(const struct smtpd_server *srv, struct smtpd_stats *out)
{
	if (srv->nshards > 0)
		smtpd_loops_stats(srv, out);
	else
		*out = srv->stats;
}
