#!/bin/sh
# Run each cmocka unit test program; fail if any fails. Prints the totals.
pass=0 fail=0
for t in "$@"; do
	if "$t"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAILED: $t"; fi
done
echo "unit programs: $pass passed, $fail failed"
[ "$fail" = 0 ]
