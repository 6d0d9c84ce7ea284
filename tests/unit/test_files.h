/* Files the unit tests write for the code under test to read (include
 * after cmocka.h). */
#ifndef EVH_TEST_FILES_H
#define EVH_TEST_FILES_H
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Write `text` to dir/name with `mode` (failing the test if it cannot). */
static inline void test_write_file(const char *dir, const char *name, const char *text,
                                   mode_t mode)
{
	char path[256];
	FILE *f;
	snprintf(path, sizeof path, "%s/%s", dir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	assert_true(fputs(text, f) >= 0);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(chmod(path, mode), 0);
}

/* Make a fresh directory /tmp/evh-NAME-?????? (mkdtemp: the last six
 * characters made unique) in `dir` (`len` bytes), failing the test if it
 * cannot. */
static inline void test_make_dir(char *dir, size_t len, const char *name)
{
	int n = snprintf(dir, len, "/tmp/evh-%s-", name);
	assert_true(n > 0 && (size_t)n + 7 <= len);
	memset(dir + n, 'X', 6); /* what mkdtemp replaces */
	dir[n + 6] = '\0';
	assert_non_null(mkdtemp(dir));
}

/* Remove `path` and everything under it (a test's temporary directory);
 * what cannot be removed is left. */
static inline void test_remove_tree(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *e;
	while (d && (e = readdir(d))) {
		char sub[512];
		struct stat st;
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (snprintf(sub, sizeof sub, "%s/%s", path, e->d_name) >= (int)sizeof sub)
			continue; /* longer than a test makes */
		if (lstat(sub, &st) == 0 && S_ISDIR(st.st_mode))
			test_remove_tree(sub);
		else
			unlink(sub);
	}
	if (d)
		closedir(d);
	rmdir(path);
}
#endif
