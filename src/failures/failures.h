/* SPDX-License-Identifier: MIT */
/*
 * failures.h: the failure queue: recipients that failed for good, kept
 * for [failures] keep with their last reply, so an operator can list
 * them, send them again once the cause is fixed (`sluice failures retry`),
 * or drop them (`purge`). SPOOL_DIR/failures.db, SQLite.
 *
 * A failed recipient is recorded before its message leaves the spool,
 * with the message's body stored once per message (for an injected batch:
 * the template; the recipient keeps its vars), so a retry re-queues the
 * same message as a new delivery with a new MID.
 *
 * struct failures_db is the store, used by one thread at a time; in
 * sluiced it runs on a worker thread (service.c).
 */
#ifndef SL_FAILURES_H
#define SL_FAILURES_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct event_base;
struct evbuffer;
struct failures;
struct failures_db;

struct failure_rcpt {
	uint32_t rid;
	const char *addr;
	const char *vars;	/* an injected recipient's vars, or NULL */
	const char *reply;	/* the last reply */
};

/* One message's failed recipients and what is needed to send it again. */
struct failure_msg {
	uint64_t mid;
	const char *sender;
	const char *envid;
	uint8_t flags;		/* SPOOL_F_* of the message */
	const char *batch;	/* batch id, or NULL */
	int64_t failed_at;
	struct evbuffer *body;	/* borrowed */
	size_t nrcpt;
	const struct failure_rcpt *rcpts;
};

struct failures_db *failures_db_open(const char *dir, char *err,
    size_t errlen);
void failures_db_close(struct failures_db *db);
/* Record n messages' failures (idempotent per MID and RID); 0 or -1. */
int failures_db_add(struct failures_db *db, const struct failure_msg *m,
    size_t n, char *err, size_t errlen);
/* A new array of {id, mid, rid, rcpt, sender, batch, reply, failed_at},
 * oldest first; batch NULL: all. */
json_t *failures_db_list(struct failures_db *db, const char *batch,
    size_t limit, char *err, size_t errlen);

/* What a retry re-queues: one message per original, the chosen recipients. */
struct failure_retry {
	uint64_t mid;		/* the original */
	char *sender, *envid, *batch;
	uint8_t flags;
	struct evbuffer *body;
	size_t nrcpt;
	struct failure_retry_rcpt {
		int64_t id;	/* the failure's id */
		char *addr, *vars;
	} *rcpts;
};
/*
 * Read the failures chosen (ids, or all of batch, or all) grouped by
 * message; *n gets the count. Returns a new array (failures_retry_free).
 * Ids not found are appended to missing (a JSON array) when given.
 */
struct failure_retry *failures_db_take(struct failures_db *db,
    const int64_t *ids, size_t nids, const char *batch, int all, size_t *n,
    json_t *missing, char *err, size_t errlen);
void failures_retry_free(struct failure_retry *r, size_t n);
/* Remove failures by id (after their retry is queued); bodies no longer
 * referenced go too. Returns the count removed, -1 on error. */
long failures_db_remove(struct failures_db *db, const int64_t *ids,
    size_t n);
/* Remove everything (batch NULL) or a batch's; or what failed before t. */
long failures_db_purge(struct failures_db *db, const char *batch);
long failures_db_expire(struct failures_db *db, int64_t before);

#endif
