// report.h — one-line error reports on stderr through write(2), then the
// configured action (abort unless HAKMEM_ABORT_ON_ERROR=0).
#ifndef HAK_REPORT_H
#define HAK_REPORT_H

#include <stddef.h>

// "hakmem: <what> 0x<ptr><detail>\n", then abort (or return if configured).
void hak_report_pointer_error(const char *what, const void *ptr, const char *detail);
// The same with numbers in the detail: "<t1><a><t2>", and "<b><t3>" after it
// when t3 is not NULL (the reports that name a size, a class, a byte).
void hak_report_pointer_numbers(const char *what, const void *ptr, const char *t1, unsigned long long a,
                                const char *t2, unsigned long long b, const char *t3);
// "<line>\n" on stderr, then abort (or return if configured).
void hak_report_error(const char *line);
// "hakmem: <what> 0x<ptr> (<n>)\n", then abort whatever HAKMEM_ABORT_ON_ERROR
// says: the validators' report of a broken internal invariant.
void hak_report_invariant(const char *what, const void *ptr, unsigned long long n)
    __attribute__((noreturn, cold));
// Whether hak_report_pointer_error aborts (1, the default). Set by the config
// box from HAKMEM_ABORT_ON_ERROR: debug sits below config and does not read it.
void hak_report_set_abort(int on);
// Does a report abort (HAKMEM_ABORT_ON_ERROR)? For the reports written elsewhere.
int hak_report_aborts(void);
// Format helpers for details: append a decimal / hex number to a fixed buffer.
size_t hak_fmt_u64(char *buf, size_t cap, unsigned long long v);
size_t hak_fmt_hex(char *buf, size_t cap, unsigned long long v);
// Append s to buf at offset `at` (NUL-terminated, truncated to cap); the new length.
size_t hak_fmt_str(char *buf, size_t cap, size_t at, const char *s);
// Write a NUL-terminated string to stderr.
void hak_write_str(int fd, const char *s);

#endif
