/* The daemon's lifecycle: configure (read config, open plugins), start the
 * parts in dependency order, report readiness, and stop them in reverse so
 * nothing acknowledged is lost: HTTP first (no new writes), then consumers
 * (no new handler writes), then the outbox relay flushes, then Kafka. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "admin.h"

#include "clock.h"
#include "crash.h"
#include "host.h"
#include "http.h"
#include "httpc.h"
#include "loopback.h"
#include "jsonb.h"
#include "jwks.h"
#include "jwksfetch.h"
#include "kafka.h"
#include "log.h"
#include "metrics.h"
#include "outbox.h"
#include "revoke.h"
#include "router.h"
#include "stopguard.h"
#include "store.h"
#include "tls_compat.h"
#include "trace.h"

/* How long the start waits for a broker's answer before it says none came. */
#define START_PROBE_MS 1000

/* A plugin's section in a canonical form: sorted "key=value" lines, each
 * value as the plugin is given it. Two configurations that differ only in
 * file layout or key order compare equal, so moving a key between drop-ins
 * does not restart a plugin; a relative path moved between evhost.conf and
 * conf.d names another file, and does. */
static int entry_cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static char *section_signature(const cfg *c, const evh_plugin *p)
{
	char **lines = NULL, *out = NULL;
	size_t n = 0, total = 1;

	for (size_t i = 0; i < c->n; i++) {
		const cfg_entry *e = &c->v[i];
		char **grown, *value;
		size_t len;

		if (strcmp(e->section, p->section) != 0)
			continue;
		if (!(grown = realloc(lines, (n + 1) * sizeof *lines)))
			goto out;
		lines = grown;
		if (!(value = plugin_entry_value(p, e)))
			goto out;
		len = strlen(e->key) + strlen(value) + 3;
		lines[n] = malloc(len);
		if (lines[n])
			snprintf(lines[n], len, "%s=%s\n", e->key, value);
		free(value);
		if (!lines[n])
			goto out;
		total += len;
		n++;
	}
	if (n)
		qsort(lines, n, sizeof *lines, entry_cmp);
	if (!(out = malloc(total)))
		goto out;
	out[0] = '\0';
	for (size_t i = 0, at = 0; i < n; i++)
		at += (size_t)sprintf(out + at, "%s", lines[i]);
out:
	for (size_t i = 0; i < n; i++)
		free(lines[i]);
	free(lines);
	return out;
}

/* What a reload applies: plugins one by one, [log], [auth], [admin], and
 * [http] tls_certificate (host_reload_tls). */
static int applies_on_reload(const cfg_entry *e)
{
	const char *section = e->section;
	return strncmp(section, "plugin.", 7) == 0 || strcmp(section, "log") == 0 ||
	       strcmp(section, "auth") == 0 || strcmp(section, "admin") == 0 ||
	       (strcmp(section, "http") == 0 && strcmp(e->key, "tls_certificate") == 0);
}

/* Log each key of the other sections that the reload would change (set,
 * changed or removed), with where it is now set, and say it is not applied.
 * Values are not logged: [kafka] may hold credentials. Returns how many. */
static size_t log_restart_only_changes(const cfg *old, const cfg *next)
{
	size_t changed = 0;
	for (size_t i = 0; i < next->n; i++) {
		const cfg_entry *e = &next->v[i], *was;
		if (applies_on_reload(e))
			continue;
		was = cfg_find(old, e->section, e->key);
		if (was && strcmp(was->value, e->value) == 0)
			continue;
		log_warn("host", "reload: [%s] %s %s (%s:%d): needs a restart, not applied",
		         e->section, e->key, was ? "changed" : "set", e->file, e->line);
		changed++;
	}
	for (size_t i = 0; i < old->n; i++) {
		const cfg_entry *e = &old->v[i];
		if (applies_on_reload(e) || cfg_find(next, e->section, e->key))
			continue;
		log_warn("host", "reload: [%s] %s removed (was set at %s:%d): needs a restart, "
		         "not applied", e->section, e->key, e->file, e->line);
		changed++;
	}
	return changed;
}

/* Room for one more plugin in h->plugins. A reload makes it before it
 * starts the plugin: one running but not listed could never be stopped.
 * Out of memory, the log names the plugin (`name`; NULL: the caller says). */
static int host_reserve_plugin(host *h, const char *name)
{
	evh_plugin **v;

	pthread_mutex_lock(&h->plugins_lock);
	v = realloc(h->plugins, (h->nplugins + 1) * sizeof *v);
	if (v)
		h->plugins = v;
	pthread_mutex_unlock(&h->plugins_lock);
	if (!v && name)
		log_error("host", "plugin '%s': out of memory for its place in the plugin list", name);
	return v ? 0 : -1;
}

/* List `p` in the room host_reserve_plugin made. */
static void host_list_plugin(host *h, evh_plugin *p)
{
	pthread_mutex_lock(&h->plugins_lock);
	h->plugins[h->nplugins++] = p;
	pthread_mutex_unlock(&h->plugins_lock);
}

/* Room for `n` (>= h->ndown) names of plugins left off (host_mark_down);
 * -1 out of memory. Made at every reload, the same size too: cheap, and
 * the reload sweep (test_services_oom) fails it like any allocation. */
static int host_reserve_down(host *h, size_t n)
{
	char(*v)[PLUGIN_NAME_MAX + 1], (*r)[PLUGIN_NAME_MAX + 1], (*rt)[PLUGIN_NAME_MAX + 1] = NULL,
	    (*st)[PLUGIN_NAME_MAX + 1] = NULL;
	int rc = 0;
	pthread_mutex_lock(&h->plugins_lock);
	/* The arrays hold capdown names at least, whichever realloc fails. */
	r = realloc(h->restarting, (n ? n : 1) * sizeof *r);
	if (r) {
		h->restarting = r;
		rt = realloc(h->retiring, (n ? n : 1) * sizeof *rt);
	}
	if (rt) {
		h->retiring = rt;
		st = realloc(h->starting, (n ? n : 1) * sizeof *st);
	}
	if (st)
		h->starting = st;
	v = st ? realloc(h->down, (n ? n : 1) * sizeof *v) : NULL;
	if (v) {
		h->down = v;
		h->capdown = n;
	} else {
		if (r && n < h->capdown)
			h->capdown = n;
		rc = -1;
	}
	pthread_mutex_unlock(&h->plugins_lock);
	return rc;
}

/* `name` in (`in`) or out of the set v[0..*n), which has room for `cap`;
 * under plugins_lock. It allocates nothing. */
static void name_set(char (*v)[PLUGIN_NAME_MAX + 1], size_t *n, size_t cap, const char *name,
                     int in)
{
	size_t i;
	for (i = 0; i < *n && strcmp(v[i], name) != 0; i++)
		;
	if (!in && i < *n) {
		if (i != --*n)
			memcpy(v[i], v[*n], sizeof v[i]);
	} else if (in && i == *n && i < cap) {
		snprintf(v[(*n)++], sizeof v[0], "%s", name);
	}
}

/* A required plugin a reload left off (`off`) or started again: /readyz
 * says it is down until a reload starts it or removes its section. In the
 * room host_reserve_down made. */
static void host_mark_down(host *h, const char *name, int off)
{
	pthread_mutex_lock(&h->plugins_lock);
	name_set(h->down, &h->ndown, h->capdown, name, off);
	pthread_mutex_unlock(&h->plugins_lock);
}

/* A plugin a reload is about to start: "starting" until it runs (or is
 * left off), unless it runs again after a restart ("restarting" already).
 * In the room host_reserve_down made. */
static void host_mark_starting(host *h, const char *name)
{
	size_t i;
	pthread_mutex_lock(&h->plugins_lock);
	for (i = 0; i < h->nrestarting && strcmp(h->restarting[i], name); i++)
		;
	if (i == h->nrestarting)
		name_set(h->starting, &h->nstarting, h->capdown, name, 1);
	pthread_mutex_unlock(&h->plugins_lock);
}

/* A plugin a reload started: `listed` (in the room host_reserve_plugin
 * made), or NULL when it stays off (`down`: /readyz says "failed", a
 * required one). Out of "starting" and "restarting" in the same hold of the
 * lock: /readyz and /admin/plugins never list it twice, nor not at all. */
static void host_settle_start(host *h, const char *name, evh_plugin *listed, int down)
{
	pthread_mutex_lock(&h->plugins_lock);
	if (listed)
		h->plugins[h->nplugins++] = listed;
	name_set(h->down, &h->ndown, h->capdown, name, down);
	name_set(h->restarting, &h->nrestarting, h->capdown, name, 0);
	name_set(h->starting, &h->nstarting, h->capdown, name, 0);
	pthread_mutex_unlock(&h->plugins_lock);
}

/* A plugin a reload stopped for good, its drain and fini done: no longer
 * "stopping" (evhostctl disable waits for that). */
static void host_unmark_stopping(host *h, const char *name)
{
	pthread_mutex_lock(&h->plugins_lock);
	name_set(h->retiring, &h->nretiring, h->capdown, name, 0);
	pthread_mutex_unlock(&h->plugins_lock);
}

