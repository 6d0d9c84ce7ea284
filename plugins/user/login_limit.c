/* Failed-login counters in a fixed-size, set-associative table: a key's
 * bucket is fixed by its hash, and a key without a slot there takes the one
 * worth least (see claim()), so memory stays what init took however many
 * emails and addresses are tried. One mutex guards it all: it is held for
 * a scan of one bucket, never while a password is checked. */
#include "login_limit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

/* Retry-After for an attempt refused because others still being checked
 * already fill its counter: they are settled within a hash or two. */
#define LOGIN_PENDING_RETRY_MS 1000

int login_limit_init(login_limit *l, size_t entries, int64_t window_ms)
{
	memset(l, 0, sizeof *l);
	l->nbuckets = entries > LOGIN_WAYS ? (entries + LOGIN_WAYS - 1) / LOGIN_WAYS : 1;
	l->window_ms = window_ms;
	l->slots = calloc(l->nbuckets * LOGIN_WAYS, sizeof *l->slots);
	if (!l->slots)
		return -1;
	if (pthread_mutex_init(&l->mu, NULL) != 0) {
		free(l->slots);
		l->slots = NULL;
		return -1;
	}
	l->mu_ready = 1;
	randombytes_buf(l->secret, sizeof l->secret);
	return 0;
}

void login_limit_fini(login_limit *l)
{
	if (l->mu_ready)
		pthread_mutex_destroy(&l->mu);
	free(l->slots);
	sodium_memzero(l, sizeof *l);
}

void login_limit_key(const login_limit *l, char kind, const void *data, size_t len,
                     unsigned char out[LOGIN_KEY_BYTES])
{
	crypto_generichash_state h;

	crypto_generichash_init(&h, l->secret, sizeof l->secret, LOGIN_KEY_BYTES);
	crypto_generichash_update(&h, (const unsigned char *)&kind, 1);
	crypto_generichash_update(&h, data, len);
	crypto_generichash_final(&h, out, LOGIN_KEY_BYTES);
}

void login_limit_addr_key(const login_limit *l, const char *addr,
                          unsigned char out[LOGIN_KEY_BYTES])
{
	struct in_addr v4;
	struct in6_addr v6;

	if (inet_pton(AF_INET, addr, &v4) == 1)
		login_limit_key(l, '4', &v4, sizeof v4, out);
	else if (inet_pton(AF_INET6, addr, &v6) == 1 && IN6_IS_ADDR_V4MAPPED(&v6))
		login_limit_key(l, '4', v6.s6_addr + 12, 4, out);
	else if (inet_pton(AF_INET6, addr, &v6) == 1)
		login_limit_key(l, '6', v6.s6_addr, 8, out); /* the /64 */
	else
		login_limit_key(l, 'a', addr, strlen(addr), out);
}

/* A lock that has run out, or failures whose window has passed, are
 * forgotten; attempts pending stay. */
static void refresh(login_slot *s, int64_t now_ms, int64_t window_ms)
{
	if (s->locked_until_ms ? s->locked_until_ms <= now_ms
	                       : s->failures && s->first_ms + window_ms <= now_ms) {
		s->failures = 0;
		s->first_ms = 0;
		s->locked_until_ms = 0;
	}
}

static int slot_free(const login_slot *s)
{
	return !s->failures && !s->pending && !s->locked_until_ms;
}

static login_slot *bucket_of(const login_limit *l, const unsigned char *key)
{
	uint64_t h;

	memcpy(&h, key, sizeof h);
	return l->slots + (size_t)(h % l->nbuckets) * LOGIN_WAYS;
}

/* `key`'s slot, its bucket refreshed first; NULL when it has none. */
static login_slot *find(login_limit *l, const unsigned char *key, int64_t now_ms)
{
	login_slot *b = bucket_of(l, key);

	for (size_t i = 0; i < LOGIN_WAYS; i++)
		refresh(&b[i], now_ms, l->window_ms);
	for (size_t i = 0; i < LOGIN_WAYS; i++)
		if (!slot_free(&b[i]) && !memcmp(b[i].key, key, LOGIN_KEY_BYTES))
			return &b[i];
	return NULL;
}

/* Is `a` worth less than `b`? Unlocked before locked; of the unlocked,
 * fewer failures, then older ones; of the locked, the lock ending first.
 * Spraying one failure each for many emails thus pushes out its own
 * entries before an account's lock or its count near the limit. */
