"""wasi-nn guests (issue 18): WASI command guests written only against WasmEdge's wasi_ephemeral_nn
(GGML backend) + WASI preview 1, run by `realm run --guest` and as tenant guests of `realm serve`.

tests/guests/wasi/nn_chat.c drives the host as LlamaEdge's llama-chat does (load_by_name("default"),
set_input metadata + prompt, compute_single / get_output_single until end of sequence, each piece
written to stdout). Checked: its greedy output equals the default guest's for the same prompt and
settings (through `realm run`, and through `realm serve` streamed and not); 8 of them for 4 tenants
at once share the scheduler's batched steps (fewer steps than decode rows) with the same bytes as
alone; tests/guests/wasi/nn_escape.c gets an error for every file, socket, env and path-as-model
attempt. The `grammar` / `json-schema` metadata (nn_chat passes a request's "grammar" / "json_schema")
constrain the output exactly as the default guest's grammar engine does; a bad grammar, or both keys,
is errno 1 (invalid argument)."""
import json
import os
import subprocess
import threading

import pytest

from conftest import BUILD, model_path, start_server, tenant

openai = pytest.importorskip("openai")

PROMPT = "Once upon a time, there was a little girl named Lily. She"
PROMPTS = [PROMPT, "The cat sat on the mat and", "One day, Tom went to the park with his",
           "Mia had a big red ball. She"]
N = 24


def guest(name):
    p = BUILD / "tests/guests/wasi" / f"{name}.wasm"
    if not p.exists():
        pytest.fail(f"{p} not built (cmake --build {BUILD})")
    return p


def run(realm_bin, model, *args):
    env = dict(os.environ, REALM_LOG="info")  # the guest's stderr is logged at info
    r = subprocess.run([realm_bin, "run", "-m", str(model), *args], capture_output=True, text=True, timeout=300,
                       env=env)
    assert r.returncode == 0, r.stderr
    return r


