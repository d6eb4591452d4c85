"""realm's tokenizer against llama.cpp's (llama-cpp-python, vocab_only=True) on the same GGUF files:
a mixed corpus (code, emoji, CJK, whitespace runs, special-token text, invalid-looking input) plus
llama.cpp's own test strings and seeded random strings, with and without BOS / special parsing.
Also checks the `realm tokenize` / `realm detokenize` command lines.

Runs `realm tokenize` from $REALM_BUILD (or build/); without the CLI it falls back to the test
binary's tool mode (tests/test_tokenizer_model --tokenize). Skips when llama_cpp or the models
are missing.
"""
import concurrent.futures
import os
import random
import subprocess
import tempfile

import pytest

from conftest import BUILD, MODELS, SHARED

llama_cpp = pytest.importorskip("llama_cpp")

MIXED = [
    "Hello world", " Hello world", "Hello, y'all! How are you 😁 ?",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n-1) + fib(n-2)\n",
    "int main(void) {\n\tprintf(\"%d\\n\", 42);\n\treturn 0;\n}\n",
    "for (i = 0; i < 10; ++i) { x[i] = i * 2; } // comment\n",
    "```python\nimport os\nprint(os.getcwd())\n```\n",
    "emoji: 🦙🚀😶\u200d🌫️👨\u200d👩\u200d👧\u200d👦 ✅ 🇫🇷 👍🏽",
    "我想在apple工作1314151天～ 日本語のテキスト、カタカナ。 한국어 텍스트 입니다",
    "Ünïcödé naïve café Ελληνικά русский العربية हिन्दी ภาษาไทย",
    "    four spaces\n\n\n\ttab\t\t  mixed \r\n crlf   \n     ", "         ", "\n\n\n\n", "a  b   c    d",
    "  \n  \n", "\t\t\t", " \u00a0nbsp\u2003emsp\u3000ideo", "e\u0301 combining a\u0308o\u0308",
    "3.14159 1,000,000 2024-01-01 0x7fff 1e-9 12345678901234567890",
    "I'm you're we've they'll he'd IT'S WE'RE 'quoted' \"double\"",
    "https://example.com/path?q=1&r=2#frag user@example.org",
    "The quick brown fox jumps over the lazy dog. " * 5,
    "\u200b\u200c\u200d zero widths \ufeffbom",
    "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n",
    "</s> <s> <unk> <pad> <table><tr><td>x</td></tr></table>",
    "<<SYS>>\n[INST] hi [/INST]", "▁▁ already escaped ▁x",
    "$$$ !!! ??? ... --- === *** ### @@@ %%% ^^^ &&& ||| ~~~",
]


def random_strings(n, seed):
    pools = ["abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789", " ", "  \t\n\r", "'",
             ".,;:!?-_()[]{}<>/\\\"|@#$%^&*+=~`", "éèüöäßçñøåÆŒ", "нещоБългарски", "我想在工作天日本語",
             "カタカナひらがな", "한국어텍스트", "🦙🚀😶\u200d🌫️✅😁", "\u0301\u0308", "\u00a0\u2003\u3000",
             "٠١٢٣ العربية", "हिन्दी", "ไทย", "’‘“”…—", "▁"]
    r = random.Random(seed)
    return ["".join(r.choice(r.choice(pools)) for _ in range(r.randint(0, 60))) for _ in range(n)]


def llama_vocab_strings():
    p = SHARED / "testdata/llama-vocab/ggml-vocab-llama-spm.gguf.inp"
    if not p.exists():
        return []
    return p.read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")[:-1]


def tokenizer_cmd():
    cli = BUILD / "realm"
    if cli.exists():
        return "cli", str(cli)
    tool = BUILD / "tests/test_tokenizer_model"
    if tool.exists():
        return "tool", str(tool)
    pytest.skip(f"neither {cli} nor {tool} is built")


