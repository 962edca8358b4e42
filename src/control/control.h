/* SPDX-License-Identifier: MIT */
/*
 * control.h: the control socket that `sluice queue`, `status`, `reload` and
 * `stop` talk to: a Unix stream socket, one JSON object per line.
 *
 *   request   {"v":1,"cmd":"queue.list","args":{...}}
 *   response  {"v":1,"ok":true,"result":...}
 *             {"v":1,"ok":false,"error":"text","unknown":[...]}
 *
 * One request at a time per connection: the server stops reading until the
 * handler answered (now or later, e.g. after the spool deleted a message).
 * The commands and their arguments are in docs/CONTROL.md.
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
struct control_server;
struct control_req;

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

/* ---- the server (server.c) ---- */

/*
 * A command arrived: answer it exactly once with control_reply() or
 * control_reply_err(), now or later. cmd and args are valid only during
 * this call (copy what an asynchronous answer needs).
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

/* Answer req; takes result (NULL: null). */
void control_reply(struct control_req *req, json_t *result);
/* Answer req with an error; takes unknown (the MIDs not found, or NULL). */
void control_reply_err(struct control_req *req, json_t *unknown,
    const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Answer req, then call done(arg) once the answer is written out (or the
 * client went away): `stop` exits only after its answer left. */
void control_reply_then(struct control_req *req, json_t *result,
    void (*done)(void *), void *arg);
/* The peer's uid, for logs. */
uid_t control_req_uid(const struct control_req *req);

/* ---- the client (client.c, blocking) ---- */

enum control_call_status {
	CONTROL_CALL_OK = 0,	/* a response arrived (ok or not) */
	CONTROL_CALL_UNREACHABLE, /* no daemon: no socket, refused */
	CONTROL_CALL_DENIED,	/* the socket's permissions refused us */
	CONTROL_CALL_FAILED,	/* timeout, a broken answer */
};

/*
 * Send one request to the socket at path and wait up to timeout_ms for the
 * answer. On CONTROL_CALL_OK *resp is a new reference to the response
 * object; otherwise err says what went wrong. args is borrowed.
 */
enum control_call_status control_call(const char *path, const char *cmd,
    json_t *args, int timeout_ms, json_t **resp, char *err, size_t errlen);

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
