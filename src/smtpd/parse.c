/* SPDX-License-Identifier: MIT */
/*
 * parse.c: the pure parsers of SMTP command lines: the verb, the MAIL and
 * RCPT paths with their ESMTP parameters, the BDAT argument and the HELO
 * domain.
 *
 * Owns no state: every function reads the line it is given and, for MAIL
 * and RCPT, writes NUL bytes into it so that the results (addr, envid,
 * orcpt) point into the caller's buffer. Callers: session.c, the fuzz
 * target fuzz/fuzz_parse.c.
 *
 * Invariants
 *  1. No input makes a function read past the terminating NUL of its line.
 *  2. A path is accepted only in angle brackets; what is returned as addr
 *     has passed smtpd_addr_valid() (or is "" for MAIL's null sender, or
 *     "Postmaster" for RCPT).
 *  3. An address with a non-ASCII byte is accepted only with SMTPUTF8.
 *
 * Grammar (RFC 5321 4.1.2):
 *   Path         = "<" [ A-d-l ":" ] Mailbox ">"
 *   Mailbox      = Local-part "@" ( Domain / address-literal )
 *   Local-part   = Dot-string / Quoted-string
 *   esmtp-param  = esmtp-keyword ["=" esmtp-value]
 */
#include <arpa/inet.h>
#include <string.h>

#include "util/util.h"
#include "spool/spool.h"
#include "smtpd/parse.h"

/* RFC 5321 4.5.3.1: the sizes of the parts of an address. */
#define LOCAL_MAX 64
#define DOMAIN_MAX 255
#define LABEL_MAX 63
#define PATH_MAX_LEN 256	/* including the angle brackets */
/* RFC 3461 4.4: ENVID is at most 100 characters; ORCPT 500 (4.2). */
#define ENVID_MAX 100
#define ORCPT_MAX 500

static const struct {
	const char *name;
	enum smtpd_cmd cmd;
} verbs[] = {
	{ "HELO", SMTPD_CMD_HELO }, { "EHLO", SMTPD_CMD_EHLO },
	{ "MAIL", SMTPD_CMD_MAIL }, { "RCPT", SMTPD_CMD_RCPT },
	{ "DATA", SMTPD_CMD_DATA }, { "BDAT", SMTPD_CMD_BDAT },
	{ "RSET", SMTPD_CMD_RSET }, { "NOOP", SMTPD_CMD_NOOP },
	{ "QUIT", SMTPD_CMD_QUIT }, { "VRFY", SMTPD_CMD_VRFY },
	{ "EXPN", SMTPD_CMD_EXPN }, { "HELP", SMTPD_CMD_HELP },
	{ "STARTTLS", SMTPD_CMD_STARTTLS }, { "AUTH", SMTPD_CMD_AUTH },
};

static int
is_alpha(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static int
is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static int
is_alnum(unsigned char c)
{
	return is_alpha(c) || is_digit(c);
}


/* RFC 5322 3.2.3 atext, the characters of a dot-string atom. */
static int
is_atext(unsigned char c)
{
	return is_alnum(c) || (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c));
}

static int
has_8bit(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] >= 0x80)
			return 1;
	return 0;
}

enum smtpd_cmd
smtpd_parse_verb(char *line, char **arg)
{
	size_t n = strcspn(line, " ");
	char *p = line + n;

	/* Lenient about the white space between verb and argument. */
	while (*p == ' ' || *p == '\t')
		p++;
	*arg = p;
	for (size_t i = 0; i < SL_ARRAY_LEN(verbs); i++)
		if (strlen(verbs[i].name) == n &&
		    sl_strncaseeq(line, verbs[i].name, n))
			return verbs[i].cmd;
	return SMTPD_CMD_UNKNOWN;
}

/*
 * RFC 5321 4.1.3 address literal: [IPv4] or [IPv6:...]. The General-
 * address-literal has no registered tag besides IPv6, so it is refused.
 */
