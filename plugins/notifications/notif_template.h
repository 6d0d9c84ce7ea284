/* Mail templates: {{name}} placeholders (spaces inside the braces allowed)
 * replaced by values, HTML-escaped for the HTML part. SDK-free, pure. */
#ifndef NOTIF_TEMPLATE_H
#define NOTIF_TEMPLATE_H
#include <stddef.h>
#include "notif_buf.h"

typedef struct notif_var {
	const char *name;
	const char *value; /* UTF-8; NULL renders as empty */
} notif_var;

typedef enum notif_escape {
	NOTIF_ESC_NONE = 0, /* plain text and subject */
	NOTIF_ESC_HTML = 1, /* & < > " ' become entities */
} notif_escape;

/* Append `s` to `b` with & < > " ' replaced by HTML entities. */
void notif_html_escape(nbuf *b, const char *s);

/* Render `tmpl` (`len` bytes): each {{ name }} becomes the value of the
 * variable of that name, escaped per `esc`. A placeholder naming no variable
 * renders empty (notif_template_check catches those at load time); a "{{"
 * without a closing "}}" is copied as it is. Returns a malloc'd string (its
 * length in *out_len when non-NULL), or NULL when out of memory. */
char *notif_render(const char *tmpl, size_t len, const notif_var *vars, size_t nvars,
                   notif_escape esc, size_t *out_len);

/* Find the first placeholder in `tmpl` whose name is not in `names`. Returns
 * 1 and copies that name into `bad` (truncated to badlen), or 0 when every
 * placeholder is known. Used at init so a typo fails loudly, not silently. */
int notif_template_check(const char *tmpl, size_t len, const char *const *names, size_t nnames,
                         char *bad, size_t badlen);
#endif
