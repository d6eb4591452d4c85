#!/usr/bin/env python3
"""Bounded load test of `realm serve` on loopback: N concurrent streaming chat clients for a fixed
time (default 32 clients, 60 s). It starts its own server (127.0.0.1, a free port, a temporary
config with two tenants), so it never touches anything but this machine.

Tenant "load" has no limits and carries most clients; tenant "capped" (max_concurrent 2) gets a
few clients on purpose, so that some 429s happen: those are counted as deliberate, and the client
waits Retry-After and goes on. Every other non-200 answer, a stream without [DONE], or a
transport error counts as an error.

Reports: requests, completion tokens/s, p50/p99 time to first token (request sent → first
content event), errors, and the server's resident memory after a warm-up and after the run
(both measured idle, so the difference is growth, not load).

usage: bench/load.py [--build build] [--clients 32] [--duration 60] [--max-tokens 64] [--json]
"""
import argparse
import hashlib
import http.client
import json
import os
import pathlib
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROMPTS = [
    "Write a short story about a robot who learns to paint.",
    "Explain why the sky is blue in two sentences.",
    "List three uses of a paperclip.",
    "What is the capital of France? Answer briefly.",
    "Describe a sunset over the ocean.",
    "Give me a recipe idea with tomatoes.",
    "Why do cats purr?",
    "Summarize the plot of a heist movie you invent.",
]


ADMIN_KEY = "realm-admin-" + secrets.token_urlsafe(24)


