"""`realm admin` end to end on a temporary state directory: tenants, keys (printed once, only the
SHA-256 stored), limits, guest deployment, the usage ledger as CSV, import of realm.example.json,
and a crash test — concurrent admin processes killed with SIGKILL at random points leave a registry
that passes integrity_check and holds every change whose command exited 0."""
import csv
import hashlib
import io
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import time

import pytest

from conftest import BUILD, ROOT

KEY_RE = re.compile(r"^realm-[A-Za-z0-9_-]{43}\n$")


def admin(realm_bin, state, *args, check=True, env=None):
    p = subprocess.run([realm_bin, "admin", "--state", str(state), *map(str, args)], capture_output=True,
                       text=True, timeout=60, env=env)
    if check:
        assert p.returncode == 0, f"realm admin {args}: rc {p.returncode}\n{p.stderr}"
    return p


def db(state):
    return sqlite3.connect(f"file:{state}/registry.db?mode=ro", uri=True)


def tenants(realm_bin, state):
    out = admin(realm_bin, state, "tenant", "list").stdout
    return {line.split("\t")[0]: line for line in out.splitlines()}


def test_tenants_keys_limits(realm_bin, tmp_path):
    st = tmp_path / "state"
    admin(realm_bin, st, "tenant", "add", "acme", "--model", "smollm2", "--tokens-per-minute", 1000)
    assert admin(realm_bin, st, "tenant", "add", "acme", check=False).returncode == 1
    assert admin(realm_bin, st, "tenant", "add", "x", "--bogus", check=False).returncode == 2
    t = tenants(realm_bin, st)
    assert "models=smollm2" in t["acme"] and "tokens-per-minute=1000" in t["acme"]

    p = admin(realm_bin, st, "key", "add", "acme", "--label", "ci")
    assert KEY_RE.match(p.stdout), p.stdout  # the key alone on stdout
    key = p.stdout.strip()
    with db(st) as c:
        rows = c.execute("SELECT tenant, label, hash FROM keys").fetchall()
    assert rows == [("acme", "ci", hashlib.sha256(key.encode()).hexdigest())]  # only the hash
    assert key.encode() not in (st / "registry.db").read_bytes()
    assert admin(realm_bin, st, "key", "add", "nobody", check=False).returncode == 1

    p2 = admin(realm_bin, st, "key", "add", "acme")
    key2 = p2.stdout.strip()
    listing = admin(realm_bin, st, "key", "list", "acme").stdout
    assert "\tci\t" in listing and key2[:12] in listing and key not in listing

    # limits: set some, keep the others and the grants; with no option, show
    admin(realm_bin, st, "limits", "acme", "--max-concurrent", 3, "--max_tokens_per_request", 256,
          "--guest-memory-mb", 32)
    shown = admin(realm_bin, st, "limits", "acme").stdout
    for want in ("max-concurrent=3", "max-tokens-per-request=256", "guest-memory-mb=32", "tokens-per-minute=1000",
                 "models=smollm2"):
        assert want in shown, shown
    with db(st) as c:
        assert c.execute("SELECT guest_memory_bytes FROM tenants").fetchone()[0] == 32 << 20
    admin(realm_bin, st, "limits", "acme", "--all-models")
    assert "models=*" in tenants(realm_bin, st)["acme"]
    assert admin(realm_bin, st, "limits", "acme", "--kv-blocks", "-1", check=False).returncode == 2

    # revoke by label, then by the key's prefix
    admin(realm_bin, st, "key", "revoke", "acme", "ci")
    admin(realm_bin, st, "key", "revoke", "acme", key2[:10])
    assert admin(realm_bin, st, "key", "revoke", "acme", "ci", check=False).returncode == 1
    with db(st) as c:
        assert c.execute("SELECT count(*) FROM keys").fetchone()[0] == 0

    # admin keys are apart from tenant keys
    pa = admin(realm_bin, st, "admin-key", "add", "--label", "ops")
    assert KEY_RE.match(pa.stdout)
    with db(st) as c:
        assert c.execute("SELECT label FROM admin_keys").fetchall() == [("ops",)]
        assert c.execute("SELECT count(*) FROM keys").fetchone()[0] == 0

    admin(realm_bin, st, "tenant", "rm", "acme")
    assert tenants(realm_bin, st) == {}
    assert admin(realm_bin, st, "tenant", "rm", "acme", check=False).returncode == 1


