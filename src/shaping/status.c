/* SPDX-License-Identifier: MIT */
/*
 * status.c: `sluice shaping status`: what shaping knows, as JSON. Walks
 * the sites (an operator's command, not a delivery decision): the
 * configured ones, and implicit ones with an action in force or open
 * connections.
 *
 *   {"file", "redis": {"url", "state": "up"|"down"|"off"}, "nodes",
 *    "sites": [{"site", "configured", "limits": {...}, "connections",
 *      "sent_last_minute", "actions": [{"action", "rule", "until"}],
 *      "sources": [{"source", "connections", "sent_last_minute",
 *        "unbindable", "warmup": {"budget", "used", "window_start"}}]}]}
 */
#include <jansson.h>
#include <string.h>

#include "conf/conf.h"
#include "shaping/shaping_int.h"
#include "util/util.h"

#define SEC 1000000LL

static json_t *
rate_json(const struct shaping_rate *r)
{
	char buf[48];

	if (r->n == 0)
		return json_null();
	shaping_rate_format(r, buf, sizeof(buf));
	return json_string(buf);
}

static json_t *
int_or_null(int64_t v)
{
	return v > 0 ? json_integer(v) : json_null();
}

static json_t *
limits_json(const struct shaping_site *site)
{
	const struct shaping_site_conf *c = site->conf;

	if (c == NULL)
		return json_object();
	return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:s}",
	    "connections", int_or_null(c->connections),
	    "messages_per_connection", int_or_null(c->messages_per_connection),
	    "recipients_per_transaction",
	    int_or_null(c->recipients_per_transaction),
	    "rate", rate_json(&c->rate),
	    "connection_rate", rate_json(&c->connection_rate),
	    "helo", c->helo ? json_string(c->helo) : json_null(),
	    "source_select", c->select == SHAPING_SELECT_PIN ? "pin" :
	    "rotate");
}

static json_t *
actions_json(const struct shaping_site *site, int64_t now)
{
	static const char *const kinds[SHAPING_A_N] = { "suspend", "rate",
		"connections" };
	json_t *a = json_array();
	char until[32], r[48];

	for (int k = 0; k < SHAPING_A_N; k++) {
		const struct shaping_act_state *s = &site->act[k];
		json_t *o;
		if (s->until <= now)
			continue;
		shaping_iso_time(s->until, until, sizeof(until));
		o = json_pack("{s:s, s:s, s:I, s:s}", "action", kinds[k], "rule",
		    s->rule ? s->rule : "-", "until", (json_int_t)(s->until / SEC),
		    "until_time", until);
		if (k == SHAPING_A_RATE) {
			shaping_rate_format(&s->rate, r, sizeof(r));
			json_object_set_new(o, "rate", json_string(r));
		} else if (k == SHAPING_A_CONNS) {
			json_object_set_new(o, "connections",
			    json_integer(s->connections));
		}
		json_array_append_new(a, o);
	}
	return a;
}

static json_t *
path_json(const struct shaping_path *p, int64_t now)
{
	json_t *o = json_pack("{s:s, s:i, s:I, s:b}", "source",
	    shaping_path_name(p), "connections", p->nconn, "sent_last_minute",
	    (json_int_t)shaping_meter_minute(&p->meter, now), "unbindable",
	    p->unbindable_until > now);

	if (p->src != NULL && p->src->has_warmup) {
		int64_t win = shaping_warmup_window(&p->src->warmup, now);
		json_object_set_new(o, "warmup", json_pack("{s:I, s:I, s:I, s:I}",
		    "budget", (json_int_t)shaping_path_budget_all(p, now),
		    "used", (json_int_t)(p->warm_window == win ? p->warm_used : 0),
		    "window_start", (json_int_t)(win * p->src->warmup.unit_us / SEC),
		    "started", (json_int_t)(p->warm_start / SEC)));
	}
	return o;
}

static json_t *
site_json(const struct shaping_site *site, int64_t now)
{
	json_t *srcs = json_array();
	uint64_t sent = 0;
	json_t *o;

	for (size_t i = 0; i < site->npaths; i++) {
		sent += shaping_meter_minute(&site->paths[i]->meter, now);
		json_array_append_new(srcs, path_json(site->paths[i], now));
	}
	o = json_pack("{s:s, s:b, s:o, s:i, s:I, s:o, s:o}", "site", site->name,
	    "configured", site->conf != NULL, "limits", limits_json(site),
	    "connections", site->nconn, "sent_last_minute", (json_int_t)sent,
	    "actions", actions_json(site, now), "sources", srcs);
	return o;
}

json_t *
shaping_status(struct shaping *sh)
{
	const char *state = sh->redis == NULL ? "off" :
	    shaping_shared(sh) ? "up" : "down";
	json_t *sites = json_array();
	struct shaping_site *site;
	int64_t now = shaping_now(sh);

	/* configured sites in the file's order, then the others by name */
	for (size_t i = 0; i < sh->file->nsites; i++)
		if ((site = shaping_site_find(sh, sh->file->sites[i].name)))
			json_array_append_new(sites, site_json(site, now));
	SHAPING_FOREACH_SITE(sh, site) {
		int any = site->nconn > 0;
		if (site->conf != NULL)
			continue;
		for (int k = 0; k < SHAPING_A_N; k++)
			any |= site->act[k].until > now;
		if (any)
			json_array_append_new(sites, site_json(site, now));
	}
	return json_pack("{s:s, s:{s:s, s:s}, s:i, s:I, s:o}", "file",
	    sh->file->file, "redis", "url", sh->redis_url ? sh->redis_url : "",
	    "state", state, "nodes", sh->nodes, "now", (json_int_t)(now / SEC),
	    "sites", sites);
}
