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

#include "spool/spool.h"
#include "util/util.h"

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
/*
 * Local delivery: l says which recipients are local and which backend (or
 * this node's [local] agent) holds each mailbox; md writes Maildirs. Both
 * borrowed, NULL for none. With md, sluiced calls maildir_free() after
 * sched_stop() (it finishes the writes in flight and their outcomes are
 * recorded) and before spool_close().
 */
struct local;
struct maildir;
void sched_set_local(struct sched *s, struct local *l, struct maildir *md);
/* A new DCID, for delivery connections made outside the scheduler. */
uint64_t sched_dcid_next(struct sched *s);
/*
 * Shape delivery with sh (src/shaping; borrowed, freed after the
 * scheduler; NULL: none), or again after sh reloaded its file: every
 * destination finds its site anew.
 */
struct shaping;
void sched_set_shaping(struct sched *s, struct shaping *sh);

/* A copy of what delivery needs of msg (borrowed; msg is not kept). */
struct sched_msg *sched_msg_new(struct sched *s, const struct spool_msg *msg);
/* msg is durable: schedule it. */
void sched_msg_commit(struct sched *s, struct sched_msg *m);
/* msg was not stored: forget it. */
void sched_msg_abort(struct sched *s, struct sched_msg *m);
/* A message found in the spool at start; takes msg. */
void sched_recover(void *s, struct spool_msg *msg);

/* ---- hooks: injection, events, the failure queue, the archive ---- */

/* One recipient's outcome, for the events (valid during the call). */
struct sched_outcome {
	uint64_t mid;
	uint32_t rid;
	const char *addr;
	const char *sender;
	uint8_t flags;		/* SPOOL_F_* of the message */
	const char *event;	/* "delivered", "deferred", "bounced", "expired" */
	const char *reply;	/* the last reply, or NULL */
	const char *remote;	/* the host that gave it, or NULL */
	uint32_t attempts;
};

/* A final message's failed recipients (valid during the call). */
struct sched_failed {
	uint64_t mid;
	const char *sender;
	const char *envid;
	uint8_t flags;
	size_t n;
	const uint32_t *rids;
	const char *const *addrs;
	const char *const *replies;
};

/*
 * What other parts of sluiced do with delivery; every member optional.
 * Called on the loop thread; pointers are borrowed for the call.
 */
struct sched_hooks {
	/*
	 * Build the message for recipient rid of a batch (SPOOL_F_BATCH) off
	 * the loop thread, as spool_body_read() reads a body: cb(cbarg, buf,
	 * status) later on the loop with a new evbuffer it owns, or NULL (the
	 * delivery is deferred and tried again).
	 */
	void (*batch_body)(void *arg, uint64_t mid, uint32_t rid,
	    const char *addr, spool_body_fn *cb, void *cbarg);
	void (*outcome)(void *arg, const struct sched_outcome *o);
	/* A transaction got a 2xx for the n recipients named: body is what
	 * was sent (borrowed; copy what is kept). */
	void (*delivered)(void *arg, uint64_t mid, const char *sender,
	    uint8_t flags, const uint32_t *rids, const char *const *addrs,
	    size_t n, struct evbuffer *body);
	/*
	 * The message is final and some recipients failed: keep them, then
	 * call done(done_arg) once they are safe; the message leaves the
	 * spool only after that. Return -1 to go on at once instead.
	 */
	int (*failed)(void *arg, const struct sched_failed *f,
	    void (*done)(void *), void *done_arg);
	void *arg;
};
void sched_set_hooks(struct sched *s, const struct sched_hooks *h);

/* ---- queue management (the control socket's commands) ---- */

/* A read-only view of one queued message, valid during the callback. */
struct sched_rcpt_view {
	uint32_t rid;
	const char *addr;
	const char *state;	/* "queued", "deferred", "held", "active",
				   "delivered", "failed" */
	uint32_t attempts;
	int64_t next_retry;	/* unix seconds; 0 = now */
	const char *last_reply;	/* or NULL */
	const char *destination; /* its queue: domain or route; NULL if final */
	const char *waiting;	/* why a due recipient is not being tried
				   ("destination concurrency limit", ...),
				   or NULL */
};

struct sched_msg_view {
	uint64_t mid;
	int64_t arrival;	/* unix seconds */
	const char *sender;
	uint64_t size;
	int bounce;		/* a DSN we generated */
	size_t nrcpt;
	const struct sched_rcpt_view *rcpts;
};

/* Called per message; return non-zero to stop the walk. */
typedef int sched_view_fn(void *arg, const struct sched_msg_view *m);

/* Every queued message in arrival order (an operator's walk, not the
 * scheduler's: delivery decisions never do this). */
void sched_foreach(struct sched *s, sched_view_fn *fn, void *arg);

/*
 * A walk over the queued messages in arrival order that may be taken a few
 * at a time, across loop turns, while the queue changes: a message that
 * leaves the queue before the walk reaches it is skipped, none is visited
 * twice, and messages that arrive meanwhile come at the end. Each step is
 * O(1): this is how listings of a queue of any size stay responsive.
 */
struct sched_iter;
/* A walk from the oldest message. Free with sched_iter_free. */
struct sched_iter *sched_iter_new(struct sched *s);
/* A walk from message mid; NULL if it is not queued. */
struct sched_iter *sched_iter_at(struct sched *s, uint64_t mid);
/* Show the next message to fn and step past it: 1, or 0 at the end. */
int sched_iter_next(struct sched_iter *it, sched_view_fn *fn, void *arg);
/* The MID the walk shows next, or 0 at the end. */
uint64_t sched_iter_peek(const struct sched_iter *it);
void sched_iter_free(struct sched_iter *it);