static int
addr_literal_valid(const char *s, size_t n)
{
	char buf[64];
	unsigned char a4[4];
	unsigned char a6[16];

	if (n < 3 || s[0] != '[' || s[n - 1] != ']')
		return 0;
	s++, n -= 2;
	if (n >= 5 && sl_strncaseeq(s, "IPv6:", 5)) {
		if (n - 5 >= sizeof(buf))
			return 0;
		memcpy(buf, s + 5, n - 5);
		buf[n - 5] = '\0';
		return inet_pton(AF_INET6, buf, a6) == 1;
	}
	if (n >= sizeof(buf))
		return 0;
	memcpy(buf, s, n);
	buf[n] = '\0';
	/* inet_pton takes only the strict dotted quad (no octal, no short). */
	return inet_pton(AF_INET, buf, a4) == 1;
}

/*
 * LDH labels separated by single dots, no trailing dot. With utf8, labels
 * may hold U-labels (any well-formed non-ASCII UTF-8); their octet length
 * is not held to 63 since only the A-label form is. With underscore, '_'
 * counts as a letter (HELO names seen in the wild).
 */
static int
domain_labels_valid(const char *s, size_t n, int utf8, int underscore)
{
	size_t i = 0;

	if (n == 0 || n > DOMAIN_MAX)
		return 0;
	if (utf8 && !sl_utf8_valid(s, n))
		return 0;
	while (i < n) {
		size_t start = i;
		int wide = 0;

		for (; i < n && s[i] != '.'; i++) {
			unsigned char c = (unsigned char)s[i];

			if (c >= 0x80 && utf8)
				wide = 1;
			else if (!is_alnum(c) && c != '-' &&
			    !(underscore && c == '_'))
				return 0;
		}
		if (i == start || s[start] == '-' || s[i - 1] == '-')
			return 0;
		if (!wide && i - start > LABEL_MAX)
			return 0;
		if (i < n && ++i == n)
			return 0;	/* a trailing dot */
	}
	return 1;
}

static int
domain_valid(const char *s, size_t n, int utf8)
{
	if (n > 0 && s[0] == '[')
		return addr_literal_valid(s, n);
	return domain_labels_valid(s, n, utf8, 0);
}

/*
 * Length of the quoted string at s (opening quote included) within n bytes,
 * or 0 if it is not closed or holds a byte RFC 5321 (qtextSMTP,
 * quoted-pairSMTP) or RFC 6531 (UTF8-non-ascii) refuses.
 */
static size_t
quoted_len(const char *s, size_t n, int utf8)
{
	for (size_t i = 1; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '"')
			return i + 1;
		if (c == '\\') {
			if (++i == n)
				return 0;
			c = (unsigned char)s[i];
			if (c < 32 || c > 126)
				return 0;
		} else if (c >= 0x80 ? !utf8 : (c < 32 || c == 127)) {
			return 0;
		}
	}
	return 0;
}

static int
dot_string_valid(const char *s, size_t n, int utf8)
{
	if (n == 0 || s[0] == '.' || s[n - 1] == '.')
		return 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '.' && s[i + 1] == '.')
			return 0;
		if (c != '.' && !is_atext(c) && !(utf8 && c >= 0x80))
			return 0;
	}
	return 1;
}

int
smtpd_addr_valid(const char *addr, size_t len, int allow_utf8)
{
	size_t local;

	/* The path limit of 256 less the two angle brackets. */
	if (len == 0 || len > PATH_MAX_LEN - 2)
		return 0;
	if (allow_utf8 && !sl_utf8_valid(addr, len))
		return 0;
	if (addr[0] == '"') {
		local = quoted_len(addr, len, allow_utf8);
		if (local == 0)
			return 0;
	} else {
		const char *at = memchr(addr, '@', len);

		if (at == NULL)
			return 0;
		local = (size_t)(at - addr);
		if (!dot_string_valid(addr, local, allow_utf8))
			return 0;
	}
	if (local > LOCAL_MAX || local >= len || addr[local] != '@')
		return 0;
	return domain_valid(addr + local + 1, len - local - 1, allow_utf8);
}

