/* The admin API (see admin.h): token check, routing, and the JSON of the
 * answers. Kafka work is in dlq.c (dead letters) and kafka.c (replay), the
 * event log in store.c.
 *
 * Plugin lifetime: plugins can be stopped and replaced by a reload while a
 * request runs, so a plugin pointer is only used with h->plugins_lock held,
 * or pinned (host_pin_plugin) for work on its database, which may wait for a
 * slow handler's transaction and must not hold the list's readers up
 * (readiness, metrics); it is looked up again by name after any slow step
 * done without either (reading Kafka). A replay holds the lock until the
 * consumer has the request; then the consumer's stop waits for the replay's
 * answer (consumer_replay), so the wait (REPLAY_TIMEOUT_MS for a busy
 * handler to let it be picked up) holds up no reader of the list. A
 * plugin's redrives run one at a time (redrive_claim_wait), so the "already
 * redriven" check and its record cannot interleave; other plugins' run
 * beside them. Backups run one at a time too (backup_mu), and
 * copy the databases by their paths, taken under the lock, on connections of
 * their own outside it.
 *
 * Backups and reloads exclude each other (reload_mu: reloading, backing_up):
 * a plugin a reload stops or restarts is out of h->plugins meanwhile, and a
 * backup taken then would answer 200 without its database. A backup waits
 * for a reload under way, at most RELOAD_WAIT_S (a reload's drain lasts as
 * long as a handler runs), then answers 503; a reload waits for a backup
 * under way without a deadline: a backup only copies files and ends by
 * itself (store_backup), and the main thread's watchdog interval covers a
 * reload as it does its drain. A SIGTERM meanwhile ends the wait and the
 * reload is not run: the stop then sets h->stopping, on which the backup
 * gives up (waiting on, the stop guard ended the process with the backup's
 * partial directory left).
 * Neither waits holding a lock the other takes: the backup's wait for a
 * reload is before it takes plugins_lock, and the reload's is before it
 * reads the configuration; a backup waits for no plugin's requests or
 * pins, which is what a reload's drain waits for.
 *
 * POST /admin/reload runs the reload SIGHUP runs, on the main thread: the
 * worker raises SIGHUP for the process (every thread blocks it and main.c
 * takes it with sigtimedwait) and waits until the main thread reports a
 * reload that began after the request (admin_reload_begin/end), so the
 * answer says whether the new configuration was applied or refused.
 * Calling host_reload on the worker instead would race reloads from SIGHUP
 * and have an HTTP worker wait for other workers' requests while it drains
 * a plugin; one path also keeps systemd's RELOADING=1/READY=1 right. */
#define _GNU_SOURCE
#include "admin.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <sodium.h>

#include "clock.h"
#include "dlq.h"
#include "events.h"
#include "http.h"
#include "json.h"
#include "jsonb.h"
#include "kafka.h"
#include "log.h"
#include "metrics.h"
#include "rfc3339.h"
#include "revoke.h"
#include "store.h"

#define ADMIN_LOG "admin"
#define DLQ_READ_TIMEOUT_MS 15000
#define REDRIVE_ACK_TIMEOUT_MS 30000
#define REPLAY_TIMEOUT_MS 15000
#define LIST_DEFAULT 100
#define LIST_MAX 1000
#define REDRIVE_MAX 10000  /* dead letters sent per redrive of all */
#define REDRIVE_CHUNK 1000 /* read at a time by a redrive of all */
#define REDRIVE_SCAN_MS 30000 /* a redrive of all reads no new chunk after that */
/* Records of dead letters gone from their topic a redrive forgets per
 * transaction, and in all (a backlog of a million goes over a few
 * redrives, none holding the plugin's database up for long). */
#define FORGET_BATCH 5000
#define FORGET_BATCHES 100
#define ADMIN_BODY_DEPTH 16    /* levels of nesting a request body may have */
/* Entries a redrive's answer lists, beyond each redriven one (at most
 * REDRIVE_MAX): a redrive of all skips every dead letter redriven before,
 * however many the topics hold, and the answer is not to grow with them. */
#define REDRIVE_LIST_SKIPPED 100
#define REDRIVE_LIST_FAILED 1000
#define VALUE_SHOW_MAX 65536
/* The largest offset a request may name (2^53 + 1 read as 2^53 once passed,
 * meaning another offset). */
#define OFFSET_MAX ((double)JSONB_EXACT_INT_MAX)
#define RELOAD_WAIT_S 60      /* then 202: still running, poll /admin/plugins */
#define RELOAD_WAIT_MAX_S 3600 /* ?wait= at most (evhostctl's --timeout at most) */
#define RELOAD_SLICE_MS 200  /* how often a waiting request looks at h->stopping */

/* A redrive under way: on its request's stack, in admin's list. */
struct redrive_claim {
	const char *name;
	struct redrive_claim *next;
};

struct admin {
	/* The token; a reload may change it (admin_reload_token). */
	pthread_mutex_t token_mu;
	int enabled;
	atomic_int https; /* [admin] https: served over [http] tls_listen too */
	unsigned char token_hash[crypto_generichash_BYTES];
	/* Redrives: one at a time per plugin (its record of what was redriven
	 * is read, then written, by one request), side by side for others. */
	pthread_mutex_t redrive_mu;
	pthread_cond_t redrive_cv;
	struct redrive_claim *redriving; /* the plugins being redriven */
	pthread_mutex_t backup_mu; /* backups run one at a time */
	/* Reloads: requests are numbered; a reload covers every request made
	 * before it began (it reads the configuration after that). */
	pthread_mutex_t reload_mu;
	pthread_cond_t reload_cv;
	uint64_t reload_asked;    /* last request number given out */
	uint64_t reload_covering; /* requests the running reload covers */
	uint64_t reload_done;     /* requests covered by a finished reload */
	int reload_rc;            /* host_reload's result for the last one */
	diag reload_problems;     /* and why it was refused (the host's refused, taken) */
	int reloading;            /* a reload is under way (main thread) */
	int backing_up;           /* a backup is under way: reloads wait for it */
};

/* ------------------------------------------------------------ start/stop */

/* Only a hash of the token is kept: comparisons then take the same time
 * whatever the length of the token presented. */
static void token_hash(const char *token, unsigned char *hash)
{
	crypto_generichash(hash, crypto_generichash_BYTES, (const unsigned char *)token,
	                   strlen(token), NULL, 0);
}

int admin_start(host *h)
{
	struct admin *a = calloc(1, sizeof *a);
	if (!a) {
		log_error(ADMIN_LOG, "out of memory starting the admin API");
		return -1;
	}
	pthread_mutex_init(&a->token_mu, NULL);
	pthread_mutex_init(&a->redrive_mu, NULL);
	clock_cond_init(&a->redrive_cv);
	pthread_mutex_init(&a->backup_mu, NULL);
	pthread_mutex_init(&a->reload_mu, NULL);
	clock_cond_init(&a->reload_cv);
	atomic_store(&a->https, h->set.admin_https);
	h->admin = a;
	if (!h->set.admin_token_file) {
		log_info(ADMIN_LOG, "admin API disabled ([admin] token_file is not set)");
		return 0;
	}
	if (sodium_init() < 0 || !h->set.admin_token) {
		log_error(ADMIN_LOG, "cannot start the admin API: %s",
		          h->set.admin_token ? "libsodium failed to initialise" : "no token");
		return -1;
	}
	token_hash(h->set.admin_token, a->token_hash);
	/* Only the hash stays in memory. */
	explicit_bzero(h->set.admin_token, strlen(h->set.admin_token));
	free(h->set.admin_token);
	h->set.admin_token = NULL;
	a->enabled = 1;
	log_info(ADMIN_LOG, "admin API enabled under /admin (token from %s)",
	         h->set.admin_token_file);
	return 0;
}

void admin_reload_token(host *h, const settings *next)
{
	struct admin *a = h->admin;
	unsigned char hash[crypto_generichash_BYTES] = {0};
	const char *file = next->admin_token_file;
	int changed;

	if (!a)
		return;
	/* HTTPS as the daemon serves it: a tls_listen a reload adds waits for
	 * a restart. */
	if (atomic_exchange(&a->https, next->admin_https) != next->admin_https)
		log_info(ADMIN_LOG, "reload: [admin] https = %s: the admin API is %s",
		         next->admin_https ? "true" : "false",
		         !next->admin_https    ? "no longer served over HTTPS ([http] listen only)"
		         : h->set.http_tls_listen ? "served over HTTPS too"
		                                  : "served over HTTPS too once [http] tls_listen is "
		                                    "served (it needs a restart)");
	if (file && (sodium_init() < 0 || !next->admin_token)) {
		log_error(ADMIN_LOG, "reload: [admin] not applied: the admin API keeps its %s",
		          a->enabled ? "token" : "off state");
		return;
	}
	if (file)
		token_hash(next->admin_token, hash);
	pthread_mutex_lock(&a->token_mu);
	changed = a->enabled != (file != NULL) ||
	          (file && sodium_memcmp(hash, a->token_hash, sizeof hash) != 0);
	if (changed) {
		memcpy(a->token_hash, hash, sizeof hash);
		a->enabled = file != NULL;
	}
	pthread_mutex_unlock(&a->token_mu);
	sodium_memzero(hash, sizeof hash);
	if (changed && file)
		log_info(ADMIN_LOG, "reload: [admin] the admin API now takes the token in %s", file);
	else if (changed)
		log_info(ADMIN_LOG, "reload: [admin] no token_file: the admin API is disabled");
}

int admin_over_https(host *h) { return h->admin && atomic_load(&h->admin->https); }

void admin_stop(host *h)
{
	struct admin *a = h->admin;
	if (!a)
		return;
	sodium_memzero(a->token_hash, sizeof a->token_hash);
	pthread_mutex_destroy(&a->token_mu);
	pthread_mutex_destroy(&a->redrive_mu);
	pthread_cond_destroy(&a->redrive_cv);
	pthread_mutex_destroy(&a->backup_mu);
	pthread_mutex_destroy(&a->reload_mu);
	pthread_cond_destroy(&a->reload_cv);
	diag_free(&a->reload_problems);
	free(a);
	h->admin = NULL;
}

/* --------------------------------------------------------------- replies */

