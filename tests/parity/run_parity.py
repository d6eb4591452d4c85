#!/usr/bin/env python3
"""run_parity.py — live logits parity of realm against llama.cpp (`make parity`).

For every model present (SmolLM2-135M Q4_1 and gemma-3-270m Q4_K_M from ~/.cache/realm/models;
the tiny synthetic llama in Q4_K_M/Q6_K/Q8_0/Q5_K/Q3_K/Q2_K/Q4_0/Q4_1 and a tiny synthetic qwen2,
made by scripts/gen_synthetic.py when missing) the fixed 64-token sequence goes through
  - llama.cpp (llama-cpp-python, logits_all, default non-flash attention, f16 KV cache),
  - realm (`realm run --native --tokens ... -n 0 --logits-out FILE`),
  - an independent float64 numpy forward pass over the dequantized weights (reference.py).
A model passes on the issue's literal criterion (relative L2 realm vs llama.cpp <= 1e-2, same argmax
on >= 95% of positions), or on the noise-aware one (realm at least as close to the float64 result
as llama.cpp is; see common.passes_ref). Exit 0 when every model passes.

The realm binary: $REALM_BIN, else $REALM_BUILD/realm, else build/realm. --no-ref skips the float64
pass (literal criterion only); --json prints the table as JSON.
"""
import json
import sys
import time

import common


def main():
    use_ref = "--no-ref" not in sys.argv
    rows, ok = [], True
    for name, path in common.model_list():
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
    if not rows:
        print("no model available", file=sys.stderr)
        return 1
    if "--json" in sys.argv:
        print(json.dumps(rows, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
