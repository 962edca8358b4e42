/* SPDX-License-Identifier: MIT */
/*
 * powercut.c: an LD_PRELOAD model of a power cut, for the spool tests.
 *
 * It keeps, beside the live directory POWERCUT_DIR, the image of what a
 * disk would still hold if the power went off now: POWERCUT_IMAGE. Only
 * what the program made durable reaches the image:
 *
 *  - file data: a write (write, pwrite, writev, pwritev, ftruncate) to a
 *    file of the directory marks the 4 KB pages it touched dirty; fsync or
 *    fdatasync of the file copies its dirty pages and its size into the
 *    file's image. A write never synced is lost, however long ago it was.
 *  - names: creating, renaming or removing a file changes only the live
 *    directory; fsync or fdatasync of the directory itself makes its whole
 *    list of names durable. A file created and synced in a directory never
 *    synced is not there after the cut.
 *  - the directory itself: if POWERCUT_DIR does not exist when the shim
 *    starts (a fresh install), its own name in its parent is not durable
 *    until the parent directory is synced while it exists; until then the
 *    image holds IMAGE/dir-missing, and after a cut the whole directory is
 *    gone, whatever was synced in it.
 *
 * What it does not model: writes through mmap (SQLite maps only the -shm
 * index, which it rebuilds from the WAL after a crash, never trusting it),
 * O_DIRECT, reordering within one fsync (a kill during the copy leaves part
 * of the pages copied, which is one of the states a real crash can leave).
 *
 * Layout of the image: IMAGE/inodes/<ino>-<gen> holds the durable bytes of
 * one file (gen tells apart files that reuse an inode number), and
 * IMAGE/names/<name> is a hard link to the inode a durable name points to.
 * When the shim starts and IMAGE/names does not exist yet, what is in the
 * directory then counts as durable (a clean stop and `sync` before the
 * test). After the cut (kill -9 of the program), the files in IMAGE/names
 * are the disk: copy them into a new directory and start on that.
 *
 * Only direct children of POWERCUT_DIR are modelled; everything else (the
 * log, sockets) passes through untouched. One mutex serialises the tracked
 * writes and the copies, so a copy sees exactly the writes made before the
 * sync was called.
 */
#define _GNU_SOURCE
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PC_PAGE 4096
#define PC_MAX_FILES 256

struct pc_file {
	dev_t dev;
	ino_t ino;
	unsigned gen;
	uint8_t *dirty;		/* one bit per page */
	size_t npages;		/* bits in dirty */
};

static struct {
	int on;
	char dir[PATH_MAX];
	char image[PATH_MAX];
	dev_t dir_dev;
	ino_t dir_ino;		/* 0: the directory does not exist yet */
	char parent[PATH_MAX];	/* where its name is (dir-missing) */
	unsigned next_gen;
	struct pc_file files[PC_MAX_FILES];
	int nfiles;
	pthread_mutex_t mu;
} pc = { .mu = PTHREAD_MUTEX_INITIALIZER };

static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static int (*real_ftruncate)(int, off_t);
static int (*real_ftruncate64)(int, off_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_open)(const char *, int, ...);
static int (*real_open64)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_openat64)(int, const char *, int, ...);

static void
pc_die(const char *what)
{
	char msg[512];
	int n = snprintf(msg, sizeof(msg), "powercut: %s: %s\n", what,
	    strerror(errno));

	if (n > 0)
		(void)!write(2, msg, (size_t)n);
	abort();
}

static void *
pc_sym(const char *name)
{
	void *p = dlsym(RTLD_NEXT, name);

	if (p == NULL) {
		errno = ENOSYS;
		pc_die(name);
	}
	return p;
}

static void
pc_path(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	if (vsnprintf(buf, len, fmt, ap) >= (int)len) {
		errno = ENAMETOOLONG;
		pc_die(fmt);
	}
	va_end(ap);
}

/* Copy all of the file at path src into dst (both whole files). */
static void
pc_copy_file(const char *src, const char *dst)
{
	char buf[65536];
	int in = real_open(src, O_RDONLY | O_CLOEXEC);
	int out = real_open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	ssize_t n;

	if (in == -1 || out == -1)
		pc_die(src);
	while ((n = read(in, buf, sizeof(buf))) > 0)
		if (real_write(out, buf, (size_t)n) != n)
			pc_die(dst);
	close(in);
	close(out);
}

