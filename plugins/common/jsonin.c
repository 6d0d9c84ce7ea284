/* See jsonin.h. */
#include "jsonin.h"

#include "../../host/json.h"

cJSON *jsonin_parse(const char *text, size_t len, int *oom)
{
	cJSON *v = text && len ? cJSON_ParseWithLength(text, len) : NULL;
	*oom = !v && text && len && json_check(text, len, JSON_MAX_DEPTH, NULL) == JSON_OK;
	return v;
}
