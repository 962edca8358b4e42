/* SPDX-License-Identifier: MIT */
/*
 * sched.c: messages and their recipients through delivery: jobs, retries,
 * expiry, outcomes recorded in the spool, DSNs, and the final delete.
 *
 * A job is the recipients of one message at one destination (at most
 * [delivery] recipients_per_transaction): one SMTP transaction. Jobs move:
 *   READY (destination's ready list) -> ACTIVE (on a connection)
 *   ACTIVE -> gone (every recipient final) | DEFERRED (retry heap)
 *   DEFERRED -(retry time)-> READY
 * Expiry needs no scan either: messages sit in arrival order (MIDs grow with
 * arrival and the lifetime is one setting), so one timer at the oldest
 * message's deadline finds every message that expires.
 *
 * Invariants
 *  1. A message is deleted from the spool only after every recipient is
 *     final, their states are recorded, and the DSNs they call for are queued
 *     (sched_msg_maybe_done waits for every spool answer: msg->inflight).
 *  2. A bounce (SPOOL_F_BOUNCE) or a message from <> never causes a DSN.
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

static void sched_msg_maybe_done(struct sched *s, struct sched_msg *m);
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
	TAILQ_INIT(&s->starved);
	return s;
}

void
sched_set_conf(struct sched *s, const struct sl_conf *conf)
{
	s->conf = conf;
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
	m->s = s;
	m->mid = msg->mid;
	m->arrival = msg->arrival;
	m->sender = sched_put(&p, msg->sender ? msg->sender : "");
	m->envid = sched_put(&p, msg->envid);
	m->ret = msg->ret;
	m->flags = msg->flags;
	m->size = msg->size;
	m->nrcpt = (uint32_t)msg->nrcpt;
	for (size_t i = 0; i < msg->nrcpt; i++) {
		const struct spool_rcpt *sr = &msg->rcpts[i];
		struct sched_rcpt *r = &m->rcpts[i];
		r->addr = sched_put(&p, sr->addr);
		r->has_orcpt = sched_put(&p, sr->orcpt) != NULL;
		r->last_reply = sl_intern(sr->last_reply);
		r->rid = sr->rid;
		r->attempts = sr->attempts;
		r->next_retry = sr->next_retry;
		r->state = sr->state;
		r->notify = sr->notify;
		if (r->state != SPOOL_RCPT_DELIVERED &&
		    r->state != SPOOL_RCPT_FAILED)
			m->npending++;
		else if (r->state == SPOOL_RCPT_FAILED)
			r->dsn_due = 1;	/* recovered: its DSN may not be out */
	}
	return m;
}

void
sched_msg_abort(struct sched *s, struct sched_msg *m)
{
	sched_msg_free(m);
}

/* The lower-case domain of a recipient ("" for <Postmaster>). */
static void
sched_rcpt_domain(const char *addr, char *out, size_t size)
{
	const char *at = strrchr(addr, '@');
	size_t i = 0;

	if (at != NULL)
		for (at++; *at && i + 1 < size; at++)
			out[i++] = (char)((*at >= 'A' && *at <= 'Z') ? *at + 32 : *at);
	out[i] = '\0';
}

