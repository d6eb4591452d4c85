#!/usr/bin/env python3
"""llamacpp_batched.py — llama.cpp's aggregate decode throughput for N sequences batched together.

This is the comparison point for realm's multi-tenant target ("16 concurrent tenants >= 1.2x
llama.cpp running the same 16 sequences batched, one llama_batch with 16 seq ids").

What it does, for each N in --seqs (through llama-cpp-python's low-level C API, ctypes only):
  * one model load; per N a fresh context with n_seq_max = N, n_ctx large enough for
    N * (prompt + gen) (checked against llama_n_ctx_seq), n_threads = n_threads_batch = -t,
    flash attention left at llama.cpp's default (auto), KV cache per-sequence streams
    (llama.cpp's default kv_unified=false) unless --kv-unified is given;
  * N distinct prompts of --prompt-tokens ids: sequence i is the deterministic LCG stream of
    bench/vs_llamacpp.py with seed 1234 + i, special (control / end-of-generation) ids skipped,
    so sequence 0 has the same prompt for every N; or rows of --prompt-file (one line of
    whitespace-separated ids per sequence, used cyclically if there are fewer lines than N);
  * prefill: all prompts in as few llama_decode calls as fit n_batch (whole prompts, seq ids
    0..N-1, logits only on each prompt's last token) — untimed;
  * decode: --gen steps; each step is ONE llama_batch with one token per sequence (seq id i, its
    own position), logits for all N rows, next token = argmax of its row (greedy, no sampler,
    generation continues past end-of-generation tokens so every step has N rows);
  * timed: the decode phase only. A step's time covers filling the batch, llama_decode and the
    N argmaxes (numpy over llama_get_logits); the llama_decode share is reported separately.
    decode_tok_s = N * gen / (sum of step times). step_ms_p50 / p99 = percentiles of the
    per-step wall times (ms per step of N tokens). Each figure is the median over --reps;
    the memory is cleared (llama_memory_clear) before every repetition, and one untimed
    warm-up (short prefill + 4 steps) runs on each new context first.
  * the greedy tokens of each sequence in the first repetition are kept in the JSON
    ("tokens"), with the prompts, so that a caller can compare them with realm's.
    Expect exact agreement only up to llama.cpp's own numerics: a decode step with N > 1 rows
    takes other matmul kernels than N = 1 (measured: logits differ by up to ~0.3 on the random-
    weight synthetic TinyLlama, whose top-2 margins are often smaller, so its greedy streams part
    after a few tokens; SmolLM2-135M's agree over 32 tokens at N = 16). With --kv-unified a
    sequence's prefill logits also change once a second sequence shares the batch.

    ~/.cache/realm/venv/bin/python bench/llamacpp_batched.py -m MODEL.gguf --seqs 1,4,16 -t 2 \\
        --prompt-tokens 32 --gen 64 --reps 3 [--json OUT] [--prompt-file IDS.txt] [--kv-unified]
"""
import argparse
import ctypes
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vs_llamacpp import cpu_model  # noqa: E402


def lcg_ids(seed, count, ok):
    """The LCG stream of vs_llamacpp.prompt_tokens (ids in [3, n_vocab)), keeping only ids with ok(id)."""
    s, out = seed, []
    n_vocab = ok.n_vocab
    while len(out) < count:
        s = (s * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        t = 3 + (s >> 33) % (n_vocab - 3)
        if ok(t):
            out.append(t)
    return out


def busy_cpus(interval=0.5):
    """CPUs' worth of time others spent busy over interval seconds (from /proc/stat), or None."""
    def snap():
        f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
        return sum(f), f[3] + (f[4] if len(f) > 4 else 0)  # total, idle + iowait
    try:
        t0, i0 = snap()
        time.sleep(interval)
        t1, i1 = snap()
    except (OSError, ValueError, IndexError):
        return None
    return (os.cpu_count() or 1) * (1 - (i1 - i0) / max(1, t1 - t0))


def percentile(xs, q):
    """Linear-interpolated percentile (q in 0..100) of a non-empty list."""
    return float(np.percentile(np.asarray(xs, dtype=np.float64), q))


class Model:
    """A llama.cpp model loaded once; contexts are made per sequence count."""

    def __init__(self, path):
        import llama_cpp as L

        self.L = L
        L.llama_backend_init()
        mp = L.llama_model_default_params()
        self.model = L.llama_model_load_from_file(str(path).encode(), mp)
        if not self.model:
            raise RuntimeError(f"llama.cpp cannot load {path}")
        self.vocab = L.llama_model_get_vocab(self.model)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab)

    def ordinary(self):
        """A predicate for ids that are neither control nor end-of-generation tokens."""
        L, v = self.L, self.vocab

        def ok(t):
            return not L.llama_vocab_is_control(v, t) and not L.llama_vocab_is_eog(v, t)

        ok.n_vocab = self.n_vocab
        return ok

    def close(self):
        self.L.llama_model_free(self.model)


