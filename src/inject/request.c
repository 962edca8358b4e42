/* SPDX-License-Identifier: MIT */
/*
 * request.c: parse and check an injection request (inject.h).
 *
 * The top-level object is walked by hand and each value parsed by jansson
 * (JSON_DISABLE_EOF_CHECK tells how many bytes it used); the recipients
 * array is walked the same way one element at a time, and each element is
 * reduced to its address and compact vars at once, so 100 000 recipients
 * cost their compact list, never a JSON tree of all of them.
 *
 * What is the client's fault, and how it is answered:
 *  - the request as a whole (not JSON, a missing or unknown field, a bad
 *    template, from, headers, attachments): -1 and a reason, a 400;
 *  - one recipient (bad address, bad vars, not an object): rejected with
 *    its index and reason; the others go on.
 * Pure: no I/O; the templates are compiled here only to check them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inject/inject.h"
#include "inject/inject_int.h"
#include "inject/template.h"
#include "smtpd/parse.h"
#include "util/util.h"

#define REQ_JSON_FLAGS (JSON_DECODE_ANY | JSON_DISABLE_EOF_CHECK | \
	JSON_REJECT_DUPLICATES)
#define REQ_METADATA_MAX 65536
#define REQ_HEADERS_MAX 100

struct req_parse {
	const char *s;
	size_t len, pos;
	const struct inject_limits *lim;
	struct inject_req *r;
	size_t nseen;		/* recipient entries seen */
	char *err;
	size_t errlen;
};

static int
req_fail(struct req_parse *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int
req_fail(struct req_parse *p, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(p->err, p->errlen, fmt, ap);
	va_end(ap);
	return -1;
}

static void
req_ws(struct req_parse *p)
{
	while (p->pos < p->len && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t'
	    || p->s[p->pos] == '\n' || p->s[p->pos] == '\r'))
		p->pos++;
}

/* Parse one JSON value at p->pos; NULL with the reason in err. */
static json_t *
req_value(struct req_parse *p, const char *what)
{
	json_error_t e;
	json_t *v;

	req_ws(p);
	v = json_loadb(p->s + p->pos, p->len - p->pos, REQ_JSON_FLAGS, &e);
	if (v == NULL) {
		req_fail(p, "%s: not valid JSON at byte %zu: %s", what,
		    p->pos + (size_t)(e.position > 0 ? e.position : 0), e.text);
		return NULL;
	}
	p->pos += (size_t)e.position;
	return v;
}

/* Expect c (after white space); -1 with a message if it is not there. */
static int
req_expect(struct req_parse *p, char c, const char *what)
{
	req_ws(p);
	if (p->pos >= p->len || p->s[p->pos] != c)
		return req_fail(p, "%s: expected '%c' at byte %zu", what, c,
		    p->pos);
	p->pos++;
	return 0;
}

/* ---- recipients ---- */

static void
req_reject(struct inject_req *r, size_t index, const char *email,
    const char *reason)
{
	struct inject_reject *x;

	if (r->nrejected == r->rej_cap) {
		r->rej_cap = r->rej_cap ? r->rej_cap * 2 : 16;
		r->rejected = xrealloc(r->rejected, r->rej_cap *
		    sizeof(*r->rejected));
	}
	x = &r->rejected[r->nrejected++];
	x->index = index;
	x->email = email ? xstrdup(email) : NULL;
	x->reason = xstrdup(reason);
}

/* 1 if every value of o is a string, number, boolean or null. */
static int
req_vars_flat(json_t *o, const char **bad)
{
	const char *k;
	json_t *v;

	json_object_foreach(o, k, v) {
		if (json_is_object(v) || json_is_array(v)) {
			*bad = k;
			return 0;
		}
	}
	return 1;
}

static void
req_rcpt_add(struct inject_req *r, const char *email, char *vars,
    size_t index)
{
	if (r->nrcpt == r->rcpt_cap) {
		r->rcpt_cap = r->rcpt_cap ? r->rcpt_cap * 2 : 64;
		r->rcpts = xrealloc(r->rcpts, r->rcpt_cap * sizeof(*r->rcpts));
	}
	r->rcpts[r->nrcpt].email = xstrdup(email);
	r->rcpts[r->nrcpt].vars = vars;
	r->rcpts[r->nrcpt].index = index;
	r->nrcpt++;
}

