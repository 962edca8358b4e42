/* SPDX-License-Identifier: MIT */
/*
 * test_sched.c: the scheduler (src/sched) end to end through its public
 * interface (sched.h) on a real spool, a real resolver and a scripted SMTP
 * peer in the same process (harness.h): delivery, bounces, deferral,
 * the operator's delete, and what a restart finds.
 *
 * Run one test by name: test_sched test_delivers (a cmocka filter).
 */
#include <malloc.h>

#include <sqlite3.h>

#include "harness.h"
#if defined(__SANITIZE_ADDRESS__)
/* the ASan runtime's (GCC ships no header for it) */
size_t __sanitizer_get_current_allocated_bytes(void);
#endif

#include "sched/sched_int.h"	/* the counts of destinations and sites */
#include "util/evloop.h"
#include "util/inbox.h"

#include <pthread.h>

static int
peer_has_1(struct world *w)
{
	return w->peer.nmsg >= 1 && world_empty(w);
}

static int
peer_has_2(struct world *w)
{
	return w->peer.nmsg >= 2 && world_empty(w);
}

static void
test_delivers(void **state)
{
	struct world *w = world_new();
	uint64_t mid;
	char want[128], smid[17];

	world_start(w);
	mid = world_submit(w, "s@src.test", "a@dst.test,b@dst.test",
	    "Subject: t\r\n\r\nhello\r\n", 0);
	world_run_until(w, peer_has_1, 10, "the delivery");
	assert_int_equal(w->peer.nmsg, 1);
	assert_string_equal(w->peer.msgs[0].from, "s@src.test");
	assert_string_equal(w->peer.msgs[0].rcpts, "a@dst.test,b@dst.test");
	assert_string_equal(w->peer.msgs[0].data,
	    "Subject: t\r\n\r\nhello\r\n");
	spool_mid_fmt(mid, smid);
	snprintf(want, sizeof(want), "MID %s", smid);
	assert_true(world_log_count(w, want) > 0);
	/* the spool is empty after a restart too */
	assert_int_equal(world_restart(w), 0);
	world_free(w);
}

/* An SMTP loop of its own for test_delivers_on_loops. */
struct tloop {
	struct event_base *base;
	struct sl_inbox *inbox;
	pthread_t th;
};

static void *
tloop_main(void *arg)
{
	event_base_loop(((struct tloop *)arg)->base, EVLOOP_NO_EXIT_ON_EMPTY);
	return NULL;
}

static void
tloop_break(void *arg)
{
	event_base_loopbreak(arg);
}

static int
peer_has_30(struct world *w)
{
	return w->peer.nmsg >= 30 && world_empty(w);
}

/*
 * Delivery connections made on two loops of their own (sched_set_loops):
 * every message is delivered once, with its own recipients, and the
 * outcomes come back to the scheduler's loop, which deletes them.
 */
static void
test_delivers_on_loops(void **state)
{
	struct world *w = world_new();
	struct tloop l[2];
	struct sl_inbox *own, *ins[2];
	struct event_base *bases[2];
	char rcpt[64];
	int seen[30] = { 0 };

	world_set(w, "delivery.destination_concurrency=4");
	world_start(w);
	own = sl_inbox_new(w->base);
	for (int i = 0; i < 2; i++) {
		l[i].base = sl_evloop_new();
		l[i].inbox = sl_inbox_new(l[i].base);
		ins[i] = l[i].inbox;
		bases[i] = l[i].base;
		assert_int_equal(pthread_create(&l[i].th, NULL, tloop_main,
		    &l[i]), 0);
	}
	sched_set_loops(w->s, own, 2, ins, bases);
	for (int i = 0; i < 30; i++) {
		snprintf(rcpt, sizeof(rcpt), "r%d@d%d.test", i, i % 3);
		world_submit(w, "s@src.test", rcpt, "Subject: t\r\n\r\nhi\r\n",
		    0);
	}
	world_run_until(w, peer_has_30, 20, "30 deliveries");
	assert_int_equal(w->peer.nmsg, 30);
	for (int i = 0; i < 30; i++) {
		int n;
		assert_int_equal(sscanf(w->peer.msgs[i].rcpts, "r%d@", &n), 1);
		assert_true(n >= 0 && n < 30);
		seen[n]++;
	}
	for (int i = 0; i < 30; i++)
		assert_int_equal(seen[i], 1);
	world_stop(w);
	for (int i = 0; i < 2; i++) {
		sl_inbox_post(l[i].inbox, tloop_break, l[i].base);
		pthread_join(l[i].th, NULL);
		sl_inbox_free(l[i].inbox);	/* what the stop left */
		event_base_free(l[i].base);
	}
	sl_inbox_free(own);
	world_free(w);
}

