/* Files the unit tests write for the code under test to read (include
 * after cmocka.h). */
#ifndef EVH_TEST_FILES_H
#define EVH_TEST_FILES_H
#include <stdio.h>
#include <sys/stat.h>

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
#endif