const char *
smtpd_addr_domain(const char *addr)
{
	const char *at = NULL;
	int quoted = 0;

	for (const char *p = addr; *p != '\0'; p++) {
		if (quoted && *p == '\\' && p[1] != '\0')
			p++;
		else if (*p == '"')
			quoted = !quoted;
		else if (!quoted && *p == '@')
			at = p;
	}
	return at ? at + 1 : NULL;
}

int
smtpd_addr_routed(const char *addr)
{
	const char *dom = smtpd_addr_domain(addr);
	size_t n = dom ? (size_t)(dom - 1 - addr) : strlen(addr);

	for (size_t i = 0; i < n; i++)
		if (addr[i] == '%' || addr[i] == '!' || addr[i] == '@')
			return 1;
	return 0;
}

int
smtpd_addr_postmaster(const char *addr, const char *domain)
{
	const char *dom = smtpd_addr_domain(addr);
	size_t n = dom ? (size_t)(dom - 1 - addr) : strlen(addr);

	/* "postmaster" and "\"postmaster\"" are the same local part */
	if (n == 12 && addr[0] == '"' && addr[11] == '"')
		addr++, n -= 2;
	if (n != 10 || !sl_strncaseeq(addr, "postmaster", 10))
		return 0;
	return dom == NULL || sl_strcaseeq(dom, domain);
}

/*
 * Find the '>' that closes the path opened at *lt, stepping over quoted
 * strings (a quoted local part may hold '>'). NULL if there is none.
 */
static char *
path_end(char *lt)
{
	int quoted = 0;

	for (char *p = lt + 1; *p != '\0'; p++) {
		if (quoted && *p == '\\' && p[1] != '\0')
			p++;
		else if (*p == '"')
			quoted = !quoted;
		else if (!quoted && *p == '>')
			return p;
	}
	return NULL;
}

/*
 * Skip an RFC 5321 source route ("@a,@b:") at the start of the path; it is
 * accepted for compatibility and dropped (4.1.1.3, Appendix C). Returns the
 * mailbox, or NULL if the route is malformed.
 */
static char *
skip_route(char *s, char *end, int utf8)
{
	char *p = s;

	if (*p != '@')
		return s;
	for (;;) {
		char *d = ++p;

		while (p < end && *p != ',' && *p != ':')
			p++;
		if (p == end || !domain_valid(d, (size_t)(p - d), utf8))
			return NULL;
		if (*p == ':')
			return p + 1;
		if (*++p != '@')
			return NULL;
	}
}

/*
 * Split "FROM:<path> params" (after the prefix) into the path's content and
 * the parameter text. Both are NUL-terminated in place.
 */
static enum smtpd_perr
split_path(char *arg, const char *prefix, char **path, size_t *len,
    char **params)
{
	size_t plen = strlen(prefix);
	char *lt, *gt;

	if (!sl_strncaseeq(arg, prefix, plen))
		return SMTPD_P_SYNTAX;
	lt = arg + plen;
	/* Many clients write "MAIL FROM: <a@b>" though 4.1.2 has no space. */
	while (*lt == ' ')
		lt++;
	if (*lt != '<' || (gt = path_end(lt)) == NULL)
		return SMTPD_P_SYNTAX;
	if (gt[1] != '\0' && gt[1] != ' ')
		return SMTPD_P_SYNTAX;
	*params = gt + 1;
	*gt = '\0';
	*path = lt + 1;
	*len = (size_t)(gt - lt - 1);
	return SMTPD_P_OK;
}

/*
 * Next parameter "KEY[=VALUE]" from *cur, NUL-terminated in place; *value
 * is NULL without '='. Returns the key, or NULL at the end of the list.
 */
