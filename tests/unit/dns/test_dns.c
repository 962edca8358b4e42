/* SPDX-License-Identifier: MIT */
/*
 * test_dns.c: dns.h against a real dnsmasq on 127.0.0.1 (a free port), with
 * no upstream: every answer comes from the records on its command line.
 *
 * The group setup starts dnsmasq (it must be installed: scripts/deps.sh
 * installs dnsmasq-base; without it the group fails, it does not skip) and
 * opens three UDP sockets of our own:
 *  - sf: answers every query SERVFAIL (an event on each test's base);
 *    dnsmasq forwards servfail.test there, since it never says SERVFAIL
 *    by itself;
 *  - bh: a black hole, bound and never read (timeouts);
 *  - a port bound then closed (connection refused).
 * Names under .test that dnsmasq does not know are NXDOMAIN (--local=/test/);
 * names outside .test are REFUSED (--no-resolv, no server).
 *
 * Each test runs its own event loop, bounded by a guard timer.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <poll.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "util/util.h"

#include "dns/dns.h"

#define PORT 2525

/* The dnsmasq and the sockets the whole group shares. */
static struct {
	pid_t pid;
	int port;		/* dnsmasq */
	int sf_fd, sf_port;	/* SERVFAIL responder */
	int bh_fd, bh_port;	/* black hole */
	int closed_port;	/* nothing listens */
} g = { .pid = -1, .sf_fd = -1, .bh_fd = -1 };

struct fixture {
	struct event_base *base;
	struct event *sf_ev;
	struct dns *d;
	int count;		/* callbacks seen */
};

/* One query's outcome, filled by got_cb on the loop. */
struct got {
	int fired;
	struct dns_result *res;
	int *count;
};

static void
got_cb(void *arg, struct dns_result *res)
{
	struct got *r = arg;

	r->fired++;
	dns_result_free(r->res);
	r->res = res;
	(*r->count)++;
}

static void
got_init(struct fixture *f, struct got *r)
{
	memset(r, 0, sizeof(*r));
	r->count = &f->count;
}

static void
got_clear(struct got *r)
{
	r->res = dns_result_free(r->res);
}

/* A UDP socket on 127.0.0.1, any port; returns the fd, port in *port. */
static int
udp_bind_any(int *port)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	int fd;

	if ((fd = socket(AF_INET, SOCK_DGRAM, 0)) == -1)
		return -1;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == -1 ||
	    getsockname(fd, (struct sockaddr *)&sin, &len) == -1) {
		close(fd);
		return -1;
	}
	*port = ntohs(sin.sin_port);
	return fd;
}

