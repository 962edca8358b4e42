/* SPDX-License-Identifier: MIT */
/*
 * vars.c: where a recipient's template values come from (inject_int.h):
 * "email", then the recipient's vars, then the request's; and which
 * fields are templates rendered with which escaping. Used by request.c
 * (the size check at injection) and mime.c (the message at delivery), so
 * both render alike.
 */
#include <stdio.h>
#include <string.h>

#include "inject/inject_int.h"

const struct inject_field inject_fields[4] = {
	{ "subject", INJECT_ESC_HEADER },
	{ "text", INJECT_ESC_TEXT },
	{ "html", INJECT_ESC_HTML },
	{ "unsubscribe", INJECT_ESC_URL },
};

static const char *
inject_value(json_t *v, char *num, size_t size, size_t *vlen)
{
	if (json_is_string(v)) {
		*vlen = json_string_length(v);
		return json_string_value(v);
	}
	if (json_is_integer(v))
		snprintf(num, size, "%lld", (long long)json_integer_value(v));
	else if (json_is_real(v))
		snprintf(num, size, "%.17g", json_real_value(v));
	else if (json_is_boolean(v))
		snprintf(num, size, "%s", json_is_true(v) ? "true" : "false");
	else
		return NULL;
	*vlen = strlen(num);
	return num;
}

const char *
inject_vars_lookup(void *arg, const char *name, size_t nlen, size_t *vlen)
{
	struct inject_vars *bv = arg;
	char key[INJECT_TPL_NAME_MAX + 1];
	const char *v;

	if (nlen == 5 && memcmp(name, "email", 5) == 0) {
		*vlen = strlen(bv->email);
		return bv->email;
	}
	memcpy(key, name, nlen);
	key[nlen] = '\0';
	if (bv->rcpt != NULL && (v = inject_value(json_object_get(bv->rcpt,
	    key), bv->num, sizeof(bv->num), vlen)) != NULL)
		return v;
	if (bv->batch != NULL)
		return inject_value(json_object_get(bv->batch, key), bv->num,
		    sizeof(bv->num), vlen);
	return NULL;
}

