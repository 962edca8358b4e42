/* SPDX-License-Identifier: MIT */
/*
 * spool.c: the spool's threads, its request queue and the hand-back of
 * outcomes.
 *
 * The event loop thread queues requests (insert, recipient update, delete)
 * on the pending list under sp->mu and signals sp->cv. Two writer threads
 * take turns: the one holding the turn (sp->writing) takes every pending
 * request at once and runs them as one transaction through spool_sqlite.c
 * (group commit), gives the turn up, then syncs the WAL; while it waits
 * for the disk, the other writer takes what queued meanwhile and writes it
 * (a commit pipeline), once as many requests wait as the batch being
 * synced holds: each batch costs CPU (pages rewritten, a sync), so under
 * load batches stay as large as before, and a quiet spool still answers
 * at once. Batches reach the done list in the order they were
 * taken (sp->done_seq), and each wakes the loop through the eventfd. The
 * event registered on that eventfd runs on the loop thread: it takes the
 * done list and calls each callback in queue order. When nothing waits,
 * writer 0 checkpoints the WAL.
 *
 * Body reads (spool_body_read) go to another thread, the reader, with its
 * own read-only connection: a read of a large body never holds up a
 * commit (and so the 250s), nor the loop thread. Its outcomes come back
 * through the same eventfd.
 *
 * Invariants
 *  1. A request is on exactly one of: pending list, a writer's batch, done
 *     list; it is freed right after its callback returns.
 *  2. Callbacks run on the event loop thread (spool_done_cb, spool_close),
 *     never on a spool thread.
 *  3. Requests complete in the order they were queued.
 *  4. A request is answered SPOOL_OK only after the sync that followed its
 *     commit returned, by the thread that wrote it; once any sync fails,
 *     nothing is answered SPOOL_OK again (a later commit's frames chain on
 *     the lost ones).
 *
 * Request life: spool_insert & co. -> pending -> batch (spool_writer)
 *  -> done -> callback (spool_deliver) -> freed.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "util/evloop.h"
#include "util/util.h"

#include "spool/spool_int.h"

/* WAL bytes past which the checkpoint thread is woken. */
#define SPOOL_CKPT_TRIGGER ((int64_t)8 * 1024 * 1024)
/* No request for this long and the spool thread checkpoints the WAL. */
#define SPOOL_IDLE_MS 20
/* A checkpoint a reader kept from finishing is retried this often. */
#define SPOOL_RETRY_CKPT_MS 1000

void
spool_msg_free(struct spool_msg *msg)
{
	size_t i;

	if (msg == NULL)
		return;
	for (i = 0; i < msg->nrcpt; i++) {
		free(msg->rcpts[i].addr);
		free(msg->rcpts[i].orcpt);
		free(msg->rcpts[i].last_reply);
		free(msg->rcpts[i].vars);
	}
	free(msg->rcpts);
	free(msg->idem_key);
	free(msg->idem_answer);
	if (msg->body != NULL)
		evbuffer_free(msg->body);
	free(msg->sender);
	free(msg->envid);
	free(msg->client_addr);
	free(msg->helo);
	free(msg);
}

static void
spool_req_free(struct spool_req *r)
{
	size_t i;

	spool_msg_free(r->msg);
	for (i = 0; i < r->nrcpt && r->rcpts != NULL; i++)
		free(r->rcpts[i].last_reply);
	free(r->rcpts);
	free(r);
}

static void
spool_rreq_free(struct spool_rreq *r)
{
	if (r->body != NULL)
		evbuffer_free(r->body);
	free(r);
}

static void
spool_wake_port(struct spool_port *p)
{
	uint64_t one = 1;

	/* EAGAIN means the counter is already non-zero: the loop will wake. */
	while (write(p->efd, &one, sizeof(one)) == -1 && errno == EINTR)
		;
}

static struct spool_port *
spool_port_of(struct spool *sp, const struct spool_req *r)
{
	return r->port != NULL ? r->port : &sp->main;
}

/* r onto its port's done list (mu held). */
static void
spool_done_add(struct spool *sp, struct spool_req *r)
{
	struct spool_port *p = spool_port_of(sp, r);

	r->next = NULL;
	*p->done_tail = r;
	p->done_tail = &r->next;
}

