/* SPDX-License-Identifier: MIT */
/*
 * template.c: compile and render the injection templates (template.h).
 *
 * A compiled template is a copy of its source and a list of nodes: literal
 * runs and variables (name, optional default), all as offsets into the
 * copy. Grammar (docs/TEMPLATES.md):
 *   text    := ( literal | "\{{" | tag )*
 *   tag     := "{{" ws* name ws* ( "|" default )? "}}"
 *   name    := [A-Za-z_][A-Za-z0-9_.-]*   (at most INJECT_TPL_NAME_MAX)
 *   default := any text without "}}", surrounding white space trimmed
 * Invariant: rendering reads only the nodes and the lookup's values; it
 * cannot fail except by passing the size bound.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inject/template.h"
#include "util/util.h"

enum { TPL_LIT, TPL_VAR };

struct tpl_node {
	int type;
	size_t off, len;	/* literal text, or the name */
	size_t doff, dlen;	/* the default */
	int has_default;
};

struct inject_tpl {
	char *src;
	struct tpl_node *nodes;
	size_t n, cap;
	int nvars;
};

void
inject_buf_add(struct inject_buf *b, const void *p, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		b->cap = (b->len + n + 1) * 2;
		b->data = xrealloc(b->data, b->cap);
	}
	if (n > 0)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
}

void
inject_buf_free(struct inject_buf *b)
{
	free(b->data);
	memset(b, 0, sizeof(*b));
}

static void
tpl_push(struct inject_tpl *t, int type, size_t off, size_t len)
{
	struct tpl_node *nd;

	/* adjacent literals merge: "\{{" splits a run in three */
	if (type == TPL_LIT && t->n > 0 && t->nodes[t->n - 1].type == TPL_LIT &&
	    t->nodes[t->n - 1].off + t->nodes[t->n - 1].len == off) {
		t->nodes[t->n - 1].len += len;
		return;
	}
	if (t->n == t->cap) {
		t->cap = t->cap ? t->cap * 2 : 8;
		t->nodes = xrealloc(t->nodes, t->cap * sizeof(*t->nodes));
	}
	nd = &t->nodes[t->n++];
	memset(nd, 0, sizeof(*nd));
	nd->type = type;
	nd->off = off;
	nd->len = len;
}

static int
tpl_name_start(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}

static int
tpl_name_char(char c)
{
	return tpl_name_start(c) || (c >= '0' && c <= '9') || c == '.' ||
	    c == '-';
}

static int
tpl_ws(char c)
{
	return c == ' ' || c == '\t';
}

/* Parse the tag at s[i] ("{{"); returns the offset after "}}" or 0. */
static size_t
tpl_tag(struct inject_tpl *t, const char *s, size_t len, size_t i, char *err,
    size_t errlen)
{
	size_t start = i, p = i + 2, name, nlen, end;
	struct tpl_node *nd;

	while (p < len && tpl_ws(s[p]))
		p++;
	name = p;
	if (p >= len || !tpl_name_start(s[p])) {
		snprintf(err, errlen, "offset %zu: \"{{\" must be followed by a "
		    "variable name (write \\{{ for a literal \"{{\")", start);
		return 0;
	}
	while (p < len && tpl_name_char(s[p]))
		p++;
	nlen = p - name;
	if (nlen > INJECT_TPL_NAME_MAX) {
		snprintf(err, errlen, "offset %zu: variable name longer than "
		    "%d", start, INJECT_TPL_NAME_MAX);
		return 0;
	}
	while (p < len && tpl_ws(s[p]))
		p++;
	tpl_push(t, TPL_VAR, name, nlen);
	nd = &t->nodes[t->n - 1];
	t->nvars++;
	if (p < len && s[p] == '|') {
		const char *close = memmem(s + p + 1, len - p - 1, "}}", 2);
		size_t d = p + 1;

		if (close == NULL)
			goto unclosed;
		end = (size_t)(close - s);
		while (d < end && tpl_ws(s[d]))
			d++;
		while (end > d && tpl_ws(s[end - 1]))
			end--;
		nd->has_default = 1;
		nd->doff = d;
		nd->dlen = end - d;
		return (size_t)(close - s) + 2;
	}
	if (p + 1 < len && s[p] == '}' && s[p + 1] == '}')
		return p + 2;
	if (p < len && !(p + 1 == len && s[p] == '}')) {
		snprintf(err, errlen, "offset %zu: unexpected '%c' in "
		    "{{%.*s ...}}", p, s[p] >= 0x20 && s[p] < 0x7f ? s[p] : '?',
		    (int)nlen, s + name);
		return 0;
	}
unclosed:
	snprintf(err, errlen, "offset %zu: \"{{\" without its \"}}\"", start);
	return 0;
}

