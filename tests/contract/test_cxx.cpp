// test_cxx.cpp — every C++ operator new/delete goes to hakmem: plain, array,
// nothrow, aligned (std::align_val_t), sized and aligned deletes; operator
// new of an impossible size calls the new_handler and then throws
// std::bad_alloc, nothrow returns nullptr. Compiled and linked normally with
// g++, run with LD_PRELOAD. Prints one PASS/FAIL line per test and exits 1 on
// any failure.
#include <dlfcn.h>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <new>
#include <string>
#include <thread>
#include <vector>

static int g_failed, g_passed;

#define CHECK(cond)                                                                  \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      std::printf("    %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);     \
      return false;                                                                  \
    }                                                                                \
  } while (0)

static void run(const char *name, bool (*fn)()) {
  bool ok = fn();
  std::printf("%s %s\n", ok ? "PASS" : "FAIL", name);
  (ok ? g_passed : g_failed)++;
}

static bool g_glibc;   // HAKMEM_CONTRACT_GLIBC=1: checking the expectations against glibc

static bool owned(const void *p) {
  if (g_glibc) return true;
  auto owns = reinterpret_cast<int (*)(const void *)>(dlsym(RTLD_DEFAULT, "hak_owns"));
  return owns != nullptr && owns(p);
}
static bool aligned(const void *p, std::size_t a) { return (reinterpret_cast<std::uintptr_t>(p) & (a - 1)) == 0; }

static volatile std::size_t v_huge = std::size_t(1) << 62;

struct alignas(64) Line { char bytes[64]; };
struct alignas(4096) Page { char bytes[100]; };
struct alignas(1 << 21) Huge2M { char bytes[10]; };

static bool plain_new_and_delete_use_hakmem() {
  int *i = new int(42);
  CHECK(owned(i) && *i == 42);
  delete i;
  std::string *s = new std::string(1000, 'x');
  CHECK(owned(s));
  delete s;                                   // sized delete (-fsized-deallocation)
  return true;
}

static bool array_new_and_delete_use_hakmem() {
  char *a = new char[1000];
  CHECK(owned(a));
  std::memset(a, 1, 1000);
  delete[] a;
  std::string *ss = new std::string[10];      // array cookie + sized delete[]
  CHECK(owned(reinterpret_cast<char *>(ss) - sizeof(std::size_t)));
  delete[] ss;
  return true;
}

static bool nothrow_new_uses_hakmem() {
  int *i = new (std::nothrow) int(7);
  CHECK(i != nullptr && owned(i));
  delete i;
  char *a = new (std::nothrow) char[300];
  CHECK(a != nullptr && owned(a));
  operator delete[](a, std::nothrow);
  return true;
}

static bool aligned_new_honours_the_alignment() {
  Line *l = new Line;
  CHECK(aligned(l, 64) && owned(l));
  delete l;
  Page *p = new Page[3];
  CHECK(aligned(p, 4096) && owned(p));
  delete[] p;
  Huge2M *h = new Huge2M;
  CHECK(aligned(h, 1 << 21));
  delete h;
  void *n = operator new(100, std::align_val_t(256), std::nothrow);
  CHECK(n != nullptr && aligned(n, 256));
  operator delete(n, std::align_val_t(256), std::nothrow);
  void *m = operator new[](100, std::align_val_t(512), std::nothrow);
  CHECK(m != nullptr && aligned(m, 512));
  operator delete[](m, std::align_val_t(512), std::nothrow);
  void *o = operator new(100, std::align_val_t(128));
  CHECK(aligned(o, 128));
  operator delete(o, 100, std::align_val_t(128));
  void *q = operator new[](100, std::align_val_t(128));
  CHECK(aligned(q, 128));
  operator delete[](q, 100, std::align_val_t(128));
  return true;
}

static bool every_delete_form_frees() {
  void *p = operator new(50);
  operator delete(p, 50);
  p = operator new[](50);
  operator delete[](p, 50);
  p = operator new(50);
  operator delete(p, std::nothrow);
  p = operator new(50, std::align_val_t(64));
  operator delete(p, std::align_val_t(64));
  p = operator new[](50, std::align_val_t(64));
  operator delete[](p, std::align_val_t(64));
  operator delete(nullptr);
  operator delete[](nullptr);
  return true;
}

static bool new_of_zero_bytes_returns_unique_pointers() {
  void *a = operator new(0), *b = operator new(0);
  CHECK(a != nullptr && b != nullptr && a != b);
  operator delete(a);
  operator delete(b);
  return true;
}

static bool huge_new_throws_bad_alloc() {
  bool thrown = false;
  try {
    void *p = operator new(v_huge);
    operator delete(p);
  } catch (const std::bad_alloc &) {
    thrown = true;
  }
  CHECK(thrown);
  thrown = false;
  try {
    void *p = operator new[](v_huge, std::align_val_t(64));
    operator delete[](p);
  } catch (const std::bad_alloc &) {
    thrown = true;
  }
  CHECK(thrown);
  return true;
}

