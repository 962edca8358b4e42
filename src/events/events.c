/* SPDX-License-Identifier: MIT */
/*
 * events.c: the webhook sender and its disk spool (events.h).
 *
 * States of the sender, one POST at a time:
 *   IDLE -> POSTING (a batch from disk, or from memory) -> IDLE on 2xx
 *   POSTING -> BACKOFF on failure (the batch stays queued) -> IDLE
 *   IDLE -> READING (a batch read from the disk spool by the worker)
 *   READING -> POSTING | IDLE (nothing readable)
 * Queues, oldest first: the disk spool (events.jsonl from events.pos on),
 * then memory. Memory moves to the end of the disk spool whole (so order
 * holds) when it passes EVENTS_MEM_MAX or while the receiver fails.
 * The worker does every file operation, in order: appends, reads, and
 * advancing the read position once a batch from disk was accepted.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>
#include <event2/event.h>

#include "events/events.h"
#include "log/log.h"
#include "util/util.h"
#include "util/worker.h"

#define EVENTS_MEM_MAX (1024 * 1024)

enum events_state { EV_IDLE, EV_READING, EV_POSTING, EV_BACKOFF };

struct ev_line {
	struct ev_line *next;
	size_t len;
	char data[];
};

struct ev_list {
	struct ev_line *head, **tail;
	size_t n, bytes;
};

struct events {
	struct event_base *base;
	struct events_conf conf;
	char *jsonl, *pos_path;
	struct sl_worker *w;
	enum events_state state;
	struct ev_list mem;
	uint64_t disk_bytes, disk_n;	/* on disk, or being written */
	struct ev_list batch;		/* being posted */
	int64_t batch_disk_bytes;	/* its bytes in the file, if from disk */
	int backoff_s;
	int failing;
	CURLM *multi;
	CURL *easy;
	struct curl_slist *hdrs;
	char *body;
	struct event *timer_ev;		/* curl's timeouts */
	struct event *kick_ev;		/* batch delay, backoff */
	struct events_stats st;
	char curl_err[CURL_ERROR_SIZE];
};

static void ev_kick(struct events *ev);

/* The only writer of ev->state; a move the header does not list is a bug. */
static void
ev_enter(struct events *ev, enum events_state to)
{
	static const unsigned allowed[] = {
		[EV_IDLE] = 1u << EV_READING | 1u << EV_POSTING,
		[EV_READING] = 1u << EV_POSTING | 1u << EV_IDLE,
		[EV_POSTING] = 1u << EV_IDLE | 1u << EV_BACKOFF,
		[EV_BACKOFF] = 1u << EV_IDLE,
	};

	if (!(allowed[ev->state] & 1u << to))
		SL_PANIC("events: state %d -> %d", (int)ev->state, (int)to);
	ev->state = to;
}

static void
ev_list_init(struct ev_list *l)
{
	memset(l, 0, sizeof(*l));
	l->tail = &l->head;
}

static void
ev_list_push(struct ev_list *l, struct ev_line *x)
{
	x->next = NULL;
	*l->tail = x;
	l->tail = &x->next;
	l->n++;
	l->bytes += x->len;
}

/* Put all of front before l's lines. */
static void
ev_list_prepend(struct ev_list *l, struct ev_list *front)
{
	if (front->head == NULL)
		return;
	*front->tail = l->head;
	if (l->head == NULL)
		l->tail = front->tail;
	l->head = front->head;
	l->n += front->n;
	l->bytes += front->bytes;
	ev_list_init(front);
}

static void
ev_list_free(struct ev_list *l)
{
	struct ev_line *x, *next;

	for (x = l->head; x; x = next) {
		next = x->next;
		free(x);
	}
	ev_list_init(l);
}

static struct ev_line *
ev_line_new(const char *s, size_t n)
{
	struct ev_line *x = xmalloc(sizeof(*x) + n + 1);

	x->len = n;
	memcpy(x->data, s, n);
	x->data[n] = '\0';
	return x;
}

/* ---- the disk spool (worker thread) ---- */

struct ev_job {
	struct events *ev;
	struct ev_list lines;
	int64_t max;		/* READ: lines at most */
	int64_t consumed;	/* READ: bytes taken; ADVANCE: bytes to skip */
	int rc;
};

