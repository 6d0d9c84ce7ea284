/* A cmocka program run as TEST_PARTS processes side by side: tests/CMakeLists.txt
 * reads `#define TEST_PARTS N` from the program's source and adds the ctest tests
 * NAME.1..N, each with EVHOST_TEST_PART set; each process runs its share of the
 * tests (a test of part 0 runs in every part). Without EVHOST_TEST_PART, all. */
#ifndef EVH_TEST_PARTS_H
#define EVH_TEST_PARTS_H
#include <stdio.h>
#include <stdlib.h>

struct part_test {
	struct CMUnitTest test;
	int part;
};

/* Copy the tests of this process's part from all[0..n) into out; returns how
 * many, or -1 (said on stderr) when EVHOST_TEST_PART is not 1 to `parts`. */
static inline long test_parts_select(const char *prog, int parts, const struct part_test *all,
                                     size_t n, struct CMUnitTest *out)
{
	const char *env = getenv("EVHOST_TEST_PART");
	long part = 0, k = 0;
	if (env) {
		char *end;
		part = strtol(env, &end, 10);
		if (*end || part < 1 || part > parts) {
			fprintf(stderr, "%s: EVHOST_TEST_PART=%s: expected 1 to %d\n", prog, env, parts);
			return -1;
		}
	}
	for (size_t i = 0; i < n; i++)
		if (!part || !all[i].part || all[i].part == part)
			out[k++] = all[i].test;
	return k;
}
#endif
