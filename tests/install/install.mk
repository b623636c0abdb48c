# tests/install — what `make install`, the hakmem command and `make deb` deliver
# (-include'd through install.mk; uses the release build's LIB_SO, LIB_A).
#   make test-install   install into a temporary prefix and with DESTDIR, pkg-config,
#                       the hakmem command (installed and from the checkout), uninstall
#   make test-deb       make deb, check its contents; as root also install it, run
#                       `hakmem python3 -c 'print(1)'` from the package, remove it
.PHONY: test-install test-deb
TEST_RUNS += test-install test-deb

test-install:
	@$(MAKE) --no-print-directory DEBUG=0 SAN= STATS= all
	tests/install/test_install.sh

test-deb:
	@$(MAKE) --no-print-directory DEBUG=0 SAN= STATS= all
	tests/install/test_deb.sh
