/* SPDX-License-Identifier: MIT */
/*
 * bench/sched_pick.c: the scheduler's per-decision costs as the queue grows.
 *
 * Built and run by bench/queue-scale against build/libsluice.a:
 *   cc -O2 -std=gnu11 -D_GNU_SOURCE -pthread -Isrc $(pkg-config --cflags ...)
 *      bench/sched_pick.c build/libsluice.a $(pkg-config --libs ...) -lm
 *   sched_pick [-c] [-d DESTINATIONS] [-k OPS] N...
 *
 * For each queue size N it builds a real scheduler (sched_new with the
 * default configuration, a real event_base, no spool and no DNS: nothing
 * here reaches them) and feeds it N one-recipient messages through the real
 * API (sched_msg_new + sched_msg_commit), each recipient DEFERRED with a
 * random next_retry 1 h..30 days ahead at one of D destinations, exactly
 * as recovery does. Then it times, per operation:
 *
 *   commit      sched_msg_new + sched_msg_commit of one message (destination
 *               lookup, job, retry-heap push, MID index), averaged over the
 *               N commits
 *   retry pop   the next due job off the scheduler's own retry wheel
 *               (sl_wheel_pop_first on s->retry: the wheel's clock moves
 *               to it, as sched_retry_fire's sl_wheel_pop_due does when
 *               its time comes) and pushed back with a later retry time
 *               (as a deferral does): the per-decision cost of the retry
 *               queue
 *   next        sl_wheel_next (what sched_retry_arm looks at)
 *   ready head  take the head of a destination's ready list and put it back
 *               at the tail (TAILQ_FIRST/REMOVE/INSERT_TAIL on a real
 *               struct sched_dest holding N jobs, as sched_conn_send +
 *               sched_job_ready do)
 *   dest get    sched_dest_of for an address at a random one of the D
 *               destinations (the lookup a commit makes per recipient)
 *   mid find    sched_msg_find for a random queued MID, and a read of the
 *               message found (what every caller does next: queue
 *               commands)
 *
 * Each operation runs in a function of its own (bench_retry, bench_next,
 * bench_ready, bench_dest, bench_find), so that
 *   valgrind --tool=callgrind --toggle-collect='bench_*' sched_pick -c N
 * counts the instructions per operation, steady where wall time is not
 * on a shared machine (-c: one batch of K operations per kind; the JSON
 * then has the times under valgrind, not to be quoted).
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
static int batches = BATCHES;

/* Batches of k operations each, timed; the median ns per operation. */
#define TIMED(k, call) ({						\
	double v_[BATCHES];						\
	for (int b_ = 0; b_ < batches; b_++) {				\
		double t0_ = now_ns();					\
		call;							\
		v_[b_] = (now_ns() - t0_) / (double)(k);		\
	}								\
	batches == BATCHES ? median(v_) : v_[0];			\
})

__attribute__((noinline)) static void
bench_retry(struct sched *s, size_t k)
{
	for (size_t i = 0; i < k; i++) {
		struct sl_wheel_item *it = sl_wheel_pop_first(&s->retry);
		it->key += 300 + (uint32_t)(xrand() % 3600);
		sl_wheel_add(&s->retry, it);
	}
}

__attribute__((noinline)) static void
bench_next(struct sched *s, size_t k)
{
	for (size_t i = 0; i < k; i++)
		sink += (uintptr_t)sl_wheel_next(&s->retry);
}

__attribute__((noinline)) static void
bench_dest(struct sched *s, size_t k, size_t ndest, const char *const *names)
{
	for (size_t i = 0; i < k; i++)
		sink += (uintptr_t)sched_dest_of(s, names[xrand() % ndest]);
}

__attribute__((noinline)) static void
bench_find(struct sched *s, size_t k, const uint64_t *mids, size_t n)
{
	for (size_t i = 0; i < k; i++) {
		struct sched_msg *m = sched_msg_find(s, mids[xrand() % n]);
		sink += m->mid;
	}
}

__attribute__((noinline)) static void
bench_ready(struct sched_dest *d, size_t k)
{
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
}

