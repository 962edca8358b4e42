/* SPDX-License-Identifier: MIT */
/*
 * smtpd_int.h: what the files of src/smtpd share and nothing else sees.
 */
#ifndef SL_SMTPD_INT_H
#define SL_SMTPD_INT_H

#include <sys/queue.h>

#include <event2/bufferevent.h>
#include <event2/buffer.h>
#include <event2/listener.h>

#include "conf/conf.h"
#include "smtpd/content.h"
#include "smtpd/data.h"
#include "smtpd/parse.h"
#include "smtpd/proxy.h"
#include "smtpd/smtpd.h"

/*
 * Replies a client may leave unread before the session stops reading its
 * commands (output backpressure, session.c smtpd_out_full).
 */
#define SMTPD_OUT_MAX (64 * 1024)

enum smtpd_state {
	SMTPD_ST_PROXY = 0,	/* waiting for the PROXY header (proxy.c);
				   every session starts here, and one on a
				   listener without it moves on at once */
	SMTPD_ST_GREET,		/* before HELO/EHLO */
	SMTPD_ST_IDLE,		/* after HELO/EHLO, no transaction */
	SMTPD_ST_MAIL,		/* after MAIL */
	SMTPD_ST_RCPT,		/* after a RCPT was accepted */
	SMTPD_ST_VERIFY,	/* a RCPT waits for ops->verify's answer */
	SMTPD_ST_DATA,		/* reading DATA */
	SMTPD_ST_BDAT,		/* reading a BDAT chunk */
	SMTPD_ST_STORE,		/* waiting for ops->store to answer */
	SMTPD_ST_AUTH,		/* an AUTH exchange (auth.c) */
	SMTPD_ST_CLOSING,	/* flushing the last reply, then free */
};

/* One MAIL transaction; RSET or the end of the data drops it. */
struct smtpd_tx {
	uint64_t mid;
	char *sender;
	struct smtpd_mail_args mail;	/* strings inside point to none */
	char *envid;
	struct spool_rcpt *rcpts;
	size_t nrcpt, cap;
	struct evbuffer *body;		/* Received: + data as stored; NULL
					   once dropped (body.c) */
	size_t header_len;		/* bytes of our Received: header */
	size_t held;			/* bytes of it in inflight_bytes */
	uint64_t size;			/* BDAT: bytes of the chunks taken */
	int over;			/* dropped: max_inflight_bytes */
	struct smtpd_data data;		/* the DATA machine */
	struct smtpd_content content;	/* what the body holds (body.c) */
	uint64_t bdat_left;		/* bytes of the current chunk to read */
	int bdat_last;
	int bdat_seen;			/* a BDAT was given: DATA is refused */
	int bdat_fail;			/* reply for this chunk: 0 ok or code */
	int drop_in_data;		/* a check said DROP at DATA */
	void *verify;			/* ops->verify's handle: rcpts[nrcpt]
					   waits for its answer */
	int64_t start_ms;
};

/* What a listener is for. */
enum smtpd_listen_kind {
	SMTPD_L_MTA = 0,	/* [server] listen: relay policy, no AUTH */
	SMTPD_L_SUBMISSION,	/* [submission] listen: STARTTLS, AUTH required */
	SMTPD_L_SUBMISSIONS,	/* [submission] tls_listen: TLS first, AUTH
				   required (RFC 8314) */
};

struct smtpd_listener {
	struct smtpd_server *srv;
	struct evconnlistener *l;
	enum smtpd_listen_kind kind;
};

struct smtpd_auth;

