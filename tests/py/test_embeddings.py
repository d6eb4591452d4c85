"""Embeddings and Spin's remote LLM protocol on `realm serve`: POST /v1/embeddings through the official
openai client (vectors of the model's width, unit norm, identical for identical input alone or batched,
cosine(similar) > cosine(unrelated) on a fixed set, base64 == float, token-id inputs == their text), mean
and last-token pooling, the limits and errors (400s naming the problem, 401, 403, 404, 429 for
tokens_per_minute and the KV block quota), the accounting (usage == the host's count == the tenant's
/metrics), and Spin's POST /embed and POST /infer shapes (bearer auth, the same answer as the OpenAI
routes)."""
import base64
import json
import math
import struct

import pytest
import requests

from conftest import SHARED, model_path, start_server, tenant

openai = pytest.importorskip("openai")

WIDTH = 576  # SmolLM2-135M's n_embd
MAX_INPUTS = 4
MAX_TOKENS = 32

SIMILAR = [  # (a, b similar to a, c unrelated to both)
    ("The cat sat on the mat.", "A cat was sitting on the mat.", "Quarterly tax filings are due in April."),
    ("I love eating pizza with cheese.", "Pizza with lots of cheese is my favourite food.",
     "The satellite entered a geostationary orbit."),
    ("How do I reset my password?", "I forgot my password, how can I change it?",
     "Volcanoes erupt when magma reaches the surface."),
]


@pytest.fixture(scope="module")
def srv(realm_bin, tmp_path_factory):
    smol = model_path("SmolLM2-135M-Instruct.Q4_1.gguf")
    stories = SHARED / "models/stories260K.gguf"
    if not stories.exists():
        pytest.skip(f"{stories} not found")
    keys, tenants = {}, []
    for tid, kw in [("alice", {}),
                    ("stories_only", {"models": ["stories"]}),
                    ("tpm", {"tokens_per_minute": 12}),
                    ("kvq", {"kv_blocks": 1})]:
        k, t = tenant(tid, **kw)
        keys[tid] = k
        tenants.append(t)
    config = {
        "models": [{"name": "smollm2", "path": str(smol)},
                   {"name": "smollm2-last", "path": str(smol), "pooling": "last"},
                   {"name": "stories", "path": str(stories)}],
        "tenants": tenants,
        "embedding_max_inputs": MAX_INPUTS,
        "embedding_max_tokens": MAX_TOKENS,
        "kv_memory_mb": 64,
    }
    s = start_server(realm_bin, tmp_path_factory.mktemp("emb"), config, keys=keys)
    yield s
    rc = s.stop()
    assert rc == 0, s.log()


def post(srv, path, body, key, raw=None, scheme="Bearer"):
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"{scheme} {key}"
    data = raw if raw is not None else json.dumps(body)
    return requests.post(srv.url + path, data=data, headers=headers, timeout=120)


def embed(srv, inputs, model="smollm2", tid="alice", **kw):
    r = post(srv, "/v1/embeddings", {"model": model, "input": inputs, "encoding_format": "float", **kw}, srv.keys[tid])
    assert r.status_code == 200, r.text
    return r.json()


def assert_error(r, status, needle=None, param=None):
    assert r.status_code == status, (r.status_code, r.text)
    e = r.json()["error"]
    assert set(e) == {"message", "type", "param", "code"}, e
    if needle:
        assert needle.lower() in e["message"].lower(), e
    if param is not None:
        assert e["param"] == param, e
    return e


def norm(v):
    return math.sqrt(sum(x * x for x in v))


def cosine(a, b):
    return sum(x * y for x, y in zip(a, b)) / (norm(a) * norm(b))


def n_tokens(srv, text, model="smollm2"):
    r = post(srv, "/tokenize", {"content": text, "add_special": True, "parse_special": False, "model": model},
             srv.keys["alice"])
    assert r.status_code == 200, r.text
    return r.json()["tokens"]


# ---- the OpenAI route through the official client ----

