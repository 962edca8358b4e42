/* SPDX-License-Identifier: MIT */
/*
 * maildir.c: local delivery into Maildir mailboxes (the Maildir rules of
 * qmail's maildir(5): write in tmp/, fsync, rename into new/).
 *
 * Owns the worker pool that does the writing and the jobs in flight. The
 * loop thread hands a job (a message, its recipients, the root) to a
 * worker; the worker writes one file per recipient and fills in each
 * recipient's outcome; the loop then logs them and calls the owner back.
 * Callers: the scheduler, through deliver.h.
 *
 * Invariants
 *  1. A recipient is 250 only once its file is in new/ and both the file
 *     (fsync) and the new/ directory entry (fsync of new/, and of every
 *     directory created on the way) are on disk: a crash after 250 loses
 *     nothing, a crash before leaves at most a file in tmp/.
 *  2. A failed write leaves no file in new/ (the tmp/ file is removed)
 *     and is a 4xx: the message is retried, never lost.
 *  3. File names are unique: time, microseconds, pid and a counter of
 *     this process ("1700000000.M123456P4242Q17.host"), created with
 *     O_EXCL so even a clash could not overwrite.
 *  4. Workers read m (its body too) and write only each rcpt's code and
 *     reply; the loop touches m again only in done.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "deliver/deliver.h"
#include "log/log.h"
#include "smtpc/smtpc.h"
#include "util/util.h"
#include "util/work.h"

struct maildir {
	struct sl_work *work;
	char host[256];		/* for file names, '/' and ':' replaced */
	atomic_ullong seq;	/* the Q of file names */
};

struct maildir_job {
	struct maildir *md;
	uint64_t dcid;
	char *root;
	struct smtpc_msg *m;
	maildir_done_fn *done;
	void *arg;
};

struct maildir *
maildir_new(struct event_base *base, int nthreads)
{
	struct maildir *md = xcalloc(1, sizeof(*md));

	md->work = sl_work_new(base, nthreads);
	if (gethostname(md->host, sizeof(md->host)) != 0 || md->host[0] == '\0')
		sl_strlcpy(md->host, "localhost", sizeof(md->host));
	md->host[sizeof(md->host) - 1] = '\0';
	/* "/" and ":" have meanings in Maildir names */
	for (char *c = md->host; *c; c++)
		if (*c == '/' || *c == ':')
			*c = '_';
	return md;
}

void
maildir_free(struct maildir *md)
{
	if (md == NULL)
		return;
	sl_work_free(md->work);
	free(md);
}

/* One path component, lower-case, %XX for anything unsafe. */
static size_t
maildir_enc(char *out, size_t size, const char *s, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 'A' && c <= 'Z')
			c = (unsigned char)(c - 'A' + 'a');
		if (((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		    c == '_' || c == '+' || c == '=' || c == '-' ||
		    c == '.') && !(i == 0 && c == '.')) {
			if (o + 1 < size)
				out[o] = (char)c;
			o++;
		} else {
			if (o + 3 < size) {
				out[o] = '%';
				out[o + 1] = hex[c >> 4];
				out[o + 2] = hex[c & 15];
			}
			o += 3;
		}
	}
	if (size > 0)
		out[o < size ? o : size - 1] = '\0';
	return o;
}

int
maildir_path(const char *root, const char *addr, char *buf, size_t len)
{
	const char *at = strrchr(addr, '@');
	char local[768], dom[768];
	size_t nl, nd;
	int n;

	if (at == NULL)
		at = addr + strlen(addr);	/* no domain: "postmaster" */
	nl = maildir_enc(local, sizeof(local), addr, (size_t)(at - addr));
	nd = maildir_enc(dom, sizeof(dom), *at ? at + 1 : "", strlen(*at ?
	    at + 1 : ""));
	if (nl == 0 || nl >= sizeof(local) || nd >= sizeof(dom))
		return -1;
	n = snprintf(buf, len, "%s/%s/%s/Maildir", root, nd ? dom : "_",
	    local);
	return n < 0 || (size_t)n >= len ? -1 : 0;
}

