/* libFuzzer: a configuration read from its files (config.c: cfg_load, the
 * main file then every *.conf of its conf.d, cfg_load_dir): drop-ins of any
 * name and content, a key set by several files, keys no schema knows. Each
 * input's files are written to a directory of their own, removed after it.
 * fuzz_config reads one text; this one reads files, as evhostd and
 * evhostctl do.
 *
 * The input: up to FILES files, each a name (a length byte, then that many
 * bytes; '/' and NUL in it as '_'; length bit 7: ".conf" added) and its
 * text (a length byte, then that many bytes times 4 at most, the rest of
 * the input for the last). A name given twice is one file, the last text.
 * The main file (a fixed one, conf.d beside it) comes first.
 *
 * Checked, against a model that reads each file alone (cfg_load_string)
 * and merges them itself: only names that are drop-ins (*.conf, not
 * hidden) are read, in strcmp order; every (section, key) has the value of
 * the last file that sets it, named with its line; nothing else is there;
 * the sections are those the files have, each where it was first seen.
 * cfg_load fails exactly when a file was not read whole, and then says
 * why, at that file; the settings read from it fail only with a message,
 * and every message says something. */
#define _GNU_SOURCE /* memmem */
#include <dirent.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "diag.h"
#include "fuzz_modes.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FILES 8
#define MAIN_TEXT "[host]\nname = fuzz\nconfdir = conf.d\n\n[plugin.a]\nkey = main\n"

typedef struct fz_file {
	char name[256];
	char path[1024];
	const uint8_t *text; /* may hold NULs */
	size_t len;
} fz_file;

/* One (section, key) of the model: where its value comes from. */
typedef struct fz_entry {
	const cfg_entry *e; /* in the reading of that file alone */
	const char *file;
} fz_entry;

static char root[512], confdir[544], main_file[544];

static void rm_confdir(void)
{
	DIR *d = opendir(confdir);
	struct dirent *de;
	char path[1024];
	if (!d)
		return;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
			snprintf(path, sizeof path, "%s/%s", confdir, de->d_name);
			unlink(path);
		}
	closedir(d);
	rmdir(confdir);
}

static void cleanup(void)
{
	rm_confdir();
	unlink(main_file);
	rmdir(root);
}

static void write_file(const char *path, const void *p, size_t n)
{
	FILE *fp = fopen(path, "we");
	if (!fp || fwrite(p, 1, n, fp) != n || fclose(fp) != 0)
		abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	fuzz_temp(root, sizeof root, "fuzz_confd", 0);
	snprintf(confdir, sizeof confdir, "%s/conf.d", root);
	snprintf(main_file, sizeof main_file, "%s/evhost.conf", root);
	write_file(main_file, MAIN_TEXT, strlen(MAIN_TEXT));
	atexit(cleanup);
	return 0;
}

/* As config.c's is_dropin_name, said again: the model's own. */
static int dropin(const char *name)
{
	size_t n = strlen(name);
	return name[0] != '.' && n > 5 && !strcmp(name + n - 5, ".conf");
}

static int by_name(const void *a, const void *b)
{
	return strcmp(((const fz_file *)a)->name, ((const fz_file *)b)->name);
}

/* The input's files (the last text for a name given twice); how many. */
static size_t read_files(const uint8_t *p, size_t n, fz_file *f)
{
	size_t nf = 0;
	while (n >= 2 && nf < FILES) {
		size_t nlen = p[0] & 0x7f, tlen, i;
		int conf = p[0] & 0x80;
		fz_file one;
		p++, n--;
		if (nlen > n)
			nlen = n;
		for (i = 0; i < nlen; i++)
			one.name[i] = p[i] == '/' || !p[i] ? '_' : (char)p[i];
		snprintf(one.name + nlen, sizeof one.name - nlen, "%s", conf ? ".conf" : "");
		p += nlen, n -= nlen;
		tlen = n ? (size_t)p[0] * 4 : 0;
		if (n)
			p++, n--;
		if (tlen > n)
			tlen = n;
		one.text = p;
		one.len = tlen;
		p += tlen, n -= tlen;
		if (!one.name[0] || !strcmp(one.name, ".") || !strcmp(one.name, ".."))
			continue; /* no such file can be made */
		snprintf(one.path, sizeof one.path, "%s/%s", confdir, one.name);
		for (i = 0; i < nf && strcmp(f[i].name, one.name); i++)
			;
		f[i] = one;
		if (i == nf)
			nf++;
	}
	return nf;
}

static int said_at(const diag *d, const char *path)
{
	size_t n = strlen(path);
	for (size_t i = 0; i < d->n; i++)
		if (!strncmp(d->msgs[i], path, n) && d->msgs[i][n] == ':')
			return 1;
	return 0;
}

