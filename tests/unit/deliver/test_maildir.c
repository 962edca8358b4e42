/* SPDX-License-Identifier: MIT */
/*
 * test_maildir.c: the Maildir agent of src/deliver/maildir.c on a real
 * event loop and its worker threads, writing into a temporary directory:
 * the path of each address (case, encoding, nothing outside the root),
 * the file in new/ byte for byte (the two headers, then the body as
 * stored), nothing left in tmp/, unique names, an error as a 4xx with no
 * file; and conf_endpoint_parse, the address of an LMTP server.
 *
 * Run one test by name: test_maildir test_deliver (a cmocka filter).
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/thread.h>

#include "conf/conf.h"
#include "deliver/deliver.h"
#include "log/log.h"
#include "smtpc/smtpc.h"

#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

static void
test_path(void **state)
{
	char buf[256];

	assert_int_equal(maildir_path("/r", "Alice@Example.TEST", buf,
	    sizeof(buf)), 0);
	assert_string_equal(buf, "/r/example.test/alice/Maildir");
	assert_int_equal(maildir_path("/r", "../../etc@d.test", buf,
	    sizeof(buf)), 0);
	assert_string_equal(buf, "/r/d.test/%2E.%2F..%2Fetc/Maildir");
	assert_int_equal(maildir_path("/r", "a/b@..", buf, sizeof(buf)), 0);
	assert_string_equal(buf, "/r/%2E./a%2Fb/Maildir");
	assert_int_equal(maildir_path("/r", "first.last+tag@d.test", buf,
	    sizeof(buf)), 0);
	assert_string_equal(buf, "/r/d.test/first.last+tag/Maildir");
	assert_int_equal(maildir_path("/r", "\"a b\"@d.test", buf,
	    sizeof(buf)), 0);
	assert_string_equal(buf, "/r/d.test/%22a%20b%22/Maildir");
	assert_int_equal(maildir_path("/r", "Postmaster", buf, sizeof(buf)),
	    0);
	assert_string_equal(buf, "/r/_/postmaster/Maildir");
	assert_int_equal(maildir_path("/r", "alice@d.test", buf, 10), -1);
	assert_int_equal(maildir_path("/r", "@d.test", buf, sizeof(buf)), -1);
}

struct run {
	struct event_base *base;
	struct maildir *md;
	char root[64];
	int done;
};

static void
on_done(void *arg, struct smtpc_msg *m)
{
	struct run *r = arg;

	r->done++;
}

static void
run_setup(struct run *r)
{
	memset(r, 0, sizeof(*r));
	r->base = event_base_new();
	r->md = maildir_new(r->base, 2);
	snprintf(r->root, sizeof(r->root), "/tmp/sluice-md-XXXXXX");
	assert_non_null(mkdtemp(r->root));
}

static void
tick(evutil_socket_t fd, short what, void *arg)
{
}

/* Turn the loop (a tick keeps it from running dry) until want are done. */
static void
run_wait(struct run *r, int want)
{
	struct event *t = event_new(r->base, -1, EV_PERSIST, tick, NULL);
	struct timeval tv = { 0, 10000 };

	evtimer_add(t, &tv);
	for (int i = 0; i < 1000 && r->done < want; i++)
		event_base_loop(r->base, EVLOOP_ONCE);
	event_free(t);
	assert_int_equal(r->done, want);
}

static void
run_teardown(struct run *r)
{
	char cmd[128];

	maildir_free(r->md);
	event_base_free(r->base);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", r->root);
	assert_int_equal(system(cmd), 0);
}

/* The names of the files in dir (at most 64), and how many. */
static int
list(const char *dir, char names[][256])
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;

	if (d == NULL)
		return -1;
	while ((de = readdir(d)) != NULL && n < 64) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(names[n++], 256, "%s", de->d_name);
	}
	closedir(d);
	return n;
}

static char *
slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf;

	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	*len = (size_t)ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc(*len + 1);
	assert_int_equal(fread(buf, 1, *len, f), *len);
	fclose(f);
	return buf;
}

static void
test_deliver(void **state)
{
	static const char body[] = "Received: from x\r\nSubject: hi\r\n\r\n"
	    "line\r\n.dot\r\nlast";
	struct smtpc_rcpt rc[2] = { { .rid = 0, .addr = "Alice@D.test" },
		{ .rid = 1, .addr = "bob@d.test" } };
	struct smtpc_msg m = { .mid = 7, .sender = "s@src.test", .nrcpt = 2,
		.rcpts = rc };
	char names[64][256], dir[512], path[1024], want[512];
	struct run r;

	run_setup(&r);
	m.body = evbuffer_new();
	evbuffer_add(m.body, body, sizeof(body) - 1);
	maildir_deliver(r.md, 3, r.root, &m, on_done, &r);
	assert_int_equal(r.done, 0);	/* never synchronously */
	run_wait(&r, 1);
	for (int i = 0; i < 2; i++) {
		size_t len;
		char *got;

		assert_int_equal(rc[i].code, 250);
		assert_non_null(strstr(rc[i].reply, "250 2.0.0 Delivered to "));
		snprintf(dir, sizeof(dir), "%s/d.test/%s/Maildir", r.root,
		    i == 0 ? "alice" : "bob");
		snprintf(path, sizeof(path), "%s/tmp", dir);
		assert_int_equal(list(path, names), 0);
		snprintf(path, sizeof(path), "%s/cur", dir);
		assert_int_equal(list(path, names), 0);
		snprintf(path, sizeof(path), "%s/new", dir);
		assert_int_equal(list(path, names), 1);
		assert_non_null(strstr(rc[i].reply, names[0]));
		snprintf(path, sizeof(path), "%s/new/%s", dir, names[0]);
		got = slurp(path, &len);
		snprintf(want, sizeof(want), "Return-Path: <s@src.test>\r\n"
		    "Delivered-To: %s\r\n%s", rc[i].addr, body);
		assert_int_equal(len, strlen(want));
		assert_memory_equal(got, want, len);
		free(got);
	}
	evbuffer_free(m.body);
	run_teardown(&r);
}

