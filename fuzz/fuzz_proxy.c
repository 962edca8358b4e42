/* SPDX-License-Identifier: MIT */
/*
 * fuzz_proxy.c: libFuzzer target for the PROXY protocol header parser of
 * src/smtpd/proxy.c.
 *
 * Input: byte 0 picks the mode (off excluded), the rest is what a balancer
 * (or anyone) sends first. The input is parsed whole and at every prefix
 * (up to 4 KB) from exact-size copies; the checks are proxy.c's invariants:
 * a verdict once BAD or DONE stays so for every longer prefix, DONE names
 * a length within the input and at most SMTPD_PROXY_MAX (v1: 107) with
 * addresses of a family it can use, and MORE only under SMTPD_PROXY_MAX.
 * Replayed by scripts/fuzz.sh replay; fuzzed by scripts/fuzz.sh run proxy.
 */
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtpd/proxy.h"

#define CHECK(x) do { if (!(x)) abort(); } while (0)

static enum smtpd_proxy_rc
parse(const uint8_t *in, size_t n, enum smtpd_proxy_mode mode,
    struct smtpd_proxy_hdr *h)
{
	uint8_t *copy = malloc(n ? n : 1);
	enum smtpd_proxy_rc rc;

	memcpy(copy, in, n);
	rc = smtpd_proxy_parse(copy, n, mode, h);
	free(copy);
	return rc;
}

static void
check_done(const struct smtpd_proxy_hdr *h, size_t n)
{
	CHECK(h->len > 0 && h->len <= n && h->len <= SMTPD_PROXY_MAX);
	CHECK(h->version == 1 || h->version == 2);
	if (h->version == 1)
		CHECK(h->len <= SMTPD_PROXY_V1_MAX);
	if (!h->local) {
		CHECK(h->src.ss_family == AF_INET || h->src.ss_family == AF_INET6);
		CHECK(h->dst.ss_family == h->src.ss_family);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct smtpd_proxy_hdr whole, h;
	enum smtpd_proxy_rc rc, wrc, prev = SMTPD_PROXY_MORE;
	enum smtpd_proxy_mode mode;
	const uint8_t *in;
	size_t n;

	if (size < 1)
		return 0;
	mode = (enum smtpd_proxy_mode)(1 + data[0] % 3);
	in = data + 1;
	n = size - 1;
	wrc = parse(in, n, mode, &whole);
	if (wrc == SMTPD_PROXY_DONE)
		check_done(&whole, n);
	else if (wrc == SMTPD_PROXY_BAD)
		CHECK(whole.why != NULL);
	else
		CHECK(n < SMTPD_PROXY_MAX);
	for (size_t k = 0; k <= n && k <= 4096; k++) {
		rc = parse(in, k, mode, &h);
		if (prev != SMTPD_PROXY_MORE) {
			/* judged once: the same verdict, the same length */
			CHECK(rc == prev);
			if (rc == SMTPD_PROXY_DONE)
				CHECK(h.len == whole.len &&
				    memcmp(&h, &whole, sizeof(h)) == 0);
		}
		if (rc == SMTPD_PROXY_DONE)
			check_done(&h, k);
		prev = rc;
	}
	if (n <= 4096)
		CHECK(prev == wrc);
	return 0;
}
