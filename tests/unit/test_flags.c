/*
 * Unit tests for cluster/base/flags: SeaweedFS-style command-line flags.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cluster/base/flags.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

struct opts {
	char *dir;
	int port;
	bool debug;
	double ratio;
};

static struct opts o;

static const struct flag table[] = {
    {"dir", FLAG_STRING, &o.dir, "data directory", false},
    {"port", FLAG_INT, &o.port, "http listen port", false},
    {"p", FLAG_INT, &o.port, "alias of -port", true},
    {"debug", FLAG_BOOL, &o.debug, "verbose logging", false},
    {"ratio", FLAG_DOUBLE, &o.ratio, "garbage threshold", false},
    {NULL, FLAG_STRING, NULL, NULL, false},
};

/* String values point into argv (no copy, nothing to free). */
static int reset(void **state)
{
	o = (struct opts){.dir = NULL, .port = 8080, .debug = false, .ratio = 0.3};
	return 0;
}

/* Parses a NULL-terminated list of arguments; the argv copy is checked for changes. */
static int parse_args(const char *first, ...)
{
	char *argv[32], *copy[32];
	int argc = 0, rc;
	va_list ap;

	va_start(ap, first);
	for (const char *a = first; a; a = va_arg(ap, const char *)) {
		assert_true(argc < 32);
		argv[argc] = (char *)a;
		copy[argc] = (char *)a;
		argc++;
	}
	va_end(ap);
	rc = flags_parse(table, "test", "a test command", argc, argv);
	for (int i = 0; i < argc; i++)
		assert_ptr_equal(argv[i], copy[i]);
	return rc;
}

static void test_int_spellings(void **state)
{
	assert_int_equal(parse_args("-port=1", NULL), 1);
	assert_int_equal(o.port, 1);
	assert_int_equal(parse_args("-port", "2", NULL), 2);
	assert_int_equal(o.port, 2);
	assert_int_equal(parse_args("--port=3", NULL), 1);
	assert_int_equal(o.port, 3);
	assert_int_equal(parse_args("--port", "4", NULL), 2);
	assert_int_equal(o.port, 4);
	/* Aliases are accepted. */
	assert_int_equal(parse_args("-p", "5", NULL), 2);
	assert_int_equal(o.port, 5);
	assert_int_equal(parse_args("--p=6", NULL), 1);
	assert_int_equal(o.port, 6);
	/* Limits and signs. */
	assert_int_equal(parse_args("-port=-7", NULL), 1);
	assert_int_equal(o.port, -7);
	assert_int_equal(parse_args("-port", "-8", NULL), 2);
	assert_int_equal(o.port, -8);
	assert_int_equal(parse_args("-port=2147483647", NULL), 1);
	assert_int_equal(o.port, 2147483647);
	assert_int_equal(parse_args("-port=0", NULL), 1);
	assert_int_equal(o.port, 0);
	/* The last occurrence wins. */
	assert_int_equal(parse_args("-port=1", "--port", "9", "-p=10", NULL), 4);
	assert_int_equal(o.port, 10);
}

static void test_bad_int(void **state)
{
	static const char *bad[] = {
	    "-port=abc",
	    "-port=12x",
	    "-port=",
	    "-port=1.5",
	    "-port= 1x",
	    "-port=2147483648",
	    "-port=99999999999999999999",
	    "-port=0x10z",
	};

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		o.port = 8080;
		if (parse_args(bad[i], NULL) != -1)
			fail_msg("\"%s\" was accepted", bad[i]);
		assert_int_equal(o.port, 8080);
	}
	assert_int_equal(parse_args("-port", "x", NULL), -1);
	assert_int_equal(parse_args("-port", "", NULL), -1);
	assert_int_equal(o.port, 8080);
}

static void test_bool_forms(void **state)
{
	static const struct {
		const char *arg;
		bool want;
	} cases[] = {
	    {"-debug", true},	      {"--debug", true},   {"-debug=true", true},
	    {"-debug=1", true},	      {"-debug=t", true},  {"--debug=true", true},
	    {"-debug=false", false},  {"-debug=0", false}, {"-debug=f", false},
	    {"--debug=false", false},
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		o.debug = !cases[i].want;
		if (parse_args(cases[i].arg, NULL) != 1)
			fail_msg("\"%s\" was rejected", cases[i].arg);
		assert_int_equal(o.debug, cases[i].want);
	}
	/* A bool never takes the next argument: "false" is positional. */
	o.debug = false;
	assert_int_equal(parse_args("-debug", "false", NULL), 1);
	assert_true(o.debug);
	/* Bad bool values. */
	assert_int_equal(parse_args("-debug=yes", NULL), -1);
	assert_int_equal(parse_args("-debug=", NULL), -1);
	assert_int_equal(parse_args("-debug=TRUE2", NULL), -1);
}

