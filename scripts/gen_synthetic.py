#!/usr/bin/env python3
"""gen_synthetic.py — random-weight GGUF models of real shapes, for parity tests and benchmarks.

Writes an F16 GGUF (llama, qwen2, qwen3, phi3 or gemma2 architecture, random weights, a made-up SentencePiece-style
vocabulary) with gguf-py, then quantizes it with llama.cpp's own quantizer through
llama-cpp-python (llama_cpp.llama_model_quantize), so realm and llama.cpp are compared on files
llama.cpp itself produced. Output goes to ~/.cache/realm/models/synthetic/ (never the repository):

    synthetic-<shape>-<TYPE>.gguf        e.g. synthetic-tiny-Q4_K_M.gguf, synthetic-tinyllama-Q4_K_M.gguf

Everything is deterministic for a given --seed (numpy PCG64), so the same command gives the same F16
file; quantized files are as deterministic as llama.cpp's quantizer (same version, same bytes).

    scripts/gen_synthetic.py --shape tiny --types Q4_K_M,Q6_K,Q8_0,Q5_K,Q3_K,Q2_K
    scripts/gen_synthetic.py --shape tinyllama --types Q4_K_M
    scripts/gen_synthetic.py --shape tiny-gemma2 --types F16,Q8_0,Q4_K_M,Q4_0
    scripts/gen_synthetic.py --shape qwen3-0.6b --types Q4_K_M --drop-f16    (benchmark shapes:
        qwen3-0.6b, phi3-mini, gemma2-2b; 1-5 GB of F16 each before quantizing)

Weights: embeddings N(0, 1); projections N(0, 1/fan_in) so that activations stay O(1); norms
1 + N(0, 0.1); output N(0, 4/n_embd) so the logits are peaked enough for a stable argmax.
"""
import argparse
import ctypes
import os
import sys
import time
from pathlib import Path

import numpy as np

SHAPES = {
    # name: (arch, n_embd, n_layer, n_ff, n_head, n_head_kv, n_vocab, n_ctx)
    "tiny": ("llama", 256, 4, 768, 4, 2, 1024, 2048),
    "tiny-qwen2": ("qwen2", 256, 4, 768, 4, 2, 1024, 2048),
    "tiny-qwen3": ("qwen3", 256, 4, 768, 4, 2, 1024, 2048),
    "tiny-phi3": ("phi3", 256, 4, 768, 4, 2, 1024, 2048),
    "tiny-gemma2": ("gemma2", 256, 4, 768, 4, 2, 1024, 2048),
    "tinyllama": ("llama", 2048, 22, 5632, 32, 4, 32000, 2048),
    # the real small-model shapes, for benchmarks (vocabulary and context as the released files)
    "qwen3-0.6b": ("qwen3", 1024, 28, 3072, 16, 8, 151936, 40960),
    "phi3-mini": ("phi3", 3072, 32, 8192, 32, 32, 32064, 4096),
    "gemma2-2b": ("gemma2", 2304, 26, 9216, 8, 4, 256000, 8192),
}

# Per-shape features beyond the tuple (absent: n_embd / n_head heads, full rotary, separate output):
#   head_dim: attention.key_length when it differs from n_embd / n_head (qwen3, gemma2 do)
#   n_rot: partial rotary (phi3-style rope.dimension_count < head_dim)
#   tied: no output.weight (token_embd is the classifier)
#   rope_factors: phi3 128k-style rope_factors_short/_long (+ original context, attn_factor)
#   window, softcap: gemma2's sliding window and (attention, final) logit soft-capping; phi3's
#   window is written as the released files do (llama.cpp ignores it)
EXTRA = {
    "tiny-qwen3": {"head_dim": 128, "tied": True},
    # rope_factors with original_context_length == context_length: llama.cpp (n_ctx <= 2048) and
    # realm both take the short factors; 48 of 64 dims rotated
    "tiny-phi3": {"n_rot": 48, "rope_factors": True, "window": 2047},
    # a 16-token window so the fixed 64-token sequence reaches it; small caps so tanh bends
    "tiny-gemma2": {"head_dim": 128, "tied": True, "window": 16, "softcap": (4.0, 8.0)},
    "qwen3-0.6b": {"head_dim": 128, "tied": True},
    "phi3-mini": {"window": 2047},
    "gemma2-2b": {"head_dim": 256, "tied": True, "window": 4096, "softcap": (50.0, 30.0)},
}

# llama.cpp file types (enum llama_ftype); short aliases as in the issue
FTYPES = {
    "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9,
    "Q2_K": 10, "Q3_K_S": 11, "Q3_K_M": 12, "Q3_K_L": 13, "Q4_K_S": 14, "Q4_K_M": 15,
    "Q5_K_S": 16, "Q5_K_M": 17, "Q6_K": 18,
    "Q3_K": 12, "Q4_K": 15, "Q5_K": 17,
}

