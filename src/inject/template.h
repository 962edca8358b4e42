/* SPDX-License-Identifier: MIT */
/*
 * template.h: the injection API's template language (docs/TEMPLATES.md):
 * literal text with {{name}} and {{name|default}}, nothing else. A template
 * is compiled once (syntax errors are found at injection time, not at
 * delivery) and rendered per recipient with the escaping of the place it
 * goes: as-is in a text part, HTML-escaped in an HTML part, percent-encoded
 * in a URL, and with CR, LF and other control characters made spaces in a
 * header, so no value can add a header or a MIME part.
 *
 * Pure: no I/O, no globals; rendering never executes anything, it only
 * copies text and variable values. Threads: any (no shared state).
 */
#ifndef SL_INJECT_TEMPLATE_H
#define SL_INJECT_TEMPLATE_H

#include <stddef.h>

/* Longest variable name; longer is a syntax error. */
#define INJECT_TPL_NAME_MAX 64

struct inject_tpl;

/* Where a rendered template goes: how variable values are escaped. */
enum inject_esc {
	INJECT_ESC_TEXT = 0,	/* as-is */
	INJECT_ESC_HTML,	/* & < > " ' as entities */
	INJECT_ESC_URL,		/* percent-encoded except RFC 3986 unreserved */
	INJECT_ESC_HEADER,	/* control characters (CR, LF, ...) -> space,
				   in the whole result, literal text too */
};

/* A growing byte string (NUL-terminated when len > 0 or after render). */
struct inject_buf {
	char *data;
	size_t len, cap;
};
void inject_buf_add(struct inject_buf *b, const void *p, size_t n);
void inject_buf_free(struct inject_buf *b);

/*
 * The value of variable name (nlen bytes, not terminated), with its length
 * in *vlen, or NULL when it is not set (then the default, or nothing).
 */
typedef const char *inject_var_fn(void *arg, const char *name, size_t nlen,
    size_t *vlen);

/*
 * Compile src (len bytes, UTF-8). Returns a new template (free with
 * inject_tpl_free), or NULL with a reason naming the byte offset in err.
 */
struct inject_tpl *inject_tpl_compile(const char *src, size_t len, char *err,
    size_t errlen);
void inject_tpl_free(struct inject_tpl *t);
/* 1 if the template has no variable (rendering is a copy). */
int inject_tpl_is_literal(const struct inject_tpl *t);

/*
 * Append the template rendered with lookup's values, escaped for esc, to
 * out (terminated). Returns 0, or -1 when the result would pass max bytes
 * (out then holds a prefix).
 */
int inject_tpl_render(const struct inject_tpl *t, enum inject_esc esc,
    inject_var_fn *lookup, void *arg, struct inject_buf *out, size_t max);

#endif
