#!/bin/bash
# test.sh: `make test` (docs/TESTING.md). Every suite runs, in an order that
# keeps two cores busy instead of waiting on timers:
#
#   1. build     the plain tree (make -j2: programs, unit tests, power-cut shim)
#   2. at once   plain:  unit tests, then the system tests' parallel part
#                asan:   the ASan/UBSan tree (make -j2), its unit tests, then
#                        its system tests' parallel part
#                fuzz:   the fuzz corpora replayed through their targets
#   3. serial    the system tests marked serial, plain then ASan, with
#                nothing else of ours running (they need the machine alone)
#
# The system tests' parallel part runs on JOBS pytest-xdist workers per
# build (make JOBS=N; default 4). Each step's output goes to
# build/test-logs/STEP.log and is printed whole when the step ends; a table
# of the steps' times closes the run. Exits 1 if any step failed.
# PYTEST_ARGS reaches both system runs.
set -u
cd "$(dirname "$0")/.."
MAKE=${MAKE:-make}
L=build/test-logs
rm -rf "$L"
mkdir -p "$L"
args=${PYTEST_ARGS:-}
t0=$(date +%s)

# step NAME CMD...: run CMD with its output in $L/NAME.log, then print the
# log (one step's output at a time) and record NAME, exit code, seconds.
step() {
	local name=$1 s e rc
	shift
	s=$(date +%s)
	"$@" >"$L/$name.log" 2>&1
	rc=$?
	e=$(($(date +%s) - s))
	{
		flock 9
		echo "==== $name: $([ $rc = 0 ] && echo passed || echo "FAILED (exit $rc)") in ${e}s"
		cat "$L/$name.log"
		echo "$name $rc $e" >>"$L/steps"
	} 9>"$L/.lock"
	return $rc
}

summary() {
	echo
	echo "make test: step, seconds, result"
	while read -r name rc secs; do
		printf '  %-16s %5ss  %s\n' "$name" "$secs" \
		    "$([ "$rc" = 0 ] && echo ok || echo "FAILED ($rc)")"
	done <"$L/steps"
	printf '  %-16s %5ss\n' total $(($(date +%s) - t0))
	! grep -qv ' 0 [0-9]*$' "$L/steps"
}

if ! step build $MAKE -j2 test-build; then
	summary
	exit 1
fi
{
	step unit $MAKE test-unit
	step system $MAKE test-system PYTEST_ARGS="--part=parallel $args"
} &
step asan $MAKE -j2 test-asan PYTEST_ARGS="--part=parallel $args" &
step fuzz $MAKE test-fuzz &
wait
step system-serial $MAKE test-system PYTEST_ARGS="--part=serial $args"
step asan-serial $MAKE test-asan-system PYTEST_ARGS="--part=serial $args"
summary