static int64_t
ev_pos_read(const char *path)
{
	FILE *f = fopen(path, "r");
	long long v = 0;

	if (f == NULL)
		return 0;
	if (fscanf(f, "%lld", &v) != 1)
		v = 0;
	fclose(f);
	return v;
}

static int
ev_pos_write(const char *path, int64_t pos)
{
	char *tmp = xasprintf("%s.tmp", path);
	FILE *f = fopen(tmp, "w");
	int rc = -1;

	if (f != NULL && fprintf(f, "%lld\n", (long long)pos) > 0 &&
	    fflush(f) == 0 && fsync(fileno(f)) == 0)
		rc = 0;
	if (f != NULL && fclose(f) != 0)
		rc = -1;
	if (rc == 0 && rename(tmp, path) != 0)
		rc = -1;
	free(tmp);
	return rc;
}

static void
ev_append_run(void *arg)
{
	struct ev_job *j = arg;
	int fd = open(j->ev->jsonl, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC,
	    0600);
	char *buf, *p;

	j->rc = -1;
	if (fd == -1)
		return;
	p = buf = xmalloc(j->lines.bytes + j->lines.n);
	for (struct ev_line *x = j->lines.head; x; x = x->next) {
		memcpy(p, x->data, x->len);
		p += x->len;
		*p++ = '\n';
	}
	if (write(fd, buf, (size_t)(p - buf)) == p - buf)
		j->rc = 0;
	close(fd);
	free(buf);
}

static void
ev_read_run(void *arg)
{
	struct ev_job *j = arg;
	FILE *f = fopen(j->ev->jsonl, "r");
	int64_t pos = ev_pos_read(j->ev->pos_path);
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;

	j->rc = -1;
	if (f == NULL || fseeko(f, pos, SEEK_SET) != 0)
		goto done;
	while (j->lines.n < (size_t)j->max &&
	    (n = getline(&line, &cap, f)) > 0) {
		j->consumed += n;
		if (line[n - 1] != '\n')
			break;	/* a torn last line (crash mid-append): skip */
		if (n > 1)
			ev_list_push(&j->lines, ev_line_new(line, (size_t)n - 1));
	}
	j->rc = 0;
done:
	if (f != NULL)
		fclose(f);
	free(line);
}

static void
ev_advance_run(void *arg)
{
	struct ev_job *j = arg;
	int64_t pos = ev_pos_read(j->ev->pos_path) + j->consumed;
	struct stat st;

	/* all sent: start the file again */
	if (stat(j->ev->jsonl, &st) == 0 && pos >= st.st_size) {
		if (truncate(j->ev->jsonl, 0) == 0)
			pos = 0;
	}
	j->rc = ev_pos_write(j->ev->pos_path, pos);
}

/* ---- the HTTP side ---- */

static void
ev_append_done(void *arg)
{
	struct ev_job *j = arg;

	if (j->rc != 0) {
		log_warnx("events: cannot write %s: %s; %zu event(s) dropped",
		    j->ev->jsonl, strerror(errno), j->lines.n);
		j->ev->st.dropped += j->lines.n;
		j->ev->disk_bytes -= j->lines.bytes + j->lines.n;
		j->ev->disk_n -= j->lines.n;
	}
	ev_list_free(&j->lines);
	free(j);
}

/* Move memory to the end of the disk spool; past spool_max, drop. */
static void
ev_spill(struct events *ev)
{
	struct ev_job *j;

	if (ev->mem.n == 0)
		return;
	j = xcalloc(1, sizeof(*j));
	j->ev = ev;
	ev_list_init(&j->lines);
	while (ev->mem.head != NULL) {
		struct ev_line *x = ev->mem.head;
		ev->mem.head = x->next;
		if (ev->disk_bytes + x->len + 1 > (uint64_t)ev->conf.spool_max) {
			ev->st.dropped++;
			free(x);
			continue;
		}
		ev->disk_bytes += x->len + 1;
		ev->disk_n++;
		ev_list_push(&j->lines, x);
	}
	ev_list_init(&ev->mem);
	sl_worker_post(ev->w, ev_append_run, ev_append_done, j);
}

static void
ev_later(struct events *ev, int64_t ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	evtimer_add(ev->kick_ev, &tv);
}

static void
ev_advance_done(void *arg)
{
	free(arg);
}

