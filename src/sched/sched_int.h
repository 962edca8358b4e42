/* SPDX-License-Identifier: MIT */
/*
 * sched_int.h: the scheduler's own structures, shared by sched.c (messages,
 * outcomes, timers) and destq.c (destinations, connections, dispatch).
 *
 * Memory per queued recipient (issue 9 item 24: at most 300 bytes with
 * one recipient per message, bench/queue-scale): a share of one block per
 * message (struct sched_msg, its struct sched_rcpt array and their
 * strings: sender, envid, addresses, ORCPTs), a share of a job, an entry
 * of the retry heap and of the MID index. Last replies and remote hosts
 * are interned. Nothing in these is derivable from the rest: the sender
 * and the envid are found in the block, the job of a recipient from its
 * message's jobs, the scheduler from the callback's request. Bodies stay
 * in the spool.
 */
#ifndef SL_SCHED_INT_H
#define SL_SCHED_INT_H

#include <sys/queue.h>

#include "bounce/bounce.h"
#include "conf/conf.h"
#include "dns/dns.h"
#include "sched/sched.h"
#include "smtpc/smtpc.h"
#include "shaping/shaping.h"
#include "spool/spool.h"
#include "util/heap.h"

struct sched_job;
struct sched_dest;

struct sched_rcpt {
	const char *addr;	/* in the message's block; ORCPT follows it
				   when has_orcpt (sched_rcpt_orcpt) */
	const char *last_reply;	/* interned (util/intern.h) */
	const char *remote;	/* the host that gave last_reply; interned */
	uint32_t rid;
	uint32_t next_retry;	/* unix seconds (to 2106) */
	uint16_t attempts;	/* stops at 65535 */
	uint8_t state;		/* enum spool_rcpt_state; FAILED: its DSN
				   is due, BOUNCED: queued or none due */
	uint8_t notify : 4;	/* SPOOL_NOTIFY_* */
	uint8_t has_orcpt : 1;
};

/* 1 if r has its outcome. */
static inline int
sched_rcpt_final(const struct sched_rcpt *r)
{
	return r->state == SPOOL_RCPT_DELIVERED ||
	    r->state == SPOOL_RCPT_FAILED || r->state == SPOOL_RCPT_BOUNCED;
}

/* The ORCPT of r, or NULL. */
static inline const char *
sched_rcpt_orcpt(const struct sched_rcpt *r)
{
	return r->has_orcpt ? r->addr + __builtin_strlen(r->addr) + 1 : NULL;
}

/*
 * The life of a message (sched.c, sched_msg_enter() is the only writer of
 * m->state and checks each move):
 *
 *   NEW -(spool commit: sched_msg_commit)-> QUEUED
 *   NEW -(not stored: sched_msg_abort)-> DONE
 *   QUEUED -(lifetime over: sched_expire_fire)-> EXPIRED
 *   QUEUED|EXPIRED -(operator's bounce: sched_bounce)-> RETURNED
 *   QUEUED|EXPIRED|RETURNED -(every recipient final, their states and
 *       DSNs in the spool: sched_msg_maybe_done)-> DELETING
 *   QUEUED|EXPIRED|RETURNED -(operator's delete: sched_delete)-> REMOVED
 *   DELETING|REMOVED -(the spool's answer to the delete)-> DONE
 *
 * DONE is terminal and the only state a message is freed in, by
 * sched_msg_gc() once no job and no spool request refer to it
 * (m->inflight). Lists: QUEUED in s->age (arrival order: the expiry
 * timer looks at the head), EXPIRED in s->expired, RETURNED in s->age
 * until its lifetime is over, then in s->expired (m->in_expired), the
 * rest in s->leaving until freed. A queued message moves between the
 * two lists only from the head of s->age to the tail of s->expired, and
 * the operator's walks (manage.c) are told when one leaves them
 * (sched_iters_unlink).
 */
