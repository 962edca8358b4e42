/* SPDX-License-Identifier: MIT */
/*
 * outcomes.c: what happens around a delivery in sluiced: each
 * recipient's outcome as an event (webhook, RabbitMQ exchange), delivered
 * messages into the archive, recipients failed for good into the failure
 * queue before their message leaves the spool; and the control commands
 * that read and act on those (docs/CONTROL.md):
 *
 *   failures.list {batch}            failures.purge {batch}
 *   failures.retry {ids|batch|all}   archive.find {rcpt|mid|batch}
 *   archive.show {id}
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "archive/archive.h"
#include "conf/conf.h"
#include "control/control.h"
#include "events/events.h"
#include "failures/failures.h"
#include "http/metrics.h"
#include "inject/inject.h"
#include "log/log.h"
#include "mq/mq.h"
#include "sched/sched.h"
#include "sluiced/bulk.h"
#include "sluiced/sluiced.h"
#include "spool/spool.h"
#include "util/util.h"
#include "util/worker.h"

#define FAILURES_LIST_MAX 100000

void
sluiced_bulk_emit(struct sluiced_bulk *b, json_t *e)
{
	if (b->mq != NULL && b->d->conf->events_amqp_exchange[0] != '\0') {
		char *s = json_dumps(e, JSON_COMPACT);
		mq_publish(b->mq, json_string_value(json_object_get(e,
		    "event")), s, strlen(s));
		free(s);
	}
	events_emit(b->events, e);	/* NULL events: just frees e */
}

void
sluiced_bulk_received(struct sluiced_bulk *b, uint64_t mid,
    const char *sender, size_t nrcpt)
{
	char id[17];

	if (b == NULL || (b->events == NULL && b->mq == NULL))
		return;
	sluiced_bulk_emit(b, json_pack("{s:s,s:f,s:s,s:s,s:I,s:n,s:n}",
	    "event", "received", "time", (double)sl_now_us() / 1e6, "mid",
	    spool_mid_fmt(mid, id), "sender", sender, "recipients",
	    (json_int_t)nrcpt, "batch_id", "metadata"));
}

void
sluiced_bulk_metrics(void *arg, struct evbuffer *out)
{
	struct sluiced_bulk *b = arg;

	metrics_one(out, "sluice_inject_batches_total", "counter",
	    "Injected batches durably queued.", (double)b->injected);
	metrics_one(out, "sluice_inject_recipients_total", "counter",
	    "Recipients of the injected batches.", (double)b->injected_rcpts);
	metrics_one(out, "sluice_inject_rejected_total", "counter",
	    "Recipients an injection rejected (bad address, bad vars).",
	    (double)b->rejected_rcpts);
	if (b->events != NULL) {
		struct events_stats e;
		events_stats_get(b->events, &e);
		metrics_one(out, "sluice_events_emitted_total", "counter",
		    "Delivery events made.", (double)e.emitted);
		metrics_one(out, "sluice_events_sent_total", "counter",
		    "Events the webhook accepted.", (double)e.sent);
		metrics_one(out, "sluice_events_dropped_total", "counter",
		    "Events dropped: the disk spool was full ([events] "
		    "spool_max) or unwritable.", (double)e.dropped);
		metrics_one(out, "sluice_events_failures_total", "counter",
		    "Webhook POSTs that failed.", (double)e.failures);
		metrics_one(out, "sluice_events_queued", "gauge",
		    "Events waiting (memory and disk).", (double)e.queued);
		metrics_one(out, "sluice_events_spool_bytes", "gauge",
		    "Bytes of events waiting on disk.", (double)e.spooled_bytes);
	}
	if (b->mq != NULL) {
		struct mq_stats q;
		mq_stats_get(b->mq, &q);
		metrics_one(out, "sluice_amqp_connected", "gauge",
		    "1 while connected to the broker.", q.connected);
		metrics_one(out, "sluice_amqp_requests_total", "counter",
		    "Injection requests received from RabbitMQ.",
		    (double)q.received);
		metrics_one(out, "sluice_amqp_acked_total", "counter",
		    "Requests acknowledged once durably queued.",
		    (double)q.acked);
		metrics_one(out, "sluice_amqp_dead_lettered_total", "counter",
		    "Malformed requests sent to the dead-letter queue.",
		    (double)q.dead);
		metrics_one(out, "sluice_amqp_reconnects_total", "counter",
		    "Connections to the broker made again after a loss.",
		    (double)q.reconnects);
	}
	if (b->archive != NULL) {
		uint64_t added, failed;
		archive_stats(b->archive, &added, &failed);
		metrics_one(out, "sluice_archive_messages_total", "counter",
		    "Delivered messages archived.", (double)added);
		metrics_one(out, "sluice_archive_failures_total", "counter",
		    "Delivered messages the archive failed to keep.",
		    (double)failed);
	}
}

