/* An HTTP server's answer as evhostd reads it (httpc.c, the JWKS fetcher's
 * GETs): the status, the body as Content-Length, chunked coding or the
 * connection's close delimits it, the Location of a redirect, interim
 * answers (1xx) before the final one set aside, and every answer refused
 * with its reason. And the proxies for outgoing requests from
 * the environment (https_proxy, http_proxy, no_proxy), as curl and Go read
 * them, and the request's head, direct or to a proxy of plain HTTP. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "clock.h"
#include "httpc.h"

/* Parse a copy of `text` (the parser writes into it); the body into body. */
static int parse(const char *text, httpc_answer *a, char *body, size_t n, char *err)
{
	char *buf = strdup(text);
	int rc;
	assert_non_null(buf);
	err[0] = '\0';
	rc = httpc_parse_answer(buf, strlen(buf), a, err, 256);
	if (rc == 0)
		snprintf(body, n, "%.*s", (int)a->body_len, a->body);
	free(buf);
	return rc;
}

static void good(const char *text, int status, const char *want)
{
	httpc_answer a;
	char body[256], err[256];
	if (parse(text, &a, body, sizeof body, err) != 0)
		fail_msg("refused: %s\n%s", err, text);
	assert_int_equal(a.status, status);
	assert_string_equal(body, want);
}

static void refused(const char *text, const char *why)
{
	httpc_answer a;
	char body[256], err[256];
	assert_int_equal(parse(text, &a, body, sizeof body, err), -1);
	if (!strstr(err, why))
		fail_msg("expected '%s' in '%s'", why, err);
}