/* A POST ended: ok is 1 for a 2xx. */
static void
ev_posted(struct events *ev, int ok, const char *why)
{
	ev->st.posts++;
	if (ok) {
		ev->st.sent += ev->batch.n;
		if (ev->batch_disk_bytes > 0) {
			struct ev_job *j = xcalloc(1, sizeof(*j));
			j->ev = ev;
			j->consumed = ev->batch_disk_bytes;
			ev->disk_bytes -= (uint64_t)ev->batch_disk_bytes <
			    ev->disk_bytes ? (uint64_t)ev->batch_disk_bytes :
			    ev->disk_bytes;
			ev->disk_n -= ev->batch.n < ev->disk_n ? ev->batch.n :
			    ev->disk_n;
			sl_worker_post(ev->w, ev_advance_run, ev_advance_done, j);
		}
		ev_list_free(&ev->batch);
		if (ev->failing)
			log_ev(LOG_INFO, NULL, "events: webhook answers again",
			    "url", ev->conf.webhook_url, NULL);
		ev->failing = 0;
		ev->backoff_s = 0;
		ev_enter(ev, EV_IDLE);
		ev_kick(ev);
		return;
	}
	ev->st.failures++;
	if (!ev->failing)
		log_ev(LOG_WARNING, NULL, "events: webhook failed, events wait "
		    "on disk", "url", ev->conf.webhook_url, "reason", why, NULL);
	ev->failing = 1;
	/* a batch from memory goes back in front of memory, then to disk */
	if (ev->batch_disk_bytes == 0)
		ev_list_prepend(&ev->mem, &ev->batch);
	else
		ev_list_free(&ev->batch);
	ev_spill(ev);
	ev->backoff_s = ev->backoff_s ? ev->backoff_s * 2 : 1;
	if (ev->backoff_s > ev->conf.retry_max)
		ev->backoff_s = (int)ev->conf.retry_max;
	ev_enter(ev, EV_BACKOFF);
	ev_later(ev, (int64_t)ev->backoff_s * 1000);
}

static void
ev_check_multi(struct events *ev)
{
	CURLMsg *m;
	int left;

	while ((m = curl_multi_info_read(ev->multi, &left)) != NULL) {
		long code = 0;
		char why[CURL_ERROR_SIZE + 32];

		if (m->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &code);
		if (m->data.result != CURLE_OK)
			snprintf(why, sizeof(why), "%s", ev->curl_err[0] ?
			    ev->curl_err : curl_easy_strerror(m->data.result));
		else
			snprintf(why, sizeof(why), "HTTP %ld", code);
		curl_multi_remove_handle(ev->multi, m->easy_handle);
		free(ev->body);
		ev->body = NULL;
		ev_posted(ev, m->data.result == CURLE_OK && code >= 200 &&
		    code < 300, why);
	}
}

static void
ev_sock_cb(evutil_socket_t fd, short what, void *arg)
{
	struct events *ev = arg;
	int running, flags = (what & EV_READ ? CURL_CSELECT_IN : 0) |
	    (what & EV_WRITE ? CURL_CSELECT_OUT : 0);

	curl_multi_socket_action(ev->multi, fd, flags, &running);
	ev_check_multi(ev);
}

static int
ev_curl_sock(CURL *e, curl_socket_t s, int what, void *arg, void *sockp)
{
	struct events *ev = arg;
	struct event *sev = sockp;

	if (sev != NULL) {
		event_free(sev);
		curl_multi_assign(ev->multi, s, NULL);
	}
	if (what == CURL_POLL_REMOVE)
		return 0;
	sev = event_new(ev->base, s, EV_PERSIST | (what & CURL_POLL_IN ?
	    EV_READ : 0) | (what & CURL_POLL_OUT ? EV_WRITE : 0), ev_sock_cb,
	    ev);
	event_add(sev, NULL);
	curl_multi_assign(ev->multi, s, sev);
	return 0;
}

static void
ev_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct events *ev = arg;
	int running;

	curl_multi_socket_action(ev->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	ev_check_multi(ev);
}

static int
ev_curl_timer(CURLM *m, long ms, void *arg)
{
	struct events *ev = arg;
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	if (ms < 0)
		evtimer_del(ev->timer_ev);
	else
		evtimer_add(ev->timer_ev, &tv);
	return 0;
}