static char *
next_param(char **cur, char **value)
{
	char *p = *cur, *key, *eq;

	while (*p == ' ')
		p++;
	if (*p == '\0')
		return NULL;
	key = p;
	while (*p != '\0' && *p != ' ')
		p++;
	if (*p == ' ')
		*p++ = '\0';
	*cur = p;
	eq = strchr(key, '=');
	*value = NULL;
	if (eq != NULL) {
		*eq = '\0';
		*value = eq + 1;
	}
	return key;
}

/* RFC 5321 4.1.2 esmtp-keyword: (ALPHA / DIGIT) *(ALPHA / DIGIT / "-"). */
static int
keyword_valid(const char *k)
{
	if (!is_alnum((unsigned char)*k))
		return 0;
	for (k++; *k != '\0'; k++)
		if (!is_alnum((unsigned char)*k) && *k != '-')
			return 0;
	return 1;
}

/* RFC 3461 4: xtext, printable ASCII but '+' and '=', and "+" 2HEXDIG. */
static int
xtext_valid(const char *s, size_t max)
{
	size_t n = 0;

	for (; *s != '\0'; s++, n++) {
		unsigned char c = (unsigned char)*s;

		if (c == '+') {
			if (sl_hexval((unsigned char)s[1]) < 0 ||
			    sl_hexval((unsigned char)s[2]) < 0)
				return 0;
			s += 2, n += 2;
		} else if (c < 33 || c > 126 || c == '=') {
			return 0;
		}
	}
	return n > 0 && n <= max;
}

/*
 * RFC 6533 3 utf-8-addr-xtext / utf-8-addr-unitext, leniently: printable
 * ASCII but '=', "\x{HEX}" escapes, xtext's "+XX", and UTF-8 only in an
 * SMTPUTF8 transaction.
 */
static int
utf8_xtext_valid(const char *s, int smtputf8)
{
	const char *start = s;

	if (*s == '\0')
		return 0;
	if (!sl_utf8_valid(s, strlen(s)))
		return 0;
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if (c >= 0x80) {
			if (!smtputf8)
				return 0;
		} else if (c == '\\') {
			size_t k = 0;

			if (s[1] != 'x' || s[2] != '{')
				return 0;
			for (s += 3; sl_hexval((unsigned char)*s) >= 0; s++)
				k++;
			if (k == 0 || k > 6 || *s != '}')
				return 0;
		} else if (c == '+') {
			if (sl_hexval((unsigned char)s[1]) < 0 ||
			    sl_hexval((unsigned char)s[2]) < 0)
				return 0;
			s += 2;
		} else if (c < 33 || c > 126 || c == '=') {
			return 0;
		}
	}
	return (size_t)(s - start) <= ORCPT_MAX;
}

