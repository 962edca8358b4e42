/* SPDX-License-Identifier: MIT */
/*
 * smtpd.h: the ESMTP server: listeners, sessions, limits and relay policy.
 *
 * The server does not know where messages go: it hands each finished
 * transaction to ops->store (sluiced stores into the spool; `sluice sink`
 * writes a Maildir or discards), and asks ops->check at each stage, so a
 * policy or a test sink can answer with a reply of its own.
 *
 * Threads: everything runs on the event loop thread of the base given.
 */
#ifndef SL_SMTPD_H
#define SL_SMTPD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "spool/spool.h"

struct event_base;
struct sl_conf;
struct smtpd_server;
struct smtpd_session;

/* Where a check is asked. */
enum smtpd_stage {
	SMTPD_STAGE_CONNECT,	/* param: client address */
	SMTPD_STAGE_HELO,	/* param: HELO argument */
	SMTPD_STAGE_MAIL,	/* param: sender */
	SMTPD_STAGE_RCPT,	/* param: recipient */
	SMTPD_STAGE_DATA,	/* at DATA or first BDAT; param: NULL */
	SMTPD_STAGE_EOM,	/* end of data, before store; param: NULL */
};

/*
 * What a check may do: nothing (SMTPD_CHECK_OK), reply with the reply given
 * and go on, or reply and drop the connection (the reply should be 421).
 * SMTPD_CHECK_DROP closes without any reply (reply is ignored), to test how
 * clients cope with a lost connection; at SMTPD_STAGE_DATA it lets DATA
 * (354) or the first BDAT go on and drops the connection as soon as message
 * bytes arrive, i.e. in the middle of the data.
 */
enum smtpd_check {
	SMTPD_CHECK_OK = 0,
	SMTPD_CHECK_REPLY,
	SMTPD_CHECK_CLOSE,
	SMTPD_CHECK_DROP,
};

struct smtpd_ops {
	/*
	 * Optional. Fills reply (without CRLF) for anything but OK. Called
	 * after the server's own checks passed.
	 */
	enum smtpd_check (*check)(void *arg, struct smtpd_session *s,
	    enum smtpd_stage stage, const char *param, char *reply,
	    size_t replylen);
	/*
	 * Required. Takes msg; must call smtpd_session_stored(s, status)
	 * exactly once, now or later (from the same thread).
	 */
	void (*store)(void *arg, struct smtpd_session *s, struct spool_msg *msg);
	/*
	 * Optional: check a recipient that the relay policy let in (the
	 * postmaster is not asked). NULL: take it now. Else a handle: the
	 * session reads nothing more until smtpd_session_verified() answers
	 * (never from inside verify); if the transaction or the session ends
	 * first, verify_cancel(arg, handle) is called and no answer may come.
	 */
	void *(*verify)(void *arg, struct smtpd_session *s, const char *rcpt);
	void (*verify_cancel)(void *arg, void *handle);
	/* Optional: a session ended (for statistics). */
	void (*closed)(void *arg, struct smtpd_session *s);
	void *arg;
	/* Name in the greeting and Received: ("sluice"). */
	const char *product;
	/* A MID for a new transaction (sluiced: spool_mid_next). */
	uint64_t (*mid_next)(void *arg);
	/* Optional: a reply with this code was queued (for statistics). */
	void (*replied)(void *arg, struct smtpd_session *s, int code);
	/*
	 * Test sinks: store the data exactly as received, without our
	 * Received: header (no_received), and hold each batch of replies
	 * this long before it is written (reply_delay_ms; 0: none).
	 */
	int no_received;
	unsigned reply_delay_ms;
	/*
	 * Test sinks: AUTH PLAIN and LOGIN (auth.c) on every listener, in
	 * TLS or not, the credentials checked by auth_check (on the loop, at
	 * once: 1 if they are right) instead of [auth] users_file; with
	 * auth_required, MAIL before AUTH gets 530 5.7.0 on every listener.
	 */
	int (*auth_check)(void *arg, const char *user, const char *pass);
	int auth_required;
};

/* Counters, read by status and metrics. */
struct smtpd_stats {
	uint64_t connections;	/* accepted in total */
	uint64_t refused;	/* turned away by a connection limit */
	uint64_t sessions;	/* open now */
	uint64_t peak_sessions;
	uint64_t messages;	/* stored */
	uint64_t recipients;	/* of stored messages */
	uint64_t bytes;		/* of stored messages */
	uint64_t rejected;	/* 4xx/5xx replies to commands */
	uint64_t transactions;	/* MAIL commands accepted */
	uint64_t inflight_bytes; /* of bodies in memory now: being received
				   or being stored ([server] max_inflight_bytes) */
};

struct smtpd_server *smtpd_server_new(struct event_base *base,
    const struct sl_conf *conf, const struct smtpd_ops *ops);
/*
 * Bind and listen on every address of conf->listen (or the one given by
 * addr when not NULL). Returns 0, or -1 with a message in err.
 */
int smtpd_server_listen(struct smtpd_server *srv, char *err, size_t errlen);
/*
 * Drain: close the listening sockets (new connections are refused; the
 * sessions in progress go on). Returns how many were open.
 */
int smtpd_server_pause(struct smtpd_server *srv);
/* Listen again on the same addresses: 0, or -1 with err (then none is
 * open). Nothing to do if they are open. */
int smtpd_server_resume(struct smtpd_server *srv, char *err, size_t errlen);
/* Use a new configuration for new sessions (reload); conf is borrowed. */
void smtpd_server_set_conf(struct smtpd_server *srv, const struct sl_conf *conf);
/*
 * Stop accepting; close idle sessions with 421 at once and the others when
 * their transaction ends; done is called once no session is left.
 */
void smtpd_server_stop(struct smtpd_server *srv, void (*done)(void *),
    void *arg);
/* Close every session now (after the shutdown deadline). */
void smtpd_server_abort(struct smtpd_server *srv);
void smtpd_server_free(struct smtpd_server *srv);
void smtpd_server_stats(const struct smtpd_server *srv, struct smtpd_stats *out);
/* The port of the first listener (useful with port 0). */
int smtpd_server_port(const struct smtpd_server *srv);

/* The answer to ops->store. */
void smtpd_session_stored(struct smtpd_session *s, enum spool_status status);
/*
 * The answer to ops->verify: a 2xx takes the recipient (250 2.1.5),
 * anything else is the reply the client gets ("550 5.1.1 ..."; a 4xx is
 * not counted against max_errors).
 */
void smtpd_session_verified(struct smtpd_session *s, int code,
    const char *reply);
/* What a check or store may want to know about the session. */
uint64_t smtpd_session_icid(const struct smtpd_session *s);
const struct sockaddr *smtpd_session_peer(const struct smtpd_session *s);
const char *smtpd_session_peer_text(const struct smtpd_session *s);
/* 1 if the session is in TLS (after STARTTLS, or on a tls_listen port). */
int smtpd_session_tls(const struct smtpd_session *s);
/* 1 if the client is in [server] trusted_networks. */
int smtpd_session_trusted(const struct smtpd_session *s);
/* The user the client authenticated as (AUTH), or NULL. */
const char *smtpd_session_auth_user(const struct smtpd_session *s);

#endif