static int
req_utf8_any(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s >= 0x80)
			return 1;
	return 0;
}

/* Check one element and keep it, or reject it with its reason. */
static void
req_rcpt(struct req_parse *p, json_t *el, size_t index)
{
	json_t *email = json_object_get(el, "email");
	json_t *vars = json_object_get(el, "vars");
	const char *addr, *k, *bad = NULL;
	char why[160];
	char *compact = NULL;
	json_t *v;

	if (!json_is_object(el)) {
		req_reject(p->r, index, NULL, "not an object");
		return;
	}
	addr = json_string_value(email);
	if (addr == NULL) {
		req_reject(p->r, index, NULL, "email: missing or not a string");
		return;
	}
	json_object_foreach(el, k, v) {
		if (strcmp(k, "email") != 0 && strcmp(k, "vars") != 0) {
			snprintf(why, sizeof(why), "unknown field '%.64s'", k);
			req_reject(p->r, index, addr, why);
			return;
		}
	}
	if (json_string_length(email) != strlen(addr) ||
	    !smtpd_addr_valid(addr, strlen(addr), 1)) {
		req_reject(p->r, index, addr, "email: not a valid address");
		return;
	}
	if (vars != NULL && !json_is_null(vars)) {
		if (!json_is_object(vars)) {
			req_reject(p->r, index, addr, "vars: not an object");
			return;
		}
		if (!req_vars_flat(vars, &bad)) {
			snprintf(why, sizeof(why), "vars: '%.64s' is an object "
			    "or array (values are strings, numbers or "
			    "booleans)", bad);
			req_reject(p->r, index, addr, why);
			return;
		}
		if (json_object_size(vars) > 0)
			compact = json_dumps(vars, JSON_COMPACT);
		if (compact != NULL && strlen(compact) > p->lim->max_vars) {
			snprintf(why, sizeof(why), "vars: larger than %zu bytes",
			    p->lim->max_vars);
			free(compact);
			req_reject(p->r, index, addr, why);
			return;
		}
	}
	if (req_utf8_any(addr))
		p->r->smtputf8 = 1;
	req_rcpt_add(p->r, addr, compact, index);
}

static int
req_recipients(struct req_parse *p)
{
	if (req_expect(p, '[', "recipients") != 0)
		return -1;
	req_ws(p);
	if (p->pos < p->len && p->s[p->pos] == ']') {
		p->pos++;
		return 0;
	}
	for (;;) {
		json_t *el;

		if (p->nseen == p->lim->max_recipients)
			return req_fail(p, "recipients: more than %zu",
			    p->lim->max_recipients);
		if ((el = req_value(p, "recipients")) == NULL)
			return -1;
		req_rcpt(p, el, p->nseen++);
		json_decref(el);
		req_ws(p);
		if (p->pos < p->len && p->s[p->pos] == ',') {
			p->pos++;
			continue;
		}
		return req_expect(p, ']', "recipients");
	}
}

/* ---- the other fields ---- */

static const char *const req_fields[] = { "from", "subject", "text", "html",
	"headers", "unsubscribe", "vars", "metadata", "recipients", "raw",
	"attachments", "archive" };

/* Header names the builder writes itself: "headers" may not set them. */
static const char *const req_reserved_headers[] = { "from", "to", "cc",
	"bcc", "subject", "date", "message-id", "mime-version", "received",
	"return-path", "list-unsubscribe", "list-unsubscribe-post", "sender",
	"content-type", "content-transfer-encoding", "content-disposition" };

static int
req_template(struct req_parse *p, const char *what, json_t *v)
{
	struct inject_tpl *t;
	char e[200];

	if (!json_is_string(v))
		return req_fail(p, "%s: not a string", what);
	t = inject_tpl_compile(json_string_value(v), json_string_length(v), e,
	    sizeof(e));
	if (t == NULL)
		return req_fail(p, "%s: %s", what, e);
	inject_tpl_free(t);
	if (json_string_length(v) > p->lim->max_message_size)
		return req_fail(p, "%s: larger than %zu bytes", what,
		    p->lim->max_message_size);
	return 0;
}

