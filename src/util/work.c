/* SPDX-License-Identifier: MIT */
/*
 * work.c: worker threads for CPU-bound jobs, results back on the loop.
 *
 * Owns the threads, the queue of jobs to run and the list of jobs run
 * (both under one mutex), and one event the workers activate
 * (libevent's threading is on: sl_evloop_new after evthread_use_pthreads).
 *
 * Invariants
 *  1. Each job's done runs exactly once, on the loop thread.
 *  2. sl_work_free returns only after every job ran and its done ran.
 */
#include <pthread.h>
#include <stdlib.h>
#include <sys/queue.h>

#include <event2/event.h>

#include "util/util.h"
#include "util/work.h"

struct sl_job {
	TAILQ_ENTRY(sl_job) entry;
	void (*run)(void *);
	void (*done)(void *);
	void *arg;
};
TAILQ_HEAD(sl_job_list, sl_job);

struct sl_work {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct sl_job_list todo, done;
	struct event *ev;
	pthread_t *threads;
	int nthreads;
	int stopping;
};

/* The loop's side: call done for every job that ran. */
static void
sl_work_reap(evutil_socket_t fd, short what, void *arg)
{
	struct sl_work *w = arg;
	struct sl_job_list ready = TAILQ_HEAD_INITIALIZER(ready);
	struct sl_job *j;

	pthread_mutex_lock(&w->mu);
	TAILQ_CONCAT(&ready, &w->done, entry);
	pthread_mutex_unlock(&w->mu);
	while ((j = TAILQ_FIRST(&ready)) != NULL) {
		TAILQ_REMOVE(&ready, j, entry);
		j->done(j->arg);
		free(j);
	}
}

static void *
sl_work_main(void *arg)
{
	struct sl_work *w = arg;
	struct sl_job *j;

	pthread_mutex_lock(&w->mu);
	for (;;) {
		while (TAILQ_EMPTY(&w->todo) && !w->stopping)
			pthread_cond_wait(&w->cv, &w->mu);
		if ((j = TAILQ_FIRST(&w->todo)) == NULL)
			break;		/* stopping, nothing left */
		TAILQ_REMOVE(&w->todo, j, entry);
		pthread_mutex_unlock(&w->mu);
		j->run(j->arg);
		pthread_mutex_lock(&w->mu);
		TAILQ_INSERT_TAIL(&w->done, j, entry);
		event_active(w->ev, EV_READ, 0);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

struct sl_work *
sl_work_new(struct event_base *base, int nthreads)
{
	struct sl_work *w = xcalloc(1, sizeof(*w));

	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	TAILQ_INIT(&w->todo);
	TAILQ_INIT(&w->done);
	w->ev = event_new(base, -1, 0, sl_work_reap, w);
	w->threads = xcalloc((size_t)nthreads, sizeof(*w->threads));
	for (int i = 0; i < nthreads; i++) {
		if (pthread_create(&w->threads[i], NULL, sl_work_main, w) != 0)
			SL_PANIC("work: pthread_create failed");
		w->nthreads++;
	}
	return w;
}

void
sl_work_submit(struct sl_work *w, void (*run)(void *), void (*done)(void *),
    void *arg)
{
	struct sl_job *j = xmalloc(sizeof(*j));

	j->run = run;
	j->done = done;
	j->arg = arg;
	pthread_mutex_lock(&w->mu);
	TAILQ_INSERT_TAIL(&w->todo, j, entry);
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

void
sl_work_free(struct sl_work *w)
{
	if (w == NULL)
		return;
	pthread_mutex_lock(&w->mu);
	w->stopping = 1;
	pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->mu);
	for (int i = 0; i < w->nthreads; i++)
		pthread_join(w->threads[i], NULL);
	sl_work_reap(-1, 0, w);		/* invariant 2 */
	event_free(w->ev);
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->cv);
	free(w->threads);
	free(w);
}
