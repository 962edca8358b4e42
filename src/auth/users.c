/* SPDX-License-Identifier: MIT */
/*
 * users.c: the users file of submission: parse, look up, check a password
 * with libxcrypt, and rewrite the file atomically (`sluice user`).
 *
 * Owns struct auth_users (a sorted array of name and hash). The daemon
 * loads one table at start and a new one at each reload (a bad file keeps
 * the old table); `sluice user add|del` reads, changes and writes it.
 *
 * Invariants
 *  1. A table holds only valid names, no name twice, and hashes that
 *     crypt_checksalt() calls current (no DES, no MD5, no plaintext).
 *  2. A rewrite never leaves a half-written file under the real name:
 *     the new text is fsynced in a temporary file that is then renamed.
 */
#include <sys/stat.h>

#include <crypt.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth/auth.h"
#include "util/util.h"

#define AUTH_FILE_MAX (16 * 1024 * 1024)

int
auth_name_valid(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > AUTH_NAME_MAX || !sl_utf8_valid(name, n))
		return 0;
	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		if (*p <= ' ' || *p == ':' || *p == 0x7f)
			return 0;
	return 1;
}

static int
auth_user_cmp(const void *a, const void *b)
{
	return strcmp(((const struct auth_user *)a)->name,
	    ((const struct auth_user *)b)->name);
}

struct auth_users *
auth_users_free(struct auth_users *u)
{
	if (u == NULL)
		return NULL;
	for (size_t i = 0; i < u->n; i++) {
		free(u->v[i].name);
		/* a hash is a secret of sorts: do not leave it in freed memory */
		explicit_bzero(u->v[i].hash, strlen(u->v[i].hash));
		free(u->v[i].hash);
	}
	free(u->v);
	free(u);
	return NULL;
}

/* One "name:hash" line (no line end); 0, or -1 with why in msg. */
static int
auth_users_line(struct auth_users *u, char *line, char *msg, size_t msglen)
{
	char *colon = strchr(line, ':'), *hash;
	int rc;

	if (colon == NULL) {
		snprintf(msg, msglen, "expected name:hash");
		return -1;
	}
	*colon = '\0';
	hash = colon + 1;
	if (!auth_name_valid(line)) {
		snprintf(msg, msglen, "'%.64s' is not a valid user name", line);
		return -1;
	}
	/* "!" or "*" first: a locked account, as in /etc/shadow */
	rc = crypt_checksalt(hash[0] == '!' || hash[0] == '*' ? hash + 1 : hash);
	if ((hash[0] == '!' || hash[0] == '*') && hash[1] == '\0')
		rc = CRYPT_SALT_OK;
	else if (hash[hash[0] == '!' || hash[0] == '*'] != '$')
		rc = CRYPT_SALT_INVALID;
	if (rc != CRYPT_SALT_OK && rc != CRYPT_SALT_TOO_CHEAP) {
		snprintf(msg, msglen, "user %s: the hash is not a current "
		    "crypt(3) hash (yescrypt $y$ or SHA-512 $6$)", line);
		return -1;
	}
	u->v = xrealloc(u->v, (u->n + 1) * sizeof(*u->v));
	u->v[u->n].name = xstrdup(line);
	u->v[u->n].hash = xstrdup(hash);
	u->n++;
	return 0;
}

struct auth_users *
auth_users_parse(const char *text, size_t len, const char *file, char *err,
    size_t errlen)
{
	struct auth_users *u = xcalloc(1, sizeof(*u));
	size_t pos = 0;
	int lineno = 0;
	char msg[256];

	while (pos < len) {
		const char *start = text + pos;
		const char *nl = memchr(start, '\n', len - pos);
		size_t n = nl ? (size_t)(nl - start) : len - pos;
		char *line = xstrndup(start, n);
		int rc = 0, nul = memchr(start, '\0', n) != NULL;

		lineno++;
		pos += n + (nl != NULL);
		if (n > 0 && line[n - 1] == '\r')
			line[--n] = '\0';
		if (nul) {
			snprintf(msg, sizeof(msg), "NUL byte in line");
			rc = -1;
		} else if (n > 0 && line[0] != '#') {
			rc = auth_users_line(u, line, msg, sizeof(msg));
		}
		explicit_bzero(line, n);
		free(line);
		if (rc != 0) {
			snprintf(err, errlen, "%s:%d: %s", file, lineno, msg);
			return auth_users_free(u);
		}
	}
	if (u->n > 0)
		qsort(u->v, u->n, sizeof(*u->v), auth_user_cmp);
	for (size_t i = 1; i < u->n; i++) {
		if (strcmp(u->v[i - 1].name, u->v[i].name) == 0) {
			snprintf(err, errlen, "%s: user %s is listed twice", file,
			    u->v[i].name);
			return auth_users_free(u);
		}
	}
	return u;
}

