/* SPDX-License-Identifier: MIT */
/*
 * sched.c: messages and their recipients through delivery: the message's
 * state (sched_msg_enter), jobs, retries, expiry, outcomes recorded in
 * the spool, and the final delete. Which DSNs outcomes call for is
 * dsn.c's.
 *
 * A job is the recipients of one message at one destination (at most
 * [delivery] recipients_per_transaction): one SMTP transaction. Jobs move:
 *   READY (destination's ready list) -> ACTIVE (on a connection)
 *   ACTIVE -> gone (every recipient final) | DEFERRED (retry heap)
 *   DEFERRED -(retry time)-> READY
 * A message moves as sched_int.h draws it: NEW -> QUEUED -> (EXPIRED,
 * RETURNED) -> DELETING or REMOVED -> DONE, freed in DONE only.
 * Expiry needs no scan either: messages sit in arrival order (MIDs grow with
 * arrival and the lifetime is one setting), so one timer at the oldest
 * message's deadline finds every message that expires.
 *
 * Invariants
 *  1. A message is deleted from the spool only after every recipient is
 *     final, their states are recorded, and the DSNs they call for are queued
 *     (sched_msg_maybe_done waits for every spool answer: msg->inflight).
 *  2. sched_msg_enter() is the only writer of m->state; DONE is terminal;
 *     sched_msg_gc() is the only free of a queued message, in DONE with no
 *     job and no spool request left.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "bounce/bounce.h"
#include "log/log.h"
#include "sched/sched_int.h"
#include "util/intern.h"
#include "util/util.h"

static void sched_expire_arm(struct sched *s);
static void sched_retry_arm(struct sched *s);

const double sched_lat_bounds[SCHED_LAT_BUCKETS] = { 0.1, 0.5, 1, 2, 5,
	10, 30, 60, 300, 900, 3600, 86400 };

int64_t
sched_now_ms(void)
{
	return sl_now_us() / 1000;
}

#define MSG_IDS(m, rid) (&(struct log_ids){ 0, 0, (m)->mid, (rid) })

struct sched *
sched_new(struct event_base *base, const struct sl_conf *conf,
    struct spool *spool, struct dns *dns)
{
	struct sched *s = xcalloc(1, sizeof(*s));

	s->base = base;
	s->conf = conf;
	s->spool = spool;
	s->dns = dns;
	s->dtab_size = s->stab_size = s->mtab_size = 1024;
	s->dtab = xcalloc(s->dtab_size, sizeof(*s->dtab));
	s->mtab = xcalloc(s->mtab_size, sizeof(*s->mtab));
	s->stab = xcalloc(s->stab_size, sizeof(*s->stab));
	TAILQ_INIT(&s->age);
	TAILQ_INIT(&s->expired);
	TAILQ_INIT(&s->leaving);
	TAILQ_INIT(&s->starved);
	TAILQ_INIT(&s->kick);
	TAILQ_INIT(&s->idle);
	return s;
}

void
sched_set_conf(struct sched *s, const struct sl_conf *conf)
{
	s->conf = conf;
}

void
sched_set_hooks(struct sched *s, const struct sched_hooks *h)
{
	s->hooks = *h;
}

/* One recipient's outcome to hooks.outcome (the events). */
static void
sched_emit(struct sched *s, struct sched_msg *m, struct sched_rcpt *r,
    const char *event)
{
	struct sched_outcome o;

	if (s->hooks.outcome == NULL)
		return;
	o.mid = m->mid;
	o.rid = r->rid;
	o.addr = r->addr;
	o.sender = sched_msg_sender(m);
	o.flags = m->flags;
	o.event = event;
	o.reply = r->last_reply;
	o.remote = r->remote;
	o.attempts = r->attempts;
	s->hooks.outcome(s->hooks.arg, &o);
}

void
sched_set_local(struct sched *s, struct local *l, struct maildir *md)
{
	s->local = l;
	s->maildir = md;
}

uint64_t
sched_dcid_next(struct sched *s)
{
	return ++s->next_dcid;
}

static void
sched_rcpt_clear(struct sched_rcpt *r)
{
	sl_unintern(r->last_reply);
	sl_unintern(r->remote);
}

static void
sched_msg_free(struct sched_msg *m)
{
	struct sched_job *j, *next;

	for (j = m->jobs; j != NULL; j = next) {
		next = j->next;
		free(j);
	}
	for (uint32_t i = 0; i < m->nrcpt; i++)
		sched_rcpt_clear(&m->rcpts[i]);
	free(m);
}

