/* SPDX-License-Identifier: MIT */
/*
 * pop3.c: the sink's POP3 server (--pop3 ADDR): RFC 1939 (USER, PASS,
 * STAT, LIST, UIDL, RETR, TOP, DELE, RSET, NOOP, QUIT) with CAPA and
 * response codes from RFC 2449, over the captured Maildir, so a test can
 * fetch what an application sent.
 *
 * The maildrop is every captured message, as it was when PASS succeeded
 * (message numbers stay fixed for the session, RFC 1939 5). Credentials
 * are those of --auth; without any, every user name and password is
 * taken. DELE marks; QUIT in the TRANSACTION state removes what is marked
 * (the UPDATE state); a session that ends otherwise removes nothing.
 *
 * States (pop3_enter is the only writer of s->state):
 *   AUTH -(PASS right)-> TRANS
 *   TRANS -(RETR, TOP, LIST, UIDL: a multi-line answer)-> SEND
 *   SEND -(its last line queued)-> TRANS
 *   any -(QUIT, timeout, errors, a line too long, disconnect, stop)->
 *        CLOSING
 * CLOSING is terminal: nothing more is read, and the session is freed once
 * its last reply is written (or the write timeout fires) and no read of a
 * file is in flight on the worker (s->inflight).
 *
 * Bounds per client, as on the SMTP side: a line is at most
 * POP3_LINE_MAX bytes (RFC 2449 4: 255 with CRLF; longer closes with
 * -ERR); at most POP3_MAX_ERRORS bad commands and POP3_MAX_AUTH failed
 * PASS; an idle client is dropped after --pop3-timeout (RFC 1939 3: at
 * least 10 minutes by default). Answers are made in slices: a message is
 * read from its file POP3_CHUNK bytes at a time on the I/O worker, and
 * nothing more is read or made while more than POP3_OUT_MAX bytes wait
 * for the client, so one that never reads costs its socket buffers and a
 * slice, and meets the write timeout.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netdb.h>
#include <netinet/in.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "conf/conf.h"
#include "log/log.h"
#include "sink/pop3.h"
#include "sink/sink_int.h"
#include "util/util.h"
#include "util/worker.h"

#define POP3_LINE_MAX 512
#define POP3_OUT_MAX (64 * 1024)
#define POP3_CHUNK (64 * 1024)
#define POP3_MAX_ERRORS 20
#define POP3_MAX_AUTH 3
#define POP3_MAX_SESSIONS 1000

enum pop3_state {
	POP3_ST_AUTH,
	POP3_ST_TRANS,
	POP3_ST_SEND,
	POP3_ST_CLOSING,
};

static const char *const pop3_state_names[] = {
	[POP3_ST_AUTH] = "AUTH", [POP3_ST_TRANS] = "TRANS",
	[POP3_ST_SEND] = "SEND", [POP3_ST_CLOSING] = "CLOSING",
};

#define B(st) (1u << POP3_ST_##st)
static const unsigned pop3_moves[] = {
	[POP3_ST_AUTH] = B(TRANS) | B(CLOSING),
	[POP3_ST_TRANS] = B(SEND) | B(CLOSING),
	[POP3_ST_SEND] = B(TRANS) | B(CLOSING),
	[POP3_ST_CLOSING] = 0,
};
#undef B

/* One message of a session's maildrop. */
struct pop3_msg {
	char *id;		/* the Maildir name */
	uint64_t size;
	int deleted;		/* DELE: removed at QUIT */
};

/* What a SEND state is sending. */
enum pop3_send { POP3_SEND_FILE, POP3_SEND_LIST, POP3_SEND_UIDL };

struct pop3_session {
	struct pop3_session *next, **prevp;
	struct sink_pop3 *srv;
	struct bufferevent *bev;
	uint64_t id;
	char peer[64];
	enum pop3_state state;
	char *user;		/* USER, until PASS */
	int errors, auth_failures;
	struct pop3_msg *msgs;
	size_t nmsgs;
	/* SEND */
	enum pop3_send send;
	size_t cursor;		/* the listing's next message */
	struct pop3_msg *msg;	/* the message being sent */
	int fd;
	off_t off;
	struct sink_pop3_out out;
	int inflight;		/* a read on the worker */
	/* what the worker read */
	char *chunk;
	ssize_t chunk_len;	/* -1: the read failed (chunk_errno) */
	int chunk_errno;
};

