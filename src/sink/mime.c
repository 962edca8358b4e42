/* SPDX-License-Identifier: MIT */
/*
 * mime.c: what the inbox shows of a captured message, parsed with GMime
 * (never by hand): the decoded header fields, the text and HTML bodies,
 * the attachments; and the header fields the index keeps (Subject, From).
 *
 * Parts are numbered 0, 1, ... in depth-first order of the leaves of the
 * MIME tree (a message/rfc822 part is one leaf). The body shown is the
 * first text/plain and the first text/html leaf that is not an attachment;
 * every other leaf is listed as an attachment.
 *
 * Threads: sink_mime_summary runs on the loop (store.c, one header of at
 * most SINK_MIME_HEAD bytes); the others read files and run on the sink's
 * I/O worker (http.c). GMime is initialized once by sink_new.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <gmime/gmime.h>

#include "sink/sink_int.h"
#include "submit/submit.h"
#include "util/util.h"

/* A string for JSON: s if it is UTF-8, else its bytes as Latin-1. */
static json_t *
mime_jstr(const char *s, size_t n)
{
	json_t *j;
	char *u;

	if (s == NULL)
		return json_null();
	if (sl_utf8_valid(s, n))
		return json_stringn(s, n);
	u = g_convert(s, (gssize)n, "UTF-8", "ISO-8859-1", NULL, NULL, NULL);
	j = u ? json_string(u) : json_null();
	g_free(u);
	return j ? j : json_null();
}

static void
mime_field_pair(void *arg, const char *name, size_t nlen, const char *value,
    size_t vlen)
{
	json_t *pair = json_array();

	json_array_append_new(pair, mime_jstr(name, nlen));
	json_array_append_new(pair, json_stringn(value, vlen) ?: json_null());
	json_array_append_new(arg, pair);
}

json_t *
sink_mime_headers(const char *p, size_t len)
{
	json_t *out = json_array();

	submit_fields(p, submit_header_len(p, len), mime_field_pair, out);
	return out;
}

/* RFC 2047 words decoded, 8-bit text guessed; a new JSON string. */
static json_t *
mime_decode(const char *value)
{
	char *d = g_mime_utils_header_decode_text(NULL, value);
	json_t *j = d ? mime_jstr(d, strlen(d)) : json_null();

	g_free(d);
	return j;
}

static void
mime_field_summary(void *arg, const char *name, size_t nlen,
    const char *value, size_t vlen)
{
	json_t *meta = arg;
	const char *key = NULL;

	if (nlen == 7 && sl_strncaseeq(name, "Subject", 7))
		key = "subject";
	else if (nlen == 4 && sl_strncaseeq(name, "From", 4))
		key = "from";
	if (key != NULL && json_object_get(meta, key) == NULL)
		json_object_set_new(meta, key, mime_decode(value));
}

void
sink_mime_summary(const char *p, size_t len, json_t *meta)
{
	submit_fields(p, submit_header_len(p, len), mime_field_summary, meta);
	if (json_object_get(meta, "subject") == NULL)
		json_object_set_new(meta, "subject", json_string(""));
	if (json_object_get(meta, "from") == NULL)
		json_object_set_new(meta, "from", json_string(""));
}

/* ---- on the I/O worker ---- */

static void mime_leaf_write(GMimeObject *o, GMimeStream *out);

/* The message in the file at path, or NULL with errno. */
static GMimeMessage *
mime_load(const char *path)
{
	GMimeStream *stream;
	GMimeParser *parser;
	GMimeMessage *msg;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return NULL;
	stream = g_mime_stream_fs_new(fd);	/* owns fd from here */
	parser = g_mime_parser_new_with_stream(stream);
	g_object_unref(stream);
	msg = g_mime_parser_construct_message(parser, NULL);
	g_object_unref(parser);
	if (msg == NULL)
		errno = EINVAL;
	return msg;
}

/* A walk over the leaves of the MIME tree. */
struct mime_walk {
	int n;			/* leaves seen so far */
	int want;		/* the leaf to stop at, or -1 */
	GMimeObject *found;
	GMimeTextPart *text, *html;
	json_t *atts;		/* NULL: not collecting */
};

static int
mime_is_body(GMimeObject *o, const char *subtype)
{
	GMimeContentType *ct = g_mime_object_get_content_type(o);

	return GMIME_IS_TEXT_PART(o) &&
	    g_mime_content_type_is_type(ct, "text", subtype) &&
	    !g_mime_part_is_attachment(GMIME_PART(o));
}

/* The decoded size of a leaf. */
static json_int_t
mime_leaf_size(GMimeObject *o)
{
	GMimeStream *null = g_mime_stream_null_new();
	json_int_t n;

	mime_leaf_write(o, null);
	n = (json_int_t)GMIME_STREAM_NULL(null)->written;
	g_object_unref(null);
	return n;
}

static json_t *
mime_attachment(GMimeObject *o, int index)
{
	GMimeContentType *ct = g_mime_object_get_content_type(o);
	char *type = g_mime_content_type_get_mime_type(ct);
	const char *name = GMIME_IS_PART(o) ?
	    g_mime_part_get_filename(GMIME_PART(o)) : NULL;
	json_t *a = json_object();

	json_object_set_new(a, "part", json_integer(index));
	json_object_set_new(a, "type", mime_jstr(type, strlen(type)));
	json_object_set_new(a, "filename", name ? mime_jstr(name,
	    strlen(name)) : json_null());
	json_object_set_new(a, "size", json_integer(mime_leaf_size(o)));
	g_free(type);
	return a;
}