/* Unix seconds as kept in memory: 0 to 2106. */
static uint32_t
sched_time32(int64_t t)
{
	return t <= 0 ? 0 : t >= UINT32_MAX ? UINT32_MAX : (uint32_t)t;
}

/* Copy s (may be NULL) to *p and move *p past it; returns the copy. */
static const char *
sched_put(char **p, const char *s)
{
	size_t n;
	char *out = *p;

	if (s == NULL)
		return NULL;
	n = strlen(s) + 1;
	memcpy(out, s, n);
	*p += n;
	return out;
}

struct sched_msg *
sched_msg_new(struct sched *s, const struct spool_msg *msg)
{
	size_t strs = strlen(msg->sender ? msg->sender : "") + 1 +
	    (msg->envid ? strlen(msg->envid) + 1 : 0);
	struct sched_msg *m;
	char *p;

	for (size_t i = 0; i < msg->nrcpt; i++)
		strs += strlen(msg->rcpts[i].addr) + 1 + (msg->rcpts[i].orcpt ?
		    strlen(msg->rcpts[i].orcpt) + 1 : 0);
	/* the message, its recipients and its strings: one block */
	m = xcalloc(1, sizeof(*m) + msg->nrcpt * sizeof(m->rcpts[0]) + strs);
	p = (char *)&m->rcpts[msg->nrcpt];
	m->mid = msg->mid;
	m->arrival = (uint32_t)(msg->arrival > 0 ? msg->arrival : 0);
	m->nrcpt = (uint32_t)msg->nrcpt;
	/* sched_msg_sender and sched_msg_envid find these two */
	sched_put(&p, msg->sender ? msg->sender : "");
	m->has_envid = sched_put(&p, msg->envid) != NULL;
	m->ret = msg->ret;
	/* the spool's record of a delay notice that went (dsn.c) */
	m->warned = (msg->flags & SPOOL_F_WARNED) != 0;
	m->flags = msg->flags & ~SPOOL_F_WARNED;
	m->size = msg->size < UINT32_MAX ? (uint32_t)msg->size : UINT32_MAX;
	for (size_t i = 0; i < msg->nrcpt; i++) {
		const struct spool_rcpt *sr = &msg->rcpts[i];
		struct sched_rcpt *r = &m->rcpts[i];
		r->addr = sched_put(&p, sr->addr);
		r->has_orcpt = sched_put(&p, sr->orcpt) != NULL;
		r->last_reply = sl_intern(sr->last_reply);
		r->rid = sr->rid;
		r->attempts = sr->attempts < UINT16_MAX ?
		    (uint16_t)sr->attempts : UINT16_MAX;
		r->next_retry = sched_time32(sr->next_retry);
		r->state = sr->state;
		r->notify = sr->notify;
		/* FAILED (not BOUNCED) from the spool: its DSN is due */
		if (!sched_rcpt_final(r))
			m->npending++;
	}
	return m;
}

void
sched_msg_abort(struct sched *s, struct sched_msg *m)
{
	sched_msg_enter(s, m, SCHED_MSG_DONE);
}

/* Group the pending recipients into jobs by destination. */
static void
sched_msg_jobs(struct sched *s, struct sched_msg *m)
{
	uint32_t max = (uint32_t)s->conf->delivery_recipients_per_transaction;
	int64_t now = sl_now_us() / 1000000;

	/* a batch's recipients each get their own message: one per job */
	if ((m->flags & SPOOL_F_BATCH) && s->hooks.batch_body != NULL)
		max = 1;

	for (uint32_t i = 0; i < m->nrcpt; i++) {
		struct sched_rcpt *r = &m->rcpts[i];
		struct sched_dest *d;
		struct sched_job *j;

		if (sched_rcpt_final(r))
			continue;
		d = sched_dest_of(s, r->addr);
		/* join an earlier job of this message at d, if it has room and
		 * the same hold state */
		for (j = max > 1 ? m->jobs : NULL; j != NULL; j = j->next)
			if (j->dest == d && j->nrcpt < max &&
			    (m->rcpts[j->ridx[0]].state == SPOOL_RCPT_HELD) ==
			    (r->state == SPOOL_RCPT_HELD))
				break;
		if (j == NULL) {
			uint32_t cap = max < m->nrcpt - i ? max : m->nrcpt - i;
			j = xcalloc(1, sizeof(*j) + cap * sizeof(j->ridx[0]));
			j->msg = m;
			j->dest = d;
			j->next = m->jobs;
			m->jobs = j;
			d->njobs++;
			sched_dest_job_add(d, j, NULL);
		}
		j->ridx[j->nrcpt++] = i;
		if (r->next_retry > j->timer.key)
			j->timer.key = r->next_retry;
	}
	for (struct sched_job *j = m->jobs; j != NULL; j = j->next) {
		if (m->rcpts[j->ridx[0]].state == SPOOL_RCPT_HELD) {
			j->state = SCHED_JOB_HELD;
		} else if (j->timer.key > now) {
			j->state = SCHED_JOB_DEFERRED;
			sl_heap_push(&s->retry, &j->timer);
		} else {
			sched_job_ready(s, j);
		}
	}
	sched_retry_arm(s);
}

