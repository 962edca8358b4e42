/* SPDX-License-Identifier: MIT */
/*
 * sched_int.h: the scheduler's own structures, shared by sched.c (messages,
 * outcomes, timers) and destq.c (destinations, connections, dispatch).
 *
 * Memory per queued recipient: one struct sched_rcpt (its address and last
 * reply as strings) and a share of a job; bodies stay in the spool.
 */
#ifndef SL_SCHED_INT_H
#define SL_SCHED_INT_H

#include <sys/queue.h>

#include "conf/conf.h"
#include "dns/dns.h"
#include "sched/sched.h"
#include "smtpc/smtpc.h"
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
	uint32_t attempts;
	int64_t next_retry;
	uint8_t state;		/* enum spool_rcpt_state */
	uint8_t notify;
	uint8_t dsn_due;	/* final, and its DSN is not queued yet */
	uint8_t has_orcpt;
	struct sched_job *job;
};

/* The ORCPT of r, or NULL. */
static inline const char *
sched_rcpt_orcpt(const struct sched_rcpt *r)
{
	return r->has_orcpt ? r->addr + __builtin_strlen(r->addr) + 1 : NULL;
}

struct sched_msg {
	TAILQ_ENTRY(sched_msg) age;	/* the expiry queue, by arrival */
	struct sched_msg *hnext;	/* the MID index */
	struct sched *s;
	uint64_t mid;
	int64_t arrival;
	const char *sender;		/* these strings live in the block */
	const char *envid;
	uint8_t ret, flags;
	uint64_t size;
	uint32_t nrcpt, npending;	/* recipients, those not final */
	struct sched_job *jobs;		/* jobs of this message (job->next) */
	int inflight;			/* spool requests not yet answered */
	unsigned expired : 1;
	unsigned returned : 1;		/* bounced by the operator */
	unsigned warned : 1;		/* a delay notice went out */
	unsigned deleted : 1;		/* deleted by the operator */
	unsigned deleting : 1;
	unsigned queued : 2;		/* 1: in s->age, 2: in s->expired */
	struct sched_rcpt rcpts[];	/* nrcpt of them, then the strings:
					   one allocation per message */
};

enum sched_job_state {
	SCHED_JOB_READY,	/* in its destination's ready list */
	SCHED_JOB_DEFERRED,	/* in the retry heap */
	SCHED_JOB_ACTIVE,	/* on a connection */
	SCHED_JOB_HELD,		/* held by the operator */
};

/* The recipients of one message at one destination: one transaction. */
struct sched_job {
	struct sl_heap_item timer;	/* key: next retry, unix seconds */
	TAILQ_ENTRY(sched_job) entry;	/* the destination's ready list */
	struct sched_job *next;		/* the message's jobs */
	struct sched_msg *msg;
	struct sched_dest *dest;
	int state;
	int hold;			/* held while active: hold after it */
	uint32_t nrcpt;
	uint32_t ridx[];		/* indices into msg->rcpts */
};

TAILQ_HEAD(sched_job_list, sched_job);

/* Connection limits and throttle state, shared by destinations whose
 * next hops are the same hosts (limits protect the receiver). */
struct sched_site {
	struct sched_site *hnext;
	char *key;
	int nconn;
	int limit;		/* current: lowered on 421, raised on success */
	int64_t paused_until;	/* unix ms */
	int refs;
};

struct sched_conn;
TAILQ_HEAD(sched_conn_list, sched_conn);

struct sched_dest {
	struct sched_dest *hnext;	/* hash chain */
	TAILQ_ENTRY(sched_dest) starved;	/* waiting for total capacity */
	int in_starved;
	char *name;			/* domain, or route value */
	char *route;			/* static route hosts, or NULL: MX */
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
	struct event *wake;
	struct sched *wake_s;		/* the scheduler, for callbacks */
	const char *blocked;		/* last reason logged for not sending */
};

struct sched_conn {
	TAILQ_ENTRY(sched_conn) entry;
	struct sched *s;
	struct sched_dest *dest;
	struct smtpc *c;
	uint64_t dcid;
	int nmsgs;
	int64_t started;		/* unix ms */
	int connecting;			/* not greeted yet */
	int ready;			/* greeted and not quitting */
	struct sched_job *job;		/* in flight */
	struct smtpc_msg m;
	struct smtpc_rcpt *rcpts;
	struct evbuffer *body;
	struct event *idle_ev;
};

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
	TAILQ_HEAD(, sched_msg) age;	/* every queued message, by arrival */
	TAILQ_HEAD(, sched_msg) expired; /* expired, finishing */
	TAILQ_HEAD(, sched_dest) starved;
	struct sl_heap retry;		/* deferred jobs */
	struct event *retry_ev;
	int64_t retry_at;		/* when retry_ev fires, unix s; 0 none */
	struct event *expire_ev;
	uint64_t next_dcid;
	int nconn;			/* all delivery connections */
	int stopping;
	struct sockaddr_storage *self;	/* this machine's addresses (loop.c) */
	size_t nself;
	int64_t self_expire;		/* unix ms */
	struct sched_stats stats;
	struct sched_iter *iters;	/* operators' walks (manage.c) */
};

/* sched.c */
struct sched_msg *sched_msg_find(struct sched *s, uint64_t mid);
void sched_msg_gc(struct sched *s, struct sched_msg *m);
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
/* loop.c */
/* 1 if addr (with its port) is one of our [server] listen sockets. */
int sched_addr_is_self(struct sched *s, const struct sockaddr_storage *addr);
int sched_hops_trim_self(struct sched *s, const char *dest,
    struct dns_result *r, char *why, size_t len);

/* destq.c */
struct sched_dest *sched_dest_get(struct sched *s, const char *domain);
void sched_dest_run(struct sched *s, struct sched_dest *d);
void sched_dest_free_all(struct sched *s);
void sched_run_starved(struct sched *s);

#endif
