/*
 * driver: replays fuzz inputs without libFuzzer, so every build can run the seed
 * corpora as regression tests.
 *
 * usage: fuzz_<target>_replay PATH...
 * Each PATH is a file or a directory; a directory's regular files are run in name
 * order (not recursively; names starting with '.' are skipped). Each input is read
 * into a buffer of exactly its size, so sanitizers catch reads past the end. Prints
 * how many inputs ran. Exit status: 0 when all ran, 1 when a path could not be read,
 * 2 for a usage error; a bug in the target crashes or aborts the process.
 */
#include "fuzz.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int run_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	size_t len = 0, cap = 0;

	if (!f) {
		fprintf(stderr, "driver: cannot open '%s': %s\n", path, strerror(errno));
		return -1;
	}
	for (;;) {
		size_t n;

		if (len == cap) {
			uint8_t *grown;

			cap = cap ? cap * 2 : 4096;
			grown = realloc(buf, cap);
			if (!grown) {
				fprintf(stderr, "driver: out of memory reading '%s'\n", path);
				free(buf);
				fclose(f);
				return -1;
			}
			buf = grown;
		}
		n = fread(buf + len, 1, cap - len, f);
		len += n;
		if (n == 0)
			break;
	}
	if (ferror(f)) {
		fprintf(stderr, "driver: cannot read '%s'\n", path);
		free(buf);
		fclose(f);
		return -1;
	}
	fclose(f);

	/* An exact-size copy: the slack after len would hide overreads from ASan. */
	{
		uint8_t *exact = malloc(len ? len : 1);

		if (!exact) {
			free(buf);
			return -1;
		}
		memcpy(exact, buf, len);
		free(buf);
		LLVMFuzzerTestOneInput(exact, len);
		free(exact);
	}
	return 0;
}

static int skip_hidden(const struct dirent *d)
{
	return d->d_name[0] != '.';
}

/* Runs every regular file in dir; returns how many, or -1. */
static long run_dir(const char *dir)
{
	struct dirent **names;
	long ran = 0;
	int n = scandir(dir, &names, skip_hidden, alphasort);

	if (n < 0) {
		fprintf(stderr, "driver: cannot list '%s': %s\n", dir, strerror(errno));
		return -1;
	}
	for (int i = 0; i < n; i++) {
		size_t len = strlen(dir) + strlen(names[i]->d_name) + 2;
		char *path = malloc(len);
		struct stat st;

		if (path) {
			snprintf(path, len, "%s/%s", dir, names[i]->d_name);
			if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
				if (run_file(path) < 0)
					ran = -1;
				else if (ran >= 0)
					ran++;
			}
			free(path);
		} else {
			ran = -1;
		}
		free(names[i]);
	}
	free(names);
	return ran;
}

int main(int argc, char **argv)
{
	long total = 0;
	int status = 0;

	if (argc < 2) {
		fprintf(stderr, "usage: %s FILE_OR_DIR...\n", argv[0]);
		return 2;
	}
	for (int i = 1; i < argc; i++) {
		struct stat st;
		long ran;

		if (stat(argv[i], &st) != 0) {
			fprintf(stderr, "driver: cannot stat '%s': %s\n", argv[i], strerror(errno));
			status = 1;
			continue;
		}
		if (S_ISDIR(st.st_mode))
			ran = run_dir(argv[i]);
		else
			ran = run_file(argv[i]) < 0 ? -1 : 1;
		if (ran < 0)
			status = 1;
		else
			total += ran;
	}
	printf("ran %ld inputs\n", total);
	return status;
}
