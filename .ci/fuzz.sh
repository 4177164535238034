#!/usr/bin/env bash
# Runs every Go fuzz target of the repository for a short time
# (FUZZTIME, default 10s each) and fails when a target has no checked-in
# seed corpus in its package's testdata/fuzz/<Target>/, so new targets
# cannot silently start from nothing. Targets are found by their
# `func FuzzXxx(` declaration in *_test.go files.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-10s}
# Every input that finds new coverage is minimised before fuzzing goes on,
# for up to 60 s by default: with 10 s runs FuzzFileReadAt spent its whole
# time minimising one input (23 execs in CI). A short bound keeps the
# fuzzing; a crash still reproduces, from a less minimal input.
minimizetime=${FUZZMINIMIZETIME:-1s}

mapfile -t targets < <(grep -rEo --include='*_test.go' '^func Fuzz[A-Za-z0-9_]+\(' . |
	sed -E 's#^(.*)/[^/]+_test\.go:func (Fuzz[A-Za-z0-9_]+)\($#\1 \2#' | sort -u)
if [ ${#targets[@]} -eq 0 ]; then
	echo "fuzz: no fuzz targets found" >&2
	exit 1
fi

# fuzz_one fuzzes one target. Go 1.26's fuzz coordinator can report
# "context deadline exceeded" at the end of -fuzztime although no input
# failed (a race between its deadline and its workers, go.dev/issue/75804,
# fixed in Go 1.27; seen in CI on FuzzPlaintextSize). A real failure always
# writes its input to the corpus directory, so a run that fails with that
# message and writes nothing is run once more, and a second such run is
# reported as the toolchain's race, not as a failure. Anything else fails.
fuzz_one() {
	local dir=$1 name=$2 corpus=$3 attempt out before
	for attempt in 1 2; do
		before=$(ls "$corpus" | sort)
		if out=$(go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" -fuzzminimizetime "$minimizetime" "$dir" 2>&1); then
			printf '%s\n' "$out"
			return 0
		fi
		printf '%s\n' "$out"
		if [ "$(ls "$corpus" | sort)" != "$before" ] || ! grep -q '^    context deadline exceeded$' <<<"$out"; then
			return 1
		fi
		echo "fuzz: $dir $name: 'context deadline exceeded' with no failing input (go.dev/issue/75804), attempt $attempt"
	done
	echo "fuzz: $dir $name: WARNING: the Go fuzz coordinator's deadline race twice; no input failed"
	return 0
}

failed=()
for t in "${targets[@]}"; do
	dir=${t% *}
	name=${t#* }
	corpus="$dir/testdata/fuzz/$name"
	if [ -z "$(ls -A "$corpus" 2>/dev/null)" ]; then
		echo "fuzz: $dir $name: no seed corpus in $corpus" >&2
		failed+=("$dir:$name(corpus)")
		continue
	fi
	echo "== fuzz $dir $name ($fuzztime, $(ls "$corpus" | wc -l) seeds)"
	if ! fuzz_one "$dir" "$name" "$corpus"; then
		failed+=("$dir:$name")
	fi
done
if [ ${#failed[@]} -gt 0 ]; then
	echo "fuzz: FAILED: ${failed[*]}" >&2
	exit 1
fi
echo "fuzz: ${#targets[@]} targets ok"
