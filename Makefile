# cbtfs — see README.  `make` builds ./cbtfs; `make check` runs the tests;
# `make demo` runs the main job against the built-in XenServer stand-in.
# Each target first installs missing Debian packages (scripts/install-deps.sh).

CC       ?= cc
BUILD    ?= build
CFLAGS   ?= -O2 -g
WARN      = -Wall -Wextra -Wshadow -Wvla -Wstrict-prototypes \
            -Wmissing-declarations -Wframe-larger-than=5000 -Werror
SAN      ?=
PKGS      = fuse3 libnbd libcurl libxml-2.0 gnutls libxxhash inih
PYTHON   ?= python3

PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
# chain/ and its tests must build without libfuse, libcurl and libxml2.
CHAIN_LIBS = $(shell pkg-config --libs libnbd gnutls libxxhash 2>/dev/null)
XAPI_LIBS  = $(shell pkg-config --libs libcurl libxml-2.0 gnutls 2>/dev/null)
GNUTLS_LIBS = $(shell pkg-config --libs gnutls 2>/dev/null)
ALL_CFLAGS = -std=c17 -D_GNU_SOURCE -pthread -I. $(WARN) $(CPPFLAGS) $(CFLAGS) $(SAN) $(PKG_CFLAGS)
ALL_LDFLAGS = -pthread $(SAN) $(LDFLAGS)

COMMON_SRC = common/error.c common/log.c common/secbuf.c common/util.c \
             common/dio.c
XAPI_SRC   = xapi/value.c xapi/xmlrpc.c xapi/session.c xapi/api.c xapi/vhd.c \
             xapi/vhd-stream.c
# The S3 client (s3/), and the object store backend over it, linked
# where libcurl is: chain/ alone needs no HTTP library.
S3_SRC     = s3/s3.c s3/s3-multipart.c s3/s3-xml.c
S3STORE_SRC = chain/store/s3store.c chain/store/s3store-layer.c \
             chain/store/s3store-sweep.c chain/store/s3store-share.c \
             chain/store/s3store-upload.c \
             chain/store/s3store-cache.c chain/store/s3store-abandoned.c \
             chain/store/s3crypt.c chain/store/s3store-lease.c \
             chain/store/s3store-prefetch.c
STORE_SRC  = chain/store/store.c chain/store/holder.c chain/store/posix.c \
             chain/store/posix-layer.c
CHAIN_SRC  = chain/bitmap.c chain/sums.c chain/layer-meta.c chain/index.c \
             chain/layer.c chain/layer-blocks.c chain/catalog.c chain/read.c \
             chain/nbdsrc.c chain/nbdlimit.c chain/tlspin.c chain/copy.c \
             chain/fetch.c chain/verify.c chain/manifests.c chain/verdict.c \
             chain/fold.c chain/noteline.c chain/holes.c \
             $(STORE_SRC)
ENGINE_SRC = engine/session.c engine/snapshot.c engine/points.c \
             engine/targets.c engine/backup.c engine/backup-vm.c \
             engine/backup-scan.c engine/leftovers.c engine/vhdmap.c \
             engine/fetch.c engine/verify.c engine/hostclean.c \
             engine/retention.c engine/prune.c engine/prune-run.c engine/forget.c \
             engine/restore.c engine/restore-body.c engine/readahead.c \
             engine/copy.c
FS_SRC     = fs/tree.c fs/fs.c
# The nbdkit plugin (`cbtfs serve`): the core again, compiled -fPIC.
PLUGIN_SRC = serve/plugin.c engine/session.c engine/targets.c \
             engine/points.c engine/snapshot.c $(CHAIN_SRC) $(XAPI_SRC) \
             $(S3_SRC) $(S3STORE_SRC) $(COMMON_SRC)
PLUGIN     = $(BUILD)/nbdkit-cbtfs-plugin.so
CLI_SRC    = cli/main.c cli/config.c cli/server.c cli/backup.c cli/mount.c \
             cli/ls.c cli/fetch.c cli/verify.c cli/prune.c cli/forget.c \
             cli/serve.c cli/restore.c cli/s3.c cli/copy.c cli/report.c

