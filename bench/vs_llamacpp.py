#!/usr/bin/env python3
"""vs_llamacpp.py — realm against llama.cpp on the same files, same threads, same prompt tokens.

For each model (SmolLM2-135M Q4_1, gemma-3-270m Q4_K_M, the synthetic TinyLlama-shape Q4_K_M made
by scripts/gen_synthetic.py if missing) the two engines run alternately, --reps times each:
  realm:     `realm bench -m MODEL -p P -n N -t T --reps 1 --json --tokens-file F` (a fresh process
             per repetition; its untimed warm-up pages the weights in)
  llama.cpp: by default the native `llama-bench` built by `scripts/setup.sh peers`
             (~/.cache/realm/peers/bin; `-p P -n N -t T -r 1` per repetition: prefill P tokens in one
             batch, then N single-token decodes, its own random token ids); with --peer python,
             llama-cpp-python's low-level API (llama_decode on a llama_batch, the same token ids as
             realm, one context for all repetitions, memory cleared before each) — the binding is the
             correctness oracle, the native tool the speed peer.
Both do the same thing: prefill P tokens in one batch with logits for the last row, then decode N
tokens one at a time with logits. Throughput is tokens per second of
each phase; the script reports the median of each engine and the ratio realm / llama.cpp, and
writes everything, with the CPU model, to bench/results/vs_llamacpp-<date>.json.

    ~/.cache/realm/venv/bin/python bench/vs_llamacpp.py [--threads 2] [--reps 5] [-p 512] [-n 128]
        [--models smollm2,gemma3,tinyllama,tinyllama-q4_0,tinyllama-q8_0,qwen3-0.6b,phi3-mini,gemma2-2b] [--realm build/realm]
        [--peer native|python]
"""
import argparse
import ctypes
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import gen_synthetic  # noqa: E402

