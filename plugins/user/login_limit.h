/* Failed-login throttling for POST /auth/login: a fixed-size table of
 * failure counters, one per account (normalised email) and one per client
 * address, in memory. No SDK calls (time comes in as an argument), so
 * tests/unit/test_login_limit.c compiles this file in directly.
 *
 * An attempt is admitted by login_limit_begin(), which reserves it in the
 * counters of its keys, and settled by login_limit_end() with its outcome.
 * A key is locked once `max` failures were counted within `window`: from
 * that failure on, for `window`, begin() refuses it without the password
 * being checked. Attempts still being checked count against `max` too, so
 * many sent at once get no more tries than sent one after another; those
 * beyond it are refused as busy (come again), not as locked: none failed. */
#ifndef EVH_LOGIN_LIMIT_H
#define EVH_LOGIN_LIMIT_H
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define LOGIN_KEY_BYTES 16
#define LOGIN_SECRET_BYTES 32
#define LOGIN_WAYS 8 /* slots per bucket */

typedef struct login_slot {
	unsigned char key[LOGIN_KEY_BYTES];
	int64_t first_ms;        /* the first failure counted; 0: none */
	int64_t locked_until_ms; /* 0: not locked */
	uint32_t failures;
	uint32_t pending; /* admitted attempts not yet settled */
} login_slot;

typedef struct login_limit {
	pthread_mutex_t mu;
	int mu_ready;
	login_slot *slots; /* nbuckets * LOGIN_WAYS */
	size_t nbuckets;
	int64_t window_ms;
	/* Keys are keyed BLAKE2b hashes of what they name, so the table holds no
	 * email address and nobody outside can aim keys at one bucket. */
	unsigned char secret[LOGIN_SECRET_BYTES];
} login_limit;

/* One counter an attempt is held to: `max` failures (0: not limited). */
typedef struct login_rule {
	unsigned char key[LOGIN_KEY_BYTES];
	unsigned max;
} login_rule;

typedef enum login_outcome {
	LOGIN_FAILED,    /* wrong password or no such account */
	LOGIN_SUCCEEDED, /* the right password: see login_limit_end's `reset` */
	LOGIN_UNDECIDED, /* the password could not be checked: counts nothing */
} login_outcome;

/* A table of at least `entries` slots (rounded up to whole buckets) with a
 * random secret. 0, or -1 when out of memory. */
int login_limit_init(login_limit *l, size_t entries, int64_t window_ms);
void login_limit_fini(login_limit *l);

/* The key of `len` bytes of `data` of kind `kind` ('e' an email, 'a' an
 * address: the same bytes of two kinds are two keys). */
void login_limit_key(const login_limit *l, char kind, const void *data, size_t len,
                     unsigned char out[LOGIN_KEY_BYTES]);

/* The key of a client address: an IPv4 address, or an IPv6 address's /64
 * (one subscriber's network), an IPv4-mapped IPv6 address as IPv4; any
 * other text as it is. */
void login_limit_addr_key(const login_limit *l, const char *addr,
                          unsigned char out[LOGIN_KEY_BYTES]);

/* What login_limit_begin says of an attempt. */
typedef enum login_admission {
	LOGIN_ADMITTED = 0,
	/* A rule is locked: `max` failures were counted. */
	LOGIN_LOCKED = -1,
	/* No lock, but attempts still being checked fill a rule's counter (or
	 * its bucket has no slot free of them): nothing failed yet, the client
	 * is told to come again in a second, not that it failed. */
	LOGIN_BUSY = -2,
} login_admission;

/* Admit an attempt held to the `n` rules (those with max 0 are skipped):
 * LOGIN_ADMITTED, its reservations made (settle it with login_limit_end);
 * else LOGIN_LOCKED when a rule is locked (*which the locked rule, the
 * longest lock of them), LOGIN_BUSY when none is, (*which the rule that is
 * full), and *retry_ms the wait before another try is worth it. */
login_admission login_limit_begin(login_limit *l, const login_rule *rules, size_t n,
                                  int64_t now_ms, int64_t *retry_ms, size_t *which);

/* Settle an admitted attempt. LOGIN_SUCCEEDED clears the counter of rule
 * `reset` (an index, or n for none). Returns a bit mask of the rules this
 * failure locked (bit i for rules[i]), so the caller can log it once. */
unsigned login_limit_end(login_limit *l, const login_rule *rules, size_t n, login_outcome out,
                         size_t reset, int64_t now_ms);

#endif
