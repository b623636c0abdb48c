// probe.c — is malloc hakmem's? Built two ways by the install tests: linked
// with `pkg-config --libs hakmem` (PROBE_LINKED) and plain, run under the
// hakmem command. Prints "hakmem <version> owns=1 preload=<LD_PRELOAD>" and
// exits with the status given as argv[1] (the wrapper must pass it through).
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef PROBE_LINKED
#include <hakmem.h>
#endif

int main(int argc, char **argv) {
  int (*owns)(const void *) = (int (*)(const void *))dlsym(RTLD_DEFAULT, "hak_owns");
  const char *(*version)(void) = (const char *(*)(void))dlsym(RTLD_DEFAULT, "hak_version");
  char *p = malloc(100);
  if (owns == NULL || version == NULL) {
    printf("not hakmem\n");
    return 99;
  }
#ifdef PROBE_LINKED
  if (strcmp(version(), HAKMEM_VERSION) != 0) {
    printf("version mismatch: header %s, library %s\n", HAKMEM_VERSION, version());
    return 98;
  }
#endif
  const char *pre = getenv("LD_PRELOAD");
  printf("hakmem %s owns=%d preload=%s\n", version(), owns(p), pre ? pre : "");
  free(p);
  return argc > 1 ? atoi(argv[1]) : 0;
}
