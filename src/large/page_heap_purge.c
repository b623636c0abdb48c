// page_heap_purge.c — when the page heap's freed runs go back to the OS
// (see page_heap.h, page_heap_internal.h): after the purge delay, by the
// dirty marks; at once past an arena's dirty budget; at a phase end (the live
// bytes down to an eighth of their recent peak), put off when another
// thread's free reached it; an idle arena's (its threads exited) all at once.
// Each arena under its own lock. A large block's malloc and free call
// arena_maybe_purge, which returns after two loads while its arena holds
// nothing dirty and no empty region past the kept one.
#include "large/page_heap_internal.h"

#include "os/os.h"

// Unmap regions of arena a with no live block until `kept` are left (its
// lock held). Returns 1 if any was.
static int unmap_empty_regions(ph_arena_t *a, size_t kept) {
  int released = 0;
  for (ph_region_t *r = a->regions, *next; r != NULL && a->empty_regions > kept; r = next) {
    next = r->next;
    if (r->free_pages == PH_USABLE_PAGES) { region_destroy(r); released = 1; }
  }
  return released;
}

// A full or aged pass ended (lock held): the program's next phase starts
// here, its peak the live pages, and what the pass left dirty is room in the
// budget until the next (kept_pages); the next free samples the density.
static void arena_start_phase(ph_arena_t *a) {
  a->peak_pages = a->live_pages;
  a->peak_run = 0;
  a->sample_in = 0;
  a->kept_pages = atomic_load_explicit(&a->dirty_bytes, memory_order_relaxed) >> PH_PAGE_SHIFT;
}

// Unmap empty regions past the one kept (all of them when everything), then
// madvise dirty free runs of arena a until it holds at most `keep` dirty
// bytes (its lock held). Returns 1 if anything was released. A full pass
// (keep 0) also starts the arena's peak over (dirty_budget) and samples the
// next free (arena_sample_density).
static int purge_locked(ph_arena_t *a, int everything, size_t keep) {
  atomic_store_explicit(&g_last_purge_ms[a - g_arenas], os_now_ms(), memory_order_relaxed);
  int released = unmap_empty_regions(a, everything ? 0 : PH_KEEP_EMPTY_REGIONS);
  for (ph_region_t *r = a->regions; r != NULL; r = r->next) released |= region_purge(r, keep, 0);
  if (keep == 0) arena_start_phase(a);
  return released;
}

// The pass after the delay (lock held): the empty regions past the kept one
// unmapped, and the dirty runs freed a delay ago or more purged (marks);
// every dirty run when the last pass was so long ago that marks may have
// wrapped. Returns 1 if anything was released.
static int purge_aged_locked(ph_arena_t *a, uint64_t now) {
  uint64_t last = atomic_load_explicit(&g_last_purge_ms[a - g_arenas], memory_order_relaxed);
  uint64_t tick = mark_tick_ms();
  unsigned age = (unsigned)((g_hak_config.large_purge_delay_ms + tick - 1) / tick);
  if (now - last >= (PH_MARK_TICKS - PH_AGE_TICKS) * tick) age = 0;
  atomic_store_explicit(&g_last_purge_ms[a - g_arenas], now, memory_order_relaxed);
  int released = unmap_empty_regions(a, PH_KEEP_EMPTY_REGIONS);
  unsigned mark = (unsigned)mark_now(now);
  for (ph_region_t *r = a->regions; r != NULL; r = r->next) released |= region_purge_aged(r, mark, age);
  arena_start_phase(a);
  return released;
}

// Purge passes are at least HAKMEM_LARGE_PURGE_DELAY_MS apart; each purges
// the runs freed a delay ago or more, so a run waits one to two delays (until
// the next slow path after them).
static int purge_delay_passed(const ph_arena_t *a, uint64_t now) {
  return now - atomic_load_explicit(&g_last_purge_ms[a - g_arenas], memory_order_relaxed) >=
         g_hak_config.large_purge_delay_ms;
}

