/* The API table plugins receive: thin adapters from the SDK's calls to the
 * host modules, plus the checks that belong at the boundary (argument
 * sanity, "only during init", outbox envelope). */
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "crash.h"
#include "events.h"
#include "host.h"
#include "router.h"
#include "http.h"
#include "json.h"
#include "jwt.h"
#include "kafka.h"
#include "log.h"
#include "metrics.h"
#include "plugins.h"
#include "revoke.h"
#include "store.h"
#include "stream.h"
#include "toobig.h"
#include "topics.h"
#include "trace.h"

const char *host_strerror(int status)
{
	switch (status) {
	case EVH_OK: return "ok";
	case EVH_ERR: return "failure";
	case EVH_ENOMEM: return "out of memory";
	case EVH_EINVAL: return "invalid argument";
	case EVH_ENOTFOUND: return "not found";
	case EVH_ECONSTRAINT: return "constraint violated";
	case EVH_EBUSY: return "busy";
	case EVH_ESTORE: return "storage error";
	case EVH_EKAFKA: return "kafka error";
	case EVH_ESTATE: return "not allowed in this state";
	case EVH_EFULL: return "outbox full";
	case EVH_EUNSUPPORTED: return "not supported by this host";
	case EVH_ETOOBIG: return "too big";
	}
	return "unknown status";
}

static void api_free(void *ptr) { free(ptr); }

/* On the thread running init (not one it started), or in the check: what
 * only init may do (routes, subscriptions, migrations: p->subs is grown
 * unlocked, and a thread of the plugin's own calling at the same time
 * corrupted it), and where p->last_error is kept. */
static int init_thread_call(const evh_plugin *p)
{
	return p->status == PLUGIN_INITIALIZING && !atomic_load(&p->init_returned) &&
	       pthread_equal(pthread_self(), p->init_thread);
}

static int main_thread_call(const evh_plugin *p) { return init_thread_call(p) || p->checking; }

static void api_log(evh_plugin *p, evh_log_level level, const char *msg)
{
	if (!p || !msg)
		return;
	/* The last ERROR during init (or its check) is the reason quoted when
	 * the plugin is refused; later ones (worker threads) are only logged. */
	if (level == EVH_LOG_ERROR && main_thread_call(p))
		snprintf(p->last_error, sizeof p->last_error, "%s", msg);
	log_msg_budget(&p->log_budget, p->log_level, level, p->name, "%s", msg);
}

/* evh_config_error: a diagnostic during the plugin's check, else an ERROR
 * line "KEY: message" (its last error, as evh_log's). */
static void api_config_error(evh_plugin *p, const char *key, const char *msg)
{
	size_t len;
	char *line;

	if (!p || !msg || plugin_check_report(p, key, msg))
		return;
	len = key ? strlen(key) + strlen(msg) + 3 : 0;
	if (!key || !(line = malloc(len))) {
		api_log(p, EVH_LOG_ERROR, msg);
		return;
	}
	snprintf(line, len, "%s: %s", key, msg);
	api_log(p, EVH_LOG_ERROR, line);
	free(line);
}

/* A line of the host's about the plugin's call: an ERROR on the main
 * thread (init, check), which also becomes its last error, quoted when init
 * fails ("init failed ...: subscribe: no topic") as the plugin's own ERROR
 * lines are; elsewhere (workers) an ERROR, or a WARN with `warn_elsewhere`. */