/* ---- the hooks ---- */

static void
bulk_outcome(void *arg, const struct sched_outcome *o)
{
	struct sluiced_bulk *b = arg;
	struct inject_batch *batch = NULL;
	json_t *e, *md;
	char mid[17];

	if (b->events == NULL && b->mq == NULL)
		return;
	spool_mid_fmt(o->mid, mid);
	if (o->flags & SPOOL_F_BATCH)
		batch = sluiced_bulk_batch(b, o->mid);
	md = batch ? inject_batch_metadata(batch) : NULL;
	e = json_pack("{s:s,s:f,s:s,s:I,s:s,s:s,s:o,s:O,s:o,s:o,s:I}",
	    "event", o->event, "time", (double)sl_now_us() / 1e6, "mid", mid,
	    "rid", (json_int_t)o->rid, "recipient", o->addr, "sender",
	    o->sender, "batch_id", batch ? json_string(mid) : json_null(),
	    "metadata", md ? md : json_null(), "reply", o->reply ?
	    json_string(o->reply) : json_null(), "remote", o->remote ?
	    json_string(o->remote) : json_null(), "attempts",
	    (json_int_t)o->attempts);
	if (e != NULL)
		sluiced_bulk_emit(b, e);
}

static void
bulk_delivered(void *arg, uint64_t mid, const char *sender, uint8_t flags,
    const uint32_t *rids, const char *const *addrs, size_t n,
    struct evbuffer *body)
{
	struct sluiced_bulk *b = arg;
	struct inject_batch *batch = NULL;
	struct archive_entry e = { 0 };
	struct evbuffer *copy;
	char id[17];
	size_t len = 0;
	char *list, *p;
	int want;

	if (b->archive == NULL || b->quiesced)
		return;
	if (flags & SPOOL_F_BATCH)
		batch = sluiced_bulk_batch(b, mid);
	want = archive_match(b->d->conf->archive_match, sender) ||
	    (batch != NULL && inject_batch_archive(batch));
	if (!want)
		return;
	for (size_t i = 0; i < n; i++)
		len += strlen(addrs[i]) + 1;
	p = list = xmalloc(len + 1);
	for (size_t i = 0; i < n; i++)
		p += sprintf(p, "%s%s", i ? "," : "", addrs[i]);
	e.mid = mid;
	e.rid = rids[0];
	e.rcpt = list;
	e.sender = sender;
	e.batch = batch ? spool_mid_fmt(mid, id) : NULL;
	e.at = sl_now_us() / 1000000;
	/* the body is the scheduler's shared, read-only copy: copy out of
	 * it without touching its layout */
	copy = evbuffer_new();
	{
		size_t blen = evbuffer_get_length(body);
		char *tmp = xmalloc(blen + 1);
		evbuffer_copyout(body, tmp, blen);
		evbuffer_add(copy, tmp, blen);
		free(tmp);
	}
	archive_add(b->archive, &e, copy);
	free(list);
}

