#!/usr/bin/env bash
# deps.sh: make sure the tools `make bench` uses are installed:
#   fio, gocryptfs (a target), gnuplot (the chart), fuse3 (fusermount3).
# As root, missing packages are installed with apt-get; otherwise the script
# lists them and fails only if fio (which every job needs) is missing.
set -euo pipefail

declare -A pkg_of=([fio]=fio [gocryptfs]=gocryptfs [gnuplot]=gnuplot-nox [fusermount3]=fuse3)
missing=()
for cmd in fio gocryptfs gnuplot fusermount3; do
	command -v "$cmd" >/dev/null 2>&1 || missing+=("${pkg_of[$cmd]}")
done
if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "bench deps: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
		{ apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${missing[@]}"; }
	exit 0
fi
echo "bench deps: missing packages: ${missing[*]} (as root: apt-get install ${missing[*]})" >&2
if ! command -v fio >/dev/null 2>&1; then
	exit 1
fi
echo "bench deps: running without them (gocryptfs target skipped, or no chart)" >&2