static void host_drop_plugin_locked(host *h, size_t i)
{
	memmove(&h->plugins[i], &h->plugins[i + 1], (h->nplugins - i - 1) * sizeof *h->plugins);
	h->nplugins--;
}

static void host_drop_plugin(host *h, size_t i)
{
	pthread_mutex_lock(&h->plugins_lock);
	host_drop_plugin_locked(h, i);
	pthread_mutex_unlock(&h->plugins_lock);
}

/* A reload takes plugin i out of the list to restart it (`restart`) or
 * stop it for good, naming it "restarting" or "stopping" in the same hold
 * of the lock: /readyz and /admin/plugins never list it twice. */
static void host_drop_plugin_to_retire(host *h, size_t i, int restart)
{
	pthread_mutex_lock(&h->plugins_lock);
	if (restart)
		name_set(h->restarting, &h->nrestarting, h->capdown, h->plugins[i]->name, 1);
	else
		name_set(h->retiring, &h->nretiring, h->capdown, h->plugins[i]->name, 1);
	host_drop_plugin_locked(h, i);
	pthread_mutex_unlock(&h->plugins_lock);
}

/* An IPv6 listen address that this civetweb cannot bind: said at its line,
 * not by a start that fails after the plugins started. */
static void host_check_listen(host *h, diag *d)
{
	static const char *const keys[] = {"listen", "tls_listen"};
	for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
		const cfg_entry *e = cfg_find(&h->cfg, "http", keys[i]);
		if (e && e->value[0] == '[' && !http_has_ipv6())
			diag_add(d, e->file, e->line,
			         "[http] %s = %s: this civetweb build has no IPv6 support; use an "
			         "IPv4 address",
			         keys[i], e->value);
	}
}

/* [http] tls_certificate, tls_client_ca and the cipher lists, read by
 * OpenSSL: what is wrong with them is said at their line, by --check-config
 * and by a reload too.
 * The certificate is kept in h->tls to serve. */
static void host_check_tls(host *h, diag *d)
{
	const cfg_entry *listen = cfg_find(&h->cfg, "http", "tls_listen");
	const cfg_entry *cert = cfg_find(&h->cfg, "http", "tls_certificate"), *e;
	char err[1024];
	if (!h->set.http_tls_listen || !listen || !cert || !*cert->value)
		return;
	if (tls_compat_load(err, sizeof err) != 0) {
		diag_add(d, listen->file, listen->line, "[http] tls_listen: %s", err);
		return;
	}
	if (!(h->tls = tls_cert_load(h->set.http_tls_certificate, err, sizeof err)))
		diag_add(d, cert->file, cert->line, "[http] tls_certificate '%s': %s",
		         h->set.http_tls_certificate, err);
	cert = cfg_find(&h->cfg, "http", "tls_client_ca");
	if (cert && *cert->value && h->set.http_tls_client_ca &&
	    tls_ca_check(h->set.http_tls_client_ca, err, sizeof err) < 0)
		diag_add(d, cert->file, cert->line, "[http] tls_client_ca '%s': %s",
		         h->set.http_tls_client_ca, err);
	/* One list at a time, so that each is said at its own key's line. */
	e = cfg_find(&h->cfg, "http", "tls_ciphers");
	if (e && tls_ciphers_set(NULL, h->set.http_tls_ciphers, NULL, err, sizeof err) < 0)
		diag_add(d, e->file, e->line, "[http] %s", err);
	e = cfg_find(&h->cfg, "http", "tls_ciphersuites");
	if (e && tls_ciphers_set(NULL, NULL, h->set.http_tls_ciphersuites, err, sizeof err) < 0)
		diag_add(d, e->file, e->line, "[http] %s", err);
}

/* [tracing] otlp_endpoint = https://...: OpenSSL loads, and otlp_ca_file's
 * CA certificates and otlp_client_certificate's key and chain are read now,
 * so that --check-config says what is wrong at the key's line rather than
 * the exporter dropping every span. The client is kept in h for
 * trace_start. */
static void host_check_trace_tls(host *h, diag *d)
{
	const cfg_entry *ca = cfg_find(&h->cfg, "tracing", "otlp_ca_file"),
	                *cert = cfg_find(&h->cfg, "tracing", "otlp_client_certificate");
	const char *client_cert = cert ? h->set.trace_client_cert : NULL;
	char err[1024], ca_err[1024];
	tls_client *cas_alone;
	if (!h->set.trace_endpoint || !h->set.trace_tls)
		return;
	if (!ca || !*ca->value)
		ca = cfg_find(&h->cfg, "tracing", "otlp_endpoint");
	if ((h->trace_tls = tls_client_new(h->set.trace_ca_file, client_cert, err, sizeof err)))
		return;
	/* Which key is at fault: a client of the CAs alone tells (only when
	 * something is wrong, so a good configuration builds one client). */
	if (!client_cert) {
		diag_add(d, ca->file, ca->line, "[tracing] %s: %s", ca->key, err);
	} else if (!(cas_alone = tls_client_new(h->set.trace_ca_file, NULL, ca_err,
	                                        sizeof ca_err))) {
		diag_add(d, ca->file, ca->line, "[tracing] %s: %s", ca->key, ca_err);
	} else {
		tls_client_free(cas_alone);
		diag_add(d, cert->file, cert->line, "[tracing] %s: %s", cert->key, err);
	}
}

/* The environment's proxies (httpc.h) for what goes out: over HTTPS
 * ([tracing] to an https:// collector, [auth] jwt_jwks_url) and over plain
 * HTTP ([tracing] to an http:// collector not on this host; a plain
 * jwt_jwks_url is loopback only). A malformed variable is said by the
 * check; at start, where they go. */
static int outgoing(const host *h, int tls, char *what, size_t n)
{
	if (!tls) {
		int plain = h->set.trace_endpoint && !h->set.trace_tls &&
		            !loopback_host(h->set.trace_host);
		snprintf(what, n, "%s", plain ? "spans" : "");
		return plain;
	}
	snprintf(what, n, "%s%s%s", h->set.trace_tls ? "spans" : "",
	         h->set.trace_tls && h->set.jwks_tls ? ", " : "",
	         h->set.jwks_tls ? "the identity provider's keys" : "");
	return h->set.trace_tls || h->set.jwks_tls;
}

static void host_check_proxy(host *h, diag *d)
{
	httpc_proxy p;
	char err[512], what[64];
	for (int tls = 0; tls < 2; tls++)
		if (outgoing(h, tls, what, sizeof what) && httpc_proxy_get(&p, tls, err, sizeof err) < 0)
			diag_add(d, h->cfg.main_file, 0, "environment: %s", err);
}

static void log_proxy(const host *h)
{
	httpc_proxy p;
	char err[512], what[64];
	for (int tls = 0; tls < 2; tls++) {
		if (!outgoing(h, tls, what, sizeof what) || httpc_proxy_get(&p, tls, err, sizeof err))
			continue;
		int v6 = strchr(p.host, ':') != NULL; /* its port told from it */
		log_info("host", "outgoing %s (%s) goes through the proxy %s%s%s:%s (%s%s)%s%s%s",
		         tls ? "HTTPS" : "HTTP", what, v6 ? "[" : "", p.host, v6 ? "]" : "", p.port,
		         p.var,
		         *p.auth ? ", with its credentials" : "",
		         p.no_proxy ? "; direct to no_proxy's '" : "", p.no_proxy ? p.no_proxy : "",
		         p.no_proxy ? "'" : "");
	}
}

/* [auth] jwt_jwks_url's fetcher, made (its CAs read) but not started: a bad
 * jwt_jwks_ca_file is said at its line. Nothing is fetched here
 * (--check-config does not depend on the provider being up). */
static void host_check_jwks(host *h, diag *d)
{
	const cfg_entry *e = cfg_find(&h->cfg, "auth", "jwt_jwks_ca_file");
	char err[512];
	if (!h->set.jwks_url || !h->set.jwt_public_issuer || h->set.jwt_public_key_file)
		return;
	if (!e)
		e = cfg_find(&h->cfg, "auth", "jwt_jwks_url");
	if (!(h->jwks = jwks_fetcher_new(&h->set, err, sizeof err)))
		diag_add(d, e->file, e->line, "[auth] %s: %s", e->key, err);
}

/* [auth] jwt_public_key_file's keys (PEM, or a JWKS turned into PEM), read
 * by OpenSSL: what is wrong with them is said at the key's line
 * (--check-config, the start, a reload). Kept in h until an auth_keyset
 * takes them. */
