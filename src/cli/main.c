/* SPDX-License-Identifier: MIT */
/*
 * main.c: `sluice`, the command line. Each subcommand is one cmd_*.c file;
 * this file only dispatches.
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

static const struct cli_cmd cli_cmds[] = {
	{ "version", cmd_version, "print the version" },
	{ "sink", cmd_sink, "a fake SMTP server for tests (never relays)" },
	{ "blast", cmd_blast, "an SMTP load generator" },
};

static void
cli_usage(FILE *f)
{
	fprintf(f, "usage: sluice COMMAND [ARGS]\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(cli_cmds) / sizeof(cli_cmds[0]); i++)
		fprintf(f, "  %-10s %s\n", cli_cmds[i].name, cli_cmds[i].help);
}

int
main(int argc, char **argv)
{
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
