/* SPDX-License-Identifier: MIT */
/*
 * work.h: a small pool of worker threads for CPU work that must not run
 * on the event loop (password hashing: tens of milliseconds each).
 *
 * run() is called on a worker thread; done() then on the loop thread of
 * the base given, always exactly once per submitted job, also when the
 * pool is freed (then from sl_work_free, after run() finished).
 */
#ifndef SL_WORK_H
#define SL_WORK_H

struct event_base;
struct sl_work;

/* A pool of nthreads threads; done callbacks run on base's loop. */
struct sl_work *sl_work_new(struct event_base *base, int nthreads);
/* Queue one job; run and done get arg. Loop thread only. */
void sl_work_submit(struct sl_work *w, void (*run)(void *arg),
    void (*done)(void *arg), void *arg);
/* Run what is queued, call every done, join the threads. NULL: nothing. */
void sl_work_free(struct sl_work *w);

#endif
