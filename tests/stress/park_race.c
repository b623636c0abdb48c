// park_race.c — heaps parked at threads' exits (src/tiny/tiny_thread.c) under
// churn: two spawners start waves of 8 short threads that allocate and trade
// blocks through a shared array (so each thread frees other, often exited,
// threads' blocks: into parked heaps, or heaps a later thread took), while the
// main thread calls hak_trim every few milliseconds (which gives every parked
// heap back through the calling thread's borrowed lists). Every block (24
// bytes or more) carries its size and address in its first two words and its
// size in its last byte; each free checks them, so a block handed out twice or
// written by the allocator is found.
// Run plain and under ASan and TSan (tests/stress/stress.mk), with a short
// park delay so parked heaps also expire at thread starts and idle looks.
// Exits 0 ("park_race: ok"), or 1 with the first mismatch.
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hakmem.h"

#define SLOTS   4096
#define WAVE    8
#define ROUNDS  200                 // of the main thread's trims, 5 ms apart

static _Atomic(uintptr_t *) g_slot[SLOTS];
static _Atomic int g_stop, g_bad;

static uintptr_t *take(size_t size) {
  uintptr_t *p = hak_malloc(size);
  if (p == NULL) {
    fprintf(stderr, "park_race: hak_malloc(%zu) failed\n", size);
    exit(1);
  }
  p[0] = size;
  p[1] = (uintptr_t)p ^ 0x5a5a5a5a5a5a5a5aull;
  ((unsigned char *)p)[size - 1] = (unsigned char)size;
  return p;
}

static void give(uintptr_t *p) {
  if (p == NULL) return;
  size_t size = p[0];
  if (size < 24 || size > 4096 || p[1] != ((uintptr_t)p ^ 0x5a5a5a5a5a5a5a5aull) ||
      ((unsigned char *)p)[size - 1] != (unsigned char)size) {
    if (atomic_exchange(&g_bad, 1) == 0) fprintf(stderr, "park_race: block %p changed while in use\n", (void *)p);
    return;
  }
  hak_free(p);
}

static void *worker(void *arg) {
  uint32_t s = (uint32_t)(uintptr_t)arg * 2654435761u | 1u;
  int n = 200 + (int)(s % 800);
  for (int i = 0; i < n; i++) {
    s = s * 1103515245u + 12345u;
    size_t size = 24 + (s >> 8) % 2000;
    uintptr_t *p = take(size);
    give(atomic_exchange(&g_slot[(s >> 4) % SLOTS], p));   // another thread's block, often
    if ((s & 7) == 0) give(take(size));                    // and one of its own
  }
  return NULL;
}

static void *spawner(void *arg) {
  uintptr_t k = (uintptr_t)arg;
  while (!atomic_load(&g_stop)) {
    pthread_t t[WAVE];
    for (int i = 0; i < WAVE; i++)
      if (pthread_create(&t[i], NULL, worker, (void *)(k += 2)) != 0) exit(1);
    for (int i = 0; i < WAVE; i++) pthread_join(t[i], NULL);
  }
  return NULL;
}

int main(void) {
  setenv("HAKMEM_PURGE_DELAY_MS", "1", 0);   // read at the first call: parked heaps wait 10 ms
  give(take(32));
  pthread_t sp[2];
  for (uintptr_t i = 0; i < 2; i++)
    if (pthread_create(&sp[i], NULL, spawner, (void *)i) != 0) return 1;
  for (int r = 0; r < ROUNDS && !atomic_load(&g_bad); r++) {
    usleep(5000);
    hak_trim();
    give(take(100));
  }
  atomic_store(&g_stop, 1);
  for (int i = 0; i < 2; i++) pthread_join(sp[i], NULL);
  for (int i = 0; i < SLOTS; i++) give(atomic_exchange(&g_slot[i], NULL));
  hak_trim();
  if (atomic_load(&g_bad)) return 1;
  puts("park_race: ok");
  return 0;
}
