/* The daemon as a whole: settings, loaded plugins, and the running parts. */
#ifndef EVHOST_HOST_H
#define EVHOST_HOST_H
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include "config.h"
#include "plugins.h"

struct router;
struct kafka;
struct http_server;
struct outbox;
struct admin;

/* [host] stop_timeout when settings are not loaded. */
#define STOP_TIMEOUT_MS 10000

/* [auth]'s keys as HTTP threads and plugins use them. A reload swaps in a
 * new set whole; a reader takes the current set for one use
 * (host_auth_acquire) and lets go of it (host_auth_release). A replaced set
 * is freed, its secrets zeroed, when its last holder lets go. */
typedef struct auth_keyset {
	unsigned char *secret; /* signs and checks tokens; NULL: no jwt_secret_file */
	size_t len;
	unsigned char *previous; /* checks only: the key a rotation replaced; or NULL */
	size_t previous_len;
	char *issuer;
	int64_t ttl_max_s; /* [auth] token_ttl_max */
	/* Another issuer's tokens ([auth] jwt_public_key_*): its keys (OpenSSL's,
	 * tls_compat.h) or NULL, how many of each kind, and what its tokens must
	 * carry. pk_text: the key file's text, to tell a reload's change. */
	void *pubkeys;
	int nrsa, nec;
	char *pk_text, *pk_issuer, *pk_audience, *pk_roles;
	/* Or its keys fetched from [auth] jwt_jwks_url (jwksfetch.h; a reference
	 * of the set's own, let go when it is freed), or NULL. */
	struct jwks_fetcher *jwks;
	/* Under host.c's auth lock: readers holding it, and whether a reload
	 * replaced it (freed when both say no one can reach it). Tests that
	 * install a set of their own leave both 0: it is never freed. */
	int holders;
	int retired;
} auth_keyset;

typedef struct host {
	cfg cfg;
	settings set;
	evh_plugin **plugins;
	size_t nplugins;
	struct router *router;
	struct kafka *kafka;
	struct http_server *http;
	char http_bound[80]; /* [http] listen as bound (a port 0 given), once started */
	struct outbox *outbox;
	atomic_int stopping;          /* set by host_stop; read by HTTP workers (readyz, admin) */
	atomic_int start_stop;        /* a stop asked during host_start (its signal): no further
	                               * plugin is started */
	atomic_int reload_stop;       /* a stop asked during a reload (its signal): evh_stopping
	                               * says 1 from then on, as start_stop makes it */
	pthread_mutex_t plugins_lock; /* guards the plugins array against readers (readyz) */
	pthread_cond_t plugins_cv;    /* a plugin's pins went to 0 (host_unpin_plugin) */
	/* Required plugins a reload could not start (readyz), under plugins_lock
	 * too; room for capdown names, made before a reload stops anything, so
	 * that one left off is always said. */
	char (*down)[PLUGIN_NAME_MAX + 1];
	size_t ndown, capdown;
	/* Plugins a reload is restarting (readyz: "restarting"), under
	 * plugins_lock; room for capdown names too. */
	char (*restarting)[PLUGIN_NAME_MAX + 1];
	size_t nrestarting;
	/* Plugins a reload starts that did not run before it (enabled or
	 * added), while their start runs (readyz: "starting"); as restarting. */
	char (*starting)[PLUGIN_NAME_MAX + 1];
	size_t nstarting;
	/* Plugins a reload is stopping for good (disabled or removed), until
	 * their drain and fini are done: "stopping" on /readyz and
	 * /admin/plugins. Under plugins_lock; room for capdown names too. */
	char (*retiring)[PLUGIN_NAME_MAX + 1];
	size_t nretiring;
	char *conf_file;              /* what host_configure read, for reloads */
	struct admin *admin;          /* admin API state (admin.c) */
	int lock_fd1;                 /* state_dir lock file descriptor + 1; 0 = none */
	_Atomic(auth_keyset *) auth;  /* [auth]'s keys (host_auth_acquire): replaced
	                               * under host.c's auth lock */
	struct revocations *revoked;  /* signed-out subjects (revoke.h), from host_start on */
	int tracing;                  /* host_start started the span exporter */
	struct evhost_tls_cert *tls;  /* [http] tls_certificate read by host_configure, until
	                               * http_start (or a reload) serves it */
	void *jwt_pubkeys;            /* [auth] jwt_public_key_file read by host_configure,
	                               * until an auth_keyset takes it */
	void *trace_tls;              /* [tracing]'s TLS client set up by host_configure,
	                               * until trace_start takes it */
	struct jwks_fetcher *jwks;    /* [auth] jwt_jwks_url's fetcher: made by host_configure,
	                               * started by host_start (or a reload), freed at stop */
	int jwt_nrsa, jwt_nec;
	int jwt_left_out;             /* keys of a JWKS jwt_public_key_file left out */
	char **unchecked;             /* plugins with required = false that host_configure left */
	size_t nunchecked;            /* out: their check refused their values */
	int reloading;                /* a reload's next configuration: its [log] is applied
	                               * only once it is taken (host_reload_log) */
	diag refused;                 /* why the last reload was refused (host_reload): the
	                               * admin API's answer says it (admin_reload_end) */
	const char *pinned_confdir;   /* a reload's next configuration: the running */
	const char *pinned_plugin_dir; /* daemon's (cfg_load_pinned) */
} host;

