/* cJSON documents built without a part lost to a failed allocation (see
 * jsonb.h). */
#include "jsonb.h"

void jsonb_put(cJSON *to, const char *name, cJSON *item, int *ok)
{
	int added = to && item &&
	            (name ? cJSON_AddItemToObject(to, name, item) : cJSON_AddItemToArray(to, item));
	if (!added) {
		cJSON_Delete(item);
		*ok = 0;
	}
}

void jsonb_put_str(cJSON *to, const char *name, const char *v, int *ok)
{
	jsonb_put(to, name, v ? cJSON_CreateString(v) : cJSON_CreateNull(), ok);
}

void jsonb_put_num(cJSON *to, const char *name, double v, int *ok)
{
	jsonb_put(to, name, cJSON_CreateNumber(v), ok);
}

void jsonb_put_bool(cJSON *to, const char *name, int v, int *ok)
{
	jsonb_put(to, name, cJSON_CreateBool(v), ok);
}

static cJSON *put_new(cJSON *to, const char *name, cJSON *item, int *ok)
{
	int added = 1;
	jsonb_put(to, name, item, &added);
	if (added)
		return item;
	*ok = 0;
	return NULL;
}

cJSON *jsonb_put_object(cJSON *to, const char *name, int *ok)
{
	return put_new(to, name, cJSON_CreateObject(), ok);
}

cJSON *jsonb_put_array(cJSON *to, const char *name, int *ok)
{
	return put_new(to, name, cJSON_CreateArray(), ok);
}