struct inject_tpl *
inject_tpl_compile(const char *src, size_t len, char *err, size_t errlen)
{
	struct inject_tpl *t = xcalloc(1, sizeof(*t));
	size_t i = 0, lit = 0;

	t->src = xmalloc(len + 1);
	memcpy(t->src, src, len);
	t->src[len] = '\0';
	while (i < len) {
		if (src[i] == '\\' && i + 2 < len && src[i + 1] == '{' &&
		    src[i + 2] == '{') {
			if (i > lit)
				tpl_push(t, TPL_LIT, lit, i - lit);
			tpl_push(t, TPL_LIT, i + 1, 2);
			i += 3;
			lit = i;
			continue;
		}
		if (src[i] == '{' && i + 1 < len && src[i + 1] == '{') {
			size_t next;

			if (i > lit)
				tpl_push(t, TPL_LIT, lit, i - lit);
			if ((next = tpl_tag(t, src, len, i, err, errlen)) == 0) {
				inject_tpl_free(t);
				return NULL;
			}
			i = lit = next;
			continue;
		}
		i++;
	}
	if (len > lit)
		tpl_push(t, TPL_LIT, lit, len - lit);
	return t;
}

void
inject_tpl_free(struct inject_tpl *t)
{
	if (t == NULL)
		return;
	free(t->src);
	free(t->nodes);
	free(t);
}

int
inject_tpl_is_literal(const struct inject_tpl *t)
{
	return t->nvars == 0;
}

/* Append v escaped for esc (values only; HEADER is done on the whole). */
static void
tpl_escape(struct inject_buf *out, enum inject_esc esc, const char *v,
    size_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t i, run = 0;

	if (esc != INJECT_ESC_HTML && esc != INJECT_ESC_URL) {
		inject_buf_add(out, v, n);
		return;
	}
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)v[i];
		const char *ent = NULL;
		char pct[3];

		if (esc == INJECT_ESC_HTML) {
			ent = c == '&' ? "&amp;" : c == '<' ? "&lt;" : c == '>' ?
			    "&gt;" : c == '"' ? "&quot;" : c == '\'' ? "&#39;" :
			    NULL;
		} else if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		    (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
		    c == '~')) {
			pct[0] = '%';
			pct[1] = hex[c >> 4];
			pct[2] = hex[c & 15];
			inject_buf_add(out, v + run, i - run);
			inject_buf_add(out, pct, 3);
			run = i + 1;
			continue;
		}
		if (ent != NULL) {
			inject_buf_add(out, v + run, i - run);
			inject_buf_add(out, ent, strlen(ent));
			run = i + 1;
		}
	}
	inject_buf_add(out, v + run, n - run);
}

int
inject_tpl_render(const struct inject_tpl *t, enum inject_esc esc,
    inject_var_fn *lookup, void *arg, struct inject_buf *out, size_t max)
{
	size_t start = out->len;
	int rc = 0;

	inject_buf_add(out, "", 0);
	for (size_t i = 0; i < t->n; i++) {
		const struct tpl_node *nd = &t->nodes[i];
		const char *v = NULL;
		size_t vlen = 0;

		if (nd->type == TPL_LIT) {
			inject_buf_add(out, t->src + nd->off, nd->len);
		} else {
			v = lookup(arg, t->src + nd->off, nd->len, &vlen);
			/* an empty value takes the default too */
			if ((v == NULL || vlen == 0) && nd->has_default)
				/* the default is the author's text: not escaped */
				inject_buf_add(out, t->src + nd->doff, nd->dlen);
			else if (v != NULL)
				tpl_escape(out, esc, v, vlen);
		}
		if (out->len - start > max) {
			rc = -1;
			break;
		}
	}
	/* the prefix left on failure is made safe too */
	if (esc == INJECT_ESC_HEADER)
		for (size_t i = start; i < out->len; i++)
			if ((unsigned char)out->data[i] < 0x20 ||
			    out->data[i] == 0x7f)
				out->data[i] = ' ';
	return rc;
}
