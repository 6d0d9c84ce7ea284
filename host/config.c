/* Configuration: INI files merged into one list of (section, key, value,
 * file, line) entries, then the host's own sections checked and turned into
 * a settings struct. Runs on the main thread only (inih's options are
 * process-wide variables). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* vasprintf */
#endif
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "duration.h"
#include "http_syntax.h"
#include "json.h"
#include "loopback.h"
#include "redact.h"
#include "textbuf.h"

#define CFG_MAX_LINE 8192       /* bytes per line, without the newline */
#define CFG_MAX_FILE (1 << 20)  /* a configuration file larger than this is a mistake */
#define CFG_MAX_SECRET 65536    /* same for a secret file */
#define JWT_SECRET_MIN 32       /* HS256 wants a key as long as its hash */

#define MSG_INT "expected an integer"
#define MSG_SIZE "expected an integer (k, M or G suffix allowed)"
#define MSG_INT_RANGE "out of range: beyond a 64-bit integer"
#define MSG_BOOL "expected true/false, yes/no, on/off or 1/0"
#define ALNUM "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

/* ------------------------------------------------------------------ memory */

/* Out of memory while reading, on this thread (a reload reads on its own
 * while others serve). The allocators below note it and return NULL; each
 * caller leaves out what it could not make, and what would use a value that
 * is missing stops. cfg_load and settings_from_cfg then refuse the whole
 * configuration, saying out of memory rather than what the reading found
 * after it (a key left out may look missing): a start fails, a reload keeps
 * the running configuration. */
static _Thread_local bool cfg_nomem;

static void *nomem(void)
{
	cfg_nomem = true;
	return NULL;
}

/* The array p grown to n elements of `size` bytes; NULL (noted) leaves p as it was. */
static void *grow(void *p, size_t n, size_t size)
{
	p = realloc(p, n * size);
	return p ? p : nomem();
}

static char *xstrdup(const char *s)
{
	char *p = strdup(s);
	return p ? p : nomem();
}

static char *xstrndup(const char *s, size_t n)
{
	char *p = strndup(s, n);
	return p ? p : nomem();
}

static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *p;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&p, fmt, ap);
	va_end(ap);
	return n < 0 ? nomem() : p;
}

/* *dst becomes a copy of value (NULL and noted without memory). */
static void set_str(char **dst, const char *value)
{
	free(*dst);
	*dst = xstrdup(value);
}

/* The whole reading out of memory: said instead of what it found after
 * the first n0 problems (see cfg_nomem). */
static void say_nomem(diag *d, const char *file, size_t n0)
{
	diag_truncate(d, n0);
	diag_add(d, file, 0, "out of memory while reading the configuration");
}

/* ------------------------------------------------------------------- files */

/* The whole file, NUL-terminated; NULL with errno set on failure. `st`
 * (NULL: not wanted) gets the status of the file that was read, not of
 * whatever the path names by the time the caller looks. */
static char *read_file(const char *path, size_t max, size_t *len, struct stat *st)
{
	char *buf;
	size_t n = 0;
	int fd, err;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	if (st && fstat(fd, st) != 0) {
		err = errno;
		close(fd);
		errno = err;
		return NULL;
	}
	if (!(buf = malloc(max + 1))) {
		nomem();
		close(fd);
		errno = ENOMEM;
		return NULL;
	}
	for (;;) {
		ssize_t r = read(fd, buf + n, max + 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			goto fail;
		if (r == 0)
			break;
		n += (size_t)r;
		if (n > max) {
			errno = EFBIG;
			goto fail;
		}
	}
	close(fd);
	buf[n] = '\0';
	*len = n;
	return buf;
fail:
	err = errno;
	explicit_bzero(buf, n);
	free(buf);
	close(fd);
	errno = err;
	return NULL;
}

/* The absolute directory holding `file` (the working directory for a bare name). */
static char *dir_of(const char *file)
{
	const char *slash = file ? strrchr(file, '/') : NULL;
	char cwd[PATH_MAX];

	if (slash && file[0] == '/')
		return slash == file ? xstrdup("/") : xstrndup(file, (size_t)(slash - file));
	if (!getcwd(cwd, sizeof cwd))
		snprintf(cwd, sizeof cwd, ".");
	if (!slash)
		return xstrdup(cwd);
	return xasprintf("%s/%.*s", cwd, (int)(slash - file), file);
}

/* `path` made absolute against `base` (NULL: base itself could not be made). */
static char *resolve_path(const char *base, const char *path)
{
	if (path[0] != '/' && !base)
		return nomem();
	if (path[0] == '/')
		return xstrdup(path);
	while (path[0] == '.' && path[1] == '/')
		path += 2;
	if (!strcmp(path, ".") || !*path)
		return xstrdup(base);
	if (!strcmp(base, "/"))
		return xasprintf("/%s", path);
	return xasprintf("%s/%s", base, path);
}

/* ----------------------------------------------------------------- entries */

const cfg_entry *cfg_find(const cfg *c, const char *section, const char *key)
{
	for (size_t i = 0; i < c->n; i++) {
		if (!strcmp(c->v[i].key, key) && !strcmp(c->v[i].section, section))
			return &c->v[i];
	}
	return NULL;
}

const char *cfg_get(const cfg *c, const char *section, const char *key)
{
	const cfg_entry *e = cfg_find(c, section, key);
	return e ? e->value : NULL;
}

static ssize_t section_index(const cfg *c, const char *name)
{
	for (size_t i = 0; i < c->nsections; i++) {
		if (!strcmp(c->sections[i].name, name))
			return (ssize_t)i;
	}
	return -1;
}

const cfg_section *cfg_section_find(const cfg *c, const char *name)
{
	ssize_t i = section_index(c, name);
	return i < 0 ? NULL : &c->sections[i];
}

static void note_section(cfg *c, const char *name, const char *file, int line)
{
	cfg_section *v;
	char *sname, *sfile;

	if (section_index(c, name) >= 0)
		return;
	if (!(v = grow(c->sections, c->nsections + 1, sizeof *v)))
		return;
	c->sections = v;
	sname = xstrdup(name);
	sfile = xstrdup(file);
	if (!sname || !sfile) {
		free(sname);
		free(sfile);
		return;
	}
	v[c->nsections++] = (cfg_section){sname, sfile, line};
}

/* Later files override earlier ones key by key; the entry then says where
 * the value that counts came from. */
static void cfg_set(cfg *c, const char *section, const char *key, const char *value,
                    const char *file, int line)
{
	cfg_entry *e = (cfg_entry *)cfg_find(c, section, key);
	char *v, *f, *sec = NULL, *k = NULL;

	note_section(c, section, file, line);
	if (!e && c->n == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 32;
		cfg_entry *vs = grow(c->v, cap, sizeof *vs);
		if (!vs)
			return;
		c->v = vs;
		c->cap = cap;
	}
	v = xstrdup(value);
	f = xstrdup(file);
	if (!e) {
		sec = xstrdup(section);
		k = xstrdup(key);
	}
	/* Whole or not at all: an entry without its key or value cannot be read. */
	if (!v || !f || (!e && (!sec || !k))) {
		free(v);
		free(f);
		free(sec);
		free(k);
		return;
	}
	if (!e) {
		e = &c->v[c->n++];
		e->section = sec;
		e->key = k;
	} else {
		free(e->value);
		free(e->file);
	}
	e->value = v;
	e->file = f;
	e->line = line;
}

void cfg_free(cfg *c)
{
	for (size_t i = 0; i < c->n; i++) {
		free(c->v[i].section);
		free(c->v[i].key);
		free(c->v[i].value);
		free(c->v[i].file);
	}
	for (size_t i = 0; i < c->nsections; i++) {
		free(c->sections[i].name);
		free(c->sections[i].file);
	}
	free(c->v);
	free(c->sections);
	free(c->main_file);
	free(c->confdir);
	free(c->plugin_dir);
	for (size_t i = 0; i < c->nstops; i++)
		free(c->stops[i].file);
	free(c->stops);
	memset(c, 0, sizeof *c);
}

/* ----------------------------------------------------------------- parsing */

typedef struct parse_state {
	cfg *c;
	diag *d;
	const char *file;
	const char *p, *end; /* text not yet handed to inih */
	const char *cur;     /* start of the line inih is working on */
	int line;            /* its number */
	bool at_line_start;
	bool failed; /* an error was reported; stop */
	char *section; /* current section as we read it (inih cuts long names) */
} parse_state;

static bool section_name_ok(const char *s, size_t n)
{
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (!isalnum(ch) && ch != '.' && ch != '_' && ch != '-')
			return false;
	}
	return true;
}

int cfg_section_header(const char *line, size_t n, const char **name, size_t *len,
                       const char **close)
{
	const char *s = line, *end = line + n, *c, *e;

	while (s < end && (*s == ' ' || *s == '\t'))
		s++;
	if (s == end || *s != '[' || !(c = memchr(s, ']', (size_t)(end - s))))
		return 0;
	for (s++; s < c && isspace((unsigned char)*s); s++)
		;
	for (e = c; e > s && isspace((unsigned char)e[-1]); e--)
		;
	*name = s;
	*len = (size_t)(e - s);
	if (close)
		*close = c;
	return 1;
}

/* Follow section headers ourselves: inih truncates long names silently, and
 * a header without keys must still count (e.g. a bare [plugin.user]). A line
 * that starts with '[' but has no ']' is left to inih to call a syntax error. */
static bool track_section(parse_state *ps, const char *line)
{
	const char *s, *close;
	size_t len;

	if (!cfg_section_header(line, strlen(line), &s, &len, &close))
		return true;
	if (!section_name_ok(s, len)) {
		diag_add(ps->d, ps->file, ps->line,
		         "bad section name [%.*s]: use letters, digits, '.', '-' and '_'",
		         (int)(close - s), s);
		ps->failed = true;
		return false;
	}
	/* inih ignores what follows the ']': "[plugin.crud] enabled = false"
	 * would lose its key without a word. Only a comment may follow. */
	for (const char *t = close + 1; *t && *t != '\n' && *t != '\r'; t++) {
		if (*t == ';' || *t == '#')
			break;
		if (!isspace((unsigned char)*t)) {
			size_t n = strcspn(t, "\r\n");
			diag_add(ps->d, ps->file, ps->line,
			         "text after the section header [%.*s]: '%.*s'%s (a key goes on a line "
			         "of its own; a comment starts with ';' or '#')",
			         (int)len, s, (int)(n > 60 ? 60 : n), t, n > 60 ? "..." : "");
			ps->failed = true;
			return false;
		}
	}
	free(ps->section);
	ps->section = xstrndup(s, len);
	if (ps->section)
		note_section(ps->c, ps->section, ps->file, ps->line);
	if (cfg_nomem) {
		ps->failed = true;
		return false;
	}
	return true;
}

/* inih's fgets-like reader. It never tells the handler a line number, so we
 * count here: the handler for a key runs right after its line was returned. */
static char *cfg_reader(char *str, int num, void *stream)
{
	parse_state *ps = stream;
	const char *nl;
	size_t len;
	bool starts;

	if (ps->failed || ps->p >= ps->end || num < 2)
		return NULL;
	nl = memchr(ps->p, '\n', (size_t)(ps->end - ps->p));
	len = nl ? (size_t)(nl - ps->p) + 1 : (size_t)(ps->end - ps->p);
	if (len > (size_t)num - 1)
		len = (size_t)num - 1;
	starts = ps->at_line_start;
	if (starts) {
		ps->line++;
		ps->cur = ps->p;
	}
	memcpy(str, ps->p, len);
	str[len] = '\0';
	ps->p += len;
	ps->at_line_start = str[len - 1] == '\n';
	if (starts && !track_section(ps, str))
		return NULL;
	return str;
}

static int cfg_handler(void *user, const char *section, const char *name, const char *value)
{
	parse_state *ps = user;

	(void)section; /* ours is untruncated */
	if (!*name) {
		diag_add(ps->d, ps->file, ps->line, "syntax error (no key name before '=')");
		ps->failed = true;
		return 0;
	}
	cfg_set(ps->c, ps->section ? ps->section : "", name, value ? value : "", ps->file,
	        ps->line);
	if (cfg_nomem) {
		ps->failed = true;
		return 0;
	}
	return 1;
}

