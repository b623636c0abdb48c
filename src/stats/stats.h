// stats.h — the allocator's counters: per thread, summed when read.
//
// Every LIVE thread has one hak_thread_counters_t, in its thread record
// (tiny/thread_record.h), reached through t_counters_p. Only its thread
// writes it (plain stores, no atomics, never on the malloc/free fast path of
// the release build). A thread links its record into the live list on set-up
// and, at exit, adds it into the totals, zeroes and unlinks it, all under
// g_counters_lock: a reader (hak_counters_sum) sees totals + every live record.
// Reads of another thread's record race with its plain stores; the figures are
// exact for the calling thread and "as of the last slow path" for the others.
// A thread without a record (before its set-up, after its exit hook) points
// at one shared record, summed too: only the STATS build's counts land there
// unsynchronised (a thread's first operation, a lock taken before set-up),
// and any count a thread past its exit makes is skipped (hak_counters_own).
//
// The STATS build (make STATS=1, HAK_STATS=1) also counts operations and, per
// site, every lock acquisition and every atomic read-modify-write on a line
// that other threads write (DESIGN.md §6, issue 9's proxy for many cores):
// HAK_SITE(site) compiles to nothing in the other builds.
#ifndef HAK_STATS_H
#define HAK_STATS_H

#include <stddef.h>
#include <stdint.h>

#include "debug/hak_base.h"

#ifndef HAK_STATS
#define HAK_STATS 0
#endif

#define HAK_STAT_CLASSES 64     // >= HAK_NUM_CLASSES (checked in tiny/)

typedef struct hak_class_counters {
  uint64_t refills;             // refills of the class's TLS list
  uint64_t refill_blocks;       // blocks moved into TLS lists by them
  uint64_t flushes;             // flushes of a full TLS list
  uint64_t flush_blocks;        // blocks given back to slabs by them
  uint64_t remote_free_blocks;  // blocks handed to a slab another thread owns
  uint64_t cached;              // blocks in this thread's TLS list (at its last slow path)
} hak_class_counters_t;

// Contention sites (STATS build). kind: what a count costs on many cores.
#define HAK_SITE_LIST(X)                                                              \
  X(SITE_POOL_LOCK,      "pool_lock",        "lock")        /* per-kind Shared Pool lock */ \
  X(SITE_PURGE_LOCK,     "purge_lock",       "lock")        /* one purge pass at a time */  \
  X(SITE_PAGE_HEAP_LOCK, "page_heap_arena_lock", "lock-arena") /* the thread's own arena, or the arena of a large block it frees */ \
  X(SITE_HUGE_LOCK,      "huge_lock",        "lock")                                        \
  X(SITE_THREAD_LOCK,    "thread_list_lock", "lock")        /* thread set-up and exit */    \
  X(SITE_SS_MAPPING,    "superslab_mapping", "rmw-global") /* the flag taken to map a chunk of SuperSlabs */ \
  X(SITE_TRANSFER_LOCK,  "transfer_lock",    "lock")        /* a chain into or out of the class exchange */ \
  X(SITE_ABANDONED,      "abandoned_stack",  "rmw-global")  /* push/pop of abandoned slabs */ \
  X(SITE_SS_COUNTERS,    "superslab_counts", "rmw-global")  /* SuperSlabs mapped/unmapped */ \
  X(SITE_SS_CHUNK,       "superslab_chunk",  "rmw-global")  /* a SuperSlab taken from the chunk, or a chunk installed */ \
  X(SITE_SLAB_USED,      "slab_used",        "rmw-slab")    /* a slab's live count */       \
  X(SITE_SLAB_STATE,     "slab_state",       "rmw-slab")    /* a slab's state word */       \
  X(SITE_REMOTE_PUSH,    "remote_push",      "rmw-slab")    /* a chain onto a remote list */ \
  X(SITE_REMOTE_DRAIN,   "remote_drain",     "rmw-slab")    /* the owner takes its list */  \
  X(SITE_REMOTE_ATTEND,  "remote_attend",    "rmw-slab")    /* a remote list's word asks for attention, or no more */ \
  X(SITE_NOTIFY,         "full_slab_notify", "rmw-slab")    /* wake the owner of a full slab */ \
  X(SITE_PARKED_TICKET,  "parked_ticket",    "rmw-global")  /* a stale remote list's ticket parked or taken */