// Is a idle: its last thread exited a tenth of the purge delay ago or more
// (a relaxed look: a thread choosing it at the same time finds clean runs,
// the same memory)? A thread takes runs only from its own arena, so an idle
// arena's dirty runs wait for no one, and a full pass purges them then, not
// after the whole delay. Python's tests/realprog/workload.py: four threads'
// freed dict tables stayed in their arenas while the main thread mapped 40 MB
// more, peak RSS 106 MB against 96-97 for glibc and tcmalloc; now 97-100. Not
// at the exit itself: where a thread starts as another exits, the next one
// takes the arena warm (`churn -c 4 -k 16 --min 300K --max 2M`: purged at
// the exit, 6x the time and 5x the page faults).
static int arena_idle(const ph_arena_t *a, uint64_t now) {
  return atomic_load_explicit(&arena_gate(a)->users, memory_order_relaxed) == 0 &&
         now - atomic_load_explicit(&a->idle_since_ms, memory_order_relaxed) >=
             g_hak_config.large_purge_delay_ms / PH_IDLE_DELAY_DEN;
}

// The dirty budget of arena a, the most of:
// - 3x its live bytes (2x, as with one arena for all: ws8192 -t 8 at 256
//   KiB-2 MiB took 1.9 s, 600 k page faults, 273 MB peak RSS; 3x: 0.9 s,
//   220-250 k, 420-430 MB; mimalloc 0.8 s, 170 k, 550 MB; glibc 1.0 s, 330 MB);
// - HAKMEM_LARGE_DIRTY_MB shared among the arenas in use (one arena, a single
//   thread's: all of it);
// - the room below its recent peak: the most pages it held live since the
//   last full purge pass (at most HAKMEM_LARGE_PURGE_DELAY_MS ago while it
//   has dirty runs), less those live now, and the longest run taken since
//   then, for the freed runs a request cannot use (its run is longer than any
//   of them). So the arena's pages, live and dirty, stay within its recent
//   peak and one of its largest blocks until the next full pass.
// Memory the program used a moment ago is about to be used again. A loop over
// a few blocks of 1-32 MiB, every page touched, swings its live bytes between
// a few and ~100 MB; with the first two terms alone each low purged what the
// next high faulted in again. `large -w 4 --min 1M --max 32M -n 2000`, 3
// interleaved runs, seconds / peak RSS MB / page faults: without the room
// 5.30 / 102 / 1.39 M, with it 0.19 / 113 / 44 k (glibc 1.07 / 101 / 272 k,
// tcmalloc 0.23 / 115 / 52 k, jemalloc 6.7 / 113 / 1.77 M, mimalloc 4.8 / 136
// / 1.27 M); `-w 16 --min 256K --max 32M`: 1.35 / 165 -> 0.34 / 174 (glibc
// 0.45 / 131, tcmalloc 0.17 / 169). Two longest runs: 0.16 / 115 on -w 4 but
// 210 MB on -w 16; none: 1.3 s on -w 4. Half the peak instead of the runs
// took `ws8192 -w 64 --min 256K --max 2M -t 2` from 104 to 116 MB.
// A freed run counts whole though the program may have touched two of its
// pages, so the budget purges what mostly is not resident, and the next
// blocks fault their pages in again.
// The room also holds a quarter of the peak (PH_ROOM_PEAK_DEN): the freed
// runs too short for the requests that come next (fragmentation), which the
// arena's pages outgrow its peak by. Blocks of 256 KiB-2 MiB at random,
// after best fit, hold ~60 MB of address space at a 60 MB peak plus 25-30 MB
// of runs between them; within the peak and one run, each thread of `ws8192
// -w 64 --min 256K --max 2M -t 2` purged 10-25 MB of them whenever its live
// bytes dipped (HAKMEM_LARGE_DIRTY_MB's share halves at two arenas), and
// faulted them in again: 46 k page faults against 32 k, 1.45-1.6x the time
// (mimalloc 1.2x faster; at one thread the 64 MiB share covered it). With the
// quarter: 0.63-0.69x the time, 102 -> 116 MB (mimalloc 149, glibc 89 at
// 2.7x our time); `large -w 4 --min 1M --max 32M` 0.55-0.71x at 111 -> 115
// MB; an eighth of the peak was not enough (38.9 k faults, the same time);
// 8 and 16 threads unchanged (their 3x live is the larger).
// And the room holds the runs the last pass or phase end left dirty
// (kept_pages): what it chose to keep, the budget does not purge at once.
static size_t dirty_budget(const ph_arena_t *a) {
  size_t budget = PH_DIRTY_LIVE_FACTOR * run_bytes((uint32_t)a->live_pages);
  size_t share = g_hak_config.large_dirty_min / arenas_used();
  size_t room = (size_t)(a->peak_pages - a->live_pages) + PH_ROOM_RUNS * (size_t)a->peak_run +
                (size_t)a->peak_pages / PH_ROOM_PEAK_DEN + a->kept_pages;
  room <<= PH_PAGE_SHIFT;
  if (budget < share) budget = share;
  return budget > room ? budget : room;
}

