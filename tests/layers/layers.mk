# tests/layers — the include hierarchy of src/ (README.md, "Layout"): a file
# includes only headers of its own layer or lower ones. -include'd by the top
# Makefile.
#   make test-layers   scripts/check-layers.sh over src/**/*.c and *.h, then
#                      the build variants the docs name that `make` does not
#                      build: `make LINK_ENCODE=0` (issue 10's measurement;
#                      it failed on the hardened library before 2026-12-01),
#                      the experiment builds the 16-core run carries
#                      (scripts/device-scale.sh build-variants; one had
#                      stopped compiling unseen when the fifty-third session
#                      moved the free batch into the thread's record), and the
#                      fast paths' branches off 32-byte boundaries in
#                      both libraries (scripts/check-branch-align.py; only
#                      where the assembler pads them, BRANCH_ALIGN).
.PHONY: test-layers
TEST_RUNS += test-layers

test-layers: $(LIB_SO) $(HARD_SO)
	@scripts/check-layers.sh
ifneq ($(BRANCH_ALIGN),)
	@scripts/check-branch-align.py $(LIB_SO) $(HARD_SO)
else
	@echo "skip: the assembler cannot pad branches off 32-byte boundaries (BRANCH_ALIGN empty)"
endif
	@$(MAKE) --no-print-directory LINK_ENCODE=0 -j2 all >/dev/null && test -f build/noencode/libhakmem.so \
	  && echo "ok: make LINK_ENCODE=0 builds build/noencode/libhakmem.so" \
	  || { echo "FAIL: make LINK_ENCODE=0"; exit 1; }
	@scripts/device-scale.sh build-variants >/dev/null \
	  && echo "ok: the device run's experiment builds (scripts/device-scale.sh build-variants)" \
	  || { echo "FAIL: scripts/device-scale.sh build-variants"; exit 1; }
