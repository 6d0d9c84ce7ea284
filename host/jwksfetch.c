/* [auth] jwt_jwks_url: the provider's keys, fetched (jwksfetch.h). */
#define _GNU_SOURCE /* pthread_rwlockattr_setkind_np */
#include "jwksfetch.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "fileio.h"
#include "httpc.h"
#include "jwks.h"
#include "log.h"
#include "redact.h"
#include "textbuf.h"
#include "tls_compat.h"

#define CACHE_NAME "jwks-cache.json"
#define HEAD_MAX 65536 /* the answer's status line and headers, beside the set */

struct jwks_fetcher {
	/* Settings, fixed. shown: url for the log, its query's values hidden. */
	char *url, *shown, *host, *port, *target, *ca_file, *issuer, *cache_path;
	int refresh_ms;
	int64_t cache_max_age_s; /* the kept set is not used at a start when older */
	int tls; /* https:// */
	/* The keys, under rw: readers hold them for a check. */
	pthread_rwlock_t rw;
	void *keys;
	int nrsa, nec;
	int no_usable; /* the set in use has no key evhost can use: keys NULL */
	/* The fetcher thread's own: the set in use, to tell a change. */
	char *fingerprint;
	int failures;
	/* Under mu: the thread's schedule and what requests wait for. */
	pthread_mutex_t mu;
	pthread_cond_t cv; /* on CLOCK_MONOTONIC */
	int stopping, kick, fetching, started;
	int last_failed; /* the last attempt failed: requests do not wait for the next */
	int waiting; /* requests waiting for a fetch (at most JWKS_WAITERS_MAX) */
	uint64_t attempts; /* fetches finished */
	int64_t last_attempt_ms;
	pthread_t thread;
	/* Raised by jwks_fetcher_stop: a fetch under way on the thread gives up
	 * (httpc_abort_on) rather than hold a stop or reload up to its timeout. */
	atomic_int abort;
	/* Those that can reach this fetcher: its maker (the host), each auth key
	 * set that names it, and the fetcher a reload replaced with it (through
	 * `successor`). Freed with the last (jwks_fetcher_free): a reader comes
	 * to it only through one of them, so none is inside it then. */
	atomic_int refs;
	/* Set (under the write lock, once) when a reload put another fetcher in
	 * place of this one: readers that still name this one use that one's
	 * keys (jwks_fetcher_retire). It holds a reference to that one. */
	_Atomic(struct jwks_fetcher *) successor;
};

/* Fetchers made and not yet freed: jwks_fetchers_live. */
static atomic_int n_fetchers;

int jwks_fetchers_live(void) { return atomic_load(&n_fetchers); }

static _Atomic uint64_t n_ok, n_failed;
static _Atomic int64_t last_ok_s;
static atomic_int n_unusable; /* keys left out of the set last put in use */

void jwks_stats(uint64_t *ok, uint64_t *failed, int64_t *last_ok)
{
	*ok = atomic_load(&n_ok);
	*failed = atomic_load(&n_failed);
	*last_ok = atomic_load(&last_ok_s);
}

int jwks_unusable_keys(void) { return atomic_load(&n_unusable); }

static char *dup_opt(const char *s, int *oom)
{
	char *c = s ? strdup(s) : NULL;
	if (s && !c)
		*oom = 1;
	return c;
}

static int same_opt(const char *a, const char *b)
{
	return (!a && !b) || (a && b && !strcmp(a, b));
}

jwks_fetcher *jwks_fetcher_new(const settings *s, char *err, size_t errlen)
{
	jwks_fetcher *f = calloc(1, sizeof *f);
	pthread_rwlockattr_t ra;
	int oom = 0;

	if (!f) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	atomic_init(&f->refs, 1);
	atomic_fetch_add(&n_fetchers, 1);
	/* A writer (a new set) must not wait behind a stream of readers. */
	pthread_rwlockattr_init(&ra);
	pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&f->rw, &ra);
	pthread_rwlockattr_destroy(&ra);
	clock_cond_init(&f->cv);
	pthread_mutex_init(&f->mu, NULL);
	f->refresh_ms = s->jwks_refresh_ms;
	f->cache_max_age_s = s->jwks_cache_max_age_s;
	f->url = dup_opt(s->jwks_url, &oom);
	if (f->url && !(f->shown = redact_url(f->url)))
		oom = 1;
	f->host = dup_opt(s->jwks_host, &oom);
	f->port = dup_opt(s->jwks_port, &oom);
	f->ca_file = dup_opt(s->jwks_ca_file, &oom);
	f->issuer = dup_opt(s->jwt_public_issuer, &oom);
	if (s->state_dir && asprintf(&f->cache_path, "%s/" CACHE_NAME, s->state_dir) < 0) {
		f->cache_path = NULL;
		oom = 1;
	}
	f->target = dup_opt(s->jwks_target, &oom);
	if (oom) {
		snprintf(err, errlen, "out of memory");
		jwks_fetcher_free(f);
		return NULL;
	}
	/* Read here to say a bad file at its line; again at every fetch, so that
	 * CA certificates replaced in place are used without a reload. */
	f->tls = s->jwks_tls;
	if (f->tls) {
		void *tls = tls_client_new(s->jwks_ca_file, NULL, err, errlen);
		if (!tls) {
			jwks_fetcher_free(f);
			return NULL;
		}
		tls_client_free(tls);
	}
	return f;
}