def alloc_mib(port):
    """The server's realm_malloc bytes in use (exact, unlike RSS) from /metrics, in MiB."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", "/metrics", headers={"Authorization": "Bearer " + ADMIN_KEY})
    m = re.search(r"^realm_alloc_bytes (\S+)", c.getresponse().read().decode(), re.M)
    return float(m.group(1)) / 2**20 if m else float("nan")


def rss_kib(pid):
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


def start_server(build, model, workdir, args):
    keys, tenants = {}, []
    for tid, limits in (("load", None), ("capped", {"max_concurrent": 2})):
        key = "realm-load-" + secrets.token_urlsafe(24)
        keys[tid] = key
        t = {"id": tid, "key_hashes": [hashlib.sha256(key.encode()).hexdigest()], "models": "*"}
        if limits:
            t["limits"] = limits
        tenants.append(t)
    cfg = workdir / "realm.json"
    cfg.write_text(json.dumps({"models": [{"name": "m", "path": str(model)}], "tenants": tenants,
                               "admin_key_hashes": [hashlib.sha256(ADMIN_KEY.encode()).hexdigest()],
                               "max_inflight": max(64, args.clients), "max_queue": 256}))
    log = open(workdir / "serve.log", "wb")
    proc = subprocess.Popen([str(build / "realm"), "serve", "--config", str(cfg), "--host", "127.0.0.1",
                             "--port", "0"], stdout=subprocess.PIPE, stderr=log, text=True)
    log.close()
    port = None
    deadline = time.time() + 120
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if m:
            port = int(m.group(1))
            break
    if port is None:
        proc.kill()
        sys.exit(f"load: realm serve did not start:\n{(workdir / 'serve.log').read_text()}")
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    return proc, port, keys


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.ttft, self.requests, self.tokens, self.deliberate_429 = [], 0, 0, 0
        self.errors = []

    def error(self, what):
        with self.lock:
            if len(self.errors) < 50:
                self.errors.append(what)
            else:
                self.errors.append("...")


def one_request(port, key, max_tokens, prompt, stats, record):
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
                       "temperature": 0.7, "stream": True, "stream_options": {"include_usage": True}})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    t0 = time.perf_counter()
    try:
        conn.request("POST", "/v1/chat/completions", body=body,
                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status == 429:
            retry = float(resp.getheader("Retry-After", "1"))
            resp.read()
            with stats.lock:
                stats.deliberate_429 += 1 if key_is_capped(key) else 0
            if not key_is_capped(key):
                stats.error("429 on the unlimited tenant")
            return retry
        if resp.status != 200:
            stats.error(f"HTTP {resp.status}: {resp.read()[:200]!r}")
            return 0.5
        first, done, usage = None, False, None
        for raw in resp:
            line = raw.strip()
            if not line.startswith(b"data: "):
                continue
            data = line[6:]
            if data == b"[DONE]":
                done = True
                break
            ev = json.loads(data)
            if "error" in ev:
                stats.error(f"stream error: {ev['error']}")
                return 0.5
            if ev.get("usage"):
                usage = ev["usage"]
            for ch in ev.get("choices", []):
                if ch.get("delta", {}).get("content") and first is None:
                    first = time.perf_counter() - t0
        if not done:
            stats.error("stream ended without [DONE]")
            return 0.5
        if record:
            with stats.lock:
                stats.requests += 1
                stats.tokens += usage["completion_tokens"] if usage else 0
                if first is not None:
                    stats.ttft.append(first)
        return 0
    except Exception as e:  # noqa: BLE001 — every failure is an error of the run
        stats.error(f"{type(e).__name__}: {e}")
        return 0.5
    finally:
        conn.close()


CAPPED_KEYS = set()


def key_is_capped(key):
    return key in CAPPED_KEYS


def run_clients(port, keys, n_clients, duration, max_tokens, stats, record):
    stop_at = time.time() + duration
    n_capped = max(1, n_clients // 8)

    def client(i):
        key = keys["capped"] if i < n_capped else keys["load"]
        j = i
        while time.time() < stop_at:
            wait = one_request(port, key, max_tokens, PROMPTS[j % len(PROMPTS)], stats, record)
            j += 1
            if wait:
                time.sleep(min(wait, max(0.0, stop_at - time.time())))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.environ.get("REALM_BUILD", str(ROOT / "build")))
    ap.add_argument("--model", default=str(pathlib.Path.home() / ".cache/realm/models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--duration", type=float, default=60)
    ap.add_argument("--warmup", type=float, default=10)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = ap.parse_args()
    if not (1 <= args.clients <= 256 and 0 < args.duration <= 600):
        sys.exit("load: --clients must be in [1, 256] and --duration in (0, 600]")
    build = pathlib.Path(args.build)
    with tempfile.TemporaryDirectory(prefix="realm-load-") as tmp:
        proc, port, keys = start_server(build, args.model, pathlib.Path(tmp), args)
        CAPPED_KEYS.add(keys["capped"])
        try:
            warm = Stats()
            run_clients(port, keys, args.clients, args.warmup, args.max_tokens, warm, record=False)
            time.sleep(1.0)
            rss_before, alloc_before = rss_kib(proc.pid), alloc_mib(port)
            stats = Stats()
            t0 = time.time()
            run_clients(port, keys, args.clients, args.duration, args.max_tokens, stats, record=True)
            elapsed = time.time() - t0
            time.sleep(1.0)
            rss_after, alloc_after = rss_kib(proc.pid), alloc_mib(port)
            metrics = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            metrics.request("GET", "/metrics")
            mtext = metrics.getresponse().read().decode()
            active = re.search(r"^realm_requests_active (\S+)", mtext, re.M)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                rc = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = "killed"
    summary = {
        "clients": args.clients, "duration_s": round(elapsed, 1), "max_tokens": args.max_tokens,
        "requests": stats.requests, "completion_tokens": stats.tokens,
        "requests_per_s": round(stats.requests / elapsed, 2), "tokens_per_s": round(stats.tokens / elapsed, 1),
        "ttft_p50_ms": round(pct(stats.ttft, 50) * 1000, 1), "ttft_p99_ms": round(pct(stats.ttft, 99) * 1000, 1),
        "ttft_mean_ms": round(statistics.fmean(stats.ttft) * 1000, 1) if stats.ttft else None,
        "deliberate_429": stats.deliberate_429, "errors": len(stats.errors), "error_samples": stats.errors[:10],
        "rss_after_warmup_mib": round(rss_before / 1024, 1), "rss_after_run_mib": round(rss_after / 1024, 1),
        "rss_growth_mib": round((rss_after - rss_before) / 1024, 1),
        "realm_alloc_after_warmup_mib": round(alloc_before, 3), "realm_alloc_after_run_mib": round(alloc_after, 3),
        "active_after": float(active.group(1)) if active else None, "server_exit": rc,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"load: {args.clients} streaming clients for {elapsed:.0f} s, max_tokens {args.max_tokens}")
        print(f"  requests {stats.requests} ({summary['requests_per_s']}/s), completion tokens {stats.tokens} "
              f"({summary['tokens_per_s']} tok/s)")
        print(f"  time to first token: p50 {summary['ttft_p50_ms']} ms, p99 {summary['ttft_p99_ms']} ms")
        print(f"  deliberate 429s: {stats.deliberate_429}; errors: {len(stats.errors)} {stats.errors[:5]}")
        print(f"  RSS idle after warm-up {summary['rss_after_warmup_mib']} MiB, after the run "
              f"{summary['rss_after_run_mib']} MiB (growth {summary['rss_growth_mib']} MiB); realm_malloc in use "
              f"{alloc_before:.3f} → {alloc_after:.3f} MiB; server exit {rc}")
    ok = not stats.errors and rc == 0 and summary["active_after"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