struct auth_users *
auth_users_load(const char *path, int missing_ok, char *err, size_t errlen)
{
	struct auth_users *u;
	struct stat st;
	char *buf;
	ssize_t got;
	size_t n = 0;
	int fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
		if (errno == ENOENT && missing_ok)
			return xcalloc(1, sizeof(struct auth_users));
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
	    st.st_size > AUTH_FILE_MAX) {
		snprintf(err, errlen, "%s: not a regular file of at most 16M",
		    path);
		close(fd);
		return NULL;
	}
	if (st.st_mode & S_IROTH) {
		snprintf(err, errlen, "%s: other users may read it (chmod o-r)",
		    path);
		close(fd);
		return NULL;
	}
	buf = xmalloc((size_t)st.st_size + 1);
	while (n < (size_t)st.st_size &&
	    (got = read(fd, buf + n, (size_t)st.st_size - n)) > 0)
		n += (size_t)got;
	close(fd);
	u = auth_users_parse(buf, n, path, err, errlen);
	explicit_bzero(buf, n);
	free(buf);
	return u;
}

const char *
auth_users_find(const struct auth_users *u, const char *name)
{
	struct auth_user key = { .name = (char *)name };
	struct auth_user *f;

	if (u == NULL || u->n == 0)
		return NULL;
	f = bsearch(&key, u->v, u->n, sizeof(*u->v), auth_user_cmp);
	return f ? f->hash : NULL;
}

int
auth_users_set(struct auth_users *u, const char *name, const char *hash)
{
	for (size_t i = 0; i < u->n; i++) {
		if (strcmp(u->v[i].name, name) != 0)
			continue;
		free(u->v[i].hash);
		if (hash != NULL) {
			u->v[i].hash = xstrdup(hash);
			return 0;
		}
		free(u->v[i].name);
		memmove(&u->v[i], &u->v[i + 1], (u->n - i - 1) * sizeof(*u->v));
		u->n--;
		return 0;
	}
	if (hash == NULL)
		return -1;
	u->v = xrealloc(u->v, (u->n + 1) * sizeof(*u->v));
	u->v[u->n].name = xstrdup(name);
	u->v[u->n].hash = xstrdup(hash);
	u->n++;
	qsort(u->v, u->n, sizeof(*u->v), auth_user_cmp);
	return 0;
}

/* Write all of buf to fd; 0 or -1 with errno. */
static int
auth_write_all(int fd, const char *buf, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, buf, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		buf += w;
		n -= (size_t)w;
	}
	return 0;
}

int
auth_users_write(const struct auth_users *u, const char *path, unsigned mode,
    char *err, size_t errlen)
{
	char *tmp = xasprintf("%s.tmp.%ld", path, (long)getpid());
	char *dircopy = xstrdup(path);
	int fd, dfd, rc = -1;

	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode & 07777);
	if (fd < 0) {
		snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
		goto out;
	}
	/* the mode asked, whatever the umask */
	if (fchmod(fd, mode & 07777) != 0)
		goto fail;
	for (size_t i = 0; i < u->n; i++) {
		char *line = xasprintf("%s:%s\n", u->v[i].name, u->v[i].hash);
		int w = auth_write_all(fd, line, strlen(line));
		free(line);
		if (w != 0)
			goto fail;
	}
	if (fsync(fd) != 0 || close(fd) != 0) {
		fd = -1;
		goto fail;
	}
	fd = -1;
	if (rename(tmp, path) != 0)
		goto fail;
	/* the rename is durable once the directory is */
	if ((dfd = open(dirname(dircopy), O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
		(void)fsync(dfd);
		close(dfd);
	}
	rc = 0;
	goto out;
fail:
	snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
	if (fd >= 0)
		close(fd);
	unlink(tmp);
out:
	free(dircopy);
	free(tmp);
	return rc;
}

int
auth_password_check(const char *hash, const char *password)
{
	struct crypt_data *cd = xcalloc(1, sizeof(*cd));
	const char *out;
	size_t n = strlen(hash);
	unsigned char diff = 0;
	int ok = 0;

	if (n == 0 || hash[0] != '$')
		goto done;
	out = crypt_rn(password, hash, cd, sizeof(*cd));
	if (out == NULL || out[0] == '*' || strlen(out) != n)
		goto done;
	for (size_t i = 0; i < n; i++)
		diff |= (unsigned char)(out[i] ^ hash[i]);
	ok = diff == 0;
done:
	explicit_bzero(cd, sizeof(*cd));
	free(cd);
	return ok;
}

char *
auth_password_hash(const char *password, char *err, size_t errlen)
{
	char salt[CRYPT_GENSALT_OUTPUT_SIZE];
	struct crypt_data *cd;
	const char *out;
	char *r = NULL;

	if (crypt_gensalt_rn("$y$", 0, NULL, 0, salt, sizeof(salt)) == NULL) {
		snprintf(err, errlen, "crypt_gensalt: %s", strerror(errno));
		return NULL;
	}
	cd = xcalloc(1, sizeof(*cd));
	out = crypt_rn(password, salt, cd, sizeof(*cd));
	if (out == NULL || out[0] == '*')
		snprintf(err, errlen, "crypt: %s", strerror(errno));
	else
		r = xstrdup(out);
	explicit_bzero(cd, sizeof(*cd));
	free(cd);
	return r;
}
