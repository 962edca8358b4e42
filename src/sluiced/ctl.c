/* SPDX-License-Identifier: MIT */
/*
 * ctl.c: the daemon's answers to the commands of the control socket and
 * of the HTTP API (one implementation for both: control.h's answer calls
 * reach whichever brought the request), and the HTTP listener's setup.
 * Each command is one function that reads the scheduler, smtpd and spool
 * through their query calls and answers in JSON (docs/CONTROL.md):
 *
 *   status                       uptime, connections, rates, queue, spool
 *   queue.*                      ctl_queue.c
 *   shaping.*                    ctl_shaping.c
 *   drain, undrain               close and reopen the SMTP listeners
 *   reload, stop
 *
 * Everything runs on the loop thread; the queue listings take a slice per
 * loop turn (ctl_queue.c), delete waits for the spool's group commit.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "conf/conf.h"
#include "control/control.h"
#include "http/api.h"
#include "http/dashboard.h"
#include "http/http.h"
#include "http/metrics.h"
#include "log/log.h"
#include "sched/sched.h"
#include "sluiced/ctl_int.h"
#include "sluiced/bulk.h"
#include "sluiced/sluiced.h"
#include "smtpd/smtpd.h"
#include "spool/spool.h"
#include "util/util.h"

/* ---- health ---- */

/*
 * Whether the spool fails: it could not store the last message it was
 * given (a full disk, an I/O error), within the last CTL_SPOOL_FAIL_S.
 * Past that the node reports healthy again and the next message tells (a
 * balancer that stopped sending would otherwise never find out that the
 * disk has room again).
 */
static int
ctl_spool_failing(struct sluiced_ctl *ctl)
{
	int64_t at = ctl->d->spool_failed_at;

	return at != 0 && sl_mono_ms() - at < CTL_SPOOL_FAIL_S * 1000;
}

/* Why /healthz says 503, or NULL. */
static const char *
ctl_unhealthy(void *arg)
{
	struct sluiced_ctl *ctl = arg;

	if (ctl->d->stopping)
		return "stopping";
	if (ctl->draining)
		return "draining";
	if (ctl_spool_failing(ctl))
		return "the spool fails (see the log)";
	return NULL;
}

/* ---- drain, undrain ---- */

static json_t *
ctl_drain_state(struct sluiced_ctl *ctl)
{
	struct smtpd_stats in;

	smtpd_server_stats(ctl->d->smtpd, &in);
	return json_pack("{s:b,s:I}", "draining", ctl->draining,
	    "sessions", (json_int_t)in.sessions);
}

/* Stop accepting mail: the SMTP listeners close (a balancer's check then
 * fails), sessions in progress and delivery go on. */
static void
ctl_drain(struct sluiced_ctl *ctl, struct control_req *req, json_t *args)
{
	int n;

	if (ctl->d->stopping) {
		control_reply_err(req, CONTROL_ERR_UNAVAILABLE, NULL,
		    "sluiced is stopping");
		return;
	}
	n = smtpd_server_pause(ctl->d->smtpd);
	if (!ctl->draining)
		log_ev(LOG_INFO, NULL, "draining: the SMTP listeners are "
		    "closed, delivery goes on", "by", control_req_who(req),
		    NULL);
	else if (n > 0)
		log_warnx("draining: %d listener(s) were open again", n);
	ctl->draining = 1;
	control_reply(req, ctl_drain_state(ctl));
}

static void
ctl_undrain(struct sluiced_ctl *ctl, struct control_req *req, json_t *args)
{
	char err[512];

	if (ctl->d->stopping) {
		control_reply_err(req, CONTROL_ERR_UNAVAILABLE, NULL,
		    "sluiced is stopping");
		return;
	}
	if (smtpd_server_resume(ctl->d->smtpd, err, sizeof(err)) != 0) {
		log_warnx("undrain: %s; still draining", err);
		control_reply_err(req, CONTROL_ERR_FAILED, NULL, "%s; still "
		    "draining", err);
		return;
	}
	if (ctl->draining)
		log_ev(LOG_INFO, NULL, "undrained: accepting mail again",
		    "by", control_req_who(req), NULL);
	ctl->draining = 0;
	control_reply(req, ctl_drain_state(ctl));
}

/* ---- status ---- */

static void
ctl_sample(evutil_socket_t fd, short what, void *arg)
{
	struct sluiced_ctl *ctl = arg;
	struct smtpd_stats in;
	struct sched_stats out;
	struct ctl_sample *s = &ctl->samples[ctl->next];

	smtpd_server_stats(ctl->d->smtpd, &in);
	sched_stats_get(ctl->d->sched, &out);
	s->at_ms = sl_mono_ms();
	s->received = in.messages;
	s->delivered = out.delivered;
	ctl->next = (ctl->next + 1) % CTL_SAMPLES;
	if (ctl->nsamples < CTL_SAMPLES)
		ctl->nsamples++;
	ctl_rates_sample(ctl);
}

