/* SPDX-License-Identifier: MIT */
/*
 * smtpc.h: one outbound SMTP connection (RFC 5321 client) on the event loop.
 *
 * The connection tries the addresses it is given in order until one answers
 * the greeting with 2xx (a refused connect, a timeout, or a non-2xx greeting
 * moves to the next address), says EHLO (HELO if EHLO is refused), and then
 * carries messages one at a time: the owner hands one with smtpc_send(),
 * gets its per-recipient outcome in cb->done, and either hands the next one
 * (connection reuse) or calls smtpc_quit().
 *
 * Per message it sends MAIL FROM with SIZE / BODY=8BITMIME / SMTPUTF8 and,
 * when the peer offers DSN, RET / ENVID; RCPT TO with NOTIFY / ORCPT when
 * offered; then DATA with dot-stuffing (or BDAT when the peer offers
 * CHUNKING). With PIPELINING, MAIL, all RCPTs and DATA go in one write
 * (RFC 2920). It never sends more than the peer's SIZE: such a message
 * fails with 552 5.3.4 without being sent; a message that needs SMTPUTF8
 * to a peer without it fails with 553 5.6.7.
 *
 * STARTTLS (RFC 3207): with the default policy (SMTPC_TLS_MAY) a peer that
 * offers STARTTLS after EHLO gets it; on 220 the connection is wrapped in
 * TLS 1.2 or later (SNI: the MX name; certificates are not verified) and
 * EHLO is said again, the extensions offered before TLS forgotten. A
 * refusal of STARTTLS goes on in plaintext. A failed handshake closes the
 * connection and the same address is tried once more in plaintext (as
 * Postfix does at its "may" level); SMTPC_TLS_ENCRYPT fails the address
 * instead (code 0: temporary), as it does when STARTTLS is not offered or
 * is refused ("TLS required but not offered by HOST"). SMTPC_TLS_VERIFY
 * also checks, once the handshake is done and before any command, the
 * chain against tls_ca_file (or the system's CAs) and the MX host name
 * (RFC 6125, SNI sent), and fails the address on a mismatch
 * ("certificate name mismatch: ...").
 *
 * LMTP (RFC 2033, params.lmtp): the same connection says LHLO instead of
 * EHLO (no HELO fallback), always sends DATA, and after the data reads one
 * reply per recipient that RCPT accepted, in RCPT order, each that
 * recipient's own outcome. Addresses may be Unix sockets (AF_UNIX), as a
 * local LMTP server such as Dovecot's usually is.
 *
 * A probe message (smtpc_msg.probe) only asks: MAIL and RCPT, no data;
 * each recipient's outcome is its RCPT reply, and the next message on the
 * connection starts with RSET. It verifies recipients with the server that
 * holds their mailboxes before they are accepted.
 *
 * Every step has a timeout (RFC 5321 4.5.3.2); a peer that stalls, sends
 * garbage, a reply without CRLF, or a multi-line reply that never ends (more
 * than 100 lines or 64 KB) ends the connection with the message's
 * recipients failed temporarily, so they are retried.
 *
 * Threads: the event loop thread of the base given.
 */
#ifndef SL_SMTPC_H
#define SL_SMTPC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct event_base;
struct evbuffer;
struct smtpc;

/* One address to try, in order. */
struct smtpc_addr {
	struct sockaddr_storage ss;
	char host[256];			/* MX name, for logs and DSNs */
};

/* STARTTLS policy; the per-route setting will choose it. */
enum smtpc_tls {
	SMTPC_TLS_MAY = 0,	/* TLS when offered; plaintext otherwise */
	SMTPC_TLS_NONE,		/* never STARTTLS */
	SMTPC_TLS_ENCRYPT,	/* TLS or no delivery to this address */
	SMTPC_TLS_VERIFY,	/* TLS with a verified certificate for the MX */
};

