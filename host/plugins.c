/* Plugin loading: open the file, find the one entry symbol, check the
 * descriptor against the ABI this host speaks, validate the plugin's config
 * section against its declared schema, then open its store and run init.
 * Every refusal is one line naming the file, what was found and what was
 * expected, because that line is all an admin sees in `systemctl status`. */
#include "plugins.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crash.h"
#include "host.h"
#include "http.h"
#include "log.h"
#include "router.h"
#include "store.h"

/* The descriptor must at least reach `fini`; anything shorter was not built
 * from any evhost.h we ever shipped. */
#define DESC_MIN_SIZE (offsetof(evh_plugin_desc, fini) + sizeof(void (*)(void)))

/* ABI 1.7 gave reserved[0] a meaning (check), ABI 1.12 the next slot
 * (routes): the descriptor's size and layout must not have changed with
 * them. */
_Static_assert(offsetof(evh_plugin_desc, check) == DESC_MIN_SIZE &&
                   offsetof(evh_plugin_desc, routes) == DESC_MIN_SIZE + sizeof(void *) &&
                   offsetof(evh_plugin_desc, reserved) == DESC_MIN_SIZE + 2 * sizeof(void *) &&
                   sizeof(evh_plugin_desc) == DESC_MIN_SIZE + 8 * sizeof(void *),
               "evh_plugin_desc's size or layout changed");

static const char *const host_owned_keys[] = {"enabled", "required", "path", "group",
                                               "log_level", NULL};

/* The descriptor's declared routes: a plugin built for ABI 1.12 or later
 * whose descriptor reaches the slot (before 1.12 it was reserved[1], not
 * ours to read), or NULL. */
static const char *const *desc_routes(const evh_plugin_desc *d)
{
	if (d->abi_minor < 12 ||
	    d->struct_size < offsetof(evh_plugin_desc, routes) + sizeof d->routes)
		return NULL;
	return d->routes;
}

/* The method of a declared route "METHOD /pattern" into `method` (cut to
 * fit: the router then says it is too long), and its pattern, or NULL when
 * there is no space in it. Which method and pattern are good is the
 * router's to say (router_route_error). */
#define DECLARED_METHOD_MAX 32
static const char *declared_split(const char *entry, char method[DECLARED_METHOD_MAX])
{
	const char *sp = strchr(entry, ' ');
	size_t n;

	if (!sp)
		return NULL;
	n = (size_t)(sp - entry) < DECLARED_METHOD_MAX - 1 ? (size_t)(sp - entry)
	                                                   : DECLARED_METHOD_MAX - 1;
	memcpy(method, entry, n);
	method[n] = '\0';
	return sp + 1;
}

static const char *printable(const char *s, char *out);

/* The declared routes (ABI 1.12) of a descriptor that passed
 * check_descriptor: each one "METHOD /pattern" the router takes, none a path
 * the host serves itself, no two for one route (the second registration
 * would fail init). 0; -1 with the reason in buf; -2 out of memory (said in
 * buf). Entries are counted from 1, as a reader of the array counts them. */
static int check_declared_routes(const evh_plugin_desc *d, char *buf, size_t len)
{
	const char *const *routes = desc_routes(d);
	router *seen;
	int rc = 0;

	if (!routes)
		return 0;
	if (!(seen = router_new())) {
		snprintf(buf, len, "out of memory checking its declared routes");
		return -2;
	}
	for (size_t k = 0; routes[k] && !rc; k++) {
		char method[DECLARED_METHOD_MAX], shown[4 * 40 + 4], err[512];
		const char *pattern = declared_split(routes[k], method), *why;
		int added;

		printable(routes[k], shown);
		if (!pattern) {
			snprintf(buf, len, "its declared routes' entry %zu, '%s', is not \"METHOD "
			                   "/pattern\": a plugin bug, rebuild it",
			         k + 1, shown);
			rc = -1;
		} else if ((why = router_route_error(method, pattern))) {
			snprintf(buf, len, "its declared routes' entry %zu, '%s', is not a route: %s: "
			                   "a plugin bug, rebuild it",
			         k + 1, shown, why);
			rc = -1;
		} else if ((why = http_host_path(pattern))) {
			snprintf(buf, len, "its declared routes' entry %zu, '%s': the host serves %s "
			                   "itself, before any plugin's route: choose another path",
			         k + 1, shown, why);
			rc = -1;
		} else if ((added = router_add(seen, method, pattern, NULL, (void *)(uintptr_t)(k + 1),
		                               err, sizeof err)) == -2) {
			snprintf(buf, len, "out of memory checking its declared routes");
			rc = -2;
		} else if (added) {
			snprintf(buf, len, "its declared routes' entry %zu, '%s': %.200s (entry %zu): a "
			                   "plugin bug, rebuild it",
			         k + 1, shown, err,
			         (size_t)(uintptr_t)router_holder(seen, method, pattern));
			rc = -1;
		}
	}
	router_free(seen);
	return rc;
}

int plugin_stopping(const evh_plugin *p)
{
	return atomic_load(&p->winding_down) ||
	       (p->host && (atomic_load(&p->host->start_stop) || atomic_load(&p->host->reload_stop)));
}

