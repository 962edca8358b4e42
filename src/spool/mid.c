/* SPDX-License-Identifier: MIT */
/*
 * mid.c: message ids (MIDs): making, printing and parsing them.
 *
 * A MID is the arrival time in microseconds since the epoch, bumped past
 * the last one handed out, so MIDs sort by arrival and never repeat.
 *
 * Invariants
 *  1. spool_mid_next() is strictly increasing, also across restarts:
 *     spool_open() starts sp->last_mid at the largest MID ever stored.
 *  2. spool_mid_parse(spool_mid_fmt(m)) == m for every m != 0; 0 is never a
 *     MID, so it can mean "bad input".
 */
#include <inttypes.h>
#include <stdio.h>

#include "util/util.h"

#include "spool/spool_int.h"

#define SPOOL_MID_DIGITS 16

/* Any thread: the SMTP loops take MIDs at once (a CAS on last_mid). */
uint64_t
spool_mid_next(struct spool *sp)
{
	uint64_t now = (uint64_t)sl_now_us();
	uint64_t last = atomic_load_explicit(&sp->last_mid,
	    memory_order_relaxed), mid;

	do {
		/* The clock may step back or stand still: never below
		 * last + 1. */
		mid = now > last + 1 ? now : last + 1;
	} while (!atomic_compare_exchange_weak_explicit(&sp->last_mid, &last,
	    mid, memory_order_relaxed, memory_order_relaxed));
	return mid;
}

char *
spool_mid_fmt(uint64_t mid, char *buf)
{
	snprintf(buf, SPOOL_MID_DIGITS + 1, "%016" PRIX64, mid);
	return buf;
}

uint64_t
spool_mid_parse(const char *s)
{
	uint64_t v = 0;
	int i;

	if (s == NULL)
		return 0;
	for (i = 0; i < SPOOL_MID_DIGITS; i++) {
		char c = s[i];
		unsigned d;

		if (c >= '0' && c <= '9')
			d = (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			d = (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			d = (unsigned)(c - 'A' + 10);
		else
			return 0;
		v = v << 4 | d;
	}
	return s[SPOOL_MID_DIGITS] == '\0' ? v : 0;
}
