/* SPDX-License-Identifier: MIT */
/*
 * remote.c: an outbound connection whose smtpc runs on another event
 * loop thread, driven from its owner's (the scheduler's) thread: the same
 * calls and callbacks as smtpc.h, handed across with inboxes (no lock).
 *
 * The owner's calls (send, quit, free) are posted to the loop, which runs
 * them on the smtpc there; the smtpc's callbacks (done, event) run on the
 * loop and are posted back to the owner (every reply too, when the owner
 * asks for them), with what the owner may ask of the connection
 * afterwards (the peer's host and extensions, whether the source address
 * could not be bound) copied into the remote at that moment. A message handed to smtpc_remote_send is
 * borrowed by the loop until its done reaches the owner, as smtpc_send's
 * is; its body must not change meanwhile (the scheduler's bodies are
 * read-only, so connections on several loops may send one at once). One
 * difference: a message sent after the peer hung up but before the owner
 * heard it is dropped, never done: the owner sees CLOSED with the message
 * still out (it was never offered to the peer).
 *
 * Life: a reference for the owner (until smtpc_remote_free), one for the
 * loop (until the smtpc there is freed) and one per call in flight
 * between them; the last one out frees it. Once the owner freed it, what
 * is still on its way to the owner is dropped.
 *
 * Threads: smtpc_remote_* on the owner's thread; the rest runs where it
 * says.
 */
#include <semaphore.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "smtpc/smtpc.h"
#include "util/inbox.h"
#include "util/util.h"

struct smtpc_remote {
	_Atomic int refs;
	struct sl_inbox *owner;		/* the owner's loop */
	struct sl_inbox *loop;		/* where the smtpc runs */
	struct event_base *loop_base;
	struct smtpc_cb cb;		/* the owner's, called on its thread */
	int owner_gone;			/* owner's thread only */
	int sending;			/* owner's: a message handed over
					   whose done (or CLOSED) has not
					   come back: the loop may write it */
	/* the loop's thread only */
	struct smtpc *c;
	int closed;			/* it said CLOSED or FAILED */
	/* written on the loop before a callback is posted, read by the
	 * owner after it arrives (the post orders them) */
	char peer_host[256];
	unsigned ext;
	int bind_failed;
	/* smtpc_new's arguments, until the loop has made the smtpc */
	uint64_t dcid;
	struct smtpc_params p;
	char *helo;
	struct smtpc_addr *addrs;
	size_t naddr;
	struct sockaddr_storage source;	/* p.source's, copied */
};

/* A callback on its way to the owner. */
struct smtpc_remote_ev {
	struct smtpc_remote *r;
	struct smtpc_msg *m;		/* done; NULL: an event or a reply */
	int reply;			/* a reply (in reason), in order
					   before its done */
	enum smtpc_event ev;
	int code;
	char *reason;
};

static void
smtpc_remote_unref(struct smtpc_remote *r)
{
	if (atomic_fetch_sub(&r->refs, 1) != 1)
		return;
	free(r->helo);
	free(r->addrs);
	free(r);
}

/* Post fn(r) to inbox, holding a reference for the way. */
static void
smtpc_remote_post(struct smtpc_remote *r, struct sl_inbox *in,
    sl_inbox_fn *fn, void *arg)
{
	atomic_fetch_add(&r->refs, 1);
	sl_inbox_post(in, fn, arg);
}

/* --- on the owner's thread: the smtpc's callbacks arriving --- */

static void
smtpc_remote_deliver(void *arg)
{
	struct smtpc_remote_ev *e = arg;
	struct smtpc_remote *r = e->r;

	if (e->m != NULL || (!e->reply && e->ev != SMTPC_READY))
		r->sending = 0;	/* done, or closed: the loop lets go of it */
	if (!r->owner_gone) {
		if (e->m != NULL)
			r->cb.done(r->cb.arg, (struct smtpc *)r, e->m);
		else if (e->reply)
			r->cb.reply(r->cb.arg, (struct smtpc *)r, e->reason);
		else
			r->cb.event(r->cb.arg, (struct smtpc *)r, e->ev, e->code,
			    e->reason != NULL ? e->reason : "");
	}
	free(e->reason);
	free(e);
	smtpc_remote_unref(r);
}

/* --- on the loop's thread --- */

static void
smtpc_remote_peer(struct smtpc_remote *r, struct smtpc *c)
{
	sl_strlcpy(r->peer_host, smtpc_peer_host(c), sizeof(r->peer_host));
	r->ext = smtpc_peer_ext(c);
	r->bind_failed = smtpc_bind_failed(c);
}

static void
smtpc_remote_on_done(void *arg, struct smtpc *c, struct smtpc_msg *m)
{
	struct smtpc_remote *r = arg;
	struct smtpc_remote_ev *e = xcalloc(1, sizeof(*e));

	smtpc_remote_peer(r, c);
	e->r = r;
	e->m = m;
	smtpc_remote_post(r, r->owner, smtpc_remote_deliver, e);
}

/* Every reply, when the owner wants them: posted before the done they
 * lead to, so the owner hears them in order. */
static void
smtpc_remote_on_reply(void *arg, struct smtpc *c, const char *reply)
{
	struct smtpc_remote *r = arg;
	struct smtpc_remote_ev *e = xcalloc(1, sizeof(*e));

	e->r = r;
	e->reply = 1;
	e->reason = xstrdup(reply);
	smtpc_remote_post(r, r->owner, smtpc_remote_deliver, e);
}

/* (the loop's thread, a turn later) the socket is closed: on to the owner */
static void
smtpc_remote_relay(void *arg)
{
	struct smtpc_remote_ev *e = arg;
	struct smtpc_remote *r = e->r;

	smtpc_remote_post(r, r->owner, smtpc_remote_deliver, e);
	smtpc_remote_unref(r);		/* this hop's */
}

