/* SPDX-License-Identifier: MIT */
/*
 * spool.h: the durable store of messages, run on its own thread.
 *
 * Every write (insert, recipient update, delete) is queued to the spool
 * thread, which gathers all requests pending at the start of its turn into
 * one transaction and one sync (group commit), then hands each request's
 * outcome back to the event loop thread through the callback given.
 *
 * Invariants
 *  1. A spool_done_fn fires with SPOOL_OK only after the transaction that
 *     holds the request has committed and its sync has returned.
 *  2. A failed transaction leaves no part of any request in it.
 *  3. Callbacks run on the event loop thread that owns the event_base given
 *     to spool_open(), never on the spool thread.
 *
 * Threads: every function here is called from the event loop thread only.
 */
#ifndef SL_SPOOL_H
#define SL_SPOOL_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct evbuffer;
struct spool;

enum spool_status {
	SPOOL_OK = 0,
	SPOOL_ERR_NOSPACE,	/* the disk is full (ENOSPC, SQLITE_FULL) */
	SPOOL_ERR_IO,		/* any other storage failure */
	SPOOL_ERR_NOTFOUND,	/* no such message */
};

/* RFC 3461 NOTIFY bits; none set means the parameter was not given. */
enum {
	SPOOL_NOTIFY_NEVER = 1,
	SPOOL_NOTIFY_SUCCESS = 2,
	SPOOL_NOTIFY_FAILURE = 4,
	SPOOL_NOTIFY_DELAY = 8,
};

/* RFC 3461 RET */
enum { SPOOL_RET_NONE = 0, SPOOL_RET_FULL = 1, SPOOL_RET_HDRS = 2 };

/* Message flags */
enum {
	SPOOL_F_8BITMIME = 1,	/* BODY=8BITMIME */
	SPOOL_F_SMTPUTF8 = 2,	/* SMTPUTF8 given at MAIL */
	SPOOL_F_BINARYMIME = 4,	/* BODY=BINARYMIME (BDAT only) */
	SPOOL_F_BOUNCE = 8,	/* a DSN we generated: never bounce it */
	SPOOL_F_BATCH = 16,	/* an injected batch: the body is its template
				   (src/inject), each recipient gets its own
				   message built at delivery */
	SPOOL_F_WARNED = 32,	/* its delay notice is queued: set only with
				   the notice, in its transaction
				   (spool_insert_notice) */
};

enum spool_rcpt_state {
	SPOOL_RCPT_QUEUED = 0,	/* waiting for its first or next attempt */
	SPOOL_RCPT_DEFERRED,	/* failed temporarily, see next_retry */
	SPOOL_RCPT_HELD,	/* held by the operator */
	SPOOL_RCPT_DELIVERED,	/* final */
	SPOOL_RCPT_FAILED,	/* final; its bounce may not be queued yet */
	SPOOL_RCPT_BOUNCED,	/* final: failed, and its bounce is queued
				   (or none was due): never report it again */
};

struct spool_rcpt {
	uint32_t rid;		/* 0..n-1 in RCPT order */
	char *addr;		/* mailbox without <>; owned */
	char *orcpt;		/* ORCPT as given ("rfc822;a@b"), or NULL; owned */
	uint8_t notify;		/* SPOOL_NOTIFY_* bits */
	uint8_t state;		/* enum spool_rcpt_state */
	uint32_t attempts;
	int64_t next_retry;	/* unix seconds; 0 = now */
	char *last_reply;	/* last remote reply or reason, or NULL; owned */
	char *vars;		/* an injected recipient's template values
				   (compact JSON), or NULL; owned; written by
				   spool_insert, read by spool_rcpt_vars */
};

struct spool_msg {
	uint64_t mid;		/* from spool_mid_next() */
	int64_t arrival;	/* unix seconds */
	char *sender;		/* reverse path without <>, "" for <>; owned */
	char *envid;		/* ENVID or NULL; owned */
	uint8_t ret;		/* SPOOL_RET_* */
	uint8_t flags;		/* SPOOL_F_* */
	char *client_addr;	/* "192.0.2.1"; owned */
	char *helo;		/* as given by the client; owned */
	uint64_t size;		/* bytes of body as stored */
	size_t nrcpt;
	struct spool_rcpt *rcpts; /* owned array of nrcpt */
	struct evbuffer *body;	/* whole message as stored (Received: first);
				   owned; NULL in envelopes read back */
	char *idem_key;		/* an injection's Idempotency-Key, stored
				   with the message (same transaction) with
				   idem_answer; NULL: none. Both owned. */
	char *idem_answer;
};

/* Called on the event loop thread with the outcome of one request. */
typedef void spool_done_fn(void *arg, enum spool_status status);
/* Called once per message found at recovery; takes msg (body is NULL). */
typedef void spool_recover_fn(void *arg, struct spool_msg *msg);

/*
 * Open (creating if needed) the spool in dir and start its thread.
 * Returns NULL with a message in err on failure.
 */
struct spool *spool_open(const char *dir, struct event_base *base,
    char *err, size_t errlen);
/*
 * Finish every queued request, stop the thread, checkpoint and close.
 * The callbacks of requests still queued fire inside this call, on the
 * calling (event loop) thread, so the loop need not run again; a request
 * queued from such a callback fails with SPOOL_ERR_IO.
 */
void spool_close(struct spool *sp);

/* A new MID: unique, sortable by arrival, never reused across restarts. */
uint64_t spool_mid_next(struct spool *sp);
/* Format a MID as 16 upper-case hex digits into buf (>= 17 bytes). */
char *spool_mid_fmt(uint64_t mid, char *buf);
/* Parse a MID as printed; returns 0 on error. */
uint64_t spool_mid_parse(const char *s);

