"""`realm serve --state DIR`: tenants as a service over HTTP (issue 15).

End to end with the official openai client and raw HTTP: an admin creates a tenant and a key
through the admin API, the tenant deploys its own guest while a stream of the old guest is still
running, a broken guest is refused with the guest's own message, rollback, key revocation, the
usage ledger against the usage objects the client received, restart durability, and a crash
test (kill -9 during concurrent admin writes and guest uploads).
"""
import hashlib
import json
import random
import re
import sqlite3
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import BUILD, launch_serve, model_path

openai = pytest.importorskip("openai")

UPPER = BUILD / "tests/guests/server_upper.wasm"
INIT_FAIL = BUILD / "tests/guests/init_fail.wasm"


class StateServer:
    def __init__(self, proc, url, admin_key, log_path):
        self.proc, self.url, self.admin_key, self.log_path = proc, url, admin_key, log_path

    def call(self, method, path, body=None, key=None, raw=None):
        """(status, parsed JSON or text) of one HTTP call."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Authorization": "Bearer " + (key or self.admin_key)})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                status, text, ctype = r.status, r.read().decode(), r.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            status, text, ctype = e.code, e.read().decode(), e.headers.get("Content-Type", "")
        return status, (json.loads(text) if ctype.startswith("application/json") else text)

    def client(self, key):
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=120)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def start_state_server(realm_bin, workdir, state, timeout=120):
    """`realm serve --state STATE` on a free port; the admin key is read from its first start's
    output (None on later starts: it is printed once)."""
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "realm.json"
    cfg.write_text(json.dumps({"models": [{"name": "smollm2",
                                           "path": str(model_path("SmolLM2-135M-Instruct.Q4_1.gguf"))}]}))
    log_path = workdir / f"serve-{time.monotonic_ns()}.log"
    proc, url, out = launch_serve(realm_bin, ["--config", str(cfg), "--state", str(state), "--host", "127.0.0.1",
                                              "--port", "0", "--max-inflight", "8"], log_path, timeout)
    k = re.search(r"admin key \(shown once[^:]*: (\S+)", out)
    return StateServer(proc, url, k.group(1) if k else None, log_path)


@pytest.fixture
def state_server(realm_bin, tmp_path):
    started = []

    def _start(state=None, name="srv"):
        s = start_state_server(realm_bin, tmp_path / f"{name}{len(started)}", state or tmp_path / "state")
        started.append(s)
        return s

    yield _start
    for s in started:
        s.kill()


def chat(client, text="Say hello.", **kw):
    kw.setdefault("max_tokens", 12)
    return client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": text}],
                                          temperature=0, **kw)


def test_tenant_platform_end_to_end(state_server, tmp_path):
    assert UPPER.exists() and INIT_FAIL.exists(), "test guests not built"
    srv = state_server()
    assert srv.admin_key, "an empty state prints an admin key"

    # an admin creates a tenant and a key; the key works at once, with the openai client
    st, t = srv.call("POST", "/admin/v1/tenants", {"id": "acme", "limits": {"max_concurrent": 4}})
    assert st == 201 and t["id"] == "acme" and t["limits"]["max_concurrent"] == 4 and t["guest"] is None, t
    st, k = srv.call("POST", "/admin/v1/tenants/acme/keys", {"label": "ci"})
    assert st == 201 and k["key"].startswith("realm-") and k["label"] == "ci", k
    assert srv.call("POST", "/admin/v1/tenants", {"id": "acme"})[0] == 409
    assert srv.call("GET", "/admin/v1/tenants", key=k["key"])[0] == 403  # a tenant key is not an admin key
    client = srv.client(k["key"])
    received = []  # every usage object the client got

    r = chat(client)
    received.append(r.usage)
    before = r.choices[0].message.content
    assert before and "[upper]" not in before

    # a long stream of the default guest runs while the tenant deploys server_upper
    stream_text, stream_usage, stream_end = [], [], []
    first_chunk = threading.Event()

    def long_stream():
        s = client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "Tell a story."}],
                                           max_tokens=400, temperature=0, stream=True,
                                           stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
        for ch in s:
            if ch.choices and ch.choices[0].delta.content:
                stream_text.append(ch.choices[0].delta.content)
                first_chunk.set()
            if ch.usage:
                stream_usage.append(ch.usage)
        stream_end.append(time.monotonic())
        first_chunk.set()

    th = threading.Thread(target=long_stream)
    th.start()
    assert first_chunk.wait(60)
    st, g = srv.call("PUT", "/v1/guest", raw=UPPER.read_bytes(), key=k["key"])
    deployed_at = time.monotonic()
    assert st == 201 and g["version"] == 1 and g["active"], g
    assert g["sha256"] == hashlib.sha256(UPPER.read_bytes()).hexdigest()
    r = chat(client)
    received.append(r.usage)
    assert r.choices[0].message.content.startswith("[upper]"), r.choices[0].message.content
    th.join(120)
    assert stream_end and stream_end[0] > deployed_at, "the stream ended before the deploy: nothing was tested"
    assert stream_usage, "include_usage gave no usage chunk"
    received.append(stream_usage[0])
    text = "".join(stream_text)
    assert stream_usage[0].completion_tokens == 400 and "[upper]" not in text and text != text.upper(), text[:200]

    # a guest whose init fails: 400 with the guest's own message, the current guest still serves
    st, err = srv.call("PUT", "/v1/guest", raw=INIT_FAIL.read_bytes(), key=k["key"])
    assert st == 400 and "greeting" in err["error"]["message"], err
    r = chat(client)
    received.append(r.usage)
    assert r.choices[0].message.content.startswith("[upper]")
    st, lst = srv.call("GET", "/v1/guest", key=k["key"])
    assert st == 200 and [v["version"] for v in lst["data"]] == [1], lst

    # rollback to the default guest (version 0), then forward again to version 1
    st, g = srv.call("POST", "/v1/guest/rollback", {"version": 0}, key=k["key"])
    assert st == 200 and g["version"] == 0, g
    r = chat(client)
    received.append(r.usage)
    assert "[upper]" not in r.choices[0].message.content
    st, g = srv.call("POST", "/admin/v1/tenants/acme/guest/rollback", {"version": 1})
    assert st == 200 and g["version"] == 1, g
    r = chat(client)
    received.append(r.usage)
    assert r.choices[0].message.content.startswith("[upper]")

    # limits change at once: max_tokens_per_request 4 refuses a request for 12
    st, t = srv.call("PATCH", "/admin/v1/tenants/acme", {"limits": {"max_tokens_per_request": 4}})
    assert st == 200 and t["limits"]["max_tokens_per_request"] == 4 and t["limits"]["max_concurrent"] == 4, t
    with pytest.raises(openai.BadRequestError):
        chat(client, max_tokens=12)

    # the ledger: what the admin API reports equals what the client was told
    st, u = srv.call("GET", "/admin/v1/usage?tenant=acme")
    assert st == 200, u
    assert u["totals"]["requests"] == len(received), u["totals"]
    assert u["totals"]["prompt_tokens"] == sum(x.prompt_tokens for x in received)
    assert u["totals"]["completion_tokens"] == sum(x.completion_tokens for x in received)
    assert all(row["key_label"] == "ci" and row["outcome"] == "ok" for row in u["data"]), u["data"]
    st, csv = srv.call("GET", "/admin/v1/usage?tenant=acme&format=csv")
    head = csv.splitlines()[0].split(",")
    assert st == 200 and {"tenant", "model", "prompt_tokens", "completion_tokens", "outcome", "finished_at"} <= set(head)
    assert len(csv.splitlines()) == 1 + len(received)

    # revoking the key cuts it off at once
    assert srv.call("DELETE", "/admin/v1/tenants/acme/keys/ci")[0] == 200
    with pytest.raises(openai.AuthenticationError):
        chat(client)

    # everything survives a restart; the admin key is not printed again
    st, k2 = srv.call("POST", "/admin/v1/tenants/acme/keys", {"label": "second"})
    assert st == 201
    admin = srv.admin_key
    srv.proc.terminate()
    srv.proc.wait(60)
    srv2 = state_server(name="again")
    assert srv2.admin_key is None
    srv2.admin_key = admin
    r = chat(srv2.client(k2["key"]), max_tokens=4)
    assert r.choices[0].message.content.startswith("[upper]")
    st, u2 = srv2.call("GET", "/admin/v1/usage?tenant=acme")
    assert u2["totals"]["requests"] == len(received) + 1

    # deleting the tenant: its keys stop at once, its ledger stays
    assert srv2.call("DELETE", "/admin/v1/tenants/acme")[0] == 200
    with pytest.raises(openai.AuthenticationError):
        chat(srv2.client(k2["key"]))
    assert srv2.call("GET", "/admin/v1/usage?tenant=acme")[1]["totals"]["requests"] == len(received) + 1


def test_admin_api_refuses_bad_input(state_server):
    srv = state_server()
    assert srv.call("POST", "/admin/v1/tenants", {"id": "x", "limitz": {}})[0] == 400
    assert srv.call("POST", "/admin/v1/tenants", {"id": "x", "models": ["nope"]})[0] == 400
    assert srv.call("POST", "/admin/v1/tenants", {"id": "x", "limits": {"max_concurrent": -1}})[0] == 400
    assert srv.call("POST", "/admin/v1/tenants", raw=b"{not json")[0] == 400
    assert srv.call("GET", "/admin/v1/tenants/none")[0] == 404
    assert srv.call("POST", "/admin/v1/tenants/none/keys", {})[0] == 404
    assert srv.call("PUT", "/admin/v1/tenants/none/guest", raw=b"\0asm")[0] == 404
    assert srv.call("GET", "/admin/v1/usage?since=yesterday")[0] == 400
    assert srv.call("GET", "/admin/v1/tenants", key="realm-wrong")[0] == 401
    st, _ = srv.call("POST", "/admin/v1/tenants", {"id": "x"})
    assert st == 201
    st, err = srv.call("PUT", "/admin/v1/tenants/x/guest", raw=b"\0asm\1\0\0\0garbage")
    assert st == 400 and err["error"]["code"] == "guest_invalid", err
    assert srv.call("DELETE", "/admin/v1/tenants/x/keys/none")[0] == 404


def test_kill9_during_admin_writes_and_uploads(state_server, tmp_path):
    """100 concurrent admin writes and guest uploads, the server killed with SIGKILL in the middle:
    after a restart the registry is intact and every acknowledged change is there."""
    assert UPPER.exists()
    state = tmp_path / "state"
    srv = state_server(state)
    admin = srv.admin_key
    assert srv.call("POST", "/admin/v1/tenants", {"id": "up"})[0] == 201
    wasm = UPPER.read_bytes()
    acked_tenants, acked_versions, lock = [], [], threading.Lock()
    rng = random.Random(15)
    ops = [("tenant", f"c{i:03d}") if rng.random() < 0.7 else ("guest", None) for i in range(100)]
    done = threading.Semaphore(0)

    def worker(chunk):
        for kind, tid in chunk:
            try:
                if kind == "tenant":
                    st, _ = srv.call("POST", "/admin/v1/tenants", {"id": tid, "limits": {"max_concurrent": 2}})
                    if st == 201:
                        with lock:
                            acked_tenants.append(tid)
                else:
                    st, g = srv.call("PUT", "/admin/v1/tenants/up/guest", raw=wasm)
                    if st == 201:
                        with lock:
                            acked_versions.append(g["version"])
            except (OSError, urllib.error.URLError):
                pass  # the server died under this call: not acknowledged
            done.release()

    threads = [threading.Thread(target=worker, args=(ops[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for _ in range(rng.randint(20, 60)):  # kill somewhere in the middle
        done.acquire(timeout=60)
    srv.kill()
    for t in threads:
        t.join(120)
    assert acked_tenants or acked_versions, "nothing was acknowledged before the kill"
    db = sqlite3.connect(state / "registry.db")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()

    srv2 = state_server(state, name="after")
    srv2.admin_key = admin
    st, lst = srv2.call("GET", "/admin/v1/tenants")
    assert st == 200
    have = {t["id"] for t in lst["data"]}
    assert set(acked_tenants) <= have, set(acked_tenants) - have
    st, gl = srv2.call("GET", "/admin/v1/tenants/up/guest")
    versions = {g["version"] for g in gl["data"]}
    assert set(acked_versions) <= versions, set(acked_versions) - versions
    assert all(g["sha256"] == hashlib.sha256(wasm).hexdigest() for g in gl["data"])
    # the restarted server serves a tenant made before the kill
    if acked_tenants:
        st, k = srv2.call("POST", f"/admin/v1/tenants/{acked_tenants[0]}/keys", {})
        assert st == 201
        r = chat(srv2.client(k["key"]), max_tokens=4)
        assert r.usage.completion_tokens >= 1