static void
pc_inode_path(char *buf, size_t len, ino_t ino, unsigned gen)
{
	pc_path(buf, len, "%s/inodes/%llu-%u", pc.image,
	    (unsigned long long)ino, gen);
}

static struct pc_file *
pc_find(dev_t dev, ino_t ino)
{
	int i;

	for (i = 0; i < pc.nfiles; i++)
		if (pc.files[i].dev == dev && pc.files[i].ino == ino)
			return &pc.files[i];
	return NULL;
}

/* The record of a file of the directory; gen 0 for one that existed before. */
static struct pc_file *
pc_add(dev_t dev, ino_t ino, int created)
{
	struct pc_file *f = pc_find(dev, ino);

	if (f != NULL && !created)
		return f;
	if (f == NULL) {
		if (pc.nfiles == PC_MAX_FILES) {
			errno = ENFILE;
			pc_die("too many files");
		}
		f = &pc.files[pc.nfiles++];
	}
	free(f->dirty);
	memset(f, 0, sizeof(*f));
	f->dev = dev;
	f->ino = ino;
	/* A new file: its durable content starts empty, whatever an old file
	 * with the same inode number left. */
	f->gen = created ? ++pc.next_gen : 0;
	return f;
}

static void
pc_mark(struct pc_file *f, off_t off, size_t len)
{
	size_t first, last, i;

	if (len == 0)
		return;
	first = (size_t)off / PC_PAGE;
	last = ((size_t)off + len - 1) / PC_PAGE;
	if (last >= f->npages) {
		size_t n = (last + 1) * 2;
		uint8_t *d = realloc(f->dirty, (n + 7) / 8);

		if (d == NULL)
			pc_die("realloc");
		/* bits past npages were never set: only the new bytes need 0 */
		memset(d + (f->npages + 7) / 8, 0, (n + 7) / 8 - (f->npages + 7) / 8);
		f->dirty = d;
		f->npages = n;
	}
	for (i = first; i <= last; i++)
		f->dirty[i / 8] |= (uint8_t)(1u << (i % 8));
}

/* The tracked file behind fd, or NULL (fd is something else). */
static struct pc_file *
pc_lookup(int fd, struct stat *st)
{
	if (!pc.on || fstat(fd, st) == -1 || !S_ISREG(st->st_mode))
		return NULL;
	return pc_find(st->st_dev, st->st_ino);
}

/* Learn the directory's identity once it exists (it may be made late). */
static void
pc_dir_learn(void)
{
	struct stat st;

	if (pc.dir_ino == 0 && stat(pc.dir, &st) == 0) {
		pc.dir_dev = st.st_dev;
		pc.dir_ino = st.st_ino;
	}
}

static int
pc_is_dir(int fd)
{
	struct stat st;

	if (!pc.on)
		return 0;
	pc_dir_learn();
	return pc.dir_ino != 0 && fstat(fd, &st) == 0 && S_ISDIR(st.st_mode) &&
	    st.st_dev == pc.dir_dev && st.st_ino == pc.dir_ino;
}

