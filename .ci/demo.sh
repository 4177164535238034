#!/usr/bin/env bash
# demo.sh: the main job, end to end, on the embedded local KMS.
# Creates a throw-away keystore and CIPHERDIR under a temp dir, mounts,
# writes and reads a file, a directory, a symlink and an xattr, shows that
# CIPHERDIR holds only ciphertext (no plaintext content, name, symlink target
# or xattr anywhere in it) plus the wrapped-key xattr, prints
# `kmsfs info --json`, and unmounts.
# Exits non-zero on any failure; always cleans up.
set -euo pipefail

kmsfs=$(realpath "${KMSFS:-bin/kmsfs}")
work=$(mktemp -d "${TMPDIR:-/tmp}/kmsfs-demo.XXXXXX")
export KMSFS_KEYSTORE="$work/keystore"
cipher="$work/cipher"
plain="$work/plain"

cleanup() {
	if grep -qs " $plain " /proc/mounts; then
		"$kmsfs" unmount "$plain" 2>/dev/null || fusermount3 -u "$plain" 2>/dev/null || umount -l "$plain" || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT

step() {
	printf '\n$ %s\n' "$*"
	"$@"
}
fail() {
	echo "demo: FAILED: $*" >&2
	if [ -s "$work/kmsfs.log" ]; then
		echo "demo: daemon log:" >&2
		cat "$work/kmsfs.log" >&2
	fi
	exit 1
}

mkdir "$plain"
step "$kmsfs" init "$cipher"
step "$kmsfs" mount --log-file "$work/kmsfs.log" "$cipher" "$plain"
grep -qs " $plain fuse" /proc/mounts || fail "mount returned 0 but $plain is not mounted"

secret="kmsfs demo: attack at dawn $(date +%s)"
printf '\n$ echo %q > %s\n' "$secret" "$plain/hello.txt"
echo "$secret" >"$plain/hello.txt"
step cat "$plain/hello.txt"
[ "$(cat "$plain/hello.txt")" = "$secret" ] || fail "read back differs from what was written"
# Names, a symlink target and an extended attribute are encrypted too.
step mkdir "$plain/payroll-2026-q3"
step cp "$plain/hello.txt" "$plain/payroll-2026-q3/salaries.txt"
step ln -s payroll-2026-q3/salaries.txt "$plain/latest-salaries"
step setfattr -n user.classification -v confidential-demo-value "$plain/payroll-2026-q3/salaries.txt"

step ls -lR "$plain"
step ls -lR "$cipher"
echo
backing=$("$kmsfs" paths --encrypt "$cipher" hello.txt)
echo "# hello.txt is stored as $backing: a header (magic KMSF), then sealed chunks"
step od -A d -t x1z -N 96 "$cipher/$backing"
echo
echo "# no plaintext anywhere in CIPHERDIR: contents, names, symlink targets, xattr names and values"
for s in "attack at dawn" hello payroll salaries latest-salaries classification confidential-demo-value; do
	if grep -rqF -- "$s" "$cipher"; then
		fail "plaintext \"$s\" found in a file of CIPHERDIR"
	fi
	if find "$cipher" -name "*$s*" | grep -q .; then
		fail "plaintext \"$s\" found in a name in CIPHERDIR"
	fi
	if find "$cipher" -type l -printf '%l\n' | grep -qF -- "$s"; then
		fail "plaintext \"$s\" found in a symlink target in CIPHERDIR"
	fi
	if getfattr -R -h -d -m - -e text "$cipher" 2>/dev/null | grep -qF -- "$s"; then
		fail "plaintext \"$s\" found in an xattr in CIPHERDIR"
	fi
done
echo "# no plaintext in CIPHERDIR: ok"

echo
echo "# the wrapped data key lives in an xattr of the backing file ..."
step getfattr --absolute-names -n user.kmsfs.key -e hex "$cipher/$backing"
echo "# ... and is invisible through the mount:"
step getfattr --absolute-names -d -m - "$plain/hello.txt"
if getfattr -d -m - "$plain/hello.txt" 2>/dev/null | grep -q kmsfs; then
	fail "internal xattr visible through the mount"
fi
[ "$(getfattr --only-values -n user.classification "$plain/payroll-2026-q3/salaries.txt")" = confidential-demo-value ] ||
	fail "the encrypted xattr does not read back"

step "$kmsfs" info --json "$plain/hello.txt"
echo
echo "# the key lives in the local KMS keystore, outside CIPHERDIR"
step "$kmsfs" key list
step "$kmsfs" unmount "$plain"
grep -qs " $plain " /proc/mounts && fail "still mounted after unmount"

echo
step "$kmsfs" mount --log-file "$work/kmsfs.log" "$cipher" "$plain"
[ "$(cat "$plain/hello.txt")" = "$secret" ] || fail "content differs after remount"
echo "# remounted: content identical"
step "$kmsfs" unmount "$plain"

echo
echo "demo: ok"
