/* SPDX-License-Identifier: MIT */
/*
 * body.c: message bodies for delivery, one shared copy per message.
 *
 * A delivery connection (and a DSN about a message) asks for the body of
 * a MID with sched_body_get(). The first asker starts one read on the
 * spool's reader thread (spool_body_read: never a disk read on the loop
 * thread); every asker meanwhile waits on the same entry, and all get the
 * same evbuffer, read-only, reference-counted: a message going to 200
 * destinations is read once and held once, however many connections send
 * it at the same time (each streams it out in pieces, smtpc tx.c). The
 * copy is freed when the last user puts it back; a failed read is not
 * kept, so the next asker reads again.
 *
 * A batch recipient's message (SPOOL_F_BATCH) is an entry of its own,
 * keyed by MID and RID (sched_body_get_rcpt), made by hooks.batch_body on
 * the injection's builder thread instead of read: the same waiting,
 * cancelling and freeing.
 *
 * A body the spool does not have (SPOOL_ERR_NOTFOUND: an inconsistency,
 * since a message's envelope and body are stored in one transaction)
 * is not retried until the message expires: the first time it is logged
 * as a warning and counted (sluice_spool_bodies_missing_total), and
 * after SCHED_BODY_MISSING_TRIES reads that found none, its recipients
 * fail with 5.3.0 and the sender gets a DSN without the body
 * (sched_body_missing). Nothing is left to move aside as Postfix moves
 * a damaged queue file to "corrupt": the envelope is intact, and the log
 * line keeps its sender and size.
 *
 * The operator's `queue show --body` takes the same entry through a
 * handle (sched_body_fetch): its answer always comes from the loop, a
 * zero timer when the body was in already.
 *
 * Entry life: get (none) -> LOADING (waiters) -> loaded: READY, or
 * failed: unhashed -> last put -> freed.
 * Callers: destq.c (connections), dsn.c (reports), sluiced's ctl_queue.c
 * (sched_body_fetch).
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "log/log.h"
#include "sched/sched_int.h"
#include "util/util.h"

static uint32_t
sched_body_hash(const void *node)
{
	const struct sched_body *b = node;

	return (uint32_t)(b->mid ^ (b->mid >> 32)) ^ b->rid * 2654435761u;
}

static struct sched_body *
sched_body_find(struct sched *s, uint64_t mid, uint32_t rid)
{
	struct sched_body key = { .mid = mid, .rid = rid };
	struct sched_body *b;

	if (s->btab == NULL)
		return NULL;
	for (b = s->btab[sched_body_hash(&key) % s->btab_size]; b != NULL;
	    b = b->hnext)
		if (b->mid == mid && b->rid == rid)
			return b;
	return NULL;
}

static void
sched_body_unhash(struct sched *s, struct sched_body *b)
{
	if (!b->hashed)
		return;
	sl_chain_unlink((void **)&s->btab[sched_body_hash(b) % s->btab_size],
	    b, offsetof(struct sched_body, hnext));
	b->hashed = 0;
	s->nbody--;
}

void
sched_body_put(struct sched *s, struct sched_body *b)
{
	if (b == NULL || --b->refs > 0)
		return;
	sched_body_unhash(s, b);
	if (b->buf != NULL)
		evbuffer_free(b->buf);
	free(b);
}

/* The spool's answer: every waiter hears, the loader's reference goes. */
static void
sched_body_loaded(void *arg, struct evbuffer *buf, enum spool_status st)
{
	struct sched_body *b = arg;
	struct sched *s = b->s;
	struct sched_body_wait *w;

	b->loading = 0;
	b->buf = buf;
	b->missing = buf == NULL && st == SPOOL_ERR_NOTFOUND;
	if (buf == NULL) {
		/* a whole body the spool lacks is said once per message, by
		 * sched_body_missing */
		if (!b->missing || b->rid != SCHED_BODY_WHOLE)
			log_ev(LOG_WARNING, &(struct log_ids){ 0, 0, b->mid,
			    -1 }, "body not read", "reason", b->missing ?
			    "not in the spool" : spool_last_error(s->spool),
			    NULL);
		sched_body_unhash(s, b);	/* the next asker reads again */
	}
	/* a waiter may cancel others from its callback: take them one by
	 * one from the list */
	b->refs++;
	while ((w = b->waiters) != NULL) {
		b->waiters = w->next;
		w->body = NULL;
		w->cb(w->arg, b);
	}
	sched_body_put(s, b);		/* the loader's */
	sched_body_put(s, b);		/* held over the callbacks */
}

/* The entry of (mid, rid), its load started if new; a reference for w. */
static struct sched_body *
sched_body_want(struct sched *s, uint64_t mid, uint32_t rid, const char *addr,
    struct sched_body_wait *w)
{
	struct sched_body *b = sched_body_find(s, mid, rid);
	size_t i;

