#!/usr/bin/env python3
"""Second construction of names/FORMAT.md (kmsfs tree format v2 names).

Written from FORMAT.md, not from the Go package: recomputes every vector of
vectors.json with the Python `cryptography` package (HKDF, AESSIV, AESGCM,
HMAC) and checks it byte for byte, then decrypts it back. Prints
"vectors ok" and exits 0 when every vector matches; exits 1 otherwise.

    python3 names/testdata/check_vectors.py names/testdata/vectors.json
"""
import base64
import hashlib
import hmac
import json
import struct
import sys

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION = 2
FAILURES = []


def check(what, got, want):
    if got != want:
        FAILURES.append(f"{what}: got {got!r}, want {want!r}")


def hkdf(key, label, n):
    # FORMAT.md "Keys": HKDF-SHA256, empty salt, info = label.
    return HKDF(algorithm=hashes.SHA256(), length=n, salt=None, info=label.encode()).derive(key)


def b64(b):
    # FORMAT.md "Encoding": base64url (RFC 4648 §5) without '=' padding.
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def unb64(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def pad16(b):
    # FORMAT.md "Padding": PKCS#7 to a multiple of 16 (1..16 bytes of value n).
    n = 16 - len(b) % 16
    return b + bytes([n]) * n


def unpad16(b):
    n = b[-1]
    assert 1 <= n <= 16 and b[-n:] == bytes([n]) * n, "bad padding"
    return b[:-n]


def sha256_b64(b):
    return b64(hashlib.sha256(b).digest())


def main(path):
    with open(path) as f:
        v = json.load(f)
    key = bytes.fromhex(v["names_key"])
    k_names = hkdf(key, "kmsfs v2 entry names", 64)
    k_xnames = hkdf(key, "kmsfs v2 xattr names", 64)
    k_targets = hkdf(key, "kmsfs v2 symlink targets", 32)
    k_xvalues = hkdf(key, "kmsfs v2 xattr values", 32)
    k_dirids = hkdf(key, "kmsfs v2 directory ids", 32)
    sk = v["subkeys"]
    check("subkey entry_names", k_names.hex(), sk["entry_names"])
    check("subkey xattr_names", k_xnames.hex(), sk["xattr_names"])
    check("subkey symlink_targets", k_targets.hex(), sk["symlink_targets"])
    check("subkey xattr_values", k_xvalues.hex(), sk["xattr_values"])
    check("subkey directory_ids", k_dirids.hex(), sk["directory_ids"])

    # Directory ID file: "KMSD" ‖ uint16 2 ‖ ID ‖ HMAC-SHA256(k, label ‖ first 22 bytes).
    dir_id = bytes.fromhex(v["dir_id"])
    fields = b"KMSD" + struct.pack(">H", VERSION) + dir_id
    mac = hmac.new(k_dirids, b"kmsfs v2 directory id" + fields, hashlib.sha256).digest()
    check("dir_id_file", (fields + mac).hex(), v["dir_id_file"])

    # Entry names: AES-SIV(k, pad(name), AD = label ‖ dir ID), base64url.
    siv = AESSIV(k_names)
    for e in v["names"]:
        name = bytes.fromhex(e["name_hex"])
        ad = b"kmsfs v2 entry name" + dir_id
        encoded = b64(siv.encrypt(pad16(name), [ad]))
        check(f"encoded {name[:20]!r}", encoded, e["encoded"])
        if len(encoded) <= 255:
            check(f"backing {name[:20]!r}", encoded, e["backing"])
            check(f"no sidecar {name[:20]!r}", e.get("sidecar", ""), "")
        else:
            hashed = "kmsfs.long." + sha256_b64(encoded.encode())
            check(f"hashed {name[:20]!r}", hashed, e["backing"])
            check(f"sidecar name {name[:20]!r}", hashed + ".name", e["sidecar_name"])
            sidecar = b"KMSL" + struct.pack(">H", VERSION) + encoded.encode()
            check(f"sidecar {name[:20]!r}", sidecar.hex(), e["sidecar"])
        check(f"decrypt {name[:20]!r}", unpad16(siv.decrypt(unb64(encoded), [ad])), name)

    # Symlink targets: blob = 0x02 ‖ nonce ‖ AES-GCM(k, nonce, pad(target), AD = label).
    gcm = AESGCM(k_targets)
    for e in v["targets"]:
        target = bytes.fromhex(e["target_hex"])
        nonce = bytes.fromhex(e["nonce"])
        blob = bytes([VERSION]) + nonce + gcm.encrypt(nonce, pad16(target), b"kmsfs v2 symlink target")
        short = b64(blob)
        if len(short) <= 1023:
            check(f"link {len(target)}", short, e["link"])
        else:
            file = b"KMST" + struct.pack(">H", VERSION) + blob
            ref = sha256_b64(file)
            check(f"long link {len(target)}", "kmsfs.target." + ref, e["link"])
            check(f"file name {len(target)}", ref, e["file_name"])
            check(f"file {len(target)}", file.hex(), e["file"])
        check(f"decrypt target {len(target)}",
              unpad16(gcm.decrypt(blob[1:13], blob[13:], b"kmsfs v2 symlink target")), target)

    # Extended attributes.
    xsiv = AESSIV(k_xnames)
    xgcm = AESGCM(k_xvalues)
    for e in v["xattrs"]:
        obj = bytes.fromhex(e["object_id"])
        name = e["name"].encode()
        assert name.startswith(b"user.")
        encoded = b64(xsiv.encrypt(pad16(name[5:]), [b"kmsfs v2 xattr name" + obj]))
        if len("user.kmsfs.x.") + len(encoded) <= 255:
            backing, carried = "user.kmsfs.x." + encoded, b""
        else:
            backing, carried = "user.kmsfs.h." + sha256_b64(encoded.encode()), encoded.encode()
        check(f"xattr backing {e['name'][:20]}", backing, e["backing"])
        nonce = bytes.fromhex(e["nonce"])
        value = bytes.fromhex(e["value"])
        ad = b"kmsfs v2 xattr value" + obj + name
        blob = bytes([VERSION]) + struct.pack(">H", len(carried)) + carried + nonce + xgcm.encrypt(nonce, value, ad)
        check(f"xattr blob {e['name'][:20]}", blob.hex(), e["blob"])
        check(f"xattr decrypt {e['name'][:20]}", xgcm.decrypt(nonce, blob[15 + len(carried):], ad), value)

    if FAILURES:
        print("\n".join(FAILURES))
        print(f"{len(FAILURES)} vector mismatches")
        return 1
    print(f"vectors ok: {len(v['names'])} names, {len(v['targets'])} targets, {len(v['xattrs'])} xattrs, dir ID file, 5 subkeys")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "vectors.json"))