static void host_check_jwt_keys(host *h, diag *d)
{
	const cfg_entry *e = cfg_find(&h->cfg, "auth", "jwt_public_key_file");
	char err[512];
	jwks_pem jwks = {0};
	const char *pem = h->set.jwt_public_keys;
	size_t len = h->set.jwt_public_keys_len;
	if (!e || !pem)
		return;
	if (jwks_is_jwks(pem, len)) {
		if (jwks_to_pem(pem, len, &jwks, err, sizeof err) != 0) {
			diag_add(d, e->file, e->line, "[auth] jwt_public_key_file '%s': %s",
			         h->set.jwt_public_key_file, err);
			return;
		}
		pem = jwks.pem;
		len = jwks.len;
		h->jwt_left_out = jwks.skipped;
	}
	h->jwt_pubkeys = tls_pubkeys_load(pem, len, jwks.pem ? jwks.labels : NULL,
	                                  jwks.pem ? jwks.kids : NULL, &h->jwt_nrsa, &h->jwt_nec,
	                                  err, sizeof err);
	if (!h->jwt_pubkeys)
		diag_add(d, e->file, e->line, "[auth] jwt_public_key_file '%s': %s",
		         h->set.jwt_public_key_file, err);
	jwks_pem_free(&jwks);
}

static int name_in(char *const *v, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(v[i], name))
			return 1;
	return 0;
}

/* A plugin with required = false left out (its file cannot be loaded, or
 * its values were refused), named in h->unchecked: a reload keeps its
 * running instance. Not recorded, a reload would take it for removed and
 * stop it: out of memory is an error instead, which refuses the reload and
 * keeps it running. */
static void host_note_left_out(host *h, const plugin_settings *ps, diag *d)
{
	char **v = realloc(h->unchecked, (h->nunchecked + 1) * sizeof *v);
	if (v) {
		h->unchecked = v;
		if ((v[h->nunchecked] = strdup(ps->name))) {
			h->nunchecked++;
			return;
		}
	}
	diag_add(d, ps->file, ps->line, "[%s] out of memory", ps->section);
}

/* The plugin's check of its own values (ABI 1.7), into `d` for a required
 * plugin. One with required = false that fails it is left out with a
 * warning, like one that cannot be loaded (host_note_left_out). 0 when the
 * plugin stays. */
static int host_check_plugin(host *h, evh_plugin *p, const plugin_settings *ps, diag *d)
{
	diag own = {0};
	int rc;

	if (ps->required)
		return plugin_configure(p, &h->cfg, d) || plugin_check(p, &h->cfg, ps->file, ps->line, d);
	/* Its values refused by the schema (an unknown key, a bad type, a file
	 * that is not there) or by its own check: left out alike. Out of memory
	 * (the host's, or the plugin's check returning EVH_ENOMEM) is an error
	 * (a reload would take the plugin for removed). */
	rc = plugin_configure(p, &h->cfg, &own);
	if (rc == 0)
		rc = plugin_check(p, &h->cfg, ps->file, ps->line, &own);
	if (rc == -2 || own.lost) {
		diag_add(d, ps->file, ps->line, "[%s] out of memory", ps->section);
		diag_free(&own);
		return -1;
	}
	if (rc == 0)
		return 0;
	for (size_t i = 0; i < own.n; i++)
		log_warn("host", "%s", own.msgs[i]);
	if (own.lost)
		log_warn("host", "[%s] %zu more problem%s not recorded: out of memory", ps->section,
		         own.lost, own.lost == 1 ? "" : "s");
	log_warn("host", "%s:%d: [%s] skipped (required = false): its values were refused", ps->file,
	         ps->line, ps->section);
	diag_free(&own);
	host_note_left_out(h, ps, d);
	return -1;
}

/* Secret files every local account may read (config.c notes them): each
 * said at start and by --check-config; at a reload, those the running
 * configuration did not have as they are now (not again at every reload). */
static void host_say_public_secrets(const settings *s, const settings *running)
{
	for (size_t i = 0; i < s->npublic_secrets; i++) {
		const struct public_secret *p = &s->public_secrets[i];
		int known = 0;
		for (size_t j = 0; running && j < running->npublic_secrets && !known; j++) {
			const struct public_secret *q = &running->public_secrets[j];
			known = !strcmp(p->what, q->what) && !strcmp(p->path, q->path) && p->mode == q->mode;
		}
		if (!known)
			log_warn("host", "%s: %s: '%s' is readable by every local account (mode %04o): "
			                 "chmod o-r it",
			         p->where, p->what, p->path, p->mode);
	}
}

int host_configure(host *h, const char *conf_file, diag *d)
{
	char err[1024];
	size_t before = diag_count(d);
	int oom;

	pthread_mutex_init(&h->plugins_lock, NULL);
	pthread_cond_init(&h->plugins_cv, NULL);
	if (!h->conf_file && !(h->conf_file = strdup(conf_file))) {
		diag_add(d, conf_file, 0, "out of memory");
		return -1;
	}
	if (cfg_load_pinned(&h->cfg, conf_file, h->pinned_confdir, h->pinned_plugin_dir, d) != 0)
		return -1;
	/* Keep going after host-section errors: the admin wants every problem
	 * of the configuration in one run, plugin sections included. Not after
	 * running out of memory: the settings are incomplete. */
	if (settings_from_cfg(&h->cfg, &h->set, d) == -2)
		return -1;
	/* The plugins' checks below log (through evh_log) as configured, also
	 * for --check-config; a reload's next host waits until it is taken. */
	if (!h->reloading) {
		log_setup(h->set.log_level, h->set.log_fmt);
		log_set_rate_limit(h->set.log_rate_burst, h->set.log_rate_interval_ms);
		host_say_public_secrets(&h->set, NULL);
	}
	kafka_check_settings(&h->set, d);
	host_check_listen(h, d);
	host_check_tls(h, d);
	host_check_trace_tls(h, d);
	host_check_jwt_keys(h, d);
	host_check_jwks(h, d);
	host_check_proxy(h, d);
	for (size_t i = 0; i < h->set.nplugins; i++) {
		const plugin_settings *ps = &h->set.plugins[i];
		evh_plugin *p;

		if (!ps->enabled)
			continue;
		p = plugin_open(h, ps, err, sizeof err, &oom);
		if (!p) {
			/* Out of memory, one with required = false is not left out
			 * either: a reload would stop it. */
			if (ps->required || oom) {
				diag_add(d, ps->file, ps->line, "[%s] %s", ps->section, err);
			} else {
				log_warn("host", "%s:%d: [%s] skipped (required = false): %s", ps->file,
				         ps->line, ps->section, err);
				host_note_left_out(h, ps, d);
			}
			continue;
		}
		if (host_check_plugin(h, p, ps, d) != 0) {
			plugin_destroy(p);
			continue;
		}
		/* An error, not a plugin left out: a reload would take it for
		 * removed and stop it. */
		if (!(p->signature = section_signature(&h->cfg, p)) ||
		    host_reserve_plugin(h, NULL) != 0) {
			diag_add(d, ps->file, ps->line, "[%s] out of memory", ps->section);
			plugin_destroy(p);
			continue;
		}
		host_list_plugin(h, p);
	}
	return diag_count(d) == before ? 0 : -1;
}

size_t host_check_disabled(host *h, FILE *out)
{
	size_t n = 0;

	for (size_t i = 0; i < h->set.nplugins; i++) {
		const plugin_settings *ps = &h->set.plugins[i];
		diag d = {0};
		char err[1024];
		evh_plugin *p;

		if (ps->enabled)
			continue;
		if (!(p = plugin_open(h, ps, err, sizeof err, NULL))) {
			diag_add(&d, ps->file, ps->line, "[%s] %s", ps->section, err);
		} else {
			if (plugin_configure(p, &h->cfg, &d) == 0)
				plugin_check(p, &h->cfg, ps->file, ps->line, &d);
			plugin_destroy(p);
		}
		for (size_t j = 0; j < d.n; j++)
			fprintf(out, "%s (the plugin is disabled: enabling it would be refused)\n",
			        d.msgs[j]);
		if (d.lost)
			fprintf(out, "[%s] %zu more problem%s not recorded: out of memory\n", ps->section,
			        d.lost, d.lost == 1 ? "" : "s");
		n += diag_count(&d);
		diag_free(&d);
	}
	return n;
}

/* Start one plugin: store, init, relay, consumer. A failure of a plugin with
 * required = false is a warning and the daemon runs without it. */
static int host_start_plugin(host *h, evh_plugin *p)
{
	char err[1024];

	/* Said should a stop asked during a reload be held here. */
	stopguard_at("plugin '%s': its start (init, migrations)", p->name);
	if (plugin_start(p, err, sizeof err) != 0)
		goto failed;
	if (outbox_add_plugin(h->outbox, p) != 0) {
		snprintf(err, sizeof err, "plugin '%s': out of memory for its outbox's relay", p->name);
		p->status = PLUGIN_FAILED;
		goto failed;
	}
	if (p->nsubs && consumer_start(h->kafka, p, &h->set, err, sizeof err) != 0) {
		outbox_remove_plugin(h->outbox, p);
		p->status = PLUGIN_FAILED;
		goto failed;
	}
	p->status = PLUGIN_RUNNING;
	log_info("host", "plugin '%s' %s running (%s, %zu subscription%s)", p->name,
	         p->desc->version ? p->desc->version : "", p->path, p->nsubs,
	         p->nsubs == 1 ? "" : "s");
	return 0;
failed:
	/* A reload may start another instance in its place (the plugin as it
	 * ran before): until then, or the reload's end, its paths say 503. */
	http_hold_plugin_routes(h, p);
	metrics_plugin_failed(p->name);
	if (p->required) {
		log_error("host", "%s", err);
		return -1;
	}
	log_warn("host", "%s (required = false: continuing without it)", err);
	return 1;
}

