/* SPDX-License-Identifier: MIT */
/*
 * received.c: the Received: trace header (RFC 5321 4.4) that sluice puts
 * first in every message it accepts, naming the queue ID (MID).
 *
 *   Received: from client.example ([192.0.2.1]) (port 41234)
 *   	by mta.example (sluice) with ESMTP id 0005F1A2B3C4D5E6
 *   	for <rcpt@example.net>; Tue, 24 Nov 2026 10:00:00 +0000
 *
 * "with" is the RFC 3848 / RFC 6531 protocol name: SMTP, ESMTP, UTF8SMTP,
 * and ESMTPS or UTF8SMTPS in TLS (after STARTTLS or on a tls_listen port),
 * which also adds a comment line "(using TLSv1.3 with cipher
 * TLS_AES_256_GCM_SHA384)" as Postfix does; an authenticated session
 * adds "A" (ESMTPSA, UTF8SMTPSA). Neither the user nor anything of the
 * password is written.
 * The address and port are the client's: behind a balancer, the ones its
 * PROXY header named. The port goes in a comment of its own, so the
 * TCP-info in parentheses stays the address literal RFC 5321 4.4 gives.
 */
#include <string.h>

#include "smtpd/smtpd_int.h"
#include "util/tls.h"
#include "util/util.h"

/* A HELO argument is client-supplied: keep only printable, safe bytes. */
static void
received_clean(const char *in, char *out, size_t size)
{
	size_t n = 0;

	for (; *in && n + 1 < size; in++) {
		unsigned char c = (unsigned char)*in;
		out[n++] = (c > 32 && c < 127 && c != '(' && c != ')' &&
		    c != ';') || c >= 0x80 ? (char)c : '_';
	}
	out[n] = '\0';
}

void
smtpd_received_add(struct smtpd_session *s, struct smtpd_tx *tx)
{
	const struct sl_conf *c = s->srv->conf;
	const char *proto;
	char helo[256], date[64], mid[17], addr[80];

	received_clean(s->helo ? s->helo : "unknown", helo, sizeof(helo));
	sl_rfc5322_date(sl_now_us() / 1000000, date, sizeof(date));
	spool_mid_fmt(tx->mid, mid);
	if (strchr(s->peer_text, ':') != NULL)
		snprintf(addr, sizeof(addr), "[IPv6:%s]", s->peer_text);
	else
		snprintf(addr, sizeof(addr), "[%s]", s->peer_text);
	if (tx->mail.smtputf8)
		proto = s->auth_user ? (s->tls ? "UTF8SMTPSA" : "UTF8SMTPA") :
		    s->tls ? "UTF8SMTPS" : "UTF8SMTP";
	else if (s->auth_user != NULL)
		proto = s->tls ? "ESMTPSA" : "ESMTPA";
	else
		proto = s->tls ? "ESMTPS" : s->esmtp ? "ESMTP" : "SMTP";
	evbuffer_add_printf(tx->body, "Received: from %s (%s) (port %d)\r\n",
	    helo, addr, s->peer_port);
	if (s->tls)
		evbuffer_add_printf(tx->body, "\t(using %s with cipher %s)\r\n",
		    sl_tls_version(s->bev), sl_tls_cipher(s->bev));
	evbuffer_add_printf(tx->body, "\tby %s (%s) with %s id %s",
	    c->server_hostname,
	    s->srv->ops.product ? s->srv->ops.product : "sluice", proto, mid);
	/* one recipient may be named; more would leak the envelope (4.4) */
	if (tx->nrcpt == 1)
		evbuffer_add_printf(tx->body, "\r\n\tfor <%s>; %s\r\n",
		    tx->rcpts[0].addr, date);
	else
		evbuffer_add_printf(tx->body, ";\r\n\t%s\r\n", date);
}