def test_openai_client_vectors(srv):
    c = srv.client("alice")
    texts = [t for row in SIMILAR for t in row][:MAX_INPUTS]
    # without encoding_format the client asks for base64 and decodes it; floats explicitly too
    for kw in ({}, {"encoding_format": "float"}):
        r = c.embeddings.create(model="smollm2", input=texts, **kw)
        assert [d.index for d in r.data] == list(range(len(texts)))
        for d in r.data:
            assert len(d.embedding) == WIDTH
            assert abs(norm(d.embedding) - 1) < 1e-4
        assert r.model == "smollm2"
        want = sum(len(n_tokens(srv, t)) for t in texts)
        assert r.usage.prompt_tokens == want and r.usage.total_tokens == want


def test_identical_alone_and_batched(srv):
    c = srv.client("alice")
    text = SIMILAR[0][0]
    alone1 = c.embeddings.create(model="smollm2", input=text, encoding_format="float").data[0].embedding
    alone2 = c.embeddings.create(model="smollm2", input=[text], encoding_format="float").data[0].embedding
    batched = c.embeddings.create(model="smollm2", input=[SIMILAR[1][0], text, SIMILAR[2][2], text],
                                  encoding_format="float").data
    assert alone1 == alone2
    assert batched[1].embedding == alone1 and batched[3].embedding == alone1
    assert batched[0].embedding != alone1


def test_similar_closer_than_unrelated(srv):
    for a, b, unrelated in SIMILAR:
        va, vb, vu = (d["embedding"] for d in embed(srv, [a, b, unrelated])["data"])
        assert cosine(va, vb) > cosine(va, vu), (a, cosine(va, vb), cosine(va, vu))
        assert cosine(va, vb) > cosine(vb, vu), (b, cosine(va, vb), cosine(vb, vu))


def test_base64_equals_float(srv):
    texts = ["base64 and floats", "must carry the same bits"]
    floats = [d["embedding"] for d in embed(srv, texts)["data"]]
    r = post(srv, "/v1/embeddings", {"model": "smollm2", "input": texts, "encoding_format": "base64"},
             srv.keys["alice"])
    assert r.status_code == 200, r.text
    for d, f in zip(r.json()["data"], floats):
        raw = base64.b64decode(d["embedding"])
        assert len(raw) == 4 * WIDTH
        # the JSON floats carry 9 significant digits: each reads back as exactly the f32 sent
        assert list(struct.unpack(f"<{WIDTH}f", raw)) == list(struct.unpack(f"<{WIDTH}f", struct.pack(f"<{WIDTH}f", *f)))


def test_token_ids_equal_their_text(srv):
    text = "Token ids are inputs too."
    ids = n_tokens(srv, text)
    by_text = embed(srv, text)["data"][0]["embedding"]
    one = embed(srv, ids)
    assert one["data"][0]["embedding"] == by_text
    assert one["usage"]["prompt_tokens"] == len(ids)
    two = embed(srv, [ids, ids[:3]])["data"]
    assert two[0]["embedding"] == by_text and len(two[1]["embedding"]) == WIDTH


def test_dimensions_and_last_pooling(srv):
    text = SIMILAR[0][0]
    mean = embed(srv, text, dimensions=WIDTH)["data"][0]["embedding"]
    last = embed(srv, text, model="smollm2-last")["data"][0]["embedding"]
    assert len(last) == WIDTH and abs(norm(last) - 1) < 1e-4
    assert last != mean
    # "last" is the final token's state: the same text with a different start ends differently
    assert embed(srv, "Hello. " + text, model="smollm2-last")["data"][0]["embedding"] != last