static void test_framing(void **state)
{
	(void)state;
	good("HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"keys\":[]}", 200, "{\"keys\":[]}");
	/* Bytes past Content-Length are not the body. */
	good("HTTP/1.1 200 OK\r\ncontent-length:  4 \r\n\r\nabcdef", 200, "abcd");
	/* No length: the body ends at the close. */
	good("HTTP/1.0 200 OK\r\nServer: x\r\n\r\n{\"keys\":[]}", 200, "{\"keys\":[]}");
	good("HTTP/1.1 204\r\n\r\n", 204, "");
	/* Chunked, with an extension and a trailer; it wins over a length. */
	good("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
	     "5\r\n{\"key\r\n6;ext=1\r\ns\":[]}\r\n0\r\nX-Trailer: 1\r\n\r\n",
	     200, "{\"keys\":[]}");
	good("HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n",
	     200, "0123456789");
	good("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 200, "");
}

/* Interim answers (1xx) before the final one are set aside, whatever their
 * headers say (a 1xx has no body, a Content-Length there frames nothing);
 * 101, never asked for, and interim answers alone are refused. */
static void test_interim_answers(void **state)
{
	httpc_answer a;
	char body[64], err[256];
	(void)state;
	good("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", 200,
	     "{}");
	good("HTTP/1.1 103 Early Hints\r\nLink: </k.json>; rel=preload\r\nContent-Length: 9\r\n\r\n"
	     "HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 100\r\n\r\n"
	     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
	     200, "{}");
	good("HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.0 404 Not Found\r\n\r\nnone", 404, "none");
	/* The final answer's Location, not an interim one's. */
	assert_int_equal(parse("HTTP/1.1 103 Early Hints\r\nLocation: /early\r\n\r\n"
	                       "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
	                       &a, body, sizeof body, err),
	                 0);
	assert_string_equal(a.location, "");
	refused("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade"
	        "\r\n\r\n",
	        "the server switched protocols (101 Switching Protocols), which was not asked for");
	refused("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 Switching Protocols\r\n\r\n",
	        "switched protocols (101");
	refused("HTTP/1.1 100 Continue\r\n\r\n", "no final answer after 1 interim (1xx) answer");
	refused("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 103 Ea",
	        "no final answer after 2 interim (1xx) answers");
	refused("HTTP/1.1 100 Continue\r\n\r\nSSH-2.0-OpenSSH_9.2\r\n",
	        "no HTTP answer after the interim (1xx) ones");
}

static void test_redirect(void **state)
{
	httpc_answer a;
	char body[64], err[256];
	(void)state;
	assert_int_equal(parse("HTTP/1.1 301 Moved\r\nLocation:  https://idp.example/c \r\n"
	                       "Content-Length: 0\r\n\r\n",
	                       &a, body, sizeof body, err),
	                 0);
	assert_int_equal(a.status, 301);
	assert_string_equal(a.location, "https://idp.example/c");
	assert_int_equal(parse("HTTP/1.1 200 OK\r\n\r\n", &a, body, sizeof body, err), 0);
	assert_string_equal(a.location, "");
	/* What reaches the log is one printable line. */
	assert_int_equal(parse("HTTP/1.1 302 Found\r\nLocation: /a\nb\x1b[31m c\r\n\r\n", &a, body,
	                       sizeof body, err),
	                 0);
	assert_string_equal(a.location, "/a?b?[31m?c");
}

static void test_refused(void **state)
{
	(void)state;
	refused("", "no HTTP answer");
	refused("SSH-2.0-OpenSSH_9.2\r\n", "no HTTP answer");
	refused("HTTP/2 200\r\n\r\n", "no HTTP answer");
	refused("HTTP/1.1 20 OK\r\n\r\n", "no HTTP answer");
	refused("HTTP/1.1 2000 OK\r\n\r\n", "no HTTP answer");
	refused("HTTP/1.1 000 OK\r\n\r\n", "no HTTP answer");
	refused("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n", "head ended before its blank line");
	refused("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"keys\"",
	        "the answer ended after 7 of 100 bytes");
	refused("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "a bad Content-Length: '-1'");
	refused("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
	        "a bad Content-Length");
	refused("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
	        "a bad Content-Length");
	refused("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
	        "Transfer-Encoding 'gzip, chunked' is not supported");
	refused("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabc",
	        "ended before its last chunk");
	refused("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
	        "ended before its last chunk");
	refused("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
	        "a malformed chunked body (chunk size at byte 0)");
	refused("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n",
	        "no line end after a chunk");
	refused("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
	        "10000000000000000\r\n",
	        "a malformed chunked body");
	refused("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
	        "ffffffffffffffff\r\nab\r\n0\r\n\r\n",
	        "ended before its last chunk");
}

/* The proxy from the environment, as curl and Go read it. */
static void unset_proxy(void)
{
	unsetenv("https_proxy");
	unsetenv("HTTPS_PROXY");
	unsetenv("http_proxy");
	unsetenv("HTTP_PROXY");
	unsetenv("no_proxy");
	unsetenv("NO_PROXY");
}

static void proxy_ok(const char *value, const char *host, const char *port, const char *auth)
{
	httpc_proxy p;
	char err[256] = "";
	setenv("HTTPS_PROXY", value, 1);
	if (httpc_proxy_get(&p, 1, err, sizeof err) != 0)
		fail_msg("'%s' refused: %s", value, err);
	assert_string_equal(p.var, "HTTPS_PROXY");
	assert_string_equal(p.host, host);
	assert_string_equal(p.port, port);
	assert_string_equal(p.auth, auth);
}

static void proxy_refused(const char *value, const char *why)
{
	httpc_proxy p;
	char err[256] = "";
	setenv("HTTPS_PROXY", value, 1);
	assert_int_equal(httpc_proxy_get(&p, 1, err, sizeof err), -1);
	if (!strstr(err, why))
		fail_msg("'%s': expected '%s' in '%s'", value, why, err);
	if (strstr(err, "cr3t")) /* the tests' passwords: never said */
		fail_msg("'%s': the password in '%s'", value, err);
}

static void test_proxy(void **state)
{
	httpc_proxy p;
	char err[256];
	(void)state;
	unset_proxy();
	assert_int_equal(httpc_proxy_get(&p, 1, err, sizeof err), 1);
	setenv("HTTPS_PROXY", "", 1);
	assert_int_equal(httpc_proxy_get(&p, 1, err, sizeof err), 1);

	proxy_ok("http://proxy.corp:3128", "proxy.corp", "3128", "");
	proxy_ok("http://proxy.corp:3128/", "proxy.corp", "3128", "");
	proxy_ok("proxy.corp:8080", "proxy.corp", "8080", "");
	proxy_ok("HTTP://proxy.corp", "proxy.corp", "80", "");
	proxy_ok("http://[fd00::1]:3128", "fd00::1", "3128", "");
	/* "ada:p@ss w" percent-encoded, as Basic credentials. */
	proxy_ok("http://ada:p%40ss%20w@proxy.corp:3128", "proxy.corp", "3128",
	         "Basic YWRhOnBAc3Mgdw==");
	proxy_ok("http://ada:p@ss@proxy.corp:3128", "proxy.corp", "3128", "Basic YWRhOnBAc3M=");
	/* Credentials are never in a message. */
	proxy_refused("http://ada:s3cr3t@proxy.corp:0", "'http://***@proxy.corp:0'");
	proxy_refused("https://ada:s3cr3t@proxy.corp", "'https://***@proxy.corp'");
	proxy_refused("http://ada:s@cr3t@proxy.corp/x", "'http://***@proxy.corp/x'");
	/* A password with an unencoded '/', '#' or '?': none of it said. */
	proxy_refused("http://ada:s3/cr3t@proxy.corp:3128", "'http://***@proxy.corp:3128'");
	proxy_refused("http://ada:s3#cr3t@proxy.corp:3128", "'http://***@proxy.corp:3128'");
	/* Shown as the log shows URLs (redact_url): a query's values too. */
	proxy_refused("http://ada:s3cr3t@proxy.corp/?api_key=k3y",
	              "'http://***@proxy.corp/?api_key=***'");
	proxy_refused("https://proxy.corp:3128", "only an http:// proxy is supported");
	proxy_refused("socks5://proxy.corp:1080", "only an http:// proxy is supported");
	proxy_refused("http://proxy.corp:0", "expected a port of 1-65535");
	proxy_refused("http://proxy.corp:99999", "expected a port of 1-65535");
	proxy_refused("http://proxy.corp:31x", "expected a port of 1-65535");
	proxy_refused("http://proxy.corp/path", "expected http://[USER:PASSWORD@]HOST[:PORT]");
	proxy_refused("http://:3128", "expected http://[USER:PASSWORD@]HOST[:PORT]");
	proxy_refused("http://[fd00::1", "expected http://[USER:PASSWORD@]HOST[:PORT]");
	proxy_refused("http://ada@proxy.corp:3128", "expected USER:PASSWORD@");
	proxy_refused("http://ada:%zz@proxy.corp:3128", "expected USER:PASSWORD@");
	/* The lower-case variable first, as curl reads them. */
	setenv("https_proxy", "http://lower:1", 1);
	assert_int_equal(httpc_proxy_get(&p, 1, err, sizeof err), 0);
	assert_string_equal(p.var, "https_proxy");
	assert_string_equal(p.host, "lower");
	/* Plain HTTP has its own variables: neither reads the other's. */
	assert_int_equal(httpc_proxy_get(&p, 0, err, sizeof err), 1);
	setenv("HTTP_PROXY", "http://plain.corp:3128", 1);
	assert_int_equal(httpc_proxy_get(&p, 0, err, sizeof err), 0);
	assert_string_equal(p.var, "HTTP_PROXY");
	assert_string_equal(p.host, "plain.corp");
	assert_string_equal(p.port, "3128");
	setenv("http_proxy", "socks5://plain.corp:1080", 1);
	assert_int_equal(httpc_proxy_get(&p, 0, err, sizeof err), -1);
	assert_string_equal(err, "http_proxy 'socks5://plain.corp:1080': only an http:// proxy "
	                         "is supported");
	assert_int_equal(httpc_proxy_get(&p, 1, err, sizeof err), 0);
	assert_string_equal(p.var, "https_proxy");
	unset_proxy();
}

/* What httpc_send_head sends on a connection to `host`:`port`, direct or
 * (`via`) to a proxy of plain HTTP; malloc'd. */
static char *head_sent(const httpc_proxy *via, const char *host, const char *port)
{
	int sv[2];
	char buf[1024], err[256];
	ssize_t n;
	httpc_conn c = {.tls = NULL, .proxy = via};
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	c.fd = sv[0];
	assert_int_equal(httpc_send_head(&c, "POST", host, port, "/v1/traces?a=1",
	                                 "X-Scope-OrgID: t1\r\n\r\n", INT64_MAX, err, sizeof err),
	                 0);
	close(sv[0]);
	n = read(sv[1], buf, sizeof buf - 1);
	close(sv[1]);
	assert_true(n > 0);
	buf[n] = '\0';
	return strdup(buf);
}

static void test_request_head(void **state)
{
	httpc_proxy p = {.host = "proxy.corp", .port = "3128", .var = "http_proxy"};
	char *h;
	(void)state;
	h = head_sent(NULL, "collector.example", "4318");
	assert_string_equal(h, "POST /v1/traces?a=1 HTTP/1.1\r\nHost: collector.example:4318\r\n"
	                       "X-Scope-OrgID: t1\r\n\r\n");
	free(h);
	/* To a proxy the request line names the server; its credentials follow Host. */
	h = head_sent(&p, "collector.example", "4318");
	assert_string_equal(h, "POST http://collector.example:4318/v1/traces?a=1 HTTP/1.1\r\n"
	                       "Host: collector.example:4318\r\nX-Scope-OrgID: t1\r\n\r\n");
	free(h);
	snprintf(p.auth, sizeof p.auth, "Basic YWRhOnM=");
	h = head_sent(&p, "fd00::7", "4318");
	assert_string_equal(h, "POST http://[fd00::7]:4318/v1/traces?a=1 HTTP/1.1\r\n"
	                       "Host: [fd00::7]:4318\r\nProxy-Authorization: Basic YWRhOnM=\r\n"
	                       "X-Scope-OrgID: t1\r\n\r\n");
	free(h);
}

/* httpc_open with http_proxy set: a server elsewhere is reached through the
 * proxy (here a listener on loopback: the server's name is never resolved),
 * a loopback one direct. The only test here that opens connections: the
 * environment is read at the first. */
static void test_open_through_the_http_proxy(void **state)
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t alen = sizeof a;
	char env[64], port[8], err[256];
	int lfd = socket(AF_INET, SOCK_STREAM, 0), fd;
	httpc_conn c;
	(void)state;
	unset_proxy();
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof a), 0);
	assert_int_equal(listen(lfd, 4), 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &alen), 0);
	snprintf(port, sizeof port, "%d", ntohs(a.sin_port));
	snprintf(env, sizeof env, "http://127.0.0.1:%s", port);
	setenv("http_proxy", env, 1);
	setenv("no_proxy", "internal.corp,0.0.0.0", 1);
	assert_int_equal(httpc_open(&c, "collector.example", "4318", NULL, INT64_MAX, err,
	                            sizeof err),
	                 0);
	assert_non_null(c.proxy);
	assert_string_equal(c.proxy->var, "http_proxy");
	assert_true((fd = accept(lfd, NULL, NULL)) >= 0);
	close(fd);
	httpc_close(&c);
	/* Loopback goes direct (here to the same listener), as no_proxy's do
	 * (0.0.0.0, which Linux connects to this host: no DNS needed). */
	assert_int_equal(httpc_open(&c, "127.0.0.1", port, NULL, INT64_MAX, err, sizeof err), 0);
	assert_null(c.proxy);
	assert_true((fd = accept(lfd, NULL, NULL)) >= 0);
	close(fd);
	httpc_close(&c);
	assert_int_equal(httpc_open(&c, "0.0.0.0", port, NULL, INT64_MAX, err, sizeof err), 0);
	assert_null(c.proxy);
	httpc_close(&c);
	close(lfd);
	unset_proxy();
}