static uint32_t
sched_msg_hash(const void *node)
{
	const struct sched_msg *m = node;

	return (uint32_t)(m->mid ^ (m->mid >> 32));
}

struct sched_msg *
sched_msg_find(struct sched *s, uint64_t mid)
{
	struct sched_msg *m;

	for (m = s->mtab[(uint32_t)(mid ^ (mid >> 32)) % s->mtab_size]; m != NULL;
	    m = m->hnext)
		if (m->mid == mid)
			return m;
	return NULL;
}

/* The job recipient i of m is in: a walk of its (few) jobs, each list of
 * recipients in ascending order. */
struct sched_job *
sched_rcpt_job(const struct sched_msg *m, uint32_t i)
{
	for (struct sched_job *j = m->jobs; j != NULL; j = j->next) {
		uint32_t lo = 0, hi = j->nrcpt;

		while (lo < hi) {
			uint32_t mid = lo + (hi - lo) / 2;
			if (j->ridx[mid] < i)
				lo = mid + 1;
			else
				hi = mid;
		}
		if (lo < j->nrcpt && j->ridx[lo] == i)
			return j;
	}
	return NULL;
}

static void
sched_msg_unindex(struct sched *s, struct sched_msg *m)
{
	if (sl_chain_unlink((void **)&s->mtab[sched_msg_hash(m) %
	    s->mtab_size], m, offsetof(struct sched_msg, hnext)))
		s->nindexed--;
}

void
sched_msg_commit(struct sched *s, struct sched_msg *m)
{
	size_t b;

	if (s->nindexed >= s->mtab_size) {
		s->mtab = (struct sched_msg **)sl_chain_rehash((void **)s->mtab,
		    s->mtab_size, s->mtab_size * 2,
		    offsetof(struct sched_msg, hnext), sched_msg_hash);
		s->mtab_size *= 2;
	}
	b = sched_msg_hash(m) % s->mtab_size;
	m->hnext = s->mtab[b];
	s->mtab[b] = m;
	s->nindexed++;
	sched_msg_enter(s, m, SCHED_MSG_QUEUED);
	sched_msg_jobs(s, m);
	/* recovered with every recipient final: finish it */
	sched_msg_maybe_done(s, m);
}

void
sched_recover(void *arg, struct spool_msg *msg)
{
	struct sched *s = arg;
	/* m->warned comes from the spool: SPOOL_F_WARNED is set in the
	 * delay notice's own transaction */
	struct sched_msg *m = sched_msg_new(s, msg);

	spool_msg_free(msg);
	sched_msg_commit(s, m);
	/* a failure recorded before a crash whose DSN did not make it: now,
	 * not when the rest of the message is done */
	if (sched_msg_queued(m) && m->npending > 0)
		sched_dsn_pending(s, m);
}

/* ---- jobs ---- */

void
sched_job_ready(struct sched *s, struct sched_job *job)
{
	struct sched_dest *d = job->dest;

	job->state = SCHED_JOB_READY;
	TAILQ_INSERT_TAIL(&d->ready, job, entry);
	d->nready++;
	sched_dest_run(s, d);
}

void
sched_job_split(struct sched *s, struct sched_job *job, uint32_t n)
{
	uint32_t rest = job->nrcpt - n;
	struct sched_job *j;

	if (n == 0 || rest == 0 || job->state != SCHED_JOB_READY)
		return;
	j = xcalloc(1, sizeof(*j) + rest * sizeof(j->ridx[0]));
	j->msg = job->msg;
	j->dest = job->dest;
	memcpy(j->ridx, job->ridx + n, rest * sizeof(j->ridx[0]));
	j->nrcpt = rest;
	job->nrcpt = n;
	j->next = job->next;
	job->next = j;
	j->state = SCHED_JOB_READY;
	TAILQ_INSERT_AFTER(&job->dest->ready, job, j, entry);
	job->dest->nready++;
	job->dest->njobs++;
	sched_dest_job_add(job->dest, j, job);
}

