"""Three realm nodes on one PostgreSQL registry behind nginx, all on 127.0.0.1 and all started and
stopped by this test (issue 17): a throwaway PostgreSQL cluster (initdb + pg_ctl in a temp dir),
`realm serve --registry postgresql://...` three times, nginx with deploy/nginx/realm.conf (its
upstream pointed at the nodes' ports).

Checks: a tenant and key created through one node's admin API serve on every node and through
nginx; a guest deployed through one node runs on another (module bytes from the database);
requests of one key land on one node (affinity, X-Realm-Upstream); killing that node under load
moves the key to another node with only the requests in flight failing; a tenant's
tokens_per_minute holds across nodes within its bound (one request's tokens when requests come
one at a time); /health turns 503 while
the registry is down and 200 again when it is back.

Skips only when PostgreSQL's server binaries, nginx or the model are missing."""
import glob
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import BUILD, ROOT, launch_serve, model_path

UPPER = BUILD / "tests/guests/server_upper.wasm"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, key=None, raw=None, timeout=60):
    """(status, headers, parsed JSON or text)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = "Bearer " + key
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            st, hdr, text = r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        st, hdr, text = e.code, e.headers, e.read().decode()
    try:
        return st, hdr, json.loads(text)
    except ValueError:
        return st, hdr, text


class Postgres:
    """A throwaway cluster: initdb + pg_ctl (as the postgres user when root: initdb refuses root)."""

    def __init__(self, root):
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not bins:
            pytest.skip("PostgreSQL server binaries not installed (scripts/setup.sh apt)")
        self.bin = pathlib.Path(bins[-1]).parent
        self.root = root
        self.data = root / "pgdata"
        self.port = free_port()
        self.as_user = []
        if os.geteuid() == 0:
            import pwd
            pw = pwd.getpwnam("postgres")
            os.chown(root, pw.pw_uid, pw.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        os.chmod(root, 0o755)
        subprocess.run([*self.as_user, str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "realm",
                        "-E", "UTF8", "--no-sync"], check=True, capture_output=True, timeout=120)
        self.start()

    @property
    def url(self):
        return f"postgresql://realm@127.0.0.1:{self.port}/postgres"

    def start(self):
        subprocess.run([*self.as_user, str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "pg.log"),
                        "-w", "-t", "30", "-o",
                        f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off", "start"],
                       check=True, capture_output=True, timeout=60)

    def stop(self):
        subprocess.run([*self.as_user, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w",
                        "-t", "30", "stop"], capture_output=True, timeout=60)


class Nginx:
    def __init__(self, root, node_ports):
        exe = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
        if not exe:
            pytest.skip("nginx not installed (scripts/setup.sh apt)")
        self.port = free_port()
        conf = (ROOT / "deploy/nginx/realm.conf").read_text()
        ups = iter(node_ports)
        conf = re.sub(r"server realm\d+:8080", lambda m: f"server 127.0.0.1:{next(ups)}", conf)
        conf = re.sub(r"listen 8080;", f"listen 127.0.0.1:{self.port};", conf)
        # fail_timeout short so that the test sees a node come back within its time
        for d in ("logs", "body", "proxy"):
            (root / d).mkdir(mode=0o777, exist_ok=True)
            os.chmod(root / d, 0o777)  # the workers may run as nobody
        (root / "realm.conf").write_text(conf)
        main = root / "nginx.conf"
        main.write_text(f"pid {root}/nginx.pid;\nerror_log {root}/logs/error.log;\nevents {{}}\n"
                        f"http {{\n access_log {root}/logs/access.log;\n client_body_temp_path {root}/body;\n"
                        f" proxy_temp_path {root}/proxy;\n include {root}/realm.conf;\n}}\n")
        self.proc = subprocess.Popen([exe, "-p", str(root), "-e", str(root / "logs/error.log"), "-c", str(main),
                                      "-g", "daemon off;"],
                                     stdout=subprocess.DEVNULL, stderr=open(root / "logs/stderr.log", "wb"))
        self.url = f"http://127.0.0.1:{self.port}"
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("nginx did not start: " + (root / "logs/error.log").read_text())

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Node:
    def __init__(self, realm_bin, root, name, registry, model):
        d = root / name
        d.mkdir()
        cfg = d / "realm.json"
        cfg.write_text(json.dumps({"models": [{"name": "smollm2", "path": str(model)}]}))
        env_cache = str(d / "guest-cache")
        old = os.environ.get("REALM_REGISTRY_CACHE")
        os.environ["REALM_REGISTRY_CACHE"] = env_cache  # launch_serve inherits the environment
        try:
            self.proc, self.url, out = launch_serve(
                realm_bin, ["--config", str(cfg), "--registry", registry, "--host", "127.0.0.1", "--port", "0",
                            "--max-inflight", "8"], d / "serve.log")
        finally:
            if old is None:
                os.environ.pop("REALM_REGISTRY_CACHE", None)
            else:
                os.environ["REALM_REGISTRY_CACHE"] = old
        self.port = int(self.url.rsplit(":", 1)[1])
        k = re.search(r"admin key \(shown once[^:]*: (\S+)", out)
        self.admin_key = k.group(1) if k else None
        self.cache = pathlib.Path(env_cache)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def cluster(realm_bin, tmp_path):
    model = model_path("SmolLM2-135M-Instruct.Q4_1.gguf")
    # not under tmp_path: pytest's root is private to this user, and the server may run as postgres
    pg_root = pathlib.Path(tempfile.mkdtemp(prefix="realm-multinode-pg-"))
    try:
        pg = Postgres(pg_root)
    except BaseException:
        shutil.rmtree(pg_root, ignore_errors=True)
        raise
    nodes, ngx = [], None
    try:
        nodes.append(Node(realm_bin, tmp_path, "n1", pg.url, model))
        nodes.append(Node(realm_bin, tmp_path, "n2", pg.url, model))
        nodes.append(Node(realm_bin, tmp_path, "n3", pg.url, model))
        (tmp_path / "nginx").mkdir()
        ngx = Nginx(tmp_path / "nginx", [n.port for n in nodes])
        yield pg, nodes, ngx
    finally:
        if ngx:
            ngx.stop()
        for n in nodes:
            n.kill()
        pg.stop()
        shutil.rmtree(pg_root, ignore_errors=True)


def chat(base, key, text="Say hi.", max_tokens=4, timeout=60):
    return http("POST", base + "/v1/chat/completions",
                {"model": "smollm2", "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens,
                 "temperature": 0}, key=key, timeout=timeout)


def test_cluster(cluster):
    pg, nodes, ngx = cluster
    admin = nodes[0].admin_key
    assert admin and all(n.admin_key is None for n in nodes[1:])  # one admin key for the cluster

    # a tenant and a key made through node 1 serve on every node and through nginx
    st, _, _ = http("POST", nodes[0].url + "/admin/v1/tenants", {"id": "acme", "models": "*"}, key=admin)
    assert st == 201
    st, _, k = http("POST", nodes[0].url + "/admin/v1/tenants/acme/keys", {"label": "ci"}, key=admin)
    assert st == 201
    key = k["key"]
    for n in nodes:
        st, _, body = chat(n.url, key)
        assert st == 200, body
        assert body["choices"][0]["message"]["content"] is not None
    # node 3's admin API sees node 1's tenant: one registry
    st, _, t = http("GET", nodes[2].url + "/admin/v1/tenants/acme", key=admin)
    assert st == 200 and t["id"] == "acme"

    # a guest deployed through node 1 runs on node 2: its bytes come from the database
    if UPPER.exists():
        st, _, g = http("PUT", nodes[0].url + "/admin/v1/tenants/acme/guest", raw=UPPER.read_bytes(), key=admin,
                        timeout=120)
        assert st in (200, 201), g
        st, _, body = chat(nodes[1].url, key, max_tokens=8)
        assert st == 200, body
        out = body["choices"][0]["message"]["content"]
        assert out.startswith("[upper] ") and out[8:] == out[8:].upper(), out  # the guest's mark
        assert list(nodes[1].cache.glob("guests/*.wasm")), "node 2 did not cache the module"
        st, _, _ = http("POST", nodes[0].url + "/admin/v1/tenants/acme/guest/rollback", {"version": 0}, key=admin)
        assert st == 200

    # affinity: one key, one node
    ups = set()
    for _ in range(6):
        st, hdr, body = chat(ngx.url, key)
        assert st == 200, body
        ups.add(hdr["X-Realm-Upstream"])
    assert len(ups) == 1, ups
    home = ups.pop()
    victim = next(n for n in nodes if home.endswith(f":{n.port}"))

    # the cluster-wide token quota: requests spread over all three nodes (as without affinity)
    # stop once the tenant's tokens in the shared ledger reach tokens_per_minute; sent one at a
    # time, nothing else is in flight, so the overshoot is at most the last request's tokens
    tpm = 300
    st, _, _ = http("POST", nodes[0].url + "/admin/v1/tenants", {"id": "quota", "models": "*",
                                                                 "limits": {"tokens_per_minute": tpm}}, key=admin)
    assert st == 201
    qkey = http("POST", nodes[0].url + "/admin/v1/tenants/quota/keys", {"label": "q"}, key=admin)[2]["key"]
    used, biggest, refused = 0, 0, []
    for i in range(60):
        st, _, body = chat(nodes[i % 3].url, qkey, max_tokens=16)
        if st == 429:
            refused.append(i % 3)
            if len(refused) == 3:
                break
            continue
        assert st == 200 and not refused, (st, body, refused)  # once refused, refused everywhere
        n = body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
        used, biggest = used + n, max(biggest, n)
    assert sorted(refused) == [0, 1, 2], refused  # every node refuses: the quota is the cluster's
    assert tpm <= used <= tpm + biggest, (used, biggest)
    st, _, body = chat(nodes[1].url, qkey)
    assert st == 429 and "all nodes" in body["error"]["message"], body
    st, _, u = http("GET", nodes[2].url + "/admin/v1/usage?tenant=quota&format=json", key=admin)
    assert st == 200, u

    # fail-over under load: 2 clients loop through nginx; the key's node is killed mid-way
    results, stop = [], threading.Event()

    def client():
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                st, hdr, _ = chat(ngx.url, key, max_tokens=16, timeout=60)
                # $upstream_addr lists every node tried ("dead:port, next:port"): the last answered
                up = (hdr.get("X-Realm-Upstream") or "").split(",")[-1].strip()
                results.append((t0, time.monotonic(), st, up))
            except Exception as e:  # a broken connection: a request in flight at the kill
                results.append((t0, time.monotonic(), repr(e), None))

    def wait_for(pred, limit):
        deadline = time.monotonic() + limit
        while not pred() and time.monotonic() < deadline:
            time.sleep(0.1)

    threads = [threading.Thread(target=client) for _ in range(2)]
    for t in threads:
        t.start()
    wait_for(lambda: len(results) >= 4, 90)
    t_kill = time.monotonic()
    victim.kill()
    wait_for(lambda: sum(1 for r in results if r[0] > t_kill and r[2] == 200) >= 4, 90)
    stop.set()
    for t in threads:
        t.join(90)
    before = [r for r in results if r[1] < t_kill]
    assert len(before) >= 4 and all(r[2] == 200 and r[3] == home for r in before), before
    # only requests in flight at the kill may fail (at most one per client); every later one
    # goes to one other node
    failed = [r for r in results if r[2] != 200]
    assert all(r[0] < t_kill for r in failed) and len(failed) <= len(threads), failed
    later = [r for r in results if r[0] > t_kill]
    assert len(later) >= 4 and all(r[2] == 200 for r in later), later
    new_home = {r[3] for r in later}
    assert len(new_home) == 1 and home not in new_home, new_home

    # readiness follows the registry
    alive = [n for n in nodes if n is not victim]
    for n in alive:
        st, _, h = http("GET", n.url + "/health")
        assert st == 200 and h["ready"] is True and h["registry"] == "ok", h
    pg.stop()
    st, _, h = http("GET", alive[0].url + "/health")
    assert st == 503 and h["registry"] == "unreachable" and h["ready"] is False, h
    pg.start()
    st, _, h = http("GET", alive[0].url + "/health")
    assert st == 200 and h["ready"] is True, h
    st, _, body = chat(ngx.url, key)
    assert st == 200, body