/* 1 if TCP port on 127.0.0.1 can be bound (dnsmasq listens on both). */
static int
tcp_port_free(int port)
{
	struct sockaddr_in sin;
	int fd, ok, one = 1;

	if ((fd = socket(AF_INET, SOCK_STREAM, 0)) == -1)
		return 0;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons(port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ok = bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0;
	close(fd);
	return ok;
}

/* The dnsmasq binary on PATH, /usr/sbin or /sbin; NULL if none. */
static char *
find_dnsmasq(void)
{
	static char path[512];
	const char *env = getenv("PATH");
	char *dirs, *dir, *save = NULL;

	dirs = xasprintf("%s:/usr/sbin:/sbin", env != NULL ? env : "/usr/bin");
	for (dir = strtok_r(dirs, ":", &save); dir != NULL;
	    dir = strtok_r(NULL, ":", &save)) {
		snprintf(path, sizeof(path), "%s/dnsmasq", dir);
		if (access(path, X_OK) == 0) {
			free(dirs);
			return path;
		}
	}
	free(dirs);
	return NULL;
}

/* 1 once dnsmasq answers a query on its port. */
static int
dnsmasq_ready(void)
{
	/* id 1, RD, one question: two.test MX IN */
	static const unsigned char query[] = {
		0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0,
		3, 't', 'w', 'o', 4, 't', 'e', 's', 't', 0, 0, 15, 0, 1,
	};
	struct sockaddr_in sin;
	struct pollfd pfd;
	unsigned char buf[512];
	int fd, ok = 0;

	if ((fd = socket(AF_INET, SOCK_DGRAM, 0)) == -1)
		return 0;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons(g.port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (sendto(fd, query, sizeof(query), 0, (struct sockaddr *)&sin,
	    sizeof(sin)) == (ssize_t)sizeof(query)) {
		pfd.fd = fd;
		pfd.events = POLLIN;
		ok = poll(&pfd, 1, 100) == 1 && recv(fd, buf, sizeof(buf), 0) > 0;
	}
	close(fd);
	return ok;
}

static int
dnsmasq_start(const char *bin)
{
	char port[32], server[64];
	int fd, tries, i, devnull;

	for (tries = 0; tries < 20; tries++) {
		if ((fd = udp_bind_any(&g.port)) == -1)
			return -1;
		close(fd);
		if (tcp_port_free(g.port))
			break;
	}
	snprintf(port, sizeof(port), "--port=%d", g.port);
	snprintf(server, sizeof(server), "--server=/servfail.test/127.0.0.1#%d",
	    g.sf_port);
	char *argv[] = {
		(char *)bin, "--no-daemon", "--no-resolv", "--no-hosts",
		port, "--listen-address=127.0.0.1", "--bind-interfaces",
		"--conf-file=/dev/null", "--local=/test/", "--local-ttl=300",
		"--mx-host=two.test,mx1.two.test,10",
		"--mx-host=two.test,mx2.two.test,20",
		"--host-record=mx1.two.test,127.0.0.11,60",
		"--host-record=mx2.two.test,127.0.0.12",
		"--mx-host=eq.test,a.eq.test,10",
		"--mx-host=eq.test,b.eq.test,10",
		"--host-record=a.eq.test,127.0.0.21",
		"--host-record=b.eq.test,127.0.0.22",
		"--host-record=nomx.test,127.0.0.31,::1",
		"--mx-host=null.test,.,0",
		"--mx-host=partial.test,gone.partial.test,5",
		"--mx-host=partial.test,mx.partial.test,10",
		"--host-record=mx.partial.test,127.0.0.41",
		"--mx-host=nohost.test,gone.nohost.test,10",
		"--mx-host=lit.test,127.0.0.51,10",
		"--mx-host=tempmx.test,mx.servfail.test,10",
		server, NULL,
	};

	g.pid = fork();
	if (g.pid == -1)
		return -1;
	if (g.pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getenv("DNS_TEST_VERBOSE") == NULL &&
		    (devnull = open("/dev/null", O_WRONLY)) != -1) {
			dup2(devnull, 1);
			dup2(devnull, 2);
		}
		execv(bin, argv);
		_exit(127);
	}
	for (i = 0; i < 50; i++) {
		if (dnsmasq_ready())
			return 0;
		if (waitpid(g.pid, NULL, WNOHANG) == g.pid) {
			g.pid = -1;
			return -1;
		}
	}
	return -1;
}

static int
group_setup(void **state)
{
	const char *bin = find_dnsmasq();
	int fd;

	if (bin == NULL) {
		print_error("dnsmasq not found: the DNS tests need it "
		    "(apt-get install dnsmasq-base, or scripts/deps.sh)\n");
		return -1;
	}
	g.sf_fd = udp_bind_any(&g.sf_port);
	g.bh_fd = udp_bind_any(&g.bh_port);
	fd = udp_bind_any(&g.closed_port);
	if (g.sf_fd == -1 || g.bh_fd == -1 || fd == -1) {
		print_error("cannot bind UDP sockets on 127.0.0.1\n");
		return -1;
	}
	close(fd);
	if (dnsmasq_start(bin) == -1) {
		print_error("dnsmasq (%s) did not start on 127.0.0.1:%d; "
		    "run with DNS_TEST_VERBOSE=1 to see why\n", bin, g.port);
		return -1;
	}
	return 0;
}

static int
group_teardown(void **state)
{
	if (g.pid > 0) {
		kill(g.pid, SIGTERM);
		waitpid(g.pid, NULL, 0);
	}
	if (g.sf_fd != -1)
		close(g.sf_fd);
	if (g.bh_fd != -1)
		close(g.bh_fd);
	return 0;
}

/* Answer each query on sf_fd with SERVFAIL. */
static void
sf_cb(evutil_socket_t fd, short what, void *arg)
{
	unsigned char buf[1500];
	struct sockaddr_storage from;
	socklen_t len = sizeof(from);
	ssize_t n;

	n = recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &len);
	if (n < 12)
		return;
	buf[2] |= 0x80;				/* QR */
	buf[3] = (buf[3] & 0x70) | 0x80 | 2;	/* RA, RCODE SERVFAIL */
	sendto(fd, buf, n, 0, (struct sockaddr *)&from, len);
}