def test_default_state_dir(realm_bin, tmp_path):
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path / "xdg"))
    p = subprocess.run([realm_bin, "admin", "tenant", "add", "solo"], capture_output=True, text=True, env=env,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "xdg/realm/registry.db").exists()


def test_guest_deploy(realm_bin, tmp_path):
    wasm = BUILD / "tests/guests/server_upper.wasm"
    if not wasm.exists():
        pytest.fail(f"{wasm} not built (cmake --build {BUILD})")
    st = tmp_path / "state"
    admin(realm_bin, st, "tenant", "add", "acme")
    admin(realm_bin, st, "guest", "deploy", "acme", wasm)
    sha = hashlib.sha256(wasm.read_bytes()).hexdigest()
    stored = st / "guests" / f"{sha}.wasm"
    assert stored.read_bytes() == wasm.read_bytes()
    # a broken module is refused with the sandbox's message and changes nothing
    bad = tmp_path / "bad.wasm"
    bad.write_bytes(b"\0asm\1\0\0\0garbage")
    p = admin(realm_bin, st, "guest", "deploy", "acme", bad, check=False)
    assert p.returncode == 1 and "sandbox" in p.stderr, p.stderr
    smoke = BUILD / "tests/guests/smoke.wasm"  # imports the test-only realm.smoke_add: not ABI v1
    if smoke.exists():
        p = admin(realm_bin, st, "guest", "deploy", "acme", smoke, check=False)
        assert p.returncode == 1 and "import" in p.stderr, p.stderr
    out = admin(realm_bin, st, "guest", "list", "acme").stdout.splitlines()
    assert len(out) == 1 and out[0].startswith("v1\t" + sha) and out[0].endswith("active")
    # a second version (stored without validation), then roll back to the first
    admin(realm_bin, st, "guest", "deploy", "acme", bad, "--no-validate")
    assert "guest=v2:" in tenants(realm_bin, st)["acme"]
    admin(realm_bin, st, "guest", "rollback", "acme")
    assert "guest=v1:" in tenants(realm_bin, st)["acme"]
    admin(realm_bin, st, "guest", "activate", "acme", 0)
    assert "guest=default" in tenants(realm_bin, st)["acme"]