enum sched_msg_state {
	SCHED_MSG_NEW,		/* made, waiting for the spool's commit */
	SCHED_MSG_QUEUED,	/* being delivered */
	SCHED_MSG_EXPIRED,	/* lifetime over: pending recipients fail as
				   their tries end */
	SCHED_MSG_RETURNED,	/* bounced by the operator: the same */
	SCHED_MSG_DELETING,	/* finished: our spool delete in flight */
	SCHED_MSG_REMOVED,	/* deleted by the operator: outcomes ignored */
	SCHED_MSG_DONE,		/* gone from the spool (or never there) */
};

struct sched_msg {
	TAILQ_ENTRY(sched_msg) age;	/* the list of its state (above) */
	struct sched_msg *hnext;	/* the MID index */
	uint64_t mid;
	struct sched_job *jobs;		/* jobs of this message (job->next) */
	uint32_t arrival;		/* unix seconds (to 2106) */
	uint32_t size;			/* max_message_size is below 1 GB */
	uint32_t nrcpt, npending;	/* recipients, those not final */
	uint32_t inflight;		/* spool requests not yet answered */
	uint8_t ret, flags;
	uint8_t state;			/* enum sched_msg_state */
	unsigned warned : 1;		/* a delay notice went out */
	unsigned listed : 1;		/* indexed and on a list */
	unsigned in_expired : 1;	/* queued, in s->expired */
	unsigned dsn_wait : 1;		/* in s->dsn_wait (dsn.c) */
	unsigned has_envid : 1;
	unsigned failures_kept : 1;	/* hooks.failed has them */
	unsigned body_missing : 2;	/* reads that found no body (body.c
					   sched_body_missing) */
	struct sched_rcpt rcpts[];	/* nrcpt of them, then the strings
					   (sender, envid if any, each
					   address and its ORCPT): one
					   allocation per message */
};

/* The sender ("" for <>): the first string after the recipients. */
static inline const char *
sched_msg_sender(const struct sched_msg *m)
{
	return (const char *)&m->rcpts[m->nrcpt];
}

/* The ENVID, or NULL: after the sender. */
static inline const char *
sched_msg_envid(const struct sched_msg *m)
{
	const char *s = sched_msg_sender(m);

	return m->has_envid ? s + __builtin_strlen(s) + 1 : NULL;
}

/* 1 while the message is in the queue (listed, selectable, deletable). */
static inline int
sched_msg_queued(const struct sched_msg *m)
{
	return m->state == SCHED_MSG_QUEUED || m->state == SCHED_MSG_EXPIRED ||
	    m->state == SCHED_MSG_RETURNED;
}

enum sched_job_state {
	SCHED_JOB_READY,	/* in its destination's ready list */
	SCHED_JOB_DEFERRED,	/* in the retry heap */
	SCHED_JOB_ACTIVE,	/* on a connection */
	SCHED_JOB_HELD,		/* held by the operator */
};

/* The recipients of one message at one destination: one transaction. */
struct sched_job {
	union {				/* a job is in one of the two */
		struct sl_heap_item timer; /* DEFERRED: the retry heap; key:
					   next retry, unix seconds */
		TAILQ_ENTRY(sched_job) entry; /* READY: its ready list */
	};
	TAILQ_ENTRY(sched_job) all;	/* its destination's jobs, by MID */
	struct sched_job *next;		/* the message's jobs */
	struct sched_msg *msg;
	struct sched_dest *dest;
	uint8_t state;			/* enum sched_job_state */
	uint8_t hold;			/* held while active: hold after it */
	uint32_t nrcpt;
	uint32_t ridx[];		/* indices into msg->rcpts, ascending */
};

TAILQ_HEAD(sched_job_list, sched_job);

struct sched_conn;
TAILQ_HEAD(sched_conn_list, sched_conn);
TAILQ_HEAD(sched_dest_list, sched_dest);

