#!/usr/bin/env bash
# Runs every test: the Rust suite (unit + end-to-end on loopback), then the official
# OpenAI / Anthropic / Google SDKs against the built binary. No keys, no network
# beyond the package registries used to install the pinned SDKs the first time.
# The journal's PostgreSQL and S3 tests run against throwaway local servers that
# scripts/test-services.sh starts here (and stops on exit) when they are installed;
# otherwise those tests are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/test-services.sh
start_test_services

cargo test --workspace --locked

# The README's main command is `cargo run --release -- demo`: `cargo run` at the root
# must pick the bulwark binary (checked on the debug build cargo test just made).
cargo run --locked -q -- --version

# The SDK suite drives the debug binary that `cargo test` just built.
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
BULWARK_BIN="$PWD/target/debug/bulwark" .venv/bin/python -m pytest tests/python -q -p no:cacheprovider
