#!/usr/bin/env python3
"""Bulwark's benchmark: direct vs through Bulwark vs through the LiteLLM proxy, plus the
criterion micro-benchmarks. What is measured and how to read it: bench/README.md.

Everything runs on this machine, on loopback, in one run:
  - upstream: `bulwark mock` (deterministic answers, no delay), pinned to CPU 0;
  - load: `bulwark-loadgen` (closed loop, N connections), pinned to CPU 0;
  - the gateway under test (Bulwark or LiteLLM), pinned to CPU 1, alone on its core
    ("split" topology); the concurrency-1 latency cases also run with all three on
    CPU 0 ("one-core") and, on a KVM guest whose guest halt polling is off, split
    again with it on ("split+haltpoll"), see README;
  - in each topology, the concurrency-1 cases also through `bulwark-passthrough`, the
    thinnest hyper proxy, and through nginx as a plain reverse proxy: the floor any
    proxy pays for the extra hop (README, "The floor").
Per case it records requests/s, latency and time-to-first-byte percentiles, errors,
the gateway's CPU time per request (from /proc/PID/stat, over every request the case
sent, warm-up included) and its peak RSS (VmHWM, reset before each case through
/proc/PID/clear_refs).

Usage: bench/run.sh [--quick] [--durability off,batched,sync] [--no-litellm]
                    [--no-criterion] [--halt-poll-ns N] [--report-only]
Writes bench/out/results.json and bench/out/RESULTS.md; a full run (not --quick)
also writes bench/RESULTS.md.
"""

import argparse
import glob
import json
import os
import platform
import re
import shutil
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
PASSTHROUGH = ROOT / "target" / "release" / "bulwark-passthrough"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
OUT = ROOT / "bench" / "out"
LITELLM = ROOT / "bench" / ".venv-litellm" / "bin" / "litellm"
TICK = os.sysconf("SC_CLK_TCK")
# LiteLLM refuses to start without a master key; this one exists only in this run.
LITELLM_KEY = "sk-bench-" + os.urandom(16).hex()

BODY_JSON = {"model": "chat", "messages": [{"role": "user", "content": "Say hello to the benchmark"}]}
BODY_STREAM = dict(BODY_JSON, stream=True)
CONCURRENCY = (1, 50, 500)
UPSTREAM_CPU, GATEWAY_CPU = 0, 1
# The haltpoll cpuidle governor's limit on how long an idle vCPU polls before it halts
# (Linux Documentation/virt/guest-halt-polling.rst; the kernel's default is 200000).
HALT_POLL = Path("/sys/module/haltpoll/parameters/guest_halt_poll_ns")
TOPOLOGIES = ("split", "split+haltpoll", "one-core")

# The issue's targets (issue 7), checked in RESULTS.md.
TARGET_ADDED_P50_US = 100
TARGET_ADDED_P99_US = 1000
TARGET_CPU_US = 60
TARGET_LITELLM_RATIO = 100
TARGET_SYNC_RPS = 5000
TARGET_STREAMS_MIB = 64


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


def mock_call(mock_url, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(mock_url + path, method=method, data=data,
                                 headers={"content-type": "application/json"})
    urllib.request.urlopen(req).read()


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


def status_kib(pid, field):
    total = 0
    for p in descendants(pid):
        try:
            m = re.search(rf"{field}:\s+(\d+) kB", Path(f"/proc/{p}/status").read_text())
            total += int(m.group(1)) if m else 0
        except OSError:
            pass
    return total


def reset_peak(pid):
    for p in descendants(pid):
        try:
            Path(f"/proc/{p}/clear_refs").write_text("5")
        except OSError:
            pass


def threads(pid):
    return sum(len(os.listdir(f"/proc/{p}/task")) for p in descendants(pid) if os.path.isdir(f"/proc/{p}/task"))


def load(url, body, concurrency, seconds, warmup, headers=(), hold=False):
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(body, f)
    cmd = ["taskset", "-c", str(UPSTREAM_CPU), str(LOADGEN), "--url", url, "--body", f.name,
           "--concurrency", str(concurrency), "--duration", str(seconds), "--warmup", str(warmup)]
    for h in headers:
        cmd += ["--header", h]
    if hold:
        cmd.append("--hold")
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + warmup + 120)
    finally:
        os.unlink(f.name)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


