"""The Rust guest SDK's example orchestrator (guest/rust/examples/orchestrator.rs, built to
build/guest/rust_example.wasm) as a tenant's guest in `realm serve`: completions and chat through
the openai client give the default C guest's text for the same greedy request, stop strings end
the text (never emitted), streaming gives the same text in chunks, and what the example does not
implement (n > 1) fails the request instead of answering with the wrong shape.
`realm run --guest` against the stories260K greedy reference is tests/test_rust_guest.c."""
import openai
import pytest

from conftest import BUILD, model_path, tenant


@pytest.fixture
def rust_guest():
    p = BUILD / "guest/rust_example.wasm"
    if not p.exists():
        pytest.fail(f"{p} not built (cmake/rust_guest.cmake, part of make)")
    return p


@pytest.fixture
def two_guests(serve, stories, rust_guest):
    """A server with tenant "rust" (the Rust example) and tenant "c" (the default guest)."""
    smol = model_path("SmolLM2-135M-Instruct.Q4_1.gguf")
    kr, tr = tenant("rust", guest=rust_guest)
    kc, tc = tenant("c")
    return serve({"models": [{"name": "stories", "path": str(stories)}, {"name": "smollm2", "path": str(smol)}],
                  "tenants": [tr, tc]}, keys={"rust": kr, "c": kc})


def completion(s, who, **kw):
    r = s.client(who).completions.create(model="stories", prompt="Once upon a time", temperature=0, **kw)
    return r.choices[0].text, r.choices[0].finish_reason, r.usage


def test_completions_match_the_default_guest(two_guests):
    s = two_guests
    text, finish, usage = completion(s, "rust", max_tokens=48)
    ref, ref_finish, ref_usage = completion(s, "c", max_tokens=48)
    assert text == ref and len(text) > 50
    assert finish == ref_finish == "length"
    assert usage.completion_tokens == ref_usage.completion_tokens == 48
    assert usage.prompt_tokens == ref_usage.prompt_tokens

    # a stop string ends the text before it, in both guests alike
    text, finish, _ = completion(s, "rust", max_tokens=48, stop=["Lily", "zzz"])
    ref, _, _ = completion(s, "c", max_tokens=48, stop=["Lily", "zzz"])
    assert text == ref and "Lily" not in text and len(text) > 5
    assert finish == "stop"

    # streamed: the same text in several chunks
    chunks = s.client("rust").completions.create(model="stories", prompt="Once upon a time", temperature=0,
                                                  max_tokens=48, stream=True)
    parts = [c.choices[0].text for c in chunks if c.choices]
    full, _, _ = completion(s, "rust", max_tokens=48)
    assert "".join(parts) == full and len([p for p in parts if p]) > 5


def test_chat_matches_the_default_guest(two_guests):
    s = two_guests
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    out = {}
    for who in ("rust", "c"):
        r = s.client(who).chat.completions.create(model="smollm2", messages=msgs, temperature=0, max_tokens=40)
        out[who] = (r.choices[0].message.content, r.choices[0].finish_reason, r.usage.prompt_tokens)
    assert out["rust"] == out["c"]
    assert len(out["rust"][0]) > 5 and out["rust"][2] > 5


def test_unsupported_fields_fail_the_request(two_guests):
    s = two_guests
    with pytest.raises(openai.APIStatusError):
        s.client("rust").completions.create(model="stories", prompt="Once", max_tokens=4, n=2)
    # the tenant's guest still answers afterwards
    text, _, _ = completion(s, "rust", max_tokens=8)
    assert len(text) > 5
