/* evhostd's outgoing HTTP/1.1 requests (httpc.h). */
#define _GNU_SOURCE /* memmem */
#include "httpc.h"

#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sodium.h>

#include "clock.h"
#include "loopback.h"
#include "proxy.h"
#include "redact.h"
#include "tls_compat.h"

/* httpc_abort_on's flag and httpc_cut_off_at's deadline for this thread
 * (NULL: none). */
static _Thread_local const atomic_int *abort_flag;
static _Thread_local const _Atomic int64_t *cut_off;

void httpc_abort_on(const atomic_int *flag) { abort_flag = flag; }

void httpc_cut_off_at(const _Atomic int64_t *at) { cut_off = at; }

/* The ms left until `deadline` (clock_mono_ms) or this thread's cut-off,
 * whichever comes first; 0 once past, or once its abort flag is raised. */
static int64_t time_left(int64_t deadline)
{
	int64_t cut = cut_off ? atomic_load(cut_off) : 0;
	int64_t left = (cut && cut < deadline ? cut : deadline) - clock_mono_ms();
	return left <= 0 || (abort_flag && atomic_load(abort_flag)) ? 0 : left;
}

/* Wait for `events` on fd until `deadline` (clock_mono_ms), or until this
 * thread's abort flag is raised or its cut-off passes: 1, 0 on timeout (or
 * abort, or cut-off), -1. Either is read again every 100 ms: another thread
 * sets them while this one waits. */
static int wait_fd(int fd, short events, int64_t deadline)
{
	struct pollfd p = {.fd = fd, .events = events};
	int slice = abort_flag || cut_off ? 100 : 1000;
	for (;;) {
		int64_t left = time_left(deadline);
		int r;
		if (!left)
			return 0;
		r = poll(&p, 1, left > slice ? slice : (int)left);
		if (r > 0)
			return 1;
		if (r < 0 && errno != EINTR)
			return -1;
	}
}

/* A name's lookup on a thread of its own: the waiter and the thread each
 * hold a reference; the last to let go frees it (a waiter that gave up
 * leaves it to the thread, which may outlive it by the resolver's own
 * timeouts). Not glibc's getaddrinfo_a, whose thread ThreadSanitizer cannot
 * follow (its allocations there crash the sanitized build). */
typedef struct lookup {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int refs, done, rc, err; /* rc: getaddrinfo's; err: its errno, for EAI_SYSTEM */
	struct addrinfo hints, *res;
	char names[]; /* host, then port */
} lookup;

static void lookup_unref(lookup *l)
{
	int last;
	pthread_mutex_lock(&l->mu);
	last = --l->refs == 0;
	pthread_mutex_unlock(&l->mu);
	if (!last)
		return;
	if (l->res)
		freeaddrinfo(l->res);
	pthread_cond_destroy(&l->cv);
	pthread_mutex_destroy(&l->mu);
	free(l);
}

static void *lookup_run(void *arg)
{
	lookup *l = arg;
	struct addrinfo *res = NULL;
	const char *host = l->names, *port = host + strlen(host) + 1;
	int rc = getaddrinfo(host, port, &l->hints, &res), e = errno;
	pthread_mutex_lock(&l->mu);
	l->rc = rc;
	l->err = e;
	l->res = rc ? NULL : res;
	l->done = 1;
	pthread_cond_signal(&l->cv);
	pthread_mutex_unlock(&l->mu);
	lookup_unref(l);
	return NULL;
}

/* What `host` and `port` resolve to (*res, for freeaddrinfo), or -1 with
 * the reason in err. A name is looked up on a thread of its own, waited
 * for until `deadline`, the abort flag or the cut-off, like the connection
 * after it: a resolver that does not answer (its own timeouts add up to
 * tens of seconds) must not hold a stop, or a start, past its bound. An
 * address needs no resolver. */