/*
 * Connection limits and throttle state, shared by destinations whose
 * next hops are the same hosts (limits protect the receiver). The key is
 * the sorted set of host names, so the shuffle of equal MX preferences
 * never splits a site. A connection counts against the site it was opened
 * for until it closes, wherever its destination's hops have gone since.
 */
struct sched_site {
	struct sched_site *hnext;
	char *key;
	int nconn;
	int limit;		/* current: lowered on 421, raised on success */
	int64_t paused_until;	/* unix ms */
	int refs;		/* destinations and connections on it */
	struct sched_dest_list waiting;	/* held back by its limit */
	struct sched_site *idle_next;	/* in s->idle_sites */
	int in_idle;
};

/*
 * How a destination's mail goes: SMTP to MX hosts or a route (a domain, a
 * [routes] value), or to a mailbox backend ([backends] smtp:); LMTP to a
 * backend or [local] lmtp; or into this node's Maildirs.
 */
enum sched_dest_kind {
	SCHED_DEST_SMTP = 0,
	SCHED_DEST_LMTP,
	SCHED_DEST_MAILDIR,
};

struct sched_dest {
	struct sched_dest *hnext;	/* hash chain */
	TAILQ_ENTRY(sched_dest) starved;	/* waiting for total capacity */
	int in_starved;
	TAILQ_ENTRY(sched_dest) site_wait;	/* in site->waiting */
	struct sched_site *waits_on;	/* that site, or NULL */
	TAILQ_ENTRY(sched_dest) kick;	/* in s->kick */
	int in_kick;
	TAILQ_ENTRY(sched_dest) idle;	/* in s->idle: may be freed */
	int in_idle;
	char *name;			/* domain, route value, "backend:NAME",
					   "local:lmtp" or "local:maildir" */
	char *route;			/* static route hosts ("[addr]:port",
					   "unix:/path"), or NULL: MX */
	uint8_t kind;			/* enum sched_dest_kind */
	struct sched_job_list ready;
	uint64_t nready;		/* jobs in ready */
	uint64_t njobs;			/* all jobs of this destination */
	struct sched_conn_list conns;
	int nconn, nconnecting;
	struct sched_site *site;
	struct dns_result *hops;
	int64_t hops_expire;		/* unix ms */
	struct dns_query *query;
	int64_t paused_until;		/* unix ms: DNS failure or all down */
	struct sched_job_list all;	/* every job, by MID (destq.c) */
	struct sched_dest_reply *replies; /* SCHED_DEST_REPLIES, newest
					   first; NULL until the first */
	struct event *wake;
	struct sched *wake_s;		/* the scheduler, for callbacks */
	const char *blocked;		/* last reason logged for not sending */
	/* traffic shaping (shape.c): NULL without a shaping file */
	struct shaping_site *shape;	/* its site, one reference */
	struct shaping_wait shape_wait;	/* waiting to open a connection */
	char *shape_why;		/* blocked's text when shaping's */
	int ntoken_wait;		/* connections waiting for a token */
};

/* One shared copy of a message's body (body.c). */
struct sched_body;

/* Someone waiting for a body being read: cb(arg, body) once it is in
 * (body->buf NULL: it could not be read); the waiter owns a reference. */
struct sched_body_wait {
	struct sched_body_wait *next;
	struct sched_body *body;	/* waited for, or NULL */
	void (*cb)(void *arg, struct sched_body *body);
	void *arg;
};

/* The rid of a whole message's body (not one batch recipient's). */
#define SCHED_BODY_WHOLE UINT32_MAX

struct sched_body {
	struct sched_body *hnext;	/* s->btab */
	struct sched *s;
	uint64_t mid;
	uint32_t rid;			/* a batch recipient's own message
					   (hooks.batch_body), or
					   SCHED_BODY_WHOLE */
	struct evbuffer *buf;		/* read-only once in; NULL before */
	int refs;
	unsigned loading : 1;
	unsigned hashed : 1;
	unsigned missing : 1;		/* not read: the spool has none
					   (SPOOL_ERR_NOTFOUND), not an
					   I/O error */
	struct sched_body_wait *waiters;
};