class Runner:
    def __init__(self, seconds, warmup):
        self.seconds, self.warmup = seconds, warmup
        self.results = []

    def case(self, name, target, proc, url, body, concurrency, topology="split", headers=(), **extra):
        if proc:
            reset_peak(proc.pid)
        before = cpu_seconds(proc.pid) if proc else 0.0
        try:
            r = load(url, body, concurrency, self.seconds, self.warmup, headers)
        except Exception as err:  # one broken case must not lose the others
            print(f"{name:<8} {target:<16} c={concurrency:<4} FAILED: {err}", flush=True)
            self.results.append(dict(case=name, target=target, concurrency=concurrency,
                                     topology=topology, failed=str(err)[:500], **extra))
            return
        after = cpu_seconds(proc.pid) if proc else 0.0
        sent = r.get("requests_total") or 0
        r.update(case=name, target=target, topology=topology, **extra,
                 cpu_us_per_request=((after - before) / sent * 1e6) if proc and sent else None,
                 peak_rss_mib=status_kib(proc.pid, "VmHWM") / 1024 if proc else None)
        self.results.append(r)
        print(f"{name:<8} {target:<16} {topology:<14} c={concurrency:<4} rps={r['rps']:>9.1f} "
              f"p50={r['latency_us']['p50']:>7}us p99={r['latency_us']['p99']:>7}us "
              f"ttfb50={r['ttfb_us']['p50']:>7}us err={r['errors']:<4} "
              f"cpu/req={r['cpu_us_per_request'] or 0:>8.1f}us rss={r['peak_rss_mib'] or 0:>6.1f}MiB", flush=True)


def latency_cases(run, gw, url, direct, target, topology):
    """The concurrency-1 cases the added latency is computed from: direct and through
    the gateway, JSON and streamed."""
    run.case("json", "direct", None, direct, dict(BODY_JSON, model="gpt-bench"), 1, topology=topology)
    run.case("stream", "direct", None, direct, dict(BODY_STREAM, model="gpt-bench"), 1, topology=topology)
    run.case("json", target, gw, url, BODY_JSON, 1, topology=topology, durability="off")
    run.case("stream", target, gw, url, BODY_STREAM, 1, topology=topology, durability="off")


def floor_cases(run, mock_url, cpu, topology, logs, procs, data_dir):
    """The concurrency-1 cases through the bare pass-through proxy, then through nginx,
    each alone on `cpu`: what one more hop costs in this topology whatever runs in it
    (README, "The floor")."""
    proxies = [("pass-through", lambda port: start(
        [str(PASSTHROUGH), "--listen", f"127.0.0.1:{port}", "--upstream", mock_url], cpu, log=logs))]
    if NGINX:
        proxies.append(("nginx", lambda port: start_nginx(
            mock_url, port, cpu, data_dir / f"nginx-{topology}", logs)))
    else:
        print(f"nginx ({topology}): not installed (bench/run.sh installs it); skipped", flush=True)
    for name, launch in proxies:
        port = free_port()
        proc = launch(port)
        procs.append(proc)
        try:
            wait_http(f"http://127.0.0.1:{port}/_mock/health")
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            run.case("json", name, proc, url, dict(BODY_JSON, model="gpt-bench"), 1, topology=topology)
            run.case("stream", name, proc, url, dict(BODY_STREAM, model="gpt-bench"), 1, topology=topology)
        except RuntimeError as err:
            print(f"{name} ({topology}): {err}", flush=True)
        finally:
            stop(proc)


def start_nginx(mock_url, port, cpu, prefix, logs):
    """nginx as the plain reverse proxy operators put in front of services: one worker
    process, upstream connections kept alive, responses passed on unbuffered (so a
    stream's first byte is not held back), no access log."""
    prefix.mkdir(parents=True, exist_ok=True)
    upstream = mock_url.removeprefix("http://")
    (prefix / "nginx.conf").write_text(f"""\
worker_processes 1;
daemon off;
master_process off;
error_log {prefix}/error.log;
pid {prefix}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/body;
  proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fastcgi;
  uwsgi_temp_path {prefix}/uwsgi;
  scgi_temp_path {prefix}/scgi;
  upstream mock {{ server {upstream}; keepalive 16; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}
}}
""")
    return start([NGINX, "-c", str(prefix / "nginx.conf"), "-p", str(prefix)], cpu, log=logs)


def halt_poll_ns():
    """This guest's guest_halt_poll_ns, or None where there is no haltpoll governor
    (bare metal, other hypervisors) or it cannot be changed (not root)."""
    try:
        value = int(HALT_POLL.read_text())
    except (OSError, ValueError):
        return None
    return value if os.access(HALT_POLL, os.W_OK) else None


