# tests/unit/unit.mk — cmocka unit tests of the engine's boxes.
# -include'd by the top Makefile (uses its CC, CFLAGS, BUILD, CORE_A).
#
#   make test-unit               the unit tests against the release core, again against the
#                                debug core (make DEBUG=1: -O0, phantom pointer types), then
#                                the phantom-type compile checks
#   make test-unit-run           build and run the unit tests of the current configuration
#                                (DEBUG=1, SAN=asan ... select the core they link)
#   make test-unit-compile-fail  hak_user_ptr_t passed as hak_base_ptr_t must not compile
#                                with HAK_DEBUG=1 (and must compile with HAK_DEBUG=0)
#
# Each tests/unit/test_*.c is one cmocka group and one program, built into
# $(BUILD)/tests/unit/. The tests may read the engine's internals (-Isrc).
.PHONY: test-unit test-unit-run test-unit-compile-fail unit-bins

UNIT_DIR    := tests/unit
UNIT_OUT    := $(BUILD)/tests/unit
UNIT_SRCS   := $(sort $(wildcard $(UNIT_DIR)/test_*.c))
UNIT_BINS   := $(UNIT_SRCS:$(UNIT_DIR)/%.c=$(UNIT_OUT)/%)
# tests/unit/hardened_test_*.c: the same harness against the hardened engine
# (HAK_HARDENED=1, $(HARD_CORE_A)); only where the hardened library is built
# (not under a sanitizer, not with LINK_ENCODE=0).
UNIT_HARD_SRCS := $(if $(SAN),,$(if $(filter 0,$(LINK_ENCODE)),,$(sort $(wildcard $(UNIT_DIR)/hardened_test_*.c))))
UNIT_HARD_BINS := $(UNIT_HARD_SRCS:$(UNIT_DIR)/%.c=$(UNIT_OUT)/%)
UNIT_CFLAGS := $(CFLAGS) -pthread $(shell pkg-config --cflags cmocka 2>/dev/null)
UNIT_LIBS   := $(or $(shell pkg-config --libs cmocka 2>/dev/null),-lcmocka) -lpthread
# The HAKMEM_* options change what the tests observe (abort on error, purge delays,
# hysteresis): run the tests with the defaults, but for one: a thread's exit
# gives its heap back (HAKMEM_PARK_THREADS=0), which is what the groups that
# run a thread and look at its slabs after test; test_park turns parking on.
UNIT_ENV    := env -u LD_PRELOAD -u HAKMEM_ABORT_ON_ERROR -u HAKMEM_VERBOSE -u HAKMEM_PURGE_DELAY_MS \
               -u HAKMEM_PURGE_DIRTY_MB -u HAKMEM_KEEP_EMPTY_SS -u HAKMEM_HUGE_CACHE_MB \
               -u HAKMEM_HUGE_CACHE_DELAY_MS -u HAKMEM_LARGE_PURGE_DELAY_MS -u HAKMEM_LARGE_DIRTY_MB \
               -u HAKMEM_STATS -u HAKMEM_STATS_FILE -u HAKMEM_FREE_BATCH -u HAKMEM_POPULATE \
               HAKMEM_PARK_THREADS=0

# Under a sanitizer the process's RSS includes shadow memory that never
# shrinks, so the RSS tests mean nothing there; everything else runs.
UNIT_RUN_BINS := $(if $(SAN),$(filter-out %/test_memory_return,$(UNIT_BINS)),$(UNIT_BINS)) $(UNIT_HARD_BINS)

TEST_RUNS += test-unit

unit-bins: $(UNIT_BINS) $(UNIT_HARD_BINS)

$(UNIT_OUT)/hardened_test_%: $(UNIT_DIR)/hardened_test_%.c $(UNIT_DIR)/unit_util.h $(UNIT_DIR)/big_heap_batching.h $(UNIT_DIR)/full_list_past_growth.h $(HARD_CORE_A)
	@mkdir -p $(dir $@)
	$(CC) $(UNIT_CFLAGS) -DHAK_HARDENED=1 $< -o $@ $(HARD_CORE_A) $(UNIT_LIBS)

