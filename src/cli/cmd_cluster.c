/* SPDX-License-Identifier: MIT */
/*
 * cmd_cluster.c: `sluice cluster status|queue summary|queue list`: one
 * view over the nodes of [cluster] nodes. Every node's HTTP API is asked
 * at once (cluster_http.c) and the answers are merged: statuses side by
 * side with their sums, queue summaries added up per destination, queue
 * listings printed as their pages come, each message with its node.
 *
 * A node that does not answer (refused, timed out, an HTTP error such as
 * 401) is named in the output, on standard error, and in the JSON's
 * "unreachable", and the exit code is 1: never silently left out.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/http.h>

#include "cli/cli.h"
#include "cli/cluster.h"
#include "conf/conf.h"
#include "util/util.h"

struct cl_opts {
	const char *conf;
	const char *domain;
	const char *state;
	int json;
};

struct cl_run {
	struct cl_client *cl;
	struct cl_node *nodes;
	size_t n;
	struct cl_opts *o;
	size_t messages, recipients;	/* queue list: printed so far */
};

#define J_INT(o, k) ((long long)json_integer_value(json_object_get((o), (k))))

/* The first line of the token file, or NULL with a message. */
static char *
cl_token(const char *path)
{
	char line[1024];
	FILE *f = fopen(path, "r");

	if (f == NULL) {
		fprintf(stderr, "sluice cluster: [cluster] token_file %s: %m\n",
		    path);
		return NULL;
	}
	if (fgets(line, sizeof(line), f) == NULL)
		line[0] = '\0';
	fclose(f);
	sl_strtrim(line);
	if (line[0] == '\0') {
		fprintf(stderr, "sluice cluster: [cluster] token_file %s is "
		    "empty\n", path);
		return NULL;
	}
	return xstrdup(line);
}

/* The configuration's nodes and token; CLI_OK or the exit code. */
static int
cl_setup(struct cl_run *r, struct cl_opts *o)
{
	char err[1024], *list, *save = NULL, *tok, *token = NULL;
	struct sl_conf *c;
	int ok;

	r->o = o;
	o->conf = cli_conf_pick(o->conf, "sluice cluster", &ok);
	if (!ok)
		return CLI_USAGE;
	if ((c = conf_load(o->conf, err, sizeof(err))) == NULL) {
		fprintf(stderr, "sluice cluster: %s\n", err);
		return CLI_USAGE;
	}
	if (c->cluster_nodes[0] == '\0') {
		fprintf(stderr, "sluice cluster: no [cluster] nodes in %s\n",
		    o->conf ? o->conf : "the built-in configuration (-c FILE)");
		conf_free(c);
		return CLI_USAGE;
	}
	if (c->cluster_token_file[0] != '\0' &&
	    (token = cl_token(c->cluster_token_file)) == NULL) {
		conf_free(c);
		return CLI_FAILED;
	}
	r->cl = cl_client_new(token, (int)c->cluster_timeout);
	free(token);
	list = xstrdup(c->cluster_nodes);
	for (tok = strtok_r(list, ",", &save); tok != NULL;
	    tok = strtok_r(NULL, ",", &save)) {
		char *eq;
		tok = sl_strtrim(tok);
		if (*tok == '\0' || (eq = strchr(tok, '=')) == NULL)
			continue;	/* conf.c checked the form */
		*eq = '\0';
		r->nodes = xrealloc(r->nodes, (r->n + 1) * sizeof(*r->nodes));
		if (cl_node_init(&r->nodes[r->n], r->cl, sl_strtrim(tok),
		    sl_strtrim(eq + 1), err, sizeof(err)) != 0) {
			fprintf(stderr, "sluice cluster: [cluster] nodes: %s\n",
			    err);
			cl_node_clean(&r->nodes[r->n]);
			free(list);
			conf_free(c);
			return CLI_USAGE;
		}
		r->n++;
	}
	free(list);
	conf_free(c);
	return CLI_OK;
}

static void
cl_teardown(struct cl_run *r)
{
	for (size_t i = 0; i < r->n; i++) {
		json_decref(r->nodes[i].result);
		free(r->nodes[i].cursor);
		cl_node_clean(&r->nodes[i]);
	}
	free(r->nodes);
	cl_client_free(r->cl);
}