int jwks_fetcher_same(const jwks_fetcher *f, const settings *s)
{
	return same_opt(f->url, s->jwks_url) && same_opt(f->ca_file, s->jwks_ca_file) &&
	       same_opt(f->issuer, s->jwt_public_issuer) && f->refresh_ms == s->jwks_refresh_ms;
}

const char *jwks_fetcher_url(const jwks_fetcher *f) { return f->shown; }

/* ------------------------------------------------------------ fetching */

/* GET the set: the body (malloc'd, NUL-terminated) and its length, or NULL
 * with the reason in err. */
static char *download(jwks_fetcher *f, size_t *len, char *err, size_t errlen)
{
	int64_t deadline = clock_mono_ms() + JWKS_FETCH_TIMEOUT_MS;
	char why[256], start[128];
	httpc_conn c;
	httpc_answer a;
	char *buf;
	size_t n;
	int rc;
	void *tls = NULL;

	if (f->tls && !(tls = tls_client_new(f->ca_file, NULL, why, sizeof why))) {
		snprintf(err, errlen, "%s: %s", f->ca_file ? "jwt_jwks_ca_file" : "the system's CAs",
		         why);
		return NULL;
	}
	if (httpc_open(&c, f->host, f->port, tls, deadline, err, errlen) != 0) {
		tls_client_free(tls);
		return NULL;
	}
	if (httpc_send_head(&c, "GET", f->host, f->port, f->target,
	                    "User-Agent: evhost/" EVHOST_VERSION "\r\nAccept: application/json\r\n"
	                    "Connection: close\r\n\r\n",
	                    deadline, why, sizeof why) != 0) {
		snprintf(err, errlen, "sending the request failed: %s", why);
		httpc_close(&c);
		tls_client_free(tls);
		return NULL;
	}
	/* Up to the answer's end: a provider that keeps the connection open
	 * despite Connection: close must not cost every fetch its timeout. */
	rc = httpc_recv_all(&c, JWKS_ANSWER_MAX + HEAD_MAX, deadline, &buf, &n, why, sizeof why);
	httpc_close(&c);
	tls_client_free(tls);
	if (!buf) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (rc > 0 || (rc < 0 && n == 0)) {
		if (rc > 0)
			snprintf(err, errlen, "the answer is larger than %d bytes", JWKS_ANSWER_MAX);
		else if (!strcmp(why, "timed out"))
			snprintf(err, errlen, "no answer within %d s", JWKS_FETCH_TIMEOUT_MS / 1000);
		else
			snprintf(err, errlen, "no answer: %s", why);
		free(buf);
		return NULL;
	}
	/* A TLS server may end without close_notify: what came is used when it
	 * is a whole answer (a JWKS cut short is no longer JSON). */
	if (httpc_parse_answer(buf, n, &a, err, errlen) != 0) {
		if (rc < 0 && !strcmp(why, "timed out")) {
			size_t m = strlen(err);
			snprintf(err + m, errlen - m, " (no more came within %d s)",
			         JWKS_FETCH_TIMEOUT_MS / 1000);
		} else if (rc < 0) {
			size_t m = strlen(err);
			snprintf(err + m, errlen - m, " (%s)", why);
		}
		free(buf);
		return NULL;
	}
	if (a.status != 200) {
		a.body[a.body_len] = '\0'; /* within buf: body_len <= what came */
		log_json_escape(start, sizeof start, a.body); /* its start, for the log */
		if (a.status >= 300 && a.status < 400 && a.location[0]) {
			char *to = redact_url(a.location); /* it may carry the query on */
			snprintf(err, errlen, "answered %d, a redirect to %s: set jwt_jwks_url to where "
			                      "it leads",
			         a.status, to ? to : "(out of memory)");
			free(to);
		} else
			snprintf(err, errlen, "answered %d%s%s", a.status, start[0] ? ": " : "", start);
		free(buf);
		return NULL;
	}
	if (a.body_len > JWKS_ANSWER_MAX) {
		snprintf(err, errlen, "the answer is larger than %d bytes", JWKS_ANSWER_MAX);
		free(buf);
		return NULL;
	}
	memmove(buf, a.body, a.body_len);
	buf[a.body_len] = '\0';
	*len = a.body_len;
	return buf;
}