/* Remove a job from wherever it waits, and from its message. */
void
sched_job_unlink(struct sched *s, struct sched_job *job)
{
	struct sched_msg *m = job->msg;
	struct sched_job **pp;

	if (job->state == SCHED_JOB_READY) {
		TAILQ_REMOVE(&job->dest->ready, job, entry);
		job->dest->nready--;
	} else if (job->state == SCHED_JOB_DEFERRED) {
		sl_heap_remove(&s->retry, &job->timer);
	}
	sched_dest_job_del(job->dest, job);
	if (--job->dest->njobs == 0)
		sched_dest_maybe_idle(s, job->dest);
	for (pp = &m->jobs; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == job) {
			*pp = job->next;
			break;
		}
	}
	free(job);
}

static int64_t
sched_backoff(struct sched *s, uint32_t attempts)
{
	int64_t d = s->conf->delivery_retry_initial;

	for (uint32_t i = 1; i < attempts && d < s->conf->delivery_retry_max; i++)
		d *= 2;
	return d < s->conf->delivery_retry_max ? d : s->conf->delivery_retry_max;
}

static void
sched_rcpt_set_reply(struct sched_rcpt *r, const char *reply,
    const char *remote)
{
	const char *old = r->last_reply, *oldr = r->remote;

	/* intern before releasing: reply may be the old string itself */
	r->last_reply = sl_intern(reply);
	r->remote = sl_intern(remote);
	sl_unintern(old);
	sl_unintern(oldr);
}

/* ---- recording outcomes ---- */

/* A spool request about a message: its callback's argument. */
struct sched_req {
	struct sched *s;
	struct sched_msg *m;
};

static struct sched_req *
sched_req_new(struct sched *s, struct sched_msg *m)
{
	struct sched_req *q = xmalloc(sizeof(*q));

	q->s = s;
	q->m = m;
	m->inflight++;
	return q;
}

static void
sched_spool_done(void *arg, enum spool_status st)
{
	struct sched_req *q = arg;
	struct sched_msg *m = q->m;
	struct sched *s = q->s;

	free(q);
	if (st != SPOOL_OK)
		log_ev(LOG_WARNING, MSG_IDS(m, -1), "recipient states not "
		    "recorded", "status", st == SPOOL_ERR_NOSPACE ? "no space" :
		    st == SPOOL_ERR_NOTFOUND ? "not found" : "io error", NULL);
	m->inflight--;
	sched_msg_maybe_done(s, m);
}

/* Record the states of the recipients listed (indices into m->rcpts). */
void
sched_record(struct sched *s, struct sched_msg *m, const uint32_t *idx,
    size_t n)
{
	struct spool_rcpt *v;

	if (n == 0)
		return;
	v = xcalloc(n, sizeof(*v));
	for (size_t i = 0; i < n; i++) {
		const struct sched_rcpt *r = &m->rcpts[idx[i]];
		v[i].rid = r->rid;
		v[i].addr = (char *)r->addr;	/* copied */
		v[i].state = r->state;
		v[i].attempts = r->attempts;
		v[i].next_retry = r->next_retry;
		v[i].last_reply = (char *)r->last_reply; /* copied */
	}
	spool_update_rcpts(s->spool, m->mid, v, n, sched_spool_done,
	    sched_req_new(s, m));
	free(v);	/* the spool copied what it needs */
}

/* ---- the state of a message ---- */

static const char *const sched_msg_state_names[] = {
	[SCHED_MSG_NEW] = "new",
	[SCHED_MSG_QUEUED] = "queued",
	[SCHED_MSG_EXPIRED] = "expired",
	[SCHED_MSG_RETURNED] = "returned",
	[SCHED_MSG_DELETING] = "deleting",
	[SCHED_MSG_REMOVED] = "removed",
	[SCHED_MSG_DONE] = "done",
};

/* 1 if a message may move from a to b (sched_int.h draws them). */
static int
sched_msg_move_ok(enum sched_msg_state a, enum sched_msg_state b)
{
	switch (b) {
	case SCHED_MSG_QUEUED:
		return a == SCHED_MSG_NEW;
	case SCHED_MSG_EXPIRED:
		return a == SCHED_MSG_QUEUED;
	case SCHED_MSG_RETURNED:
		return a == SCHED_MSG_QUEUED || a == SCHED_MSG_EXPIRED;
	case SCHED_MSG_DELETING:
	case SCHED_MSG_REMOVED:
		return a == SCHED_MSG_QUEUED || a == SCHED_MSG_EXPIRED ||
		    a == SCHED_MSG_RETURNED;
	case SCHED_MSG_DONE:
		return a == SCHED_MSG_NEW || a == SCHED_MSG_DELETING ||
		    a == SCHED_MSG_REMOVED;
	default:
		return 0;
	}
}

