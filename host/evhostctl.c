/* evhostctl: the operator's client of evhostd's admin API (see admin.h).
 *
 * It reads the daemon's own configuration with config.c (the same parser
 * and merge rules as evhostd, so [http] listen, [admin] token_file and the
 * conf.d directory are found exactly where the daemon finds them), talks
 * HTTP with libcurl, and turns plugins on and off by writing a conf.d
 * drop-in and asking the daemon to reload (POST /admin/reload), the way an
 * admin would by hand. One line per error on stderr, "evhostctl: ...";
 * the exit status tells scripts what kind of failure it was (EXIT_*). */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "clock.h"
#include "config.h"
#include "diag.h"
#include "fileio.h"
#include "json.h"
#include "jsonb.h"
#include "jwt.h"
#include "rfc3339.h"
#include "textbuf.h"

enum {
	EXIT_OK = 0,
	EXIT_FAILED = 1,      /* the daemon said no, plugin not found, reload refused */
	EXIT_USAGE = 2,       /* bad command line */
	EXIT_UNREACHABLE = 3, /* no HTTP answer from the daemon */
	EXIT_AUTH = 4,        /* token refused (401) or unreadable */
};

#define BODY_MAX (64L * 1024 * 1024)
#define BODY_MAX_TEXT "64 MiB"
#define CONNECT_TIMEOUT_S 5L
/* Dead-letter reads take up to 15 s, redrives 30 s, a reload 60 s. */
#define REQUEST_TIMEOUT_S 90L
#define BACKUP_TIMEOUT_S 3600L /* a backup copies every plugin's database */
#define RELOAD_TIMEOUT_S 60L
#define POLL_MS 200
#define LOCK_POLL_MS 20
#define LOCK_HOLDER_MAX 256 /* "process PID (command line)", cut there */
#define NAME_MAX_LEN 64
#define URL_MAX 80 /* listen_url's: "http://[" an IPv6 address "]:65535" */
#define DLQ_LIST_LIMIT 1000
#define DLQ_SHOW_LIMIT 10
#define DROPIN_PREFIX "90-evhostctl-"
#define RELOAD_PENDING (-1) /* the daemon's reload outlasted its answer: poll */

typedef struct opts {
	const char *conf, *url, *token_file, *from, *plugin, *aggregate;
	const char *after; /* events: a seq; dlq list/show/redrive --all: a dead-letter id */
	const char *topics[32];
	size_t ntopics;
	long limit;   /* -1: the command's default */
	long timeout; /* seconds, enable/disable */
	long keep;    /* backup: how many to keep; 0: all */
	int json, all, systemd, keep_inbox;
	int conf_given; /* -c was passed: hints repeat it */
} opts;

typedef struct ctl {
	opts o;
	cfg cfg;
	settings set;
	diag cfg_problems; /* what settings_from_cfg said of the values (key_refused) */
	diag cfg_unread;   /* why a file was not read whole (key_unread) */
	int cfg_loaded;
	char *url;   /* without a trailing slash */
	char *token; /* NULL: the admin API is not configured */
	CURL *curl;
	long request_timeout_s; /* 0: REQUEST_TIMEOUT_S */
	int not_sent; /* the last request() surely did not reach the daemon */
	int told_where; /* say_where_the_daemon_listens said it */
	int whole_config; /* enable/disable: a file not read whole stops them (cmd_toggle) */
} ctl;

typedef struct reply {
	long status;
	char *body;
	size_t len, cap; /* cap: body's size, grown by doubling */
	cJSON *json;     /* the body parsed, when it is JSON */
	const char *stopped; /* why collect() stopped reading the answer, or NULL */
} reply;

/* ------------------------------------------------------------- messages */

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;
	fputs("evhostctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
	va_list ap;
	fputs("evhostctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs(" (see evhostctl --help)\n", stderr);
	return EXIT_USAGE;
}

static void usage(FILE *out)
{
	fprintf(out,
	        "usage: evhostctl [OPTIONS] COMMAND [ARGS]\n"
	        "\n"
	        "Controls a running evhostd through its admin API.\n"
	        "\n"
	        "Commands:\n"
	        "  status                        health and readiness, each plugin's state\n"
	        "  plugins                       the running plugins: state, version, topics\n"
	        "  enable NAME | disable NAME    write conf.d/" DROPIN_PREFIX "NAME.conf, reload,\n"
	        "                                and wait until the plugin runs or is gone\n"
	        "      --timeout SECONDS         how long to wait (default %ld)\n"
	        "      --systemd                 without an admin API: systemctl reload evhostd\n"
	        "  dlq list NAME [--limit N] [--after ID]\n"
	        "                                the plugin's dead letters, one per line, by\n"
	        "                                topic, partition, offset; --after: those after\n"
	        "                                dead letter ID (the footer gives the next)\n"
	        "  dlq show NAME [--limit N] [--after ID]\n"
	        "                                the same with headers and values (default %d)\n"
	        "  dlq redrive NAME --all [--after ID] | ID...\n"
	        "                                send dead letters back to their topic; ID:\n"
	        "                                OFFSET, PARTITION:OFFSET or\n"
	        "                                TOPIC:PARTITION:OFFSET (as dlq list shows);\n"
	        "                                --all --after ID: those after dead letter ID\n"
	        "  replay NAME --from beginning|TIME [--topic T]... [--keep-inbox]\n"
	        "                                rewind the plugin's consumer (TIME: RFC 3339);\n"
	        "                                --keep-inbox: skip events its inbox has (a\n"
	        "                                restored backup catching up)\n"
	        "  events [--plugin NAME [--after SEQ]] [--aggregate KEY] [--limit N]\n"
	        "                                the event log; --after: the plugin's events\n"
	        "                                after that seq (the footer gives the next)\n"
	        "  backup [--keep N]             copy every plugin's database, consistently, into\n"
	        "                                STATE_DIR/backups/TIME/ (restore: operations.md);\n"
	        "                                then remove all but the newest N backups\n"
	        "  sign-out SUBJECT              refuse every token the daemon signed for\n"
	        "                                SUBJECT (a user id) until now\n"
	        "  check                         evhostd --check-config on the configuration\n"
	        "\n"
	        "Options:\n"
	        "  -c, --config FILE    evhostd's configuration (default %s)\n"
	        "      --url URL        the daemon's address, http(s)://HOST[:PORT] (default:\n"
	        "                       from [http] listen)\n"
	        "      --token-file F   the admin token (default: [admin] token_file)\n"
	        "      --json           print the daemon's JSON answers as they are (not\n"
	        "                       with check)\n"
	        "  -h, --help           this text\n"
	        "  -V, --version        the version\n"
	        "\n"
	        "Exit status: 0 done, 1 the operation failed (or its output could not be\n"
	        "written), 2 usage error,\n"
	        "3 the daemon is unreachable, 4 the admin token was refused or is unreadable.\n",
	        RELOAD_TIMEOUT_S, DLQ_SHOW_LIMIT, EVHOST_DEFAULT_CONF);
}

/* -------------------------------------------------------- configuration */

static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Whether `msg`, a problem of cfg_load, is a file or directory evhostctl
 * was denied (config.c says "PATH: cannot read: " and strerror's text):
 * the daemon, another user, may read it (a drop-in root:evhost 0640 to an
 * admin outside group evhost, any 0600 one to evhost-backup.service). */
static int denied_to_us(const char *msg)
{
	static const char *const how[] = {": cannot read: ", ": cannot read directory: "};
	static const int errs[] = {EACCES, EPERM};
	size_t n = strlen(msg);

	for (size_t i = 0; i < sizeof how / sizeof how[0]; i++)
		for (size_t j = 0; j < sizeof errs / sizeof errs[0]; j++) {
			const char *why = strerror(errs[j]);
			size_t w = strlen(how[i]) + strlen(why);
			if (n > w && !strcmp(msg + n - strlen(why), why) &&
			    !strncmp(msg + n - w, how[i], strlen(how[i])))
				return 1;
		}
	return 0;
}

/* The first of the problems of a configuration not read whole that the
 * daemon has too (denied_to_us: not those), else the first. */
static size_t first_unread(const diag *d, int *ours)
{
	for (size_t i = 0; i < d->n; i++)
		if (!denied_to_us(d->msgs[i])) {
			*ours = 0;
			return i;
		}
	*ours = 1;
	return 0;
}

/* Read evhostd's configuration once. Problems that are not ours (a secret
 * the operator may not read, a bad value elsewhere) are ignored: `check`
 * is there for them. An unreadable main file stops us, and so does a bad
 * value of a key we use, once we use it (key_refused): what settings_from_cfg
 * said is kept for that. So does a file not read whole (a syntax error
 * ends its reading there) when a key we use is unset and could have been
 * in what was not read (key_unread); else it is said and we go on: a typo
 * in a drop-in the daemon has not reloaded must not stop `status` or the
 * nightly `backup` (the daemon runs the configuration it read before).
 * Not enable and disable (c->whole_config): they say it themselves. */
static int load_config(ctl *c)
{
	diag d = {0};
	int rc;
	if (c->cfg_loaded)
		return 0;
	rc = cfg_load(&c->cfg, c->o.conf, &d);
	if (rc != 0 && (c->cfg.main_unread || c->cfg.nomem || !d.n)) {
		/* A problem names its file (and line) itself. */
		if (d.n && !c->cfg.nomem)
			say("cannot read the configuration: %s", d.msgs[0]);
		else
			say("cannot read the configuration %s: out of memory", c->o.conf);
		diag_free(&d);
		cfg_free(&c->cfg);
		return -1;
	}
	if (rc != 0 && !c->whole_config) {
		int ours;
		size_t i = first_unread(&d, &ours);
		if (ours)
			say("warning: %s%s (evhostctl, uid %ld, may not read it; the daemon may%s)",
			    d.msgs[i], d.n > 1 ? ", and more" : "", (long)geteuid(),
			    geteuid() != 0 ? ": run evhostctl as root" : "");
		else
			say("warning: %s%s (the daemon refuses this configuration at its next reload "
			    "or start; 'evhostctl check' says all)",
			    d.msgs[i], d.n > 1 ? ", and more" : "");
	}
	if (rc != 0) {
		c->cfg_unread = d;
		d = (diag){0};
	}
	if (settings_from_cfg(&c->cfg, &c->set, &d) == -2) {
		say("cannot read the configuration %s: out of memory", c->o.conf);
		diag_free(&d);
		settings_free(&c->set);
		cfg_free(&c->cfg);
		return -1;
	}
	c->cfg_problems = d;
	c->cfg_loaded = 1;
	return 0;
}

/* Whether a key evhostctl relies on has a value the daemon refuses: where
 * settings_from_cfg could not use it, it left the default in its place
 * (http://127.0.0.1:8080, which may be another daemon's; no token, taken
 * for the admin API off; the conf.d next to the main file), and evhostctl
 * would go on with that. Told by the entry (settings.refused), not by the
 * wording of its problem; said as --check-config says it ("FILE:LINE:
 * [SECTION] KEY: ..."), `then` telling what it stops. Said, 1; else 0. */
static int key_refused(ctl *c, const char *section, const char *key, const char *then)
{
	const cfg_entry *e = cfg_find(&c->cfg, section, key);

	for (size_t i = 0; e && i < c->set.nrefused; i++) {
		const struct refused_key *r = &c->set.refused[i];
		if (r->entry != e)
			continue;
		if (r->problem < c->cfg_problems.n)
			say("%s; %s", c->cfg_problems.msgs[r->problem], then);
		else /* its problem not recorded, for want of memory */
			say("%s:%d: [%s] %s: the daemon refuses its value (evhostctl check says why); %s",
			    e->file, e->line, section, key, then);
		return 1;
	}
	return 0;
}

/* Whether a key evhostctl relies on may have another value in the daemon
 * than in what was read (load_config): a line past where a file's reading
 * stopped sets it (the daemon read that file before the mistake, most
 * likely, and that line with it), or a file that could not be read at all
 * may, where nothing read sets it. `main_only`: a key only the main file
 * sets ([host] confdir, read before the drop-ins). Said with the first
 * problem, `then` telling what it stops: 1; else 0. */
static int key_unread(ctl *c, const char *section, const char *key, int main_only,
                      const char *then)
{
	char where[PATH_MAX + 16];
	int rc;
	if (!c->cfg_unread.n || (main_only && !c->cfg.main_incomplete))
		return 0;
	rc = cfg_unread_sets(&c->cfg, section, key, where, sizeof where);
	if (rc > 0) {
		say("%s sets [%s] %s past a line that could not be read (%s); %s", where, section,
		    key, c->cfg_unread.msgs[0], then);
		return 1;
	}
	if (rc < 0 && !cfg_find(&c->cfg, section, key)) {
		say("%s: [%s] %s may be in what could not be read; %s", c->cfg_unread.msgs[0],
		    section, key, then);
		return 1;
	}
	return 0;
}

/* xasprintf's text, or NULL out of memory (said by the caller): for a
 * request, whose caller may have to undo what it wrote when it cannot be
 * made. From malloc, so that the out-of-memory tests can fail it. */
static char *try_asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *try_asprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;
	int n;
	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || !(s = malloc((size_t)n + 1)))
		return NULL;
	va_start(ap, fmt);
	vsnprintf(s, (size_t)n + 1, fmt, ap);
	va_end(ap);
	return s;
}

static char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s = NULL;
	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	va_end(ap);
	if (!s) {
		say("out of memory");
		exit(EXIT_FAILED);
	}
	return s;
}

/* Whether --url is http(s)://HOST[:PORT] with an optional path (a proxy's
 * prefix), as libcurl reads it. Anything else ("notaurl", "ftp://...",
 * "localhost:8080") would only be refused by libcurl at the request, as a
 * host it could not resolve or a protocol it may not use: said as the
 * daemon being unreachable, when the argument is what is wrong. */
static int url_ok(const char *url)
{
	static const CURLUPart sent_with_each[] = {CURLUPART_USER, CURLUPART_PASSWORD,
	                                          CURLUPART_OPTIONS, CURLUPART_QUERY,
	                                          CURLUPART_FRAGMENT};
	CURLU *u;
	char *host = NULL, *extra = NULL;
	int ok;

	if (strncasecmp(url, "http://", 7) && strncasecmp(url, "https://", 8))
		return 0;
	if (!(u = curl_url())) {
		say("out of memory");
		exit(EXIT_FAILED);
	}
	ok = curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
	     curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK && host && *host;
	/* A user, a query or a fragment would go with every request, the
	 * request's own path and query after them. */
	for (size_t i = 0; ok && i < sizeof sent_with_each / sizeof sent_with_each[0]; i++) {
		ok = curl_url_get(u, sent_with_each[i], &extra, 0) != CURLUE_OK || !extra;
		curl_free(extra);
		extra = NULL;
	}
	curl_free(host);
	curl_url_cleanup(u);
	return ok;
}

