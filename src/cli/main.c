/* SPDX-License-Identifier: MIT */
/*
 * main.c: `sluice`, the command line. Each subcommand is one cmd_*.c file;
 * this file only dispatches. Called as `sendmail` (by its name, after
 * `make install`) it is `sluice sendmail`, and as `mailq` it is
 * `sluice queue list`.
 *
 * `sluice -c FILE COMMAND ...` is `sluice COMMAND -c FILE ...` (as
 * `git -C DIR`): the file given before the command is cli_conf_path, which
 * every command that talks to sluiced uses when it has no -c of its own.
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

const char *cli_conf_path;

static const struct cli_cmd cli_cmds[] = {
	{ "version", cmd_version, "print the version", 0 },
	{ "sink", cmd_sink, "a fake SMTP server for tests (never relays)", 0 },
	{ "blast", cmd_blast, "an SMTP load generator", 0 },
	{ "queue", cmd_queue, "list, flush, delete, hold, release, bounce "
	    "queued mail", 1 },
	{ "status", cmd_status, "uptime, connections, rates, queue and spool",
	    1 },
	{ "shaping", cmd_shaping, "traffic shaping: status, resume a site",
	    1 },
	{ "drain", cmd_drain, "stop accepting mail (listeners closed); "
	    "delivery goes on", 1 },
	{ "undrain", cmd_undrain, "accept mail again after drain", 1 },
	{ "reload", cmd_reload, "make sluiced re-read its configuration", 1 },
	{ "stop", cmd_stop, "stop sluiced gracefully", 1 },
	{ "cluster", cmd_cluster, "status and queue of every node of "
	    "[cluster] nodes", 1 },
	{ "sendmail", cmd_sendmail, "submit a message (sendmail-compatible)",
	    1 },
	{ "failures", cmd_failures, "list, retry, purge recipients that "
	    "failed for good", 1 },
	{ "archive", cmd_archive, "find and show archived messages", 1 },
	{ "user", cmd_user, "add, delete, list the users of submission", 1 },
	{ "dkim", cmd_dkim, "make a DKIM signing key and its DNS record", 1 },
};

static void
cli_usage(FILE *f)
{
	fprintf(f, "usage: sluice [-c FILE] COMMAND [ARGS]\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(cli_cmds) / sizeof(cli_cmds[0]); i++)
		fprintf(f, "  %-10s %s\n", cli_cmds[i].name, cli_cmds[i].help);
	fprintf(f, "\n`sluice COMMAND -h` for its flags. The commands that talk "
	    "to sluiced take\n-c FILE (its configuration), before the command "
	    "or after it:\n`sluice -c FILE queue list` is `sluice queue list -c "
	    "FILE`. They exit\n0 done, 1 partly done, 2 usage, 3 sluiced not "
	    "reachable.\n");
}

/*
 * -c FILE, --config FILE, --config=FILE or -cFILE before the command: the
 * arguments it took (0 if argv[1] is none of them, -1 if its value is
 * missing).
 */
static int
cli_global_conf(int argc, char **argv)
{
	const char *a = argv[1];

	if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
		if (argc < 3)
			return -1;
		cli_conf_path = argv[2];
		return 2;
	}
	if (strncmp(a, "--config=", 9) == 0) {
		cli_conf_path = a + 9;
		return 1;
	}
	if (strncmp(a, "-c", 2) == 0) {
		cli_conf_path = a + 2;
		return 1;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	char *name = strrchr(argv[0], '/');
	int skip;

	name = name ? name + 1 : argv[0];
	if (strcmp(name, "sendmail") == 0)
		return cmd_sendmail(argc, argv);
	if (strcmp(name, "mailq") == 0)
		return cmd_mailq(argc, argv);
	if (argc >= 2 && (skip = cli_global_conf(argc, argv)) != 0) {
		if (skip < 0) {
			fprintf(stderr, "sluice: %s needs a file\n", argv[1]);
			cli_usage(stderr);
			return 2;
		}
		argv[skip] = argv[0];
		argv += skip;
		argc -= skip;
	}
	if (argc < 2) {
		cli_usage(stderr);
		return 2;
	}
	if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		cli_usage(stdout);
		return 0;
	}
	for (size_t i = 0; i < sizeof(cli_cmds) / sizeof(cli_cmds[0]); i++) {
		if (strcmp(argv[1], cli_cmds[i].name) != 0)
			continue;
		if (cli_conf_path != NULL && !cli_cmds[i].talks_to_daemon) {
			fprintf(stderr, "sluice: -c FILE is for the commands "
			    "that talk to sluiced, not '%s'\n", argv[1]);
			return 2;
		}
		return cli_cmds[i].fn(argc - 1, argv + 1);
	}
	fprintf(stderr, "sluice: unknown command '%s'\n", argv[1]);
	cli_usage(stderr);
	return 2;
}