/* One final message's failures, on their way to failures.db. */
struct bulk_fail {
	struct sluiced_bulk *b;
	struct failure_msg m;
	struct failure_rcpt *rcpts;
	char *sender, *envid, *batch;
	int rc;
	char err[256];
	void (*done)(void *);
	void *done_arg;
};

static void
bulk_fail_run(void *arg)
{
	struct bulk_fail *f = arg;

	f->rc = failures_db_add(f->b->fdb, &f->m, 1, f->err, sizeof(f->err));
}

static void
bulk_fail_done(void *arg)
{
	struct bulk_fail *f = arg;
	char n[24];

	if (f->rc != 0) {
		/* the message stays in the spool: recorded at the next start */
		log_warnx("%s (MID %016llX stays queued)", f->err,
		    (unsigned long long)f->m.mid);
	} else {
		snprintf(n, sizeof(n), "%zu", f->m.nrcpt);
		log_ev(LOG_INFO, &(struct log_ids){ 0, 0, f->m.mid, -1 },
		    "failures kept", "recipients", n, NULL);
		f->done(f->done_arg);
	}
	for (size_t i = 0; i < f->m.nrcpt; i++) {
		free((char *)f->rcpts[i].addr);
		free((char *)f->rcpts[i].vars);
		free((char *)f->rcpts[i].reply);
	}
	free(f->rcpts);
	if (f->m.body)
		evbuffer_free(f->m.body);
	free(f->sender);
	free(f->envid);
	free(f->batch);
	free(f);
}

static int
bulk_failed(void *arg, const struct sched_failed *sf, void (*done)(void *),
    void *done_arg)
{
	struct sluiced_bulk *b = arg;
	struct bulk_fail *f;
	struct evbuffer *body;
	char id[17];

	/* stopping: keep the message queued; the next start records it */
	if (b->quiesced)
		return 0;
	/* a DSN that failed has nothing to retry worth keeping */
	if (sf->flags & SPOOL_F_BOUNCE)
		return -1;
	if ((body = spool_body_load(b->d->spool, sf->mid)) == NULL)
		return -1;
	f = xcalloc(1, sizeof(*f));
	f->b = b;
	f->done = done;
	f->done_arg = done_arg;
	f->sender = xstrdup(sf->sender);
	f->envid = sf->envid ? xstrdup(sf->envid) : NULL;
	f->batch = sf->flags & SPOOL_F_BATCH ? xstrdup(spool_mid_fmt(sf->mid,
	    id)) : NULL;
	f->rcpts = xcalloc(sf->n, sizeof(*f->rcpts));
	for (size_t i = 0; i < sf->n; i++) {
		f->rcpts[i].rid = sf->rids[i];
		f->rcpts[i].addr = xstrdup(sf->addrs[i]);
		f->rcpts[i].reply = sf->replies[i] ? xstrdup(sf->replies[i]) :
		    NULL;
		f->rcpts[i].vars = sf->flags & SPOOL_F_BATCH ?
		    spool_rcpt_vars(b->d->spool, sf->mid, sf->rids[i]) : NULL;
	}
	f->m = (struct failure_msg){ sf->mid, f->sender, f->envid, sf->flags,
		f->batch, sl_now_us() / 1000000, body, sf->n, f->rcpts };
	sl_worker_post(b->fw, bulk_fail_run, bulk_fail_done, f);
	return 0;
}

void
sluiced_bulk_hooks(struct sluiced_bulk *b)
{
	struct sched_hooks h = {
		.batch_body = NULL,
		.outcome = bulk_outcome,
		.delivered = bulk_delivered,
		.failed = bulk_failed,
		.arg = b,
	};

	h.batch_body = sluiced_bulk_batch_body;
	sched_set_hooks(b->d->sched, &h);
}

/* ---- control commands ---- */