/* 1 h .. 30 days after the start of the fill: none falls due while the
 * fill runs, even under valgrind (a due job would ask the DNS, which the
 * bench has none of) */
static int64_t fill_start;

static int64_t
pick_retry(size_t i)
{
	return fill_start + 3600 + (int64_t)(xrand() % (30 * 86400));
}

static void
run(const struct sl_conf *conf, size_t n, size_t ndest, size_t k)
{
	struct event_base *base = event_base_new();
	struct sched *s;
	char addr[64], **names;
	uint64_t *mids;
	/* in use: small chunks and mmapped ones (large tables) */
	size_t heap0 = mallinfo2().uordblks + mallinfo2().hblkhd, heap1;
	double t0, t_commit;
	double pop_ns, next_ns, ready_ns, dest_ns, find_ns;

	s = sched_new(base, conf, NULL, NULL);
	mids = malloc(n * sizeof(*mids));

	fill_start = (int64_t)time(NULL);
	t0 = now_ns();
	bench_fill(s, n, ndest, "queue.test", 1700000000000000ull, pick_retry,
	    mids);
	t_commit = (now_ns() - t0) / (double)n;
	heap1 = mallinfo2().uordblks + mallinfo2().hblkhd;

	/* the destination names, made before: only the lookup is timed */
	names = malloc(ndest * sizeof(*names));
	for (size_t i = 0; i < ndest; i++) {
		snprintf(addr, sizeof(addr), "u@d%zu.queue.test", i);
		names[i] = strdup(addr);
	}
	pop_ns = TIMED(k, bench_retry(s, k));
	next_ns = TIMED(k, bench_next(s, k));
	dest_ns = TIMED(k, bench_dest(s, k, ndest, (const char *const *)names));
	find_ns = TIMED(k, bench_find(s, k, mids, n));

	/* one destination's ready list holding n jobs (the real types; the
	 * jobs are the scheduler's, taken over for the measurement) */
	{
		struct sched_dest *d = sched_dest_of(s, "r@ready.queue.test");
		struct sched_msg *m;
		size_t moved = 0;
		TAILQ_FOREACH(m, &s->age, age) {
			struct sched_job *j = m->jobs;
			sl_wheel_remove(&s->retry, &j->timer);
			j->state = SCHED_JOB_READY;
			TAILQ_INSERT_TAIL(&d->ready, j, entry);
			d->nready++;
			moved++;
		}
		ready_ns = TIMED(k, bench_ready(d, k));
		/* give the jobs back to their own destinations' bookkeeping */
		while (moved-- > 0) {
			struct sched_job *j = TAILQ_FIRST(&d->ready);
			TAILQ_REMOVE(&d->ready, j, entry);
			d->nready--;
			j->state = SCHED_JOB_DEFERRED;
		}
	}

	printf("{\"n\": %zu, \"destinations\": %zu, \"commit_ns\": %.0f, "
	    "\"retry_pop_push_ns\": %.1f, \"retry_next_ns\": %.2f, "
	    "\"ready_head_ns\": %.1f, \"dest_get_ns\": %.1f, "
	    "\"mid_find_ns\": %.1f, \"sched_heap_bytes_per_rcpt\": %.0f}\n",
	    n, ndest < n ? ndest : n, t_commit, pop_ns, next_ns, ready_ns,
	    dest_ns, find_ns, (double)(heap1 - heap0) / (double)n);
	fflush(stdout);

	for (size_t i = 0; i < ndest; i++)
		free(names[i]);
	free(names);
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

	while ((c = getopt(argc, argv, "cd:k:")) != -1) {
		switch (c) {
		case 'c':
			batches = 1;	/* under callgrind: count, not time */
			break;
		case 'd':
			ndest = strtoul(optarg, NULL, 10);
			break;
		case 'k':
			k = strtoul(optarg, NULL, 10);
			break;
		default:
			fprintf(stderr, "usage: sched_pick [-c] [-d DEST] [-k OPS] "
			    "N...\n");
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
