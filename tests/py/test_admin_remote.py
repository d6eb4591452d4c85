"""`realm admin --url URL --admin-key KEY`: the same subcommands as `realm admin --state DIR`, through a
running `realm serve --state`'s admin API (issue 15). End to end: tenant add, a key printed alone on stdout
that then works for a chat completion, limits, guest deploy (a refused guest gets the server's message),
usage as CSV, key revoke (401 next), tenant rm; the output of each listing equals what --state prints for
the same state directory; a wrong admin key, a tenant key, no key and no server fail with one clear line;
and the admin key never shows in any output."""
import csv
import hashlib
import io
import os
import re
import socket
import subprocess

import pytest

from conftest import BUILD
from test_state import start_state_server

UPPER = BUILD / "tests/guests/server_upper.wasm"
INIT_FAIL = BUILD / "tests/guests/init_fail.wasm"
KEY_RE = re.compile(r"^realm-[A-Za-z0-9_-]{43}\n$")
CSV_HEADER = "tenant,model,key_label,prompt_tokens,completion_tokens,host_ms,outcome,started_at,finished_at"
ERR_RE = re.compile(r"^realm: admin: .+ \(HTTP (\d{3})\)\n$")


@pytest.fixture
def server(realm_bin, tmp_path):
    srv = start_state_server(realm_bin, tmp_path / "srv", tmp_path / "state")
    srv.state = tmp_path / "state"
    assert srv.admin_key, "an empty state prints an admin key"
    yield srv
    srv.kill()


def remote(realm_bin, srv, *args, key=None, via_env=False, check=True):
    """`realm admin --url` with the admin key as an option, or in $REALM_ADMIN_KEY (via_env)."""
    env = {k: v for k, v in os.environ.items() if k != "REALM_ADMIN_KEY"}
    cmd = [realm_bin, "admin", "--url", srv.url]
    if via_env:
        env["REALM_ADMIN_KEY"] = key or srv.admin_key
    else:
        cmd += ["--admin-key", key or srv.admin_key]
    p = subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, timeout=180, env=env)
    assert srv.admin_key not in p.stdout + p.stderr, "the admin key was printed"
    if check:
        assert p.returncode == 0, f"realm admin --url {args}: rc {p.returncode}\n{p.stderr}"
    return p