obj = $(patsubst %.c,$(BUILD)/%.o,$(1))
COMMON_OBJ = $(call obj,$(COMMON_SRC))
XAPI_OBJ   = $(call obj,$(XAPI_SRC))
S3_OBJ     = $(call obj,$(S3_SRC))
S3STORE_OBJ = $(call obj,$(S3STORE_SRC))
CHAIN_OBJ  = $(call obj,$(CHAIN_SRC))
ENGINE_OBJ = $(call obj,$(ENGINE_SRC))
FS_OBJ     = $(call obj,$(FS_SRC))
CLI_OBJ    = $(call obj,$(CLI_SRC))
PLUGIN_OBJ = $(patsubst %.c,$(BUILD)/pic/%.o,$(PLUGIN_SRC))

UNIT_TESTS = test-xmlrpc test-bitmap test-store test-store-backend \
             test-resolve test-holes test-fold test-vhd \
             test-nbdpin test-nbdpin-hidden test-error test-log test-secbuf \
             test-util test-dio test-cleanup test-retention test-s3 \
             test-s3crypt test-holder
UNIT_BINS  = $(addprefix $(BUILD)/tests/,$(UNIT_TESTS))

# Fuzz targets (tests/fuzz): with gcc they link a driver that replays
# files; `make fuzz` builds them with clang's libFuzzer instead.
FUZZ_TARGETS = fuzz-xmlrpc fuzz-bitmap fuzz-manifest fuzz-layer fuzz-vhd
FUZZ_BINS    = $(addprefix $(BUILD)/tests/,$(FUZZ_TARGETS))
FUZZ_DRIVER ?= $(BUILD)/tests/fuzz/replay.o
FUZZ_LDFLAGS ?=
FUZZ_SECONDS ?= 60

# A package build sets it empty (debian/rules): Build-Depends installed
# what it needs, and a package build must not run apt.
DEPS_STAMP = $(BUILD)/.deps-ok

# The version: `git describe` where the checkout has a tag, else the
# VERSION file (a tarball has no .git).
VERSION := $(shell git describe --tags --dirty 2>/dev/null || cat VERSION)
# Built in facts: rewritten only when they change, so that main.o is
# rebuilt for a new version and nothing else is.
CONFIG_H = $(BUILD)/cbtfs-config.h