static struct dns *
new_dns(struct fixture *f, const char *servers, int timeout_ms)
{
	char err[256] = "";
	struct dns *d;

	d = dns_new(f->base, servers, timeout_ms, err, sizeof(err));
	if (d == NULL)
		fail_msg("dns_new(%s): %s", servers, err);
	return d;
}

static int
setup(void **state)
{
	struct fixture *f = xcalloc(1, sizeof(*f));
	char servers[64];

	f->base = event_base_new();
	f->sf_ev = event_new(f->base, g.sf_fd, EV_READ | EV_PERSIST, sf_cb, f);
	event_add(f->sf_ev, NULL);
	snprintf(servers, sizeof(servers), "127.0.0.1:%d", g.port);
	f->d = new_dns(f, servers, 1000);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;

	dns_free(f->d);
	event_free(f->sf_ev);
	event_base_free(f->base);
	free(f);
	return 0;
}

static void
guard_cb(evutil_socket_t fd, short what, void *arg)
{
	*(int *)arg = 1;
}

/* Run the loop until f->count reaches n or ms pass; returns f->count. */
static int
run(struct fixture *f, int n, int ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
	struct event *guard;
	int expired = 0;

	guard = evtimer_new(f->base, guard_cb, &expired);
	evtimer_add(guard, &tv);
	while (!expired && f->count < n)
		event_base_loop(f->base, EVLOOP_ONCE);
	event_free(guard);
	return f->count;
}

/* "127.0.0.1:2525" or "[::1]:2525" */
static const char *
addr_str(const struct sockaddr_storage *ss)
{
	static char out[INET6_ADDRSTRLEN + 16];
	char ip[INET6_ADDRSTRLEN];
	const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;

	if (ss->ss_family == AF_INET) {
		inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip));
		snprintf(out, sizeof(out), "%s:%d", ip, ntohs(sin->sin_port));
	} else if (ss->ss_family == AF_INET6) {
		inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof(ip));
		snprintf(out, sizeof(out), "[%s]:%d", ip,
		    ntohs(sin6->sin6_port));
	} else {
		snprintf(out, sizeof(out), "family %d", ss->ss_family);
	}
	return out;
}

/* Look domain up (MX, or host if !mx) and wait for the one answer. */
static void
lookup(struct fixture *f, int mx, const char *name, struct got *r, int ms)
{
	got_init(f, r);
	f->count = 0;
	if (mx)
		assert_non_null(dns_mx_lookup(f->d, name, PORT, got_cb, r));
	else
		assert_non_null(dns_host_lookup(f->d, name, PORT, got_cb, r));
	assert_int_equal(r->fired, 0);	/* never from inside the call */
	run(f, 1, ms);
	if (r->fired != 1)
		fail_msg("%s: %d callbacks", name, r->fired);
	assert_non_null(r->res);
}