/* A destination's view by name; 0, or -1 if no such destination. */
struct sched_dest_view;
int sched_dest_find(struct sched *s, const char *name,
    struct sched_dest_view *out);
/* One message; returns 0, or -1 if mid is not queued. */
int sched_view(struct sched *s, uint64_t mid, sched_view_fn *fn, void *arg);

/*
 * A message's body for the operator (queue show --body): the copy that
 * delivery shares, read on the spool's reader thread if it is not in
 * memory yet (body.c), never on the loop. cb(arg, body, why) runs once,
 * from the loop, never inside this call: body is read-only and stays
 * valid until sched_body_done(); NULL if it could not be read, with why
 * ("not in the spool", or the read's error). Returns the handle.
 */
struct sched_body_ref;
typedef void sched_body_fn(void *arg, const struct evbuffer *body,
    const char *why);
struct sched_body_ref *sched_body_fetch(struct sched *s, uint64_t mid,
    sched_body_fn *cb, void *arg);
/* Let go of it, whether cb ran or not (then it never will). */
void sched_body_done(struct sched *s, struct sched_body_ref *r);

/* Which recipients a command acts on: one message, a domain, or all. */
struct sched_sel {
	uint64_t mid;		/* non-zero: this message */
	const char *domain;	/* non-NULL: recipients whose domain (or
				   destination) is this */
	int all;		/* every queued message */
};

/*
 * Each returns the number of recipients it changed, or -1 when sel names a
 * MID that is not queued. Changes are recorded in the spool in the
 * background (group commit).
 *  flush:   deferred (and waiting) recipients become due now; a held
 *           destination's pause is lifted
 *  hold:    recipients are not tried until released (state "held", kept
 *           across restarts)
 *  release: held recipients become due now
 *  bounce:  pending recipients fail now ("5.0.0 returned by the
 *           operator") and the sender gets a DSN
 */
long sched_flush(struct sched *s, const struct sched_sel *sel);
long sched_hold(struct sched *s, const struct sched_sel *sel);
long sched_release(struct sched *s, const struct sched_sel *sel);
long sched_bounce(struct sched *s, const struct sched_sel *sel);
/*
 * Remove a message now: never delivered after this (a delivery in flight
 * finishes, but its outcome is ignored), gone from the spool when cb fires
 * with SPOOL_OK; SPOOL_ERR_NOTFOUND if mid is not queued.
 */
void sched_delete(struct sched *s, uint64_t mid,
    void (*cb)(void *arg, int status), void *arg);

/* A destination's queue, for `sluice queue summary` and metrics. */
struct sched_dest_view {
	const char *name;
	uint64_t jobs;		/* messages (jobs) waiting at it */
	uint64_t ready;		/* due now */
	int connections;
	int limit;		/* its site's current concurrency limit */
	const char *waiting;	/* why due jobs wait, or NULL */
	int64_t oldest;		/* arrival of its oldest message, unix s; 0:
				   none */
	int64_t paused_until;	/* unix s: held back after a DNS failure,
				   with every host down or by a shaping
				   rule's suspension; 0: not */
	int throttled;		/* its site lowered its limit or pauses after
				   a 421 */
	const char *last_reply;	/* the latest reply from (or failure to
				   reach) a next hop, or NULL */
	int64_t last_reply_at;	/* unix s */
	const char *site;	/* its shaping site, or NULL (no shaping) */
};
typedef int sched_dest_fn(void *arg, const struct sched_dest_view *d);
void sched_foreach_dest(struct sched *s, sched_dest_fn *fn, void *arg);

/* A destination's recent replies: the last SCHED_DEST_REPLIES different
 * ones (text and host), each with how often and when it was last seen. */
#define SCHED_DEST_REPLIES 8
struct sched_reply_view {
	const char *reply;
	const char *host;	/* or NULL */
	int64_t at;		/* unix s */
	uint64_t count;
};
/* Fill out with at most max of name's replies, newest first; returns how
 * many (0 for an unknown destination). Valid until the loop runs again. */
size_t sched_dest_replies(struct sched *s, const char *name,
    struct sched_reply_view *out, size_t max);
/*
 * The queued messages with recipients at destination name, in arrival
 * order, from the first after MID after (0: from the oldest), each shown
 * once to fn until it returns non-zero. The cost is that of the messages
 * shown (and, if after left the queue, of the destination's messages
 * before it), never of the whole queue. Returns -1 if name has no job.
 */
int sched_dest_messages(struct sched *s, const char *name, uint64_t after,
    sched_view_fn *fn, void *arg);

/* A histogram of end-to-end delivery latency (arrival to 2xx), seconds. */
#define SCHED_LAT_BUCKETS 12
extern const double sched_lat_bounds[SCHED_LAT_BUCKETS];

struct sched_stats {
	uint64_t messages;	/* in the queue now */
	uint64_t recipients;	/* not final, in the queue now */
	uint64_t destinations;
	uint64_t connections;	/* delivery connections open now */
	uint64_t delivered, deferred, expired;
	uint64_t failed;	/* recipients failed for good (bounced) */
	uint64_t dsn_sent;
	uint64_t bodies_missing; /* messages whose body the spool lost */
	uint64_t lat_count[SCHED_LAT_BUCKETS + 1];	/* last: +Inf */
	double lat_sum;
};
void sched_stats_get(const struct sched *s, struct sched_stats *out);

#endif
