/* SPDX-License-Identifier: MIT */
/*
 * test_shaping.c: the live state of shaping (src/shaping/shaping.c, act.c,
 * status.c) on an injected clock: a path's rate (GO, WAIT with its reason,
 * GO an interval later), its waiter woken by the path's timer, connection
 * limits and a closed connection waking the next opener, warm-up budgets
 * across windows, rules counting replies to a suspension and resume,
 * per-recipient verdicts, a rate action, status JSON, a reload keeping
 * actions, and a node's share of the limits while Redis is down.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <jansson.h>

#include "conf/conf.h"
#include "log/log.h"
#include "shaping/shaping_int.h"
#include "util/util.h"

#include "shaping_test.h"

#define SEC 1000000LL
#define MS 1000LL

static char dir[] = "/tmp/test_shaping_XXXXXX";
static char logpath[300];
static int64_t fake;

static int64_t
fake_now(void *arg)
{
	return fake;
}

struct world {
	struct event_base *base;
	struct sl_conf *conf;
	struct shaping *sh;
	char path[320];
};

/* Shaping by text, on the fake clock (set to start) unless real. */
static void
world_new(struct world *w, const char *text, const char *extra, int real)
{
	char err[512], opt[400];
	FILE *f;

	memset(w, 0, sizeof(*w));
	w->base = event_base_new();
	snprintf(w->path, sizeof(w->path), "%s/shaping.ini", dir);
	f = fopen(w->path, "w");
	fputs(text, f);
	fclose(f);
	w->conf = conf_load(NULL, err, sizeof(err));
	snprintf(opt, sizeof(opt), "shaping.file=%s", w->path);
	assert_int_equal(conf_override(w->conf, opt, err, sizeof(err)), 0);
	snprintf(opt, sizeof(opt), "spool.dir=%s", dir);
	assert_int_equal(conf_override(w->conf, opt, err, sizeof(err)), 0);
	if (extra != NULL)
		for (const char *p = extra; *p; p += strlen(p) + 1)
			assert_int_equal(conf_override(w->conf, p, err,
			    sizeof(err)), 0);
	w->sh = shaping_new(w->base, NULL, w->conf, err, sizeof(err));
	if (w->sh == NULL)
		fail_msg("%s", err);
	if (!real)
		shaping_set_clock(w->sh, fake_now, NULL);
}

static void
world_free(struct world *w)
{
	shaping_free(w->sh);
	conf_free(w->conf);
	event_base_free(w->base);
}

struct waiter {
	struct shaping_wait w;	/* first */
	int woken;
};

static void
waiter_fn(struct shaping_wait *w)
{
	((struct waiter *)w)->woken++;
}

static struct shaping_path *
open_go(struct shaping_site *site)
{
	struct shaping_path *p = NULL;
	const char *why;

	if (shaping_open(site, 0, 1u << AF_INET, NULL, &p, &why) != SHAPING_GO)
		fail_msg("open: %s", why);
	return p;
}

static int
log_has(const char *text)
{
	return test_log_count(logpath, text);
}

static void
test_rate(void **state)
{
	struct world w;
	struct shaping_site *site;
	struct shaping_path *p;
	const char *why = NULL;
	int64_t t0 = 1000000 * SEC;

	fake = t0;
	world_new(&w, "[site big]\ndomains = big.test\nrate = 10/s\n", NULL, 0);
	site = shaping_site_get(w.sh, "big.test", NULL, 0, "mx.big.test");
	assert_string_equal(shaping_site_name(site), "big");
	p = open_go(site);
	assert_int_equal(shaping_send(p, NULL, &why), SHAPING_GO);
	assert_int_equal(shaping_send(p, NULL, &why), SHAPING_WAIT);
	assert_string_equal(why, "rate limit 10/s of site big from default");
	assert_int_equal(shaping_send_due(p, NULL, &why), 0);
	fake = t0 + 99 * MS;
	assert_int_equal(shaping_send(p, NULL, &why), SHAPING_WAIT);
	fake = t0 + 100 * MS;
	assert_int_equal(shaping_send_due(p, NULL, &why), 1);
	assert_int_equal(shaping_send(p, NULL, &why), SHAPING_GO);
	/* a destination no [site] names: its next hops, no limits */
	{
		struct shaping_site *other = shaping_site_get(w.sh, "x.test",
		    NULL, 0, "mx1.x.test,mx2.x.test");
		struct shaping_path *q = open_go(other);
		assert_string_equal(shaping_site_name(other),
		    "mx1.x.test,mx2.x.test");
		for (int i = 0; i < 100; i++)
			assert_int_equal(shaping_send(q, NULL, &why), SHAPING_GO);
		shaping_conn_closed(q, 1);
		shaping_site_put(other);
	}
	shaping_conn_closed(p, 1);
	shaping_site_put(site);
	world_free(&w);
}

