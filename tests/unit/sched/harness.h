/* SPDX-License-Identifier: MIT */
/*
 * harness.h: the world of the scheduler's unit tests, shared by the test
 * programs of tests/unit/sched (static functions; each program includes it
 * once).
 *
 *  - a real spool (spool_open) in a fresh temporary directory;
 *  - the configuration from conf_load(NULL) (the defaults) with -o style
 *    overrides, and [routes] sending every domain to the peer;
 *  - a real resolver (dns_new) pointed at a port nobody answers on: routes
 *    to address literals never ask it;
 *  - a real scheduler (sched_new) on the test's event_base;
 *  - the peer: a scripted SMTP server on 127.0.0.1 (a free port) on the
 *    same event_base, many connections at once. It answers RCPT by the
 *    address ("bad" -> 550 5.1.1, "later" -> 451 4.7.1, else 250), records
 *    each message it answered at the end of the data, and can hold its
 *    reply to the final dot (hold_dot) until released.
 *  - the log, written to a file in the directory, read back by log_has().
 *
 * Messages enter as sluiced's main.c does it: sched_msg_new() before
 * spool_insert(), sched_msg_commit() from the spool's callback.
 */
#ifndef SCHED_TEST_HARNESS_H
#define SCHED_TEST_HARNESS_H

#include <arpa/inet.h>
#include <ftw.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "conf/conf.h"
#include "dns/dns.h"
#include "log/log.h"
#include "sched/sched.h"
#include "spool/spool.h"
#include "util/util.h"

/* Each program uses some of these. */
#pragma GCC diagnostic ignored "-Wunused-function"

/* ---- the peer ---- */

#define PEER_MAXMSG 256

struct pmsg {
	char *from;
	char *params;		/* MAIL FROM parameters as sent */
	char *rcpts;		/* "a@x,b@y" */
	char *data;		/* as received, dot-stuffing and all */
	size_t len;
	int conn;
};

struct pconn;

struct peer {
	struct evconnlistener *lis;
	int port;
	int nconn, open, peak;	/* connections: all, open now, most open */
	int hold_dot;		/* answer no final dot until released */
	int close_after_mail;	/* hang up when MAIL arrives */
	int accept_later;	/* take "later" recipients too */
	const char *mail_reply;	/* NULL: 250 */
	struct pconn *held[64];	/* connections waiting for their dot reply */
	int nheld;
	struct pmsg msgs[PEER_MAXMSG];
	int nmsg;
	int quits;
	struct pconn *conns;	/* open ones */
};

struct pconn {
	struct pconn *next;
	struct peer *p;
	struct bufferevent *bev;
	int no;
	int in_data;
	char *from;
	char *params;
	char rcpts[1024];
	struct evbuffer *data;
};

static void
pconn_say(struct pconn *pc, const char *s)
{
	evbuffer_add(bufferevent_get_output(pc->bev), s, strlen(s));
}

static void
pconn_free(struct pconn *pc)
{
	struct peer *p = pc->p;

	for (struct pconn **pp = &p->conns; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == pc) {
			*pp = pc->next;
			break;
		}
	}
	for (int i = 0; i < p->nheld; i++) {
		if (p->held[i] == pc) {
			p->held[i] = p->held[--p->nheld];
			break;
		}
	}
	p->open--;
	bufferevent_free(pc->bev);
	evbuffer_free(pc->data);
	free(pc->from);
	free(pc->params);
	free(pc);
}

/* The final dot came: record the message, answer (or hold the answer). */
static void
pconn_dot(struct pconn *pc)
{
	struct peer *p = pc->p;
	struct pmsg *m;
	size_t n = evbuffer_get_length(pc->data);

	if (p->nmsg < PEER_MAXMSG) {
		m = &p->msgs[p->nmsg++];
		m->from = strdup(pc->from ? pc->from : "");
		m->params = strdup(pc->params ? pc->params : "");
		m->rcpts = strdup(pc->rcpts);
		m->len = n;
		m->data = malloc(n + 1);
		evbuffer_remove(pc->data, m->data, n);
		m->data[n] = '\0';
		m->conn = pc->no;
	}
	evbuffer_drain(pc->data, evbuffer_get_length(pc->data));
	pc->rcpts[0] = '\0';
	if (p->hold_dot && p->nheld < (int)SL_ARRAY_LEN(p->held)) {
		p->held[p->nheld++] = pc;
		return;
	}
	pconn_say(pc, "250 2.0.0 Ok: queued\r\n");
}

