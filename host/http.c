/* The HTTP server: one civetweb request handler for every path dispatches to
 * the host's own routes (/healthz, /readyz) and then, through the router, to
 * plugin handlers. The host enforces what every plugin would otherwise have
 * to get right: body limits, JSON well-formedness and depth, bearer tokens
 * and roles, problem+json errors and a request id on every answer.
 *
 * Route lifetime: a route record is referenced by the router (as target)
 * and by every request currently using it. Lookups take routes_lock for
 * reading while they take a reference; removal takes it for writing, so once
 * a plugin's routes are out of the router no new reference appears, and
 * http_remove_plugin_routes then waits for the old ones to drop.
 *
 * A plugin restarted by a reload leaves placeholders in its routes' places
 * (http_hold_plugin_routes): they answer 503 "restarting" until a route of
 * the same method and shape replaces them, or the reload ends. */
#define _GNU_SOURCE
#include "http.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <civetweb.h>
#include <cjson/cJSON.h>
#include <sodium.h>

#include "admin.h"
#include "clock.h"
#include "crash.h"
#include "events.h"
#include "json.h"
#include "jwt.h"
#include "jwksfetch.h"
#include "log.h"
#include "metrics.h"
#include "proxy.h"
#include "revoke.h"
#include "router.h"
#include "store.h"
#include "stream.h"
#include "http_syntax.h"
#include "tls_compat.h"
#include "toobig.h"
#include "trace.h"

#define HTTP_PROBLEM_BASE "https://evhost.dev/problems/"
#define HTTP_REQUEST_ID_MAX 64
/* How often an open stream's token is checked again with the keys in force
 * (stream_token_ended): a key taken out ends its streams within this. */
#define STREAM_TOKEN_RECHECK_MS 5000
#define HTTP_RESP_MAX_HEADERS 64
#define HTTP_DEFAULT_MAX_BODY (1024 * 1024)
#define HTTP_DEFAULT_JSON_DEPTH 32
#define HTTP_REQUEST_TIMEOUT_MS 10000 /* when settings do not say ([http] request_timeout) */
#define HTTP_KEEP_ALIVE_MS 500 /* ... [http] keep_alive_timeout: civetweb's own default */
#define HTTP_MAX_HEAD 16384 /* ... [http] max_head_bytes (civetweb's max_request_size) */
#define HTTP_CHUNK 16384
#define HTTP_DRAIN_WARN_S 5
#define HTTP_STREAM_RETRY_AFTER "5" /* seconds, when max_streams are open */
#define HTTP_FULL_RETRY_AFTER "30"  /* seconds, when a plugin's database is full */
#define HTTP_OUTBOX_RETRY_AFTER "5" /* seconds, when a plugin's outbox is at its bound */
#define LISTEN_MAX 256 /* civetweb's listening_ports: both listeners */

struct http_server {
	host *h;
	struct mg_context *ctx;
	char listen[LISTEN_MAX];
	atomic_int starting;     /* civetweb messages go to start_error meanwhile */
	atomic_int routing;      /* handlers are set: begin_request lets requests through */
	char start_error[256];   /* first civetweb message while starting */
	int keep_alive;          /* [http] keep_alive_timeout is not 0 (off), as started */
	int max_head;            /* [http] max_head_bytes, as started */
	atomic_int warned_no_secret;
	_Atomic int64_t warned_kid_ms; /* the last "unknown kid" warning (clock_mono_ms) */
	/* At a stop, requests that came before it are answered before civetweb
	 * stops (after mg_stop every write fails); later ones get a 503. */
	atomic_int stopping;
	atomic_int inflight; /* in handle_request now; drain_cv is signalled at 0 */
	/* civetweb's threads that came up (worker_thread_init): civetweb 1.15
	 * goes on when it cannot create one, the accept thread too (the
	 * process's thread limit), and would serve nothing while "ready". */
	atomic_int masters, workers;
};

/* A route as registered: the public http_route first, so the router's
 * target pointer converts back to the record. */
typedef struct route_rec {
	http_route pub;
	host *h;
	char *held; /* a placeholder: the name of the plugin restarting (pub.plugin is NULL) */
	atomic_int refs; /* requests currently using this route */
	struct route_rec *next;
} route_rec;

static pthread_rwlock_t routes_lock = PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP;
static route_rec *routes_head; /* every registered route, all hosts */
static pthread_mutex_t drain_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t drain_cv = PTHREAD_COND_INITIALIZER; /* monotonic once drain_cv_ready() */
static pthread_once_t drain_cv_once = PTHREAD_ONCE_INIT;

static void drain_cv_init(void) { clock_cond_init(&drain_cv); }

/* drain_cv on the monotonic clock, once: by http_start, before any request
 * signals it, or by the first wait (a router's routes drained without a
 * server, as unit tests do). */
static void drain_cv_ready(void) { pthread_once(&drain_cv_once, drain_cv_init); }

struct evh_request {
	struct mg_connection *conn;
	const struct mg_request_info *ri;
	const char *method;
	const char *path;
	char id[HTTP_REQUEST_ID_MAX + 1];
	route_match m;
	char *body;
	size_t body_len;
	int body_read;
	int expect_continue; /* Expect: 100-continue, and the 100 not sent yet */
	int query_parsed;
	int query_bad; /* a pair's percent-encoding is broken (read as absent) */
	size_t nquery;
	char **qkeys, **qvalues;
	int authed;
	jwt_claims claims;
	metrics_series *metrics; /* its route's series; NULL: unmatched */
	evh_plugin *plugin;      /* the matched route's plugin, while its handler runs */
	trace_span *span;        /* the request's span (trace.h) */
	char client[PROXY_ADDR_LEN]; /* the client's address (client_address) */
	int forwarded;           /* ... from a trusted proxy's X-Forwarded-For */
	/* Header values as plugins are given them where civetweb's differ
	 * (http_req_header): name and value, each allocated; at most one per
	 * header line the request has. */
	size_t nhvals;
	char *hname[MG_MAX_HEADERS], *hvalue[MG_MAX_HEADERS];
};

struct evh_response {
	evh_request *req;
	int status;
	int filled; /* status or body set */
	int body_lost;   /* the last body set could not be kept (out of memory) */
	int header_lost; /* a header could not be kept (out of memory) */
	char *ctype;
	char *body;
	size_t body_len;
	size_t nheaders;
	char *hname[HTTP_RESP_MAX_HEADERS];
	char *hvalue[HTTP_RESP_MAX_HEADERS];
	int close; /* request body left unread: do not keep the connection */
	stream *stream; /* evh_resp_stream: served by stream_serve after dispatch */
	/* A 401 or 403 problem's detail, for the access log: why the client
	 * was refused (the host's token checks, a plugin's login). */
	char refusal[128];
};

/* ------------------------------------------------------------- helpers */

static const char *reason_phrase(int status)
{
	switch (status) {
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 204: return "No Content";
	case 304: return "Not Modified";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 406: return "Not Acceptable";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 410: return "Gone";
	case 411: return "Length Required";
	case 412: return "Precondition Failed";
	case 413: return "Content Too Large";
	case 414: return "URI Too Long";
	case 415: return "Unsupported Media Type";
	case 417: return "Expectation Failed";
	case 422: return "Unprocessable Content";
	case 428: return "Precondition Required";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	case 505: return "HTTP Version Not Supported";
	default: return status >= 500 ? "Server Error" : status >= 400 ? "Client Error" : "OK";
	}
}

static const char *status_slug(int status)
{
	switch (status) {
	case 400: return "bad-request";
	case 404: return "not-found";
	case 405: return "method-not-allowed";
	case 408: return "request-timeout";
	case 411: return "length-required";
	case 413: return "payload-too-large";
	case 414: return "uri-too-long";
	case 417: return "expectation-failed";
	case 431: return "headers-too-large";
	case 501: return "not-implemented";
	case 503: return "unavailable";
	case 505: return "http-version-not-supported";
	default: return status >= 500 ? "internal" : "bad-request";
	}
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* Percent-decode [s, s+n) into a new string; '+' is a space (query strings
 * are form-encoded). NULL on a bad escape or an encoded NUL, or out of
 * memory (*oom set). */
static char *form_decode(const char *s, size_t n, int *oom)
{
	char *out = malloc(n + 1), *w = out;
	if (!out) {
		*oom = 1;
		return NULL;
	}
	for (size_t i = 0; i < n; i++) {
		int hi, lo;
		if (s[i] == '+') {
			*w++ = ' ';
			continue;
		}
		if (s[i] != '%') {
			*w++ = s[i];
			continue;
		}
		if (i + 2 >= n) {
			free(out);
			return NULL;
		}
		hi = router_hexval(s[i + 1]);
		lo = router_hexval(s[i + 2]);
		if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
			free(out);
			return NULL;
		}
		*w++ = (char)(hi * 16 + lo);
		i += 2;
	}
	*w = '\0';
	return out;
}

static int header_name_ok(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	return n && http_token_len(s, n) == n;
}

static int header_value_ok(const char *s) { return s && http_value_ok(s, strlen(s)); }

/* ---------------------------------------------------------- responses */

static void resp_reset_body(evh_response *resp)
{
	free(resp->ctype);
	free(resp->body);
	resp->ctype = NULL;
	resp->body = NULL;
	resp->body_len = 0;
}

static void resp_free(evh_response *resp)
{
	resp_reset_body(resp);
	for (size_t i = 0; i < resp->nheaders; i++) {
		free(resp->hname[i]);
		free(resp->hvalue[i]);
	}
	resp->nheaders = 0;
	stream_release(resp->stream);
	resp->stream = NULL;
}

void http_resp_status(evh_response *resp, int status)
{
	if (!resp)
		return;
	resp->status = status;
	resp->filled = 1;
}

int http_resp_header(evh_response *resp, const char *name, const char *value)
{
	char *n, *v;
	if (!resp || !header_name_ok(name) || !header_value_ok(value))
		return EVH_EINVAL;
	/* The host writes these itself: a second copy would corrupt framing
	 * (Content-Length, Transfer-Encoding, Connection), or give the client
	 * two request ids to quote, or two dates. */
	if (!strcasecmp(name, "Content-Length") || !strcasecmp(name, "Transfer-Encoding") ||
	    !strcasecmp(name, "Connection") || !strcasecmp(name, "X-Request-Id") ||
	    !strcasecmp(name, "Date"))
		return EVH_EINVAL;
	if (!strcasecmp(name, "Content-Type")) {
		v = strdup(value);
		if (!v) {
			resp->header_lost = 1;
			return EVH_ENOMEM;
		}
		free(resp->ctype);
		resp->ctype = v;
		return EVH_OK;
	}
	if (resp->nheaders == HTTP_RESP_MAX_HEADERS) {
		toobig_note(TOOBIG_HEADERS); /* the plugin's, not its client's */
		return EVH_ETOOBIG;
	}
	n = strdup(name);
	v = strdup(value);
	if (!n || !v) {
		free(n);
		free(v);
		resp->header_lost = 1;
		return EVH_ENOMEM;
	}
	resp->hname[resp->nheaders] = n;
	resp->hvalue[resp->nheaders++] = v;
	return EVH_OK;
}

int http_resp_body(evh_response *resp, const char *content_type, const void *body, size_t len)
{
	char *ct = NULL, *b;
	if (!resp || (len && !body))
		return EVH_EINVAL;
	/* No object is that long: a negative count (a failed read's -1) cast
	 * to size_t, whose len + 1 would wrap to an allocation of 0. */
	if (len > PTRDIFF_MAX) {
		log_error("http", "evh_resp_body: a body of %zu bytes is no length (a negative "
		                  "count?): refused",
		          len);
		return EVH_EINVAL;
	}
	if (content_type && !header_value_ok(content_type))
		return EVH_EINVAL;
	if (content_type && !(ct = strdup(content_type))) {
		resp->body_lost = 1;
		return EVH_ENOMEM;
	}
	b = malloc(len + 1);
	if (!b) {
		free(ct);
		resp->body_lost = 1;
		return EVH_ENOMEM;
	}
	if (len)
		memcpy(b, body, len);
	b[len] = '\0';
	resp_reset_body(resp);
	resp->ctype = ct;
	resp->body = b;
	resp->body_len = len;
	resp->body_lost = 0;
	resp->filled = 1;
	return EVH_OK;
}

static char *problem_type(const char *type)
{
	char *s;
	if (!type || !*type)
		return strdup("about:blank");
	if (strchr(type, ':')) /* already a URI */
		return strdup(type);
	if (asprintf(&s, HTTP_PROBLEM_BASE "%s", type) < 0)
		return NULL;
	return s;
}

/* Add `s` to `o` as member `name`, its bytes that are not UTF-8 (a
 * request's path decoded from %ff, a plugin's text) as U+FFFD: the answer
 * stays JSON a client can parse. 0, or -1 out of memory. */
static int add_text(cJSON *o, const char *name, const char *s)
{
	int oom = 0;
	char *clean = json_utf8_scrub(s, &oom);
	int ok = !oom && cJSON_AddStringToObject(o, name, clean ? clean : s) != NULL;
	free(clean);
	return ok ? 0 : -1;
}

int http_resp_problem(evh_response *resp, int status, const char *type, const char *title,
                      const char *detail, const char *field)
{
	return http_resp_problem_with(resp, status, type, title, detail, field, NULL);
}

int http_resp_problem_with(evh_response *resp, int status, const char *type, const char *title,
                           const char *detail, const char *field, struct cJSON *extra)
{
	cJSON *o;
	char *uri, *json = NULL;
	int rc = EVH_ENOMEM;
	if (!resp || status < 100 || status > 599) {
		cJSON_Delete(extra);
		return EVH_EINVAL;
	}
	uri = problem_type(type);
	o = cJSON_CreateObject();
	if (!uri || !o)
		goto out;
	if (add_text(o, "type", uri) || add_text(o, "title", title ? title : reason_phrase(status)) ||
	    !cJSON_AddNumberToObject(o, "status", status))
		goto out;
	if (detail && add_text(o, "detail", detail))
		goto out;
	/* A field that is not UTF-8 (a name decoded from %FF) names nothing the
	 * client sent: left out, where U+FFFD would name another. */
	if (field && json_utf8_error(field, strlen(field)) < 0 && add_text(o, "field", field))
		goto out;
	if (resp->req && resp->req->path && add_text(o, "instance", resp->req->path))
		goto out;
	while (extra && extra->child) {
		cJSON *m = cJSON_DetachItemViaPointer(extra, extra->child);
		if (!cJSON_AddItemToObject(o, m->string, m)) {
			cJSON_Delete(m);
			goto out;
		}
	}
	if ((status == 401 || status == 403) && detail)
		snprintf(resp->refusal, sizeof resp->refusal, "%s", detail);
	json = cJSON_PrintUnformatted(o);
	if (!json)
		goto out;
	rc = http_resp_body(resp, "application/problem+json", json, strlen(json));
out:
	if (rc != EVH_OK) {
		/* Out of memory: the status still goes out, without a body (a
		 * smaller answer, not another one). */
		resp_reset_body(resp);
		resp->body_lost = 0;
	}
	http_resp_status(resp, status);
	cJSON_Delete(o);
	cJSON_Delete(extra);
	free(uri);
	free(json);
	return rc;
}