/* On the real clock: a waiting connection is woken by the path's timer
 * once its token is due, not before. */
static void
test_waiter_woken(void **state)
{
	struct world w;
	struct shaping_site *site;
	struct shaping_path *p;
	struct waiter a = { .w.fn = waiter_fn };
	const char *why;
	int64_t t0;

	world_new(&w, "[site big]\ndomains = big.test\nrate = 5/s\n", NULL, 1);
	site = shaping_site_get(w.sh, "big.test", NULL, 0, "k");
	p = open_go(site);
	assert_int_equal(shaping_send(p, &a.w, &why), SHAPING_GO);
	t0 = sl_mono_ms();
	assert_int_equal(shaping_send(p, &a.w, &why), SHAPING_WAIT);
	while (!a.woken && sl_mono_ms() - t0 < 2000)
		test_loop_ms(w.base, 10);
	assert_int_equal(a.woken, 1);
	assert_true(sl_mono_ms() - t0 >= 150);
	assert_int_equal(shaping_send(p, &a.w, &why), SHAPING_GO);
	/* a cancelled waiter is not woken */
	assert_int_equal(shaping_send(p, &a.w, &why), SHAPING_WAIT);
	shaping_wait_cancel(&a.w);
	test_loop_ms(w.base, 300);
	assert_int_equal(a.woken, 1);
	shaping_conn_closed(p, 1);
	shaping_site_put(site);
	world_free(&w);
}

static void
test_connections(void **state)
{
	struct world w;
	struct shaping_site *site;
	struct shaping_path *p1, *p2, *p3 = NULL;
	struct waiter a = { .w.fn = waiter_fn };
	const char *why;

	world_new(&w, "[site big]\nmx = *.big.test\nconnections = 2\n", NULL, 1);
	{
		const char *hosts[] = { "mx.big.test" };
		site = shaping_site_get(w.sh, "big.test", hosts, 1, "mx.big.test");
	}
	p1 = open_go(site);
	p2 = open_go(site);
	assert_int_equal(shaping_open(site, 0, 1u << AF_INET, &a.w, &p3, &why),
	    SHAPING_WAIT);
	assert_string_equal(why, "connection limit of site big");
	test_loop_ms(w.base, 50);
	assert_int_equal(a.woken, 0);		/* nothing freed yet */
	shaping_conn_closed(p1, 1);
	test_loop_ms(w.base, 50);
	assert_int_equal(a.woken, 1);
	p3 = open_go(site);
	shaping_conn_closed(p2, 1);
	shaping_conn_closed(p3, 0);
	shaping_site_put(site);
	world_free(&w);
}

static void
test_warmup(void **state)
{
	struct world w;
	struct shaping_site *site;
	struct shaping_path *p;
	const char *why;
	/* 2026-11-24 00:00:00 UTC */
	int64_t day = 1795478400LL * SEC;
	int sent[6] = { 0 };

	world_new(&w, "[site warm]\ndomains = warm.test\nsource = 127.0.0.9\n\n"
	    "[source 127.0.0.9]\nwarmup = 2/s, x2 every 2s, until 8/s\n"
	    "warmup_start = 2026-11-24\n", NULL, 0);
	fake = day;
	site = shaping_site_get(w.sh, "warm.test", NULL, 0, "k");
	p = open_go(site);
	assert_string_equal(shaping_path_name(p), "127.0.0.9");
	/* ask 20 times in each second of six */
	for (int s = 0; s < 6; s++) {
		for (int i = 0; i < 20; i++) {
			fake = day + s * SEC + i * 10 * MS;
			sent[s] += shaping_send(p, NULL, &why) == SHAPING_GO;
		}
	}
	assert_int_equal(sent[0], 2);
	assert_int_equal(sent[1], 2);
	assert_int_equal(sent[2], 4);
	assert_int_equal(sent[3], 4);
	assert_int_equal(sent[4], 8);
	assert_int_equal(sent[5], 8);
	assert_non_null(strstr(why, "warm-up budget"));
	shaping_conn_closed(p, 1);
	shaping_site_put(site);
	world_free(&w);
}

