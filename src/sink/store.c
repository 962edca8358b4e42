/* SPDX-License-Identifier: MIT */
/*
 * store.c: the sink's capture: one Maildir file per message, exactly the
 * bytes received (after dot-unstuffing), and one JSON line per message in
 * DIR/index.jsonl with the envelope, the size, the connection and time.
 * The same index objects stay in memory for the HTTP API and POP3, with
 * the message's Subject: and From: (decoded) for the inbox's search.
 *
 * A file is written in DIR/tmp, fsync'ed if asked (--fsync), then renamed
 * into DIR/new, so a reader of new/ never sees half a message; its index
 * line is written after the rename. At start the index of an earlier run
 * is read back (the messages whose files are still there), so the inbox
 * and POP3 see what was caught before a restart.
 *
 * Invariant: index.jsonl lists exactly the messages in memory, in order;
 * deleting one rewrites it (a new file renamed over the old one), deleting
 * all truncates it. k->changes grows with every change, so a page can ask
 * cheaply whether anything changed.
 * Callers: sink.c (put), http.c and pop3.c (find, path, delete).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "log/log.h"
#include "smtpd/smtpd.h"
#include "sink/sink_int.h"
#include "spool/spool.h"
#include "util/util.h"

static int
store_mkdir(const char *path, char *err, size_t errlen)
{
	if (mkdir(path, 0755) == 0 || errno == EEXIST)
		return 0;
	snprintf(err, errlen, "--maildir: mkdir %s: %s", path, strerror(errno));
	return -1;
}

/* One index line for meta; 0 or -1 with errno. */
static int
store_index_append(int fd, json_t *meta)
{
	char *line = json_dumps(meta, JSON_COMPACT | JSON_ENSURE_ASCII);
	size_t n;
	int rc = 0;

	if (line == NULL)
		return 0;
	n = strlen(line);
	line[n] = '\n';	/* json_dumps leaves room: write n + 1 */
	if (write(fd, line, n + 1) != (ssize_t)(n + 1))
		rc = -1;
	free(line);
	return rc;
}

/* index.jsonl anew from the messages in memory: written beside it, then
 * renamed over it, so a reader sees the old index or the new one. */
static void
store_index_rewrite(struct sink *k)
{
	char *path = xasprintf("%s/index.jsonl", k->maildir);
	char *tmp = xasprintf("%s/tmp/index.jsonl", k->maildir);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC,
	    0644);
	size_t i;
	json_t *m;

	if (fd < 0)
		goto fail;
	json_array_foreach(k->msgs, i, m)
		if (store_index_append(fd, m) != 0)
			goto fail;
	if ((k->o.fsync && fsync(fd) != 0) || rename(tmp, path) != 0)
		goto fail;
	if (k->index_fd >= 0)
		close(k->index_fd);
	k->index_fd = fd;
	goto done;
fail:
	log_warn("sink: rewriting %s", path);
	if (fd >= 0)
		close(fd);
	unlink(tmp);
done:
	free(tmp);
	free(path);
}

/* 1 if meta, read back from the index, names a file in new/ that exists. */
static int
store_meta_ok(struct sink *k, json_t *meta)
{
	const char *id = json_string_value(json_object_get(meta, "id"));
	const char *file = json_string_value(json_object_get(meta, "file"));
	struct stat sb;
	char *path;
	int ok;

	if (id == NULL || file == NULL || *id == '\0' || strchr(id, '/') ||
	    strncmp(file, "new/", 4) != 0 || strcmp(file + 4, id) != 0)
		return 0;
	path = sink_store_path(k, meta);
	ok = stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
	free(path);
	return ok;
}

/* The index of an earlier run, for the messages still in new/. */
static void
store_load(struct sink *k)
{
	char *p = xasprintf("%s/index.jsonl", k->maildir);
	FILE *f = fopen(p, "re");
	char *line = NULL;
	size_t cap = 0, dropped = 0;

	free(p);
	if (f == NULL)
		return;
	while (getline(&line, &cap, f) > 0) {
		json_t *meta = json_loads(line, 0, NULL);
		if (meta != NULL && json_is_object(meta) &&
		    store_meta_ok(k, meta))
			json_array_append(k->msgs, meta);
		else
			dropped++;
		json_decref(meta);
	}
	free(line);
	fclose(f);
	if (dropped > 0)
		store_index_rewrite(k);
}