/* A host-made problem; `detail` is printf-formatted. */
static void problem(evh_response *resp, int status, const char *slug, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void problem(evh_response *resp, int status, const char *slug, const char *fmt, ...)
{
	char detail[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(detail, sizeof detail, fmt, ap);
	va_end(ap);
	http_resp_problem(resp, status, slug, NULL, detail, NULL); /* sets the status anyway */
}

/* 205 has no content either (RFC 9110 15.3.6), but, unlike 204 and 304, a
 * client knows that only from its Content-Length: 0 (RFC 9112 6.3). */
static int status_has_body(int status)
{
	return status >= 200 && status != 204 && status != 205 && status != 304;
}

/* Is the header value `token` alone (any case, spaces around it)? */
static int token_is(const char *v, const char *token)
{
	size_t n = strlen(token);
	v += strspn(v, " \t");
	if (strncasecmp(v, token, n))
		return 0;
	v += n;
	return v[strspn(v, " \t")] == '\0';
}

/* Does the comma-separated header value contain `token` (any case)? */
static int header_has_token(const char *v, const char *token)
{
	size_t n = strlen(token);
	while (v && *v) {
		v += strspn(v, " \t,");
		if (!strncasecmp(v, token, n) && (v[n] == '\0' || v[n] == ',' || v[n] == ' ' ||
		                                   v[n] == '\t' || v[n] == ';'))
			return 1;
		v = strchr(v, ',');
	}
	return 0;
}

static int is_http10(const evh_request *req)
{
	return req->ri->http_version && !strcmp(req->ri->http_version, "1.0");
}

/* Will civetweb keep the connection after this response? Its own rule
 * (should_keep_alive in civetweb 1.15), so the Connection header we send
 * says what it will do: not when keep-alive is off ([http]
 * keep_alive_timeout = 0), after a 401, a Connection header without
 * keep-alive, an HTTP/1.0 request that did not ask for it, or a response
 * that must close. */
static int resp_keeps_alive(evh_request *req, evh_response *resp)
{
	const http_server *srv = mg_get_user_data(mg_get_context(req->conn));
	const char *conn, *version;
	if (!srv->keep_alive || resp->close || resp->status == 401 || !req->ri)
		return 0;
	conn = mg_get_header(req->conn, "Connection");
	version = req->ri->http_version ? req->ri->http_version : "1.1";
	if (conn)
		return header_has_token(conn, "keep-alive");
	return !strcmp(version, "1.1");
}

/* The Date header's value, formatted once a second per thread. */
static const char *http_date(void)
{
	static __thread time_t last = -1;
	static __thread char buf[40];
	time_t now = time(NULL);
	if (now != last) {
		struct tm tm;
		gmtime_r(&now, &tm);
		strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
		last = now;
	}
	return buf;
}

/* Response heads and small bodies go out in one send(): two sends cost two
 * trips through the (loopback) network stack and two wakeups of the client. */
#define RESP_ONE_SEND 16384

typedef struct headbuf {
	char *p;
	size_t len, cap;
	int failed;
	char local[RESP_ONE_SEND];
} headbuf;

static void hb_add(headbuf *b, const char *s, size_t n)
{
	if (b->failed)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = (b->len + n + 1) * 2;
		char *p = b->p == b->local ? malloc(cap) : realloc(b->p, cap);
		if (!p) {
			b->failed = 1;
			return;
		}
		if (b->p == b->local)
			memcpy(p, b->local, b->len);
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
}

static void hb_str(headbuf *b, const char *s) { hb_add(b, s, strlen(s)); }

static void hb_header(headbuf *b, const char *name, const char *value)
{
	hb_str(b, name);
	hb_add(b, ": ", 2);
	hb_str(b, value);
	hb_add(b, "\r\n", 2);
}

/* The answer when the response's head cannot be built (out of memory): a
 * 500 problem written from the stack, so the client is not left with a
 * connection closed without a word, and learns whether the handler had
 * carried the request out (its status below 400). */
static void send_bare_500(evh_request *req, int status)
{
	char body[256], head[192 + HTTP_REQUEST_ID_MAX + sizeof body];
	int nb, n;
	nb = snprintf(body, sizeof body,
	              "{\"type\":\"" HTTP_PROBLEM_BASE "internal\",\"title\":\"Internal Server "
	              "Error\",\"status\":500,\"detail\":\"out of memory writing the answer%s "
	              "(status %d)\"}",
	              status < 400 ? "; the request itself was carried out" : "", status);
	if (nb < 0 || (size_t)nb >= sizeof body)
		nb = 0;
	n = snprintf(head, sizeof head,
	             "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/problem+json\r\n"
	             "Content-Length: %d\r\nX-Request-Id: %s\r\nConnection: close\r\n\r\n%s",
	             nb, req->id, nb ? body : "");
	mg_disable_keep_alive(req->conn);
	log_error("http", "%s %s: out of memory writing the answer (status %d): answered 500",
	          req->method, req->path, status);
	if (n > 0 && (size_t)n < sizeof head)
		mg_write(req->conn, head, (size_t)n);
}

/* A body or header the handler set but that could not be kept (out of
 * memory): a success without it (a 201 without its Location, say) would
 * pass for a whole answer, so it becomes a 500 that says the request was
 * carried out; an error keeps its status, without its body (as a problem
 * does when out of memory) or the header. */
static void resp_part_lost(evh_request *req, evh_response *resp)
{
	int status = resp->status;
	log_error("http", "%s %s: out of memory keeping the answer's %s (status %d)%s",
	          req->method, req->path, resp->body_lost ? "body" : "headers", status,
	          status < 400 ? ": answered 500" : "");
	if (resp->body_lost || status < 400)
		resp_reset_body(resp);
	resp->body_lost = resp->header_lost = 0;
	if (status >= 400)
		return;
	problem(resp, 500, "internal",
	        "out of memory writing the answer; the request itself was carried out "
	        "(status %d)",
	        status);
}

/* Write the response. Returns the bytes of body written. */
static size_t resp_send(evh_request *req, evh_response *resp)
{
	struct mg_connection *c = req->conn;
	char line[64];
	const char *reason;
	headbuf *b;
	int head = !strcmp(req->method, "HEAD"), keep;
	int with_body;
	size_t sent = 0;

	if (resp->status < 200 || resp->status > 599) {
		log_error("http", "%s %s: the handler of plugin '%s' set status %d (not 200-599): "
		                  "answered 500",
		          req->method, req->path, req->plugin ? req->plugin->name : "?", resp->status);
		resp_free(resp);
		problem(resp, 500, "internal", "the handler produced an invalid response");
	}
	if (resp->body_lost || resp->header_lost)
		resp_part_lost(req, resp);
	with_body = !head && status_has_body(resp->status) && resp->body_len > 0;
	keep = resp_keeps_alive(req, resp);
	if (!keep)
		mg_disable_keep_alive(c);
	b = malloc(sizeof *b);
	if (!b) {
		send_bare_500(req, resp->status);
		return 0;
	}
	b->p = b->local;
	b->len = 0;
	b->cap = sizeof b->local;
	b->failed = 0;
	snprintf(line, sizeof line, "HTTP/%s %d ", req->ri && is_http10(req) ? "1.0" : "1.1",
	         resp->status);
	hb_str(b, line);
	/* civetweb's own texts have a typo or two ("Unproccessable entity"): its
	 * own for the statuses evhost has none of. */
	reason = reason_phrase(resp->status);
	if (!strcmp(reason, "Server Error") || !strcmp(reason, "Client Error") ||
	    (!strcmp(reason, "OK") && resp->status != 200))
		reason = mg_get_response_code_text(c, resp->status);
	hb_str(b, reason);
	hb_add(b, "\r\n", 2);
	if (status_has_body(resp->status)) {
		if (resp->ctype)
			hb_header(b, "Content-Type", resp->ctype);
		snprintf(line, sizeof line, "%zu", resp->body_len);
		hb_header(b, "Content-Length", line);
	} else if (resp->status == 205) {
		hb_header(b, "Content-Length", "0");
	}
	hb_header(b, "X-Request-Id", req->id);
	for (size_t i = 0; i < resp->nheaders; i++)
		hb_header(b, resp->hname[i], resp->hvalue[i]);
	hb_header(b, "Date", http_date());
	hb_header(b, "Connection", keep ? "keep-alive" : "close");
	hb_add(b, "\r\n", 2);
	if (with_body && b->len + resp->body_len <= sizeof b->local) {
		hb_add(b, resp->body, resp->body_len);
		with_body = 0;
		sent = resp->body_len;
	}
	if (b->failed) {
		send_bare_500(req, resp->status);
		sent = 0;
	} else if (mg_write(c, b->p, b->len) <= 0) {
		sent = 0;
	} else if (with_body) {
		sent = mg_write(c, resp->body, resp->body_len) > 0 ? resp->body_len : 0;
	}
	if (b->p != b->local)
		free(b->p);
	free(b);
	return sent;
}

/* ------------------------------------------------------------ requests */

const char *http_req_method(evh_request *req) { return req ? req->method : NULL; }
const char *http_req_path(evh_request *req) { return req ? req->path : NULL; }
const char *http_req_id(evh_request *req) { return req ? req->id : NULL; }

const char *http_req_param(evh_request *req, const char *name)
{
	if (!req || !name)
		return NULL;
	for (size_t i = 0; i < req->m.nparams; i++)
		if (!strcmp(req->m.names[i], name))
			return req->m.values[i];
	return NULL;
}

const char *http_req_query_string(evh_request *req)
{
	if (!req || !req->ri->query_string)
		return NULL;
	return req->ri->query_string;
}

/* One name=value pair of the query string. Undecodable pairs are treated
 * as absent (plugins that must refuse them read the raw query string).
 * Returns -1 out of memory. */
static int query_add(evh_request *req, const char *pair, size_t n)
{
	const char *eq = memchr(pair, '=', n);
	size_t klen = eq ? (size_t)(eq - pair) : n;
	int oom = 0;
	char *k = form_decode(pair, klen, &oom), *v = NULL;
	char **nk, **nv;
	if (k)
		v = eq ? form_decode(eq + 1, n - klen - 1, &oom) : strdup("");
	if (k && !v && !eq)
		oom = 1;
	if (!k || !v) {
		req->query_bad |= !oom;
		goto skip;
	}
	oom = 1; /* from here on, only an allocation fails */
	nk = realloc(req->qkeys, (req->nquery + 1) * sizeof *nk);
	if (!nk)
		goto skip;
	req->qkeys = nk;
	nv = realloc(req->qvalues, (req->nquery + 1) * sizeof *nv);
	if (!nv)
		goto skip;
	req->qvalues = nv;
	req->qkeys[req->nquery] = k;
	req->qvalues[req->nquery++] = v;
	return 0;
skip:
	free(k);
	free(v);
	return oom ? -1 : 0;
}

/* Decode the query string once, before any handler runs: a parameter lost
 * to a failed allocation would read as absent (a list without its filter).
 * Returns -1 out of memory. */
static int query_parse(evh_request *req)
{
	const char *q = req->ri->query_string;
	req->query_parsed = 1;
	while (q && *q) {
		const char *amp = strchr(q, '&');
		size_t n = amp ? (size_t)(amp - q) : strlen(q);
		if (n && query_add(req, q, n) != 0)
			return -1;
		q = amp ? amp + 1 : NULL;
	}
	return 0;
}

int http_req_query_bad(evh_request *req)
{
	if (!req->query_parsed)
		query_parse(req); /* out of memory: no handler runs (dispatch) */
	return req->query_bad;
}

const char *http_req_query_other(evh_request *req, const char *const *known)
{
	if (!req->query_parsed)
		query_parse(req);
	for (size_t i = 0; i < req->nquery; i++) {
		size_t k = 0;
		while (known[k] && strcmp(known[k], req->qkeys[i]) != 0)
			k++;
		if (!known[k])
			return req->qkeys[i];
	}
	return NULL;
}

const char *http_req_query_twice(evh_request *req)
{
	if (!req->query_parsed)
		query_parse(req);
	for (size_t i = 0; i < req->nquery; i++)
		for (size_t k = 0; k < i; k++)
			if (!strcmp(req->qkeys[k], req->qkeys[i]))
				return req->qkeys[i];
	return NULL;
}

const char *http_req_query(evh_request *req, const char *name)
{
	if (!req || !name)
		return NULL;
	if (!req->query_parsed)
		query_parse(req); /* dispatch did; out of memory there, no handler ran */
	for (size_t i = 0; i < req->nquery; i++)
		if (!strcmp(req->qkeys[i], name))
			return req->qvalues[i];
	return NULL;
}

/* Fields that take one value: of repeated lines, the first counts (as
 * most servers do); they are no lists to join (RFC 9110 5.3). */
static int header_single(const char *name)
{
	static const char *const single[] = {
	    "Authorization", "Content-Length", "Content-Type", "Date", "From", "Host",
	    "If-Modified-Since", "If-Range", "If-Unmodified-Since", "Max-Forwards", "Origin",
	    "Proxy-Authorization", "Range", "Referer", "User-Agent", NULL};
	for (size_t i = 0; single[i]; i++)
		if (!strcasecmp(single[i], name))
			return 1;
	return 0;
}

/* Value `v` without the spaces and tabs before and after it; *n its length. */
static const char *header_trim(const char *v, size_t *n)
{
	v += strspn(v, " \t");
	*n = http_value_len(v);
	return v;
}

/* The value of header `name` as RFC 9110 5.2-5.3 has it: without the spaces
 * and tabs around it (civetweb keeps those after it), and of a field sent
 * on several lines, the lines' values joined by ", " (Cookie's by "; ",
 * RFC 6265 5.4) in their order, empty ones left out; of a single-valued
 * field (header_single), the first line's. Where that differs from
 * civetweb's value it is a copy kept with the request, one per name (so at
 * most one per line). Out of memory, the first line's value as civetweb has
 * it. */
const char *http_req_header(evh_request *req, const char *name)
{
	const struct mg_request_info *ri;
	const char *first = NULL, *v, *sep;
	size_t lines = 0, total = 0, n, sn;
	char *out, *w;
	int single;

	if (!req || !name || !(ri = req->ri))
		return NULL;
	for (size_t i = 0; i < req->nhvals; i++)
		if (!strcasecmp(req->hname[i], name))
			return req->hvalue[i];
	single = header_single(name);
	for (int i = 0; i < ri->num_headers; i++) {
		if (!ri->http_headers[i].name || strcasecmp(ri->http_headers[i].name, name) ||
		    !ri->http_headers[i].value)
			continue;
		if (!first)
			first = ri->http_headers[i].value;
		header_trim(ri->http_headers[i].value, &n);
		lines++;
		total += n + 2;
		if (single)
			break;
	}
	if (!first)
		return NULL;
	v = header_trim(first, &n);
	if (lines == 1 && !v[n])
		return v; /* civetweb's, less the spaces before it */
	if (req->nhvals == MG_MAX_HEADERS || !(out = malloc(total + 1)))
		return first;
	sep = strcasecmp(name, "Cookie") ? ", " : "; ";
	sn = strlen(sep);
	w = out;
	for (int i = 0; i < ri->num_headers && lines; i++) {
		if (!ri->http_headers[i].name || strcasecmp(ri->http_headers[i].name, name) ||
		    !ri->http_headers[i].value)
			continue;
		lines--;
		v = header_trim(ri->http_headers[i].value, &n);
		if (!n)
			continue;
		if (w > out) {
			memcpy(w, sep, sn);
			w += sn;
		}
		memcpy(w, v, n);
		w += n;
	}
	*w = '\0';
	if (!(req->hname[req->nhvals] = strdup(name))) {
		free(out);
		return first;
	}
	req->hvalue[req->nhvals++] = out;
	return out;
}

const char *http_req_body(evh_request *req, size_t *len)
{
	if (len)
		*len = req && req->body ? req->body_len : 0;
	return req ? req->body : NULL;
}

const char *http_req_auth_subject(evh_request *req)
{
	return req && req->authed ? req->claims.sub : NULL;
}

int http_req_auth_local(evh_request *req)
{
	return req && req->authed && !req->claims.foreign;
}

const char *http_req_client_addr(evh_request *req) { return req ? req->client : NULL; }

const char *http_req_client_cert(evh_request *req)
{
	/* civetweb verified it in the handshake (ssl_verify_peer, only with
	 * [http] tls_client_ca) and keeps it for the connection. */
	if (!req || !req->ri || !req->ri->is_ssl || !req->ri->client_cert)
		return NULL;
	return req->ri->client_cert->subject;
}

int http_req_auth_has_role(evh_request *req, const char *role)
{
	if (!req || !req->authed || !role)
		return 0;
	for (int i = 0; i < req->claims.nroles; i++)
		if (!strcmp(req->claims.roles[i], role))
			return 1;
	return 0;
}

static void req_free(evh_request *req)
{
	route_match_free(&req->m);
	free(req->body);
	for (size_t i = 0; i < req->nquery; i++) {
		free(req->qkeys[i]);
		free(req->qvalues[i]);
	}
	free(req->qkeys);
	free(req->qvalues);
	for (size_t i = 0; i < req->nhvals; i++) {
		free(req->hname[i]);
		free(req->hvalue[i]);
	}
}

size_t http_value_len(const char *v)
{
	size_t n = strlen(v);
	while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
		n--;
	return n;
}

/* The client's X-Request-Id when it is a plain token, else a fresh one. */
static void request_id(evh_request *req)
{
	const char *v = mg_get_header(req->conn, "X-Request-Id");
	unsigned char rnd[16];
	size_t n = v ? http_value_len(v) : 0;
	int ok = n > 0 && n <= HTTP_REQUEST_ID_MAX;
	for (size_t i = 0; ok && i < n; i++)
		ok = isalnum((unsigned char)v[i]) || strchr("-_.:", v[i]);
	if (ok) {
		memcpy(req->id, v, n);
		req->id[n] = '\0';
		return;
	}
	randombytes_buf(rnd, sizeof rnd);
	sodium_bin2hex(req->id, sizeof req->id, rnd, sizeof rnd);
}

/* -------------------------------------------------------------- routes */

static void route_rec_free(route_rec *rec)
{
	free((char *)rec->pub.r.method);
	free((char *)rec->pub.r.pattern);
	free((char *)rec->pub.r.role);
	free(rec->held);
	free(rec);
}

static const char *route_plugin_name(const route_rec *rec)
{
	return rec->held ? rec->held : rec->pub.plugin ? rec->pub.plugin->name : "";
}

static route_rec *route_acquire(host *h, const char *method, const char *path, route_match *m,
                                char *allow, size_t allowlen, router_result *res)
{
	route_rec *rec = NULL;
	pthread_rwlock_rdlock(&routes_lock);
	*res = router_match(h->router, method, path, m, allow, allowlen);
	if (*res == ROUTER_FOUND) {
		rec = m->target;
		atomic_fetch_add(&rec->refs, 1);
	}
	pthread_rwlock_unlock(&routes_lock);
	return rec;
}

static void route_release(route_rec *rec)
{
	if (!rec)
		return;
	if (atomic_fetch_sub(&rec->refs, 1) == 1) {
		pthread_mutex_lock(&drain_mu);
		pthread_cond_broadcast(&drain_cv);
		pthread_mutex_unlock(&drain_mu);
	}
}

/* "/users/{id}" and "/users/{uid}" have the same shape. */
static int same_shape(const char *a, const char *b)
{
	while (*a && *b) {
		if (*a == '{' && *b == '{') {
			a = strchr(a, '}');
			b = strchr(b, '}');
			if (!a || !b)
				return 0;
		} else if (*a != *b) {
			return 0;
		}
		a++;
		b++;
	}
	return *a == *b;
}

static void route_conflict(char *err, size_t errlen, const evh_route *r, const route_rec *other)
{
	const char *who = other->pub.plugin->name;
	if (!strcmp(other->pub.r.pattern, r->pattern))
		snprintf(err, errlen, "route %s %s already registered by plugin '%s'", r->method,
		         r->pattern, who);
	else
		snprintf(err, errlen, "route %s %s conflicts with %s %s of plugin '%s'",
		         r->method, r->pattern, r->method, other->pub.r.pattern, who);
}

/* The link to who already holds method+pattern, or NULL; routes_lock held. */
static route_rec **route_link_of(host *h, const char *method, const char *pattern)
{
	for (route_rec **pp = &routes_head; *pp; pp = &(*pp)->next)
		if ((*pp)->h == h && !strcmp((*pp)->pub.r.method, method) &&
		    same_shape((*pp)->pub.r.pattern, pattern))
			return pp;
	return NULL;
}

/* A placeholder for `old`'s method and pattern, answering 503 for its
 * plugin; NULL out of memory. */
static route_rec *placeholder_new(const route_rec *old)
{
	route_rec *ph = calloc(1, sizeof *ph);
	if (!ph)
		return NULL;
	ph->h = old->h;
	ph->pub.r.struct_size = sizeof(evh_route);
	ph->pub.r.method = strdup(old->pub.r.method);
	ph->pub.r.pattern = strdup(old->pub.r.pattern);
	ph->held = strdup(route_plugin_name(old));
	if (!ph->pub.r.method || !ph->pub.r.pattern || !ph->held) {
		route_rec_free(ph);
		return NULL;
	}
	return ph;
}

static route_rec *route_rec_new(evh_plugin *p, const evh_route *r)
{
	route_rec *rec = calloc(1, sizeof *rec);
	size_t n = r->struct_size < sizeof(evh_route) ? r->struct_size : sizeof(evh_route);
	if (!rec)
		return NULL;
	memcpy(&rec->pub.r, r, n);
	rec->pub.r.struct_size = sizeof(evh_route);
	memset(rec->pub.r.reserved, 0, sizeof rec->pub.r.reserved);
	rec->pub.plugin = p;
	rec->pub.r.method = strdup(r->method);
	rec->pub.r.pattern = strdup(r->pattern);
	rec->pub.r.role = rec->pub.r.role ? strdup(rec->pub.r.role) : NULL;
	if (!rec->pub.r.method || !rec->pub.r.pattern ||
	    (n > offsetof(evh_route, role) && r->role && !rec->pub.r.role)) {
		route_rec_free(rec);
		return NULL;
	}
	return rec;
}

static const char *route_error(const evh_route *r)
{
	const uint32_t known = EVH_ROUTE_JSON | EVH_ROUTE_AUTH;
	if (r->struct_size < offsetof(evh_route, handler) + sizeof r->handler)
		return "evh_route.struct_size too small";
	if (!r->method || !r->pattern || !r->handler)
		return "method, pattern and handler are required";
	if (r->struct_size < offsetof(evh_route, flags) + sizeof r->flags)
		return NULL;
	/* A flag this host does not know may be a security requirement it
	 * would silently skip. */
	if (r->flags & ~known)
		return "unknown route flags (plugin built for a newer host)";
	if (r->struct_size >= offsetof(evh_route, role) + sizeof r->role && r->role &&
	    !(r->flags & EVH_ROUTE_AUTH))
		return "a role needs EVH_ROUTE_AUTH";
	return NULL;
}

static void route_wait_idle(route_rec *rec)
{
	struct timespec until;
	drain_cv_ready();
	pthread_mutex_lock(&drain_mu);
	while (atomic_load(&rec->refs) > 0) {
		until = clock_after_ms(CLOCK_MONOTONIC, HTTP_DRAIN_WARN_S * 1000);
		if (pthread_cond_timedwait(&drain_cv, &drain_mu, &until) == ETIMEDOUT &&
		    atomic_load(&rec->refs) > 0)
			log_warn("http", "still waiting for %d request(s) in %s %s of plugin '%s'",
			         atomic_load(&rec->refs), rec->pub.r.method, rec->pub.r.pattern,
			         route_plugin_name(rec));
	}
	pthread_mutex_unlock(&drain_mu);
}

/* What the host serves at a pattern's path itself, or NULL: host_route
 * answers there before the router, so a plugin's route would never be
 * reached. /metrics is reserved with [metrics] enabled = false too: a reload
 * may turn it on. A capture ("/{x}") is the plugin's: it matches other paths. */
const char *http_host_path(const char *pattern)
{
	if (!strcmp(pattern, "/healthz"))
		return "/healthz (liveness)";
	if (!strcmp(pattern, "/readyz"))
		return "/readyz (readiness)";
	if (!strcmp(pattern, "/metrics"))
		return "/metrics (Prometheus, even with [metrics] enabled = false)";
	if (!strncmp(pattern, "/admin", 6) && (!pattern[6] || pattern[6] == '/'))
		return "/admin and every path under it (the admin API)";
	return NULL;
}

int http_add_route(host *h, evh_plugin *p, const evh_route *r, char *err, size_t errlen)
{
	const char *why;
	route_rec *rec, **link, *ph = NULL;
	int rc;
	if (!h || !h->router || !r) {
		snprintf(err, errlen, "route: no router or no route given");
		return EVH_EINVAL;
	}
	why = route_error(r);
	if (why) {
		snprintf(err, errlen, "route %s %s: %s", r->method ? r->method : "(null)",
		         r->pattern ? r->pattern : "(null)", why);
		return EVH_EINVAL;
	}
	why = http_host_path(r->pattern);
	if (why) {
		snprintf(err, errlen,
		         "route %s %s: the host serves %s itself, before any plugin's route, so "
		         "this one would never be reached: choose another path",
		         r->method, r->pattern, why);
		return EVH_EINVAL;
	}
	rec = route_rec_new(p, r);
	if (!rec) {
		snprintf(err, errlen, "route %s %s: out of memory", r->method, r->pattern);
		return EVH_ENOMEM;
	}
	rec->h = h;
	pthread_rwlock_wrlock(&routes_lock);
	link = route_link_of(h, r->method, r->pattern);
	if (link && (*link)->held && p && !strcmp((*link)->held, p->name)) {
		/* A restarting plugin's place, taken over in one step: no request
		 * finds the path unrouted in between, and out of memory the
		 * placeholder stays (503 "restarting", not 404). */
		rc = router_replace(h->router, r->method, r->pattern, *link, rec, p, err, errlen);
		if (rc == 0) {
			ph = *link;
			*link = ph->next;
		}
	} else if (link && (*link)->held) {
		/* Another plugin's while it restarts: taken, its new instance
		 * would find the path taken, and stay off (a required one too). */
		snprintf(err, errlen,
		         "route %s %s is plugin '%s''s, which this reload restarts (its new instance "
		         "routes it)",
		         r->method, r->pattern, (*link)->held);
		rc = -1;
	} else {
		rc = router_add(h->router, r->method, r->pattern, rec, p, err, errlen);
		if (rc == -1 && link && (*link)->pub.plugin)
			route_conflict(err, errlen, r, *link);
	}
	if (rc != 0) {
		pthread_rwlock_unlock(&routes_lock);
		route_rec_free(rec);
		return rc == -2 ? EVH_ENOMEM : EVH_EINVAL;
	}
	rec->next = routes_head;
	routes_head = rec;
	pthread_rwlock_unlock(&routes_lock);
	if (ph) {
		route_wait_idle(ph);
		route_rec_free(ph);
	}
	return EVH_OK;
}


/* Wait for requests still using the routes in `gone`, then free them. */
static void routes_free_idle(route_rec *gone)
{
	while (gone) {
		route_rec *next = gone->next;
		route_wait_idle(gone);
		route_rec_free(gone);
		gone = next;
	}
}

/* Out of the router and the list, with a placeholder in each one's place
 * when `hold`; waits for the requests in them. Main thread. */
static void routes_retire(host *h, evh_plugin *p, int hold)
{
	route_rec *gone = NULL, **pp;
	char err[256];
	if (!h)
		return;
	pthread_rwlock_wrlock(&routes_lock);
	if (h->router)
		router_remove_owner(h->router, p);
	pp = &routes_head;
	while (*pp) {
		route_rec *rec = *pp;
		if (rec->h == h && rec->pub.plugin == p && !rec->held) {
			*pp = rec->next;
			rec->next = gone;
			gone = rec;
		} else {
			pp = &rec->next;
		}
	}
	for (route_rec *rec = gone; hold && p && h->router && rec; rec = rec->next) {
		route_rec *ph = placeholder_new(rec);
		if (ph && router_add(h->router, ph->pub.r.method, ph->pub.r.pattern, ph, ph, err,
		                     sizeof err) == 0) {
			ph->next = routes_head;
			routes_head = ph;
			continue;
		}
		if (ph)
			route_rec_free(ph);
		/* The route is unrouted until the plugin routes it again: a client
		 * told 404 (or 405) is not told to retry, so the admin hears why. */
		log_warn("http", "plugin '%s': out of memory for the placeholder of %s %s: it "
		                 "answers 404 (or 405), not 503 \"restarting\", until the plugin "
		                 "routes it again",
		         p->name, rec->pub.r.method, rec->pub.r.pattern);
	}
	pthread_rwlock_unlock(&routes_lock);
	routes_free_idle(gone);
	/* No handler of `p` runs now, so none can open a stream after this. */
	if (p)
		stream_close_owner(stream_hub_global(), p);
}

void http_remove_plugin_routes(host *h, evh_plugin *p)
{
	routes_retire(h, p, 0);
}

void http_hold_plugin_routes(host *h, evh_plugin *p)
{
	routes_retire(h, p, 1);
}

void http_drop_placeholders(host *h)
{
	route_rec *gone = NULL, **pp;
	if (!h)
		return;
	pthread_rwlock_wrlock(&routes_lock);
	pp = &routes_head;
	while (*pp) {
		route_rec *rec = *pp;
		if (rec->h == h && rec->held) {
			*pp = rec->next;
			if (h->router)
				router_remove_owner(h->router, rec);
			rec->next = gone;
			gone = rec;
		} else {
			pp = &rec->next;
		}
	}
	pthread_rwlock_unlock(&routes_lock);
	routes_free_idle(gone);
}

/* ---------------------------------------------------------- body checks */

/* "application/json", "application/merge-patch+json", with parameters. */
static int is_json_media_type(const char *ct)
{
	size_t n;
	if (!ct)
		return 0;
	while (*ct == ' ' || *ct == '\t')
		ct++;
	n = strcspn(ct, "; \t");
	if (n < 12 || strncasecmp(ct, "application/", 12) != 0)
		return 0;
	if (n == 16 && !strncasecmp(ct + 12, "json", 4))
		return 1;
	return n > 17 && !strncasecmp(ct + n - 5, "+json", 5);
}

/* 0 when the body is acceptable JSON; else fills a 400 problem. */
static int check_json(const host *h, evh_request *req, evh_response *resp)
{
	int max = h->set.json_max_depth > 0 ? h->set.json_max_depth : HTTP_DEFAULT_JSON_DEPTH;
	size_t pos = 0;
	long at;
	int dup;
	char name[128], why[256];
	if (!req->body || req->body_len == 0) {
		problem(resp, 400, "malformed-json", "the request body is empty; JSON expected");
		return -1;
	}
	if (memchr(req->body, '\0', req->body_len)) {
		at = (long)((char *)memchr(req->body, '\0', req->body_len) - req->body);
		problem(resp, 400, "malformed-json", "NUL byte in the JSON body at byte %ld", at);
		return -1;
	}
	if ((at = json_utf8_error(req->body, req->body_len)) >= 0) {
		problem(resp, 400, "malformed-json", "invalid UTF-8 at byte %ld", at);
		return -1;
	}
	/* Checked without a tree (json.h), the names in the same scan. */
	switch (json_check_members(req->body, req->body_len, max, &pos, &dup, name, sizeof name)) {
	case JSON_OK:
		switch (dup) {
		case 0: return 0;
		case 1:
			json_duplicate_sentence(name, why, sizeof why);
			problem(resp, 400, "malformed-json", "%s", why);
			return -1;
		default:
			http_resp_header(resp, "Retry-After", "1");
			problem(resp, 503, "unavailable", "out of memory checking the JSON body; try "
			                                  "again");
			return -1;
		}
	case JSON_TOO_DEEP:
		problem(resp, 400, "malformed-json", "JSON nested deeper than %d levels at byte %zu",
		        max < JSON_MAX_DEPTH ? max : JSON_MAX_DEPTH, pos);
		return -1;
	case JSON_NUL:
		problem(resp, 400, "malformed-json",
		        "\\u0000 in a string at byte %zu (the string would end there)", pos);
		return -1;
	case JSON_RANGE:
		problem(resp, 400, "malformed-json",
		        "the number at byte %zu is beyond the range of a double (about 1.8e308)", pos);
		return -1;
	default:
		problem(resp, 400, "malformed-json", "malformed JSON at byte %zu", pos);
		return -1;
	}
}

static int64_t max_body(const host *h)
{
	return h->set.max_body_bytes > 0 ? h->set.max_body_bytes : HTTP_DEFAULT_MAX_BODY;
}

static int is_chunked(struct mg_connection *c)
{
	const char *te = mg_get_header(c, "Transfer-Encoding");
	return te && strcasestr(te, "chunked") != NULL;
}

/* Read the whole body (at most the limit). 0, or -1 with a problem set. */
/* A body being read (read_body), with the time by which it must have come
 * whole. [http] request_timeout bounds each wait for its next bytes, and
 * civetweb's mg_read returns only once all it was asked for came: a client
 * sending a byte every few seconds held its worker for as long as it liked
 * (32 of them, every worker). The main thread cuts one past its time
 * (http_cut_slow_bodies): the socket shut for reading, mg_read ends, and
 * the client is answered 408. */
typedef struct body_watch {
	struct body_watch *prev, *next;
	int64_t deadline_ms; /* clock_mono_ms */
	int64_t allowed_ms;  /* from the start of the read */
	char peer[48];
	int peer_port, local_port;
	atomic_int cut; /* BODY_CUT_SLOW, BODY_CUT_STOP */
} body_watch;

enum { BODY_CUT_SLOW = 1, BODY_CUT_STOP = 2 };

/* The rate a body must keep on average, past its first request_timeout:
 * Apache's mod_reqtimeout asks 500 bytes a second; a mobile client's
 * worst is far above either. */
#define BODY_MIN_RATE 1024 /* bytes a second */

static pthread_mutex_t body_watch_mu = PTHREAD_MUTEX_INITIALIZER;
static body_watch *body_watches;
/* The server stops (http_stop): a body not read whole yet is not waited
 * for; body_watch_mu held. */
static int bodies_stopping;

static void body_watch_begin(body_watch *w, const struct mg_request_info *ri, int64_t bytes,
                             int64_t timeout_ms)
{
	memset(w, 0, sizeof *w);
	w->allowed_ms = timeout_ms + bytes * 1000 / BODY_MIN_RATE;
	w->deadline_ms = clock_mono_ms() + w->allowed_ms;
	snprintf(w->peer, sizeof w->peer, "%s", ri->remote_addr);
	w->peer_port = ri->remote_port;
	w->local_port = ri->server_port;
	pthread_mutex_lock(&body_watch_mu);
	w->next = body_watches;
	if (body_watches)
		body_watches->prev = w;
	body_watches = w;
	if (bodies_stopping)
		atomic_store(&w->cut, BODY_CUT_STOP);
	pthread_mutex_unlock(&body_watch_mu);
}

/* Before the connection may close: the main thread cuts only a watched
 * one, under the lock, so it never shuts a descriptor reused since. */
static void body_watch_end(body_watch *w)
{
	pthread_mutex_lock(&body_watch_mu);
	if (w->prev)
		w->prev->next = w->next;
	else
		body_watches = w->next;
	if (w->next)
		w->next->prev = w->prev;
	pthread_mutex_unlock(&body_watch_mu);
}

/* Cut the bodies past their time, or all of them with BODY_CUT_STOP (and
 * the ones that start after). */
static size_t cut_bodies(int why)
{
	int64_t now = clock_mono_ms();
	size_t n = 0;
	pthread_mutex_lock(&body_watch_mu);
	if (why == BODY_CUT_STOP)
		bodies_stopping = 1;
	for (body_watch *w = body_watches; w; w = w->next) {
		int fd;
		if (atomic_load(&w->cut) || (why == BODY_CUT_SLOW && now < w->deadline_ms))
			continue;
		atomic_store(&w->cut, why);
		/* For reading only: the answer (408, 503) can still be written. */
		if ((fd = stream_find_socket(w->peer, w->peer_port, w->local_port)) >= 0 &&
		    shutdown(fd, SHUT_RD) == 0)
			n++;
	}
	pthread_mutex_unlock(&body_watch_mu);
	return n;
}

size_t http_cut_slow_bodies(void) { return cut_bodies(BODY_CUT_SLOW); }

static int read_body_unwatched(const host *h, evh_request *req, evh_response *resp,
                               int64_t timeout_ms);

static int read_body(const host *h, evh_request *req, evh_response *resp)
{
	int64_t limit = max_body(h), cl = req->ri->content_length;
	int64_t timeout_ms = h->set.http_request_timeout_ms > 0 ? h->set.http_request_timeout_ms
	                                                        : HTTP_REQUEST_TIMEOUT_MS;
	body_watch w;
	int rc;
	if (cl > limit || (cl < 0 && !is_chunked(req->conn)))
		return read_body_unwatched(h, req, resp, timeout_ms);
	/* A chunked body's length is not known: its bound is max_body_bytes. */
	body_watch_begin(&w, req->ri, cl >= 0 ? cl : limit, timeout_ms);
	/* Begun as the server stops: not waited for (nor its 100 Continue sent). */
	rc = atomic_load(&w.cut) == BODY_CUT_STOP ? -1
	                                          : read_body_unwatched(h, req, resp, timeout_ms);
	body_watch_end(&w);
	if (rc != 0 && atomic_load(&w.cut) == BODY_CUT_STOP) {
		/* Nothing was done with it: the client may send it again. */
		resp_free(resp);
		resp->close = 1;
		http_resp_header(resp, "Retry-After", "1");
		problem(resp, 503, "unavailable",
		        "the server is stopping: the body was not read whole (%zu%s%.0lld bytes came)",
		        req->body_len, cl >= 0 ? " of " : "", cl >= 0 ? (long long)cl : 0LL);
	} else if (rc != 0 && atomic_load(&w.cut)) {
		resp_free(resp);
		resp->close = 1;
		problem(resp, 408, "request-timeout",
		        "the body did not come whole in time: %zu%s%.0lld bytes came within %lld ms "
		        "([http] request_timeout, then a second for each %d bytes it may have)",
		        req->body_len, cl >= 0 ? " of " : "", cl >= 0 ? (long long)cl : 0LL,
		        (long long)w.allowed_ms, BODY_MIN_RATE);
	}
	return rc;
}

static int read_body_unwatched(const host *h, evh_request *req, evh_response *resp,
                               int64_t timeout_ms)
{
	int64_t limit = max_body(h), cl = req->ri->content_length;
	size_t cap, want;
	req->body_read = 1;
	if (cl > limit) {
		resp->close = 1;
		problem(resp, 413, "payload-too-large",
		        "the body is %lld bytes; this server accepts at most %lld", (long long)cl,
		        (long long)limit);
		return -1;
	}
	if (cl < 0 && !is_chunked(req->conn))
		return 0;
	/* The client waits for this before it sends the body. */
	if (req->expect_continue && cl != 0) {
		static const char go_on[] = "HTTP/1.1 100 Continue\r\n\r\n";
		req->expect_continue = 0;
		if (mg_write(req->conn, go_on, sizeof go_on - 1) != (int)(sizeof go_on - 1)) {
			resp->close = 1;
			problem(resp, 400, "bad-request", "the connection failed before the body");
			return -1;
		}
	}
	cap = cl >= 0 ? (size_t)cl : HTTP_CHUNK;
	want = cl >= 0 ? (size_t)cl : (size_t)limit + 1;
	req->body = malloc(cap + 1);
	if (!req->body)
		goto oom;
	while (req->body_len < want) {
		int n;
		int64_t t0 = clock_mono_ms();
		if (req->body_len == cap) {
			size_t ncap = cap * 2 > want ? want : cap * 2;
			char *nb = realloc(req->body, ncap + 1);
			if (!nb)
				goto oom;
			req->body = nb;
			cap = ncap;
		}
		n = mg_read(req->conn, req->body + req->body_len, cap - req->body_len);
		/* civetweb waits request_timeout for the rest of what was asked,
		 * then hands over what came: without this the next read waited as
		 * long again, and the client was told the connection closed. A
		 * chunked body's read is short only at the body's end (a stall
		 * fails it: -1), which may come that late after a trickle of
		 * chunks. */
		if (n < (int)(cap - req->body_len) && (cl >= 0 || n < 0) &&
		    clock_mono_ms() - t0 >= timeout_ms * 9 / 10) {
			req->body_len += n > 0 ? (size_t)n : 0;
			resp->close = 1;
			problem(resp, 400, "bad-request",
			        "the body stopped after %zu%s%.0lld bytes: nothing more came within "
			        "[http] request_timeout (%lld ms)",
			        req->body_len, cl >= 0 ? " of " : "", cl >= 0 ? (long long)cl : 0LL,
			        (long long)timeout_ms);
			return -1;
		}
		if (n < 0 && cl < 0) {
			resp->close = 1;
			problem(resp, 400, "bad-request",
			        "the body could not be read after %zu bytes (malformed chunked "
			        "encoding, or the connection failed)",
			        req->body_len);
			return -1;
		}
		/* civetweb's -1 for a Content-Length body is the connection closed
		 * or failed before its end: said below, with how much came */
		if (n <= 0)
			break;
		req->body_len += (size_t)n;
	}
	req->body[req->body_len] = '\0';
	if ((int64_t)req->body_len > limit) {
		resp->close = 1;
		problem(resp, 413, "payload-too-large", "the body exceeds %lld bytes",
		        (long long)limit);
		return -1;
	}
	if (cl >= 0 && req->body_len < (size_t)cl) {
		resp->close = 1;
		problem(resp, 400, "bad-request",
		        "the body ended after %zu of %lld bytes (the connection closed or failed)",
		        req->body_len, (long long)cl);
		return -1;
	}
	return 0;
oom:
	resp->close = 1;
	problem(resp, 503, "unavailable", "out of memory reading the request body");
	return -1;
}

/* A token naming a key the provider's set lacks: the operator hears of it
 * (at most once a minute, whichever worker sees it), the client gets 401. */
static void warn_unknown_kid(http_server *srv, const auth_keyset *k)
{
	if (!log_due_shared(&srv->warned_kid_ms, clock_mono_ms(), 60000))
		return;
	if (k->jwks)
		log_warn("http", "[auth] a token names a key (kid) the JWKS from %s does not have "
		                 "(fetched again for such a token at most every %d s; said at most "
		                 "once a minute)",
		         jwks_fetcher_url(k->jwks), JWKS_REFETCH_MIN_MS / 1000);
	else
		log_warn("http", "[auth] a token names a key (kid) that jwt_public_key_file does not "
		                 "have: if the provider rotated its keys, save its JWKS again and "
		                 "reload (said at most once a minute)");
}

/* jwt_verify_keys with k's keys: the provider's fetched keys are held for
 * the check. This host's tokens signed while the clock ran ahead are not
 * refused for it (jwt_keys, signed_ms). */
static int verify_token(const http_server *srv, const auth_keyset *k, const char *token,
                        jwt_claims *claims, const char **why, jwt_refusal *cls)
{
	jwks_view v = {.keys = k->pubkeys, .nrsa = k->nrsa, .nec = k->nec};
	int rc;
	if (k->jwks)
		jwks_fetcher_acquire(k->jwks, &v);
	rc = jwt_verify_keys(token,
	                     &(jwt_keys){.secret = k->secret,
	                                 .secret_len = k->len,
	                                 .previous = k->previous,
	                                 .previous_len = k->previous_len,
	                                 .issuer = k->issuer,
	                                 .pk_verify = v.keys || k->jwks ? tls_pubkeys_verify : NULL,
	                                 .pk_ctx = v.keys,
	                                 .pk_rsa = v.nrsa,
	                                 .pk_ec = v.nec,
	                                 .pk_issuer = k->pk_issuer,
	                                 .pk_audience = k->pk_audience,
	                                 .pk_roles = k->pk_roles,
	                                 .pk_pending = k->jwks && !v.keys && !v.no_usable
	                                                   ? jwt_reason_keys_pending
	                                                   : NULL,
	                                 .pk_refetchable = k->jwks != NULL,
	                                 .signed_ms = revocations_last_signed(srv->h->revoked)},
	                     (int64_t)time(NULL), HTTP_JWT_LEEWAY_S, claims, why, cls);
	if (k->jwks)
		jwks_fetcher_release(k->jwks);
	return rc;
}

/* The request's bearer token: NULL when it has none (no Authorization
 * header, or not "Bearer ..."); *own is set to a copy to free when the
 * value had spaces after it, and *oom when that copy could not be made. */
const char *http_bearer(const char *hdr, size_t *len)
{
	if (!hdr || strncasecmp(hdr, "Bearer ", 7) != 0)
		return NULL;
	hdr += 7;
	while (*hdr == ' ')
		hdr++;
	*len = http_value_len(hdr);
	return hdr;
}

static const char *bearer_token(const evh_request *req, char **own, int *oom)
{
	size_t n;
	const char *hdr = http_bearer(mg_get_header(req->conn, "Authorization"), &n);

	*own = NULL;
	*oom = 0;
	/* Without the spaces after it: a copy, in the rare request that has any. */
	if (hdr && hdr[n] && !(hdr = *own = strndup(hdr, n)))
		*oom = 1;
	return hdr;
}

/* 0 when the bearer token is good for this route; else fills 401/403, or 503
 * when the token cannot be checked (no key, or the provider's not fetched). */
static int check_auth_with(http_server *srv, const auth_keyset *k, const http_route *rt,
                           evh_request *req, evh_response *resp)
{
	const char *hdr, *why = NULL;
	/* jwt_refusal's kinds, in its order, as counted */
	static const metrics_auth_reason counted[] = {
	    [JWT_REFUSED_MALFORMED] = METRICS_AUTH_MALFORMED,
	    [JWT_REFUSED_SIGNATURE] = METRICS_AUTH_SIGNATURE,
	    [JWT_REFUSED_EXPIRED] = METRICS_AUTH_EXPIRED,
	    [JWT_REFUSED_NOT_YET_VALID] = METRICS_AUTH_NOT_YET_VALID,
	    [JWT_REFUSED_CLAIMS] = METRICS_AUTH_CLAIMS,
	    [JWT_REFUSED_UNVERIFIABLE] = METRICS_AUTH_UNVERIFIABLE};
	jwt_refusal cls = JWT_REFUSED_NONE;
	char *own;
	int rc, oom;
	if (!(hdr = bearer_token(req, &own, &oom))) {
		metrics_auth_refused(METRICS_AUTH_MISSING);
		http_resp_header(resp, "WWW-Authenticate", "Bearer");
		problem(resp, 401, "unauthorized", "a bearer token is required");
		return -1;
	}
	if (oom) {
		problem(resp, 503, "unavailable", "out of memory reading the bearer token");
		return -1;
	}
	if ((!k->secret || k->len == 0) && !k->pubkeys && !k->jwks) {
		if (!atomic_exchange(&srv->warned_no_secret, 1))
			log_warn("http", "routes need bearer tokens but neither [auth] jwt_secret_file "
			                 "nor jwt_public_key_file nor jwt_jwks_url is set: every such "
			                 "request is refused");
		/* Not the token's fault (a 401 would send the client to sign in
		 * again, and the login cannot sign either: 503) */
		metrics_auth_refused(METRICS_AUTH_UNVERIFIABLE);
		problem(resp, 503, "unavailable",
		        "this server cannot check tokens: [auth] sets no key (jwt_secret_file, "
		        "jwt_public_key_file or jwt_jwks_url)");
		free(own);
		return -1;
	}
	rc = verify_token(srv, k, hdr, &req->claims, &why, &cls);
	/* The provider may have rotated its keys: fetch them again (at most
	 * once every few seconds) and check once more. */
	if (rc == -1 && why == jwt_reason_unknown_kid && k->jwks && jwks_fetcher_refetch(k->jwks))
		rc = verify_token(srv, k, hdr, &req->claims, &why, &cls);
	free(own);
	if (rc != 0)
		metrics_auth_refused(counted[cls]);
	switch (rc) {
	case 0:
		break;
	case -2: /* not the token's fault: it may well be good */
		http_resp_header(resp, "Retry-After", why == jwt_reason_keys_pending ? "5" : "1");
		problem(resp, 503, "unavailable", "%s", why);
		return -1;
	default:
		if (why == jwt_reason_unknown_kid)
			warn_unknown_kid(srv, k);
		http_resp_header(resp, "WWW-Authenticate", "Bearer error=\"invalid_token\"");
		problem(resp, 401, "unauthorized", "%s", why);
		return -1;
	}
	/* This host's own tokens: signed out, or signed to live too long. */
	why = revocations_refuse(srv->h->revoked, &req->claims, k->ttl_max_s, clock_wall_ms());
	if (why) {
		metrics_auth_refused(why == revoke_reason_revoked ? METRICS_AUTH_REVOKED
		                                                  : METRICS_AUTH_LIFETIME);
		http_resp_header(resp, "WWW-Authenticate", "Bearer error=\"invalid_token\"");
		problem(resp, 401, "unauthorized", "%s", why);
		return -1;
	}
	req->authed = 1;
	if (rt->r.role && !http_req_auth_has_role(req, rt->r.role)) {
		metrics_auth_refused(METRICS_AUTH_ROLE);
		problem(resp, 403, "forbidden", "this needs the role '%s'", rt->r.role);
		return -1;
	}
	return 0;
}

/* check_auth_with the current keys, held for the check only (a reload frees
 * the set it replaces once no check holds it). */
static int check_auth(http_server *srv, const http_route *rt, evh_request *req,
                      evh_response *resp)
{
	const auth_keyset *k = host_auth_acquire(srv->h);
	int rc = check_auth_with(srv, k, rt, req, resp);
	host_auth_release(k);
	return rc;
}

/* ------------------------------------------------------------ dispatch */

/* Whether `path` is the host's `name`, with or without one trailing '/', as
 * the router takes plugins' routes. */
static int is_host_path(const char *path, const char *name)
{
	size_t n = strlen(name);
	return !strncmp(path, name, n) && (!path[n] || (path[n] == '/' && !path[n + 1]));
}

static int host_route(http_server *srv, evh_request *req, evh_response *resp)
{
	int health = is_host_path(req->path, "/healthz"), ready = is_host_path(req->path, "/readyz");
	int metrics = srv->h->set.metrics_enabled && is_host_path(req->path, "/metrics");
	char *json = NULL;
	size_t len;
	int rc;
	if (!strncmp(req->path, "/admin", 6) && (!req->path[6] || req->path[6] == '/')) {
		req->metrics = metrics_http_route("", "/admin", req->method);
		if (req->ri->is_ssl && !admin_over_https(srv->h)) {
			problem(resp, 404, "not-found",
			        "the admin API is not served over HTTPS: use [http] listen "
			        "([admin] https = false)");
			return 1;
		}
		if (admin_authorize(srv->h, req, resp) && read_body(srv->h, req, resp) == 0)
			admin_handle(srv->h, req, resp);
		return 1;
	}
	if (!health && !ready && !metrics)
		return 0;
	req->metrics = metrics_http_route("", health ? "/healthz" : ready ? "/readyz" : "/metrics",
	                                  req->method);
	if (metrics && req->ri->is_ssl && !srv->h->set.metrics_https) {
		problem(resp, 404, "not-found",
		        "/metrics is not served over HTTPS: scrape [http] listen "
		        "([metrics] https = false)");
		return 1;
	}
	if (strcmp(req->method, "GET") && strcmp(req->method, "HEAD")) {
		http_resp_header(resp, "Allow", "GET, HEAD");
		problem(resp, 405, "method-not-allowed",
		        "%s is not allowed here (allowed: GET, HEAD)", req->method);
		return 1;
	}
	if (health) {
		http_resp_body(resp, "application/json", "{\"status\":\"ok\"}", 15);
		return 1;
	}
	if (metrics) {
		if (metrics_render(srv->h, &json, &len) != 0)
			problem(resp, 503, "unavailable", "out of memory rendering the metrics");
		else
			http_resp_body(resp, METRICS_CONTENT_TYPE, json, len);
		free(json);
		return 1;
	}
	rc = host_ready(srv->h, &json);
	if (rc < 0 || !json) {
		problem(resp, 503, "unavailable", "the readiness check failed");
	} else {
		http_resp_status(resp, rc > 0 ? 200 : 503);
		http_resp_body(resp, "application/json", json, strlen(json));
	}
	free(json);
	return 1;
}

/* What went past its limit, for the line about a handler that returned
 * EVH_ETOOBIG from `from` (toobig.h); "" when the answer says it, or the
 * line has more to say already (evh_publish's refusal, with its sizes). */
static const char *toobig_said(toobig_source from)
{
	switch (from) {
	case TOOBIG_HEADERS: return " (more response headers than the host keeps)";
	case TOOBIG_STREAM: return " (a stream event's data, more than one may carry)";
	case TOOBIG_READ: return " (a stored value read back, past the storage's limit)";
	case TOOBIG_UNKNOWN: return " (none of the host's limits: the plugin's own code)";
	default: return "";
	}
}

/* Failures that repeat with every request while a disk is full or failing
 * (the plugin's database marked full, or its writes refused): said once a
 * minute, with how many were not (the access log has each). A line each was
 * thousands a minute, past journald's budget. Any other storage error (a
 * plugin's SQL) is each request's own, said each time. */
#define STORAGE_SAID_EVERY_MS 60000
static log_every full_said, store_failed_said;

/* How many lines like this one were not said, into out[size], or "". */
static const char *unsaid_text(char *out, size_t size, int64_t unsaid)
{
	if (unsaid > 0)
		snprintf(out, size, " (and %" PRId64 " more like it since the last such line)", unsaid);
	else
		out[0] = '\0';
	return out;
}

static void call_handler(const http_route *rt, evh_request *req, evh_response *resp)
{
	const char *name = rt->plugin ? rt->plugin->name : "host";
	toobig_source from;
	evh_tx *left;
	int rc, store_said, clients;
	int64_t unsaid = 0;
	char more[80];
	store_take_lost_reads(); /* only this handler's transactions count */
	store_thread_error_clear();
	toobig_clear();
	crash_enter_http(rt->plugin ? rt->plugin->name : "host", req->method, req->path, req->id);
	rc = rt->r.handler(req, resp, rt->r.ud);
	crash_leave();
	if (rt->plugin && (left = store_tx_left_open(rt->plugin->store))) {
		/* Left open, it held the plugin's database (and this worker's
		 * lock on it) for good: every later write waited and failed, and
		 * a reload or stop waited for it forever. Its writes are undone,
		 * so the answer cannot be the handler's. A read transaction
		 * (evh_tx_begin_read) held one of its read connections. */
		do
			store_tx_rollback(left);
		while ((left = store_tx_left_open(rt->plugin->store)));
		store_take_lost_reads();
		log_error("http", "%s %s (route %s of plugin '%s') returned with a transaction it "
		                  "began still open (no evh_tx_commit or evh_tx_rollback): rolled "
		                  "back, answered 500 instead of %d",
		          req->method, req->path, rt->r.pattern, name,
		          resp->filled ? resp->status : rc == EVH_OK ? 200 : 500);
		resp_free(resp);
		resp->filled = 0;
		resp->status = 0;
		problem(resp, 500, "internal", "the service did not finish its transaction");
		return;
	}
	if (store_take_lost_reads()) {
		/* It read inside a group commit that then failed, or failed on
		 * another member's row (a conflict): its answer may show, or be
		 * about, writes that are not in the database. */
		log_error("http", "%s %s (plugin '%s'): answered 503 instead of %d: the handler "
		          "read, or conflicted with, data of a group commit that then failed",
		          req->method, req->path, rt->plugin ? rt->plugin->name : "host",
		          resp->filled ? resp->status : 200);
		resp_free(resp);
		resp->filled = 0;
		resp->status = 0;
		http_resp_header(resp, "Retry-After", "1");
		problem(resp, 503, "storage", "the data this answer was read from could not be "
		                              "stored; try again");
		return;
	}
	if (rc == EVH_OK)
		return;
	if (resp->filled && (resp->body_lost || resp->header_lost))
		return; /* answered for by resp_send, which says what was lost */
	if (resp->filled && (resp->body || !status_has_body(resp->status))) {
		/* An answer it made (a body, or one that needs none), then a
		 * failure: the answer stands, as the header promises. */
		log_warn("http", "%s %s (route %s of plugin '%s') returned %s after making its %d "
		                 "answer; the answer is sent",
		         req->method, req->path, rt->r.pattern, rt->plugin ? rt->plugin->name : "host",
		         host_strerror(rc), resp->status);
		return;
	}
	/* A status alone (or headers) and then a failure: not an answer. A 200
	 * with no body would tell the client it worked. */
	if (resp->filled) {
		resp_free(resp);
		resp->filled = 0;
	}
	if (rt->plugin && store_full(rt->plugin->store)) {
		/* The store said which file, once a minute; this is the requests'.
		 * Full, or read-only (both refused, both pass once mended). */
		const char *why = store_writes_refused(rt->plugin->store) ? "cannot be written"
		                                                          : "is full";
		if (log_every_due(&full_said, clock_mono_ms(), STORAGE_SAID_EVERY_MS, &unsaid))
			log_warn("http", "%s %s (route %s of plugin '%s') failed: %s: its database %s, "
			                 "answered 503%s",
			         req->method, req->path, rt->r.pattern, rt->plugin->name,
			         host_strerror(rc), why, unsaid_text(more, sizeof more, unsaid));
		http_resp_header(resp, "Retry-After", HTTP_FULL_RETRY_AFTER);
		problem(resp, 503, "unavailable", "the storage of service '%s' %s; try again later",
		        rt->plugin->name, why);
		return;
	}
	/* EVH_ETOOBIG is a 413 only when what the request carried was too
	 * large: an event larger than a Kafka message, a value larger than
	 * SQLite takes. The plugin's own limits (response headers, a stream
	 * event), a stored value read back past SQLite's limit, and a code the
	 * host did not give it, are the service's failure: a 500. Where it came
	 * from was noted where the host returned it (toobig.h); the last note of
	 * this handler's counts. */
	from = rc == EVH_ETOOBIG ? toobig_last() : TOOBIG_UNKNOWN;
	/* Refusals a client can act on (the outbox at its bound: try later; a
	 * request too large: send less) are warnings. */
	clients = rc == EVH_EFULL || rc == EVH_EBUSY ||
	          (rc == EVH_ETOOBIG && (from == TOOBIG_EVENT || from == TOOBIG_STORED));
	/* A storage status with the message of the failure behind it (one the
	 * handler had handled may precede another kind of failure: not named). */
	store_said = (rc == EVH_ESTORE || rc == EVH_ECONSTRAINT || rc == EVH_EBUSY ||
	              (rc == EVH_ETOOBIG && (from == TOOBIG_STORED || from == TOOBIG_READ))) &&
	             *store_thread_error();
	/* The outbox at its bound is said where it refused the publish, once a
	 * minute with a count (store.c, outbox_full_say): a burst of requests
	 * must not write a line each. */
	if (rc != EVH_EFULL &&
	    (rc != EVH_ESTORE || !rt->plugin || !store_writes_refused(rt->plugin->store) ||
	     log_every_due(&store_failed_said, clock_mono_ms(), STORAGE_SAID_EVERY_MS, &unsaid)))
		log_msg(clients ? EVH_LOG_WARN : EVH_LOG_ERROR, "http",
		        "%s %s (route %s of plugin '%s') failed: %s%s%s%s%s%s", req->method, req->path,
		        rt->r.pattern, name, host_strerror(rc),
		        store_said ? " (storage: " : "", store_said ? store_thread_error() : "",
		        store_said ? ")" : "", rc == EVH_ETOOBIG ? toobig_said(from) : "",
		        unsaid_text(more, sizeof more, unsaid));
	if (rc == EVH_EFULL) {
		http_resp_header(resp, "Retry-After", HTTP_OUTBOX_RETRY_AFTER);
		problem(resp, 503, "unavailable", "too many events are waiting to be sent; try again "
		                                  "later");
	} else if (rc == EVH_ETOOBIG && from == TOOBIG_EVENT) {
		problem(resp, 413, "payload-too-large",
		        "the event this request publishes would be larger than a Kafka message may be");
	} else if (rc == EVH_ETOOBIG && from == TOOBIG_STORED) {
		problem(resp, 413, "payload-too-large",
		        "a value this request stores is larger than the storage of service '%s' takes",
		        name);
	} else if (rc == EVH_EBUSY) {
		/* Its storage held by a long transaction (an event handler's), or
		 * whatever else the service says is busy: it passes. */
		http_resp_header(resp, "Retry-After", "1");
		problem(resp, 503, "unavailable", "service '%s' is busy%s; try again", name,
		        store_said ? " (its storage is held by a long transaction)" : "");
	} else {
		problem(resp, 500, "internal", "the request could not be handled");
	}
}

/* A request of plugin `p` counted (on /metrics, and against [http]
 * max_plugin_requests): 1 (atomic_fetch_sub p->http_active once it is
 * served), or -1 when the plugin has that many being served already
 * (answered 503 here, said at WARN once a minute per plugin). */
static int plugin_request_begin(http_server *srv, evh_plugin *p, evh_request *req,
                                evh_response *resp)
{
	int limit = srv->h->set.http_max_plugin_requests;
	if (atomic_fetch_add(&p->http_active, 1) < limit || limit <= 0)
		return 1;
	atomic_fetch_sub(&p->http_active, 1);
	if (log_due_shared(&p->http_full_said, clock_mono_ms(), 60000))
		log_warn("http", "%s %s: plugin '%s' is serving %d requests already ([http] "
		                 "max_plugin_requests), answered 503 (its handlers are slow, or it has "
		                 "more clients than the limit allows; at most one such line a minute)",
		         req->method, req->path, p->name, limit);
	http_resp_header(resp, "Retry-After", "1");
	problem(resp, 503, "unavailable", "service '%s' is serving as many requests as it may at "
	                                  "once; try again", p->name);
	return -1;
}

/* Why plugin `p`, routed but not RUNNING, cannot take a request now. A
 * plugin a reload starts (or restarts) routes its paths in init, and runs
 * only once init returned and its relay and consumer started: "starting"
 * meanwhile, not "not running", which reads as if it were down. */
static const char *plugin_not_running_words(const evh_plugin *p)
{
	plugin_state st = p->status; /* one (atomic) load; clang switches on no _Atomic */
	switch (st) {
	case PLUGIN_LOADED:
	case PLUGIN_INITIALIZING: return "starting";
	case PLUGIN_DRAINING: return p->restarting ? "restarting" : "stopping";
	default: return "not running";
	}
}

/* Everything between routing and the handler: state, auth, body, JSON. */
static void plugin_route(http_server *srv, const http_route *rt, evh_request *req,
                         evh_response *resp)
{
	evh_plugin *p = rt->plugin;
	int counted = 0;
	if (p && p->status != PLUGIN_RUNNING) {
		http_resp_header(resp, "Retry-After", "1");
		problem(resp, 503, "unavailable", "service '%s' is %s", p->name,
		        plugin_not_running_words(p));
		return;
	}
	if ((rt->r.flags & EVH_ROUTE_AUTH) && check_auth(srv, rt, req, resp) != 0)
		return;
	if ((rt->r.flags & EVH_ROUTE_JSON) &&
	    !is_json_media_type(mg_get_header(req->conn, "Content-Type"))) {
		problem(resp, 415, "unsupported-media-type",
		        "this route takes application/json (or a +json type)");
		return;
	}
	/* Counted from here: reading the body holds the worker too. */
	if (p && (counted = plugin_request_begin(srv, p, req, resp)) < 0)
		return;
	if (read_body(srv->h, req, resp) == 0 &&
	    (!(rt->r.flags & EVH_ROUTE_JSON) || check_json(srv->h, req, resp) == 0)) {
		req->plugin = p;
		call_handler(rt, req, resp);
		req->plugin = NULL;
	}
	if (counted)
		atomic_fetch_sub(&p->http_active, 1);
}

static void dispatch(http_server *srv, evh_request *req, evh_response *resp)
{
	char allow[128];
	router_result res;
	route_rec *rec;
	if (req->ri->query_string && *req->ri->query_string && query_parse(req) != 0) {
		http_resp_header(resp, "Retry-After", "1");
		problem(resp, 503, "unavailable", "out of memory reading the query string");
		return;
	}
	if (host_route(srv, req, resp))
		return;
	rec = route_acquire(srv->h, req->method, req->path, &req->m, allow, sizeof allow, &res);
	if (res == ROUTER_NOT_FOUND) {
		problem(resp, 404, "not-found", "no route for %s %s", req->method, req->path);
	} else if (res == ROUTER_NO_MEMORY) {
		http_resp_header(resp, "Retry-After", "1");
		problem(resp, 503, "unavailable", "out of memory matching the route");
	} else if (res == ROUTER_METHOD_NOT_ALLOWED) {
		http_resp_header(resp, "Allow", allow);
		problem(resp, 405, "method-not-allowed", "%s is not allowed here (allowed: %s)",
		        req->method, allow);
	} else {
		req->metrics = metrics_http_route(route_plugin_name(rec), rec->pub.r.pattern,
		                                  rec->pub.r.method);
		trace_rename(req->span, "%s %s", req->method, rec->pub.r.pattern);
		trace_attr(req->span, "http.route", rec->pub.r.pattern);
		if (*route_plugin_name(rec))
			trace_attr(req->span, "evhost.plugin", route_plugin_name(rec));
		if (rec->held) {
			http_resp_header(resp, "Retry-After", "1");
			problem(resp, 503, "unavailable", "service '%s' is restarting", rec->held);
		} else {
			plugin_route(srv, &rec->pub, req, resp);
		}
	}
	route_release(rec);
}

/* ------------------------------------------------------------ streams */

/* The limit on open SSE streams: each holds a worker thread for as long as
 * it is open, so by default half of them stay free for ordinary requests.
 * With threads = 1 that is none: a stream would hold the only worker, which
 * [http] max_streams, below threads, cannot allow either. */
int http_max_streams(const settings *s, int warn)
{
	int threads = s->http_threads > 0 ? s->http_threads : 8;
	int n = s->http_max_streams > 0 ? s->http_max_streams : threads / 2;
	if (n == 0 && warn)
		log_warn("http", HTTP_NO_STREAMS);
	return n;
}

static int max_streams(const host *h) { return http_max_streams(&h->set, 0); }

int http_resp_stream(evh_response *resp, const char *channel)
{
	evh_request *req = resp ? resp->req : NULL;
	const char *last_id;
	int rc;
	if (!req || !req->plugin || !channel)
		return EVH_EINVAL;
	if (resp->stream)
		return EVH_ESTATE;
	/* EventSource reconnects by itself and names the last id it saw: the
	 * stream starts with what the client missed since. After a refusal the
	 * page makes a new EventSource, which cannot send headers: it names the
	 * id in the URL instead. The header wins: an EventSource made that way
	 * keeps its URL when it reconnects by itself, with a newer id in the
	 * header. The query is left as it is: it is the plugin's too. */
	last_id = mg_get_header(req->conn, "Last-Event-ID");
	if (!last_id)
		last_id = http_req_query(req, STREAM_LAST_ID_PARAM);
	rc = stream_open(stream_hub_global(), req->plugin, req->plugin->name, channel, last_id,
	                 &resp->stream);
	if (rc == EVH_EBUSY || rc == EVH_ESTATE) {
		resp_free(resp);
		/* None ever, with one thread: a Retry-After would be a promise. */
		if (rc == EVH_EBUSY && max_streams(req->plugin->host) == 0) {
			problem(resp, 503, "unavailable", "this server serves no event streams "
			                                  "([http] threads = 1 leaves no worker for "
			                                  "one)");
			return rc;
		}
		http_resp_header(resp, "Retry-After", HTTP_STREAM_RETRY_AFTER);
		if (rc == EVH_EBUSY)
			problem(resp, 503, "unavailable", "too many open event streams "
			                                  "([http] max_streams); try again later");
		else
			problem(resp, 503, "unavailable", "the server is stopping");
		return rc;
	}
	if (rc != EVH_OK)
		return rc;
	resp_reset_body(resp);
	resp->status = 200;
	resp->filled = 1;
	return EVH_OK;
}

/* Write all of `buf`; 0 when the client is gone. */
/* Write a whole frame: 1, or 0 when the stream must end. civetweb returns a
 * short count when a write to a client that stopped reading passes [http]
 * request_timeout: the rest of the frame is not sent, so nothing more may
 * be (an EventSource drops an event the end of the stream cuts short, but
 * would take the next bytes, a "too slow" comment, as its rest). `sent`
 * counts what was written. */
static int stream_put(struct mg_connection *c, const char *buf, size_t len, size_t *sent)
{
	int n;

	if (len == 0)
		return 1;
	n = mg_write(c, buf, len);
	if (n > 0)
		*sent += (size_t)n;
	return n > 0 && (size_t)n == len;
}

static void stream_head(evh_request *req, evh_response *resp)
{
	struct mg_connection *c = req->conn;
	/* The body ends when the connection does. */
	mg_disable_keep_alive(c);
	mg_response_header_start(c, 200);
	mg_response_header_add(c, "Content-Type", "text/event-stream", -1);
	mg_response_header_add(c, "Cache-Control", "no-store", -1);
	/* nginx and similar proxies would otherwise hold events back. */
	mg_response_header_add(c, "X-Accel-Buffering", "no", -1);
	mg_response_header_add(c, "X-Request-Id", req->id, -1);
	for (size_t i = 0; i < resp->nheaders; i++)
		if (strcasecmp(resp->hname[i], "Cache-Control") &&
		    strcasecmp(resp->hname[i], "X-Accel-Buffering"))
			mg_response_header_add(c, resp->hname[i], resp->hvalue[i], -1);
	mg_response_header_send(c);
}

/* Whether the stream's token still passes with the keys in force now: a
 * reload that took its key out ([auth] jwt_secret_file replaced, no
 * jwt_previous_secret_file: a leaked key's remedy), or a provider that
 * withdrew it from its JWKS, or one that lowered token_ttl_max below its
 * life, refuses the next request with it, and ends its streams too. A
 * check that cannot be made now (no keys fetched yet, out of memory) keeps
 * the stream, as it would not refuse a token. */
static int stream_token_refused(const http_server *srv, const evh_request *req)
{
	const auth_keyset *k;
	const char *token, *why = NULL;
	jwt_refusal cls = JWT_REFUSED_NONE;
	jwt_claims claims;
	char *own;
	int oom, rc;

	if (!(token = bearer_token(req, &own, &oom)) || oom)
		return 0;
	k = host_auth_acquire(srv->h);
	rc = verify_token(srv, k, token, &claims, &why, &cls);
	/* A token_ttl_max lowered by a reload refuses the tokens signed to live
	 * longer at once (configuration.md): their streams too. */
	if (rc == 0 && revocations_refuse(srv->h->revoked, &claims, k->ttl_max_s,
	                                  clock_wall_ms()) == revoke_reason_too_long)
		rc = -1;
	host_auth_release(k);
	free(own);
	return rc == -1;
}

/* A stream opened with a bearer token lasts no longer than the token: past
 * its exp (and the leeway a request gets) it ends, so that an expired
 * token does not keep receiving; so does one whose subject is signed out
 * (revoke.h), and, checked again every STREAM_TOKEN_RECHECK_MS (*checked:
 * when it last was), one whose key is no longer in force. The client
 * reconnects, and is then asked for a token again. Returns the comment to
 * end with, or NULL. */
static const char *stream_token_ended(const http_server *srv, const evh_request *req,
                                      double *checked)
{
	if (!req->authed)
		return NULL;
	if ((int64_t)time(NULL) > req->claims.exp + HTTP_JWT_LEEWAY_S)
		return "token expired";
	if (!req->claims.foreign) {
		if (revocations_revokes(srv->h->revoked, req->claims.sub, req->claims.iat_ms,
		                        clock_wall_ms()))
			return "token revoked";
	}
	if (now_ms() - *checked >= STREAM_TOKEN_RECHECK_MS) {
		*checked = now_ms();
		if (stream_token_refused(srv, req))
			return "token no longer valid";
	}
	return NULL;
}

/* Serve an SSE stream on this worker thread until the client leaves, the
 * plugin stops, the server stops, the client is dropped as too slow or its
 * token expires. Returns the bytes of body written. */
static size_t stream_serve(const http_server *srv, evh_request *req, evh_response *resp)
{
	struct mg_connection *c = req->conn;
	char hello[32], end[32], unreachable[128], *buf;
	const char *ended = NULL;
	size_t sent = 0, len;
	double last, checked = now_ms();
	int fd, ok = 1;
	stream_wait_result r = STREAM_IDLE;

	if (resp->status != 200 || resp->close) {
		/* The handler opened a stream, then answered otherwise. */
		stream_release(resp->stream);
		resp->stream = NULL;
		return resp_send(req, resp);
	}
	/* Known before the first write, so a stop can cut a write that waits
	 * on a client that stopped reading (stream_hub_cut). */
	fd = stream_find_socket(req->ri->remote_addr, req->ri->remote_port, req->ri->server_port);
	stream_set_socket(resp->stream, fd);
	stream_head(req, resp);
	if (!strcmp(req->method, "HEAD"))
		return 0;
	snprintf(hello, sizeof hello, "retry: %d\n\n", STREAM_RETRY_MS);
	if (!stream_put(c, hello, strlen(hello), &sent))
		return sent;
	last = now_ms();
	while (ok && r != STREAM_CLOSED && !stream_peer_gone(fd)) {
		int left = STREAM_KEEPALIVE_MS - (int)(now_ms() - last);
		if ((ended = stream_token_ended(srv, req, &checked)) != NULL) {
			snprintf(end, sizeof end, ": %s\n\n", ended);
			stream_put(c, end, strlen(end), &sent);
			break;
		}
		if (left <= 0) {
			ok = stream_put(c, ": keepalive\n\n", 13, &sent);
			last = now_ms();
			continue;
		}
		r = stream_wait(resp->stream, left < STREAM_POLL_MS ? left : STREAM_POLL_MS, &buf,
		                &len);
		if (!buf)
			continue;
		/* Asked again for what waited: an event published after a sign-out
		 * while this worker waited is not the signed-out token's. */
		if ((ended = stream_token_ended(srv, req, &checked)) != NULL) {
			free(buf);
			snprintf(end, sizeof end, ": %s\n\n", ended);
			stream_put(c, end, strlen(end), &sent);
			break;
		}
		ok = stream_put(c, buf, len, &sent);
		free(buf);
		last = now_ms();
	}
	if (!ended && ok && r != STREAM_CLOSED && stream_socket_error(fd) == ETIMEDOUT) {
		snprintf(unreachable, sizeof unreachable,
		         "client unreachable: what it was sent went unacknowledged for [http] "
		         "stream_unacked_timeout (%d ms)",
		         srv->h->set.http_stream_unacked_ms);
		ended = unreachable;
	}
	log_debug("http", "%s %s: event stream ended (%s)", req->method, req->path,
	          ended                 ? ended
	          : !ok                ? "a write failed: the client left or stopped reading"
	          : r == STREAM_CLOSED ? stream_close_reason(resp->stream)
	                               : "client left");
	return sent;
}

/* The client's address: the peer's, or behind a proxy of [http]
 * trusted_proxies the one its X-Forwarded-For names (proxy.h). Several
 * such headers are one list, in order. The walk is from the right, so the
 * whole list is read however long: what a client wrote on the left must not
 * push out what the proxies added (taken for the proxy, its failed logins
 * would count against everyone behind it). Out of memory for a long one:
 * the peer. */
static void client_address(const http_server *srv, evh_request *req)
{
	const proxy_list *trusted = &srv->h->set.http_trusted_proxies;
	char small[1024], *xff = small;
	size_t need = 1, n = 0;
	int any = 0;
	if (trusted->n)
		for (int i = 0; i < req->ri->num_headers; i++) {
			const struct mg_header *hd = &req->ri->http_headers[i];
			if (hd->name && hd->value && !strcasecmp(hd->name, "X-Forwarded-For"))
				need += strlen(hd->value) + 2, any = 1;
		}
	if (any && need > sizeof small && !(xff = malloc(need)))
		any = 0;
	for (int i = 0; any && i < req->ri->num_headers; i++) {
		const struct mg_header *hd = &req->ri->http_headers[i];
		if (hd->name && hd->value && !strcasecmp(hd->name, "X-Forwarded-For"))
			n += (size_t)snprintf(xff + n, need - n, "%s%s", n ? ", " : "", hd->value);
	}
	req->forwarded = proxy_client_addr(trusted, req->ri->remote_addr, any ? xff : NULL,
	                                   req->client, sizeof req->client);
	if (xff != small)
		free(xff);
}

/* Probes and scrapes come every few seconds and say nothing about a trace:
 * no span for them. */
static int untraced(const evh_request *req)
{
	return is_host_path(req->path, "/healthz") || is_host_path(req->path, "/readyz") ||
	       is_host_path(req->path, "/metrics");
}

/* The request's span, once it is answered. */
static void request_span_end(evh_request *req, const evh_response *resp)
{
	trace_attr(req->span, "http.request.method", req->method);
	trace_attr(req->span, "url.path", req->path);
	trace_attr_int(req->span, "http.response.status_code", resp->status);
	trace_attr(req->span, "client.address", req->client);
	if (req->forwarded)
		trace_attr(req->span, "network.peer.address", req->ri->remote_addr);
	trace_attr(req->span, "evhost.request_id", req->id);
	if (resp->status >= 500)
		trace_error(req->span, "HTTP %d", resp->status);
	trace_end(req->span);
	trace_current_clear();
}

/* A Content-Length value: digits only, and not past int64. */
static int content_length_ok(const char *v)
{
	size_t n = strspn(v, "0123456789");
	return n > 0 && n <= 18 && v[n + strspn(v + n, " \t")] == '\0';
}

/* The first Content-Length of the request that is not a length, or NULL
 * (for civetweb's 411 on one; check_head finds them in its own walk). */
static const char *bad_content_length(const struct mg_request_info *ri)
{
	for (int i = 0; i < ri->num_headers; i++) {
		const struct mg_header *hd = &ri->http_headers[i];
		if (hd->name && hd->value && !strcasecmp(hd->name, "Content-Length") &&
		    !content_length_ok(hd->value))
			return hd->value;
	}
	return NULL;
}

/* What a 400 says of Content-Length `v` (civetweb has trimmed its spaces:
 * an empty one would read "Content-Length:  is"). */
static void say_bad_length(char *out, size_t n, const char *v)
{
	if (*v)
		snprintf(out, n, "Content-Length: %.32s is not a length", v);
	else
		snprintf(out, n, "an empty Content-Length is not a length");
}

/* Whether civetweb 1.15 ended the head early, without a word, at a line it
 * cannot read as a field: one beginning with a space or a tab (an obs-fold,
 * which RFC 9112 5.2 has a server refuse or unfold), a colon, or a byte
 * past 0x7e. The fields after it are dropped, a Content-Length among them:
 * the body is then read as the next request, where a proxy in front that
 * unfolds the line framed one request (smuggling). civetweb parses the
 * head in place, a NUL for each line end's CR and LF, and the head's last
 * byte a NUL: after the last field's value the blank line must come. The
 * last line is taken to end as the one before it did (CRLF or LF: a NUL
 * more or less); one whose end cannot be told passes. */
static int head_cut_short(const struct mg_request_info *ri)
{
	int n = ri->num_headers;
	const char *before, *next, *p;
	if (n < 1 || !ri->http_headers[n - 1].value || !ri->http_headers[n - 1].name)
		return 0;
	before = n > 1 ? ri->http_headers[n - 2].value : ri->http_version;
	next = ri->http_headers[n - 1].name;
	if (!before)
		return 0;
	before += strlen(before);
	p = ri->http_headers[n - 1].value;
	p += strlen(p);
	if (next - before == 2) /* CRLF, then the blank line: CRLF or LF */
		return !(p[1] == '\0' && ((p[2] == '\r' && p[3] == '\0') || p[2] == '\0'));
	if (next - before == 1) /* LF, then the blank line: LF (the head's end) or CRLF */
		return !(p[1] == '\0' || (p[1] == '\r' && p[2] == '\0'));
	return 0;
}

/* The request's framing and head, as RFC 9112 asks of a server, before
 * anything else (civetweb 1.15 takes the first of two Content-Lengths,
 * reads "12x" as 12, lets Transfer-Encoding override a Content-Length
 * without a word, and serves HTTP/1.1 without Host; a negative or empty
 * Content-Length it answers itself, see handle_civetweb_error). A message whose
 * length is in doubt is refused and its connection closed: a proxy in
 * front may have framed it otherwise (request smuggling). Then Expect
 * (RFC 9110, 10.1.1): 100-continue is answered when the body is read,
 * after the checks that could refuse the request (404, 401, 415, 413...),
 * so a refused client need not send its body at all; any other
 * expectation is refused with 417, an HTTP/1.0 request's is ignored.
 * 0, or -1 with the problem set. */
static int check_head(evh_request *req, evh_response *resp)
{
	const char *v, *te = NULL;
	char why[80];
	int ncl = 0, nhost = 0, nte = 0;
	size_t n;
	/* civetweb 1.15 keeps a head's first MG_MAX_HEADERS header fields and
	 * drops the others without a word. A Content-Length or
	 * Transfer-Encoding past them would frame the message for a proxy in
	 * front and not here (its body read as the next request: smuggling),
	 * and an X-Forwarded-For the proxy appended would be lost. With that
	 * many kept, more may have come: refused, the connection closed. */
	if (req->ri->num_headers >= MG_MAX_HEADERS) {
		resp->close = 1;
		problem(resp, 431, "headers-too-large",
		        "%d header fields or more; this server takes at most %d", MG_MAX_HEADERS,
		        MG_MAX_HEADERS - 1);
		return -1;
	}
	if (head_cut_short(req->ri)) {
		resp->close = 1;
		problem(resp, 400, "bad-request",
		        "a header line begins with a space or a tab (a folded line), a colon or a "
		        "byte past 0x7e");
		return -1;
	}
	for (int i = 0; i < req->ri->num_headers; i++) {
		const struct mg_header *hd = &req->ri->http_headers[i];
		if (!hd->name || !hd->value)
			continue;
		if (!strcasecmp(hd->name, "Host"))
			nhost++;
		if (!strcasecmp(hd->name, "Transfer-Encoding") && !nte++)
			te = hd->value;
		if (strcasecmp(hd->name, "Content-Length"))
			continue;
		if (!content_length_ok(hd->value)) {
			resp->close = 1;
			say_bad_length(why, sizeof why, hd->value);
			problem(resp, 400, "bad-request", "%s", why);
			return -1;
		}
		if (ncl++ && strtoll(hd->value, NULL, 10) != req->ri->content_length) {
			resp->close = 1;
			problem(resp, 400, "bad-request", "two different Content-Length headers");
			return -1;
		}
	}
	if (ncl && nte) {
		resp->close = 1;
		problem(resp, 400, "bad-request", "both Content-Length and Transfer-Encoding");
		return -1;
	}
	/* chunked alone is the one coding read here. Another (identity, gzip)
	 * let civetweb take the body as absent, and its bytes were then read as
	 * the next request on the connection: RFC 9112 6.1 has 501 for it. */
	if (nte > 1 || (nte && !token_is(te, "chunked"))) {
		resp->close = 1;
		if (nte > 1)
			problem(resp, 501, "not-implemented",
			        "more than one Transfer-Encoding header; this server reads chunked alone");
		else
			problem(resp, 501, "not-implemented",
			        "Transfer-Encoding %.32s is not supported; this server reads chunked alone",
			        te);
		return -1;
	}
	/* HTTP/1.0 has no Transfer-Encoding: a hop that framed the message
	 * otherwise may follow it on this connection (RFC 9112 6.1: faulty
	 * framing, the connection closed after the answer). */
	if (nte && is_http10(req))
		resp->close = 1;
	if (!is_http10(req) && nhost != 1) {
		resp->close = 1;
		problem(resp, 400, "bad-request", nhost ? "more than one Host header"
		                                        : "an HTTP/1.1 request needs a Host header");
		return -1;
	}
	v = mg_get_header(req->conn, "Expect");
	if (!v || is_http10(req))
		return 0;
	v += strspn(v, " \t");
	n = http_value_len(v);
	if (n == 12 && !strncasecmp(v, "100-continue", 12)) {
		req->expect_continue = 1;
		return 0;
	}
	resp->close = 1;
	problem(resp, 417, "expectation-failed",
	        "Expect: %.*s is not supported (only 100-continue is)", n > 64 ? 64 : (int)n, v);
	return -1;
}

/* [log] access (http_access_log): set at start and by a reload. */
static atomic_int access_log_mode = HTTP_ACCESS_ALL;

void http_set_access_log(http_access_log which) { atomic_store(&access_log_mode, (int)which); }

/* Whether a request answered `status` gets its access log line, by `mode`:
 * access_log_mode as the request came (a reload while it is answered
 * neither adds nor removes its line: a client told "off" and answered has
 * no line appearing after a reload to "all"). */
static int access_logged(int mode, int status)
{
	return mode == HTTP_ACCESS_ALL || (mode == HTTP_ACCESS_ERRORS && status >= 400);
}

/* The caller's traceparent: its one header's value, spaces and tabs around
 * it taken off (HTTP's optional whitespace, which civetweb keeps at the
 * end); "" for none, and for two or more, which W3C says to ignore (a new
 * trace then), not to take the first of. `buf` holds the value. */
static const char *caller_traceparent(const struct mg_request_info *ri, char buf[64])
{
	const char *v = NULL;
	size_t n;
	int seen = 0;

	for (int i = 0; i < ri->num_headers; i++)
		if (ri->http_headers[i].name && !strcasecmp(ri->http_headers[i].name, "traceparent")) {
			v = ri->http_headers[i].value;
			seen++;
		}
	if (seen != 1 || !v)
		return "";
	v += strspn(v, " \t");
	n = http_value_len(v);
	if (n >= 64)
		return v; /* too long for one: the parser refuses it as it is */
	memcpy(buf, v, n);
	buf[n] = '\0';
	return buf;
}

/* The request a civetweb worker is in (handle_request), for the stop's
 * warning about those it leaves running: one per worker thread, listed
 * while the thread runs. Its own lock, taken by the worker twice a
 * request, is contended only by that warning. */
typedef struct busy_slot {
	struct busy_slot *prev, *next;
	const http_server *srv;
	pthread_mutex_t mu;
	const evh_request *req; /* NULL: between requests */
	double since_ms;        /* now_ms() */
} busy_slot;

static _Thread_local busy_slot my_busy = {.mu = PTHREAD_MUTEX_INITIALIZER};
static pthread_mutex_t busy_mu = PTHREAD_MUTEX_INITIALIZER; /* the list */
static busy_slot *busy_slots;

static void busy_set(const evh_request *req, double since_ms)
{
	pthread_mutex_lock(&my_busy.mu);
	my_busy.req = req;
	my_busy.since_ms = since_ms;
	pthread_mutex_unlock(&my_busy.mu);
}

/* Say each request of `srv` still running (at most 10 lines). */
static void busy_say(const http_server *srv, int waited_ms)
{
	int said = 0, more = 0;
	double now = now_ms();
	pthread_mutex_lock(&busy_mu);
	for (busy_slot *b = busy_slots; b; b = b->next) {
		if (b->srv != srv)
			continue;
		pthread_mutex_lock(&b->mu);
		if (b->req && said < 10) {
			log_warn("http", "still running after %d ms of the stop, left without an answer: "
			                 "%s %s (request %s, running for %.0f ms)",
			         waited_ms, b->req->method, b->req->path, b->req->id, now - b->since_ms);
			said++;
		} else if (b->req) {
			more++;
		}
		pthread_mutex_unlock(&b->mu);
	}
	pthread_mutex_unlock(&busy_mu);
	if (more)
		log_warn("http", "and %d more request(s) still running", more);
}

static int handle_request(struct mg_connection *conn, void *cbdata)
{
	http_server *srv = cbdata;
	evh_request req;
	evh_response resp;
	trace_span span;
	const char *tp, *cert;
	char tpbuf[64];
	double t0 = now_ms();
	size_t sent;
	int refused, access = atomic_load(&access_log_mode);
	memset(&req, 0, sizeof req);
	memset(&resp, 0, sizeof resp);
	req.conn = conn;
	req.ri = mg_get_request_info(conn);
	req.method = req.ri->request_method ? req.ri->request_method : "";
	req.path = req.ri->local_uri ? req.ri->local_uri : "/";
	resp.req = &req;
	resp.status = 200;
	client_address(srv, &req);
	request_id(&req);
	/* The caller's trace, from its traceparent header; else a trace whose
	 * id is the request id when evhost made that (16 random bytes, as W3C
	 * asks). Never the thread's current span ("" rather than NULL): a
	 * request is the first span of this thread's work. The span is named
	 * "METHOD /route" once the route is known. */
	tp = caller_traceparent(req.ri, tpbuf);
	trace_begin(&span, TRACE_SERVER, tp, req.id, "%s", req.method);
	if (untraced(&req))
		trace_drop(&span);
	req.span = &span;
	trace_current_set(&span);
	log_set_context(req.id, span.trace_id);
	/* Counted before `stopping` is read, so a stop either waits for this
	 * request or this request sees the stop. */
	atomic_fetch_add(&srv->inflight, 1);
	busy_set(&req, t0);
	if (atomic_load(&srv->stopping)) {
		http_resp_header(&resp, "Retry-After", "1");
		problem(&resp, 503, "unavailable", "the server is stopping");
		resp.close = 1;
	} else if (check_head(&req, &resp) == 0) {
		dispatch(srv, &req, &resp);
	}
	/* civetweb would read and drop an unread body to keep the connection;
	 * not worth it for a big or open-ended one, nor possible for one the
	 * client holds back until it is told to go on (a refused Expect:
	 * 100-continue). */
	if (!req.body_read && (req.ri->content_length > HTTP_CHUNK || is_chunked(conn) ||
	                       (req.expect_continue && req.ri->content_length > 0)))
		resp.close = 1;
	if (resp.stream) {
		sent = stream_serve(srv, &req, &resp);
		metrics_http_request(req.metrics, req.method, resp.status, (now_ms() - t0) / 1000.0);
	} else {
		/* Counted before the write: a client that scrapes /metrics right
		 * after its response must find the request in it. */
		metrics_http_request(req.metrics, req.method, resp.status, (now_ms() - t0) / 1000.0);
		sent = resp_send(&req, &resp);
	}
	request_span_end(&req, &resp);
	/* The access log: the peer's address (a proxy's, behind one), under
	 * mutual TLS the client certificate's subject, and why a 401 or 403
	 * refused the client (its problem's detail). */
	cert = http_req_client_cert(&req);
	refused = (resp.status == 401 || resp.status == 403) && resp.refusal[0];
	if (access_logged(access, resp.status))
		log_info("http", "%s %s %d %zu bytes %.1f ms, from %s%s%s%s%s%s%s", req.method,
		         req.path, resp.status, sent, now_ms() - t0, req.client,
		         req.forwarded ? " via " : "", req.forwarded ? req.ri->remote_addr : "",
		         cert ? ", client " : "", cert ? cert : "", refused ? ": " : "",
		         refused ? resp.refusal : "");
	log_set_context(NULL, NULL);
	busy_set(NULL, 0);
	resp_free(&resp);
	req_free(&req);
	if (atomic_fetch_sub(&srv->inflight, 1) == 1 && atomic_load(&srv->stopping)) {
		pthread_mutex_lock(&drain_mu);
		pthread_cond_broadcast(&drain_cv);
		pthread_mutex_unlock(&drain_mu);
	}
	return resp.status;
}

/* A request evhost answers without routing it (civetweb refused it, or the
 * server is starting): problem+json `status` saying `msg`, the connection
 * closed, in the access log ([log] access permitting), and counted (route
 * "unmatched"). `retry_after` (or NULL) is its Retry-After. */
static void answer_unrouted(evh_request *req, evh_response *resp, int status, const char *msg,
                            const char *retry_after)
{
	const struct mg_request_info *ri = req->ri;
	int access = atomic_load(&access_log_mode);
	size_t sent;
	if (retry_after)
		http_resp_header(resp, "Retry-After", retry_after);
	problem(resp, status, status_slug(status), "%s", msg);
	resp->close = 1;
	/* When its first byte came is civetweb's: no duration to observe. */
	metrics_http_request(NULL, req->method, status, -1);
	sent = resp_send(req, resp);
	if (access_logged(access, status))
		log_info("http", "%s %s %d %zu bytes, from %s: %s", *req->method ? req->method : "-",
		         req->path ? req->path : "-", status, sent,
		         ri && ri->remote_addr[0] ? ri->remote_addr : "an unknown peer", msg);
}

/* Bytes of a method an unrouted request's log line shows: the longest
 * civetweb knows (PROPPATCH) and then some. */
#define METHOD_SHOWN_MAX 32

/* The request and response answer_unrouted takes, for `conn`. */
static void unrouted_begin(struct mg_connection *conn, evh_request *req, evh_response *resp)
{
	const struct mg_request_info *ri = mg_get_request_info(conn);
	memset(req, 0, sizeof *req);
	memset(resp, 0, sizeof *resp);
	req->conn = conn;
	req->ri = ri;
	req->method = "";
	/* Only a method that is one: civetweb 1.15 stops parsing a request line
	 * at a byte past ASCII in its first word without ending the method, which
	 * then runs to the end of the head (every header, Authorization and
	 * Cookie too, into the access log, and text a client chose). */
	if (ri && ri->request_method) {
		size_t n = strnlen(ri->request_method, METHOD_SHOWN_MAX + 1);
		if (n <= METHOD_SHOWN_MAX && http_token_len(ri->request_method, n) == n)
			req->method = ri->request_method;
	}
	req->path = ri && ri->local_uri ? ri->local_uri : NULL;
	resp->req = req;
	request_id(req);
	log_set_context(req->id, NULL);
}

/* civetweb's first call for every request, before its authorization and
 * routing. civetweb listens before evhost's handlers are set (http_start):
 * until then it has no route for anything, /healthz included, and would say
 * 404. Not there yet: 503. */
static int begin_request(struct mg_connection *conn)
{
	const http_server *srv = mg_get_user_data(mg_get_context(conn));
	evh_request req;
	evh_response resp;
	if (atomic_load(&srv->routing))
		return 0;
	unrouted_begin(conn, &req, &resp);
	answer_unrouted(&req, &resp, 503, "the server is starting; try again", "1");
	log_set_context(NULL, NULL);
	resp_free(&resp);
	return 503;
}

/* A method token (RFC 9110 5.6.2, upper case as methods are) that civetweb
 * 1.15 does not take (its list: the HTTP ones but TRACE, and WebDAV's). A
 * known one refused as "Bad request" was refused for something else, as was
 * a request line without a path or a version ("NOT HTTP"). */
static int unknown_method(const char *m)
{
	static const char *const known[] = {"GET",   "HEAD",     "POST",  "PUT",    "DELETE",
	                                    "OPTIONS", "CONNECT", "PATCH", "PROPFIND", "MKCOL",
	                                    "LOCK",  "UNLOCK",   "PROPPATCH", "COPY", "MOVE",
	                                    "REPORT", NULL};
	if (!m || !*m || strspn(m, "ABCDEFGHIJKLMNOPQRSTUVWXYZ-_") != strlen(m))
		return 0;
	for (size_t i = 0; known[i]; i++)
		if (!strcmp(known[i], m))
			return 0;
	return 1;
}

/* civetweb's own errors (requests it refuses before evhost sees them) as
 * problem+json too. */
static int handle_civetweb_error(struct mg_connection *conn, int status, const char *msg)
{
	evh_request req;
	evh_response resp;
	const http_server *srv = mg_get_user_data(mg_get_context(conn));
	const struct mg_request_info *ri;
	const char *length;
	char why[256];
	if (status < 400 || status > 599)
		return 1;
	unrouted_begin(conn, &req, &resp);
	ri = req.ri;
	/* civetweb 1.15 says this of a head that is not HTTP, but also of one
	 * that outgrew its buffer (max_request_size, where 431 belongs) or was
	 * still incomplete at request_timeout: it cannot tell us which. */
	if (msg && !strcmp(msg, "Malformed message")) {
		snprintf(why, sizeof why,
		         "the request's head was malformed, larger than %d bytes ([http] "
		         "max_head_bytes: the request line and headers), or incomplete at [http] "
		         "request_timeout",
		         srv->max_head);
		msg = why;
	} else if (status == 411 && ri && (length = bad_content_length(ri)) != NULL) {
		/* civetweb 1.15 (get_request) says 411 "Bad request" of a
		 * Content-Length that strtoll reads as negative or not at all
		 * ("-1", ""): a 400 naming it, as check_head says of the others
		 * (RFC 9112 6.3). The head is parsed by then. */
		status = 400;
		say_bad_length(why, sizeof why, length);
		msg = why;
	} else if (status == 400 && msg && !strcmp(msg, "Bad request") && ri &&
	           unknown_method(ri->request_method) && ri->request_uri &&
	           (ri->request_uri[0] == '/' || ri->request_uri[0] == '*') && ri->http_version &&
	           *ri->http_version) {
		/* civetweb 1.15 says this of a method it does not know (and of
		 * TRACE): RFC 9110 15.6.2 has 501 for it, naming the method. */
		status = 501;
		snprintf(why, sizeof why, "this server does not support the method %.32s",
		         ri->request_method);
		msg = why;
	} else if (!msg || !*msg) {
		msg = reason_phrase(status);
	}
	answer_unrouted(&req, &resp, status, msg, NULL);
	log_set_context(NULL, NULL);
	resp_free(&resp);
	return 0;
}

evh_log_level http_civetweb_level(const char *msg, char *out, size_t n)
{
	/* A client that fails the TLS handshake (plain HTTP sent to the HTTPS
	 * port, a scanner, a certificate the client refused) is the client's
	 * business, and anyone can cause as many as they like. */
	if (!strncmp(msg, "sslize error", 12)) {
		snprintf(out, n, "a TLS handshake failed: %s", msg);
		return EVH_LOG_DEBUG;
	}
	/* The same for a TLS connection the client reset or dropped (civetweb
	 * says "SSL syscall error <errno>" where a plain one says nothing). */
	if (!strncmp(msg, "SSL syscall error ", 18)) {
		int code = atoi(msg + 18);
		snprintf(out, n, "a TLS connection ended abruptly: %s (%s)", msg,
		         code > 0 ? strerror(code) : "end of file");
		return EVH_LOG_DEBUG;
	}
	snprintf(out, n, "civetweb: %s", msg);
	return EVH_LOG_WARN;
}

static int log_civetweb(const struct mg_connection *conn, const char *msg)
{
	http_server *srv = conn ? mg_get_user_data(mg_get_context(conn)) : NULL;
	char text[1024];
	evh_log_level level;
	if (srv && atomic_load(&srv->starting)) {
		if (!srv->start_error[0])
			snprintf(srv->start_error, sizeof srv->start_error, "%s", msg);
		return 1;
	}
	level = http_civetweb_level(msg, text, sizeof text);
	log_msg(level, "http", "%s", text);
	return 1;
}

/* ---------------------------------------------------------------- start */

/* "cannot bind to 127.0.0.1:8080: 98 (Address already in use)" -> the
 * part in parentheses; anything else as it is. */
static void start_reason(const http_server *srv, const char *fallback, char *out, size_t n)
{
	const char *msg = srv->start_error[0] ? srv->start_error : fallback;
	const char *open = strrchr(msg, '('), *close = strrchr(msg, ')');
	if (!strncmp(msg, "cannot bind", 11) && open && close > open)
		snprintf(out, n, "%.*s", (int)(close - open - 1), open + 1);
	else
		snprintf(out, n, "%s", *msg ? msg : "civetweb failed to start");
}

/* civetweb's listening_ports for `s` into out[LISTEN_MAX]. */
static int listen_spec(char *out, const settings *s, char *err, size_t errlen)
{
	if (s->http_listen && *s->http_listen)
		snprintf(out, LISTEN_MAX, "%s", s->http_listen);
	else if (s->http_host && strchr(s->http_host, ':'))
		snprintf(out, LISTEN_MAX, "[%s]:%d", s->http_host, s->http_port);
	else
		snprintf(out, LISTEN_MAX, "%s:%d",
		         s->http_host ? s->http_host : "127.0.0.1", s->http_port);
	if ((out[0] == '[' || (s->http_tls_listen && s->http_tls_listen[0] == '[')) &&
	    !http_has_ipv6()) {
		snprintf(err, errlen,
		         "cannot listen on %s: this civetweb build has no IPv6 support; "
		         "use an IPv4 address",
		         out[0] == '[' ? out : s->http_tls_listen);
		return -1;
	}
	/* civetweb's syntax for a TLS port: the address with an "s". */
	if (s->http_tls_listen) {
		size_t n = strlen(out);
		int w = snprintf(out + n, LISTEN_MAX - n, ",%ss", s->http_tls_listen);
		if (w < 0 || (size_t)w >= LISTEN_MAX - n) {
			snprintf(err, errlen, "listen addresses too long");
			return -1;
		}
	}
	return 0;
}

int http_has_ipv6(void) { return mg_check_feature(MG_FEATURES_IPV6) != 0; }

/* Whether `addr` (IPV4:PORT or [IPV6]:PORT) can be bound: 0, or -1 with
 * the OS's reason in err. Port 0, and what does not parse, pass: civetweb
 * says what is wrong with those. */
static int try_bind(const char *addr, const char *what, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t len;
	char name[64];
	const char *colon = strrchr(addr, ':');
	int port, fd, one = 1, e;
	memset(&ss, 0, sizeof ss);
	if (!colon || (size_t)(colon - addr) >= sizeof name || (port = atoi(colon + 1)) <= 0)
		return 0;
	snprintf(name, sizeof name, "%.*s", (int)(colon - addr), addr);
	if (name[0] == '[' && name[strlen(name) - 1] == ']') {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
		name[strlen(name) - 1] = '\0';
		if (inet_pton(AF_INET6, name + 1, &a->sin6_addr) != 1)
			return 0;
		a->sin6_family = AF_INET6;
		a->sin6_port = htons((uint16_t)port);
		len = sizeof *a;
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;
		if (inet_pton(AF_INET, name, &a->sin_addr) != 1)
			return 0;
		a->sin_family = AF_INET;
		a->sin_port = htons((uint16_t)port);
		len = sizeof *a;
	}
	if ((fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		return 0; /* not this check's to say */
	/* As civetweb binds: a port left in TIME_WAIT is free. */
	(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	e = bind(fd, (struct sockaddr *)&ss, len) == 0 ? 0 : errno;
	close(fd);
	if (!e)
		return 0;
	snprintf(err, errlen, "cannot listen on %s%s: %s", addr, what, strerror(e));
	return -1;
}

int http_check_listen(const settings *s, char *err, size_t errlen)
{
	char plain[LISTEN_MAX];
	if (listen_spec(plain, s, err, errlen) != 0)
		return -1;
	plain[strcspn(plain, ",")] = '\0'; /* without tls_listen's "...s" */
	if (try_bind(plain, "", err, errlen) != 0)
		return -1;
	return s->http_tls_listen ? try_bind(s->http_tls_listen, " (HTTPS)", err, errlen) : 0;
}

/* Each civetweb thread: a stack for the crash handler (a plugin's handler
 * may overflow the worker's 100 KiB), given back when it ends; a worker's
 * busy slot listed. */
static void *worker_thread_init(const struct mg_context *ctx, int thread_type)
{
	http_server *srv = ctx ? mg_get_user_data(ctx) : NULL;
	if (srv && thread_type == 0)
		atomic_fetch_add(&srv->masters, 1);
	else if (srv && thread_type == 1) {
		atomic_fetch_add(&srv->workers, 1);
		pthread_mutex_lock(&busy_mu);
		my_busy.srv = srv;
		my_busy.next = busy_slots;
		if (busy_slots)
			busy_slots->prev = &my_busy;
		busy_slots = &my_busy;
		pthread_mutex_unlock(&busy_mu);
	}
	return crash_thread_enter();
}

/* Whether civetweb's accept thread and its `want` workers all came up,
 * waiting up to 5 s for them (they start after mg_start2 returns); else
 * the reason in err. A thread civetweb could not create it says (into
 * start_error) and goes on without. */
static int threads_started(http_server *srv, int want, char *err, size_t errlen)
{
	const struct timespec tick = {0, 10 * 1000 * 1000};
	for (int i = 0; i < 500; i++) {
		if (atomic_load(&srv->masters) == 1 && atomic_load(&srv->workers) == want)
			return 0;
		if (srv->start_error[0] && strstr(srv->start_error, "Cannot start"))
			break;
		nanosleep(&tick, NULL);
	}
	snprintf(err, errlen,
	         "cannot start the HTTP server's threads (%d of [http] threads = %d%s; civetweb: "
	         "%s): raise the process's thread limit (systemd TasksMax= or LimitNPROC=, "
	         "ulimit -u) or lower [http] threads",
	         atomic_load(&srv->workers), want,
	         atomic_load(&srv->masters) ? "" : ", no accept thread",
	         srv->start_error[0] ? srv->start_error : "no error said");
	return -1;
}

static void worker_thread_exit(const struct mg_context *ctx, int thread_type, void *stack)
{
	(void)ctx;
	if (thread_type == 1 && my_busy.srv) {
		pthread_mutex_lock(&busy_mu);
		if (my_busy.prev)
			my_busy.prev->next = my_busy.next;
		else
			busy_slots = my_busy.next;
		if (my_busy.next)
			my_busy.next->prev = my_busy.prev;
		my_busy.srv = NULL;
		pthread_mutex_unlock(&busy_mu);
	}
	crash_thread_leave(stack);
}

/* HTTPS: OpenSSL for civetweb (tls_compat.c), then civetweb's TLS set up.
 * The certificate itself is loaded by mg_start2, which says what is wrong
 * with it. */
static int tls_init(char *err, size_t errlen)
{
	char why[768];
	if (!mg_check_feature(MG_FEATURES_TLS)) {
		snprintf(err, errlen, "[http] tls_listen: this civetweb build has no TLS support");
		return -1;
	}
	if (tls_compat_load(why, sizeof why) != 0) {
		snprintf(err, errlen, "[http] tls_listen: %s", why);
		return -1;
	}
	if (!(mg_init_library(MG_FEATURES_TLS) & MG_FEATURES_TLS)) {
		mg_exit_library();
		snprintf(err, errlen, "[http] tls_listen: civetweb could not initialise OpenSSL");
		return -1;
	}
	return 0;
}

/* [http] tls_ciphers by default: TLS 1.2 only with forward secrecy (ECDHE)
 * and an AEAD cipher (GCM, ChaCha20-Poly1305), for ECDSA and RSA
 * certificates. OpenSSL's own default also offers static-RSA key exchange
 * (no forward secrecy) and CBC with SHA-1. */
#define HTTP_TLS12_CIPHERS                                                                 \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                           \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                           \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

/* civetweb's init_ssl callback, before it loads the certificate. */
static int init_tls(void *ssl_ctx, void *user_data)
{
	const settings *s = &((http_server *)user_data)->h->set;
	char err[512];
	if (tls_ctx_setup(ssl_ctx, s->http_tls_min13, s->http_tls_client_ca) != 0)
		return -1;
	/* Checked with the configuration: a failure here is not expected. */
	if (tls_ciphers_set(ssl_ctx, s->http_tls_ciphers ? s->http_tls_ciphers : HTTP_TLS12_CIPHERS,
	                    s->http_tls_ciphersuites, err, sizeof err) != 0) {
		log_error("http", "[http] %s", err);
		return -1;
	}
	return 0;
}

/* evhost authorises requests itself (JWT routes, the admin token). Without
 * a handler for it, civetweb looks for a ".htpasswd" beside every request's
 * path (with no document root that is "/.htpasswd": a stat() per request)
 * and, were one there, would demand HTTP digest authentication of every
 * route. */
/* Connections as civetweb's workers take them and let them go:
 * evhost_http_connections. civetweb 1.15 calls init_connection once a TLS
 * handshake is done, but connection_close for every connection, failed
 * handshakes too: a connection counted is marked, and only a marked one is
 * counted off (and unmarked: civetweb reuses the connection's record). */
static char counted_mark;

static int connection_taken(const struct mg_connection *conn, void **conn_data)
{
	(void)conn;
	*conn_data = &counted_mark;
	metrics_http_connection(1);
	return 0;
}

static void connection_closing(const struct mg_connection *conn)
{
	if (mg_get_user_connection_data(conn) != &counted_mark)
		return;
	mg_set_user_connection_data(conn, NULL);
	metrics_http_connection(-1);
}

static int civetweb_auth(struct mg_connection *conn, void *cbdata)
{
	(void)conn;
	(void)cbdata;
	return 1;
}

int http_start(http_server **out, host *h, char *err, size_t errlen)
{
	http_server *srv;
	struct mg_callbacks cb;
	char threads[16], timeout[16], keep_ms[16], head[16];
	char etext[256] = "", reason[256], what[768] = "", at[80];
	unsigned ecode = 0;
	struct mg_error_data e = {&ecode, etext, sizeof etext};
	const char *opts[] = {"listening_ports", NULL, "num_threads", threads,
	                      "request_timeout_ms", timeout, "enable_keep_alive", "yes",
	                      "keep_alive_timeout_ms", keep_ms, "max_request_size", head,
	                      "decode_url", "no", "tcp_nodelay", "1",
	                      /* An absolute-form target (GET http://host:port/path,
	                       * RFC 9112 3.2.2) is served whatever host it names:
	                       * with the check on, civetweb closes the connection
	                       * without an answer unless the host is its
	                       * authentication_domain, which evhostd does not use.
	                       * It still does when the port is not the listening
	                       * socket's, before any callback (operations.md). */
	                      "enable_auth_domain_check", "no",
	                      /* No CORS: civetweb answered every browser's preflight
	                       * (OPTIONS with Access-Control-Request-Method) itself,
	                       * 200 allowing any origin and method, so any web page
	                       * a user visited could send the routes open by default
	                       * (POST /users, /crud) JSON writes. Without these its
	                       * preflight goes to the router like any OPTIONS. */
	                      "access_control_allow_methods", "",
	                      "access_control_allow_origin", "",
	                      /* HTTPS (set below): key and chain from one PEM file;
	                       * TLS 1.2 and later only; client certificates */
	                      NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
	                      NULL};
	const size_t tls_at = 22;
	struct mg_init_data init = {&cb, NULL, opts};
	*out = NULL;
	drain_cv_ready(); /* before any request: they signal it */
	if (!h || !h->router) {
		snprintf(err, errlen, "no router");
		return -1;
	}
	if (sodium_init() < 0) {
		snprintf(err, errlen, "libsodium failed to initialize");
		return -1;
	}
	srv = calloc(1, sizeof *srv);
	if (!srv) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	srv->h = h;
	pthread_mutex_lock(&body_watch_mu); /* a server stopped before, in tests */
	bodies_stopping = 0;
	pthread_mutex_unlock(&body_watch_mu);
	if (listen_spec(srv->listen, &h->set, err, errlen) != 0) {
		free(srv);
		return -1;
	}
	opts[1] = srv->listen;
	snprintf(threads, sizeof threads, "%d", h->set.http_threads > 0 ? h->set.http_threads : 8);
	snprintf(timeout, sizeof timeout, "%d",
	         h->set.http_request_timeout_ms > 0 ? h->set.http_request_timeout_ms
	                                            : HTTP_REQUEST_TIMEOUT_MS);
	srv->keep_alive = h->set.http_keep_alive_ms >= 0;
	snprintf(keep_ms, sizeof keep_ms, "%d",
	         h->set.http_keep_alive_ms > 0 ? h->set.http_keep_alive_ms : HTTP_KEEP_ALIVE_MS);
	opts[7] = srv->keep_alive ? "yes" : "no"; /* enable_keep_alive */
	srv->max_head = h->set.http_max_head_bytes > 0 ? h->set.http_max_head_bytes : HTTP_MAX_HEAD;
	snprintf(head, sizeof head, "%d", srv->max_head);
	memset(&cb, 0, sizeof cb);
	cb.log_message = log_civetweb;
	cb.init_thread = worker_thread_init;
	cb.exit_thread = worker_thread_exit;
	cb.begin_request = begin_request;
	cb.http_error = handle_civetweb_error;
	cb.init_connection = connection_taken;
	cb.connection_close = connection_closing;
	init.user_data = srv;
	if (h->set.http_tls_listen) {
		if (tls_init(err, errlen) != 0) {
			free(srv);
			return -1;
		}
		if (!h->tls) { /* host_configure read it */
			snprintf(err, errlen, "[http] tls_certificate: not read");
			free(srv);
			return -1;
		}
		/* Each handshake gets the bundle in use (h->tls once started;
		 * replaced by a reload). */
		cb.init_ssl = init_tls;
		opts[tls_at] = "ssl_certificate"; /* civetweb reads the chain from it too */
		opts[tls_at + 1] = h->set.http_tls_certificate;
		opts[tls_at + 2] = "ssl_protocol_version";
		opts[tls_at + 3] = "4";
		if (h->set.http_tls_client_ca) {
			/* Mutual TLS: a client certificate from these CAs only (not the
			 * system's, which would admit any publicly trusted one). */
			opts[tls_at + 4] = "ssl_verify_peer";
			opts[tls_at + 5] = "yes";
			opts[tls_at + 6] = "ssl_ca_file";
			opts[tls_at + 7] = h->set.http_tls_client_ca;
			opts[tls_at + 8] = "ssl_default_verify_paths";
			opts[tls_at + 9] = "no";
		}
	} else {
		mg_init_library(0);
	}
	atomic_store(&srv->starting, 1);
	srv->ctx = mg_start2(&init, &e);
	atomic_store(&srv->starting, 0);
	if (!srv->ctx) {
		start_reason(srv, etext, reason, sizeof reason);
		if (h->set.http_tls_listen && !strncmp(reason, "ssl", 3))
			snprintf(err, errlen, "[http] tls_certificate '%s': %s",
			         h->set.http_tls_certificate, reason);
		else if (h->set.http_tls_listen)
			snprintf(err, errlen, "cannot listen on %.*s and %s (HTTPS): %s",
			         (int)strcspn(srv->listen, ","), srv->listen, h->set.http_tls_listen,
			         reason);
		else
			snprintf(err, errlen, "cannot listen on %s: %s", srv->listen, reason);
		mg_exit_library();
		free(srv);
		return -1;
	}
	if (threads_started(srv, atoi(threads), err, errlen) != 0) {
		/* Not stopped: mg_stop joins the accept thread, which may not
		 * exist. The start fails, and the process ends with it. */
		return -1;
	}
	if (h->set.http_tls_listen) {
		tls_cert_describe(h->tls, what, sizeof what);
		http_bound_text(srv, 1, h->set.http_tls_listen, at, sizeof at); /* a port 0's */
		log_info("http", "https on %s: serving %s (%s)%s%s%s", at, what,
		         h->set.http_tls_certificate, h->set.http_tls_min13 ? ", TLS 1.3 only" : "",
		         h->set.http_tls_client_ca ? ", clients need a certificate issued by a CA in "
		                                   : "",
		         h->set.http_tls_client_ca ? h->set.http_tls_client_ca : "");
		tls_cert_use(h->tls, h->set.http_tls_certificate);
		h->tls = NULL;
	}
	mg_set_auth_handler(srv->ctx, "/", civetweb_auth, srv);
	mg_set_request_handler(srv->ctx, "/", handle_request, srv);
	atomic_store(&srv->routing, 1);
	stream_hub_set_unacked_ms(stream_hub_global(), (unsigned int)h->set.http_stream_unacked_ms);
	stream_hub_start(stream_hub_global(), http_max_streams(&h->set, 1));
	*out = srv;
	return 0;
}

struct stopper {
	struct mg_context *ctx;
	atomic_int done;
};

static void *stop_main(void *arg)
{
	struct stopper *st = arg;
	mg_stop(st->ctx); /* returns after in-flight handlers are done */
	atomic_store(&st->done, 1);
	return NULL;
}

/* civetweb's accept loop notices the stop flag only when its poll() on the
 * listening sockets times out; a connection that is closed at once wakes it
 * so a stop takes milliseconds, not a poll quantum. */
static void wake_listeners(const struct mg_server_port *ports, int n)
{
	for (int i = 0; i < n; i++) {
		struct sockaddr_storage ss;
		socklen_t len;
		int fd;
		memset(&ss, 0, sizeof ss);
		if (ports[i].protocol == 2) { /* IPv6 only; 3 is dual-stack */
			struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
			a->sin6_family = AF_INET6;
			a->sin6_port = htons((uint16_t)ports[i].port);
			a->sin6_addr = in6addr_loopback;
			len = sizeof *a;
		} else {
			struct sockaddr_in *a = (struct sockaddr_in *)&ss;
			a->sin_family = AF_INET;
			a->sin_port = htons((uint16_t)ports[i].port);
			a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
			len = sizeof *a;
		}
		fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0)
			continue;
		(void)connect(fd, (struct sockaddr *)&ss, len);
		close(fd);
	}
}

/* Wait until no request is in handle_request, at most `ms`: the requests
 * that came before the stop get their answers written while civetweb can
 * still write them. Returns how many are left. */
static int drain_requests(http_server *srv, int ms)
{
	struct timespec until = clock_after_ms(CLOCK_MONOTONIC, ms);
	int left;
	pthread_mutex_lock(&drain_mu);
	while ((left = atomic_load(&srv->inflight)) > 0 &&
	       pthread_cond_timedwait(&drain_cv, &drain_mu, &until) != ETIMEDOUT)
		;
	left = atomic_load(&srv->inflight);
	pthread_mutex_unlock(&drain_mu);
	return left;
}

int http_bound_port(const http_server *srv, int tls)
{
	struct mg_server_port ports[8];
	int n = srv ? mg_get_server_ports(srv->ctx, 8, ports) : 0;
	for (int i = 0; i < n; i++)
		if (!ports[i].is_ssl == !tls)
			return ports[i].port;
	return 0;
}

void http_bound_text(const http_server *srv, int tls, const char *listen, char *out,
                     size_t outlen)
{
	snprintf(out, outlen, "%.*s:%d", (int)(strrchr(listen, ':') - listen), listen,
	         http_bound_port(srv, tls));
}

void http_stop(http_server *srv)
{
	struct stopper st = {srv ? srv->ctx : NULL, 0};
	struct mg_server_port ports[8];
	pthread_t t;
	int nports, budget, left;
	if (!srv)
		return;
	budget = srv->h->set.stop_timeout_ms > 0 ? srv->h->set.stop_timeout_ms : STOP_TIMEOUT_MS;
	/* Taken now: once mg_stop runs, the context may be freed at any time. */
	nports = mg_get_server_ports(srv->ctx, 8, ports);
	atomic_store(&srv->stopping, 1);
	/* Open streams hold workers that mg_stop would wait for. Give them a
	 * moment to say goodbye: once mg_stop runs, civetweb fails every write.
	 * One still writing then waits on a client that stopped reading, for
	 * up to [http] request_timeout: its connection is cut instead. So is
	 * one closed before (its plugin stopped, it was dropped as too slow)
	 * whose worker still waits in a write. */
	stream_hub_stop(stream_hub_global());
	if ((left = stream_hub_wait_idle(stream_hub_global(), STREAM_STOP_GRACE_MS)) > 0) {
		log_warn("http", "%d event stream(s) still writing after %d ms (clients that stopped "
		                 "reading): %zu of their connections cut",
		         left, STREAM_STOP_GRACE_MS, stream_hub_cut(stream_hub_global()));
		stream_hub_wait_idle(stream_hub_global(), STREAM_STOP_GRACE_MS);
	}
	/* A body still coming is not waited for: 503, nothing done with it. */
	cut_bodies(BODY_CUT_STOP);
	if ((left = drain_requests(srv, budget)) > 0) {
		log_warn("http",
		         "%d request(s) still running after [host] stop_timeout (%d ms); their "
		         "clients get no answer",
		         left, budget);
		busy_say(srv, budget);
	}
	if (pthread_create(&t, NULL, stop_main, &st) == 0) {
		for (int i = 0; i < 200 && !atomic_load(&st.done); i++) {
			struct timespec ts = {0, 10 * 1000 * 1000};
			if (i > 0)
				wake_listeners(ports, nports);
			nanosleep(&ts, NULL);
		}
		pthread_join(t, NULL);
	} else {
		mg_stop(srv->ctx);
	}
	mg_exit_library();
	free(srv);
}