/* "addr" or "Name <addr>": sets r->sender. */
static int
req_from(struct req_parse *p, json_t *v)
{
	const char *s = json_string_value(v), *lt, *gt;
	char *addr;

	if (s == NULL || json_string_length(v) != strlen(s))
		return req_fail(p, "from: missing or not a string");
	for (const char *c = s; *c; c++)
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			return req_fail(p, "from: control characters");
	lt = strrchr(s, '<');
	gt = strrchr(s, '>');
	if (lt != NULL) {
		if (gt == NULL || gt < lt || gt[1] != '\0')
			return req_fail(p, "from: write \"addr\" or \"Name "
			    "<addr>\"");
		addr = xstrndup(lt + 1, (size_t)(gt - lt - 1));
	} else {
		addr = xstrdup(s);
	}
	if (!smtpd_addr_valid(addr, strlen(addr), 1)) {
		req_fail(p, "from: '%s' is not a valid address", addr);
		free(addr);
		return -1;
	}
	if (req_utf8_any(addr))
		p->r->smtputf8 = 1;
	p->r->sender = addr;
	return 0;
}

static int
req_header_name_ok(const char *k)
{
	if (*k == '\0' || strlen(k) > 76)
		return 0;
	for (; *k; k++)
		if ((unsigned char)*k <= 32 || (unsigned char)*k >= 127 ||
		    *k == ':')
			return 0;
	return 1;
}

static int
req_headers(struct req_parse *p, json_t *v)
{
	const char *k;
	json_t *hv;
	char what[120];

	if (!json_is_object(v))
		return req_fail(p, "headers: not an object");
	if (json_object_size(v) > REQ_HEADERS_MAX)
		return req_fail(p, "headers: more than %d", REQ_HEADERS_MAX);
	json_object_foreach(v, k, hv) {
		if (!req_header_name_ok(k))
			return req_fail(p, "headers: '%.80s' is not a header "
			    "name", k);
		for (size_t i = 0; i < SL_ARRAY_LEN(req_reserved_headers); i++)
			if (sl_strcaseeq(k, req_reserved_headers[i]))
				return req_fail(p, "headers: %s is set by sluice "
				    "(use the request's own field)", k);
		if (sl_strncaseeq(k, "content-", 8))
			return req_fail(p, "headers: %s is set by sluice", k);
		snprintf(what, sizeof(what), "headers: %s", k);
		if (req_template(p, what, hv) != 0)
			return -1;
	}
	return 0;
}

/* Bytes that standard base64 (white space allowed) decodes to, or -1. */
static long
req_base64_len(const char *s, size_t n)
{
	size_t chars = 0, pad = 0;

	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (c == ' ' || c == '\r' || c == '\n' || c == '\t')
			continue;
		if (c == '=') {
			pad++;
			continue;
		}
		if (pad > 0 || !((c >= 'A' && c <= 'Z') || (c >= 'a' &&
		    c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/'))
			return -1;
		chars++;
	}
	if (pad > 2 || (chars + pad) % 4 != 0)
		return -1;
	return (long)((chars + pad) / 4 * 3 - pad);
}

static int
req_token_ok(const char *s, size_t n)
{
	if (n == 0)
		return 0;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] <= 32 || (unsigned char)s[i] >= 127 ||
		    strchr("()<>@,;:\\\"/[]?=", s[i]) != NULL)
			return 0;
	return 1;
}