struct bulk_fq {		/* a failures.* command on the worker */
	struct sluiced_bulk *b;
	struct control_req *req;
	char *batch;
	int64_t *ids;
	size_t nids;
	int all;
	json_t *result, *missing;
	struct failure_retry *retry;
	size_t nretry, pending;
	long n;
	json_t *mids;
	int64_t *done_ids;
	size_t ndone;
	char err[256];
};

static void
bulk_fq_free(struct bulk_fq *q)
{
	free(q->batch);
	free(q->ids);
	free(q->done_ids);
	json_decref(q->missing);
	json_decref(q->mids);
	failures_retry_free(q->retry, q->nretry);
	free(q);
}

static void
bulk_fq_answer(void *arg)
{
	struct bulk_fq *q = arg;

	if (q->result != NULL)
		control_reply(q->req, q->result);
	else
		control_reply_err(q->req, CONTROL_ERR_FAILED, NULL, "%s", q->err);
	q->result = NULL;
	bulk_fq_free(q);
}

static void
bulk_fq_list(void *arg)
{
	struct bulk_fq *q = arg;

	q->result = failures_db_list(q->b->fdb, q->batch, FAILURES_LIST_MAX,
	    q->err, sizeof(q->err));
}

static void
bulk_fq_purge(void *arg)
{
	struct bulk_fq *q = arg;
	long n = failures_db_purge(q->b->fdb, q->all ? NULL : q->batch);

	if (n < 0)
		snprintf(q->err, sizeof(q->err), "failures: purge failed");
	else
		q->result = json_pack("{s:I}", "purged", (json_int_t)n);
}

static void
bulk_fq_take(void *arg)
{
	struct bulk_fq *q = arg;

	q->retry = failures_db_take(q->b->fdb, q->ids, q->nids, q->batch,
	    q->all, &q->nretry, q->missing, q->err, sizeof(q->err));
}

static void
bulk_fq_removed(void *arg)
{
	struct bulk_fq *q = arg;

	if (json_array_size(q->missing) > 0) {
		control_reply_err(q->req, CONTROL_ERR_NOTFOUND,
		    json_incref(q->missing), "%zu of the "
		    "failure ids are not in the queue (%zu re-queued)",
		    json_array_size(q->missing), q->ndone);
	} else {
		control_reply(q->req, json_pack("{s:I,s:O}", "retried",
		    (json_int_t)q->ndone, "mids", q->mids));
	}
	bulk_fq_free(q);
}

static void
bulk_fq_remove(void *arg)
{
	struct bulk_fq *q = arg;

	failures_db_remove(q->b->fdb, q->done_ids, q->ndone);
}

/* One more retry answered; after the last, the failures retried go. */
static void
bulk_retry_finish(struct bulk_fq *q)
{
	if (--q->pending > 0)
		return;
	/* the failures go once their new deliveries are durable */
	if (q->b->fw != NULL)
		sl_worker_post(q->b->fw, bulk_fq_remove, bulk_fq_removed, q);
	else
		bulk_fq_removed(q);
}

struct bulk_retry_one {
	struct bulk_fq *q;
	struct sched_msg *msg;
	struct failure_retry *r;
	uint64_t mid;
};

static void
bulk_retry_stored(void *arg, enum spool_status st)
{
	struct bulk_retry_one *o = arg;
	struct bulk_fq *q = o->q;
	char mid[17];

	if (st == SPOOL_OK) {
		sched_msg_commit(q->b->d->sched, o->msg);
		json_array_append_new(q->mids, json_string(spool_mid_fmt(o->mid,
		    mid)));
		for (size_t i = 0; i < o->r->nrcpt; i++)
			q->done_ids[q->ndone++] = o->r->rcpts[i].id;
		log_ev(LOG_INFO, &(struct log_ids){ 0, 0, o->mid, -1 },
		    "failures re-queued", "original", spool_mid_fmt(o->r->mid,
		    mid), NULL);
	} else {
		sched_msg_abort(q->b->d->sched, o->msg);
	}
	free(o);
	bulk_retry_finish(q);
}

