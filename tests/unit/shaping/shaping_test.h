/* SPDX-License-Identifier: MIT */
/*
 * shaping_test.h: what the unit tests of src/shaping share: a free port
 * on loopback, the event loop run for a while, lines counted in the log.
 * Include after cmocka.h.
 */
#ifndef SL_SHAPING_TEST_H
#define SL_SHAPING_TEST_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "log/log.h"
#include "util/util.h"

/* A loopback TCP port free now (bound, read, closed): nothing listens. */
static inline int
test_free_port(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	port = ntohs(sin.sin_port);
	close(fd);
	return port;
}

/* Run base's loop for ms milliseconds (by the clock: a loopexit left
 * over from an earlier run ends a dispatch early). */
static inline void
test_loop_ms(struct event_base *base, int ms)
{
	int64_t end = sl_mono_ms() + ms;

	while (sl_mono_ms() < end) {
		struct timeval tv = { 0, 10000 };
		event_base_loopexit(base, &tv);
		event_base_loop(base, EVLOOP_ONCE);
	}
}

/* How many lines of the log at path hold text (the buffer flushed first). */
static inline int
test_log_count(const char *path, const char *text)
{
	FILE *f;
	char line[2048];
	int n = 0;

	log_flush();
	if ((f = fopen(path, "r")) == NULL)
		return 0;
	while (fgets(line, sizeof(line), f) != NULL)
		n += strstr(line, text) != NULL;
	fclose(f);
	return n;
}

#endif