// Did a's last phase end come within the purge delay before `now`?
static int arena_end_recent(const ph_arena_t *a, uint64_t now) {
  return a->end_ms != 0 && now - a->end_ms < g_hak_config.large_purge_delay_ms;
}

// A free took arena a's live bytes down to 1/8 of its recent peak or less
// (lock held): the program's phase may be over, and if it now sleeps no slow
// path comes to purge after the delay (DESIGN §2: an idle program's RSS falls
// close to its live data). So the room below the peak goes: the peak starts
// over, and past the budget that leaves (3x live, at least the arena's share
// of HAKMEM_LARGE_DIRTY_MB) the empty regions but one are unmapped and the
// largest runs purged (the last one's top pages only). 64 blocks of 4 MiB
// written, freed, then a sleep: 254 MB stayed resident (glibc 1 MB, jemalloc
// 43; tcmalloc and mimalloc keep all); now 26, and 10 with one block kept live
// (glibc 5, jemalloc 44). A program that grows again and ends its next phase
// within the purge delay repeats its phases: it pays the refaults once, and
// from then on its phase ends keep the room (the tenth session's loops over
// large buffers) until two of them are the whole delay apart. `large -w 4
// --min 1M --max 32M -n 1000`, whose four slots empty now and then: one
// purge, 38 k page faults against 30 k, 1.30x the time of its 0.19 s.
static __attribute__((noinline)) void arena_note_phase_end(ph_arena_t *a, uint64_t now) {
  int grew = a->peak_pages > a->end_peak;   // since the last purge (else still going down: the same end)
  if (!arena_end_recent(a, now)) a->end_regret = 0;
  else if (grew) a->end_regret = 1;
  a->end_ms = now;
  if (grew) a->end_peak = PH_NO_END_PEAK;
  size_t keep = g_hak_config.large_dirty_min / arenas_used();
  size_t live3 = PH_DIRTY_LIVE_FACTOR * run_bytes((uint32_t)a->live_pages);
  if (keep < live3) keep = live3;
  if (a->end_regret || atomic_load_explicit(&a->dirty_bytes, memory_order_relaxed) <= keep) return;
  unmap_empty_regions(a, PH_KEEP_EMPTY_REGIONS);
  for (ph_region_t *r = a->regions; r != NULL; r = r->next) region_purge(r, keep, 1);
  a->peak_pages = a->end_peak = a->live_pages;
  a->peak_run = 0;
  // The budget's room holds what the purge left dirty until the next pass:
  // with the peak alone, a program that goes on (a consumer that caught up
  // with its producer) had those runs purged at its next free (a 300 KiB-1
  // MiB producer and consumer: 90 MB purged here, 19 MB more 4 ms later).
  a->kept_pages = atomic_load_explicit(&a->dirty_bytes, memory_order_relaxed) >> PH_PAGE_SHIFT;
}

