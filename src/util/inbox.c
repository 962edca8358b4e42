/* SPDX-License-Identifier: MIT */
/*
 * inbox.c: calls handed to a loop thread without a lock (inbox.h).
 *
 * Invariants
 *  1. A call is on the stack (in->head) or in the batch the owner is
 *     running, never both; it is freed once it ran.
 *  2. The eventfd is written by the post that made the stack non-empty,
 *     so the owner never sleeps while calls wait: it empties the stack
 *     each time it wakes, and any later post finds it empty again.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <event2/event.h>

#include "util/evloop.h"
#include "util/inbox.h"
#include "util/util.h"

static void
inbox_wake(struct sl_inbox *in)
{
	uint64_t one = 1;

	/* EAGAIN: the counter is non-zero, the loop will wake anyway */
	while (write(in->efd, &one, sizeof(one)) == -1 && errno == EINTR)
		;
}

void
sl_inbox_post(struct sl_inbox *in, sl_inbox_fn *fn, void *arg)
{
	struct sl_inbox_call *c = xmalloc(sizeof(*c));
	struct sl_inbox_call *old = atomic_load_explicit(&in->head,
	    memory_order_relaxed);

	c->fn = fn;
	c->arg = arg;
	do {
		c->next = old;
	} while (!atomic_compare_exchange_weak_explicit(&in->head, &old, c,
	    memory_order_release, memory_order_relaxed));
	if (old == NULL)
		inbox_wake(in);
}

void
sl_inbox_run(struct sl_inbox *in)
{
	struct sl_inbox_call *c = atomic_exchange_explicit(&in->head, NULL,
	    memory_order_acquire), *fifo = NULL, *next;

	/* newest first: turn it around, so calls run as they were posted */
	for (; c != NULL; c = next) {
		next = c->next;
		c->next = fifo;
		fifo = c;
	}
	for (c = fifo; c != NULL; c = next) {
		next = c->next;
		c->fn(c->arg);
		free(c);
	}
}

static void
inbox_cb(evutil_socket_t fd, short what, void *arg)
{
	uint64_t v;

	while (read(fd, &v, sizeof(v)) == -1 && errno == EINTR)
		;
	sl_inbox_run(arg);
}

struct sl_inbox *
sl_inbox_new(struct event_base *base)
{
	struct sl_inbox *in = xcalloc(1, sizeof(*in));

	atomic_init(&in->head, NULL);
	if ((in->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) == -1)
		goto fail;
	in->ev = event_new(base, in->efd, EV_READ | EV_PERSIST, inbox_cb, in);
	if (in->ev == NULL)
		goto fail;
	event_priority_set(in->ev, SL_EVLOOP_PRIO_HIGH);
	if (event_add(in->ev, NULL) == -1)
		goto fail;
	return in;
fail:
	sl_inbox_free(in);
	return NULL;
}

void
sl_inbox_free(struct sl_inbox *in)
{
	if (in == NULL)
		return;
	sl_inbox_run(in);
	if (in->ev != NULL)
		event_free(in->ev);
	if (in->efd != -1)
		close(in->efd);
	free(in);
}
