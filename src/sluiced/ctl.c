/* SPDX-License-Identifier: MIT */
/*
 * ctl.c: the daemon's answers to the control socket's commands. Each
 * command is one function that reads the scheduler, smtpd and spool
 * through their query calls and answers in JSON (docs/CONTROL.md):
 *
 *   status                       uptime, connections, rates, queue, spool
 *   queue.list {domain,state}    every queued message and its recipients
 *   queue.summary                per destination: counts by age (qshape)
 *   queue.show {mid,body}        one message (and its stored body)
 *   queue.flush|hold|release|bounce {mids|domain|all}
 *   queue.delete {mids|domain|all}   answers once the spool removed them
 *   reload, stop
 *
 * Everything runs on the loop thread in one turn, except delete, which
 * waits for the spool's group commit.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "conf/conf.h"
#include "control/control.h"
#include "http/http.h"
#include "http/metrics.h"
#include "log/log.h"
#include "sched/sched.h"
#include "sluiced/sluiced.h"
#include "smtpd/smtpd.h"
#include "spool/spool.h"
#include "util/util.h"

/* Samples for the rates of `status`: every CTL_SAMPLE_S, CTL_SAMPLES kept. */
#define CTL_SAMPLE_S 5
#define CTL_SAMPLES 61

/* Age buckets of `queue summary`, in minutes (as Postfix's qshape). */
static const int ctl_age_minutes[] = { 5, 10, 20, 40, 80, 160, 320, 640,
	1280 };
#define CTL_AGE_BUCKETS (SL_ARRAY_LEN(ctl_age_minutes) + 1)

struct ctl_sample {
	int64_t at_ms;
	uint64_t received, delivered;
};

struct sluiced_ctl {
	struct sluiced *d;
	struct event *sample_ev;
	struct ctl_sample samples[CTL_SAMPLES];
	size_t nsamples, next;
	struct metrics_src msrc;	/* for the HTTP routes */
	char *token;			/* read from [http] api_token_file */
	char *next_token;		/* a reload's, checked, not used yet */
};

typedef void ctl_cmd_fn(struct sluiced_ctl *ctl, struct control_req *req,
    json_t *args);

/* ---- small helpers ---- */

static json_t *
ctl_mid_json(uint64_t mid)
{
	char buf[17];

	return json_string(spool_mid_fmt(mid, buf));
}

/* A string that may not be UTF-8: bytes that are not become '?'. */
static json_t *
ctl_text_json(const char *s, size_t n)
{
	char *copy;
	json_t *j;

	if (sl_utf8_valid(s, n))
		return json_stringn(s, n);
	copy = xstrndup(s, n);
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)copy[i] >= 0x80 || copy[i] == '\0')
			copy[i] = '?';
	j = json_stringn(copy, n);
	free(copy);
	return j;
}

static json_t *
ctl_opt_string(const char *s)
{
	return s != NULL ? ctl_text_json(s, strlen(s)) : json_null();
}

static int
ctl_rcpt_final(const struct sched_rcpt_view *r)
{
	return strcmp(r->state, "delivered") == 0 ||
	    strcmp(r->state, "failed") == 0;
}

/* 1 if the recipient is at domain d: its address's domain or its queue. */
static int
ctl_rcpt_at(const struct sched_rcpt_view *r, const char *d)
{
	const char *at = strrchr(r->addr, '@');

	if (at != NULL && sl_strcaseeq(at + 1, d))
		return 1;
	return r->destination != NULL && sl_strcaseeq(r->destination, d);
}