static void
ev_post(struct events *ev)
{
	size_t n = 2 + ev->batch.bytes + ev->batch.n;
	char *p;

	p = ev->body = xmalloc(n + 1);
	*p++ = '[';
	for (struct ev_line *x = ev->batch.head; x; x = x->next) {
		if (x != ev->batch.head)
			*p++ = ',';
		memcpy(p, x->data, x->len);
		p += x->len;
	}
	*p++ = ']';
	*p = '\0';
	ev->curl_err[0] = '\0';
	curl_easy_setopt(ev->easy, CURLOPT_POSTFIELDS, ev->body);
	curl_easy_setopt(ev->easy, CURLOPT_POSTFIELDSIZE, (long)(p - ev->body));
	ev_enter(ev, EV_POSTING);
	curl_multi_add_handle(ev->multi, ev->easy);
}

static void
ev_read_done(void *arg)
{
	struct ev_job *j = arg;
	struct events *ev = j->ev;

	if (j->rc != 0 || j->lines.n == 0) {
		/* unreadable or torn: give up on what the counters thought */
		if (j->rc != 0)
			log_warnx("events: cannot read %s", ev->jsonl);
		ev->st.dropped += ev->disk_n;
		ev->disk_bytes = ev->disk_n = 0;
		ev_list_free(&j->lines);
		free(j);
		ev_enter(ev, EV_IDLE);
		ev_kick(ev);
		return;
	}
	ev->batch = j->lines;
	if (ev->batch.head == NULL)
		ev->batch.tail = &ev->batch.head;
	ev->batch_disk_bytes = j->consumed;
	free(j);
	ev_post(ev);
}

/* Start the next POST if there is something to send and nothing in flight. */
static void
ev_kick(struct events *ev)
{
	if (ev->state != EV_IDLE)
		return;
	if (ev->disk_bytes > 0) {
		struct ev_job *j = xcalloc(1, sizeof(*j));
		j->ev = ev;
		ev_list_init(&j->lines);
		j->max = ev->conf.batch_size;
		ev_enter(ev, EV_READING);
		sl_worker_post(ev->w, ev_read_run, ev_read_done, j);
		return;
	}
	if (ev->mem.n == 0)
		return;
	if (ev->mem.n < (size_t)ev->conf.batch_size &&
	    !evtimer_pending(ev->kick_ev, NULL)) {
		ev_later(ev, ev->conf.batch_delay_ms);
		return;
	}
	if (ev->mem.n < (size_t)ev->conf.batch_size)
		return;	/* the delay timer sends it */
	ev_list_init(&ev->batch);
	while (ev->batch.n < (size_t)ev->conf.batch_size && ev->mem.head) {
		struct ev_line *x = ev->mem.head;
		if ((ev->mem.head = x->next) == NULL)
			ev->mem.tail = &ev->mem.head;
		ev->mem.n--;
		ev->mem.bytes -= x->len;
		ev_list_push(&ev->batch, x);
	}
	ev->batch_disk_bytes = 0;
	ev_post(ev);
}

/* The batch delay or the backoff ran out: send what there is. */
static void
ev_kick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct events *ev = arg;
	int64_t save = ev->conf.batch_size;

	if (ev->state == EV_BACKOFF)
		ev_enter(ev, EV_IDLE);
	if (ev->state != EV_IDLE)
		return;
	/* while failing, memory waits on disk (in order) before a retry */
	if (ev->failing)
		ev_spill(ev);
	if (ev->disk_bytes == 0 && ev->mem.n > 0 &&
	    ev->mem.n < (size_t)ev->conf.batch_size) {
		/* a short batch, now */
		ev->conf.batch_size = (int64_t)ev->mem.n;
		ev_kick(ev);
		ev->conf.batch_size = save;
		return;
	}
	ev_kick(ev);
}

void
events_emit(struct events *ev, json_t *e)
{
	char *s;

	if (ev == NULL) {
		json_decref(e);
		return;
	}
	s = json_dumps(e, JSON_COMPACT | JSON_ENSURE_ASCII);
	json_decref(e);
	ev->st.emitted++;
	ev_list_push(&ev->mem, ev_line_new(s, strlen(s)));
	free(s);
	/* order: once anything is on disk, memory follows it there */
	if (ev->mem.bytes > EVENTS_MEM_MAX)
		ev_spill(ev);
	ev_kick(ev);
}