/* Key sets (tls_pubkeys) loaded and not yet freed: jwks_key_sets_live. */
static atomic_int n_keysets;

int jwks_key_sets_live(void) { return atomic_load(&n_keysets); }

static void *keys_load(const jwks_pem *p, int *nrsa, int *nec, char *err, size_t errlen)
{
	void *keys = tls_pubkeys_load(p->pem, p->len, p->labels, p->kids, nrsa, nec, err, errlen);
	if (keys)
		atomic_fetch_add(&n_keysets, 1);
	return keys;
}

static void keys_free(void *keys)
{
	if (!keys)
		return;
	tls_pubkeys_free(keys);
	atomic_fetch_sub(&n_keysets, 1);
}

/* A set read: its keys loaded (NULL: it has none evhost can use), the keys
 * left out, and what tells it from another. */
typedef struct loaded {
	void *keys;
	int nrsa, nec, skipped, unusable, nnotes;
	char note[JWKS_NOTES_MAX][sizeof ((jwks_pem *)0)->note[0]];
	char *fingerprint;
} loaded;

/* jwks_check_fn: the loader reads the key alone. Its error names the key
 * ("JWKS key 2 (kid 'k') is not a public key OpenSSL can read (...)") when
 * the key is at fault; any other (out of memory, no TLS library) is not the
 * key's, and fails the fetch rather than leave a good key out. */
static int check_key(const char *pem, size_t len, const char *label, const char *kid,
                     void *arg, char *err, size_t errlen)
{
	/* The loader looks at the label after the last block as it looks for
	 * another: one per block and one more. */
	const char *labels[2] = {label, NULL}, *kids[2] = {kid, NULL};
	size_t n = strlen(label);
	int nrsa, nec;
	void *keys = tls_pubkeys_load(pem, len, labels, kids, &nrsa, &nec, err, errlen);
	(void)arg;
	if (keys) {
		tls_pubkeys_free(keys);
		return 0;
	}
	return strncmp(err, label, n) == 0 && strncmp(err + n, " is ", 4) == 0 ? 1 : -1;
}

/* The set text[0..n) turned into keys, those evhost cannot use left out
 * (RFC 7517, 5) and noted in out. 0; 1 for a set with no key evhost can use
 * (out->keys NULL, why in err); -1 with the reason in err. */
static int load_set(const char *text, size_t n, loaded *out, char *err, size_t errlen)
{
	jwks_pem p;
	textbuf fp = {0};
	int rc;
	memset(out, 0, sizeof *out);
	if ((rc = jwks_to_pem_usable(text, n, check_key, NULL, &p, err, errlen)) == -1)
		return -1;
	out->skipped = p.skipped;
	out->unusable = p.unusable;
	out->nnotes = p.nnotes;
	memcpy(out->note, p.note, sizeof out->note);
	if (rc == 0 && !(out->keys = keys_load(&p, &out->nrsa, &out->nec, err, errlen))) {
		jwks_pem_free(&p);
		return -1;
	}
	/* The keys and their kids, and those left out: a set that changes only
	 * in a key evhost cannot use is said again. */
	if (p.pem)
		tb_puts(&fp, p.pem);
	for (int i = 0; i < p.nkeys; i++) {
		tb_puts(&fp, "kid:");
		tb_puts(&fp, p.kids[i] ? p.kids[i] : "");
		tb_puts(&fp, "\n");
	}
	for (int i = 0; i < p.nnotes; i++) {
		tb_puts(&fp, "left out:");
		tb_puts(&fp, p.note[i]);
		tb_puts(&fp, "\n");
	}
	if (p.unusable > p.nnotes)
		tb_printf(&fp, "left out: %d more\n", p.unusable - p.nnotes);
	jwks_pem_free(&p);
	if (fp.oom) {
		free(fp.p);
		fp.p = NULL;
	} else if (!fp.p) {
		fp.p = strdup(""); /* no key, none left out */
	}
	if (!fp.p) {
		snprintf(err, errlen, "out of memory");
		keys_free(out->keys);
		out->keys = NULL;
		return -1;
	}
	out->fingerprint = fp.p;
	return out->keys ? 0 : 1;
}

