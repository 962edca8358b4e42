/* SPDX-License-Identifier: MIT */
/*
 * test_redis.c: the Redis client of shaping (src/shaping/redis.c) and the
 * Lua scripts of shared limits (src/shaping/scripts.c) against a real
 * redis-server (Debian's), started here on a free loopback port with a
 * throwaway configuration: set-up and scripts, EVALSHA falling back to
 * EVAL, atomic messages (GCRA and budget), connection slots and rates,
 * shared actions and warm-up starts, each with expiry;
 * Redis killed (every waiting command answered NULL, the loss logged once
 * however many attempts fail) and back; a server that never answers (the
 * timeout ends the connection).
 */
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "log/log.h"
#include "shaping/shaping_int.h"
#include "util/util.h"

#include "shaping_test.h"

static char logpath[] = "/tmp/test_redis_log_XXXXXX";

/* redis-server on 127.0.0.1:port, nothing on disk; returns once it answers. */
static pid_t
redis_start(int port)
{
	char p[16];
	pid_t pid;

	snprintf(p, sizeof(p), "%d", port);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY);
		dup2(null, 1);
		dup2(null, 2);
		execlp("redis-server", "redis-server", "--port", p, "--bind",
		    "127.0.0.1", "--save", "", "--appendonly", "no",
		    "--daemonize", "no", "--loglevel", "warning", "--dir", "/tmp",
		    (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 500; i++) {
		struct timeval tv = { 1, 0 };
		redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
		if (c != NULL && c->err == 0) {
			redisReply *rep = redisCommand(c, "PING");
			int ok = rep != NULL && rep->type == REDIS_REPLY_STATUS;
			freeReplyObject(rep);
			redisFree(c);
			if (ok)
				return pid;
		} else if (c != NULL) {
			redisFree(c);
		}
		usleep(10000);
	}
	fail_msg("redis-server did not start on port %d", port);
	return -1;
}

static void
redis_kill(pid_t pid)
{
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

struct watch {
	int ups, downs;
	int answers, nulls;
	long long last_int;
	long long code, value;	/* an answer {code, value} */
	size_t elements;
	int last_type;
	char last_str[256];
	int done;
};

static void
on_state(void *arg, int up)
{
	struct watch *w = arg;

	if (up)
		w->ups++;
	else
		w->downs++;
}

static void
on_reply(void *arg, struct redisReply *r)
{
	struct watch *w = arg;

	w->done = 1;
	if (r == NULL) {
		w->nulls++;
		return;
	}
	w->answers++;
	w->last_type = r->type;
	w->last_int = r->integer;
	w->elements = r->elements;
	if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
	    r->element[0]->type == REDIS_REPLY_INTEGER) {
		w->code = r->element[0]->integer;
		w->value = r->element[1]->integer;
	}
	w->last_str[0] = '\0';
	if (r->str != NULL)
		sl_strlcpy(w->last_str, r->str, sizeof(w->last_str));
}

/* Run the loop until *flag passes want or ms pass; returns *flag. */
static int
loop_until(struct event_base *base, int *flag, int want, int ms)
{
	int64_t end = sl_mono_ms() + ms;

	while (*flag < want && sl_mono_ms() < end) {
		struct timeval tv = { 0, 10000 };
		event_base_loopexit(base, &tv);
		event_base_loop(base, EVLOOP_ONCE);
	}
	return *flag;
}

static struct shaping_redis *
client(struct event_base *base, int port, int timeout_ms, struct watch *w)
{
	char url[64], err[256];
	struct shaping_redis_params p = {
		.url = url, .timeout_ms = timeout_ms, .retry_ms = 100,
		.scripts = shaping_scripts, .nscripts = SHAPING_LUA_N,
		.name = "shaping",
	};
	struct shaping_redis *r;

	snprintf(url, sizeof(url), "redis://127.0.0.1:%d/3", port);
	r = shaping_redis_new(base, NULL, &p, on_state, w, err, sizeof(err));
	if (r == NULL)
		fail_msg("%s", err);
	return r;
}

/* Run script with args (its keys first) and wait for the answer in w. */
static void
eval(struct event_base *base, struct shaping_redis *r, int script, int nargs,
    const char *const *args, struct watch *w)
{
	int nkeys = script == SHAPING_LUA_SEND || script == SHAPING_LUA_OPEN ?
	    2 : 1;

	w->done = 0;
	assert_non_null(shaping_redis_eval(r, (size_t)script, nkeys, nargs,
	    args, on_reply, w));
	loop_until(base, &w->done, 1, 2000);
	assert_true(w->done);
}

