/* SPDX-License-Identifier: MIT */
/*
 * test_auth.c: src/auth: the users file (parse, errors with file:line,
 * look-up, set/delete, atomic write, world-readable refusal), password
 * hashing and checking with libxcrypt (yescrypt and SHA-512), and the
 * SASL PLAIN / LOGIN decoders with base64 edge cases.
 *
 * Run one test by name: test_auth test_plain (a cmocka filter pattern).
 */
#include <sys/stat.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "auth/auth.h"

/* "secret" as SHA-512 crypt (openssl passwd -6 -salt abcdefgh secret) */
#define SHA512_SECRET "$6$abcdefgh$ltjgWl6579NluT/Vi1nwEvcil.G5Nbc4NiXZaNGStk8PSwGfQv72N2CKPPrVACtLtip/cZ/1GM/O6IND4WQhG."

static void
test_parse(void **state)
{
	static const char ok[] = "# users\n\nbob:" SHA512_SECRET "\r\n"
	    "alice@example.test:" SHA512_SECRET "\n"
	    "locked:!" SHA512_SECRET "\nnone:*\n";
	static const struct { const char *text, *err; } bad[] = {
		{ "bob\n", "u:1: expected name:hash" },
		{ "\nbob:plain\n", "u:2: user bob: the hash is not" },
		{ "bob:$1$abc$xyz\n", "u:1: user bob: the hash" },
		{ "bob:!plain\n", "u:1: user bob: the hash" },
		{ "bob:!!\n", "u:1: user bob: the hash" },
		{ ":" SHA512_SECRET "\n", "u:1: '' is not a valid user" },
		{ "b b:" SHA512_SECRET "\n", "u:1: 'b b' is not a valid" },
		{ "bob:" SHA512_SECRET "\nbob:" SHA512_SECRET "\n",
		    "u: user bob is listed twice" },
	};
	struct auth_users *u;
	char err[256];

	u = auth_users_parse(ok, sizeof(ok) - 1, "u", err, sizeof(err));
	assert_non_null(u);
	assert_int_equal(u->n, 4);
	assert_string_equal(u->v[0].name, "alice@example.test");
	/* locked accounts load and never match */
	assert_false(auth_password_check(auth_users_find(u, "locked"), "secret"));
	assert_false(auth_password_check(auth_users_find(u, "none"), "*"));
	assert_string_equal(auth_users_find(u, "bob"), SHA512_SECRET);
	assert_null(auth_users_find(u, "Bob"));
	assert_null(auth_users_find(u, "carol"));
	auth_users_free(u);

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		u = auth_users_parse(bad[i].text, strlen(bad[i].text), "u", err,
		    sizeof(err));
		if (u != NULL || strncmp(err, bad[i].err, strlen(bad[i].err)))
			fail_msg("case %zu: got \"%s\", want \"%s...\"", i, err,
			    bad[i].err);
	}
	/* a NUL inside a line */
	u = auth_users_parse("bob:\0x\n", 7, "u", err, sizeof(err));
	assert_null(u);
	assert_string_equal(err, "u:1: NUL byte in line");
}

static void
test_password(void **state)
{
	char err[128], *h;

	assert_true(auth_password_check(SHA512_SECRET, "secret"));
	assert_false(auth_password_check(SHA512_SECRET, "Secret"));
	assert_false(auth_password_check(SHA512_SECRET, ""));
	assert_false(auth_password_check("", "secret"));
	assert_false(auth_password_check("secret", "secret"));
	h = auth_password_hash("pässword", err, sizeof(err));
	assert_non_null(h);
	assert_memory_equal(h, "$y$", 3);
	assert_true(auth_password_check(h, "pässword"));
	assert_false(auth_password_check(h, "password"));
	free(h);
}

static void
test_set_write_load(void **state)
{
	char dir[] = "/tmp/test_auth.XXXXXX", path[128], err[256];
	struct auth_users *u = calloc(1, sizeof(*u)), *r;
	struct stat st;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/users", dir);
	/* missing: empty if allowed, else an error naming the file */
	r = auth_users_load(path, 1, err, sizeof(err));
	assert_non_null(r);
	assert_int_equal(r->n, 0);
	auth_users_free(r);
	assert_null(auth_users_load(path, 0, err, sizeof(err)));
	assert_non_null(strstr(err, "No such file"));

	assert_int_equal(auth_users_set(u, "zed", SHA512_SECRET), 0);
	assert_int_equal(auth_users_set(u, "amy", "$6$x$y"), 0);
	assert_int_equal(auth_users_set(u, "amy", SHA512_SECRET), 0);
	assert_int_equal(auth_users_set(u, "nobody", NULL), -1);
	assert_int_equal(u->n, 2);
	assert_int_equal(auth_users_write(u, path, 0640, err, sizeof(err)), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0640);
	r = auth_users_load(path, 0, err, sizeof(err));
	assert_non_null(r);
	assert_int_equal(r->n, 2);
	assert_string_equal(r->v[0].name, "amy");
	assert_string_equal(auth_users_find(r, "amy"), SHA512_SECRET);
	auth_users_free(r);

	assert_int_equal(auth_users_set(u, "zed", NULL), 0);
	assert_int_equal(auth_users_write(u, path, 0600, err, sizeof(err)), 0);
	r = auth_users_load(path, 0, err, sizeof(err));
	assert_int_equal(r->n, 1);
	auth_users_free(r);

	/* readable by others: refused */
	assert_int_equal(chmod(path, 0644), 0);
	assert_null(auth_users_load(path, 0, err, sizeof(err)));
	assert_non_null(strstr(err, "other users may read it"));
	unlink(path);
	rmdir(dir);
	auth_users_free(u);
}

