/* Prometheus metrics: a lock-free registry of series and the text
 * exposition (format 0.0.4) of GET /metrics.
 *
 * The registry is an open-addressing hash table of atomic pointers. A
 * lookup hashes the metric and its label values and probes from there; a
 * missing series is allocated and published with one compare-and-swap (the
 * loser of a race frees its copy and uses the winner's). Series are never
 * removed, so a pointer handed out stays valid and updates are plain atomic
 * additions: no request, consumer or relay ever takes a lock here. A gauge
 * that should disappear (a revoked partition's lag) is marked absent
 * instead. A scrape walks the table without locking, so it sees every
 * series fully built (the pointer is published after the series is) and
 * values that may be a few updates apart from each other; each histogram's
 * _count is the sum of its buckets as read, so the +Inf bucket and _count
 * always agree. */
#define _GNU_SOURCE
#include "metrics.h"

#include <dirent.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <evhost/evhost.h>

#include "admin.h"
#include "clock.h"
#include "host.h"
#include "json.h"
#include "jwksfetch.h"
#include "kafka.h"
#include "revoke.h"
#include "store.h"
#include "stream.h"
#include "textbuf.h"
#include "tls_compat.h"
#include "trace.h"

#define TABLE_SIZE (2 * METRICS_MAX_SERIES) /* power of two, load factor <= 1/2 */
#define MAX_LABELS 4
#define STATUS_SLOTS 15 /* distinct HTTP statuses per route, each its own series */
/* Statuses past those count by class, "1xx" to "5xx" ([1] to [5]; [0]: one
 * outside 100-599, "other"): a 5xx is never folded where an alert on
 * status=~"5.." cannot see it. */
#define STATUS_CLASSES 6
#define MAX_SECONDS 1e9 /* clamp for a histogram's sum, in ns, to stay in 64 bits */

enum family_id {
	F_HTTP,            /* requests_total (status slots) + request_duration_seconds */
	F_PUBLISHED,       /* events_published_total */
	F_HANDLED,         /* events_handled_total */
	F_HANDLER_TIME,    /* event_handler_duration_seconds */
	F_DLQ,             /* dlq_messages_total */
	F_LAG,             /* consumer_lag */
	F_PLUGIN_FAILED,   /* plugin_up 0 of plugins left out at start */
	F_PUBLISHED_TOPICS, /* not shown: topics of F_PUBLISHED series per plugin */
	F_COUNT
};

/* A family's labels; for the plugins' own (F_COUNT on), also its name,
 * help and type, set once when it is declared and never changed. */
struct family {
	int nlabels;
	const char *labels[MAX_LABELS];
	char *name, *help;
	evh_metric_type type;
};

/* F_COUNT host families, then the plugins' (metrics_plugin_metric), each
 * published by raising nfamilies after it is filled in. */
static struct family families[F_COUNT + METRICS_PLUGIN_FAMILIES] = {
    [F_HTTP] = {.nlabels = 3, .labels = {"plugin", "route", "method"}},
    [F_PUBLISHED] = {.nlabels = 2, .labels = {"plugin", "topic"}},
    [F_HANDLED] = {.nlabels = 3, .labels = {"plugin", "topic", "result"}},
    [F_HANDLER_TIME] = {.nlabels = 2, .labels = {"plugin", "topic"}},
    [F_DLQ] = {.nlabels = 2, .labels = {"plugin", "topic"}},
    [F_LAG] = {.nlabels = 3, .labels = {"plugin", "topic", "partition"}},
    [F_PLUGIN_FAILED] = {.nlabels = 1, .labels = {"plugin"}},
    [F_PUBLISHED_TOPICS] = {.nlabels = 1, .labels = {"plugin"}},
};

/* One set of buckets for requests and handlers alike: both are a SQLite
 * transaction plus some work, from well under a millisecond to seconds. */
static const double bucket_le[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                   0.1,    0.25,  0.5,    1,     2.5,  5,     10};
static const char *const bucket_text[] = {"0.0005", "0.001", "0.0025", "0.005", "0.01",
                                          "0.025",  "0.05",  "0.1",    "0.25",  "0.5",
                                          "1",      "2.5",   "5",      "10"};
#define NBUCKETS (sizeof bucket_le / sizeof bucket_le[0])

static const char *const result_names[] = {
    [METRICS_EVENT_OK] = "ok",         [METRICS_EVENT_DUPLICATE] = "duplicate",
    [METRICS_EVENT_RETRY] = "retry",   [METRICS_EVENT_REJECT] = "reject",
    [METRICS_EVENT_DLQ] = "dlq",
};

struct status_slot {
	atomic_int code; /* 0: free */
	atomic_uint_least64_t n;
};

struct metrics_series {
	int family;
	uint64_t hash;
	const char *label[MAX_LABELS]; /* into text[] */
	atomic_uint_least64_t count;   /* counters */
	atomic_int_least64_t gauge;
	atomic_int present;            /* gauges: 0 once cleared */
	atomic_uint_least64_t bucket[NBUCKETS + 1]; /* histograms, not cumulative; last: +Inf */
	atomic_uint_least64_t sum_ns;
	struct status_slot status[STATUS_SLOTS];
	atomic_uint_least64_t status_class[STATUS_CLASSES]; /* the others, by class */
	char text[];
};

static atomic_int nfamilies = F_COUNT;
static _Atomic(metrics_series *) table[TABLE_SIZE];
static atomic_size_t nseries;
static atomic_uint_least64_t dropped;

double metrics_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ------------------------------------------------------------ registry */

static uint64_t fnv1a(uint64_t h, const char *s)
{
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 0x100000001b3ULL;
	}
	h ^= 0xff; /* separator: ("ab","c") and ("a","bc") differ */
	return h * 0x100000001b3ULL;
}

static uint64_t series_hash(int fam, const char *const *labels)
{
	uint64_t h = 0xcbf29ce484222325ULL ^ (uint64_t)fam;
	for (int i = 0; i < families[fam].nlabels; i++)
		h = fnv1a(h, labels[i]);
	return h;
}

static int series_is(const metrics_series *s, int fam, uint64_t hash,
                     const char *const *labels)
{
	if (s->family != fam || s->hash != hash)
		return 0;
	for (int i = 0; i < families[fam].nlabels; i++)
		if (strcmp(s->label[i], labels[i]))
			return 0;
	return 1;
}

/* Taken to make a series (one not found without it): the table has one
 * writer at a time, so threads making one series together make it once,
 * and the count of series is exact at its bound (each reserving room for
 * the same series dropped the updates of all but one there). */
static pthread_mutex_t series_new_mu = PTHREAD_MUTEX_INITIALIZER;

/* series_new_mu held */
static metrics_series *series_new(int fam, uint64_t hash, const char *const *labels)
{
	size_t len[MAX_LABELS], total = 0;
	metrics_series *s;
	char *w;
	int n = families[fam].nlabels;
	for (int i = 0; i < n; i++)
		total += (len[i] = strlen(labels[i])) + 1;
	if (atomic_load(&nseries) >= METRICS_MAX_SERIES || !(s = calloc(1, sizeof *s + total))) {
		atomic_fetch_add(&dropped, 1);
		return NULL;
	}
	atomic_fetch_add(&nseries, 1);
	s->family = fam;
	s->hash = hash;
	w = s->text;
	for (int i = 0; i < n; i++) {
		memcpy(w, labels[i], len[i] + 1);
		s->label[i] = w;
		w += len[i] + 1;
	}
	return s;
}

