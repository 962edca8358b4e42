/* SPDX-License-Identifier: MIT */
/*
 * spool_sqlite.c: the SQLite store under the spool: <dir>/spool.db.
 *
 * Owns two connections. The writer (struct spool_db) holds the prepared
 * statements for insert, recipient update and delete, runs each batch of
 * requests as one BEGIN IMMEDIATE..COMMIT (one WAL sync) and checkpoints the
 * WAL itself (wal_autocheckpoint=0): PASSIVE when the spool thread is idle,
 * RESTART under load once the WAL passes SPOOL_WAL_LIMIT, TRUNCATE when idle
 * with a WAL that large and at close. It is opened by spool_open() and from
 * then on used only by the spool thread. The reader (struct spool_rdb) is
 * read-only and used only by the event loop thread, for the recovery scan
 * and body loads; WAL readers never block the writer.
 *
 * Tables: envelopes (one row per message), recipients (mid, rid), bodies
 * (mid, data). The recovery scan reads envelopes and recipients only, so
 * its cost does not grow with the bodies. PRAGMA user_version is the
 * schema version.
 *
 * Invariants
 *  1. A request's status is SPOOL_OK only once its COMMIT returned SQLITE_OK.
 *  2. A failed transaction is rolled back whole: nothing of any request in it
 *     stays, and the connection is back in autocommit mode for the next.
 *  3. A storage error (full disk, I/O, ...) fails every request of the batch;
 *     any other failing statement (e.g. a duplicate MID) fails only its own
 *     request: the batch is rolled back and rerun one request per transaction.
 *  4. The spool's files are reachable after a power cut: a directory made
 *     for it is synced into its parent, and the spool directory itself is
 *     synced once its files exist, before the first commit (SQLite syncs it
 *     again when it creates a WAL).
 */
#include <sys/file.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <sqlite3.h>

#include "util/util.h"

#include "spool/spool_int.h"

#define SPOOL_SCHEMA_VERSION 2
/* Past this, an idle spool thread truncates the WAL. */
#define SPOOL_WAL_LIMIT ((int64_t)64 * 1024 * 1024)
/*
 * Past this the writer itself checkpoints (RESTART), blocking commits: only
 * when the checkpoint thread cannot keep up, so the WAL cannot grow forever.
 */
#define SPOOL_WAL_HARD_LIMIT ((int64_t)512 * 1024 * 1024)
/* How long the writer waits for a reader before a RESTART/TRUNCATE checkpoint gives up. */
#define SPOOL_BUSY_MS 2000

enum {
	ST_BEGIN,
	ST_COMMIT,
	ST_ROLLBACK,
	ST_SAVEPOINT,
	ST_RELEASE,
	ST_ROLLBACK_TO,
	ST_INS_ENV,
	ST_INS_RCPT,
	ST_INS_BODY,
	ST_HAS_ENV,
	ST_UPD_RCPT,
	ST_UPD_STATE,
	ST_SET_FLAG,
	ST_DEL_ENV,
	ST_DEL_RCPTS,
	ST_DEL_BODY,
	ST_INS_VARS,
	ST_DEL_VARS,
	ST_INS_IDEM,
	ST_DEL_IDEM,
	ST_MAX
};

static const char *const spool_db_sql[ST_MAX] = {
	[ST_BEGIN] = "BEGIN IMMEDIATE",
	[ST_COMMIT] = "COMMIT",
	[ST_ROLLBACK] = "ROLLBACK",
	[ST_SAVEPOINT] = "SAVEPOINT req",
	[ST_RELEASE] = "RELEASE req",
	[ST_ROLLBACK_TO] = "ROLLBACK TO req",
	[ST_INS_ENV] = "INSERT INTO envelopes(mid, arrival, sender, envid, ret,"
	    " flags, client_addr, helo, size, nrcpt)"
	    " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
	[ST_INS_RCPT] = "INSERT INTO recipients(mid, rid, addr, orcpt, notify,"
	    " state, attempts, next_retry, last_reply)"
	    " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
	[ST_INS_BODY] = "INSERT INTO bodies(mid, data) VALUES(?1, zeroblob(?2))",
	[ST_HAS_ENV] = "SELECT 1 FROM envelopes WHERE mid = ?1",
	[ST_UPD_RCPT] = "UPDATE recipients SET state = ?3, attempts = ?4,"
	    " next_retry = ?5, last_reply = ?6 WHERE mid = ?1 AND rid = ?2",
	[ST_UPD_STATE] = "UPDATE recipients SET state = ?3"
	    " WHERE mid = ?1 AND rid = ?2",
	[ST_SET_FLAG] = "UPDATE envelopes SET flags = flags | ?2 WHERE mid = ?1",
	[ST_DEL_ENV] = "DELETE FROM envelopes WHERE mid = ?1",
	[ST_DEL_RCPTS] = "DELETE FROM recipients WHERE mid = ?1",
	[ST_DEL_BODY] = "DELETE FROM bodies WHERE mid = ?1",
	[ST_INS_VARS] = "INSERT INTO rcpt_vars(mid, rid, vars) VALUES(?1, ?2, ?3)",
	[ST_DEL_VARS] = "DELETE FROM rcpt_vars WHERE mid = ?1",
	[ST_INS_IDEM] = "INSERT INTO idempotency(key, created, answer)"
	    " VALUES(?1, ?2, ?3)",
	[ST_DEL_IDEM] = "DELETE FROM idempotency WHERE created < ?1",
};

/*
 * AUTOINCREMENT keeps the largest MID ever stored in sqlite_sequence, so a
 * restart never hands out the MID of a message already deleted, even if the
 * clock stepped back.
 */
