/* SPDX-License-Identifier: MIT */
/*
 * main.c: sluiced, the daemon. Flags, configuration, the event loop, the
 * spool, the SMTP server, the control socket and the HTTP listener, and
 * the signals (or control commands) that stop or reload them.
 *
 * Shutdown order (SIGTERM, SIGINT): stop listening; sessions that are idle
 * get 421 at once, sessions in the middle of a message finish it (up to
 * [server] shutdown_timeout); then the spool finishes every queued write
 * and the process exits 0. Nothing that was answered 250 is lost, and
 * nothing is answered 250 that is not on disk. `sluice stop` does the same
 * once its answer has left.
 *
 * Reload (SIGHUP, `sluice reload`): read the same file again; a bad file
 * changes nothing and its error is logged (and answered). A good one is
 * handed to smtpd (new sessions and new commands), the scheduler and the
 * log; the previous configuration stays allocated until the next reload,
 * because a session may still hold a pointer into it. Settings marked not
 * reloadable in settings.def keep their old values, with a warning.
 */
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/thread.h>

#include "conf/conf.h"
#include "control/control.h"
#include "deliver/deliver.h"
#include "dkim/dkim.h"
#include "dns/dns.h"
#include "log/log.h"
#include "sched/sched.h"
#include "shaping/shaping.h"
#include "sluiced/bulk.h"
#include "sluiced/sluiced.h"
#include "smtpd/smtpd.h"
#include "spool/spool.h"
#include "util/evloop.h"
#include "util/inbox.h"
#include "util/util.h"
#include "util/work.h"

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: sluiced [-c FILE] [-o SECTION.KEY=VALUE]... [-n] [--print-config]\n"
	    "               [--log-format text|json]\n"
	    "  -c, --config FILE    read the configuration from FILE "
	    "(default: built-in settings)\n"
	    "  -o SECTION.KEY=VALUE override one setting (repeatable)\n"
	    "  -n, --check          check the configuration and exit\n"
	    "      --print-config   print the effective settings and exit\n"
	    "      --log-format F   text or json (overrides [log] format)\n"
	    "  -V, --version        print the version and exit\n");
}

/* One message on its way into the spool. */
struct sluiced_pending {
	struct sluiced *d;
	struct smtpd_session *session;
	struct sluiced_loop *loop;	/* its session's loop, or NULL */
	struct spool_msg *spool;	/* until spool_insert takes it */
	struct sched_msg *msg;
	uint64_t mid;
	size_t nrcpt;
	char *sender;		/* for the "received" event */
	enum spool_status status;
	struct evbuffer *body;	/* as stored, for the deliveries */
};

/* On the main loop: the scheduler takes the message, or forgets it. */
static void
sluiced_commit(void *arg)
{
	struct sluiced_pending *p = arg;

	/* /healthz reports a spool that fails (ctl.c) */
	p->d->spool_failed_at = p->status == SPOOL_OK ? 0 : sl_mono_ms();
	if (p->status == SPOOL_OK) {
		sched_msg_commit_body(p->d->sched, p->msg, p->body);
		sluiced_bulk_received(p->d->bulk, p->mid, p->sender, p->nrcpt);
	} else {
		sched_msg_abort(p->d->sched, p->msg);
	}
	free(p->sender);
	free(p);
}

/* ops->store's answer: the spool says durable (or not) on the session's
 * loop thread; the 250 goes out, and the scheduler takes the message on
 * its own loop (handed over when the session has a loop of its own). */
static void
sluiced_stored(void *arg, enum spool_status status)
{
	struct sluiced_pending *p = arg;
	struct smtpd_session *s = p->session;
	int64_t durable = spool_done_us(p->d->spool);

	p->status = status;
	p->body = status == SPOOL_OK ? spool_done_take_body(p->d->spool) :
	    NULL;
	if (p->loop != NULL)
		sl_inbox_post(p->d->inbox, sluiced_commit, p);
	else
		sluiced_commit(p);
	smtpd_session_stored_at(s, status, durable);
}

/* Hand the message to the spool (signed, if it was to be); the 250 (or
 * 451) follows its answer. */
static void
sluiced_store_msg(void *arg)
{
	struct sluiced_pending *p = arg;
	struct spool_msg *msg = p->spool;

	p->spool = NULL;
	msg->size = evbuffer_get_length(msg->body);
	/* the scheduler's copy is made now: the spool takes msg (a copy
	 * only: any thread) */
	p->msg = sched_msg_new(p->d->sched, msg);
	if (p->loop != NULL)
		spool_port_insert(p->loop->port, msg, sluiced_stored, p);
	else
		spool_insert(p->d->spool, msg, sluiced_stored, p);
}