static json_t *
ctl_msg_json(const struct sched_msg_view *m)
{
	json_t *o = json_object(), *rs = json_array();

	json_object_set_new(o, "mid", ctl_mid_json(m->mid));
	json_object_set_new(o, "size", json_integer((json_int_t)m->size));
	json_object_set_new(o, "arrival", json_integer(m->arrival));
	json_object_set_new(o, "sender", ctl_opt_string(m->sender));
	json_object_set_new(o, "bounce", json_boolean(m->bounce));
	for (size_t i = 0; i < m->nrcpt; i++) {
		const struct sched_rcpt_view *r = &m->rcpts[i];

		json_array_append_new(rs, json_pack("{s:I,s:o,s:s,s:I,s:I,s:o,"
		    "s:o,s:o}", "rid", (json_int_t)r->rid, "address",
		    ctl_opt_string(r->addr), "state", r->state, "attempts",
		    (json_int_t)r->attempts, "next_retry",
		    (json_int_t)r->next_retry, "last_reply",
		    ctl_opt_string(r->last_reply), "destination",
		    ctl_opt_string(r->destination), "waiting",
		    ctl_opt_string(r->waiting)));
	}
	json_object_set_new(o, "recipients", rs);
	return o;
}

/* ---- selections: MIDs, a domain or all ---- */

struct ctl_sel {
	uint64_t *mids;
	size_t nmids;
	json_t *unknown;	/* MIDs that do not parse or are not queued */
	size_t nasked;		/* MIDs given */
	const char *domain;
	int all;
};

/* Read {mids:[...]} | {domain:"d"} | {all:true}; exactly one. */
static int
ctl_sel_parse(json_t *args, struct ctl_sel *sel, char *err, size_t errlen)
{
	json_t *mids = json_object_get(args, "mids");
	json_t *dom = json_object_get(args, "domain");
	json_t *all = json_object_get(args, "all");
	size_t i, given = (mids != NULL) + (dom != NULL) + json_is_true(all);
	json_t *v;

	memset(sel, 0, sizeof(*sel));
	sel->unknown = json_array();
	if (given != 1) {
		snprintf(err, errlen, "give MIDs, a domain or all");
		return -1;
	}
	if (dom != NULL) {
		if (!json_is_string(dom) || json_string_length(dom) == 0) {
			snprintf(err, errlen, "\"domain\" must be a name");
			return -1;
		}
		sel->domain = json_string_value(dom);
		return 0;
	}
	if (all != NULL) {
		sel->all = 1;
		return 0;
	}
	if (!json_is_array(mids) || json_array_size(mids) == 0) {
		snprintf(err, errlen, "\"mids\" must be a list of MIDs");
		return -1;
	}
	sel->nasked = json_array_size(mids);
	sel->mids = xcalloc(sel->nasked, sizeof(*sel->mids));
	json_array_foreach(mids, i, v) {
		uint64_t mid = json_is_string(v) ?
		    spool_mid_parse(json_string_value(v)) : 0;

		if (mid == 0)
			json_array_append(sel->unknown, v);
		else
			sel->mids[sel->nmids++] = mid;
	}
	return 0;
}

static void
ctl_sel_free(struct ctl_sel *sel)
{
	free(sel->mids);
	json_decref(sel->unknown);
}

/* Answer an action: {"changed": n}, or an error naming the unknown MIDs. */
static void
ctl_sel_answer(struct control_req *req, struct ctl_sel *sel, const char *key,
    long n)
{
	size_t i, nu = json_array_size(sel->unknown);
	json_t *v;
	char list[512] = "";

	if (nu == 0) {
		control_reply(req, json_pack("{s:I}", key, (json_int_t)n));
		return;
	}
	json_array_foreach(sel->unknown, i, v) {
		size_t l = strlen(list);

		snprintf(list + l, sizeof(list) - l, "%s%s", i ? ", " : "",
		    json_is_string(v) ? json_string_value(v) : "?");
	}
	control_reply_err(req, json_incref(sel->unknown), "%zu of %zu MIDs "
	    "not in the queue: %s (%s: %ld)", nu, sel->nasked, list, key, n);
}

typedef long ctl_action_fn(struct sched *s, const struct sched_sel *sel);