/* The URL of a daemon listening on `host`:`port` (an IPv6 address without
 * brackets) into out[URL_MAX], a wildcard address replaced by loopback (the
 * daemon listens there too). */
static void listen_url(const char *host, int port, char *out)
{
	if (!host || !*host || !strcmp(host, "0.0.0.0"))
		host = "127.0.0.1";
	else if (!strcmp(host, "::"))
		host = "::1";
	snprintf(out, URL_MAX, strchr(host, ':') ? "http://[%s]:%d" : "http://%s:%d", host, port);
}

/* The daemon's URL: --url, else [http] listen's (listen_url). 0, or the
 * exit status after saying why. */
static int resolve_url(ctl *c)
{
	char url[URL_MAX];
	if (c->o.url) {
		size_t n = strlen(c->o.url);
		if (!url_ok(c->o.url))
			return usage_error("--url takes http://HOST[:PORT] or https://HOST[:PORT], "
			                   "not '%s'",
			                   c->o.url);
		while (n && c->o.url[n - 1] == '/')
			n--;
		c->url = xasprintf("%.*s", (int)n, c->o.url);
		return 0;
	}
	if (load_config(c))
		return EXIT_FAILED;
	if (key_unread(c, "http", "listen", 0,
	               "evhostctl does not know where the daemon listens (fix it, or pass --url)") ||
	    key_refused(c, "http", "listen",
	                "evhostctl does not know where the daemon listens (fix it, or pass --url)"))
		return EXIT_FAILED;
	listen_url(c->set.http_host, c->set.http_port, url);
	c->url = xasprintf("%s", url);
	return 0;
}

/* The admin token: the first line of --token-file or [admin] token_file.
 * Returns 0 (c->token NULL when neither is set: the API is off), or an
 * exit status after saying why. */
static int resolve_token(ctl *c)
{
	const char *path = c->o.token_file;
	char buf[4098];
	size_t n;
	FILE *f;

	if (!path) {
		if (load_config(c))
			return EXIT_FAILED;
		/* Its problem of reading the file is said below, with ours. */
		if (!c->set.admin_token_file &&
		    (key_unread(c, "admin", "token_file", 0,
		                "evhostctl has no admin token (fix it, or pass --token-file)") ||
		     key_refused(c, "admin", "token_file",
		                 "evhostctl has no admin token (fix it, or pass --token-file)")))
			return EXIT_FAILED;
		path = c->set.admin_token_file;
	}
	if (!path)
		return 0;
	if (!(f = fopen(path, "r"))) {
		int err = errno;
		/* The packaged token file is root:evhost 0640 (operations.md). */
		say("cannot read the admin token from %s: %s%s", path, strerror(err),
		    (err == EACCES || err == EPERM) && geteuid() != 0
		        ? " (run evhostctl as root or as a member of group evhost, who may read it)"
		        : "");
		return EXIT_AUTH;
	}
	n = fread(buf, 1, sizeof buf - 1, f);
	if (ferror(f)) {
		/* A directory opens, then reads as EISDIR: not an empty token. */
		int err = errno;
		fclose(f);
		explicit_bzero(buf, sizeof buf);
		say("cannot read the admin token from %s: %s", path, strerror(err));
		return EXIT_AUTH;
	}
	fclose(f);
	buf[n] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
	if (!buf[0]) {
		say("the admin token file %s is empty", path);
		return EXIT_AUTH;
	}
	c->token = strdup(buf);
	explicit_bzero(buf, sizeof buf);
	if (!c->token) {
		say("out of memory");
		return EXIT_FAILED;
	}
	return 0;
}

static int need_admin(ctl *c)
{
	int rc = resolve_token(c);
	if (rc)
		return rc;
	if (!c->token) {
		say("the admin API is disabled: [admin] token_file is not set in %s "
		    "(or pass --token-file)",
		    c->o.conf);
		return EXIT_FAILED;
	}
	return 0;
}

/* `s` as one word of a POSIX shell command: as it is when no shell would
 * split or expand it, else in single quotes, each ' in it as '\''
 * (nothing is special inside single quotes, not even ! in bash). */
static char *shell_word(const char *s)
{
	static const char plain[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	                            "0123456789_@%+=:,./-";
	size_t quotes = 0;
	char *out, *q;

	if (*s && *s != '-' && strspn(s, plain) == strlen(s))
		return xasprintf("%s", s);
	for (const char *p = s; *p; p++)
		quotes += *p == '\'';
	out = q = xasprintf("%*s", (int)(strlen(s) + 3 * quotes + 2), "");
	*q++ = '\'';
	for (; *s; s++) {
		if (*s == '\'') {
			memcpy(q, "'\\''", 4);
			q += 4;
		} else {
			*q++ = *s;
		}
	}
	*q++ = '\'';
	*q = '\0';
	return out;
}

/* "evhostctl" with the options that chose the daemon (-c, --url,
 * --token-file) as this run was given them: a hint's command must ask the
 * same daemon (the default file may be another daemon's). */
static char *ctl_command(const ctl *c)
{
	const char *opt[] = {"-c", "--url", "--token-file"};
	const char *val[] = {c->o.conf_given ? c->o.conf : NULL, c->o.url, c->o.token_file};
	char *out = xasprintf("evhostctl");
	for (size_t i = 0; i < sizeof opt / sizeof opt[0]; i++) {
		char *w, *next;
		if (!val[i])
			continue;
		w = shell_word(val[i]);
		next = xasprintf("%s %s %s", out, opt[i], w);
		free(w);
		free(out);
		out = next;
	}
	return out;
}

/* "evhostctl check" as this run should run it: with the -c FILE it was
 * given, quoted for the shell. */
static char *check_command(const ctl *c)
{
	char *w, *out;
	if (!c->o.conf_given)
		return xasprintf("evhostctl check");
	w = shell_word(c->o.conf);
	out = xasprintf("evhostctl -c %s check", w);
	free(w);
	return out;
}

/* ----------------------------------------------------------------- HTTP */

static size_t collect(char *data, size_t size, size_t n, void *ud)
{
	reply *r = ud;
	size_t len = size * n;
	char *grown;
	if ((long)(r->len + len) > BODY_MAX) {
		r->stopped = "the answer is larger than " BODY_MAX_TEXT;
		return 0;
	}
	if (r->len + len + 1 > r->cap) {
		/* Doubling: libcurl hands the answer over in pieces of 16 KB or so. */
		size_t cap = r->cap ? r->cap : 4096;
		while (cap < r->len + len + 1)
			cap *= 2;
		if (!(grown = realloc(r->body, cap))) {
			r->stopped = "out of memory reading the answer";
			return 0;
		}
		r->body = grown;
		r->cap = cap;
	}
	memcpy(r->body + r->len, data, len);
	r->len += len;
	r->body[r->len] = '\0';
	return len;
}

/* cJSON's allocations come here, so that an answer cJSON could not parse
 * for want of memory is not taken for one that is not JSON. */
static int json_nomem;

static void *json_malloc(size_t n)
{
	void *p = malloc(n);
	if (!p)
		json_nomem = 1;
	return p;
}

/* The answer parsed as one JSON value and nothing after it but white
 * space, else NULL: cJSON alone takes "{}<html>..." for "{}", and --json
 * would print what follows as if it were the daemon's JSON. */
static cJSON *parse_whole(const char *body, size_t len)
{
	const char *end = NULL;
	cJSON *j = cJSON_ParseWithLengthOpts(body, len, &end, 0);
	if (!j || !end)
		return j;
	while (end < body + len && (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n'))
		end++;
	if (end == body + len)
		return j;
	cJSON_Delete(j);
	return NULL;
}

/* Bytes of the well-formed UTF-8 character (RFC 3629) that begins at s, a
 * NUL-terminated string; 0 when none does. */
static size_t utf8_char_len(const unsigned char *s)
{
	size_t need = s[0] < 0x80                    ? 1
	              : s[0] >= 0xc2 && s[0] <= 0xdf ? 2
	              : s[0] >= 0xe0 && s[0] <= 0xef ? 3
	              : s[0] >= 0xf0 && s[0] <= 0xf4 ? 4
	                                             : 0;
	if (need > 1 && (strnlen((const char *)s, need) < need ||
	                 json_utf8_error((const char *)s, need) >= 0))
		return 0;
	return need;
}

/* Control characters of `s` shown as '?', in place: C0 (newline and ESC
 * among them), DEL, C1 (U+0080..U+009F: U+009B is CSI to some terminals),
 * and each byte that is not part of well-formed UTF-8 (a lone 0x9B is CSI
 * to an 8-bit terminal). What the daemon answers carries what producers
 * and plugins sent, and a terminal must not run it. */
static char *scrub_controls(char *s)
{
	unsigned char *r = (unsigned char *)s, *w = r;
	while (*r) {
		size_t n = utf8_char_len(r);
		if (!n || (n == 1 && (*r < 0x20 || *r == 0x7f)) ||
		    (n == 2 && r[0] == 0xc2 && r[1] <= 0x9f)) {
			*w++ = '?';
			r += n ? n : 1;
		} else {
			memmove(w, r, n);
			w += n;
			r += n;
		}
	}
	*w = '\0';
	return s;
}

/* Every string of an answer, names and values, scrubbed: human output
 * prints the tree and never the raw body, which --json prints as it came
 * (JSON escapes control characters there). Nesting is bounded by cJSON's
 * CJSON_NESTING_LIMIT. */
static void scrub_json(cJSON *j)
{
	for (; j; j = j->next) {
		if (j->string)
			scrub_controls(j->string);
		if (cJSON_IsString(j) && j->valuestring)
			scrub_controls(j->valuestring);
		scrub_json(j->child);
	}
}

static void reply_free(reply *r)
{
	free(r->body);
	cJSON_Delete(r->json);
	memset(r, 0, sizeof *r);
}

/* `line` added to the request's headers; 0, or -1 out of memory. */
static int add_header(struct curl_slist **hdrs, const char *line)
{
	struct curl_slist *more = curl_slist_append(*hdrs, line);
	if (!more)
		return -1;
	*hdrs = more;
	return 0;
}

/* Whether a failed curl_easy_perform never reached the daemon: it did not
 * connect. Any other failure may come after the request was sent. */
static int curl_not_sent(CURLcode cc)
{
	return cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST ||
	       cc == CURLE_COULDNT_RESOLVE_PROXY;
}

static int lock_holder(int fd, char *out, size_t len);

/* After the files' [http] listen did not answer: when a daemon holds the
 * lock in their state_dir, say what it is doing. It writes its pid there
 * when it takes the lock, and the address it listens on, the line after,
 * only once HTTP listens, after every plugin's init (a long migration, say):
 * without that line it is starting, and must not be taken for a daemon gone
 * (restarted in the middle of its migration). With it, the address is where
 * the daemon listens: a reload does not apply a changed listen, only a
 * restart does, so it may be elsewhere than the files say; there, it is
 * stopping (it stops listening before it lets go of the lock). Said once;
 * nothing when any of it is not known. */
static void say_where_the_daemon_listens(ctl *c)
{
	char path[PATH_MAX], text[256], holder[LOCK_HOLDER_MAX], host[64], url[URL_MAX];
	char *line, *end;
	size_t pid_len;
	ssize_t n;
	int fd, port;

	if (c->told_where || c->o.url || !c->set.state_dir ||
	    (size_t)snprintf(path, sizeof path, "%s/evhostd.lock", c->set.state_dir) >= sizeof path)
		return;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) < 0)
		return;
	n = read(fd, text, sizeof text - 1);
	/* A lock let go is a daemon gone: its file stays, with its address. */
	if (n < 0 || !lock_holder(fd, holder, sizeof holder)) {
		close(fd);
		return;
	}
	close(fd);
	text[n] = '\0';
	/* "PID\nHOST:PORT\n", HOST an IPv4 address or an IPv6 one in brackets;
	 * "PID\n" alone until HTTP listens, and nothing at all for the moment
	 * between taking the lock and writing the pid (the holder says who). */
	pid_len = strspn(text, "0123456789");
	if (!pid_len || text[pid_len] != '\n' || !(end = strchr(line = text + pid_len + 1, '\n'))) {
		if (pid_len && text[pid_len] == '\n')
			say("evhostd pid %.*s holds the lock in state_dir %s but does not answer yet: it "
			    "is starting (HTTP listens once every plugin's init, a migration among them, "
			    "is done); let it finish rather than restart it (journalctl -u evhostd "
			    "shows how far it is)",
			    (int)pid_len, text, c->set.state_dir);
		else
			say("%s holds the lock in state_dir %s but does not answer yet: evhostd is "
			    "starting; let it finish rather than restart it (journalctl -u evhostd "
			    "shows how far it is)",
			    holder, c->set.state_dir);
		c->told_where = 1;
		return;
	}
	*end = '\0';
	if (sscanf(line, *line == '[' ? "[%63[0-9a-fA-F:.]]:%d" : "%63[0-9.]:%d", host, &port) != 2 ||
	    port < 1 || port > 65535)
		return;
	listen_url(host, port, url);
	if (!strcmp(url, c->url))
		say("evhostd pid %.*s holds the lock in state_dir %s but no longer answers on %s: "
		    "it is stopping (journalctl -u evhostd shows how far it is)",
		    (int)pid_len, text, c->set.state_dir, line);
	else
		say("evhostd pid %.*s, running with state_dir %s, listens on %s: a change of [http] "
		    "listen since it started applies at its restart, not at a reload (until then, "
		    "pass --url %s)",
		    (int)pid_len, text, c->set.state_dir, line, url);
	c->told_where = 1;
}

/* One request; `body` is JSON or NULL. Returns 0 when the daemon answered
 * (whatever the status), else EXIT_UNREACHABLE, or EXIT_FAILED for an
 * answer too large or out of memory, after saying why; c->not_sent is set
 * when the request surely did not reach the daemon (out of memory before
 * it, no connection). */
static int request(ctl *c, const char *method, const char *path, const char *body, int auth,
                   reply *r)
{
	struct curl_slist *hdrs = NULL;
	char *url = try_asprintf("%s%s", c->url, path), *authz = NULL;
	CURLcode cc;
	int nomem = !url;

	memset(r, 0, sizeof *r);
	c->not_sent = 0;
	if (!nomem && auth && c->token)
		nomem = !(authz = try_asprintf("Authorization: Bearer %s", c->token)) ||
		        add_header(&hdrs, authz) != 0;
	if (!nomem && body)
		nomem = add_header(&hdrs, "Content-Type: application/json") != 0;
	if (nomem) {
		say("%s %s: out of memory: the request was not sent", method, path);
		curl_slist_free_all(hdrs);
		if (authz) {
			explicit_bzero(authz, strlen(authz));
			free(authz);
		}
		free(url);
		c->not_sent = 1;
		return EXIT_FAILED;
	}
	curl_easy_reset(c->curl);
	curl_easy_setopt(c->curl, CURLOPT_URL, url);
	curl_easy_setopt(c->curl, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c->curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c->curl, CURLOPT_CONNECTTIMEOUT, CONNECT_TIMEOUT_S);
	curl_easy_setopt(c->curl, CURLOPT_TIMEOUT,
	                 c->request_timeout_s ? c->request_timeout_s : REQUEST_TIMEOUT_S);
	curl_easy_setopt(c->curl, CURLOPT_PROTOCOLS_STR, "http,https");
	/* Never through a proxy (http_proxy, ALL_PROXY, which sudo may bring
	 * from /etc/environment): it would be handed the admin token, and
	 * reach another 127.0.0.1 than the daemon's. */
	curl_easy_setopt(c->curl, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(c->curl, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, r);
	if (body) {
		curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, body);
	} else if (!strcmp(method, "POST")) {
		curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, "");
	}
	curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, hdrs);
	cc = curl_easy_perform(c->curl);
	curl_slist_free_all(hdrs);
	if (authz) {
		explicit_bzero(authz, strlen(authz));
		free(authz);
	}
	if (cc != CURLE_OK) {
		/* The daemon answered, but not all of it could be kept. */
		int reached = cc == CURLE_WRITE_ERROR && r->stopped;
		if (reached)
			say("%s %s: %s", method, url, r->stopped);
		else
			say("%s %s: the daemon is unreachable: %s", method, url, curl_easy_strerror(cc));
		free(url);
		reply_free(r);
		c->not_sent = curl_not_sent(cc);
		if (cc == CURLE_COULDNT_CONNECT)
			say_where_the_daemon_listens(c);
		return reached ? EXIT_FAILED : EXIT_UNREACHABLE;
	}
	free(url);
	curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &r->status);
	if (r->body) {
		json_nomem = 0;
		r->json = parse_whole(r->body, r->len);
		if (!r->json && json_nomem) {
			say("%s %s: out of memory reading the answer (%ld)", method, path, r->status);
			reply_free(r);
			return EXIT_FAILED;
		}
		scrub_json(r->json);
	}
	return 0;
}