static void
spool_timeout_after(struct timespec *ts, int ms)
{
	clock_gettime(CLOCK_REALTIME, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000;
	if (ts->tv_nsec >= 1000000000) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000;
	}
}

const double spool_commit_bounds[SPOOL_COMMIT_BUCKETS] = {
	0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1,
};
const double spool_batch_bounds[SPOOL_BATCH_BUCKETS] = {
	1, 2, 4, 8, 16, 32, 64, 128, 256, 1024,
};

/* Count v in the first bucket whose bound is >= v (the last: +Inf). */
static void
spool_hist_add(uint64_t *hist, const double *bounds, size_t n, double v)
{
	size_t i = 0;

	while (i < n && v > bounds[i])
		i++;
	hist[i]++;
}

/*
 * The statistics of one batch, and its requests onto the done list once
 * every batch taken before it is there (mu held, may wait on seqcv).
 */
static void
spool_batch_done(struct spool *sp, struct spool_writer *w, uint64_t seq,
    struct spool_req **reqs, size_t n, const struct spool_batch_stats *bs,
    int64_t t0, int64_t t1)
{
	struct sl_hist wait = { 0 }, commit = { 0 };
	uint64_t kind[SPOOL_REQ_IDEM_EXPIRE + 1] = { 0 };

	for (size_t i = 0; i < n; i++) {
		struct spool_req *r = reqs[i];
		r->done_us = t1;
		if (r->status == SPOOL_OK)
			kind[r->type]++;
		if (r->type != SPOOL_REQ_INSERT || r->status != SPOOL_OK)
			continue;
		sl_hist_add(&wait, t0 - r->enq_us);
		sl_hist_add(&commit, t1 - t0);
	}
	while (sp->done_seq != seq - 1)
		pthread_cond_wait(&sp->seqcv, &sp->mu);
	sp->stats.commits += bs->commits;
	sp->stats.requests += bs->requests;
	sp->stats.inserts += kind[SPOOL_REQ_INSERT];
	sp->stats.updates += kind[SPOOL_REQ_UPDATE];
	sp->stats.deletes += kind[SPOOL_REQ_DELETE];
	sp->stats.failures += bs->failures;
	if (bs->commits > 0) {
		double ms = (double)(t1 - t0) / 1000.0;
		sp->stats.commit_ms_sum += ms;
		spool_hist_add(sp->stats.commit_hist, spool_commit_bounds,
		    SPOOL_COMMIT_BUCKETS, ms / 1000.0 / bs->commits);
		spool_hist_add(sp->stats.batch_hist, spool_batch_bounds,
		    SPOOL_BATCH_BUCKETS, (double)bs->requests / bs->commits);
	}
	if (n > sp->stats.max_batch)
		sp->stats.max_batch = n;
	sl_hist_merge(&sp->stats.step_queue, &wait);
	sl_hist_merge(&sp->stats.step_commit, &commit);
	/* each request to its loop, in order; each loop woken once */
	for (size_t i = 0; i < n; i++)
		spool_done_add(sp, reqs[i]);
	for (size_t i = 0; i < n; i++) {
		struct spool_port *p = spool_port_of(sp, reqs[i]);
		if (p->woken != seq) {
			p->woken = seq;
			spool_wake_port(p);
		}
	}
	sp->done_seq = seq;
	pthread_cond_broadcast(&sp->seqcv);
}

/* Fail every request of a batch that was answered OK (mu held). */
static void
spool_batch_fail(struct spool *sp, struct spool_req **reqs, size_t n,
    const char *why)
{
	for (size_t i = 0; i < n; i++)
		if (reqs[i]->status == SPOOL_OK)
			reqs[i]->status = SPOOL_ERR_IO;
	snprintf(sp->err_shared, sizeof(sp->err_shared), "%s", why);
}

/*
 * Write one batch (the turn held, mu not held), give the turn up, sync,
 * and hand the batch back in its place in the order (mu held on return).
 */