static void
ctl_action(struct sluiced_ctl *ctl, struct control_req *req, json_t *args,
    ctl_action_fn *fn)
{
	struct ctl_sel sel;
	struct sched_sel ss = { 0 };
	char err[256], buf[17];
	long total = 0, n;

	if (ctl_sel_parse(args, &sel, err, sizeof(err)) != 0) {
		control_reply_err(req, NULL, "%s", err);
		ctl_sel_free(&sel);
		return;
	}
	if (sel.domain != NULL || sel.all) {
		ss.domain = sel.domain;
		ss.all = sel.all;
		total = fn(ctl->d->sched, &ss);
	}
	for (size_t i = 0; i < sel.nmids; i++) {
		ss.mid = sel.mids[i];
		if ((n = fn(ctl->d->sched, &ss)) < 0)
			json_array_append_new(sel.unknown, json_string(
			    spool_mid_fmt(sel.mids[i], buf)));
		else
			total += n;
	}
	ctl_sel_answer(req, &sel, "changed", total < 0 ? 0 : total);
	ctl_sel_free(&sel);
}

static void
ctl_flush(struct sluiced_ctl *ctl, struct control_req *req, json_t *args)
{
	ctl_action(ctl, req, args, sched_flush);
}

static void
ctl_hold(struct sluiced_ctl *ctl, struct control_req *req, json_t *args)
{
	ctl_action(ctl, req, args, sched_hold);
}

static void
ctl_release(struct sluiced_ctl *ctl, struct control_req *req, json_t *args)
{
	ctl_action(ctl, req, args, sched_release);
}

static void
ctl_bounce(struct sluiced_ctl *ctl, struct control_req *req, json_t *args)
{
	ctl_action(ctl, req, args, sched_bounce);
}

/* ---- delete: asynchronous, one spool answer per message ---- */

struct ctl_delete {
	struct control_req *req;
	struct ctl_sel sel;
	size_t pending;
	long deleted;
	int failed;
};

static void
ctl_delete_answer(struct ctl_delete *cd)
{
	if (cd->failed)
		control_reply_err(cd->req, NULL, "the spool failed to delete "
		    "%d message(s) (%ld deleted); see the log", cd->failed,
		    cd->deleted);
	else
		ctl_sel_answer(cd->req, &cd->sel, "deleted", cd->deleted);
	ctl_sel_free(&cd->sel);
	free(cd);
}

struct ctl_delete_one {
	struct ctl_delete *cd;
	uint64_t mid;
};

static void
ctl_deleted(void *arg, int status)
{
	struct ctl_delete_one *one = arg;
	struct ctl_delete *cd = one->cd;
	char buf[17];

	if (status == SPOOL_OK)
		cd->deleted++;
	else if (status == SPOOL_ERR_NOTFOUND && cd->sel.nmids > 0)
		json_array_append_new(cd->sel.unknown,
		    json_string(spool_mid_fmt(one->mid, buf)));
	else if (status != SPOOL_ERR_NOTFOUND)
		cd->failed++;
	free(one);
	if (--cd->pending == 0)
		ctl_delete_answer(cd);
}

struct ctl_collect {
	const char *domain;
	uint64_t *mids;
	size_t n, cap;
};

/* Messages with a pending recipient at the domain (or every message). */
static int
ctl_collect_msg(void *arg, const struct sched_msg_view *m)
{
	struct ctl_collect *c = arg;
	int hit = c->domain == NULL;

	for (size_t i = 0; i < m->nrcpt && !hit; i++)
		hit = !ctl_rcpt_final(&m->rcpts[i]) &&
		    ctl_rcpt_at(&m->rcpts[i], c->domain);
	if (!hit)
		return 0;
	if (c->n == c->cap) {
		c->cap = c->cap ? c->cap * 2 : 64;
		c->mids = xrealloc(c->mids, c->cap * sizeof(*c->mids));
	}
	c->mids[c->n++] = m->mid;
	return 0;
}

