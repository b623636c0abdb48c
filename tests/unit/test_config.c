// test_config.c — the HAKMEM_* option table (src/config): defaults, bad values
// and unknown names reported in one line each, the start-up print.
#include "unit_util.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"

// Run hak_config_parse with its messages captured; returns the complaint count.
static int parse_capture(char *out, size_t cap) {
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  int n = hak_config_parse(fds[1]);
  close(fds[1]);
  ssize_t got = read(fds[0], out, cap - 1);
  out[got > 0 ? got : 0] = '\0';
  close(fds[0]);
  return n;
}

static void unset_all(void) {
  for (size_t i = 0; i < g_hak_option_count; i++) unsetenv(g_hak_options[i].name);
}

static void test_table_defaults_match_the_static_initialiser(void **state) {
  (void)state;
  hak_config_t before = g_hak_config;
  unset_all();
  char msg[512];
  assert_int_equal(parse_capture(msg, sizeof msg), 0);
  assert_string_equal(msg, "");
  assert_memory_equal(&before, &g_hak_config, sizeof before);
}

static void test_valid_values_are_applied_with_their_scale(void **state) {
  (void)state;
  unset_all();
  setenv("HAKMEM_PURGE_DELAY_MS", "250", 1);
  setenv("HAKMEM_HUGE_CACHE_MB", "8", 1);
  setenv("HAKMEM_STATS", "json", 1);
  setenv("HAKMEM_STATS_FILE", "/tmp/x.json", 1);
  char msg[512];
  assert_int_equal(parse_capture(msg, sizeof msg), 0);
  assert_int_equal(g_hak_config.purge_delay_ms, 250);
  assert_int_equal(g_hak_config.huge_cache_max, 8u << 20);
  assert_int_equal(g_hak_config.stats, HAK_STATS_JSON);
  assert_string_equal(g_hak_config.stats_file, "/tmp/x.json");
  unset_all();
  assert_int_equal(parse_capture(msg, sizeof msg), 0);
  assert_int_equal(g_hak_config.purge_delay_ms, 100);
  assert_string_equal(g_hak_config.stats_file, "");
}

static void test_a_bad_value_names_variable_value_and_default(void **state) {
  (void)state;
  unset_all();
  setenv("HAKMEM_PURGE_DELAY_MS", "abc", 1);
  char msg[512];
  assert_int_equal(parse_capture(msg, sizeof msg), 1);
  assert_non_null(strstr(msg, "HAKMEM_PURGE_DELAY_MS='abc'"));
  assert_non_null(strstr(msg, "keeping the default 100\n"));
  assert_int_equal(g_hak_config.purge_delay_ms, 100);
  assert_ptr_equal(strchr(msg, '\n'), msg + strlen(msg) - 1);            // one line
  const char *bad[] = { "", "-1", "12x", "3600001", "99999999999999999999999" };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    setenv("HAKMEM_PURGE_DELAY_MS", bad[i], 1);
    assert_int_equal(parse_capture(msg, sizeof msg), 1);
    assert_int_equal(g_hak_config.purge_delay_ms, 100);
  }
  unset_all();
  setenv("HAKMEM_ABORT_ON_ERROR", "2", 1);
  assert_int_equal(parse_capture(msg, sizeof msg), 1);
  assert_int_equal(g_hak_config.abort_on_error, 1);
  setenv("HAKMEM_ABORT_ON_ERROR", "0", 1);
  assert_int_equal(parse_capture(msg, sizeof msg), 0);
  assert_int_equal(g_hak_config.abort_on_error, 0);
  unset_all();
  setenv("HAKMEM_STATS", "jsn", 1);
  assert_int_equal(parse_capture(msg, sizeof msg), 1);
  assert_int_equal(g_hak_config.stats, HAK_STATS_OFF);
  unset_all();
  hak_config_parse(-1);
}

static void test_an_unknown_name_gets_the_closest_known_one(void **state) {
  (void)state;
  unset_all();
  setenv("HAKMEM_VERBSE", "1", 1);
  char msg[512];
  assert_int_equal(parse_capture(msg, sizeof msg), 1);
  assert_string_equal(msg, "hakmem: unknown option HAKMEM_VERBSE (ignored); did you mean HAKMEM_VERBOSE?\n");
  unsetenv("HAKMEM_VERBSE");
  assert_string_equal(hak_config_closest("HAKMEM_PURGE_DELAY", 18), "HAKMEM_PURGE_DELAY_MS");
  assert_string_equal(hak_config_closest("HAKMEM_STAT_FILE", 16), "HAKMEM_STATS_FILE");
  setenv("HAKMEM_CONTRACT_GLIBC", "1", 1);   // a test suite's variable, not an option
  assert_int_equal(parse_capture(msg, sizeof msg), 0);
  unsetenv("HAKMEM_CONTRACT_GLIBC");
}

