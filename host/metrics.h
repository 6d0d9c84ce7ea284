/* Prometheus metrics: counters, gauges and histograms the other modules
 * feed through the calls below, rendered as text exposition format 0.0.4 by
 * metrics_render() for GET /metrics.
 *
 * Series live in one process-wide registry keyed by metric and label
 * values. Lookups and updates are lock-free (atomics; a series is inserted
 * by compare-and-swap and never moves or goes away while the process runs),
 * so the request and consumer hot paths never wait for a scrape or for each
 * other. Label values are copied; every call is safe from any thread.
 * Cardinality is bounded by what the callers pass: route patterns (never raw
 * paths), configured topics, plugin names; methods of host routes and
 * unmatched requests are folded to a known set. Beyond METRICS_MAX_SERIES the
 * registry counts new series in evhost_metrics_series_dropped_total instead. */
#ifndef EVHOST_METRICS_H
#define EVHOST_METRICS_H
#include <stddef.h>
#include <stdint.h>

#include <evhost/evhost.h>

struct host;

#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"
#define METRICS_MAX_SERIES 8192
#define METRICS_PLUGIN_FAMILIES 256 /* metric names the plugins may declare, all together */
#define METRICS_PLUGIN_SERIES 100   /* label values of one plugin's metric */
/* Series of the plugins' metrics, all together: the rest of METRICS_MAX_SERIES
 * stays the host's, whatever a plugin declares. */
#define METRICS_PLUGIN_SERIES_ALL 2048

/* An interned series (never freed while the process runs): NULL means it
 * could not be created, and every call below accepts NULL and does nothing. */
typedef struct metrics_series metrics_series;

/* What became of one delivery of an event to a plugin's handlers. */
typedef enum metrics_event_result {
	METRICS_EVENT_OK = 0,     /* handled, committed */
	METRICS_EVENT_DUPLICATE,  /* already in the inbox: skipped */
	METRICS_EVENT_RETRY,      /* failed; a retry is scheduled */
	METRICS_EVENT_REJECT,     /* dead-lettered by its handler (or no handler) */
	METRICS_EVENT_DLQ,        /* failed its last attempt: dead-lettered */
} metrics_event_result;

/* Monotonic clock in seconds, for durations. */
double metrics_now(void);

/* ---- HTTP (http.c) ---- */

/* The series of one route: `plugin` "" for host routes, `route` the pattern
 * as registered ("/users/{id}"). */
metrics_series *metrics_http_route(const char *plugin, const char *route, const char *method);
/* Count one finished request and its duration. `route` NULL: it matched no
 * route (plugin="" route="unmatched", the method folded to a known one).
 * `seconds` below 0: its duration is not known (a head civetweb refused),
 * counted but not observed. */
void metrics_http_request(metrics_series *route, const char *method, int status,
                          double seconds);
/* A connection taken by an HTTP worker (+1), or closed (-1): civetweb
 * serves each open connection on a worker thread of its own. */
void metrics_http_connection(int delta);

/* ---- events (outbox.c, kafka.c) ---- */

/* evhost_events_published_total{plugin,topic}: intern at produce time, count
 * in the delivery report. */
metrics_series *metrics_published(const char *plugin, const char *topic);
/* Topics of one plugin's evhost_events_published_total: the ones after
 * these are counted as topic="other". */
#define METRICS_PUBLISHED_TOPICS 64
void metrics_count(metrics_series *counter);
void metrics_event_handled(const char *plugin, const char *topic, metrics_event_result r);
void metrics_event_handler_time(const char *plugin, const char *topic, double seconds);
/* A message written to the dead-letter topic of `topic` (the source topic). */
void metrics_dlq_message(const char *plugin, const char *topic);
/* `plugin` consumes these `n` topics: their evhost_dlq_messages_total and
 * evhost_events_handled_total series (every result) are made now, at 0, so
 * that Prometheus sees their first count as one (a series first seen at 1
 * is taken to have been 1 all along). consumer_start calls it for the
 * plugin's subscriptions, before its first event; any thread. */
void metrics_plugin_topics(const char *plugin, const char *const *topics, size_t n);
/* Consumer lag of an assigned partition; clear it when the partition goes. */
void metrics_consumer_lag_set(const char *plugin, const char *topic, int32_t partition,
                              int64_t lag);
void metrics_consumer_lag_clear(const char *plugin, const char *topic, int32_t partition);

