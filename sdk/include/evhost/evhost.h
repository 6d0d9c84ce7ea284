/*
 * evhost plugin SDK, ABI v1.
 *
 * This is the only header a plugin needs. A plugin is a shared object that
 * exports one symbol, evh_plugin_entry_v1, written for you by EVH_PLUGIN().
 * The host calls it with its API table (a struct of function pointers, led by
 * struct_size and only ever appended to) and gets back a const descriptor.
 * Every SDK call below is a small inline wrapper over that table, so a plugin
 * links with -Wl,--no-undefined, needs no host symbols, and can be unit
 * tested against a fake table (assign evh__api yourself).
 *
 * OWNERSHIP. Arguments passed to your callbacks are borrowed: valid until the
 * callback returns, never freed by you. Strings and buffers you pass to the
 * host are copied before the call returns. Anything the host returns for you
 * to keep (documented per call as "free with evh_free") is released with
 * evh_free(). Strings returned as `const char *` are borrowed from the object
 * they came from and live as long as it does.
 *
 * THREADING. check (ABI 1.7), init and fini run on the host's main thread;
 * init and fini never concurrently with any other callback of the same
 * plugin, check at a reload while the running instance still serves (it
 * keeps no state). HTTP handlers run on the HTTP
 * server's worker threads, several at once. Event handlers of one plugin run
 * on that plugin's consumer thread, one message at a time. Every SDK call is
 * safe from any of those threads unless its comment says otherwise. A storage
 * transaction (evh_tx) belongs to the thread that began it.
 *
 * ERRORS. Calls return an evh_status: EVH_OK (0) or a negative code;
 * evh_strerror() gives its text. Codes are never renumbered.
 */
#ifndef EVHOST_EVHOST_H
#define EVHOST_EVHOST_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EVH_ABI_MAJOR 1
#define EVH_ABI_MINOR 15

#if defined(__GNUC__)
#define EVH__PRINTF(f, a) __attribute__((format(printf, f, a)))
#define EVH__EXPORT __attribute__((visibility("default")))
#define EVH__HIDDEN __attribute__((visibility("hidden")))
#else
#define EVH__PRINTF(f, a)
#define EVH__EXPORT
#define EVH__HIDDEN
#endif

/* ------------------------------------------------------------------ status */

typedef enum evh_status {
	EVH_OK = 0,
	EVH_ERR = -1,           /* unspecified failure; see the log */
	EVH_ENOMEM = -2,        /* out of memory */
	EVH_EINVAL = -3,        /* bad argument */
	EVH_ENOTFOUND = -4,     /* no such key / row / route */
	EVH_ECONSTRAINT = -5,   /* storage constraint violated (unique, check) */
	EVH_EBUSY = -6,         /* resource busy; try again */
	EVH_ESTORE = -7,        /* storage failure */
	EVH_EKAFKA = -8,        /* Kafka failure */
	EVH_ESTATE = -9,        /* call not allowed now (e.g. after init) */
	EVH_EFULL = -10,        /* outbox bound reached; answer 503 */
	EVH_EUNSUPPORTED = -11, /* host too old for this call */
	EVH_ETOOBIG = -12,      /* value exceeds a configured limit */
} evh_status;

/* What an event handler tells the host about one message. */
typedef enum evh_event_result {
	EVH_EVENT_OK = 0,     /* done: record in the inbox, commit the offset */
	EVH_EVENT_RETRY = 1,  /* transient failure: retry with backoff */
	EVH_EVENT_REJECT = 2, /* poison: to the dead-letter topic now */
	/* (ABI 1.2) Part done, part given up for now: commit the writes made
	 * in `tx`, then send the event to the dead-letter topic, for an
	 * operator to redrive once the cause is fixed (say, a mail server
	 * that stayed down through every retry). The event is not recorded in
	 * the inbox, so the redriven copy runs every handler of it again:
	 * writes committed with this result must be idempotent (an upsert, a
	 * row that says the step is done). Not a retry: it is final for this
	 * delivery, like REJECT. */
	EVH_EVENT_KEEP_AND_DEAD_LETTER = 3,
	/* (ABI 1.11) Part done, the rest to try again: commit the writes made
	 * in `tx` (say, the rows recording the mails that did go out), then
	 * retry the event with backoff, as for RETRY. The event is not recorded
	 * in the inbox, so the retry (and a copy of it delivered again after a
	 * restart) runs every handler of it again: writes committed with this
	 * result must be idempotent, and tell the next attempt what is done.
	 * After the last attempt the event is dead-lettered, as for RETRY; the
	 * kept writes stay. */
	EVH_EVENT_KEEP_AND_RETRY = 4,
	/* (ABI 1.14) Part done, the rest to do now: commit the writes made in
	 * `tx`, then call the handlers of the event again at once, with the
	 * same attempt number (evh_event_attempt): not a failure, so it uses
	 * up no attempt, waits for no backoff and never dead-letters. For a
	 * handler that works through a long list (a mail to every user): it
	 * commits every few hundred items, so a failure or a crash later in
	 * the list does not undo (and repeat) what went before, and its
	 * transaction does not hold the plugin's database for the whole list.
	 * As with KEEP_AND_RETRY, the event is not recorded in the inbox until
	 * a call returns EVH_EVENT_OK, and the writes committed so must tell
	 * the next call what is done. Return it only after making progress: a
	 * handler that returns it every time runs for ever. */
	EVH_EVENT_KEEP_AND_CONTINUE = 5,
	/* (ABI 1.15) Part done, the rest waits for room: commit the writes made
	 * in `tx`, then try the event again after the longest backoff, as the
	 * host does when the plugin's own database is full. For a failure that
	 * is no one's fault and passes without a fix, once space comes back:
	 * a write of your own outside the database (a file) failed with ENOSPC
	 * or EDQUOT (not EFBIG: a file past the size limit never fits). It uses
	 * up no attempt, so it never dead-letters: the event waits as long as
	 * the disk stays full (its partition's events behind it), said once per
	 * episode in the log with the message of evh_event_set_error (say there
	 * what could not be written, and the OS error). As with KEEP_AND_RETRY, the event is not recorded
	 * in the inbox until a call returns EVH_EVENT_OK. Never return it for
	 * anything else: an event that cannot succeed would wait for ever. */
	EVH_EVENT_KEEP_AND_WAIT = 6,
} evh_event_result;

typedef enum evh_log_level {
	EVH_LOG_ERROR = 0,
	EVH_LOG_WARN = 1,
	EVH_LOG_INFO = 2,
	EVH_LOG_DEBUG = 3,
} evh_log_level;

/* ---------------------------------------------------------- opaque handles */

typedef struct evh_plugin evh_plugin;     /* one loaded plugin instance */
typedef struct evh_request evh_request;   /* one HTTP request */
typedef struct evh_response evh_response; /* its response, being built */
typedef struct evh_event evh_event;       /* one consumed event */
typedef struct evh_tx evh_tx;             /* one storage transaction */
typedef struct evh_rows evh_rows;         /* a query's result cursor */
typedef struct evh_span evh_span;         /* a span of the plugin's own (ABI 1.4) */
typedef struct evh_metric evh_metric;     /* a metric of the plugin's own (ABI 1.9) */

/* What a metric of the plugin's own is (Prometheus's types). */
typedef enum evh_metric_type {
	EVH_METRIC_COUNTER = 1,   /* only goes up: mails sent, logins refused */
	EVH_METRIC_GAUGE = 2,     /* goes up and down: items waiting, connections open */
	EVH_METRIC_HISTOGRAM = 3, /* durations in seconds, in the host's buckets */
} evh_metric_type;

/* What a span of the plugin's own stands for (OpenTelemetry's SpanKind). */
typedef enum evh_span_kind {
	EVH_SPAN_INTERNAL = 1, /* work inside the plugin */
	EVH_SPAN_CLIENT = 3,   /* a call to another service: SMTP, HTTP, a database */
} evh_span_kind;

