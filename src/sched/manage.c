/* SPDX-License-Identifier: MIT */
/*
 * manage.c: what the operator's queue commands do to the scheduler: views
 * of messages and destinations, walks (sched_iter) that listings take a
 * slice at a time, and flush, hold, release, bounce, delete.
 *
 * These walk messages (an operator asked for them); the delivery path never
 * does. Each change of a recipient's state is recorded in the spool through
 * the same group commit as delivery outcomes.
 *
 * A walk stands on the next message it will show (it->next). Messages sit
 * in two lists, s->expired then s->age, and move only by leaving the head
 * of s->age for the tail of s->expired (expiry) or by leaving the queue
 * (sched_msg_enter, which calls sched_iters_unlink first). So a walk
 * steps from the end of s->expired to the head of s->age, and when the
 * message it stands on leaves, it steps on to that message's successor:
 * nothing is shown twice and nothing still queued is skipped. A walk ends
 * at the first message newer than the newest one queued when it began, so
 * a listing under a steady flow of new mail ends too.
 */
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "log/log.h"
#include "sched/sched_int.h"
#include "util/util.h"

static const char *
sched_rcpt_state_name(const struct sched_rcpt *r, const struct sched_job *j)
{
	if (j != NULL && j->state == SCHED_JOB_ACTIVE)
		return "active";
	switch (r->state) {
	case SPOOL_RCPT_QUEUED:
		return "queued";
	case SPOOL_RCPT_DEFERRED:
		return "deferred";
	case SPOOL_RCPT_HELD:
		return "held";
	case SPOOL_RCPT_DELIVERED:
		return "delivered";
	default:
		return "failed";
	}
}

static int
sched_view_msg(struct sched_msg *m, sched_view_fn *fn, void *arg)
{
	struct sched_rcpt_view *v = xcalloc(m->nrcpt ? m->nrcpt : 1, sizeof(*v));
	struct sched_msg_view mv = {
		.mid = m->mid, .arrival = m->arrival,
		.sender = sched_msg_sender(m),
		.size = m->size, .bounce = (m->flags & SPOOL_F_BOUNCE) != 0,
		.nrcpt = m->nrcpt, .rcpts = v,
	};
	int rc;

	for (uint32_t i = 0; i < m->nrcpt; i++) {
		const struct sched_rcpt *r = &m->rcpts[i];
		const struct sched_job *j = sched_rcpt_job(m, i);
		v[i].rid = r->rid;
		v[i].addr = r->addr;
		v[i].state = sched_rcpt_state_name(r, j);
		v[i].attempts = r->attempts;
		v[i].next_retry = r->next_retry;
		v[i].last_reply = r->last_reply;
		if (j != NULL) {
			v[i].destination = j->dest->name;
			if (j->state == SCHED_JOB_READY)
				v[i].waiting = j->dest->blocked;
		}
	}
	rc = fn(arg, &mv);
	free(v);
	return rc;
}

/* The layout of s->age and s->expired's heads, named for TAILQ_LAST. */
TAILQ_HEAD(sched_msg_age, sched_msg);

struct sched_iter {
	struct sched *s;
	struct sched_iter *prev, *next_iter;	/* s->iters */
	struct sched_msg *next;			/* shown next; NULL: done */
	uint64_t until;				/* the last MID queued when
						   the walk began */
};

/* The message a walk shows after m (m still in its list). */
static struct sched_msg *
sched_msg_after(struct sched *s, struct sched_msg *m)
{
	struct sched_msg *n = TAILQ_NEXT(m, age);

	if (n == NULL && m->in_expired)
		n = TAILQ_FIRST(&s->age);
	return n;
}

static struct sched_iter *
sched_iter_link(struct sched *s, struct sched_msg *next)
{
	struct sched_iter *it = xcalloc(1, sizeof(*it));
	struct sched_msg *last = TAILQ_LAST(&s->age, sched_msg_age);
	struct sched_msg *xlast = TAILQ_LAST(&s->expired, sched_msg_age);

	it->s = s;
	it->next = next;
	it->until = last ? last->mid : 0;
	if (xlast != NULL && xlast->mid > it->until)
		it->until = xlast->mid;
	it->next_iter = s->iters;
	if (s->iters)
		s->iters->prev = it;
	s->iters = it;
	return it;
}

struct sched_iter *
sched_iter_new(struct sched *s)
{
	struct sched_msg *first = TAILQ_FIRST(&s->expired);

	return sched_iter_link(s, first ? first : TAILQ_FIRST(&s->age));
}