# make install: DESTDIR is prepended to every path, PREFIX is where the
# files will be used.  The plugin is cbtfs's own (serve preloads it with
# its arguments), so it goes in a directory of ours, not nbdkit's.
PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
LIBDIR  ?= $(PREFIX)/lib
PLUGINDIR ?= $(LIBDIR)/cbtfs
MANDIR  ?= $(PREFIX)/share/man
DOCDIR  ?= $(PREFIX)/share/doc/cbtfs
DOCS     = README FORMAT.md BENCHMARKS.md $(wildcard docs/*.md)
# libmount looks for mount helpers only in /sbin (and /sbin/fs.d,
# /sbin/fs), whatever PREFIX is.  systemd reads PREFIX/lib/systemd/system
# for /usr and /usr/local, bash-completion PREFIX/share/bash-completion.
MOUNTHELPERDIR ?= /sbin
UNITDIR  ?= $(LIBDIR)/systemd/system
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
EXAMPLEDIR ?= $(DOCDIR)/examples
UNITS    = cbtfs-backup@.service cbtfs-backup@.timer

.PHONY: FORCE all man install uninstall deps check check-unit check-e2e check-valgrind check-asan check-tsan \
        check-crash fuzz demo bench deb check-deb clean
.DEFAULT_GOAL := all

all: cbtfs $(PLUGIN) man

# Man pages from POD with pod2man (perl's, always on Debian), as nbdkit
# makes its own.
MANPAGES = $(BUILD)/cbtfs.1 $(BUILD)/cbtfs-store.5 $(BUILD)/mount.cbtfs.8
man: $(MANPAGES)
$(BUILD)/%.1: man/%.pod VERSION
	@mkdir -p $(dir $@)
	pod2man --section=1 --center=cbtfs --release="cbtfs $(VERSION)" \
	  --name=$(shell echo $* | tr a-z A-Z) --utf8 $< > $@.tmp && mv $@.tmp $@
$(BUILD)/%.5: man/%.pod VERSION
	@mkdir -p $(dir $@)
	pod2man --section=5 --center=cbtfs --release="cbtfs $(VERSION)" \
	  --name=$(shell echo $* | tr a-z A-Z) --utf8 $< > $@.tmp && mv $@.tmp $@
$(BUILD)/%.8: man/%.pod VERSION
	@mkdir -p $(dir $@)
	pod2man --section=8 --center=cbtfs --release="cbtfs $(VERSION)" \
	  --name=$(shell echo $* | tr a-z A-Z) --utf8 $< > $@.tmp && mv $@.tmp $@

# Install missing packages once per checkout (and when the list changes).
$(DEPS_STAMP): scripts/install-deps.sh
	@mkdir -p $(dir $@)
	./scripts/install-deps.sh
	@touch $@
deps: $(DEPS_STAMP)

$(CONFIG_H): FORCE
	@mkdir -p $(dir $@)
	@printf '#define CBTFS_VERSION "%s"\n#define CBTFS_PLUGINDIR "%s"\n' \
	  '$(VERSION)' '$(PLUGINDIR)' > $@.tmp
	@if cmp -s $@.tmp $@; then rm $@.tmp; else mv $@.tmp $@; fi
$(BUILD)/cli/main.o $(BUILD)/cli/serve.o: $(CONFIG_H)
$(BUILD)/cli/main.o $(BUILD)/cli/serve.o: ALL_CFLAGS += -I$(BUILD)

$(BUILD)/%.o: %.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/cbtfs: $(CLI_OBJ) $(FS_OBJ) $(ENGINE_OBJ) $(CHAIN_OBJ) $(XAPI_OBJ) \
               $(S3STORE_OBJ) $(S3_OBJ) $(COMMON_OBJ)
	$(CC) $(ALL_LDFLAGS) $^ $(PKG_LIBS) -o $@

cbtfs: $(BUILD)/cbtfs
	cp $< $@

$(BUILD)/pic/%.o: %.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -fPIC -MMD -MP -c $< -o $@

# Exports plugin_init alone, so that nothing of ours can bind to (or be
# bound by) a symbol of nbdkit's.  nbdkit_* come from nbdkit at load,
# so the linker cannot tell what is missing: nbdkit loading it can (a
# sanitizer's runtime, which the plugin of such a build needs, then
# comes late, as it does not with cbtfs serve under LD_PRELOAD).
$(PLUGIN): $(PLUGIN_OBJ) serve/plugin.syms
	$(CC) $(ALL_LDFLAGS) -shared -Wl,--version-script=serve/plugin.syms \
	  $(PLUGIN_OBJ) $(CHAIN_LIBS) $(XAPI_LIBS) -o $@.tmp
	ASAN_OPTIONS=verify_asan_link_order=0 nbdkit --dump-plugin $(abspath $@.tmp) >/dev/null
	mv $@.tmp $@

# Unit tests link only the modules they test: chain/ builds without FUSE.
$(BUILD)/tests/test-xmlrpc: $(BUILD)/tests/unit/test-xmlrpc.o $(XAPI_OBJ) $(COMMON_OBJ)
	$(CC) $(ALL_LDFLAGS) $^ $(XAPI_LIBS) -o $@
$(BUILD)/tests/test-vhd: $(BUILD)/tests/unit/test-vhd.o $(BUILD)/xapi/vhd.o \
                          $(BUILD)/xapi/vhd-stream.o $(COMMON_OBJ)
	$(CC) $(ALL_LDFLAGS) $^ $(CHAIN_LIBS) -o $@
$(BUILD)/tests/test-bitmap: $(BUILD)/tests/unit/test-bitmap.o $(BUILD)/chain/bitmap.o $(COMMON_OBJ)
	$(CC) $(ALL_LDFLAGS) $^ $(CHAIN_LIBS) -o $@
$(BUILD)/tests/test-store: $(BUILD)/tests/unit/test-store.o $(CHAIN_OBJ) $(COMMON_OBJ)
	$(CC) $(ALL_LDFLAGS) $^ $(CHAIN_LIBS) -o $@
$(BUILD)/tests/test-store-backend: $(BUILD)/tests/unit/test-store-backend.o \
                                  $(call obj,$(STORE_SRC)) $(COMMON_OBJ)
	$(CC) $(ALL_LDFLAGS) $^ $(CHAIN_LIBS) -o $@
$(BUILD)/tests/test-holder: $(BUILD)/tests/unit/test-holder.o \
                           $(BUILD)/chain/store/holder.o $(COMMON_OBJ)
	$(CC) $(ALL_LDFLAGS) $^ $(CHAIN_LIBS) -o $@
$(BUILD)/tests/test-resolve: $(BUILD)/tests/unit/test-resolve.o $(BUILD)/engine/points.o \
                          $(BUILD)/fs/tree.o \
                          $(CHAIN_OBJ) $(COMMON_OBJ)
	$(CC) $(ALL_LDFLAGS) $^ $(CHAIN_LIBS) -o $@
$(BUILD)/tests/test-holes: $(BUILD)/tests/unit/test-holes.o $(CHAIN_OBJ) $(COMMON_OBJ)
	$(CC) $(ALL_LDFLAGS) $^ $(CHAIN_LIBS) -o $@
$(BUILD)/tests/test-fold: $(BUILD)/tests/unit/test-fold.o $(CHAIN_OBJ) $(COMMON_OBJ)
	$(CC) $(ALL_LDFLAGS) $^ $(CHAIN_LIBS) -o $@
$(BUILD)/tests/test-nbdpin: $(BUILD)/tests/unit/test-nbdpin.o $(BUILD)/chain/nbdsrc.o \
                           $(BUILD)/chain/tlspin.o $(BUILD)/chain/nbdlimit.o $(COMMON_OBJ)
	$(CC) $(ALL_LDFLAGS) $^ $(CHAIN_LIBS) -o $@
# The same, unable to interpose gnutls_handshake: it must refuse to connect.
$(BUILD)/tests/test-nbdpin-hidden: $(BUILD)/tests/unit/test-nbdpin.o $(BUILD)/chain/nbdsrc.o \
                                  $(BUILD)/chain/tlspin.o $(BUILD)/chain/nbdlimit.o \
                                  $(COMMON_OBJ) \
                                  tests/unit/hide-handshake.map
	$(CC) $(ALL_LDFLAGS) $(filter %.o,$^) \
	  -Wl,--version-script=tests/unit/hide-handshake.map $(CHAIN_LIBS) -o $@

# common/: each helper on its own.
$(BUILD)/tests/test-error: $(BUILD)/tests/unit/test-error.o $(BUILD)/common/error.o
	$(CC) $(ALL_LDFLAGS) $^ -o $@
$(BUILD)/tests/test-log: $(BUILD)/tests/unit/test-log.o $(BUILD)/common/log.o
	$(CC) $(ALL_LDFLAGS) $^ -o $@
# Wrapped so that the test can cut reads and writes short.
$(BUILD)/tests/test-util: $(BUILD)/tests/unit/test-util.o $(BUILD)/common/util.o \
                         $(BUILD)/common/error.o
	$(CC) $(ALL_LDFLAGS) -Wl,--wrap=pread,--wrap=pwrite,--wrap=write $^ \
	  $(GNUTLS_LIBS) -o $@
$(BUILD)/tests/test-dio: $(BUILD)/tests/unit/test-dio.o $(BUILD)/common/dio.o \
                        $(BUILD)/common/util.o $(BUILD)/common/error.o
	$(CC) $(ALL_LDFLAGS) $^ $(GNUTLS_LIBS) -o $@
# Wrapped so that the test sees each block before it is freed.
$(BUILD)/tests/test-secbuf: $(BUILD)/tests/unit/test-secbuf.o $(BUILD)/common/secbuf.o
	$(CC) $(ALL_LDFLAGS) -Wl,--wrap=malloc,--wrap=realloc,--wrap=free $^ -o $@
# engine/retention.c is pure: the policy and its parsers alone.
$(BUILD)/tests/test-retention: $(BUILD)/tests/unit/test-retention.o \
                              $(BUILD)/engine/retention.o $(BUILD)/common/error.o
	$(CC) $(ALL_LDFLAGS) $^ -o $@
# chain/store/s3crypt.c over gnutls alone.
$(BUILD)/tests/test-s3crypt: $(BUILD)/tests/unit/test-s3crypt.o \
                            $(BUILD)/chain/store/s3crypt.o $(COMMON_OBJ)
	$(CC) $(ALL_LDFLAGS) $^ $(GNUTLS_LIBS) -o $@
# cleanup.h is all macros: nothing to link but the test, which sees frees.
$(BUILD)/tests/test-cleanup: $(BUILD)/tests/unit/test-cleanup.o
	$(CC) $(ALL_LDFLAGS) -Wl,--wrap=free $^ -o $@

$(BUILD)/tests/fuzz-xmlrpc: $(BUILD)/tests/fuzz/fuzz-xmlrpc.o $(XAPI_OBJ) $(COMMON_OBJ) $(FUZZ_DRIVER)
	$(CC) $(ALL_LDFLAGS) $(FUZZ_LDFLAGS) $^ $(XAPI_LIBS) -o $@
$(BUILD)/tests/fuzz-bitmap: $(BUILD)/tests/fuzz/fuzz-bitmap.o $(BUILD)/chain/bitmap.o $(COMMON_OBJ) $(FUZZ_DRIVER)
	$(CC) $(ALL_LDFLAGS) $(FUZZ_LDFLAGS) $^ $(CHAIN_LIBS) -o $@
$(BUILD)/tests/fuzz-vhd: $(BUILD)/tests/fuzz/fuzz-vhd.o $(BUILD)/xapi/vhd.o $(COMMON_OBJ) $(FUZZ_DRIVER)
	$(CC) $(ALL_LDFLAGS) $(FUZZ_LDFLAGS) $^ $(CHAIN_LIBS) -o $@
$(BUILD)/tests/fuzz-manifest: $(BUILD)/tests/fuzz/fuzz-manifest.o $(CHAIN_OBJ) $(COMMON_OBJ) $(FUZZ_DRIVER)
	$(CC) $(ALL_LDFLAGS) $(FUZZ_LDFLAGS) $^ $(CHAIN_LIBS) -o $@
$(BUILD)/tests/fuzz-layer: $(BUILD)/tests/fuzz/fuzz-layer.o $(CHAIN_OBJ) $(COMMON_OBJ) $(FUZZ_DRIVER)
	$(CC) $(ALL_LDFLAGS) $(FUZZ_LDFLAGS) $^ $(CHAIN_LIBS) -o $@

# The store contract on the object store backend: the same test built
# with STORE_S3, run by tests/test-store-backend-s3.py against RGW.
$(BUILD)/tests/unit/test-store-backend-s3.o: tests/unit/test-store-backend.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -DSTORE_S3 -MMD -MP -c $< -o $@
$(BUILD)/tests/test-store-backend-s3: $(BUILD)/tests/unit/test-store-backend-s3.o \
                                     $(CHAIN_OBJ) $(S3STORE_OBJ) $(S3_OBJ) \
                                     $(COMMON_OBJ)
	$(CC) $(ALL_LDFLAGS) $^ $(CHAIN_LIBS) $(XAPI_LIBS) -o $@

# s3/'s pure parts (parts, multipart XML), without a server.
$(BUILD)/tests/test-s3: $(BUILD)/tests/unit/test-s3.o $(S3_OBJ) $(COMMON_OBJ)
	$(CC) $(ALL_LDFLAGS) $^ $(XAPI_LIBS) -o $@

# s3/ against a real Ceph RGW: run by tests/test-s3-client.py, which
# starts one.
$(BUILD)/tests/s3probe: $(BUILD)/tests/s3/s3probe.o $(S3_OBJ) $(COMMON_OBJ)
	$(CC) $(ALL_LDFLAGS) $^ $(XAPI_LIBS) -o $@

$(BUILD)/tests/mkchain: $(BUILD)/tests/bench/mkchain.o $(CHAIN_OBJ) $(COMMON_OBJ)
	$(CC) $(ALL_LDFLAGS) $^ $(CHAIN_LIBS) -o $@

check: all check-unit check-e2e

# Unit tests, then every fuzz target over its seeds and the inputs that
# once broke it (tests/fuzz/regress).
check-unit: $(UNIT_BINS) $(FUZZ_BINS)
	@set -e; for t in $(UNIT_BINS); do echo "unit: $$t"; $$t; done
	@set -e; for t in $(FUZZ_TARGETS); do \
	  $(BUILD)/tests/$$t $$(ls -d tests/fuzz/seeds/$$t tests/fuzz/regress/$$t 2>/dev/null); done

# libFuzzer on every target for FUZZ_SECONDS each; a crash is kept in
# tests/fuzz/regress/TARGET/ (commit it with the fix).
fuzz: deps
	$(MAKE) BUILD=build/fuzz CC=clang CFLAGS="-O1 -g" \
	  SAN="-fsanitize=fuzzer-no-link,address,undefined" \
	  FUZZ_DRIVER= FUZZ_LDFLAGS=-fsanitize=fuzzer \
	  $(addprefix build/fuzz/tests/,$(FUZZ_TARGETS))
	./tests/fuzz/run build/fuzz/tests $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# End-to-end tests run two at a time (tests/run, JOBS): most of a test's
# time is waiting on servers, mounts and timeouts, not on a CPU.
E2E_JOBS ?= 2

# E2E_TESTS, E2E_KINDS: a subset, as tests/run's TESTS and KINDS.
check-e2e: $(BUILD)/cbtfs $(PLUGIN) $(BUILD)/tests/s3probe \
           $(BUILD)/tests/test-store-backend-s3
	CBTFS=$(abspath $(BUILD)/cbtfs) S3PROBE=$(abspath $(BUILD)/tests/s3probe) \
	  STORE_BACKEND_S3=$(abspath $(BUILD)/tests/test-store-backend-s3) \
	  PYTHON=$(PYTHON) JOBS=$(E2E_JOBS) TESTS="$(E2E_TESTS)" \
	  KINDS="$(E2E_KINDS)" ./tests/run

check-valgrind: $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do echo "valgrind: $$t"; \
	  valgrind -q --leak-check=full --show-leak-kinds=definite,indirect \
	    --errors-for-leak-kinds=definite,indirect --error-exitcode=1 $$t; done

# kill -9 of cbtfs backup, and of cbtfs prune, at 50 random moments each
# (make check runs 5; of prune into a bucket, 10 and 3); backup and prune
# nightly for 400 nights with kills (40 into a bucket; make check runs 30
# and 15).
check-crash: $(BUILD)/cbtfs
	CBTFS=$(abspath $(BUILD)/cbtfs) PYTHON=$(PYTHON) CRASH_TRIALS=50 \
	  CRASH_TRIALS_S3=10 PRUNE_NIGHTS=400 PRUNE_NIGHTS_S3=40 \
	  TESTS="tests/test-crash-loop.py tests/test-prune-crash.py \
	  tests/test-prune-nightly.py" ./tests/run

# The whole suite again, built with AddressSanitizer and UBSan: every
# test on a directory store (and the object store's own tests), and on
# a bucket those whose object store runs go through code the others do
# not (prune's merges, copy, mounts, lazy reads, restore, serve, two
# pools): the rest of the [s3] runs repeat the same backend calls.
# nbdkit (not built with ASan) loads the ASan plugin of cbtfs serve:
# ASan's runtime then cannot come first, as it would insist.
ASAN_S3_E2E = tests/test-prune.py tests/test-copy.py \
              tests/test-mount-follows.py tests/test-lazy.py tests/test-restore.py \
              tests/test-serve.py tests/test-s3-pools.py tests/test-forget.py
ASAN_MAKE = ASAN_OPTIONS=verify_asan_link_order=0 $(MAKE) BUILD=build/asan CC=gcc \
	  CFLAGS="-O1 -g" \
	  SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
check-asan: deps
	$(ASAN_MAKE) check-unit
	$(ASAN_MAKE) check-e2e E2E_KINDS=dir
	$(ASAN_MAKE) check-e2e E2E_KINDS=s3 E2E_TESTS="$(ASAN_S3_E2E)"

# The threaded parts (fetching, keeping, lazy loads, AIO writes, backup
# jobs, prune's copies) under ThreadSanitizer: the unit tests, the
# end-to-end tests that read through a mount from many threads, parallel
# backup jobs, prune (its copier threads, a mount read meanwhile), a
# mount following the store (its watcher beside the readers), restore
# (reading ahead of its upload), and object store leases (each renewed
# by a thread of its own).  A report stops the process.
TSAN_E2E = tests/test-lazy.py tests/test-backup-mount.py tests/test-backup-jobs.py \
           tests/test-prune.py tests/test-mount-follows.py tests/test-restore.py \
           tests/test-s3-lease.py
check-tsan: deps
	$(MAKE) BUILD=build/tsan CC=gcc CFLAGS="-O1 -g" SAN="-fsanitize=thread" \
	  check-unit $(BUILD)/tsan/cbtfs
	TSAN_OPTIONS="halt_on_error=1 exitcode=66" TESTS="$(TSAN_E2E)" \
	  CBTFS=$(abspath build/tsan/cbtfs) PYTHON=$(PYTHON) JOBS=$(E2E_JOBS) ./tests/run

install: $(BUILD)/cbtfs $(PLUGIN) man
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(PLUGINDIR) \
	  $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8 \
	  $(DESTDIR)$(DOCDIR)
	install -m 755 $(BUILD)/cbtfs $(DESTDIR)$(BINDIR)/cbtfs
	install -m 644 $(PLUGIN) $(DESTDIR)$(PLUGINDIR)/
	install -m 644 $(BUILD)/cbtfs.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 644 $(BUILD)/cbtfs-store.5 $(DESTDIR)$(MANDIR)/man5/
	install -m 644 $(BUILD)/mount.cbtfs.8 $(DESTDIR)$(MANDIR)/man8/
	install -m 644 $(DOCS) $(DESTDIR)$(DOCDIR)/
	install -d $(DESTDIR)$(MOUNTHELPERDIR) $(DESTDIR)$(UNITDIR) \
	  $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(EXAMPLEDIR)
	sed 's|@BINDIR@|$(BINDIR)|g' dist/mount.cbtfs.in > $(DESTDIR)$(MOUNTHELPERDIR)/mount.cbtfs
	chmod 755 $(DESTDIR)$(MOUNTHELPERDIR)/mount.cbtfs
	sed 's|@BINDIR@|$(BINDIR)|g' dist/cbtfs-backup@.service.in \
	  > $(DESTDIR)$(UNITDIR)/cbtfs-backup@.service
	chmod 644 $(DESTDIR)$(UNITDIR)/cbtfs-backup@.service
	install -m 644 dist/cbtfs-backup@.timer $(DESTDIR)$(UNITDIR)/
	install -m 644 dist/cbtfs.bash $(DESTDIR)$(BASHCOMPDIR)/cbtfs
	install -m 644 dist/mnt-backups.mount $(DESTDIR)$(EXAMPLEDIR)/

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/cbtfs $(DESTDIR)$(PLUGINDIR)/$(notdir $(PLUGIN)) \
	  $(DESTDIR)$(MANDIR)/man1/cbtfs.1 $(DESTDIR)$(MANDIR)/man5/cbtfs-store.5 \
	  $(DESTDIR)$(MANDIR)/man8/mount.cbtfs.8 \
	  $(addprefix $(DESTDIR)$(DOCDIR)/,$(notdir $(DOCS))) \
	  $(DESTDIR)$(MOUNTHELPERDIR)/mount.cbtfs \
	  $(addprefix $(DESTDIR)$(UNITDIR)/,$(UNITS)) \
	  $(DESTDIR)$(BASHCOMPDIR)/cbtfs $(DESTDIR)$(EXAMPLEDIR)/mnt-backups.mount
	-rmdir $(DESTDIR)$(PLUGINDIR) $(DESTDIR)$(EXAMPLEDIR) $(DESTDIR)$(DOCDIR)

# The Debian package, from a copy of the working tree in $(BUILD)/deb
# (scripts/deb.sh, debian/), checked with lintian.
deb:
	./scripts/install-deps.sh deb
	./scripts/deb.sh $(abspath $(BUILD)/deb)

# Installs that package with apt-get, runs the demo with the installed
# cbtfs, and purges it: it changes the machine, so .ci/run runs it, not
# make check.  deb after the stamp, not beside it: both may run apt.
check-deb: $(DEPS_STAMP)
	$(MAKE) deb
	$(PYTHON) tests/check-deb.py $(BUILD)/deb/cbtfs_*.deb

demo: all
	$(PYTHON) scripts/demo.py ./cbtfs

# Ratios against nbdcopy, nbdfuse, cat and fio, measured in one run
# (BENCHMARKS.md keeps what it printed).
bench: all $(BUILD)/tests/mkchain
	$(PYTHON) scripts/bench.py ./cbtfs

clean:
	rm -rf build/asan build/fuzz $(BUILD)/cbtfs $(BUILD)/common $(BUILD)/xapi $(BUILD)/s3 \
	  $(BUILD)/chain $(BUILD)/engine $(BUILD)/fs $(BUILD)/cli $(BUILD)/tests cbtfs \
	  $(BUILD)/pic $(PLUGIN) $(MANPAGES) $(BUILD)/deb

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