struct smtpd_session {
	TAILQ_ENTRY(smtpd_session) entry;
	struct smtpd_server *srv;
	struct bufferevent *bev;
	uint64_t icid;
	struct sockaddr_storage peer;	/* the client: from the PROXY
					   header when there is one */
	char peer_text[64];
	int peer_port;
	char proxy_text[64];	/* the balancer's address; "" if none */
	char *helo;
	int esmtp;
	enum smtpd_state state;	/* written only by smtpd_enter */
	int errors;
	int in_read;		/* inside smtpd_session_input: no recursion */
	int inflight;		/* callbacks running on s, and the store's
				   answer owed to it: its free waits for
				   them (session.c smtpd_hold) */
	char *gone;		/* freed while inflight: why, logged when
				   the last of them lets go; NULL before */
	int out_full;		/* reading paused: over SMTPD_OUT_MAX of
				   replies unwritten (session.c) */
	int discard_line;	/* dropping the rest of an over-long line */
	int trusted;
	int tls;		/* STARTTLS done: bev is the TLS filter */
	int direct;		/* replies are written by smtpd_flush(), the
				   write event armed only for a remainder */
	struct evbuffer_cb_entry *flush_cb; /* TLS: closing waits for it */
	struct smtpd_tx tx;
	char *auth_user;	/* after a successful AUTH; owned */
	struct smtpd_auth *auth; /* the AUTH exchange in SMTPD_ST_AUTH */
	int submission;		/* on a submission listener: AUTH required */
	struct smtpd_iptab_entry *ipent;
	struct event *delay_ev;	/* ops.reply_delay_ms: holds the output */
};

TAILQ_HEAD(smtpd_session_list, smtpd_session);

struct smtpd_iptab_entry {
	struct smtpd_iptab_entry *next;
	uint8_t addr[16];
	int family;
	uint32_t count;
};

/* What the server remembers of one client address (clients.c). */
struct smtpd_client {
	struct smtpd_client *hnext;
	TAILQ_ENTRY(smtpd_client) lru;
	uint8_t addr[16];
	int family;
	uint32_t hash;
	int64_t win_start;		/* ms, monotonic: this minute began */
	uint32_t win_count, prev_count;	/* connections this and last minute */
	uint32_t auth_failures;
	int64_t auth_last;		/* ms of the last failure */
	int64_t auth_locked_until;	/* ms; AUTH refused until then */
};

struct smtpd_clients {
	struct smtpd_client **tab;
	size_t n;
	TAILQ_HEAD(, smtpd_client) lru;
};

struct ssl_ctx_st;
struct auth_users;
struct sl_work;

struct smtpd_server {
	struct event_base *base;
	const struct sl_conf *conf;
	struct ssl_ctx_st *tls_ctx;	/* NULL: no STARTTLS; owned */
	struct smtpd_ops ops;
	struct smtpd_listener *listeners;
	size_t nlisteners;
	struct auth_users *users;	/* [auth] users_file; owned */
	struct sl_work *work;		/* password checks; owned */
	struct smtpd_clients clients;
	struct smtpd_session_list sessions;
	uint64_t next_icid;
	struct smtpd_iptab_entry **iptab;
	size_t iptab_size;
	struct smtpd_stats stats;	/* .inflight_bytes: body.c */
	uint64_t inflight_cap;		/* [server] max_inflight_bytes */
	char *postmaster;		/* [server] postmaster (policy.c) */
	int stopping;
	void (*stop_done)(void *);
	void *stop_arg;
	struct event *stop_ev;
};

/* session.c */
/*
 * Move s to state to; the only writer of s->state. Returns 1 if it moved.
 * Leaving CLOSING is refused quietly (returns 0): a command whose reject
 * closed the session goes on to reset its transaction, and that reset must
 * not reopen it. Any other move not in session.c's smtpd_moves[] is our
 * bug.
 */
int smtpd_enter(struct smtpd_session *s, enum smtpd_state to);
/*
 * A session on fd from sa; proxied: sa is a balancer and the client is
 * named by the PROXY header that must come first (SMTPD_ST_PROXY).
 */
struct smtpd_session *smtpd_session_new(struct smtpd_server *srv, int fd,
    const struct sockaddr *sa, socklen_t salen, int proxied);
/* The text of an address as logs show it (IPv4-mapped as IPv4; "unix"),
 * and its port (0 if none). */
