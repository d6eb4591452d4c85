"""qwen3 / phi3 / gemma2 (issue 19) end to end: `realm run --native --print-ids` decodes the tiny
synthetic models (scripts/gen_synthetic.py --parity-set, run by scripts/setup.sh) greedily to the
same token ids as llama.cpp (llama-cpp-python) — token by token, over prefill and decode; and
--print-ids is refused on the sandboxed path, which streams text."""
import subprocess

import numpy as np
import pytest

from conftest import model_path

PROMPT = [1, 17, 300, 512, 999, 4, 77, 250]
N_GEN = 24


def realm_ids(realm_bin, path):
    r = subprocess.run([realm_bin, "run", "-m", str(path), "--native", "--print-ids", "--temp", "0",
                        "--tokens", ",".join(map(str, PROMPT)), "-n", str(N_GEN), "-t", "2"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return [int(t) for t in r.stdout.split()]


def llama_ids(path):
    llama_cpp = pytest.importorskip("llama_cpp")
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, n_batch=64, n_threads=2, logits_all=True,
                          verbose=False)
    llm.eval(PROMPT)
    out = []
    for _ in range(N_GEN):
        t = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(t)
        llm.eval([t])
    return out


@pytest.mark.parametrize("shape", ["tiny-qwen3", "tiny-phi3", "tiny-gemma2"])
def test_greedy_ids_match_llama_cpp(realm_bin, shape):
    path = model_path(f"synthetic/synthetic-{shape}-F16.gguf")
    got, want = realm_ids(realm_bin, path), llama_ids(path)
    assert got == want


def test_print_ids_needs_native(realm_bin):
    path = model_path("synthetic/synthetic-tiny-qwen3-F16.gguf")
    r = subprocess.run([realm_bin, "run", "-m", str(path), "--print-ids", "--tokens", "1,2", "-n", "2"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--print-ids needs --native" in r.stderr