/* The series of `fam` with these label values, or NULL with *slot (when
 * given) the empty slot a new one would take: under series_new_mu it stays
 * empty for make_at. */
static metrics_series *lookup(int fam, const char *const *labels, size_t *slot)
{
	uint64_t hash = series_hash(fam, labels);
	size_t i = (size_t)hash & (TABLE_SIZE - 1);
	for (size_t probe = 0; probe < TABLE_SIZE; probe++, i = (i + 1) & (TABLE_SIZE - 1)) {
		metrics_series *s = atomic_load_explicit(&table[i], memory_order_acquire);
		if (!s) {
			if (slot)
				*slot = i;
			return NULL;
		}
		if (series_is(s, fam, hash, labels))
			return s;
	}
	if (slot)
		*slot = TABLE_SIZE; /* unreachable while nseries <= TABLE_SIZE / 2 */
	return NULL;
}

/* series_new_mu held, `slot` from lookup under it: the series made there,
 * or NULL when there is no room. */
static metrics_series *make_at(int fam, const char *const *labels, size_t slot)
{
	metrics_series *s;
	if (slot >= TABLE_SIZE || !(s = series_new(fam, series_hash(fam, labels), labels)))
		return NULL;
	atomic_store_explicit(&table[slot], s, memory_order_release);
	return s;
}

static metrics_series *intern(int fam, const char *const *labels)
{
	size_t slot;
	metrics_series *s = lookup(fam, labels, NULL);
	if (s)
		return s;
	pthread_mutex_lock(&series_new_mu);
	if (!(s = lookup(fam, labels, &slot)))
		s = make_at(fam, labels, slot);
	pthread_mutex_unlock(&series_new_mu);
	return s;
}

static metrics_series *intern2(int fam, const char *a, const char *b)
{
	const char *l[MAX_LABELS] = {a ? a : "", b ? b : ""};
	return intern(fam, l);
}

static metrics_series *intern3(int fam, const char *a, const char *b, const char *c)
{
	const char *l[MAX_LABELS] = {a ? a : "", b ? b : "", c ? c : ""};
	return intern(fam, l);
}

static void observe(metrics_series *s, double seconds)
{
	size_t i = 0;
	if (!s)
		return;
	if (!(seconds >= 0)) /* negative or NaN: a clock step */
		seconds = 0;
	if (seconds > MAX_SECONDS)
		seconds = MAX_SECONDS;
	while (i < NBUCKETS && seconds > bucket_le[i])
		i++;
	atomic_fetch_add_explicit(&s->bucket[i], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&s->sum_ns, (uint64_t)(seconds * 1e9 + 0.5),
	                          memory_order_relaxed);
}

/* Count one `status` in the route's slots: find it or claim a free one;
 * when all are taken by others, in its class. */
static void count_status(metrics_series *s, int status)
{
	for (int i = 0; status > 0 && i < STATUS_SLOTS; i++) {
		int code = atomic_load_explicit(&s->status[i].code, memory_order_acquire);
		if (code == 0 && atomic_compare_exchange_strong(&s->status[i].code, &code, status))
			code = status;
		if (code == status) {
			atomic_fetch_add_explicit(&s->status[i].n, 1, memory_order_relaxed);
			return;
		}
	}
	atomic_fetch_add_explicit(&s->status_class[status >= 100 && status < 600 ? status / 100 : 0],
	                          1, memory_order_relaxed);
}

/* metrics_auth_refused, metrics_sign_out, metrics_admin_refused */
static atomic_uint_fast64_t auth_refusals[METRICS_AUTH_NREASONS];
static atomic_uint_fast64_t sign_outs[2]; /* failed, saved */
static atomic_uint_fast64_t admin_refusals[METRICS_ADMIN_NREASONS];
static atomic_uint_fast64_t clock_steps[2]; /* forward, back: metrics_wall_clock_step */

static void plugin_metrics_reset(void);

void metrics_reset(void)
{
	for (size_t i = 0; i < TABLE_SIZE; i++) {
		free(atomic_load(&table[i]));
		atomic_store(&table[i], NULL);
	}
	plugin_metrics_reset();
	atomic_store(&nseries, 0);
	atomic_store(&dropped, 0);
	for (int i = 0; i < METRICS_AUTH_NREASONS; i++)
		atomic_store(&auth_refusals[i], 0);
	atomic_store(&sign_outs[0], 0);
	atomic_store(&sign_outs[1], 0);
	for (int i = 0; i < METRICS_ADMIN_NREASONS; i++)
		atomic_store(&admin_refusals[i], 0);
	atomic_store(&clock_steps[0], 0);
	atomic_store(&clock_steps[1], 0);
}

/* --------------------------------------------------------------- feeds */

static atomic_int http_connections; /* metrics_http_connection */

void metrics_http_connection(int delta) { atomic_fetch_add(&http_connections, delta); }

/* Methods of host routes and unmatched requests come from the client:
 * anything unusual is one "other", not a new series per invented verb. */
static const char *fold_method(const char *m)
{
	static const char *const known[] = {"GET",    "HEAD",    "POST", "PUT",
	                                    "PATCH",  "DELETE",  "OPTIONS"};
	for (size_t i = 0; m && i < sizeof known / sizeof known[0]; i++)
		if (!strcmp(m, known[i]))
			return known[i];
	return "other";
}

metrics_series *metrics_http_route(const char *plugin, const char *route, const char *method)
{
	return intern3(F_HTTP, plugin, route, fold_method(method));
}

void metrics_http_request(metrics_series *route, const char *method, int status,
                          double seconds)
{
	if (!route)
		route = intern3(F_HTTP, "", "unmatched", fold_method(method));
	if (!route)
		return;
	count_status(route, status);
	if (seconds >= 0)
		observe(route, seconds);
}

metrics_series *metrics_published(const char *plugin, const char *topic)
{
	const char *l[MAX_LABELS] = {plugin ? plugin : "", topic ? topic : ""};
	metrics_series *s = lookup(F_PUBLISHED, l, NULL), *n;
	if (s)
		return s;
	/* A topic of the plugin's choosing (one per tenant, say) is a series
	 * each: past METRICS_PUBLISHED_TOPICS of one plugin, "other", or they
	 * would take the registry's room from the host's own series. */
	n = intern2(F_PUBLISHED_TOPICS, plugin, NULL);
	if (n && atomic_fetch_add_explicit(&n->count, 1, memory_order_relaxed) >=
	             METRICS_PUBLISHED_TOPICS)
		return intern2(F_PUBLISHED, plugin, "other");
	return intern2(F_PUBLISHED, plugin, topic);
}

void metrics_count(metrics_series *counter)
{
	if (counter)
		atomic_fetch_add_explicit(&counter->count, 1, memory_order_relaxed);
}

void metrics_event_handled(const char *plugin, const char *topic, metrics_event_result r)
{
	if ((unsigned)r >= sizeof result_names / sizeof result_names[0])
		return;
	metrics_count(intern3(F_HANDLED, plugin, topic, result_names[r]));
}

void metrics_event_handler_time(const char *plugin, const char *topic, double seconds)
{
	observe(intern2(F_HANDLER_TIME, plugin, topic), seconds);
}

void metrics_dlq_message(const char *plugin, const char *topic)
{
	metrics_count(intern2(F_DLQ, plugin, topic));
}

