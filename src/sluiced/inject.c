/* SPDX-License-Identifier: MIT */
/*
 * inject.c: bulk injection in sluiced: a request (HTTP POST
 * /api/v1/inject or a RabbitMQ message) parsed, stored once as a batch
 * (template and recipient list, src/inject) and answered only after the
 * spool's commit returned; the batch's bodies built per recipient at
 * delivery (the scheduler's batch_body hook); the Idempotency-Key
 * checked against the spool and the requests in flight.
 *
 * An injection's life: parsed -> (key seen: the first answer) ->
 * spool_insert -> committed: sched_msg_commit, answer 200, "received"
 * event | failed: answer 503, nothing queued.
 *
 * A recipient's message: built on the builder thread -> DKIM-signed on
 * the signing threads when [dkim] sign has a key for its From: (sign.c)
 * -> the scheduler's.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "archive/archive.h"
#include "conf/conf.h"
#include "events/events.h"
#include "failures/failures.h"
#include "inject/inject.h"
#include "log/log.h"
#include "mq/mq.h"
#include "sched/sched.h"
#include "sluiced/bulk.h"
#include "sluiced/sluiced.h"
#include "spool/spool.h"
#include "util/util.h"
#include "util/worker.h"

#define BULK_HOURLY 3600

/* ---- the injection ---- */

/*
 * One request, from its arrival to its answer. States, moved only by
 * inj_enter():
 *   PARSING (on the inject thread) -> STORING (spool_insert) -> DONE
 *   PARSING -> DONE (refused: 400; or every recipient rejected)
 * DONE is terminal: the answer went out, inj_free() follows.
 */
enum inj_state { INJ_PARSING, INJ_STORING, INJ_DONE };

static const char *const inj_state_names[] = { "parsing", "storing",
	"done" };

struct injection {
	enum inj_state state;
	struct sluiced_bulk *b;
	struct evbuffer *body;		/* PARSING: the request */
	struct inject_limits lim;
	struct inject_req *r;		/* parsed */
	char err[512];			/* why it was refused */
	struct sched_msg *msg;		/* STORING: the scheduler's copy */
	json_t *answer;
	json_t *metadata;		/* for the "received" event */
	char id[17];			/* batch id */
	char *key;			/* Idempotency-Key: in flight until DONE */
	char *peer;
	sluiced_inject_fn *fn;
	void *arg;
};

static void
inj_enter(struct injection *inj, enum inj_state to)
{
	static const unsigned allowed[] = {
		[INJ_PARSING] = 1u << INJ_STORING | 1u << INJ_DONE,
		[INJ_STORING] = 1u << INJ_DONE,
		[INJ_DONE] = 0,
	};

	if (!(allowed[inj->state] & 1u << to))
		SL_PANIC("injection: %s -> %s", inj_state_names[inj->state],
		    inj_state_names[to]);
	if (log_enabled(LOG_DEBUG))
		log_debug("injection %s: %s -> %s", inj->id[0] ? inj->id :
		    "(no batch)", inj_state_names[inj->state],
		    inj_state_names[to]);
	inj->state = to;
}

/* The one free path, from DONE. */
static void
inj_free(struct injection *inj)
{
	SL_ALWAYS(inj->state == INJ_DONE);
	if (inj->key != NULL)
		json_object_del(inj->b->keys_inflight, inj->key);
	if (inj->body != NULL)
		evbuffer_free(inj->body);
	inject_req_free(inj->r);
	json_decref(inj->answer);
	json_decref(inj->metadata);
	free(inj->key);
	free(inj->peer);
	free(inj);
}

/* Answer (takes j) and finish. */
static void
inj_answer(struct injection *inj, int code, json_t *j)
{
	inj_enter(inj, INJ_DONE);
	inj->fn(inj->arg, code, j);
	inj_free(inj);
}

