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
	if ! go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" -fuzzminimizetime "$minimizetime" "$dir"; then
		failed+=("$dir:$name")
	fi
done
if [ ${#failed[@]} -gt 0 ]; then
	echo "fuzz: FAILED: ${failed[*]}" >&2
	exit 1
fi
echo "fuzz: ${#targets[@]} targets ok"
