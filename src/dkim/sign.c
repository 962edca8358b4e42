/* SPDX-License-Identifier: MIT */
/*
 * sign.c: DKIM keys and signatures (RFC 6376 with RFC 8463), on OpenSSL.
 *
 * Owns struct dkim_keys: the private keys named by [dkim] sign, loaded at
 * start and at each reload (a key that does not load stops the start and
 * fails the reload, which keeps the keys in use).
 *
 * A signature: relaxed/relaxed; h= the fields RFC 6376 5.4.1 recommends
 * that the message has, each instance, and From once more than it has
 * (oversigned, so no From can be added); t= the time of signing; bh= the
 * SHA-256 of the canonical body; b= over the canonical signed fields and
 * the DKIM-Signature field itself with an empty b=. rsa-sha256 signs with
 * RSASSA-PKCS1-v1_5; ed25519-sha256 signs the SHA-256 hash of the same
 * data with PureEdDSA (RFC 8463 3).
 */
#include <sys/stat.h>

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "dkim/dkim.h"
#include "util/util.h"

#define DKIM_MAX_FIELDS 1000

/* RFC 6376 5.4.1, the fields a signature should cover. */
static const char *const dkim_sign_names[] = {
	"From", "Reply-To", "Subject", "Date", "To", "Cc", "Resent-Date",
	"Resent-From", "Resent-To", "Resent-Cc", "In-Reply-To", "References",
	"List-Id", "List-Help", "List-Unsubscribe", "List-Subscribe",
	"List-Post", "List-Owner", "List-Archive", "Message-ID",
	"MIME-Version", "Content-Type", "Content-Transfer-Encoding",
};

static int
dkim_label_ok(const char *s, int dots)
{
	if (*s == '\0' || strlen(s) > 253)
		return 0;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_' &&
		    !(dots && *s == '.'))
			return 0;
	return 1;
}