static int
log_count(const char *text)
{
	return test_log_count(logpath, text);
}

static void
test_url(void **state)
{
	struct shaping_redis_url u;
	char err[256];
	static const char *bad[] = { "http://x", "redis://", "redis://:6379",
		"redis://h:0", "redis://h:70000", "redis://h:6379/x",
		"redis://[::1", "redis://h:12ab" };

	assert_int_equal(shaping_redis_url_parse("redis://127.0.0.1:6379/0", &u,
	    err, sizeof(err)), 0);
	assert_string_equal(u.host, "127.0.0.1");
	assert_int_equal(u.port, 6379);
	assert_int_equal(u.db, 0);
	assert_int_equal(shaping_redis_url_parse("redis://redis.test", &u, err,
	    sizeof(err)), 0);
	assert_string_equal(u.host, "redis.test");
	assert_int_equal(u.port, 6379);
	assert_int_equal(shaping_redis_url_parse("redis://:s3cret@[::1]:7000/2",
	    &u, err, sizeof(err)), 0);
	assert_string_equal(u.host, "::1");
	assert_string_equal(u.password, "s3cret");
	assert_int_equal(u.port, 7000);
	assert_int_equal(u.db, 2);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (shaping_redis_url_parse(bad[i], &u, err, sizeof(err)) == 0)
			fail_msg("'%s' parsed", bad[i]);
	assert_non_null(strstr(err, "is not redis://"));
}

