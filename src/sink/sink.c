/* SPDX-License-Identifier: MIT */
/*
 * sink.c: the sink's answers to the smtpd server: ops->check applies the
 * rules at each stage, ops->store captures or discards and answers at
 * once, ops->closed and ops->replied keep the statistics.
 *
 * Order of the rules at each stage (the first that fires answers):
 *   greeting  max-connections, greeting-421-after, rate
 *   helo      helo PATTERN, rate
 *   mail      mail PATTERN, limit messages, rate
 *   rcpt      rcpt PATTERN, limit recipients, rate
 *   data      rate, drop-in-data
 *   data-end  rate
 * A reply with code 421 closes the connection (SMTPD_CHECK_CLOSE).
 * Every "rate" rule of the stage draws one number whether or not an
 * earlier rule fired, so a run with the same --seed and the same commands
 * in the same order answers the same.
 *
 * Invariants
 *  1. A limit counts an event only when the command was accepted: the
 *     check is the server's last word before its 250.
 *  2. stats.messages, recipients and bytes grow only with a 250 at the end
 *     of the data, so they equal what a client saw accepted.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <gmime/gmime.h>

#include "conf/conf.h"
#include "log/log.h"
#include "smtpd/smtpd.h"
#include "sink/sink_int.h"
#include "spool/spool.h"
#include "util/util.h"
#include "util/worker.h"

/* xorshift64*: small, fast and reproducible from --seed. */
static double
sink_rand(struct sink *k)
{
	uint64_t x = k->rng;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	k->rng = x;
	return (double)((x * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}

static struct sink_conn **
sink_conn_slot(struct sink *k, uint64_t icid)
{
	struct sink_conn **pp = &k->conns[icid % SINK_CONN_BUCKETS];

	while (*pp != NULL && (*pp)->icid != icid)
		pp = &(*pp)->next;
	return pp;
}

static enum smtpd_check
sink_answer(const char *text, int code, char *reply, size_t len)
{
	sl_strlcpy(reply, text, len);
	return code == 421 ? SMTPD_CHECK_CLOSE : SMTPD_CHECK_REPLY;
}

/* The "rate" rules of stage: 1 with the answer in *rc if one fired. */
static int
sink_rates(struct sink *k, int stage, char *reply, size_t len,
    enum smtpd_check *rc)
{
	const struct sink_rules *r = k->rules;
	int fired = 0;

	for (size_t i = 0; i < r->nrates; i++) {
		if (r->rates[i].stage != stage)
			continue;
		if (sink_rand(k) < r->rates[i].p && !fired) {
			*rc = sink_answer(r->rates[i].reply, r->rates[i].code,
			    reply, len);
			fired = 1;
		}
	}
	return fired;
}

/* The "limit" rules of what: 1 with the answer if one is over. */
static int
sink_limits(struct sink *k, struct smtpd_session *s, int what, int add,
    char *reply, size_t len, enum smtpd_check *rc)
{
	const struct sink_rules *r = k->rules;
	int64_t now = sl_mono_ms();

	for (size_t i = 0; i < r->nlimits; i++) {
		const struct sink_limit *l = &r->limits[i];
		const char *key = l->per_ip ? smtpd_session_peer_text(s) : "";
		if (l->what != what)
			continue;
		if (add) {
			sink_limiter_add(k->limiters[i], key, now);
		} else if (sink_limiter_count(k->limiters[i], key, now) >= l->n) {
			*rc = sink_answer(l->reply, l->code, reply, len);
			return 1;
		}
	}
	return 0;
}

static enum smtpd_check
sink_check_connect(struct sink *k, struct smtpd_session *s, char *reply,
    size_t len)
{
	const struct sink_rules *r = k->rules;
	struct sink_conn *c = xcalloc(1, sizeof(*c));
	struct sink_conn **pp;
	enum smtpd_check rc;

	c->icid = smtpd_session_icid(s);
	pp = sink_conn_slot(k, c->icid);
	*pp = c;
	k->st.connections++;
	if (r->max_connections > 0 && k->st.active >= r->max_connections) {
		k->st.refused++;
		return sink_answer("421 4.7.0 Too many connections, try again "
		    "later", 421, reply, len);
	}
	c->counted = 1;
	if (++k->st.active > k->st.peak_connections)
		k->st.peak_connections = k->st.active;
	if (r->greeting_421_after > 0 &&
	    k->st.connections > r->greeting_421_after)
		return sink_answer("421 4.7.0 Too many connections so far, "
		    "closing", 421, reply, len);
	if (sink_rates(k, SINK_AT_CONNECT, reply, len, &rc))
		return rc;
	return SMTPD_CHECK_OK;
}

static enum smtpd_check
sink_check(void *arg, struct smtpd_session *s, enum smtpd_stage stage,
    const char *param, char *reply, size_t len)
{
	struct sink *k = arg;
	const struct sink_match *m;
	enum smtpd_check rc;
	/* the smtpd stages and ours are in the same order */
	int st = (int)stage;

	if (stage == SMTPD_STAGE_CONNECT)
		return sink_check_connect(k, s, reply, len);
	if ((m = sink_rules_match(k->rules, st, param)) != NULL)
		return sink_answer(m->reply, m->code, reply, len);
	if (stage == SMTPD_STAGE_MAIL && sink_limits(k, s, SINK_LIMIT_MESSAGES,
	    0, reply, len, &rc))
		return rc;
	if (stage == SMTPD_STAGE_RCPT && sink_limits(k, s,
	    SINK_LIMIT_RECIPIENTS, 0, reply, len, &rc))
		return rc;
	if (sink_rates(k, st, reply, len, &rc))
		return rc;
	if (stage == SMTPD_STAGE_DATA && k->rules->drop_in_data > 0 &&
	    sink_rand(k) < k->rules->drop_in_data) {
		k->st.dropped++;
		return SMTPD_CHECK_DROP;
	}
	/* accepted: invariant 1 */
	if (stage == SMTPD_STAGE_MAIL) {
		k->st.transactions++;
		sink_limits(k, s, SINK_LIMIT_MESSAGES, 1, NULL, 0, NULL);
	} else if (stage == SMTPD_STAGE_RCPT) {
		sink_limits(k, s, SINK_LIMIT_RECIPIENTS, 1, NULL, 0, NULL);
	}
	return SMTPD_CHECK_OK;
}

static void
sink_store(void *arg, struct smtpd_session *s, struct spool_msg *msg)
{
	struct sink *k = arg;
	int ok = 1;

	if (k->maildir != NULL && sink_store_put(k, s, msg) != 0)
		ok = 0;
	if (ok) {
		k->st.messages++;
		k->st.recipients += msg->nrcpt;
		k->st.bytes += msg->size;
	}
	spool_msg_free(msg);
	smtpd_session_stored(s, ok ? SPOOL_OK : SPOOL_ERR_IO);
}

static void
sink_closed(void *arg, struct smtpd_session *s)
{
	struct sink *k = arg;
	struct sink_conn **pp = sink_conn_slot(k, smtpd_session_icid(s));
	struct sink_conn *c = *pp;

	if (c == NULL)
		return;
	if (c->counted)
		k->st.active--;
	*pp = c->next;
	free(c);
}

static void
sink_replied(void *arg, struct smtpd_session *s, int code)
{
	struct sink *k = arg;

	if (code >= 0 && code < (int)SL_ARRAY_LEN(k->st.replies))
		k->st.replies[code]++;
}

/* AUTH (smtpd's auth.c): one of the --auth pairs. */
static int
sink_auth_check(void *arg, const char *user, const char *pass)
{
	return sink_user_ok(arg, user, pass);
}

static uint64_t
sink_mid_next(void *arg)
{
	struct sink *k = arg;

	return ++k->next_mid;
}

/* The server's configuration: open to everyone, no relay check. */
static struct sl_conf *
sink_conf(const struct sink_opts *o, char *err, size_t errlen)
{
	struct sl_conf *c;

	if ((c = conf_load(NULL, err, errlen)) == NULL)
		return NULL;
	for (size_t i = 0; i < c->nlisten; i++)
		free(c->listen[i].text);
	c->nlisten = 1;
	if (conf_addr_parse(o->listen, &c->listen[0]) != 0) {
		c->nlisten = 0;
		snprintf(err, errlen, "--listen: '%s' is not an address and "
		    "port (127.0.0.1:2526, [::1]:2526)", o->listen);
		return conf_free(c);
	}
	free(c->trusted);
	c->trusted = xcalloc(2, sizeof(*c->trusted));
	c->ntrusted = 2;
	conf_net_parse("0.0.0.0/0", &c->trusted[0]);
	conf_net_parse("::/0", &c->trusted[1]);
	c->server_max_connections_per_ip = 0;
	c->server_max_connections = 1000000;
	/* injected refusals count as errors too: leave room for many */
	c->server_max_errors = 1000;
	/* a test server answers a wrong password at once, and again */
	c->auth_failure_delay = 0;
	c->auth_max_failures = 10000;
	if (o->max_size > 0)
		c->server_max_message_size = o->max_size;
	if (o->hostname != NULL) {
		free(c->server_hostname);
		c->server_hostname = xstrdup(o->hostname);
	}
	/* smtpd_server_listen loads them, as sluiced's [server] settings */
	if (o->tls_cert != NULL) {
		free(c->server_tls_cert);
		c->server_tls_cert = xstrdup(o->tls_cert);
	}
	if (o->tls_key != NULL) {
		free(c->server_tls_key);
		c->server_tls_key = xstrdup(o->tls_key);
	}
	return c;
}

struct sink *
sink_new(struct event_base *base, const struct sink_opts *o, char *err,
    size_t errlen)
{
	struct sink *k = xcalloc(1, sizeof(*k));
	struct smtpd_ops ops = {
		.check = sink_check,
		.store = sink_store,
		.closed = sink_closed,
		.replied = sink_replied,
		.mid_next = sink_mid_next,
		.arg = k,
		.product = "sluice sink",
		.no_received = 1,
		.reply_delay_ms = o->rules->delay_ms,
		.auth_check = o->nusers > 0 ? sink_auth_check : NULL,
		.auth_required = o->auth_required,
	};

	k->base = base;
	k->o = *o;
	k->rules = o->rules;
	k->index_fd = -1;
	/* splitmix64 of the seed: no zero state, nearby seeds differ */
	k->rng = o->seed + 0x9E3779B97F4A7C15ULL;
	k->rng = (k->rng ^ (k->rng >> 30)) * 0xBF58476D1CE4E5B9ULL;
	k->rng = (k->rng ^ (k->rng >> 27)) * 0x94D049BB133111EBULL;
	k->rng ^= k->rng >> 31;
	if (k->rng == 0)
		k->rng = 1;
	k->limiters = xcalloc(k->rules->nlimits + 1, sizeof(*k->limiters));
	for (size_t i = 0; i < k->rules->nlimits; i++)
		k->limiters[i] = sink_limiter_new(k->rules->limits[i].window_ms);
	if ((k->conf = sink_conf(o, err, errlen)) == NULL)
		goto fail;
	/* the index decodes Subject: and From:, the inbox parses messages */
	if (o->maildir != NULL && !k->gmime++)
		g_mime_init();
	if (sink_store_open(k, err, errlen) != 0)
		goto fail;
	k->srv = smtpd_server_new(base, k->conf, &ops);
	if (smtpd_server_listen(k->srv, err, errlen) != 0)
		goto fail;
	if ((o->http != NULL || o->pop3 != NULL) &&
	    (k->io = sl_worker_new(base, "sink-io")) == NULL) {
		snprintf(err, errlen, "cannot start a thread: %s",
		    strerror(errno));
		goto fail;
	}
	if (o->http != NULL && sink_http_start(k, o->http, err, errlen) != 0)
		goto fail;
	if (o->pop3 != NULL && sink_pop3_start(k, o->pop3, err, errlen) != 0)
		goto fail;
	return k;
fail:
	sink_free(k);
	return NULL;
}

/*
 * Close POP3 and HTTP: sessions stop asking the worker for reads, the
 * worker finishes those in flight (their answers go out or their sessions
 * are freed), then the listeners go.
 */
static void
sink_readers_stop(struct sink *k)
{
	sink_pop3_stop(k);
	sink_http_quiesce(k);
	if (k->io != NULL)
		sl_worker_free(k->io);
	k->io = NULL;
	sink_http_stop(k);
	sink_pop3_free(k);
}

void
sink_stop(struct sink *k, void (*done)(void *), void *arg)
{
	sink_readers_stop(k);
	smtpd_server_stop(k->srv, done, arg);
}

struct sink *
sink_free(struct sink *k)
{
	if (k == NULL)
		return NULL;
	sink_readers_stop(k);
	smtpd_server_free(k->srv);
	sink_store_close(k);
	for (size_t i = 0; i < SINK_CONN_BUCKETS; i++) {
		struct sink_conn *c, *n;
		for (c = k->conns[i]; c != NULL; c = n) {
			n = c->next;
			free(c);
		}
	}
	for (size_t i = 0; i < k->rules->nlimits; i++)
		sink_limiter_free(k->limiters[i]);
	free(k->limiters);
	conf_free(k->conf);
	if (k->gmime)
		g_mime_shutdown();
	free(k);
	return NULL;
}

int
sink_user_ok(const struct sink *k, const char *user, const char *pass)
{
	int ok = k->o.nusers == 0;

	/* every pair is compared, each password in time independent of
	 * where it differs */
	for (size_t i = 0; i < k->o.nusers; i++) {
		const char *want = k->o.users[i].pass;
		size_t n = strlen(want), m = strlen(pass);
		unsigned char d = n != m;
		for (size_t j = 0; j < n; j++)
			d |= (unsigned char)(want[j] ^ (j < m ? pass[j] : 0));
		ok |= strcmp(k->o.users[i].name, user) == 0 && d == 0;
	}
	return ok;
}

int
sink_smtp_port(const struct sink *k)
{
	return smtpd_server_port(k->srv);
}

int
sink_http_port(const struct sink *k)
{
	return k->http ? k->http_port : -1;
}

const struct sink_stats *
sink_stats(const struct sink *k)
{
	return &k->st;
}