static int resolve(const char *host, const char *port, const struct addrinfo *hints,
                   int64_t deadline, struct addrinfo **res, char *err, size_t errlen)
{
	struct addrinfo numeric = *hints;
	size_t hl = strlen(host) + 1, pl = strlen(port) + 1;
	pthread_attr_t attr;
	pthread_t t;
	lookup *l;
	int rc, e, done, started = 0;

	numeric.ai_flags |= AI_NUMERICHOST;
	if (getaddrinfo(host, port, &numeric, res) == 0)
		return 0;
	l = calloc(1, sizeof *l + hl + pl);
	if (!l) {
		snprintf(err, errlen, "cannot resolve %s: out of memory", host);
		return -1;
	}
	memcpy(l->names, host, hl);
	memcpy(l->names + hl, port, pl);
	l->hints = *hints;
	l->refs = 2;
	if (pthread_mutex_init(&l->mu, NULL) != 0) {
		free(l);
		snprintf(err, errlen, "cannot resolve %s: out of resources", host);
		return -1;
	}
	if (clock_cond_init(&l->cv) != 0) {
		pthread_mutex_destroy(&l->mu);
		free(l);
		snprintf(err, errlen, "cannot resolve %s: out of resources", host);
		return -1;
	}
	if (pthread_attr_init(&attr) == 0) {
		if (pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED) == 0)
			started = pthread_create(&t, &attr, lookup_run, l) == 0;
		pthread_attr_destroy(&attr);
	}
	if (!started) /* no thread to be had: looked up here, unbounded as before */
		lookup_run(l); /* lets go of the thread's reference */
	pthread_mutex_lock(&l->mu);
	while (!l->done) {
		int64_t left = time_left(deadline);
		struct timespec until;
		if (!left)
			break;
		until = clock_after_ms(CLOCK_MONOTONIC, left < 100 ? left : 100);
		pthread_cond_timedwait(&l->cv, &l->mu, &until);
	}
	done = l->done;
	rc = l->rc;
	e = l->err;
	*res = NULL;
	if (done) {
		*res = l->res; /* the caller's now */
		l->res = NULL;
	}
	pthread_mutex_unlock(&l->mu);
	lookup_unref(l);
	if (!done) {
		snprintf(err, errlen, "cannot resolve %s: timed out", host);
		return -1;
	}
	if (rc != 0) {
		snprintf(err, errlen, "cannot resolve %s: %s", host,
		         rc == EAI_SYSTEM ? strerror(e) : gai_strerror(rc));
		return -1;
	}
	return 0;
}

static int connect_to(const char *host, const char *port, int64_t deadline, char *err,
                      size_t errlen)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_ADDRCONFIG}, *res, *a;
	int rc, fd = -1;
	if (resolve(host, port, &hints, deadline, &res, err, errlen) != 0)
		return -1;
	/* An IPv6 address in brackets, or its port is hard to tell from it. */
	const char *lb = strchr(host, ':') ? "[" : "", *rb = *lb ? "]" : "";
	snprintf(err, errlen, "cannot connect to %s%s%s:%s", lb, host, rb, port);
	for (a = res; a && fd < 0; a = a->ai_next) {
		int soerr = 0;
		socklen_t sl = sizeof soerr;
		fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
		if (fd < 0)
			continue;
		if (connect(fd, a->ai_addr, a->ai_addrlen) == 0)
			break;
		if (errno == EINPROGRESS) {
			rc = wait_fd(fd, POLLOUT, deadline);
			if (rc > 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && !soerr)
				break;
			errno = rc == 0 ? ETIMEDOUT : soerr ? soerr : errno;
		}
		snprintf(err, errlen, "cannot connect to %s%s%s:%s: %s", lb, host, rb, port,
		         strerror(errno));
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd >= 0) /* the "cannot connect" of an address tried before */
		snprintf(err, errlen, "%s", "");
	return fd;
}

/* A TLS step (tls_compat.h), waiting for the socket as it asks, until
 * `deadline`: what the step returned, or -1 with the reason in err. */
static int tls_step(httpc_conn *c, int op, void *buf, size_t n, int64_t deadline, char *err,
                    size_t errlen)
{
	for (;;) {
		int r = tls_conn_io(c->tls, op, buf, n, err, errlen), w;
		if (r != EVHOST_TLS_WANT_READ && r != EVHOST_TLS_WANT_WRITE)
			return r;
		w = wait_fd(c->fd, r == EVHOST_TLS_WANT_READ ? POLLIN : POLLOUT, deadline);
		if (w <= 0) {
			snprintf(err, errlen, "%s", w == 0 ? "timed out" : strerror(errno));
			return -1;
		}
	}
}

/* ------------------------------------------------------------- proxy */

static ssize_t read_some(httpc_conn *c, char *buf, size_t n, int64_t deadline, char *err,
                         size_t errlen);
static const char *header_value(const char *line, size_t n, const char *name, size_t *vlen);
static size_t interim_len(const char *buf, size_t n, int *count);

static const char *env2(const char *lower, const char *upper, const char **name)
{
	const char *v = getenv(lower);
	*name = lower;
	if (!v || !*v) {
		v = getenv(upper);
		*name = upper;
	}
	return v && *v ? v : NULL;
}

/* %XX decoded from s[0..n) into out (cap bytes): its length, or -1. */
static int pct_decode(const char *s, size_t n, char *out, size_t cap)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned int c = (unsigned char)s[i];
		if (c == '%') {
			if (i + 2 >= n || !isxdigit((unsigned char)s[i + 1]) ||
			    !isxdigit((unsigned char)s[i + 2]) || sscanf(s + i + 1, "%2x", &c) != 1)
				return -1;
			i += 2;
		}
		if (o + 1 >= cap)
			return -1;
		out[o++] = (char)c;
	}
	out[o] = '\0';
	return (int)o;
}

/* The variable's value for a message, as the log shows URLs (redact.h):
 * its credentials, if any, and its query's values as "***". */
static const char *shown(const char *v, char *out, size_t n)
{
	char *r = redact_url(v);
	snprintf(out, n, "%s", r ? r : "(not shown: out of memory)");
	free(r);
	return out;
}