struct sink_pop3 {
	struct sink *k;
	struct evconnlistener *lis;
	int port;
	struct pop3_session *sessions;
	size_t nsessions;
	uint64_t next_id;
	struct timeval timeout;
};

static void pop3_input(struct pop3_session *s);
static void pop3_send_more(struct pop3_session *s);

static int
pop3_enter(struct pop3_session *s, enum pop3_state to)
{
	enum pop3_state from = s->state;

	if (from == POP3_ST_CLOSING)
		return 0;
	if (SL_NEVER(!(pop3_moves[from] & (1u << to))))
		return 0;
	if (log_enabled(LOG_DEBUG))
		log_debug("sink: POP3 %llu state %s -> %s",
		    (unsigned long long)s->id, pop3_state_names[from],
		    pop3_state_names[to]);
	s->state = to;
	return 1;
}

static void
pop3_reply(struct pop3_session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
pop3_reply(struct pop3_session *s, const char *fmt, ...)
{
	struct evbuffer *out = bufferevent_get_output(s->bev);
	va_list ap;

	va_start(ap, fmt);
	evbuffer_add_vprintf(out, fmt, ap);
	va_end(ap);
	evbuffer_add(out, "\r\n", 2);
}

static size_t
pop3_pending(struct pop3_session *s)
{
	return evbuffer_get_length(bufferevent_get_output(s->bev));
}

static void
pop3_free(struct pop3_session *s, const char *why)
{
	if (SL_NEVER(s->inflight))
		return;
	log_info("sink: POP3 %llu closed (%s)", (unsigned long long)s->id,
	    why);
	*s->prevp = s->next;
	if (s->next != NULL)
		s->next->prevp = s->prevp;
	s->srv->nsessions--;
	if (s->fd >= 0)
		close(s->fd);
	bufferevent_free(s->bev);
	for (size_t i = 0; i < s->nmsgs; i++)
		free(s->msgs[i].id);
	free(s->msgs);
	free(s->user);
	free(s->chunk);
	free(s);
}

/*
 * Free s if nothing holds it: no read in flight, and its last reply out
 * or no longer being written (the connection failed or timed out).
 */
static void
pop3_maybe_free(struct pop3_session *s, const char *why)
{
	if (s->state == POP3_ST_CLOSING && !s->inflight &&
	    (pop3_pending(s) == 0 ||
	    !(bufferevent_get_enabled(s->bev) & EV_WRITE)))
		pop3_free(s, why);
}

/* Queue reply (may be NULL) as the last and close once it is written. */
static void
pop3_close(struct pop3_session *s, const char *reply, const char *why)
{
	if (s->state == POP3_ST_CLOSING)
		return;
	if (reply != NULL)
		pop3_reply(s, "%s", reply);
	log_info("sink: POP3 %llu closing (%s)", (unsigned long long)s->id,
	    why);
	pop3_enter(s, POP3_ST_CLOSING);
	bufferevent_disable(s->bev, EV_READ);
	bufferevent_set_timeouts(s->bev, NULL, &(struct timeval){ 10, 0 });
	bufferevent_enable(s->bev, EV_WRITE);
	pop3_maybe_free(s, why);
}

/* A bad command: -ERR, and the session ends after POP3_MAX_ERRORS. */
static void
pop3_error(struct pop3_session *s, const char *text)
{
	if (++s->errors >= POP3_MAX_ERRORS) {
		pop3_close(s, "-ERR too many errors, closing", "too many errors");
		return;
	}
	pop3_reply(s, "-ERR %s", text);
}

/* ---- the maildrop ---- */

static void
pop3_maildrop_load(struct pop3_session *s)
{
	json_t *msgs = s->srv->k->msgs, *m;
	size_t i;

	s->nmsgs = json_array_size(msgs);
	s->msgs = xcalloc(s->nmsgs + 1, sizeof(*s->msgs));
	json_array_foreach(msgs, i, m) {
		s->msgs[i].id = xstrdup(json_string_value(json_object_get(m,
		    "id")));
		s->msgs[i].size = (uint64_t)json_integer_value(
		    json_object_get(m, "size"));
	}
}

/* Messages not marked deleted, and their octets. */
static size_t
pop3_stat(struct pop3_session *s, uint64_t *octets)
{
	size_t n = 0;

	*octets = 0;
	for (size_t i = 0; i < s->nmsgs; i++) {
		if (s->msgs[i].deleted)
			continue;
		n++;
		*octets += s->msgs[i].size;
	}
	return n;
}

/* The message numbered by arg (1-based), or NULL after an -ERR. */
static struct pop3_msg *
pop3_msg_arg(struct pop3_session *s, const char *arg)
{
	char *end;
	unsigned long long n;

	if (*arg < '0' || *arg > '9' || (n = strtoull(arg, &end, 10), *end) ||
	    n == 0 || n > s->nmsgs) {
		pop3_error(s, "no such message");
		return NULL;
	}
	if (s->msgs[n - 1].deleted) {
		pop3_error(s, "message already deleted");
		return NULL;
	}
	return &s->msgs[n - 1];
}

/* ---- commands ---- */

static void
pop3_cmd_capa(struct pop3_session *s)
{
	pop3_reply(s, "+OK Capability list follows");
	pop3_reply(s, "USER");
	pop3_reply(s, "TOP");
	pop3_reply(s, "UIDL");
	pop3_reply(s, "RESP-CODES");
	pop3_reply(s, "AUTH-RESP-CODE");
	pop3_reply(s, "PIPELINING");
	pop3_reply(s, "EXPIRE NEVER");
	pop3_reply(s, "IMPLEMENTATION sluice-sink");
	pop3_reply(s, ".");
}

static void
pop3_cmd_pass(struct pop3_session *s, const char *pass)
{
	struct sink *k = s->srv->k;
	uint64_t octets;
	size_t n;

	if (s->user == NULL) {
		pop3_error(s, "USER first");
		return;
	}
	for (char *c = s->user; *c; c++)
		if ((unsigned char)*c < 0x21 || *c == 0x7f)
			*c = '?';	/* it goes into the log */
	if (!sink_user_ok(k, s->user, pass)) {
		log_info("sink: POP3 %llu user=%s authentication failed",
		    (unsigned long long)s->id, s->user);
		s->user = (free(s->user), NULL);
		if (++s->auth_failures >= POP3_MAX_AUTH)
			pop3_close(s, "-ERR [AUTH] Invalid user name or "
			    "password, closing", "authentication failures");
		else
			pop3_reply(s, "-ERR [AUTH] Invalid user name or "
			    "password");
		return;
	}
	log_info("sink: POP3 %llu user=%s logged in", (unsigned long long)s->id,
	    s->user);
	pop3_maildrop_load(s);
	pop3_enter(s, POP3_ST_TRANS);
	n = pop3_stat(s, &octets);
	pop3_reply(s, "+OK maildrop has %zu messages (%llu octets)", n,
	    (unsigned long long)octets);
}

/* LIST or UIDL: one message, or the listing of all (sent in slices). */
static void
pop3_cmd_listing(struct pop3_session *s, const struct sink_pop3_cmd *c,
    enum pop3_send what)
{
	struct pop3_msg *m;
	uint64_t octets;
	char uid[SINK_POP3_UIDMAX + 1];

	if (c->nargs == 1) {
		if ((m = pop3_msg_arg(s, c->args[0])) == NULL)
			return;
		if (what == POP3_SEND_LIST) {
			pop3_reply(s, "+OK %zu %llu", (size_t)(m - s->msgs) + 1,
			    (unsigned long long)m->size);
		} else {
			sink_pop3_uid(m->id, uid, sizeof(uid));
			pop3_reply(s, "+OK %zu %s", (size_t)(m - s->msgs) + 1,
			    uid);
		}
		return;
	}
	if (what == POP3_SEND_LIST) {
		size_t n = pop3_stat(s, &octets);
		pop3_reply(s, "+OK %zu messages (%llu octets)", n,
		    (unsigned long long)octets);
	} else
		pop3_reply(s, "+OK unique-id listing follows");
	s->send = what;
	s->cursor = 0;
	pop3_enter(s, POP3_ST_SEND);
	pop3_send_more(s);
}

/* ---- reading a message on the worker ---- */

static void
pop3_read_run(void *arg)
{
	struct pop3_session *s = arg;
	ssize_t n;

	s->chunk_len = -1;
	if (s->fd < 0) {
		char *path = xasprintf("%s/new/%s", s->srv->k->maildir,
		    s->msg->id);
		s->fd = open(path, O_RDONLY | O_CLOEXEC);
		free(path);
		if (s->fd < 0) {
			s->chunk_errno = errno;
			return;
		}
	}
	do
		n = pread(s->fd, s->chunk, POP3_CHUNK, s->off);
	while (n < 0 && errno == EINTR);
	s->chunk_errno = errno;
	s->chunk_len = n;
}

/* The message is out (or cannot be): back to reading commands. */
static void
pop3_send_done(struct pop3_session *s)
{
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
	s->msg = NULL;
	pop3_enter(s, POP3_ST_TRANS);
	pop3_input(s);
}

static void
pop3_read_done(void *arg)
{
	struct pop3_session *s = arg;
	int first = s->off == 0;

	s->inflight = 0;
	if (s->state == POP3_ST_CLOSING) {
		pop3_maybe_free(s, "closed");
		return;
	}
	if (s->chunk_len < 0) {
		log_warnx("sink: POP3 %llu %s: %s", (unsigned long long)s->id,
		    s->msg->id, strerror(s->chunk_errno));
		if (!first) {
			/* half an answer cannot be taken back */
			pop3_close(s, NULL, "message unreadable");
			return;
		}
		pop3_reply(s, "-ERR [SYS/TEMP] message %zu cannot be read: %s",
		    (size_t)(s->msg - s->msgs) + 1, s->chunk_errno == ENOENT ?
		    "it was removed" : strerror(s->chunk_errno));
		pop3_send_done(s);
		return;
	}
	if (first)
		pop3_reply(s, "+OK %llu octets", (unsigned long long)
		    s->msg->size);
	sink_pop3_stuff(&s->out, s->chunk, (size_t)s->chunk_len,
	    bufferevent_get_output(s->bev));
	s->off += s->chunk_len;
	if (s->chunk_len == 0 || s->out.done) {
		sink_pop3_end(&s->out, bufferevent_get_output(s->bev));
		pop3_send_done(s);
		return;
	}
	pop3_send_more(s);
}

/* RETR (lines -1) or TOP. */
static void
pop3_cmd_retr(struct pop3_session *s, struct pop3_msg *m, long lines)
{
	s->send = POP3_SEND_FILE;
	s->msg = m;
	s->off = 0;
	sink_pop3_out_init(&s->out, lines);
	if (s->chunk == NULL)
		s->chunk = xmalloc(POP3_CHUNK);
	pop3_enter(s, POP3_ST_SEND);
	pop3_send_more(s);
}

/*
 * Go on with the answer being sent while the client keeps up: the next
 * slice of a listing, or the next chunk of the file from the worker.
 * The write callback calls this again once the client has read.
 */
static void
pop3_send_more(struct pop3_session *s)
{
	char uid[SINK_POP3_UIDMAX + 1];

	if (s->state != POP3_ST_SEND || s->inflight ||
	    pop3_pending(s) > POP3_OUT_MAX)
		return;
	if (s->send == POP3_SEND_FILE) {
		if (s->srv->k->io == NULL) {
			pop3_close(s, "-ERR [SYS/TEMP] shutting down",
			    "shutdown");
			return;
		}
		s->inflight = 1;
		sl_worker_post(s->srv->k->io, pop3_read_run, pop3_read_done, s);
		return;
	}
	for (; s->cursor < s->nmsgs && pop3_pending(s) <= POP3_OUT_MAX;
	    s->cursor++) {
		struct pop3_msg *m = &s->msgs[s->cursor];
		if (m->deleted)
			continue;
		if (s->send == POP3_SEND_LIST) {
			pop3_reply(s, "%zu %llu", s->cursor + 1,
			    (unsigned long long)m->size);
		} else {
			sink_pop3_uid(m->id, uid, sizeof(uid));
			pop3_reply(s, "%zu %s", s->cursor + 1, uid);
		}
	}
	if (s->cursor == s->nmsgs) {
		pop3_reply(s, ".");
		pop3_enter(s, POP3_ST_TRANS);
		pop3_input(s);
	}
}

static void
pop3_cmd_top(struct pop3_session *s, const struct sink_pop3_cmd *c)
{
	struct pop3_msg *m;
	char *end;
	long n;

	if (c->nargs != 2) {
		pop3_error(s, "TOP msg n");
		return;
	}
	if ((m = pop3_msg_arg(s, c->args[0])) == NULL)
		return;
	n = strtol(c->args[1], &end, 10);
	if (*c->args[1] < '0' || *c->args[1] > '9' || *end != '\0' || n < 0) {
		pop3_error(s, "TOP msg n: n is a number of lines");
		return;
	}
	pop3_cmd_retr(s, m, n);
}

/* QUIT in TRANSACTION: the UPDATE state, RFC 1939 6. */
static void
pop3_cmd_quit_update(struct pop3_session *s)
{
	struct sink *k = s->srv->k;
	size_t removed = 0;

	for (size_t i = 0; i < s->nmsgs; i++)
		if (s->msgs[i].deleted && sink_store_delete(k,
		    s->msgs[i].id) == 0)
			removed++;
	log_info("sink: POP3 %llu removed %zu messages",
	    (unsigned long long)s->id, removed);
	pop3_close(s, "+OK sluice sink POP3 server signing off", "QUIT");
}

static void
pop3_cmd_trans(struct pop3_session *s, const struct sink_pop3_cmd *c,
    const char *kw)
{
	struct pop3_msg *m;
	uint64_t octets;
	size_t n;

	if (strcmp(kw, "STAT") == 0 && c->nargs == 0) {
		n = pop3_stat(s, &octets);
		pop3_reply(s, "+OK %zu %llu", n, (unsigned long long)octets);
	} else if (strcmp(kw, "LIST") == 0 && c->nargs <= 1) {
		pop3_cmd_listing(s, c, POP3_SEND_LIST);
	} else if (strcmp(kw, "UIDL") == 0 && c->nargs <= 1) {
		pop3_cmd_listing(s, c, POP3_SEND_UIDL);
	} else if (strcmp(kw, "RETR") == 0 && c->nargs == 1) {
		if ((m = pop3_msg_arg(s, c->args[0])) != NULL)
			pop3_cmd_retr(s, m, -1);
	} else if (strcmp(kw, "TOP") == 0) {
		pop3_cmd_top(s, c);
	} else if (strcmp(kw, "DELE") == 0 && c->nargs == 1) {
		if ((m = pop3_msg_arg(s, c->args[0])) != NULL) {
			m->deleted = 1;
			pop3_reply(s, "+OK message %zu deleted",
			    (size_t)(m - s->msgs) + 1);
		}
	} else if (strcmp(kw, "RSET") == 0 && c->nargs == 0) {
		for (size_t i = 0; i < s->nmsgs; i++)
			s->msgs[i].deleted = 0;
		n = pop3_stat(s, &octets);
		pop3_reply(s, "+OK maildrop has %zu messages (%llu octets)", n,
		    (unsigned long long)octets);
	} else if (strcmp(kw, "NOOP") == 0 && c->nargs == 0) {
		pop3_reply(s, "+OK");
	} else if (strcmp(kw, "QUIT") == 0 && c->nargs == 0) {
		pop3_cmd_quit_update(s);
	} else {
		pop3_error(s, "unknown command or wrong arguments");
	}
}

static void
pop3_cmd_auth(struct pop3_session *s, const struct sink_pop3_cmd *c,
    const char *kw, const char *line)
{
	if (strcmp(kw, "USER") == 0 && c->nargs == 1) {
		free(s->user);
		s->user = xstrdup(c->args[0]);
		pop3_reply(s, "+OK send PASS");
	} else if (strcmp(kw, "PASS") == 0) {
		pop3_cmd_pass(s, sink_pop3_rest(line));
	} else if (strcmp(kw, "QUIT") == 0 && c->nargs == 0) {
		pop3_close(s, "+OK sluice sink POP3 server signing off",
		    "QUIT");
	} else {
		pop3_error(s, s->user ? "PASS expected" :
		    "USER and PASS first");
	}
}

/* One command line (without CRLF; changed in place). */
static void
pop3_command(struct pop3_session *s, char *line)
{
	struct sink_pop3_cmd c;
	char *copy = xstrdup(line), kw[5];

	if (sink_pop3_parse(line, &c) != 0) {
		pop3_error(s, "syntax error");
		goto done;
	}
	for (size_t i = 0; i < sizeof(kw); i++)
		kw[i] = (char)(c.keyword[i] >= 'a' && c.keyword[i] <= 'z' ?
		    c.keyword[i] - 32 : c.keyword[i]);
	if (strcmp(kw, "CAPA") == 0 && c.nargs == 0)
		pop3_cmd_capa(s);
	else if (s->state == POP3_ST_AUTH)
		pop3_cmd_auth(s, &c, kw, copy);
	else
		pop3_cmd_trans(s, &c, kw);
done:
	explicit_bzero(copy, strlen(copy));
	free(copy);
}

/*
 * Run the complete lines buffered while the state takes commands and the
 * client reads its answers; then read more if it may.
 */
static void
pop3_input(struct pop3_session *s)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);
	size_t n;
	char *line;

	while ((s->state == POP3_ST_AUTH || s->state == POP3_ST_TRANS) &&
	    pop3_pending(s) <= POP3_OUT_MAX) {
		line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF);
		if (line == NULL) {
			if (evbuffer_get_length(in) > POP3_LINE_MAX)
				pop3_close(s, "-ERR line too long, closing",
				    "line too long");
			break;
		}
		if (n > POP3_LINE_MAX)
			pop3_close(s, "-ERR line too long, closing",
			    "line too long");
		else
			pop3_command(s, line);
		explicit_bzero(line, n);
		free(line);
	}
	if ((s->state == POP3_ST_AUTH || s->state == POP3_ST_TRANS) &&
	    pop3_pending(s) <= POP3_OUT_MAX)
		bufferevent_enable(s->bev, EV_READ);
	else
		bufferevent_disable(s->bev, EV_READ);
	if (s->state == POP3_ST_CLOSING)
		pop3_maybe_free(s, "closed");
}

