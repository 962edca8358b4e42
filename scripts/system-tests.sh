#!/bin/sh
# system-tests.sh BUILD [PYTEST ARGS...]: the system tests (tests/system) on
# the binaries of BUILD, in two parts (docs/TESTING.md):
#
#   1. every test not marked serial, on JOBS pytest-xdist workers (default
#      4; most tests wait on sockets and timers, not on the CPU), tests of
#      a module with a module-scoped server on one worker (--dist loadgroup);
#   2. the tests marked serial (they need the machine alone), one at a time.
#
# JOBS=0 runs everything in one process, in file order. --part=parallel or
# --part=serial in the arguments runs only that part. Arguments naming files
# or directories under tests/ replace tests/system. Exits non-zero if either
# part fails; a part with no test selected is not a failure. Each part's
# test directories stay in /tmp/sluice-ID/{par,ser,all} (ID: of this tree
# and BUILD; short, as a socket's path has at most 107 bytes) until its
# next run; a failed test's report names its own and ends with its
# daemons' last log lines.
set -u
cd "$(dirname "$0")/.."
build=$1
shift
jobs=${JOBS:-4}
where=tests/system
for a in "$@"; do
	case "$a" in
	tests/*) where= ;;
	--part=*) part=${a#--part=} ;;
	esac
done
export SLUICE_BUILD="$build"

# run PART ARGS...
run() {
	top=/tmp/sluice-$(echo "$PWD/$build" | cksum | cut -d' ' -f1)
	t="$top/$1"
	shift
	mkdir -p -m 700 "$top"
	/usr/bin/python3 -m pytest -q -p no:cacheprovider --basetemp="$t" \
	    $where "$@"
	rc=$?
	# 5: nothing selected (say, -k that matches only serial tests)
	[ $rc = 5 ] && rc=0
	return $rc
}

if [ "$jobs" = 0 ]; then
	run all -p no:xdist "$@"
	exit $?
fi
case "${part:-}" in
parallel) run par -n "$jobs" --dist loadgroup "$@"; exit $? ;;
serial) run ser -p no:xdist "$@"; exit $? ;;
all) run all -p no:xdist "$@"; exit $? ;;
esac
run par -n "$jobs" --dist loadgroup --part=parallel "$@"
rc1=$?
run ser -p no:xdist --part=serial "$@"
rc2=$?
[ $rc1 = 0 ] && [ $rc2 = 0 ]
