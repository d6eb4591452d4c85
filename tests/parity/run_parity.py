#!/usr/bin/env python3
"""run_parity.py — live logits parity of realm against llama.cpp (`make parity`).

For every model present (SmolLM2-135M Q4_1 and gemma-3-270m Q4_K_M from ~/.cache/realm/models;
the tiny synthetic llama in Q4_K_M/Q6_K/Q8_0/Q5_K/Q3_K/Q2_K/Q4_0/Q4_1, a tiny synthetic qwen2, and
tiny qwen3 / phi3 / gemma2 in F16/Q8_0/Q4_K_M/Q4_0, made by scripts/gen_synthetic.py when missing) the fixed 64-token sequence goes through
  - llama.cpp (llama-cpp-python, logits_all, default non-flash attention, f16 KV cache),
  - realm (`realm run --native --tokens ... -n 0 --logits-out FILE`),
  - an independent float64 numpy forward pass over the dequantized weights (reference.py).
A model passes on the issue's literal criterion (relative L2 realm vs llama.cpp <= 1e-2, same argmax
on >= 95% of positions), or on the noise-aware one (realm at least as close to the float64 result
as llama.cpp is; see common.passes_ref). Exit 0 when every model passes.

Then gemma3 runs 700 tokens and positions 512..699 are compared the same way, to exercise the
sliding window (512) the 64-token sequence never reaches.

The realm binary: $REALM_BIN, else $REALM_BUILD/realm, else build/realm. --no-ref skips the float64
pass (literal criterion only); --json prints the table as JSON; other arguments keep only the models
whose file name contains one of them (e.g. `run_parity.py tiny-phi3`).
"""
import json
import sys
import time

import common


LONG_N = 700  # gemma3's sliding window is 512: positions >= 512 see only part of the context


def long_context_check(use_ref):
    """gemma3 over 700 tokens, compared on positions 512..699 (every 4th), where the sliding-window
    layers see only the last 512 keys: the 64-token check above never exercises the window."""
    path = common.MODELS_DIR / "gemma-3-270m-q4_k_m.gguf"
    if not path.exists():
        return None
    import llama_cpp
    import numpy as np

    t = time.time()
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=LONG_N + 64, n_batch=LONG_N, n_ubatch=LONG_N,
                          logits_all=True, n_threads=2, n_threads_batch=2, verbose=False)
    toks = llm.tokenize(((common.TEXT + " ") * 8).encode(), add_bos=True, special=False)[:LONG_N]
    llm.eval(toks)
    pos = list(range(512, LONG_N, 4))
    ref = np.array(llm.scores[:LONG_N], dtype=np.float32)[pos]
    n_vocab = llm.n_vocab()
    del llm
    got = common.realm_logits(path, toks, n_vocab)[pos]
    m = common.compare(got, ref)
    row = {"model": "gemma-3-270m (700 tokens, sliding window)", "realm_vs_llama": m,
           "literal_pass": common.passes(m)}
    good = row["literal_pass"]
    line = f"{row['model']:36s} realm~llama.cpp rel L2 {m['rel_l2']:.2e} argmax {m['argmax_agree']}/{m['n']}"
    if use_ref:
        import reference

        exact = reference.Reference(path).logits(toks, positions=pos)
        rr, lr = common.compare(got, exact), common.compare(ref, exact)
        row.update(realm_vs_f64=rr, llama_vs_f64=lr, ref_pass=common.passes_ref(rr, lr))
        good = good or row["ref_pass"]
        line += (f" | vs float64: realm {rr['rel_l2']:.2e} ({rr['argmax_agree']}), "
                 f"llama.cpp {lr['rel_l2']:.2e} ({lr['argmax_agree']})")
    row["pass"] = good
    how = "literal" if row["literal_pass"] else ("noise-aware" if good else "")
    print(f"{'PASS' if good else 'FAIL'} {how:11s} {line}  [{time.time() - t:.0f} s]", flush=True)
    return row


def main():
    use_ref = "--no-ref" not in sys.argv
    rows, ok = [], True
    for name, path in common.model_list(only=[a for a in sys.argv[1:] if not a.startswith('--')]):
        t = time.time()
        llm = common.llama(path)
        toks = common.tokens_for(name, llm)
        ref = common.llama_logits(llm, toks)
        n_vocab = llm.n_vocab()
        del llm
        got = common.realm_logits(path, toks, n_vocab)
        m = common.compare(got, ref)
        row = {"model": name, "realm_vs_llama": m, "literal_pass": common.passes(m)}
        good = row["literal_pass"]
        line = (f"{name:36s} realm~llama.cpp rel L2 {m['rel_l2']:.2e} argmax {m['argmax_agree']}/{m['n']}")
        if use_ref:
            import reference

            exact = reference.Reference(path).logits(toks)
            rr, lr = common.compare(got, exact), common.compare(ref, exact)
            row.update(realm_vs_f64=rr, llama_vs_f64=lr, ref_pass=common.passes_ref(rr, lr))
            good = good or row["ref_pass"]
            line += (f" | vs float64: realm {rr['rel_l2']:.2e} ({rr['argmax_agree']}), "
                     f"llama.cpp {lr['rel_l2']:.2e} ({lr['argmax_agree']})")
        row["pass"] = good
        ok &= good
        rows.append(row)
        how = "literal" if row["literal_pass"] else ("noise-aware" if good else "")
        print(f"{'PASS' if good else 'FAIL'} {how:11s} {line}  [{time.time() - t:.0f} s]", flush=True)
    only = [a for a in sys.argv[1:] if not a.startswith('--')]
    long = long_context_check(use_ref) if not only or any(o in "gemma-3-270m-q4_k_m.gguf" for o in only) else None
    if long is not None:
        rows.append(long)
        ok &= long["pass"]
    if not rows:
        print("no model available", file=sys.stderr)
        return 1
    if "--json" in sys.argv:
        print(json.dumps(rows, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