/* Two plugins whose declared routes clash (plugins.h: two instances of
 * one, or two plugins), before any plugin's init: the init of the one
 * started second would fail on a route the first holds, after the first
 * one's init and migrations ran. One that is required is said in `d`, as
 * --check-config says it; one with required = false is left out of
 * h->plugins with a warning (`at`: "" at start, "reload: " at a reload;
 * `then`: what comes of it). 0 when none is in `d`, else -1. */
static int host_check_instances(host *h, diag *d, const char *at, const char *then)
{
	size_t before = diag_count(d);
	router *declared = router_new();

	if (!declared) {
		diag_add(d, NULL, 0, "out of memory checking the plugins' declared routes");
		return -1;
	}
	for (size_t i = 0; i < h->nplugins;) {
		evh_plugin *p = h->plugins[i];
		const plugin_settings *ps;
		char msg[1024];
		int rc = plugins_route_clash(h, declared, i, &ps, msg, sizeof msg);

		if (!rc) {
			i++;
		} else if (p->required || rc == -2) {
			diag_add(d, ps->file, ps->line, "%s", msg);
			i++;
		} else {
			log_warn("host", "%s%s:%d: %s (required = false: %s)", at, ps->file, ps->line,
			         msg, then);
			host_drop_plugin(h, i);
			plugin_destroy(p);
		}
	}
	router_free(declared);
	return diag_count(d) == before ? 0 : -1;
}

/* One daemon per state_dir: two would share the plugins' databases and
 * outboxes and send every event twice. The lock (flock, released by the
 * kernel when the process dies) is taken before anything is opened. */
static int lock_state_dir(host *h)
{
	char path[4096], pid[32] = "";
	ssize_t n;
	int fd;

	if (mkdir(h->set.state_dir, 0750) != 0 && errno != EEXIST) {
		log_error("host", "[host] state_dir: cannot create %s: %s", h->set.state_dir,
		          strerror(errno));
		return -1;
	}
	snprintf(path, sizeof path, "%s/evhostd.lock", h->set.state_dir);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0) {
		log_error("host", "cannot open %s: %s", path, strerror(errno));
		return -1;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		n = pread(fd, pid, sizeof pid - 1, 0);
		pid[n > 0 ? strcspn(pid, "\n") : 0] = '\0';
		log_error("host", "another evhostd%s%s is running with state_dir %s (lock %s held); "
		                  "two daemons must not share plugin databases",
		          *pid ? " pid " : "", pid, h->set.state_dir, path);
		close(fd);
		return -1;
	}
	snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, strlen(pid), 0) < 0)
		log_warn("host", "cannot write the pid into %s: %s", path, strerror(errno));
	h->lock_fd1 = fd + 1;
	return 0;
}

/* The lock file's second line: the plain listener's address as bound (the
 * "ready" line's). A reload does not apply a changed [http] listen, so
 * evhostctl, which reads it from the files, can be told where this daemon
 * still listens when the files' address does not answer. */
static void record_listen(host *h)
{
	char text[128];
	int n = snprintf(text, sizeof text, "%ld\n%s\n", (long)getpid(), h->http_bound);

	/* Over the pid line, which it starts with: a reader never sees none. */
	if (h->lock_fd1 && pwrite(h->lock_fd1 - 1, text, (size_t)n, 0) != n)
		log_warn("host", "cannot write the listen address into %s/evhostd.lock: %s",
		         h->set.state_dir, strerror(errno));
}

static void *dup_bytes(const void *p, size_t n)
{
	void *c = p ? malloc(n ? n : 1) : NULL;
	if (c)
		memcpy(c, p, n);
	return c;
}

/* Guards which set is current against its holders count: a reader's
 * load-and-count and a reload's swap-and-check cannot interleave, so a set
 * is freed only once no one can reach it (no reader between a load and its
 * count). One for the process (there is one host); held for a few
 * instructions, once per authenticated request. */
static pthread_mutex_t auth_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_int n_auth_keysets; /* made and not freed: host_auth_keysets_live */

int host_auth_keysets_live(void) { return atomic_load(&n_auth_keysets); }

/* Its secrets zeroed first: a rotated key does not stay in freed memory. */
static void auth_keyset_free(auth_keyset *k)
{
	if (!k)
		return;
	if (k->secret)
		explicit_bzero(k->secret, k->len);
	if (k->previous)
		explicit_bzero(k->previous, k->previous_len);
	free(k->secret);
	free(k->previous);
	free(k->issuer);
	tls_pubkeys_free(k->pubkeys);
	free(k->pk_text);
	free(k->pk_issuer);
	free(k->pk_audience);
	free(k->pk_roles);
	jwks_fetcher_free(k->jwks); /* its reference: the last frees a fetcher a reload replaced */
	explicit_bzero(k, sizeof *k);
	free(k);
	atomic_fetch_sub(&n_auth_keysets, 1);
}

const auth_keyset *host_auth_acquire(host *h)
{
	auth_keyset *k;
	pthread_mutex_lock(&auth_lock);
	if ((k = atomic_load(&h->auth)))
		k->holders++;
	pthread_mutex_unlock(&auth_lock);
	return k;
}

void host_auth_release(const auth_keyset *held)
{
	auth_keyset *k = (auth_keyset *)held; /* the holders count is not the keys */
	int last;
	if (!k)
		return;
	pthread_mutex_lock(&auth_lock);
	last = --k->holders == 0 && k->retired;
	pthread_mutex_unlock(&auth_lock);
	if (last)
		auth_keyset_free(k);
}

/* k (or NULL, at the stop) becomes the current set; the one it replaces is
 * freed now when no one holds it, else by its last holder's release. */
static void auth_keyset_install(host *h, auth_keyset *k)
{
	auth_keyset *old;
	int unheld;
	pthread_mutex_lock(&auth_lock);
	old = atomic_exchange(&h->auth, k);
	if (old)
		old->retired = 1;
	unheld = old && old->holders == 0;
	pthread_mutex_unlock(&auth_lock);
	if (unheld)
		auth_keyset_free(old);
}

static char *dup_or_null(const char *s, int *oom)
{
	char *c = s ? strdup(s) : NULL;
	if (s && !c)
		*oom = 1;
	return c;
}

/* A copy of the keys in `s`, taking h's public keys (read by
 * host_configure), or NULL out of memory (h keeps them then). */
static auth_keyset *auth_keyset_new(host *h, const settings *s)
{
	auth_keyset *k = calloc(1, sizeof *k);
	int oom = 0;
	if (!k)
		return NULL;
	atomic_fetch_add(&n_auth_keysets, 1);
	k->len = s->jwt_secret_len;
	k->previous_len = s->jwt_previous_secret_len;
	k->secret = dup_bytes(s->jwt_secret, s->jwt_secret_len);
	k->previous = dup_bytes(s->jwt_previous_secret, s->jwt_previous_secret_len);
	k->issuer = strdup(s->jwt_issuer ? s->jwt_issuer : "");
	k->ttl_max_s = s->token_ttl_max_s;
	k->pk_text = dup_or_null(s->jwt_public_keys, &oom);
	k->pk_issuer = dup_or_null(s->jwt_public_issuer, &oom);
	k->pk_audience = dup_or_null(s->jwt_public_audience, &oom);
	k->pk_roles = dup_or_null(s->jwt_public_roles, &oom);
	if ((s->jwt_secret && !k->secret) || (s->jwt_previous_secret && !k->previous) ||
	    !k->issuer || oom) {
		auth_keyset_free(k);
		return NULL;
	}
	k->pubkeys = h->jwt_pubkeys;
	k->nrsa = h->jwt_nrsa;
	k->nec = h->jwt_nec;
	h->jwt_pubkeys = NULL;
	return k;
}

static int same_text(const char *a, const char *b)
{
	return (!a && !b) || (a && b && !strcmp(a, b));
}

static int same_key(const void *a, size_t alen, const void *b, size_t blen)
{
	return alen == blen && (!alen || (a && b && !memcmp(a, b, alen)));
}

/* [auth] takes effect at once: requests check tokens against, and plugins
 * sign with, whatever set they load. Key files are read again on every
 * reload, so a key replaced in place is picked up too. Nothing of a key is
 * logged but where it came from. */