static void
spool_writer_batch(struct spool_writer *w, struct spool_req *head,
    uint64_t seq)
{
	struct spool *sp = w->sp;
	struct spool_batch_stats bs = { 0 };
	char err[SPOOL_ERRLEN] = "", serr[SPOOL_ERRLEN] = "";
	int64_t t0, t1, wal;
	size_t n = 0, ok = 0;
	int ckpt, rc = 0;

	for (struct spool_req *r = head; r != NULL; r = r->next) {
		if (n == w->cap) {
			w->cap = w->cap ? w->cap * 2 : 64;
			w->arr = xrealloc(w->arr, w->cap * sizeof(*w->arr));
		}
		w->arr[n++] = r;
	}
	t0 = sl_mono_us();
	spool_db_run(w->db, w->arr, n, &bs, err, sizeof(err));
	wal = spool_db_wal_bytes(w->db);
	/* Only if the checkpoint thread fell far behind: block and catch up. */
	ckpt = spool_db_checkpoint(w->db, 0, wal);

	pthread_mutex_lock(&sp->mu);
	sp->writing = 0;
	sp->nsyncing++;
	sp->sync_n = n;
	pthread_cond_signal(&sp->cv);	/* the other writer's turn */
	if (bs.commits > 0) {
		sp->wal_bytes = ckpt == 1 ? 0 : wal;
		sp->wal_dirty = 1;
	}
	sp->stats.checkpoints += ckpt >= 0;
	/* Under load the WAL is never idle: the checkpoint thread copies it
	 * back while commits go on. */
	if (sp->wal_bytes >= SPOOL_CKPT_TRIGGER && !sp->ck_wanted) {
		sp->ck_wanted = 1;
		pthread_cond_signal(&sp->ckcv);
	}
	pthread_mutex_unlock(&sp->mu);

	for (size_t i = 0; i < n; i++)
		ok += w->arr[i]->status == SPOOL_OK;
	if (ok > 0 && (rc = spool_db_sync(w->db)) != 0)
		snprintf(serr, sizeof(serr), "spool: %s",
		    spool_db_errmsg(w->db));
	t1 = sl_mono_us();

	pthread_mutex_lock(&sp->mu);
	if (--sp->nsyncing == 0)
		pthread_cond_signal(&sp->cv);	/* a smaller batch may go */
	if (err[0] != '\0')
		memcpy(sp->err_shared, err, sizeof(err));
	if (rc != 0)
		sp->sync_failed = 1;
	if (sp->sync_failed)
		spool_batch_fail(sp, w->arr, n, serr[0] != '\0' ? serr :
		    "spool: a sync of the WAL failed: nothing is stored until"
		    " sluiced restarts");
	spool_batch_done(sp, w, seq, w->arr, n, &bs, t0, t1);
}
/* The checkpoint thread: a PASSIVE checkpoint whenever the writer asks. */
static void *
spool_ckpt_thread(void *arg)
{
	struct spool *sp = arg;

	pthread_mutex_lock(&sp->mu);
	for (;;) {
		while (!sp->ck_wanted && !sp->stopping)
			pthread_cond_wait(&sp->ckcv, &sp->mu);
		if (sp->stopping)
			break;
		pthread_mutex_unlock(&sp->mu);
		int ran = spool_cdb_checkpoint(sp->cdb);
		pthread_mutex_lock(&sp->mu);
		sp->ck_wanted = 0;
		sp->stats.checkpoints += (uint64_t)ran;
	}
	pthread_mutex_unlock(&sp->mu);
	return NULL;
}

/* The reader thread: each body read in turn, outside the lock. */
static void *
spool_reader_thread(void *arg)
{
	struct spool *sp = arg;
	char err[SPOOL_ERRLEN];

	pthread_mutex_lock(&sp->mu);
	for (;;) {
		struct spool_rreq *r;

		while (sp->rd_pend == NULL && !sp->stopping)
			pthread_cond_wait(&sp->rdcv, &sp->mu);
		if ((r = sp->rd_pend) == NULL)
			break;		/* stopping, nothing left */
		if ((sp->rd_pend = r->next) == NULL)
			sp->rd_pend_tail = &sp->rd_pend;
		pthread_mutex_unlock(&sp->mu);
		err[0] = '\0';
		r->body = spool_rdb_body_load(sp->rd_db, r->mid, err,
		    sizeof(err));
		r->status = r->body != NULL ? SPOOL_OK :
		    spool_rdb_notfound(sp->rd_db) ? SPOOL_ERR_NOTFOUND :
		    SPOOL_ERR_IO;
		pthread_mutex_lock(&sp->mu);
		if (err[0] != '\0')
			memcpy(sp->err_shared, err, sizeof(err));
		sp->stats.body_reads++;
		r->next = NULL;
		*sp->rd_done_tail = r;
		sp->rd_done_tail = &r->next;
		spool_wake_port(&sp->main);
	}
	pthread_mutex_unlock(&sp->mu);
	return NULL;
}

