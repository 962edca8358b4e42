/* SPDX-License-Identifier: MIT */
/*
 * shape.c: the scheduler's side of traffic shaping (src/shaping): which
 * site a destination belongs to, whether it may open a connection and on
 * which source address, whether a connection may take its next message,
 * and what the reply rules make of each reply and each recipient's
 * outcome. Without a shaping file (s->shaping NULL) every question here
 * answers "go" and nothing else changes.
 *
 * Owns the destination's reference to its shaping site (d->shape) and the
 * waiters a destination (to open) and a connection (to send) put on
 * shaping's sites and paths. A waiter woken runs its destination again
 * once the loop is back (sched_dest_kick_later), so shaping's callbacks
 * never run the scheduler under their own feet.
 */
#include <stdlib.h>
#include <string.h>

#include "log/log.h"
#include "sched/sched_int.h"
#include "util/util.h"

/* ---- waiters ---- */

static void
sched_shape_dest_woken(struct shaping_wait *w)
{
	struct sched_dest *d = (struct sched_dest *)((char *)w -
	    offsetof(struct sched_dest, shape_wait));

	sched_dest_kick_later(d->wake_s, d);
}

/* A token may be there for c: take it now, from inside shaping's call
 * (the waiter is off shaping's list by then). */
static void
sched_shape_conn_woken(struct shaping_wait *w)
{
	struct sched_conn *c = (struct sched_conn *)((char *)w -
	    offsetof(struct sched_conn, shape_wait));

	c->dest->ntoken_wait--;
	if (c->state == SCHED_CONN_IDLE || c->state == SCHED_CONN_LOADING)
		sched_conn_resume(c);
}

/* ---- sites ---- */

void
sched_set_shaping(struct sched *s, struct shaping *sh)
{
	s->shaping = sh;
	for (size_t b = 0; b < s->dtab_size; b++)
		for (struct sched_dest *d = s->dtab[b]; d != NULL; d = d->hnext)
			if (d->site != NULL)
				sched_shape_attach(s, d, d->site->key);
}

void
sched_shape_attach(struct sched *s, struct sched_dest *d, const char *key)
{
	const char *hosts[64];
	size_t n = 0;
	struct shaping_site *site;

	if (s->shaping == NULL)
		return;
	for (size_t i = 0; d->hops != NULL && i < d->hops->nhost &&
	    n < SL_ARRAY_LEN(hosts); i++)
		hosts[n++] = d->hops->hosts[i].name;
	site = shaping_site_get(s->shaping, d->route ? NULL : d->name, hosts,
	    n, key);
	if (site == d->shape) {
		shaping_site_put(site);
		return;
	}
	sched_shape_detach(s, d);
	d->shape = site;
	d->shape_wait.fn = sched_shape_dest_woken;
}

void
sched_shape_detach(struct sched *s, struct sched_dest *d)
{
	shaping_wait_cancel(&d->shape_wait);
	if (d->blocked != NULL && d->blocked == d->shape_why)
		d->blocked = NULL;
	free(d->shape_why);
	d->shape_why = NULL;
	shaping_site_put(d->shape);
	d->shape = NULL;
}

int64_t
sched_shape_suspended(struct sched *s, struct sched_dest *d)
{
	const char *why;
	int64_t until;

	if (d->shape == NULL ||
	    (until = shaping_site_suspended(d->shape, &why)) == 0)
		return 0;
	sched_dest_blocked_text(d, why);
	/* woken at the end (the caller's timer), or by a resume */
	d->shape_wait.fn = sched_shape_dest_woken;
	shaping_site_hold(d->shape, &d->shape_wait);
	return until;
}

/* The address families d's next hops have, as shaping_open wants them. */
static unsigned
sched_shape_families(const struct sched_dest *d)
{
	unsigned f = 0;

	for (size_t i = 0; d->hops != NULL && i < d->hops->nhost; i++)
		for (size_t a = 0; a < d->hops->hosts[i].naddr; a++)
			f |= 1u << d->hops->hosts[i].addrs[a].ss_family;
	return f;
}

int
sched_shape_open(struct sched *s, struct sched_dest *d,
    struct shaping_path **path)
{
	const char *why = NULL;