/* Debian's inih exposes its build options as variables. Hand over whole
 * lines (the 200-byte stack default would split a long value into a bogus
 * second line), treat indented lines as ordinary lines rather than value
 * continuations, let '#' start an inline comment like ';', and stop at the
 * first error so the line we counted is the one at fault. */
static void cfg_ini_options(void)
{
	static char comment_prefixes[] = ";#";

	ini_use_stack = false;
	ini_allow_realloc = false;
	ini_initial_alloc = CFG_MAX_LINE + 3;
	ini_max_line = CFG_MAX_LINE + 3;
	ini_allow_multiline = false;
	ini_allow_bom = true;
	ini_allow_no_value = false;
	ini_allow_inline_comments = true;
	ini_inline_comment_prefixes = comment_prefixes;
	ini_start_comment_prefixes = comment_prefixes;
	ini_stop_on_first_error = true;
}

/* Refuse what inih would silently mangle: NUL bytes end a line early and
 * overlong lines would be split. */
static int prescan(const char *text, size_t len, const char *file, diag *d)
{
	const char *p = text, *end = text + len;

	for (int line = 1; p < end; line++) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
		if (memchr(p, '\0', n)) {
			diag_add(d, file, line, "NUL byte in configuration file");
			return -1;
		}
		if (n > CFG_MAX_LINE) {
			diag_add(d, file, line, "line longer than %d bytes", CFG_MAX_LINE);
			return -1;
		}
		p += n + 1;
	}
	return 0;
}

static const char *syntax_hint(const char *line)
{
	while (*line == ' ' || *line == '\t')
		line++;
	if (*line == '[')
		return "no closing ']' for the section header";
	return "expected '[section]' or 'key = value'";
}

/* Note that `file` was not read whole: its reading stopped at `line` (0:
 * none of it read, -1: it could not be read). Out of memory, nothing noted
 * (cfg_nomem says so). */
static void note_stop(cfg *c, const char *file, int line)
{
	struct cfg_stop *v = grow(c->stops, c->nstops + 1, sizeof *c->stops);
	char *f;
	if (!v)
		return;
	c->stops = v;
	if (!(f = xstrdup(file)))
		return;
	c->stops[c->nstops].file = f;
	c->stops[c->nstops++].line = line;
}

static int cfg_parse_text(cfg *c, const char *text, size_t len, const char *file, diag *d)
{
	parse_state ps = {.c = c, .d = d, .file = file, .at_line_start = true};
	int r;

	if (len >= 3 && !memcmp(text, "\xef\xbb\xbf", 3)) {
		text += 3;
		len -= 3;
	}
	if (prescan(text, len, file, d) < 0) {
		note_stop(c, file, 0);
		return -1;
	}
	ps.p = text;
	ps.end = text + len;
	cfg_ini_options();
	r = ini_parse_stream(cfg_reader, &ps, cfg_handler, &ps);
	if (!ps.failed && r == -2)
		diag_add(d, file, 0, "out of memory while parsing");
	else if (!ps.failed && r > 0)
		diag_add(d, file, r, "syntax error (%s)", syntax_hint(ps.cur ? ps.cur : ""));
	free(ps.section);
	if ((ps.failed || r != 0) && !cfg_nomem)
		note_stop(c, file, r > 0 ? r : ps.line);
	return ps.failed || r != 0 ? -1 : 0;
}

int cfg_load_string(cfg *c, const char *text, const char *file, diag *d)
{
	size_t n0 = d->n; /* problems recorded before this reading */
	int rc;

	cfg_nomem = false;
	if (!c->main_file)
		c->main_file = xstrdup(file);
	rc = cfg_parse_text(c, text, strlen(text), file, d);
	if (!cfg_nomem)
		return rc;
	say_nomem(d, file, n0);
	return -1;
}

static int cfg_load_file(cfg *c, const char *path, diag *d)
{
	size_t len;
	char *text = read_file(path, CFG_MAX_FILE, &len, NULL);
	int rc;

	if (!text) {
		diag_add(d, path, 0, "cannot read: %s", strerror(errno));
		if (!cfg_nomem)
			note_stop(c, path, -1);
		return -1;
	}
	rc = cfg_parse_text(c, text, len, path, d);
	free(text);
	return rc;
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool is_dropin_name(const char *name)
{
	size_t n = strlen(name);
	/* Hidden files are editors' and package managers' leftovers. */
	return name[0] != '.' && n > 5 && !strcmp(name + n - 5, ".conf");
}

/* Every regular *.conf file in the confdir, in strcmp order. */
static int cfg_load_dir(cfg *c, diag *d)
{
	char **names = NULL;
	size_t n = 0;
	struct dirent *de;
	DIR *dir;
	int rc = 0;

	dir = opendir(c->confdir);
	if (!dir) {
		if (errno == ENOENT)
			return 0;
		diag_add(d, c->confdir, 0, "cannot read directory: %s", strerror(errno));
		return -1;
	}
	while ((de = readdir(dir))) {
		char **v;
		if (!is_dropin_name(de->d_name))
			continue;
		if (!(v = grow(names, n + 1, sizeof *v)))
			break;
		names = v;
		if (!(names[n] = xstrdup(de->d_name)))
			break;
		n++;
	}
	closedir(dir);
	if (n)
		qsort(names, n, sizeof *names, name_cmp);
	for (size_t i = 0; i < n; i++) {
		char *path = cfg_nomem ? NULL : resolve_path(c->confdir, names[i]);
		struct stat st;
		if (!path) {
			rc = -1;
		} else if (stat(path, &st) < 0) {
			diag_add(d, path, 0, "cannot read: %s", strerror(errno));
			note_stop(c, path, -1);
			rc = -1;
		} else if (S_ISREG(st.st_mode) && cfg_load_file(c, path, d) < 0) {
			rc = -1;
		}
		free(path);
		free(names[i]);
	}
	free(names);
	return rc;
}

int cfg_load(cfg *c, const char *main_file, diag *d)
{
	return cfg_load_pinned(c, main_file, NULL, NULL, d);
}

int cfg_load_pinned(cfg *c, const char *main_file, const char *pinned_confdir,
                    const char *pinned_plugin_dir, diag *d)
{
	const char *confdir;
	char *base, *text;
	size_t len;
	size_t n0 = d->n; /* problems recorded before this reading */
	int rc;

	memset(c, 0, sizeof *c);
	cfg_nomem = false;
	c->main_file = xstrdup(main_file);
	if (pinned_plugin_dir)
		c->plugin_dir = xstrdup(pinned_plugin_dir);
	text = read_file(main_file, CFG_MAX_FILE, &len, NULL);
	if (!text) {
		c->main_unread = c->main_incomplete = true;
		c->nomem = cfg_nomem;
		if (cfg_nomem)
			say_nomem(d, main_file, n0);
		else
			diag_add(d, main_file, 0, "cannot read: %s", strerror(errno));
		return -1;
	}
	/* A syntax error in the main file still leaves the drop-ins worth
	 * checking, so --check-config reports everything in one go. */
	rc = cfg_parse_text(c, text, len, main_file, d);
	c->main_incomplete = rc != 0;
	free(text);
	if (pinned_confdir) {
		c->confdir = xstrdup(pinned_confdir);
	} else {
		confdir = cfg_get(c, "host", "confdir");
		base = dir_of(main_file);
		c->confdir = resolve_path(base, confdir && *confdir ? confdir : "conf.d");
		free(base);
	}
	if (!cfg_nomem && cfg_load_dir(c, d) < 0) {
		c->dropins_incomplete = true;
		rc = -1;
	}
	if (!cfg_nomem)
		return rc;
	c->nomem = true;
	say_nomem(d, main_file, n0);
	return -1;
}

/* Whether `line` (its length n, untrimmed) is "key = ..." for `key`, or a
 * section header, which goes into `section` (cut to its size; a header
 * without its ']', as a broken line may be, makes it unknown: "\1"). */
static bool line_sets(const char *line, size_t n, const char *key, char *section,
                      size_t seclen)
{
	size_t k = strlen(key);
	while (n && isspace((unsigned char)*line))
		line++, n--;
	if (n && *line == '[') {
		const char *close = memchr(line, ']', n);
		if (close) {
			const char *a = line + 1, *b = close;
			while (a < b && isspace((unsigned char)*a))
				a++;
			while (b > a && isspace((unsigned char)b[-1]))
				b--;
			snprintf(section, seclen, "%.*s", (int)(b - a), a);
		} else {
			snprintf(section, seclen, "\1");
		}
		return false;
	}
	if (n <= k || memcmp(line, key, k))
		return false;
	for (line += k, n -= k; n && (*line == ' ' || *line == '\t'); line++, n--)
		;
	return n && *line == '=';
}

int cfg_unread_sets(const cfg *c, const char *section, const char *key, char *where,
                    size_t wherelen)
{
	for (size_t i = 0; i < c->nstops; i++) {
		const struct cfg_stop *st = &c->stops[i];
		char cur[CFG_MAX_LINE + 1] = "";
		size_t len;
		char *text = st->line >= 0 ? read_file(st->file, CFG_MAX_FILE, &len, NULL) : NULL;
		const char *p, *end;
		if (!text) {
			snprintf(where, wherelen, "%s", st->file);
			return -1;
		}
		p = text;
		end = text + len;
		for (int n = 1; p < end; n++) {
			const char *nl = memchr(p, '\n', (size_t)(end - p));
			size_t ll = nl ? (size_t)(nl - p) : (size_t)(end - p);
			if (line_sets(p, ll, key, cur, sizeof cur) && n > st->line &&
			    (!strcmp(cur, section) || !strcmp(cur, "\1"))) {
				snprintf(where, wherelen, "%s:%d", st->file, n);
				free(text);
				return 1;
			}
			p += ll + 1;
		}
		free(text);
	}
	return 0;
}

/* ---------------------------------------------------------- value syntax */

/* Decimal integer, with a k/K/M/G suffix (x1024) when `suffix`: the syntax
 * evh_config_int() reads, so what passes here means the same there. -1:
 * not that syntax; -2: that syntax, but beyond a 64-bit integer (its
 * digits, or once multiplied by its suffix). */
static int parse_int(const char *v, bool suffix, int64_t *out)
{
	const char *p = v;
	long long n, mult = 1;
	char *end;
	bool range;

	if (*p == '+' || *p == '-')
		p++;
	if (!isdigit((unsigned char)*p))
		return -1;
	errno = 0;
	n = strtoll(v, &end, 10);
	range = errno == ERANGE;
	if (suffix && *end) {
		if (*end == 'k' || *end == 'K')
			mult = 1024;
		else if (*end == 'M')
			mult = 1024 * 1024;
		else if (*end == 'G')
			mult = 1024LL * 1024 * 1024;
		else
			return -1;
		end++;
	}
	if (*end)
		return -1;
	if (range || n > LLONG_MAX / mult || n < LLONG_MIN / mult)
		return -2;
	*out = (int64_t)(n * mult);
	return 0;
}

/* Exactly the spellings evh_config_bool() understands (it is case-sensitive). */
static int parse_bool(const char *v, int *out)
{
	static const char *const yes[] = {"true", "yes", "on", "1"};
	static const char *const no[] = {"false", "no", "off", "0"};

	for (size_t i = 0; i < 4; i++) {
		if (!strcmp(v, yes[i])) {
			*out = 1;
			return 0;
		}
		if (!strcmp(v, no[i])) {
			*out = 0;
			return 0;
		}
	}
	return -1;
}

static bool list_ok(const char *v)
{
	const char *p = v;

	while (*p == ' ' || *p == '\t')
		p++;
	if (!*p)
		return true; /* an empty list */
	for (;;) {
		size_t word = 0;
		while (*p == ' ' || *p == '\t')
			p++;
		while (*p && *p != ',' && !isspace((unsigned char)*p)) {
			p++;
			word++;
		}
		while (*p == ' ' || *p == '\t')
			p++;
		if (!word || (*p && *p != ','))
			return false;
		if (!*p)
			return true;
		p++;
	}
}

const char *cfg_check_value(evh_config_type type, const char *value)
{
	int64_t n;
	int b;

	switch (type) {
	case EVH_CFG_STRING:
		return NULL;
	case EVH_CFG_INT:
		switch (parse_int(value, true, &n)) {
		case -1: return MSG_SIZE;
		case -2: return MSG_INT_RANGE;
		}
		return NULL;
	case EVH_CFG_BOOL:
		return parse_bool(value, &b) < 0 ? MSG_BOOL : NULL;
	case EVH_CFG_LIST:
		return list_ok(value) ? NULL : "expected a comma-separated list of words";
	case EVH_CFG_PATH:
	case EVH_CFG_FILE:
	case EVH_CFG_DIR:
		return *value ? NULL : "expected a path";
	}
	return "the plugin's schema declares an unknown type for this key";
}

int cfg_key_matches(const char *pattern, const char *key)
{
	for (;;) {
		const char *pe = strchr(pattern, '.'), *ke = strchr(key, '.');
		size_t pn = pe ? (size_t)(pe - pattern) : strlen(pattern);
		size_t kn = ke ? (size_t)(ke - key) : strlen(key);

		if (pn == 1 && pattern[0] == '*') {
			if (kn == 0)
				return 0;
		} else if (pn != kn || memcmp(pattern, key, pn)) {
			return 0;
		}
		if (!pe || !ke)
			return !pe && !ke;
		pattern = pe + 1;
		key = ke + 1;
	}
}

/* --------------------------------------------------------- did you mean */

static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), row[65];

	if (la > 64 || lb > 64)
		return SIZE_MAX;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diag_prev = row[0];
		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j], best = diag_prev + (a[i - 1] != b[j - 1]);
			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			diag_prev = up;
			row[j] = best;
		}
	}
	return row[lb];
}