static void test_no_proxy(void **state)
{
	httpc_proxy p;
	char err[256];
	(void)state;
	unset_proxy();
	setenv("HTTPS_PROXY", "http://proxy.corp:3128", 1);
	assert_int_equal(httpc_proxy_get(&p, 1, err, sizeof err), 0);
	/* Loopback always goes direct. */
	assert_true(httpc_proxy_bypassed(&p, "localhost", "443"));
	assert_true(httpc_proxy_bypassed(&p, "127.0.0.1", "443"));
	assert_true(httpc_proxy_bypassed(&p, "127.8.9.10", "443"));
	assert_true(httpc_proxy_bypassed(&p, "::1", "443"));
	assert_false(httpc_proxy_bypassed(&p, "sso.example.com", "443"));
	assert_false(httpc_proxy_bypassed(&p, "10.0.0.1", "443"));
	setenv("NO_PROXY", " internal.corp, .svc.local ,10.0.0.1,Collector", 1);
	assert_int_equal(httpc_proxy_get(&p, 1, err, sizeof err), 0);
	assert_true(httpc_proxy_bypassed(&p, "internal.corp", "443"));
	assert_true(httpc_proxy_bypassed(&p, "sso.internal.corp", "443"));
	assert_true(httpc_proxy_bypassed(&p, "otel.svc.local", "443"));
	assert_true(httpc_proxy_bypassed(&p, "svc.local", "443"));
	assert_true(httpc_proxy_bypassed(&p, "10.0.0.1", "443"));
	assert_true(httpc_proxy_bypassed(&p, "collector", "443"));
	assert_false(httpc_proxy_bypassed(&p, "notinternal.corp", "443"));
	assert_false(httpc_proxy_bypassed(&p, "internal.corp.evil.example", "443"));
	assert_false(httpc_proxy_bypassed(&p, "10.0.0.10", "443"));
	assert_false(httpc_proxy_bypassed(&p, "sso.example.com", "443"));
	/* Networks, as curl takes them since 7.86: addresses in them go direct. */
	setenv("NO_PROXY", "10.0.0.0/8, fd00::/8,192.168.1.0/33,nonsense/8", 1);
	assert_int_equal(httpc_proxy_get(&p, 1, err, sizeof err), 0);
	assert_true(httpc_proxy_bypassed(&p, "10.1.2.3", "443"));
	assert_true(httpc_proxy_bypassed(&p, "fd00::5", "443"));
	assert_false(httpc_proxy_bypassed(&p, "11.0.0.1", "443"));
	assert_false(httpc_proxy_bypassed(&p, "192.168.1.1", "443")); /* a bad entry matches nothing */
	assert_false(httpc_proxy_bypassed(&p, "10.example.com", "443"));
	assert_false(httpc_proxy_bypassed(&p, "fe80::1", "443"));
	setenv("no_proxy", "*", 1);
	assert_int_equal(httpc_proxy_get(&p, 1, err, sizeof err), 0);
	assert_true(httpc_proxy_bypassed(&p, "sso.example.com", "443"));
	unset_proxy();
}

