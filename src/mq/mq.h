/* SPDX-License-Identifier: MIT */
/*
 * mq.h: the RabbitMQ side of bulk injection ([amqp] url, queue,
 * dead_letter_queue, prefetch): consume injection requests and
 * acknowledge each only after the loop said it is durably queued; send a
 * malformed one to the dead-letter queue with the reason; publish
 * delivery events to [events] amqp_exchange.
 *
 * librabbitmq blocks, so it runs on its own thread; requests come to the
 * loop thread through a queue and an eventfd, answers go back through a
 * queue the thread reads between consume timeouts. A broker that goes
 * away is reconnected with a backoff (1 s doubling to 60 s) while the
 * rest of sluice goes on; requests delivered but not yet acknowledged are
 * redelivered by the broker, and answers for a lost connection are
 * dropped (the broker redelivers those too, and the idempotency key makes
 * the second injection a no-op).
 *
 * Threads: mq_* from the loop thread; the connection on the mq thread.
 */
#ifndef SL_MQ_H
#define SL_MQ_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct mq;
struct mq_msg;

struct mq_conf {
	const char *url;		/* amqp://user:pass@host:port/vhost */
	const char *queue;		/* "" : consume nothing */
	const char *dead_letter_queue;
	int prefetch;
	const char *exchange;		/* events; "" : publish nothing */
};

struct mq_stats {
	uint64_t received, acked, dead, reconnects, published, dropped;
	int connected;
};

/* A request arrived: answer it exactly once with mq_done(). Loop thread. */
typedef void mq_request_fn(void *arg, struct mq_msg *m);

struct mq *mq_new(struct event_base *base, const struct mq_conf *conf,
    mq_request_fn *fn, void *arg, char *err, size_t errlen);
void mq_free(struct mq *q);

/* The request's body, and its idempotency key (the "Idempotency-Key"
 * header, else the message-id property) or NULL. Borrowed from m. */
const char *mq_msg_body(const struct mq_msg *m, size_t *len);
const char *mq_msg_key(const struct mq_msg *m);
int mq_msg_redelivered(const struct mq_msg *m);
/*
 * Answer m (takes it): dead_reason NULL acknowledges it (it is durably
 * queued); otherwise it is published to the dead-letter queue with the
 * reason in the header "x-sluice-reason", then acknowledged.
 */
void mq_done(struct mq *q, struct mq_msg *m, const char *dead_reason);
/* Give m back to the broker to deliver again later (takes m): it was not
 * stored (the spool failed, or the same key is being stored). */
void mq_requeue(struct mq *q, struct mq_msg *m);
/* Publish body to [events] amqp_exchange with routing key rkey. */
void mq_publish(struct mq *q, const char *rkey, const char *body,
    size_t len);
void mq_stats_get(struct mq *q, struct mq_stats *out);

#endif
