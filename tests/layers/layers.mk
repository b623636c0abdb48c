# tests/layers — the include hierarchy of src/ (README.md, "Layout"): a file
# includes only headers of its own layer or lower ones. -include'd by the top
# Makefile.
#   make test-layers   scripts/check-layers.sh over src/**/*.c and *.h, then
#                      the build variants the docs name that `make` does not
#                      build: `make LINK_ENCODE=0` (issue 10's measurement;
#                      it failed on the hardened library before 2026-12-01).
.PHONY: test-layers
TEST_RUNS += test-layers

test-layers:
	@scripts/check-layers.sh
	@$(MAKE) --no-print-directory LINK_ENCODE=0 -j2 all >/dev/null && test -f build/noencode/libhakmem.so \
	  && echo "ok: make LINK_ENCODE=0 builds build/noencode/libhakmem.so" \
	  || { echo "FAIL: make LINK_ENCODE=0"; exit 1; }