/* The list a message in state st sits on; NULL for NEW. */
static struct sched_msg_list *
sched_msg_list(struct sched *s, const struct sched_msg *m,
    enum sched_msg_state st)
{
	switch (st) {
	case SCHED_MSG_NEW:
		return NULL;
	case SCHED_MSG_QUEUED:
		return &s->age;
	case SCHED_MSG_EXPIRED:
		return &s->expired;
	case SCHED_MSG_RETURNED:
		/* returned where it was; expiry moves it on (age_out) */
		return m->in_expired ? &s->expired : &s->age;
	default:
		return &s->leaving;
	}
}

/*
 * The head of s->age is past its lifetime: to the tail of s->expired (the
 * one move between the two lists that walks, manage.c, expect).
 */
static void
sched_msg_age_out(struct sched *s, struct sched_msg *m)
{
	TAILQ_REMOVE(&s->age, m, age);
	TAILQ_INSERT_TAIL(&s->expired, m, age);
	m->in_expired = 1;
}

/*
 * Move m to state st: the one writer of m->state. Moves it between the
 * lists, keeps the counts and the expiry timer, and frees it in DONE
 * once nothing refers to it.
 */
void
sched_msg_enter(struct sched *s, struct sched_msg *m, enum sched_msg_state st)
{
	struct sched_msg_list *from = sched_msg_list(s, m, m->state);
	/* a message the spool never took is on no list */
	struct sched_msg_list *to = m->state == SCHED_MSG_NEW &&
	    st == SCHED_MSG_DONE ? NULL : sched_msg_list(s, m, st);
	int head = from != NULL && TAILQ_FIRST(from) == m;

	if (!sched_msg_move_ok(m->state, st))
		SL_PANIC("MID %016llX: %s -> %s", (unsigned long long)m->mid,
		    sched_msg_state_names[m->state], sched_msg_state_names[st]);
	if (log_enabled(LOG_DEBUG))
		log_ev(LOG_DEBUG, MSG_IDS(m, -1), "message state", "from",
		    sched_msg_state_names[m->state], "to",
		    sched_msg_state_names[st], NULL);
	if (st == SCHED_MSG_EXPIRED) {
		sched_msg_age_out(s, m);	/* only ever the head */
	} else if (from != to) {
		/* leaving the queue: walks standing on m step on first */
		if (from == &s->age || from == &s->expired)
			sched_iters_unlink(s, m);
		if (from != NULL)
			TAILQ_REMOVE(from, m, age);
		if (to != NULL)
			TAILQ_INSERT_TAIL(to, m, age);
	}
	if (m->state == SCHED_MSG_NEW && st == SCHED_MSG_QUEUED) {
		m->listed = 1;
		s->stats.messages++;
		s->stats.recipients += m->npending;
	}
	if (st == SCHED_MSG_DONE && m->listed)
		s->stats.messages--;
	m->state = st;
	/* the oldest queued message came or went: its deadline is next */
	if ((from == &s->age && head) ||
	    (to == &s->age && TAILQ_FIRST(&s->age) ==
	    m))
		sched_expire_arm(s);
	if (st == SCHED_MSG_DONE)
		sched_msg_gc(s, m);
}

/* Free m once it is DONE and nothing refers to it: the one free path. */
void
sched_msg_gc(struct sched *s, struct sched_msg *m)
{
	if (m->state != SCHED_MSG_DONE || m->jobs != NULL || m->inflight > 0)
		return;
	if (m->listed) {
		TAILQ_REMOVE(&s->leaving, m, age);
		sched_msg_unindex(s, m);
	}
	sched_msg_free(m);
}

/* The answer to our own delete of a finished message. */
static void
sched_deleted(void *arg, enum spool_status st)
{
	struct sched_req *q = arg;
	struct sched_msg *m = q->m;
	struct sched *s = q->s;

	free(q);
	m->inflight--;
	if (st != SPOOL_OK && st != SPOOL_ERR_NOTFOUND) {
		/* it stays on disk with every recipient final; the next start
		 * finds it so and deletes it then */
		log_ev(LOG_WARNING, MSG_IDS(m, -1), "spool delete failed", NULL);
	} else {
		log_gw(LOG_GW_FINISHED, MSG_IDS(m, -1), NULL);
	}
	sched_msg_enter(s, m, SCHED_MSG_DONE);
}

static void
sched_failures_kept(void *arg)
{
	struct sched_req *q = arg;
	struct sched_msg *m = q->m;
	struct sched *s = q->s;

	free(q);
	m->inflight--;
	m->failures_kept = 1;
	sched_msg_maybe_done(s, m);
}