/*
 * Writer 0, idle for SPOOL_IDLE_MS (a checkpoint after every batch under
 * a steady trickle would double the syncs and delay the next): checkpoint
 * with the turn held, mu released meanwhile so requests queue.
 */
static void
spool_idle_checkpoint(struct spool_writer *w)
{
	struct spool *sp = w->sp;
	int64_t wal = sp->wal_bytes;
	int ran;

	sp->writing = 1;
	pthread_mutex_unlock(&sp->mu);
	ran = spool_db_checkpoint(w->db, 1, wal);
	pthread_mutex_lock(&sp->mu);
	sp->writing = 0;
	pthread_cond_signal(&sp->cv);
	sp->stats.checkpoints += ran >= 0;
	if (ran == 1) {
		sp->wal_dirty = 0;
		if (wal >= SPOOL_WAL_LIMIT)
			sp->wal_bytes = 0;
	}
}

static int
spool_ckpt_wanted(const struct spool *sp)
{
	return sp->wal_dirty || sp->wal_bytes >= SPOOL_WAL_LIMIT;
}

/*
 * 1 if a writer may take the pending requests now: nobody writes, and no
 * batch syncs or at least as many wait as the one syncing holds (mu held).
 */
static int
spool_batch_due(const struct spool *sp)
{
	return sp->pend_head != NULL && !sp->writing &&
	    (sp->nsyncing == 0 || sp->npend >= sp->sync_n ||
	    sp->stopping);
}

/* A writer thread: take the turn and a batch, write, sync, hand back. */
static void *
spool_writer(void *arg)
{
	struct spool_writer *w = arg;
	struct spool *sp = w->sp;
	struct spool_req *head;
	struct timespec ts;
	int retry = 0;

	pthread_mutex_lock(&sp->mu);
	for (;;) {
		if (!spool_batch_due(sp)) {
			if (sp->stopping && sp->pend_head == NULL)
				break;
			if (w->id != 0 || sp->writing || sp->pend_head != NULL ||
			    sp->nsyncing > 0 || !spool_ckpt_wanted(sp)) {
				pthread_cond_wait(&sp->cv, &sp->mu);
				continue;
			}
			spool_timeout_after(&ts, retry ? SPOOL_RETRY_CKPT_MS :
			    SPOOL_IDLE_MS);
			if (pthread_cond_timedwait(&sp->cv, &sp->mu, &ts) !=
			    ETIMEDOUT || sp->pend_head != NULL ||
			    sp->writing || sp->stopping)
				continue;
			spool_idle_checkpoint(w);
			/* A reader kept it from finishing: try again later. */
			retry = spool_ckpt_wanted(sp);
			continue;
		}
		head = sp->pend_head;
		sp->pend_head = NULL;
		sp->pend_tail = &sp->pend_head;
		sp->npend = 0;
		sp->writing = 1;
		uint64_t seq = ++sp->batch_seq;
		pthread_mutex_unlock(&sp->mu);
		spool_writer_batch(w, head, seq);
		retry = 0;
	}
	pthread_mutex_unlock(&sp->mu);
	return NULL;
}

/* The request whose callback runs on this thread (spool_done_us & co). */
static __thread struct spool_req *spool_cb_req;

/* On a port's loop thread: call back every finished request, in order
 * (and on the spool's own loop, the body reads). */