static json_t *
site_status(struct shaping *sh, const char *name)
{
	json_t *st = shaping_status(sh), *s;
	size_t i;

	json_array_foreach(json_object_get(st, "sites"), i, s)
		if (strcmp(json_string_value(json_object_get(s, "site")),
		    name) == 0) {
			json_incref(s);
			json_decref(st);
			return s;
		}
	json_decref(st);
	return NULL;
}

static void
test_rules_suspend_resume(void **state)
{
	struct world w;
	struct shaping_site *site;
	const char *why;
	int64_t t0 = 2000000 * SEC, retry = 0;
	json_t *st;
	static const char tss04[] = "421 4.7.0 [TSS04] Messages from "
	    "192.0.2.1 temporarily deferred";

	fake = t0;
	world_new(&w, "[site big]\ndomains = big.test\nrate = 10/s\n\n"
	    "[rule tss04]\nsite = big\nmatch = ^421 4\\.7\\.0 .*TSS04\n"
	    "threshold = 3 in 10m\naction = suspend 30m\n\n"
	    "[rule full]\nsite = *\nmatch = ^452 4\\.2\\.2\naction = bounce\n\n"
	    "[rule later]\nmatch = ^450 \naction = retry_in 4h\n\n"
	    "[rule slow]\nmatch = ^451 4\\.7\\.650\naction = rate 1/s for 1h\n",
	    NULL, 0);
	site = shaping_site_get(w.sh, "big.test", NULL, 0, "k");
	assert_int_equal(shaping_reply(site, "250 2.0.0 Ok"), 0);
	assert_int_equal(shaping_reply(site, tss04), 1);
	assert_int_equal(shaping_reply(site, tss04), 1);
	assert_int_equal(shaping_site_suspended(site, &why), 0);
	fake += 60 * SEC;
	assert_int_equal(shaping_reply(site, tss04), 1);
	assert_int_equal(shaping_site_suspended(site, &why),
	    (fake + 1800 * SEC) / 1000);
	assert_non_null(strstr(why, "site big suspended by rule tss04 until "));
	assert_int_equal(log_has("shaping action site=big rule=tss04 "
	    "action=suspend"), 1);
	/* matches while suspended extend nothing and log nothing */
	for (int i = 0; i < 3; i++)
		shaping_reply(site, tss04);
	assert_int_equal(log_has("rule=tss04 action=suspend"), 1);

	st = site_status(w.sh, "big");
	assert_non_null(st);
	assert_string_equal(json_string_value(json_object_get(json_array_get(
	    json_object_get(st, "actions"), 0), "rule")), "tss04");
	assert_string_equal(json_string_value(json_object_get(json_object_get(
	    st, "limits"), "rate")), "10/s");
	json_decref(st);

	/* a reload keeps the suspension and takes the new limits */
	{
		FILE *f = fopen(w.path, "a");
		char err[256];
		fputs("[site spare]\ndomains = spare.test\n", f);
		fclose(f);
		assert_int_equal(shaping_reload(w.sh, w.conf, err, sizeof(err)),
		    0);
		assert_true(shaping_site_suspended(site, &why) != 0);
		st = site_status(w.sh, "spare");
		assert_non_null(st);
		json_decref(st);
	}

	assert_int_equal(shaping_resume(w.sh, "big"), 0);
	assert_int_equal(shaping_site_suspended(site, &why), 0);
	assert_int_equal(shaping_resume(w.sh, "big"), -1);
	assert_int_equal(shaping_resume(w.sh, "nosuch"), -1);
	assert_int_equal(log_has("shaping resumed site=big"), 1);

	/* per recipient */
	assert_int_equal(shaping_verdict(site, "452 4.2.2 Mailbox full", &retry,
	    &why), SHAPING_BOUNCE);
	assert_string_equal(why, "full");
	assert_int_equal(shaping_verdict(site, "450 4.2.1 Slow down", &retry,
	    &why), SHAPING_RETRY_IN);
	assert_int_equal(retry, 4 * 3600);
	assert_int_equal(shaping_verdict(site, "451 4.3.0 Try later", &retry,
	    &why), SHAPING_KEEP);

	/* a rate action: 1/s for an hour */
	{
		struct shaping_path *p = open_go(site);
		shaping_reply(site, "451 4.7.650 rate limited due to IP "
		    "reputation");
		assert_int_equal(shaping_send(p, NULL, &why), SHAPING_GO);
		fake += 500 * MS;
		assert_int_equal(shaping_send(p, NULL, &why), SHAPING_WAIT);
		assert_string_equal(why, "rate limit 1/s of site big from "
		    "default");
		fake += 500 * MS;
		assert_int_equal(shaping_send(p, NULL, &why), SHAPING_GO);
		fake += 3600 * SEC;		/* over: 10/s again */
		assert_int_equal(shaping_send(p, NULL, &why), SHAPING_GO);
		fake += 100 * MS;
		assert_int_equal(shaping_send(p, NULL, &why), SHAPING_GO);
		shaping_conn_closed(p, 1);
	}
	shaping_site_put(site);
	world_free(&w);
}

