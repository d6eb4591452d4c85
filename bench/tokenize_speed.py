#!/usr/bin/env python3
"""Tokenizer throughput: realm vs llama.cpp (llama-cpp-python, vocab_only=True) in the same run.

Tokenizes 1 MB of English text (assembled deterministically from the license texts and README
files under /usr/share; --text FILE to use another file) with each vocabulary — by default the
32k SPM vocab ggml-vocab-llama-spm.gguf and the 50k BPE vocab ggml-vocab-gpt-2.gguf from
../shared/testdata/llama-vocab, plus the cached SmolLM2 / gemma-3 models when present — and
reports MB/s of each tokenizer (best of --repeat runs, tokenization only: realm's time comes from
`realm tokenize --timing`, which excludes loading) and whether the token ids are identical.

    bench/tokenize_speed.py [--realm build/realm] [--bytes 1000000] [--repeat 3] [--json]
"""
import argparse
import gzip
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("REALM_SHARED", ROOT.parent / "shared"))
MODELS = pathlib.Path(os.environ.get("REALM_MODELS", pathlib.Path.home() / ".cache/realm/models"))


def english_corpus(n):
    """n bytes of English prose: license texts, then READMEs, in sorted order."""
    files = []
    lic = pathlib.Path("/usr/share/common-licenses")
    if lic.is_dir():
        files += sorted(lic.iterdir())
    for root, dirs, fs in sorted(os.walk("/usr/share/doc")):
        dirs.sort()
        files += [pathlib.Path(root) / f for f in sorted(fs)
                  if f.startswith("README") or f.endswith((".md", ".md.gz", ".txt", ".txt.gz"))]
    out, seen, total = [], set(), 0
    for p in files:
        try:
            rp = p.resolve()
            if rp in seen or not rp.is_file():
                continue
            seen.add(rp)
            data = gzip.open(rp).read() if rp.suffix == ".gz" else rp.read_bytes()
            data.decode("utf-8")
        except (OSError, UnicodeDecodeError, EOFError):
            continue
        out.append(data)
        total += len(data)
        if total >= n:
            break
    blob = b"\n".join(out)
    if not blob:
        raise SystemExit("no English text found under /usr/share; pass --text FILE")
    while len(blob) < n:
        blob += b"\n" + blob
    blob = blob[:n]
    while True:  # end on a character boundary
        try:
            blob.decode("utf-8")
            return blob
        except UnicodeDecodeError:
            blob = blob[:-1]


def run_realm(realm, model, path, repeat):
    best, ids = None, None
    for _ in range(repeat):
        r = subprocess.run([realm, "tokenize", "-m", str(model), "--no-bos", "--timing", "--file", path],
                           capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise RuntimeError(f"realm tokenize failed: {r.stderr.strip()}")
        m = re.search(r"in ([0-9.]+) ms", r.stderr)
        dt = float(m.group(1)) / 1e3
        best = dt if best is None else min(best, dt)
        ids = [int(x) for x in r.stdout.split()]
    return best, ids


def run_llama(model, data, repeat):
    import llama_cpp
    m = llama_cpp.Llama(model_path=str(model), vocab_only=True, verbose=False)
    best, ids = None, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        ids = m.tokenize(data, add_bos=False, special=False)
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    return best, ids


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--realm", default=str(pathlib.Path(os.environ.get("REALM_BUILD", ROOT / "build")) / "realm"))
    ap.add_argument("--bytes", type=int, default=1_000_000)
    ap.add_argument("--text", help="tokenize this file instead of the built-in English corpus")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--model", action="append", help="GGUF file(s) to use instead of the defaults")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if not os.path.exists(a.realm):
        raise SystemExit(f"{a.realm} not found (build it, or pass --realm)")
    try:
        import llama_cpp  # noqa: F401
        have_llama = True
    except ImportError:
        have_llama = False

    data = pathlib.Path(a.text).read_bytes() if a.text else english_corpus(a.bytes)
    models = [pathlib.Path(m) for m in a.model] if a.model else [
        SHARED / "testdata/llama-vocab/ggml-vocab-llama-spm.gguf",
        SHARED / "testdata/llama-vocab/ggml-vocab-gpt-2.gguf",
        MODELS / "SmolLM2-135M-Instruct.Q4_1.gguf",
        MODELS / "gemma-3-270m-q4_k_m.gguf",
    ]
    rows = []
    with tempfile.NamedTemporaryFile(suffix=".txt") as f:
        f.write(data)
        f.flush()
        for model in models:
            if not model.exists():
                continue
            dt, ids = run_realm(a.realm, model, f.name, a.repeat)
            row = {"model": model.name, "bytes": len(data), "tokens": len(ids),
                   "realm_ms": round(dt * 1e3, 2), "realm_mb_s": round(len(data) / dt / 1e6, 2)}
            if have_llama:
                ldt, lids = run_llama(model, data, a.repeat)
                row.update({"llama_cpp_ms": round(ldt * 1e3, 2),
                            "llama_cpp_mb_s": round(len(data) / ldt / 1e6, 2),
                            "same_ids": ids == lids})
            rows.append(row)
    if a.json:
        print(json.dumps({"text_bytes": len(data), "results": rows}, indent=2))
        return 0
    print(f"tokenizing {len(data)} bytes of English text (best of {a.repeat})")
    print(f"{'vocab':40} {'tokens':>8} {'realm MB/s':>11} {'llama.cpp MB/s':>15} {'same ids':>9}")
    for r in rows:
        print(f"{r['model']:40} {r['tokens']:>8} {r['realm_mb_s']:>11.2f} "
              f"{r.get('llama_cpp_mb_s', float('nan')):>15.2f} {str(r.get('same_ids', '-')):>9}")
    if not have_llama:
        print("(llama-cpp-python not installed: llama.cpp column empty)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
