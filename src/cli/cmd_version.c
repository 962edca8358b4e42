/* SPDX-License-Identifier: MIT */
/* cmd_version.c: `sluice version`. */
#include <stdio.h>

#include "cli/cli.h"

int
cmd_version(int argc, char **argv)
{
	printf("sluice 0.1.0\n");
	return 0;
}
