/* SPDX-License-Identifier: MIT */
/*
 * proxy.h: the PROXY protocol header (HAProxy's proxy-protocol.txt,
 * versions 1 and 2) that a TCP balancer sends before the client's bytes,
 * naming the client's address and port as the balancer saw them. Pure:
 * bytes in, a verdict and the addresses out, no I/O, no allocation.
 *
 * The parser is resumable by re-reading: the caller keeps the bytes that
 * arrived and calls smtpd_proxy_parse() on all of them each time more
 * come. It answers MORE while every byte so far can still begin a header
 * it accepts, BAD as soon as one cannot (a wrong first byte is BAD at
 * once, not after a timeout), and DONE with the header's length once it
 * is complete; bytes past that length belong to SMTP and are not looked
 * at. A header is at most SMTPD_PROXY_MAX bytes.
 *
 *   v1: "PROXY TCP4 192.0.2.1 198.51.100.2 41234 25\r\n" (TCP6 alike),
 *       "PROXY UNKNOWN ...\r\n"; at most 107 bytes with the CRLF.
 *   v2: 12-byte signature, version/command, family/transport, length
 *       (network order), addresses, then TLVs (checked for framing and
 *       skipped).
 *
 * A v1 UNKNOWN, a v2 LOCAL (HAProxy's health checks) and a v2 PROXY of an
 * unspecified or UNIX family say nothing about a client: out->local is set
 * and the caller uses the socket's own addresses.
 */
#ifndef SL_SMTPD_PROXY_H
#define SL_SMTPD_PROXY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* The longest header: the v2 fixed part and the most its length says. */
#define SMTPD_PROXY_MAX (16 + 65535)
/* The longest v1 line, CRLF included. */
#define SMTPD_PROXY_V1_MAX 107

/* What a listener accepts ([server] proxy_protocol: off, v1, v2, any;
 * conf.c derives conf->proxy_mode in this order). */
enum smtpd_proxy_mode {
	SMTPD_PROXY_OFF = 0,
	SMTPD_PROXY_V1,
	SMTPD_PROXY_V2,
	SMTPD_PROXY_ANY,
};

enum smtpd_proxy_rc {
	SMTPD_PROXY_MORE = 0,	/* a prefix of a header: wait for more */
	SMTPD_PROXY_DONE,	/* a complete header of out->len bytes */
	SMTPD_PROXY_BAD,	/* not a header we accept: out->why says why */
};

struct smtpd_proxy_hdr {
	int version;		/* 1 or 2 */
	int local;		/* no client named: use the socket's addresses */
	struct sockaddr_storage src;	/* the client, as the balancer saw it */
	struct sockaddr_storage dst;	/* the address the client reached */
	size_t len;		/* bytes of the header (DONE) */
	const char *why;	/* a static reason (BAD) */
};

/*
 * Parse the n bytes at p as a header of a version mode allows. out is
 * written for DONE (every field) and BAD (why); mode must not be OFF.
 */
enum smtpd_proxy_rc smtpd_proxy_parse(const uint8_t *p, size_t n,
    enum smtpd_proxy_mode mode, struct smtpd_proxy_hdr *out);

#endif
