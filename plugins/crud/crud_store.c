/* The documents table: one row per document of every collection. `seq`
 * orders rows for keyset pagination and is never reused (AUTOINCREMENT);
 * (collection, id) is the document's identity; `version` is its entity tag. */
#include "crud.h"
#include "../../host/json.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const evh_migration crud_migrations[] = {
    {1, "CREATE TABLE documents("
        " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
        " collection TEXT NOT NULL,"
        " id TEXT NOT NULL,"
        " doc TEXT NOT NULL,"
        " version INTEGER NOT NULL,"
        " created_at TEXT NOT NULL,"
        " updated_at TEXT NOT NULL,"
        " UNIQUE(collection, id));"
        "CREATE INDEX documents_by_collection ON documents(collection, seq);"},
};
const size_t crud_nmigrations = sizeof crud_migrations / sizeof crud_migrations[0];

int crud_db_get(evh_tx *tx, const char *coll, const char *id, int64_t *version, char **json)
{
	evh_value args[] = {EVH_TEXT(coll), EVH_TEXT(id)};
	evh_rows *rows;
	/* Without `json`, the document is not read: a replacement or a deletion
	 * then works on one the storage can no longer read (stored before its
	 * limit went below its size), and costs no copy of it. */
	int rc = evh_query(tx,
	                   json ? "SELECT version, doc FROM documents WHERE collection = ? AND id = ?"
	                        : "SELECT version FROM documents WHERE collection = ? AND id = ?",
	                   args, 2, &rows);

	if (rc != EVH_OK)
		return rc;
	rc = evh_rows_next(rows);
	if (rc == 1) {
		size_t len = 0;
		const char *doc = evh_rows_text(rows, 1, &len);

		*version = evh_rows_int(rows, 0);
		if (json && !(*json = strndup(doc ? doc : "{}", doc ? len : 2)))
			rc = EVH_ENOMEM;
	}
	evh_rows_close(rows);
	if (rc < 0)
		return rc;
	return rc == 1 ? EVH_OK : EVH_ENOTFOUND;
}

int crud_db_insert(evh_tx *tx, const char *coll, const char *id, const char *json,
                   const char *now)
{
	evh_value args[] = {EVH_TEXT(coll), EVH_TEXT(id), EVH_TEXT(json), EVH_TEXT(now),
	                    EVH_TEXT(now)};

	return evh_exec(tx,
	                "INSERT INTO documents(collection, id, doc, version, created_at,"
	                " updated_at) VALUES(?, ?, ?, 1, ?, ?)",
	                args, sizeof args / sizeof args[0], NULL);
}

int crud_db_update(evh_tx *tx, const char *coll, const char *id, const char *json,
                   const char *now)
{
	evh_value args[] = {EVH_TEXT(json), EVH_TEXT(now), EVH_TEXT(coll), EVH_TEXT(id)};
	int64_t changes = 0;
	int rc = evh_exec(tx,
	                  "UPDATE documents SET doc = ?, version = version + 1, updated_at = ?"
	                  " WHERE collection = ? AND id = ?",
	                  args, sizeof args / sizeof args[0], &changes);

	return rc == EVH_OK && changes == 0 ? EVH_ENOTFOUND : rc;
}

int crud_db_delete(evh_tx *tx, const char *coll, const char *id)
{
	evh_value args[] = {EVH_TEXT(coll), EVH_TEXT(id)};
	int64_t changes = 0;
	int rc = evh_exec(tx, "DELETE FROM documents WHERE collection = ? AND id = ?", args, 2,
	                  &changes);

	return rc == EVH_OK && changes == 0 ? EVH_ENOTFOUND : rc;
}

static evh_value filter_value(const crud_filter *f)
{
	switch (f->kind) {
	case CRUD_F_TEXT:
		return EVH_TEXT(f->text);
	case CRUD_F_REAL:
		return EVH_REAL(f->r);
	case CRUD_F_INT:
	case CRUD_F_BOOL:
		break;
	}
	return EVH_INT(f->i);
}

/* The page query for `n` filters: every document after the cursor, each
 * with whether it matches (the filters in a CASE, which stops at the first
 * one failing, as a WHERE clause would), so that crud_db_page counts the
 * documents it examines, and their bytes, not only the matches. Its text
 * depends only on n, so the host's statement cache holds at most
 * CRUD_FILTERS_MAX + 1 of them. */
static void page_sql(size_t n, char *sql, size_t size)
{
	size_t len = (size_t)snprintf(sql, size, "SELECT seq, doc, CASE WHEN 1");

	while (n-- && len < size)
		len += (size_t)snprintf(sql + len, size - len, "%s", CRUD_FILTER_SQL);
	if (len < size)
		snprintf(sql + len, size - len,
		         " THEN 1 ELSE 0 END FROM documents WHERE collection = ? AND seq > ?"
		         " ORDER BY seq LIMIT ?");
}

