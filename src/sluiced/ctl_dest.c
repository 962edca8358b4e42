/* SPDX-License-Identifier: MIT */
/*
 * ctl_dest.c: the commands behind the queue dashboard (docs/CONTROL.md),
 * answered for the control socket and the HTTP API alike:
 *
 *   dashboard            totals, per-minute rates of the last hour
 *                        (http/rates.c, sampled by ctl.c), the queue, the
 *                        connections: O(1)
 *   queue.destinations   one page of the destinations, filtered by name
 *                        and state and sorted by the daemon: one walk of
 *                        the destinations (not of the messages) and a sort
 *                        of those that match
 *   queue.destination    one destination, with its recent replies: O(1)
 *
 * A page never holds more than QUEUE_DESTS_MAX destinations, so an answer
 * is small whatever the queue; the messages of a destination are listed by
 * queue.list with "domain" (ctl_queue.c), a page at a time.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/conf.h"
#include "control/control.h"
#include "http/rates.h"
#include "sched/sched.h"
#include "sluiced/ctl_int.h"
#include "sluiced/sluiced.h"
#include "smtpd/smtpd.h"
#include "spool/spool.h"
#include "util/util.h"

#define QUEUE_DESTS_MAX 500

void
ctl_dashboard(struct sluiced_ctl *ctl, struct control_req *req, json_t *args)
{
	struct sluiced *d = ctl->d;
	struct smtpd_stats in;
	struct sched_stats out;
	int64_t now = sl_now_us() / 1000000;

	smtpd_server_stats(d->smtpd, &in);
	sched_stats_get(d->sched, &out);
	control_reply(req, json_pack(
	    "{s:s,s:s,s:I,s:I,s:b,s:b,"
	    "s:{s:I,s:I,s:I},s:{s:I,s:I},s:{s:I,s:I,s:I,s:I},s:o}",
	    "hostname", d->conf->server_hostname, "version", SLUICE_VERSION,
	    "now", (json_int_t)now, "uptime", (json_int_t)(now - d->started),
	    "stopping", d->stopping != 0, "draining", ctl->draining != 0,
	    "queue", "messages", (json_int_t)out.messages,
	    "recipients", (json_int_t)out.recipients,
	    "destinations", (json_int_t)out.destinations,
	    "connections", "in", (json_int_t)in.sessions,
	    "out", (json_int_t)out.connections,
	    "totals", "received", (json_int_t)in.messages,
	    "delivered", (json_int_t)out.delivered,
	    "deferred", (json_int_t)out.deferred,
	    "bounced", (json_int_t)out.failed,
	    "rates", rates_json(&ctl->rates, now)));
}

/* The counters the rates are made of, in enum rates_kind order. */
void
ctl_rates_sample(struct sluiced_ctl *ctl)
{
	struct smtpd_stats in;
	struct sched_stats out;
	uint64_t c[RATES_NKINDS];

	smtpd_server_stats(ctl->d->smtpd, &in);
	sched_stats_get(ctl->d->sched, &out);
	c[RATES_RECEIVED] = in.messages;
	c[RATES_DELIVERED] = out.delivered;
	c[RATES_DEFERRED] = out.deferred;
	c[RATES_BOUNCED] = out.failed;
	rates_sample(&ctl->rates, sl_now_us() / 1000000, c);
}

/* ---- destinations ---- */

/* What a destination is doing, in one word (the dashboard's column). */
static const char *
ctl_dest_state(const struct sched_dest_view *v, int64_t now)
{
	if (v->paused_until > now)
		return "suspended";
	if (v->throttled)
		return "throttled";
	if (v->connections > 0)
		return "active";
	if (v->waiting != NULL && v->ready > 0)
		return "waiting";
	return "idle";
}

static json_t *
ctl_dest_json(const struct sched_dest_view *v, int64_t now)
{
	return json_pack("{s:s,s:I,s:I,s:i,s:i,s:s,s:s?,s:I,s:o,s:s?,s:o,"
	    "s:s?}",
	    "name", v->name, "queued", (json_int_t)v->jobs,
	    "ready", (json_int_t)v->ready, "connections", v->connections,
	    "limit", v->limit, "state", ctl_dest_state(v, now),
	    "waiting", v->waiting,
	    "oldest", (json_int_t)v->oldest,
	    "paused_until", v->paused_until > now ?
	    json_integer((json_int_t)v->paused_until) : json_null(),
	    "last_reply", v->last_reply,
	    "last_reply_at", v->last_reply_at ?
	    json_integer((json_int_t)v->last_reply_at) : json_null(),
	    "site", v->site);
}