static void reload_auth_keys(host *h, host *next, const auth_keyset *cur)
{
	auth_keyset *k;
	const settings *n = &next->set;
	char err[1024];
	int secret_changed = !same_key(cur->secret, cur->len, n->jwt_secret, n->jwt_secret_len);
	int previous_changed =
	    !same_key(cur->previous, cur->previous_len, n->jwt_previous_secret,
	              n->jwt_previous_secret_len);
	int issuer_changed = strcmp(cur->issuer, n->jwt_issuer ? n->jwt_issuer : "") != 0;
	int ttl_changed = cur->ttl_max_s != n->token_ttl_max_s;
	int jwks_changed =
	    cur->jwks ? !next->jwks || !jwks_fetcher_same(cur->jwks, n) : next->jwks != NULL;
	int public_changed = !same_text(cur->pk_text, n->jwt_public_keys) ||
	                     !same_text(cur->pk_issuer, n->jwt_public_issuer) ||
	                     !same_text(cur->pk_audience, n->jwt_public_audience) ||
	                     !same_text(cur->pk_roles, n->jwt_public_roles) || jwks_changed;

	if (!secret_changed && !previous_changed && !issuer_changed && !public_changed &&
	    !ttl_changed)
		return;
	/* The keys next read (moved into the new set). */
	k = auth_keyset_new(next, n);
	if (!k) {
		log_error("host", "reload: out of memory: [auth] not applied, the old keys stay");
		return;
	}
	if (jwks_changed && next->jwks) {
		/* Fetched before the new set is in use; the fetcher it replaces
		 * stops, and is freed once no set names it (requests that still
		 * hold the old set are sent on to the new fetcher's keys). */
		if (jwks_fetcher_start(next->jwks) != 0) {
			log_error("host", "reload: [auth] not applied, the old keys stay");
			auth_keyset_free(k);
			return;
		}
		if (h->jwks) {
			jwks_fetcher_retire(next->jwks, h->jwks);
			jwks_fetcher_free(h->jwks); /* the host's reference; cur has its own */
		}
		h->jwks = next->jwks;
		next->jwks = NULL;
	} else if (jwks_changed) {
		/* No URL now: the fetcher stops (its keys go), and is freed once
		 * no set names it. */
		jwks_fetcher_stop(h->jwks);
		jwks_fetcher_free(h->jwks);
		h->jwks = NULL;
	}
	/* The current set's fetcher is always the host's (or none). */
	k->jwks = jwks_fetcher_hold(h->jwks);
	/* Noted before a token can be signed for it (revocations_note_ttl). */
	if (ttl_changed && h->revoked &&
	    revocations_note_ttl(h->revoked, k->ttl_max_s, err, sizeof err) != 0)
		log_warn("host", "reload: [auth] token_ttl_max: %s (sign-outs are kept for it until "
		                 "evhostd stops)",
		         err);
	/* cur is freed once the requests holding it are answered (this
	 * function holds it too, for the lines below). */
	auth_keyset_install(h, k);
	if (secret_changed && k->secret)
		log_info("host", "reload: [auth] tokens are now signed and checked with the key in %s",
		         n->jwt_secret_file);
	else if (secret_changed && !k->pubkeys && !k->jwks)
		log_warn("host", "reload: [auth] no jwt_secret_file: routes that need a token now "
		                 "refuse every request (503: no key to check tokens with)");
	else if (secret_changed)
		log_warn("host", "reload: [auth] no jwt_secret_file: this host's tokens are refused, "
		                 "%s's are checked as before",
		         k->pk_issuer ? k->pk_issuer : "the identity provider");
	if (previous_changed && k->previous)
		log_info("host", "reload: [auth] tokens signed with the key in %s are accepted until "
		                 "they expire; remove jwt_previous_secret_file then",
		         n->jwt_previous_secret_file);
	else if (previous_changed)
		log_info("host", "reload: [auth] no previous key: tokens it signed are refused");
	if (issuer_changed)
		log_info("host", "reload: [auth] issuer %s -> %s", cur->issuer, k->issuer);
	if (ttl_changed)
		log_info("host", "reload: [auth] token_ttl_max %lld s -> %lld s%s",
		         (long long)cur->ttl_max_s, (long long)k->ttl_max_s,
		         k->ttl_max_s < cur->ttl_max_s ? ": tokens signed to live longer are refused"
		                                       : "");
	if (public_changed && k->pubkeys)
		log_info("host", "reload: [auth] tokens of %s are now checked with the %d key(s) in %s",
		         k->pk_issuer, k->nrsa + k->nec, n->jwt_public_key_file);
	else if (public_changed && k->jwks)
		log_info("host", "reload: [auth] tokens of %s are now checked with the keys fetched "
		                 "from %s",
		         k->pk_issuer, jwks_fetcher_url(k->jwks));
	else if (public_changed)
		log_info("host", "reload: [auth] no jwt_public_key_file or jwt_jwks_url: tokens of "
		                 "another issuer are refused");
}

static void host_reload_auth(host *h, host *next)
{
	const auth_keyset *cur = host_auth_acquire(h);
	reload_auth_keys(h, next, cur);
	host_auth_release(cur);
}

/* [tracing] keys with no otlp_endpoint (commented out, say) do nothing:
 * said once, at start, so the admin does not wait for spans. */
static void tracing_off_note(const host *h)
{
	if (h->set.trace_endpoint)
		return;
	for (size_t i = 0; i < h->cfg.n; i++) {
		const cfg_entry *e = &h->cfg.v[i];
		if (strcmp(e->section, "tracing") || !strcmp(e->key, "otlp_endpoint"))
			continue;
		log_warn("host", "[tracing] %s (%s:%d) is set but otlp_endpoint is not: tracing is off",
		         e->key, e->file, e->line);
	}
}

int host_sign_out(host *h, const char *subject, const char *by, char *err, size_t errlen)
{
	const auth_keyset *k = atomic_load(&h->auth);
	int64_t now;

	if (!subject || !*subject || strlen(subject) >= sizeof(((jwt_claims *)0)->sub)) {
		snprintf(err, errlen, "a subject is 1 to %zu bytes",
		         sizeof(((jwt_claims *)0)->sub) - 1);
		return EVH_EINVAL;
	}
	if (!h->revoked || !k) {
		snprintf(err, errlen, "the daemon is not started");
		return EVH_ESTATE;
	}
	/* Made without a jwt_secret_file too: a key taken away and given back
	 * by reloads brings the tokens it signed back with it. */
	now = clock_wall_ms();
	/* Kept while a token signed before now may be taken: the longest
	 * token_ttl_max ever in force, and the leeway past its exp. */
	if (revocations_add(h->revoked, subject, now,
	                    revocation_until(now, revocations_ttl_high(h->revoked),
	                                     HTTP_JWT_LEEWAY_S),
	                    err, errlen) != 0) {
		size_t n = strlen(err);
		snprintf(err + n, errlen - n, " (refused until evhostd stops, not after a restart)");
		metrics_sign_out(0);
		return EVH_ESTORE;
	}
	metrics_sign_out(1);
	log_info(by, "signed %s out: the tokens it had are refused from now on", subject);
	return EVH_OK;
}

/* The signed-out subjects (revoke.h). A file that cannot be read stops
 * the start: the tokens it refuses would be taken again. */
static int open_revocations(host *h)
{
	char path[4096], err[1024];
	size_t n;
	if ((size_t)snprintf(path, sizeof path, "%s/" REVOCATIONS_FILE, h->set.state_dir) >=
	    sizeof path) {
		log_error("host", "[host] state_dir is too long: %s", h->set.state_dir);
		return -1;
	}
	switch (revocations_open(&h->revoked, path, clock_wall_ms(), err, sizeof err)) {
	case 0: break;
	case -2:
		/* Nothing wrong with the file: no advice to move it away. */
		log_error("host", "cannot open the signed-out tokens' file %s; evhostd does not start "
		                  "without it",
		          err);
		return -1;
	default:
		log_error("host", "cannot open the signed-out tokens' file %s; without it tokens "
		                  "signed out before would be accepted again, so evhostd does not "
		                  "start (move the file away to start without those sign-outs)",
		          err);
		return -1;
	}
	if (revocations_note_ttl(h->revoked, h->set.token_ttl_max_s, err, sizeof err) != 0)
		log_warn("host", "[auth] token_ttl_max: %s (sign-outs are kept for it until evhostd "
		                 "stops)",
		         err);
	n = revocations_count(h->revoked);
	if (n)
		log_info("host", "[auth] %zu signed-out subject%s: their earlier tokens are refused", n,
		         n == 1 ? "" : "s");
	return 0;
}