static json_t *
bulk_answer(const struct inject_req *r, const char *batch_id)
{
	json_t *rej = json_array();

	for (size_t i = 0; i < r->nrejected; i++)
		json_array_append_new(rej, json_pack("{s:I,s:o,s:s}", "index",
		    (json_int_t)r->rejected[i].index, "email",
		    r->rejected[i].email ? json_string(r->rejected[i].email) :
		    json_null(), "reason", r->rejected[i].reason));
	return json_pack("{s:o,s:I,s:o}", "batch_id", batch_id ?
	    json_string(batch_id) : json_null(), "accepted",
	    (json_int_t)r->nrcpt, "rejected", rej);
}

/* STORING: the spool answered. */
static void
inj_stored(void *arg, enum spool_status st)
{
	struct injection *inj = arg;
	struct sluiced_bulk *b = inj->b;
	size_t n = inj->r->nrcpt;
	char num[24];

	if (st != SPOOL_OK) {
		sched_msg_abort(b->d->sched, inj->msg);
		log_ev(LOG_WARNING, NULL, "injection not stored", "batch_id",
		    inj->id, "peer", inj->peer, "status", st ==
		    SPOOL_ERR_NOSPACE ? "no space" : "io error", NULL);
		inj_answer(inj, 503, json_pack("{s:s}", "error", "the spool "
		    "could not store the batch; nothing was queued, try again"));
		return;
	}
	sched_msg_commit(b->d->sched, inj->msg);
	b->injected++;
	b->injected_rcpts += n;
	snprintf(num, sizeof(num), "%zu", n);
	log_ev(LOG_INFO, NULL, "batch injected", "batch_id", inj->id,
	    "recipients", num, "peer", inj->peer, NULL);
	sluiced_bulk_emit(b, json_pack("{s:s,s:f,s:s,s:s,s:I,s:O}", "event",
	    "received", "time", (double)sl_now_us() / 1e6, "mid", inj->id,
	    "batch_id", inj->id, "recipients", (json_int_t)n, "metadata",
	    inj->metadata ? inj->metadata : json_null()));
	inj_answer(inj, 200, json_incref(inj->answer));
}

/* The spool message of a parsed request: its recipients' strings move. */
static struct spool_msg *
bulk_spool_msg(struct sluiced_bulk *b, struct inject_req *r, uint64_t mid,
    int64_t now, const char *peer)
{
	struct spool_msg *m = xcalloc(1, sizeof(*m));
	char *tpl = inject_batch_json(r, mid, now,
	    b->d->conf->server_hostname);

	m->mid = mid;
	m->arrival = now;
	m->sender = xstrdup(r->sender);
	m->flags = SPOOL_F_BATCH | (r->smtputf8 ? SPOOL_F_SMTPUTF8 : 0);
	m->client_addr = xstrdup(peer ? peer : "127.0.0.1");
	m->helo = xstrdup("inject");
	m->body = evbuffer_new();
	evbuffer_add(m->body, tpl, strlen(tpl));
	free(tpl);
	m->nrcpt = r->nrcpt;
	m->rcpts = xcalloc(r->nrcpt ? r->nrcpt : 1, sizeof(*m->rcpts));
	for (size_t i = 0; i < r->nrcpt; i++) {
		struct spool_rcpt *sr = &m->rcpts[i];
		sr->rid = (uint32_t)i;
		sr->addr = r->rcpts[i].email;
		sr->vars = r->rcpts[i].vars;
		r->rcpts[i].email = r->rcpts[i].vars = NULL;
		/* outcomes go to the events and the failure queue, not as
		 * one DSN per recipient to the sender */
		sr->notify = SPOOL_NOTIFY_NEVER;
		sr->state = SPOOL_RCPT_QUEUED;
	}
	return m;
}

/* PARSING, on the inject thread: a big request takes a while. */
static void
inj_parse_run(void *arg)
{
	struct injection *inj = arg;
	size_t len = evbuffer_get_length(inj->body);

	inject_req_parse((const char *)evbuffer_pullup(inj->body, -1), len,
	    &inj->lim, &inj->r, inj->err, sizeof(inj->err));
}