def test_errors(srv):
    k = srv.keys["alice"]
    cases = [
        ({"model": "smollm2", "input": ""}, "empty string", "input"),
        ({"model": "smollm2", "input": []}, "empty array", "input"),
        ({"model": "smollm2", "input": ["ok", ""]}, "empty string", "input"),
        ({"model": "smollm2", "input": [[]]}, "empty array", "input"),
        ({"model": "smollm2", "input": ["a"] * (MAX_INPUTS + 1)}, f"at most {MAX_INPUTS}", "input"),
        ({"model": "smollm2", "input": "word " * (2 * MAX_TOKENS)}, f"at most {MAX_TOKENS} tokens", "input"),
        ({"model": "smollm2", "input": list(range(MAX_TOKENS + 1))}, f"at most {MAX_TOKENS} tokens", "input"),
        ({"model": "smollm2", "input": [[1, 10 ** 7]]}, "vocabulary", "input"),
        ({"model": "smollm2", "input": [1, -2]}, "non-negative", "input[0]"),
        ({"model": "smollm2", "input": ["a", 5]}, "mixes", "input"),
        ({"model": "smollm2", "input": {"a": 1}}, "string or an array", "input"),
        ({"model": "smollm2"}, "missing", "input"),
        ({"input": "x"}, "missing", "model"),
        ({"model": "smollm2", "input": "x", "encoding_format": "f16"}, "float", "encoding_format"),
        ({"model": "smollm2", "input": "x", "dimensions": 64}, f"must be {WIDTH}", "dimensions"),
        ({"model": "smollm2", "input": "x", "dimensions": 0}, "positive integer", "dimensions"),
        ({"model": "smollm2", "input": "x", "temperature": 1}, "unrecognized", "temperature"),
    ]
    for body, needle, param in cases:
        assert_error(post(srv, "/v1/embeddings", body, k), 400, needle, param)
    assert_error(post(srv, "/v1/embeddings", None, k, raw="{not json"), 400, "parse")
    assert_error(post(srv, "/v1/embeddings", None, k, raw='{"model":"smollm2","input":"a\\u0000b"}'), 400, "NUL")
    assert_error(post(srv, "/v1/embeddings", {"model": "nope", "input": "x"}, k), 404, "does not exist", "model")
    assert_error(post(srv, "/v1/embeddings", {"model": "smollm2", "input": "x"}, srv.keys["stories_only"]), 403,
                 "access", "model")
    assert_error(post(srv, "/v1/embeddings", {"model": "smollm2", "input": "x"}, None), 401)
    assert_error(post(srv, "/v1/embeddings", {"model": "smollm2", "input": "x"}, "realm-wrong"), 401)
    r = requests.get(srv.url + "/v1/embeddings", headers={"Authorization": f"Bearer {k}"}, timeout=30)
    assert r.status_code == 405
    # the client surfaces them as BadRequestError
    with pytest.raises(openai.BadRequestError):
        srv.client("alice").embeddings.create(model="smollm2", input="")


def test_accounting_and_metrics(srv):
    texts = ["Accounting counts", "every input token the host ran."]
    key = 'realm_tenant_prompt_tokens_total{tenant="alice"}'
    before = srv.metrics()
    u = embed(srv, texts)["usage"]
    assert u["prompt_tokens"] == sum(len(n_tokens(srv, t)) for t in texts) == u["total_tokens"]
    after = srv.metrics()
    assert after[key] - before[key] == u["prompt_tokens"]
    assert after.get('realm_http_requests_total{endpoint="embeddings",code="200"}', 0) >= 1


def test_tokens_per_minute(srv):
    # 12 tokens a minute: the first request (more than 12 tokens) is admitted against an empty
    # window and charged in full, after which the window is over the quota
    r = post(srv, "/v1/embeddings", {"model": "smollm2", "input": "one two three four five six seven eight nine ten "
                                     "eleven twelve thirteen"}, srv.keys["tpm"])
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] > 12
    r = post(srv, "/v1/embeddings", {"model": "smollm2", "input": "again"}, srv.keys["tpm"])
    assert_error(r, 429)
    assert int(r.headers["Retry-After"]) >= 1


def test_kv_quota(srv):
    # one 16-position block: 16 tokens fit, 17 do not
    ids = list(range(100, 116))
    assert post(srv, "/v1/embeddings", {"model": "smollm2", "input": ids}, srv.keys["kvq"]).status_code == 200
    r = post(srv, "/v1/embeddings", {"model": "smollm2", "input": ids + [116]}, srv.keys["kvq"])
    assert_error(r, 429, "quota")


# ---- Spin's remote LLM protocol ----