int httpc_proxy_get(httpc_proxy *p, int tls, char *err, size_t errlen)
{
	const char *var, *no_var;
	const char *v = tls ? env2("https_proxy", "HTTPS_PROXY", &var)
	                    : env2("http_proxy", "HTTP_PROXY", &var);
	return httpc_proxy_parse(p, v, var, env2("no_proxy", "NO_PROXY", &no_var), tls, err, errlen);
}

int httpc_proxy_parse(httpc_proxy *p, const char *v, const char *var, const char *no_proxy,
                      int tls, char *err, size_t errlen)
{
	const char *sv, *h, *at = NULL, *end, *colon;
	char cred[512], buf[512];
	size_t hn;
	int n;

	memset(p, 0, sizeof *p);
	if (!v || !*v)
		return 1;
	p->var = var;
	p->no_proxy = no_proxy && *no_proxy ? no_proxy : NULL;
	sv = shown(v, buf, sizeof buf);
	h = v;
	if (!strncasecmp(h, "http://", 7))
		h += 7;
	else if (strstr(h, "://")) {
		snprintf(err, errlen, "%s '%s': only an http:// proxy is supported%s", p->var, sv,
		         tls ? " (CONNECT)" : "");
		return -1;
	}
	end = h + strcspn(h, "/?#");
	if (*end && strcmp(end, "/") != 0) {
		snprintf(err, errlen, "%s '%s': expected http://[USER:PASSWORD@]HOST[:PORT]", p->var, sv);
		return -1;
	}
	/* The last '@' before the host ends the credentials, as Go reads them:
	 * a password may hold one unencoded. */
	for (const char *q = h; (q = memchr(q, '@', (size_t)(end - q))); q++)
		at = q;
	if (at) {
		colon = memchr(h, ':', (size_t)(at - h));
		n = pct_decode(h, (size_t)(at - h), cred, sizeof cred);
		if (n < 0 || !colon) {
			snprintf(err, errlen, "%s: expected USER:PASSWORD@ before the host", p->var);
			return -1;
		}
		memcpy(p->auth, "Basic ", 6);
		sodium_bin2base64(p->auth + 6, sizeof p->auth - 6, (const unsigned char *)cred,
		                  (size_t)n, sodium_base64_VARIANT_ORIGINAL);
		sodium_memzero(cred, sizeof cred);
		h = at + 1;
	}
	if (*h == '[') {
		const char *rb = memchr(h, ']', (size_t)(end - h));
		hn = rb ? (size_t)(rb - h - 1) : 0;
		colon = rb && rb + 1 < end && rb[1] == ':' ? rb + 1 : NULL;
		if (!rb || (rb + 1 < end && !colon)) {
			snprintf(err, errlen, "%s '%s': expected http://[USER:PASSWORD@]HOST[:PORT]",
			         p->var, sv);
			return -1;
		}
		h++;
	} else {
		colon = memchr(h, ':', (size_t)(end - h));
		hn = (size_t)((colon ? colon : end) - h);
	}
	if (!hn || hn >= sizeof p->host) {
		snprintf(err, errlen, "%s '%s': expected http://[USER:PASSWORD@]HOST[:PORT]", p->var, sv);
		return -1;
	}
	memcpy(p->host, h, hn);
	p->host[hn] = '\0';
	if (colon) {
		size_t pn = (size_t)(end - colon - 1);
		long port = pn && pn < 6 && strspn(colon + 1, "0123456789") >= pn
		                ? strtol(colon + 1, NULL, 10)
		                : 0;
		if (port < 1 || port > 65535) {
			snprintf(err, errlen, "%s '%s': expected a port of 1-65535 after the host", p->var,
			         sv);
			return -1;
		}
		snprintf(p->port, sizeof p->port, "%ld", port);
	} else {
		snprintf(p->port, sizeof p->port, "80");
	}
	return 0;
}

/* Does the no_proxy entry e[0..n) send host (an IPv6 address without
 * brackets) at port direct? "*"; an address or a network, compared as
 * addresses ("fd00::7" and "[fd00::7]" as fd00::7, "10.1.2.3/8" as
 * 10.0.0.0/8, as curl and Go read it); a name, its subdomains too. With a
 * port ("example.com:8443", "10.0.0.7:4318", "[fd00::7]:443"): that port
 * only, as Go reads them (curl ignores such entries). */