static void
test_bounce_goes_to_sender(void **state)
{
	struct world *w = world_new();

	world_start(w);
	world_submit(w, "s@src.test", "a@dst.test,bad@dst.test",
	    "Subject: t\r\n\r\nhello\r\n", 0);
	world_run_until(w, peer_has_2, 10, "delivery and the bounce");
	assert_int_equal(w->peer.nmsg, 2);
	assert_int_equal(peer_dsns(&w->peer), 1);
	for (int i = 0; i < w->peer.nmsg; i++) {
		struct pmsg *m = &w->peer.msgs[i];
		if (m->from[0] != '\0')
			continue;
		assert_string_equal(m->rcpts, "s@src.test");
		assert_null(strstr(m->params, "BODY=8BITMIME"));
		assert_non_null(strstr(m->data, "Action: failed"));
		assert_non_null(strstr(m->data, "Status: 5.1.1"));
		assert_non_null(strstr(m->data,
		    "Final-Recipient: rfc822;bad@dst.test"));
	}
	assert_int_equal(world_restart(w), 0);
	world_free(w);
}

/*
 * Issue 9 item 20: the delivery lines in the gateway's words, text and
 * JSON (on main: "DCID 1 MID m RID [0] Delivery start").
 */
static void
gateway_lines(int json)
{
	struct world *w = world_new();
	char smid[17], want[3][160];
	uint64_t mid;

	if (json)
		assert_int_equal(log_open(w->logpath, 1, "info"), 0);
	world_start(w);
	mid = world_submit(w, "s@src.test", "a@dst.test",
	    "Subject: t\r\n\r\nhello\r\n", 0);
	world_run_until(w, peer_has_1, 10, "the delivery");
	spool_mid_fmt(mid, smid);
	if (json) {
		snprintf(want[0], sizeof(want[0]), "\"level\":\"info\",\"dcid\":1,"
		    "\"mid\":\"%s\",\"rid\":0,\"event\":\"Delivery start\","
		    "\"rcpt\":\"a@dst.test\"", smid);
		snprintf(want[1], sizeof(want[1]), "\"dcid\":1,\"mid\":\"%s\","
		    "\"rid\":0,\"event\":\"Message done\",\"rcpt\":\"a@dst.test\"",
		    smid);
		snprintf(want[2], sizeof(want[2]), "\"mid\":\"%s\",\"event\":"
		    "\"Message finished\",\"status\":\"done\"}", smid);
	} else {
		snprintf(want[0], sizeof(want[0]), "Z Info: Delivery start DCID 1 "
		    "MID %s to RID [0] rcpt=a@dst.test relay=", smid);
		snprintf(want[1], sizeof(want[1]), "Z Info: Message done DCID 1 "
		    "MID %s to RID [0] rcpt=a@dst.test relay=", smid);
		snprintf(want[2], sizeof(want[2]), "Z Info: Message finished MID "
		    "%s done\n", smid);
	}
	for (int i = 0; i < 3; i++)
		if (world_log_count(w, want[i]) != 1) {
			char *log = world_log(w);
			fail_msg("not once in the log: %s\n%s", want[i], log);
		}
	world_free(w);
	assert_int_equal(log_open("-", 0, "info"), 0);
}

static void
test_gateway_log_lines(void **state)
{
	gateway_lines(0);
}

static void
test_gateway_log_json(void **state)
{
	gateway_lines(1);
}

/*
 * Issue 9 item 10: a DSN that carries 8-bit text (here the returned
 * header section) goes out with BODY=8BITMIME (on main: without).
 */
