/* SPDX-License-Identifier: MIT */
/*
 * loops.c: the SMTP server on event loops of their own ([server] loops).
 *
 * smtpd_server_loops turns a server into a parent of n shards. Each shard
 * is a server as listener.c and session.c know it (its own event base,
 * listeners, sessions and counters), run on its own thread; all bind the
 * same addresses with SO_REUSEPORT, so the kernel spreads new connections
 * over them and a session lives on the loop that accepted it, start to
 * end: nothing of a session is ever touched by two threads. What the
 * limits need of all of them (the per-address table, the number of
 * sessions, the ICIDs) is the parent's (smtpd_root), under its mutex or
 * atomic.
 *
 * The parent's functions are passed on to the shards through their
 * inboxes: on their threads, one after the other (pause, resume, abort
 * wait for each answer: operator's commands and shutdown, not the mail's
 * path); stop collects each shard's "no session left" on the parent's
 * loop and then calls the caller's done; free stops the threads and frees
 * the shards on the caller's thread. Counters are added up from the
 * shards' (a snapshot: each is a 64-bit word the shard writes whole).
 *
 * Threads: the smtpd_server_* functions on the parent's loop thread.
 */
#include <errno.h>
#include <semaphore.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "log/log.h"
#include "smtpd/smtpd_int.h"
#include "util/evloop.h"
#include "util/inbox.h"
#include "util/util.h"

static void *
smtpd_loop_main(void *arg)
{
	struct smtpd_server *sh = arg;

	event_base_loop(sh->base, EVLOOP_NO_EXIT_ON_EMPTY);
	return NULL;
}

int
smtpd_server_loops(struct smtpd_server *srv, int n, char *err,
    size_t errlen)
{
	if (n < 2 || srv->nshards > 0)
		return 0;
	srv->inbox = sl_inbox_new(srv->base);
	if (srv->inbox == NULL) {
		snprintf(err, errlen, "loops: cannot make an inbox");
		return -1;
	}
	srv->shards = xcalloc((size_t)n, sizeof(*srv->shards));
	for (int i = 0; i < n; i++) {
		struct event_base *base = sl_evloop_new();
		struct smtpd_server *sh;

		if (base == NULL) {
			snprintf(err, errlen, "loops: cannot make loop %d", i);
			return -1;
		}
		sh = smtpd_server_new(base, srv->conf, &srv->ops);
		sh->parent = srv;
		sh->shard_id = i;
		sh->inbox = sl_inbox_new(base);
		if (sh->inbox == NULL) {
			snprintf(err, errlen, "loops: cannot make an inbox");
			return -1;
		}
		srv->shards[srv->nshards++] = sh;
		if (srv->ops.loop_init != NULL)
			sh->loop_arg = srv->ops.loop_init(srv->ops.arg, i, base,
			    sh->inbox);
	}
	return 0;
}

size_t
smtpd_server_nloops(const struct smtpd_server *srv)
{
	return srv->nshards;
}

void
smtpd_server_loop(const struct smtpd_server *srv, size_t i,
    struct event_base **base, struct sl_inbox **inbox)
{
	*base = srv->shards[i]->base;
	*inbox = srv->shards[i]->inbox;
}

void *
smtpd_session_loop_arg(const struct smtpd_session *s)
{
	return s->srv->loop_arg;
}

int
smtpd_session_loop_id(const struct smtpd_session *s)
{
	return s->srv->shard_id;
}

const struct sl_conf *
smtpd_session_conf(const struct smtpd_session *s)
{
	return s->srv->conf;
}

int
smtpd_loops_bound(struct smtpd_server *srv, size_t i,
    struct sockaddr_storage *ss, socklen_t *len)
{
	struct smtpd_server *first = srv->shards[0];

	*len = sizeof(*ss);
	if (i >= first->nlisteners || getsockname(evconnlistener_get_fd(
	    first->listeners[i].l), (struct sockaddr *)ss, len) != 0)
		return -1;
	return 0;
}

