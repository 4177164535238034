#!/usr/bin/env bash
# verify-ceiling.sh: show that cmd/fuseceiling really serves reads and writes
# itself (kernel passthrough refused), against stock loopback for contrast.
# For each mode it reads a 64 MiB file cold and writes 16 MiB with fsync
# under `strace -c` of the daemon, and prints the daemon's data syscalls:
# refused → pwrite64 and splice/pread64 calls; allowed → (almost) none.
# Needs root (drop_caches, passthrough), strace and a kernel with FUSE
# passthrough (6.9+) for the contrast to show.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v strace >/dev/null || { echo "verify-ceiling: strace is not installed" >&2; exit 1; }
work=$(mktemp -d /var/tmp/fuseceiling-verify-XXXXXX)
pid=""
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
	mountpoint -q "$work/mnt" && { fusermount3 -u "$work/mnt" || umount -l "$work/mnt"; }
	rm -rf "$work"
}
trap cleanup EXIT
go build -o "$work/fuseceiling" ./cmd/fuseceiling
mkdir -p "$work/b" "$work/mnt"
dd if=/dev/urandom of="$work/b/big" bs=1M count=64 status=none
for mode in refused allowed; do
	flag=""
	[ "$mode" = allowed ] && flag=-allow-passthrough
	"$work/fuseceiling" $flag "$work/b" "$work/mnt" >"$work/out" 2>&1 &
	pid=$!
	for _ in $(seq 50); do mountpoint -q "$work/mnt" && break; sleep 0.1; done
	sync; echo 3 >/proc/sys/vm/drop_caches
	strace -f -c -p "$pid" -o "$work/strace" 2>/dev/null &
	spid=$!
	sleep 1
	dd if="$work/mnt/big" of=/dev/null bs=1M status=none
	dd if=/dev/zero of="$work/mnt/w" bs=1M count=16 conv=fsync status=none
	sleep 0.5
	kill -INT "$spid"; wait "$spid" || true
	echo "== passthrough $mode: $(head -1 "$work/out")"
	grep -E '^ *[0-9.]+ .*(pread64|pwrite64|splice|read|write)$' "$work/strace" |
		awk '{print "   " $NF ": " $4 " calls"}' || echo "   no read/write/splice syscalls in the daemon"
	kill "$pid"; wait "$pid" || true
	pid=""
done