static int problem(evh_response *resp, int status, const char *slug, const char *field,
                   const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static int problem(evh_response *resp, int status, const char *slug, const char *field,
                   const char *fmt, ...)
{
	char detail[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(detail, sizeof detail, fmt, ap);
	va_end(ap);
	return http_resp_problem(resp, status, slug, NULL, detail, field);
}

/* Send `root` (consumed) as the JSON body. When a part of it could not be
 * built (`ok` false, see jsonb.h) or it cannot be printed: 500, saying what
 * was done all the same (`done`, for a request that changed something; NULL
 * for a read), so that it is not taken for a request that failed. */
static int reply_json_done(evh_response *resp, int status, cJSON *root, int ok,
                           const char *done)
{
	char *json = root && ok ? jsonb_print(root) : NULL;
	int rc;
	cJSON_Delete(root);
	if (!json)
		return problem(resp, 500, "internal", NULL, "out of memory writing the answer%s%s",
		               done ? "; " : "", done ? done : "");
	http_resp_status(resp, status);
	rc = http_resp_body(resp, "application/json", json, strlen(json));
	free(json);
	return rc;
}

static int reply_json(evh_response *resp, int status, cJSON *root, int ok)
{
	return reply_json_done(resp, status, root, ok, NULL);
}

/* Answer 500 (out of memory) or 422 for `field`; both return -1 so input
 * parsers can `return invalid(...)`. */
static int oom(evh_response *resp)
{
	problem(resp, 500, "internal", NULL, "out of memory");
	return -1;
}

static int invalid(evh_response *resp, const char *field, const char *detail)
{
	problem(resp, 422, "validation", field, "%s", detail);
	return -1;
}

/* ----------------------------------------------------------------- input */

/* -1 when the admin API is off, 1 when the request carries its token, 0
 * when not, with *why set for evhost_admin_refusals_total. A header without
 * a bearer token (the bare token pasted, another scheme) is counted apart
 * from a wrong token: the first is a client set up wrong, the second
 * someone trying tokens (or holding one a reload replaced). */
static int authorized(struct admin *a, evh_request *req, metrics_admin_reason *why)
{
	unsigned char got[crypto_generichash_BYTES];
	const char *hdr = http_req_header(req, "Authorization");
	size_t n = 0;
	int ok;
	*why = hdr ? METRICS_ADMIN_MALFORMED : METRICS_ADMIN_MISSING;
	if ((hdr = http_bearer(hdr, &n)) != NULL) {
		crypto_generichash(got, sizeof got, (const unsigned char *)hdr, n, NULL, 0);
		/* An empty one is no token at all (a token file holds 16 bytes or more). */
		if (n)
			*why = METRICS_ADMIN_WRONG;
	}
	pthread_mutex_lock(&a->token_mu);
	ok = !a->enabled ? -1 : hdr && sodium_memcmp(got, a->token_hash, sizeof got) == 0;
	pthread_mutex_unlock(&a->token_mu);
	return ok;
}

/* A query parameter as an integer in [min, max]; `dflt` when absent.
 * Returns 0, or -1 after answering 422. */
static int query_int(evh_request *req, evh_response *resp, const char *name, int64_t dflt,
                     int64_t min, int64_t max, int64_t *out)
{
	const char *v = http_req_query(req, name);
	char *end;
	long long n;
	*out = dflt;
	if (!v)
		return 0;
	errno = 0;
	n = strtoll(v, &end, 10);
	/* Digits only: strtoll would also take "+5", " 5" and "-0". */
	if (!*v || v[strspn(v, "0123456789")] || *end || errno || n < min || n > max) {
		problem(resp, 422, "validation", name, "%s must be an integer from %lld to %lld",
		        name, (long long)min, (long long)max);
		return -1;
	}
	*out = n;
	return 0;
}

/* A query parameter "true" or "false"; `dflt` when absent. Returns 0, or -1
 * after answering 422. */
static int query_bool(evh_request *req, evh_response *resp, const char *name, int dflt,
                      int *out)
{
	const char *v = http_req_query(req, name);
	*out = dflt;
	if (!v)
		return 0;
	if (strcmp(v, "true") && strcmp(v, "false")) {
		problem(resp, 422, "validation", name, "%s must be true or false", name);
		return -1;
	}
	*out = !strcmp(v, "true");
	return 0;
}

/* A JSON number that is an integer in [min, max] (both within +-2^53, where
 * a double holds every integer): 0 and *out set, or -1. A fraction, a string
 * ("1"), or anything out of range is -1, never truncated or wrapped. */
static int json_int(const cJSON *v, double min, double max, int64_t *out)
{
	double d;
	if (!cJSON_IsNumber(v))
		return -1;
	d = v->valuedouble;
	if (!(d >= min && d <= max) || d != (double)(int64_t)d)
		return -1;
	*out = (int64_t)d;
	return 0;
}

/* 0 when every member of the object `o` is one of `keys` (NULL-ended), else
 * -1 after a 422 naming the first that is not: a misspelt field must not
 * quietly become its default, which for these requests is "every dead letter"
 * or "every topic". `where` is the object's place in the body ("" for the
 * body itself); `keys` has at least one. */
static int only_keys(const cJSON *o, const char *where, const char *const *keys,
                     evh_response *resp)
{
	const cJSON *m;
	char field[160], known[160];
	cJSON_ArrayForEach(m, o) {
		size_t i = 0, used = 0, shown;
		while (keys[i] && strcmp(keys[i], m->string))
			i++;
		if (keys[i])
			continue;
		for (i = 0; keys[i] && used < sizeof known; i++)
			used += (size_t)snprintf(known + used, sizeof known - used, "%s%s",
			                         i ? ", " : "", keys[i]);
		shown = json_utf8_cut(m->string, JSON_NAME_SHOWN);
		snprintf(field, sizeof field, "%s%s%.*s", where, *where ? "." : "", (int)shown,
		         m->string);
		problem(resp, 422, "validation", field, "unknown field '%s'%s: %s takes %s", field,
		        m->string[shown] ? " (shortened)" : "", *where ? where : "this request", known);
		return -1;
	}
	return 0;
}

/* The request body as a JSON object whose members are among `keys`; an empty
 * body is {}. NULL after answering 422, or 500 when a well-formed body could
 * not be parsed (cJSON says NULL for both).
 *
 * Checked first as the host checks a plugin's JSON body (http.c): cJSON
 * alone takes text after the object ({"keep":3}junk), cuts a string at a
 * \u0000, and of a member named twice reads the first where most parsers
 * read the last ({"offsets":[5],"offsets":null} is one dead letter here
 * and all of them to the caller's parser). fuzz_admin found the first.
 * Nested at most ADMIN_BODY_DEPTH levels: cJSON recurses once per level on
 * the HTTP worker's stack, which about 550 overflow (json.h, JSON_WORKER_DEPTH). */
static cJSON *body_object(evh_request *req, evh_response *resp, const char *const *keys)
{
	size_t len = 0, at;
	const char *body = http_req_body(req, &len);
	char name[128], why[256];
	int dup = 0;
	long bad;
	json_status st = JSON_OK;
	cJSON *o;
	if (!body || !len)
		len = 0;
	/* cJSON takes any bytes in a string: a name or topic that is not UTF-8
	 * would match nothing, or be said back in an answer as U+FFFD. */
	if (len && (bad = json_utf8_error(body, len)) >= 0) {
		problem(resp, 422, "validation", NULL, "the body has invalid UTF-8 at byte %ld", bad);
		return NULL;
	}
	if (len)
		st = json_check_members(body, len, ADMIN_BODY_DEPTH, &at, &dup, name, sizeof name);
	if (st == JSON_TOO_DEEP) {
		problem(resp, 422, "validation", NULL,
		        "the body is nested deeper than %d levels (at byte %zu)", ADMIN_BODY_DEPTH,
		        at);
		return NULL;
	}
	if (st == JSON_NUL || st == JSON_RANGE) {
		problem(resp, 422, "validation", NULL, "the body has %s at byte %zu",
		        st == JSON_NUL ? "\\u0000 in a string (the string would end there)"
		                       : "a number beyond the range of a double",
		        at);
		return NULL;
	}
	if (st != JSON_OK) {
		if (json_surrogate_at(body, len, at))
			problem(resp, 422, "validation", NULL,
			        "the body has a lone surrogate escape at byte %zu", at);
		else
			problem(resp, 422, "validation", NULL, "the body must be a JSON object");
		return NULL;
	}
	if (dup < 0) {
		oom(resp);
		return NULL;
	}
	if (dup) {
		json_duplicate_sentence(name, why, sizeof why);
		problem(resp, 422, "validation", NULL, "%s", why);
		return NULL;
	}
	o = len ? cJSON_ParseWithLength(body, len) : cJSON_CreateObject();
	if (cJSON_IsObject(o) && !only_keys(o, "", keys, resp))
		return o;
	if (cJSON_IsObject(o)) {
		cJSON_Delete(o);
		return NULL;
	}
	cJSON_Delete(o);
	if (!o) /* the text is one JSON value: cJSON ran out of memory */
		oom(resp);
	else
		problem(resp, 422, "validation", NULL, "the body must be a JSON object");
	return NULL;
}

/* ------------------------------------------------------------- plugins */

static evh_plugin *find_plugin_locked(host *h, const char *name)
{
	for (size_t i = 0; i < h->nplugins; i++)
		if (!strcmp(h->plugins[i]->name, name))
			return h->plugins[i];
	return NULL;
}

/* The plugin's dead-letter topics, one per subscribed topic. */
static char **dlq_topics_locked(host *h, const evh_plugin *p, size_t *n)
{
	char **v = calloc(p->nsubs ? p->nsubs : 1, sizeof *v), name[512];
	*n = 0;
	for (size_t i = 0; v && i < p->nsubs; i++) {
		int dup = 0;
		kafka_dlq_topic(p->subs[i].topic, p->name, h->set.dlq_suffix, name, sizeof name);
		for (size_t j = 0; j < *n; j++)
			dup |= !strcmp(v[j], name);
		if (!dup && (v[*n] = strdup(name)))
			(*n)++;
	}
	return v;
}

static void strv_free(char **v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		free(v[i]);
	free(v);
}

static cJSON *subscription_json(host *h, const evh_plugin *p, const plugin_sub *sub, int *ok)
{
	char dlq[512];
	int attempts, backoff, backoff_max;
	cJSON *o = cJSON_CreateObject();
	kafka_retry_policy(sub, &h->set, &attempts, &backoff, &backoff_max);
	kafka_dlq_topic(sub->topic, p->name, h->set.dlq_suffix, dlq, sizeof dlq);
	jsonb_put_str(o, "topic", sub->topic, ok);
	jsonb_put_str(o, "type", sub->type, ok);
	jsonb_put_num(o, "max_attempts", attempts, ok);
	jsonb_put_num(o, "backoff_ms", backoff, ok);
	jsonb_put_num(o, "backoff_max_ms", backoff_max, ok);
	jsonb_put_str(o, "dlq_topic", dlq, ok);
	return o;
}

/* The plugin database's condition: "ok", "full", "damaged" or both. */
static const char *storage_state(store *s)
{
	int full = store_full(s), damaged = store_damaged(s);
	return full && damaged ? "full,damaged" : full ? "full" : damaged ? "damaged" : "ok";
}

static cJSON *plugin_json(host *h, const evh_plugin *p, int *ok)
{
	cJSON *o = cJSON_CreateObject(), *subs;
	const char *version = p->desc && p->desc->version ? p->desc->version : NULL;
	jsonb_put_str(o, "name", p->name, ok);
	jsonb_put_str(o, "path", p->path ? p->path : "", ok);
	jsonb_put_str(o, "version", version, ok);
	jsonb_put_str(o, "state", plugin_state_name(p->status), ok);
	jsonb_put_str(o, "group", p->group ? p->group : "", ok);
	subs = jsonb_put_array(o, "subscriptions", ok);
	for (size_t i = 0; subs && i < p->nsubs; i++)
		jsonb_put(subs, NULL, subscription_json(h, p, &p->subs[i], ok), ok);
	jsonb_put_num(o, "outbox_pending", (double)store_outbox_pending(p->store), ok);
	jsonb_put_num(o, "events_stored", (double)store_events_count(p->store), ok);
	jsonb_put_str(o, "storage", storage_state(p->store), ok);
	jsonb_put_num(o, "log_lines_dropped", (double)atomic_load(&p->log_budget.dropped_total), ok);
	return o;
}

/* {"name": ..., "state": ...} of a plugin a reload is restarting or
 * stopping (out of the running list meanwhile), or could not start. */
static cJSON *plugin_state_json(const char *name, const char *state, int *ok)
{
	cJSON *o = cJSON_CreateObject();
	jsonb_put_str(o, "name", name, ok);
	jsonb_put_str(o, "state", state, ok);
	return o;
}

/* The plugins out of the running list that are still named, by state:
 * those a reload is restarting, starting or stopping, and a required one
 * it could not start (down, not gone). Under plugins_lock. */
struct named_off {
	char (*names)[PLUGIN_NAME_MAX + 1];
	size_t n;
	const char *state;
};

enum { OFF_RESTARTING, OFF_STARTING, OFF_STOPPING, OFF_FAILED, NAMED_OFF };

static void named_off_sets(const host *h, struct named_off out[NAMED_OFF])
{
	out[OFF_RESTARTING] = (struct named_off){h->restarting, h->nrestarting, "restarting"};
	out[OFF_STARTING] = (struct named_off){h->starting, h->nstarting, "starting"};
	out[OFF_STOPPING] = (struct named_off){h->retiring, h->nretiring, "stopping"};
	out[OFF_FAILED] = (struct named_off){h->down, h->ndown, "failed"};
}

/* The answer to a dead-letter or replay request for `name` when no running
 * plugin has it, under plugins_lock: while a reload restarts or starts it,
 * 503 with Retry-After: 1 (it runs in a moment); while a reload stops it,
 * or after one could not start it, 409; else 404. (404 for all of them
 * told a script retrying on 503 that the plugin did not exist.) */
static void answer_not_running_locked(host *h, evh_response *resp, const char *name)
{
	struct named_off off[NAMED_OFF];
	named_off_sets(h, off);
	for (size_t k = 0; k < NAMED_OFF; k++)
		for (size_t i = 0; i < off[k].n; i++) {
			if (strcmp(off[k].names[i], name))
				continue;
			if (k == OFF_RESTARTING || k == OFF_STARTING) {
				problem(resp, 503, "unavailable", NULL,
				        "plugin '%s' is %s (a reload): nothing was done; try again once it "
				        "runs",
				        name, off[k].state);
				http_resp_header(resp, "Retry-After", "1");
			} else {
				problem(resp, 409, "conflict", NULL, "plugin '%s' is not running (%s): "
				        "nothing was done", name, k == OFF_STOPPING ? "a reload is stopping it"
				        : "a reload could not start it; the log says why");
			}
			return;
		}
	problem(resp, 404, "not-found", NULL, "no plugin named '%s'", name);
}

/* {"plugins": [...]} for every plugin, and those named_off_sets has (with
 * their state only). */
static cJSON *plugins_object(host *h, int *ok)
{
	cJSON *root = cJSON_CreateObject(), *list = jsonb_put_array(root, "plugins", ok);
	struct named_off off[NAMED_OFF];
	pthread_mutex_lock(&h->plugins_lock);
	for (size_t i = 0; list && i < h->nplugins; i++)
		jsonb_put(list, NULL, plugin_json(h, h->plugins[i], ok), ok);
	named_off_sets(h, off);
	for (size_t k = 0; k < NAMED_OFF; k++)
		for (size_t i = 0; list && i < off[k].n; i++)
			jsonb_put(list, NULL, plugin_state_json(off[k].names[i], off[k].state, ok), ok);
	pthread_mutex_unlock(&h->plugins_lock);
	return root;
}

static int get_plugins(host *h, evh_response *resp, const char *name)
{
	struct named_off off[NAMED_OFF];
	cJSON *one = NULL;
	int found = 0, ok = 1;
	if (!name) {
		cJSON *all = plugins_object(h, &ok);
		return reply_json(resp, 200, all, ok);
	}
	pthread_mutex_lock(&h->plugins_lock);
	for (size_t i = 0; !found && i < h->nplugins; i++)
		if (!strcmp(h->plugins[i]->name, name)) {
			one = plugin_json(h, h->plugins[i], &ok);
			found = 1;
		}
	/* As the list says it: restarting, starting, stopping, or failed. */
	named_off_sets(h, off);
	for (size_t k = 0; !found && k < NAMED_OFF; k++)
		for (size_t i = 0; !found && i < off[k].n; i++)
			if ((found = !strcmp(off[k].names[i], name)))
				one = plugin_state_json(name, off[k].state, &ok);
	pthread_mutex_unlock(&h->plugins_lock);
	if (!found)
		return problem(resp, 404, "not-found", NULL, "no plugin named '%s'", name);
	return reply_json(resp, 200, one, ok);
}

/* ---------------------------------------------------------------- bytes */

static char *base64(const unsigned char *p, size_t n)
{
	size_t outlen = sodium_base64_encoded_len(n, sodium_base64_VARIANT_ORIGINAL);
	char *out = malloc(outlen);
	if (out)
		sodium_bin2base64(out, outlen, p, n, sodium_base64_VARIANT_ORIGINAL);
	return out;
}

/* Bytes as a JSON string under `name` when they are UTF-8 text, else as
 * base64 under `name`_base64; NULL bytes as null. At most `max` bytes are
 * shown (0: all); *cut tells whether some were left out. Text is cut
 * before a character the bound would split, so that it stays text. */
static void add_bytes(cJSON *o, const char *name, const char *p, size_t n, size_t max, int *cut,
                      int *ok)
{
	char key[64], *b64, *text;
	size_t tn;
	int shortened = max && n > max;
	if (cut)
		*cut = shortened;
	if (shortened)
		n = max;
	if (!p) {
		jsonb_put_str(o, name, NULL, ok);
		return;
	}
	/* p[n] exists when shortened: a continuation byte there means the cut
	 * split a character (of at most 4 bytes) */
	tn = n;
	while (shortened && tn > 0 && n - tn < 3 && ((unsigned char)p[tn] & 0xC0) == 0x80)
		tn--;
	/* Text without NUL bytes: a JSON string (cJSON's) would end at one. */
	if (json_utf8_error(p, tn) < 0 && !memchr(p, 0, tn)) {
		text = strndup(p, tn);
		if (!text)
			*ok = 0;
		else
			jsonb_put_str(o, name, text, ok);
		free(text);
		return;
	}
	snprintf(key, sizeof key, "%s_base64", name);
	b64 = base64((const unsigned char *)p, n);
	if (!b64)
		*ok = 0;
	else
		jsonb_put_str(o, key, b64, ok);
	free(b64);
}

/* ------------------------------------------------------------------ dlq */

/* A header into "headers" when its value is text (or null), else, as
 * base64, into "headers_base64" (*bin, made when first needed): in one
 * object a binary "x" written as "x_base64" could meet a header of that
 * name. `name` is one no header added before has. */
static void add_header(cJSON *o, cJSON *hdrs, cJSON **bin, const char *name, const char *v,
                       size_t n, int *ok)
{
	char *b64;
	if (!v || (json_utf8_error(v, n) < 0 && !memchr(v, 0, n))) {
		add_bytes(hdrs, name, v, n, 0, NULL, ok);
		return;
	}
	if (!*bin)
		*bin = jsonb_put_object(o, "headers_base64", ok);
	b64 = base64((const unsigned char *)v, n);
	if (!b64 || !*bin)
		*ok = 0;
	else
		jsonb_put_str(*bin, name, b64, ok);
	free(b64);
}

/* A header's name as the answer shows it, and its place in the message. */
typedef struct {
	const char *name;
	size_t at;
} shown_name;

static int shown_name_cmp(const void *a, const void *b)
{
	const shown_name *x = a, *y = b;
	int c = strcmp(x->name, y->name);
	return c ? c : (x->at > y->at) - (x->at < y->at);
}

/* The headers of `m` into "headers" and "headers_base64" (add_header), in
 * their order; of a name given twice, the last wins, in its place. A name
 * that is not UTF-8 (Kafka takes any bytes) is shown with U+FFFD for each
 * stray byte: as it is, it would make the whole answer JSON that strict
 * parsers refuse (a redrive sends the bytes); two names may then show
 * alike, and count as one. The names are sorted once to find the last of
 * each: taking an earlier one out of the object at each header walked it,
 * quadratic in the headers (60000 names: 15 s a listing of the message). */
static void add_headers(cJSON *o, cJSON *hdrs, const dlq_msg *m, int *ok)
{
	size_t n = m->nheaders;
	char **scrubbed = n ? calloc(n, sizeof *scrubbed) : NULL;
	shown_name *v = n ? calloc(n, sizeof *v) : NULL;
	unsigned char *last = n ? calloc(n, 1) : NULL;
	cJSON *bin = NULL;
	int oom = 0;

	if (n && (!scrubbed || !v || !last))
		oom = 1;
	for (size_t i = 0; !oom && i < n; i++) {
		scrubbed[i] = json_utf8_scrub(m->hname[i], &oom);
		v[i] = (shown_name){scrubbed[i] ? scrubbed[i] : m->hname[i], i};
	}
	if (!oom && n) {
		qsort(v, n, sizeof *v, shown_name_cmp);
		for (size_t i = 0; i < n; i++)
			last[v[i].at] = i + 1 == n || strcmp(v[i].name, v[i + 1].name) != 0;
	}
	for (size_t i = 0; !oom && i < n; i++)
		if (last[i])
			add_header(o, hdrs, &bin, scrubbed[i] ? scrubbed[i] : m->hname[i],
			           m->hvalue[i], m->hlen[i], ok);
	if (oom)
		*ok = 0;
	for (size_t i = 0; scrubbed && i < n; i++)
		free(scrubbed[i]);
	free(scrubbed);
	free(v);
	free(last);
}

/* A dead letter as GET .../dlq shows it; without its value (only its size)
 * when `values` is 0. */
static cJSON *dlq_msg_json(const dlq_msg *m, int redriven, int values, int *ok)
{
	cJSON *o = cJSON_CreateObject(), *hdrs;
	int cut = 0;
	jsonb_put_str(o, "topic", m->topic, ok);
	jsonb_put_num(o, "partition", m->partition, ok);
	jsonb_put_num(o, "offset", (double)m->offset, ok);
	if (m->timestamp_ms >= 0)
		jsonb_put_num(o, "timestamp_ms", (double)m->timestamp_ms, ok);
	add_bytes(o, "key", m->key, m->key_len, 0, NULL, ok);
	if (values)
		add_bytes(o, "value", m->value, m->value_len, VALUE_SHOW_MAX, &cut, ok);
	jsonb_put_num(o, "value_size", (double)m->value_len, ok);
	if (cut)
		jsonb_put_bool(o, "value_shortened", 1, ok);
	hdrs = jsonb_put_object(o, "headers", ok);
	if (hdrs)
		add_headers(o, hdrs, m, ok);
	jsonb_put_bool(o, "redriven", redriven, ok);
	return o;
}

/* Look the plugin up and copy what a dead-letter read needs. 404 when it
 * does not exist. */
static int dlq_prepare(host *h, evh_response *resp, const char *name, char ***topics, size_t *n)
{
	evh_plugin *p;
	pthread_mutex_lock(&h->plugins_lock);
	p = find_plugin_locked(h, name);
	*topics = p ? dlq_topics_locked(h, p, n) : NULL;
	if (!p)
		answer_not_running_locked(h, resp, name);
	pthread_mutex_unlock(&h->plugins_lock);
	if (!p)
		return -1;
	return *topics ? 0 : oom(resp);
}

/* Which messages were redriven already (flags[i] for l->v[i]): 0, or -1
 * with `why` when that cannot be known (the plugin is not in the running
 * list: a reload restarts or stops it; its record cannot be read). Nothing
 * may be sent then: one redriven before would be sent again. */
static int mark_redriven(host *h, const char *name, const dlq_list *l, int *flags, char *why,
                         size_t whylen)
{
	/* Pinned, not under plugins_lock: the reads wait for the plugin's
	 * database, which a slow handler may hold for seconds. */
	evh_plugin *p;
	int rc = 0;
	if (!l->n)
		return 0; /* nothing to decide */
	if (!(p = host_pin_plugin(h, name)) || !p->store) {
		snprintf(why, whylen, "plugin '%s' is not running (a reload is restarting or stopping "
		                      "it?): which dead letters were redriven before cannot be read",
		         name);
		rc = -1;
	}
	for (size_t i = 0; !rc && i < l->n; i++) {
		int r = store_dlq_redriven(p->store, l->v[i].topic, l->v[i].partition,
		                           l->v[i].offset, l->v[i].timestamp_ms);
		if (r < 0) {
			snprintf(why, whylen, "which dead letters of plugin '%s' were redriven before "
			                      "cannot be read (%s)",
			         name,
			         r == EVH_EBUSY ? "its database is held by a long transaction"
			                        : host_strerror(r));
			rc = -1;
		}
		flags[i] = r == 1;
	}
	if (p)
		host_unpin_plugin(h, p);
	return rc;
}

/* Read the dead letters after `after` (NULL: from the first), or, with
 * `at`, those at the positions `at` names. 0, or -1 with the answer made. */
static int read_dead_letters(host *h, evh_response *resp, char **topics, size_t ntopics,
                             const dlq_pos *after, const dlq_pos *at, size_t nat, size_t limit,
                             size_t value_max, dlq_list *l)
{
	char err[512];
	int rc = at ? dlq_read_at(h->kafka, (const char *const *)topics, ntopics, at, nat,
	                          DLQ_READ_TIMEOUT_MS, l, err, sizeof err)
	            : dlq_read_after(h->kafka, (const char *const *)topics, ntopics, after,
	                             limit, value_max, DLQ_READ_TIMEOUT_MS, l, err, sizeof err);
	if (rc == EVH_OK)
		return 0;
	log_warn(ADMIN_LOG, "reading dead letters failed: %s", err);
	if (resp)
		problem(resp, rc == EVH_ENOMEM ? 500 : 502,
		        rc == EVH_ENOMEM ? "internal" : "kafka", NULL, "%s", err);
	return -1;
}

/* A dead letter's id as a position to go on after: TOPIC:PARTITION:OFFSET,
 * or PARTITION:OFFSET when the plugin has one dead-letter topic (the ids
 * dlq list shows). *topic is the copy pos->topic points to (NULL: it
 * points into topics). 0, or -1 with the answer made (422, field "after",
 * for a malformed one). */
static int parse_dlq_after(const char *v, evh_response *resp, char **topics, size_t ntopics,
                           dlq_pos *pos, char **topic)
{
	const char *c1 = NULL, *c2, *num;
	char *end;
	long long part, off;
	*topic = NULL;
	c2 = strrchr(v, ':');
	for (const char *p = v; c2 && p < c2; p++)
		if (*p == ':')
			c1 = p;
	num = c1 ? c1 + 1 : v;
	if (!c2 || c1 == v || !isdigit((unsigned char)*num) || !isdigit((unsigned char)c2[1]))
		goto bad;
	errno = 0;
	part = strtoll(num, &end, 10);
	if (end != c2 || errno || part > INT32_MAX)
		goto bad;
	off = strtoll(c2 + 1, &end, 10);
	if (*end || errno || (double)off > OFFSET_MAX)
		goto bad;
	if (!c1 && ntopics != 1) {
		problem(resp, 422, "validation", "after",
		        "after: the plugin has %zu dead-letter topics: name one "
		        "(TOPIC:PARTITION:OFFSET)",
		        ntopics);
		return -1;
	}
	if (c1 && !(*topic = strndup(v, (size_t)(c1 - v))))
		return oom(resp);
	if (c1) {
		size_t i = 0;
		while (i < ntopics && strcmp(topics[i], *topic) != 0)
			i++;
		/* Another plugin's id (or a typing error) would page from an
		 * unrelated place, skipping or repeating this plugin's ones. */
		if (i == ntopics) {
			problem(resp, 422, "validation", "after",
			        "after: %s is not one of this plugin's dead-letter topics (%s%s)", *topic,
			        ntopics ? topics[0] : "it has none", ntopics > 1 ? ", ..." : "");
			free(*topic);
			*topic = NULL;
			return -1;
		}
	}
	pos->topic = c1 ? *topic : topics[0];
	pos->partition = (int32_t)part;
	pos->offset = off;
	return 0;
bad:
	problem(resp, 422, "validation", "after",
	        "after takes a dead letter's id: TOPIC:PARTITION:OFFSET, or PARTITION:OFFSET when "
	        "the plugin has one dead-letter topic");
	return -1;
}

static int get_dlq(host *h, evh_request *req, evh_response *resp, const char *name)
{
	char **topics = NULL, *after_topic = NULL, why[400];
	size_t ntopics = 0;
	int64_t limit;
	dlq_list l;
	dlq_pos after;
	int *flags, ok = 1, has_after, values;
	cJSON *root, *tl, *msgs;

	if (query_int(req, resp, "limit", LIST_DEFAULT, 1, LIST_MAX, &limit) ||
	    query_bool(req, resp, "values", 1, &values))
		return EVH_OK;
	if (dlq_prepare(h, resp, name, &topics, &ntopics))
		return EVH_OK;
	has_after = http_req_query(req, "after") != NULL;
	if ((has_after && parse_dlq_after(http_req_query(req, "after"), resp, topics, ntopics,
	                                  &after, &after_topic)) ||
	    /* What dlq_msg_json shows of each value: its first VALUE_SHOW_MAX
	     * bytes and the one after (a character the bound splits), not up to
	     * a thousand whole values. */
	    read_dead_letters(h, resp, topics, ntopics, has_after ? &after : NULL, NULL, 0,
	                      (size_t)limit, values ? VALUE_SHOW_MAX + 1 : 0, &l)) {
		free(after_topic);
		strv_free(topics, ntopics);
		return EVH_OK;
	}
	free(after_topic);
	flags = calloc(l.n ? l.n : 1, sizeof *flags);
	if (flags && mark_redriven(h, name, &l, flags, why, sizeof why) != 0) {
		/* "redriven": false for each would be a guess */
		free(flags);
		dlq_list_free(&l);
		strv_free(topics, ntopics);
		http_resp_header(resp, "Retry-After", "1");
		return problem(resp, 503, "unavailable", NULL, "%s", why);
	}
	if (!flags)
		ok = 0; /* "redriven" would be false for each */
	root = cJSON_CreateObject();
	jsonb_put_str(root, "plugin", name, &ok);
	tl = jsonb_put_array(root, "topics", &ok);
	for (size_t i = 0; tl && i < ntopics; i++)
		jsonb_put_str(tl, NULL, topics[i], &ok);
	msgs = jsonb_put_array(root, "messages", &ok);
	for (size_t i = 0; msgs && ok && i < l.n; i++)
		jsonb_put(msgs, NULL, dlq_msg_json(&l.v[i], flags[i], values, &ok), &ok);
	jsonb_put_bool(root, "truncated", l.truncated, &ok);
	if (l.truncated && l.n) {
		const dlq_msg *m = &l.v[l.n - 1];
		char next[400];
		snprintf(next, sizeof next, "%s:%" PRId32 ":%" PRId64, m->topic, m->partition,
		         m->offset);
		jsonb_put_str(root, "next_after", next, &ok);
	}
	free(flags);
	dlq_list_free(&l);
	strv_free(topics, ntopics);
	return reply_json(resp, 200, root, ok);
}

/* ---------------------------------------------------------------- redrive */

/* A selection from {"offsets":[...]}: each {"partition","offset"} (plus
 * "topic" when the plugin has several dead-letter topics), or a bare offset,
 * which must then name exactly one message (dead-letter topics usually have
 * several partitions, each with its own offsets). */
typedef struct pick {
	char *topic; /* NULL: any */
	int32_t partition; /* -1: any */
	int64_t offset;
	int found;
} pick;

static int parse_picks(const cJSON *body, pick **out, size_t *n, int *all, evh_response *resp)
{
	static const char *const pick_keys[] = {"topic", "partition", "offset", NULL};
	const cJSON *offs = cJSON_GetObjectItemCaseSensitive(body, "offsets"), *it;
	size_t i = 0;
	*out = NULL;
	*n = 0;
	*all = !offs || cJSON_IsNull(offs);
	if (*all)
		return 0;
	if (!cJSON_IsArray(offs) || !cJSON_GetArraySize(offs))
		return invalid(resp, "offsets", "offsets must be a non-empty array");
	*out = calloc((size_t)cJSON_GetArraySize(offs), sizeof **out);
	if (!*out)
		return oom(resp);
	cJSON_ArrayForEach(it, offs) {
		const cJSON *t = cJSON_GetObjectItemCaseSensitive(it, "topic");
		const cJSON *pa = cJSON_GetObjectItemCaseSensitive(it, "partition");
		const cJSON *o =
		    cJSON_IsNumber(it) ? it : cJSON_GetObjectItemCaseSensitive(it, "offset");
		pick *pk = &(*out)[i];
		char field[64];
		int64_t v;
		*n = ++i;
		pk->partition = -1;
		snprintf(field, sizeof field, "offsets[%zu]", i - 1);
		if (!cJSON_IsObject(it) && !cJSON_IsNumber(it)) {
			problem(resp, 422, "validation", field,
			        "%s: each entry of offsets is an offset or "
			        "{\"topic\",\"partition\",\"offset\"}",
			        field);
			return -1;
		}
		if (cJSON_IsObject(it) && only_keys(it, field, pick_keys, resp))
			return -1;
		if (t && !cJSON_IsString(t)) {
			snprintf(field, sizeof field, "offsets[%zu].topic", i - 1);
			problem(resp, 422, "validation", field, "%s must be a string", field);
			return -1;
		}
		if (json_int(o, 0, OFFSET_MAX, &v)) {
			snprintf(field, sizeof field,
			         cJSON_IsNumber(it) ? "offsets[%zu]" : "offsets[%zu].offset", i - 1);
			problem(resp, 422, "validation", field,
			        "%s must be an integer from 0 to %.0f", field, OFFSET_MAX);
			return -1;
		}
		pk->offset = v;
		if (pa) {
			if (json_int(pa, 0, INT32_MAX, &v)) {
				snprintf(field, sizeof field, "offsets[%zu].partition", i - 1);
				problem(resp, 422, "validation", field,
				        "%s must be an integer from 0 to %d", field, INT32_MAX);
				return -1;
			}
			pk->partition = (int32_t)v;
		}
		if (t && !(pk->topic = strdup(t->valuestring)))
			return oom(resp);
	}
	return 0;
}

static void picks_free(pick *v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		free(v[i].topic);
	free(v);
}

static int pick_matches(const pick *pk, const dlq_msg *m)
{
	return pk->offset == m->offset && (pk->partition < 0 || pk->partition == m->partition) &&
	       (!pk->topic || !strcmp(pk->topic, m->topic));
}

/* A pick that matches more than one message is refused (422), whole; the
 * answer's "ambiguous" names the pick as given (its index in offsets) and
 * "candidates" each dead letter it matches, as {"topic", "partition",
 * "offset"}: a client names one of them without reading the topics. */
static int picks_unambiguous(const pick *v, size_t n, const dlq_list *l, evh_response *resp)
{
	for (size_t i = 0; i < n; i++) {
		size_t hits = 0;
		char detail[512];
		cJSON *extra, *cands;
		int ok = 1;
		for (size_t j = 0; j < l->n; j++)
			hits += pick_matches(&v[i], &l->v[j]);
		if (hits <= 1)
			continue;
		snprintf(detail, sizeof detail,
		         "offset %" PRId64 " is in %zu dead-letter partitions; name one: "
		         "{\"partition\": P, \"offset\": %" PRId64 "}",
		         v[i].offset, hits, v[i].offset);
		extra = cJSON_CreateObject();
		jsonb_put_num(extra, "ambiguous", (double)i, &ok);
		cands = jsonb_put_array(extra, "candidates", &ok);
		for (size_t j = 0; cands && j < l->n; j++) {
			cJSON *o;
			if (!pick_matches(&v[i], &l->v[j]) || !(o = jsonb_put_object(cands, NULL, &ok)))
				continue;
			jsonb_put_str(o, "topic", l->v[j].topic, &ok);
			jsonb_put_num(o, "partition", l->v[j].partition, &ok);
			jsonb_put_num(o, "offset", (double)l->v[j].offset, &ok);
		}
		if (!ok) { /* the text alone, rather than a list missing some */
			cJSON_Delete(extra);
			extra = NULL;
		}
		http_resp_problem_with(resp, 422, "validation", NULL, detail, "offsets", extra);
		return -1;
	}
	return 0;
}

static int picked(pick *v, size_t n, int all, const dlq_msg *m)
{
	int hit = all;
	for (size_t i = 0; i < n; i++)
		if (pick_matches(&v[i], m)) {
			v[i].found = 1;
			hit = 1;
		}
	return hit;
}

/* Record what went out in plugin `p`'s database (pinned by the caller from
 * before the send); returns how many could not be recorded. */
static size_t record_redriven(evh_plugin *p, const dlq_msg *const *sel, size_t n,
                              const dlq_redrive_result *res)
{
	size_t lost = 0, k = 0;
	store_redriven *rows = calloc(n ? n : 1, sizeof *rows);
	for (size_t i = 0; rows && i < n; i++) {
		if (res[i].outcome != DLQ_REDRIVEN)
			continue;
		rows[k++] = (store_redriven){sel[i]->topic,     res[i].to_topic,
		                             sel[i]->partition, res[i].to_partition,
		                             sel[i]->offset,    sel[i]->timestamp_ms,
		                             res[i].to_offset};
	}
	/* One transaction for the chunk: a crash between the broker's
	 * acknowledgements and this leaves them all to be sent again by the
	 * next redrive, but for a moment, not a sync per dead letter. */
	store_thread_error_clear();
	if (!rows || !p->store)
		for (size_t i = 0; i < n; i++)
			lost += res[i].outcome == DLQ_REDRIVEN;
	else
		lost = store_dlq_mark_redriven_all(p->store, rows, k);
	free(rows);
	if (lost)
		log_warn(ADMIN_LOG,
		         "%s: %zu redriven dead letter(s) could not be recorded%s%s; a later redrive "
		         "may send them again (the inbox skips what was handled)",
		         p->name, lost, store_thread_error()[0] ? ": " : "", store_thread_error());
	return lost;
}

static cJSON *redrive_entry(const dlq_msg *m, const char *outcome, const char *to_topic,
                            int32_t to_partition, int64_t to_offset, const char *error, int *ok)
{
	cJSON *o = cJSON_CreateObject();
	jsonb_put_str(o, "topic", m->topic, ok);
	jsonb_put_num(o, "partition", m->partition, ok);
	jsonb_put_num(o, "offset", (double)m->offset, ok);
	jsonb_put_str(o, "outcome", outcome, ok);
	if (to_topic && *to_topic)
		jsonb_put_str(o, "to_topic", to_topic, ok);
	if (to_partition >= 0)
		jsonb_put_num(o, "to_partition", to_partition, ok);
	if (to_offset >= 0)
		jsonb_put_num(o, "to_offset", (double)to_offset, ok);
	if (error && *error)
		jsonb_put_str(o, "error", error, ok);
	return o;
}

struct redrive_job {
	const char *name;
	dlq_list l;
	int *done_before;       /* per l.v[i]: redriven by an earlier call */
	const dlq_msg **sel;    /* chosen and not redriven yet */
	dlq_redrive_result *res;
	size_t nsel;
	cJSON *results;
	int ok; /* results has every entry (jsonb.h) */
	size_t counts[3]; /* redriven, skipped, failed */
	size_t not_listed[3]; /* of those, left out of results (REDRIVE_LIST_*) */
	size_t sent;       /* sent or failed by dlq_redrive, all chunks */
	size_t unrecorded; /* redriven but not recorded */
	int forgot;        /* the records of gone dead letters were forgotten */
	int more;          /* all: stopped before the end (truncated) */
	char stopped[512]; /* all: why, when a read failed part way */
	char next_after[400]; /* all, more: the position to go on after */
};

/* Count one dead letter of outcome `o`; 1 when results is to list it. */
static int redrive_count(struct redrive_job *j, dlq_outcome o)
{
	static const size_t listed_max[] = {SIZE_MAX, REDRIVE_LIST_SKIPPED, REDRIVE_LIST_FAILED};
	if (++j->counts[o] <= listed_max[o])
		return 1;
	j->not_listed[o]++;
	return 0;
}

/* Choose from j->l, from index `from` on, until `room` are chosen (j->sel);
 * returns the index after the last one gone through. */
static size_t redrive_select(struct redrive_job *j, pick *picks, size_t npicks, int all,
                             size_t from, size_t room)
{
	size_t i;
	j->nsel = 0;
	for (i = from; i < j->l.n && j->nsel < room; i++) {
		const dlq_msg *m = &j->l.v[i];
		if (!picked(picks, npicks, all, m))
			continue;
		if (j->done_before[i]) {
			if (redrive_count(j, DLQ_SKIPPED))
				jsonb_put(j->results, NULL,
				          redrive_entry(m, "skipped", NULL, -1, -1, "already redriven",
				                        &j->ok),
				          &j->ok);
			continue;
		}
		j->sel[j->nsel++] = m;
	}
	return i;
}

static void redrive_report(struct redrive_job *j)
{
	static const char *const names[] = {"redriven", "skipped", "failed"};
	for (size_t i = 0; i < j->nsel; i++) {
		const dlq_redrive_result *r = &j->res[i];
		if (redrive_count(j, r->outcome))
			jsonb_put(j->results, NULL,
			          redrive_entry(j->sel[i], names[r->outcome], r->to_topic,
			                        r->to_partition, r->to_offset, r->error, &j->ok),
			          &j->ok);
	}
}

static int redrive_answer(evh_response *resp, struct redrive_job *j, const pick *picks,
                          size_t npicks, size_t unrecorded)
{
	cJSON *root = cJSON_CreateObject(), *nf;
	char done[160];
	int ok = j->ok;
	jsonb_put_str(root, "plugin", j->name, &ok);
	jsonb_put_num(root, "redriven", (double)j->counts[0], &ok);
	jsonb_put_num(root, "skipped", (double)j->counts[1], &ok);
	jsonb_put_num(root, "failed", (double)j->counts[2], &ok);
	if (unrecorded)
		jsonb_put_num(root, "unrecorded", (double)unrecorded, &ok);
	jsonb_put(root, "results", j->results, &ok);
	j->results = NULL;
	jsonb_put_num(root, "skipped_not_listed", (double)j->not_listed[DLQ_SKIPPED], &ok);
	jsonb_put_num(root, "failed_not_listed", (double)j->not_listed[DLQ_FAILED], &ok);
	nf = jsonb_put_array(root, "not_found", &ok);
	for (size_t i = 0; nf && i < npicks; i++)
		if (!picks[i].found)
			jsonb_put_num(nf, NULL, (double)picks[i].offset, &ok);
	/* The same, each as it was asked for (not_found's bare offsets cannot
	 * tell 0:7 from 3:7). */
	nf = jsonb_put_array(root, "not_found_at", &ok);
	for (size_t i = 0; nf && i < npicks; i++) {
		cJSON *o;
		if (picks[i].found || !(o = jsonb_put_object(nf, NULL, &ok)))
			continue;
		if (picks[i].topic)
			jsonb_put_str(o, "topic", picks[i].topic, &ok);
		if (picks[i].partition >= 0)
			jsonb_put_num(o, "partition", (double)picks[i].partition, &ok);
		jsonb_put_num(o, "offset", (double)picks[i].offset, &ok);
	}
	jsonb_put_bool(root, "truncated", j->more, &ok);
	if (j->more && *j->next_after)
		jsonb_put_str(root, "next_after", j->next_after, &ok);
	if (*j->stopped)
		jsonb_put_str(root, "stopped", j->stopped, &ok);
	snprintf(done, sizeof done,
	         "the redrive ran: %zu redriven, %zu skipped, %zu failed (GET the dead letters "
	         "for each one's state)",
	         j->counts[0], j->counts[1], j->counts[2]);
	return reply_json_done(resp, 200, root, ok, done);
}

/* A redrive that cannot go on (`why`): 503 when nothing was done yet (-1,
 * answered), else 0 with the run cut there, saying why in j->stopped. */
static int redrive_halt(evh_response *resp, struct redrive_job *j, const char *why)
{
	log_warn(ADMIN_LOG, "%s: redrive stopped: %s", j->name, why);
	if (!j->counts[0] && !j->counts[1] && !j->counts[2]) {
		http_resp_header(resp, "Retry-After", "1");
		problem(resp, 503, "unavailable", NULL, "%s; nothing was sent", why);
		return -1;
	}
	snprintf(j->stopped, sizeof j->stopped, "%s", why);
	j->more = 1;
	return 0;
}

/* Forget the records of dead letters the topics no longer hold: those below
 * each partition's log start as the redrive's first read saw it (every
 * partition's, or the read failed). Sound here: the plugin's redrives run
 * one at a time (redrive_claim_wait), so each record was made before that
 * read, of a dead letter below the start it saw only if that one is gone for
 * good. A listing runs beside a redrive and forgets nothing: a record made
 * after its read, of a topic deleted and made again meanwhile (numbered from
 * 0 again), could be below the start that read saw while its dead letter is
 * there. Best effort: what is kept, a later redrive forgets. */
static void forget_gone(host *h, struct redrive_job *j)
{
	dlq_start *v = calloc(j->l.nlows ? j->l.nlows : 1, sizeof *v);
	evh_plugin *p = NULL;
	int64_t total = 0, n = 0;
	int more = 1, rc = v ? EVH_OK : EVH_ENOMEM;

	j->forgot = 1;
	store_thread_error_clear();
	for (size_t i = 0; v && i < j->l.nlows; i++)
		v[i] = (dlq_start){j->l.lows[i].topic, j->l.lows[i].partition, j->l.lows[i].lo};
	if (!rc && j->l.nlows && (p = host_pin_plugin(h, j->name)) && p->store)
		for (int b = 0; !rc && more && b < FORGET_BATCHES && !atomic_load(&h->stopping);
		     b++) {
			rc = store_dlq_forget_gone(p->store, v, j->l.nlows, FORGET_BATCH, &n, &more);
			total += n;
		}
	if (p)
		host_unpin_plugin(h, p);
	free(v);
	if (total)
		log_info(ADMIN_LOG,
		         "%s: forgot %" PRId64 " redriven dead letter(s) no longer in their topic "
		         "(below its log start)",
		         j->name, total);
	if (rc)
		log_warn(ADMIN_LOG,
		         "%s: the records of redriven dead letters no longer in their topic could "
		         "not be forgotten (%s%s%s); a later redrive forgets them",
		         j->name, host_strerror(rc), *store_thread_error() ? ": " : "",
		         store_thread_error());
}

/* Redrive what was chosen of j->l (each pick, or all), adding to the
 * results. All: no more than REDRIVE_MAX sent by the request, so it may
 * stop part way; *end is the index after the last message gone through
 * (j->l.n: the whole chunk). It stops too, saying why in j->stopped, when
 * the daemon begins to stop, and when which were redriven before cannot
 * be read (then this chunk sends nothing). -1 with the answer made: out of
 * memory, or that record unread before anything was sent (503). */
static int redrive_chunk(host *h, evh_response *resp, struct redrive_job *j, pick *picks,
                         size_t npicks, int all, size_t *end)
{
	char why[400];
	size_t n = j->l.n ? j->l.n : 1, next = 0;
	free(j->done_before);
	free(j->sel);
	free(j->res);
	j->done_before = calloc(n, sizeof *j->done_before);
	j->sel = calloc(n, sizeof *j->sel);
	j->res = calloc(n, sizeof *j->res);
	j->nsel = 0;
	if (!j->done_before || !j->sel || !j->res || !j->results)
		return oom(resp);
	*end = 0;
	if (mark_redriven(h, j->name, &j->l, j->done_before, why, sizeof why) != 0)
		return redrive_halt(resp, j, why);
	if (!j->forgot)
		forget_gone(h, j);
	/* In rounds: those dlq_redrive skips leave room for more. */
	while (next < j->l.n && (!all || j->sent < REDRIVE_MAX)) {
		evh_plugin *p;
		/* What is sent is recorded in the round: the stop's guard does not
		 * end the process between the broker's acknowledgement and it. */
		if (atomic_load(&h->stopping)) {
			snprintf(j->stopped, sizeof j->stopped, "the daemon is stopping");
			j->more = 1;
			break;
		}
		/* Pinned from before the send until it is recorded: a reload that
		 * restarts the plugin meanwhile takes it out of the list at once,
		 * and a record made then found no plugin, leaving a round redriven
		 * but unrecorded (sent again by the next redrive of all). The
		 * reload's drain waits for the pin, which the send's
		 * REDRIVE_ACK_TIMEOUT_MS bounds; the send waits for nothing the
		 * drain holds. Not pinned here: it is being restarted or stopped. */
		if (!(p = host_pin_plugin(h, j->name)) || !p->store) {
			if (p)
				host_unpin_plugin(h, p);
			snprintf(why, sizeof why, "plugin '%s' is not running (a reload is restarting "
			                          "or stopping it?)", j->name);
			if (redrive_halt(resp, j, why))
				return -1;
			break;
		}
		next = redrive_select(j, picks, npicks, all, next,
		                      all ? REDRIVE_MAX - j->sent : SIZE_MAX);
		if (j->nsel)
			dlq_redrive(h->kafka, j->sel, j->nsel, REDRIVE_ACK_TIMEOUT_MS, j->res);
		redrive_report(j);
		j->unrecorded += record_redriven(p, j->sel, j->nsel, j->res);
		host_unpin_plugin(h, p);
		/* Those no redrive can send (skipped: not a dead letter, its value
		 * truncated) do not count: a run of all alone would stop at the
		 * same place every time behind REDRIVE_MAX of them. */
		for (size_t i = 0; i < j->nsel; i++)
			j->sent += j->res[i].outcome != DLQ_SKIPPED;
	}
	*end = next;
	return 0;
}

/* Every dead letter not redriven yet: the topics read REDRIVE_CHUNK at a
 * time, in order, each chunk after the last message of the one before, so
 * memory stays bounded however many there are; at most REDRIVE_MAX sent
 * per request, which may stop part way through a chunk (then truncated,
 * next_after the last message gone through: the next request goes on
 * after it, and one without after skips those sent, as they are recorded).
 * A read that fails after some were sent ends the
 * request with what was done (truncated, and the reason in "stopped"). */
static int redrive_all(host *h, evh_response *resp, struct redrive_job *j, char **topics,
                       size_t ntopics, const dlq_pos *after)
{
	char cursor_topic[256] = "";
	dlq_pos cursor = {cursor_topic, 0, 0};
	int first = 1, have_cursor = after != NULL, answered = 0;
	int64_t scan_end = clock_mono_ms() + REDRIVE_SCAN_MS;
	/* Up to where each partition ended at the first read: a copy that fails
	 * again is dead-lettered after it, and read on into, this run would
	 * send it again, and again (10000 sends of a few poison messages). */
	dlq_ends ends = {0};
	if (after) {
		snprintf(cursor_topic, sizeof cursor_topic, "%s", after->topic);
		cursor.partition = after->partition;
		cursor.offset = after->offset;
	}
	for (;;) {
		char err[512];
		const dlq_msg *last;
		size_t end;
		int cut;
		int rc = dlq_read_bounded(h->kafka, (const char *const *)topics, ntopics,
		                          first && !after ? NULL : &cursor, &ends, REDRIVE_CHUNK,
		                          DLQ_READ_TIMEOUT_MS, &j->l, err, sizeof err);
		if (rc && first) {
			log_warn(ADMIN_LOG, "reading dead letters failed: %s", err);
			problem(resp, rc == EVH_ENOMEM ? 500 : 502,
			        rc == EVH_ENOMEM ? "internal" : "kafka", NULL, "%s", err);
			answered = 1;
			break;
		}
		if (rc) {
			log_warn(ADMIN_LOG, "%s: redrive stopped: reading dead letters failed: %s",
			         j->name, err);
			snprintf(j->stopped, sizeof j->stopped, "%s", err);
			j->more = 1;
			break;
		}
		first = 0;
		if (redrive_chunk(h, resp, j, NULL, 0, 1, &end)) {
			answered = 1;
			break;
		}
		cut = end < j->l.n; /* REDRIVE_MAX reached, or stopped, before the chunk's end */
		if (!cut && (!j->l.truncated || !j->l.n)) {
			dlq_ends_free(&ends);
			return 0;
		}
		if (end) {
			last = &j->l.v[end - 1];
			snprintf(cursor_topic, sizeof cursor_topic, "%s", last->topic);
			cursor.partition = last->partition;
			cursor.offset = last->offset;
			have_cursor = 1;
		}
		dlq_list_free(&j->l);
		if (cut || j->sent >= REDRIVE_MAX || clock_mono_ms() >= scan_end ||
		    atomic_load(&h->stopping)) {
			if (atomic_load(&h->stopping) && !*j->stopped)
				snprintf(j->stopped, sizeof j->stopped, "the daemon is stopping");
			j->more = 1;
			break;
		}
	}
	dlq_ends_free(&ends);
	if (answered)
		return -1;
	/* Where the next request may go on: every message up to here was sent,
	 * or skipped, or failed (a request without after tries those again). */
	if (have_cursor)
		snprintf(j->next_after, sizeof j->next_after, "%s:%" PRId32 ":%" PRId64, cursor.topic,
		         cursor.partition, cursor.offset);
	return 0;
}

static int redrive_run(host *h, evh_response *resp, struct redrive_job *j, char **topics,
                       size_t ntopics, pick *picks, size_t npicks, int all,
                       const dlq_pos *after)
{
	dlq_pos *at = NULL;
	size_t end;
	j->results = cJSON_CreateArray();
	j->ok = 1;
	if (!j->results) {
		oom(resp);
		return EVH_OK;
	}
	if (all) {
		if (redrive_all(h, resp, j, topics, ntopics, after))
			return EVH_OK;
	} else {
		/* Each one read where it is, not found by reading from the start. */
		at = calloc(npicks, sizeof *at);
		if (!at) {
			oom(resp);
			return EVH_OK;
		}
		for (size_t i = 0; i < npicks; i++)
			at[i] = (dlq_pos){picks[i].topic, picks[i].partition, picks[i].offset};
		if (read_dead_letters(h, resp, topics, ntopics, NULL, at, npicks, 0, SIZE_MAX, &j->l) ||
		    picks_unambiguous(picks, npicks, &j->l, resp)) {
			free(at);
			return EVH_OK;
		}
		/* Each pick read is found, whether or not the run gets to it: one
		 * that a stop cuts off is under "stopped", not "not_found". */
		for (size_t i = 0; i < j->l.n; i++)
			(void)picked(picks, npicks, 0, &j->l.v[i]);
		if (redrive_chunk(h, resp, j, picks, npicks, 0, &end)) {
			free(at);
			return EVH_OK;
		}
		free(at);
	}
	log_info(ADMIN_LOG, "%s: redrive: %zu redriven, %zu skipped, %zu failed", j->name,
	         j->counts[0], j->counts[1], j->counts[2]);
	return redrive_answer(resp, j, picks, npicks, j->unrecorded);
}

/* Wait until no other request redrives plugin `c->name`, then claim it:
 * 0, or -1 with the answer made when the daemon stops meanwhile. */
static int redrive_claim_wait(host *h, struct redrive_claim *c, evh_response *resp)
{
	struct admin *a = h->admin;
	int taken, said = 0;
	pthread_mutex_lock(&a->redrive_mu);
	for (;;) {
		taken = 0;
		for (const struct redrive_claim *o = a->redriving; o && !taken; o = o->next)
			taken = !strcmp(o->name, c->name);
		if (!taken || atomic_load(&h->stopping))
			break;
		if (!said++)
			log_debug(ADMIN_LOG, "%s: redrive waits for another redrive of it to end",
			          c->name);
		struct timespec until = clock_after_ms(CLOCK_MONOTONIC, RELOAD_SLICE_MS);
		pthread_cond_timedwait(&a->redrive_cv, &a->redrive_mu, &until);
	}
	if (!taken) {
		c->next = a->redriving;
		a->redriving = c;
	}
	pthread_mutex_unlock(&a->redrive_mu);
	if (!taken)
		return 0;
	http_resp_header(resp, "Retry-After", "1");
	problem(resp, 503, "unavailable", NULL,
	        "the daemon is stopping (this request waited for another redrive of plugin "
	        "'%s'); nothing was sent",
	        c->name);
	return -1;
}

static void redrive_claim_end(host *h, struct redrive_claim *c)
{
	struct admin *a = h->admin;
	pthread_mutex_lock(&a->redrive_mu);
	for (struct redrive_claim **o = &a->redriving; *o; o = &(*o)->next)
		if (*o == c) {
			*o = c->next;
			break;
		}
	pthread_cond_broadcast(&a->redrive_cv);
	pthread_mutex_unlock(&a->redrive_mu);
}

static int post_redrive(host *h, evh_request *req, evh_response *resp, const char *name)
{
	struct redrive_claim claim = {name, NULL};
	struct redrive_job j;
	char **topics = NULL;
	size_t ntopics = 0, npicks = 0;
	pick *picks = NULL;
	int all = 0, rc = EVH_OK;
	static const char *const keys[] = {"offsets", "after", NULL};
	cJSON *body = body_object(req, resp, keys), *after_v;
	char *after_topic = NULL;
	dlq_pos after;

	memset(&j, 0, sizeof j);
	j.name = name;
	if (!body)
		return EVH_OK;
	after_v = cJSON_GetObjectItemCaseSensitive(body, "after");
	if (parse_picks(body, &picks, &npicks, &all, resp))
		goto out;
	if (after_v && (!cJSON_IsString(after_v) || !all)) {
		problem(resp, 422, "validation", "after",
		        !all ? "after goes with a redrive of all (no offsets), not with offsets"
		             : "after takes a dead letter's id, as a string: "
		               "\"TOPIC:PARTITION:OFFSET\"");
		goto out;
	}
	if (dlq_prepare(h, resp, name, &topics, &ntopics) ||
	    (after_v && parse_dlq_after(after_v->valuestring, resp, topics, ntopics, &after,
	                                &after_topic)))
		goto out;
	if (redrive_claim_wait(h, &claim, resp))
		goto out;
	rc = redrive_run(h, resp, &j, topics, ntopics, picks, npicks, all,
	                 after_v ? &after : NULL);
	redrive_claim_end(h, &claim);
out:
	free(after_topic);
	cJSON_Delete(body);
	cJSON_Delete(j.results);
	free(j.done_before);
	free(j.sel);
	free(j.res);
	dlq_list_free(&j.l);
	picks_free(picks, npicks);
	strv_free(topics, ntopics);
	return rc;
}

/* ----------------------------------------------------------------- replay */

struct replay_args {
	replay_request req;
	const char **topics;
	replay_pos *offsets;
	size_t noffsets;
};

static void replay_args_free(struct replay_args *a)
{
	free(a->topics);
	for (size_t i = 0; i < a->noffsets; i++)
		free(a->offsets[i].topic);
	free(a->offsets);
}

/* {"offsets": {topic: {partition: offset, ...}, ...}} */
static int parse_offsets(const cJSON *from, struct replay_args *a, evh_response *resp)
{
	const cJSON *offs = cJSON_GetObjectItemCaseSensitive(from, "offsets"), *t, *p;
	size_t n = 0;
	if (!cJSON_IsObject(offs))
		goto bad;
	cJSON_ArrayForEach(t, offs) {
		if (!cJSON_IsObject(t))
			goto bad;
		n += (size_t)cJSON_GetArraySize(t);
	}
	if (!n)
		goto bad;
	a->offsets = calloc(n, sizeof *a->offsets);
	if (!a->offsets)
		return oom(resp);
	cJSON_ArrayForEach(t, offs) cJSON_ArrayForEach(p, t) {
		replay_pos *r = &a->offsets[a->noffsets];
		char *end;
		long long part;
		int64_t off;
		errno = 0;
		part = isdigit((unsigned char)*p->string) ? strtoll(p->string, &end, 10) : -1;
		/* Written plainly: "00" beside "0" would name one partition twice. */
		if (part < 0 || *end || errno || part > INT32_MAX ||
		    (p->string[0] == '0' && p->string[1])) {
			problem(resp, 422, "validation", "from.offsets",
			        "from.offsets: topic %s: partition '%s' must be an integer from 0 "
			        "to %d, without leading zeros",
			        t->string, p->string, INT32_MAX);
			return -1;
		}
		if (json_int(p, 0, OFFSET_MAX, &off)) {
			problem(resp, 422, "validation", "from.offsets",
			        "from.offsets: topic %s partition %lld: the offset must be an "
			        "integer from 0 to %.0f",
			        t->string, part, OFFSET_MAX);
			return -1;
		}
		if (!(r->topic = strdup(t->string)))
			return oom(resp);
		r->partition = (int32_t)part;
		r->offset = off;
		a->noffsets++;
	}
	a->req.from = REPLAY_OFFSETS;
	a->req.offsets = a->offsets;
	a->req.noffsets = a->noffsets;
	return 0;
bad:
	return invalid(resp, "from",
	               "from.offsets must be {\"topic\": {\"partition\": offset, ...}, ...} with "
	               "at least one offset");
}

static int parse_replay(const cJSON *body, struct replay_args *a, evh_response *resp)
{
	const cJSON *from = cJSON_GetObjectItemCaseSensitive(body, "from");
	const cJSON *topics = cJSON_GetObjectItemCaseSensitive(body, "topics"), *t;
	const cJSON *keep = cJSON_GetObjectItemCaseSensitive(body, "keep_inbox");
	memset(a, 0, sizeof *a);
	if (keep && !cJSON_IsBool(keep))
		return invalid(resp, "keep_inbox", "keep_inbox must be true or false");
	a->req.keep_inbox = cJSON_IsTrue(keep);
	if (cJSON_IsString(from) && !strcmp(from->valuestring, "beginning"))
		a->req.from = REPLAY_BEGINNING;
	else if (cJSON_IsString(from) && !rfc3339_parse_ms(from->valuestring, &a->req.time_ms)) {
		a->req.from = REPLAY_TIME;
		/* Before 1970, before every event: from the first (as 0 asks).
		 * Passed on, -1 and -2 are Kafka's "latest" and "earliest", -3
		 * its "max timestamp": 23:59:59.999 the day before rewound
		 * nothing. */
		if (a->req.time_ms < 0)
			a->req.time_ms = 0;
	} else if (cJSON_IsObject(from) && topics)
		return invalid(resp, "topics",
		               "topics goes with from \"beginning\" or a time: from.offsets names "
		               "its own topics");
	else if (cJSON_IsObject(from))
		return only_keys(from, "from", (const char *const[]){"offsets", NULL}, resp) ||
		       parse_offsets(from, a, resp);
	else
		return invalid(resp, "from",
		               "from must be \"beginning\", an RFC 3339 time or "
		               "{\"offsets\": {...}}");
	if (!topics || cJSON_IsNull(topics))
		return 0;
	if (!cJSON_IsArray(topics) || !cJSON_GetArraySize(topics))
		return invalid(resp, "topics", "topics must be a non-empty array of topic names");
	a->topics = calloc((size_t)cJSON_GetArraySize(topics), sizeof *a->topics);
	if (!a->topics)
		return oom(resp);
	cJSON_ArrayForEach(t, topics) {
		if (!cJSON_IsString(t))
			return invalid(resp, "topics", "topics must be strings");
		a->topics[a->req.ntopics++] = t->valuestring;
	}
	a->req.topics = a->topics;
	return 0;
}

static int replay_status(int rc)
{
	switch (rc) {
	case EVH_EINVAL: return 422;
	case EVH_ESTATE:
	case EVH_EBUSY: return 409;
	case EVH_ENOMEM: return 500;
	default: return 502;
	}
}

/* The problem type of replay_status's answer. */
static const char *replay_problem_type(int status)
{
	switch (status) {
	case 422: return "validation";
	case 409: return "conflict";
	case 500: return "internal";
	default: return "kafka";
	}
}

static int replay_answer(evh_response *resp, const char *name, const replay_result *res)
{
	cJSON *root = cJSON_CreateObject(), *parts;
	char done[160];
	int ok = 1;
	jsonb_put_str(root, "plugin", name, &ok);
	parts = jsonb_put_array(root, "partitions", &ok);
	for (size_t i = 0; parts && i < res->nparts; i++) {
		cJSON *o = jsonb_put_object(parts, NULL, &ok);
		jsonb_put_str(o, "topic", res->parts[i].topic, &ok);
		jsonb_put_num(o, "partition", res->parts[i].partition, &ok);
		jsonb_put_num(o, "offset", (double)res->parts[i].offset, &ok);
		if (res->parts[i].previous >= 0)
			jsonb_put_num(o, "previous", (double)res->parts[i].previous, &ok);
		else
			jsonb_put_str(o, "previous", NULL, &ok);
	}
	jsonb_put_num(root, "inbox_deleted", (double)res->inbox_deleted, &ok);
	snprintf(done, sizeof done,
	         "the replay was applied: %zu partition(s) rewound, %" PRId64
	         " inbox record(s) deleted",
	         res->nparts, (int64_t)res->inbox_deleted);
	return reply_json_done(resp, 200, root, ok, done);
}

static int post_replay(host *h, evh_request *req, evh_response *resp, const char *name)
{
	struct replay_args a;
	replay_result res;
	char err[512] = "";
	evh_plugin *p;
	int rc = EVH_OK;
	static const char *const keys[] = {"from", "topics", "keep_inbox", NULL};
	cJSON *body = body_object(req, resp, keys);

	if (!body)
		return EVH_OK;
	if (parse_replay(body, &a, resp)) {
		replay_args_free(&a);
		cJSON_Delete(body);
		return EVH_OK;
	}
	memset(&res, 0, sizeof res);
	pthread_mutex_lock(&h->plugins_lock);
	if (!(p = find_plugin_locked(h, name))) {
		answer_not_running_locked(h, resp, name);
		pthread_mutex_unlock(&h->plugins_lock);
	} else if ((rc = consumer_replay(p, &a.req, &res, REPLAY_TIMEOUT_MS,
	                                 &h->plugins_lock, /* unlocked once it has the request */
	                                 err, sizeof err)) == EVH_ENOTFOUND)
		problem(resp, 404, "not-found", NULL, "no plugin named '%s'", name);
	else if (rc != EVH_OK)
		problem(resp, replay_status(rc), replay_problem_type(replay_status(rc)), NULL, "%s",
		        err);
	else
		replay_answer(resp, name, &res);
	if (rc == EVH_EBUSY)
		http_resp_header(resp, "Retry-After", "1");
	replay_result_free(&res);
	replay_args_free(&a);
	cJSON_Delete(body);
	return EVH_OK;
}

/* ----------------------------------------------------------------- events */

static size_t events_bytes(const cJSON *arr)
{
	const cJSON *ev;
	size_t n = 0;
	cJSON_ArrayForEach(ev, arr)
		n += store_event_bytes(ev);
	return n;
}

/* The plugin's events after `after`; *full set when there were `limit`,
 * or STORE_EVENTS_PAGE_BYTES of data (there may be more). Pinned, not under
 * plugins_lock: reading a large log must not hold up readiness, metrics or
 * a reload's list. EVH_ENOTFOUND when it is gone meanwhile (a reload took
 * it out of the list). */
static int add_plugin_events(host *h, cJSON *out, const char *name, const char *aggregate,
                             int64_t after, int64_t limit, int *full)
{
	evh_plugin *p = host_pin_plugin(h, name);
	cJSON *arr = NULL, *ev;
	int rc;
	if (!p)
		return EVH_ENOTFOUND;
	rc = p->store ? store_events_list(p->store, aggregate, after, (int)limit, &arr) : EVH_OK;
	host_unpin_plugin(h, p);
	if (rc || !arr)
		return rc;
	if (cJSON_GetArraySize(arr) >= limit || events_bytes(arr) >= STORE_EVENTS_PAGE_BYTES)
		*full = 1;
	while ((ev = cJSON_DetachItemFromArray(arr, 0))) {
		int ok = 1;
		jsonb_put_str(ev, "plugin", name, &ok);
		jsonb_put(out, NULL, ev, &ok);
		if (!ok) {
			cJSON_Delete(arr);
			return EVH_ENOMEM;
		}
	}
	cJSON_Delete(arr);
	return EVH_OK;
}

static int event_cmp(const void *a, const void *b)
{
	const cJSON *x = *(const cJSON *const *)a, *y = *(const cJSON *const *)b;
	const char *tx = cJSON_GetStringValue(cJSON_GetObjectItem(x, "time"));
	const char *ty = cJSON_GetStringValue(cJSON_GetObjectItem(y, "time"));
	int c = strcmp(tx ? tx : "", ty ? ty : "");
	if (c)
		return c;
	c = strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(x, "plugin")),
	           cJSON_GetStringValue(cJSON_GetObjectItem(y, "plugin")));
	if (c)
		return c;
	return cJSON_GetNumberValue(cJSON_GetObjectItem(x, "seq")) <
	               cJSON_GetNumberValue(cJSON_GetObjectItem(y, "seq"))
	           ? -1
	           : 1;
}