int host_start(host *h)
{
	char err[1024], plain[80], tls[80] = "";
	diag d = {0};

	/* Before anything is opened: refused, no plugin's init has run. */
	if (host_check_instances(h, &d, "", "left out, the start goes on without it") != 0) {
		for (size_t i = 0; i < d.n; i++)
			log_error("host", "%s", d.msgs[i]);
		if (d.lost)
			log_error("host", "%zu more problem%s not recorded: out of memory", d.lost,
			          d.lost == 1 ? "" : "s");
		diag_free(&d);
		return -1;
	}
	diag_free(&d);
	if (lock_state_dir(h) != 0)
		return -1;
	crash_record_open(h->set.state_dir); /* before the consumers: they ask it */
	if (open_revocations(h) != 0)
		return -1;
	atomic_store(&h->auth, auth_keyset_new(h, &h->set));
	if (!atomic_load(&h->auth)) {
		log_error("host", "out of memory setting up the tokens' keys ([auth])");
		return -1;
	}
	/* The keyset holds the keys from here on: the settings' copies go, or a
	 * key a reload rotated out would stay in memory for the process's life
	 * (a reload reads its keys into a host of its own). */
	settings_drop_secrets(&h->set);
	log_proxy(h);
	/* An identity provider signs tokens for every application it serves:
	 * without an audience, one issued to another of them (with that
	 * application's roles, 'admin' included) is taken here too. */
	if ((h->set.jwt_public_key_file || h->jwks) && !h->set.jwt_public_audience)
		log_warn("host", "[auth] jwt_public_key_audience is not set: tokens of %s are accepted "
		                 "whatever application they were issued for, with the roles they carry; "
		                 "set it to this service's audience (the aud the provider puts in them)",
		         h->set.jwt_public_issuer ? h->set.jwt_public_issuer : "the other issuer");
	if (h->jwks) {
		/* Before HTTP: the first requests find the keys fetched (or cached). */
		atomic_load(&h->auth)->jwks = jwks_fetcher_hold(h->jwks);
		if (jwks_fetcher_start(h->jwks) != 0)
			return -1;
	}
	if (atomic_load(&h->auth)->pubkeys) {
		const auth_keyset *k = atomic_load(&h->auth);
		log_info("host", "[auth] tokens of %s are checked with the key(s) in %s (%d RSA for "
		                 "RS256, %d EC for ES256)%s%s",
		         k->pk_issuer, h->set.jwt_public_key_file, k->nrsa, k->nec,
		         k->pk_audience ? "; audience " : "", k->pk_audience ? k->pk_audience : "");
		if (h->jwt_left_out)
			log_info("host", "[auth] %d key(s) of the JWKS in %s left out: not for RS256 or "
			                 "ES256 signatures (use, key_ops, alg, kty or crv)",
			         h->jwt_left_out, h->set.jwt_public_key_file);
	}
	h->router = router_new();
	if (!h->router) {
		log_error("host", "out of memory creating the HTTP router");
		return -1;
	}
	if (http_check_listen(&h->set, err, sizeof err) != 0) {
		log_error("host", "http: %s", err);
		return -1;
	}
	if (kafka_start(&h->kafka, &h->set, err, sizeof err) != 0) {
		log_error("host", "kafka: %s", err);
		return -1;
	}
	if (outbox_start(&h->outbox, h->kafka, h->set.source) != 0)
		return -1; /* it said why */
	if (admin_start(h) != 0)
		return -1;
	/* Before the first request or event, which may be traced. */
	tracing_off_note(h);
	if (trace_start(&h->set, h->trace_tls) != 0) {
		h->trace_tls = NULL;
		return -1;
	}
	h->trace_tls = NULL;
	h->tracing = 1;
	for (size_t i = 0; i < h->nplugins;) {
		int rc;
		if (atomic_load(&h->start_stop)) {
			log_info("host", "the start ends here, a stop was asked: %zu plugin%s not started",
			         h->nplugins - i, h->nplugins - i == 1 ? "" : "s");
			return 1;
		}
		rc = host_start_plugin(h, h->plugins[i]);
		if (rc < 0)
			return -1;
		if (rc > 0) {
			plugin_destroy(h->plugins[i]);
			host_drop_plugin(h, i);
			continue;
		}
		i++;
	}
	http_drop_placeholders(h);
	http_set_access_log(h->set.log_access);
	if (http_start(&h->http, h, err, sizeof err) != 0) {
		log_error("host", "http: %s", err);
		return -1;
	}
	/* Port 0 is the system's choice: say which, or nobody can find it. */
	http_bound_text(h->http, 0, h->set.http_listen, plain, sizeof plain);
	snprintf(h->http_bound, sizeof h->http_bound, "%s", plain);
	record_listen(h);
	if (h->set.http_tls_listen)
		http_bound_text(h->http, 1, h->set.http_tls_listen, tls, sizeof tls);
	log_info("host", "evhostd %s ready: %zu plugin%s, http on %s%s%s, kafka %s", EVHOST_VERSION,
	         h->nplugins, h->nplugins == 1 ? "" : "s", plain,
	         h->set.http_tls_listen ? ", https on " : "", tls, kafka_bootstraps(h->kafka));
	/* Serving HTTP does not wait for Kafka (the outboxes keep the events),
	 * but "ready" must not pass for reachable: librdkafka's own lines say
	 * a broker is down, not what that means here. A cluster that answers
	 * does so at once; one that does not holds the start this long. */
	if (h->kafka && !kafka_reachable_shared(h->kafka, START_PROBE_MS))
		log_warn("host", "kafka: no broker of %s answered within %d ms: events wait in the "
		                 "plugins' outboxes and consumers start once one answers; /readyz "
		                 "says \"kafka\": \"unreachable\" until then",
		         kafka_bootstraps(h->kafka), START_PROBE_MS);
	return 0;
}

/* Take a running plugin out of service without disturbing the others: its
 * routes answer 503 while it drains, its consumer finishes the message in
 * hand, commits and leaves the group, the relay sends what its outbox holds,
 * then its routes go (404; with `restart`, placeholders answer 503 until its
 * new instance routes them), and in-flight requests are waited for. */
static void host_retire_plugin(host *h, evh_plugin *p, const char *why, int restart)
{
	int budget = h->set.stop_timeout_ms > 0 ? h->set.stop_timeout_ms : STOP_TIMEOUT_MS;
	p->restarting = restart;
	p->status = PLUGIN_DRAINING;
	atomic_store(&p->winding_down, 1);
	log_info("host", "plugin '%s': %s, draining", p->name, why);
	consumer_signal_stop(p, clock_mono_ms() + budget);
	stopguard_at("a reload's drain of plugin '%s': its consumer (an event handler that has "
	             "not returned)", p->name);
	consumer_stop(p);
	if (restart) {
		http_hold_plugin_routes(h, p);
	} else {
		http_remove_plugin_routes(h, p);
		metrics_plugin_retire(p->name);
	}
	p->status = PLUGIN_STOPPED;
	/* Out of the list already: no new pin; those taken before are let end. */
	stopguard_at("a reload's drain of plugin '%s': its requests in flight (a route handler "
	             "that has not returned)", p->name);
	pthread_mutex_lock(&h->plugins_lock);
	while (p->pins)
		pthread_cond_wait(&h->plugins_cv, &h->plugins_lock);
	pthread_mutex_unlock(&h->plugins_lock);
	/* After the requests: what one committed late (it was in its handler
	 * when the drain began) is sent now, not left in the outbox until the
	 * plugin runs again. */
	stopguard_at("a reload's drain of plugin '%s': the relay of its outbox (its database "
	             "held by a transaction still open)", p->name);
	outbox_remove_plugin(h->outbox, p);
	stopguard_at("a reload's drain of plugin '%s': its fini", p->name);
	plugin_destroy(p);
}

/* Why a reload stops `name`, which `next` does not run: its section is gone,
 * or disabled, or enabled and left out by host_check_instances (a route
 * clash; host_configure leaves out one it cannot load or check, named in
 * unchecked: that one keeps running). */
static const char *gone_why(const host *next, const char *name)
{
	for (size_t i = 0; i < next->set.nplugins; i++)
		if (!strcmp(next->set.plugins[i].name, name))
			return next->set.plugins[i].enabled
			           ? "left out (required = false): its declared routes clash with "
			             "another plugin's (the warning above says which)"
			           : "disabled";
	return "removed from the configuration";
}

static evh_plugin *find_plugin(evh_plugin **v, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (v[i] && strcmp(v[i]->name, name) == 0)
			return v[i];
	return NULL;
}

/* find_plugin, and the slot is emptied: the caller owns it. */
static evh_plugin *take_plugin(evh_plugin **v, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (v[i] && strcmp(v[i]->name, name) == 0) {
			evh_plugin *p = v[i];
			v[i] = NULL;
			return p;
		}
	return NULL;
}

/* [log] takes effect at once: every line reads the level and format when it
 * is written, every request [log] access. The change is said at the louder
 * of the two levels (applied before the line when it gets louder, after it
 * when quieter), and as a warning when neither shows INFO, so it is always
 * on record. */