/* ---- calls on a shard's thread ---- */

struct smtpd_call {
	struct smtpd_server *sh;
	void (*fn)(struct smtpd_server *sh, void *arg);
	void *arg;
	sem_t done;
};

static void
smtpd_call_run(void *arg)
{
	struct smtpd_call *k = arg;

	k->fn(k->sh, k->arg);
	sem_post(&k->done);
}

/* fn(sh, arg) on sh's thread, waited for (or here, when it does not run). */
static void
smtpd_on_shard(struct smtpd_server *sh, void (*fn)(struct smtpd_server *,
    void *), void *arg)
{
	struct smtpd_call k;

	k.sh = sh;
	k.fn = fn;
	k.arg = arg;
	if (!sh->running) {
		fn(sh, arg);
		return;
	}
	sem_init(&k.done, 0, 0);
	sl_inbox_post(sh->inbox, smtpd_call_run, &k);
	while (sem_wait(&k.done) != 0)
		;
	sem_destroy(&k.done);
}

struct smtpd_listen_arg {
	char *err;
	size_t errlen;
	int rc;
};

static void
smtpd_shard_listen(struct smtpd_server *sh, void *arg)
{
	struct smtpd_listen_arg *a = arg;

	if (a->rc == 0)
		a->rc = smtpd_server_listen(sh, a->err, a->errlen);
}

int
smtpd_loops_listen(struct smtpd_server *srv, char *err, size_t errlen)
{
	struct smtpd_listen_arg a = { err, errlen, 0 };
	char n[32], cap[24];

	/* bound here, before the threads run: the first loop chooses a
	 * port the configuration leaves to the kernel, the others take it */
	for (size_t i = 0; i < srv->nshards; i++)
		smtpd_shard_listen(srv->shards[i], &a);
	if (a.rc != 0)
		return -1;
	for (size_t i = 0; i < srv->nshards; i++) {
		struct smtpd_server *sh = srv->shards[i];
		if ((errno = pthread_create(&sh->thread, NULL, smtpd_loop_main,
		    sh)) != 0) {
			snprintf(err, errlen, "loops: thread: %s",
			    strerror(errno));
			return -1;
		}
		sh->running = 1;
		snprintf(n, sizeof(n), "smtp-loop%zu", i);
		pthread_setname_np(sh->thread, n);
	}
	snprintf(n, sizeof(n), "%zu", srv->nshards);
	snprintf(cap, sizeof(cap), "%llu",
	    (unsigned long long)smtpd_inflight_cap(srv->conf));
	log_ev(LOG_INFO, NULL, "SMTP loops started", "loops", n,
	    "max_inflight_bytes", cap, NULL);
	return 0;
}

static void
smtpd_shard_pause(struct smtpd_server *sh, void *arg)
{
	*(int *)arg += smtpd_server_pause(sh);
}

int
smtpd_loops_pause(struct smtpd_server *srv)
{
	int n = 0;

	for (size_t i = 0; i < srv->nshards; i++)
		smtpd_on_shard(srv->shards[i], smtpd_shard_pause, &n);
	/* one per address, as without loops */
	return srv->nshards > 0 ? n / (int)srv->nshards : 0;
}

static void
smtpd_shard_resume(struct smtpd_server *sh, void *arg)
{
	struct smtpd_listen_arg *a = arg;

	if (a->rc == 0)
		a->rc = smtpd_server_resume(sh, a->err, a->errlen);
}

int
smtpd_loops_resume(struct smtpd_server *srv, char *err, size_t errlen)
{
	struct smtpd_listen_arg a = { err, errlen, 0 };

	/* in order: the first binds, the others take its port */
	for (size_t i = 0; i < srv->nshards; i++)
		smtpd_on_shard(srv->shards[i], smtpd_shard_resume, &a);
	if (a.rc != 0) {
		smtpd_loops_pause(srv);
		return -1;
	}
	return 0;
}