static void
test_dsn_8bit_body(void **state)
{
	struct world *w = world_new();
	const struct pmsg *dsn = NULL;

	world_start(w);
	world_submit(w, "s@src.test", "bad@dst.test",
	    "Subject: caf\xc3\xa9\r\n\r\nhello\r\n", 0);
	world_run_until(w, peer_has_1, 10, "the bounce");
	for (int i = 0; i < w->peer.nmsg; i++)
		if (w->peer.msgs[i].from[0] == '\0')
			dsn = &w->peer.msgs[i];
	assert_non_null(dsn);
	assert_non_null(strstr(dsn->data, "Subject: caf\xc3\xa9"));
	assert_non_null(strstr(dsn->params, " BODY=8BITMIME"));
	world_free(w);
}

/*
 * Issue 9 item 9: never connect to a next hop that is one of our own
 * listening sockets: the recipient fails with 5.4.6 (its DSN, routed to
 * us too, is dropped as a double bounce). On main the peer (standing in
 * for ourselves) gets the message.
 */
static int
loop_done(struct world *w)
{
	return w->committed >= 1 && world_empty(w);
}

/* listen: a format for the peer's port (%d) plus delta. */
static void
loop_case(const char *listen, int delta, int loops)
{
	struct world *w = world_new();

	world_set(w, listen, w->peer.port + delta);
	world_start(w);
	world_submit(w, "s@src.test", "a@dst.test",
	    "Subject: t\r\n\r\nhello\r\n", 0);
	if (loops) {
		world_run_until(w, loop_done, 10, "the message to fail");
		assert_int_equal(w->peer.nconn, 0);
		assert_int_equal(w->peer.nmsg, 0);
		if (world_log_count(w, "5.4.6 mail loops back to myself (mail "
		    "for [127.0.0.1]:") != 2)
			fail_msg("%s", world_log(w));
		assert_int_equal(world_log_count(w, "double bounce"), 1);
	} else {
		world_run_until(w, peer_has_1, 10, "the delivery");
		assert_int_equal(world_log_count(w, "loops back"), 0);
	}
	world_free(w);
}

static void
test_loop_same_socket(void **state)
{
	loop_case("server.listen=127.0.0.1:%d", 0, 1);
}

static void
test_loop_wildcard(void **state)
{
	loop_case("server.listen=*:%d", 0, 1);
	loop_case("server.listen=[::]:%d", 0, 1);
	/* among other listeners */
	loop_case("server.listen=127.0.0.2:25, 0.0.0.0:%d", 0, 1);
}

static void
test_loop_not_other_sockets(void **state)
{
	/* another port; another address on the peer's port */
	loop_case("server.listen=127.0.0.1:%d", 1, 0);
	loop_case("server.listen=127.0.0.2:%d", 0, 0);
}

/*
 * Issue 9 item 13: a failed recipient's DSN is queued once. The message
 * stays (another recipient is deferred), sluiced restarts, the deferred
 * recipient is delivered: no second bounce (on main the failed recipient
 * was bounced again when the message finished after the restart).
 */
static int
bounced_once(struct world *w)
{
	/* and the DSN itself finished: only the original is left */
	return peer_dsns(&w->peer) >= 1 && world_log_count(w,
	    "deferred attempts=1") >= 1 && world_queued(w) == 1;
}

static int
all_done(struct world *w)
{
	return world_empty(w) && w->peer.nmsg >= 2;
}

static void
test_bounce_not_repeated_after_restart(void **state)
{
	struct world *w = world_new();

	world_start(w);
	world_submit(w, "s@src.test", "bad@dst.test,later@dst.test",
	    "Subject: t\r\n\r\nhello\r\n", 0);
	world_run_until(w, bounced_once, 10, "the bounce and the deferral");
	assert_int_equal(world_restart(w), 1);
	w->peer.accept_later = 1;
	world_run_until(w, all_done, 10, "the deferred recipient");
	world_run_for(w, 300);
	assert_int_equal(peer_dsns(&w->peer), 1);
	assert_int_equal(w->peer.nmsg, 2);
	assert_int_equal(world_restart(w), 0);
	world_free(w);
}

/* A message the spool could not store is forgotten; the next one goes. */
static int
one_failed(struct world *w)
{
	return w->failed == 1;
}

