# tests/install — what `make install`, the hakmem command and `make deb` deliver
# (-include'd through install.mk; uses the release build's LIB_SO, LIB_A).
#   make test-install   install into a temporary prefix and with DESTDIR, pkg-config,
#                       the hakmem command (installed and from the checkout), uninstall
#   make test-stats     HAKMEM_STATS=json/1/HAKMEM_STATS_FILE through a JSON parser, malloc_info
#                       through an XML parser, malloc_stats, the options' start-up messages;
#                       the statistics build's per-site lines (build/stats, a sub-make)
#   make test-deb       make deb, check its contents; as root also install it, run
#                       `hakmem python3 -c 'print(1)'` from the package, remove it
.PHONY: test-install test-stats test-deb
TEST_RUNS += test-install test-stats test-deb

test-install:
	@$(MAKE) --no-print-directory DEBUG=0 SAN= STATS= all
	tests/install/test_install.sh

test-stats: $(LIB_SO)
	@$(MAKE) --no-print-directory STATS=1 DEBUG=0 SAN= build/stats/libhakmem.so
	tests/install/test_stats.sh $(LIB_SO) build/stats/libhakmem.so

test-deb:
	@$(MAKE) --no-print-directory DEBUG=0 SAN= STATS= all
	tests/install/test_deb.sh