/*
 * A delivery connection (destq.c; sched_conn_enter() is the only writer
 * of c->state):
 *   CONNECTING -(smtpc READY)-> IDLE -(a job: sched_conn_send)-> LOADING
 *   LOADING -(the body is in: smtpc_send)-> BUSY
 *   LOADING -(the body could not be read: job deferred)-> IDLE
 *   BUSY -(outcome, then smtpc READY)-> IDLE
 *   IDLE -(idle timeout, message or age limit, pause: smtpc_quit)->
 *     QUITTING
 * and from any state -(smtpc CLOSED or FAILED, or sched_stop)-> freed by
 * sched_conn_free (a job still LOADING goes back to the ready list).
 */
enum sched_conn_state {
	SCHED_CONN_CONNECTING,	/* connecting and greeting */
	SCHED_CONN_IDLE,	/* ready for a job; the idle timer runs */
	SCHED_CONN_LOADING,	/* a job taken, its body being read */
	SCHED_CONN_BUSY,	/* a message in flight */
	SCHED_CONN_QUITTING,	/* QUIT said: no more jobs */
};

/* One of a destination's recent replies (both strings interned). */
struct sched_dest_reply {
	const char *reply;
	const char *host;
	int64_t at;			/* unix s */
	uint64_t count;
};

struct sched_conn {
	TAILQ_ENTRY(sched_conn) entry;
	struct sched *s;
	struct sched_dest *dest;
	struct sched_site *site;	/* counted against until freed */
	struct smtpc *c;
	uint64_t dcid;
	int state;			/* enum sched_conn_state */
	int nmsgs;
	int64_t started;		/* unix ms */
	struct sched_job *job;		/* LOADING or BUSY */
	struct smtpc_msg m;
	struct smtpc_rcpt *rcpts;
	struct sched_body *body;	/* held while LOADING or BUSY */
	struct sched_body_wait wait;
	struct event *idle_ev;
	int maildir;			/* no smtpc: jobs go to maildir.c */
	struct shaping_path *path;	/* its source -> site pair, or NULL */
	struct shaping_wait shape_wait;	/* waiting for a message token */
	unsigned rule_matched : 1;	/* a reply rule answered a reply */
};

TAILQ_HEAD(sched_msg_list, sched_msg);

struct sched {
	struct event_base *base;
	const struct sl_conf *conf;
	struct spool *spool;
	struct dns *dns;
	struct sched_msg **mtab;	/* MID index; grows with the queue */
	size_t mtab_size, nindexed;
	struct sched_dest **dtab;
	size_t dtab_size, ndest;
	struct sched_site **stab;
	size_t stab_size, nsite;
	struct sched_msg_list age;	/* QUEUED messages, by arrival */
	struct sched_msg_list expired;	/* EXPIRED and RETURNED */
	struct sched_msg_list leaving;	/* DELETING, REMOVED, DONE */
	struct sched_dest_list starved;
	struct sched_dest_list kick;	/* to run once the loop is back */
	struct event *kick_ev;
	struct sched_dest_list idle;	/* no job, no connection: to free */
	struct sched_site *idle_sites;	/* refs came to 0: to free */
	struct event *gc_ev;
	struct sl_heap retry;		/* deferred jobs */
	struct event *retry_ev;
	int64_t retry_at;		/* when retry_ev fires, unix s; 0 none */
	struct event *expire_ev;
	uint64_t next_dcid;
	int nconn;			/* all delivery connections */
	int stopping;
	/* messages whose failure DSN the spool refused, waiting for
	 * dsn_retry_ev; each counts as a request in flight (dsn.c) */
	struct sched_msg **dsn_wait;
	size_t ndsn_wait, dsn_wait_cap;
	struct event *dsn_retry_ev;
	int64_t dsn_backoff_ms;		/* the next wait; 0: the first */
	struct sched_body **btab;	/* bodies read or being read (body.c) */
	size_t btab_size, nbody;
	struct local *local;		/* local recipients (deliver/local.c) */
	struct maildir *maildir;	/* the Maildir agent, or NULL */
	struct sockaddr_storage *self;	/* this machine's addresses (loop.c) */
	size_t nself;
	int64_t self_expire;		/* unix ms */
	struct sched_stats stats;
	struct sched_iter *iters;	/* operators' walks (manage.c) */
	struct sched_hooks hooks;	/* bulk injection, events, failure
					   queue, archive (sched.h) */
	struct shaping *shaping;	/* or NULL: no shaping file */
};