int smtpd_addr_text(const struct sockaddr *sa, char *buf, size_t len);
/* Point s->bev's callbacks at the session (again after STARTTLS). */
void smtpd_session_setcb(struct smtpd_session *s);
/*
 * Write the replies queued so far straight to the socket (no write event:
 * arming and disarming it cost two epoll_ctl per reply); what the socket
 * does not take is left to the bufferevent. No-op under TLS.
 */
void smtpd_flush(struct smtpd_session *s);
/*
 * Go on after a pause (reading was off): handle what is buffered, write
 * the replies, and read again if the state reads.
 */
void smtpd_session_resume(struct smtpd_session *s);
/* Greet (or refuse) the new client. */
void smtpd_session_start(struct smtpd_session *s);
/*
 * End the session: CLOSING, nothing more read, written or answered. The
 * memory goes at once, or, while s->inflight (a callback of s runs up
 * the stack, or the store owes an answer), when the last of them lets go
 * (smtpd_release): code up the stack may go on using s, and finds it
 * CLOSING.
 */
void smtpd_session_free(struct smtpd_session *s, const char *why);
/*
 * Around every entry into s from libevent or the store (session.c,
 * tls.c): hold it, and let go; smtpd_release returns 0 once s is freed or
 * to be freed (stop using it).
 */