struct sched_iter *
sched_iter_at(struct sched *s, uint64_t mid)
{
	struct sched_msg *m = sched_msg_find(s, mid);

	if (m == NULL || !sched_msg_queued(m))
		return NULL;
	return sched_iter_link(s, m);
}

int
sched_iter_next(struct sched_iter *it, sched_view_fn *fn, void *arg)
{
	struct sched_msg *m;

	while ((m = it->next) != NULL) {
		if (m->mid > it->until) {
			it->next = NULL;	/* came after the walk began */
			return 0;
		}
		it->next = sched_msg_after(it->s, m);
		if (sched_msg_queued(m)) {
			sched_view_msg(m, fn, arg);
			return 1;
		}
	}
	return 0;
}

uint64_t
sched_iter_peek(const struct sched_iter *it)
{
	const struct sched_msg *m = it->next;

	while (m != NULL && !sched_msg_queued(m))
		m = sched_msg_after(it->s, (struct sched_msg *)m);
	return m != NULL && m->mid <= it->until ? m->mid : 0;
}

void
sched_iter_free(struct sched_iter *it)
{
	if (it == NULL)
		return;
	if (it->prev)
		it->prev->next_iter = it->next_iter;
	else
		it->s->iters = it->next_iter;
	if (it->next_iter)
		it->next_iter->prev = it->prev;
	free(it);
}

void
sched_iters_unlink(struct sched *s, struct sched_msg *m)
{
	for (struct sched_iter *it = s->iters; it != NULL; it = it->next_iter)
		if (it->next == m)
			it->next = sched_msg_after(s, m);
}

void
sched_foreach(struct sched *s, sched_view_fn *fn, void *arg)
{
	struct sched_msg *m;

	/* expired messages are the oldest: they come first */
	TAILQ_FOREACH(m, &s->expired, age)
		if (sched_msg_queued(m) && sched_view_msg(m, fn, arg))
			return;
	TAILQ_FOREACH(m, &s->age, age)
		if (sched_msg_queued(m) && sched_view_msg(m, fn, arg))
			return;
}

int
sched_view(struct sched *s, uint64_t mid, sched_view_fn *fn, void *arg)
{
	struct sched_msg *m = sched_msg_find(s, mid);

	if (m == NULL || !sched_msg_queued(m))
		return -1;
	sched_view_msg(m, fn, arg);
	return 0;
}

/* 1 if job is selected by sel (its message was already selected). */
static int
sched_sel_job(const struct sched_sel *sel, const struct sched_job *job)
{
	const char *at, *addr;

	if (sel->domain == NULL)
		return 1;
	if (sl_strcaseeq(job->dest->name, sel->domain))
		return 1;
	addr = job->msg->rcpts[job->ridx[0]].addr;
	at = strrchr(addr, '@');
	return at != NULL && sl_strcaseeq(at + 1, sel->domain);
}

typedef long sched_job_op(struct sched *s, struct sched_job *job);

/* Apply op to every selected job; -1 if sel names an unknown MID. */
static long
sched_apply(struct sched *s, const struct sched_sel *sel, sched_job_op *op)
{
	struct sched_msg *m, *mn;
	long n = 0;

	if (sel->mid != 0) {
		struct sched_job *j, *jn;
		if ((m = sched_msg_find(s, sel->mid)) == NULL ||
		    !sched_msg_queued(m))
			return -1;
		for (j = m->jobs; j != NULL; j = jn) {
			jn = j->next;
			n += op(s, j);
		}
		return n;
	}
	if (!sel->all && sel->domain == NULL)
		return 0;
	for (int list = 0; list < 2; list++) {
		m = list ? TAILQ_FIRST(&s->age) : TAILQ_FIRST(&s->expired);
		for (; m != NULL; m = mn) {
			struct sched_job *j, *jn;
			mn = TAILQ_NEXT(m, age);
			if (!sched_msg_queued(m))
				continue;
			for (j = m->jobs; j != NULL; j = jn) {
				jn = j->next;
				if (sched_sel_job(sel, j))
					n += op(s, j);
			}
		}
	}
	return n;
}

/* Set every recipient of job to state and record it. */
static void
sched_job_set(struct sched *s, struct sched_job *job, uint8_t state)
{
	for (uint32_t i = 0; i < job->nrcpt; i++) {
		struct sched_rcpt *r = &job->msg->rcpts[job->ridx[i]];
		r->state = state;
		if (state == SPOOL_RCPT_QUEUED)
			r->next_retry = 0;
	}
	sched_record(s, job->msg, job->ridx, job->nrcpt);
}

