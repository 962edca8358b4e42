/* SPDX-License-Identifier: MIT */
/*
 * client.c: the command line's side of the control socket: connect, send
 * one request line, read one response line, all within a deadline.
 *
 * Blocking (poll on one descriptor): the CLI does one thing at a time.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "control/control.h"
#include "util/util.h"

static int
control_wait(int fd, short ev, int64_t deadline)
{
	struct pollfd p = { .fd = fd, .events = ev };
	int64_t left;
	int r;

	for (;;) {
		left = deadline - sl_mono_ms();
		if (left <= 0) {
			errno = ETIMEDOUT;
			return -1;
		}
		r = poll(&p, 1, (int)left);
		if (r > 0)
			return 0;
		if (r < 0 && errno != EINTR)
			return -1;
	}
}

static enum control_call_status
control_connect(const char *path, int *out, char *err, size_t errlen)
{
	struct sockaddr_un sun;
	int fd, dirfd, r, e;

	if (control_sockaddr(path, &sun, &dirfd) < 0) {
		e = errno;
		fd = -1;
		r = -1;
	} else if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0) {
		e = errno;
		r = -1;
	} else {
		r = connect(fd, (struct sockaddr *)&sun, sizeof(sun));
		e = errno;
	}
	if (dirfd >= 0)
		close(dirfd);
	if (r == 0) {
		*out = fd;
		return CONTROL_CALL_OK;
	}
	if (fd >= 0)
		close(fd);
	if (e == EACCES || e == EPERM) {
		snprintf(err, errlen, "cannot connect to %s: %s (the control "
		    "socket is for root and the group %s)", path, strerror(e),
		    CONTROL_GROUP);
		return CONTROL_CALL_DENIED;
	}
	snprintf(err, errlen, "cannot connect to %s: %s (is sluiced "
	    "running with this configuration?)", path, strerror(e));
	return CONTROL_CALL_UNREACHABLE;
}

static int
control_send_all(int fd, const char *s, size_t len, int64_t deadline)
{
	while (len > 0) {
		ssize_t n = send(fd, s, len, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n > 0) {
			s += n;
			len -= (size_t)n;
		} else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			if (control_wait(fd, POLLOUT, deadline) != 0)
				return -1;
		} else {
			return -1;
		}
	}
	return 0;
}

/* Read up to the first '\n'; a new string (without it) or NULL. */
static char *
control_read_line(int fd, int64_t deadline, size_t *len)
{
	size_t cap = 4096, n = 0;
	char *buf = xmalloc(cap);
	char *nl;

	for (;;) {
		ssize_t r;

		if (control_wait(fd, POLLIN, deadline) != 0)
			break;
		if (n + 1 >= cap)
			buf = xrealloc(buf, cap *= 2);
		r = recv(fd, buf + n, cap - n - 1, MSG_DONTWAIT);
		if (r < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (r <= 0) {
			if (r == 0)
				errno = ECONNRESET;
			break;
		}
		n += (size_t)r;
		if ((nl = memchr(buf, '\n', n)) != NULL) {
			*len = (size_t)(nl - buf);
			buf[*len] = '\0';
			return buf;
		}
	}
	free(buf);
	return NULL;
}

enum control_call_status
control_call(const char *path, const char *cmd, json_t *args, int timeout_ms,
    json_t **resp, char *err, size_t errlen)
{
	int64_t deadline = sl_mono_ms() + timeout_ms;
	enum control_call_status st;
	char *req, *line;
	size_t len = 0;
	int fd;

	*resp = NULL;
	if ((st = control_connect(path, &fd, err, errlen)) != CONTROL_CALL_OK)
		return st;
	req = control_req_line(cmd, args);
	if (control_send_all(fd, req, strlen(req), deadline) != 0) {
		int e = errno;

		/* the daemon may have refused us before reading: its line */
		line = control_read_line(fd, deadline, &len);
		if (line == NULL) {
			snprintf(err, errlen, "%s: sending the request: %s",
			    path, strerror(e));
			free(req);
			close(fd);
			return CONTROL_CALL_FAILED;
		}
	} else {
		line = control_read_line(fd, deadline, &len);
	}
	free(req);
	close(fd);
	if (line == NULL) {
		snprintf(err, errlen, "%s: no answer: %s", path,
		    errno == ETIMEDOUT ? "timed out" : strerror(errno));
		return CONTROL_CALL_FAILED;
	}
	*resp = control_resp_parse(line, len, err, errlen);
	free(line);
	return *resp != NULL ? CONTROL_CALL_OK : CONTROL_CALL_FAILED;
}