static void
pop3_read_cb(struct bufferevent *bev, void *arg)
{
	pop3_input(arg);
}

static void
pop3_write_cb(struct bufferevent *bev, void *arg)
{
	struct pop3_session *s = arg;

	if (s->state == POP3_ST_CLOSING)
		pop3_maybe_free(s, "closed");
	else if (s->state == POP3_ST_SEND)
		pop3_send_more(s);
	else
		pop3_input(s);
}

static void
pop3_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct pop3_session *s = arg;
	const char *why = what & BEV_EVENT_TIMEOUT ? "timeout" :
	    what & BEV_EVENT_EOF ? "client disconnected" : "connection error";

	if (s->state == POP3_ST_CLOSING || !(what & BEV_EVENT_TIMEOUT)) {
		/* nothing more can be written: what waits is dropped */
		if (s->state != POP3_ST_CLOSING) {
			log_info("sink: POP3 %llu closing (%s)",
			    (unsigned long long)s->id, why);
			pop3_enter(s, POP3_ST_CLOSING);
		}
		bufferevent_disable(bev, EV_READ | EV_WRITE);
		pop3_maybe_free(s, why);
		return;
	}
	pop3_close(s, "-ERR [SYS/TEMP] autologout timer expired, closing",
	    "timeout");
}

