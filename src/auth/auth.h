/* SPDX-License-Identifier: MIT */
/*
 * auth.h: authentication for submission (RFC 4954): the users file and
 * its passwords (users.c), and the SASL PLAIN and LOGIN decoders (sasl.c).
 *
 * The users file has one "name:hash" a line, hash a crypt(3) string from
 * libxcrypt (yescrypt "$y$" by default, SHA-512 "$6$" accepted; any
 * method crypt_checksalt() calls current); a hash with '!' or '*' in
 * front (or alone) is a locked account, as in /etc/shadow: it never
 * matches. Blank lines and lines starting with '#' are skipped. Names are 1..255 bytes of printable ASCII or
 * UTF-8 without ':' or white space.
 *
 * Everything here is pure or does plain file I/O; nothing knows about
 * sessions or the event loop. auth_password_check() costs what the hash
 * method makes it cost (yescrypt: tens of milliseconds): callers on the
 * event loop run it on a worker thread (src/util/work.c).
 */
#ifndef SL_AUTH_H
#define SL_AUTH_H

#include <stddef.h>
#include <stdint.h>

#define AUTH_NAME_MAX 255
#define AUTH_PASS_MAX 1024

struct auth_user {
	char *name;
	char *hash;
};

/* The users of one file, sorted by name. */
struct auth_users {
	struct auth_user *v;
	size_t n;
};

/*
 * Parse a users file's text (len bytes; NUL bytes are an error). file
 * names it in errors ("users:3: ..."). Returns a new table (free with
 * auth_users_free), or NULL with the error in err.
 */
struct auth_users *auth_users_parse(const char *text, size_t len,
    const char *file, char *err, size_t errlen);
/*
 * Read and parse path. A missing file is an empty table when missing_ok.
 * A file that other users may read is refused. NULL with the error in err.
 */
struct auth_users *auth_users_load(const char *path, int missing_ok,
    char *err, size_t errlen);
struct auth_users *auth_users_free(struct auth_users *u);
/* The hash of name (exact, case-sensitive), or NULL. */
const char *auth_users_find(const struct auth_users *u, const char *name);
/* 1 if name is a valid user name. */
int auth_name_valid(const char *name);

/*
 * Set (add or replace) or, with hash NULL, delete name in u. Returns 0,
 * or -1 when deleting a name that is not there.
 */
int auth_users_set(struct auth_users *u, const char *name, const char *hash);
/*
 * Write u to path atomically: a temporary file in the same directory,
 * fsync, rename, fsync of the directory. mode is the new file's mode.
 * Returns 0, or -1 with the error in err.
 */
int auth_users_write(const struct auth_users *u, const char *path,
    unsigned mode, char *err, size_t errlen);

/*
 * 1 if password matches hash (crypt_rn, constant-time compare), else 0;
 * 0 for an empty or unknown hash too. Thread-safe.
 */
int auth_password_check(const char *hash, const char *password);
/*
 * A new yescrypt hash of password with a fresh salt from the OS.
 * Returns a new string (free()), or NULL with the error in err.
 */
char *auth_password_hash(const char *password, char *err, size_t errlen);

/* ---- sasl.c: SASL mechanisms' messages (RFC 4616, LOGIN) ---- */

enum auth_sasl_status {
	AUTH_SASL_OK = 0,
	AUTH_SASL_CANCEL,	/* the client sent "*" (RFC 4954 4) */
	AUTH_SASL_BAD64,	/* not base64 (RFC 4648, no white space) */
	AUTH_SASL_SYNTAX,	/* decoded, but not what the mechanism says */
};

/*
 * Decode base64 text (n bytes, padding required, no white space) into
 * out (cap bytes). Returns the decoded length, or -1 when the text is
 * not base64 or does not fit.
 */
long auth_b64_decode(const char *in, size_t n, uint8_t *out, size_t cap);
/* Encode n bytes into out (cap >= 4 * ((n + 2) / 3) + 1), terminated. */
void auth_b64_encode(const uint8_t *in, size_t n, char *out, size_t cap);

/*
 * PLAIN (RFC 4616): b64 is the client's response ("=" for empty). Fills
 * user (AUTH_NAME_MAX + 1) and pass (AUTH_PASS_MAX + 1). An authorization
 * identity other than empty or the user itself is a SYNTAX error: sluice
 * lets nobody act for another.
 */
enum auth_sasl_status auth_sasl_plain(const char *b64, char *user,
    char *pass);
/*
 * One LOGIN response (the user name, then the password): decode b64 into
 * out (cap bytes); no NUL allowed inside.
 */
enum auth_sasl_status auth_sasl_login(const char *b64, char *out, size_t cap);

#endif
