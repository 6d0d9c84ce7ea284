/* See query.h. */
#include "query.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "../../host/json.h"

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = (char)tolower((unsigned char)c);
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Percent-decode [s, e) into out (size bytes). 0, -1 when an escape is
 * malformed (or %00), -2 when it does not fit. out NULL: only checked, no
 * length limit. */
static int url_decode(const char *s, const char *e, char *out, size_t size)
{
	size_t o = 0;

	for (; s < e; s++) {
		int c = (unsigned char)*s;

		if (c == '+') {
			c = ' ';
		} else if (c == '%') {
			int hi = e - s > 2 ? hex_value(s[1]) : -1;
			int lo = hi >= 0 ? hex_value(s[2]) : -1;
			if (lo < 0 || (hi | lo) == 0)
				return -1;
			c = hi * 16 + lo;
			s += 2;
		}
		if (!out)
			continue;
		if (o + 1 >= size)
			return -2;
		out[o++] = (char)c;
	}
	if (out)
		out[o] = '\0';
	return 0;
}

/* The next pair of *qs, skipping empty ones: [*p, *end) with `eq` its
 * first '=' (NULL: none). 0 at the end. */
static int next_pair(const char **qs, const char **p, const char **end, const char **eq)
{
	const char *s = *qs;

	while (*s == '&')
		s++;
	if (!*s) {
		*qs = s;
		return 0;
	}
	*p = s;
	*end = s + strcspn(s, "&");
	*eq = memchr(s, '=', (size_t)(*end - s));
	*qs = *end;
	return 1;
}

int query_next(const char **qs, char *name, size_t nlen, char *value, size_t vlen)
{
	const char *p, *end, *eq;
	int bad;

	if (!next_pair(qs, &p, &end, &eq))
		return 0;
	if ((bad = url_decode(p, eq ? eq : end, name, nlen)) != 0)
		return bad == -1 ? QUERY_BAD_NAME_ESCAPE : QUERY_BAD_NAME_LENGTH;
	if ((bad = url_decode(eq ? eq + 1 : end, end, value, vlen)) != 0)
		return bad == -1 ? QUERY_BAD_VALUE_ESCAPE : QUERY_BAD_VALUE_LENGTH;
	return 1;
}

int query_find_bad_escape(const char *qs, char *name, size_t nlen)
{
	const char *p, *end, *eq;

	if (nlen)
		name[0] = '\0';
	while (qs && next_pair(&qs, &p, &end, &eq)) {
		if (url_decode(p, eq ? eq : end, NULL, 0) != 0)
			return QUERY_BAD_NAME_ESCAPE;
		if (eq && url_decode(eq + 1, end, NULL, 0) != 0) {
			if (nlen && url_decode(p, eq, name, nlen) != 0)
				name[0] = '\0'; /* longer than the buffer */
			return QUERY_BAD_VALUE_ESCAPE;
		}
	}
	return 0;
}

const char *query_find_repeated(const char *qs, const char *const *names)
{
	const char *p, *end, *eq;
	char name[QUERY_NAME_MAX];
	int seen[8] = {0};

	while (qs && next_pair(&qs, &p, &end, &eq)) {
		if (url_decode(p, eq ? eq : end, name, sizeof name) != 0)
			continue;
		for (size_t i = 0; i < 8 && names[i]; i++)
			if (!strcmp(names[i], name) && seen[i]++)
				return names[i];
	}
	return NULL;
}

const char *query_escape_problem(int bad, const char *name, char *detail, size_t size)
{
	/* Named only in UTF-8: the answer is JSON (a %FF name stays unnamed). */
	if (bad == QUERY_BAD_VALUE_ESCAPE && name && *name && json_utf8_error(name, strlen(name)) < 0) {
		snprintf(detail, size,
		         "the value of query parameter '%s' has a malformed percent-escape (%s)", name,
		         QUERY_ESCAPE_RULE);
		return name;
	}
	snprintf(detail, size, "%s has a malformed percent-escape (%s)",
	         bad == QUERY_BAD_VALUE_ESCAPE ? "the value of a query parameter"
	                                       : "a parameter name in the query string",
	         QUERY_ESCAPE_RULE);
	return NULL;
}

int query_value_not_utf8(const char *name, const char *value, char *detail, size_t size)
{
	long bad = json_utf8_error(value, strlen(value));

	if (bad < 0)
		return 0;
	snprintf(detail, size,
	         "the value of query parameter '%s' is not UTF-8 once percent-decoded (byte 0x%02X "
	         "at offset %ld): percent-encode the UTF-8 bytes of the text",
	         name, (unsigned char)value[bad], bad);
	return 1;
}