/*
 * Hand the recipients of a final message that failed for good (FAILED or
 * BOUNCED) to hooks.failed; 1 if it took them: the delete waits for its
 * answer (a spool request's count holds the message).
 */
static int
sched_keep_failures(struct sched *s, struct sched_msg *m)
{
	struct sched_failed f = { m->mid, sched_msg_sender(m),
		sched_msg_envid(m), m->flags, 0, NULL, NULL, NULL };
	uint32_t *rids;
	const char **addrs, **replies;
	int rc = -1;

	if (s->hooks.failed == NULL || m->failures_kept)
		return 0;
	rids = xcalloc(m->nrcpt, sizeof(*rids));
	addrs = xcalloc(m->nrcpt, sizeof(*addrs));
	replies = xcalloc(m->nrcpt, sizeof(*replies));
	for (uint32_t i = 0; i < m->nrcpt; i++) {
		const struct sched_rcpt *r = &m->rcpts[i];

		if (r->state != SPOOL_RCPT_FAILED &&
		    r->state != SPOOL_RCPT_BOUNCED)
			continue;
		rids[f.n] = r->rid;
		addrs[f.n] = r->addr;
		replies[f.n++] = r->last_reply;
	}
	f.rids = rids;
	f.addrs = addrs;
	f.replies = replies;
	if (f.n > 0) {
		struct sched_req *q = sched_req_new(s, m);	/* inflight++ */
		rc = s->hooks.failed(s->hooks.arg, &f, sched_failures_kept, q);
		if (rc != 0) {
			m->inflight--;
			free(q);
		}
	}
	if (rc != 0)
		m->failures_kept = 1;
	free(rids);
	free(addrs);
	free(replies);
	return rc == 0;
}

/*
 * After any change of m: once every recipient is final and every spool
 * request answered, queue the DSNs still due, then delete it; a message
 * that is going already is freed when nothing refers to it.
 */
void
sched_msg_maybe_done(struct sched *s, struct sched_msg *m)
{
	if (!sched_msg_queued(m)) {
		sched_msg_gc(s, m);
		return;
	}
	if (m->npending > 0 || m->inflight > 0)
		return;
	for (uint32_t i = 0; i < m->nrcpt; i++) {
		if (m->rcpts[i].state == SPOOL_RCPT_FAILED) {
			sched_dsn_pending(s, m);
			if (m->inflight > 0)
				return;
			break;
		}
	}
	/* the failure queue has them before the message leaves the spool */
	if (sched_keep_failures(s, m))
		return;
	sched_msg_enter(s, m, SCHED_MSG_DELETING);
	spool_delete(s->spool, m->mid, sched_deleted, sched_req_new(s, m));
}

/* ---- outcomes ---- */

static int
sched_is_expired(struct sched *s, struct sched_msg *m)
{
	return m->state == SCHED_MSG_EXPIRED || sl_now_us() / 1000000 >=
	    m->arrival + s->conf->delivery_queue_lifetime;
}

void
sched_job_outcome(struct sched *s, struct sched_job *job,
    struct smtpc_rcpt *res, size_t n, const char *remote, int peer_dsn)
{
	struct sched_msg *m = job->msg;
	int64_t now = sl_now_us() / 1000000, next = 0;
	uint32_t *failed = xcalloc(n, sizeof(*failed));
	uint32_t *ok_notify = xcalloc(n, sizeof(*ok_notify));
	uint32_t *all = xcalloc(n, sizeof(*all));
	uint32_t *delayed = xcalloc(n, sizeof(*delayed));
	int64_t warn_after = s->conf->delivery_delay_warning;
	size_t nf = 0, ns = 0, nd = 0, keep = 0;
	int returned = m->state == SCHED_MSG_RETURNED;
	int expired = returned || sched_is_expired(s, m);