static int
req_attachments(struct req_parse *p, json_t *v)
{
	size_t i, total = 0;
	json_t *a;

	if (!json_is_array(v))
		return req_fail(p, "attachments: not an array");
	json_array_foreach(v, i, a) {
		const char *fn = json_string_value(json_object_get(a, "filename"));
		const char *ct = json_string_value(json_object_get(a,
		    "content_type"));
		json_t *b64 = json_object_get(a, "content_base64");
		const char *slash = ct ? strchr(ct, '/') : NULL;
		long n;

		if (!json_is_object(a) || json_object_size(a) != 3)
			return req_fail(p, "attachments[%zu]: give filename, "
			    "content_type and content_base64", i);
		if (fn == NULL || *fn == '\0' || strlen(fn) > 255)
			return req_fail(p, "attachments[%zu]: filename: missing "
			    "or longer than 255", i);
		for (const char *c = fn; *c; c++)
			if ((unsigned char)*c < 0x20 || *c == 0x7f || *c == '/')
				return req_fail(p, "attachments[%zu]: filename: "
				    "control characters or '/'", i);
		if (ct == NULL || slash == NULL ||
		    !req_token_ok(ct, (size_t)(slash - ct)) ||
		    !req_token_ok(slash + 1, strlen(slash + 1)))
			return req_fail(p, "attachments[%zu]: content_type: not "
			    "type/subtype", i);
		if (!json_is_string(b64) || (n = req_base64_len(
		    json_string_value(b64), json_string_length(b64))) < 0)
			return req_fail(p, "attachments[%zu]: content_base64: "
			    "not base64", i);
		total += (size_t)n;
		if (total > p->lim->max_message_size)
			return req_fail(p, "attachments: larger than %zu bytes",
			    p->lim->max_message_size);
	}
	return 0;
}

static int
req_raw(struct req_parse *p, json_t *v)
{
	const char *s = json_string_value(v), *eoh;
	size_t n = json_string_length(v);

	if (s == NULL)
		return req_fail(p, "raw: not a string");
	if (n > p->lim->max_message_size)
		return req_fail(p, "raw: larger than %zu bytes",
		    p->lim->max_message_size);
	/* a header section: "Name: value" first, and an end to it */
	eoh = strstr(s, "\n\n");
	if (eoh == NULL)
		eoh = strstr(s, "\r\n\r\n");
	if (n == 0 || strchr(s, ':') == NULL ||
	    (eoh != NULL && strchr(s, ':') > eoh) || strlen(s) != n)
		return req_fail(p, "raw: not an RFC 5322 message (a header "
		    "section, a blank line, the body)");
	for (const char *c = s; *c != ':'; c++)
		if ((unsigned char)*c <= 32 || (unsigned char)*c >= 127)
			return req_fail(p, "raw: not an RFC 5322 message "
			    "(the first line is not a header field)");
	return 0;
}

/* Everything but recipients, once the whole object is read. */
static int
req_check(struct req_parse *p)
{
	json_t *t = p->r->tpl, *v;
	const char *bad = NULL;
	int raw = json_object_get(t, "raw") != NULL;

	if (req_from(p, json_object_get(t, "from")) != 0)
		return -1;
	if (raw) {
		static const char *const no[] = { "subject", "text", "html",
			"headers", "unsubscribe", "attachments" };
		for (size_t i = 0; i < SL_ARRAY_LEN(no); i++)
			if (json_object_get(t, no[i]) != NULL)
				return req_fail(p, "raw: give either raw or %s, "
				    "not both", no[i]);
		if (req_raw(p, json_object_get(t, "raw")) != 0)
			return -1;
	} else {
		if ((v = json_object_get(t, "subject")) == NULL)
			return req_fail(p, "subject: missing");
		if (req_template(p, "subject", v) != 0)
			return -1;
		if (json_object_get(t, "text") == NULL &&
		    json_object_get(t, "html") == NULL)
			return req_fail(p, "text, html: give one or both "
			    "(or raw)");
		if ((v = json_object_get(t, "text")) != NULL &&
		    req_template(p, "text", v) != 0)
			return -1;
		if ((v = json_object_get(t, "html")) != NULL &&
		    req_template(p, "html", v) != 0)
			return -1;
	}
	if ((v = json_object_get(t, "headers")) != NULL &&
	    req_headers(p, v) != 0)
		return -1;
	if ((v = json_object_get(t, "unsubscribe")) != NULL) {
		if (req_template(p, "unsubscribe", v) != 0)
			return -1;
		/* RFC 8058 3.1: one-click needs an HTTPS URI */
		if (!sl_strncaseeq(json_string_value(v), "https://", 8))
			return req_fail(p, "unsubscribe: not an https:// URL "
			    "(RFC 8058)");
	}
	if ((v = json_object_get(t, "vars")) != NULL &&
	    (!json_is_object(v) || !req_vars_flat(v, &bad)))
		return req_fail(p, "vars: not an object of strings, numbers "
		    "or booleans%s%s", bad ? ": " : "", bad ? bad : "");
	if ((v = json_object_get(t, "metadata")) != NULL) {
		char *m;
		size_t n;

		if (!json_is_object(v))
			return req_fail(p, "metadata: not an object");
		m = json_dumps(v, JSON_COMPACT);
		n = m ? strlen(m) : 0;
		free(m);
		if (n > REQ_METADATA_MAX)
			return req_fail(p, "metadata: larger than %d bytes",
			    REQ_METADATA_MAX);
	}
	if ((v = json_object_get(t, "attachments")) != NULL &&
	    req_attachments(p, v) != 0)
		return -1;
	if ((v = json_object_get(t, "archive")) != NULL) {
		if (!json_is_boolean(v))
			return req_fail(p, "archive: not true or false");
		p->r->archive = json_is_true(v);
	}
	if (p->nseen == 0)
		return req_fail(p, "recipients: missing or empty");
	return 0;
}