static void
spool_deliver(struct spool_port *p)
{
	struct spool *sp = p->sp;
	struct spool_req *r, *next;
	struct spool_rreq *rr = NULL, *rnext;

	pthread_mutex_lock(&sp->mu);
	r = p->done_head;
	p->done_head = NULL;
	p->done_tail = &p->done_head;
	for (struct spool_req *q = r; q != NULL; q = q->next)
		p->inflight--;
	if (p == &sp->main) {
		rr = sp->rd_done;
		sp->rd_done = NULL;
		sp->rd_done_tail = &sp->rd_done;
		if (sp->err_shared[0] != '\0')
			memcpy(sp->err, sp->err_shared, sizeof(sp->err));
	}
	pthread_mutex_unlock(&sp->mu);
	for (; r != NULL; r = next) {
		next = r->next;
		spool_cb_req = r;
		if (r->cb != NULL)
			r->cb(r->arg, r->status);
		spool_cb_req = NULL;
		spool_req_free(r);
	}
	for (; rr != NULL; rr = rnext) {
		struct evbuffer *body = rr->body;
		rnext = rr->next;
		rr->body = NULL;	/* the callback takes it */
		rr->cb(rr->arg, body, rr->status);
		spool_rreq_free(rr);
	}
}

static void
spool_done_cb(evutil_socket_t fd, short what, void *arg)
{
	uint64_t v;

	while (read(fd, &v, sizeof(v)) == -1 && errno == EINTR)
		;
	spool_deliver(arg);
}

/* A port's eventfd and event on base; -1 with err on failure. */
static int
spool_port_init(struct spool *sp, struct spool_port *p,
    struct event_base *base, char *err, size_t errlen)
{
	p->sp = sp;
	p->done_tail = &p->done_head;
	if ((p->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) == -1) {
		snprintf(err, errlen, "spool: eventfd: %s", strerror(errno));
		return -1;
	}
	p->done_ev = event_new(base, p->efd, EV_READ | EV_PERSIST,
	    spool_done_cb, p);
	/* a 250 waits for it: before the next sessions' reads (evloop.c) */
	if (p->done_ev != NULL)
		event_priority_set(p->done_ev, SL_EVLOOP_PRIO_HIGH);
	if (p->done_ev == NULL || event_add(p->done_ev, NULL) == -1) {
		snprintf(err, errlen, "spool: cannot add the completion event");
		return -1;
	}
	return 0;
}

static void
spool_port_fini(struct spool_port *p)
{
	if (p->done_ev != NULL)
		event_free(p->done_ev);
	p->done_ev = NULL;
	if (p->efd != -1)
		close(p->efd);
	p->efd = -1;
}

struct spool_port *
spool_port_new(struct spool *sp, struct event_base *base, char *err,
    size_t errlen)
{
	struct spool_port *p = xcalloc(1, sizeof(*p));

	p->efd = -1;
	if (spool_port_init(sp, p, base, err, errlen) != 0) {
		spool_port_fini(p);
		free(p);
		return NULL;
	}
	return p;
}

void
spool_port_free(struct spool_port *p)
{
	struct spool *sp;

	if (p == NULL)
		return;
	sp = p->sp;
	/* every answer still due, called back here (the port's loop is
	 * still), as the writers get to them */
	for (;;) {
		pthread_mutex_lock(&sp->mu);
		while (p->done_head == NULL && p->inflight > 0)
			pthread_cond_wait(&sp->seqcv, &sp->mu);
		int left = p->done_head != NULL;
		pthread_mutex_unlock(&sp->mu);
		if (!left)
			break;
		spool_deliver(p);
	}
	spool_port_fini(p);
	free(p);
}

