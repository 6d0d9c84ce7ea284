/* user.so: user accounts over HTTP (register, read, list, change, delete,
 * log in) with Argon2id password hashes, publishing USER_CREATED,
 * USER_UPDATED and USER_DELETED events in the same transaction as each
 * change. This file: configuration, init/fini and the first administrator. */
#include "user.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/stat.h>

#include "../../host/topics.h"

static const evh_config_key user_config[] = {
    {"topic.created", EVH_CFG_STRING, "USER_CREATED", 0, "topic of user.created events"},
    {"topic.updated", EVH_CFG_STRING, "USER_UPDATED", 0, "topic of user.updated events"},
    {"topic.deleted", EVH_CFG_STRING, "USER_DELETED", 0, "topic of user.deleted events"},
    {"password_min_length", EVH_CFG_INT, "8", 0, "fewest characters a password may have"},
    {"token_ttl", EVH_CFG_INT, "3600", 0, "seconds a login token stays valid"},
    {"argon2_opslimit", EVH_CFG_STRING, "interactive", 0,
     "Argon2id time cost: min, interactive, moderate, sensitive or a number"},
    {"argon2_memlimit", EVH_CFG_STRING, "interactive", 0,
     "Argon2id memory cost: min, interactive, moderate, sensitive or bytes (k/M/G)"},
    {"hash_concurrency", EVH_CFG_INT, NULL, 0,
     "password hashes computed at once (each takes argon2_memlimit; together they must fit "
     "in the machine's memory); default: the cores, at most as many as fit"},
    {"hash_wait_ms", EVH_CFG_INT, "5000", 0,
     "how long a request waits for a hashing turn before 503"},
    {"hash_queue", EVH_CFG_INT, NULL, 0,
     "requests that may wait for a hashing turn at once, each holding an HTTP worker; one "
     "more is 503 at once (0: none wait); default: 4 times hash_concurrency"},
    {"login.max_failures", EVH_CFG_INT, "5", 0,
     "failed logins for one email within login.window before it is locked for "
     "login.window (0: no limit)"},
    {"login.max_failures_per_address", EVH_CFG_INT, "100", 0,
     "failed logins from one client address (an IPv6 /64) within login.window before it "
     "is locked for login.window (0: no limit)"},
    {"login.window", EVH_CFG_INT, "900", 0,
     "seconds failed logins are counted over, and a lockout lasts"},
    {"login.table_size", EVH_CFG_INT, "16384", 0,
     "emails and addresses whose failed logins are remembered at once"},
    {"read_role", EVH_CFG_STRING, NULL, 0,
     "role a bearer token needs for GET /users and GET /users/{id} (unset: public)"},
    {"admin_email", EVH_CFG_STRING, NULL, 0,
     "email of the administrator account created at start when it does not exist"},
    {"admin_password_file", EVH_CFG_FILE, NULL, 0,
     "file holding that administrator's initial password (with admin_email)"},
    {NULL, 0, NULL, 0, NULL},
};

#define USER_TOKEN_TTL_MAX (30 * 24 * 3600)
#define USER_HASH_WAIT_MAX_MS 60000
/* [http] threads' own bound: more could never be waiting. */
#define USER_HASH_QUEUE_MAX 256
#define USER_HASH_QUEUE_PER_SLOT 4
#define USER_ADMIN_NAME "Administrator"
#define USER_LOGIN_FAILURES_MAX 1000
#define USER_LOGIN_ADDRESS_FAILURES_MAX 100000
#define USER_LOGIN_WINDOW_MAX 86400
#define USER_LOGIN_TABLE_MIN 64
#define USER_LOGIN_TABLE_MAX 1048576

/* Integer `key` (default `dflt`) into *out when within [min, max]; else
 * "must be between MIN and MAX" and `unit`, said at the key. */
static int config_range(evh_plugin *p, const char *key, int64_t dflt, int64_t min, int64_t max,
                        const char *unit, int64_t *out)
{
	*out = evh_config_int(p, key, dflt);
	if (*out >= min && *out <= max)
		return EVH_OK;
	evh_config_error(p, key, "must be between %lld and %lld%s (got %lld)", (long long)min,
	                 (long long)max, unit, (long long)*out);
	return EVH_EINVAL;
}