/* Per second over about the last `secs` seconds (from the samples). */
static json_t *
ctl_rates(struct sluiced_ctl *ctl, int secs, uint64_t received,
    uint64_t delivered)
{
	int64_t now = sl_mono_ms();
	const struct ctl_sample *best = NULL;
	double dt;

	for (size_t i = 0; i < ctl->nsamples; i++) {
		const struct ctl_sample *s = &ctl->samples[i];

		if (now - s->at_ms <= (int64_t)secs * 1000 + 500 &&
		    (best == NULL || s->at_ms < best->at_ms))
			best = s;
	}
	if (best == NULL || (dt = (double)(now - best->at_ms) / 1000) < 1)
		return json_pack("{s:f,s:f}", "received", 0.0, "delivered",
		    0.0);
	return json_pack("{s:f,s:f}", "received",
	    (double)(received - best->received) / dt, "delivered",
	    (double)(delivered - best->delivered) / dt);
}

static int64_t
ctl_file_size(const char *dir, const char *name)
{
	char *path = xasprintf("%s/%s", dir, name);
	struct stat st;
	int r = stat(path, &st);

	free(path);
	return r == 0 ? (int64_t)st.st_size : 0;
}

static void
ctl_status(struct sluiced_ctl *ctl, struct control_req *req, json_t *args)
{
	struct sluiced *d = ctl->d;
	struct smtpd_stats in;
	struct sched_stats out;
	struct spool_stats sp;
	int64_t now = sl_now_us() / 1000000;
	int64_t db = ctl_file_size(d->conf->spool_dir, "spool.db");
	int64_t wal = ctl_file_size(d->conf->spool_dir, "spool.db-wal");

	smtpd_server_stats(d->smtpd, &in);
	sched_stats_get(d->sched, &out);
	spool_stats_get(d->spool, &sp);
	control_reply(req, json_pack(
	    "{s:s,s:i,s:I,s:I,s:b,s:b,s:I,"
	    "s:{s:I,s:I,s:I,s:I},"
	    "s:{s:I,s:I,s:I,s:I,s:I,s:I,s:I},"
	    "s:{s:o,s:o,s:f},"
	    "s:{s:I,s:I,s:I},"
	    "s:{s:s,s:I,s:I,s:I,s:I,s:I}}",
	    "version", SLUICE_VERSION, "pid", (int)getpid(),
	    "started", (json_int_t)d->started,
	    "uptime", (json_int_t)(now - d->started),
	    "stopping", d->stopping != 0, "draining", ctl->draining != 0,
	    "reloads", (json_int_t)d->reloads,
	    "connections",
	    "in", (json_int_t)in.sessions, "in_total",
	    (json_int_t)in.connections, "in_refused", (json_int_t)in.refused,
	    "out", (json_int_t)out.connections,
	    "messages",
	    "received", (json_int_t)in.messages, "recipients_received",
	    (json_int_t)in.recipients, "delivered", (json_int_t)out.delivered,
	    "deferred", (json_int_t)out.deferred, "bounced",
	    (json_int_t)out.failed, "expired", (json_int_t)out.expired,
	    "dsn_sent", (json_int_t)out.dsn_sent,
	    "rates",
	    "last_1m", ctl_rates(ctl, 60, in.messages, out.delivered),
	    "last_5m", ctl_rates(ctl, 300, in.messages, out.delivered),
	    "received_avg", now > d->started ?
	    (double)in.messages / (double)(now - d->started) : 0.0,
	    "queue",
	    "messages", (json_int_t)out.messages, "recipients",
	    (json_int_t)out.recipients, "destinations",
	    (json_int_t)out.destinations,
	    "spool",
	    "dir", d->conf->spool_dir, "bytes", (json_int_t)(db + wal),
	    "db_bytes", (json_int_t)db, "wal_bytes", (json_int_t)wal,
	    "commits", (json_int_t)sp.commits, "failures",
	    (json_int_t)sp.failures));
}

/* ---- reload, stop ---- */

static void
ctl_reload(struct sluiced_ctl *ctl, struct control_req *req, json_t *args)
{
	char err[1024];

	log_info("control: reload asked (%s)", control_req_who(req));
	if (sluiced_reload(ctl->d, err, sizeof(err)) != 0) {
		control_reply_err(req, CONTROL_ERR_FAILED, NULL, "%s", err);
		return;
	}
	control_reply(req, json_pack("{s:s}", "file", ctl->d->conf_path ?
	    ctl->d->conf_path : "(built-in defaults)"));
}

static void
ctl_stop_now(void *arg)
{
	sluiced_stop(arg, "sluice stop");
}

static void
ctl_stop(struct sluiced_ctl *ctl, struct control_req *req, json_t *args)
{
	log_info("control: stop asked (%s)", control_req_who(req));
	control_reply_then(req, json_pack("{s:i}", "pid", (int)getpid()),
	    ctl_stop_now, ctl->d);
}

/* ---- dispatch ---- */