static void
peer_release(struct peer *p)
{
	p->hold_dot = 0;
	while (p->nheld > 0)
		pconn_say(p->held[--p->nheld], "250 2.0.0 Ok: queued\r\n");
}

static int
pconn_line(struct pconn *pc, const char *line)
{
	struct peer *p = pc->p;

	if (strncasecmp(line, "EHLO", 4) == 0) {
		pconn_say(pc, "250-peer.test\r\n250-PIPELINING\r\n"
		    "250-8BITMIME\r\n250-SIZE 100000000\r\n250 ENHANCEDSTATUSCODES\r\n");
	} else if (strncasecmp(line, "HELO", 4) == 0) {
		pconn_say(pc, "250 peer.test\r\n");
	} else if (strncasecmp(line, "MAIL FROM:", 10) == 0) {
		if (p->close_after_mail)
			return -1;
		const char *s = strchr(line, '<'), *e = s ? strchr(s, '>') : NULL;
		free(pc->from);
		pc->from = s && e ? strndup(s + 1, (size_t)(e - s - 1)) :
		    strdup("?");
		free(pc->params);
		pc->params = strdup(e ? e + 1 : "");
		pc->rcpts[0] = '\0';
		pconn_say(pc, p->mail_reply ? p->mail_reply : "250 2.1.0 Ok\r\n");
	} else if (strncasecmp(line, "RCPT TO:", 8) == 0) {
		const char *s = strchr(line, '<'), *e = s ? strchr(s, '>') : NULL;
		if (strstr(line, "bad") != NULL) {
			pconn_say(pc, "550 5.1.1 No such user\r\n");
		} else if (strstr(line, "later") != NULL && !p->accept_later) {
			pconn_say(pc, "451 4.7.1 Try again later\r\n");
		} else {
			size_t n = strlen(pc->rcpts);
			if (s && e && n + (size_t)(e - s) + 2 < sizeof(pc->rcpts))
				snprintf(pc->rcpts + n, sizeof(pc->rcpts) - n,
				    "%s%.*s", n ? "," : "", (int)(e - s - 1),
				    s + 1);
			pconn_say(pc, "250 2.1.5 Ok\r\n");
		}
	} else if (strncasecmp(line, "DATA", 4) == 0) {
		if (pc->rcpts[0] == '\0') {
			pconn_say(pc, "554 5.5.1 No valid recipients\r\n");
		} else {
			pc->in_data = 1;
			pconn_say(pc, "354 go ahead\r\n");
		}
	} else if (strncasecmp(line, "RSET", 4) == 0) {
		pc->rcpts[0] = '\0';
		pconn_say(pc, "250 2.0.0 Ok\r\n");
	} else if (strncasecmp(line, "QUIT", 4) == 0) {
		p->quits++;
		pconn_say(pc, "221 2.0.0 Bye\r\n");
	} else {
		pconn_say(pc, "502 5.5.2 What?\r\n");
	}
	return 0;
}

static void
pconn_read(struct bufferevent *bev, void *arg)
{
	struct pconn *pc = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	char *line;

	for (;;) {
		if (pc->in_data) {
			struct evbuffer_ptr e = evbuffer_search(in, "\r\n.\r\n",
			    5, NULL);
			size_t dl = evbuffer_get_length(pc->data);
			/* ".\r\n" right after DATA: an empty message */
			if (dl == 0 && evbuffer_get_length(in) >= 3 &&
			    memcmp(evbuffer_pullup(in, 3), ".\r\n", 3) == 0) {
				evbuffer_drain(in, 3);
			} else if (e.pos >= 0) {
				evbuffer_remove_buffer(in, pc->data,
				    (size_t)e.pos + 2);
				evbuffer_drain(in, 3);
			} else {
				return;
			}
			pc->in_data = 0;
			pconn_dot(pc);
			continue;
		}
		line = evbuffer_readln(in, NULL, EVBUFFER_EOL_CRLF_STRICT);
		if (line == NULL)
			return;
		int rc = pconn_line(pc, line);
		free(line);
		if (rc != 0) {
			pconn_free(pc);
			return;
		}
	}
}

static void
pconn_event(struct bufferevent *bev, short what, void *arg)
{
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
		pconn_free(arg);
}

static void
peer_accept(struct evconnlistener *lis, evutil_socket_t fd,
    struct sockaddr *sa, int len, void *arg)
{
	struct peer *p = arg;
	struct pconn *pc = calloc(1, sizeof(*pc));