static const char spool_schema_sql[] =
    "CREATE TABLE envelopes("
    " mid INTEGER PRIMARY KEY AUTOINCREMENT,"
    " arrival INTEGER NOT NULL,"
    " sender TEXT,"
    " envid TEXT,"
    " ret INTEGER NOT NULL,"
    " flags INTEGER NOT NULL,"
    " client_addr TEXT,"
    " helo TEXT,"
    " size INTEGER NOT NULL,"
    " nrcpt INTEGER NOT NULL);"
    "CREATE TABLE recipients("
    " mid INTEGER NOT NULL,"
    " rid INTEGER NOT NULL,"
    " addr TEXT,"
    " orcpt TEXT,"
    " notify INTEGER NOT NULL,"
    " state INTEGER NOT NULL,"
    " attempts INTEGER NOT NULL,"
    " next_retry INTEGER NOT NULL,"
    " last_reply TEXT,"
    " PRIMARY KEY(mid, rid)) WITHOUT ROWID;"
    "CREATE TABLE bodies("
    " mid INTEGER PRIMARY KEY,"
    " data BLOB NOT NULL);";

/*
 * Version 2: the injection API. rcpt_vars holds an injected recipient's
 * template values (a batch's body is its template: SPOOL_F_BATCH);
 * idempotency the first answer to each Idempotency-Key, written in the
 * transaction that stores the batch.
 */
static const char spool_schema_v2_sql[] =
    "CREATE TABLE IF NOT EXISTS rcpt_vars("
    " mid INTEGER NOT NULL,"
    " rid INTEGER NOT NULL,"
    " vars TEXT NOT NULL,"
    " PRIMARY KEY(mid, rid)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS idempotency("
    " key TEXT PRIMARY KEY,"
    " created INTEGER NOT NULL,"
    " answer TEXT NOT NULL);"
    "PRAGMA user_version = 2;";

struct spool_db {
	int lockfd;		/* flock'd: one sluiced per spool directory */
	sqlite3 *db;
	sqlite3_stmt *st[ST_MAX];
	int page_size;
	int wal_frames;		/* frames in the WAL after the last commit */
	int wal_dirty;		/* frames not yet checkpointed */
	int sys_errno;		/* errno behind the last failure */
	char emsg[SPOOL_ERRLEN];
	/* Set by the event loop thread (spool_db_fault), taken by the spool thread. */
	atomic_int fault_count;
	atomic_int fault_err;
};

struct spool_rdb {
	sqlite3 *db;
	sqlite3_stmt *env;
	sqlite3_stmt *rcpt;
	int notfound;		/* the last body load found no row */
	sqlite3_stmt *idem;
	sqlite3_stmt *vars;
};

/* fsync the directory dir: its list of names is durable. 0 or -1. */
static int
spool_dir_sync(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc, e;

	if (fd == -1)
		return -1;
	rc = fsync(fd);
	e = errno;
	close(fd);
	errno = e;
	return rc;
}

/*
 * The directory that holds path p (cut at its last '/'), synced: a
 * directory made in it survives a power cut.
 */
static int
spool_parent_sync(char *p)
{
	char *slash = strrchr(p, '/');
	int rc;

	if (slash == NULL)
		return spool_dir_sync(".");
	if (slash == p)
		return spool_dir_sync("/");
	*slash = '\0';
	rc = spool_dir_sync(p);
	*slash = '/';
	return rc;
}

/*
 * mkdir -p: create dir and its missing parents, each made durable in its
 * own parent (invariant 4). -1 with errno and the failing path in *where.
 */
static int
spool_mkdirs(const char *dir, char **where)
{
	char *p = xstrdup(dir);
	char *s;
	int rc = 0;

	for (s = p + 1; ; s++) {
		if (*s != '/' && *s != '\0')
			continue;
		char c = *s;
		*s = '\0';
		if (mkdir(p, 0700) == 0) {
			if (spool_parent_sync(p) == -1) {
				rc = -1;
				break;
			}
		} else if (errno != EEXIST) {
			rc = -1;
			break;
		}
		*s = c;
		if (c == '\0')
			break;
	}
	if (rc == -1)
		*where = p;
	else
		free(p);
	return rc;
}

static int
spool_db_wal_hook(void *ctx, sqlite3 *db, const char *name, int nframes)
{
	struct spool_db *d = ctx;

	d->wal_frames = nframes;
	d->wal_dirty = 1;
	return SQLITE_OK;
}

