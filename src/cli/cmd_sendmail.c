/* SPDX-License-Identifier: MIT */
/*
 * cmd_sendmail.c: `sluice sendmail` (installed also as `sendmail`): the
 * local submission command applications call, e.g. PHP's mail() runs
 * `sendmail -t -i`. It reads the message on standard input, adds Date,
 * Message-ID and From when missing (RFC 6409 section 8, src/submit/),
 * and hands it to sluiced over SMTP on the first [server] listen address
 * of the configuration (-C FILE or -c FILE, else the built-in one).
 *
 * It exits 0 only once sluiced answered 250 to the end of the data, which
 * sluiced sends only after the message is on disk. Otherwise the exit code
 * is that of classic sendmail (sysexits.h): EX_USAGE for bad flags or no
 * recipient, EX_TEMPFAIL when sluiced is not reachable or answers 4xx,
 * EX_NOUSER when it refuses a recipient, EX_DATAERR for another 5xx.
 */
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <poll.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "conf/conf.h"
#include "submit/submit.h"
#include "util/util.h"

#define SM_TIMEOUT_MS 300000

struct sm {
	const char *conf_path;
	const char *sender;
	const char *full_name;
	int from_headers;	/* -t */
	int ignore_dots;	/* -i, -oi */
	int verbose;		/* -v */
	struct submit_addrs rcpts;
	int fd;
	char buf[8192];
	size_t blen;
};

static void
sm_usage(FILE *f)
{
	fprintf(f,
	    "usage: sendmail [-t] [-i] [-f sender] [-F name] [-bm] [-v] "
	    "[-C FILE] [recipient ...]\n"
	    "  reads a message on standard input and queues it in sluiced\n"
	    "  -t          recipients also from To:, Cc: and Bcc: (Bcc: is "
	    "removed)\n"
	    "  -i, -oi     a line with a single \".\" does not end the input\n"
	    "  -f SENDER   envelope sender (default: user@hostname); -r too\n"
	    "  -F NAME     full name for an added From:\n"
	    "  -bm         deliver mail (the default); -bp lists the queue\n"
	    "  -v          print the SMTP dialogue on standard error\n"
	    "  -C FILE     sluiced's configuration (also -c FILE)\n");
}

/* ---- the SMTP dialogue ---- */