static const char *json_str(const cJSON *o, const char *name)
{
	const char *s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, name));
	return s ? s : "";
}

static double json_num(const cJSON *o, const char *name)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
	return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

/* What a non-2xx answer (or one not JSON) means, said once; returns the
 * exit status. An answer that is not JSON is not the daemon's, which
 * answers problem details: a proxy's page, say, whose words are not ours
 * to print (its status alone was "no details (502)"). */
static int refused(const char *method, const char *path, const reply *r)
{
	const char *detail = json_str(r->json, "detail");
	if (!*detail)
		detail = "no details";
	if (r->status == 401 && !r->json) {
		/* Not the daemon's: its 401 is problem details. */
		say("%s %s: the answer (401) is not the daemon's JSON: a proxy in front of it asks "
		    "for credentials of its own (evhostctl sends the admin token only)",
		    method, path);
		return EXIT_AUTH;
	}
	if (r->status == 401) {
		say("%s %s: the daemon refused the admin token (401): check --token-file or "
		    "[admin] token_file",
		    method, path);
		return EXIT_AUTH;
	}
	if (!r->json)
		say("%s %s: the answer (%ld) is not the daemon's JSON (a proxy's page?)", method, path,
		    r->status);
	else
		say("%s %s: %s (%ld)", method, path, detail, r->status);
	return EXIT_FAILED;
}

/* An answer that must be 2xx JSON: 0, or the exit status after saying
 * why (the reply freed). */
static int answer_ok(const char *method, const char *path, reply *r)
{
	int rc;
	if (r->status < 200 || r->status > 299) {
		rc = refused(method, path, r);
		reply_free(r);
		return rc;
	}
	if (!r->json) {
		say("%s %s: the answer is not JSON (%ld)", method, path, r->status);
		reply_free(r);
		return EXIT_FAILED;
	}
	return 0;
}

/* With --json: the daemon's answer on stdout as it is, whatever its
 * status, when it is JSON. Anything else (a proxy's error page) stays off
 * stdout, where a script parses what comes: it is said on stderr. */
static void print_json_answer(const ctl *c, const reply *r)
{
	if (c->o.json && r->json)
		printf("%s\n", r->body);
}

/* An answer that must be 2xx JSON: 0, or the exit status after saying why.
 * With --json the body goes to stdout whatever the status. */
static int answered(ctl *c, const char *method, const char *path, reply *r)
{
	print_json_answer(c, r);
	return answer_ok(method, path, r);
}

/* A request whose answer must be 2xx JSON (answered). */
static int call(ctl *c, const char *method, const char *path, const char *body, reply *r)
{
	int rc = request(c, method, path, body, 1, r);
	return rc ? rc : answered(c, method, path, r);
}

/* --------------------------------------------------------------- tables */

typedef struct table {
	size_t ncols, nrows;
	size_t cap;   /* rows `cells` has room for */
	char **cells; /* nrows * ncols, row 0 the header */
} table;

static void table_row(table *t, ...)
{
	va_list ap;
	if (t->nrows == t->cap) {
		/* Doubling: a row at a time copied the whole table for each row
		 * (a thousand events, as many plugins) where realloc moves it. */
		size_t cap = t->cap ? 2 * t->cap : 16;
		char **grown = realloc(t->cells, cap * t->ncols * sizeof *grown);
		if (!grown) {
			say("out of memory");
			exit(EXIT_FAILED);
		}
		t->cells = grown;
		t->cap = cap;
	}
	va_start(ap, t);
	for (size_t i = 0; i < t->ncols; i++) {
		const char *s = va_arg(ap, const char *);
		/* Cells hold what producers and plugins sent (request() scrubbed
		 * it already; a cell built from it is scrubbed as well). */
		t->cells[t->nrows * t->ncols + i] = scrub_controls(xasprintf("%s", s ? s : ""));
	}
	va_end(ap);
	t->nrows++;
}

/* Columns padded to their widest cell; the last one is not padded. A
 * table with nothing but its header prints nothing. Frees the cells. */
static void table_print(table *t)
{
	size_t w[16] = {0};
	for (size_t r = 0; t->nrows > 1 && r < t->nrows; r++)
		for (size_t i = 0; i < t->ncols && i < 16; i++) {
			size_t n = strlen(t->cells[r * t->ncols + i]);
			w[i] = n > w[i] ? n : w[i];
		}
	for (size_t r = 0; t->nrows > 1 && r < t->nrows; r++) {
		for (size_t i = 0; i < t->ncols; i++) {
			const char *s = t->cells[r * t->ncols + i];
			if (i + 1 < t->ncols)
				printf("%-*s  ", (int)w[i], s);
			else
				printf("%s\n", s);
		}
	}
	for (size_t i = 0; i < t->nrows * t->ncols; i++)
		free(t->cells[i]);
	free(t->cells);
	t->cells = NULL;
	t->nrows = t->cap = 0;
}

static char *num(double v)
{
	return xasprintf("%.0f", v);
}

/* Member `name` of `o` as a whole number, "-" without one (a plugin a
 * reload is stopping or restarting is listed with its state only). */
static char *num_of(const cJSON *o, const char *name)
{
	return cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(o, name)) ? num(json_num(o, name))
	                                                                 : xasprintf("-");
}

/* ------------------------------------------------------------- commands */

static int cmd_status(ctl *c)
{
	reply health, ready;
	const cJSON *plugins, *p;
	int rc = request(c, "GET", "/healthz", NULL, 0, &health), ok;
	table t = {.ncols = 2};

	if (rc)
		return rc;
	if (health.status != 200) {
		say("GET /healthz: %ld: the daemon does not serve", health.status);
		reply_free(&health);
		return EXIT_FAILED;
	}
	reply_free(&health);
	if ((rc = request(c, "GET", "/readyz", NULL, 0, &ready)))
		return rc;
	if (!ready.json || (ready.status != 200 && ready.status != 503)) {
		rc = refused("GET", "/readyz", &ready);
		reply_free(&ready);
		return rc;
	}
	ok = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(ready.json, "ready"));
	if (c->o.json) {
		printf("%s\n", ready.body);
	} else {
		printf("evhostd at %s: serving, %s\n", c->url, ok ? "ready" : "NOT READY");
		printf("kafka: %s, storage: %s\n", json_str(ready.json, "kafka"),
		       json_str(ready.json, "storage"));
		cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(ready.json, "damaged")) {
			printf("plugin %s: its database is damaged; restore it from a backup\n",
			       cJSON_GetStringValue(p) ? cJSON_GetStringValue(p) : "?");
		}
		plugins = cJSON_GetObjectItemCaseSensitive(ready.json, "plugins");
		table_row(&t, "PLUGIN", "STATE");
		cJSON_ArrayForEach(p, plugins) {
			table_row(&t, p->string, cJSON_GetStringValue(p));
		}
		if (t.nrows == 1)
			printf("no plugins\n");
		table_print(&t);
	}
	if (!ok)
		say("the daemon is not ready (GET /readyz: %ld)", ready.status);
	reply_free(&ready);
	return ok ? EXIT_OK : EXIT_FAILED;
}

static char *subscriptions_text(const cJSON *plugin)
{
	const cJSON *s;
	char *out = xasprintf("%s", "");
	cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(plugin, "subscriptions")) {
		const char *type = json_str(s, "type");
		char *next = xasprintf("%s%s%s%s%s", out, *out ? "," : "", json_str(s, "topic"),
		                       *type ? ":" : "", type);
		free(out);
		out = next;
	}
	return out;
}

static void print_plugins(const cJSON *list)
{
	const cJSON *p;
	table t = {.ncols = 8};
	table_row(&t, "NAME", "STATE", "VERSION", "GROUP", "OUTBOX", "EVENTS", "STORAGE",
	          "SUBSCRIPTIONS");
	cJSON_ArrayForEach(p, list) {
		char *subs = subscriptions_text(p), *outbox = num_of(p, "outbox_pending");
		char *events = num_of(p, "events_stored");
		const char *version = json_str(p, "version"), *storage = json_str(p, "storage");
		const char *group = json_str(p, "group");
		table_row(&t, json_str(p, "name"), json_str(p, "state"), *version ? version : "-",
		          *group ? group : "-", outbox, events, *storage ? storage : "-",
		          *subs ? subs : "-");
		free(subs);
		free(outbox);
		free(events);
	}
	if (t.nrows == 1)
		printf("no plugins are running\n");
	table_print(&t);
}

static int cmd_plugins(ctl *c)
{
	reply r;
	int rc = call(c, "GET", "/admin/plugins", NULL, &r);
	if (rc)
		return rc;
	if (!c->o.json)
		print_plugins(cJSON_GetObjectItemCaseSensitive(r.json, "plugins"));
	reply_free(&r);
	return EXIT_OK;
}

/* ------------------------------------------------------- enable/disable */

/* A plugin name as config.c accepts it: it becomes a file name and a path
 * segment, so nothing else may pass. */
static int name_ok(const char *name)
{
	size_t n = strlen(name);
	static const char ok[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-";
	return n > 0 && n <= NAME_MAX_LEN && strspn(name, ok) == n;
}

/* A plugin's state in a list of plugins (/admin/plugins or a reload's
 * answer); NULL when it is not there. */
static const char *state_in_list(const cJSON *list, const char *name)
{
	const cJSON *p;
	cJSON_ArrayForEach(p, list) {
		if (!strcmp(json_str(p, "name"), name))
			return json_str(p, "state");
	}
	return NULL;
}

/* Whether the daemon runs the plugin as asked: enabled = running, disabled
 * = not in the list at all (a stopped plugin is dropped from it). */
static int state_reached(const char *state, int enable)
{
	return enable ? state && !strcmp(state, "running") : !state;
}

typedef struct dropin {
	char *path;
	char *old; /* the previous content, NULL when there was no file */
	size_t old_len;
	struct stat old_st; /* its permissions and owner, which rewriting it keeps */
} dropin;

/* A whole small file, its permissions and owner in *st; NULL with errno
 * set when it cannot be read (ENOENT: it does not exist). */
static char *read_file(const char *path, size_t *len, struct stat *st)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL, *grown;
	size_t n = 0, cap = 0, got;
	if (!f)
		return NULL;
	if (fstat(fileno(f), st) != 0) {
		int err = errno;
		fclose(f);
		errno = err;
		return NULL;
	}
	do {
		if (n + 4096 + 1 > cap) {
			cap = (cap + 4096) * 2;
			if (!(grown = realloc(buf, cap))) {
				free(buf);
				fclose(f);
				errno = ENOMEM;
				return NULL;
			}
			buf = grown;
		}
		got = fread(buf + n, 1, 4096, f);
		n += got;
	} while (got == 4096);
	if (ferror(f)) { /* EISDIR: a directory in the drop-in's place */
		int err = errno;
		free(buf);
		fclose(f);
		errno = err;
		return NULL;
	}
	fclose(f);
	buf[n] = '\0';
	*len = n;
	return buf;
}

/* Replace `path` with `text` (fileio.h: a temporary file in the same
 * directory, not ending in .conf, so a reload never reads it half written),
 * given `mode`, and `owner`'s owner and group when there is one (the file
 * it replaces: an admin's root:evhost 0640 must stay readable by evhostd).
 * A directory that could not be synced is said, and the file used: it is in
 * place, only a crash before the disk writes it back could undo it. */
static int write_atomic(const char *path, const char *text, size_t len, mode_t mode,
                        const struct stat *owner)
{
	char err[PATH_MAX + 256];
	int rc = file_replace(path, text, len, mode, owner ? owner->st_uid : (uid_t)-1,
	                      owner ? owner->st_gid : (gid_t)-1, err, sizeof err);
	if (rc < 0) {
		/* conf.d is root's (root:root 0755 in the package): the likely
		 * cause is who runs us, which the error alone does not say. Asked
		 * of the directory itself, as errno need not survive file_replace
		 * cleaning up. */
		char *dir = xasprintf("%s", path), *slash = strrchr(dir, '/');
		int denied;
		if (slash)
			*(slash == dir ? slash + 1 : slash) = '\0';
		/* Root refused (no CAP_DAC_OVERRIDE, a read-only bind): no use
		 * telling it to be root. */
		denied = geteuid() != 0 && access(slash ? dir : ".", W_OK) != 0 &&
		         (errno == EACCES || errno == EPERM);
		say("%s%s", err,
		    denied ? " (enable and disable write drop-ins into conf.d: run them as root)" : "");
		free(dir);
	} else if (rc > 0)
		say("warning: %s; %s is written, but a crash of this machine before its disk "
		    "catches up may undo that",
		    err, path);
	return rc < 0 ? -1 : 0;
}

