#!/usr/bin/env bash
# Instructions per proxied request, counted by valgrind's callgrind: a number that,
# unlike CPU time on a shared virtual machine, does not move with the neighbours, so
# two builds compare within a fraction of a percent (bench/PROFILE.md).
#
#   bench/profile.sh [json|stream] [requests] [off|batched|sync]
#
# Starts the mock and `bulwark serve` (under callgrind, instrumentation off), sends a
# few warm-up requests, then counts user-space instructions over `requests` requests
# sent one after another on one keep-alive connection. Prints instructions per request
# and leaves the profile in bench/out/callgrind.out (read it with
# `callgrind_annotate --inclusive=yes bench/out/callgrind.out | less`).
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:-json}
requests=${2:-1000}
durability=${3:-off}
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind; }
cargo build --release --locked -p bulwark
bin=target/release/bulwark
out=bench/out
mkdir -p "$out"
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mock_port=$(port)
gw_port=$(port)
"$bin" mock --listen "127.0.0.1:$mock_port" --name bench >/dev/null 2>&1 &
pids+=($!)
cat > "$work/bulwark.yaml" <<YAML
listen: 127.0.0.1:$gw_port
journal:
  path: $work/journal.db
  durability: "$durability"
providers:
  - {name: up, kind: openai, api_key: sk-bench, base_url: "http://127.0.0.1:$mock_port/v1"}
routes:
  - model: chat
    targets:
      - {provider: up, model: gpt-bench}
YAML
rm -f "$out"/callgrind.out*
BULWARK_LOG=error valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out" \
  --instr-atstart=no "$bin" serve --config "$work/bulwark.yaml" >"$work/valgrind.log" 2>&1 &
vg=$!
pids+=($vg)
python3 - "$kind" "$requests" "$gw_port" "$vg" <<'PY'
import http.client, json, subprocess, sys, time
kind, n, port, vg = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
body = {"model": "chat", "messages": [{"role": "user", "content": "Say hello to the benchmark"}]}
if kind == "stream":
    body["stream"] = True
body = json.dumps(body).encode()
deadline = time.time() + 120
while True:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        c.request("GET", "/healthz"); c.getresponse().read()
        break
    except OSError:
        if time.time() > deadline:
            sys.exit("bulwark did not start under valgrind")
        time.sleep(0.2)
def send(count):
    for _ in range(count):
        c.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
        r = c.getresponse(); r.read()
        if r.status != 200:
            sys.exit(f"status {r.status}")
send(20)
subprocess.run(["callgrind_control", "-i", "on", vg], check=True, capture_output=True)
send(n)
subprocess.run(["callgrind_control", "-i", "off", vg], check=True, capture_output=True)
subprocess.run(["callgrind_control", "-d", vg], check=True, capture_output=True)
PY
sleep 1
# The dump requested above is the file with the counts (the final dump at exit is empty).
profile=$(ls -S "$out"/callgrind.out* | head -1)
total=$(callgrind_annotate "$profile" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
cp "$profile" "$out/callgrind.out.keep"
echo "$kind, journal $durability: $((total / requests)) instructions per request (user space, $requests requests; profile: $out/callgrind.out.keep)"