static void
ctl_delete(struct sluiced_ctl *ctl, struct control_req *req, json_t *args)
{
	struct ctl_delete *cd = xcalloc(1, sizeof(*cd));
	char err[256];

	cd->req = req;
	if (ctl_sel_parse(args, &cd->sel, err, sizeof(err)) != 0) {
		control_reply_err(req, NULL, "%s", err);
		ctl_sel_free(&cd->sel);
		free(cd);
		return;
	}
	if (cd->sel.nmids == 0) {
		struct ctl_collect c = { .domain = cd->sel.domain };

		sched_foreach(ctl->d->sched, ctl_collect_msg, &c);
		free(cd->sel.mids);
		cd->sel.mids = c.mids;
		cd->sel.nmids = c.n;
		/* a domain or all: nothing to name as unknown */
		cd->sel.domain = NULL;
	}
	/* one extra count, so no answer goes out before every call is made */
	cd->pending = cd->sel.nmids + 1;
	for (size_t i = 0; i < cd->sel.nmids; i++) {
		struct ctl_delete_one *one = xmalloc(sizeof(*one));

		one->cd = cd;
		one->mid = cd->sel.mids[i];
		sched_delete(ctl->d->sched, one->mid, ctl_deleted, one);
	}
	if (--cd->pending == 0)
		ctl_delete_answer(cd);
}

/* ---- list, show, summary ---- */

struct ctl_list {
	json_t *out;
	const char *domain;
	const char *state;
};

static int
ctl_list_msg(void *arg, const struct sched_msg_view *m)
{
	struct ctl_list *l = arg;
	int dom_ok = l->domain == NULL, state_ok = l->state == NULL;

	for (size_t i = 0; i < m->nrcpt; i++) {
		const struct sched_rcpt_view *r = &m->rcpts[i];

		if (!dom_ok && ctl_rcpt_at(r, l->domain))
			dom_ok = 1;
		if (!state_ok && strcmp(r->state, l->state) == 0)
			state_ok = 1;
	}
	if (dom_ok && state_ok)
		json_array_append_new(l->out, ctl_msg_json(m));
	return 0;
}

static const char *
ctl_opt_arg(json_t *args, const char *key, int *bad)
{
	json_t *v = json_object_get(args, key);

	if (v == NULL || json_is_null(v))
		return NULL;
	if (!json_is_string(v)) {
		*bad = 1;
		return NULL;
	}
	return json_string_value(v);
}

static void
ctl_list(struct sluiced_ctl *ctl, struct control_req *req, json_t *args)
{
	static const char *const states[] = { "queued", "deferred", "held",
		"active" };
	struct ctl_list l = { 0 };
	int bad = 0, known = 0;

	l.domain = ctl_opt_arg(args, "domain", &bad);
	l.state = ctl_opt_arg(args, "state", &bad);
	for (size_t i = 0; l.state != NULL && i < SL_ARRAY_LEN(states); i++)
		known |= strcmp(l.state, states[i]) == 0;
	if (bad || (l.state != NULL && !known)) {
		control_reply_err(req, NULL, "state must be queued, deferred, "
		    "held or active");
		return;
	}
	l.out = json_array();
	sched_foreach(ctl->d->sched, ctl_list_msg, &l);
	control_reply(req, l.out);
}

static int
ctl_show_msg(void *arg, const struct sched_msg_view *m)
{
	*(json_t **)arg = ctl_msg_json(m);
	return 1;
}