void metrics_plugin_topics(const char *plugin, const char *const *topics, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		intern2(F_DLQ, plugin, topics[i]);
		for (size_t r = 0; r < sizeof result_names / sizeof result_names[0]; r++)
			intern3(F_HANDLED, plugin, topics[i], result_names[r]);
	}
}

static metrics_series *lag_series(const char *plugin, const char *topic, int32_t partition)
{
	char p[16];
	snprintf(p, sizeof p, "%" PRId32, partition);
	return intern3(F_LAG, plugin, topic, p);
}

void metrics_consumer_lag_set(const char *plugin, const char *topic, int32_t partition,
                              int64_t lag)
{
	metrics_series *s = lag_series(plugin, topic, partition);
	if (!s)
		return;
	atomic_store(&s->gauge, lag < 0 ? 0 : lag);
	atomic_store(&s->present, 1);
}

void metrics_consumer_lag_clear(const char *plugin, const char *topic, int32_t partition)
{
	metrics_series *s = lag_series(plugin, topic, partition);
	if (s)
		atomic_store(&s->present, 0);
}

void metrics_plugin_failed(const char *plugin)
{
	const char *l[MAX_LABELS] = {plugin ? plugin : ""};
	metrics_series *s = intern(F_PLUGIN_FAILED, l);
	if (s)
		atomic_store(&s->present, 1);
}

/* Whether `name` is among the n names of `v`. */
static int name_among(const char *name, char *const *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (v[i] && !strcmp(v[i], name))
			return 1;
	return 0;
}

void metrics_plugins_configured(const struct host *next)
{
	for (size_t i = 0; i < TABLE_SIZE; i++) {
		metrics_series *s = atomic_load_explicit(&table[i], memory_order_acquire);
		int enabled = 0;
		if (!s || s->family != F_PLUGIN_FAILED || !atomic_load(&s->present))
			continue;
		for (size_t k = 0; next && k < next->nplugins && !enabled; k++)
			enabled = next->plugins[k] && !strcmp(next->plugins[k]->name, s->label[0]);
		if (next && !enabled)
			enabled = name_among(s->label[0], next->unchecked, next->nunchecked);
		if (!enabled)
			atomic_store(&s->present, 0);
	}
}

/* A reason out of range is a caller's bug: counting it would write past
 * the array, so it is dropped. */
static void count_reason(atomic_uint_fast64_t *count, unsigned why, unsigned nreasons)
{
	if (why < nreasons)
		atomic_fetch_add_explicit(&count[why], 1, memory_order_relaxed);
}

void metrics_auth_refused(metrics_auth_reason why)
{
	count_reason(auth_refusals, (unsigned)why, METRICS_AUTH_NREASONS);
}

void metrics_admin_refused(metrics_admin_reason why)
{
	count_reason(admin_refusals, (unsigned)why, METRICS_ADMIN_NREASONS);
}

void metrics_sign_out(int saved) { atomic_fetch_add(&sign_outs[saved != 0], 1); }

void metrics_wall_clock_step(int back) { atomic_fetch_add(&clock_steps[back != 0], 1); }

/* ------------------------------------------------------ the plugins' own */

/* One plugin's use of a family: the handle evh_metric_new gives it. */
struct metrics_plugin_metric {
	int fam;
	atomic_int nseries; /* label values it has made series of */
	int retired;        /* its plugin was stopped for good: not rendered; under the mutex */
	struct metrics_plugin_metric *next;
	char plugin[];
};

static pthread_mutex_t plugin_metrics_mu = PTHREAD_MUTEX_INITIALIZER;
static atomic_int plugin_series_all; /* series of all handles (METRICS_PLUGIN_SERIES_ALL) */
static struct metrics_plugin_metric *plugin_metrics; /* every handle, under the mutex */

static const char *const type_names[] = {[EVH_METRIC_COUNTER] = "counter",
                                         [EVH_METRIC_GAUGE] = "gauge",
                                         [EVH_METRIC_HISTOGRAM] = "histogram"};

/* Prometheus's [a-zA-Z_:][a-zA-Z0-9_:]* (label names: no ':'), at most 64 bytes. */
static int prom_name_ok(const char *s, int colon)
{
	size_t n = s ? strlen(s) : 0;
	const char *ok = colon ? "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_:0123456789"
	                       : "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789";
	return n > 0 && n <= 64 && strspn(s, ok) == n && !(s[0] >= '0' && s[0] <= '9');
}

/* Why `plugin` may not declare this metric, or NULL. */
static const char *plugin_metric_refusal(evh_metric_type type, const char *name,
                                         const char *help, const char *label)
{
	size_t n = help ? strlen(help) : 0;
	if (type != EVH_METRIC_COUNTER && type != EVH_METRIC_GAUGE && type != EVH_METRIC_HISTOGRAM)
		return "not a counter, gauge or histogram (EVH_METRIC_*)";
	if (!prom_name_ok(name, 1))
		return "the name must be 1 to 64 letters, digits, '_' or ':', not a digit first";
	if (!strncmp(name, "evhost_", 7))
		return "names starting with evhost_ are the host's";
	if (!strncmp(name, "process_", 8))
		return "names starting with process_ are the host's (process_cpu_seconds_total, "
		       "process_open_fds...): choose another name, your plugin's name a good prefix";
	if (!n || n > 256 || strpbrk(help, "\\\n\r") || json_utf8_error(help, n) >= 0)
		return "the help must be one line of 1 to 256 bytes of UTF-8, without '\\'";
	if (label && (!prom_name_ok(label, 0) || !strcmp(label, "plugin") || !strcmp(label, "le") ||
	              !strncmp(label, "__", 2)))
		return "the label must be 1 to 64 letters, digits or '_', not \"plugin\", \"le\" "
		       "or one starting with \"__\"";
	return NULL;
}

/* The histogram's series suffix `name` ends in (a pointer into it), or NULL. */
static const char *histogram_suffix(const char *name)
{
	static const char *const suffix[] = {"_bucket", "_sum", "_count"};
	size_t n = strlen(name);
	for (size_t i = 0; i < sizeof suffix / sizeof suffix[0]; i++) {
		size_t k = strlen(suffix[i]);
		if (n > k && !strcmp(name + n - k, suffix[i]))
			return name + n - k;
	}
	return NULL;
}

/* Whether a family named `name` (`type`) and the family `f`, of another
 * name, would serve series of one name: a histogram X serves X_bucket, X_sum
 * and X_count, which no other family may be named (nor serve). Two HELP/TYPE
 * blocks for one name make Prometheus refuse the whole scrape. Sets err. */
static int series_collide(evh_metric_type type, const char *name, const struct family *f,
                          char *err, size_t errlen)
{
	const char *sfx;
	if (f->type == EVH_METRIC_HISTOGRAM && (sfx = histogram_suffix(name)) &&
	    (size_t)(sfx - name) == strlen(f->name) && !strncmp(name, f->name, strlen(f->name))) {
		snprintf(err, errlen,
		         "%s: the histogram %s, declared already, serves a series of that name; "
		         "choose another name",
		         name, f->name);
		return 1;
	}
	if (type == EVH_METRIC_HISTOGRAM && (sfx = histogram_suffix(f->name)) &&
	    (size_t)(sfx - f->name) == strlen(name) && !strncmp(f->name, name, strlen(name))) {
		snprintf(err, errlen,
		         "%s: a histogram serves %s, declared already as a %s; choose another name",
		         name, f->name, type_names[f->type]);
		return 1;
	}
	return 0;
}

