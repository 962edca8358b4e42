/* SPDX-License-Identifier: MIT */
/*
 * sched.h: the delivery scheduler: one queue per destination, retry timers,
 * expiry, concurrency and throttling, outcomes and bounces.
 *
 * A message enters with sched_msg_new() (a copy of its envelope, made before
 * the spool commit) and sched_msg_commit() once the spool said durable; or
 * from recovery with sched_recover(). From then on the scheduler owns its
 * life: it delivers, records each recipient's outcome in the spool, queues
 * the DSNs, and deletes the message from the spool once every recipient is
 * final (DESIGN.md promise 3).
 *
 * Threads: the event loop thread.
 */
#ifndef SL_SCHED_H
#define SL_SCHED_H

#include <stdint.h>
#include <stdio.h>

struct event_base;
struct sl_conf;
struct spool;
struct spool_msg;
struct dns;
struct sched;
struct sched_msg;

struct sched *sched_new(struct event_base *base, const struct sl_conf *conf,
    struct spool *spool, struct dns *dns);
/*
 * Stop delivering: close every delivery connection now (what was in flight
 * is retried at the next start) and open no more. Spool answers may still
 * arrive afterwards (spool_close) and are recorded.
 */
void sched_stop(struct sched *s);
/* Free everything in memory (after sched_stop and spool_close). */
void sched_free(struct sched *s);
/* Use a new configuration from now on (reload); conf is borrowed. */
void sched_set_conf(struct sched *s, const struct sl_conf *conf);

/* A copy of what delivery needs of msg (borrowed; msg is not kept). */
struct sched_msg *sched_msg_new(struct sched *s, const struct spool_msg *msg);
/* msg is durable: schedule it. */
void sched_msg_commit(struct sched *s, struct sched_msg *m);
/* msg was not stored: forget it. */
void sched_msg_abort(struct sched *s, struct sched_msg *m);
/* A message found in the spool at start; takes msg. */
void sched_recover(void *s, struct spool_msg *msg);

struct sched_stats {
	uint64_t messages;	/* in the queue now */
	uint64_t recipients;	/* not final, in the queue now */
	uint64_t destinations;
	uint64_t connections;	/* delivery connections open now */
	uint64_t delivered, deferred, bounced, expired, failed;
	uint64_t dsn_sent;
};
void sched_stats_get(const struct sched *s, struct sched_stats *out);

#endif
