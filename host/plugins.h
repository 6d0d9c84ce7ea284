/* Plugin loading and lifecycle: dlopen, entry symbol, ABI checks, config
 * validation against the plugin's schema, init/fini, and the per-plugin
 * record every other module refers to (struct evh_plugin). */
#ifndef EVHOST_PLUGINS_H
#define EVHOST_PLUGINS_H
#include <pthread.h>
#include <stdio.h>
#include <evhost/evhost.h>
#include "config.h"
#include "diag.h"

struct host;
struct router;
struct store;
struct consumer;

typedef enum plugin_state {
	PLUGIN_LOADED = 0, /* dlopen + descriptor OK, init not run */
	PLUGIN_INITIALIZING,
	PLUGIN_RUNNING,
	PLUGIN_DRAINING, /* routes answer 503 */
	PLUGIN_STOPPED,
	PLUGIN_FAILED,
} plugin_state;

/* A subscription as the host keeps it (strings owned). */
typedef struct plugin_sub {
	char *topic;
	char *type; /* NULL = all */
	evh_event_handler handler;
	void *ud;
	int max_attempts, backoff_ms, backoff_max_ms; /* resolved (defaults applied) */
} plugin_sub;

struct evh_plugin {
	struct host *host;
	char *name;    /* instance name: NAME of [plugin.NAME] */
	char *section; /* "plugin.NAME" */
	char *path;
	char *group;
	int log_level; /* its own threshold, or -1 for the [log] level */
	void *dl;
	const evh_plugin_desc *desc;
	void *state; /* from init */
	int inited;  /* init succeeded: fini is owed */
	/* init has returned: the calls of init alone (routes, subscriptions,
	 * migrations) are refused from then on, though the status stays
	 * PLUGIN_INITIALIZING while the host starts its relay and consumer (a
	 * thread init began must not add a subscription the consumer reads). */
	atomic_int init_returned;
	pthread_t init_thread; /* the thread running init (plugin_start): only it
	                        * registers routes, subscriptions and migrations */
	_Atomic int in_fini; /* its fini runs: the relay has stopped for it (no publishing) */
	char *signature; /* the [plugin.NAME] section as applied, to detect changes on reload */
	_Atomic plugin_state status; /* written by the main thread, read by workers */
	int restarting; /* while DRAINING: a new instance follows (set before status) */
	int required;
	char last_error[512]; /* last ERROR logged (refusal reason) */
	/* config values: schema keys with defaults applied, then the section's */
	char **cfg_keys, **cfg_values;
	size_t ncfg;
	char *state_dir; /* <state_dir>/<name> */
	struct store *store;
	plugin_sub *subs;
	size_t nsubs;
	struct consumer *consumer;
	int pins; /* admin requests using it without the plugin list's lock (under that
	           * lock): a reload destroys it only once they are done (host_pin_plugin) */
	_Atomic int http_active;       /* its routes' requests being served ([http] max_plugin_requests) */
	_Atomic int64_t http_full_said; /* when the limit was last said at WARN (clock_mono_ms) */
	log_budget log_budget; /* its lines' share of the log ([log] plugin_rate_limit_*) */
	struct plugin_checking *checking; /* during its check (plugin_check): where to report */
	/* Calls through the API table in flight, and whether its fini has
	 * returned: a thread the plugin left running is refused from then on
	 * (api.c, api_plugin_gone: 2 when a call was in flight then), and how
	 * many were (api_late). Whether a call came from a thread of its own
	 * (api_own_threads: outside any callback of the host's), and when fini
	 * returned (api_gone_ms). */
	_Atomic int api_calls, api_gone, api_own_threads;
	_Atomic int64_t api_late;
	int64_t api_gone_ms;
	struct evh_plugin *buried_next; /* api_plugin_bury's list, once freed but kept */
	/* Set when the daemon's stop stops the relay and the producer, before
	 * fini (api_plugin_host_stopping): the publish limits, kept for the
	 * calls of the plugin's threads until fini joins them. */
	_Atomic int api_host_stopping, api_kafka_readers;
	/* Set when the daemon's stop, or a reload's drain of this instance,
	 * begins: with a stop asked during the start or a reload, what
	 * evh_stopping says (ABI 1.13; plugin_stopping). */
	_Atomic int winding_down;
	size_t api_max_event_bytes, api_max_message_bytes;
};

/* Whether `p` winds down: its drain or the stop began, or a stop was asked
 * (SIGTERM) during the start or a reload, which the stop follows. What
 * evh_stopping says, and what exempts a retry from being dead-lettered
 * (kafka.c): the two must agree, or a handler that cut its work short for
 * the stop had its event dead-lettered. */
int plugin_stopping(const evh_plugin *p);

/* Open a plugin file and check it: ELF/dlopen error, entry symbol, descriptor
 * struct size, ABI major/minor, name. On failure returns NULL and writes one
 * precise line to `err` (path, found, expected); *oom (unless NULL) says
 * whether memory ran out, which says nothing of the file. */
evh_plugin *plugin_open(struct host *h, const plugin_settings *ps, char *err, size_t errlen,
                        int *oom);
