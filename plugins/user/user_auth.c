/* Passwords and tokens: Argon2id hashing, POST /auth/login, and the rule
 * for who may change a user. */
#define _GNU_SOURCE /* sem_clockwait */
#include "user.h"

#include <errno.h>
#include <sys/mman.h>
#include <time.h>

#include "../common/reply.h"

/* A turn at hashing, waiting up to hash_wait_ms for one: at most
 * hash_concurrency Argon2id computations run at once, so the memory they
 * take (memlimit each, 64 MiB at `interactive`) stays bounded however many
 * logins and registrations arrive together. */
static int hash_begin(user_state *st)
{
	struct timespec until;
	if (sem_trywait(&st->hash_slots) == 0)
		return EVH_OK;
	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += st->hash_wait_ms / 1000;
	until.tv_nsec += (long)(st->hash_wait_ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	while (sem_clockwait(&st->hash_slots, CLOCK_MONOTONIC, &until) != 0)
		if (errno != EINTR)
			return EVH_EBUSY;
	return EVH_OK;
}

int user_password_hash(user_state *st, const char *password, char out[crypto_pwhash_STRBYTES])
{
	int rc = hash_begin(st);
	if (rc != EVH_OK)
		return rc;
	/* libsodium's only failure here: it could not get memlimit bytes */
	if (crypto_pwhash_str_alg(out, password, strlen(password), st->opslimit, st->memlimit,
	                          crypto_pwhash_ALG_ARGON2ID13) != 0)
		rc = EVH_ENOMEM;
	sem_post(&st->hash_slots);
	return rc;
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
 * that memory cannot be had now either, it was the memory, and the client
 * is told to try again rather than that its password is wrong. */
static int password_verify(user_state *st, const char *hash, const char *password, int *ok)
{
	int rc = hash_begin(st);
	*ok = 0;
	if (rc != EVH_OK)
		return rc;
	if (crypto_pwhash_str_verify(hash, password, strlen(password)) == 0)
		*ok = 1;
	else if (!hash_memory_available(st))
		rc = EVH_ENOMEM;
	sem_post(&st->hash_slots);
	return rc;
}

int user_hash_failure(evh_plugin *p, evh_response *resp, int rc)
{
	if (rc != EVH_EBUSY && rc != EVH_ENOMEM)
		return rc;
	if (rc == EVH_ENOMEM)
		evh_log(p, EVH_LOG_WARN, "a password could not be hashed or checked: out of memory "
		                         "for argon2_memlimit (hash_concurrency of them may run at "
		                         "once)");
	evh_resp_header(resp, "Retry-After", "1");
	return evh_resp_problem(resp, 503, "unavailable", "Service unavailable",
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
	if ((rc = evh_tx_begin(st->p, &tx)) != EVH_OK)
		return reply_log_failure(st->p, NULL, rc, "login: begin");
	rc = user_db_get_by_email(tx, email, u);
	if (rc != EVH_OK && rc != EVH_ENOTFOUND)
		return reply_log_failure(st->p, tx, rc, "login: read user");
	evh_tx_rollback(tx);
	*found = rc == EVH_OK;
	return EVH_OK;
}

static int reply_token(user_state *st, evh_response *resp, const user_rec *u)
{
	char roles[USER_ROLES_MAX][USER_ROLE_LEN];
	const char *role_ptrs[USER_ROLES_MAX];
	size_t n = user_roles_split(u->roles, roles, USER_ROLES_MAX), i;
	char *token = NULL;
	cJSON *out;
	int rc;

	for (i = 0; i < n; i++)
		role_ptrs[i] = roles[i];
	rc = evh_auth_sign(st->p, u->id, role_ptrs, n, st->token_ttl, &token);
	if (rc == EVH_ESTATE || rc == EVH_EUNSUPPORTED)
		return evh_resp_problem(resp, 503, "unavailable", "Service unavailable",
		                        "login is not configured on this server", NULL);
	if (rc != EVH_OK)
		return rc;
	out = cJSON_CreateObject();
	if (out && cJSON_AddStringToObject(out, "token", token) &&
	    cJSON_AddStringToObject(out, "token_type", "Bearer") &&
	    cJSON_AddNumberToObject(out, "expires_in", st->token_ttl))
		rc = reply_json(resp, 200, out);
	else
		rc = EVH_ENOMEM;
	cJSON_Delete(out);
	evh_free(token);
	return rc;
}

int user_login(evh_request *req, evh_response *resp, void *ud)
{
	user_state *st = ud;
	char email[USER_EMAIL_MAX + 1];
	const cJSON *jemail, *jpw;
	const char *why;
	user_rec u;
	int rc = EVH_OK, found = 0, ok;
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
	/* A malformed email cannot name an account: treat it as an unknown one. */
	if (user_email_normalize(jemail->valuestring, email, &why) == 0 &&
	    (rc = find_account(st, email, &u, &found)) != EVH_OK) {
		rc = reply_failure(resp, rc);
		goto out;
	}
	rc = password_verify(st, found ? u.password_hash : st->dummy_hash, jpw->valuestring,
	                     &ok);
	if (rc != EVH_OK)
		rc = user_hash_failure(st->p, resp, rc);
	else if (found && ok)
		rc = reply_token(st, resp, &u);
	else
		rc = reply_bad_credentials(resp);
out:
	if (found)
		sodium_memzero(u.password_hash, sizeof u.password_hash);
	cJSON_Delete(body);
	return rc;
}
