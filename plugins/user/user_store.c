/* The users table. `seq` orders rows for keyset pagination and is never
 * reused (AUTOINCREMENT), `id` is the public UUID, and the UNIQUE index on
 * the normalised email is what decides a duplicate registration, so two
 * racing requests cannot both win. */
#include "user.h"

#include <string.h>

const evh_migration user_migrations[] = {
    {1, "CREATE TABLE users("
        " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
        " id TEXT NOT NULL UNIQUE,"
        " name TEXT NOT NULL,"
        " email TEXT NOT NULL UNIQUE,"
        " password_hash TEXT NOT NULL,"
        " roles TEXT NOT NULL,"
        " created_at TEXT NOT NULL,"
        " updated_at TEXT NOT NULL)"},
    /* The first administrator of each admin_email, once created: not
     * created again when that account is renamed or deleted. */
    {2, "CREATE TABLE admin_created("
        " email TEXT PRIMARY KEY,"
        " user_id TEXT NOT NULL,"
        " created_at TEXT NOT NULL)"},
};
const size_t user_nmigrations = sizeof user_migrations / sizeof user_migrations[0];

#define USER_COLUMNS "seq, id, name, email, password_hash, roles, created_at, updated_at"

static void copy_col(evh_rows *rows, int col, char *buf, size_t size)
{
	size_t len = 0;
	const char *s = evh_rows_text(rows, col, &len);

	if (!s)
		len = 0;
	if (len >= size)
		len = size - 1;
	memcpy(buf, s ? s : "", len);
	buf[len] = '\0';
}

static void load_row(evh_rows *rows, user_rec *u)
{
	u->seq = evh_rows_int(rows, 0);
	copy_col(rows, 1, u->id, sizeof u->id);
	copy_col(rows, 2, u->name, sizeof u->name);
	copy_col(rows, 3, u->email, sizeof u->email);
	copy_col(rows, 4, u->password_hash, sizeof u->password_hash);
	copy_col(rows, 5, u->roles, sizeof u->roles);
	copy_col(rows, 6, u->created_at, sizeof u->created_at);
	copy_col(rows, 7, u->updated_at, sizeof u->updated_at);
}

static int get_one(evh_tx *tx, const char *sql, const char *arg, user_rec *u)
{
	evh_value args[] = {EVH_TEXT(arg)};
	evh_rows *rows;
	int rc = evh_query(tx, sql, args, 1, &rows);

	if (rc != EVH_OK)
		return rc;
	rc = evh_rows_next(rows);
	if (rc == 1)
		load_row(rows, u);
	evh_rows_close(rows);
	if (rc < 0)
		return rc;
	return rc == 1 ? EVH_OK : EVH_ENOTFOUND;
}

int user_db_get(evh_tx *tx, const char *id, user_rec *u)
{
	return get_one(tx, "SELECT " USER_COLUMNS " FROM users WHERE id = ?", id, u);
}

int user_db_get_by_email(evh_tx *tx, const char *email, user_rec *u)
{
	return get_one(tx, "SELECT " USER_COLUMNS " FROM users WHERE email = ?", email, u);
}

int user_db_insert(evh_tx *tx, const user_rec *u)
{
	evh_value args[] = {EVH_TEXT(u->id),         EVH_TEXT(u->name),
	                    EVH_TEXT(u->email),      EVH_TEXT(u->password_hash),
	                    EVH_TEXT(u->roles),      EVH_TEXT(u->created_at),
	                    EVH_TEXT(u->updated_at)};

	return evh_exec(tx,
	                "INSERT INTO users(id, name, email, password_hash, roles, created_at,"
	                " updated_at) VALUES(?, ?, ?, ?, ?, ?, ?)",
	                args, sizeof args / sizeof args[0], NULL);
}

int user_db_admin_created(evh_tx *tx, const char *email, char user_id[IDS_UUID_LEN + 1])
{
	evh_value args[] = {EVH_TEXT(email)};
	evh_rows *rows;
	int rc = evh_query(tx, "SELECT user_id FROM admin_created WHERE email = ?", args, 1, &rows);

	if (rc != EVH_OK)
		return rc;
	rc = evh_rows_next(rows);
	if (rc == 1)
		copy_col(rows, 0, user_id, IDS_UUID_LEN + 1);
	evh_rows_close(rows);
	return rc;
}

int user_db_admin_record(evh_tx *tx, const char *email, const char *user_id, const char *at)
{
	evh_value args[] = {EVH_TEXT(email), EVH_TEXT(user_id), EVH_TEXT(at)};

	return evh_exec(tx,
	                "INSERT OR IGNORE INTO admin_created(email, user_id, created_at)"
	                " VALUES(?, ?, ?)",
	                args, 3, NULL);
}

int user_db_update(evh_tx *tx, const user_rec *u)
{
	evh_value args[] = {EVH_TEXT(u->name), EVH_TEXT(u->email), EVH_TEXT(u->password_hash),
	                    EVH_TEXT(u->roles), EVH_TEXT(u->updated_at), EVH_TEXT(u->id)};
	int64_t changes = 0;
	int rc = evh_exec(tx,
	                  "UPDATE users SET name = ?, email = ?, password_hash = ?, roles = ?,"
	                  " updated_at = ? WHERE id = ?",
	                  args, sizeof args / sizeof args[0], &changes);

	if (rc == EVH_OK && changes == 0)
		return EVH_ENOTFOUND;
	return rc;
}

int user_db_set_hash(evh_tx *tx, const char *id, const char *old_hash, const char *new_hash,
                     int64_t *changes)
{
	evh_value args[] = {EVH_TEXT(new_hash), EVH_TEXT(id), EVH_TEXT(old_hash)};

	return evh_exec(tx, "UPDATE users SET password_hash = ? WHERE id = ? AND password_hash = ?",
	                args, sizeof args / sizeof args[0], changes);
}

size_t user_db_bytes(const user_rec *u)
{
	return strlen(u->id) + strlen(u->name) + strlen(u->email) + strlen(u->password_hash) +
	       strlen(u->roles) + strlen(u->created_at) + strlen(u->updated_at);
}

int user_db_delete(evh_tx *tx, const char *id)
{
	evh_value args[] = {EVH_TEXT(id)};
	int64_t changes = 0;
	int rc = evh_exec(tx, "DELETE FROM users WHERE id = ?", args, 1, &changes);

	if (rc == EVH_OK && changes == 0)
		return EVH_ENOTFOUND;
	return rc;
}

int user_db_page(evh_tx *tx, int64_t after_seq, int limit, cJSON *items, int *more,
                 int64_t *last_seq)
{
	evh_value args[] = {EVH_INT(after_seq), EVH_INT(limit + 1)};
	evh_rows *rows;
	user_rec u;
	int rc, n = 0;

	*more = 0;
	rc = evh_query(tx, "SELECT " USER_COLUMNS " FROM users WHERE seq > ? ORDER BY seq LIMIT ?",
	               args, 2, &rows);
	if (rc != EVH_OK)
		return rc;
	while ((rc = evh_rows_next(rows)) == 1) {
		cJSON *item;

		if (n == limit) { /* the extra row only says another page exists */
			*more = 1;
			break;
		}
		load_row(rows, &u);
		item = user_to_json(&u);
		if (!item || !cJSON_AddItemToArray(items, item)) {
			cJSON_Delete(item);
			rc = EVH_ENOMEM;
			break;
		}
		*last_seq = u.seq;
		n++;
	}
	evh_rows_close(rows);
	sodium_memzero(u.password_hash, sizeof u.password_hash);
	return rc < 0 ? rc : EVH_OK;
}
