/* evhostd's own outgoing HTTP/1.1 requests (the OTLP exporter's POSTs, the
 * JWKS fetcher's GETs): a connection per request (Connection: close), every
 * step under a deadline (clock_mono_ms), plain or over TLS (tls_compat.h).
 * Not civetweb's client, whose connect has no deadline: a stop must not
 * wait minutes for a server that does not answer. */
#ifndef EVHOST_HTTPC_H
#define EVHOST_HTTPC_H
#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>

struct httpc_proxy;
typedef struct httpc_conn {
	int fd;
	void *tls; /* tls_conn, or NULL */
	/* Plain HTTP through this proxy (httpc_send_head names the server in
	 * the request line), or NULL: direct, or a CONNECT tunnel. */
	const struct httpc_proxy *proxy;
} httpc_conn;

/* From now on, the calling thread's requests give up as if their deadline
 * had passed within 100 ms of *flag turning non-zero (NULL: never), for a
 * thread that must stop promptly: the JWKS fetcher at a stop or reload.
 * Name resolution is not cut short (the resolver's own timeouts bound it). */
void httpc_abort_on(const atomic_int *flag);
/* From now on, the calling thread's requests give up as if their deadline
 * had passed within 100 ms of clock_mono_ms reaching *at, when *at is not 0
 * (at NULL: never): another thread may set *at while a request waits, as
 * the stop cuts the OTLP exporter's request in flight short. Name
 * resolution is not cut short. */
void httpc_cut_off_at(const _Atomic int64_t *at);

/* Connect to host:port (a name or an address; IPv6 without brackets) and,
 * with `tls` (a tls_client), do the handshake, the server's certificate
 * checked for `host`. 0, or -1 with the reason in err ("cannot resolve ...",
 * "cannot connect to HOST:PORT: ...", "TLS with HOST:PORT failed: ..."), or
 * -2 when the server's certificate did not verify ("TLS with HOST:PORT
 * failed: the server's certificate was refused: ..."): unlike the others,
 * not a failure that passes by itself. err is "" on success.
 * Goes through the proxy of the environment (below) when there is one for
 * host: over TLS a CONNECT tunnel, the certificate still checked for host;
 * plain HTTP to the proxy itself, which forwards the request. */
int httpc_open(httpc_conn *c, const char *host, const char *port, void *tls, int64_t deadline,
               char *err, size_t errlen);
/* Send a request's head: "METHOD TARGET HTTP/1.1" (TARGET as
 * "http://HOST:PORT/PATH" to a proxy of plain HTTP), Host, the proxy's
 * Proxy-Authorization there, then `rest`: the other header lines, each
 * ending in CRLF, and the blank line if the head ends there. 0, or -1 with
 * the reason in err. */
int httpc_send_head(httpc_conn *c, const char *method, const char *host, const char *port,
                    const char *target, const char *rest, int64_t deadline, char *err,
                    size_t errlen);
/* Send n bytes. 0, or -1 with the reason in err. */
int httpc_send(httpc_conn *c, const char *p, size_t n, int64_t deadline, char *err,
               size_t errlen);
/* Read until the server closes the connection (or the deadline, or an
 * error, said in err; "the connection was closed" when it simply ended):
 * into buf, up to n - 1 bytes, NUL-terminated; how many. */
size_t httpc_recv(httpc_conn *c, char *buf, size_t n, int64_t deadline, char *err,
                  size_t errlen);
/* The same, but it also stops as soon as a whole answer has come (the head
 * and the body its Content-Length gives, a chunked body's last chunk, or
 * a status without a body): a server need not close the connection.
 * Interim answers (1xx: 100 Continue, 103 Early Hints...) before the final
 * one are read and set aside: buf holds the final answer, its length is
 * returned. They count in n and the deadline: when they fill the buffer,
 * 0 and err "no final answer in the first N bytes, only interim (1xx)
 * answers". 101 Switching Protocols, never asked for: 0 and err "the
 * server switched protocols (...)". Only interim answers, then the close
 * or the deadline: 0 (err as above, "timed out" unchanged). */
size_t httpc_recv_answer(httpc_conn *c, char *buf, size_t n, int64_t deadline, char *err,
                         size_t errlen);
/* The status of the status line at buf[0..n): "HTTP/1.x NNN" with NNN of
 * 100-599, followed by a space or the line's end; else -1. */