/* ------------------------------------------------------------ config schema */

typedef enum evh_config_type {
	EVH_CFG_STRING = 1,
	EVH_CFG_INT = 2,  /* decimal, optionally with k/M/G suffix */
	EVH_CFG_BOOL = 3, /* true/false, yes/no, on/off, 1/0 */
	EVH_CFG_LIST = 4, /* comma-separated words */
	EVH_CFG_PATH = 5, /* a file path; relative ones resolve against the directory of the file that set it */
	/* ABI 1.3: an EVH_CFG_PATH that must name a readable regular file when
	 * the configuration is read (at start, at a reload, by --check-config),
	 * or that is a configuration error at the key's file:line. For secrets
	 * and certificates; a default is checked too (at the section's line).
	 * A key of a path type set to nothing is refused ("expected a path"). */
	EVH_CFG_FILE = 6,
	/* ABI 1.3: the same for a directory that must exist and be readable
	 * (templates, say; not one the plugin creates: that is EVH_CFG_PATH). */
	EVH_CFG_DIR = 7,
} evh_config_type;

/* One key a plugin accepts in its [plugin.NAME] section. The host rejects
 * keys not declared here (file:line), checks types, and applies defaults.
 * A name may contain '*' as a whole dot-separated segment, e.g.
 * "collection.*.required", to accept a family of keys. */
typedef struct evh_config_key {
	const char *name;
	evh_config_type type;
	const char *default_value; /* NULL: no default */
	int required;              /* nonzero: must be set */
	const char *description;
} evh_config_key;

/* ---------------------------------------------------------------- storage */

typedef enum evh_value_type {
	EVH_VAL_NULL = 0,
	EVH_VAL_INT = 1,
	EVH_VAL_REAL = 2,
	EVH_VAL_TEXT = 3,
	EVH_VAL_BLOB = 4,
} evh_value_type;

/* A typed bind parameter. Build with the EVH_INT/EVH_TEXT/... macros. */
typedef struct evh_value {
	evh_value_type type;
	int64_t i;
	double r;
	const void *p; /* TEXT / BLOB bytes */
	size_t n;      /* their length */
} evh_value;

/* A function, not `(s) ? strlen(s) : 0`, so EVH_TEXT(array) compiles under -Waddress. */
static inline size_t evh__strlen(const char *s) { return s ? strlen(s) : 0; }

/* EVH_TEXT(s), in C and C++ alike: `s` read once (EVH_TEXT(names[i++]) is
 * one string, its pointer and its length). */
static inline evh_value evh__text(const char *s)
{
	evh_value v;
	v.type = EVH_VAL_TEXT;
	v.i = 0;
	v.r = 0;
	v.p = s;
	v.n = evh__strlen(s);
	return v;
}
#define EVH_TEXT(s) evh__text(s)

#ifdef __cplusplus
/* C++ has no compound literals (g++ -pedantic refuses them): a function
 * makes the same value. */
static inline evh_value evh__value(evh_value_type t, int64_t i, double r, const void *p,
                                   size_t n)
{
	evh_value v;
	v.type = t;
	v.i = i;
	v.r = r;
	v.p = p;
	v.n = n;
	return v;
}
#define EVH_NULL() evh__value(EVH_VAL_NULL, 0, 0, NULL, 0)
#define EVH_INT(x) evh__value(EVH_VAL_INT, static_cast<int64_t>(x), 0, NULL, 0)
#define EVH_REAL(x) evh__value(EVH_VAL_REAL, 0, static_cast<double>(x), NULL, 0)
#define EVH_TEXTN(s, len) evh__value(EVH_VAL_TEXT, 0, 0, (s), (len))
#define EVH_BLOB(b, len) evh__value(EVH_VAL_BLOB, 0, 0, (b), (len))
#else
#define EVH_NULL() ((evh_value){EVH_VAL_NULL, 0, 0, NULL, 0})
#define EVH_INT(x) ((evh_value){EVH_VAL_INT, (int64_t)(x), 0, NULL, 0})
#define EVH_REAL(x) ((evh_value){EVH_VAL_REAL, 0, (double)(x), NULL, 0})
#define EVH_TEXTN(s, len) ((evh_value){EVH_VAL_TEXT, 0, 0, (s), (len)})
#define EVH_BLOB(b, len) ((evh_value){EVH_VAL_BLOB, 0, 0, (b), (len)})
#endif

/* A schema migration: applied once, in order of version, each in its own
 * transaction, recorded in the plugin's database. Never edit a released one;
 * append a new version. */
typedef struct evh_migration {
	int version; /* 1, 2, 3, ... */
	const char *sql;
} evh_migration;

/* --------------------------------------------------------------- callbacks */

/* HTTP handler. Fill `resp`; return EVH_OK. Any other return makes the host
 * answer 500 problem+json (and log it), unless the response was already
 * made: a body set, or a status that has none (204, 304); that answer is
 * sent and the failure logged. A status alone (and headers) does not count:
 * a 201 whose commit then failed is answered 500. Refusals of the host's
 * that the client can act on are answered for it instead: EVH_EFULL from
 * evh_publish (503, Retry-After), and EVH_ETOOBIG when what the request
 * carried was too large, from evh_publish (413: the event would be larger
 * than a Kafka message) or a storage call (413: a value larger than SQLite
 * takes). EVH_ETOOBIG from anything else (evh_resp_header past its 64
 * headers, evh_stream_publish over 64 KiB, your own code) is the plugin's
 * failure: 500. For a limit of your own a client must keep to, answer the
 * 413 yourself (evh_resp_problem). So set a write's body only once
 * evh_tx_commit said EVH_OK (build its text before the transaction): a body
 * set before the commit is sent even when the commit fails. Runs on an HTTP
 * worker thread. */
typedef int (*evh_http_handler)(evh_request *req, evh_response *resp, void *ud);

/* Event handler. `tx` is an open transaction on the plugin's store: writes
 * made through it commit together with the inbox record of this event, so
 * a redelivered event is never handled twice. Do not commit or roll back
 * `tx` yourself (refused: EVH_ESTATE). EVH_EVENT_OK after a storage call on
 * `tx` failed, or a value that is no evh_event_result, is taken as
 * EVH_EVENT_RETRY (the event's writes undone, an attempt counted). The
 * writes commit after the handler returns, with the consumer's batch:
 * what it sends elsewhere meanwhile (evh_stream_publish) goes out before.
 * Runs on the plugin's consumer thread. */
typedef evh_event_result (*evh_event_handler)(evh_plugin *p, const evh_event *ev,
                                              evh_tx *tx, void *ud);

/* ------------------------------------------------------------- HTTP routes */

enum {
	EVH_ROUTE_JSON = 1u << 0, /* body must be JSON (400 otherwise); checked by the host */
	EVH_ROUTE_AUTH = 1u << 1, /* a valid bearer JWT is required (401) */
};

typedef struct evh_route {
	uint32_t struct_size; /* sizeof(evh_route) */
	const char *method;   /* "GET", "POST", ... */
	const char *pattern;  /* "/users/{id}"; {name} captures one segment */
	evh_http_handler handler;
	void *ud;
	uint32_t flags; /* EVH_ROUTE_* */
	const char *role; /* with EVH_ROUTE_AUTH: role required, or NULL */
	void *reserved[4];
} evh_route;

/* ---------------------------------------------------------- subscriptions */

/* The ranges of a subscription's retry policy (below), which are those of
 * the host's [kafka] retry.* keys: for checking a plugin's own keys. */
#define EVH_RETRY_ATTEMPTS_MAX 1000
#define EVH_RETRY_BACKOFF_MS_MAX (3600 * 1000)          /* an hour */
#define EVH_RETRY_BACKOFF_MAX_MS_MAX (24 * 3600 * 1000) /* a day */

