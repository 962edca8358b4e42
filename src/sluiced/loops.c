/* SPDX-License-Identifier: MIT */
/*
 * loops.c: sluiced's part of the SMTP loops of their own ([server] loops,
 * smtpd_server_loops): each loop's door to the spool, and the recipient
 * check, which runs on the main loop (local.c's probes and tables live
 * there), asked for and answered through inboxes.
 *
 * A check in flight between two threads (struct sluiced_vq) has two
 * references, the loop's (until the answer or the cancel is seen there)
 * and the main loop's (until local.c answered or was cancelled); the last
 * one frees it. A session cancels from its loop: the main loop cancels
 * local.c's query if it has not answered yet, and an answer already on
 * its way is dropped on the loop.
 *
 * Threads: sluiced_loop_init/fini on the main thread, the checks where
 * each function says.
 */
#include <ctype.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"
#include "deliver/deliver.h"
#include "log/log.h"
#include "sluiced/sluiced.h"
#include "smtpd/smtpd.h"
#include "spool/spool.h"
#include "util/inbox.h"
#include "util/util.h"
#include "util/work.h"

#include <sched.h>

int
sluiced_loops_wanted(const struct sl_conf *c)
{
	cpu_set_t set;
	int n = (int)c->server_loops;

	if (n == 0) {
		/* one per core the process may run on */
		if (sched_getaffinity(0, sizeof(set), &set) == 0)
			n = CPU_COUNT(&set);
		if (n < 1)
			n = 1;
	}
	return n;
}

void *
sluiced_loop_init(void *arg, int id, struct event_base *base,
    struct sl_inbox *inbox)
{
	struct sluiced *d = arg;
	struct sluiced_loop *lp = xcalloc(1, sizeof(*lp));
	char err[256];

	lp->d = d;
	lp->id = id;
	lp->inbox = inbox;
	lp->base = base;
	if ((lp->port = spool_port_new(d->spool, base, err, sizeof(err))) ==
	    NULL)
		SL_PANIC("loop %d: %s", id, err);
	return lp;
}

void
sluiced_loop_fini(void *arg, void *loop_arg)
{
	struct sluiced_loop *lp = loop_arg;

	/* signatures in progress reach the port, then the answers still due
	 * to its sessions are called back (the loop is still: here) */
	sl_work_free(lp->work);
	spool_port_free(lp->port);
	free(lp);
}

/* ---- the recipient check from a loop ---- */

struct sluiced_vq {
	_Atomic int refs;
	struct sluiced_loop *lp;
	struct smtpd_session *s;
	char *rcpt;
	struct local_query *q;	/* main's: local.c's, while it may answer */
	int main_cancelled;	/* main's */
	int loop_cancelled;	/* the loop's */
	int code;		/* the answer, written on main before it is */
	char *reply;		/* posted to the loop */
};

static void
sluiced_vq_unref(struct sluiced_vq *v)
{
	if (atomic_fetch_sub(&v->refs, 1) != 1)
		return;
	free(v->rcpt);
	free(v->reply);
	free(v);
}

/* (the loop) the answer arrives */
static void
sluiced_vq_answered(void *arg)
{
	struct sluiced_vq *v = arg;

	if (!v->loop_cancelled)
		smtpd_session_verified(v->s, v->code, v->reply);
	sluiced_vq_unref(v);
}

/* (main) local.c answered: on to the loop */
static void
sluiced_vq_answer(void *arg, int code, const char *reply)
{
	struct sluiced_vq *v = arg;

	v->q = NULL;
	v->code = code;
	v->reply = xstrdup(reply != NULL ? reply : "");
	sl_inbox_post(v->lp->inbox, sluiced_vq_answered, v);
}

/* (main) ask local.c; nothing to wait for is a 250 */
static void
sluiced_vq_start(void *arg)
{
	struct sluiced_vq *v = arg;

	if (v->main_cancelled) {
		sluiced_vq_unref(v);	/* main's */
		sluiced_vq_unref(v);	/* the loop's: it will hear nothing */
		return;
	}
	v->q = local_check(v->lp->d->local, v->rcpt, sluiced_vq_answer, v);
	if (v->q == NULL && v->reply == NULL)
		sluiced_vq_answer(v, 250, "2.1.5 Ok");
	sluiced_vq_unref(v);		/* main's: the answer holds the loop's */
}

void *
sluiced_loop_verify(struct sluiced_loop *lp, struct smtpd_session *s,
    const char *rcpt)
{
	const struct sl_conf *c = smtpd_session_conf(s);
	struct sluiced_vq *v;
	const char *at = strrchr(rcpt, '@');
	char dom[256];
	size_t i = 0;

	/* what local_check answers at once, answered here: no check, or
	 * not a local domain (the loop's configuration says, as local.c's) */
	if (c->recipient_check == 0 || at == NULL)
		return NULL;
	for (at++; *at && i + 1 < sizeof(dom); at++)
		dom[i++] = (char)tolower((unsigned char)*at);
	dom[i] = '\0';
	if (!conf_domain_in(c->local_domains, c->nlocal_domains, dom))
		return NULL;
	v = xcalloc(1, sizeof(*v));
	atomic_init(&v->refs, 2);
	v->lp = lp;
	v->s = s;
	v->rcpt = xstrdup(rcpt);
	sl_inbox_post(lp->d->inbox, sluiced_vq_start, v);
	return v;
}

/* (main) the session gave up */
static void
sluiced_vq_cancel(void *arg)
{
	struct sluiced_vq *v = arg;

	if (v->q != NULL) {
		local_check_cancel(v->q);	/* its answer never comes */
		v->q = NULL;
		sluiced_vq_unref(v);		/* the loop's: nothing comes */
	}
	v->main_cancelled = 1;
	sluiced_vq_unref(v);			/* this call's */
}

void
sluiced_loop_verify_cancel(void *handle)
{
	struct sluiced_vq *v = handle;

	v->loop_cancelled = 1;
	atomic_fetch_add(&v->refs, 1);		/* for the call */
	sl_inbox_post(v->lp->d->inbox, sluiced_vq_cancel, v);
}
