/* SPDX-License-Identifier: MIT */
/*
 * cli.h: the subcommands of `sluice`. Each takes argc/argv starting at its
 * own name and returns the exit code: 0 done, 1 partly done or failed,
 * 2 usage error, 3 daemon not reachable (sendmail mode uses the sysexits
 * codes instead, as every sendmail does).
 */
#ifndef SL_CLI_H
#define SL_CLI_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

enum {
	CLI_OK = 0,
	CLI_FAILED = 1,
	CLI_USAGE = 2,
	CLI_UNREACHABLE = 3,
};

struct cli_cmd {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *help;
	int talks_to_daemon;	/* takes -c FILE (also before the command) */
};

/*
 * The configuration given before the command (`sluice -c FILE COMMAND`),
 * or NULL. Used by a command that talks to sluiced when it has no -c of
 * its own; both given and different is a usage error (cli_conf_pick).
 */
extern const char *cli_conf_path;
/* The file to use: own (the command's -c) or cli_conf_path; NULL with a
 * message on standard error when both are given and differ. *ok is 0 then. */
const char *cli_conf_pick(const char *own, const char *prog, int *ok);

int cmd_version(int argc, char **argv);
int cmd_sink(int argc, char **argv);
int cmd_blast(int argc, char **argv);
int cmd_queue(int argc, char **argv);
int cmd_mailq(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_shaping(int argc, char **argv);
int cmd_reload(int argc, char **argv);
int cmd_drain(int argc, char **argv);
int cmd_undrain(int argc, char **argv);
int cmd_stop(int argc, char **argv);
int cmd_sendmail(int argc, char **argv);
int cmd_failures(int argc, char **argv);
int cmd_archive(int argc, char **argv);
int cmd_user(int argc, char **argv);
int cmd_dkim(int argc, char **argv);
int cmd_cluster(int argc, char **argv);

/*
 * cmd_ctl.c: send cmd with args (borrowed, may be NULL) to the control
 * socket of the configuration at conf_path (NULL: built-in defaults).
 * Returns CLI_OK with *result a new reference, or prints what went wrong
 * (the daemon's error, each unknown MID) and returns the exit code.
 */
int cli_call(const char *conf_path, const char *cmd, json_t *args,
    json_t **result);
/* The same, handing the items of a streamed answer to cb as they come
 * (control.h); *result is then the final result. */
struct control_stream_cb;
int cli_call_stream(const char *conf_path, const char *cmd, json_t *args,
    const struct control_stream_cb *cb, json_t **result);
/*
 * cmd_queue.c: the tables of `sluice queue` (also for `sluice cluster`):
 * a summary ({destinations, age_minutes, messages, recipients, oldest,
 * now}); a message with its recipients, after the header line, each with
 * a NODE column first when node is not NULL.
 */
void cli_print_summary(json_t *summary);
void cli_print_msg_header(const char *node);
void cli_print_msg(json_t *m, int64_t now, const char *node);
/* Print j as indented JSON and a newline. */
void cli_print_json(json_t *j);
/* "1.2K", "2026-11-24 10:00:00" (local time; 0: "now"), "3m05s" */
char *cli_fmt_size(uint64_t n, char *buf, size_t size);
char *cli_fmt_time(int64_t t, char *buf, size_t size);
char *cli_fmt_age(int64_t secs, char *buf, size_t size);

#endif