// A free took arena a to a phase end (lock held). Where it is another
// thread's free (not one of a's own, which allocate from it) while a's
// threads live, the purge waits a tenth of the purge delay (until a slow path
// after it: arena_maybe_purge, or any small-block refill through
// page_heap_maybe_purge) and is called off if a's live bytes come back above
// a quarter of the peak first (arena_note_peak): a consumer that freed what a
// producer filled, while the producer goes on filling. With the purge at
// once, four producers of 300 KiB-1 MiB blocks (every page written) and four
// consumers purged ~90 MB per arena at each arena's first phase end and ~70
// MB more in the same descent, all of it faulted in again (`prodcons -t 4 -n
// 20000 --min 300K --max 1M --touch pages`, 7 paired rounds: 314 k -> 196 k
// page faults, 0.60x the time, tcmalloc 0.53x -> 0.88x ours, peak RSS 684 ->
// 758 MB, tcmalloc's 661; `-t 2` 0.61x, tcmalloc's level; `-t 1 -n 5000`
// 0.65x). What it gives up: a program whose last frees came from another
// thread, and that then calls no allocator function at all, keeps that
// memory (up to its recent peak) until its next call: 64 blocks of 4 MiB
// written by one thread, freed by another that stays, then a sleep: 254 MB
// resident, was 58 (tcmalloc and mimalloc keep 258-265, jemalloc 44, glibc 1). Where
// the allocating thread frees, or the allocating threads exit (arena_idle),
// it goes back as before, and so where the freeing thread exits: its exit
// does the ends it put off (arena_key_destructor; the program's frees are
// over, a producer that comes back after that pays as before). An end the
// arena's own thread reaches while one waits is not put off: the producer
// freed the rest itself and may sleep now.
void arena_see_phase_end(ph_arena_t *a, uint64_t now) {
  _Atomic uint64_t *defer = &g_end_defer_ms[a - g_arenas];
  int regret = a->end_regret && arena_end_recent(a, now);   // keeps the room anyway
  if (!regret && t_ph_arena != (uint8_t)(a - g_arenas + 1) &&
      atomic_load_explicit(&arena_gate(a)->users, memory_order_relaxed) != 0) {
    if (atomic_load_explicit(defer, memory_order_relaxed) == 0)
      atomic_store_explicit(defer, now != 0 ? now : 1u, memory_order_relaxed);   // never 0
    t_ph_deferred |= arena_bit(a);
    return;
  }
  atomic_store_explicit(defer, 0, memory_order_relaxed);
  arena_note_phase_end(a, now);
}

// Is a's deferred phase end due (a relaxed look)? A start later than `now`
// (another thread stored it after this one read the clock) is not: `now -
// since` would wrap to a wait long passed.
static int arena_end_due(const ph_arena_t *a, uint64_t now) {
  uint64_t since = atomic_load_explicit(&g_end_defer_ms[a - g_arenas], memory_order_relaxed);
  return since != 0 && now >= since && now - since >= g_hak_config.large_purge_delay_ms / PH_END_DEFER_DEN;
}

// A's deferred phase end is due (lock held): its purge, if the live bytes
// are still at a phase end's level.
static HAK_NOINLINE void arena_end_deferred(ph_arena_t *a, uint64_t now) {
  atomic_store_explicit(&g_end_defer_ms[a - g_arenas], 0, memory_order_relaxed);
  if (a->live_pages * PH_PHASE_END_DEN <= a->peak_pages) arena_note_phase_end(a, now);
}

// The calling thread exits: the phase ends its frees put off, still waiting,
// are done now.
void arenas_end_deferred_by_thread(void) {
  for (uint32_t mask = t_ph_deferred; mask != 0; mask &= mask - 1) {
    ph_arena_t *a = &g_arenas[__builtin_ctz(mask)];
    arena_lock(a);
    if (atomic_load_explicit(&g_end_defer_ms[a - g_arenas], memory_order_relaxed) != 0) arena_end_deferred(a, os_now_ms());
    PH_VALIDATE(a);
    arena_unlock(a);
  }
  t_ph_deferred = 0;
}

// After the delay the dirty runs of a freed that long ago are purged (every
// one at once when a is idle) and its empty regions past the kept one
// unmapped; past the budget, the
// largest down to 3/4 of it, so
// the pages most likely reused stay resident
// (purging all of them there cost ws8192 -t 2 at 256 KiB-2 MiB 2 k madvise
// calls and 7x the page faults). Lock held.
// `now`: os_now_ms, or 0 to read it here when there is anything to purge.
void arena_maybe_purge(ph_arena_t *a, uint64_t now) {
  size_t dirty = atomic_load_explicit(&a->dirty_bytes, memory_order_relaxed);
  if (dirty == 0 && a->empty_regions <= PH_KEEP_EMPTY_REGIONS) return;
  if (now == 0) now = os_now_ms();
  if (HAK_UNLIKELY(arena_end_due(a, now))) {
    arena_end_deferred(a, now);
    dirty = atomic_load_explicit(&a->dirty_bytes, memory_order_relaxed);
  }
  if (arena_idle(a, now)) { purge_locked(a, 0, 0); return; }
  if (purge_delay_passed(a, now)) { purge_aged_locked(a, now); return; }
  size_t budget = dirty_budget(a);
  if (dirty > budget) purge_locked(a, 0, budget / 4 * 3);
}

