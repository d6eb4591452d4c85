"""`n` > 1 (several choices) through `realm serve` with the official openai client on SmolLM2:
indexes 0..n-1, usage summing every choice's tokens with the prompt counted once, reproducible
with a seed, identical choices at temperature 0, streamed chunks of the choices interleaved with a
finish_reason each that reassemble to the non-streamed texts, the prompt's blocks reused from the
paged KV pool (realm_sched_prefix_tokens_total), and the refusals (n above max_choices, n with
tools or logprobs)."""
import json

import pytest
import requests

from conftest import model_path, start_server, tenant

openai = pytest.importorskip("openai")

PROMPT = [{"role": "user", "content": "Write one sentence about the sea, the wind and the old lighthouse keeper "
                                      "who lives alone on the rocky island far from the coast."}]
NO_EOS = {"ignore_eos": True}


@pytest.fixture(scope="module")
def srv(realm_bin, tmp_path_factory):
    smol = model_path("SmolLM2-135M-Instruct.Q4_1.gguf")
    key, t = tenant("alice")
    config = {"models": [{"name": "smollm2", "path": str(smol)}], "tenants": [t], "max_choices": 4}
    s = start_server(realm_bin, tmp_path_factory.mktemp("choices"), config, keys={"alice": key})
    yield s
    assert s.stop() == 0, s.log()


def prefix_tokens(srv):
    return sum(v for k, v in srv.metrics().items() if k.startswith("realm_sched_prefix_tokens_total"))


def prompt_tokens(srv, c):
    r = c.chat.completions.create(model="smollm2", messages=PROMPT, max_tokens=1, temperature=0)
    return r.usage.prompt_tokens


def test_n_choices_seeded(srv):
    c = srv.client("alice")
    n_prompt = prompt_tokens(srv, c)
    assert n_prompt > 32  # SmolLM2's default system prompt and the question: whole blocks to share
    before = prefix_tokens(srv)
    kw = dict(model="smollm2", messages=PROMPT, max_tokens=8, temperature=0.8, seed=1234, n=3, extra_body=NO_EOS)
    r = c.chat.completions.create(**kw)
    after = prefix_tokens(srv)
    assert [ch.index for ch in r.choices] == [0, 1, 2]
    assert all(ch.finish_reason == "length" for ch in r.choices)
    assert all(ch.message.role == "assistant" and ch.message.content for ch in r.choices)
    assert r.usage.completion_tokens == 24  # 8 per choice
    assert r.usage.prompt_tokens == n_prompt  # counted once
    assert r.usage.total_tokens == 24 + n_prompt
    # the 2nd and 3rd choice attached the prompt's full 16-token blocks (at most n_prompt - 1 tokens)
    assert after - before >= 2 * ((n_prompt - 1) // 16 * 16), (before, after, n_prompt)
    texts = [ch.message.content for ch in r.choices]
    assert len(set(texts)) > 1, texts  # seed + i: each choice its own stream
    again = c.chat.completions.create(**kw)
    assert [ch.message.content for ch in again.choices] == texts
    # choice 0 uses the seed itself: the n=1 answer with that seed
    one = c.chat.completions.create(**{**kw, "n": 1})
    assert len(one.choices) == 1 and one.choices[0].message.content == texts[0]


def test_n_greedy_identical(srv):
    c = srv.client("alice")
    r = c.chat.completions.create(model="smollm2", messages=PROMPT, max_tokens=12, temperature=0, n=2)
    assert [ch.index for ch in r.choices] == [0, 1]
    assert r.choices[0].message.content == r.choices[1].message.content
    one = c.chat.completions.create(model="smollm2", messages=PROMPT, max_tokens=12, temperature=0)
    assert one.choices[0].message.content == r.choices[0].message.content


def test_n_completions(srv):
    c = srv.client("alice")
    kw = dict(model="smollm2", prompt="The lighthouse keeper opened the door and", max_tokens=6, temperature=0.9,
              seed=7, n=2, extra_body=NO_EOS)
    r = c.completions.create(**kw)
    assert [ch.index for ch in r.choices] == [0, 1]
    assert r.usage.completion_tokens == 12
    texts = [ch.text for ch in r.choices]
    s = c.completions.create(**kw, stream=True)
    got = {0: "", 1: ""}
    finish = {}
    for chunk in s:
        for ch in chunk.choices:
            got[ch.index] += ch.text
            if ch.finish_reason:
                finish[ch.index] = ch.finish_reason
    assert [got[0], got[1]] == texts
    assert finish == {0: "length", 1: "length"}


def test_n_stream_interleaved(srv):
    c = srv.client("alice")
    kw = dict(model="smollm2", messages=PROMPT, max_tokens=10, temperature=0.8, seed=99, n=2, extra_body=NO_EOS)
    full = c.chat.completions.create(**kw)
    s = c.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True})
    order, texts, finish, usage = [], {0: "", 1: ""}, {}, None
    for chunk in s:
        if chunk.usage:
            usage = chunk.usage
        for ch in chunk.choices:
            if ch.delta.content:
                texts[ch.index] += ch.delta.content
                order.append(ch.index)
            if ch.finish_reason:
                assert ch.index not in finish
                finish[ch.index] = ch.finish_reason
    assert finish == {0: "length", 1: "length"}
    assert [texts[0], texts[1]] == [ch.message.content for ch in full.choices]
    # interleaved: choice 1's text starts before choice 0's ends
    assert 1 in order and order.index(1) < len(order) - 1 - order[::-1].index(0), order
    assert usage is not None and usage.completion_tokens == 20


def test_n_refusals(srv):
    k = srv.keys["alice"]
    base = {"model": "smollm2", "messages": PROMPT, "max_tokens": 2}

    def post(body):
        return requests.post(srv.base + "/chat/completions", data=json.dumps(body), timeout=120,
                             headers={"Authorization": f"Bearer {k}", "Content-Type": "application/json"})

    r = post({**base, "n": 5})  # max_choices is 4 here
    assert r.status_code == 400, r.text
    e = r.json()["error"]
    assert e["param"] == "n" and "max_choices" in e["message"] and "4" in e["message"], e
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    r = post({**base, "n": 2, "tools": [tool]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "n", r.text
    r = post({**base, "n": 2, "logprobs": True})
    assert r.status_code == 400 and r.json()["error"]["param"] == "logprobs", r.text
    r = post({**base, "n": 2, "best_of": 3})
    assert r.status_code == 400 and r.json()["error"]["param"] == "best_of", r.text
    assert post({**base, "n": 4}).status_code == 200