/* The family named `name`, declared now if it is new; -1 with err set. Under the mutex. */
static int plugin_family(evh_metric_type type, const char *name, const char *help,
                         const char *label, char *err, size_t errlen)
{
	int n = atomic_load_explicit(&nfamilies, memory_order_relaxed);
	struct family *f;
	for (int i = F_COUNT; i < n; i++) {
		f = &families[i];
		if (strcmp(f->name, name)) {
			if (series_collide(type, name, f, err, errlen))
				return -1;
			continue;
		}
		if (f->type == type && (f->nlabels == 2) == (label != NULL) &&
		    (!label || !strcmp(f->labels[1], label)))
			return i;
		snprintf(err, errlen, "%s is declared already, as a %s%s%s%s", name,
		         type_names[f->type], f->nlabels == 2 ? " with the label '" : " without a label",
		         f->nlabels == 2 ? f->labels[1] : "", f->nlabels == 2 ? "'" : "");
		return -1;
	}
	if (n == F_COUNT + METRICS_PLUGIN_FAMILIES) {
		snprintf(err, errlen, "%s: the plugins have declared %d metrics, the most there may be",
		         name, METRICS_PLUGIN_FAMILIES);
		return -1;
	}
	f = &families[n];
	f->name = strdup(name);
	f->help = strdup(help);
	f->labels[0] = "plugin";
	f->labels[1] = label ? strdup(label) : NULL;
	if (!f->name || !f->help || (label && !f->labels[1])) {
		free(f->name);
		free(f->help);
		free((char *)f->labels[1]);
		memset(f, 0, sizeof *f);
		snprintf(err, errlen, "%s: out of memory", name);
		return -1;
	}
	f->nlabels = label ? 2 : 1;
	f->type = type;
	/* Published: a scrape sees it whole from here on. */
	atomic_store_explicit(&nfamilies, n + 1, memory_order_release);
	return n;
}

struct metrics_plugin_metric *metrics_plugin_metric(const char *plugin, evh_metric_type type,
                                                    const char *name, const char *help,
                                                    const char *label, char *err,
                                                    size_t errlen)
{
	const char *why = plugin_metric_refusal(type, name, help, label);
	struct metrics_plugin_metric *m = NULL;
	int fam;
	if (why) {
		snprintf(err, errlen, "%s: %s", name ? name : "(null)", why);
		return NULL;
	}
	pthread_mutex_lock(&plugin_metrics_mu);
	if ((fam = plugin_family(type, name, help, label, err, errlen)) >= 0) {
		for (m = plugin_metrics; m; m = m->next)
			if (m->fam == fam && !strcmp(m->plugin, plugin))
				break;
		if (m) {
			m->retired = 0; /* declared again: its series are back */
		} else if ((m = calloc(1, sizeof *m + strlen(plugin) + 1))) {
			m->fam = fam;
			strcpy(m->plugin, plugin);
			m->next = plugin_metrics;
			plugin_metrics = m;
		} else if (!m) {
			snprintf(err, errlen, "%s: out of memory", name);
		}
	}
	pthread_mutex_unlock(&plugin_metrics_mu);
	return m;
}

/* The series of `m` for `value`; NULL (counted as dropped) for a value
 * that is not one, or one past METRICS_PLUGIN_SERIES. */
static metrics_series *plugin_series(struct metrics_plugin_metric *m, const char *value)
{
	const char *l[MAX_LABELS] = {m->plugin, ""};
	metrics_series *s;
	size_t slot;
	if (families[m->fam].nlabels == 2) {
		size_t n = value ? strlen(value) : 0;
		if (!n || n > 128 || json_utf8_error(value, n) >= 0) {
			atomic_fetch_add(&dropped, 1);
			return NULL;
		}
		l[1] = value;
	}
	if ((s = lookup(m->fam, l, NULL)))
		return s;
	/* A new value: counted against the bounds once, by the thread that
	 * makes its series (series_new_mu) */
	pthread_mutex_lock(&series_new_mu);
	if ((s = lookup(m->fam, l, &slot))) {
		/* made meanwhile by another thread */
	} else if (atomic_load(&m->nseries) >= METRICS_PLUGIN_SERIES ||
	           atomic_load(&plugin_series_all) >= METRICS_PLUGIN_SERIES_ALL) {
		atomic_fetch_add(&dropped, 1);
	} else if ((s = make_at(m->fam, l, slot))) {
		atomic_fetch_add(&m->nseries, 1);
		atomic_fetch_add(&plugin_series_all, 1);
	}
	pthread_mutex_unlock(&series_new_mu);
	return s;
}

void metrics_plugin_add(struct metrics_plugin_metric *m, const char *label_value, int64_t delta)
{
	evh_metric_type type = m ? families[m->fam].type : 0;
	metrics_series *s;
	if (!m || type == EVH_METRIC_HISTOGRAM || (type == EVH_METRIC_COUNTER && delta < 0) ||
	    !(s = plugin_series(m, label_value)))
		return;
	if (type == EVH_METRIC_COUNTER) {
		atomic_fetch_add_explicit(&s->count, (uint64_t)delta, memory_order_relaxed);
	} else {
		atomic_fetch_add_explicit(&s->gauge, delta, memory_order_relaxed);
		atomic_store(&s->present, 1);
	}
}

void metrics_plugin_set(struct metrics_plugin_metric *m, const char *label_value, int64_t value)
{
	metrics_series *s;
	if (!m || families[m->fam].type != EVH_METRIC_GAUGE || !(s = plugin_series(m, label_value)))
		return;
	atomic_store_explicit(&s->gauge, value, memory_order_relaxed);
	atomic_store(&s->present, 1);
}

void metrics_plugin_observe(struct metrics_plugin_metric *m, const char *label_value,
                            double seconds)
{
	if (m && families[m->fam].type == EVH_METRIC_HISTOGRAM)
		observe(plugin_series(m, label_value), seconds);
}

void metrics_plugin_retire(const char *plugin)
{
	pthread_mutex_lock(&plugin_metrics_mu);
	for (struct metrics_plugin_metric *m = plugin_metrics; m; m = m->next)
		if (!strcmp(m->plugin, plugin))
			m->retired = 1;
	pthread_mutex_unlock(&plugin_metrics_mu);
}

/* Whether a retired plugin declared the family `fam` (plugin_metrics_mu
 * held): only then are its series looked up one by one. */
static int plugin_family_retired(int fam)
{
	for (struct metrics_plugin_metric *m = plugin_metrics; m; m = m->next)
		if (m->fam == fam && m->retired)
			return 1;
	return 0;
}

/* Whether the series `s` of a plugin's family belongs to a retired plugin
 * (plugin_metrics_mu held). */
static int plugin_series_retired(const metrics_series *s)
{
	for (struct metrics_plugin_metric *m = plugin_metrics; m; m = m->next)
		if (m->fam == s->family && m->retired && !strcmp(m->plugin, s->label[0]))
			return 1;
	return 0;
}

static void plugin_metrics_reset(void)
{
	pthread_mutex_lock(&plugin_metrics_mu);
	while (plugin_metrics) {
		struct metrics_plugin_metric *next = plugin_metrics->next;
		free(plugin_metrics);
		plugin_metrics = next;
	}
	for (int i = F_COUNT; i < atomic_load(&nfamilies); i++) {
		free(families[i].name);
		free(families[i].help);
		free((char *)families[i].labels[1]);
		memset(&families[i], 0, sizeof families[i]);
	}
	atomic_store(&nfamilies, F_COUNT);
	atomic_store(&plugin_series_all, 0);
	pthread_mutex_unlock(&plugin_metrics_mu);
}