	if (b == NULL) {
		if (s->btab == NULL) {
			s->btab_size = 256;
			s->btab = xcalloc(s->btab_size, sizeof(*s->btab));
		} else if (s->nbody >= s->btab_size) {
			s->btab = (struct sched_body **)sl_chain_rehash(
			    (void **)s->btab, s->btab_size, s->btab_size * 2,
			    offsetof(struct sched_body, hnext),
			    sched_body_hash);
			s->btab_size *= 2;
		}
		b = xcalloc(1, sizeof(*b));
		b->s = s;
		b->mid = mid;
		b->rid = rid;
		b->refs = 1;		/* the loader's */
		b->loading = 1;
		b->hashed = 1;
		i = sched_body_hash(b) % s->btab_size;
		b->hnext = s->btab[i];
		s->btab[i] = b;
		s->nbody++;
		if (rid == SCHED_BODY_WHOLE)
			spool_body_read(s->spool, mid, sched_body_loaded, b);
		else
			s->hooks.batch_body(s->hooks.arg, mid, rid, addr,
			    sched_body_loaded, b);
	}
	b->refs++;
	if (b->loading) {
		w->body = b;
		w->next = b->waiters;
		b->waiters = w;
	}
	return b;
}

struct sched_body *
sched_body_get(struct sched *s, uint64_t mid, struct sched_body_wait *w)
{
	return sched_body_want(s, mid, SCHED_BODY_WHOLE, NULL, w);
}

struct sched_body *
sched_body_get_rcpt(struct sched *s, uint64_t mid, uint32_t rid,
    const char *addr, struct sched_body_wait *w)
{
	return sched_body_want(s, mid, rid, addr, w);
}

void
sched_body_cancel(struct sched *s, struct sched_body_wait *w)
{
	struct sched_body *b = w->body;
	struct sched_body_wait **pp;

	if (b == NULL)
		return;
	for (pp = &b->waiters; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == w) {
			*pp = w->next;
			break;
		}
	}
	w->body = NULL;
	sched_body_put(s, b);
}

void
sched_body_free_all(struct sched *s)
{
	free(s->btab);
	s->btab = NULL;
}

/* The operator's handle on a body (sched_body_fetch). */
struct sched_body_ref {
	struct sched_body_wait wait;
	struct sched_body *b;		/* a reference of its own */
	struct event *ev;		/* the answer, when the body was in */
	sched_body_fn *cb;
	void *arg;
};

static void
sched_body_ref_answer(struct sched_body_ref *r)
{
	r->cb(r->arg, r->b->buf, r->b->buf != NULL ? NULL : r->b->missing ?
	    "not in the spool" : "read error");
}

static void
sched_body_ref_loaded(void *arg, struct sched_body *b)
{
	sched_body_ref_answer(arg);
}

static void
sched_body_ref_ready(evutil_socket_t fd, short what, void *arg)
{
	sched_body_ref_answer(arg);
}

struct sched_body_ref *
sched_body_fetch(struct sched *s, uint64_t mid, sched_body_fn *cb, void *arg)
{
	struct sched_body_ref *r = xcalloc(1, sizeof(*r));

	r->cb = cb;
	r->arg = arg;
	r->wait.cb = sched_body_ref_loaded;
	r->wait.arg = r;
	r->b = sched_body_get(s, mid, &r->wait);
	if (!r->b->loading) {
		/* in memory already: answer from the loop all the same */
		r->ev = evtimer_new(s->base, sched_body_ref_ready, r);
		struct timeval now = { 0, 0 };
		evtimer_add(r->ev, &now);
	}
	return r;
}

void
sched_body_done(struct sched *s, struct sched_body_ref *r)
{
	if (r == NULL)
		return;
	if (r->ev != NULL)
		event_free(r->ev);
	if (r->wait.body != NULL)
		sched_body_cancel(s, &r->wait);	/* puts its reference */
	else
		sched_body_put(s, r->b);
	free(r);
}

void
sched_body_missing(struct sched *s, struct sched_job *job)
{
	struct sched_msg *m = job->msg;
	struct sched_job *j, *next;
	char size[24], tries[8];

	if (m->body_missing == 0) {
		s->stats.bodies_missing++;
		snprintf(size, sizeof(size), "%u", m->size);
		snprintf(tries, sizeof(tries), "%d", SCHED_BODY_MISSING_TRIES);
		log_ev(LOG_WARNING, &(struct log_ids){ 0, 0, m->mid, -1 },
		    "spool inconsistency: message body missing", "sender",
		    sched_msg_sender(m), "size", size, "fails_after_tries",
		    tries, NULL);
	}
	if (m->body_missing < SCHED_BODY_MISSING_TRIES)
		m->body_missing++;
	if (m->body_missing < SCHED_BODY_MISSING_TRIES) {
		sched_job_defer_all(s, job, 451, "451 4.3.0 message body "
		    "could not be read from the spool", NULL);
		return;
	}
	/* every job of m that waits fails now; one on another connection
	 * fails when its own read finds nothing; a held one when released */
	for (j = m->jobs; j != NULL; j = next) {
		next = j->next;
		if (j == job || j->state == SCHED_JOB_READY ||
		    j->state == SCHED_JOB_DEFERRED)
			sched_job_fail_all(s, j, "550 5.3.0 message body "
			    "missing from the spool");
	}
}