def realm_tokenize(kind, exe, model, text, bos, special):
    with tempfile.NamedTemporaryFile(suffix=".txt") as f:
        f.write(text.encode("utf-8"))
        f.flush()
        if kind == "cli":
            args = [exe, "tokenize", "-m", str(model), "--file", f.name]
            args += [] if bos else ["--no-bos"]
        else:
            args = [exe, "--tokenize", str(model), f.name] + (["--bos"] if bos else [])
        args += ["--special"] if special else []
        r = subprocess.run(args, capture_output=True, timeout=120)
        assert r.returncode == 0, r.stderr.decode(errors="replace")
        return [int(x) for x in r.stdout.split()]


MODEL_FILES = ["SmolLM2-135M-Instruct.Q4_1.gguf", "gemma-3-270m-q4_k_m.gguf"]


@pytest.mark.parametrize("model_file", MODEL_FILES)
def test_same_ids_as_llama_cpp(model_file):
    model = MODELS / model_file
    if not model.exists():
        pytest.skip(f"{model} not cached")
    kind, exe = tokenizer_cmd()
    ref = llama_cpp.Llama(model_path=str(model), vocab_only=True, verbose=False)
    corpus = MIXED + llama_vocab_strings() + random_strings(16, seed=5)
    cases = [(t, bos, special) for t in corpus for bos, special in ((False, False), (True, True))]
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        got = list(pool.map(lambda c: realm_tokenize(kind, exe, model, *c), cases))
    diffs = []
    for (text, bos, special), ids in zip(cases, got):
        want = ref.tokenize(text.encode("utf-8"), add_bos=bos, special=special)
        if ids != want:
            diffs.append(f"{text!r} bos={bos} special={special}\n  realm    {ids}\n  llama.cpp {want}")
    assert not diffs, f"{len(diffs)} of {len(cases)} differ:\n" + "\n".join(diffs[:10])


def cli_or_skip():
    cli = BUILD / "realm"
    if not cli.exists():
        pytest.skip(f"{cli} not built")
    return str(cli)


def test_cli_tokenize_detokenize_round_trip():
    cli = cli_or_skip()
    model = SHARED / "testdata/llama-vocab/ggml-vocab-llama-spm.gguf"
    if not model.exists():
        pytest.skip("../shared vocab files absent")
    r = subprocess.run([cli, "tokenize", "-m", str(model), "--no-bos", "Hello", "world"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.split() == ["15043", "3186"]
    r = subprocess.run([cli, "tokenize", "-m", str(model), "Hello world"], capture_output=True, text=True)
    assert r.stdout.split() == ["1", "15043", "3186"]
    text = "ied 4 ½ months\n  Führer 🦙\tdone"
    r = subprocess.run([cli, "tokenize", "-m", str(model), "--no-bos", "-"], input=text.encode(),
                       capture_output=True, timeout=60)
    ids = r.stdout.decode().split()
    r = subprocess.run([cli, "detokenize", "-m", str(model)] + ids, capture_output=True, timeout=60)
    assert r.returncode == 0 and r.stdout.decode() == text
    r = subprocess.run([cli, "tokenize", "-m", str(model), "--pieces", "--no-bos", "a\nb"],
                       capture_output=True, text=True)
    lines = r.stdout.splitlines()
    assert lines[0].split("\t")[1] == " a" and "\\n" in r.stdout


def test_cli_errors():
    cli = cli_or_skip()
    model = SHARED / "testdata/llama-vocab/ggml-vocab-llama-spm.gguf"
    r = subprocess.run([cli, "tokenize", "-m", "/nonexistent.gguf", "x"], capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "nonexistent" in r.stderr
    r = subprocess.run([cli, "tokenize", "--bogus"], capture_output=True, text=True)
    assert r.returncode == 2
    if model.exists():
        r = subprocess.run([cli, "detokenize", "-m", str(model), "99999999"], capture_output=True, text=True)
        assert r.returncode == 1 and "outside the vocabulary" in r.stderr
        r = subprocess.run([cli, "detokenize", "-m", str(model), "12x"], capture_output=True, text=True)
        assert r.returncode == 2
