/* SPDX-License-Identifier: MIT */
/*
 * spool_int.h: what spool.c, mid.c and spool_sqlite.c share; nothing outside
 * src/spool (except its unit tests) includes this.
 *
 * spool.c owns the thread, the request queue and the completion list;
 * spool_sqlite.c owns the SQLite connections and runs one batch of requests
 * as one transaction. The writer (struct spool_db) is opened by spool_open()
 * and then used only by the spool thread; the reader (struct spool_rdb) is
 * used only by the event loop thread.
 */
#ifndef SL_SPOOL_INT_H
#define SL_SPOOL_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "spool/spool.h"

#define SPOOL_ERRLEN 256

enum spool_req_type {
	SPOOL_REQ_INSERT,
	SPOOL_REQ_UPDATE,
	SPOOL_REQ_DELETE,
	SPOOL_REQ_IDEM_EXPIRE,		/* mid holds the cutoff (unix s) */
};

/* One queued write; lives from spool_insert() & co. until its callback ran. */
struct spool_req {
	struct spool_req *next;
	enum spool_req_type type;
	uint64_t mid;
	struct spool_msg *msg;		/* INSERT: owned */
	uint64_t orig;			/* INSERT of a DSN: its message */
	uint8_t orig_flag;		/* INSERT of a notice: SPOOL_F_* to
					   set in orig's envelope */
	struct spool_rcpt *rcpts;	/* UPDATE: owned copy of n recipients;
					   INSERT of a DSN: orig's to mark */
	size_t nrcpt;
	spool_done_fn *cb;
	void *arg;
	enum spool_status status;	/* set by the spool thread */
};

/* One body read (spool_body_read), on the reader thread's lists. */
struct spool_rreq {
	struct spool_rreq *next;
	uint64_t mid;
	spool_body_fn *cb;
	void *arg;
	struct evbuffer *body;		/* the result, or NULL */
	enum spool_status status;
};

/* The writer connection and its statements (spool_sqlite.c). */
struct spool_db;
/* The read-only connection of the event loop thread (spool_sqlite.c). */
struct spool_rdb;

/* What one call of spool_db_run() did, added to struct spool_stats. */
struct spool_batch_stats {
	uint64_t commits;
	uint64_t requests;
	uint64_t failures;
	double commit_ms;
};

struct spool {
	struct event_base *base;
	struct event *done_ev;		/* on efd, runs the callbacks */
	int efd;			/* eventfd the spool thread signals */
	char *dir;

	pthread_t thread;
	int thread_started;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	/* Guarded by mu. */
	struct spool_req *pend_head, **pend_tail;
	struct spool_req *done_head, **done_tail;
	int stopping;
	struct spool_stats stats;
	char err_shared[SPOOL_ERRLEN];	/* last error of the spool thread */

	/* Spool thread only (after spool_open). */
	struct spool_db *db;
	/* The reader thread: body reads on its own connection (rd_db), woken
	 * through rdcv; its lists are guarded by mu. */
	struct spool_rdb *rd_db;
	pthread_t rd_thread;
	int rd_started;
	pthread_cond_t rdcv;
	struct spool_rreq *rd_pend, **rd_pend_tail;
	struct spool_rreq *rd_done, **rd_done_tail;
	/* The checkpoint thread: woken through ckcv when ck_wanted (mu). */
	struct spool_cdb *cdb;
	pthread_t ckpt_thread;
	int ckpt_started;
	pthread_cond_t ckcv;
	int ck_wanted;

	/* Event loop thread only. */
	struct spool_rdb *rdb;
	uint64_t last_mid;
	int closing;
	char err[SPOOL_ERRLEN];
};

/*
 * Open (creating dir, the file and the schema if needed) the writer;
 * *max_mid gets the largest MID stored. NULL with a reason in err on failure.
 */
struct spool_db *spool_db_open(const char *dir, uint64_t *max_mid, char *err,
    size_t errlen);
/* Checkpoint (TRUNCATE) and close; NULL does nothing. */
void spool_db_close(struct spool_db *db);
/*
 * Run the n requests as one transaction, or, if a statement fails for a
 * reason other than the storage, each in its own; sets every req->status.
 * A reason for a failure goes into err. Adds what it did to bs.
 */
void spool_db_run(struct spool_db *db, struct spool_req **reqs, size_t n,
    struct spool_batch_stats *bs, char *err, size_t errlen);
/*
 * Checkpoint the WAL if it is worth it: idle != 0 when no request waits
 * (PASSIVE, or TRUNCATE once the WAL is large), else only when the WAL is
 * over its limit (RESTART). Returns 1 if a checkpoint ran.
 */
int spool_db_checkpoint(struct spool_db *db, int idle);
/* 1 if an idle checkpoint has work: frames not yet copied, or a large WAL. */
int spool_db_ckpt_wanted(const struct spool_db *db);
/* Bytes in the WAL after the last commit. */
int64_t spool_db_wal_bytes(const struct spool_db *db);

/*
 * The checkpointer's own connection: PASSIVE checkpoints under load run on
 * the checkpoint thread, so the writer never waits for one (a checkpoint
 * inside the commit path stalled every session for 100-240 ms).
 */
struct spool_cdb;
struct spool_cdb *spool_cdb_open(const char *dir, char *err, size_t errlen);
/* A PASSIVE checkpoint; returns 1 if it ran. */
int spool_cdb_checkpoint(struct spool_cdb *c);
void spool_cdb_close(struct spool_cdb *c);
/* Test hook: the next count transactions fail with err instead of COMMIT. */
void spool_db_fault(struct spool_db *db, int count, enum spool_status err);
/* Run SQL on the writer; for tests only (e.g. PRAGMA max_page_count). */
int spool_db_exec(struct spool_db *db, const char *sql);

struct spool_rdb *spool_rdb_open(const char *dir, char *err, size_t errlen);
void spool_rdb_close(struct spool_rdb *rdb);
long spool_rdb_recover(struct spool_rdb *rdb, spool_recover_fn *fn, void *arg,
    char *err, size_t errlen);
struct evbuffer *spool_rdb_body_load(struct spool_rdb *rdb, uint64_t mid,
    char *err, size_t errlen);
/* 1 if the last spool_rdb_body_load of rdb failed for want of the row. */
int spool_rdb_notfound(struct spool_rdb *rdb);
char *spool_rdb_idem_get(struct spool_rdb *rdb, const char *key,
    int64_t since);
char *spool_rdb_rcpt_vars(struct spool_rdb *rdb, uint64_t mid, uint32_t rid);

#endif
