/* SPDX-License-Identifier: MIT */
/*
 * bounce.h: delivery status notifications (RFC 3464, RFC 3461, RFC 6522).
 *
 * bounce_build() writes one multipart/report message about one message and
 * one event (failure, delay, or success) covering the recipients listed,
 * from the null sender to the original envelope sender.
 */
#ifndef SL_BOUNCE_H
#define SL_BOUNCE_H

#include <stddef.h>
#include <stdint.h>

struct evbuffer;

enum bounce_action {
	BOUNCE_FAILED,		/* Action: failed */
	BOUNCE_DELAYED,		/* Action: delayed */
	BOUNCE_DELIVERED,	/* Action: delivered (NOTIFY=SUCCESS) */
	BOUNCE_RELAYED,		/* Action: relayed (peer without DSN) */
};

struct bounce_rcpt {
	const char *addr;	/* Final-Recipient (rfc822 or utf-8 type) */
	const char *orcpt;	/* Original-Recipient as stored, or NULL */
	enum bounce_action action;
	const char *status;	/* "5.1.1" */
	const char *remote_mta;	/* "mx.example.net", or NULL */
	const char *diagnostic;	/* "550 5.1.1 <x@y>: User unknown", or NULL */
	const char *note;	/* for the reader, before the diagnostic in
				   part 1 ("delivery time expired after 5
				   days"), or NULL */
	int64_t last_attempt;	/* unix seconds, or 0 */
};

struct bounce_info {
	const char *reporting_mta;	/* our hostname */
	uint64_t mid;			/* original message */
	const char *envid;		/* Original-Envelope-Id, or NULL */
	const char *sender;		/* the original envelope sender */
	int64_t arrival;		/* unix seconds */
	int ret_full;			/* RET=FULL: attach the whole message;
					   otherwise only its headers */
	int smtputf8;			/* use message/global-delivery-status
					   (RFC 6533) when needed */
	struct evbuffer *original;	/* the message as stored; borrowed */
	size_t max_original;		/* attach at most this many bytes of a
					   full message (then headers only) */
	size_t nrcpt;
	const struct bounce_rcpt *rcpts;
};

/*
 * Build the DSN (headers and body, CRLF line ends) into a new evbuffer;
 * free with evbuffer_free(). now: unix seconds, for Date:.
 */
struct evbuffer *bounce_build(const struct bounce_info *b, int64_t now);
/*
 * 1 if a built DSN holds 8-bit text (a returned header or message, an
 * SMTPUTF8 address): it must go out with BODY=8BITMIME (RFC 6152).
 */
int bounce_8bit(struct evbuffer *dsn);

#endif
