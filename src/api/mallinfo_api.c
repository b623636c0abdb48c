// mallinfo_api.c — glibc's introspection and tuning calls, answered from the
// engine's own figures (hak_get_stats), never zeros.
//
// Field mapping (glibc name: hakmem figure):
//   arena     bytes mapped for SuperSlabs and medium pages (mapped - huge)
//   ordblks   EMPTY slabs in the Shared Pool (free "chunks" that can be reused)
//   smblks    slabs bound to a size class
//   hblks     live huge (direct-mmap) blocks      hblkhd  their mapped bytes
//   usmblks   0 (glibc: always 0)                 fsmblks 0
//   uordblks  bytes in blocks handed out, huge blocks excluded as glibc excludes
//             its mmapped chunks (hak_stats_t.in_use_bytes counts them: subtracted)
//   fordblks  arena - uordblks, as glibc's (free blocks in slabs, FREE slabs, the
//             page heap's free runs, metadata)     keepcost freed huge mappings kept for reuse
// mallinfo() is the same with int fields, saturated at INT_MAX instead of
// wrapping as glibc does.
#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <stdio.h>
#include <unistd.h>

#include "hakmem.h"
#include "api/api.h"

static size_t sub_or_zero(size_t a, size_t b) { return a > b ? a - b : 0; }

HAK_EXPORT struct mallinfo2 mallinfo2(void) {
  hak_stats_t st;
  hak_get_stats(&st);
  struct mallinfo2 mi = {0};
  mi.arena    = sub_or_zero(st.mapped_bytes, st.huge_bytes + st.huge_cached_bytes);
  mi.ordblks  = st.slabs_free;
  mi.smblks   = st.slabs_in_use;
  mi.hblks    = st.huge_count;
  mi.hblkhd   = st.huge_bytes;
  mi.usmblks  = 0;
  mi.fsmblks  = 0;
  mi.uordblks = sub_or_zero(st.in_use_bytes, st.huge_bytes);   // hblkhd has them
  // glibc's arena is uordblks + fordblks; st.free_bytes alone (free blocks in
  // bound slabs) left out the page heap's free runs: 100 blocks of 1 MiB freed
  // read arena 144 MB, uordblks + fordblks 10 MB (a helper's probe).
  mi.fordblks = sub_or_zero(mi.arena, mi.uordblks);
  mi.keepcost = st.huge_cached_bytes;
  return mi;
}

static int sat_int(size_t v) { return v > (size_t)INT_MAX ? INT_MAX : (int)v; }

HAK_EXPORT struct mallinfo mallinfo(void) {
  struct mallinfo2 m2 = mallinfo2();
  struct mallinfo mi;
  mi.arena    = sat_int(m2.arena);
  mi.ordblks  = sat_int(m2.ordblks);
  mi.smblks   = sat_int(m2.smblks);
  mi.hblks    = sat_int(m2.hblks);
  mi.hblkhd   = sat_int(m2.hblkhd);
  mi.usmblks  = sat_int(m2.usmblks);
  mi.fsmblks  = sat_int(m2.fsmblks);
  mi.uordblks = sat_int(m2.uordblks);
  mi.fordblks = sat_int(m2.fordblks);
  mi.keepcost = sat_int(m2.keepcost);
  return mi;
}

// hakmem is tuned with HAKMEM_* environment variables, not mallopt. Like
// glibc, every parameter is accepted (1 = success) so that programs which
// tune glibc (M_ARENA_MAX, M_MMAP_THRESHOLD...) keep running unchanged.
HAK_EXPORT int mallopt(int param, int value) {
  (void)param;
  (void)value;
  return 1;
}

// pad is ignored: hakmem keeps no top chunk to pad.
HAK_EXPORT int malloc_trim(size_t pad) {
  (void)pad;
  return hak_trim();
}

// glibc prints to stderr; so does the engine's report: the table per size
// class and the totals (what HAKMEM_STATS=1 prints at exit).
HAK_EXPORT void malloc_stats(void) { hak_print_class_stats(STDERR_FILENO, 0); }

