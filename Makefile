# hakmem — build, test and benchmark.
#   make              build/libhakmem.so (drop-in) build/libhakmem.a, build/libhakmem_core.a (hak_* only)
#   make DEBUG=1      the same under build/debug (assertions, phantom pointer types, -O0)
#   make SAN=asan     hak_*-only core built with ASan+UBSan under build/asan (SAN=tsan: TSan)
#   make LINK_ENCODE=0  the release library under build/noencode with free-list links stored
#                     raw: only to measure what the encoding costs (issue 10); never ship it
#   make STATS=1      the release library under build/stats, counting lock acquisitions and
#                     atomic RMWs on shared lines per site (printed at exit; bench-scale uses it)
#   (every build but SAN and LINK_ENCODE=0 also makes $(BUILD)/libhakmem-hardened.so: the same sources with
#                     -DHAK_HARDENED=1, objects under $(BUILD)/hardened/obj; issue 12)
#   make test         build and run every test
#   make bench        the side-by-side benchmark (see bench/bench.mk)
#   make install      PREFIX=/usr/local DESTDIR=; make uninstall; make deb (see install.mk)
#   make clean
.DEFAULT_GOAL := all
SHELL := /bin/bash

CC      ?= cc
CXX     ?= c++
DEBUG   ?= 0
SAN     ?=
STATS   ?= 0
LINK_ENCODE ?= 1

BASE_CFLAGS := -std=gnu11 -g -Wall -Wextra -Werror -fPIC -fvisibility=hidden \
               -fno-builtin-malloc -fno-builtin-calloc -fno-builtin-realloc -fno-builtin-free \
               -ftls-model=initial-exec -Iinclude -Isrc -D_GNU_SOURCE
ifeq ($(DEBUG),1)
  BUILD   ?= build/debug
  OPT     := -O0 -DHAK_DEBUG=1
else ifeq ($(SAN),asan)
  BUILD   ?= build/asan
  OPT     := -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all -DHAK_DEBUG=1
  CC      := clang
else ifeq ($(SAN),tsan)
  BUILD   ?= build/tsan
  OPT     := -O1 -fno-omit-frame-pointer -fsanitize=thread -DHAK_DEBUG=0
  CC      := clang
else ifeq ($(LINK_ENCODE),0)
  BUILD   ?= build/noencode
  OPT     := -O2 -DHAK_DEBUG=0 -DHAK_LINK_ENCODE=0
else ifeq ($(STATS),1)
  BUILD   ?= build/stats
  OPT     := -O2 -DHAK_DEBUG=0 -DHAK_STATS=1
else
  BUILD   ?= build
  OPT     := -O2 -DHAK_DEBUG=0
endif
# Skylake-derived Intel cores (this project's x86-64 machines: family 6 model
# 85) do not cache in the decoded-uop cache any jump, or macro-fused compare
# and jump, that crosses or ends on a 32-byte boundary (the JCC erratum's
# microcode fix). Where malloc's and free's few branches happened to fall
# decided ws-tiny's time by up to 9%: the same source, laid out three ways,
# ran at 1.00, 1.09 and 1.09x (101 and 41 paired runs, CURRENT_TASK.md). The
# assembler pads instructions ahead of such a branch (prefixes first, nops
# when it must) when it supports the option; elsewhere nothing changes.
# The option covers conditional and unconditional jumps; the erratum covers
# calls and returns as well, so they are named too.
BRANCH_ALIGN_FLAGS := -Wa,-mbranches-within-32B-boundaries,-malign-branch=jcc+fused+jmp+call+ret+indirect
BRANCH_ALIGN := $(shell echo 'int x;' | $(CC) -x c -c -o /dev/null $(BRANCH_ALIGN_FLAGS) - 2>/dev/null && \
                  echo $(BRANCH_ALIGN_FLAGS))
CFLAGS  := $(BASE_CFLAGS) $(OPT) $(BRANCH_ALIGN) $(EXTRA_CFLAGS)
LDLIBS  := -lpthread