int
sink_store_open(struct sink *k, char *err, size_t errlen)
{
	static const char *const subs[] = { "tmp", "new", "cur" };
	char *p;

	k->msgs = json_array();
	if (k->o.maildir == NULL)
		return 0;
	k->maildir = xstrdup(k->o.maildir);
	if (store_mkdir(k->maildir, err, errlen) != 0)
		return -1;
	for (size_t i = 0; i < SL_ARRAY_LEN(subs); i++) {
		p = xasprintf("%s/%s", k->maildir, subs[i]);
		int rc = store_mkdir(p, err, errlen);
		free(p);
		if (rc != 0)
			return -1;
	}
	p = xasprintf("%s/index.jsonl", k->maildir);
	k->index_fd = open(p, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (k->index_fd < 0)
		snprintf(err, errlen, "--maildir: %s: %s", p, strerror(errno));
	free(p);
	if (k->index_fd < 0)
		return -1;
	store_load(k);
	if (gethostname(k->host, sizeof(k->host)) != 0 || k->host[0] == '\0')
		sl_strlcpy(k->host, "localhost", sizeof(k->host));
	k->host[sizeof(k->host) - 1] = '\0';
	/* "/" and ":" have meanings in Maildir names */
	for (char *c = k->host; *c; c++)
		if (*c == '/' || *c == ':')
			*c = '_';
	return 0;
}

void
sink_store_close(struct sink *k)
{
	if (k->index_fd >= 0)
		close(k->index_fd);
	k->index_fd = -1;
	if (k->msgs != NULL)
		json_decref(k->msgs);
	k->msgs = NULL;
	free(k->maildir);
	k->maildir = NULL;
}

/*
 * Write all of body (borrowed, left intact) to fd; 0 or -1. Sixteen of
 * the buffer's chunks at a time, until its whole length is written.
 */
static int
store_write_body(int fd, struct evbuffer *body)
{
	size_t total = evbuffer_get_length(body), done = 0;
	struct evbuffer_ptr pos;
	struct evbuffer_iovec v[16];

	while (done < total) {
		if (evbuffer_ptr_set(body, &pos, done, EVBUFFER_PTR_SET) != 0)
			return -1;
		int n = evbuffer_peek(body, (ev_ssize_t)(total - done), &pos, v,
		    16);
		if (n <= 0)
			return -1;
		for (int i = 0; i < n && i < 16; i++) {
			const char *p = v[i].iov_base;
			size_t left = v[i].iov_len;
			while (left > 0) {
				ssize_t w = write(fd, p, left);
				if (w < 0 && errno == EINTR)
					continue;
				if (w < 0)
					return -1;
				p += w;
				left -= (size_t)w;
			}
			done += v[i].iov_len;
		}
	}
	return 0;
}

/* Subject: and From: of the message's header (its first SINK_MIME_HEAD
 * bytes) into meta. */
static void
store_summary(struct evbuffer *body, json_t *meta)
{
	size_t n = evbuffer_get_length(body);
	struct evbuffer_ptr end, lim;
	char *head;

	if (n > SINK_MIME_HEAD)
		n = SINK_MIME_HEAD;
	/* only the header: up to its empty line */
	if (evbuffer_ptr_set(body, &lim, n, EVBUFFER_PTR_SET) == 0 &&
	    (end = evbuffer_search_range(body, "\r\n\r\n", 4, NULL,
	    &lim)).pos >= 0)
		n = (size_t)end.pos + 4;
	head = xmalloc(n + 1);
	evbuffer_copyout(body, head, n);
	sink_mime_summary(head, n, meta);
	free(head);
}

/* The index object of one message. */
static json_t *
store_meta(struct sink *k, struct smtpd_session *s, const struct spool_msg *m,
    const char *id)
{
	json_t *o = json_object(), *to = json_array();
	char mid[17], date[64];
	int64_t now = sl_now_us();

	for (size_t i = 0; i < m->nrcpt; i++)
		json_array_append_new(to, json_string(m->rcpts[i].addr));
	spool_mid_fmt(m->mid, mid);
	sl_rfc5322_date(now / 1000000, date, sizeof(date));
	json_object_set_new(o, "id", json_string(id));
	json_object_set_new(o, "file", json_sprintf("new/%s", id));
	json_object_set_new(o, "mid", json_string(mid));
	json_object_set_new(o, "icid", json_integer((json_int_t)
	    smtpd_session_icid(s)));
	json_object_set_new(o, "client", json_string(m->client_addr));
	json_object_set_new(o, "helo", json_string(m->helo));
	json_object_set_new(o, "mail_from", json_string(m->sender));
	json_object_set_new(o, "rcpt_to", to);
	json_object_set_new(o, "size", json_integer((json_int_t)m->size));
	json_object_set_new(o, "smtputf8",
	    json_boolean(m->flags & SPOOL_F_SMTPUTF8));
	json_object_set_new(o, "8bitmime",
	    json_boolean(m->flags & SPOOL_F_8BITMIME));
	json_object_set_new(o, "tls", json_boolean(smtpd_session_tls(s)));
	json_object_set_new(o, "auth_user", smtpd_session_auth_user(s) ?
	    json_string(smtpd_session_auth_user(s)) : json_null());
	json_object_set_new(o, "time", json_real((double)now / 1e6));
	json_object_set_new(o, "date", json_string(date));
	store_summary(m->body, o);
	return o;
}

int
sink_store_put(struct sink *k, struct smtpd_session *s,
    const struct spool_msg *msg)
{
	int64_t now = sl_now_us();
	char id[256], *tmp, *dst;
	json_t *meta;
	int fd, rc = -1;

	snprintf(id, sizeof(id), "%lld.M%06lldP%dQ%llu.%s",
	    (long long)(now / 1000000), (long long)(now % 1000000),
	    (int)getpid(), (unsigned long long)++k->seq, k->host);
	tmp = xasprintf("%s/tmp/%s", k->maildir, id);
	dst = xasprintf("%s/new/%s", k->maildir, id);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0)
		goto fail_errno;
	if (store_write_body(fd, msg->body) != 0 ||
	    (k->o.fsync && fsync(fd) != 0)) {
		int e = errno;
		close(fd);
		unlink(tmp);
		errno = e;
		goto fail_errno;
	}
	close(fd);
	if (rename(tmp, dst) != 0) {
		unlink(tmp);
		goto fail_errno;
	}
	meta = store_meta(k, s, msg, id);
	json_array_append_new(k->msgs, meta);
	k->changes++;
	if (store_index_append(k->index_fd, meta) != 0)
		log_warn("sink: %s/index.jsonl", k->maildir);
	rc = 0;
	goto done;
fail_errno:
	log_warn("sink: %s", tmp);
done:
	free(tmp);
	free(dst);
	return rc;
}