static void
test_mx_preference(void **state)
{
	struct fixture *f = *state;
	struct dns_result *res;
	struct got r;

	lookup(f, 1, "two.test", &r, 3000);
	res = r.res;
	assert_int_equal(res->status, DNS_OK);
	assert_null(res->error);
	assert_int_equal(res->nhost, 2);
	assert_string_equal(res->hosts[0].name, "mx1.two.test");
	assert_int_equal(res->hosts[0].pref, 10);
	assert_int_equal(res->hosts[0].naddr, 1);
	assert_string_equal(addr_str(&res->hosts[0].addrs[0]),
	    "127.0.0.11:2525");
	assert_string_equal(res->hosts[1].name, "mx2.two.test");
	assert_int_equal(res->hosts[1].pref, 20);
	assert_int_equal(res->hosts[1].naddr, 1);
	assert_string_equal(addr_str(&res->hosts[1].addrs[0]),
	    "127.0.0.12:2525");
	/* MX and mx2 at --local-ttl=300, mx1 at 60: the smallest wins. */
	assert_int_equal(res->ttl, 60);
	got_clear(&r);
}

static void
test_mx_equal_shuffled(void **state)
{
	struct fixture *f = *state;
	struct got r;
	int i, afirst = 0, bfirst = 0;

	for (i = 0; i < 50; i++) {
		lookup(f, 1, "eq.test", &r, 3000);
		assert_int_equal(r.res->status, DNS_OK);
		assert_int_equal(r.res->nhost, 2);
		if (strcmp(r.res->hosts[0].name, "a.eq.test") == 0)
			afirst++;
		else if (strcmp(r.res->hosts[0].name, "b.eq.test") == 0)
			bfirst++;
		got_clear(&r);
	}
	/* 2^-49 of failing by chance. */
	assert_true(afirst > 0);
	assert_true(bfirst > 0);
}

static void
test_mx_implicit(void **state)
{
	struct fixture *f = *state;
	struct dns_result *res;
	struct got r;

	lookup(f, 1, "nomx.test", &r, 3000);
	res = r.res;
	assert_int_equal(res->status, DNS_OK);
	assert_int_equal(res->nhost, 1);
	assert_string_equal(res->hosts[0].name, "nomx.test");
	assert_int_equal(res->hosts[0].pref, 0);
	assert_int_equal(res->hosts[0].naddr, 2);
	assert_string_equal(addr_str(&res->hosts[0].addrs[0]),
	    "127.0.0.31:2525");
	assert_string_equal(addr_str(&res->hosts[0].addrs[1]), "[::1]:2525");
	got_clear(&r);
}

static void
test_mx_null(void **state)
{
	struct fixture *f = *state;
	struct got r;

	lookup(f, 1, "null.test", &r, 3000);
	assert_int_equal(r.res->status, DNS_NULLMX);
	assert_int_equal(r.res->nhost, 0);
	assert_non_null(r.res->error);
	got_clear(&r);
}

static void
test_mx_nxdomain(void **state)
{
	struct fixture *f = *state;
	struct got r;

	lookup(f, 1, "nx.test", &r, 3000);
	assert_int_equal(r.res->status, DNS_NXDOMAIN);
	assert_string_equal(r.res->error, "NXDOMAIN looking up MX for nx.test");
	got_clear(&r);
}

static void
test_mx_servfail(void **state)
{
	struct fixture *f = *state;
	struct got r;

	/* dnsmasq passes the SERVFAIL of its upstream on. */
	lookup(f, 1, "x.servfail.test", &r, 5000);
	assert_int_equal(r.res->status, DNS_TEMP);
	assert_string_equal(r.res->error,
	    "SERVFAIL looking up MX for x.servfail.test");
	got_clear(&r);
}

static void
test_mx_servfail_direct(void **state)
{
	struct fixture *f = *state;
	char servers[64];
	struct got r;

	dns_free(f->d);
	snprintf(servers, sizeof(servers), "127.0.0.1:%d", g.sf_port);
	f->d = new_dns(f, servers, 1000);
	lookup(f, 1, "example.test", &r, 3000);
	assert_int_equal(r.res->status, DNS_TEMP);
	assert_string_equal(r.res->error,
	    "SERVFAIL looking up MX for example.test");
	got_clear(&r);
}