int plugin_declares(const evh_plugin *p, const char *method, const char *pattern)
{
	const char *const *routes = desc_routes(p->desc);
	size_t n;

	if (!routes)
		return -1;
	n = strlen(method);
	for (; *routes; routes++)
		if (!strncmp(*routes, method, n) && (*routes)[n] == ' ' &&
		    !strcmp(*routes + n + 1, pattern))
			return 1;
	return 0;
}

static const plugin_settings *settings_of(const host *h, const evh_plugin *p)
{
	for (size_t i = 0; i < h->set.nplugins; i++)
		if (!strcmp(h->set.plugins[i].section, p->section))
			return &h->set.plugins[i];
	return NULL;
}

int plugins_route_clash(const host *h, router *declared, size_t i, const plugin_settings **at,
                        char *msg, size_t msglen)
{
	evh_plugin *p = h->plugins[i];
	const char *const *routes = desc_routes(p->desc);
	const plugin_settings *ps = settings_of(h, p);

	*at = ps;
	if (!routes || !ps)
		return 0;
	for (size_t k = 0; routes[k]; k++) {
		char method[DECLARED_METHOD_MAX], err[512], tail[128];
		const char *pattern = declared_split(routes[k], method);
		const evh_plugin *holder;
		const plugin_settings *hs;
		int rc = router_add(declared, method, pattern, NULL, p, err, sizeof err);

		if (rc == 0)
			continue;
		/* Checked at load: a refusal is a clash, or memory. The plugin is
		 * left out (or the start fails): none of its routes stay. */
		router_remove_owner(declared, p);
		if (rc == -2) {
			snprintf(msg, msglen, "[%s] %s: out of memory checking its declared routes",
			         p->section, p->path);
			return -2;
		}
		holder = router_holder(declared, method, pattern);
		hs = holder ? settings_of(h, holder) : NULL;
		if (!hs) {
			snprintf(msg, msglen, "[%s] %s: %s", p->section, p->path, err);
			return 1;
		}
		if (!strcmp(holder->desc->name, p->desc->name))
			snprintf(tail, sizeof tail, "plugin '%s' registers fixed routes, so a second "
			                            "instance of it fails at start",
			         p->desc->name);
		else
			snprintf(tail, sizeof tail, "both declare it, so the init of the one started "
			                            "second would fail");
		snprintf(msg, msglen, "[%s] %s: %s %s plugin '%s' ([%s] at %s:%d, %s): %s", p->section,
		         p->path, err, strstr(err, "already registered") ? "by" : "of", holder->name,
		         holder->section, hs->file, hs->line, holder->path, tail);
		return 1;
	}
	return 0;
}

int plugins_check_instances(host *h, diag *d, FILE *out)
{
	size_t before = diag_count(d);
	router *declared = router_new();

	if (!declared) {
		diag_add(d, NULL, 0, "out of memory checking the plugins' declared routes");
		return -1;
	}
	for (size_t i = 0; i < h->nplugins; i++) {
		const plugin_settings *ps;
		char msg[1024];
		int rc = plugins_route_clash(h, declared, i, &ps, msg, sizeof msg);

		if (!rc)
			continue;
		if (h->plugins[i]->required || rc == -2)
			diag_add(d, ps->file, ps->line, "%s", msg);
		else
			fprintf(out, "%s:%d: %s (required = false: the start goes on without it)\n",
			        ps->file, ps->line, msg);
	}
	router_free(declared);
	return diag_count(d) == before ? 0 : -1;
}

const char *plugin_state_name(plugin_state s)
{
	switch (s) {
	case PLUGIN_LOADED: return "loaded";
	case PLUGIN_INITIALIZING: return "initializing";
	case PLUGIN_RUNNING: return "running";
	case PLUGIN_DRAINING: return "draining";
	case PLUGIN_STOPPED: return "stopped";
	case PLUGIN_FAILED: return "failed";
	}
	return "unknown";
}

/* Say "not a shared object" ourselves rather than quoting dlerror's
 * "invalid ELF header", which admins misread as a corrupt install. *st: the
 * file, as stat() found it. */
static int check_elf(const char *path, struct stat *st, char *err, size_t errlen)
{
	unsigned char magic[4] = {0};
	int fd;
	ssize_t n;

	if (stat(path, st) != 0) {
		snprintf(err, errlen, "%s: cannot open plugin: %s", path, strerror(errno));
		return -1;
	}
	if (!S_ISREG(st->st_mode)) {
		snprintf(err, errlen, "%s: not a regular file", path);
		return -1;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(err, errlen, "%s: cannot open plugin: %s", path, strerror(errno));
		return -1;
	}
	n = read(fd, magic, sizeof magic);
	close(fd);
	if (n != 4 || memcmp(magic, "\177ELF", 4) != 0) {
		snprintf(err, errlen, "%s: not a shared object (no ELF header); expected a plugin built with EVH_PLUGIN()",
		         path);
		return -1;
	}
	return 0;
}

/* A plugin built for another ABI major exports evh_plugin_entry_vN for its N;
 * look for a few so the message can say which ABI the file was built for. */
static int find_other_abi(void *dl)
{
	char sym[32];
	for (int v = 0; v <= 16; v++) {
		if (v == EVH_ABI_MAJOR)
			continue;
		snprintf(sym, sizeof sym, "evh_plugin_entry_v%d", v);
		if (dlsym(dl, sym))
			return v;
	}
	return -1;
}

