/* Configuration: the main INI file plus conf.d/NAME.conf drop-ins (lexical
 * order; a later key overrides an earlier one), each value remembered with
 * the file and line it came from, and the host's own sections validated
 * into a `settings` struct. Plugin sections are validated against each
 * plugin's declared schema by plugins.c (cfg_validate_section). */
#ifndef EVHOST_CONFIG_H
#define EVHOST_CONFIG_H
#include <sys/types.h>
#include <stdbool.h>
#include <stdint.h>
#include <evhost/evhost.h>
#include "diag.h"
#include "log.h"
#include "proxy.h"

/* The most backups POST /admin/backup keeps ({"keep": N}), which evhostctl
 * backup --keep checks before asking. */
#define BACKUP_KEEP_MAX 10000

typedef struct cfg_entry {
	char *section; /* "host", "kafka", "plugin.user" */
	char *key;
	char *value;
	char *file;
	int line;
} cfg_entry;

/* A section seen: its name and where it was first seen (its [header] line;
 * for keys before any header, the first key's, under the name ""). */
typedef struct cfg_section {
	char *name;
	char *file;
	int line;
} cfg_section;

/* All entries after merging: one per (section, key), the last one read wins. */
typedef struct cfg {
	cfg_entry *v;
	size_t n, cap;
	char *main_file; /* as given */
	char *confdir;   /* resolved conf.d directory (absolute or relative to main file's dir) */
	char *plugin_dir; /* cfg_load_pinned's: plugin paths resolved against it, not [host]'s */
	cfg_section *sections; /* every section seen, in first-seen order */
	size_t nsections;
	/* Where cfg_load failed (it returned -1): the main file could not be
	 * read (then nothing was), or not whole (a syntax error: the lines
	 * after it); a drop-in or the conf.d directory was not read whole; or
	 * memory ran out (nothing read can be trusted then). What was read is
	 * kept. */
	bool main_unread, main_incomplete, dropins_incomplete, nomem;
	/* Each file not read whole: where its reading stopped (the line at
	 * fault; 0: none of it read; -1: it could not be read at all). */
	struct cfg_stop {
		char *file;
		int line;
	} *stops;
	size_t nstops;
} cfg;

/* Read `main_file`, then every *.conf in its confdir ([host] confdir, default
 * "conf.d" next to the main file). Syntax errors go to `d` as file:line.
 * Returns 0 when the files could be read and parsed, -1 otherwise; out of
 * memory, `d` says so (and not what was read after it). Always cfg_free(). */
int cfg_load(cfg *c, const char *main_file, diag *d);
/* cfg_load for a reload: the drop-ins read from `confdir`, and the plugins'
 * paths resolved (by settings_from_cfg) against `plugin_dir`: the running
 * daemon's, whatever the main file's [host] says now (those keys take
 * effect at a restart, as the reload's warning about them says). */
int cfg_load_pinned(cfg *c, const char *main_file, const char *confdir, const char *plugin_dir,
                    diag *d);
void cfg_free(cfg *c);
/* Whether a line of a file not read whole, past where its reading stopped,
 * sets [section] key (read as INI lines are, sections followed from the
 * file's start): 1 with "FILE:LINE" of the first in `where`; -1 when such
 * a file cannot be read to look (`where` names it); 0 when none does. What
 * the daemon running now may have read there (evhostctl). */
int cfg_unread_sets(const cfg *c, const char *section, const char *key, char *where,
                    size_t wherelen);
/* Parse INI text as if read from `file` (for tests and fuzzers). `c` must be
 * zeroed or hold earlier results: the text is merged on top of them. */
int cfg_load_string(cfg *c, const char *text, const char *file, diag *d);
/* Whether line[0..n) is a section header as the parser reads one: '['
 * after spaces or tabs, and a ']' on the line. Its name, spaces around it
 * dropped, in name[0..*len), and the ']' in *close (optional). Whether the
 * name is a good one is not asked (evhostctl edits a drop-in by it). */
int cfg_section_header(const char *line, size_t n, const char **name, size_t *len,
                       const char **close);

const cfg_entry *cfg_find(const cfg *c, const char *section, const char *key);
/* The section `name` as first seen, or NULL. */
const cfg_section *cfg_section_find(const cfg *c, const char *name);
const char *cfg_get(const cfg *c, const char *section, const char *key);

/* Validate one section's keys against a schema (the plugin descriptor's
 * config table, terminated by name == NULL). `skip` lists keys the host
 * itself owns in that section (e.g. "enabled", "path"), NULL-terminated. */
void cfg_validate_section(const cfg *c, const char *section, const evh_config_key *schema,
                          const char *const *skip, diag *d);
/* Check one value against a type; NULL when fine, else a static message. */
const char *cfg_check_value(evh_config_type type, const char *value);
/* Whether a schema name (may contain '*' segments) matches a key. */
int cfg_key_matches(const char *pattern, const char *key);

