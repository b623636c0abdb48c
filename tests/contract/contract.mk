# tests/contract — the drop-in contract of libhakmem.so, run on programs linked
# normally and loaded with LD_PRELOAD (included by the top Makefile).
#   test_contract   glibc's malloc contract, one edge case per test (cmocka)
#   test_process    threads, fork, frees after main, RLIMIT_AS (cmocka)
#   test_foreign    RTLD_DEEPBIND glibc blocks, wild-pointer reports (cmocka)
#   test_cxx        every C++ operator new/delete (g++)
#   check_exports.sh  the .so exports exactly the surface, no libstdc++
# HAKMEM_CONTRACT_GLIBC=1 $(BUILD)/tests/contract/test_contract (no preload)
# checks the glibc expectations against glibc itself; CONTRACT_FILTER=pattern
# (cmocka wildcards) runs only the matching tests.
CONTRACT_OUT    := $(BUILD)/tests/contract
CONTRACT_CFLAGS := -std=gnu11 -O1 -g -Wall -Wextra -Werror -D_GNU_SOURCE -fno-builtin -Iinclude
CONTRACT_CXX    ?= g++
CONTRACT_TESTS  := $(CONTRACT_OUT)/test_contract $(CONTRACT_OUT)/test_process \
                   $(CONTRACT_OUT)/test_foreign
CONTRACT_BINS   := $(CONTRACT_TESTS) $(CONTRACT_OUT)/test_afterlife $(CONTRACT_OUT)/test_cxx \
                   $(CONTRACT_OUT)/libdeepbind_helper.so
CONTRACT_PRELOAD = LD_PRELOAD=$(abspath $(LIB_SO))

$(CONTRACT_OUT)/test_%: tests/contract/test_%.c tests/contract/contract_util.h
	@mkdir -p $(dir $@)
	gcc $(CONTRACT_CFLAGS) $< -o $@ -lcmocka -lpthread -ldl

$(CONTRACT_OUT)/test_afterlife: tests/contract/test_afterlife.c
	@mkdir -p $(dir $@)
	gcc $(CONTRACT_CFLAGS) $< -o $@ -lpthread

$(CONTRACT_OUT)/test_cxx: tests/contract/test_cxx.cpp
	@mkdir -p $(dir $@)
	$(CONTRACT_CXX) -std=c++17 -O1 -g -Wall -Wextra -Werror -fno-builtin $< -o $@ -pthread -ldl

$(CONTRACT_OUT)/libdeepbind_helper.so: tests/contract/deepbind_helper.c
	@mkdir -p $(dir $@)
	gcc $(CONTRACT_CFLAGS) -fPIC -shared $< -o $@

.PHONY: test-contract contract-bins
contract-bins: $(CONTRACT_BINS)

test-contract: $(LIB_SO) $(CONTRACT_BINS)
	@fail=0; \
	tests/contract/check_exports.sh $(LIB_SO) || fail=1; \
	for t in $(CONTRACT_TESTS); do \
	  $(CONTRACT_PRELOAD) timeout 300 $$t || { echo "FAIL $$t"; fail=1; }; \
	done; \
	$(CONTRACT_PRELOAD) timeout 120 $(CONTRACT_OUT)/test_cxx || { echo "FAIL test_cxx"; fail=1; }; \
	exit $$fail

# The drop-in library exists only in the plain and DEBUG builds.
ifeq ($(SAN),)
TEST_RUNS += test-contract
endif