static int valid_plugin_name(const char *name)
{
	if (!name || !*name || strlen(name) > 64)
		return 0;
	for (const char *c = name; *c; c++)
		if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_' || *c == '-'))
			return 0;
	return 1;
}

/* A key of a configuration schema: '.'-separated parts of letters, digits,
 * '_' and '-' (a section name's characters), or a part that is '*' alone (a
 * family, see cfg_key_matches). Many other names no line of the section
 * could set as declared: inih ends a key at '=' or ':' and trims the spaces
 * around it, takes a ';' or '#' after a space for a comment and a line
 * starting with '[' for a section header; an empty part matches only a key
 * written with two dots in a row; a '*' inside a part is no pattern to
 * cfg_key_matches but is one to plugin_configure, which skips its default.
 * The rest (a space inside a name, say) go with them, for one rule that a
 * plugin's author can read in a line. */
static int valid_schema_key(const char *name)
{
	static const char part_chars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	                                  "0123456789_-";
	for (const char *s = name;; s++) {
		size_t n = strcspn(s, ".");
		if (!(n == 1 && *s == '*') && (n == 0 || strspn(s, part_chars) < n))
			return 0;
		s += n;
		if (!*s)
			return 1;
	}
}

/* At most 40 bytes of `s` for a message line, each byte that is not
 * printable ASCII as \xNN: a key with a newline in it must not make a line
 * of its own. `out` holds 4 * 40 + 4 bytes. */
static const char *printable(const char *s, char *out)
{
	char *o = out;
	size_t i;

	for (i = 0; s[i] && i < 40; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x20 && c < 0x7f && c != '\\')
			*o++ = (char)c;
		else
			o += sprintf(o, "\\x%02x", c);
	}
	strcpy(o, s[i] ? "..." : "");
	return out;
}

static const char *check_descriptor(const evh_plugin_desc *d, char *buf, size_t len)
{
	if (!d)
		return "entry returned no descriptor";
	if (d->struct_size < DESC_MIN_SIZE) {
		snprintf(buf, len, "descriptor is %u bytes, expected at least %zu", d->struct_size,
		         (size_t)DESC_MIN_SIZE);
		return buf;
	}
	if (d->abi_major != EVH_ABI_MAJOR) {
		snprintf(buf, len, "built for ABI %u.%u, this host supports ABI %d.0 to %d.%d",
		         d->abi_major, d->abi_minor, EVH_ABI_MAJOR, EVH_ABI_MAJOR, EVH_ABI_MINOR);
		return buf;
	}
	if (d->abi_minor > EVH_ABI_MINOR) {
		snprintf(buf, len, "needs ABI %u.%u, this host provides %d.%d (upgrade evhost)",
		         d->abi_major, d->abi_minor, EVH_ABI_MAJOR, EVH_ABI_MINOR);
		return buf;
	}
	if (!d->name)
		return "descriptor has no name";
	if (!valid_plugin_name(d->name)) {
		snprintf(buf, len, "descriptor name '%.80s%s' is not [a-z0-9_-]{1,64}", d->name,
		         strlen(d->name) > 80 ? "..." : "");
		return buf;
	}
	if (!d->init)
		return "descriptor has no init function";
	/* Each key once, and one that a line of the section can set. Of a name
	 * listed twice the host would take the first entry's type and the last
	 * one's default, and say a required one is missing twice; a name that
	 * is not a key (valid_schema_key) would be refused as unknown, or read
	 * as a syntax error, wherever an admin set it. Entries are counted from
	 * 1, as a reader of the array counts them. */
	for (const evh_config_key *k = d->config; k && k->name; k++) {
		size_t at = (size_t)(k - d->config) + 1;
		char shown[4 * 40 + 4];
		if (!*k->name) {
			snprintf(buf, len, "its configuration schema's entry %zu has an empty name: a "
			                   "plugin bug, rebuild it",
			         at);
			return buf;
		}
		if (!valid_schema_key(k->name)) {
			snprintf(buf, len, "its configuration schema's entry %zu, '%s', is not a key "
			                   "name (letters, digits, '_' and '-' in parts separated by "
			                   "'.', or a part '*' alone): a plugin bug, rebuild it",
			         at, printable(k->name, shown));
			return buf;
		}
		/* Another type would be refused at the admin's own line, as "the
		 * plugin's schema declares an unknown type", whatever was set (a
		 * required key: no configuration could ever pass). */
		if (k->type < EVH_CFG_STRING || k->type > EVH_CFG_DIR) {
			snprintf(buf, len, "its configuration schema's entry %zu, '%s', has type %d, "
			                   "which this host does not know: a plugin bug, rebuild it",
			         at, printable(k->name, shown), (int)k->type);
			return buf;
		}
		for (const evh_config_key *o = d->config; o < k; o++)
			if (!strcmp(o->name, k->name)) {
				snprintf(buf, len, "its configuration schema lists '%s' twice (entries %zu "
				                   "and %zu): a plugin bug, rebuild it",
				         printable(k->name, shown), (size_t)(o - d->config) + 1, at);
				return buf;
			}
	}
	/* A default the host could not read as its type would be read as 0 (or
	 * false) by evh_config_int (bool) without a word, whatever was meant.
	 * An empty one is "none": evh_config_int's own default then. */
	for (const evh_config_key *k = d->config; k && k->name; k++) {
		const char *msg;
		if (!k->default_value || !*k->default_value || k->type == EVH_CFG_PATH ||
		    k->type == EVH_CFG_FILE ||
		    k->type == EVH_CFG_DIR || !(msg = cfg_check_value(k->type, k->default_value)))
			continue;
		snprintf(buf, len, "its configuration schema's default for '%.64s' is not valid: %s, "
		                   "got '%.64s'",
		         k->name, msg, k->default_value);
		return buf;
	}
	for (const evh_config_key *k = d->config; k && k->name; k++)
		for (const char *const *o = host_owned_keys; *o; o++)
			if (!strcmp(k->name, *o)) {
				snprintf(buf, len,
				         "its configuration schema declares '%s', a key of the host's "
				         "(enabled, required, path, group, log_level): rename it",
				         k->name);
				return buf;
			}
	return NULL;
}

