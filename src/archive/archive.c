/* SPDX-License-Identifier: MIT */
/*
 * archive.c: the archive of delivered messages (archive.h).
 *
 * A put compresses each body into one zstd frame, appends the frames to
 * the day's segment, fdatasyncs it, then inserts the index rows in one
 * transaction: an index row always points at bytes on disk (a crash in
 * between leaves only unreferenced bytes). Expiry deletes the rows of
 * days older than the cutoff, then their segment files.
 * Threads: a struct archive_db is used by one thread at a time (the
 * worker in sluiced, the caller in tests).
 */
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <sqlite3.h>
#include <zstd.h>

#include "archive/archive.h"
#include "util/util.h"

#define ARCHIVE_ZSTD_LEVEL 3

struct archive_db {
	sqlite3 *db;
	char *dir;
};

static const char archive_schema[] =
    "CREATE TABLE IF NOT EXISTS entries("
    " id INTEGER PRIMARY KEY,"
    " mid TEXT NOT NULL, rid INTEGER NOT NULL, rcpt TEXT NOT NULL,"
    " sender TEXT, batch TEXT, at INTEGER NOT NULL, day TEXT NOT NULL,"
    " off INTEGER NOT NULL, len INTEGER NOT NULL, size INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS entries_mid ON entries(mid, rid);"
    "CREATE INDEX IF NOT EXISTS entries_rcpt ON entries(rcpt COLLATE NOCASE);"
    "CREATE INDEX IF NOT EXISTS entries_batch ON entries(batch);"
    "CREATE INDEX IF NOT EXISTS entries_day ON entries(day);";

