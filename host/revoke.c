/* Signed-out subjects (revoke.h): a hash table of subject -> moment, and
 * its copy in SQLite. */
#include "revoke.h"

#include <pthread.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "fileio.h"
#include "log.h"

/* Format of the file; a newer one (a later evhostd's) is not guessed at. */
#define REVOKE_SCHEMA 1
/* Lapsed revocations are dropped at most this often. */
#define REVOKE_PRUNE_MS 60000
/* The file keeps a moment this far past the latest token signed (meta
 * signed_ms): written once per this much signing, not at every token, and
 * still no earlier than any token signed when the daemon crashes. */
#define REVOKE_SIGNED_AHEAD_MS 10000

const char revoke_reason_revoked[] = "token revoked: its subject was signed out after it was "
                                     "issued (log in again)";
const char revoke_reason_no_iat[] = "token has no iat (this host's tokens carry one)";
const char revoke_reason_too_long[] = "token lives longer than [auth] token_ttl_max allows";

typedef struct entry {
	struct entry *next;
	int64_t since, until;
	char subject[];
} entry;

struct revocations {
	pthread_rwlock_t lock; /* the table */
	entry **buckets;
	size_t nbuckets; /* a power of two */
	atomic_size_t count;
	unsigned char hash_key[crypto_shorthash_KEYBYTES];
	pthread_mutex_t db_lock; /* the file, and last_prune */
	sqlite3 *db;
	int64_t last_prune;
	char *path;
	int64_t ttl_high_s; /* the longest token_ttl_max noted (under db_lock) */
	/* The latest moment a token was signed at (revocations_sign_ms): a
	 * sign-out is no earlier, whatever the clock did meanwhile. Read back
	 * at a start (meta signed_ms): a token signed while the clock ran
	 * ahead outlives the run that signed it. */
	_Atomic int64_t last_signed;
	/* signed_ms as the file has it (written under db_lock), and when a
	 * failure to write it was last said. */
	_Atomic int64_t saved_signed;
	int64_t warned_save_ms;
	int nomem; /* revocations_open: what failed was out of memory */
};

/* SipHash with a key of this run: subjects are the plugins' to choose,
 * maybe from what clients send. */
static uint64_t hash_of(const revocations *r, const char *subject)
{
	unsigned char h[crypto_shorthash_BYTES];
	uint64_t v;
	crypto_shorthash(h, (const unsigned char *)subject, strlen(subject), r->hash_key);
	memcpy(&v, h, sizeof v);
	return v;
}

static size_t bucket_of(const revocations *r, const char *subject)
{
	return (size_t)(hash_of(r, subject) & (r->nbuckets - 1));
}

static entry *find(const revocations *r, const char *subject)
{
	for (entry *e = r->buckets[bucket_of(r, subject)]; e; e = e->next)
		if (!strcmp(e->subject, subject))
			return e;
	return NULL;
}

/* Twice the buckets when there are more entries than buckets; without the
 * memory for it the chains just grow longer. Under the write lock. */
static void grow(revocations *r)
{
	size_t n = r->nbuckets * 2;
	entry **b;
	if (atomic_load(&r->count) <= r->nbuckets || !(b = calloc(n, sizeof *b)))
		return;
	for (size_t i = 0; i < r->nbuckets; i++) {
		entry *e = r->buckets[i], *next;
		for (; e; e = next) {
			size_t k = (size_t)(hash_of(r, e->subject) & (n - 1));
			next = e->next;
			e->next = b[k];
			b[k] = e;
		}
	}
	free(r->buckets);
	r->buckets = b;
	r->nbuckets = n;
}

/* Hold `since` (the later of the two) until `until` for `subject`. Under
 * the write lock. -1 out of memory. */
static int put(revocations *r, const char *subject, int64_t since, int64_t until)
{
	entry *e = find(r, subject);
	size_t len, k;
	if (e) {
		if (since > e->since)
			e->since = since;
		if (until > e->until)
			e->until = until;
		return 0;
	}
	len = strlen(subject);
	if (!(e = malloc(sizeof *e + len + 1)))
		return -1;
	memcpy(e->subject, subject, len + 1);
	e->since = since;
	e->until = until;
	k = bucket_of(r, subject);
	e->next = r->buckets[k];
	r->buckets[k] = e;
	atomic_fetch_add(&r->count, 1);
	grow(r);
	return 0;
}

/* Drop what has lapsed by `now_ms`. Under the write lock. */
static void prune_table(revocations *r, int64_t now_ms)
{
	for (size_t i = 0; i < r->nbuckets; i++) {
		entry **pp = &r->buckets[i];
		while (*pp) {
			entry *e = *pp;
			if (e->until > now_ms) {
				pp = &e->next;
				continue;
			}
			*pp = e->next;
			free(e);
			atomic_fetch_sub(&r->count, 1);
		}
	}
}

