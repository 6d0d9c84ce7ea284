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
	q = strchr(end, '?');
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