	pc->p = p;
	pc->next = p->conns;
	p->conns = pc;
	pc->no = ++p->nconn;
	pc->data = evbuffer_new();
	if (++p->open > p->peak)
		p->peak = p->open;
	pc->bev = bufferevent_socket_new(evconnlistener_get_base(lis), fd,
	    BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(pc->bev, pconn_read, NULL, pconn_event, pc);
	bufferevent_enable(pc->bev, EV_READ | EV_WRITE);
	pconn_say(pc, "220 peer.test ESMTP\r\n");
}

static void
peer_start(struct event_base *base, struct peer *p)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t slen = sizeof(sin);

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	p->lis = evconnlistener_new_bind(base, peer_accept, p,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 64,
	    (struct sockaddr *)&sin, sizeof(sin));
	assert_non_null(p->lis);
	getsockname(evconnlistener_get_fd(p->lis), (struct sockaddr *)&sin,
	    &slen);
	p->port = ntohs(sin.sin_port);
}

static void
peer_stop(struct peer *p)
{
	if (p->lis != NULL)
		evconnlistener_free(p->lis);
	p->lis = NULL;
	while (p->conns != NULL)
		pconn_free(p->conns);
	for (int i = 0; i < p->nmsg; i++) {
		free(p->msgs[i].from);
		free(p->msgs[i].params);
		free(p->msgs[i].rcpts);
		free(p->msgs[i].data);
	}
	p->nmsg = 0;
}

/* Messages the peer took from <> (DSNs). */
static int
peer_dsns(const struct peer *p)
{
	int n = 0;

	for (int i = 0; i < p->nmsg; i++)
		n += p->msgs[i].from[0] == '\0';
	return n;
}

/* ---- the world ---- */

struct world {
	struct event_base *base;
	char dir[64];
	char logpath[128];
	struct sl_conf *conf;
	struct spool *sp;
	struct dns *dns;
	struct sched *s;
	struct peer peer;
	int committed;		/* messages the spool took */
	int failed;		/* messages it refused */
};