/* user_logic's reasons begin with the key they are about: said at that key,
 * without it. */
static void config_why(evh_plugin *p, const char *key, const char *why)
{
	size_t n = strlen(key);
	if (!strncmp(why, key, n) && why[n] == ':' && why[n + 1] == ' ')
		why += n + 2;
	evh_config_error(p, key, "%s", why);
}

/* The machine's physical memory in bytes, 0 when unknown. Not what is free
 * now (that changes), nor a cgroup's limit: what no hash can ever exceed. */
static unsigned long long machine_memory(void)
{
	long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);

	if (pages <= 0 || page <= 0)
		return 0;
	return (unsigned long long)pages * (unsigned long long)page;
}

/* admin_email and admin_password_file: both or neither, and the email
 * valid (normalized into `email`; "" when there is none). */
static int check_admin_keys(evh_plugin *p, char email[USER_EMAIL_MAX + 1])
{
	const char *e = evh_config_str(p, "admin_email");
	const char *path = evh_config_str(p, "admin_password_file");
	const char *why;
	int has_email = e && *e, has_path = path && *path;

	email[0] = '\0';
	if (!has_email && !has_path)
		return EVH_OK;
	if (!has_email || !has_path) {
		evh_config_error(p, has_email ? "admin_email" : "admin_password_file",
		                 "is set but %s is not: admin_email and admin_password_file go "
		                 "together",
		                 has_email ? "admin_password_file" : "admin_email");
		return EVH_EINVAL;
	}
	if (user_email_normalize(e, email, &why) != 0) {
		config_why(p, "admin_email", why);
		return EVH_EINVAL;
	}
	return EVH_OK;
}

/* Every value init checks that needs neither files nor the network, into
 * `st` (a scratch one for the descriptor's check); nothing is allocated or
 * started. Each problem is said at its key. The check and init both run it. */