/* The libraries plugins hold, each with the descriptor its entry returned
 * and the file it was loaded from. A library that is loaded already (by
 * another [plugin.*] section with the same file, or by the running instance
 * while a reload opens its successor) is not entered again: the entry writes
 * the library's evh__api, which the running instance's threads read. Main
 * thread only (plugin_open, plugin_destroy).
 *
 * A plugin file replaced by a new build (install(1), mv, a package upgrade:
 * a new inode at the same path) is loaded beside the old one, so that a
 * reload can check it and restart the plugin with it. dlopen() would hand
 * back the old build for the same path (glibc matches loaded libraries by
 * name first), so the new file is opened and loaded by the name of its
 * descriptor, /proc/self/fd/N, which is held open while the library is
 * loaded: no other library can be loaded under that name meanwhile. */
typedef struct loaded_lib {
	void *dl;
	const evh_plugin_desc *desc;
	dev_t dev; /* the file loaded */
	ino_t ino;
	off_t size;
	struct timespec mtime;
	int fd;            /* -1, or the descriptor it was loaded by (see above) */
	int watch;         /* -1, or a descriptor on its file (fd, or one of its own), to
	                    * see the file written over in place (loaded_changed) */
	char name[PATH_MAX]; /* what it was loaded by: the path, or /proc/self/fd/<fd> */
	int changed;       /* its file was seen changed in place: never called again */
	unsigned refs;     /* plugins holding dl */
	struct loaded_lib *next;
} loaded_lib;
static loaded_lib *loaded_libs;

static loaded_lib *loaded_find(void *dl)
{
	for (loaded_lib *l = loaded_libs; l; l = l->next)
		if (l->dl == dl)
			return l;
	return NULL;
}

static loaded_lib *loaded_find_file(const struct stat *st)
{
	for (loaded_lib *l = loaded_libs; l; l = l->next)
		if (l->dev == st->st_dev && l->ino == st->st_ino)
			return l;
	return NULL;
}

/* A descriptor on the file at `path` if it is still the file `st` describes
 * (the one just loaded from there), else -1. */
static int open_same(const char *path, const struct stat *st)
{
	struct stat now;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0 && (fstat(fd, &now) != 0 || now.st_dev != st->st_dev ||
	                now.st_ino != st->st_ino)) {
		close(fd);
		fd = -1;
	}
	return fd;
}

/* Whether the file `l` was loaded from was written over in place since
 * (cp onto it, a compiler's output): the truncation took even the
 * library's relocated pages, which now read as the file's bytes, so its
 * function pointers (its descriptor's init and fini, its destructors) point
 * nowhere, and its code may be another build's. Nothing in it is called
 * again once this is seen. A file replaced by install(1) or mv is another
 * file and leaves the loaded one as it was. */
static int loaded_changed(loaded_lib *l)
{
	struct stat st;
	if (!l->changed && l->watch >= 0 && fstat(l->watch, &st) == 0 &&
	    (st.st_size != l->size || st.st_mtim.tv_sec != l->mtime.tv_sec ||
	     st.st_mtim.tv_nsec != l->mtime.tv_nsec))
		l->changed = 1;
	return l->changed;
}

int plugins_changed_loaded(void)
{
	for (loaded_lib *l = loaded_libs; l; l = l->next)
		if (loaded_changed(l))
			return 1;
	return 0;
}

/* One more plugin holds dl (`l`: its record, if it has one), loaded by
 * `name` from the file `st` describes (through descriptor `fd`, or -1).
 * Returns the record, or NULL without memory for a new one. */
static loaded_lib *loaded_hold(loaded_lib *l, void *dl, const evh_plugin_desc *desc,
                               const char *name, const struct stat *st, int fd)
{
	if (!l) {
		l = calloc(1, sizeof *l);
		if (!l)
			return NULL;
		l->dl = dl;
		l->desc = desc;
		l->dev = st->st_dev;
		l->ino = st->st_ino;
		l->size = st->st_size;
		l->mtime = st->st_mtim;
		l->fd = fd;
		l->watch = fd >= 0 ? fd : open_same(name, st);
		snprintf(l->name, sizeof l->name, "%s", name);
		l->next = loaded_libs;
		loaded_libs = l;
	}
	l->refs++;
	return l;
}

/* A plugin lets go of dl: dlclose, and the record and its descriptors go
 * with the last one. Under ASan the code stays mapped so that leak reports
 * can symbolize frames from the plugin; its record stays too, so that a
 * later open knows which file that mapping came from. A library whose file
 * was written over stays loaded and recorded too: dlclose would run its
 * destructors. */