/* -------------------------------------------------------------- output */

/* A label value: backslash, double quote and newline escaped (0.0.4). */
static void put_value(textbuf *o, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\')
			tb_puts(o, "\\\\");
		else if (*s == '"')
			tb_puts(o, "\\\"");
		else if (*s == '\n')
			tb_puts(o, "\\n");
		else
			tb_put(o, s, 1);
	}
}

static void put_label(textbuf *o, int *first, const char *name, const char *value)
{
	tb_puts(o, *first ? "{" : ",");
	*first = 0;
	tb_puts(o, name);
	tb_puts(o, "=\"");
	put_value(o, value);
	tb_puts(o, "\"");
}

/* name{labels of s[,extra="value"]} followed by a space. */
static void put_name(textbuf *o, const char *name, const metrics_series *s,
                     const char *extra, const char *extra_value)
{
	int first = 1;
	tb_puts(o, name);
	for (int i = 0; s && i < families[s->family].nlabels; i++)
		put_label(o, &first, families[s->family].labels[i], s->label[i]);
	if (extra)
		put_label(o, &first, extra, extra_value);
	tb_puts(o, first ? " " : "} ");
}

static void put_head(textbuf *o, const char *name, const char *type, const char *help)
{
	const char *parts[] = {"# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n"};
	for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
		tb_puts(o, parts[i]);
}

static int series_cmp(const void *a, const void *b)
{
	const metrics_series *x = *(const metrics_series *const *)a;
	const metrics_series *y = *(const metrics_series *const *)b;
	for (int i = 0; i < families[x->family].nlabels; i++) {
		int c = strcmp(x->label[i], y->label[i]);
		if (c)
			return c;
	}
	return 0;
}

/* Every series of `fam`, sorted by label values (stable, readable output);
 * NULL (and o->oom) when memory ran out. */
static metrics_series **collect(int fam, size_t *n, textbuf *o)
{
	size_t cap = atomic_load(&nseries) + 16;
	metrics_series **v = malloc(cap * sizeof *v);
	*n = 0;
	if (!v) {
		o->oom = 1;
		return NULL;
	}
	for (size_t i = 0; i < TABLE_SIZE && *n < cap; i++) {
		metrics_series *s = atomic_load_explicit(&table[i], memory_order_acquire);
		if (s && s->family == fam)
			v[(*n)++] = s;
	}
	qsort(v, *n, sizeof *v, series_cmp);
	return v;
}

static void put_ns(textbuf *o, uint64_t ns)
{
	tb_printf(o, "%" PRIu64 ".%09" PRIu64 "\n", ns / 1000000000u, ns % 1000000000u);
}

static uint64_t histogram_count(const metrics_series *s)
{
	uint64_t n = 0;
	for (size_t i = 0; i <= NBUCKETS; i++)
		n += atomic_load_explicit(&s->bucket[i], memory_order_relaxed);
	return n;
}

static void put_histogram(textbuf *o, const char *name, const metrics_series *s)
{
	char key[128];
	uint64_t cum = 0;
	snprintf(key, sizeof key, "%s_bucket", name);
	for (size_t i = 0; i <= NBUCKETS; i++) {
		cum += atomic_load_explicit(&s->bucket[i], memory_order_relaxed);
		put_name(o, key, s, "le", i < NBUCKETS ? bucket_text[i] : "+Inf");
		tb_printf(o, "%" PRIu64 "\n", cum);
	}
	snprintf(key, sizeof key, "%s_sum", name);
	put_name(o, key, s, NULL, NULL);
	put_ns(o, atomic_load_explicit(&s->sum_ns, memory_order_relaxed));
	snprintf(key, sizeof key, "%s_count", name);
	put_name(o, key, s, NULL, NULL);
	tb_printf(o, "%" PRIu64 "\n", cum);
}

/* The HTTP workers: how many there are, and how many a connection holds. */
static void render_http_workers(textbuf *o, const host *h)
{
	if (!h)
		return;
	put_head(o, "evhost_http_connections", "gauge",
	         "Open HTTP connections, each held by a worker thread of its own: a request "
	         "being handled, a kept-alive connection waiting for its next one, a stream. At "
	         "evhost_http_threads, new connections wait for a worker.");
	tb_printf(o, "evhost_http_connections %d\n", atomic_load(&http_connections));
	put_head(o, "evhost_http_threads", "gauge", "HTTP worker threads ([http] threads).");
	tb_printf(o, "evhost_http_threads %d\n", h->set.http_threads > 0 ? h->set.http_threads : 8);
}

/* The event streams' limit, and the closed streams still held under it
 * (the open ones are per plugin: evhost_sse_streams, render_plugins). */
static void render_sse(textbuf *o, const host *h)
{
	stream_hub_stats st;
	if (!h)
		return;
	stream_hub_stats_get(stream_hub_global(), &st);
	put_head(o, "evhost_sse_streams_closing", "gauge",
	         "Event streams closed (their plugin stopped or reloaded, their client too slow) "
	         "whose workers are still writing their last words. They count against [http] "
	         "max_streams until they end, or until their connections are cut a second after "
	         "the close (a client that stopped reading).");
	tb_printf(o, "evhost_sse_streams_closing %d\n", st.closing);
	put_head(o, "evhost_sse_streams_max", "gauge",
	         "[http] max_streams: with this many streams open or closing, the next one is "
	         "refused (503).");
	tb_printf(o, "evhost_sse_streams_max %d\n", st.max_streams);
}

static void render_http(textbuf *o)
{
	static const char *const req = "evhost_http_requests_total";
	static const char *const dur = "evhost_http_request_duration_seconds";
	size_t n;
	metrics_series **v = collect(F_HTTP, &n, o);
	char code[16];
	put_head(o, req, "counter",
	         "HTTP requests answered, by route pattern (\"unmatched\": no route) and status.");
	for (size_t i = 0; v && i < n; i++) {
		for (int k = 0; k < STATUS_SLOTS; k++) {
			int c = atomic_load(&v[i]->status[k].code);
			uint64_t cnt =
			    atomic_load_explicit(&v[i]->status[k].n, memory_order_relaxed);
			if (c == 0 || cnt == 0)
				continue;
			snprintf(code, sizeof code, "%d", c);
			put_name(o, req, v[i], "status", code);
			tb_printf(o, "%" PRIu64 "\n", cnt);
		}
		for (int k = 0; k < STATUS_CLASSES; k++) {
			uint64_t cnt =
			    atomic_load_explicit(&v[i]->status_class[k], memory_order_relaxed);
			if (cnt == 0)
				continue;
			if (k == 0)
				snprintf(code, sizeof code, "other");
			else
				snprintf(code, sizeof code, "%dxx", k);
			put_name(o, req, v[i], "status", code);
			tb_printf(o, "%" PRIu64 "\n", cnt);
		}
	}
	put_head(o, dur, "histogram",
	         "Time from request start until its response is ready to send (event streams: "
	         "until they end), in seconds.");
	/* A route interned by a request still in flight (this scrape) waits
	 * for its first observation, as its requests_total does. */
	for (size_t i = 0; v && i < n; i++)
		if (histogram_count(v[i]))
			put_histogram(o, dur, v[i]);
	free(v);
}