static int db_fail(sqlite3 *db, const char *what, char *err, size_t errlen)
{
	snprintf(err, errlen, "%s: %s", what, db ? sqlite3_errmsg(db) : "out of memory");
	return -1;
}

static int db_exec(sqlite3 *db, const char *sql, const char *what, char *err, size_t errlen)
{
	return sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0
	                                                           : db_fail(db, what, err, errlen);
}

/* 1 when the file has its meta table (or cannot say: the read that needs
 * it reports the error). */
static int db_has_meta(sqlite3 *db)
{
	sqlite3_stmt *st = NULL;
	int rc = SQLITE_ERROR;
	if (sqlite3_prepare_v2(db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
	                       -1, &st, NULL) == SQLITE_OK)
		rc = sqlite3_step(st);
	sqlite3_finalize(st);
	return rc != SQLITE_DONE;
}

static int db_schema(sqlite3 *db, char *err, size_t errlen)
{
	sqlite3_stmt *st = NULL;
	int version = -1;
	if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW)
		version = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	if (version < 0)
		return db_fail(db, "cannot read it", err, errlen);
	if (version > REVOKE_SCHEMA) {
		snprintf(err, errlen, "it was written by a newer evhostd (format %d; this one reads %d)",
		         version, REVOKE_SCHEMA);
		return -1;
	}
	/* Format 1 gained its meta table after files of it were written (a
	 * build of early December 2026 made them without it): such a file is
	 * given one, its sign-outs kept. */
	if (version == REVOKE_SCHEMA && db_has_meta(db))
		return 0;
	/* meta: ttl_high_s, the longest token_ttl_max ever in force; signed_ms,
	 * no earlier than the latest token signed (REVOKE_SIGNED_AHEAD_MS). */
	return db_exec(db,
	               "BEGIN IMMEDIATE;"
	               "CREATE TABLE IF NOT EXISTS revoked (subject TEXT PRIMARY KEY NOT NULL,"
	               " since_ms INTEGER NOT NULL, until_ms INTEGER NOT NULL) WITHOUT ROWID;"
	               "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY NOT NULL,"
	               " value INTEGER NOT NULL) WITHOUT ROWID;"
	               "PRAGMA user_version = 1;"
	               "COMMIT",
	               "cannot create its tables", err, errlen);
}

/* meta's value `name` into *out; left as it is when the file has none. */
static int db_meta_get(sqlite3 *db, const char *name, int64_t *out, char *err, size_t errlen)
{
	sqlite3_stmt *st = NULL;
	int rc;
	if (sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE name = ?", -1, &st, NULL) !=
	    SQLITE_OK)
		return db_fail(db, "cannot read it", err, errlen);
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*out = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : db_fail(db, "cannot read it", err, errlen);
}

/* Raise meta's value `name` to `value` (never lowers it). */
static int db_meta_raise(sqlite3 *db, const char *name, int64_t value, char *err, size_t errlen)
{
	sqlite3_stmt *st = NULL;
	int rc;
	if (sqlite3_prepare_v2(db,
	                       "INSERT INTO meta (name, value) VALUES (?, ?) "
	                       "ON CONFLICT (name) DO UPDATE SET value = max(value, "
	                       "excluded.value)",
	                       -1, &st, NULL) != SQLITE_OK)
		return db_fail(db, "cannot write it", err, errlen);
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, value);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : db_fail(db, "cannot write it", err, errlen);
}

/* What meta holds: the longest token_ttl_max noted, and the moment no
 * token was signed after. */
static int db_meta_load(revocations *r, char *err, size_t errlen)
{
	int64_t signed_ms = 0;
	if (db_meta_get(r->db, "ttl_high_s", &r->ttl_high_s, err, errlen) ||
	    db_meta_get(r->db, "signed_ms", &signed_ms, err, errlen))
		return -1;
	atomic_store(&r->last_signed, signed_ms);
	atomic_store(&r->saved_signed, signed_ms);
	return 0;
}

static int db_load(revocations *r, int64_t now_ms, char *err, size_t errlen)
{
	sqlite3_stmt *st = NULL;
	int rc;
	if (sqlite3_prepare_v2(r->db, "SELECT subject, since_ms, until_ms FROM revoked WHERE "
	                              "until_ms > ?",
	                       -1, &st, NULL) != SQLITE_OK)
		return db_fail(r->db, "cannot read it", err, errlen);
	sqlite3_bind_int64(st, 1, now_ms);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *subject = (const char *)sqlite3_column_text(st, 0);
		if (!subject)
			continue;
		if (put(r, subject, sqlite3_column_int64(st, 1), sqlite3_column_int64(st, 2)) != 0) {
			sqlite3_finalize(st);
			snprintf(err, errlen, "out of memory reading it");
			r->nomem = 1;
			return -1;
		}
	}
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : db_fail(r->db, "cannot read it", err, errlen);
}