/* sched.c */
struct sched_msg *sched_msg_find(struct sched *s, uint64_t mid);
/* The job recipient i of m is in, or NULL (final). */
struct sched_job *sched_rcpt_job(const struct sched_msg *m, uint32_t i);
void sched_msg_enter(struct sched *s, struct sched_msg *m,
    enum sched_msg_state st);
void sched_msg_gc(struct sched *s, struct sched_msg *m);
void sched_msg_maybe_done(struct sched *s, struct sched_msg *m);
void sched_job_unlink(struct sched *s, struct sched_job *job);
void sched_record(struct sched *s, struct sched_msg *m, const uint32_t *idx,
    size_t n);
/* peer_dsn: the receiver took the DSN parameters on, and with them the
 * duty to send success notices (RFC 3461 5.2.2). */
void sched_job_outcome(struct sched *s, struct sched_job *job,
    struct smtpc_rcpt *rcpts, size_t n, const char *remote, int peer_dsn);
void sched_job_defer_all(struct sched *s, struct sched_job *job, int code,
    const char *reply, const char *remote);
void sched_job_fail_all(struct sched *s, struct sched_job *job,
    const char *reply);
void sched_job_ready(struct sched *s, struct sched_job *job);
int64_t sched_now_ms(void);

/* manage.c: m leaves the queue's lists; walks standing on it step on. */
void sched_iters_unlink(struct sched *s, struct sched_msg *m);
/* body.c */
/*
 * The shared body of mid, one more reference (sched_body_put). If it is
 * being read (body->loading), w is called once it is in, with body->buf
 * NULL if it could not be read; else body->buf is there now.
 */
struct sched_body *sched_body_get(struct sched *s, uint64_t mid,
    struct sched_body_wait *w);
/* The same for recipient rid of a batch (SPOOL_F_BATCH): its own message,
 * built by hooks.batch_body off the loop. */
struct sched_body *sched_body_get_rcpt(struct sched *s, uint64_t mid,
    uint32_t rid, const char *addr, struct sched_body_wait *w);
/* Stop waiting (w->body NULL: not waiting) and put its reference. */
void sched_body_cancel(struct sched *s, struct sched_body_wait *w);
void sched_body_put(struct sched *s, struct sched_body *b);
void sched_body_free_all(struct sched *s);
/*
 * The spool has no body for job's message (b->missing): the job is
 * deferred, or after SCHED_BODY_MISSING_TRIES such reads the message's
 * recipients fail (body.c says how). Takes the job from the connection.
 */
#define SCHED_BODY_MISSING_TRIES 3
void sched_body_missing(struct sched *s, struct sched_job *job);

/* loop.c */
/* 1 if addr (with its port) is one of our [server] listen sockets. */
int sched_addr_is_self(struct sched *s, const struct sockaddr_storage *addr);
int sched_hops_trim_self(struct sched *s, const char *dest,
    struct dns_result *r, char *why, size_t len);

/* dsn.c */
/* Queue one DSN about the recipients idx[0..n) of m (none for bounces, for
 * mail from <>, or for recipients that asked for none). */
