#!/usr/bin/env python3
"""Builds and changes a small TUF repository with python-tuf, for tests/trust_tuf.rs.

The repository has the four top-level roles, each with its own Ed25519 key, consistent
snapshots on, and the targets the test names. Layout of WORK:

    WORK/keys/<role>.pem       the private keys (PKCS#8 PEM)
    WORK/initial_root.json     root version 1, the root a client starts from
    WORK/content/<name>        the current content of each target
    WORK/repo/                 what the test serves over HTTP:
        N.root.json, timestamp.json, N.snapshot.json, N.targets.json,
        targets/<sha256>.<name>

Commands (each prints nothing on success):

    init WORK NAME=FILE...            a new repository serving those targets
    bump WORK [NAME=FILE...] [--expired-timestamp]
                                      new targets (with the files given replaced),
                                      snapshot and timestamp versions; the timestamp
                                      expired a day ago with --expired-timestamp
    tamper-targets WORK               changes one hash digit in the current targets
                                      metadata and keeps its old signature
    rotate-root WORK                  root version N+1 with new root and timestamp keys,
                                      signed by the old and the new root key, then a new
                                      timestamp signed by the new timestamp key

Needs python-tuf (`tuf`, 6.x or 7.x) and securesystemslib with pyca/cryptography.
"""

import hashlib
import json
import os
import sys
from datetime import datetime, timedelta, timezone

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (
    MetaFile,
    Metadata,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

ROLES = ("root", "timestamp", "snapshot", "targets")
SERIALIZER = JSONSerializer(compact=False)


def expiry(days):
    return datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=days)


def key_path(work, role, generation=0):
    suffix = "" if generation == 0 else f".{generation}"
    return os.path.join(work, "keys", f"{role}{suffix}.pem")


def new_signer(work, role, generation=0):
    signer = CryptoSigner.generate_ed25519()
    os.makedirs(os.path.join(work, "keys"), exist_ok=True)
    with open(key_path(work, role, generation), "wb") as f:
        f.write(signer.private_bytes)
    return signer


def load_signer(path):
    with open(path, "rb") as f:
        return CryptoSigner(load_pem_private_key(f.read(), password=None))


def current_signer(work, role):
    """The newest key of a role (rotations write role.1.pem, role.2.pem, ...)."""
    generation = 0
    while os.path.exists(key_path(work, role, generation + 1)):
        generation += 1
    return load_signer(key_path(work, role, generation))


def repo(work, *parts):
    return os.path.join(work, "repo", *parts)


def write(md, path):
    with open(path, "wb") as f:
        f.write(md.to_bytes(SERIALIZER))


def latest_root(work):
    version = 1
    while os.path.exists(repo(work, f"{version + 1}.root.json")):
        version += 1
    return Metadata[Root].from_file(repo(work, f"{version}.root.json"))


def parse_targets(args):
    out = {}
    for arg in args:
        name, path = arg.split("=", 1)
        with open(path, "rb") as f:
            out[name] = f.read()
    return out


def publish(work, files, previous=None, expired_timestamp=False):
    """Writes targets, snapshot and timestamp one version past `previous` (or version 1)."""
    version = 1 if previous is None else previous + 1
    os.makedirs(repo(work, "targets"), exist_ok=True)
    os.makedirs(os.path.join(work, "content"), exist_ok=True)

    targets = Metadata(Targets(version=version, expires=expiry(30)))
    for name, data in files.items():
        info = TargetFile.from_data(name, data, ["sha256"])
        targets.signed.targets[name] = info
        digest = info.hashes["sha256"]
        for path in (repo(work, "targets", f"{digest}.{name}"), os.path.join(work, "content", name)):
            with open(path, "wb") as f:
                f.write(data)
    targets.sign(current_signer(work, "targets"))
    write(targets, repo(work, f"{version}.targets.json"))

    # The snapshot pins the targets role by version only, so a changed targets file is
    # refused by its signature; the timestamp pins the snapshot by length and hash too.
    snapshot = Metadata(Snapshot(version=version, expires=expiry(30)))
    snapshot.signed.meta["targets.json"] = MetaFile(version=version)
    snapshot.sign(current_signer(work, "snapshot"))
    write(snapshot, repo(work, f"{version}.snapshot.json"))
    write_timestamp(work, version, expired_timestamp)


