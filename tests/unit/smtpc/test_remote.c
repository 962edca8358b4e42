/* SPDX-License-Identifier: MIT */
/*
 * test_remote.c: a connection run on another loop thread
 * (src/smtpc/remote.c) against a small SMTP peer on the test's own loop:
 * messages go out and their outcomes, the peer's name and the events come
 * back on the owner's thread, in order; after smtpc_remote_free nothing
 * comes back.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "smtpc/smtpc.h"
#include "spool/spool.h"
#include "util/evloop.h"
#include "util/inbox.h"
#include "util/util.h"

/* --- the peer: 220, EHLO, 250 to all, 354, 250 after the dot, 221 --- */

struct peer {
	struct evconnlistener *lis;
	int port;
	int in_data;
	int messages;
};

static void
peer_read(struct bufferevent *bev, void *arg)
{
	struct peer *p = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	struct evbuffer *out = bufferevent_get_output(bev);
	char *line;
	size_t n;

	while ((line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF)) != NULL) {
		if (p->in_data) {
			if (strcmp(line, ".") == 0) {
				p->in_data = 0;
				p->messages++;
				evbuffer_add_printf(out, "250 2.0.0 ok %d\r\n",
				    p->messages);
			}
		} else if (strncasecmp(line, "EHLO", 4) == 0) {
			evbuffer_add_printf(out, "250-peer.test\r\n"
			    "250 PIPELINING\r\n");
		} else if (strncasecmp(line, "DATA", 4) == 0) {
			p->in_data = 1;
			evbuffer_add_printf(out, "354 go\r\n");
		} else if (strncasecmp(line, "QUIT", 4) == 0) {
			evbuffer_add_printf(out, "221 bye\r\n");
		} else {
			evbuffer_add_printf(out, "250 ok\r\n");
		}
		free(line);
	}
}

static void
peer_event(struct bufferevent *bev, short what, void *arg)
{
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
		bufferevent_free(bev);
}

static void
peer_accept(struct evconnlistener *l, evutil_socket_t fd,
    struct sockaddr *sa, int len, void *arg)
{
	struct bufferevent *bev = bufferevent_socket_new(
	    evconnlistener_get_base(l), fd, BEV_OPT_CLOSE_ON_FREE);

	bufferevent_setcb(bev, peer_read, NULL, peer_event, arg);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
	evbuffer_add_printf(bufferevent_get_output(bev), "220 peer\r\n");
}

/* --- the loop thread --- */

struct loop {
	struct event_base *base;
	struct sl_inbox *inbox;
	pthread_t th;
	pthread_t self;
};

static void *
loop_main(void *arg)
{
	struct loop *l = arg;

	l->self = pthread_self();
	event_base_loop(l->base, EVLOOP_NO_EXIT_ON_EMPTY);
	return NULL;
}

static void
loop_stop(void *arg)
{
	event_base_loopbreak(arg);
}

/* --- the owner --- */

struct owner {
	struct event_base *base;
	int done, ready, closed, other_thread;
	int codes[8];
	char host[64];
	struct smtpc_remote *r;
	struct smtpc_msg m[3];
	struct smtpc_rcpt rc[3];
	struct evbuffer *body;
	pthread_t self;
};

static void
owner_done(void *arg, struct smtpc *c, struct smtpc_msg *m)
{
	struct owner *o = arg;

	if (!pthread_equal(pthread_self(), o->self))
		o->other_thread = 1;
	o->codes[o->done++] = m->rcpts[0].code;
	sl_strlcpy(o->host, smtpc_remote_peer_host(o->r), sizeof(o->host));
}

static void
owner_event(void *arg, struct smtpc *c, enum smtpc_event ev, int code,
    const char *reason)
{
	struct owner *o = arg;

	if (!pthread_equal(pthread_self(), o->self))
		o->other_thread = 1;
	if (ev == SMTPC_READY) {
		/* the next message, or QUIT after the third */
		if (o->ready < 3)
			smtpc_remote_send(o->r, &o->m[o->ready]);
		else
			smtpc_remote_quit(o->r);
		o->ready++;
	} else {
		o->closed++;
	}
}

