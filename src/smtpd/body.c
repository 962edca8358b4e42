/* SPDX-License-Identifier: MIT */
/*
 * body.c: the body of the message a session is receiving, from DATA or
 * BDAT to the store: where its bytes go, what they cost, and what it may
 * not hold (content.c finds it: bare CR and LF in BDAT chunks across
 * their boundaries, NUL, more Received: fields than [server]
 * max_received_headers; BODY=BINARYMIME, which alone would allow such
 * bytes, is not offered: 555 at MAIL).
 *
 * Owns tx->body (our Received: header, then the client's bytes as they
 * will be stored) and the server's count of such bytes in memory
 * (srv->stats.inflight_bytes), which covers every body being received and
 * every one handed to ops->store until the store answers; with [server]
 * loops, the root's inflight_held sums its loops' counts (atomically:
 * each loop adds its own).
 * Callers: session.c (the commands, the read loop, the end of the data).
 *
 * Invariants
 *  1. srv->stats.inflight_bytes is the sum of tx->held over all sessions
 *     of a loop, the root's inflight_held that over all loops, and it
 *     never passes the root's inflight_cap ([server] max_inflight_bytes):
 *     a body that would pass it is dropped at once (its memory freed) and
 *     its transaction answered 451 4.3.1 at the end of its data; DATA or
 *     a first BDAT that finds no room is answered 451 4.3.1 at once.
 *  2. tx->held is given back exactly once, by smtpd_body_release, which
 *     smtpd_tx_reset calls (after the store answered, if it was asked).
 *  3. Bytes are copied into tx->body, never moved in chains: an input
 *     chain is often mostly empty (a slow client), and moving it would
 *     keep its whole allocation for a few bytes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log/log.h"
#include "smtpd/smtpd_int.h"
#include "util/util.h"

/* The machine's memory: physical, or the cgroup's limit when lower. */
static uint64_t
smtpd_machine_memory(void)
{
	long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
	uint64_t mem = pages > 0 && size > 0 ? (uint64_t)pages * (uint64_t)size :
	    (uint64_t)1 << 30;
	unsigned long long lim;
	FILE *f = fopen("/sys/fs/cgroup/memory.max", "re");

	if (f != NULL) {
		if (fscanf(f, "%llu", &lim) == 1 && lim > 0 && lim < mem)
			mem = lim;	/* "max" (no limit) does not scan */
		fclose(f);
	}
	return mem;
}

uint64_t
smtpd_inflight_cap(const struct sl_conf *c)
{
	uint64_t cap;

	if (c->server_max_inflight_bytes > 0)
		return (uint64_t)c->server_max_inflight_bytes;
	/* an eighth of the machine, and room for one message at least */
	cap = smtpd_machine_memory() / 8;
	if (cap < (uint64_t)c->server_max_message_size)
		cap = (uint64_t)c->server_max_message_size;
	return cap;
}

static struct smtpd_server *
smtpd_body_root(struct smtpd_server *srv)
{
	return srv->parent != NULL ? srv->parent : srv;
}

/* Hold n more bytes if the cap allows (all: even past it). */
static int
smtpd_body_hold(struct smtpd_server *srv, size_t n, int all)
{
	struct smtpd_server *root = smtpd_body_root(srv);
	uint64_t cap = atomic_load_explicit(&root->inflight_cap,
	    memory_order_relaxed);
	uint64_t was = atomic_fetch_add_explicit(&root->inflight_held, n,
	    memory_order_relaxed);

	if (!all && was + n > cap) {
		atomic_fetch_sub_explicit(&root->inflight_held, n,
		    memory_order_relaxed);
		return -1;
	}
	srv->stats.inflight_bytes += n;
	return 0;
}

int
smtpd_body_open(struct smtpd_session *s, int bdat)
{
	struct smtpd_server *srv = s->srv;
	struct smtpd_server *root = smtpd_body_root(srv);
	struct smtpd_tx *tx = &s->tx;
	size_t n;

	if (atomic_load_explicit(&root->inflight_held, memory_order_relaxed) >=
	    atomic_load_explicit(&root->inflight_cap, memory_order_relaxed))
		return -1;
	smtpd_content_init(&tx->content, bdat);
	tx->body = evbuffer_new();
	if (!srv->ops.no_received)
		smtpd_received_add(s, tx);
	n = evbuffer_get_length(tx->body);
	tx->header_len = n;
	tx->held = n;
	smtpd_body_hold(srv, n, 1);	/* our header: a few hundred bytes */
	return 0;
}

void
smtpd_body_release(struct smtpd_session *s)
{
	struct smtpd_tx *tx = &s->tx;

	if (tx->body != NULL)
		evbuffer_free(tx->body);
	tx->body = NULL;
	SL_ALWAYS(s->srv->stats.inflight_bytes >= tx->held);
	s->srv->stats.inflight_bytes -= tx->held;
	atomic_fetch_sub_explicit(&smtpd_body_root(s->srv)->inflight_held,
	    tx->held, memory_order_relaxed);
	tx->held = 0;
}

