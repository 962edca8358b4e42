/* SPDX-License-Identifier: MIT */
/*
 * cmd_user.c: `sluice user add|del|list`: the users file of submission
 * ([auth] users_file of the configuration given with -c, or -f FILE).
 *
 * add NAME reads the password from standard input (one line), or prompts
 * twice without echo when standard input is a terminal, and stores a new
 * yescrypt hash. Every change rewrites the file atomically (src/auth); a
 * file written by root belongs to the group of [server] user with mode
 * 0640 (sluiced reads it after dropping root), any other 0600. sluiced
 * reads it again on `sluice reload`.
 */
#include <sys/stat.h>

#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "auth/auth.h"
#include "cli/cli.h"
#include "conf/conf.h"
#include "util/util.h"

static void
cmd_user_usage(FILE *f)
{
	fprintf(f, "usage: sluice user [-c FILE | -f USERS] add NAME | del NAME | list\n"
	    "  -c FILE   sluiced's configuration: its [auth] users_file\n"
	    "  -f USERS  the users file itself\n"
	    "add reads the password from standard input (prompts on a terminal).\n");
}

/* One line of standard input into buf, without its line end; -1 at EOF. */
static int
cmd_user_readline(char *buf, size_t size)
{
	size_t n;

	if (fgets(buf, (int)size, stdin) == NULL)
		return -1;
	n = strlen(buf);
	if (n > 0 && buf[n - 1] == '\n')
		buf[--n] = '\0';
	else if (!feof(stdin))
		return -2;	/* longer than the buffer */
	if (n > 0 && buf[n - 1] == '\r')
		buf[--n] = '\0';
	return 0;
}

/* Prompt on the terminal with echo off. */
static int
cmd_user_prompt(const char *prompt, char *buf, size_t size)
{
	struct termios old, quiet;
	int rc;

	if (tcgetattr(0, &old) != 0)
		return -1;
	quiet = old;
	quiet.c_lflag &= ~(tcflag_t)ECHO;
	tcsetattr(0, TCSAFLUSH, &quiet);
	/* the prompt only once echo is off: typing after it never shows */
	fputs(prompt, stderr);
	fflush(stderr);
	rc = cmd_user_readline(buf, size);
	tcsetattr(0, TCSAFLUSH, &old);
	fputc('\n', stderr);
	return rc;
}

static int
cmd_user_password(char *pass, size_t size)
{
	char again[AUTH_PASS_MAX + 2];
	int rc;

	if (!isatty(0)) {
		rc = cmd_user_readline(pass, size);
	} else {
		rc = cmd_user_prompt("Password: ", pass, size);
		if (rc == 0 && cmd_user_prompt("Again: ", again,
		    sizeof(again)) == 0 && strcmp(pass, again) != 0) {
			fprintf(stderr, "sluice user: the passwords differ\n");
			rc = -3;
		}
		explicit_bzero(again, sizeof(again));
	}
	if (rc == -1)
		fprintf(stderr, "sluice user: no password given\n");
	else if (rc == -2)
		fprintf(stderr, "sluice user: password longer than %d bytes\n",
		    AUTH_PASS_MAX);
	else if (rc == 0 && pass[0] == '\0') {
		fprintf(stderr, "sluice user: empty password\n");
		rc = -1;
	}
	return rc;
}

/* Root writes the file for the daemon's group; anyone else for itself. */
static void
cmd_user_owner(const char *user, unsigned *mode, gid_t *gid)
{
	struct passwd *pw;

	*mode = 0600;
	*gid = (gid_t)-1;
	if (getuid() != 0 || user[0] == '\0' || (pw = getpwnam(user)) == NULL)
		return;
	*mode = 0640;
	*gid = pw->pw_gid;
}

static int
cmd_user_change(const char *path, const char *daemon_user, const char *verb,
    const char *name)
{
	struct auth_users *u;
	char err[1024], pass[AUTH_PASS_MAX + 2], *hash = NULL;
	unsigned mode;
	gid_t gid;
	int rc = CLI_FAILED;

	if (!auth_name_valid(name)) {
		fprintf(stderr, "sluice user: '%s' is not a valid user name "
		    "(no ':', no white space)\n", name);
		return CLI_USAGE;
	}
	if ((u = auth_users_load(path, 1, err, sizeof(err))) == NULL) {
		fprintf(stderr, "sluice user: %s\n", err);
		return CLI_FAILED;
	}
	if (strcmp(verb, "add") == 0) {
		if (cmd_user_password(pass, sizeof(pass)) != 0)
			goto out;
		hash = auth_password_hash(pass, err, sizeof(err));
		explicit_bzero(pass, sizeof(pass));
		if (hash == NULL) {
			fprintf(stderr, "sluice user: %s\n", err);
			goto out;
		}
		auth_users_set(u, name, hash);
	} else if (auth_users_set(u, name, NULL) != 0) {
		fprintf(stderr, "sluice user: no user %s in %s\n", name, path);
		goto out;
	}
	cmd_user_owner(daemon_user, &mode, &gid);
	if (auth_users_write(u, path, mode, err, sizeof(err)) != 0) {
		fprintf(stderr, "sluice user: %s\n", err);
		goto out;
	}
	if (gid != (gid_t)-1 && chown(path, (uid_t)-1, gid) != 0)
		fprintf(stderr, "sluice user: chown %s: %s\n", path,
		    strerror(errno));
	printf("user %s %s in %s; `sluice reload` makes sluiced read it\n",
	    name, strcmp(verb, "add") == 0 ? "set" : "deleted", path);
	rc = CLI_OK;
out:
	free(hash);
	auth_users_free(u);
	return rc;
}

int
cmd_user(int argc, char **argv)
{
	const char *conf_path = NULL, *file = NULL;
	struct sl_conf *conf;
	char err[1024];
	int ch, rc, ok;

	optind = 1;
	while ((ch = getopt(argc, argv, "c:f:h")) != -1) {
		switch (ch) {
		case 'c':
			conf_path = optarg;
			break;
		case 'f':
			file = optarg;
			break;
		case 'h':
			cmd_user_usage(stdout);
			return CLI_OK;
		default:
			cmd_user_usage(stderr);
			return CLI_USAGE;
		}
	}
	argc -= optind;
	argv += optind;
	if (argc < 1 || (strcmp(argv[0], "list") == 0 ? argc != 1 :
	    argc != 2 || (strcmp(argv[0], "add") != 0 &&
	    strcmp(argv[0], "del") != 0))) {
		cmd_user_usage(stderr);
		return CLI_USAGE;
	}
	conf_path = cli_conf_pick(conf_path, "sluice user", &ok);
	if (!ok)
		return CLI_USAGE;
	if ((conf = conf_load(conf_path, err, sizeof(err))) == NULL) {
		fprintf(stderr, "sluice user: %s\n", err);
		return CLI_FAILED;
	}
	if (file == NULL)
		file = conf->auth_users_file;
	if (strcmp(argv[0], "list") == 0) {
		struct auth_users *u = auth_users_load(file, 1, err, sizeof(err));
		if (u == NULL) {
			fprintf(stderr, "sluice user: %s\n", err);
			conf_free(conf);
			return CLI_FAILED;
		}
		for (size_t i = 0; i < u->n; i++)
			printf("%s\n", u->v[i].name);
		auth_users_free(u);
		conf_free(conf);
		return CLI_OK;
	}
	rc = cmd_user_change(file, conf->server_user, argv[0], argv[1]);
	conf_free(conf);
	return rc;
}
