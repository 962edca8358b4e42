/* SPDX-License-Identifier: MIT */
/*
 * origin.c: what a browser's request says about the page that made it
 * (http.h), for the HTTP listeners that serve pages: sluiced's dashboard
 * (server.c) and the sink's inbox (src/sink/http.c). Pure.
 *
 * A browser sends Origin with every POST, PUT and DELETE, and
 * Sec-Fetch-Site with every request; a page of another site can make the
 * browser send a request (a form, an image, fetch without CORS) but not
 * set those headers, so they tell an action the user took on our page
 * from one another site's page made (CSRF). The Host header tells a
 * request for our address under a foreign name: a DNS-rebinding page that
 * would read our answers as its own origin.
 */
#include <arpa/inet.h>
#include <string.h>

#include "http/http.h"
#include "util/util.h"

int
http_cross_origin(const char *origin, const char *host, const char *site)
{
	if (site != NULL && strcmp(site, "same-origin") != 0 &&
	    strcmp(site, "none") != 0)
		return 1;
	if (origin == NULL)
		return 0;	/* not a browser's cross-origin request */
	if (strncmp(origin, "http://", 7) == 0)
		origin += 7;
	else if (strncmp(origin, "https://", 8) == 0)
		origin += 8;
	else
		return 1;	/* "null": a sandboxed or opaque page */
	return host == NULL || !sl_strcaseeq(origin, host);
}

int
http_host_local(const char *host, const char *const *names)
{
	unsigned char addr[16];
	char name[256], *colon;
	size_t n;

	if (host == NULL)
		return 1;	/* HTTP/1.0 clients, scripts */
	if (host[0] == '[')
		return strchr(host, ']') != NULL;	/* an IPv6 literal */
	if (sl_strlcpy(name, host, sizeof(name)) >= sizeof(name))
		return 0;
	if ((colon = strrchr(name, ':')) != NULL)
		*colon = '\0';
	if (inet_pton(AF_INET, name, addr) == 1 ||
	    sl_strcaseeq(name, "localhost"))
		return 1;
	n = strlen(name);
	if (n > 10 && sl_strcaseeq(name + n - 10, ".localhost"))
		return 1;
	for (; names != NULL && *names != NULL; names++)
		if (**names != '\0' && sl_strcaseeq(name, *names))
			return 1;
	return 0;
}
