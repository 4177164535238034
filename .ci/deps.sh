#!/usr/bin/env bash
# deps.sh: make sure the OS tools the test suite needs are installed.
#   required: fuse3 (fusermount3, /dev/fuse use), attr (getfattr/setfattr),
#             acl (setfacl/getfacl: the POSIX ACL tests), fio,
#             rsync (copies of a CIPHERDIR that drop xattrs)
#             sqlite3 (the SQLite CLI: two processes through two mounts,
#             locking with fcntl), python3 (lock holders in the lock tests)
#             python3-cryptography (names/testdata/check_vectors.py, the second
#             construction of the names format vectors)
#   optional: awscli (aws); moto_server is only checked for
# As root, missing packages are installed with apt-get (after apt-get update).
# Otherwise a missing required package fails the script, with the list.
set -euo pipefail

# command → Debian package
declare -A pkg_of=([fusermount3]=fuse3 [getfattr]=attr [setfattr]=attr [setfacl]=acl [getfacl]=acl [fio]=fio [rsync]=rsync [sqlite3]=sqlite3 [python3]=python3)

missing=()
for cmd in fusermount3 getfattr setfattr setfacl getfacl fio rsync sqlite3 python3; do
	if ! command -v "$cmd" >/dev/null 2>&1; then
		p=${pkg_of[$cmd]}
		[[ " ${missing[*]-} " == *" $p "* ]] || missing+=("$p")
	fi
done
# The names vectors' second construction needs a python3 (on PATH or
# /usr/bin) whose cryptography package has AESSIV (Debian's has).
has_py_crypto() {
	local py
	for py in python3 /usr/bin/python3; do
		if command -v "$py" >/dev/null 2>&1 &&
			"$py" -c 'from cryptography.hazmat.primitives.ciphers.aead import AESSIV, AESGCM' >/dev/null 2>&1; then
			return 0
		fi
	done
	return 1
}
has_py_crypto || missing+=(python3-cryptography)

if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "deps: installing ${missing[*]}"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -q
		apt-get install -y -q --no-install-recommends "${missing[@]}"
	else
		echo "deps: missing packages: ${missing[*]}" >&2
		echo "deps: install them as root, e.g.: apt-get update && apt-get install -y ${missing[*]}" >&2
		exit 1
	fi
fi

# Optional: the AWS CLI, for the tests that drive `kmsfs keysvc serve` with
# it (they skip without it, or fail under CI=true). Installed from Debian as
# root when missing; otherwise only reported.
if ! command -v aws >/dev/null 2>&1; then
	if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "deps: installing awscli"
		export DEBIAN_FRONTEND=noninteractive
		[ ${#missing[@]} -gt 0 ] || apt-get update -q
		apt-get install -y -q --no-install-recommends awscli
	else
		echo "deps: note: the AWS CLI (Debian package awscli) is missing: its tests will skip (fail under CI=true)" >&2
	fi
fi
# moto_server (the third-party KMS emulator of the conformance suite) is a
# Python package that Debian does not ship: it cannot be installed here.
if ! command -v moto_server >/dev/null 2>&1; then
	echo "deps: note: moto_server is missing (pip package moto[server]); the moto conformance run will skip (fail under CI=true)" >&2
fi

if [ ! -e /dev/fuse ]; then
	echo "deps: /dev/fuse does not exist: FUSE mounts are impossible here (load the fuse module, or give the container /dev/fuse)" >&2
	exit 1
fi
echo "deps: ok (fuse3 attr acl fio rsync sqlite3 python3-cryptography present, /dev/fuse exists)"