/* Run a statement that returns at most one integer (a PRAGMA); -1 on error. */
static int64_t
spool_db_int(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *st;
	int64_t v = -1;

	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
		return -1;
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

static int
spool_db_schema(sqlite3 *db, char *err, size_t errlen)
{
	int64_t ver;

	/* IMMEDIATE: a second process opening the same spool waits, not races. */
	if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
		goto fail;
	ver = spool_db_int(db, "PRAGMA user_version");
	if (ver == 0 &&
	    sqlite3_exec(db, spool_schema_sql, NULL, NULL, NULL) != SQLITE_OK)
		goto fail;
	if (ver < 2 &&
	    sqlite3_exec(db, spool_schema_v2_sql, NULL, NULL, NULL) != SQLITE_OK)
		goto fail;
	if (ver > SPOOL_SCHEMA_VERSION) {
		snprintf(err, errlen, "spool schema version %lld is newer than"
		    " this program's (%d)", (long long)ver, SPOOL_SCHEMA_VERSION);
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
		return -1;
	}
	if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		goto fail;
	return 0;
fail:
	snprintf(err, errlen, "spool schema: %s", sqlite3_errmsg(db));
	if (!sqlite3_get_autocommit(db))
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	return -1;
}

/* The largest MID ever stored, deleted ones included. */
static uint64_t
spool_db_max_mid(sqlite3 *db)
{
	int64_t a, b;

	a = spool_db_int(db, "SELECT coalesce(max(mid), 0) FROM envelopes");
	b = spool_db_int(db, "SELECT coalesce(max(seq), 0) FROM sqlite_sequence"
	    " WHERE name = 'envelopes'");
	return (uint64_t)(a > b ? (a > 0 ? a : 0) : (b > 0 ? b : 0));
}

/*
 * TEST ONLY, never for production: SLUICE_TEST_SPOOL_SYNC=OFF or NORMAL
 * weakens the writer's commits (OFF: no sync at all; NORMAL: the WAL is
 * synced only by checkpoints, so a commit returns before its data is on
 * disk). The system tests use it to show that the power-cut model and the
 * sync-order proof catch a spool that answers 250 too early
 * (docs/TESTING.md). The checkpoint thread's connection keeps FULL.
 */
static int
spool_db_test_sync(sqlite3 *db, char *err, size_t errlen)
{
	const char *v = getenv("SLUICE_TEST_SPOOL_SYNC");
	char sql[64];

	if (v == NULL || *v == '\0')
		return 0;
	if (strcmp(v, "OFF") != 0 && strcmp(v, "NORMAL") != 0) {
		snprintf(err, errlen, "SLUICE_TEST_SPOOL_SYNC=%s: only OFF or"
		    " NORMAL (a test-only switch)", v);
		return -1;
	}
	snprintf(sql, sizeof(sql), "PRAGMA synchronous = %s", v);
	if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK) {
		snprintf(err, errlen, "spool pragmas: %s", sqlite3_errmsg(db));
		return -1;
	}
	fprintf(stderr, "sluiced: TEST ONLY: SLUICE_TEST_SPOOL_SYNC=%s: the"
	    " spool's commits are not durable\n", v);
	return 0;
}

static int
spool_db_pragmas(sqlite3 *db, char *err, size_t errlen)
{
	sqlite3_stmt *st;
	int wal = 0;

	sqlite3_busy_timeout(db, SPOOL_BUSY_MS);
	if (sqlite3_prepare_v2(db, "PRAGMA journal_mode = WAL", -1, &st,
	    NULL) == SQLITE_OK) {
		if (sqlite3_step(st) == SQLITE_ROW)
			wal = sl_strcaseeq((const char *)sqlite3_column_text(st,
			    0), "wal");
		sqlite3_finalize(st);
	}
	if (!wal) {
		snprintf(err, errlen, "spool: cannot enable WAL mode: %s",
		    sqlite3_errmsg(db));
		return -1;
	}
	/* FULL: the WAL is synced at every commit, so a 250 means on disk. */
	/* journal_size_limit: a WAL that was reset shrinks back to 64 MB */
	if (sqlite3_exec(db, "PRAGMA synchronous = FULL;"
	    "PRAGMA wal_autocheckpoint = 0;"
	    "PRAGMA journal_size_limit = 67108864", NULL, NULL, NULL) !=
	    SQLITE_OK) {
		snprintf(err, errlen, "spool pragmas: %s", sqlite3_errmsg(db));
		return -1;
	}
	return spool_db_test_sync(db, err, errlen);
}

