# tests/layers — the include hierarchy of src/ (README.md, "Layout"): a file
# includes only headers of its own layer or lower ones. -include'd by the top
# Makefile.
#   make test-layers   scripts/check-layers.sh over src/**/*.c and *.h
.PHONY: test-layers
TEST_RUNS += test-layers

test-layers:
	@scripts/check-layers.sh
