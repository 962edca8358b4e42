/* SPDX-License-Identifier: MIT */
/*
 * log.h: one line per event, ids first, so an operator can follow a message.
 *
 *   2026-11-24T10:00:00.123+00:00 Info: ICID 3 MID 0005F1A2B3C4D5E6 RID [0] queued rcpt=<a@b.test>
 *
 * --log-format json (or [log] format = json) writes the same fields as one
 * JSON object per line. Lines are buffered and written by log_flush(), which
 * the daemon calls from a short timer and before it exits, so a busy server
 * makes one write(2) per batch, not per line.
 *
 * The logger is process-wide: the one place that is, because every part logs.
 * Threads: call from the event loop thread only (the spool thread reports
 * through its callbacks).
 */
#ifndef SL_LOG_H
#define SL_LOG_H

#include <stdint.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARNING, LOG_ERR };

/* The ids an event names; 0 (rid: -1) means "not this one". */
struct log_ids {
	uint64_t icid;		/* inbound connection */
	uint64_t dcid;		/* delivery connection */
	uint64_t mid;		/* message */
	int64_t rid;		/* recipient, -1 if none */
};
#define LOG_IDS_NONE ((struct log_ids){ 0, 0, 0, -1 })

/*
 * Log to path ("-" is standard error) in text or JSON at level and above.
 * Returns 0, or -1 with errno set (the previous destination stays).
 */
int log_open(const char *path, int json, const char *level);
/* Reopen the same path (after rotation, on SIGHUP). */
int log_reopen(void);
/* Write out what is buffered. */
void log_flush(void);
void log_close(void);

/*
 * One event: ids (may be NULL), a short text ("queued for delivery"), then
 * key/value pairs of strings ending with NULL. Values are quoted in text
 * form when they contain spaces or quotes.
 */
void log_ev(enum log_level level, const struct log_ids *ids, const char *text,
    ...) __attribute__((sentinel));

/*
 * The life of a message in the words of the gateway the seeds describe,
 * which operators and their log tools grep for (issue 9 item 20):
 *   LOG_GW_QUEUED    MID m queued for delivery
 *   LOG_GW_START     Delivery start DCID d MID m to RID [r]
 *   LOG_GW_DONE      Message done DCID d MID m to RID [r]
 *   LOG_GW_DELAYED   Delayed DCID d MID m to RID [r]
 *   LOG_GW_REJECTED  Rejected DCID d MID m to RID [r]
 *   LOG_GW_FINISHED  Message finished MID m done
 * each after the timestamp and "Info: "; an ICID the words leave out
 * follows as icid=N, then the key/value pairs (ending with NULL). JSON
 * carries the same fields: the ids, event (the words without the ids:
 * "Delivery start"), status "done" for LOG_GW_FINISHED, the pairs.
 */
enum log_gw {
	LOG_GW_QUEUED,
	LOG_GW_START,
	LOG_GW_DONE,
	LOG_GW_DELAYED,
	LOG_GW_REJECTED,
	LOG_GW_FINISHED,
};
void log_gw(enum log_gw ev, const struct log_ids *ids, ...)
    __attribute__((sentinel));

/* Free-form lines without ids; log_warn appends strerror(errno). */
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int log_enabled(enum log_level level);

#endif
