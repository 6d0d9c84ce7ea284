/* [auth] jwt_jwks_url: the identity provider's JSON Web Key Set fetched
 * from its jwks_uri at start, every jwt_jwks_refresh, and again when a
 * token names a key (kid) the set lacks (a rotation), the last good set
 * kept in state_dir/jwks-cache.json for starts while the provider is down.
 *
 * Readers (HTTP workers checking a token) hold the keys under a read lock
 * for one check; a fetch that brings a different set swaps it under the
 * write lock and frees the old one. A set the provider answers with no key
 * evhost can use replaces the keys too (its tokens are refused): a key it
 * withdrew is not kept, whether or not others remain. A key of the set that
 * evhost cannot use (malformed, refused by OpenSSL, after the first 16) is
 * left out and said at WARN once for the set; the others are used (RFC
 * 7517, 5), and a set left with none is one without usable keys. */
#ifndef EVHOST_JWKSFETCH_H
#define EVHOST_JWKSFETCH_H
#include <stdint.h>

#include "config.h"

/* How long one fetch may take, connection to last byte. */
#define JWKS_FETCH_TIMEOUT_MS 5000
/* An unknown kid fetches again only this long after the last attempt. */
#define JWKS_REFETCH_MIN_MS 5000
/* Requests that wait for that fetch at once; others are answered without
 * it, so that tokens with made-up kids cannot hold every HTTP worker. */
#define JWKS_WAITERS_MAX 4
/* Retries after a failed fetch: 1 s, then twice as long, up to this (and
 * never later than the refresh). */
#define JWKS_RETRY_MAX_MS 60000
/* The largest set taken. */
#define JWKS_ANSWER_MAX (1024 * 1024)

typedef struct jwks_fetcher jwks_fetcher;

/* A fetcher for s's jwt_jwks_url (the CAs of jwt_jwks_ca_file, or the
 * system's, read to check them; again at each fetch); nothing fetched yet.
 * NULL with the reason in err (a CA file OpenSSL cannot read, out of
 * memory). */
jwks_fetcher *jwks_fetcher_new(const settings *s, char *err, size_t errlen);
/* Does f fetch what s asks for (URL, CAs, refresh, issuer for the log)? */
int jwks_fetcher_same(const jwks_fetcher *f, const settings *s);
/* Fetch once (waiting at most JWKS_FETCH_TIMEOUT_MS), use the cache in
 * s->state_dir if that fails, then start the thread that refreshes. Every
 * outcome is logged. 0, or -1 when the thread cannot start. From here on f
 * alone writes the cache (a fetch of the fetcher it replaces that ends
 * later is not kept), unless its thread cannot start: the one that wrote
 * it before does again. */
int jwks_fetcher_start(jwks_fetcher *f);
/* The daemon stops: a fetch under way gives up now (said at info), and no
 * other begins; requests waiting for one are answered. Returns at once;
 * jwks_fetcher_stop (or _free) joins the thread. NULL: nothing. */
void jwks_fetcher_signal_stop(jwks_fetcher *f);
/* Stop the thread (a fetch under way gives up within 100 ms; name
 * resolution is not cut short) and drop the keys: readers that still hold
 * f find none. */
void jwks_fetcher_stop(jwks_fetcher *f);
/* Another reference to f (NULL: none), for one more owner that names it
 * (an auth key set, host.c); let go with jwks_fetcher_free. Any thread. */
jwks_fetcher *jwks_fetcher_hold(jwks_fetcher *f);
/* Let go of a reference (jwks_fetcher_new's, or a hold's). The last one
 * frees f (its thread stopped first, its keys dropped) and lets go of the
 * reference f had on the fetcher a reload put in its place, which may free
 * that one too. Any thread; never while holding f's keys. NULL: nothing. */
void jwks_fetcher_free(jwks_fetcher *f);
/* A reload put f in place of `old`: stop old's thread and free old's keys
 * (once no reader holds them); readers that still name old (they loaded
 * the auth keyset before the reload) get f's keys, and a refetch through
 * old is f's. Old holds a reference to f for that; the caller's references
 * to old are its own (old is freed with the last, jwks_fetcher_free). */
void jwks_fetcher_retire(jwks_fetcher *f, jwks_fetcher *old);

/* The keys a reader checks one token with, held until jwks_fetcher_release:
 * keys NULL (none fetched yet, or no_usable) or tls_pubkeys, and how many of
 * each kind. no_usable: the provider's set in use has no key evhost can use
 * (its tokens are refused, not waited for). */
typedef struct jwks_view {
	void *keys;
	int nrsa, nec;
	int no_usable;
} jwks_view;
void jwks_fetcher_acquire(jwks_fetcher *f, jwks_view *v);
void jwks_fetcher_release(jwks_fetcher *f);
/* A token names a kid the keys lack: fetch again now, unless an attempt
 * began less than JWKS_REFETCH_MIN_MS ago, and wait for that fetch (or one
 * under way), unless the last attempt failed or JWKS_WAITERS_MAX requests
 * wait already. 1 when a fetch finished (check the token again), 0 when none
 * did. Call without holding the keys. */
int jwks_fetcher_refetch(jwks_fetcher *f);
/* Fetches since the start, every fetcher's: good ones, failed ones, and
 * when the last good one ended (seconds since the epoch; 0: none). */
void jwks_stats(uint64_t *ok, uint64_t *failed, int64_t *last_ok_s);
/* Keys of the set last put in use that evhost could not use and left out
 * (malformed, refused by OpenSSL, beyond the 16 it takes; each said at WARN
 * when the set came), for /metrics. */
int jwks_unusable_keys(void);
/* The URL, for the log: the values of its query (which may hold an API
 * key) shown as "***" (redact.h). */
const char *jwks_fetcher_url(const jwks_fetcher *f);
/* Key sets loaded and not yet freed, every fetcher's (one per fetcher with
 * keys; for tests that watch them not pile up). */
int jwks_key_sets_live(void);
/* Fetchers made and not yet freed (for tests that watch the ones reloads
 * replaced go once nothing names them). */
int jwks_fetchers_live(void);
#endif