int
dkim_spec_parse(const char *spec, char **domain, char **selector, char **path,
    char *err, size_t errlen)
{
	const char *c1 = strchr(spec, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
	char *d, *s;

	if (c1 == NULL || c2 == NULL || c2[1] == '\0') {
		snprintf(err, errlen, "'%s' is not domain:selector:keyfile", spec);
		return -1;
	}
	d = xstrndup(spec, (size_t)(c1 - spec));
	s = xstrndup(c1 + 1, (size_t)(c2 - c1 - 1));
	for (char *p = d; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	if (!dkim_label_ok(d, 1) || d[0] == '.' || strstr(d, "..") != NULL) {
		snprintf(err, errlen, "'%s' is not a domain", d);
		goto fail;
	}
	/* a selector is labels too: "s2026" or "mail.2026" */
	if (!dkim_label_ok(s, 1) || s[0] == '.') {
		snprintf(err, errlen, "'%s' is not a selector", s);
		goto fail;
	}
	*domain = d;
	*selector = s;
	*path = xstrdup(c2 + 1);
	return 0;
fail:
	free(d);
	free(s);
	return -1;
}

/* Read one private key file; NULL with why in err. */
static EVP_PKEY *
dkim_key_read(const char *path, enum dkim_alg *alg, char *err, size_t errlen)
{
	struct stat st;
	EVP_PKEY *pk;
	FILE *f;

	if ((f = fopen(path, "r")) == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	if (fstat(fileno(f), &st) == 0 && (st.st_mode & S_IROTH)) {
		snprintf(err, errlen, "%s: other users may read it (chmod o-r)",
		    path);
		fclose(f);
		return NULL;
	}
	pk = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	ERR_clear_error();
	if (pk == NULL) {
		snprintf(err, errlen, "%s: not a PEM private key", path);
		return NULL;
	}
	if (EVP_PKEY_get_base_id(pk) == EVP_PKEY_ED25519) {
		*alg = DKIM_ED25519_SHA256;
	} else if (EVP_PKEY_get_base_id(pk) == EVP_PKEY_RSA &&
	    EVP_PKEY_get_bits(pk) >= 1024) {
		*alg = DKIM_RSA_SHA256;
	} else {
		snprintf(err, errlen, "%s: not an RSA key of 1024 bits or more, "
		    "nor an Ed25519 key", path);
		EVP_PKEY_free(pk);
		return NULL;
	}
	return pk;
}

struct dkim_keys *
dkim_keys_ref(struct dkim_keys *k)
{
	k->refs++;
	return k;
}

struct dkim_keys *
dkim_keys_free(struct dkim_keys *k)
{
	if (k == NULL || --k->refs > 0)
		return NULL;
	for (size_t i = 0; i < k->n; i++) {
		free(k->v[i].domain);
		free(k->v[i].selector);
		free(k->v[i].path);
		EVP_PKEY_free(k->v[i].pkey);
	}
	free(k->v);
	free(k);
	return NULL;
}

struct dkim_keys *
dkim_keys_load(const char *list, char *err, size_t errlen)
{
	struct dkim_keys *k = xcalloc(1, sizeof(*k));
	char *copy = xstrdup(list), *save = NULL, *tok;

	k->refs = 1;
	char why[512];

	for (tok = strtok_r(copy, ",", &save); tok != NULL;
	    tok = strtok_r(NULL, ",", &save)) {
		struct dkim_key key = { 0 };

		tok = sl_strtrim(tok);
		if (*tok == '\0')
			continue;
		if (dkim_spec_parse(tok, &key.domain, &key.selector, &key.path,
		    why, sizeof(why)) != 0) {
			snprintf(err, errlen, "[dkim] sign: %s", why);
			goto fail;
		}
		k->v = xrealloc(k->v, (k->n + 1) * sizeof(*k->v));
		k->v[k->n++] = key;
		key.pkey = dkim_key_read(key.path, &key.alg, why, sizeof(why));
		k->v[k->n - 1] = key;
		if (key.pkey == NULL) {
			snprintf(err, errlen, "[dkim] sign %s:%s: %s", key.domain,
			    key.selector, why);
			goto fail;
		}
	}
	free(copy);
	return k;
fail:
	free(copy);
	return dkim_keys_free(k);
}

const struct dkim_key *
dkim_key_for(const struct dkim_keys *k, const char *domain)
{
	for (const char *d = domain; k != NULL && d != NULL && *d != '\0';) {
		for (size_t i = 0; i < k->n; i++)
			if (sl_strcaseeq(k->v[i].domain, d))
				return &k->v[i];
		d = strchr(d, '.');
		if (d != NULL)
			d++;
	}
	return NULL;
}

static void
dkim_b64(const unsigned char *p, size_t n, char *out)
{
	EVP_EncodeBlock((unsigned char *)out, p, (int)n);
}

static void
dkim_hash_emit(void *arg, const char *p, size_t n)
{
	EVP_DigestUpdate(arg, p, n);
}

/* bh=: SHA-256 of the relaxed body from off on. */
static int
dkim_body_hash(struct evbuffer *msg, size_t off, unsigned char *md)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	struct evbuffer_ptr ptr;
	struct evbuffer_iovec v[16];
	struct dkim_body b;
	size_t len = evbuffer_get_length(msg);
	int n;

	if (ctx == NULL || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
		EVP_MD_CTX_free(ctx);
		return -1;
	}
	dkim_body_init(&b, dkim_hash_emit, ctx);
	while (off < len) {
		evbuffer_ptr_set(msg, &ptr, off, EVBUFFER_PTR_SET);
		n = evbuffer_peek(msg, -1, &ptr, v, 16);
		for (int i = 0; i < n && i < 16; i++) {
			dkim_body_feed(&b, v[i].iov_base, v[i].iov_len);
			off += v[i].iov_len;
		}
	}
	dkim_body_end(&b);
	n = EVP_DigestFinal_ex(ctx, md, NULL);
	EVP_MD_CTX_free(ctx);
	return n ? 0 : -1;
}

static int
dkim_name_is(const struct dkim_field *f, const char *name)
{
	return f->namelen == strlen(name) &&
	    sl_strncaseeq(f->name, name, f->namelen);
}

/* 1 if a DKIM-Signature field already names key's d= and s=. */
static int
dkim_signed_by(const struct dkim_field *f, size_t nf, const struct dkim_key *k)
{
	for (size_t i = 0; i < nf; i++) {
		char canon[2048], d[300], s[300];
		const char *p;
		size_t n;

		if (!dkim_name_is(&f[i], "DKIM-Signature"))
			continue;
		n = dkim_canon_header(f[i].raw, f[i].rawlen, 0, canon,
		    sizeof(canon) - 1);
		if (n >= sizeof(canon) - 1)
			continue;
		canon[n] = '\0';
		snprintf(d, sizeof(d), "d=%s;", k->domain);
		snprintf(s, sizeof(s), "s=%s;", k->selector);
		/* tags start after "dkim-signature:" or "; " */
		p = canon + strlen("dkim-signature:");
		if ((strstr(p, d) != NULL) && strstr(p, s) != NULL)
			return 1;
	}
	return 0;
}

/* Add the canonical field of the next unused instance of name (bottom up). */
static int
dkim_hash_field(EVP_MD_CTX *ctx, const struct dkim_field *f, size_t nf,
    uint8_t *used, const char *name)
{
	for (size_t i = nf; i-- > 0;) {
		size_t n;
		char *c;

		if (used[i] || !dkim_name_is(&f[i], name))
			continue;
		used[i] = 1;
		n = dkim_canon_header(f[i].raw, f[i].rawlen, 1, NULL, 0);
		c = xmalloc(n);
		dkim_canon_header(f[i].raw, f[i].rawlen, 1, c, n);
		EVP_DigestUpdate(ctx, c, n);
		free(c);
		return 1;
	}
	return 0;
}

/* The signature of the hashed data: RSA over the digest, Ed25519 of it. */
static int
dkim_sig(const struct dkim_key *k, const unsigned char *md, char *out,
    size_t cap)
{
	unsigned char sig[1024];
	size_t siglen = sizeof(sig);
	int ok = 0;

	if (k->alg == DKIM_ED25519_SHA256) {
		EVP_MD_CTX *ctx = EVP_MD_CTX_new();
		ok = ctx != NULL &&
		    EVP_DigestSignInit(ctx, NULL, NULL, NULL, k->pkey) == 1 &&
		    EVP_DigestSign(ctx, sig, &siglen, md, 32) == 1;
		EVP_MD_CTX_free(ctx);
	} else {
		EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new(k->pkey, NULL);
		ok = pc != NULL && EVP_PKEY_sign_init(pc) == 1 &&
		    EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PADDING) == 1 &&
		    EVP_PKEY_CTX_set_signature_md(pc, EVP_sha256()) == 1 &&
		    EVP_PKEY_sign(pc, sig, &siglen, md, 32) == 1;
		EVP_PKEY_CTX_free(pc);
	}
	if (!ok || 4 * ((siglen + 2) / 3) + 1 > cap) {
		ERR_clear_error();
		return -1;
	}
	dkim_b64(sig, siglen, out);
	return 0;
}

/* "h=from:to:...": every instance present, From once more. */
static void
dkim_h_list(const struct dkim_field *f, size_t nf, struct evbuffer *h,
    const char **names, size_t *nnames, size_t max)
{
	*nnames = 0;
	for (size_t k = 0; k < SL_ARRAY_LEN(dkim_sign_names); k++) {
		size_t count = 0;
		for (size_t i = 0; i < nf; i++)
			count += dkim_name_is(&f[i], dkim_sign_names[k]);
		if (k == 0)
			count++;	/* oversign From */
		for (size_t j = 0; j < count && *nnames < max; j++) {
			names[(*nnames)++] = dkim_sign_names[k];
			evbuffer_add_printf(h, "%s%s", *nnames > 1 ? ":" : "",
			    dkim_sign_names[k]);
		}
	}
}

/* Fold "h=..." at colons so no line passes about 78 columns. */
static char *
dkim_fold_h(struct evbuffer *h)
{
	size_t n = evbuffer_get_length(h), col = 4;
	char *flat = xstrndup((char *)evbuffer_pullup(h, -1), n);
	struct evbuffer *out = evbuffer_new();
	char *tok, *save = NULL, *r;
	int first = 1;

	for (tok = strtok_r(flat, ":", &save); tok != NULL;
	    tok = strtok_r(NULL, ":", &save)) {
		size_t t = strlen(tok) + 1;
		if (!first && col + t > 76) {
			evbuffer_add(out, "\r\n\t ", 4);
			col = 2;
		}
		evbuffer_add_printf(out, "%s%s", first ? "" : ":", tok);
		col += t;
		first = 0;
	}
	n = evbuffer_get_length(out);
	r = xstrndup((char *)evbuffer_pullup(out, -1), n);
	evbuffer_free(out);
	free(flat);
	return r;
}

enum dkim_status
dkim_sign(const struct dkim_keys *keys, struct evbuffer *msg, int64_t now,
    char **field, const struct dkim_key **keyp, char *why, size_t whylen)
{
	struct evbuffer_ptr eoh;
	struct dkim_field *f = NULL;
	const struct dkim_key *k = NULL;
	const char *names[DKIM_MAX_FIELDS + 1];
	unsigned char bh[32], md[32];
	char bh64[64], from[256], sig[2048], *hdr, *hfold = NULL, *head = NULL;
	size_t hlen, nf, nnames, body;
	struct evbuffer *h = NULL;
	EVP_MD_CTX *ctx = NULL;
	uint8_t *used = NULL;
	enum dkim_status st = DKIM_NOKEY;

	/* the header ends at the first empty line (or the message does) */
	eoh = evbuffer_search(msg, "\r\n\r\n", 4, NULL);
	hlen = eoh.pos < 0 ? evbuffer_get_length(msg) : (size_t)eoh.pos + 2;
	body = eoh.pos < 0 ? hlen : hlen + 2;
	hdr = (char *)evbuffer_pullup(msg, (ev_ssize_t)hlen);
	f = xcalloc(DKIM_MAX_FIELDS, sizeof(*f));
	nf = dkim_fields(hdr, hlen, f, DKIM_MAX_FIELDS);
	for (size_t i = 0; i < nf && k == NULL; i++) {
		if (!dkim_name_is(&f[i], "From"))
			continue;
		if (dkim_from_domain(f[i].raw, f[i].rawlen, from,
		    sizeof(from)) != 0)
			break;
		k = dkim_key_for(keys, from);
	}
	if (k == NULL)
		goto out;
	if (dkim_signed_by(f, nf, k)) {
		st = DKIM_ALREADY;
		goto out;
	}
	st = DKIM_ERROR;
	snprintf(why, whylen, "OpenSSL failed");
	if (dkim_body_hash(msg, body, bh) != 0)
		goto out;
	dkim_b64(bh, sizeof(bh), bh64);
	h = evbuffer_new();
	dkim_h_list(f, nf, h, names, &nnames, DKIM_MAX_FIELDS);
	hfold = dkim_fold_h(h);
	head = xasprintf("DKIM-Signature: v=1; a=%s; c=relaxed/relaxed;\r\n"
	    "\td=%s; s=%s; t=%lld;\r\n\th=%s;\r\n\tbh=%s;\r\n\tb=",
	    k->alg == DKIM_ED25519_SHA256 ? "ed25519-sha256" : "rsa-sha256",
	    k->domain, k->selector, (long long)now, hfold, bh64);
	/* the signed fields, bottom-up per name, then ours with b= empty */
	used = xcalloc(nf ? nf : 1, 1);
	ctx = EVP_MD_CTX_new();
	if (ctx == NULL || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL))
		goto out;
	for (size_t i = 0; i < nnames; i++)
		dkim_hash_field(ctx, f, nf, used, names[i]);
	{
		size_t n = dkim_canon_header(head, strlen(head), 0, NULL, 0);
		char *c = xmalloc(n);
		dkim_canon_header(head, strlen(head), 0, c, n);
		EVP_DigestUpdate(ctx, c, n);
		free(c);
	}
	if (!EVP_DigestFinal_ex(ctx, md, NULL) ||
	    dkim_sig(k, md, sig, sizeof(sig)) != 0)
		goto out;
	*field = xasprintf("%s%s\r\n", head, sig);
	*keyp = k;
	st = DKIM_SIGNED;
out:
	EVP_MD_CTX_free(ctx);
	if (h != NULL)
		evbuffer_free(h);
	free(hfold);
	free(head);
	free(used);
	free(f);
	return st;
}

char *
dkim_txt_record(EVP_PKEY *pkey)
{
	unsigned char raw[64], *der = NULL;
	size_t rawlen = sizeof(raw);
	char *b64, *r = NULL;
	int n;

	if (EVP_PKEY_get_base_id(pkey) == EVP_PKEY_ED25519) {
		/* RFC 8463 4: the raw 32-byte public key */
		if (EVP_PKEY_get_raw_public_key(pkey, raw, &rawlen) != 1)
			return NULL;
		b64 = xmalloc(4 * ((rawlen + 2) / 3) + 1);
		dkim_b64(raw, rawlen, b64);
		r = xasprintf("v=DKIM1; k=ed25519; p=%s", b64);
		free(b64);
		return r;
	}
	/* RFC 6376 3.6.1: the DER SubjectPublicKeyInfo */
	if ((n = i2d_PUBKEY(pkey, &der)) <= 0)
		return NULL;
	b64 = xmalloc(4 * (((size_t)n + 2) / 3) + 1);
	dkim_b64(der, (size_t)n, b64);
	r = xasprintf("v=DKIM1; k=rsa; p=%s", b64);
	free(b64);
	OPENSSL_free(der);
	return r;
}