static int
sm_send(struct sm *s, const char *data, size_t len)
{
	while (len > 0) {
		ssize_t n = send(s->fd, data, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		data += n;
		len -= (size_t)n;
	}
	return 0;
}

static int
sm_cmd(struct sm *s, const char *line)
{
	if (s->verbose)
		fprintf(stderr, ">>> %s\n", line);
	if (sm_send(s, line, strlen(line)) != 0 || sm_send(s, "\r\n", 2) != 0)
		return -1;
	return 0;
}

/* One reply: its code (and its last line in text), or -1. */
static int
sm_reply(struct sm *s, char *text, size_t size)
{
	struct pollfd p = { .fd = s->fd, .events = POLLIN };
	char *nl;
	size_t l;

	for (;;) {
		while ((nl = memchr(s->buf, '\n', s->blen)) != NULL) {
			l = (size_t)(nl - s->buf) + 1;
			*nl = '\0';
			if (nl > s->buf && nl[-1] == '\r')
				nl[-1] = '\0';
			if (s->verbose)
				fprintf(stderr, "<<< %s\n", s->buf);
			sl_strlcpy(text, s->buf, size);
			memmove(s->buf, s->buf + l, s->blen - l);
			s->blen -= l;
			if (strlen(text) < 4 || text[3] != '-')
				return atoi(text) >= 200 ? atoi(text) : -1;
		}
		if (s->blen == sizeof(s->buf))
			s->blen = 0;
		if (poll(&p, 1, SM_TIMEOUT_MS) <= 0) {
			snprintf(text, size, "no reply within %ds",
			    SM_TIMEOUT_MS / 1000);
			return -1;
		}
		ssize_t n = recv(s->fd, s->buf + s->blen,
		    sizeof(s->buf) - s->blen, 0);
		if (n <= 0) {
			snprintf(text, size, "connection closed");
			return -1;
		}
		s->blen += (size_t)n;
	}
}

/* The exit code for a refusal with code at a stage. */
static int
sm_fail(int code, const char *stage, const char *text, int perm_code)
{
	fprintf(stderr, "sendmail: %s: %s\n", stage, text);
	if (code >= 500)
		return perm_code;
	return EX_TEMPFAIL;
}

static int
sm_connect(struct sm *s, const struct sl_conf *c)
{
	struct conf_addr a = c->listen[0];
	char host[NI_MAXHOST], serv[NI_MAXSERV];

	/* a wildcard listener is reached on loopback */
	if (a.ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a.ss;

		if (IN6_IS_ADDR_UNSPECIFIED(&sin6->sin6_addr))
			sin6->sin6_addr = in6addr_loopback;
	} else if (a.ss.ss_family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&a.ss;

		if (sin->sin_addr.s_addr == htonl(INADDR_ANY))
			sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	}
	getnameinfo((struct sockaddr *)&a.ss, a.len, host, sizeof(host), serv,
	    sizeof(serv), NI_NUMERICHOST | NI_NUMERICSERV);
	s->fd = socket(a.ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s->fd < 0 || connect(s->fd, (struct sockaddr *)&a.ss, a.len) != 0) {
		fprintf(stderr, "sendmail: cannot connect to sluiced at "
		    "[%s]:%s: %s; the message was not sent\n", host, serv,
		    strerror(errno));
		return -1;
	}
	if (s->verbose)
		fprintf(stderr, "sendmail: connected to [%s]:%s\n", host, serv);
	return 0;
}

/* The message after DATA: dot-stuffed, ending with ".". */
static int
sm_data(struct sm *s, const struct submit_buf *m)
{
	struct submit_buf out = { 0 };
	size_t pos = 0;
	int r;

	while (pos < m->len) {
		const char *nl = memchr(m->data + pos, '\n', m->len - pos);
		size_t l = nl ? (size_t)(nl - (m->data + pos)) + 1 :
		    m->len - pos;

		/* RFC 5321 4.5.2: a line starting with "." gets another */
		if (m->data[pos] == '.')
			submit_buf_add(&out, ".", 1);
		submit_buf_add(&out, m->data + pos, l);
		pos += l;
	}
	if (out.len > 0 && out.data[out.len - 1] != '\n')
		submit_buf_add(&out, "\r\n", 2);
	submit_buf_add(&out, ".\r\n", 3);
	if (s->verbose)
		fprintf(stderr, ">>> (%zu bytes of message)\n>>> .\n", m->len);
	r = sm_send(s, out.data, out.len);
	submit_buf_free(&out);
	return r;
}

static int
sm_transaction(struct sm *s, const struct sl_conf *c,
    const struct submit_buf *m)
{
	char line[2048], text[1024];
	size_t accepted = 0, refused_perm = 0;
	int code;

	if ((code = sm_reply(s, text, sizeof(text))) != 220)
		return sm_fail(code, "greeting", text, EX_UNAVAILABLE);
	snprintf(line, sizeof(line), "EHLO %s", c->server_hostname);
	if (sm_cmd(s, line) != 0 || (code = sm_reply(s, text,
	    sizeof(text))) != 250)
		return sm_fail(code, "EHLO", text, EX_UNAVAILABLE);
	snprintf(line, sizeof(line), "MAIL FROM:<%s>", s->sender);
	if (sm_cmd(s, line) != 0 || (code = sm_reply(s, text,
	    sizeof(text))) != 250)
		return sm_fail(code, "sender refused", text, EX_DATAERR);
	for (size_t i = 0; i < s->rcpts.n; i++) {
		snprintf(line, sizeof(line), "RCPT TO:<%s>", s->rcpts.v[i]);
		if (sm_cmd(s, line) != 0)
			return sm_fail(-1, "RCPT", "connection lost", 0);
		code = sm_reply(s, text, sizeof(text));
		if (code >= 200 && code < 300) {
			accepted++;
			continue;
		}
		fprintf(stderr, "sendmail: %s: recipient refused: %s\n",
		    s->rcpts.v[i], text);
		if (code < 0)
			return EX_TEMPFAIL;
		refused_perm += code >= 500;
	}
	if (accepted == 0)
		return refused_perm == s->rcpts.n ? EX_NOUSER : EX_TEMPFAIL;
	if (sm_cmd(s, "DATA") != 0 || (code = sm_reply(s, text,
	    sizeof(text))) != 354)
		return sm_fail(code, "DATA", text, EX_DATAERR);
	if (sm_data(s, m) != 0 || (code = sm_reply(s, text,
	    sizeof(text))) != 250)
		return sm_fail(code, "message refused", text, EX_DATAERR);
	sm_cmd(s, "QUIT");
	sm_reply(s, text, sizeof(text));
	if (accepted < s->rcpts.n) {
		fprintf(stderr, "sendmail: queued for %zu of %zu recipients "
		    "only\n", accepted, s->rcpts.n);
		return refused_perm ? EX_NOUSER : EX_TEMPFAIL;
	}
	return EX_OK;
}

/* ---- input and flags ---- */

static int
sm_read(struct sm *s, struct submit_buf *msg)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;

	while ((n = getline(&line, &cap, stdin)) > 0)
		if (submit_input_line(msg, line, (size_t)n, s->ignore_dots))
			break;
	free(line);
	if (ferror(stdin)) {
		fprintf(stderr, "sendmail: reading the message: %s\n",
		    strerror(errno));
		return -1;
	}
	return 0;
}

static char *
sm_default_sender(const struct sl_conf *c)
{
	struct passwd *pw = getpwuid(getuid());
	const char *user = pw ? pw->pw_name : getenv("USER");

	return xasprintf("%s@%s", user ? user : "nobody", c->server_hostname);
}