struct spool_db *
spool_db_open(const char *dir, uint64_t *max_mid, char *err, size_t errlen)
{
	struct spool_db *d = xcalloc(1, sizeof(*d));
	char *path = NULL;
	int i;

	d->lockfd = -1;
	if (spool_mkdirs(dir, &path) == -1) {
		snprintf(err, errlen, "spool: mkdir %s: %s", path,
		    strerror(errno));
		goto fail;
	}
	/* Two daemons on one spool would deliver every message twice. */
	path = xasprintf("%s/spool.lock", dir);
	d->lockfd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (d->lockfd == -1 || flock(d->lockfd, LOCK_EX | LOCK_NB) == -1) {
		snprintf(err, errlen, errno == EWOULDBLOCK ? "spool: %s is in "
		    "use by another sluiced" : "spool: lock %s: %s", errno ==
		    EWOULDBLOCK ? dir : path, strerror(errno));
		goto fail;
	}
	free(path);
	path = xasprintf("%s/spool.db", dir);
	/* NOMUTEX: one thread at a time uses the connection (see file header). */
	if (sqlite3_open_v2(path, &d->db, SQLITE_OPEN_READWRITE |
	    SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
		snprintf(err, errlen, "spool: open %s: %s", path,
		    d->db ? sqlite3_errmsg(d->db) : "out of memory");
		goto fail;
	}
	sqlite3_extended_result_codes(d->db, 1);
	if (spool_db_pragmas(d->db, err, errlen) == -1 ||
	    spool_db_schema(d->db, err, errlen) == -1)
		goto fail;
	for (i = 0; i < ST_MAX; i++) {
		if (sqlite3_prepare_v3(d->db, spool_db_sql[i], -1,
		    SQLITE_PREPARE_PERSISTENT, &d->st[i], NULL) != SQLITE_OK) {
			snprintf(err, errlen, "spool: prepare: %s",
			    sqlite3_errmsg(d->db));
			goto fail;
		}
	}
	d->page_size = (int)spool_db_int(d->db, "PRAGMA page_size");
	if (d->page_size <= 0)
		d->page_size = 4096;
	/* invariant 4: the names of the files just made (the lock, a new
	 * database) are durable before anything is stored in them */
	if (spool_dir_sync(dir) == -1) {
		snprintf(err, errlen, "spool: fsync %s: %s", dir,
		    strerror(errno));
		goto fail;
	}
	/* Installed after the pragmas: it replaces SQLite's own autocheckpoint hook. */
	sqlite3_wal_hook(d->db, spool_db_wal_hook, d);
	*max_mid = spool_db_max_mid(d->db);
	/* Something may be left in the WAL by a crash: checkpoint when idle. */
	d->wal_dirty = 1;
	free(path);
	return d;
fail:
	free(path);
	for (i = 0; i < ST_MAX; i++)
		sqlite3_finalize(d->st[i]);
	sqlite3_close(d->db);
	if (d->lockfd != -1)
		close(d->lockfd);
	free(d);
	return NULL;
}

void
spool_db_close(struct spool_db *d)
{
	int i;

	if (d == NULL)
		return;
	for (i = 0; i < ST_MAX; i++)
		sqlite3_finalize(d->st[i]);
	/* TRUNCATE leaves an empty WAL, so the next start has nothing to replay. */
	sqlite3_wal_checkpoint_v2(d->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL,
	    NULL);
	sqlite3_close(d->db);
	if (d->lockfd != -1)
		close(d->lockfd);	/* releases the flock */
	free(d);
}

int
spool_db_exec(struct spool_db *d, const char *sql)
{
	return sqlite3_exec(d->db, sql, NULL, NULL, NULL);
}

void
spool_db_fault(struct spool_db *d, int count, enum spool_status err)
{
	atomic_store(&d->fault_err, (int)err);
	atomic_store(&d->fault_count, count > 0 ? count : 0);
}

/* Take one injected fault if any is armed: the SQLite code to fail with, or 0. */
static int
spool_db_fault_take(struct spool_db *d)
{
	int c = atomic_load(&d->fault_count);

	while (c > 0) {
		if (atomic_compare_exchange_weak(&d->fault_count, &c, c - 1)) {
			if (atomic_load(&d->fault_err) == SPOOL_ERR_NOSPACE) {
				d->sys_errno = ENOSPC;
				return SQLITE_FULL;
			}
			d->sys_errno = EIO;
			return SQLITE_IOERR_WRITE;
		}
	}
	return 0;
}

/* Remember why rc happened, before a reset or a ROLLBACK replaces the message. */
static int
spool_db_fail(struct spool_db *d, int rc)
{
	d->sys_errno = sqlite3_system_errno(d->db);
	snprintf(d->emsg, sizeof(d->emsg), "%s (%d)", sqlite3_errmsg(d->db),
	    rc);
	return rc;
}

/* Step a write statement to completion; SQLITE_OK or the error. */
static int
spool_db_step(struct spool_db *d, sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);

	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		spool_db_fail(d, rc);
	sqlite3_reset(st);
	/* The bound strings belong to the request, which is freed soon. */
	sqlite3_clear_bindings(st);
	return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
}

static void
spool_bind_text(sqlite3_stmt *st, int i, const char *s)
{
	if (s == NULL)
		sqlite3_bind_null(st, i);
	else
		sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
}

/* Write the body into the zeroblob already inserted, chunk by chunk: no copy. */
static int
spool_db_body_write(struct spool_db *d, uint64_t mid, struct evbuffer *body)
{
	struct evbuffer_iovec stackv[16], *v = stackv;
	sqlite3_blob *blob;
	int i, n, rc, rc2;
	int off = 0;

	rc = sqlite3_blob_open(d->db, "main", "bodies", "data",
	    (sqlite3_int64)mid, 1, &blob);
	if (rc != SQLITE_OK)
		return spool_db_fail(d, rc);
	n = evbuffer_peek(body, -1, NULL, NULL, 0);
	if (n > (int)SL_ARRAY_LEN(stackv))
		v = xmalloc((size_t)n * sizeof(*v));
	n = evbuffer_peek(body, -1, NULL, v, n);
	for (i = 0; i < n && rc == SQLITE_OK; i++) {
		rc = sqlite3_blob_write(blob, v[i].iov_base, (int)v[i].iov_len,
		    off);
		off += (int)v[i].iov_len;
	}
	if (rc != SQLITE_OK)
		spool_db_fail(d, rc);
	rc2 = sqlite3_blob_close(blob);
	if (rc == SQLITE_OK && rc2 != SQLITE_OK)
		rc = spool_db_fail(d, rc2);
	if (v != stackv)
		free(v);
	return rc;
}

