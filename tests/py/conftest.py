"""Shared pytest fixtures: where the build and the data live."""
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("REALM_BUILD", ROOT / "build"))
SHARED = pathlib.Path(os.environ.get("REALM_SHARED", ROOT.parent / "shared"))
MODELS = pathlib.Path(os.environ.get("REALM_MODELS", pathlib.Path.home() / ".cache/realm/models"))


@pytest.fixture(scope="session")
def realm_bin():
    exe = BUILD / "realm"
    if not exe.exists():
        pytest.fail(f"{exe} not built (run make)")
    return str(exe)


@pytest.fixture(scope="session")
def stories():
    p = SHARED / "models/stories260K.gguf"
    if not p.exists():
        pytest.skip("../shared/models/stories260K.gguf not found")
    return p


def model_path(name):
    p = MODELS / name
    if not p.exists():
        pytest.skip(f"{p} not cached (scripts/fetch-models.sh)")
    return p


# ---- `realm serve` on a free loopback port (tests/py/test_server*.py, bench/load.py) ----
import hashlib  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import secrets  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402


def new_key():
    """A fresh API key and the SHA-256 hex a config stores for it."""
    key = "realm-test-" + secrets.token_urlsafe(24)
    return key, hashlib.sha256(key.encode()).hexdigest()


def tenant(tid, models="*", guest=None, **limits):
    """A tenant config entry with one fresh key; returns (key, entry)."""
    key, h = new_key()
    t = {"id": tid, "key_hashes": [h], "models": models}
    if guest:
        t["guest"] = str(guest)
    if limits:
        t["limits"] = limits
    return key, t


def parse_metrics(text):
    """A Prometheus text exposition as {name{labels}: value}."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


class RealmServer:
    """A running `realm serve`: url, keys per tenant, helpers; stop() sends SIGTERM."""

    def __init__(self, proc, url, keys, log_path, admin_key=None):
        self.proc, self.url, self.keys, self.log_path = proc, url, keys, log_path
        self.admin_key = admin_key
        self.base = url + "/v1"

    def client(self, tenant_id, **kw):
        import openai

        kw.setdefault("max_retries", 0)
        kw.setdefault("timeout", 120)
        return openai.OpenAI(base_url=self.base, api_key=self.keys[tenant_id], **kw)

    def metrics(self, key=None):
        """The /metrics exposition as {name{labels}: value}, read with `key` (default: the operator
        key start_server put in the config, which sees every series)."""
        key = key or self.admin_key
        req = urllib.request.Request(self.url + "/metrics", headers={"Authorization": "Bearer " + key} if key else {})
        return parse_metrics(urllib.request.urlopen(req, timeout=30).read().decode())

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, sig=signal.SIGTERM, timeout=60):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"realm serve did not exit within {timeout}s of {sig!r}")
        return self.proc.returncode


def launch_serve(realm_bin, args, log_path, timeout=120, settle=0.2):
    """Starts `realm serve ARGS` (stderr to log_path) and waits for its "listening on" line.
    Returns (proc, url, stdout text so far: what it printed up to `settle` s after that line)."""
    logf = open(log_path, "wb")
    proc = subprocess.Popen([realm_bin, "serve", *args], stdout=subprocess.PIPE, stderr=logf, text=True)
    logf.close()
    lines, found = [], threading.Event()

    def reader():
        for line in proc.stdout:
            lines.append(line)
            if "listening on" in line:
                found.set()
        found.set()

    threading.Thread(target=reader, daemon=True).start()
    found.wait(timeout)
    time.sleep(settle)
    out = "".join(lines)
    m = re.search(r"listening on (http://\S+)", out)
    if not m:
        proc.kill()
        proc.wait()
        raise AssertionError(f"realm serve did not start: exit {proc.returncode}\n{log_path.read_text()}")
    return proc, m.group(1), out


def start_server(realm_bin, workdir, config, args=(), keys=None, timeout=120):
    """Writes `config` to workdir/realm.json and starts `realm serve --config ... --port 0`. Unless
    the config names its own, an operator key is added (RealmServer.admin_key) for /metrics."""
    workdir.mkdir(parents=True, exist_ok=True)
    admin_key = None
    if "admin_key_hashes" not in config:
        admin_key, h = new_key()
        config = dict(config, admin_key_hashes=[h])
    cfg = workdir / "realm.json"
    cfg.write_text(json.dumps(config, indent=2))
    log_path = workdir / "serve.log"
    proc, url, _ = launch_serve(realm_bin, ["--config", str(cfg), "--host", "127.0.0.1", "--port", "0", *args],
                                log_path, timeout, settle=0)
    return RealmServer(proc, url, dict(keys or {}), log_path, admin_key)


@pytest.fixture
def serve(realm_bin, tmp_path):
    """Factory: serve(config, args=(), keys={tenant: key}) → RealmServer, stopped at teardown."""
    started = []

    def _start(config, args=(), keys=None, name="srv"):
        s = start_server(realm_bin, tmp_path / f"{name}{len(started)}", config, args, keys)
        started.append(s)
        return s

    yield _start
    for s in started:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()