static void
test_mx_refused(void **state)
{
	struct fixture *f = *state;
	struct got r;

	lookup(f, 1, "example.invalid", &r, 3000);
	assert_int_equal(r.res->status, DNS_TEMP);
	assert_string_equal(r.res->error,
	    "REFUSED looking up MX for example.invalid");
	got_clear(&r);
}

static void
test_mx_timeout(void **state)
{
	struct fixture *f = *state;
	char servers[64];
	int64_t t0;
	struct got r;

	dns_free(f->d);
	snprintf(servers, sizeof(servers), "127.0.0.1:%d", g.bh_port);
	f->d = new_dns(f, servers, 100);
	t0 = sl_mono_ms();
	lookup(f, 1, "two.test", &r, 3000);
	/* Two tries: 100 ms, then 200 ms. */
	assert_true(sl_mono_ms() - t0 < 1500);
	assert_int_equal(r.res->status, DNS_TEMP);
	assert_string_equal(r.res->error, "timeout looking up MX for two.test");
	got_clear(&r);
}

static void
test_mx_connrefused(void **state)
{
	struct fixture *f = *state;
	char servers[64];
	struct got r;

	dns_free(f->d);
	snprintf(servers, sizeof(servers), "127.0.0.1:%d", g.closed_port);
	f->d = new_dns(f, servers, 1000);
	lookup(f, 1, "two.test", &r, 3000);
	assert_int_equal(r.res->status, DNS_TEMP);
	assert_non_null(r.res->error);
	got_clear(&r);
}

static void
test_mx_host_without_address(void **state)
{
	struct fixture *f = *state;
	struct got r;

	lookup(f, 1, "partial.test", &r, 3000);
	assert_int_equal(r.res->status, DNS_OK);
	assert_int_equal(r.res->nhost, 1);
	assert_string_equal(r.res->hosts[0].name, "mx.partial.test");
	assert_string_equal(addr_str(&r.res->hosts[0].addrs[0]),
	    "127.0.0.41:2525");
	got_clear(&r);

	lookup(f, 1, "nohost.test", &r, 3000);
	assert_int_equal(r.res->status, DNS_NOHOST);
	assert_int_equal(r.res->nhost, 0);
	got_clear(&r);
}

static void
test_mx_host_temp(void **state)
{
	struct fixture *f = *state;
	struct got r;

	lookup(f, 1, "tempmx.test", &r, 5000);
	assert_int_equal(r.res->status, DNS_TEMP);
	assert_non_null(strstr(r.res->error, "SERVFAIL looking up A"));
	got_clear(&r);
}

static void
test_mx_literal_target(void **state)
{
	struct fixture *f = *state;
	struct got r;

	lookup(f, 1, "lit.test", &r, 3000);
	assert_int_equal(r.res->status, DNS_OK);
	assert_int_equal(r.res->nhost, 1);
	assert_string_equal(r.res->hosts[0].name, "127.0.0.51");
	assert_int_equal(r.res->hosts[0].naddr, 1);
	assert_string_equal(addr_str(&r.res->hosts[0].addrs[0]),
	    "127.0.0.51:2525");
	got_clear(&r);

	lookup(f, 1, "[127.0.0.9]", &r, 1000);
	assert_int_equal(r.res->status, DNS_OK);
	assert_int_equal(r.res->nhost, 1);
	assert_string_equal(addr_str(&r.res->hosts[0].addrs[0]),
	    "127.0.0.9:2525");
	got_clear(&r);
}