/* no_proxy's entries as curl and Go read them: a network written with host
 * bits set is the network they are in; an IPv6 address in brackets is that
 * address; an entry with a port sends that port direct, no other (Go's
 * reading: curl ignores such entries). Addresses compare as addresses. */
static void test_no_proxy_entries(void **state)
{
	static const struct {
		const char *no_proxy, *host, *port;
		int direct;
	} cases[] = {
	    {"10.1.2.3/8", "10.200.0.1", "443", 1},
	    {"10.1.2.3/8", "11.0.0.1", "443", 0},
	    {"192.168.1.77/24", "192.168.1.1", "443", 1},
	    {"fd00::7/8", "fd12::1", "443", 1},
	    {"fd00::7/8", "fe80::1", "443", 0},
	    {"[fd00::7]", "fd00::7", "443", 1},
	    {"[fd00::7]", "fd00:0:0::7", "443", 1},
	    {"[fd00::7]", "fd00::8", "443", 0},
	    {"fd00::7", "fd00::7", "443", 1},
	    {"[fd00::7]:443", "fd00::7", "443", 1},
	    {"[fd00::7]:443", "fd00::7", "8443", 0},
	    {"[fd00::7]:", "fd00::7", "443", 0},
	    {"[fd00::7]x", "fd00::7", "443", 0},
	    {"[fd00::7", "fd00::7", "443", 0},
	    {"[sso.example.com]", "sso.example.com", "443", 0},
	    {"sso.example.com:443", "sso.example.com", "443", 1},
	    {"sso.example.com:443", "sso.example.com", "8443", 0},
	    {"example.com:443", "sso.example.com", "443", 1},
	    {".example.com:8443", "sso.example.com", "8443", 1},
	    {".example.com:8443", "sso.example.com", "443", 0},
	    {"sso.example.com:https", "sso.example.com", "443", 0},
	    {"sso.example.com:443x", "sso.example.com", "443", 0},
	    {"10.0.0.7:4318", "10.0.0.7", "4318", 1},
	    {"10.0.0.7:4318", "10.0.0.7", "4317", 0},
	    {"other.example, [fd00::7]:443 ,10.1.2.3/8", "10.9.9.9", "80", 1},
	    {"other.example, [fd00::7]:443 ,10.1.2.3/8", "fd00::7", "443", 1},
	    {"other.example, [fd00::7]:443 ,10.1.2.3/8", "fd00::7", "80", 0},
	};
	char err[256];
	(void)state;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		httpc_proxy p;
		assert_int_equal(httpc_proxy_parse(&p, "http://proxy.corp:3128", "HTTPS_PROXY",
		                                   cases[i].no_proxy, 1, err, sizeof err),
		                 0);
		if (httpc_proxy_bypassed(&p, cases[i].host, cases[i].port) != cases[i].direct)
			fail_msg("no_proxy '%s', %s port %s: expected %s", cases[i].no_proxy,
			         cases[i].host, cases[i].port,
			         cases[i].direct ? "direct" : "through the proxy");
	}
}

