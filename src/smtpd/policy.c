/* SPDX-License-Identifier: MIT */
/*
 * policy.c: whom a client may send to. Trusted clients ([server]
 * trusted_networks) and authenticated users (AUTH on a submission
 * listener) may relay anywhere; the others only to local_domains
 * and relay_domains, and never with sender-specified routing in the local
 * part (user%host@, host!user@, "a@b"@: 550 5.7.1, as Postfix's
 * allow_untrusted_routing = no). The postmaster (RFC 5321 4.5.1:
 * "Postmaster" and "Postmaster@" our hostname, any case) is accepted from
 * anyone and delivered to [server] postmaster, routed like any recipient.
 *
 * Owns srv->postmaster. Callers: session.c (RCPT), listener.c (start and
 * reload).
 *
 * Invariants
 *  1. No DSN that an untrusted client's MAIL FROM chose is sent for a
 *     recipient outside our domains: the only such recipient accepted is
 *     the postmaster, stored with NOTIFY=NEVER (and the address the client
 *     gave as its ORCPT), so neither we nor a next hop that honours DSN
 *     parameters answer its failure or delay to that sender.
 */
#include <stdlib.h>
#include <string.h>

#include "smtpd/smtpd_int.h"
#include "util/util.h"

int
smtpd_policy_load(struct smtpd_server *srv, const struct sl_conf *c,
    char *err, size_t errlen)
{
	char buf[300];
	const char *pm = c->server_postmaster;

	if (pm[0] == '\0') {
		snprintf(buf, sizeof(buf), "postmaster@%s", c->server_hostname);
		pm = buf;
	}
	if (!smtpd_addr_valid(pm, strlen(pm), 1)) {
		snprintf(err, errlen, "[server] postmaster: '%s' is not a mail "
		    "address (local@domain)", pm);
		return -1;
	}
	free(srv->postmaster);
	srv->postmaster = xstrdup(pm);
	return 0;
}

enum smtpd_rcpt_policy
smtpd_policy_rcpt(const struct smtpd_session *s, const char *addr)
{
	const struct sl_conf *c = s->srv->conf;
	int ours = s->trusted || s->auth_user != NULL;
	const char *dom;

	if (!ours && smtpd_addr_routed(addr))
		return SMTPD_RCPT_ROUTED;
	if (smtpd_addr_postmaster(addr, c->server_hostname))
		return SMTPD_RCPT_POSTMASTER;
	if (ours)
		return SMTPD_RCPT_OK;
	/* only <Postmaster> may come without a domain (parse.c) */
	if ((dom = smtpd_addr_domain(addr)) != NULL &&
	    (conf_domain_in(c->local_domains, c->nlocal_domains, dom) ||
	    conf_domain_in(c->relay_domains, c->nrelay_domains, dom)))
		return SMTPD_RCPT_OK;
	return SMTPD_RCPT_RELAY;
}

char *
smtpd_policy_orcpt(const char *addr)
{
	static const char hex[] = "0123456789ABCDEF";
	char *out = xmalloc(7 + strlen(addr) * 3 + 1), *p = out;

	memcpy(p, "rfc822;", 7);
	p += 7;
	/* RFC 3461 4: xtext, "+" and two hex digits for '+', '=' and the
	 * bytes outside printable ASCII */
	for (; *addr != '\0'; addr++) {
		unsigned char ch = (unsigned char)*addr;

		if (ch < 33 || ch > 126 || ch == '+' || ch == '=') {
			*p++ = '+';
			*p++ = hex[ch >> 4];
			*p++ = hex[ch & 15];
		} else {
			*p++ = (char)ch;
		}
	}
	*p = '\0';
	return out;
}
