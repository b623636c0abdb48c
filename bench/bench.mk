# bench/bench.mk — the benchmark suite (included by the top Makefile).
#   make bench         every row against hakmem, glibc and each installed peer,
#                      interleaved, REPS=3 repetitions, medians (~3 minutes)
#   make bench-full    3x the sizes (BENCH_FULL_SCALE), 5 repetitions (~15 minutes)
#   make bench-instr   instructions per malloc+free with callgrind (WS8192 row)
#   make bench-scale   throughput vs threads (THREADS="1 2 4 8 16"), every allocator,
#                      plus hakmem's per-site contention counters (build/stats, STATS=1);
#                      not part of `make test` (~3 minutes on 2 cores)
#   make bench-realprog  real programs (sort, sqlite3, python3, perl, gcc, clang, node, jq,
#                      gawk, git: those installed) under every allocator, wall time and
#                      peak RSS, REPS rounds interleaved (scripts/bench-realprog.py; ~3 minutes)
#   make bench-smoke   every program once with tiny sizes under hakmem (a test)
#   make bench-bins    only build the programs (build/bench/)
#   make bench-secure-peers  build mimalloc's secure mode and its default from Debian's
#                      source (build/peers/; needs network): `make bench` then adds them as
#                      columns and the ratio "mimalloc secure time / its default" (issue 12)
# Variables: REPS, THREADS (bench-scale), BENCH_ROWS=ws-small,larson (a subset), BENCH_ALLOCS=hakmem,glibc,
# BENCH_SCALE (size multiplier), BENCH_OUT (results). See bench/README.md.
# The programs are built with plain cc -O2 -pthread, not with the library's
# CFLAGS: they are ordinary programs that call malloc.

BENCH_CC     ?= cc
BENCH_CFLAGS ?= -O2 -pthread -g -Wall -Wextra
BENCH_DIR    := $(BUILD)/bench
BENCH_PROGS  := ws8192 larson prodcons falseshare reallocgrow large churn ring mstress drift rounds bursts spawn shbench crowd
BENCH_BINS   := $(addprefix $(BENCH_DIR)/,$(BENCH_PROGS))
BENCH_OUT    ?= results
BENCH_SCALE  ?= 1
BENCH_FULL_SCALE ?= 3
REPS         ?= 3
# bench-full: 5 repetitions unless REPS was given on the command line or environment.
BENCH_FULL_REPS := $(if $(filter command line environment,$(origin REPS)),$(REPS),5)
BENCH_SEL    := $(if $(BENCH_ROWS),--rows $(BENCH_ROWS)) $(if $(BENCH_ALLOCS),--allocs $(BENCH_ALLOCS))
BENCH_PY     := python3 scripts/bench.py --lib $(LIB_SO) --bindir $(BENCH_DIR) --out $(BENCH_OUT) \
                --peers-dir build/peers

.PHONY: bench bench-full bench-instr bench-scale bench-realprog bench-smoke bench-bins bench-peers bench-secure-peers

$(BENCH_BINS): $(BENCH_DIR)/%: bench/%.c bench/bench_common.h
	@mkdir -p $(dir $@)
	$(BENCH_CC) $(BENCH_CFLAGS) -o $@ $< -lm

bench-bins: $(BENCH_BINS)

bench-peers:
	@scripts/install-peers.sh

bench-secure-peers:
	scripts/build-mimalloc-secure.sh build/peers

# $(LIB_SO) is a prerequisite: if hakmem does not build, make stops here with
# the compiler's error, and bench.py refuses to run without a working library.
bench: bench-peers $(LIB_SO) $(BENCH_BINS)
	$(BENCH_PY) --reps $(REPS) --scale $(BENCH_SCALE) --tag bench $(BENCH_SEL)

bench-full: bench-peers $(LIB_SO) $(BENCH_BINS)
	$(BENCH_PY) --reps $(BENCH_FULL_REPS) --scale $(BENCH_FULL_SCALE) --tag bench-full $(BENCH_SEL)

bench-instr: bench-peers $(LIB_SO) $(BENCH_DIR)/ws8192
	python3 scripts/bench-instr.py --lib $(LIB_SO) --bin $(BENCH_DIR)/ws8192 --out $(BENCH_OUT) \
	  $(if $(BENCH_ALLOCS),--allocs $(BENCH_ALLOCS))

# bench-scale: the statistics build comes from a sub-make (STATS=1 selects
# build/stats); DEBUG and SAN are reset so a DEBUG=1 on the command line does
# not send it elsewhere. If it does not build, make stops with the error.
STATS_SO := build/stats/libhakmem.so
bench-scale: bench-peers $(LIB_SO) $(BENCH_BINS)
	$(MAKE) --no-print-directory STATS=1 DEBUG=0 SAN= $(STATS_SO)
	python3 scripts/bench-scale.py --lib $(LIB_SO) --stats-lib $(STATS_SO) --bindir $(BENCH_DIR) \
	  --out $(BENCH_OUT) --reps $(REPS) --scale $(BENCH_SCALE) $(if $(THREADS),--threads "$(THREADS)") \
	  $(BENCH_SEL)

bench-realprog: bench-peers $(LIB_SO) $(BENCH_DIR)/ws8192
	python3 scripts/bench-realprog.py --lib $(LIB_SO) --bindir $(BENCH_DIR) --out $(BENCH_OUT) --reps $(REPS) \
	  --peers-dir build/peers $(if $(BENCH_ALLOCS),--allocs $(BENCH_ALLOCS))

bench-smoke: $(LIB_SO) $(BENCH_BINS)
	@python3 scripts/bench.py --smoke --lib $(LIB_SO) --bindir $(BENCH_DIR)
	@python3 scripts/bench-realprog.py --smoke --lib $(LIB_SO) --bindir $(BENCH_DIR) --out $(BUILD)/realprog-smoke \
	  > $(BUILD)/realprog-smoke.log 2>&1 || { cat $(BUILD)/realprog-smoke.log; exit 1; }
	@grep -q '^| sort | [0-9.]* | [0-9.]* | glibc |' $(BUILD)/realprog-smoke.log || \
	  { echo "scripts/bench-realprog.py: no table"; cat $(BUILD)/realprog-smoke.log; exit 1; }
	@echo "scripts/bench-realprog.py: smoke OK"
	@python3 scripts/bench-scale.py --self-test
	@out=$$(python3 scripts/ab.py --rounds 2 '$(BENCH_DIR)/ws8192 -w 64 -n 20000' hak=$(LIB_SO) glibc) && \
	  echo "$$out" | grep -q '^| hak | [0-9.]* | 1.000 |' && echo "$$out" | grep -q '^| glibc | [0-9.]* | [0-9.]* |' || \
	  { echo "scripts/ab.py: no table for hak and glibc"; echo "$$out"; exit 1; }
	@! python3 scripts/ab.py --rounds 1 false glibc 2>/dev/null || { echo "scripts/ab.py: a failing command not reported"; exit 1; }
	@echo "scripts/ab.py: paired rounds OK"

TEST_RUNS += bench-smoke