typedef struct evh_subscription {
	uint32_t struct_size; /* sizeof(evh_subscription) */
	const char *topic;    /* topic name; usually from the plugin's config */
	const char *type;     /* only events whose ce_type equals this; NULL = all */
	evh_event_handler handler;
	void *ud;
	/* Retry policy; 0 takes the host's default ([kafka] retry.*). Else the
	 * same ranges as those keys: max_attempts 1-EVH_RETRY_ATTEMPTS_MAX,
	 * backoff_ms 1-EVH_RETRY_BACKOFF_MS_MAX, backoff_max_ms
	 * 1-EVH_RETRY_BACKOFF_MAX_MS_MAX and, when both are set, not below
	 * backoff_ms; evh_subscribe refuses anything else with EVH_EINVAL. */
	int max_attempts;
	int backoff_ms;
	int backoff_max_ms;
	void *reserved[4];
} evh_subscription;

/* --------------------------------------------------------------- API table */

/* Filled by the host. Append-only: new members go at the end and bump
 * EVH_ABI_MINOR; struct_size tells what the running host provides. */
typedef struct evh_api {
	uint32_t struct_size;
	uint16_t abi_major, abi_minor;

	const char *(*strerror)(int status);
	void (*free)(void *ptr);
	void (*log)(evh_plugin *p, evh_log_level level, const char *msg);

	/* config */
	const char *(*config_get)(evh_plugin *p, const char *key);
	const char *(*plugin_name)(evh_plugin *p);
	const char *(*state_dir)(evh_plugin *p);

	/* http */
	int (*http_route)(evh_plugin *p, const evh_route *route);
	const char *(*req_method)(evh_request *req);
	const char *(*req_path)(evh_request *req);
	const char *(*req_param)(evh_request *req, const char *name);
	const char *(*req_query)(evh_request *req, const char *name);
	const char *(*req_header)(evh_request *req, const char *name);
	const char *(*req_body)(evh_request *req, size_t *len);
	const char *(*req_id)(evh_request *req);
	const char *(*req_auth_subject)(evh_request *req);
	int (*req_auth_has_role)(evh_request *req, const char *role);
	void (*resp_status)(evh_response *resp, int status);
	int (*resp_header)(evh_response *resp, const char *name, const char *value);
	int (*resp_body)(evh_response *resp, const char *content_type, const void *body,
	                 size_t len);
	int (*resp_problem)(evh_response *resp, int status, const char *type, const char *title,
	                    const char *detail, const char *field);

	/* events */
	int (*subscribe)(evh_plugin *p, const evh_subscription *sub);
	int (*publish)(evh_plugin *p, evh_tx *tx, const char *topic, const char *key,
	               const char *type, const char *json, size_t len);
	const char *(*ev_id)(const evh_event *ev);
	const char *(*ev_type)(const evh_event *ev);
	const char *(*ev_source)(const evh_event *ev);
	const char *(*ev_time)(const evh_event *ev);
	const char *(*ev_topic)(const evh_event *ev);
	int32_t (*ev_partition)(const evh_event *ev);
	int64_t (*ev_offset)(const evh_event *ev);
	const char *(*ev_key)(const evh_event *ev, size_t *len);
	const char *(*ev_data)(const evh_event *ev, size_t *len);
	const char *(*ev_header)(const evh_event *ev, const char *name);
	int (*ev_attempt)(const evh_event *ev);
	void (*ev_set_error)(const evh_event *ev, const char *message);

	/* storage */
	int (*migrate)(evh_plugin *p, const evh_migration *migrations, size_t n);
	int (*tx_begin)(evh_plugin *p, evh_tx **tx);
	int (*tx_commit)(evh_tx *tx);
	void (*tx_rollback)(evh_tx *tx);
	int (*exec)(evh_tx *tx, const char *sql, const evh_value *args, size_t nargs,
	            int64_t *changes);
	int (*query)(evh_tx *tx, const char *sql, const evh_value *args, size_t nargs,
	             evh_rows **rows);
	int (*rows_next)(evh_rows *rows);
	int (*rows_count)(evh_rows *rows);
	const char *(*rows_name)(evh_rows *rows, int col);
	evh_value_type (*rows_type)(evh_rows *rows, int col);
	int64_t (*rows_int)(evh_rows *rows, int col);
	double (*rows_real)(evh_rows *rows, int col);
	const char *(*rows_text)(evh_rows *rows, int col, size_t *len);
	void (*rows_close)(evh_rows *rows);
	int (*query_json)(evh_tx *tx, const char *sql, const evh_value *args, size_t nargs,
	                  char **json, size_t *len);
	const char *(*tx_error)(evh_tx *tx);

	/* auth */
	int (*auth_sign)(evh_plugin *p, const char *subject, const char *const *roles,
	                 size_t nroles, int ttl_s, char **token);

	/* http, continued */
	const char *(*req_query_string)(evh_request *req);

	/* server-sent events (ABI 1.1) */
	int (*resp_stream)(evh_response *resp, const char *channel);
	int (*stream_publish)(evh_plugin *p, const char *channel, const char *event,
	                      const char *data);

	/* tracing (ABI 1.4) */
	evh_span *(*span_begin)(evh_plugin *p, evh_span_kind kind, const char *name);
	void (*span_set)(evh_span *span, const char *key, const char *value);
	void (*span_end)(evh_span *span, const char *error);

	/* the client (ABI 1.5) */
	const char *(*req_client_cert)(evh_request *req);
	const char *(*req_client_addr)(evh_request *req);

	/* auth (ABI 1.6) */
	int (*req_auth_local)(evh_request *req);

	/* config (ABI 1.7); the SDK's evh_config_error formats the message */
	void (*config_error)(evh_plugin *p, const char *key, const char *msg);

	/* auth (ABI 1.8) */
	int (*auth_revoke)(evh_plugin *p, const char *subject);

	/* events (ABI 1.8) */
	size_t (*publish_max_bytes)(evh_plugin *p);

	/* metrics (ABI 1.9) */
	evh_metric *(*metric)(evh_plugin *p, evh_metric_type type, const char *name,
	                      const char *help, const char *label);
	void (*metric_add)(evh_metric *m, const char *label_value, int64_t delta);
	void (*metric_set)(evh_metric *m, const char *label_value, int64_t value);
	void (*metric_observe)(evh_metric *m, const char *label_value, double seconds);

	/* storage (ABI 1.9) */
	size_t (*store_max_bytes)(evh_plugin *p);

	/* config (ABI 1.10) */
	const char *(*config_key_at)(evh_plugin *p, size_t i);

	/* lifecycle (ABI 1.13) */
	int (*stopping)(evh_plugin *p);

	/* storage (ABI 1.15) */
	int (*tx_begin_read)(evh_plugin *p, evh_tx **tx);
} evh_api;

/* Set by evh_plugin_entry_v1 (see EVH_PLUGIN) before anything else runs. */
extern const evh_api *evh__api EVH__HIDDEN;

/* True when the running host provides API member `m`. */
#define EVH_API_HAS(m)                                                                        \
	(evh__api && evh__api->struct_size >= offsetof(evh_api, m) + sizeof(evh__api->m) &&    \
	 evh__api->m != NULL)

/* ---------------------------------------------------------- the descriptor */