static int check_values(evh_plugin *p, user_state *st)
{
	static const char *const topics[] = {"topic.created", "topic.updated", "topic.deleted"};
	const char **topic[] = {&st->topic_created, &st->topic_updated, &st->topic_deleted};
	char email[USER_EMAIL_MAX + 1];
	const char *why;
	char reason[256];
	int64_t n, dflt, cores = sysconf(_SC_NPROCESSORS_ONLN);
	const unsigned long long phys = machine_memory();
	size_t each = 0; /* argon2_memlimit when it passed: 0 says nothing more of it */
	int64_t max, per_address, window, size;
	const char *names[3];
	size_t same;
	int rc = EVH_OK;

	/* Consumers tell a creation from an update by its topic (notifications
	 * subscribes without a type filter: plain producers send none), so two
	 * keys naming one topic are refused, as notifications refuses them. */
	for (size_t i = 0; i < 3; i++) {
		*topic[i] = names[i] = evh_config_str(p, topics[i]);
		if (!names[i] || !*names[i]) {
			evh_config_error(p, topics[i], "must not be empty");
			rc = EVH_EINVAL;
		} else if (!topics_name_ok(names[i])) {
			evh_config_error(p, topics[i],
			                 "'%s' is not a Kafka topic name (" TOPICS_NAME_RULE ")", names[i]);
			rc = EVH_EINVAL;
		} else if ((same = topics_same_before(names, i)) < i) {
			evh_config_error(p, topics[i],
			                 "'%s' is %s's topic too: topic.created, topic.updated and "
			                 "topic.deleted must differ",
			                 names[i], topics[same]);
			rc = EVH_EINVAL;
		}
	}
	st->read_role = evh_config_str(p, "read_role");
	if (st->read_role && !*st->read_role)
		st->read_role = NULL;
	if (config_range(p, "password_min_length", 8, 1, USER_PASSWORD_MAX_BYTES, "", &n))
		rc = EVH_EINVAL;
	st->password_min = (long)n;
	if (config_range(p, "token_ttl", 3600, 1, USER_TOKEN_TTL_MAX, " seconds (30 days)", &n))
		rc = EVH_EINVAL;
	st->token_ttl = (int)n;
	if (user_argon2_opslimit(evh_config_str(p, "argon2_opslimit"), &st->opslimit, &why)) {
		config_why(p, "argon2_opslimit", why);
		rc = EVH_EINVAL;
	}
	if (user_argon2_memlimit(evh_config_str(p, "argon2_memlimit"), &st->memlimit, &why)) {
		config_why(p, "argon2_memlimit", why);
		rc = EVH_EINVAL;
	} else if (user_argon2_memlimit_fits(evh_config_str(p, "argon2_memlimit"), st->memlimit,
	                                     phys, reason, sizeof reason)) {
		evh_config_error(p, "argon2_memlimit", "%s", reason);
		rc = EVH_EINVAL;
	} else {
		each = st->memlimit;
	}
	/* Each hash running holds memlimit bytes: hash_concurrency of them must
	 * fit in the machine's memory together (one alone is checked above).
	 * The default, the cores, is held to what fits. Against the memory
	 * there is, as above: a fixed bound would refuse a large machine's
	 * sound values or pass a small one's. */
	if (config_range(p, "hash_concurrency",
	                 user_hash_concurrency_default(cores, each, phys), 1,
	                 USER_HASH_CONCURRENCY_MAX, "", &n)) {
		rc = EVH_EINVAL;
	} else if (user_hash_memory_fits(each, n, phys, reason, sizeof reason)) {
		evh_config_error(p, "hash_concurrency", "%s", reason);
		rc = EVH_EINVAL;
	}
	st->hash_concurrency = (long)n;
	if (config_range(p, "hash_wait_ms", 5000, 0, USER_HASH_WAIT_MAX_MS, "", &n))
		rc = EVH_EINVAL;
	st->hash_wait_ms = (int)n;
	/* Waiters beyond the slots: each holds a civetweb worker, so without a
	 * bound a flood of logins queues every other route behind the hashes
	 * (in the accept backlog, where hash_wait_ms cannot see it). */
	dflt = st->hash_concurrency * USER_HASH_QUEUE_PER_SLOT;
	if (config_range(p, "hash_queue", dflt < USER_HASH_QUEUE_MAX ? dflt : USER_HASH_QUEUE_MAX,
	                 0, USER_HASH_QUEUE_MAX, "", &n))
		rc = EVH_EINVAL;
	st->hash_queue = (long)n;
	/* login.*: the failed-login limits and the table that counts them (`|`, not
	 * `||`: each bad one is said). */
	if (config_range(p, "login.max_failures", 5, 0, USER_LOGIN_FAILURES_MAX, "", &max) |
	    config_range(p, "login.max_failures_per_address", 100, 0,
	                 USER_LOGIN_ADDRESS_FAILURES_MAX, "", &per_address) |
	    config_range(p, "login.window", 900, 1, USER_LOGIN_WINDOW_MAX, " seconds (1 day)",
	                 &window) |
	    config_range(p, "login.table_size", 16384, USER_LOGIN_TABLE_MIN, USER_LOGIN_TABLE_MAX,
	                 "", &size))
		rc = EVH_EINVAL;
	st->max_failures = (unsigned)max;
	st->max_failures_per_address = (unsigned)per_address;
	st->login_window = (int)window;
	st->login_table_size = (size_t)size;
	if (check_admin_keys(p, email) != EVH_OK)
		rc = EVH_EINVAL;
	return rc;
}

/* The descriptor's check (ABI 1.7): check_values on a scratch state (the
 * main thread's stack; no semaphore or table is made). */
static int user_check(evh_plugin *p)
{
	user_state scratch;

	memset(&scratch, 0, sizeof scratch);
	return check_values(p, &scratch);
}

/* check_values again (a host older than ABI 1.7 never ran user_check), then
 * what the values need: the hashing semaphore and the login table. */
static int read_config(user_state *st)
{
	int rc = check_values(st->p, st);

	if (rc != EVH_OK)
		return rc;
	if (sem_init(&st->hash_slots, 0, (unsigned)st->hash_concurrency) != 0) {
		evh_log(st->p, EVH_LOG_ERROR, "cannot create the hashing semaphore");
		return EVH_ERR;
	}
	st->hash_slots_ready = 1;
	if (login_limit_init(&st->limit, st->login_table_size,
	                     (int64_t)st->login_window * 1000) != 0) {
		evh_log(st->p, EVH_LOG_ERROR, "out of memory");
		return EVH_ENOMEM;
	}
	st->limit_ready = 1;
	return EVH_OK;
}