def set_halt_poll_ns(value):
    HALT_POLL.write_text(str(value))


def bulwark_config(mock_url, durability, data_dir, failing=False):
    # `off` is quoted: YAML reads a bare off as the boolean false.
    journal = (f"journal:\n  path: {data_dir}/journal-{durability}.db\n"
               f"  durability: \"{durability}\"\n  flush_interval: 50ms\n")
    route = "routes:\n  - model: chat\n    targets:\n      - {provider: up, model: gpt-bench}\n"
    budget = ""
    if failing:
        # Every request tries the flaky target first. Its breaker never opens and the
        # retry budget covers a failover for every request, so the failover path is
        # what gets measured (with the defaults the breaker would open at a 50 %
        # failure rate and traffic would skip the flaky target).
        route = ("routes:\n  - model: chat\n    retry: {max_attempts: 1}\n"
                 "    circuit_breaker: {consecutive_failures: 1000000000, min_calls: 1000000000}\n"
                 "    targets:\n"
                 "      - {provider: flaky, model: gpt-flaky}\n"
                 "      - {provider: up, model: gpt-bench}\n")
        budget = "retry_budget: {ratio: 1.0, min_per_second: 1000000}\n"
    return (f"listen: 127.0.0.1:0\n{budget}{journal}providers:\n"
            f"  - {{name: up, kind: openai, api_key: sk-bench, base_url: \"{mock_url}/v1\"}}\n"
            f"  - {{name: flaky, kind: openai, api_key: sk-bench, base_url: \"{mock_url}/v1\"}}\n"
            + route)


def start_bulwark(cfg_path, cpu, logs, procs):
    port = free_port()
    gw = start([str(BIN), "serve", "--config", str(cfg_path), "--listen", f"127.0.0.1:{port}"], cpu,
               env=dict(os.environ, BULWARK_LOG="error"), log=logs)
    procs.append(gw)
    wait_http(f"http://127.0.0.1:{port}/healthz")
    return gw, f"http://127.0.0.1:{port}/v1/chat/completions"


def slow_streams(run, gw, url, mock_url, streams, seconds):
    """`streams` concurrent streams held open; the mock answers 200 tokens 50 ms apart."""
    mock_call(mock_url, "PUT", "/_mock/behavior", {"token_delay_ms": 50, "reply_tokens": 200})
    reset_peak(gw.pid)
    idle_rss = status_kib(gw.pid, "VmRSS") / 1024
    samples = []
    proc = subprocess.Popen(
        ["taskset", "-c", str(UPSTREAM_CPU), str(LOADGEN), "--url", url, "--body", write_body(BODY_STREAM),
         "--concurrency", str(streams), "--duration", str(seconds), "--warmup", "0", "--hold"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while proc.poll() is None:
        time.sleep(0.5)
        samples.append((status_kib(gw.pid, "VmRSS") / 1024, threads(gw.pid)))
    out, err = proc.communicate()
    mock_call(mock_url, "POST", "/_mock/reset")
    if proc.returncode != 0:
        raise RuntimeError(err)
    held = json.loads(out.strip().splitlines()[-1])
    held.update(case=f"{streams} slow streams", target="bulwark/off", topology="split",
                concurrency=streams, idle_rss_mib=idle_rss,
                peak_rss_mib=status_kib(gw.pid, "VmHWM") / 1024,
                max_rss_mib=max((s[0] for s in samples), default=None),
                threads=max((s[1] for s in samples), default=None))
    run.results.append(held)
    print(f"{streams} slow streams: opened={held['opened']} errors={held['errors']} "
          f"idle={idle_rss:.1f}MiB peak={held['peak_rss_mib']:.1f}MiB threads={held['threads']}", flush=True)


def write_body(body):
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, dir=OUT) as f:
        json.dump(body, f)
    return f.name


def target_dir():
    out = subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"],
                         cwd=ROOT, capture_output=True, text=True)
    try:
        return Path(json.loads(out.stdout)["target_directory"])
    except Exception:
        return ROOT / "target"