static void loaded_release(void *dl)
{
	for (loaded_lib **pp = &loaded_libs; *pp; pp = &(*pp)->next) {
		loaded_lib *l = *pp;
		if (l->dl != dl)
			continue;
		if (l->refs)
			l->refs--;
#if !defined(__SANITIZE_ADDRESS__)
		if (loaded_changed(l))
			return;
		dlclose(dl);
		if (l->refs == 0) {
			*pp = l->next;
			if (l->watch >= 0 && l->watch != l->fd)
				close(l->watch);
			if (l->fd >= 0)
				close(l->fd);
			free(l);
		}
#endif
		return;
	}
}

/* What load_file loaded: the library, the name it was loaded by, and the
 * descriptor that name refers to (-1: loaded by its path). */
typedef struct loaded_file {
	void *dl;
	int fd;
	char name[PATH_MAX];
} loaded_file;

/* A library named `name` and loaded from the file `l` records, if it still
 * is (another reference to it), else NULL. */
static void *reopen(const loaded_lib *l)
{
	void *dl = dlopen(l->name, RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
	if (dl && dl != l->dl) {
		dlclose(dl);
		dl = NULL;
	}
	return dl;
}

/* dlopen() the plugin file at `path`, which is `st` now: the library loaded
 * from that very file if there is one, else the file, by its path or, when
 * a library of that path from another file is loaded, by a descriptor (see
 * loaded_lib). 0, or -1 with the reason in err. */
static int load_file(const char *path, const struct stat *st, loaded_file *f, char *err,
                     size_t errlen)
{
	loaded_lib *l = loaded_find_file(st);
	void *dl;
	f->fd = -1;
	snprintf(f->name, sizeof f->name, "%s", path);
	if (l && (l->changed || l->size != st->st_size || l->mtime.tv_sec != st->st_mtim.tv_sec ||
	          l->mtime.tv_nsec != st->st_mtim.tv_nsec)) {
		/* The loaded build's code and tables are mapped from this file, so
		 * they changed with it: not a library to look a symbol up in (ld.so
		 * crashed doing so after a cp) nor to keep calling. */
		l->changed = 1;
		snprintf(err, errlen,
		         "%s was written over in place while loaded (cp onto it?): the running "
		         "build's code changed under it and may crash; restart evhostd to load the "
		         "new file, and install plugin files with install(1) or mv, which replace "
		         "the file",
		         path);
		return -1;
	}
	if (l && (f->dl = reopen(l))) {
		snprintf(f->name, sizeof f->name, "%s", l->name);
		return 0;
	}
	dl = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
	if (dl) {
		/* Loaded by this path from another file: the file was replaced. */
		dlclose(dl);
		if ((f->fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
			snprintf(err, errlen, "%s: cannot load: %s", path, strerror(errno));
			return -1;
		}
		snprintf(f->name, sizeof f->name, "/proc/self/fd/%d", f->fd);
	}
	dlerror();
	if (!(f->dl = dlopen(f->name, RTLD_NOW | RTLD_LOCAL))) {
		snprintf(err, errlen, "%s: cannot load: %s", path, dlerror());
		if (f->fd >= 0)
			close(f->fd);
		return -1;
	}
	return 0;
}

/* Undo load_file for a plugin that was not made. A descriptor whose name
 * glibc now also gives a library held by others stays open (a name must
 * not outlive its descriptor while it names a loaded library). */
static void unload_file(loaded_file *f)
{
	int held = loaded_find(f->dl) != NULL;
	dlclose(f->dl);
	if (f->fd >= 0 && !held)
		close(f->fd);
}

int plugin_same_build(const evh_plugin *a, const evh_plugin *b)
{
	return a->dl == b->dl;
}

/* A new plugin `p` (zeroed), which holds `dl` already, takes its settings;
 * destroyed (letting go of dl) when memory runs out (*oom set, if given). */
static evh_plugin *plugin_fill(evh_plugin *p, host *h, const plugin_settings *ps, void *dl,
                               const evh_plugin_desc *desc, char *err, size_t errlen, int *oom)
{
	log_budget_init(&p->log_budget, ps->name);
	p->host = h;
	p->dl = dl;
	p->desc = desc;
	p->required = ps->required;
	p->log_level = ps->log_level;
	p->status = PLUGIN_LOADED;
	if (!(p->name = strdup(ps->name)) || !(p->section = strdup(ps->section)) ||
	    !(p->path = strdup(ps->path)) || !(p->group = strdup(ps->group))) {
		snprintf(err, errlen, "%s: out of memory", ps->path);
		plugin_destroy(p);
		if (oom)
			*oom = 1;
		return NULL;
	}
	return p;
}

evh_plugin *plugin_open(host *h, const plugin_settings *ps, char *err, size_t errlen, int *oom)
{
	char buf[512];
	const char *why;
	evh_plugin_entry_fn entry;
	const evh_plugin_desc *desc;
	loaded_lib *known;
	loaded_file f;
	evh_plugin *p;
	struct stat st;
	int no_oom, routes_rc = 0;

	if (!oom)
		oom = &no_oom;
	*oom = 0;
	if (check_elf(ps->path, &st, err, errlen) != 0 || load_file(ps->path, &st, &f, err, errlen))
		return NULL;
	*(void **)&entry = dlsym(f.dl, EVH_PLUGIN_ENTRY_SYMBOL);
	if (!entry) {
		int other = find_other_abi(f.dl);
		if (other >= 0)
			snprintf(err, errlen,
			         "%s: built for ABI %d (exports evh_plugin_entry_v%d), this host supports ABI %d (%s)",
			         ps->path, other, other, EVH_ABI_MAJOR, EVH_PLUGIN_ENTRY_SYMBOL);
		else
			snprintf(err, errlen,
			         "%s: no symbol %s; not an evhost plugin (write it with EVH_PLUGIN())",
			         ps->path, EVH_PLUGIN_ENTRY_SYMBOL);
		unload_file(&f);
		return NULL;
	}
	known = loaded_find(f.dl);
	if (known && f.fd >= 0 && fstat(f.fd, &st) == 0) {
		/* glibc found the file loaded already, under a record that did not
		 * know it: the file was replaced while it was first loaded. The
		 * record learns its file; the descriptor stays open (see
		 * unload_file), held by the record if it has none. */
		known->dev = st.st_dev;
		known->ino = st.st_ino;
		known->size = st.st_size;
		known->mtime = st.st_mtim;
		if (known->watch >= 0 && known->watch != known->fd)
			close(known->watch);
		known->watch = f.fd; /* its file now */
		if (known->fd < 0) {
			known->fd = f.fd;
			snprintf(known->name, sizeof known->name, "%s", f.name);
		}
	}
	/* Entered again once every holder had let go (the library may have been
	 * unloaded and loaded again meanwhile). */
	desc = known && known->refs ? known->desc : entry(host_api());
	if (known)
		known->desc = desc;
	why = check_descriptor(desc, buf, sizeof buf);
	if (!why && (routes_rc = check_declared_routes(desc, buf, sizeof buf)) != 0)
		why = buf;
	p = why ? NULL : calloc(1, sizeof *p);
	if (!p || !loaded_hold(known, f.dl, desc, f.name, &st, f.fd)) {
		snprintf(err, errlen, "%s: %s", ps->path, why ? why : "out of memory");
		*oom = !why || routes_rc == -2;
		free(p);
		unload_file(&f);
		return NULL;
	}
	return plugin_fill(p, h, ps, f.dl, desc, err, errlen, oom);
}

static int cfg_set(evh_plugin *p, const char *key, const char *value)
{
	for (size_t i = 0; i < p->ncfg; i++) {
		if (strcmp(p->cfg_keys[i], key) == 0) {
			char *v = strdup(value);
			if (!v)
				return -1;
			free(p->cfg_values[i]);
			p->cfg_values[i] = v;
			return 0;
		}
	}
	char **k = realloc(p->cfg_keys, (p->ncfg + 1) * sizeof *k);
	if (!k)
		return -1;
	p->cfg_keys = k;
	char **v = realloc(p->cfg_values, (p->ncfg + 1) * sizeof *v);
	if (!v)
		return -1;
	p->cfg_values = v;
	p->cfg_keys[p->ncfg] = strdup(key);
	p->cfg_values[p->ncfg] = strdup(value);
	if (!p->cfg_keys[p->ncfg] || !p->cfg_values[p->ncfg]) {
		free(p->cfg_keys[p->ncfg]);
		free(p->cfg_values[p->ncfg]);
		return -1;
	}
	p->ncfg++;
	return 0;
}

evh_plugin *plugin_reopen(const evh_plugin *p, char *err, size_t errlen)
{
	plugin_settings ps = {.name = p->name,
	                      .section = p->section,
	                      .required = p->required,
	                      .path = p->path,
	                      .group = p->group,
	                      .log_level = p->log_level};
	/* From the library `p` holds, not from its path: a reload may have
	 * installed a new build there (the one whose init then failed). */
	loaded_lib *l = loaded_find(p->dl);
	void *dl = l && !loaded_changed(l) ? reopen(l) : NULL;
	evh_plugin *n;
	if (l && l->changed) {
		snprintf(err, errlen, "%s: the build that ran was written over in place while "
		                      "loaded: its code changed under it",
		         p->path);
		return NULL;
	}
	if (!dl) {
		snprintf(err, errlen, "%s: the build that ran is not loaded", p->path);
		return NULL;
	}
	if (!(n = calloc(1, sizeof *n))) {
		dlclose(dl);
		snprintf(err, errlen, "%s: out of memory", p->path);
		return NULL;
	}
	l->refs++;
	if (!(n = plugin_fill(n, p->host, &ps, dl, l->desc, err, errlen, NULL)))
		return NULL;
	for (size_t i = 0; i < p->ncfg; i++)
		if (cfg_set(n, p->cfg_keys[i], p->cfg_values[i]) != 0)
			goto oom;
	if (p->signature && !(n->signature = strdup(p->signature)))
		goto oom;
	return n;
oom:
	snprintf(err, errlen, "%s: out of memory", p->path);
	plugin_destroy(n);
	return NULL;
}

static const evh_config_key *schema_find(const evh_config_key *schema, const char *key)
{
	for (const evh_config_key *k = schema; k && k->name; k++)
		if (cfg_key_matches(k->name, key))
			return k;
	return NULL;
}

/* A relative PATH value means "relative to the file that said it", which is
 * what an admin editing conf.d/30-x.conf expects. */
static char *resolve_path(const char *value, const char *file)
{
	const char *slash;
	char *out;
	size_t dirlen;

	if (!*value || value[0] == '/' || !file || !(slash = strrchr(file, '/')))
		return strdup(value);
	dirlen = (size_t)(slash - file);
	out = malloc(dirlen + 1 + strlen(value) + 1);
	if (out)
		sprintf(out, "%.*s/%s", (int)dirlen, file, value);
	return out;
}

/* EVH_CFG_FILE and EVH_CFG_DIR: the file or directory must be there and
 * readable now, so that the admin hears of it from --check-config, at its
 * line, not from the plugin's init at the next start. A default (`e` NULL)
 * is said at the plugin's section header. */
static void check_file(const evh_plugin *p, const cfg *c, const cfg_entry *e,
                       const evh_config_key *k, const char *path, diag *d)
{
	struct stat st;
	int want_dir = k->type == EVH_CFG_DIR;
	const cfg_section *sec = e ? NULL : cfg_section_find(c, p->section);
	const char *file = e ? e->file : sec ? sec->file : NULL;
	const char *dflt = e ? "" : " (its default: set it)";
	int line = e ? e->line : sec ? sec->line : 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);

	if (fd < 0) {
		diag_add(d, file, line, "[%s] %s: cannot read '%s'%s: %s", p->section, k->name, path,
		         dflt, strerror(errno));
		return;
	}
	if (fstat(fd, &st) == 0 && (want_dir ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode)))
		diag_add(d, file, line, "[%s] %s: '%s'%s is not a %s", p->section, k->name, path, dflt,
		         want_dir ? "directory" : "regular file");
	close(fd);
}