/* PARSING done, on the loop: store it, or answer the client's mistake. */
static void
inj_parsed(void *arg)
{
	struct injection *inj = arg;
	struct sluiced_bulk *b = inj->b;
	struct inject_req *r = inj->r;
	int64_t now = sl_now_us() / 1000000;
	struct spool_msg *m;
	uint64_t mid;

	inj->body = (evbuffer_free(inj->body), NULL);
	if (r == NULL) {
		log_ev(LOG_INFO, NULL, "injection refused", "reason", inj->err,
		    "peer", inj->peer, NULL);
		inj_answer(inj, 400, json_pack("{s:s}", "error", inj->err));
		return;
	}
	b->rejected_rcpts += r->nrejected;
	if (r->nrcpt == 0) {
		inj_answer(inj, 200, bulk_answer(r, NULL));
		return;
	}
	mid = spool_mid_next(b->d->spool);
	spool_mid_fmt(mid, inj->id);
	inj->answer = bulk_answer(r, inj->id);
	inj->metadata = json_incref(json_object_get(r->tpl, "metadata"));
	m = bulk_spool_msg(b, r, mid, now, inj->peer);
	if (inj->key != NULL) {
		m->idem_key = xstrdup(inj->key);
		m->idem_answer = json_dumps(inj->answer, JSON_COMPACT);
	}
	inj_enter(inj, INJ_STORING);
	inj->msg = sched_msg_new(b->d->sched, m);
	spool_insert(b->d->spool, m, inj_stored, inj);
}

void
sluiced_inject(struct sluiced_bulk *b, struct evbuffer *body,
    const char *key, const char *peer, sluiced_inject_fn *fn, void *arg)
{
	const struct sl_conf *c = b->d->conf;
	int64_t now = sl_now_us() / 1000000;
	struct injection *inj;
	char *seen;

	if (key != NULL && (key[0] == '\0' || strlen(key) > 255)) {
		evbuffer_free(body);
		fn(arg, 400, json_pack("{s:s}", "error", "Idempotency-Key: "
		    "1 to 255 characters"));
		return;
	}
	if (key != NULL && json_object_get(b->keys_inflight, key) != NULL) {
		evbuffer_free(body);
		fn(arg, 409, json_pack("{s:s}", "error", "a request with this "
		    "Idempotency-Key is being stored; ask again"));
		return;
	}
	if (key != NULL && (seen = spool_idem_get(b->d->spool, key, now -
	    c->inject_idempotency_window)) != NULL) {
		json_t *a = json_loads(seen, 0, NULL);
		free(seen);
		evbuffer_free(body);
		log_ev(LOG_INFO, NULL, "injection repeated: first answer "
		    "returned", "key", key, "peer", peer, NULL);
		fn(arg, 200, a ? a : json_object());
		return;
	}
	inj = xcalloc(1, sizeof(*inj));
	inj->state = INJ_PARSING;
	inj->b = b;
	inj->body = body;
	inj->lim = (struct inject_limits){ (size_t)c->inject_max_recipients,
		(size_t)c->server_max_message_size,
		(size_t)c->inject_max_vars_size };
	inj->peer = xstrdup(peer ? peer : "");
	inj->fn = fn;
	inj->arg = arg;
	if (key != NULL) {
		inj->key = xstrdup(key);
		json_object_set_new(b->keys_inflight, key, json_true());
	}
	sl_worker_post(b->iw, inj_parse_run, inj_parsed, inj);
}

/* ---- the batch bodies at delivery ---- */