static int no_proxy_entry(const char *e, size_t n, const char *host, const char *port)
{
	const char *pp = NULL, *colon;
	size_t hl = strlen(host);
	char name[256];
	int bracketed = 0;

	if (n == 1 && *e == '*')
		return 1;
	if (n && *e == '[') {
		const char *rb = memchr(e, ']', n);
		if (!rb || (rb + 1 < e + n && rb[1] != ':'))
			return 0;
		pp = rb + 1 < e + n ? rb + 2 : NULL;
		n = (size_t)(rb - e - 1);
		e++;
		bracketed = 1;
	} else if ((colon = memchr(e, ':', n)) &&
	           !memchr(colon + 1, ':', n - (size_t)(colon + 1 - e))) {
		/* one ':' is a port's; an IPv6 address has more */
		pp = colon + 1;
		n = (size_t)(colon - e);
	}
	if (pp) {
		size_t pn = strspn(pp, "0123456789");
		if (!pn || pn > 5 || (pp[pn] && !strchr(", \t", pp[pn])) ||
		    strtol(pp, NULL, 10) != strtol(port, NULL, 10))
			return 0;
	}
	if (!n || n >= sizeof name)
		return 0;
	memcpy(name, e, n);
	name[n] = '\0';
	if (proxy_net_has(name, host))
		return 1;
	if (bracketed || memchr(name, '/', n))
		return 0; /* an address or a network, and host is not in it */
	if (*e == '.') { /* ".example.com": the same as "example.com" */
		e++;
		n--;
	}
	return n && (hl == n || (hl > n && host[hl - n - 1] == '.')) &&
	       !strncasecmp(host + hl - n, e, n);
}

int httpc_proxy_bypassed(const httpc_proxy *p, const char *host, const char *port)
{
	const char *e = p->no_proxy;
	if (loopback_host(host))
		return 1;
	while (e && *e) {
		size_t n;
		while (*e == ' ' || *e == '\t' || *e == ',')
			e++;
		n = strcspn(e, ", \t");
		if (n && no_proxy_entry(e, n, host, port))
			return 1;
		e += n;
	}
	return 0;
}

/* A request's head: "METHOD TARGET HTTP/1.1" (target NULL: CONNECT's
 * "HOST:PORT"; through a proxy of plain HTTP, "http://HOST:PORT/PATH"),
 * Host, Proxy-Authorization with `auth`, then `rest`. */
static int send_head(httpc_conn *c, const char *method, const char *host, const char *port,
                     const char *target, const char *auth, const char *rest, int64_t deadline,
                     char *err, size_t errlen)
{
	int v6 = strchr(host, ':') != NULL, rc;
	const char *lb = v6 ? "[" : "", *rb = v6 ? "]" : "";
	/* The server named in the request line: to a proxy, or for CONNECT. */
	int named = c->proxy || !target;
	char *head;
	if (asprintf(&head, "%s %s%s%s%s%s%s%s HTTP/1.1\r\nHost: %s%s%s:%s\r\n%s%s%s%s", method,
	             target && named ? "http://" : "", named ? lb : "", named ? host : "",
	             named ? rb : "", named ? ":" : "", named ? port : "", target ? target : "", lb,
	             host, rb, port, auth ? "Proxy-Authorization: " : "", auth ? auth : "",
	             auth ? "\r\n" : "", rest) < 0) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	rc = httpc_send(c, head, strlen(head), deadline, err, errlen);
	explicit_bzero(head, strlen(head)); /* credentials, a headers file's secrets */
	free(head);
	return rc;
}

/* The tunnel through the proxy to host:port on c->fd, connected to it:
 * 0, or -1 with the reason in err. */
static int tunnel(httpc_conn *c, const httpc_proxy *p, const char *host, const char *port,
                  int64_t deadline, char *err, size_t errlen)
{
	char head[4096], why[256], *ans = head;
	size_t got = 0;
	char *end = NULL;

	if (send_head(c, "CONNECT", host, port, NULL, *p->auth ? p->auth : NULL,
	              "User-Agent: evhost/" EVHOST_VERSION "\r\n\r\n", deadline, why,
	              sizeof why) != 0) {
		snprintf(err, errlen, "the proxy %s:%s (%s): %s", p->host, p->port, p->var, why);
		return -1;
	}
	/* Its answer's head, nothing more: the server says nothing before the
	 * TLS handshake, and a refusal's body is not read. */
	while (!end && got < sizeof head - 1) {
		ssize_t r = read_some(c, head + got, sizeof head - 1 - got, deadline, why, sizeof why);
		if (r <= 0) {
			snprintf(err, errlen, "the proxy %s:%s (%s) gave no answer to CONNECT: %s", p->host,
			         p->port, p->var, r == 0 ? "the connection was closed" : why);
			return -1;
		}
		got += (size_t)r;
		head[got] = '\0';
		/* Interim answers (100 Continue...) before it are set aside, in
		 * head's 4 KiB with it. */
		ans = head + interim_len(head, got, NULL);
		end = strstr(ans, "\r\n\r\n");
	}
	if (!end || strncmp(ans, "HTTP/1.", 7) != 0 || (size_t)(head + got - ans) < 12 ||
	    ans[8] != ' ') {
		snprintf(err, errlen, "the proxy %s:%s (%s) gave no HTTP answer to CONNECT", p->host,
		         p->port, p->var);
		return -1;
	}
	if (ans[9] != '2') {
		char *eol = strstr(ans, "\r\n");
		*eol = '\0';
		for (char *q = ans; *q; q++)
			if ((unsigned char)*q < 0x20 || (unsigned char)*q >= 0x7f)
				*q = '?';
		snprintf(err, errlen, "the proxy %s:%s (%s) refused the tunnel to %s:%s: %s", p->host,
		         p->port, p->var, host, port, ans + 9);
		return -1;
	}
	if (end + 4 != head + got) {
		snprintf(err, errlen, "the proxy %s:%s (%s) sent bytes after its answer to CONNECT",
		         p->host, p->port, p->var);
		return -1;
	}
	return 0;
}

