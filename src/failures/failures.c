/* SPDX-License-Identifier: MIT */
/*
 * failures.c: the failure queue's store (failures.h).
 *
 * Tables: bodies (one per original message: sender, envid, flags, batch,
 * body) and failures (one per recipient: mid, rid, rcpt, vars, reply,
 * failed_at), UNIQUE(mid, rid) so recording again after a crash changes
 * nothing. A body goes when its last failure does.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <event2/buffer.h>
#include <sqlite3.h>

#include "failures/failures.h"
#include "util/util.h"

struct failures_db {
	sqlite3 *db;
};

static const char failures_schema[] =
    "CREATE TABLE IF NOT EXISTS bodies("
    " mid INTEGER PRIMARY KEY, sender TEXT NOT NULL, envid TEXT,"
    " flags INTEGER NOT NULL, batch TEXT, data BLOB NOT NULL);"
    "CREATE TABLE IF NOT EXISTS failures("
    " id INTEGER PRIMARY KEY, mid INTEGER NOT NULL, rid INTEGER NOT NULL,"
    " rcpt TEXT NOT NULL, vars TEXT, reply TEXT, batch TEXT,"
    " failed_at INTEGER NOT NULL, UNIQUE(mid, rid));"
    "CREATE INDEX IF NOT EXISTS failures_batch ON failures(batch);"
    "CREATE INDEX IF NOT EXISTS failures_at ON failures(failed_at);";

static int
fail_db(struct failures_db *f, char *err, size_t errlen)
{
	snprintf(err, errlen, "failures: %s", sqlite3_errmsg(f->db));
	if (!sqlite3_get_autocommit(f->db))
		sqlite3_exec(f->db, "ROLLBACK", NULL, NULL, NULL);
	return -1;
}

struct failures_db *
failures_db_open(const char *dir, char *err, size_t errlen)
{
	struct failures_db *f = xcalloc(1, sizeof(*f));
	char *path = xasprintf("%s/failures.db", dir);
	int rc;

	mkdir(dir, 0700);
	rc = sqlite3_open_v2(path, &f->db, SQLITE_OPEN_READWRITE |
	    SQLITE_OPEN_CREATE, NULL);
	free(path);
	if (rc != SQLITE_OK || sqlite3_exec(f->db, "PRAGMA journal_mode = WAL;"
	    "PRAGMA synchronous = FULL;", NULL, NULL, NULL) != SQLITE_OK ||
	    sqlite3_exec(f->db, failures_schema, NULL, NULL, NULL) !=
	    SQLITE_OK) {
		snprintf(err, errlen, "failures: %s/failures.db: %s", dir,
		    f->db ? sqlite3_errmsg(f->db) : "out of memory");
		failures_db_close(f);
		return NULL;
	}
	sqlite3_busy_timeout(f->db, 5000);
	return f;
}

void
failures_db_close(struct failures_db *f)
{
	if (f == NULL)
		return;
	sqlite3_close(f->db);
	free(f);
}

static void
bind_opt(sqlite3_stmt *st, int i, const char *s)
{
	if (s != NULL)
		sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, i);
}

int
failures_db_add(struct failures_db *f, const struct failure_msg *m, size_t n,
    char *err, size_t errlen)
{
	sqlite3_stmt *b = NULL, *r = NULL;

	if (sqlite3_exec(f->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) !=
	    SQLITE_OK ||
	    sqlite3_prepare_v2(f->db, "INSERT OR IGNORE INTO bodies(mid, sender,"
	    " envid, flags, batch, data) VALUES(?1, ?2, ?3, ?4, ?5, ?6)", -1, &b,
	    NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(f->db, "INSERT OR IGNORE INTO failures(mid, rid,"
	    " rcpt, vars, reply, batch, failed_at) VALUES(?1, ?2, ?3, ?4, ?5,"
	    " ?6, ?7)", -1, &r, NULL) != SQLITE_OK)
		goto fail;
	for (size_t i = 0; i < n; i++) {
		size_t len = evbuffer_get_length(m[i].body);

		sqlite3_bind_int64(b, 1, (sqlite3_int64)m[i].mid);
		sqlite3_bind_text(b, 2, m[i].sender, -1, SQLITE_STATIC);
		bind_opt(b, 3, m[i].envid);
		sqlite3_bind_int(b, 4, m[i].flags);
		bind_opt(b, 5, m[i].batch);
		sqlite3_bind_blob64(b, 6, evbuffer_pullup(m[i].body, -1), len,
		    SQLITE_STATIC);
		if (sqlite3_step(b) != SQLITE_DONE)
			goto fail;
		sqlite3_reset(b);
		for (size_t k = 0; k < m[i].nrcpt; k++) {
			const struct failure_rcpt *x = &m[i].rcpts[k];
			sqlite3_bind_int64(r, 1, (sqlite3_int64)m[i].mid);
			sqlite3_bind_int64(r, 2, x->rid);
			sqlite3_bind_text(r, 3, x->addr, -1, SQLITE_STATIC);
			bind_opt(r, 4, x->vars);
			bind_opt(r, 5, x->reply);
			bind_opt(r, 6, m[i].batch);
			sqlite3_bind_int64(r, 7, m[i].failed_at);
			if (sqlite3_step(r) != SQLITE_DONE)
				goto fail;
			sqlite3_reset(r);
		}
	}
	if (sqlite3_exec(f->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		goto fail;
	sqlite3_finalize(b);
	sqlite3_finalize(r);
	return 0;
fail:
	fail_db(f, err, errlen);
	sqlite3_finalize(b);
	sqlite3_finalize(r);
	return -1;
}

json_t *
failures_db_list(struct failures_db *f, const char *batch, size_t limit,
    char *err, size_t errlen)
{
	sqlite3_stmt *st;
	json_t *out;
	char mid[17];
	int rc;

	if (sqlite3_prepare_v2(f->db, "SELECT f.id, f.mid, f.rid, f.rcpt, "
	    "b.sender, f.batch, f.reply, f.failed_at FROM failures f JOIN "
	    "bodies b ON b.mid = f.mid WHERE ?1 IS NULL OR f.batch = ?1 "
	    "ORDER BY f.id LIMIT ?2", -1, &st, NULL) != SQLITE_OK) {
		fail_db(f, err, errlen);
		return NULL;
	}
	bind_opt(st, 1, batch);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)limit);
	out = json_array();
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *b = (const char *)sqlite3_column_text(st, 5);
		const char *rep = (const char *)sqlite3_column_text(st, 6);

		snprintf(mid, sizeof(mid), "%016llX", (unsigned long long)
		    sqlite3_column_int64(st, 1));
		json_array_append_new(out, json_pack("{s:I,s:s,s:I,s:s,s:s,s:o,"
		    "s:o,s:I}", "id", (json_int_t)sqlite3_column_int64(st, 0),
		    "mid", mid, "rid", (json_int_t)sqlite3_column_int64(st, 2),
		    "rcpt", (const char *)sqlite3_column_text(st, 3), "sender",
		    (const char *)sqlite3_column_text(st, 4), "batch",
		    b ? json_string(b) : json_null(), "reply", rep ?
		    json_string(rep) : json_null(), "failed_at",
		    (json_int_t)sqlite3_column_int64(st, 7)));
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		json_decref(out);
		fail_db(f, err, errlen);
		return NULL;
	}
	return out;
}

static char *
col_dup(sqlite3_stmt *st, int i)
{
	const char *s = (const char *)sqlite3_column_text(st, i);

	return s ? xstrdup(s) : NULL;
}

/* The retry entry of mid in r[0..*n), added (with its body) if new. */
static struct failure_retry *
take_msg(struct failures_db *f, struct failure_retry **r, size_t *n,
    uint64_t mid)
{
	struct failure_retry *x;
	sqlite3_stmt *st;

	for (size_t i = 0; i < *n; i++)
		if ((*r)[i].mid == mid)
			return &(*r)[i];
	if (sqlite3_prepare_v2(f->db, "SELECT sender, envid, flags, batch, "
	    "data FROM bodies WHERE mid = ?1", -1, &st, NULL) != SQLITE_OK)
		return NULL;
	sqlite3_bind_int64(st, 1, (sqlite3_int64)mid);
	if (sqlite3_step(st) != SQLITE_ROW) {
		sqlite3_finalize(st);
		return NULL;
	}
	*r = xrealloc(*r, (*n + 1) * sizeof(**r));
	x = &(*r)[(*n)++];
	memset(x, 0, sizeof(*x));
	x->mid = mid;
	x->sender = col_dup(st, 0);
	x->envid = col_dup(st, 1);
	x->flags = (uint8_t)sqlite3_column_int(st, 2);
	x->batch = col_dup(st, 3);
	x->body = evbuffer_new();
	evbuffer_add(x->body, sqlite3_column_blob(st, 4),
	    (size_t)sqlite3_column_bytes(st, 4));
	sqlite3_finalize(st);
	return x;
}