def criterion(quick):
    """Runs the two criterion benches; returns {full_id: {mean_ns, elements, ...}}."""
    started = time.time()
    extra = ["--quick"] if quick else []
    benches = [("bulwark-journal", "journal"), ("bulwark-providers", "translate")]
    log = open(OUT / "criterion.log", "w")
    for package, bench in benches:
        print(f"criterion: cargo bench -p {package} --bench {bench} {' '.join(extra)}", flush=True)
        rc = subprocess.run(["cargo", "bench", "--locked", "-p", package, "--bench", bench, "--"] + extra,
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode
        if rc != 0:
            print(f"criterion: {bench} failed (see bench/out/criterion.log)", flush=True)
    found = {}
    for path in glob.glob(str(target_dir() / "criterion" / "**" / "new" / "benchmark.json"), recursive=True):
        if os.path.getmtime(path) < started:
            continue
        try:
            meta = json.loads(Path(path).read_text())
            est = json.loads(Path(path).with_name("estimates.json").read_text())
        except (OSError, ValueError):
            continue
        thr = meta.get("throughput") or {}
        found[meta["full_id"]] = {
            "group": meta.get("group_id"),
            "mean_ns": est["mean"]["point_estimate"],
            "low_ns": est["mean"]["confidence_interval"]["lower_bound"],
            "high_ns": est["mean"]["confidence_interval"]["upper_bound"],
            "elements": thr.get("Elements"),
        }
    return found


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="short runs (smoke test of the harness)")
    ap.add_argument("--no-litellm", action="store_true")
    ap.add_argument("--no-criterion", action="store_true")
    ap.add_argument("--durability", default="off,batched,sync", help="journal modes to measure")
    ap.add_argument("--report-only", action="store_true", help="rewrite RESULTS.md from bench/out/results.json")
    ap.add_argument("--halt-poll-ns", type=int, default=200000,
                    help="guest halt polling for the split+haltpoll latency cases (0: skip them)")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        doc = json.loads((OUT / "results.json").read_text())
        write_reports(doc, full=not doc["meta"].get("quick"))
        return 0
    # A TERM runs the cleanup below (processes stopped, halt polling put back).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.time()
    load_at_start = open("/proc/loadavg").read().split()[:3]
    seconds, warmup = (2, 1) if args.quick else (8, 2)
    streams_seconds = 4 if args.quick else 8
    data_dir = Path(tempfile.mkdtemp(prefix="bulwark-bench-"))
    logs = open(OUT / "processes.log", "w")
    run = Runner(seconds, warmup)

    mock_port = free_port()
    mock = start([str(BIN), "mock", "--listen", f"127.0.0.1:{mock_port}", "--name", "bench"], UPSTREAM_CPU, log=logs)
    mock_url = f"http://127.0.0.1:{mock_port}"
    wait_http(mock_url + "/_mock/health")
    procs = []
    booted_halt_poll = halt_poll_ns()
    tested_halt_poll = None
    try:
        direct = mock_url + "/v1/chat/completions"
        for c in CONCURRENCY:
            run.case("json", "direct", None, direct, dict(BODY_JSON, model="gpt-bench"), c)
            run.case("stream", "direct", None, direct, dict(BODY_STREAM, model="gpt-bench"), c)

        for durability in args.durability.split(","):
            cfg = data_dir / f"bulwark-{durability}.yaml"
            cfg.write_text(bulwark_config(mock_url, durability, data_dir))
            gw, url = start_bulwark(cfg, GATEWAY_CPU, logs, procs)
            target = f"bulwark/{durability}"
            for c in CONCURRENCY:
                run.case("json", target, gw, url, BODY_JSON, c, durability=durability)
                run.case("stream", target, gw, url, BODY_STREAM, c, durability=durability)
            stop(gw)
            if durability == "off":
                # A fresh gateway: the heap the concurrency-500 cases grew would count.
                gw, url = start_bulwark(cfg, GATEWAY_CPU, logs, procs)
                try:
                    slow_streams(run, gw, url, mock_url, 1000, streams_seconds)
                except Exception as err:
                    print(f"1000 slow streams FAILED: {err}", flush=True)
                    run.results.append(dict(case="1000 slow streams", target=target, failed=str(err)[:500]))
                stop(gw)
                floor_cases(run, mock_url, GATEWAY_CPU, "split", logs, procs, data_dir)
                # Concurrency 1 with all three processes on one core: no cross-core wake-ups
                # (see README, "Two topologies, and halt polling").
                gw, url = start_bulwark(cfg, UPSTREAM_CPU, logs, procs)
                latency_cases(run, gw, url, direct, target, "one-core")
                stop(gw)
                floor_cases(run, mock_url, UPSTREAM_CPU, "one-core", logs, procs, data_dir)
                # Split again with the guest polling before it halts an idle vCPU, so
                # that a wake-up across cores need not go through the hypervisor (README,
                # "Two topologies, and halt polling"). The setting is the machine's: it
                # is put back as it was before anything else runs.
                if booted_halt_poll is not None and args.halt_poll_ns > booted_halt_poll:
                    gw, url = start_bulwark(cfg, GATEWAY_CPU, logs, procs)
                    try:
                        set_halt_poll_ns(args.halt_poll_ns)
                    except OSError as err:
                        print(f"split+haltpoll: cannot write {HALT_POLL}: {err}; skipped", flush=True)
                    else:
                        tested_halt_poll = args.halt_poll_ns
                        try:
                            latency_cases(run, gw, url, direct, target, "split+haltpoll")
                            stop(gw)
                            floor_cases(run, mock_url, GATEWAY_CPU, "split+haltpoll", logs, procs, data_dir)
                        finally:
                            set_halt_poll_ns(booted_halt_poll)
                    stop(gw)

        # The failover path: the primary fails half the time (a probabilistic 503) and
        # the request moves on to the second target.
        cfg = data_dir / "bulwark-failover.yaml"
        cfg.write_text(bulwark_config(mock_url, "off", data_dir, failing=True))
        mock_call(mock_url, "POST", "/_mock/faults",
                  {"fault": {"kind": "status", "status": 503}, "model": "gpt-flaky", "probability": 0.5})
        gw, url = start_bulwark(cfg, GATEWAY_CPU, logs, procs)
        for c in (1, 50):
            run.case("json", "bulwark/failover", gw, url, BODY_JSON, c, durability="off")
            run.case("stream", "bulwark/failover", gw, url, BODY_STREAM, c, durability="off")
        stop(gw)
        mock_call(mock_url, "POST", "/_mock/reset")

        if not args.no_litellm and LITELLM.exists():
            cfg = data_dir / "litellm.yaml"
            cfg.write_text(
                "model_list:\n  - model_name: chat\n    litellm_params:\n"
                f"      model: openai/gpt-bench\n      api_base: {mock_url}/v1\n      api_key: sk-bench\n")
            port = free_port()
            env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_TELEMETRY_DISABLED="true",
                       LITELLM_LOG="ERROR", LITELLM_MASTER_KEY=LITELLM_KEY)
            lite = start([str(LITELLM), "--config", str(cfg), "--port", str(port), "--host", "127.0.0.1",
                          "--num_workers", "1"], GATEWAY_CPU, env=env, log=logs)
            procs.append(lite)
            try:
                wait_http(f"http://127.0.0.1:{port}/health/liveliness", timeout=300)
                url = f"http://127.0.0.1:{port}/v1/chat/completions"
                auth = [f"authorization: Bearer {LITELLM_KEY}"]
                for c in CONCURRENCY:
                    run.case("json", "litellm", lite, url, BODY_JSON, c, headers=auth)
                    run.case("stream", "litellm", lite, url, BODY_STREAM, c, headers=auth)
            except RuntimeError as err:
                print(f"litellm: {err}", flush=True)
            stop(lite)
        elif not args.no_litellm:
            print(f"litellm: {LITELLM} missing (bench/run.sh installs it); skipped", flush=True)
    finally:
        for p in procs:
            stop(p)
        stop(mock)
        for leftover in glob.glob(str(OUT / "tmp*.json")):
            os.unlink(leftover)

    micro = {} if args.no_criterion else criterion(args.quick)
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": "bench/run.sh " + " ".join(sys.argv[1:]),
        "quick": args.quick,
        "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?"),
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "virtualization": virtualization(),
        "load_average_at_start": load_at_start,
        "halt_poll_ns_as_booted": booted_halt_poll,
        "halt_poll_ns_tested": tested_halt_poll,
        "seconds_per_case": seconds,
        "warmup": warmup,
        "wall_seconds": round(time.time() - started),
        "bulwark_version": subprocess.run([str(BIN), "--version"], capture_output=True, text=True).stdout.strip(),
        "litellm_version": litellm_version(),
    }
    doc = {"meta": meta, "results": run.results, "criterion": micro}
    (OUT / "results.json").write_text(json.dumps(doc, indent=1))
    write_reports(doc, full=not args.quick)
    print(f"\nwrote {OUT / 'results.json'} and {OUT / 'RESULTS.md'}"
          + ("" if args.quick else f" and {ROOT / 'bench' / 'RESULTS.md'}")
          + f" in {meta['wall_seconds']} s")
    return 0