/* A listener on loopback: its fd, its port in `port`. */
static int listener(char port[8])
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t alen = sizeof a;
	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof a), 0);
	assert_int_equal(listen(lfd, 4), 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &alen), 0);
	snprintf(port, 8, "%d", ntohs(a.sin_port));
	return lfd;
}

/* Only "HTTP/1.x NNN" with NNN of 100-599 is a status. */
static void test_status(void **state)
{
	(void)state;
	assert_int_equal(httpc_status("HTTP/1.1 200 OK\r\n", 17), 200);
	assert_int_equal(httpc_status("HTTP/1.0 599\r\n", 14), 599);
	assert_int_equal(httpc_status("HTTP/1.1 100", 12), 100);
	assert_int_equal(httpc_status("HTTP/1.1 20", 11), -1); /* cut by the close */
	assert_int_equal(httpc_status("HTTP/1.1 -5\r\n\r\n", 15), -1);
	assert_int_equal(httpc_status("HTTP/1.1 099 X", 14), -1);
	assert_int_equal(httpc_status("HTTP/1.1 600 X", 14), -1);
	assert_int_equal(httpc_status("HTTP/1.1 2000 X", 15), -1);
	assert_int_equal(httpc_status("HTTP/2 200 OK\r\n", 15), -1);
	assert_int_equal(httpc_status("", 0), -1);
}

/* A header of an answer's head, by name in any case; Retry-After in its
 * delay-seconds form only (OTLP/HTTP: the HTTP-date form may count as none). */
static void test_header_and_retry_after(void **state)
{
	static const char *const head = "HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\n"
	                                "retry-after:  120 \r\nLocation: /there\r\n\r\n";
	static const struct {
		const char *value;
		int32_t want;
	} cases[] = {{"0", 0},
	             {"7", 7},
	             {"Fri, 31 Dec 2027 23:59:59 GMT", -1},
	             {"-1", -1},
	             {"1.5", -1},
	             {"99999999999999999999", INT32_MAX}};
	size_t vlen;
	const char *v;
	char buf[256];
	(void)state;
	v = httpc_header(head, strlen(head), "Location", &vlen);
	assert_non_null(v);
	assert_int_equal(vlen, 6);
	assert_memory_equal(v, "/there", 6);
	assert_null(httpc_header(head, strlen(head), "Retry", &vlen));
	assert_int_equal(httpc_retry_after(head, strlen(head)), 120);
	/* only in the head: not in the body, not without the blank line */
	snprintf(buf, sizeof buf, "HTTP/1.1 503 X\r\nContent-Length: 16\r\n\r\nRetry-After: 5\r\n");
	assert_int_equal(httpc_retry_after(buf, strlen(buf)), -1);
	snprintf(buf, sizeof buf, "HTTP/1.1 503 X\r\nRetry-After: 5\r\n");
	assert_int_equal(httpc_retry_after(buf, strlen(buf)), -1);
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		snprintf(buf, sizeof buf, "HTTP/1.1 503 X\r\nRetry-After: %s\r\n\r\n", cases[i].value);
		assert_int_equal(httpc_retry_after(buf, strlen(buf)), cases[i].want);
	}
	snprintf(buf, sizeof buf, "HTTP/1.1 503 X\r\nRetry-After:\r\n\r\n");
	assert_int_equal(httpc_retry_after(buf, strlen(buf)), -1);
}

/* A connection made leaves no reason behind: an earlier address's "cannot
 * connect" would be taken for what happened. */
static void test_open_leaves_no_reason(void **state)
{
	char port[8], err[256] = "stale";
	int lfd, fd;
	httpc_conn c;
	(void)state;
	unset_proxy();
	lfd = listener(port);
	assert_int_equal(httpc_open(&c, "127.0.0.1", port, NULL, INT64_MAX, err, sizeof err), 0);
	assert_string_equal(err, "");
	assert_true((fd = accept(lfd, NULL, NULL)) >= 0);
	close(fd);
	httpc_close(&c);
	close(lfd);
}

/* A refused IPv6 address is named in brackets, its port told from it (where
 * the resolver gives IPv6 addresses at all: AI_ADDRCONFIG). */
static void test_refused_ipv6_named_in_brackets(void **state)
{
	char port[8], err[256] = "", want[64];
	httpc_conn c;
	(void)state;
	unset_proxy();
	close(listener(port)); /* a port nobody listens on now */
	assert_int_equal(httpc_open(&c, "::1", port, NULL, clock_mono_ms() + 10000, err, sizeof err),
	                 -1);
	if (strstr(err, "cannot resolve"))
		skip(); /* no IPv6 here */
	snprintf(want, sizeof want, "cannot connect to [::1]:%s: ", port);
	if (strncmp(err, want, strlen(want)) != 0)
		fail_msg("%s", err);
}

/* A name goes to the resolver (in the background, waited for until the
 * deadline): "localhost" resolves and connects; a name no resolver has fails
 * saying so; with the deadline passed, it fails at once, timed out or
 * refused by the resolver, whichever came first. (The names go direct:
 * loopback, and no_proxy's internal.corp, as test_open_through_the_http_proxy
 * left the environment read once.) */
