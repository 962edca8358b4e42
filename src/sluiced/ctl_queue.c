/* SPDX-License-Identifier: MIT */
/*
 * ctl_queue.c: the daemon's answers to the queue commands, for the control
 * socket and the HTTP API alike (control.h's answer calls):
 *
 *   queue.list {domain,state}         every queued message, streamed
 *   queue.list {limit,cursor,...}     one page (the HTTP API's paging)
 *   queue.summary                     per destination (qshape), streamed
 *   queue.show {mid,body}             one message; its body streamed
 *   queue.flush|hold|release|bounce {mids|domain|all}
 *   queue.delete {mids|domain|all}    answered once the spool removed them
 *
 * A listing of a queue of any size never holds the loop: a walk
 * (struct ctl_walk, over a sched_iter) takes at most CTL_SLICE_US at a
 * time, then yields to mail flow, for longer the busier the loop is
 * (ctl_walk_pause); it pauses while more than CONTROL_STREAM_HIGH bytes
 * wait for a slow reader, and stops early if the reader left. Items are written as JSON text directly (util/jsonw.h:
 * valid UTF-8 whatever the envelope holds), not built as jansson trees.
 *
 * A page (limit given) costs at most limit messages shown and CTL_PAGE_SCAN
 * examined, whatever the queue's size: its cursor names a walk kept here
 * (at most CTL_CURSORS, idle ones dropped after CTL_CURSOR_IDLE_S), or,
 * once that is gone, the MID to go on from.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "conf/conf.h"
#include "control/control.h"
#include "log/log.h"
#include "sched/sched.h"
#include "shaping/shaping.h"
#include "sluiced/ctl_int.h"
#include "sluiced/sluiced.h"
#include "spool/spool.h"
#include "submit/submit.h"
#include "util/jsonw.h"
#include "util/util.h"

#define CTL_SLICE_US 1000	/* one slice of a walk */
#define CTL_BUSY_SHARE 0.05	/* of the time of a busy daemon, at most */
#define CTL_BUSY_FULL 0.25	/* CPU use (cores) that counts as busy */
#define CTL_PAGE_MAX 1000	/* messages in one page */
#define CTL_PAGE_DEFAULT 100
#define CTL_PAGE_SCAN 20000	/* messages one page may examine */
#define CTL_CURSORS 64
#define CTL_CURSOR_IDLE_S 600
#define CTL_BODY_CHUNK (48 * 1024)
#define CTL_HEADER_MAX (256 * 1024)	/* of a body read for its header */

/* Age buckets of `queue summary`, in minutes (as Postfix's qshape). */
static const int ctl_age_minutes[] = { 5, 10, 20, 40, 80, 160, 320, 640,
	1280 };
#define CTL_AGE_BUCKETS (SL_ARRAY_LEN(ctl_age_minutes) + 1)