def test_spin_embed(srv):
    texts = [SIMILAR[0][0], SIMILAR[0][2]]
    r = post(srv, "/embed", {"model": "smollm2", "input": texts}, srv.keys["alice"], scheme="bearer")
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"embeddings", "usage"} and set(body["usage"]) == {"promptTokenCount"}
    assert body["embeddings"] == [d["embedding"] for d in embed(srv, texts)["data"]]
    assert body["usage"]["promptTokenCount"] == sum(len(n_tokens(srv, t)) for t in texts)
    assert_error(post(srv, "/embed", {"model": "smollm2", "input": texts}, "realm-wrong", scheme="bearer"), 401)
    assert_error(post(srv, "/embed", {"model": "smollm2", "input": "not a list"}, srv.keys["alice"]), 400,
                 "array of strings", "input")
    assert_error(post(srv, "/embed", {"model": "smollm2", "input": ["x"], "encoding_format": "float"},
                      srv.keys["alice"]), 400, "unrecognized", "encoding_format")


def test_spin_infer(srv):
    prompt = "Once upon a time"
    body = {"model": "smollm2", "prompt": prompt,
            "options": {"maxTokens": 8, "repeatPenalty": 1.1, "repeatPenaltyLastNTokenCount": 64,
                        "temperature": 0, "topK": 40, "topP": 0.9}}
    r = post(srv, "/infer", body, srv.keys["alice"], scheme="bearer")
    assert r.status_code == 200, r.text
    got = r.json()
    assert set(got) == {"text", "usage"}
    assert set(got["usage"]) == {"promptTokenCount", "generatedTokenCount"}
    assert isinstance(got["text"], str) and got["text"]
    assert 0 < got["usage"]["generatedTokenCount"] <= 8 and got["usage"]["promptTokenCount"] > 0
    # the same request as a completion: same text, same usage
    c = post(srv, "/v1/completions", {"model": "smollm2", "prompt": prompt, "max_tokens": 8, "repeat_penalty": 1.1,
                                      "repeat_last_n": 64, "temperature": 0, "top_k": 40, "top_p": 0.9},
             srv.keys["alice"])
    assert c.status_code == 200, c.text
    cj = c.json()
    assert cj["choices"][0]["text"] == got["text"]
    assert cj["usage"]["prompt_tokens"] == got["usage"]["promptTokenCount"]
    assert cj["usage"]["completion_tokens"] == got["usage"]["generatedTokenCount"]

    assert_error(post(srv, "/infer", body, "realm-wrong", scheme="bearer"), 401)
    assert_error(post(srv, "/infer", body, srv.keys["stories_only"]), 403, "access", "model")
    assert_error(post(srv, "/infer", {**body, "options": {"maxTokens": 4, "bogus": 1}}, srv.keys["alice"]), 400,
                 "bogus")
    assert_error(post(srv, "/infer", {**body, "options": {"temperature": "hot"}}, srv.keys["alice"]), 400,
                 "number")
    assert_error(post(srv, "/infer", {"model": "smollm2"}, srv.keys["alice"]), 400, "prompt")
    assert_error(post(srv, "/infer", {**body, "stream": True}, srv.keys["alice"]), 400, "stream")


# ---- state mode: the usage ledger ----

def test_state_mode_ledger(realm_bin, tmp_path):
    from test_state import start_state_server

    srv = start_state_server(realm_bin, tmp_path / "srv", tmp_path / "state")
    try:
        assert srv.admin_key
        assert srv.call("POST", "/admin/v1/tenants", {"id": "acme"})[0] == 201
        st, k = srv.call("POST", "/admin/v1/tenants/acme/keys", {"label": "emb"})
        assert st == 201, k
        r = srv.client(k["key"]).embeddings.create(model="smollm2", input=["ledger one", "ledger two"])
        assert len(r.data) == 2 and len(r.data[0].embedding) == WIDTH
        st, spin = srv.call("POST", "/embed", {"model": "smollm2", "input": ["three"]}, key=k["key"])
        assert st == 200, spin
        st, u = srv.call("GET", "/admin/v1/usage?tenant=acme")
        assert st == 200, u
        assert u["totals"]["requests"] == 2, u
        assert u["totals"]["prompt_tokens"] == r.usage.prompt_tokens + spin["usage"]["promptTokenCount"]
        assert u["totals"]["completion_tokens"] == 0
        assert all(row["key_label"] == "emb" and row["outcome"] == "ok" and row["model"] == "smollm2"
                   for row in u["data"]), u["data"]
    finally:
        srv.kill()