static int is_host_owned(const char *key)
{
	for (const char *const *o = host_owned_keys; *o; o++)
		if (!strcmp(*o, key))
			return 1;
	return 0;
}

static int is_path_type(const evh_config_key *k)
{
	return k->type == EVH_CFG_PATH || k->type == EVH_CFG_FILE || k->type == EVH_CFG_DIR;
}

char *plugin_entry_value(const evh_plugin *p, const cfg_entry *e)
{
	const evh_config_key *k =
	    is_host_owned(e->key) ? NULL : schema_find(p->desc->config, e->key);
	return k && is_path_type(k) ? resolve_path(e->value, e->file) : strdup(e->value);
}

int plugin_configure(evh_plugin *p, const cfg *c, diag *d)
{
	size_t before = diag_count(d);

	cfg_validate_section(c, p->section, p->desc->config, host_owned_keys, d);
	for (const evh_config_key *k = p->desc->config; k && k->name; k++)
		if (k->default_value && !strchr(k->name, '*') && cfg_set(p, k->name, k->default_value))
			goto oom;
	for (size_t i = 0; i < c->n; i++) {
		const cfg_entry *e = &c->v[i];
		const evh_config_key *k;

		if (strcmp(e->section, p->section) != 0)
			continue;
		if (is_host_owned(e->key) || !(k = schema_find(p->desc->config, e->key)))
			continue;
		if (is_path_type(k)) {
			char *path = resolve_path(e->value, e->file);
			int rc = path ? cfg_set(p, e->key, path) : -1;
			if (!rc && k->type != EVH_CFG_PATH && *e->value)
				check_file(p, c, e, k, path, d);
			free(path);
			if (rc)
				goto oom;
		} else if (cfg_set(p, e->key, e->value)) {
			goto oom;
		}
	}
	for (const evh_config_key *k = p->desc->config; k && k->name; k++)
		if ((k->type == EVH_CFG_FILE || k->type == EVH_CFG_DIR) && k->default_value &&
		    *k->default_value && !strchr(k->name, '*') && !cfg_find(c, p->section, k->name))
			check_file(p, c, NULL, k, k->default_value, d);
	return diag_count(d) == before ? 0 : -1;
oom:
	diag_add(d, NULL, 0, "[%s]: out of memory", p->section);
	return -2;
}