static int64_t
ctl_clock_us(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t
ctl_mono_us(void)
{
	return ctl_clock_us(CLOCK_MONOTONIC);
}

/* ---- JSON text ---- */

/* A growable buffer for one item's text. */
struct ctl_text {
	char *p;
	size_t len, cap;
};

static void
ctl_put(void *arg, const char *s, size_t n)
{
	struct ctl_text *t = arg;

	if (t->len + n > t->cap)
		t->p = xrealloc(t->p, t->cap = (t->len + n) * 2 + 256);
	memcpy(t->p + t->len, s, n);
	t->len += n;
}

static void
ctl_puts(struct ctl_text *t, const char *s)
{
	ctl_put(t, s, strlen(s));
}

static void
ctl_put_str(struct ctl_text *t, const char *s)
{
	if (s == NULL)
		ctl_put(t, "null", 4);
	else
		sl_json_quote(s, strlen(s), ctl_put, t);
}

static void
ctl_put_int(struct ctl_text *t, int64_t v)
{
	char buf[24];
	int n = snprintf(buf, sizeof(buf), "%" PRId64, v);

	ctl_put(t, buf, (size_t)n);
}

/* "key": with the comma before it unless first. */
static void
ctl_put_key(struct ctl_text *t, const char *key, int first)
{
	if (!first)
		ctl_put(t, ",", 1);
	ctl_put(t, "\"", 1);
	ctl_puts(t, key);
	ctl_put(t, "\":", 2);
}

/* One message as docs/CONTROL.md says: mid, size, ..., recipients. */
static void
ctl_msg_text(struct ctl_text *t, const struct sched_msg_view *m)
{
	char mid[17];

	ctl_put(t, "{", 1);
	ctl_put_key(t, "mid", 1);
	ctl_put_str(t, spool_mid_fmt(m->mid, mid));
	ctl_put_key(t, "size", 0);
	ctl_put_int(t, (int64_t)m->size);
	ctl_put_key(t, "arrival", 0);
	ctl_put_int(t, m->arrival);
	ctl_put_key(t, "sender", 0);
	ctl_put_str(t, m->sender);
	ctl_put_key(t, "bounce", 0);
	ctl_puts(t, m->bounce ? "true" : "false");
	ctl_put_key(t, "recipients", 0);
	ctl_put(t, "[", 1);
	for (size_t i = 0; i < m->nrcpt; i++) {
		const struct sched_rcpt_view *r = &m->rcpts[i];

		ctl_put(t, i ? ",{" : "{", i ? 2 : 1);
		ctl_put_key(t, "rid", 1);
		ctl_put_int(t, r->rid);
		ctl_put_key(t, "address", 0);
		ctl_put_str(t, r->addr);
		ctl_put_key(t, "state", 0);
		ctl_put_str(t, r->state);
		ctl_put_key(t, "attempts", 0);
		ctl_put_int(t, r->attempts);
		ctl_put_key(t, "next_retry", 0);
		ctl_put_int(t, r->next_retry);
		ctl_put_key(t, "last_reply", 0);
		ctl_put_str(t, r->last_reply);
		ctl_put_key(t, "destination", 0);
		ctl_put_str(t, r->destination);
		ctl_put_key(t, "waiting", 0);
		ctl_put_str(t, r->waiting);
		ctl_put(t, "}", 1);
	}
	ctl_put(t, "]}", 2);
}

json_t *
ctl_msg_json(const struct sched_msg_view *m)
{
	struct ctl_text t = { 0 };
	json_t *j;

	ctl_msg_text(&t, m);
	j = json_loadb(t.p, t.len, 0, NULL);
	free(t.p);
	return j ? j : json_null();
}

/* The text as a new evbuffer, for control_reply_raw. */
static struct evbuffer *
ctl_text_ev(const struct ctl_text *t)
{
	struct evbuffer *b = evbuffer_new();

	evbuffer_add(b, t->p, t->len);
	return b;
}

/* ---- recipients ---- */

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

/* ---- filters of list ---- */

struct ctl_filter {
	char *domain;		/* owned; NULL: any */
	char *state;		/* owned; NULL: any */
};

static const char *
ctl_opt_arg(json_t *args, const char *key, int *bad)
{
	json_t *v = json_object_get(args, key);

	if (v == NULL || json_is_null(v))
		return NULL;
	if (!json_is_string(v) || json_string_length(v) == 0) {
		*bad = 1;
		return NULL;
	}
	return json_string_value(v);
}

/* domain and state from args; -1 after answering a bad request. */
static int
ctl_filter_parse(struct control_req *req, json_t *args, struct ctl_filter *f)
{
	static const char *const states[] = { "queued", "deferred", "held",
		"active" };
	const char *domain, *state;
	int bad = 0, known = 0;

	domain = ctl_opt_arg(args, "domain", &bad);
	if (bad) {
		control_reply_err(req, CONTROL_ERR_BADARG, NULL,
		    "domain must be a name");
		return -1;
	}
	state = ctl_opt_arg(args, "state", &bad);
	for (size_t i = 0; state != NULL && i < SL_ARRAY_LEN(states); i++)
		known |= strcmp(state, states[i]) == 0;
	if (bad || (state != NULL && !known)) {
		control_reply_err(req, CONTROL_ERR_BADARG, NULL, "state must "
		    "be queued, deferred, held or active");
		return -1;
	}
	f->domain = domain ? xstrdup(domain) : NULL;
	f->state = state ? xstrdup(state) : NULL;
	return 0;
}

static void
ctl_filter_free(struct ctl_filter *f)
{
	free(f->domain);
	free(f->state);
}

static int
ctl_filter_match(const struct ctl_filter *f, const struct sched_msg_view *m)
{
	int dom_ok = f->domain == NULL, state_ok = f->state == NULL;

	for (size_t i = 0; i < m->nrcpt && !(dom_ok && state_ok); i++) {
		const struct sched_rcpt_view *r = &m->rcpts[i];

		if (!dom_ok && ctl_rcpt_at(r, f->domain))
			dom_ok = 1;
		if (!state_ok && strcmp(r->state, f->state) == 0)
			state_ok = 1;
	}
	return dom_ok && state_ok;
}

/* ---- summary's table: per destination ---- */

struct ctl_sdest {
	struct ctl_sdest *hnext;
	char *name;
	uint64_t messages, recipients;
	uint64_t ages[CTL_AGE_BUCKETS];
	int64_t oldest;
	uint64_t last_mid;	/* counted for this message already */
};

struct ctl_summary {
	struct ctl_sdest **tab;
	size_t size, n;
	struct ctl_sdest **sorted;	/* phase 2 */
	size_t next;
	int64_t now;
	uint64_t messages, recipients;
	int64_t oldest;
};

static uint32_t
ctl_sdest_hash(const void *node)
{
	return sl_hash_str(((const struct ctl_sdest *)node)->name);
}

static struct ctl_sdest *
ctl_sdest_get(struct ctl_summary *s, const char *name)
{
	size_t b;
	struct ctl_sdest *d;

	if (s->tab == NULL)
		s->tab = xcalloc(s->size = 256, sizeof(*s->tab));
	b = sl_hash_str(name) % s->size;
	for (d = s->tab[b]; d != NULL; d = d->hnext)
		if (strcmp(d->name, name) == 0)
			return d;
	if (s->n >= s->size) {
		s->tab = (struct ctl_sdest **)sl_chain_rehash((void **)s->tab,
		    s->size, s->size * 2, offsetof(struct ctl_sdest, hnext),
		    ctl_sdest_hash);
		s->size *= 2;
		b = sl_hash_str(name) % s->size;
	}
	d = xcalloc(1, sizeof(*d));
	d->name = xstrdup(name);
	d->hnext = s->tab[b];
	s->tab[b] = d;
	s->n++;
	return d;
}

static size_t
ctl_age_bucket(int64_t age_s)
{
	size_t i = 0;

	while (i < SL_ARRAY_LEN(ctl_age_minutes) &&
	    age_s >= (int64_t)ctl_age_minutes[i] * 60)
		i++;
	return i;
}

/* Per destination: messages (once per message), recipients, ages. */
static void
ctl_summary_add(struct ctl_summary *s, const struct sched_msg_view *m)
{
	size_t b = ctl_age_bucket(s->now - m->arrival);
	int pending = 0;

	for (size_t i = 0; i < m->nrcpt; i++) {
		const struct sched_rcpt_view *r = &m->rcpts[i];
		const char *at = strrchr(r->addr, '@');
		const char *name = r->destination ? r->destination :
		    at ? at + 1 : r->addr;
		struct ctl_sdest *d;

		if (ctl_rcpt_final(r))
			continue;
		pending = 1;
		s->recipients++;
		d = ctl_sdest_get(s, name);
		d->recipients++;
		if (d->last_mid == m->mid)
			continue;
		d->last_mid = m->mid;
		d->messages++;
		d->ages[b]++;
		if (d->oldest == 0 || m->arrival < d->oldest)
			d->oldest = m->arrival;
	}
	if (pending) {
		s->messages++;
		if (s->oldest == 0 || m->arrival < s->oldest)
			s->oldest = m->arrival;
	}
}

static int
ctl_sdest_cmp(const void *a, const void *b)
{
	const struct ctl_sdest *x = *(const struct ctl_sdest *const *)a;
	const struct ctl_sdest *y = *(const struct ctl_sdest *const *)b;

	if (x->messages != y->messages)
		return x->messages > y->messages ? -1 : 1;
	return strcmp(x->name, y->name);
}

/* Phase 2: the table as an array, busiest first. */
static void
ctl_summary_sort(struct ctl_summary *s)
{
	size_t n = 0;

	s->sorted = xcalloc(s->n + 1, sizeof(*s->sorted));
	for (size_t b = 0; b < s->size; b++)
		for (struct ctl_sdest *d = s->tab[b]; d != NULL; d = d->hnext)
			s->sorted[n++] = d;
	qsort(s->sorted, n, sizeof(*s->sorted), ctl_sdest_cmp);
}

/* One destination as JSON, with the scheduler's own view of it. */
static void
ctl_sdest_text(struct ctl_text *t, struct sched *sched,
    const struct ctl_sdest *d)
{
	struct sched_dest_view v;
	int known = sched_dest_find(sched, d->name, &v) == 0;

	ctl_put(t, "{", 1);
	ctl_put_key(t, "destination", 1);
	ctl_put_str(t, d->name);
	ctl_put_key(t, "messages", 0);
	ctl_put_int(t, (int64_t)d->messages);
	ctl_put_key(t, "recipients", 0);
	ctl_put_int(t, (int64_t)d->recipients);
	ctl_put_key(t, "ages", 0);
	for (size_t i = 0; i < CTL_AGE_BUCKETS; i++) {
		ctl_put(t, i ? "," : "[", 1);
		ctl_put_int(t, (int64_t)d->ages[i]);
	}
	ctl_put(t, "]", 1);
	ctl_put_key(t, "oldest", 0);
	ctl_put_int(t, d->oldest);
	if (known) {
		ctl_put_key(t, "connections", 0);
		ctl_put_int(t, v.connections);
		ctl_put_key(t, "limit", 0);
		ctl_put_int(t, v.limit);
		ctl_put_key(t, "waiting", 0);
		ctl_put_str(t, v.waiting);
		if (v.site != NULL) {
			ctl_put_key(t, "site", 0);
			ctl_put_str(t, v.site);
		}
	}
	ctl_put(t, "}", 1);
}

static void
ctl_summary_free(struct ctl_summary *s)
{
	for (size_t b = 0; b < s->size; b++) {
		struct ctl_sdest *d, *n;

		for (d = s->tab[b]; d != NULL; d = n) {
			n = d->hnext;
			free(d->name);
			free(d);
		}
	}
	free(s->tab);
	free(s->sorted);
}

/* ---- walks: a listing taken a slice at a time ---- */

enum ctl_walk_kind {
	CTL_WALK_LIST,		/* queue.list: each message, streamed */
	CTL_WALK_SUMMARY,	/* queue.summary: counted, then streamed */
	CTL_WALK_BODY,		/* queue.show --body: the body in pieces */
	CTL_WALK_HEADERS,	/* queue.show with headers: waits for the body */
	CTL_WALK_DELETE,	/* queue.delete of a domain or all */
};

struct ctl_delete;
static void ctl_delete_one(struct ctl_delete *cd, struct sched *s,
    uint64_t mid);
static void ctl_delete_release(struct ctl_delete *cd);

struct ctl_walk {
	struct ctl_walk *prev, *next;	/* ctl->walks */
	struct sluiced_ctl *ctl;
	struct control_req *req;
	enum ctl_walk_kind kind;
	struct sched_iter *it;
	struct event *ev;
	struct ctl_text text;
	struct ctl_filter filter;
	uint64_t messages, recipients;	/* listed */
	struct ctl_summary sum;
	struct sched_body_ref *bref;	/* show --body: the shared body */
	const struct evbuffer *body;	/* it, once read; NULL before */
	size_t body_off;		/* what of it has gone out */
	char *chunk;			/* a piece of it, copied out */
	struct evbuffer *final;		/* show: the message, sent last */
	struct ctl_delete *del;		/* delete: the request's state */
	uint64_t hit;			/* delete: the message just seen */
	uint64_t mid;			/* show: the message */
	int64_t slice_at;		/* when the last slice began */
	int64_t yield_at, yield_cpu;	/* when it ended: wall, process CPU */
	int64_t next_at;		/* the next may begin (monotonic) */
	double busy;			/* cores the daemon uses without us */
};

static void ctl_walk_slice(evutil_socket_t fd, short what, void *arg);

static struct ctl_walk *
ctl_walk_new(struct sluiced_ctl *ctl, struct control_req *req,
    enum ctl_walk_kind kind)
{
	struct ctl_walk *w = xcalloc(1, sizeof(*w));

	w->ctl = ctl;
	w->req = req;
	w->kind = kind;
	w->ev = evtimer_new(ctl->d->base, ctl_walk_slice, w);
	w->next = ctl->walks;
	if (ctl->walks)
		ctl->walks->prev = w;
	ctl->walks = w;
	return w;
}

static void
ctl_walk_free(struct ctl_walk *w)
{
	struct sluiced_ctl *ctl = w->ctl;

	if (w->prev)
		w->prev->next = w->next;
	else
		ctl->walks = w->next;
	if (w->next)
		w->next->prev = w->prev;
	event_free(w->ev);
	sched_iter_free(w->it);
	ctl_filter_free(&w->filter);
	ctl_summary_free(&w->sum);
	sched_body_done(ctl->d->sched, w->bref);
	free(w->chunk);
	if (w->final)
		evbuffer_free(w->final);
	free(w->text.p);
	free(w);
}

/*
 * A slice ends: when may the next one begin? An idle daemon lists at full
 * speed. The CPU time the process used between two slices (the loop, the
 * spool thread, their system calls: mail flow) over the wall time between
 * them says how busy it is (smoothed, in cores); from CTL_BUSY_FULL cores
 * on, the walk takes CTL_BUSY_SHARE of the time, so a loaded daemon (on a
 * machine whose cores mail flow fills) keeps its accept rate, and the
 * listing takes longer.
 */
static void
ctl_walk_pause(struct ctl_walk *w)
{
	int64_t now = ctl_mono_us(), spent = now - w->slice_at;
	double share = 1 - w->busy / CTL_BUSY_FULL;

	if (share < CTL_BUSY_SHARE)
		share = CTL_BUSY_SHARE;
	w->yield_at = now;
	w->yield_cpu = ctl_clock_us(CLOCK_PROCESS_CPUTIME_ID);
	w->next_at = now + (int64_t)((double)spent * (1 - share) / share);
}

/* Run the next slice once its time has come. */
static void
ctl_walk_schedule(struct ctl_walk *w)
{
	int64_t wait = w->next_at - ctl_mono_us();
	struct timeval tv = { 0, 0 };

	if (wait > 0) {
		tv.tv_sec = wait / 1000000;
		tv.tv_usec = wait % 1000000;
	}
	evtimer_add(w->ev, &tv);
}

/* The reader took some of the backlog. */
static void
ctl_walk_resume(void *arg)
{
	ctl_walk_schedule(arg);
}

/* A slice begins: how much CPU the daemon used since the last one. */
static void
ctl_walk_measure(struct ctl_walk *w)
{
	int64_t now = ctl_mono_us(), wall = now - w->yield_at;
	int64_t cpu = ctl_clock_us(CLOCK_PROCESS_CPUTIME_ID) - w->yield_cpu;
	double b;

	w->slice_at = now;
	if (w->yield_at == 0 || wall <= 0)
		return;
	b = (double)cpu / (double)wall;
	if (b > 1)
		b = 1;
	w->busy = (w->busy + b) / 2;
}

/* The shaping actions in force, after the summary's table. */
struct ctl_actions {
	struct ctl_text *t;
	int n;
};

static int
ctl_summary_action(void *arg, const char *site, const char *rule,
    const char *action, int64_t until)
{
	struct ctl_actions *a = arg;

	if (a->n++ > 0)
		ctl_put(a->t, ",", 1);
	ctl_put(a->t, "{", 1);
	ctl_put_key(a->t, "site", 1);
	ctl_put_str(a->t, site);
	ctl_put_key(a->t, "rule", 0);
	ctl_put_str(a->t, rule);
	ctl_put_key(a->t, "action", 0);
	ctl_put_str(a->t, action);
	ctl_put_key(a->t, "until", 0);
	ctl_put_int(a->t, until);
	ctl_put(a->t, "}", 1);
	return 0;
}

/* The final answer: what the walk counted; frees w. */
static void
ctl_walk_finish(struct ctl_walk *w)
{
	struct ctl_text t = { 0 };
	struct ctl_summary *s = &w->sum;

	switch (w->kind) {
	case CTL_WALK_LIST:
		ctl_put(&t, "{", 1);
		ctl_put_key(&t, "count", 1);
		ctl_put_int(&t, (int64_t)w->messages);
		ctl_put_key(&t, "recipients", 0);
		ctl_put_int(&t, (int64_t)w->recipients);
		ctl_put(&t, "}", 1);
		control_reply_raw(w->req, ctl_text_ev(&t));
		break;
	case CTL_WALK_SUMMARY:
		ctl_put(&t, "{", 1);
		ctl_put_key(&t, "age_minutes", 1);
		for (size_t i = 0; i < SL_ARRAY_LEN(ctl_age_minutes); i++) {
			ctl_put(&t, i ? "," : "[", 1);
			ctl_put_int(&t, ctl_age_minutes[i]);
		}
		ctl_put(&t, "]", 1);
		ctl_put_key(&t, "messages", 0);
		ctl_put_int(&t, (int64_t)s->messages);
		ctl_put_key(&t, "recipients", 0);
		ctl_put_int(&t, (int64_t)s->recipients);
		ctl_put_key(&t, "oldest", 0);
		ctl_put_int(&t, s->oldest);
		ctl_put_key(&t, "now", 0);
		ctl_put_int(&t, s->now);
		if (w->ctl->d->shaping != NULL) {
			ctl_put_key(&t, "shaping", 0);
			struct ctl_actions a = { &t, 0 };
			ctl_put(&t, "[", 1);
			shaping_foreach_action(w->ctl->d->shaping,
			    ctl_summary_action, &a);
			ctl_put(&t, "]", 1);
		}
		ctl_put(&t, "}", 1);
		control_reply_raw(w->req, ctl_text_ev(&t));
		break;
	case CTL_WALK_BODY:
		control_reply_raw(w->req, w->final);
		w->final = NULL;
		break;
	case CTL_WALK_HEADERS:	/* never sliced: answered by its body */
		break;
	case CTL_WALK_DELETE:
		/* answered once the spool removed the last one */
		ctl_delete_release(w->del);
		break;
	}
	free(t.p);
	ctl_walk_free(w);
}

static int
ctl_walk_list_msg(void *arg, const struct sched_msg_view *m)
{
	struct ctl_walk *w = arg;

	if (!ctl_filter_match(&w->filter, m))
		return 0;
	w->text.len = 0;
	ctl_msg_text(&w->text, m);
	control_stream_item(w->req, w->text.p, w->text.len);
	w->messages++;
	w->recipients += m->nrcpt;
	return 0;
}

/* A message with a pending recipient at the domain (or any message). */
static int
ctl_walk_delete_msg(void *arg, const struct sched_msg_view *m)
{
	struct ctl_walk *w = arg;
	int hit = w->filter.domain == NULL;

	for (size_t i = 0; i < m->nrcpt && !hit; i++)
		hit = !ctl_rcpt_final(&m->rcpts[i]) &&
		    ctl_rcpt_at(&m->rcpts[i], w->filter.domain);
	if (hit)
		w->hit = m->mid;
	return 0;
}

static int
ctl_walk_summary_msg(void *arg, const struct sched_msg_view *m)
{
	ctl_summary_add(&((struct ctl_walk *)arg)->sum, m);
	return 0;
}

/* One step of the walk: 1 if there is more. */
/*
 * The next piece of a shown body into w->chunk, copied out of the shared
 * (read-only) buffer; its length, 0 at the end. A piece never cuts a
 * UTF-8 character in two.
 */
static size_t
ctl_body_piece(struct ctl_walk *w)
{
	struct evbuffer *b = (struct evbuffer *)w->body;
	size_t left = evbuffer_get_length(b) - w->body_off, n;
	struct evbuffer_ptr at;
	ev_ssize_t got;

	if (left == 0)
		return 0;
	n = left > CTL_BODY_CHUNK ? CTL_BODY_CHUNK + 1 : left;
	if (w->chunk == NULL)
		w->chunk = xmalloc(CTL_BODY_CHUNK + 1);
	if (evbuffer_ptr_set(b, &at, w->body_off, EVBUFFER_PTR_SET) != 0 ||
	    (got = evbuffer_copyout_from(b, &at, w->chunk, n)) != (ev_ssize_t)n)
		return 0;
	if (n > CTL_BODY_CHUNK) {
		n = CTL_BODY_CHUNK;
		for (int k = 0; k < 3 &&
		    ((unsigned char)w->chunk[n] & 0xC0) == 0x80; k++)
			n--;
	}
	w->body_off += n;
	return n;
}

static int
ctl_walk_step(struct ctl_walk *w)
{
	struct ctl_summary *s = &w->sum;
	size_t n;

	int more;

	switch (w->kind) {
	case CTL_WALK_LIST:
		return sched_iter_next(w->it, ctl_walk_list_msg, w);
	case CTL_WALK_DELETE:
		/* delete outside the view: the walk has stepped past it */
		w->hit = 0;
		more = sched_iter_next(w->it, ctl_walk_delete_msg, w);
		if (w->hit != 0)
			ctl_delete_one(w->del, w->ctl->d->sched, w->hit);
		return more;
	case CTL_WALK_SUMMARY:
		if (w->it != NULL) {
			if (sched_iter_next(w->it, ctl_walk_summary_msg, w))
				return 1;
			sched_iter_free(w->it);
			w->it = NULL;
			ctl_summary_sort(s);
			control_stream_begin(w->req, "destinations",
			    CONTROL_STREAM_ARRAY);
		}
		if (s->next >= s->n)
			return 0;
		w->text.len = 0;
		ctl_sdest_text(&w->text, w->ctl->d->sched,
		    s->sorted[s->next++]);
		control_stream_item(w->req, w->text.p, w->text.len);
		return 1;
	case CTL_WALK_BODY:
		if ((n = ctl_body_piece(w)) == 0)
			return 0;
		w->text.len = 0;
		sl_json_quote(w->chunk, n, ctl_put, &w->text);
		control_stream_item(w->req, w->text.p, w->text.len);
		return 1;
	case CTL_WALK_HEADERS:
		return 0;
	}
	return 0;
}

/*
 * One slice: steps until the walk ends, the slice's time is up (yield to
 * mail flow), or the reader is slow (wait for room). A reader that left
 * ends the walk at once.
 */
static void
ctl_walk_slice(evutil_socket_t fd, short what, void *arg)
{
	struct ctl_walk *w = arg;
	int64_t deadline;

	ctl_walk_measure(w);
	deadline = w->slice_at + CTL_SLICE_US;
	for (unsigned n = 1;; n++) {
		/* a delete goes on without its reader: it was asked for */
		if (w->kind != CTL_WALK_DELETE && control_req_gone(w->req)) {
			ctl_walk_finish(w);
			return;
		}
		if (!ctl_walk_step(w)) {
			ctl_walk_finish(w);
			return;
		}
		if (control_stream_full(w->req)) {
			ctl_walk_pause(w);
			control_stream_wait(w->req, ctl_walk_resume, w);
			return;
		}
		if (n % 16 == 0 && ctl_mono_us() >= deadline) {
			ctl_walk_pause(w);
			ctl_walk_schedule(w);
			return;
		}
	}
}

/* ---- pages (limit given): the HTTP API's GET /api/v1/queue ---- */

struct ctl_cursor {
	struct ctl_cursor *prev, *next;	/* ctl->cursors, most recent first */
	uint64_t id;
	struct sched_iter *it;
	int64_t used;			/* monotonic seconds */
};

static void
ctl_cursor_drop(struct sluiced_ctl *ctl, struct ctl_cursor *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		ctl->cursors = c->next;
	if (c->next)
		c->next->prev = c->prev;
	sched_iter_free(c->it);
	free(c);
	ctl->ncursors--;
}

static void
ctl_cursor_front(struct sluiced_ctl *ctl, struct ctl_cursor *c)
{
	if (ctl->cursors == c)
		return;
	if (c->prev)
		c->prev->next = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = NULL;
	c->next = ctl->cursors;
	if (ctl->cursors)
		ctl->cursors->prev = c;
	ctl->cursors = c;
}

/* A new cursor over it (taken); the least recently used one goes when
 * there are too many, and idle ones go. */
static struct ctl_cursor *
ctl_cursor_new(struct sluiced_ctl *ctl, struct sched_iter *it)
{
	struct ctl_cursor *c = xcalloc(1, sizeof(*c)), *last, *prev;
	int64_t now = sl_mono_ms() / 1000;

	for (last = ctl->cursors; last && last->next; last = last->next)
		;
	for (; last != NULL; last = prev) {
		prev = last->prev;
		if (ctl->ncursors >= CTL_CURSORS ||
		    now - last->used > CTL_CURSOR_IDLE_S)
			ctl_cursor_drop(ctl, last);
	}
	if (getrandom(&c->id, sizeof(c->id), 0) != sizeof(c->id))
		c->id = (uint64_t)sl_now_us() ^ (uint64_t)(uintptr_t)c;
	c->it = it;
	c->used = now;
	c->next = ctl->cursors;
	if (ctl->cursors)
		ctl->cursors->prev = c;
	ctl->cursors = c;
	ctl->ncursors++;
	return c;
}

/* Parse a cursor string: "ID.MID", 16 hex digits each. */
static int
ctl_cursor_parse(const char *text, uint64_t *id, uint64_t *mid)
{
	char idtext[17];

	if (strlen(text) != 33 || text[16] != '.')
		return -1;
	memcpy(idtext, text, 16);
	idtext[16] = '\0';
	if ((*id = spool_mid_parse(idtext)) == 0 ||
	    (*mid = spool_mid_parse(text + 17)) == 0)
		return -1;
	return 0;
}

/*
 * The walk of a cursor: the walk id when it stands on mid, or when mid
 * left the queue (the walk stepped past it); a new walk from mid when that
 * is still queued but the walk is elsewhere (the same page asked again);
 * NULL if the walk is gone and so is mid.
 */
static struct ctl_cursor *
ctl_cursor_find(struct sluiced_ctl *ctl, uint64_t id, uint64_t mid)
{
	struct ctl_cursor *c;
	struct sched_iter *it;

	for (c = ctl->cursors; c != NULL && c->id != id; c = c->next)
		;
	if (c != NULL && sched_iter_peek(c->it) == mid)
		goto found;
	if ((it = sched_iter_at(ctl->d->sched, mid)) != NULL)
		return ctl_cursor_new(ctl, it);
	if (c == NULL)
		return NULL;
found:
	c->used = sl_mono_ms() / 1000;
	ctl_cursor_front(ctl, c);
	return c;
}

struct ctl_page {
	struct ctl_text *t;
	const struct ctl_filter *filter;
	size_t shown;
};

static int
ctl_page_msg(void *arg, const struct sched_msg_view *m)
{
	struct ctl_page *pg = arg;

	if (!ctl_filter_match(pg->filter, m))
		return 0;
	if (pg->shown++ > 0)
		ctl_put(pg->t, ",", 1);
	ctl_msg_text(pg->t, m);
	return 0;
}

/* {"messages":[...],"next_cursor":"..."|null}: at most limit messages,
 * at most CTL_PAGE_SCAN examined. */
static void
ctl_list_page(struct sluiced_ctl *ctl, struct control_req *req, json_t *args,
    const struct ctl_filter *f)
{
	json_t *lim = json_object_get(args, "limit");
	json_t *cur = json_object_get(args, "cursor");
	struct ctl_text t = { 0 };
	struct ctl_page pg = { &t, f, 0 };
	struct ctl_cursor *c;
	json_int_t limit = CTL_PAGE_DEFAULT;
	size_t scanned = 0;
	char id[17], mid[17];
	uint64_t next, cid, cmid;

	if (lim != NULL && !json_is_null(lim)) {
		if (!json_is_integer(lim) || (limit = json_integer_value(lim)) <
		    1 || limit > CTL_PAGE_MAX) {
			control_reply_err(req, CONTROL_ERR_BADARG, NULL,
			    "limit must be a number from 1 to %d",
			    CTL_PAGE_MAX);
			return;
		}
	}
	if (cur != NULL && !json_is_null(cur) && (!json_is_string(cur) ||
	    ctl_cursor_parse(json_string_value(cur), &cid, &cmid) != 0)) {
		control_reply_err(req, CONTROL_ERR_BADARG, NULL,
		    "cursor must be the next_cursor of the page before");
		return;
	}
	if (json_is_string(cur)) {
		if ((c = ctl_cursor_find(ctl, cid, cmid)) == NULL) {
			control_reply_err(req, CONTROL_ERR_GONE, NULL, "the "
			    "cursor expired and its message left the queue: "
			    "start again without a cursor");
			return;
		}
	} else {
		c = ctl_cursor_new(ctl, sched_iter_new(ctl->d->sched));
	}
	ctl_puts(&t, "{\"messages\":[");
	while (pg.shown < (size_t)limit && scanned++ < CTL_PAGE_SCAN &&
	    sched_iter_next(c->it, ctl_page_msg, &pg))
		;
	ctl_puts(&t, "],\"next_cursor\":");
	if ((next = sched_iter_peek(c->it)) == 0) {
		ctl_puts(&t, "null");
		ctl_cursor_drop(ctl, c);
	} else {
		ctl_put(&t, "\"", 1);
		ctl_puts(&t, spool_mid_fmt(c->id, id));
		ctl_put(&t, ".", 1);
		ctl_puts(&t, spool_mid_fmt(next, mid));
		ctl_put(&t, "\"", 1);
	}
	ctl_puts(&t, ",\"count\":");
	ctl_put_int(&t, (int64_t)pg.shown);
	ctl_put(&t, "}", 1);
	control_reply_raw(req, ctl_text_ev(&t));
	free(t.p);
}

void
ctl_list(struct sluiced_ctl *ctl, struct control_req *req, json_t *args)
{
	struct ctl_filter f = { 0 };
	struct ctl_walk *w;

	if (ctl_filter_parse(req, args, &f) != 0)
		return;
	if (json_object_get(args, "limit") != NULL ||
	    json_object_get(args, "cursor") != NULL) {
		ctl_list_page(ctl, req, args, &f);
		ctl_filter_free(&f);
		return;
	}
	w = ctl_walk_new(ctl, req, CTL_WALK_LIST);
	w->filter = f;
	w->it = sched_iter_new(ctl->d->sched);
	control_stream_begin(req, "messages", CONTROL_STREAM_ARRAY);
	ctl_walk_slice(-1, 0, w);
}

/* ---- summary, show ---- */

void
ctl_summary(struct sluiced_ctl *ctl, struct control_req *req, json_t *args)
{
	struct ctl_walk *w = ctl_walk_new(ctl, req, CTL_WALK_SUMMARY);

	w->sum.now = sl_now_us() / 1000000;
	w->it = sched_iter_new(ctl->d->sched);
	ctl_walk_slice(-1, 0, w);
}

static int
ctl_show_msg(void *arg, const struct sched_msg_view *m)
{
	ctl_msg_text(arg, m);
	return 1;
}

/* A header field as [name, value]; bytes that are not UTF-8 become '?'. */
static void
ctl_header_pair(void *arg, const char *name, size_t nlen, const char *value,
    size_t vlen)
{
	json_t *pair = json_array();
	char *v = xstrndup(value, vlen);

	if (!sl_utf8_valid(v, vlen))
		for (size_t i = 0; i < vlen; i++)
			if ((unsigned char)v[i] >= 0x80)
				v[i] = '?';
	json_array_append_new(pair, json_stringn(name, nlen));
	json_array_append_new(pair, json_stringn(v, vlen) ?: json_string(""));
	json_array_append_new(arg, pair);
	free(v);
}

/* The shown message's body could not be read (why): say so, end the walk. */
static void
ctl_show_failed(struct ctl_walk *w, const char *why)
{
	char mid[17];

	spool_mid_fmt(w->mid, mid);
	control_reply_err(w->req, CONTROL_ERR_FAILED, NULL, "MID %s: cannot "
	    "read the body: %s", mid, why);
	ctl_walk_free(w);
}

/* queue.show with "headers": the body is in (read off the loop, or shared
 * with a delivery); answer the message with its header fields (the stored
 * text's, our Received: first). */
static void
ctl_show_headers(void *arg, const struct evbuffer *body, const char *why)
{
	struct ctl_walk *w = arg;
	size_t n = body ? evbuffer_get_length(body) : 0;
	json_t *o, *hs;
	char *p;

	if (body == NULL) {
		ctl_show_failed(w, why);
		return;
	}
	if (n > CTL_HEADER_MAX)
		n = CTL_HEADER_MAX;
	p = xmalloc(n + 1);
	/* copyout only reads; libevent's prototype wants it mutable */
	evbuffer_copyout((struct evbuffer *)body, p, n);
	p[n] = '\0';
	hs = json_array();
	submit_fields(p, submit_header_len(p, n), ctl_header_pair, hs);
	free(p);
	o = json_loadb(w->text.p, w->text.len, 0, NULL);
	json_object_set_new(o, "headers", hs);
	control_reply(w->req, o);
	ctl_walk_free(w);
}

/* The shown message's body is in (or could not be read). */
static void
ctl_show_body(void *arg, const struct evbuffer *body, const char *why)
{
	struct ctl_walk *w = arg;

	if (body == NULL) {
		ctl_show_failed(w, why);
		return;
	}
	w->body = body;
	control_stream_begin(w->req, "body", CONTROL_STREAM_TEXT);
	ctl_walk_slice(-1, 0, w);
}

void
ctl_show(struct sluiced_ctl *ctl, struct control_req *req, json_t *args)
{
	json_t *mid = json_object_get(args, "mid");
	uint64_t id = json_is_string(mid) ?
	    spool_mid_parse(json_string_value(mid)) : 0;
	struct ctl_text t = { 0 };
	struct ctl_walk *w;

	if (id == 0 || sched_view(ctl->d->sched, id, ctl_show_msg, &t) != 0) {
		control_reply_err(req, CONTROL_ERR_NOTFOUND, json_pack("[O]",
		    mid ? mid : json_null()), "MID %s is not in the queue",
		    json_is_string(mid) ? json_string_value(mid) : "?");
		return;
	}
	if (!json_is_true(json_object_get(args, "body")) &&
	    json_is_true(json_object_get(args, "headers"))) {
		w = ctl_walk_new(ctl, req, CTL_WALK_HEADERS);
		w->text = t;	/* the message, its fields added once read */
		w->mid = id;
		w->bref = sched_body_fetch(ctl->d->sched, id, ctl_show_headers,
		    w);
		return;
	}
	if (!json_is_true(json_object_get(args, "body"))) {
		control_reply_raw(req, ctl_text_ev(&t));
		free(t.p);
		return;
	}
	/* the body is read off the loop (or shared with a delivery), then
	 * goes out in pieces, as the reader takes them */
	w = ctl_walk_new(ctl, req, CTL_WALK_BODY);
	w->final = ctl_text_ev(&t);
	free(t.p);
	w->mid = id;
	w->bref = sched_body_fetch(ctl->d->sched, id, ctl_show_body, w);
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
	size_t i, given = (mids != NULL) + (dom != NULL) + (all != NULL);
	json_t *v;

	memset(sel, 0, sizeof(*sel));
	sel->unknown = json_array();
	if (given != 1) {
		snprintf(err, errlen, "give one of \"mids\": [MID, ...], "
		    "\"domain\": \"name\" or \"all\": true");
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
		if (!json_is_true(all)) {
			snprintf(err, errlen, "\"all\" must be true");
			return -1;
		}
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
	control_reply_err(req, CONTROL_ERR_NOTFOUND, json_incref(sel->unknown),
	    "%zu of %zu MIDs not in the queue: %s (%s: %ld)", nu, sel->nasked,
	    list, key, n);
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
		control_reply_err(req, CONTROL_ERR_BADARG, NULL, "%s", err);
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

void
ctl_flush(struct sluiced_ctl *ctl, struct control_req *req, json_t *args)
{
	ctl_action(ctl, req, args, sched_flush);
}

void
ctl_hold(struct sluiced_ctl *ctl, struct control_req *req, json_t *args)
{
	ctl_action(ctl, req, args, sched_hold);
}

void
ctl_release(struct sluiced_ctl *ctl, struct control_req *req, json_t *args)
{
	ctl_action(ctl, req, args, sched_release);
}

void
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
		control_reply_err(cd->req, CONTROL_ERR_FAILED, NULL, "the "
		    "spool failed to delete %d message(s) (%ld deleted); see "
		    "the log", cd->failed, cd->deleted);
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

/* Delete one message; its answer counts down cd->pending. */
static void
ctl_delete_one(struct ctl_delete *cd, struct sched *s, uint64_t mid)
{
	struct ctl_delete_one *one = xmalloc(sizeof(*one));

	one->cd = cd;
	one->mid = mid;
	cd->pending++;
	sched_delete(s, mid, ctl_deleted, one);
}

/* Every delete is asked for: answer once the last one is done. */
static void
ctl_delete_release(struct ctl_delete *cd)
{
	if (--cd->pending == 0)
		ctl_delete_answer(cd);
}

/*
 * MIDs are deleted at once (the request bounds them); a domain or all is
 * a walk over the queue, a slice at a time like a listing, deleting each
 * message with a pending recipient there (or every message).
 */
void
ctl_delete(struct sluiced_ctl *ctl, struct control_req *req, json_t *args)
{
	struct ctl_delete *cd = xcalloc(1, sizeof(*cd));
	struct ctl_walk *w;
	char err[256];

	cd->req = req;
	if (ctl_sel_parse(args, &cd->sel, err, sizeof(err)) != 0) {
		control_reply_err(req, CONTROL_ERR_BADARG, NULL, "%s", err);
		ctl_sel_free(&cd->sel);
		free(cd);
		return;
	}
	/* one extra count, so no answer goes out before every call is made */
	cd->pending = 1;
	if (cd->sel.nmids == 0 && cd->sel.nasked == 0) {
		w = ctl_walk_new(ctl, req, CTL_WALK_DELETE);
		w->del = cd;
		w->filter.domain = cd->sel.domain ? xstrdup(cd->sel.domain) :
		    NULL;
		/* the args go away: nothing to name as unknown either */
		cd->sel.domain = NULL;
		w->it = sched_iter_new(ctl->d->sched);
		ctl_walk_slice(-1, 0, w);
		return;
	}
	for (size_t i = 0; i < cd->sel.nmids; i++)
		ctl_delete_one(cd, ctl->d->sched, cd->sel.mids[i]);
	ctl_delete_release(cd);
}

void
ctl_queue_stop(struct sluiced_ctl *ctl)
{
	/* the readers' sockets are closed already: the answers are dropped */
	while (ctl->walks != NULL)
		ctl_walk_finish(ctl->walks);
	while (ctl->cursors != NULL)
		ctl_cursor_drop(ctl, ctl->cursors);
}
