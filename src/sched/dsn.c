/* SPDX-License-Identifier: MIT */
/*
 * dsn.c: the delivery status notifications a message's outcomes call for
 * (RFC 3461, RFC 3464): which recipients get one, what it says about each
 * (status, diagnostic, remote MTA), and queuing it in the spool as a new
 * message from <> to the original sender. The report itself is written
 * by src/bounce (bounce_build), once the original's body is in: it is
 * read off the loop thread and shared with the deliveries (body.c).
 *
 * Callers: sched.c (outcomes, the final check of a message) and manage.c.
 *
 * Invariants
 *  1. A bounce (SPOOL_F_BOUNCE) or a message from <> never causes a DSN
 *     (no loops of reports about reports); NOTIFY=NEVER, or a NOTIFY
 *     without FAILURE, means no failure report for that recipient.
 *  2. A failed recipient stays FAILED (its DSN due) until the DSN is in
 *     the spool, and becomes BOUNCED in the same transaction (in the spool
 *     too: spool_insert_dsn), so a restart never reports it again; the
 *     original is not deleted before (sched_msg_maybe_done waits).
 *  3. A DSN that cannot be queued (a full disk) leaves its recipients
 *     FAILED: the message waits in s->dsn_wait, held like a request in
 *     flight, and the DSN is tried again from one timer whose wait doubles
 *     from SCHED_DSN_RETRY_MIN_MS to SCHED_DSN_RETRY_MAX_MS while the
 *     spool keeps refusing (never in a loop), back to the start after a
 *     DSN is taken.
 *  4. A message gets one delay notice: m->warned is set when it is
 *     decided, and the notice's transaction records it in the spool
 *     (SPOOL_F_WARNED, spool_insert_notice), so a restart neither sends a
 *     second one nor skips it; a notice the spool refused clears m->warned
 *     for the next deferral to try again.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "bounce/bounce.h"
#include "log/log.h"
#include "sched/sched_int.h"
#include "util/util.h"

#define MSG_IDS(m) (&(struct log_ids){ 0, 0, (m)->mid, -1 })

#define SCHED_DSN_RETRY_MIN_MS 1000
#define SCHED_DSN_RETRY_MAX_MS 60000

static void sched_dsn_wait(struct sched *s, struct sched_msg *m);

/*
 * One DSN on its way: decided (sched_dsn), waiting for the original's
 * body (body.c: read off the loop thread, shared with the deliveries),
 * built (sched_dsn_build), then into the spool. What it reports about each
 * recipient is copied here when it is decided: a deferred recipient's
 * reply may change before the body is in.
 */
struct sched_dsn {
	struct sched *s;
	struct sched_msg *orig;		/* held: orig->inflight */
	struct sched_msg *dsn;
	enum bounce_action action;
	struct sched_body_wait wait;
	struct sched_body *body;
	struct bounce_rcpt *br;		/* n of them; strings below */
	char **strs;			/* the copies br points to */
	size_t nstrs;
	char (*status)[16];
	char *expiry;
	size_t n;
	uint32_t idx[];		/* its recipients in orig->rcpts */
};

static void
sched_dsn_q_free(struct sched_dsn *q)
{
	for (size_t i = 0; i < q->nstrs; i++)
		free(q->strs[i]);
	free(q->strs);
	free(q->br);
	free(q->status);
	free(q->expiry);
	free(q);
}

/* A copy of str kept by q (NULL stays NULL). */
static const char *
sched_dsn_keep(struct sched_dsn *q, const char *str)
{
	if (str == NULL)
		return NULL;
	q->strs[q->nstrs] = xstrdup(str);
	return q->strs[q->nstrs++];
}

static void
sched_dsn_stored(void *arg, enum spool_status st)
{
	struct sched_dsn *q = arg;
	struct sched_msg *m = q->orig;
	struct sched *s;
	char mid[17];

	m->inflight--;
	if (st == SPOOL_OK) {
		spool_mid_fmt(q->dsn->mid, mid);
		log_ev(LOG_INFO, MSG_IDS(m), q->action == BOUNCE_FAILED ?
		    "bounced" : q->action == BOUNCE_DELAYED ? "delay notice" :
		    "success notice", "dsn_mid", mid, NULL);
		q->s->stats.dsn_sent++;
		q->s->dsn_backoff_ms = 0;
		if (q->action == BOUNCE_FAILED)
			for (size_t i = 0; i < q->n; i++)
				m->rcpts[q->idx[i]].state = SPOOL_RCPT_BOUNCED;
		sched_msg_commit(q->s, q->dsn);
	} else {
		/* the recipients stay FAILED: the message stays, and the
		 * DSN is tried again from the timer */
		log_ev(LOG_WARNING, MSG_IDS(m), "DSN not queued",
		    "status", st == SPOOL_ERR_NOSPACE ? "no space" : "io error",
		    NULL);
		sched_msg_abort(q->s, q->dsn);
		if (q->action == BOUNCE_FAILED)
			sched_dsn_wait(q->s, m);
		/* invariant 4: not sent, not recorded; the next deferral
		 * past the threshold tries again */
		if (q->action == BOUNCE_DELAYED)
			m->warned = 0;
	}
	s = q->s;
	sched_dsn_q_free(q);
	sched_msg_maybe_done(s, m);
}

