/* SPDX-License-Identifier: MIT */
/*
 * deliver.h: the local delivery agents, beside the SMTP client.
 *
 *   Maildir (maildir.c): the message into the Maildir of each recipient
 *   under a root, DIR/domain/user/Maildir/, written on worker threads.
 *   LMTP: src/smtpc in LMTP mode, to [local] lmtp or a backend (its
 *   address: conf_endpoint_parse).
 *   The local recipients (local.c): which exist, where their mailboxes
 *   are, and the check at RCPT.
 *
 * Both take a message as struct smtpc_msg, and write each recipient's
 * outcome into it (code and reply), so the scheduler handles every agent's
 * answers the same way: 2xx delivered, 4xx deferred, 5xx failed.
 *
 * Threads: the API on the event loop thread of the base given.
 */
#ifndef SL_DELIVER_H
#define SL_DELIVER_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct conf_kv;
struct sl_conf;
struct smtpc_msg;
struct maildir;
struct local;
struct local_query;

/*
 * The Maildir agent, with nthreads worker threads for the disk writes (a
 * fsync is milliseconds, which the event loop never waits for).
 */
struct maildir *maildir_new(struct event_base *base, int nthreads);
/* Finish every delivery in flight (their done callbacks run), then free. */
void maildir_free(struct maildir *md);

typedef void maildir_done_fn(void *arg, struct smtpc_msg *m);

/*
 * Store m in the Maildir of each of its recipients under root, each with
 * "Return-Path: <sender>" and "Delivered-To: rcpt" in front of the body as
 * stored. m, its strings and its body are borrowed, and must not change,
 * until done(arg, m) runs on the loop thread; by then every recipient has
 * a code: 250, or a 4xx (full disk 452 4.3.1, over quota 452 4.2.2, any
 * other error 451 4.3.0), never a 5xx: what was not written is retried.
 * dcid names the delivery in the log ("Delivery start", "Message done",
 * "Delayed", relay=maildir).
 */
void maildir_deliver(struct maildir *md, uint64_t dcid, const char *root,
    struct smtpc_msg *m, maildir_done_fn *done, void *arg);

/*
 * The Maildir of addr under root: root/domain/local/Maildir, both parts
 * lower-case; any byte of them outside [a-z0-9._+=-], and a leading dot,
 * written %XX, so no address can name a path outside root. 0, or -1 if it
 * does not fit in len.
 */
int maildir_path(const char *root, const char *addr, char *buf, size_t len);

/*
 * The local recipients (local.c): our domains, the users file, the map of
 * mailboxes to backends, and the recipient check. dcid (may be NULL) gives
 * the check's probe connections their DCIDs.
 */
struct local *local_new(struct event_base *base, uint64_t (*dcid)(void *),
    void *dcid_arg);
/*
 * Read [local] users_file and mailbox_map of c (kept: c must live until
 * the next load). 0, or -1 with "file:line: why" in err, the tables in use
 * unchanged (a reload that fails changes nothing).
 */
int local_load(struct local *l, const struct sl_conf *c, char *err,
    size_t errlen);
/* Drop every check in flight without its callback; free. */
void local_free(struct local *l);
/* 1 if addr's domain is local ([server] local_domains, [mailboxes]). */
int local_is_local(const struct local *l, const char *addr);
/* The backend ([backends] row) holding addr's mailbox, or NULL: ours. */
const struct conf_kv *local_backend(const struct local *l, const char *addr);

/*
 * The recipient check of [local] recipient_check for addr: NULL if there
 * is nothing to wait for (not local, a known user, no check); else a query
 * whose answer cb(arg, code, reply) comes later from the loop: 250, 550
 * 5.1.1 (unknown: from the file, or the server's 5xx), 552 (the server's
 * over-quota reply), or 451 4.4.1 (the server could not be asked). After
 * local_check_cancel(q) the callback never runs.
 */
typedef void local_check_fn(void *arg, int code, const char *reply);
struct local_query *local_check(struct local *l, const char *addr,
    local_check_fn *cb, void *arg);
void local_check_cancel(struct local_query *q);

#endif
