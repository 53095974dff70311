"""sigstore-python's verdict on one Sigstore bundle signed with a managed key, for
tests/sigstore_clients.rs.

Usage: .venv/bin/python verify_python.py BUNDLE TRUSTED_ROOT KEY_PEM

sigstore-python (4.x) verifies only bundles signed with a Fulcio certificate: its public
`Bundle.from_json` refuses a bundle without one ("expected certificate in bundle") and its
`Verifier` takes the signing key from that certificate. This script records that refusal,
then runs the checks sigstore-python has that do not need a certificate, with its own code:

1. the bundle parses with the protobuf models sigstore-python reads bundles with
   (`sigstore_models`, which `Bundle.from_json` calls first);
2. the log entry is well-formed as sigstore-python requires (`sigstore.models.
   TransparencyLogEntry`: an inclusion proof with a checkpoint);
3. the entry verifies against the trusted root's logs (`TransparencyLogEntry._verify` with
   `TrustedRoot.rekor_keyring`, what `Verifier` calls): the RFC 6962 inclusion proof, the
   checkpoint signed by a trusted log key (found by the log ID's key hint) with the proof's
   root, and the SET over the entry when it has an integrated time (Rekor v1);
4. the DSSE signature over the PAE verifies with the given key (`sigstore.dsse._verify`,
   what `Verifier.verify_dsse` calls with the certificate's key).

and one check of its own, since sigstore-python's entry-body checks take the signer from a
certificate: the entry records this envelope and key, compared as those checks compare
(`dsse` 0.0.1: payload hash and [signature, PEM key]; `hashedrekord` 0.0.2: the entry
rebuilt from SHA-256 of the PAE, the signature and the key), with sigstore-python's models.

The underscore names are sigstore-python's private API; the version is pinned
(requirements.txt), so the test sees any change. Prints one JSON line and exits 0 when
every check passes; prints the failed check on stderr and exits 1 otherwise.
"""

import base64
import hashlib
import json
import sys

import rekor_types
import sigstore
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sigstore._internal.trust import KeyringPurpose
from sigstore.dsse import Envelope, _verify
from sigstore.errors import Error
from sigstore.models import Bundle, InvalidBundle, TransparencyLogEntry, TrustedRoot
from sigstore_models.bundle.v1 import Bundle as BundleModel
from sigstore_models.common import v1 as common_v1
from sigstore_models.rekor import v2


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def check_binding(entry: TransparencyLogEntry, envelope: Envelope, key) -> str:
    """Whether the entry records this envelope, signed by `key`."""
    kind = entry._inner.kind_version.kind
    version = entry._inner.kind_version.version
    body = entry._inner.canonicalized_body
    if (kind, version) == ("dsse", "0.0.1"):
        spec = rekor_types.Dsse.model_validate_json(body).spec.root
        payload_hash = hashlib.sha256(envelope._inner.payload).hexdigest()
        if spec.payload_hash.algorithm != rekor_types.dsse.Algorithm.SHA256:
            raise Error("the entry's payload hash is not SHA-256")
        if spec.payload_hash.value != payload_hash:
            raise Error("the entry records another payload")
        pem = key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        expected = [
            rekor_types.dsse.Signature(
                signature=b64(envelope.signature).decode(), verifier=b64(pem).decode()
            )
        ]
        if spec.signatures != expected:
            raise Error("the entry records another signature or key")
    elif (kind, version) == ("hashedrekord", "0.0.2"):
        der = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        expected = v2.entry.Entry(
            kind=kind,
            api_version=version,
            spec=v2.entry.Spec(
                hashed_rekord_v002=v2.hashedrekord.HashedRekordLogEntryV002(
                    data=common_v1.HashOutput(
                        algorithm=common_v1.HashAlgorithm.SHA2_256,
                        digest=b64(hashlib.sha256(envelope.pae()).digest()),
                    ),
                    signature=v2.verifier.Signature(
                        content=b64(envelope.signature),
                        verifier=v2.verifier.Verifier(
                            public_key=v2.verifier.PublicKey(raw_bytes=b64(der)),
                            key_details=common_v1.PublicKeyDetails.PKIX_ECDSA_P256_SHA_256,
                        ),
                    ),
                )
            ),
        )
        if v2.entry.Entry.from_json(body) != expected:
            raise Error("the entry records another envelope, signature or key")
    else:
        raise Error(f"unsupported entry {kind} {version} for a DSSE envelope")
    return f"{kind} {version}"


def main() -> int:
    if len(sys.argv) != 4:
        print("usage: verify_python.py BUNDLE TRUSTED_ROOT KEY_PEM", file=sys.stderr)
        return 2
    bundle_path, root_path, key_path = sys.argv[1:]
    raw = open(bundle_path, "rb").read()
    step = "bundle"
    try:
        # The public entry point: expected to refuse a key-signed bundle.
        try:
            Bundle.from_json(raw)
            public_api = "accepted"
        except InvalidBundle as e:
            public_api = f"refused: {e}"

        step = "bundle parse"
        model = BundleModel.from_json(raw)
        if len(model.verification_material.tlog_entries) != 1:
            raise Error("expected exactly one log entry")
        step = "log entry"
        entry = TransparencyLogEntry(model.verification_material.tlog_entries[0])
        step = "transparency log"
        keyring = TrustedRoot.from_file(root_path).rekor_keyring(KeyringPurpose.VERIFY)
        entry._verify(keyring)
        step = "signature"
        key = serialization.load_pem_public_key(open(key_path, "rb").read())
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise Error("sigstore-python's DSSE check takes an ECDSA key")
        envelope = Envelope(model.dsse_envelope)
        _verify(key, envelope)
        step = "binding"
        kind = check_binding(entry, envelope, key)
    except Exception as e:  # every refusal, whatever sigstore-python raises
        print(f"sigstore {sigstore.__version__} refused the bundle at {step}: {e}", file=sys.stderr)
        return 1
    print(
        json.dumps(
            {
                "client": f"sigstore {sigstore.__version__}",
                "verified": True,
                "public_bundle_api": public_api,
                "entry": kind,
                "set": bool(entry._inner.inclusion_promise and entry._inner.integrated_time),
                "checked": [
                    "bundle parse (sigstore_models)",
                    "log entry shape (TransparencyLogEntry)",
                    "inclusion proof, signed checkpoint and SET (TransparencyLogEntry._verify)",
                    "DSSE signature with the key (sigstore.dsse._verify)",
                    "entry records this envelope and key (this script)",
                ],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