/* Store msg durably; takes msg (freed by the spool). */
void spool_insert(struct spool *sp, struct spool_msg *msg, spool_done_fn *cb,
    void *arg);
/*
 * Store dsn (takes it), a DSN about the recipients rids[0..n) of the
 * message orig, and in the same transaction mark those recipients
 * SPOOL_RCPT_BOUNCED: after a crash either both are there or neither, so
 * a recipient is never reported twice nor never.
 */
void spool_insert_dsn(struct spool *sp, struct spool_msg *dsn, uint64_t orig,
    const uint32_t *rids, size_t n, spool_done_fn *cb, void *arg);
/*
 * Store dsn (takes it), a notice about the message orig, and in the same
 * transaction set flag (SPOOL_F_WARNED: a delay notice) in orig's flags:
 * after a crash either both are there or neither, so a restart never
 * sends the notice twice nor never.
 */
void spool_insert_notice(struct spool *sp, struct spool_msg *dsn,
    uint64_t orig, uint8_t flag, spool_done_fn *cb, void *arg);
/* Store the state, attempts, next_retry and last_reply of n recipients of mid. */
void spool_update_rcpts(struct spool *sp, uint64_t mid,
    const struct spool_rcpt *rcpts, size_t n, spool_done_fn *cb, void *arg);
/* Remove a message and everything of it. */
void spool_delete(struct spool *sp, uint64_t mid, spool_done_fn *cb,
    void *arg);

/*
 * Read every stored envelope, in MID order, calling fn for each; returns the
 * count, or -1 on error. Call before any write is queued.
 */
long spool_recover(struct spool *sp, spool_recover_fn *fn, void *arg);
/*
 * Read a message's body into a new evbuffer (free with evbuffer_free), or
 * NULL, synchronously on the calling (event loop) thread: for the
 * operator's commands. Delivery reads with spool_body_read().
 */
struct evbuffer *spool_body_load(struct spool *sp, uint64_t mid);
/*
 * The body of mid, read on the spool's reader thread (a read never waits
 * for a commit, nor a commit for a read); cb runs on the loop thread with
 * a new evbuffer it owns, or NULL and a status (SPOOL_ERR_NOTFOUND, or
 * SPOOL_ERR_IO, also for reads still queued at spool_close).
 */
typedef void spool_body_fn(void *arg, struct evbuffer *body,
    enum spool_status status);
void spool_body_read(struct spool *sp, uint64_t mid, spool_body_fn *cb,
    void *arg);
/*
 * A read-only connection for one thread other than the event loop's (WAL
 * readers never wait for the writer): the injection's message builder
 * reads a batch's template and a recipient's vars with it. NULL with a
 * reason in err. Each function is used by that one thread only.
 */
struct spool_reader;
struct spool_reader *spool_reader_open(const char *dir, char *err,
    size_t errlen);
void spool_reader_close(struct spool_reader *r);
/* The body of mid (a new evbuffer), or NULL with a reason in err. */
struct evbuffer *spool_reader_body(struct spool_reader *r, uint64_t mid,
    char *err, size_t errlen);
/* Recipient rid's vars (a new string), or NULL when it has none. */
char *spool_reader_vars(struct spool_reader *r, uint64_t mid, uint32_t rid);
/* An injected recipient's vars (a new string, free()), or NULL. */
char *spool_rcpt_vars(struct spool *sp, uint64_t mid, uint32_t rid);
/*
 * The answer stored with Idempotency-Key key at or after since (unix s),
 * as a new string (free()), or NULL when there is none.
 */
char *spool_idem_get(struct spool *sp, const char *key, int64_t since);
/* Forget the idempotency keys stored before `before` (unix s). */
void spool_idem_expire(struct spool *sp, int64_t before, spool_done_fn *cb,
    void *arg);

void spool_msg_free(struct spool_msg *msg);

/* Counters for logs and metrics; read on the event loop thread. */
#define SPOOL_COMMIT_BUCKETS 10
#define SPOOL_BATCH_BUCKETS 10
/* Upper bounds (le) of the buckets: seconds, and requests per batch. */
extern const double spool_commit_bounds[SPOOL_COMMIT_BUCKETS];
extern const double spool_batch_bounds[SPOOL_BATCH_BUCKETS];
struct spool_stats {
	uint64_t commits;	/* transactions committed */
	uint64_t requests;	/* requests committed */
	uint64_t failures;	/* transactions that failed */
	uint64_t checkpoints;
	uint64_t max_batch;
	uint64_t body_reads;	/* spool_body_read()s done */
	double commit_ms_sum;	/* time in BEGIN..COMMIT, milliseconds */
	/* Histograms per committed batch (metrics): commit time in seconds
	 * and requests per batch; counts per bucket, the last one +Inf. */
	uint64_t commit_hist[SPOOL_COMMIT_BUCKETS + 1];
	uint64_t batch_hist[SPOOL_BATCH_BUCKETS + 1];
};
void spool_stats_get(struct spool *sp, struct spool_stats *out);

/*
 * A short human-readable reason for the last failure seen on the event loop
 * thread (a failed request, spool_recover, spool_body_load), for the caller
 * to log; "" if none yet. Valid until the next call into the spool.
 */
const char *spool_last_error(struct spool *sp);

/*
 * Test hook: make the next `count` transactions fail as if the disk returned
 * err (SPOOL_ERR_NOSPACE or SPOOL_ERR_IO). Used by unit tests.
 */
void spool_fault_inject(struct spool *sp, int count, enum spool_status err);

#endif