def virtualization():
    kinds = []
    try:
        out = subprocess.run(["systemd-detect-virt"], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip() not in ("", "none"):
            kinds.append(out.stdout.strip())
    except OSError:
        pass
    if re.search(r"^flags\s*:.*\bhypervisor\b", open("/proc/cpuinfo").read(), re.M):
        kinds.append("virtual machine")
    return ", ".join(kinds) or "bare metal"


def litellm_version():
    pip = LITELLM.with_name("pip")
    if not pip.exists():
        return None
    out = subprocess.run([str(pip), "show", "litellm"], capture_output=True, text=True).stdout
    m = re.search(r"^Version: (.+)$", out, re.M)
    return m.group(1) if m else None


# ---------------------------------------------------------------------------
# RESULTS.md
# ---------------------------------------------------------------------------

def find(results, case, target, c, topology="split"):
    for r in results:
        if (r.get("case") == case and r.get("target") == target and r.get("concurrency") == c
                and r.get("topology", "split") == topology and "failed" not in r):
            return r
    return None


def added(through, direct, key, pct):
    """How much a case through a proxy added over the direct call, at one percentile."""
    return through[key][pct] - direct[key][pct] if through and direct else None


def verdict(ok):
    return "—" if ok is None else ("**met**" if ok else "**not met**")


def fmt(v, unit="", digits=0):
    if v is None:
        return "—"
    return f"{v:,.{digits}f}{unit}"


def write_reports(doc, full):
    text = render(doc)
    (OUT / "RESULTS.md").write_text(text)
    if full:
        (ROOT / "bench" / "RESULTS.md").write_text(text)


def render(doc):
    meta, results, micro = doc["meta"], doc["results"], doc.get("criterion") or {}
    lines = ["# Bulwark benchmark results", ""]
    if meta.get("quick"):
        lines += ["> **Quick run** (`--quick`, 2 s per case): a smoke test of the harness, not the "
                  "published numbers. Run `bench/run.sh` on a quiet machine for those.", ""]
    lines += [
        "Generated by `bench/run.py` from `bench/out/results.json`; what each number means: "
        "[README.md](README.md).", "",
        "## Machine and command", "",
        f"- command: `{meta.get('command')}` ({meta.get('wall_seconds')} s wall clock)",
        f"- date: {meta.get('date')}",
        f"- CPU: {meta.get('cpu')}, {meta.get('cores')} cores ({meta.get('virtualization')}), "
        f"{meta.get('memory_gib')} GiB RAM, kernel {meta.get('kernel')}",
        f"- load average at start: {' '.join(meta.get('load_average_at_start') or [])} "
        "(anything well above 0 means other work shared the machine)",
        f"- {meta.get('seconds_per_case')} s measured per case after {meta.get('warmup')} s warm-up",
        f"- guest halt polling (`{HALT_POLL}`): {halt_poll_line(meta)}",
        f"- {meta.get('bulwark_version')}; LiteLLM {meta.get('litellm_version') or 'not run'}",
        "",
    ]
    lines += ["## The issue's targets", "", "| target | measured | |", "|---|---|---|"]
    lines += targets(results)
    lines += [""]
    lines += ["## Added latency over a direct call (concurrency 1, journal off)", "",
              "Bulwark's percentile minus the direct call's percentile; for streams, of the time "
              "to the first byte. `split`: gateway on its own core; `split+haltpoll`: the same with "
              "the guest's halt polling on (an idle vCPU polls before it halts, so a wake-up across "
              "cores need not go through the hypervisor); `one-core`: load generator, "
              "mock and gateway on one core (README, \"Two topologies, and halt polling\"). "
              "`floor`: the same through `bulwark-passthrough`, the thinnest hyper proxy (no parsing, "
              "no routing), in the same topology: what any proxy adds here for the extra hop; "
              "Bulwark's added time minus the floor is its own work. `nginx`: the same through nginx "
              "as a plain reverse proxy (one worker, upstream keep-alive, unbuffered), a second "
              "floor from outside this project (README, \"The floor\").", "",
              "| answer | topology | direct p50 | Bulwark p50 | added p50 | floor p50 | nginx p50 "
              "| Bulwark over the floor, p50 | direct p99 | Bulwark p99 | added p99 | floor p99 | nginx p99 |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for case in ("json", "stream"):
        key = "latency_us" if case == "json" else "ttfb_us"
        for topo in TOPOLOGIES:
            d, b = find(results, case, "direct", 1, topo), find(results, case, "bulwark/off", 1, topo)
            if not (d and b):
                continue
            f = find(results, case, "pass-through", 1, topo)
            n = find(results, case, "nginx", 1, topo)
            floor50, floor99 = added(f, d, key, "p50"), added(f, d, key, "p99")
            own50 = b[key]["p50"] - f[key]["p50"] if f else None
            lines.append(f"| {case} ({'whole answer' if case == 'json' else 'first byte'}) | {topo} | "
                         f"{d[key]['p50']} µs | {b[key]['p50']} µs | **{b[key]['p50'] - d[key]['p50']} µs** | "
                         f"{fmt(floor50, ' µs')} | {fmt(added(n, d, key, 'p50'), ' µs')} | {fmt(own50, ' µs')} | "
                         f"{d[key]['p99']} µs | {b[key]['p99']} µs | **{b[key]['p99'] - d[key]['p99']} µs** | "
                         f"{fmt(floor99, ' µs')} | {fmt(added(n, d, key, 'p99'), ' µs')} |")
    lines += ["", "## Every case", "",
              "| case | target | topology | c | req/s | p50 | p99 | TTFB p50 | TTFB p99 | errors | CPU µs/req | req per CPU-s | peak RSS |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "failed" in r:
            lines.append(f"| {r.get('case')} | {r.get('target')} | {r.get('topology', '')} | {r.get('concurrency', '')} "
                         f"| failed: {r['failed'][:80]} |||||||||")
            continue
        if "latency_us" not in r:
            continue
        cpu = r.get("cpu_us_per_request")
        lines.append(
            f"| {r['case']} | {r['target']} | {r.get('topology', 'split')} | {r['concurrency']} | {r['rps']:,.0f} | "
            f"{r['latency_us']['p50']} µs | {r['latency_us']['p99']} µs | {r['ttfb_us']['p50']} µs | "
            f"{r['ttfb_us']['p99']} µs | {r['errors']} | {fmt(cpu, digits=1)} | "
            f"{fmt(1e6 / cpu if cpu else None)} | {fmt(r.get('peak_rss_mib'), ' MiB', 1)} |")
    held = next((r for r in results if "slow streams" in str(r.get("case")) and "failed" not in r), None)
    if held:
        lines += ["", "## Concurrent slow streams", "",
                  f"{held['streams']} streams opened at once and held for {held['seconds']} s (the mock sends 200 "
                  f"tokens 50 ms apart): {held['opened']} opened, {held['errors']} errors; gateway RSS "
                  f"{held['idle_rss_mib']:.1f} MiB idle, peak {held['peak_rss_mib']:.1f} MiB (VmHWM), "
                  f"{held.get('threads')} threads."]
    lines += ["", "## Compared with LiteLLM (same mock, same core, same load)", "",
              "| answer | c | LiteLLM req/s | Bulwark req/s | LiteLLM CPU µs/req | Bulwark CPU µs/req | req per CPU-second, Bulwark ÷ LiteLLM |",
              "|---|---|---|---|---|---|---|"]
    for case in ("json", "stream"):
        for c in CONCURRENCY:
            l, b = find(results, case, "litellm", c), find(results, case, "bulwark/off", c)
            if not (l and b and l.get("cpu_us_per_request") and b.get("cpu_us_per_request")):
                continue
            lines.append(f"| {case} | {c} | {l['rps']:,.0f} | {b['rps']:,.0f} | {l['cpu_us_per_request']:,.0f} | "
                         f"{b['cpu_us_per_request']:,.1f} | **{l['cpu_us_per_request'] / b['cpu_us_per_request']:,.0f}×** |")
    if micro:
        lines += ["", "## Criterion micro-benchmarks", "",
                  "`cargo bench -p bulwark-journal --bench journal` and "
                  "`cargo bench -p bulwark-providers --bench translate` (mean, 95 % interval).", "",
                  "| benchmark | mean | interval | per element | elements/s |", "|---|---|---|---|---|"]
        for name in sorted(micro):
            m = micro[name]
            el = m.get("elements")
            lines.append(f"| {name} | {human_ns(m['mean_ns'])} | {human_ns(m['low_ns'])} – {human_ns(m['high_ns'])} | "
                         f"{human_ns(m['mean_ns'] / el) if el else '—'} | "
                         f"{fmt(el / (m['mean_ns'] / 1e9)) if el else '—'} |")
        lines += ["", "Journal: `latency/<mode>` is one request's `begin` + attempt + `complete` "
                  "(sync: two commits, each with an fsync); `throughput/<mode>/<callers>` counts records "
                  "(3 per request). Translate: one element is one content chunk of a 64-chunk answer."]
    lines.append("")
    return "\n".join(lines)


def halt_poll_line(meta):
    booted, tested = meta.get("halt_poll_ns_as_booted"), meta.get("halt_poll_ns_tested")
    if booted is None:
        return "no haltpoll governor here, or not writable (no `split+haltpoll` cases)"
    line = f"{booted:,} ns as booted, the setting of every case but `split+haltpoll`"
    if tested is not None:
        line += f"; {tested:,} ns for the `split+haltpoll` cases, then put back"
    return line


def human_ns(ns):
    if ns is None:
        return "—"
    if ns >= 1e9:
        return f"{ns / 1e9:.2f} s"
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.0f} ns"


def targets(results):
    rows = []
    for case, label, key in (("json", "non-streaming", "latency_us"), ("stream", "streaming, first byte", "ttfb_us")):
        for topo in TOPOLOGIES:
            d, b = find(results, case, "direct", 1, topo), find(results, case, "bulwark/off", 1, topo)
            if not (d and b):
                continue
            p50 = b[key]["p50"] - d[key]["p50"]
            p99 = b[key]["p99"] - d[key]["p99"]
            floors = [(name, added(find(results, case, target, 1, topo), d, key, "p50"))
                      for name, target in (("pass-through", "pass-through"), ("nginx", "nginx"))]
            floors = [f"{name} {v} µs" for name, v in floors if v is not None]
            floor = f" (the extra hop alone, p50: {', '.join(floors)})" if floors else ""
            rows.append(f"| added latency, {label}, c=1, {topo}: p50 ≤ {TARGET_ADDED_P50_US} µs, p99 ≤ "
                        f"{TARGET_ADDED_P99_US} µs | p50 {p50} µs, p99 {p99} µs{floor} | "
                        f"{verdict(p50 <= TARGET_ADDED_P50_US and p99 <= TARGET_ADDED_P99_US)} |")
    for case in ("json", "stream"):
        b = find(results, case, "bulwark/off", 50)
        cpu = b.get("cpu_us_per_request") if b else None
        rows.append(f"| CPU per proxied request, {case}, c=50: ≤ {TARGET_CPU_US} µs | {fmt(cpu, ' µs', 1)} | "
                    f"{verdict(None if cpu is None else cpu <= TARGET_CPU_US)} |")
    for case in ("json", "stream"):
        l, b = find(results, case, "litellm", 50), find(results, case, "bulwark/off", 50)
        ratio = (l["cpu_us_per_request"] / b["cpu_us_per_request"]
                 if l and b and l.get("cpu_us_per_request") and b.get("cpu_us_per_request") else None)
        rows.append(f"| requests per CPU-second vs LiteLLM, {case}, c=50: ≥ {TARGET_LITELLM_RATIO}× | "
                    f"{fmt(ratio, '×', 0)} | {verdict(None if ratio is None else ratio >= TARGET_LITELLM_RATIO)} |")
    for case in ("json", "stream"):
        s = find(results, case, "bulwark/sync", 50)
        ok = None if not s else (s["rps"] >= TARGET_SYNC_RPS and s["errors"] == 0)
        rows.append(f"| journal `sync`, {case}, c=50: ≥ {TARGET_SYNC_RPS:,} req/s, no errors | "
                    f"{fmt(s['rps'] if s else None, ' req/s')}, {s['errors'] if s else '—'} errors | {verdict(ok)} |")
    held = next((r for r in results if "slow streams" in str(r.get("case")) and "failed" not in r), None)
    peak = held["peak_rss_mib"] if held else None
    ok = None if not held else (peak <= TARGET_STREAMS_MIB and held["errors"] == 0 and held["opened"] == held["streams"])
    rows.append(f"| peak memory with 1,000 concurrent streams: ≤ {TARGET_STREAMS_MIB} MiB | "
                f"{fmt(peak, ' MiB', 1)} ({held['opened'] if held else '—'} opened, {held['errors'] if held else '—'} errors) | {verdict(ok)} |")
    fo = find(results, "json", "bulwark/failover", 50)
    if fo:
        rows.append(f"| failover (primary fails 50 %), json, c=50: no errors | {fo['rps']:,.0f} req/s, "
                    f"{fo['errors']} errors, p99 {fo['latency_us']['p99']} µs | {verdict(fo['errors'] == 0)} |")
    return rows


if __name__ == "__main__":
    sys.exit(main())