/* A stored document goes into the page as the text it is (a raw item):
 * parsed into a tree, a document of small values took about 40 times its
 * size (a cJSON node for each value), so a page of large ones could take
 * gigabytes. It is checked first, without allocating: stored documents are
 * always valid JSON (written by crud from a tree), but a database edited by
 * hand must not make the answer malformed. */
static int add_item(cJSON *items, const char *doc, size_t len)
{
	cJSON *item;

	if (json_check(doc, len, JSON_MAX_DEPTH, NULL) != JSON_OK)
		return EVH_ERR;
	/* (json_check refuses NUL bytes: the copy takes the whole text.) */
	item = cJSON_CreateRaw(doc);
	if (item && cJSON_AddItemToArray(items, item))
		return EVH_OK;
	cJSON_Delete(item);
	return EVH_ENOMEM;
}

/* *found: whether `coll` has a document after `after_seq`. Read from the
 * (collection, seq) index alone: no document read. */
static int doc_after(evh_tx *tx, const char *coll, int64_t after_seq, int *found)
{
	evh_value args[] = {EVH_TEXT(coll), EVH_INT(after_seq)};
	evh_rows *rows;
	int rc = evh_query(tx, "SELECT 1 FROM documents WHERE collection = ? AND seq > ? LIMIT 1",
	                   args, sizeof args / sizeof args[0], &rows);

	*found = 0;
	if (rc != EVH_OK)
		return rc;
	rc = evh_rows_next(rows);
	evh_rows_close(rows);
	if (rc < 0)
		return rc;
	*found = rc == 1;
	return EVH_OK;
}

int crud_db_page(evh_tx *tx, const char *coll, int64_t after_seq, int limit,
                 const crud_filter *filters, size_t nfilters, cJSON *items, int *more,
                 int64_t *last_seq)
{
	evh_value args[3 + CRUD_FILTERS_MAX * CRUD_FILTER_BINDS];
	char sql[200 + CRUD_FILTERS_MAX * sizeof CRUD_FILTER_SQL];
	size_t n = 0, i, bytes = 0;
	int64_t cut = 0; /* the last document examined, when a bound stopped the scan */
	evh_rows *rows;
	int rc, count = 0, examined = 0, found;

	if (nfilters > CRUD_FILTERS_MAX)
		return EVH_EINVAL;
	for (i = 0; i < nfilters; i++) {
		args[n++] = EVH_TEXT(filters[i].path);
		args[n++] = EVH_TEXT(filters[i].json_type);
		args[n++] = EVH_TEXT(filters[i].json_type_alt);
		args[n++] = EVH_TEXT(filters[i].path);
		args[n++] = filter_value(&filters[i]);
	}
	args[n++] = EVH_TEXT(coll);
	args[n++] = EVH_INT(after_seq);
	/* Unfiltered, every row is a match: the extra one says another page
	 * exists. Filtered, the scan below stops at its bounds. */
	args[n++] = EVH_INT(nfilters ? -1 : (int64_t)limit + 1);
	page_sql(nfilters, sql, sizeof sql);
	*more = 0;
	if ((rc = evh_query(tx, sql, args, n, &rows)) != EVH_OK)
		return rc;
	while ((rc = evh_rows_next(rows)) == 1) {
		size_t len = 0;
		const char *doc = evh_rows_text(rows, 1, &len);

		if (evh_rows_int(rows, 2)) {
			if (count == limit) { /* the extra match only says another page exists */
				*more = 1;
				break;
			}
			if ((rc = add_item(items, doc ? doc : "{}", doc ? len : 2)) != EVH_OK)
				break;
			*last_seq = evh_rows_int(rows, 0);
			count++;
		}
		bytes += len;
		/* A filter is checked on each document (its JSON parsed), under a
		 * read transaction: one matching nothing in millions of documents
		 * held every write for seconds (when pages were read in crud's one
		 * transaction), and it still holds the WAL back as long. A filtered
		 * page examines CRUD_SCAN_MAX documents at most, or CRUD_SCAN_BYTES
		 * of them, whichever comes first, and always one. An unfiltered one
		 * stops at its limit, or at CRUD_SCAN_BYTES too: 100 documents of
		 * 1 MiB made a 100 MiB answer, built in memory, per request. */
		if ((nfilters && ++examined == CRUD_SCAN_MAX) || bytes >= CRUD_SCAN_BYTES) {
			cut = evh_rows_int(rows, 0); /* never 0: seq starts at 1 */
			break;
		}
	}
	evh_rows_close(rows);
	if (rc < 0)
		return rc;
	/* Documents past the ones examined remain: the cursor goes on after the
	 * last one examined, so the page may be short, or empty, and still have
	 * a next one (seq only grows: no document is seen twice or skipped). */
	if (cut && !*more) {
		if ((rc = doc_after(tx, coll, cut, &found)) != EVH_OK)
			return rc;
		if (found) {
			*more = 1;
			*last_seq = cut;
		}
	}
	return EVH_OK;
}