static void test_string_and_double(void **state)
{
	static const char arg[] = "-dir=/tmp/a";

	assert_int_equal(parse_args(arg, NULL), 1);
	assert_string_equal(o.dir, "/tmp/a");
	assert_ptr_equal(o.dir, arg + 5);
	assert_int_equal(parse_args("-dir", "/tmp/b", NULL), 2);
	assert_string_equal(o.dir, "/tmp/b");
	assert_int_equal(parse_args("--dir", "/tmp/c", NULL), 2);
	assert_string_equal(o.dir, "/tmp/c");
	assert_int_equal(parse_args("--dir=/tmp/d", NULL), 1);
	assert_string_equal(o.dir, "/tmp/d");
	/* Only the first '=' splits. */
	assert_int_equal(parse_args("-dir=a=b", NULL), 1);
	assert_string_equal(o.dir, "a=b");
	/* Empty values are fine for strings. */
	assert_int_equal(parse_args("-dir=", NULL), 1);
	assert_string_equal(o.dir, "");
	/* As in Go, a non-bool flag takes the next argument even if it looks like a flag. */
	assert_int_equal(parse_args("-dir", "-port=1", NULL), 2);
	assert_string_equal(o.dir, "-port=1");
	assert_int_equal(o.port, 8080);
	o.dir = NULL;

	assert_int_equal(parse_args("-ratio=0.5", NULL), 1);
	assert_true(o.ratio == 0.5);
	assert_int_equal(parse_args("-ratio", "1e3", NULL), 2);
	assert_true(o.ratio == 1000.0);
	assert_int_equal(parse_args("--ratio=-2.25", NULL), 1);
	assert_true(o.ratio == -2.25);
	assert_int_equal(parse_args("-ratio=abc", NULL), -1);
	assert_int_equal(parse_args("-ratio=1.5x", NULL), -1);
	assert_int_equal(parse_args("-ratio=", NULL), -1);
	assert_int_equal(parse_args("-ratio=1e999", NULL), -1);
	assert_true(o.ratio == -2.25);
}

static void test_unknown_and_missing(void **state)
{
	assert_int_equal(parse_args("-nope", NULL), -1);
	assert_int_equal(parse_args("-nope=1", NULL), -1);
	assert_int_equal(parse_args("--nope", "1", NULL), -1);
	assert_int_equal(parse_args("---port=1", NULL), -1);
	assert_int_equal(parse_args("-Port=1", NULL), -1);
	assert_int_equal(parse_args("-por=1", NULL), -1);
	assert_int_equal(parse_args("-portx=1", NULL), -1);
	assert_int_equal(parse_args("-=1", NULL), -1);
	assert_int_equal(parse_args("-port=1", "-nope", "-port=2", NULL), -1);
	/* A value is missing at the end of argv. */
	assert_int_equal(parse_args("-port", NULL), -1);
	assert_int_equal(parse_args("--dir", NULL), -1);
	assert_int_equal(parse_args("-ratio", NULL), -1);
	assert_int_equal(parse_args("-debug", "-port", NULL), -1);
	assert_null(o.dir);
}

static void test_positional(void **state)
{
	char *none[] = {NULL};

	assert_int_equal(flags_parse(table, "test", "summary", 0, none), 0);
	assert_int_equal(parse_args("file", NULL), 0);
	assert_int_equal(parse_args("-port=1", "file", "-port=2", NULL), 1);
	/* Parsing stops at the first positional argument. */
	assert_int_equal(o.port, 1);
	assert_int_equal(parse_args("-port", "3", "a", "b", NULL), 2);
	assert_int_equal(o.port, 3);
	/* "-" alone is positional (stdin, by convention). */
	assert_int_equal(parse_args("-debug", "-", "-port=4", NULL), 1);
	assert_int_equal(o.port, 3);
	/* "--" ends the flags and is consumed. */
	assert_int_equal(parse_args("-port=5", "--", "-port=6", NULL), 2);
	assert_int_equal(o.port, 5);
	assert_int_equal(parse_args("--", NULL), 1);
	/* Only flags: the index is argc. */
	assert_int_equal(parse_args("-port=7", "-debug", "-dir", "x", NULL), 4);
	assert_int_equal(o.port, 7);
	assert_string_equal(o.dir, "x");
}

static void test_help(void **state)
{
	assert_int_equal(parse_args("-h", NULL), -2);
	assert_int_equal(parse_args("-help", NULL), -2);
	assert_int_equal(parse_args("--help", NULL), -2);
	assert_int_equal(parse_args("--h", NULL), -2);
	assert_int_equal(parse_args("-port=1", "-h", NULL), -2);
	/* Help wins even over a later bad flag, and after it nothing is parsed. */
	assert_int_equal(parse_args("-h", "-nope", NULL), -2);
	o.port = 8080;
	assert_int_equal(parse_args("-h", "-port=2", NULL), -2);
	assert_int_equal(o.port, 8080);
	/* But not after a positional argument. */
	assert_int_equal(parse_args("x", "-h", NULL), 0);
}

static void test_usage(void **state)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	assert_non_null(f);
	o.dir = "/data";
	flags_usage(table, "volume", "start a volume server", f);
	fclose(f);
	assert_non_null(strstr(text, "kelp volume"));
	assert_non_null(strstr(text, "start a volume server"));
	assert_non_null(strstr(text, "-dir string"));
	assert_non_null(strstr(text, "(default \"/data\")"));
	assert_non_null(strstr(text, "-port int"));
	assert_non_null(strstr(text, "(default 8080)"));
	assert_non_null(strstr(text, "-debug bool"));
	assert_non_null(strstr(text, "(default false)"));
	assert_non_null(strstr(text, "-ratio float"));
	assert_non_null(strstr(text, "(default 0.3)"));
	assert_non_null(strstr(text, "http listen port"));
	/* Aliases are not listed. */
	assert_null(strstr(text, "-p int"));
	assert_null(strstr(text, "alias of -port"));
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_int_spellings, reset, reset),
	    cmocka_unit_test_setup_teardown(test_bad_int, reset, reset),
	    cmocka_unit_test_setup_teardown(test_bool_forms, reset, reset),
	    cmocka_unit_test_setup_teardown(test_string_and_double, reset, reset),
	    cmocka_unit_test_setup_teardown(test_unknown_and_missing, reset, reset),
	    cmocka_unit_test_setup_teardown(test_positional, reset, reset),
	    cmocka_unit_test_setup_teardown(test_help, reset, reset),
	    cmocka_unit_test_setup_teardown(test_usage, reset, reset),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
