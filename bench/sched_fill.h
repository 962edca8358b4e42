/* SPDX-License-Identifier: MIT */
/*
 * bench/sched_fill.h: what bench/sched_pick.c and bench/shaping_sched.c
 * share: a backlog committed through the scheduler's real API.
 */
#ifndef SL_BENCH_SCHED_FILL_H
#define SL_BENCH_SCHED_FILL_H

#include <stdio.h>
#include <string.h>

#include "sched/sched_int.h"
#include "spool/spool.h"

/*
 * Commit n one-recipient messages (MIDs mid0 + i) to s, recipient i at
 * "u<i>@d<i % ndest>.<domain>", DEFERRED until retry(i) (unix s), as
 * recovery does; their MIDs into mids if not NULL.
 */
static inline void
bench_fill(struct sched *s, size_t n, size_t ndest, const char *domain,
    uint64_t mid0, int64_t (*retry)(size_t i), uint64_t *mids)
{
	struct spool_msg sm;
	struct spool_rcpt sr;
	int64_t now = (int64_t)time(NULL);
	char addr[96];

	memset(&sm, 0, sizeof(sm));
	memset(&sr, 0, sizeof(sr));
	sm.sender = "sender@bench.test";
	sm.client_addr = "127.0.0.1";
	sm.helo = "bench.invalid";
	sm.size = 200;
	sm.nrcpt = 1;
	sm.rcpts = &sr;
	sr.addr = addr;
	sr.state = SPOOL_RCPT_DEFERRED;
	sr.attempts = 1;
	sr.last_reply = "451 4.7.1 Try again later";
	for (size_t i = 0; i < n; i++) {
		sm.mid = mid0 + i;
		if (mids != NULL)
			mids[i] = sm.mid;
		sm.arrival = now - 60;
		snprintf(addr, sizeof(addr), "u%zu@d%zu.%s", i, i % ndest,
		    domain);
		sr.next_retry = retry(i);
		sched_msg_commit(s, sched_msg_new(s, &sm));
	}
}

#endif