/* 1 if fd is the parent of a directory made after the start. */
static int
pc_is_parent(int fd)
{
	struct stat a, b;

	return pc.on && pc.parent[0] != '\0' && fstat(fd, &a) == 0 &&
	    S_ISDIR(a.st_mode) && stat(pc.parent, &b) == 0 &&
	    a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

/* The parent was synced: the directory's name is durable if it exists. */
static void
pc_commit_dir(void)
{
	char path[PATH_MAX];
	struct stat st;

	if (stat(pc.dir, &st) == -1)
		return;
	pc_path(path, sizeof(path), "%s/dir-missing", pc.image);
	if (unlink(path) == -1 && errno != ENOENT)
		pc_die(path);
	pc.parent[0] = '\0';
}

/* Make f's dirty pages and size durable: copy them into its image. */
static void
pc_flush(int fd, struct pc_file *f, const struct stat *st)
{
	char path[PATH_MAX], buf[PC_PAGE];
	int out;
	size_t i;

	pc_inode_path(path, sizeof(path), f->ino, f->gen);
	out = real_open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (out == -1)
		pc_die(path);
	for (i = 0; i < f->npages; i++) {
		off_t off = (off_t)i * PC_PAGE;
		ssize_t n;

		if (!(f->dirty[i / 8] & (1u << (i % 8))))
			continue;
		if (off >= st->st_size)
			break;
		n = pread(fd, buf, sizeof(buf), off);
		if (n < 0)
			pc_die("pread");
		if (n > 0 && real_pwrite(out, buf, (size_t)n, off) != n)
			pc_die(path);
	}
	if (real_ftruncate(out, st->st_size) == -1)
		pc_die(path);
	close(out);
	if (f->dirty != NULL)
		memset(f->dirty, 0, (f->npages + 7) / 8);
}

/* Make the directory's list of names durable, as its fsync does. */
static void
pc_commit_names(void)
{
	char names[PATH_MAX], live[PATH_MAX], ipath[PATH_MAX], tmp[PATH_MAX];
	struct dirent *e;
	DIR *d;

	pc_path(names, sizeof(names), "%s/names", pc.image);
	/* names that are gone from the live directory */
	if ((d = opendir(names)) == NULL)
		pc_die(names);
	while ((e = readdir(d)) != NULL) {
		struct stat st;

		if (e->d_name[0] == '.')
			continue;
		pc_path(live, sizeof(live), "%s/%s", pc.dir, e->d_name);
		if (lstat(live, &st) == -1 || !S_ISREG(st.st_mode)) {
			pc_path(tmp, sizeof(tmp), "%s/%s", names, e->d_name);
			unlink(tmp);
		}
	}
	closedir(d);
	/* every live name points to its file's durable bytes */
	if ((d = opendir(pc.dir)) == NULL)
		pc_die(pc.dir);
	while ((e = readdir(d)) != NULL) {
		struct pc_file *f;
		struct stat st;
		int fd;

		pc_path(live, sizeof(live), "%s/%s", pc.dir, e->d_name);
		if (lstat(live, &st) == -1 || !S_ISREG(st.st_mode))
			continue;
		f = pc_add(st.st_dev, st.st_ino, 0);
		pc_inode_path(ipath, sizeof(ipath), f->ino, f->gen);
		fd = real_open(ipath, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
		if (fd == -1)
			pc_die(ipath);
		close(fd);
		pc_path(tmp, sizeof(tmp), "%s/.new", names);
		unlink(tmp);
		pc_path(live, sizeof(live), "%s/%s", names, e->d_name);
		if (link(ipath, tmp) == -1 || rename(tmp, live) == -1)
			pc_die(live);
		/* rename() between two links of one file does nothing */
		unlink(tmp);
	}
	closedir(d);
}

/* The first start: what is in the directory now is taken as durable. */
static void
pc_snapshot(void)
{
	char path[PATH_MAX], ipath[PATH_MAX], npath[PATH_MAX];
	struct dirent *e;
	DIR *d;

	pc_path(path, sizeof(path), "%s/inodes", pc.image);
	if (mkdir(path, 0700) == -1 && errno != EEXIST)
		pc_die(path);
	pc_path(path, sizeof(path), "%s/names", pc.image);
	if (mkdir(path, 0700) == -1) {
		if (errno == EEXIST)
			return;
		pc_die(path);
	}
	if (pc.dir_ino == 0) {
		/* a fresh directory: nothing durable, not even its name */
		pc_path(path, sizeof(path), "%s/dir-missing", pc.image);
		pc_copy_file("/dev/null", path);
		return;
	}
	if ((d = opendir(pc.dir)) == NULL)
		pc_die(pc.dir);
	while ((e = readdir(d)) != NULL) {
		struct stat st;

		pc_path(path, sizeof(path), "%s/%s", pc.dir, e->d_name);
		if (lstat(path, &st) == -1 || !S_ISREG(st.st_mode))
			continue;
		pc_add(st.st_dev, st.st_ino, 0);
		pc_inode_path(ipath, sizeof(ipath), st.st_ino, 0);
		pc_copy_file(path, ipath);
		pc_path(npath, sizeof(npath), "%s/names/%s", pc.image, e->d_name);
		if (link(ipath, npath) == -1)
			pc_die(npath);
	}
	closedir(d);
}

static void
pc_syms(void)
{
	real_write = pc_sym("write");
	real_pwrite = pc_sym("pwrite");
	real_pwrite64 = pc_sym("pwrite64");
	real_writev = pc_sym("writev");
	real_pwritev = pc_sym("pwritev");
	real_ftruncate = pc_sym("ftruncate");
	real_ftruncate64 = pc_sym("ftruncate64");
	real_fsync = pc_sym("fsync");
	real_fdatasync = pc_sym("fdatasync");
	real_open = pc_sym("open");
	real_open64 = pc_sym("open64");
	real_openat = pc_sym("openat");
	real_openat64 = pc_sym("openat64");
}

__attribute__((constructor)) static void
pc_init(void)
{
	const char *dir = getenv("POWERCUT_DIR");
	const char *image = getenv("POWERCUT_IMAGE");
	struct stat st;

	if (real_write == NULL)
		pc_syms();
	if (dir == NULL || image == NULL)
		return;
	if (realpath(image, pc.image) == NULL)
		pc_die("POWERCUT_IMAGE");
	if (realpath(dir, pc.dir) == NULL) {
		/* not made yet: its parent must exist, and its name counts */
		char tmp[PATH_MAX], *slash;

		if (errno != ENOENT || strlen(dir) >= sizeof(tmp))
			pc_die("POWERCUT_DIR");
		strcpy(tmp, dir);
		if ((slash = strrchr(tmp, '/')) == NULL)
			pc_die("POWERCUT_DIR (not an absolute path)");
		*slash = '\0';
		if (realpath(tmp[0] ? tmp : "/", pc.parent) == NULL)
			pc_die("POWERCUT_DIR's parent");
		pc_path(pc.dir, sizeof(pc.dir), "%s/%s", pc.parent, slash + 1);
	} else {
		if (stat(pc.dir, &st) == -1)
			pc_die(pc.dir);
		pc.dir_dev = st.st_dev;
		pc.dir_ino = st.st_ino;
	}
	pc_snapshot();
	pc.on = 1;
}

/* ---- opens: learn the files of the directory, and which are new ---- */

/* 1 if the file opened as (dirfd, path) is a direct child of the directory. */
static int
pc_in_dir(int dirfd, const char *path)
{
	char parent[PATH_MAX], real[PATH_MAX];
	const char *slash = strrchr(path, '/');
	struct stat st;

	if (slash == NULL) {
		if (dirfd == AT_FDCWD)
			return getcwd(real, sizeof(real)) != NULL &&
			    strcmp(real, pc.dir) == 0;
		return fstat(dirfd, &st) == 0 && st.st_dev == pc.dir_dev &&
		    st.st_ino == pc.dir_ino;
	}
	if (path[0] != '/' && dirfd != AT_FDCWD)
		return 0;	/* not used by the programs under test */
	if ((size_t)(slash - path) >= sizeof(parent))
		return 0;
	memcpy(parent, path, (size_t)(slash - path));
	parent[slash - path] = '\0';
	if (parent[0] == '\0')
		strcpy(parent, "/");
	return realpath(parent, real) != NULL && strcmp(real, pc.dir) == 0;
}

static int
pc_opened(int fd, int dirfd, const char *path, int existed)
{
	struct stat st;

	if (fd == -1 || !pc.on)
		return fd;
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
	    pc_in_dir(dirfd, path)) {
		pthread_mutex_lock(&pc.mu);
		pc_add(st.st_dev, st.st_ino, !existed);
		pthread_mutex_unlock(&pc.mu);
	}
	return fd;
}

static int
pc_exists(int dirfd, const char *path)
{
	struct stat st;

	return fstatat(dirfd, path, &st, 0) == 0;
}

#define PC_OPEN_BODY(call, dirfd)					\
	mode_t mode = 0;						\
	int existed, fd;						\
	if (flags & (O_CREAT | O_TMPFILE)) {				\
		va_list ap;						\
		va_start(ap, flags);					\
		mode = va_arg(ap, mode_t);				\
		va_end(ap);						\
	}								\
	if (real_open == NULL)						\
		pc_syms();						\
	existed = pc.on ? pc_exists(dirfd, path) : 1;			\
	fd = call;							\
	return pc_opened(fd, dirfd, path, existed)

int
open(const char *path, int flags, ...)
{
	PC_OPEN_BODY(real_open(path, flags, mode), AT_FDCWD);
}

int
open64(const char *path, int flags, ...)
{
	PC_OPEN_BODY(real_open64(path, flags, mode), AT_FDCWD);
}

int
openat(int dirfd, const char *path, int flags, ...)
{
	PC_OPEN_BODY(real_openat(dirfd, path, flags, mode), dirfd);
}

int
openat64(int dirfd, const char *path, int flags, ...)
{
	PC_OPEN_BODY(real_openat64(dirfd, path, flags, mode), dirfd);
}

/* ---- writes: mark pages dirty ---- */

/* Run one write-like call on fd; on a tracked file mark what it wrote. */
#define PC_WRITE(call, offexpr)						\
	struct stat st;							\
	struct pc_file *f;						\
	ssize_t n;							\
	if (real_write == NULL)						\
		pc_syms();						\
	if ((f = pc_lookup(fd, &st)) == NULL)				\
		return call;						\
	pthread_mutex_lock(&pc.mu);					\
	n = call;							\
	if (n > 0)							\
		pc_mark(f, (offexpr), (size_t)n);			\
	pthread_mutex_unlock(&pc.mu);					\
	return n

ssize_t
write(int fd, const void *buf, size_t len)
{
	PC_WRITE(real_write(fd, buf, len), lseek(fd, 0, SEEK_CUR) - n);
}

ssize_t
pwrite(int fd, const void *buf, size_t len, off_t off)
{
	PC_WRITE(real_pwrite(fd, buf, len, off), off);
}

ssize_t
pwrite64(int fd, const void *buf, size_t len, off_t off)
{
	PC_WRITE(real_pwrite64(fd, buf, len, off), off);
}

ssize_t
writev(int fd, const struct iovec *iov, int cnt)
{
	PC_WRITE(real_writev(fd, iov, cnt), lseek(fd, 0, SEEK_CUR) - n);
}

ssize_t
pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
	PC_WRITE(real_pwritev(fd, iov, cnt, off), off);
}