static int
spool_db_insert(struct spool_db *d, struct spool_req *r)
{
	struct spool_msg *m = r->msg;
	sqlite3_stmt *st;
	size_t blen = m->body ? evbuffer_get_length(m->body) : 0;
	size_t i;
	int rc;

	/* size is "bytes of body as stored", and we are the ones storing it. */
	m->size = blen;
	st = d->st[ST_INS_ENV];
	sqlite3_bind_int64(st, 1, (sqlite3_int64)m->mid);
	sqlite3_bind_int64(st, 2, m->arrival);
	spool_bind_text(st, 3, m->sender);
	spool_bind_text(st, 4, m->envid);
	sqlite3_bind_int(st, 5, m->ret);
	sqlite3_bind_int(st, 6, m->flags);
	spool_bind_text(st, 7, m->client_addr);
	spool_bind_text(st, 8, m->helo);
	sqlite3_bind_int64(st, 9, (sqlite3_int64)m->size);
	sqlite3_bind_int64(st, 10, (sqlite3_int64)m->nrcpt);
	if ((rc = spool_db_step(d, st)) != SQLITE_OK)
		return rc;

	st = d->st[ST_INS_RCPT];
	for (i = 0; i < m->nrcpt; i++) {
		const struct spool_rcpt *rc_ = &m->rcpts[i];

		sqlite3_bind_int64(st, 1, (sqlite3_int64)m->mid);
		sqlite3_bind_int64(st, 2, rc_->rid);
		spool_bind_text(st, 3, rc_->addr);
		spool_bind_text(st, 4, rc_->orcpt);
		sqlite3_bind_int(st, 5, rc_->notify);
		sqlite3_bind_int(st, 6, rc_->state);
		sqlite3_bind_int64(st, 7, rc_->attempts);
		sqlite3_bind_int64(st, 8, rc_->next_retry);
		spool_bind_text(st, 9, rc_->last_reply);
		if ((rc = spool_db_step(d, st)) != SQLITE_OK)
			return rc;
		if (rc_->vars != NULL) {
			sqlite3_stmt *vs = d->st[ST_INS_VARS];
			sqlite3_bind_int64(vs, 1, (sqlite3_int64)m->mid);
			sqlite3_bind_int64(vs, 2, rc_->rid);
			spool_bind_text(vs, 3, rc_->vars);
			if ((rc = spool_db_step(d, vs)) != SQLITE_OK)
				return rc;
		}
		st = d->st[ST_INS_RCPT];
	}
	if (m->idem_key != NULL) {
		st = d->st[ST_INS_IDEM];
		spool_bind_text(st, 1, m->idem_key);
		sqlite3_bind_int64(st, 2, m->arrival);
		spool_bind_text(st, 3, m->idem_answer ? m->idem_answer : "{}");
		if ((rc = spool_db_step(d, st)) != SQLITE_OK)
			return rc;
	}

	st = d->st[ST_INS_BODY];
	sqlite3_bind_int64(st, 1, (sqlite3_int64)m->mid);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)blen);
	if ((rc = spool_db_step(d, st)) != SQLITE_OK)
		return rc;
	if (blen > 0 && (rc = spool_db_body_write(d, m->mid, m->body)) !=
	    SQLITE_OK)
		return rc;
	/* a DSN: its recipients are reported, in the same transaction */
	st = d->st[ST_UPD_STATE];
	for (i = 0; i < r->nrcpt; i++) {
		sqlite3_bind_int64(st, 1, (sqlite3_int64)r->orig);
		sqlite3_bind_int64(st, 2, r->rcpts[i].rid);
		sqlite3_bind_int(st, 3, r->rcpts[i].state);
		if ((rc = spool_db_step(d, st)) != SQLITE_OK)
			return rc;
	}
	/* a notice: the message it is about records that it went */
	if (r->orig_flag != 0) {
		st = d->st[ST_SET_FLAG];
		sqlite3_bind_int64(st, 1, (sqlite3_int64)r->orig);
		sqlite3_bind_int(st, 2, r->orig_flag);
		if ((rc = spool_db_step(d, st)) != SQLITE_OK)
			return rc;
	}
	return SQLITE_OK;
}

