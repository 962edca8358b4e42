/* SPDX-License-Identifier: MIT */
/*
 * sluiced.h: what the daemon's files share: the process's parts, and the
 * reload and stop that both signals and control commands start.
 *
 * main.c owns struct sluiced (startup, signals, shutdown); ctl.c answers
 * the control socket's commands with the parts' query functions.
 * Threads: the event loop thread.
 */
#ifndef SL_SLUICED_H
#define SL_SLUICED_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

struct control_server;
struct sl_conf;
struct dkim_keys;
struct sl_work;
struct local;
struct maildir;
struct control_req;
struct http_server;
struct sluiced_ctl;
struct sluiced_bulk;
struct evbuffer;
struct log_ids;

#define SLUICE_VERSION "0.1.0"
/* Threads writing Maildirs: each waits on its fsyncs, so a few write at
 * once while the loop goes on. */
#define SLUICED_MAILDIR_THREADS 4

struct sluiced {
	struct event_base *base;
	struct sl_conf *conf;		/* in use */
	struct sl_conf *old_conf;	/* the one before the last reload:
					   kept until the next one */
	const char *conf_path;		/* -c FILE, or NULL */
	const char *log_format;		/* --log-format, or NULL */
	const char *const *overrides;	/* -o SECTION.KEY=VALUE, applied
					   again at each reload */
	size_t noverrides;
	struct spool *spool;
	struct dns *dns;
	struct sched *sched;
	struct shaping *shaping;	/* [shaping] file, or NULL */
	struct smtpd_server *smtpd;
	struct local *local;		/* local recipients and their check */
	struct maildir *maildir;	/* Maildir writers, or NULL */
	struct control_server *control;
	struct http_server *http;
	struct sluiced_ctl *ctl;
	struct sluiced_bulk *bulk;	/* injection, events, failures, archive */
	struct event *sig_term, *sig_int, *sig_hup, *flush_ev, *deadline_ev;
	int64_t started;		/* unix seconds */
	uint64_t recovered;
	uint64_t reloads;
	int stopping;
	int64_t spool_failed_at;	/* monotonic ms of the last message the
					   spool failed to store, 0 if it stored
					   the last one */
	int drop;			/* run as uid/gid once all is open */
	uid_t uid;
	gid_t gid;
	struct dkim_keys *dkim;		/* [dkim] sign, loaded; owned */
	struct dkim_keys *old_dkim;	/* kept as old_conf is */
	struct sl_work *work;		/* DKIM signing threads, made on first
					   use; owned */
};

/*
 * Read the configuration file again and use it. On an error the old one
 * stays, the error is logged and copied to err ("file:line: ..."), and -1
 * is returned. Settings that need a restart are logged when they changed.
 */
int sluiced_reload(struct sluiced *d, char *err, size_t errlen);
/* Start the graceful shutdown (as SIGTERM); why is for the log. */
void sluiced_stop(struct sluiced *d, const char *why);

/*
 * sign.c: DKIM-sign msg (a whole message, CRLF line ends; borrowed until
 * done) with [dkim] sign's key for its From: domain, t= now, on a worker
 * thread; then, on the loop, the signature is on top of msg (or the
 * reason it is not was logged with ids) and done(arg) runs. Returns 0,
 * or -1 when no key is configured: done is not called, msg goes on as is.
 */
typedef void sluiced_signed_fn(void *arg);
int sluiced_sign(struct sluiced *d, struct evbuffer *msg, int64_t now,
    const struct log_ids *ids, sluiced_signed_fn *done, void *arg);

/*
 * priv.c: look up [server] user when started as root (0, or -1 with the
 * reason in err; sets the umask) and, once everything is open, hand the
 * spool and the log to it and become it.
 */
int sluiced_priv_lookup(struct sluiced *d, char *err, size_t errlen);
int sluiced_priv_drop(struct sluiced *d, char *err, size_t errlen);

/* ctl.c: the control commands (a control_cmd_fn) and their state. */
struct sluiced_ctl *sluiced_ctl_new(struct sluiced *d);
void sluiced_ctl_free(struct sluiced_ctl *ctl);
/* End the listings in progress (their readers are gone): before the
 * scheduler is freed. */
void sluiced_ctl_stop(struct sluiced_ctl *ctl);
void sluiced_ctl_cmd(void *arg, struct control_req *req, const char *cmd,
    json_t *args);
/*
 * The HTTP listener ([http] listen) with /metrics, /healthz and the API:
 * 0, or -1 when [http] api_token_file cannot be read (a configuration
 * error). A listen address that cannot be bound is only a warning.
 */
int sluiced_http_start(struct sluiced_ctl *ctl);
void sluiced_http_stop(struct sluiced_ctl *ctl);
/* Check what a reload to conf needs of the HTTP side (the token file):
 * 0, or -1 with err; sluiced_http_reload then uses it. */
int sluiced_http_reload_check(struct sluiced_ctl *ctl,
    const struct sl_conf *conf, char *err, size_t errlen);
void sluiced_http_reload(struct sluiced_ctl *ctl, const struct sl_conf *conf);

#endif