// Purge a as arena_maybe_purge does, under its lock, and clear its bit in
// g_dirty_arenas when nothing is left to purge.
static void arena_purge_pass(ph_arena_t *a) {
  arena_lock(a);
  arena_maybe_purge(a, 0);
  if (atomic_load_explicit(&a->dirty_bytes, memory_order_relaxed) == 0 && a->empty_regions <= PH_KEEP_EMPTY_REGIONS)
    atomic_fetch_and_explicit(&g_dirty_arenas, ~arena_bit(a), memory_order_relaxed);
  PH_VALIDATE(a);
  arena_unlock(a);
}

// Purge the arenas of mask that are idle (arena_idle, the hint first) or,
// when `delay`, past the purge delay or a deferred phase end's wait.
static void purge_arenas(uint32_t mask, int delay) {
  if (mask == 0) return;
  uint64_t now = os_now_ms();
  uint32_t idle = atomic_load_explicit(&g_idle_arenas, memory_order_relaxed);
  for (; mask != 0; mask &= mask - 1) {
    ph_arena_t *a = &g_arenas[__builtin_ctz(mask)];
    if ((delay && (purge_delay_passed(a, now) || arena_end_due(a, now))) ||
        ((idle & arena_bit(a)) && arena_idle(a, now)))
      arena_purge_pass(a);
  }
}

// Called from the small-block slow paths, so freed large memory goes back
// after the delay even when no large block is allocated or freed again.
void page_heap_maybe_purge(void) { purge_arenas(atomic_load_explicit(&g_dirty_arenas, memory_order_relaxed), 1); }

// The idle arenas other than `self` (just purged as needed, its lock
// released), from every large block's malloc and free: their memory goes
// back while a program allocates only large blocks (Python's small objects
// rarely reach malloc). Two loads of read-mostly words while no arena is
// idle, no clock read.
void purge_idle_arenas(const ph_arena_t *self) {
  purge_arenas(atomic_load_explicit(&g_dirty_arenas, memory_order_relaxed) &
               atomic_load_explicit(&g_idle_arenas, memory_order_relaxed) & ~arena_bit(self), 0);
}

int page_heap_release_empty(void) {
  int released = 0;
  for (uint32_t i = 0, used = arenas_used(); i < used; i++) {
    ph_arena_t *a = &g_arenas[i];
    if (pthread_mutex_trylock(arena_mutex(a)) != 0) continue;
    HAK_SITE(SITE_PAGE_HEAP_LOCK);
    released |= unmap_empty_regions(a, 0);
    PH_VALIDATE(a);
    arena_unlock(a);
  }
  return released;
}

int page_heap_trim(int everything) {
  int released = 0;
  for (uint32_t i = 0, used = arenas_used(); i < used; i++) {
    ph_arena_t *a = &g_arenas[i];
    arena_lock(a);
    released |= purge_locked(a, everything, 0);
    a->end_ms = 0;                     // malloc_trim: what arena_note_phase_end learnt starts over
    a->end_peak = PH_NO_END_PEAK;
    a->end_regret = 0;
    atomic_store_explicit(&g_end_defer_ms[i], 0, memory_order_relaxed);
    PH_VALIDATE(a);
    arena_unlock(a);
  }
  return released;
}

// A deferred phase end (arena_see_phase_end) the program grew back from:
// it repeats its phases, as if the end had purged and the next come within
// the delay (arena_note_phase_end's regret). Lock held.
HAK_NOINLINE void arena_end_called_off(ph_arena_t *a) {
  atomic_store_explicit(&g_end_defer_ms[a - g_arenas], 0, memory_order_relaxed);
  a->end_regret = 1;
  a->end_ms = os_now_ms();
  a->end_peak = PH_NO_END_PEAK;
}