/* Each key of l left out as one evhost cannot use, said at WARN (the
 * first JWKS_NOTES_MAX by name), once for each set that brings them. */
static void say_unusable(const jwks_fetcher *f, const loaded *l)
{
	for (int i = 0; i < l->nnotes; i++)
		log_warn("host", "[auth] the JWKS from %s has a key evhost cannot use, left out: %s",
		         f->shown, l->note[i]);
	if (l->unusable > l->nnotes)
		log_warn("host", "[auth] the JWKS from %s has %d more key(s) evhost cannot use, left "
		                 "out (the first %d are named above)",
		         f->shown, l->unusable - l->nnotes, l->nnotes);
}

/* Put the set in use (taking l's keys; none: the provider's tokens are
 * refused); 1 when it differs from the one in use, 0 when the same (l's
 * keys freed). */
static int use_set(jwks_fetcher *f, loaded *l)
{
	void *old;
	if (f->fingerprint && !strcmp(f->fingerprint, l->fingerprint)) {
		keys_free(l->keys);
		free(l->fingerprint);
		return 0;
	}
	pthread_rwlock_wrlock(&f->rw);
	old = f->keys;
	f->keys = l->keys;
	f->nrsa = l->nrsa;
	f->nec = l->nec;
	f->no_usable = !l->keys;
	pthread_rwlock_unlock(&f->rw);
	atomic_store(&n_unusable, l->unusable);
	keys_free(old);
	free(f->fingerprint);
	f->fingerprint = l->fingerprint;
	return 1;
}

/* The URL's SHA-256, in hex: what the cache is matched by, so that its
 * query (which may hold a key) is not written in state_dir, nor in the
 * backups made of it. */
static void url_digest(const char *url, char hex[2 * crypto_hash_sha256_BYTES + 1])
{
	unsigned char h[crypto_hash_sha256_BYTES];
	crypto_hash_sha256(h, (const unsigned char *)url, strlen(url));
	sodium_bin2hex(hex, 2 * crypto_hash_sha256_BYTES + 1, h, sizeof h);
}

/* The fetcher that keeps the cache: the one last started (a reload's new
 * one, from its first fetch on), or again the one it was to replace when
 * it could not start. A fetcher a reload replaced may still end a fetch
 * after its successor kept its set (one that came whole as the reload gave
 * it up, or that was being read then): it must not put its provider's keys
 * back, which a restart while the new provider is down would not use
 * (another URL's). Checked and written under cache_mu, so that no write
 * begins after another fetcher took the cache over. */
static pthread_mutex_t cache_mu = PTHREAD_MUTEX_INITIALIZER;
static jwks_fetcher *cache_owner;

/* Keep the set in state_dir for a start while the provider is down: the
 * URL (as the log shows it, and its digest), when it was fetched, and the
 * set as fetched (JSON already: it is put in as it came, not parsed
 * again); replaced whole (fileio.h), by the cache's owner only. A failure
 * is logged and changes nothing else. */
static void save_cache(jwks_fetcher *f, const char *text, size_t n)
{
	char when[32], err[PATH_MAX + 256], *url, digest[2 * crypto_hash_sha256_BYTES + 1];
	size_t cap = strlen(f->shown) * 6 + 1;
	time_t now = time(NULL);
	struct tm tm;
	textbuf b = {0};

	if (!f->cache_path)
		return;
	if (!(url = malloc(cap))) {
		log_warn("host", "cannot keep the JWKS in %s: out of memory", f->cache_path);
		return;
	}
	log_json_escape(url, cap, f->shown);
	url_digest(f->url, digest);
	strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tm));
	tb_puts(&b, "{\"url\":\"");
	tb_puts(&b, url);
	tb_puts(&b, "\",\"url_sha256\":\"");
	tb_puts(&b, digest);
	tb_puts(&b, "\",\"fetched_at\":\"");
	tb_puts(&b, when);
	tb_puts(&b, "\",\"jwks\":");
	tb_put(&b, text, n);
	tb_puts(&b, "}\n");
	free(url);
	pthread_mutex_lock(&cache_mu);
	if (cache_owner != f)
		log_info("host", "[auth] the JWKS fetched from %s is not kept in %s: a reload "
		                 "replaced its fetcher (the cache is the new one's)",
		         f->shown, f->cache_path);
	else if (b.oom)
		log_warn("host", "cannot keep the JWKS in %s: out of memory", f->cache_path);
	else if (file_replace(f->cache_path, b.p, b.n, 0640, (uid_t)-1, (gid_t)-1, err,
	                      sizeof err) != 0)
		log_warn("host", "cannot keep the JWKS in %s: %s", f->cache_path, err);
	pthread_mutex_unlock(&cache_mu);
	free(b.p);
}