void smtpd_hold(struct smtpd_session *s);
int smtpd_release(struct smtpd_session *s);
/* Send a reply line (without CRLF). */
void smtpd_reply(struct smtpd_session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/*
 * A reply that refuses the client's command: counted against max_errors,
 * logged, and the session closed when over the limit.
 */
void smtpd_reject(struct smtpd_session *s, const char *cmd, const char *fmt,
    ...) __attribute__((format(printf, 3, 4)));
/* A refusal that is not the client's fault (4xx, short of a resource):
 * logged, not counted against max_errors. */
void smtpd_tempfail(struct smtpd_session *s, const char *cmd,
    const char *reply);
/* The end of the data (DATA's final dot) and of a BDAT chunk: refuse the
 * body or store it, or answer the chunk. */
void smtpd_data_end(struct smtpd_session *s);
void smtpd_bdat_end(struct smtpd_session *s);
/* Reply and close once written. */
void smtpd_session_close(struct smtpd_session *s, const char *reply,
    const char *why);
/* 1 if the session can be closed at shutdown right now. */
int smtpd_session_idle(const struct smtpd_session *s);

/* tls.c: STARTTLS (RFC 3207) */
/*
 * Load [server] tls_cert and tls_key into srv->tls_ctx (none if tls_cert
 * is empty). On failure -1 with the setting and file in err, and the
 * context in use stays.
 */
int smtpd_tls_load(struct smtpd_server *srv, const struct sl_conf *conf,
    char *err, size_t errlen);
/* The STARTTLS command; 1 if s->bev is now the TLS filter (restart). */
int smtpd_cmd_starttls(struct smtpd_session *s, const char *arg);
/* The handshake ended (BEV_EVENT_CONNECTED): log it. */
void smtpd_tls_established(struct smtpd_session *s);
/* Why the TLS connection failed, into buf. */
const char *smtpd_tls_error(struct smtpd_session *s, char *buf, size_t len);
/*
 * 1 if every reply is out. Over TLS the ciphertext waits in the socket's
 * bufferevent after the filter's output drained, so a closing session is
 * freed from a callback on that buffer when it is 0 (smtpd_tls_flushed).
 */
int smtpd_session_flushed(struct smtpd_session *s);
/* Drop a session's TLS hooks before its bufferevent is freed. */
void smtpd_tls_session_free(struct smtpd_session *s);

/* body.c: the body being received, and what bodies hold in memory */
#define SMTPD_INFLIGHT_REPLY "451 4.3.1 Insufficient system resources: " \
	"too much mail in transit, try again later"
/* The cap of [server] max_inflight_bytes (0: an eighth of the machine). */
uint64_t smtpd_inflight_cap(const struct sl_conf *c);
/*
 * Open s->tx's body, our Received: first; -1 if the cap leaves no room.
 * bdat: the body comes in BDAT chunks, as sent (no data.c in front of it
 * to find bare CR and LF).
 */
int smtpd_body_open(struct smtpd_session *s, int bdat);
/* Free s->tx's body and give its bytes back to the server's count. */
void smtpd_body_release(struct smtpd_session *s);
/*
 * Feed buffered input to the DATA machine, or take the current BDAT
 * chunk's bytes; 1 when the data or the chunk ended (smtpd_data_end or
 * smtpd_bdat_end was called), 0 when more input is needed.
 */
int smtpd_body_read_data(struct smtpd_session *s, struct evbuffer *in);
int smtpd_body_read_bdat(struct smtpd_session *s, struct evbuffer *in);
/*
 * Why the body received so far may not be stored (a reply line), or NULL.
 * *tempfail is set for a 4xx that is not the client's fault.
 */
const char *smtpd_body_refusal(struct smtpd_session *s, int *tempfail);

/* policy.c: whom a client may send to */
enum smtpd_rcpt_policy {
	SMTPD_RCPT_OK = 0,
	SMTPD_RCPT_POSTMASTER,	/* ours: store srv->postmaster instead */
	SMTPD_RCPT_ROUTED,	/* untrusted sender-specified routing */
	SMTPD_RCPT_RELAY,	/* untrusted, not one of our domains */
};
/*
 * srv->postmaster from [server] postmaster (empty: postmaster@ the
 * hostname). 0, or -1 with the setting and value in err (the one in use
 * stays).
 */
int smtpd_policy_load(struct smtpd_server *srv, const struct sl_conf *c,
    char *err, size_t errlen);
/* What RCPT may do with addr (parsed: valid, or "Postmaster"). */
enum smtpd_rcpt_policy smtpd_policy_rcpt(const struct smtpd_session *s,
    const char *addr);
/* The ORCPT of addr ("rfc822;" xtext); returns a new string (free()). */
char *smtpd_policy_orcpt(const char *addr);
/* tls.c: implicit TLS (tls_listen): the session is TLS from its start. */
int smtpd_tls_implicit(struct smtpd_session *s);

/* auth.c: AUTH (RFC 4954) on the submission listeners */
/* Load [auth] users_file into srv->users; -1 with err on a bad file. */
int smtpd_auth_load(struct smtpd_server *srv, const struct sl_conf *conf,
    char *err, size_t errlen);
/* 1 if AUTH is offered to s now (EHLO). */
int smtpd_auth_offered(const struct smtpd_session *s);
/* The AUTH command. */
void smtpd_cmd_auth(struct smtpd_session *s, char *arg);
/* A line of the client inside an AUTH exchange (SMTPD_ST_AUTH). */
void smtpd_auth_line(struct smtpd_session *s, char *line);
/* 1 if the exchange waits for a client line (else for a check or delay). */
int smtpd_auth_reading(const struct smtpd_session *s);
/* The session ends: drop or detach its exchange. */
void smtpd_auth_session_free(struct smtpd_session *s);
/* MAIL on a submission listener without AUTH: 530 sent, returns 1. */
int smtpd_auth_required(struct smtpd_session *s);

/* clients.c */
struct smtpd_client *smtpd_client_get(struct smtpd_server *srv,
    const struct sockaddr *sa);
/* Count a new connection of sa; 1 if it is over limit per minute. */
int smtpd_client_rate_over(struct smtpd_server *srv, const struct sockaddr *sa,
    int64_t limit, int64_t now_ms);
void smtpd_clients_free(struct smtpd_server *srv);

/* listener.c */
void smtpd_server_session_gone(struct smtpd_server *srv,
    struct smtpd_session *s);
/*
 * The per-address limit for a client learnt from its PROXY header: 0 and
 * s is counted against s->peer, or -1 with the 421 line (no CRLF) in reply.
 */
int smtpd_server_admit(struct smtpd_server *srv, struct smtpd_session *s,
    char *reply, size_t len);

/* received.c: prepend the Received: header of tx to tx->body. */
void smtpd_received_add(struct smtpd_session *s, struct smtpd_tx *tx);

#endif
