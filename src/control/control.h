/* SPDX-License-Identifier: MIT */
/*
 * control.h: the control socket that `sluice queue`, `status`, `reload` and
 * `stop` talk to: a Unix stream socket, one JSON object per line.
 *
 *   request   {"v":1,"cmd":"queue.list","args":{...}}
 *   response  {"v":1,"ok":true,"result":...}
 *             {"v":1,"ok":false,"error":"text","unknown":[...]}
 *
 * or, for a long answer (queue list, summary, show --body), a stream: a
 * head line, one item per line, an empty line, then the response line
 * (below, "a request and its answer"). One request at a time per
 * connection: the server stops reading until the handler answered (now or
 * later, e.g. after the spool deleted a message). The commands and their
 * arguments are in docs/CONTROL.md.
 *
 * Who may talk: the socket is created mode 0660 (group "sluice" when that
 * group exists), and each connection's SO_PEERCRED is checked again (root,
 * the daemon's own uid, or a member of the socket's group).
 *
 * Threads: the server runs on the event loop thread; the client blocks and
 * is for the command line.
 */
#ifndef SL_CONTROL_H
#define SL_CONTROL_H

#include <stddef.h>
#include <sys/types.h>

#include <jansson.h>

#define CONTROL_VERSION 1
#define CONTROL_MAX_LINE (1024 * 1024)	/* a request line */
#define CONTROL_MAX_CONNS 64
#define CONTROL_GROUP "sluice"

struct event_base;
struct evbuffer;
struct control_server;
struct control_req;

enum control_err {
	CONTROL_ERR_BADARG = 1,	/* the request is wrong (HTTP 400) */
	CONTROL_ERR_NOTFOUND,	/* it names what is not there, a MID (404) */
	CONTROL_ERR_GONE,	/* a paging cursor that expired (410) */
	CONTROL_ERR_FAILED,	/* it could not be done: the spool, a bad
				   file (500) */
	CONTROL_ERR_UNAVAILABLE, /* not now: the daemon stops (503) */
};

enum control_stream_kind {
	CONTROL_STREAM_ARRAY,	/* items are JSON values */
	CONTROL_STREAM_TEXT,	/* items are JSON strings to concatenate */
};

/* ---- the protocol (proto.c, pure) ---- */

/*
 * Parse one request line (without its newline). Returns a new reference to
 * the parsed object, with *cmd and *args borrowed from it (args is always
 * an object), or NULL with a message in err. Free with json_decref().
 */
json_t *control_req_parse(const char *line, size_t len, const char **cmd,
    json_t **args, char *err, size_t errlen);
/* A request line ending in '\n'; args borrowed (NULL: {}). free() it. */
char *control_req_line(const char *cmd, json_t *args);
/* A response line ending in '\n'; takes result (NULL: null). free() it. */
char *control_resp_ok_line(json_t *result);
/* An error response line; takes unknown (may be NULL). free() it. */
char *control_resp_err_line(const char *msg, json_t *unknown);
/*
 * Parse a response line: returns a new reference to the object, whose
 * "ok" is a boolean and "v" is CONTROL_VERSION, or NULL with err.
 */
json_t *control_resp_parse(const char *line, size_t len, char *err,
    size_t errlen);
/* The first line of a streamed answer, ending in '\n'. free() it. */
char *control_stream_head_line(const char *key, enum control_stream_kind kind);
/* 1 if resp (a parsed response) starts a stream: its key (borrowed from
 * resp) and kind; 0 if it is a final answer. */
int control_stream_head(json_t *resp, const char **key,
    enum control_stream_kind *kind);

/* ---- a request and its answer, whatever brought it ---- */

/*
 * The daemon's command handlers (src/sluiced/ctl.c) answer through these
 * calls, the same for the control socket (server.c) and for the HTTP API
 * (src/http/api.c): one implementation of each command.
 *
 * A long answer may be streamed: control_stream_begin() names the key the
 * items make in the answer, control_stream_item() adds one, and the final
 * control_reply*() carries the rest of the result. On the socket that is
 *
 *   {"v":1,"ok":true,"stream":"messages","kind":"array"}
 *   {...one item per line...}
 *   (an empty line)
 *   {"v":1,"ok":true,"result":{...}}      or an error line
 *
 * and the client assembles result[key] = [items] (kind "array") or the
 * concatenation of the items, each a JSON string (kind "text"). The HTTP
 * API answers the assembled object in one response.
 */
/* Stop producing items while more than this waits to be written. */
#define CONTROL_STREAM_HIGH (256 * 1024)
#define CONTROL_STREAM_LOW (64 * 1024)