json_t *
sink_store_find(struct sink *k, const char *id)
{
	size_t i;
	json_t *m;

	json_array_foreach(k->msgs, i, m)
		if (strcmp(json_string_value(json_object_get(m, "id")), id) == 0)
			return m;
	return NULL;
}

char *
sink_store_path(struct sink *k, json_t *meta)
{
	return xasprintf("%s/%s", k->maildir,
	    json_string_value(json_object_get(meta, "file")));
}

int
sink_store_delete(struct sink *k, const char *id)
{
	size_t i;
	json_t *m;

	json_array_foreach(k->msgs, i, m) {
		if (strcmp(json_string_value(json_object_get(m, "id")), id) != 0)
			continue;
		char *p = sink_store_path(k, m);
		if (unlink(p) != 0 && errno != ENOENT)
			log_warn("sink: %s", p);
		free(p);
		json_array_remove(k->msgs, i);
		k->changes++;
		store_index_rewrite(k);
		return 0;
	}
	return -1;
}

size_t
sink_store_delete_all(struct sink *k)
{
	size_t i, n = json_array_size(k->msgs);
	json_t *m;

	json_array_foreach(k->msgs, i, m) {
		char *p = sink_store_path(k, m);
		unlink(p);
		free(p);
	}
	json_array_clear(k->msgs);
	k->changes++;
	if (k->index_fd >= 0 && ftruncate(k->index_fd, 0) != 0)
		log_warn("sink: %s/index.jsonl", k->maildir);
	return n;
}
