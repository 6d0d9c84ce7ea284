/* A raw HTTP/1.1 client for the unit tests that serve real sockets on
 * 127.0.0.1: the exact bytes on the wire (status line, headers) are what
 * the tests look at. Include after <cmocka.h>. */
#ifndef EVH_TEST_HTTP_CLIENT_H
#define EVH_TEST_HTTP_CLIENT_H
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

/* Send `raw`, then (when `half_close`) shut the sending side, as a client
 * that has no more to say does, and read until the server closes. Returns
 * a malloc'd reply. */
static inline char *exchange_then(int port, const char *raw, size_t rawlen, int half_close)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
	                        .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct timeval tv = {5, 0};
	size_t cap = 65536, n = 0;
	char *out = malloc(cap);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_non_null(out);
	assert_true(fd >= 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
	assert_int_equal(send(fd, raw, rawlen, MSG_NOSIGNAL), (ssize_t)rawlen);
	if (half_close)
		assert_int_equal(shutdown(fd, SHUT_WR), 0);
	for (;;) {
		ssize_t r = recv(fd, out + n, cap - n - 1, 0);
		if (r <= 0)
			break;
		n += (size_t)r;
		assert_true(n < cap - 1);
	}
	out[n] = '\0';
	close(fd);
	return out;
}

/* Send `raw` and read until the server closes. Returns a malloc'd reply. */
static inline char *exchange(int port, const char *raw, size_t rawlen)
{
	return exchange_then(port, raw, rawlen, 0);
}

/* One request on a connection of its own ("Connection: close"); the whole
 * reply, malloc'd ("" when the server closed without a word). */
static inline char *http_request(int port, const char *method, const char *path,
                                 const char *hdrs, const char *body)
{
	char raw[8192];
	int n;
	if (body)
		n = snprintf(raw, sizeof raw,
		             "%s %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n%sContent-Length: "
		             "%zu\r\n\r\n%s",
		             method, path, hdrs ? hdrs : "", strlen(body), body);
	else
		n = snprintf(raw, sizeof raw,
		             "%s %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n%s\r\n", method,
		             path, hdrs ? hdrs : "");
	assert_true(n > 0 && (size_t)n < sizeof raw);
	return exchange(port, raw, (size_t)n);
}

/* Read from `fd` until `end` has come (or its receive timeout passes, or
 * the peer closes); malloc'd, "" when nothing came. */
static inline char *read_until(int fd, const char *end)
{
	size_t n = 0;
	char *out = malloc(8192);
	assert_non_null(out);
	out[0] = '\0';
	while (n < 8191 && !strstr(out, end)) {
		ssize_t r = recv(fd, out + n, 8191 - n, 0);
		if (r <= 0)
			break;
		n += (size_t)r;
		out[n] = '\0';
	}
	return out;
}

/* GET `path` and read only the answer's head (a stream's never ends);
 * malloc'd, "" when the server closed without a word. */
static inline char *http_head(int port, const char *path, const char *hdrs)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
	                        .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct timeval tv = {5, 0};
	char raw[2048], *out;
	int fd = socket(AF_INET, SOCK_STREAM, 0), len;
	len = snprintf(raw, sizeof raw, "GET %s HTTP/1.1\r\nHost: t\r\n%s\r\n", path,
	               hdrs ? hdrs : "");
	assert_true(fd >= 0 && len > 0 && (size_t)len < sizeof raw);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
	assert_int_equal(send(fd, raw, (size_t)len, MSG_NOSIGNAL), len);
	out = read_until(fd, "\r\n\r\n");
	close(fd);
	return out;
}

static inline int status_of(const char *reply)
{
	int st = 0;
	if (sscanf(reply, "HTTP/1.1 %d", &st) != 1)
		fail_msg("not an HTTP reply: %.200s", reply);
	return st;
}

/* The value of header `name` (case-insensitive) in a static buffer. */
static inline const char *header_of(const char *reply, const char *name)
{
	static char val[512];
	size_t nl = strlen(name);
	const char *end = strstr(reply, "\r\n\r\n");
	for (const char *l = strstr(reply, "\r\n"); l && l < end; l = strstr(l + 2, "\r\n")) {
		if (!strncasecmp(l + 2, name, nl) && l[2 + nl] == ':') {
			const char *v = l + 3 + nl, *e = strstr(v, "\r\n");
			while (*v == ' ')
				v++;
			snprintf(val, sizeof val, "%.*s", (int)(e - v), v);
			return val;
		}
	}
	return NULL;
}

static inline const char *body_of(const char *reply)
{
	const char *b = strstr(reply, "\r\n\r\n");
	assert_non_null(b);
	return b + 4;
}

#endif
