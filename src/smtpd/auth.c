/* SPDX-License-Identifier: MIT */
/*
 * auth.c: AUTH (RFC 4954) with PLAIN and LOGIN on the submission
 * listeners (RFC 6409, RFC 8314), and the "530 Authentication required"
 * that guards MAIL there.
 *
 * Owns struct smtpd_auth, one AUTH exchange: the mechanism, the lines
 * still expected, and then the password check, which runs on the
 * server's worker threads (src/util/work.c: yescrypt costs tens of
 * milliseconds) while the session reads nothing. A failure is counted
 * for the client's address (clients.c) and answered 535 only after a
 * delay that doubles with each failure ([auth] failure_delay, at most
 * 30 s); at [auth] max_failures the answer is 421 and the address gets
 * 421 to AUTH for [auth] lockout. Its failures are forgotten after a
 * lockout's time without one.
 *
 * Exchange steps (session state SMTPD_ST_AUTH throughout):
 *   AUTH PLAIN -> WAIT_PLAIN (334) -> CHECK;  AUTH PLAIN resp -> CHECK
 *   AUTH LOGIN -> WAIT_USER (334) -> WAIT_PASS (334) -> CHECK
 *   CHECK -(match)-> 235, session IDLE and authenticated
 *   CHECK -(no match)-> DELAY -> 535 (or 421 and close), session IDLE
 *   any WAIT -("*")-> 501, IDLE
 *
 * A test sink (`sluice sink --auth`) gives ops.auth_check instead: AUTH on
 * every listener, in TLS or not, its plain pairs checked at once, no
 * delay (smtpd_auth_check_now).
 *
 * Invariants
 *  1. AUTH is offered and taken only in TLS, on a submission listener
 *     (or anywhere on a test sink), once per session, outside a
 *     transaction.
 *  2. A password is never logged, and is wiped from memory once checked.
 *  3. A session that ends during CHECK detaches (auth->s = NULL); the
 *     worker's answer then only frees the exchange.
 */
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "auth/auth.h"
#include "log/log.h"
#include "smtpd/smtpd_int.h"
#include "util/util.h"
#include "util/work.h"

#define SMTPD_AUTH_IDS(s) (&(struct log_ids){ (s)->icid, 0, 0, -1 })
#define SMTPD_AUTH_MAX_DELAY_MS 30000

/* A hash to check against for unknown users, so both take as long. */
static const char smtpd_auth_dummy[] =
    "$y$j9T$Co5/8phbOoNCVcNxphTSR0$/QSApSA9n93U/1U9DbqnRdVbMBM5P88tOzSW9MrGPDD";

enum smtpd_auth_step {
	SMTPD_AUTH_WAIT_PLAIN,
	SMTPD_AUTH_WAIT_USER,
	SMTPD_AUTH_WAIT_PASS,
	SMTPD_AUTH_CHECK,
	SMTPD_AUTH_DELAY,
};

struct smtpd_auth {
	struct smtpd_session *s;	/* NULL once the session is gone */
	const char *mech;		/* "PLAIN" or "LOGIN" */
	enum smtpd_auth_step step;
	char user[AUTH_NAME_MAX + 1];
	char pass[AUTH_PASS_MAX + 1];
	char *hash;			/* a copy: a reload may free the table */
	int known;			/* user is in the users file */
	int ok;				/* the worker's answer */
	struct event *delay_ev;
};

int
smtpd_auth_load(struct smtpd_server *srv, const struct sl_conf *conf,
    char *err, size_t errlen)
{
	struct auth_users *u;
	char why[512];

	/* a missing file is no users yet: `sluice user add` makes it */
	if ((u = auth_users_load(conf->auth_users_file, 1, why,
	    sizeof(why))) == NULL) {
		snprintf(err, errlen, "[auth] users_file %s", why);
		return -1;
	}
	auth_users_free(srv->users);
	srv->users = u;
	return 0;
}

int
smtpd_auth_offered(const struct smtpd_session *s)
{
	if (s->srv->ops.auth_check != NULL)	/* a test sink */
		return s->auth_user == NULL;
	return s->submission && s->tls && s->auth_user == NULL &&
	    s->srv->work != NULL;
}

int
smtpd_auth_reading(const struct smtpd_session *s)
{
	return s->auth != NULL && s->auth->step < SMTPD_AUTH_CHECK;
}

/* Free an exchange whose session is done with it (or gone). */
static void
smtpd_auth_free(struct smtpd_auth *a)
{
	if (a->delay_ev != NULL)
		event_free(a->delay_ev);
	explicit_bzero(a->pass, sizeof(a->pass));
	free(a->hash);
	free(a);
}

/* End the exchange: the session goes back to IDLE. */
static void
smtpd_auth_end(struct smtpd_session *s)
{
	smtpd_auth_free(s->auth);
	s->auth = NULL;
	smtpd_enter(s, SMTPD_ST_IDLE);
}

