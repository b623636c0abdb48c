// tiny_heap.h — a thread's slabs: the ones it carved stay with it until they
// are EMPTY or the thread exits (DESIGN.md §6, mimalloc's heap and its full
// page queue).
//
// Per class the heap holds the current slab (refilled from), a partial list
// (slabs with blocks known free) and a full list (slabs with none known
// free). A slab goes to the full list when a refill finds it exhausted and
// comes back to the partial list on the first free into it: by its owner
// (tiny_heap_slab_freed, no atomic) or by another thread, which finds the
// slab's notify word ARMED and pushes it on the heap's wake list (one CAS per
// full slab, not per block). The owner takes the whole wake list at once
// before it asks the Shared Pool for a new slab. A slab that its owner empties
// goes back to the thread's stash of FREE slabs, then to the pool.
//
// At thread exit (or hak_thread_flush) every slab is abandoned to the Shared
// Pool (shared_pool_detach_slab), where another thread adopts it.
//
// Invariants (tiny_heap_validate, debug builds), per class c:
//   cur[c] == NULL or (cur[c]->where == CURRENT, owner == this heap)
//   every slab on partial[c] has where == PARTIAL, on full[c] where == FULL,
//   all of class c and ACTIVE, owned by this heap; the lists are disjoint and
//   their links consistent (m->list_next->list_prev == m).
//   A slab on full[c] has notify ARMED, NOTIFYING or NOTIFIED, or remote frees
//   raced its arming and it is moving to partial.
#ifndef HAK_TINY_HEAP_H
#define HAK_TINY_HEAP_H

#include "debug/ptr_types.h"
#include "shared_pool/shared_pool.h"
#include "superslab/superslab.h"
#include "tiny/free_batch_box.h"

enum thread_status { THREAD_NEW = 0, THREAD_LIVE = 1, THREAD_DONE = 2 };

// The classes whose blocks are under a cache line (16, 32, 48 bytes: the
// only ones sent home from another thread's free, tiny_block_stays_here,
// unless the thread batches its frees),
// and how many of one class a thread gathers before sending them.
#define TINY_REMOTE_CLASSES    3u
#ifndef TINY_REMOTE_BUF_BLOCKS
#define TINY_REMOTE_BUF_BLOCKS 64u
#endif