/* f keeps the cache from now on; the owner before, which keeps it again
 * should f not start. */
static jwks_fetcher *own_cache(jwks_fetcher *f)
{
	jwks_fetcher *was;
	pthread_mutex_lock(&cache_mu);
	was = cache_owner;
	cache_owner = f;
	pthread_mutex_unlock(&cache_mu);
	return was;
}

/* Whether `when` (save_cache's "YYYY-MM-DDTHH:MM:SSZ") is at most max_age_s
 * ago; a time that cannot be read is not. */
static int fetched_recently(const char *when, int64_t max_age_s)
{
	struct tm tm;
	const char *end;
	time_t t;

	memset(&tm, 0, sizeof tm);
	end = strptime(when, "%Y-%m-%dT%H:%M:%SZ", &tm);
	if (!end || *end || (t = timegm(&tm)) == (time_t)-1)
		return 0;
	return (int64_t)time(NULL) - (int64_t)t <= max_age_s;
}

/* The keys kept by an earlier run, when fetching at start failed: 0 when
 * they are in use. Said in the log either way, unless there is no cache. */
static int use_cache(jwks_fetcher *f)
{
	char err[512], *text = NULL, *set_text = NULL, *other = NULL;
	char digest[2 * crypto_hash_sha256_BYTES + 1];
	const cJSON *url, *when, *set, *kept_digest;
	cJSON *root = NULL;
	loaded l;
	long size = 0;
	FILE *fp;
	int rc = -1;

	if (!f->cache_path || !(fp = fopen(f->cache_path, "re")))
		return -1;
	if (fseek(fp, 0, SEEK_END) != 0 || (size = ftell(fp)) < 0 || fseek(fp, 0, SEEK_SET) != 0 ||
	    size > JWKS_ANSWER_MAX + 4096) {
		log_warn("host", "cannot read %s: %s: not used", f->cache_path,
		         size > JWKS_ANSWER_MAX + 4096 ? "too large" : strerror(errno));
		fclose(fp);
		return -1;
	}
	if (!(text = malloc((size_t)size + 1)) || fread(text, 1, (size_t)size, fp) != (size_t)size) {
		log_warn("host", "cannot read %s: %s: not used", f->cache_path,
		         text ? "a short read" : "out of memory");
		fclose(fp);
		free(text);
		return -1;
	}
	fclose(fp);
	text[size] = '\0';
	root = cJSON_ParseWithLength(text, (size_t)size);
	url = cJSON_GetObjectItemCaseSensitive(root, "url");
	when = cJSON_GetObjectItemCaseSensitive(root, "fetched_at");
	set = cJSON_GetObjectItemCaseSensitive(root, "jwks");
	kept_digest = cJSON_GetObjectItemCaseSensitive(root, "url_sha256");
	url_digest(f->url, digest);
	if (!cJSON_IsString(url) || !cJSON_IsString(when) || !cJSON_IsObject(set)) {
		log_warn("host", "%s is not a JWKS cache evhostd wrote: not used", f->cache_path);
	} else if (cJSON_IsString(kept_digest) ? strcmp(kept_digest->valuestring, digest) != 0
	                                       : strcmp(url->valuestring, f->url) != 0) {
		/* An older evhostd kept the URL whole: shown as the log shows URLs. */
		other = redact_url(url->valuestring);
		log_info("host", "%s holds the keys of %s%s, not of %s: not used", f->cache_path,
		         other ? other : "another URL",
		         other && !strcmp(other, f->shown) ? " (another query)" : "", f->shown);
	} else if (!fetched_recently(when->valuestring, f->cache_max_age_s)) {
		log_warn("host", "%s holds the keys fetched from %s at %s, longer ago than [auth] "
		                 "jwt_jwks_cache_max_age (%lld s) allows: not used (the provider may "
		                 "have withdrawn some since)",
		         f->cache_path, f->shown, when->valuestring, (long long)f->cache_max_age_s);
	} else if (!(set_text = cJSON_PrintUnformatted(set))) {
		log_warn("host", "out of memory reading %s", f->cache_path);
	} else if ((rc = load_set(set_text, strlen(set_text), &l, err, sizeof err)) != 0) {
		/* A set without usable keys: its tokens wait for a fetch (503). */
		if (rc > 0)
			free(l.fingerprint);
		rc = -1;
		log_warn("host", "the keys in %s are not used: %s", f->cache_path, err);
	} else {
		use_set(f, &l);
		say_unusable(f, &l);
		log_warn("host", "[auth] using the keys fetched from %s at %s, kept in %s (%d RSA for "
		                 "RS256, %d EC for ES256), until a fetch succeeds",
		         f->shown, when->valuestring, f->cache_path, f->nrsa, f->nec);
		rc = 0;
	}
	cJSON_Delete(root);
	free(other);
	free(text);
	free(set_text);
	return rc;
}