static void render_counters(textbuf *o, int fam, const char *name, const char *help)
{
	size_t n;
	metrics_series **v = collect(fam, &n, o);
	put_head(o, name, "counter", help);
	for (size_t i = 0; v && i < n; i++) {
		put_name(o, name, v[i], NULL, NULL);
		tb_printf(o, "%" PRIu64 "\n", atomic_load_explicit(&v[i]->count, memory_order_relaxed));
	}
	free(v);
}

static void render_handler_time(textbuf *o)
{
	static const char *const name = "evhost_event_handler_duration_seconds";
	size_t n;
	metrics_series **v = collect(F_HANDLER_TIME, &n, o);
	put_head(o, name, "histogram",
	         "Time to handle one event (handlers and their transaction), in seconds.");
	for (size_t i = 0; v && i < n; i++)
		put_histogram(o, name, v[i]);
	free(v);
}

static void render_lag(textbuf *o)
{
	static const char *const name = "evhost_consumer_lag";
	size_t n;
	metrics_series **v = collect(F_LAG, &n, o);
	put_head(o, name, "gauge",
	         "Messages in an assigned partition not handled yet (high watermark minus the "
	         "next offset to handle).");
	for (size_t i = 0; v && i < n; i++) {
		if (!atomic_load(&v[i]->present))
			continue;
		put_name(o, name, v[i], NULL, NULL);
		tb_printf(o, "%" PRId64 "\n", (int64_t)atomic_load(&v[i]->gauge));
	}
	free(v);
}

/* Group commit counters of each plugin's store (under plugins_lock). */
static void render_group_commits(textbuf *o, host *h, metrics_series *one)
{
	static const char *const groups = "evhost_store_group_commits_total",
	                         *const members = "evhost_store_group_members_total";
	size_t n = h ? h->nplugins : 0;
	uint64_t g, m;
	put_head(o, groups, "counter",
	         "Commits that made a group of the plugin's transactions durable at once.");
	for (size_t i = 0; i < n; i++) {
		one->label[0] = h->plugins[i]->name;
		store_group_stats(h->plugins[i]->store, &g, &m);
		put_name(o, groups, one, NULL, NULL);
		tb_printf(o, "%" PRIu64 "\n", g);
	}
	put_head(o, members, "counter",
	         "Transactions committed in those groups (divided by the commits: the mean "
	         "group size).");
	for (size_t i = 0; i < n; i++) {
		one->label[0] = h->plugins[i]->name;
		store_group_stats(h->plugins[i]->store, &g, &m);
		put_name(o, members, one, NULL, NULL);
		tb_printf(o, "%" PRIu64 "\n", m);
	}
}

/* A 0/1 gauge per plugin from its store (under plugins_lock). */
static void render_store_flag(textbuf *o, host *h, metrics_series *one, const char *name,
                              int (*flag)(store *), const char *help)
{
	put_head(o, name, "gauge", help);
	for (size_t i = 0; h && i < h->nplugins; i++) {
		one->label[0] = h->plugins[i]->name;
		put_name(o, name, one, NULL, NULL);
		tb_puts(o, flag(h->plugins[i]->store) ? "1\n" : "0\n");
	}
}

/* A count of each plugin's, read now: `value` of it. */
static void render_plugin_count(textbuf *o, host *h, metrics_series *one, const char *name,
                                const char *type, uint64_t (*value)(const evh_plugin *),
                                const char *help)
{
	put_head(o, name, type, help);
	for (size_t i = 0; h && i < h->nplugins; i++) {
		one->label[0] = h->plugins[i]->name;
		put_name(o, name, one, NULL, NULL);
		tb_printf(o, "%" PRIu64 "\n", value(h->plugins[i]));
	}
}

static uint64_t requests_in_flight(const evh_plugin *p)
{
	int n = atomic_load(&p->http_active);
	return n > 0 ? (uint64_t)n : 0;
}

static uint64_t wal_bytes(const evh_plugin *p)
{
	int64_t n = store_wal_bytes(p->store);
	return n > 0 ? (uint64_t)n : 0;
}

static uint64_t log_lines_dropped(const evh_plugin *p)
{
	return atomic_load(&p->log_budget.dropped_total);
}

static uint64_t sse_streams(const evh_plugin *p)
{
	int n = stream_owner_count(stream_hub_global(), p);
	return n > 0 ? (uint64_t)n : 0;
}

/* Per-plugin gauges read now, under plugins_lock (held for the copying). */
static void render_plugins(textbuf *o, host *h)
{
	static const char *const up = "evhost_plugin_up", *const pending = "evhost_outbox_pending",
	                         *const max_rows = "evhost_outbox_max_rows",
	                         *const delivered = "evhost_outbox_last_delivery_timestamp_seconds";
	metrics_series one = {0};
	size_t n;
	metrics_series **failed = collect(F_PLUGIN_FAILED, &n, o);
	one.family = F_PLUGIN_FAILED;
	put_head(o, up, "gauge", "1 while the plugin is running, 0 otherwise.");
	if (h)
		pthread_mutex_lock(&h->plugins_lock);
	for (size_t i = 0; h && i < h->nplugins; i++) {
		one.label[0] = h->plugins[i]->name;
		put_name(o, up, &one, NULL, NULL);
		tb_puts(o, h->plugins[i]->status == PLUGIN_RUNNING ? "1\n" : "0\n");
	}
	for (size_t i = 0; failed && i < n; i++) {
		int running = 0;
		for (size_t k = 0; h && k < h->nplugins && !running; k++)
			running = !strcmp(h->plugins[k]->name, failed[i]->label[0]);
		if (running || !atomic_load(&failed[i]->present))
			continue;
		put_name(o, up, failed[i], NULL, NULL);
		tb_puts(o, "0\n");
	}
	put_head(o, pending, "gauge",
	         "Events in the plugin's outbox not yet acknowledged by Kafka.");
	for (size_t i = 0; h && i < h->nplugins; i++) {
		one.label[0] = h->plugins[i]->name;
		put_name(o, pending, &one, NULL, NULL);
		tb_printf(o, "%" PRId64 "\n", store_outbox_pending(h->plugins[i]->store));
	}
	put_head(o, max_rows, "gauge",
	         "[store] outbox_max_rows as the plugin's outbox has it (no series: no bound): "
	         "at evhost_outbox_pending this high, publishing is refused (503).");
	for (size_t i = 0; h && i < h->nplugins; i++) {
		int64_t max = store_outbox_limit(h->plugins[i]->store);
		if (max <= 0)
			continue;
		one.label[0] = h->plugins[i]->name;
		put_name(o, max_rows, &one, NULL, NULL);
		tb_printf(o, "%" PRId64 "\n", max);
	}
	put_head(o, delivered, "gauge",
	         "When Kafka last acknowledged events of the plugin's outbox (the plugin's start "
	         "until the first): with events pending, how long none has gone out.");
	for (size_t i = 0; h && i < h->nplugins; i++) {
		int64_t ms = store_outbox_delivered_ms(h->plugins[i]->store);
		one.label[0] = h->plugins[i]->name;
		put_name(o, delivered, &one, NULL, NULL);
		tb_printf(o, "%" PRId64 ".%03d\n", ms / 1000, (int)(ms % 1000));
	}
	/* Full: looked at again, no write may come to clear it (store_full_recheck). */
	render_store_flag(o, h, &one, "evhost_store_full", store_full_recheck,
	                  "1 while the plugin's database cannot grow (its file system is full): "
	                  "writes answer 503 and its events wait.");
	render_plugin_count(o, h, &one, "evhost_plugin_http_requests_in_flight", "gauge",
	                    requests_in_flight,
	                    "Requests of the plugin's routes being served now, from reading the "
	                    "body to the handler's return ([http] max_plugin_requests bounds it).");
	render_plugin_count(o, h, &one, "evhost_plugin_log_lines_dropped_total", "counter",
	                    log_lines_dropped,
	                    "Lines of the plugin's (its own and the host's about its calls and "
	                    "events) dropped since it was started: more than [log] "
	                    "plugin_rate_limit_burst in an interval.");
	render_plugin_count(o, h, &one, "evhost_sse_streams", "gauge", sse_streams,
	                    "Server-Sent Events streams of the plugin's routes open now, each holding "
	                    "an HTTP worker: with evhost_sse_streams_closing, at "
	                    "evhost_sse_streams_max the next stream is refused (503).");
	render_store_flag(o, h, &one, "evhost_store_damaged", store_damaged,
	                  "1 once SQLite found the plugin's database file damaged since it was "
	                  "opened: what it cannot read fails; restore the file from a backup.");
	render_plugin_count(o, h, &one, "evhost_store_wal_bytes", "gauge", wal_bytes,
	                    "Bytes of the plugin's database WAL in use at its last commit: "
	                    "checkpoints start it again from the beginning once no read "
	                    "transaction needs it; one held open (or a backup's copy) lets it "
	                    "grow with every commit.");
	render_group_commits(o, h, &one);
	if (h)
		pthread_mutex_unlock(&h->plugins_lock);
	free(failed);
}

