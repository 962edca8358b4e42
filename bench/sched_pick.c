/* SPDX-License-Identifier: MIT */
/*
 * bench/sched_pick.c: the scheduler's per-decision costs as the queue grows.
 *
 * Built and run by bench/queue-scale against build/libsluice.a:
 *   cc -O2 -std=gnu11 -D_GNU_SOURCE -pthread -Isrc $(pkg-config --cflags ...)
 *      bench/sched_pick.c build/libsluice.a $(pkg-config --libs ...) -lm
 *   sched_pick [-d DESTINATIONS] [-k OPS] N...
 *
 * For each queue size N it builds a real scheduler (sched_new with the
 * default configuration, a real event_base, no spool and no DNS: nothing
 * here reaches them) and feeds it N one-recipient messages through the real
 * API (sched_msg_new + sched_msg_commit), each recipient DEFERRED with a
 * random next_retry 1 s..30 days ahead at one of D destinations, exactly
 * as recovery does. Then it times, per operation:
 *
 *   commit      sched_msg_new + sched_msg_commit of one message (destination
 *               lookup, job, retry-heap push, MID index), averaged over the
 *               N commits
 *   retry pop   the next due job off the scheduler's own retry heap
 *               (sl_heap_pop on s->retry, as sched_retry_fire does) and
 *               pushed back with a later retry time (as a deferral does):
 *               the per-decision cost of the retry queue
 *   heap top    sl_heap_top (what sched_retry_arm looks at)
 *   ready head  take the head of a destination's ready list and put it back
 *               at the tail (TAILQ_FIRST/REMOVE/INSERT_TAIL on a real
 *               struct sched_dest holding N jobs, as sched_conn_send +
 *               sched_job_ready do)
 *   dest get    sched_dest_get for a random one of the D destinations
 *   mid find    sched_msg_find for a random queued MID (queue commands)
 *
 * and the heap memory the scheduler holds per queued recipient (mallinfo2
 * before and after the N commits). Prints one line of JSON per size.
 * Timings are the median of 5 batches of K operations.
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "conf/conf.h"
#include "sched/sched_int.h"
#include "spool/spool.h"

#include "sched_fill.h"

static uint64_t rng = 88172645463325252ull;

static uint64_t
xrand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static double
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

#define BATCHES 5

static double
median(double *v)
{
	qsort(v, BATCHES, sizeof(*v), cmp_double);
	return v[BATCHES / 2];
}

static volatile uintptr_t sink;

/* 1 s .. 30 days after the start of the fill */
static int64_t fill_start;

static int64_t
pick_retry(size_t i)
{
	return fill_start + 1 + (int64_t)(xrand() % (30 * 86400));
}

