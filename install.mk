# install.mk — make install / uninstall / deb (included by the top Makefile).
#
#   make install [PREFIX=/usr/local] [DESTDIR=]   the shared library (soname libhakmem.so.0),
#                the static library, hakmem.h, lib/pkgconfig/hakmem.pc and bin/hakmem, and
#                libhakmem-hardened.so (preload only: `hakmem --hardened program`)
#   make uninstall [PREFIX=...] [DESTDIR=]        removes exactly what install put there
#   make deb     build/hakmem_<version>_<arch>.deb with dpkg-deb: what `make install
#                PREFIX=/usr` installs (no network, no debhelper)
#
# The version comes from include/hakmem.h (HAKMEM_VERSION), the one place it is written.
.PHONY: install uninstall deb

PREFIX      ?= /usr/local
BINDIR      ?= $(PREFIX)/bin
LIBDIR      ?= $(PREFIX)/lib
INCLUDEDIR  ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
INSTALL     ?= install

HAKMEM_VERSION   := $(shell sed -n 's/^\#define HAKMEM_VERSION  *"\(.*\)"/\1/p' include/hakmem.h)
HAKMEM_SOVERSION := $(shell sed -n 's/^\#define HAKMEM_VERSION_MAJOR  *\([0-9]*\)/\1/p' include/hakmem.h)
SO_REAL := libhakmem.so.$(HAKMEM_VERSION)
SO_NAME := libhakmem.so.$(HAKMEM_SOVERSION)

# The build tree carries the soname link too, so a program linked with
# -Lbuild -lhakmem (DT_NEEDED libhakmem.so.0) runs with LD_LIBRARY_PATH=build.
ifeq ($(SAN),)
all: $(BUILD)/$(SO_NAME)
endif
$(BUILD)/$(SO_NAME): $(LIB_SO)
	@ln -sf libhakmem.so $@

install: $(LIB_SO) $(LIB_A) $(HARD_SO)
	$(INSTALL) -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR) $(DESTDIR)$(BINDIR)
	$(INSTALL) -m 755 $(LIB_SO) $(DESTDIR)$(LIBDIR)/$(SO_REAL)
	ln -sf $(SO_REAL) $(DESTDIR)$(LIBDIR)/$(SO_NAME)
	ln -sf $(SO_NAME) $(DESTDIR)$(LIBDIR)/libhakmem.so
	$(INSTALL) -m 644 $(LIB_A) $(DESTDIR)$(LIBDIR)/libhakmem.a
	$(INSTALL) -m 755 $(HARD_SO) $(DESTDIR)$(LIBDIR)/libhakmem-hardened.so
	$(INSTALL) -m 644 include/hakmem.h $(DESTDIR)$(INCLUDEDIR)/hakmem.h
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' \
	    -e 's|@VERSION@|$(HAKMEM_VERSION)|' hakmem.pc.in > $(DESTDIR)$(PKGCONFIGDIR)/hakmem.pc
	chmod 644 $(DESTDIR)$(PKGCONFIGDIR)/hakmem.pc
	sed -e 's|^HAKMEM_INSTALLED_LIB=.*|HAKMEM_INSTALLED_LIB=$(LIBDIR)/$(SO_NAME)|' \
	    -e 's|^HAKMEM_INSTALLED_VERSION=.*|HAKMEM_INSTALLED_VERSION=$(HAKMEM_VERSION)|' \
	    scripts/hakmem > $(DESTDIR)$(BINDIR)/hakmem
	chmod 755 $(DESTDIR)$(BINDIR)/hakmem

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/$(SO_REAL) $(DESTDIR)$(LIBDIR)/$(SO_NAME) $(DESTDIR)$(LIBDIR)/libhakmem.so \
	      $(DESTDIR)$(LIBDIR)/libhakmem.a $(DESTDIR)$(LIBDIR)/libhakmem-hardened.so $(DESTDIR)$(INCLUDEDIR)/hakmem.h \
	      $(DESTDIR)$(PKGCONFIGDIR)/hakmem.pc $(DESTDIR)$(BINDIR)/hakmem
	-rmdir $(DESTDIR)$(PKGCONFIGDIR) 2>/dev/null || true

DEB_ARCH := $(shell dpkg --print-architecture 2>/dev/null || echo amd64)
DEB_ROOT := build/deb/root
DEB_FILE := build/hakmem_$(HAKMEM_VERSION)_$(DEB_ARCH).deb
deb:
	@test "$(BUILD)" = build || { echo "make deb packages the release build: run it without DEBUG/SAN/STATS"; exit 1; }
	rm -rf build/deb
	$(MAKE) --no-print-directory install PREFIX=/usr DESTDIR=$(abspath $(DEB_ROOT))
	mkdir -p $(DEB_ROOT)/DEBIAN $(DEB_ROOT)/usr/share/doc/hakmem
	$(INSTALL) -m 644 README.md $(DEB_ROOT)/usr/share/doc/hakmem/README.md
	{ echo "Package: hakmem"; \
	  echo "Version: $(HAKMEM_VERSION)"; \
	  echo "Architecture: $(DEB_ARCH)"; \
	  echo "Maintainer: hakmem developers <hakmem@localhost>"; \
	  echo "Section: libs"; \
	  echo "Priority: optional"; \
	  echo "Depends: libc6"; \
	  echo "Installed-Size: $$(du -sk $(DEB_ROOT)/usr | cut -f1)"; \
	  echo "Description: hakmem, a drop-in malloc replacement"; \
	  echo " libhakmem.so replaces malloc when preloaded (the hakmem command does it)"; \
	  echo " or linked; the package also holds libhakmem.a, hakmem.h and hakmem.pc."; \
	} > $(DEB_ROOT)/DEBIAN/control
	printf 'activate-noawait ldconfig\n' > $(DEB_ROOT)/DEBIAN/triggers
	dpkg-deb --root-owner-group --build $(DEB_ROOT) $(DEB_FILE)
	@echo "built $(DEB_FILE)"

# The tests of what install puts where (tests/install/install.mk appends to TEST_RUNS).
-include tests/install/install.mk
