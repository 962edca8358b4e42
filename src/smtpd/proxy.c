/* SPDX-License-Identifier: MIT */
/*
 * proxy.c: the PROXY protocol header parser (proxy.h), versions 1 and 2 as
 * HAProxy's proxy-protocol.txt defines them. Pure; called by session.c in
 * the PROXY state with every byte received so far.
 *
 * Invariants
 *  1. The verdict depends only on the bytes given, and a longer input that
 *     begins with the same bytes never turns an earlier BAD or DONE into
 *     something else: a header is judged once, whatever the reads.
 *  2. Nothing past the header's own length is read (it is the client's
 *     SMTP), and nothing past n.
 *  3. MORE is answered only while fewer than SMTPD_PROXY_MAX bytes are
 *     given, so a peer cannot make the caller buffer without bound.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "smtpd/proxy.h"

static const uint8_t proxy_v2_sig[12] = {
	0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
};

static enum smtpd_proxy_rc
proxy_bad(struct smtpd_proxy_hdr *out, const char *why)
{
	out->why = why;
	return SMTPD_PROXY_BAD;
}

/* A v1 port: decimal 0..65535, no sign, no leading zero. */
static int
proxy_v1_port(const char *s, uint16_t *port)
{
	unsigned long v = 0;
	size_t n = strlen(s);

	if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (unsigned long)(s[i] - '0');
	}
	if (v > 65535)
		return -1;
	*port = (uint16_t)v;
	return 0;
}

/* An address of family af and a port into ss. */
static int
proxy_v1_addr(int af, const char *addr, const char *port,
    struct sockaddr_storage *ss)
{
	uint16_t p;

	if (proxy_v1_port(port, &p) != 0)
		return -1;
	memset(ss, 0, sizeof(*ss));
	if (af == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;
		sin->sin_family = AF_INET;
		sin->sin_port = htons(p);
		return inet_pton(AF_INET, addr, &sin->sin_addr) == 1 ? 0 : -1;
	}
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
	sin6->sin6_family = AF_INET6;
	sin6->sin6_port = htons(p);
	return inet_pton(AF_INET6, addr, &sin6->sin6_addr) == 1 ? 0 : -1;
}

/*
 * "PROXY" SP proto SP src SP dst SP sport SP dport CRLF, fields separated
 * by exactly one space; "PROXY UNKNOWN" may be followed by anything up to
 * the CRLF.
 */
static enum smtpd_proxy_rc
proxy_v1(const uint8_t *p, size_t n, struct smtpd_proxy_hdr *out)
{
	char line[SMTPD_PROXY_V1_MAX + 1], *f[6], *s;
	size_t len = 0, nf = 0;
	int af;

	if (memcmp(p, "PROXY ", n < 6 ? n : 6) != 0)
		return proxy_bad(out, "not a PROXY v1 header");
	/* only printable ASCII, and a CR only before the LF that ends it */
	while (len < n && len < SMTPD_PROXY_V1_MAX) {
		uint8_t c = p[len];
		if (c == '\r') {
			if (len + 1 == n)
				return SMTPD_PROXY_MORE;
			if (p[len + 1] != '\n')
				return proxy_bad(out, "CR without LF in the v1 line");
			break;
		}
		if (c < 0x20 || c > 0x7e)
			return proxy_bad(out, "a control byte in the v1 line");
		len++;
	}
	/* the loop stops short of n only at a CR with its LF */
	if (len == SMTPD_PROXY_V1_MAX || (len < n && len + 2 > SMTPD_PROXY_V1_MAX))
		return proxy_bad(out, "v1 line longer than 107 bytes");
	if (len == n)
		return SMTPD_PROXY_MORE;
	memcpy(line, p, len);
	line[len] = '\0';
	out->version = 1;
	out->len = len + 2;
	if (strcmp(line + 6, "UNKNOWN") == 0 ||
	    strncmp(line + 6, "UNKNOWN ", 8) == 0) {
		out->local = 1;
		return SMTPD_PROXY_DONE;
	}
	/* split the rest at single spaces: no empty field */
	s = line + 6;
	while (nf < 6) {
		char *sp = strchr(s, ' ');
		f[nf++] = s;
		if (*s == '\0' || sp == s)
			return proxy_bad(out, "an empty field in the v1 line");
		if (sp == NULL)
			break;
		*sp = '\0';
		s = sp + 1;
	}
	if (nf != 5)
		return proxy_bad(out, "the v1 line has not 5 fields");
	if (strcmp(f[0], "TCP4") == 0)
		af = AF_INET;
	else if (strcmp(f[0], "TCP6") == 0)
		af = AF_INET6;
	else
		return proxy_bad(out, "v1 protocol not TCP4, TCP6 or UNKNOWN");
	if (proxy_v1_addr(af, f[1], f[3], &out->src) != 0 ||
	    proxy_v1_addr(af, f[2], f[4], &out->dst) != 0)
		return proxy_bad(out, "a bad address or port in the v1 line");
	return SMTPD_PROXY_DONE;
}