def test_usage_csv(realm_bin, tmp_path):
    st = tmp_path / "state"
    admin(realm_bin, st, "tenant", "add", "acme")
    out = admin(realm_bin, st, "usage", "--csv").stdout
    header = out.splitlines()[0].split(",")
    for col in ("tenant", "model", "key_label", "prompt_tokens", "completion_tokens", "outcome", "finished_at"):
        assert col in header
    # rows as the server will append them (the ledger's schema), then read back
    t0 = 1764770400000  # 2025-12-03T14:00:00Z
    with sqlite3.connect(st / "registry.db") as c:
        for i, (tenant, model) in enumerate([("acme", "smollm2"), ("beta", "gemma3"), ("acme", "a,b")]):
            c.execute("INSERT INTO usage(tenant, model, key_label, prompt_tokens, completion_tokens, host_ms, outcome,"
                      " started_at, finished_at) VALUES(?, ?, 'ci', ?, ?, 7, 'ok', ?, ?)",
                      (tenant, model, 10 + i, 20 + i, t0 + i * 3600_000 - 100, t0 + i * 3600_000))
    rows = list(csv.DictReader(io.StringIO(admin(realm_bin, st, "usage", "--csv").stdout)))
    assert [r["tenant"] for r in rows] == ["acme", "beta", "acme"]
    assert rows[2]["model"] == "a,b"  # quoted
    assert rows[0]["finished_at"] == "2025-12-03T14:00:00.000Z"
    assert rows[1]["prompt_tokens"] == "11" and rows[1]["completion_tokens"] == "21"
    rows = list(csv.DictReader(io.StringIO(admin(realm_bin, st, "usage", "--csv", "--tenant", "acme", "--since",
                                                 "2025-12-03T15:00:00+01:00").stdout)))
    assert len(rows) == 2  # 15:00+01:00 is 14:00Z: both acme rows
    rows = list(csv.DictReader(io.StringIO(admin(realm_bin, st, "usage", "--csv", "--since",
                                                 "2025-12-03T14:30:00Z").stdout)))
    assert [r["tenant"] for r in rows] == ["beta", "acme"]
    summary = admin(realm_bin, st, "usage").stdout
    acme = next(line for line in summary.splitlines() if line.startswith("acme"))
    assert acme.split()[1:4] == ["2", str(10 + 12), str(20 + 22)]
    assert admin(realm_bin, st, "usage", "--since", "yesterday", check=False).returncode == 2


def test_import_example(realm_bin, tmp_path):
    st = tmp_path / "state"
    cfg = tmp_path / "realm.json"
    cfg.write_text((ROOT / "realm.example.json").read_text())  # its guest path is relative: missing here
    p = admin(realm_bin, st, "import", cfg)
    assert "widgets" in p.stderr  # the missing guest is reported
    ex = json.loads(cfg.read_text())
    t = tenants(realm_bin, st)
    assert set(t) == {x["id"] for x in ex["tenants"]}
    assert "max-concurrent=8" in t["acme"] and "models=*" in t["acme"] and "host-memory-mb=64" in t["acme"]
    assert "models=smollm2" in t["widgets"] and "tokens-per-minute=20000" in t["widgets"]
    with db(st) as c:
        hashes = {h for (h,) in c.execute("SELECT hash FROM keys")}
        admins = {h for (h,) in c.execute("SELECT hash FROM admin_keys")}
    assert hashes == {h for x in ex["tenants"] for h in x["key_hashes"]}
    assert hashlib.sha256(b"realm-example-acme").hexdigest() in hashes
    assert admins == set(ex["admin_key_hashes"])
    # importing again changes nothing and succeeds
    admin(realm_bin, st, "import", cfg)
    assert tenants(realm_bin, st) == t
    admin(realm_bin, st, "tenant", "rm", "widgets")
    assert set(tenants(realm_bin, st)) == {"acme"}
    # a broken file imports nothing
    bad = tmp_path / "bad.json"
    bad.write_text('{"tenants": [{"id": "new", "key_hashes": ["nothex"]}]}')
    assert admin(realm_bin, st, "import", bad, check=False).returncode == 1
    assert set(tenants(realm_bin, st)) == {"acme"}