static void
test_b64(void **state)
{
	static const struct { const char *in; const char *out; long n; } c[] = {
		{ "", "", 0 },
		{ "Zg==", "f", 1 },
		{ "Zm8=", "fo", 2 },
		{ "Zm9v", "foo", 3 },
		{ "Zm9vYg==", "foob", 4 },
		{ "Zh==", NULL, -1 },		/* leftover bits */
		{ "Zm9", NULL, -1 },		/* not a multiple of 4 */
		{ "Z===", NULL, -1 },
		{ "Zg=a", NULL, -1 },
		{ "Zg==Zg==", NULL, -1 },	/* padding inside */
		{ "Zm 9", NULL, -1 },
	};
	uint8_t out[16];
	char enc[32];

	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		long n = auth_b64_decode(c[i].in, strlen(c[i].in), out,
		    sizeof(out));
		if (n != c[i].n || (n > 0 && memcmp(out, c[i].out, (size_t)n)))
			fail_msg("b64 case %zu \"%s\": %ld", i, c[i].in, n);
		if (n >= 0) {
			auth_b64_encode(out, (size_t)n, enc, sizeof(enc));
			assert_string_equal(enc, c[i].in);
		}
	}
	/* does not fit */
	assert_int_equal(auth_b64_decode("Zm9v", 4, out, 2), -1);
}

static void
test_plain(void **state)
{
	static const struct { const char *raw; size_t n; int st;
	    const char *user, *pass; } c[] = {
		{ "\0bob\0secret", 11, AUTH_SASL_OK, "bob", "secret" },
		{ "bob\0bob\0secret", 14, AUTH_SASL_OK, "bob", "secret" },
		{ "amy\0bob\0secret", 14, AUTH_SASL_SYNTAX, NULL, NULL },
		{ "bo\0bob\0secret", 13, AUTH_SASL_SYNTAX, NULL, NULL },
		{ "\0bob\0", 5, AUTH_SASL_SYNTAX, NULL, NULL },
		{ "\0\0secret", 8, AUTH_SASL_SYNTAX, NULL, NULL },
		{ "\0bob", 4, AUTH_SASL_SYNTAX, NULL, NULL },
		{ "\0bob\0sec\0ret", 12, AUTH_SASL_SYNTAX, NULL, NULL },
	};
	char b64[64], user[AUTH_NAME_MAX + 1], pass[AUTH_PASS_MAX + 1];

	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		auth_b64_encode((const uint8_t *)c[i].raw, c[i].n, b64,
		    sizeof(b64));
		int st = auth_sasl_plain(b64, user, pass);
		if (st != c[i].st)
			fail_msg("plain case %zu: status %d", i, st);
		if (st == AUTH_SASL_OK) {
			assert_string_equal(user, c[i].user);
			assert_string_equal(pass, c[i].pass);
		}
	}
	assert_int_equal(auth_sasl_plain("*", user, pass), AUTH_SASL_CANCEL);
	assert_int_equal(auth_sasl_plain("=", user, pass), AUTH_SASL_SYNTAX);
	assert_int_equal(auth_sasl_plain("!!!!", user, pass), AUTH_SASL_BAD64);
	assert_int_equal(auth_sasl_plain("", user, pass), AUTH_SASL_BAD64);
}

static void
test_login(void **state)
{
	char out[AUTH_NAME_MAX + 1];

	assert_int_equal(auth_sasl_login("Ym9i", out, sizeof(out)), AUTH_SASL_OK);
	assert_string_equal(out, "bob");
	assert_int_equal(auth_sasl_login("*", out, sizeof(out)),
	    AUTH_SASL_CANCEL);
	assert_int_equal(auth_sasl_login("=", out, sizeof(out)),
	    AUTH_SASL_SYNTAX);
	assert_int_equal(auth_sasl_login("AGJvYg==", out, sizeof(out)),
	    AUTH_SASL_SYNTAX);	/* NUL inside */
	assert_int_equal(auth_sasl_login("Ym9i", out, 3), AUTH_SASL_SYNTAX);
	assert_int_equal(auth_sasl_login("Ym9", out, sizeof(out)),
	    AUTH_SASL_BAD64);
}

int
main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse),
		cmocka_unit_test(test_password),
		cmocka_unit_test(test_set_write_load),
		cmocka_unit_test(test_b64),
		cmocka_unit_test(test_plain),
		cmocka_unit_test(test_login),
	};

	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	return cmocka_run_group_tests_name("auth", tests, NULL, NULL);
}