typedef struct evh_plugin_desc {
	uint32_t struct_size; /* sizeof(evh_plugin_desc) */
	uint16_t abi_major;   /* EVH_ABI_MAJOR the plugin was built against */
	uint16_t abi_minor;   /* EVH_ABI_MINOR the plugin was built against */
	const char *name;     /* short name, e.g. "user" */
	const char *version;  /* the plugin's own version, free form */
	const char *description;
	const evh_config_key *config; /* terminated by an entry with name == NULL */
	/* Called once after load, on the main thread. Register routes and
	 * subscriptions, run migrations, allocate state (*state is handed back
	 * to fini). Return EVH_OK, or an error with a message set through
	 * evh_log(p, EVH_LOG_ERROR, ...) — the host quotes the last one when it
	 * refuses the plugin. Routes and subscriptions may only be added here.
	 * If init fails, fini is still called (with whatever *state holds, maybe
	 * NULL), so init may return early without cleaning up. */
	int (*init)(evh_plugin *p, void **state);
	/* Called once before unload, on the main thread, after HTTP and the
	 * consumer have stopped calling the plugin; also after a failed init.
	 * Stop and join every thread of the plugin's here: once fini returns,
	 * calls with p are refused (EVH_ESTATE, said once) and the .so may be
	 * unloaded under a thread still running (docs/sdk.md). */
	void (*fini)(evh_plugin *p, void *state);
	/* (ABI 1.7; NULL: none) Check the plugin's own values, without starting
	 * anything: set with EVH_PLUGIN_CHECKED. Called on the main thread after
	 * the [plugin.NAME] section has been read and validated against `config`
	 * (keys, types, defaults), before init: at every start, at every reload
	 * (its step 1, before any plugin is stopped) and by `evhostd
	 * --check-config`, and possibly for an instance that is never started
	 * (--check-config, a reload refused for another reason). Say what is
	 * wrong with evh_config_error(p, KEY, ...), which the host reports at the
	 * file:line where KEY was set (the section's header for a default);
	 * return EVH_OK, or EVH_EINVAL when a value is wrong. A failed check of
	 * a required plugin fails the start and refuses a reload whole (nothing
	 * stopped); one of a plugin with required = false leaves it out (a
	 * warning), or at a reload keeps it running as it ran.
	 * It may only call evh_config_str/_int/_bool, evh_config_key_at,
	 * evh_plugin_name, evh_log and evh_config_error (evh_tx_begin, evh_migrate and evh_publish return
	 * EVH_ESTATE: the database is not open yet), and must have no side effects: no files written
	 * or opened for writing, no network, no state kept (no *state: init has
	 * not run, and fini is not called for a check). Checks that need the
	 * file system or the network (reading a password file, opening a
	 * Maildir, connecting) belong in init.
	 * Keep init refusing bad values too, by calling the same validation
	 * function: check is a convenience of the host, not a guarantee. A host
	 * older than 1.7 refuses a plugin built against this header at load
	 * ("needs ABI 1.7"); one that loaded it anyway would ignore the slot (it
	 * was reserved[0]), as a fake host in your unit tests may, and then only
	 * init sees the values. */
	int (*check)(evh_plugin *p);
	/* (ABI 1.12; NULL: none) The HTTP routes init may register, each
	 * "METHOD /pattern" with one space between ("GET /users/{id}"), the
	 * list ended by NULL: set with EVH_PLUGIN_ROUTES. The host reads it at
	 * load, so that --check-config, the start (before any init) and a
	 * reload's check step (before anything is stopped) find two plugins
	 * that want the same route, or one that wants a path of the host's
	 * (/healthz, /readyz, /metrics, /admin...), and name both. A method and
	 * pattern the router would refuse, two entries for one route, or a
	 * host's path refuse the plugin at load ("its declared routes' entry
	 * N, ..."). With a list, evh_http_route of a route not in it fails
	 * (EVH_EINVAL, said in the log): the list cannot drift from the code.
	 * Routes declared but not registered (say, turned off by a key) are
	 * fine. NULL (and every plugin built before 1.12) declares nothing:
	 * its routes are known only when its init registers them, and a clash
	 * fails that init. Strings, not evh_route: a route's handler, flags and
	 * role may depend on the configuration, its path may not. */
	const char *const *routes;
	void *reserved[6];
} evh_plugin_desc;

typedef const evh_plugin_desc *(*evh_plugin_entry_fn)(const evh_api *api);
#define EVH_PLUGIN_ENTRY_SYMBOL "evh_plugin_entry_v1"

/* C linkage for what EVH_PLUGIN defines: the macro expands in the plugin's
 * own file, outside this header's extern "C", and the host looks the entry up
 * by its C name (a C++ compiler would otherwise mangle it). */
#ifdef __cplusplus
#define EVH__C_LINKAGE extern "C"
#else
#define EVH__C_LINKAGE
#endif

/* Write the entry point. Use once per plugin, in one .c (or C++) file, at
 * file scope (not inside a namespace):
 *   EVH_PLUGIN("hello", "1.0.0", "Says hello", hello_config, hello_init, hello_fini)
 */
#define EVH_PLUGIN(name_, version_, descr_, config_, init_, fini_)                         \
	EVH_PLUGIN_ROUTES(name_, version_, descr_, config_, NULL, NULL, init_, fini_)

/* (ABI 1.7) The same, with a check of the plugin's own values (the
 * descriptor's `check`, see there), run before init and by --check-config:
 *   EVH_PLUGIN_CHECKED("hello", "1.0.0", "Says hello", hello_config, hello_check,
 *                      hello_init, hello_fini)
 */
#define EVH_PLUGIN_CHECKED(name_, version_, descr_, config_, check_, init_, fini_)         \
	EVH_PLUGIN_ROUTES(name_, version_, descr_, config_, check_, NULL, init_, fini_)

/* (ABI 1.12) The same, with the routes init may register declared (the
 * descriptor's `routes`, see there; check_ may be NULL):
 *   static const char *const hello_routes[] = {"GET /hello", "GET /hello/{name}", NULL};
 *   EVH_PLUGIN_ROUTES("hello", "1.0.0", "Says hello", hello_config, hello_check,
 *                     hello_routes, hello_init, hello_fini)
 */
#define EVH_PLUGIN_ROUTES(name_, version_, descr_, config_, check_, routes_, init_, fini_)  \
	const evh_api *evh__api EVH__HIDDEN;                                                    \
	static const evh_plugin_desc evh__desc = {                                             \
	    sizeof(evh_plugin_desc), EVH_ABI_MAJOR, EVH_ABI_MINOR, (name_), (version_),       \
	    (descr_), (config_), (init_), (fini_), (check_), (routes_), {0}};                  \
	EVH__C_LINKAGE EVH__EXPORT const evh_plugin_desc *evh_plugin_entry_v1(                  \
	    const evh_api *api);                                                               \
	EVH__C_LINKAGE EVH__EXPORT const evh_plugin_desc *evh_plugin_entry_v1(                  \
	    const evh_api *api)                                                                \
	{                                                                                      \
		evh__api = api;                                                                \
		return &evh__desc;                                                             \
	}

/* ========================================================================
 * Inline wrappers: what plugin code calls.
 * ===================================================================== */

/* Text for an evh_status. Static storage; never NULL. */
static inline const char *evh_strerror(int status) { return evh__api->strerror(status); }

/* Release memory the host returned to you ("free with evh_free"). */
static inline void evh_free(void *ptr) { evh__api->free(ptr); }

/* Log one line, tagged with the plugin's name (and the request id / trace
 * id of the current thread's request or event, when there is one). Never
 * log secrets. During init, an ERROR line is also the refusal reason.
 * Lines are cut at 1023 bytes; past [log] plugin_rate_limit_burst lines in
 * an interval the host drops the rest of that interval's (and says so). */
static inline void evh_log(evh_plugin *p, evh_log_level level, const char *fmt, ...)
    EVH__PRINTF(3, 4);
static inline void evh_log(evh_plugin *p, evh_log_level level, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	evh__api->log(p, level, buf);
}

/* ---- configuration (values of the plugin's declared schema) ---- */

/* The value of `key` in [plugin.NAME], or its declared default, or NULL.
 * Borrowed; lives as long as the plugin instance. */
static inline const char *evh_config_str(evh_plugin *p, const char *key)
{
	return evh__api->config_get(p, key);
}

/* `key` as an integer (k/M/G suffixes: ×1024). Returns `dflt` when unset. The
 * host has already validated the syntax against the schema. */
