# provd's entry points. `just ci` runs exactly what CI runs.

# List the recipes.
default:
    @just --list

# Start PostgreSQL, Redis and NATS JetStream on localhost if they are down.
services:
    bash .ci/services

# Run the whole test suite (the README's test command).
test: services
    cargo test --workspace

# Format check and clippy with warnings as errors.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Exactly what CI runs.
ci:
    bash .ci/run

# Benchmarks: each prints our figure beside a baseline measured in the same run
# (chunking, merkle, provcache, ledger, and the same paths in embedded mode).
# sigstore_verify: bundle verification beside sigstore-js and sigstore-python, installed by benches/peer/setup.sh.
bench:
    cargo bench --workspace

# End-to-end load (issue 20): the real provd binary over HTTP on loopback, embedded and
# distributed (skipped when the services are down): cache hits, misses, writes and a mixed
# read/write/invalidate load for PROVD_LOAD_SECONDS (60); requests/s, p50, p99, errors and
# provd's RSS beside the same HTTP stack answering a constant body, in the same run.
load:
    cargo bench --bench load

# The chaos suite (issue 19, item 9; not part of `test`): starts its own PostgreSQL, Redis
# and NATS on free ports, runs the real provd binary through faults in both modes while a
# bounded client writes, reads and invalidates, prints a table of acknowledged vs durable
# writes and invalidations, and fails on any loss. PROVD_CHAOS_PROFILE=full holds the
# outages longer (PostgreSQL stopped 30 s); the default is short.
chaos:
    cargo test --test chaos -- --ignored --nocapture --test-threads=1

# Run the service embedded (SQLite in ./provd-data, in-process cache and bus): no services.
run:
    cargo run --release -- serve

# Run the service against PostgreSQL, Redis and NATS on localhost.
run-distributed: services
    PROVD_DATABASE_URL=postgres://postgres@127.0.0.1:5432/provd PROVD_REDIS_URL=redis://127.0.0.1:6379 PROVD_NATS_URL=nats://127.0.0.1:4222 cargo run --release -- serve
