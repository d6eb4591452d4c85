#!/usr/bin/env python3
"""vs_llamacpp_batched.py — realm's multi-tenant batched decode against llama.cpp's batched decode.

For each count T in --tenants, alternately for --rounds rounds (so both see the same machine state):
  * realm:     `realm bench -m MODEL --tenants T -p P -n G -t THREADS --reps 1 --json`
               (T tenant threads, each its own paged session, decoding greedily through the
               continuous-batching scheduler);
  * llama.cpp: by default the native `llama-batched-bench -npp P -ntg G -npl T -t THREADS` built by
               `scripts/setup.sh peers` (T sequences, one batch per step; its aggregate text-generation
               speed); with --peer python, `bench/llamacpp_batched.py -m MODEL --seqs T --prompt-tokens P
               --gen G -t THREADS --reps 1 --json` (one llama_batch with T seq ids per step,
               llama-cpp-python, greedy tokens kept for comparison).
Prints and writes (bench/results/batched-<time>.json) the median aggregate decode tok/s of each,
their ratio, and realm's speed-up over its own single-tenant figure (T=1 must be in the list for
that). Issue 7's targets: at T=16 on the TinyLlama-shape Q4_K_M, realm >= 3x realm's T=1 and
>= 1.2x llama.cpp's T=16.

    ~/.cache/realm/venv/bin/python bench/vs_llamacpp_batched.py \\
        -m ~/.cache/realm/models/synthetic/synthetic-tinyllama-Q4_K_M.gguf --tenants 1,16 --rounds 3
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from vs_llamacpp import cpu_model  # noqa: E402


def run_realm(realm, model, t, p, g, threads):
    out = subprocess.run([realm, "bench", "-m", model, "--tenants", str(t), "-p", str(p), "-n", str(g),
                          "-t", str(threads), "--reps", "1", "--json"],
                         check=True, capture_output=True, text=True).stdout
    r = json.loads(out)["results"][0]
    return r["decode_tok_s"], r["token_ms_p50"], r["token_ms_p99"]


PEER_BATCHED = Path.home() / ".cache" / "realm" / "peers" / "bin" / "llama-batched-bench"


def run_native(model, t, p, g, threads):
    """llama-batched-bench: aggregate decode tok/s of t sequences, mean ms per step (no p99)."""
    if not PEER_BATCHED.exists():
        raise SystemExit(f"vs_llamacpp_batched: {PEER_BATCHED} missing: run scripts/setup.sh peers (or --peer python)")
    ctx = t * (p + g) + 64
    out = subprocess.run([str(PEER_BATCHED), "-m", model, "-c", str(ctx), "-b", str(max(512, t * p)), "-ub", "512",
                          "-npp", str(p), "-ntg", str(g), "-npl", str(t), "-t", str(threads), "--output-format", "jsonl"],
                         check=True, capture_output=True, text=True).stdout
    r = json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])
    return r["speed_tg"], r["t_tg"] / g * 1e3, None


def run_llamacpp(model, t, p, g, threads):
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        subprocess.run([sys.executable, str(HERE / "llamacpp_batched.py"), "-m", model, "--seqs", str(t),
                        "--prompt-tokens", str(p), "--gen", str(g), "-t", str(threads), "--reps", "1",
                        "--json", f.name], check=True, capture_output=True, text=True)
        r = json.load(open(f.name))["results"][0]
    return r["decode_tok_s"], r["step_ms_p50"], r["step_ms_p99"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("--tenants", default="1,16")
    ap.add_argument("-p", "--prompt-tokens", type=int, default=32)
    ap.add_argument("-n", "--gen", type=int, default=32)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--realm", default=str(ROOT / "build/realm"))
    ap.add_argument("--out", help="JSON path [bench/results/batched-<time>.json]")
    ap.add_argument("--peer", choices=("native", "python"), default="native")
    a = ap.parse_args()
    peer = run_native if a.peer == "native" else run_llamacpp
    counts = [int(x) for x in a.tenants.split(",")]
    runs = {t: {"realm": [], "llamacpp": []} for t in counts}
    for rnd in range(a.rounds):
        for t in counts:
            r = run_realm(a.realm, a.model, t, a.prompt_tokens, a.gen, a.threads)
            ll = peer(a.model, t, a.prompt_tokens, a.gen, a.threads)
            runs[t]["realm"].append(r)
            runs[t]["llamacpp"].append(ll)
            print(f"round {rnd + 1} T={t}: realm {r[0]:.2f} tok/s, llama.cpp {ll[0]:.2f} tok/s", file=sys.stderr)
    results = []
    base = None
    for t in counts:
        rm = statistics.median(x[0] for x in runs[t]["realm"])
        lm = statistics.median(x[0] for x in runs[t]["llamacpp"])
        if t == 1:
            base = rm
        results.append({
            "tenants": t, "realm_tok_s": round(rm, 3), "llamacpp_tok_s": round(lm, 3), "ratio": round(rm / lm, 3),
            "realm_speedup_vs_1": round(rm / base, 3) if base else None,
            "realm_token_ms_p50": round(statistics.median(x[1] for x in runs[t]["realm"]), 3),
            "realm_token_ms_p99": round(statistics.median(x[2] for x in runs[t]["realm"]), 3),
            "llamacpp_step_ms_p50": round(statistics.median(x[1] for x in runs[t]["llamacpp"]), 3),
            "realm_runs": [x[0] for x in runs[t]["realm"]], "llamacpp_runs": [x[0] for x in runs[t]["llamacpp"]],
        })
    print(f"{'tenants':>8} {'realm tok/s':>12} {'llama.cpp':>10} {'ratio':>7} {'realm vs T=1':>13}")
    for r in results:
        sp = f"{r['realm_speedup_vs_1']:.2f}x" if r["realm_speedup_vs_1"] else "-"
        print(f"{r['tenants']:>8} {r['realm_tok_s']:>12.2f} {r['llamacpp_tok_s']:>10.2f} {r['ratio']:>6.2f}x {sp:>13}")
    doc = {"cpu": cpu_model(), "threads": a.threads, "model": a.model, "peer": a.peer, "prompt_tokens": a.prompt_tokens,
           "gen": a.gen, "rounds": a.rounds, "results": results}
    out = Path(a.out) if a.out else ROOT / "bench/results" / time.strftime("batched-%Y%m%d-%H%M%S.json")
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