/* Append n bytes of the message to the body, within the cap (invariant 1). */
static void
smtpd_body_add(struct smtpd_session *s, const char *p, size_t n)
{
	struct smtpd_server *srv = s->srv;
	struct smtpd_tx *tx = &s->tx;

	smtpd_content_feed(&tx->content, p, n);
	if (tx->body == NULL)
		return;		/* dropped: only checked */
	if (smtpd_body_hold(srv, n, 0) != 0) {
		char held[24];

		snprintf(held, sizeof(held), "%zu", tx->held);
		log_ev(LOG_WARNING, &(struct log_ids){ s->icid, 0, tx->mid, -1 },
		    "body dropped: max_inflight_bytes reached", "held", held,
		    NULL);
		tx->over = 1;
		smtpd_body_release(s);
		return;
	}
	evbuffer_add(tx->body, p, n);
	tx->held += n;
}

const char *
smtpd_body_refusal(struct smtpd_session *s, int *tempfail)
{
	struct smtpd_tx *tx = &s->tx;
	int err = tx->data.err, bad = tx->content.err;

	*tempfail = 0;
	if ((err & (SMTPD_DATA_BARE_LF | SMTPD_DATA_BARE_CR)) ||
	    (bad & (SMTPD_CONTENT_BARE_LF | SMTPD_CONTENT_BARE_CR)))
		return "550 5.5.2 Message rejected: bare <CR> or <LF> in "
		    "message data (RFC 5321 2.3.8)";
	if (err & SMTPD_DATA_TOO_BIG)
		return "552 5.3.4 Message size exceeds fixed maximum message "
		    "size";
	if (bad & SMTPD_CONTENT_NUL)
		return "550 5.6.0 Message rejected: NUL character in message "
		    "data";
	/* RFC 5321 6.3: a count of Received: fields finds a mail loop */
	if (tx->content.received >
	    (uint64_t)s->srv->conf->server_max_received_headers)
		return "554 5.4.6 Message rejected: too many Received: "
		    "headers (mail loop?)";
	if (tx->over) {
		*tempfail = 1;
		return SMTPD_INFLIGHT_REPLY;
	}
	return NULL;
}

static void
smtpd_data_emit(void *ctx, const char *p, size_t n)
{
	smtpd_body_add(ctx, p, n);
}

/*
 * Feed all buffered input to the DATA machine; 1 when the data ended.
 * All of it: under TLS the bytes already decrypted bring no new read event,
 * so a final dot left in the buffer would wait for the data timeout.
 */
int
smtpd_body_read_data(struct smtpd_session *s, struct evbuffer *in)
{
	struct evbuffer_iovec v[8];

	if (s->tx.drop_in_data) {
		smtpd_session_close(s, NULL, "dropped in DATA by policy");
		return 1;
	}
	while (!s->tx.data.done && evbuffer_get_length(in) > 0) {
		int n = evbuffer_peek(in, -1, NULL, v, 8);
		size_t total = 0;

		for (int i = 0; i < n && i < 8 && !s->tx.data.done; i++)
			total += smtpd_data_feed(&s->tx.data, v[i].iov_base,
			    v[i].iov_len, smtpd_data_emit, s);
		evbuffer_drain(in, total);
	}
	if (!s->tx.data.done)
		return 0;
	smtpd_data_end(s);
	return 1;
}

/* Take the bytes of the current BDAT chunk; 1 when the chunk is complete. */
int
smtpd_body_read_bdat(struct smtpd_session *s, struct evbuffer *in)
{
	struct smtpd_tx *tx = &s->tx;
	struct evbuffer_iovec v[8];

	if (tx->drop_in_data && tx->bdat_left > 0) {
		smtpd_session_close(s, NULL, "dropped in BDAT by policy");
		return 1;
	}
	while (tx->bdat_left > 0 && evbuffer_get_length(in) > 0) {
		size_t want = tx->bdat_left < 1 << 20 ? (size_t)tx->bdat_left :
		    1 << 20;
		int n = evbuffer_peek(in, (ev_ssize_t)want, NULL, v, 8);
		size_t total = 0;

		for (int i = 0; i < n && i < 8 && total < want; i++) {
			size_t k = v[i].iov_len < want - total ?
			    v[i].iov_len : want - total;

			if (tx->bdat_fail == 0) {
				smtpd_body_add(s, v[i].iov_base, k);
				tx->size += k;
			}
			total += k;
		}
		evbuffer_drain(in, total);
		tx->bdat_left -= total;
	}
	if (tx->bdat_left > 0)
		return 0;
	if (tx->bdat_last)
		smtpd_content_end(&tx->content);
	smtpd_bdat_end(s);
	return 1;
}
