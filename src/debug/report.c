// report.c — error reports and assertion failures (see report.h).
#include "debug/report.h"

#include <stdlib.h>
#include <string.h>

#include "debug/hak_base.h"
#include "os/os.h"

static int g_report_abort = 1;   // HAKMEM_ABORT_ON_ERROR, pushed down by hak_config_load

void hak_report_set_abort(int on) { g_report_abort = on != 0; }
int hak_report_aborts(void) { return g_report_abort; }

size_t hak_fmt_u64(char *buf, size_t cap, unsigned long long v) {
  char tmp[24];
  size_t n = 0;
  do { tmp[n++] = (char)('0' + v % 10); v /= 10; } while (v != 0);
  size_t w = 0;
  while (n > 0 && w + 1 < cap) buf[w++] = tmp[--n];
  buf[w] = '\0';
  return w;
}

size_t hak_fmt_hex(char *buf, size_t cap, unsigned long long v) {
  char tmp[20];
  size_t n = 0;
  do { tmp[n++] = "0123456789abcdef"[v & 15]; v >>= 4; } while (v != 0);
  size_t w = 0;
  if (cap > 3) { buf[w++] = '0'; buf[w++] = 'x'; }
  while (n > 0 && w + 1 < cap) buf[w++] = tmp[--n];
  buf[w] = '\0';
  return w;
}

void hak_write_str(int fd, const char *s) { os_write_all(fd, s, strlen(s)); }

// "hakmem: <what> 0x<ptr><detail>\n" on stderr.
static void report_line(const char *what, const void *ptr, const char *detail) {
  char line[256];
  size_t n = 0;
  const char *parts[2] = {"hakmem: ", what};
  for (int i = 0; i < 2; i++) {
    size_t l = strlen(parts[i]);
    if (n + l >= sizeof line - 40) l = sizeof line - 40 - n;
    memcpy(line + n, parts[i], l);
    n += l;
  }
  line[n++] = ' ';
  n += hak_fmt_hex(line + n, sizeof line - n, (unsigned long long)(uintptr_t)ptr);
  if (detail != NULL) {
    size_t l = strlen(detail);
    if (n + l + 2 > sizeof line) l = sizeof line - n - 2;
    memcpy(line + n, detail, l);
    n += l;
  }
  line[n++] = '\n';
  os_write_all(2, line, n);
}

void hak_report_pointer_error(const char *what, const void *ptr, const char *detail) {
  report_line(what, ptr, detail);
  if (g_report_abort) abort();
}

void hak_report_pointer_numbers(const char *what, const void *ptr, const char *t1, unsigned long long a,
                                const char *t2, unsigned long long b, const char *t3) {
  char detail[128];
  size_t at = hak_fmt_str(detail, sizeof detail, 0, t1);
  at += hak_fmt_u64(detail + at, sizeof detail - at, a);
  at = hak_fmt_str(detail, sizeof detail, at, t2);
  if (t3 != NULL) {
    at += hak_fmt_u64(detail + at, sizeof detail - at, b);
    hak_fmt_str(detail, sizeof detail, at, t3);
  }
  hak_report_pointer_error(what, ptr, detail);
}

void hak_report_invariant(const char *what, const void *ptr, unsigned long long n) {
  char detail[32] = " (";
  size_t len = 2;
  len += hak_fmt_u64(detail + len, sizeof detail - len - 1, n);
  detail[len++] = ')';
  detail[len] = '\0';
  report_line(what, ptr, detail);
  abort();
}

void hak_assert_fail(const char *expr, const char *file, int line) {
  char num[24];
  hak_fmt_u64(num, sizeof num, (unsigned long long)line);
  hak_write_str(2, "hakmem: assertion failed: ");
  hak_write_str(2, expr);
  hak_write_str(2, " at ");
  hak_write_str(2, file);
  hak_write_str(2, ":");
  hak_write_str(2, num);
  hak_write_str(2, "\n");
  abort();
}

size_t hak_fmt_str(char *buf, size_t cap, size_t at, const char *s) {
  while (*s != '\0' && at + 1 < cap) buf[at++] = *s++;
  if (at < cap) buf[at] = '\0';
  return at;
}

void hak_report_error(const char *line) {
  char buf[256];
  size_t n = hak_fmt_str(buf, sizeof buf - 1, 0, line);
  buf[n++] = '\n';
  os_write_all(2, buf, n);
  if (g_report_abort) abort();
}