/* ---- plugins (host.c) ---- */

/* A plugin that failed to start and was left out: evhost_plugin_up 0 while
 * no plugin of that name runs, until a reload's configuration no longer
 * enables it (metrics_plugins_configured). */
void metrics_plugin_failed(const char *plugin);
/* A reload's configuration `next` (its plugins opened, not yet started):
 * the plugins that failed before and that it no longer enables (disabled,
 * or their sections removed) lose their evhost_plugin_up 0; those it still
 * enables keep it until they run. Main thread, before the reload starts
 * plugins. */
void metrics_plugins_configured(const struct host *next);

/* ---- the plugins' own (api.c: evh_metric_new and the rest, ABI 1.9) ---- */

/* `plugin`'s metric `name` (see evh_metric_new for what is taken): declared
 * now, or the one it declared before (a restarted plugin gets its values
 * back). NULL with why in err. Any thread; never freed while the process
 * runs. The calls after it accept NULL and do nothing. */
struct metrics_plugin_metric;
struct metrics_plugin_metric *metrics_plugin_metric(const char *plugin, evh_metric_type type,
                                                    const char *name, const char *help,
                                                    const char *label, char *err,
                                                    size_t errlen);
void metrics_plugin_add(struct metrics_plugin_metric *m, const char *label_value,
                        int64_t delta);
void metrics_plugin_set(struct metrics_plugin_metric *m, const char *label_value,
                        int64_t value);
void metrics_plugin_observe(struct metrics_plugin_metric *m, const char *label_value,
                            double seconds);
/* `plugin` was stopped for good (disabled, or its section removed), not
 * restarted: its series leave /metrics, their values kept should it declare
 * them again (enabled again by a reload). */
void metrics_plugin_retire(const char *plugin);

/* ---- auth (http.c, host.c) ---- */

/* Why the host's check of a bearer token refused a request (401, 403, or
 * 503 when it could not check): evhost_auth_refusals_total{reason}. */
typedef enum metrics_auth_reason {
	METRICS_AUTH_MISSING,       /* no bearer token */
	METRICS_AUTH_MALFORMED,     /* not a JWT */
	METRICS_AUTH_SIGNATURE,     /* no key checks its signature or algorithm */
	METRICS_AUTH_EXPIRED,       /* exp passed */
	METRICS_AUTH_NOT_YET_VALID, /* nbf, or iat, ahead */
	METRICS_AUTH_CLAIMS,        /* issuer, audience, subject, roles claims */
	METRICS_AUTH_REVOKED,       /* its subject signed out since */
	METRICS_AUTH_LIFETIME,      /* this host's, without iat or past token_ttl_max */
	METRICS_AUTH_UNVERIFIABLE,  /* no keys to check it (yet), or no memory: 503 or 401 */
	METRICS_AUTH_ROLE,          /* good, without the route's role: 403 */
	METRICS_AUTH_NREASONS
} metrics_auth_reason;

void metrics_auth_refused(metrics_auth_reason why);
/* A sign-out (evh_auth_revoke, POST /admin/sign-out): saved, or not. */
void metrics_sign_out(int saved);

/* ---- admin API (admin.c) ---- */

/* Why a request to the admin API was refused its token (401):
 * evhost_admin_refusals_total{reason}. */
typedef enum metrics_admin_reason {
	METRICS_ADMIN_MISSING,   /* no Authorization header */
	METRICS_ADMIN_MALFORMED, /* one without a bearer token (another scheme, none) */
	METRICS_ADMIN_WRONG,     /* a bearer token that is not [admin] token_file's */
	METRICS_ADMIN_NREASONS
} metrics_admin_reason;

void metrics_admin_refused(metrics_admin_reason why);

/* ---- the wall clock (main.c) ---- */

/* A step of the wall clock the main thread saw, `back` or forward:
 * evhost_wall_clock_steps_total{direction}. */
void metrics_wall_clock_step(int back);

/* ---- exposition ---- */

/* The whole exposition text (*text malloc'd, NUL-terminated; *len without
 * the NUL). With `h`, also the per-plugin gauges read at scrape time
 * (plugin_up, outbox_pending; takes h->plugins_lock briefly). Returns 0, or
 * -1 when out of memory. Any thread. */
int metrics_render(struct host *h, char **text, size_t *len);

/* Forget every series (tests only: no other thread may use metrics). */
void metrics_reset(void);
#endif
