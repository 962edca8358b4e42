/* SPDX-License-Identifier: MIT */
/*
 * mime.c: a stored batch template made into each recipient's message with
 * GMime (inject.h): From, To, Subject, Date, Message-ID, MIME-Version, the
 * request's headers, List-Unsubscribe and List-Unsubscribe-Post (RFC 8058),
 * then text/plain and text/html in multipart/alternative (RFC 2046 5.1.4:
 * the plainest first), inside multipart/mixed with the attachments.
 *
 * Parts are UTF-8; each gets the transfer encoding GMime finds best for a
 * 7-bit path (7bit, quoted-printable or base64), headers are encoded per
 * RFC 2047 when not ASCII, and lines end in CRLF.
 *
 * Invariant: the output depends only on the template, the recipient's
 * address, vars and rid: Date is the batch's, Message-ID is
 * <MID.RID@hostname>, and the MIME boundaries are hashes of the content,
 * so a retried delivery sends the same bytes and no value can collide
 * with a boundary by chance.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <gmime/gmime.h>

#include "inject/inject.h"
#include "inject/inject_int.h"
#include "inject/template.h"
#include "submit/submit.h"
#include "util/util.h"

struct inject_batch {
	json_t *t;		/* the stored template */
	struct inject_tpl *subject, *text, *html, *unsubscribe;
	struct inject_tpl **hdr;	/* one per "headers" entry, in order */
	const char **hdr_names;
	size_t nhdr;
	json_t *vars;		/* borrowed from t */
	const char *raw;	/* or NULL */
	const char *from, *hostname, *mid, *batch_id;
	int64_t date;
	size_t max;		/* bound of one rendered part */
};

/* A batch's rendered parts larger than this fail the recipient. */
#define INJECT_RENDER_MAX ((size_t)64 * 1024 * 1024)

static pthread_once_t inject_once = PTHREAD_ONCE_INIT;

static void
inject_init_once(void)
{
	g_mime_init();
}

void
inject_init(void)
{
	pthread_once(&inject_once, inject_init_once);
}

static struct inject_tpl *
batch_tpl(json_t *t, const char *key, char *err, size_t errlen, int *bad)
{
	json_t *v = json_object_get(t, key);
	struct inject_tpl *tpl;
	char e[200];

	if (v == NULL || *bad)
		return NULL;
	tpl = inject_tpl_compile(json_string_value(v) ?
	    json_string_value(v) : "", json_string_length(v), e, sizeof(e));
	if (tpl == NULL) {
		snprintf(err, errlen, "%s: %s", key, e);
		*bad = 1;
	}
	return tpl;
}

struct inject_batch *
inject_batch_new(const char *json, size_t len, char *err, size_t errlen)
{
	struct inject_batch *b = xcalloc(1, sizeof(*b));
	json_error_t e;
	json_t *h, *v;
	const char *k;
	int bad = 0;

	inject_init();
	b->t = json_loadb(json, len, 0, &e);
	if (b->t == NULL || !json_is_object(b->t)) {
		snprintf(err, errlen, "batch template: %s", b->t ? "not an "
		    "object" : e.text);
		goto fail;
	}
	b->from = json_string_value(json_object_get(b->t, "from"));
	b->hostname = json_string_value(json_object_get(b->t, "hostname"));
	b->mid = json_string_value(json_object_get(b->t, "mid"));
	b->batch_id = json_string_value(json_object_get(b->t, "batch_id"));
	b->date = json_integer_value(json_object_get(b->t, "date"));
	b->raw = json_string_value(json_object_get(b->t, "raw"));
	b->vars = json_object_get(b->t, "vars");
	b->max = INJECT_RENDER_MAX;
	if (b->from == NULL || b->hostname == NULL || b->mid == NULL) {
		snprintf(err, errlen, "batch template: from, hostname or mid "
		    "missing");
		goto fail;
	}
	b->subject = batch_tpl(b->t, "subject", err, errlen, &bad);
	b->text = batch_tpl(b->t, "text", err, errlen, &bad);
	b->html = batch_tpl(b->t, "html", err, errlen, &bad);
	b->unsubscribe = batch_tpl(b->t, "unsubscribe", err, errlen, &bad);
	if ((h = json_object_get(b->t, "headers")) != NULL) {
		b->hdr = xcalloc(json_object_size(h), sizeof(*b->hdr));
		b->hdr_names = xcalloc(json_object_size(h),
		    sizeof(*b->hdr_names));
		json_object_foreach(h, k, v) {
			b->hdr_names[b->nhdr] = k;
			b->hdr[b->nhdr++] = batch_tpl(h, k, err, errlen, &bad);
		}
	}
	if (bad)
		goto fail;
	return b;
fail:
	inject_batch_free(b);
	return NULL;
}

