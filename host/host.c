/* The daemon's lifecycle: configure (read config, open plugins), start the
 * parts in dependency order, report readiness, and stop them in reverse so
 * nothing acknowledged is lost: HTTP first (no new writes), then consumers
 * (no new handler writes), then the outbox relay flushes, then Kafka. */
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "host.h"
#include "http.h"
#include "kafka.h"
#include "log.h"
#include "outbox.h"
#include "router.h"
#include "store.h"

#define STOP_FLUSH_TIMEOUT_MS 30000

static int host_add_plugin(host *h, evh_plugin *p)
{
	evh_plugin **v = realloc(h->plugins, (h->nplugins + 1) * sizeof *v);
	if (!v)
		return -1;
	h->plugins = v;
	h->plugins[h->nplugins++] = p;
	return 0;
}

static void host_drop_plugin(host *h, size_t i)
{
	memmove(&h->plugins[i], &h->plugins[i + 1], (h->nplugins - i - 1) * sizeof *h->plugins);
	h->nplugins--;
}

int host_configure(host *h, const char *conf_file, diag *d)
{
	char err[1024];
	size_t before = d->n;

	if (cfg_load(&h->cfg, conf_file, d) != 0)
		return -1;
	/* Keep going after host-section errors: the admin wants every problem
	 * of the configuration in one run, plugin sections included. */
	settings_from_cfg(&h->cfg, &h->set, d);
	for (size_t i = 0; i < h->set.nplugins; i++) {
		const plugin_settings *ps = &h->set.plugins[i];
		evh_plugin *p;

		if (!ps->enabled)
			continue;
		p = plugin_open(h, ps, err, sizeof err);
		if (!p) {
			if (ps->required)
				diag_add(d, ps->file, ps->line, "[%s] %s", ps->section, err);
			else
				log_warn("host", "%s:%d: [%s] skipped (required = false): %s", ps->file,
				         ps->line, ps->section, err);
			continue;
		}
		if (plugin_configure(p, &h->cfg, d) != 0 || host_add_plugin(h, p) != 0) {
			plugin_destroy(p);
			continue;
		}
	}
	return d->n == before ? 0 : -1;
}

/* Start one plugin: store, init, relay, consumer. A failure of a plugin with
 * required = false is a warning and the daemon runs without it. */
static int host_start_plugin(host *h, evh_plugin *p)
{
	char err[1024];

	if (plugin_start(p, err, sizeof err) != 0)
		goto failed;
	outbox_add_plugin(h->outbox, p);
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
	http_remove_plugin_routes(h, p);
	if (p->required) {
		log_error("host", "%s", err);
		return -1;
	}
	log_warn("host", "%s (required = false: continuing without it)", err);
	return 1;
}

int host_start(host *h)
{
	char err[1024];

	h->router = router_new();
	if (!h->router) {
		log_error("host", "out of memory");
		return -1;
	}
	if (kafka_start(&h->kafka, &h->set, err, sizeof err) != 0) {
		log_error("host", "kafka: %s", err);
		return -1;
	}
	if (outbox_start(&h->outbox, h->kafka, h->set.source) != 0) {
		log_error("host", "cannot start the outbox relay");
		return -1;
	}
	for (size_t i = 0; i < h->nplugins;) {
		int rc = host_start_plugin(h, h->plugins[i]);
		if (rc < 0)
			return -1;
		if (rc > 0) {
			plugin_destroy(h->plugins[i]);
			host_drop_plugin(h, i);
			continue;
		}
		i++;
	}
	if (http_start(&h->http, h, err, sizeof err) != 0) {
		log_error("host", "http: %s", err);
		return -1;
	}
	log_info("host", "evhostd %s ready: %zu plugin%s, http on %s, kafka %s", EVHOST_VERSION,
	         h->nplugins, h->nplugins == 1 ? "" : "s", h->set.http_listen,
	         kafka_bootstraps(h->kafka));
	return 0;
}

void host_stop(host *h)
{
	h->stopping = 1;
	if (h->http) {
		http_stop(h->http);
		h->http = NULL;
	}
	for (size_t i = 0; i < h->nplugins; i++)
		if (h->plugins[i]->consumer)
			consumer_stop(h->plugins[i]);
	if (h->outbox) {
		int64_t left = outbox_stop(h->outbox, STOP_FLUSH_TIMEOUT_MS);
		if (left > 0)
			log_warn("host",
			         "%lld event(s) still in the outbox after %d s; they are kept on disk and "
			         "sent at the next start",
			         (long long)left, STOP_FLUSH_TIMEOUT_MS / 1000);
		h->outbox = NULL;
	}
	if (h->kafka) {
		kafka_stop(h->kafka, 10000);
		h->kafka = NULL;
	}
	for (size_t i = 0; i < h->nplugins; i++) {
		if (h->plugins[i]->status == PLUGIN_RUNNING)
			h->plugins[i]->status = PLUGIN_STOPPED;
		if (h->router)
			http_remove_plugin_routes(h, h->plugins[i]);
		plugin_destroy(h->plugins[i]);
	}
	free(h->plugins);
	h->plugins = NULL;
	h->nplugins = 0;
	if (h->router) {
		router_free(h->router);
		h->router = NULL;
	}
	settings_free(&h->set);
	cfg_free(&h->cfg);
}

int host_ready(host *h, char **json)
{
	cJSON *root = cJSON_CreateObject(), *plugins = cJSON_CreateObject();
	int ready = !h->stopping, kafka_ok, store_ok = 1;

	if (!root || !plugins) {
		cJSON_Delete(root);
		cJSON_Delete(plugins);
		return -1;
	}
	cJSON_AddItemToObject(root, "plugins", plugins);
	for (size_t i = 0; i < h->nplugins; i++) {
		evh_plugin *p = h->plugins[i];
		cJSON_AddStringToObject(plugins, p->name, plugin_state_name(p->status));
		if (p->status != PLUGIN_RUNNING)
			ready = 0;
		if (p->store && store_check_writable(p->store) != 0)
			store_ok = 0;
	}
	kafka_ok = h->kafka && kafka_reachable(h->kafka, 2000);
	cJSON_AddStringToObject(root, "kafka", kafka_ok ? "reachable" : "unreachable");
	cJSON_AddStringToObject(root, "storage", store_ok ? "writable" : "not writable");
	ready = ready && kafka_ok && store_ok;
	cJSON_AddBoolToObject(root, "ready", ready);
	*json = cJSON_PrintUnformatted(root);
	cJSON_Delete(root);
	return *json ? ready : -1;
}
