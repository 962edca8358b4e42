/* SPDX-License-Identifier: MIT */
/*
 * proto.c: the control protocol's lines: parse and build requests and
 * responses. Pure: strings in, JSON out, no I/O (unit-tested in
 * tests/unit/control/test_proto.c).
 *
 * A request is {"v":1,"cmd":"name","args":{...}}: v must be 1, cmd a
 * non-empty string of at most 64 bytes, args an object or absent. Unknown
 * top-level keys are ignored, so a later client can add some.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "control/control.h"
#include "util/util.h"

#define CONTROL_MAX_CMD 64

static const char *
control_json_kind(const json_t *j)
{
	switch (json_typeof(j)) {
	case JSON_OBJECT: return "an object";
	case JSON_ARRAY: return "an array";
	case JSON_STRING: return "a string";
	case JSON_INTEGER: case JSON_REAL: return "a number";
	case JSON_TRUE: case JSON_FALSE: return "a boolean";
	default: return "null";
	}
}

/* The line as one JSON object, or NULL with a message. */
static json_t *
control_line_object(const char *line, size_t len, char *err, size_t errlen)
{
	json_error_t je;
	json_t *o;

	if (len > CONTROL_MAX_LINE) {
		snprintf(err, errlen, "line longer than %d bytes",
		    CONTROL_MAX_LINE);
		return NULL;
	}
	o = json_loadb(line, len, JSON_REJECT_DUPLICATES, &je);
	if (o == NULL) {
		snprintf(err, errlen, "not JSON: %s at column %d", je.text,
		    je.column);
		return NULL;
	}
	if (!json_is_object(o)) {
		snprintf(err, errlen, "expected an object, got %s",
		    control_json_kind(o));
		json_decref(o);
		return NULL;
	}
	return o;
}

static int
control_version_ok(json_t *o, char *err, size_t errlen)
{
	json_t *v = json_object_get(o, "v");

	if (v == NULL) {
		snprintf(err, errlen, "\"v\" is missing");
		return 0;
	}
	if (!json_is_integer(v) || json_integer_value(v) != CONTROL_VERSION) {
		snprintf(err, errlen, "protocol version not supported "
		    "(this side speaks v%d)", CONTROL_VERSION);
		return 0;
	}
	return 1;
}

json_t *
control_req_parse(const char *line, size_t len, const char **cmd,
    json_t **args, char *err, size_t errlen)
{
	json_t *o, *c, *a;

	if ((o = control_line_object(line, len, err, errlen)) == NULL)
		return NULL;
	if (!control_version_ok(o, err, errlen))
		goto fail;
	c = json_object_get(o, "cmd");
	if (!json_is_string(c) || json_string_length(c) == 0 ||
	    json_string_length(c) > CONTROL_MAX_CMD) {
		snprintf(err, errlen, "\"cmd\" must be a command name");
		goto fail;
	}
	a = json_object_get(o, "args");
	if (a == NULL) {
		a = json_object();
		json_object_set_new(o, "args", a);
	} else if (!json_is_object(a)) {
		snprintf(err, errlen, "\"args\" must be an object, not %s",
		    control_json_kind(a));
		goto fail;
	}
	*cmd = json_string_value(c);
	*args = a;
	return o;
fail:
	json_decref(o);
	return NULL;
}

/* o as one compact line ending in '\n'; takes o. */
static char *
control_line(json_t *o)
{
	char *s = json_dumps(o, JSON_COMPACT | JSON_ENCODE_ANY);
	char *line;

	json_decref(o);
	if (s == NULL)
		SL_PANIC("json_dumps failed");
	line = xasprintf("%s\n", s);
	free(s);
	return line;
}

char *
control_req_line(const char *cmd, json_t *args)
{
	json_t *o = json_object();

	json_object_set_new(o, "v", json_integer(CONTROL_VERSION));
	json_object_set_new(o, "cmd", json_string(cmd));
	json_object_set_new(o, "args", args ? json_incref(args) :
	    json_object());
	return control_line(o);
}

char *
control_resp_ok_line(json_t *result)
{
	json_t *o = json_object();

	json_object_set_new(o, "v", json_integer(CONTROL_VERSION));
	json_object_set_new(o, "ok", json_true());
	json_object_set_new(o, "result", result ? result : json_null());
	return control_line(o);
}

char *
control_resp_err_line(const char *msg, json_t *unknown)
{
	json_t *o = json_object();

	json_object_set_new(o, "v", json_integer(CONTROL_VERSION));
	json_object_set_new(o, "ok", json_false());
	json_object_set_new(o, "error", json_string(msg));
	if (unknown != NULL)
		json_object_set_new(o, "unknown", unknown);
	return control_line(o);
}

json_t *
control_resp_parse(const char *line, size_t len, char *err, size_t errlen)
{
	json_t *o, *ok, *e;

	if ((o = control_line_object(line, len, err, errlen)) == NULL)
		return NULL;
	if (!control_version_ok(o, err, errlen))
		goto fail;
	ok = json_object_get(o, "ok");
	if (!json_is_boolean(ok)) {
		snprintf(err, errlen, "\"ok\" must be true or false");
		goto fail;
	}
	e = json_object_get(o, "error");
	if (json_is_false(ok) && !json_is_string(e)) {
		snprintf(err, errlen, "an error response without \"error\"");
		goto fail;
	}
	return o;
fail:
	json_decref(o);
	return NULL;
}

char *
control_stream_head_line(const char *key, enum control_stream_kind kind)
{
	json_t *o = json_object();

	json_object_set_new(o, "v", json_integer(CONTROL_VERSION));
	json_object_set_new(o, "ok", json_true());
	json_object_set_new(o, "stream", json_string(key));
	json_object_set_new(o, "kind", json_string(
	    kind == CONTROL_STREAM_TEXT ? "text" : "array"));
	return control_line(o);
}

int
control_stream_head(json_t *resp, const char **key,
    enum control_stream_kind *kind)
{
	json_t *k = json_object_get(resp, "stream");
	const char *kn = json_string_value(json_object_get(resp, "kind"));

	if (!json_is_string(k) || !json_is_true(json_object_get(resp, "ok")))
		return 0;
	*key = json_string_value(k);
	*kind = kn != NULL && strcmp(kn, "text") == 0 ? CONTROL_STREAM_TEXT :
	    CONTROL_STREAM_ARRAY;
	return 1;
}