static void
test_not_stored_forgotten(void **state)
{
	struct world *w = world_new();

	world_start(w);
	spool_fault_inject(w->sp, 1, SPOOL_ERR_NOSPACE);
	world_submit(w, "s@src.test", "a@dst.test", "Subject: t\r\n\r\nx\r\n",
	    0);
	world_run_until(w, one_failed, 10, "the failed insert");
	assert_int_equal(world_queued(w), 0);
	world_submit(w, "s@src.test", "a@dst.test", "Subject: t\r\n\r\ny\r\n",
	    0);
	world_run_until(w, peer_has_1, 10, "the delivery");
	assert_string_equal(w->peer.msgs[0].data, "Subject: t\r\n\r\ny\r\n");
	world_free(w);
}

/*
 * Issue 9 item 14: a DSN the spool cannot take (full disk) is tried again
 * from a timer with backoff (1 s, 2 s, ...), not at once in a loop; once
 * there is room it goes (on main: thousands of tries in 1.5 s).
 */
static int
committed(struct world *w)
{
	return w->committed >= 1;
}

static int
dsn_tried(struct world *w)
{
	return world_log_count(w, "DSN not queued") >= 1;
}

static int
bounce_delivered(struct world *w)
{
	return peer_dsns(&w->peer) == 1 && world_empty(w);
}

static void
test_dsn_retry_backoff(void **state)
{
	struct world *w = world_new();
	int tries;

	world_start(w);
	world_submit(w, "s@src.test", "bad@dst.test", "Subject: t\r\n\r\nx\r\n",
	    0);
	/* the disk fills while the delivery is under way */
	world_run_until(w, committed, 10, "the commit");
	spool_fault_inject(w->sp, 1000000, SPOOL_ERR_NOSPACE);
	/* the delivery fails and the DSN is tried, however loaded the
	 * machine; then 1.5 s more: the try after 1 s, maybe the one after
	 * 2 s more if the loop ran late, never a loop of them */
	world_run_until(w, dsn_tried, 30, "the first try of the DSN");
	world_run_for(w, 1500);
	tries = world_log_count(w, "DSN not queued");
	if (tries < 1 || tries > 3)
		fail_msg("%d tries of the DSN in 1.5 s after the first", tries);
	spool_fault_inject(w->sp, 0, SPOOL_OK);
	world_run_until(w, bounce_delivered, 10, "the DSN, once there is room");
	assert_int_equal(world_restart(w), 0);
	world_free(w);
}

/*
 * Issue 9 item 21: a recipient that expires after temporary refusals is
 * reported with Status 5.4.7 (RFC 3463: delivery time expired) and the
 * last reply as its Diagnostic-Code; the delay notice before says 4.4.7.
 * On main: Status 4.7.1 (the last reply's), the reply with our words.
 */
static int
expired_bounce(struct world *w)
{
	return peer_dsns(&w->peer) >= 2 && world_empty(w);
}

static void
test_expiry_status(void **state)
{
	struct world *w = world_new();
	const struct pmsg *delay = NULL, *fail = NULL;

	world_set(w, "delivery.queue_lifetime=3s");
	world_set(w, "delivery.delay_warning=1s");
	world_start(w);
	world_submit(w, "s@src.test", "later@dst.test",
	    "Subject: t\r\n\r\nx\r\n", 0);
	world_run_until(w, expired_bounce, 15, "the delay notice and bounce");
	for (int i = 0; i < w->peer.nmsg; i++) {
		const struct pmsg *m = &w->peer.msgs[i];
		if (strstr(m->data, "Action: delayed") != NULL)
			delay = m;
		else if (strstr(m->data, "Action: failed") != NULL)
			fail = m;
	}
	assert_non_null(delay);
	assert_non_null(fail);
	assert_non_null(strstr(delay->data, "\r\nStatus: 4.4.7\r\n"));
	assert_non_null(strstr(fail->data, "\r\nStatus: 5.4.7\r\n"));
	assert_non_null(strstr(fail->data, "\r\nDiagnostic-Code: smtp; 451 "
	    "4.7.1 Try again later\r\n"));
	assert_non_null(strstr(fail->data, "delivery time expired after"));
	world_free(w);
}

/* Delay notices (Action: delayed) the peer took. */
static int
peer_delay_notices(const struct peer *p)
{
	int n = 0;

	for (int i = 0; i < p->nmsg; i++)
		n += p->msgs[i].from[0] == '\0' &&
		    strstr(p->msgs[i].data, "Action: delayed") != NULL;
	return n;
}

