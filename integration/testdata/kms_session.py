"""Drive `kmsfs keysvc serve` with boto3, as an application would drive AWS KMS.

Run by integration/boto3_test.go with the endpoint in KMSFS_KMS_ENDPOINT and
the credential in the usual AWS_ environment variables. Every step asserts;
the script prints "ok <step>" lines and exits non-zero on the first failure.
"""

import os
import sys

import boto3
import botocore
from botocore.exceptions import ClientError

ENDPOINT = os.environ["KMSFS_KMS_ENDPOINT"]


def client(**config):
    return boto3.client(
        "kms",
        endpoint_url=ENDPOINT,
        region_name="eu-central-1",
        config=botocore.config.Config(retries={"max_attempts": 1}, **config),
    )


def expect_error(code, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except ClientError as e:
        got = e.response["Error"]["Code"]
        assert got == code, f"want {code}, got {got}: {e}"
        return e
    raise AssertionError(f"want {code}, the call succeeded")


def step(name):
    print("ok", name, flush=True)


kms = client()

key = kms.create_key(Description="boto3 session")["KeyMetadata"]
key_id, arn = key["KeyId"], key["Arn"]
assert key["KeyState"] == "Enabled" and key["KeySpec"] == "SYMMETRIC_DEFAULT", key
assert key["CreationDate"].year >= 2024, key["CreationDate"]
step("create-key")

kms.create_alias(AliasName="alias/boto3", TargetKeyId=key_id)
aliases = kms.list_aliases(KeyId=key_id)["Aliases"]
assert [a["AliasName"] for a in aliases] == ["alias/boto3"], aliases
step("create-alias")

dk = kms.generate_data_key(KeyId="alias/boto3", KeySpec="AES_256")
assert len(dk["Plaintext"]) == 32 and dk["KeyId"] == arn, dk["KeyId"]
pre_blob, pre_material = dk["CiphertextBlob"], dk["KeyMaterialId"]
out = kms.decrypt(CiphertextBlob=pre_blob)
assert out["Plaintext"] == dk["Plaintext"] and out["KeyId"] == arn
step("generate-data-key + decrypt")

ctx = {"kmsfs:fs": "00112233", "kmsfs:file": "44556677"}
enc = kms.encrypt(KeyId=key_id, Plaintext=b"secret message", EncryptionContext=ctx)
out = kms.decrypt(CiphertextBlob=enc["CiphertextBlob"], EncryptionContext=dict(reversed(list(ctx.items()))))
assert out["Plaintext"] == b"secret message"
e = expect_error("InvalidCiphertextException", kms.decrypt, CiphertextBlob=enc["CiphertextBlob"],
                 EncryptionContext={"kmsfs:fs": "00112233"})
assert b"secret" not in str(e).encode()
# The {ab: c} / {a: bc} collision must not decrypt.
enc2 = kms.encrypt(KeyId=key_id, Plaintext=b"x", EncryptionContext={"ab": "c"})
expect_error("InvalidCiphertextException", kms.decrypt, CiphertextBlob=enc2["CiphertextBlob"],
             EncryptionContext={"a": "bc"})
expect_error("ValidationException", kms.encrypt, KeyId=key_id, Plaintext=b"p" * 4097)
step("encrypt/decrypt with context")

kms.rotate_key_on_demand(KeyId=key_id)
rot = kms.list_key_rotations(KeyId=key_id)["Rotations"]
assert len(rot) == 1 and rot[0]["RotationType"] == "ON_DEMAND", rot
out = kms.decrypt(CiphertextBlob=pre_blob, KeyId=arn)
assert out["Plaintext"] == dk["Plaintext"] and out["KeyMaterialId"] == pre_material
assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["CurrentKeyMaterialId"] != pre_material
step("rotate-key-on-demand + pre-rotation decrypt")

re = kms.re_encrypt(CiphertextBlob=pre_blob, DestinationKeyId="alias/boto3")
assert re["SourceKeyMaterialId"] == pre_material and re["DestinationKeyMaterialId"] != pre_material, re
assert kms.decrypt(CiphertextBlob=re["CiphertextBlob"])["Plaintext"] == dk["Plaintext"]
other = kms.create_key()["KeyMetadata"]
expect_error("IncorrectKeyException", kms.decrypt, CiphertextBlob=pre_blob, KeyId=other["Arn"])
step("re-encrypt")

kms.disable_key(KeyId=key_id)
expect_error("DisabledException", kms.decrypt, CiphertextBlob=pre_blob)
kms.enable_key(KeyId=key_id)
step("disable-key")

sched = kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
assert sched["KeyState"] == "PendingDeletion" and sched["PendingWindowInDays"] == 7, sched
expect_error("KMSInvalidStateException", kms.generate_data_key, KeyId=key_id, NumberOfBytes=16)
kms.cancel_key_deletion(KeyId=key_id)
assert kms.describe_key(KeyId="alias/boto3")["KeyMetadata"]["KeyState"] == "Disabled"
kms.enable_key(KeyId=key_id)
step("schedule/cancel deletion")

expect_error("InvalidCiphertextException", kms.decrypt, CiphertextBlob=b"\x00" * 200)
expect_error("InvalidCiphertextException", kms.decrypt, CiphertextBlob=pre_blob[:40])
expect_error("NotFoundException", kms.describe_key, KeyId="alias/nope")
step("errors")

unsigned = client(signature_version=botocore.UNSIGNED)
expect_error("MissingAuthenticationTokenException", unsigned.list_keys)
bad = boto3.client("kms", endpoint_url=ENDPOINT, region_name="eu-central-1",
                   aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"], aws_secret_access_key="x" * 40)
expect_error("InvalidSignatureException", bad.list_keys)
step("unsigned and badly signed requests refused")

print("ALL OK")
sys.exit(0)
