#!/usr/bin/env python3
"""gen_fixtures.py — commit-sized parity fixtures, checked by tests/test_model.c without llama.cpp.

For each model present (see common.model_list) it writes tests/parity/fixtures/<model>.json with:
  model, fingerprint (FNV-1a of size + first/last MiB; the C test skips a fixture whose model file
  differs), tokens (the fixed 64-token sequence), llama_argmax and ref_argmax (argmax of llama.cpp's
  and of the float64 reference's logits at every position), and for 8 positions a subset of the
  vocabulary — the reference's top 32 ids plus 96 ids drawn at random — with llama.cpp's and the
  reference's logits there (llama, ref), plus llama.cpp's own distance to the reference on that
  subset (llama_ref_rel_l2) and its argmax agreement with it (llama_ref_argmax_agree).

The C check applies the same two criteria as run_parity.py on the stored subset. Each fixture is
about 15 KB. Regenerate after upgrading llama-cpp-python or regenerating the synthetic models:

    ~/.cache/realm/venv/bin/python tests/parity/gen_fixtures.py [NAME-SUBSTRING ...]

(with arguments, only the models whose file name contains one of them, e.g. tiny-gemma2-)
"""
import json
import sys

import numpy as np

import common
import reference

POSITIONS = [0, 9, 18, 27, 36, 45, 54, 63]
N_TOP = 32
N_RANDOM = 96


def main():
    import llama_cpp

    common.FIXTURES.mkdir(parents=True, exist_ok=True)
    for name, path in common.model_list(only=[a for a in sys.argv[1:] if not a.startswith('--')]):
        llm = common.llama(path)
        toks = common.tokens_for(name, llm)
        lg = common.llama_logits(llm, toks)
        del llm
        ex = reference.Reference(path).logits(toks)
        rng = np.random.Generator(np.random.PCG64(7))
        ids, lv, rv = [], [], []
        num = den = 0.0
        for p in POSITIONS:
            top = np.argsort(-ex[p])[:N_TOP]
            rest = np.setdiff1d(np.arange(ex.shape[1]), top)
            pick = np.concatenate([top, rng.choice(rest, size=min(N_RANDOM, rest.size), replace=False)])
            ids.append([int(i) for i in pick])
            lv.append([round(float(x), 4) for x in lg[p, pick]])
            rv.append([round(float(x), 4) for x in ex[p, pick]])
            num += float(np.sum((lg[p, pick].astype(np.float64) - ex[p, pick]) ** 2))
            den += float(np.sum(ex[p, pick] ** 2))
        fx = {
            "model": name,
            "fingerprint": common.fingerprint(path),
            "generated_by": "tests/parity/gen_fixtures.py",
            "llama_cpp_python": llama_cpp.__version__,
            "tokens": [int(t) for t in toks],
            "llama_argmax": [int(i) for i in np.argmax(lg, axis=1)],
            "ref_argmax": [int(i) for i in np.argmax(ex, axis=1)],
            "positions": POSITIONS,
            "ids": ids,
            "llama": lv,
            "ref": rv,
            "llama_ref_rel_l2": (num / den) ** 0.5,
            "llama_ref_argmax_agree": int(np.sum(np.argmax(lg, axis=1) == np.argmax(ex, axis=1))),
        }
        out = common.FIXTURES / (name[: -len(".gguf")] + ".json")
        out.write_text(json.dumps(fx, separators=(",", ":")) + "\n")
        print(f"wrote {out} ({out.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