def write_timestamp(work, snapshot_version, expired=False, version=None):
    path = repo(work, "timestamp.json")
    if version is None:
        version = snapshot_version
        if os.path.exists(path):
            version = Metadata[Timestamp].from_file(path).signed.version + 1
    with open(repo(work, f"{snapshot_version}.snapshot.json"), "rb") as f:
        snapshot_bytes = f.read()
    timestamp = Metadata(Timestamp(version=version, expires=expiry(-1 if expired else 7)))
    timestamp.signed.snapshot_meta = MetaFile(
        version=snapshot_version,
        length=len(snapshot_bytes),
        hashes={"sha256": hashlib.sha256(snapshot_bytes).hexdigest()},
    )
    timestamp.sign(current_signer(work, "timestamp"))
    write(timestamp, path)


def current_targets(work):
    timestamp = Metadata[Timestamp].from_file(repo(work, "timestamp.json"))
    snapshot_version = timestamp.signed.snapshot_meta.version
    snapshot = Metadata[Snapshot].from_file(repo(work, f"{snapshot_version}.snapshot.json"))
    version = snapshot.signed.meta["targets.json"].version
    return version, repo(work, f"{version}.targets.json")


def cmd_init(work, args):
    signers = {role: new_signer(work, role) for role in ROLES}
    root = Metadata(Root(version=1, expires=expiry(365), consistent_snapshot=True))
    for role, signer in signers.items():
        root.signed.add_key(signer.public_key, role)
    root.sign(signers["root"])
    os.makedirs(repo(work), exist_ok=True)
    write(root, repo(work, "1.root.json"))
    write(root, os.path.join(work, "initial_root.json"))
    publish(work, parse_targets(args))


def cmd_bump(work, args):
    expired = "--expired-timestamp" in args
    replaced = parse_targets([a for a in args if a != "--expired-timestamp"])
    version, _ = current_targets(work)
    # From the script's own copies: the served targets metadata may have been tampered with.
    files = {}
    for name in os.listdir(os.path.join(work, "content")):
        with open(os.path.join(work, "content", name), "rb") as f:
            files[name] = f.read()
    files.update(replaced)
    publish(work, files, previous=version, expired_timestamp=expired)


def cmd_tamper_targets(work, _args):
    _, path = current_targets(work)
    with open(path) as f:
        doc = json.load(f)
    info = doc["signed"]["targets"]["trusted_root.json"]["hashes"]
    digest = info["sha256"]
    info["sha256"] = ("1" if digest[0] == "0" else "0") + digest[1:]
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)


def cmd_rotate_root(work, _args):
    old = latest_root(work)
    old_root_signer = current_signer(work, "root")
    generation = 1
    while os.path.exists(key_path(work, "root", generation)):
        generation += 1
    new_root_signer = new_signer(work, "root", generation)
    new_timestamp_signer = new_signer(work, "timestamp", generation)

    root = old.signed
    root.version += 1
    root.expires = expiry(365)
    for role, signer in (("root", new_root_signer), ("timestamp", new_timestamp_signer)):
        for keyid in list(root.roles[role].keyids):
            root.revoke_key(keyid, role)
        root.add_key(signer.public_key, role)
    rotated = Metadata(root)
    # Signed by the old root's threshold and the new root's threshold.
    rotated.sign(old_root_signer)
    rotated.sign(new_root_signer, append=True)
    write(rotated, repo(work, f"{root.version}.root.json"))

    timestamp = Metadata[Timestamp].from_file(repo(work, "timestamp.json"))
    write_timestamp(
        work,
        timestamp.signed.snapshot_meta.version,
        version=timestamp.signed.version + 1,
    )


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    command, work, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    commands = {
        "init": cmd_init,
        "bump": cmd_bump,
        "tamper-targets": cmd_tamper_targets,
        "rotate-root": cmd_rotate_root,
    }
    if command not in commands:
        sys.exit(f"unknown command {command!r}\n{__doc__}")
    commands[command](work, args)


if __name__ == "__main__":
    main()