/* A new spool message that sends r again (a batch: its template, with
 * "mid" made the new MID, so Message-IDs stay unique). */
static struct spool_msg *
bulk_retry_msg(struct sluiced_bulk *b, struct failure_retry *r, uint64_t mid)
{
	struct spool_msg *m = xcalloc(1, sizeof(*m));
	char id[17];

	m->mid = mid;
	m->arrival = sl_now_us() / 1000000;
	m->sender = xstrdup(r->sender);
	m->envid = r->envid ? xstrdup(r->envid) : NULL;
	m->flags = r->flags;
	m->client_addr = xstrdup("127.0.0.1");
	m->helo = xstrdup("failures-retry");
	m->body = evbuffer_new();
	if (r->flags & SPOOL_F_BATCH) {
		json_t *t = json_loadb((const char *)evbuffer_pullup(r->body, -1),
		    evbuffer_get_length(r->body), 0, NULL);
		char *s;
		json_object_set_new(t, "mid", json_string(spool_mid_fmt(mid,
		    id)));
		s = json_dumps(t, JSON_COMPACT);
		evbuffer_add(m->body, s, strlen(s));
		free(s);
		json_decref(t);
	} else {
		evbuffer_add_buffer(m->body, r->body);
	}
	m->nrcpt = r->nrcpt;
	m->rcpts = xcalloc(r->nrcpt, sizeof(*m->rcpts));
	for (size_t i = 0; i < r->nrcpt; i++) {
		m->rcpts[i].rid = (uint32_t)i;
		m->rcpts[i].addr = xstrdup(r->rcpts[i].addr);
		m->rcpts[i].vars = r->rcpts[i].vars ? xstrdup(r->rcpts[i].vars) :
		    NULL;
		m->rcpts[i].notify = (r->flags & SPOOL_F_BATCH) ?
		    SPOOL_NOTIFY_NEVER : 0;
	}
	return m;
}

static void
bulk_fq_taken(void *arg)
{
	struct bulk_fq *q = arg;
	size_t total = 0;

	if (q->retry == NULL && q->err[0] != '\0') {
		control_reply_err(q->req, CONTROL_ERR_FAILED, NULL, "%s",
		    q->err);
		bulk_fq_free(q);
		return;
	}
	for (size_t i = 0; i < q->nretry; i++)
		total += q->retry[i].nrcpt;
	q->mids = json_array();
	q->done_ids = xcalloc(total + 1, sizeof(*q->done_ids));
	q->pending = q->nretry + 1;
	for (size_t i = 0; i < q->nretry; i++) {
		struct bulk_retry_one *o = xcalloc(1, sizeof(*o));
		struct spool_msg *m;

		o->q = q;
		o->r = &q->retry[i];
		o->mid = spool_mid_next(q->b->d->spool);
		m = bulk_retry_msg(q->b, o->r, o->mid);
		o->msg = sched_msg_new(q->b->d->sched, m);
		spool_insert(q->b->d->spool, m, bulk_retry_stored, o);
	}
	/* the extra count: an empty selection answers here */
	bulk_retry_finish(q);
}

static int
bulk_fq_args(struct bulk_fq *q, json_t *args, int need_sel)
{
	json_t *ids = json_object_get(args, "ids"), *v;
	const char *batch = json_string_value(json_object_get(args, "batch"));
	size_t i;

	q->all = json_is_true(json_object_get(args, "all"));
	q->batch = batch ? xstrdup(batch) : NULL;
	q->missing = json_array();
	if (json_is_array(ids)) {
		q->ids = xcalloc(json_array_size(ids) + 1, sizeof(*q->ids));
		json_array_foreach(ids, i, v) {
			if (!json_is_integer(v))
				return -1;
			q->ids[q->nids++] = json_integer_value(v);
		}
	}
	if (need_sel && (q->nids > 0) + (q->batch != NULL) + q->all != 1)
		return -1;
	return 0;
}