/* Redis set but not there: each of 2 nodes keeps to half the rate, and
 * says so once. */
static void
test_share_while_redis_down(void **state)
{
	struct world w;
	struct shaping_site *site;
	struct shaping_path *p;
	const char *why;
	int before = log_has("redis unavailable");
	char url[64], extra[200];
	int n;

	/* a port nothing listens on */
	snprintf(url, sizeof(url), "redis://127.0.0.1:%d/0", test_free_port());
	n = snprintf(extra, sizeof(extra), "shaping.redis=%s", url);
	snprintf(extra + n + 1, sizeof(extra) - n - 1, "shaping.nodes=2");
	extra[n + 1 + strlen("shaping.nodes=2") + 1] = '\0';
	world_new(&w, "[site big]\ndomains = big.test\nrate = 10/s\n"
	    "connections = 4\n", extra, 0);
	fake = 3000000 * SEC;
	test_loop_ms(w.base, 100);		/* the first attempt fails */
	site = shaping_site_get(w.sh, "big.test", NULL, 0, "k");
	p = open_go(site);
	/* under a rate, the next opens once this one is greeted */
	{
		struct shaping_path *r = NULL;
		assert_int_equal(shaping_open(site, 0, 1u << AF_INET, NULL, &r,
		    &why), SHAPING_WAIT);
		shaping_conn_ready(p);
	}
	assert_int_equal(shaping_send(p, NULL, &why), SHAPING_GO);
	fake += 100 * MS;
	assert_int_equal(shaping_send(p, NULL, &why), SHAPING_WAIT);
	fake += 100 * MS;
	assert_int_equal(shaping_send(p, NULL, &why), SHAPING_GO);
	/* half the connections too: 2 of 4 */
	{
		struct shaping_path *q, *r = NULL;
		fake += 200 * MS;	/* a token is due: opening makes sense */
		q = open_go(site);
		shaping_conn_ready(q);
		assert_int_equal(shaping_open(site, 0, 1u << AF_INET, NULL, &r,
		    &why), SHAPING_WAIT);
		assert_string_equal(why, "connection limit of site big");
		shaping_conn_closed(q, 1);
	}
	assert_int_equal(log_has("redis unavailable") - before, 1);
	{
		json_t *st = shaping_status(w.sh);
		assert_string_equal(json_string_value(json_object_get(
		    json_object_get(st, "redis"), "state")), "down");
		json_decref(st);
	}
	shaping_conn_closed(p, 1);
	shaping_site_put(site);
	world_free(&w);
}

static int
setup(void **state)
{
	int fd;

	if (mkdtemp(dir) == NULL)
		return -1;
	snprintf(logpath, sizeof(logpath), "%s/log", dir);
	fd = open(logpath, O_CREAT | O_WRONLY, 0600);
	close(fd);
	return log_open(logpath, 0, "info");
}

static int
teardown(void **state)
{
	char cmd[400];

	log_close();
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rate),
		cmocka_unit_test(test_waiter_woken),
		cmocka_unit_test(test_connections),
		cmocka_unit_test(test_warmup),
		cmocka_unit_test(test_rules_suspend_resume),
		cmocka_unit_test(test_share_while_redis_down),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
