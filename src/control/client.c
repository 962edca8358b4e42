/* SPDX-License-Identifier: MIT */
/*
 * client.c: the command line's side of the control socket: connect, send
 * one request line, read the answer: one response line, or a stream (a
 * head line, item lines, an empty line, the response line) whose items go
 * to a callback as they come or are assembled into the result. No line
 * may take longer than the timeout to come.
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

/* Lines from the socket, read in large chunks. */
struct control_reader {
	int fd;
	int timeout_ms;		/* at most this between two reads */
	char *buf;
	size_t start, len, cap;	/* unread bytes: buf[start .. start+len) */
};

/*
 * The next line (NUL-terminated, without its '\n'), valid until the next
 * call; NULL with errno at EOF, an error or the timeout.
 */
static char *
control_reader_line(struct control_reader *r, size_t *len)
{
	size_t scanned = 0;
	char *nl;

	for (;;) {
		ssize_t n;

		if (r->len > scanned && (nl = memchr(r->buf + r->start +
		    scanned, '\n', r->len - scanned)) != NULL) {
			char *line = r->buf + r->start;

			*len = (size_t)(nl - line);
			*nl = '\0';
			r->start += *len + 1;
			r->len -= *len + 1;
			return line;
		}
		scanned = r->len;
		if (r->start > 0 && r->start + r->len + 4096 > r->cap) {
			memmove(r->buf, r->buf + r->start, r->len);
			r->start = 0;
		}
		if (r->start + r->len + 4096 > r->cap)
			r->buf = xrealloc(r->buf, r->cap = r->cap * 2 + 65536);
		if (control_wait(r->fd, POLLIN, sl_mono_ms() + r->timeout_ms) != 0)
			return NULL;
		n = recv(r->fd, r->buf + r->start + r->len,
		    r->cap - r->start - r->len, MSG_DONTWAIT);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = ECONNRESET;
			return NULL;
		}
		r->len += (size_t)n;
	}
}

/* Assembles a streamed answer into result[key] when no callback is given. */
struct control_assemble {
	char *key;
	json_t *items;			/* array */
	struct { char *p; size_t len, cap; } text;
	enum control_stream_kind kind;
};

static int
control_assemble_item(void *arg, const char *json, size_t len)
{
	struct control_assemble *a = arg;
	json_t *v = json_loadb(json, len, JSON_DECODE_ANY, NULL);
	size_t n;

	if (v == NULL)
		return -1;
	if (a->kind == CONTROL_STREAM_ARRAY) {
		json_array_append_new(a->items, v);
		return 0;
	}
	if (!json_is_string(v)) {
		json_decref(v);
		return -1;
	}
	n = json_string_length(v);
	if (a->text.len + n + 1 > a->text.cap)
		a->text.p = xrealloc(a->text.p,
		    a->text.cap = (a->text.len + n) * 2 + 1);
	memcpy(a->text.p + a->text.len, json_string_value(v), n);
	a->text.len += n;
	json_decref(v);
	return 0;
}

/* The items of a stream, between its head and the empty line. */
static int
control_read_items(struct control_reader *r, const struct control_stream_cb
    *cb, char *err, size_t errlen)
{
	char *line;
	size_t len;

	while ((line = control_reader_line(r, &len)) != NULL) {
		if (len == 0)
			return 0;
		if (cb->item(cb->arg, line, len) != 0) {
			snprintf(err, errlen, "a broken item in the answer");
			return -1;
		}
	}
	snprintf(err, errlen, "the answer stopped: %s",
	    errno == ETIMEDOUT ? "timed out" : strerror(errno));
	return -1;
}

/* Send the request and read the answer: the final response into *resp. */
static enum control_call_status
control_exchange(int fd, const char *path, const char *cmd, json_t *args,
    int timeout_ms, const struct control_stream_cb *cb,
    struct control_assemble *as, json_t **resp, char *err, size_t errlen)
{
	struct control_reader r = { .fd = fd, .timeout_ms = timeout_ms };
	struct control_stream_cb acb = { NULL, control_assemble_item, as };
	enum control_call_status st = CONTROL_CALL_FAILED;
	enum control_stream_kind kind;
	const char *key;
	char *req = control_req_line(cmd, args), *line;
	size_t len = 0;
	int e = 0;

	if (control_send_all(fd, req, strlen(req), sl_mono_ms() + timeout_ms)
	    != 0)
		e = errno;	/* the daemon may have refused us: its line */
	free(req);
	if ((line = control_reader_line(&r, &len)) == NULL) {
		snprintf(err, errlen, "%s: %s: %s", path, e ? "sending the "
		    "request" : "no answer", e ? strerror(e) : errno ==
		    ETIMEDOUT ? "timed out" : strerror(errno));
		goto done;
	}
	if ((*resp = control_resp_parse(line, len, err, errlen)) == NULL)
		goto done;
	if (control_stream_head(*resp, &key, &kind)) {
		as->kind = kind;
		if (cb == NULL)
			cb = &acb;
		else if (cb->begin != NULL)
			cb->begin(cb->arg, key, kind);
		as->key = xstrdup(key);
		json_decref(*resp);
		*resp = NULL;
		if (control_read_items(&r, cb, err, errlen) != 0)
			goto done;
		if ((line = control_reader_line(&r, &len)) == NULL) {
			snprintf(err, errlen, "%s: the answer stopped: %s",
			    path, strerror(errno));
			goto done;
		}
		if ((*resp = control_resp_parse(line, len, err, errlen)) ==
		    NULL)
			goto done;
	}
	st = CONTROL_CALL_OK;
done:
	free(r.buf);
	return st;
}

/* Put an assembled stream under its key in the response's result. */
static void
control_assemble_into(struct control_assemble *as, json_t *resp)
{
	json_t *result = json_object_get(resp, "result");

	if (!json_is_true(json_object_get(resp, "ok")))
		return;
	if (!json_is_object(result)) {
		result = json_object();
		json_object_set_new(resp, "result", result);
	}
	if (as->kind == CONTROL_STREAM_ARRAY)
		json_object_set(result, as->key, as->items);
	else
		json_object_set_new(result, as->key, json_stringn(
		    as->text.p ? as->text.p : "", as->text.len));
}

enum control_call_status
control_call_stream(const char *path, const char *cmd, json_t *args,
    int timeout_ms, const struct control_stream_cb *cb, json_t **resp,
    char *err, size_t errlen)
{
	struct control_assemble as = { .items = json_array() };
	enum control_call_status st;
	int fd;

	*resp = NULL;
	if ((st = control_connect(path, &fd, err, errlen)) == CONTROL_CALL_OK) {
		st = control_exchange(fd, path, cmd, args, timeout_ms, cb, &as,
		    resp, err, errlen);
		close(fd);
	}
	if (st == CONTROL_CALL_OK && cb == NULL && as.key != NULL)
		control_assemble_into(&as, *resp);
	if (st != CONTROL_CALL_OK) {
		json_decref(*resp);
		*resp = NULL;
	}
	json_decref(as.items);
	free(as.text.p);
	free(as.key);
	return st;
}

enum control_call_status
control_call(const char *path, const char *cmd, json_t *args, int timeout_ms,
    json_t **resp, char *err, size_t errlen)
{
	return control_call_stream(path, cmd, args, timeout_ms, NULL, resp,
	    err, errlen);
}