	SL_ALWAYS(n == job->nrcpt);
	if (!sched_msg_queued(m)) {
		/* deleted while this delivery was in flight: forget it */
		sched_job_unlink(s, job);
		free(failed);
		free(ok_notify);
		free(all);
		free(delayed);
		sched_msg_gc(s, m);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		uint32_t ri = job->ridx[i];
		struct sched_rcpt *r = &m->rcpts[ri];
		int64_t hold = 0;	/* a reply rule's retry_in */
		int code = sched_shape_verdict(s, job->dest, &res[i], &hold);

		all[i] = ri;
		if (r->attempts < UINT16_MAX)
			r->attempts++;
		sched_rcpt_set_reply(r, res[i].reply, remote);
		sched_dest_note_reply(job->dest, r->last_reply, r->remote, now);
		if (code >= 200 && code < 300) {
			double lat = (double)sl_now_us() / 1e6 - (double)m->arrival;
			size_t b = 0;
			while (b < SCHED_LAT_BUCKETS && lat > sched_lat_bounds[b])
				b++;
			s->stats.lat_count[b]++;
			s->stats.lat_sum += lat;
			r->state = SPOOL_RCPT_DELIVERED;
			s->stats.delivered++;
			sched_emit(s, m, r, "delivered");
			if ((r->notify & SPOOL_NOTIFY_SUCCESS) && !peer_dsn)
				ok_notify[ns++] = ri;
		} else if (code >= 500 || (expired && code < 500)) {
			if (code < 500 && returned) {
				sched_rcpt_set_reply(r, "550 5.0.0 Returned to "
				    "the sender by the operator", NULL);
			} else if (code < 500) {
				/* expired: the last reply stays its diagnostic;
				 * the DSN says 5.4.7 (dsn.c) */
				s->stats.expired++;
			}
			r->state = SPOOL_RCPT_FAILED;	/* its DSN due */
			failed[nf++] = ri;
			s->stats.failed++;
			sched_emit(s, m, r, code < 500 && !returned ?
			    "expired" : "bounced");
		} else {
			r->state = SPOOL_RCPT_DEFERRED;
			r->next_retry = sched_time32(now + (hold > 0 ? hold :
			    sched_backoff(s, r->attempts)));
			if (r->next_retry > next)
				next = r->next_retry;
			s->stats.deferred++;
			sched_emit(s, m, r, "deferred");
			job->ridx[keep++] = ri;
			/* RFC 3461 4.1: no NOTIFY leaves delay notices to us */
			if (warn_after > 0 && !m->warned &&
			    now - m->arrival >= warn_after &&
			    (r->notify == 0 || (r->notify & SPOOL_NOTIFY_DELAY)))
				delayed[nd++] = ri;
			{
				char att[16], wait[24];
				snprintf(att, sizeof(att), "%u", r->attempts);
				snprintf(wait, sizeof(wait), "%llds",
				    (long long)(r->next_retry - now));
				log_ev(LOG_INFO, MSG_IDS(m, (int64_t)r->rid),
				    "deferred", "attempts", att, "retry_in",
				    wait, "reply", r->last_reply, NULL);
			}
			continue;
		}
		m->npending--;
		s->stats.recipients--;
	}
	job->nrcpt = (uint32_t)keep;
	if (keep == 0) {
		sched_job_unlink(s, job);
	} else if (job->hold) {
		job->hold = 0;
		job->state = SCHED_JOB_HELD;
		for (size_t i = 0; i < keep; i++)
			m->rcpts[job->ridx[i]].state = SPOOL_RCPT_HELD;
	} else {
		job->state = SCHED_JOB_DEFERRED;
		job->timer.key = next;
		sl_heap_push(&s->retry, &job->timer);
		sched_retry_arm(s);
	}
	sched_record(s, m, all, n);
	sched_dsn(s, m, BOUNCE_FAILED, failed, nf);
	sched_dsn(s, m, BOUNCE_RELAYED, ok_notify, ns);
	if (nd > 0) {
		m->warned = 1;
		sched_dsn(s, m, BOUNCE_DELAYED, delayed, nd);
	}
	free(failed);
	free(ok_notify);
	free(all);
	free(delayed);
	sched_msg_maybe_done(s, m);
}

/* Give every recipient of job the same outcome (DNS, connection). */
static void
sched_job_all(struct sched *s, struct sched_job *job, int code,
    const char *reply, const char *remote)
{
	struct smtpc_rcpt *res = xcalloc(job->nrcpt, sizeof(*res));

	if (job->state == SCHED_JOB_READY) {
		TAILQ_REMOVE(&job->dest->ready, job, entry);
		job->dest->nready--;
	} else if (job->state == SCHED_JOB_DEFERRED) {
		sl_heap_remove(&s->retry, &job->timer);
	}
	job->state = SCHED_JOB_ACTIVE;
	for (uint32_t i = 0; i < job->nrcpt; i++) {
		res[i].rid = job->msg->rcpts[job->ridx[i]].rid;
		res[i].code = code;
		sl_strlcpy(res[i].reply, reply, sizeof(res[i].reply));
	}
	sched_job_outcome(s, job, res, job->nrcpt, remote, 0);
	free(res);
}