static void
test_scripts(void **state)
{
	struct event_base *base = event_base_new();
	int port = test_free_port();
	pid_t pid = redis_start(port);
	struct watch w = { 0 };
	struct shaping_redis *r = client(base, port, 1000, &w);
	char until[32], past[32];
	int64_t now_ms = sl_now_us() / 1000;

	assert_null(shaping_redis_command(r, 1, (const char *[]){ "PING" },
	    on_reply, &w));		/* not up yet: the caller falls back */
	assert_int_equal(loop_until(base, &w.ups, 1, 3000), 1);
	assert_true(shaping_redis_is_up(r));

	/* a message: GCRA, one now, the next only an interval later */
	eval(base, r, SHAPING_LUA_SEND, 5, (const char *[]){ "t:rate", "t:w",
	    "1000000", "0", "1000" }, &w);
	assert_int_equal(w.code, 0);
	eval(base, r, SHAPING_LUA_SEND, 5, (const char *[]){ "t:rate", "t:w",
	    "1000000", "0", "1000" }, &w);
	assert_int_equal(w.code, 1);
	assert_true(w.value > 900000 && w.value <= 1000000);
	/* with a budget of 2 and no rate: 1, 2, then spent */
	for (int i = 1; i <= 3; i++) {
		eval(base, r, SHAPING_LUA_SEND, 5, (const char *[]){ "t:r2",
		    "t:warm", "0", "2", "60000" }, &w);
		assert_int_equal(w.code, i <= 2 ? 0 : 2);
		assert_int_equal(w.value, i <= 2 ? i : 2);
	}
	/* a spent budget takes no rate token either */
	eval(base, r, SHAPING_LUA_SEND, 5, (const char *[]){ "t:r3", "t:warm",
	    "1000000", "2", "60000" }, &w);
	assert_int_equal(w.code, 2);
	eval(base, r, SHAPING_LUA_SEND, 5, (const char *[]){ "t:r3", "t:warm3",
	    "1000000", "5", "60000" }, &w);
	assert_int_equal(w.code, 0);

	/* connection slots: 2 of them; a renewed one stays counted */
	eval(base, r, SHAPING_LUA_OPEN, 6, (const char *[]){ "t:conn", "t:cr",
	    "a", "2", "60000", "0" }, &w);
	assert_int_equal(w.code, 0);
	assert_int_equal(w.value, 1);
	eval(base, r, SHAPING_LUA_OPEN, 6, (const char *[]){ "t:conn", "t:cr",
	    "b", "2", "60000", "0" }, &w);
	assert_int_equal(w.code, 0);
	eval(base, r, SHAPING_LUA_OPEN, 6, (const char *[]){ "t:conn", "t:cr",
	    "c", "2", "60000", "0" }, &w);
	assert_int_equal(w.code, 2);
	assert_int_equal(w.value, 2);
	/* a slot whose holder stopped renewing lapses */
	eval(base, r, SHAPING_LUA_OPEN, 6, (const char *[]){ "t:conn2", "t:cr",
	    "x", "1", "100", "0" }, &w);
	assert_int_equal(w.code, 0);
	eval(base, r, SHAPING_LUA_OPEN, 6, (const char *[]){ "t:conn2", "t:cr",
	    "y", "1", "100", "0" }, &w);
	assert_int_equal(w.code, 2);
	test_loop_ms(base, 150);
	eval(base, r, SHAPING_LUA_OPEN, 6, (const char *[]){ "t:conn2", "t:cr",
	    "y", "1", "100", "0" }, &w);
	assert_int_equal(w.code, 0);
	/* ... unless renewed: RENEW counts it even over the limit */
	eval(base, r, SHAPING_LUA_RENEW, 3, (const char *[]){ "t:conn2", "z",
	    "60000" }, &w);
	eval(base, r, SHAPING_LUA_OPEN, 6, (const char *[]){ "t:conn2", "t:cr",
	    "q", "3", "60000", "0" }, &w);
	assert_int_equal(w.code, 0);
	assert_int_equal(w.value, 3);
	/* a connection rate: one now, the next a second later */
	eval(base, r, SHAPING_LUA_OPEN, 6, (const char *[]){ "t:conn3", "t:cr3",
	    "a", "0", "60000", "1000000" }, &w);
	assert_int_equal(w.code, 0);
	eval(base, r, SHAPING_LUA_OPEN, 6, (const char *[]){ "t:conn3", "t:cr3",
	    "b", "0", "60000", "1000000" }, &w);
	assert_int_equal(w.code, 1);
	assert_true(w.value > 900000);

	/* the first value of a warm-up start wins */
	eval(base, r, SHAPING_LUA_FIRST, 2, (const char *[]){ "t:first", "100" },
	    &w);
	assert_string_equal(w.last_str, "100");
	eval(base, r, SHAPING_LUA_FIRST, 2, (const char *[]){ "t:first", "200" },
	    &w);
	assert_string_equal(w.last_str, "100");

	/* actions: a later until wins; passed ones are dropped on reading */
	snprintf(until, sizeof(until), "%lld", (long long)now_ms + 60000);
	snprintf(past, sizeof(past), "%lld", (long long)now_ms - 1000);
	{
		char val[64];
		snprintf(val, sizeof(val), "%s tss04 0", until);
		eval(base, r, SHAPING_LUA_ACTION, 4, (const char *[]){ "t:act",
		    "big\tsuspend", val, until }, &w);
	}
	assert_int_equal(w.last_int, 1);
	eval(base, r, SHAPING_LUA_ACTION, 4, (const char *[]){ "t:act",
	    "big\tsuspend", "1 other 0", past }, &w);
	assert_int_equal(w.last_int, 0);
	{
		char val[64];
		snprintf(val, sizeof(val), "%s tss04 0", past);
		eval(base, r, SHAPING_LUA_ACTION, 4, (const char *[]){ "t:act",
		    "old\trate", val, past }, &w);
		assert_int_equal(w.last_int, 1);
	}
	eval(base, r, SHAPING_LUA_ACTIONS, 1, (const char *[]){ "t:act" }, &w);
	assert_int_equal(w.last_type, REDIS_REPLY_ARRAY);
	assert_int_equal(w.elements, 2);	/* "old" is gone */

	/* Redis lost the scripts: EVALSHA's NOSCRIPT, then EVAL does it */
	w.done = 0;
	assert_non_null(shaping_redis_command(r, 2, (const char *[]){ "SCRIPT",
	    "FLUSH" }, on_reply, &w));
	loop_until(base, &w.done, 1, 2000);
	eval(base, r, SHAPING_LUA_SEND, 5, (const char *[]){ "t:r9", "t:w9",
	    "0", "5", "60000" }, &w);
	assert_int_equal(w.last_type, REDIS_REPLY_ARRAY);
	assert_int_equal(w.code, 0);
	assert_int_equal(w.value, 1);

	assert_int_equal(w.nulls, 0);
	assert_int_equal(w.downs, 0);
	shaping_redis_free(r);
	redis_kill(pid);
	event_base_free(base);
}