/*
 * ops->store. [dkim] sign: mail from an authenticated user or a trusted
 * network whose From: domain has a key gets its DKIM-Signature on top,
 * before the spool writes it (and so before the 250), while the session
 * waits in its STORE state, which nothing frees (sign.c). Mail from
 * anyone else is never signed: our signature would vouch for a
 * stranger's From:.
 */
static void
sluiced_store(void *arg, struct smtpd_session *s, struct spool_msg *msg)
{
	struct sluiced *d = arg;
	struct sluiced_pending *p = xmalloc(sizeof(*p));
	struct log_ids ids = { smtpd_session_icid(s), 0, msg->mid, -1 };

	p->d = d;
	p->session = s;
	p->loop = smtpd_session_loop_arg(s);
	p->spool = msg;
	p->msg = NULL;
	p->mid = msg->mid;
	p->nrcpt = msg->nrcpt;
	p->sender = xstrdup(msg->sender ? msg->sender : "");
	if ((!smtpd_session_trusted(s) && smtpd_session_auth_user(s) == NULL) ||
	    sluiced_sign(d, p->loop, msg->body, sl_now_us() / 1000000, &ids,
	    sluiced_store_msg, p) != 0)
		sluiced_store_msg(p);
}

/* local.c answered a recipient check: tell the session. */
static void
sluiced_verified(void *arg, int code, const char *reply)
{
	smtpd_session_verified(arg, code, reply);
}

/* ops->verify: [local] recipient_check for a local recipient. */
static void *
sluiced_verify(void *arg, struct smtpd_session *s, const char *rcpt)
{
	struct sluiced *d = arg;
	struct sluiced_loop *lp = smtpd_session_loop_arg(s);

	/* local.c lives on the main loop: asked from there (loops.c) */
	if (lp != NULL)
		return sluiced_loop_verify(lp, s, rcpt);
	return local_check(d->local, rcpt, sluiced_verified, s);
}

static void
sluiced_verify_cancel(void *arg, void *handle)
{
	struct sluiced *d = arg;

	if (d->nloops > 0)
		sluiced_loop_verify_cancel(handle);
	else
		local_check_cancel(handle);
}

static uint64_t
sluiced_dcid(void *arg)
{
	struct sluiced *d = arg;

	return sched_dcid_next(d->sched);
}

/*
 * Local delivery for configuration c: the Maildir workers once there is a
 * local domain (started on demand, kept until exit), and the scheduler
 * told where local mail goes.
 */
static void
sluiced_local_start(struct sluiced *d, const struct sl_conf *c)
{
	if (d->maildir == NULL && c->nlocal_domains > 0)
		d->maildir = maildir_new(d->base, SLUICED_MAILDIR_THREADS);
	sched_set_local(d->sched, d->local, d->maildir);
}

static uint64_t
sluiced_mid_next(void *arg)
{
	struct sluiced *d = arg;

	return spool_mid_next(d->spool);
}

/*
 * The SMTP loops of their own ([server] loops): the sessions on them, and
 * the delivery connections made on them in turn (sched_set_loops). 1: the
 * main loop does it all, as it always did.
 */
static int
sluiced_loops_start(struct sluiced *d, char *err, size_t errlen)
{
	int n = sluiced_loops_wanted(d->conf);
	struct sl_inbox **ins;
	struct event_base **bases;

	if (n < 2)
		return 0;
	if (smtpd_server_loops(d->smtpd, n, err, errlen) != 0)
		return -1;
	d->nloops = smtpd_server_nloops(d->smtpd);
	ins = xcalloc(d->nloops, sizeof(*ins));
	bases = xcalloc(d->nloops, sizeof(*bases));
	for (size_t i = 0; i < d->nloops; i++)
		smtpd_server_loop(d->smtpd, i, &bases[i], &ins[i]);
	sched_set_loops(d->sched, d->inbox, d->nloops, ins, bases);
	free(ins);
	free(bases);
	return 0;
}

/*
 * Stop the loops (after sched_stop, whose connection frees they run) and
 * free their sessions: their spool answers come back first (ports), and
 * what those hand the main loop runs here, while the spool is open.
 */