void
sched_job_defer_all(struct sched *s, struct sched_job *job, int code,
    const char *reply, const char *remote)
{
	sched_job_all(s, job, code >= 400 && code < 500 ? code : 451, reply,
	    remote);
}

void
sched_job_fail_all(struct sched *s, struct sched_job *job, const char *reply)
{
	sched_job_all(s, job, 550, reply, NULL);
}

/* ---- timers ---- */

static void
sched_retry_fire(evutil_socket_t fd, short what, void *arg)
{
	struct sched *s = arg;
	int64_t now = sl_now_us() / 1000000;
	struct sl_heap_item *it;

	s->retry_at = 0;
	while ((it = sl_heap_top(&s->retry)) != NULL && it->key <= now) {
		struct sched_job *job = (struct sched_job *)it;
		sl_heap_pop(&s->retry);
		sched_job_ready(s, job);
	}
	sched_retry_arm(s);
}

static void
sched_retry_arm(struct sched *s)
{
	struct sl_heap_item *it = sl_heap_top(&s->retry);
	int64_t now = sl_now_us() / 1000000;
	struct timeval tv = { 0, 0 };

	if (it == NULL || (s->retry_at != 0 && s->retry_at <= it->key))
		return;
	if (s->retry_ev == NULL)
		s->retry_ev = evtimer_new(s->base, sched_retry_fire, s);
	if (it->key > now)
		tv.tv_sec = it->key - now;
	s->retry_at = it->key;
	evtimer_add(s->retry_ev, &tv);
}

static void
sched_expire_fire(evutil_socket_t fd, short what, void *arg)
{
	struct sched *s = arg;
	int64_t now = sl_now_us() / 1000000;
	struct sched_msg *m;

	while ((m = TAILQ_FIRST(&s->age)) != NULL &&
	    m->arrival + s->conf->delivery_queue_lifetime <= now) {
		struct sched_job *j, *next;
		if (m->state == SCHED_MSG_RETURNED) {
			sched_msg_age_out(s, m);	/* failing already */
			continue;
		}
		sched_msg_enter(s, m, SCHED_MSG_EXPIRED);
		log_ev(LOG_INFO, MSG_IDS(m, -1), "expired", "lifetime",
		    s->conf->delivery_queue_lifetime >= 86400 ? "days" :
		    "short", NULL);
		/* active jobs see the EXPIRED state when their outcome comes */
		for (j = m->jobs; j != NULL; j = next) {
			next = j->next;
			if (j->state == SCHED_JOB_ACTIVE)
				continue;
			const char *last = m->rcpts[j->ridx[0]].last_reply;
			char *why = xasprintf("%s", last ? last :
			    "451 4.4.7 delivery time expired");
			sched_job_defer_all(s, j, 451, why, NULL);
			free(why);
		}
	}
	sched_expire_arm(s);
}

static void
sched_expire_arm(struct sched *s)
{
	struct sched_msg *m = TAILQ_FIRST(&s->age);
	int64_t now = sl_now_us() / 1000000, at;
	struct timeval tv = { 0, 0 };

	if (s->expire_ev == NULL)
		s->expire_ev = evtimer_new(s->base, sched_expire_fire, s);
	if (m == NULL) {
		evtimer_del(s->expire_ev);
		return;
	}
	at = m->arrival + s->conf->delivery_queue_lifetime;
	if (at > now)
		tv.tv_sec = at - now;
	evtimer_add(s->expire_ev, &tv);
}

void
sched_stats_get(const struct sched *s, struct sched_stats *out)
{
	*out = s->stats;
	out->destinations = s->ndest;
	out->connections = (uint64_t)s->nconn;
}

void
sched_free(struct sched *s)
{
	struct sched_msg *m;

	if (s == NULL)
		return;
	sched_dest_free_all(s);
	/* what is left at exit, in any state */
	while ((m = TAILQ_FIRST(&s->age)) != NULL) {
		TAILQ_REMOVE(&s->age, m, age);
		sched_msg_free(m);
	}
	while ((m = TAILQ_FIRST(&s->expired)) != NULL) {
		TAILQ_REMOVE(&s->expired, m, age);
		sched_msg_free(m);
	}
	while ((m = TAILQ_FIRST(&s->leaving)) != NULL) {
		TAILQ_REMOVE(&s->leaving, m, age);
		sched_msg_free(m);
	}
	sched_dsn_free(s);
	sched_body_free_all(s);
	sl_heap_free(&s->retry);
	if (s->retry_ev)
		event_free(s->retry_ev);
	if (s->expire_ev)
		event_free(s->expire_ev);
	free(s->dtab);
	free(s->stab);
	free(s->mtab);
	free(s->self);
	free(s);
}
