/* libFuzzer: whole requests, as bytes on a real socket, through civetweb
 * and evhost's request path (http.c: the framing and head checks, the query
 * string, Expect, bodies chunked or not, JSON checks, routing, bearer
 * tokens, the answer to a head civetweb refuses). One server is started
 * once, with a few routes; each input is sent on a new loopback connection,
 * whose write side is then shut, and the reply read until the server
 * closes. Checks what every client relies on, of the reply to the first
 * request: a status line, header lines, an X-Request-Id on every final
 * answer, and a body as long as its Content-Length; and that no input makes
 * it a 500 (bad input is the client's error). The rest of a
 * pipelined reply is read, not checked (a HEAD's answer has a length and no
 * body, and which answer is a HEAD's depends on the input). AddressSanitizer
 * watches the server threads throughout. */
#define _GNU_SOURCE /* memmem */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "fuzz_modes.h"
#include "fuzz_net.h"
#include "http.h"
#include "jwt.h"
#include "router.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SECRET "fuzz-secret-of-at-least-32-bytes!!"

static host the_host;
static auth_keyset keys;
static evh_plugin plugin;
static http_server *server;
static int port;
static char listen_at[64];

static int echo(evh_request *req, evh_response *resp, void *ud)
{
	char buf[512];
	const char *q = http_req_query(req, "q"), *x = http_req_header(req, "X-Test");
	(void)ud;
	snprintf(buf, sizeof buf, "%s|%s|%s|%d", http_req_param(req, "name"), q ? q : "-",
	         x ? x : "-", http_req_query_bad(req));
	return http_resp_body(resp, "text/plain", buf, strlen(buf));
}

static int body_len(evh_request *req, evh_response *resp, void *ud)
{
	size_t len;
	const char *b = http_req_body(req, &len);
	char buf[64];
	(void)ud;
	snprintf(buf, sizeof buf, "{\"len\":%zu,\"first\":%d}", len, b && len ? b[0] : -1);
	http_resp_status(resp, 201);
	return http_resp_body(resp, "application/json", buf, strlen(buf));
}

static int whoami(evh_request *req, evh_response *resp, void *ud)
{
	const char *sub = http_req_auth_subject(req);
	(void)ud;
	return http_resp_body(resp, "text/plain", sub ? sub : "-", sub ? strlen(sub) : 1);
}

static void route(const char *method, const char *pattern, evh_http_handler fn, uint32_t flags)
{
	fuzz_route(&the_host, &plugin, "fuzz_http", method, pattern, fn, flags);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	port = fuzz_host_setup(&the_host, &plugin, listen_at, sizeof listen_at);
	the_host.set.http_threads = 4;
	the_host.set.max_body_bytes = 4096;
	the_host.set.json_max_depth = 8;
	the_host.set.http_max_head_bytes = 4096;
	keys.secret = (unsigned char *)SECRET;
	keys.len = strlen(SECRET);
	keys.issuer = (char *)"evhost";
	atomic_store(&the_host.auth, &keys);
	route("GET", "/f/echo/{name}", echo, 0);
	route("POST", "/f/json", body_len, EVH_ROUTE_JSON);
	route("POST", "/f/raw", body_len, 0);
	route("PUT", "/f/raw/{name}", body_len, 0);
	route("GET", "/f/me", whoami, EVH_ROUTE_AUTH);
	port = fuzz_http_start(&server, &the_host, listen_at, sizeof listen_at, port, "fuzz_http");
	return 0;
}

static size_t digits(const char *p, size_t n)
{
	size_t i = 0;
	while (i < n && p[i] >= '0' && p[i] <= '9')
		i++;
	return i;
}

/* The answers to the first request of the input (any 1xx, then the final
 * one). */
static void check_first_answer(const char *out, size_t n, int clean, int head_request)
{
	size_t at = 0;
	for (;;) {
		const char *p = out + at, *end, *line;
		size_t left = n - at, headlen, d;
		long status, length = -1;
		int request_id = 0;
		if (left == 0)
			return; /* no answer: civetweb closes some requests without one */
		end = memmem(p, left, "\r\n\r\n", 4);
		if (!end) {
			CHECK(!clean); /* a head cut short only by a reset or a timeout */
			return;
		}
		headlen = (size_t)(end - p) + 4;
		CHECK(headlen >= 13 && (!memcmp(p, "HTTP/1.1 ", 9) || !memcmp(p, "HTTP/1.0 ", 9)));
		d = digits(p + 9, 3);
		CHECK(d == 3 && p[12] == ' ');
		status = strtol(p + 9, NULL, 10);
		CHECK(status >= 100 && status <= 599);
		/* Header lines: "Name: value", no CR or LF inside. */
		line = memchr(p, '\n', headlen) + 1;
		while (line < end + 2) {
			const char *eol = memchr(line, '\n', (size_t)(end + 4 - line)), *colon;
			CHECK(eol && eol > line && eol[-1] == '\r');
			colon = memchr(line, ':', (size_t)(eol - line));
			CHECK(colon && colon > line);
			CHECK(!memchr(line, '\r', (size_t)(eol - 1 - line)));
			if ((size_t)(colon - line) == 12 && !strncasecmp(line, "X-Request-Id", 12))
				request_id = 1;
			if ((size_t)(colon - line) == 14 && !strncasecmp(line, "Content-Length", 14)) {
				const char *v = colon + 1;
				while (*v == ' ')
					v++;
				CHECK(digits(v, (size_t)(eol - 1 - v)) == (size_t)(eol - 1 - v));
				length = strtol(v, NULL, 10);
			}
			line = eol + 1;
		}
		at += headlen;
		if (status < 200)
			continue; /* 100 Continue: the final answer follows */
		CHECK(request_id);
		CHECK(status != 500); /* whatever a client sends, it is not the server's fault */
		if (head_request || status == 204 || status == 304)
			return;
		CHECK(length >= 0); /* evhostd frames every answer with a body */
		if (!clean)
			return;
		CHECK(n - at >= (size_t)length);
		return;
	}
}

/* Is the first request a HEAD (whose answer has a length and no body)?
 * civetweb skips white space before a request line, and ends the method at
 * the next. */
static int first_is_head(const uint8_t *data, size_t size)
{
	size_t i = 0;
	while (i < size && isspace(data[i]))
		i++;
	return size - i > 4 && !memcmp(data + i, "HEAD", 4) && isspace(data[i + 4]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t n;
	int clean;
	char *out;
	if (size > 64 * 1024)
		return 0;
	out = fuzz_exchange("fuzz_http", port, data, size, 3, &n, &clean);
	check_first_answer(out, n, clean, first_is_head(data, size));
	free(out);
	return 0;
}