/* The environment's proxies ([0] plain HTTP, [1] HTTPS), read once: they
 * do not change while evhostd runs (host.c refuses a malformed one at
 * start). */
static pthread_once_t env_once = PTHREAD_ONCE_INIT;
static httpc_proxy env_proxy[2];
static int env_rc[2];
static char env_err[2][512];

static void read_env_proxy(void)
{
	for (int tls = 0; tls < 2; tls++)
		env_rc[tls] = httpc_proxy_get(&env_proxy[tls], tls, env_err[tls], sizeof env_err[tls]);
}

int httpc_open(httpc_conn *c, const char *host, const char *port, void *tls, int64_t deadline,
               char *err, size_t errlen)
{
	char why[256];
	int v6 = strchr(host, ':') != NULL, via = 0, t = tls != NULL, r = -1;
	const httpc_proxy *p = &env_proxy[t];
	c->tls = NULL;
	c->proxy = NULL;
	c->fd = -1;
	if (!loopback_host(host)) {
		pthread_once(&env_once, read_env_proxy);
		if (env_rc[t] < 0) {
			snprintf(err, errlen, "%s", env_err[t]);
			return -1;
		}
		via = env_rc[t] == 0 && !httpc_proxy_bypassed(p, host, port);
	}
	if (via) {
		if ((c->fd = connect_to(p->host, p->port, deadline, why, sizeof why)) < 0) {
			snprintf(err, errlen, "the proxy (%s): %s", p->var, why);
			return -1;
		}
		if (!tls) {
			c->proxy = p;
			return 0;
		}
		if (tunnel(c, p, host, port, deadline, err, errlen) != 0) {
			httpc_close(c);
			return -1;
		}
	} else if ((c->fd = connect_to(host, port, deadline, err, errlen)) < 0) {
		return -1;
	}
	if (tls && (!(c->tls = tls_conn_new(tls, c->fd, host, why, sizeof why)) ||
	            (r = tls_step(c, EVHOST_TLS_HANDSHAKE, NULL, 0, deadline, why, sizeof why)) <
	                0)) {
		snprintf(err, errlen, "TLS with %s%s%s:%s failed: %s", v6 ? "[" : "", host,
		         v6 ? "]" : "", port, why);
		httpc_close(c);
		return r == EVHOST_TLS_CERT_REFUSED ? -2 : -1;
	}
	return 0;
}

int httpc_send_head(httpc_conn *c, const char *method, const char *host, const char *port,
                    const char *target, const char *rest, int64_t deadline, char *err,
                    size_t errlen)
{
	return send_head(c, method, host, port, target,
	                 c->proxy && *c->proxy->auth ? c->proxy->auth : NULL, rest, deadline, err,
	                 errlen);
}