/* Two nodes share one GCRA: together they get one event per interval. */
static void
test_shared_gcra(void **state)
{
	struct event_base *base = event_base_new();
	int port = test_free_port();
	pid_t pid = redis_start(port);
	struct watch wa = { 0 }, wb = { 0 };
	struct shaping_redis *a = client(base, port, 1000, &wa);
	struct shaping_redis *b = client(base, port, 1000, &wb);
	int granted = 0;
	int64_t start;

	loop_until(base, &wa.ups, 1, 3000);
	loop_until(base, &wb.ups, 1, 3000);
	start = sl_mono_ms();
	/* both ask as fast as they can for 1 s, at 20 per second */
	while (sl_mono_ms() - start < 1000) {
		const char *args[] = { "t:shared", "t:sw", "50000", "0", "1" };
		eval(base, a, SHAPING_LUA_SEND, 5, args, &wa);
		granted += wa.code == 0;
		eval(base, b, SHAPING_LUA_SEND, 5, args, &wb);
		granted += wb.code == 0;
	}
	assert_true(granted >= 18 && granted <= 21);
	shaping_redis_free(a);
	shaping_redis_free(b);
	redis_kill(pid);
	event_base_free(base);
}

static void
test_down_and_back(void **state)
{
	struct event_base *base = event_base_new();
	int port = test_free_port();
	pid_t pid = redis_start(port);
	struct watch w = { 0 };
	struct shaping_redis *r = client(base, port, 500, &w);
	int before = log_count("redis unavailable");

	assert_int_equal(loop_until(base, &w.ups, 1, 3000), 1);
	/* a command in flight when Redis dies is answered NULL */
	w.done = 0;
	assert_non_null(shaping_redis_command(r, 3, (const char *[]){ "BLPOP",
	    "t:never", "5" }, on_reply, &w));
	test_loop_ms(base, 50);
	redis_kill(pid);
	assert_int_equal(loop_until(base, &w.downs, 1, 3000), 1);
	loop_until(base, &w.done, 1, 1000);
	assert_int_equal(w.nulls, 1);
	assert_false(shaping_redis_is_up(r));
	assert_null(shaping_redis_eval(r, SHAPING_LUA_SEND, 2, 5,
	    (const char *[]){ "k", "w", "1", "0", "1" }, on_reply, &w));
	/* attempts every 100 ms fail for a second: logged once */
	test_loop_ms(base, 1000);
	assert_int_equal(log_count("redis unavailable") - before, 1);
	assert_int_equal(w.downs, 1);

	/* back on the same port: up again, logged once */
	pid = redis_start(port);
	assert_int_equal(loop_until(base, &w.ups, 2, 3000), 2);
	assert_int_equal(log_count("redis available"), 1);
	eval(base, r, SHAPING_LUA_SEND, 5, (const char *[]){ "t:r", "t:w",
	    "1000", "0", "1" }, &w);
	assert_int_equal(w.code, 0);
	shaping_redis_free(r);
	redis_kill(pid);
	event_base_free(base);
}

/* A server that accepts and never answers: the timeout ends it. */
static void
test_timeout(void **state)
{
	struct event_base *base = event_base_new();
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM, 0), before;
	struct watch w = { 0 };
	struct shaping_redis *r;
	int64_t t0;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(fd, 16), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	before = log_count("no answer within 200 ms");
	t0 = sl_mono_ms();
	r = client(base, ntohs(sin.sin_port), 200, &w);
	while (log_count("no answer within 200 ms") == before &&
	    sl_mono_ms() - t0 < 3000)
		test_loop_ms(base, 50);
	assert_int_equal(log_count("no answer within 200 ms") - before, 1);
	assert_int_equal(w.ups, 0);
	assert_false(shaping_redis_is_up(r));
	/* more attempts, each timing out, are not logged again */
	test_loop_ms(base, 800);
	assert_int_equal(log_count("no answer within 200 ms") - before, 1);
	shaping_redis_free(r);
	close(fd);
	event_base_free(base);
}

static int
setup(void **state)
{
	int fd = mkstemp(logpath);

	close(fd);
	return log_open(logpath, 0, "info");
}

static int
teardown(void **state)
{
	log_close();
	unlink(logpath);
	return 0;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_url),
		cmocka_unit_test(test_scripts),
		cmocka_unit_test(test_shared_gcra),
		cmocka_unit_test(test_down_and_back),
		cmocka_unit_test(test_timeout),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, setup, teardown);
}