/* Events of several plugins: ordered by event time, cut to `limit` and,
 * as each plugin's read was, to STORE_EVENTS_PAGE_BYTES (*full then). With
 * the same bound, the page never passes a plugin whose read it cut: what
 * comes after that plugin's last event read holds its bytes before it. */
static cJSON *sorted_events(cJSON *all, int64_t limit, int *full)
{
	size_t bytes = 0;
	int n = cJSON_GetArraySize(all);
	cJSON **v = malloc((size_t)(n > 0 ? n : 1) * sizeof *v), *out = cJSON_CreateArray();
	if (!v || !out) {
		free(v);
		cJSON_Delete(out);
		return NULL;
	}
	for (int i = 0; i < n; i++)
		v[i] = cJSON_DetachItemFromArray(all, 0);
	qsort(v, (size_t)n, sizeof *v, event_cmp);
	for (int i = 0; i < n; i++) {
		if (i < limit && bytes < STORE_EVENTS_PAGE_BYTES) {
			bytes += store_event_bytes(v[i]);
			cJSON_AddItemToArray(out, v[i]);
		} else {
			cJSON_Delete(v[i]);
			*full = 1;
		}
	}
	free(v);
	return out;
}

/* Whether plugin `name` is one a reload restarts or starts (named_off_sets),
 * under plugins_lock: it runs again in a moment, and its events with it. */
