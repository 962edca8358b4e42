/* SPDX-License-Identifier: MIT */
/*
 * sign.c: DKIM signing in sluiced ([dkim] sign, src/dkim). Every message
 * sluice originates for its own users gets its DKIM-Signature on top when
 * its From: domain (or a parent) has a key:
 *  - mail accepted over SMTP from an authenticated user or a trusted
 *    network (main.c), before the spool writes it, so before the 250;
 *  - each recipient's message built from an injected batch (inject.c:
 *    HTTP and RabbitMQ), after the builder made it and before the
 *    scheduler sends it. A templated batch gives every recipient a body
 *    of its own, and To: and Message-ID differ anyway, so each message
 *    is signed by itself, over exactly the bytes that are sent; nothing
 *    is kept per recipient (the signature lives as long as the built
 *    message does).
 *
 * The signing (RSA-2048: about a millisecond of CPU, Ed25519 a tenth of
 * that) runs on d->work's threads, made on first use, never on the loop.
 * A job holds a reference to the keys, so a reload in the middle is safe.
 * Unsigned mail is still mail: a signature that fails is logged, and the
 * message goes on without it.
 *
 * Threads: sluiced_sign and its done callback on the loop thread; the
 * signature on a worker thread.
 */
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "dkim/dkim.h"
#include "log/log.h"
#include "sluiced/sluiced.h"
#include "util/util.h"
#include "util/work.h"

#define SLUICED_SIGN_THREADS 2

struct sluiced_sign {
	struct evbuffer *msg;		/* borrowed until done */
	struct dkim_keys *keys;		/* a reference: a reload may come */
	const struct dkim_key *key;
	struct log_ids ids;
	int64_t now;
	char *field;
	enum dkim_status st;
	char why[256];
	sluiced_signed_fn *done;
	void *arg;
};

static void
sluiced_sign_run(void *arg)
{
	struct sluiced_sign *j = arg;

	j->st = dkim_sign(j->keys, j->msg, j->now, &j->field, &j->key, j->why,
	    sizeof(j->why));
}

static void
sluiced_sign_done(void *arg)
{
	struct sluiced_sign *j = arg;

	if (j->st == DKIM_SIGNED) {
		evbuffer_prepend(j->msg, j->field, strlen(j->field));
		log_ev(LOG_INFO, &j->ids, "DKIM signed", "domain",
		    j->key->domain, "selector", j->key->selector, "algorithm",
		    j->key->alg == DKIM_ED25519_SHA256 ? "ed25519-sha256" :
		    "rsa-sha256", NULL);
	} else if (j->st == DKIM_ERROR) {
		log_ev(LOG_WARNING, &j->ids, "DKIM signing failed", "reason",
		    j->why, NULL);
	}
	j->done(j->arg);
	dkim_keys_free(j->keys);
	free(j->field);
	free(j);
}

int
sluiced_sign(struct sluiced *d, struct evbuffer *msg, int64_t now,
    const struct log_ids *ids, sluiced_signed_fn *done, void *arg)
{
	struct sluiced_sign *j;

	if (d->dkim == NULL || d->dkim->n == 0)
		return -1;
	if (d->work == NULL)
		d->work = sl_work_new(d->base, SLUICED_SIGN_THREADS);
	j = xcalloc(1, sizeof(*j));
	j->msg = msg;
	j->keys = dkim_keys_ref(d->dkim);
	j->ids = *ids;
	j->now = now;
	j->done = done;
	j->arg = arg;
	sl_work_submit(d->work, sluiced_sign_run, sluiced_sign_done, j);
	return 0;
}