/* The check's place to report to, while it runs. */
struct plugin_checking {
	const cfg *c;
	diag *d;
	const char *file; /* the section's header */
	int line;
	size_t errors;
};

/* The descriptor's check: a plugin built for ABI 1.7 or later whose
 * descriptor reaches the slot (before 1.7 it was reserved[0], not ours to
 * read as a function). */
static int (*desc_check(const evh_plugin_desc *d))(evh_plugin *)
{
	if (d->abi_minor < 7 ||
	    d->struct_size < offsetof(evh_plugin_desc, check) + sizeof d->check)
		return NULL;
	return d->check;
}

int plugin_check_report(evh_plugin *p, const char *key, const char *msg)
{
	struct plugin_checking *k = p->checking;
	const cfg_entry *e;

	if (!k)
		return 0;
	e = key ? cfg_find(k->c, p->section, key) : NULL;
	k->errors++;
	if (key)
		diag_add(k->d, e ? e->file : k->file, e ? e->line : k->line, "[%s] %s: %s", p->section,
		         key, msg);
	else
		diag_add(k->d, k->file, k->line, "[%s] %s", p->section, msg);
	return 1;
}

int plugin_check(evh_plugin *p, const cfg *c, const char *section_file, int section_line,
                 diag *d)
{
	struct plugin_checking k = {c, d, section_file, section_line, 0};
	int (*check)(evh_plugin *) = desc_check(p->desc);
	int rc;

	if (!check)
		return 0;
	p->last_error[0] = '\0';
	p->checking = &k;
	crash_enter_call(p->name, "check");
	rc = check(p);
	crash_leave();
	p->checking = NULL;
	if (rc != EVH_OK && !k.errors)
		/* Failed without saying which key: its last ERROR line, if any. */
		diag_add(d, section_file, section_line, "[%s] the plugin's check failed (%s)%s%s",
		         p->section, host_strerror(rc), p->last_error[0] ? ": " : "", p->last_error);
	p->last_error[0] = '\0';
	if (rc == EVH_ENOMEM)
		return -2;
	return rc == EVH_OK && !k.errors ? 0 : -1;
}