/* Put the drop-in back as it was before we wrote it, or remove it when
 * there was none. 0 when it is. */
static int dropin_restore(const dropin *d)
{
	int rc = d->old ? write_atomic(d->path, d->old, d->old_len, d->old_st.st_mode & 07777,
	                               &d->old_st)
	                : unlink(d->path);
	if (rc == 0 && d->old)
		say("%s was put back as it was", d->path);
	else if (rc == 0)
		say("%s was removed (there was none before)", d->path);
	else if (d->old)
		say("could not put %s back as it was; check it by hand", d->path);
	else
		say("could not remove %s (there was none before): %s; remove it by hand", d->path,
		    strerror(errno));
	return rc;
}

/* After writing: the merged configuration must take `enabled` from our
 * file, else a later drop-in overrides it and the reload would not do
 * what was asked. */
static int dropin_effective(ctl *c, const dropin *d, const char *section)
{
	cfg now = {0};
	diag dg = {0};
	const cfg_entry *e;
	const char *base = strrchr(d->path, '/');
	int ok;

	base = base ? base + 1 : d->path;
	if (cfg_load(&now, c->o.conf, &dg) != 0) {
		if (dg.n)
			say("cannot read the configuration again to check %s: %s", base, dg.msgs[0]);
		else
			say("cannot read the configuration %s again to check %s: out of memory",
			    c->o.conf, base);
		cfg_free(&now);
		diag_free(&dg);
		return -1;
	}
	e = cfg_find(&now, section, "enabled");
	ok = e && e->file && !strcmp(strrchr(e->file, '/') ? strrchr(e->file, '/') + 1 : e->file,
	                             base);
	if (!ok && e)
		say("%s:%d sets [%s] enabled after %s, which therefore has no effect; change it "
		    "there",
		    e->file, e->line, section, base);
	else if (!ok)
		say("the daemon's configuration does not read %s (is it in its conf.d?)", d->path);
	cfg_free(&now);
	diag_free(&dg);
	return ok ? 0 : -1;
}

/* Whether line[0..n) sets `key`, as inih reads a key: the name before its
 * first '=' or ':', spaces around it dropped; not a comment. */
static int ini_sets(const char *line, size_t n, const char *key)
{
	const char *s = line, *end = line + n, *sep, *e;
	while (s < end && (*s == ' ' || *s == '\t'))
		s++;
	if (s == end || *s == ';' || *s == '#' || *s == '[')
		return 0;
	for (sep = s; sep < end && *sep != '=' && *sep != ':'; sep++)
		;
	if (sep == end)
		return 0;
	for (e = sep; e > s && isspace((unsigned char)e[-1]); e--)
		;
	return (size_t)(e - s) == strlen(key) && !memcmp(s, key, (size_t)(e - s));
}

/* The `enabled` line[0..n) (without its "\r") with `value` in its value's
 * place, into b: its indentation, separator and spacing as written stay,
 * and an inline comment (';' or '#' after white space, as config.c reads
 * it: "enabled = false  ; until the vendor's fix") with them. */
static void put_enabled(textbuf *b, const char *line, size_t n, const char *value)
{
	const char *end = line + n, *sep = line, *v, *e;
	int space = 0;

	while (sep < end && *sep != '=' && *sep != ':') /* ini_sets found one */
		sep++;
	for (e = sep + (sep < end); e < end && !(space && (*e == ';' || *e == '#')); e++)
		space = *e == ' ' || *e == '\t';
	for (v = sep + (sep < end); v < e && (*v == ' ' || *v == '\t'); v++)
		;
	tb_put(b, line, (size_t)(v - line));
	tb_puts(b, value);
	/* An empty value's comment follows the spaces: one keeps it a comment. */
	if (v == e && e < end)
		tb_puts(b, " ");
	while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
		e--;
	tb_put(b, e, (size_t)(end - e));
}

#define DROPIN_BANNER "; written by evhostctl "

/* The line of text[0..len) at *at, without its newline: [*p, *p + *n),
 * and *at past it; 0 at the end. */
static int next_line(const char *text, size_t len, size_t *at, const char **p, size_t *n)
{
	const char *end = text + len, *q;
	if (*at >= len)
		return 0;
	*p = text + *at;
	q = memchr(*p, '\n', (size_t)(end - *p));
	*n = q ? (size_t)(q - *p) : (size_t)(end - *p);
	*at += *n + (q != NULL);
	return 1;
}

/* What the drop-in is to say. A new one: our banner, the section and
 * `enabled`. One that was there keeps every line (an admin's keys and
 * comments, other sections) but the section's `enabled` lines, each set
 * to the new value (put_enabled: the rest of the line stays), or one added
 * under the section's first header, or the section added at the end; its
 * first line, when it is our banner, is written again to name this
 * command. A line that ends in "\r\n" keeps it, and a byte-order mark
 * stays. */
static char *dropin_text(const dropin *d, const char *name, const char *section, int enable)
{
	const char *value = enable ? "true" : "false", *line, *sec;
	char *banner = xasprintf(DROPIN_BANNER "%s: evhostctl enable|disable %s changes it\n",
	                         enable ? "enable" : "disable", name);
	size_t start = 0, at, n, seclen, slen = strlen(section), blen = strlen(DROPIN_BANNER);
	int in = 0, has_section = 0, has_key = 0, added = 0, first = 1;
	textbuf b = {0};

	if (!d->old) {
		char *text = xasprintf("%s[%s]\nenabled = %s\n", banner, section, value);
		free(banner);
		return text;
	}
	if (d->old_len >= 3 && !memcmp(d->old, "\xef\xbb\xbf", 3)) { /* a BOM, kept */
		tb_put(&b, d->old, 3);
		start = 3;
	}
	for (at = start; next_line(d->old, d->old_len, &at, &line, &n);) {
		if (cfg_section_header(line, n, &sec, &seclen, NULL)) {
			in = seclen == slen && !memcmp(sec, section, slen);
			has_section |= in;
		} else
			has_key |= in && ini_sets(line, n, "enabled");
	}
	for (at = start, in = 0; next_line(d->old, d->old_len, &at, &line, &n); first = 0) {
		const char *cr = n && line[n - 1] == '\r' ? "\r" : "";
		int header = cfg_section_header(line, n, &sec, &seclen, NULL);
		if (header)
			in = seclen == slen && !memcmp(sec, section, slen);
		if (first && n >= blen && !memcmp(line, DROPIN_BANNER, blen)) {
			tb_puts(&b, banner);
			continue;
		}
		if (!header && in && ini_sets(line, n, "enabled")) {
			put_enabled(&b, line, n - strlen(cr), value);
			tb_printf(&b, "%s\n", cr);
			continue;
		}
		tb_put(&b, line, n);
		tb_puts(&b, "\n"); /* a last line without one gets one */
		if (header && in && !has_key && !added) {
			tb_printf(&b, "enabled = %s%s\n", value, cr);
			added = 1;
		}
	}
	if (!has_section) {
		tb_puts(&b, "[");
		tb_puts(&b, section);
		tb_puts(&b, "]\nenabled = ");
		tb_puts(&b, value);
		tb_puts(&b, "\n");
	}
	free(banner);
	if (b.oom) {
		say("out of memory");
		exit(EXIT_FAILED);
	}
	return b.p; /* not NULL: the section and its key went in, or the old text */
}

static int plugin_known(ctl *c, const char *name, int enable)
{
	char *section = xasprintf("plugin.%s", name), *so;
	int known = 0;
	for (size_t i = 0; i < c->cfg.nsections; i++)
		known |= !strcmp(c->cfg.sections[i].name, section);
	free(section);
	if (known || !enable || !c->set.plugin_dir)
		return known;
	/* A plugin file dropped into the plugin directory needs no section. */
	so = xasprintf("%s/%s.so", c->set.plugin_dir, name);
	known = access(so, R_OK) == 0;
	free(so);
	return known;
}

/* `systemctl reload evhostd`, for a daemon without an admin API. */
static int systemctl_reload(void)
{
	pid_t pid = fork();
	int status;
	if (pid < 0) {
		say("fork: %s", strerror(errno));
		return -1;
	}
	if (pid == 0) {
		execlp("systemctl", "systemctl", "reload", "evhostd", (char *)NULL);
		say("cannot run systemctl: %s", strerror(errno));
		_exit(127);
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		say("systemctl reload evhostd failed (status %d)",
		    WIFEXITED(status) ? WEXITSTATUS(status) : -1);
		return -1;
	}
	return 0;
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* Poll until the plugin is as asked: /admin/plugins with a token, else
 * the unauthenticated /readyz (its "plugins" map); once at least. 0 when
 * reached, 1 once `deadline` (clock_mono_ms) has passed, or an exit status. */
static int wait_state(ctl *c, const char *name, int enable, long long deadline)
{
	for (;;) {
		reply r;
		const char *state = NULL;
		const char *path = c->token ? "/admin/plugins" : "/readyz";
		const cJSON *list;
		int rc = request(c, "GET", path, NULL, !!c->token, &r);
		if (rc)
			return rc;
		if (r.status == 401) {
			rc = refused("GET", "/admin/plugins", &r);
			reply_free(&r);
			return rc;
		}
		/* Only an answer with the list says where the plugin is: another
		 * (a 500, a 503 while the daemon stops) is asked again. */
		list = cJSON_GetObjectItemCaseSensitive(r.json, "plugins");
		if (c->token)
			state = state_in_list(list, name);
		else
			state = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(list, name));
		rc = list && state_reached(state, enable);
		reply_free(&r);
		if (rc)
			return 0;
		if (clock_mono_ms() >= deadline)
			return 1;
		sleep_ms(POLL_MS);
	}
}

/* Why api_reload wants the drop-in put back, or says it stays. */
enum {
	UNDO_NONE,
	UNDO_REFUSED, /* the reload was refused or not run: the daemon runs what it ran */
	UNDO_APPLIED, /* applied, the plugin not as asked: the daemon runs the drop-in */
	UNDO_NOT_ASKED, /* the request never reached the daemon: it runs what it ran */
	UNDO_UNKNOWN,   /* asked, but its answer was lost: what runs is not known */
};

/* What is left of --timeout at `deadline`, in whole seconds rounded up, a
 * second at least: the reload's ?wait=. */
static long seconds_left(long long deadline)
{
	long long left_ms = deadline - clock_mono_ms();
	return left_ms > 1000 ? (long)((left_ms + 999) / 1000) : 1;
}

/* POST /admin/reload?wait=WAIT_S: the daemon answers 202 once WAIT_S have
 * passed, not after its own 60 s; the connection is given longer than
 * that. 0 with the answer in *r (printed as it is with --json), or an exit
 * status after saying why. */
static int post_reload(ctl *c, long wait_s, reply *r)
{
	char path[64];
	int rc;

	snprintf(path, sizeof path, "/admin/reload?wait=%ld", wait_s);
	c->request_timeout_s = wait_s + REQUEST_TIMEOUT_S;
	rc = request(c, "POST", path, NULL, 1, r);
	c->request_timeout_s = 0;
	if (!rc)
		print_json_answer(c, r);
	return rc;
}

/* Whether a refused reload's answer (409) lists its problems (an older
 * daemon's does not, nor one short of memory). */
static int reload_problems_listed(const reply *r)
{
	return cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r->json, "problems")) > 0;
}

/* The problems a refused reload's answer lists, one line each, as the
 * daemon read the files: `check` runs as the caller, who may read a file
 * the daemon's user may not (a secret root's alone), and pass. */
static void say_reload_problems(const reply *r)
{
	const cJSON *list = cJSON_GetObjectItemCaseSensitive(r->json, "problems");
	const cJSON *more = cJSON_GetObjectItemCaseSensitive(r->json, "problems_not_shown");
	const cJSON *p;
	int n = 0;
	cJSON_ArrayForEach(p, list) {
		if (cJSON_IsString(p)) {
			say("  %s", p->valuestring);
			n++;
		}
	}
	if (n && cJSON_IsNumber(more) && more->valuedouble >= 1)
		say("  and %.0f more (the daemon's log names them all)", more->valuedouble);
}

/* The daemon refused the configuration (409): said with its problems, or
 * the command that shows them. */
static void say_refused_reload(const ctl *c, const reply *r, const char *what)
{
	char *check;
	if (reload_problems_listed(r)) {
		say("the daemon refused %s, the running one stays:", what);
		say_reload_problems(r);
		return;
	}
	check = check_command(c);
	say("the daemon refused %s, the running one stays (run '%s' to see why)", what, check);
	free(check);
}

/* Whether a reload's answer other than 200 and 202 says for certain that
 * the reload was not run: the daemon's own refusals, which come before it
 * (401, 403, 404, 422; 501, a process that cannot reload), or its verdict
 * (409). Any other leaves it unknown:
 * a 5xx (the daemon's 500 "out of memory writing the answer; the new
 * configuration was applied", a proxy's 502 or 504 while the reload goes
 * on), or an answer that is not the daemon's JSON (a proxy's page). */
static int reload_not_run(const reply *r)
{
	return r->json && (r->status == 409 || r->status == 401 || r->status == 403 ||
	                   r->status == 404 || r->status == 422 || r->status == 501);
}

/* POST /admin/reload, to be answered by `deadline` (what is left of
 * --timeout), and read its verdict. 0: applied and the plugin is as asked;
 * RELOAD_PENDING: still running; else an exit status, and *undo says
 * whether the drop-in should be put back, and what the daemon runs then. */
static int api_reload(ctl *c, const char *name, int enable, long long deadline, int *undo)
{
	reply r;
	int rc = post_reload(c, seconds_left(deadline), &r);
	const char *state;

	*undo = UNDO_NONE;
	if (rc) {
		*undo = c->not_sent ? UNDO_NOT_ASKED : UNDO_UNKNOWN;
		return rc;
	}
	if (r.status == 202) {
		reply_free(&r);
		return RELOAD_PENDING;
	}
	if (r.status != 200 || !r.json) {
		/* Put back only when the daemon surely runs without it. */
		*undo = reload_not_run(&r) ? UNDO_REFUSED : UNDO_UNKNOWN;
		if (r.status == 409 && r.json)
			say_refused_reload(c, &r, "the new configuration");
		rc = r.status == 409 && r.json ? EXIT_FAILED : refused("POST", "/admin/reload", &r);
		reply_free(&r);
		return rc;
	}
	state = state_in_list(cJSON_GetObjectItemCaseSensitive(r.json, "plugins"), name);
	rc = state_reached(state, enable);
	reply_free(&r);
	if (rc)
		return 0;
	say("the reload was applied but plugin '%s' %s (see the daemon's log)", name,
	    enable ? "did not start" : "still runs");
	*undo = UNDO_APPLIED;
	return EXIT_FAILED;
}