static void host_reload_log(host *h, const host *next)
{
	int louder = next->set.log_level > h->set.log_level;
	char was[32], now[32];
	evh_log_level at = h->set.log_level >= EVH_LOG_INFO || next->set.log_level >= EVH_LOG_INFO
	                       ? EVH_LOG_INFO
	                       : EVH_LOG_WARN;
	if (next->set.log_access != h->set.log_access) {
		log_msg(at, "host", "reload: [log] access %s -> %s", log_access_name(h->set.log_access),
		        log_access_name(next->set.log_access));
		http_set_access_log(next->set.log_access);
		h->set.log_access = next->set.log_access;
	}
	if (next->set.log_rate_burst != h->set.log_rate_burst)
		log_msg(at, "host", "reload: [log] plugin_rate_limit_burst %" PRId64 " -> %" PRId64,
		        h->set.log_rate_burst, next->set.log_rate_burst);
	if (next->set.log_rate_interval_ms != h->set.log_rate_interval_ms)
		log_msg(at, "host", "reload: [log] plugin_rate_limit_interval %s s -> %s s",
		        log_seconds(was, sizeof was, h->set.log_rate_interval_ms),
		        log_seconds(now, sizeof now, next->set.log_rate_interval_ms));
	log_set_rate_limit(next->set.log_rate_burst, next->set.log_rate_interval_ms);
	h->set.log_rate_burst = next->set.log_rate_burst;
	h->set.log_rate_interval_ms = next->set.log_rate_interval_ms;
	if (next->set.log_level == h->set.log_level && next->set.log_fmt == h->set.log_fmt)
		return;
	if (louder)
		log_setup(next->set.log_level, next->set.log_fmt);
	log_msg(at, "host", "reload: [log] level %s -> %s, format %s -> %s",
	        log_level_name(h->set.log_level), log_level_name(next->set.log_level),
	        log_format_name(h->set.log_fmt), log_format_name(next->set.log_fmt));
	if (!louder)
		log_setup(next->set.log_level, next->set.log_fmt);
	h->set.log_level = next->set.log_level;
	h->set.log_fmt = next->set.log_fmt;
}

/* [http] tls_certificate: read again at every reload (certbot renews the
 * file in place), already checked by host_configure; new handshakes get it,
 * open connections keep theirs. A listener added by the reload needs a
 * restart (said with the other restart-only keys). */
static void host_reload_tls(host *h, host *next)
{
	char what[768];
	char *path;
	if (!h->http || !h->set.http_tls_listen || !next->tls)
		return;
	/* The running settings name the file now served. */
	path = h->set.http_tls_certificate;
	h->set.http_tls_certificate = next->set.http_tls_certificate;
	next->set.http_tls_certificate = path;
	tls_cert_describe(next->tls, what, sizeof what);
	log_info("host", "reload: [http] tls_certificate %s: serving %s", h->set.http_tls_certificate,
	         what);
	tls_cert_use(next->tls, h->set.http_tls_certificate);
	next->tls = NULL;
}

int host_reload(host *h)
{
	host next;
	diag d = {0};
	size_t started = 0, stopped = 0, kept = 0, nfallbacks = 0, fell_back = 0;
	evh_plugin **fallbacks;
	int rc;

	memset(&next, 0, sizeof next);
	diag_free(&h->refused);
	next.reloading = 1;
	/* [host] takes effect at a restart (log_restart_only_changes says so
	 * of a change): these two as well, read where the daemon runs from. */
	next.pinned_confdir = h->set.confdir;
	next.pinned_plugin_dir = h->set.plugin_dir;
	log_info("host", "reloading %s", h->conf_file);
	stopguard_at("the reload under way (reading the configuration, the plugins' checks)");
	rc = host_configure(&next, h->conf_file, &d);
	/* Refused here, not by the second instance's init once the others
	 * were stopped or started. */
	if (host_check_instances(&next, &d, "reload: ", "left out") != 0)
		rc = -1;
	if (rc != 0) {
		for (size_t i = 0; i < d.n; i++)
			log_error("host", "reload refused: %s", d.msgs[i]);
		if (d.lost)
			log_error("host", "reload refused: %zu more problem%s not recorded: out of memory",
			          d.lost, d.lost == 1 ? "" : "s");
		log_error("host", "reload refused: %zu problem%s; the running configuration stays",
		          diag_count(&d), diag_count(&d) == 1 ? "" : "s");
		h->refused = d; /* kept for the admin API's answer */
		host_stop(&next);
		return -1;
	}
	diag_free(&d);
	/* Each plugin of the new configuration may be left off, and each one
	 * running stopped: room to say so on /readyz, before anything is
	 * applied. */
	if (host_reserve_down(h, h->ndown + next.nplugins + h->nplugins) != 0) {
		log_error("host", "reload refused: out of memory; the running configuration stays");
		diag_add(&h->refused, NULL, 0, "out of memory");
		host_stop(&next);
		return -1;
	}
	if (log_restart_only_changes(&h->cfg, &next.cfg))
		log_warn("host", "reload: changes outside [plugin.*], [log], [auth] and [admin] "
		                 "sections need a restart; they are not applied");
	host_reload_log(h, &next);
	host_say_public_secrets(&next.set, &h->set);
	settings_swap_public_secrets(&h->set, &next.set);
	host_reload_auth(h, &next);
	admin_reload_token(h, &next.set);
	host_reload_tls(h, &next);

	/* Stop what was removed, disabled or changed: its section, or its file
	 * (a new build installed in its place). A plugin that is restarted keeps
	 * a copy of itself as it ran (its build stays loaded), to start again
	 * should its new configuration or build fail in init (step 1 ran the
	 * plugins' checks of their values, but only init sees what needs the
	 * file system or the network, or a plugin without a check). */
	fallbacks = calloc(h->nplugins ? h->nplugins : 1, sizeof *fallbacks);
	for (size_t i = 0; i < h->nplugins;) {
		evh_plugin *p = h->plugins[i], *n = find_plugin(next.plugins, next.nplugins, p->name);
		int same_section = n && strcmp(n->signature, p->signature) == 0;
		char name[PLUGIN_NAME_MAX + 1];
		if (same_section && plugin_same_build(n, p)) {
			i++;
			continue;
		}
		if (!n && name_in(next.unchecked, next.nunchecked, p->name)) {
			log_warn("host", "reload: plugin '%s' (required = false) keeps running as it ran: "
			                 "its new build or values were refused (the warning above says "
			                 "why)",
			         p->name);
			i++;
			continue;
		}
		if (n) {
			char err[1024];
			evh_plugin *fb = NULL;
			if (!fallbacks)
				snprintf(err, sizeof err, "out of memory");
			else if ((fb = plugin_reopen(p, err, sizeof err)))
				fallbacks[nfallbacks++] = fb;
			if (!fb)
				log_warn("host", "reload: plugin '%s': no way back should its new "
				                 "configuration fail: %s",
				         p->name, err);
		}
		host_drop_plugin_to_retire(h, i, n != NULL);
		snprintf(name, sizeof name, "%s", p->name); /* p is gone after */
		host_retire_plugin(h, p,
		                   !n             ? gone_why(&next, p->name)
		                   : same_section ? "its file was replaced (a new build)"
		                   : plugin_same_build(n, p)
		                       ? "configuration changed"
		                       : "configuration changed and its file was replaced (a new build)",
		                   n != NULL);
		if (!n)
			host_unmark_stopping(h, name);
		stopped++;
	}
	/* A plugin left off by an earlier reload whose section is gone now. */
	for (size_t i = h->ndown; i-- > 0;)
		if (!find_plugin(next.plugins, next.nplugins, h->down[i]))
			host_mark_down(h, h->down[i], 0);
	metrics_plugins_configured(&next); /* a failed plugin no longer enabled: no plugin_up */
	/* Start what is new or changed; discard the copies of unchanged ones. */
	for (size_t i = 0; i < next.nplugins; i++) {
		evh_plugin *n = next.plugins[i];
		next.plugins[i] = NULL;
		if (find_plugin(h->plugins, h->nplugins, n->name)) {
			plugin_destroy(n);
			kept++;
			continue;
		}
		n->host = h;
		host_mark_starting(h, n->name);
		if (host_reserve_plugin(h, n->name) != 0 || host_start_plugin(h, n) != 0) {
			evh_plugin *fb = take_plugin(fallbacks, nfallbacks, n->name);
			int required = n->required;
			const char *what = !fb || plugin_same_build(fb, n) ? "configuration"
			                   : strcmp(fb->signature, n->signature) == 0
			                       ? "build"
			                       : "build and configuration";
			char name[80];
			snprintf(name, sizeof name, "%s", n->name);
			plugin_destroy(n);
			if (fb && host_reserve_plugin(h, name) == 0 && host_start_plugin(h, fb) == 0) {
				host_settle_start(h, name, fb, 0);
				fell_back++;
				log_error("host", "reload: plugin '%s' could not be started with its new %s; "
				                  "it runs again as it ran before (%s): the error above says why; "
				                  "reload to try again",
				          name, what, fb->desc->version ? fb->desc->version : "");
				started++;
				continue;
			}
			if (fb)
				plugin_destroy(fb);
			/* Said by its start when that failed; not when memory for its
			 * place ran out first: evhost_plugin_up must read 0. */
			metrics_plugin_failed(name);
			host_settle_start(h, name, NULL, required);
			log_error("host", "reload: plugin '%s' could not be started; it stays off%s", name,
			          required ? " (/readyz says so until a reload starts it)" : "");
			continue;
		}
		host_settle_start(h, n->name, n, 0);
		started++;
	}
	for (size_t i = 0; i < nfallbacks; i++)
		if (fallbacks[i])
			plugin_destroy(fallbacks[i]);
	free(fallbacks);
	http_drop_placeholders(h);
	next.nplugins = 0;
	host_stop(&next);
	pthread_mutex_lock(&h->plugins_lock);
	h->nrestarting = 0; /* each was started, fell back or left off: said above */
	h->nstarting = 0;
	pthread_mutex_unlock(&h->plugins_lock);
	if (fell_back)
		log_info("host", "reload done: %zu started, %zu stopped, %zu unchanged; %zu of those "
		                 "started run as before the reload (their new configuration or build "
		                 "failed)",
		         started, stopped, kept, fell_back);
	else
		log_info("host", "reload done: %zu started, %zu stopped, %zu unchanged", started,
		         stopped, kept);
	return 0;
}

