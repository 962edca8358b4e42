/* SPDX-License-Identifier: MIT */
/*
 * worker.h: one thread that runs jobs off the event loop (blocking file
 * and SQLite work: the archive, the failure queue, the events' disk
 * spool), and hands each job back to the loop when it is done.
 *
 * Jobs run in the order posted, one at a time; each one's done callback
 * runs on the loop thread, in the same order. sl_worker_free() runs every
 * job still queued and their done callbacks before it returns.
 *
 * Threads: post and free from the loop thread; run() on the worker.
 */
#ifndef SL_UTIL_WORKER_H
#define SL_UTIL_WORKER_H

struct event_base;
struct sl_worker;

typedef void sl_worker_fn(void *arg);

/* A new worker whose done callbacks run on base; NULL on failure. */
struct sl_worker *sl_worker_new(struct event_base *base, const char *name);
/* Run run(arg) on the worker, then done(arg) on the loop (done may be NULL). */
void sl_worker_post(struct sl_worker *w, sl_worker_fn *run,
    sl_worker_fn *done, void *arg);
/* Finish every queued job (their done callbacks too), stop, free. */
void sl_worker_free(struct sl_worker *w);

#endif