/* A new instance of `p`, not started: the same build (the library p holds,
 * even when a new build has replaced its file: call this before p is
 * destroyed), settings and configuration values. For a reload to start a
 * plugin again as it ran when its new configuration or build fails. NULL
 * with the reason in err. */
evh_plugin *plugin_reopen(const evh_plugin *p, char *err, size_t errlen);
/* Validate the plugin's [plugin.NAME] keys against its schema (into `d`) and
 * load its values: 0, -1 when refused, -2 out of memory. */
int plugin_configure(evh_plugin *p, const cfg *c, diag *d);
/* A [plugin.NAME] entry's value as p is given it: a relative value of a key
 * of type path, file or dir resolved against the directory of the file that
 * set it, any other value as written. Malloc'd; NULL: out of memory. */
char *plugin_entry_value(const evh_plugin *p, const cfg_entry *e);
/* The plugin's own check of its values (the descriptor's `check`, ABI 1.7),
 * after plugin_configure succeeded: each evh_config_error it makes goes to
 * `d` as "FILE:LINE: [plugin.NAME] KEY: message", at the line that set KEY
 * in `c` (the section's header for a default). 0 when it passes (or the
 * plugin has none), -1 when it failed (at least one line in `d`), -2 when
 * it returned EVH_ENOMEM (said in `d` too): not a verdict on the values. */
int plugin_check(evh_plugin *p, const cfg *c, const char *section_file, int section_line,
                 diag *d);
/* evh_config_error: during plugin_check, a line of its diagnostics (returns
 * 1); otherwise 0 and the caller logs it. */
int plugin_check_report(evh_plugin *p, const char *key, const char *msg);
/* Open its store, call init. On failure returns -1 with `err` set (quoting
 * the plugin's last error line). */
int plugin_start(evh_plugin *p, char *err, size_t errlen);
/* Call fini, close the store, dlclose, free. Neither fini nor dlclose for
 * a plugin whose file was written over in place while loaded (its code and
 * pointers are the file's now): it stays mapped, and the log says so. */
void plugin_destroy(evh_plugin *p);
/* For plugin_destroy (api.c), after fini returned: every later call with p
 * is refused (EVH_ESTATE, one warning naming it), and the calls in flight
 * are waited for, so that nothing is closed under them. */
void api_plugin_gone(evh_plugin *p);
/* Before its library is let go: did a call come after api_plugin_gone, or
 * was one in flight then (a thread the plugin left running, which may still
 * run the library's code: it must stay loaded)? For a plugin that called
 * the host from threads of its own, a call is waited for until
 * API_LATE_GRACE_MS after fini returned (said). */
#define API_LATE_GRACE_MS 200
int api_plugin_called_late(evh_plugin *p);
/* Instead of free(p) for a plugin that was initialized: p and p->name (the
 * rest is freed) stay, for a thread it left to be refused instead of
 * reading freed memory. */
void api_plugin_bury(evh_plugin *p);
/* For outbox_stop, before the daemon's stop frees the relay and the
 * producer and before fini: evh_publish from the plugin's threads goes on
 * into its outbox (sent at the next start) without reading the producer
 * again. api_plugin_host_stopping_wait then waits for the threads that
 * may be reading it (a few instructions: they take no lock). */
void api_plugin_host_stopping(evh_plugin *p);
void api_plugin_host_stopping_wait(evh_plugin *p);
/* Is a library loaded whose file was written over in place: its
 * destructors must not run (main leaves with _exit). */
int plugins_changed_loaded(void);
/* Do two plugin instances run the same build: the library loaded from the
 * same file? A reload restarts a plugin whose file was replaced. */
int plugin_same_build(const evh_plugin *a, const evh_plugin *b);
/* Does `p` declare the route `method` `pattern` (ABI 1.12, the descriptor's
 * routes, character for character)? 1 yes, 0 no, -1 when it declares none
 * (built before 1.12, or NULL): any route then. */
int plugin_declares(const evh_plugin *p, const char *method, const char *pattern);
/* Add the declared routes of h->plugins[i] to `declared`, a scratch router
 * that holds those of the plugins before it in the start's order (its
 * owners are the plugins). 0 when they fit (or it declares none); 1 when one
 * clashes, under the router's rule, with a route declared by a plugin
 * before it (two instances of one plugin, or two plugins): none of its
 * routes are added, *at is its section's settings (where to say it) and
 * `msg` names both sections, their files and the route; -2 out of memory
 * (said in msg). The start and a reload ask it before any init (host.c),
 * --check-config through plugins_check_instances. Plugins built before
 * ABI 1.12 declare nothing: their clashes fail their init. */
int plugins_route_clash(const struct host *h, struct router *declared, size_t i,
                        const plugin_settings **at, char *msg, size_t msglen);
/* --check-config: each clash of declared routes (plugins_route_clash) in
 * `d` at the line of its section; one with required = false (the start goes
 * on without it) on `out` instead. 0 when there is none in `d`, else -1. */
int plugins_check_instances(struct host *h, diag *d, FILE *out);
const char *plugin_state_name(plugin_state s);
#endif
