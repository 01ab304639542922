#!/usr/bin/env bash
# Runs every fuzz target of the module for a bounded time each, one after the other.
#
#   hack/fuzz.sh                      every target, FUZZTIME each (default 10s)
#   FUZZTIME=2m hack/fuzz.sh          longer
#   hack/fuzz.sh FuzzRecords ...      only the named targets
#
# Targets are found by their declarations (func FuzzX(f *testing.F) in a _test.go file), so new ones are
# picked up without editing this script. The corpus lives in each package's testdata/fuzz/<FuzzX>/:
# `go test` runs it as seeds on every ordinary test run, a failing input is written there by the fuzzer
# itself (commit it with the fix), and with FUZZ_KEEP_CORPUS=1 (the default) the inputs the fuzzer found
# interesting are copied there from the build cache too, so that the next run, on any machine, starts
# from them. FUZZ_KEEP_CORPUS=0 leaves testdata alone unless a target fails.
#
# No control plane is needed: the fuzz targets use in-memory fakes.
set -euo pipefail

cd "$(dirname "$0")/.."
FUZZTIME="${FUZZTIME:-10s}"
FUZZ_KEEP_CORPUS="${FUZZ_KEEP_CORPUS:-1}"
module=$(go list -m)
cache="$(go env GOCACHE)/fuzz"

# "dir name" for every fuzz target.
targets=$(grep -rEo --include='*_test.go' '^func Fuzz[A-Za-z0-9_]+\(f \*testing\.F\)' . |
	sed -E 's#^\./(.*)/[^/]*_test\.go:func (Fuzz[A-Za-z0-9_]+).*#\1 \2#; s#^\./[^/]*_test\.go:func (Fuzz[A-Za-z0-9_]+).*#. \1#' | sort -u)
if [ $# -gt 0 ]; then
	want=" $* "
	targets=$(echo "$targets" | while read -r dir name; do [[ "$want" == *" $name "* ]] && echo "$dir $name"; done || true)
fi
if [ -z "$targets" ]; then
	echo "no fuzz targets found" >&2
	exit 1
fi

start=$SECONDS
failed=()
log=$(mktemp)
trap 'rm -f "$log"' EXIT
while read -r dir name; do
	printf '==> %s ./%s (%s)\n' "$name" "$dir" "$FUZZTIME"
	t0=$SECONDS
	# The fuzzing engine sometimes ends a run at its deadline with "context deadline exceeded" and no
	# failing input: that is the engine stopping, not a finding, and it is run again once.
	for attempt in 1 2; do
		if go test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" "./$dir" 2>&1 | tee "$log"; then
			break
		fi
		if [ "$attempt" = 1 ] && grep -q 'context deadline exceeded' "$log" && ! grep -q 'Failing input written to' "$log"; then
			echo "    $name stopped at its deadline without a finding; running it again"
			continue
		fi
		failed+=("$name ./$dir (the failing input is in $dir/testdata/fuzz/$name/)")
		break
	done
	if [ "$FUZZ_KEEP_CORPUS" = 1 ]; then
		pkg="$module"
		[ "$dir" != . ] && pkg="$module/$dir"
		if [ -d "$cache/$pkg/$name" ]; then
			mkdir -p "$dir/testdata/fuzz/$name"
			cp -n "$cache/$pkg/$name"/* "$dir/testdata/fuzz/$name/" 2>/dev/null || true
		fi
	fi
	printf '    %s took %ds\n' "$name" $((SECONDS - t0))
done <<<"$targets"

echo "fuzzing took $((SECONDS - start))s in total"
if [ ${#failed[@]} -gt 0 ]; then
	printf 'FAILED: %s\n' "${failed[@]}" >&2
	exit 1
fi