/* The reload applied the drop-in but the plugin is not as asked, and the
 * drop-in was put back: the daemon still runs the configuration that had
 * it, no longer the files' (a required plugin that did not start stays
 * listed as failed, /readyz answering 503 and `status` NOT READY, until
 * the next reload). One more reload makes what runs match the files again;
 * its outcome is said, and the exit status stays the failed command's.
 * It waits for what is left of --timeout, a second at least. */
static void reload_again(ctl *c, const char *name, const dropin *d, long long deadline)
{
	long wait_s = seconds_left(deadline), status;
	const char *state;
	reply r;

	if (post_reload(c, wait_s, &r)) {
		say("the daemon could not be asked to reload with %s put back: it runs the "
		    "configuration evhostctl wrote until it reloads (systemctl reload evhostd)",
		    d->path);
		return;
	}
	status = r.status;
	if (status == 202) {
		say("the reload with %s put back is still running after %ld s; the daemon's log "
		    "and 'evhostctl plugins' tell how it ends",
		    d->path, wait_s);
	} else if (status == 409 && r.json && reload_problems_listed(&r)) {
		say("the daemon refused the configuration with %s put back: it runs the one "
		    "evhostctl wrote, plugin '%s' as that reload left it, until a reload is "
		    "applied: fix these, then 'systemctl reload evhostd':",
		    d->path, name);
		say_reload_problems(&r);
	} else if (status == 409 && r.json) {
		char *check = check_command(c);
		say("the daemon refused the configuration with %s put back (run '%s' to see why): "
		    "it runs the one evhostctl wrote, plugin '%s' as that reload left it, until a "
		    "reload is applied: fix what check says, then 'systemctl reload evhostd'",
		    d->path, check, name);
		free(check);
	} else if (status != 200 || !r.json) {
		refused("POST", "/admin/reload", &r);
		if (reload_not_run(&r))
			say("the daemon did not reload with %s put back: it runs the configuration "
			    "evhostctl wrote until it reloads (systemctl reload evhostd)",
			    d->path);
		else
			say("whether the daemon reloaded with %s put back is not known: 'evhostctl "
			    "plugins' shows what runs, and 'systemctl reload evhostd' makes it what the "
			    "files say",
			    d->path);
		status = -1;
	}
	reply_free(&r);
	if (status != 200)
		return;
	/* Where the plugin is now: /readyz lists it as failed too, which the
	 * reload's list of the plugins that run does not. */
	if (request(c, "GET", "/readyz", NULL, 0, &r))
		return;
	state = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(
	    cJSON_GetObjectItemCaseSensitive(r.json, "plugins"), name));
	say("reloaded again with %s put back, so that what runs matches the files: plugin "
	    "'%s' is %s%s",
	    d->path, name, state ? state : "off", state && strcmp(state, "running")
	                                              ? " (see the daemon's log)"
	                                              : "");
	reply_free(&r);
}

/* The reload failed as api_reload's `undo` says: the drop-in put back
 * where the daemon runs without it (and, when it runs with it, the daemon
 * reloaded again), else what to do said, so that what runs and the files
 * do not part silently. */
static void reload_failed(ctl *c, const char *name, const dropin *d, int undo,
                          long long deadline)
{
	switch (undo) {
	case UNDO_NOT_ASKED:
		/* Out of memory before the request, or the daemon gone since
		 * evhostctl checked it: it runs what it ran. */
		if (dropin_restore(d) == 0)
			say("the daemon was not asked to reload, so nothing changed: run the command "
			    "again");
		else
			say("the daemon was not asked to reload: it runs without %s as evhostctl "
			    "wrote it until it reloads (systemctl reload evhostd, or run the command "
			    "again)",
			    d->path);
		break;
	case UNDO_UNKNOWN:
		say("%s stays written; whether the daemon reloaded with it is not known: "
		    "'evhostctl plugins' shows what runs, and 'systemctl reload evhostd' makes it "
		    "what the files say",
		    d->path);
		break;
	case UNDO_REFUSED: dropin_restore(d); break;
	case UNDO_APPLIED:
		if (dropin_restore(d) == 0)
			reload_again(c, name, d, deadline);
		break;
	default: break;
	}
}

/* Reload with the drop-in `d` written, and wait for the plugin's state
 * until `deadline` (the end of --timeout, for the whole command). */
static int toggle_apply(ctl *c, const char *name, int enable, const dropin *d,
                        long long deadline)
{
	int rc, undo = UNDO_NONE;
	if (c->token) {
		rc = api_reload(c, name, enable, deadline, &undo);
		if (rc == 0)
			return EXIT_OK;
		if (rc != RELOAD_PENDING) {
			reload_failed(c, name, d, undo, deadline);
			return rc;
		}
	} else if (systemctl_reload() != 0) {
		dropin_restore(d);
		return EXIT_FAILED;
	}
	rc = wait_state(c, name, enable, deadline);
	if (rc == 1) {
		say("plugin '%s' is not %s after %ld s; %s stays written (see the daemon's log)",
		    name, enable ? "running" : "stopped", c->o.timeout, d->path);
		return EXIT_FAILED;
	}
	return rc;
}

/* Who holds the flock(2) on the file open as `fd`: "process PID (its
 * command line)" in `out`, from /proc/locks, its non-printable bytes as
 * '?'. 0 when not known (no /proc, the lock let go meanwhile, a holder
 * outside our PID namespace, fopen out of memory): the holder is then
 * left unnamed. */
static int lock_holder(int fd, char *out, size_t len)
{
	char line[256], type[16], at[64], want[64], path[64], cmd[LOCK_HOLDER_MAX / 2];
	long pid = 0, found = 0;
	struct stat st;
	ssize_t n = 0;
	FILE *f;
	int cfd;

	if (fstat(fd, &st) != 0 || !(f = fopen("/proc/locks", "re")))
		return 0;
	/* "1: FLOCK  ADVISORY  WRITE 4711 fd:01:131077 0 EOF"; a waiter's
	 * line has "->" where FLOCK is. */
	snprintf(want, sizeof want, "%02x:%02x:%llu", major(st.st_dev), minor(st.st_dev),
	         (unsigned long long)st.st_ino);
	while (!found && fgets(line, sizeof line, f))
		if (sscanf(line, "%*d: %15s %*s %*s %ld %63s", type, &pid, at) == 3 &&
		    !strcmp(type, "FLOCK") && !strcmp(at, want) && pid > 0)
			found = pid;
	fclose(f);
	if (!found)
		return 0;
	snprintf(path, sizeof path, "/proc/%ld/cmdline", found);
	if ((cfd = open(path, O_RDONLY | O_CLOEXEC)) >= 0) {
		n = read(cfd, cmd, sizeof cmd - 1);
		close(cfd);
	}
	if (n < 0)
		n = 0;
	while (n > 0 && cmd[n - 1] == '\0')
		n--;
	for (ssize_t i = 0; i < n; i++) {
		unsigned char b = (unsigned char)cmd[i];
		if (b == '\0')
			cmd[i] = ' '; /* between arguments */
		else if (b < 0x20 || b > 0x7e)
			cmd[i] = '?';
	}
	cmd[n] = '\0';
	snprintf(out, len, n ? "process %ld (%s)" : "process %ld", found, cmd);
	return 1;
}

/* Take turns with other enable and disable runs: an exclusive flock(2) on
 * conf.d itself, held from reading the drop-in until its reload is done and
 * anything put back, so that no run puts back what it read before another
 * wrote, nor takes another's change in the daemon's answer for its own.
 * The directory rather than a lock file: nothing is created in a conf.d
 * that is root's (and the package's), any user who may write drop-ins may
 * lock it, and the lock goes with the process, however it ends (any user
 * who may read conf.d may hold it too: lslocks names who, and so does the
 * message when the wait runs out, lock_holder). Waits until `deadline`,
 * the end of --timeout, which bounds the whole command. The descriptor in
 * *fd, or an exit status after saying why. */
static int confdir_lock(const ctl *c, const char *dir, long long deadline, int *fd)
{
	int lfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (lfd < 0) {
		int err = errno;
		const char *hint =
		    err == EACCES && geteuid() != 0
		        ? " (enable and disable write drop-ins into conf.d: run them as root)"
		    : err == ENOENT ? " (enable and disable write a drop-in there, for the daemon to "
		                      "read: create the directory)"
		    : err == ENOTDIR ? " (enable and disable write a drop-in there, for the daemon "
		                       "to read: it must be a directory)"
		                     : "";
		say("cannot open %s to take turns with other evhostctl enable and disable runs: "
		    "%s; nothing was written%s",
		    dir, strerror(err), hint);
		return EXIT_FAILED;
	}
	while (flock(lfd, LOCK_EX | LOCK_NB) != 0) {
		if (errno != EWOULDBLOCK && errno != EINTR) {
			say("cannot lock %s to take turns with other evhostctl enable and disable "
			    "runs: %s; nothing was written (write the drop-in by hand, then "
			    "systemctl reload evhostd)",
			    dir, strerror(errno));
			close(lfd);
			return EXIT_FAILED;
		}
		if (clock_mono_ms() >= deadline) {
			char holder[LOCK_HOLDER_MAX];
			if (lock_holder(lfd, holder, sizeof holder))
				say("%s has held the lock on %s past --timeout (%ld s); nothing was "
				    "written: run the command again once it is done",
				    holder, dir, c->o.timeout);
			else
				say("another evhostctl enable or disable has held the lock on %s past "
				    "--timeout (%ld s); nothing was written: run the command again once it "
				    "is done (lslocks names who holds it)",
				    dir, c->o.timeout);
			close(lfd);
			return EXIT_FAILED;
		}
		sleep_ms(LOCK_POLL_MS);
	}
	*fd = lfd;
	return 0;
}

/* `name` was checked with name_ok. */
static int cmd_toggle(ctl *c, const char *name, int enable)
{
	/* --timeout bounds the whole command: the wait for the lock too */
	long long deadline = clock_mono_ms() + c->o.timeout * 1000LL;
	char *section = NULL, *text = NULL;
	dropin d = {0};
	int rc, lock_fd = -1;
	reply r;
	const char *probe;

	c->whole_config = 1;
	if (load_config(c))
		return EXIT_FAILED;
	if (key_unread(c, "host", "confdir", 1,
	               "evhostctl does not know which conf.d the daemon reads (fix it)") ||
	    key_refused(c, "host", "confdir",
	                "evhostctl does not know which conf.d the daemon reads (fix it)"))
		return EXIT_FAILED;
	/* A file not read whole (a syntax error ends its reading) makes the
	 * daemon refuse the reload: the drop-in would be written, refused and
	 * put back. And a line not read could set enabled after the drop-in,
	 * which dropin_effective could not see. */
	if (c->cfg_unread.n) {
		int ours;
		size_t i = first_unread(&c->cfg_unread, &ours);
		char *check = check_command(c);
		if (ours)
			say("%s%s: evhostctl (uid %ld) may not read it, and enable and disable read "
			    "every file, to check that none sets enabled after their drop-in%s; nothing "
			    "was written",
			    c->cfg_unread.msgs[i], c->cfg_unread.n > 1 ? ", and more" : "",
			    (long)geteuid(), geteuid() != 0 ? " (run them as root)" : "");
		else
			say("%s: the daemon would refuse the reload; fix it first%s ('%s' says all); "
			    "nothing was written",
			    c->cfg_unread.msgs[i], c->cfg_unread.n > 1 ? ", and more" : "", check);
		free(check);
		return EXIT_FAILED;
	}
	if (!plugin_known(c, name, enable)) {
		say("no plugin '%s': no [plugin.%s] section in %s or its conf.d", name, name,
		    c->o.conf);
		return EXIT_FAILED;
	}
	if ((rc = resolve_token(c)))
		return rc;
	if (!c->token && !c->o.systemd) {
		say("the admin API is disabled ([admin] token_file is not set), so evhostctl "
		    "cannot reload the daemon; pass --systemd to use 'systemctl reload evhostd'");
		return EXIT_FAILED;
	}
	probe = c->token ? "/admin/plugins" : "/healthz";
	/* Reachable and the token accepted, before anything is written. */
	if ((rc = request(c, "GET", probe, NULL, 1, &r)))
		return rc;
	if (r.status < 200 || r.status > 299)
		rc = refused("GET", probe, &r);
	reply_free(&r);
	if (rc)
		return rc;

	if ((rc = confdir_lock(c, c->cfg.confdir, deadline, &lock_fd)))
		return rc;
	section = xasprintf("plugin.%s", name);
	d.path = xasprintf("%s/" DROPIN_PREFIX "%s.conf", c->cfg.confdir, name);
	/* Replaced by a file of ours, a link would be gone: what it points to
	 * (a file kept by configuration management, say) is not ours to edit. */
	if (lstat(d.path, &d.old_st) == 0 && S_ISLNK(d.old_st.st_mode)) {
		say("%s is a symbolic link: evhostctl will not replace it with a file; set "
		    "enabled in [%s] where it points, or remove the link",
		    d.path, section);
		rc = EXIT_FAILED;
		goto out;
	}
	errno = 0;
	if (!(d.old = read_file(d.path, &d.old_len, &d.old_st)) && errno != ENOENT) {
		say("cannot read %s: %s", d.path, strerror(errno));
		rc = EXIT_FAILED;
		goto out;
	}
	text = dropin_text(&d, name, section, enable);
	/* A new one 0644: evhostd reads conf.d as user evhost, whatever our
	 * umask. One that was there keeps its mode and owner. */
	if (write_atomic(d.path, text, strlen(text), d.old ? d.old_st.st_mode & 07777 : 0644,
	                 d.old ? &d.old_st : NULL) != 0) {
		rc = EXIT_FAILED;
		goto out;
	}
	if (dropin_effective(c, &d, section) != 0) {
		dropin_restore(&d);
		rc = EXIT_FAILED;
		goto out;
	}
	rc = toggle_apply(c, name, enable, &d, deadline);
	if (rc == EXIT_OK && !c->o.json)
		printf("%s: %s (%s)\n", name, enable ? "enabled, running" : "disabled, stopped",
		       d.path);
out:
	close(lock_fd); /* and the lock with it */
	free(section);
	free(text);
	free(d.path);
	free(d.old);
	return rc;
}

/* ------------------------------------------------------------------ dlq */

static const char *header(const cJSON *m, const char *name)
{
	return json_str(cJSON_GetObjectItemCaseSensitive(m, "headers"), name);
}

/* TOPIC:P:O when the plugin has several dead-letter topics, else P:O:
 * what `dlq redrive` takes. */
