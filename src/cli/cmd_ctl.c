/* SPDX-License-Identifier: MIT */
/*
 * cmd_ctl.c: `sluice reload`, `stop`, `drain` and `undrain`, and what
 * every command that talks to the daemon shares: find its socket from the
 * configuration (-c FILE, as sluiced), send one request, turn the answer
 * into the exit codes of cli.h, and the formats of the human tables.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "conf/conf.h"
#include "control/control.h"
#include "util/util.h"

#define CLI_TIMEOUT_MS 60000

/*
 * [control] socket read leniently from a file that does not load: the
 * operator may be in the middle of an edit, and `reload` must reach the
 * daemon to hear its error. A new string, or NULL if the file has none.
 */
static char *
cli_scan_socket(FILE *f)
{
	char line[4096], *p, *eq, *sock = NULL;
	int in_control = 0;

	while (fgets(line, sizeof(line), f) != NULL) {
		p = sl_strtrim(line);
		if (*p == '[') {
			in_control = strncmp(p, "[control]", 9) == 0;
			continue;
		}
		if (!in_control || (eq = strchr(p, '=')) == NULL)
			continue;
		*eq = '\0';
		if (strcmp(sl_strtrim(p), "socket") != 0)
			continue;
		p = eq + 1;
		p[strcspn(p, ";#")] = '\0';
		free(sock);
		sock = xstrdup(sl_strtrim(p));
	}
	return sock;
}

/* The control socket of the configuration at conf_path; a new string. */
static char *
cli_socket_path(const char *conf_path, const char *cmd)
{
	struct sl_conf *conf;
	char err[1024], *sock;
	FILE *f;

	if ((conf = conf_load(conf_path, err, sizeof(err))) != NULL) {
		sock = xstrdup(conf->control_socket);
		conf_free(conf);
		return sock;
	}
	if ((f = fopen(conf_path, "r")) == NULL) {
		fprintf(stderr, "sluice: %s\n", err);
		return NULL;
	}
	sock = cli_scan_socket(f);
	fclose(f);
	if (sock == NULL) {
		conf = conf_load(NULL, err, sizeof(err));
		sock = xstrdup(conf ? conf->control_socket : "");
		conf_free(conf);
	}
	if (strcmp(cmd, "reload") != 0)
		fprintf(stderr, "sluice: warning: %s\n", err);
	return sock;
}

const char *
cli_conf_pick(const char *own, const char *prog, int *ok)
{
	*ok = 1;
	if (own == NULL)
		return cli_conf_path;
	if (cli_conf_path != NULL && strcmp(own, cli_conf_path) != 0) {
		fprintf(stderr, "%s: two configuration files: -c %s before "
		    "the command and -c %s after it\n", prog, cli_conf_path,
		    own);
		*ok = 0;
	}
	return own;
}

int
cli_call(const char *conf_path, const char *cmd, json_t *args,
    json_t **result)
{
	return cli_call_stream(conf_path, cmd, args, NULL, result);
}

int
cli_call_stream(const char *conf_path, const char *cmd, json_t *args,
    const struct control_stream_cb *cb, json_t **result)
{
	json_t *resp, *unknown, *v;
	enum control_call_status st;
	char err[1024], *sock;
	size_t i;
	int ok;

	*result = NULL;
	conf_path = cli_conf_pick(conf_path, "sluice", &ok);
	if (!ok || (sock = cli_socket_path(conf_path, cmd)) == NULL)
		return CLI_USAGE;
	st = control_call_stream(sock, cmd, args, CLI_TIMEOUT_MS, cb, &resp,
	    err, sizeof(err));
	free(sock);
	if (st != CONTROL_CALL_OK) {
		fprintf(stderr, "sluice: %s\n", err);
		return st == CONTROL_CALL_FAILED ? CLI_FAILED : CLI_UNREACHABLE;
	}
	if (json_is_true(json_object_get(resp, "ok"))) {
		*result = json_incref(json_object_get(resp, "result"));
		json_decref(resp);
		return CLI_OK;
	}
	fprintf(stderr, "sluice: %s\n",
	    json_string_value(json_object_get(resp, "error")));
	unknown = json_object_get(resp, "unknown");
	json_array_foreach(unknown, i, v)
		fprintf(stderr, "sluice: %s: no such message in the queue\n",
		    json_is_string(v) ? json_string_value(v) : "?");
	json_decref(resp);
	return CLI_FAILED;
}

void
cli_print_json(json_t *j)
{
	char *s = json_dumps(j, JSON_INDENT(2) | JSON_ENCODE_ANY);

	printf("%s\n", s ? s : "null");
	free(s);
}

char *
cli_fmt_size(uint64_t n, char *buf, size_t size)
{
	static const char units[] = "KMGT";
	double v = (double)n;
	int u = -1;

	while (v >= 1024 && u < 3) {
		v /= 1024;
		u++;
	}
	if (u < 0)
		snprintf(buf, size, "%llu", (unsigned long long)n);
	else
		snprintf(buf, size, "%.*f%c", v < 10 ? 1 : 0, v, units[u]);
	return buf;
}

char *
cli_fmt_time(int64_t t, char *buf, size_t size)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (t == 0) {
		snprintf(buf, size, "now");
		return buf;
	}
	localtime_r(&tt, &tm);
	strftime(buf, size, "%Y-%m-%d %H:%M:%S", &tm);
	return buf;
}

