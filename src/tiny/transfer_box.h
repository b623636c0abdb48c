// transfer_box.h — per-class exchange of free blocks between threads
// (tcmalloc's transfer cache).
//
// A thread's TLS list reuses the other threads' blocks it frees, so in a ring
// of threads each class's surplus and deficit in a thread are random walks: a
// thread whose list overflows sent the surplus home, to slabs whose owners did
// not need it, while a thread short of the class carved new memory (ring at 16
// threads: peak RSS 1.7x mimalloc's after 2M operations per thread, growing
// with the run). A flush now hands the other threads' blocks it takes off the
// list to this exchange as one chain, and a refill takes a chain from it before
// it carves or turns to a partial slab: the surplus of one thread feeds the
// deficit of another. Blocks in the exchange stay counted as handed out (their
// slabs' live counts) and keep their free mark, as on a TLS list.
//
// One mutex per class (one lock per chain of up to a batch of blocks: at most
// one per batch/2 frees on cross-thread rows, none on local rows, which never
// flush another thread's block). A class holds at most one chain per live
// thread (the caller's limit, at most TRANSFER_MAX_CHAINS; a thread's exit
// sends the chains over the new count home): what a thread's list would
// hold, not more; the rest goes home as before. (Ring at 16
// threads, -n 2M, peak RSS over 5 runs: 19.0 MB with 4 chains per class,
// 16.8 MB with 16; mimalloc 18.9.)
#ifndef HAK_TRANSFER_BOX_H
#define HAK_TRANSFER_BOX_H

#include "debug/ptr_types.h"

#define TRANSFER_MAX_CHAINS 32u
// The largest block a flush gives the exchange: 32 KiB (HAK_MEDIUM_MAX).
// Medium blocks went home only, through their slabs' remote lists, until the
// fourteenth session: ring -t 8 of 1-16 KiB blocks took 1.7x tcmalloc's time
// at 1.6x its peak RSS (130 MB), its owners carving while the blocks sent home
// waited in slabs they were not refilling from; with the exchange 0.58x the
// time at 81 MB (tcmalloc's). A chain of the largest class is 8 blocks
// (256 KiB), and a class keeps at most one per live thread (trimmed as
// threads exit, tiny_exchange_trim). Larger slab classes (to 256 KiB) still
// go home.
#define TRANSFER_MAX_BLOCK HAK_MEDIUM_MAX

// Keep first..last (n blocks of class cls, linked, marked free). 0 when the
// class's exchange holds `limit` chains or more (the caller sends them home).
int transfer_put(unsigned cls, uint32_t limit, hak_base_ptr_t first, hak_base_ptr_t last, uint32_t n);
// Does cls's exchange hold `limit` chains or more (a relaxed look: the flush
// then sends every block home in one walk)?
int transfer_full(unsigned cls, uint32_t limit);
// Take one chain of cls, at most max blocks of it (the rest stays), into
// *first..*last; returns its length, 0 when empty.
uint32_t transfer_take(unsigned cls, uint32_t max, hak_base_ptr_t *first, hak_base_ptr_t *last);
// A refill's take: the newest chain another thread put, else the newest
// (*own = 1: this thread put it, and the refill tells free_batch_box, whose
// verdict on the flushes then does not count those blocks again as other
// threads'). A thread left alone with blocks another thread allocated and
// keeps (larson -t 1: the main thread's, handed to the worker, the main
// thread waiting) put them here at its overflows and took them back at its
// refills, round and round: every flush a fifth "other threads' blocks", and
// it batched 95% of its frees for the whole run, 1.13x the time of not
// batching. Another thread's chain first, so a thread takes back its own
// only when no other thread's is there.
uint32_t transfer_take_others_first(unsigned cls, uint32_t max, hak_base_ptr_t *first, hak_base_ptr_t *last, int *own);
// One chain (whole) of the first class from *cls on whose exchange holds
// more than `over` chains (a relaxed look at each), *cls set to that class;
// 0 when there is none. A thread's exit looks at every class's exchange, most
// of them empty: a take per class cost 52 calls (churn -c 16 -k 16: 1.6 k
// instructions an exit on 2 cores, where most exits leave one thread live
// and send the whole exchange home).
uint32_t transfer_take_next(unsigned *cls, uint32_t over, hak_base_ptr_t *first, hak_base_ptr_t *last);
// Blocks of cls held now (statistics, tests).
uint32_t transfer_blocks(unsigned cls);
// Chains of cls held now (a relaxed look).
uint32_t transfer_chains(unsigned cls);
// Chains of cls put or taken so far (wraps; a relaxed look): an exchange
// whose count stood still while it held chains is of a class no thread
// flushes or refills now (idle_class_box.c look_idle_classes).
uint32_t transfer_moves(unsigned cls);

void transfer_fork_prepare(void);
struct timespec;
// Every exchange's lock free by `by` (os_mutex_settles; the exit report's check).
int transfer_locks_settle(const struct timespec *by);
void transfer_fork_parent(void);
void transfer_fork_child(void);

#endif