def test_crash_concurrent_writers(realm_bin, tmp_path):
    """100 admin writes, 8 at a time, a third of them SIGKILLed after a random delay."""
    st = tmp_path / "state"
    admin(realm_bin, st, "tenant", "add", "base")
    blob = tmp_path / "g.wasm"
    blob.write_bytes(os.urandom(200_000))
    rng = random.Random(15)
    acked_tenants, acked_keys, acked_guests, killed = {"base"}, [], 0, 0
    running = []
    started = 0

    def reap(block):
        nonlocal acked_guests, killed
        for item in list(running):
            proc, kind, arg, kill_at = item
            if kill_at is not None and time.monotonic() >= kill_at and proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            if block or proc.poll() is not None:
                out, _ = proc.communicate(timeout=60)
                running.remove(item)
                killed += proc.returncode == -signal.SIGKILL
                if proc.returncode != 0:
                    continue
                if kind == "tenant":
                    acked_tenants.add(arg)
                elif kind == "key":
                    assert KEY_RE.match(out), out
                    acked_keys.append((arg, out.strip()))
                else:
                    acked_guests += 1

    while started < 100 or running:
        while started < 100 and len(running) < 8:
            r = rng.random()
            if r < 0.4:
                kind, arg = "tenant", f"t{started}"
                args = ["tenant", "add", arg, "--tokens-per-minute", str(started)]
            elif r < 0.85:
                kind, arg = "key", rng.choice(sorted(acked_tenants))
                args = ["key", "add", arg, "--label", f"l{started}"]
            else:
                kind, arg = "guest", "base"
                args = ["guest", "deploy", "base", str(blob), "--no-validate"]
            proc = subprocess.Popen([realm_bin, "admin", "--state", str(st), *args], stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, text=True)
            kill_at = time.monotonic() + rng.uniform(0, 0.03) if rng.random() < 0.35 else None
            running.append((proc, kind, arg, kill_at))
            started += 1
        time.sleep(0.001)
        reap(False)

    with sqlite3.connect(st / "registry.db") as c:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        have_tenants = {t for (t,) in c.execute("SELECT id FROM tenants")}
        have_keys = {(t, h) for t, h in c.execute("SELECT tenant, hash FROM keys")}
        n_guests = c.execute("SELECT count(*) FROM guests WHERE tenant = 'base'").fetchone()[0]
        n_active = c.execute("SELECT count(*) FROM guests WHERE active").fetchone()[0]
    assert acked_tenants <= have_tenants
    for tenant, key in acked_keys:
        assert (tenant, hashlib.sha256(key.encode()).hexdigest()) in have_keys
    assert n_guests >= acked_guests
    assert n_active == (1 if n_guests else 0)
    if n_guests:
        sha = hashlib.sha256(blob.read_bytes()).hexdigest()
        assert (st / "guests" / f"{sha}.wasm").read_bytes() == blob.read_bytes()
    # the registry still works after the crashes
    admin(realm_bin, st, "tenant", "add", "after")
    assert len(acked_keys) > 10 and len(acked_tenants) > 10  # enough commands got through to mean something
    assert killed >= 5, killed  # and enough were killed to mean something
    print(f"acked tenants {len(acked_tenants)} keys {len(acked_keys)} guests {acked_guests}, killed {killed}")


def test_import_guests(realm_bin, tmp_path):
    wasm = BUILD / "tests/guests/server_upper.wasm"
    if not wasm.exists():
        pytest.fail(f"{wasm} not built (cmake --build {BUILD})")
    st = tmp_path / "state"
    h = hashlib.sha256(b"realm-k").hexdigest()
    cfg = tmp_path / "realm.json"
    cfg.write_text(json.dumps({"tenants": [{"id": "up", "key_hashes": [h], "guest": str(wasm)}]}))
    admin(realm_bin, st, "import", cfg)
    admin(realm_bin, st, "import", cfg)  # the same guest again: no new version
    out = admin(realm_bin, st, "guest", "list", "up").stdout.splitlines()
    assert len(out) == 1 and out[0].endswith("active")
    # a broken guest fails the whole import: nothing of it lands
    bad = tmp_path / "bad.wasm"
    bad.write_bytes(b"\0asm\1\0\0\0garbage")
    cfg.write_text(json.dumps({"tenants": [{"id": "other", "key_hashes": [h[::-1]]},
                                           {"id": "up", "guest": str(bad)}]}))
    p = admin(realm_bin, st, "import", cfg, check=False)
    assert p.returncode == 1 and "sandbox" in p.stderr, p.stderr
    assert set(tenants(realm_bin, st)) == {"up"}
    assert len(admin(realm_bin, st, "guest", "list", "up").stdout.splitlines()) == 1