int revocations_open(revocations **out, const char *path, int64_t now_ms, char *err,
                     size_t errlen)
{
	revocations *r = calloc(1, sizeof *r);
	char why[512];
	int rc;

	*out = NULL;
	if (!r || !(r->buckets = calloc(64, sizeof *r->buckets)) || !(r->path = strdup(path))) {
		if (r)
			free(r->buckets);
		free(r);
		snprintf(err, errlen, "%s: out of memory", path);
		return -2;
	}
	r->nbuckets = 64;
	if (sodium_init() < 0) {
		free(r->path);
		free(r->buckets);
		free(r);
		snprintf(err, errlen, "%s: libsodium failed to initialise", path);
		return -1;
	}
	randombytes_buf(r->hash_key, sizeof r->hash_key);
	pthread_rwlock_init(&r->lock, NULL);
	pthread_mutex_init(&r->db_lock, NULL);
	file_create_db(path);
	rc = sqlite3_open_v2(path, &r->db,
	                     SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK)
		rc = db_fail(r->db, "cannot open it", why, sizeof why);
	else
		rc = sqlite3_busy_timeout(r->db, 5000) != SQLITE_OK ||
		             db_exec(r->db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL",
		                     "cannot set it up", why, sizeof why) ||
		             db_schema(r->db, why, sizeof why) || db_meta_load(r, why, sizeof why) ||
		             db_load(r, now_ms, why, sizeof why)
		         ? -1
		         : 0;
	if (rc != 0) {
		int nomem = r->nomem || !r->db || sqlite3_errcode(r->db) == SQLITE_NOMEM;
		snprintf(err, errlen, "%s: %s", path, why);
		revocations_close(r);
		return nomem ? -2 : -1;
	}
	r->last_prune = now_ms;
	*out = r;
	return 0;
}

void revocations_close(revocations *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->nbuckets; i++)
		for (entry *e = r->buckets[i], *next; e; e = next) {
			next = e->next;
			free(e);
		}
	free(r->buckets);
	free(r->path);
	sqlite3_close(r->db);
	pthread_rwlock_destroy(&r->lock);
	pthread_mutex_destroy(&r->db_lock);
	free(r);
}