/* The span exporter's counters (trace.h): all zero while tracing is off. */
static void render_trace(textbuf *o)
{
	static const char *const name = "evhost_trace_spans_total";
	uint64_t v[3];
	static const char *const outcome[] = {"exported", "dropped_queue_full",
	                                      "dropped_export_failed"};
	trace_stats(&v[0], &v[1], &v[2]);
	put_head(o, name, "counter",
	         "Spans ended while tracing is on: sent to the collector, or dropped (the queue "
	         "was full, or the collector did not take them).");
	for (int i = 0; i < 3; i++)
		tb_printf(o, "%s{outcome=\"%s\"} %" PRIu64 "\n", name, outcome[i], v[i]);
}

/* [auth] jwt_jwks_url's fetches: only once one was made (a last-success
 * time of 0 would set off an alert on its age where nothing is fetched). */
/* While [auth] jwt_jwks_url is set: a reload that takes it away takes the
 * series away too (frozen, the last good fetch's time set off the watch on
 * its age three hours later, for good). */
static void render_jwks(textbuf *o, host *h)
{
	static const char *const name = "evhost_jwks_fetches_total";
	const auth_keyset *k = h ? host_auth_acquire(h) : NULL;
	int fetching = k && k->jwks;
	uint64_t ok, failed;
	int64_t last;
	host_auth_release(k);
	jwks_stats(&ok, &failed, &last);
	if (!fetching || (!ok && !failed))
		return;
	put_head(o, name, "counter",
	         "Fetches of the identity provider's keys ([auth] jwt_jwks_url): good, or failed "
	         "(the keys fetched before stay in use).");
	tb_printf(o, "%s{result=\"ok\"} %" PRIu64 "\n", name, ok);
	tb_printf(o, "%s{result=\"failed\"} %" PRIu64 "\n", name, failed);
	put_head(o, "evhost_jwks_last_success_timestamp_seconds", "gauge",
	         "When the last good fetch of the provider's keys ended, in seconds since the "
	         "epoch (0: none yet): alert when it is older than a few jwt_jwks_refresh.");
	tb_printf(o, "evhost_jwks_last_success_timestamp_seconds %" PRId64 "\n", last);
	put_head(o, "evhost_jwks_keys_unusable", "gauge",
	         "Keys of the provider's set in use that evhost could not use and left out "
	         "(malformed, refused by OpenSSL, beyond the 16 it takes), each said at WARN.");
	tb_printf(o, "evhost_jwks_keys_unusable %d\n", jwks_unusable_keys());
}

/* Seconds since the epoch of a start `ticks_since_boot` clock ticks after
 * boot. From CLOCK_BOOTTIME, not /proc/stat's btime: the unit's
 * ProcSubset=pid hides /proc/stat. */
static double start_time(unsigned long long ticks_since_boot, long ticks_per_s)
{
	struct timespec real, boot;
	clock_gettime(CLOCK_REALTIME, &real);
	clock_gettime(CLOCK_BOOTTIME, &boot);
	return (double)real.tv_sec + (double)real.tv_nsec / 1e9 -
	       ((double)boot.tv_sec + (double)boot.tv_nsec / 1e9) +
	       (double)ticks_since_boot / (double)ticks_per_s;
}

/* Open descriptors, or -1. ".", ".." and the listing's own are not counted. */
static int open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;
	if (!d)
		return -1;
	while (readdir(d))
		n++;
	closedir(d);
	return n > 3 ? n - 3 : 0;
}

static void render_process(textbuf *o)
{
	char buf[1024], *p;
	unsigned long utime, stime, vsize;
	unsigned long long start;
	long rss, ticks = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
	size_t got;
	int fds = open_fds();
	FILE *f = fopen("/proc/self/stat", "re");
	if (!f)
		return;
	got = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[got] = '\0';
	p = strrchr(buf, ')'); /* the command name may hold spaces and parentheses */
	if (!p || ticks <= 0 || page <= 0 ||
	    sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d %*d %*d "
	                  "%*d %*d %llu %lu %ld",
	           &utime, &stime, &start, &vsize, &rss) != 5)
		return;
	put_head(o, "process_cpu_seconds_total", "counter",
	         "User and system CPU time, in seconds.");
	tb_printf(o, "process_cpu_seconds_total %.2f\n", (double)(utime + stime) / (double)ticks);
	put_head(o, "process_resident_memory_bytes", "gauge", "Resident set size, in bytes.");
	tb_printf(o, "process_resident_memory_bytes %ld\n", rss * page);
	put_head(o, "process_virtual_memory_bytes", "gauge", "Virtual memory size, in bytes.");
	tb_printf(o, "process_virtual_memory_bytes %lu\n", vsize);
	put_head(o, "process_start_time_seconds", "gauge",
	         "Start time of the process since the Unix epoch, in seconds.");
	tb_printf(o, "process_start_time_seconds %.2f\n", start_time(start, ticks));
	if (fds < 0)
		return;
	put_head(o, "process_open_fds", "gauge", "Open file descriptors.");
	tb_printf(o, "process_open_fds %d\n", fds);
}

/* A counter by one label, every value of it, 0 included: a rate over a
 * series that appears only at its first count misses that one. */
static void render_labelled(textbuf *o, const char *name, const char *help, const char *label,
                            const char *const *value, atomic_uint_fast64_t *count, int n)
{
	put_head(o, name, "counter", help);
	for (int i = 0; i < n; i++)
		tb_printf(o, "%s{%s=\"%s\"} %" PRIu64 "\n", name, label, value[i],
		          (uint64_t)atomic_load(&count[i]));
}

