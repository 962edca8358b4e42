/* SPDX-License-Identifier: MIT */
/*
 * deliver.h: the local delivery agents, beside the SMTP client.
 *
 *   Maildir (maildir.c): the message into the Maildir of each recipient
 *   under a root, DIR/domain/user/Maildir/, written on worker threads.
 *   LMTP (lmtp.c): the address of an LMTP server ("unix:/path",
 *   "[host]:port"); the conversation itself is src/smtpc in LMTP mode.
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
struct smtpc_addr;
struct smtpc_msg;
struct maildir;

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
 * An LMTP server's address: "unix:/path/to/socket", "[192.0.2.1]:24",
 * "[2001:db8::1]:24" (host names are not taken: a backend is named by its
 * address). 0, or -1 with the reason in err.
 */
int lmtp_addr_parse(const char *spec, struct smtpc_addr *out, char *err,
    size_t errlen);

#endif