struct events *
events_new(struct event_base *base, const struct events_conf *conf,
    char *err, size_t errlen)
{
	struct events *ev = xcalloc(1, sizeof(*ev));
	struct stat st;
	int64_t pos;

	curl_global_init(CURL_GLOBAL_DEFAULT);
	ev->base = base;
	ev->conf = *conf;
	ev->conf.webhook_url = xstrdup(conf->webhook_url);
	ev->conf.token = conf->token ? xstrdup(conf->token) : NULL;
	if (ev->conf.batch_size < 1)
		ev->conf.batch_size = 1;
	ev->jsonl = xasprintf("%s/events.jsonl", conf->spool_dir);
	ev->pos_path = xasprintf("%s/events.pos", conf->spool_dir);
	ev_list_init(&ev->mem);
	ev_list_init(&ev->batch);
	/* what a previous run left on disk is sent first */
	pos = ev_pos_read(ev->pos_path);
	if (stat(ev->jsonl, &st) == 0 && st.st_size > pos) {
		ev->disk_bytes = (uint64_t)(st.st_size - pos);
		ev->disk_n = 1;	/* a count for stats only; bytes rule */
	}
	ev->w = sl_worker_new(base, "events");
	ev->multi = curl_multi_init();
	ev->easy = curl_easy_init();
	if (ev->w == NULL || ev->multi == NULL || ev->easy == NULL) {
		snprintf(err, errlen, "events: cannot start");
		events_free(ev);
		return NULL;
	}
	ev->timer_ev = evtimer_new(base, ev_timer_cb, ev);
	ev->kick_ev = evtimer_new(base, ev_kick_cb, ev);
	curl_multi_setopt(ev->multi, CURLMOPT_SOCKETFUNCTION, ev_curl_sock);
	curl_multi_setopt(ev->multi, CURLMOPT_SOCKETDATA, ev);
	curl_multi_setopt(ev->multi, CURLMOPT_TIMERFUNCTION, ev_curl_timer);
	curl_multi_setopt(ev->multi, CURLMOPT_TIMERDATA, ev);
	ev->hdrs = curl_slist_append(NULL, "Content-Type: application/json");
	if (ev->conf.token != NULL) {
		char *h = xasprintf("Authorization: Bearer %s", ev->conf.token);
		ev->hdrs = curl_slist_append(ev->hdrs, h);
		free(h);
	}
	curl_easy_setopt(ev->easy, CURLOPT_URL, ev->conf.webhook_url);
	curl_easy_setopt(ev->easy, CURLOPT_HTTPHEADER, ev->hdrs);
	curl_easy_setopt(ev->easy, CURLOPT_TIMEOUT, (long)conf->timeout);
	curl_easy_setopt(ev->easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(ev->easy, CURLOPT_ERRORBUFFER, ev->curl_err);
	curl_easy_setopt(ev->easy, CURLOPT_USERAGENT, "sluice-events");
	curl_easy_setopt(ev->easy, CURLOPT_PROTOCOLS_STR, "http,https");
	ev_kick(ev);
	return ev;
}

void
events_free(struct events *ev)
{
	if (ev == NULL)
		return;
	if (ev->state == EV_POSTING) {
		curl_multi_remove_handle(ev->multi, ev->easy);
		if (ev->batch_disk_bytes == 0)
			ev_list_prepend(&ev->mem, &ev->batch);
	}
	ev_list_free(&ev->batch);
	/* keep what is in memory for the next start */
	if (ev->w != NULL)
		ev_spill(ev);
	sl_worker_free(ev->w);
	ev_list_free(&ev->mem);
	if (ev->timer_ev)
		event_free(ev->timer_ev);
	if (ev->kick_ev)
		event_free(ev->kick_ev);
	if (ev->easy)
		curl_easy_cleanup(ev->easy);
	if (ev->multi)
		curl_multi_cleanup(ev->multi);
	curl_slist_free_all(ev->hdrs);
	free(ev->body);
	free((char *)ev->conf.webhook_url);
	free((char *)ev->conf.token);
	free(ev->jsonl);
	free(ev->pos_path);
	free(ev);
}

void
events_stats_get(const struct events *ev, struct events_stats *out)
{
	*out = ev->st;
	out->queued = ev->mem.n + ev->batch.n + ev->disk_n;
	out->spooled_bytes = ev->disk_bytes;
}
