/* SPDX-License-Identifier: MIT */
/* cmd_blast.c: `sluice blast` (placeholder while the engine is written). */
#include "cli/cli.h"

int
cmd_blast(int argc, char **argv)
{
	return 2;
}