static void test_open_a_name(void **state)
{
	char port[8], err[256] = "";
	int lfd, fd;
	httpc_conn c;
	(void)state;
	unset_proxy();
	lfd = listener(port);
	assert_int_equal(httpc_open(&c, "localhost", port, NULL, clock_mono_ms() + 10000, err,
	                            sizeof err),
	                 0);
	assert_true((fd = accept(lfd, NULL, NULL)) >= 0);
	close(fd);
	httpc_close(&c);
	close(lfd);
	assert_int_equal(httpc_open(&c, "no-such-host.internal.corp", port, NULL,
	                            clock_mono_ms() + 10000, err, sizeof err),
	                 -1);
	assert_non_null(strstr(err, "cannot resolve no-such-host.internal.corp: "));
	assert_int_equal(httpc_open(&c, "no-such-host.internal.corp", port, NULL, clock_mono_ms() - 1,
	                            err, sizeof err),
	                 -1);
	assert_non_null(strstr(err, "cannot resolve no-such-host.internal.corp: "));
}

static void server_says(int fd, const char *text)
{
	size_t n = strlen(text);
	assert_true(send(fd, text, n, 0) == (ssize_t)n);
}

/* httpc_recv_answer ends with the answer, the connection still open. */
static void test_recv_answer(void **state)
{
	static const char *answers[] = {
	    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
	    "HTTP/1.1 204 No Content\r\n\r\n",
	    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
	};
	char port[8], err[256], buf[512];
	int lfd, fd;
	httpc_conn c;
	(void)state;
	unset_proxy();
	lfd = listener(port);
	for (size_t i = 0; i < sizeof answers / sizeof *answers; i++) {
		int64_t t0 = clock_mono_ms();
		assert_int_equal(httpc_open(&c, "127.0.0.1", port, NULL, INT64_MAX, err, sizeof err),
		                 0);
		assert_true((fd = accept(lfd, NULL, NULL)) >= 0);
		server_says(fd, answers[i]);
		assert_int_equal(httpc_recv_answer(&c, buf, sizeof buf, t0 + 5000, err, sizeof err),
		                 strlen(answers[i]));
		assert_string_equal(buf, answers[i]);
		assert_true(clock_mono_ms() - t0 < 2000);
		httpc_close(&c);
		close(fd);
	}
	/* A body short of its Content-Length: the deadline ends the wait. */
	assert_int_equal(httpc_open(&c, "127.0.0.1", port, NULL, INT64_MAX, err, sizeof err), 0);
	assert_true((fd = accept(lfd, NULL, NULL)) >= 0);
	server_says(fd, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n{}");
	assert_int_equal(httpc_recv_answer(&c, buf, sizeof buf, clock_mono_ms() + 300, err,
	                                   sizeof err),
	                 40);
	assert_string_equal(err, "timed out");
	httpc_close(&c);
	close(fd);
	close(lfd);
}

/* httpc_recv_answer reads a chunked body chunk by chunk, as the reads come
 * (each record of a SOCK_SEQPACKET pair is one read): a read that ends
 * inside a chunk's data with what looks like the last chunk
 * ("\r\n0\r\n\r\n") is not the end; a last chunk with an extension, or
 * with trailers, is. Each answer stops the read before the deadline (the
 * connection stays open). Found by fuzz_httpc. */
static void test_recv_answer_chunk_by_chunk(void **state)
{
	static const char *const reads[][3] = {
	    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nc\r\nabc\r\n0\r\n\r\n",
	     "de\r\n0\r\n\r\n", NULL},
	    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n",
	     "0;note=last\r\n\r\n", NULL},
	    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n",
	     "X-Checksum: 1\r\n", "\r\n"},
	};
	char err[256], buf[512], whole[512];
	(void)state;
	for (size_t i = 0; i < sizeof reads / sizeof *reads; i++) {
		int sv[2];
		int64_t t0 = clock_mono_ms();
		httpc_conn c = {.fd = -1, .tls = NULL, .proxy = NULL};
		assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
		whole[0] = '\0';
		for (size_t j = 0; j < 3 && reads[i][j]; j++) {
			server_says(sv[1], reads[i][j]);
			strcat(whole, reads[i][j]);
		}
		c.fd = sv[0];
		assert_int_equal(httpc_recv_answer(&c, buf, sizeof buf, t0 + 5000, err, sizeof err),
		                 strlen(whole));
		assert_string_equal(buf, whole);
		assert_true(clock_mono_ms() - t0 < 2000);
		httpc_close(&c);
		close(sv[1]);
	}
}

/* httpc_recv_answer over a real connection that gets `text` and stays open:
 * what it returns (into buf), err in err; the deadline `ms` from now. */
static size_t answer_over_tcp(int lfd, const char *port, const char *text, int64_t ms,
                              char *buf, size_t n, char *err)
{
	httpc_conn c;
	size_t got;
	int fd;
	assert_int_equal(httpc_open(&c, "127.0.0.1", port, NULL, INT64_MAX, err, 256), 0);
	assert_true((fd = accept(lfd, NULL, NULL)) >= 0);
	server_says(fd, text);
	got = httpc_recv_answer(&c, buf, n, clock_mono_ms() + ms, err, 256);
	httpc_close(&c);
	close(fd);
	return got;
}