void
inject_batch_free(struct inject_batch *b)
{
	if (b == NULL)
		return;
	inject_tpl_free(b->subject);
	inject_tpl_free(b->text);
	inject_tpl_free(b->html);
	inject_tpl_free(b->unsubscribe);
	for (size_t i = 0; i < b->nhdr; i++)
		inject_tpl_free(b->hdr[i]);
	free(b->hdr);
	free(b->hdr_names);
	json_decref(b->t);
	free(b);
}

json_t *
inject_batch_metadata(const struct inject_batch *b)
{
	return json_object_get(b->t, "metadata");
}

const char *
inject_batch_id(const struct inject_batch *b)
{
	return b->batch_id;
}

int
inject_batch_archive(const struct inject_batch *b)
{
	return json_is_true(json_object_get(b->t, "archive"));
}

int64_t
inject_batch_date(const struct inject_batch *b)
{
	return b->date;
}

/* ---- the message ---- */

/* FNV-1a over the rendered content: boundaries that cannot collide by chance. */
static uint64_t
batch_hash(uint64_t h, const char *p, size_t n)
{
	if (h == 0)
		h = 14695981039346656037ULL;
	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)p[i]) * 1099511628211ULL;
	return h;
}

static GMimeObject *
batch_text_part(const char *subtype, const struct inject_buf *b)
{
	GMimeTextPart *tp = g_mime_text_part_new_with_subtype(subtype);
	GMimeStream *s = g_mime_stream_mem_new_with_buffer(b->data ?
	    b->data : "", b->len);
	GMimeDataWrapper *w = g_mime_data_wrapper_new_with_stream(s,
	    GMIME_CONTENT_ENCODING_DEFAULT);

	g_mime_part_set_content(GMIME_PART(tp), w);
	g_mime_text_part_set_charset(tp, "utf-8");
	g_mime_part_set_content_encoding(GMIME_PART(tp),
	    g_mime_part_get_best_content_encoding(GMIME_PART(tp),
	    GMIME_ENCODING_CONSTRAINT_7BIT));
	g_object_unref(w);
	g_object_unref(s);
	return GMIME_OBJECT(tp);
}

static GMimeObject *
batch_attachment(json_t *a)
{
	const char *ct = json_string_value(json_object_get(a, "content_type"));
	json_t *b64 = json_object_get(a, "content_base64");
	gsize n = 0;
	guchar *data = g_base64_decode(json_string_value(b64), &n);
	GMimeContentType *type = g_mime_content_type_parse(NULL, ct);
	GMimePart *p = g_mime_part_new_with_type(
	    g_mime_content_type_get_media_type(type),
	    g_mime_content_type_get_media_subtype(type));
	GMimeStream *s = g_mime_stream_mem_new_with_buffer((const char *)data,
	    n);
	GMimeDataWrapper *w = g_mime_data_wrapper_new_with_stream(s,
	    GMIME_CONTENT_ENCODING_DEFAULT);

	g_mime_part_set_content(p, w);
	g_mime_part_set_filename(p, json_string_value(json_object_get(a,
	    "filename")));
	g_mime_part_set_content_encoding(p, GMIME_CONTENT_ENCODING_BASE64);
	g_object_unref(w);
	g_object_unref(s);
	g_object_unref(type);
	g_free(data);
	return GMIME_OBJECT(p);
}

static GMimeMultipart *
batch_multipart(const char *subtype, const char *mid, uint32_t rid,
    uint64_t h)
{
	GMimeMultipart *mp = g_mime_multipart_new_with_subtype(subtype);
	char boundary[96];

	snprintf(boundary, sizeof(boundary), "=_%s_%s.%u_%016llx", subtype,
	    mid, rid, (unsigned long long)h);
	g_mime_multipart_set_boundary(mp, boundary);
	return mp;
}

