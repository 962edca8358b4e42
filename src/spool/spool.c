/* SPDX-License-Identifier: MIT */
/*
 * spool.c: the spool thread, its request queue and the hand-back of outcomes.
 *
 * The event loop thread queues requests (insert, recipient update, delete)
 * on the pending list under sp->mu and signals sp->cv. The spool thread
 * takes every pending request at once, runs them as one transaction through
 * spool_sqlite.c (group commit: one sync per turn), appends them to the done
 * list and writes the eventfd. The event registered on that eventfd runs on
 * the loop thread: it takes the done list and calls each callback in queue
 * order. When nothing waits, the spool thread checkpoints the WAL.
 *
 * Body reads (spool_body_read) go to a third thread, the reader, with its
 * own read-only connection: a read of a large body never holds up a
 * commit (and so the 250s), nor the loop thread. Its outcomes come back
 * through the same eventfd.
 *
 * Invariants
 *  1. A request is on exactly one of: pending list, spool thread's batch,
 *     done list; it is freed right after its callback returns.
 *  2. Callbacks run on the event loop thread (spool_done_cb, spool_close),
 *     never on the spool thread.
 *  3. Requests complete in the order they were queued.
 *
 * Request life: spool_insert & co. -> pending -> batch (spool_thread)
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
spool_wake_loop(struct spool *sp)
{
	uint64_t one = 1;

	/* EAGAIN means the counter is already non-zero: the loop will wake. */
	while (write(sp->efd, &one, sizeof(one)) == -1 && errno == EINTR)
		;
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

/* Run one batch (mu not held) and move it to the done list (mu held). */
static void
spool_thread_batch(struct spool *sp, struct spool_req *head,
    struct spool_req ***arr, size_t *cap)
{
	struct spool_batch_stats bs = { 0 };
	struct spool_req *r, **tail = NULL;
	char err[SPOOL_ERRLEN] = "";
	size_t n = 0;
	int ckpt;

	for (r = head; r != NULL; r = r->next) {
		if (n == *cap) {
			*cap = *cap ? *cap * 2 : 64;
			*arr = xrealloc(*arr, *cap * sizeof(**arr));
		}
		(*arr)[n++] = r;
		tail = &r->next;
	}
	spool_db_run(sp->db, *arr, n, &bs, err, sizeof(err));
	/* Only if the checkpoint thread fell far behind: block and catch up. */
	ckpt = spool_db_checkpoint(sp->db, 0);

	pthread_mutex_lock(&sp->mu);
	/* Under load the WAL is never idle: the checkpoint thread copies it
	 * back while commits go on. */
	if (spool_db_wal_bytes(sp->db) >= SPOOL_CKPT_TRIGGER && !sp->ck_wanted) {
		sp->ck_wanted = 1;
		pthread_cond_signal(&sp->ckcv);
	}
	sp->stats.commits += bs.commits;
	sp->stats.requests += bs.requests;
	sp->stats.failures += bs.failures;
	sp->stats.checkpoints += (uint64_t)ckpt;
	sp->stats.commit_ms_sum += bs.commit_ms;
	if (bs.commits > 0) {
		spool_hist_add(sp->stats.commit_hist, spool_commit_bounds,
		    SPOOL_COMMIT_BUCKETS, bs.commit_ms / 1000.0 / bs.commits);
		spool_hist_add(sp->stats.batch_hist, spool_batch_bounds,
		    SPOOL_BATCH_BUCKETS, (double)bs.requests / bs.commits);
	}
	if (n > sp->stats.max_batch)
		sp->stats.max_batch = n;
	if (err[0] != '\0')
		memcpy(sp->err_shared, err, sizeof(err));
	*sp->done_tail = head;
	sp->done_tail = tail;
	spool_wake_loop(sp);
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
		spool_wake_loop(sp);
	}
	pthread_mutex_unlock(&sp->mu);
	return NULL;
}

/*
 * Idle means no request for SPOOL_IDLE_MS: under a steady trickle a
 * checkpoint after every batch would double the syncs and delay the next.
 */
static void *
spool_thread(void *arg)
{
	struct spool *sp = arg;
	struct spool_req *head, **arr = NULL;
	struct timespec ts;
	size_t cap = 0;
	int retry = 0;

	pthread_mutex_lock(&sp->mu);
	for (;;) {
		if (sp->pend_head == NULL) {
			if (sp->stopping)
				break;
			if (!spool_db_ckpt_wanted(sp->db)) {
				pthread_cond_wait(&sp->cv, &sp->mu);
				continue;
			}
			spool_timeout_after(&ts, retry ? SPOOL_RETRY_CKPT_MS :
			    SPOOL_IDLE_MS);
			if (pthread_cond_timedwait(&sp->cv, &sp->mu, &ts) !=
			    ETIMEDOUT || sp->pend_head != NULL ||
			    sp->stopping)
				continue;
			/* Without the lock, so requests queue meanwhile. */
			pthread_mutex_unlock(&sp->mu);
			int ran = spool_db_checkpoint(sp->db, 1);
			pthread_mutex_lock(&sp->mu);
			sp->stats.checkpoints += (uint64_t)ran;
			/* A reader kept it from finishing: try again later. */
			retry = spool_db_ckpt_wanted(sp->db);
			continue;
		}
		head = sp->pend_head;
		sp->pend_head = NULL;
		sp->pend_tail = &sp->pend_head;
		pthread_mutex_unlock(&sp->mu);
		spool_thread_batch(sp, head, &arr, &cap);
		retry = 0;
	}
	pthread_mutex_unlock(&sp->mu);
	free(arr);
	spool_db_close(sp->db);
	return NULL;
}