/* A server's interim answers (100 Continue, 102, 103 Early Hints) before its
 * final one are read and set aside: the final answer is what comes back,
 * its status, headers and body (not a 103's "Location" or Content-Length),
 * and it ends the read with the connection still open. Each read of a
 * SOCK_SEQPACKET pair ends where its record does: an interim head split
 * across reads, the final answer's status line too. */
static void test_recv_answer_after_interim_answers(void **state)
{
	static const char *const final = "HTTP/1.1 308 Permanent Redirect\r\nLocation: /there\r\n"
	                                  "Retry-After: 7\r\nContent-Length: 2\r\n\r\n{}";
	static const char *const reads[] = {"HTTP/1.1 103 Early",
	                                    " Hints\r\nLink: </s.css>\r\nContent-Length: 4\r\n\r\n"
	                                    "HTTP/1.1 2",
	                                    "04 No Content\r\n\r\n", NULL};
	char port[8], err[256], buf[512], text[512];
	const char *v;
	size_t vlen, got;
	int lfd, sv[2];
	httpc_conn c = {.fd = -1, .tls = NULL, .proxy = NULL};
	(void)state;
	unset_proxy();
	lfd = listener(port);
	snprintf(text, sizeof text,
	         "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n"
	         "HTTP/1.1 103 Early Hints\r\nLink: </k.json>; rel=preload\r\nLocation: /early\r\n"
	         "Content-Length: 9\r\n\r\n%s",
	         final);
	got = answer_over_tcp(lfd, port, text, 30000, buf, sizeof buf, err);
	assert_int_equal(got, strlen(final));
	assert_string_equal(buf, final);
	assert_int_equal(httpc_status(buf, got), 308);
	assert_int_equal(httpc_retry_after(buf, got), 7);
	assert_non_null(v = httpc_header(buf, got, "Location", &vlen));
	assert_int_equal(vlen, 6);
	assert_memory_equal(v, "/there", 6);
	close(lfd);

	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
	for (size_t j = 0; reads[j]; j++)
		server_says(sv[1], reads[j]);
	c.fd = sv[0];
	got = httpc_recv_answer(&c, buf, sizeof buf, clock_mono_ms() + 30000, err, sizeof err);
	assert_string_equal(buf, "HTTP/1.1 204 No Content\r\n\r\n");
	assert_int_equal(got, strlen(buf));
	httpc_close(&c);
	close(sv[1]);
}

/* 101 Switching Protocols, which evhost never asks for, is no answer, said
 * as such; so are interim answers alone, whatever ends them: the close,
 * the deadline ("timed out", as callers expect it), or the buffer they
 * fill (a server sending 103s without end). */
static void test_recv_answer_interim_only(void **state)
{
	char port[8], err[256], buf[4096], flood[8192];
	size_t got;
	int lfd, fd, sv[2];
	httpc_conn c;
	(void)state;
	unset_proxy();
	lfd = listener(port);
	got = answer_over_tcp(lfd, port,
	                      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
	                      "Connection: Upgrade\r\n\r\n\x81\x05hello",
	                      30000, buf, sizeof buf, err);
	assert_int_equal(got, 0);
	assert_string_equal(buf, "");
	assert_string_equal(err, "the server switched protocols (101 Switching Protocols), which "
	                         "was not asked for");
	got = answer_over_tcp(lfd, port,
	                      "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 Switching Protocols\r\n\r\n",
	                      30000, buf, sizeof buf, err);
	assert_int_equal(got, 0);
	assert_non_null(strstr(err, "switched protocols"));
	/* 103s, then nothing until the deadline */
	got = answer_over_tcp(lfd, port, "HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 103 Ear", 300,
	                      buf, sizeof buf, err);
	assert_int_equal(got, 0);
	assert_string_equal(buf, "");
	assert_string_equal(err, "timed out");
	/* 100, then the close */
	assert_int_equal(httpc_open(&c, "127.0.0.1", port, NULL, INT64_MAX, err, sizeof err), 0);
	assert_true((fd = accept(lfd, NULL, NULL)) >= 0);
	server_says(fd, "HTTP/1.1 100 Continue\r\n\r\n");
	close(fd);
	got = httpc_recv_answer(&c, buf, sizeof buf, clock_mono_ms() + 30000, err, sizeof err);
	assert_int_equal(got, 0);
	assert_string_equal(err, "the connection was closed after 1 interim (1xx) answer");
	httpc_close(&c);
	close(lfd);

	/* More 103s than the buffer holds: the read ends when it is full. */
	flood[0] = '\0';
	while (strlen(flood) + 40 < sizeof flood)
		strcat(flood, "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n");
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	server_says(sv[1], flood);
	c.fd = sv[0];
	c.tls = NULL;
	c.proxy = NULL;
	got = httpc_recv_answer(&c, buf, sizeof buf, clock_mono_ms() + 30000, err, sizeof err);
	assert_int_equal(got, 0);
	assert_string_equal(err, "no final answer in the first 4095 bytes, only interim (1xx) "
	                         "answers");
	httpc_close(&c);
	close(sv[1]);
}

/* The JWKS fetcher's way (jwksfetch.c): the whole answer, then parsed; a
 * 100 Continue and a 103 before the 200 are set aside. */
