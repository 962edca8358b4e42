/* SPDX-License-Identifier: MIT */
/*
 * worker.c: a job thread with a hand-back to the event loop (worker.h).
 *
 * Jobs wait on a list under w->mu; the thread takes them one at a time,
 * runs them, moves them to the done list and writes an eventfd that the
 * loop watches; the loop calls the done callbacks in order and frees the
 * jobs. Invariant: a job is on exactly one of the pending list, the
 * thread's hands, the done list; it is freed after its done callback.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <event2/event.h>

#include "util/util.h"
#include "util/worker.h"

struct worker_job {
	struct worker_job *next;
	sl_worker_fn *run, *done;
	void *arg;
};

struct sl_worker {
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct worker_job *pend, **pend_tail;	/* mu */
	struct worker_job *done, **done_tail;	/* mu */
	int stopping;				/* mu */
	int efd;
	struct event *ev;
};

static void *
worker_main(void *arg)
{
	struct sl_worker *w = arg;
	struct worker_job *j;
	uint64_t one = 1;

	pthread_mutex_lock(&w->mu);
	for (;;) {
		while (w->pend == NULL && !w->stopping)
			pthread_cond_wait(&w->cv, &w->mu);
		if ((j = w->pend) == NULL)
			break;
		if ((w->pend = j->next) == NULL)
			w->pend_tail = &w->pend;
		pthread_mutex_unlock(&w->mu);
		j->run(j->arg);
		pthread_mutex_lock(&w->mu);
		j->next = NULL;
		*w->done_tail = j;
		w->done_tail = &j->next;
		while (write(w->efd, &one, sizeof(one)) == -1 && errno == EINTR)
			;
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

static void
worker_deliver(struct sl_worker *w)
{
	struct worker_job *j, *next;

	pthread_mutex_lock(&w->mu);
	j = w->done;
	w->done = NULL;
	w->done_tail = &w->done;
	pthread_mutex_unlock(&w->mu);
	for (; j != NULL; j = next) {
		next = j->next;
		if (j->done != NULL)
			j->done(j->arg);
		free(j);
	}
}

static void
worker_done_cb(evutil_socket_t fd, short what, void *arg)
{
	uint64_t v;

	while (read(fd, &v, sizeof(v)) == -1 && errno == EINTR)
		;
	worker_deliver(arg);
}

struct sl_worker *
sl_worker_new(struct event_base *base, const char *name)
{
	struct sl_worker *w = xcalloc(1, sizeof(*w));

	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	w->pend_tail = &w->pend;
	w->done_tail = &w->done;
	if ((w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) == -1)
		goto fail;
	w->ev = event_new(base, w->efd, EV_READ | EV_PERSIST, worker_done_cb,
	    w);
	if (w->ev == NULL || event_add(w->ev, NULL) != 0)
		goto fail;
	if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
		goto fail;
	pthread_setname_np(w->thread, name);
	return w;
fail:
	if (w->ev != NULL)
		event_free(w->ev);
	if (w->efd != -1)
		close(w->efd);
	free(w);
	return NULL;
}

void
sl_worker_post(struct sl_worker *w, sl_worker_fn *run, sl_worker_fn *done,
    void *arg)
{
	struct worker_job *j = xcalloc(1, sizeof(*j));

	j->run = run;
	j->done = done;
	j->arg = arg;
	pthread_mutex_lock(&w->mu);
	*w->pend_tail = j;
	w->pend_tail = &j->next;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

void
sl_worker_free(struct sl_worker *w)
{
	if (w == NULL)
		return;
	pthread_mutex_lock(&w->mu);
	w->stopping = 1;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
	pthread_join(w->thread, NULL);
	/* the thread is gone: finish here; a done callback may post more */
	for (;;) {
		struct worker_job *j;

		worker_deliver(w);
		if ((j = w->pend) == NULL)
			break;
		if ((w->pend = j->next) == NULL)
			w->pend_tail = &w->pend;
		j->run(j->arg);
		if (j->done != NULL)
			j->done(j->arg);
		free(j);
	}
	event_free(w->ev);
	close(w->efd);
	pthread_cond_destroy(&w->cv);
	pthread_mutex_destroy(&w->mu);
	free(w);
}