class Batched:
    """One context serving n_seqs sequences with a shared llama_batch."""

    def __init__(self, m, n_seqs, max_prompt, n_gen, threads, kv_unified):
        L = self.L = m.L
        self.m = m
        self.n_seqs = n_seqs
        # llama.cpp pads n_ctx to a multiple of 256 and splits it evenly over the sequences;
        # whole 256-cell slices per sequence keep that split exact.
        per_seq = -(-(max_prompt + n_gen + 8) // 256) * 256
        # Prefill batches hold whole prompts; decode batches hold n_seqs tokens.
        self.n_batch = max(n_seqs, max_prompt, min(n_seqs * max_prompt, 2048))
        cp = L.llama_context_default_params()
        cp.n_ctx = n_seqs * per_seq
        cp.n_batch = self.n_batch
        cp.n_ubatch = self.n_batch
        cp.n_seq_max = n_seqs
        cp.n_threads = threads
        cp.n_threads_batch = threads
        cp.kv_unified = bool(kv_unified)
        cp.no_perf = True
        self.flash_attn_type = int(cp.flash_attn_type)
        self.ctx = L.llama_init_from_model(m.model, cp)
        if not self.ctx:
            raise RuntimeError(f"llama.cpp cannot create a context for {n_seqs} sequences")
        self.n_ctx = L.llama_n_ctx(self.ctx)
        self.n_ctx_seq = L.llama_n_ctx_seq(self.ctx)
        if self.n_ctx_seq < max_prompt + n_gen or L.llama_n_seq_max(self.ctx) < n_seqs:
            raise RuntimeError(f"context too small: n_ctx {self.n_ctx}, n_ctx_seq {self.n_ctx_seq}, "
                               f"n_seq_max {L.llama_n_seq_max(self.ctx)} for {n_seqs} x {max_prompt + n_gen}")
        self.batch = L.llama_batch_init(self.n_batch, 0, 1)
        self.mem = L.llama_get_memory(self.ctx)

    def _submit(self, rows):
        """rows: (token, pos, seq, want_logits) tuples, in batch order."""
        b = self.batch
        b.n_tokens = len(rows)
        for i, (t, p, s, lg) in enumerate(rows):
            b.token[i] = t
            b.pos[i] = p
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = s
            b.logits[i] = 1 if lg else 0
        rc = self.L.llama_decode(self.ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc} (batch of {len(rows)})")

    def _argmax_ith(self, i):
        row = np.ctypeslib.as_array(self.L.llama_get_logits_ith(self.ctx, i), shape=(self.m.n_vocab,))
        return int(row.argmax())

    def prefill(self, prompts):
        """Feeds every prompt (seq id = index); returns each sequence's first greedy token."""
        first = [0] * len(prompts)
        pending = []  # (seq, row index of its last token) in the batch being built
        rows = []

        def flush():
            self._submit(rows)
            for s, r in pending:
                first[s] = self._argmax_ith(r)
            rows.clear()
            pending.clear()

        for s, p in enumerate(prompts):
            if rows and len(rows) + len(p) > self.n_batch:
                flush()
            for j, t in enumerate(p):
                rows.append((t, j, s, j == len(p) - 1))
            pending.append((s, len(rows) - 1))
        if rows:
            flush()
        return first

    def run(self, prompts, n_gen, keep_tokens=False):
        """Clears the memory, prefills, decodes n_gen steps; returns step times, decode times, tokens."""
        L = self.L
        n = len(prompts)
        L.llama_memory_clear(self.mem, True)
        cur = self.prefill(prompts)
        pos = [len(p) for p in prompts]
        out = [[] for _ in range(n)] if keep_tokens else None
        step_s, decode_s = [], []
        b = self.batch
        for _ in range(n_gen):
            t0 = time.perf_counter()
            b.n_tokens = n
            for s in range(n):
                b.token[s] = cur[s]
                b.pos[s] = pos[s]
                b.n_seq_id[s] = 1
                b.seq_id[s][0] = s
                b.logits[s] = 1
            t1 = time.perf_counter()
            rc = L.llama_decode(self.ctx, b)
            t2 = time.perf_counter()
            if rc != 0:
                raise RuntimeError(f"llama_decode returned {rc} (decode step of {n})")
            logits = np.ctypeslib.as_array(L.llama_get_logits(self.ctx), shape=(n, self.m.n_vocab))
            nxt = logits.argmax(axis=1).tolist()
            t3 = time.perf_counter()
            step_s.append(t3 - t0)
            decode_s.append(t2 - t1)
            if keep_tokens:
                for s in range(n):
                    out[s].append(cur[s])
            for s in range(n):
                pos[s] += 1
            cur = nxt
        return step_s, decode_s, out

    def close(self):
        self.L.llama_batch_free(self.batch)
        self.L.llama_free(self.ctx)


def load_prompt_file(path):
    rows = []
    for line in Path(path).read_text().splitlines():
        ids = [int(x) for x in line.split()]
        if ids:
            rows.append(ids)
    if not rows:
        raise SystemExit(f"{path}: no token ids")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("--seqs", default="1,4,16", help="comma-separated sequence counts")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--prompt-file", help="token ids, one line per sequence, used whole (cycled if fewer "
                                          "lines than N); overrides --prompt-tokens")
    ap.add_argument("--gen", type=int, default=64, help="decode steps (tokens per sequence)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--kv-unified", action="store_true", help="one KV buffer shared by all sequences")
    ap.add_argument("--json", help="write results here")
    ap.add_argument("-v", "--verbose", action="store_true", help="show llama.cpp's log")
    a = ap.parse_args()
    seqs = [int(x) for x in a.seqs.split(",") if x.strip()]
    if not seqs or min(seqs) < 1 or a.gen < 1 or a.reps < 1 or a.prompt_tokens < 1:
        ap.error("--seqs, --gen, --reps and --prompt-tokens must be positive")

    import llama_cpp

    logging.getLogger("llama-cpp-python").setLevel(logging.DEBUG if a.verbose else logging.ERROR)
    m = Model(a.model)
    ok = m.ordinary()
    file_rows = load_prompt_file(a.prompt_file) if a.prompt_file else None
    if file_rows and not all(0 <= t < m.n_vocab for r in file_rows for t in r):
        raise SystemExit(f"{a.prompt_file}: token ids must lie in [0, n_vocab {m.n_vocab})")

    load1, busy = os.getloadavg()[0], busy_cpus()
    print(f"# {cpu_model()}, {os.cpu_count()} cpus, {a.threads} threads, load average {load1:.2f}, "
          f"busy before start {busy if busy is not None else float('nan'):.2f} cpus; {Path(a.model).name}, "
          f"{a.gen} decode steps, median of {a.reps}", flush=True)
    if busy is not None and busy > max(0.5, (os.cpu_count() or 1) - a.threads + 0.5):
        print("# warning: other processes keep the CPUs busy; llama.cpp's threads will be preempted and "
              "the timings will be low and noisy", file=sys.stderr, flush=True)
    results = []
    print(f"{'N':>4} {'decode tok/s':>13} {'step p50 ms':>12} {'step p99 ms':>12} {'llama_decode avg ms':>20} "
          f"{'per-seq tok/s':>14}", flush=True)
    for n in seqs:
        if file_rows:
            prompts = [file_rows[i % len(file_rows)] for i in range(n)]
        else:
            prompts = [lcg_ids(1234 + i, a.prompt_tokens, ok) for i in range(n)]
        ctx = Batched(m, n, max(len(p) for p in prompts), a.gen, a.threads, a.kv_unified)
        ctx.run([p[:8] for p in prompts], 4)  # warm-up: pages weights in, sizes the compute graph
        tok_s, p50, p99, dec_ms, reps = [], [], [], [], []
        tokens = None
        for r in range(a.reps):
            step_s, decode_s, toks = ctx.run(prompts, a.gen, keep_tokens=(r == 0))
            if r == 0:
                tokens = toks
            total = sum(step_s)
            tok_s.append(n * a.gen / total)
            p50.append(percentile(step_s, 50) * 1e3)
            p99.append(percentile(step_s, 99) * 1e3)
            dec_ms.append(statistics.mean(decode_s) * 1e3)
            reps.append({"decode_tok_s": tok_s[-1], "step_ms_p50": p50[-1], "step_ms_p99": p99[-1],
                         "llama_decode_ms_mean": dec_ms[-1], "decode_s": total})
        row = {
            "n_seqs": n, "n_gen": a.gen, "prompt_tokens": [len(p) for p in prompts],
            "decode_tok_s": statistics.median(tok_s),
            "step_ms_p50": statistics.median(p50),
            "step_ms_p99": statistics.median(p99),
            "llama_decode_ms_mean": statistics.median(dec_ms),
            "per_seq_tok_s": statistics.median(tok_s) / n,
            "n_ctx": ctx.n_ctx, "n_ctx_seq": ctx.n_ctx_seq, "n_batch": ctx.n_batch,
            "kv_unified": bool(a.kv_unified), "flash_attn_type": ctx.flash_attn_type,
            "reps": reps, "prompts": prompts, "tokens": tokens,
        }
        ctx.close()
        results.append(row)
        print(f"{n:>4} {row['decode_tok_s']:>13.1f} {row['step_ms_p50']:>12.2f} {row['step_ms_p99']:>12.2f} "
              f"{row['llama_decode_ms_mean']:>20.2f} {row['per_seq_tok_s']:>14.1f}", flush=True)
    m.close()

    if a.json:
        out = {
            "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "cpu": cpu_model(), "n_cpus": os.cpu_count(), "threads": a.threads,
            "model": str(Path(a.model).resolve()), "n_vocab": m.n_vocab,
            "llama_cpp_python": llama_cpp.__version__,
            "gen": a.gen, "reps": a.reps, "prompt_file": a.prompt_file,
            "load_average_start": load1, "busy_cpus_start": busy, "load_average_end": os.getloadavg(),
            "results": results,
        }
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