static long
sched_op_flush(struct sched *s, struct sched_job *job)
{
	job->dest->paused_until = 0;
	if (job->dest->site != NULL)
		job->dest->site->paused_until = 0;
	if (job->state == SCHED_JOB_DEFERRED) {
		sl_heap_remove(&s->retry, &job->timer);
		sched_job_ready(s, job);
		return job->nrcpt;
	}
	if (job->state == SCHED_JOB_READY)
		sched_dest_run(s, job->dest);
	return 0;
}

long
sched_flush(struct sched *s, const struct sched_sel *sel)
{
	long n = sched_apply(s, sel, sched_op_flush);
	char buf[24];

	if (n >= 0) {
		snprintf(buf, sizeof(buf), "%ld", n);
		log_ev(LOG_INFO, NULL, "queue flushed", "recipients", buf, NULL);
	}
	return n;
}

static long
sched_op_hold(struct sched *s, struct sched_job *job)
{
	switch (job->state) {
	case SCHED_JOB_READY:
		TAILQ_REMOVE(&job->dest->ready, job, entry);
		job->dest->nready--;
		break;
	case SCHED_JOB_DEFERRED:
		sl_heap_remove(&s->retry, &job->timer);
		break;
	case SCHED_JOB_ACTIVE:
		job->hold = 1;	/* what is left after this try is held */
		return job->nrcpt;
	default:
		return 0;
	}
	job->state = SCHED_JOB_HELD;
	sched_job_set(s, job, SPOOL_RCPT_HELD);
	return job->nrcpt;
}

long
sched_hold(struct sched *s, const struct sched_sel *sel)
{
	return sched_apply(s, sel, sched_op_hold);
}

static long
sched_op_release(struct sched *s, struct sched_job *job)
{
	if (job->state == SCHED_JOB_ACTIVE && job->hold) {
		job->hold = 0;
		return job->nrcpt;
	}
	if (job->state != SCHED_JOB_HELD)
		return 0;
	sched_job_set(s, job, SPOOL_RCPT_QUEUED);
	sched_job_ready(s, job);
	return job->nrcpt;
}

long
sched_release(struct sched *s, const struct sched_sel *sel)
{
	return sched_apply(s, sel, sched_op_release);
}

static long
sched_op_bounce(struct sched *s, struct sched_job *job)
{
	long n = job->nrcpt;

	if (job->msg->state != SCHED_MSG_RETURNED)
		sched_msg_enter(s, job->msg, SCHED_MSG_RETURNED);
	if (job->state != SCHED_JOB_ACTIVE)
		sched_job_fail_all(s, job, "550 5.0.0 Returned to the sender "
		    "by the operator");
	return n;
}

long
sched_bounce(struct sched *s, const struct sched_sel *sel)
{
	return sched_apply(s, sel, sched_op_bounce);
}

struct sched_del {
	struct sched *s;
	struct sched_msg *m;
	void (*cb)(void *, int);
	void *arg;
};

static void
sched_user_deleted(void *arg, enum spool_status st)
{
	struct sched_del *q = arg;
	struct sched_msg *m = q->m;
	struct sched *s = q->s;

	m->inflight--;
	log_ev(LOG_INFO, &(struct log_ids){ 0, 0, m->mid, -1 },
	    "deleted by the operator", NULL);
	q->cb(q->arg, st == SPOOL_ERR_NOTFOUND ? SPOOL_OK : st);
	free(q);
	sched_msg_enter(s, m, SCHED_MSG_DONE);
}

static void
sched_notfound(evutil_socket_t fd, short what, void *arg)
{
	struct sched_del *q = arg;

	q->cb(q->arg, SPOOL_ERR_NOTFOUND);
	free(q);
}

void
sched_delete(struct sched *s, uint64_t mid, void (*cb)(void *, int),
    void *arg)
{
	struct sched_msg *m = sched_msg_find(s, mid);
	struct sched_del *q = xcalloc(1, sizeof(*q));
	struct sched_job *j, *jn;

	q->s = s;
	q->m = m;
	q->cb = cb;
	q->arg = arg;
	/* gone, going at the operator's word, or finishing on its own (its
	 * own delete in flight): not queued, nothing to delete twice */
	if (m == NULL || !sched_msg_queued(m)) {
		/* answer from the loop, never from inside this call */
		event_base_once(s->base, -1, EV_TIMEOUT, sched_notfound, q,
		    &(struct timeval){ 0, 0 });
		return;
	}
	sched_msg_enter(s, m, SCHED_MSG_REMOVED);
	for (j = m->jobs; j != NULL; j = jn) {
		jn = j->next;
		if (j->state != SCHED_JOB_ACTIVE)
			sched_job_unlink(s, j);
	}
	s->stats.recipients -= m->npending;
	m->npending = 0;
	m->inflight++;
	spool_delete(s->spool, mid, sched_user_deleted, q);
}

