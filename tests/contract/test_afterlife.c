// test_afterlife.c — a program that frees and allocates after main is over:
// from a pthread key destructor of a thread that outlives main (main ends with
// pthread_exit), from atexit handlers, and from static destructors. The last
// destructor to run prints "afterlife ok" if every stage ran; the exit status
// is 0 unless something crashed. Spawned by test_process under LD_PRELOAD.
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *g_from_ctor, *g_for_atexit, *g_for_dtor, *g_for_late_dtor;
static pthread_key_t g_key;
static int g_stages;                   // incremented by each stage that ran

static void say(const char *s) {
  ssize_t r = write(1, s, strlen(s));
  (void)r;
}

static void churn(void) {
  void *b[100];
  for (int i = 0; i < 100; i++) b[i] = malloc((size_t)(i * 37 % 3000) + 1);
  for (int i = 0; i < 100; i++) free(b[i]);
  void *r = realloc(NULL, 10);
  r = realloc(r, 100000);
  free(r);
}

__attribute__((constructor)) static void make_early(void) {
  g_from_ctor = malloc(123);
  g_for_late_dtor = malloc(70000);
}

static void key_destructor(void *v) {  // runs at exit of the lingering thread
  free(v);
  churn();
  __atomic_fetch_add(&g_stages, 1, __ATOMIC_RELAXED);
}

static void *lingering(void *arg) {
  (void)arg;
  pthread_setspecific(g_key, malloc(300));
  usleep(50 * 1000);                   // main is gone by now
  churn();
  return NULL;
}

static void at_exit_handler(void) {
  free(g_for_atexit);
  free(g_from_ctor);
  churn();
  __atomic_fetch_add(&g_stages, 1, __ATOMIC_RELAXED);
}

__attribute__((destructor(65535))) static void static_destructor(void) {
  free(g_for_dtor);
  churn();
  __atomic_fetch_add(&g_stages, 1, __ATOMIC_RELAXED);
}

__attribute__((destructor(101))) static void last_destructor(void) {   // runs last
  free(g_for_late_dtor);
  churn();
  if (__atomic_load_n(&g_stages, __ATOMIC_RELAXED) == 3) say("afterlife ok\n");
  else say("afterlife: a stage did not run\n");
}

int main(void) {
  g_for_atexit = malloc(5000);
  g_for_dtor = malloc(64);
  atexit(at_exit_handler);
  pthread_key_create(&g_key, key_destructor);
  pthread_t t;
  if (pthread_create(&t, NULL, lingering, NULL) != 0) return 2;
  pthread_detach(t);
  pthread_exit(NULL);                  // the process lives on until the thread ends
}