CORE_SRCS := $(sort $(wildcard src/os/*.c src/debug/*.c src/config/*.c src/stats/*.c \
               src/superslab/*.c src/shared_pool/*.c src/tiny/*.c src/large/*.c src/core/*.c))
API_SRCS  := $(sort $(wildcard src/api/*.c))
CORE_OBJS := $(CORE_SRCS:%.c=$(BUILD)/obj/%.o)
API_OBJS  := $(API_SRCS:%.c=$(BUILD)/obj/%.o)

LIB_SO    := $(BUILD)/libhakmem.so
LIB_A     := $(BUILD)/libhakmem.a
CORE_A    := $(BUILD)/libhakmem_core.a

# The hardened library: the same sources, one flag, its own objects.
HARD_BUILD := $(BUILD)/hardened
HARD_OBJS  := $(CORE_SRCS:%.c=$(HARD_BUILD)/obj/%.o) $(API_SRCS:%.c=$(HARD_BUILD)/obj/%.o)
HARD_SO    := $(BUILD)/libhakmem-hardened.so
HARD_CORE_A := $(HARD_BUILD)/libhakmem_core.a   # the hardened engine alone, for unit tests

.PHONY: all clean test test-deps
ifneq ($(SAN),)
all: $(CORE_A)
else ifeq ($(LINK_ENCODE),0)
# The hardened build's free marks rely on encoded links (a NULL link is the
# block's key): the measurement build makes the default library only.
all: $(LIB_SO) $(LIB_A) $(CORE_A)
else
all: $(LIB_SO) $(LIB_A) $(CORE_A) $(HARD_SO)
endif

# The objects are rebuilt when the compiler or its flags change (a build
# directory kept from before BRANCH_ALIGN still held unpadded objects).
FLAGS_STAMP := $(BUILD)/.cflags
$(shell mkdir -p $(BUILD) && echo '$(CC) $(CFLAGS)' | cmp -s - $(FLAGS_STAMP) || echo '$(CC) $(CFLAGS)' > $(FLAGS_STAMP))

$(BUILD)/obj/%.o: %.c $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	@echo "  CC  $<"; $(CC) $(CFLAGS) -MMD -MP -c $< -o $@

# How the library binds the libc functions it calls. Every process the
# library is preloaded into pays for binding them at its start, whether it
# calls them or not: bound at load (-z now with -fno-plt's GOT calls), the
# 48 imports cost a preloaded /bin/true 181.5 k instructions against 156.9 k
# bound at first call (callgrind; sort 446.6 k against 428.4 k); on the
# Intel VM such lookups were most of what a preloaded /bin/true cost over an
# empty preloaded library (README, "Child processes"; on the AMD VM the time
# of `spawn --exec` stays within its noise, 0.98-1.00x in sets of 41-81 paired
# rounds). So the default library binds lazily, through the PLT, as Debian's libc,
# jemalloc and tcmalloc do; malloc's and free's fast paths call no libc
# function. The hardened library keeps its GOT read-only after load (full
# RELRO: -z now, -fno-plt), so that no writable pointer to mmap or write
# sits beside the heap it guards.
HARD_BIND_FLAGS := -fno-plt
HARD_LINK_BIND  := -Wl,-z,now

$(HARD_BUILD)/obj/%.o: %.c $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	@echo "  CC  $< (hardened)"; $(CC) $(CFLAGS) $(HARD_BIND_FLAGS) -DHAK_HARDENED=1 -MMD -MP -c $< -o $@

$(HARD_SO): $(HARD_OBJS)
	$(CC) -shared -Wl,-soname,libhakmem-hardened.so $(HARD_LINK_BIND) -Wl,-Bsymbolic-functions -Wl,--version-script=src/api/exports.map -o $@ $^ $(LDLIBS)

$(LIB_SO): $(CORE_OBJS) $(API_OBJS)
	$(CC) -shared -Wl,-soname,libhakmem.so.0 -Wl,-Bsymbolic-functions -Wl,--version-script=src/api/exports.map -o $@ $^ $(LDLIBS)

$(LIB_A): $(CORE_OBJS) $(API_OBJS)
	@rm -f $@; ar rcs $@ $^

$(CORE_A): $(CORE_OBJS)
	@rm -f $@; ar rcs $@ $^

$(HARD_CORE_A): $(CORE_SRCS:%.c=$(HARD_BUILD)/obj/%.o)
	@rm -f $@; ar rcs $@ $^

-include $(CORE_OBJS:.o=.d) $(API_OBJS:.o=.d) $(HARD_OBJS:.o=.d)

# Tests: each fragment appends run targets to TEST_RUNS (in the order they run).
TEST_RUNS :=
-include tests/unit/unit.mk
-include tests/contract/contract.mk
-include tests/stress/stress.mk
-include tests/fuzz/fuzz.mk
-include tests/realprog/realprog.mk
-include tests/layers/layers.mk
-include tests/hardened/hardened.mk
-include bench/bench.mk
-include install.mk

test-deps:
	@scripts/install-test-deps.sh

test: test-deps
	@fail=0; for t in $(TEST_RUNS); do \
	  echo "=== $$t"; $(MAKE) --no-print-directory $$t || { echo "FAILED: $$t"; fail=$$((fail+1)); }; \
	done; echo "test groups: $(words $(TEST_RUNS)) run, $$fail failed"; [ $$fail -eq 0 ]

clean:
	rm -rf build results
