# tests/stress/stress.mk — the reliability suite: stress, fault tests, sanitizer runs.
# -include'd by the top Makefile (uses its CC, BUILD, SAN, CORE_A, LIB_SO).
#
#   make test-stress        hak_* stress (libhakmem_core.a) + malloc stress under LD_PRELOAD,
#                           park_race (threads' heaps parked at exit under churn and trims)
#   make test-faults        fault tests (thread churn, producer/consumer, fork, signal-fork,
#                           RLIMIT_AS, bad frees)
#                           under LD_PRELOAD=build/libhakmem.so
#   make test-sanitizers    the hak_* stress with ASan+UBSan and with TSan (clang; core from
#                           make SAN=asan / SAN=tsan)
#   make test-long          stress for a long time (~15 min) and the fuzzer (~15 min)
#
# Knobs: STRESS_ARGS (default run), STRESS_NAP_ARGS, STRESS_HEAP_ARGS, STRESS_ASAN_ARGS, STRESS_TSAN_ARGS, STRESS_LONG_ARGS;
# see `build/tests/stress/stress_hak -h`.
.PHONY: test-stress test-faults test-sanitizers test-stress-asan test-stress-tsan \
        stress-san-run test-long stress-bins

STRESS_DIR       := $(BUILD)/tests/stress
STRESS_CFLAGS    := -std=gnu11 -O2 -g -Wall -Wextra -Werror -D_GNU_SOURCE -Iinclude -pthread
STRESS_ARGS      ?= -t 8 -r 8 -n 40000
STRESS_ASAN_ARGS ?= -t 8 -r 8 -n 40000
# TSan: runs with fork on (it has passed so far); add -F to STRESS_TSAN_ARGS if fork under
# TSan ever proves flaky. Large blocks are capped at 1 MiB there (TSan shadow makes page
# faults on big blocks slow).
STRESS_TSAN_ARGS ?= -t 8 -r 8 -n 30000 -m 1048576
STRESS_LONG_ARGS ?= -t 8 -r 80 -n 30000 -w 3600
# Owners asleep: the odd threads sleep 60 ms four times a round, so the
# remote lists of their slabs go stale and tickets are kept, parked at exits
# and taken (remote_free_box.h); the end finds nothing in use.
STRESS_NAP_ARGS  ?= -t 16 -r 3 -n 20000 -z 60
# A big heap: one thread keeps up to 60 000 blocks of 8 B-1 KiB (~30 MiB), so it
# batches its own frees (free_batch_box.h: a heap's batch) and its end frees
# them scattered: the batch's drain sends its own blocks past a full list home
# (~1 800 a run; the probe stops most batches, since the stress reads every
# block before its free). Two threads' exchange makes theirs foreign batches.
STRESS_HEAP_ARGS ?= -t 1 -r 3 -n 1500000 -l 60000 -S
SAN_OPTS := ASAN_OPTIONS=abort_on_error=1:detect_leaks=1:halt_on_error=1 \
            UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
            TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1

STRESS_HAK    := $(STRESS_DIR)/stress_hak
STRESS_MALLOC := $(STRESS_DIR)/stress_malloc
FAULTS_BIN    := $(STRESS_DIR)/faults
PARK_RACE     := $(STRESS_DIR)/park_race

stress-bins: $(STRESS_HAK) $(STRESS_MALLOC) $(FAULTS_BIN) $(PARK_RACE)

$(STRESS_HAK): tests/stress/stress.c include/hakmem.h $(CORE_A)
	@mkdir -p $(dir $@)
	$(CC) $(STRESS_CFLAGS) -DSTRESS_HAK $< $(CORE_A) -o $@ -lpthread

$(PARK_RACE): tests/stress/park_race.c include/hakmem.h $(CORE_A)
	@mkdir -p $(dir $@)
	$(CC) $(STRESS_CFLAGS) $< $(CORE_A) -o $@ -lpthread

$(STRESS_MALLOC): tests/stress/stress.c
	@mkdir -p $(dir $@)
	$(CC) $(STRESS_CFLAGS) $< -o $@ -lpthread -ldl

$(FAULTS_BIN): tests/stress/faults.c
	@mkdir -p $(dir $@)
	$(CC) $(STRESS_CFLAGS) $< -o $@ -lpthread -ldl

