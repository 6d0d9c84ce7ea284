/* user.so internals: the plugin's state and the pieces its files share.
 * user.c: descriptor, configuration, init/fini and the first administrator.
 * user_store.c: the users table. user_routes.c: /users handlers.
 * user_auth.c: password hashing, POST /auth/login, who may change whom.
 * login_limit.c: the failed-login counters POST /auth/login is held to. */
#ifndef EVH_USER_H
#define EVH_USER_H
#include <semaphore.h>
#include <stdatomic.h>
#include <stdint.h>

#include <cjson/cJSON.h>
#include <evhost/evhost.h>
#include <sodium.h>

#include "../common/ids.h"
#include "../common/reply.h"
#include "login_limit.h"
#include "user_logic.h"

#define USER_ROLE_ADMIN "admin"
#define USER_ROLES_DEFAULT "user"
#define USER_ROLES_ADMIN "admin,user"
#define USER_ROLES_LIST_MAX 128

typedef struct user_state {
	evh_plugin *p;
	const char *topic_created, *topic_updated, *topic_deleted; /* borrowed config */
	const char *read_role; /* role GET /users[/{id}] needs; NULL: public */
	long password_min;
	int token_ttl;
	unsigned long long opslimit;
	size_t memlimit;
	/* Argon2id computations running at once: at most hash_concurrency, each
	 * holding memlimit bytes; a request waits up to hash_wait_ms for one,
	 * and at most hash_queue requests wait at once (each holds an HTTP
	 * worker while it does): hash_waiting counts them. */
	sem_t hash_slots;
	int hash_slots_ready;
	long hash_concurrency;
	int hash_wait_ms;
	long hash_queue;
	_Atomic long hash_waiting;
	/* The out-of-memory warning, said at most once a minute: when it was
	 * last said (monotonic ms, 0: never) and how many went unsaid since. */
	_Atomic int64_t oom_warned_ms;
	_Atomic unsigned long oom_unsaid;
	/* Hash of a random password: verified against when a login names an
	 * unknown email, so that answer takes as long as a wrong password. */
	char dummy_hash[crypto_pwhash_STRBYTES];
	/* Failed logins per account and per client address (login.*): after
	 * max_failures (0: no limit) within login_window seconds, further
	 * attempts are 429 for login_window seconds, the password unchecked. */
	login_limit limit;
	int limit_ready;
	unsigned max_failures, max_failures_per_address;
	int login_window;
	size_t login_table_size; /* login.table_size */
	/* user_logins_total{result}: ok, failed, locked, busy (ABI 1.9's
	 * metrics; NULL on an older host). */
	evh_metric *logins;
} user_state;

/* One row of the users table. Fixed buffers: every field is bounded by
 * the validation rules before it is stored. */
typedef struct user_rec {
	int64_t seq;
	char id[IDS_UUID_LEN + 1];
	char name[USER_NAME_MAX_BYTES + 1];
	char email[USER_EMAIL_MAX + 1];
	char password_hash[crypto_pwhash_STRBYTES];
	char roles[USER_ROLES_LIST_MAX];
	char created_at[IDS_TIME_LEN + 1];
	char updated_at[IDS_TIME_LEN + 1];
} user_rec;

/* ---- user_store.c: all return an evh_status; EVH_ENOTFOUND for no row,
 * EVH_ECONSTRAINT when the email is taken. */
extern const evh_migration user_migrations[];
extern const size_t user_nmigrations;
int user_db_insert(evh_tx *tx, const user_rec *u);
/* The first administrator created for admin_email `email`: 1 (its id in
 * `user_id`), 0 never, or an error. */
int user_db_admin_created(evh_tx *tx, const char *email, char user_id[IDS_UUID_LEN + 1]);
/* Record that one (kept if one is recorded already). */
int user_db_admin_record(evh_tx *tx, const char *email, const char *user_id, const char *at);
int user_db_get(evh_tx *tx, const char *id, user_rec *u);
int user_db_get_by_email(evh_tx *tx, const char *email, user_rec *u);
int user_db_update(evh_tx *tx, const user_rec *u);
int user_db_delete(evh_tx *tx, const char *id);
/* The same password's hash at another cost: user `id`'s hash becomes
 * `new_hash` if it is still `old_hash` (*changes: 1, else 0). Not a change
 * of the user (updated_at stays, nothing is published). */
