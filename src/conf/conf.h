/* SPDX-License-Identifier: MIT */
/*
 * conf.h: the configuration, one INI file (inih) read into struct sl_conf.
 *
 * Every setting is one row of settings.def; every row has a default, so no
 * file at all is a valid configuration. Errors name the file and the line:
 * "sluice.ini:14: [server] max_recipients: 0 is below the minimum 1".
 * Code receives `const struct sl_conf *`; nothing reads a global.
 */
#ifndef SL_CONF_H
#define SL_CONF_H

#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

/* A network in CIDR notation. */
struct conf_net {
	int family;		/* AF_INET or AF_INET6 */
	uint8_t addr[16];
	int bits;
};

/* A listening address "host:port" or "[v6]:port". */
struct conf_addr {
	struct sockaddr_storage ss;
	socklen_t len;
	char *text;		/* as written */
};

/*
 * An entry of a free-form section, [routes], [backends] or [mailboxes]:
 * key = value, with the line it came from (0 for -o).
 */
struct conf_kv {
	char *key;
	char *value;
	int line;
};

struct sl_conf {
#define SETTING_STR(f) char *f;
#define SETTING_LIST(f) char *f;
#define SETTING_INT(f) int64_t f;
#define SETTING_SIZE(f) int64_t f;
#define SETTING_DURATION(f) int64_t f;
#define SETTING_BOOL(f) int64_t f;
#define SETTING_MSEC(f) int64_t f;
#define SETTING(sec, key, type, def, min, max, field, reload) SETTING_##type(field)
#include "conf/settings.def"
#undef SETTING
#undef SETTING_STR
#undef SETTING_LIST
#undef SETTING_INT
#undef SETTING_SIZE
#undef SETTING_DURATION
#undef SETTING_BOOL
#undef SETTING_MSEC

	/* Derived from the rows above when the file is loaded. */
	char *path;			/* the file read, or NULL for defaults */
	struct conf_addr *listen;
	size_t nlisten;
	struct conf_addr *sub_listen;		/* [submission] listen */
	size_t nsub_listen;
	struct conf_addr *subs_listen;		/* [submission] tls_listen */
	size_t nsubs_listen;
	struct conf_net *trusted;
	size_t ntrusted;
	int proxy_mode;			/* [server] proxy_protocol: 0 off, 1 v1,
					   2 v2, 3 any (enum smtpd_proxy_mode) */
	struct conf_net *proxy_trusted;	/* [server] proxy_trusted_networks */
	size_t nproxy_trusted;
	char **local_domains;		/* lower-case */
	size_t nlocal_domains;
	char **relay_domains;		/* lower-case */
	size_t nrelay_domains;
	int log_json;
	/* [routes]: domain = hosts, in file order (delivery reads them). */
	struct conf_kv *routes;
	size_t nroutes;
	/* [backends]: name = lmtp:ENDPOINT | smtp:ENDPOINT (checked). */
	struct conf_kv *backends;
	size_t nbackends;
	/* [mailboxes]: address or domain = backend name (lower-case keys;
	 * each names a backend, conf_check). Their domains are local too:
	 * conf_check adds them to local_domains. */
	struct conf_kv *mailboxes;
	size_t nmailboxes;
	int local_lmtp_agent;		/* [local] agent = lmtp */
	int recipient_check;		/* [local] recipient_check: 0 none,
					   1 file, 2 lmtp */
	/* [tls_policy]: domain = none|may|encrypt|verify, checked on load. */
	struct conf_kv *tls_policy;
	size_t ntls_policy;
	int delivery_tls_level;		/* enum conf_tls of [delivery] tls */
};

/* Outbound TLS levels ([delivery] tls, [tls_policy]). */
enum conf_tls {
	CONF_TLS_NONE = 0,	/* never STARTTLS */
	CONF_TLS_MAY,		/* STARTTLS when offered */
	CONF_TLS_ENCRYPT,	/* STARTTLS or defer */
	CONF_TLS_VERIFY,	/* and a certificate for the MX name from a CA */
};

/*
 * Load the defaults, then path (NULL for none) over them. Returns a new
 * configuration, or NULL with "file:line: message" in err.
 * Free with conf_free().
 */
struct sl_conf *conf_load(const char *path, char *err, size_t errlen);
struct sl_conf *conf_free(struct sl_conf *c);
/*
 * The checks that span settings, run once the file and every override are
 * in (sluiced at start, -n and reload): 0, or -1 with the settings named in
 * err ("file: [server] proxy_protocol = v2 needs ...").
 */
int conf_check(struct sl_conf *c, char *err, size_t errlen);
/*
 * Apply "section.key=value" over c, as the file would (sluiced -o).
 * Returns 0, or -1 with "-o SPEC: message" in err.
 */
int conf_override(struct sl_conf *c, const char *spec, char *err,
    size_t errlen);
/*
 * For a reload: settings that are not reloadable (settings.def) keep in nc
 * the value old has; changed() is told of each that differed. Returns how
 * many differed.
 */
int conf_keep_fixed(struct sl_conf *old, struct sl_conf *nc,
    void (*changed)(const char *section, const char *key));
/* Print every setting's effective value in INI form. */
void conf_print(const struct sl_conf *c, FILE *f);

/* 1 if the address (sockaddr) is inside one of the networks. */
int conf_net_match(const struct conf_net *nets, size_t n,
    const struct sockaddr *sa);
/* Parse "10.0.0.0/8" or "::1/128" (no /bits: a host). 0 or -1. */
int conf_net_parse(const char *s, struct conf_net *out);
/* Parse "127.0.0.1:25", "[::1]:25", "*:25" or ":25"; 0 or -1. */
int conf_addr_parse(const char *s, struct conf_addr *out);
/* "none", "may", "encrypt", "verify" as enum conf_tls; -1 for others. */
int conf_tls_level_parse(const char *s);
/*
 * The outbound TLS level for a recipient domain: its [tls_policy] entry,
 * else that of ".parent" entries (the nearest), else "*", else
 * [delivery] tls.
 */
int conf_tls_level_for(const struct sl_conf *c, const char *domain);
/* 1 if domain has an entry of its own in [tls_policy] (not "*"). */
int conf_tls_policy_has(const struct sl_conf *c, const char *domain);
/*
 * An endpoint of a delivery agent: "unix:/absolute/path" or an address
 * literal with a port, "[192.0.2.1]:24", "[2001:db8::1]:24" (no names, no
 * wildcard). 0 with the socket address in ss and its length in len, or -1.
 */
int conf_endpoint_parse(const char *spec, struct sockaddr_storage *ss,
    socklen_t *len);
/* The backend named name in [backends], or NULL. */
const struct conf_kv *conf_backend(const struct sl_conf *c, const char *name);
/* 1 if domain (any case) is in the lower-case list. */
int conf_domain_in(char *const *list, size_t n, const char *domain);

#endif