int httpc_send(httpc_conn *c, const char *p, size_t n, int64_t deadline, char *err,
               size_t errlen)
{
	while (n) {
		ssize_t w;
		if (c->tls) {
			if ((w = tls_step(c, EVHOST_TLS_WRITE, (void *)p, n, deadline, err, errlen)) < 0)
				return -1;
		} else if ((w = send(c->fd, p, n, MSG_NOSIGNAL)) <= 0) {
			int r;
			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
				if ((r = wait_fd(c->fd, POLLOUT, deadline)) > 0)
					continue;
				snprintf(err, errlen, "%s", r == 0 ? "timed out" : strerror(errno));
			} else {
				snprintf(err, errlen, "%s", w == 0 ? "nothing sent" : strerror(errno));
			}
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* One read into buf[0..n): the bytes read, 0 at the close, -1 with the
 * reason in err. In TLS 1.3 a server refusing the client's certificate
 * says so here, after the handshake. */
static ssize_t read_some(httpc_conn *c, char *buf, size_t n, int64_t deadline, char *err,
                         size_t errlen)
{
	for (;;) {
		ssize_t r;
		int w;
		if (c->tls)
			return tls_step(c, EVHOST_TLS_READ, buf, n, deadline, err, errlen);
		r = recv(c->fd, buf, n, 0);
		if (r >= 0)
			return r;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK) {
			snprintf(err, errlen, "%s", strerror(errno));
			return -1;
		}
		if ((w = wait_fd(c->fd, POLLIN, deadline)) <= 0) {
			snprintf(err, errlen, "%s", w == 0 ? "timed out" : strerror(errno));
			return -1;
		}
	}
}

/* Read into buf (n bytes, NUL-terminated) until it is full, the peer
 * closes, the deadline passes or `done` (NULL: never) says the answer is
 * whole. */
static size_t recv_until(httpc_conn *c, char *buf, size_t n, int64_t deadline, char *err,
                         size_t errlen, int (*done)(const char *, size_t))
{
	size_t got = 0;
	snprintf(err, errlen, "the connection was closed");
	while (got < n - 1) {
		ssize_t r = read_some(c, buf + got, n - 1 - got, deadline, err, errlen);
		if (r <= 0)
			break;
		got += (size_t)r;
		buf[got] = '\0';
		if (done && done(buf, got))
			break;
	}
	buf[got] = '\0';
	return got;
}

size_t httpc_recv(httpc_conn *c, char *buf, size_t n, int64_t deadline, char *err,
                  size_t errlen)
{
	return recv_until(c, buf, n, deadline, err, errlen, NULL);
}

/* Has the chunked body p[0..n) come whole: every chunk, the last one and
 * the trailers' end? Walked chunk by chunk as dechunk reads it, for a
 * chunk's data may hold what looks like the last chunk ("\r\n0\r\n\r\n"):
 * taken for the end, the rest of the answer was not read. A malformed body
 * is not whole: the close ends it, and httpc_parse_answer says why. */
static int chunked_complete(const char *p, size_t n)
{
	size_t r = 0;
	for (;;) {
		size_t size = 0, digits = 0;
		while (r < n && isxdigit((unsigned char)p[r]) && digits < 16) {
			int c = (unsigned char)p[r++];
			size = size * 16 + (size_t)(isdigit(c) ? c - '0' : (tolower(c) - 'a' + 10));
			digits++;
		}
		if (!digits || (r < n && isxdigit((unsigned char)p[r])))
			return 0;
		while (r < n && p[r] != '\r' && p[r] != '\n') /* chunk extensions */
			r++;
		if (r + 1 >= n || p[r] != '\r' || p[r + 1] != '\n')
			return 0;
		r += 2;
		if (size == 0) /* then trailers, if any, up to a blank line */
			return memmem(p + r - 2, n - r + 2, "\r\n\r\n", 4) != NULL;
		if (size > n - r || n - r - size < 2 || p[r + size] != '\r' || p[r + size + 1] != '\n')
			return 0;
		r += size + 2;
	}
}

/* The interim answers (1xx) at the start of buf[0..n), which a client
 * reads and sets aside before the final one, even unasked (RFC 9110, 15.2;
 * RFC 9112, 6.3): 100 Continue, 102, 103 Early Hints..., each a status
 * line and header fields up to a blank line, never a body. Their length,
 * their number in *count (count NULL: not wanted). They end at what is not
 * one: a final answer, a 1xx head not yet whole, or 101 Switching
 * Protocols, which ends the answer (evhost never asks to switch: the
 * callers say so). Bounded as the answer is: by the caller's buffer (or
 * httpc_recv_all's max) and deadline, which interim answers count in. */
static size_t interim_len(const char *buf, size_t n, int *count)
{
	size_t off = 0;
	int k = 0;
	for (;;) {
		int status = httpc_status(buf + off, n - off);
		const char *end;
		if (status < 100 || status > 199 || status == 101 ||
		    !(end = memmem(buf + off, n - off, "\r\n\r\n", 4)))
			break;
		off = (size_t)(end + 4 - buf);
		k++;
	}
	if (count)
		*count = k;
	return off;
}

/* Has buf[0..n) (NUL-terminated) a whole answer: after its interim ones,
 * its head and the body its Content-Length gives, or a chunked body up to
 * its last chunk and trailers, or no body (101, 204, 304)? Without either
 * header the body ends at the close: not yet. */
static int answer_complete(const char *buf, size_t n)
{
	size_t skip = interim_len(buf, n, NULL);
	const char *end = memmem(buf + skip, n - skip, "\r\n\r\n", 4), *line;
	size_t body, cl = 0;
	int status = httpc_status(buf + skip, n - skip), has_cl = 0, chunked = 0;
	if (!end || status < 0)
		return 0;
	if (status < 200 || status == 204 || status == 304)
		return 1; /* 101: the read ends, httpc_recv_answer says why */
	buf += skip;
	n -= skip;
	body = (size_t)(end + 4 - buf);
	for (line = (const char *)memchr(buf, '\n', n) + 1; line < end + 2;) {
		const char *eol = memmem(line, (size_t)(end + 2 - line), "\r\n", 2), *v;
		size_t vlen;
		if ((v = header_value(line, (size_t)(eol - line), "Content-Length", &vlen))) {
			char *stop;
			unsigned long long val = strtoull(v, &stop, 10);
			if (!vlen || !isdigit((unsigned char)*v) || stop != v + vlen)
				return 0; /* malformed: the close ends it, httpc_parse_answer says why */
			cl = (size_t)val;
			has_cl = 1;
		} else if ((v = header_value(line, (size_t)(eol - line), "Transfer-Encoding", &vlen))) {
			chunked = 1;
		}
		line = eol + 2;
	}
	if (chunked)
		return chunked_complete(buf + body, n - body);
	return has_cl && n - body >= cl;
}

/* httpc_recv_answer's buf[0..got) (NUL-terminated; `full`: it filled the
 * buffer) with its interim answers set aside: the final answer moved to
 * buf's start, its length; or 0 (buf "") with the reason in err when there
 * is none: 101, or only interim answers (a 1xx head not yet whole, cut
 * by the close, the deadline or the buffer's end). */
static size_t final_answer(char *buf, size_t got, int full, char *err, size_t errlen)
{
	int count, status;
	size_t skip = interim_len(buf, got, &count), m;
	if (skip) {
		memmove(buf, buf + skip, got - skip + 1);
		got -= skip;
	}
	status = httpc_status(buf, got);
	if (status == 101) {
		snprintf(err, errlen, "the server switched protocols (101 Switching Protocols), "
		                      "which was not asked for");
	} else if (full && (!got || (status >= 100 && status < 200))) {
		snprintf(err, errlen, "no final answer in the first %zu bytes, only interim (1xx) "
		                      "answers",
		         got + skip);
	} else if (count && (!got || (status >= 100 && status < 200)) &&
	           strcmp(err, "timed out") != 0 && (m = strlen(err)) + 1 < errlen) {
		/* "timed out" stays as it is: the callers name their deadline */
		snprintf(err + m, errlen - m, " after %d interim (1xx) answer%s", count,
		         count > 1 ? "s" : "");
	}
	if (status == 101 || (status >= 100 && status < 200) || (!got && count)) {
		buf[0] = '\0';
		return 0;
	}
	return got;
}

size_t httpc_recv_answer(httpc_conn *c, char *buf, size_t n, int64_t deadline, char *err,
                         size_t errlen)
{
	size_t got = recv_until(c, buf, n, deadline, err, errlen, answer_complete);
	return final_answer(buf, got, got == n - 1, err, errlen);
}

int httpc_status(const char *buf, size_t n)
{
	if (n < 12 || memcmp(buf, "HTTP/1.", 7) != 0 || !isdigit((unsigned char)buf[7]) ||
	    buf[8] != ' ' || buf[9] < '1' || buf[9] > '5' || !isdigit((unsigned char)buf[10]) ||
	    !isdigit((unsigned char)buf[11]) || (n > 12 && buf[12] != ' ' && buf[12] != '\r'))
		return -1;
	return (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
}

const char *httpc_header(const char *buf, size_t n, const char *name, size_t *vlen)
{
	const char *end = memmem(buf, n, "\r\n\r\n", 4), *line;
	if (!end || !(line = memchr(buf, '\n', n)))
		return NULL;
	for (line++; line < end + 2;) {
		const char *eol = memmem(line, (size_t)(end + 2 - line), "\r\n", 2), *v;
		if ((v = header_value(line, (size_t)(eol - line), name, vlen)))
			return v;
		line = eol + 2;
	}
	return NULL;
}

int32_t httpc_retry_after(const char *buf, size_t n)
{
	size_t vlen;
	const char *v = httpc_header(buf, n, "Retry-After", &vlen);
	int64_t s = 0;
	if (!v || !vlen)
		return -1;
	for (size_t i = 0; i < vlen; i++) {
		if (!isdigit((unsigned char)v[i]))
			return -1; /* the HTTP-date form, or nonsense */
		if (s < INT32_MAX)
			s = s * 10 + (v[i] - '0');
	}
	return s < INT32_MAX ? (int32_t)s : INT32_MAX;
}

int httpc_recv_all(httpc_conn *c, size_t max, int64_t deadline, char **out, size_t *len,
                   char *err, size_t errlen)
{
	size_t cap = 16384 < max ? 16384 : max, got = 0;
	char *buf = malloc(cap + 1), *bigger;
	int rc = 0;
	*out = NULL;
	*len = 0;
	if (!buf) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (;;) {
		ssize_t r;
		if (got == cap) {
			if (cap == max) {
				rc = 1;
				break;
			}
			cap = cap * 2 < max ? cap * 2 : max;
			if (!(bigger = realloc(buf, cap + 1))) {
				free(buf);
				snprintf(err, errlen, "out of memory");
				return -1;
			}
			buf = bigger;
		}
		r = read_some(c, buf + got, cap - got, deadline, err, errlen);
		if (r < 0) {
			rc = -1;
			break;
		}
		if (r == 0)
			break;
		got += (size_t)r;
		buf[got] = '\0';
		/* The answer's end, not the close: a server may keep the
		 * connection open, whatever the request's Connection: close. */
		if (answer_complete(buf, got))
			break;
	}
	buf[got] = '\0';
	*out = buf;
	*len = got;
	return rc;
}

void httpc_close(httpc_conn *c)
{
	tls_conn_free(c->tls);
	c->tls = NULL;
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}

/* ------------------------------------------------------ the answer */

/* A header line's value if its name is `name` (case-insensitive), with
 * spaces around it trimmed into *vlen; else NULL. */
static const char *header_value(const char *line, size_t n, const char *name, size_t *vlen)
{
	size_t k = strlen(name);
	const char *v, *end = line + n;
	if (n <= k || strncasecmp(line, name, k) != 0 || line[k] != ':')
		return NULL;
	v = line + k + 1;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	*vlen = (size_t)(end - v);
	return v;
}

/* Decode the chunked body at p[0..n) where it lies: its length, or -1. */
static int dechunk(char *p, size_t n, size_t *out, char *err, size_t errlen)
{
	size_t r = 0, w = 0;
	while (r < n) {
		size_t size = 0, digits = 0;
		while (r < n && isxdigit((unsigned char)p[r]) && digits < 16) {
			int c = (unsigned char)p[r];
			size = size * 16 + (size_t)(isdigit(c) ? c - '0' : (tolower(c) - 'a' + 10));
			r++;
			digits++;
		}
		if (!digits || (r < n && isxdigit((unsigned char)p[r]))) {
			snprintf(err, errlen, "a malformed chunked body (chunk size at byte %zu)", r);
			return -1;
		}
		while (r < n && p[r] != '\r' && p[r] != '\n') /* chunk extensions: ignored */
			r++;
		if (r + 1 >= n || p[r] != '\r' || p[r + 1] != '\n')
			break;
		r += 2;
		if (size == 0) {
			*out = w;
			return 0; /* trailers, if any, are not read */
		}
		if (size > n - r || n - r - size < 2)
			break;
		if (p[r + size] != '\r' || p[r + size + 1] != '\n') {
			snprintf(err, errlen, "a malformed chunked body (no line end after a chunk)");
			return -1;
		}
		memmove(p + w, p + r, size);
		w += size;
		r += size + 2;
	}
	snprintf(err, errlen, "the chunked body ended before its last chunk");
	return -1;
}

int httpc_parse_answer(char *buf, size_t n, httpc_answer *a, char *err, size_t errlen)
{
	char *head_end, *line, *body;
	size_t rest, cl = 0, skip;
	int has_cl = 0, chunked = 0, interim, st;

	memset(a, 0, sizeof *a);
	skip = interim_len(buf, n, &interim);
	buf += skip;
	n -= skip;
	st = httpc_status(buf, n);
	if (interim && (!n || (st >= 100 && st < 200 && st != 101))) { /* a head cut short */
		snprintf(err, errlen, "no final answer after %d interim (1xx) answer%s", interim,
		         interim > 1 ? "s" : "");
		return -1;
	}
	if (n < 12 || memcmp(buf, "HTTP/1.", 7) != 0 || !isdigit((unsigned char)buf[7]) ||
	    buf[8] != ' ' || buf[9] < '1' || buf[9] > '9' || !isdigit((unsigned char)buf[10]) ||
	    !isdigit((unsigned char)buf[11]) || (n > 12 && buf[12] != ' ' && buf[12] != '\r')) {
		snprintf(err, errlen, "no HTTP answer%s", interim ? " after the interim (1xx) ones" : "");
		return -1;
	}
	a->status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
	if (a->status == 101) {
		snprintf(err, errlen, "the server switched protocols (101 Switching Protocols), "
		                      "which was not asked for");
		return -1;
	}
	head_end = memmem(buf, n, "\r\n\r\n", 4);
	if (!head_end) {
		snprintf(err, errlen, "the answer's head ended before its blank line");
		return -1;
	}
	line = (char *)memchr(buf, '\n', (size_t)(head_end + 2 - buf)) + 1;
	while (line < head_end + 2) {
		char *eol = memmem(line, (size_t)(head_end + 2 - line), "\r\n", 2);
		size_t len = (size_t)(eol - line), vlen;
		const char *v;
		if ((v = header_value(line, len, "Content-Length", &vlen))) {
			size_t val = 0, i;
			for (i = 0; i < vlen && isdigit((unsigned char)v[i]) && val < ((size_t)1 << 48); i++)
				val = val * 10 + (size_t)(v[i] - '0');
			if (!vlen || i != vlen || (has_cl && val != cl)) {
				snprintf(err, errlen, "a bad Content-Length: '%.*s'", vlen > 40 ? 40 : (int)vlen,
				         v);
				return -1;
			}
			cl = val;
			has_cl = 1;
		} else if ((v = header_value(line, len, "Transfer-Encoding", &vlen))) {
			if (vlen != 7 || strncasecmp(v, "chunked", 7) != 0) {
				snprintf(err, errlen, "Transfer-Encoding '%.*s' is not supported",
				         vlen > 40 ? 40 : (int)vlen, v);
				return -1;
			}
			chunked = 1;
		} else if ((v = header_value(line, len, "Location", &vlen))) {
			/* For the log: bytes other than printable ASCII as '?'. */
			size_t i;
			for (i = 0; i < vlen && i + 1 < sizeof a->location; i++)
				a->location[i] = v[i] > 0x20 && v[i] < 0x7f ? v[i] : '?';
			a->location[i] = '\0';
		}
		line = eol + 2;
	}
	body = head_end + 4;
	rest = n - (size_t)(body - buf);
	a->body = body;
	if (chunked)
		return dechunk(body, rest, &a->body_len, err, errlen);
	if (has_cl && rest < cl) {
		snprintf(err, errlen, "the answer ended after %zu of %zu bytes", rest, cl);
		return -1;
	}
	a->body_len = has_cl ? cl : rest;
	return 0;
}
