/* SQLite database files for tests that make, read and drop databases: the
 * files beside one (WAL, shared memory, rollback journal), and one value
 * read from a file as another process would. */
#ifndef EVH_TEST_DB_FILES_H
#define EVH_TEST_DB_FILES_H
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>
#include <sqlite3.h>

static inline void remove_db_files(const char *path)
{
	static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};
	char p[300];
	for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
		snprintf(p, sizeof p, "%s%s", path, suffixes[i]);
		unlink(p);
	}
}

/* The integer the first row of `sql` gives, on the database file `path`
 * opened read-only; -1 when it cannot be opened, `sql` fails, or it gives
 * no row. */
static inline int64_t db_file_int(const char *path, const char *sql)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	int64_t v = -1;
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
	    sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return v;
}
#endif
