// stats_prog.c — a workload whose statistics are known, for test_stats.sh:
// main holds 1000 blocks of 48 bytes; a second thread allocates 2000 blocks
// of 100 bytes that main frees (remote frees), then main calls malloc_info
// (stdout) and, with argument "stats", malloc_stats (stderr); with argument
// "close-stderr" it closes stderr before it returns, as GNU sort and xz do at
// exit (their close_stdout).
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HELD 1000
#define REMOTE 2000
static void *g_held[HELD];
static void *g_remote[REMOTE];

// The producer lives until the freer is done: had it exited first, its
// small heap would have waited parked (HAKMEM_PARK_THREADS) for the freer,
// whose frees would then have been its own.
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cond = PTHREAD_COND_INITIALIZER;
static int g_produced, g_freed;

static void *producer(void *arg) {
  (void)arg;
  for (int i = 0; i < REMOTE; i++) g_remote[i] = malloc(100);
  pthread_mutex_lock(&g_lock);
  g_produced = 1;
  pthread_cond_broadcast(&g_cond);
  while (!g_freed) pthread_cond_wait(&g_cond, &g_lock);
  pthread_mutex_unlock(&g_lock);
  return NULL;
}

static void *freer(void *arg) {
  (void)arg;
  for (int i = 0; i < REMOTE; i++) free(g_remote[i]);
  return NULL;
}

int main(int argc, char **argv) {
  for (int i = 0; i < HELD; i++) memset(g_held[i] = malloc(48), 1, 48);
  pthread_t p, t;
  pthread_create(&p, NULL, producer, NULL);
  pthread_mutex_lock(&g_lock);
  while (!g_produced) pthread_cond_wait(&g_cond, &g_lock);
  pthread_mutex_unlock(&g_lock);
  // freed by a thread that is not the slabs' owner, which then exits (its
  // cache goes home: the remote frees are counted)
  pthread_create(&t, NULL, freer, NULL);
  pthread_join(t, NULL);
  pthread_mutex_lock(&g_lock);
  g_freed = 1;
  pthread_cond_broadcast(&g_cond);
  pthread_mutex_unlock(&g_lock);
  pthread_join(p, NULL);
  malloc_info(0, stdout);
  fflush(stdout);
  if (argc > 1 && strcmp(argv[1], "stats") == 0) malloc_stats();
  if (argc > 1 && strcmp(argv[1], "close-stderr") == 0) fclose(stderr);
  return 0;   // g_held stays live: the exit report sees it
}
