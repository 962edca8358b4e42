/* SPDX-License-Identifier: MIT */
/*
 * lmtp.c: where an LMTP server is. The LMTP conversation (RFC 2033) is
 * src/smtpc's, in LMTP mode: one client, one reply parser, for both
 * protocols. This file only turns a configured address into the
 * struct smtpc_addr that the client connects to.
 * Callers: the scheduler and the recipient check, through deliver.h.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "conf/conf.h"
#include "deliver/deliver.h"
#include "smtpc/smtpc.h"
#include "util/util.h"

int
lmtp_addr_parse(const char *spec, struct smtpc_addr *out, char *err,
    size_t errlen)
{
	struct conf_addr a;

	memset(out, 0, sizeof(*out));
	if (strncmp(spec, "unix:", 5) == 0) {
		struct sockaddr_un *sun = (struct sockaddr_un *)&out->ss;
		if (spec[5] != '/' || strlen(spec + 5) >= sizeof(sun->sun_path)) {
			snprintf(err, errlen, "'%s': unix: needs an absolute "
			    "path of at most %zu bytes", spec,
			    sizeof(sun->sun_path) - 1);
			return -1;
		}
		sun->sun_family = AF_UNIX;
		sl_strlcpy(sun->sun_path, spec + 5, sizeof(sun->sun_path));
		sl_strlcpy(out->host, "lmtp", sizeof(out->host));
		return 0;
	}
	/* "[192.0.2.1]:24": the brackets make it an address, as in [routes] */
	if (spec[0] != '[' || conf_addr_parse(spec, &a) != 0) {
		snprintf(err, errlen, "'%s' is not unix:/path, [address]:port "
		    "or [IPv6 address]:port", spec);
		return -1;
	}
	if (a.ss.ss_family == AF_INET6 && IN6_IS_ADDR_UNSPECIFIED(
	    &((struct sockaddr_in6 *)&a.ss)->sin6_addr)) {
		snprintf(err, errlen, "'%s' names no host", spec);
		free(a.text);
		return -1;
	}
	memcpy(&out->ss, &a.ss, a.len);
	free(a.text);
	return 0;
}