static void
sluiced_loops_stop(struct sluiced *d)
{
	if (d->nloops == 0 || d->smtpd == NULL)
		return;
	smtpd_server_free(d->smtpd);
	d->smtpd = NULL;
	sl_inbox_run(d->inbox);
}

static void
sluiced_exit(struct sluiced *d)
{
	event_base_loopexit(d->base, NULL);
}

static void
sluiced_drained(void *arg)
{
	struct sluiced *d = arg;

	log_info("all sessions closed");
	sluiced_exit(d);
}

static void
sluiced_deadline(evutil_socket_t fd, short what, void *arg)
{
	struct sluiced *d = arg;

	log_info("shutdown deadline reached, closing the remaining sessions");
	smtpd_server_abort(d->smtpd);
	sluiced_exit(d);
}

void
sluiced_stop(struct sluiced *d, const char *why)
{
	struct timeval tv = { d->conf->server_shutdown_timeout, 0 };

	if (d->stopping++) {
		log_info("second signal: stopping now (%s)", why);
		smtpd_server_abort(d->smtpd);
		sluiced_exit(d);
		return;
	}
	log_info("%s: shutting down (at most %llds for open transactions)",
	    why, (long long)d->conf->server_shutdown_timeout);
	d->deadline_ev = evtimer_new(d->base, sluiced_deadline, d);
	evtimer_add(d->deadline_ev, &tv);
	smtpd_server_stop(d->smtpd, sluiced_drained, d);
}

static void
sluiced_fixed_changed(const char *section, const char *key)
{
	log_warnx("reload: [%s] %s changed: it takes effect at the next "
	    "restart", section, key);
}

/* [shaping] file again (or for the first time); the old stays on error. */
static int
sluiced_shaping_reload(struct sluiced *d, const struct sl_conf *nc, char *err,
    size_t errlen)
{
	char msg[1024];

	if (d->shaping != NULL) {
		if (shaping_reload(d->shaping, nc, msg, sizeof(msg)) != 0)
			goto fail;
	} else if (nc->shaping_file[0] != '\0') {
		if ((d->shaping = shaping_new(d->base, d->dns, nc, msg,
		    sizeof(msg))) == NULL)
			goto fail;
	}
	sched_set_shaping(d->sched, d->shaping);
	return 0;
fail:
	snprintf(err, errlen, "[shaping] file: %.900s", msg);
	return -1;
}

int
sluiced_reload(struct sluiced *d, char *err, size_t errlen)
{
	struct sl_conf *nc;
	struct dkim_keys *dkim;
	char msg[1024];

	if ((nc = conf_load(d->conf_path, msg, sizeof(msg))) == NULL) {
		log_warnx("reload failed, the configuration in use stays: %s",
		    msg);
		snprintf(err, errlen, "%s", msg);
		return -1;
	}
	for (size_t i = 0; i < d->noverrides; i++) {
		if (conf_override(nc, d->overrides[i], msg, sizeof(msg)) != 0) {
			log_warnx("reload failed, the configuration in use "
			    "stays: %s", msg);
			snprintf(err, errlen, "%s", msg);
			conf_free(nc);
			return -1;
		}
	}
	if (conf_check(nc, msg, sizeof(msg)) != 0) {
		log_warnx("reload failed, the configuration in use stays: %s",
		    msg);
		snprintf(err, errlen, "%s", msg);
		conf_free(nc);
		return -1;
	}
	if (d->log_format != NULL)
		nc->log_json = strcmp(d->log_format, "json") == 0;
	if (log_open(nc->log_file, nc->log_json, nc->log_level) != 0) {
		snprintf(err, errlen, "[log] file %s: %s", nc->log_file,
		    strerror(errno));
		log_warnx("reload failed, the configuration in use stays: %s",
		    err);
		conf_free(nc);
		return -1;
	}
	if (sluiced_http_reload_check(d->ctl, nc, err, errlen) != 0) {
		log_warnx("reload failed, the configuration in use stays: %s",
		    err);
		conf_free(nc);
		return -1;
	}
	if (shaping_check(nc, err, errlen) != 0) {
		log_warnx("reload failed, the configuration in use stays: %s",
		    err);
		conf_free(nc);
		return -1;
	}
	if ((dkim = dkim_keys_load(nc->dkim_sign, msg, sizeof(msg))) == NULL) {
		log_open(d->conf->log_file, d->conf->log_json,
		    d->conf->log_level);
		log_warnx("reload failed, the configuration and keys in use "
		    "stay: %s", msg);
		snprintf(err, errlen, "%s", msg);
		conf_free(nc);
		return -1;
	}
	/* last: the tables it loads point into nc */
	if (local_load(d->local, nc, msg, sizeof(msg)) != 0) {
		log_open(d->conf->log_file, d->conf->log_json,
		    d->conf->log_level);
		log_warnx("reload failed, the configuration in use stays: %s",
		    msg);
		snprintf(err, errlen, "%s", msg);
		dkim_keys_free(dkim);
		conf_free(nc);
		return -1;
	}
	conf_keep_fixed(d->conf, nc, sluiced_fixed_changed);
	sluiced_http_reload(d->ctl, nc);
	pthread_mutex_lock(&d->dkim_mu);
	dkim_keys_free(d->old_dkim);
	d->old_dkim = d->dkim;
	d->dkim = dkim;
	pthread_mutex_unlock(&d->dkim_mu);
	smtpd_server_set_conf(d->smtpd, nc);
	sched_set_conf(d->sched, nc);
	sluiced_local_start(d, nc);
	/* checked above; read again (a file changed since is logged) */
	if (sluiced_shaping_reload(d, nc, msg, sizeof(msg)) != 0)
		log_warnx("reload: %s; the shaping in use stays", msg);
	/* sessions may still point into the old one: it goes next time */
	conf_free(d->old_conf);
	d->old_conf = d->conf;
	d->conf = nc;
	d->reloads++;
	log_ev(LOG_INFO, NULL, "configuration reloaded", "file",
	    d->conf_path ? d->conf_path : "(built-in defaults)", NULL);
	return 0;
}

