/* SPDX-License-Identifier: MIT */
/* www.c: look a path up in a table of compiled-in pages (www.h). */
#include <string.h>

#include "util/www.h"

const struct sl_www_file *
sl_www_find(const struct sl_www_file *files, const char *path)
{
	if (strcmp(path, "/") == 0)
		path = "/index.html";
	for (; files->path != NULL; files++)
		if (strcmp(files->path, path) == 0)
			return files;
	return NULL;
}