MODELS_DIR = Path(os.environ.get("REALM_MODELS", Path.home() / ".cache" / "realm" / "models"))
MODELS = {
    "smollm2": MODELS_DIR / "SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma3": MODELS_DIR / "gemma-3-270m-q4_k_m.gguf",
}
# synthetic files made on demand by scripts/gen_synthetic.py: key -> (shape, type); the
# TinyLlama shape in three types (issue 20's prefill targets) and the real-shape files of the
# other architectures (issue 19)
SYNTHETIC = {
    "tinyllama": ("tinyllama", "Q4_K_M"),
    "tinyllama-q4_0": ("tinyllama", "Q4_0"),
    "tinyllama-q8_0": ("tinyllama", "Q8_0"),
    "qwen3-0.6b": ("qwen3-0.6b", "Q4_K_M"),
    "phi3-mini": ("phi3-mini", "Q4_K_M"),
    "gemma2-2b": ("gemma2-2b", "Q4_K_M"),
}
for _key, (_shape, _type) in SYNTHETIC.items():
    MODELS[_key] = gen_synthetic.model_path(_shape, _type, MODELS_DIR / "synthetic")


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def prompt_tokens(n_vocab, count, seed=1234):
    """Deterministic ids in [3, n_vocab) (clear of the usual special ids 0..2)."""
    s, out = seed, []
    for _ in range(count):
        s = (s * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        out.append(3 + (s >> 33) % (n_vocab - 3))
    return out


class LlamaCpp:
    """llama.cpp through llama-cpp-python's C API (ctypes)."""

    def __init__(self, path, n_ctx, n_batch, threads):
        import llama_cpp as L

        self.L = L
        L.llama_backend_init()
        mp = L.llama_model_default_params()
        self.model = L.llama_model_load_from_file(str(path).encode(), mp)
        if not self.model:
            raise RuntimeError(f"llama.cpp cannot load {path}")
        cp = L.llama_context_default_params()
        cp.n_ctx = n_ctx
        cp.n_batch = n_batch
        cp.n_ubatch = n_batch
        cp.n_threads = threads
        cp.n_threads_batch = threads
        cp.no_perf = True
        self.flash_attn_type = int(cp.flash_attn_type)
        self.ctx = L.llama_init_from_model(self.model, cp)
        if not self.ctx:
            raise RuntimeError("llama.cpp cannot create a context")
        self.n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(self.model))
        self.batch = L.llama_batch_init(n_batch, 0, 1)

    def _decode(self, toks, pos0, last_logits=True):
        b = self.batch
        b.n_tokens = len(toks)
        for i, t in enumerate(toks):
            b.token[i] = t
            b.pos[i] = pos0 + i
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = 0
            b.logits[i] = 1 if (last_logits and i == len(toks) - 1) else 0
        rc = self.L.llama_decode(self.ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")
        self.L.llama_get_logits_ith(self.ctx, -1)

    def run(self, toks, n_prompt, n_gen):
        self.L.llama_memory_clear(self.L.llama_get_memory(self.ctx), True)
        t0 = time.perf_counter()
        self._decode(toks[:n_prompt], 0)
        t1 = time.perf_counter()
        for i in range(n_gen):
            self._decode([toks[(n_prompt + i) % len(toks)]], n_prompt + i)
        t2 = time.perf_counter()
        return n_prompt / (t1 - t0), (n_gen / (t2 - t1)) if n_gen else 0.0

    def close(self):
        self.L.llama_batch_free(self.batch)
        self.L.llama_free(self.ctx)
        self.L.llama_model_free(self.model)


PEER_BENCH = Path(os.environ.get("REALM_CACHE", Path.home() / ".cache" / "realm")) / "peers" / "bin" / "llama-bench"


class NativeBench:
    """llama.cpp's own llama-bench (native, the speed peer), one process per repetition."""

    def __init__(self, path, threads, realm):
        if not PEER_BENCH.exists():
            raise SystemExit(f"vs_llamacpp: {PEER_BENCH} missing: run scripts/setup.sh peers (or --peer python)")
        self.path, self.threads = path, threads
        info = json.loads(subprocess.run([realm, "info", str(path), "--json"], capture_output=True, text=True,
                                         check=True).stdout)
        self.n_vocab = info["tokenizer"]["n_vocab"]
        self.flash_attn_type = "llama-bench default"

    def run(self, toks, n_prompt, n_gen):
        cmd = [str(PEER_BENCH), "-m", str(self.path), "-p", str(n_prompt), "-n", str(n_gen), "-t", str(self.threads),
               "-r", "1", "-o", "json"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr.strip()[-500:]}")
        pp = tg = 0.0
        for e in json.loads(r.stdout):
            if e["n_prompt"] > 0:
                pp = e["avg_ts"]
            elif e["n_gen"] > 0:
                tg = e["avg_ts"]
        return pp, tg

    def close(self):
        pass


def realm_run(realm, path, tokfile, n_prompt, n_gen, threads):
    cmd = [realm, "bench", "-m", str(path), "-p", str(n_prompt), "-n", str(n_gen), "-t", str(threads),
           "--reps", "1", "--json", "--tokens-file", tokfile]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr.strip()}")
    j = json.loads(r.stdout)
    return j["prefill_tok_s"], j["decode_tok_s"], j


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", "-t", type=int, default=2)
    ap.add_argument("--reps", "-r", type=int, default=5)
    ap.add_argument("-p", "--n-prompt", type=int, default=512)
    ap.add_argument("-n", "--n-gen", type=int, default=128)
    ap.add_argument("--models", default="smollm2,gemma3,tinyllama")
    ap.add_argument("--realm", default=os.environ.get("REALM_BIN",
                                                      str(Path(os.environ.get("REALM_BUILD", ROOT / "build")) / "realm")))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--peer", choices=("native", "python"), default="native")
    a = ap.parse_args()

    import llama_cpp

    results = []
    for key in [m.strip() for m in a.models.split(",") if m.strip()]:
        path = MODELS[key]
        if key in SYNTHETIC and not path.exists():
            shape, qtype = SYNTHETIC[key]
            gen_synthetic.ensure(shape, [qtype], MODELS_DIR / "synthetic", threads=a.threads,
                                 keep_f16=False)
        if not path.exists():
            print(f"skip {key}: {path} missing", file=sys.stderr)
            continue
        if a.peer == "native":
            llm = NativeBench(path, a.threads, a.realm)
        else:
            llm = LlamaCpp(path, a.n_prompt + a.n_gen + 16, a.n_prompt, a.threads)
        toks = prompt_tokens(llm.n_vocab, a.n_prompt + a.n_gen)
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write(" ".join(map(str, toks)))
            tokfile = f.name
        if a.peer == "python":
            llm.run(toks, min(32, a.n_prompt), min(4, a.n_gen))  # warm-up (llama-bench warms up itself)
        rp, rd, lp, ld = [], [], [], []
        realm_info = None
        for rep in range(a.reps):
            p, d, realm_info = realm_run(a.realm, path, tokfile, a.n_prompt, a.n_gen, a.threads)
            rp.append(p)
            rd.append(d)
            p, d = llm.run(toks, a.n_prompt, a.n_gen)
            lp.append(p)
            ld.append(d)
            print(f"{key} rep {rep + 1}: realm prefill {rp[-1]:.1f} decode {rd[-1]:.1f} | "
                  f"llama.cpp prefill {lp[-1]:.1f} decode {ld[-1]:.1f} tok/s", flush=True)
        os.unlink(tokfile)
        fa = llm.flash_attn_type
        llm.close()
        row = {
            "model": key, "file": path.name, "bytes": path.stat().st_size,
            "n_prompt": a.n_prompt, "n_gen": a.n_gen, "threads": a.threads, "reps": a.reps,
            "realm": {"prefill_tok_s": rp, "decode_tok_s": rd, "prefill_median": statistics.median(rp),
                      "decode_median": statistics.median(rd), "isa": realm_info.get("isa") if realm_info else None},
            "llama_cpp": {"prefill_tok_s": lp, "decode_tok_s": ld, "prefill_median": statistics.median(lp),
                          "decode_median": statistics.median(ld), "flash_attn_type": fa},
        }
        row["ratio_prefill"] = row["realm"]["prefill_median"] / row["llama_cpp"]["prefill_median"]
        row["ratio_decode"] = row["realm"]["decode_median"] / row["llama_cpp"]["decode_median"]
        results.append(row)
        print(f"== {key}: prefill realm {row['realm']['prefill_median']:.1f} vs llama.cpp "
              f"{row['llama_cpp']['prefill_median']:.1f} tok/s (x{row['ratio_prefill']:.2f}); decode realm "
              f"{row['realm']['decode_median']:.1f} vs llama.cpp {row['llama_cpp']['decode_median']:.1f} tok/s "
              f"(x{row['ratio_decode']:.2f})", flush=True)
    if not results:
        return 1
    out = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "cpu": cpu_model(), "n_cpus": os.cpu_count(), "threads": a.threads,
        "llama_cpp_python": llama_cpp.__version__, "realm": a.realm,
        "peer": str(PEER_BENCH) if a.peer == "native" else "llama-cpp-python",
        "load_average": os.getloadavg(),
        "results": results,
    }
    Path(a.out).mkdir(parents=True, exist_ok=True)
    dst = Path(a.out) / f"vs_llamacpp-{time.strftime('%Y%m%d-%H%M%S')}.json"
    dst.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
