#!/usr/bin/env python3
"""vs_llama_server.py — `realm serve` against native `llama-server` under the same streaming chat load.

Both servers serve the same GGUF file with the same threads on 127.0.0.1; each is started by this
script, loaded by C concurrent streaming clients that send chat requests back to back (prompts from
a fixed list, `max_tokens` fixed, `ignore_eos` so every answer has exactly that many tokens) for a
fixed time after a warm-up, then stopped. The servers run one after the other, --reps times,
alternating, and the script reports per server the medians over repetitions of:
  tokens/s           completion tokens received per second of the measured window (all clients)
  TTFT p50 / p99     request sent → first content event
  inter-token p50/p99  gaps between consecutive content events of one stream
and the ratios realm / llama-server, as JSON under bench/results/vs_llama_server-<date>.json.

The peer is the native llama-server built by `scripts/setup.sh peers` (~/.cache/realm/peers/bin),
with one slot per client (-np C) and each slot's context sized for prompt + max_tokens.

    ~/.cache/realm/venv/bin/python bench/vs_llama_server.py [--clients 16] [--duration 30]
        [--max-tokens 64] [--threads 2] [--reps 3] [--model PATH] [--realm build/realm]
"""
import argparse
import hashlib
import http.client
import json
import os
import platform
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("REALM_CACHE", Path.home() / ".cache" / "realm"))
PEER = CACHE / "peers" / "bin" / "llama-server"
sys.path.insert(0, str(ROOT / "bench"))
from load import PROMPTS  # noqa: E402 — the same prompts as the load test


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port, path, timeout=300):
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", path)
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"server on port {port} not ready within {timeout}s")


def pin(args):
    """Both servers run on CPUs 0..threads-1 (taskset), so they get the same cores."""
    return ["taskset", "-c", f"0-{args.threads - 1}"]


def start_realm(args, workdir):
    key = "realm-bench-" + secrets.token_urlsafe(24)
    cfg = {"models": [{"name": "m", "path": str(args.model)}],
           "tenants": [{"id": "bench", "key_hashes": [hashlib.sha256(key.encode()).hexdigest()], "models": "*"}],
           "max_inflight": max(args.clients, 1), "max_queue": 4 * args.clients + 16,
           "max_connections_per_ip": 4 * args.clients + 16}
    path = Path(workdir) / "realm.json"
    path.write_text(json.dumps(cfg))
    port = free_port()
    # realm's engine uses every CPU of its affinity mask: the same CPUs as the peer's threads
    proc = subprocess.Popen([*pin(args), str(args.realm), "serve", "--config", str(path), "--host", "127.0.0.1",
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(port, "/health")
    return proc, port, key


def start_peer(args, workdir):
    port = free_port()
    ctx_per_slot = 1024
    proc = subprocess.Popen([*pin(args), str(args.peer), "-m", str(args.model), "--host", "127.0.0.1", "--port", str(port),
                             "-t", str(args.threads), "-np", str(args.clients), "-c", str(ctx_per_slot * args.clients),
                             "--no-webui"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(port, "/health")
    return proc, port, None


def one_stream(port, key, prompt, max_tokens, out):
    """One streamed chat request; appends (ttft, [inter-token gaps], tokens) to out, or None on error."""
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
                       "temperature": 0.7, "stream": True, "ignore_eos": True})
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = "Bearer " + key
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        t0 = time.monotonic()
        c.request("POST", "/v1/chat/completions", body, headers)
        r = c.getresponse()
        if r.status != 200:
            r.read()
            out.append(None)
            return
        first, last, gaps, n = None, None, [], 0
        for raw in r:
            line = raw.decode("utf-8", "replace").strip()
            if not line.startswith("data:") or line == "data: [DONE]":
                continue
            ev = json.loads(line[5:])
            ch = ev.get("choices") or []
            if ch and (ch[0].get("delta") or {}).get("content"):
                now = time.monotonic()
                if first is None:
                    first = now - t0
                else:
                    gaps.append(now - last)
                last = now
                n += 1
        out.append((first, gaps, n) if first is not None else None)
    except (OSError, ValueError):
        out.append(None)


def load(port, key, args):
    """C clients for warm-up + duration; returns the measured window's stats."""
    t_start = time.monotonic()
    t_measure = t_start + args.warmup
    t_end = t_measure + args.duration
    results, lock = [], threading.Lock()

    def client(i):
        k = i
        while time.monotonic() < t_end:
            out = []
            t_sent = time.monotonic()
            one_stream(port, key, PROMPTS[k % len(PROMPTS)], args.max_tokens, out)
            k += 1
            with lock:
                results.append((t_sent, time.monotonic(), out[0]))

    th = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    for t in th:
        t.start()
    for t in th:
        t.join()
    window = time.monotonic() - t_measure
    done = [r for r in results if r[0] >= t_measure]
    ok = [r[2] for r in done if r[2]]
    ttft = sorted(x[0] for x in ok)
    gaps = sorted(g for x in ok for g in x[1])
    tokens = sum(x[2] for x in ok)

    def pct(v, p):
        return v[min(len(v) - 1, int(p * len(v)))] if v else float("nan")

    return {"requests": len(done), "errors": len(done) - len(ok), "tokens_per_s": tokens / window,
            "ttft_p50_ms": pct(ttft, 0.5) * 1e3, "ttft_p99_ms": pct(ttft, 0.99) * 1e3,
            "itl_p50_ms": pct(gaps, 0.5) * 1e3, "itl_p99_ms": pct(gaps, 0.99) * 1e3}


def run_one(kind, args):
    with tempfile.TemporaryDirectory() as wd:
        proc, port, key = (start_realm if kind == "realm" else start_peer)(args, wd)
        try:
            return load(port, key, args)
        finally:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


def cpu_model():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--duration", type=float, default=30)
    ap.add_argument("--warmup", type=float, default=5)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--model", type=Path, default=CACHE / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--realm", type=Path, default=ROOT / "build" / "realm")
    ap.add_argument("--peer", type=Path, default=PEER)
    args = ap.parse_args()
    for p, what in ((args.model, "model"), (args.realm, "realm (make)"), (args.peer, "llama-server (scripts/setup.sh peers)")):
        if not p.exists():
            raise SystemExit(f"vs_llama_server: {what} not found: {p}")
    runs = {"realm": [], "llama-server": []}
    for r in range(args.reps):
        for kind in ("realm", "llama-server"):
            res = run_one(kind, args)
            runs[kind].append(res)
            print(f"rep {r + 1} {kind:12s} {res['tokens_per_s']:8.1f} tok/s  TTFT p50 {res['ttft_p50_ms']:7.1f} ms "
                  f"p99 {res['ttft_p99_ms']:7.1f} ms  ITL p50 {res['itl_p50_ms']:6.1f} p99 {res['itl_p99_ms']:6.1f} ms  "
                  f"({res['requests']} requests, {res['errors']} errors)", file=sys.stderr)
    med = {k: {m: statistics.median(x[m] for x in v) for m in v[0]} for k, v in runs.items()}
    ratio = {m: med["realm"][m] / med["llama-server"][m] if med["llama-server"][m] else float("nan")
             for m in ("tokens_per_s", "ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms")}
    report = {"cpu": cpu_model(), "model": str(args.model), "clients": args.clients, "duration_s": args.duration,
              "max_tokens": args.max_tokens, "threads": args.threads, "reps": args.reps, "median": med,
              "ratio_realm_over_peer": ratio, "runs": runs}
    out = ROOT / "bench" / "results" / f"vs_llama_server-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps({"median": med, "ratio_realm_over_peer": ratio}, indent=2))
    print(f"written {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