static void
ctl_show(struct sluiced_ctl *ctl, struct control_req *req, json_t *args)
{
	json_t *mid = json_object_get(args, "mid"), *o = NULL;
	uint64_t id = json_is_string(mid) ?
	    spool_mid_parse(json_string_value(mid)) : 0;
	struct evbuffer *body;

	if (id == 0 || sched_view(ctl->d->sched, id, ctl_show_msg, &o) != 0) {
		control_reply_err(req, json_pack("[O]", mid ? mid : json_null()),
		    "MID %s is not in the queue",
		    json_is_string(mid) ? json_string_value(mid) : "?");
		return;
	}
	if (json_is_true(json_object_get(args, "body"))) {
		body = spool_body_load(ctl->d->spool, id);
		if (body == NULL) {
			json_decref(o);
			control_reply_err(req, NULL, "MID %s: cannot read the "
			    "body: %s", json_string_value(mid),
			    spool_last_error(ctl->d->spool));
			return;
		}
		json_object_set_new(o, "body", ctl_text_json(
		    (const char *)evbuffer_pullup(body, -1),
		    evbuffer_get_length(body)));
		evbuffer_free(body);
	}
	control_reply(req, o);
}

struct ctl_summary {
	json_t *dests;		/* name -> {messages, recipients, ages[]} */
	int64_t now;
	uint64_t messages, recipients;
	int64_t oldest;
};

static size_t
ctl_age_bucket(int64_t age_s)
{
	size_t i = 0;

	while (i < SL_ARRAY_LEN(ctl_age_minutes) &&
	    age_s >= (int64_t)ctl_age_minutes[i] * 60)
		i++;
	return i;
}

static json_t *
ctl_summary_dest(struct ctl_summary *s, const char *name)
{
	json_t *d = json_object_get(s->dests, name), *ages;

	if (d != NULL)
		return d;
	ages = json_array();
	for (size_t i = 0; i < CTL_AGE_BUCKETS; i++)
		json_array_append_new(ages, json_integer(0));
	d = json_pack("{s:s,s:i,s:i,s:o,s:I}", "destination", name,
	    "messages", 0, "recipients", 0, "ages", ages, "oldest",
	    (json_int_t)0);
	json_object_set_new(s->dests, name, d);
	return d;
}

static void
ctl_json_inc(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	json_integer_set(v, json_integer_value(v) + 1);
}

/* Per destination: messages (once per message), recipients, ages. */
static int
ctl_summary_msg(void *arg, const struct sched_msg_view *m)
{
	struct ctl_summary *s = arg;
	size_t b = ctl_age_bucket(s->now - m->arrival);
	json_t *seen = json_object(), *d, *ages, *old;
	int pending = 0;

	for (size_t i = 0; i < m->nrcpt; i++) {
		const struct sched_rcpt_view *r = &m->rcpts[i];
		const char *at = strrchr(r->addr, '@');
		const char *name = r->destination ? r->destination :
		    at ? at + 1 : r->addr;

		if (ctl_rcpt_final(r))
			continue;
		pending = 1;
		s->recipients++;
		d = ctl_summary_dest(s, name);
		ctl_json_inc(d, "recipients");
		if (json_object_get(seen, name) != NULL)
			continue;
		json_object_set_new(seen, name, json_true());
		ctl_json_inc(d, "messages");
		ages = json_object_get(d, "ages");
		json_integer_set(json_array_get(ages, b),
		    json_integer_value(json_array_get(ages, b)) + 1);
		old = json_object_get(d, "oldest");
		if (json_integer_value(old) == 0 ||
		    m->arrival < json_integer_value(old))
			json_integer_set(old, m->arrival);
	}
	json_decref(seen);
	if (pending) {
		s->messages++;
		if (s->oldest == 0 || m->arrival < s->oldest)
			s->oldest = m->arrival;
	}
	return 0;
}

static int
ctl_dest_cmp(const void *a, const void *b)
{
	json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
	json_int_t nx = json_integer_value(json_object_get(x, "messages"));
	json_int_t ny = json_integer_value(json_object_get(y, "messages"));

	if (nx != ny)
		return nx > ny ? -1 : 1;
	return strcmp(json_string_value(json_object_get(x, "destination")),
	    json_string_value(json_object_get(y, "destination")));
}