static int db_put(revocations *r, const char *subject, int64_t since, int64_t until,
                  int64_t now_ms, char *err, size_t errlen)
{
	sqlite3_stmt *st = NULL;
	int rc;
	if (db_exec(r->db, "BEGIN IMMEDIATE", "cannot write it", err, errlen))
		return -1;
	if (sqlite3_prepare_v2(r->db,
	                       "INSERT INTO revoked (subject, since_ms, until_ms) VALUES (?, ?, ?) "
	                       "ON CONFLICT (subject) DO UPDATE SET "
	                       "since_ms = max(since_ms, excluded.since_ms), "
	                       "until_ms = max(until_ms, excluded.until_ms)",
	                       -1, &st, NULL) != SQLITE_OK)
		goto fail;
	sqlite3_bind_text(st, 1, subject, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, since);
	sqlite3_bind_int64(st, 3, until);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	st = NULL;
	if (rc != SQLITE_DONE)
		goto fail;
	if (now_ms - r->last_prune >= REVOKE_PRUNE_MS) {
		if (sqlite3_prepare_v2(r->db, "DELETE FROM revoked WHERE until_ms <= ?", -1, &st,
		                       NULL) != SQLITE_OK)
			goto fail;
		sqlite3_bind_int64(st, 1, now_ms);
		rc = sqlite3_step(st);
		sqlite3_finalize(st);
		if (rc != SQLITE_DONE)
			goto fail;
	}
	if (sqlite3_exec(r->db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK)
		return 0;
fail:
	db_fail(r->db, "cannot write it", err, errlen);
	sqlite3_exec(r->db, "ROLLBACK", NULL, NULL, NULL);
	return -1;
}

int revocations_add(revocations *r, const char *subject, int64_t now_ms, int64_t until_ms,
                    char *err, size_t errlen)
{
	/* After every token signed so far: one signed while the clock ran
	 * ahead (then set back) carries a later moment than now. */
	int64_t since = atomic_load(&r->last_signed);
	int rc, prune;

	since = since >= now_ms ? since + 1 : now_ms;
	/* until_ms was reckoned from now: a token signed that far ahead lives
	 * that much longer, and its sign-out must outlast it. */
	if (since > now_ms && until_ms < INT64_MAX - (since - now_ms))
		until_ms += since - now_ms;
	/* In force before it is on disk: a failed write must not leave the
	 * tokens good. */
	pthread_rwlock_wrlock(&r->lock);
	rc = put(r, subject, since, until_ms);
	pthread_rwlock_unlock(&r->lock);
	if (rc != 0) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	pthread_mutex_lock(&r->db_lock);
	prune = now_ms - r->last_prune >= REVOKE_PRUNE_MS;
	rc = db_put(r, subject, since, until_ms, now_ms, err, errlen);
	if (prune && rc == 0)
		r->last_prune = now_ms;
	pthread_mutex_unlock(&r->db_lock);
	if (prune && rc == 0) {
		pthread_rwlock_wrlock(&r->lock);
		prune_table(r, now_ms);
		pthread_rwlock_unlock(&r->lock);
	}
	return rc;
}

int64_t revocations_since(revocations *r, const char *subject, int64_t now_ms)
{
	const entry *e;
	int64_t since = 0;
	if (!r || !subject || atomic_load(&r->count) == 0)
		return 0;
	pthread_rwlock_rdlock(&r->lock);
	e = find(r, subject);
	if (e && e->until > now_ms)
		since = e->since;
	pthread_rwlock_unlock(&r->lock);
	return since;
}

int revocations_revokes(revocations *r, const char *subject, int64_t iat_ms, int64_t now_ms)
{
	int64_t since = revocations_since(r, subject, now_ms);
	/* Signed in the sign-out's millisecond: maybe before it. */
	return since && iat_ms <= since;
}

/* Keep a moment no earlier than `at` in the file, REVOKE_SIGNED_AHEAD_MS
 * ahead: the next start reads it back (revocations_open), even after a
 * crash. Not written, the token is signed all the same: the moment is
 * lost only if the daemon stops before a later write, and matters only if
 * the clock ran ahead then. */
static void save_signed(revocations *r, int64_t at)
{
	char err[512];
	int64_t value = at < INT64_MAX - REVOKE_SIGNED_AHEAD_MS ? at + REVOKE_SIGNED_AHEAD_MS : at;
	if (at <= atomic_load(&r->saved_signed))
		return;
	pthread_mutex_lock(&r->db_lock);
	/* Checked again: another thread's write may cover it by now. */
	if (at > atomic_load(&r->saved_signed)) {
		if (db_meta_raise(r->db, "signed_ms", value, err, sizeof err) == 0)
			atomic_store(&r->saved_signed, value);
		else if (log_due(&r->warned_save_ms, clock_mono_ms(), 60000))
			log_warn("host",
			         "%s: %s: when the latest token was signed is not saved (should the "
			         "clock have run ahead, a sign-out after a restart may not refuse such "
			         "a token; said at most once a minute)",
			         r->path, err);
	}
	pthread_mutex_unlock(&r->db_lock);
}

int64_t revocations_sign_ms(revocations *r, const char *subject, int64_t now_ms)
{
	int64_t since = revocations_since(r, subject, now_ms), at;
	at = since >= now_ms ? since + 1 : now_ms;
	if (r) {
		clock_raise_ms(&r->last_signed, at);
		save_signed(r, at);
	}
	return at;
}

int64_t revocations_last_signed(revocations *r) { return r ? atomic_load(&r->last_signed) : 0; }

int revocations_note_ttl(revocations *r, int64_t ttl_max_s, char *err, size_t errlen)
{
	int rc = 0;
	pthread_mutex_lock(&r->db_lock);
	if (ttl_max_s > r->ttl_high_s) {
		/* Held even if it cannot be saved: this run keeps its sign-outs
		 * that long. */
		r->ttl_high_s = ttl_max_s;
		rc = db_meta_raise(r->db, "ttl_high_s", ttl_max_s, err, errlen);
	}
	pthread_mutex_unlock(&r->db_lock);
	return rc;
}

int64_t revocations_ttl_high(revocations *r)
{
	int64_t v;
	pthread_mutex_lock(&r->db_lock);
	v = r->ttl_high_s;
	pthread_mutex_unlock(&r->db_lock);
	return v;
}

int64_t revocation_until(int64_t now_ms, int64_t ttl_high_s, int leeway_s)
{
	return now_ms + (ttl_high_s + leeway_s + 1) * 1000;
}

const char *revocations_path(const revocations *r) { return r->path; }

size_t revocations_count(revocations *r) { return r ? atomic_load(&r->count) : 0; }

const char *revocations_refuse(revocations *r, const jwt_claims *c, int64_t ttl_max_s,
                               int64_t now_ms)
{
	if (c->foreign)
		return NULL;
	if (c->iat_ms < 0)
		return revoke_reason_no_iat;
	/* No token outlives a revocation's record of it: it is kept for
	 * token_ttl_max, and a token signed for longer is not taken. */
	if (c->exp - c->iat_ms / 1000 > ttl_max_s)
		return revoke_reason_too_long;
	return revocations_revokes(r, c->sub, c->iat_ms, now_ms) ? revoke_reason_revoked : NULL;
}