/* Name each node that did not answer on standard error; CLI_OK if none. */
static int
cl_verdict(struct cl_run *r)
{
	int rc = CLI_OK;

	for (size_t i = 0; i < r->n; i++) {
		if (r->nodes[i].error == NULL)
			continue;
		fprintf(stderr, "sluice cluster: node %s (%s) did not answer: "
		    "%s\n", r->nodes[i].name, r->nodes[i].url,
		    r->nodes[i].error);
		rc = CLI_FAILED;
	}
	return rc;
}

/* The "nodes" and "unreachable" members of a JSON answer. */
static void
cl_json_nodes(struct cl_run *r, json_t *out, const char *what)
{
	json_t *nodes = json_array(), *down = json_array();

	for (size_t i = 0; i < r->n; i++) {
		struct cl_node *n = &r->nodes[i];
		json_t *o = json_pack("{s:s, s:s}", "name", n->name, "url",
		    n->url);
		if (n->error != NULL) {
			json_object_set_new(o, "error", json_string(n->error));
			json_array_append_new(down, json_string(n->name));
		} else if (what != NULL && n->result != NULL) {
			json_object_set(o, what, n->result);
		}
		json_array_append_new(nodes, o);
	}
	json_object_set_new(out, "nodes", nodes);
	json_object_set_new(out, "unreachable", down);
}

/* Keep each node's answer (or why there is none). */
static void
cl_keep(void *arg, struct cl_node *n, json_t *j, const char *why)
{
	if (j != NULL)
		n->result = json_incref(j);
	else
		n->error = xstrdup(why);
}

static void
cl_ask_all(struct cl_run *r, const char *path)
{
	for (size_t i = 0; i < r->n; i++)
		cl_get(&r->nodes[i], path, cl_keep, r);
	cl_client_run(r->cl);
}

/* ---- status ---- */

static void
cl_status_print(struct cl_run *r, json_t *total)
{
	printf("%-10s %-26s %-9s %9s %5s %5s %8s %8s %8s %8s\n", "NODE", "URL",
	    "STATE", "UPTIME", "IN", "OUT", "QUEUED", "RCPTS", "RECV/s",
	    "DELIV/s");
	for (size_t i = 0; i < r->n; i++) {
		struct cl_node *n = &r->nodes[i];
		json_t *s = n->result, *c, *q, *r1;
		char up[32];

		if (n->error != NULL) {
			printf("%-10s %-26s DOWN: %s\n", n->name, n->url,
			    n->error);
			continue;
		}
		c = json_object_get(s, "connections");
		q = json_object_get(s, "queue");
		r1 = json_object_get(json_object_get(s, "rates"), "last_1m");
		printf("%-10s %-26s %-9s %9s %5lld %5lld %8lld %8lld %8.2f "
		    "%8.2f\n", n->name, n->url,
		    json_is_true(json_object_get(s, "stopping")) ? "stopping" :
		    json_is_true(json_object_get(s, "draining")) ? "draining" :
		    "up", cli_fmt_age(J_INT(s, "uptime"), up, sizeof(up)),
		    J_INT(c, "in"), J_INT(c, "out"), J_INT(q, "messages"),
		    J_INT(q, "recipients"),
		    json_real_value(json_object_get(r1, "received")),
		    json_real_value(json_object_get(r1, "delivered")));
	}
	printf("%-10s %-26s %-9s %9s %5lld %5lld %8lld %8lld %8.2f %8.2f\n",
	    "total", "", "", "", J_INT(total, "connections_in"),
	    J_INT(total, "connections_out"), J_INT(total, "messages"),
	    J_INT(total, "recipients"),
	    json_real_value(json_object_get(total, "received_per_s")),
	    json_real_value(json_object_get(total, "delivered_per_s")));
}

