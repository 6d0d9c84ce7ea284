/* What json_duplicate_member said when it parsed: cJSON's tree of s[0..n),
 * walked by json_tree_duplicate_member. The scan (json_check_members) must
 * say the same, name and all: the oracle of test_json and fuzz_json. */
#ifndef EVH_TEST_JSON_ORACLE_H
#define EVH_TEST_JSON_ORACLE_H
#include <stddef.h>

#include <cjson/cJSON.h>

#include "json.h"

static inline int dup_by_tree(const char *s, size_t n, char *name, size_t namelen)
{
	cJSON *root = cJSON_ParseWithLength(s, n);
	int rc;
	if (!root)
		return -1;
	rc = json_tree_duplicate_member(root, name, namelen);
	cJSON_Delete(root);
	return rc;
}
#endif
