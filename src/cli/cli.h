/* SPDX-License-Identifier: MIT */
/*
 * cli.h: the subcommands of `sluice`. Each takes argc/argv starting at its
 * own name and returns the exit code: 0 done, 1 partly done or failed,
 * 2 usage error, 3 daemon not reachable.
 */
#ifndef SL_CLI_H
#define SL_CLI_H

struct cli_cmd {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *help;
};

int cmd_version(int argc, char **argv);
int cmd_sink(int argc, char **argv);
int cmd_blast(int argc, char **argv);

#endif