struct inject_batch *
sluiced_bulk_batch(struct sluiced_bulk *b, uint64_t mid)
{
	size_t slot = (size_t)(mid ^ (mid >> 17)) % BULK_CACHE;
	struct evbuffer *body;
	char err[256];

	if (b->cache[slot].b != NULL && b->cache[slot].mid == mid)
		return b->cache[slot].b;
	if ((body = spool_body_load(b->d->spool, mid)) == NULL)
		return NULL;
	inject_batch_free(b->cache[slot].b);
	b->cache[slot].mid = mid;
	b->cache[slot].b = inject_batch_new((const char *)evbuffer_pullup(body,
	    -1), evbuffer_get_length(body), err, sizeof(err));
	evbuffer_free(body);
	if (b->cache[slot].b == NULL) {
		char m[17];
		log_ev(LOG_WARNING, &(struct log_ids){ 0, 0, mid, -1 },
		    "batch template unusable", "reason", err, "mid",
		    spool_mid_fmt(mid, m), NULL);
	}
	return b->cache[slot].b;
}

/*
 * The builder, on its own thread with its own read-only spool connection
 * and cache of compiled templates (both used there only): the GMime work
 * and the reads of the template and the vars stay off the loop.
 */
struct bulk_build {
	struct sluiced_bulk *b;
	uint64_t mid;
	uint32_t rid;
	char *addr;
	struct evbuffer *out;		/* the message, or NULL */
	int64_t date;			/* the batch's: the signature's t= */
	char why[256];
	spool_body_fn *cb;
	void *arg;
};

/* The compiled template of mid in the builder's own cache. */
static struct inject_batch *
bulk_build_batch(struct sluiced_bulk *b, uint64_t mid, char *err,
    size_t errlen)
{
	size_t slot = (size_t)(mid ^ (mid >> 17)) % BULK_CACHE;
	struct evbuffer *body;

	if (b->bcache[slot].b != NULL && b->bcache[slot].mid == mid)
		return b->bcache[slot].b;
	if ((body = spool_reader_body(b->reader, mid, err, errlen)) == NULL)
		return NULL;
	inject_batch_free(b->bcache[slot].b);
	b->bcache[slot].mid = mid;
	b->bcache[slot].b = inject_batch_new((const char *)evbuffer_pullup(
	    body, -1), evbuffer_get_length(body), err, errlen);
	evbuffer_free(body);
	/* sizes were checked at injection (inject_req_parse): the builder
	 * keeps the library's own bound as a last guard */
	return b->bcache[slot].b;
}

static void
bulk_build_run(void *arg)
{
	struct bulk_build *x = arg;
	struct inject_batch *batch = bulk_build_batch(x->b, x->mid, x->why,
	    sizeof(x->why));
	char *vars;

	if (batch == NULL)
		return;
	vars = spool_reader_vars(x->b->reader, x->mid, x->rid);
	x->date = inject_batch_date(batch);
	x->out = evbuffer_new();
	if (inject_batch_build(batch, x->addr, vars, x->rid, x->out, x->why,
	    sizeof(x->why)) != 0) {
		evbuffer_free(x->out);
		x->out = NULL;
	}
	free(vars);
}

/* The message to the scheduler (cb), signed if it was to be. */
static void
bulk_build_give(void *arg)
{
	struct bulk_build *x = arg;

	x->cb(x->arg, x->out, x->out ? SPOOL_OK : SPOOL_ERR_IO);
	free(x->addr);
	free(x);
}

/*
 * Built, on the loop: [dkim] sign covers injected mail as it covers
 * authenticated submission (the API token or the broker's credentials
 * authenticate the application), so the message is signed now, over the
 * bytes this recipient is sent (sign.c), with the batch's date as t=: a
 * retry rebuilds the same bytes and signs them the same way. Once
 * stopping (quiesced), the connections are gone: nothing is signed.
 */
static void
bulk_build_done(void *arg)
{
	struct bulk_build *x = arg;
	struct log_ids ids = { 0, 0, x->mid, (int64_t)x->rid };

	if (x->out == NULL)
		log_ev(LOG_WARNING, &ids, "message not built", "reason", x->why,
		    NULL);
	if (x->out == NULL || x->b->quiesced || sluiced_sign(x->b->d, x->out,
	    x->date, &ids, bulk_build_give, x) != 0)
		bulk_build_give(x);
}

