/* SPDX-License-Identifier: MIT */
/*
 * events.h: delivery events out ([events] webhook_url): every reception,
 * delivery, deferral, bounce and expiry as one JSON object, POSTed in
 * batches (a JSON array) with libcurl's multi interface on the event loop,
 * so a slow or dead receiver never slows delivery.
 *
 * Events wait in memory; past a small bound, and always while the
 * receiver is failing, they go to a disk spool (SPOOL_DIR/events.jsonl,
 * one JSON line each, kept across restarts) of at most [events]
 * spool_max bytes; past that they are dropped and counted. Sent in order:
 * the disk backlog (older) before memory. A failed POST (no answer, or
 * not 2xx) is retried with a backoff that doubles from 1 s to [events]
 * retry_max.
 *
 * Threads: the loop thread; disk work runs on a worker thread.
 */
#ifndef SL_EVENTS_H
#define SL_EVENTS_H

#include <stdint.h>

#include <jansson.h>

struct event_base;
struct events;

struct events_conf {
	const char *webhook_url;	/* "" or NULL: no webhook */
	const char *spool_dir;		/* where events.jsonl lives */
	int64_t spool_max;		/* bytes */
	int64_t batch_size;		/* events per POST */
	int64_t batch_delay_ms;		/* wait this long to fill a batch */
	int64_t retry_max;		/* seconds */
	int64_t timeout;		/* seconds per POST */
	const char *token;		/* sent as a bearer token, or NULL */
};

struct events_stats {
	uint64_t emitted, sent, dropped, posts, failures;
	uint64_t queued;		/* in memory and on disk now */
	uint64_t spooled_bytes;		/* on disk now */
};

/* Start; NULL with a reason in err. conf's strings are copied. */
struct events *events_new(struct event_base *base,
    const struct events_conf *conf, char *err, size_t errlen);
/* Stop: events in memory are written to the disk spool first. */
void events_free(struct events *ev);
/* Queue one event; takes e. NULL ev does nothing (no webhook). */
void events_emit(struct events *ev, json_t *e);
void events_stats_get(const struct events *ev, struct events_stats *out);

#endif
