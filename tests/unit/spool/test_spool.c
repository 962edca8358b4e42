/* SPDX-License-Identifier: MIT */
/*
 * test_spool.c: the spool through its public interface (spool.h), on a real
 * SQLite file in a fresh temporary directory per test, plus the backend
 * (spool_int.h) on a truly full database (PRAGMA max_page_count).
 *
 * Every test that writes closes and reopens the spool before it looks, so
 * what it checks is what a restart would find.
 */
#include <ftw.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/event.h>

#include "util/util.h"

#include "spool/spool.h"
#include "spool/spool_int.h"

struct fixture {
	struct event_base *base;
	char dir[64];
	struct spool *sp;
};

/* One request's outcome, filled by done_cb on the loop thread. */
struct res {
	int fired;
	enum spool_status st;
	int *count;		/* callbacks seen so far, shared */
	void *arg;		/* the test's own */
};

static void
done_cb(void *arg, enum spool_status st)
{
	struct res *r = arg;

	r->fired++;
	r->st = st;
	(*r->count)++;
}

static int
rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

static int
setup(void **state)
{
	struct fixture *f = xcalloc(1, sizeof(*f));
	char err[256];

	f->base = event_base_new();
	strcpy(f->dir, "/tmp/sluice-spool-XXXXXX");
	if (mkdtemp(f->dir) == NULL)
		return -1;
	/* A missing subdirectory: spool_open must create it (mkdir -p). */
	strcat(f->dir, "/a/b");
	f->sp = spool_open(f->dir, f->base, err, sizeof(err));
	if (f->sp == NULL) {
		fprintf(stderr, "spool_open: %s\n", err);
		return -1;
	}
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;
	char *top = xstrndup(f->dir, strlen(f->dir) - strlen("/a/b"));

	spool_close(f->sp);
	event_base_free(f->base);
	nftw(top, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(top);
	free(f);
	return 0;
}

static void
reopen(struct fixture *f)
{
	char err[256];

	spool_close(f->sp);
	f->sp = spool_open(f->dir, f->base, err, sizeof(err));
	if (f->sp == NULL)
		fail_msg("reopen: %s", err);
}

/* Run the loop until *count reaches want; fails after 60 s. */
static void
run_until(struct fixture *f, int *count, int want)
{
	int64_t deadline = sl_mono_ms() + 60000;
	struct timeval tv = { 0, 50000 };

	while (*count < want) {
		if (sl_mono_ms() > deadline)
			fail_msg("only %d of %d callbacks fired", *count, want);
		/* The timer bounds the wait; ONCE returns after any callback. */
		event_base_loopexit(f->base, &tv);
		event_base_loop(f->base, EVLOOP_ONCE);
	}
}

/* Deterministic pseudo-random bytes (NULs, CR, LF, 8-bit included). */
static uint8_t
body_byte(uint64_t seed, size_t i)
{
	uint64_t x = seed * 0x9E3779B97F4A7C15ull + i * 0xBF58476D1CE4E5B9ull;

	x ^= x >> 31;
	x *= 0x94D049BB133111EBull;
	return (uint8_t)(x >> 29);
}

/*
 * A message whose every field follows from (mid, seed); the body is added
 * in uneven chunks so the evbuffer has many chains.
 */
static struct spool_msg *
make_msg(uint64_t mid, unsigned seed, size_t nrcpt, size_t blen)
{
	struct spool_msg *m = xcalloc(1, sizeof(*m));
	uint8_t *b = xmalloc(blen + 1);
	size_t i, off, chunk;

	m->mid = mid;
	m->arrival = 1790000000 + seed;
	m->sender = seed % 3 == 0 ? xstrdup("") :
	    xasprintf("sender%u@example.org", seed);
	m->envid = seed % 2 ? xasprintf("env+2B%u", seed) : NULL;
	m->ret = (uint8_t)(seed % 3);
	m->flags = (uint8_t)(seed & 0xf);
	m->client_addr = xasprintf("192.0.2.%u", seed % 250);
	m->helo = xasprintf("client%u.example.net", seed);
	m->nrcpt = nrcpt;
	m->rcpts = xcalloc(nrcpt ? nrcpt : 1, sizeof(*m->rcpts));
	for (i = 0; i < nrcpt; i++) {
		struct spool_rcpt *r = &m->rcpts[i];

		r->rid = (uint32_t)i;
		r->addr = xasprintf("rcpt%zu.%u@example.com", i, seed);
		r->orcpt = i % 2 ? NULL : xasprintf("rfc822;Orig%zu@x.y", i);
		r->notify = (uint8_t)(i % 2 ? SPOOL_NOTIFY_NEVER :
		    SPOOL_NOTIFY_SUCCESS | SPOOL_NOTIFY_FAILURE |
		    SPOOL_NOTIFY_DELAY);
		r->state = SPOOL_RCPT_QUEUED;
		r->attempts = (uint32_t)i;
		r->next_retry = i ? 1790000100 + (int64_t)i : 0;
		r->last_reply = i % 3 == 1 ? xasprintf("451 4.7.1 try %zu", i) :
		    NULL;
	}
	for (i = 0; i < blen; i++)
		b[i] = body_byte(seed, i);
	m->body = evbuffer_new();
	for (off = 0, chunk = 1; off < blen; off += chunk, chunk = chunk * 3 + 7) {
		if (chunk > blen - off)
			chunk = blen - off;
		evbuffer_add(m->body, b + off, chunk);
	}
	m->size = blen;
	free(b);
	return m;
}

static void
assert_str_eq_null(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		assert_ptr_equal(a, b);
	else
		assert_string_equal(a, b);
}

static void
assert_msg_eq(const struct spool_msg *a, const struct spool_msg *b)
{
	size_t i;

	assert_int_equal(a->mid, b->mid);
	assert_int_equal(a->arrival, b->arrival);
	assert_str_eq_null(a->sender, b->sender);
	assert_str_eq_null(a->envid, b->envid);
	assert_int_equal(a->ret, b->ret);
	assert_int_equal(a->flags, b->flags);
	assert_str_eq_null(a->client_addr, b->client_addr);
	assert_str_eq_null(a->helo, b->helo);
	assert_int_equal(a->size, b->size);
	assert_int_equal(a->nrcpt, b->nrcpt);
	for (i = 0; i < a->nrcpt; i++) {
		const struct spool_rcpt *x = &a->rcpts[i], *y = &b->rcpts[i];

		assert_int_equal(x->rid, y->rid);
		assert_str_eq_null(x->addr, y->addr);
		assert_str_eq_null(x->orcpt, y->orcpt);
		assert_int_equal(x->notify, y->notify);
		assert_int_equal(x->state, y->state);
		assert_int_equal(x->attempts, y->attempts);
		assert_int_equal(x->next_retry, y->next_retry);
		assert_str_eq_null(x->last_reply, y->last_reply);
	}
}

static void
assert_body(struct spool *sp, uint64_t mid, unsigned seed, size_t blen)
{
	struct evbuffer *b = spool_body_load(sp, mid);
	unsigned char *p;
	size_t i;

	assert_non_null(b);
	assert_int_equal(evbuffer_get_length(b), blen);
	p = evbuffer_pullup(b, -1);
	for (i = 0; i < blen; i++)
		if (p[i] != body_byte(seed, i))
			fail_msg("MID %llx body byte %zu differs",
			    (unsigned long long)mid, i);
	evbuffer_free(b);
}

/* Collects recovered messages, checking they come in MID order. */
struct found {
	struct spool_msg *m[512];
	size_t n;
};

static void
recover_cb(void *arg, struct spool_msg *m)
{
	struct found *fd = arg;

	assert_null(m->body);
	if (fd->n > 0)
		assert_true(fd->m[fd->n - 1]->mid < m->mid);
	assert_true(fd->n < SL_ARRAY_LEN(fd->m));
	fd->m[fd->n++] = m;
}

static void
found_free(struct found *fd)
{
	size_t i;

	for (i = 0; i < fd->n; i++)
		spool_msg_free(fd->m[i]);
	fd->n = 0;
}

static struct spool_msg *
found_get(struct found *fd, uint64_t mid)
{
	size_t i;

	for (i = 0; i < fd->n; i++)
		if (fd->m[i]->mid == mid)
			return fd->m[i];
	return NULL;
}

static void
test_mid_fmt_parse(void **state)
{
	char buf[17];

	assert_string_equal(spool_mid_fmt(0x0123456789ABCDEFull, buf),
	    "0123456789ABCDEF");
	assert_int_equal(spool_mid_parse(buf), 0x0123456789ABCDEFull);
	assert_int_equal(spool_mid_parse("0123456789abcdef"),
	    0x0123456789ABCDEFull);
	assert_string_equal(spool_mid_fmt(1, buf), "0000000000000001");
	assert_int_equal(spool_mid_parse("FFFFFFFFFFFFFFFF"), UINT64_MAX);
	assert_int_equal(spool_mid_parse(NULL), 0);
	assert_int_equal(spool_mid_parse(""), 0);
	assert_int_equal(spool_mid_parse("0123456789ABCDE"), 0);
	assert_int_equal(spool_mid_parse("0123456789ABCDEF0"), 0);
	assert_int_equal(spool_mid_parse("0123456789ABCDEG"), 0);
	assert_int_equal(spool_mid_parse(" 123456789ABCDEF"), 0);
	assert_int_equal(spool_mid_parse("0x23456789ABCDEF"), 0);
}

static const size_t sizes[] = { 0, 1, 4095, 65537, 3 * 1024 * 1024 + 7, 100 };

static void
test_roundtrip(void **state)
{
	struct fixture *f = *state;
	struct spool_msg *want[SL_ARRAY_LEN(sizes)];
	struct res res[SL_ARRAY_LEN(sizes)];
	struct found fd = { .n = 0 };
	int count = 0;
	size_t i;

	for (i = 0; i < SL_ARRAY_LEN(sizes); i++) {
		uint64_t mid = spool_mid_next(f->sp);

		want[i] = make_msg(mid, (unsigned)i + 1, i % 4 + 1, sizes[i]);
		res[i] = (struct res){ .count = &count };
		spool_insert(f->sp, make_msg(mid, (unsigned)i + 1, i % 4 + 1,
		    sizes[i]), done_cb, &res[i]);
	}
	run_until(f, &count, (int)SL_ARRAY_LEN(sizes));
	for (i = 0; i < SL_ARRAY_LEN(sizes); i++) {
		assert_int_equal(res[i].fired, 1);
		assert_int_equal(res[i].st, SPOOL_OK);
	}

	reopen(f);
	assert_int_equal(spool_recover(f->sp, recover_cb, &fd),
	    (long)SL_ARRAY_LEN(sizes));
	for (i = 0; i < SL_ARRAY_LEN(sizes); i++) {
		assert_msg_eq(fd.m[i], want[i]);
		assert_body(f->sp, want[i]->mid, (unsigned)i + 1, sizes[i]);
		spool_msg_free(want[i]);
	}
	found_free(&fd);
	assert_null(spool_body_load(f->sp, 12345));
	assert_true(spool_last_error(f->sp)[0] != '\0');
}

static void
test_update_delete(void **state)
{
	struct fixture *f = *state;
	uint64_t m1 = spool_mid_next(f->sp), m2 = spool_mid_next(f->sp);
	struct spool_rcpt *up;
	struct res r[8];
	struct found fd = { .n = 0 };
	struct spool_msg *got;
	int count = 0, i;

	for (i = 0; i < 8; i++)
		r[i] = (struct res){ .count = &count };
	spool_insert(f->sp, make_msg(m1, 7, 3, 500), done_cb, &r[0]);
	spool_insert(f->sp, make_msg(m2, 8, 2, 700), done_cb, &r[1]);
	run_until(f, &count, 2);
	assert_int_equal(r[0].st, SPOOL_OK);
	assert_int_equal(r[1].st, SPOOL_OK);

	/* The caller keeps the array: free it before the spool thread runs. */
	up = xcalloc(2, sizeof(*up));
	up[0] = (struct spool_rcpt){ .rid = 0, .state = SPOOL_RCPT_DELIVERED,
	    .attempts = 1, .next_retry = 0,
	    .last_reply = xstrdup("250 2.0.0 ok") };
	up[1] = (struct spool_rcpt){ .rid = 2, .state = SPOOL_RCPT_DEFERRED,
	    .attempts = 5, .next_retry = 1799999999,
	    .last_reply = xstrdup("451 4.4.1 no answer") };
	spool_update_rcpts(f->sp, m1, up, 2, done_cb, &r[2]);
	free(up[0].last_reply);
	free(up[1].last_reply);
	memset(up, 0xa5, 2 * sizeof(*up));
	free(up);

	/* rid 1 exists, rid 9 does not: all or nothing, so rid 1 stays. */
	struct spool_rcpt bad[2] = {
		{ .rid = 1, .state = SPOOL_RCPT_FAILED, .attempts = 99 },
		{ .rid = 9, .state = SPOOL_RCPT_FAILED },
	};
	spool_update_rcpts(f->sp, m1, bad, 2, done_cb, &r[3]);
	spool_update_rcpts(f->sp, 424242, bad, 1, done_cb, &r[4]);
	spool_delete(f->sp, m2, done_cb, &r[5]);
	spool_delete(f->sp, 424242, done_cb, &r[6]);
	spool_delete(f->sp, m2, done_cb, &r[7]);
	run_until(f, &count, 8);
	assert_int_equal(r[2].st, SPOOL_OK);
	assert_int_equal(r[3].st, SPOOL_ERR_NOTFOUND);
	assert_int_equal(r[4].st, SPOOL_ERR_NOTFOUND);
	assert_int_equal(r[5].st, SPOOL_OK);
	assert_int_equal(r[6].st, SPOOL_ERR_NOTFOUND);
	assert_int_equal(r[7].st, SPOOL_ERR_NOTFOUND);

	reopen(f);
	assert_int_equal(spool_recover(f->sp, recover_cb, &fd), 1);
	got = found_get(&fd, m1);
	assert_non_null(got);
	assert_null(found_get(&fd, m2));
	assert_int_equal(got->nrcpt, 3);
	assert_int_equal(got->rcpts[0].state, SPOOL_RCPT_DELIVERED);
	assert_int_equal(got->rcpts[0].attempts, 1);
	assert_string_equal(got->rcpts[0].last_reply, "250 2.0.0 ok");
	/* Untouched by the failed update. */
	assert_int_equal(got->rcpts[1].state, SPOOL_RCPT_QUEUED);
	assert_int_equal(got->rcpts[1].attempts, 1);
	assert_int_equal(got->rcpts[2].state, SPOOL_RCPT_DEFERRED);
	assert_int_equal(got->rcpts[2].attempts, 5);
	assert_int_equal(got->rcpts[2].next_retry, 1799999999);
	assert_string_equal(got->rcpts[2].last_reply, "451 4.4.1 no answer");
	/* The address and DSN fields are not the update's business. */
	assert_string_equal(got->rcpts[2].addr, "rcpt2.7@example.com");
	assert_string_equal(got->rcpts[2].orcpt, "rfc822;Orig2@x.y");
	found_free(&fd);
	assert_body(f->sp, m1, 7, 500);
	assert_null(spool_body_load(f->sp, m2));
}

static void
test_mid_monotonic(void **state)
{
	struct fixture *f = *state;
	uint64_t prev = 0, mid, future;
	struct res r[2];
	int count = 0, i;

	for (i = 0; i < 10000; i++) {
		mid = spool_mid_next(f->sp);
		assert_true(mid > prev);
		prev = mid;
	}
	/* A MID far ahead of the clock, then deleted: never handed out again. */
	future = (uint64_t)sl_now_us() + 3600ull * 1000000;
	r[0] = (struct res){ .count = &count };
	r[1] = (struct res){ .count = &count };
	spool_insert(f->sp, make_msg(future, 1, 1, 10), done_cb, &r[0]);
	spool_delete(f->sp, future, done_cb, &r[1]);
	run_until(f, &count, 2);
	assert_int_equal(r[0].st, SPOOL_OK);
	assert_int_equal(r[1].st, SPOOL_OK);
	reopen(f);
	assert_true(spool_mid_next(f->sp) > future);
}

static void
test_group_commit(void **state)
{
	struct fixture *f = *state;
	enum { N = 200 };
	struct res r[N];
	struct spool_stats st;
	struct found fd = { .n = 0 };
	int count = 0, i;

	for (i = 0; i < N; i++) {
		r[i] = (struct res){ .count = &count };
		spool_insert(f->sp, make_msg(spool_mid_next(f->sp),
		    (unsigned)i, 2, 4096), done_cb, &r[i]);
	}
	run_until(f, &count, N);
	for (i = 0; i < N; i++)
		assert_int_equal(r[i].st, SPOOL_OK);
	spool_stats_get(f->sp, &st);
	print_message("group commit: %llu requests in %llu commits,"
	    " max batch %llu\n", (unsigned long long)st.requests,
	    (unsigned long long)st.commits, (unsigned long long)st.max_batch);
	assert_int_equal(st.requests, N);
	assert_true(st.commits < N);
	assert_true(st.max_batch > 1);
	assert_int_equal(st.failures, 0);
	reopen(f);
	assert_int_equal(spool_recover(f->sp, recover_cb, &fd), N);
	found_free(&fd);
}

static void
test_fault_all(void **state)
{
	struct fixture *f = *state;
	enum { N = 10, M = 3 };
	uint64_t okmid[M];
	struct res r[N + M];
	struct spool_stats st;
	struct found fd = { .n = 0 };
	int count = 0, i;

	/* More faults than transactions: however batched, all must fail. */
	spool_fault_inject(f->sp, 1000, SPOOL_ERR_NOSPACE);
	for (i = 0; i < N; i++) {
		r[i] = (struct res){ .count = &count };
		spool_insert(f->sp, make_msg(spool_mid_next(f->sp),
		    (unsigned)i, 1, 1000), done_cb, &r[i]);
	}
	run_until(f, &count, N);
	for (i = 0; i < N; i++)
		assert_int_equal(r[i].st, SPOOL_ERR_NOSPACE);
	spool_stats_get(f->sp, &st);
	assert_true(st.failures >= 1);
	assert_int_equal(st.requests, 0);
	assert_int_equal(st.commits, 0);
	assert_non_null(strstr(spool_last_error(f->sp), "injected"));

	/* Space is back: the spool works again. */
	spool_fault_inject(f->sp, 0, SPOOL_OK);
	for (i = 0; i < M; i++) {
		okmid[i] = spool_mid_next(f->sp);
		r[N + i] = (struct res){ .count = &count };
		spool_insert(f->sp, make_msg(okmid[i], 50 + (unsigned)i, 1,
		    2000), done_cb, &r[N + i]);
	}
	run_until(f, &count, N + M);
	for (i = 0; i < M; i++)
		assert_int_equal(r[N + i].st, SPOOL_OK);
	reopen(f);
	assert_int_equal(spool_recover(f->sp, recover_cb, &fd), M);
	for (i = 0; i < M; i++) {
		assert_int_equal(fd.m[i]->mid, okmid[i]);
		assert_body(f->sp, okmid[i], 50 + (unsigned)i, 2000);
	}
	found_free(&fd);
}

/*
 * Issue 9 item 13: a DSN and the mark on the recipients it reports go in
 * one transaction: both there, or (a failed commit) neither.
 */
static void
test_insert_dsn(void **state)
{
	struct fixture *f = *state;
	uint64_t orig = spool_mid_next(f->sp), dsn1, dsn2;
	struct spool_msg *m = make_msg(orig, 1, 3, 100);
	struct found fd = { .n = 0 };
	struct res r[3];
	uint32_t rids[2] = { 0, 2 };
	int count = 0;

	for (int i = 0; i < 3; i++)
		m->rcpts[i].state = SPOOL_RCPT_FAILED;
	r[0] = (struct res){ .count = &count };
	spool_insert(f->sp, m, done_cb, &r[0]);
	run_until(f, &count, 1);
	/* the first fails to commit: nothing of it stays */
	spool_fault_inject(f->sp, 1, SPOOL_ERR_NOSPACE);
	dsn1 = spool_mid_next(f->sp);
	r[1] = (struct res){ .count = &count };
	spool_insert_dsn(f->sp, make_msg(dsn1, 2, 1, 50), orig, rids, 1,
	    done_cb, &r[1]);
	run_until(f, &count, 2);
	assert_int_equal(r[1].st, SPOOL_ERR_NOSPACE);
	dsn2 = spool_mid_next(f->sp);
	r[2] = (struct res){ .count = &count };
	spool_insert_dsn(f->sp, make_msg(dsn2, 3, 1, 50), orig, rids, 2,
	    done_cb, &r[2]);
	run_until(f, &count, 3);
	assert_int_equal(r[2].st, SPOOL_OK);
	reopen(f);
	assert_int_equal(spool_recover(f->sp, recover_cb, &fd), 2);
	assert_int_equal(fd.m[0]->mid, orig);
	assert_int_equal(fd.m[1]->mid, dsn2);
	assert_int_equal(fd.m[0]->rcpts[0].state, SPOOL_RCPT_BOUNCED);
	assert_int_equal(fd.m[0]->rcpts[1].state, SPOOL_RCPT_FAILED);
	assert_int_equal(fd.m[0]->rcpts[2].state, SPOOL_RCPT_BOUNCED);
	/* nothing else of the recipients changed */
	assert_int_equal(fd.m[0]->rcpts[2].attempts, 2);
	assert_body(f->sp, dsn2, 3, 50);
	found_free(&fd);
}

/*
 * A sync of the WAL that fails: its batch is answered SPOOL_ERR_IO, and so
 * is every later one (their frames chain on what may be lost), with the
 * reason kept for the log.
 */
static void
test_fault_sync(void **state)
{
	struct fixture *f = *state;
	struct res r[3];
	int count = 0;

	r[0] = (struct res){ .count = &count };
	spool_insert(f->sp, make_msg(spool_mid_next(f->sp), 1, 1, 100),
	    done_cb, &r[0]);
	run_until(f, &count, 1);
	assert_int_equal(r[0].st, SPOOL_OK);
	spool_fault_inject_sync(f->sp);
	for (int i = 1; i < 3; i++) {
		r[i] = (struct res){ .count = &count };
		spool_insert(f->sp, make_msg(spool_mid_next(f->sp),
		    (unsigned)i + 1, 1, 100), done_cb, &r[i]);
		run_until(f, &count, i + 1);
		assert_int_equal(r[i].st, SPOOL_ERR_IO);
	}
	assert_non_null(strstr(spool_last_error(f->sp), "sync"));
}

/* The thread of a port: its own loop, answered there (spool_port_*). */
struct port_thread {
	struct spool *sp;
	struct res r[3];
	int count;
	uint64_t mids[3];
	int on_main;		/* a callback ran on the test's thread */
	pthread_t self;
};

static void
port_done_cb(void *arg, enum spool_status st)
{
	struct port_thread *t = ((struct res *)arg)->arg;

	if (!pthread_equal(pthread_self(), t->self))
		t->on_main = 1;
	done_cb(arg, st);
}

static void *
port_thread_main(void *arg)
{
	struct port_thread *t = arg;
	struct event_base *base = event_base_new();
	struct spool_port *p;
	char err[256];
	int64_t deadline = sl_mono_ms() + 60000;

	t->self = pthread_self();
	p = spool_port_new(t->sp, base, err, sizeof(err));
	if (p == NULL)
		return NULL;
	for (int i = 0; i < 3; i++) {
		t->r[i] = (struct res){ .count = &t->count, .arg = t };
		spool_port_insert(p, make_msg(t->mids[i], (unsigned)i + 20, 1,
		    500), port_done_cb, &t->r[i]);
	}
	while (t->count < 3 && sl_mono_ms() < deadline) {
		struct timeval tv = { 0, 50000 };
		event_base_loopexit(base, &tv);
		event_base_loop(base, EVLOOP_ONCE);
	}
	spool_port_free(p);
	event_base_free(base);
	return NULL;
}

/*
 * Requests queued through a port from another thread are answered on
 * that thread's loop, in order, and stored; the spool's own loop meanwhile
 * answers its own.
 */
static void
test_port(void **state)
{
	struct fixture *f = *state;
	struct port_thread t = { .sp = f->sp };
	struct found fd = { .n = 0 };
	struct res mine = { 0 };
	pthread_t th;
	int count = 0;

	for (int i = 0; i < 3; i++)
		t.mids[i] = spool_mid_next(f->sp);
	mine.count = &count;
	spool_insert(f->sp, make_msg(spool_mid_next(f->sp), 9, 1, 100),
	    done_cb, &mine);
	assert_int_equal(pthread_create(&th, NULL, port_thread_main, &t), 0);
	run_until(f, &count, 1);
	pthread_join(th, NULL);
	assert_int_equal(t.count, 3);
	assert_false(t.on_main);
	for (int i = 0; i < 3; i++)
		assert_int_equal(t.r[i].st, SPOOL_OK);
	assert_int_equal(mine.st, SPOOL_OK);
	reopen(f);
	assert_int_equal(spool_recover(f->sp, recover_cb, &fd), 4);
	for (int i = 0; i < 3; i++)
		assert_non_null(found_get(&fd, t.mids[i]));
	found_free(&fd);
}

static void
test_fault_one(void **state)
{
	struct fixture *f = *state;
	enum { N = 40 };
	uint64_t mids[N];
	struct res r[N];
	struct spool_stats st;
	struct found fd = { .n = 0 };
	int count = 0, i, nfail = 0, nok = 0;

	spool_fault_inject(f->sp, 1, SPOOL_ERR_IO);
	for (i = 0; i < N; i++) {
		mids[i] = spool_mid_next(f->sp);
		r[i] = (struct res){ .count = &count };
		spool_insert(f->sp, make_msg(mids[i], (unsigned)i, 1, 300),
		    done_cb, &r[i]);
	}
	run_until(f, &count, N);
	spool_stats_get(f->sp, &st);
	assert_int_equal(st.failures, 1);
	for (i = 0; i < N; i++) {
		if (r[i].st == SPOOL_ERR_IO)
			nfail++;
		else if (r[i].st == SPOOL_OK)
			nok++;
		else
			fail_msg("request %d: status %d", i, r[i].st);
	}
	/* The first transaction failed; it held at least the first request. */
	assert_int_equal(r[0].st, SPOOL_ERR_IO);
	assert_true(nfail >= 1);
	assert_int_equal((uint64_t)nok, st.requests);

	reopen(f);
	assert_int_equal(spool_recover(f->sp, recover_cb, &fd), nok);
	for (i = 0; i < N; i++)
		assert_true((found_get(&fd, mids[i]) != NULL) ==
		    (r[i].st == SPOOL_OK));
	found_free(&fd);
}

/* A request that fails by itself (duplicate MID) must not fail the others. */
static void
test_bad_request_isolated(void **state)
{
	struct fixture *f = *state;
	uint64_t x = spool_mid_next(f->sp), a, b;
	struct res r[4];
	struct found fd = { .n = 0 };
	int count = 0, i;

	for (i = 0; i < 4; i++)
		r[i] = (struct res){ .count = &count };
	spool_insert(f->sp, make_msg(x, 1, 1, 100), done_cb, &r[0]);
	run_until(f, &count, 1);
	assert_int_equal(r[0].st, SPOOL_OK);
	a = spool_mid_next(f->sp);
	b = spool_mid_next(f->sp);
	spool_insert(f->sp, make_msg(a, 2, 1, 100), done_cb, &r[1]);
	spool_insert(f->sp, make_msg(x, 3, 2, 200), done_cb, &r[2]);
	spool_insert(f->sp, make_msg(b, 4, 1, 100), done_cb, &r[3]);
	run_until(f, &count, 4);
	assert_int_equal(r[1].st, SPOOL_OK);
	assert_int_equal(r[2].st, SPOOL_ERR_IO);
	assert_int_equal(r[3].st, SPOOL_OK);

	reopen(f);
	assert_int_equal(spool_recover(f->sp, recover_cb, &fd), 3);
	assert_non_null(found_get(&fd, a));
	assert_non_null(found_get(&fd, b));
	/* The first x, not a mix with the rejected one. */
	assert_int_equal(found_get(&fd, x)->nrcpt, 1);
	found_free(&fd);
	assert_body(f->sp, x, 1, 100);
}

/* Callbacks of requests still queued fire inside spool_close. */
static int close_count;

static void
close_requeue_cb(void *arg, enum spool_status st)
{
	struct fixture *f = arg;
	static struct res late;

	close_count++;
	assert_int_equal(st, SPOOL_OK);
	if (close_count == 1) {
		late = (struct res){ .count = &close_count };
		/* Queued while closing: fails, but is still called back. */
		spool_delete(f->sp, 1, done_cb, &late);
	}
}

static void
test_close_drains(void **state)
{
	struct fixture *f = *state;
	struct found fd = { .n = 0 };
	char err[256];
	int i;

	close_count = 0;
	for (i = 0; i < 5; i++)
		spool_insert(f->sp, make_msg(spool_mid_next(f->sp),
		    (unsigned)i, 1, 64), close_requeue_cb, f);
	spool_close(f->sp);
	assert_int_equal(close_count, 6);
	f->sp = spool_open(f->dir, f->base, err, sizeof(err));
	assert_non_null(f->sp);
	assert_int_equal(spool_recover(f->sp, recover_cb, &fd), 5);
	found_free(&fd);
}

/*
 * The backend on a database that is really full: SQLITE_FULL must become
 * SPOOL_ERR_NOSPACE for the whole batch, leave nothing, and the next batch
 * must work once there is room again.
 */
static void
test_backend_really_full(void **state)
{
	struct fixture *f = *state;
	struct spool_batch_stats bs = { 0 };
	struct spool_req req[3], *reqs[3];
	struct spool_db *db;
	struct found fd = { .n = 0 };
	uint64_t max_mid;
	char err[256] = "";
	int i;

	/* The spool's writer is closed; the test thread owns this one. */
	spool_close(f->sp);
	f->sp = NULL;
	db = spool_db_open(f->dir, &max_mid, err, sizeof(err));
	assert_non_null(db);
	assert_int_equal(spool_db_exec(db, "PRAGMA max_page_count = 40"), 0);
	for (i = 0; i < 3; i++) {
		req[i] = (struct spool_req){ .type = SPOOL_REQ_INSERT,
		    .mid = 100 + (uint64_t)i };
		/* The last one alone does not fit in 40 pages of 4 KB. */
		req[i].msg = make_msg(req[i].mid, (unsigned)i, 1,
		    i == 2 ? 400000 : 100);
		reqs[i] = &req[i];
	}
	spool_db_run(db, reqs, 3, &bs, err, sizeof(err));
	for (i = 0; i < 3; i++)
		assert_int_equal(req[i].status, SPOOL_ERR_NOSPACE);
	assert_int_equal(bs.failures, 1);
	assert_int_equal(bs.commits, 0);
	assert_non_null(strstr(err, "full"));

	assert_int_equal(spool_db_exec(db, "PRAGMA max_page_count = 100000"),
	    0);
	spool_db_run(db, reqs, 3, &bs, err, sizeof(err));
	for (i = 0; i < 3; i++) {
		assert_int_equal(req[i].status, SPOOL_OK);
		spool_msg_free(req[i].msg);
	}
	assert_int_equal(bs.commits, 1);
	spool_db_close(db, 1);

	f->sp = spool_open(f->dir, f->base, err, sizeof(err));
	assert_non_null(f->sp);
	assert_int_equal(spool_recover(f->sp, recover_cb, &fd), 3);
	found_free(&fd);
	assert_body(f->sp, 102, 2, 400000);
}

/* Idle, the spool thread checkpoints; closing leaves an empty WAL. */
static void
test_checkpoint(void **state)
{
	struct fixture *f = *state;
	struct spool_stats st;
	struct res r = { 0 };
	struct stat sb;
	char *wal = xasprintf("%s/spool.db-wal", f->dir);
	int64_t deadline;
	int count = 0;

	r.count = &count;
	spool_insert(f->sp, make_msg(spool_mid_next(f->sp), 1, 1, 100000),
	    done_cb, &r);
	run_until(f, &count, 1);
	assert_int_equal(r.st, SPOOL_OK);
	assert_int_equal(stat(wal, &sb), 0);
	assert_true(sb.st_size > 100000);
	deadline = sl_mono_ms() + 5000;
	do {
		usleep(5000);
		spool_stats_get(f->sp, &st);
	} while (st.checkpoints == 0 && sl_mono_ms() < deadline);
	assert_true(st.checkpoints >= 1);
	reopen(f);
	spool_close(f->sp);
	f->sp = NULL;
	assert_int_equal(stat(wal, &sb), 0);
	assert_int_equal(sb.st_size, 0);
	free(wal);
}

/* An injected batch: recipients' vars and the Idempotency-Key answer are
 * stored with the message, read back by key, and go with it. */
static void
test_batch_vars_idem(void **state)
{
	struct fixture *f = *state;
	uint64_t m1 = spool_mid_next(f->sp), m2 = spool_mid_next(f->sp);
	struct spool_msg *a = make_msg(m1, 3, 3, 100), *b;
	struct res r[5];
	int count = 0;
	char *v;

	for (int i = 0; i < 5; i++)
		r[i] = (struct res){ .count = &count };
	a->flags = SPOOL_F_BATCH;
	a->rcpts[0].vars = xstrdup("{\"name\":\"Ann\"}");
	a->rcpts[2].vars = xstrdup("{\"name\":\"Cy\"}");
	a->idem_key = xstrdup("key-1");
	a->idem_answer = xstrdup("{\"batch_id\":\"x\"}");
	spool_insert(f->sp, a, done_cb, &r[0]);
	/* the same key again fails alone: the first answer stays */
	b = make_msg(m2, 4, 1, 10);
	b->idem_key = xstrdup("key-1");
	b->idem_answer = xstrdup("{}");
	spool_insert(f->sp, b, done_cb, &r[1]);
	run_until(f, &count, 2);
	assert_int_equal(r[0].st, SPOOL_OK);
	assert_int_not_equal(r[1].st, SPOOL_OK);
	reopen(f);
	v = spool_rcpt_vars(f->sp, m1, 0);
	assert_string_equal(v, "{\"name\":\"Ann\"}");
	free(v);
	assert_null(spool_rcpt_vars(f->sp, m1, 1));
	v = spool_rcpt_vars(f->sp, m1, 2);
	assert_string_equal(v, "{\"name\":\"Cy\"}");
	free(v);
	v = spool_idem_get(f->sp, "key-1", 1790000000);
	assert_string_equal(v, "{\"batch_id\":\"x\"}");
	free(v);
	/* older than the window: not seen */
	assert_null(spool_idem_get(f->sp, "key-1", 1790000004));
	assert_null(spool_idem_get(f->sp, "key-2", 0));
	spool_delete(f->sp, m1, done_cb, &r[2]);
	spool_idem_expire(f->sp, 1790000004, done_cb, &r[3]);
	run_until(f, &count, 4);
	assert_int_equal(r[3].st, SPOOL_OK);
	assert_null(spool_rcpt_vars(f->sp, m1, 0));
	assert_null(spool_idem_get(f->sp, "key-1", 0));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mid_fmt_parse),
		cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_batch_vars_idem, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_update_delete, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_mid_monotonic, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_group_commit, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_fault_all, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fault_one, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fault_sync, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_port, setup, teardown),
		cmocka_unit_test_setup_teardown(test_insert_dsn, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_bad_request_isolated, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_close_drains, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_backend_really_full, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_checkpoint, setup,
		    teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