static void
run(const struct sl_conf *conf, size_t n, size_t ndest, size_t k)
{
	struct event_base *base = event_base_new();
	struct sched *s;
	char addr[64];
	uint64_t *mids;
	size_t heap0 = mallinfo2().uordblks, heap1;
	double t0, t_commit, v[BATCHES];
	double pop_ns, top_ns, ready_ns, dest_ns, find_ns;

	s = sched_new(base, conf, NULL, NULL);
	mids = malloc(n * sizeof(*mids));

	fill_start = (int64_t)time(NULL);
	t0 = now_ns();
	bench_fill(s, n, ndest, "queue.test", 1700000000000000ull, pick_retry,
	    mids);
	t_commit = (now_ns() - t0) / (double)n;
	heap1 = mallinfo2().uordblks;

	/* retry pop + re-push on the scheduler's own heap */
	for (int b = 0; b < BATCHES; b++) {
		t0 = now_ns();
		for (size_t i = 0; i < k; i++) {
			struct sl_heap_item *it = sl_heap_pop(&s->retry);
			it->key += 300 + (int64_t)(xrand() % 3600);
			sl_heap_push(&s->retry, it);
		}
		v[b] = (now_ns() - t0) / (double)k;
	}
	pop_ns = median(v);

	for (int b = 0; b < BATCHES; b++) {
		t0 = now_ns();
		for (size_t i = 0; i < k; i++)
			sink += (uintptr_t)sl_heap_top(&s->retry);
		v[b] = (now_ns() - t0) / (double)k;
	}
	top_ns = median(v);

	for (int b = 0; b < BATCHES; b++) {
		t0 = now_ns();
		for (size_t i = 0; i < k; i++) {
			snprintf(addr, sizeof(addr), "d%zu.queue.test",
			    (size_t)(xrand() % ndest));
			sink += (uintptr_t)sched_dest_get(s, addr);
		}
		v[b] = (now_ns() - t0) / (double)k;
	}
	dest_ns = median(v);
	/* subtract the snprintf */
	for (int b = 0; b < BATCHES; b++) {
		t0 = now_ns();
		for (size_t i = 0; i < k; i++) {
			snprintf(addr, sizeof(addr), "d%zu.queue.test",
			    (size_t)(xrand() % ndest));
			sink += (uintptr_t)addr[3];
		}
		v[b] = (now_ns() - t0) / (double)k;
	}
	dest_ns -= median(v);

	for (int b = 0; b < BATCHES; b++) {
		t0 = now_ns();
		for (size_t i = 0; i < k; i++)
			sink += (uintptr_t)sched_msg_find(s, mids[xrand() % n]);
		v[b] = (now_ns() - t0) / (double)k;
	}
	find_ns = median(v);

	/* one destination's ready list holding n jobs (the real types; the
	 * jobs are the scheduler's, taken over for the measurement) */
	{
		struct sched_dest *d = sched_dest_get(s, "ready.queue.test");
		struct sched_msg *m;
		size_t moved = 0;
		TAILQ_FOREACH(m, &s->age, age) {
			struct sched_job *j = m->jobs;
			sl_heap_remove(&s->retry, &j->timer);
			j->state = SCHED_JOB_READY;
			TAILQ_INSERT_TAIL(&d->ready, j, entry);
			d->nready++;
			moved++;
		}
		for (int b = 0; b < BATCHES; b++) {
			t0 = now_ns();
			for (size_t i = 0; i < k; i++) {
				struct sched_job *j = TAILQ_FIRST(&d->ready);
				TAILQ_REMOVE(&d->ready, j, entry);
				d->nready--;
				j->state = SCHED_JOB_ACTIVE;
				sink += (uintptr_t)j->msg->mid;
				j->state = SCHED_JOB_READY;
				TAILQ_INSERT_TAIL(&d->ready, j, entry);
				d->nready++;
			}
			v[b] = (now_ns() - t0) / (double)k;
		}
		ready_ns = median(v);
		/* give the jobs back to their own destinations' bookkeeping */
		while (moved-- > 0) {
			struct sched_job *j = TAILQ_FIRST(&d->ready);
			TAILQ_REMOVE(&d->ready, j, entry);
			d->nready--;
			j->state = SCHED_JOB_DEFERRED;
		}
	}

	printf("{\"n\": %zu, \"destinations\": %zu, \"commit_ns\": %.0f, "
	    "\"retry_pop_push_ns\": %.1f, \"heap_top_ns\": %.2f, "
	    "\"ready_head_ns\": %.1f, \"dest_get_ns\": %.1f, "
	    "\"mid_find_ns\": %.1f, \"sched_heap_bytes_per_rcpt\": %.0f}\n",
	    n, ndest < n ? ndest : n, t_commit, pop_ns, top_ns, ready_ns,
	    dest_ns, find_ns, (double)(heap1 - heap0) / (double)n);
	fflush(stdout);

	sched_stop(s);
	sched_free(s);
	event_base_free(base);
	free(mids);
}

int
main(int argc, char **argv)
{
	size_t ndest = 10000, k = 200000;
	char err[256];
	struct sl_conf *conf;
	int c;

	while ((c = getopt(argc, argv, "d:k:")) != -1) {
		switch (c) {
		case 'd':
			ndest = strtoul(optarg, NULL, 10);
			break;
		case 'k':
			k = strtoul(optarg, NULL, 10);
			break;
		default:
			fprintf(stderr, "usage: sched_pick [-d DEST] [-k OPS] N...\n");
			return 2;
		}
	}
	if ((conf = conf_load(NULL, err, sizeof(err))) == NULL) {
		fprintf(stderr, "sched_pick: %s\n", err);
		return 1;
	}
	if (optind == argc) {
		static char *def[] = { "10000", "100000", "1000000" };
		for (size_t i = 0; i < 3; i++)
			run(conf, strtoul(def[i], NULL, 10), ndest, k);
	}
	for (int i = optind; i < argc; i++)
		run(conf, strtoul(argv[i], NULL, 10), ndest, k);
	conf_free(conf);
	return 0;
}
