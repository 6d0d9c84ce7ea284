/* libFuzzer: the client address behind a trusted proxy, through a real
 * server (civetweb and http.c's client_address, which joins every
 * X-Forwarded-For of a head into the one list proxy.c walks). fuzz_http's
 * server trusts no proxy, so it never reads the header; this one runs with
 * [http] trusted_proxies = 127.0.0.1, ::1, 10.0.0.0/8, fd00::/8, and the
 * fuzzer's connections come from 127.0.0.1: a trusted proxy.
 *
 * The input is header lines (split at LF; CR and NUL in them as ' ' and
 * '_'), each sent after the request line of GET /f/client, whose handler
 * answers http_req_client_addr. A line's first byte picks its name, the
 * rest is the value: 0 mod 4 "X-Forwarded-For: ", 1 "x-forwarded-for:",
 * 2 "Forwarded: " (RFC 7239, which evhost does not read); 3 the rest of
 * the line is the whole header line.
 *
 * Checked: the request is never a 500, and a 200's address is an address
 * (inet_pton reads it), the one proxy_client_addr takes from the values of
 * the X-Forwarded-For lines, in order, joined by ", " (the peer, 127.0.0.1,
 * when there are none). Heads with a header line of its own (3) that may
 * be an X-Forwarded-For are only checked for an address. */
#define _GNU_SOURCE /* memmem, strcasestr */
#include <arpa/inet.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fuzz_modes.h"
#include "fuzz_net.h"
#include "http.h"
#include "proxy.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define TRUSTED "127.0.0.1, ::1, 10.0.0.0/8, fd00::/8"
#define PEER "127.0.0.1"
#define LINES_MAX 48 /* below civetweb's MG_MAX_HEADERS, with Host */
#define INPUT_MAX 8192

static host the_host;
static evh_plugin plugin;
static http_server *server;
static int port;
static char listen_at[64];

static int client(evh_request *req, evh_response *resp, void *ud)
{
	const char *a = http_req_client_addr(req);
	(void)ud;
	return http_resp_body(resp, "text/plain", a, strlen(a));
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char err[256];
	(void)argc, (void)argv;
	log_setup(EVH_LOG_ERROR, LOG_FORMAT_TEXT); /* not a line per request */
	port = fuzz_host_setup(&the_host, &plugin, listen_at, sizeof listen_at);
	the_host.set.http_threads = 2;
	the_host.set.max_body_bytes = 4096;
	the_host.set.json_max_depth = 8;
	the_host.set.http_max_head_bytes = 16384;
	if (proxy_list_parse(TRUSTED, &the_host.set.http_trusted_proxies, err, sizeof err) != 0) {
		fprintf(stderr, "fuzz_xff: trusted_proxies: %s\n", err);
		abort();
	}
	fuzz_route(&the_host, &plugin, "fuzz_xff", "GET", "/f/client", client, 0);
	port = fuzz_http_start(&server, &the_host, listen_at, sizeof listen_at, port, "fuzz_xff");
	return 0;
}

static int is_address(const char *s)
{
	unsigned char buf[16];
	return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

/* The request for the input into req (a head, ended by an empty line),
 * the X-Forwarded-For values joined into xff (NULL when none).
 * *unsure: a line of the input's own may be one too. */
static void build(const uint8_t *data, size_t size, char *req, size_t reqcap, char **xff,
                  int *unsure)
{
	static const char *const names[] = {"X-Forwarded-For: ", "x-forwarded-for:", "Forwarded: ",
	                                    ""};
	size_t at = 0, r, x = 0, lines = 0;
	char *list = malloc(size + 2 * LINES_MAX + 1);
	if (!list)
		abort();
	*unsure = 0;
	r = (size_t)snprintf(req, reqcap, "GET /f/client HTTP/1.1\r\nHost: f\r\n");
	while (at < size && lines < LINES_MAX) {
		const uint8_t *nl = memchr(data + at, '\n', size - at);
		size_t end = nl ? (size_t)(nl - data) : size, k = data[at] % 4, vlen;
		char *v = req + r + strlen(names[k]);
		if (end == at) { /* an empty line would end the head */
			at++;
			continue;
		}
		lines++;
		r += (size_t)snprintf(req + r, reqcap - r, "%s", names[k]);
		vlen = end - at - 1 + (k == 3); /* a line of its own keeps its first byte */
		memcpy(v, data + at + (k != 3), vlen);
		for (size_t i = 0; i < vlen; i++)
			if (v[i] == '\r')
				v[i] = ' ';
			else if (v[i] == '\0')
				v[i] = '_';
		r += vlen;
		req[r] = '\0';
		if (k == 3 && strcasestr(v, "forwarded-for"))
			*unsure = 1;
		if (k < 2)
			x += (size_t)sprintf(list + x, "%s%s", x ? ", " : "", v);
		r += (size_t)snprintf(req + r, reqcap - r, "\r\n");
		at = end + 1;
	}
	snprintf(req + r, reqcap - r, "\r\n");
	*xff = x ? list : NULL;
	if (!x)
		free(list);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* Each line grows by at most its name and CRLF. */
	size_t cap = size + LINES_MAX * 24 + 64, n, headlen;
	char *req, *xff, *out, *body, want[PROXY_ADDR_LEN];
	const char *end;
	int unsure, clean;
	long status;
	if (size > INPUT_MAX)
		return 0;
	if (!(req = malloc(cap)))
		abort();
	build(data, size, req, cap, &xff, &unsure);
	out = fuzz_exchange("fuzz_xff", port, req, strlen(req), 3, &n, &clean);
	end = memmem(out, n, "\r\n\r\n", 4);
	if (clean && end && n >= 12 && !memcmp(out, "HTTP/1.1 ", 9)) {
		status = strtol(out + 9, NULL, 10);
		CHECK(status != 500); /* whatever a client sends, it is not the server's fault */
		headlen = (size_t)(end - out) + 4;
		body = out + headlen;
		if (status == 200) {
			CHECK(is_address(body));
			proxy_client_addr(&the_host.set.http_trusted_proxies, PEER, xff, want,
			                  sizeof want);
			CHECK(unsure || !strcmp(body, want));
		}
	}
	free(out);
	free(xff);
	free(req);
	return 0;
}
