// stats_report.h — what hakmem says about itself: hak_get_stats and
// hak_print_stats (include/hakmem.h), the contention sites of the STATS
// build, and the report at process exit.
#ifndef HAK_STATS_REPORT_H
#define HAK_STATS_REPORT_H

// One line per contention site (STATS build; zeros elsewhere).
void hak_print_sites(int fd);
// At process exit: the statistics per size class (HAKMEM_STATS=1 or json, to
// HAKMEM_STATS_FILE or stderr; HAKMEM_VERBOSE=1 alone: the table on stderr)
// and, in the STATS build, the contention sites.
void hak_stats_at_exit(void);
// At start-up, when that report goes to stderr: a private copy of it, which
// the report takes if the program has closed stderr by its exit (GNU sort,
// xz: their atexit close_stdout closes it, before any library's destructor).
void hak_stats_keep_stderr(void);

#endif