void
sluiced_bulk_batch_body(void *arg, uint64_t mid, uint32_t rid,
    const char *addr, spool_body_fn *cb, void *cbarg)
{
	struct sluiced_bulk *b = arg;
	struct bulk_build *x;

	if (b->bw == NULL) {		/* stopping */
		cb(cbarg, NULL, SPOOL_ERR_IO);
		return;
	}
	x = xcalloc(1, sizeof(*x));
	x->b = b;
	x->mid = mid;
	x->rid = rid;
	x->addr = xstrdup(addr);
	x->cb = cb;
	x->arg = cbarg;
	sl_worker_post(b->bw, bulk_build_run, bulk_build_done, x);
}

/* ---- RabbitMQ ---- */

static void
bulk_mq_answer(void *arg, int code, json_t *answer)
{
	struct mq_msg *m = ((void **)arg)[0];
	struct sluiced_bulk *b = ((void **)arg)[1];

	free(arg);
	if (code == 200) {
		mq_done(b->mq, m, NULL);
	} else if (code == 400) {
		const char *e = json_string_value(json_object_get(answer,
		    "error"));
		log_ev(LOG_INFO, NULL, "amqp: request dead-lettered", "reason",
		    e, NULL);
		mq_done(b->mq, m, e ? e : "malformed");
	} else {
		/* not stored (409, 503): back to the broker, delivered again */
		mq_requeue(b->mq, m);
	}
	json_decref(answer);
}

static void
bulk_mq_request(void *arg, struct mq_msg *m)
{
	struct sluiced_bulk *b = arg;
	void **pair = xcalloc(2, sizeof(*pair));
	size_t len;
	const char *body = mq_msg_body(m, &len);

	struct evbuffer *buf = evbuffer_new();

	pair[0] = m;
	pair[1] = b;
	/* m (and so its body) lives until mq_done/mq_requeue, after the answer */
	evbuffer_add_reference(buf, body, len, NULL, NULL);
	sluiced_inject(b, buf, mq_msg_key(m), "amqp", bulk_mq_answer, pair);
}

/* ---- start, hourly, stop ---- */

static void
bulk_idem_expired(void *arg, enum spool_status st)
{
}

struct bulk_fexp {
	struct sluiced_bulk *b;
	int64_t before;
	long n;
};

static void
bulk_fexp_run(void *arg)
{
	struct bulk_fexp *x = arg;

	x->n = failures_db_expire(x->b->fdb, x->before);
}

static void
bulk_fexp_done(void *arg)
{
	struct bulk_fexp *x = arg;
	char n[24];

	if (x->n > 0) {
		snprintf(n, sizeof(n), "%ld", x->n);
		log_ev(LOG_INFO, NULL, "failures expired", "recipients", n, NULL);
	}
	free(x);
}

static void
bulk_hourly(evutil_socket_t fd, short what, void *arg)
{
	struct sluiced_bulk *b = arg;
	int64_t now = sl_now_us() / 1000000;
	struct bulk_fexp *x;

	spool_idem_expire(b->d->spool, now - b->d->conf->inject_idempotency_window,
	    bulk_idem_expired, b);
	/* [failures] keep = 0: kept until purged */
	if (b->d->conf->failures_keep > 0 && b->fw != NULL) {
		x = xcalloc(1, sizeof(*x));
		x->b = b;
		x->before = now - b->d->conf->failures_keep;
		sl_worker_post(b->fw, bulk_fexp_run, bulk_fexp_done, x);
	}
}

char *
sluiced_read_token(const char *path, const char *what, char *err,
    size_t errlen)
{
	FILE *f = fopen(path, "r");
	char line[4096];

	if (f == NULL || fgets(line, sizeof(line), f) == NULL ||
	    *sl_strtrim(line) == '\0') {
		snprintf(err, errlen, "%s %s: no token in it", what, path);
		if (f)
			fclose(f);
		return NULL;
	}
	fclose(f);
	return xstrdup(sl_strtrim(line));
}