struct archive_db *
archive_db_open(const char *dir, int readonly, char *err, size_t errlen)
{
	struct archive_db *a = xcalloc(1, sizeof(*a));
	char *path;
	int rc;

	if (!readonly && mkdir(dir, 0700) == -1 && errno != EEXIST) {
		snprintf(err, errlen, "archive: mkdir %s: %s", dir,
		    strerror(errno));
		free(a);
		return NULL;
	}
	a->dir = xstrdup(dir);
	path = xasprintf("%s/index.db", dir);
	rc = sqlite3_open_v2(path, &a->db, readonly ? SQLITE_OPEN_READONLY :
	    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
	free(path);
	if (rc != SQLITE_OK) {
		snprintf(err, errlen, "archive: %s/index.db: %s", dir,
		    a->db ? sqlite3_errmsg(a->db) : "out of memory");
		archive_db_close(a);
		return NULL;
	}
	sqlite3_busy_timeout(a->db, 5000);
	if (!readonly && sqlite3_exec(a->db, "PRAGMA journal_mode = WAL;"
	    "PRAGMA synchronous = FULL;", NULL, NULL, NULL) != SQLITE_OK)
		goto fail;
	if (!readonly && sqlite3_exec(a->db, archive_schema, NULL, NULL,
	    NULL) != SQLITE_OK)
		goto fail;
	return a;
fail:
	snprintf(err, errlen, "archive: index: %s", sqlite3_errmsg(a->db));
	archive_db_close(a);
	return NULL;
}

void
archive_db_close(struct archive_db *a)
{
	if (a == NULL)
		return;
	sqlite3_close(a->db);
	free(a->dir);
	free(a);
}

static void
archive_day(int64_t t, char *buf, size_t size)
{
	time_t tt = (time_t)t;
	struct tm tm;

	gmtime_r(&tt, &tm);
	strftime(buf, size, "%Y-%m-%d", &tm);
}

/* Append one compressed frame of body to fd; its offset and length out. */
static int
archive_frame(int fd, struct evbuffer *body, int64_t *off, size_t *len)
{
	size_t n = evbuffer_get_length(body);
	const void *src = evbuffer_pullup(body, -1);
	size_t cap = ZSTD_compressBound(n);
	void *dst = xmalloc(cap);
	size_t z = ZSTD_compress(dst, cap, src, n, ARCHIVE_ZSTD_LEVEL);
	struct stat st;
	int rc = -1;

	if (ZSTD_isError(z)) {
		errno = EINVAL;
		goto done;
	}
	if (fstat(fd, &st) == -1)
		goto done;
	*off = st.st_size;
	*len = z;
	for (size_t w = 0; w < z;) {
		ssize_t r = write(fd, (char *)dst + w, z - w);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			goto done;
		w += (size_t)r;
	}
	rc = 0;
done:
	free(dst);
	return rc;
}

int
archive_db_put(struct archive_db *a, const struct archive_entry *e,
    struct evbuffer *const *bodies, size_t n, char *err, size_t errlen)
{
	sqlite3_stmt *st = NULL;
	char day[16] = "", open_day[16] = "", mid[17];
	int fd = -1, rc = -1;
	int64_t *offs = xcalloc(n ? n : 1, sizeof(*offs));
	size_t *lens = xcalloc(n ? n : 1, sizeof(*lens));

	/* the bytes first, synced; then the rows that point at them */
	for (size_t i = 0; i < n; i++) {
		archive_day(e[i].at, day, sizeof(day));
		if (strcmp(day, open_day) != 0) {
			char *path = xasprintf("%s/%s.zst", a->dir, day);
			if (fd != -1 && (fdatasync(fd) == -1 || close(fd) == -1))
				goto io;
			fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC,
			    0600);
			free(path);
			if (fd == -1)
				goto io;
			memcpy(open_day, day, sizeof(day));
		}
		if (archive_frame(fd, bodies[i], &offs[i], &lens[i]) != 0)
			goto io;
	}
	if (fd != -1 && fdatasync(fd) == -1)
		goto io;
	if (sqlite3_exec(a->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) !=
	    SQLITE_OK || sqlite3_prepare_v2(a->db, "INSERT INTO entries(mid, "
	    "rid, rcpt, sender, batch, at, day, off, len, size) VALUES(?1, ?2,"
	    " ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)", -1, &st, NULL) != SQLITE_OK)
		goto db;
	for (size_t i = 0; i < n; i++) {
		snprintf(mid, sizeof(mid), "%016llX",
		    (unsigned long long)e[i].mid);
		archive_day(e[i].at, day, sizeof(day));
		sqlite3_bind_text(st, 1, mid, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(st, 2, e[i].rid);
		sqlite3_bind_text(st, 3, e[i].rcpt, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 4, e[i].sender, -1, SQLITE_STATIC);
		if (e[i].batch)
			sqlite3_bind_text(st, 5, e[i].batch, -1, SQLITE_STATIC);
		else
			sqlite3_bind_null(st, 5);
		sqlite3_bind_int64(st, 6, e[i].at);
		sqlite3_bind_text(st, 7, day, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(st, 8, offs[i]);
		sqlite3_bind_int64(st, 9, (sqlite3_int64)lens[i]);
		sqlite3_bind_int64(st, 10,
		    (sqlite3_int64)evbuffer_get_length(bodies[i]));
		if (sqlite3_step(st) != SQLITE_DONE)
			goto db;
		sqlite3_reset(st);
	}
	if (sqlite3_exec(a->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		goto db;
	rc = 0;
	goto done;
io:
	snprintf(err, errlen, "archive: %s/%s.zst: %s", a->dir, day,
	    strerror(errno));
	goto done;
db:
	snprintf(err, errlen, "archive: index: %s", sqlite3_errmsg(a->db));
	if (!sqlite3_get_autocommit(a->db))
		sqlite3_exec(a->db, "ROLLBACK", NULL, NULL, NULL);
done:
	sqlite3_finalize(st);
	if (fd != -1)
		close(fd);
	free(offs);
	free(lens);
	return rc;
}

json_t *
archive_db_find(struct archive_db *a, const char *rcpt, uint64_t mid,
    const char *batch, size_t limit, char *err, size_t errlen)
{
	sqlite3_stmt *st;
	json_t *out;
	char m[17];
	int rc;

	if (sqlite3_prepare_v2(a->db, "SELECT mid, rid, rcpt, sender, batch, "
	    "at, size, (SELECT count(*) FROM entries e2 WHERE e2.mid = "
	    "entries.mid) FROM entries WHERE (?1 IS NULL OR rcpt = ?1 COLLATE "
	    "NOCASE OR ',' || rcpt || ',' LIKE '%,' || ?1 || ',%') AND "
	    "(?2 IS NULL OR mid = ?2) AND (?3 IS NULL OR batch = ?3) "
	    "ORDER BY at DESC, id DESC LIMIT ?4", -1, &st, NULL) != SQLITE_OK) {
		snprintf(err, errlen, "archive: index: %s",
		    sqlite3_errmsg(a->db));
		return NULL;
	}
	if (rcpt)
		sqlite3_bind_text(st, 1, rcpt, -1, SQLITE_STATIC);
	if (mid) {
		snprintf(m, sizeof(m), "%016llX", (unsigned long long)mid);
		sqlite3_bind_text(st, 2, m, -1, SQLITE_STATIC);
	}
	if (batch)
		sqlite3_bind_text(st, 3, batch, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, (sqlite3_int64)limit);
	out = json_array();
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *emid = (const char *)sqlite3_column_text(st, 0);
		int64_t rid = sqlite3_column_int64(st, 1);
		char *id = sqlite3_column_int64(st, 7) > 1 ?
		    xasprintf("%s.%lld", emid, (long long)rid) : xstrdup(emid);
		const char *b = (const char *)sqlite3_column_text(st, 4);

		json_array_append_new(out, json_pack("{s:s,s:s,s:I,s:s,s:s,"
		    "s:o,s:I,s:I}", "id", id, "mid", emid, "rid", (json_int_t)rid,
		    "rcpt", (const char *)sqlite3_column_text(st, 2), "sender",
		    sqlite3_column_text(st, 3) ? (const char *)
		    sqlite3_column_text(st, 3) : "", "batch", b ? json_string(b) :
		    json_null(), "at", (json_int_t)sqlite3_column_int64(st, 5),
		    "size", (json_int_t)sqlite3_column_int64(st, 6)));
		free(id);
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		snprintf(err, errlen, "archive: index: %s",
		    sqlite3_errmsg(a->db));
		json_decref(out);
		return NULL;
	}
	return out;
}

int
archive_db_show(struct archive_db *a, const char *id, struct evbuffer *out,
    char *err, size_t errlen)
{
	sqlite3_stmt *st;
	char mid[17], *path = NULL;
	const char *dot = strchr(id, '.');
	int64_t rid = dot ? strtoll(dot + 1, NULL, 10) : -1, off, len, size;
	void *z = NULL, *raw = NULL;
	int fd = -1, rc = -1;

	if ((dot ? (size_t)(dot - id) : strlen(id)) != 16) {
		snprintf(err, errlen, "archive: '%s' is not MID or MID.RID", id);
		return 1;
	}
	memcpy(mid, id, 16);
	mid[16] = '\0';
	for (int i = 0; i < 16; i++)
		if (mid[i] >= 'a' && mid[i] <= 'f')
			mid[i] -= 32;
	if (sqlite3_prepare_v2(a->db, "SELECT day, off, len, size FROM entries "
	    "WHERE mid = ?1 AND (?2 < 0 OR rid = ?2) ORDER BY id LIMIT 1", -1,
	    &st, NULL) != SQLITE_OK) {
		snprintf(err, errlen, "archive: index: %s",
		    sqlite3_errmsg(a->db));
		return -1;
	}
	sqlite3_bind_text(st, 1, mid, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, rid);
	if (sqlite3_step(st) != SQLITE_ROW) {
		sqlite3_finalize(st);
		snprintf(err, errlen, "archive: %s is not in the archive", id);
		return 1;
	}
	path = xasprintf("%s/%s.zst", a->dir, sqlite3_column_text(st, 0));
	off = sqlite3_column_int64(st, 1);
	len = sqlite3_column_int64(st, 2);
	size = sqlite3_column_int64(st, 3);
	sqlite3_finalize(st);
	z = xmalloc((size_t)len + 1);
	raw = xmalloc((size_t)size + 1);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1 ||
	    pread(fd, z, (size_t)len, off) != len) {
		snprintf(err, errlen, "archive: %s: %s", path, fd == -1 ?
		    strerror(errno) : "short read");
		goto done;
	}
	if (ZSTD_decompress(raw, (size_t)size + 1, z, (size_t)len) !=
	    (size_t)size) {
		snprintf(err, errlen, "archive: %s: a damaged frame at %lld",
		    path, (long long)off);
		goto done;
	}
	evbuffer_add(out, raw, (size_t)size);
	rc = 0;
done:
	if (fd != -1)
		close(fd);
	free(path);
	free(z);
	free(raw);
	return rc;
}

long
archive_db_expire(struct archive_db *a, int64_t before)
{
	char cutoff[16], *path;
	sqlite3_stmt *st;
	long n;

	archive_day(before, cutoff, sizeof(cutoff));
	if (sqlite3_exec(a->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) !=
	    SQLITE_OK)
		return -1;
	sqlite3_prepare_v2(a->db, "SELECT DISTINCT day FROM entries WHERE "
	    "day < ?1", -1, &st, NULL);
	sqlite3_bind_text(st, 1, cutoff, -1, SQLITE_STATIC);
	while (sqlite3_step(st) == SQLITE_ROW) {
		path = xasprintf("%s/%s.zst", a->dir, sqlite3_column_text(st, 0));
		unlink(path);
		free(path);
	}
	sqlite3_finalize(st);
	sqlite3_prepare_v2(a->db, "DELETE FROM entries WHERE day < ?1", -1, &st,
	    NULL);
	sqlite3_bind_text(st, 1, cutoff, -1, SQLITE_STATIC);
	sqlite3_step(st);
	sqlite3_finalize(st);
	n = sqlite3_changes(a->db);
	sqlite3_exec(a->db, "COMMIT", NULL, NULL, NULL);
	return n;
}

int
archive_match(const char *patterns, const char *sender)
{
	char *list = xstrdup(patterns ? patterns : ""), *save = NULL, *p;
	int hit = 0;

	for (p = strtok_r(list, ",", &save); p && !hit;
	    p = strtok_r(NULL, ",", &save)) {
		p = sl_strtrim(p);
		hit = *p != '\0' && fnmatch(p, sender, FNM_CASEFOLD) == 0;
	}
	free(list);
	return hit;
}
