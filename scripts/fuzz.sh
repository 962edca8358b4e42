#!/bin/sh
# fuzz.sh: build and run the libFuzzer targets fuzz/fuzz_<target>.c.
#
#   scripts/fuzz.sh replay                replay every corpus through its
#                                         target (make test-fuzz); needs cc
#   scripts/fuzz.sh run TARGET SECONDS    fuzz TARGET with libFuzzer; needs
#                                         clang
#   scripts/fuzz.sh all SECONDS           fuzz every target SECONDS each, two
#                                         at a time (make test-fuzz); fails
#                                         on any finding
#
# Targets: parse, data, reply, bdat (smtpd and smtpc parsers), template
# and inject (the injection template language and request parser), proxy
# (the PROXY protocol v1/v2 header), shaping (the shaping file), sasl (AUTH
# PLAIN and LOGIN decoding),
# users (the users file), dkim (DKIM canonicalisation), conf (the
# configuration, with [tls_policy] and [dkim] sign). The targets link their sources directly, not
# build/libsluice.a, so they build while the rest of the tree does not.
# Builds go to fuzz/build/ (ignored by git). A run grows its working
# corpus in fuzz/build/work-TARGET and writes crashers to
# fuzz/corpus/TARGET/crash-*; keep those that teach something (the corpus
# stays under 60 files a target).
set -eu

cd "$(dirname "$0")/.."
OUT=fuzz/build
TARGETS="parse data reply bdat template inject proxy shaping sasl users dkim conf"
BASE="src/util/str.c src/util/xalloc.c"

# The sources and libraries of target $1.
srcs() {
	case $1 in
	parse|data|reply|bdat|template|inject)
		echo "src/smtpd/parse.c src/smtpd/data.c src/smtpd/content.c" \
		    "src/smtpc/reply.c $BASE src/inject/template.c" \
		    "src/inject/request.c src/inject/vars.c" \
		    "$(pkg-config --cflags --libs jansson)" ;;
	proxy) echo "src/smtpd/proxy.c" ;;
	shaping) echo "src/shaping/file.c src/shaping/limit.c $BASE -lm" ;;
	sasl) echo "src/auth/sasl.c" ;;
	users) echo "src/auth/users.c $BASE -lcrypt" ;;
	dkim) echo "src/dkim/canon.c" ;;
	conf) echo "src/conf/conf.c src/dkim/sign.c src/dkim/canon.c $BASE" \
	    "$(pkg-config --cflags --libs inih libevent libcrypto)" ;;
	esac
}
CFLAGS="-std=gnu11 -D_GNU_SOURCE -Isrc -g -O1 -fno-omit-frame-pointer"
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"

usage() {
	echo "usage: $0 replay | run TARGET SECONDS | all SECONDS" >&2
	exit 2
}

replay() {
	mkdir -p "$OUT"
	pass=0 fail=0
	for t in $TARGETS; do
		${CC:-cc} $CFLAGS $SAN -o "$OUT/replay-$t" "fuzz/fuzz_$t.c" \
		    fuzz/replay_main.c $(srcs "$t")
		# bounded: an input that hangs its target fails it
		line=$(ASAN_OPTIONS=detect_leaks=1 timeout 120 \
		    "$OUT/replay-$t" "fuzz/corpus/$t") || true
		p=$(echo "$line" | sed -n 's/^replay: \([0-9]*\) passed.*/\1/p')
		f=$(echo "$line" | sed -n 's/.* \([0-9]*\) failed$/\1/p')
		[ -n "$p" ] && [ -n "$f" ] || { p=0 f=1; }
		echo "fuzz replay $t: $p passed, $f failed"
		pass=$((pass + p)) fail=$((fail + f))
	done
	echo "fuzz: $pass passed, $fail failed"
	[ "$fail" = 0 ]
}

run() {
	t=$1 secs=$2
	[ -f "fuzz/fuzz_$t.c" ] || usage
	mkdir -p "$OUT/work-$t" "fuzz/corpus/$t"
	clang $CFLAGS -fsanitize=fuzzer,address,undefined \
	    -fno-sanitize-recover=undefined -o "$OUT/fuzz-$t" "fuzz/fuzz_$t.c" \
	    $(srcs "$t")
	dict=""
	[ -f "fuzz/$t.dict" ] && dict="-dict=fuzz/$t.dict"
	"$OUT/fuzz-$t" -max_total_time="$secs" -max_len=1024 -timeout=10 \
	    -print_final_stats=1 $dict \
	    -artifact_prefix="fuzz/corpus/$t/crash-" \
	    "$OUT/work-$t" "fuzz/corpus/$t"
}

# Every target for secs seconds, two at a time (libFuzzer uses one core);
# one line each, then the totals.
all() {
	secs=$1 pass=0 fail=0 n=0
	for t in $TARGETS; do
		(if run "$t" "$secs" >"$OUT/run-$t.log" 2>&1; then echo 0;
		    else echo 1; fi >"$OUT/run-$t.rc") &
		n=$((n + 1))
		[ $((n % 2)) = 0 ] && wait
	done
	wait
	for t in $TARGETS; do
		if [ "$(cat "$OUT/run-$t.rc")" = 0 ]; then
			pass=$((pass + 1))
			echo "fuzz run $t: $(grep -o 'Done [0-9]* runs' \
			    "$OUT/run-$t.log" | tail -1) in ${secs}s, no finding"
		else
			fail=$((fail + 1))
			echo "fuzz run $t: FAILED (fuzz/build/run-$t.log):"
			grep -E 'ERROR|SUMMARY|crash-|error:' "$OUT/run-$t.log" |
			    head -5
		fi
	done
	echo "fuzz: $pass passed, $fail failed"
	[ "$fail" = 0 ]
}

case "${1:-}" in
replay) replay ;;
run) [ $# = 3 ] || usage; run "$2" "$3" ;;
all) [ $# = 2 ] || usage; mkdir -p "$OUT"; all "$2" ;;
*) usage ;;
esac