typedef struct suggest {
	const char *key;
	const char *best;
	size_t dist;
} suggest;

static void suggest_try(suggest *sg, const char *candidate)
{
	size_t dist;

	if (!candidate || strchr(candidate, '*'))
		return;
	dist = edit_distance(sg->key, candidate);
	if (dist <= 2 && dist < strlen(sg->key) && dist < sg->dist) {
		sg->best = candidate;
		sg->dist = dist;
	}
}

static void unknown_key(diag *d, const cfg_entry *e, const char *best)
{
	if (best)
		diag_add(d, e->file, e->line, "unknown key '%s' in [%s]; did you mean '%s'?",
		         e->key, e->section, best);
	else
		diag_add(d, e->file, e->line, "unknown key '%s' in [%s]", e->key, e->section);
}

/* ------------------------------------------------ plugin section schemas */

static void section_location(const cfg *c, const char *section, const char **file, int *line)
{
	ssize_t i = section_index(c, section);

	*file = i >= 0 ? c->sections[i].file : c->main_file;
	*line = i >= 0 ? c->sections[i].line : 0;
}

static bool in_list(const char *const *list, const char *s)
{
	for (; list && *list; list++) {
		if (!strcmp(*list, s))
			return true;
	}
	return false;
}

static void check_plugin_key(const cfg_entry *e, const evh_config_key *schema,
                             const char *const *skip, diag *d)
{
	const evh_config_key *k;
	const char *msg;
	suggest sg = {e->key, NULL, SIZE_MAX};

	for (k = schema; k && k->name; k++) {
		if (cfg_key_matches(k->name, e->key))
			break;
	}
	if (!k || !k->name) {
		for (k = schema; k && k->name; k++)
			suggest_try(&sg, k->name);
		for (const char *const *s = skip; s && *s; s++)
			suggest_try(&sg, *s);
		unknown_key(d, e, sg.best);
		return;
	}
	msg = cfg_check_value(k->type, e->value);
	if (msg)
		diag_add(d, e->file, e->line, "[%s] %s: %s, got '%s'", e->section, e->key, msg,
		         e->value);
}

void cfg_validate_section(const cfg *c, const char *section, const evh_config_key *schema,
                          const char *const *skip, diag *d)
{
	for (size_t i = 0; i < c->n; i++) {
		const cfg_entry *e = &c->v[i];
		if (strcmp(e->section, section) || in_list(skip, e->key))
			continue;
		check_plugin_key(e, schema, skip, d);
	}
	for (const evh_config_key *k = schema; k && k->name; k++) {
		bool found = false;
		const char *file;
		int line;
		if (!k->required)
			continue;
		for (size_t i = 0; i < c->n && !found; i++) {
			const cfg_entry *e = &c->v[i];
			found = !strcmp(e->section, section) && cfg_key_matches(k->name, e->key);
		}
		if (found)
			continue;
		section_location(c, section, &file, &line);
		diag_add(d, file, line, "[%s] missing required key '%s'", section, k->name);
	}
}

/* ---------------------------------------------------------------- settings */

typedef struct set_ctx {
	const cfg *c;
	settings *s;
	diag *d;
	char *base; /* the main file's directory */
} set_ctx;

typedef void (*key_apply)(set_ctx *x, const cfg_entry *e);

typedef struct key_def {
	const char *name;
	key_apply apply;
} key_def;

static void bad_value(set_ctx *x, const cfg_entry *e, const char *what)
{
	diag_add(x->d, e->file, e->line, "[%s] %s: %s, got '%s'", e->section, e->key, what,
	         e->value);
}

/* bad_value for a URL: one with a USER:PASSWORD@ part before its host (no URL
 * key takes one) is said without it, since that part may be a password; the
 * values of its query, which may hold an API key, as "***" (redact.h). Every
 * value goes through redact_url: a password holding a '/' or '#' ends the
 * host part early, and only redact_url's reading tells it from a port. */
static void bad_url(set_ctx *x, const cfg_entry *e, const char *what)
{
	char *shown = redact_url(e->value);
	const char *h;

	if (!shown) {
		diag_add(x->d, e->file, e->line, "[%s] %s: %s (out of memory showing it)", e->section,
		         e->key, what);
		return;
	}
	h = strstr(shown, "://");
	h = h ? h + 3 : shown;
	diag_add(x->d, e->file, e->line, "[%s] %s: %s, got '%s'", e->section, e->key,
	         !strncmp(h, "***@", 4) ? "a user or password in the URL is not supported" : what,
	         shown);
	free(shown);
}

static int get_int(set_ctx *x, const cfg_entry *e, bool suffix, int64_t min, int64_t max,
                   int64_t *out)
{
	int64_t n;
	int rc = parse_int(e->value, suffix, &n);

	if (rc == -1) {
		bad_value(x, e, suffix ? MSG_SIZE : MSG_INT);
		return -1;
	}
	if (rc == -2 || n < min || n > max) {
		diag_add(x->d, e->file, e->line, "[%s] %s: must be between %lld and %lld, got '%s'",
		         e->section, e->key, (long long)min, (long long)max, e->value);
		return -1;
	}
	*out = n;
	return 0;
}

static void get_int_into(set_ctx *x, const cfg_entry *e, int64_t min, int64_t max, int *dst)
{
	int64_t n;

	if (get_int(x, e, false, min, max, &n) == 0)
		*dst = (int)n;
}

static void get_bool_into(set_ctx *x, const cfg_entry *e, int *dst)
{
	if (parse_bool(e->value, dst) < 0)
		bad_value(x, e, MSG_BOOL);
}

static void get_nonempty(set_ctx *x, const cfg_entry *e, char **dst)
{
	if (!*e->value) {
		bad_value(x, e, "expected a value");
		return;
	}
	set_str(dst, e->value);
}

/* 0 when *dst is the path, -1 when it is not (said, or out of memory). */
static int get_path(set_ctx *x, const cfg_entry *e, char **dst)
{
	if (!*e->value) {
		bad_value(x, e, "expected a path");
		return -1;
	}
	free(*dst);
	*dst = resolve_path(x->base, e->value);
	return *dst ? 0 : -1;
}

/* Free a NUL-terminated secret (NULL is fine), its bytes zeroed first. */
static void free_secret(char *p)
{
	if (p)
		explicit_bzero(p, strlen(p));
	free(p);
}

/* A file holding a secret that every local account may read is noted in
 * the settings, for evhostd to say (evhostctl, reading the same files as
 * an admin, has nothing to say of them). Not refused: a test machine may
 * mean it, and the packaged unit's umask (0027) keeps files the daemon
 * writes private anyway. `st` is the status of the file read (fstat: the
 * one whose bytes were taken). Out of memory, it goes unsaid. */
static void note_if_public(set_ctx *x, const cfg_entry *e, const char *path,
                           const struct stat *st)
{
	settings *s = x->s;
	struct public_secret *v, *n;
	char where[4200], what[300];

	if (!S_ISREG(st->st_mode) || !(st->st_mode & S_IROTH))
		return;
	v = realloc(s->public_secrets, (s->npublic_secrets + 1) * sizeof *v);
	if (!v)
		return;
	s->public_secrets = v;
	n = &v[s->npublic_secrets];
	snprintf(where, sizeof where, "%s:%d", e->file, e->line);
	snprintf(what, sizeof what, "[%s] %s", e->section, e->key);
	n->where = strdup(where);
	n->what = strdup(what);
	n->path = strdup(path);
	n->mode = (unsigned)(st->st_mode & 07777);
	if (n->where && n->what && n->path) {
		s->npublic_secrets++;
	} else {
		free(n->where);
		free(n->what);
		free(n->path);
	}
}

/* The same for a file this configuration names but does not read (a TLS
 * private key, which OpenSSL reads): its status now. */
static void say_if_public(set_ctx *x, const cfg_entry *e, const char *path)
{
	struct stat st;

	if (stat(path, &st) == 0)
		note_if_public(x, e, path, &st);
}

/* A secret from a file: one trailing newline dropped (editors add it), at
 * least `min` bytes. Messages name the file, never its contents. */
static char *read_secret(set_ctx *x, const cfg_entry *e, const char *path, size_t min,
                         size_t *len)
{
	size_t n;
	struct stat st;
	char *buf = read_file(path, CFG_MAX_SECRET, &n, &st);

	if (!buf) {
		diag_add(x->d, e->file, e->line, "[%s] %s: cannot read '%s': %s", e->section,
		         e->key, path, strerror(errno));
		return NULL;
	}
	if (n > 0 && buf[n - 1] == '\n')
		buf[--n] = '\0';
	if (n > 0 && buf[n - 1] == '\r')
		buf[--n] = '\0';
	note_if_public(x, e, path, &st);
	if (n < min || n == 0) {
		if (min > 1)
			diag_add(x->d, e->file, e->line,
			         "[%s] %s: '%s': the secret must be at least %zu bytes", e->section,
			         e->key, path, min);
		else
			diag_add(x->d, e->file, e->line, "[%s] %s: '%s' is empty", e->section, e->key,
			         path);
		explicit_bzero(buf, n);
		free(buf);
		return NULL;
	}
	*len = n;
	return buf;
}

/* [host] */

static void k_plugin_dir(set_ctx *x, const cfg_entry *e) { get_path(x, e, &x->s->plugin_dir); }
/* evhostd creates state_dir (one level) at start; say now, at the key's
 * line, when it cannot: a file in its place, or no parent directory.
 * Permissions are not judged: --check-config may run as another user. */
static void k_state_dir(set_ctx *x, const cfg_entry *e)
{
	struct stat st;
	char *parent, *slash;

	if (get_path(x, e, &x->s->state_dir) != 0)
		return;
	if (stat(x->s->state_dir, &st) == 0) {
		if (!S_ISDIR(st.st_mode))
			diag_add(x->d, e->file, e->line, "[host] state_dir: '%s' is not a directory",
			         x->s->state_dir);
		return;
	}
	if (errno != ENOENT && errno != ENOTDIR) /* ENOTDIR: a file on the way */
		return;
	if (!(parent = xstrdup(x->s->state_dir)))
		return;
	for (size_t n = strlen(parent); n > 1 && parent[n - 1] == '/'; n--)
		parent[n - 1] = '\0';
	slash = strrchr(parent, '/');
	if (slash && slash != parent) {
		*slash = '\0';
		int rc = stat(parent, &st), missing = rc != 0 && errno == ENOENT;
		if (rc != 0 || !S_ISDIR(st.st_mode))
			diag_add(x->d, e->file, e->line,
			         "[host] state_dir: '%s' cannot be created: '%s' %s (evhostd creates "
			         "one level only)",
			         x->s->state_dir, parent, missing ? "does not exist" : "is not a directory");
	}
	free(parent);
}
/* With "/" and a plugin's name (PLUGIN_NAME_MAX) it is each event's ce_source
 * header, which holds 255 bytes (events.h): longer, it would be cut. */