static void
sluiced_signal(evutil_socket_t sig, short what, void *arg)
{
	struct sluiced *d = arg;
	char err[1024];

	if (sig == SIGHUP) {
		if (log_reopen() != 0)
			log_warn("reopen log file");
		log_info("SIGHUP: log file reopened, reloading the "
		    "configuration");
		sluiced_reload(d, err, sizeof(err));
		return;
	}
	sluiced_stop(d, sig == SIGTERM ? "SIGTERM" : "SIGINT");
}

static void
sluiced_flush(evutil_socket_t fd, short what, void *arg)
{
	log_flush();
}

/* The control socket (required) and the HTTP listener (optional: a port
 * in use is a warning, so a second daemon on a host still runs). */
static int
sluiced_ops_start(struct sluiced *d)
{
	char err[512];

	d->ctl = sluiced_ctl_new(d);
	d->control = control_server_new(d->base, d->conf->control_socket,
	    sluiced_ctl_cmd, d->ctl, err, sizeof(err));
	if (d->control == NULL) {
		log_warnx("[control] socket %s", err);
		return -1;
	}
	return sluiced_http_start(d->ctl);
}

static int
sluiced_run(struct sluiced *d)
{
	struct smtpd_ops ops = {
		.store = sluiced_store,
		.verify = sluiced_verify,
		.verify_cancel = sluiced_verify_cancel,
		.mid_next = sluiced_mid_next,
		.loop_init = sluiced_loop_init,
		.loop_fini = sluiced_loop_fini,
		.arg = d,
		.product = "sluice",
	};
	char err[512];
	long n;

	d->base = sl_evloop_new();
	if (d->base == NULL || (d->inbox = sl_inbox_new(d->base)) == NULL) {
		log_warnx("cannot create the event loop");
		return 1;
	}
	/* keys are read as root, like the certificate */
	if ((d->dkim = dkim_keys_load(d->conf->dkim_sign, err,
	    sizeof(err))) == NULL) {
		log_warnx("%s", err);
		return 1;
	}
	if ((d->spool = spool_open(d->conf->spool_dir, d->base, err,
	    sizeof(err))) == NULL) {
		log_warnx("spool %s: %s", d->conf->spool_dir, err);
		return 1;
	}
	if ((d->dns = dns_new(d->base, d->conf->dns_servers,
	    (int)d->conf->dns_timeout * 1000, err, sizeof(err))) == NULL) {
		log_warnx("[dns] servers: %s", err);
		return 1;
	}
	d->sched = sched_new(d->base, d->conf, d->spool, d->dns);
	/* before recovery: a recovered final message may have failures */
	if ((d->bulk = sluiced_bulk_new(d, err, sizeof(err))) == NULL) {
		log_warnx("%s", err);
		return 1;
	}
	/* before recovery: it routes local recipients */
	d->local = local_new(d->base, sluiced_dcid, d);
	if (local_load(d->local, d->conf, err, sizeof(err)) != 0) {
		log_warnx("[local]: %s", err);
		return 1;
	}
	sluiced_local_start(d, d->conf);
	if (d->conf->shaping_file[0] != '\0') {
		d->shaping = shaping_new(d->base, d->dns, d->conf, err,
		    sizeof(err));
		if (d->shaping == NULL) {
			log_warnx("[shaping] file: %s", err);
			return 1;
		}
		sched_set_shaping(d->sched, d->shaping);
	}
	n = spool_recover(d->spool, sched_recover, d->sched);
	if (n < 0) {
		log_warnx("spool %s: recovery failed: %s", d->conf->spool_dir,
		    spool_last_error(d->spool));
		return 1;
	}
	snprintf(err, sizeof(err), "%ld", n);
	log_ev(LOG_INFO, NULL, "spool recovered", "dir", d->conf->spool_dir,
	    "messages", err, NULL);
	d->smtpd = smtpd_server_new(d->base, d->conf, &ops);
	if (sluiced_loops_start(d, err, sizeof(err)) != 0) {
		log_warnx("%s", err);
		return 1;
	}
	if (sluiced_ops_start(d) != 0)
		return 1;
	d->sig_term = evsignal_new(d->base, SIGTERM, sluiced_signal, d);
	d->sig_int = evsignal_new(d->base, SIGINT, sluiced_signal, d);
	d->sig_hup = evsignal_new(d->base, SIGHUP, sluiced_signal, d);
	evsignal_add(d->sig_term, NULL);
	evsignal_add(d->sig_int, NULL);
	evsignal_add(d->sig_hup, NULL);
	d->flush_ev = event_new(d->base, -1, EV_PERSIST, sluiced_flush, d);
	struct timeval tv = { 0, 100000 };
	evtimer_add(d->flush_ev, &tv);
	/* SMTP last: once a client can connect, the control socket, the
	 * signal handlers and the log lines before this are all in place */
	log_flush();
	if (smtpd_server_listen(d->smtpd, err, sizeof(err)) != 0 ||
	    sluiced_priv_drop(d, err, sizeof(err)) != 0) {
		log_warnx("%s", err);
		return 1;
	}
	log_ev(LOG_INFO, NULL, "sluiced started", "version", SLUICE_VERSION,
	    "hostname", d->conf->server_hostname, NULL);
	log_flush();
	event_base_dispatch(d->base);

	/* signatures in progress reach the spool before it closes */
	sl_work_free(d->work);
	d->work = NULL;
	/* no more commands or scrapes; answers still due are dropped */
	control_server_free(d->control);
	d->control = NULL;
	sluiced_http_stop(d->ctl);
	sluiced_ctl_stop(d->ctl);
	/* the spool answers what is still queued, then the sessions go;
	 * deliveries in flight are retried at the next start */
	sched_stop(d->sched);
	sluiced_loops_stop(d);
	sluiced_bulk_quiesce(d->bulk);
	/* Maildir writes in flight finish; their outcomes are recorded */
	maildir_free(d->maildir);
	d->maildir = NULL;
	spool_close(d->spool);
	d->spool = NULL;
	sluiced_bulk_free(d->bulk);
	d->bulk = NULL;
	sched_free(d->sched);
	d->sched = NULL;
	shaping_free(d->shaping);
	d->shaping = NULL;
	smtpd_server_free(d->smtpd);
	d->smtpd = NULL;
	/* after the sessions: freeing one cancels its recipient check */
	local_free(d->local);
	d->local = NULL;
	dns_free(d->dns);
	d->dns = NULL;
	log_info("sluiced stopped");
	return 0;
}