static inline int64_t evh_config_int(evh_plugin *p, const char *key, int64_t dflt)
{
	const char *v = evh__api->config_get(p, key);
	char *end;
	long long n;
	if (!v || !*v)
		return dflt;
	n = strtoll(v, &end, 10);
	if (*end == 'k' || *end == 'K')
		n *= 1024;
	else if (*end == 'M')
		n *= 1024 * 1024;
	else if (*end == 'G')
		n *= 1024LL * 1024 * 1024;
#ifdef __cplusplus
	return static_cast<int64_t>(n);
#else
	return (int64_t)n;
#endif
}

/* `key` as a boolean. Returns `dflt` when unset. */
static inline int evh_config_bool(evh_plugin *p, const char *key, int dflt)
{
	const char *v = evh__api->config_get(p, key);
	if (!v || !*v)
		return dflt;
	return !strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "on") || !strcmp(v, "1");
}

/* (ABI 1.10) The i-th key (from 0) that has a value in [plugin.NAME]: the
 * schema's keys with a declared default first, then those the section sets,
 * in the order read; NULL past the last. For schema names with a `*`
 * (collection.*.required): the host checks that a key matches the pattern,
 * the plugin that the part in place of the `*` names something it knows
 * (a collection of its own list), e.g.
 *   for (size_t i = 0; (k = evh_config_key_at(p, i)); i++) ...
 * Borrowed; lives as long as the plugin instance. NULL on an older host.
 * Main thread (check, init). */
static inline const char *evh_config_key_at(evh_plugin *p, size_t i)
{
	return EVH_API_HAS(config_key_at) ? evh__api->config_key_at(p, i) : NULL;
}

/* (ABI 1.7) Say that the value of `key` in [plugin.NAME] is wrong, e.g.
 *   evh_config_error(p, "transport", "must be smtp or maildir, got '%s'", t);
 * In the descriptor's check, the host reports it as
 * "FILE:LINE: [plugin.NAME] KEY: message" at the line that set `key` (the
 * section's header when `key` has its default; `key` NULL: the section as
 * a whole), and the check fails, whatever it returns. Elsewhere (init), it
 * logs an ERROR "KEY: message", which is then the refusal reason like any
 * ERROR line of init; on a host older than 1.7 the SDK does that itself
 * through evh_log. Main thread. */
static inline void evh_config_error(evh_plugin *p, const char *key, const char *fmt, ...)
    EVH__PRINTF(3, 4);
static inline void evh_config_error(evh_plugin *p, const char *key, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (EVH_API_HAS(config_error))
		evh__api->config_error(p, key, buf);
	else if (key)
		evh_log(p, EVH_LOG_ERROR, "%s: %s", key, buf);
	else
		evh__api->log(p, EVH_LOG_ERROR, buf);
}

/* The plugin's instance name (the NAME of [plugin.NAME]). Borrowed. */
static inline const char *evh_plugin_name(evh_plugin *p) { return evh__api->plugin_name(p); }

/* A directory this plugin may write files to: <state_dir>/NAME, created by
 * the host before init. NULL during check (not created yet). */
static inline const char *evh_state_dir(evh_plugin *p) { return evh__api->state_dir(p); }

/* (ABI 1.13) 1 once this instance is winding down: the daemon got SIGTERM,
 * or a reload is draining the plugin (to stop it, or to restart it with a
 * new configuration or build); 0 otherwise, and always on an older host.
 * The host waits for a handler in flight, up to [host] stop_timeout + 10 s,
 * then exits with status 3 and whatever it was doing is lost. A handler
 * that works through a long list (a mail to every user) checks it between
 * items and, when it says 1, returns EVH_EVENT_KEEP_AND_RETRY: what it did
 * commits, and the event comes again after the start (or to the new
 * instance), for the rest. Any thread; cheap (an atomic load). */
static inline int evh_stopping(evh_plugin *p)
{
	return EVH_API_HAS(stopping) ? evh__api->stopping(p) : 0;
}

/* ---- HTTP ---- */

/* Register a route. Only during init. Patterns are matched segment by
 * segment; literal segments win over {captures}. Two plugins may not
 * register the same method and pattern (the second init fails), nor one of
 * the paths the host serves (/healthz, /readyz, /metrics, /admin...).
 * Declare them (EVH_PLUGIN_ROUTES, ABI 1.12) and the host finds such a
 * clash before any init, and at --check-config; a plugin that declared its
 * routes may register only those (the same method and pattern, character
 * for character). Returns EVH_OK; EVH_EINVAL for a route refused (bad
 * method, pattern or flags, a conflict, one not declared), EVH_ENOMEM when
 * the host is out of memory, EVH_ESTATE outside init: each logged with the
 * reason (but EVH_EINVAL for NULL arguments or a struct_size too small,
 * which is not). */
static inline int evh_http_route_ex(evh_plugin *p, const evh_route *route)
{
	return evh__api->http_route(p, route);
}

static inline int evh_http_route(evh_plugin *p, const char *method, const char *pattern,
                                 evh_http_handler handler, void *ud)
{
	evh_route r;
	memset(&r, 0, sizeof r);
	r.struct_size = sizeof r;
	r.method = method;
	r.pattern = pattern;
	r.handler = handler;
	r.ud = ud;
	return evh__api->http_route(p, &r);
}

/* Request accessors. All returned strings are borrowed from the request,
 * NUL-terminated, and NULL when absent. */
static inline const char *evh_req_method(evh_request *r) { return evh__api->req_method(r); }
static inline const char *evh_req_path(evh_request *r) { return evh__api->req_path(r); }
/* A {name} capture of the matched pattern, URL-decoded. */
static inline const char *evh_req_param(evh_request *r, const char *name)
{
	return evh__api->req_param(r, name);
}
/* A query-string parameter, URL-decoded; the first if repeated. */
static inline const char *evh_req_query(evh_request *r, const char *name)
{
	return evh__api->req_query(r, name);
}
/* The whole query string (after '?', still percent-encoded), or NULL when
 * the request has none or the host predates this call. For routes that take
 * open-ended parameters (e.g. FIELD=VALUE filters); use evh_req_query for
 * known names. */
static inline const char *evh_req_query_string(evh_request *r)
{
	if (!EVH_API_HAS(req_query_string))
		return NULL;
	return evh__api->req_query_string(r);
}
/* A request header's value (case-insensitive name), NULL when the request
 * has none; valid until the handler returns. As RFC 9110 5.2-5.3 has it:
 * without the spaces and tabs around it, and of a field sent on several
 * lines, their values joined by ", " in order (Cookie's by "; "), but the
 * first line's only for fields that take one value (Authorization,
 * Content-Type, Content-Length, Host, Date, From, Origin, Range, Referer,
 * User-Agent, If-Modified-Since, If-Unmodified-Since, If-Range,
 * Max-Forwards, Proxy-Authorization). */
static inline const char *evh_req_header(evh_request *r, const char *name)
{
	return evh__api->req_header(r, name);
}
/* The request body (NUL-terminated for convenience; *len excludes it). The
 * host has enforced [http] max_body_bytes, and for EVH_ROUTE_JSON routes
 * that it is well-formed JSON within the depth limit. */
static inline const char *evh_req_body(evh_request *r, size_t *len)
{
	return evh__api->req_body(r, len);
}
/* The request id (also in the X-Request-Id response header and in logs). */
static inline const char *evh_req_id(evh_request *r) { return evh__api->req_id(r); }
/* For EVH_ROUTE_AUTH routes: the token's `sub`; NULL otherwise. */
static inline const char *evh_req_auth_subject(evh_request *r)
{
	return evh__api->req_auth_subject(r);
}
/* The subject of the client certificate the request came with (ABI 1.5),
 * e.g. "/CN=billing/O=Example": only over HTTPS with mutual TLS on ([http]
 * tls_client_ca), where the host has verified it against those CAs before
 * the request was read. NULL otherwise (the plain listener, no client
 * certificate asked for, or an older host). Valid during the handler. */
