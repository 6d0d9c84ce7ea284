/* libFuzzer: the JWKS cache, state_dir/jwks-cache.json, which evhostd
 * reads back at a start while the provider is down (jwksfetch.c:
 * use_cache) and writes after each good fetch (save_cache). Whoever can
 * write state_dir, or a provider's set kept there, chooses its bytes.
 * jwksfetch.c is compiled in (as fuzz_dlq does admin.c) for its static
 * functions; no network: the fetcher is made but never started.
 *
 * The input: a mode byte, then the rest. Mode bit 0 clear: the rest is the
 * whole cache file. Set: the rest is a set as a provider answers it, kept
 * by save_cache (as fetch_once keeps every set it takes) and read back by a
 * fresh fetcher of the same URL (bits 1-2 pick the URL). Either way the
 * file is written into a directory of this run's, removed at exit.
 *
 * Checked: a cache read is said in the log, naming the file, whether its
 * keys are used or not; they are used only with at least one key loaded.
 * A set taken from the provider comes back from the cache as the same set
 * (its fingerprint: the keys' PEM, kids, and those left out), used when it
 * has a key evhost can use and not otherwise, and the file written is one
 * strict JSON text, UTF-8 when the set is. */
#define _GNU_SOURCE /* as jwksfetch.c */
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_modes.h"
#include "../../host/jwksfetch.c"
#include "json.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[512], cache[576], logfile[544];

/* The URLs a cache may be of: plain, with a query (which the file keeps as
 * a digest only), with bytes a JSON string must escape. */
static const char *const urls[4] = {
    "http://idp.example/jwks", "http://idp.example/keys?api_key=s3cr%22t&x=%5C",
    "http://idp.example/\"quoted\"\\back", "http://idp.example/caf\xc3\xa9/\x01"};

/* The file at `path`, NUL-terminated, and its length; NULL when unread. */
static char *slurp(const char *path, size_t *len)
{
	FILE *fp = fopen(path, "re");
	char *text = NULL;
	long n;
	if (!fp)
		return NULL;
	if (fseek(fp, 0, SEEK_END) == 0 && (n = ftell(fp)) >= 0 && fseek(fp, 0, SEEK_SET) == 0 &&
	    (text = malloc((size_t)n + 1))) {
		*len = fread(text, 1, (size_t)n, fp);
		text[*len] = '\0';
	}
	fclose(fp);
	return text;
}

static void cleanup(void)
{
	unlink(cache);
	unlink(logfile);
	rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char err[512];
	(void)argc, (void)argv;
	log_setup(EVH_LOG_INFO, LOG_FORMAT_TEXT);
	/* Without OpenSSL no key loads, and no cache is ever used: the
	 * properties of one that is would go unchecked. */
	if (tls_compat_load(err, sizeof err) != 0) {
		fprintf(stderr, "fuzz_jwks_cache: %s\n", err);
		abort();
	}
	fuzz_temp(dir, sizeof dir, "fuzz_jwks_cache", 0);
	snprintf(cache, sizeof cache, "%s/" CACHE_NAME, dir);
	snprintf(logfile, sizeof logfile, "%s/log", dir);
	atexit(cleanup);
	return 0;
}

static jwks_fetcher *fetcher(const char *url)
{
	settings s;
	char err[256];
	jwks_fetcher *f;
	memset(&s, 0, sizeof s);
	s.jwks_url = (char *)url;
	s.jwks_host = (char *)"idp.example";
	s.jwks_port = (char *)"80";
	s.jwks_target = (char *)"/jwks";
	s.jwt_public_issuer = (char *)"https://idp.example/";
	s.state_dir = dir;
	s.jwks_refresh_ms = 3600000;
	s.jwks_cache_max_age_s = 7 * 86400;
	if (!(f = jwks_fetcher_new(&s, err, sizeof err)))
		abort();
	return f;
}

/* use_cache(f) with the log caught in `logfile`: its result, and whether
 * a line named the cache. */
static int read_back(jwks_fetcher *f, int *said)
{
	int fd = open(logfile, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600), saved = dup(2), rc;
	size_t n;
	char *text;
	if (fd < 0 || saved < 0 || dup2(fd, 2) < 0)
		abort();
	rc = use_cache(f);
	if (dup2(saved, 2) < 0)
		abort();
	close(saved);
	close(fd);
	text = slurp(logfile, &n);
	*said = text && strstr(text, cache);
	free(text);
	return rc;
}

static void write_file(const uint8_t *p, size_t n)
{
	int fd = open(cache, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || write(fd, p, n) != (ssize_t)n)
		abort();
	close(fd);
}

/* A cache file as found: used only with keys, said either way. */
static void as_file(const uint8_t *p, size_t n)
{
	jwks_fetcher *f = fetcher(urls[0]);
	int said, rc;
	write_file(p, n);
	rc = read_back(f, &said);
	CHECK(said);
	CHECK(rc == 0 ? f->keys && f->nrsa + f->nec > 0 && f->fingerprint : !f->keys);
	jwks_fetcher_free(f);
}

/* A set the provider answered: kept, and read back as itself. */
static void round_trip(const uint8_t *p, size_t n, const char *url)
{
	jwks_fetcher *f = fetcher(url), *again;
	char err[512], *file;
	loaded l;
	int rc, said, back;
	size_t len, at;
	rc = load_set((const char *)p, n, &l, err, sizeof err);
	if (rc < 0) { /* not taken: fetch_once keeps nothing then */
		CHECK(err[0]);
		jwks_fetcher_free(f);
		return;
	}
	own_cache(f);
	unlink(cache);
	save_cache(f, (const char *)p, n);
	file = slurp(cache, &len);
	CHECK(file && json_check(file, len, 64, &at) == JSON_OK);
	/* The URL is escaped into it; the set goes in as it came. */
	CHECK(json_utf8_error((const char *)p, n) >= 0 || json_utf8_error(file, len) < 0);
	free(file);
	again = fetcher(url);
	back = read_back(again, &said);
	CHECK(said);
	if (rc == 0) {
		CHECK(back == 0 && again->keys);
		CHECK(!strcmp(again->fingerprint, l.fingerprint));
		CHECK(again->nrsa == l.nrsa && again->nec == l.nec);
		keys_free(l.keys);
	} else {
		CHECK(back != 0 && !again->keys);
	}
	free(l.fingerprint);
	own_cache(NULL);
	jwks_fetcher_free(again);
	jwks_fetcher_free(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!size || size > 65536)
		return 0;
	if (data[0] & 1)
		round_trip(data + 1, size - 1, urls[(data[0] >> 1) & 3]);
	else
		as_file(data + 1, size - 1);
	return 0;
}