static int deferrals_wanted;	/* for deferred_enough */

static int
first_deferral(struct world *w)
{
	return world_log_count(w, "deferred attempts=1") >= 1;
}

/* The message was deferred deferrals_wanted times in all. */
static int
deferred_enough(struct world *w)
{
	return world_log_count(w, "deferred attempts=") >= deferrals_wanted;
}

static int
one_delay_notice(struct world *w)
{
	return peer_delay_notices(&w->peer) >= 1;
}

/* The notice delivered and gone from the queue: the original is left. */
static int
delay_notice_done(struct world *w)
{
	return one_delay_notice(w) && world_queued(w) == 1;
}

/*
 * Two more deferrals after the notice: a second notice, if one were
 * decided, would be delivered by then (the same peer, the next turn).
 */
static void
two_more_deferrals(struct world *w)
{
	deferrals_wanted = world_log_count(w, "deferred attempts=") + 2;
	world_run_until(w, deferred_enough, 15, "two more deferrals");
}

/*
 * The delay notice is recorded in the spool with the notice itself:
 * a message deferred before [delivery] delay_warning whose daemon is
 * down when the threshold passes gets its notice after the restart. On
 * main the restart guessed "warned" from the attempts and the age, and
 * the notice never went.
 */
static void
test_delay_notice_after_restart_not_skipped(void **state)
{
	struct world *w = world_new();

	world_set(w, "delivery.delay_warning=2s");
	world_start(w);
	world_submit(w, "s@src.test", "later@dst.test",
	    "Subject: t\r\n\r\nx\r\n", 0);
	world_run_until(w, first_deferral, 10, "the first deferral");
	assert_int_equal(peer_delay_notices(&w->peer), 0);
	world_stop(w);
	sleep(3);		/* down while the threshold passes */
	world_start(w);
	assert_int_equal(spool_recover(w->sp, sched_recover, w->s), 1);
	world_run_until(w, delay_notice_done, 10, "the delay notice");
	two_more_deferrals(w);
	assert_int_equal(peer_delay_notices(&w->peer), 1);
	world_free(w);
}

/* A notice that went is not sent again after a restart. */
static void
test_delay_notice_not_repeated_after_restart(void **state)
{
	struct world *w = world_new();

	world_set(w, "delivery.delay_warning=1s");
	world_start(w);
	world_submit(w, "s@src.test", "later@dst.test",
	    "Subject: t\r\n\r\nx\r\n", 0);
	world_run_until(w, delay_notice_done, 10, "the delay notice");
	assert_int_equal(world_restart(w), 1);
	two_more_deferrals(w);
	assert_int_equal(peer_delay_notices(&w->peer), 1);
	world_free(w);
}

/*
 * Issue 9 item 16: a destination and its site are freed once they have no
 * job and no connection (on main they stayed for the life of the daemon:
 * one per domain ever mailed).
 */
static int
idle_everywhere(struct world *w)
{
	struct sched_stats st;

	sched_stats_get(w->s, &st);
	return world_empty(w) && st.connections == 0 && w->peer.open == 0 &&
	    w->peer.nmsg >= 1;
}

static void
test_idle_destinations_freed(void **state)
{
	struct world *w = world_new();
	struct sched_stats st;

	world_start(w);
	world_submit(w, "s@src.test", "a@dst.test", "Subject: t\r\n\r\nx\r\n",
	    0);
	world_run_until(w, idle_everywhere, 10, "delivery and the idle close");
	world_run_for(w, 100);
	sched_stats_get(w->s, &st);
	assert_int_equal(st.destinations, 0);
	assert_int_equal(w->s->ndest, 0);
	assert_int_equal(w->s->nsite, 0);
	/* and the next message makes them again */
	world_submit(w, "s@src.test", "b@dst.test", "Subject: t\r\n\r\ny\r\n",
	    0);
	world_run_until(w, peer_has_2, 10, "the second delivery");
	sched_stats_get(w->s, &st);
	assert_int_equal(st.destinations, 1);
	world_free(w);
}

/* ---- the operator's delete ---- */

struct del_res {
	int fired;
	int status;
};