static int coming_back_locked(const host *h, const char *name)
{
	struct named_off off[NAMED_OFF];
	named_off_sets(h, off);
	for (size_t k = OFF_RESTARTING; k <= OFF_STARTING; k++)
		for (size_t i = 0; i < off[k].n; i++)
			if (!name || !strcmp(off[k].names[i], name))
				return 1;
	return 0;
}

/* The names of the running plugins with a store (`only`: that one alone),
 * taken under plugins_lock, to be read pinned one by one: *n of them in
 * *names (NULL when none); -1 with the answer made when there is nothing
 * whole to read: `only` is not running (answer_not_running_locked: 503
 * while a reload restarts or starts it), or, for all, a reload restarts or
 * starts one (503 naming it: an answer without its events would look
 * whole), or out of memory. */
static int plugins_with_store(host *h, evh_response *resp, const char *only,
                              char (**names)[PLUGIN_NAME_MAX + 1], size_t *n)
{
	struct named_off off[NAMED_OFF];
	int rc = 0;
	*n = 0;
	pthread_mutex_lock(&h->plugins_lock);
	*names = calloc(h->nplugins ? h->nplugins : 1, sizeof **names);
	for (size_t i = 0; *names && i < h->nplugins; i++) {
		const evh_plugin *p = h->plugins[i];
		if ((!only || !strcmp(only, p->name)) && p->store)
			snprintf((*names)[(*n)++], sizeof **names, "%s", p->name);
	}
	named_off_sets(h, off);
	if (!*names) {
		rc = oom(resp);
	} else if (only && !*n && !find_plugin_locked(h, only)) {
		answer_not_running_locked(h, resp, only);
		rc = -1;
	} else if (!only && coming_back_locked(h, NULL)) {
		answer_not_running_locked(h, resp, off[OFF_RESTARTING].n
		                                       ? off[OFF_RESTARTING].names[0]
		                                       : off[OFF_STARTING].names[0]);
		rc = -1;
	}
	pthread_mutex_unlock(&h->plugins_lock);
	if (rc || !*n) {
		free(*names);
		*names = NULL;
	}
	return rc;
}

