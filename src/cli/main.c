/* SPDX-License-Identifier: MIT */
/*
 * main.c: `sluice`, the command line. Each subcommand is one cmd_*.c file;
 * this file only dispatches. Called as `sendmail` (by its name, after
 * `make install`) it is `sluice sendmail`, and as `mailq` it is
 * `sluice queue list`.
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

static const struct cli_cmd cli_cmds[] = {
	{ "version", cmd_version, "print the version" },
	{ "sink", cmd_sink, "a fake SMTP server for tests (never relays)" },
	{ "blast", cmd_blast, "an SMTP load generator" },
	{ "queue", cmd_queue, "list, flush, delete, hold, release, bounce "
	    "queued mail" },
	{ "status", cmd_status, "uptime, connections, rates, queue and spool" },
	{ "reload", cmd_reload, "make sluiced re-read its configuration" },
	{ "stop", cmd_stop, "stop sluiced gracefully" },
	{ "sendmail", cmd_sendmail, "submit a message (sendmail-compatible)" },
};

static void
cli_usage(FILE *f)
{
	fprintf(f, "usage: sluice COMMAND [ARGS]\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(cli_cmds) / sizeof(cli_cmds[0]); i++)
		fprintf(f, "  %-10s %s\n", cli_cmds[i].name, cli_cmds[i].help);
	fprintf(f, "\n`sluice COMMAND -h` for its flags; the commands that talk "
	    "to sluiced take\n-c FILE (its configuration) and exit 0 done, 1 "
	    "partly done, 2 usage,\n3 sluiced not reachable.\n");
}

int
main(int argc, char **argv)
{
	char *name = strrchr(argv[0], '/');

	name = name ? name + 1 : argv[0];
	if (strcmp(name, "sendmail") == 0)
		return cmd_sendmail(argc, argv);
	if (strcmp(name, "mailq") == 0)
		return cmd_mailq(argc, argv);
	if (argc < 2) {
		cli_usage(stderr);
		return 2;
	}
	if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		cli_usage(stdout);
		return 0;
	}
	for (size_t i = 0; i < sizeof(cli_cmds) / sizeof(cli_cmds[0]); i++)
		if (strcmp(argv[1], cli_cmds[i].name) == 0)
			return cli_cmds[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "sluice: unknown command '%s'\n", argv[1]);
	cli_usage(stderr);
	return 2;
}