static int
size_parse(const char *s, uint64_t *out)
{
	uint64_t v = 0;

	if (*s == '\0')
		return 0;
	for (; *s != '\0'; s++) {
		if (!is_digit((unsigned char)*s))
			return 0;
		if (v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
			return 0;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*out = v;
	return 1;
}

enum { SEEN_SIZE = 1, SEEN_BODY = 2, SEEN_UTF8 = 4, SEEN_RET = 8,
	SEEN_ENVID = 16, SEEN_NOTIFY = 32, SEEN_ORCPT = 64, SEEN_AUTH = 128 };

/* Mark param bit as seen; 0 if it already was (RFC 1870 etc.: once only). */
static int
once(int *seen, int bit)
{
	if (*seen & bit)
		return 0;
	*seen |= bit;
	return 1;
}

static enum smtpd_perr
mail_param(struct smtpd_mail_args *out, int *seen, const char *k,
    char *v)
{
	if (sl_strcaseeq(k, "SIZE")) {
		if (!once(seen, SEEN_SIZE) || v == NULL ||
		    !size_parse(v, &out->size))
			return SMTPD_P_BADPARAM;
	} else if (sl_strcaseeq(k, "BODY")) {
		if (!once(seen, SEEN_BODY) || v == NULL)
			return SMTPD_P_BADPARAM;
		if (sl_strcaseeq(v, "7BIT"))
			out->body = SMTPD_BODY_7BIT;
		else if (sl_strcaseeq(v, "8BITMIME"))
			out->body = SMTPD_BODY_8BITMIME;
		else if (sl_strcaseeq(v, "BINARYMIME"))
			out->body = SMTPD_BODY_BINARYMIME;
		else
			return SMTPD_P_BADPARAM;
	} else if (sl_strcaseeq(k, "SMTPUTF8")) {
		if (!once(seen, SEEN_UTF8) || v != NULL)
			return SMTPD_P_BADPARAM;
		out->smtputf8 = 1;
	} else if (sl_strcaseeq(k, "RET")) {
		if (!once(seen, SEEN_RET) || v == NULL)
			return SMTPD_P_BADPARAM;
		if (sl_strcaseeq(v, "FULL"))
			out->ret = SPOOL_RET_FULL;
		else if (sl_strcaseeq(v, "HDRS"))
			out->ret = SPOOL_RET_HDRS;
		else
			return SMTPD_P_BADPARAM;
	} else if (sl_strcaseeq(k, "ENVID")) {
		if (!once(seen, SEEN_ENVID) || v == NULL ||
		    !xtext_valid(v, ENVID_MAX))
			return SMTPD_P_BADPARAM;
		out->envid = v;
	} else if (sl_strcaseeq(k, "AUTH")) {
		/* RFC 4954 5: accepted and not trusted: the identity of the
		 * submitter is the session's own AUTH, never what this says */
		if (!once(seen, SEEN_AUTH) || v == NULL ||
		    (strcmp(v, "<>") != 0 && !xtext_valid(v, 500)))
			return SMTPD_P_BADPARAM;
	} else {
		return SMTPD_P_UNKPARAM;
	}
	return SMTPD_P_OK;
}

/* RFC 3461 4.1: NEVER alone, or a list of SUCCESS, FAILURE, DELAY. */
static int
notify_parse(char *v)
{
	int bits = 0;

	if (sl_strcaseeq(v, "NEVER"))
		return SPOOL_NOTIFY_NEVER;
	for (;;) {
		size_t n = strcspn(v, ",");

		if (n == 7 && sl_strncaseeq(v, "SUCCESS", 7))
			bits |= SPOOL_NOTIFY_SUCCESS;
		else if (n == 7 && sl_strncaseeq(v, "FAILURE", 7))
			bits |= SPOOL_NOTIFY_FAILURE;
		else if (n == 5 && sl_strncaseeq(v, "DELAY", 5))
			bits |= SPOOL_NOTIFY_DELAY;
		else
			return 0;
		if (v[n] == '\0')
			return bits;
		v += n + 1;
	}
}

/* RFC 3461 4.2: ORCPT=addr-type;xtext, addr-type an atom. */
static int
orcpt_valid(char *v, int smtputf8)
{
	char *semi = strchr(v, ';');

	if (semi == NULL || semi == v)
		return 0;
	for (char *p = v; p < semi; p++)
		if (!is_atext((unsigned char)*p))
			return 0;
	if ((size_t)(semi - v) == 5 && sl_strncaseeq(v, "utf-8", 5))
		return utf8_xtext_valid(semi + 1, smtputf8);
	return xtext_valid(semi + 1, ORCPT_MAX);
}

static enum smtpd_perr
rcpt_param(struct smtpd_rcpt_args *out, int *seen, int smtputf8,
    const char *k, char *v)
{
	if (sl_strcaseeq(k, "NOTIFY")) {
		if (!once(seen, SEEN_NOTIFY) || v == NULL ||
		    (out->notify = notify_parse(v)) == 0)
			return SMTPD_P_BADPARAM;
	} else if (sl_strcaseeq(k, "ORCPT")) {
		if (!once(seen, SEEN_ORCPT) || v == NULL ||
		    !orcpt_valid(v, smtputf8))
			return SMTPD_P_BADPARAM;
		out->orcpt = v;
	} else {
		return SMTPD_P_UNKPARAM;
	}
	return SMTPD_P_OK;
}

/*
 * Check the path content (route and mailbox, without <>) and set *addr to
 * the mailbox. Returns OK, bad (the caller's address error), or NEEDUTF8.
 */
static enum smtpd_perr
check_mailbox(char *path, size_t len, int utf8, enum smtpd_perr bad,
    char **addr)
{
	char *end = path + len;
	char *mb;

	if (len + 2 > PATH_MAX_LEN)
		return bad;
	mb = skip_route(path, end, 1);
	if (mb == NULL || !smtpd_addr_valid(mb, (size_t)(end - mb), 1))
		return bad;
	if (!utf8 && has_8bit(path, len))
		return SMTPD_P_NEEDUTF8;
	*addr = mb;
	return SMTPD_P_OK;
}

enum smtpd_perr
smtpd_parse_mail(char *arg, struct smtpd_mail_args *out)
{
	char *path, *params, *key, *value;
	size_t len;
	int seen = 0;
	enum smtpd_perr e;

	memset(out, 0, sizeof(*out));
	if ((e = split_path(arg, "FROM:", &path, &len, &params)) != SMTPD_P_OK)
		return e;
	while ((key = next_param(&params, &value)) != NULL) {
		if (!keyword_valid(key))
			return SMTPD_P_SYNTAX;
		if ((e = mail_param(out, &seen, key, value)) != SMTPD_P_OK)
			return e;
	}
	/* RFC 5321 4.5.5: the null reverse path, used by bounces. */
	if (len == 0) {
		out->addr = path;
		return SMTPD_P_OK;
	}
	return check_mailbox(path, len, out->smtputf8, SMTPD_P_BADSENDER,
	    &out->addr);
}

enum smtpd_perr
smtpd_parse_rcpt(char *arg, int smtputf8, struct smtpd_rcpt_args *out)
{
	char *path, *params, *key, *value;
	size_t len;
	int seen = 0;
	enum smtpd_perr e;

	memset(out, 0, sizeof(*out));
	if ((e = split_path(arg, "TO:", &path, &len, &params)) != SMTPD_P_OK)
		return e;
	while ((key = next_param(&params, &value)) != NULL) {
		if (!keyword_valid(key))
			return SMTPD_P_SYNTAX;
		e = rcpt_param(out, &seen, smtputf8, key, value);
		if (e != SMTPD_P_OK)
			return e;
	}
	/* RFC 5321 4.1.1.3: "<Postmaster>" needs no domain. */
	if (len == 10 && sl_strncaseeq(path, "Postmaster", 10)) {
		out->addr = path;
		return SMTPD_P_OK;
	}
	return check_mailbox(path, len, smtputf8, SMTPD_P_BADADDR, &out->addr);
}

enum smtpd_perr
smtpd_parse_bdat(const char *arg, uint64_t *size, int *last)
{
	uint64_t v = 0;
	const char *p = arg;

	/* RFC 3030 2: bdat-cmd = "BDAT" SP chunk-size [ SP end-marker ]. */
	if (!is_digit((unsigned char)*p))
		return SMTPD_P_SYNTAX;
	for (; is_digit((unsigned char)*p); p++) {
		if (v > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
			return SMTPD_P_SYNTAX;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	if (*p == '\0') {
		*last = 0;
	} else if (sl_strcaseeq(p, " LAST")) {
		*last = 1;
	} else {
		return SMTPD_P_SYNTAX;
	}
	*size = v;
	return SMTPD_P_OK;
}

int
smtpd_helo_valid(const char *arg)
{
	size_t n = strlen(arg);

	if (n > 0 && arg[0] == '[')
		return addr_literal_valid(arg, n);
	return domain_labels_valid(arg, n, 1, 1);
}
