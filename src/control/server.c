/* SPDX-License-Identifier: MIT */
/*
 * server.c: the control socket on the event loop: a Unix listener, one
 * bufferevent per connection, one request line at a time.
 *
 * A connection reads a line, parses it (proto.c), hands the command to the
 * handler and stops reading until the answer comes (control_reply*), which
 * may be later: `queue delete` answers once the spool removed the message.
 * If the client leaves first, its pending request is orphaned: the answer
 * is dropped and the request freed when it comes.
 *
 * Invariants
 *  1. Every request gets exactly one answer line, unless the client left.
 *  2. The socket is mode 0660 from its creation (umask around bind), so no
 *     window exists in which others could connect.
 *  3. Input is bounded: CONTROL_MAX_LINE per line, CONTROL_MAX_CONNS
 *     connections, an idle connection closes after CONTROL_IDLE_S.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "control/control.h"
#include "log/log.h"
#include "util/util.h"

#define CONTROL_IDLE_S 60
#define CONTROL_MAX_GROUPS 256

struct control_conn;

/* A request that came over the socket. */
struct control_sock_req {
	struct control_req r;		/* first: the handlers see this */
	struct control_conn *conn;	/* NULL once orphaned */
};

struct control_conn {
	struct control_server *srv;
	struct bufferevent *bev;
	struct control_conn *prev, *next;
	struct control_sock_req *req;	/* waiting for its answer */
	uid_t uid;
	int dispatching;		/* inside control_conn_process */
	int closing;			/* close once the output is out */
	void (*after)(void *);		/* control_reply_then */
	void *after_arg;
	void (*resume)(void *);		/* control_stream_wait */
	void *resume_arg;
};

static const struct control_req_ops control_sock_ops;

struct control_server {
	struct event_base *base;
	struct evconnlistener *lev;
	char *path;
	gid_t gid;			/* the socket's group */
	control_cmd_fn *fn;
	void *arg;
	struct control_conn *conns;
	int nconns;
};

static void control_conn_process(struct control_conn *c);

static void
control_conn_free(struct control_conn *c)
{
	struct control_server *srv = c->srv;
	void (*after)(void *) = c->after;
	void *after_arg = c->after_arg;
	void (*resume)(void *) = c->resume;
	void *resume_arg = c->resume_arg;

	if (c->req != NULL)
		c->req->conn = NULL;
	if (c->prev)
		c->prev->next = c->next;
	else
		srv->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	srv->nconns--;
	bufferevent_free(c->bev);
	free(c);
	/* the client left before reading the answer: act anyway */
	if (after != NULL)
		after(after_arg);
	/* a stream waiting for room: let it see the client went */
	if (resume != NULL)
		resume(resume_arg);
}

static void
control_conn_write(struct control_conn *c, char *line)
{
	bufferevent_write(c->bev, line, strlen(line));
	free(line);
}

/* Answer with an error outside any request and close (bad peer, limits). */
static void
control_conn_refuse(struct control_conn *c, const char *msg)
{
	control_conn_write(c, control_resp_err_line(msg, NULL));
	bufferevent_disable(c->bev, EV_READ);
	c->closing = 1;
}

/* The output drained (to the write low-water mark, or empty). */
static void
control_conn_written(struct bufferevent *bev, void *arg)
{
	struct control_conn *c = arg;
	void (*after)(void *) = c->after;
	void (*resume)(void *) = c->resume;

	if (resume != NULL) {
		c->resume = NULL;
		bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
		resume(c->resume_arg);
	}
	if (after != NULL &&
	    evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
		c->after = NULL;
		after(c->after_arg);
	}
	if (c->closing &&
	    evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		control_conn_free(c);
}

static void
control_conn_event(struct bufferevent *bev, short what, void *arg)
{
	control_conn_free(arg);
}

static void
control_conn_readable(struct bufferevent *bev, void *arg)
{
	control_conn_process(arg);
}

/* One line from the input, or NULL if none is complete yet. */
static char *
control_conn_line(struct control_conn *c, size_t *len)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	struct evbuffer_ptr p = evbuffer_search_eol(in, NULL, NULL,
	    EVBUFFER_EOL_LF);

	if (p.pos < 0) {
		if (evbuffer_get_length(in) > CONTROL_MAX_LINE)
			control_conn_refuse(c, "request line too long");
		return NULL;
	}
	return evbuffer_readln(in, len, EVBUFFER_EOL_LF);
}

static void
control_conn_dispatch(struct control_conn *c, char *line, size_t len)
{
	struct control_server *srv = c->srv;
	const char *cmd;
	json_t *o, *args;
	char err[256];

	if ((o = control_req_parse(line, len, &cmd, &args, err,
	    sizeof(err))) == NULL) {
		control_conn_write(c, control_resp_err_line(err, NULL));
		return;
	}
	c->req = xcalloc(1, sizeof(*c->req));
	c->req->conn = c;
	c->req->r.ops = &control_sock_ops;
	snprintf(c->req->r.who, sizeof(c->req->r.who), "uid %u",
	    (unsigned)c->uid);
	bufferevent_disable(c->bev, EV_READ);
	srv->fn(srv->arg, &c->req->r, cmd, args);
	json_decref(o);
}

