/* libFuzzer: an HTTP server's answer as evhostd reads it (httpc.c,
 * httpc_parse_answer: the JWKS fetcher's GETs), and the environment's
 * proxy (httpc_proxy_get, httpc_proxy_bypassed). Checks what callers rely
 * on: a parsed answer has a three-digit status and a body inside the buffer
 * (a chunked body decoded in place, never longer than what came); a refused
 * one says why; the Location kept is a C string.
 *
 * And where httpc_recv_answer stops reading (answer_complete, static, so
 * httpc.c is compiled in here, as tests/unit does with other files' static
 * functions): after every prefix of the input as one read may end there.
 * Where it says the answer is whole, that prefix is the answer: parsed, it
 * gives the status and body the whole input gives (a chunk's data that
 * looks like the last chunk does not end it); and an answer framed by its
 * Content-Length is whole once its body came (not at the close).
 *
 * Interim answers (1xx) before the final one are set aside: a parsed
 * answer is never 1xx (nor 101, refused), its framing is the final head's,
 * and what httpc_recv_answer keeps of what came (final_answer) is the
 * final answer, the input's tail, never an interim one. */
#define _GNU_SOURCE /* as httpc.c, included below */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../host/httpc.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Input "P<value>": <value> as https_proxy, http_proxy and no_proxy
 * (httpc_proxy_parse, as httpc_proxy_get calls it for both kinds, not
 * through setenv, whose glibc keeps every value it was given): taken with
 * a host and a port of 1-65535, or refused with a reason; the no_proxy
 * matcher runs over it. */
static void proxy(const char *value, int tls)
{
	static const char *const hosts[] = {"sso.example.com", "example.com", "127.0.0.1",
	                                    "10.0.0.1", "a", ""};
	httpc_proxy p;
	char err[256] = "";
	long port;
	switch (httpc_proxy_parse(&p, value, tls ? "https_proxy" : "http_proxy", value, tls, err,
	                          sizeof err)) {
	case 0:
		port = strtol(p.port, NULL, 10);
		if (!p.host[0] || port < 1 || port > 65535 ||
		    strcmp(p.var, tls ? "https_proxy" : "http_proxy"))
			__builtin_trap();
		for (size_t i = 0; i < sizeof hosts / sizeof hosts[0]; i++)
			(void)httpc_proxy_bypassed(&p, hosts[i], "443");
		if (!httpc_proxy_bypassed(&p, "127.0.0.1", "443"))
			__builtin_trap();
		break;
	case 1:
		if (*value)
			__builtin_trap();
		break;
	default:
		if (!err[0])
			__builtin_trap();
	}
}

/* What httpc_recv_answer keeps of the input (as if the connection closed
 * after it): its tail, the final answer, or nothing; never a 1xx. */
static void check_final_answer(const uint8_t *data, size_t size, int parsed_final)
{
	char *buf = malloc(size + 1), err[256] = "the connection was closed";
	size_t r;
	int st;
	if (!buf)
		return;
	memcpy(buf, data, size);
	buf[size] = '\0';
	r = final_answer(buf, size, 0, err, sizeof err);
	st = httpc_status(buf, r);
	if (r > size || buf[r] != '\0' || (r && memcmp(buf, data + size - r, r)) ||
	    (st >= 100 && st < 200) || (!r && !err[0]) || (parsed_final && !r))
		__builtin_trap();
	free(buf);
}

/* The answer the whole input parses to, and its framing. */
struct whole {
	int ok, status, framed_by_length, chunked;
	char *body;
	size_t body_len;
};

static void check_prefixes(const uint8_t *data, size_t size, const struct whole *w)
{
	char *buf = malloc(size + 1), err[256];
	if (!buf)
		return;
	memcpy(buf, data, size);
	buf[size] = '\0';
	for (size_t k = 1; k <= size; k++) {
		char *part;
		httpc_answer a;
		int complete = answer_complete(buf, k);
		if (!complete) {
			/* whole once the Content-Length's body came */
			if (k == size && w->ok && w->framed_by_length)
				__builtin_trap();
			continue;
		}
		if (!w->ok || w->status < 200 || w->status == 204 || w->status == 304)
			continue;
		part = malloc(k + 1);
		if (!part)
			break;
		memcpy(part, data, k);
		part[k] = '\0';
		if (httpc_parse_answer(part, k, &a, err, sizeof err) != 0 || a.status != w->status ||
		    a.body_len != w->body_len || memcmp(a.body, w->body, a.body_len))
			__builtin_trap();
		free(part);
	}
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf = malloc(size + 1), err[256];
	httpc_answer a;
	if (!buf)
		return 0;
	memcpy(buf, data, size);
	buf[size] = '\0';
	if (size && buf[0] == 'P') {
		proxy(buf + 1, 1); /* up to the first NUL, as the environment holds it */
		proxy(buf + 1, 0);
		free(buf);
		return 0;
	}
	err[0] = '\0';
	if (httpc_parse_answer(buf, size, &a, err, sizeof err) == 0) {
		if (a.status < 200 || a.status > 999 || !a.body || a.body < buf ||
		    a.body_len > size || a.body + a.body_len > buf + size)
			__builtin_trap();
	} else if (!err[0]) {
		__builtin_trap();
	}
	if (size <= 4096) {
		struct whole w = {0};
		char *copy = malloc(size + 1);
		httpc_answer wa;
		if (copy) {
			size_t vlen, skip;
			const char *fin;
			memcpy(copy, data, size);
			copy[size] = '\0';
			skip = interim_len(copy, size, NULL); /* the final answer's head is framing's */
			fin = copy + skip;
			w.ok = httpc_parse_answer(copy, size, &wa, err, sizeof err) == 0 &&
			       httpc_status(fin, size - skip) >= 100;
			w.status = wa.status;
			w.body = wa.body;
			w.body_len = wa.body_len;
			w.chunked = httpc_header(fin, size - skip, "Transfer-Encoding", &vlen) != NULL;
			w.framed_by_length = !w.chunked &&
			                     httpc_header(fin, size - skip, "Content-Length", &vlen) !=
			                         NULL &&
			                     w.status >= 200;
			check_prefixes(data, size, &w);
			check_final_answer(data, size, w.ok);
			free(copy);
		}
	}
	if (strnlen(a.location, sizeof a.location) == sizeof a.location)
		__builtin_trap();
	/* What the OTLP exporter reads of the same answer (trace.c): its status,
	 * Retry-After and Location, found inside the head. */
	{
		size_t vlen;
		const char *v = httpc_header(buf, size, "Location", &vlen);
		int st = httpc_status(buf, size);
		if (st != -1 && (st < 100 || st > 599))
			__builtin_trap();
		if (v && (v < buf || v + vlen > buf + size))
			__builtin_trap();
		if (httpc_retry_after(buf, size) < -1)
			__builtin_trap();
	}
	free(buf);
	return 0;
}
