#!/usr/bin/env bash
# One command for the whole benchmark (bench/README.md): builds the release binaries,
# installs the LiteLLM proxy in bench/.venv-litellm (first run only), and taskset and
# nginx if missing, runs every case and the criterion micro-benchmarks, and writes
# bench/out/results.json and RESULTS.md (a full run also bench/RESULTS.md).
#
#   bench/run.sh            the full run, ~14 minutes (run it on a quiet machine)
#   bench/run.sh --quick    a smoke test of the harness, ~3.5 minutes
#
# Other options (passed to bench/run.py): --durability off,batched,sync,
# --no-litellm, --no-criterion, --halt-poll-ns N, --report-only.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v taskset >/dev/null || { apt-get update -qq && apt-get install -y -qq util-linux; }
# nginx: the second floor (README, "The floor"); Debian starts no daemon in a container.
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { apt-get update -qq && apt-get install -y -qq nginx-light; }
read -r load1 _ < /proc/loadavg
if awk -v l="$load1" 'BEGIN { exit !(l > 0.5) }'; then
  echo "warning: load average $load1: other work is running; absolute numbers will be off" >&2
fi
cargo build --release --locked -p bulwark -p bulwark-bench  # bulwark-loadgen, bulwark-passthrough
if [ ! -x bench/.venv-litellm/bin/litellm ]; then
  python3 -m venv bench/.venv-litellm
  bench/.venv-litellm/bin/pip install --quiet --disable-pip-version-check 'litellm[proxy]'
fi
exec python3 bench/run.py "$@"