// User-called, so stdio is allowed here. Options other than 0 are EINVAL,
// returned (not put in errno), as glibc 2.36 does.
//
// <sizes> has one line per size class in glibc's element format,
// <size from="F" to="T" total="B" count="N"/>: like glibc's it describes free
// blocks, here the blocks of classes (F..T bytes) that are ready to hand out,
// in slabs or in threads' caches (count N, B bytes).
HAK_EXPORT int malloc_info(int options, FILE *fp) {
  if (options != 0) return EINVAL;
  if (fp == NULL) return EINVAL;
  hak_stats_t st;
  hak_get_stats(&st);
  hak_class_stats_t cls[64];
  size_t ncls = hak_get_class_stats(cls, sizeof cls / sizeof cls[0]);
  if (ncls > sizeof cls / sizeof cls[0]) ncls = sizeof cls / sizeof cls[0];
  fprintf(fp, "<malloc version=\"hakmem-%s\">\n<heap nr=\"0\">\n<sizes>\n", hak_version());
  size_t from = 1, free_bytes = 0, cached_bytes = 0;
  for (size_t c = 0; c < ncls; c++) {
    size_t free_blocks = cls[c].blocks_free + cls[c].cached;
    fprintf(fp, "<size from=\"%zu\" to=\"%zu\" total=\"%zu\" count=\"%zu\"/>\n",
            from, cls[c].block_size, free_blocks * cls[c].block_size, free_blocks);
    from = cls[c].block_size + 1;
    free_bytes += free_blocks * cls[c].block_size;
    cached_bytes += cls[c].cached * cls[c].block_size;
  }
  // The totals agree with <sizes>: "free" is their sum, "in_use" what the
  // program holds (cached blocks are free ones), "slabs_in_use" its part in
  // slabs (a helper's probe read the large and huge bytes there, and a free
  // total short of the sizes' sum by the cached blocks).
  size_t slab_in_use = st.in_use_bytes - st.large_bytes - st.huge_bytes;
  slab_in_use = slab_in_use > cached_bytes ? slab_in_use - cached_bytes : 0;
  size_t in_use = slab_in_use + st.large_bytes + st.huge_bytes;
  fprintf(fp,
          "</sizes>\n"
          "<total type=\"superslab\" count=\"%zu\" size=\"%zu\"/>\n"
          "<total type=\"slabs_in_use\" count=\"%zu\" size=\"%zu\"/>\n"
          "<total type=\"slabs_free\" count=\"%zu\" size=\"0\"/>\n"
          "<total type=\"huge\" count=\"%zu\" size=\"%zu\"/>\n"
          "<total type=\"huge_cached\" count=\"0\" size=\"%zu\"/>\n"
          "<system type=\"current\" size=\"%zu\"/>\n"
          "<system type=\"max\" size=\"%zu\"/>\n"
          "</heap>\n"
          "<total type=\"in_use\" count=\"0\" size=\"%zu\"/>\n"
          "<total type=\"free\" count=\"0\" size=\"%zu\"/>\n"
          "<total type=\"remote_frees\" count=\"%zu\" size=\"0\"/>\n"
          "<total type=\"threads\" count=\"%zu\" size=\"0\"/>\n"
          "<total type=\"superslabs_mapped_total\" count=\"%zu\" size=\"0\"/>\n"
          "<total type=\"superslabs_unmapped_total\" count=\"%zu\" size=\"0\"/>\n"
          "<system type=\"current\" size=\"%zu\"/>\n"
          "<aspace type=\"total\" size=\"%zu\"/>\n"
          "</malloc>\n",
          st.superslab_count, st.superslab_bytes,
          st.slabs_in_use, slab_in_use,
          st.slabs_free,
          st.huge_count, st.huge_bytes,
          st.huge_cached_bytes,
          st.mapped_bytes, st.mapped_bytes,
          in_use, free_bytes,
          st.remote_frees_total, st.threads_live,
          st.superslabs_mapped_total, st.superslabs_unmapped_total,
          st.mapped_bytes, st.mapped_bytes);
  return 0;
}
