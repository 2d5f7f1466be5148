#!/usr/bin/env python3
"""Bulwark's overhead benchmark: direct vs through Bulwark vs through the LiteLLM proxy.

Everything runs on this machine, on loopback, in one run:
  - upstream: `bulwark mock` (deterministic answers, no delay), pinned to CPU 0;
  - load: `bulwark-loadgen` (closed loop, N connections), pinned to CPU 0;
  - the gateway under test (Bulwark or LiteLLM), pinned to CPU 1, alone on its core.
Per case it records requests/s, latency and time-to-first-byte percentiles, the
gateway's CPU time per request (from /proc/PID/stat) and its peak RSS (VmHWM, reset
before each case through /proc/PID/clear_refs).

Usage: bench/run.sh [--quick]   (writes bench/out/results.json and prints a table)
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / "target" / "release" / "bulwark"
LOADGEN = ROOT / "target" / "release" / "bulwark-loadgen"
OUT = ROOT / "bench" / "out"
LITELLM = ROOT / "bench" / ".venv-litellm" / "bin" / "litellm"
TICK = os.sysconf("SC_CLK_TCK")
# LiteLLM refuses to start without a master key; this one exists only in this run.
LITELLM_KEY = "sk-bench-" + os.urandom(16).hex()

BODY_JSON = {"model": "chat", "messages": [{"role": "user", "content": "Say hello to the benchmark"}]}
BODY_STREAM = dict(BODY_JSON, stream=True)


def free_port():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_http(url, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except Exception:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def start(cmd, cpu, env=None, log=None):
    return subprocess.Popen(
        ["taskset", "-c", str(cpu)] + cmd,
        stdout=log or subprocess.DEVNULL,
        stderr=log or subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )


def stop(proc):
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except Exception:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except Exception:
            pass


def descendants(pid):
    """pid and all its descendants (LiteLLM forks workers)."""
    pids = [pid]
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    for child in out.split():
        pids += descendants(int(child))
    return pids


def cpu_seconds(pid):
    total = 0.0
    for p in descendants(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICK
        except OSError:
            pass
    return total


def peak_rss_mib(pid):
    total = 0
    for p in descendants(pid):
        try:
            m = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{p}/status").read_text())
            total += int(m.group(1)) if m else 0
        except OSError:
            pass
    return total / 1024


def reset_peak(pid):
    for p in descendants(pid):
        try:
            Path(f"/proc/{p}/clear_refs").write_text("5")
        except OSError:
            pass


def load(url, body, concurrency, seconds, warmup, headers=(), hold=False):
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(body, f)
    cmd = ["taskset", "-c", "0", str(LOADGEN), "--url", url, "--body", f.name,
           "--concurrency", str(concurrency), "--duration", str(seconds), "--warmup", str(warmup)]
    for h in headers:
        cmd += ["--header", h]
    if hold:
        cmd.append("--hold")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + warmup + 120)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bulwark_config(mock_url, durability, data_dir, failing=False):
    journal = ""
    if durability != "off":
        journal = f"journal:\n  path: {data_dir}/journal-{durability}.db\n  durability: {durability}\n  flush_interval: 50ms\n"
    route = "routes:\n  - model: chat\n    targets:\n      - {provider: up, model: gpt-bench}\n"
    if failing:
        route = ("routes:\n  - model: chat\n    retry: {max_attempts: 1}\n    targets:\n"
                 "      - {provider: flaky, model: gpt-flaky}\n      - {provider: up, model: gpt-bench}\n")
    return (f"listen: 127.0.0.1:0\n{journal}providers:\n"
            f"  - {{name: up, kind: openai, api_key: sk-bench, base_url: \"{mock_url}/v1\"}}\n"
            f"  - {{name: flaky, kind: openai, api_key: sk-bench, base_url: \"{mock_url}/v1\"}}\n"
            + route)


def run_case(results, name, target, proc, url, body, concurrency, seconds, warmup, headers=()):
    reset_peak(proc.pid) if proc else None
    before = cpu_seconds(proc.pid) if proc else 0.0
    r = load(url, body, concurrency, seconds, warmup, headers)
    after = cpu_seconds(proc.pid) if proc else 0.0
    # CPU is measured over warm-up + measured window; divide by all requests sent in both.
    total_requests = r["requests"] * (seconds + warmup) / seconds if r["requests"] else 0
    r.update(case=name, target=target,
             cpu_us_per_request=((after - before) / total_requests * 1e6) if proc and total_requests else None,
             peak_rss_mib=peak_rss_mib(proc.pid) if proc else None)
    results.append(r)
    print(f"{name:<34} {target:<18} c={concurrency:<4} rps={r['rps']:>9.1f} "
          f"p50={r['latency_us']['p50']:>7}us p99={r['latency_us']['p99']:>7}us "
          f"ttfb50={r['ttfb_us']['p50']:>7}us err={r['errors']:<4} "
          f"cpu/req={r['cpu_us_per_request'] or 0:>8.1f}us rss={r['peak_rss_mib'] or 0:>6.1f}MiB", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="short runs (smoke test of the harness)")
    ap.add_argument("--no-litellm", action="store_true")
    ap.add_argument("--durability", default="off,batched,sync", help="journal modes to measure")
    args = ap.parse_args()
    seconds, warmup = (2, 1) if args.quick else (8, 2)
    OUT.mkdir(parents=True, exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="bulwark-bench-"))
    logs = open(OUT / "processes.log", "w")

    mock_port = free_port()
    mock = start([str(BIN), "mock", "--listen", f"127.0.0.1:{mock_port}", "--name", "bench"], 0, log=logs)
    mock_url = f"http://127.0.0.1:{mock_port}"
    wait_http(mock_url + "/_mock/health")
    results = []
    procs = []
    try:
        direct = mock_url + "/v1/chat/completions"
        for c in (1, 50, 500):
            run_case(results, "json", "direct", None, direct, dict(BODY_JSON, model="gpt-bench"), c, seconds, warmup)
            run_case(results, "stream", "direct", None, direct, dict(BODY_STREAM, model="gpt-bench"), c, seconds, warmup)

        for durability in args.durability.split(","):
            cfg = data_dir / f"bulwark-{durability}.yaml"
            cfg.write_text(bulwark_config(mock_url, durability, data_dir))
            port = free_port()
            gw = start([str(BIN), "serve", "--config", str(cfg), "--listen", f"127.0.0.1:{port}"], 1,
                       env=dict(os.environ, BULWARK_LOG="warn"), log=logs)
            procs.append(gw)
            wait_http(f"http://127.0.0.1:{port}/healthz")
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            concurrencies = (1, 50, 500) if durability == "off" else (1, 50)
            for c in concurrencies:
                run_case(results, "json", f"bulwark/{durability}", gw, url, BODY_JSON, c, seconds, warmup)
                run_case(results, "stream", f"bulwark/{durability}", gw, url, BODY_STREAM, c, seconds, warmup)
            if durability == "off":
                # 1,000 concurrent slow streams: the mock answers 200 tokens, 50 ms apart.
                urllib.request.urlopen(urllib.request.Request(
                    mock_url + "/_mock/behavior", method="PUT", data=json.dumps(
                        {"token_delay_ms": 50, "reply_tokens": 200}).encode(),
                    headers={"content-type": "application/json"})).read()
                reset_peak(gw.pid)
                held = load(url, BODY_STREAM, 1000, 8, 0, hold=True)
                held.update(case="1000 slow streams", target="bulwark/off", peak_rss_mib=peak_rss_mib(gw.pid))
                results.append(held)
                print(f"1000 slow streams: opened={held['opened']} errors={held['errors']} peak_rss={held['peak_rss_mib']:.1f}MiB", flush=True)
                urllib.request.urlopen(urllib.request.Request(
                    mock_url + "/_mock/reset", method="POST")).read()
            stop(gw)

        # The failover path: the primary fails half the time (a probabilistic 503).
        cfg = data_dir / "bulwark-failover.yaml"
        cfg.write_text(bulwark_config(mock_url, "off", data_dir, failing=True))
        urllib.request.urlopen(urllib.request.Request(
            mock_url + "/_mock/faults", method="POST",
            data=json.dumps({"fault": {"kind": "status", "status": 503}, "model": "gpt-flaky", "probability": 0.5}).encode(),
            headers={"content-type": "application/json"})).read()
        port = free_port()
        gw = start([str(BIN), "serve", "--config", str(cfg), "--listen", f"127.0.0.1:{port}"], 1,
                   env=dict(os.environ, BULWARK_LOG="error"), log=logs)
        procs.append(gw)
        wait_http(f"http://127.0.0.1:{port}/healthz")
        run_case(results, "json, primary fails 50%", "bulwark/off", gw,
                 f"http://127.0.0.1:{port}/v1/chat/completions", BODY_JSON, 50, seconds, warmup)
        stop(gw)
        urllib.request.urlopen(urllib.request.Request(mock_url + "/_mock/reset", method="POST")).read()

        if not args.no_litellm and LITELLM.exists():
            cfg = data_dir / "litellm.yaml"
            cfg.write_text(
                "model_list:\n  - model_name: chat\n    litellm_params:\n"
                f"      model: openai/gpt-bench\n      api_base: {mock_url}/v1\n      api_key: sk-bench\n")
            port = free_port()
            env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_TELEMETRY_DISABLED="true",
                       LITELLM_LOG="ERROR", LITELLM_MASTER_KEY=LITELLM_KEY)
            lite = start([str(LITELLM), "--config", str(cfg), "--port", str(port), "--host", "127.0.0.1",
                          "--num_workers", "1"], 1, env=env, log=logs)
            procs.append(lite)
            wait_http(f"http://127.0.0.1:{port}/health/liveliness", timeout=180)
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            for c in (1, 50, 500):
                run_case(results, "json", "litellm", lite, url, BODY_JSON, c, seconds, warmup,
                         headers=[f"authorization: Bearer {LITELLM_KEY}"])
                run_case(results, "stream", "litellm", lite, url, BODY_STREAM, c, seconds, warmup,
                         headers=[f"authorization: Bearer {LITELLM_KEY}"])
            stop(lite)
    finally:
        for p in procs:
            stop(p)
        stop(mock)
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?"),
        "cores": os.cpu_count(),
        "seconds_per_case": seconds,
        "warmup": warmup,
    }
    (OUT / "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    print(f"\nwrote {OUT / 'results.json'}")


if __name__ == "__main__":
    sys.exit(main())
