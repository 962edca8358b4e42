/* SPDX-License-Identifier: MIT */
/*
 * log.c: formats events as text or JSON lines into a buffer and writes the
 * buffer with one write(2) (O_APPEND, so lines from a rotated file or from
 * another writer never interleave mid-line).
 *
 * A JSON line is valid JSON in valid UTF-8 whatever bytes a peer put in a
 * value (util/jsonw.h replaces ill-formed sequences with U+FFFD); a text
 * line keeps the bytes as they came, quoting values with spaces, quotes or
 * control bytes.
 *
 * Threads: any. One mutex (lg_mu) around each line and each flush: the
 * SMTP loops of their own log from their threads; uncontended it costs
 * a few tens of nanoseconds a line.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log/log.h"
#include "spool/spool.h"
#include "util/jsonw.h"
#include "util/util.h"

#define LOG_BUF_FLUSH (64 * 1024)

static struct {
	int fd;
	int json;
	enum log_level min;
	char *path;
	char *buf;
	size_t len, cap;
} lg = { .fd = 2, .min = LOG_INFO };

static pthread_mutex_t lg_mu = PTHREAD_MUTEX_INITIALIZER;

static const char *const log_names[] = { "Debug", "Info", "Warning", "Error" };

static void log_flush_locked(void);

static void
log_put(const char *s, size_t n)
{
	if (lg.len + n > lg.cap) {
		lg.cap = (lg.len + n) * 2 + 4096;
		lg.buf = xrealloc(lg.buf, lg.cap);
	}
	memcpy(lg.buf + lg.len, s, n);
	lg.len += n;
}

static void
log_puts(const char *s)
{
	log_put(s, strlen(s));
}

static void
log_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
log_printf(const char *fmt, ...)
{
	char tmp[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n < sizeof(tmp)) {
		log_put(tmp, (size_t)n);
		return;
	}
	va_start(ap, fmt);
	char *big = xmalloc((size_t)n + 1);
	vsnprintf(big, (size_t)n + 1, fmt, ap);
	va_end(ap);
	log_put(big, (size_t)n);
	free(big);
}

static void
log_put_cb(void *arg, const char *s, size_t n)
{
	log_put(s, n);
}

/* A JSON string: escaped, and valid UTF-8 whatever a peer sent (each
 * ill-formed sequence becomes U+FFFD), so every line parses. */
static void
log_json_str(const char *s)
{
	sl_json_quote(s, strlen(s), log_put_cb, NULL);
}

/* A text value, quoted when it has spaces, quotes or control bytes. */
static void
log_text_val(const char *s)
{
	int quote = *s == '\0';

	for (const char *p = s; *p && !quote; p++)
		if (*p == ' ' || *p == '"' || (unsigned char)*p < 0x20)
			quote = 1;
	if (!quote) {
		log_puts(s);
		return;
	}
	log_put("\"", 1);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			log_put("\\", 1);
		if (c < 0x20)
			log_printf("\\x%02x", c);
		else
			log_put(s, 1);
	}
	log_put("\"", 1);
}

static void
log_stamp(void)
{
	int64_t us = sl_now_us();
	time_t t = (time_t)(us / 1000000);
	struct tm tm;
	char buf[64];

	gmtime_r(&t, &tm);
	strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
	log_printf(lg.json ? "{\"time\":\"%s.%03dZ\"" : "%s.%03dZ ", buf,
	    (int)(us / 1000 % 1000));
}

static void
log_ids_put(const struct log_ids *ids)
{
	char mid[17];

	if (ids == NULL)
		return;
	if (lg.json) {
		if (ids->icid)
			log_printf(",\"icid\":%llu", (unsigned long long)ids->icid);
		if (ids->dcid)
			log_printf(",\"dcid\":%llu", (unsigned long long)ids->dcid);
		if (ids->mid)
			log_printf(",\"mid\":\"%s\"", spool_mid_fmt(ids->mid, mid));
		if (ids->rid >= 0)
			log_printf(",\"rid\":%lld", (long long)ids->rid);
		return;
	}
	if (ids->icid)
		log_printf("ICID %llu ", (unsigned long long)ids->icid);
	if (ids->dcid)
		log_printf("DCID %llu ", (unsigned long long)ids->dcid);
	if (ids->mid)
		log_printf("MID %s ", spool_mid_fmt(ids->mid, mid));
	if (ids->rid >= 0)
		log_printf("RID [%lld] ", (long long)ids->rid);
}

static void
log_end(void)
{
	log_puts(lg.json ? "}\n" : "\n");
	if (lg.len >= LOG_BUF_FLUSH)
		log_flush_locked();
}

int
log_enabled(enum log_level level)
{
	return level >= lg.min;
}

/* The key/value pairs of ap, in the form of the log. */
static void
log_pairs(va_list ap)
{
	const char *k, *v;

	while ((k = va_arg(ap, const char *)) != NULL) {
		v = va_arg(ap, const char *);
		if (v == NULL)
			v = "";
		if (lg.json) {
			log_puts(",");
			log_json_str(k);
			log_puts(":");
			log_json_str(v);
		} else {
			log_printf(" %s=", k);
			log_text_val(v);
		}
	}
}

