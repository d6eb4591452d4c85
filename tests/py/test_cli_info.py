"""`realm info` end to end: the facts of stories260K in text and JSON, and a one-line error with
exit status != 0 for each kind of broken file."""
import json
import os
import random
import subprocess

import pytest

from conftest import model_path


def run(realm_bin, *args):
    return subprocess.run([realm_bin, *map(str, args)], capture_output=True, text=True, timeout=60)


def test_help_lists_commands(realm_bin):
    r = run(realm_bin, "--help")
    assert r.returncode == 0 and "info" in r.stdout
    r = run(realm_bin, "info", "--help")
    assert r.returncode == 0 and "--json" in r.stdout and "--tensors" in r.stdout


def test_info_text(realm_bin, stories):
    r = run(realm_bin, "info", stories)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "architecture:  llama" in out
    for line in ("n_layer        5", "n_embd         64", "n_head         8", "n_head_kv      4"):
        assert line in out
    assert "vocab 512" in out and "tensors:       48" in out


def test_info_json(realm_bin, stories):
    r = run(realm_bin, "info", "--json", "--tensors", stories)
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout)
    assert j["architecture"] == "llama"
    assert (j["n_layer"], j["n_embd"], j["n_head"], j["n_head_kv"]) == (5, 64, 8, 4)
    assert j["tokenizer"]["n_vocab"] == 512 and j["tokenizer"]["model"] == "llama"
    assert j["n_tensors"] == 48 and len(j["tensors"]) == 48
    assert j["types"]["f32"]["tensors"] == 48
    assert j["chat_template"] is False


def test_info_real_models(realm_bin):
    j = json.loads(run(realm_bin, "info", "--json", model_path("SmolLM2-135M-Instruct.Q4_1.gguf")).stdout)
    assert j["n_tensors"] == 272 and j["types"]["q4_1"]["tensors"] == 210 and j["chat_template"]
    j = json.loads(run(realm_bin, "info", "--json", model_path("gemma-3-270m-q4_k_m.gguf")).stdout)
    assert j["architecture"] == "gemma3" and j["n_tensors"] == 236


def broken_files(stories, tmp_path):
    data = stories.read_bytes()
    yield "truncated header", data[:20]
    yield "truncated metadata", data[:5000]
    yield "truncated tensors", data[: len(data) - 1000]
    yield "zeros", bytes(len(data))
    flipped = bytearray(data)
    flipped[8 + 3] ^= 0x10  # a byte of the tensor count
    yield "flipped tensor count", bytes(flipped)
    rnd = random.Random(7)
    yield "random", bytes(rnd.getrandbits(8) for _ in range(100_000))
    yield "random after magic", data[:24] + bytes(rnd.getrandbits(8) for _ in range(100_000))
    yield "empty", b""


def test_info_broken_files(realm_bin, stories, tmp_path):
    for what, blob in broken_files(stories, tmp_path):
        p = tmp_path / "bad.gguf"
        p.write_bytes(blob)
        r = run(realm_bin, "info", p)
        assert r.returncode not in (0, -11, -6), f"{what}: exit {r.returncode}"
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1, f"{what}: {r.stderr!r}"
        assert lines[0].startswith("realm: ") and str(p) in lines[0], f"{what}: {lines[0]}"


def test_info_missing_and_usage(realm_bin, tmp_path):
    r = run(realm_bin, "info", tmp_path / "nope.gguf")
    assert r.returncode == 1 and "cannot open" in r.stderr
    assert run(realm_bin, "info").returncode == 2
    assert run(realm_bin, "info", "--bogus", "x").returncode == 2
    assert run(realm_bin, "frobnicate").returncode == 2