# Both variants run even when the first fails; the target fails if either did.
# Then bench/churn CHURN_RUNS times: short threads that leave blocks for the
# next ones to free, so abandoned slabs are adopted and emptied all the time (an
# ABA on the slab state aborted ~2% of these runs before df4cf00: a clean pass
# of 100 is not proof, the unit test in test_heap.c is; this is the guard).
CHURN_RUNS ?= 100
CHURN_BIN  := $(BUILD)/bench/churn
test-stress: $(STRESS_HAK) $(STRESS_MALLOC) $(PARK_RACE) $(LIB_SO) $(CHURN_BIN)
	@fail=0; \
	echo "$(STRESS_HAK) $(STRESS_ARGS)"; \
	$(STRESS_HAK) $(STRESS_ARGS) || fail=1; \
	echo "$(STRESS_HAK) $(STRESS_NAP_ARGS)"; \
	$(STRESS_HAK) $(STRESS_NAP_ARGS) || fail=1; \
	echo "$(STRESS_HAK) $(STRESS_HEAP_ARGS)"; \
	$(STRESS_HAK) $(STRESS_HEAP_ARGS) || fail=1; \
	echo "$(PARK_RACE)"; \
	$(PARK_RACE) || fail=1; \
	echo "LD_PRELOAD=$(abspath $(LIB_SO)) $(STRESS_MALLOC) $(STRESS_ARGS)"; \
	STRESS_EXPECT_HAKMEM=1 LD_PRELOAD=$(abspath $(LIB_SO)) $(STRESS_MALLOC) $(STRESS_ARGS) || fail=1; \
	echo "LD_PRELOAD=$(abspath $(LIB_SO)) $(CHURN_BIN) -c 4 -k 200 -n 2000, $(CHURN_RUNS) runs"; \
	bad=0; for i in $$(seq 1 $(CHURN_RUNS)); do \
	  LD_PRELOAD=$(abspath $(LIB_SO)) $(CHURN_BIN) -c 4 -k 200 -n 2000 >/dev/null || bad=$$((bad + 1)); \
	done; \
	if [ $$bad -ne 0 ]; then echo "FAIL: churn failed $$bad of $(CHURN_RUNS) runs"; fail=1; fi; \
	exit $$fail

test-faults: $(FAULTS_BIN) $(LIB_SO)
	FAULTS_EXPECT_HAKMEM=1 LD_PRELOAD=$(abspath $(LIB_SO)) $(FAULTS_BIN)

# The sanitizer builds: a sub-make with SAN=asan / SAN=tsan builds the core into
# build/asan or build/tsan and then the stress against it (stress-san-run).
test-sanitizers:
	@fail=0; \
	$(MAKE) --no-print-directory test-stress-asan || fail=1; \
	$(MAKE) --no-print-directory test-stress-tsan || fail=1; \
	exit $$fail

# The unit tests (tests/unit) run under each sanitizer too, against the same core.
test-stress-asan:
	$(MAKE) --no-print-directory SAN=asan all stress-san-run
	ASAN_OPTIONS=abort_on_error=1:halt_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  $(MAKE) --no-print-directory SAN=asan test-unit-run

test-stress-tsan:
	$(MAKE) --no-print-directory SAN=tsan all stress-san-run
	TSAN_OPTIONS=halt_on_error=1 $(MAKE) --no-print-directory SAN=tsan test-unit-run

ifeq ($(SAN),asan)
STRESS_SAN_FLAGS := -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
STRESS_SAN_ARGS  := $(STRESS_ASAN_ARGS)
else ifeq ($(SAN),tsan)
STRESS_SAN_FLAGS := -O1 -fno-omit-frame-pointer -fsanitize=thread
STRESS_SAN_ARGS  := $(STRESS_TSAN_ARGS)
endif
STRESS_SAN_BIN := $(STRESS_DIR)/stress_hak_$(SAN)
PARK_RACE_SAN  := $(STRESS_DIR)/park_race_$(SAN)

ifneq ($(SAN),)
$(STRESS_SAN_BIN): tests/stress/stress.c include/hakmem.h $(CORE_A)
	@mkdir -p $(dir $@)
	clang -std=gnu11 -g -Wall -Wextra -Werror -D_GNU_SOURCE -Iinclude -pthread \
	  $(STRESS_SAN_FLAGS) -DSTRESS_HAK $< $(CORE_A) -o $@ -lpthread

$(PARK_RACE_SAN): tests/stress/park_race.c include/hakmem.h $(CORE_A)
	@mkdir -p $(dir $@)
	clang -std=gnu11 -g -Wall -Wextra -Werror -D_GNU_SOURCE -Iinclude -pthread \
	  $(STRESS_SAN_FLAGS) $< $(CORE_A) -o $@ -lpthread

stress-san-run: $(STRESS_SAN_BIN) $(PARK_RACE_SAN)
	$(SAN_OPTS) $(STRESS_SAN_BIN) $(STRESS_SAN_ARGS)
	$(SAN_OPTS) $(PARK_RACE_SAN)
else
stress-san-run:
	@echo "stress-san-run needs SAN=asan or SAN=tsan (use make test-sanitizers)"; exit 2
endif

test-long: $(STRESS_HAK) $(STRESS_MALLOC) $(LIB_SO)
	$(STRESS_HAK) $(STRESS_LONG_ARGS) -s $$RANDOM
	STRESS_EXPECT_HAKMEM=1 LD_PRELOAD=$(abspath $(LIB_SO)) $(STRESS_MALLOC) $(STRESS_LONG_ARGS) -s $$RANDOM
	$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=900

TEST_RUNS += test-stress test-faults test-sanitizers
