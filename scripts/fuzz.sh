#!/bin/sh
# fuzz.sh: build and run the libFuzzer targets fuzz/fuzz_<target>.c.
#
#   scripts/fuzz.sh replay                replay every corpus through its
#                                         target (make test-fuzz); needs cc
#   scripts/fuzz.sh run TARGET SECONDS    fuzz TARGET (parse, data, reply,
#                                         bdat, template, inject, proxy,
#                                         shaping) with
#                                         libFuzzer; needs clang
#
# The targets link the parser sources directly, not build/libsluice.a, so
# they build while the rest of the tree does not. Builds go to fuzz/build/
# (ignored by git). A run grows its working corpus in fuzz/build/work-TARGET
# and writes crashers to fuzz/corpus/TARGET/crash-*; keep those that teach
# something (the corpus stays under 60 files a target).
set -eu

cd "$(dirname "$0")/.."
OUT=fuzz/build
TARGETS="parse data reply bdat template inject proxy shaping"
SRCS="src/smtpd/parse.c src/smtpd/data.c src/smtpd/content.c src/smtpd/proxy.c src/smtpc/reply.c src/util/str.c src/util/xalloc.c
src/inject/template.c src/inject/request.c src/inject/vars.c
src/shaping/file.c src/shaping/limit.c"
LIBS="$(pkg-config --cflags --libs jansson) -lm"
CFLAGS="-std=gnu11 -D_GNU_SOURCE -Isrc -g -O1 -fno-omit-frame-pointer"
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"

usage() {
	echo "usage: $0 replay | run TARGET SECONDS" >&2
	exit 2
}

replay() {
	mkdir -p "$OUT"
	pass=0 fail=0
	for t in $TARGETS; do
		${CC:-cc} $CFLAGS $SAN -o "$OUT/replay-$t" "fuzz/fuzz_$t.c" \
		    fuzz/replay_main.c $SRCS $LIBS
		line=$(ASAN_OPTIONS=detect_leaks=1 "$OUT/replay-$t" \
		    "fuzz/corpus/$t") || true
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
	    -fno-sanitize-recover=undefined -o "$OUT/fuzz-$t" "fuzz/fuzz_$t.c" $SRCS $LIBS
	dict=""
	[ -f "fuzz/$t.dict" ] && dict="-dict=fuzz/$t.dict"
	"$OUT/fuzz-$t" -max_total_time="$secs" -max_len=1024 -timeout=10 \
	    -print_final_stats=1 $dict \
	    -artifact_prefix="fuzz/corpus/$t/crash-" \
	    "$OUT/work-$t" "fuzz/corpus/$t"
}

case "${1:-}" in
replay) replay ;;
run) [ $# = 3 ] || usage; run "$2" "$3" ;;
*) usage ;;
esac