/* -o OPTION: i is -i; the rest (odb, oem, ...) are accepted and ignored. */
static int
sm_flags(struct sm *s, int argc, char **argv, int *list_queue)
{
	int ch;

	optind = 1;
	opterr = 0;
	while ((ch = getopt(argc, argv, ":tiF:f:r:b:vC:c:o:B:N:R:V:h")) != -1) {
		switch (ch) {
		case 't':
			s->from_headers = 1;
			break;
		case 'i':
			s->ignore_dots = 1;
			break;
		case 'F':
			s->full_name = optarg;
			break;
		case 'f':
		case 'r':
			s->sender = optarg;
			break;
		case 'b':
			if (strcmp(optarg, "p") == 0) {
				*list_queue = 1;
			} else if (strcmp(optarg, "m") != 0) {
				fprintf(stderr, "sendmail: -b%s is not "
				    "supported (only -bm and -bp)\n", optarg);
				return EX_USAGE;
			}
			break;
		case 'v':
			s->verbose = 1;
			break;
		case 'C':
		case 'c':
			s->conf_path = optarg;
			break;
		case 'o':
			if (strcmp(optarg, "i") == 0)
				s->ignore_dots = 1;
			break;
		case 'B': case 'N': case 'R': case 'V':
			break;
		case 'h':
			sm_usage(stdout);
			return -1;
		case ':':
			fprintf(stderr, "sendmail: -%c needs a value\n", optopt);
			sm_usage(stderr);
			return EX_USAGE;
		default:
			fprintf(stderr, "sendmail: unknown flag -%c\n", optopt);
			sm_usage(stderr);
			return EX_USAGE;
		}
	}
	for (int i = optind; i < argc; i++)
		submit_parse_addrs(argv[i], strlen(argv[i]), &s->rcpts);
	return 0;
}

static int
sm_run(struct sm *s, struct sl_conf *c)
{
	struct submit_buf in = { 0 }, msg = { 0 };
	struct submit_opts o = { 0 };
	char *sender = NULL;
	int rc;

	if (sm_read(s, &in) != 0)
		return EX_IOERR;
	if (s->from_headers)
		submit_header_rcpts(in.data ? in.data : "", submit_header_len(
		    in.data ? in.data : "", in.len), &s->rcpts);
	if (s->rcpts.n == 0) {
		fprintf(stderr, "sendmail: no recipients: give them as "
		    "arguments, or use -t to take them from To:, Cc: and "
		    "Bcc:\n");
		submit_buf_free(&in);
		return EX_USAGE;
	}
	if (s->sender == NULL)
		s->sender = sender = sm_default_sender(c);
	if (strpbrk(s->sender, "\r\n<> \t") != NULL) {
		fprintf(stderr, "sendmail: -f %s: not an address\n", s->sender);
		submit_buf_free(&in);
		free(sender);
		return EX_USAGE;
	}
	o.sender = s->sender;
	o.full_name = s->full_name;
	o.hostname = c->server_hostname;
	o.now = (int64_t)time(NULL);
	o.unique = ((uint64_t)getpid() << 32) ^ (uint64_t)sl_now_us();
	o.strip_bcc = s->from_headers;
	submit_prepare(in.data ? in.data : "", in.len, &o, &msg);
	submit_buf_free(&in);
	rc = EX_TEMPFAIL;
	if (sm_connect(s, c) == 0)
		rc = sm_transaction(s, c, &msg);
	if (s->fd >= 0)
		close(s->fd);
	if (rc == EX_OK && s->verbose)
		fprintf(stderr, "sendmail: queued\n");
	submit_buf_free(&msg);
	free(sender);
	return rc;
}

int
cmd_sendmail(int argc, char **argv)
{
	struct sm s = { .fd = -1 };
	struct sl_conf *c;
	char err[1024];
	int list = 0, rc, ok;

	if ((rc = sm_flags(&s, argc, argv, &list)) != 0) {
		submit_addrs_free(&s.rcpts);
		return rc < 0 ? EX_OK : rc;
	}
	s.conf_path = cli_conf_pick(s.conf_path, "sendmail", &ok);
	if (!ok) {
		submit_addrs_free(&s.rcpts);
		return EX_USAGE;
	}
	if (list) {
		char *qargv[] = { "mailq", "-c", (char *)s.conf_path, NULL };

		submit_addrs_free(&s.rcpts);
		return cmd_mailq(s.conf_path ? 3 : 1, qargv);
	}
	if ((c = conf_load(s.conf_path, err, sizeof(err))) == NULL) {
		fprintf(stderr, "sendmail: %s\n", err);
		submit_addrs_free(&s.rcpts);
		return EX_CONFIG;
	}
	rc = sm_run(&s, c);
	conf_free(c);
	submit_addrs_free(&s.rcpts);
	return rc;
}
