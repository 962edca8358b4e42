/* SPDX-License-Identifier: MIT */
/*
 * smtpc_int.h: what the files of src/smtpc share and nothing else sees.
 */
#ifndef SL_SMTPC_INT_H
#define SL_SMTPC_INT_H

#include <netinet/in.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "smtpc/smtpc.h"

enum smtpc_state {
	SMTPC_ST_START = 0,	/* smtpc_new: the first connect is deferred */
	SMTPC_ST_CONNECT,	/* TCP connect in progress */
	SMTPC_ST_GREETING,	/* connected, waiting for the 220 */
	SMTPC_ST_EHLO,		/* EHLO or HELO sent */
	SMTPC_ST_STARTTLS,	/* STARTTLS sent, waiting for the 220 */
	SMTPC_ST_TLS,		/* the TLS handshake is under way */
	SMTPC_ST_IDLE,		/* READY: wants a message or QUIT */
	SMTPC_ST_TX,		/* a message in flight */
	SMTPC_ST_QUIT,		/* QUIT sent, waiting for its reply */
	SMTPC_ST_CLOSED,	/* the socket is gone */
};

/* A command sent whose reply has not come yet, in the order sent. */
enum smtpc_cmd {
	SMTPC_CMD_GREETING = 0,	/* not sent: the 220 we wait for */
	SMTPC_CMD_EHLO,
	SMTPC_CMD_HELO,
	SMTPC_CMD_RSET,
	SMTPC_CMD_MAIL,
	SMTPC_CMD_RCPT,
	SMTPC_CMD_DATA,
	SMTPC_CMD_DOT,		/* the body and its final ".\r\n" */
	SMTPC_CMD_BDAT,		/* "BDAT n LAST" and the body */
	SMTPC_CMD_QUIT,
	SMTPC_CMD_STARTTLS,
};

struct smtpc_sent {
	uint8_t cmd;		/* enum smtpc_cmd */
	uint32_t idx;		/* the rcpt of a RCPT */
};

/* Where the sending of a message's commands has got to. */
enum smtpc_stage {
	SMTPC_SG_RSET = 0,	/* RSET first if the last message failed */
	SMTPC_SG_MAIL,
	SMTPC_SG_RCPT,		/* RCPT for rcpts[next_rcpt..] */
	SMTPC_SG_DATA,		/* DATA or BDAT */
	SMTPC_SG_DONE,		/* nothing more to send */
};

/* Per recipient of the message in flight. */
enum { SMTPC_R_NONE = 0, SMTPC_R_ACCEPTED, SMTPC_R_FINAL };

/* The message in flight. */
struct smtpc_tx {
	struct smtpc_msg *m;	/* borrowed until done */
	uint8_t *rst;		/* SMTPC_R_* per rcpt; owned */
	int stage;		/* enum smtpc_stage */
	size_t next_rcpt;	/* next RCPT to send */
	size_t replied;		/* RCPT replies received */
	size_t accepted;	/* of them 2xx */
	int mail_failed;
	int body_writing;	/* body being sent, output not yet drained */
	int body_left;		/* more of it to queue (smtpc_body_pump) */
	size_t body_off;	/* body bytes queued so far */
	uint64_t size;		/* the message on the wire: SIZE= and BDAT's
				   count (tx.c smtpc_wire_size) */
	struct smtpc_enc enc;	/* how they go on the wire */
	int local;		/* outcome decided here; done is deferred */
};

/*
 * The body goes out in pieces: at most SMTPC_BODY_HIWAT bytes wait in the
 * socket's buffer, more are encoded (SMTPC_BODY_CHUNK at a time) when it
 * drains below SMTPC_BODY_LOWAT (the write callback). So a connection
 * holds a few hundred KB of a message, never a copy of all of it, and
 * many connections can send one shared body at once.
 */
#define SMTPC_BODY_CHUNK (64 * 1024)
#define SMTPC_BODY_HIWAT (256 * 1024)
#define SMTPC_BODY_LOWAT (64 * 1024)

struct smtpc {
	struct event_base *base;
	uint64_t dcid;
	struct smtpc_params p;	/* timeouts with defaults applied */
	char *helo;		/* owned */
	struct smtpc_addr *addrs; /* owned copy */
	size_t naddr, ai;	/* ai: the address in use or next to try */
	struct smtpc_cb cb;
	int state;		/* enum smtpc_state */

	struct bufferevent *bev;
	unsigned gen;		/* bumped whenever bev is closed */
	int connected;		/* bev's TCP connect finished */
	struct event *timer;	/* connect and reply timeouts */
	struct event *defer;	/* runs what must not run from the API */
	unsigned pending;	/* SMTPC_DEFER_* for defer */

	char addr_text[112];	/* an address, or a Unix socket path */
	int port;
	char peer[384];		/* "host[addr]", the address alone, or "unix:path" */

	struct smtpc_reply reply;
	struct smtpc_sent *q;	/* commands awaiting replies */
	size_t qhead, qlen, qcap;

	int tls;		/* bev is the TLS filter, handshake done */
	size_t tls_off;		/* ai + 1 of an address whose handshake
				   failed: it is retried in plaintext */
	unsigned ext;		/* SMTPC_EXT_* */
	uint64_t peer_size;
	int need_rset;		/* the last transaction was left open */
	int quit_pending;	/* smtpc_quit during a message */
	struct smtpc_tx tx;

	struct sockaddr_storage source;	/* to bind to; family 0: none */
	socklen_t source_len;
	int bind_failed;	/* the source could not be bound */
	int last_code;		/* the last address's failure */
	char last_reason[512];

	int depth;		/* inside our libevent callbacks */
	int dead;		/* smtpc_free called there: free on return */
	int closed_reported;	/* CLOSED or FAILED was given */
};

enum {
	SMTPC_DEFER_CONNECT = 1,	/* start on the first address */
	SMTPC_DEFER_LOCAL = 2,		/* finish a message failed here */
	SMTPC_DEFER_CLOSED = 4,		/* report SMTPC_CLOSED */
};

/* session.c: the socket, its queue of commands, the owner's callbacks */
int smtpc_emit(struct smtpc *c, enum smtpc_event ev, int code,
    const char *reason);
void smtpc_defer(struct smtpc *c, unsigned what);
void smtpc_close(struct smtpc *c, const char *why);
void smtpc_timer_update(struct smtpc *c);
void smtpc_q_push(struct smtpc *c, int cmd, size_t idx);
void smtpc_cmd(struct smtpc *c, int cmd, size_t idx, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void smtpc_quit_send(struct smtpc *c);

/* tx.c: the message in flight */
const char *smtpc_cmd_name(const struct smtpc *c);
void smtpc_tx_reply(struct smtpc *c, const struct smtpc_sent *s);
void smtpc_tx_end(struct smtpc *c);
void smtpc_tx_break(struct smtpc *c, const char *why);
void smtpc_body_pump(struct smtpc *c);

#endif