void host_stop(host *h)
{
	int budget = h->set.stop_timeout_ms > 0 ? h->set.stop_timeout_ms : STOP_TIMEOUT_MS;
	int64_t t0 = clock_mono_ms();
	h->stopping = 1;
	for (size_t i = 0; i < h->nplugins; i++) /* evh_stopping: handlers may end early */
		atomic_store(&h->plugins[i]->winding_down, 1);
	/* A JWKS fetch under way gives up rather than hold the stop; requests
	 * waiting for it are answered before HTTP waits for them to end. */
	jwks_fetcher_signal_stop(h->jwks);
	/* Before HTTP's drain, which may last stop_timeout: each consumer ends
	 * the message in hand and takes no other meanwhile (a mail sent then
	 * would be sent again after the start, and a stop held past its guard). */
	for (size_t i = 0; i < h->nplugins; i++)
		consumer_signal_stop(h->plugins[i], t0 + budget);
	if (h->http) {
		stopguard_at("HTTP: requests in flight (a route handler that has not returned)");
		http_stop(h->http);
		h->http = NULL;
	}
	admin_stop(h);
	for (size_t i = 0; i < h->nplugins; i++) {
		stopguard_at("plugin '%s': its consumer (an event handler that has not returned)",
		             h->plugins[i]->name);
		consumer_stop(h->plugins[i]);
	}
	/* Each consumer has left its group: a guard firing at a later step is
	 * no wait for partitions at the next start, nor an event in hand. */
	crash_record_consumers_left();
	/* Events not sent by now stay in the outboxes on disk and go out at the
	 * next start, so the flush is bounded by [host] stop_timeout. */
	if (h->outbox) {
		int spent = (int)(clock_mono_ms() - t0);
		int64_t left;
		stopguard_at("the outbox relay (a plugin's database held by a transaction still "
		             "open, e.g. by a thread of the plugin's own)");
		left = outbox_stop(h->outbox, budget - spent > 1000 ? budget - spent : 1000);
		if (left > 0)
			log_warn("host",
			         "%lld event(s) still in the outbox %d ms into the stop; they are kept "
			         "on disk and sent at the next start",
			         (long long)left, (int)(clock_mono_ms() - t0));
		h->outbox = NULL;
	}
	if (h->kafka) {
		int rest = budget - (int)(clock_mono_ms() - t0);
		stopguard_at("the Kafka producer's flush");
		kafka_stop(h->kafka, rest > 500 ? rest : 500);
		h->kafka = NULL;
	}
	/* Every span has ended: requests, handlers and publishers are done. */
	if (h->tracing) {
		int rest = budget - (int)(clock_mono_ms() - t0);
		stopguard_at("the trace exporter's last batch");
		trace_stop(rest > 1000 ? rest : 1000);
		h->tracing = 0;
	}
	for (size_t i = 0; i < h->nplugins; i++) {
		if (h->plugins[i]->status == PLUGIN_RUNNING)
			h->plugins[i]->status = PLUGIN_STOPPED;
		if (h->router)
			http_remove_plugin_routes(h, h->plugins[i]);
		stopguard_at("plugin '%s': its fini", h->plugins[i]->name);
		plugin_destroy(h->plugins[i]);
	}
	free(h->plugins);
	h->plugins = NULL;
	h->nplugins = 0;
	free(h->conf_file);
	h->conf_file = NULL;
	if (h->router) {
		http_drop_placeholders(h);
		router_free(h->router);
		h->router = NULL;
	}
	revocations_close(h->revoked);
	h->revoked = NULL;
	tls_cert_free(h->tls);
	h->tls = NULL;
	tls_pubkeys_free(h->jwt_pubkeys);
	h->jwt_pubkeys = NULL;
	/* HTTP has stopped: no request holds its keys. The current key set's
	 * reference goes with it, below. */
	jwks_fetcher_stop(h->jwks);
	jwks_fetcher_free(h->jwks);
	h->jwks = NULL;
	tls_client_free(h->trace_tls);
	h->trace_tls = NULL;
	settings_free(&h->set);
	cfg_free(&h->cfg);
	diag_free(&h->refused);
	free(h->down);
	h->down = NULL;
	h->ndown = h->capdown = 0;
	free(h->restarting);
	h->restarting = NULL;
	h->nrestarting = 0;
	free(h->starting);
	h->starting = NULL;
	h->nstarting = 0;
	free(h->retiring);
	h->retiring = NULL;
	h->nretiring = 0;
	for (size_t i = 0; i < h->nunchecked; i++)
		free(h->unchecked[i]);
	free(h->unchecked);
	h->unchecked = NULL;
	h->nunchecked = 0;
	auth_keyset_install(h, NULL); /* HTTP has stopped: no one holds it */
	if (h->lock_fd1) {
		close(h->lock_fd1 - 1);
		h->lock_fd1 = 0;
	}
}

evh_plugin *host_pin_plugin(host *h, const char *name)
{
	evh_plugin *p;
	pthread_mutex_lock(&h->plugins_lock);
	if ((p = find_plugin(h->plugins, h->nplugins, name)))
		p->pins++;
	pthread_mutex_unlock(&h->plugins_lock);
	return p;
}

void host_log_sweep(host *h)
{
	for (size_t i = 0; i < h->nplugins; i++)
		log_budget_sweep(&h->plugins[i]->log_budget);
}

void host_unpin_plugin(host *h, evh_plugin *p)
{
	pthread_mutex_lock(&h->plugins_lock);
	if (--p->pins == 0)
		pthread_cond_broadcast(&h->plugins_cv);
	pthread_mutex_unlock(&h->plugins_lock);
}

int host_ready(host *h, char **json)
{
	int ready = !h->stopping, kafka_ok, store_ok = 1, store_full_seen = 0, ok = 1, rc;
	cJSON *root = cJSON_CreateObject(), *plugins = jsonb_put_object(root, "plugins", &ok);
	cJSON *damaged = NULL;

	*json = NULL;
	if (!plugins) {
		cJSON_Delete(root);
		return -1;
	}
	pthread_mutex_lock(&h->plugins_lock);
	for (size_t i = 0; i < h->nplugins; i++) {
		evh_plugin *p = h->plugins[i];
		jsonb_put_str(plugins, p->name, plugin_state_name(p->status), &ok);
		if (p->status != PLUGIN_RUNNING)
			ready = 0;
		/* Out of memory says nothing of the disk: the check itself failed
		 * (ok = 0: no document, the caller answers 503 without one). */
		rc = p->store ? store_check_writable(p->store) : EVH_OK;
		if (rc == EVH_ENOMEM)
			ok = 0;
		else if (rc != EVH_OK)
			store_ok = 0;
		if (p->store && store_full_recheck(p->store))
			store_full_seen = 1;
		/* Said, not a reason to stop serving what is not damaged. */
		if (p->store && store_damaged(p->store) &&
		    (damaged || (damaged = jsonb_put_array(root, "damaged", &ok))))
			jsonb_put_str(damaged, NULL, p->name, &ok);
	}
	/* A required plugin a reload could not start is down, not gone. */
	for (size_t i = 0; i < h->ndown; i++) {
		jsonb_put_str(plugins, h->down[i], plugin_state_name(PLUGIN_FAILED), &ok);
		ready = 0;
	}
	/* One a reload is stopping to start again, or starting for the first
	 * time: not running meanwhile. */
	for (size_t i = 0; i < h->nrestarting; i++) {
		jsonb_put_str(plugins, h->restarting[i], "restarting", &ok);
		ready = 0;
	}
	for (size_t i = 0; i < h->nstarting; i++) {
		jsonb_put_str(plugins, h->starting[i], "starting", &ok);
		ready = 0;
	}
	/* One a reload is stopping for good: said, the others still serve. */
	for (size_t i = 0; i < h->nretiring; i++)
		jsonb_put_str(plugins, h->retiring[i], "stopping", &ok);
	pthread_mutex_unlock(&h->plugins_lock);
	/* One probe asks the cluster at a time, at most once a second: while
	 * Kafka is unreachable each answer takes the timeout, and probes must
	 * not hold the HTTP workers meanwhile. */
	kafka_ok = h->kafka && kafka_reachable_shared(h->kafka, 2000);
	jsonb_put_str(root, "kafka", kafka_ok ? "reachable" : "unreachable", &ok);
	jsonb_put_str(root, "storage",
	              !store_ok ? "not writable" : store_full_seen ? "full" : "writable", &ok);
	ready = ready && kafka_ok && store_ok && !store_full_seen;
	jsonb_put_bool(root, "ready", ready, &ok);
	*json = ok ? cJSON_PrintUnformatted(root) : NULL;
	cJSON_Delete(root);
	return *json ? ready : -1;
}
