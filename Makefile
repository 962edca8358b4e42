# sluice: a mail transfer agent. `make run` starts it; `make test` tests it.
#
# Sources are found by folder: every src/<part>/*.c except the programs'
# folders (src/sluiced, src/cli) goes into build/libsluice.a; each program
# links that. tests/unit/<part>/test_*.c are cmocka programs, one per file.

BUILD    ?= build
SAN      ?=
CC       ?= cc
PKGS     := libevent libevent_pthreads libevent_openssl inih sqlite3 jansson libcares openssl \
            gmime-3.0 librabbitmq libcurl libzstd libxcrypt hiredis
OPT      ?= -O2
CFLAGS   ?= $(OPT) -g
CFLAGS   += -std=gnu11 -Wall -Wextra -Wno-unused-parameter -Wshadow \
            -D_GNU_SOURCE -pthread -MMD -MP -Isrc $(SAN) \
            $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDFLAGS  += -pthread $(SAN)
LDLIBS   += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm

PROG_DIRS := src/sluiced src/cli
LIB_SRCS  := $(filter-out $(addsuffix /%,$(PROG_DIRS)),$(wildcard src/*/*.c))
LIB_OBJS  := $(LIB_SRCS:%.c=$(BUILD)/%.o)
SLUICED_OBJS := $(patsubst %.c,$(BUILD)/%.o,$(wildcard src/sluiced/*.c))
CLI_OBJS  := $(patsubst %.c,$(BUILD)/%.o,$(wildcard src/cli/*.c))
# Pages compiled into the programs: the files under src/<part>/www/ become
# C arrays in $(BUILD)/gen/<part>_www.c (scripts/embed.sh), table <part>_www.
WWW_DIRS  := $(wildcard src/*/www)
WWW_GEN   := $(patsubst src/%/www,$(BUILD)/gen/%_www.c,$(WWW_DIRS))
LIB_OBJS  += $(WWW_GEN:.c=.o)
UNIT_SRCS := $(wildcard tests/unit/*/test_*.c)
UNIT_BINS := $(UNIT_SRCS:%.c=$(BUILD)/%)

.PHONY: all deps run test test-build test-unit test-system test-asan test-asan-system test-fuzz bench clean install

all: $(BUILD)/sluiced $(BUILD)/sluice

deps:
	@scripts/deps.sh

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

.SECONDARY: $(WWW_GEN)
.SECONDEXPANSION:
$(BUILD)/gen/%_www.c: $$(sort $$(wildcard src/%/www/*)) scripts/embed.sh
	scripts/embed.sh $*_www $@ $(sort $(wildcard src/$*/www/*))

$(BUILD)/gen/%.o: $(BUILD)/gen/%.c
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/libsluice.a: $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/sluiced: $(SLUICED_OBJS) $(BUILD)/libsluice.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/sluice: $(CLI_OBJS) $(BUILD)/libsluice.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/unit/%: tests/unit/%.c $(BUILD)/libsluice.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libsluice.a $(LDLIBS) -lcmocka

# The power-cut model (tests/powercut/powercut.c): an LD_PRELOAD shim the
# system tests load into sluiced. Never sanitized: it runs before ASan's
# runtime in the library list (the tests set verify_asan_link_order=0).
POWERCUT := $(BUILD)/tests/powercut.so
$(POWERCUT): tests/powercut/powercut.c
	@mkdir -p $(dir $@)
	$(CC) -O2 -g -std=gnu11 -Wall -Wextra -shared -fPIC -o $@ $< -ldl -pthread

# The built-in configuration; delivered mail goes to a local sink (var/sink).
run: deps all
	@scripts/run.sh

# make test: every suite below (scripts/test.sh runs them side by side and
# prints a table of their times). The system tests run on JOBS pytest-xdist
# workers per build (JOBS=0: one process, in file order); those marked
# serial run after them, alone. docs/TESTING.md says more.
JOBS ?= 4
ASAN := BUILD=build-asan OPT=-O1 SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"

test: deps
	@JOBS=$(JOBS) MAKE="$(MAKE)" scripts/test.sh

# Everything the unit and system tests of $(BUILD) need.
test-build: all $(UNIT_BINS) $(POWERCUT)

test-unit: $(UNIT_BINS)
	@scripts/run-unit.sh $(UNIT_BINS)
	@scripts/check-docs.sh

test-system: all $(POWERCUT)
	@JOBS=$(JOBS) scripts/system-tests.sh $(BUILD) $(PYTEST_ARGS)

# Unit and system tests again under AddressSanitizer and UBSan: every
# system test, the slow ones with smaller loads (sluicetest.scaled). The
# system tests run even if a unit test failed (both are reported).
test-asan:
	$(MAKE) $(ASAN) test-build
	@$(MAKE) $(ASAN) test-unit; u=$$?; $(MAKE) -s test-asan-system && [ $$u = 0 ]

# The system tests on the ASan build as it is (make test-asan builds it).
test-asan-system:
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  JOBS=$(JOBS) scripts/system-tests.sh build-asan $(PYTEST_ARGS)

# Replay the fuzz corpora through the fuzz targets (built as plain programs),
# then fuzz each target with libFuzzer for FUZZ_SECONDS (a fixed time, so
# make test stays within its budget; scripts/fuzz.sh run NAME SECONDS runs
# one longer).
FUZZ_SECONDS ?= 12
test-fuzz:
	@scripts/fuzz.sh replay
	@scripts/fuzz.sh all $(FUZZ_SECONDS)

bench: deps all
	bench/accept

# sluiced in sbin, sluice in bin, `sendmail` (sbin) and `mailq` (bin) as
# links to sluice, the docs. PREFIX=/usr puts sendmail in /usr/sbin, where a
# system MTA's would be replaced: only then is that one touched. As root
# into the real system (no DESTDIR), the system user `sluice` that sluiced
# runs as ([server] user) is created when missing.
PREFIX ?= /usr/local
install: all
	install -d $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(PREFIX)/bin \
	    $(DESTDIR)$(PREFIX)/share/doc/sluice
	install -m 755 $(BUILD)/sluiced $(DESTDIR)$(PREFIX)/sbin/sluiced
	install -m 755 $(BUILD)/sluice $(DESTDIR)$(PREFIX)/bin/sluice
	ln -sf ../bin/sluice $(DESTDIR)$(PREFIX)/sbin/sendmail
	ln -sf sluice $(DESTDIR)$(PREFIX)/bin/mailq
	install -m 644 README.md docs/*.md $(DESTDIR)$(PREFIX)/share/doc/sluice/
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ] && ! getent passwd sluice >/dev/null; then \
	    useradd --system --user-group --no-create-home --home-dir /nonexistent \
	        --shell /usr/sbin/nologin sluice && echo "install: created the system user sluice"; fi

clean:
	rm -rf build build-asan

-include $(LIB_OBJS:.o=.d) $(SLUICED_OBJS:.o=.d) $(CLI_OBJS:.o=.d) $(UNIT_BINS:=.d)
