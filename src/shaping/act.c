/* SPDX-License-Identifier: MIT */
/*
 * act.c: the reply rules and the actions they take. Every reply a
 * receiver gives goes through shaping_reply(): the first rule (in file
 * order) whose site and regex match counts it in its threshold window;
 * when the window holds `threshold` matches, the rule fires. A site-wide
 * action (suspend, rate, connections) is then in force at the site for
 * its duration, logged once, and told to the other nodes; a per-recipient
 * action (bounce, retry_in) applies to each matching reply while the rule
 * is armed (always, with a threshold of 1; else for one window after it
 * fired), when the scheduler asks shaping_verdict().
 *
 * Owns each site's rule counters and actions (struct shaping_act_state).
 * An action ends when its time is up (looked at lazily: every reader
 * compares `until` with the clock), when `sluice shaping resume` ends it,
 * or when Redis no longer lists a shared one (another node resumed it).
 */
#include <stdlib.h>
#include <string.h>

#include "log/log.h"
#include "shaping/shaping_int.h"
#include "util/util.h"

#define SEC 1000000LL

void
shaping_act_clear(struct shaping_act_state *a)
{
	free(a->rule);
	memset(a, 0, sizeof(*a));
}

static void
act_describe(const struct shaping_act_state *a, int kind, char *buf,
    size_t len)
{
	char r[48];

	switch (kind) {
	case SHAPING_A_SUSPEND:
		snprintf(buf, len, "suspend");
		break;
	case SHAPING_A_RATE:
		shaping_rate_format(&a->rate, r, sizeof(r));
		snprintf(buf, len, "rate %s", r);
		break;
	default:
		snprintf(buf, len, "connections %d", a->connections);
		break;
	}
}

int
shaping_act_set(struct shaping_site *site, int kind, int64_t until,
    const char *rule, const struct shaping_rate *rate, int connections,
    int shared)
{
	struct shaping_act_state *a = &site->act[kind];
	int64_t now = shaping_now(site->sh);
	int fresh = a->until <= now;
	char what[64], at[32];

	if (until == 0) {	/* ended elsewhere */
		if (a->until == 0)
			return 0;
		shaping_act_clear(a);
		shaping_site_wake_all(site);
		return 1;
	}
	if (a->until >= until)
		return 0;	/* one lasting as long is in force */
	free(a->rule);
	a->rule = xstrdup(rule ? rule : "-");
	a->until = until;
	a->shared = shared;
	if (rate != NULL)
		a->rate = *rate;
	a->connections = connections;
	if (fresh) {
		act_describe(a, kind, what, sizeof(what));
		shaping_iso_time(until, at, sizeof(at));
		log_ev(LOG_WARNING, NULL, "shaping action", "site", site->name,
		    "rule", a->rule, "action", what, "until", at, "from",
		    shared ? "another node" : "this node", NULL);
	}
	/* a new rate or limit: waiters ask again under it */
	if (kind != SHAPING_A_SUSPEND)
		shaping_site_wake_all(site);
	return 1;
}

void
shaping_act_expire(struct shaping_site *site, int64_t now)
{
	for (int k = 0; k < SHAPING_A_N; k++)
		if (site->act[k].until != 0 && site->act[k].until <= now)
			shaping_act_clear(&site->act[k]);
}

void
shaping_hits_drop(struct shaping_site *site)
{
	for (size_t i = 0; i < site->nhits; i++)
		shaping_hits_free(&site->hits[i]);
	free(site->hits);
	free(site->armed);
	site->hits = NULL;
	site->armed = NULL;
	site->nhits = 0;
}

void
shaping_hits_reset(struct shaping_site *site)
{
	const struct shaping_conf *file = site->sh->file;

	shaping_hits_drop(site);
	site->nhits = file->nrules;
	site->hits = xcalloc(site->nhits + 1, sizeof(*site->hits));
	site->armed = xcalloc(site->nhits + 1, sizeof(*site->armed));
	for (size_t i = 0; i < site->nhits; i++)
		shaping_hits_init(&site->hits[i], file->rules[i].threshold);
}