static void plugin_vsay(evh_plugin *p, int warn_elsewhere, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
static void plugin_vsay(evh_plugin *p, int warn_elsewhere, const char *fmt, va_list ap)
{
	char msg[sizeof p->last_error];
	vsnprintf(msg, sizeof msg, fmt, ap);
	if (main_thread_call(p))
		memcpy(p->last_error, msg, sizeof msg);
	/* Counted with the plugin's own lines: a call made in a loop is as many. */
	log_msg_budget(&p->log_budget, -1,
	               warn_elsewhere && !main_thread_call(p) ? EVH_LOG_WARN : EVH_LOG_ERROR, p->name,
	               "%s", msg);
}

static void plugin_error(evh_plugin *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void plugin_error(evh_plugin *p, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	plugin_vsay(p, 0, fmt, ap);
	va_end(ap);
}

/* A refusal a client's request can cause (evh_publish's event too big for
 * Kafka, a document too large): the plugin answers the client (413), so
 * on a worker it is a warning, as http.c's line for a handler that passes
 * the status up; during init it is the plugin's own error, as above. */
static void plugin_refusal(evh_plugin *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void plugin_refusal(evh_plugin *p, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	plugin_vsay(p, 1, fmt, ap);
	va_end(ap);
}

/* evh_stopping: no guard (an atomic load; a plugin may ask from any
 * thread, also late, when the answer is 1 all the more). 1 from the
 * signal on: a stop asked during the start or a reload is taken once it
 * ends, and host_stop, which winds each plugin down, comes only then (an
 * init or a handler that asks would have gone on with its long work). */
static int api_stopping(evh_plugin *p) { return p ? plugin_stopping(p) : 0; }

static const char *api_config_key_at(evh_plugin *p, size_t i)
{
	return p && i < p->ncfg ? p->cfg_keys[i] : NULL;
}

static const char *api_config_get(evh_plugin *p, const char *key)
{
	if (!p || !key)
		return NULL;
	for (size_t i = 0; i < p->ncfg; i++)
		if (strcmp(p->cfg_keys[i], key) == 0)
			return p->cfg_values[i];
	/* Not set and no default: fine for a key of the schema; a key that is
	 * not one (a typo in the plugin's code) would read as unset for good. */
	for (const evh_config_key *k = p->desc->config; k && k->name; k++)
		if (cfg_key_matches(k->name, key))
			return NULL;
	plugin_error(p, "evh_config: '%s' is not a key of the plugin's configuration schema (a "
	                "typo?): read as unset",
	             key);
	return NULL;
}

static const char *api_plugin_name(evh_plugin *p) { return p ? p->name : NULL; }
static const char *api_state_dir(evh_plugin *p) { return p ? p->state_dir : NULL; }

/* During the plugin's init, on its thread: what only init may do (routes,
 * subscriptions, migrations). Else refused, said: "`what` during init", or
 * "`what` by init itself" to a thread init started. */
static int api_in_init(evh_plugin *p, const char *what)
{
	if (init_thread_call(p))
		return 1;
	if (p->status == PLUGIN_INITIALIZING && !atomic_load(&p->init_returned))
		plugin_error(p, "%s by init itself, not by a thread it started", what);
	else
		plugin_error(p, "%s during init", what);
	return 0;
}

static int api_http_route(evh_plugin *p, const evh_route *route)
{
	char err[256];
	int rc;

	if (!p || !route || route->struct_size < offsetof(evh_route, flags))
		return EVH_EINVAL;
	if (!api_in_init(p, "routes can only be registered"))
		return EVH_ESTATE;
	/* A plugin that declared its routes (ABI 1.12) registers only those:
	 * the declaration is what the start and --check-config checked. A
	 * route no declaration could hold ("get /x") is said for what it is
	 * by http_add_route, not sent to be declared. */
	if (route->method && route->pattern && !router_route_error(route->method, route->pattern) &&
	    !plugin_declares(p, route->method, route->pattern)) {
		char msg[512];
		snprintf(msg, sizeof msg, "route %.32s %.300s refused: not in the plugin's declared "
		                          "routes (EVH_PLUGIN_ROUTES): declare it there",
		         route->method, route->pattern);
		api_log(p, EVH_LOG_ERROR, msg);
		return EVH_EINVAL;
	}
	/* EVH_EINVAL for the route, EVH_ENOMEM for the host: not the same fix */
	if ((rc = http_add_route(p->host, p, route, err, sizeof err)) != EVH_OK)
		api_log(p, EVH_LOG_ERROR, err);
	return rc;
}

static int positive_or(int v, int dflt) { return v > 0 ? v : dflt; }

/* A subscription's own retry policy, held to [kafka] retry.*'s ranges (0
 * takes the host's value): 0 when it is, else -1 after logging which field of
 * which topic is wrong (the log's component is the plugin). */
static int check_sub_retry(evh_plugin *p, const evh_subscription *sub)
{
	static const char *const name[] = {"max_attempts", "backoff_ms", "backoff_max_ms"};
	static const int max[] = {EVH_RETRY_ATTEMPTS_MAX, EVH_RETRY_BACKOFF_MS_MAX,
	                          EVH_RETRY_BACKOFF_MAX_MS_MAX};
	const int v[] = {sub->max_attempts, sub->backoff_ms, sub->backoff_max_ms};
	char msg[512];
	for (size_t i = 0; i < 3; i++) {
		if (v[i] < 0 || v[i] > max[i]) {
			snprintf(msg, sizeof msg,
			         "subscription to %s refused: %s %d is out of range (0 for the "
			         "host's [kafka] retry.%s, or 1 to %d)",
			         sub->topic, name[i], v[i], name[i], max[i]);
			api_log(p, EVH_LOG_ERROR, msg);
			return -1;
		}
	}
	/* Both the plugin's own: a cap below its own backoff is its mistake.
	 * With one of them the host's (0), the cap is raised instead where it
	 * falls below (evh_subscribe): a plugin's check cannot see [kafka]
	 * retry.*, so --check-config could not say it, and a start or a reload
	 * would refuse what the check passed. */
	if (sub->backoff_ms > 0 && sub->backoff_max_ms > 0 && sub->backoff_max_ms < sub->backoff_ms) {
		snprintf(msg, sizeof msg,
		         "subscription to %s refused: backoff_max_ms (%d) must not be below "
		         "backoff_ms (%d)",
		         sub->topic, sub->backoff_max_ms, sub->backoff_ms);
		api_log(p, EVH_LOG_ERROR, msg);
		return -1;
	}
	return 0;
}

/* A ce_type as a header carries it: UTF-8 text without control characters. */
static int type_text_ok(const char *t)
{
	for (const char *c = t; *c; c++)
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			return 0;
	return json_utf8_error(t, strlen(t)) < 0;
}

/* Whether `topic`'s dead-letter topic is a name Kafka takes; said if not. */
static int dlq_topic_ok(evh_plugin *p, const char *topic)
{
	const char *suffix = p->host->set.dlq_suffix;
	char dlq[2 * TOPICS_NAME_MAX + PLUGIN_NAME_MAX + 8];
	kafka_dlq_topic(topic, p->name, suffix, dlq, sizeof dlq);
	if (topics_name_ok(dlq))
		return 1;
	plugin_error(p, "subscribe to %s: its dead-letter topic (the topic's name then .%s%s) "
	                "would be %zu characters, past Kafka's %d: a shorter topic (or [kafka] "
	                "dlq_suffix)",
	             topic, p->name, suffix && *suffix ? suffix : ".dlq", strlen(dlq),
	             TOPICS_NAME_MAX);
	return 0;
}

static int api_subscribe(evh_plugin *p, const evh_subscription *sub)
{
	const settings *s;
	plugin_sub *subs, *n;

	if (!p || !sub || sub->struct_size < offsetof(evh_subscription, max_attempts) ||
	    !sub->topic || !*sub->topic || !sub->handler) {
		if (p)
			plugin_error(p, "subscribe: %s",
			             !sub ? "no subscription given"
			             : sub->struct_size < offsetof(evh_subscription, max_attempts)
			                 ? "evh_subscription.struct_size too small"
			             : !sub->topic || !*sub->topic ? "no topic"
			                                           : "no handler");
		return EVH_EINVAL;
	}
	if (!api_in_init(p, "subscriptions can only be added"))
		return EVH_ESTATE;
	/* A name Kafka refuses names no topic, and a type longer than the
	 * consumer keeps (or not text) matches no event: every event of the
	 * topic would be dead-lettered for want of a handler. */
	if (!topics_name_ok(sub->topic)) {
		plugin_error(p, "subscribe: topic '%.260s' is not a Kafka topic name (" TOPICS_NAME_RULE
		                ")",
		             sub->topic);
		return EVH_EINVAL;
	}
	/* Its dead letters go to <topic>.<plugin><dlq_suffix>: a name past
	 * Kafka's limit there was found by the first dead letter, retried for
	 * good, its partition waiting behind it. */
	if (!dlq_topic_ok(p, sub->topic))
		return EVH_EINVAL;
	if (sub->type && (!type_text_ok(sub->type) ||
	                  strlen(sub->type) >= sizeof ((ce_meta *)NULL)->type)) {
		plugin_error(p, "subscribe to %s: the type is longer than %zu bytes, holds a control "
		                "character or is not UTF-8: no event could match it",
		             sub->topic, sizeof ((ce_meta *)NULL)->type - 1);
		return EVH_EINVAL;
	}
	if (sub->struct_size >= offsetof(evh_subscription, reserved) && check_sub_retry(p, sub))
		return EVH_EINVAL;
	s = &p->host->set;
	subs = realloc(p->subs, (p->nsubs + 1) * sizeof *subs);
	if (!subs)
		return EVH_ENOMEM;
	p->subs = subs;
	n = &subs[p->nsubs];
	memset(n, 0, sizeof *n);
	n->topic = strdup(sub->topic);
	n->type = sub->type && *sub->type ? strdup(sub->type) : NULL;
	if (!n->topic || (sub->type && *sub->type && !n->type)) {
		free(n->topic);
		free(n->type);
		return EVH_ENOMEM;
	}
	n->handler = sub->handler;
	n->ud = sub->ud;
	if (sub->struct_size >= offsetof(evh_subscription, reserved)) {
		n->max_attempts = positive_or(sub->max_attempts, s->retry_max_attempts);
		n->backoff_ms = positive_or(sub->backoff_ms, s->retry_backoff_ms);
		n->backoff_max_ms = positive_or(sub->backoff_max_ms, s->retry_backoff_max_ms);
		/* One of them the host's: the cap is never below the backoff, in
		 * every wait alike (the retry delay raised it, the others did not). */
		if (n->backoff_max_ms < n->backoff_ms)
			n->backoff_max_ms = n->backoff_ms;
	} else {
		n->max_attempts = s->retry_max_attempts;
		n->backoff_ms = s->retry_backoff_ms;
		n->backoff_max_ms = s->retry_backoff_max_ms;
	}
	p->nsubs++;
	return EVH_OK;
}

/* OpenTelemetry's messaging conventions, and CloudEvents'. */
static void publish_span_attrs(trace_span *sp, const evh_plugin *p, const char *topic,
                               const char *key, const char *type, const char *id)
{
	trace_attr(sp, "messaging.system", "kafka");
	trace_attr(sp, "messaging.operation.type", "create");
	trace_attr(sp, "messaging.destination.name", topic);
	trace_attr(sp, "messaging.message.id", id);
	trace_attr(sp, "messaging.kafka.message.key", key);
	trace_attr(sp, "cloudevents.event_id", id);
	trace_attr(sp, "cloudevents.event_type", type);
	trace_attr(sp, "evhost.plugin", p->name);
}

/* A call naming another plugin than the one whose callback this thread runs
 * (instances of one .so share its statics): a transaction begun so on the
 * other's database was never seen by the check after the handler, and held
 * it for good. Returns 1, said, for such a call. */
static int other_plugin(evh_plugin *p, const char *call)
{
	const char *who = crash_plugin();
	if (!who || !strcmp(who, p->name))
		return 0;
	log_error("host", "plugin '%s': %s on plugin '%s': refused (a plugin's callbacks use "
	                  "the evh_plugin they were given)",
	          who, call, p->name);
	return 1;
}

/* A transaction belongs to the thread that began it (store_tx_mine). Returns
 * 1, said, when `tx` (or `rows`) is another thread's. */
static int foreign_tx(const evh_tx *tx, const evh_rows *rows, const char *call)
{
	const char *who;
	if (tx ? store_tx_mine(tx) : !rows || store_rows_mine(rows))
		return 0;
	who = crash_plugin();
	log_error("host", "%s%s%s: %s on a transaction another thread began: refused (a "
	                  "transaction belongs to the thread that began it, which holds the "
	                  "plugin's database until it ends it)",
	          who ? "plugin '" : "a plugin's own thread", who ? who : "", who ? "'" : "", call);
	return 1;
}

/* The producer's limits (one event's key and data, one message); once the
 * daemon's stop frees the producer (api_plugin_host_stopping), the values
 * it had. `api_kafka_readers` counts the threads that may read it. */
static void publish_limits(evh_plugin *p, size_t *event, size_t *message)
{
	atomic_fetch_add(&p->api_kafka_readers, 1);
	if (!atomic_load(&p->api_host_stopping) && p->host) {
		*event = kafka_max_event_bytes(p->host->kafka);
		*message = kafka_max_message_bytes(p->host->kafka);
	} else {
		*event = p->api_max_event_bytes;
		*message = p->api_max_message_bytes;
	}
	atomic_fetch_sub(&p->api_kafka_readers, 1);
}

static int api_publish(evh_plugin *p, evh_tx *tx, const char *topic, const char *key,
                       const char *type, const char *json, size_t len)
{
	char id[37], now[40], trace[56], source[512];
	trace_span span;
	outbox_row row;
	evh_tx *own = NULL;
	size_t at = 0, max, max_message, size;
	long bad_utf8;
	json_status js;
	int rc;

	if (!p || !topics_name_ok(topic) || !type || !*type || !json) {
		if (p && !topics_name_ok(topic))
			plugin_error(p, "publish: topic '%.260s' is not a Kafka topic name (" TOPICS_NAME_RULE
			                ")",
			             topic ? topic : "(null)");
		else if (p)
			plugin_error(p, "publish to %s: %s", topic,
			             !type || !*type ? "no type (the event's ce_type)" : "no data (NULL)");
		return EVH_EINVAL;
	}
	if (!type_text_ok(type)) {
		plugin_error(p, "publish to %s: the type holds a control character or is not UTF-8 "
		                "(it is the ce_type header)",
		             topic);
		return EVH_EINVAL;
	}
	if (strlen(type) >= sizeof ((ce_meta *)NULL)->type) {
		plugin_error(p, "publish to %s: type is longer than %zu bytes (its ce_type header"
		                " would be cut)",
		             topic, sizeof ((ce_meta *)NULL)->type - 1);
		return EVH_EINVAL;
	}
	if (len > PTRDIFF_MAX) { /* key + data below would wrap past the size check */
		plugin_error(p, "publish to %s: data of %zu bytes is no length (a negative count?)",
		             topic, len);
		return EVH_EINVAL;
	}
	publish_limits(p, &max, &max_message);
	size = len + (key ? strlen(key) : 0);
	if (max && size > max) {
		plugin_refusal(p, "publish to %s: the event's key and data are %zu bytes, more than"
		                " a message may carry (%zu: the producer's message.max.bytes, %zu,"
		                " less room for headers); it could never be sent",
		             topic, size, max, max_message);
		toobig_note(TOOBIG_EVENT);
		return EVH_ETOOBIG;
	}
	/* Consumers are promised JSON; refuse anything else at the source.
	 * Checked, not parsed (json.h): the plugin has just written it. */
	if ((bad_utf8 = json_utf8_error(json, len)) >= 0) {
		plugin_error(p, "publish to %s: data is not valid UTF-8 (at byte %ld)", topic,
		             bad_utf8);
		return EVH_EINVAL;
	}
	if ((js = json_check(json, len, JSON_MAX_DEPTH, &at)) != JSON_OK) {
		if (js == JSON_TOO_DEEP)
			plugin_error(p,
			             "publish to %s: data is not valid JSON (nested deeper than %d levels"
			             " at byte %zu)",
			             topic, JSON_MAX_DEPTH, at);
		else if (js == JSON_NUL)
			plugin_error(p,
			             "publish to %s: data holds \\u0000 in a string at byte %zu"
			             " (consumers' strings would end there)",
			             topic, at);
		else if (js == JSON_RANGE)
			plugin_error(p,
			             "publish to %s: the number at byte %zu of the data is beyond the range"
			             " of a double (consumers parsing it would read infinity)",
			             topic, at);
		else
			plugin_error(p, "publish to %s: data is not valid JSON (syntax error at byte %zu)",
			             topic, at);
		return EVH_EINVAL;
	}
	events_uuid(id);
	events_now_rfc3339(now);
	snprintf(source, sizeof source, "%s/%s", p->host->set.source, p->name);
	/* A child of the request's or the handled event's span, so a flow is
	 * one trace; the event carries this span as its parent (OpenTelemetry's
	 * "create" span: the relay sends it later, in a batch). */
	trace_begin(&span, TRACE_PRODUCER, NULL, NULL, "create %s", topic);
	trace_traceparent(&span, trace);
	publish_span_attrs(&span, p, topic, key, type, id);
	memset(&row, 0, sizeof row);
	row.id = id;
	row.topic = (char *)topic;
	row.key = (char *)key;
	row.type = (char *)type;
	row.source = source;
	row.time = now;
	row.traceparent = trace;
	row.data = (char *)json;
	row.data_len = len;
	if (other_plugin(p, "evh_publish")) {
		rc = EVH_ESTATE;
	} else if (p->in_fini) {
		/* The relay has stopped for this plugin: the event would wait in
		 * its outbox for a next start that a reload may never give it. */
		plugin_error(p, "publish to %s in fini: refused (the plugin's events are no longer "
		                "sent; publish before it stops)",
		             topic);
		rc = EVH_ESTATE;
	} else if (!tx && !p->store) { /* not during check */
		plugin_error(p, "publish to %s: only once the plugin has started", topic);
		rc = EVH_ESTATE;
	} else if (!tx) {
		rc = store_tx_begin_grouped(p->store, &own);
		tx = own;
		if (rc == EVH_ESTATE)
			plugin_error(p, "publish to %s without a transaction: this thread has one open "
			                "on the plugin's database already (an event handler's: publish "
			                "through the tx it is given)",
			             topic);
	} else if (store_of_tx(tx) != p->store) {
		plugin_error(p, "publish: transaction belongs to another plugin");
		rc = EVH_EINVAL;
	} else if (foreign_tx(tx, NULL, "evh_publish")) {
		rc = EVH_ESTATE;
	} else if (store_tx_reads_only(tx)) {
		plugin_error(p, "publish to %s: refused: a read transaction (evh_tx_begin_read) "
		                "writes nothing: publish in one of evh_tx_begin",
		             topic);
		rc = store_outbox_add(tx, &row); /* refuses it, and marks it failed */
	} else {
		rc = EVH_OK;
	}
	if (rc == EVH_OK)
		rc = store_outbox_add(tx, &row);
	if (own) {
		if (rc == EVH_OK)
			rc = store_tx_commit(own);
		else
			store_tx_rollback(own);
	}
	if (rc != EVH_OK)
		trace_error(&span, "not written to the outbox: %s", host_strerror(rc));
	trace_end(&span);
	return rc;
}

static size_t api_publish_max_bytes(evh_plugin *p)
{
	size_t event = 0, message;
	if (p)
		publish_limits(p, &event, &message);
	return event;
}

static size_t api_store_max_bytes(evh_plugin *p)
{
	return p && p->store ? store_max_bytes(p->store) : 0;
}

/* evh_metric_new (ABI 1.9): the handle is metrics.c's, kept for the
 * process's life; a refusal is the plugin's error, said in its log. */
static evh_metric *api_metric(evh_plugin *p, evh_metric_type type, const char *name,
                              const char *help, const char *label)
{
	struct metrics_plugin_metric *m;
	char err[256];
	if (!p)
		return NULL;
	if (p->checking) { /* no state kept by a check: /metrics would serve it for good */
		plugin_error(p, "evh_metric_new: %s: declare metrics in init, not in check",
		             name ? name : "(null)");
		return NULL;
	}
	if (!(m = metrics_plugin_metric(p->name, type, name, help, label, err, sizeof err)))
		plugin_error(p, "evh_metric_new: %s", err);
	return (evh_metric *)m;
}

static void api_metric_add(evh_metric *m, const char *label_value, int64_t delta)
{
	metrics_plugin_add((struct metrics_plugin_metric *)m, label_value, delta);
}

static void api_metric_set(evh_metric *m, const char *label_value, int64_t value)
{
	metrics_plugin_set((struct metrics_plugin_metric *)m, label_value, value);
}

static void api_metric_observe(evh_metric *m, const char *label_value, double seconds)
{
	metrics_plugin_observe((struct metrics_plugin_metric *)m, label_value, seconds);
}

/* The end of a plugin's statement (store_plugin_sql): one the authorizer
 * refused is the plugin's bug, said with the SQL. EVH_EINVAL for it (SQLite
 * says "not authorized", a storage error), else `rc`. */
static int plugin_sql_done(evh_tx *tx, const char *call, const char *sql, int rc)
{
	const char *why;
	store_plugin_sql(tx, 0);
	if (rc == EVH_OK || !(why = store_plugin_sql_refused(tx)))
		return rc;
	log_error("host", "plugin '%s': %s \"%.120s%s\": refused: %s",
	          crash_plugin() ? crash_plugin() : "?", call, sql, strlen(sql) > 120 ? "..." : "",
	          why);
	return EVH_EINVAL;
}

/* NULL `tx` or `sql` is the store's to refuse: foreign_tx and
 * store_plugin_sql take NULL as nothing to judge. */
static int api_exec(evh_tx *tx, const char *sql, const evh_value *args, size_t nargs,
                    int64_t *changes)
{
	if (foreign_tx(tx, NULL, "evh_exec"))
		return EVH_ESTATE;
	store_plugin_sql(tx, 1);
	return plugin_sql_done(tx, "evh_exec", sql, store_exec(tx, sql, args, nargs, changes));
}

static int api_query(evh_tx *tx, const char *sql, const evh_value *args, size_t nargs,
                     evh_rows **rows)
{
	if (foreign_tx(tx, NULL, "evh_query")) {
		if (rows)
			*rows = NULL;
		return EVH_ESTATE;
	}
	store_plugin_sql(tx, 1);
	return plugin_sql_done(tx, "evh_query", sql, store_query(tx, sql, args, nargs, rows));
}

static int api_query_json(evh_tx *tx, const char *sql, const evh_value *args, size_t nargs,
                          char **json, size_t *len)
{
	if (foreign_tx(tx, NULL, "evh_query_json"))
		return EVH_ESTATE;
	store_plugin_sql(tx, 1);
	return plugin_sql_done(tx, "evh_query_json", sql,
	                       store_query_json(tx, sql, args, nargs, json, len));
}

static int api_rows_next(evh_rows *r)
{
	return foreign_tx(NULL, r, "evh_rows_next") ? EVH_ESTATE : store_rows_next(r);
}

static void api_rows_close(evh_rows *r)
{
	if (!foreign_tx(NULL, r, "evh_rows_close"))
		store_rows_close(r);
}

static int api_tx_begin(evh_plugin *p, evh_tx **tx)
{
	int rc;
	if (!p || !tx)
		return EVH_EINVAL;
	if (!p->store) /* not during check, like evh_migrate and evh_publish */
		return EVH_ESTATE;
	if (other_plugin(p, "evh_tx_begin"))
		return EVH_ESTATE;
	rc = store_tx_begin_plugin(p->store, tx);
	if (rc == EVH_ESTATE)
		plugin_error(p, "evh_tx_begin: this thread has a transaction open on the plugin's "
		                "database already (an event handler's: write through the tx it is "
		                "given; or one of its own not ended)");
	return rc;
}

static int api_tx_begin_read(evh_plugin *p, evh_tx **tx)
{
	if (!p || !tx)
		return EVH_EINVAL;
	*tx = NULL;
	if (!p->store) /* not during check, like evh_tx_begin */
		return EVH_ESTATE;
	if (other_plugin(p, "evh_tx_begin_read"))
		return EVH_ESTATE;
	return store_tx_begin_read(p->store, tx);
}

/* The transaction an event handler is given is the host's: it ends it with
 * the event's inbox record once the handler returns (ending it in the
 * handler freed it under the consumer, which crashed). Returns 1, said,
 * for such a `tx`. */
static int host_owned_tx(evh_tx *tx, const char *call)
{
	const char *who = crash_plugin();
	if (!tx || store_tx_plugin_own(tx))
		return 0;
	log_error("host", "plugin '%s': %s on the transaction its event handler was given: "
	                  "refused (the host ends it with the event; return EVH_EVENT_RETRY or "
	                  "EVH_EVENT_REJECT to undo the handler's writes)",
	          who ? who : "?", call);
	return 1;
}

static int api_tx_commit(evh_tx *tx)
{
	return foreign_tx(tx, NULL, "evh_tx_commit") || host_owned_tx(tx, "evh_tx_commit")
	           ? EVH_ESTATE
	           : store_tx_commit(tx);
}

static void api_tx_rollback(evh_tx *tx)
{
	if (!foreign_tx(tx, NULL, "evh_tx_rollback") && !host_owned_tx(tx, "evh_tx_rollback"))
		store_tx_rollback(tx);
}

static int api_migrate(evh_plugin *p, const evh_migration *m, size_t n)
{
	char err[512];
	int rc;

	if (!p || (!m && n))
		return EVH_EINVAL;
	if (!p->store) /* not during check */
		return EVH_ESTATE;
	if (!api_in_init(p, "migrations can only be run"))
		return EVH_ESTATE;
	rc = store_migrate(p->store, m, n, err, sizeof err);
	if (rc != EVH_OK)
		api_log(p, EVH_LOG_ERROR, err);
	return rc;
}

static int auth_sign_with(evh_plugin *p, const auth_keyset *k, const char *subject,
                          const char *const *roles, size_t nroles, int ttl_s, char **token)
{
	if (!k || !k->secret) {
		plugin_error(p, "cannot issue tokens: [auth] jwt_secret_file is not configured");
		return EVH_ESTATE;
	}
	if (!jwt_sign_args_ok(subject, roles, nroles, ttl_s, k->issuer, k->secret, k->len)) {
		plugin_error(p, "auth sign: the subject or a role is too long, there are too many "
		                "roles, or one is not UTF-8");
		return EVH_EINVAL;
	}
	if (ttl_s > k->ttl_max_s) {
		plugin_error(p, "auth sign: a token for %d s would outlive [auth] token_ttl_max (%lld s)",
		             ttl_s, (long long)k->ttl_max_s);
		return EVH_EINVAL;
	}
	if (jwt_sign(subject, roles, nroles,
	             revocations_sign_ms(p->host->revoked, subject, clock_wall_ms()), ttl_s,
	             k->issuer, k->secret, k->len, token) != 0)
		return EVH_ENOMEM;
	return EVH_OK;
}

static int api_auth_sign(evh_plugin *p, const char *subject, const char *const *roles,
                         size_t nroles, int ttl_s, char **token)
{
	const auth_keyset *k;
	int rc;

	if (!p || !subject || !*subject || !token || ttl_s <= 0 || (nroles && !roles))
		return EVH_EINVAL;
	if (p->checking) { /* the keys are set up after the checks: not "not configured" */
		plugin_error(p, "evh_auth_sign during check: refused (a check keeps no state)");
		return EVH_ESTATE;
	}
	/* Held while signing: a reload frees the set it replaces once no one does. */
	k = host_auth_acquire(p->host);
	rc = auth_sign_with(p, k, subject, roles, nroles, ttl_s, token);
	host_auth_release(k);
	return rc;
}

static int api_auth_revoke(evh_plugin *p, const char *subject)
{
	char err[1024];
	int rc;

	if (!p)
		return EVH_EINVAL;
	if (!p->store) /* not during check */
		return EVH_ESTATE;
	rc = host_sign_out(p->host, subject, p->name, err, sizeof err);
	if (rc != EVH_OK && rc != EVH_EINVAL)
		plugin_error(p, "sign out: %s", err);
	return rc;
}

static int api_stream_publish(evh_plugin *p, const char *channel, const char *event,
                              const char *data)
{
	int rc;

	if (!p)
		return EVH_EINVAL;
	if (p->checking) { /* no side effects in a check: clients would get the event */
		plugin_error(p, "stream publish to '%s': not in check (a check keeps no state and "
		                "sends nothing)",
		             channel ? channel : "(null)");
		return EVH_ESTATE;
	}
	rc = stream_publish(stream_hub_global(), p, p->name, channel, event, data,
	                    data ? strlen(data) : 0);
	if (rc == EVH_EINVAL)
		plugin_error(p, "stream publish: bad channel or event name (names starting"
		                " \"" STREAM_HOST_PREFIX "\" are the host's)");
	else if (rc == EVH_ETOOBIG)
		plugin_error(p, "stream publish: data exceeds %d bytes", STREAM_DATA_MAX);
	return rc;
}

/* A plugin's own span: the host's span, and the thread's current span
 * before it, put back at its end. */
struct evh_span {
	trace_span sp;
	trace_ctx outer;
};

/* The SDK's span kinds are OTLP's, as trace.h's are. */
_Static_assert((int)EVH_SPAN_INTERNAL == (int)TRACE_INTERNAL &&
                   (int)EVH_SPAN_CLIENT == (int)TRACE_CLIENT,
               "evh_span_kind and trace_kind must agree");

static evh_span *api_span_begin(evh_plugin *p, evh_span_kind kind, const char *name)
{
	evh_span *s;
	if (!p || !name || !trace_enabled() ||
	    (kind != EVH_SPAN_INTERNAL && kind != EVH_SPAN_CLIENT))
		return NULL;
	if (!(s = malloc(sizeof *s)))
		return NULL;
	trace_begin(&s->sp, (trace_kind)kind, NULL, NULL, "%s", name);
	if (!s->sp.recording) {
		free(s);
		return NULL;
	}
	trace_attr(&s->sp, "evhost.plugin", p->name);
	trace_current_save(&s->outer);
	trace_current_set(&s->sp);
	return s;
}

static void api_span_set(evh_span *s, const char *key, const char *value)
{
	if (s)
		trace_attr(&s->sp, key, value);
}

static void api_span_end(evh_span *s, const char *error)
{
	if (!s)
		return;
	if (error)
		trace_error(&s->sp, "%s", error);
	trace_end(&s->sp);
	trace_current_restore(&s->outer);
	free(s);
}

/* ---- calls after fini ----
 *
 * A thread a plugin started and did not join in fini (a third-party
 * plugin's, or a library's it uses) may call the SDK after fini returned,
 * with the plugin's handle. The handle stays allocated (api_plugin_bury),
 * each call taking it is counted in flight while it runs, and once fini has
 * returned such calls are refused (EVH_ESTATE, NULL, nothing), said once:
 * nothing is read that plugin_destroy freed. Handles the plugin was given
 * for one call (a request, an event, a transaction) are not covered: they
 * are only valid during that call. */

/* 1: the call may go on (api_leave after it); 0: refused, said. */
static int api_enter(evh_plugin *p, const char *call)
{
	atomic_fetch_add(&p->api_calls, 1);
	if (!atomic_load(&p->api_gone)) {
		/* Not in a callback of the host's: a thread of the plugin's own. */
		if (!crash_plugin() && !atomic_load_explicit(&p->api_own_threads, memory_order_relaxed))
			atomic_store(&p->api_own_threads, 1);
		return 1;
	}
	atomic_fetch_sub(&p->api_calls, 1);
	if (atomic_fetch_add(&p->api_late, 1) == 0)
		log_warn("host",
		         "plugin '%s': %s called after the plugin's fini returned (a thread it left "
		         "running): refused (EVH_ESTATE), as every later call, said once; a plugin "
		         "must stop and join its threads in fini (docs/sdk.md)",
		         p->name, call);
	return 0;
}

static void api_leave(evh_plugin *p) { atomic_fetch_sub(&p->api_calls, 1); }

static const struct timespec api_tick = {0, 1000000};

void api_plugin_gone(evh_plugin *p)
{
	atomic_store(&p->api_gone, 1);
	p->api_gone_ms = clock_mono_ms();
	if (!atomic_load(&p->api_calls))
		return;
	/* A thread of its is in a call still: it outlived fini (api_gone 2).
	 * The call ends within the store's busy timeout at most. */
	atomic_store(&p->api_gone, 2);
	log_warn("host", "plugin '%s': its fini returned while a thread of its was still in a call "
	                 "to the host: waiting for the call to end; later calls are refused",
	         p->name);
	while (atomic_load(&p->api_calls) > 0)
		nanosleep(&api_tick, NULL);
}

void api_plugin_host_stopping(evh_plugin *p)
{
	if (!p || atomic_load(&p->api_host_stopping))
		return;
	p->api_max_event_bytes = p->host ? kafka_max_event_bytes(p->host->kafka) : 0;
	p->api_max_message_bytes = p->host ? kafka_max_message_bytes(p->host->kafka) : 0;
	atomic_store(&p->api_host_stopping, 1);
}

void api_plugin_host_stopping_wait(evh_plugin *p)
{
	while (p && atomic_load(&p->api_kafka_readers) > 0)
		nanosleep(&api_tick, NULL);
}

int api_plugin_called_late(evh_plugin *p)
{
	if (atomic_load(&p->api_gone) != 2 && atomic_load(&p->api_own_threads))
		while (!atomic_load(&p->api_late) &&
		       clock_mono_ms() - p->api_gone_ms < API_LATE_GRACE_MS)
			nanosleep(&api_tick, NULL);
	if (atomic_load(&p->api_gone) != 2 && !atomic_load(&p->api_late))
		return 0;
	log_warn("host", "plugin '%s': a thread of its outlived its fini: %s stays loaded until "
	                 "the daemon stops (unloading it would pull the code from under that "
	                 "thread)",
	         p->name, p->path);
	return 1;
}

/* The buried plugins: reachable (not leaks), never reused, never freed. A
 * list through the plugins themselves: burying allocates nothing, so that
 * none is left unlisted (a leak to LeakSanitizer) for want of memory. */
static pthread_mutex_t buried_mu = PTHREAD_MUTEX_INITIALIZER;
static evh_plugin *buried;

void api_plugin_bury(evh_plugin *p)
{
	pthread_mutex_lock(&buried_mu);
	p->buried_next = buried;
	buried = p;
	pthread_mutex_unlock(&buried_mu);
}

#define GUARDED(ret, name, refused, params, args, call)                                      \
	static ret name##_guarded params                                                           \
	{                                                                                          \
		ret r;                                                                                 \
		if (!p)                                                                                \
			return name args;                                                                  \
		if (!api_enter(p, call))                                                               \
			return refused;                                                                    \
		r = name args;                                                                         \
		api_leave(p);                                                                          \
		return r;                                                                              \
	}

GUARDED(const char *, api_config_get, NULL, (evh_plugin * p, const char *key), (p, key),
        "evh_config")
GUARDED(const char *, api_config_key_at, NULL, (evh_plugin * p, size_t i), (p, i),
        "evh_config_key_at")
GUARDED(const char *, api_plugin_name, NULL, (evh_plugin * p), (p), "evh_plugin_name")
GUARDED(const char *, api_state_dir, NULL, (evh_plugin * p), (p), "evh_state_dir")
GUARDED(int, api_http_route, EVH_ESTATE, (evh_plugin * p, const evh_route *route), (p, route),
        "evh_http_route")
GUARDED(int, api_subscribe, EVH_ESTATE, (evh_plugin * p, const evh_subscription *sub),
        (p, sub), "evh_subscribe")
GUARDED(int, api_publish, EVH_ESTATE,
        (evh_plugin * p, evh_tx *tx, const char *topic, const char *key, const char *type,
         const char *json, size_t len),
        (p, tx, topic, key, type, json, len), "evh_publish")
GUARDED(int, api_migrate, EVH_ESTATE, (evh_plugin * p, const evh_migration *m, size_t n),
        (p, m, n), "evh_migrate")
GUARDED(int, api_tx_begin, EVH_ESTATE, (evh_plugin * p, evh_tx **tx), (p, tx), "evh_tx_begin")
GUARDED(int, api_tx_begin_read, EVH_ESTATE, (evh_plugin * p, evh_tx **tx), (p, tx),
        "evh_tx_begin_read")
GUARDED(int, api_auth_sign, EVH_ESTATE,
        (evh_plugin * p, const char *subject, const char *const *roles, size_t nroles,
         int ttl_s, char **token),
        (p, subject, roles, nroles, ttl_s, token), "evh_auth_sign")
GUARDED(int, api_auth_revoke, EVH_ESTATE, (evh_plugin * p, const char *subject),
        (p, subject), "evh_auth_revoke")
GUARDED(int, api_stream_publish, EVH_ESTATE,
        (evh_plugin * p, const char *channel, const char *event, const char *data),
        (p, channel, event, data), "evh_stream_publish")
GUARDED(evh_span *, api_span_begin, NULL, (evh_plugin * p, evh_span_kind kind, const char *name),
        (p, kind, name), "evh_span_begin")
GUARDED(size_t, api_publish_max_bytes, 0, (evh_plugin * p), (p), "evh_publish_max_bytes")
GUARDED(size_t, api_store_max_bytes, 0, (evh_plugin * p), (p), "evh_store_max_bytes")
GUARDED(evh_metric *, api_metric, NULL,
        (evh_plugin * p, evh_metric_type type, const char *name, const char *help,
         const char *label),
        (p, type, name, help, label), "evh_metric_new")

static void api_log_guarded(evh_plugin *p, evh_log_level level, const char *msg)
{
	if (!p || !api_enter(p, "evh_log"))
		return;
	api_log(p, level, msg);
	api_leave(p);
}

static void api_config_error_guarded(evh_plugin *p, const char *key, const char *msg)
{
	if (!p || !api_enter(p, "evh_config_error"))
		return;
	api_config_error(p, key, msg);
	api_leave(p);
}

static const evh_api api_table = {
    .struct_size = sizeof(evh_api),
    .abi_major = EVH_ABI_MAJOR,
    .abi_minor = EVH_ABI_MINOR,
    .strerror = host_strerror,
    .free = api_free,
    .log = api_log_guarded,
    .config_get = api_config_get_guarded,
    .plugin_name = api_plugin_name_guarded,
    .state_dir = api_state_dir_guarded,
    .http_route = api_http_route_guarded,
    .req_method = http_req_method,
    .req_path = http_req_path,
    .req_param = http_req_param,
    .req_query = http_req_query,
    .req_header = http_req_header,
    .req_body = http_req_body,
    .req_id = http_req_id,
    .req_auth_subject = http_req_auth_subject,
    .req_auth_has_role = http_req_auth_has_role,
    .resp_status = http_resp_status,
    .resp_header = http_resp_header,
    .resp_body = http_resp_body,
    .resp_problem = http_resp_problem,
    .subscribe = api_subscribe_guarded,
    .publish = api_publish_guarded,
    .ev_id = kafka_ev_id,
    .ev_type = kafka_ev_type,
    .ev_source = kafka_ev_source,
    .ev_time = kafka_ev_time,
    .ev_topic = kafka_ev_topic,
    .ev_partition = kafka_ev_partition,
    .ev_offset = kafka_ev_offset,
    .ev_key = kafka_ev_key,
    .ev_data = kafka_ev_data,
    .ev_header = kafka_ev_header,
    .ev_attempt = kafka_ev_attempt,
    .ev_set_error = kafka_ev_set_error,
    .migrate = api_migrate_guarded,
    .tx_begin = api_tx_begin_guarded,
    .tx_commit = api_tx_commit,
    .tx_rollback = api_tx_rollback,
    .exec = api_exec,
    .query = api_query,
    .rows_next = api_rows_next,
    .rows_count = store_rows_count,
    .rows_name = store_rows_name,
    .rows_type = store_rows_type,
    .rows_int = store_rows_int,
    .rows_real = store_rows_real,
    .rows_text = store_rows_text,
    .rows_close = api_rows_close,
    .query_json = api_query_json,
    .tx_error = store_tx_error,
    .auth_sign = api_auth_sign_guarded,
    .req_query_string = http_req_query_string,
    .resp_stream = http_resp_stream,
    .stream_publish = api_stream_publish_guarded,
    .span_begin = api_span_begin_guarded,
    .span_set = api_span_set,
    .span_end = api_span_end,
    .req_client_cert = http_req_client_cert,
    .req_client_addr = http_req_client_addr,
    .req_auth_local = http_req_auth_local,
    .config_error = api_config_error_guarded,
    .auth_revoke = api_auth_revoke_guarded,
    .publish_max_bytes = api_publish_max_bytes_guarded,
    .metric = api_metric_guarded,
    .metric_add = api_metric_add,
    .metric_set = api_metric_set,
    .metric_observe = api_metric_observe,
    .store_max_bytes = api_store_max_bytes_guarded,
    .config_key_at = api_config_key_at_guarded,
    .stopping = api_stopping,
    .tx_begin_read = api_tx_begin_read_guarded,
};

const evh_api *host_api(void) { return &api_table; }
