/*
 * test_shell: the shell's line parser (commands split on ';', words on blanks, quotes
 * and backslashes) and its collection pattern match.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "cluster/client/shell.h"

static void parse_ok(const char *line, int n_expected, const char *const *words)
{
	struct shell_command *c;
	char err[100];
	int n, w = 0;

	assert_int_equal(shell_parse_line(line, &c, &n, err, sizeof(err)), 0);
	assert_int_equal(n, n_expected);
	for (int i = 0; i < n; i++) {
		for (int k = 0; k < c[i].argc; k++)
			assert_string_equal(c[i].argv[k], words[w++]);
		assert_null(c[i].argv[c[i].argc]);
		assert_null(words[w++]); /* NULL between commands */
	}
	shell_free_commands(c, n);
}

static void test_split(void **state)
{
	(void)state;
	parse_ok("volume.list", 1, (const char *const[]){"volume.list", NULL});
	parse_ok("  lock ;volume.list -v=2\t;; unlock  \n", 3,
		 (const char *const[]){"lock", NULL, "volume.list", "-v=2", NULL, "unlock", NULL});
	parse_ok("", 0, (const char *const[]){NULL});
	parse_ok(" ; ;", 0, (const char *const[]){NULL});
}

static void test_quotes(void **state)
{
	(void)state;
	parse_ok("a \"b c\" 'd;e' f\\ g", 1, (const char *const[]){"a", "b c", "d;e", "f g", NULL});
	parse_ok("x\"y\"'z' \"a\\\"b\" 'c\\d'", 1,
		 (const char *const[]){"xyz", "a\"b", "c\\d", NULL});
	parse_ok("a \"\" b", 1, (const char *const[]){"a", "", "b", NULL});
	parse_ok("a\\;b", 1, (const char *const[]){"a;b", NULL});
}

static void test_errors(void **state)
{
	struct shell_command *c;
	char err[100];
	int n;

	(void)state;
	assert_int_equal(shell_parse_line("a \"b", &c, &n, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "unterminated"));
	assert_int_equal(shell_parse_line("a 'b", &c, &n, err, sizeof(err)), -EINVAL);
	assert_int_equal(shell_parse_line("a \\", &c, &n, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "backslash"));
	assert_null(c);
	assert_int_equal(n, 0);
}

static void test_pattern(void **state)
{
	(void)state;
	assert_true(shell_pattern_match("", "anything"));
	assert_true(shell_pattern_match("pics", "pics"));
	assert_false(shell_pattern_match("pics", "pics2"));
	assert_true(shell_pattern_match("pi*", "pics"));
	assert_true(shell_pattern_match("pi*", "pi"));
	assert_true(shell_pattern_match("*s", "pics"));
	assert_false(shell_pattern_match("*s", "pic"));
	assert_true(shell_pattern_match("p?cs", "pics"));
	assert_false(shell_pattern_match("p?cs", "pcs"));
	assert_true(shell_pattern_match("*", ""));
	assert_true(shell_pattern_match("a*b*c", "aXXbYYc"));
	assert_false(shell_pattern_match("a*b*c", "aXXbYY"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_split),
	    cmocka_unit_test(test_quotes),
	    cmocka_unit_test(test_errors),
	    cmocka_unit_test(test_pattern),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
