#include "cluster/base/flags.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

static const struct flag *flag_find(const struct flag *table, const char *name, size_t len)
{
	for (const struct flag *f = table; f->name; f++)
		if (strlen(f->name) == len && !strncmp(f->name, name, len))
			return f;
	return NULL;
}

static int flag_set(const struct flag *f, const char *value)
{
	char *end;

	switch (f->type) {
	case FLAG_STRING:
		/* argv outlives every daemon: point into it instead of copying. */
		*(char **)f->target = (char *)value;
		return 0;
	case FLAG_INT: {
		errno = 0;
		long v = strtol(value, &end, 10);
		if (errno || end == value || *end || v < INT_MIN || v > INT_MAX)
			return -EINVAL;
		*(int *)f->target = (int)v;
		return 0;
	}
	case FLAG_DOUBLE: {
		errno = 0;
		double v = strtod(value, &end);
		if (errno || end == value || *end)
			return -EINVAL;
		*(double *)f->target = v;
		return 0;
	}
	case FLAG_BOOL:
		if (!strcmp(value, "true") || !strcmp(value, "1") || !strcmp(value, "t"))
			*(bool *)f->target = true;
		else if (!strcmp(value, "false") || !strcmp(value, "0") || !strcmp(value, "f"))
			*(bool *)f->target = false;
		else
			return -EINVAL;
		return 0;
	}
	return -EINVAL;
}

void flags_usage(const struct flag *table, const char *cmd, const char *summary, FILE *out)
{
	fprintf(out, "usage: kelp %s [flags]\n  %s\n\nflags:\n", cmd, summary);
	for (const struct flag *f = table; f->name; f++) {
		char def[64];

		if (f->alias)
			continue;
		switch (f->type) {
		case FLAG_STRING: {
			const char *s = *(char **)f->target;
			fprintf(out, "  -%s string\n\t%s (default \"%s\")\n", f->name, f->help,
				s ? s : "");
			continue;
		}
		case FLAG_INT:
			snprintf(def, sizeof(def), "%d", *(int *)f->target);
			break;
		case FLAG_DOUBLE:
			snprintf(def, sizeof(def), "%g", *(double *)f->target);
			break;
		case FLAG_BOOL:
			snprintf(def, sizeof(def), "%s", *(bool *)f->target ? "true" : "false");
			break;
		}
		fprintf(out, "  -%s %s\n\t%s (default %s)\n", f->name,
			f->type == FLAG_INT	 ? "int"
			: f->type == FLAG_DOUBLE ? "float"
						 : "bool",
			f->help, def);
	}
}

int flags_parse(const struct flag *table, const char *cmd, const char *summary, int argc,
		char **argv)
{
	int i;

	for (i = 0; i < argc; i++) {
		const char *arg = argv[i], *name, *eq, *value;
		const struct flag *f;
		size_t len;

		if (arg[0] != '-' || arg[1] == '\0')
			return i;
		if (!strcmp(arg, "--"))
			return i + 1;
		name = arg + 1 + (arg[1] == '-');
		if (!strcmp(name, "h") || !strcmp(name, "help")) {
			flags_usage(table, cmd, summary, stdout);
			return -2;
		}
		eq = strchr(name, '=');
		len = eq ? (size_t)(eq - name) : strlen(name);
		f = flag_find(table, name, len);
		if (!f) {
			fprintf(stderr, "kelp %s: unknown flag -%.*s (see kelp %s -h)\n", cmd,
				(int)len, name, cmd);
			return -1;
		}
		if (eq) {
			value = eq + 1;
		} else if (f->type == FLAG_BOOL) {
			value = "true";
		} else if (i + 1 < argc) {
			value = argv[++i];
		} else {
			fprintf(stderr, "kelp %s: flag -%s needs a value\n", cmd, f->name);
			return -1;
		}
		if (flag_set(f, value) < 0) {
			fprintf(stderr, "kelp %s: bad value \"%s\" for flag -%s\n", cmd, value,
				f->name);
			return -1;
		}
	}
	return i;
}
