/* URLs without their secrets, for messages (redact.h). */
#include "redact.h"

#include <stdlib.h>
#include <string.h>

#include "textbuf.h"

char *redact_url(const char *url)
{
	const char *h = strstr(url, "://"), *end, *at = NULL, *q;
	textbuf b = {0};

	/* The scheme's "://" only: one further on is a path's or a query's (a
	 * redirect target in a value), and taking it would show the query. */
	h = h && (size_t)(h - url) < strcspn(url, "/?#") ? h + 3 : url;
	end = h + strcspn(h, "/?#");
	for (const char *c = h; c < end; c++)
		if (*c == '@')
			at = c; /* the last: a password may hold one unencoded */
	/* A password holding an unencoded '/', '?' or '#' ends the host part
	 * early ("ada:s3/cr3t@proxy", which a parser then refuses, quoting
	 * this): a ':' there followed by more than a port's digits is a
	 * password's, and the last '@' of the whole text ends it, so that none
	 * of it is shown (an '@' of the path's hides the host then: too much
	 * hidden, never too little). Not an IPv6 address's ':'. */
	if (!at && *h != '[') {
		const char *colon = memchr(h, ':', (size_t)(end - h));
		if (colon && strspn(colon + 1, "0123456789") < (size_t)(end - colon - 1))
			at = strrchr(end, '@');
	}
	q = strchr(at && at > end ? at : end, '?');
	if (at) {
		tb_put(&b, url, (size_t)(h - url));
		tb_puts(&b, "***");
		tb_put(&b, at, (size_t)((q ? q : at + strlen(at)) - at));
	} else {
		tb_put(&b, url, q ? (size_t)(q - url) : strlen(url));
	}
	for (const char *p = q ? q + 1 : NULL; p;) {
		size_t part = strcspn(p, "&");
		const char *eq = memchr(p, '=', part);
		tb_puts(&b, p == q + 1 ? "?" : "&");
		if (eq)
			tb_put(&b, p, (size_t)(eq + 1 - p));
		if (eq || part)
			tb_puts(&b, "***");
		p = p[part] ? p + part + 1 : NULL;
	}
	if (b.oom) {
		free(b.p);
		return NULL;
	}
	return b.p ? b.p : strdup("");
}