/* A [plugin.NAME] section as the host reads it. */
typedef struct plugin_settings {
	char *name;       /* NAME */
	char *section;    /* "plugin.NAME" */
	int enabled;      /* default true */
	int required;     /* default true */
	char *path;       /* resolved absolute path of the .so */
	char *group;      /* consumer group, default "evhost.NAME" */
	int log_level;    /* [plugin.NAME] log_level; -1 = the [log] level */
	const char *file; /* where the section was defined (for messages; borrowed from the cfg) */
	int line;
} plugin_settings;

/* Everything the host needs from [host] [http] [kafka] [store] [log] [metrics] [auth] [admin]
 * [tracing]. */
/* [store] retention defaults (also what a plugin run without a host gets). */
#define SETTINGS_EVENT_RETENTION_MS (7LL * 86400000)
#define SETTINGS_INBOX_RETENTION_MS (30LL * 86400000)

#define PLUGIN_NAME_MAX 64  /* bytes of a plugin's name ([plugin.NAME]) */
#define ADMIN_TOKEN_MIN 16   /* bytes of the [admin] token */
#define ADMIN_TOKEN_MAX 4096

/* One [kafka] rdkafka.NAME property, "rdkafka." stripped. */
typedef struct rdkafka_prop {
	char *key;
	char *value;      /* maybe a secret read from a file: freed by free_secret */
	const char *file; /* where it was set, for messages (borrowed from the cfg); may be NULL */
	int line;
} rdkafka_prop;

/* [log] access: every request's access log line, those answered 4xx or
 * 5xx, or none. */
typedef enum { HTTP_ACCESS_ALL, HTTP_ACCESS_ERRORS, HTTP_ACCESS_OFF } http_access_log;
/* Its name in the configuration ("all", "errors", "off"). */
const char *log_access_name(http_access_log which);