/* A walk's matches: copies of the views (their strings stay valid until
 * the loop runs again, and the answer is made before that). */
struct ctl_dests {
	struct sched_dest_view *v;
	size_t n, cap, total;
	const char *q;		/* substring of the name, any case; or NULL */
	const char *state;	/* or NULL */
	int64_t now;
};

/* 1 if needle is in hay, ASCII letters in any case. */
static int
ctl_contains(const char *hay, const char *needle)
{
	size_t n = strlen(needle);

	for (; *hay != '\0'; hay++)
		if (sl_strncaseeq(hay, needle, n))
			return 1;
	return n == 0;
}

static int
ctl_dests_add(void *arg, const struct sched_dest_view *v)
{
	struct ctl_dests *w = arg;

	w->total++;
	if (w->q != NULL && !ctl_contains(v->name, w->q))
		return 0;
	if (w->state != NULL && strcmp(ctl_dest_state(v, w->now),
	    w->state) != 0)
		return 0;
	if (w->n == w->cap) {
		w->cap = w->cap ? 2 * w->cap : 256;
		w->v = xrealloc(w->v, w->cap * sizeof(*w->v));
	}
	w->v[w->n++] = *v;
	return 0;
}

/* The sort a page asks for: by key (an index of keys[] below),
 * descending unless asc, then by name so that equal rows keep their
 * places from one page to the next. */
struct ctl_sort {
	int key, asc;
	int64_t now;
};

static int64_t
ctl_dest_keyval(const struct ctl_sort *o, const struct sched_dest_view *v)
{
	switch (o->key) {
	case 1: return (int64_t)v->jobs;
	case 2: return v->oldest ? o->now - v->oldest : -1;	/* the age */
	case 3: return v->connections;
	default: return 0;
	}
}

static int
ctl_dest_cmp(const void *a, const void *b, void *arg)
{
	const struct sched_dest_view *x = a, *y = b;
	const struct ctl_sort *o = arg;
	int c = 0;

	if (o->key == 4) {
		c = strcmp(ctl_dest_state(x, o->now), ctl_dest_state(y, o->now));
	} else if (o->key != 0) {
		int64_t kx = ctl_dest_keyval(o, x), ky = ctl_dest_keyval(o, y);
		c = kx < ky ? -1 : kx > ky;
	}
	if (c != 0)
		return o->asc ? c : -c;
	c = strcmp(x->name, y->name);
	return o->key == 0 && !o->asc ? -c : c;
}

/* A whole number argument in [lo, hi], or dflt when absent; -1 if bad. */
static int64_t
ctl_int_arg(json_t *args, const char *key, int64_t dflt, int64_t lo,
    int64_t hi)
{
	json_t *v = json_object_get(args, key);
	int64_t n;

	if (v == NULL || json_is_null(v))
		return dflt;
	if (json_is_string(v)) {
		char *end;
		const char *s = json_string_value(v);
		n = strtoll(s, &end, 10);
		if (*s == '\0' || *end != '\0')
			return -1;
	} else if (json_is_integer(v)) {
		n = json_integer_value(v);
	} else {
		return -1;
	}
	return n < lo || n > hi ? -1 : n;
}

static const char *
ctl_str_arg(json_t *args, const char *key)
{
	json_t *v = json_object_get(args, key);

	return json_is_string(v) && json_string_length(v) > 0 ?
	    json_string_value(v) : NULL;
}