static const struct {
	const char *name;
	ctl_cmd_fn *fn;
} ctl_cmds[] = {
	{ "status", ctl_status },
	{ "queue.list", ctl_list },
	{ "queue.summary", ctl_summary },
	{ "queue.show", ctl_show },
	{ "queue.flush", ctl_flush },
	{ "queue.delete", ctl_delete },
	{ "queue.hold", ctl_hold },
	{ "queue.release", ctl_release },
	{ "queue.bounce", ctl_bounce },
	{ "queue.destinations", ctl_destinations },
	{ "queue.destination", ctl_destination },
	{ "dashboard", ctl_dashboard },
	{ "shaping.status", ctl_shaping_status },
	{ "shaping.resume", ctl_shaping_resume },
	{ "drain", ctl_drain },
	{ "undrain", ctl_undrain },
	{ "reload", ctl_reload },
	{ "stop", ctl_stop },
};

void
sluiced_ctl_cmd(void *arg, struct control_req *req, const char *cmd,
    json_t *args)
{
	struct sluiced_ctl *ctl = arg;

	for (size_t i = 0; i < SL_ARRAY_LEN(ctl_cmds); i++)
		if (strcmp(cmd, ctl_cmds[i].name) == 0) {
			ctl_cmds[i].fn(ctl, req, args);
			return;
		}
	if (sluiced_bulk_ctl(ctl->d->bulk, req, cmd, args))
		return;
	control_reply_err(req, CONTROL_ERR_BADARG, NULL, "unknown command "
	    "'%s'", cmd);
}

struct sluiced_ctl *
sluiced_ctl_new(struct sluiced *d)
{
	struct sluiced_ctl *ctl = xcalloc(1, sizeof(*ctl));
	struct timeval tv = { CTL_SAMPLE_S, 0 };

	ctl->d = d;
	rates_init(&ctl->rates);
	ctl->sample_ev = event_new(d->base, -1, EV_PERSIST, ctl_sample, ctl);
	evtimer_add(ctl->sample_ev, &tv);
	ctl_sample(-1, 0, ctl);
	return ctl;
}

void
sluiced_ctl_stop(struct sluiced_ctl *ctl)
{
	if (ctl != NULL)
		ctl_queue_stop(ctl);
}

void
sluiced_ctl_free(struct sluiced_ctl *ctl)
{
	if (ctl == NULL)
		return;
	ctl_queue_stop(ctl);
	event_free(ctl->sample_ev);
	free(ctl->token);
	free(ctl->next_token);
	free(ctl);
}

/* ---- the HTTP listener ---- */

/* The token of conf's [http] api_token_file into *token (NULL: none). */
static int
ctl_token_read(const struct sl_conf *conf, char **token, char *err,
    size_t errlen)
{
	char msg[400];

	*token = NULL;
	if (conf->http_api_token_file[0] == '\0')
		return 0;
	if ((*token = http_token_load(conf->http_api_token_file, msg,
	    sizeof(msg))) == NULL) {
		snprintf(err, errlen, "[http] api_token_file %s", msg);
		return -1;
	}
	return 0;
}

int
sluiced_http_start(struct sluiced_ctl *ctl)
{
	struct sluiced *d = ctl->d;
	char err[512];

	if (ctl_token_read(d->conf, &ctl->token, err, sizeof(err)) != 0) {
		log_warnx("%s", err);
		return -1;
	}
	if (d->conf->http_listen[0] == '\0')
		return 0;
	d->http = http_server_new(d->base, d->conf->http_listen,
	    (int)d->conf->http_max_connections, err, sizeof(err));
	if (d->http == NULL) {
		log_warnx("[http] listen %s: %s; running without metrics and "
		    "the HTTP API", d->conf->http_listen, err);
		return 0;
	}
	ctl->msrc = (struct metrics_src){ d->smtpd, d->sched, d->spool,
		ctl_unhealthy, ctl, sluiced_bulk_metrics, d->bulk };
	metrics_add_routes(d->http, &ctl->msrc);
	ctl->api = http_api_new(d->http, sluiced_ctl_cmd, ctl);
	sluiced_bulk_routes(d->bulk, d->http);
	dashboard_add_routes(d->http);
	http_server_set_token(d->http, ctl->token);
	http_server_set_public_read(d->http, (int)d->conf->http_dashboard_public,
	    d->conf->server_hostname);
	return 0;
}

void
sluiced_http_stop(struct sluiced_ctl *ctl)
{
	http_server_free(ctl->d->http);
	ctl->d->http = NULL;
	http_api_free(ctl->api);
	ctl->api = NULL;
}

int
sluiced_http_reload_check(struct sluiced_ctl *ctl, const struct sl_conf *conf,
    char *err, size_t errlen)
{
	free(ctl->next_token);
	return ctl_token_read(conf, &ctl->next_token, err, errlen);
}

void
sluiced_http_reload(struct sluiced_ctl *ctl, const struct sl_conf *conf)
{
	free(ctl->token);
	ctl->token = ctl->next_token;
	ctl->next_token = NULL;
	if (ctl->d->http == NULL)
		return;
	http_server_set_token(ctl->d->http, ctl->token);
	http_server_set_public_read(ctl->d->http,
	    (int)conf->http_dashboard_public, conf->server_hostname);
	http_server_set_max_connections(ctl->d->http,
	    (int)conf->http_max_connections);
}