static char *dlq_id(const cJSON *m, int with_topic)
{
	if (with_topic)
		return xasprintf("%s:%.0f:%.0f", json_str(m, "topic"), json_num(m, "partition"),
		                 json_num(m, "offset"));
	return xasprintf("%.0f:%.0f", json_num(m, "partition"), json_num(m, "offset"));
}

static cJSON *parse_id(const char *id, int *ok);
static char *query_param(ctl *c, char *q, const char *name, const char *value);

/* --after's dead-letter id: as dlq list shows it, not a bare offset (that
 * names no place in the order). 0, or the usage error's exit status. */
static int dlq_after_ok(const ctl *c)
{
	int ok = 1, bad;
	cJSON *id = parse_id(c->o.after, &ok);
	bad = ok && (!id || !cJSON_IsObject(id));
	cJSON_Delete(id);
	if (!bad)
		return 0;
	return usage_error("--after takes a dead-letter id as dlq list shows it "
	                   "(PARTITION:OFFSET or TOPIC:PARTITION:OFFSET), not '%s'",
	                   c->o.after);
}

/* GET the plugin's dead letters, after c->o.after when given; without their
 * values (their sizes only) when `values` is 0: a thousand values of 64 KiB
 * each, in base64, would pass the 64 MiB an answer may have. */
static int dlq_get(ctl *c, const char *name, long limit, int values, reply *r)
{
	char *path = xasprintf("/admin/plugins/%s/dlq?limit=%ld", name, limit), *lean;
	int rc = 0, answered_lean = 0;
	if (c->o.after && (rc = dlq_after_ok(c))) {
		free(path);
		return rc;
	}
	if (c->o.after)
		path = query_param(c, path, "after", c->o.after);
	if (!values) {
		lean = query_param(c, xasprintf("%s", path), "values", "false");
		rc = request(c, "GET", lean, NULL, 1, r);
		free(lean);
		/* A daemon from before ?values= refuses it (422 naming it): asked
		 * again without. */
		if (!rc && r->status == 422 && !strcmp(json_str(r->json, "field"), "values"))
			reply_free(r);
		else
			answered_lean = 1;
	}
	if (!answered_lean)
		rc = request(c, "GET", path, NULL, 1, r);
	if (!rc)
		rc = answered(c, "GET", path, r);
	free(path);
	return rc;
}

/* " --limit N" as given, for a next-page command ("" without --limit):
 * the next page is as long as this one. */
static char *limit_arg(const ctl *c)
{
	return c->o.limit > 0 ? xasprintf(" --limit %ld", c->o.limit) : xasprintf("%s", "");
}

/* When there is more: the command that shows the next page. */
static void dlq_footer(ctl *c, const reply *r, const char *cmd, const char *name, int n)
{
	const char *next = json_str(r->json, "next_after");
	char *again, *after, *limit;
	if (!n && c->o.after)
		printf("no dead letters for %s after %s\n", name, c->o.after);
	else if (!n)
		printf("no dead letters for %s\n", name);
	if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r->json, "truncated")))
		return;
	if (!*next) { /* a daemon from before next_after */
		printf("(there are more dead letters than shown)\n");
		return;
	}
	again = ctl_command(c);
	after = shell_word(next); /* the daemon's: quoted as the user's are */
	limit = limit_arg(c);
	printf("(there are more dead letters: %s dlq %s %s%s --after %s)\n", again, cmd, name,
	       limit, after);
	free(again);
	free(after);
	free(limit);
}

static int cmd_dlq_list(ctl *c, const char *name)
{
	reply r;
	const cJSON *m, *msgs;
	table t = {.ncols = 6};
	/* Its table shows no values; --json gives the whole answer, as before. */
	int rc = dlq_get(c, name, c->o.limit > 0 ? c->o.limit : DLQ_LIST_LIMIT, c->o.json, &r),
	    many;
	if (rc || c->o.json) {
		if (!rc)
			reply_free(&r);
		return rc;
	}
	msgs = cJSON_GetObjectItemCaseSensitive(r.json, "messages");
	many = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r.json, "topics")) > 1;
	table_row(&t, "ID", "KEY", "ATTEMPTS", "REDRIVEN", "DEAD-LETTERED", "ERROR");
	cJSON_ArrayForEach(m, msgs) {
		char *id = dlq_id(m, many);
		int redriven = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(m, "redriven"));
		table_row(&t, id, json_str(m, "key"), header(m, "evhost_dlq_attempts"),
		          redriven ? "yes" : "no", header(m, "evhost_dlq_time"),
		          header(m, "evhost_dlq_error"));
		free(id);
	}
	table_print(&t);
	dlq_footer(c, &r, "list", name, cJSON_GetArraySize(msgs));
	reply_free(&r);
	return EXIT_OK;
}

/* "  label: value" with control characters shown as '?': dead letters
 * carry whatever producers sent, and a terminal must not run it. */
static void put_clean(const char *value)
{
	char *v = scrub_controls(xasprintf("%s", value));
	puts(v);
	free(v);
}

static void field(const char *label, const char *value)
{
	int pad = 11 - (int)strlen(label);
	printf("  %s%*s", label, pad > 1 ? pad : 1, "");
	put_clean(value);
}

static void show_one(const cJSON *m)
{
	const cJSON *h, *v = cJSON_GetObjectItemCaseSensitive(m, "value");
	int cut = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(m, "value_shortened"));
	char *id = dlq_id(m, 1), *from, *size;

	from = xasprintf("%s/%s/%s", header(m, "evhost_dlq_topic"),
	                 header(m, "evhost_dlq_partition"), header(m, "evhost_dlq_offset"));
	size = xasprintf("value (%.0f bytes%s):", json_num(m, "value_size"),
	                 cJSON_IsString(v) ? (cut ? ", shortened" : "")
	                 : cJSON_GetObjectItemCaseSensitive(m, "value_base64") ? ", base64"
	                                                                       : "");
	printf("%s\n", id);
	field("from:", from);
	field("key:", json_str(m, "key"));
	field("attempts:", header(m, "evhost_dlq_attempts"));
	field("error:", header(m, "evhost_dlq_error"));
	field("time:", header(m, "evhost_dlq_time"));
	field("redriven:",
	      cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(m, "redriven")) ? "yes" : "no");
	printf("  headers:\n");
	cJSON_ArrayForEach(h, cJSON_GetObjectItemCaseSensitive(m, "headers")) {
		char *label = xasprintf("  %s:", h->string);
		field(label, cJSON_IsString(h) ? h->valuestring : "");
		free(label);
	}
	/* Values that are not text, as the daemon gives them: base64. */
	cJSON_ArrayForEach(h, cJSON_GetObjectItemCaseSensitive(m, "headers_base64")) {
		char *label = xasprintf("  %s (base64):", h->string);
		field(label, cJSON_IsString(h) ? h->valuestring : "");
		free(label);
	}
	if (cJSON_IsString(v) || cJSON_GetObjectItemCaseSensitive(m, "value_base64")) {
		printf("  %s\n    ", size);
		put_clean(cJSON_IsString(v) ? v->valuestring : json_str(m, "value_base64"));
	} else {
		field("value:", "null");
	}
	free(id);
	free(from);
	free(size);
}

static int cmd_dlq_show(ctl *c, const char *name)
{
	reply r;
	const cJSON *m, *msgs;
	int rc = dlq_get(c, name, c->o.limit > 0 ? c->o.limit : DLQ_SHOW_LIMIT, 1, &r), first = 1;
	if (rc || c->o.json) {
		if (!rc)
			reply_free(&r);
		return rc;
	}
	msgs = cJSON_GetObjectItemCaseSensitive(r.json, "messages");
	cJSON_ArrayForEach(m, msgs) {
		if (!first)
			printf("\n");
		first = 0;
		show_one(m);
	}
	dlq_footer(c, &r, "show", name, cJSON_GetArraySize(msgs));
	reply_free(&r);
	return EXIT_OK;
}

/* `body` (consumed) as the request's JSON text; out of memory, the command
 * stops there (a request with a part missing would ask for something else:
 * a redrive without its "offsets" is one of every dead letter). */
static char *request_json(cJSON *body, int ok)
{
	char *json = body && ok ? jsonb_print(body) : NULL; /* exact offsets */
	cJSON_Delete(body);
	if (!json) {
		say("out of memory");
		exit(EXIT_FAILED);
	}
	return json;
}

/* "O", "P:O" or "TOPIC:P:O" as a redrive selection entry; NULL when it is
 * none of those. Topic names cannot contain ':'. Out of memory, *ok is
 * cleared (see jsonb.h). */
/* The digits from s up to `stop` (a '\0' or ':') as a number in [0, max]:
 * 0, or -1 for no digits, anything else ("+1", " 1", "1.5") or too big. */
static int parse_digits(const char *s, const char *stop, long long max, long long *out)
{
	long long n = 0;
	if (s == stop)
		return -1;
	for (; s < stop; s++) {
		if (*s < '0' || *s > '9' || n > (max - (*s - '0')) / 10)
			return -1;
		n = n * 10 + (*s - '0');
	}
	*out = n;
	return 0;
}

/* The largest offset the admin API takes (admin.c's OFFSET_MAX). */
#define ID_OFFSET_MAX JSONB_EXACT_INT_MAX

static cJSON *parse_id(const char *id, int *ok)
{
	const char *last = strrchr(id, ':'), *first = strchr(id, ':');
	long long off, part = -1;
	cJSON *o;

	if (parse_digits(last ? last + 1 : id, id + strlen(id), ID_OFFSET_MAX, &off))
		return NULL;
	if (last && parse_digits(first == last ? id : first + 1, last, INT32_MAX, &part))
		return NULL;
	if (!last) {
		o = cJSON_CreateNumber((double)off);
		*ok = *ok && o;
		return o;
	}
	if (first != last && first == id)
		return NULL; /* ":P:O": no topic */
	o = cJSON_CreateObject();
	if (first != last) {
		char *topic = strndup(id, (size_t)(first - id));
		if (!topic)
			*ok = 0;
		else
			jsonb_put_str(o, "topic", topic, ok);
		free(topic);
	}
	jsonb_put_num(o, "partition", (double)part, ok);
	jsonb_put_num(o, "offset", (double)off, ok);
	return o;
}

/* The daemon lists the first skipped and failed dead letters only (a
 * redrive of all skips every one redriven before, thousands maybe): one
 * line for the rest, counted in the answer's *_not_listed (absent from a
 * daemon from before them). */
static void print_redrive_not_listed(const ctl *c, const cJSON *res, const char *name)
{
	double skipped = json_num(res, "skipped_not_listed");
	double failed = json_num(res, "failed_not_listed");
	char *cmd;
	if (skipped <= 0 && failed <= 0)
		return;
	cmd = ctl_command(c);
	printf("(not listed: %.0f more skipped, %.0f more failed; %s dlq list %s shows "
	       "whether each dead letter was redriven)\n",
	       skipped, failed, cmd, name);
	free(cmd);
}

static void print_redrive(const ctl *c, const cJSON *res, const char *name)
{
	const cJSON *e, *nf = cJSON_GetObjectItemCaseSensitive(res, "not_found");
	const cJSON *at = cJSON_GetObjectItemCaseSensitive(res, "not_found_at");
	cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(res, "results")) {
		char *id = dlq_id(e, 1);
		const char *outcome = json_str(e, "outcome");
		if (!strcmp(outcome, "redriven"))
			printf("%s: redriven to %s/%.0f/%.0f\n", id, json_str(e, "to_topic"),
			       json_num(e, "to_partition"), json_num(e, "to_offset"));
		else
			printf("%s: %s: %s\n", id, outcome, json_str(e, "error"));
		free(id);
	}
	if (cJSON_IsArray(at)) /* as each was asked for: TOPIC:P:O, P:O or O */
		cJSON_ArrayForEach(e, at) {
			const cJSON *t = cJSON_GetObjectItemCaseSensitive(e, "topic");
			const cJSON *p = cJSON_GetObjectItemCaseSensitive(e, "partition");
			if (cJSON_IsString(t))
				printf("%s:", t->valuestring);
			if (cJSON_IsNumber(p))
				printf("%.0f:", p->valuedouble);
			printf("%.0f: not found\n", json_num(e, "offset"));
		}
	else /* a daemon from before not_found_at */
		cJSON_ArrayForEach(e, nf) {
			printf("%.0f: not found\n", e->valuedouble);
		}
	print_redrive_not_listed(c, res, name);
	if (json_num(res, "unrecorded") > 0)
		printf("unrecorded: %.0f sent but not recorded as redriven: a later redrive may send "
		       "them again (the daemon's log says why)\n",
		       json_num(res, "unrecorded"));
	if (*json_str(res, "stopped"))
		printf("stopped: %s\n", json_str(res, "stopped"));
	if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(res, "truncated"))) {
		if (*json_str(res, "next_after")) {
			char *cmd = ctl_command(c), *after = shell_word(json_str(res, "next_after"));
			printf("(more dead letters may wait: %s dlq redrive %s --all --after %s "
			       "goes on after the last one read; --all alone starts again, skipping "
			       "those sent)\n",
			       cmd, name, after);
			free(cmd);
			free(after);
		} else {
			printf("(more dead letters may wait: run the redrive with --all again; those "
			       "sent are skipped)\n");
		}
	}
	printf("%.0f redriven, %.0f skipped, %.0f failed\n", json_num(res, "redriven"),
	       json_num(res, "skipped"), json_num(res, "failed"));
}

/* Whether dead letter `m` is the one `pick` (parse_id's) names. */
static int pick_names(const cJSON *pick, const cJSON *m)
{
	const cJSON *t = cJSON_GetObjectItemCaseSensitive(pick, "topic");
	if (cJSON_IsNumber(pick))
		return json_num(m, "offset") == pick->valuedouble;
	return json_num(m, "offset") == json_num(pick, "offset") &&
	       json_num(m, "partition") == json_num(pick, "partition") &&
	       (!cJSON_IsString(t) || !strcmp(json_str(m, "topic"), t->valuestring));
}

/* Say that ids[i] names the `hits` dead letters `names` (freed). */
static void say_ambiguous(const char *post, const char *id, size_t hits, char *names,
                          const char *name)
{
	say("POST %s: '%s' names %zu dead letters: name one of %s (as 'evhostctl dlq list %s' "
	    "shows them)",
	    post, id, hits, names, name);
	free(names);
}

/* `names`, then ", " and `id` (both freed). */
static char *names_add(char *names, char *id)
{
	char *next = xasprintf("%s%s%s", names ? names : "", names ? ", " : "", id);
	free(names);
	free(id);
	return next;
}

/* The 422's "candidates" (each dead letter the id numbered "ambiguous"
 * names, read where it is by the daemon): 1 when said, 0 when the answer
 * has none (a daemon from before them). */