static void
sched_dest_fill(struct sched *s, const struct sched_dest *d,
    struct sched_dest_view *v)
{
	int64_t now_ms = sched_now_ms(), held = 0;
	struct sched_job *first = TAILQ_FIRST(&d->all);
	const char *why;

	/* a shaping rule's suspension holds it back as a DNS failure does */
	if (d->shape != NULL)
		held = shaping_site_suspended(d->shape, &why);
	if (d->paused_until > held)
		held = d->paused_until;
	*v = (struct sched_dest_view){
		.name = d->name,
		.jobs = d->njobs,
		.ready = d->nready,
		.connections = d->nconn,
		.limit = d->site ? d->site->limit :
		    (int)s->conf->delivery_destination_concurrency,
		.waiting = d->blocked,
		.oldest = first ? (int64_t)first->msg->arrival : 0,
		.paused_until = held > now_ms ? held / 1000 : 0,
		.throttled = d->site != NULL && (d->site->paused_until >
		    now_ms || d->site->limit <
		    (int)s->conf->delivery_destination_concurrency),
		.last_reply = d->replies ? d->replies[0].reply : NULL,
		.last_reply_at = d->replies ? d->replies[0].at : 0,
		.site = d->shape ? shaping_site_name(d->shape) : NULL,
	};
}

/* The destination called name (with or without jobs), or NULL. */
static struct sched_dest *
sched_dest_named(struct sched *s, const char *name)
{
	size_t b = sl_hash_str(name) % s->dtab_size;

	for (struct sched_dest *d = s->dtab[b]; d != NULL; d = d->hnext)
		if (strcmp(d->name, name) == 0)
			return d;
	return NULL;
}

size_t
sched_dest_replies(struct sched *s, const char *name,
    struct sched_reply_view *out, size_t max)
{
	struct sched_dest *d = sched_dest_named(s, name);
	size_t n = 0;

	for (; d && d->replies && n < max && n < SCHED_DEST_REPLIES &&
	    d->replies[n].reply != NULL; n++)
		out[n] = (struct sched_reply_view){ d->replies[n].reply,
		    d->replies[n].host, d->replies[n].at,
		    d->replies[n].count };
	return n;
}

int
sched_dest_messages(struct sched *s, const char *name, uint64_t after,
    sched_view_fn *fn, void *arg)
{
	struct sched_dest *d = sched_dest_named(s, name);
	struct sched_msg *m;
	struct sched_job *j = NULL;
	uint64_t last = 0;

	if (d == NULL || TAILQ_EMPTY(&d->all))
		return -1;
	/* where the page before stopped: the message's job here, found
	 * through the MID index; if it left, a walk to the first after it */
	if (after != 0 && (m = sched_msg_find(s, after)) != NULL)
		for (j = m->jobs; j != NULL && j->dest != d; j = j->next)
			;
	if (j != NULL) {
		last = after;
	} else {
		TAILQ_FOREACH(j, &d->all, all)
			if (j->msg->mid > after)
				break;
	}
	for (; j != NULL; j = TAILQ_NEXT(j, all)) {
		/* a message with two jobs here (a split) is shown once */
		if (j->msg->mid == last || !sched_msg_queued(j->msg))
			continue;
		last = j->msg->mid;
		if (sched_view_msg(j->msg, fn, arg))
			break;
	}
	return 0;
}

void
sched_foreach_dest(struct sched *s, sched_dest_fn *fn, void *arg)
{
	struct sched_dest_view v;

	for (size_t b = 0; b < s->dtab_size; b++) {
		for (struct sched_dest *d = s->dtab[b]; d; d = d->hnext) {
			if (d->njobs == 0 && d->nconn == 0)
				continue;
			sched_dest_fill(s, d, &v);
			if (fn(arg, &v))
				return;
		}
	}
}

int
sched_dest_find(struct sched *s, const char *name, struct sched_dest_view *out)
{
	size_t b = sl_hash_str(name) % s->dtab_size;

	for (struct sched_dest *d = s->dtab[b]; d != NULL; d = d->hnext) {
		if (strcmp(d->name, name) == 0) {
			sched_dest_fill(s, d, out);
			return 0;
		}
	}
	return -1;
}
