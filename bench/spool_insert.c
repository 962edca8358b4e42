/* SPDX-License-Identifier: MIT */
/*
 * bench/spool_insert.c: the spool's insert rate through its public
 * interface (spool.h), on a real SQLite file in a fresh directory.
 *
 * Built and run by bench/spool-insert against build/libsluice.a (it was
 * test_insert_rate and test_insert_serial in tests/unit/spool, which
 * measured but could not fail):
 *   spool_insert [-n BATCHED] [-s SERIAL] [-b BODY_BYTES] [-d DIR]
 *
 *   batched  BATCHED inserts queued as fast as the loop takes them (a
 *            server with many sessions): group commit, one sync per turn
 *   serial   SERIAL inserts, each waiting for its own completion: one
 *            commit and one sync per message
 *
 * Prints one line of JSON: messages per second of each, commits, and the
 * mean commit time. DIR should be on a real disk (default /var/tmp): on
 * tmpfs a sync costs nothing.
 */
#include <ftw.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "util/util.h"

#include "spool/spool.h"

static int done_count;

static void
done_cb(void *arg, enum spool_status st)
{
	if (st != SPOOL_OK) {
		fprintf(stderr, "spool_insert: status %d\n", (int)st);
		exit(2);
	}
	done_count++;
}

static struct spool_msg *
make_msg(uint64_t mid, unsigned seed, size_t blen)
{
	struct spool_msg *m = xcalloc(1, sizeof(*m));
	char *b = xmalloc(blen);

	m->mid = mid;
	m->arrival = 1790000000 + seed;
	m->sender = xasprintf("sender%u@example.org", seed);
	m->client_addr = xstrdup("192.0.2.1");
	m->helo = xstrdup("client.example.net");
	m->nrcpt = 2;
	m->rcpts = xcalloc(2, sizeof(*m->rcpts));
	for (size_t i = 0; i < 2; i++) {
		m->rcpts[i].rid = (uint32_t)i;
		m->rcpts[i].addr = xasprintf("rcpt%zu.%u@example.com", i, seed);
		m->rcpts[i].state = SPOOL_RCPT_QUEUED;
	}
	memset(b, 'x', blen);
	m->body = evbuffer_new();
	evbuffer_add(m->body, b, blen);
	free(b);
	return m;
}

static void
run_until(struct event_base *base, int want)
{
	struct timeval tv = { 0, 50000 };

	while (done_count < want) {
		event_base_loopexit(base, &tv);
		event_base_loop(base, EVLOOP_ONCE);
	}
}

static int
rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

int
main(int argc, char **argv)
{
	int batched = 2000, serial = 300, blen = 4096, i, o;
	const char *parent = "/var/tmp";
	struct spool_stats st;
	struct event_base *base;
	struct spool *sp;
	char dir[256], err[256];
	int64_t t0, t_batched, t_serial;
	uint64_t commits_batched;

	while ((o = getopt(argc, argv, "n:s:b:d:")) != -1) {
		switch (o) {
		case 'n': batched = atoi(optarg); break;
		case 's': serial = atoi(optarg); break;
		case 'b': blen = atoi(optarg); break;
		case 'd': parent = optarg; break;
		default:
			fprintf(stderr, "usage: spool_insert [-n N] [-s N] "
			    "[-b BYTES] [-d DIR]\n");
			return 2;
		}
	}
	snprintf(dir, sizeof(dir), "%s/sluice-spool-insert-XXXXXX", parent);
	if (mkdtemp(dir) == NULL) {
		perror(dir);
		return 2;
	}
	base = event_base_new();
	if ((sp = spool_open(dir, base, err, sizeof(err))) == NULL) {
		fprintf(stderr, "spool_open: %s\n", err);
		return 2;
	}
	t0 = sl_mono_ms();
	for (i = 0; i < batched; i++) {
		spool_insert(sp, make_msg(spool_mid_next(sp), (unsigned)i,
		    (size_t)blen), done_cb, NULL);
		/* Let the loop breathe, as a server would between reads. */
		if (i % 64 == 63)
			event_base_loop(base, EVLOOP_NONBLOCK);
	}
	run_until(base, batched);
	t_batched = sl_mono_ms() - t0;
	spool_stats_get(sp, &st);
	commits_batched = st.commits;
	t0 = sl_mono_ms();
	for (i = 0; i < serial; i++) {
		spool_insert(sp, make_msg(spool_mid_next(sp), (unsigned)i,
		    (size_t)blen), done_cb, NULL);
		run_until(base, batched + i + 1);
	}
	t_serial = sl_mono_ms() - t0;
	spool_stats_get(sp, &st);
	spool_close(sp);
	event_base_free(base);
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	printf("{\"body_bytes\": %d, \"batched\": %d, \"batched_ms\": %lld, "
	    "\"batched_per_s\": %.0f, \"batched_commits\": %llu, "
	    "\"serial\": %d, \"serial_ms\": %lld, \"serial_per_s\": %.0f, "
	    "\"commit_ms_mean\": %.3f}\n", blen, batched,
	    (long long)t_batched, batched * 1000.0 / (double)(t_batched + 1),
	    (unsigned long long)commits_batched, serial, (long long)t_serial,
	    serial * 1000.0 / (double)(t_serial + 1),
	    st.commit_ms_sum / (double)(st.commits ? st.commits : 1));
	return 0;
}