struct spool *
spool_open(const char *dir, struct event_base *base, char *err,
    size_t errlen)
{
	struct spool *sp = xcalloc(1, sizeof(*sp));

	sp->base = base;
	sp->main.efd = -1;
	sp->main.sp = sp;
	sp->main.done_tail = &sp->main.done_head;
	sp->dir = xstrdup(dir);
	sp->pend_tail = &sp->pend_head;
	sp->rd_pend_tail = &sp->rd_pend;
	sp->rd_done_tail = &sp->rd_done;
	/* something may be left in the WAL by a crash: checkpoint when idle */
	sp->wal_dirty = 1;
	pthread_mutex_init(&sp->mu, NULL);
	pthread_cond_init(&sp->cv, NULL);
	pthread_cond_init(&sp->seqcv, NULL);
	pthread_cond_init(&sp->ckcv, NULL);
	pthread_cond_init(&sp->rdcv, NULL);
	for (int i = 0; i < SPOOL_WRITERS; i++) {
		sp->w[i].sp = sp;
		sp->w[i].id = i;
	}

	uint64_t max_mid = 0;
	if ((sp->w[0].db = spool_db_open(dir, &max_mid, err, errlen)) == NULL)
		goto fail;
	atomic_store(&sp->last_mid, max_mid);
	for (int i = 1; i < SPOOL_WRITERS; i++)
		if ((sp->w[i].db = spool_db_open_more(dir, sp->w[0].db, err,
		    errlen)) == NULL)
			goto fail;
	if ((sp->rdb = spool_rdb_open(dir, err, errlen)) == NULL)
		goto fail;
	if ((sp->cdb = spool_cdb_open(dir, err, errlen)) == NULL)
		goto fail;
	if ((sp->rd_db = spool_rdb_open(dir, err, errlen)) == NULL)
		goto fail;
	if ((errno = pthread_create(&sp->rd_thread, NULL, spool_reader_thread,
	    sp)) != 0) {
		snprintf(err, errlen, "spool: thread: %s", strerror(errno));
		goto fail;
	}
	sp->rd_started = 1;
	/* names for top -H, perf and /proc/PID/task/TID/comm */
	pthread_setname_np(sp->rd_thread, "spool-read");
	if ((errno = pthread_create(&sp->ckpt_thread, NULL, spool_ckpt_thread,
	    sp)) != 0) {
		snprintf(err, errlen, "spool: thread: %s", strerror(errno));
		goto fail;
	}
	sp->ckpt_started = 1;
	pthread_setname_np(sp->ckpt_thread, "spool-ckpt");
	if (spool_port_init(sp, &sp->main, base, err, errlen) != 0)
		goto fail;
	/* From here on each writer's db belongs to its thread. */
	for (int i = 0; i < SPOOL_WRITERS; i++) {
		if ((errno = pthread_create(&sp->w[i].thread, NULL,
		    spool_writer, &sp->w[i])) != 0) {
			snprintf(err, errlen, "spool: thread: %s",
			    strerror(errno));
			goto fail;
		}
		sp->w[i].started = 1;
		char name[16];
		snprintf(name, sizeof(name), "spool-write%d", i);
		pthread_setname_np(sp->w[i].thread, name);
	}
	return sp;
fail:
	spool_close(sp);
	return NULL;
}

void
spool_close(struct spool *sp)
{
	if (sp == NULL)
		return;
	pthread_mutex_lock(&sp->mu);
	sp->closing = 1;
	pthread_mutex_unlock(&sp->mu);
	if (sp->ckpt_started) {
		pthread_mutex_lock(&sp->mu);
		sp->stopping = 1;
		pthread_cond_signal(&sp->ckcv);
		pthread_mutex_unlock(&sp->mu);
		pthread_join(sp->ckpt_thread, NULL);
	}
	spool_cdb_close(sp->cdb);
	if (sp->rd_started) {
		/* the reader finishes the reads queued, then stops */
		pthread_mutex_lock(&sp->mu);
		sp->stopping = 1;
		pthread_cond_signal(&sp->rdcv);
		pthread_mutex_unlock(&sp->mu);
		pthread_join(sp->rd_thread, NULL);
	}
	spool_rdb_close(sp->rd_db);
	sp->rd_db = NULL;
	/* the writers finish the requests queued, then stop */
	pthread_mutex_lock(&sp->mu);
	sp->stopping = 1;
	pthread_cond_broadcast(&sp->cv);
	pthread_mutex_unlock(&sp->mu);
	for (int i = SPOOL_WRITERS - 1; i >= 0; i--) {
		if (sp->w[i].started)
			pthread_join(sp->w[i].thread, NULL);
		free(sp->w[i].arr);
	}
	/* the first writer last: it checkpoints the WAL to empty */
	for (int i = SPOOL_WRITERS - 1; i >= 0; i--)
		spool_db_close(sp->w[i].db, i == 0);
	/*
	 * The loop may never run again: call back what is left here. A
	 * callback may queue more, which fails at once (spool_enqueue).
	 */
	while (sp->main.done_head != NULL || sp->rd_done != NULL)
		spool_deliver(&sp->main);
	spool_port_fini(&sp->main);
	spool_rdb_close(sp->rdb);
	pthread_cond_destroy(&sp->cv);
	pthread_cond_destroy(&sp->seqcv);
	pthread_cond_destroy(&sp->ckcv);	/* the writer may signal it to the end */
	pthread_cond_destroy(&sp->rdcv);
	pthread_mutex_destroy(&sp->mu);
	free(sp->dir);
	free(sp);
}