/* The hash unknown-email logins are verified against: of a random password
 * nobody knows, with the configured cost so it takes as long as a real one. */
static int make_dummy_hash(user_state *st)
{
	unsigned char raw[16];
	char hex[sizeof raw * 2 + 1];
	int rc;

	randombytes_buf(raw, sizeof raw);
	sodium_bin2hex(hex, sizeof hex, raw, sizeof raw);
	rc = user_password_hash(st, hex, st->dummy_hash);
	if (rc != EVH_OK)
		evh_log(st->p, EVH_LOG_ERROR, "cannot hash with argon2_memlimit=%zu bytes: %s",
		        st->memlimit, evh_strerror(rc));
	return rc;
}

/* As the host says of its own secret files: a password file every local
 * account can read is not refused (a test machine may mean it), but said,
 * at each start it is configured (its password may still be the
 * administrator's). */
static void warn_if_public(user_state *st, const char *path)
{
	struct stat sb;

	if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode) && (sb.st_mode & S_IROTH))
		evh_log(st->p, EVH_LOG_WARN,
		        "admin_password_file: '%s' is readable by every local account (mode %04o): "
		        "chmod o-r it",
		        path, (unsigned)(sb.st_mode & 07777));
}

/* The first line of `path`, without its line ending. */
static int read_password_file(user_state *st, const char *path, char *buf, size_t size)
{
	FILE *f = fopen(path, "r");
	size_t n;

	if (!f) {
		evh_log(st->p, EVH_LOG_ERROR, "admin_password_file %s: %s", path, strerror(errno));
		return EVH_EINVAL;
	}
	if (!fgets(buf, (int)size, f))
		buf[0] = '\0';
	fclose(f);
	n = strcspn(buf, "\r\n");
	if (buf[n] == '\0' && n == size - 1) {
		evh_log(st->p, EVH_LOG_ERROR, "admin_password_file %s: password is too long", path);
		return EVH_EINVAL;
	}
	buf[n] = '\0';
	return EVH_OK;
}

/* The account of admin_email `email` (*found), and whether its first
 * administrator was created before (*created, its id in `created_id`). An
 * account with role admin there and no record (made before the record
 * was kept) is recorded now. */
static int find_admin(user_state *st, const char *email, user_rec *u, int *found, int *created,
                      char created_id[IDS_UUID_LEN + 1])
{
	evh_tx *tx;
	int rc = evh_tx_begin(st->p, &tx);

	if (rc != EVH_OK)
		return rc;
	rc = user_db_get_by_email(tx, email, u);
	*found = rc == EVH_OK;
	if (rc == EVH_OK || rc == EVH_ENOTFOUND)
		rc = user_db_admin_created(tx, email, created_id);
	*created = rc == 1;
	if (rc >= 0 && *found && !*created && user_roles_has(u->roles, USER_ROLE_ADMIN)) {
		rc = user_db_admin_record(tx, email, u->id, u->created_at);
		if (rc == EVH_OK)
			rc = evh_tx_commit(tx);
		else
			evh_tx_rollback(tx);
		return rc;
	}
	evh_tx_rollback(tx);
	return rc < 0 ? rc : EVH_OK;
}

static int create_admin(user_state *st, user_rec *u, const char *path)
{
	char password[USER_PASSWORD_MAX_BYTES + 2];
	const char *why;
	reply_change ch; /* no client to tell: the log says what failed */
	int rc = read_password_file(st, path, password, sizeof password);

	if (rc == EVH_OK && user_password_check(password, st->password_min, &why) != 0) {
		evh_log(st->p, EVH_LOG_ERROR, "admin_password_file %s: %s", path, why);
		rc = EVH_EINVAL;
	}
	if (rc == EVH_OK)
		rc = user_password_hash(st, password, u->password_hash);
	sodium_memzero(password, sizeof password);
	if (rc != EVH_OK)
		return rc;
	ids_uuid_v4(u->id);
	ids_now_rfc3339(u->created_at);
	memcpy(u->updated_at, u->created_at, sizeof u->updated_at);
	snprintf(u->name, sizeof u->name, "%s", USER_ADMIN_NAME);
	snprintf(u->roles, sizeof u->roles, "%s", USER_ROLES_ADMIN);
	rc = user_create_tx(st, u, u->email, &ch);
	/* Named by its key and id, not its address: an address is personal
	 * data, and logs go where the configuration does not. */
	if (rc == EVH_OK)
		evh_log(st->p, EVH_LOG_INFO, "created the administrator of admin_email: user %s",
		        u->id);
	else
		evh_log(st->p, EVH_LOG_ERROR, "cannot create the administrator of admin_email: %s",
		        evh_strerror(rc));
	return rc;
}

