/* Passwords and tokens: Argon2id hashing, POST /auth/login, and the rule
 * for who may change a user. */
#define _GNU_SOURCE /* sem_clockwait */
#include "user.h"

#include <errno.h>
#include <stdio.h>
#include <sys/mman.h>
#include <time.h>

#include "../common/reply.h"

#define USER_OOM_WARN_EVERY_MS 60000

/* A turn at hashing, waiting up to hash_wait_ms for one: at most
 * hash_concurrency Argon2id computations run at once, so the memory they
 * take (memlimit each, 64 MiB at `interactive`) stays bounded however many
 * logins and registrations arrive together. A request that waits holds its
 * HTTP worker, so at most hash_queue wait at once and the next one is
 * EVH_EBUSY at once: a flood is answered 503 rather than left to fill every
 * worker, with the daemon's other routes queued behind it in the accept
 * backlog. */
static int hash_begin(user_state *st)
{
	struct timespec until;
	int rc = EVH_OK;

	if (sem_trywait(&st->hash_slots) == 0)
		return EVH_OK;
	if (atomic_fetch_add(&st->hash_waiting, 1) >= st->hash_queue) {
		atomic_fetch_sub(&st->hash_waiting, 1);
		return EVH_EBUSY;
	}
	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += st->hash_wait_ms / 1000;
	until.tv_nsec += (long)(st->hash_wait_ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	while (sem_clockwait(&st->hash_slots, CLOCK_MONOTONIC, &until) != 0)
		if (errno != EINTR) {
			rc = EVH_EBUSY;
			break;
		}
	atomic_fetch_sub(&st->hash_waiting, 1);
	return rc;
}

/* Hash `password` at the configured cost once a turn is had: waiting for
 * one (hash_begin) when `wait` is set, else only when one is free now. */
static int password_hash_turn(user_state *st, const char *password, int wait,
                              char out[crypto_pwhash_STRBYTES])
{
	int rc = wait ? hash_begin(st) : sem_trywait(&st->hash_slots) == 0 ? EVH_OK : EVH_EBUSY;
	if (rc != EVH_OK)
		return rc;
	/* libsodium's only failure here: it could not get memlimit bytes */
	if (crypto_pwhash_str_alg(out, password, strlen(password), st->opslimit, st->memlimit,
	                          crypto_pwhash_ALG_ARGON2ID13) != 0)
		rc = EVH_ENOMEM;
	sem_post(&st->hash_slots);
	return rc;
}

int user_password_hash(user_state *st, const char *password, char out[crypto_pwhash_STRBYTES])
{
	return password_hash_turn(st, password, 1, out);
}

/* Could memlimit bytes be had now? A mapping of that size, not touched,
 * taken and given back: what fails when the address space (LimitAS=) or
 * the commit charge (vm.overcommit_memory = 2) has no room for a hash. */
static int hash_memory_available(const user_state *st)
{
	void *m = mmap(NULL, st->memlimit, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
	               -1, 0);
	if (m == MAP_FAILED)
		return 0;
	munmap(m, st->memlimit);
	return 1;
}

/* Does `password` match `hash`? *ok says; EVH_EBUSY or EVH_ENOMEM when it
 * could not be checked. libsodium answers -1 both for a mismatch and when
 * it could not get the hash's memory, with errno EINVAL either way; when
 * that memory cannot be had now either, it may have been the memory, and
 * the client is told to try again rather than that its password is wrong.
 * The memory is looked for first, so that a check is not even tried when
 * it cannot be had (nothing was checked: the attempt need not count). When
 * it was there before and is not after a -1, the password may have been
 * checked and found wrong: *maybe_wrong is set, and the caller counts the
 * attempt as a failure, or a guesser under memory pressure would learn
 * from each 503 that a password is wrong, uncounted. */
static int password_verify(user_state *st, const char *hash, const char *password, int *ok,
                           int *maybe_wrong)
{
	int rc = hash_begin(st);
	*ok = *maybe_wrong = 0;
	if (rc != EVH_OK)
		return rc;
	if (!hash_memory_available(st)) {
		rc = EVH_ENOMEM;
	} else if (crypto_pwhash_str_verify(hash, password, strlen(password)) == 0) {
		*ok = 1;
	} else if (!hash_memory_available(st)) {
		rc = EVH_ENOMEM;
		*maybe_wrong = 1;
	}
	sem_post(&st->hash_slots);
	return rc;
}

static int64_t mono_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* The out-of-memory warning, at most once a minute (whichever worker is
 * due says it), with how many were not said since: under memory pressure
 * every hash fails, and a line for each would flood the log. */
static void warn_no_hash_memory(user_state *st)
{
	int64_t now = mono_ms(), last = atomic_load(&st->oom_warned_ms);
	unsigned long unsaid;

	if ((last && now - last < USER_OOM_WARN_EVERY_MS) ||
	    !atomic_compare_exchange_strong(&st->oom_warned_ms, &last, now)) {
		atomic_fetch_add(&st->oom_unsaid, 1);
		return;
	}
	unsaid = atomic_exchange(&st->oom_unsaid, 0);
	if (unsaid)
		evh_log(st->p, EVH_LOG_WARN,
		        "a password could not be hashed or checked: out of memory for "
		        "argon2_memlimit (hash_concurrency of them may run at once; said at most "
		        "once a minute: %lu more since it was last said)",
		        unsaid);
	else
		evh_log(st->p, EVH_LOG_WARN,
		        "a password could not be hashed or checked: out of memory for "
		        "argon2_memlimit (hash_concurrency of them may run at once; said at most "
		        "once a minute)");
}

int user_hash_failure(user_state *st, evh_response *resp, int rc)
{
	if (rc != EVH_EBUSY && rc != EVH_ENOMEM)
		return rc;
	if (rc == EVH_ENOMEM)
		warn_no_hash_memory(st);
	evh_resp_header(resp, "Retry-After", "1");
	return evh_resp_problem(resp, 503, "unavailable", "Service Unavailable",
	                        rc == EVH_EBUSY ? "too many passwords are being checked at once; "
	                                          "try again"
	                                        : "not enough memory for a password hash "
	                                          "now; try again",
	                        NULL);
}

int user_may_modify(evh_request *req, const char *id)
{
	const char *sub = evh_req_auth_subject(req);

	/* A user id is this plugin's: only a token this host signed names one.
	 * An identity provider's subject that happens to equal it is another
	 * person (services.md). */
	return (sub && evh_req_auth_local(req) && !strcmp(sub, id)) ||
	       evh_req_auth_has_role(req, USER_ROLE_ADMIN);
}

static int reply_bad_credentials(evh_response *resp)
{
	/* one answer for unknown email and wrong password: no account probing */
	return evh_resp_problem(resp, 401, "unauthorized", "Unauthorized", "invalid credentials",
	                        NULL);
}

/* Look the account up; *found says whether it exists. The transaction is
 * over before any hashing starts. */
static int find_account(user_state *st, const char *email, user_rec *u, int *found)
{
	evh_tx *tx;
	int rc;

	*found = 0;
	if ((rc = evh_tx_begin_read(st->p, &tx)) != EVH_OK) /* a read: waits for no write */
		return reply_log_failure(st->p, NULL, rc, "login: begin");
	rc = user_db_get_by_email(tx, email, u);
	if (rc != EVH_OK && rc != EVH_ENOTFOUND)
		return reply_log_failure(st->p, tx, rc, "login: read user");
	evh_tx_rollback(tx);
	*found = rc == EVH_OK;
	return EVH_OK;
}

/* Is user `u` still as the login found it: there, with the password it
 * checked? A login reads the account, then spends an Argon2id check before
 * it signs; a new password or a deletion committed meanwhile signs the user
 * out before the token exists, and the token would be good. Asked after the
 * token is signed: a change committed later signs out again after its
 * commit (user_sign_out_after), which refuses this token. A stored hash
 * that differs may be the same password upgraded to the current cost by
 * another login (upgrade_hash): `password` is checked against it then.
 * EVH_OK, and *same says; else the failure: of reading the account again
 * (a storage error, logged), or, with *hashing set, of checking `password`
 * against a changed hash (EVH_EBUSY or EVH_ENOMEM: see user_hash_failure). */
static int account_unchanged(user_state *st, const user_rec *u, const char *password,
                             int *same, int *hashing)
{
	user_rec now;
	evh_tx *tx;
	int rc;

	*same = 0;
	*hashing = 0;
	/* What is committed: a change still in a group commit that fails is
	 * never the account's, and one that commits signs out after it. */
	if ((rc = evh_tx_begin_read(st->p, &tx)) != EVH_OK)
		return reply_log_failure(st->p, NULL, rc, "login: begin");
	rc = user_db_get(tx, u->id, &now);
	if (rc != EVH_OK && rc != EVH_ENOTFOUND)
		return reply_log_failure(st->p, tx, rc, "login: read user again");
	evh_tx_rollback(tx);
	if (rc == EVH_ENOTFOUND)
		return EVH_OK;
	*same = !strcmp(now.password_hash, u->password_hash);
	*hashing = !*same;
	rc = *same ? EVH_OK : user_password_still(st, now.password_hash, password, same);
	sodium_memzero(now.password_hash, sizeof now.password_hash);
	return rc;
}

int user_password_still(user_state *st, const char *hash, const char *password, int *same)
{
	int ignored; /* found right already: a failure here is no guess */
	return password_verify(st, hash, password, same, &ignored);
}

/* Store `password`'s hash at the current cost for user `u` when its stored
 * one (which `password` was just found to match) was made at another cost:
 * the old cost stays the account's until then, and logins of accounts with
 * cheaper hashes would take less time than those of unknown emails (which
 * are checked at the current cost). Only with a hashing turn free now (a
 * busy moment skips it: the next login does it), in its own transaction,
 * and only over the hash that was checked (a password changed meanwhile
 * stays). A failure is logged: the login it follows is not answered
 * otherwise. `stored` (may be NULL) gets the hash the account has
 * afterwards as far as this knows: the new one when it was stored, else
 * u's. */
static void upgrade_hash(user_state *st, const user_rec *u, const char *password,
                         char stored[crypto_pwhash_STRBYTES])
{
	char fresh[crypto_pwhash_STRBYTES];
	int64_t changes = 0;
	evh_tx *tx;
	int rc;

	if (stored)
		memcpy(stored, u->password_hash, crypto_pwhash_STRBYTES);
	if (crypto_pwhash_str_needs_rehash(u->password_hash, st->opslimit, st->memlimit) == 0)
		return;
	if ((rc = password_hash_turn(st, password, 0, fresh)) != EVH_OK) {
		if (rc == EVH_ENOMEM)
			warn_no_hash_memory(st);
		return;
	}
	if ((rc = evh_tx_begin(st->p, &tx)) == EVH_OK) {
		if ((rc = user_db_set_hash(tx, u->id, u->password_hash, fresh, &changes)) == EVH_OK)
			rc = evh_tx_commit(tx); /* ends it either way */
		else
			evh_tx_rollback(tx);
	}
	if (rc != EVH_OK)
		evh_log(st->p, EVH_LOG_WARN,
		        "user %s: the password's hash at the current argon2 cost could not be "
		        "stored (%s); the next login tries again",
		        u->id, evh_strerror(rc));
	else if (changes && stored)
		memcpy(stored, fresh, crypto_pwhash_STRBYTES);
	sodium_memzero(fresh, sizeof fresh);
}

static int reply_login_unconfigured(evh_response *resp)
{
	return evh_resp_problem(resp, 503, "unavailable", "Service Unavailable",
	                        "login is not configured on this server", NULL);
}

/* Sign and answer user `u`'s token (`password` was found right). *result
 * is what the answer counts as in user_logins_total: "ok" for the token,
 * "failed" for a 401 (the account changed meanwhile), NULL for the rest
 * (503: login not configured, or no hashing turn). */
static int reply_token(user_state *st, evh_response *resp, const user_rec *u,
                       const char *password, const char **result)
{
	int same, hashing;
	char roles[USER_ROLES_MAX][USER_ROLE_LEN];
	const char *role_ptrs[USER_ROLES_MAX];
	size_t n = user_roles_split(u->roles, roles, USER_ROLES_MAX), i;
	char *token = NULL;
	cJSON *out;
	int rc;

	*result = NULL;
	for (i = 0; i < n; i++)
		role_ptrs[i] = roles[i];
	rc = evh_auth_sign(st->p, u->id, role_ptrs, n, st->token_ttl, &token);
	/* No [auth] secret, an old host, or token_ttl over [auth]
	 * token_ttl_max (the host's ERROR line says which). */
	if (rc == EVH_ESTATE || rc == EVH_EUNSUPPORTED || rc == EVH_EINVAL)
		return reply_login_unconfigured(resp); /* changed since login_configured */
	if (rc != EVH_OK)
		return rc;
	if ((rc = account_unchanged(st, u, password, &same, &hashing)) != EVH_OK || !same) {
		evh_free(token);
		/* A storage failure reading the account again is the host's to
		 * answer (503 for a store held too long, with its log line), not
		 * a password check's. */
		if (hashing && (rc == EVH_EBUSY || rc == EVH_ENOMEM))
			return user_hash_failure(st, resp, rc);
		if (rc != EVH_OK)
			return reply_failure(resp, rc);
		/* The password it checked is no longer the account's. */
		*result = "failed";
		return reply_bad_credentials(resp);
	}
	out = cJSON_CreateObject();
	/* A bearer token: not for any cache on the way (RFC 6749 5.1). */
	if (out && cJSON_AddStringToObject(out, "token", token) &&
	    cJSON_AddStringToObject(out, "token_type", "Bearer") &&
	    cJSON_AddNumberToObject(out, "expires_in", st->token_ttl) &&
	    (rc = evh_resp_header(resp, "Cache-Control", "no-store")) == EVH_OK &&
	    (rc = evh_resp_header(resp, "Pragma", "no-cache")) == EVH_OK)
		*result = (rc = reply_json(resp, 200, out)) == EVH_OK ? "ok" : NULL;
	else if (!out || rc == EVH_OK)
		rc = EVH_ENOMEM;
	cJSON_Delete(out);
	evh_free(token);
	return rc;
}

/* The counters a login is held to (login_limit.h): its account's, by the
 * normalised email whether or not it is registered (NULL: a malformed one,
 * which names no account), and its client address's. */
enum { RULE_ACCOUNT, RULE_ADDRESS, NRULES };

static void login_rules(user_state *st, evh_request *req, const char *email,
                        login_rule rules[NRULES])
{
	const char *addr = evh_req_client_addr(req);

	memset(rules, 0, sizeof(login_rule) * NRULES);
	if (email) {
		login_limit_key(&st->limit, 'e', email, strlen(email), rules[RULE_ACCOUNT].key);
		rules[RULE_ACCOUNT].max = st->max_failures;
	}
	if (addr) {
		login_limit_addr_key(&st->limit, addr, rules[RULE_ADDRESS].key);
		rules[RULE_ADDRESS].max = st->max_failures_per_address;
	}
}

/* 429 for an attempt login_limit_begin refused (`why`): locked out, or
 * others for the same account or address still being checked (none of
 * them failed yet: the client is not told of failed logins). */
static int reply_refused(evh_response *resp, login_admission why, size_t which,
                         int64_t retry_ms)
{
	char secs[24];
	const char *detail;

	if (why == LOGIN_BUSY)
		detail = which == RULE_ADDRESS ? "too many logins from this address are being "
		                                 "checked at once; try again"
		                               : "too many logins for this account are being "
		                                 "checked at once; try again";
	else
		detail = which == RULE_ADDRESS
		             ? "too many failed logins from this address; try again later"
		             : "too many failed logins for this account; try again later";
	snprintf(secs, sizeof secs, "%lld", (long long)((retry_ms + 999) / 1000));
	evh_resp_header(resp, "Retry-After", secs);
	return evh_resp_problem(resp, 429, "too-many-requests", "Too Many Requests", detail, NULL);
}

/* A lockout, once, as a warning: the user's id rather than the email (an
 * unregistered one is not written down), and the client's address, which
 * the access log has anyway. */
static void log_lockout(user_state *st, evh_request *req, unsigned locked, const user_rec *u)
{
	const char *addr = evh_req_client_addr(req);

	if (!addr)
		addr = "an unknown address";
	if (locked & 1u << RULE_ACCOUNT)
		evh_log(st->p, EVH_LOG_WARN,
		        "login: %s%s locked for %d s after %u failed logins (the last from %s)",
		        u ? "user " : "an unregistered email", u ? u->id : "", st->login_window,
		        st->max_failures, addr);
	if (locked & 1u << RULE_ADDRESS)
		evh_log(st->p, EVH_LOG_WARN,
		        "login: client address %s%s locked for %d s after %u failed logins from it",
		        addr, strchr(addr, ':') && !strchr(addr, '.') ? " (its /64)" : "",
		        st->login_window,
		        st->max_failures_per_address);
}

/* Check the password of the account `email` names (NULL: none) and answer;
 * *outcome says what the attempt comes to for the failure counters,
 * *result what it was answered for user_logins_total (NULL: not counted). */
static int login_check(user_state *st, evh_response *resp, const char *email,
                       const char *password, user_rec *u, int *found, login_outcome *outcome,
                       const char **result)
{
	int rc = email ? find_account(st, email, u, found) : EVH_OK, ok, maybe_wrong;

	*outcome = LOGIN_UNDECIDED;
	*result = NULL;
	if (rc != EVH_OK)
		return reply_failure(resp, rc);
	rc = password_verify(st, *found ? u->password_hash : st->dummy_hash, password, &ok,
	                     &maybe_wrong);
	if (rc != EVH_OK) {
		if (maybe_wrong)
			*outcome = LOGIN_FAILED;
		return user_hash_failure(st, resp, rc);
	}
	if (!*found || !ok) {
		*outcome = LOGIN_FAILED;
		*result = "failed";
		return reply_bad_credentials(resp);
	}
	rc = reply_token(st, resp, u, password, result);
	/* Only a token given clears the account's count; a right password
	 * answered otherwise (the account changed meanwhile, a 503) counts
	 * nothing either way. */
	*outcome = *result && !strcmp(*result, "ok") ? LOGIN_SUCCEEDED : LOGIN_UNDECIDED;
	return rc;
}

/* Whether this host signs user `st`'s tokens: an [auth] jwt_secret_file,
 * a host new enough, token_ttl within [auth] token_ttl_max (the host's
 * ERROR line says which is missing). Asked before any password is looked
 * at: answered after the check, the 503 of a right password beside the 401
 * of a wrong one told a guesser which was right, with no token ever to be
 * had. A token for no account, made and dropped: the SDK has no other way
 * to ask. */
static int login_configured(user_state *st)
{
	char *token = NULL;
	int rc = evh_auth_sign(st->p, "evhost-login-check", NULL, 0, st->token_ttl, &token);

	evh_free(token);
	return rc != EVH_ESTATE && rc != EVH_EUNSUPPORTED && rc != EVH_EINVAL;
}

int user_verify_current(user_state *st, evh_request *req, evh_response *resp,
                        const user_rec *u, const char *password, int upgrade,
                        char verified[crypto_pwhash_STRBYTES], int *answered)
{
	login_rule rules[NRULES];
	login_outcome outcome = LOGIN_UNDECIDED;
	login_admission admitted;
	int64_t retry_ms;
	size_t which;
	unsigned locked;
	int rc, ok = 0, maybe_wrong;

	*answered = 1;
	memcpy(verified, u->password_hash, crypto_pwhash_STRBYTES);
	login_rules(st, req, u->email, rules);
	/* Counted in user_logins_total as a login would be, but for a right
	 * one: that is no login. */
	if ((admitted = login_limit_begin(&st->limit, rules, NRULES, mono_ms(), &retry_ms,
	                                  &which)) != LOGIN_ADMITTED) {
		evh_metric_add(st->logins, admitted == LOGIN_BUSY ? "busy" : "locked", 1);
		return reply_refused(resp, admitted, which, retry_ms);
	}
	rc = password_verify(st, u->password_hash, password, &ok, &maybe_wrong);
	if (rc != EVH_OK) {
		if (maybe_wrong)
			outcome = LOGIN_FAILED; /* held to the limits, not in user_logins_total */
		rc = user_hash_failure(st, resp, rc);
	} else if (!ok) {
		outcome = LOGIN_FAILED;
		evh_metric_add(st->logins, "failed", 1);
		rc = evh_resp_problem(resp, 403, "forbidden", "Forbidden",
		                      "current_password is not this user's password", "current_password");
	} else {
		outcome = LOGIN_SUCCEEDED;
		*answered = 0;
	}
	/* Only a failure counts: success does not reset the account's count (a
	 * token holder would otherwise clear it between guesses at logins). */
	locked = login_limit_end(&st->limit, rules, NRULES, outcome, NRULES, mono_ms());
	if (locked)
		log_lockout(st, req, locked, u);
	if (outcome == LOGIN_SUCCEEDED && upgrade)
		upgrade_hash(st, u, password, verified);
	return rc;
}

int user_login(evh_request *req, evh_response *resp, void *ud)
{
	user_state *st = ud;
	char email[USER_EMAIL_MAX + 1];
	const cJSON *jemail, *jpw;
	const char *why;
	login_rule rules[NRULES];
	login_outcome outcome;
	login_admission admitted;
	const char *result;
	int64_t retry_ms;
	size_t which;
	unsigned locked;
	user_rec u;
	int rc = EVH_OK, found = 0, named;
	cJSON *body = reply_body_object(req, resp, &rc);

	if (!body)
		return rc;
	jemail = cJSON_GetObjectItemCaseSensitive(body, "email");
	jpw = cJSON_GetObjectItemCaseSensitive(body, "password");
	if (!cJSON_IsString(jemail))
		rc = reply_invalid(resp, "email", "email is required and must be a string");
	else if (!cJSON_IsString(jpw))
		rc = reply_invalid(resp, "password", "password is required and must be a string");
	if (!cJSON_IsString(jemail) || !cJSON_IsString(jpw))
		goto out;
	if (!login_configured(st)) {
		rc = reply_login_unconfigured(resp);
		goto out;
	}
	/* A malformed email cannot name an account: treat it as an unknown one. */
	named = user_email_normalize(jemail->valuestring, email, &why) == 0;
	login_rules(st, req, named ? email : NULL, rules);
	/* Locked out: refused before the password is looked at, so that a right
	 * one is no more use during the lockout than a wrong one. */
	if ((admitted = login_limit_begin(&st->limit, rules, NRULES, mono_ms(), &retry_ms,
	                                  &which)) != LOGIN_ADMITTED) {
		evh_metric_add(st->logins, admitted == LOGIN_BUSY ? "busy" : "locked", 1);
		rc = reply_refused(resp, admitted, which, retry_ms);
		goto out;
	}
	rc = login_check(st, resp, named ? email : NULL, jpw->valuestring, &u, &found, &outcome,
	                 &result);
	/* By the answer: a 503 (a password that could not be checked now, or
	 * login not configured) is not counted. */
	if (result)
		evh_metric_add(st->logins, result, 1);
	locked = login_limit_end(&st->limit, rules, NRULES, outcome, RULE_ACCOUNT, mono_ms());
	if (locked)
		log_lockout(st, req, locked, found ? &u : NULL);
	/* Once the answer is decided and the attempt settled: the upgrade
	 * changes neither, nor holds up the account's other logins. */
	if (result && !strcmp(result, "ok"))
		upgrade_hash(st, &u, jpw->valuestring, NULL);
out:
	if (found)
		sodium_memzero(u.password_hash, sizeof u.password_hash);
	cJSON_Delete(body);
	return rc;
}

int user_sign_out(user_state *st, evh_response *resp, evh_tx *tx, const char *id,
                  int *answered)
{
	int rc = evh_auth_revoke(st->p, id);

	*answered = 0;
	/* No [auth] secret (no token of this host to refuse), or a host before
	 * ABI 1.8 (which cannot): nothing to do. */
	if (rc == EVH_OK || rc == EVH_ESTATE || rc == EVH_EUNSUPPORTED)
		return EVH_OK;
	*answered = 1;
	if (tx)
		evh_tx_rollback(tx);
	/* The host logged why (EVH_ESTORE: the sign-out holds until it stops). */
	evh_resp_header(resp, "Retry-After", "1");
	return evh_resp_problem(resp, 503, "unavailable", "Service Unavailable",
	                        "the user's tokens could not be signed out, so nothing was "
	                        "changed; try again",
	                        NULL);
}

void user_sign_out_after(user_state *st, const char *id)
{
	int rc = evh_auth_revoke(st->p, id);

	/* In force anyway (the host holds it in memory when it cannot save
	 * it); the sign-out before the commit is on disk. */
	if (rc != EVH_OK && rc != EVH_ESTATE && rc != EVH_EUNSUPPORTED)
		evh_log(st->p, EVH_LOG_WARN,
		        "user %s: the sign-out after the change could not be saved (%s): a token "
		        "of a login that raced the change is refused until evhostd stops",
		        id, evh_strerror(rc));
}

int user_logout(evh_request *req, evh_response *resp, void *ud)
{
	user_state *st = ud;
	const char *sub = evh_req_auth_subject(req);
	int rc;

	/* Another issuer's token: its users sign out there. */
	if (!sub || !evh_req_auth_local(req))
		return evh_resp_problem(resp, 400, "bad-request", "Bad Request",
		                        "this token was issued by another issuer, not by this "
		                        "server: sign out with that issuer",
		                        NULL);
	rc = evh_auth_revoke(st->p, sub);
	if (rc == EVH_EUNSUPPORTED)
		return evh_resp_problem(resp, 501, "not-implemented", "Not Implemented",
		                        "this server's evhostd cannot sign tokens out (it needs "
		                        "ABI 1.8)",
		                        NULL);
	if (rc != EVH_OK) {
		evh_resp_header(resp, "Retry-After", "1");
		return evh_resp_problem(resp, 503, "unavailable", "Service Unavailable",
		                        "the sign-out could not be saved; try again", NULL);
	}
	evh_resp_status(resp, 204);
	return EVH_OK;
}