static void
smtpd_shard_set_conf(struct smtpd_server *sh, void *arg)
{
	smtpd_server_set_conf(sh, arg);
}

void
smtpd_loops_set_conf(struct smtpd_server *srv, const struct sl_conf *conf)
{
	for (size_t i = 0; i < srv->nshards; i++)
		smtpd_on_shard(srv->shards[i], smtpd_shard_set_conf,
		    (void *)conf);
}

/* (the parent's loop) one more shard has no session left */
static void
smtpd_parent_drained(void *arg)
{
	struct smtpd_server *srv = arg;

	if (++srv->drained == srv->nshards && srv->stop_done != NULL) {
		void (*done)(void *) = srv->stop_done;
		srv->stop_done = NULL;
		done(srv->stop_arg);
	}
}

/* (a shard's loop) its last session went */
static void
smtpd_shard_drained(void *arg)
{
	struct smtpd_server *sh = arg;

	sl_inbox_post(sh->parent->inbox, smtpd_parent_drained, sh->parent);
}

static void
smtpd_shard_stop(struct smtpd_server *sh, void *arg)
{
	smtpd_server_stop(sh, smtpd_shard_drained, sh);
}

void
smtpd_loops_stop(struct smtpd_server *srv)
{
	srv->drained = 0;
	for (size_t i = 0; i < srv->nshards; i++)
		smtpd_on_shard(srv->shards[i], smtpd_shard_stop, NULL);
}

static void
smtpd_shard_abort(struct smtpd_server *sh, void *arg)
{
	smtpd_server_abort(sh);
}

void
smtpd_loops_abort(struct smtpd_server *srv)
{
	for (size_t i = 0; i < srv->nshards; i++)
		smtpd_on_shard(srv->shards[i], smtpd_shard_abort, NULL);
}

static void
smtpd_shard_break(void *arg)
{
	event_base_loopbreak(arg);
}

void
smtpd_loops_free(struct smtpd_server *srv)
{
	if (srv->nshards == 0)
		return;
	for (size_t i = 0; i < srv->nshards; i++) {
		struct smtpd_server *sh = srv->shards[i];
		if (sh->running) {
			sl_inbox_post(sh->inbox, smtpd_shard_break, sh->base);
			pthread_join(sh->thread, NULL);
			sh->running = 0;
		}
	}
	/* the loops are still; each shard's own (the spool's answers to its
	 * sessions) first, then the sessions and the loop */
	for (size_t i = 0; i < srv->nshards; i++) {
		struct smtpd_server *sh = srv->shards[i];
		struct event_base *base = sh->base;
		struct sl_inbox *in = sh->inbox;
		sl_inbox_run(in);
		if (srv->ops.loop_fini != NULL)
			srv->ops.loop_fini(srv->ops.arg, sh->loop_arg);
		sh->inbox = NULL;
		smtpd_server_free(sh);
		sl_inbox_free(in);
		event_base_free(base);
	}
	free(srv->shards);
	srv->shards = NULL;
	srv->nshards = 0;
	sl_inbox_free(srv->inbox);
	srv->inbox = NULL;
}

void
smtpd_loops_stats(const struct smtpd_server *srv, struct smtpd_stats *out)
{
	memset(out, 0, sizeof(*out));
	for (size_t i = 0; i < srv->nshards; i++) {
		const struct smtpd_stats *st = &srv->shards[i]->stats;
		out->connections += st->connections;
		out->refused += st->refused;
		out->sessions += st->sessions;
		out->peak_sessions += st->peak_sessions;
		out->messages += st->messages;
		out->recipients += st->recipients;
		out->bytes += st->bytes;
		out->rejected += st->rejected;
		out->transactions += st->transactions;
		out->inflight_bytes += st->inflight_bytes;
		sl_hist_merge(&out->step_read, &st->step_read);
		sl_hist_merge(&out->step_parse, &st->step_parse);
		sl_hist_merge(&out->step_reply, &st->step_reply);
	}
}