/* fsync a directory by its path. */
static int
maildir_dirsync(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc;

	if (fd < 0)
		return -1;
	rc = fsync(fd);
	close(fd);
	return rc;
}

/*
 * mkdir -p of dir (0700); each directory made is fsynced into its parent
 * (invariant 1). 0 or -1 with errno.
 */
static int
maildir_mkdirs(char *dir)
{
	char *slash;
	struct stat st;

	if (stat(dir, &st) == 0)
		return S_ISDIR(st.st_mode) ? 0 : (errno = ENOTDIR, -1);
	if (errno != ENOENT)
		return -1;
	if ((slash = strrchr(dir, '/')) != NULL && slash != dir) {
		*slash = '\0';
		int rc = maildir_mkdirs(dir);
		*slash = '/';
		if (rc != 0)
			return -1;
	}
	if (mkdir(dir, 0700) != 0 && errno != EEXIST)
		return -1;
	if (slash != NULL && slash != dir) {
		*slash = '\0';
		int rc = maildir_dirsync(dir);
		*slash = '/';
		return rc;
	}
	return 0;
}

/* Write all of iov (partial writes continue). 0 or -1 with errno. */
static int
maildir_writev(int fd, struct iovec *iov, int n)
{
	while (n > 0) {
		ssize_t w = writev(fd, iov, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		while (n > 0 && (size_t)w >= iov->iov_len) {
			w -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (char *)iov->iov_base + w;
			iov->iov_len -= (size_t)w;
		}
	}
	return 0;
}

/* The headers, then the body as stored. 0 or -1 with errno. */
static int
maildir_write_body(int fd, const char *hdr, size_t hlen,
    struct evbuffer *body)
{
	struct evbuffer_iovec v[64];
	struct iovec iov[65];
	struct evbuffer_ptr pos;
	size_t off = 0, total = body ? evbuffer_get_length(body) : 0;
	int first = 1;

	do {
		int n = 0, k = 0;
		size_t got = 0;

		if (first) {
			iov[n].iov_base = (void *)hdr;
			iov[n++].iov_len = hlen;
		}
		if (off < total) {
			evbuffer_ptr_set(body, &pos, off, EVBUFFER_PTR_SET);
			k = evbuffer_peek(body, -1, &pos, v, 64);
			if (k > 64)
				k = 64;
			for (int i = 0; i < k; i++) {
				iov[n].iov_base = v[i].iov_base;
				iov[n++].iov_len = v[i].iov_len;
				got += v[i].iov_len;
			}
		}
		if (maildir_writev(fd, iov, n) != 0)
			return -1;
		first = 0;
		off += got;
		if (k == 0)
			break;
	} while (off < total);
	return 0;
}

/* The reply a failed write of rcpt gives (invariant 2: always 4xx). */
static void
maildir_fail(struct smtpc_rcpt *r, const char *what, const char *path,
    int err)
{
	if (err == ENOSPC)
		r->code = 452, snprintf(r->reply, sizeof(r->reply), "452 4.3.1 "
		    "Insufficient system storage: %s %s: %s", what, path,
		    strerror(err));
	else if (err == EDQUOT)
		r->code = 452, snprintf(r->reply, sizeof(r->reply), "452 4.2.2 "
		    "Mailbox full: %s %s: %s", what, path, strerror(err));
	else
		r->code = 451, snprintf(r->reply, sizeof(r->reply), "451 4.3.0 "
		    "Maildir error: %s %s: %s", what, path, strerror(err));
}

/* Write one recipient's copy (worker thread). */
static void
maildir_store_one(struct maildir *md, const char *root,
    const struct smtpc_msg *m, struct smtpc_rcpt *r)
{
	char dir[4096], tmp[4608], new[4608], sub[4608], name[400];
	char *hdr = NULL;
	struct timeval tv;
	int fd = -1, hlen;

	if (maildir_path(root, r->addr, dir, sizeof(dir)) != 0) {
		r->code = 451;
		snprintf(r->reply, sizeof(r->reply), "451 4.3.0 Maildir path "
		    "too long for %s", r->addr);
		return;
	}
	for (int i = 0; i < 3; i++) {
		snprintf(sub, sizeof(sub), "%s/%s", dir,
		    i == 0 ? "tmp" : i == 1 ? "new" : "cur");
		if (maildir_mkdirs(sub) != 0) {
			maildir_fail(r, "mkdir", sub, errno);
			return;
		}
	}
	gettimeofday(&tv, NULL);
	snprintf(name, sizeof(name), "%lld.M%06ldP%dQ%llu.%s",
	    (long long)tv.tv_sec, (long)tv.tv_usec, (int)getpid(),
	    (unsigned long long)atomic_fetch_add(&md->seq, 1) + 1, md->host);
	snprintf(tmp, sizeof(tmp), "%s/tmp/%s", dir, name);
	snprintf(new, sizeof(new), "%s/new/%s", dir, name);
	snprintf(sub, sizeof(sub), "%s/new", dir);
	hlen = asprintf(&hdr, "Return-Path: <%s>\r\nDelivered-To: %s\r\n",
	    m->sender, r->addr);
	if (hlen < 0)
		SL_PANIC("maildir: out of memory");
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		maildir_fail(r, "open", tmp, errno);
		goto out;
	}
	if (maildir_write_body(fd, hdr, (size_t)hlen, m->body) != 0) {
		maildir_fail(r, "write", tmp, errno);
		goto fail;
	}
	if (fsync(fd) != 0) {
		maildir_fail(r, "fsync", tmp, errno);
		goto fail;
	}
	if (close(fd) != 0) {
		fd = -1;
		maildir_fail(r, "close", tmp, errno);
		goto fail;
	}
	fd = -1;
	if (rename(tmp, new) != 0) {
		maildir_fail(r, "rename", new, errno);
		goto fail;
	}
	if (maildir_dirsync(sub) != 0) {
		/* in new/ but maybe not durable: a retry may repeat it */
		maildir_fail(r, "fsync", sub, errno);
		goto out;
	}
	r->code = 250;
	snprintf(r->reply, sizeof(r->reply), "250 2.0.0 Delivered to %s",
	    name);
	goto out;
fail:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
out:
	free(hdr);
}