static void
bulk_ctl_failures(struct sluiced_bulk *b, struct control_req *req,
    const char *cmd, json_t *args)
{
	struct bulk_fq *q = xcalloc(1, sizeof(*q));
	int retry = strcmp(cmd, "failures.retry") == 0;

	q->b = b;
	q->req = req;
	if (b->fw == NULL) {
		control_reply_err(req, CONTROL_ERR_UNAVAILABLE, NULL,
		    "sluiced is stopping");
		bulk_fq_free(q);
		return;
	}
	if (bulk_fq_args(q, args, retry) != 0 || (strcmp(cmd,
	    "failures.purge") == 0 && (q->batch != NULL) + q->all != 1)) {
		control_reply_err(req, CONTROL_ERR_BADARG, NULL,
		    "give failure ids, a batch or all");
		bulk_fq_free(q);
		return;
	}
	if (strcmp(cmd, "failures.list") == 0)
		sl_worker_post(b->fw, bulk_fq_list, bulk_fq_answer, q);
	else if (strcmp(cmd, "failures.purge") == 0)
		sl_worker_post(b->fw, bulk_fq_purge, bulk_fq_answer, q);
	else
		sl_worker_post(b->fw, bulk_fq_take, bulk_fq_taken, q);
}

static void
bulk_archive_answer(void *arg, json_t *result, int notfound, const char *err)
{
	struct control_req *req = arg;

	if (result != NULL)
		control_reply(req, result);
	else
		control_reply_err(req, notfound ? CONTROL_ERR_NOTFOUND :
		    CONTROL_ERR_FAILED, NULL, "%s", err);
}

static void
bulk_ctl_archive(struct sluiced_bulk *b, struct control_req *req,
    const char *cmd, json_t *args)
{
	const char *rcpt = json_string_value(json_object_get(args, "rcpt"));
	const char *mid = json_string_value(json_object_get(args, "mid"));
	const char *batch = json_string_value(json_object_get(args, "batch"));
	const char *id = json_string_value(json_object_get(args, "id"));

	if (b->archive == NULL) {
		control_reply_err(req, CONTROL_ERR_UNAVAILABLE, NULL,
		    "the archive is off ([archive] dir"
		    " is empty)");
		return;
	}
	if (strcmp(cmd, "archive.show") == 0) {
		if (id == NULL) {
			control_reply_err(req, CONTROL_ERR_BADARG, NULL,
			    "give an id (MID or "
			    "MID.RID)");
			return;
		}
		archive_show(b->archive, id, bulk_archive_answer, req);
		return;
	}
	if ((rcpt != NULL) + (mid != NULL) + (batch != NULL) != 1 ||
	    (mid != NULL && spool_mid_parse(mid) == 0)) {
		control_reply_err(req, CONTROL_ERR_BADARG, NULL,
		    "give one of rcpt, mid (16 hex "
		    "digits) or batch");
		return;
	}
	archive_find(b->archive, rcpt, mid ? spool_mid_parse(mid) : 0, batch,
	    bulk_archive_answer, req);
}

int
sluiced_bulk_ctl(struct sluiced_bulk *b, struct control_req *req,
    const char *cmd, json_t *args)
{
	if (b == NULL)
		return 0;
	if (strcmp(cmd, "failures.list") == 0 ||
	    strcmp(cmd, "failures.retry") == 0 ||
	    strcmp(cmd, "failures.purge") == 0) {
		bulk_ctl_failures(b, req, cmd, args);
		return 1;
	}
	if (strcmp(cmd, "archive.find") == 0 ||
	    strcmp(cmd, "archive.show") == 0) {
		bulk_ctl_archive(b, req, cmd, args);
		return 1;
	}
	return 0;
}