static int worth_less(const login_slot *a, const login_slot *b)
{
	if (!a->locked_until_ms != !b->locked_until_ms)
		return !a->locked_until_ms;
	if (a->locked_until_ms)
		return a->locked_until_ms < b->locked_until_ms;
	if (a->failures != b->failures)
		return a->failures < b->failures;
	return a->first_ms < b->first_ms;
}

/* A slot for `key`, which has none (after find()): a free one, else the one
 * worth least, never one with attempts pending. NULL when all have. */
static login_slot *claim(login_limit *l, const unsigned char *key)
{
	login_slot *b = bucket_of(l, key), *best = NULL;

	for (size_t i = 0; i < LOGIN_WAYS; i++) {
		if (slot_free(&b[i])) {
			best = &b[i];
			break;
		}
		if (!b[i].pending && (!best || worth_less(&b[i], best)))
			best = &b[i];
	}
	if (best) {
		memset(best, 0, sizeof *best);
		memcpy(best->key, key, LOGIN_KEY_BYTES);
	}
	return best;
}

/* Settle one rule of an admitted attempt; 1 when this failure locked it. */
static int settle(login_limit *l, const login_rule *r, login_outcome out, int reset,
                  int64_t now_ms)
{
	login_slot *s = find(l, r->key, now_ms);

	if (!s) /* not reached: a slot with attempts pending is never taken */
		return 0;
	if (s->pending)
		s->pending--;
	if (out == LOGIN_SUCCEEDED && reset) {
		s->failures = 0;
		s->first_ms = 0;
		s->locked_until_ms = 0;
	}
	if (out != LOGIN_FAILED)
		return 0;
	if (!s->failures)
		s->first_ms = now_ms;
	s->failures++;
	if (s->failures < r->max || s->locked_until_ms)
		return 0;
	s->locked_until_ms = now_ms + l->window_ms;
	return 1;
}

/* How long rule `r` makes an attempt wait now; 0: not at all. *locked
 * says whether that is a lock rather than attempts in progress. */
static int64_t rule_wait(login_limit *l, const login_rule *r, int64_t now_ms, int *locked)
{
	login_slot *s = find(l, r->key, now_ms);

	*locked = 0;
	if (!s)
		return 0;
	if (s->locked_until_ms) {
		*locked = 1;
		return s->locked_until_ms - now_ms;
	}
	return s->failures + s->pending >= r->max ? LOGIN_PENDING_RETRY_MS : 0;
}

login_admission login_limit_begin(login_limit *l, const login_rule *rules, size_t n,
                                  int64_t now_ms, int64_t *retry_ms, size_t *which)
{
	int64_t wait = 0, lock = 0, w;
	size_t i, busy = n;
	int locked;

	*which = n;
	pthread_mutex_lock(&l->mu);
	/* The longest wait is Retry-After; a lock, when there is one, is what
	 * the client is told of (*which), however short its rest. */
	for (i = 0; i < n; i++) {
		if (!rules[i].max || !(w = rule_wait(l, &rules[i], now_ms, &locked)))
			continue;
		if (w > wait)
			wait = w;
		if (locked && w > lock) {
			lock = w;
			*which = i;
		} else if (!locked && busy == n) {
			busy = i;
		}
	}
	if (wait && !lock)
		*which = busy;
	for (i = 0; i < n && !wait; i++) {
		login_slot *s;
		if (!rules[i].max)
			continue;
		if (!(s = find(l, rules[i].key, now_ms)) && !(s = claim(l, rules[i].key))) {
			/* a bucket full of attempts in progress: give back what was
			 * reserved and let the client come again */
			*which = i;
			while (i-- > 0)
				if (rules[i].max)
					settle(l, &rules[i], LOGIN_UNDECIDED, 0, now_ms);
			wait = LOGIN_PENDING_RETRY_MS;
			break;
		}
		s->pending++;
	}
	pthread_mutex_unlock(&l->mu);
	*retry_ms = wait;
	if (!wait)
		return LOGIN_ADMITTED;
	return lock ? LOGIN_LOCKED : LOGIN_BUSY;
}

unsigned login_limit_end(login_limit *l, const login_rule *rules, size_t n, login_outcome out,
                         size_t reset, int64_t now_ms)
{
	unsigned locked = 0;

	pthread_mutex_lock(&l->mu);
	for (size_t i = 0; i < n; i++)
		if (rules[i].max && settle(l, &rules[i], out, i == reset, now_ms))
			locked |= 1u << i;
	pthread_mutex_unlock(&l->mu);
	return locked;
}
