/* SPDX-License-Identifier: MIT */
/*
 * sink_int.h: what the files of src/sink share and nothing else sees.
 */
#ifndef SL_SINK_INT_H
#define SL_SINK_INT_H

#include <jansson.h>

#include "sink/sink.h"

struct evhttp;
struct sl_conf;
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
	char host[64];

	/* http.c */
	struct evhttp *http;
	int http_port;
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
/* Remove every captured message; returns how many. */
size_t sink_store_delete_all(struct sink *k);

/* http.c */
int sink_http_start(struct sink *k, const char *addr, char *err,
    size_t errlen);
void sink_http_stop(struct sink *k);

#endif