/* TLVs: type (1), length (2, network order), value; they tile the rest. */
static int
proxy_v2_tlvs(const uint8_t *p, size_t n)
{
	size_t at = 0;

	while (at < n) {
		size_t l;
		if (n - at < 3)
			return -1;
		l = (size_t)p[at + 1] << 8 | p[at + 2];
		if (l > n - at - 3)
			return -1;
		at += 3 + l;
	}
	return 0;
}

/*
 * The v2 binary header: signature, version and command (0x20 LOCAL, 0x21
 * PROXY), family and transport, length of what follows, the addresses of
 * the family, TLVs.
 */
static enum smtpd_proxy_rc
proxy_v2(const uint8_t *p, size_t n, struct smtpd_proxy_hdr *out)
{
	size_t len, need;
	int local, fam;

	if (memcmp(p, proxy_v2_sig, n < 12 ? n : 12) != 0)
		return proxy_bad(out, "not a PROXY v2 signature");
	if (n > 12 && (p[12] & 0xF0) != 0x20)
		return proxy_bad(out, "v2 header of another version");
	if (n > 12 && (p[12] & 0x0F) > 1)
		return proxy_bad(out, "v2 command neither LOCAL nor PROXY");
	if (n < 16)
		return SMTPD_PROXY_MORE;
	local = (p[12] & 0x0F) == 0;
	fam = p[13];
	len = (size_t)p[14] << 8 | p[15];
	switch (local ? 0 : fam) {
	case 0x00:	/* LOCAL (any family), or UNSPEC */
		need = 0;
		break;
	case 0x11:	/* TCP over IPv4 */
		need = 12;
		break;
	case 0x21:	/* TCP over IPv6 */
		need = 36;
		break;
	case 0x31:	/* UNIX stream: no client address we could use */
		need = 216;
		break;
	case 0x12: case 0x22: case 0x32:
		return proxy_bad(out, "v2 header for a datagram connection");
	default:
		return proxy_bad(out, "v2 address family not valid");
	}
	if (len < need)
		return proxy_bad(out, "v2 length shorter than its addresses");
	if (n < 16 + len)
		return SMTPD_PROXY_MORE;
	if (!local && proxy_v2_tlvs(p + 16 + need, len - need) != 0)
		return proxy_bad(out, "v2 TLVs do not fit the header");
	out->version = 2;
	out->len = 16 + len;
	out->local = local || fam == 0x00 || fam == 0x31;
	if (fam == 0x11 && !local) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&out->src;
		struct sockaddr_in *d4 = (struct sockaddr_in *)&out->dst;
		s4->sin_family = d4->sin_family = AF_INET;
		memcpy(&s4->sin_addr, p + 16, 4);
		memcpy(&d4->sin_addr, p + 20, 4);
		memcpy(&s4->sin_port, p + 24, 2);
		memcpy(&d4->sin_port, p + 26, 2);
	} else if (fam == 0x21 && !local) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&out->src;
		struct sockaddr_in6 *d6 = (struct sockaddr_in6 *)&out->dst;
		s6->sin6_family = d6->sin6_family = AF_INET6;
		memcpy(&s6->sin6_addr, p + 16, 16);
		memcpy(&d6->sin6_addr, p + 32, 16);
		memcpy(&s6->sin6_port, p + 48, 2);
		memcpy(&d6->sin6_port, p + 50, 2);
	}
	return SMTPD_PROXY_DONE;
}

enum smtpd_proxy_rc
smtpd_proxy_parse(const uint8_t *p, size_t n, enum smtpd_proxy_mode mode,
    struct smtpd_proxy_hdr *out)
{
	memset(out, 0, sizeof(*out));
	if (n == 0)
		return SMTPD_PROXY_MORE;
	/* v1 begins with 'P', v2 with CR: one byte tells them apart */
	if (p[0] == 'P' && (mode == SMTPD_PROXY_V1 || mode == SMTPD_PROXY_ANY))
		return proxy_v1(p, n, out);
	if (p[0] == 0x0D && (mode == SMTPD_PROXY_V2 || mode == SMTPD_PROXY_ANY))
		return proxy_v2(p, n, out);
	return proxy_bad(out, mode == SMTPD_PROXY_V1 ? "no PROXY v1 header" :
	    mode == SMTPD_PROXY_V2 ? "no PROXY v2 header" : "no PROXY header");
}
