#!/usr/bin/env bash
# Installs the peers that benches/sigstore_verify.rs measures provd beside, at pinned versions,
# once: sigstore-js (@sigstore/verify, exactly as package-lock.json says) in node_modules/ and
# sigstore-python (requirements.txt) in .venv/. `just bench` runs it through that bench.
# Exits 1 when a peer could not be installed (no registry, no Node.js); the bench then prints
# provd's figures and names the missing peer.
set -u
cd "$(dirname "$0")"
status=0

if [ ! -d node_modules/@sigstore/verify ]; then
    # npm ci installs the lock file's versions and checks their integrity hashes.
    if ! npm ci --prefix . --no-audit --no-fund; then
        echo "setup.sh: sigstore-js could not be installed" >&2
        rm -rf node_modules
        status=1
    fi
fi

if [ ! -x .venv/bin/sigstore ]; then
    if ! { python3 -m venv .venv && .venv/bin/pip install --quiet --require-virtualenv -r requirements.txt; }; then
        echo "setup.sh: sigstore-python could not be installed" >&2
        # A half-made venv would pass the check above next time.
        rm -rf .venv
        status=1
    fi
fi

exit "$status"