#define SOURCE_MAX 190
_Static_assert(SOURCE_MAX + 1 + PLUGIN_NAME_MAX <= 255, "[host] source must fit ce_source");

static void k_source(set_ctx *x, const cfg_entry *e)
{
	if (strlen(e->value) > SOURCE_MAX)
		bad_value(x, e, "expected at most 190 bytes (with '/' and a plugin's name it is "
		                "each event's ce_source, 255 bytes at most)");
	else
		get_nonempty(x, e, &x->s->source);
}

/* cfg_load reads the drop-in directory named in the main file before any
 * drop-in, so the key means nothing anywhere else. */
static void k_confdir(set_ctx *x, const cfg_entry *e)
{
	if (x->c->main_file && strcmp(e->file, x->c->main_file))
		diag_add(x->d, e->file, e->line,
		         "[host] confdir: only takes effect in the main file %s", x->c->main_file);
	else if (!*e->value)
		bad_value(x, e, "expected a path");
}

/* A duration from 1 s to 1 h, in ms into *out. */
static void get_timeout_ms(set_ctx *x, const cfg_entry *e, int *out)
{
	int64_t ms;
	if (duration_parse_ms(e->value, &ms) != 0 || ms < 1000 || ms > 3600000)
		bad_value(x, e, "expected a duration from 1s to 1h, such as 10s or 2m");
	else
		*out = (int)ms;
}

static void k_stop_timeout(set_ctx *x, const cfg_entry *e)
{
	get_timeout_ms(x, e, &x->s->stop_timeout_ms);
}

static const key_def host_keys[] = {
    {"plugin_dir", k_plugin_dir},
    {"stop_timeout", k_stop_timeout},
    {"state_dir", k_state_dir},
    {"confdir", k_confdir},
    {"source", k_source},
    {NULL, NULL},
};

/* [http] */

static int parse_port(const char *p, int *port)
{
	long n = 0;

	if (!*p || strlen(p) > 5)
		return -1;
	for (; *p; p++) {
		if (!isdigit((unsigned char)*p))
			return -1;
		n = n * 10 + (*p - '0');
	}
	if (n > 65535)
		return -1;
	*port = (int)n;
	return 0;
}

/* An http[s]://HOST[:PORT][/PATH] URL's parts (malloc'd; the port 80 or 443
 * when not given; the path "" or from its '/'; with `query`, a "?..." may
 * follow). 0, or -1 with what is wrong in *why (NULL: the form as a whole). */
typedef struct url_parts {
	int tls;
	char *host, *port, *path;
} url_parts;

static int parse_http_url(const char *v, int query, url_parts *u, const char **why)
{
	const char *h, *he, *p;
	char *port = NULL;
	int n;

	*why = NULL;
	memset(u, 0, sizeof *u);
	u->tls = !strncasecmp(v, "https://", 8);
	if (!u->tls && strncasecmp(v, "http://", 7) != 0)
		return -1;
	h = v + (u->tls ? 8 : 7);
	if (*h == '[') {
		he = strchr(h, ']');
		p = he ? he + 1 : NULL;
		h++;
	} else {
		he = h + strcspn(h, ":/?#");
		p = he;
	}
	if (!he || he == h || !p || (*p && *p != ':' && *p != '/') ||
	    strcspn(h, " \t\"@") < (size_t)(he - h))
		return -1;
	if (*p == ':') {
		size_t plen = strcspn(p + 1, "/?#"); /* "host:4318?x" is no port "4318?x" */
		if (!(port = xstrndup(p + 1, plen)))
			return -1;
		if (parse_port(port, &n) < 0 || n == 0) {
			*why = "expected a port of 1-65535 after the host";
			free(port);
			return -1;
		}
		p += 1 + plen;
	}
	if (strpbrk(p, query ? "# \t\"" : "?# \t\"")) {
		*why = query ? "expected a path without fragment or spaces"
		             : "expected a path without query, fragment or spaces";
		free(port);
		return -1;
	}
	u->host = xstrndup(h, (size_t)(he - h));
	u->port = port ? port : xstrdup(u->tls ? "443" : "80");
	u->path = *p == '?' ? xasprintf("/%s", p) : xstrdup(p); /* "host?q" asks for "/?q" */
	if (!u->host || !u->port || !u->path) {
		free(u->host);
		free(u->port);
		free(u->path);
		memset(u, 0, sizeof *u);
		return -1;
	}
	return 0;
}

/* "IPv4:port" or "[IPv6]:port": civetweb binds addresses, not names. */
static int parse_listen(const char *v, char **host, int *port)
{
	unsigned char addr[16];
	const char *hs, *he, *ps;
	char *h;
	int af;

	if (v[0] == '[') {
		hs = v + 1;
		he = strchr(hs, ']');
		if (!he || he[1] != ':')
			return -1;
		ps = he + 2;
		af = AF_INET6;
	} else {
		hs = v;
		he = strchr(v, ':');
		if (!he || strchr(he + 1, ':'))
			return -1;
		ps = he + 1;
		af = AF_INET;
	}
	if (!(h = xstrndup(hs, (size_t)(he - hs))))
		return -1;
	if (inet_pton(af, h, addr) != 1 || parse_port(ps, port) < 0) {
		free(h);
		return -1;
	}
	*host = h;
	return 0;
}

/* civetweb's listening_ports syntax for one address (NULL: no host). */
static char *listen_text(const char *host, int port)
{
	if (!host)
		return NULL;
	return strchr(host, ':') ? xasprintf("[%s]:%d", host, port)
	                         : xasprintf("%s:%d", host, port);
}

/* A listen_text address as bytes: *af AF_INET (4 bytes) or AF_INET6 (16);
 * -1 if it is not one. */
static int listen_addr(const char *v, unsigned char addr[16], int *af, int *port)
{
	char *host;
	int rc;
	if (parse_listen(v, &host, port) < 0)
		return -1;
	*af = v[0] == '[' ? AF_INET6 : AF_INET;
	rc = inet_pton(*af, host, addr) == 1 ? 0 : -1;
	free(host);
	return rc;
}

/* Would two listen_text addresses take one port: the same port (not 0, a
 * port of the system's choosing) on the same address or on its family's
 * wildcard? The second bind would fail only at start, after the plugins
 * started. Compared as addresses, not text: [::]:P and [0::0]:P, [::1]:P and
 * [0:0:0:0:0:0:0:1]:P are one. The families are apart: civetweb binds an
 * "[IPv6]:port" with IPV6_V6ONLY, so [::]:P does not take 0.0.0.0:P or
 * 127.0.0.1:P (and they, not it). */
static bool listen_clash(const char *a, const char *b)
{
	static const unsigned char any[16] = {0};
	unsigned char xa[16], xb[16];
	int fa, fb, pa, pb;
	size_t n;
	if (listen_addr(a, xa, &fa, &pa) < 0 || listen_addr(b, xb, &fb, &pb) < 0 || fa != fb ||
	    pa != pb || pa == 0)
		return false;
	n = fa == AF_INET6 ? 16 : 4;
	return !memcmp(xa, xb, n) || !memcmp(xa, any, n) || !memcmp(xb, any, n);
}

static void set_listen(settings *s, char *host, int port)
{
	free(s->http_host);
	free(s->http_listen);
	s->http_host = host;
	s->http_port = port;
	s->http_listen = listen_text(host, port);
}

/* The value of a listen key; NULL (said at the key's line) when bad. */
static char *get_listen(set_ctx *x, const cfg_entry *e, int *port, const char *example)
{
	char *host;

	if (parse_listen(e->value, &host, port) < 0) {
		char what[128];
		snprintf(what, sizeof what, "expected IP:port with a port of 0-65535, e.g. %s",
		         example);
		bad_value(x, e, what);
		return NULL;
	}
	return host;
}

static void k_listen(set_ctx *x, const cfg_entry *e)
{
	int port;
	char *host = get_listen(x, e, &port, "127.0.0.1:8080");

	if (host)
		set_listen(x->s, host, port);
}

static void k_tls_listen(set_ctx *x, const cfg_entry *e)
{
	int port;
	char *host = get_listen(x, e, &port, "0.0.0.0:8443");

	if (!host)
		return;
	free(x->s->http_tls_listen);
	x->s->http_tls_listen = listen_text(host, port);
	free(host);
}

/* The PEM file HTTPS is served with: the private key and the certificate
 * chain in one file. evhostd reads it with OpenSSL (host_configure), so a
 * wrong file is said at its line rather than as a failed start; evhostctl,
 * which reads this configuration too, never opens it. */
static void k_tls_certificate(set_ctx *x, const cfg_entry *e)
{
	if (get_path(x, e, &x->s->http_tls_certificate) == 0)
		say_if_public(x, e, x->s->http_tls_certificate); /* it holds the private key */
}

static void k_tls_min_version(set_ctx *x, const cfg_entry *e)
{
	if (!strcmp(e->value, "1.2") || !strcmp(e->value, "1.3"))
		x->s->http_tls_min13 = !strcmp(e->value, "1.3");
	else
		bad_value(x, e, "expected 1.2 or 1.3 (TLS versions before 1.2 are not served)");
}

/* Mutual TLS: HTTPS clients must present a certificate issued by one of the
 * CAs in this PEM file, which evhostd reads with OpenSSL (host_configure). */
static void k_tls_client_ca(set_ctx *x, const cfg_entry *e)
{
	get_path(x, e, &x->s->http_tls_client_ca);
}

/* The ciphers HTTPS offers; evhostd checks them with OpenSSL
 * (host_configure), so that a list OpenSSL refuses is said at its line. */
static void k_tls_ciphers(set_ctx *x, const cfg_entry *e)
{
	get_nonempty(x, e, &x->s->http_tls_ciphers);
}

static void k_tls_ciphersuites(set_ctx *x, const cfg_entry *e)
{
	get_nonempty(x, e, &x->s->http_tls_ciphersuites);
}

static void k_trusted_proxies(set_ctx *x, const cfg_entry *e)
{
	char why[256];
	int rc;
	proxy_list_free(&x->s->http_trusted_proxies);
	if (!e->value[strspn(e->value, " \t")])
		return; /* empty: none (the header is ignored), as when not set */
	rc = proxy_list_parse(e->value, &x->s->http_trusted_proxies, why, sizeof why);
	if (rc == -2)
		nomem();
	else if (rc != 0)
		bad_value(x, e, why);
}

/* A duration from min (0 or 1) ms to max ms, into *dst. */
static void duration_ms_key(set_ctx *x, const cfg_entry *e, int64_t min, int64_t max, int *dst)
{
	int64_t ms;

	if (duration_parse_ms(e->value, &ms) != 0 || ms < min || ms > max)
		bad_value(x, e, min > 0 ? "expected a duration from 1ms to 1h, such as 500ms, 5s or 1m"
		                        : "expected 0 (off) or a duration up to 1h, such as 500ms, 5s "
		                          "or 1m");
	else
		*dst = (int)ms;
}

static void k_threads(set_ctx *x, const cfg_entry *e)
{
	get_int_into(x, e, 1, 256, &x->s->http_threads);
}

static void k_request_timeout(set_ctx *x, const cfg_entry *e)
{
	get_timeout_ms(x, e, &x->s->http_request_timeout_ms);
}

static void k_keep_alive_timeout(set_ctx *x, const cfg_entry *e)
{
	int ms = x->s->http_keep_alive_ms;
	duration_ms_key(x, e, 0, 3600000, &ms);
	x->s->http_keep_alive_ms = ms == 0 ? -1 : ms; /* 0 in settings: the default */
}

static void k_max_streams(set_ctx *x, const cfg_entry *e)
{
	get_int_into(x, e, 1, 256, &x->s->http_max_streams);
}

static void k_stream_unacked_timeout(set_ctx *x, const cfg_entry *e)
{
	get_timeout_ms(x, e, &x->s->http_stream_unacked_ms);
}

static void k_max_plugin_requests(set_ctx *x, const cfg_entry *e)
{
	get_int_into(x, e, 0, 256, &x->s->http_max_plugin_requests);
}

static void k_max_body(set_ctx *x, const cfg_entry *e)
{
	int64_t n;

	if (get_int(x, e, true, 1, 1024LL * 1024 * 1024, &n) == 0)
		x->s->max_body_bytes = n;
}