/* Plugin `name`, listed running, was not there when its events were to be
 * read (add_plugin_events: EVH_ENOTFOUND): a reload took it out meanwhile.
 * Answered as plugins_with_store would now (-1) when it was the one asked
 * for or comes back in a moment; else (stopped for good) 0: the list
 * without it is what a request now would answer. */
static int events_plugin_gone(host *h, evh_response *resp, const char *name, int only)
{
	int answer;
	pthread_mutex_lock(&h->plugins_lock);
	if ((answer = only || coming_back_locked(h, name)))
		answer_not_running_locked(h, resp, name);
	pthread_mutex_unlock(&h->plugins_lock);
	return answer ? -1 : 0;
}

/* One plugin's events are its rows in seq order, each page below the first
 * row not yet acknowledged (store.c): following with after = next_after
 * misses none. Several plugins' are merged by time, and after applies to
 * each one's seq: following the log is for one plugin (next_after is given
 * then only, and its page stays in seq order: ordered by time, whose
 * stamps need not follow seq, the page's last event need not be its highest
 * seq, and the next page would repeat events). */
static int get_events(host *h, evh_request *req, evh_response *resp)
{
	const char *plugin = http_req_query(req, "plugin");
	const char *aggregate = http_req_query(req, "aggregate");
	int64_t limit, after;
	int rc = EVH_OK, ok = 1, full = 0;
	cJSON *all = cJSON_CreateArray(), *root, *events, *last;
	char(*names)[PLUGIN_NAME_MAX + 1] = NULL;
	size_t n = 0;
	double next_after;

	if (query_int(req, resp, "limit", LIST_DEFAULT, 1, LIST_MAX, &limit) ||
	    query_int(req, resp, "after", 0, 0, INT64_MAX, &after)) {
		cJSON_Delete(all);
		return EVH_OK;
	}
	if (aggregate && !*aggregate)
		aggregate = NULL;
	if (!all) {
		oom(resp);
		return EVH_OK;
	}
	if (plugins_with_store(h, resp, plugin, &names, &n) != 0) {
		cJSON_Delete(all);
		return EVH_OK;
	}
	if (plugin && !names) {
		cJSON_Delete(all);
		return problem(resp, 404, "not-found", "plugin", "no plugin named '%s'", plugin);
	}
	for (size_t i = 0; !rc && i < n; i++)
		if ((rc = add_plugin_events(h, all, names[i], aggregate, after, limit, &full)) ==
		    EVH_ENOTFOUND)
			rc = events_plugin_gone(h, resp, names[i], plugin != NULL) ? EVH_ENOTFOUND
			                                                           : EVH_OK;
	free(names);
	if (rc == EVH_ENOTFOUND) {
		cJSON_Delete(all);
		return EVH_OK;
	}
	if (cJSON_GetArraySize(all) > limit)
		full = 1;
	if (rc)
		events = NULL;
	else if (plugin) /* in seq order as read, at most `limit` */
		events = all, all = NULL;
	else
		events = sorted_events(all, limit, &full);
	cJSON_Delete(all);
	if (!events)
		return problem(resp, 500, "internal", NULL, "%s",
		               rc && rc != EVH_ENOMEM ? "reading the event log failed"
		                                      : "out of memory");
	/* Read before `events` goes into root, which frees it should root be
	 * out of memory. */
	last = cJSON_GetArrayItem(events, cJSON_GetArraySize(events) - 1);
	next_after = last ? cJSON_GetNumberValue(cJSON_GetObjectItem(last, "seq")) : (double)after;
	root = cJSON_CreateObject();
	jsonb_put(root, "events", events, &ok);
	if (plugin)
		jsonb_put_num(root, "next_after", next_after, &ok);
	jsonb_put_bool(root, "truncated", full, &ok);
	return reply_json(resp, 200, root, ok);
}