static void
spool_enqueue(struct spool *sp, struct spool_req *r, spool_done_fn *cb,
    void *arg)
{
	r->cb = cb;
	r->arg = arg;
	r->next = NULL;
	r->enq_us = r->done_us = sl_mono_us();
	pthread_mutex_lock(&sp->mu);
	if (r->port != NULL)
		r->port->inflight++;
	if (sp->closing) {
		/* The thread is gone or going: fail it; its loop (or
		 * spool_close, for the spool's own) calls back. */
		r->status = SPOOL_ERR_IO;
		snprintf(sp->err_shared, sizeof(sp->err_shared),
		    "spool: request queued while closing");
		spool_done_add(sp, r);
		if (r->port != NULL)
			spool_wake_port(r->port);
	} else {
		*sp->pend_tail = r;
		sp->pend_tail = &r->next;
		/* one writer is enough to wake: any that waits can take it
		 * (waking both made one sleep again, a context switch each) */
		if (++sp->npend == 1 || (sp->nsyncing > 0 &&
		    sp->npend == sp->sync_n))
			pthread_cond_signal(&sp->cv);
	}
	pthread_mutex_unlock(&sp->mu);
}

void
spool_insert(struct spool *sp, struct spool_msg *msg, spool_done_fn *cb,
    void *arg)
{
	struct spool_req *r = xcalloc(1, sizeof(*r));

	r->type = SPOOL_REQ_INSERT;
	r->mid = msg->mid;
	r->msg = msg;
	spool_enqueue(sp, r, cb, arg);
}

void
spool_port_insert(struct spool_port *p, struct spool_msg *msg,
    spool_done_fn *cb, void *arg)
{
	struct spool_req *r = xcalloc(1, sizeof(*r));

	r->type = SPOOL_REQ_INSERT;
	r->mid = msg->mid;
	r->msg = msg;
	r->port = p;
	spool_enqueue(p->sp, r, cb, arg);
}

/* The insert of a report about orig: what it marks there is the caller's. */
static struct spool_req *
spool_report_req(struct spool_msg *dsn, uint64_t orig)
{
	struct spool_req *r = xcalloc(1, sizeof(*r));

	r->type = SPOOL_REQ_INSERT;
	r->mid = dsn->mid;
	r->msg = dsn;
	r->orig = orig;
	return r;
}

void
spool_insert_dsn(struct spool *sp, struct spool_msg *dsn, uint64_t orig,
    const uint32_t *rids, size_t n, spool_done_fn *cb, void *arg)
{
	struct spool_req *r = spool_report_req(dsn, orig);

	r->nrcpt = n;
	r->rcpts = n ? xcalloc(n, sizeof(*r->rcpts)) : NULL;
	for (size_t i = 0; i < n; i++) {
		r->rcpts[i].rid = rids[i];
		r->rcpts[i].state = SPOOL_RCPT_BOUNCED;
	}
	spool_enqueue(sp, r, cb, arg);
}

void
spool_insert_notice(struct spool *sp, struct spool_msg *dsn, uint64_t orig,
    uint8_t flag, spool_done_fn *cb, void *arg)
{
	struct spool_req *r = spool_report_req(dsn, orig);

	r->orig_flag = flag;
	spool_enqueue(sp, r, cb, arg);
}

/* Only what the update writes is copied; the caller keeps rcpts. */
void
spool_update_rcpts(struct spool *sp, uint64_t mid,
    const struct spool_rcpt *rcpts, size_t n, spool_done_fn *cb, void *arg)
{
	struct spool_req *r = xcalloc(1, sizeof(*r));
	size_t i;

	r->type = SPOOL_REQ_UPDATE;
	r->mid = mid;
	r->nrcpt = n;
	r->rcpts = n ? xcalloc(n, sizeof(*r->rcpts)) : NULL;
	for (i = 0; i < n; i++) {
		r->rcpts[i].rid = rcpts[i].rid;
		r->rcpts[i].state = rcpts[i].state;
		r->rcpts[i].attempts = rcpts[i].attempts;
		r->rcpts[i].next_retry = rcpts[i].next_retry;
		r->rcpts[i].last_reply = rcpts[i].last_reply ?
		    xstrdup(rcpts[i].last_reply) : NULL;
	}
	spool_enqueue(sp, r, cb, arg);
}