@pytest.fixture(scope="module")
def smol():
    return model_path("SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.fixture(scope="module")
def srv(realm_bin, smol, tmp_path_factory):
    keys, tenants = {}, []
    for tid in ("alice", "bob", "carol", "dave"):
        keys[tid], t = tenant(tid, guest=guest("nn_chat"))
        tenants.append(t)
    keys["ref"], t = tenant("ref")  # the default guest
    tenants.append(t)
    config = {"models": [{"name": "smollm2", "path": str(smol)}], "tenants": tenants}
    s = start_server(realm_bin, tmp_path_factory.mktemp("wasi_nn"), config, keys=keys)
    yield s
    assert s.stop() == 0, s.log()


def complete(srv, tid, prompt=PROMPT, **kw):
    return srv.client(tid).completions.create(model="smollm2", prompt=prompt, max_tokens=N, temperature=0, **kw)


def test_run_guest_greedy_equals_default(realm_bin, smol, srv):
    nn = run(realm_bin, smol, "--guest", str(guest("nn_chat")), "-p", PROMPT, "-n", str(N), "--temp", "0")
    ref = run(realm_bin, smol, "-p", PROMPT, "-n", str(N), "--temp", "0")
    # the guest's stdout is what it wrote: every piece as the model produced it
    text = nn.stdout[:-1] if nn.stdout.endswith("\n") else nn.stdout
    assert len(text) > 20, nn
    # its get_output(1) usage, printed to stderr (the tenant's log), and the unknown metadata key
    assert f"\"output_tokens\":{N}" in nn.stderr, nn.stderr
    assert 'ignoring unknown metadata key "x-unknown"' in nn.stderr, nn.stderr
    # `realm run`'s default guest drops the first piece's leading space, as the native CLI prints
    assert ref.stdout[:-1] == (text[1:] if text.startswith(" ") else text)
    # the same completion through the server's default guest (which keeps that space)
    assert text == complete(srv, "ref").choices[0].text


def test_serve_greedy_equals_default(srv):
    ref = complete(srv, "ref")
    out = complete(srv, "alice")
    assert out.choices[0].text == ref.choices[0].text and len(ref.choices[0].text) > 20
    assert out.usage.prompt_tokens == ref.usage.prompt_tokens
    assert out.usage.completion_tokens == ref.usage.completion_tokens == N
    assert out.choices[0].finish_reason == ref.choices[0].finish_reason == "length"
    chunks = [c.choices[0].text for c in complete(srv, "bob", stream=True) if c.choices and c.choices[0].text]
    assert len(chunks) > 1 and "".join(chunks) == ref.choices[0].text


def test_request_caps_the_guest(srv):
    # the guest asks for no limit; the request's max_tokens still holds
    out = srv.client("carol").completions.create(model="smollm2", prompt=PROMPT, max_tokens=3, temperature=0)
    assert out.usage.completion_tokens == 3 and out.choices[0].finish_reason == "length"


def test_concurrent_guests_share_batched_steps(srv):
    tids = ("alice", "bob", "carol", "dave")
    solo = {p: complete(srv, "ref", p).choices[0].text for p in PROMPTS}
    before = srv.metrics()
    results, errors = {}, []

    def worker(i):
        try:
            p = PROMPTS[i % 4]
            results[i] = (p, complete(srv, tids[i % 4], p).choices[0].text)
        except Exception as e:  # noqa: BLE001 — reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    assert len(results) == 8
    for p, text in results.values():
        assert text == solo[p], (p, text, solo[p])
    after = srv.metrics()
    steps = after["realm_sched_steps_total"] - before["realm_sched_steps_total"]
    rows = after["realm_batch_rows_sum"] - before["realm_batch_rows_sum"]
    decode_rows = after["realm_sched_decode_rows_total"] - before["realm_sched_decode_rows_total"]
    assert decode_rows >= 8 * (N - 1)
    # one decode row per step would take at least as many steps as decode rows: fewer steps means
    # the guests' decodes were batched together
    assert steps < decode_rows and rows / steps > 1, (steps, rows, decode_rows)


def test_escape_attempts_get_errors(realm_bin, smol):
    r = run(realm_bin, smol, "--guest", str(guest("nn_escape")), "-p", "x")
    lines = r.stdout.strip().splitlines()
    assert lines and not any("ALLOWED" in ln for ln in lines), r.stdout
    tries = [ln for ln in lines if ": denied" in ln]
    assert len(tries) >= 12 and lines[-1] == f"denied: {len(tries)} of {len(tries)}", r.stdout


def test_non_wasi_imports_refused(realm_bin, smol, tmp_path):
    # a command importing anything beyond WASI and wasi-nn is refused at load, naming the import
    wat = tmp_path / "bad.wat"
    wat.write_text('(module (import "env" "system" (func (param i32) (result i32))) (memory (export "memory") 1)'
                   ' (func (export "_start")))')
    wasm = tmp_path / "bad.wasm"
    subprocess.run(["wat2wasm", str(wat), "-o", str(wasm)], check=True)
    r = subprocess.run([realm_bin, "run", "-m", str(smol), "--guest", str(wasm), "-p", "x"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode != 0 and "env.system" in r.stderr, r.stderr


# ---- constrained output: `grammar` / `json-schema` metadata (the guest SDK's grammar engine on the host) ----

YES_NO = 'root ::= " yes" | " no"'
PERSON = {"type": "object", "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 12},
                                           "age": {"type": "integer"}}, "required": ["name", "age"]}


def test_grammar_metadata_equals_default(srv):
    cases = [("Is the sky blue? Answer:", {"grammar": YES_NO}),
             ("A person as JSON:", {"json_schema": PERSON}),
             ("Q: What is 2+2?\nA:", {"json_schema": {"type": "integer"}})]
    for prompt, extra in cases:
        kw = dict(model="smollm2", prompt=prompt, max_tokens=80, temperature=0, extra_body=extra)
        ref = srv.client("ref").completions.create(**kw).choices[0]
        out = srv.client("alice").completions.create(**kw).choices[0]
        assert out.text == ref.text, (extra, out.text, ref.text)
        assert out.finish_reason == ref.finish_reason == "stop", (extra, out)
        if "grammar" in extra:
            assert out.text in (" yes", " no"), out.text
        elif extra["json_schema"] is PERSON:
            v = json.loads(out.text)
            assert set(v) == {"name", "age"} and isinstance(v["age"], int), out.text
            assert isinstance(v["name"], str) and 1 <= len(v["name"]) <= 12, out.text
        else:
            assert isinstance(json.loads(out.text), int), out.text
    # sampled (the mask path when the first draw is rejected): still only what the grammar allows
    for seed in range(3):
        out = srv.client("bob").completions.create(model="smollm2", prompt="Maybe?", max_tokens=8, temperature=1.0,
                                                   seed=seed, extra_body={"grammar": YES_NO})
        assert out.choices[0].text in (" yes", " no") and out.choices[0].finish_reason == "stop", out


@pytest.mark.parametrize("extra, why", [
    ({"grammar": "root ::= ("}, "grammar"),
    ({"grammar": 'root ::= "a" | undefined_rule'}, "undefined_rule"),
    ({"json_schema": {"type": "string", "pattern": "^a+$"}}, "pattern"),
    ({"grammar": YES_NO, "json_schema": PERSON}, "exclusive"),
])
def test_bad_constraint_is_invalid_argument(realm_bin, smol, extra, why):
    req = json.dumps({"prompt": "Hi", **extra}, separators=(",", ":"))
    env = dict(os.environ, REALM_LOG="debug")
    r = subprocess.run([realm_bin, "run", "-m", str(smol), "--guest", str(guest("nn_chat")), "-n", "4", "-p", req],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode != 0, r.stderr
    assert "set_input metadata: wasi-nn error 1" in r.stderr, r.stderr
    assert why in r.stderr, r.stderr