static void k_max_head(set_ctx *x, const cfg_entry *e)
{
	int64_t n;

	if (get_int(x, e, true, 4096, 1024 * 1024, &n) == 0)
		x->s->http_max_head_bytes = (int)n;
}

/* At most JSON_WORKER_DEPTH: plugins parse a body with cJSON on an HTTP
 * worker's stack (json.h). */
static void k_json_depth(set_ctx *x, const cfg_entry *e)
{
	get_int_into(x, e, 1, JSON_WORKER_DEPTH, &x->s->json_max_depth);
}

static const key_def http_keys[] = {
    {"listen", k_listen},
    {"tls_listen", k_tls_listen},
    {"tls_certificate", k_tls_certificate},
    {"tls_min_version", k_tls_min_version},
    {"tls_client_ca", k_tls_client_ca},
    {"tls_ciphers", k_tls_ciphers},
    {"tls_ciphersuites", k_tls_ciphersuites},
    {"trusted_proxies", k_trusted_proxies},
    {"threads", k_threads},
    {"request_timeout", k_request_timeout},
    {"keep_alive_timeout", k_keep_alive_timeout},
    {"max_streams", k_max_streams},
    {"stream_unacked_timeout", k_stream_unacked_timeout},
    {"max_plugin_requests", k_max_plugin_requests},
    {"max_body_bytes", k_max_body},
    {"max_head_bytes", k_max_head},
    {"json_max_depth", k_json_depth},
    {NULL, NULL},
};

/* [kafka] */

/* What is wrong with the broker `b` (its `n` bytes: [PROTO://]HOST:PORT or
 * [PROTO://][IPV6]:PORT), in why; 0 when nothing. librdkafka takes a port
 * past 65535 modulo 65536, letters as port 0, and a bare IPv6 address's
 * last group as its port: it would connect where nobody wrote. */