/* The API table handed to every plugin (api.c). */
const evh_api *host_api(void);
/* Text of an evh_status (the SDK's evh_strerror). */
const char *host_strerror(int status);
/* Read the configuration and open every enabled plugin (dlopen, ABI and
 * schema checks, no init). Problems go to `d` as file:line lines; returns 0
 * when there is no error. This is all `--check-config` does. Unless
 * h->reloading, [log] level and format apply from when they are read, so
 * the plugins' checks log as configured. */
int host_configure(host *h, const char *conf_file, diag *d);
/* For --check-config: what would refuse each disabled plugin if it were
 * enabled (it cannot be loaded, an unknown key, its own check), one line
 * each to `out`, as warnings. Returns how many. */
size_t host_check_disabled(host *h, FILE *out);
/* Start Kafka, the outbox relay, each plugin (store + init + consumer), then
 * HTTP. Returns 0, -1 after logging why (a required plugin failed), or 1
 * when a stop was asked meanwhile (h->start_stop): the plugins after the
 * one starting then are not started, nor HTTP; host_stop stops the rest. */
int host_start(host *h);
/* Orderly stop: HTTP drains, consumers commit and leave, the relay flushes
 * the outboxes, plugins' fini runs. Frees everything. */
void host_stop(host *h);
/* Live reload (SIGHUP): re-read the configuration, refuse it whole if it has
 * errors (logged as file:line, the running set stays), else stop plugins
 * that were disabled or removed (drain: 503, consumer commits and leaves,
 * outbox flushed, then 404), start newly enabled ones, and restart only
 * those whose section changed. Returns 0 when the new configuration was
 * applied, -1 when it was refused. */
int host_reload(host *h);
/* The current [auth] keys (never NULL once host_start began), held until
 * host_auth_release: a reload that replaces them meanwhile frees them only
 * then. For one use (a request's check, a token's signing): a holder keeps
 * a replaced set's secrets in memory. Any thread; a short lock each. */
const auth_keyset *host_auth_acquire(host *h);
/* Lets go of a set host_auth_acquire gave (NULL: nothing); frees it, its
 * secrets zeroed, when a reload replaced it and this was its last holder. */
void host_auth_release(const auth_keyset *k);
/* Sets made and not yet freed, in the process: for tests (a reload frees
 * the set it replaces once no request holds it). */
int host_auth_keysets_live(void);
/* Sign `subject` out (revoke.h): its tokens signed until now are refused
 * from now on. `by` (a plugin's name, or "admin") is logged with it.
 * EVH_OK; EVH_EINVAL for an empty subject or one a token cannot carry;
 * EVH_ESTATE when no [auth] jwt_secret_file is set or the host is not
 * started; EVH_ESTORE when it could not be saved (it holds until the
 * daemon stops). `err` says why on failure. */
int host_sign_out(host *h, const char *subject, const char *by, char *err, size_t errlen);
/* Readiness: fills `json` (malloc'd) with {"ready":bool,"plugins":{...},"kafka":..,"storage":..}. */
int host_ready(host *h, char **json);
/* The running plugin `name`, kept from being destroyed (a reload may take it
 * out of the list meanwhile) until host_unpin_plugin, without holding
 * plugins_lock: for slow work on its store that must not hold up the list's
 * readers (readiness, metrics). NULL when there is none. */
evh_plugin *host_pin_plugin(host *h, const char *name);
void host_unpin_plugin(host *h, evh_plugin *p);
/* Says what each plugin's log budget dropped in an interval that has ended
 * with no line of it since (log_budget_sweep). The main thread, every few
 * seconds. */
void host_log_sweep(host *h);
#endif