static void
del_cb(void *arg, int status)
{
	struct del_res *r = arg;

	r->fired++;
	r->status = status;
}

static struct del_res *del_watch;

static int
del_fired(struct world *w)
{
	return del_watch->fired > 0;
}

static void
run_delete(struct world *w, uint64_t mid, struct del_res *r)
{
	del_watch = r;
	sched_delete(w->s, mid, del_cb, r);
	world_run_until(w, del_fired, 10, "the delete's answer");
}

static int
deferred_once(struct world *w)
{
	return world_log_count(w, "deferred attempts=1") >= 1;
}

static void
test_delete_deferred(void **state)
{
	struct world *w = world_new();
	struct del_res r = { 0 };
	uint64_t mid;

	world_start(w);
	mid = world_submit(w, "s@src.test", "later@dst.test",
	    "Subject: t\r\n\r\nx\r\n", 0);
	world_run_until(w, deferred_once, 10, "the deferral");
	assert_int_equal(world_queued(w), 1);
	run_delete(w, mid, &r);
	assert_int_equal(r.status, SPOOL_OK);
	assert_int_equal(world_queued(w), 0);
	/* once gone, a second delete finds nothing */
	memset(&r, 0, sizeof(r));
	run_delete(w, mid, &r);
	assert_int_equal(r.status, SPOOL_ERR_NOTFOUND);
	assert_int_equal(world_restart(w), 0);
	assert_int_equal(peer_dsns(&w->peer), 0);
	world_free(w);
}

/* Store msg straight into the spool (no scheduler), wait for the commit. */
static int store_count;

static void
store_done(void *arg, enum spool_status st)
{
	assert_int_equal(st, SPOOL_OK);
	store_count++;
}

static int
stored(struct world *w)
{
	return store_count > 0;
}

static uint64_t
store_final(struct world *w, uint8_t state)
{
	struct spool_msg *m = xcalloc(1, sizeof(*m));
	uint64_t mid = spool_mid_next(w->sp);

	m->mid = mid;
	m->arrival = sl_now_us() / 1000000;
	m->sender = xstrdup("s@src.test");
	m->client_addr = xstrdup("127.0.0.1");
	m->helo = xstrdup("client.sched.test");
	m->body = evbuffer_new();
	evbuffer_add(m->body, "Subject: t\r\n\r\nx\r\n", 17);
	m->nrcpt = 1;
	m->rcpts = xcalloc(1, sizeof(*m->rcpts));
	m->rcpts[0].addr = xstrdup("a@dst.test");
	m->rcpts[0].state = state;
	m->rcpts[0].attempts = 1;
	m->rcpts[0].last_reply = xstrdup("250 2.0.0 Ok");
	store_count = 0;
	spool_insert(w->sp, m, store_done, NULL);
	world_run_until(w, stored, 10, "the insert");
	return mid;
}

/*
 * Issue 9 item 11: a message recovered with every recipient final is being
 * deleted by the scheduler itself; the operator's delete of it meanwhile
 * must not free it a second time (ASan: heap-use-after-free on main).
 */
static void
test_delete_while_finishing(void **state)
{
	struct world *w = world_new();
	struct del_res r = { 0 };
	uint64_t mid;

	world_start(w);
	mid = store_final(w, SPOOL_RCPT_DELIVERED);
	world_stop(w);
	world_start(w);
	assert_int_equal(spool_recover(w->sp, sched_recover, w->s), 1);
	/* its own delete is in flight now */
	run_delete(w, mid, &r);
	world_run_until(w, world_empty, 10, "the message to go");
	assert_int_equal(r.fired, 1);
	assert_int_equal(r.status, SPOOL_ERR_NOTFOUND);
	assert_int_equal(world_log_count(w, "deleted by the operator"), 0);
	assert_int_equal(world_restart(w), 0);
	world_free(w);
}

/*
 * Issue 9 item 17: a job whose body cannot be read is deferred, and its
 * connection does not stay open holding a slot: it takes the next job or
 * closes after the idle timeout (on main it stayed, idle, for good).
 */
static int
no_connection(struct world *w)
{
	struct sched_stats st;

	sched_stats_get(w->s, &st);
	return st.connections == 0 && world_empty(w);
}

static int
peer_has_3(struct world *w)
{
	return w->peer.nmsg >= 3 && world_empty(w);
}

