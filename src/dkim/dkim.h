/* SPDX-License-Identifier: MIT */
/*
 * dkim.h: DKIM signing (RFC 6376) with OpenSSL: relaxed/relaxed
 * canonicalisation, rsa-sha256 and ed25519-sha256 (RFC 8463).
 *
 * canon.c is pure (bytes in, canonical bytes out, fuzzed); sign.c owns the
 * keys ([dkim] sign = domain:selector:keyfile) and makes the
 * DKIM-Signature field of a message. Nothing here knows about sessions:
 * sluiced signs a message after it was accepted and before the spool
 * writes it (so before the 250).
 */
#ifndef SL_DKIM_H
#define SL_DKIM_H

#include <stddef.h>
#include <stdint.h>

struct evbuffer;
struct evp_pkey_st;

/* ---- canon.c ---- */

/* One header field of a message: name and the whole field, line ends included. */
struct dkim_field {
	const char *name;	/* points into the header */
	size_t namelen;
	const char *raw;	/* "Name: value\r\n\tmore\r\n" */
	size_t rawlen;
};

/*
 * Split the header block hdr (len bytes, up to but not including the
 * empty line) into fields, at most max. Lines end in LF or CRLF; a line
 * starting with SP or TAB continues the field before it; a line without
 * a colon is skipped. Returns the number of fields.
 */
size_t dkim_fields(const char *hdr, size_t len, struct dkim_field *out,
    size_t max);
/*
 * Relaxed header canonicalisation (RFC 6376 3.4.2) of one field:
 * "name:value\r\n" with the name in lower case, unfolded, runs of white
 * space one SP, none around the colon or at the end. crlf 0 leaves the
 * final CRLF off (the DKIM-Signature field itself). Appends to out
 * (cap bytes); returns the length it needs (call with cap 0 to measure).
 */
size_t dkim_canon_header(const char *raw, size_t len, int crlf, char *out,
    size_t cap);

/* Relaxed body canonicalisation (RFC 6376 3.4.4), streamed. */
struct dkim_body {
	void (*emit)(void *arg, const char *p, size_t n);
	void *arg;
	uint64_t crlfs;		/* line ends not yet emitted */
	int wsp;		/* white space seen since the last byte out */
	int cr;			/* the last byte was a CR */
	int content;		/* anything emitted at all */
	char buf[512];		/* output waiting for emit */
	size_t nbuf;
};
void dkim_body_init(struct dkim_body *b,
    void (*emit)(void *arg, const char *p, size_t n), void *arg);
void dkim_body_feed(struct dkim_body *b, const char *p, size_t n);
void dkim_body_end(struct dkim_body *b);

/*
 * The domain of the first address of a From: field's value (raw field
 * given), lower-case, into out; 0, or -1 if there is none.
 */
int dkim_from_domain(const char *raw, size_t len, char *out, size_t cap);

/* ---- sign.c ---- */

enum dkim_alg { DKIM_RSA_SHA256, DKIM_ED25519_SHA256 };

struct dkim_key {
	char *domain;		/* lower-case */
	char *selector;
	char *path;
	enum dkim_alg alg;
	struct evp_pkey_st *pkey;
};

struct dkim_keys {
	struct dkim_key *v;
	size_t n;
	int refs;		/* dkim_keys_free drops one; 1 when loaded */
};

/*
 * Parse one "domain:selector:keyfile" (pure). Fills the three parts
 * (new strings) or returns -1 with why in err.
 */
int dkim_spec_parse(const char *spec, char **domain, char **selector,
    char **path, char *err, size_t errlen);
/*
 * Load every key of a [dkim] sign list (comma-separated specs). Returns
 * a new set (free with dkim_keys_free), or NULL with the key and the
 * reason in err: a file that does not open, is readable by other users,
 * or holds no RSA key of 1024 bits or more nor an Ed25519 key.
 */
struct dkim_keys *dkim_keys_load(const char *list, char *err, size_t errlen);
struct dkim_keys *dkim_keys_free(struct dkim_keys *k);
/* One more holder of k (a signature in progress); free drops it. */
struct dkim_keys *dkim_keys_ref(struct dkim_keys *k);
/* The key for domain or its nearest parent domain, or NULL. */
const struct dkim_key *dkim_key_for(const struct dkim_keys *k,
    const char *domain);

enum dkim_status {
	DKIM_SIGNED = 0,
	DKIM_NOKEY,		/* no From:, or no key for its domain */
	DKIM_ALREADY,		/* the message carries our signature */
	DKIM_ERROR,		/* OpenSSL failed; why in the reason */
};

/*
 * Sign msg (the message as stored: header, empty line, body; CRLF line
 * ends) with the key of its From: domain at time now. On DKIM_SIGNED
 * *field is a new "DKIM-Signature: ...\r\n" (free()) and *key the key
 * used. msg is linearised up to its header's end; nothing else changes.
 * Thread-safe for different messages with the same keys (sluiced signs
 * on worker threads).
 */
enum dkim_status dkim_sign(const struct dkim_keys *keys, struct evbuffer *msg,
    int64_t now, char **field, const struct dkim_key **key, char *why,
    size_t whylen);

/*
 * The TXT record to publish for key: "v=DKIM1; k=rsa; p=..." (new
 * string), or NULL.
 */
char *dkim_txt_record(struct evp_pkey_st *pkey);

#endif