void
smtpd_auth_session_free(struct smtpd_session *s)
{
	struct smtpd_auth *a = s->auth;

	if (a == NULL)
		return;
	s->auth = NULL;
	if (a->step == SMTPD_AUTH_CHECK)
		a->s = NULL;	/* invariant 3: the worker's answer frees it */
	else
		smtpd_auth_free(a);
}

int
smtpd_auth_required(struct smtpd_session *s)
{
	if (!(s->submission || s->srv->ops.auth_required) ||
	    s->auth_user != NULL)
		return 0;
	smtpd_reject(s, "MAIL", "530 5.7.0 Authentication required");
	return 1;
}


static void
smtpd_auth_run(void *arg)
{
	struct smtpd_auth *a = arg;

	a->ok = auth_password_check(a->hash, a->pass) && a->known;
	explicit_bzero(a->pass, sizeof(a->pass));
}

/* A failed exchange's answer: 535, or 421 at the limit; 1 if closed. */
static int
smtpd_auth_refuse(struct smtpd_session *s)
{
	struct smtpd_client *c = smtpd_client_get(s->srv,
	    (struct sockaddr *)&s->peer);

	smtpd_auth_end(s);
	if (c->auth_locked_until > sl_mono_ms()) {
		smtpd_session_close(s, "421 4.7.0 Too many authentication "
		    "failures, try again later", "too many AUTH failures");
		return 1;
	}
	smtpd_reject(s, "AUTH", "535 5.7.8 Authentication credentials invalid");
	return 0;
}

/* The delay after a failure is over. */
static void
smtpd_auth_delayed(evutil_socket_t fd, short what, void *arg)
{
	struct smtpd_session *s = arg;

	if (!smtpd_auth_refuse(s))
		smtpd_session_resume(s);
}

/* Count a failure of s's address; returns the delay before the answer. */
static int64_t
smtpd_auth_failure(struct smtpd_session *s, const char *user)
{
	const struct sl_conf *conf = s->srv->conf;
	struct smtpd_client *c = smtpd_client_get(s->srv,
	    (struct sockaddr *)&s->peer);
	int64_t now = sl_mono_ms(), delay;
	char n[16];

	if (now - c->auth_last > conf->auth_lockout * 1000)
		c->auth_failures = 0;	/* an old story */
	c->auth_failures++;
	c->auth_last = now;
	if (c->auth_failures >= (uint32_t)conf->auth_max_failures)
		c->auth_locked_until = now + conf->auth_lockout * 1000;
	delay = conf->auth_failure_delay * 1000;
	for (uint32_t i = 1; i < c->auth_failures && delay < SMTPD_AUTH_MAX_DELAY_MS;
	    i++)
		delay *= 2;
	if (delay > SMTPD_AUTH_MAX_DELAY_MS)
		delay = SMTPD_AUTH_MAX_DELAY_MS;
	snprintf(n, sizeof(n), "%u", c->auth_failures);
	log_ev(LOG_INFO, SMTPD_AUTH_IDS(s), "authentication failed", "user",
	    user, "address", s->peer_text, "failures", n, NULL);
	return delay;
}

/* The worker's answer, on the loop thread. */
static void
smtpd_auth_done(void *arg)
{
	struct smtpd_auth *a = arg;
	struct smtpd_session *s = a->s;
	struct timeval tv;
	int64_t ms;

	if (s == NULL) {		/* invariant 3 */
		smtpd_auth_free(a);
		return;
	}
	if (a->ok) {
		s->auth_user = xstrdup(a->user);
		log_ev(LOG_INFO, SMTPD_AUTH_IDS(s), "authenticated", "user",
		    a->user, "mechanism", a->mech, NULL);
		smtpd_auth_end(s);
		smtpd_reply(s, "235 2.7.0 Authentication successful");
		smtpd_session_resume(s);
		return;
	}
	ms = smtpd_auth_failure(s, a->user);
	a->step = SMTPD_AUTH_DELAY;
	a->delay_ev = evtimer_new(s->srv->base, smtpd_auth_delayed, s);
	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	evtimer_add(a->delay_ev, &tv);
}

/*
 * A test sink's check (ops.auth_check): plain pairs, answered at once
 * within the command, without the failure delay (the session never stopped
 * reading, so nothing resumes it). Failures still count for the address.
 */
static void
smtpd_auth_check_now(struct smtpd_session *s)
{
	struct smtpd_auth *a = s->auth;
	int ok = s->srv->ops.auth_check(s->srv->ops.arg, a->user, a->pass);

	explicit_bzero(a->pass, sizeof(a->pass));
	if (!ok) {
		(void)smtpd_auth_failure(s, a->user);
		smtpd_auth_refuse(s);
		return;
	}
	s->auth_user = xstrdup(a->user);
	log_ev(LOG_INFO, SMTPD_AUTH_IDS(s), "authenticated", "user", a->user,
	    "mechanism", a->mech, NULL);
	smtpd_auth_end(s);
	smtpd_reply(s, "235 2.7.0 Authentication successful");
}