static void
run_until(struct event_base *base, int *what, int want)
{
	int64_t deadline = sl_mono_ms() + 30000;

	while (*what < want && sl_mono_ms() < deadline) {
		struct timeval tv = { 0, 50000 };
		event_base_loopexit(base, &tv);
		event_base_loop(base, EVLOOP_ONCE);
	}
}

static void
test_remote_messages_and_events(void **state)
{
	struct owner o = { 0 };
	struct peer p = { 0 };
	struct loop l = { 0 };
	struct sl_inbox *oin;
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t slen = sizeof(sin);
	struct smtpc_params prm = { .helo = "owner.test", .tls = SMTPC_TLS_NONE };
	struct smtpc_addr addr;
	struct smtpc_cb cb = { .done = owner_done, .event = owner_event, .arg = &o };

	o.self = pthread_self();
	o.base = sl_evloop_new();
	oin = sl_inbox_new(o.base);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	p.lis = evconnlistener_new_bind(o.base, peer_accept, &p,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 16,
	    (struct sockaddr *)&sin, sizeof(sin));
	assert_non_null(p.lis);
	getsockname(evconnlistener_get_fd(p.lis), (struct sockaddr *)&sin,
	    &slen);
	memset(&addr, 0, sizeof(addr));
	memcpy(&addr.ss, &sin, sizeof(sin));
	sl_strlcpy(addr.host, "peer.test", sizeof(addr.host));

	l.base = sl_evloop_new();
	l.inbox = sl_inbox_new(l.base);
	assert_int_equal(pthread_create(&l.th, NULL, loop_main, &l), 0);

	o.body = evbuffer_new();
	evbuffer_add_printf(o.body, "Subject: x\r\n\r\nhello\r\n");
	for (int i = 0; i < 3; i++) {
		o.rc[i] = (struct smtpc_rcpt){ .rid = 0, .addr = "rcpt@peer.test" };
		o.m[i] = (struct smtpc_msg){ .mid = (uint64_t)i + 1,
		    .sender = "s@owner.test", .body = o.body, .nrcpt = 1,
		    .rcpts = &o.rc[i] };
	}
	o.r = smtpc_remote_new(oin, l.inbox, l.base, 7, &prm, &addr, 1, &cb);
	run_until(o.base, &o.closed, 1);
	assert_int_equal(o.done, 3);
	for (int i = 0; i < 3; i++)
		assert_int_equal(o.codes[i], 250);
	assert_int_equal(p.messages, 3);
	assert_string_equal(o.host, "peer.test");
	assert_false(o.other_thread);
	smtpc_remote_free(o.r);

	/* freed with a message in flight: nothing comes back after it */
	o.done = o.ready = o.closed = 0;
	o.r = smtpc_remote_new(oin, l.inbox, l.base, 8, &prm, &addr, 1, &cb);
	run_until(o.base, &o.ready, 1);		/* the first send is out */
	smtpc_remote_free(o.r);
	{
		int64_t until = sl_mono_ms() + 300;
		int never = 0;
		while (sl_mono_ms() < until) {
			struct timeval tv = { 0, 20000 };
			event_base_loopexit(o.base, &tv);
			event_base_loop(o.base, EVLOOP_ONCE);
		}
		assert_int_equal(o.done, never);
		assert_int_equal(o.closed, never);
	}

	sl_inbox_post(l.inbox, loop_stop, l.base);
	pthread_join(l.th, NULL);
	sl_inbox_free(l.inbox);
	sl_inbox_free(oin);
	event_base_free(l.base);
	evconnlistener_free(p.lis);
	evbuffer_free(o.body);
	event_base_free(o.base);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_remote_messages_and_events),
	};
	return cmocka_run_group_tests_name("smtpc_remote", tests, NULL, NULL);
}
