/* SPDX-License-Identifier: MIT */
/*
 * archive.h: delivered messages kept compressed for [archive] retention
 * ([archive] dir): one zstd frame per delivered message, appended to the
 * day's segment file (DIR/YYYY-MM-DD.zst), and an SQLite index
 * (DIR/index.db) by MID, recipient, sender and batch. Expired days are
 * removed whole (index rows and segment).
 *
 * struct archive_db is the store itself, used by one thread at a time;
 * struct archive runs it on its own worker thread for sluiced: adds are
 * group-committed (one fdatasync of the segment and one commit for every
 * entry pending), queries answer on the loop thread.
 */
#ifndef SL_ARCHIVE_H
#define SL_ARCHIVE_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct event_base;
struct evbuffer;
struct archive;
struct archive_db;

struct archive_entry {
	uint64_t mid;
	uint32_t rid;		/* the first delivered recipient's */
	const char *rcpt;	/* the recipients delivered, comma-separated */
	const char *sender;
	const char *batch;	/* batch id, or NULL */
	int64_t at;		/* unix seconds of the delivery */
};

/* Open (creating) the store in dir; NULL with the reason in err. */
struct archive_db *archive_db_open(const char *dir, int readonly, char *err,
    size_t errlen);
void archive_db_close(struct archive_db *db);
/* Store n entries with their bodies; 0, or -1 with err (nothing kept). */
int archive_db_put(struct archive_db *db, const struct archive_entry *e,
    struct evbuffer *const *bodies, size_t n, char *err, size_t errlen);
/*
 * Entries matching rcpt (exact, any case), mid or batch (one of them;
 * mid 0 and NULLs are "any"), newest first, at most limit: a new array of
 * objects {id, mid, rid, rcpt, sender, batch, at, size}. id is what
 * archive_db_show takes: "MID" or "MID.RID".
 */
json_t *archive_db_find(struct archive_db *db, const char *rcpt,
    uint64_t mid, const char *batch, size_t limit, char *err, size_t errlen);
/* The message stored under id ("MID" or "MID.RID") into out; 0, 1 not
 * found, -1 error. */
int archive_db_show(struct archive_db *db, const char *id,
    struct evbuffer *out, char *err, size_t errlen);
/* Remove what was delivered before `before` (whole days); count removed. */
long archive_db_expire(struct archive_db *db, int64_t before);

/* 1 if sender matches one of the comma-separated glob patterns (any case). */
int archive_match(const char *patterns, const char *sender);

/* ---- on a worker thread, for sluiced ---- */

struct archive *archive_new(struct event_base *base, const char *dir,
    int64_t retention, char *err, size_t errlen);
void archive_free(struct archive *a);
/* Archive a delivered message; takes body. Loop thread. */
void archive_add(struct archive *a, const struct archive_entry *e,
    struct evbuffer *body);
/* result (a new reference), or NULL with err; notfound: the id is not
 * there (or is no id). */
typedef void archive_answer_fn(void *arg, json_t *result, int notfound,
    const char *err);
/* Run a find (args as archive_db_find) or a show (result {id, message_base64})
 * on the worker; fn gets a new reference or an error, on the loop. */
void archive_find(struct archive *a, const char *rcpt, uint64_t mid,
    const char *batch, archive_answer_fn *fn, void *arg);
void archive_show(struct archive *a, const char *id, archive_answer_fn *fn,
    void *arg);
/* Entries added, and those the store failed to keep. */
void archive_stats(const struct archive *a, uint64_t *added,
    uint64_t *failed);

#endif