static void
smtpc_remote_on_event(void *arg, struct smtpc *c, enum smtpc_event ev,
    int code, const char *reason)
{
	struct smtpc_remote *r = arg;
	struct smtpc_remote_ev *e = xcalloc(1, sizeof(*e));

	smtpc_remote_peer(r, c);
	e->r = r;
	e->ev = ev;
	e->code = code;
	e->reason = reason != NULL ? xstrdup(reason) : NULL;
	if (ev != SMTPC_READY)
		r->closed = 1;
	/* smtpc closes the socket once this callback returns; the owner may
	 * open the next connection when it hears: so it hears after that,
	 * and a receiver never sees one more than the limit */
	if (ev == SMTPC_READY)
		smtpc_remote_post(r, r->owner, smtpc_remote_deliver, e);
	else
		smtpc_remote_post(r, r->loop, smtpc_remote_relay, e);
}

static void
smtpc_remote_start(void *arg)
{
	struct smtpc_remote *r = arg;
	struct smtpc_cb cb = { smtpc_remote_on_done, smtpc_remote_on_event, r,
		r->cb.reply != NULL ? smtpc_remote_on_reply : NULL };

	r->p.helo = r->helo;
	if (r->p.source != NULL)
		r->p.source = &r->source;
	r->c = smtpc_new(r->loop_base, r->dcid, &r->p, r->addrs, r->naddr,
	    &cb);
	smtpc_remote_unref(r);		/* the post's */
}

struct smtpc_remote_call {
	struct smtpc_remote *r;
	struct smtpc_msg *m;
	enum { SR_SEND, SR_QUIT, SR_FREE } what;
	sem_t *freed;			/* SR_FREE: posted once done, or NULL */
};

static void
smtpc_remote_run(void *arg)
{
	struct smtpc_remote_call *k = arg;
	struct smtpc_remote *r = k->r;

	switch (k->what) {
	case SR_SEND:
		/* sent after the peer hung up (the owner had not heard yet):
		 * never handed over, so no one writes into k->m once the
		 * owner frees it; the owner puts the job back (sched) */
		if (!r->closed)
			smtpc_send(r->c, k->m);
		break;
	case SR_QUIT:
		smtpc_quit(r->c);
		break;
	case SR_FREE:
		/* no callback comes from it after this */
		smtpc_free(r->c);
		r->c = NULL;
		if (k->freed != NULL)
			sem_post(k->freed);	/* the owner may free the message */
		smtpc_remote_unref(r);	/* the loop's */
		break;
	}
	free(k);
	smtpc_remote_unref(r);		/* the post's */
}

static void
smtpc_remote_call(struct smtpc_remote *r, int what, struct smtpc_msg *m)
{
	struct smtpc_remote_call *k = xmalloc(sizeof(*k));

	k->r = r;
	k->m = m;
	k->what = what;
	k->freed = NULL;
	smtpc_remote_post(r, r->loop, smtpc_remote_run, k);
}

/* --- the owner's calls --- */

struct smtpc_remote *
smtpc_remote_new(struct sl_inbox *owner, struct sl_inbox *loop,
    struct event_base *loop_base, uint64_t dcid, const struct smtpc_params *p,
    const struct smtpc_addr *addrs, size_t naddr, const struct smtpc_cb *cb)
{
	struct smtpc_remote *r = xcalloc(1, sizeof(*r));

	atomic_init(&r->refs, 2);	/* the owner's and the loop's */
	r->owner = owner;
	r->loop = loop;
	r->loop_base = loop_base;
	r->cb = *cb;
	r->dcid = dcid;
	r->p = *p;
	r->helo = p->helo != NULL ? xstrdup(p->helo) : NULL;
	if (p->source != NULL)
		memcpy(&r->source, p->source, sizeof(r->source));
	r->naddr = naddr;
	r->addrs = xcalloc(naddr ? naddr : 1, sizeof(*addrs));
	memcpy(r->addrs, addrs, naddr * sizeof(*addrs));
	smtpc_remote_post(r, r->loop, smtpc_remote_start, r);
	return r;
}

void
smtpc_remote_send(struct smtpc_remote *r, struct smtpc_msg *m)
{
	r->sending = 1;
	smtpc_remote_call(r, SR_SEND, m);
}

void
smtpc_remote_quit(struct smtpc_remote *r)
{
	smtpc_remote_call(r, SR_QUIT, NULL);
}

void
smtpc_remote_free(struct smtpc_remote *r)
{
	if (r == NULL)
		return;
	r->owner_gone = 1;
	if (r->sending) {
		/* the loop may be writing into the message (or about to send
		 * it): the owner frees it once this returns, so wait until the
		 * loop's smtpc is gone (shutdown, or a connection abandoned
		 * mid-transaction; a loop never waits for its owner) */
		struct smtpc_remote_call *k = xmalloc(sizeof(*k));
		sem_t freed;

		sem_init(&freed, 0, 0);
		k->r = r;
		k->m = NULL;
		k->what = SR_FREE;
		k->freed = &freed;
		smtpc_remote_post(r, r->loop, smtpc_remote_run, k);
		while (sem_wait(&freed) != 0)
			;
		sem_destroy(&freed);
	} else {
		smtpc_remote_call(r, SR_FREE, NULL);
	}
	smtpc_remote_unref(r);		/* the owner's */
}

const char *
smtpc_remote_peer_host(const struct smtpc_remote *r)
{
	return r->peer_host;
}

unsigned
smtpc_remote_peer_ext(const struct smtpc_remote *r)
{
	return r->ext;
}

int
smtpc_remote_bind_failed(const struct smtpc_remote *r)
{
	return r->bind_failed;
}
