#!/usr/bin/env python3
"""Writes tests/quant_fixtures/*.bin: small reference cases from llama.cpp for tests/test_quant.c.

Sources of truth:
  * rows of real tensors of each quantized type in the cached models (SmolLM2-135M Q4_1,
    gemma-3-270m Q4_K_M), dequantized with gguf-py (gguf.quants.dequantize);
  * for the types those models lack, rows quantized by llama.cpp's own quantize_row_<t>_ref
    (from the libggml-base.so shipped in llama-cpp-python, called through ctypes);
  * activation quantization (Q8_0, Q8_1, Q8_K) and the legacy weight quantizers by llama.cpp's
    quantize_row_<t>_ref, cross-checked against gguf-py where gguf-py has the type;
  * dot products by llama.cpp's ggml_vec_dot_<t>_<u> as its CPU backend dispatches it here
    (libggml-cpu.so; the scalar _generic variants are compared too and differences reported:
    the q5_0 one in llama-cpp-python 0.3.x disagrees with its own dequantization).
Every dequantization fixture is also cross-checked against llama.cpp's dequantize_row_<t>.

File format (little-endian), read by tests/test_quant.c:
  "RQF1", u32 kind, u32 type, u32 n_rows, u32 n_per_row, u32 aux, then
  kind 1 (dequantize): n_rows rows of `type` blocks, then n_rows*n_per_row f32 expected values
  kind 2 (quantize):   n_rows*n_per_row f32 inputs, then n_rows rows of `type` blocks expected
  kind 3 (dot):        aux = activation type; weight rows, activation rows, n_rows f32 dots

Usage: ~/.cache/realm/venv/bin/python scripts/gen_quant_fixtures.py [--out DIR]
Needs: numpy, gguf, llama_cpp (for its ggml libraries); the two cached models.
"""
import argparse
import ctypes
import os
import struct
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES

KIND_DEQUANT, KIND_QUANT, KIND_DOT = 1, 2, 3
MAX_N = 512  # elements per fixture row

MODELS_DIR = os.environ.get("REALM_MODELS", os.path.expanduser("~/.cache/realm/models"))
MODELS = ["SmolLM2-135M-Instruct.Q4_1.gguf", "gemma-3-270m-q4_k_m.gguf"]

VEC_DOT_TYPE = {
    T.Q4_0: T.Q8_0, T.Q5_0: T.Q8_0, T.Q8_0: T.Q8_0,
    T.Q4_1: T.Q8_1, T.Q5_1: T.Q8_1,
    T.Q2_K: T.Q8_K, T.Q3_K: T.Q8_K, T.Q4_K: T.Q8_K, T.Q5_K: T.Q8_K, T.Q6_K: T.Q8_K,
}


def load_ggml():
    import llama_cpp
    libdir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    base = ctypes.CDLL(os.path.join(libdir, "libggml-base.so"), mode=ctypes.RTLD_GLOBAL)
    cpu = ctypes.CDLL(os.path.join(libdir, "libggml-cpu.so"), mode=ctypes.RTLD_GLOBAL)
    cpu.ggml_cpu_init()  # fills the fp16 tables the CPU kernels convert scales with
    return base, cpu


BASE, CPU = load_ggml()
VP, FP = ctypes.c_void_p, ctypes.POINTER(ctypes.c_float)


# gguf-py still lists Q8_1 as 40 bytes (float d and s); ggml's block_q8_1 is 2 halves + 32 = 36
SIZES = dict(GGML_QUANT_SIZES)
SIZES[T.Q8_1] = (32, 36)


def row_bytes(t, n):
    bs, ts = SIZES[t]
    assert n % bs == 0
    return n // bs * ts


