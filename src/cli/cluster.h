/* SPDX-License-Identifier: MIT */
/*
 * cluster.h: what `sluice cluster` (cmd_cluster.c) and its HTTP client
 * (cluster_http.c) share: the nodes of [cluster] nodes and parallel GETs
 * to their APIs (docs/HTTP.md).
 */
#ifndef SL_CLI_CLUSTER_H
#define SL_CLI_CLUSTER_H

#include <stddef.h>

#include <jansson.h>

struct cl_client;
struct evhttp_connection;

/* One node of the cluster. */
struct cl_node {
	struct cl_client *cl;
	char *name;			/* fe1 */
	char *url;			/* http://10.0.0.1:9025 */
	char *host;
	int port;
	struct evhttp_connection *conn;
	char *error;			/* why it did not answer; owned */
	json_t *result;			/* its answer, for the caller */
	char *cursor;			/* paging: the next page's cursor */
	size_t count;			/* paging: items seen */
};

/*
 * An answer: j (borrowed: take a reference to keep it) or, when j is
 * NULL, why the node did not answer.
 */
typedef void cl_answer_fn(void *arg, struct cl_node *n, json_t *j,
    const char *why);

/* A client whose requests carry "Authorization: Bearer token" (NULL:
 * none) and time out after timeout seconds. */
struct cl_client *cl_client_new(const char *token, int timeout);
/* Turn the loop until no request is in flight. */
void cl_client_run(struct cl_client *cl);
void cl_client_free(struct cl_client *cl);
/* n for name=url; 0, or -1 with the reason in err. */
int cl_node_init(struct cl_node *n, struct cl_client *cl, const char *name,
    const char *url, char *err, size_t errlen);
void cl_node_clean(struct cl_node *n);
/* GET path (with its query) from n; cb runs once, from cl_client_run. */
void cl_get(struct cl_node *n, const char *path, cl_answer_fn *cb,
    void *arg);

#endif
