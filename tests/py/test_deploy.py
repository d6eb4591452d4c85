"""Packaging of issue 17 (Dockerfile, deploy/compose.yaml, deploy/k8s/, deploy/nginx/realm.conf):
every YAML file parses, the fields that tie the pieces together agree (probes on /health, ports,
names of Secrets / ConfigMaps / Services, the registry URL), and the nginx configuration passes
`nginx -t` (when nginx is installed: scripts/setup.sh installs it). docker and kubectl are not
needed."""
import pathlib
import re
import shutil
import subprocess

import pytest

from conftest import ROOT

yaml = pytest.importorskip("yaml")

DEPLOY = ROOT / "deploy"
NGINX_CONF = DEPLOY / "nginx/realm.conf"


def yaml_files():
    return sorted(DEPLOY.rglob("*.yaml")) + sorted(DEPLOY.rglob("*.yml"))


def k8s_docs():
    docs = []
    for p in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(p.read_text()) if d]
    return docs


def find(docs, kind, name):
    hits = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(hits) == 1, f"{kind}/{name}: {len(hits)} documents"
    return hits[0]


def test_every_yaml_parses():
    files = yaml_files()
    assert len(files) >= 6, files
    for p in files:
        docs = [d for d in yaml.safe_load_all(p.read_text()) if d is not None]
        assert docs, f"{p}: empty"
        for d in docs:
            assert isinstance(d, dict), f"{p}: a document is not a mapping"


def test_compose():
    c = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    svc = c["services"]
    nodes = [n for n in svc if re.fullmatch(r"realm\d+", n)]
    assert len(nodes) == 3 and {"postgres", "nginx", "seed"} <= set(svc)
    for n in nodes:
        s = svc[n]
        cmd = s["command"]
        assert cmd[0] == "serve"
        reg = cmd[cmd.index("--registry") + 1]
        assert reg.startswith("postgresql://") and "@postgres:5432/" in reg
        port = int(cmd[cmd.index("--port") + 1])
        assert port == 8080
        assert "/health" in " ".join(s["healthcheck"]["test"])
        assert s["depends_on"]["seed"]["condition"] == "service_completed_successfully"
        assert svc["nginx"]["depends_on"][n]["condition"] == "service_healthy"
    assert "pg_isready" in svc["postgres"]["healthcheck"]["test"]
    # nginx mounts the config under test, and its upstream lists exactly the nodes
    vols = svc["nginx"]["volumes"]
    assert any(v.startswith("./nginx/realm.conf:") for v in vols)
    ups = re.findall(r"^\s*server\s+(\S+):(\d+)", NGINX_CONF.read_text(), re.M)
    assert sorted(h for h, _ in ups) == sorted(nodes)
    assert {int(p) for _, p in ups} == {8080}
    listen = re.search(r"^\s*listen\s+(\d+);", NGINX_CONF.read_text(), re.M).group(1)
    assert svc["nginx"]["ports"] == [f"{listen}:{listen}"]


def test_k8s():
    docs = k8s_docs()
    dep = find(docs, "Deployment", "realm")
    pod = dep["spec"]["template"]["spec"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    (ctr,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in ctr["ports"]}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        g = ctr[probe]["httpGet"]
        assert g["path"] == "/health", probe
        assert g["port"] in ports or g["port"] in ports.values(), probe
    # the port the server binds is the containerPort
    cm = find(docs, "ConfigMap", "realm-config")
    assert int(cm["data"]["REALM_PORT"]) == ports["http"]
    assert "$(REALM_PORT)" in ctr["args"] and "--registry" in ctr["args"]
    assert ctr["envFrom"][0]["configMapRef"]["name"] == "realm-config"
    # every Secret key referenced exists
    secret = find(docs, "Secret", "realm-admin")
    refs = [e["valueFrom"]["secretKeyRef"] for c in pod["containers"] + pod["initContainers"]
            for e in c.get("env", []) if "valueFrom" in e]
    assert refs
    for r in refs:
        s = find(docs, "Secret", r["name"])
        assert r["key"] in s["stringData"], r
    assert "admin-key" in secret["stringData"]
    assert [i["key"] for v in pod["volumes"] if "secret" in v for i in v["secret"]["items"]] == ["seed.json"]
    # the Service targets the named port; the registry URL names the PostgreSQL Service
    svc = find(docs, "Service", "realm")
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["ports"][0]["targetPort"] in ports
    pg = find(docs, "Service", "realm-postgres")
    m = re.match(r"postgresql://[^@]+@([^:/]+):(\d+)/", secret["stringData"]["registry-url"])
    assert m and m.group(1) == "realm-postgres" and int(m.group(2)) == pg["spec"]["ports"][0]["port"]
    find(docs, "StatefulSet", "realm-postgres")
    ing = find(docs, "Ingress", "realm")
    assert ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/upstream-hash-by"] == "$http_authorization"
    mounts = {v["name"] for v in ctr["volumeMounts"]}
    assert mounts <= {v["name"] for v in pod["volumes"]}


def test_dockerfile():
    text = (ROOT / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M)
    assert len(froms) == 2 and froms[1][0] == "debian:12-slim"
    build = froms[0][1]
    assert "scripts/setup.sh" in text and re.search(r"RUN make\b", text)
    assert f"COPY --from={build} /src/build/realm " in text
    assert re.search(rf"COPY --from={build} /src/build/guest/\*\.wasm /opt/realm/guest/", text)
    runtime = text.split("FROM debian:12-slim", 1)[1]
    assert "libpq5" in runtime and "-dev" not in runtime  # runtime libraries only
    assert "HEALTHCHECK" in runtime and "/health" in runtime


def test_nginx_conf_rules():
    t = NGINX_CONF.read_text()
    assert re.search(r"^\s*hash \$http_authorization consistent;", t, re.M)
    assert re.search(r"^\s*proxy_buffering off;", t, re.M)
    assert re.search(r"^\s*proxy_next_upstream error timeout", t, re.M)


def nginx_check(conf_text, tmp_path):
    """Runs `nginx -t` on conf_text inside a minimal main config with a temp prefix."""
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if pathlib.Path("/usr/sbin/nginx").exists() else None)
    if not nginx:
        pytest.skip("nginx not installed (scripts/setup.sh apt installs it)")
    (tmp_path / "logs").mkdir(exist_ok=True)
    (tmp_path / "realm.conf").write_text(conf_text)
    main = tmp_path / "nginx.conf"
    main.write_text(f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/logs/error.log;\n"
                    "events {}\n"
                    f"http {{\n access_log off;\n client_body_temp_path {tmp_path}/body;\n"
                    f" proxy_temp_path {tmp_path}/proxy;\n include {tmp_path}/realm.conf;\n}}\n")
    return subprocess.run([nginx, "-t", "-p", str(tmp_path), "-e", str(tmp_path / "logs/error.log"), "-c", str(main)],
                          capture_output=True, text=True, timeout=30)


def test_nginx_config_valid(tmp_path):
    # the compose host names do not resolve here: the same file with loopback addresses
    text = re.sub(r"server realm(\d+):8080", lambda m: f"server 127.0.0.{m.group(1)}:8080",
                  NGINX_CONF.read_text())
    r = nginx_check(text, tmp_path)
    assert r.returncode == 0, r.stderr
    bad = nginx_check(text.replace("proxy_buffering off;", "proxy_buffering sideways;"), tmp_path)
    assert bad.returncode != 0  # the check can fail