struct smtpc_params {
	const char *helo;		/* our name in EHLO */
	int connect_timeout;		/* seconds; default 30 */
	int command_timeout;		/* seconds, MAIL/RCPT/greeting; 300 */
	int data_timeout;		/* seconds, data block and final dot;
					   600 */
	int use_bdat;			/* send BDAT when the peer offers
					   CHUNKING; default 0 (DATA) */
	int tls;			/* enum smtpc_tls; default 0 (MAY) */
	const char *tls_ca_file;	/* VERIFY: trust anchors; NULL or "":
					   the system's; borrowed */
	int lmtp;			/* speak LMTP (RFC 2033) */
	/* the local address to send from (port 0), or NULL: the system's
	 * choice. Addresses of another family are skipped; one that cannot
	 * be bound fails the connection at once (smtpc_bind_failed). */
	const struct sockaddr_storage *source;
	socklen_t source_len;
};

struct smtpc_rcpt {
	uint32_t rid;
	const char *addr;		/* borrowed */
	const char *orcpt;		/* borrowed, or NULL */
	uint8_t notify;			/* SPOOL_NOTIFY_* bits */
	/* filled by the connection: */
	int code;			/* 250, 451, 550...; 0 if none */
	char reply[512];		/* the reply, one line, or our reason */
};

struct smtpc_msg {
	uint64_t mid;
	const char *sender;		/* "" for <>; borrowed */
	uint8_t flags;			/* SPOOL_F_* */
	uint8_t ret;			/* SPOOL_RET_* */
	const char *envid;		/* borrowed, or NULL */
	struct evbuffer *body;		/* the message as stored; borrowed */
	size_t nrcpt;
	struct smtpc_rcpt *rcpts;	/* borrowed; outcomes written in */
	void *owner;			/* for the caller */
	int probe;			/* MAIL and RCPT only (no body) */
};

enum smtpc_event {
	SMTPC_READY,		/* connected and greeted: send a message */
	SMTPC_CLOSED,		/* the connection is gone (after QUIT or not) */
	SMTPC_FAILED,		/* no address worked; reply/reason given */
};

struct smtpc_cb {
	/*
	 * A message's outcome: each rcpt has code and reply. The connection
	 * stays usable (SMTPC_READY follows) unless it broke, in which case
	 * every rcpt without a final code got 4xx and SMTPC_CLOSED follows.
	 */
	void (*done)(void *arg, struct smtpc *c, struct smtpc_msg *m);
	/*
	 * A change of the connection: READY (idle, wants a message or QUIT),
	 * CLOSED, or FAILED with the last reply or error (code 0 for a
	 * network error, 421 etc. for a refusing greeting).
	 */
	void (*event)(void *arg, struct smtpc *c, enum smtpc_event ev, int code,
	    const char *reason);
	void *arg;
	/*
	 * Optional: every reply the peer gives (the greeting, each command's,
	 * the end of data's), as it comes: "421 4.7.0 text" (lines joined by
	 * " / "). It must not free c.
	 */
	void (*reply)(void *arg, struct smtpc *c, const char *reply);
};

/*
 * Start a connection to the first working address of addrs (copied).
 * dcid names it in the logs. The callbacks fire later, never from here.
 */
struct smtpc *smtpc_new(struct event_base *base, uint64_t dcid,
    const struct smtpc_params *p, const struct smtpc_addr *addrs,
    size_t naddr, const struct smtpc_cb *cb);
/* Send one message; only after SMTPC_READY. m is borrowed until done. */
void smtpc_send(struct smtpc *c, struct smtpc_msg *m);
/* Say QUIT and close; SMTPC_CLOSED follows. */
void smtpc_quit(struct smtpc *c);
/*
 * Close now without callbacks (shutdown); a message in flight gets none.
 * The owner also frees c this way after SMTPC_CLOSED or SMTPC_FAILED.
 * Safe from inside any callback of c (the free is then finished when the
 * callback returns); smtpc_send and smtpc_quit are too. NULL does nothing.
 */
void smtpc_free(struct smtpc *c);

/* 1 if the connection failed because params->source could not be bound
 * (not the peer's fault: another source may do). */
int smtpc_bind_failed(const struct smtpc *c);

/* What the connection learned: the peer's address and host, and counts. */
const char *smtpc_peer_host(const struct smtpc *c);
const char *smtpc_peer_addr(const struct smtpc *c);
uint64_t smtpc_dcid(const struct smtpc *c);