int httpc_status(const char *buf, size_t n);
/* The value of the header `name` (case-insensitive) in the head of the
 * answer at buf[0..n), spaces around it trimmed, its length in *vlen: a
 * pointer into buf, or NULL when the head has no such header (or no end). */
const char *httpc_header(const char *buf, size_t n, const char *name, size_t *vlen);
/* The answer's Retry-After in seconds, in its delay-seconds form (digits
 * only; very large values as INT32_MAX), or -1: no such header, or the
 * HTTP-date form, or something else. */
int32_t httpc_retry_after(const char *buf, size_t n);
/* One answer into a malloc'd buffer (*out, NUL-terminated) of at most max
 * bytes, for httpc_parse_answer: read until it is whole, as
 * httpc_recv_answer reads (the body its Content-Length gives, a chunked
 * body's last chunk, a status without a body; its interim answers kept in
 * front of it), or the server closes the connection (an answer with
 * neither header ends there). 0 then, 1 when more than max came first
 * (*out holds max), -1 with the reason in err (*out holds what came: a
 * timeout in the middle of an answer). *out NULL: out of memory. */
int httpc_recv_all(httpc_conn *c, size_t max, int64_t deadline, char **out, size_t *len,
                   char *err, size_t errlen);
/* Free the TLS connection and close the socket. */
void httpc_close(httpc_conn *c);

/* The proxy for outgoing requests, as curl and Go's net/http take it from
 * the environment: https_proxy (or HTTPS_PROXY) for HTTPS, reached by a
 * CONNECT tunnel, and http_proxy (or HTTP_PROXY) for plain HTTP, which the
 * proxy forwards; http://[USER:PASSWORD@]HOST[:PORT] (port 80 by default;
 * USER and PASSWORD percent-encoded, sent as Basic Proxy-Authorization).
 * no_proxy (or NO_PROXY): names that go direct: "*", a host, a domain and
 * its subdomains ("example.com" or ".example.com"), an address ("10.0.0.7",
 * "fd00::7" or "[fd00::7]") or a network of addresses ("10.0.0.0/8"; host
 * bits set, "10.1.2.3/8", are cleared), separated by commas; one with a
 * port ("example.com:8443", "[fd00::7]:443") for that port only, as Go
 * takes them (curl ignores such entries). Loopback addresses and
 * "localhost" always go direct. */
typedef struct httpc_proxy {
	char host[256], port[8];
	char auth[700]; /* "Basic ..." or "" */
	const char *var;   /* the variable it came from */
	const char *no_proxy; /* its value, or NULL */
} httpc_proxy;
/* The proxy for HTTPS (`tls`) or plain HTTP: 0 and *p filled when one is
 * set, 1 when none, -1 when the variable is malformed (the reason in err,
 * naming it). */
int httpc_proxy_get(httpc_proxy *p, int tls, char *err, size_t errlen);
/* httpc_proxy_get's reading of one value (NULL or "": 1, none) that came
 * from the variable `var`, with `no_proxy` (or NULL); p keeps pointers to
 * var and no_proxy. */
int httpc_proxy_parse(httpc_proxy *p, const char *value, const char *var, const char *no_proxy,
                      int tls, char *err, size_t errlen);
/* Does a connection to host (an IPv6 address without brackets) at port go
 * direct, proxy or not? */
int httpc_proxy_bypassed(const httpc_proxy *p, const char *host, const char *port);

/* An HTTP/1.x answer read whole (up to the connection's close). */
typedef struct httpc_answer {
	int status;
	char *body; /* into the buffer parsed; chunked bodies decoded in place */
	size_t body_len;
	char location[512]; /* the Location header's value ("" when none; cut; other bytes
	                     * than printable ASCII as '?') */
} httpc_answer;

/* Parse buf[0..n) (modified: a chunked body is decoded where it lies): the
 * status line, the headers (Content-Length or Transfer-Encoding: chunked,
 * else the body ends at the close), the body; interim answers (1xx) before
 * it set aside, so status is never 1xx. 0, or -1 with the reason in err: no
 * status line, a head without its blank line, a body shorter than its
 * Content-Length ("the answer ended after X of Y bytes"), a malformed or
 * unfinished chunked body, 101 ("the server switched protocols (101
 * Switching Protocols), which was not asked for"), only interim answers
 * ("no final answer after N interim (1xx) answers"). */
int httpc_parse_answer(char *buf, size_t n, httpc_answer *a, char *err, size_t errlen);
#endif