static void
test_host_lookup(void **state)
{
	struct fixture *f = *state;
	struct got r;

	lookup(f, 0, "mx1.two.test", &r, 3000);
	assert_int_equal(r.res->status, DNS_OK);
	assert_int_equal(r.res->nhost, 1);
	assert_string_equal(r.res->hosts[0].name, "mx1.two.test");
	assert_int_equal(r.res->hosts[0].naddr, 1);
	assert_string_equal(addr_str(&r.res->hosts[0].addrs[0]),
	    "127.0.0.11:2525");
	got_clear(&r);

	lookup(f, 0, "[mx2.two.test]", &r, 3000);
	assert_int_equal(r.res->status, DNS_OK);
	assert_string_equal(addr_str(&r.res->hosts[0].addrs[0]),
	    "127.0.0.12:2525");
	got_clear(&r);

	lookup(f, 0, "nomx.test", &r, 3000);
	assert_int_equal(r.res->status, DNS_OK);
	assert_int_equal(r.res->hosts[0].naddr, 2);
	got_clear(&r);

	lookup(f, 0, "gone.test", &r, 3000);
	assert_int_equal(r.res->status, DNS_NXDOMAIN);
	got_clear(&r);

	lookup(f, 0, "x.servfail.test", &r, 5000);
	assert_int_equal(r.res->status, DNS_TEMP);
	got_clear(&r);
}

static void
test_host_literal(void **state)
{
	static const struct {
		const char *in, *out;
	} cases[] = {
		{ "192.0.2.1", "192.0.2.1:2525" },
		{ "[192.0.2.1]", "192.0.2.1:2525" },
		{ "2001:db8::1", "[2001:db8::1]:2525" },
		{ "[2001:db8::1]", "[2001:db8::1]:2525" },
		{ "[IPv6:2001:db8::1]", "[2001:db8::1]:2525" },
	};
	struct fixture *f = *state;
	struct got r;
	size_t i;

	/* No DNS at all: a resolver pointed at the black hole still answers. */
	dns_free(f->d);
	{
		char servers[64];

		snprintf(servers, sizeof(servers), "127.0.0.1:%d", g.bh_port);
		f->d = new_dns(f, servers, 100);
	}
	for (i = 0; i < SL_ARRAY_LEN(cases); i++) {
		lookup(f, 0, cases[i].in, &r, 200);
		assert_int_equal(r.res->status, DNS_OK);
		assert_int_equal(r.res->nhost, 1);
		assert_int_equal(r.res->hosts[0].naddr, 1);
		assert_string_equal(addr_str(&r.res->hosts[0].addrs[0]),
		    cases[i].out);
		got_clear(&r);
	}
}

/* Cancels the query in arg (the callback of another query). */
static void
cancel_other_cb(void *arg, struct dns_result *res)
{
	struct dns_query **other = arg;

	dns_query_cancel(*other);
	dns_result_free(res);
}

static void
test_cancel(void **state)
{
	struct fixture *f = *state;
	struct dns_query *q, *q2;
	struct got r1, r2, r3;

	got_init(f, &r1);
	got_init(f, &r2);
	got_init(f, &r3);
	/* In flight in c-ares. */
	q = dns_mx_lookup(f->d, "two.test", PORT, got_cb, &r1);
	dns_query_cancel(q);
	/* Answered at once, not yet delivered. */
	q = dns_host_lookup(f->d, "192.0.2.1", PORT, got_cb, &r2);
	dns_query_cancel(q);
	/* Cancelled from the callback of another, both ready. */
	dns_host_lookup(f->d, "192.0.2.2", PORT, cancel_other_cb, &q2);
	q2 = dns_host_lookup(f->d, "192.0.2.3", PORT, got_cb, &r3);
	dns_query_cancel(NULL);
	/* A later query still works, and the cancelled ones stay quiet. */
	lookup(f, 1, "two.test", &r1, 3000);
	run(f, 100, 300);
	assert_int_equal(r1.fired, 1);
	assert_int_equal(r1.res->status, DNS_OK);
	assert_int_equal(r2.fired, 0);
	assert_int_equal(r3.fired, 0);
	got_clear(&r1);
}

