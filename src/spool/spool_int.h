/* SPDX-License-Identifier: MIT */
/*
 * spool_int.h: what spool.c, mid.c and spool_sqlite.c share; nothing outside
 * src/spool (except its unit tests) includes this.
 *
 * spool.c owns the threads, the request queue and the completion list;
 * spool_sqlite.c owns the SQLite connections and runs one batch of requests
 * as one transaction. The writers (struct spool_db, one per writer thread)
 * are opened by spool_open() and then each used only by its thread; the
 * reader (struct spool_rdb) is used only by the event loop thread.
 */
#ifndef SL_SPOOL_INT_H
#define SL_SPOOL_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "spool/spool.h"

#define SPOOL_ERRLEN 256
/* Past this, an idle writer truncates the WAL. */
#define SPOOL_WAL_LIMIT ((int64_t)64 * 1024 * 1024)
/*
 * Past this a writer itself checkpoints (RESTART), blocking commits: only
 * when the checkpoint thread cannot keep up, so the WAL cannot grow forever.
 */
#define SPOOL_WAL_HARD_LIMIT ((int64_t)512 * 1024 * 1024)
/* Writer threads: while one syncs its batch, the other writes the next. */
#define SPOOL_WRITERS 2

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
	int64_t enq_us;			/* sl_mono_us at spool_insert & co. */
	int64_t done_us;		/* its transaction ended (spool thread) */
	struct spool_port *port;	/* answered on its loop */
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

/* A writer thread and its connection. */
struct spool_writer {
	struct spool *sp;
	int id;				/* 0 also runs the idle checkpoints */
	struct spool_db *db;
	pthread_t thread;
	int started;
	struct spool_req **arr;		/* its batch, as an array */
	size_t cap;
};

/*
 * Where answers go: a loop thread's done list and the eventfd that wakes
 * it. The spool's own (sp->main) is the loop of spool_open, which also
 * gets the body reads; spool_port_new makes one for another loop.
 */
struct spool_port {
	struct spool *sp;
	struct event *done_ev;		/* on efd, runs the callbacks */
	int efd;			/* eventfd the spool threads write */
	/* Guarded by sp->mu. */
	struct spool_req *done_head, **done_tail;
	uint64_t woken;			/* the batch that last woke it */
	size_t inflight;		/* queued through it, not called back */
};

struct spool {
	struct event_base *base;
	struct spool_port main;		/* the loop of spool_open */
	char *dir;

	struct spool_writer w[SPOOL_WRITERS];
	pthread_mutex_t mu;
	pthread_cond_t cv;		/* requests queued, or the turn free */
	pthread_cond_t seqcv;		/* a batch reached the done list */
	/* Guarded by mu. */
	struct spool_req *pend_head, **pend_tail;
	size_t npend;			/* requests on the pending list */
	int stopping;
	int nsyncing;			/* batches written, being synced */
	size_t sync_n;			/* requests in the last batch synced */
	int writing;			/* a writer has the turn (BEGIN..COMMIT,
					   or a checkpoint of its own) */
	uint64_t batch_seq;		/* batches taken so far */
	uint64_t done_seq;		/* batches on the done list, in order */
	int sync_failed;		/* a WAL sync failed: what was written
					   since may not be on disk; every batch
					   fails from then on */
	int64_t wal_bytes;		/* after the last commit */
	int wal_dirty;			/* frames not checkpointed yet */
	struct spool_stats stats;
	char err_shared[SPOOL_ERRLEN];	/* last error of a spool thread */

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
	_Atomic uint64_t last_mid;	/* spool_mid_next, any thread */
	int closing;			/* written under mu: ports' loops read it */
	char err[SPOOL_ERRLEN];
};

/*
 * Open (creating dir, the file and the schema if needed) the first writer,
 * which holds the spool's lock; *max_mid gets the largest MID stored. NULL
 * with a reason in err on failure.
 */
struct spool_db *spool_db_open(const char *dir, uint64_t *max_mid, char *err,
    size_t errlen);
/* Another writer on the same spool, sharing first's fault injection. */
struct spool_db *spool_db_open_more(const char *dir, struct spool_db *first,
    char *err, size_t errlen);
/* Close; the last writer checkpoints (TRUNCATE) first. NULL does nothing. */
void spool_db_close(struct spool_db *db, int last);
/*
 * Run the n requests as one transaction, or, if a statement fails for a
 * reason other than the storage, each in its own; sets every req->status.
 * The commit is not synced: spool_db_sync() makes it durable. A reason for
 * a failure goes into err. Adds what it did to bs.
 */
void spool_db_run(struct spool_db *db, struct spool_req **reqs, size_t n,
    struct spool_batch_stats *bs, char *err, size_t errlen);
/*
 * Sync the WAL: every commit before the call is durable once it returns
 * SQLITE_OK. On failure spool_db_errmsg() says why.
 */
int spool_db_sync(struct spool_db *db);
const char *spool_db_errmsg(const struct spool_db *db);
/*
 * Checkpoint the WAL through db, its syncs switched on for it: idle != 0
 * when no request waits (PASSIVE, or TRUNCATE once wal_bytes passed
 * SPOOL_WAL_LIMIT), else only when wal_bytes passed SPOOL_WAL_HARD_LIMIT
 * (RESTART). -1 if none ran, 0 if frames remain (a reader held them), 1 if
 * every frame was copied.
 */
int spool_db_checkpoint(struct spool_db *db, int idle, int64_t wal_bytes);
/* Bytes in the WAL after db's last commit. */
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
/* Test hook: the next sync of the WAL fails (EIO). */
void spool_db_fault_sync(struct spool_db *db);
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
