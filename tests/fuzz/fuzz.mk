# tests/fuzz/fuzz.mk — libFuzzer target over the hak_* API.
# -include'd by the top Makefile (uses its BUILD, CORE_SRCS).
#
#   make fuzz FUZZ_SECONDS=N    build and fuzz for N seconds (default 60)
#   make test-fuzz              the same, 60 s (part of make test)
#   make fuzz-build             only build $(BUILD)/fuzz/fuzz_ops
#
# The core is compiled again with clang and the sanitizers (its own objects under
# $(BUILD)/fuzz/obj/, HAK_DEBUG=1) so the fuzzer sees the engine's coverage and
# ASan/UBSan check the engine's code. The committed seed corpus tests/fuzz/corpus/
# is read only; new inputs go to $(BUILD)/fuzz/corpus/, crashes to $(BUILD)/fuzz/.
# Reproduce a crash: $(BUILD)/fuzz/fuzz_ops $(BUILD)/fuzz/crash-<hash>
.PHONY: fuzz fuzz-build test-fuzz

FUZZ_SECONDS ?= 60
FUZZ_DIR     := $(BUILD)/fuzz
FUZZ_CC      := clang
FUZZ_SAN     := -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all
FUZZ_CFLAGS  := -std=gnu11 -g -O1 -fno-omit-frame-pointer -Wall -Iinclude -Isrc -D_GNU_SOURCE \
                -ftls-model=initial-exec -fPIC -DHAK_DEBUG=1 $(FUZZ_SAN)
FUZZ_OBJS    := $(CORE_SRCS:%.c=$(FUZZ_DIR)/obj/%.o)
FUZZ_BIN     := $(FUZZ_DIR)/fuzz_ops
FUZZ_OPTS    := -timeout=20 -rss_limit_mb=4096 -max_len=4096 -print_final_stats=1
FUZZ_ENV     := ASAN_OPTIONS=abort_on_error=1:detect_leaks=0 \
                UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1

$(FUZZ_DIR)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -MMD -MP -c $< -o $@

-include $(FUZZ_OBJS:.o=.d)

$(FUZZ_BIN): tests/fuzz/fuzz_ops.c include/hakmem.h $(FUZZ_OBJS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) -std=gnu11 -g -O1 -fno-omit-frame-pointer -Wall -Wextra -Werror -Iinclude \
	  -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
	  tests/fuzz/fuzz_ops.c $(FUZZ_OBJS) -o $@ -lpthread

fuzz-build: $(FUZZ_BIN)

fuzz: $(FUZZ_BIN)
	@mkdir -p $(FUZZ_DIR)/corpus
	$(FUZZ_ENV) $(FUZZ_BIN) $(FUZZ_OPTS) -max_total_time=$(FUZZ_SECONDS) \
	  -artifact_prefix=$(FUZZ_DIR)/ $(FUZZ_DIR)/corpus tests/fuzz/corpus

test-fuzz:
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=60

TEST_RUNS += test-fuzz
