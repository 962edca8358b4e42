/* SPDX-License-Identifier: MIT */
/*
 * inbox.h: calls handed to an event loop thread from any thread, without
 * a lock.
 *
 * A poster pushes {fn, arg} onto the inbox's stack with one atomic
 * compare-and-swap; the first push onto an empty stack writes the inbox's
 * eventfd, and the owner's loop takes the whole stack at once (an atomic
 * exchange), turns it back into posting order and runs the calls. So the
 * calls one thread posts run in the order it posted them, on the owner's
 * thread, and a burst of posts costs one wakeup.
 *
 * Threads: sl_inbox_post from any thread; the rest from the owner's.
 */
#ifndef SL_INBOX_H
#define SL_INBOX_H

#include <stdatomic.h>

struct event_base;
struct event;

typedef void sl_inbox_fn(void *arg);

struct sl_inbox_call {
	struct sl_inbox_call *next;
	sl_inbox_fn *fn;
	void *arg;
};

struct sl_inbox {
	_Atomic(struct sl_inbox_call *) head;	/* newest first */
	int efd;
	struct event *ev;
};

/* An inbox whose calls run on base's loop (at its high priority); NULL
 * on failure (no eventfd). */
struct sl_inbox *sl_inbox_new(struct event_base *base);
/* Have fn(arg) run on the owner's loop, soon. Any thread. */
void sl_inbox_post(struct sl_inbox *in, sl_inbox_fn *fn, void *arg);
/* Run the calls waiting now (the owner's thread; also its loop's job). */
void sl_inbox_run(struct sl_inbox *in);
/* Run what is left, then free (the owner's thread, posters gone). */
void sl_inbox_free(struct sl_inbox *in);

#endif