/* 50 copies for one mailbox in one job, a big body in many pieces. */
static void
test_unique_and_big(void **state)
{
	struct smtpc_rcpt rc[50];
	struct smtpc_msg m = { .mid = 8, .sender = "", .nrcpt = 50,
		.rcpts = rc };
	char names[64][256], path[1024];
	struct run r;
	size_t len;
	char *got;

	run_setup(&r);
	m.body = evbuffer_new();
	for (int i = 0; i < 2000; i++)
		evbuffer_add_printf(m.body, "line %04d of a big body\r\n", i);
	for (int i = 0; i < 50; i++)
		rc[i] = (struct smtpc_rcpt){ .rid = (uint32_t)i,
			.addr = "same@d.test" };
	maildir_deliver(r.md, 4, r.root, &m, on_done, &r);
	run_wait(&r, 1);
	snprintf(path, sizeof(path), "%s/d.test/same/Maildir/new", r.root);
	assert_int_equal(list(path, names), 50);
	for (int i = 0; i < 50; i++)
		for (int j = i + 1; j < 50; j++)
			assert_string_not_equal(names[i], names[j]);
	snprintf(path, sizeof(path), "%s/d.test/same/Maildir/new/%s", r.root,
	    names[7]);
	got = slurp(path, &len);
	assert_int_equal(len, strlen("Return-Path: <>\r\nDelivered-To: "
	    "same@d.test\r\n") + evbuffer_get_length(m.body));
	assert_memory_equal(got + len - evbuffer_get_length(m.body),
	    evbuffer_pullup(m.body, -1), evbuffer_get_length(m.body));
	free(got);
	evbuffer_free(m.body);
	run_teardown(&r);
}

/* A root that is a file: 451 4.3.0, the reason, nothing written. */
static void
test_error_is_4xx(void **state)
{
	struct smtpc_rcpt rc = { .rid = 0, .addr = "a@d.test" };
	struct smtpc_msg m = { .mid = 9, .sender = "s@x", .nrcpt = 1,
		.rcpts = &rc };
	char file[128];
	struct run r;
	FILE *f;

	run_setup(&r);
	snprintf(file, sizeof(file), "%s/file", r.root);
	f = fopen(file, "w");
	fclose(f);
	m.body = evbuffer_new();
	evbuffer_add(m.body, "x\r\n", 3);
	maildir_deliver(r.md, 5, file, &m, on_done, &r);
	run_wait(&r, 1);
	assert_int_equal(rc.code, 451);
	assert_non_null(strstr(rc.reply, "451 4.3.0 Maildir error: mkdir "));
	assert_non_null(strstr(rc.reply, "Not a directory"));
	evbuffer_free(m.body);
	run_teardown(&r);
}

/* maildir_free finishes what is in flight, done callbacks included. */
static void
test_free_finishes(void **state)
{
	struct smtpc_rcpt rc = { .rid = 0, .addr = "late@d.test" };
	struct smtpc_msg m = { .mid = 10, .sender = "s@x", .nrcpt = 1,
		.rcpts = &rc };
	struct run r;

	run_setup(&r);
	m.body = evbuffer_new();
	evbuffer_add(m.body, "x\r\n", 3);
	maildir_deliver(r.md, 6, r.root, &m, on_done, &r);
	maildir_free(r.md);
	r.md = NULL;
	assert_int_equal(r.done, 1);
	assert_int_equal(rc.code, 250);
	evbuffer_free(m.body);
	run_teardown(&r);
}

static void
test_endpoint(void **state)
{
	struct sockaddr_storage ss;
	socklen_t len;

	assert_int_equal(conf_endpoint_parse("unix:/run/dovecot/lmtp", &ss,
	    &len), 0);
	assert_int_equal(ss.ss_family, AF_UNIX);
	assert_string_equal(((struct sockaddr_un *)&ss)->sun_path,
	    "/run/dovecot/lmtp");
	assert_int_equal(conf_endpoint_parse("[10.0.0.11]:24", &ss, &len), 0);
	assert_int_equal(ss.ss_family, AF_INET);
	assert_int_equal(conf_endpoint_parse("[2001:db8::1]:24", &ss, &len), 0);
	assert_int_equal(ss.ss_family, AF_INET6);
	assert_int_equal(conf_endpoint_parse("unix:relative", &ss, &len), -1);
	assert_int_equal(conf_endpoint_parse("10.0.0.11:24", &ss, &len), -1);
	assert_int_equal(conf_endpoint_parse("[mail.test]:24", &ss, &len), -1);
	assert_int_equal(conf_endpoint_parse("[*]:24", &ss, &len), -1);
	assert_int_equal(conf_endpoint_parse("[0.0.0.0]:24", &ss, &len), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_path),
		cmocka_unit_test(test_deliver),
		cmocka_unit_test(test_unique_and_big),
		cmocka_unit_test(test_error_is_4xx),
		cmocka_unit_test(test_free_finishes),
		cmocka_unit_test(test_endpoint),
	};

	evthread_use_pthreads();
	log_open("-", 0, "warning");
	return cmocka_run_group_tests(tests, NULL, NULL);
}
