/* The CONNECT tunnel through the environment's proxy (httpc.c's tunnel,
 * static, so httpc.c is compiled in here, as fuzz_httpc does): the proxy's
 * answer read to its head's end, nothing more; interim answers (1xx)
 * before it set aside, as RFC 9110 (15.2) asks of every client. Over a
 * real loopback connection to a listener that plays the proxy. */
#define _GNU_SOURCE /* as httpc.c, included below */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "../../host/httpc.c"

/* tunnel() through a "proxy" that answers CONNECT with `text` (and keeps
 * the connection open): its result, the reason in err. */
static int tunnel_with(const char *text, char *err, size_t errlen)
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t alen = sizeof a;
	httpc_proxy p = {.var = "https_proxy"};
	httpc_conn c = {.fd = -1, .tls = NULL, .proxy = NULL};
	char port[8], req[1024];
	int lfd = socket(AF_INET, SOCK_STREAM, 0), fd, rc;
	size_t n = strlen(text);
	ssize_t r;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof a), 0);
	assert_int_equal(listen(lfd, 1), 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &alen), 0);
	snprintf(port, sizeof port, "%d", ntohs(a.sin_port));
	snprintf(p.host, sizeof p.host, "127.0.0.1");
	snprintf(p.port, sizeof p.port, "%s", port);
	assert_true((c.fd = connect_to("127.0.0.1", port, clock_mono_ms() + 30000, err, errlen)) >=
	            0);
	assert_true((fd = accept(lfd, NULL, NULL)) >= 0);
	/* The answer goes out at once: the request fits the socket's buffer. */
	assert_true(send(fd, text, n, 0) == (ssize_t)n);
	rc = tunnel(&c, &p, "idp.example", "443", clock_mono_ms() + 30000, err, errlen);
	r = recv(fd, req, sizeof req - 1, 0);
	assert_true(r > 0);
	req[r] = '\0';
	assert_non_null(strstr(req, "CONNECT idp.example:443 HTTP/1.1\r\n"));
	httpc_close(&c);
	close(fd);
	close(lfd);
	return rc;
}

static void test_tunnel_after_interim_answers(void **state)
{
	char err[512] = "";
	(void)state;
	assert_int_equal(tunnel_with("HTTP/1.1 200 Connection established\r\n\r\n", err, sizeof err),
	                 0);
	err[0] = '\0';
	if (tunnel_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
	                "HTTP/1.1 200 Connection established\r\n\r\n",
	                err, sizeof err) != 0)
		fail_msg("refused: %s", err);
	/* A refusal after an interim answer is the refusal, said as such. */
	assert_int_equal(tunnel_with("HTTP/1.1 100 Continue\r\n\r\n"
	                             "HTTP/1.1 407 Proxy Authentication Required\r\n\r\n",
	                             err, sizeof err),
	                 -1);
	assert_non_null(strstr(err, "refused the tunnel to idp.example:443: 407 Proxy "
	                            "Authentication Required"));
	/* 101 is no tunnel. */
	assert_int_equal(tunnel_with("HTTP/1.1 101 Switching Protocols\r\n\r\n", err, sizeof err),
	                 -1);
	assert_non_null(strstr(err, "refused the tunnel to idp.example:443: 101 Switching"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_tunnel_after_interim_answers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