/* --------------------------------------------------------------- sign-out */

#define SIGN_OUT_SUBJECT "subject: the token subject (sub) to sign out, 1 to 127 bytes of UTF-8"

/* POST /admin/sign-out {"subject"}: what a plugin's evh_auth_revoke does,
 * for the operator (an account taken over, a plugin that does not sign
 * its users out itself). */
static int post_sign_out(host *h, evh_request *req, evh_response *resp)
{
	const cJSON *sub;
	char err[1024], at[40];
	cJSON *body, *out;
	int rc, ok = 1;

	/* body_object refuses a \u0000, which would cut the subject short:
	 * another subject signed out. */
	if (!(body = body_object(req, resp, (const char *const[]){"subject", NULL})))
		return EVH_OK;
	sub = cJSON_GetObjectItemCaseSensitive(body, "subject");
	if (!cJSON_IsString(sub) || !*sub->valuestring ||
	    json_utf8_error(sub->valuestring, strlen(sub->valuestring)) >= 0) {
		cJSON_Delete(body);
		return invalid(resp, "subject", SIGN_OUT_SUBJECT), EVH_OK;
	}
	rc = host_sign_out(h, sub->valuestring, ADMIN_LOG, err, sizeof err);
	if (rc == EVH_EINVAL)
		invalid(resp, "subject", SIGN_OUT_SUBJECT);
	else if (rc != EVH_OK)
		problem(resp, 500, "internal", NULL, "the sign-out could not be saved: %s", err);
	if (rc != EVH_OK) {
		cJSON_Delete(body);
		return EVH_OK;
	}
	events_now_rfc3339(at);
	out = cJSON_CreateObject();
	jsonb_put_str(out, "subject", sub->valuestring, &ok);
	jsonb_put_str(out, "signed_out_at", at, &ok);
	cJSON_Delete(body);
	return reply_json_done(resp, 200, out, ok, "the subject is signed out");
}

/* ----------------------------------------------------------------- backup */

struct backup_src {
	char *plugin, *path, *dest; /* plugin: the copy's name without ".db" */
	int64_t bytes;
	int sign_outs; /* the host's own file of sign-outs (revoke.h), not a plugin's */
};


static void backup_srcs_free(struct backup_src *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(v[i].plugin);
		free(v[i].path);
		free(v[i].dest);
	}
	free(v);
}

/* "`dir`/`name`", malloc'd; NULL out of memory (errno ENOMEM). Paths are
 * built on the heap here: civetweb's worker threads have 100 KiB stacks,
 * and SQLite's open below a backup takes its share of one. */
static char *path_join(const char *dir, const char *name)
{
	char *p;
	if (asprintf(&p, "%s/%s", dir, name) < 0) {
		errno = ENOMEM;
		return NULL;
	}
	return p;
}