def local(realm_bin, srv, *args):
    """The same command with --state on the server's own state directory (SQLite's locks arbitrate)."""
    p = subprocess.run([realm_bin, "admin", "--state", str(srv.state), *map(str, args)], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, f"realm admin --state {args}: rc {p.returncode}\n{p.stderr}"
    return p.stdout


def chat(srv, key, text="Say hello."):
    """(status, parsed body) of one chat completion with a tenant key."""
    body = {"model": "smollm2", "messages": [{"role": "user", "content": text}], "max_tokens": 6, "temperature": 0}
    return srv.call("POST", "/v1/chat/completions", body, key=key)


def one_error(p, status):
    """The failure is one line with the HTTP status; returns the message."""
    assert p.returncode == 1, (p.returncode, p.stderr)
    m = ERR_RE.match(p.stderr)
    assert m and int(m.group(1)) == status, p.stderr
    return p.stderr[len("realm: admin: "):p.stderr.rindex(" (HTTP ")]


def test_admin_remote_end_to_end(realm_bin, server):
    srv = server
    assert UPPER.exists() and INIT_FAIL.exists(), "test guests not built"

    # tenants
    remote(realm_bin, srv, "tenant", "add", "acme", "--model", "smollm2", "--max-concurrent", 4)
    dup = remote(realm_bin, srv, "tenant", "add", "acme", check=False)
    st, body = srv.call("POST", "/admin/v1/tenants", {"id": "acme"})
    assert st == 409 and one_error(dup, 409) == body["error"]["message"]  # the server's own message
    assert remote(realm_bin, srv, "tenant", "add", "x", "--bogus", check=False).returncode == 2
    listing = remote(realm_bin, srv, "tenant", "list").stdout
    assert listing.startswith("acme\tmodels=smollm2\tkeys=0\tguest=default\tmax-concurrent=4\t"), listing
    assert listing == local(realm_bin, srv, "tenant", "list")

    # a key: printed alone on stdout, works at once for a chat completion
    p = remote(realm_bin, srv, "key", "add", "acme", "--label", "ci", via_env=True)
    assert KEY_RE.match(p.stdout), p.stdout
    key = p.stdout.strip()
    assert key not in p.stderr
    st, r = chat(srv, key)
    assert st == 200 and r["choices"][0]["message"]["content"], r
    received = [r["usage"]]
    keys = remote(realm_bin, srv, "key", "list", "acme").stdout
    assert "acme\tci\t" + key[:12] + "\t" in keys and key not in keys, keys
    assert keys == local(realm_bin, srv, "key", "list", "acme")
    assert remote(realm_bin, srv, "key", "list").stdout == keys  # every tenant's: acme's only
    one_error(remote(realm_bin, srv, "key", "add", "nobody", check=False), 404)

    # limits: set some, keep the others and the grants; with no option, show (as --state does)
    remote(realm_bin, srv, "limits", "acme", "--max-tokens-per-request", 256, "--guest_memory_mb", 64)
    shown = remote(realm_bin, srv, "limits", "acme").stdout
    for want in ("models=smollm2", "keys=1", "max-concurrent=4", "max-tokens-per-request=256", "guest-memory-mb=64"):
        assert want in shown, shown
    assert shown == local(realm_bin, srv, "limits", "acme")
    st, t = srv.call("GET", "/admin/v1/tenants/acme")
    assert t["limits"]["max_tokens_per_request"] == 256 and t["limits"]["max_concurrent"] == 4 and t["models"] == [
        "smollm2"], t
    remote(realm_bin, srv, "limits", "acme", "--all-models")
    assert srv.call("GET", "/admin/v1/tenants/acme")[1]["models"] == "*"
    assert remote(realm_bin, srv, "limits", "acme", "--kv-blocks", "-1", check=False).returncode == 2
    one_error(remote(realm_bin, srv, "limits", "nobody", "--max-concurrent", 1, check=False), 404)

    # guests: a refused upload gets the guest's message and changes nothing; a good one serves next
    refused = remote(realm_bin, srv, "guest", "deploy", "acme", INIT_FAIL, check=False)
    assert "refused" in one_error(refused, 400), refused.stderr
    assert remote(realm_bin, srv, "guest", "list", "acme").stdout == ""
    p = remote(realm_bin, srv, "guest", "deploy", "acme", UPPER)
    assert "guest version 1 " in p.stderr, p.stderr
    sha = hashlib.sha256(UPPER.read_bytes()).hexdigest()
    versions = remote(realm_bin, srv, "guest", "list", "acme").stdout
    assert versions.startswith(f"v1\t{sha}\t{UPPER.stat().st_size}\t") and versions.endswith("\tactive\n"), versions
    assert versions == local(realm_bin, srv, "guest", "list", "acme")
    assert f"guest=v1:{sha[:12]}" in remote(realm_bin, srv, "tenant", "list").stdout
    st, r = chat(srv, key)
    assert st == 200 and r["choices"][0]["message"]["content"].startswith("[upper]"), r
    received.append(r["usage"])
    remote(realm_bin, srv, "guest", "activate", "acme", 0)  # back to the default guest
    assert not remote(realm_bin, srv, "guest", "list", "acme").stdout.rstrip("\n").endswith("active")
    one_error(remote(realm_bin, srv, "guest", "rollback", "acme", check=False), 409)  # no active version

    # usage: the server's CSV (rows are written before the client hears the outcome), whose rows
    # add up to the usage objects the client received, byte for byte what --state prints
    out = remote(realm_bin, srv, "usage", "--csv", "--tenant", "acme").stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    assert out.splitlines()[0] == CSV_HEADER, out
    assert out == local(realm_bin, srv, "usage", "--csv", "--tenant", "acme")
    assert len(rows) == len(received) and {r["tenant"] for r in rows} == {"acme"}, out
    for field in ("prompt_tokens", "completion_tokens"):
        assert sum(int(r[field]) for r in rows) == sum(u[field] for u in received), (field, out)
    assert all(r["outcome"] == "ok" and r["key_label"] == "ci" for r in rows), out
    summary = remote(realm_bin, srv, "usage", "--since", "2020-01-01").stdout
    assert summary == local(realm_bin, srv, "usage", "--since", "2020-01-01"), summary
    assert re.search(r"^acme +2 ", summary, re.M), summary
    assert remote(realm_bin, srv, "usage", "--csv", "--until", "2020-01-01").stdout.splitlines() == [CSV_HEADER]
    assert remote(realm_bin, srv, "usage", "--since", "yesterday", check=False).returncode == 2

    # revoking the key cuts it off at once; then the tenant goes
    remote(realm_bin, srv, "key", "revoke", "acme", "ci")
    assert chat(srv, key)[0] == 401
    one_error(remote(realm_bin, srv, "key", "revoke", "acme", "ci", check=False), 404)
    remote(realm_bin, srv, "tenant", "rm", "acme")
    assert remote(realm_bin, srv, "tenant", "list").stdout == ""
    one_error(remote(realm_bin, srv, "tenant", "rm", "acme", check=False), 404)


def test_admin_remote_refusals(realm_bin, server):
    srv = server
    # a wrong admin key: exit 1 and the server's own message, without the key
    wrong = "realm-" + "x" * 43
    st, body = srv.call("GET", "/admin/v1/tenants", key=wrong)
    p = remote(realm_bin, srv, "tenant", "list", key=wrong, check=False)
    assert st == 401 and one_error(p, 401) == body["error"]["message"] and wrong not in p.stderr
    # a tenant's key is not an admin key
    remote(realm_bin, srv, "tenant", "add", "t1")
    tkey = remote(realm_bin, srv, "key", "add", "t1").stdout.strip()
    st, body = srv.call("GET", "/admin/v1/tenants", key=tkey)
    assert st == 403 and one_error(remote(realm_bin, srv, "tenant", "list", key=tkey, check=False),
                                   403) == body["error"]["message"]
    # commands with no admin-API route, and no key at all: usage errors
    for args in (("admin-key", "list"), ("import", "x.json"), ("bogus",)):
        p = remote(realm_bin, srv, *args, check=False)
        assert p.returncode == 2 and p.stderr.startswith("realm: admin: "), p.stderr
    env = {k: v for k, v in os.environ.items() if k != "REALM_ADMIN_KEY"}
    p = subprocess.run([realm_bin, "admin", "--url", srv.url, "tenant", "list"], capture_output=True, text=True,
                       env=env, timeout=60)
    assert p.returncode == 2 and "REALM_ADMIN_KEY" in p.stderr, p.stderr
    p = subprocess.run([realm_bin, "admin", "--url", srv.url, "--state", str(srv.state), "tenant", "list"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 2, p.stderr
    # no server there: a clear message, exit 1
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before the CLI connects
    p = subprocess.run([realm_bin, "admin", "--url", f"http://127.0.0.1:{port}", "--admin-key", srv.admin_key,
                        "tenant", "list"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "cannot connect" in p.stderr and p.stderr.count("\n") == 1, p.stderr
    assert srv.admin_key not in p.stderr