struct failure_retry *
failures_db_take(struct failures_db *f, const int64_t *ids, size_t nids,
    const char *batch, int all, size_t *n, json_t *missing, char *err,
    size_t errlen)
{
	struct failure_retry *r = NULL;
	sqlite3_stmt *st;
	size_t i = 0;

	*n = 0;
	if (sqlite3_prepare_v2(f->db, "SELECT id, mid, rcpt, vars FROM failures"
	    " WHERE (?1 = 1) OR (?2 IS NOT NULL AND batch = ?2) OR id = ?3 "
	    "ORDER BY id", -1, &st, NULL) != SQLITE_OK) {
		fail_db(f, err, errlen);
		return NULL;
	}
	/* one pass for all or a batch; one per id otherwise */
	do {
		int found = 0;

		sqlite3_reset(st);
		sqlite3_bind_int(st, 1, all);
		bind_opt(st, 2, batch);
		sqlite3_bind_int64(st, 3, nids ? ids[i] : -1);
		while (sqlite3_step(st) == SQLITE_ROW) {
			struct failure_retry *x = take_msg(f, &r, n,
			    (uint64_t)sqlite3_column_int64(st, 1));
			if (x == NULL)
				continue;
			x->rcpts = xrealloc(x->rcpts, (x->nrcpt + 1) *
			    sizeof(*x->rcpts));
			x->rcpts[x->nrcpt].id = sqlite3_column_int64(st, 0);
			x->rcpts[x->nrcpt].addr = col_dup(st, 2);
			x->rcpts[x->nrcpt].vars = col_dup(st, 3);
			x->nrcpt++;
			found = 1;
		}
		if (nids && !found && missing != NULL)
			json_array_append_new(missing, json_integer(ids[i]));
	} while (++i < nids);
	sqlite3_finalize(st);
	return r;
}