/* ---- every recipient's rendering against the size bound ---- */

struct req_tpls {
	struct inject_tpl *t[8 + REQ_HEADERS_MAX];
	enum inject_esc esc[8 + REQ_HEADERS_MAX];
	size_t n;
};

static void
req_tpls_add(struct req_tpls *ts, json_t *v, enum inject_esc esc)
{
	char e[8];

	if (!json_is_string(v))
		return;
	ts->t[ts->n] = inject_tpl_compile(json_string_value(v),
	    json_string_length(v), e, sizeof(e));
	ts->esc[ts->n++] = esc;
}

/* 1 if every template of ts renders within max for this recipient. */
static int
req_rcpt_fits(struct req_tpls *ts, struct inject_vars *iv,
    struct inject_buf *buf, size_t max)
{
	for (size_t i = 0; i < ts->n; i++) {
		buf->len = 0;
		if (ts->t[i] != NULL && inject_tpl_render(ts->t[i], ts->esc[i],
		    inject_vars_lookup, iv, buf, max) != 0)
			return 0;
	}
	return 1;
}

static int
req_reject_cmp(const void *a, const void *b)
{
	const struct inject_reject *x = a, *y = b;

	return x->index < y->index ? -1 : x->index > y->index;
}

/* Reject the recipients whose message would pass max_message_size. */
static void
req_sizes(struct req_parse *p)
{
	struct inject_req *r = p->r;
	struct req_tpls ts = { .n = 0 };
	struct inject_buf buf = { 0 };
	json_t *h = json_object_get(r->tpl, "headers"), *v;
	const char *k;
	size_t keep = 0;
	char why[128];

	if (json_object_get(r->tpl, "raw") != NULL)
		return;
	for (size_t i = 0; i < SL_ARRAY_LEN(inject_fields); i++)
		req_tpls_add(&ts, json_object_get(r->tpl, inject_fields[i].key),
		    inject_fields[i].esc);
	json_object_foreach(h, k, v)
		req_tpls_add(&ts, v, INJECT_ESC_HEADER);
	snprintf(why, sizeof(why), "the message would be larger than %zu "
	    "bytes once its values are in", p->lim->max_message_size);
	for (size_t i = 0; i < r->nrcpt; i++) {
		struct inject_rcpt *x = &r->rcpts[i];
		struct inject_vars iv = { .email = x->email,
			.batch = json_object_get(r->tpl, "vars") };

		iv.rcpt = x->vars ? json_loads(x->vars, 0, NULL) : NULL;
		if (req_rcpt_fits(&ts, &iv, &buf, p->lim->max_message_size)) {
			r->rcpts[keep++] = *x;
		} else {
			req_reject(r, x->index, x->email, why);
			free(x->email);
			free(x->vars);
		}
		json_decref(iv.rcpt);
	}
	r->nrcpt = keep;
	if (r->nrejected > 1)
		qsort(r->rejected, r->nrejected, sizeof(*r->rejected),
		    req_reject_cmp);
	for (size_t i = 0; i < ts.n; i++)
		inject_tpl_free(ts.t[i]);
	inject_buf_free(&buf);
}