static int dlq_ambiguous_said(const reply *r, char **ids, int nids, const char *post,
                              const char *name)
{
	const cJSON *cands = cJSON_GetObjectItemCaseSensitive(r->json, "candidates"), *m;
	const cJSON *which = cJSON_GetObjectItemCaseSensitive(r->json, "ambiguous");
	char *names = NULL;
	size_t hits = 0;
	int many = 0;

	if (!cJSON_IsArray(cands) || cJSON_GetArraySize(cands) < 2 || !cJSON_IsNumber(which) ||
	    which->valuedouble < 0 || which->valuedouble >= nids)
		return 0;
	/* TOPIC:P:O where P:O would still name several (one per topic). */
	cJSON_ArrayForEach(m, cands) {
		many |= strcmp(json_str(m, "topic"), json_str(cands->child, "topic")) != 0;
	}
	cJSON_ArrayForEach(m, cands) {
		names = names_add(names, dlq_id(m, many));
		hits++;
	}
	say_ambiguous(post, ids[(int)which->valuedouble], hits, names, name);
	return 1;
}

/* The daemon refused the redrive's "offsets" (422): when an id given names
 * more than one dead letter (offset 0 of two partitions), say which, in
 * the form the command line takes (the daemon's hint is its JSON form,
 * {"partition": P, "offset": O}): from the answer's "candidates", or, from
 * a daemon without them, from the dead letters listed, when the listing
 * holds them all (a page of the first DLQ_LIST_LIMIT could hold some of
 * them and name those as all). Returns 1 when said, 0 when it was about
 * something else or cannot be told, for the caller to say the daemon's
 * answer. */
static int dlq_ambiguous(ctl *c, const char *name, char **ids, int nids, const char *post,
                         const reply *answer)
{
	char *path;
	const cJSON *m, *msgs;
	int said = 0, ok = 1, many;
	reply r;

	if (dlq_ambiguous_said(answer, ids, nids, post, name))
		return 1;
	/* Not call(): with --json, the redrive's answer is the one printed. */
	path = xasprintf("/admin/plugins/%s/dlq?limit=%d", name, DLQ_LIST_LIMIT);
	if (request(c, "GET", path, NULL, 1, &r) || r.status != 200 || !r.json) {
		reply_free(&r); /* request() leaves it empty when it failed */
		free(path);
		return 0;
	}
	free(path);
	if (!cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(r.json, "truncated"))) {
		reply_free(&r);
		return 0;
	}
	msgs = cJSON_GetObjectItemCaseSensitive(r.json, "messages");
	many = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r.json, "topics")) > 1;
	for (int i = 0; i < nids && !said; i++) {
		cJSON *pick = parse_id(ids[i], &ok);
		char *names = NULL;
		size_t hits = 0;
		cJSON_ArrayForEach(m, msgs) {
			if (!pick || !ok || !pick_names(pick, m))
				continue;
			names = names_add(names, dlq_id(m, many || cJSON_IsObject(pick)));
			hits++;
		}
		if (hits > 1) {
			say_ambiguous(post, ids[i], hits, names, name);
			names = NULL;
			said = 1;
		}
		free(names);
		cJSON_Delete(pick);
	}
	reply_free(&r);
	return said;
}

static int cmd_dlq_redrive(ctl *c, const char *name, char **ids, int nids)
{
	cJSON *body = cJSON_CreateObject(), *offs;
	char *json = NULL, *path = NULL;
	reply r;
	int rc, ok = 1, not_found;
	double failed, unrecorded;
	int truncated;
	const char *stopped;

	if (c->o.all == (nids > 0)) {
		cJSON_Delete(body);
		return usage_error(c->o.all ? "dlq redrive takes --all or dead-letter ids, not both"
		                            : "dlq redrive needs --all or dead-letter ids");
	}
	if (c->o.after && !c->o.all) {
		cJSON_Delete(body);
		return usage_error("--after goes with dlq redrive --all");
	}
	if (c->o.after && (rc = dlq_after_ok(c))) {
		cJSON_Delete(body);
		return rc;
	}
	if (c->o.after)
		jsonb_put_str(body, "after", c->o.after, &ok);
	offs = c->o.all ? NULL : jsonb_put_array(body, "offsets", &ok);
	for (int i = 0; ok && i < nids; i++) {
		cJSON *one = parse_id(ids[i], &ok);
		if (!one && ok) {
			cJSON_Delete(body);
			return usage_error("'%s' is not a dead-letter id (OFFSET, "
			                   "PARTITION:OFFSET or TOPIC:PARTITION:OFFSET)",
			                   ids[i]);
		}
		jsonb_put(offs, NULL, one, &ok);
	}
	json = request_json(body, ok);
	path = xasprintf("/admin/plugins/%s/dlq/redrive", name);
	rc = request(c, "POST", path, json, 1, &r);
	free(json);
	if (!rc)
		print_json_answer(c, &r);
	if (!rc && r.status == 422 && !strcmp(json_str(r.json, "field"), "offsets") &&
	    dlq_ambiguous(c, name, ids, nids, path, &r)) {
		reply_free(&r);
		rc = EXIT_FAILED;
	} else if (!rc) {
		rc = answer_ok("POST", path, &r);
	}
	free(path);
	if (rc)
		return rc;
	if (!c->o.json)
		print_redrive(c, r.json, name);
	failed = json_num(r.json, "failed");
	not_found = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r.json, "not_found"));
	unrecorded = json_num(r.json, "unrecorded");
	stopped = json_str(r.json, "stopped");
	/* Cut short at the request's bounds (10000 sends, 30 s of reading): as
	 * unfinished as a stop, so exit 1 too, and a script's loop goes on. */
	truncated = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r.json, "truncated"));
	rc = failed > 0 || not_found > 0 || unrecorded > 0 || *stopped || truncated ? EXIT_FAILED
	                                                                           : EXIT_OK;
	/* An exit status 1 is said on stderr, as every other one is: a script
	 * that keeps stdout (or reads --json) sees why there. */
	if (rc)
		say("dlq redrive %s: %.0f failed, %d not found, %.0f unrecorded%s%s%s", name, failed,
		    not_found, unrecorded, *stopped ? "; stopped: " : "", stopped,
		    truncated && !*stopped ? "; stopped part way: more dead letters may wait" : "");
	reply_free(&r);
	return rc;
}

/* --------------------------------------------------------------- replay */

/* --from, checked before anything is asked: the daemon would answer a bad
 * one with its own forms (a JSON {"offsets": ...} evhostctl does not send),
 * and as a refusal (1), when the argument is what is wrong (2). */
static int replay_from_ok(const char *from)
{
	int64_t ms;

	if (!from)
		return usage_error("replay needs --from beginning or --from TIME (RFC 3339)");
	if (strcmp(from, "beginning") && rfc3339_parse_ms(from, &ms) != 0)
		return usage_error("--from takes 'beginning' or an RFC 3339 time such as "
		                   "2026-11-28T06:00:00Z, not '%s'",
		                   from);
	return 0;
}

static int cmd_replay(ctl *c, const char *name)
{
	cJSON *body, *topics, *p;
	char *json, *path;
	reply r;
	int rc, ok = 1;

	body = cJSON_CreateObject();
	jsonb_put_str(body, "from", c->o.from, &ok);
	if (c->o.keep_inbox)
		jsonb_put_bool(body, "keep_inbox", 1, &ok);
	if (c->o.ntopics) {
		topics = jsonb_put_array(body, "topics", &ok);
		for (size_t i = 0; topics && i < c->o.ntopics; i++)
			jsonb_put_str(topics, NULL, c->o.topics[i], &ok);
	}
	json = request_json(body, ok);
	path = xasprintf("/admin/plugins/%s/replay", name);
	rc = call(c, "POST", path, json, &r);
	free(json);
	free(path);
	if (rc)
		return rc;
	if (!c->o.json) {
		cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(r.json, "partitions")) {
			const cJSON *prev = cJSON_GetObjectItemCaseSensitive(p, "previous");
			char *was = cJSON_IsNumber(prev) ? num(prev->valuedouble) : xasprintf("-");
			printf("%s/%.0f: offset %.0f (was %s)\n", json_str(p, "topic"),
			       json_num(p, "partition"), json_num(p, "offset"), was);
			free(was);
		}
		if (c->o.keep_inbox)
			printf("%s: rewound; its inbox kept (events it has are skipped)\n", name);
		else
			printf("%s: rewound; %.0f inbox record(s) deleted\n", name,
			       json_num(r.json, "inbox_deleted"));
	}
	reply_free(&r);
	return EXIT_OK;
}

/* --------------------------------------------------------------- events */

static char *query_param(ctl *c, char *q, const char *name, const char *value)
{
	char *esc = curl_easy_escape(c->curl, value, 0), *next;
	if (!esc) {
		say("out of memory");
		exit(EXIT_FAILED);
	}
	next = xasprintf("%s%c%s=%s", q, *q ? '&' : '?', name, esc);
	curl_free(esc);
	free(q);
	return next;
}

/* "(more events: ...)": the command that shows the next page, pasted into
 * a shell: the same daemon, filter and page size. */
static void events_footer(ctl *c, const reply *r)
{
	char *cmd, *agg, *limit;
	if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r->json, "truncated")))
		return;
	if (!c->o.plugin ||
	    !cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(r->json, "next_after"))) {
		printf("(there may be more events than shown: page one plugin's with --plugin NAME "
		       "and --after SEQ)\n");
		return;
	}
	cmd = ctl_command(c);
	agg = c->o.aggregate ? shell_word(c->o.aggregate) : NULL;
	limit = limit_arg(c);
	printf("(there may be more events: %s events --plugin %s%s%s%s --after %.0f)\n", cmd,
	       c->o.plugin, agg ? " --aggregate " : "", agg ? agg : "", limit,
	       json_num(r->json, "next_after"));
	free(cmd);
	free(agg);
	free(limit);
}

static int cmd_events(ctl *c)
{
	char *q = xasprintf("%s", ""), *path, *limit = NULL;
	const cJSON *e;
	table t = {.ncols = 6};
	reply r;
	int rc;

	if (c->o.after && !c->o.plugin) {
		free(q);
		return usage_error("--after needs --plugin: each plugin numbers its events");
	}
	if (c->o.after && (!*c->o.after || c->o.after[strspn(c->o.after, "0123456789")] ||
	                   strlen(c->o.after) > 18)) {
		free(q);
		return usage_error("--after takes an event's seq (digits), not '%s'", c->o.after);
	}
	if (c->o.plugin)
		q = query_param(c, q, "plugin", c->o.plugin);
	if (c->o.after)
		q = query_param(c, q, "after", c->o.after);
	if (c->o.aggregate)
		q = query_param(c, q, "aggregate", c->o.aggregate);
	if (c->o.limit > 0) {
		limit = xasprintf("%ld", c->o.limit);
		q = query_param(c, q, "limit", limit);
	}
	path = xasprintf("/admin/events%s", q);
	rc = call(c, "GET", path, NULL, &r);
	free(q);
	free(path);
	free(limit);
	if (rc || c->o.json) {
		if (!rc)
			reply_free(&r);
		return rc;
	}
	table_row(&t, "TIME", "PLUGIN", "TYPE", "KEY", "WHERE", "ID");
	cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(r.json, "events")) {
		char *where = xasprintf("%s/%.0f/%.0f", json_str(e, "topic"),
		                        json_num(e, "partition"), json_num(e, "offset"));
		table_row(&t, json_str(e, "time"), json_str(e, "plugin"), json_str(e, "type"),
		          json_str(e, "key"), where, json_str(e, "id"));
		free(where);
	}
	if (t.nrows == 1)
		printf("no events\n");
	table_print(&t);
	events_footer(c, &r);
	reply_free(&r);
	return EXIT_OK;
}

/* --------------------------------------------------------------- backup */

static int cmd_backup(ctl *c)
{
	const cJSON *p;
	char *json = NULL;
	reply r;
	int rc, ok = 1;

	if (c->o.keep > 0) {
		cJSON *body = cJSON_CreateObject();
		jsonb_put_num(body, "keep", (double)c->o.keep, &ok);
		json = request_json(body, ok);
	}
	c->request_timeout_s = BACKUP_TIMEOUT_S;
	rc = call(c, "POST", "/admin/backup", json, &r);
	free(json);
	if (rc || c->o.json) {
		if (!rc)
			reply_free(&r);
		return rc;
	}
	cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(r.json, "plugins")) {
		char *bytes = num(json_num(p, "bytes"));
		printf("%s: %s (%s bytes)\n", json_str(p, "plugin"), json_str(p, "file"), bytes);
		free(bytes);
	}
	p = cJSON_GetObjectItemCaseSensitive(r.json, "sign_outs");
	if (p) {
		char *bytes = num(json_num(p, "bytes"));
		printf("sign-outs: %s (%s bytes)\n", json_str(p, "file"), bytes);
		free(bytes);
	}
	cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(r.json, "removed"))
		printf("removed the older backup %s\n", cJSON_GetStringValue(p));
	printf("backup in %s, taken at %s\n", json_str(r.json, "dir"), json_str(r.json, "time"));
	reply_free(&r);
	return EXIT_OK;
}

/* ------------------------------------------------------------- sign-out */

/* The most bytes of a subject: a token's sub (jwt.h), as the daemon takes
 * it in POST /admin/sign-out. */
#define SUBJECT_MAX ((int)sizeof(((jwt_claims *)0)->sub) - 1)

/* A subject as the daemon takes it, 1 to SUBJECT_MAX bytes of UTF-8:
 * checked here, so that a malformed one is the usage error it is (2), not
 * the daemon's refusal (1). */
static int subject_ok(const char *subject)
{
	size_t len = strlen(subject);
	long bad;

	if (!len || len > SUBJECT_MAX)
		return usage_error("'sign-out' takes a subject of 1 to %d bytes, not %zu",
		                   SUBJECT_MAX, len);
	if ((bad = json_utf8_error(subject, len)) >= 0)
		return usage_error("'sign-out' takes a subject in UTF-8: byte %ld is not UTF-8",
		                   bad + 1);
	return 0;
}

static int cmd_sign_out(ctl *c, const char *subject)
{
	cJSON *body = cJSON_CreateObject();
	char *json;
	reply r;
	int rc, ok = 1;

	jsonb_put_str(body, "subject", subject, &ok);
	json = request_json(body, ok);
	rc = call(c, "POST", "/admin/sign-out", json, &r);
	free(json);
	if (rc || c->o.json) {
		if (!rc)
			reply_free(&r);
		return rc;
	}
	printf("%s signed out at %s: the tokens the daemon signed for it before are refused\n",
	       json_str(r.json, "subject"), json_str(r.json, "signed_out_at"));
	reply_free(&r);
	return EXIT_OK;
}

/* ---------------------------------------------------------------- check */