void
failures_retry_free(struct failure_retry *r, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(r[i].sender);
		free(r[i].envid);
		free(r[i].batch);
		if (r[i].body)
			evbuffer_free(r[i].body);
		for (size_t k = 0; k < r[i].nrcpt; k++) {
			free(r[i].rcpts[k].addr);
			free(r[i].rcpts[k].vars);
		}
		free(r[i].rcpts);
	}
	free(r);
}

static long
failures_exec_gc(struct failures_db *f, sqlite3_stmt *st)
{
	long n;

	if (sqlite3_step(st) != SQLITE_DONE) {
		sqlite3_finalize(st);
		return -1;
	}
	n = sqlite3_changes(f->db);
	sqlite3_finalize(st);
	return n;
}

static long
failures_gc_done(struct failures_db *f, long n)
{
	if (n >= 0 && sqlite3_exec(f->db, "DELETE FROM bodies WHERE mid NOT IN "
	    "(SELECT mid FROM failures); COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		n = -1;
	if (n < 0 && !sqlite3_get_autocommit(f->db))
		sqlite3_exec(f->db, "ROLLBACK", NULL, NULL, NULL);
	return n;
}

long
failures_db_remove(struct failures_db *f, const int64_t *ids, size_t nids)
{
	sqlite3_stmt *st;
	long n = 0;

	if (sqlite3_exec(f->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) !=
	    SQLITE_OK || sqlite3_prepare_v2(f->db, "DELETE FROM failures WHERE "
	    "id = ?1", -1, &st, NULL) != SQLITE_OK)
		return failures_gc_done(f, -1);
	for (size_t i = 0; i < nids; i++) {
		sqlite3_bind_int64(st, 1, ids[i]);
		if (sqlite3_step(st) != SQLITE_DONE) {
			sqlite3_finalize(st);
			return failures_gc_done(f, -1);
		}
		n += sqlite3_changes(f->db);
		sqlite3_reset(st);
	}
	sqlite3_finalize(st);
	return failures_gc_done(f, n);
}

long
failures_db_purge(struct failures_db *f, const char *batch)
{
	sqlite3_stmt *st;

	if (sqlite3_exec(f->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) !=
	    SQLITE_OK || sqlite3_prepare_v2(f->db, "DELETE FROM failures WHERE "
	    "?1 IS NULL OR batch = ?1", -1, &st, NULL) != SQLITE_OK)
		return failures_gc_done(f, -1);
	bind_opt(st, 1, batch);
	return failures_gc_done(f, failures_exec_gc(f, st));
}

long
failures_db_expire(struct failures_db *f, int64_t before)
{
	sqlite3_stmt *st;

	if (sqlite3_exec(f->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) !=
	    SQLITE_OK || sqlite3_prepare_v2(f->db, "DELETE FROM failures WHERE "
	    "failed_at < ?1", -1, &st, NULL) != SQLITE_OK)
		return failures_gc_done(f, -1);
	sqlite3_bind_int64(st, 1, before);
	return failures_gc_done(f, failures_exec_gc(f, st));
}
