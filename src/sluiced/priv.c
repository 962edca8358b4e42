/* SPDX-License-Identifier: MIT */
/*
 * priv.c: running as [server] user once root is no longer needed.
 *
 * Started as root, sluiced looks the user up first (a missing user stops
 * the start before anything is opened), then opens everything that needs
 * root: the listening ports, the spool, the control socket, the log, the
 * certificate, the DKIM keys and the users file. It then hands the spool
 * directory and its files and the log file to the user (the spool thread
 * creates WAL files there later, SIGHUP reopens the log), makes [local]
 * maildir_root for the user when this node stores mail in Maildirs and
 * the directory is missing (the Maildir workers make the rest of the tree
 * as the user), and drops to the user's uid, its gid and no other group.
 * glibc applies setuid to every thread of the process, the spool's and
 * the Maildir workers' included.
 *
 * Started as anyone else, or with an empty [server] user, nothing
 * changes. Files the daemon creates are never readable by other users
 * (umask 027).
 */
#include <sys/stat.h>
#include <sys/types.h>

#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "conf/conf.h"
#include "log/log.h"
#include "sluiced/sluiced.h"
#include "util/util.h"

int
sluiced_priv_lookup(struct sluiced *d, char *err, size_t errlen)
{
	const char *user = d->conf->server_user;
	struct passwd *pw;

	umask(027);
	d->drop = 0;
	if (geteuid() != 0 || user[0] == '\0')
		return 0;
	errno = 0;
	if ((pw = getpwnam(user)) == NULL) {
		snprintf(err, errlen, "[server] user %s: %s", user, errno ?
		    strerror(errno) : "no such user (make install creates "
		    "it; an empty user keeps root)");
		return -1;
	}
	if (pw->pw_uid == 0)
		return 0;	/* root by another name: nothing to drop */
	d->drop = 1;
	d->uid = pw->pw_uid;
	d->gid = pw->pw_gid;
	return 0;
}

/* chown path to the daemon's user; -1 with err set. */
static int
sluiced_priv_chown(struct sluiced *d, const char *path, char *err,
    size_t errlen)
{
	if (lchown(path, d->uid, d->gid) == 0 || errno == ENOENT)
		return 0;
	snprintf(err, errlen, "chown %s: %s", path, strerror(errno));
	return -1;
}

/* The spool directory and the files in it (the database, WAL, lock). */
static int
sluiced_priv_spool(struct sluiced *d, char *err, size_t errlen)
{
	const char *dir = d->conf->spool_dir;
	struct dirent *de;
	DIR *dp;
	int rc = 0;

	if (sluiced_priv_chown(d, dir, err, errlen) != 0)
		return -1;
	if ((dp = opendir(dir)) == NULL) {
		snprintf(err, errlen, "%s: %s", dir, strerror(errno));
		return -1;
	}
	while (rc == 0 && (de = readdir(dp)) != NULL) {
		char path[4096];
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		rc = sluiced_priv_chown(d, path, err, errlen);
	}
	closedir(dp);
	return rc;
}

/*
 * [local] maildir_root, when this node delivers into Maildirs: made for
 * the user if it is missing (its parent must exist). One that exists is
 * left as it is: the operator's (a Maildir that cannot be written defers).
 */
static int
sluiced_priv_maildir(struct sluiced *d, char *err, size_t errlen)
{
	const struct sl_conf *c = d->conf;
	const char *dir = c->local_maildir_root;

	if (c->nlocal_domains == 0 || c->local_lmtp_agent || dir[0] == '\0')
		return 0;
	if (mkdir(dir, 0700) != 0) {
		if (errno == EEXIST || errno == ENOENT)
			return 0;
		snprintf(err, errlen, "[local] maildir_root %s: %s", dir,
		    strerror(errno));
		return -1;
	}
	return sluiced_priv_chown(d, dir, err, errlen);
}

int
sluiced_priv_drop(struct sluiced *d, char *err, size_t errlen)
{
	const char *logf = d->conf->log_file;
	char uid[24];

	if (!d->drop)
		return 0;
	if (sluiced_priv_spool(d, err, errlen) != 0 ||
	    sluiced_priv_maildir(d, err, errlen) != 0)
		return -1;
	if (strcmp(logf, "-") != 0 &&
	    sluiced_priv_chown(d, logf, err, errlen) != 0)
		return -1;
	if (setgroups(1, &d->gid) != 0 || setgid(d->gid) != 0 ||
	    setuid(d->uid) != 0) {
		snprintf(err, errlen, "[server] user %s: cannot drop root: %s",
		    d->conf->server_user, strerror(errno));
		return -1;
	}
	/* never able to get root back */
	if (setuid(0) == 0 || geteuid() == 0) {
		snprintf(err, errlen, "[server] user %s: root could be regained",
		    d->conf->server_user);
		return -1;
	}
	snprintf(uid, sizeof(uid), "%u", (unsigned)d->uid);
	log_ev(LOG_INFO, NULL, "dropped root", "user", d->conf->server_user,
	    "uid", uid, NULL);
	return 0;
}
