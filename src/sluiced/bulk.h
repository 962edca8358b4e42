/* SPDX-License-Identifier: MIT */
/*
 * bulk.h: what sluiced's bulk-sending files share (inject.c: injection
 * from HTTP and RabbitMQ, the batch bodies at delivery; outcomes.c: the
 * scheduler's hooks for events, the failure queue and the archive, and
 * their control commands).
 *
 * Shutdown (sluiced_run): sched_stop, sluiced_bulk_quiesce (the failure
 * queue's thread finishes while the spool still runs; from then on a
 * final message with failures stays in the spool for the next start),
 * spool_close (the answers still due go out: HTTP or AMQP acks), then
 * sluiced_bulk_free (AMQP acks flushed, events to disk, archive synced).
 * Threads: the loop thread; the stores run on their worker threads.
 */
#ifndef SL_SLUICED_BULK_H
#define SL_SLUICED_BULK_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "http/http.h"
#include "spool/spool.h"
#include "util/util.h"

struct archive;
struct evbuffer;
struct control_req;
struct events;
struct failures_db;
struct inject_batch;
struct mq;
struct sl_worker;
struct sluiced;
struct spool_msg;
struct spool_reader;

#define BULK_CACHE 64

struct sluiced_bulk {
	struct sluiced *d;
	struct events *events;
	struct mq *mq;
	struct archive *archive;
	struct sl_worker *fw;		/* the failure queue's thread */
	struct sl_worker *iw;		/* parses injection requests */
	struct sl_worker *bw;		/* builds batch messages */
	struct spool_reader *reader;	/* the builder's, used on bw only */
	struct failures_db *fdb;	/* used on fw only */
	struct {
		uint64_t mid;
		struct inject_batch *b;
	} cache[BULK_CACHE],		/* compiled batch templates by MID */
	  bcache[BULK_CACHE];		/* the builder's own (bw only) */
	json_t *keys_inflight;		/* Idempotency-Keys being stored */
	struct http_route routes[1];	/* POST /api/v1/inject */
	struct event *hourly_ev;	/* idempotency and failure expiry */
	int quiesced;
	uint64_t injected, injected_rcpts, rejected_rcpts;
};

/* The answer to an injection: HTTP status and body (taken). */
typedef void sluiced_inject_fn(void *arg, int code, json_t *answer);

struct sluiced_bulk *sluiced_bulk_new(struct sluiced *d, char *err,
    size_t errlen);
void sluiced_bulk_quiesce(struct sluiced_bulk *b);
void sluiced_bulk_free(struct sluiced_bulk *b);

/*
 * Inject a request (body: its JSON, taken; key: its Idempotency-Key or
 * NULL; peer for the log). The parse runs on the injection thread. fn
 * answers once: 200 with {batch_id, accepted,
 * rejected} after the batch is durable (or the first answer to key), 400
 * for a malformed request, 409 while the same key is being stored, 503
 * when the spool failed.
 */
void sluiced_inject(struct sluiced_bulk *b, struct evbuffer *body,
    const char *key, const char *peer, sluiced_inject_fn *fn, void *arg);
/* Add POST /api/v1/inject to the HTTP listener (http_inject.c). */
void sluiced_bulk_routes(struct sluiced_bulk *b, struct http_server *srv);
/* The compiled template of batch mid (cached; NULL if unreadable). */
struct inject_batch *sluiced_bulk_batch(struct sluiced_bulk *b,
    uint64_t mid);
/* The scheduler's batch_body hook (struct sched_hooks): the message is
 * built on the builder thread, cb runs on the loop. */
void sluiced_bulk_batch_body(void *arg, uint64_t mid, uint32_t rid,
    const char *addr, spool_body_fn *cb, void *cbarg);
/* A message received over SMTP is durable: its "received" event. */
void sluiced_bulk_received(struct sluiced_bulk *b, uint64_t mid,
    const char *sender, size_t nrcpt);

/* The first line of a token file, trimmed (a new string), or NULL with
 * "what path: ..." in err. */
char *sluiced_read_token(const char *path, const char *what, char *err,
    size_t errlen);
/* The bulk families of /metrics (a metrics_src extra). */
void sluiced_bulk_metrics(void *arg, struct evbuffer *out);

/* outcomes.c */
void sluiced_bulk_hooks(struct sluiced_bulk *b);
void sluiced_bulk_emit(struct sluiced_bulk *b, json_t *event);
/* Control commands failures.* and archive.*: 1 if cmd was one of them. */
int sluiced_bulk_ctl(struct sluiced_bulk *b, struct control_req *req,
    const char *cmd, json_t *args);

#endif
