/* What the fuzzers that drive a real server (fuzz_http, fuzz_admin,
 * fuzz_xff) share: the host they serve, a free loopback port, a route, and one
 * exchange over a real socket. */
#ifndef EVHOST_FUZZ_NET_H
#define EVHOST_FUZZ_NET_H
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "host.h"
#include "http.h"
#include "router.h"

/* A loopback port nobody listens on now; -1 when none could be had. */
static inline int fuzz_free_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof a;
	int fd = socket(AF_INET, SOCK_STREAM, 0), p = -1;
	if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
	    getsockname(fd, (struct sockaddr *)&a, &len) == 0)
		p = ntohs(a.sin_port);
	if (fd >= 0)
		close(fd);
	return p;
}

/* The host a fuzzer's server runs on: `p` its one plugin ("f", running),
 * a router, listen_at[0..n) a free loopback port (returned) as
 * [http] listen, and a request timeout of 1 s (a stalled input costs at
 * most that); threads and sizes are the caller's. Aborts when a router or a
 * port cannot be had. */
static inline int fuzz_host_setup(host *h, evh_plugin *p, char *listen_at, size_t n)
{
	int port;
	p->host = h;
	p->name = (char *)"f";
	p->status = PLUGIN_RUNNING;
	h->router = router_new();
	if (!h->router || (port = fuzz_free_port()) < 0)
		abort();
	snprintf(listen_at, n, "127.0.0.1:%d", port);
	h->set.http_listen = listen_at;
	h->set.http_request_timeout_ms = 1000;
	return port;
}

/* Route `method` `pattern` of the host's plugin `p` to fn (flags: EVH_ROUTE_*).
 * Aborts, naming `who`, when the route is refused: nothing could be tested. */
static inline void fuzz_route(host *h, evh_plugin *p, const char *who, const char *method,
                              const char *pattern, evh_http_handler fn, uint32_t flags)
{
	evh_route r;
	char err[256];
	memset(&r, 0, sizeof r);
	r.struct_size = sizeof r;
	r.method = method;
	r.pattern = pattern;
	r.handler = fn;
	r.flags = flags;
	if (http_add_route(h, p, &r, err, sizeof err) != EVH_OK) {
		fprintf(stderr, "%s: http_add_route %s %s: %s\n", who, method, pattern, err);
		abort();
	}
}

/* http_start on the port fuzz_host_setup chose, or on another free one
 * should that fail: between fuzz_free_port's close and civetweb's bind the
 * port may be taken (another fuzzer runs beside this one, any program's
 * connection may get it as its local port). The port it listens on, in
 * listen_at too. After 10 tries it aborts, naming `who` and the last
 * failure: nothing could be tested. */
static inline int fuzz_http_start(http_server **srv, host *h, char *listen_at, size_t n,
                                  int port, const char *who)
{
	char err[256] = "no free loopback port";
	for (int tries = 0; tries < 10; tries++) {
		if (tries) {
			if ((port = fuzz_free_port()) < 0)
				break;
			snprintf(listen_at, n, "127.0.0.1:%d", port);
		}
		if (http_start(srv, h, err, sizeof err) == 0)
			return port;
	}
	fprintf(stderr, "%s: http_start: %s\n", who, err);
	abort();
}

/* libFuzzer's -timeout is a SIGALRM every few seconds, without SA_RESTART:
 * it interrupts whichever of this thread's socket calls is waiting then
 * (EINTR). An interrupted connect goes on by itself and a later connect says
 * how it ended (EALREADY while under way, EISCONN once done); a send or recv
 * is tried again. Taken for "the server is gone", or for the end of the
 * reply, it failed a run at random or skipped the checks. */
static inline int fuzz_connect_loopback(int fd, const struct sockaddr_in *a)
{
	int r = connect(fd, (const struct sockaddr *)a, sizeof *a), tries = 0;
	while (r != 0 && (errno == EINTR || errno == EALREADY) && tries++ < 30) {
		struct pollfd p = {.fd = fd, .events = POLLOUT};
		poll(&p, 1, 100);
		r = connect(fd, (const struct sockaddr *)a, sizeof *a);
	}
	return r == 0 || errno == EISCONN ? 0 : -1;
}

/* Send data[0..size) to 127.0.0.1:port, shut the write side, read the reply
 * until the server closes (each socket call waits at most timeout_s):
 * malloc'd and NUL-terminated, *n bytes, at most 4 MiB. *clean (may be
 * NULL): it closed (not reset, not timed out). A server that cannot be
 * reached aborts, naming `who`: nothing more can be tested. */
static inline char *fuzz_exchange(const char *who, int port, const void *data, size_t size,
                                  int timeout_s, size_t *n, int *clean)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
	                        .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct timeval tv = {timeout_s, 0};
	size_t cap = 65536, sent = 0;
	char *out = malloc(cap + 1);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), closed = 0;
	*n = 0;
	if (!out || fd < 0 || fuzz_connect_loopback(fd, &a) != 0) {
		fprintf(stderr, "%s: connect to 127.0.0.1:%d: %s\n", who, port, strerror(errno));
		abort();
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	while (sent < size) {
		ssize_t w = send(fd, (const char *)data + sent, size - sent, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break; /* the server closed early (it refused the head): read its answer */
		sent += (size_t)w;
	}
	shutdown(fd, SHUT_WR);
	for (;;) {
		ssize_t r;
		if (*n == cap) {
			char *bigger = cap < (1u << 22) ? realloc(out, cap * 2 + 1) : NULL;
			if (!bigger)
				break;
			out = bigger;
			cap *= 2;
		}
		r = recv(fd, out + *n, cap - *n, 0);
		if (r > 0) {
			*n += (size_t)r;
			continue;
		}
		if (r < 0 && errno == EINTR)
			continue;
		closed = r == 0;
		break;
	}
	out[*n] = '\0';
	close(fd);
	if (clean)
		*clean = closed;
	return out;
}
#endif