static void
pop3_peer_text(const struct sockaddr *sa, int salen, char *buf, size_t size)
{
	char host[INET6_ADDRSTRLEN], port[8];

	if (getnameinfo(sa, (socklen_t)salen, host, sizeof(host), port,
	    sizeof(port), NI_NUMERICHOST | NI_NUMERICSERV) != 0)
		snprintf(buf, size, "?");
	else
		snprintf(buf, size, sa->sa_family == AF_INET6 ? "[%s]:%s" :
		    "%s:%s", host, port);
}

static void
pop3_accept(struct evconnlistener *lis, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	static const char busy[] = "-ERR [SYS/TEMP] too many connections\r\n";
	struct sink_pop3 *p = arg;
	struct pop3_session *s;

	if (p->nsessions >= POP3_MAX_SESSIONS) {
		if (send(fd, busy, sizeof(busy) - 1, MSG_DONTWAIT |
		    MSG_NOSIGNAL) < 0)
			log_info("sink: POP3 refused a connection: %s",
			    strerror(errno));
		close(fd);
		return;
	}
	s = xcalloc(1, sizeof(*s));
	s->srv = p;
	s->id = ++p->next_id;
	s->fd = -1;
	s->state = POP3_ST_AUTH;
	pop3_peer_text(sa, salen, s->peer, sizeof(s->peer));
	s->bev = bufferevent_socket_new(p->k->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (s->bev == NULL) {
		close(fd);
		free(s);
		return;
	}
	s->next = p->sessions;
	if (s->next != NULL)
		s->next->prevp = &s->next;
	s->prevp = &p->sessions;
	p->sessions = s;
	p->nsessions++;
	bufferevent_setcb(s->bev, pop3_read_cb, pop3_write_cb, pop3_event_cb, s);
	/* refill answers before the client runs dry; read a line or so ahead */
	bufferevent_setwatermark(s->bev, EV_WRITE, POP3_OUT_MAX / 2, 0);
	bufferevent_setwatermark(s->bev, EV_READ, 0, 4 * POP3_LINE_MAX);
	bufferevent_set_timeouts(s->bev, &p->timeout, &p->timeout);
	log_info("sink: POP3 %llu connection from %s", (unsigned long long)s->id,
	    s->peer);
	pop3_reply(s, "+OK sluice sink POP3 server ready");
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
}

int
sink_pop3_start(struct sink *k, const char *addr, char *err, size_t errlen)
{
	struct sink_pop3 *p = xcalloc(1, sizeof(*p));
	struct conf_addr a;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);

	if (conf_addr_parse(addr, &a) != 0) {
		snprintf(err, errlen, "--pop3: '%s' is not an address and port "
		    "(127.0.0.1:1100)", addr);
		free(p);
		return -1;
	}
	p->k = k;
	p->timeout.tv_sec = k->o.pop3_timeout_s > 0 ?
	    (time_t)k->o.pop3_timeout_s : 600;
	p->lis = evconnlistener_new_bind(k->base, pop3_accept, p,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
	    128, (struct sockaddr *)&a.ss, (int)a.len);
	free(a.text);
	if (p->lis == NULL) {
		snprintf(err, errlen, "--pop3: cannot listen on %s: %s", addr,
		    strerror(errno));
		free(p);
		return -1;
	}
	if (getsockname(evconnlistener_get_fd(p->lis), (struct sockaddr *)&ss,
	    &sl) == 0)
		p->port = ss.ss_family == AF_INET ?
		    ntohs(((struct sockaddr_in *)&ss)->sin_port) :
		    ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	k->pop3 = p;
	return 0;
}

void
sink_pop3_stop(struct sink *k)
{
	struct sink_pop3 *p = k->pop3;
	struct pop3_session *s, *next;

	if (p == NULL)
		return;
	if (p->lis != NULL)
		evconnlistener_free(p->lis);
	p->lis = NULL;
	for (s = p->sessions; s != NULL; s = next) {
		next = s->next;
		if (s->state != POP3_ST_CLOSING)
			pop3_enter(s, POP3_ST_CLOSING);
		/* a read in flight frees it when it comes back */
		bufferevent_disable(s->bev, EV_READ | EV_WRITE);
		if (!s->inflight)
			pop3_free(s, "shutdown");
	}
}

void
sink_pop3_free(struct sink *k)
{
	sink_pop3_stop(k);
	free(k->pop3);
	k->pop3 = NULL;
}

int
sink_pop3_port(const struct sink *k)
{
	return k->pop3 ? k->pop3->port : -1;
}