/* Render one template into out; -1 with a reason when too large. */
static int
batch_render(const struct inject_batch *b, const char *what,
    const struct inject_tpl *t, enum inject_esc esc, struct inject_vars *bv,
    struct inject_buf *out, char *err, size_t errlen)
{
	inject_buf_add(out, "", 0);
	if (t != NULL && inject_tpl_render(t, esc, inject_vars_lookup, bv, out,
	    b->max) != 0) {
		snprintf(err, errlen, "%s: larger than %zu bytes once the "
		    "values are in", what, b->max);
		return -1;
	}
	return 0;
}

/* The body: text, html, both in multipart/alternative, then attachments. */
static GMimeObject *
batch_body(const struct inject_batch *b, const struct inject_buf *text,
    const struct inject_buf *html, uint32_t rid, uint64_t h)
{
	json_t *atts = json_object_get(b->t, "attachments"), *a;
	GMimeObject *body = NULL;
	size_t i;

	if (b->text != NULL && b->html != NULL) {
		GMimeMultipart *alt = batch_multipart("alternative", b->mid,
		    rid, h);
		GMimeObject *t = batch_text_part("plain", text);
		GMimeObject *hp = batch_text_part("html", html);
		g_mime_multipart_add(alt, t);
		g_mime_multipart_add(alt, hp);
		g_object_unref(t);
		g_object_unref(hp);
		body = GMIME_OBJECT(alt);
	} else {
		body = batch_text_part(b->html ? "html" : "plain",
		    b->html ? html : text);
	}
	if (json_array_size(atts) > 0) {
		GMimeMultipart *mix = batch_multipart("mixed", b->mid, rid, h);
		g_mime_multipart_add(mix, body);
		g_object_unref(body);
		json_array_foreach(atts, i, a) {
			GMimeObject *p = batch_attachment(a);
			g_mime_multipart_add(mix, p);
			g_object_unref(p);
		}
		body = GMIME_OBJECT(mix);
	}
	return body;
}

static void
batch_from(GMimeMessage *msg, const char *from)
{
	const char *lt = strrchr(from, '<');
	char *name = NULL, *addr;
	InternetAddress *ia;

	if (lt != NULL) {
		name = sl_strtrim(xstrndup(from, (size_t)(lt - from)));
		addr = xstrndup(lt + 1, strcspn(lt + 1, ">"));
	} else {
		addr = xstrdup(from);
	}
	ia = internet_address_mailbox_new(name ? name : "", addr);
	/* RFC 2047 words in UTF-8, not the smallest charset GMime would pick */
	internet_address_set_charset(ia, "utf-8");
	internet_address_list_add(g_mime_message_get_from(msg), ia);
	g_object_unref(ia);
	free(name);
	free(addr);
}

static void
batch_write(GMimeMessage *msg, struct evbuffer *out)
{
	GMimeFormatOptions *fo = g_mime_format_options_new();
	GMimeStream *s = g_mime_stream_mem_new();
	GByteArray *ba;

	g_mime_format_options_set_newline_format(fo, GMIME_NEWLINE_FORMAT_DOS);
	g_mime_object_write_to_stream(GMIME_OBJECT(msg), fo, s);
	ba = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(s));
	evbuffer_add(out, ba->data, ba->len);
	if (ba->len < 2 || ba->data[ba->len - 1] != '\n')
		evbuffer_add(out, "\r\n", 2);
	g_object_unref(s);
	g_mime_format_options_free(fo);
}

/* A raw message: CRLF line ends; Date and Message-ID added if missing. */
static int
batch_raw(const struct inject_batch *b, uint32_t rid, struct evbuffer *out)
{
	struct evbuffer *tmp = evbuffer_new();
	const char *p = b->raw;
	size_t hlen, len;
	char *msg;
	char date[64];

	for (; *p; p++) {
		if (*p == '\n' && (p == b->raw || p[-1] != '\r'))
			evbuffer_add(tmp, "\r", 1);
		evbuffer_add(tmp, p, 1);
	}
	len = evbuffer_get_length(tmp);
	if (len < 2 || memcmp((char *)evbuffer_pullup(tmp, -1) + len - 2,
	    "\r\n", 2) != 0)
		evbuffer_add(tmp, "\r\n", 2);
	len = evbuffer_get_length(tmp);
	msg = (char *)evbuffer_pullup(tmp, -1);
	hlen = submit_header_len(msg, len);
	/* RFC 6409 8.2, 8.3: a submission server may add them */
	if (!submit_has_field(msg, hlen, "Date")) {
		sl_rfc5322_date(b->date, date, sizeof(date));
		evbuffer_add_printf(out, "Date: %s\r\n", date);
	}
	if (!submit_has_field(msg, hlen, "Message-ID"))
		evbuffer_add_printf(out, "Message-ID: <%s.%u@%s>\r\n", b->mid,
		    rid, b->hostname);
	evbuffer_add_buffer(out, tmp);
	evbuffer_free(tmp);
	return 0;
}