static void test_recv_all_after_interim_answers(void **state)
{
	char port[8], err[256], *buf;
	size_t n;
	int lfd, fd;
	httpc_conn c;
	httpc_answer a;
	(void)state;
	unset_proxy();
	lfd = listener(port);
	assert_int_equal(httpc_open(&c, "127.0.0.1", port, NULL, INT64_MAX, err, sizeof err), 0);
	assert_true((fd = accept(lfd, NULL, NULL)) >= 0);
	server_says(fd, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n"
	                "Link: </k>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: "
	                "application/json\r\nContent-Length: 11\r\n\r\n{\"keys\":[]}");
	close(fd);
	assert_int_equal(httpc_recv_all(&c, 65536, clock_mono_ms() + 30000, &buf, &n, err,
	                                sizeof err),
	                 0);
	httpc_close(&c);
	close(lfd);
	assert_int_equal(httpc_parse_answer(buf, n, &a, err, sizeof err), 0);
	assert_int_equal(a.status, 200);
	assert_int_equal(a.body_len, 11);
	assert_memory_equal(a.body, "{\"keys\":[]}", 11);
	free(buf);
}

/* httpc_recv_all ends with the answer, the connection still open (within
 * max: more is 1); an answer without Content-Length or chunks, at the
 * close. The sockets are non-blocking, as httpc_open's are. */
static void test_recv_all_ends_with_the_answer(void **state)
{
	static const char *answers[] = {
	    "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"keys\":[]}",
	    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"key\r\n6\r\ns\":[]}\r\n"
	    "0\r\n\r\n",
	    "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
	    NULL};
	char err[256], *buf;
	size_t n;
	int sv[2];
	httpc_conn c = {.fd = -1, .tls = NULL, .proxy = NULL};
	(void)state;
	for (int i = 0; answers[i]; i++) {
		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
		server_says(sv[1], answers[i]);
		c.fd = sv[0];
		assert_int_equal(httpc_recv_all(&c, 65536, clock_mono_ms() + 30000, &buf, &n, err,
		                                sizeof err),
		                 0);
		assert_string_equal(buf, answers[i]);
		assert_int_equal(n, strlen(answers[i]));
		free(buf);
		httpc_close(&c);
		close(sv[1]);
	}
	/* No framing: the close ends it. */
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
	server_says(sv[1], "HTTP/1.1 200 OK\r\n\r\n{\"keys\":[]}");
	close(sv[1]);
	c.fd = sv[0];
	assert_int_equal(httpc_recv_all(&c, 65536, clock_mono_ms() + 30000, &buf, &n, err,
	                                sizeof err),
	                 0);
	assert_string_equal(buf, "HTTP/1.1 200 OK\r\n\r\n{\"keys\":[]}");
	free(buf);
	httpc_close(&c);
	/* More than max before the answer's end. */
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
	server_says(sv[1], "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
	c.fd = sv[0];
	assert_int_equal(httpc_recv_all(&c, 40, clock_mono_ms() + 30000, &buf, &n, err, sizeof err),
	                 1);
	assert_int_equal(n, 40);
	free(buf);
	httpc_close(&c);
	close(sv[1]);
}

static _Atomic int64_t cut;

static void *cut_soon(void *arg)
{
	(void)arg;
	usleep(200000);
	atomic_store(&cut, clock_mono_ms());
	return NULL;
}

/* Another thread's cut-off ends a wait already under way. */
static void test_cut_off(void **state)
{
	char port[8], err[256], buf[64];
	int lfd, fd;
	int64_t t0;
	httpc_conn c;
	pthread_t t;
	(void)state;
	unset_proxy();
	lfd = listener(port);
	atomic_store(&cut, 0);
	httpc_cut_off_at(&cut);
	assert_int_equal(httpc_open(&c, "127.0.0.1", port, NULL, INT64_MAX, err, sizeof err), 0);
	assert_true((fd = accept(lfd, NULL, NULL)) >= 0);
	t0 = clock_mono_ms();
	assert_int_equal(pthread_create(&t, NULL, cut_soon, NULL), 0);
	assert_int_equal(httpc_recv_answer(&c, buf, sizeof buf, t0 + 30000, err, sizeof err), 0);
	assert_string_equal(err, "timed out");
	assert_true(clock_mono_ms() - t0 < 1000);
	pthread_join(t, NULL);
	httpc_cut_off_at(NULL);
	httpc_close(&c);
	close(fd);
	close(lfd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_framing),
	    cmocka_unit_test(test_interim_answers),
	    cmocka_unit_test(test_redirect),
	    cmocka_unit_test(test_refused),
	    cmocka_unit_test(test_proxy),
	    cmocka_unit_test(test_no_proxy),
	    cmocka_unit_test(test_no_proxy_entries),
	    cmocka_unit_test(test_request_head),
	    cmocka_unit_test(test_open_through_the_http_proxy),
	    cmocka_unit_test(test_status),
	    cmocka_unit_test(test_header_and_retry_after),
	    cmocka_unit_test(test_open_leaves_no_reason),
	    cmocka_unit_test(test_open_a_name),
	    cmocka_unit_test(test_refused_ipv6_named_in_brackets),
	    cmocka_unit_test(test_recv_answer_chunk_by_chunk),
	    cmocka_unit_test(test_recv_answer),
	    cmocka_unit_test(test_recv_answer_after_interim_answers),
	    cmocka_unit_test(test_recv_answer_interim_only),
	    cmocka_unit_test(test_recv_all_after_interim_answers),
	    cmocka_unit_test(test_recv_all_ends_with_the_answer),
	    cmocka_unit_test(test_cut_off),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