static inline const char *evh_req_client_cert(evh_request *r)
{
	if (!EVH_API_HAS(req_client_cert))
		return NULL;
	return evh__api->req_client_cert(r);
}
/* The client's IP address (ABI 1.5), e.g. "192.0.2.7" or "2001:db8::7":
 * the connection's peer, or behind a reverse proxy listed in [http]
 * trusted_proxies, the address its X-Forwarded-For header names (what a
 * client writes there itself is not believed). NULL on an older host.
 * Valid during the handler. */
static inline const char *evh_req_client_addr(evh_request *r)
{
	if (!EVH_API_HAS(req_client_addr))
		return NULL;
	return evh__api->req_client_addr(r);
}
/* For EVH_ROUTE_AUTH routes (ABI 1.6): 1 when the token is this host's own
 * (signed with [auth] jwt_secret_file, as evh_auth_sign makes them), 0 when
 * another issuer signed it ([auth] jwt_public_key_file, jwt_jwks_url) or
 * there is none. Subjects are only unique within their issuer: before
 * taking a token's subject for one of your own ids (a user id your plugin
 * made), check that the token is local, or an identity provider's user
 * whose `sub` happens to be that id acts as that user. 0 on an older host. */
static inline int evh_req_auth_local(evh_request *r)
{
	if (!EVH_API_HAS(req_auth_local))
		return 0;
	return evh__api->req_auth_local(r);
}
/* For EVH_ROUTE_AUTH routes: whether the token carries `role`. */
static inline int evh_req_auth_has_role(evh_request *r, const char *role)
{
	return evh__api->req_auth_has_role(r, role);
}

/* Response builders. Default status is 200 with an empty body. */
static inline void evh_resp_status(evh_response *resp, int status)
{
	evh__api->resp_status(resp, status);
}
/* Add a header. Name and value are copied (EVH_ENOMEM when they cannot be:
 * the host then answers as for a body it could not copy, see below).
 * EVH_ETOOBIG: the response has 64 headers already (returned from the
 * handler, a 500: the plugin's failure, not the client's). EVH_EINVAL: a
 * name that is not an HTTP token, a value with control characters, or
 * Content-Length, Transfer-Encoding, Connection, X-Request-Id or Date (the
 * host's; Date refused since ABI 1.10, X-Request-Id too: a copy went out
 * beside the host's). Content-Type replaces the body's type and does not
 * count toward the 64. */
static inline int evh_resp_header(evh_response *resp, const char *name, const char *value)
{
	return evh__api->resp_header(resp, name, value);
}
/* Set the body (copied) and its Content-Type. EVH_ENOMEM when it cannot be
 * copied: if nothing sets another body, the host then answers 500 for a
 * 1xx-3xx status, saying the request was carried out (a success without
 * its body would pass for a whole answer), or the 4xx/5xx status without
 * a body. EVH_EINVAL, nothing set: `len` > 0 with a NULL `body`, `len`
 * past PTRDIFF_MAX (a negative count cast to size_t), or a content type
 * with control characters. */
static inline int evh_resp_body(evh_response *resp, const char *content_type, const void *body,
                                size_t len)
{
	return evh__api->resp_body(resp, content_type, body, len);
}
/* Status plus a JSON body (application/json). */
static inline int evh_resp_json(evh_response *resp, int status, const char *json, size_t len)
{
	evh__api->resp_status(resp, status);
	return evh__api->resp_body(resp, "application/json", json, len);
}
/* An RFC 9457 application/problem+json answer. `type` is a short stable
 * slug (e.g. "validation"), expanded by the host to a URI; `field` names
 * the offending input field or is NULL. Out of memory (EVH_ENOMEM) the
 * status is set all the same, without a body. A status outside 100-599 is
 * EVH_EINVAL, and nothing is set. */
static inline int evh_resp_problem(evh_response *resp, int status, const char *type,
                                   const char *title, const char *detail, const char *field)
{
	return evh__api->resp_problem(resp, status, type, title, detail, field);
}

/* ---- events ---- */

/* Subscribe a handler to a topic. Only during init. The host runs one
 * consumer (group [plugin.NAME] group, default evhost.NAME) per plugin. */
static inline int evh_subscribe(evh_plugin *p, const evh_subscription *sub)
{
	return evh__api->subscribe(p, sub);
}

/* Publish an event: `json` is its data (the Kafka message value), `key`
 * the aggregate id (the Kafka key: per-entity order; NULL for none: the
 * partitioner then spreads such events, in no order; a compacted topic
 * refuses them, holding the outbox back), `type` its CloudEvents
 * type. With a `tx`, the event is written to the plugin's outbox inside that
 * transaction and leaves only if it commits. With tx == NULL the host writes
 * it to the outbox in a transaction of its own. Either way, EVH_OK means the
 * event is on disk; the relay sends it to Kafka after the commit.
 * EVH_EFULL: the outbox is at its bound (answer 503 with Retry-After).
 * EVH_EINVAL: `json` is not UTF-8, or not one strict RFC 8259 JSON text,
 * or holds a number beyond a double's range or a \u0000 in a string
 * (logged with the byte where it broke); or `type` is longer than 255 bytes;
 * or `len` is past PTRDIFF_MAX (a negative count cast to size_t).
 * EVH_ETOOBIG: key and data are more than one Kafka message may carry (the
 * producer's message.max.bytes less about 1 KB for headers, as
 * evh_publish_max_bytes says; answer 413): such an event could never be
 * sent. Logged as a warning (an error during init). */
static inline int evh_publish(evh_plugin *p, evh_tx *tx, const char *topic, const char *key,
                              const char *type, const char *json, size_t len)
{
	return evh__api->publish(p, tx, topic, key, type, json, len);
}

/* (ABI 1.8) The most bytes of key and data together one event may have:
 * beyond it evh_publish answers EVH_ETOOBIG. For telling a client the
 * limit in its 413. 0 when not known: a host older than 1.8, or during
 * check (no producer yet). Fixed for the process's life. */
static inline size_t evh_publish_max_bytes(evh_plugin *p)
{
	return EVH_API_HAS(publish_max_bytes) ? evh__api->publish_max_bytes(p) : 0;
}

/* Event accessors. Strings are borrowed from the event and NUL-terminated.
 * The id is the ce_id header, or "TOPIC/PARTITION/OFFSET" for a message
 * without one, or whose ce_id is longer than 255 bytes or holds a NUL; it is
 * what the inbox de-duplicates on. Source and time are NULL when absent, and
 * when longer than their buffers (255 and 39 bytes) or holding a NUL: never
 * a cut value. */
static inline const char *evh_event_id(const evh_event *e) { return evh__api->ev_id(e); }
static inline const char *evh_event_type(const evh_event *e) { return evh__api->ev_type(e); }
static inline const char *evh_event_source(const evh_event *e) { return evh__api->ev_source(e); }
static inline const char *evh_event_time(const evh_event *e) { return evh__api->ev_time(e); }
static inline const char *evh_event_topic(const evh_event *e) { return evh__api->ev_topic(e); }
static inline int32_t evh_event_partition(const evh_event *e)
{
	return evh__api->ev_partition(e);
}
static inline int64_t evh_event_offset(const evh_event *e) { return evh__api->ev_offset(e); }
static inline const char *evh_event_key(const evh_event *e, size_t *len)
{
	return evh__api->ev_key(e, len);
}
/* The event's data: the Kafka message value (JSON for evhost publishers). */
static inline const char *evh_event_data(const evh_event *e, size_t *len)
{
	return evh__api->ev_data(e, len);
}
/* Any Kafka header by name (e.g. "traceparent"), as a string. */
static inline const char *evh_event_header(const evh_event *e, const char *name)
{
	return evh__api->ev_header(e, name);
}
/* 1 on first delivery, 2 on the first retry, ... */
static inline int evh_event_attempt(const evh_event *e) { return evh__api->ev_attempt(e); }
/* Say why you return RETRY, REJECT, KEEP_AND_DEAD_LETTER or KEEP_AND_RETRY;
 * goes to logs and DLQ headers (copied, cut at 511 bytes, not inside a
 * UTF-8 character; no personal data). */
