/* SPDX-License-Identifier: MIT */
/*
 * sink_int.h: what the files of src/sink share and nothing else sees.
 */
#ifndef SL_SINK_INT_H
#define SL_SINK_INT_H

#include <jansson.h>

#include "sink/sink.h"

struct evbuffer;
struct evhttp;
struct sink_pop3;
struct sl_conf;
struct sl_worker;
struct smtpd_server;
struct smtpd_session;
struct spool_msg;

#define SINK_CONN_BUCKETS 1024

/* What the sink remembers of an open connection. */
struct sink_conn {
	struct sink_conn *next;
	uint64_t icid;
	int counted;		/* in stats.active (not refused) */
};

struct sink {
	struct event_base *base;
	struct sink_opts o;
	const struct sink_rules *rules;
	struct sl_conf *conf;
	struct smtpd_server *srv;
	struct sink_stats st;
	uint64_t rng;
	uint64_t next_mid;
	struct sink_limiter **limiters;	/* one per rules->limits[i] */
	struct sink_conn *conns[SINK_CONN_BUCKETS];

	/* store.c: the Maildir, its index file and the index in memory */
	char *maildir;			/* NULL: discard */
	int index_fd;
	json_t *msgs;			/* array of index objects */
	uint64_t seq;
	uint64_t changes;		/* grows with every put and delete */
	char host[64];

	int gmime;			/* g_mime_init() was called */

	/* reads of captured files, off the loop (http.c, pop3.c) */
	struct sl_worker *io;

	/* http.c */
	struct evhttp *http;
	int http_port;
	int http_stopping;

	/* pop3.c */
	struct sink_pop3 *pop3;
};

/* store.c */
int sink_store_open(struct sink *k, char *err, size_t errlen);
void sink_store_close(struct sink *k);
/* Write msg (borrowed) as one Maildir file plus its index line; 0 or -1. */
int sink_store_put(struct sink *k, struct smtpd_session *s,
    const struct spool_msg *msg);
/* The index object of id (borrowed), or NULL. */
json_t *sink_store_find(struct sink *k, const char *id);
/* The path of a message's file; returns a new string (free()). */
char *sink_store_path(struct sink *k, json_t *meta);
/* Remove one captured message; 0, or -1 if id is not captured. */
int sink_store_delete(struct sink *k, const char *id);
/* Remove every captured message; returns how many. */
size_t sink_store_delete_all(struct sink *k);

/* query.c: the inbox's search ("to:x from:y subject:z words"). */
enum sink_qfield { SINK_Q_ANY, SINK_Q_TO, SINK_Q_FROM, SINK_Q_SUBJECT };
#define SINK_QUERY_MAX 16
struct sink_query {
	size_t n;
	enum sink_qfield fields[SINK_QUERY_MAX];
	char *words[SINK_QUERY_MAX];	/* owned */
};
/* Add the words of s; -1 if there are more than SINK_QUERY_MAX. */
int sink_query_parse(struct sink_query *q, const char *s);
/* Add one word (len bytes of w) for field; empty words are skipped. */
int sink_query_add(struct sink_query *q, enum sink_qfield field,
    const char *w, size_t len);
/* 1 if the index object meta matches every word. */
int sink_query_match(const struct sink_query *q, json_t *meta);
void sink_query_free(struct sink_query *q);

/* mime.c */
/* How much of a message's start the index reads for Subject: and From:. */
#define SINK_MIME_HEAD (64 * 1024)
/* The header fields, unfolded, as [[name, value], ...]; a new array. */
json_t *sink_mime_headers(const char *p, size_t len);
/* Set "subject" and "from" (decoded, "" when absent) in meta. */
void sink_mime_summary(const char *p, size_t len, json_t *meta);
/*
 * On the I/O worker. The message in the file at path parsed: {"headers"
 * (decoded), "subject", "from", "to", "cc", "text", "html" (true if there
 * is an HTML body), "attachments": [{"part", "type", "filename", "size"}]};
 * NULL with errno if the file cannot be read.
 */
json_t *sink_mime_view(const char *path);
/* The HTML body (UTF-8) into out; -1 with errno (ENOENT: none). */
int sink_mime_html(const char *path, struct evbuffer *out);
/* Leaf part n decoded into out, its type and file name (new strings; name
 * may be NULL); -1 with errno (ENOENT: no such part). */
int sink_mime_part(const char *path, int n, struct evbuffer *out, char **type,
    char **filename);

/* http.c */
int sink_http_start(struct sink *k, const char *addr, char *err,
    size_t errlen);
/* Refuse new requests that read files; answers in flight still go out. */
void sink_http_quiesce(struct sink *k);
void sink_http_stop(struct sink *k);

/* pop3.c */
int sink_pop3_start(struct sink *k, const char *addr, char *err,
    size_t errlen);
/* Close every POP3 session (at once, without UPDATE) and the listener. */
void sink_pop3_stop(struct sink *k);
/* Stop, then free what is left (after the I/O worker is gone). */
void sink_pop3_free(struct sink *k);

/* sink.c */
/* 1 if user and pass are one of --auth's pairs, or none was given. */
int sink_user_ok(const struct sink *k, const char *user, const char *pass);

#endif