char *
cli_fmt_age(int64_t secs, char *buf, size_t size)
{
	if (secs < 0)
		secs = 0;
	if (secs < 60)
		snprintf(buf, size, "%llds", (long long)secs);
	else if (secs < 3600)
		snprintf(buf, size, "%lldm%02llds", (long long)secs / 60,
		    (long long)secs % 60);
	else if (secs < 86400)
		snprintf(buf, size, "%lldh%02lldm", (long long)secs / 3600,
		    (long long)secs % 3600 / 60);
	else
		snprintf(buf, size, "%lldd%02lldh", (long long)secs / 86400,
		    (long long)secs % 86400 / 3600);
	return buf;
}

/* Parse the flags every control command takes: -c FILE, -h. */
static int
cli_ctl_flags(int argc, char **argv, const char *usage, const char **conf,
    int *wait)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "no-wait", no_argument, NULL, 'W' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int ch;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			*conf = optarg;
			break;
		case 'W':
			if (wait == NULL)
				goto bad;
			*wait = 0;
			break;
		case 'h':
			printf("%s", usage);
			return -1;
		default:
			goto bad;
		}
	}
	if (optind == argc)
		return 0;
	fprintf(stderr, "sluice %s: unexpected argument '%s'\n", argv[0],
	    argv[optind]);
bad:
	fprintf(stderr, "%s", usage);
	return CLI_USAGE;
}

int
cmd_reload(int argc, char **argv)
{
	const char *conf = NULL;
	json_t *res;
	int rc;

	rc = cli_ctl_flags(argc, argv, "usage: sluice reload [-c FILE]\n"
	    "  re-read sluiced's configuration file; a bad file is refused\n"
	    "  and the configuration in use stays\n", &conf, NULL);
	if (rc != 0)
		return rc < 0 ? CLI_OK : rc;
	if ((rc = cli_call(conf, "reload", NULL, &res)) != CLI_OK) {
		if (rc == CLI_FAILED)
			fprintf(stderr, "sluice: reload refused; sluiced keeps "
			    "the configuration in use\n");
		return rc;
	}
	printf("sluice: configuration reloaded from %s\n",
	    json_string_value(json_object_get(res, "file")));
	json_decref(res);
	return CLI_OK;
}

/* `sluice drain` and `undrain`: the same flags, one request each. */
static int
cli_drain(int argc, char **argv, const char *cmd, const char *usage)
{
	const char *conf = NULL;
	json_t *res;
	int rc;

	rc = cli_ctl_flags(argc, argv, usage, &conf, NULL);
	if (rc != 0)
		return rc < 0 ? CLI_OK : rc;
	if ((rc = cli_call(conf, cmd, NULL, &res)) != CLI_OK)
		return rc;
	if (json_is_true(json_object_get(res, "draining")))
		printf("sluice: draining: the SMTP listeners are closed, %lld "
		    "session(s) still open; delivery goes on\n",
		    (long long)json_integer_value(json_object_get(res,
		    "sessions")));
	else
		printf("sluice: accepting mail again\n");
	json_decref(res);
	return CLI_OK;
}

int
cmd_drain(int argc, char **argv)
{
	return cli_drain(argc, argv, "drain", "usage: sluice drain [-c FILE]\n"
	    "  stop accepting mail: sluiced closes its SMTP listeners (a load\n"
	    "  balancer's check marks the node down, /healthz answers 503);\n"
	    "  sessions in progress finish and delivery goes on. `sluice\n"
	    "  undrain` opens them again.\n");
}

int
cmd_undrain(int argc, char **argv)
{
	return cli_drain(argc, argv, "undrain", "usage: sluice undrain "
	    "[-c FILE]\n  accept mail again after `sluice drain`: the SMTP "
	    "listeners\n  open on the same addresses\n");
}

/* 1 while the process exists and is not a zombie. */
static int
cli_pid_alive(pid_t pid)
{
	char path[64], buf[512], *p;
	FILE *f;

	if (kill(pid, 0) != 0 && errno == ESRCH)
		return 0;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if ((f = fopen(path, "r")) == NULL)
		return 1;
	p = fgets(buf, sizeof(buf), f);
	fclose(f);
	if (p == NULL || (p = strrchr(buf, ')')) == NULL)
		return 1;
	return p[1] != ' ' || p[2] != 'Z';
}

int
cmd_stop(int argc, char **argv)
{
	const char *conf = NULL;
	int wait = 1, rc;
	json_t *res;
	pid_t pid;
	time_t deadline;

	rc = cli_ctl_flags(argc, argv, "usage: sluice stop [-c FILE] "
	    "[--no-wait]\n"
	    "  stop sluiced gracefully (as SIGTERM): open transactions finish,\n"
	    "  nothing queued is lost; waits until it exited unless --no-wait\n",
	    &conf, &wait);
	if (rc != 0)
		return rc < 0 ? CLI_OK : rc;
	if ((rc = cli_call(conf, "stop", NULL, &res)) != CLI_OK)
		return rc;
	pid = (pid_t)json_integer_value(json_object_get(res, "pid"));
	json_decref(res);
	printf("sluice: sluiced (pid %d) is stopping\n", (int)pid);
	if (!wait || pid <= 0)
		return CLI_OK;
	fflush(stdout);
	deadline = time(NULL) + 3700;
	while (cli_pid_alive(pid)) {
		if (time(NULL) > deadline) {
			fprintf(stderr, "sluice: sluiced (pid %d) is still "
			    "running\n", (int)pid);
			return CLI_FAILED;
		}
		usleep(20000);
	}
	printf("sluice: sluiced stopped\n");
	return CLI_OK;
}
