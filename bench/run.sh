#!/usr/bin/env bash
# One command for the whole benchmark: builds release binaries, installs the LiteLLM
# proxy in bench/.venv-litellm (first run only), installs taskset/wrk if missing, runs
# every case, writes bench/out/results.json. Pass --quick for a smoke run.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v taskset >/dev/null || { apt-get update -qq && apt-get install -y -qq util-linux; }
cargo build --release --locked -p bulwark -p bulwark-bench
if [ ! -x bench/.venv-litellm/bin/litellm ]; then
  python3 -m venv bench/.venv-litellm
  bench/.venv-litellm/bin/pip install --quiet --disable-pip-version-check 'litellm[proxy]'
fi
exec python3 bench/run.py "$@"