static void
test_free_pending(void **state)
{
	struct fixture *f = *state;
	char servers[64];
	struct dns_query *q;
	struct got r1, r2, r3;

	dns_free(f->d);
	snprintf(servers, sizeof(servers), "127.0.0.1:%d", g.bh_port);
	f->d = new_dns(f, servers, 5000);
	got_init(f, &r1);
	got_init(f, &r2);
	got_init(f, &r3);
	dns_mx_lookup(f->d, "two.test", PORT, got_cb, &r1);
	q = dns_mx_lookup(f->d, "eq.test", PORT, got_cb, &r2);
	dns_host_lookup(f->d, "192.0.2.1", PORT, got_cb, &r3);
	dns_query_cancel(q);
	run(f, 100, 50);
	assert_int_equal(r1.fired, 0);
	assert_int_equal(r3.fired, 1);	/* the literal was delivered */
	dns_free(f->d);
	f->d = NULL;
	assert_int_equal(r1.fired, 1);
	assert_int_equal(r1.res->status, DNS_TEMP);
	assert_string_equal(r1.res->error, "resolver shut down");
	assert_int_equal(r2.fired, 0);
	got_clear(&r1);
	got_clear(&r3);
	/* The sockets' events are gone with it: the loop has nothing left
	 * but the SERVFAIL responder. */
	run(f, 100, 50);
	assert_int_equal(r1.fired, 1);
}

/* Frees the resolver from a user callback, then looks nothing up. */
static void
free_in_cb(void *arg, struct dns_result *res)
{
	struct fixture *f = arg;

	dns_free(f->d);
	f->d = NULL;
	f->count++;
	dns_result_free(res);
}

/* Starts another lookup from the callback. */
static void
chain_cb(void *arg, struct dns_result *res)
{
	struct got *r = arg;

	assert_int_equal(res->status, DNS_OK);
	dns_result_free(res);
	(*r->count)++;
}

static void
test_reentry(void **state)
{
	struct fixture *f = *state;
	struct got r;

	got_init(f, &r);
	f->count = 0;
	dns_mx_lookup(f->d, "two.test", PORT, chain_cb, &r);
	dns_mx_lookup(f->d, "nomx.test", PORT, chain_cb, &r);
	run(f, 2, 3000);
	assert_int_equal(f->count, 2);

	/* dns_free from a callback while another query is in flight. */
	f->count = 0;
	got_init(f, &r);
	dns_mx_lookup(f->d, "two.test", PORT, free_in_cb, f);
	dns_mx_lookup(f->d, "x.servfail.test", PORT, got_cb, &r);
	run(f, 2, 3000);
	assert_null(f->d);
	/* Either the other answer came first, or the free told it. */
	assert_int_equal(r.fired, 1);
	got_clear(&r);
}

static void
test_new_servers(void **state)
{
	static const char *good[] = {
		"127.0.0.1", "127.0.0.1:53", "[::1]:53", "::1", "[::1]",
		"127.0.0.1:5353, 127.0.0.2", "",
	};
	static const char *bad[] = {
		"bogus", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:x",
		"[::1", "[::1]x", ",", "1.2.3.4:53:53",
	};
	struct fixture *f = *state;
	char err[256];
	struct dns *d;
	size_t i;

	for (i = 0; i < SL_ARRAY_LEN(good); i++) {
		d = dns_new(f->base, good[i], 1000, err, sizeof(err));
		if (d == NULL)
			fail_msg("\"%s\": %s", good[i], err);
		dns_free(d);
	}
	for (i = 0; i < SL_ARRAY_LEN(bad); i++) {
		err[0] = '\0';
		d = dns_new(f->base, bad[i], 1000, err, sizeof(err));
		if (d != NULL)
			fail_msg("\"%s\" accepted", bad[i]);
		assert_true(strncmp(err, "dns: ", 5) == 0);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_mx_preference, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mx_equal_shuffled, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mx_implicit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mx_null, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mx_nxdomain, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mx_servfail, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mx_servfail_direct, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mx_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mx_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mx_connrefused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mx_host_without_address, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mx_host_temp, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mx_literal_target, setup, teardown),
		cmocka_unit_test_setup_teardown(test_host_lookup, setup, teardown),
		cmocka_unit_test_setup_teardown(test_host_literal, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
		cmocka_unit_test_setup_teardown(test_free_pending, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reentry, setup, teardown),
		cmocka_unit_test_setup_teardown(test_new_servers, setup, teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests_name("dns", tests, group_setup,
	    group_teardown);
}