struct sluiced_bulk *
sluiced_bulk_new(struct sluiced *d, char *err, size_t errlen)
{
	const struct sl_conf *c = d->conf;
	struct sluiced_bulk *b = xcalloc(1, sizeof(*b));
	struct timeval tv = { BULK_HOURLY, 0 };
	char *token = NULL;

	inject_init();
	b->d = d;
	b->keys_inflight = json_object();
	if (c->events_webhook_url[0] != '\0') {
		struct events_conf ec = { c->events_webhook_url, c->spool_dir,
			c->events_spool_max, c->events_batch_size,
			c->events_batch_delay * 1000, c->events_retry_max,
			c->events_timeout, NULL };
		if (c->events_webhook_token_file[0] != '\0' &&
		    (token = sluiced_read_token(c->events_webhook_token_file,
		    "[events] webhook_token_file", err, errlen)) == NULL)
			goto fail;
		ec.token = token;
		if ((b->events = events_new(d->base, &ec, err, errlen)) == NULL)
			goto fail;
	}
	if (c->amqp_url[0] != '\0') {
		struct mq_conf mc = { c->amqp_url, c->amqp_queue,
			c->amqp_dead_letter_queue, (int)c->amqp_prefetch,
			c->events_amqp_exchange };
		if ((b->mq = mq_new(d->base, &mc, bulk_mq_request, b, err,
		    errlen)) == NULL)
			goto fail;
	}
	if (c->archive_dir[0] != '\0' && (b->archive = archive_new(d->base,
	    c->archive_dir, c->archive_retention, err, errlen)) == NULL)
		goto fail;
	if ((b->fdb = failures_db_open(c->spool_dir, err, errlen)) == NULL ||
	    (b->fw = sl_worker_new(d->base, "failures")) == NULL ||
	    (b->iw = sl_worker_new(d->base, "inject")) == NULL ||
	    (b->bw = sl_worker_new(d->base, "build")) == NULL ||
	    (b->reader = spool_reader_open(c->spool_dir, err, errlen)) ==
	    NULL) {
		if (err[0] == '\0' || (b->fdb != NULL && b->reader == NULL &&
		    b->bw == NULL))
			snprintf(err, errlen, "cannot start the bulk threads");
		goto fail;
	}
	b->hourly_ev = event_new(d->base, -1, EV_PERSIST, bulk_hourly, b);
	evtimer_add(b->hourly_ev, &tv);
	bulk_hourly(-1, 0, b);
	free(token);
	sluiced_bulk_hooks(b);
	return b;
fail:
	free(token);
	sluiced_bulk_quiesce(b);
	sluiced_bulk_free(b);
	return NULL;
}

void
sluiced_bulk_quiesce(struct sluiced_bulk *b)
{
	if (b == NULL || b->quiesced)
		return;
	b->quiesced = 1;
	/* requests being parsed are stored (or refused) while the spool runs */
	sl_worker_free(b->iw);
	b->iw = NULL;
	/* messages being built: their connections are gone (sched_stop) */
	sl_worker_free(b->bw);
	b->bw = NULL;
	/* its done callbacks may queue spool deletes: the spool still runs */
	sl_worker_free(b->fw);
	b->fw = NULL;
}

void
sluiced_bulk_free(struct sluiced_bulk *b)
{
	if (b == NULL)
		return;
	sluiced_bulk_quiesce(b);
	mq_free(b->mq);
	events_free(b->events);
	archive_free(b->archive);
	failures_db_close(b->fdb);
	if (b->hourly_ev)
		event_free(b->hourly_ev);
	for (size_t i = 0; i < BULK_CACHE; i++) {
		inject_batch_free(b->cache[i].b);
		inject_batch_free(b->bcache[i].b);
	}
	spool_reader_close(b->reader);
	json_decref(b->keys_inflight);
	free(b);
}
