/* SPDX-License-Identifier: MIT */
/*
 * service.c: the archive in sluiced (archive.h): the store on its own
 * worker thread, adds group-committed, queries answered on the loop, and
 * an hourly expiry of what is older than [archive] retention.
 *
 * Adds wait in a pending list on the loop thread; at most one put job is
 * in flight and it takes every pending entry at once, so under load many
 * messages share one fdatasync and one commit.
 */
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <glib.h>

#include "archive/archive.h"
#include "log/log.h"
#include "util/util.h"
#include "util/worker.h"

#define ARCHIVE_EXPIRE_EVERY 3600
#define ARCHIVE_FIND_LIMIT 1000

struct archive_item {
	struct archive_item *next;
	struct archive_entry e;	/* strings owned */
	struct evbuffer *body;
};

struct archive {
	struct archive_db *db;
	struct sl_worker *w;
	struct event *expire_ev;
	int64_t retention;
	struct archive_item *pend, **pend_tail;
	size_t npend;
	int putting;
	uint64_t added, failed;
};

struct archive_put {
	struct archive *a;
	struct archive_item *items;
	size_t n;
	int rc;
	char err[256];
};

static void archive_kick(struct archive *a);

static void
archive_item_free(struct archive_item *it)
{
	free((char *)it->e.rcpt);
	free((char *)it->e.sender);
	free((char *)it->e.batch);
	if (it->body)
		evbuffer_free(it->body);
	free(it);
}

static void
archive_put_run(void *arg)
{
	struct archive_put *p = arg;
	struct archive_entry *es = xcalloc(p->n, sizeof(*es));
	struct evbuffer **bs = xcalloc(p->n, sizeof(*bs));
	size_t i = 0;

	for (struct archive_item *it = p->items; it; it = it->next, i++) {
		es[i] = it->e;
		bs[i] = it->body;
	}
	p->rc = archive_db_put(p->a->db, es, bs, p->n, p->err, sizeof(p->err));
	free(es);
	free(bs);
}

static void
archive_put_done(void *arg)
{
	struct archive_put *p = arg;
	struct archive *a = p->a;
	struct archive_item *it, *next;

	if (p->rc != 0) {
		a->failed += p->n;
		log_warnx("%s (%zu message(s) not archived)", p->err, p->n);
	} else {
		a->added += p->n;
	}
	for (it = p->items; it; it = next) {
		next = it->next;
		archive_item_free(it);
	}
	free(p);
	a->putting = 0;
	archive_kick(a);
}

static void
archive_kick(struct archive *a)
{
	struct archive_put *p;

	if (a->putting || a->pend == NULL)
		return;
	p = xcalloc(1, sizeof(*p));
	p->a = a;
	p->items = a->pend;
	p->n = a->npend;
	a->pend = NULL;
	a->pend_tail = &a->pend;
	a->npend = 0;
	a->putting = 1;
	sl_worker_post(a->w, archive_put_run, archive_put_done, p);
}

void
archive_add(struct archive *a, const struct archive_entry *e,
    struct evbuffer *body)
{
	struct archive_item *it = xcalloc(1, sizeof(*it));

	it->e = *e;
	it->e.rcpt = xstrdup(e->rcpt);
	it->e.sender = xstrdup(e->sender ? e->sender : "");
	it->e.batch = e->batch ? xstrdup(e->batch) : NULL;
	it->body = body;
	*a->pend_tail = it;
	a->pend_tail = &it->next;
	a->npend++;
	archive_kick(a);
}

/* ---- queries ---- */

struct archive_q {
	struct archive *a;
	char *rcpt, *batch, *id;
	uint64_t mid;
	json_t *result;
	int notfound;
	char err[256];
	archive_answer_fn *fn;
	void *arg;
};

static void
archive_find_run(void *arg)
{
	struct archive_q *q = arg;

	q->result = archive_db_find(q->a->db, q->rcpt, q->mid, q->batch,
	    ARCHIVE_FIND_LIMIT, q->err, sizeof(q->err));
}