int user_db_set_hash(evh_tx *tx, const char *id, const char *old_hash, const char *new_hash,
                     int64_t *changes);
/* The bytes of the values a row of `u` stores, for a 413 that says so. */
size_t user_db_bytes(const user_rec *u);
/* Up to `limit` users with seq > after_seq, in seq order, as JSON objects
 * appended to `items`; *more says whether rows remain, *last_seq is the last
 * one appended. */
int user_db_page(evh_tx *tx, int64_t after_seq, int limit, cJSON *items, int *more,
                 int64_t *last_seq);

/* Sign user `id` out (evh_auth_revoke: the tokens it has are refused),
 * before the change that calls for it (a new password, the account
 * deleted) is committed in `tx`. Go on when *answered is clear (also when
 * the host signs no tokens); otherwise `tx` (may be NULL) was rolled back
 * and 503 answered: the handler returns what this returns. */
int user_sign_out(user_state *st, evh_response *resp, evh_tx *tx, const char *id,
                  int *answered);
/* Sign user `id` out again once the change is committed: a login that
 * read the account before the commit and signed its token after the first
 * sign-out is refused too (see account_unchanged in user_auth.c). A failure
 * to save it is logged; it holds until evhostd stops. */
void user_sign_out_after(user_state *st, const char *id);
/* POST /auth/logout: sign the token's user out everywhere (204). */
int user_logout(evh_request *req, evh_response *resp, void *ud);

/* ---- user_routes.c */
int user_routes_register(user_state *st);
/* The routes user_routes_register registers, for the descriptor (ABI 1.12). */
extern const char *const user_routes_declared[];
/* The public view of a user: id, name, email, created_at, updated_at. */
cJSON *user_to_json(const user_rec *u);
/* Insert `u` and publish its created event in one transaction (with
 * `admin_email`, also the record that the first administrator of that
 * address was created). *ch says how far it got, for reply_change_failure. */
int user_create_tx(user_state *st, const user_rec *u, const char *admin_email,
                   reply_change *ch);

/* ---- user_auth.c */
/* Argon2id-hash `password` with the configured cost. Slow by design: call
 * outside any transaction. EVH_EBUSY when no hashing slot came free within
 * hash_wait_ms, EVH_ENOMEM when libsodium could not get memlimit bytes. */
int user_password_hash(user_state *st, const char *password, char out[crypto_pwhash_STRBYTES]);
/* After user_password_hash failed with `rc` in a handler: 503 with
 * Retry-After for a busy or memory-starved hasher (the latter warned of at
 * most once a minute); else `rc`. */
int user_hash_failure(user_state *st, evh_response *resp, int rc);
int user_login(evh_request *req, evh_response *resp, void *ud);
/* May the caller of an EVH_ROUTE_AUTH request act on user `id`? Yes for the
 * user themself and for role admin. */
int user_may_modify(evh_request *req, const char *id);
/* A user changing their own password or email proves they know the current
 * password: checked against `u` (as stored), held to the failed-login limit
 * like a login. *answered clear: it is right, go on; else the answer (403,
 * 429, 503) is made and its status returned. When it is right and `upgrade`
 * is set, a hash made at another cost is replaced by one at the current
 * cost (as a login does). `verified` gets the hash the password was found
 * to match, as stored now (the upgraded one when it was): the change is
 * refused if the account's hash is another by the time it is stored. */
int user_verify_current(user_state *st, evh_request *req, evh_response *resp,
                        const user_rec *u, const char *password, int upgrade,
                        char verified[crypto_pwhash_STRBYTES], int *answered);
/* Does `password`, found right against an earlier hash of the account,
 * match `hash`, the one stored now? Another login may have stored the same
 * password at the current cost meanwhile (upgrade_hash). Not a login: it
 * counts against no limit. EVH_OK and *same says; else why it could not be
 * checked (EVH_EBUSY, EVH_ENOMEM: see user_hash_failure). */
int user_password_still(user_state *st, const char *hash, const char *password, int *same);
#endif