static int
first_closed(struct world *w)
{
	return world_log_count(w, "DCID 1 close reason=") >= 1;
}

static void
test_unreadable_body_frees_connection(void **state)
{
	struct world *w = world_new();
	struct spool_rcpt r = { .addr = "a@dst.test" };
	struct spool_msg sm = {
		.sender = "s@src.test", .nrcpt = 1, .rcpts = &r, .size = 10,
	};
	struct sched_stats st;
	struct sched_msg *m;
	struct del_res d = { 0 };

	world_start(w);
	/* in the scheduler, but not in the spool: its body cannot be read */
	sm.mid = spool_mid_next(w->sp);
	sm.arrival = sl_now_us() / 1000000;
	m = sched_msg_new(w->s, &sm);
	sched_msg_commit(w->s, m);
	world_run_until(w, first_closed, 8, "the first connection to close");
	assert_true(world_log_count(w, "451 4.3.0 message body could not be "
	    "read from the spool") >= 1);
	assert_int_equal(w->peer.nmsg, 0);
	run_delete(w, sm.mid, &d);
	world_run_until(w, no_connection, 8, "no connection");
	sched_stats_get(w->s, &st);
	assert_int_equal(st.connections, 0);
	world_free(w);
}

/*
 * A body the spool lost (its row gone, the envelope intact): said once as
 * a warning, counted, deferred, and after SCHED_BODY_MISSING_TRIES reads
 * that found none the recipient fails with 5.3.0 and the sender gets a
 * DSN (without the body); the message leaves the queue. On main it was
 * retried until the message expired, silently.
 */
static int
missing_failed(struct world *w)
{
	return world_empty(w) && peer_dsns(&w->peer) >= 1;
}

static void
test_missing_body_fails_after_tries(void **state)
{
	struct world *w = world_new();
	struct sched_stats st;
	char path[128], *err = NULL;
	sqlite3 *db;

	world_set(w, "delivery.retry_max=1s");
	world_start(w);
	w->peer.close_after_mail = 1;	/* not delivered before the loss */
	world_submit(w, "s@src.test", "a@dst.test",
	    "Subject: lost\r\n\r\nbody\r\n", 0);
	world_run_until(w, first_deferral, 10, "the first deferral");
	world_stop(w);
	snprintf(path, sizeof(path), "%s/spool.db", w->dir);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "DELETE FROM bodies", NULL, NULL,
	    &err), SQLITE_OK);
	sqlite3_close(db);
	w->peer.close_after_mail = 0;
	world_start(w);
	assert_int_equal(spool_recover(w->sp, sched_recover, w->s), 1);
	world_run_until(w, missing_failed, 20, "the recipient failed");
	sched_stats_get(w->s, &st);
	assert_int_equal(st.bodies_missing, 1);
	assert_int_equal(world_log_count(w, "spool inconsistency: message "
	    "body missing"), 1);
	assert_int_equal(world_log_count(w, "451 4.3.0 message body could "
	    "not be read"), SCHED_BODY_MISSING_TRIES - 1);
	assert_int_equal(w->peer.nmsg, 1);
	assert_non_null(strstr(w->peer.msgs[0].data, "\r\nStatus: 5.3.0\r\n"));
	assert_non_null(strstr(w->peer.msgs[0].data, "message body missing "
	    "from the spool"));
	world_free(w);
}

/*
 * Issue 9 item 15: the body is read once, off the loop thread, and shared:
 * a message to three destinations, all three connections sending it at
 * once, makes one read of the spool.
 */
static int
three_held(struct world *w)
{
	return w->peer.nheld == 3;
}

