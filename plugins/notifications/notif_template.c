#include "notif_template.h"

#include <stdlib.h>
#include <string.h>

void notif_html_escape(nbuf *b, const char *s)
{
	const char *run = s;

	for (; *s; s++) {
		const char *ent;
		switch (*s) {
		case '&': ent = "&amp;"; break;
		case '<': ent = "&lt;"; break;
		case '>': ent = "&gt;"; break;
		case '"': ent = "&quot;"; break;
		case '\'': ent = "&#39;"; break;
		default: continue;
		}
		nbuf_add(b, run, (size_t)(s - run));
		nbuf_adds(b, ent);
		run = s + 1;
	}
	nbuf_add(b, run, (size_t)(s - run));
}

/* A placeholder found at tmpl[i]: the name's bounds (spaces trimmed) and the
 * index just past the closing braces. Returns 0 when there is none there. */
typedef struct placeholder {
	size_t name_start, name_len, end;
} placeholder;

static int placeholder_at(const char *t, size_t len, size_t i, placeholder *ph)
{
	size_t j, s, e;

	if (i + 1 >= len || t[i] != '{' || t[i + 1] != '{')
		return 0;
	for (j = i + 2; j + 1 < len; j++) {
		if (t[j] == '}' && t[j + 1] == '}')
			break;
		if (t[j] == '{' || t[j] == '\n')
			return 0; /* not a placeholder: keep the text as written */
	}
	if (j + 1 >= len)
		return 0;
	s = i + 2;
	e = j;
	while (s < e && t[s] == ' ')
		s++;
	while (e > s && t[e - 1] == ' ')
		e--;
	ph->name_start = s;
	ph->name_len = e - s;
	ph->end = j + 2;
	return 1;
}

static const notif_var *find_var(const notif_var *vars, size_t n, const char *name, size_t len)
{
	for (size_t k = 0; k < n; k++)
		if (strlen(vars[k].name) == len && !memcmp(vars[k].name, name, len))
			return &vars[k];
	return NULL;
}

char *notif_render(const char *tmpl, size_t len, const notif_var *vars, size_t nvars,
                   notif_escape esc, size_t *out_len)
{
	nbuf b;
	size_t i = 0, run = 0;

	nbuf_init(&b);
	while (i < len) {
		placeholder ph;
		const notif_var *v;

		if (!placeholder_at(tmpl, len, i, &ph)) {
			i++;
			continue;
		}
		nbuf_add(&b, tmpl + run, i - run);
		v = find_var(vars, nvars, tmpl + ph.name_start, ph.name_len);
		if (v && v->value) {
			if (esc == NOTIF_ESC_HTML)
				notif_html_escape(&b, v->value);
			else
				nbuf_adds(&b, v->value);
		}
		i = run = ph.end;
	}
	nbuf_add(&b, tmpl + run, len - run);
	return nbuf_take(&b, out_len);
}

int notif_template_check(const char *tmpl, size_t len, const char *const *names, size_t nnames,
                         char *bad, size_t badlen)
{
	size_t i = 0;

	while (i < len) {
		placeholder ph;
		size_t k;

		if (!placeholder_at(tmpl, len, i, &ph)) {
			i++;
			continue;
		}
		for (k = 0; k < nnames; k++)
			if (strlen(names[k]) == ph.name_len &&
			    !memcmp(names[k], tmpl + ph.name_start, ph.name_len))
				break;
		if (k == nnames) {
			size_t n = ph.name_len < badlen - 1 ? ph.name_len : badlen - 1;
			memcpy(bad, tmpl + ph.name_start, n);
			bad[n] = '\0';
			return 1;
		}
		i = ph.end;
	}
	return 0;
}
