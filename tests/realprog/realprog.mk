# tests/realprog — real programs (python3, perl, gcc, g++, git, sqlite3, sort,
# xz, pigz, redis-server, node, clang; PostgreSQL where installed) run with and
# without LD_PRELOAD=libhakmem.so, their outputs compared (issue §6). Included
# by the top Makefile.
.PHONY: test-realprog
test-realprog: $(LIB_SO)
	tests/realprog/run_realprog.sh $(LIB_SO)

ifeq ($(SAN),)
TEST_RUNS += test-realprog
endif