def ggml_quantize(t, x):
    """llama.cpp quantize_row_<t>_ref on a float32 row."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.zeros(row_bytes(t, x.size), dtype=np.uint8)
    f = getattr(BASE, f"quantize_row_{t.name.lower().replace('_k', '_K')}_ref")
    f.argtypes, f.restype = [VP, VP, ctypes.c_int64], None
    f(x.ctypes.data, out.ctypes.data, x.size)
    return out


def ggml_dequantize(t, raw, n):
    raw = np.ascontiguousarray(raw, dtype=np.uint8)
    out = np.zeros(n, dtype=np.float32)
    f = getattr(BASE, f"dequantize_row_{t.name.lower().replace('_k', '_K')}")
    f.argtypes, f.restype = [VP, VP, ctypes.c_int64], None
    f(raw.ctypes.data, out.ctypes.data, n)
    return out


def ggml_vec_dot(t, u, n, w, a, generic=False):
    """llama.cpp's dot kernel as its CPU backend dispatches it on this machine (or the scalar
    _generic one)."""
    name = f"ggml_vec_dot_{t.name.lower().replace('_k', '_K')}_{u.name.lower().replace('_k', '_K')}"
    f = getattr(CPU, name + ("_generic" if generic else ""))
    f.argtypes = [ctypes.c_int, FP, ctypes.c_size_t, VP, ctypes.c_size_t, VP, ctypes.c_size_t, ctypes.c_int]
    f.restype = None
    w = np.ascontiguousarray(w, dtype=np.uint8)
    a = np.ascontiguousarray(a, dtype=np.uint8)
    s = ctypes.c_float(0)
    f(n, ctypes.byref(s), 0, w.ctypes.data, 0, a.ctypes.data, 0, 1)
    return s.value


def write(path, kind, t, n_rows, n, aux, *parts):
    with open(path, "wb") as fh:
        fh.write(b"RQF1" + struct.pack("<5I", kind, int(t), n_rows, n, int(aux)))
        for p in parts:
            fh.write(np.ascontiguousarray(p).tobytes())
    print(f"  {os.path.basename(path)}: {os.path.getsize(path)} bytes")


def activations(rng, n_rows, n):
    """Random rows with the hard cases of the 8-bit quantizers: an all-zero block, an outlier,
    and exact .5 ties after scaling (block max 127 gives scale 1)."""
    x = (rng.standard_normal((n_rows, n)) * 1.5).astype(np.float32)
    x[0, :32] = 0.0
    if n_rows > 1:
        x[1, n // 3] = 60.0
    if n_rows > 2:
        x[2] = (rng.integers(-126, 126, n) + 0.5).astype(np.float32)
        x[2, ::32] = 127.0
        x[2, 1::256] = -127.0
    return x


def model_rows(per_type):
    """{type: (rows uint8 [n_rows, row_bytes], n_per_row, source)} from the first small tensor of
    each quantized type in the models."""
    for m in MODELS:
        path = os.path.join(MODELS_DIR, m)
        if not os.path.exists(path):
            sys.exit(f"missing model {path} (scripts/fetch-models.sh)")
        r = gguf.GGUFReader(path)
        for tn in sorted(r.tensors, key=lambda t: int(t.n_elements)):
            t = T(int(tn.tensor_type))
            if t in per_type or t not in VEC_DOT_TYPE or len(tn.shape) != 2:
                continue
            n = int(tn.shape[0])
            data = np.asarray(tn.data, dtype=np.uint8).reshape(-1, row_bytes(t, n))
            # two rows from the middle of the tensor (real scales, not the first row only), cut
            # to their first MAX_N elements to keep the files small
            mid = data.shape[0] // 2
            k = min(n, MAX_N)
            per_type[t] = (data[mid:mid + 2, :row_bytes(t, k)].copy(), k,
                           f"{m}:{tn.name} rows {mid}-{mid + 1}, first {k} of {n}")
    return per_type


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "quant_fixtures"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(20250601)

    rows = model_rows({})
    # types the models lack: rows of synthetic weights quantized by llama.cpp itself
    for t in [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]:
        if t in rows:
            continue
        n = 512
        w = (rng.standard_normal((2, n)) * 0.05).astype(np.float32)
        rows[t] = (np.stack([ggml_quantize(t, w[i]) for i in range(2)]), n, "synthetic, llama.cpp quantize_row_ref")

    for t, (raw, n, src) in sorted(rows.items(), key=lambda kv: int(kv[0])):
        print(f"{t.name}: {src}")
        deq = gguf.quants.dequantize(raw, t).astype(np.float32).reshape(raw.shape[0], n)
        for i in range(raw.shape[0]):
            ref = ggml_dequantize(t, raw[i], n)
            if not np.array_equal(ref.view(np.uint32), deq[i].view(np.uint32)):
                bad = int(np.sum(ref.view(np.uint32) != deq[i].view(np.uint32)))
                print(f"  note: gguf-py and llama.cpp dequantize differ in {bad} values; using llama.cpp")
                deq[i] = ref
        write(os.path.join(args.out, f"dequant_{t.name.lower()}.bin"), KIND_DEQUANT, t, raw.shape[0], n, 0,
              raw, deq)
        # dot with activations quantized by llama.cpp, computed by llama.cpp's scalar kernel
        u = VEC_DOT_TYPE[t]
        x = activations(rng, raw.shape[0], n)
        acts = np.stack([ggml_quantize(u, x[i]) for i in range(raw.shape[0])])
        dots = np.array([ggml_vec_dot(t, u, n, raw[i], acts[i]) for i in range(raw.shape[0])], dtype=np.float32)
        gen = np.array([ggml_vec_dot(t, u, n, raw[i], acts[i], True) for i in range(raw.shape[0])], dtype=np.float32)
        if not np.allclose(dots, gen, rtol=1e-4, atol=1e-5):
            print(f"  note: llama.cpp {t.name} _generic dot {gen} != dispatched {dots}; using dispatched")
        write(os.path.join(args.out, f"dot_{t.name.lower()}.bin"), KIND_DOT, t, raw.shape[0], n, u, raw, acts, dots)

    # activation quantizers, bit for bit
    for u, n in [(T.Q8_0, 512), (T.Q8_1, 512), (T.Q8_K, 512)]:
        x = activations(rng, 3, n)
        q = np.stack([ggml_quantize(u, x[i]) for i in range(3)])
        if u == T.Q8_0:
            assert np.array_equal(gguf.quants.quantize(x, u).reshape(3, -1), q), "gguf-py Q8_0 != llama.cpp"
        write(os.path.join(args.out, f"quant_{u.name.lower()}.bin"), KIND_QUANT, u, 3, n, 0, x, q)
    # the legacy weight quantizers realm also provides
    for t in [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1]:
        n = 256
        x = (rng.standard_normal((2, n)) * 0.05).astype(np.float32)
        x[1, :32] = 0.0
        q = np.stack([ggml_quantize(t, x[i]) for i in range(2)])
        write(os.path.join(args.out, f"quant_{t.name.lower()}.bin"), KIND_QUANT, t, 2, n, 0, x, q)


if __name__ == "__main__":
    main()