static int
world_rm(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

/* A port nothing listens on: bound, then closed. */
static int
world_closed_port(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t slen = sizeof(sin);
	int fd = socket(AF_INET, SOCK_DGRAM, 0), port;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	bind(fd, (struct sockaddr *)&sin, sizeof(sin));
	getsockname(fd, (struct sockaddr *)&sin, &slen);
	port = ntohs(sin.sin_port);
	close(fd);
	return port;
}

static void
world_set(struct world *w, const char *fmt, ...)
{
	char spec[512], err[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(spec, sizeof(spec), fmt, ap);
	va_end(ap);
	if (conf_override(w->conf, spec, err, sizeof(err)) != 0)
		fail_msg("%s", err);
}

/* The parts before the scheduler: settings may change until world_start. */
static struct world *
world_new(void)
{
	struct world *w = calloc(1, sizeof(*w));
	char err[256];

	w->base = event_base_new();
	strcpy(w->dir, "/tmp/sluice-sched-XXXXXX");
	assert_non_null(mkdtemp(w->dir));
	snprintf(w->logpath, sizeof(w->logpath), "%s/log", w->dir);
	assert_int_equal(log_open(w->logpath, 0, "debug"), 0);
	w->conf = conf_load(NULL, err, sizeof(err));
	assert_non_null(w->conf);
	peer_start(w->base, &w->peer);
	world_set(w, "server.hostname=mta.sched.test");
	world_set(w, "routes.*=[127.0.0.1]:%d", w->peer.port);
	world_set(w, "delivery.idle_timeout=1s");
	world_set(w, "delivery.retry_initial=1s");
	world_set(w, "delivery.retry_max=2s");
	world_set(w, "delivery.connect_timeout=2s");
	world_set(w, "delivery.command_timeout=2s");
	world_set(w, "delivery.data_timeout=2s");
	return w;
}

static void
world_start(struct world *w)
{
	char err[256], servers[64];

	snprintf(servers, sizeof(servers), "127.0.0.1:%d", world_closed_port());
	w->sp = spool_open(w->dir, w->base, err, sizeof(err));
	if (w->sp == NULL)
		fail_msg("spool_open: %s", err);
	w->dns = dns_new(w->base, servers, 500, err, sizeof(err));
	assert_non_null(w->dns);
	w->s = sched_new(w->base, w->conf, w->sp, w->dns);
}

/* Stop the scheduler and the spool as sluiced does, keep the directory. */
static void
world_stop(struct world *w)
{
	if (w->s == NULL)
		return;
	sched_stop(w->s);
	spool_close(w->sp);
	sched_free(w->s);
	dns_free(w->dns);
	w->s = NULL;
	w->sp = NULL;
	w->dns = NULL;
}

/* A restart: a new spool and scheduler on the same directory, recovered. */
static long
world_restart(struct world *w)
{
	long n;

	world_stop(w);
	world_start(w);
	n = spool_recover(w->sp, sched_recover, w->s);
	assert_true(n >= 0);
	return n;
}

static void
world_free(struct world *w)
{
	world_stop(w);
	peer_stop(&w->peer);
	conf_free(w->conf);
	log_flush();
	nftw(w->dir, world_rm, 16, FTW_DEPTH | FTW_PHYS);
	event_base_free(w->base);
	free(w);
}

static void
world_guard(evutil_socket_t fd, short what, void *arg)
{
	*(int *)arg = 1;
}

/* Run the loop until pred(w) is true; fails after secs seconds. */
static void
world_run_until(struct world *w, int (*pred)(struct world *), int secs,
    const char *what)
{
	int expired = 0;
	struct event *t = evtimer_new(w->base, world_guard, &expired);
	struct timeval tv = { secs, 0 };

	evtimer_add(t, &tv);
	while (!pred(w) && !expired) {
		struct timeval step = { 0, 20000 };
		event_base_loopexit(w->base, &step);
		event_base_loop(w->base, EVLOOP_ONCE);
	}
	event_free(t);
	if (!pred(w))
		fail_msg("waited %d s for %s", secs, what);
}

/* Run the loop for ms milliseconds. */
static void
world_run_for(struct world *w, int ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	event_base_loopexit(w->base, &tv);
	event_base_dispatch(w->base);
}

struct world_pending {
	struct world *w;
	struct sched_msg *m;
};

static void
world_stored(void *arg, enum spool_status st)
{
	struct world_pending *p = arg;

	if (st == SPOOL_OK) {
		p->w->committed++;
		sched_msg_commit(p->w->s, p->m);
	} else {
		p->w->failed++;
		sched_msg_abort(p->w->s, p->m);
	}
	free(p);
}

/*
 * Queue a message from sender to the comma-separated rcpts with body
 * (CRLF lines, no Received: header) as smtpd would; returns its MID. The
 * scheduler gets it once the spool committed it.
 */
static uint64_t
world_submit(struct world *w, const char *sender, const char *rcpts,
    const char *body, uint8_t notify)
{
	struct spool_msg *m = xcalloc(1, sizeof(*m));
	struct world_pending *p = xcalloc(1, sizeof(*p));
	char *list = xstrdup(rcpts), *save = NULL;

	m->mid = spool_mid_next(w->sp);
	m->arrival = sl_now_us() / 1000000;
	m->sender = xstrdup(sender);
	m->client_addr = xstrdup("127.0.0.1");
	m->helo = xstrdup("client.sched.test");
	m->body = evbuffer_new();
	evbuffer_add(m->body, body, strlen(body));
	m->size = strlen(body);
	for (char *a = strtok_r(list, ",", &save); a != NULL;
	    a = strtok_r(NULL, ",", &save)) {
		m->rcpts = xrealloc(m->rcpts, (m->nrcpt + 1) * sizeof(*m->rcpts));
		memset(&m->rcpts[m->nrcpt], 0, sizeof(*m->rcpts));
		m->rcpts[m->nrcpt].rid = (uint32_t)m->nrcpt;
		m->rcpts[m->nrcpt].addr = xstrdup(a);
		m->rcpts[m->nrcpt].notify = notify;
		m->nrcpt++;
	}
	free(list);
	p->w = w;
	p->m = sched_msg_new(w->s, m);
	spool_insert(w->sp, m, world_stored, p);
	return m->mid;
}

/* The number of messages the scheduler holds. */
static uint64_t
world_queued(struct world *w)
{
	struct sched_stats st;

	sched_stats_get(w->s, &st);
	return st.messages;
}

static int
world_empty(struct world *w)
{
	return world_queued(w) == 0;
}

/* The whole log so far; free(). */
static char *
world_log(struct world *w)
{
	FILE *f;
	long n;
	char *s;

	log_flush();
	f = fopen(w->logpath, "r");
	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	s = malloc((size_t)n + 1);
	n = (long)fread(s, 1, (size_t)n, f);
	s[n] = '\0';
	fclose(f);
	return s;
}

/* How often needle occurs in the log. */
static int
world_log_count(struct world *w, const char *needle)
{
	char *log = world_log(w), *p = log;
	int n = 0;

	while ((p = strstr(p, needle)) != NULL) {
		n++;
		p += strlen(needle);
	}
	free(log);
	return n;
}

#endif