#define HAK_SITE_ENUM(id, name, kind) id,
enum hak_site { HAK_SITE_LIST(HAK_SITE_ENUM) HAK_SITE_COUNT };
#undef HAK_SITE_ENUM

// What every thread writes first (the links, by hak_counters_attach), then
// the per-class counts, then the STATS build's sites: a record's counters
// that a thread touches lie on as few pages as they can (tiny/thread_record.h).
typedef struct hak_thread_counters {
  struct hak_thread_counters *next;   // live list (g_counters_lock)
  struct hak_thread_counters *prev;
  int linked;
  uint64_t ops;                       // STATS build: malloc and free calls
  uint64_t batched_frees;             // frees tested in batches (tiny/free_batch_box.h)
  uint64_t batch_starts;              // times this thread started batching its frees
  uint64_t batch_probe_stops;         // ... and stopped a heap's batch whose marks were in a cache (free_batch_probe)
  uint64_t home_frees;                // batched frees sent to their own slab past a full list (free_batch_drain)
  uint64_t handed_over;               // blocks a consumer handed over at its drain (tiny_handover)
  uint64_t ticket_blocks;             // blocks taken back from other threads' stale remote lists
                                      //   (ticket_box.c refill_from_ticket), tickets included
  uint64_t populate_calls;            // carves that faulted pages in ahead (tiny_refill.c)
  uint64_t populate_bytes;            // ... and the bytes they asked for
  uint64_t classes_given_back;        // classes whose list and idle slabs went home (idle_class_box.c give_class_back)
  uint64_t sweeps;                    // slabs' free lists put in address order (tiny/slab_sweep_box.h)
  uint64_t swept_blocks;              // ... the blocks on them
  uint64_t sweeps_unmatched;          // sweeps whose marks did not match the list (left as it was)
  hak_class_counters_t cls[HAK_STAT_CLASSES];
  uint64_t site[HAK_SITE_COUNT];      // STATS build: per contention site
} hak_thread_counters_t;

extern HAK_INTERNAL __thread hak_thread_counters_t *t_counters_p __attribute__((tls_model("initial-exec")));
extern HAK_INTERNAL hak_thread_counters_t g_counters_unowned;

// The calling thread's counters (the shared record when it has none).
HAK_INLINE hak_thread_counters_t *hak_counters(void) { return t_counters_p; }
// Whether the calling thread has a record of its own (LIVE).
HAK_INLINE int hak_counters_own(void) { return t_counters_p != &g_counters_unowned; }

#if HAK_STATS
#define HAK_SITE(s)      (t_counters_p->site[(s)]++)
#define HAK_COUNT_OP()   (t_counters_p->ops++)
#else
#define HAK_SITE(s)      ((void)0)
#define HAK_COUNT_OP()   ((void)0)
#endif

// Make r (zeroed) the calling thread's counters and link it into the live
// list (thread set-up).
void hak_counters_attach(hak_thread_counters_t *r);
// Add the calling thread's counters into the totals, zero and unlink them;
// the thread counts into the shared record again (thread exit).
void hak_counters_detach(void);
// ... of record r, whoever's it was (a parked heap's: tiny_thread.c).
void hak_counters_detach_record(hak_thread_counters_t *r);
// Totals of exited threads plus every live thread's record; returns the
// number of live records (a parked heap's among them: its counters stay
// linked while it waits for a thread).
size_t hak_counters_sum(hak_thread_counters_t *out);
// fork(): the live-list lock, taken and released around fork; the child keeps
// only its own record.
void hak_counters_fork_prepare(void);
struct timespec;
// The counters' lock free by `by` (os_mutex_settles; the exit report's check).
int hak_counters_locks_settle(const struct timespec *by);
void hak_counters_fork_parent(void);
void hak_counters_fork_child(void);

// Names of the contention sites, for reports.
extern const char *const g_site_name[HAK_SITE_COUNT];
extern const char *const g_site_kind[HAK_SITE_COUNT];

#endif