static inline void evh_event_set_error(const evh_event *e, const char *message)
{
	evh__api->ev_set_error(e, message);
}

/* ---- storage ---- */

/* Apply pending migrations to the plugin's database. Call from init:
 * EVH_ESTATE (and a line in the log) anywhere else. */
static inline int evh_migrate(evh_plugin *p, const evh_migration *m, size_t n)
{
	return evh__api->migrate(p, m, n);
}

/* Begin a transaction on the plugin's database. Transactions of one plugin
 * run one at a time (others wait; read transactions, evh_tx_begin_read, run
 * beside them); keep them short. End every one with
 * evh_tx_commit or evh_tx_rollback, on the thread that began it. EVH_EBUSY
 * when another (an event handler's batch, which lasts as long as its
 * handlers) held the database for 5 s: returned from an HTTP handler, the
 * host answers 503 with Retry-After: 1. evh_publish without a transaction
 * begins one the same way. A handler (HTTP, init, fini) that returns with
 * one still open is a bug the host mends: it rolls it back and logs it (an
 * HTTP handler's answer becomes a 500; init fails). */
static inline int evh_tx_begin(evh_plugin *p, evh_tx **tx) { return evh__api->tx_begin(p, tx); }
/* (ABI 1.15) Begin a read transaction: a snapshot of what was committed
 * when it began, on a read-only connection of its own, so it neither waits
 * for the plugin's write transactions (evh_tx_begin's, an event handler's
 * batch) nor makes them wait. It never sees writes not yet committed, this
 * thread's own open transaction's included. evh_query, evh_query_json and
 * the rows calls work on it; evh_exec, a statement that writes and
 * evh_publish are refused with EVH_EINVAL ("refused: ..." in evh_tx_error
 * and the log). End it with evh_tx_commit or evh_tx_rollback (both just end
 * it; commit returns its first failure), on the thread that began it; a
 * handler that returns with one open is mended as for evh_tx_begin. A few
 * (4) may be open at once per plugin: one more waits for one to end,
 * EVH_EBUSY after 5 s. Keep them short all the same: a long one holds back
 * the reuse of the database's write-ahead log, which grows meanwhile. On a
 * host older than 1.15 it is an evh_tx_begin (the same reads, waiting as
 * those do, and nothing refused). */
static inline int evh_tx_begin_read(evh_plugin *p, evh_tx **tx)
{
	if (!EVH_API_HAS(tx_begin_read))
		return evh__api->tx_begin(p, tx);
	return evh__api->tx_begin_read(p, tx);
}
/* Commit and release `tx` (also on failure: then nothing was written). Set
 * an HTTP answer's body after it returned EVH_OK, not before (see
 * evh_http_handler). */
static inline int evh_tx_commit(evh_tx *tx) { return evh__api->tx_commit(tx); }
/* Roll back and release `tx`. Its reads may have been of writes that a
 * failed group commit then undid: an HTTP handler's answer is replaced by a
 * 503 then; elsewhere, end with evh_tx_commit to learn the group's result. */
static inline void evh_tx_rollback(evh_tx *tx) { evh__api->tx_rollback(tx); }
/* The storage engine's message for the last failed call on `tx`. */
static inline const char *evh_tx_error(evh_tx *tx) { return evh__api->tx_error(tx); }

/* Run one SQL statement with `?` binds. *changes (optional) gets the number
 * of rows changed. EVH_ECONSTRAINT on a unique/check violation. EVH_EINVAL
 * for what is the host's (here, in evh_query and in migrations): transaction
 * control, ATTACH/DETACH, PRAGMAs but the schema-reading ones, and writes to
 * evh_* tables ("refused: ..." in evh_tx_error and the log). */
static inline int evh_exec(evh_tx *tx, const char *sql, const evh_value *args, size_t nargs,
                           int64_t *changes)
{
	return evh__api->exec(tx, sql, args, nargs, changes);
}

/* Run a query; iterate with evh_rows_next, end with evh_rows_close. */
static inline int evh_query(evh_tx *tx, const char *sql, const evh_value *args, size_t nargs,
                            evh_rows **rows)
{
	return evh__api->query(tx, sql, args, nargs, rows);
}
/* 1: a row is ready; 0: no more rows; <0: an evh_status error. */
static inline int evh_rows_next(evh_rows *r) { return evh__api->rows_next(r); }
static inline int evh_rows_count(evh_rows *r) { return evh__api->rows_count(r); }
static inline const char *evh_rows_name(evh_rows *r, int col) { return evh__api->rows_name(r, col); }
static inline evh_value_type evh_rows_type(evh_rows *r, int col)
{
	return evh__api->rows_type(r, col);
}
static inline int64_t evh_rows_int(evh_rows *r, int col) { return evh__api->rows_int(r, col); }
static inline double evh_rows_real(evh_rows *r, int col) { return evh__api->rows_real(r, col); }
/* Borrowed until the next evh_rows_next / evh_rows_close, or the end of the
 * transaction (which ends the rows: evh_rows_next then says EVH_ESTATE;
 * evh_rows_close is still owed). */
static inline const char *evh_rows_text(evh_rows *r, int col, size_t *len)
{
	return evh__api->rows_text(r, col, len);
}
static inline void evh_rows_close(evh_rows *r) { evh__api->rows_close(r); }

/* Run a query and render all rows as a JSON array of objects keyed by
 * column name. A TEXT column whose name ends in "_json" is embedded as
 * JSON rather than as a string (under the name without "_json"); the call
 * fails with EVH_ESTORE when one such value is not strict RFC 8259 JSON,
 * holds a number beyond a double's range or a \u0000 or lone surrogate
 * escape in a string, or nests deeper than 128 levels. SQLite's json_valid()
 * takes all of those: check data before you store it for such a column
 * with this call, "SELECT ? AS data_json" (docs/sdk.md, Consuming events).
 * *json: free with evh_free. */
static inline int evh_query_json(evh_tx *tx, const char *sql, const evh_value *args,
                                 size_t nargs, char **json, size_t *len)
{
	return evh__api->query_json(tx, sql, args, nargs, json, len);
}

/* (ABI 1.9) The most bytes one value (a string, a blob), or one row, the
 * plugin's storage takes (SQLite's SQLITE_LIMIT_LENGTH; 10^9 unless SQLite
 * was built otherwise): beyond it a write, or an event's row in the outbox,
 * fails with EVH_ETOOBIG. For telling a client the limit in its 413. 0 when
 * not known: a host older than 1.9, or during check (no storage yet). */
static inline size_t evh_store_max_bytes(evh_plugin *p)
{
	return EVH_API_HAS(store_max_bytes) ? evh__api->store_max_bytes(p) : 0;
}

/* ---- auth ---- */

/* Issue a bearer token (JWT, HS256, signed with the host's [auth] secret)
 * for `subject` carrying `roles`, valid for `ttl_s` seconds. The host checks
 * such tokens on EVH_ROUTE_AUTH routes of every plugin. *token: free with
 * evh_free. EVH_ESTATE when no [auth] jwt_secret_file is configured;
 * EVH_EINVAL for a subject or roles a token cannot carry, or (host 1.8 and
 * later) a ttl_s over [auth] token_ttl_max (30 days unless configured). */
static inline int evh_auth_sign(evh_plugin *p, const char *subject, const char *const *roles,
                                size_t nroles, int ttl_s, char **token)
{
	if (!EVH_API_HAS(auth_sign))
		return EVH_EUNSUPPORTED;
	return evh__api->auth_sign(p, subject, roles, nroles, ttl_s, token);
}