/* The pause before the next attempt after `failures` failures in a row. */
static int64_t retry_ms(const jwks_fetcher *f)
{
	int64_t ms = 1000, cap = f->refresh_ms;
	for (int i = 1; i < f->failures && ms < JWKS_RETRY_MAX_MS; i++)
		ms *= 2;
	if (ms > JWKS_RETRY_MAX_MS)
		ms = JWKS_RETRY_MAX_MS;
	return ms < cap ? ms : cap;
}

/* One fetch: the set in use when it is good (logged when it changed), else
 * the reason logged and the keys in use kept. 0 or -1. */
static int fetch_once(jwks_fetcher *f, int first)
{
	char err[1024], next[32], every[32];
	size_t n = 0;
	char *text = download(f, &n, err, sizeof err);
	loaded l;
	int changed, empty, had_keys = f->fingerprint != NULL;

	if (!text && atomic_load(&f->abort)) {
		log_info("host", "[auth] the fetch of the JWKS from %s under way is given up: its "
		         "fetcher stops (a stop, or a reload that replaces it)",
		         f->shown);
		return -1;
	}
	if (!text || (empty = load_set(text, n, &l, err, sizeof err)) < 0) {
		atomic_fetch_add(&n_failed, 1);
		f->failures++;
		if (first)
			log_warn("host", "[auth] cannot fetch the JWKS from %s: %s", f->shown, err);
		else
			log_warn("host", "[auth] cannot fetch the JWKS from %s: %s; %s, next try in %s s",
			         f->shown, err,
			         f->keys        ? "the keys fetched before stay in use"
			         : f->no_usable ? "tokens of its issuer are still refused (its last set "
			                          "had no key evhost can use)"
			                        : "tokens of its issuer are answered 503 until it succeeds",
			         log_seconds(next, sizeof next, retry_ms(f)));
		free(text);
		return -1;
	}
	atomic_fetch_add(&n_ok, 1);
	atomic_store(&last_ok_s, (int64_t)time(NULL));
	f->failures = 0;
	/* A set the provider answered is what it signs with now, even with no
	 * key evhost can use (it withdrew them all, or moved to another
	 * algorithm): the keys it withdrew are not kept. */
	changed = use_set(f, &l);
	if (changed)
		say_unusable(f, &l);
	if (changed && empty)
		log_error("host", "[auth] the JWKS from %s has no key evhost can use (%s): tokens of %s "
		                  "are refused until it publishes an RS256 or ES256 signing key%s",
		          f->shown, err, f->issuer,
		          had_keys ? "; the keys fetched before are no longer used" : "");
	else if (changed && !had_keys)
		log_info("host", "[auth] tokens of %s are checked with the key(s) fetched from %s (%d "
		                 "RSA for RS256, %d EC for ES256); refreshed every %s s",
		         f->issuer, f->shown, f->nrsa, f->nec,
		         log_seconds(every, sizeof every, f->refresh_ms));
	else if (changed)
		log_info("host", "[auth] the JWKS from %s changed: %d key(s) now (%d RSA for RS256, %d "
		                 "EC for ES256)",
		         f->shown, f->nrsa + f->nec, f->nrsa, f->nec);
	if (changed && !empty && l.skipped)
		log_info("host", "[auth] %d key(s) of the JWKS from %s left out: not for RS256 or "
		                 "ES256 signatures (use, key_ops, alg, kty or crv)",
		         l.skipped, f->shown);
	/* Every good fetch, so that its time is the last one's. */
	save_cache(f, text, n);
	free(text);
	return 0;
}