/* admin_email + admin_password_file: create that account with role admin
 * unless the email is already registered. An existing account is never
 * promoted: whoever registered the address first must not become admin. */
static int ensure_admin(user_state *st)
{
	const char *path = evh_config_str(st->p, "admin_password_file");
	int found = 0, created = 0, rc;
	char created_id[IDS_UUID_LEN + 1] = "";
	user_rec u;

	memset(&u, 0, sizeof u);
	if ((rc = check_admin_keys(st->p, u.email)) != EVH_OK || !u.email[0])
		return rc;
	warn_if_public(st, path);
	if ((rc = find_admin(st, u.email, &u, &found, &created, created_id)) != EVH_OK) {
		evh_log(st->p, EVH_LOG_ERROR,
		        "cannot look up (or record) the administrator of admin_email: %s",
		        evh_strerror(rc));
		return rc;
	}
	/* Once only: an administrator who moved the account to another
	 * address, or deleted it, must not find it back at the next start with
	 * the password file's initial password. */
	if (!found && created)
		evh_log(st->p, EVH_LOG_WARN,
		        "the administrator created for admin_email (user %s) no longer has that "
		        "address (changed or deleted): not created again, the password file's "
		        "password is used once; set admin_email to another address for a new one",
		        created_id);
	else if (!found)
		rc = create_admin(st, &u, path);
	else if (!user_roles_has(u.roles, USER_ROLE_ADMIN))
		evh_log(st->p, EVH_LOG_WARN,
		        "admin_email belongs to user %s, an account without role admin; it is not "
		        "promoted (choose an unregistered address)",
		        u.id);
	sodium_memzero(u.password_hash, sizeof u.password_hash);
	return rc;
}

static void user_fini(evh_plugin *p, void *state)
{
	user_state *st = state;

	if (!st)
		return;
	if (st->hash_slots_ready)
		sem_destroy(&st->hash_slots);
	if (st->limit_ready)
		login_limit_fini(&st->limit);
	sodium_memzero(st, sizeof *st);
	free(st);
}

/* user_logins_total's results (user_auth.c counts them). */
static const char *const login_results[] = {"ok", "failed", "locked", "busy"};

static int user_init(evh_plugin *p, void **state)
{
	user_state *st;
	int rc;

	if (sodium_init() < 0) {
		evh_log(p, EVH_LOG_ERROR, "libsodium failed to initialise");
		return EVH_ERR;
	}
	if (!(st = calloc(1, sizeof *st))) {
		evh_log(p, EVH_LOG_ERROR, "out of memory");
		return EVH_ENOMEM;
	}
	st->p = p;
	if ((rc = read_config(st)) == EVH_OK && (rc = evh_migrate(p, user_migrations,
	                                                          user_nmigrations)) == EVH_OK &&
	    (rc = make_dummy_hash(st)) == EVH_OK && (rc = ensure_admin(st)) == EVH_OK)
		rc = user_routes_register(st);
	if (rc != EVH_OK) {
		user_fini(p, st);
		return rc;
	}
	st->logins = evh_metric_new(p, EVH_METRIC_COUNTER, "user_logins_total",
	                            "POST /auth/login by result: ok (a token), failed (invalid "
	                            "credentials; also a wrong current_password), locked (429 "
	                            "after failed logins, the password unchecked) or busy (429: "
	                            "too many being checked at once).",
	                            "result");
	/* Each result there at 0 from the start: Prometheus takes a series
	 * first seen at 1 for one that was always 1 (increase() misses it). */
	for (size_t i = 0; i < sizeof login_results / sizeof login_results[0]; i++)
		evh_metric_add(st->logins, login_results[i], 0);
	*state = st;
	return EVH_OK;
}

EVH_PLUGIN_ROUTES("user", "1.0.0", "user accounts, login tokens and USER_* events",
                  user_config, user_check, user_routes_declared, user_init, user_fini)