/* The plugins' names and database files, now. 0, or -1 out of memory. */
static int backup_sources(host *h, struct backup_src **out, size_t *n)
{
	int rc = 0;
	pthread_mutex_lock(&h->plugins_lock);
	*n = 0;
	*out = calloc(h->nplugins ? h->nplugins : 1, sizeof **out);
	for (size_t i = 0; *out && i < h->nplugins; i++) {
		struct backup_src *b = &(*out)[*n];
		if (!h->plugins[i]->store)
			continue;
		b->plugin = strdup(h->plugins[i]->name);
		b->path = strdup(store_path(h->plugins[i]->store));
		(*n)++;
		if (!b->plugin || !b->path)
			rc = -1;
	}
	pthread_mutex_unlock(&h->plugins_lock);
	if (!*out)
		return -1;
	/* The sign-outs too: a host restored without them would take the
	 * tokens they refuse. Copied last, so after every plugin's change it
	 * could have been made for. */
	if (*n && h->revoked) {
		struct backup_src *grown = reallocarray(*out, *n + 1, sizeof **out), *b;
		if (!grown)
			return -1;
		*out = grown;
		b = &grown[*n];
		memset(b, 0, sizeof *b);
		b->sign_outs = 1;
		b->plugin = strdup(REVOCATIONS_NAME);
		b->path = strdup(revocations_path(h->revoked));
		(*n)++;
		if (!b->plugin || !b->path)
			rc = -1;
	}
	return *out ? rc : -1;
}

/* The copy of `b` found its database damaged: the plugin's store says so
 * (evhost_store_damaged), if it still runs on that file. */
static void backup_found_damage(host *h, const struct backup_src *b)
{
	pthread_mutex_lock(&h->plugins_lock);
	for (size_t i = 0; i < h->nplugins; i++) {
		store *s = h->plugins[i]->store;
		if (s && !strcmp(h->plugins[i]->name, b->plugin) && !strcmp(store_path(s), b->path))
			store_note_damaged(s, "found by a backup");
	}
	pthread_mutex_unlock(&h->plugins_lock);
}

#define BACKUP_PARTIAL ".partial-" /* a backup being written: renamed once whole */
#define BACKUP_REMOVING ".removing-" /* a backup being removed: renamed first */

