/* bench_civetweb: a bare civetweb server for scripts/bench that answers every
 * GET with the same bytes evhostd sent for GET /crud/products/{id}: the
 * status, the headers (one "Name: value" per line in HEADERS_FILE, in that
 * order; then Content-Length, Date and Connection) and the body in BODY_FILE,
 * all held in memory. It uses the civetweb options evhostd's http.c uses
 * (tcp_nodelay=1 among them) and writes the answer the way evhostd does: the
 * head and a small body in one mg_write, one send(). -o NAME=VALUE sets any
 * other civetweb option.
 *
 *   bench_civetweb -l 127.0.0.1:PORT -t THREADS -H HEADERS_FILE -B BODY_FILE
 *                  [-o NAME=VALUE]...
 *
 * Runs until SIGINT or SIGTERM. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <civetweb.h>

#define MAX_HEADERS 32
#define MAX_FILE (1 << 20)
#define MAX_OPTIONS 32 /* name and value slots, NULL-terminated */

struct reply {
	char *body;
	size_t body_len;
	char *names[MAX_HEADERS], *values[MAX_HEADERS];
	size_t nheaders;
};

static char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	size_t n;
	if (!f) {
		fprintf(stderr, "bench_civetweb: %s: %s\n", path, strerror(errno));
		return NULL;
	}
	buf = malloc(MAX_FILE + 1);
	n = buf ? fread(buf, 1, MAX_FILE, f) : 0;
	fclose(f);
	if (!buf)
		return NULL;
	buf[n] = '\0';
	*len = n;
	return buf;
}

/* Split "Name: value" lines in place. */
static int parse_headers(struct reply *r, char *text)
{
	char *save = NULL;
	for (char *line = strtok_r(text, "\r\n", &save); line;
	     line = strtok_r(NULL, "\r\n", &save)) {
		char *colon = strchr(line, ':');
		if (!colon) {
			fprintf(stderr, "bench_civetweb: header line without ':': %s\n", line);
			return -1;
		}
		if (r->nheaders == MAX_HEADERS) {
			fprintf(stderr, "bench_civetweb: more than %d headers\n", MAX_HEADERS);
			return -1;
		}
		*colon++ = '\0';
		while (*colon == ' ')
			colon++;
		r->names[r->nheaders] = line;
		r->values[r->nheaders++] = colon;
	}
	return 0;
}

/* The whole answer in one send(), as evhostd's http.c writes small ones:
 * status line, the headers, Content-Length, Date (formatted once a second
 * per thread), Connection, then the body. */
static int handle(struct mg_connection *c, void *ud)
{
	static __thread time_t last = -1;
	static __thread char date[40];
	const struct reply *r = ud;
	char *buf;
	size_t len = 0, cap = r->body_len + 4096;
	time_t now = time(NULL);

	if (now != last) {
		struct tm tm;
		gmtime_r(&now, &tm);
		strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
		last = now;
	}
	buf = malloc(cap);
	if (!buf)
		return 500;
	len += (size_t)snprintf(buf + len, cap - len, "HTTP/1.1 200 OK\r\n");
	for (size_t i = 0; i < r->nheaders && len < cap; i++)
		len += (size_t)snprintf(buf + len, cap - len, "%s: %s\r\n", r->names[i], r->values[i]);
	if (len < cap)
		len += (size_t)snprintf(buf + len, cap - len,
		                        "Content-Length: %zu\r\nDate: %s\r\n"
		                        "Connection: keep-alive\r\n\r\n",
		                        r->body_len, date);
	if (len + r->body_len > cap) {
		free(buf);
		return 500;
	}
	memcpy(buf + len, r->body, r->body_len);
	mg_write(c, buf, len + r->body_len);
	free(buf);
	return 200;
}

/* Serve until SIGINT or SIGTERM. */
static int serve(const char **opts, struct reply *r)
{
	struct mg_context *ctx;
	sigset_t stop;
	int sig;
	/* Blocked before civetweb starts its threads, so only sigwait sees them. */
	sigemptyset(&stop);
	sigaddset(&stop, SIGINT);
	sigaddset(&stop, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &stop, NULL);
	mg_init_library(0);
	ctx = mg_start(NULL, NULL, opts);
	if (!ctx) {
		fprintf(stderr, "bench_civetweb: cannot start civetweb on %s\n", opts[1]);
		mg_exit_library();
		return 1;
	}
	mg_set_request_handler(ctx, "/", handle, r);
	fprintf(stderr, "bench_civetweb: civetweb %s on %s\n", mg_version(), opts[1]);
	sigwait(&stop, &sig);
	mg_stop(ctx);
	mg_exit_library();
	return 0;
}

/* Append NAME=VALUE (split in place) to the option list; a later value of
 * the same name wins in civetweb. */
static int add_option(const char **opts, size_t *n, char *arg)
{
	char *eq = strchr(arg, '=');
	if (!eq || eq == arg) {
		fprintf(stderr, "bench_civetweb: -o wants NAME=VALUE, got '%s'\n", arg);
		return -1;
	}
	if (*n + 3 > MAX_OPTIONS) {
		fprintf(stderr, "bench_civetweb: too many -o options\n");
		return -1;
	}
	*eq = '\0';
	opts[(*n)++] = arg;
	opts[(*n)++] = eq + 1;
	opts[*n] = NULL;
	return 0;
}

int main(int argc, char **argv)
{
	const char *opts[MAX_OPTIONS] = {"listening_ports", NULL, "num_threads", "8",
	                                 "request_timeout_ms", "30000", "enable_keep_alive", "yes",
	                                 "decode_url", "no", "tcp_nodelay", "1", NULL};
	size_t nopts = 12;
	const char *hfile = NULL, *bfile = NULL;
	struct reply r;
	char *htext = NULL;
	size_t hlen;
	int c, rc = 1;
	memset(&r, 0, sizeof r);
	while ((c = getopt(argc, argv, "l:t:H:B:o:")) != -1) {
		switch (c) {
		case 'l': opts[1] = optarg; break;
		case 't': opts[3] = optarg; break;
		case 'H': hfile = optarg; break;
		case 'B': bfile = optarg; break;
		case 'o':
			if (add_option(opts, &nopts, optarg))
				return 2;
			break;
		default: goto usage;
		}
	}
	if (!opts[1] || !hfile || !bfile)
		goto usage;
	if ((htext = read_file(hfile, &hlen)) && !parse_headers(&r, htext) &&
	    (r.body = read_file(bfile, &r.body_len)))
		rc = serve(opts, &r);
	free(htext);
	free(r.body);
	return rc;
usage:
	fprintf(stderr, "usage: bench_civetweb -l ADDR:PORT -t THREADS -H HEADERS_FILE "
	                "-B BODY_FILE [-o NAME=VALUE]...\n");
	return 2;
}