DEFAULT_DIR = Path.home() / ".cache" / "realm" / "models" / "synthetic"


def fake_vocab(n_vocab):
    """An SPM-style vocabulary: <unk> <s> </s>, the 256 byte tokens, then '▁'-prefixed letter
    strings in order of length (a, b, ..., aa, ab, ...), all distinct."""
    import gguf

    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL] + [gguf.TokenType.BYTE] * 256
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = []
    length = 1
    while len(tokens) + len(words) < n_vocab:
        # all strings of `length` letters, in order
        idx = [0] * length
        while True:
            words.append("".join(letters[i] for i in idx))
            if len(tokens) + len(words) >= n_vocab:
                break
            k = length - 1
            while k >= 0 and idx[k] == 25:
                idx[k] = 0
                k -= 1
            if k < 0:
                break
            idx[k] += 1
        length += 1
    for i, w in enumerate(words):
        tokens.append(("\u2581" + w) if i % 2 == 0 else w)
        types.append(gguf.TokenType.NORMAL)
    tokens = tokens[:n_vocab]
    types = types[:n_vocab]
    scores = [0.0, 0.0, 0.0] + [0.0] * 256 + [-float(i) for i in range(n_vocab - 259)]
    return tokens, scores[:n_vocab], types


def tensor_plan(arch, E, L, F, H, HKV, V, hd=None, n_rot=None, tied=False, rope_factors=False):
    """(name, shape as numpy (rows, cols), kind) in file order; kind picks the init. Tensor names
    and fusions as llama.cpp loads them: phi3 has one attn_qkv (Q, K, V rows) and ffn_up = gate‖up
    (2 n_ff rows, no ffn_gate); qwen3 adds per-head Q/K norms; gemma2 post-norms."""
    hd = hd or E // H
    plan = [("token_embd.weight", (V, E), "embd")]
    if rope_factors:
        half = (n_rot or hd) // 2
        plan += [("rope_factors_long.weight", (half,), "factor"), ("rope_factors_short.weight", (half,), "factor")]
    for i in range(L):
        p = f"blk.{i}."
        plan += [(p + "attn_norm.weight", (E,), "norm")]
        if arch == "phi3":
            plan += [(p + "attn_qkv.weight", ((H + 2 * HKV) * hd, E), "proj")]
        else:
            plan += [
                (p + "attn_q.weight", (H * hd, E), "proj"),
                (p + "attn_k.weight", (HKV * hd, E), "proj"),
                (p + "attn_v.weight", (HKV * hd, E), "proj"),
            ]
        plan += [(p + "attn_output.weight", (E, H * hd), "proj")]
        if arch == "qwen2":
            plan += [
                (p + "attn_q.bias", (H * hd,), "bias"),
                (p + "attn_k.bias", (HKV * hd,), "bias"),
                (p + "attn_v.bias", (HKV * hd,), "bias"),
            ]
        if arch == "qwen3":
            plan += [(p + "attn_q_norm.weight", (hd,), "norm"), (p + "attn_k_norm.weight", (hd,), "norm")]
        if arch == "gemma2":
            plan += [(p + "post_attention_norm.weight", (E,), "norm")]
        plan += [(p + "ffn_norm.weight", (E,), "norm")]
        if arch == "phi3":
            plan += [(p + "ffn_up.weight", (2 * F, E), "proj")]
        else:
            plan += [(p + "ffn_gate.weight", (F, E), "proj"), (p + "ffn_up.weight", (F, E), "proj")]
        plan += [(p + "ffn_down.weight", (E, F), "proj")]
        if arch == "gemma2":
            plan += [(p + "post_ffw_norm.weight", (E,), "norm")]
    plan += [("output_norm.weight", (E,), "norm")]
    if not tied:
        plan += [("output.weight", (V, E), "out")]
    return plan


