/* Remove a SQLite database and the files beside it (WAL, shared memory,
 * rollback journal), for tests that make and drop databases. */
#ifndef EVH_TEST_DB_FILES_H
#define EVH_TEST_DB_FILES_H
#include <stdio.h>
#include <unistd.h>

static inline void remove_db_files(const char *path)
{
	static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};
	char p[300];
	for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
		snprintf(p, sizeof p, "%s%s", path, suffixes[i]);
		unlink(p);
	}
}
#endif