/* Group the pending recipients into jobs by destination. */
static void
sched_msg_jobs(struct sched *s, struct sched_msg *m)
{
	uint32_t max = (uint32_t)s->conf->delivery_recipients_per_transaction;
	int64_t now = sl_now_us() / 1000000;
	char dom[256];

	for (uint32_t i = 0; i < m->nrcpt; i++) {
		struct sched_rcpt *r = &m->rcpts[i];
		struct sched_dest *d;
		struct sched_job *j;

		if (r->state == SPOOL_RCPT_DELIVERED ||
		    r->state == SPOOL_RCPT_FAILED || r->job != NULL)
			continue;
		sched_rcpt_domain(r->addr, dom, sizeof(dom));
		d = sched_dest_get(s, dom);
		/* join an earlier job of this message at d, if it has room and
		 * the same hold state */
		for (j = m->jobs; j != NULL; j = j->next)
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
		}
		j->ridx[j->nrcpt++] = i;
		r->job = j;
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

static void
sched_msg_unindex(struct sched *s, struct sched_msg *m)
{
	struct sched_msg **pp;

	for (pp = &s->mtab[sched_msg_hash(m) % s->mtab_size]; *pp;
	    pp = &(*pp)->hnext) {
		if (*pp == m) {
			*pp = m->hnext;
			s->nindexed--;
			return;
		}
	}
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
	TAILQ_INSERT_TAIL(&s->age, m, age);
	m->queued = 1;
	s->stats.messages++;
	s->stats.recipients += m->npending;
	if (TAILQ_FIRST(&s->age) == m)
		sched_expire_arm(s);
	sched_msg_jobs(s, m);
	/* recovered with every recipient final: finish it */
	sched_msg_maybe_done(s, m);
}

void
sched_recover(void *arg, struct spool_msg *msg)
{
	struct sched *s = arg;
	struct sched_msg *m = sched_msg_new(s, msg);
	int64_t warn = s->conf->delivery_delay_warning;

	/* Whether its delay notice went out is not on disk: one that was
	 * deferred past the threshold is taken as warned, so a restart never
	 * sends a second notice (a missed one is the lesser harm). */
	for (uint32_t i = 0; warn > 0 && i < m->nrcpt; i++)
		if (m->rcpts[i].attempts > 0 &&
		    sl_now_us() / 1000000 - m->arrival >= warn)
			m->warned = 1;

	spool_msg_free(msg);
	sched_msg_commit(s, m);
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
	job->dest->njobs--;
	for (pp = &m->jobs; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == job) {
			*pp = job->next;
			break;
		}
	}
	for (uint32_t i = 0; i < job->nrcpt; i++)
		m->rcpts[job->ridx[i]].job = NULL;
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

static void
sched_spool_done(void *arg, enum spool_status st)
{
	struct sched_msg *m = arg;

	if (st != SPOOL_OK)
		log_ev(LOG_WARNING, MSG_IDS(m, -1), "recipient states not "
		    "recorded", "status", st == SPOOL_ERR_NOSPACE ? "no space" :
		    st == SPOOL_ERR_NOTFOUND ? "not found" : "io error", NULL);
	m->inflight--;
	sched_msg_maybe_done(m->s, m);
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
	m->inflight++;
	spool_update_rcpts(s->spool, m->mid, v, n, sched_spool_done, m);
	free(v);	/* the spool copied what it needs */
}

/* ---- DSNs ---- */

struct sched_dsn {
	struct sched *s;
	struct sched_msg *orig;
	struct sched_msg *dsn;
	enum bounce_action action;
	size_t n;
	uint32_t idx[];
};

static void
sched_dsn_stored(void *arg, enum spool_status st)
{
	struct sched_dsn *q = arg;
	struct sched_msg *m = q->orig;
	char mid[17];

	m->inflight--;
	if (st == SPOOL_OK) {
		spool_mid_fmt(q->dsn->mid, mid);
		log_ev(LOG_INFO, MSG_IDS(m, -1), q->action == BOUNCE_FAILED ?
		    "bounced" : q->action == BOUNCE_DELAYED ? "delay notice" :
		    "success notice", "dsn_mid", mid, NULL);
		q->s->stats.dsn_sent++;
		if (q->action == BOUNCE_FAILED)
			for (size_t i = 0; i < q->n; i++)
				m->rcpts[q->idx[i]].dsn_due = 0;
		sched_msg_commit(q->s, q->dsn);
	} else {
		/* the recipients keep dsn_due: the message stays, and the
		 * DSN is tried again with the next outcome or at restart */
		log_ev(LOG_WARNING, MSG_IDS(m, -1), "DSN not queued",
		    "status", st == SPOOL_ERR_NOSPACE ? "no space" : "io error",
		    NULL);
		sched_msg_abort(q->s, q->dsn);
	}
	free(q);
	sched_msg_maybe_done(m->s, m);
}

static const char *
sched_status_of(const char *reply, char *buf, size_t size, int code)
{
	/* "550 5.1.1 ..." -> "5.1.1"; else from the code's class */
	if (reply != NULL && strlen(reply) > 9 && reply[3] == ' ' &&
	    (reply[4] == '2' || reply[4] == '4' || reply[4] == '5') &&
	    reply[5] == '.') {
		size_t n = strcspn(reply + 4, " ");
		if (n < size) {
			memcpy(buf, reply + 4, n);
			buf[n] = '\0';
			return buf;
		}
	}
	snprintf(buf, size, "%d.0.0", code >= 500 ? 5 : code >= 400 ? 4 : 2);
	return buf;
}

/*
 * Queue one DSN about the recipients idx[0..n) of m. Nothing for bounces,
 * for mail from <>, or for recipients that asked for no notice.
 */
static void
sched_dsn(struct sched *s, struct sched_msg *m, enum bounce_action action,
    const uint32_t *idx, size_t n)
{
	struct bounce_rcpt *br;
	struct bounce_info bi = { 0 };
	struct spool_msg *dm;
	struct sched_dsn *q;
	struct evbuffer *orig;
	char (*status)[16];
	size_t k = 0;

	if (n == 0)
		return;
	if ((m->flags & SPOOL_F_BOUNCE) || m->sender[0] == '\0') {
		for (size_t i = 0; i < n; i++)
			m->rcpts[idx[i]].dsn_due = 0;
		if (action == BOUNCE_FAILED)
			log_ev(LOG_INFO, MSG_IDS(m, -1), "double bounce: "
			    "not returned", "sender", m->sender, NULL);
		return;
	}
	q = xcalloc(1, sizeof(*q) + n * sizeof(uint32_t));
	br = xcalloc(n, sizeof(*br));
	status = xcalloc(n, sizeof(*status));
	for (size_t i = 0; i < n; i++) {
		struct sched_rcpt *r = &m->rcpts[idx[i]];
		int code = r->last_reply ? atoi(r->last_reply) : 0;
		if (action == BOUNCE_FAILED &&
		    (r->notify & SPOOL_NOTIFY_NEVER ||
		    (r->notify && !(r->notify & SPOOL_NOTIFY_FAILURE)))) {
			r->dsn_due = 0;
			continue;
		}
		br[k].addr = r->addr;
		br[k].orcpt = sched_rcpt_orcpt(r);
		br[k].action = action;
		br[k].status = sched_status_of(r->last_reply, status[k],
		    sizeof(status[k]), code);
		br[k].remote_mta = r->remote;
		br[k].diagnostic = r->last_reply;
		br[k].last_attempt = sl_now_us() / 1000000;
		q->idx[k++] = idx[i];
	}
	if (k == 0) {
		free(q);
		free(br);
		free(status);
		return;
	}
	orig = spool_body_load(s->spool, m->mid);
	bi.reporting_mta = s->conf->server_hostname;
	bi.mid = m->mid;
	bi.envid = m->envid;
	bi.sender = m->sender;
	bi.arrival = m->arrival;
	/* RFC 3461 4.3: RET=FULL is for failure reports only */
	bi.ret_full = action == BOUNCE_FAILED && m->ret == SPOOL_RET_FULL;
	bi.smtputf8 = (m->flags & SPOOL_F_SMTPUTF8) != 0;
	bi.original = orig;
	bi.max_original = (size_t)s->conf->delivery_bounce_max_original;
	bi.nrcpt = k;
	bi.rcpts = br;

	dm = xcalloc(1, sizeof(*dm));
	dm->mid = spool_mid_next(s->spool);
	dm->arrival = sl_now_us() / 1000000;
	dm->sender = xstrdup("");
	dm->client_addr = xstrdup("127.0.0.1");
	dm->helo = xstrdup(s->conf->server_hostname);
	dm->body = bounce_build(&bi, dm->arrival);
	/* RFC 6152: 8-bit text goes with BODY=8BITMIME */
	dm->flags = SPOOL_F_BOUNCE | (bi.smtputf8 ? SPOOL_F_SMTPUTF8 : 0) |
	    (bounce_8bit(dm->body) ? SPOOL_F_8BITMIME : 0);
	dm->size = evbuffer_get_length(dm->body);
	dm->nrcpt = 1;
	dm->rcpts = xcalloc(1, sizeof(*dm->rcpts));
	dm->rcpts[0].addr = xstrdup(m->sender);
	if (orig)
		evbuffer_free(orig);
	free(br);
	free(status);

	q->s = s;
	q->orig = m;
	q->action = action;
	q->n = k;
	q->dsn = sched_msg_new(s, dm);
	m->inflight++;
	spool_insert(s->spool, dm, sched_dsn_stored, q);
}

/* Send the DSNs still due for failed recipients (after a failed try). */
static void
sched_dsn_pending(struct sched *s, struct sched_msg *m)
{
	uint32_t *idx = xcalloc(m->nrcpt, sizeof(*idx));
	size_t n = 0;

	for (uint32_t i = 0; i < m->nrcpt; i++)
		if (m->rcpts[i].dsn_due)
			idx[n++] = i;
	sched_dsn(s, m, BOUNCE_FAILED, idx, n);
	free(idx);
}

/* ---- the end of a message ---- */

static void
sched_msg_unqueue(struct sched *s, struct sched_msg *m)
{
	if (!m->queued)
		return;
	sched_iters_unlink(s, m);
	if (m->queued == 2) {
		TAILQ_REMOVE(&s->expired, m, age);
	} else if (TAILQ_FIRST(&s->age) == m) {
		TAILQ_REMOVE(&s->age, m, age);
		sched_expire_arm(s);
	} else {
		TAILQ_REMOVE(&s->age, m, age);
	}
	m->queued = 0;
}

static void
sched_deleted(void *arg, enum spool_status st)
{
	struct sched_msg *m = arg;
	struct sched *s = m->s;

	if (st != SPOOL_OK && st != SPOOL_ERR_NOTFOUND) {
		/* it stays on disk with every recipient final; the next start
		 * finds it so and deletes it then */
		log_ev(LOG_WARNING, MSG_IDS(m, -1), "spool delete failed", NULL);
	} else {
		log_gw(LOG_GW_FINISHED, MSG_IDS(m, -1), NULL);
	}
	sched_msg_unqueue(s, m);
	sched_msg_unindex(s, m);
	s->stats.messages--;
	sched_msg_free(m);
}

/* Free a message the operator deleted once nothing refers to it. */
void
sched_msg_gc(struct sched *s, struct sched_msg *m)
{
	if (!m->deleted || m->jobs != NULL || m->inflight > 0)
		return;
	sched_msg_unqueue(s, m);
	sched_msg_unindex(s, m);
	s->stats.messages--;
	sched_msg_free(m);
}

static void
sched_msg_maybe_done(struct sched *s, struct sched_msg *m)
{
	if (m->deleted) {
		sched_msg_gc(s, m);
		return;
	}
	if (m->npending > 0 || m->inflight > 0 || m->deleting)
		return;
	for (uint32_t i = 0; i < m->nrcpt; i++) {
		if (m->rcpts[i].dsn_due) {
			sched_dsn_pending(s, m);
			if (m->inflight > 0)
				return;
			break;
		}
	}
	m->deleting = 1;
	spool_delete(s->spool, m->mid, sched_deleted, m);
}

/* ---- outcomes ---- */

static int
sched_is_expired(struct sched *s, struct sched_msg *m)
{
	return m->expired || sl_now_us() / 1000000 >=
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
	int expired = sched_is_expired(s, m) || m->returned;

	SL_ALWAYS(n == job->nrcpt);
	if (m->deleted) {
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
		int code = res[i].code;

		all[i] = ri;
		r->attempts++;
		sched_rcpt_set_reply(r, res[i].reply, remote);
		if (code >= 200 && code < 300) {
			double lat = (double)sl_now_us() / 1e6 - (double)m->arrival;
			size_t b = 0;
			while (b < SCHED_LAT_BUCKETS && lat > sched_lat_bounds[b])
				b++;
			s->stats.lat_count[b]++;
			s->stats.lat_sum += lat;
			r->state = SPOOL_RCPT_DELIVERED;
			s->stats.delivered++;
			if ((r->notify & SPOOL_NOTIFY_SUCCESS) && !peer_dsn)
				ok_notify[ns++] = ri;
		} else if (code >= 500 || (expired && code < 500)) {
			if (code < 500 && m->returned) {
				sched_rcpt_set_reply(r, "550 5.0.0 Returned to "
				    "the sender by the operator", NULL);
			} else if (code < 500) {
				char *why = xasprintf("%s (message expired "
				    "after %llds in the queue)", res[i].reply,
				    (long long)(now - m->arrival));
				sched_rcpt_set_reply(r, why, remote);
				free(why);
				s->stats.expired++;
			}
			r->state = SPOOL_RCPT_FAILED;
			r->dsn_due = 1;
			failed[nf++] = ri;
			s->stats.failed++;
		} else {
			r->state = SPOOL_RCPT_DEFERRED;
			r->next_retry = now + sched_backoff(s, r->attempts);
			if (r->next_retry > next)
				next = r->next_retry;
			s->stats.deferred++;
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
		r->job = NULL;
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
		TAILQ_REMOVE(&s->age, m, age);
		m->expired = 1;
		TAILQ_INSERT_TAIL(&s->expired, m, age);
		m->queued = 2;
		log_ev(LOG_INFO, MSG_IDS(m, -1), "expired", "lifetime",
		    s->conf->delivery_queue_lifetime >= 86400 ? "days" :
		    "short", NULL);
		/* active jobs see m->expired when their outcome comes */
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
	while ((m = TAILQ_FIRST(&s->age)) != NULL) {
		TAILQ_REMOVE(&s->age, m, age);
		sched_msg_free(m);
	}
	while ((m = TAILQ_FIRST(&s->expired)) != NULL) {
		TAILQ_REMOVE(&s->expired, m, age);
		sched_msg_free(m);
	}
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