/* The first rule that matches reply at site, or -1. */
static int
rule_first(const struct shaping_site *site, const char *reply)
{
	const struct shaping_conf *file = site->sh->file;

	for (size_t i = 0; i < file->nrules && i < site->nhits; i++)
		if (shaping_rule_matches(&file->rules[i], site->name, reply))
			return (int)i;
	return -1;
}

static int
per_recipient(int kind)
{
	return kind == SHAPING_ACT_BOUNCE || kind == SHAPING_ACT_RETRY_IN;
}

int
shaping_reply(struct shaping_site *site, const char *reply)
{
	const struct shaping_rule_conf *r;
	int64_t now = shaping_now(site->sh);
	int i = rule_first(site, reply);

	if (i < 0)
		return 0;
	r = &site->sh->file->rules[i];
	if (!shaping_hits_add(&site->hits[i], r->window_us, now))
		return 1;
	switch (r->action.kind) {
	case SHAPING_ACT_SUSPEND:
		shaping_act_set(site, SHAPING_A_SUSPEND, now + r->action.dur_us,
		    r->name, NULL, 0, 0);
		shaping_shared_act(site, SHAPING_A_SUSPEND);
		break;
	case SHAPING_ACT_RATE:
		shaping_act_set(site, SHAPING_A_RATE, now + r->action.dur_us,
		    r->name, &r->action.rate, 0, 0);
		shaping_shared_act(site, SHAPING_A_RATE);
		break;
	case SHAPING_ACT_CONNECTIONS:
		shaping_act_set(site, SHAPING_A_CONNS, now + r->action.dur_us,
		    r->name, NULL, r->action.connections, 0);
		shaping_shared_act(site, SHAPING_A_CONNS);
		break;
	default:
		if (per_recipient(r->action.kind) && r->threshold > 1) {
			char what[64];
			site->armed[i] = now + r->window_us;
			shaping_action_format(&r->action, what, sizeof(what));
			log_ev(LOG_WARNING, NULL, "shaping action", "site",
			    site->name, "rule", r->name, "action", what,
			    "from", "this node", NULL);
		}
		break;
	}
	return 1;
}

enum shaping_verdict
shaping_verdict(struct shaping_site *site, const char *reply, int64_t *retry_s,
    const char **rule)
{
	const struct shaping_rule_conf *r;
	int i = rule_first(site, reply);

	if (i < 0)
		return SHAPING_KEEP;
	r = &site->sh->file->rules[i];
	if (!per_recipient(r->action.kind) || (r->threshold > 1 &&
	    site->armed[i] <= shaping_now(site->sh)))
		return SHAPING_KEEP;
	*rule = r->name;
	if (r->action.kind == SHAPING_ACT_BOUNCE)
		return SHAPING_BOUNCE;
	*retry_s = r->action.dur_us / SEC;
	return SHAPING_RETRY_IN;
}

int
shaping_resume(struct shaping *sh, const char *name)
{
	struct shaping_site *site = shaping_site_find(sh, name);
	int64_t now = shaping_now(sh);
	int any = 0;

	if (site == NULL)
		return -1;
	shaping_act_expire(site, now);
	for (int k = 0; k < SHAPING_A_N; k++)
		any |= site->act[k].until != 0;
	if (!any)
		return -1;
	for (int k = 0; k < SHAPING_A_N; k++)
		shaping_act_clear(&site->act[k]);
	/* counting starts again: old matches do not fire it at once */
	shaping_hits_reset(site);
	log_ev(LOG_WARNING, NULL, "shaping resumed", "site", site->name, NULL);
	shaping_shared_resume(site);
	shaping_site_wake_all(site);
	shaping_site_maybe_free(site);
	return 0;
}

void
shaping_foreach_action(struct shaping *sh, shaping_action_fn *fn, void *arg)
{
	struct shaping_site *site;
	int64_t now = shaping_now(sh);
	char what[64];

	SHAPING_FOREACH_SITE(sh, site) {
		for (int k = 0; k < SHAPING_A_N; k++) {
			const struct shaping_act_state *a = &site->act[k];
			if (a->until <= now)
				continue;
			act_describe(a, k, what, sizeof(what));
			if (fn(arg, site->name, a->rule, what, a->until / SEC))
				return;
		}
	}
}