static void *fetcher_main(void *arg)
{
	jwks_fetcher *f = arg;
	int64_t next = clock_mono_ms() + (f->failures ? retry_ms(f) : (int64_t)f->refresh_ms);
	log_thread_name("evh-jwks", NULL);
	httpc_abort_on(&f->abort);
	pthread_mutex_lock(&f->mu);
	for (;;) {
		struct timespec until;
		int64_t now = clock_mono_ms();
		int rc;
		if (f->stopping)
			break;
		if (!f->kick && now < next) {
			until = clock_after_ms(CLOCK_MONOTONIC, next - now);
			pthread_cond_timedwait(&f->cv, &f->mu, &until);
			continue;
		}
		f->kick = 0;
		f->fetching = 1;
		f->last_attempt_ms = now;
		pthread_mutex_unlock(&f->mu);
		rc = fetch_once(f, 0);
		pthread_mutex_lock(&f->mu);
		f->fetching = 0;
		f->last_failed = rc != 0;
		f->attempts++;
		pthread_cond_broadcast(&f->cv);
		next = clock_mono_ms() + (rc == 0 ? (int64_t)f->refresh_ms : retry_ms(f));
	}
	pthread_mutex_unlock(&f->mu);
	return NULL;
}

int jwks_fetcher_start(jwks_fetcher *f)
{
	jwks_fetcher *was = own_cache(f);
	int rc;
	f->last_attempt_ms = clock_mono_ms();
	if ((f->last_failed = fetch_once(f, 1) != 0)) {
		if (use_cache(f) != 0)
			log_warn("host", "[auth] no keys for the tokens of %s yet: they are answered 503 "
			                 "until a fetch from %s succeeds (next try in 1 s)",
			         f->issuer, f->shown);
		else
			log_info("host", "[auth] next try to fetch the JWKS from %s in 1 s", f->shown);
	}
	f->attempts = 1;
	if ((rc = pthread_create(&f->thread, NULL, fetcher_main, f)) != 0) {
		log_error("host", "cannot start the JWKS fetcher thread: %s", strerror(rc));
		/* The fetcher it was to replace stays (a reload's), and keeps the
		 * cache again; it is alive: its maker still holds it. */
		pthread_mutex_lock(&cache_mu);
		if (cache_owner == f)
			cache_owner = was;
		pthread_mutex_unlock(&cache_mu);
		return -1;
	}
	pthread_mutex_lock(&f->mu); /* requests read it (jwks_fetcher_refetch) */
	f->started = 1;
	pthread_mutex_unlock(&f->mu);
	return 0;
}

void jwks_fetcher_signal_stop(jwks_fetcher *f)
{
	if (!f)
		return;
	pthread_mutex_lock(&f->mu);
	f->stopping = 1;
	atomic_store(&f->abort, 1);
	pthread_cond_broadcast(&f->cv);
	pthread_mutex_unlock(&f->mu);
}

/* The thread stopped (its fetch under way given up); the keys stay. */
static void stop_thread(jwks_fetcher *f)
{
	int started;
	pthread_mutex_lock(&f->mu);
	f->stopping = 1;
	atomic_store(&f->abort, 1);
	started = f->started;
	f->started = 0;
	pthread_cond_broadcast(&f->cv);
	pthread_mutex_unlock(&f->mu);
	if (started)
		pthread_join(f->thread, NULL);
}

/* f's keys freed once no reader holds them (the write lock); its readers
 * from then on go to `successor` when there is one (a reload's). */
static void drop_keys(jwks_fetcher *f, jwks_fetcher *successor)
{
	void *keys;
	pthread_rwlock_wrlock(&f->rw);
	if (successor)
		atomic_store(&f->successor, successor);
	keys = f->keys;
	f->keys = NULL;
	f->nrsa = f->nec = 0;
	f->no_usable = 0;
	pthread_rwlock_unlock(&f->rw);
	keys_free(keys);
}

void jwks_fetcher_stop(jwks_fetcher *f)
{
	if (!f)
		return;
	stop_thread(f);
	drop_keys(f, NULL);
}

jwks_fetcher *jwks_fetcher_hold(jwks_fetcher *f)
{
	if (f)
		atomic_fetch_add(&f->refs, 1);
	return f;
}