static void
archive_show_run(void *arg)
{
	struct archive_q *q = arg;
	struct evbuffer *b = evbuffer_new();

	int rc = archive_db_show(q->a->db, q->id, b, q->err, sizeof(q->err));

	q->notfound = rc == 1;
	if (rc == 0) {
		size_t n = evbuffer_get_length(b);
		/* JSON strings hold text; the message goes as base64, exact */
		char *b64 = g_base64_encode(evbuffer_pullup(b, -1), n);

		q->result = json_pack("{s:s,s:I,s:s}", "id", q->id, "size",
		    (json_int_t)n, "message_base64", b64);
		g_free(b64);
	}
	evbuffer_free(b);
}

static void
archive_q_done(void *arg)
{
	struct archive_q *q = arg;

	q->fn(q->arg, q->result, q->notfound, q->result ? NULL : q->err);
	free(q->rcpt);
	free(q->batch);
	free(q->id);
	free(q);
}

void
archive_find(struct archive *a, const char *rcpt, uint64_t mid,
    const char *batch, archive_answer_fn *fn, void *arg)
{
	struct archive_q *q = xcalloc(1, sizeof(*q));

	q->a = a;
	q->rcpt = rcpt ? xstrdup(rcpt) : NULL;
	q->batch = batch ? xstrdup(batch) : NULL;
	q->mid = mid;
	q->fn = fn;
	q->arg = arg;
	sl_worker_post(a->w, archive_find_run, archive_q_done, q);
}

void
archive_show(struct archive *a, const char *id, archive_answer_fn *fn,
    void *arg)
{
	struct archive_q *q = xcalloc(1, sizeof(*q));

	q->a = a;
	q->id = xstrdup(id);
	q->fn = fn;
	q->arg = arg;
	sl_worker_post(a->w, archive_show_run, archive_q_done, q);
}

/* ---- expiry ---- */

struct archive_exp {
	struct archive *a;
	long n;
};

static void
archive_expire_run(void *arg)
{
	struct archive_exp *x = arg;

	x->n = archive_db_expire(x->a->db, sl_now_us() / 1000000 -
	    x->a->retention);
}

static void
archive_expire_done(void *arg)
{
	struct archive_exp *x = arg;
	char n[24];

	if (x->n > 0) {
		snprintf(n, sizeof(n), "%ld", x->n);
		log_ev(LOG_INFO, NULL, "archive expired", "entries", n, NULL);
	}
	free(x);
}

static void
archive_expire_fire(evutil_socket_t fd, short what, void *arg)
{
	struct archive *a = arg;
	struct archive_exp *x = xcalloc(1, sizeof(*x));

	x->a = a;
	sl_worker_post(a->w, archive_expire_run, archive_expire_done, x);
}

struct archive *
archive_new(struct event_base *base, const char *dir, int64_t retention,
    char *err, size_t errlen)
{
	struct archive *a = xcalloc(1, sizeof(*a));
	struct timeval tv = { ARCHIVE_EXPIRE_EVERY, 0 };

	if ((a->db = archive_db_open(dir, 0, err, errlen)) == NULL ||
	    (a->w = sl_worker_new(base, "archive")) == NULL) {
		if (a->db != NULL)
			snprintf(err, errlen, "archive: cannot start its thread");
		archive_db_close(a->db);
		free(a);
		return NULL;
	}
	a->retention = retention;
	a->pend_tail = &a->pend;
	a->expire_ev = event_new(base, -1, EV_PERSIST, archive_expire_fire, a);
	evtimer_add(a->expire_ev, &tv);
	archive_expire_fire(-1, 0, a);
	return a;
}

void
archive_free(struct archive *a)
{
	if (a == NULL)
		return;
	event_free(a->expire_ev);
	/* finishes the put in flight; its done kicks the rest, also run here */
	sl_worker_free(a->w);
	archive_db_close(a->db);
	free(a);
}

void
archive_stats(const struct archive *a, uint64_t *added, uint64_t *failed)
{
	*added = a->added;
	*failed = a->failed;
}