static int make_dir(const char *path, char *err, size_t errlen)
{
	if (mkdir(path, 0750) == 0 || errno == EEXIST)
		return 0;
	snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
	return -1;
}

int plugin_start(evh_plugin *p, char *err, size_t errlen)
{
	const settings *s = &p->host->set;
	char dberr[512], *db;
	evh_tx *left;
	size_t len;
	int rc;

	len = strlen(s->state_dir) + strlen(p->name) + 8;
	p->state_dir = malloc(len);
	db = malloc(len + 4);
	if (!p->state_dir || !db) {
		free(db);
		snprintf(err, errlen, "plugin '%s': out of memory", p->name);
		return -1;
	}
	snprintf(p->state_dir, len, "%s/%s", s->state_dir, p->name);
	snprintf(db, len + 4, "%s/%s.db", s->state_dir, p->name);
	if (make_dir(s->state_dir, err, errlen) || make_dir(p->state_dir, err, errlen)) {
		free(db);
		return -1;
	}
	if (store_open(&p->store, db, s->store_synchronous, dberr, sizeof dberr) != 0) {
		snprintf(err, errlen, "plugin '%s': storage: %s", p->name, dberr); /* names db */
		free(db);
		return -1;
	}
	free(db);
	store_set_outbox_limit(p->store, s->outbox_max_rows);

	p->last_error[0] = '\0';
	p->status = PLUGIN_INITIALIZING;
	p->inited = 1; /* fini is owed even if init fails: it cleans up half-built state */
	atomic_store(&p->init_returned, 0);
	p->init_thread = pthread_self();
	crash_enter_call(p->name, "init");
	rc = p->desc->init(p, &p->state);
	crash_leave();
	atomic_store(&p->init_returned, 1);
	if ((left = store_tx_left_open(p->store))) {
		/* The database stays locked while it is open: nothing else of the
		 * plugin's could write, and the stop would wait for it for good. */
		do
			store_tx_rollback(left);
		while ((left = store_tx_left_open(p->store)));
		p->status = PLUGIN_FAILED;
		snprintf(err, errlen, "%s: plugin '%s' init returned with a transaction it began "
		                      "still open (no evh_tx_commit or evh_tx_rollback): rolled back, "
		                      "and the plugin is not started",
		         p->path, p->name);
		return -1;
	}
	if (rc != EVH_OK) {
		p->status = PLUGIN_FAILED;
		snprintf(err, errlen, "%s: plugin '%s' init failed (%s)%s%s", p->path, p->name,
		         host_strerror(rc), p->last_error[0] ? ": " : "", p->last_error);
		return -1;
	}
	return 0;
}

void plugin_destroy(evh_plugin *p)
{
	loaded_lib *l;
	if (!p)
		return;
	l = p->dl ? loaded_find(p->dl) : NULL;
	if (p->inited && l && loaded_changed(l))
		log_warn("host", "plugin '%s': %s was written over in place while loaded: its fini "
		                 "is not called (its code changed under it)",
		         p->name, p->path);
	else if (p->inited && p->desc->fini) {
		evh_tx *left;
		/* evh_stopping says 1 from the stop's first moment: also when no
		 * drain came before (init failed, a start or reload left the
		 * plugin out), or a fini joining a thread that loops until then
		 * would wait for ever. */
		atomic_store(&p->winding_down, 1);
		crash_enter_call(p->name, "fini");
		p->in_fini = 1;
		p->desc->fini(p, p->state);
		p->in_fini = 0;
		crash_leave();
		if ((left = store_tx_left_open(p->store))) {
			do /* or closing the store would wait for it */
				store_tx_rollback(left);
			while ((left = store_tx_left_open(p->store)));
			log_error("host", "plugin '%s': fini returned with a transaction it began "
			                  "still open: rolled back",
			          p->name);
		}
	}
	api_plugin_gone(p);
	log_budget_fini(&p->log_budget);
	if (p->store)
		store_close(p->store);
	for (size_t i = 0; i < p->nsubs; i++) {
		free(p->subs[i].topic);
		free(p->subs[i].type);
	}
	free(p->subs);
	for (size_t i = 0; i < p->ncfg; i++) {
		free(p->cfg_keys[i]);
		free(p->cfg_values[i]);
	}
	free(p->cfg_keys);
	free(p->cfg_values);
	if (p->dl && !api_plugin_called_late(p)) /* else a thread of its may run its code */
		loaded_release(p->dl);
	free(p->state_dir);
	free(p->signature);
	free(p->section);
	free(p->path);
	free(p->group);
	if (p->inited) {
		api_plugin_bury(p); /* keeps p and its name */
		return;
	}
	free(p->name);
	free(p);
}
