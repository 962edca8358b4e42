/* SPDX-License-Identifier: MIT */
/*
 * bench/shaping_sched.c: the cost of one scheduling decision under traffic
 * shaping, with S rate-limited sites, as the queue grows.
 *
 * Built and run by bench/shaping against build/libsluice.a:
 *   shaping_sched [-s SITES] [-r RATE] [-t SECONDS] N...
 *
 * For each queue size N: a real scheduler (sched_new, default
 * configuration, a real event_base, no spool, no DNS) and a real shaping
 * state (shaping_new on a generated file of S sites, each
 * "[site sI] domains = dI.shape.test, rate = RATE"). N one-recipient
 * messages are committed through the real API (sched_msg_new +
 * sched_msg_commit) over the S destinations, then moved to their
 * destinations' ready lists: the backlog a busy MTA has. Each destination
 * gets its site (shaping_site_get), a path (shaping_open) and one
 * connection stand-in waiting on the path (struct shaping_wait).
 *
 * Then the event loop runs for T seconds, as sluiced's does: each path's
 * timer fires when its next token is due and wakes its waiter; the waiter
 * takes the head of its destination's ready list (and puts it back at the
 * tail, so the backlog stays N), takes the token (shaping_send: GO) and
 * waits again (shaping_send: WAIT, the path's timer re-armed). One such
 * wake is one decision: which site may send next and what. With S sites
 * at RATE each asking far more than one core can give, the loop is busy
 * all the time and CPU time / decisions is the cost of a decision.
 *
 * Also timed alone (median of 5 x K calls): shaping_send answering GO on
 * a random site (its clock moved past the token), and WAIT.
 * Prints one JSON line per size.
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
#include "shaping/shaping_int.h"
#include "spool/spool.h"
#include "util/util.h"

#include "sched_fill.h"

struct conn {
	struct shaping_wait w;		/* first: the waiter is the conn */
	struct sched_dest *d;
	struct shaping_path *p;
};

static uint64_t decisions, sends;
static volatile uintptr_t sink;

