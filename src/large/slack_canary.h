// slack_canary.h — the bytes around a hardened large or huge block.
//
// The hardened build ends a large or huge block at its guard page (an
// overflow faults at once), so the block starts some bytes into its run or
// mapping: the rest of the first page past the request, or more for an
// alignment or a reused mapping. Those bytes no one else uses; the last
// SLACK_CANARY_MAX of them before the block hold a known byte from malloc
// to free, and free checks them: an underflow (a write just before the
// block) is reported then, as the slabs' canary reports an overflow. Before
// the guard placement a write there met the page below, a fault the hook
// named; after it, without this, nothing.
#ifndef HAK_SLACK_CANARY_H
#define HAK_SLACK_CANARY_H

#include <stddef.h>
#include <stdint.h>

#include "debug/report.h"

#define SLACK_CANARY_MAX  64u
#define SLACK_CANARY_BYTE 0xc5u

// The canary's length for a block `slack` bytes past its run's start.
static inline size_t slack_canary_len(size_t slack) { return slack < SLACK_CANARY_MAX ? slack : SLACK_CANARY_MAX; }

static inline void slack_canary_fill(unsigned char *block, size_t slack) {
  for (size_t i = 1; i <= slack_canary_len(slack); i++) block[-(ptrdiff_t)i] = SLACK_CANARY_BYTE;
}

// Reported (what: "... before a large block at") at the changed byte nearest
// the block; 0 then (the caller goes on freeing when the report returns).
static inline int slack_canary_check(const unsigned char *block, size_t slack, const char *what) {
  for (size_t i = 1; i <= slack_canary_len(slack); i++)
    if (block[-(ptrdiff_t)i] != SLACK_CANARY_BYTE) {
      hak_report_pointer_error(what, block - i, " (the bytes before it changed)");
      return 0;
    }
  return 1;
}

// The bytes after the request, up to the guard page (`gap` of them: at most
// 15 for a block rounded to 16, up to its alignment less one for an aligned
// huge block): the first SLACK_CANARY_MAX hold the same byte from malloc to
// free, which checks them (an overflow there meets no guard). `end` is the
// request's end; the block's usable size is the request.
static inline void tail_canary_fill(unsigned char *end, size_t gap) {
  for (size_t i = 0; i < slack_canary_len(gap); i++) end[i] = SLACK_CANARY_BYTE;
}
static inline int tail_canary_check(const unsigned char *end, size_t gap, const char *what) {
  for (size_t i = 0; i < slack_canary_len(gap); i++)
    if (end[i] != SLACK_CANARY_BYTE) {
      hak_report_pointer_error(what, end + i, " (the bytes after its request changed)");
      return 0;
    }
  return 1;
}

#endif