/* The model: each file read alone, main first, then the drop-ins in strcmp
 * order, merged; compared with what cfg_load made of them all. */
static void check(const cfg *c, const diag *d, int rc, const fz_file *f, size_t nf)
{
	cfg alone[FILES + 1];
	const char *paths[FILES + 1];
	fz_entry *model = NULL;
	const char **secs = NULL;
	size_t nmodel = 0, nsecs = 0, nread = 0;
	int failed = 0;
	memset(alone, 0, sizeof alone);
	for (size_t i = 0; i <= nf; i++) {
		diag ad = {0};
		char *text;
		size_t len = i ? f[i - 1].len : strlen(MAIN_TEXT);
		const char *src = i ? (const char *)f[i - 1].text : MAIN_TEXT;
		if (i && !dropin(f[i - 1].name))
			continue;
		paths[nread] = i ? f[i - 1].path : main_file;
		if (memchr(src, '\0', len)) { /* refused whole: nothing of it read */
			CHECK(said_at(d, paths[nread]));
			failed = 1;
			continue;
		}
		if (!(text = malloc(len + 1)))
			abort();
		memcpy(text, src, len);
		text[len] = '\0';
		if (cfg_load_string(&alone[nread], text, paths[nread], &ad) != 0) {
			CHECK(ad.n && said_at(d, paths[nread]));
			failed = 1;
		}
		free(text);
		diag_free(&ad);
		nread++;
	}
	if (!(model = calloc(c->n + 1, sizeof *model)) || !(secs = calloc(c->nsections + 1,
	                                                                   sizeof *secs)))
		abort();
	for (size_t i = 0; i < nread; i++) {
		for (size_t j = 0; j < alone[i].n; j++) {
			const cfg_entry *e = &alone[i].v[j];
			size_t k;
			for (k = 0; k < nmodel && (strcmp(model[k].e->section, e->section) ||
			                           strcmp(model[k].e->key, e->key));
			     k++)
				;
			CHECK(k < c->n); /* none missing */
			model[k] = (fz_entry){e, paths[i]};
			nmodel += k == nmodel;
		}
		for (size_t j = 0; j < alone[i].nsections; j++) {
			size_t k;
			for (k = 0; k < nsecs && strcmp(secs[k], alone[i].sections[j].name); k++)
				;
			if (k < nsecs)
				continue;
			CHECK(k < c->nsections);
			CHECK(!strcmp(c->sections[k].name, alone[i].sections[j].name));
			CHECK(!strcmp(c->sections[k].file, paths[i]) &&
			      c->sections[k].line == alone[i].sections[j].line);
			secs[nsecs++] = c->sections[k].name;
		}
	}
	CHECK(nmodel == c->n && nsecs == c->nsections);
	for (size_t k = 0; k < nmodel; k++) {
		const cfg_entry *got = cfg_find(c, model[k].e->section, model[k].e->key);
		CHECK(got && !strcmp(got->value, model[k].e->value));
		CHECK(!strcmp(got->file, model[k].file) && got->line == model[k].e->line);
	}
	CHECK((rc != 0) == failed && c->dropins_incomplete == failed && !c->main_incomplete);
	for (size_t i = 0; i < nread; i++)
		cfg_free(&alone[i]);
	free(model);
	free(secs);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fz_file f[FILES];
	uint8_t *copy;
	size_t nf, n0;
	cfg c;
	diag d = {0};
	settings s;
	int rc, src;
	if (size > 8192)
		return 0;
	/* *_file keys make settings_from_cfg read the named file (as in
	 * fuzz_config, which says why): made unknown ones. */
	if (!(copy = malloc(size + 1)))
		abort();
	memcpy(copy, data, size);
	for (uint8_t *p = copy; (p = memmem(p, size - (size_t)(p - copy), "_file", 5)); p += 5)
		p[4] = '?';
	nf = read_files(copy, size, f);
	if (mkdir(confdir, 0700) != 0)
		abort();
	for (size_t i = 0; i < nf; i++)
		write_file(f[i].path, f[i].text, f[i].len);
	qsort(f, nf, sizeof *f, by_name);
	rc = cfg_load(&c, main_file, &d);
	check(&c, &d, rc, f, nf);
	n0 = diag_count(&d);
	src = settings_from_cfg(&c, &s, &d);
	CHECK(src == 0 ? diag_count(&d) == n0 : diag_count(&d) > n0);
	for (size_t i = 0; i < d.n; i++)
		CHECK(d.msgs[i][0]); /* every diagnostic says something */
	settings_free(&s);
	cfg_free(&c);
	diag_free(&d);
	rm_confdir();
	free(copy);
	return 0;
}