/* 1 if an envelope for mid exists, 0 if not, -SQLite code on error. */
static int
spool_db_has(struct spool_db *d, uint64_t mid)
{
	sqlite3_stmt *st = d->st[ST_HAS_ENV];
	int rc;

	sqlite3_bind_int64(st, 1, (sqlite3_int64)mid);
	rc = sqlite3_step(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		spool_db_fail(d, rc);
	sqlite3_reset(st);
	if (rc == SQLITE_ROW)
		return 1;
	return rc == SQLITE_DONE ? 0 : -rc;
}

/*
 * A savepoint around the updates, so that a rid that does not exist undoes
 * the rows already updated and fails only this request.
 */
static int
spool_db_update(struct spool_db *d, struct spool_req *r)
{
	sqlite3_stmt *st = d->st[ST_UPD_RCPT];
	size_t i;
	int rc;

	if ((rc = spool_db_has(d, r->mid)) <= 0) {
		if (rc == 0)
			r->status = SPOOL_ERR_NOTFOUND;
		return -rc;
	}
	if ((rc = spool_db_step(d, d->st[ST_SAVEPOINT])) != SQLITE_OK)
		return rc;
	for (i = 0; i < r->nrcpt; i++) {
		const struct spool_rcpt *rc_ = &r->rcpts[i];

		sqlite3_bind_int64(st, 1, (sqlite3_int64)r->mid);
		sqlite3_bind_int64(st, 2, rc_->rid);
		sqlite3_bind_int(st, 3, rc_->state);
		sqlite3_bind_int64(st, 4, rc_->attempts);
		sqlite3_bind_int64(st, 5, rc_->next_retry);
		spool_bind_text(st, 6, rc_->last_reply);
		if ((rc = spool_db_step(d, st)) != SQLITE_OK)
			return rc;
		if (sqlite3_changes(d->db) == 0) {
			r->status = SPOOL_ERR_NOTFOUND;
			if ((rc = spool_db_step(d, d->st[ST_ROLLBACK_TO])) !=
			    SQLITE_OK)
				return rc;
			break;
		}
	}
	return spool_db_step(d, d->st[ST_RELEASE]);
}

static int
spool_db_delete(struct spool_db *d, struct spool_req *r)
{
	static const int sts[] = { ST_DEL_ENV, ST_DEL_RCPTS, ST_DEL_BODY,
		ST_DEL_VARS };
	size_t i;
	int rc;

	for (i = 0; i < SL_ARRAY_LEN(sts); i++) {
		sqlite3_bind_int64(d->st[sts[i]], 1, (sqlite3_int64)r->mid);
		if ((rc = spool_db_step(d, d->st[sts[i]])) != SQLITE_OK)
			return rc;
		/* No envelope, no message: the other tables hold nothing of it. */
		if (i == 0 && sqlite3_changes(d->db) == 0) {
			r->status = SPOOL_ERR_NOTFOUND;
			return SQLITE_OK;
		}
	}
	return SQLITE_OK;
}

static int
spool_db_req(struct spool_db *d, struct spool_req *r)
{
	switch (r->type) {
	case SPOOL_REQ_INSERT:
		return spool_db_insert(d, r);
	case SPOOL_REQ_UPDATE:
		return spool_db_update(d, r);
	case SPOOL_REQ_DELETE:
		return spool_db_delete(d, r);
	case SPOOL_REQ_IDEM_EXPIRE:
		sqlite3_bind_int64(d->st[ST_DEL_IDEM], 1, (sqlite3_int64)r->mid);
		return spool_db_step(d, d->st[ST_DEL_IDEM]);
	}
	SL_PANIC("bad spool request type %d", (int)r->type);
}

/* One transaction around n requests; SQLITE_OK once committed, else rolled back. */
static int
spool_db_txn(struct spool_db *d, struct spool_req **reqs, size_t n)
{
	size_t i;
	int rc;

	for (i = 0; i < n; i++)
		reqs[i]->status = SPOOL_OK;
	if ((rc = spool_db_step(d, d->st[ST_BEGIN])) != SQLITE_OK)
		goto fail;
	for (i = 0; i < n; i++)
		if ((rc = spool_db_req(d, reqs[i])) != SQLITE_OK)
			goto fail;
	/* An injected fault replaces the COMMIT, as a failing sync would. */
	if ((rc = spool_db_fault_take(d)) != 0) {
		snprintf(d->emsg, sizeof(d->emsg), "injected fault (%d)", rc);
		goto fail;
	}
	if ((rc = spool_db_step(d, d->st[ST_COMMIT])) != SQLITE_OK)
		goto fail;
	return SQLITE_OK;
fail:
	/* SQLite may have rolled back already (e.g. on SQLITE_FULL). */
	if (!sqlite3_get_autocommit(d->db)) {
		int save = d->sys_errno;
		char emsg[SPOOL_ERRLEN];

		memcpy(emsg, d->emsg, sizeof(emsg));
		spool_db_step(d, d->st[ST_ROLLBACK]);
		d->sys_errno = save;
		memcpy(d->emsg, emsg, sizeof(emsg));
	}
	return rc;
}

/* 1 if rc says the storage failed, so every request would fail alike. */
static int
spool_db_storage_err(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_FULL:
	case SQLITE_IOERR:
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB:
	case SQLITE_CANTOPEN:
	case SQLITE_READONLY:
	case SQLITE_NOMEM:
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
	case SQLITE_PROTOCOL:
		return 1;
	}
	return 0;
}

static enum spool_status
spool_db_status(struct spool_db *d, int rc)
{
	if ((rc & 0xff) == SQLITE_FULL)
		return SPOOL_ERR_NOSPACE;
	if ((rc & 0xff) == SQLITE_IOERR && d->sys_errno == ENOSPC)
		return SPOOL_ERR_NOSPACE;
	return SPOOL_ERR_IO;
}

static double
spool_ms_since(int64_t t0)
{
	return (double)(sl_now_us() - t0) / 1000.0;
}

void
spool_db_run(struct spool_db *d, struct spool_req **reqs, size_t n,
    struct spool_batch_stats *bs, char *err, size_t errlen)
{
	enum spool_status st;
	int64_t t0 = sl_now_us();
	size_t i;
	int rc;

	if (n == 0)
		return;
	if ((rc = spool_db_txn(d, reqs, n)) == SQLITE_OK) {
		bs->commits++;
		bs->requests += n;
		bs->commit_ms += spool_ms_since(t0);
		return;
	}
	bs->failures++;
	snprintf(err, errlen, "spool: transaction of %zu request(s) failed:"
	    " %s", n, d->emsg);
	if (spool_db_storage_err(rc) || n == 1) {
		st = spool_db_status(d, rc);
		for (i = 0; i < n; i++)
			reqs[i]->status = st;
		return;
	}
	/* Not the disk: find the request at fault by running each alone. */
	for (i = 0; i < n; i++) {
		t0 = sl_now_us();
		if ((rc = spool_db_txn(d, &reqs[i], 1)) == SQLITE_OK) {
			bs->commits++;
			bs->requests++;
			bs->commit_ms += spool_ms_since(t0);
			continue;
		}
		bs->failures++;
		reqs[i]->status = spool_db_status(d, rc);
		snprintf(err, errlen, "spool: MID %016llX: %s",
		    (unsigned long long)reqs[i]->mid, d->emsg);
	}
}

int
spool_db_ckpt_wanted(const struct spool_db *d)
{
	return d->wal_dirty ||
	    (int64_t)d->wal_frames * d->page_size >= SPOOL_WAL_LIMIT;
}

