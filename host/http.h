/* HTTP server (civetweb): dispatch through the router to plugin handlers
 * and host routes (/healthz, /readyz), body limit (413), JSON checks (400),
 * JWT verification for EVH_ROUTE_AUTH routes (401/403), problem+json
 * errors, X-Request-Id. Implements the SDK's req_* and resp_* calls. */
#ifndef EVHOST_HTTP_H
#define EVHOST_HTTP_H
#include <evhost/evhost.h>
#include "host.h"

typedef struct http_server http_server;

/* Seconds a token is taken past its exp (clocks differ). */
#define HTTP_JWT_LEEWAY_S 30

/* A route target as stored in the router. */
typedef struct http_route {
	evh_plugin *plugin; /* NULL for host routes */
	evh_route r;        /* copied; strings owned */
} http_route;

int http_start(http_server **srv, host *h, char *err, size_t errlen);
/* The limit on open event streams [http] gives (0: none is served, with
 * threads = 1). With `warn`, none is said at WARN (HTTP_NO_STREAMS): by the
 * start. --check-config prints the same to its verdict (a log line that
 * [log] level = error would hide). */
int http_max_streams(const settings *s, int warn);
#define HTTP_NO_STREAMS                                                                    \
	"[http] threads = 1: no event stream is served (each would hold the only worker; a " \
	"stream route answers 503): give the server at least 2 threads to serve streams"
/* The port the plain (tls 0) or HTTPS (tls 1) listener is bound to: the
 * configured one, or the system's choice for port 0. 0 when there is none. */
int http_bound_port(const http_server *srv, int tls);
/* The listen address `listen` ("127.0.0.1:0", "[::]:8443") with the port it
 * is bound to (the plain or the TLS listener's), into out. */
void http_bound_text(const http_server *srv, int tls, const char *listen, char *out,
                     size_t outlen);
/* [log] access, from now on (a reload changes it). */
void http_set_access_log(http_access_log which);
/* Stop accepting, finish in-flight requests, free. */
void http_stop(http_server *srv);
/* Cut the request bodies past their time (read_body: [http] request_timeout,
 * then a second for each 1024 bytes of their length): their sockets shut for
 * reading, their clients answered 408. The main thread, between signals.
 * Returns how many were cut. */
size_t http_cut_slow_bodies(void);
/* How a message of civetweb's is logged: the text (into out) and the level.
 * Clients' own failures (a failed TLS handshake, a reset TLS connection)
 * are debug: anyone can cause as many as they like. Exposed for tests. */
evh_log_level http_civetweb_level(const char *msg, char *out, size_t n);
/* Register a plugin route into the host router (used by the API's http_route).
 * It takes the place of a placeholder of the same method and shape. EVH_OK,
 * EVH_EINVAL (a bad or taken route) or EVH_ENOMEM, `err` saying which. */
int http_add_route(host *h, evh_plugin *p, const evh_route *r, char *err, size_t errlen);
/* What the host serves at a route pattern's path itself, before any
 * plugin's route (/healthz, /readyz, /metrics, /admin and under it), as a
 * phrase, or NULL: http_add_route refuses such a route, and plugins.c a
 * declared one (ABI 1.12) at load. */
const char *http_host_path(const char *pattern);
/* Remove and free every route of `p`. Waits until requests already inside one
 * of its handlers have returned, so afterwards HTTP never calls into `p`
 * (safe to run fini and dlclose), then closes its event streams (they never
 * call into `p` either; their workers end them within moments). Main thread. */
void http_remove_plugin_routes(host *h, evh_plugin *p);
/* The same, leaving in each route's place a placeholder that answers 503
 * "service 'NAME' is restarting" (Retry-After: 1), so a plugin restarted by
 * a reload does not answer 404: its new instance's routes replace them. A
 * placeholder that cannot be allocated leaves its route unrouted (404, or
 * 405) meanwhile, with a warning naming it. */
void http_hold_plugin_routes(host *h, evh_plugin *p);
/* Remove the placeholders no new route replaced (404 from then on): at the
 * end of a start or a reload. Main thread. */
void http_drop_placeholders(host *h);

/* SDK implementations. */
const char *http_req_method(evh_request *req);
const char *http_req_path(evh_request *req);
const char *http_req_param(evh_request *req, const char *name);
const char *http_req_query(evh_request *req, const char *name);
/* Whether a pair of the query string has a broken percent-escape (or
 * %00): http_req_query reads it as absent, so a route whose parameters
 * filter what it answers refuses such a request. */
int http_req_query_bad(evh_request *req);
/* The first query parameter whose name is not in `known` (NULL-ended), or
 * NULL when there is none. */
const char *http_req_query_other(evh_request *req, const char *const *known);
/* The first query parameter given more than once, or NULL. */
const char *http_req_query_twice(evh_request *req);
const char *http_req_query_string(evh_request *req);
const char *http_req_header(evh_request *req, const char *name);
/* The length of header value `v` without the spaces and tabs after it,
 * which are no part of it (RFC 9110 5.5) and which civetweb keeps. */
size_t http_value_len(const char *v);
/* The token of Authorization header value `hdr` ("Bearer TOKEN", the
 * scheme in any case): where it starts, and in *len its length without the
 * spaces after it; NULL for no header or another scheme. */
const char *http_bearer(const char *hdr, size_t *len);
const char *http_req_body(evh_request *req, size_t *len);
const char *http_req_id(evh_request *req);
const char *http_req_auth_subject(evh_request *req);
const char *http_req_client_cert(evh_request *req);
const char *http_req_client_addr(evh_request *req);
int http_req_auth_local(evh_request *req);
int http_req_auth_has_role(evh_request *req, const char *role);
void http_resp_status(evh_response *resp, int status);
int http_resp_header(evh_response *resp, const char *name, const char *value);
int http_resp_body(evh_response *resp, const char *content_type, const void *body, size_t len);
int http_resp_problem(evh_response *resp, int status, const char *type, const char *title,
                      const char *detail, const char *field);
/* The same, with the members of `extra` (an object, consumed; NULL: none)
 * added: what a client may act on, beyond the text of detail. */
struct cJSON;
int http_resp_problem_with(evh_response *resp, int status, const char *type, const char *title,
                           const char *detail, const char *field, struct cJSON *extra);
/* evh_resp_stream: make the response an SSE stream (stream.h) of the
 * route's plugin on `channel`; served after the handler returns. */
int http_resp_stream(evh_response *resp, const char *channel);
/* Can civetweb listen on IPv6 addresses (Debian 12's cannot)? */
int http_has_ipv6(void);
/* Whether the addresses [http] listen and tls_listen name can be bound now
 * (a port in use, an address not on this host, a port below 1024 without
 * the capability): 0, or -1 with "cannot listen on ADDRESS: REASON" in
 * err. Before the plugins start, so that a start that cannot serve fails
 * before their migrations and consumer groups. */
int http_check_listen(const settings *s, char *err, size_t errlen);

#endif
