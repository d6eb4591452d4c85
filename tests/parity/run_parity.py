#!/usr/bin/env python3
"""run_parity.py — live logits parity of realm against llama.cpp (`make parity`).

For every model present (SmolLM2-135M Q4_1, gemma-3-270m Q4_K_M from ~/.cache/realm/models; the
tiny synthetic llama in Q4_K_M/Q6_K/Q8_0/Q5_K/Q3_K/Q2_K/Q4_0/Q4_1 and a tiny synthetic qwen2, made
by scripts/gen_synthetic.py when missing), runs the fixed 64-token sequence through llama.cpp
(llama-cpp-python, logits_all) and through `realm run --native --logits-out`, and checks:
relative L2 error of the logits <= 1e-2 and the same argmax on >= 95% of the positions.

The realm binary: $REALM_BIN, else $REALM_BUILD/realm, else build/realm. Exit 0 when all pass.
"""
import json
import sys
import time

import common


def main():
    rows = []
    ok = True
    for name, path in common.model_list():
        t = time.time()
        llm = common.llama(path)
        toks = common.tokens_for(name, llm)
        ref = common.llama_logits(llm, toks)
        n_vocab = llm.n_vocab()
        del llm
        got = common.realm_logits(path, toks, n_vocab)
        m = common.compare(got, ref)
        good = common.passes(m)
        ok &= good
        rows.append({"model": name, **m, "pass": good})
        print(f"{'PASS' if good else 'FAIL'}  {name:40s} rel L2 {m['rel_l2']:.2e} (worst position "
              f"{m['rel_l2_max_pos']:.2e})  argmax {m['argmax_agree']}/{m['n']}  [{time.time() - t:.1f} s]",
              flush=True)
    if not rows:
        print("no model available", file=sys.stderr)
        return 1
    if "--json" in sys.argv:
        print(json.dumps(rows, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
