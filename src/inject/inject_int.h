/* SPDX-License-Identifier: MIT */
/*
 * inject_int.h: what request.c and mime.c share; nothing outside
 * src/inject (except its tests) includes this.
 */
#ifndef SL_INJECT_INT_H
#define SL_INJECT_INT_H

#include <stddef.h>

#include <jansson.h>

#include "inject/template.h"

/* Where a recipient's values come from (docs/TEMPLATES.md), in order. */
struct inject_vars {
	const char *email;	/* the variable "email" */
	json_t *rcpt;		/* the recipient's vars, or NULL */
	json_t *batch;		/* the request's vars, or NULL */
	char num[64];		/* a number or boolean as text */
};

/* An inject_var_fn over struct inject_vars. */
const char *inject_vars_lookup(void *arg, const char *name, size_t nlen,
    size_t *vlen);

/* The templated fields of a request and where each renders. */
struct inject_field {
	const char *key;	/* "subject", ... ; "headers" values apart */
	enum inject_esc esc;
};
extern const struct inject_field inject_fields[4];

#endif