int
spool_db_checkpoint(struct spool_db *d, int idle)
{
	int64_t wal_bytes = (int64_t)d->wal_frames * d->page_size;
	int nlog = 0, nckpt = 0;
	int mode, rc;

	if (idle) {
		if (!d->wal_dirty && wal_bytes < SPOOL_WAL_LIMIT)
			return 0;
		mode = wal_bytes >= SPOOL_WAL_LIMIT ?
		    SQLITE_CHECKPOINT_TRUNCATE : SQLITE_CHECKPOINT_PASSIVE;
	} else {
		if (wal_bytes < SPOOL_WAL_HARD_LIMIT)
			return 0;
		mode = SQLITE_CHECKPOINT_RESTART;
	}
	rc = sqlite3_wal_checkpoint_v2(d->db, NULL, mode, &nlog, &nckpt);
	if (rc != SQLITE_OK)
		return 0;
	if (nckpt >= nlog) {
		d->wal_dirty = 0;
		/* After RESTART/TRUNCATE the next commit writes from the start. */
		if (mode != SQLITE_CHECKPOINT_PASSIVE)
			d->wal_frames = 0;
	}
	return 1;
}

int64_t
spool_db_wal_bytes(const struct spool_db *d)
{
	return (int64_t)d->wal_frames * d->page_size;
}

/* ---- the checkpoint thread's connection ---- */

struct spool_cdb {
	sqlite3 *db;
};

