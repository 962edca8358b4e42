#!/bin/sh
# Every setting of src/conf/settings.def is documented in docs/CONFIG.md.
missing=0
for key in $(sed -n 's/^SETTING([a-z]*, \([a-z_]*\),.*/\1/p' src/conf/settings.def); do
	grep -q "^| $key |" docs/CONFIG.md || { echo "docs/CONFIG.md: setting '$key' is not documented"; missing=$((missing + 1)); }
done
n=$(grep -c '^SETTING(' src/conf/settings.def)
echo "docs check: $((n - missing)) passed, $missing failed"
[ "$missing" = 0 ]