def make_tensor(rng, shape, kind):
    if kind == "norm":
        return (1.0 + 0.1 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
    if kind == "bias":
        return (0.1 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
    if kind == "factor":  # RoPE frequency divisors, >= 1 as in the 128k phi3 files
        return (1.0 + 3.0 * rng.random(shape, dtype=np.float32)).astype(np.float32)
    x = rng.standard_normal(shape, dtype=np.float32)
    if kind == "proj":
        x *= 1.0 / np.sqrt(shape[1])
    elif kind in ("out", "embd_tied"):
        x *= 2.0 / np.sqrt(shape[1])
    return x.astype(np.float16)


def write_f16(path, shape_name, seed):
    import gguf

    arch, E, L, F, H, HKV, V, ctx = SHAPES[shape_name]
    ex = EXTRA.get(shape_name, {})
    hd = ex.get("head_dim", E // H)
    n_rot = ex.get("n_rot", hd)
    rng = np.random.Generator(np.random.PCG64(seed))
    w = gguf.GGUFWriter(str(path), arch)
    # llama.cpp's vocab loader special-cases names containing "phi3" (it wants <|endoftext|>)
    w.add_name(f"realm synthetic {shape_name.replace('phi3', 'phi_3')} (random weights, seed {seed})")
    w.add_context_length(ctx)
    w.add_embedding_length(E)
    w.add_block_count(L)
    w.add_feed_forward_length(F)
    w.add_head_count(H)
    w.add_head_count_kv(HKV)
    if hd != E // H:
        w.add_key_length(hd)
        w.add_value_length(hd)
    w.add_layer_norm_rms_eps(1e-5 if arch in ("llama", "phi3") else 1e-6)
    w.add_rope_freq_base(1000000.0 if arch in ("qwen2", "qwen3") else 10000.0)
    w.add_rope_dimension_count(n_rot)
    if ex.get("rope_factors"):
        w.add_rope_scaling_orig_ctx_len(ctx)
        w.add_rope_scaling_attn_factors(1.1902380714238083)
    if "window" in ex:
        w.add_sliding_window(ex["window"])
    if "softcap" in ex:
        w.add_attn_logit_softcapping(ex["softcap"][0])
        w.add_final_logit_softcapping(ex["softcap"][1])
    w.add_file_type(1)  # MOSTLY_F16
    tokens, scores, types = fake_vocab(V)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    plan = tensor_plan(arch, E, L, F, H, HKV, V, hd, n_rot, ex.get("tied", False), ex.get("rope_factors", False))
    if ex.get("tied"):  # token_embd is also the classifier: scaled like an output matrix
        plan[0] = (plan[0][0], plan[0][1], "embd_tied")
    for name, shape, kind in plan:
        dt = np.float32 if kind in ("norm", "bias", "factor") else np.float16
        w.add_tensor_info(name, shape, np.dtype(dt), int(np.prod(shape)) * np.dtype(dt).itemsize)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for name, shape, kind in plan:  # streamed: one tensor in memory at a time
        w.write_tensor_data(make_tensor(rng, shape, kind))
    w.close()


def quantize(src, dst, ftype, threads):
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize({src} -> {dst}, ftype {ftype}) returned {rc}")


def model_path(shape, qtype, out_dir=DEFAULT_DIR):
    return Path(out_dir) / f"synthetic-{shape}-{qtype}.gguf"


def ensure(shape, qtypes, out_dir=DEFAULT_DIR, seed=1, threads=None, force=False, keep_f16=True, log=print):
    """Makes the F16 file and the requested quantizations that are missing; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    threads = threads or os.cpu_count() or 1
    f16 = model_path(shape, "F16", out_dir)
    need = [q for q in qtypes if force or not model_path(shape, q, out_dir).exists()]
    if (need or "F16" in qtypes) and (force or not f16.exists()):
        t = time.time()
        tmp = f16.with_suffix(".tmp")
        write_f16(tmp, shape, seed)
        os.replace(tmp, f16)
        log(f"wrote {f16} ({f16.stat().st_size / 1e6:.1f} MB, {time.time() - t:.1f} s)")
    out = []
    for q in qtypes:
        dst = model_path(shape, q, out_dir)
        if q != "F16" and (force or not dst.exists()):
            t = time.time()
            tmp = dst.with_suffix(".tmp")
            quantize(f16, tmp, FTYPES[q], threads)
            os.replace(tmp, dst)
            log(f"wrote {dst} ({dst.stat().st_size / 1e6:.1f} MB, {time.time() - t:.1f} s)")
        out.append(dst)
    if not keep_f16 and "F16" not in qtypes and f16.exists():
        f16.unlink()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    ap.add_argument("--types", default="Q4_K_M", help="comma-separated: " + ",".join(FTYPES))
    ap.add_argument("--out-dir", default=str(DEFAULT_DIR))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--force", action="store_true", help="regenerate even if the files exist")
    ap.add_argument("--drop-f16", action="store_true", help="delete the F16 file after quantizing")
    ap.add_argument("--parity-set", action="store_true",
                    help="make every synthetic model of tests/parity (the committed fixtures' files)")
    a = ap.parse_args()
    if a.parity_set:  # scripts/setup.sh: the models the C fixture check (test_model) compares
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "parity"))
        import common

        for shape, q in common.SYNTH:
            ensure(shape, [q], a.out_dir, a.seed, a.threads or None, a.force,
                   log=lambda m: print(m, file=sys.stderr))
        return
    qtypes = [t.strip().upper().replace("_K_M", "_K_M") for t in a.types.split(",") if t.strip()]
    for q in qtypes:
        if q not in FTYPES:
            sys.exit(f"gen_synthetic: unknown type {q}; known: {', '.join(FTYPES)}")
    for p in ensure(a.shape, qtypes, a.out_dir, a.seed, a.threads or None, a.force, not a.drop_f16):
        print(p)


if __name__ == "__main__":
    main()
