"""`realm template` end to end: the prompt printed byte for byte equals Python jinja2 configured as
transformers' apply_chat_template (the GGUF's own template with its bos/eos tokens, and template
files with tools and extra variables), and every error is one line with exit status 1."""
import json
import subprocess
import sys

import gguf
import pytest

from conftest import ROOT, model_path

FIX = ROOT / "tests/template"
sys.path.insert(0, str(FIX))
from gen_fixtures import make_env  # noqa: E402  (needs Jinja2, installed by scripts/setup.sh)


def run(realm_bin, *args):
    return subprocess.run([realm_bin, "template", *map(str, args)], capture_output=True, timeout=60)


def conversations():
    return json.loads((FIX / "conversations.json").read_text(encoding="utf-8"))


def write_inputs(tmp_path, conv):
    m = tmp_path / "m.json"
    m.write_text(json.dumps(conv["messages"], ensure_ascii=False), encoding="utf-8")
    args = ["--messages", m]
    if conv.get("tools") is not None:
        t = tmp_path / "t.json"
        t.write_text(json.dumps(conv["tools"]), encoding="utf-8")
        args += ["--tools", t]
    extra = {k: v for k, v in conv.items() if k not in ("name", "messages", "tools", "add_generation_prompt")}
    if extra:
        v = tmp_path / "v.json"
        v.write_text(json.dumps(extra, ensure_ascii=False), encoding="utf-8")
        args += ["--vars", v]
    if conv.get("add_generation_prompt", True):
        args.append("--add-generation-prompt")
    return args


def test_gguf_template_matches_jinja2(realm_bin, tmp_path):
    path = model_path("SmolLM2-135M-Instruct.Q4_1.gguf")
    r = gguf.GGUFReader(str(path))

    def field_str(f):
        return bytes(f.parts[f.data[0]]).decode("utf-8")

    toks = r.fields["tokenizer.ggml.tokens"]

    def token(key):
        i = int(r.fields[key].parts[r.fields[key].data[0]][0])
        return bytes(toks.parts[toks.data[i]]).decode("utf-8")

    tmpl = make_env().from_string(field_str(r.fields["tokenizer.chat_template"]))
    checked = 0
    for conv in conversations():
        variables = {"messages": conv["messages"], "tools": conv.get("tools"),
                     "add_generation_prompt": conv.get("add_generation_prompt", True),
                     "bos_token": token("tokenizer.ggml.bos_token_id"), "eos_token": token("tokenizer.ggml.eos_token_id")}
        variables.update({k: v for k, v in conv.items() if k not in ("name", "messages", "tools", "add_generation_prompt")})
        try:
            want = tmpl.render(**variables).encode("utf-8")
        except Exception:
            want = None
        res = run(realm_bin, "-m", path, *write_inputs(tmp_path, conv))
        if want is None:
            assert res.returncode == 1 and res.stdout == b"", conv["name"]
            assert res.stderr.decode().count("\n") == 1, res.stderr
        else:
            assert res.returncode == 0, (conv["name"], res.stderr)
            assert res.stdout == want, conv["name"]
        checked += 1
    assert checked >= 30


def test_template_files_match_fixtures(realm_bin, tmp_path):
    convs = {c["name"]: c for c in conversations()}
    cases = json.loads((FIX / "expected.json").read_text(encoding="utf-8"))
    n = 0
    for case in cases:
        if case["template"] not in ("qwen3.jinja", "hand_tools.jinja") or "expected" not in case:
            continue
        conv = dict(convs[case["conversation"]])
        conv.setdefault("bos_token", "<s>")
        conv.setdefault("eos_token", "</s>")
        res = run(realm_bin, "--template-file", FIX / "templates" / case["template"], *write_inputs(tmp_path, conv))
        assert res.returncode == 0, (case, res.stderr)
        assert res.stdout == case["expected"].encode("utf-8"), case
        n += 1
    assert n >= 60


@pytest.mark.parametrize("body,args,needle", [
    ("{{ raise_exception('nope') }}", [], b"raise_exception: nope"),
    ("{% if %}", [], b"1:7"),
    ("{{ x.y }}", [], b"'x' is undefined"),
    ("ok", ["--tools", "missing.json"], b"missing.json"),
    ("ok", ["--bogus"], b"unknown option"),
])
def test_errors_are_one_line_exit_1(realm_bin, tmp_path, body, args, needle):
    t = tmp_path / "t.jinja"
    t.write_text(body)
    m = tmp_path / "m.json"
    m.write_text("[]")
    res = run(realm_bin, "--template-file", t, "--messages", m, *[tmp_path / a if a.endswith(".json") else a for a in args])
    assert res.returncode == 1 and res.stdout == b""
    assert res.stderr.count(b"\n") == 1 and needle in res.stderr, res.stderr


def test_bad_json_and_missing_template(realm_bin, tmp_path, stories):
    m = tmp_path / "m.json"
    m.write_text("[{")
    t = tmp_path / "t.jinja"
    t.write_text("x")
    res = run(realm_bin, "--template-file", t, "--messages", m)
    assert res.returncode == 1 and b"malformed JSON" in res.stderr
    m.write_text("[]")
    res = run(realm_bin, "-m", stories, "--messages", m)  # stories260K has no chat template
    assert res.returncode == 1 and b"no tokenizer.chat_template" in res.stderr and res.stderr.count(b"\n") == 1