/* User and password are in: check them off the loop. */
static void
smtpd_auth_check(struct smtpd_session *s)
{
	struct smtpd_auth *a = s->auth;

	if (s->srv->ops.auth_check != NULL) {
		smtpd_auth_check_now(s);
		return;
	}
	const char *hash = auth_users_find(s->srv->users, a->user);

	a->known = hash != NULL;
	a->hash = xstrdup(hash ? hash : smtpd_auth_dummy);
	a->step = SMTPD_AUTH_CHECK;
	bufferevent_disable(s->bev, EV_READ);
	sl_work_submit(s->srv->work, smtpd_auth_run, smtpd_auth_done, a);
}

/* A response that is not base64 or "*": 501 and the exchange ends. */
static void
smtpd_auth_bad(struct smtpd_session *s, enum auth_sasl_status st)
{
	smtpd_auth_end(s);
	if (st == AUTH_SASL_CANCEL)
		smtpd_reject(s, "AUTH", "501 5.0.0 Authentication cancelled");
	else if (st == AUTH_SASL_BAD64)
		smtpd_reject(s, "AUTH", "501 5.5.2 Cannot decode response");
	else
		smtpd_reject(s, "AUTH", "501 5.5.2 Malformed authentication "
		    "response");
}

void
smtpd_auth_line(struct smtpd_session *s, char *line)
{
	struct smtpd_auth *a = s->auth;
	enum auth_sasl_status st;

	switch (a->step) {
	case SMTPD_AUTH_WAIT_PLAIN:
		st = auth_sasl_plain(line, a->user, a->pass);
		break;
	case SMTPD_AUTH_WAIT_USER:
		st = auth_sasl_login(line, a->user, sizeof(a->user));
		if (st == AUTH_SASL_OK) {
			a->step = SMTPD_AUTH_WAIT_PASS;
			smtpd_reply(s, "334 UGFzc3dvcmQ6");	/* Password: */
			return;
		}
		break;
	case SMTPD_AUTH_WAIT_PASS:
		st = auth_sasl_login(line, a->pass, sizeof(a->pass));
		break;
	default:
		SL_PANIC("smtpd: AUTH line in step %d", a->step);
	}
	explicit_bzero(line, strlen(line));
	if (st != AUTH_SASL_OK) {
		smtpd_auth_bad(s, st);
		return;
	}
	smtpd_auth_check(s);
}

/* RFC 4954 4: the refusals before an exchange starts; 1 if refused. */
static int
smtpd_auth_refused(struct smtpd_session *s)
{
	struct smtpd_client *c;
	int sink = s->srv->ops.auth_check != NULL;

	if (!sink && (!s->submission || s->srv->work == NULL)) {
		smtpd_reject(s, "AUTH", "502 5.5.1 Command not implemented");
	} else if (!sink && !s->tls) {
		smtpd_reject(s, "AUTH", "538 5.7.11 Encryption required for "
		    "requested authentication mechanism");
	} else if (s->state == SMTPD_ST_GREET) {
		smtpd_reject(s, "AUTH", "503 5.5.1 Error: send EHLO first");
	} else if (s->auth_user != NULL) {
		smtpd_reject(s, "AUTH", "503 5.5.1 Error: already authenticated");
	} else if (s->state != SMTPD_ST_IDLE) {
		smtpd_reject(s, "AUTH", "503 5.5.1 Error: MAIL transaction in "
		    "progress");
	} else {
		c = smtpd_client_get(s->srv, (struct sockaddr *)&s->peer);
		if (c->auth_locked_until <= sl_mono_ms())
			return 0;
		log_ev(LOG_INFO, SMTPD_AUTH_IDS(s), "AUTH refused", "address",
		    s->peer_text, "reason", "too many failures", NULL);
		smtpd_session_close(s, "421 4.7.0 Too many authentication "
		    "failures, try again later", "too many AUTH failures");
	}
	return 1;
}

void
smtpd_cmd_auth(struct smtpd_session *s, char *arg)
{
	char *resp = strchr(arg, ' ');
	struct smtpd_auth *a;

	if (smtpd_auth_refused(s))
		return;
	if (resp != NULL)
		*resp++ = '\0';
	if (!sl_strcaseeq(arg, "PLAIN") && !sl_strcaseeq(arg, "LOGIN")) {
		smtpd_reject(s, "AUTH", "504 5.5.4 Unrecognized authentication "
		    "type");
		return;
	}
	a = xcalloc(1, sizeof(*a));
	a->s = s;
	s->auth = a;
	smtpd_enter(s, SMTPD_ST_AUTH);
	if (sl_strcaseeq(arg, "PLAIN")) {
		a->mech = "PLAIN";
		a->step = SMTPD_AUTH_WAIT_PLAIN;
		if (resp == NULL)
			smtpd_reply(s, "334 ");
		else
			smtpd_auth_line(s, resp);
		return;
	}
	a->mech = "LOGIN";
	a->step = SMTPD_AUTH_WAIT_USER;
	if (resp == NULL)
		smtpd_reply(s, "334 VXNlcm5hbWU6");	/* Username: */
	else
		smtpd_auth_line(s, resp);
}