static double
clock_ns(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* A token is due for c: pick the next job, take the token, wait again. */
static void
conn_woken(struct shaping_wait *w)
{
	struct conn *c = (struct conn *)w;
	struct sched_dest *d = c->d;
	struct sched_job *j = TAILQ_FIRST(&d->ready);
	const char *why;

	decisions++;
	if (shaping_send(c->p, &c->w, &why) != SHAPING_GO)
		return;		/* waits again (c->w is on the path) */
	sends++;
	TAILQ_REMOVE(&d->ready, j, entry);
	sink += (uintptr_t)j->msg->mid;
	TAILQ_INSERT_TAIL(&d->ready, j, entry);
	shaping_send(c->p, &c->w, &why);	/* WAIT: the next token */
}

/* a month ahead: nothing comes due while the bench runs */
static int64_t
fill_retry(size_t i)
{
	return (int64_t)time(NULL) + 30 * 86400;
}

static int64_t fake_now;

static int64_t
fake_clock(void *arg)
{
	return fake_now;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static void
run(struct sl_conf *conf, size_t n, size_t nsites, const char *rate,
    double secs, size_t k)
{
	struct event_base *base = event_base_new();
	char path[] = "/tmp/shaping_sched_XXXXXX", err[512];
	int fd = mkstemp(path);
	FILE *f = fdopen(fd, "w");
	struct sched *s;
	struct shaping *sh;
	struct conn *conns = calloc(nsites, sizeof(*conns));
	size_t nc = 0;
	double t0, c0, v[5];
	char *opt;

	for (size_t i = 0; i < nsites; i++)
		fprintf(f, "[site s%zu]\ndomains = d%zu.shape.test\nrate = %s\n",
		    i, i, rate);
	fclose(f);
	opt = xasprintf("shaping.file=%s", path);
	if (conf_override(conf, opt, err, sizeof(err)) != 0 ||
	    (sh = shaping_new(base, NULL, conf, err, sizeof(err))) == NULL) {
		fprintf(stderr, "shaping_sched: %s\n", err);
		exit(1);
	}
	free(opt);
	s = sched_new(base, conf, NULL, NULL);
	sched_set_shaping(s, sh);

	/* the backlog: N deferred messages, then due at their destinations */
	bench_fill(s, n, nsites, "shape.test", 1700000000000000ull, fill_retry,
	    NULL);
	{
		struct sched_msg *m;
		TAILQ_FOREACH(m, &s->age, age) {
			struct sched_job *j = m->jobs;
			sl_heap_remove(&s->retry, &j->timer);
			j->state = SCHED_JOB_READY;
			TAILQ_INSERT_TAIL(&j->dest->ready, j, entry);
			j->dest->nready++;
		}
	}
	for (size_t b = 0; b < s->dtab_size; b++) {
		for (struct sched_dest *d = s->dtab[b]; d; d = d->hnext) {
			struct conn *c = &conns[nc++];
			const char *why;
			d->shape = shaping_site_get(sh, d->name, NULL, 0, d->name);
			if (shaping_open(d->shape, 0, 1u << AF_INET, NULL, &c->p,
			    &why) != SHAPING_GO) {
				fprintf(stderr, "shaping_sched: open: %s\n", why);
				exit(1);
			}
			c->d = d;
			c->w.fn = conn_woken;
			shaping_send(c->p, &c->w, &why);	/* GO */
			shaping_send(c->p, &c->w, &why);	/* WAIT */
		}
	}

	/* the loop: every wake is a decision */
	decisions = sends = 0;
	{
		struct timeval tv = { (time_t)secs, (long)((secs -
		    (double)(time_t)secs) * 1e6) };
		t0 = clock_ns(CLOCK_MONOTONIC);
		c0 = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
		event_base_loopexit(base, &tv);
		event_base_dispatch(base);
		c0 = clock_ns(CLOCK_PROCESS_CPUTIME_ID) - c0;
		t0 = clock_ns(CLOCK_MONOTONIC) - t0;
	}

	/* shaping_send alone, on a clock of our own */
	shaping_set_clock(sh, fake_clock, NULL);
	fake_now = sl_now_us() + 3600LL * 1000000;
	double go_ns, wait_ns;
	for (int b = 0; b < 5; b++) {
		double t = clock_ns(CLOCK_MONOTONIC);
		const char *why;
		for (size_t i = 0; i < k; i++) {
			struct conn *c = &conns[(size_t)rand() % nc];
			shaping_wait_cancel(&c->w);
			fake_now += 1000000;	/* a second later: a token */
			sink += shaping_send(c->p, NULL, &why);
		}
		v[b] = (clock_ns(CLOCK_MONOTONIC) - t) / (double)k;
	}
	qsort(v, 5, sizeof(*v), cmp_double);
	go_ns = v[2];
	for (int b = 0; b < 5; b++) {
		double t = clock_ns(CLOCK_MONOTONIC);
		const char *why;
		for (size_t i = 0; i < k; i++) {
			struct conn *c = &conns[(size_t)rand() % nc];
			sink += shaping_send(c->p, &c->w, &why);	/* WAIT */
			shaping_wait_cancel(&c->w);
		}
		v[b] = (clock_ns(CLOCK_MONOTONIC) - t) / (double)k;
	}
	qsort(v, 5, sizeof(*v), cmp_double);
	wait_ns = v[2];

	printf("{\"queued\": %zu, \"sites\": %zu, \"rate\": \"%s\", "
	    "\"decisions\": %llu, \"sent\": %llu, \"seconds\": %.2f, "
	    "\"cpu_ns_per_decision\": %.0f, \"decisions_per_s\": %.0f, "
	    "\"send_go_ns\": %.1f, \"send_wait_ns\": %.1f}\n", n, nsites, rate,
	    (unsigned long long)decisions, (unsigned long long)sends, t0 / 1e9,
	    decisions ? c0 / (double)decisions : 0.0,
	    (double)decisions / (t0 / 1e9), go_ns, wait_ns);
	fflush(stdout);

	for (size_t i = 0; i < nc; i++) {
		shaping_wait_cancel(&conns[i].w);
		shaping_conn_closed(conns[i].p, 1);
	}
	sched_stop(s);
	sched_free(s);		/* puts the destinations' sites */
	shaping_free(sh);
	event_base_free(base);
	free(conns);
	unlink(path);
}

int
main(int argc, char **argv)
{
	size_t nsites = 10000, k = 200000;
	const char *rate = "100/s";
	double secs = 5;
	char err[256];
	struct sl_conf *conf;
	int c;

	while ((c = getopt(argc, argv, "s:r:t:k:")) != -1) {
		switch (c) {
		case 's':
			nsites = strtoul(optarg, NULL, 10);
			break;
		case 'r':
			rate = optarg;
			break;
		case 't':
			secs = atof(optarg);
			break;
		case 'k':
			k = strtoul(optarg, NULL, 10);
			break;
		default:
			fprintf(stderr, "usage: shaping_sched [-s SITES] [-r RATE] "
			    "[-t SECONDS] [-k OPS] N...\n");
			return 2;
		}
	}
	if ((conf = conf_load(NULL, err, sizeof(err))) == NULL) {
		fprintf(stderr, "shaping_sched: %s\n", err);
		return 1;
	}
	free(conf->spool_dir);
	conf->spool_dir = xstrdup("/tmp");
	if (optind == argc) {
		static const size_t def[] = { 10000, 100000, 1000000 };
		for (size_t i = 0; i < 3; i++)
			run(conf, def[i], nsites, rate, secs, k);
	}
	for (int i = optind; i < argc; i++)
		run(conf, strtoul(argv[i], NULL, 10), nsites, rate, secs, k);
	conf_free(conf);
	return 0;
}