/* On the loop thread: call back every finished request, in order. */
static void
spool_deliver(struct spool *sp)
{
	struct spool_req *r, *next;
	struct spool_rreq *rr, *rnext;

	pthread_mutex_lock(&sp->mu);
	r = sp->done_head;
	sp->done_head = NULL;
	sp->done_tail = &sp->done_head;
	rr = sp->rd_done;
	sp->rd_done = NULL;
	sp->rd_done_tail = &sp->rd_done;
	if (sp->err_shared[0] != '\0')
		memcpy(sp->err, sp->err_shared, sizeof(sp->err));
	pthread_mutex_unlock(&sp->mu);
	for (; r != NULL; r = next) {
		next = r->next;
		if (r->cb != NULL)
			r->cb(r->arg, r->status);
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

struct spool *
spool_open(const char *dir, struct event_base *base, char *err,
    size_t errlen)
{
	struct spool *sp = xcalloc(1, sizeof(*sp));

	sp->base = base;
	sp->efd = -1;
	sp->dir = xstrdup(dir);
	sp->pend_tail = &sp->pend_head;
	sp->done_tail = &sp->done_head;
	sp->rd_pend_tail = &sp->rd_pend;
	sp->rd_done_tail = &sp->rd_done;
	pthread_mutex_init(&sp->mu, NULL);
	pthread_cond_init(&sp->cv, NULL);
	pthread_cond_init(&sp->ckcv, NULL);
	pthread_cond_init(&sp->rdcv, NULL);

	if ((sp->db = spool_db_open(dir, &sp->last_mid, err, errlen)) == NULL)
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
	if ((errno = pthread_create(&sp->ckpt_thread, NULL, spool_ckpt_thread,
	    sp)) != 0) {
		snprintf(err, errlen, "spool: thread: %s", strerror(errno));
		goto fail;
	}
	sp->ckpt_started = 1;
	if ((sp->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) == -1) {
		snprintf(err, errlen, "spool: eventfd: %s", strerror(errno));
		goto fail;
	}
	sp->done_ev = event_new(base, sp->efd, EV_READ | EV_PERSIST,
	    spool_done_cb, sp);
	if (sp->done_ev == NULL || event_add(sp->done_ev, NULL) == -1) {
		snprintf(err, errlen, "spool: cannot add the completion event");
		goto fail;
	}
	/* From here on sp->db belongs to the spool thread. */
	if ((errno = pthread_create(&sp->thread, NULL, spool_thread, sp)) !=
	    0) {
		snprintf(err, errlen, "spool: thread: %s", strerror(errno));
		goto fail;
	}
	sp->thread_started = 1;
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
	sp->closing = 1;
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
	if (sp->thread_started) {
		pthread_mutex_lock(&sp->mu);
		sp->stopping = 1;
		pthread_cond_signal(&sp->cv);
		pthread_mutex_unlock(&sp->mu);
		pthread_join(sp->thread, NULL);
	} else {
		spool_db_close(sp->db);
	}
	/*
	 * The loop may never run again: call back what is left here. A
	 * callback may queue more, which fails at once (spool_enqueue).
	 */
	while (sp->done_head != NULL || sp->rd_done != NULL)
		spool_deliver(sp);
	if (sp->done_ev != NULL)
		event_free(sp->done_ev);
	if (sp->efd != -1)
		close(sp->efd);
	spool_rdb_close(sp->rdb);
	pthread_cond_destroy(&sp->cv);
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
	pthread_mutex_lock(&sp->mu);
	if (sp->closing) {
		/* The thread is gone or going: fail it, spool_close calls back. */
		r->status = SPOOL_ERR_IO;
		snprintf(sp->err_shared, sizeof(sp->err_shared),
		    "spool: request queued while closing");
		*sp->done_tail = r;
		sp->done_tail = &r->next;
	} else {
		*sp->pend_tail = r;
		sp->pend_tail = &r->next;
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

void
spool_fault_inject(struct spool *sp, int count, enum spool_status err)
{
	/* Atomic inside: the spool thread may be mid-batch. */
	spool_db_fault(sp->db, count, err);
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
