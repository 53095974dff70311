"""sigstore-python's own Rekor clients against provd's dev log, for
tests/stock_clients_dev_log.rs.

Usage: .venv/bin/python stock_rekor_python.py LOG_URL TRUSTED_ROOT

Makes a throwaway CA and a leaf certificate (ECDSA P-256) with `cryptography`, signs an
artifact and an in-toto statement with the leaf key, and sends what sigstore-python's
signing flow sends, through its own clients and request builders:

1. `RekorClient` (Rekor v1): a `hashedrekord` 0.0.1 entry and a `dsse` 0.0.1 entry, each
   with the certificate as verifier; the `dsse` request carries the computed fields as
   JSON `null` (pydantic's dump), which the script counts;
2. `RekorEntriesRetrieve` (`POST /api/v1/log/entries/retrieve/`, with its trailing slash):
   the hashedrekord entry found again from the proposed entry;
3. `RekorV2Client` (Rekor v2): a `hashedrekord` 0.0.2 entry over the artifact and one over
   the DSSE PAE (how sigstore-python logs DSSE on v2), the certificate as DER.

Each entry the client returns is then verified by sigstore-python's own code:
`TransparencyLogEntry._verify` with the trusted root's Rekor keyring (inclusion proof,
signed checkpoint and, for v1, the SET). Prints one JSON line (the entries as protobuf-JSON
TransparencyLogEntry, the certificate, the null counts) and exits 0; on any failure prints
the step and the error on stderr and exits 1.
"""

import base64
import datetime
import hashlib
import json
import sys
import uuid

import sigstore
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sigstore._internal.rekor.client import RekorClient
from sigstore._internal.rekor.client_v2 import RekorV2Client
from sigstore._internal.trust import KeyringPurpose
from sigstore.dsse import StatementBuilder, Subject, _sign
from sigstore.hashes import Hashed
from sigstore.models import TrustedRoot
from sigstore_models.common.v1 import HashAlgorithm
import rekor_types


def certificate_pair():
    """A CA and a leaf it issued; the leaf has a code-signing key usage, like Fulcio's."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "provd test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(minutes=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name("signer@provd.test")]), critical=True
        )
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CODE_SIGNING]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return ca, leaf, leaf_key


def count_nulls(value) -> int:
    if value is None:
        return 1
    if isinstance(value, dict):
        return sum(count_nulls(v) for v in value.values())
    if isinstance(value, list):
        return sum(count_nulls(v) for v in value)
    return 0


def main() -> int:
    if len(sys.argv) != 3:
        print("usage: stock_rekor_python.py LOG_URL TRUSTED_ROOT", file=sys.stderr)
        return 2
    url, root_path = sys.argv[1:]
    step = "setup"
    try:
        keyring = TrustedRoot.from_file(root_path).rekor_keyring(KeyringPurpose.VERIFY)
        ca, leaf, key = certificate_pair()
        artifact = f"an artifact signed for provd's dev log {uuid.uuid4()}".encode()
        hashed = Hashed(algorithm=HashAlgorithm.SHA2_256, digest=hashlib.sha256(artifact).digest())
        artifact_sig = key.sign(artifact, ec.ECDSA(hashes.SHA256()))
        statement = (
            StatementBuilder()
            .subjects([Subject(name="artifact", digest={"sha256": hashed.digest.hex()})])
            .predicate_type("https://provd.test/attestation/v1")
            .predicate({"nonce": str(uuid.uuid4())})
            .build()
        )
        envelope = _sign(key, statement)

        v1 = RekorClient(url)
        v2 = RekorV2Client(url)
        out = {"client": f"sigstore {sigstore.__version__}", "entries": [], "nulls": {}}

        def logged(name, api, entry):
            nonlocal step
            step = f"{name}: sigstore-python's verification of the entry"
            entry._verify(keyring)
            out["entries"].append(
                {"name": name, "api": api, "tle": json.loads(entry._inner.to_json())}
            )

        step = "v1 hashedrekord: RekorClient.create_entry"
        request = v1._build_hashed_rekord_request(hashed, artifact_sig, leaf)
        out["nulls"]["v1 hashedrekord"] = count_nulls(request)
        hashedrekord = v1.create_entry(request)
        logged("v1 hashedrekord", "v1", hashedrekord)

        step = "v1 dsse: RekorClient.create_entry"
        request = v1._build_dsse_request(envelope, leaf)
        out["nulls"]["v1 dsse"] = count_nulls(request)
        logged("v1 dsse", "v1", v1.create_entry(request))

        step = "v1 retrieve: RekorEntriesRetrieve.post (POST .../entries/retrieve/)"
        proposed = rekor_types.Hashedrekord.model_validate(
            v1._build_hashed_rekord_request(hashed, artifact_sig, leaf)
        )
        found = v1.log.entries.retrieve.post(proposed)
        if found is None:
            raise RuntimeError("the log did not find the hashedrekord entry")
        if found._inner.log_index != hashedrekord._inner.log_index:
            raise RuntimeError(
                f"retrieve found index {found._inner.log_index}, "
                f"expected {hashedrekord._inner.log_index}"
            )
        logged("v1 retrieve", "v1", found)

        step = "v2 hashedrekord: RekorV2Client.create_entry"
        request = v2._build_hashed_rekord_request(hashed, artifact_sig, leaf)
        logged("v2 hashedrekord", "v2", v2.create_entry(request))

        step = "v2 dsse (hashedrekord over the PAE): RekorV2Client.create_entry"
        request = v2._build_dsse_request(envelope, leaf)
        logged("v2 dsse", "v2", v2.create_entry(request))

        out["certificate_pem"] = leaf.public_bytes(serialization.Encoding.PEM).decode()
        out["ca_pem"] = ca.public_bytes(serialization.Encoding.PEM).decode()
    except Exception as e:  # every failure, whatever sigstore-python raises
        detail = e
        response = getattr(getattr(e, "__cause__", None), "response", None)
        if response is not None:
            detail = f"{e}: {response.text}"
        print(f"sigstore {sigstore.__version__} failed at {step}: {detail}", file=sys.stderr)
        return 1
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