/* EHLO keywords the peer offered (0 after HELO); valid once READY. */
enum {
	SMTPC_EXT_PIPELINING = 1,
	SMTPC_EXT_SIZE = 2,
	SMTPC_EXT_8BITMIME = 4,
	SMTPC_EXT_SMTPUTF8 = 8,
	SMTPC_EXT_DSN = 16,
	SMTPC_EXT_CHUNKING = 32,
	SMTPC_EXT_STARTTLS = 64,	/* offered (never after TLS began) */
};
unsigned smtpc_peer_ext(const struct smtpc *c);
/* 1 if the connection is in TLS now. */
int smtpc_peer_tls(const struct smtpc *c);
/* The peer's SIZE limit in bytes; 0 if none given. */
uint64_t smtpc_peer_size(const struct smtpc *c);

/*
 * Reply parser, pure (tested and fuzzed alone): feed bytes; returns the
 * number consumed; *complete set when a whole (possibly multi-line) reply
 * ended, with its code and its text lines joined by " / ".
 *
 * A line ends with CRLF or a bare LF and is "ddd" followed by ' ' (last
 * line), '-' (more follow) or nothing (last line), ddd from 200 to 599
 * and the same on every line. error is set, and the feed stops, at the
 * first byte that breaks this, or a line longer than SMTPC_REPLY_MAX_LINE,
 * more than SMTPC_REPLY_MAX_LINES lines, or more than
 * SMTPC_REPLY_MAX_BYTES bytes. A feed stops after the line end of the
 * last line (the rest belongs to the next reply); after complete or error
 * it consumes nothing until smtpc_reply_init(). text is truncated to fit
 * and has control bytes replaced by '?'.
 */
#define SMTPC_REPLY_MAX_LINE 1000	/* bytes of a line without CRLF */
#define SMTPC_REPLY_MAX_LINES 100
#define SMTPC_REPLY_MAX_BYTES 65536	/* of one reply, line ends included */
struct smtpc_reply {
	int code;
	int lines;
	size_t len;
	char text[1024];
	int complete;
	int error;		/* malformed or over the limits */
	char line[1024];	/* the line being read */
	size_t linelen;
	/*
	 * Optional, set after smtpc_reply_init(): called with the text of
	 * each line as it ends (after "ddd-" / "ddd ", no line end; not
	 * terminated), e.g. to read EHLO keywords beyond what text[] holds.
	 */
	void (*on_line)(void *arg, const char *text, size_t n);
	void *on_line_arg;
};
void smtpc_reply_init(struct smtpc_reply *r);
size_t smtpc_reply_feed(struct smtpc_reply *r, const char *p, size_t n);

/*
 * The body as sent (dotstuff.c): with stuff (DATA), dot-stuffed at every
 * line start (after CRLF, a bare CR or a bare LF) and ended with ".\r\n"
 * (RFC 5321 4.5.2); with fold, no line over SMTPC_LINE_MAX octets before
 * its CRLF: longer ones get "\r\n " inserted (RFC 5321 4.5.3.1.6, as
 * Postfix's smtp_line_length_limit). Resumable: feed bytes in any chunks,
 * then end; out may be NULL to count the bytes only (e->out).
 */
#define SMTPC_LINE_MAX 998
struct smtpc_enc {
	unsigned stuff : 1;	/* DATA: dot-stuffing and the final dot */
	unsigned fold : 1;	/* fold long lines */
	unsigned bol : 1;	/* the next byte starts a line */
	unsigned cr : 1;	/* a CR held: a line end or content? */
	unsigned crlf : 1;	/* the last bytes written were a CRLF */
	size_t col;		/* octets since the last CRLF */
	uint64_t in, out;	/* body bytes taken, wire bytes made */
};
void smtpc_enc_init(struct smtpc_enc *e, int stuff, int fold);
void smtpc_enc_feed(struct smtpc_enc *e, struct evbuffer *out,
    const char *p, size_t n);
void smtpc_enc_end(struct smtpc_enc *e, struct evbuffer *out);
/* Feed at most max bytes of body from offset off; returns bytes taken. */
size_t smtpc_enc_body(struct smtpc_enc *e, struct evbuffer *out,
    struct evbuffer *body, size_t off, size_t max);
/* The whole body dot-stuffed and folded, then ".\r\n", appended to out. */
void smtpc_dotstuff(struct evbuffer *out, struct evbuffer *body);
/* The bytes the whole body makes on the wire. */
uint64_t smtpc_enc_size(struct evbuffer *body, int stuff, int fold);

#endif