/* Is `name` one of the directories post_backup makes (20261201T205218.831Z)? */
static int backup_dir_name(const char *name)
{
	static const char shape[] = "dddddddd" "Tdddddd" ".dddZ";
	size_t i;
	for (i = 0; shape[i]; i++)
		if (shape[i] == 'd' ? !isdigit((unsigned char)name[i]) : name[i] != shape[i])
			return 0;
	return name[i] == '\0';
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void names_free(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

/* The complete backups under `root` (post_backup's names, which sort by
 * time), oldest first: *names (each malloc'd, as the array is), *n of them.
 * 0, or -1 with errno (no such directory, out of memory) and nothing. */
static int backup_list(const char *root, char ***names, size_t *n)
{
	size_t cap = 0;
	struct dirent *e;
	DIR *d = opendir(root);
	*names = NULL;
	*n = 0;
	if (!d)
		return -1;
	while ((e = readdir(d))) {
		if (!backup_dir_name(e->d_name))
			continue;
		if (*n == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			char **grown = realloc(*names, ncap * sizeof *grown);
			if (!grown)
				break;
			*names = grown;
			cap = ncap;
		}
		if (!((*names)[*n] = strdup(e->d_name)))
			break;
		(*n)++;
	}
	closedir(d);
	if (e) { /* stopped for want of memory */
		names_free(*names, *n);
		*names = NULL;
		*n = 0;
		errno = ENOMEM;
		return -1;
	}
	if (*n)
		qsort(*names, *n, sizeof **names, name_cmp);
	return 0;
}

/* Backup name `name` (post_backup's) as ms since the epoch; 0 if unreadable. */
static int64_t backup_name_ms(const char *name)
{
	struct tm tm;
	int ms;
	memset(&tm, 0, sizeof tm);
	if (sscanf(name, "%4d%2d%2dT%2d%2d%2d.%3dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
	           &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms) != 7)
		return 0;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	return (int64_t)timegm(&tm) * 1000 + ms;
}

int64_t admin_backup_newest_ms(const char *state_dir, int64_t now_ms)
{
	char *root = path_join(state_dir, "backups"), **names = NULL;
	size_t n = 0;
	int64_t newest = 0;
	if (root && backup_list(root, &names, &n) == 0)
		for (size_t i = n; i-- > 0 && !newest;) {
			int64_t ms = backup_name_ms(names[i]);
			if (ms <= now_ms) /* else named while the clock was ahead: age unknown */
				newest = ms;
		}
	free(root);
	names_free(names, n);
	return newest;
}

/* Remove backup directory `dir`: its files, then itself. 0, or -1 with
 * errno of the first failure (and what is left, left). */
static int backup_remove(const char *dir)
{
	struct dirent *e;
	DIR *d = opendir(dir);
	int err = 0;
	if (!d)
		return -1;
	while ((e = readdir(d))) {
		char *path;
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (!(path = path_join(dir, e->d_name)) || unlink(path) != 0)
			err = err ? err : (path ? errno : ENOMEM);
		free(path);
	}
	closedir(d);
	if (!err && rmdir(dir) != 0)
		err = errno;
	errno = err;
	return err ? -1 : 0;
}

/* Undo a backup that failed part way: its directory, with every file in it,
 * the copies' and what SQLite left beside them (VACUUM INTO stopped by a full
 * disk leaves NAME.db-journal): one left behind would be taken by the next
 * backup for the remains of a daemon killed while writing it. */
static void backup_discard(const char *dir)
{
	if (backup_remove(dir) != 0)
		log_warn(ADMIN_LOG, "backup: cannot remove %s, left by the backup that failed: %s; "
		                    "the next backup tries again",
		         dir, strerror(errno));
}

/* Remove backup `name` under `root`. It is renamed out of the backups'
 * names first (BACKUP_REMOVING), so that a removal stopped part way (a
 * directory put inside it, say) leaves nothing that looks like a backup
 * with files missing; remains are said, and removed at the next backup
 * (files; a directory in them is left for the administrator).
 * 0 once it is no longer a backup, -1 with errno when it could not be
 * renamed (nothing changed). */
static int backup_retire(const char *root, const char *name)
{
	char *path = path_join(root, name), *gone = NULL;
	int rc = -1;
	if (path && asprintf(&gone, "%s/" BACKUP_REMOVING "%s", root, name) < 0)
		gone = NULL;
	if (!path || !gone)
		errno = ENOMEM;
	else if (rename(path, gone) == 0) {
		rc = 0;
		if (backup_remove(gone) != 0)
			/* Files only: what else was put in it is not the daemon's to
			 * remove (every next backup says so, see below). */
			log_warn(ADMIN_LOG, "backup: %s is no longer a backup, but not all of it could "
			                    "be removed (%s): what is left, in %s, %s",
			         path, strerror(errno), gone,
			         errno == EISDIR ? "holds a directory: remove it by hand"
			                         : "is removed at the next backup");
	}
	free(path);
	free(gone);
	return rc;
}

/* What a daemon killed while writing a backup left (BACKUP_PARTIAL; one
 * backup runs at a time, so any found now is not being written), and the
 * remains of a backup whose removal stopped part way (BACKUP_REMOVING):
 * removed, and said. */
static void backup_remove_partials(const char *root)
{
	static const char *const prefixes[] = {BACKUP_PARTIAL, BACKUP_REMOVING};
	static const char *const what[] = {"left unfinished by an earlier daemon",
	                                   "left by the removal of an old backup"};
	const size_t nprefixes = sizeof prefixes / sizeof *prefixes;
	struct dirent *e;
	DIR *d = opendir(root);
	if (!d)
		return;
	while ((e = readdir(d))) {
		char *path;
		size_t k = 0;
		while (k < nprefixes && (strncmp(e->d_name, prefixes[k], strlen(prefixes[k])) ||
		                         !backup_dir_name(e->d_name + strlen(prefixes[k]))))
			k++;
		if (k == nprefixes)
			continue;
		if ((path = path_join(root, e->d_name)) && backup_remove(path) == 0)
			log_info(ADMIN_LOG, "backup: removed %s, %s", path, what[k]);
		else
			log_warn(ADMIN_LOG, "backup: cannot remove %s/%s, %s: %s%s", root, e->d_name,
			         what[k], strerror(errno),
			         errno == EISDIR ? " (a directory in it: remove it by hand)" : "");
		free(path);
	}
	closedir(d);
}

/* Keep the newest `keep` backups under `root` (ours by their names, which
 * sort by time), `made` (the one just made) always among them; remove the
 * others; their paths go to `removed`. Nothing is removed unless the whole
 * directory could be listed. */
static void backup_prune(const char *root, long keep, const char *made, cJSON *removed, int *ok)
{
	char **names;
	size_t n, excess;
	if (backup_list(root, &names, &n) != 0) {
		log_warn(ADMIN_LOG, "backup: cannot list %s to remove old backups: %s; none removed",
		         root, strerror(errno));
		return;
	}
	excess = n > (size_t)keep ? n - (size_t)keep : 0;
	/* Oldest first, by name; but those named after the one just made go
	 * before all (the wall clock was ahead when they were made: their age
	 * is unknown, as for the gauge), and the one just made stays. */
	for (int ahead = 1; ahead >= 0; ahead--) {
		for (size_t i = 0; i < n && excess; i++) {
			int c = strcmp(names[i], made);
			char *path;
			if (!c || (c > 0) != ahead)
				continue;
			excess--;
			path = path_join(root, names[i]);
			if (path && backup_retire(root, names[i]) == 0)
				jsonb_put_str(removed, NULL, path, ok);
			else
				log_warn(ADMIN_LOG, "backup: cannot remove the old backup %s/%s: %s",
				         root, names[i], strerror(errno));
			free(path);
		}
	}
	names_free(names, n);
}

static int backup_answer(evh_response *resp, cJSON *removed, const char *dir,
                         const char *when, const struct backup_src *v, size_t n, int ok)
{
	cJSON *root = cJSON_CreateObject(), *list;
	jsonb_put_str(root, "dir", dir, &ok);
	jsonb_put_str(root, "time", when, &ok);
	list = jsonb_put_array(root, "plugins", &ok);
	for (size_t i = 0; list && i < n; i++) {
		cJSON *o = v[i].sign_outs ? jsonb_put_object(root, "sign_outs", &ok)
		                          : jsonb_put_object(list, NULL, &ok);
		char *file = NULL;
		if (asprintf(&file, "%s/%s.db", dir, v[i].plugin) < 0)
			file = NULL;
		if (!v[i].sign_outs)
			jsonb_put_str(o, "plugin", v[i].plugin, &ok);
		if (file)
			jsonb_put_str(o, "file", file, &ok);
		else
			ok = 0;
		jsonb_put_num(o, "bytes", (double)v[i].bytes, &ok);
		free(file);
	}
	jsonb_put(root, "removed", removed, &ok);
	return reply_json_done(resp, 200, root, ok, "the backup was written");
}

/* Keep reloads out while this backup runs (see the top of this file),
 * once a reload under way has ended: 0, or -1 when one still runs after
 * RELOAD_WAIT_S or the daemon stops. backup_mu held. */
static int backup_begin(host *h)
{
	struct admin *a = h->admin;
	int64_t deadline = clock_mono_ms() + (int64_t)RELOAD_WAIT_S * 1000;
	int rc = -1;
	pthread_mutex_lock(&a->reload_mu);
	while (a->reloading && !h->stopping && clock_mono_ms() < deadline) {
		struct timespec until = clock_after_ms(CLOCK_MONOTONIC, RELOAD_SLICE_MS);
		pthread_cond_timedwait(&a->reload_cv, &a->reload_mu, &until);
	}
	if (!a->reloading && !h->stopping) {
		a->backing_up = 1;
		rc = 0;
	}
	pthread_mutex_unlock(&a->reload_mu);
	return rc;
}

/* Let reloads run again (a reload waiting is woken). */
static void backup_end(host *h)
{
	struct admin *a = h->admin;
	pthread_mutex_lock(&a->reload_mu);
	a->backing_up = 0;
	pthread_cond_broadcast(&a->reload_cv);
	pthread_mutex_unlock(&a->reload_mu);
}

/* POST /admin/backup: a copy of every running plugin's database, taken while
 * the daemon runs, in <state_dir>/backups/<time>/<plugin>.db (see
 * store_backup). Each copy is one database at one moment, the moments of
 * the plugins a few milliseconds apart; a restore then replays from `time`
 * (docs/operations.md, "Backup and restore"). One backup at a time. */
static int post_backup(host *h, evh_request *req, evh_response *resp)
{
	struct backup_src *v = NULL;
	size_t n = 0, i;
	char *root = NULL, *dir = NULL, *done = NULL, err[1024] = "", stamp[32], when[40], name[48];
	struct timespec now;
	struct tm tm;
	int64_t total = 0;
	long keep = 0, msec;
	int rc, ok = 1, made = 0, damaged = 0;
	static const char *const keys[] = {"keep", NULL};
	cJSON *body = body_object(req, resp, keys), *removed;
	const cJSON *k;

	if (!body)
		return EVH_OK;
	k = cJSON_GetObjectItemCaseSensitive(body, "keep");
	if (k && (!cJSON_IsNumber(k) || !(k->valuedouble >= 1 && k->valuedouble <= BACKUP_KEEP_MAX) ||
	          k->valuedouble != (double)(long)k->valuedouble)) {
		cJSON_Delete(body);
		return problem(resp, 422, "validation", "keep",
		               "keep: the number of backups to keep, 1 to %d", BACKUP_KEEP_MAX);
	}
	keep = k ? (long)k->valuedouble : 0;
	cJSON_Delete(body);
	pthread_mutex_lock(&h->admin->backup_mu);
	if (backup_begin(h) != 0) {
		pthread_mutex_unlock(&h->admin->backup_mu);
		if (h->stopping)
			return problem(resp, 503, "unavailable", NULL, "the daemon is stopping");
		http_resp_header(resp, "Retry-After", "5");
		return problem(resp, 503, "unavailable", NULL,
		               "a reload has been under way for %d s: a backup now would miss the "
		               "plugins it stops or restarts; try again once it ends",
		               RELOAD_WAIT_S);
	}
	/* The running plugins, none of them out of the list for a reload. */
	rc = backup_sources(h, &v, &n);
	if (rc != 0 || !n) {
		backup_end(h);
		pthread_mutex_unlock(&h->admin->backup_mu);
		backup_srcs_free(v, n);
		return rc != 0 ? oom(resp)
		               : problem(resp, 409, "conflict", NULL,
		                         "no plugin with a database is running");
	}
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	msec = now.tv_nsec / 1000000L;
	strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%S", &tm);
	snprintf(name, sizeof name, "%s.%03ldZ", stamp, msec); /* the backup's directory */
	strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(when + strlen(when), sizeof when - strlen(when), ".%03ldZ", msec);
	/* Written under a name of its own, renamed once whole: a daemon killed
	 * meanwhile leaves no directory that looks like a backup. */
	if (!(root = path_join(h->set.state_dir, "backups")) ||
	    asprintf(&done, "%s/%s", root, name) < 0 ||
	    asprintf(&dir, "%s/" BACKUP_PARTIAL "%s", root, name) < 0) {
		done = dir = NULL;
		snprintf(err, sizeof err, "out of memory");
		goto failed;
	}
	backup_remove_partials(root);
	/* The path of whichever mkdir failed: `backups` there (EEXIST) may still
	 * be no directory to make one in (a dangling symbolic link, a file). */
	if (mkdir(root, 0750) != 0 && errno != EEXIST) {
		snprintf(err, sizeof err, "cannot create %s: %s", root, strerror(errno));
		goto failed;
	}
	if (mkdir(dir, 0750) != 0) {
		snprintf(err, sizeof err, "cannot create %s: %s", dir, strerror(errno));
		goto failed;
	}
	made = 1;
	for (i = 0; i < n; i++) {
		char e[768];
		if (asprintf(&v[i].dest, "%s/%s.db", dir, v[i].plugin) < 0) {
			v[i].dest = NULL;
			snprintf(err, sizeof err, "out of memory");
			goto failed;
		}
		if ((rc = store_backup(v[i].path, v[i].dest, &h->stopping, &v[i].bytes, &damaged, e,
		                       sizeof e)) != EVH_OK) {
			if (v[i].sign_outs)
				snprintf(err, sizeof err, "the sign-outs (%s): %s", v[i].path, e);
			else
				snprintf(err, sizeof err, "plugin '%s': %s", v[i].plugin, e);
			if (damaged && !v[i].sign_outs)
				backup_found_damage(h, &v[i]);
			goto failed;
		}
		total += v[i].bytes;
	}
	if (rename(dir, done) != 0) {
		snprintf(err, sizeof err, "cannot rename %s to %s: %s", dir, done, strerror(errno));
		goto failed;
	}
	if (store_sync_dir(root) != 0) {
		/* Whole, but maybe gone after a crash: not a backup to answer 200 for,
		 * nor to leave behind after saying nothing was kept. */
		snprintf(err, sizeof err, "cannot sync %s after renaming the backup into it: %s", root,
		         strerror(errno));
		backup_retire(root, name);
		made = 0;
		goto failed;
	}
	log_info(ADMIN_LOG, "backup of %zu plugin database(s)%s, %" PRId64 " bytes, in %s",
	         n - (v[n - 1].sign_outs ? 1 : 0), v[n - 1].sign_outs ? " and the sign-outs" : "",
	         total, done);
	removed = cJSON_CreateArray();
	if (!removed)
		ok = 0;
	else if (keep)
		backup_prune(root, keep, name, removed, &ok);
	backup_end(h);
	pthread_mutex_unlock(&h->admin->backup_mu);
	rc = backup_answer(resp, removed, done, when, v, n, ok);
	backup_srcs_free(v, n);
	free(root);
	free(dir);
	free(done);
	return rc;
failed:
	if (made) /* not a directory of someone else's */
		backup_discard(dir);
	backup_end(h);
	pthread_mutex_unlock(&h->admin->backup_mu);
	backup_srcs_free(v, n);
	free(root);
	free(dir);
	free(done);
	log_error(ADMIN_LOG, "backup failed, nothing kept: %s", err);
	return problem(resp, 500, "backup-failed", NULL, "the backup failed and nothing was kept: %s",
	               err);
}

/* ----------------------------------------------------------------- reload */

/* At most this many of a refused reload's problems go in its answer. */
#define RELOAD_PROBLEMS_SHOWN 32

/* {"problems": [...], "problems_not_shown": N} for a refused reload's
 * answer (http_resp_problem_with's extra members), as the daemon read the
 * files, which evhostd --check-config run by another user (root) may not:
 * a file only that user can read. NULL when out of memory (the answer
 * then says what it says without them). Under reload_mu. */
static cJSON *reload_problems_json(const diag *d)
{
	cJSON *extra = cJSON_CreateObject(), *list;
	size_t shown = d->n < RELOAD_PROBLEMS_SHOWN ? d->n : RELOAD_PROBLEMS_SHOWN;
	int ok = extra != NULL;
	list = jsonb_put_array(extra, "problems", &ok);
	for (size_t i = 0; i < shown && ok; i++) {
		int nomem = 0;
		char *clean = json_utf8_scrub(d->msgs[i], &nomem); /* a path need not be UTF-8 */
		jsonb_put_str(list, NULL, clean ? clean : d->msgs[i], &ok);
		ok &= !nomem;
		free(clean);
	}
	if (diag_count(d) > shown)
		jsonb_put_num(extra, "problems_not_shown", (double)(diag_count(d) - shown), &ok);
	if (!ok) {
		cJSON_Delete(extra);
		return NULL;
	}
	return extra;
}

int admin_reload_begin(host *h)
{
	struct admin *a = h->admin;
	int waited = 0;
	if (!a)
		return 0;
	pthread_mutex_lock(&a->reload_mu);
	/* No deadline: a backup ends by itself (see the top of this file). But
	 * a stop asked meanwhile (SIGTERM, h->reload_stop) is not kept waiting:
	 * it sets h->stopping, which the backup gives up on, only once the
	 * reload is over, and a reload run then would restart plugins only to
	 * stop them. */
	if (a->backing_up && !atomic_load(&h->reload_stop)) {
		log_info(ADMIN_LOG, "reload: waiting for the backup under way to end");
		waited = 1;
	}
	while (a->backing_up && !atomic_load(&h->reload_stop)) {
		struct timespec until = clock_after_ms(CLOCK_MONOTONIC, RELOAD_SLICE_MS);
		pthread_cond_timedwait(&a->reload_cv, &a->reload_mu, &until);
	}
	if (atomic_load(&h->reload_stop)) {
		pthread_mutex_unlock(&a->reload_mu);
		log_info(ADMIN_LOG, "reload: not run, a stop was asked%s",
		         waited ? " while it waited for the backup under way" : "");
		return -1;
	}
	a->reloading = 1;
	a->reload_covering = a->reload_asked;
	pthread_mutex_unlock(&a->reload_mu);
	return 0;
}

void admin_reload_end(host *h, int rc)
{
	struct admin *a = h->admin;
	if (!a)
		return;
	pthread_mutex_lock(&a->reload_mu);
	a->reloading = 0;
	a->reload_done = a->reload_covering;
	a->reload_rc = rc;
	diag_free(&a->reload_problems);
	a->reload_problems = h->refused;
	h->refused = (diag){0};
	pthread_cond_broadcast(&a->reload_cv);
	pthread_mutex_unlock(&a->reload_mu);
}

/* Wait (reload_mu held) until request `id` is covered by a finished reload,
 * the daemon stops, or `wait_ms` pass. Returns whether it was. */
static int reload_wait_locked(host *h, struct admin *a, uint64_t id, int64_t wait_ms)
{
	int64_t deadline = clock_mono_ms() + wait_ms;
	while (a->reload_done < id && !h->stopping && clock_mono_ms() < deadline) {
		struct timespec until = clock_after_ms(CLOCK_MONOTONIC, RELOAD_SLICE_MS);
		pthread_cond_timedwait(&a->reload_cv, &a->reload_mu, &until);
	}
	return a->reload_done >= id;
}

static int post_reload(host *h, evh_request *req, evh_response *resp)
{
	struct admin *a = h->admin;
	sigset_t mask;
	uint64_t id;
	int64_t wait_s;
	int done, rc, ok = 1;
	cJSON *root, *problems;

	/* How long the answer may wait for the reload: a caller with a deadline
	 * of its own (evhostctl --timeout) says so. */
	if (query_int(req, resp, "wait", RELOAD_WAIT_S, 0, RELOAD_WAIT_MAX_S, &wait_s))
		return EVH_OK;

	/* Only a process whose threads block SIGHUP takes it on a waiting main
	 * thread (evhostd); anywhere else it would end the process. */
	if (pthread_sigmask(SIG_BLOCK, NULL, &mask) != 0 || sigismember(&mask, SIGHUP) != 1)
		return problem(resp, 501, "not-implemented", NULL,
		               "this process cannot reload (SIGHUP is not taken by a main thread)");
	pthread_mutex_lock(&a->reload_mu);
	id = ++a->reload_asked;
	pthread_mutex_unlock(&a->reload_mu);
	if (kill(getpid(), SIGHUP) != 0)
		return problem(resp, 500, "internal", NULL, "cannot signal the main thread: %s",
		               strerror(errno));
	log_info(ADMIN_LOG, "reload #%" PRIu64 " asked through the admin API", id);
	pthread_mutex_lock(&a->reload_mu);
	done = reload_wait_locked(h, a, id, wait_s * 1000);
	rc = a->reload_rc;
	problems = done && rc != 0 ? reload_problems_json(&a->reload_problems) : NULL;
	pthread_mutex_unlock(&a->reload_mu);
	if (!done && h->stopping)
		return problem(resp, 503, "unavailable", NULL, "the daemon is stopping");
	if (!done) {
		root = cJSON_CreateObject();
		jsonb_put_str(root, "result", "pending", &ok);
		jsonb_put_str(root, "detail",
		              "the reload is still running; watch GET /admin/plugins for its outcome",
		              &ok);
		return reply_json_done(resp, 202, root, ok, "the reload is still running");
	}
	if (rc != 0)
		return http_resp_problem_with(resp, 409, "reload-refused", NULL,
		                              "the new configuration has errors and was refused; the "
		                              "running configuration stays (\"problems\" and the "
		                              "daemon's log name each as file:line, as does evhostd "
		                              "--check-config)",
		                              NULL, problems);
	root = plugins_object(h, &ok);
	jsonb_put_str(root, "result", "applied", &ok);
	return reply_json_done(resp, 200, root, ok, "the new configuration was applied");
}

/* -------------------------------------------------------------- dispatch */

static int method_not_allowed(evh_response *resp, const char *method, const char *allow)
{
	http_resp_header(resp, "Allow", allow);
	return problem(resp, 405, "method-not-allowed", NULL,
	               "%s is not allowed here (allowed: %s)", method, allow);
}

/* Split "/admin/a/b/c" into at most 4 segments after "admin". */
static size_t split_path(const char *path, char *buf, size_t buflen, const char **seg)
{
	size_t n = 0;
	char *save = NULL, *tok;
	snprintf(buf, buflen, "%s", path + strlen("/admin"));
	for (tok = strtok_r(buf, "/", &save); tok; tok = strtok_r(NULL, "/", &save)) {
		if (n == 4)
			return 5; /* too deep for any route */
		seg[n++] = tok;
	}
	return n;
}

/* The query parameters each route takes (the others take none). */
static const char *const query_reload[] = {"wait", NULL};
static const char *const query_events[] = {"plugin", "aggregate", "limit", "after", NULL};
static const char *const query_dlq[] = {"limit", "after", "values", NULL};
static const char *const query_none[] = {NULL};

/* A parameter the route does not take is refused: a misspelt filter
 * (?plugn=user) read as absent would widen the answer, and one on a
 * redrive (?after=...) would go unheeded. */
static int query_unknown(evh_request *req, evh_response *resp, const char *const *known)
{
	const char *other = http_req_query_other(req, known), *twice = http_req_query_twice(req);
	char takes[96] = "";
	size_t len = 0;
	if (!other && twice) { /* only the first would be read */
		problem(resp, 422, "validation", twice, "query parameter '%.64s' given more than once",
		        twice);
		return -1;
	}
	if (!other)
		return 0;
	for (size_t i = 0; known[i] && len < sizeof takes; i++)
		len += (size_t)snprintf(takes + len, sizeof takes - len, "%s%s", i ? ", " : "",
		                        known[i]);
	problem(resp, 422, "validation", other, "unknown query parameter '%.64s' (%s%s)", other,
	        known[0] ? "this route takes: " : "this route takes none", takes);
	return -1;
}

static int route(host *h, evh_request *req, evh_response *resp)
{
	const char *method = http_req_method(req), *seg[4] = {NULL};
	char buf[1024];
	size_t n = split_path(http_req_path(req), buf, sizeof buf, seg);
	/* HEAD is a GET whose body is not sent (the host drops it: RFC 9110 9.1). */
	int get = !strcmp(method, "GET") || !strcmp(method, "HEAD"), post = !strcmp(method, "POST");
	const char *const *known = query_none;
	int routed = n == 1 && (!strcmp(seg[0], "reload") || !strcmp(seg[0], "backup") ||
	                        !strcmp(seg[0], "sign-out") || !strcmp(seg[0], "events"));

	if (http_req_query_bad(req)) /* a filter read as absent would widen the answer */
		return problem(resp, 422, "validation", NULL,
		               "the query string has a malformed percent-escape (each %% must be "
		               "followed by two hex digits, and %%00 is not allowed)");
	if (n == 1 && !strcmp(seg[0], "reload"))
		known = query_reload;
	else if (n == 1 && !strcmp(seg[0], "events"))
		known = query_events;
	else if (n == 3 && !strcmp(seg[0], "plugins") && !strcmp(seg[2], "dlq"))
		known = query_dlq;
	/* An unknown path is a 404 whatever its query says. */
	routed |= n >= 1 && n <= 4 && !strcmp(seg[0], "plugins");
	if (routed && query_unknown(req, resp, known))
		return EVH_OK;
	if (n == 1 && !strcmp(seg[0], "reload"))
		return post ? post_reload(h, req, resp) : method_not_allowed(resp, method, "POST");
	if (n == 1 && !strcmp(seg[0], "backup"))
		return post ? post_backup(h, req, resp) : method_not_allowed(resp, method, "POST");
	if (n == 1 && !strcmp(seg[0], "sign-out"))
		return post ? post_sign_out(h, req, resp) : method_not_allowed(resp, method, "POST");
	if (n == 1 && !strcmp(seg[0], "events"))
		return get ? get_events(h, req, resp) : method_not_allowed(resp, method, "GET, HEAD");
	if (n >= 1 && !strcmp(seg[0], "plugins")) {
		if (n == 1 || n == 2)
			return get ? get_plugins(h, resp, seg[1])
			           : method_not_allowed(resp, method, "GET, HEAD");
		if (n == 3 && !strcmp(seg[2], "dlq"))
			return get ? get_dlq(h, req, resp, seg[1])
			           : method_not_allowed(resp, method, "GET, HEAD");
		if (n == 4 && !strcmp(seg[2], "dlq") && !strcmp(seg[3], "redrive"))
			return post ? post_redrive(h, req, resp, seg[1])
			            : method_not_allowed(resp, method, "POST");
		if (n == 3 && !strcmp(seg[2], "replay"))
			return post ? post_replay(h, req, resp, seg[1])
			            : method_not_allowed(resp, method, "POST");
	}
	return problem(resp, 404, "not-found", NULL, "no admin route for %s %s", method,
	               http_req_path(req));
}

int admin_authorize(host *h, evh_request *req, evh_response *resp)
{
	metrics_admin_reason why = METRICS_ADMIN_MISSING;
	int ok = h->admin ? authorized(h->admin, req, &why) : -1;
	if (ok < 0) {
		problem(resp, 404, "not-found", NULL,
		        "the admin API is disabled: set [admin] token_file to enable it");
		return 0;
	}
	if (!ok) {
		metrics_admin_refused(why);
		http_resp_header(resp, "WWW-Authenticate", "Bearer realm=\"evhost-admin\"");
		problem(resp, 401, "unauthorized", NULL, "the admin API needs its bearer token");
		return 0;
	}
	return 1;
}

void admin_handle(host *h, evh_request *req, evh_response *resp)
{
	route(h, req, resp);
}