struct spool_cdb *
spool_cdb_open(const char *dir, char *err, size_t errlen)
{
	struct spool_cdb *c = xcalloc(1, sizeof(*c));
	char *path = xasprintf("%s/spool.db", dir);

	if (sqlite3_open_v2(path, &c->db, SQLITE_OPEN_READWRITE |
	    SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
		snprintf(err, errlen, "spool: open %s for checkpoints: %s",
		    path, c->db ? sqlite3_errmsg(c->db) : "out of memory");
		sqlite3_close(c->db);
		free(c);
		free(path);
		return NULL;
	}
	/* the checkpoint syncs the database file before it counts as done */
	sqlite3_exec(c->db, "PRAGMA synchronous = FULL", NULL, NULL, NULL);
	free(path);
	return c;
}

int
spool_cdb_checkpoint(struct spool_cdb *c)
{
	int nlog = 0, nckpt = 0;

	return sqlite3_wal_checkpoint_v2(c->db, NULL, SQLITE_CHECKPOINT_PASSIVE,
	    &nlog, &nckpt) == SQLITE_OK;
}

void
spool_cdb_close(struct spool_cdb *c)
{
	if (c == NULL)
		return;
	sqlite3_close(c->db);
	free(c);
}

/* ---- the event loop thread's read-only connection ---- */

struct spool_rdb *
spool_rdb_open(const char *dir, char *err, size_t errlen)
{
	struct spool_rdb *r = xcalloc(1, sizeof(*r));
	char *path = xasprintf("%s/spool.db", dir);

	if (sqlite3_open_v2(path, &r->db, SQLITE_OPEN_READONLY |
	    SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
		snprintf(err, errlen, "spool: open %s read-only: %s", path,
		    r->db ? sqlite3_errmsg(r->db) : "out of memory");
		goto fail;
	}
	sqlite3_busy_timeout(r->db, SPOOL_BUSY_MS);
	if (sqlite3_prepare_v3(r->db, "SELECT mid, arrival, sender, envid,"
	    " ret, flags, client_addr, helo, size, nrcpt FROM envelopes"
	    " ORDER BY mid", -1, SQLITE_PREPARE_PERSISTENT, &r->env,
	    NULL) != SQLITE_OK ||
	    sqlite3_prepare_v3(r->db, "SELECT mid, rid, addr, orcpt, notify,"
	    " state, attempts, next_retry, last_reply FROM recipients"
	    " ORDER BY mid, rid", -1, SQLITE_PREPARE_PERSISTENT, &r->rcpt,
	    NULL) != SQLITE_OK ||
	    sqlite3_prepare_v3(r->db, "SELECT answer FROM idempotency WHERE"
	    " key = ?1 AND created >= ?2", -1, SQLITE_PREPARE_PERSISTENT,
	    &r->idem, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v3(r->db, "SELECT vars FROM rcpt_vars WHERE"
	    " mid = ?1 AND rid = ?2", -1, SQLITE_PREPARE_PERSISTENT, &r->vars,
	    NULL) != SQLITE_OK) {
		snprintf(err, errlen, "spool: prepare: %s",
		    sqlite3_errmsg(r->db));
		goto fail;
	}
	free(path);
	return r;
fail:
	free(path);
	spool_rdb_close(r);
	return NULL;
}

void
spool_rdb_close(struct spool_rdb *r)
{
	if (r == NULL)
		return;
	sqlite3_finalize(r->env);
	sqlite3_finalize(r->rcpt);
	sqlite3_finalize(r->idem);
	sqlite3_finalize(r->vars);
	sqlite3_close(r->db);
	free(r);
}

static char *
spool_col_str(sqlite3_stmt *st, int i)
{
	const unsigned char *s = sqlite3_column_text(st, i);

	return s ? xstrdup((const char *)s) : NULL;
}

static struct spool_msg *
spool_rdb_env(sqlite3_stmt *st)
{
	struct spool_msg *m = xcalloc(1, sizeof(*m));

	m->mid = (uint64_t)sqlite3_column_int64(st, 0);
	m->arrival = sqlite3_column_int64(st, 1);
	m->sender = spool_col_str(st, 2);
	m->envid = spool_col_str(st, 3);
	m->ret = (uint8_t)sqlite3_column_int(st, 4);
	m->flags = (uint8_t)sqlite3_column_int(st, 5);
	m->client_addr = spool_col_str(st, 6);
	m->helo = spool_col_str(st, 7);
	m->size = (uint64_t)sqlite3_column_int64(st, 8);
	return m;
}

static void
spool_rdb_rcpt(sqlite3_stmt *st, struct spool_msg *m, size_t *cap)
{
	struct spool_rcpt *r;

	if (m->nrcpt == *cap) {
		*cap = *cap ? *cap * 2 : 4;
		m->rcpts = xrealloc(m->rcpts, *cap * sizeof(*m->rcpts));
	}
	r = &m->rcpts[m->nrcpt++];
	memset(r, 0, sizeof(*r));
	r->rid = (uint32_t)sqlite3_column_int64(st, 1);
	r->addr = spool_col_str(st, 2);
	r->orcpt = spool_col_str(st, 3);
	r->notify = (uint8_t)sqlite3_column_int(st, 4);
	r->state = (uint8_t)sqlite3_column_int(st, 5);
	r->attempts = (uint32_t)sqlite3_column_int64(st, 6);
	r->next_retry = sqlite3_column_int64(st, 7);
	r->last_reply = spool_col_str(st, 8);
}

/*
 * Both tables are read in key order and merged, so the scan is two
 * sequential passes, inside one read transaction for a consistent view.
 */
long
spool_rdb_recover(struct spool_rdb *r, spool_recover_fn *fn, void *arg,
    char *err, size_t errlen)
{
	int erc, rrc;
	long count = 0;

	if (sqlite3_exec(r->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
		goto fail;
	rrc = sqlite3_step(r->rcpt);
	while ((erc = sqlite3_step(r->env)) == SQLITE_ROW) {
		struct spool_msg *m = spool_rdb_env(r->env);
		size_t cap = 0;

		/* Recipients of a message no longer there are skipped. */
		while (rrc == SQLITE_ROW &&
		    (uint64_t)sqlite3_column_int64(r->rcpt, 0) < m->mid)
			rrc = sqlite3_step(r->rcpt);
		while (rrc == SQLITE_ROW &&
		    (uint64_t)sqlite3_column_int64(r->rcpt, 0) == m->mid) {
			spool_rdb_rcpt(r->rcpt, m, &cap);
			rrc = sqlite3_step(r->rcpt);
		}
		if (rrc != SQLITE_ROW && rrc != SQLITE_DONE) {
			spool_msg_free(m);
			goto fail;
		}
		fn(arg, m);
		count++;
	}
	if (erc != SQLITE_DONE)
		goto fail;
	sqlite3_reset(r->env);
	sqlite3_reset(r->rcpt);
	sqlite3_exec(r->db, "COMMIT", NULL, NULL, NULL);
	return count;
fail:
	snprintf(err, errlen, "spool: recovery scan: %s",
	    sqlite3_errmsg(r->db));
	sqlite3_reset(r->env);
	sqlite3_reset(r->rcpt);
	if (!sqlite3_get_autocommit(r->db))
		sqlite3_exec(r->db, "ROLLBACK", NULL, NULL, NULL);
	return -1;
}

int
spool_rdb_notfound(struct spool_rdb *r)
{
	return r->notfound;
}

/* Read the blob straight into the evbuffer's own space: one copy. */
struct evbuffer *
spool_rdb_body_load(struct spool_rdb *r, uint64_t mid, char *err,
    size_t errlen)
{
	struct evbuffer_iovec v;
	struct evbuffer *buf;
	sqlite3_blob *blob;
	int len, rc;

	rc = sqlite3_blob_open(r->db, "main", "bodies", "data",
	    (sqlite3_int64)mid, 0, &blob);
	/* SQLITE_ERROR with "no such rowid": the message is gone */
	r->notfound = rc == SQLITE_ERROR;
	if (rc != SQLITE_OK) {
		snprintf(err, errlen, "spool: MID %016llX: body: %s",
		    (unsigned long long)mid, sqlite3_errmsg(r->db));
		return NULL;
	}
	buf = evbuffer_new();
	len = sqlite3_blob_bytes(blob);
	if (len > 0) {
		if (evbuffer_reserve_space(buf, len, &v, 1) != 1)
			SL_PANIC("evbuffer_reserve_space(%d) failed", len);
		rc = sqlite3_blob_read(blob, v.iov_base, len, 0);
		if (rc != SQLITE_OK) {
			snprintf(err, errlen, "spool: MID %016llX: body read:"
			    " %s", (unsigned long long)mid,
			    sqlite3_errmsg(r->db));
			sqlite3_blob_close(blob);
			evbuffer_free(buf);
			return NULL;
		}
		v.iov_len = (size_t)len;
		evbuffer_commit_space(buf, &v, 1);
	}
	sqlite3_blob_close(blob);
	return buf;
}

/* One text column of a keyed lookup, copied; NULL if no row (or error). */
static char *
spool_rdb_text(sqlite3_stmt *st)
{
	char *v = NULL;

	if (sqlite3_step(st) == SQLITE_ROW)
		v = spool_col_str(st, 0);
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return v;
}

char *
spool_rdb_idem_get(struct spool_rdb *r, const char *key, int64_t since)
{
	sqlite3_bind_text(r->idem, 1, key, -1, SQLITE_STATIC);
	sqlite3_bind_int64(r->idem, 2, since);
	return spool_rdb_text(r->idem);
}

char *
spool_rdb_rcpt_vars(struct spool_rdb *r, uint64_t mid, uint32_t rid)
{
	sqlite3_bind_int64(r->vars, 1, (sqlite3_int64)mid);
	sqlite3_bind_int64(r->vars, 2, rid);
	return spool_rdb_text(r->vars);
}