// The environment is read in one pass over it (not a getenv per option); as
// getenv, the first NAME=value of a name counts, and a name with no '=' is
// no setting and no complaint.
extern char **environ;
static void test_the_first_of_a_repeated_name_counts_as_with_getenv(void **state) {
  (void)state;
  char *env[] = {"PATH=/bin", "HAKMEM_PURGE_DELAY_MS=250", "HAKMEM_VERBOSE", "HAKMEM_PURGE_DELAY_MS=999",
                 "HAKMEM_STATS_FILE=/tmp/a", "XHAKMEM_KEEP_EMPTY_SS=7", "HAKMEM_STATS_FILE=/tmp/b", NULL};
  char **saved = environ;
  environ = env;
  char msg[512];
  int complaints = parse_capture(msg, sizeof msg);
  environ = saved;
  assert_int_equal(complaints, 0);
  assert_string_equal(msg, "");
  assert_int_equal(g_hak_config.purge_delay_ms, 250);
  assert_string_equal(g_hak_config.stats_file, "/tmp/a");
  assert_int_equal(g_hak_config.verbose, 0);
  assert_int_equal(g_hak_config.keep_empty_superslabs, 2);
  unset_all();
  assert_int_equal(parse_capture(msg, sizeof msg), 0);
  assert_int_equal(g_hak_config.purge_delay_ms, 100);
}

// A set-user-ID program's environment is its caller's: with AT_SECURE set
// every option keeps its default and nothing is said (HAKMEM_STATS_FILE let
// such a program truncate a root-only file to write its report there;
// HAKMEM_ABORT_ON_ERROR=0 would let it run on past a corrupted heap).
static void test_a_secure_execution_keeps_every_default(void **state) {
  (void)state;
  unset_all();
  hak_config_t defaults = g_hak_config;
  char *env[] = {"HAKMEM_STATS=1", "HAKMEM_STATS_FILE=/etc/shadow", "HAKMEM_ABORT_ON_ERROR=0",
                 "HAKMEM_PURGE_DELAY_MS=abc", "HAKMEM_VERBSE=1", NULL};
  char **saved = environ;
  environ = env;
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  int complaints = hak_config_parse_as(fds[1], 1);
  close(fds[1]);
  char msg[256];
  ssize_t got = read(fds[0], msg, sizeof msg - 1);
  close(fds[0]);
  assert_int_equal(complaints, 0);
  assert_true(got <= 0);
  assert_memory_equal(&defaults, &g_hak_config, sizeof defaults);
  assert_int_equal(hak_config_parse_as(-1, 0), 2);      // the same environment, not secure: read
  assert_string_equal(g_hak_config.stats_file, "/etc/shadow");
  environ = saved;
  unset_all();
  hak_config_parse(-1);
}

static void test_print_lists_every_option_and_the_version(void **state) {
  (void)state;
  unset_all();
  hak_config_parse(-1);
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  hak_config_print(fds[1]);
  close(fds[1]);
  static char out[8192];
  ssize_t got = read(fds[0], out, sizeof out - 1);
  out[got > 0 ? got : 0] = '\0';
  close(fds[0]);
  assert_non_null(strstr(out, HAKMEM_VERSION));
  for (size_t i = 0; i < g_hak_option_count; i++) assert_non_null(strstr(out, g_hak_options[i].name));
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_table_defaults_match_the_static_initialiser),
    cmocka_unit_test(test_valid_values_are_applied_with_their_scale),
    cmocka_unit_test(test_a_bad_value_names_variable_value_and_default),
    cmocka_unit_test(test_an_unknown_name_gets_the_closest_known_one),
    cmocka_unit_test(test_the_first_of_a_repeated_name_counts_as_with_getenv),
    cmocka_unit_test(test_a_secure_execution_keeps_every_default),
    cmocka_unit_test(test_print_lists_every_option_and_the_version),
  };
  return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