/* evhostd next to this program (the build tree), in ../sbin (an install:
 * /usr/bin/evhostctl, /usr/sbin/evhostd), else on PATH. Replaces this
 * process, so its output and exit status are evhostd's. */
static int cmd_check(ctl *c)
{
	char self[PATH_MAX], *slash, *cand[2];
	char *const argv[] = {"evhostd", "--check-config", "-c", (char *)c->o.conf, NULL};
	ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);

	fflush(NULL);
	if (n > 0) {
		self[n] = '\0';
		if ((slash = strrchr(self, '/')))
			*slash = '\0';
		cand[0] = xasprintf("%s/evhostd", self);
		cand[1] = xasprintf("%s/../sbin/evhostd", self);
		for (int i = 0; i < 2; i++) {
			if (access(cand[i], X_OK) == 0)
				execv(cand[i], argv);
			free(cand[i]);
		}
	}
	execvp("evhostd", argv);
	say("cannot run evhostd --check-config: no evhostd next to evhostctl or on PATH (%s)",
	    strerror(errno));
	return EXIT_FAILED;
}

/* ------------------------------------------------------------ arguments */

/* What was printed must have reached stdout: a full disk or a closed
 * stdout, a reader gone with SIGPIPE ignored (systemd's default for its
 * services) would otherwise lose it with exit status 0, and a script
 * would take a cut --json answer, or none, for the whole. Said, and
 * `rc`, or 1 when it was 0. `seen`: errno as the output ended, for a
 * write that failed before this flush (stdio keeps only the flag). */
static int stdout_written(int rc, int seen)
{
	int err;
	errno = 0;
	if (fflush(stdout) == 0 && !ferror(stdout))
		return rc;
	err = errno ? errno : seen ? seen : EIO;
	say("cannot write to standard output: %s", strerror(err));
	return rc ? rc : EXIT_FAILED;
}

enum {
	OPT_URL = 256,
	OPT_TOKEN_FILE,
	OPT_JSON,
	OPT_LIMIT,
	OPT_ALL,
	OPT_FROM,
	OPT_TOPIC,
	OPT_SYSTEMD,
	OPT_TIMEOUT,
	OPT_PLUGIN,
	OPT_AGGREGATE,
	OPT_KEEP,
	OPT_KEEP_INBOX,
	OPT_AFTER,
};

static int parse_long(const char *opt, const char *v, long min, long max, long *out)
{
	char *end;
	long n;
	errno = 0;
	/* Digits only: strtol alone takes " 5", "+5" and "-0". */
	n = strtol(v, &end, 10);
	if (!*v || v[strspn(v, "0123456789")] || *end || errno || n < min || n > max)
		return usage_error("%s takes a number from %ld to %ld, not '%s'", opt, min, max, v);
	*out = n;
	return 0;
}

static int parse_opt(opts *o, int opt, const char *arg)
{
	switch (opt) {
	case 'c':
		o->conf = arg;
		o->conf_given = 1;
		return 0;
	case OPT_URL: o->url = arg; return 0;
	case OPT_TOKEN_FILE: o->token_file = arg; return 0;
	case OPT_JSON: o->json = 1; return 0;
	case OPT_ALL: o->all = 1; return 0;
	case OPT_FROM: o->from = arg; return 0;
	case OPT_SYSTEMD: o->systemd = 1; return 0;
	case OPT_PLUGIN:
		/* As the plugin argument of the other commands: not the daemon's 404 */
		if (!name_ok(arg))
			return usage_error("--plugin takes a plugin name (letters, digits, '_', "
			                   "'-'), not '%s'",
			                   arg);
		o->plugin = arg;
		return 0;
	case OPT_AGGREGATE: o->aggregate = arg; return 0;
	case OPT_KEEP: return parse_long("--keep", arg, 1, BACKUP_KEEP_MAX, &o->keep);
	case OPT_KEEP_INBOX: o->keep_inbox = 1; return 0;
	case OPT_AFTER: o->after = arg; return 0;
	case OPT_LIMIT: return parse_long("--limit", arg, 1, 1000, &o->limit);
	case OPT_TIMEOUT: return parse_long("--timeout", arg, 1, 3600, &o->timeout);
	case OPT_TOPIC:
		if (o->ntopics == sizeof o->topics / sizeof o->topics[0])
			return usage_error("too many --topic options");
		o->topics[o->ntopics++] = arg;
		return 0;
	default: return usage_error("unknown option");
	}
}

/* The commands, as pick_command names them. */
#define COMMANDS                                                                           \
	"|status|plugins|enable|disable|dlq list|dlq show|dlq redrive|replay|events|backup|"   \
	"sign-out|check|"

/* Options that only some commands take; `cmd` is "dlq list" etc. An unknown
 * command is said as that, not as an option that does not apply to it. */
static int check_opts(const opts *o, const char *cmd)
{
	static const struct {
		const char *opt, *cmds;
	} only[] = {
	    {"--limit", "|dlq list|dlq show|events|"},
	    {"--all", "|dlq redrive|"},
	    {"--from", "|replay|"},
	    {"--topic", "|replay|"},
	    {"--systemd", "|enable|disable|"},
	    {"--timeout", "|enable|disable|"},
	    {"--plugin", "|events|"},
	    {"--aggregate", "|events|"},
	    {"--keep", "|backup|"},
	    {"--keep-inbox", "|replay|"},
	    {"--after", "|events|dlq list|dlq show|dlq redrive|"},
	    /* check passes on evhostd's text: no JSON to print */
	    {"--json", "|status|plugins|enable|disable|dlq list|dlq show|dlq redrive|replay|"
	               "events|backup|sign-out|"},
	};
	int set[] = {o->limit > 0, o->all, o->from != NULL, o->ntopics > 0, o->systemd,
	             o->timeout > 0, o->plugin != NULL, o->aggregate != NULL, o->keep > 0,
	             o->keep_inbox, o->after != NULL, o->json};
	char key[64];
	snprintf(key, sizeof key, "|%s|", cmd);
	if (!strstr(COMMANDS, key))
		return usage_error("unknown command '%s'", cmd);
	for (size_t i = 0; i < sizeof only / sizeof only[0]; i++)
		if (set[i] && !strstr(only[i].cmds, key))
			return usage_error("%s does not apply to '%s'", only[i].opt, cmd);
	return 0;
}

/* A long option getopt_long refused: ambiguous when it begins two or more
 * (glibc says so only when opterr is set, and then in its own words), else
 * unknown. */
static int unknown_long(const struct option *longopts, const char *arg)
{
	const char *name = arg + 2;
	size_t len = strcspn(name, "=");
	char *names = NULL;
	int hits = 0;

	if (strncmp(arg, "--", 2) || !len)
		return usage_error("option '%s' is unknown", arg);
	for (size_t i = 0; longopts[i].name; i++) {
		char *next;
		if (strncmp(longopts[i].name, name, len))
			continue;
		next = xasprintf("%s%s'--%s'", names ? names : "", names ? ", " : "",
		                 longopts[i].name);
		free(names);
		names = next;
		hits++;
	}
	if (hits > 1) {
		int rc = usage_error("option '--%.*s' is ambiguous: it could be any of %s",
		                     (int)len, name, names);
		free(names);
		return rc;
	}
	free(names);
	return usage_error("option '%s' is unknown", arg);
}

static int parse_args(opts *o, int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"url", required_argument, NULL, OPT_URL},
	    {"token-file", required_argument, NULL, OPT_TOKEN_FILE},
	    {"json", no_argument, NULL, OPT_JSON},
	    {"limit", required_argument, NULL, OPT_LIMIT},
	    {"all", no_argument, NULL, OPT_ALL},
	    {"from", required_argument, NULL, OPT_FROM},
	    {"topic", required_argument, NULL, OPT_TOPIC},
	    {"systemd", no_argument, NULL, OPT_SYSTEMD},
	    {"timeout", required_argument, NULL, OPT_TIMEOUT},
	    {"plugin", required_argument, NULL, OPT_PLUGIN},
	    {"aggregate", required_argument, NULL, OPT_AGGREGATE},
	    {"keep", required_argument, NULL, OPT_KEEP},
	    {"keep-inbox", no_argument, NULL, OPT_KEEP_INBOX},
	    {"after", required_argument, NULL, OPT_AFTER},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {NULL, 0, NULL, 0},
	};
	int opt, rc;

	opterr = 0;
	/* The leading ':' tells a missing value (':') from an unknown option. */
	while ((opt = getopt_long(argc, argv, ":c:hV", longopts, NULL)) != -1) {
		if (opt == 'h') {
			usage(stdout);
			exit(stdout_written(EXIT_OK, 0));
		}
		if (opt == 'V') {
			printf("evhostctl %s\n", EVHOST_VERSION);
			exit(stdout_written(EXIT_OK, 0));
		}
		if (opt == ':')
			return usage_error("option '%s' needs a value", argv[optind - 1]);
		/* A long option given a value it does not take (--json=1): glibc
		 * puts its value in optopt, as it does an unknown short option's
		 * letter; -h and -V themselves never fail. */
		for (size_t i = 0; opt == '?' && optopt && longopts[i].name; i++)
			if (longopts[i].val == optopt)
				return usage_error("option '--%s' takes no value",
				                   longopts[i].name);
		if (opt == '?' && optopt && optopt < 256)
			return usage_error("option '-%c' is unknown", optopt);
		if (opt == '?')
			return unknown_long(longopts, argv[optind - 1]);
		if ((rc = parse_opt(o, opt, optarg)))
			return rc;
	}
	return 0;
}

/* ------------------------------------------------------------- dispatch */

static int need_args(const char *cmd, int have, int min, int max)
{
	if (have < min)
		return usage_error("'%s' needs %s", cmd,
		                   min == 1 ? "a plugin name" : "more arguments");
	if (max >= 0 && have > max)
		return usage_error("'%s' takes %d argument%s", cmd, max, max == 1 ? "" : "s");
	return 0;
}

static int plugin_arg(const char *cmd, char **args, int nargs, int max)
{
	int rc = need_args(cmd, nargs, 1, max);
	if (rc)
		return rc;
	if (!name_ok(args[0]))
		return usage_error("'%s' is not a plugin name (letters, digits, '_', '-')",
		                   args[0]);
	return 0;
}

/* Which command, its arguments checked; "dlq X" keeps both words. */
static int pick_command(char **args, int nargs, char *cmd, size_t cmdlen, int *skip)
{
	if (nargs < 1)
		return usage_error("no command given");
	*skip = 1;
	if (!strcmp(args[0], "dlq")) {
		if (nargs < 2 || (strcmp(args[1], "list") && strcmp(args[1], "show") &&
		                  strcmp(args[1], "redrive")))
			return usage_error("dlq takes list, show or redrive");
		*skip = 2;
		snprintf(cmd, cmdlen, "dlq %s", args[1]);
		return 0;
	}
	snprintf(cmd, cmdlen, "%s", args[0]);
	return 0;
}

static int run(ctl *c, const char *cmd, char **args, int n)
{
	int rc;
	if (!strcmp(cmd, "check"))
		return need_args(cmd, n, 0, 0) ? EXIT_USAGE : cmd_check(c);
	if (!strcmp(cmd, "status") || !strcmp(cmd, "plugins") || !strcmp(cmd, "events") ||
	    !strcmp(cmd, "backup")) {
		if ((rc = need_args(cmd, n, 0, 0)))
			return rc;
	} else if (!strcmp(cmd, "enable") || !strcmp(cmd, "disable") || !strcmp(cmd, "replay") ||
	           !strcmp(cmd, "dlq list") || !strcmp(cmd, "dlq show")) {
		if ((rc = plugin_arg(cmd, args, n, 1)))
			return rc;
		if (!strcmp(cmd, "replay") && (rc = replay_from_ok(c->o.from)))
			return rc;
	} else if (!strcmp(cmd, "dlq redrive")) {
		if ((rc = plugin_arg(cmd, args, n, -1)))
			return rc;
	} else if (!strcmp(cmd, "sign-out")) {
		if (n != 1)
			return usage_error("'sign-out' takes one subject (a user id)");
		if ((rc = subject_ok(args[0])))
			return rc;
	} else {
		return usage_error("unknown command '%s'", cmd);
	}
	if ((rc = resolve_url(c)))
		return rc;
	if (strcmp(cmd, "status") && strcmp(cmd, "enable") && strcmp(cmd, "disable") &&
	    (rc = need_admin(c)))
		return rc;
	if (!strcmp(cmd, "status"))
		return cmd_status(c);
	if (!strcmp(cmd, "plugins"))
		return cmd_plugins(c);
	if (!strcmp(cmd, "events"))
		return cmd_events(c);
	if (!strcmp(cmd, "backup"))
		return cmd_backup(c);
	if (!strcmp(cmd, "sign-out"))
		return cmd_sign_out(c, args[0]);
	if (!strcmp(cmd, "enable") || !strcmp(cmd, "disable"))
		return cmd_toggle(c, args[0], !strcmp(cmd, "enable"));
	if (!strcmp(cmd, "replay"))
		return cmd_replay(c, args[0]);
	if (!strcmp(cmd, "dlq list"))
		return cmd_dlq_list(c, args[0]);
	if (!strcmp(cmd, "dlq show"))
		return cmd_dlq_show(c, args[0]);
	return cmd_dlq_redrive(c, args[0], args + 1, n - 1);
}

int main(int argc, char **argv)
{
	ctl c;
	char cmd[32];
	int rc, skip, seen;

	memset(&c, 0, sizeof c);
	c.o.conf = EVHOST_DEFAULT_CONF;
	c.o.limit = -1;
	c.o.timeout = -1;
	if ((rc = parse_args(&c.o, argc, argv)))
		return rc;
	cJSON_InitHooks(&(cJSON_Hooks){.malloc_fn = json_malloc, .free_fn = free});
	if ((rc = pick_command(argv + optind, argc - optind, cmd, sizeof cmd, &skip)) ||
	    (rc = check_opts(&c.o, cmd)))
		return rc;
	if (c.o.timeout < 0)
		c.o.timeout = RELOAD_TIMEOUT_S;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || !(c.curl = curl_easy_init())) {
		say("cannot initialise libcurl");
		return EXIT_FAILED;
	}
	rc = run(&c, cmd, argv + optind + skip, argc - optind - skip);
	seen = ferror(stdout) ? errno : 0; /* before the cleanup's calls change it */
	curl_easy_cleanup(c.curl);
	curl_global_cleanup();
	if (c.token) {
		explicit_bzero(c.token, strlen(c.token));
		free(c.token);
	}
	free(c.url);
	if (c.cfg_loaded)
		settings_free(&c.set);
	diag_free(&c.cfg_problems);
	diag_free(&c.cfg_unread);
	cfg_free(&c.cfg);
	return stdout_written(rc, seen);
}