/* The scheduler's own view of each destination: connections, waiting. */
static int
ctl_summary_sched_dest(void *arg, const struct sched_dest_view *v)
{
	struct ctl_summary *s = arg;
	json_t *d = json_object_get(s->dests, v->name);

	if (d == NULL)
		return 0;
	json_object_set_new(d, "connections", json_integer(v->connections));
	json_object_set_new(d, "limit", json_integer(v->limit));
	json_object_set_new(d, "waiting", ctl_opt_string(v->waiting));
	return 0;
}

static void
ctl_summary(struct sluiced_ctl *ctl, struct control_req *req, json_t *args)
{
	struct ctl_summary s = { .dests = json_object(),
		.now = sl_now_us() / 1000000 };
	json_t *arr = json_array(), *mins = json_array(), *v;
	json_t **sorted;
	const char *k;
	size_t n = 0;

	sched_foreach(ctl->d->sched, ctl_summary_msg, &s);
	sched_foreach_dest(ctl->d->sched, ctl_summary_sched_dest, &s);
	sorted = xcalloc(json_object_size(s.dests) + 1, sizeof(*sorted));
	json_object_foreach(s.dests, k, v)
		sorted[n++] = v;
	qsort(sorted, n, sizeof(*sorted), ctl_dest_cmp);
	for (size_t i = 0; i < n; i++)
		json_array_append(arr, sorted[i]);
	free(sorted);
	for (size_t i = 0; i < SL_ARRAY_LEN(ctl_age_minutes); i++)
		json_array_append_new(mins, json_integer(ctl_age_minutes[i]));
	control_reply(req, json_pack("{s:o,s:o,s:I,s:I,s:I,s:I}",
	    "destinations", arr, "age_minutes", mins, "messages",
	    (json_int_t)s.messages, "recipients", (json_int_t)s.recipients,
	    "oldest", (json_int_t)s.oldest, "now", (json_int_t)s.now));
	json_decref(s.dests);
}

/* ---- status ---- */

static void
ctl_sample(evutil_socket_t fd, short what, void *arg)
{
	struct sluiced_ctl *ctl = arg;
	struct smtpd_stats in;
	struct sched_stats out;
	struct ctl_sample *s = &ctl->samples[ctl->next];

	smtpd_server_stats(ctl->d->smtpd, &in);
	sched_stats_get(ctl->d->sched, &out);
	s->at_ms = sl_mono_ms();
	s->received = in.messages;
	s->delivered = out.delivered;
	ctl->next = (ctl->next + 1) % CTL_SAMPLES;
	if (ctl->nsamples < CTL_SAMPLES)
		ctl->nsamples++;
}

/* Per second over about the last `secs` seconds (from the samples). */
static json_t *
ctl_rates(struct sluiced_ctl *ctl, int secs, uint64_t received,
    uint64_t delivered)
{
	int64_t now = sl_mono_ms();
	const struct ctl_sample *best = NULL;
	double dt;

	for (size_t i = 0; i < ctl->nsamples; i++) {
		const struct ctl_sample *s = &ctl->samples[i];

		if (now - s->at_ms <= (int64_t)secs * 1000 + 500 &&
		    (best == NULL || s->at_ms < best->at_ms))
			best = s;
	}
	if (best == NULL || (dt = (double)(now - best->at_ms) / 1000) < 1)
		return json_pack("{s:f,s:f}", "received", 0.0, "delivered",
		    0.0);
	return json_pack("{s:f,s:f}", "received",
	    (double)(received - best->received) / dt, "delivered",
	    (double)(delivered - best->delivered) / dt);
}

static int64_t
ctl_file_size(const char *dir, const char *name)
{
	char *path = xasprintf("%s/%s", dir, name);
	struct stat st;
	int r = stat(path, &st);

	free(path);
	return r == 0 ? (int64_t)st.st_size : 0;
}