/*
 * The status a DSN gives a recipient (RFC 3463). A failure after nothing
 * but temporary replies is an expiry: 5.4.7, and a delay notice says
 * 4.4.7 ("delivery time expired"); the last reply stays the diagnostic.
 * Otherwise the reply's own enhanced code: "550 5.1.1 ..." -> "5.1.1",
 * or one made from its class.
 */
static const char *
sched_status_of(enum bounce_action action, const char *reply, char *buf,
    size_t size)
{
	int code = reply != NULL ? atoi(reply) : 0;

	if (action == BOUNCE_DELAYED)
		return "4.4.7";
	if (action == BOUNCE_FAILED && code < 500)
		return "5.4.7";
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

/* "delivery time expired after 5 days in the queue"; free(). */
static char *
sched_dsn_expiry_note(const struct sched_msg *m)
{
	long long age = sl_now_us() / 1000000 - m->arrival;
	const char *unit = "seconds";

	if (age >= 2 * 86400) {
		age /= 86400;
		unit = "days";
	} else if (age >= 2 * 3600) {
		age /= 3600;
		unit = "hours";
	} else if (age >= 120) {
		age /= 60;
		unit = "minutes";
	}
	return xasprintf("delivery time expired after %lld %s in the queue",
	    age, unit);
}

/* The original's body is in (or could not be read): build and queue. */
static void
sched_dsn_build(struct sched_dsn *q)
{
	struct sched *s = q->s;
	struct sched_msg *m = q->orig;
	struct bounce_info bi = { 0 };
	struct spool_msg *dm;

	if (!sched_msg_queued(m)) {
		/* deleted by the operator meanwhile: no report */
		sched_body_put(s, q->body);
		m->inflight--;
		sched_dsn_q_free(q);
		sched_msg_maybe_done(s, m);
		return;
	}
	bi.reporting_mta = s->conf->server_hostname;
	bi.mid = m->mid;
	bi.envid = sched_msg_envid(m);
	bi.sender = sched_msg_sender(m);
	bi.arrival = m->arrival;
	/* RFC 3461 4.3: RET=FULL is for failure reports only */
	bi.ret_full = q->action == BOUNCE_FAILED && m->ret == SPOOL_RET_FULL;
	bi.smtputf8 = (m->flags & SPOOL_F_SMTPUTF8) != 0;
	/* a body that could not be read: the report goes without it */
	bi.original = q->body->buf;
	bi.max_original = (size_t)s->conf->delivery_bounce_max_original;
	bi.nrcpt = q->n;
	bi.rcpts = q->br;

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
	dm->rcpts[0].addr = xstrdup(sched_msg_sender(m));
	sched_body_put(s, q->body);
	q->body = NULL;

	q->dsn = sched_msg_new(s, dm);
	if (q->action == BOUNCE_FAILED) {
		uint32_t *rids = xcalloc(q->n, sizeof(*rids));
		for (size_t i = 0; i < q->n; i++)
			rids[i] = m->rcpts[q->idx[i]].rid;
		spool_insert_dsn(s->spool, dm, m->mid, rids, q->n,
		    sched_dsn_stored, q);
		free(rids);
	} else if (q->action == BOUNCE_DELAYED) {
		spool_insert_notice(s->spool, dm, m->mid, SPOOL_F_WARNED,
		    sched_dsn_stored, q);
	} else {
		spool_insert(s->spool, dm, sched_dsn_stored, q);
	}
}

static void
sched_dsn_body_cb(void *arg, struct sched_body *b)
{
	sched_dsn_build(arg);
}

void
sched_dsn(struct sched *s, struct sched_msg *m, enum bounce_action action,
    const uint32_t *idx, size_t n)
{
	struct sched_dsn *q;
	size_t k = 0;

	if (n == 0)
		return;
	if ((m->flags & SPOOL_F_BOUNCE) || sched_msg_sender(m)[0] == '\0') {
		for (size_t i = 0; i < n && action == BOUNCE_FAILED; i++)
			m->rcpts[idx[i]].state = SPOOL_RCPT_BOUNCED;
		if (action == BOUNCE_FAILED)
			log_ev(LOG_INFO, MSG_IDS(m), "double bounce: "
			    "not returned", "sender", sched_msg_sender(m), NULL);
		return;
	}
	q = xcalloc(1, sizeof(*q) + n * sizeof(uint32_t));
	q->br = xcalloc(n, sizeof(*q->br));
	q->status = xcalloc(n, sizeof(*q->status));
	q->strs = xcalloc(2 * n, sizeof(*q->strs));
	for (size_t i = 0; i < n; i++) {
		struct sched_rcpt *r = &m->rcpts[idx[i]];
		struct bounce_rcpt *br = &q->br[k];
		if (action == BOUNCE_FAILED &&
		    (r->notify & SPOOL_NOTIFY_NEVER ||
		    (r->notify && !(r->notify & SPOOL_NOTIFY_FAILURE)))) {
			r->state = SPOOL_RCPT_BOUNCED;	/* none asked for */
			continue;
		}
		br->addr = r->addr;		/* the message's block: kept */
		br->orcpt = sched_rcpt_orcpt(r);
		br->action = action;
		br->status = sched_status_of(action, r->last_reply,
		    q->status[k], sizeof(q->status[k]));
		br->remote_mta = sched_dsn_keep(q, r->remote);
		br->diagnostic = sched_dsn_keep(q, r->last_reply);
		br->last_attempt = sl_now_us() / 1000000;
		if (strcmp(br->status, "5.4.7") == 0) {
			if (q->expiry == NULL)
				q->expiry = sched_dsn_expiry_note(m);
			br->note = q->expiry;
		}
		q->idx[k++] = idx[i];
	}
	if (k == 0) {
		sched_dsn_q_free(q);
		return;
	}
	q->s = s;
	q->orig = m;
	q->action = action;
	q->n = k;
	m->inflight++;
	q->wait.cb = sched_dsn_body_cb;
	q->wait.arg = q;
	q->body = sched_body_get(s, m->mid, &q->wait);
	if (!q->body->loading)
		sched_dsn_build(q);
}

/* The timer: every waiting message tries its DSNs again. */
static void
sched_dsn_retry_fire(evutil_socket_t fd, short what, void *arg)
{
	struct sched *s = arg;
	struct sched_msg **v = s->dsn_wait;
	size_t n = s->ndsn_wait;

	s->dsn_wait = NULL;
	s->ndsn_wait = s->dsn_wait_cap = 0;
	for (size_t i = 0; i < n; i++) {
		struct sched_msg *m = v[i];
		m->dsn_wait = 0;
		m->inflight--;
		/* with no DSN in flight, none is sent twice; else the last
		 * answer's sched_msg_maybe_done tries it */
		if (sched_msg_queued(m) && m->inflight == 0)
			sched_dsn_pending(s, m);
		sched_msg_maybe_done(s, m);
	}
	free(v);
}

/* m's failure DSN was refused: hold m and try again after the backoff. */
static void
sched_dsn_wait(struct sched *s, struct sched_msg *m)
{
	struct timeval tv;

	if (m->dsn_wait)
		return;
	if (s->ndsn_wait == s->dsn_wait_cap) {
		s->dsn_wait_cap = s->dsn_wait_cap ? s->dsn_wait_cap * 2 : 16;
		s->dsn_wait = xrealloc(s->dsn_wait, s->dsn_wait_cap *
		    sizeof(*s->dsn_wait));
	}
	s->dsn_wait[s->ndsn_wait++] = m;
	m->dsn_wait = 1;
	m->inflight++;
	if (s->dsn_retry_ev == NULL)
		s->dsn_retry_ev = evtimer_new(s->base, sched_dsn_retry_fire, s);
	if (evtimer_pending(s->dsn_retry_ev, NULL))
		return;
	s->dsn_backoff_ms = s->dsn_backoff_ms == 0 ? SCHED_DSN_RETRY_MIN_MS :
	    s->dsn_backoff_ms * 2;
	if (s->dsn_backoff_ms > SCHED_DSN_RETRY_MAX_MS)
		s->dsn_backoff_ms = SCHED_DSN_RETRY_MAX_MS;
	tv.tv_sec = s->dsn_backoff_ms / 1000;
	tv.tv_usec = (s->dsn_backoff_ms % 1000) * 1000;
	evtimer_add(s->dsn_retry_ev, &tv);
}

void
sched_dsn_free(struct sched *s)
{
	if (s->dsn_retry_ev != NULL)
		event_free(s->dsn_retry_ev);
	free(s->dsn_wait);
}

void
sched_dsn_pending(struct sched *s, struct sched_msg *m)
{
	uint32_t *idx = xcalloc(m->nrcpt, sizeof(*idx));
	size_t n = 0;

	for (uint32_t i = 0; i < m->nrcpt; i++)
		if (m->rcpts[i].state == SPOOL_RCPT_FAILED)
			idx[n++] = i;
	sched_dsn(s, m, BOUNCE_FAILED, idx, n);
	free(idx);
}
