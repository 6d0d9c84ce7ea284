/* HTTP header syntax (RFC 9110), for the headers evhostd writes: those of
 * plugins' responses (http.c) and those of [tracing] otlp_headers_file
 * (config.c). Inline: config.c is also built into evhostctl, which does not
 * link http.c. */
#ifndef EVHOST_HTTP_SYNTAX_H
#define EVHOST_HTTP_SYNTAX_H
#include <stddef.h>
#include <string.h>

/* A token character (header names): ASCII letters, digits, and these. */
static inline int http_is_tchar(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* How many of s[0..n) are token characters, from the start. */
static inline size_t http_token_len(const char *s, size_t n)
{
	size_t i = 0;
	while (i < n && http_is_tchar((unsigned char)s[i]))
		i++;
	return i;
}

/* Can s[0..n) be a header value: visible characters, spaces and tabs, never
 * CR, LF or another control character (no header or response splitting)? */
static inline int http_value_ok(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return 0;
	}
	return 1;
}
#endif