static void
ctl_status(struct sluiced_ctl *ctl, struct control_req *req, json_t *args)
{
	struct sluiced *d = ctl->d;
	struct smtpd_stats in;
	struct sched_stats out;
	struct spool_stats sp;
	int64_t now = sl_now_us() / 1000000;
	int64_t db = ctl_file_size(d->conf->spool_dir, "spool.db");
	int64_t wal = ctl_file_size(d->conf->spool_dir, "spool.db-wal");

	smtpd_server_stats(d->smtpd, &in);
	sched_stats_get(d->sched, &out);
	spool_stats_get(d->spool, &sp);
	control_reply(req, json_pack(
	    "{s:s,s:i,s:I,s:I,s:b,s:I,"
	    "s:{s:I,s:I,s:I,s:I},"
	    "s:{s:I,s:I,s:I,s:I,s:I,s:I,s:I},"
	    "s:{s:o,s:o,s:f},"
	    "s:{s:I,s:I,s:I},"
	    "s:{s:s,s:I,s:I,s:I,s:I,s:I}}",
	    "version", SLUICE_VERSION, "pid", (int)getpid(),
	    "started", (json_int_t)d->started,
	    "uptime", (json_int_t)(now - d->started),
	    "stopping", d->stopping != 0, "reloads", (json_int_t)d->reloads,
	    "connections",
	    "in", (json_int_t)in.sessions, "in_total",
	    (json_int_t)in.connections, "in_refused", (json_int_t)in.refused,
	    "out", (json_int_t)out.connections,
	    "messages",
	    "received", (json_int_t)in.messages, "recipients_received",
	    (json_int_t)in.recipients, "delivered", (json_int_t)out.delivered,
	    "deferred", (json_int_t)out.deferred, "bounced",
	    (json_int_t)out.failed, "expired", (json_int_t)out.expired,
	    "dsn_sent", (json_int_t)out.dsn_sent,
	    "rates",
	    "last_1m", ctl_rates(ctl, 60, in.messages, out.delivered),
	    "last_5m", ctl_rates(ctl, 300, in.messages, out.delivered),
	    "received_avg", now > d->started ?
	    (double)in.messages / (double)(now - d->started) : 0.0,
	    "queue",
	    "messages", (json_int_t)out.messages, "recipients",
	    (json_int_t)out.recipients, "destinations",
	    (json_int_t)out.destinations,
	    "spool",
	    "dir", d->conf->spool_dir, "bytes", (json_int_t)(db + wal),
	    "db_bytes", (json_int_t)db, "wal_bytes", (json_int_t)wal,
	    "commits", (json_int_t)sp.commits, "failures",
	    (json_int_t)sp.failures));
}

/* ---- reload, stop ---- */

static void
ctl_reload(struct sluiced_ctl *ctl, struct control_req *req, json_t *args)
{
	char err[1024];

	log_info("control: reload asked (uid %u)",
	    (unsigned)control_req_uid(req));
	if (sluiced_reload(ctl->d, err, sizeof(err)) != 0) {
		control_reply_err(req, NULL, "%s", err);
		return;
	}
	control_reply(req, json_pack("{s:s}", "file", ctl->d->conf_path ?
	    ctl->d->conf_path : "(built-in defaults)"));
}

static void
ctl_stop_now(void *arg)
{
	sluiced_stop(arg, "sluice stop");
}

static void
ctl_stop(struct sluiced_ctl *ctl, struct control_req *req, json_t *args)
{
	log_info("control: stop asked (uid %u)",
	    (unsigned)control_req_uid(req));
	control_reply_then(req, json_pack("{s:i}", "pid", (int)getpid()),
	    ctl_stop_now, ctl->d);
}

/* ---- dispatch ---- */

static const struct {
	const char *name;
	ctl_cmd_fn *fn;
} ctl_cmds[] = {
	{ "status", ctl_status },
	{ "queue.list", ctl_list },
	{ "queue.summary", ctl_summary },
	{ "queue.show", ctl_show },
	{ "queue.flush", ctl_flush },
	{ "queue.delete", ctl_delete },
	{ "queue.hold", ctl_hold },
	{ "queue.release", ctl_release },
	{ "queue.bounce", ctl_bounce },
	{ "reload", ctl_reload },
	{ "stop", ctl_stop },
};