typedef struct tiny_heap {
  slab_meta_t *cur[HAK_NUM_CLASSES];       // the slab this thread refills from
  slab_meta_t *partial[HAK_NUM_CLASSES];   // owned slabs with free blocks
  slab_meta_t *full[HAK_NUM_CLASSES];      // owned slabs with none known free
  slab_stash_t stash[HAK_SLAB_KINDS];      // FREE slabs held for the next acquire
  uint32_t     remote_count[TINY_REMOTE_CLASSES];   // blocks in remote_buf (below)
  // What the slabs this thread owns hold, in tiny_heap_slab_lines (a slab
  // counts from its acquire or adoption to its release or giving up). Past
  // FREE_BATCH_HEAP_LINES its frees are tested in batches (free_batch_box.h:
  // a big heap's free waits on its block's line).
  uint32_t     owned_lines;
  // Classes dying in this thread (bit c: class c; idle_class_box.c
  // look_dying_classes): only freed lately, with every block of their current
  // slab still out possibly on their list, or no current slab; each list's
  // head as the last slow path saw it.
  uint64_t     dying;
  void        *dying_head[HAK_NUM_CLASSES];
  uint8_t      dying_looks[HAK_NUM_CLASSES];   // looks in a row that saw the head unmoved
  // The look at idle classes (idle_class_box.c look_idle_classes): when it
  // was, the bytes of this thread's slow paths since, their classes (bit c),
  // and per class the list head and exchange count the last look saw and
  // the looks in a row that saw neither move.
  uint64_t     left_look_ms;
  uint64_t     left_bytes;
  uint64_t     left_touched;
  void        *left_head[HAK_NUM_CLASSES];
  uint32_t     left_moves[HAK_NUM_CLASSES];
  uint8_t      left_looks[HAK_NUM_CLASSES];
  // Classes given back (bit c) and the look count then (its low 8 bits), and
  // per class the looks it is kept through after it came back too soon
  // (idle_class_box.c note_class_back).
  uint32_t     left_look_count;
  uint64_t     left_gone;
  uint8_t      left_gone_at[HAK_NUM_CLASSES];
  uint8_t      left_keep[HAK_NUM_CLASSES];
  // A batching thread's hand-over chains (tiny_flush.c tiny_handover):
  // other threads' medium blocks of classes it frees and does not take,
  // linked at the drain while their lines are here, first..last of n. Only
  // the classes the exchange takes (read through tiny_heap_handover_n).
  hak_base_ptr_t handover_first[HAK_EXCHANGE_CLASSES];
  hak_base_ptr_t handover_last[HAK_EXCHANGE_CLASSES];
  uint16_t     handover_n[HAK_EXCHANGE_CLASSES];
  // Refills of each class since its last overflow (saturating): a small
  // class the thread only takes (a structure being built) may take a slab's
  // whole free list past its bound (tiny_refill.c slab_take_whole).
  uint8_t      refill_streak[HAK_NUM_CLASSES];
  // Classes this thread has refilled (bit c): the first refill of a class
  // takes at most FIRST_REFILL_BLOCKS (tiny_refill.h), and only these classes
  // can hold slabs here (tiny_heap_abandon_all and heap_trim_kind walk them).
  uint64_t     refilled;
  // Classes whose ticket the record holds (bit c: thread_record_t.ticket[c]).
  uint64_t     ticket_classes;
#if !HAK_HARDENED
  // The thread's batch of frees to test (free_batch_box.h: t_free_batch_p
  // points here while the thread is LIVE), zeroed at set-up as it was when
  // it was static TLS: 288 bytes fewer for glibc to copy into each new
  // thread's stack (CURRENT_TASK Known gaps 53). (The hardened build's,
  // with its sizes, would push the remote buffer off the first page: it
  // stays in the TLS, whose quarantine rings make it large anyway.)
  free_batch_t batch;
#endif
  // Blocks under a cache line of other threads' slabs, to send home
  // (tiny_free_remote): an array, not a list through the blocks, so the
  // flush reads no block. The owner keeps writing the blocks' neighbours, so
  // a list's walk waited on a line the other core took back at every link
  // (the sh8 shape, 2 threads: 11% of the samples on that walk). Last but
  // the wake line: the fields above, which every thread's first refills
  // write, then fit the record's first page (thread_record.h).
  hak_base_ptr_t remote_buf[TINY_REMOTE_CLASSES][TINY_REMOTE_BUF_BLOCKS];
  // Written by other threads: full slabs that got a remote free.
  slab_meta_t *_Atomic wake __attribute__((aligned(64)));
  uint8_t      pad[56];
} tiny_heap_t;

// Blocks on the calling heap's hand-over chain of cls: none for a class
// above HAK_MEDIUM_MAX, which the exchange never takes.
HAK_INLINE uint32_t tiny_heap_handover_n(const tiny_heap_t *h, unsigned cls) {
  return cls < HAK_EXCHANGE_CLASSES ? h->handover_n[cls] : 0u;
}

// The thread's heap is in its record (tiny/thread_record.h), out of static
// TLS: NULL while the thread is not LIVE. Its state (enum thread_status)
// stays here, read before anything else on the slow paths.
extern HAK_INTERNAL __thread tiny_heap_t *t_heap_p __attribute__((tls_model("initial-exec")));
extern HAK_INTERNAL __thread uint8_t t_thread_status __attribute__((tls_model("initial-exec")));

// The id slabs keep of their owner (slab_meta_t.owner): never 0 or
// SLAB_OWNER_POOL, unique among the records threads hold and the parked ones
// (tiny/thread_record.h). It is the address of the heap the slabs are on,
// which is its record's: a remote freer reaches the wake list of a full
// slab's owner through it (tiny_heap_of_owner), and records are never
// unmapped. A heap parked at a thread's exit keeps its id, its slabs and its
// lists for the next thread that takes it (tiny_thread.c), so nothing names
// the thread. A thread without a record (not LIVE) owns nothing; its id is
// its thread pointer, which no record's address is. (It was the thread
// pointer for every thread, the owner's heap pointer read from its TLS.)
HAK_INLINE uintptr_t thread_self_id(void) {
  tiny_heap_t *h = t_heap_p;
  return h != NULL ? (uintptr_t)h : hak_thread_pointer();
}
HAK_INLINE tiny_heap_t *tiny_heap_of_owner(uintptr_t owner) { return (tiny_heap_t *)owner; }