void jwks_fetcher_free(jwks_fetcher *f)
{
	/* A loop, not a recursion: a key set held across many reloads keeps a
	 * chain of them, each fetcher holding the next. */
	while (f && atomic_fetch_sub(&f->refs, 1) == 1) {
		jwks_fetcher *next = atomic_load(&f->successor);
		jwks_fetcher_stop(f);
		pthread_mutex_lock(&cache_mu); /* not one made later at its address */
		if (cache_owner == f)
			cache_owner = NULL;
		pthread_mutex_unlock(&cache_mu);
		free(f->url);
		free(f->shown);
		free(f->host);
		free(f->port);
		free(f->target);
		free(f->ca_file);
		free(f->issuer);
		free(f->cache_path);
		free(f->fingerprint);
		pthread_rwlock_destroy(&f->rw);
		pthread_mutex_destroy(&f->mu);
		pthread_cond_destroy(&f->cv);
		free(f);
		atomic_fetch_sub(&n_fetchers, 1);
		f = next;
	}
}

void jwks_fetcher_retire(jwks_fetcher *f, jwks_fetcher *old)
{
	stop_thread(old);
	/* Requests that loaded the auth keyset naming old before the reload put
	 * f's in place check with f's keys from now on, as a request does after
	 * a refresh: they do not find none (503). Old's keys are freed once no
	 * reader holds them, rather than kept until the daemon stops, one set
	 * per reload. Old itself goes with the last key set naming it
	 * (jwks_fetcher_free), and lets go of f then. */
	drop_keys(old, jwks_fetcher_hold(f));
	free(old->fingerprint); /* its thread stopped */
	old->fingerprint = NULL;
}

/* ------------------------------------------------------------- readers */

/* The fetcher whose keys a reader of f uses, its read lock taken: f, or
 * the one a reload put in its place (and so on). The successor is set under
 * the write lock, once: a reader holding a fetcher's read lock sees none. */
static jwks_fetcher *lock_current(jwks_fetcher *f)
{
	jwks_fetcher *to;
	for (;;) {
		pthread_rwlock_rdlock(&f->rw);
		if (!(to = atomic_load(&f->successor)))
			return f;
		pthread_rwlock_unlock(&f->rw);
		f = to;
	}
}

void jwks_fetcher_acquire(jwks_fetcher *f, jwks_view *v)
{
	f = lock_current(f);
	v->keys = f->keys;
	v->nrsa = f->nrsa;
	v->nec = f->nec;
	v->no_usable = f->no_usable;
}

void jwks_fetcher_release(jwks_fetcher *f)
{
	jwks_fetcher *to;
	/* The one acquire locked: successors set before it, none since (the
	 * read lock held keeps the write lock out). */
	while ((to = atomic_load(&f->successor)))
		f = to;
	pthread_rwlock_unlock(&f->rw);
}

int jwks_fetcher_refetch(jwks_fetcher *f)
{
	int64_t now = clock_mono_ms();
	struct timespec until = clock_after_ms(CLOCK_MONOTONIC, JWKS_FETCH_TIMEOUT_MS + 1000);
	uint64_t seen;
	jwks_fetcher *to;
	int done;

	while ((to = atomic_load(&f->successor))) /* replaced by a reload: that one fetches */
		f = to;
	pthread_mutex_lock(&f->mu);
	seen = f->attempts;
	if (f->stopping || !f->started ||
	    (!f->fetching && !f->kick && now - f->last_attempt_ms < JWKS_REFETCH_MIN_MS)) {
		pthread_mutex_unlock(&f->mu);
		return 0;
	}
	if (!f->fetching && !f->kick) {
		f->kick = 1;
		pthread_cond_broadcast(&f->cv);
	}
	/* A provider that failed last time may well hang until the timeout:
	 * requests do not wait for it (they would hold HTTP workers). Nor do
	 * more than a few at once: tokens naming made-up kids, sent together,
	 * would hold every worker for as long as the fetch takes. */
	if (f->last_failed || f->waiting >= JWKS_WAITERS_MAX) {
		pthread_mutex_unlock(&f->mu);
		return 0;
	}
	f->waiting++;
	while (f->attempts == seen && !f->stopping &&
	       pthread_cond_timedwait(&f->cv, &f->mu, &until) == 0)
		;
	f->waiting--;
	done = f->attempts != seen;
	pthread_mutex_unlock(&f->mu);
	return done;
}
