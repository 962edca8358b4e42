/* SPDX-License-Identifier: MIT */
/*
 * parse.h: pure parsers of SMTP command lines (RFC 5321, 1870, 2920, 3030,
 * 3461, 6152, 6531). Bytes in, structs out, no I/O, no allocation: results
 * point into the caller's (mutable) line buffer.
 */
#ifndef SL_SMTPD_PARSE_H
#define SL_SMTPD_PARSE_H

#include <stddef.h>
#include <stdint.h>

enum smtpd_cmd {
	SMTPD_CMD_UNKNOWN = 0,
	SMTPD_CMD_HELO, SMTPD_CMD_EHLO, SMTPD_CMD_MAIL, SMTPD_CMD_RCPT,
	SMTPD_CMD_DATA, SMTPD_CMD_BDAT, SMTPD_CMD_RSET, SMTPD_CMD_NOOP,
	SMTPD_CMD_QUIT, SMTPD_CMD_VRFY, SMTPD_CMD_EXPN, SMTPD_CMD_HELP,
	SMTPD_CMD_STARTTLS, SMTPD_CMD_AUTH,
};

/* What went wrong, mapped to one reply by the session (reply.c). */
enum smtpd_perr {
	SMTPD_P_OK = 0,
	SMTPD_P_SYNTAX,		/* 501 5.5.4 syntax error in parameters */
	SMTPD_P_BADADDR,	/* 501 5.1.3 bad address syntax */
	SMTPD_P_BADSENDER,	/* 501 5.1.7 bad sender address syntax */
	SMTPD_P_UNKPARAM,	/* 555 5.5.4 unrecognized parameter */
	SMTPD_P_BADPARAM,	/* 501 5.5.4 bad parameter value */
	SMTPD_P_NEEDUTF8,	/* 553 5.6.7 non-ASCII address without SMTPUTF8 */
};

enum { SMTPD_BODY_NONE = 0, SMTPD_BODY_7BIT, SMTPD_BODY_8BITMIME,
	SMTPD_BODY_BINARYMIME };

/*
 * Split a command line (without CRLF) into its verb and argument.
 * *arg points at the text after the verb and its white space ("" if none).
 */
enum smtpd_cmd smtpd_parse_verb(char *line, char **arg);

struct smtpd_mail_args {
	char *addr;		/* reverse path without <>; "" for <> */
	uint64_t size;		/* SIZE=, 0 if absent */
	int body;		/* SMTPD_BODY_* */
	int smtputf8;		/* SMTPUTF8 given */
	int ret;		/* 0, 1 = FULL, 2 = HDRS (SPOOL_RET_*) */
	char *envid;		/* ENVID= xtext as given, or NULL */
};

struct smtpd_rcpt_args {
	char *addr;		/* forward path without <> */
	int notify;		/* SPOOL_NOTIFY_* bits, 0 if absent */
	char *orcpt;		/* ORCPT= as given ("rfc822;a@b"), or NULL */
};

/*
 * Parse the argument of MAIL ("FROM:<a@b> SIZE=10 BODY=8BITMIME") in place.
 * A non-ASCII address needs SMTPUTF8 among the parameters (RFC 6531).
 * Returns SMTPD_P_OK or the error.
 */
enum smtpd_perr smtpd_parse_mail(char *arg, struct smtpd_mail_args *out);
/* Parse the argument of RCPT ("TO:<a@b> NOTIFY=FAILURE ORCPT=rfc822;a@b"). */
enum smtpd_perr smtpd_parse_rcpt(char *arg, int smtputf8,
    struct smtpd_rcpt_args *out);
/*
 * Check a mailbox (local@domain, no <>) per RFC 5321 4.1.2 and RFC 6531.
 * Returns 1 if valid. allow_utf8: whether UTF-8 is allowed in it.
 */
int smtpd_addr_valid(const char *addr, size_t len, int allow_utf8);
/* Domain part of a mailbox (after the last @), or NULL. */
const char *smtpd_addr_domain(const char *addr);
/*
 * 1 if the local part of addr (all of it without a domain) holds
 * sender-specified routing: '%' or '!' (user%host@relay, host!user@relay)
 * or, quoted, '@' ("a@b"@relay).
 */
int smtpd_addr_routed(const char *addr);
/*
 * 1 if addr is the postmaster of domain (RFC 5321 4.5.1): the local part
 * "postmaster" in any case (quoted or not), and no domain or domain (any
 * case).
 */
int smtpd_addr_postmaster(const char *addr, const char *domain);

/* Parse the argument of BDAT ("1024 LAST"); returns SMTPD_P_OK or SYNTAX. */
enum smtpd_perr smtpd_parse_bdat(const char *arg, uint64_t *size, int *last);

/* Check a HELO/EHLO argument: a domain or address literal. 1 if valid. */
int smtpd_helo_valid(const char *arg);

#endif
