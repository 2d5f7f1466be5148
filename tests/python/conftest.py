"""Starts one `bulwark mock` and one `bulwark serve` (the real binary) for the session.

The binary is taken from $BULWARK_BIN, else target/release/bulwark, else target/debug/bulwark.
Both bind 127.0.0.1:0; their addresses are read from the line each logs at start-up.
"""

import json
import os
import re
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ADDR = re.compile(r"http://(127\.0\.0\.1:\d+)")

# Fake credentials: the mock records them so tests can see they went in the right header.
KEYS = {
    "T_ANTHROPIC_KEY": "sk-ant-test-anthropic",
    "T_OPENAI_KEY": "sk-test-openai",
    "T_GOOGLE_KEY": "g-test-google",
}


def bulwark_bin() -> str:
    if os.environ.get("BULWARK_BIN"):
        return os.environ["BULWARK_BIN"]
    for profile in ("release", "debug"):
        path = ROOT / "target" / profile / "bulwark"
        if path.exists():
            return str(path)
    raise RuntimeError("no bulwark binary: run `cargo build --release` first or set BULWARK_BIN")


class Proc:
    """A child process whose stderr is drained in the background (kept for diagnostics)."""

    def __init__(self, args, env=None):
        self.lines = []
        self.proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
        )
        self._addr = None
        self._ready = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        for line in self.proc.stderr:
            self.lines.append(line)
            if self._addr is None:
                m = ADDR.search(line)
                if m:
                    self._addr = m.group(1)
                    self._ready.set()
        self._ready.set()

    def addr(self, timeout=30.0) -> str:
        if not self._ready.wait(timeout) or self._addr is None:
            raise RuntimeError("process did not start:\n" + "".join(self.lines))
        return self._addr

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Mock:
    def __init__(self, url: str):
        self.url = url

    def _req(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"content-type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            return json.loads(raw) if raw else None

    def reset(self):
        self._req("POST", "/_mock/reset")

    def calls(self):
        return self._req("GET", "/_mock/calls")

    def fault(self, fault, times=None, api=None):
        rule = {"fault": fault}
        if times is not None:
            rule["times"] = times
        if api is not None:
            rule["api"] = api
        return self._req("POST", "/_mock/faults", rule)


CONFIG = """
listen: 127.0.0.1:0
journal: {{path: {journal}}}
providers:
  - name: anthropic
    kind: anthropic
    api_key: ${{T_ANTHROPIC_KEY}}
    base_url: {mock}
  - name: openai
    kind: openai
    api_key: ${{T_OPENAI_KEY}}
    base_url: {mock}/v1
  - name: google
    kind: gemini
    api_key: ${{T_GOOGLE_KEY}}
    base_url: {mock}
  - name: local
    kind: openai-compatible
    base_url: {mock}/v1
    headers:
      X-Title: bulwark-tests
routes:
  - model: chat
    targets:
      - {{provider: anthropic, model: claude-test}}
      - {{provider: openai, model: gpt-test}}
      - {{provider: google, model: gemini-test}}
  # Failover tests get targets of their own: breaker state is per (provider, model)
  # and shared by every route, so their failures must not open `chat`'s breakers.
  - model: failover
    targets:
      - {{provider: anthropic, model: claude-failover}}
      - {{provider: openai, model: gpt-test}}
  - model: stream-failover
    targets:
      - {{provider: anthropic, model: claude-stream-failover}}
      - {{provider: openai, model: gpt-test}}
"""


@pytest.fixture(scope="session")
def stack():
    binary = bulwark_bin()
    mock = Proc([binary, "mock", "--listen", "127.0.0.1:0", "--name", "mock"])
    mock_url = "http://" + mock.addr()
    workdir = tempfile.mkdtemp(prefix="bulwark-sdk-")
    config = Path(workdir) / "bulwark.yaml"
    config.write_text(CONFIG.format(mock=mock_url, journal=Path(workdir) / "journal.db"))
    env = dict(os.environ, **KEYS)
    gateway = Proc([binary, "serve", "--config", str(config)], env=env)
    try:
        gw_url = "http://" + gateway.addr()
        # Wait for /healthz (the log line comes just before accept starts).
        deadline = time.time() + 10
        while True:
            try:
                urllib.request.urlopen(gw_url + "/healthz", timeout=1).read()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
        yield {"gateway": gw_url, "mock": Mock(mock_url), "gateway_proc": gateway}
    finally:
        gateway.stop()
        mock.stop()
        if os.environ.get("BULWARK_TEST_LOGS"):
            print("".join(gateway.lines))


@pytest.fixture()
def mock(stack):
    stack["mock"].reset()
    return stack["mock"]