static int
cl_status(struct cl_run *r)
{
	long long in = 0, out = 0, msgs = 0, rcpts = 0;
	double recv = 0, deliv = 0;
	json_t *total, *all;
	int rc;

	cl_ask_all(r, "/api/v1/status");
	for (size_t i = 0; i < r->n; i++) {
		json_t *s = r->nodes[i].result, *c, *q, *r1;
		if (s == NULL)
			continue;
		c = json_object_get(s, "connections");
		q = json_object_get(s, "queue");
		r1 = json_object_get(json_object_get(s, "rates"), "last_1m");
		in += J_INT(c, "in");
		out += J_INT(c, "out");
		msgs += J_INT(q, "messages");
		rcpts += J_INT(q, "recipients");
		recv += json_real_value(json_object_get(r1, "received"));
		deliv += json_real_value(json_object_get(r1, "delivered"));
	}
	total = json_pack("{s:I, s:I, s:I, s:I, s:f, s:f}", "connections_in",
	    (json_int_t)in, "connections_out", (json_int_t)out, "messages",
	    (json_int_t)msgs, "recipients", (json_int_t)rcpts,
	    "received_per_s", recv, "delivered_per_s", deliv);
	if (r->o->json) {
		all = json_object();
		cl_json_nodes(r, all, "status");
		json_object_set(all, "total", total);
		cli_print_json(all);
		json_decref(all);
	} else {
		cl_status_print(r, total);
	}
	json_decref(total);
	rc = cl_verdict(r);
	return rc;
}

/* ---- queue summary ---- */

/* Add node summary s into the merged one m (destinations by name). */
static void
cl_summary_add(json_t *m, json_t *s)
{
	json_t *dests = json_object_get(m, "destinations"), *d, *v;
	json_t *index = json_object_get(m, "_index");
	long long oldest = J_INT(s, "oldest"), mo = J_INT(m, "oldest");
	size_t i, k;

	json_object_set_new(m, "messages", json_integer(J_INT(m, "messages") +
	    J_INT(s, "messages")));
	json_object_set_new(m, "recipients", json_integer(J_INT(m,
	    "recipients") + J_INT(s, "recipients")));
	if (oldest != 0 && (mo == 0 || oldest < mo))
		json_object_set_new(m, "oldest", json_integer(oldest));
	if (json_object_get(m, "age_minutes") == NULL)
		json_object_set(m, "age_minutes", json_object_get(s,
		    "age_minutes"));
	if (J_INT(s, "now") > J_INT(m, "now"))
		json_object_set(m, "now", json_object_get(s, "now"));
	json_array_foreach(json_object_get(s, "destinations"), i, d) {
		const char *name = json_string_value(json_object_get(d,
		    "destination"));
		json_t *have = name ? json_object_get(index, name) : NULL;
		json_t *ages;

		if (name == NULL)
			continue;
		if (have == NULL) {
			have = json_pack("{s:s, s:I, s:I, s:[], s:I, s:I}",
			    "destination", name, "messages", (json_int_t)0,
			    "recipients", (json_int_t)0, "ages", "oldest",
			    (json_int_t)0, "connections", (json_int_t)0);
			json_object_set(index, name, have);
			json_array_append_new(dests, have);
		}
		json_object_set_new(have, "messages", json_integer(J_INT(have,
		    "messages") + J_INT(d, "messages")));
		json_object_set_new(have, "recipients", json_integer(J_INT(have,
		    "recipients") + J_INT(d, "recipients")));
		json_object_set_new(have, "connections", json_integer(J_INT(
		    have, "connections") + J_INT(d, "connections")));
		oldest = J_INT(d, "oldest");
		if (oldest != 0 && (J_INT(have, "oldest") == 0 ||
		    oldest < J_INT(have, "oldest")))
			json_object_set_new(have, "oldest", json_integer(oldest));
		ages = json_object_get(have, "ages");
		json_array_foreach(json_object_get(d, "ages"), k, v) {
			json_t *a = json_array_get(ages, k);
			if (a == NULL)
				json_array_append_new(ages, json_integer(
				    json_integer_value(v)));
			else
				json_integer_set(a, json_integer_value(a) +
				    json_integer_value(v));
		}
	}
}

/* Busiest first, as `sluice queue summary` lists them. */
static int
cl_dest_cmp(const void *a, const void *b)
{
	json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
	long long rx = J_INT(x, "recipients"), ry = J_INT(y, "recipients");

	if (rx != ry)
		return rx > ry ? -1 : 1;
	return strcmp(json_string_value(json_object_get(x, "destination")),
	    json_string_value(json_object_get(y, "destination")));
}