void
sluiced_ctl_cmd(void *arg, struct control_req *req, const char *cmd,
    json_t *args)
{
	struct sluiced_ctl *ctl = arg;

	for (size_t i = 0; i < SL_ARRAY_LEN(ctl_cmds); i++)
		if (strcmp(cmd, ctl_cmds[i].name) == 0) {
			ctl_cmds[i].fn(ctl, req, args);
			return;
		}
	control_reply_err(req, NULL, "unknown command '%s'", cmd);
}

struct sluiced_ctl *
sluiced_ctl_new(struct sluiced *d)
{
	struct sluiced_ctl *ctl = xcalloc(1, sizeof(*ctl));
	struct timeval tv = { CTL_SAMPLE_S, 0 };

	ctl->d = d;
	ctl->sample_ev = event_new(d->base, -1, EV_PERSIST, ctl_sample, ctl);
	evtimer_add(ctl->sample_ev, &tv);
	ctl_sample(-1, 0, ctl);
	return ctl;
}

void
sluiced_ctl_free(struct sluiced_ctl *ctl)
{
	if (ctl == NULL)
		return;
	event_free(ctl->sample_ev);
	free(ctl->token);
	free(ctl->next_token);
	free(ctl);
}

/* ---- the HTTP listener ---- */

/* Why /healthz says 503, or NULL. */
static const char *
ctl_unhealthy(void *arg)
{
	struct sluiced_ctl *ctl = arg;

	if (ctl->d->stopping)
		return "stopping";
	return NULL;
}

/* The token of conf's [http] api_token_file into *token (NULL: none). */
static int
ctl_token_read(const struct sl_conf *conf, char **token, char *err,
    size_t errlen)
{
	char msg[400];

	*token = NULL;
	if (conf->http_api_token_file[0] == '\0')
		return 0;
	if ((*token = http_token_load(conf->http_api_token_file, msg,
	    sizeof(msg))) == NULL) {
		snprintf(err, errlen, "[http] api_token_file %s", msg);
		return -1;
	}
	return 0;
}

int
sluiced_http_start(struct sluiced_ctl *ctl)
{
	struct sluiced *d = ctl->d;
	char err[512];

	if (ctl_token_read(d->conf, &ctl->token, err, sizeof(err)) != 0) {
		log_warnx("%s", err);
		return -1;
	}
	if (d->conf->http_listen[0] == '\0')
		return 0;
	d->http = http_server_new(d->base, d->conf->http_listen,
	    (int)d->conf->http_max_connections, err, sizeof(err));
	if (d->http == NULL) {
		log_warnx("[http] listen %s: %s; running without metrics and "
		    "the HTTP API", d->conf->http_listen, err);
		return 0;
	}
	ctl->msrc = (struct metrics_src){ d->smtpd, d->sched, d->spool,
		ctl_unhealthy, ctl };
	metrics_add_routes(d->http, &ctl->msrc);
	http_server_set_token(d->http, ctl->token);
	return 0;
}

void
sluiced_http_stop(struct sluiced_ctl *ctl)
{
	http_server_free(ctl->d->http);
	ctl->d->http = NULL;
}

int
sluiced_http_reload_check(struct sluiced_ctl *ctl, const struct sl_conf *conf,
    char *err, size_t errlen)
{
	free(ctl->next_token);
	return ctl_token_read(conf, &ctl->next_token, err, errlen);
}

void
sluiced_http_reload(struct sluiced_ctl *ctl, const struct sl_conf *conf)
{
	free(ctl->token);
	ctl->token = ctl->next_token;
	ctl->next_token = NULL;
	if (ctl->d->http == NULL)
		return;
	http_server_set_token(ctl->d->http, ctl->token);
	http_server_set_max_connections(ctl->d->http,
	    (int)conf->http_max_connections);
}