static int broker_wrong(const char *b, size_t n, char *why, size_t whylen)
{
	char one[300], *host, *colon;
	size_t skip = strspn(b, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_");
	int port;

	if (n >= sizeof one) {
		snprintf(why, whylen, "a broker of %zu bytes is too long", n);
		return -1;
	}
	memcpy(one, b, n);
	one[n] = '\0';
	host = skip && skip < n && !strncmp(one + skip, "://", 3) ? one + skip + 3 : one;
	if (*host == '[') {
		char *end = strchr(host, ']');
		if (!end) {
			snprintf(why, whylen, "broker '%s' has no ']' after its IPv6 address", one);
			return -1;
		}
		colon = end[1] == ':' ? end + 1 : NULL;
		if (end[1] && !colon) {
			snprintf(why, whylen, "broker '%s': expected ':PORT' after ']'", one);
			return -1;
		}
	} else {
		colon = strrchr(host, ':');
		if (colon && memchr(host, ':', (size_t)(colon - host))) {
			snprintf(why, whylen, "broker '%s': write an IPv6 address in brackets, "
			                      "[ADDRESS]:PORT", one);
			return -1;
		}
		if (colon == host || !*host) {
			snprintf(why, whylen, "broker '%s' has no host", one);
			return -1;
		}
	}
	if (!colon) {
		snprintf(why, whylen, "broker '%s' needs its port (HOST:PORT)", one);
		return -1;
	}
	if (parse_port(colon + 1, &port) != 0 || port == 0) {
		snprintf(why, whylen, "broker '%s': the port must be a number from 1 to 65535", one);
		return -1;
	}
	return 0;
}

static void k_brokers(set_ctx *x, const cfg_entry *e)
{
	const char *v = e->value;
	char why[400];
	/* librdkafka takes ",," as no broker at all: the daemon would never be
	 * ready ("No bootstrap.servers configured"), with no line to blame. */
	if (*v && !v[strspn(v, ", \t")]) {
		bad_value(x, e, "expected host:port[,host:port...] or embedded");
		return;
	}
	if (!strcasecmp(v, "embedded") && strcmp(v, "embedded")) {
		bad_value(x, e, "did you mean 'embedded' (lower case)? a host needs its port");
		return;
	}
	if (strcmp(v, "embedded") != 0)
		for (const char *b = v; *b;) {
			size_t n;
			b += strspn(b, ", \t");
			n = strcspn(b, ", \t");
			if (n && broker_wrong(b, n, why, sizeof why) != 0) {
				bad_value(x, e, why);
				return;
			}
			b += n;
		}
	get_nonempty(x, e, &x->s->brokers);
	x->s->embedded = x->s->brokers && !strcmp(x->s->brokers, "embedded");
}

static void k_max_attempts(set_ctx *x, const cfg_entry *e)
{
	get_int_into(x, e, 1, EVH_RETRY_ATTEMPTS_MAX, &x->s->retry_max_attempts);
}

static void k_backoff(set_ctx *x, const cfg_entry *e)
{
	get_int_into(x, e, 1, EVH_RETRY_BACKOFF_MS_MAX, &x->s->retry_backoff_ms);
}

static void k_backoff_max(set_ctx *x, const cfg_entry *e)
{
	get_int_into(x, e, 1, EVH_RETRY_BACKOFF_MAX_MS_MAX, &x->s->retry_backoff_max_ms);
}

/* The suffix becomes part of topic names, so it must be legal in one. */
static void k_dlq_suffix(set_ctx *x, const cfg_entry *e)
{
	const char *v = e->value;

	if (!*v || strlen(v) > 64 || strspn(v, ALNUM "._-") != strlen(v)) {
		bad_value(x, e, "expected up to 64 of the characters a-z A-Z 0-9 . _ -");
		return;
	}
	set_str(&x->s->dlq_suffix, v);
}

static const key_def kafka_keys[] = {
    {"brokers", k_brokers},
    {"retry.max_attempts", k_max_attempts},
    {"retry.backoff_ms", k_backoff},
    {"retry.backoff_max_ms", k_backoff_max},
    {"dlq_suffix", k_dlq_suffix},
    {NULL, NULL},
};

ssize_t settings_rdkafka_index(const settings *s, const char *key)
{
	for (size_t i = 0; i < s->nrdkafka; i++) {
		if (!strcmp(s->rdkafka[i].key, key))
			return (ssize_t)i;
	}
	return -1;
}

/* rdkafka.NAME passes NAME to librdkafka as is (kafka_check_settings has
 * librdkafka check names and values; evhostctl, which shares this parser,
 * does not link it). rdkafka.NAME_file reads NAME's value from a file, so
 * passwords stay out of the configuration. */
static void k_rdkafka(set_ctx *x, const cfg_entry *e)
{
	settings *s = x->s;
	const char *name = e->key + strlen("rdkafka.");
	size_t n = strlen(name), len;
	char *key, *value;
	rdkafka_prop *props;

	if (!n) {
		diag_add(x->d, e->file, e->line,
		         "[kafka] %s: no librdkafka property after 'rdkafka.'", e->key);
		return;
	}
	if (n > 5 && !strcmp(name + n - 5, "_file")) {
		char *path;
		if (!*e->value) { /* else the configuration's directory, "Is a directory" */
			bad_value(x, e, "expected the path of a file holding the value");
			return;
		}
		path = resolve_path(x->base, e->value);
		key = xstrndup(name, n - 5);
		value = path && key ? read_secret(x, e, path, 1, &len) : NULL;
		free(path);
		if (!value) {
			free(key);
			return;
		}
	} else {
		key = xstrdup(name);
		value = xstrdup(e->value);
	}
	if (!key || !value) {
		free(key);
		free_secret(value);
		return;
	}
	if (settings_rdkafka_index(s, key) >= 0) {
		diag_add(x->d, e->file, e->line,
		         "[kafka] %s: '%s' is set twice (rdkafka.%s and rdkafka.%s_file); keep one",
		         e->key, key, key, key);
		free(key);
		free_secret(value);
		return;
	}
	if (!(props = grow(s->rdkafka, s->nrdkafka + 1, sizeof *props))) {
		free(key);
		free_secret(value);
		return;
	}
	s->rdkafka = props;
	props[s->nrdkafka++] = (rdkafka_prop){key, value, e->file, e->line};
}

/* [store] */

static void k_synchronous(set_ctx *x, const cfg_entry *e)
{
	if (!strcasecmp(e->value, "FULL"))
		set_str(&x->s->store_synchronous, "FULL");
	else if (!strcasecmp(e->value, "NORMAL"))
		set_str(&x->s->store_synchronous, "NORMAL");
	else
		bad_value(x, e, "expected FULL or NORMAL");
}

static void k_outbox_max(set_ctx *x, const cfg_entry *e)
{
	int64_t n;

	if (get_int(x, e, false, 0, INT64_MAX, &n) == 0)
		x->s->outbox_max_rows = n;
}

static void retention(set_ctx *x, const cfg_entry *e, int64_t *ms)
{
	if (duration_parse_ms(e->value, ms) != 0)
		bad_value(x, e, "expected a duration such as 7d, 12h, 30m or 3600s (0: keep forever)");
}

static void k_event_retention(set_ctx *x, const cfg_entry *e)
{
	retention(x, e, &x->s->event_retention_ms);
}

static void k_inbox_retention(set_ctx *x, const cfg_entry *e)
{
	retention(x, e, &x->s->inbox_retention_ms);
}

static const key_def store_keys[] = {
    {"synchronous", k_synchronous},
    {"outbox_max_rows", k_outbox_max},
    {"event_retention", k_event_retention},
    {"inbox_retention", k_inbox_retention},
    {NULL, NULL},
};

/* [log] */

static void k_log_level(set_ctx *x, const cfg_entry *e)
{
	if (log_level_parse(e->value, &x->s->log_level) < 0)
		bad_value(x, e, "expected error, warn, info or debug");
}

/* The index in `names` (NULL-terminated) of the value, or -1 after saying
 * `expected` at its line. */
static int one_of(set_ctx *x, const cfg_entry *e, const char *const *names, const char *expected)
{
	for (int i = 0; names[i]; i++)
		if (!strcmp(e->value, names[i]))
			return i;
	bad_value(x, e, expected);
	return -1;
}

static void k_log_format(set_ctx *x, const cfg_entry *e)
{
	static const char *const names[] = {"auto", "text", "json", NULL};
	static const log_format formats[] = {LOG_FORMAT_AUTO, LOG_FORMAT_TEXT, LOG_FORMAT_JSON};
	int i = one_of(x, e, names, "expected auto, text or json");
	if (i >= 0)
		x->s->log_fmt = formats[i];
}

/* [log] access's values, in http_access_log's order. */
static const char *const access_names[] = {"all", "errors", "off", NULL};

const char *log_access_name(http_access_log which) { return access_names[which]; }

static void k_log_access(set_ctx *x, const cfg_entry *e)
{
	int i = one_of(x, e, access_names, "expected all, errors or off");
	if (i >= 0)
		x->s->log_access = (http_access_log)i;
}

/* A plugin's lines per interval (log.h's log_budget). */
static void k_log_rate_burst(set_ctx *x, const cfg_entry *e)
{
	int64_t n;
	if (get_int(x, e, false, 0, 100000000, &n) == 0)
		x->s->log_rate_burst = n;
}

static void k_log_rate_interval(set_ctx *x, const cfg_entry *e)
{
	get_timeout_ms(x, e, &x->s->log_rate_interval_ms);
}

static const key_def log_keys[] = {
    {"level", k_log_level},
    {"format", k_log_format},
    {"access", k_log_access},
    {"plugin_rate_limit_burst", k_log_rate_burst},
    {"plugin_rate_limit_interval", k_log_rate_interval},
    {NULL, NULL},
};

/* [metrics] */

static void k_metrics_enabled(set_ctx *x, const cfg_entry *e)
{
	get_bool_into(x, e, &x->s->metrics_enabled);
}

static void k_metrics_https(set_ctx *x, const cfg_entry *e)
{
	get_bool_into(x, e, &x->s->metrics_https);
}

static const key_def metrics_keys[] = {
    {"enabled", k_metrics_enabled},
    {"https", k_metrics_https},
    {NULL, NULL},
};

/* [auth] */

/* A key file: its path into *file, its contents into *secret and *len. */
static void get_key_file(set_ctx *x, const cfg_entry *e, char **file, char **secret,
                         size_t *len)
{
	char *key;
	size_t n;

	if (get_path(x, e, file) != 0)
		return;
	key = read_secret(x, e, *file, JWT_SECRET_MIN, &n);
	if (!key)
		return;
	*secret = key;
	*len = n;
}

static void k_jwt_secret_file(set_ctx *x, const cfg_entry *e)
{
	settings *s = x->s;
	get_key_file(x, e, &s->jwt_secret_file, &s->jwt_secret, &s->jwt_secret_len);
}

/* The key a rotation replaced: tokens it signed are still accepted (until
 * they expire and this key is removed), none is signed with it. */
static void k_jwt_previous_secret_file(set_ctx *x, const cfg_entry *e)
{
	settings *s = x->s;
	get_key_file(x, e, &s->jwt_previous_secret_file, &s->jwt_previous_secret,
	             &s->jwt_previous_secret_len);
}

static void k_issuer(set_ctx *x, const cfg_entry *e) { get_nonempty(x, e, &x->s->jwt_issuer); }

/* Another issuer's public keys: the PEM text, read here (so a reload sees a
 * file replaced in place); evhostd parses it with OpenSSL (host.c), which
 * evhostctl, sharing this file, does not link. */
static void k_jwt_public_key_file(set_ctx *x, const cfg_entry *e)
{
	settings *s = x->s;
	size_t n;
	char *text;
	if (get_path(x, e, &s->jwt_public_key_file) != 0)
		return;
	if (!(text = read_file(s->jwt_public_key_file, CFG_MAX_SECRET, &n, NULL))) {
		diag_add(x->d, e->file, e->line, "[auth] jwt_public_key_file: cannot read '%s': %s",
		         s->jwt_public_key_file, errno == EFBIG ? "larger than 64 KiB" : strerror(errno));
		return;
	}
	free(s->jwt_public_keys);
	s->jwt_public_keys = text;
	s->jwt_public_keys_len = n;
}

static void k_jwt_public_key_issuer(set_ctx *x, const cfg_entry *e)
{
	get_nonempty(x, e, &x->s->jwt_public_issuer);
}

static void k_jwt_public_key_audience(set_ctx *x, const cfg_entry *e)
{
	get_nonempty(x, e, &x->s->jwt_public_audience);
}

static void k_jwt_public_key_roles_claim(set_ctx *x, const cfg_entry *e)
{
	get_nonempty(x, e, &x->s->jwt_public_roles);
}

#define MSG_JWKS_URL                                                                      \
	"expected https://HOST[:PORT][/PATH], or http:// to a loopback address (keys fetched " \
	"in clear from elsewhere could be forged)"

/* The provider's jwks_uri: evhostd fetches its keys (jwksfetch.c). Over
 * TLS, unless the provider is on this host. */
static void k_jwt_jwks_url(set_ctx *x, const cfg_entry *e)
{
	settings *s = x->s;
	url_parts u;
	const char *why;

	if (!*e->value)
		return;
	if (parse_http_url(e->value, 1, &u, &why) != 0) {
		bad_url(x, e, why ? why : MSG_JWKS_URL);
		return;
	}
	if (!u.tls && !loopback_host(u.host)) {
		bad_url(x, e, MSG_JWKS_URL);
		free(u.host);
		free(u.port);
		free(u.path);
		return;
	}
	free(s->jwks_url);
	free(s->jwks_host);
	free(s->jwks_port);
	free(s->jwks_target);
	s->jwks_url = xstrdup(e->value);
	s->jwks_tls = u.tls;
	s->jwks_host = u.host;
	s->jwks_port = u.port;
	if (!*u.path) {
		free(u.path);
		u.path = xstrdup("/");
	}
	s->jwks_target = u.path;
}

static void k_jwt_jwks_ca_file(set_ctx *x, const cfg_entry *e)
{
	get_path(x, e, &x->s->jwks_ca_file);
}

static void k_jwt_jwks_refresh(set_ctx *x, const cfg_entry *e)
{
	int64_t ms;
	if (duration_parse_ms(e->value, &ms) != 0 || ms < 5000 || ms > 86400000)
		bad_value(x, e, "expected a duration from 5s to 24h, such as 15m or 1h");
	else
		x->s->jwks_refresh_ms = (int)ms; /* as given: 5500ms is not 5 s */
}

/* The longest a token this host signs may live: evh_auth_sign refuses a
 * longer one, requests refuse one signed longer, and a sign-out is kept
 * this long (revoke.h). */
static void k_token_ttl_max(set_ctx *x, const cfg_entry *e)
{
	int64_t ms;
	if (duration_parse_ms(e->value, &ms) != 0 || ms < 60000 || ms > 366 * 86400000LL ||
	    ms % 1000)
		bad_value(x, e, "expected whole seconds from 1m to 366d, such as 12h or 30d");
	else
		x->s->token_ttl_max_s = ms / 1000;
}

/* How old the kept set may be to be used at a start while the provider
 * is down: keys it has since withdrawn (a leaked one) are not trusted for
 * ever. */
static void k_jwt_jwks_cache_max_age(set_ctx *x, const cfg_entry *e)
{
	int64_t ms;
	if (duration_parse_ms(e->value, &ms) != 0 || ms < 60000 || ms > 366 * 86400000LL ||
	    ms % 1000)
		bad_value(x, e, "expected whole seconds from 1m to 366d, such as 12h or 7d");
	else
		x->s->jwks_cache_max_age_s = ms / 1000;
}

static const key_def auth_keys[] = {
    {"token_ttl_max", k_token_ttl_max},
    {"jwt_secret_file", k_jwt_secret_file},
    {"jwt_previous_secret_file", k_jwt_previous_secret_file},
    {"issuer", k_issuer},
    {"jwt_public_key_file", k_jwt_public_key_file},
    {"jwt_public_key_issuer", k_jwt_public_key_issuer},
    {"jwt_public_key_audience", k_jwt_public_key_audience},
    {"jwt_public_key_roles_claim", k_jwt_public_key_roles_claim},
    {"jwt_jwks_url", k_jwt_jwks_url},
    {"jwt_jwks_ca_file", k_jwt_jwks_ca_file},
    {"jwt_jwks_refresh", k_jwt_jwks_refresh},
    {"jwt_jwks_cache_max_age", k_jwt_jwks_cache_max_age},
    {NULL, NULL},
};

/* [admin] */

/* The admin token: the first line of the file, without its line end.
 * Read here, so --check-config and a reload find a bad one. */
static void k_token_file(set_ctx *x, const cfg_entry *e)
{
	settings *s = x->s;
	struct stat st;
	size_t n;
	char *buf;

	if (get_path(x, e, &s->admin_token_file) != 0)
		return;
	buf = read_file(s->admin_token_file, CFG_MAX_SECRET, &n, &st);
	if (!buf) {
		diag_add(x->d, e->file, e->line, "[admin] token_file: cannot read '%s': %s",
		         s->admin_token_file, strerror(errno));
		return;
	}
	note_if_public(x, e, s->admin_token_file, &st);
	n = strcspn(buf, "\r\n");
	if (n < ADMIN_TOKEN_MIN || n > ADMIN_TOKEN_MAX) {
		diag_add(x->d, e->file, e->line,
		         "[admin] token_file: the token in '%s' must be %d to %d bytes on its first "
		         "line (e.g. head -c 32 /dev/urandom | base64)",
		         s->admin_token_file, ADMIN_TOKEN_MIN, ADMIN_TOKEN_MAX);
		free_secret(buf);
		return;
	}
	free_secret(s->admin_token);
	s->admin_token = xstrndup(buf, n);
	free_secret(buf); /* the whole file, not only its first line */
}

static void k_admin_https(set_ctx *x, const cfg_entry *e)
{
	get_bool_into(x, e, &x->s->admin_https);
}

static const key_def admin_keys[] = {
    {"token_file", k_token_file},
    {"https", k_admin_https},
    {NULL, NULL},
};

/* [tracing] */

#define MSG_OTLP_URL                                                                      \
	"expected http://HOST[:PORT][/PATH] or https://HOST[:PORT][/PATH], e.g. "              \
	"http://127.0.0.1:4318"

/* http[s]://HOST[:PORT][/PATH]: the collector's OTLP/HTTP base URL, as
 * OTEL_EXPORTER_OTLP_ENDPOINT takes it; spans go to PATH/v1/traces. */
static void k_otlp_endpoint(set_ctx *x, const cfg_entry *e)
{
	settings *s = x->s;
	url_parts u;
	const char *why;
	int n;

	if (!*e->value)
		return; /* off */
	if (parse_http_url(e->value, 0, &u, &why) != 0) {
		bad_url(x, e, why ? why : MSG_OTLP_URL);
		return;
	}
	n = (int)strlen(u.path);
	while (n > 0 && u.path[n - 1] == '/')
		n--;
	/* OTEL_EXPORTER_OTLP_ENDPOINT's meaning: spans would go to
	 * /v1/traces/v1/traces, refused by every collector. */
	if (n >= 10 && !strncmp(u.path + n - 10, "/v1/traces", 10)) {
		bad_value(x, e, "expected the collector's base URL: evhostd adds /v1/traces itself");
		free(u.host);
		free(u.port);
		free(u.path);
		return;
	}
	free(s->trace_host);
	free(s->trace_port);
	free(s->trace_path);
	free(s->trace_endpoint);
	s->trace_tls = u.tls;
	s->trace_host = u.host;
	s->trace_port = u.port;
	/* "/v1/traces" after the path, without a doubled '/'. */
	s->trace_path = xasprintf("%.*s/v1/traces", n, u.path);
	free(u.path);
	if (!s->trace_path)
		return;
	s->trace_endpoint = xasprintf("%s://%s%s%s:%s%s", u.tls ? "https" : "http",
	                              strchr(u.host, ':') ? "[" : "", u.host,
	                              strchr(u.host, ':') ? "]" : "", s->trace_port, s->trace_path);
}

static void k_otlp_ca_file(set_ctx *x, const cfg_entry *e)
{
	get_path(x, e, &x->s->trace_ca_file);
}

static void k_otlp_client_certificate(set_ctx *x, const cfg_entry *e)
{
	if (get_path(x, e, &x->s->trace_client_cert) == 0)
		say_if_public(x, e, x->s->trace_client_cert); /* it holds the private key */
}

#define OTLP_HEADERS_MAX 16384 /* bytes of otlp_headers_file */

/* Headers evhostd writes itself, or that would change how the request is
 * framed or carried. */
static int reserved_header(const char *name, size_t n)
{
	static const char *const names[] = {"host",    "content-length",    "content-type",
	                                    "connection", "transfer-encoding", "user-agent",
	                                    "te",      "trailer",           "upgrade",
	                                    "expect",  "keep-alive",        "proxy-connection"};
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		if (strlen(names[i]) == n && !strncasecmp(names[i], name, n))
			return 1;
	return 0;
}

/* config.h; what reserved_header names is refused. */
char *settings_otlp_headers(const char *text, char *why, size_t whylen)
{
	textbuf out = {0};
	int line = 0, count = 0, oom = 0;
	for (const char *next = text; *next;) {
		const char *p = next, *end = next + strcspn(next, "\n"), *colon, *value;
		size_t name_len, vlen;
		next = *end ? end + 1 : end;
		line++;
		if (end > p && end[-1] == '\r')
			end--;
		while (p < end && (*p == ' ' || *p == '\t'))
			p++;
		if (p == end || *p == '#')
			continue;
		name_len = http_token_len(p, (size_t)(end - p));
		colon = p + name_len;
		if (!name_len || colon >= end || *colon != ':') {
			snprintf(why, whylen, "line %d: expected 'Name: value' (a header name, then ':')",
			         line);
			goto bad;
		}
		if (reserved_header(p, name_len)) {
			snprintf(why, whylen, "line %d: %.*s is set by evhostd itself", line,
			         (int)name_len, p);
			goto bad;
		}
		for (value = colon + 1; value < end && (*value == ' ' || *value == '\t'); value++)
			;
		vlen = (size_t)(end - value);
		while (vlen && (value[vlen - 1] == ' ' || value[vlen - 1] == '\t'))
			vlen--;
		if (!http_value_ok(value, vlen)) {
			snprintf(why, whylen, "line %d: a control character in %.*s's value", line,
			         (int)name_len, p);
			goto bad;
		}
		if (++count > 64) {
			snprintf(why, whylen, "more than 64 headers");
			goto bad;
		}
		tb_put(&out, p, name_len);
		tb_put(&out, ": ", 2);
		tb_put(&out, value, vlen);
		tb_put(&out, "\r\n", 2);
	}
	if (!count) {
		snprintf(why, whylen, "no header in it ('Name: value' lines)");
		goto bad;
	}
	if (out.oom) {
		snprintf(why, whylen, "out of memory");
		oom = 1;
		goto bad;
	}
	return out.p;
bad:
	if (out.p)
		explicit_bzero(out.p, out.cap);
	free(out.p);
	errno = oom ? ENOMEM : EINVAL;
	return NULL;
}

/* Headers sent with every export (an API key, a tenant): read here, so that
 * --check-config finds a bad file; a secret, so never logged. */
static void k_otlp_headers_file(set_ctx *x, const cfg_entry *e)
{
	settings *s = x->s;
	char why[256], *text, *headers;
	struct stat st;
	size_t n;
	int oom = 0;

	if (get_path(x, e, &s->trace_headers_file) != 0)
		return;
	text = read_file(s->trace_headers_file, OTLP_HEADERS_MAX, &n, &st);
	if (!text) {
		diag_add(x->d, e->file, e->line, "[tracing] otlp_headers_file: cannot read '%s': %s",
		         s->trace_headers_file,
		         errno == EFBIG ? "larger than 16 KiB" : strerror(errno));
		return;
	}
	note_if_public(x, e, s->trace_headers_file, &st); /* an API key, a bearer token */
	if (strlen(text) == n) {
		headers = settings_otlp_headers(text, why, sizeof why);
		oom = !headers && errno == ENOMEM;
	} else {
		headers = NULL;
		snprintf(why, sizeof why, "a NUL byte in it");
	}
	explicit_bzero(text, n);
	free(text);
	if (oom) {
		nomem();
		return;
	}
	if (!headers) {
		diag_add(x->d, e->file, e->line, "[tracing] otlp_headers_file '%s': %s",
		         s->trace_headers_file, why);
		return;
	}
	free_secret(s->trace_headers);
	s->trace_headers = headers;
}

static void k_service_name(set_ctx *x, const cfg_entry *e)
{
	get_nonempty(x, e, &x->s->trace_service);
}

static void k_sample_ratio(set_ctx *x, const cfg_entry *e)
{
	char *end = NULL;
	double r;
	errno = 0;
	r = strtod(e->value, &end);
	if (!*e->value || !end || *end || errno || !(r >= 0.0 && r <= 1.0))
		bad_value(x, e, "expected a number from 0 to 1, such as 0.1 (a tenth of new traces)");
	else
		x->s->trace_sample_ratio = r;
}

static void k_queue_size(set_ctx *x, const cfg_entry *e)
{
	get_int_into(x, e, 1, 65536, &x->s->trace_queue_size);
}

static void k_batch_size(set_ctx *x, const cfg_entry *e)
{
	get_int_into(x, e, 1, 65536, &x->s->trace_batch_size);
}

static void k_export_interval(set_ctx *x, const cfg_entry *e)
{
	duration_ms_key(x, e, 1, 3600000, &x->s->trace_interval_ms);
}

static void k_export_timeout(set_ctx *x, const cfg_entry *e)
{
	duration_ms_key(x, e, 1, 3600000, &x->s->trace_timeout_ms);
}

static void k_retry_max_time(set_ctx *x, const cfg_entry *e)
{
	duration_ms_key(x, e, 1, 3600000, &x->s->trace_retry_max_ms);
}

static const key_def tracing_keys[] = {
    {"otlp_endpoint", k_otlp_endpoint},
    {"otlp_ca_file", k_otlp_ca_file},
    {"otlp_client_certificate", k_otlp_client_certificate},
    {"otlp_headers_file", k_otlp_headers_file},
    {"service_name", k_service_name},
    {"sample_ratio", k_sample_ratio},
    {"queue_size", k_queue_size},
    {"batch_size", k_batch_size},
    {"export_interval", k_export_interval},
    {"export_timeout", k_export_timeout},
    {"retry_max_time", k_retry_max_time},
    {NULL, NULL},
};

typedef struct section_def {
	const char *name;
	const key_def *keys;
} section_def;

static const section_def host_sections[] = {
    {"host", host_keys},   {"http", http_keys},       {"kafka", kafka_keys},
    {"store", store_keys}, {"log", log_keys},         {"metrics", metrics_keys},
    {"auth", auth_keys},   {"admin", admin_keys},     {"tracing", tracing_keys},
    {NULL, NULL},
};

static const section_def *find_section(const char *name)
{
	for (const section_def *sd = host_sections; sd->name; sd++) {
		if (!strcmp(sd->name, name))
			return sd;
	}
	return NULL;
}

static bool is_plugin_section(const char *name)
{
	return !strncmp(name, "plugin.", 7);
}

/* Note `e` as refused (settings.refused); out of memory, cfg_nomem: a
 * refusal left unnoted would let evhostctl go on with the default. */
static void note_refused(set_ctx *x, const cfg_entry *e, size_t problem)
{
	struct refused_key *v =
	    realloc(x->s->refused, (x->s->nrefused + 1) * sizeof *x->s->refused);
	if (!v) {
		cfg_nomem = true;
		return;
	}
	v[x->s->nrefused++] = (struct refused_key){e, problem};
	x->s->refused = v;
}

static void apply_entry(set_ctx *x, const section_def *sd, const cfg_entry *e)
{
	suggest sg = {e->key, NULL, SIZE_MAX};
	size_t n0 = x->d->n, count0 = diag_count(x->d);

	if (sd->keys == kafka_keys && !strncmp(e->key, "rdkafka.", 8)) {
		k_rdkafka(x, e);
		return;
	}
	for (const key_def *k = sd->keys; k->name; k++) {
		if (!strcmp(k->name, e->key)) {
			k->apply(x, e);
			if (diag_count(x->d) > count0)
				note_refused(x, e, x->d->n > n0 ? n0 : SIZE_MAX);
			return;
		}
		suggest_try(&sg, k->name);
	}
	unknown_key(x->d, e, sg.best);
}

static void settings_defaults(set_ctx *x)
{
	settings *s = x->s;
	const char *confdir = cfg_get(x->c, "host", "confdir");
	char host[256];

	if (gethostname(host, sizeof host) != 0)
		snprintf(host, sizeof host, "localhost");
	host[sizeof host - 1] = '\0';
	s->plugin_dir = resolve_path(x->base, EVHOST_DEFAULT_PLUGIN_DIR);
	s->state_dir = xstrdup("/var/lib/evhost");
	if (x->c->confdir)
		s->confdir = xstrdup(x->c->confdir);
	else
		s->confdir = resolve_path(x->base, confdir && *confdir ? confdir : "conf.d");
	s->source = xasprintf("evhost://%s", host);
	set_listen(s, xstrdup("127.0.0.1"), 8080);
	s->http_threads = 32;
	s->http_request_timeout_ms = 10000;
	s->http_keep_alive_ms = 500;
	s->http_stream_unacked_ms = 60000;
	s->max_body_bytes = 1024 * 1024;
	s->http_max_head_bytes = 16 * 1024;
	s->json_max_depth = 32;
	s->retry_max_attempts = 5;
	s->retry_backoff_ms = 200;
	s->retry_backoff_max_ms = 30000;
	s->dlq_suffix = xstrdup(".dlq");
	s->store_synchronous = xstrdup("FULL");
	s->outbox_max_rows = 100000;
	s->event_retention_ms = SETTINGS_EVENT_RETENTION_MS;
	s->inbox_retention_ms = SETTINGS_INBOX_RETENTION_MS;
	s->stop_timeout_ms = 10000;
	s->log_level = EVH_LOG_INFO;
	s->log_fmt = LOG_FORMAT_AUTO;
	s->log_rate_burst = LOG_RATE_BURST_DEFAULT;
	s->log_rate_interval_ms = LOG_RATE_INTERVAL_MS_DEFAULT;
	s->metrics_enabled = 1;
	s->jwt_issuer = xstrdup("evhost");
	s->trace_service = xstrdup("evhost");
	s->trace_sample_ratio = 1.0;
	s->trace_queue_size = 2048;
	s->trace_batch_size = 512;
	s->trace_interval_ms = 2000;
	s->jwks_refresh_ms = 3600 * 1000;
	s->token_ttl_max_s = 30 * 86400;
	s->jwks_cache_max_age_s = 7 * 86400;
	s->trace_timeout_ms = 10000;
	s->trace_retry_max_ms = 60000;
}

/* ------------------------------------------------------------- plugins */

static bool plugin_name_ok(const char *name)
{
	size_t n = strlen(name);
	/* The name becomes file names (NAME.so, <state_dir>/NAME), hence no dots. */
	return n > 0 && n <= PLUGIN_NAME_MAX &&
	       strspn(name, ALNUM "_-") == n;
}

static void plugin_key(set_ctx *x, plugin_settings *ps, const char *key)
{
	const cfg_entry *e = cfg_find(x->c, ps->section, key);

	if (!e)
		return;
	if (!strcmp(key, "enabled"))
		get_bool_into(x, e, &ps->enabled);
	else if (!strcmp(key, "required"))
		get_bool_into(x, e, &ps->required);
	else if (!strcmp(key, "group"))
		get_nonempty(x, e, &ps->group);
	else if (!strcmp(key, "log_level")) {
		evh_log_level lvl;
		if (log_level_parse(e->value, &lvl) != 0)
			bad_value(x, e, "expected error, warn, info or debug");
		else
			ps->log_level = (int)lvl;
	}
	else if (!*e->value)
		bad_value(x, e, "expected a path");
	else
		set_str(&ps->path, e->value);
}

static void plugin_from_section(set_ctx *x, size_t si)
{
	settings *s = x->s;
	const cfg_section *sec = &x->c->sections[si];
	const char *section = sec->name, *name = section + 7;
	plugin_settings *ps;
	char *rel;

	if (!plugin_name_ok(name)) {
		diag_add(x->d, sec->file, sec->line,
		         "bad plugin name '%s' in [%s]: use up to %d letters, digits, '-' and '_'",
		         name, section, PLUGIN_NAME_MAX);
		return;
	}
	if (!(ps = grow(s->plugins, s->nplugins + 1, sizeof *ps)))
		return;
	s->plugins = ps;
	ps = &s->plugins[s->nplugins++];
	memset(ps, 0, sizeof *ps);
	ps->name = xstrdup(name);
	ps->section = xstrdup(section);
	ps->enabled = 1;
	ps->required = 1;
	ps->path = xasprintf("%s.so", name);
	ps->group = xasprintf("evhost.%s", name);
	ps->log_level = -1;
	if (cfg_nomem)
		return; /* settings_from_cfg refuses them */
	ps->file = sec->file;
	ps->line = sec->line;
	plugin_key(x, ps, "enabled");
	plugin_key(x, ps, "required");
	plugin_key(x, ps, "path");
	plugin_key(x, ps, "group");
	plugin_key(x, ps, "log_level");
	if (cfg_nomem)
		return;
	rel = ps->path;
	ps->path = resolve_path(s->plugin_dir, rel);
	free(rel);
}

static int plugin_cmp(const void *a, const void *b)
{
	return strcmp(((const plugin_settings *)a)->name, ((const plugin_settings *)b)->name);
}

/* ------------------------------------------------------------- the whole */

static void check_sections(set_ctx *x)
{
	const cfg *c = x->c;

	for (size_t i = 0; i < c->nsections; i++) {
		const cfg_section *sec = &c->sections[i];
		if (!*sec->name)
			diag_add(x->d, sec->file, sec->line, "key outside any [section]");
		else if (!is_plugin_section(sec->name) && !find_section(sec->name))
			diag_add(x->d, sec->file, sec->line, "unknown section [%s]", sec->name);
	}
}

/* [http] `key`, when set to `value` > 0, must be below threads. */
static void below_threads(set_ctx *x, const char *key, int value, const char *why)
{
	const cfg_entry *e = cfg_find(x->c, "http", key);
	if (e && value > 0 && value >= x->s->http_threads)
		diag_add(x->d, e->file, e->line, "[http] %s (%d) must be below threads (%d): %s", key,
		         value, x->s->http_threads, why);
}

static void check_cross(set_ctx *x)
{
	const cfg *c = x->c;
	settings *s = x->s;
	const cfg_entry *e, *url;

	if (!cfg_find(c, "kafka", "brokers"))
		diag_add(x->d, c->main_file, 0, "[kafka] brokers is required "
		                                "(e.g. brokers = localhost:9092, or embedded)");
	if (s->retry_backoff_max_ms < s->retry_backoff_ms) {
		e = cfg_find(c, "kafka", "retry.backoff_max_ms");
		if (!e)
			e = cfg_find(c, "kafka", "retry.backoff_ms");
		diag_add(x->d, e ? e->file : c->main_file, e ? e->line : 0,
		         "[kafka] retry.backoff_max_ms (%d) must not be below "
		         "retry.backoff_ms (%d)",
		         s->retry_backoff_max_ms, s->retry_backoff_ms);
	}
	e = cfg_find(c, "auth", "jwt_previous_secret_file");
	if (e && *e->value && (!s->jwt_secret_file || !*s->jwt_secret_file))
		diag_add(x->d, e->file, e->line,
		         "[auth] jwt_previous_secret_file needs jwt_secret_file: the previous key "
		         "only checks tokens, the current one signs them");
	/* Each open event stream holds a worker thread: at least one must stay
	 * free for ordinary requests (and /healthz); so for one plugin's
	 * requests, for the other plugins, /healthz and the admin API. */
	below_threads(x, "max_streams", s->http_max_streams, "each open event stream holds a "
	                                                      "worker thread");
	below_threads(x, "max_plugin_requests", s->http_max_plugin_requests,
	              "the limit keeps workers free for what the plugin does not serve");
	e = cfg_find(c, "http", "tls_listen");
	if (e && s->http_listen && s->http_tls_listen && listen_clash(s->http_listen, s->http_tls_listen))
		diag_add(x->d, e->file, e->line,
		         "[http] tls_listen = %s: listen already takes that port (%s); give HTTPS "
		         "a port of its own",
		         s->http_tls_listen, s->http_listen);
	if (e && s->http_tls_listen && !s->http_tls_certificate)
		diag_add(x->d, e->file, e->line,
		         "[http] tls_listen needs tls_certificate (a PEM file with the private key "
		         "and the certificate chain)");
	e = cfg_find(c, "http", "tls_certificate");
	if (e && *e->value && !cfg_find(c, "http", "tls_listen"))
		diag_add(x->d, e->file, e->line,
		         "[http] tls_certificate is set but tls_listen is not: no HTTPS listener "
		         "would use it");
	for (const char *const *k = (const char *const[]){"tls_min_version", "tls_client_ca",
	                                                  "tls_ciphers", "tls_ciphersuites", NULL};
	     *k; k++) {
		e = cfg_find(c, "http", *k);
		if (e && *e->value && !cfg_find(c, "http", "tls_listen"))
			diag_add(x->d, e->file, e->line,
			         "[http] %s is set but tls_listen is not: there is no HTTPS listener", *k);
	}
	/* "true" without a listener to serve it on would read as HTTPS being on. */
	for (const char *const *k = (const char *const[]){"metrics", "admin", NULL}; *k; k++) {
		e = cfg_find(c, *k, "https");
		if (e && (**k == 'm' ? s->metrics_https : s->admin_https) &&
		    !cfg_find(c, "http", "tls_listen"))
			diag_add(x->d, e->file, e->line,
			         "[%s] https is true but [http] tls_listen is not set: there is no HTTPS "
			         "listener",
			         *k);
	}
	e = cfg_find(c, "auth", "jwt_public_key_file");
	if (e && s->jwt_public_keys && !s->jwt_public_issuer)
		diag_add(x->d, e->file, e->line,
		         "[auth] jwt_public_key_file needs jwt_public_key_issuer (the iss its tokens "
		         "carry): without it, tokens of any issuer those keys sign would do");
	e = cfg_find(c, "auth", "jwt_jwks_url");
	if (e && s->jwks_url && s->jwt_public_key_file)
		diag_add(x->d, e->file, e->line,
		         "[auth] jwt_jwks_url and jwt_public_key_file are both set: keep one (the URL "
		         "fetches the provider's keys, the file is a copy saved by hand)");
	else if (e && s->jwks_url && !s->jwt_public_issuer)
		diag_add(x->d, e->file, e->line,
		         "[auth] jwt_jwks_url needs jwt_public_key_issuer (the iss its tokens carry): "
		         "without it, tokens of any issuer those keys sign would do");
	/* A jwt_jwks_url refused above counts as given: one error, not two. */
	url = cfg_find(c, "auth", "jwt_jwks_url");
	for (const char *const *k = (const char *const[]){"jwt_public_key_issuer",
	                                                  "jwt_public_key_audience",
	                                                  "jwt_public_key_roles_claim", NULL};
	     *k; k++) {
		e = cfg_find(c, "auth", *k);
		if (e && *e->value && !s->jwt_public_key_file && !(url && *url->value))
			diag_add(x->d, e->file, e->line,
			         "[auth] %s is set but neither jwt_public_key_file nor jwt_jwks_url is: "
			         "no token is checked with it",
			         *k);
	}
	for (const char *const *k = (const char *const[]){"jwt_jwks_ca_file", "jwt_jwks_refresh",
	                                                  "jwt_jwks_cache_max_age", NULL};
	     *k; k++) {
		e = cfg_find(c, "auth", *k);
		if (e && *e->value && !(url && *url->value))
			diag_add(x->d, e->file, e->line,
			         "[auth] %s is set but jwt_jwks_url is not: no keys are fetched", *k);
		else if (e && *e->value && s->jwks_url && !s->jwks_tls &&
		         !strcmp(*k, "jwt_jwks_ca_file"))
			diag_add(x->d, e->file, e->line,
			         "[auth] jwt_jwks_ca_file is set but jwt_jwks_url is http://, without TLS");
	}
	for (const char *const *k = (const char *const[]){"otlp_ca_file", "otlp_client_certificate",
	                                                  NULL};
	     *k; k++) {
		e = cfg_find(c, "tracing", *k);
		if (e && *e->value && s->trace_endpoint && !s->trace_tls)
			diag_add(x->d, e->file, e->line,
			         "[tracing] %s is set but otlp_endpoint is http://, without TLS: use "
			         "https://",
			         *k);
	}
	e = cfg_find(c, "tracing", "batch_size");
	if (e && s->trace_batch_size > s->trace_queue_size)
		diag_add(x->d, e->file, e->line,
		         "[tracing] batch_size (%d) must not exceed queue_size (%d)",
		         s->trace_batch_size, s->trace_queue_size);
}

/* Two enabled plugins in one consumer group would split the partitions of
 * the topics they share between them (each missing the events the other
 * gets), share committed offsets, and rebalance each other at every reload
 * of one: refused, at the second one's group (or section) line. */
static void check_groups(set_ctx *x)
{
	const settings *s = x->s;
	for (size_t j = 0; j < s->nplugins; j++) {
		const plugin_settings *b = &s->plugins[j];
		if (!b->enabled || !b->group)
			continue;
		for (size_t i = 0; i < j; i++) {
			const plugin_settings *a = &s->plugins[i];
			const cfg_entry *ea, *eb;
			if (!a->enabled || !a->group || strcmp(a->group, b->group) != 0)
				continue;
			ea = cfg_find(x->c, a->section, "group");
			eb = cfg_find(x->c, b->section, "group");
			diag_add(x->d, eb ? eb->file : b->file, eb ? eb->line : b->line,
			         "[%s] group = %s: plugin '%s' (%s:%d) is in that group too; two "
			         "plugins in one group split its topics' partitions between them, each "
			         "missing the events the other gets: give each its own group",
			         b->section, b->group, a->name, ea ? ea->file : a->file,
			         ea ? ea->line : a->line);
			break;
		}
	}
}

int settings_from_cfg(const cfg *c, settings *s, diag *d)
{
	set_ctx x = {.c = c, .s = s, .d = d};
	size_t n0 = d->n, count0 = diag_count(d); /* problems before this reading */

	memset(s, 0, sizeof *s);
	cfg_nomem = false;
	x.base = dir_of(c->main_file);
	if (x.base)
		settings_defaults(&x);
	if (!cfg_nomem)
		check_sections(&x);
	for (size_t i = 0; i < c->n && !cfg_nomem; i++) {
		const section_def *sd = find_section(c->v[i].section);
		if (sd)
			apply_entry(&x, sd, &c->v[i]);
	}
	if (!cfg_nomem)
		check_cross(&x);
	if (c->plugin_dir && !cfg_nomem) { /* a reload's: the running daemon's */
		free(s->plugin_dir);
		s->plugin_dir = xstrdup(c->plugin_dir);
	}
	for (size_t i = 0; i < c->nsections && !cfg_nomem; i++) {
		if (is_plugin_section(c->sections[i].name))
			plugin_from_section(&x, i);
	}
	if (!cfg_nomem)
		check_groups(&x);
	free(x.base);
	if (cfg_nomem) {
		say_nomem(d, c->main_file, n0);
		return -2;
	}
	if (s->nplugins > 1)
		qsort(s->plugins, s->nplugins, sizeof *s->plugins, plugin_cmp);
	return diag_count(d) > count0 ? -1 : 0;
}

void settings_swap_public_secrets(settings *a, settings *b)
{
	struct public_secret *v = a->public_secrets;
	size_t n = a->npublic_secrets;

	a->public_secrets = b->public_secrets;
	a->npublic_secrets = b->npublic_secrets;
	b->public_secrets = v;
	b->npublic_secrets = n;
}

void settings_drop_secrets(settings *s)
{
	if (s->jwt_secret)
		explicit_bzero(s->jwt_secret, s->jwt_secret_len);
	free(s->jwt_secret);
	s->jwt_secret = NULL;
	s->jwt_secret_len = 0;
	if (s->jwt_previous_secret)
		explicit_bzero(s->jwt_previous_secret, s->jwt_previous_secret_len);
	free(s->jwt_previous_secret);
	s->jwt_previous_secret = NULL;
	s->jwt_previous_secret_len = 0;
}

void settings_free(settings *s)
{
	for (size_t i = 0; i < s->npublic_secrets; i++) {
		free(s->public_secrets[i].where);
		free(s->public_secrets[i].what);
		free(s->public_secrets[i].path);
	}
	free(s->public_secrets);
	free(s->refused);
	free(s->plugin_dir);
	free(s->state_dir);
	free(s->confdir);
	free(s->http_listen);
	free(s->http_host);
	free(s->http_tls_listen);
	free(s->http_tls_certificate);
	free(s->http_tls_client_ca);
	free(s->http_tls_ciphers);
	free(s->http_tls_ciphersuites);
	proxy_list_free(&s->http_trusted_proxies);
	free(s->brokers);
	for (size_t i = 0; i < s->nrdkafka; i++) {
		free(s->rdkafka[i].key);
		free_secret(s->rdkafka[i].value);
	}
	free(s->rdkafka);
	free(s->dlq_suffix);
	free(s->store_synchronous);
	free(s->jwt_secret_file);
	settings_drop_secrets(s);
	free(s->jwt_previous_secret_file);
	free(s->jwt_issuer);
	free(s->jwt_public_key_file);
	free(s->jwt_public_keys);
	free(s->jwt_public_issuer);
	free(s->jwt_public_audience);
	free(s->jwt_public_roles);
	free(s->jwks_url);
	free(s->jwks_host);
	free(s->jwks_port);
	free(s->jwks_target);
	free(s->jwks_ca_file);
	free(s->admin_token_file);
	free_secret(s->admin_token);
	free(s->source);
	free(s->trace_endpoint);
	free(s->trace_host);
	free(s->trace_port);
	free(s->trace_path);
	free(s->trace_service);
	free(s->trace_ca_file);
	free(s->trace_client_cert);
	free(s->trace_headers_file);
	free_secret(s->trace_headers);
	for (size_t i = 0; i < s->nplugins; i++) {
		free(s->plugins[i].name);
		free(s->plugins[i].section);
		free(s->plugins[i].path);
		free(s->plugins[i].group);
	}
	free(s->plugins);
	memset(s, 0, sizeof *s);
}