/* The merged table as `sluice queue summary` prints one, then each node. */
static void
cl_summary_print(struct cl_run *r, json_t *m)
{
	cli_print_summary(m);
	for (size_t k = 0; k < r->n; k++) {
		struct cl_node *n = &r->nodes[k];
		if (n->error != NULL)
			printf("  %-10s DOWN: %s\n", n->name, n->error);
		else
			printf("  %-10s %lld message(s), %lld recipient(s)\n",
			    n->name, J_INT(n->result, "messages"),
			    J_INT(n->result, "recipients"));
	}
}

static int
cl_summary(struct cl_run *r)
{
	json_t *m = json_pack("{s:[], s:{}, s:I, s:I, s:I, s:I}",
	    "destinations", "_index", "messages", (json_int_t)0, "recipients",
	    (json_int_t)0, "oldest", (json_int_t)0, "now", (json_int_t)0);
	json_t *dests;
	json_t **v;
	size_t nd;

	cl_ask_all(r, "/api/v1/queue/summary");
	for (size_t i = 0; i < r->n; i++)
		if (r->nodes[i].result != NULL)
			cl_summary_add(m, r->nodes[i].result);
	json_object_del(m, "_index");
	/* busiest first */
	dests = json_object_get(m, "destinations");
	nd = json_array_size(dests);
	v = xcalloc(nd ? nd : 1, sizeof(*v));
	for (size_t i = 0; i < nd; i++)
		v[i] = json_incref(json_array_get(dests, i));
	qsort(v, nd, sizeof(*v), cl_dest_cmp);
	json_array_clear(dests);
	for (size_t i = 0; i < nd; i++)
		json_array_append_new(dests, v[i]);
	free(v);
	if (r->o->json) {
		cl_json_nodes(r, m, NULL);
		/* each node's own totals, to check the sums against */
		for (size_t i = 0; i < r->n; i++) {
			json_t *s = r->nodes[i].result;
			if (s != NULL)
				json_object_set_new(json_array_get(
				    json_object_get(m, "nodes"), i), "summary",
				    json_pack("{s:O, s:O}", "messages",
				    json_object_get(s, "messages"), "recipients",
				    json_object_get(s, "recipients")));
		}
		cli_print_json(m);
	} else {
		cl_summary_print(r, m);
	}
	json_decref(m);
	return cl_verdict(r);
}

/* ---- queue list ---- */

static void cl_list_page(struct cl_run *r, struct cl_node *n);

static void
cl_list_print(struct cl_run *r, struct cl_node *n, json_t *m)
{
	if (r->o->json) {
		char *s;
		json_object_set_new(m, "node", json_string(n->name));
		s = json_dumps(m, JSON_COMPACT);
		fputs(r->messages ? ",\n" : "{\"messages\": [\n", stdout);
		fputs(s, stdout);
		free(s);
		return;
	}
	if (r->messages == 0)
		cli_print_msg_header("NODE");
	cli_print_msg(m, (int64_t)time(NULL), n->name);
}

static void
cl_list_got(void *arg, struct cl_node *n, json_t *j, const char *why)
{
	struct cl_run *r = arg;
	json_t *m, *next;
	size_t i;

	if (j == NULL) {
		n->error = xstrdup(why);
		return;
	}
	json_array_foreach(json_object_get(j, "messages"), i, m) {
		cl_list_print(r, n, m);
		r->messages++;
		r->recipients += json_array_size(json_object_get(m,
		    "recipients"));
		n->count++;
	}
	fflush(stdout);
	free(n->cursor);
	n->cursor = NULL;
	next = json_object_get(j, "next_cursor");
	if (json_is_string(next)) {
		n->cursor = xstrdup(json_string_value(next));
		cl_list_page(r, n);
	}
}

