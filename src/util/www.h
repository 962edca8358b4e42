/* SPDX-License-Identifier: MIT */
/*
 * www.h: pages compiled into the programs. Every file under src/<part>/www/
 * becomes a C array (scripts/embed.sh, run by the Makefile) in a table
 * <part>_www[] of the generated build/gen/<part>_www.c, ended by an entry
 * whose path is NULL. No file is read at run time.
 */
#ifndef SL_UTIL_WWW_H
#define SL_UTIL_WWW_H

#include <stddef.h>

struct sl_www_file {
	const char *path;	/* "/index.html" */
	const char *type;	/* "text/html; charset=utf-8" */
	const unsigned char *data;
	size_t len;
};

/* The file served at path in table files ("/" is "/index.html"), or NULL. */
const struct sl_www_file *sl_www_find(const struct sl_www_file *files,
    const char *path);

#endif