void
log_ev(enum log_level level, const struct log_ids *ids, const char *text, ...)
{
	va_list ap;

	if (level < lg.min)
		return;
	pthread_mutex_lock(&lg_mu);
	log_stamp();
	if (lg.json) {
		static const char *jl[] = { "debug", "info", "warning", "error" };
		log_printf(",\"level\":\"%s\"", jl[level]);
		log_ids_put(ids);
		log_puts(",\"event\":");
		log_json_str(text);
	} else {
		log_puts(log_names[level]);
		log_puts(": ");
		log_ids_put(ids);
		log_puts(text);
	}
	va_start(ap, text);
	log_pairs(ap);
	va_end(ap);
	log_end();
	pthread_mutex_unlock(&lg_mu);
}

void
log_gw(enum log_gw ev, const struct log_ids *ids, ...)
{
	static const char *const words[] = {
		[LOG_GW_QUEUED] = "queued for delivery",
		[LOG_GW_START] = "Delivery start",
		[LOG_GW_DONE] = "Message done",
		[LOG_GW_DELAYED] = "Delayed",
		[LOG_GW_REJECTED] = "Rejected",
		[LOG_GW_FINISHED] = "Message finished",
	};
	char mid[17];
	va_list ap;

	if (LOG_INFO < lg.min)
		return;
	spool_mid_fmt(ids->mid, mid);
	pthread_mutex_lock(&lg_mu);
	log_stamp();
	if (lg.json) {
		log_puts(",\"level\":\"info\"");
		log_ids_put(ids);
		log_puts(",\"event\":");
		log_json_str(words[ev]);
		if (ev == LOG_GW_FINISHED)
			log_puts(",\"status\":\"done\"");
	} else if (ev == LOG_GW_QUEUED) {
		log_printf("Info: MID %s %s", mid, words[ev]);
	} else if (ev == LOG_GW_FINISHED) {
		log_printf("Info: %s MID %s done", words[ev], mid);
	} else {
		log_printf("Info: %s DCID %llu MID %s to RID [%lld]", words[ev],
		    (unsigned long long)ids->dcid, mid, (long long)ids->rid);
	}
	if (!lg.json && ids->icid != 0)
		log_printf(" icid=%llu", (unsigned long long)ids->icid);
	va_start(ap, ids);
	log_pairs(ap);
	va_end(ap);
	log_end();
	pthread_mutex_unlock(&lg_mu);
}

static void
log_vline(enum log_level level, int err, const char *fmt, va_list ap)
{
	char msg[1024];
	size_t n;

	if (level < lg.min)
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (err) {
		n = strlen(msg);
		snprintf(msg + n, sizeof(msg) - n, ": %s", strerror(err));
	}
	log_ev(level, NULL, msg, NULL);
}

#define LOG_VARIANT(name, level, witherr)                   \
	void name(const char *fmt, ...)                     \
	{                                                   \
		int saved = errno;                          \
		va_list ap;                                 \
		va_start(ap, fmt);                          \
		log_vline(level, witherr ? saved : 0, fmt, ap); \
		va_end(ap);                                 \
		errno = saved;                              \
	}
LOG_VARIANT(log_info, LOG_INFO, 0)
LOG_VARIANT(log_warn, LOG_WARNING, 1)
LOG_VARIANT(log_warnx, LOG_WARNING, 0)
LOG_VARIANT(log_debug, LOG_DEBUG, 0)

void
log_flush(void)
{
	pthread_mutex_lock(&lg_mu);
	log_flush_locked();
	pthread_mutex_unlock(&lg_mu);
}

static void
log_flush_locked(void)
{
	size_t off = 0;

	while (off < lg.len) {
		ssize_t n = write(lg.fd, lg.buf + off, lg.len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;	/* nowhere to report it; drop the lines */
		off += (size_t)n;
	}
	lg.len = 0;
}

static int
log_open_fd(const char *path)
{
	if (strcmp(path, "-") == 0)
		return 2;
	return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

int
log_open(const char *path, int json, const char *level)
{
	static const char *levels[] = { "debug", "info", "warning", "error" };
	int fd;

	if ((fd = log_open_fd(path)) < 0)
		return -1;
	pthread_mutex_lock(&lg_mu);
	log_flush_locked();
	if (lg.fd > 2)
		close(lg.fd);
	lg.fd = fd;
	lg.json = json;
	for (size_t i = 0; i < SL_ARRAY_LEN(levels); i++)
		if (level != NULL && strcmp(level, levels[i]) == 0)
			lg.min = (enum log_level)i;
	free(lg.path);
	lg.path = xstrdup(path);
	pthread_mutex_unlock(&lg_mu);
	return 0;
}

int
log_reopen(void)
{
	int fd;

	pthread_mutex_lock(&lg_mu);
	if (lg.path == NULL || strcmp(lg.path, "-") == 0) {
		pthread_mutex_unlock(&lg_mu);
		return 0;
	}
	log_flush_locked();
	if ((fd = log_open_fd(lg.path)) < 0) {
		pthread_mutex_unlock(&lg_mu);
		return -1;
	}
	if (lg.fd > 2)
		close(lg.fd);
	lg.fd = fd;
	pthread_mutex_unlock(&lg_mu);
	return 0;
}

void
log_close(void)
{
	pthread_mutex_lock(&lg_mu);
	log_flush_locked();
	if (lg.fd > 2)
		close(lg.fd);
	lg.fd = 2;
	free(lg.path);
	lg.path = NULL;
	free(lg.buf);
	lg.buf = NULL;
	lg.len = lg.cap = 0;
	pthread_mutex_unlock(&lg_mu);
}