void sched_dsn(struct sched *s, struct sched_msg *m,
    enum bounce_action action, const uint32_t *idx, size_t n);
/* Queue the failure DSNs still due (after one that could not be queued). */
void sched_dsn_pending(struct sched *s, struct sched_msg *m);
/* Free what dsn.c keeps in s (at exit). */
void sched_dsn_free(struct sched *s);

/* Keep the first n recipients in job (READY); the rest become a new job,
 * next in its destination's ready list. */
void sched_job_split(struct sched *s, struct sched_job *job, uint32_t n);

/* shape.c: the scheduler's side of traffic shaping */
/* d's site, from its name and next hops (after each resolution). */
void sched_shape_attach(struct sched *s, struct sched_dest *d,
    const char *key);
void sched_shape_detach(struct sched *s, struct sched_dest *d);
/* 0, or the unix ms d's site is suspended until: d waits (its reason set;
 * woken early by a resume). */
int64_t sched_shape_suspended(struct sched *s, struct sched_dest *d);
/* A connection may open: 1 with *path (NULL: no shaping), or 0 (d waits,
 * its reason set). */
int sched_shape_open(struct sched *s, struct sched_dest *d,
    struct shaping_path **path);
/* The idle connection c may take a job (a token is due): 1, or 0 (c
 * waits; woken through sched_conn_resume). */
int sched_shape_due(struct sched_conn *c);
/* c's job is loaded: its message may go now (the token taken), 1; or 0
 * (c waits, LOADING; woken through sched_conn_resume). */
int sched_shape_send(struct sched_conn *c);
void sched_shape_conn_gone(struct sched_conn *c);
/* The limits of c: messages per connection, recipients per transaction. */
int64_t sched_shape_mpc(const struct sched_conn *c);
uint32_t sched_shape_rpt(const struct sched *s, const struct sched_dest *d);
/* A recipient's reply, as the reply rules see it: the code to record
 * (5xx for bounce) and *retry_s (retry_in), the reply rewritten if so. */
int sched_shape_verdict(struct sched *s, struct sched_dest *d,
    struct smtpc_rcpt *res, int64_t *retry_s);
/* smtpc's reply hook (c is the sched_conn). */
void sched_shape_reply(void *arg, struct smtpc *sc, const char *reply);
/* d is blocked for a reason shaping gave (a copy is kept). */
void sched_dest_blocked_text(struct sched_dest *d, const char *why);
void sched_dest_wake_at(struct sched *s, struct sched_dest *d, int64_t at_ms);
/* A connection woken by shaping: an idle one takes its next job (or
 * rests, or goes), a loading one sends its message (destq.c). */
void sched_conn_resume(struct sched_conn *c);

/* destq.c */
/* The destination of a recipient: its backend, this node's agent, or
 * the route or MX of its domain. */
struct sched_dest *sched_dest_of(struct sched *s, const char *addr);
void sched_dest_kick_later(struct sched *s, struct sched_dest *d);
void sched_dest_run(struct sched *s, struct sched_dest *d);
void sched_dest_free_all(struct sched *s);
/* d may have no job and no connection left: free it (and its site) once
 * the loop is back, if it still has none. */
void sched_dest_maybe_idle(struct sched *s, struct sched_dest *d);
void sched_run_starved(struct sched *s);
/* A new job of d: into d's list of jobs, in MID order; after (a job of
 * the same message already there, or NULL) saves the search. */
void sched_dest_job_add(struct sched_dest *d, struct sched_job *job,
    struct sched_job *after);
/* A job leaves d's list. */
void sched_dest_job_del(struct sched_dest *d, struct sched_job *job);
/* A next hop's reply (interned) to one of d's recipients, for the
 * dashboard's recent replies. */
void sched_dest_note_reply(struct sched_dest *d, const char *reply,
    const char *host, int64_t now);

#endif