$(UNIT_OUT)/%: $(UNIT_DIR)/%.c $(UNIT_DIR)/unit_util.h $(UNIT_DIR)/big_heap_batching.h $(UNIT_DIR)/full_list_past_growth.h $(CORE_A)
	@mkdir -p $(dir $@)
	$(CC) $(UNIT_CFLAGS) $< -o $@ $(CORE_A) $(UNIT_LIBS)

test-unit:
	@fail=0; \
	$(MAKE) --no-print-directory DEBUG=0 SAN= test-unit-run || fail=$$((fail+1)); \
	$(MAKE) --no-print-directory DEBUG=1 SAN= test-unit-run || fail=$$((fail+1)); \
	$(MAKE) --no-print-directory DEBUG=0 SAN= test-unit-compile-fail || fail=$$((fail+1)); \
	echo "test-unit: release, debug, compile-fail: $$fail failed"; [ $$fail -eq 0 ]

test-unit-run: $(UNIT_RUN_BINS)
	@fail=0; for t in $(UNIT_RUN_BINS); do \
	  echo "--- $$t"; $(UNIT_ENV) $$t || { echo "FAILED: $$t"; fail=$$((fail+1)); }; \
	done; echo "unit programs ($(BUILD)): $(words $(UNIT_RUN_BINS)) run, $$fail failed"; [ $$fail -eq 0 ]

# The phantom pointer types (src/debug/ptr_types.h): a user pointer handed to a box
# that takes a base pointer is a compile error in debug builds, and the very same
# source is plain C in release builds, where both types are void *.
UNIT_TYPE_FLAGS := -std=gnu11 -Wall -Wextra -Werror -Isrc -Iinclude -D_GNU_SOURCE
UNIT_TYPE_OUT   := $(UNIT_OUT)/compile
test-unit-compile-fail:
	@mkdir -p $(UNIT_TYPE_OUT)
	@echo "--- phantom types: the control (hak_user_to_base) compiles with HAK_DEBUG=1"
	$(CC) $(UNIT_TYPE_FLAGS) -DHAK_DEBUG=1 -c $(UNIT_DIR)/compile_ok_user_to_base.c -o $(UNIT_TYPE_OUT)/ok_debug.o
	@echo "--- phantom types: a user pointer as a base pointer must NOT compile with HAK_DEBUG=1"
	@if $(CC) $(UNIT_TYPE_FLAGS) -DHAK_DEBUG=1 -c $(UNIT_DIR)/compile_fail_user_as_base.c \
	      -o $(UNIT_TYPE_OUT)/fail_debug.o 2> $(UNIT_TYPE_OUT)/fail_debug.log; then \
	  echo "FAILED: $(UNIT_DIR)/compile_fail_user_as_base.c compiled with HAK_DEBUG=1"; exit 1; \
	elif ! grep -q "incompatible type" $(UNIT_TYPE_OUT)/fail_debug.log; then \
	  echo "FAILED: compile_fail_user_as_base.c failed for another reason:"; \
	  cat $(UNIT_TYPE_OUT)/fail_debug.log; exit 1; \
	else echo "ok: rejected ($$(grep -m1 'incompatible type' $(UNIT_TYPE_OUT)/fail_debug.log))"; fi
	@echo "--- phantom types: the same sources compile with HAK_DEBUG=0 (the types vanish)"
	$(CC) $(UNIT_TYPE_FLAGS) -DHAK_DEBUG=0 -c $(UNIT_DIR)/compile_fail_user_as_base.c -o $(UNIT_TYPE_OUT)/fail_release.o
	$(CC) $(UNIT_TYPE_FLAGS) -DHAK_DEBUG=0 -c $(UNIT_DIR)/compile_ok_user_to_base.c -o $(UNIT_TYPE_OUT)/ok_release.o