void
spool_delete(struct spool *sp, uint64_t mid, spool_done_fn *cb, void *arg)
{
	struct spool_req *r = xcalloc(1, sizeof(*r));

	r->type = SPOOL_REQ_DELETE;
	r->mid = mid;
	spool_enqueue(sp, r, cb, arg);
}

long
spool_recover(struct spool *sp, spool_recover_fn *fn, void *arg)
{
	return spool_rdb_recover(sp->rdb, fn, arg, sp->err, sizeof(sp->err));
}

void
spool_body_read(struct spool *sp, uint64_t mid, spool_body_fn *cb, void *arg)
{
	struct spool_rreq *r = xcalloc(1, sizeof(*r));

	r->mid = mid;
	r->cb = cb;
	r->arg = arg;
	pthread_mutex_lock(&sp->mu);
	if (sp->closing || !sp->rd_started) {
		/* the reader is gone or going: fail it, spool_close calls back */
		r->status = SPOOL_ERR_IO;
		*sp->rd_done_tail = r;
		sp->rd_done_tail = &r->next;
	} else {
		*sp->rd_pend_tail = r;
		sp->rd_pend_tail = &r->next;
		pthread_cond_signal(&sp->rdcv);
	}
	pthread_mutex_unlock(&sp->mu);
}

struct evbuffer *
spool_body_load(struct spool *sp, uint64_t mid)
{
	return spool_rdb_body_load(sp->rdb, mid, sp->err, sizeof(sp->err));
}

char *
spool_rcpt_vars(struct spool *sp, uint64_t mid, uint32_t rid)
{
	return spool_rdb_rcpt_vars(sp->rdb, mid, rid);
}

char *
spool_idem_get(struct spool *sp, const char *key, int64_t since)
{
	return spool_rdb_idem_get(sp->rdb, key, since);
}

void
spool_idem_expire(struct spool *sp, int64_t before, spool_done_fn *cb,
    void *arg)
{
	struct spool_req *r = xcalloc(1, sizeof(*r));

	r->type = SPOOL_REQ_IDEM_EXPIRE;
	r->mid = (uint64_t)before;
	spool_enqueue(sp, r, cb, arg);
}

const char *
spool_last_error(struct spool *sp)
{
	return sp->err;
}

void
spool_stats_get(struct spool *sp, struct spool_stats *out)
{
	pthread_mutex_lock(&sp->mu);
	*out = sp->stats;
	pthread_mutex_unlock(&sp->mu);
}

int64_t
spool_done_us(const struct spool *sp)
{
	return spool_cb_req != NULL ? spool_cb_req->done_us : 0;
}

struct evbuffer *
spool_done_take_body(struct spool *sp)
{
	struct spool_req *r = spool_cb_req;
	struct evbuffer *b;

	if (r == NULL || r->type != SPOOL_REQ_INSERT || r->msg == NULL ||
	    r->status != SPOOL_OK)
		return NULL;
	b = r->msg->body;
	r->msg->body = NULL;
	return b;
}

void
spool_fault_inject(struct spool *sp, int count, enum spool_status err)
{
	/* Atomic inside: a writer may be mid-batch; both take from the first. */
	spool_db_fault(sp->w[0].db, count, err);
}

void
spool_fault_inject_sync(struct spool *sp)
{
	spool_db_fault_sync(sp->w[0].db);
}

/* A reader is the loop's kind of read-only connection, for another thread. */
struct spool_reader *
spool_reader_open(const char *dir, char *err, size_t errlen)
{
	return (struct spool_reader *)spool_rdb_open(dir, err, errlen);
}

void
spool_reader_close(struct spool_reader *r)
{
	spool_rdb_close((struct spool_rdb *)r);
}

struct evbuffer *
spool_reader_body(struct spool_reader *r, uint64_t mid, char *err,
    size_t errlen)
{
	return spool_rdb_body_load((struct spool_rdb *)r, mid, err, errlen);
}

char *
spool_reader_vars(struct spool_reader *r, uint64_t mid, uint32_t rid)
{
	return spool_rdb_rcpt_vars((struct spool_rdb *)r, mid, rid);
}