struct control_req_ops {
	/* The one final answer: result (JSON text, taken; NULL: null) when
	 * err is 0, else err, msg and unknown (taken, may be NULL). done
	 * (may be NULL) is called once the answer left or the peer went. */
	void (*answer)(struct control_req *req, struct evbuffer *result,
	    enum control_err err, const char *msg, json_t *unknown,
	    void (*done)(void *), void *done_arg);
	void (*begin)(struct control_req *req, const char *key,
	    enum control_stream_kind kind);
	void (*item)(struct control_req *req, const char *json, size_t len);
	/* Bytes given to item() not yet written to the peer. */
	size_t (*backlog)(struct control_req *req);
	/* Call fn(arg) from the loop once the backlog is below
	 * CONTROL_STREAM_LOW or the peer left; fn only schedules work. */
	void (*wait)(struct control_req *req, void (*fn)(void *), void *arg);
	/* 1 once the peer went away (the answer will be dropped). */
	int (*gone)(struct control_req *req);
};

struct control_req {
	const struct control_req_ops *ops;
	char who[80];		/* "uid 1000", "http 127.0.0.1:4242" (logs) */
	int streaming;
};

/* Answer req; takes result (NULL: null). req is gone afterwards. */
void control_reply(struct control_req *req, json_t *result);
/* Answer with result as JSON text already made (taken). */
void control_reply_raw(struct control_req *req, struct evbuffer *result);
/* Answer req with an error; takes unknown (the MIDs not found, or NULL). */
void control_reply_err(struct control_req *req, enum control_err err,
    json_t *unknown, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Answer req, then call done(arg) once the answer is written out (or the
 * client went away): `stop` exits only after its answer left. */
void control_reply_then(struct control_req *req, json_t *result,
    void (*done)(void *), void *arg);
/* Who asked, for logs: "uid 1000", "http 127.0.0.1:4242". */
const char *control_req_who(const struct control_req *req);
/* 1 once the peer went away: a long walk may stop and answer anything. */
int control_req_gone(struct control_req *req);

/* Start streaming items under key (once, before the final answer). */
void control_stream_begin(struct control_req *req, const char *key,
    enum control_stream_kind kind);
/* One item: a JSON value of len bytes, without a newline. */
void control_stream_item(struct control_req *req, const char *json,
    size_t len);
/* 1 when the producer should pause (backlog above CONTROL_STREAM_HIGH)
 * and resume from control_stream_wait's fn. */
int control_stream_full(struct control_req *req);
void control_stream_wait(struct control_req *req, void (*fn)(void *),
    void *arg);

/* ---- the socket server (server.c) ---- */

/*
 * A command arrived: answer it exactly once with control_reply*(), now or
 * later. cmd and args are valid only during this call (copy what an
 * asynchronous answer needs).
 */
typedef void control_cmd_fn(void *arg, struct control_req *req,
    const char *cmd, json_t *args);

/*
 * Listen on the Unix socket at path (mode 0660, group CONTROL_GROUP if it
 * exists; a stale socket is replaced, a live one is an error). Returns the
 * server, or NULL with a message in err.
 */
struct control_server *control_server_new(struct event_base *base,
    const char *path, control_cmd_fn *fn, void *arg, char *err,
    size_t errlen);
/*
 * Close every connection and remove the socket. Requests still waiting
 * for their answer stay valid: answering them later just frees them.
 */
void control_server_free(struct control_server *srv);

/* ---- the client (client.c, blocking) ---- */

enum control_call_status {
	CONTROL_CALL_OK = 0,	/* a response arrived (ok or not) */
	CONTROL_CALL_UNREACHABLE, /* no daemon: no socket, refused */
	CONTROL_CALL_DENIED,	/* the socket's permissions refused us */
	CONTROL_CALL_FAILED,	/* timeout, a broken answer */
};

/*
 * Send one request to the socket at path and wait for the answer, at most
 * timeout_ms between two lines of it. On CONTROL_CALL_OK *resp is a new
 * reference to the response object; otherwise err says what went wrong.
 * args is borrowed. A streamed answer is assembled into "result".
 */
enum control_call_status control_call(const char *path, const char *cmd,
    json_t *args, int timeout_ms, json_t **resp, char *err, size_t errlen);

/* What to do with a streamed answer's items as they come. */
struct control_stream_cb {
	/* The stream starts (may be NULL). */
	void (*begin)(void *arg, const char *key,
	    enum control_stream_kind kind);
	/* One item line (NUL-terminated, without its newline); return
	 * non-zero to give up (the call fails). */
	int (*item)(void *arg, const char *json, size_t len);
	void *arg;
};

/* control_call, handing each item of a streamed answer to cb instead of
 * assembling it; the final response line is *resp. */
enum control_call_status control_call_stream(const char *path,
    const char *cmd, json_t *args, int timeout_ms,
    const struct control_stream_cb *cb, json_t **resp, char *err,
    size_t errlen);

/* ---- shared by server and client ---- */

/*
 * Fill a sockaddr_un for path. A path longer than sun_path is reached
 * through /proc/self/fd of its directory, opened into *dirfd (close it
 * after bind or connect; -1 when not used). Returns the address length,
 * or -1 with errno.
 */
struct sockaddr_un;
int control_sockaddr(const char *path, struct sockaddr_un *sun, int *dirfd);

#endif