/* Sign `subject` out everywhere (ABI 1.8): every token this host signed
 * for it before this call is refused from the call's return on, on the
 * EVH_ROUTE_AUTH routes of every plugin (401 "token revoked ...") and by
 * the event streams it opened, which end; tokens signed after the call are
 * good. Kept on disk ([host] state_dir) with a full sync before the call
 * returns, so a restart does not bring the tokens back, and for [auth]
 * token_ttl_max, after which no token signed before it is valid anyway.
 * For a password change, a deleted account or fewer roles, call it before
 * committing the change: if the commit then fails, the tokens are gone but
 * nothing else changed, which a new login mends; the other order would
 * leave a window where the old tokens outlive the change. Only tokens of
 * this host ([auth] jwt_secret_file); another issuer's (evh_req_auth_local
 * says 0) are that issuer's to revoke. EVH_EINVAL: an empty subject or one
 * of 128 bytes or more. EVH_ESTATE: in check (also made without an [auth]
 * jwt_secret_file: a key given back would bring its tokens). EVH_ESTORE: the sign-out could not be saved; it holds
 * until evhostd stops (the log says why), so treat it as a failure of the
 * change that asked for it. EVH_EUNSUPPORTED: a host older than 1.8. */
static inline int evh_auth_revoke(evh_plugin *p, const char *subject)
{
	if (!EVH_API_HAS(auth_revoke))
		return EVH_EUNSUPPORTED;
	return evh__api->auth_revoke(p, subject);
}

/* ---- server-sent events (ABI 1.1) ---- */

/* In an HTTP handler: make this response a Server-Sent Events stream
 * (200, Content-Type: text/event-stream, Cache-Control: no-store) that
 * receives what evh_stream_publish sends to `channel`, a string of your
 * choosing (1-256 bytes, e.g. the caller's user id) scoped to your plugin.
 * Events published from this call on are queued for it. After your
 * handler returns, the host keeps the connection on its worker thread,
 * writes the events and a ": keepalive" comment every 15 s, and ends it
 * when the client leaves, your plugin stops or reloads, the daemon stops,
 * or the client falls too far behind. Your plugin's code is not called for
 * it again. Headers added with evh_resp_header are sent too; a body is
 * ignored, and a later evh_resp_problem or status other than 200 cancels
 * the stream. EVH_EBUSY: [http] max_streams streams are open, EVH_ESTATE:
 * the server is stopping; for both the response is already a 503 problem
 * with Retry-After (return EVH_OK or the code). EVH_ESTATE also for a
 * second call (the first stream stands).
 * EVH_EUNSUPPORTED: the host predates streaming. HTTP worker thread. */
static inline int evh_resp_stream(evh_response *resp, const char *channel)
{
	if (!EVH_API_HAS(resp_stream))
		return EVH_EUNSUPPORTED;
	return evh__api->resp_stream(resp, channel);
}

/* Send one event to every open stream of your plugin on `channel`:
 * "id: N" (increasing, also across daemon restarts), "event: EVENT" (NULL:
 * none, which clients see as "message"; no control characters, at most 64
 * bytes, not starting "evhost.": those are the host's), and `data` (usually
 * JSON; line breaks in it become separate "data:" lines, which clients join
 * back; at most 64 KiB). Copied and queued; never waits for a client: a
 * stream whose queue is full is dropped (the client reconnects). The host
 * also keeps the latest events in memory: a client reconnecting with
 * Last-Event-ID gets what it missed on its channel, or an "evhost.missed"
 * event when the host cannot vouch for all of it (then it re-reads your
 * durable state; docs/sdk.md, "Resuming"). Returns the number of streams it
 * was queued for (>= 0), or an error. Any thread. */
static inline int evh_stream_publish(evh_plugin *p, const char *channel, const char *event,
                                     const char *data)
{
	if (!EVH_API_HAS(stream_publish))
		return EVH_EUNSUPPORTED;
	return evh__api->stream_publish(p, channel, event, data);
}

/* ------------------------------------------------------------------ tracing */

/* A span of your own (ABI 1.4), for work worth seeing in a trace: a call to
 * an SMTP server, another service, a slow computation. It is a child of the
 * span the host has open on this thread (the HTTP request or the event
 * being handled), or begins a trace on a thread of your own; until it ends,
 * events you publish on this thread are its children. NULL when the span
 * is not recorded (tracing off, trace not sampled, out of memory, or an
 * older host): the two calls below take NULL and do nothing, so call them
 * unconditionally. End it on the thread that began it, the last begun
 * first. `name` is low-cardinality ("smtp send", not one with an address in
 * it); at most 127 bytes are kept. */
static inline evh_span *evh_span_begin(evh_plugin *p, evh_span_kind kind, const char *name)
{
	if (!EVH_API_HAS(span_begin))
		return NULL;
	return evh__api->span_begin(p, kind, name);
}

/* A string attribute (OpenTelemetry's names where one fits, e.g.
 * "server.address"; yours under your plugin's name). Keys and values are
 * copied (at most 256 bytes each) and at most 16 are kept, the host's
 * "evhost.plugin" among them. Never put secrets or personal data in one:
 * spans leave the machine. */
static inline void evh_span_set(evh_span *span, const char *key, const char *value)
{
	if (span)
		evh__api->span_set(span, key, value);
}

/* End it and free it: `error` NULL for success, else the span's status is
 * an error with this message (no personal data, as above). */
static inline void evh_span_end(evh_span *span, const char *error)
{
	if (span)
		evh__api->span_end(span, error);
}

/* ------------------------------------------------------------------ metrics */

/* (ABI 1.9) Declare a metric of your own, served on the host's /metrics
 * with the label plugin="NAME" (yours) and, when `label` is not NULL, one
 * label of that name whose value each update gives (e.g. "result" for
 * sent/failed). Declare in init (in check: NULL, said); the handle is valid for the process's
 * life, and a restarted plugin (a reload) that declares it again gets it
 * back with its values (a plugin disabled by a reload leaves /metrics until
 * it is enabled again). `name`: a Prometheus metric name of 1 to 64 bytes
 * (letters, digits, '_', ':'; not a digit first), not starting with
 * "evhost_" or "process_" (the host's), nor sharing a series name with a
 * histogram's NAME_bucket/_sum/_count (either way); a counter's should end in "_total", a
 * histogram's in "_seconds". Plugins may share a name when they declare
 * it alike (type, label): each has its own series. `help`: one line of 1
 * to 256 bytes of UTF-8, without a backslash. `label`: letters, digits and
 * '_', not "plugin", "le" or one starting with "__". NULL when refused: the
 * host's log says why, and every call below does nothing with NULL (as
 * with a host before 1.9). */
static inline evh_metric *evh_metric_new(evh_plugin *p, evh_metric_type type, const char *name,
                                         const char *help, const char *label)
{
	if (!EVH_API_HAS(metric))
		return NULL;
	return evh__api->metric(p, type, name, help, label);
}

/* Add `delta` to a counter (a negative one is ignored: counters only go
 * up) or a gauge. `label_value`: the label's value for a metric declared
 * with one (1 to 128 bytes of UTF-8; NULL or another: the update is
 * dropped), ignored otherwise. Keep the values few (a result, a kind;
 * never an id or an address): past 100 of them per metric (or 2048 series
 * of all plugins' metrics together), updates for new ones are dropped and
 * counted in evhost_metrics_series_dropped_total.
 * Any thread; lock-free. */
static inline void evh_metric_add(evh_metric *m, const char *label_value, int64_t delta)
{
	if (m)
		evh__api->metric_add(m, label_value, delta);
}

/* Set a gauge (for a counter or a histogram it does nothing). */
static inline void evh_metric_set(evh_metric *m, const char *label_value, int64_t value)
{
	if (m)
		evh__api->metric_set(m, label_value, value);
}

/* Count one observation of a histogram, in seconds (for the others it does
 * nothing). The buckets are the host's: 0.5 ms to 10 s. */
static inline void evh_metric_observe(evh_metric *m, const char *label_value, double seconds)
{
	if (m)
		evh__api->metric_observe(m, label_value, seconds);
}

#ifdef __cplusplus
}
#endif
#endif /* EVHOST_EVHOST_H */