/* Ask n for its next page (the first without a cursor). */
static void
cl_list_page(struct cl_run *r, struct cl_node *n)
{
	char path[2048];
	size_t len;

	len = (size_t)snprintf(path, sizeof(path), "/api/v1/queue?limit=1000");
	if (n->cursor != NULL) {
		char *e = evhttp_encode_uri(n->cursor);
		len += (size_t)snprintf(path + len, sizeof(path) - len,
		    "&cursor=%s", e);
		free(e);
	}
	if (r->o->domain != NULL) {
		char *e = evhttp_encode_uri(r->o->domain);
		len += (size_t)snprintf(path + len, sizeof(path) - len,
		    "&domain=%s", e);
		free(e);
	}
	if (r->o->state != NULL && len < sizeof(path)) {
		char *e = evhttp_encode_uri(r->o->state);
		snprintf(path + len, sizeof(path) - len, "&state=%s", e);
		free(e);
	}
	cl_get(n, path, cl_list_got, r);
}

static int
cl_list(struct cl_run *r)
{
	for (size_t i = 0; i < r->n; i++)
		cl_list_page(r, &r->nodes[i]);
	cl_client_run(r->cl);
	if (r->o->json) {
		json_t *tail = json_object();
		char *s;
		cl_json_nodes(r, tail, NULL);
		for (size_t i = 0; i < r->n; i++)
			if (r->nodes[i].error == NULL)
				json_object_set_new(json_array_get(
				    json_object_get(tail, "nodes"), i),
				    "messages", json_integer((json_int_t)
				    r->nodes[i].count));
		json_object_set_new(tail, "count", json_integer((json_int_t)
		    r->messages));
		s = json_dumps(tail, JSON_COMPACT);
		/* the tail's members after the streamed array */
		printf("%s], %s\n", r->messages ? "\n" : "{\"messages\": [",
		    s + 1);
		free(s);
		json_decref(tail);
	} else {
		if (r->messages == 0)
			printf("Mail queue is empty\n");
		else
			printf("-- %zu message(s), %zu recipient(s)\n",
			    r->messages, r->recipients);
		for (size_t i = 0; i < r->n; i++)
			if (r->nodes[i].error != NULL)
				printf("  %-10s DOWN: %s\n", r->nodes[i].name,
				    r->nodes[i].error);
	}
	return cl_verdict(r);
}

/* ---- the command ---- */

static const char cl_usage[] =
    "usage: sluice cluster status [-c FILE] [--json]\n"
    "       sluice cluster queue summary [-c FILE] [--json]\n"
    "       sluice cluster queue list [-c FILE] [--json] [--domain D] "
    "[--state S]\n"
    "  ask every node of [cluster] nodes (their HTTP API) at once and merge\n"
    "  the answers; a node that does not answer is named and the exit code\n"
    "  is 1\n";

int
cmd_cluster(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "json", no_argument, NULL, 'j' },
		{ "domain", required_argument, NULL, 'd' },
		{ "state", required_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct cl_opts o = { 0 };
	struct cl_run r = { 0 };
	const char *what;
	int ch, rc, list = 0;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			o.conf = optarg;
			break;
		case 'j':
			o.json = 1;
			break;
		case 'd':
			o.domain = optarg;
			break;
		case 's':
			o.state = optarg;
			break;
		case 'h':
			printf("%s", cl_usage);
			return CLI_OK;
		default:
			fprintf(stderr, "%s", cl_usage);
			return CLI_USAGE;
		}
	}
	what = optind < argc ? argv[optind] : "";
	if (strcmp(what, "status") == 0 && optind + 1 == argc) {
		list = 0;
	} else if (strcmp(what, "queue") == 0 && optind + 2 == argc &&
	    (strcmp(argv[optind + 1], "summary") == 0 ||
	    strcmp(argv[optind + 1], "list") == 0)) {
		list = strcmp(argv[optind + 1], "list") == 0 ? 1 : 2;
	} else {
		fprintf(stderr, "%s", cl_usage);
		return CLI_USAGE;
	}
	if ((o.domain != NULL || o.state != NULL) && list != 1) {
		fprintf(stderr, "sluice cluster: --domain and --state are for "
		    "queue list\n%s", cl_usage);
		return CLI_USAGE;
	}
	if ((rc = cl_setup(&r, &o)) != CLI_OK) {
		cl_teardown(&r);
		return rc;
	}
	rc = list == 0 ? cl_status(&r) : list == 1 ? cl_list(&r) :
	    cl_summary(&r);
	cl_teardown(&r);
	return rc;
}