typedef struct settings {
	char *plugin_dir, *state_dir, *confdir;
	char *http_listen; /* civetweb listening_ports syntax derived from host:port */
	char *http_host;
	int http_port;
	char *http_tls_listen;      /* [http] tls_listen in civetweb syntax (no "s"); NULL = none */
	char *http_tls_certificate; /* [http] tls_certificate: PEM, private key and chain */
	int http_tls_min13;         /* [http] tls_min_version = 1.3 (default 1.2) */
	char *http_tls_client_ca;   /* [http] tls_client_ca: CAs client certificates need */
	char *http_tls_ciphers;     /* [http] tls_ciphers: TLS 1.2 ciphers; NULL = OpenSSL's */
	char *http_tls_ciphersuites; /* [http] tls_ciphersuites: TLS 1.3's; NULL = OpenSSL's */
	proxy_list http_trusted_proxies; /* [http] trusted_proxies; empty: X-Forwarded-For unread */
	int http_threads;
	int http_request_timeout_ms; /* [http] request_timeout: a request's head, each body read */
	int http_keep_alive_ms; /* [http] keep_alive_timeout: idle wait between requests;
	                         * -1: keep-alive off ("0"); 0: civetweb's 500 ms */
	int http_max_streams; /* [http] max_streams; 0 = threads/2, at least 1 */
	int http_stream_unacked_ms; /* [http] stream_unacked_timeout: a vanished client's stream */
	int http_max_plugin_requests; /* [http] max_plugin_requests; 0 = no limit */
	int64_t max_body_bytes;
	int http_max_head_bytes; /* [http] max_head_bytes: a request line and headers; 0 = 16K */
	int json_max_depth;
	char *brokers; /* "embedded" or bootstrap list */
	int embedded;
	rdkafka_prop *rdkafka; /* the passthrough properties, in the order set */
	size_t nrdkafka;
	int retry_max_attempts, retry_backoff_ms, retry_backoff_max_ms;
	char *dlq_suffix;      /* default ".dlq": DLQ topic = <topic>.<plugin><suffix> */
	char *store_synchronous; /* "FULL" or "NORMAL" */
	int64_t outbox_max_rows;
	int64_t event_retention_ms; /* [store] event_retention; 0 = keep forever */
	int64_t inbox_retention_ms; /* [store] inbox_retention; 0 = keep forever */
	int stop_timeout_ms;        /* [host] stop_timeout: outbox flush budget at stop */
	evh_log_level log_level;
	log_format log_fmt;
	http_access_log log_access; /* [log] access: which requests get an access log line */
	int64_t log_rate_burst;       /* [log] plugin_rate_limit_burst: lines; 0 = no limit */
	int log_rate_interval_ms;     /* [log] plugin_rate_limit_interval */
	char *jwt_secret_file; /* [auth] jwt_secret_file */
	char *jwt_secret;      /* loaded contents */
	size_t jwt_secret_len;
	char *jwt_previous_secret_file; /* [auth] jwt_previous_secret_file */
	char *jwt_previous_secret;      /* loaded contents: verifies, never signs */
	size_t jwt_previous_secret_len;
	char *jwt_issuer;
	int64_t token_ttl_max_s; /* [auth] token_ttl_max: the longest a token of this host lives */
	/* [auth] jwt_public_key_*: another issuer's RS256/ES256 tokens */
	char *jwt_public_key_file;
	char *jwt_public_keys; /* the file's PEM text (evhostd parses it: host.c) */
	size_t jwt_public_keys_len;
	char *jwt_public_issuer, *jwt_public_audience, *jwt_public_roles;
	/* [auth] jwt_jwks_*: or those keys fetched from the provider's jwks_uri */
	char *jwks_url;                          /* as given, for the log; or NULL */
	char *jwks_host, *jwks_port, *jwks_target; /* its parts (target: path and query) */
	int jwks_tls;                            /* https:// */
	char *jwks_ca_file;                      /* the CAs trusted for the provider, or NULL */
	int jwks_refresh_ms;                     /* jwt_jwks_refresh, default 1 h */
	int64_t jwks_cache_max_age_s;            /* jwt_jwks_cache_max_age, default 7 days */
	char *admin_token_file;
	char *admin_token; /* its first line, read with the configuration; or NULL */
	int admin_https;       /* [admin] https: also over [http] tls_listen (default false) */
	int metrics_enabled;   /* [metrics] enabled, default true */
	int metrics_https;     /* [metrics] https: also over [http] tls_listen (default false) */
	char *source;          /* CloudEvents source prefix, default "evhost://<hostname>" */
	/* [tracing]: spans to an OTLP/HTTP collector; off without otlp_endpoint */
	char *trace_endpoint;   /* the full URL spans are posted to, or NULL */
	char *trace_host, *trace_port, *trace_path; /* its parts */
	int trace_tls;          /* https:// */
	char *trace_ca_file;    /* otlp_ca_file: the CAs trusted for the collector, or NULL */
	char *trace_client_cert; /* otlp_client_certificate: key and chain offered, or NULL */
	char *trace_headers_file;
	char *trace_headers;    /* otlp_headers_file's headers, "Name: value\r\n" each, or NULL */
	char *trace_service;    /* service_name: the resource's service.name */
	double trace_sample_ratio;
	int trace_queue_size, trace_batch_size, trace_interval_ms, trace_timeout_ms;
	int trace_retry_max_ms; /* retry_max_time: how long one batch is tried */
	plugin_settings *plugins;
	size_t nplugins;
	/* Files holding a secret that every local account may read: noted here,
	 * said by evhostd (host_say_public_secrets), not refused. */
	struct public_secret {
		char *where; /* "FILE:LINE" of the key */
		char *what;  /* "[SECTION] KEY" */
		char *path;
		unsigned mode;
	} *public_secrets;
	size_t npublic_secrets;
	/* Entries whose value was refused (a problem said at them when they were
	 * applied, the default left in their place), each with the index in the
	 * diag of its first problem (SIZE_MAX: not recorded, out of memory): for
	 * evhostctl, which must not go on with the default of a key it uses.
	 * Borrowed from the cfg. */
	struct refused_key {
		const cfg_entry *entry;
		size_t problem;
	} *refused;
	size_t nrefused;
} settings;

/* Validate host sections (unknown sections/keys, bad values) and fill `s`.
 * Paths are resolved against the main file's directory. Returns 0 when no
 * error was added to `d`, -1 when one was. `s` is filled (defaults where
 * values were bad) even then: always settings_free() it. -2: out of memory,
 * said in `d`; `s` is incomplete (strings may be NULL), fit only for
 * settings_free(). It borrows strings from `c`, so it must not outlive it. */
int settings_from_cfg(const cfg *c, settings *s, diag *d);
/* Zero and free the JWT secrets read from their files (jwt_secret,
 * jwt_previous_secret), the rest left: once the auth keyset holds copies. */
void settings_drop_secrets(settings *s);
void settings_free(settings *s);
/* Where [kafka] rdkafka.KEY is in s->rdkafka, or -1 when it is not set. */
ssize_t settings_rdkafka_index(const settings *s, const char *key);
/* Swap the noted public secrets of `a` and `b`: a reload keeps the next
 * configuration's list in the running settings (what the next reload
 * compares with) and leaves the old one to be freed with the rest. */
void settings_swap_public_secrets(settings *a, settings *b);
/* [tracing] otlp_headers_file's text ("Name: value" lines, blank lines and
 * '#' comments skipped) as HTTP header lines, each ending in CRLF; NULL with
 * the reason (naming the line) in why, errno ENOMEM when out of memory and
 * EINVAL otherwise. Exposed for the fuzzer. */
char *settings_otlp_headers(const char *text, char *why, size_t whylen);
#endif
