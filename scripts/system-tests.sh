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
# part fails; a part with no test selected is not a failure.
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

run() {
	/usr/bin/python3 -m pytest -q -p no:cacheprovider $where "$@"
	rc=$?
	# 5: nothing selected (say, -k that matches only serial tests)
	[ $rc = 5 ] && rc=0
	return $rc
}

if [ "$jobs" = 0 ]; then
	run -p no:xdist "$@"
	exit $?
fi
case "${part:-}" in
parallel) run -n "$jobs" --dist loadgroup "$@"; exit $? ;;
serial | all) run -p no:xdist "$@"; exit $? ;;
esac
run -n "$jobs" --dist loadgroup --part=parallel "$@"
rc1=$?
run -p no:xdist --part=serial "$@"
rc2=$?
[ $rc1 = 0 ] && [ $rc2 = 0 ]