static void
sluiced_free(struct sluiced *d)
{
	struct event *evs[] = { d->sig_term, d->sig_int, d->sig_hup,
		d->flush_ev, d->deadline_ev };

	sl_work_free(d->work);
	control_server_free(d->control);
	if (d->ctl) {
		sluiced_http_stop(d->ctl);
		sluiced_ctl_stop(d->ctl);
	}
	if (d->sched)
		sched_stop(d->sched);
	sluiced_loops_stop(d);
	sluiced_bulk_quiesce(d->bulk);
	maildir_free(d->maildir);
	if (d->spool)
		spool_close(d->spool);
	sluiced_bulk_free(d->bulk);
	sched_free(d->sched);
	shaping_free(d->shaping);
	smtpd_server_free(d->smtpd);
	local_free(d->local);
	if (d->dns)
		dns_free(d->dns);
	for (size_t i = 0; i < SL_ARRAY_LEN(evs); i++)
		if (evs[i])
			event_free(evs[i]);
	sluiced_ctl_free(d->ctl);
	sl_inbox_free(d->inbox);
	dkim_keys_free(d->dkim);
	dkim_keys_free(d->old_dkim);
	if (d->base)
		event_base_free(d->base);
	conf_free(d->conf);
	conf_free(d->old_conf);
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check", no_argument, NULL, 'n' },
		{ "print-config", no_argument, NULL, 'P' },
		{ "log-format", required_argument, NULL, 'L' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct sluiced d = { 0 };
	const char *path = NULL, *logfmt = NULL;
	const char *overrides[64];
	size_t noverrides = 0;
	int check = 0, print = 0, ch, rc;
	char err[1024];

	pthread_mutex_init(&d.dkim_mu, NULL);

	while ((ch = getopt_long(argc, argv, "c:no:Vh", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			path = optarg;
			break;
		case 'o':
			if (noverrides == SL_ARRAY_LEN(overrides)) {
				fprintf(stderr, "sluiced: too many -o\n");
				return 2;
			}
			overrides[noverrides++] = optarg;
			break;
		case 'n':
			check = 1;
			break;
		case 'P':
			print = 1;
			break;
		case 'L':
			if (strcmp(optarg, "text") != 0 &&
			    strcmp(optarg, "json") != 0) {
				fprintf(stderr, "sluiced: --log-format: '%s' is "
				    "not text or json\n", optarg);
				return 2;
			}
			logfmt = optarg;
			break;
		case 'V':
			printf("sluiced %s\n", SLUICE_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "sluiced: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	if ((d.conf = conf_load(path, err, sizeof(err))) == NULL) {
		fprintf(stderr, "sluiced: %s\n", err);
		return 1;
	}
	for (size_t i = 0; i < noverrides; i++) {
		if (conf_override(d.conf, overrides[i], err, sizeof(err)) != 0) {
			fprintf(stderr, "sluiced: %s\n", err);
			conf_free(d.conf);
			return 1;
		}
	}
	if (conf_check(d.conf, err, sizeof(err)) != 0) {
		fprintf(stderr, "sluiced: %s\n", err);
		conf_free(d.conf);
		return 1;
	}
	/*
	 * With SMTP loops of their own, one malloc arena for all threads:
	 * [server] max_inflight_bytes is one cap over all loops, and an arena
	 * per loop would each keep its own high-water mark of bodies (two
	 * loops: near twice the cap resident). With one loop the bodies are
	 * all the main thread's (the main arena) and the spool's threads keep
	 * arenas of their own: sharing one with them costs the loop about
	 * 5 us of lock waits and wakeups per accepted message. Set before any
	 * thread starts; loops is read at start only.
	 */
	if (getenv("MALLOC_ARENA_MAX") == NULL &&
	    sluiced_loops_wanted(d.conf) > 1)
		mallopt(M_ARENA_MAX, 1);
	d.conf_path = path;
	d.log_format = logfmt;
	d.overrides = overrides;
	d.noverrides = noverrides;
	if (logfmt != NULL)
		d.conf->log_json = strcmp(logfmt, "json") == 0;
	if (print) {
		conf_print(d.conf, stdout);
		conf_free(d.conf);
		return 0;
	}
	if (check && shaping_check(d.conf, err, sizeof(err)) != 0) {
		fprintf(stderr, "sluiced: %s\n", err);
		conf_free(d.conf);
		return 1;
	}
	if (check) {
		printf("sluiced: configuration %s is valid\n",
		    path ? path : "(built-in defaults)");
		conf_free(d.conf);
		return 0;
	}
	if (sluiced_priv_lookup(&d, err, sizeof(err)) != 0) {
		fprintf(stderr, "sluiced: %s\n", err);
		conf_free(d.conf);
		return 1;
	}
	if (log_open(d.conf->log_file, d.conf->log_json, d.conf->log_level) != 0) {
		fprintf(stderr, "sluiced: [log] file %s: %s\n", d.conf->log_file,
		    strerror(errno));
		conf_free(d.conf);
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	sl_raise_nofile();
	if (evthread_use_pthreads() != 0) {
		fprintf(stderr, "sluiced: libevent without thread support\n");
		return 1;
	}
	d.started = sl_now_us() / 1000000;
	rc = sluiced_run(&d);
	sluiced_free(&d);
	log_close();
	return rc;
}