static bool huge_nothrow_new_returns_nullptr() {
  CHECK(operator new(v_huge, std::nothrow) == nullptr);
  CHECK(operator new[](v_huge, std::nothrow) == nullptr);
  CHECK(operator new(v_huge, std::align_val_t(64), std::nothrow) == nullptr);
  CHECK(operator new[](v_huge, std::align_val_t(64), std::nothrow) == nullptr);
  return true;
}

static int g_handler_calls;
static void handler_gives_up_on_second_call() {
  if (++g_handler_calls >= 2) std::set_new_handler(nullptr);
}

static bool failed_new_calls_the_new_handler_until_it_is_removed() {
  g_handler_calls = 0;
  std::set_new_handler(handler_gives_up_on_second_call);
  bool thrown = false;
  try {
    void *p = operator new(v_huge);
    operator delete(p);
  } catch (const std::bad_alloc &) {
    thrown = true;
  }
  std::set_new_handler(nullptr);
  CHECK(thrown);
  CHECK(g_handler_calls == 2);
  return true;
}

static void handler_throws() { throw std::bad_alloc(); }

static bool a_new_handler_may_throw_bad_alloc_itself() {
  std::set_new_handler(handler_throws);
  bool thrown = false;
  try {
    void *p = operator new(v_huge);
    operator delete(p);
  } catch (const std::bad_alloc &) {
    thrown = true;
  }
  std::set_new_handler(nullptr);
  CHECK(thrown);
  return true;
}

// [new.delete.single]: the nothrow forms call the new_handler too, and return
// nullptr once it throws bad_alloc (or none is installed). Before, hakmem's
// returned nullptr at once, never calling the handler (0 calls).
static bool failed_nothrow_new_calls_the_new_handler_until_it_is_removed() {
  void *(*forms[])(std::size_t) = {
      [](std::size_t n) { return operator new(n, std::nothrow); },
      [](std::size_t n) { return operator new[](n, std::nothrow); },
      [](std::size_t n) { return operator new(n, std::align_val_t(64), std::nothrow); },
      [](std::size_t n) { return operator new[](n, std::align_val_t(64), std::nothrow); },
  };
  for (auto form : forms) {
    g_handler_calls = 0;
    std::set_new_handler(handler_gives_up_on_second_call);
    void *p = form(v_huge);
    std::set_new_handler(nullptr);
    CHECK(p == nullptr);
    CHECK(g_handler_calls == 2);
  }
  std::set_new_handler(handler_throws);        // a handler that throws: nullptr, nothing escapes
  void *q = operator new(v_huge, std::nothrow);
  std::set_new_handler(nullptr);
  CHECK(q == nullptr);
  return true;
}

static bool containers_work_across_threads() {
  std::vector<std::thread> ts;
  std::vector<std::unique_ptr<std::map<int, std::string>>> results(4);
  for (int t = 0; t < 4; t++)
    ts.emplace_back([t, &results] {
      auto m = std::make_unique<std::map<int, std::string>>();
      for (int i = 0; i < 20000; i++) (*m)[i] = std::to_string(i * t);
      for (int i = 0; i < 20000; i += 2) m->erase(i);
      results[t] = std::move(m);
    });
  for (auto &t : ts) t.join();
  for (int t = 0; t < 4; t++) {
    CHECK(results[t]->size() == 10000);
    CHECK((*results[t])[9999] == std::to_string(9999 * t));
  }
  results.clear();                            // freed by another thread than the allocator
  std::vector<std::vector<int>> vv;
  for (int i = 0; i < 1000; i++) vv.emplace_back(i, i);
  CHECK(vv[999].size() == 999 && vv[999][5] == 999);
  return true;
}

int main() {
  g_glibc = std::getenv("HAKMEM_CONTRACT_GLIBC") != nullptr;
  if (!g_glibc) {
    if (dlsym(RTLD_DEFAULT, "hak_malloc") == nullptr) {
      std::printf("FAIL hakmem is not loaded (run with LD_PRELOAD=libhakmem.so)\n");
      return 1;
    }
    run("plain_new_and_delete_use_hakmem", plain_new_and_delete_use_hakmem);
    run("array_new_and_delete_use_hakmem", array_new_and_delete_use_hakmem);
    run("nothrow_new_uses_hakmem", nothrow_new_uses_hakmem);
  }
  run("aligned_new_honours_the_alignment", aligned_new_honours_the_alignment);
  run("every_delete_form_frees", every_delete_form_frees);
  run("new_of_zero_bytes_returns_unique_pointers", new_of_zero_bytes_returns_unique_pointers);
  run("huge_new_throws_bad_alloc", huge_new_throws_bad_alloc);
  run("huge_nothrow_new_returns_nullptr", huge_nothrow_new_returns_nullptr);
  run("failed_new_calls_the_new_handler_until_it_is_removed",
      failed_new_calls_the_new_handler_until_it_is_removed);
  run("a_new_handler_may_throw_bad_alloc_itself", a_new_handler_may_throw_bad_alloc_itself);
  run("failed_nothrow_new_calls_the_new_handler_until_it_is_removed",
      failed_nothrow_new_calls_the_new_handler_until_it_is_removed);
  run("containers_work_across_threads", containers_work_across_threads);
  std::printf("cxx: %d passed, %d failed\n", g_passed, g_failed);
  return g_failed ? 1 : 0;
}
