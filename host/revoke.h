/* Signing a subject out (evh_auth_revoke, ABI 1.8): the tokens this host
 * signed for it before that moment are refused from then on, on every
 * plugin's EVH_ROUTE_AUTH routes and open event streams.
 *
 * A revocation is the subject and the moment, in milliseconds: a token whose
 * evh_iat_ms (the millisecond it was signed, jwt.h) is earlier, or the same,
 * is refused; tokens signed after it are given a later one
 * (revocations_sign_ms).
 * It is kept in memory for lookups and in a small SQLite file of its own
 * (<state_dir>/evhostd.auth.db, written with a full sync before the call
 * returns) so a restart does not bring signed-out tokens back. It is kept
 * until no token it refuses can still be valid: the longest [auth]
 * token_ttl_max ever in force after it (no token of this host lives longer,
 * see revocations_refuse and revocations_note_ttl), plus the leeway a token
 * gets past its exp. */
#ifndef EVHOST_REVOKE_H
#define EVHOST_REVOKE_H
#include <stddef.h>
#include <stdint.h>

#include "jwt.h"

typedef struct revocations revocations;

/* File name under [host] state_dir. Plugin names have no dots, so no
 * plugin's database (NAME.db) can be this file. */
#define REVOCATIONS_NAME "evhostd.auth"
#define REVOCATIONS_FILE REVOCATIONS_NAME ".db"

/* Open (creating it) the file at `path` and read the revocations still in
 * force at `now_ms`, and the moment no token was signed after
 * (revocations_last_signed). Returns 0, or -1 with a message in err (naming
 * the file), -2 when what failed was out of memory. */
int revocations_open(revocations **out, const char *path, int64_t now_ms, char *err,
                     size_t errlen);
void revocations_close(revocations *r);

/* Refuse the tokens signed for `subject` before `now_ms`, or up to the
 * latest token signed (revocations_sign_ms) when that is later (a clock
 * set back), until `until_ms`.
 * In force in memory at once; then written to the file. Returns 0, or -1
 * with err when the file could not be written (the revocation holds until
 * the daemon stops, not past a restart). Also drops what has lapsed. */
int revocations_add(revocations *r, const char *subject, int64_t now_ms, int64_t until_ms,
                    char *err, size_t errlen);

/* The moment before which `subject`'s tokens are refused, or 0. */
int64_t revocations_since(revocations *r, const char *subject, int64_t now_ms);

/* Does a sign-out of `subject` refuse its token signed at `iat_ms`? One
 * signed in the very millisecond of the sign-out is refused: it may have
 * been signed (and handed out) just before it. */
int revocations_revokes(revocations *r, const char *subject, int64_t iat_ms, int64_t now_ms);

/* The moment to sign a token for `subject` at (its evh_iat_ms): `now_ms`,
 * or just after the subject's sign-out when that is not earlier (the same
 * millisecond, or a clock stepped back), so that a login right after a
 * sign-out is good. */
int64_t revocations_sign_ms(revocations *r, const char *subject, int64_t now_ms);

/* No token was signed later than this (0 for NULL): the latest moment
 * revocations_sign_ms gave, also in earlier runs (the file keeps it, a few
 * seconds ahead: up to 10 s more after a restart). A sign-out is made after
 * it, so a token signed no later, even while the clock ran ahead and was
 * set back since, is not to be refused as issued in the future (jwt_keys,
 * signed_ms): a sign-out refuses it all the same. */
int64_t revocations_last_signed(revocations *r);

/* Note that tokens may live `ttl_max_s` ([auth] token_ttl_max, at a start
 * and when a reload changes it). The longest ever noted is kept in the
 * file: a token signed while it was in force may be valid that long, so a
 * sign-out is kept that long (revocations_ttl_high), even after the value
 * was lowered and raised again. 0, or -1 with err when it could not be
 * saved (held until the daemon stops). */
int revocations_note_ttl(revocations *r, int64_t ttl_max_s, char *err, size_t errlen);
int64_t revocations_ttl_high(revocations *r);

/* Until when a sign-out made at `now_ms` must be kept: past the last
 * moment a token signed before it may be taken, with tokens living up to
 * `ttl_high_s` and taken `leeway_s` past their exp. A token's exp counts
 * from its signing time in whole seconds (rounded down), and it is taken
 * through the whole second exp + leeway: one second more than
 * ttl_high_s + leeway_s from the sign-out, which may come late in the
 * second the token was signed in. */
int64_t revocation_until(int64_t now_ms, int64_t ttl_high_s, int leeway_s);

/* The file's path, as given to revocations_open. */
const char *revocations_path(const revocations *r);

/* How many revocations are held (lapsed ones may still count). */
size_t revocations_count(revocations *r);

/* Why this host refuses one of its own tokens (c->foreign == 0) that
 * jwt_verify_keys accepted, or NULL: it has no issue time, it lives longer
 * than `ttl_max_s` ([auth] token_ttl_max), or its subject was signed out
 * after it was signed. `r` may be NULL (nothing revoked). */
const char *revocations_refuse(revocations *r, const jwt_claims *c, int64_t ttl_max_s,
                               int64_t now_ms);

/* The reasons revocations_refuse gives (these very pointers). */
extern const char revoke_reason_revoked[];
extern const char revoke_reason_no_iat[];
extern const char revoke_reason_too_long[];
#endif
