/* cJSON documents built without a part lost to a failed allocation, and
 * printed with their numbers exact (see jsonb.h). */
#include "jsonb.h"

#include <locale.h>
#include <math.h> /* isnan, isinf */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "textbuf.h"

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

/* ---------------------------------------------------------------- printing */

size_t jsonb_number(double v, char out[JSONB_NUMBER_MAX])
{
	const struct lconv *lc;
	char point;
	int n = 0;

	if (isnan(v) || isinf(v)) {
		memcpy(out, "null", 5);
		return 4;
	}
	if (v > -0x1p53 && v < 0x1p53 && v == (double)(int64_t)v) {
		n = snprintf(out, JSONB_NUMBER_MAX, "%.0f", v);
	} else {
		/* %.17g always reads back exactly (IEEE doubles need at most 17
		 * significant digits); the shorter forms only when they do. */
		for (int prec = 15; prec <= 17; prec++) {
			n = snprintf(out, JSONB_NUMBER_MAX, "%.*g", prec, v);
			if (prec == 17 || strtod(out, NULL) == v)
				break;
		}
	}
	/* snprintf and strtod agree on the locale's decimal point; JSON's is '.' */
	lc = localeconv();
	point = lc && lc->decimal_point ? lc->decimal_point[0] : '.';
	if (point != '.' && point) {
		char *c = strchr(out, point);
		if (c)
			*c = '.';
	}
	return n > 0 ? (size_t)n : 0;
}

/* A string as cJSON escapes it: '"', '\\' and the control characters, the
 * usual ones by letter, the others as \u00xx; all else as it is. */
static void put_string(textbuf *b, const char *s)
{
	const unsigned char *c = (const unsigned char *)(s ? s : ""), *run = c;
	tb_put(b, "\"", 1);
	for (; *c; c++) {
		char esc[8];
		if (*c >= 32 && *c != '"' && *c != '\\')
			continue;
		tb_put(b, (const char *)run, (size_t)(c - run));
		run = c + 1;
		switch (*c) {
		case '"': tb_put(b, "\\\"", 2); break;
		case '\\': tb_put(b, "\\\\", 2); break;
		case '\b': tb_put(b, "\\b", 2); break;
		case '\f': tb_put(b, "\\f", 2); break;
		case '\n': tb_put(b, "\\n", 2); break;
		case '\r': tb_put(b, "\\r", 2); break;
		case '\t': tb_put(b, "\\t", 2); break;
		default:
			snprintf(esc, sizeof esc, "\\u%04x", *c);
			tb_put(b, esc, 6);
		}
	}
	tb_put(b, (const char *)run, (size_t)(c - run));
	tb_put(b, "\"", 1);
}

/* Its own frame: put_value recurses, and a worker's stack is small. */
__attribute__((noinline)) static void put_number(textbuf *b, double v)
{
	char num[JSONB_NUMBER_MAX];
	tb_put(b, num, jsonb_number(v, num));
}

static int put_value(textbuf *b, const cJSON *item)
{
	const cJSON *c;

	switch (item->type & 0xFF) {
	case cJSON_NULL: tb_put(b, "null", 4); return 0;
	case cJSON_False: tb_put(b, "false", 5); return 0;
	case cJSON_True: tb_put(b, "true", 4); return 0;
	case cJSON_Number: put_number(b, item->valuedouble); return 0;
	case cJSON_String: put_string(b, item->valuestring); return 0;
	case cJSON_Raw:
		if (!item->valuestring)
			return -1;
		tb_put(b, item->valuestring, strlen(item->valuestring));
		return 0;
	case cJSON_Array:
	case cJSON_Object: {
		int obj = cJSON_IsObject(item);
		tb_put(b, obj ? "{" : "[", 1);
		for (c = item->child; c; c = c->next) {
			if (obj) {
				put_string(b, c->string);
				tb_put(b, ":", 1);
			}
			if (put_value(b, c) != 0)
				return -1;
			if (c->next)
				tb_put(b, ",", 1);
		}
		tb_put(b, obj ? "}" : "]", 1);
		return 0;
	}
	default: return -1;
	}
}

char *jsonb_print(const cJSON *item)
{
	textbuf b = {0};
	if (!item || put_value(&b, item) != 0 || b.oom) {
		free(b.p);
		return NULL;
	}
	return b.p; /* put_value appends at least one byte */
}