void
ctl_destinations(struct sluiced_ctl *ctl, struct control_req *req,
    json_t *args)
{
	static const char *const keys[] = { "name", "queued", "oldest",
		"connections", "state" };
	static const char *const states[] = { "active", "idle", "waiting",
		"throttled", "suspended" };
	struct ctl_dests w = { 0 };
	struct ctl_sort srt;
	const char *sort = ctl_str_arg(args, "sort");
	const char *order = ctl_str_arg(args, "order");
	int64_t limit = ctl_int_arg(args, "limit", 50, 1, QUEUE_DESTS_MAX);
	int64_t offset = ctl_int_arg(args, "offset", 0, 0, INT64_MAX / 2);
	json_t *page;
	size_t i;
	int key = 1;

	w.now = sl_now_us() / 1000000;
	w.q = ctl_str_arg(args, "q");
	w.state = ctl_str_arg(args, "state");
	for (i = 0; sort != NULL && i < SL_ARRAY_LEN(keys); i++)
		if (strcmp(sort, keys[i]) == 0)
			break;
	key = sort == NULL ? 1 : (int)i;
	for (i = 0; w.state != NULL && i < SL_ARRAY_LEN(states); i++)
		if (strcmp(w.state, states[i]) == 0)
			break;
	if (key == (int)SL_ARRAY_LEN(keys) || limit < 0 || offset < 0 ||
	    (order != NULL && strcmp(order, "asc") != 0 &&
	    strcmp(order, "desc") != 0) ||
	    (w.state != NULL && i == SL_ARRAY_LEN(states))) {
		control_reply_err(req, CONTROL_ERR_BADARG, NULL, "sort is name, "
		    "queued, oldest, connections or state; order asc or desc; "
		    "state active, idle, waiting, throttled or suspended; "
		    "limit 1 to %d; offset 0 or more", QUEUE_DESTS_MAX);
		return;
	}
	sched_foreach_dest(ctl->d->sched, ctl_dests_add, &w);
	srt.key = key;
	srt.asc = order != NULL ? strcmp(order, "asc") == 0 :
	    key == 0 || key == 4;
	srt.now = w.now;
	if (w.n > 1)
		qsort_r(w.v, w.n, sizeof(*w.v), ctl_dest_cmp, &srt);
	page = json_array();
	for (i = (size_t)offset; i < w.n && i < (size_t)(offset + limit); i++)
		json_array_append_new(page, ctl_dest_json(&w.v[i], w.now));
	control_reply(req, json_pack("{s:I,s:I,s:I,s:o}", "count",
	    (json_int_t)w.n, "total", (json_int_t)w.total, "now",
	    (json_int_t)w.now, "destinations", page));
	free(w.v);
}

/* A page of a destination's messages. */
struct ctl_page {
	json_t *msgs;
	size_t limit;
	uint64_t last;
	int more;		/* one more than the page was there */
};

static int
ctl_page_msg(void *arg, const struct sched_msg_view *m)
{
	struct ctl_page *p = arg;

	if (json_array_size(p->msgs) == p->limit) {
		p->more = 1;
		return 1;
	}
	json_array_append_new(p->msgs, ctl_msg_json(m));
	p->last = m->mid;
	return 0;
}

void
ctl_destination(struct sluiced_ctl *ctl, struct control_req *req,
    json_t *args)
{
	const char *name = ctl_str_arg(args, "name");
	const char *after = ctl_str_arg(args, "after");
	int64_t limit = ctl_int_arg(args, "messages", 0, 0, 1000);
	struct sched_dest_view v;
	struct sched_reply_view replies[SCHED_DEST_REPLIES];
	struct ctl_page page = { 0 };
	int64_t now = sl_now_us() / 1000000;
	uint64_t from = after ? spool_mid_parse(after) : 0;
	json_t *o, *rs, *res;
	size_t n;
	char mid[17];

	if (limit < 0 || (after != NULL && from == 0)) {
		control_reply_err(req, CONTROL_ERR_BADARG, NULL, "messages is "
		    "0 to 1000; after is a MID");
		return;
	}
	if (name == NULL || sched_dest_find(ctl->d->sched, name, &v) != 0) {
		control_reply_err(req, CONTROL_ERR_NOTFOUND, NULL, "no "
		    "destination '%s' in the queue", name ? name : "");
		return;
	}
	o = ctl_dest_json(&v, now);
	rs = json_array();
	n = sched_dest_replies(ctl->d->sched, name, replies,
	    SL_ARRAY_LEN(replies));
	for (size_t i = 0; i < n; i++)
		json_array_append_new(rs, json_pack("{s:I,s:s,s:I,s:s?}",
		    "time", (json_int_t)replies[i].at, "reply",
		    replies[i].reply, "count", (json_int_t)replies[i].count,
		    "host", replies[i].host));
	json_object_set_new(o, "replies", rs);
	res = json_pack("{s:I,s:o}", "now", (json_int_t)now, "destination", o);
	if (limit > 0) {
		page.msgs = json_array();
		page.limit = (size_t)limit;
		sched_dest_messages(ctl->d->sched, name, from, ctl_page_msg,
		    &page);
		json_object_set_new(res, "messages", page.msgs);
		if (page.more) {
			spool_mid_fmt(page.last, mid);
			json_object_set_new(res, "next_after", json_string(mid));
		} else {
			json_object_set_new(res, "next_after", json_null());
		}
	}
	control_reply(req, res);
}