static void
maildir_run(void *arg)
{
	struct maildir_job *j = arg;

	for (size_t i = 0; i < j->m->nrcpt; i++)
		maildir_store_one(j->md, j->root, j->m, &j->m->rcpts[i]);
}

static void
maildir_done(void *arg)
{
	struct maildir_job *j = arg;
	struct smtpc_msg *m = j->m;

	for (size_t i = 0; i < m->nrcpt; i++) {
		struct smtpc_rcpt *r = &m->rcpts[i];
		log_gw(r->code / 100 == 2 ? LOG_GW_DONE : LOG_GW_DELAYED,
		    &(struct log_ids){ 0, j->dcid, m->mid, r->rid }, "rcpt",
		    r->addr, "relay", "maildir", "reply", r->reply, NULL);
	}
	j->done(j->arg, m);
	free(j->root);
	free(j);
}

void
maildir_deliver(struct maildir *md, uint64_t dcid, const char *root,
    struct smtpc_msg *m, maildir_done_fn *done, void *arg)
{
	struct maildir_job *j = xcalloc(1, sizeof(*j));

	j->md = md;
	j->dcid = dcid;
	j->root = xstrdup(root);
	j->m = m;
	j->done = done;
	j->arg = arg;
	for (size_t i = 0; i < m->nrcpt; i++) {
		m->rcpts[i].code = 0;
		m->rcpts[i].reply[0] = '\0';
		log_gw(LOG_GW_START, &(struct log_ids){ 0, dcid, m->mid,
		    m->rcpts[i].rid }, "rcpt", m->rcpts[i].addr, "relay",
		    "maildir", NULL);
	}
	sl_work_submit(md->work, maildir_run, maildir_done, j);
}