/* Handle every complete line while no request waits for its answer. */
static void
control_conn_process(struct control_conn *c)
{
	char *line;
	size_t len;

	if (c->dispatching)
		return;
	c->dispatching = 1;
	while (c->req == NULL && !c->closing &&
	    (line = control_conn_line(c, &len)) != NULL) {
		control_conn_dispatch(c, line, len);
		free(line);
	}
	c->dispatching = 0;
	if (c->req == NULL && !c->closing)
		bufferevent_enable(c->bev, EV_READ);
}

/* root, the daemon's own user, or the socket's group (primary or not). */
static int
control_peer_allowed(struct control_server *srv, int fd, uid_t *uid)
{
	struct ucred cr;
	socklen_t len = sizeof(cr);
	gid_t groups[CONTROL_MAX_GROUPS];

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) != 0)
		return 0;
	*uid = cr.uid;
	if (cr.uid == 0 || cr.uid == geteuid() || cr.gid == srv->gid)
		return 1;
	len = sizeof(groups);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) != 0)
		return 0;
	for (size_t i = 0; i < len / sizeof(gid_t); i++)
		if (groups[i] == srv->gid)
			return 1;
	return 0;
}

static void
control_accept(struct evconnlistener *lev, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct control_server *srv = arg;
	struct control_conn *c = xcalloc(1, sizeof(*c));
	struct timeval idle = { CONTROL_IDLE_S, 0 };
	int allowed = control_peer_allowed(srv, fd, &c->uid);

	c->srv = srv;
	c->bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
	c->next = srv->conns;
	if (srv->conns)
		srv->conns->prev = c;
	srv->conns = c;
	srv->nconns++;
	bufferevent_setcb(c->bev, control_conn_readable, control_conn_written,
	    control_conn_event, c);
	bufferevent_set_timeouts(c->bev, &idle, &idle);
	if (!allowed) {
		log_info("control: refused uid %u: not root, the daemon's user "
		    "nor a member of the socket's group", (unsigned)c->uid);
		control_conn_refuse(c, "permission denied: the control socket "
		    "is for root and the group " CONTROL_GROUP);
		bufferevent_enable(c->bev, EV_WRITE);
		return;
	}
	if (srv->nconns > CONTROL_MAX_CONNS) {
		control_conn_refuse(c, "too many control connections");
		bufferevent_enable(c->bev, EV_WRITE);
		return;
	}
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

int
control_sockaddr(const char *path, struct sockaddr_un *sun, int *dirfd)
{
	const char *slash = strrchr(path, '/');
	char *dir;

	*dirfd = -1;
	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	if (strlen(path) < sizeof(sun->sun_path)) {
		memcpy(sun->sun_path, path, strlen(path));
		return (int)sizeof(*sun);
	}
	/* too long for sun_path: go through the directory's descriptor */
	if (slash == NULL || strlen(slash + 1) + 32 >= sizeof(sun->sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	dir = xstrndup(path, slash == path ? 1 : (size_t)(slash - path));
	*dirfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	free(dir);
	if (*dirfd < 0)
		return -1;
	snprintf(sun->sun_path, sizeof(sun->sun_path), "/proc/self/fd/%d/%s",
	    *dirfd, slash + 1);
	return (int)sizeof(*sun);
}

/* A socket file left by a daemon that died is removed; a live one is not. */
static int
control_clear_stale(const char *path, char *err, size_t errlen)
{
	struct sockaddr_un sun;
	struct stat st;
	int fd, dirfd, r;

	if (lstat(path, &st) != 0)
		return 0;
	if (!S_ISSOCK(st.st_mode)) {
		snprintf(err, errlen, "%s exists and is not a socket", path);
		return -1;
	}
	if (control_sockaddr(path, &sun, &dirfd) < 0 ||
	    (fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		if (dirfd >= 0)
			close(dirfd);
		return -1;
	}
	r = connect(fd, (struct sockaddr *)&sun, sizeof(sun));
	close(fd);
	if (dirfd >= 0)
		close(dirfd);
	if (r == 0) {
		snprintf(err, errlen, "%s: another sluiced answers on it", path);
		return -1;
	}
	unlink(path);
	return 0;
}

/* Create the socket's directory (and parents) if missing: 0755, so that
 * members of the group can reach the socket inside it. */
static void
control_mkdirs(const char *path)
{
	char *dir = xstrdup(path);

	for (char *p = dir + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(dir, 0755) != 0 && errno != EEXIST)
			break;
		*p = '/';
	}
	free(dir);
}

/* Bind with umask 0117: the file is 0660 from the first moment. */
static int
control_bind(const char *path, char *err, size_t errlen)
{
	struct sockaddr_un sun;
	int fd, dirfd, r, saved;
	mode_t old;

	if (control_sockaddr(path, &sun, &dirfd) < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto fail;
	old = umask(0117);
	r = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
	saved = errno;
	umask(old);
	errno = saved;
	if (r != 0 || listen(fd, 64) != 0)
		goto fail;
	if (dirfd >= 0)
		close(dirfd);
	return fd;
fail:
	snprintf(err, errlen, "%s: %s", path, strerror(errno));
	if (fd >= 0)
		close(fd);
	if (dirfd >= 0)
		close(dirfd);
	return -1;
}

struct control_server *
control_server_new(struct event_base *base, const char *path,
    control_cmd_fn *fn, void *arg, char *err, size_t errlen)
{
	struct control_server *srv;
	struct group *gr;
	int fd;

	if (path == NULL || path[0] == '\0') {
		snprintf(err, errlen, "[control] socket is empty");
		return NULL;
	}
	control_mkdirs(path);
	if (control_clear_stale(path, err, errlen) != 0)
		return NULL;
	if ((fd = control_bind(path, err, errlen)) < 0)
		return NULL;
	srv = xcalloc(1, sizeof(*srv));
	srv->base = base;
	srv->path = xstrdup(path);
	srv->fn = fn;
	srv->arg = arg;
	srv->gid = getegid();
	if ((gr = getgrnam(CONTROL_GROUP)) != NULL) {
		if (chown(path, (uid_t)-1, gr->gr_gid) == 0)
			srv->gid = gr->gr_gid;
		else
			log_warn("control: chown %s to group %s", path,
			    CONTROL_GROUP);
	}
	srv->lev = evconnlistener_new(base, control_accept, srv,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
	if (srv->lev == NULL) {
		snprintf(err, errlen, "%s: cannot listen", path);
		close(fd);
		unlink(path);
		free(srv->path);
		free(srv);
		return NULL;
	}
	return srv;
}

void
control_server_free(struct control_server *srv)
{
	if (srv == NULL)
		return;
	while (srv->conns != NULL) {
		srv->conns->after = NULL;
		control_conn_free(srv->conns);
	}
	evconnlistener_free(srv->lev);
	unlink(srv->path);
	free(srv->path);
	free(srv);
}

/* ---- answers (control_req_ops of the socket) ---- */

static void
control_sock_answer(struct control_req *r, struct evbuffer *result,
    enum control_err err, const char *msg, json_t *unknown,
    void (*done)(void *), void *arg)
{
	struct control_sock_req *req = (struct control_sock_req *)r;
	struct control_conn *c = req->conn;
	int streaming = r->streaming;
	struct evbuffer *out;

	free(req);
	if (c == NULL) {
		if (result != NULL)
			evbuffer_free(result);
		json_decref(unknown);
		if (done != NULL)
			done(arg);
		return;
	}
	c->req = NULL;
	c->after = done;
	c->after_arg = arg;
	out = bufferevent_get_output(c->bev);
	if (streaming)
		evbuffer_add(out, "\n", 1);
	if (err == 0) {
		evbuffer_add_printf(out, "{\"v\":%d,\"ok\":true,\"result\":",
		    CONTROL_VERSION);
		evbuffer_add_buffer(out, result);
		evbuffer_add(out, "}\n", 2);
		evbuffer_free(result);
	} else {
		if (result != NULL)
			evbuffer_free(result);
		control_conn_write(c, control_resp_err_line(msg, unknown));
	}
	control_conn_process(c);
}

static void
control_sock_begin(struct control_req *r, const char *key,
    enum control_stream_kind kind)
{
	struct control_sock_req *req = (struct control_sock_req *)r;

	if (req->conn != NULL)
		control_conn_write(req->conn, control_stream_head_line(key,
		    kind));
}

static void
control_sock_item(struct control_req *r, const char *json, size_t len)
{
	struct control_sock_req *req = (struct control_sock_req *)r;
	struct evbuffer *out;

	if (req->conn == NULL)
		return;
	out = bufferevent_get_output(req->conn->bev);
	evbuffer_add(out, json, len);
	evbuffer_add(out, "\n", 1);
}

static size_t
control_sock_backlog(struct control_req *r)
{
	struct control_sock_req *req = (struct control_sock_req *)r;

	if (req->conn == NULL)
		return 0;
	return evbuffer_get_length(bufferevent_get_output(req->conn->bev));
}

static void
control_sock_wait(struct control_req *r, void (*fn)(void *), void *arg)
{
	struct control_sock_req *req = (struct control_sock_req *)r;
	struct control_conn *c = req->conn;

	if (c == NULL) {
		fn(arg);
		return;
	}
	c->resume = fn;
	c->resume_arg = arg;
	/* the write callback fires once the output is down to the mark */
	bufferevent_setwatermark(c->bev, EV_WRITE, CONTROL_STREAM_LOW, 0);
}

static int
control_sock_gone(struct control_req *r)
{
	return ((struct control_sock_req *)r)->conn == NULL;
}

static const struct control_req_ops control_sock_ops = {
	.answer = control_sock_answer,
	.begin = control_sock_begin,
	.item = control_sock_item,
	.backlog = control_sock_backlog,
	.wait = control_sock_wait,
	.gone = control_sock_gone,
};