static void
test_body_read_once_shared(void **state)
{
	struct world *w = world_new();
	struct spool_stats st;
	char body[70000];

	world_set(w, "routes.one.test=[127.0.0.1]:%d", w->peer.port);
	world_set(w, "routes.two.test=[127.0.0.1]:0%d", w->peer.port);
	world_set(w, "routes.three.test=[127.0.0.1]:00%d", w->peer.port);
	world_start(w);
	w->peer.hold_dot = 1;
	memset(body, 'b', sizeof(body) - 3);
	memcpy(body + sizeof(body) - 3, "\r\n", 3);
	world_submit(w, "s@src.test", "a@one.test,b@two.test,c@three.test",
	    body, 0);
	world_run_until(w, three_held, 10, "three connections at the dot");
	spool_stats_get(w->sp, &st);
	assert_int_equal(st.body_reads, 1);
	peer_release(&w->peer);
	world_run_until(w, peer_has_3, 10, "the three deliveries");
	for (int i = 0; i < 3; i++) {
		struct pmsg *m = &w->peer.msgs[i];
		size_t k = 0;
		/* as sent, less the folds of the long line */
		for (size_t j = 0; j < m->len; j++) {
			if (j + 2 < m->len && memcmp(m->data + j, "\r\n ", 3) ==
			    0 && j + 3 < m->len - 2) {
				j += 2;
				continue;
			}
			m->data[k++] = m->data[j];
		}
		assert_int_equal(k, sizeof(body) - 1);
		assert_memory_equal(m->data, body, k);
	}
	world_free(w);
}

/* Bytes the process has allocated now (ASan's allocator or glibc's). */
static size_t
heap_bytes(void)
{
#if defined(__SANITIZE_ADDRESS__)
	return __sanitizer_get_current_allocated_bytes();
#else
	return mallinfo2().uordblks;
#endif
}

/*
 * Issue 9 item 24: a queued recipient, one per message, costs at most 300
 * bytes of the scheduler's memory (the issue-5 target; 323 on main by this
 * count, 349 of RSS by bench/queue-scale). 200 000 deferred messages over
 * 1 000 destinations, as recovery makes them.
 */
static void
test_memory_per_recipient(void **state)
{
	enum { N = 200000, D = 1000 };
	struct world *w = world_new();
	struct spool_rcpt r = { .state = SPOOL_RCPT_DEFERRED, .attempts = 1,
	    .last_reply = "451 4.7.1 Try again later" };
	struct spool_msg sm = { .sender = "sender@bench.test", .nrcpt = 1,
	    .rcpts = &r, .size = 200 };
	int64_t now = sl_now_us() / 1000000;
	char addr[64];
	size_t before, after;
	double per;

	world_start(w);
	r.addr = addr;
	before = heap_bytes();
	for (uint64_t i = 0; i < N; i++) {
		sm.mid = 1700000000000000ull + i;
		sm.arrival = now - 60;
		snprintf(addr, sizeof(addr), "u%llu@d%llu.queue.test",
		    (unsigned long long)i, (unsigned long long)(i % D));
		r.next_retry = now + 86400 + (int64_t)(i * 7919 % 86400);
		sched_msg_commit(w->s, sched_msg_new(w->s, &sm));
	}
	after = heap_bytes();
	per = (double)(after - before) / N;
	print_message("%.0f bytes per queued recipient\n", per);
	assert_int_equal(world_queued(w), N);
	if (per > 300)
		fail_msg("%.0f bytes per queued recipient (at most 300)", per);
	world_free(w);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_delivers),
		cmocka_unit_test(test_delivers_on_loops),
		cmocka_unit_test(test_not_stored_forgotten),
		cmocka_unit_test(test_bounce_goes_to_sender),
		cmocka_unit_test(test_gateway_log_lines),
		cmocka_unit_test(test_gateway_log_json),
		cmocka_unit_test(test_dsn_8bit_body),
		cmocka_unit_test(test_bounce_not_repeated_after_restart),
		cmocka_unit_test(test_dsn_retry_backoff),
		cmocka_unit_test(test_expiry_status),
		cmocka_unit_test(test_delay_notice_after_restart_not_skipped),
		cmocka_unit_test(test_delay_notice_not_repeated_after_restart),
		cmocka_unit_test(test_idle_destinations_freed),
		cmocka_unit_test(test_unreadable_body_frees_connection),
		cmocka_unit_test(test_missing_body_fails_after_tries),
		cmocka_unit_test(test_body_read_once_shared),
		cmocka_unit_test(test_memory_per_recipient),
		cmocka_unit_test(test_loop_same_socket),
		cmocka_unit_test(test_loop_wildcard),
		cmocka_unit_test(test_loop_not_other_sockets),
		cmocka_unit_test(test_delete_deferred),
		cmocka_unit_test(test_delete_while_finishing),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
