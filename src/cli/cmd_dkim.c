/* SPDX-License-Identifier: MIT */
/*
 * cmd_dkim.c: `sluice dkim keygen DOMAIN SELECTOR [--ed25519] [-o FILE]`:
 * a new DKIM signing key (RSA 2048 bits, or Ed25519 per RFC 8463) in a
 * PEM file no other user may read, then the DNS TXT record to publish
 * and the [dkim] sign line that uses it.
 *
 * The file is made with O_EXCL (an existing key is never overwritten)
 * and mode 0600; made by root, it goes to the group of [server] user
 * with mode 0640, since sluiced reads it again on reload after dropping
 * root.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "cli/cli.h"
#include "conf/conf.h"
#include "dkim/dkim.h"
#include "util/util.h"

static void
cmd_dkim_usage(FILE *f)
{
	fprintf(f, "usage: sluice dkim keygen DOMAIN SELECTOR [--ed25519] "
	    "[-o FILE] [-c CONFIG]\n"
	    "  --ed25519  an Ed25519 key (ed25519-sha256); default RSA 2048 "
	    "bits (rsa-sha256)\n"
	    "  -o FILE    where to write the key (default "
	    "var/dkim/DOMAIN.SELECTOR.key)\n"
	    "  -c CONFIG  sluiced's configuration, for [server] user\n");
}

/* Write pk to path, new, mode 0600 (0640 for the daemon's group as root). */
static int
cmd_dkim_write(EVP_PKEY *pk, const char *path, const char *daemon_user)
{
	struct passwd *pw = NULL;
	FILE *f;
	int fd;

	if (getuid() == 0 && daemon_user[0] != '\0')
		pw = getpwnam(daemon_user);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
	    pw ? 0640 : 0600);
	if (fd < 0) {
		fprintf(stderr, "sluice dkim: %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (fchmod(fd, pw ? 0640 : 0600) != 0 ||
	    (pw && fchown(fd, (uid_t)-1, pw->pw_gid) != 0))
		fprintf(stderr, "sluice dkim: %s: %s\n", path, strerror(errno));
	if ((f = fdopen(fd, "w")) == NULL ||
	    PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL) != 1 ||
	    fflush(f) != 0 || fsync(fd) != 0) {
		fprintf(stderr, "sluice dkim: %s: cannot write the key\n", path);
		if (f)
			fclose(f);
		unlink(path);
		return -1;
	}
	fclose(f);
	return 0;
}

/* Print the TXT record in strings of at most 255 bytes (RFC 1035). */
static void
cmd_dkim_print(const char *domain, const char *selector, const char *txt)
{
	size_t n = strlen(txt);

	printf("%s._domainkey.%s. IN TXT (", selector, domain);
	for (size_t i = 0; i < n; i += 255)
		printf(" \"%.*s\"", (int)(n - i < 255 ? n - i : 255), txt + i);
	printf(" )\n");
}

static int
cmd_dkim_keygen(const char *domain, const char *selector, int ed25519,
    const char *out, const char *daemon_user)
{
	char *d, *s, *p, *spec, *path, *txt, err[512];
	EVP_PKEY *pk;
	int rc = CLI_FAILED;

	spec = xasprintf("%s:%s:x", domain, selector);
	if (dkim_spec_parse(spec, &d, &s, &p, err, sizeof(err)) != 0) {
		fprintf(stderr, "sluice dkim: %s\n", err);
		free(spec);
		return CLI_USAGE;
	}
	free(spec);
	free(p);
	if (out != NULL) {
		path = xstrdup(out);
	} else {
		(void)mkdir("var", 0755);
		if (mkdir("var/dkim", 0750) != 0 && errno != EEXIST) {
			fprintf(stderr, "sluice dkim: var/dkim: %s\n",
			    strerror(errno));
			goto out_names;
		}
		path = xasprintf("var/dkim/%s.%s.key", d, s);
	}
	pk = ed25519 ? EVP_PKEY_Q_keygen(NULL, NULL, "ED25519") :
	    EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	if (pk == NULL) {
		fprintf(stderr, "sluice dkim: key generation failed\n");
		goto out_path;
	}
	if (cmd_dkim_write(pk, path, daemon_user) != 0)
		goto out_key;
	if ((txt = dkim_txt_record(pk)) == NULL)
		goto out_key;
	printf("wrote %s (%s)\n\npublish in DNS:\n", path,
	    ed25519 ? "ed25519-sha256" : "rsa-sha256, 2048 bits");
	cmd_dkim_print(d, s, txt);
	printf("\nand add to sluiced's configuration:\n[dkim]\nsign = %s:%s:%s\n",
	    d, s, path);
	free(txt);
	rc = CLI_OK;
out_key:
	EVP_PKEY_free(pk);
out_path:
	free(path);
out_names:
	free(d);
	free(s);
	return rc;
}

int
cmd_dkim(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "ed25519", no_argument, NULL, 'E' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *out = NULL, *conf_path = NULL;
	struct sl_conf *conf;
	char err[1024];
	int ch, ed25519 = 0, rc, ok;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "o:c:h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'E':
			ed25519 = 1;
			break;
		case 'o':
			out = optarg;
			break;
		case 'c':
			conf_path = optarg;
			break;
		case 'h':
			cmd_dkim_usage(stdout);
			return CLI_OK;
		default:
			cmd_dkim_usage(stderr);
			return CLI_USAGE;
		}
	}
	argc -= optind;
	argv += optind;
	if (argc != 3 || strcmp(argv[0], "keygen") != 0) {
		cmd_dkim_usage(stderr);
		return CLI_USAGE;
	}
	conf_path = cli_conf_pick(conf_path, "sluice dkim", &ok);
	if (!ok)
		return CLI_USAGE;
	if ((conf = conf_load(conf_path, err, sizeof(err))) == NULL) {
		fprintf(stderr, "sluice dkim: %s\n", err);
		return CLI_FAILED;
	}
	rc = cmd_dkim_keygen(argv[1], argv[2], ed25519, out, conf->server_user);
	conf_free(conf);
	return rc;
}