	*path = NULL;
	if (d->shape == NULL)
		return 1;
	d->shape_wait.fn = sched_shape_dest_woken;
	switch (shaping_open(d->shape, sl_hash_str(d->name),
	    sched_shape_families(d), &d->shape_wait, path, &why)) {
	case SHAPING_GO:
		return 1;
	case SHAPING_NONE:
		/* no source binds (they are tried again in a minute) */
		sched_dest_blocked_text(d, why);
		sched_dest_wake_at(s, d, sched_now_ms() + 60000);
		return 0;
	default:
		sched_dest_blocked_text(d, why);
		return 0;
	}
}

/* Whether c's path has a token due (take: and take it); else c waits
 * for it, and its destination says why. */
static int
sched_shape_token(struct sched_conn *c, int take)
{
	const char *why = NULL;

	if (c->path == NULL)
		return 1;
	if (c->shape_wait.list != NULL)
		return 0;		/* already waiting */
	c->shape_wait.fn = sched_shape_conn_woken;
	if (take ? shaping_send(c->path, &c->shape_wait, &why) == SHAPING_GO :
	    shaping_send_due(c->path, &c->shape_wait, &why))
		return 1;
	c->dest->ntoken_wait++;
	sched_dest_blocked_text(c->dest, why);
	return 0;
}

int
sched_shape_due(struct sched_conn *c)
{
	return sched_shape_token(c, 0);
}

int
sched_shape_send(struct sched_conn *c)
{
	return sched_shape_token(c, 1);
}

void
sched_shape_conn_gone(struct sched_conn *c)
{
	if (c->shape_wait.list != NULL) {
		shaping_wait_cancel(&c->shape_wait);
		c->dest->ntoken_wait--;
	}
	if (c->path != NULL)
		shaping_conn_closed(c->path, c->state != SCHED_CONN_CONNECTING);
	c->path = NULL;
}

int64_t
sched_shape_mpc(const struct sched_conn *c)
{
	int n = c->dest->shape ?
	    shaping_site_messages_per_connection(c->dest->shape) : 0;

	return n > 0 ? n : c->s->conf->delivery_messages_per_connection;
}

uint32_t
sched_shape_rpt(const struct sched *s, const struct sched_dest *d)
{
	int n = d->shape ? shaping_site_recipients_per_transaction(d->shape) : 0;

	return (uint32_t)(n > 0 ? n :
	    s->conf->delivery_recipients_per_transaction);
}

/* ---- replies ---- */

void
sched_shape_reply(void *arg, struct smtpc *sc, const char *reply)
{
	struct sched_conn *c = arg;

	if (c->dest->shape != NULL && shaping_reply(c->dest->shape, reply))
		c->rule_matched = 1;
}

/* "452 4.2.2 Mailbox full" -> "552 5.2.2 Mailbox full (rule NAME)". */
static void
sched_shape_permanent(struct smtpc_rcpt *res, const char *rule)
{
	char text[sizeof(res->reply) + 160];

	snprintf(text, sizeof(text), "%s (rule %.128s: bounce)", res->reply,
	    rule);
	if (text[0] == '4')
		text[0] = '5';
	if (strlen(text) > 5 && text[4] == '4' && text[5] == '.')
		text[4] = '5';
	sl_strlcpy(res->reply, text, sizeof(res->reply));
}

int
sched_shape_verdict(struct sched *s, struct sched_dest *d,
    struct smtpc_rcpt *res, int64_t *retry_s)
{
	const char *rule = NULL;

	*retry_s = 0;
	if (d->shape == NULL || res->code < 400 || res->code >= 500)
		return res->code;
	switch (shaping_verdict(d->shape, res->reply, retry_s, &rule)) {
	case SHAPING_BOUNCE:
		log_ev(LOG_INFO, NULL, "shaping bounce", "destination", d->name,
		    "rule", rule, "reply", res->reply, NULL);
		sched_shape_permanent(res, rule);
		res->code += 100;
		return res->code;
	case SHAPING_RETRY_IN:
		return res->code;
	default:
		*retry_s = 0;
		return res->code;
	}
}