static int
req_field(struct req_parse *p, const char *key)
{
	size_t i;
	json_t *v;

	for (i = 0; i < SL_ARRAY_LEN(req_fields); i++)
		if (strcmp(key, req_fields[i]) == 0)
			break;
	if (i == SL_ARRAY_LEN(req_fields))
		return req_fail(p, "unknown field '%.64s'", key);
	if (strcmp(key, "recipients") == 0) {
		if (p->nseen > 0 || json_object_get(p->r->tpl,
		    "recipients") != NULL)
			return req_fail(p, "recipients: given twice");
		/* a marker, so a second "recipients" is caught */
		json_object_set_new(p->r->tpl, "recipients", json_null());
		if (req_recipients(p) != 0)
			return -1;
		json_object_del(p->r->tpl, "recipients");
		return 0;
	}
	if (json_object_get(p->r->tpl, key) != NULL)
		return req_fail(p, "%s: given twice", key);
	if ((v = req_value(p, key)) == NULL)
		return -1;
	json_object_set_new(p->r->tpl, key, v);
	return 0;
}

static int
req_top(struct req_parse *p)
{
	if (req_expect(p, '{', "request") != 0)
		return req_fail(p, "request: not a JSON object");
	req_ws(p);
	if (p->pos < p->len && p->s[p->pos] == '}') {
		p->pos++;
	} else {
		for (;;) {
			json_t *k = req_value(p, "request");
			int rc;

			if (k == NULL)
				return -1;
			if (!json_is_string(k)) {
				json_decref(k);
				return req_fail(p, "request: a key is not a "
				    "string");
			}
			rc = req_expect(p, ':', json_string_value(k)) == 0 ?
			    req_field(p, json_string_value(k)) : -1;
			json_decref(k);
			if (rc != 0)
				return -1;
			req_ws(p);
			if (p->pos < p->len && p->s[p->pos] == ',') {
				p->pos++;
				continue;
			}
			if (req_expect(p, '}', "request") != 0)
				return -1;
			break;
		}
	}
	req_ws(p);
	if (p->pos != p->len)
		return req_fail(p, "request: extra data after the object at "
		    "byte %zu", p->pos);
	return req_check(p);
}

int
inject_req_parse(const char *body, size_t len,
    const struct inject_limits *lim, struct inject_req **out, char *err,
    size_t errlen)
{
	struct req_parse p = { .s = body, .len = len, .lim = lim, .err = err,
		.errlen = errlen };

	p.r = xcalloc(1, sizeof(*p.r));
	p.r->tpl = json_object();
	if (!sl_utf8_valid(body, len)) {
		req_fail(&p, "request: not UTF-8");
		goto fail;
	}
	if (req_top(&p) != 0)
		goto fail;
	req_sizes(&p);
	*out = p.r;
	return 0;
fail:
	inject_req_free(p.r);
	*out = NULL;
	return -1;
}

void
inject_req_free(struct inject_req *r)
{
	if (r == NULL)
		return;
	json_decref(r->tpl);
	free(r->sender);
	for (size_t i = 0; i < r->nrcpt; i++) {
		free(r->rcpts[i].email);
		free(r->rcpts[i].vars);
	}
	free(r->rcpts);
	for (size_t i = 0; i < r->nrejected; i++) {
		free(r->rejected[i].email);
		free(r->rejected[i].reason);
	}
	free(r->rejected);
	free(r);
}

char *
inject_batch_json(const struct inject_req *r, uint64_t mid, int64_t date,
    const char *hostname)
{
	json_t *t = json_deep_copy(r->tpl);
	char id[17];
	char *s;

	snprintf(id, sizeof(id), "%016llX", (unsigned long long)mid);
	json_object_set_new(t, "batch_id", json_string(id));
	json_object_set_new(t, "mid", json_string(id));
	json_object_set_new(t, "date", json_integer(date));
	json_object_set_new(t, "hostname", json_string(hostname));
	json_object_set_new(t, "sender", json_string(r->sender));
	s = json_dumps(t, JSON_COMPACT);
	json_decref(t);
	return s;
}