// The next slab to refill cls from, made current: one with blocks to give
// (tiny_heap_partial_with_free: the partial list, the wake list, an abandoned
// slab), else a fresh one from the Shared Pool. NULL when out of memory.
// A medium class's first fresh slab in the process is a young one, a 64 KiB
// slab of the small kind (size_class_has_young_slab; not when medium memory
// waits in the pool or the thread's stash to be reused): a program that
// keeps a few blocks in each of a dozen medium classes (a shell, make, an
// interpreter's start) had a 512 KiB slab of each, a 2 MiB SuperSlab for
// every four, each a page table that every fork copies and every exit frees
// (bench/spawn's parent: 10 regions with present pages, 8 with young slabs).
slab_meta_t *tiny_heap_next_slab(tiny_heap_t *h, unsigned cls);
// The medium classes whose young slab was taken (bit c: class c): set once a
// class, never cleared (tests set bits to keep a class's slabs medium).
extern _Atomic uint64_t g_class_young_taken;
// The current slab of cls has no free block: move it to the full list.
void tiny_heap_retire_current(tiny_heap_t *h, unsigned cls);
// A slab of cls's partial list with blocks to give (its free list, remote
// list or uncarved end), left on the list; partial slabs found dry on the way
// move to the full list. When there is none (after taking the wake list), a
// slab adopted from the class's abandoned stack, put on the partial list;
// NULL when that is empty too.
slab_meta_t *tiny_heap_partial_with_free(tiny_heap_t *h, unsigned cls);

// A full slab that a remote free wakes while its class already has this many
// partial slabs is given up (LISTED on the class's abandoned stack) instead
// of kept: its blocks go to the next thread that would otherwise carve new
// memory. Without it each thread's slabs were a reservoir of their own that
// other threads' frees filled at random, and a thread whose reservoir ran dry
// carved while the others' grew (ring at 16 threads: peak RSS rose with the
// run's length, 24 -> 48 MiB; mimalloc 18).
#define HEAP_PARTIAL_KEEP 2u

// The owner's refill of cls (from skip) looks along the partial list: a slab
// emptied by remote frees is released, one with a quarter of its blocks free
// and remote frees still arriving is given up to the abandoned stack.
void tiny_heap_trim_partial(tiny_heap_t *h, unsigned cls, const slab_meta_t *skip);

// cls is idle in this thread (idle_class_box.c look_idle_classes): its current slab
// goes back to the stash or pool if it is EMPTY, and its partial slabs are
// trimmed as a refill would (tiny_heap_trim_partial). The wake list is taken
// first, so full slabs that remote frees emptied go back too.
void tiny_heap_release_idle(tiny_heap_t *h, unsigned cls);

// The owner gave blocks back to m (a slab of this heap); empty: m's live
// count reached zero. Moves m from the full list, recycles it when EMPTY.
void tiny_heap_slab_moved(tiny_heap_t *h, slab_meta_t *m, int empty);
// ... called only when there is something to do: not for a current or
// partial slab that did not empty (where it stays), which is every run of a
// big structure freed at random but the first into each full slab (a call
// for every run in a flush's walk: ~9 instructions a block). Debug builds
// call it anyway (it validates the slab).
HAK_INLINE void tiny_heap_slab_freed(tiny_heap_t *h, slab_meta_t *m, int empty) {
  if (HAK_DEBUG || empty || m->where == SLAB_IN_FULL) tiny_heap_slab_moved(h, m, empty);
}
// What slab m adds to its owner's owned_lines: its blocks, a tiny block over
// a cache line counted once a line. The program writes such a block whole
// as often as not, so a heap of 16 k blocks of 512 B (8 MiB) keeps as few of
// their mark lines in a cache as one of 128 k blocks of 64 B: freed at
// random, `rounds --mb 32 --size 512 --shuffle` took 0.826x the time batched
// (9 paired rounds; 8 MiB of them 0.945x, 12 MiB 0.916x). A medium block
// counts one: weighed by its bytes (a batch from 16 MiB of slabs), ws-medium
// started and stopped batching 33 times a run at 1.024x the time, drift 9
// times at 1.136x (each start flushes the grown lists).
HAK_INLINE uint32_t tiny_heap_slab_lines(const slab_meta_t *m) {
  uint32_t bs = m->block_size;
  return bs <= 64u || bs > HAK_TINY_MAX ? m->capacity : m->capacity * (bs / 64u);
}
// Abandon every slab to the Shared Pool and give the stash back (the TLS
// lists must be flushed first).
void tiny_heap_abandon_all(tiny_heap_t *h);
// fork() child: settle notifications the parent's other threads left half done.
void tiny_heap_fork_child(tiny_heap_t *h);
// A remote free found m's notify word ARMED: push m on its owner's wake list.
void tiny_heap_notify_owner(slab_meta_t *m);

#if HAK_DEBUG
void tiny_heap_validate(const tiny_heap_t *h);
#endif

#endif