static void render_auth(textbuf *o, host *h)
{
	static const char *const reason[METRICS_AUTH_NREASONS] = {
	    "missing", "malformed", "signature", "expired",      "not_yet_valid",
	    "claims",  "revoked",   "lifetime",  "unverifiable", "role"};
	static const char *const result[2] = {"failed", "saved"}; /* sign_outs' indexes */
	render_labelled(o, "evhost_auth_refusals_total",
	                "Requests to routes that need a bearer token, refused by the host's check, "
	                "by why: none given, not a JWT, signature or algorithm no key checks, "
	                "expired, not yet valid, wrong claims, signed out, living longer than [auth] "
	                "token_ttl_max, not checkable (no keys yet: 503), or good without the "
	                "route's role (403).",
	                "reason", reason, auth_refusals, METRICS_AUTH_NREASONS);
	render_labelled(o, "evhost_auth_sign_outs_total",
	                "Sign-outs (a plugin's evh_auth_revoke, POST /admin/sign-out): saved in "
	                "state_dir/evhostd.auth.db, or not (in force until evhostd stops, not after).",
	                "result", result, sign_outs, 2);
	if (!h || !h->revoked)
		return;
	put_head(o, "evhost_auth_signed_out_subjects", "gauge",
	         "Subjects signed out whose earlier tokens may still be presented (kept [auth] "
	         "token_ttl_max).");
	tb_printf(o, "evhost_auth_signed_out_subjects %zu\n", revocations_count(h->revoked));
}

/* Also while the admin API is off (nothing is counted then: it answers
 * 404): a reload may turn it on, and its series are there from the start. */
static void render_admin(textbuf *o)
{
	static const char *const reason[METRICS_ADMIN_NREASONS] = {"missing", "malformed", "wrong"};
	render_labelled(o, "evhost_admin_refusals_total",
	                "Requests to the admin API refused (401), by why: no Authorization header, "
	                "one without a bearer token, or a bearer token that is not [admin] "
	                "token_file's.",
	                "reason", reason, admin_refusals, METRICS_ADMIN_NREASONS);
}

static void render_clock(textbuf *o)
{
	static const char *const direction[2] = {"forward", "back"}; /* clock_steps' indexes */
	render_labelled(o, "evhost_wall_clock_steps_total",
	                "Steps of the wall clock of a second or more (NTP, date; a suspend counts "
	                "forward). evhostd's own timeouts do not mind them; a step back stretches "
	                "librdkafka's waits under way by the step.",
	                "direction", direction, clock_steps, 2);
}

/* Only once a backup exists: when the newest was taken. */
static void render_backup(textbuf *o, host *h)
{
	int64_t ms = h && h->set.state_dir ? admin_backup_newest_ms(h->set.state_dir,
	                                                            clock_wall_ms()) : 0;
	if (!ms)
		return;
	put_head(o, "evhost_backup_last_timestamp_seconds", "gauge",
	         "When the newest complete backup under state_dir/backups was taken "
	         "(evhostctl backup), in seconds since the Unix epoch; one named after now "
	         "(made while the clock was ahead) is not counted.");
	tb_printf(o, "evhost_backup_last_timestamp_seconds %.3f\n", (double)ms / 1000.0);
}

/* Only with HTTPS on: the certificate being served (reloads replace it). */
static void render_tls(textbuf *o)
{
	int64_t expiry = tls_serving_expiry();
	const char *reason;
	uint64_t failed;
	if (!expiry)
		return;
	put_head(o, "evhost_tls_certificate_expiry_timestamp_seconds", "gauge",
	         "When the HTTPS certificate being served, or an intermediate sent with it, "
	         "expires, in seconds since the Unix epoch.");
	tb_printf(o, "evhost_tls_certificate_expiry_timestamp_seconds %" PRId64 "\n", expiry);
	put_head(o, "evhost_https_handshakes_failed_total", "counter",
	         "HTTPS clients whose TLS handshake failed, by reason (each logged at debug).");
	for (int i = 0; (reason = tls_handshakes_failed(i, &failed)) != NULL; i++)
		tb_printf(o, "evhost_https_handshakes_failed_total{reason=\"%s\"} %" PRIu64 "\n", reason,
		          failed);
}

/* The plugins' own metrics (evh_metric_new), in the order declared. The
 * handles' list is read under its mutex, taken once for the whole: a
 * declaration waits for a scrape's few milliseconds, no update does. */
static void render_plugin_metrics(textbuf *o)
{
	int n = atomic_load_explicit(&nfamilies, memory_order_acquire);
	pthread_mutex_lock(&plugin_metrics_mu);
	for (int fam = F_COUNT; fam < n; fam++) {
		const struct family *f = &families[fam];
		size_t k;
		metrics_series **v = collect(fam, &k, o);
		int retired = plugin_family_retired(fam);
		put_head(o, f->name, type_names[f->type], f->help);
		for (size_t i = 0; v && i < k; i++) {
			if (retired && plugin_series_retired(v[i]))
				continue;
			if (f->type == EVH_METRIC_HISTOGRAM) {
				put_histogram(o, f->name, v[i]);
			} else if (f->type == EVH_METRIC_COUNTER) {
				put_name(o, f->name, v[i], NULL, NULL);
				tb_printf(o, "%" PRIu64 "\n",
				          atomic_load_explicit(&v[i]->count, memory_order_relaxed));
			} else if (atomic_load(&v[i]->present)) {
				put_name(o, f->name, v[i], NULL, NULL);
				tb_printf(o, "%" PRId64 "\n",
				          (int64_t)atomic_load_explicit(&v[i]->gauge, memory_order_relaxed));
			}
		}
		free(v);
	}
	pthread_mutex_unlock(&plugin_metrics_mu);
}

int metrics_render(host *h, char **text, size_t *len)
{
	textbuf o = {0};
	*text = NULL;
	*len = 0;
	put_head(&o, "evhost_build_info", "gauge",
	         "Always 1; labels: the daemon's version and ABI.");
	tb_printf(&o, "evhost_build_info{version=\"%s\",abi=\"%d.%d\"} 1\n", EVHOST_VERSION,
	     EVH_ABI_MAJOR, EVH_ABI_MINOR);
	render_http(&o);
	render_http_workers(&o, h);
	render_sse(&o, h);
	render_counters(&o, F_PUBLISHED, "evhost_events_published_total",
	                "Events the outbox relay published and Kafka acknowledged.");
	render_counters(&o, F_HANDLED, "evhost_events_handled_total",
	                "Deliveries of consumed events to handlers, by result.");
	render_handler_time(&o);
	render_counters(&o, F_DLQ, "evhost_dlq_messages_total",
	                "Messages written to dead-letter topics, by the topic they came from.");
	render_lag(&o);
	put_head(&o, "evhost_kafka_clients_left_running", "gauge",
	         "Kafka clients of stopped consumers that did not end within "
	         KAFKA_DESTROY_WAIT_TEXT " (librdkafka's "
	         "destroy waiting for a reference), left running with their threads and "
	         "connections until evhostd stops or they end.");
	tb_printf(&o, "evhost_kafka_clients_left_running %d\n", kafka_clients_left_running());
	render_plugins(&o, h);
	render_trace(&o);
	render_auth(&o, h);
	render_admin(&o);
	render_clock(&o);
	render_jwks(&o, h);
	render_tls(&o);
	render_backup(&o, h);
	put_head(&o, "evhost_metrics_series_dropped_total", "counter",
	         "Updates lost because their series could not be created (registry full or "
	         "out of memory, or a plugin's metric past its 100 label values or given a "
	         "value that is not one).");
	tb_printf(&o, "evhost_metrics_series_dropped_total %" PRIu64 "\n", atomic_load(&dropped));
	render_plugin_metrics(&o);
	render_process(&o);
	if (o.oom) {
		free(o.p);
		return -1;
	}
	*text = o.p;
	*len = o.n;
	return 0;
}