static int
pc_truncate(int (*fn)(int, off_t), int fd, off_t len)
{
	struct stat st;
	struct pc_file *f;
	int rc;

	if ((f = pc_lookup(fd, &st)) == NULL)
		return fn(fd, len);
	pthread_mutex_lock(&pc.mu);
	rc = fn(fd, len);
	(void)f;	/* the new size reaches the image at the next sync */
	pthread_mutex_unlock(&pc.mu);
	return rc;
}

int
ftruncate(int fd, off_t len)
{
	if (real_write == NULL)
		pc_syms();
	return pc_truncate(real_ftruncate, fd, len);
}

int
ftruncate64(int fd, off_t len)
{
	if (real_write == NULL)
		pc_syms();
	return pc_truncate(real_ftruncate64, fd, len);
}

/* ---- syncs: what was written becomes durable ---- */

static int
pc_sync(int (*fn)(int), int fd)
{
	struct stat st;
	struct pc_file *f;

	if (pc_is_dir(fd)) {
		pthread_mutex_lock(&pc.mu);
		pc_commit_names();
		pthread_mutex_unlock(&pc.mu);
	} else if (pc_is_parent(fd)) {
		pthread_mutex_lock(&pc.mu);
		pc_commit_dir();
		pthread_mutex_unlock(&pc.mu);
	} else if ((f = pc_lookup(fd, &st)) != NULL) {
		pthread_mutex_lock(&pc.mu);
		/* the size under the lock: no write can change it meanwhile */
		if (fstat(fd, &st) == -1)
			pc_die("fstat");
		pc_flush(fd, f, &st);
		pthread_mutex_unlock(&pc.mu);
	}
	return fn(fd);
}

int
fsync(int fd)
{
	if (real_write == NULL)
		pc_syms();
	return pc_sync(real_fsync, fd);
}

int
fdatasync(int fd)
{
	if (real_write == NULL)
		pc_syms();
	return pc_sync(real_fdatasync, fd);
}