static void
mime_walk(struct mime_walk *w, GMimeObject *o)
{
	if (o == NULL || w->found != NULL)
		return;
	if (GMIME_IS_MULTIPART(o)) {
		GMimeMultipart *mp = GMIME_MULTIPART(o);
		for (int i = 0; i < g_mime_multipart_get_count(mp); i++)
			mime_walk(w, g_mime_multipart_get_part(mp, i));
		return;
	}
	int index = w->n++;
	if (index == w->want) {
		w->found = o;
		return;
	}
	if (w->text == NULL && mime_is_body(o, "plain"))
		w->text = GMIME_TEXT_PART(o);
	else if (w->html == NULL && mime_is_body(o, "html"))
		w->html = GMIME_TEXT_PART(o);
	else if (w->atts != NULL)
		json_array_append_new(w->atts, mime_attachment(o, index));
}

/* The decoded content of a leaf (a message part: the message) to out. */
static void
mime_leaf_write(GMimeObject *o, GMimeStream *out)
{
	if (GMIME_IS_MESSAGE_PART(o)) {
		GMimeMessage *m = g_mime_message_part_get_message(
		    GMIME_MESSAGE_PART(o));
		if (m != NULL)
			g_mime_object_write_to_stream(GMIME_OBJECT(m), NULL, out);
	} else if (GMIME_IS_PART(o)) {
		GMimeDataWrapper *dw = g_mime_part_get_content(GMIME_PART(o));
		if (dw != NULL)
			g_mime_data_wrapper_write_to_stream(dw, out);
	}
	g_mime_stream_flush(out);
}

/* The text of a body part as a JSON string (UTF-8), or null. */
static json_t *
mime_text(GMimeTextPart *tp)
{
	char *t = tp ? g_mime_text_part_get_text(tp) : NULL;
	json_t *j = t ? mime_jstr(t, strlen(t)) : json_null();

	g_free(t);
	return j;
}

static json_t *
mime_addrs(InternetAddressList *l)
{
	char *s = l ? internet_address_list_to_string(l, NULL, FALSE) : NULL;
	json_t *j = s ? mime_jstr(s, strlen(s)) : json_string("");

	g_free(s);
	return j;
}

json_t *
sink_mime_view(const char *path)
{
	GMimeMessage *msg = mime_load(path);
	GMimeHeaderList *hl;
	struct mime_walk w = { .want = -1 };
	const char *subject;
	json_t *o, *hs;

	if (msg == NULL)
		return NULL;
	o = json_object();
	hs = json_array();
	hl = g_mime_object_get_header_list(GMIME_OBJECT(msg));
	for (int i = 0; i < g_mime_header_list_get_count(hl); i++) {
		GMimeHeader *h = g_mime_header_list_get_header_at(hl, i);
		const char *name = g_mime_header_get_name(h);
		const char *value = g_mime_header_get_value(h);
		json_t *pair = json_array();
		json_array_append_new(pair, mime_jstr(name, strlen(name)));
		json_array_append_new(pair, value ? mime_jstr(value,
		    strlen(value)) : json_string(""));
		json_array_append_new(hs, pair);
	}
	subject = g_mime_message_get_subject(msg);
	json_object_set_new(o, "headers", hs);
	json_object_set_new(o, "subject", subject ? mime_jstr(subject,
	    strlen(subject)) : json_string(""));
	json_object_set_new(o, "from", mime_addrs(g_mime_message_get_from(msg)));
	json_object_set_new(o, "to", mime_addrs(g_mime_message_get_to(msg)));
	json_object_set_new(o, "cc", mime_addrs(g_mime_message_get_cc(msg)));
	w.atts = json_array();
	mime_walk(&w, g_mime_message_get_mime_part(msg));
	json_object_set_new(o, "text", mime_text(w.text));
	json_object_set_new(o, "html", json_boolean(w.html != NULL));
	json_object_set_new(o, "attachments", w.atts);
	g_object_unref(msg);
	return o;
}

int
sink_mime_html(const char *path, struct evbuffer *out)
{
	GMimeMessage *msg = mime_load(path);
	struct mime_walk w = { .want = -1 };
	char *t;

	if (msg == NULL)
		return -1;
	mime_walk(&w, g_mime_message_get_mime_part(msg));
	t = w.html ? g_mime_text_part_get_text(w.html) : NULL;
	if (t != NULL)
		evbuffer_add(out, t, strlen(t));
	g_free(t);
	g_object_unref(msg);
	if (t == NULL)
		errno = ENOENT;
	return t ? 0 : -1;
}

int
sink_mime_part(const char *path, int n, struct evbuffer *out, char **type,
    char **filename)
{
	GMimeMessage *msg = mime_load(path);
	struct mime_walk w = { .want = n };
	GMimeStream *mem;
	GByteArray *ba;

	if (msg == NULL)
		return -1;
	mime_walk(&w, g_mime_message_get_mime_part(msg));
	if (w.found == NULL) {
		g_object_unref(msg);
		errno = ENOENT;
		return -1;
	}
	char *t = g_mime_content_type_get_mime_type(
	    g_mime_object_get_content_type(w.found));
	const char *name = GMIME_IS_PART(w.found) ?
	    g_mime_part_get_filename(GMIME_PART(w.found)) : NULL;
	*type = xstrdup(t);
	*filename = name ? xstrdup(name) : NULL;
	g_free(t);
	mem = g_mime_stream_mem_new();
	mime_leaf_write(w.found, mem);
	ba = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(mem));
	evbuffer_add(out, ba->data, ba->len);
	g_object_unref(mem);
	g_object_unref(msg);
	return 0;
}