int
inject_batch_build(const struct inject_batch *b, const char *email,
    const char *vars, uint32_t rid, struct evbuffer *out, char *err,
    size_t errlen)
{
	struct inject_vars bv = { .email = email, .batch = b->vars };
	struct inject_buf subj = { 0 }, text = { 0 }, html = { 0 }, unsub = { 0 };
	struct inject_buf hv = { 0 };
	GMimeMessage *msg = NULL;
	GMimeObject *body;
	GDateTime *dt;
	char mid[128];
	uint64_t h;
	int rc = -1;

	if (b->raw != NULL)
		return batch_raw(b, rid, out);
	if (vars != NULL && (bv.rcpt = json_loads(vars, 0, NULL)) == NULL) {
		snprintf(err, errlen, "vars: not JSON");
		return -1;
	}
	if (batch_render(b, "subject", b->subject, INJECT_ESC_HEADER, &bv,
	    &subj, err, errlen) != 0 ||
	    batch_render(b, "text", b->text, INJECT_ESC_TEXT, &bv, &text, err,
	    errlen) != 0 ||
	    batch_render(b, "html", b->html, INJECT_ESC_HTML, &bv, &html, err,
	    errlen) != 0 ||
	    batch_render(b, "unsubscribe", b->unsubscribe, INJECT_ESC_URL, &bv,
	    &unsub, err, errlen) != 0)
		goto done;
	h = batch_hash(0, text.data, text.len);
	h = batch_hash(h, html.data, html.len);

	msg = g_mime_message_new(TRUE);
	batch_from(msg, b->from);
	g_mime_message_add_mailbox(msg, GMIME_ADDRESS_TYPE_TO, "", email);
	g_mime_message_set_subject(msg, subj.data, "utf-8");
	dt = g_date_time_new_from_unix_utc(b->date);
	g_mime_message_set_date(msg, dt);
	g_date_time_unref(dt);
	snprintf(mid, sizeof(mid), "%s.%u@%s", b->mid, rid, b->hostname);
	g_mime_message_set_message_id(msg, mid);
	for (size_t i = 0; i < b->nhdr; i++) {
		hv.len = 0;
		if (batch_render(b, b->hdr_names[i], b->hdr[i],
		    INJECT_ESC_HEADER, &bv, &hv, err, errlen) != 0)
			goto done;
		g_mime_object_append_header(GMIME_OBJECT(msg), b->hdr_names[i],
		    hv.data, "utf-8");
	}
	if (b->unsubscribe != NULL) {
		/* RFC 8058: the URI in <>, and the one-click POST marker */
		hv.len = 0;
		inject_buf_add(&hv, "<", 1);
		inject_buf_add(&hv, unsub.data, unsub.len);
		inject_buf_add(&hv, ">", 1);
		for (size_t i = 0; i < hv.len; i++)
			if ((unsigned char)hv.data[i] < 0x20)
				hv.data[i] = ' ';
		g_mime_object_append_header(GMIME_OBJECT(msg),
		    "List-Unsubscribe", hv.data, NULL);
		g_mime_object_append_header(GMIME_OBJECT(msg),
		    "List-Unsubscribe-Post", "List-Unsubscribe=One-Click", NULL);
	}
	body = batch_body(b, &text, &html, rid, h);
	g_mime_message_set_mime_part(msg, body);
	g_object_unref(body);
	batch_write(msg, out);
	rc = 0;
done:
	if (msg != NULL)
		g_object_unref(msg);
	json_decref(bv.rcpt);
	inject_buf_free(&subj);
	inject_buf_free(&text);
	inject_buf_free(&html);
	inject_buf_free(&unsub);
	inject_buf_free(&hv);
	return rc;
}
