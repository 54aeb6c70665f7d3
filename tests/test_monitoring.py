"""Monitoring for real: promtool checks the Prometheus configuration and the rules and runs
the rules' unit tests; then Debian's Prometheus scrapes a real gateway (MariaDB, RabbitMQ),
a real batch worker and the real CPU Triton server while boards are inspected and a batch
job runs, loads and evaluates the rules, and every Grafana panel's query must return data.
Only the GPU panels are skipped (no GPU here); build/monitoring/panel_queries.json lists
every query and what it returned."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import time

import httpx
import pytest
import yaml

from pcb.synthetic import render_board
from serving.cpu_server import free_port, wait_http
from tests.conftest import ROOT, encode, fresh_mariadb
from tests.gateway_server import GatewayServer

MON = ROOT / "monitoring"
METRICS_TOKEN = "mon-scrape-token"
TOKEN = "mon-admin"
# metric families this machine cannot export (Triton's GPU metrics); everything else must answer
OPTIONAL = re.compile(r"\b(nv_gpu_\w+)")
BATCH_IMAGES = 6


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: `make sysdeps` installs Debian's prometheus package")
    return path


def _dashboards():
    """monitoring/grafana/build_dashboards.py (a script, not a package module)."""
    if "build_dashboards" not in sys.modules:
        spec = importlib.util.spec_from_file_location("build_dashboards", MON / "grafana" / "build_dashboards.py")
        mod = sys.modules["build_dashboards"] = importlib.util.module_from_spec(spec)  # dataclasses need it
        spec.loader.exec_module(mod)
    return sys.modules["build_dashboards"]


def test_promtool_checks_config_and_rules(tmp_path):
    # the committed config as compose mounts it; only the scrape token's file path is local
    cfg = yaml.safe_load((MON / "prometheus.yml").read_text())
    (tmp_path / "metrics_token").write_text("token")
    for job in cfg["scrape_configs"]:
        if "authorization" in job:
            job["authorization"]["credentials_file"] = str(tmp_path / "metrics_token")
    cfg["rule_files"] = [str(MON / f) for f in cfg["rule_files"]]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    out = subprocess.run([_tool("promtool"), "check", "config", str(tmp_path / "prometheus.yml")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout and "rule files found" in out.stdout
    rules = sorted((MON / "rules").glob("*.rules.yml"))
    out = subprocess.run([_tool("promtool"), "check", "rules", *map(str, rules)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_rule_unit_tests():
    tests = sorted((MON / "tests").glob("*.test.yml"))
    out = subprocess.run([_tool("promtool"), "test", "rules", *map(str, tests)], capture_output=True, text=True,
                         cwd=MON / "tests")
    assert out.returncode == 0, out.stdout + out.stderr
    # every alert has at least one unit test
    alerts = {r["alert"] for g in yaml.safe_load((MON / "rules" / "pcb.rules.yml").read_text())["groups"]
              for r in g["rules"] if "alert" in r}
    tested = {t["alertname"] for f in tests for case in yaml.safe_load(f.read_text())["tests"]
              for t in case.get("alert_rule_test", [])}
    assert alerts <= tested, f"alerts without a unit test: {alerts - tested}"


def test_every_alert_has_a_runbook_section():
    headings = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
                for h in re.findall(r"^#+ (.+)$", (ROOT / "docs" / "deployment.md").read_text(), re.M)}
    for group in yaml.safe_load((MON / "rules" / "pcb.rules.yml").read_text())["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                doc, anchor = rule["annotations"]["runbook"].split("#")
                assert doc == "docs/deployment.md" and anchor in headings, (rule["alert"], anchor)


def test_dashboards_are_generated_and_provisioned():
    mod = _dashboards()
    assert mod.main(["--check"]) == 0
    ds = yaml.safe_load((MON / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uid = ds["datasources"][0]["uid"]
    for path in (MON / "grafana" / "dashboards").glob("*.json"):
        board = json.loads(path.read_text())
        panels = [p for p in board["panels"] if p["type"] != "row"]
        assert panels and len({p["id"] for p in board["panels"]}) == len(board["panels"])
        for p in panels:
            assert p["datasource"]["uid"] == uid and p["targets"], p["title"]


# ---- a real Prometheus against the real gateway and Triton --------------------------------

@pytest.fixture(scope="module")
def env(triton, tmp_path_factory):
    """Settings shared by the gateway and the batch worker: a fresh MariaDB database and a
    RabbitMQ queue of this module's own (both removed afterwards)."""
    from batch.local_workers import RABBIT, rabbit_queue

    d = tmp_path_factory.mktemp("mon")
    images = d / "archive"
    images.mkdir()
    for i in range(BATCH_IMAGES):
        (images / f"b{i}.jpg").write_bytes(encode(render_board(900 + i).image))
    with fresh_mariadb() as name, rabbit_queue("pcb-batch-mon") as queue:
        yield {"TRITON_URL": triton.grpc_url, "TRITON_HTTP_URL": triton.http_url,
               "DATABASE_URL": f"mysql+pymysql://root:@127.0.0.1:3306/{name}", "OUTBOX_PATH": str(d / "o.db"),
               "IMAGE_DIR": str(d / "img"), "ADMIN_TOKEN": TOKEN, "PAIRING_WINDOW_MS": "300", "REDIS_URL": "",
               "BATCH_BROKER_URL": RABBIT, "BATCH_QUEUE": queue, "BATCH_DATA_DIR": str(d / "batch"),
               "BATCH_ALLOWED_ROOTS": str(images), "ENHANCE_DIR": str(d / "enhance"), "ARCHIVE": str(images),
               "METRICS_TOKEN": METRICS_TOKEN}


@pytest.fixture(scope="module")
def gateway(env, tmp_path_factory):
    srv = GatewayServer(env, tmp_path_factory.mktemp("mon-gw") / "gateway.log").start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def worker(env, gateway, tmp_path_factory):
    """A real batch worker (``python -m batch worker``) with its metrics port."""
    from batch.local_workers import Worker

    port = free_port()
    w = Worker({**env, "BATCH_METRICS_PORT": str(port)}, tmp_path_factory.mktemp("mon-worker") / "worker.log")
    w.start()
    try:
        wait_http(f"http://127.0.0.1:{port}/metrics", 60, w.proc)
        yield port
    finally:
        w.stop()


def _prometheus_config(targets: dict[str, str], dest) -> dict:
    """monitoring/prometheus.yml with its targets pointed at this test's servers."""
    cfg = yaml.safe_load((MON / "prometheus.yml").read_text())
    jobs = {j["job_name"] for j in cfg["scrape_configs"]}
    assert jobs == set(targets), f"every scrape job needs a target here: {jobs}"
    cfg["global"].update(scrape_interval="1s", evaluation_interval="1s")
    token_file = dest / "metrics_token"
    token_file.write_text(METRICS_TOKEN)
    cfg["scrape_configs"] = [{"job_name": j["job_name"], "static_configs": [{"targets": [targets[j["job_name"]]]}],
                              # the gateway's /metrics needs its scrape token, as in the committed config
                              **({"authorization": {**j["authorization"], "credentials_file": str(token_file)}}
                                 if "authorization" in j else {})}
                             for j in cfg["scrape_configs"]]
    cfg["rule_files"] = [str(MON / f) for f in cfg["rule_files"]]
    cfg.pop("alerting", None)
    (dest / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    return cfg


@pytest.fixture(scope="module")
def prometheus(triton, gateway, worker, tmp_path_factory):
    d = tmp_path_factory.mktemp("prometheus")
    port = free_port()
    _prometheus_config({"triton": f"127.0.0.1:{triton.ports['metrics']}", "gateway": f"127.0.0.1:{gateway.port}",
                        "batch-worker": f"127.0.0.1:{worker}", "prometheus": f"127.0.0.1:{port}"}, d)
    log = open(d / "prometheus.log", "ab")
    proc = subprocess.Popen([_tool("prometheus"), f"--config.file={d / 'prometheus.yml'}",
                             f"--storage.tsdb.path={d / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready", 30, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _register(c: httpx.Client, device: str, side: str, gpio: bool) -> dict:
    r = c.post("/admin/devices", headers={"Authorization": f"Bearer {TOKEN}"},
               json={"device_id": device, "side": side, "drives_gpio": gpio})
    assert r.status_code == 201, r.text
    return {"X-Device-Id": device, "X-API-Key": r.json()["api_key"]}


def _drive_line(url: str, seconds: float) -> dict:
    """Both edges inspect boards (paired, some defective, one left side alone -> partial), a
    dual request now and then and one broken image, for ``seconds``, so every counter moves
    between scrapes."""
    counts = {"paired": 0, "partial": 0, "dual": 0}
    with httpx.Client(base_url=url, timeout=30) as c:
        left, right = _register(c, "mon-left", "left", True), _register(c, "mon-right", "right", False)
        for h in (left, right):
            assert c.post("/v1/heartbeat", headers=h).status_code == 200
        jpeg = [encode(render_board(700 + i, force=f).image) for i, f in
                enumerate([[], ["short"], [], ["missing_component"], ["spurious_copper"], []])]
        # a truncated JPEG passes the gateway's header check and fails in Triton (counted there)
        r = c.post("/v1/inspect", headers=right, files={"image": ("t.jpg", jpeg[0][:2000], "image/jpeg")},
                   data={"board_id": "MON-truncated"})
        assert r.status_code == 422, r.text
        deadline, n = time.monotonic() + seconds, 0
        while time.monotonic() < deadline:
            board = f"MON-{n}"
            img = lambda k: ("b.jpg", jpeg[k % len(jpeg)], "image/jpeg")  # noqa: E731
            if n % 5 == 4:
                r = c.post("/v1/inspect/dual", headers=left, files={"left": img(n), "right": img(n + 1)},
                           data={"board_id": board})
                counts["dual"] += 1
            else:
                if n % 7 != 6:  # every seventh board the right camera misses
                    assert c.post("/v1/inspect", headers=right, files={"image": img(n + 1)},
                                  data={"board_id": board}).status_code == 200
                r = c.post("/v1/inspect", headers=left, files={"image": img(n)}, data={"board_id": board})
                counts[r.json()["board"]["pairing"]] += 1
            assert r.status_code == 200, r.text
            n += 1
    return counts


def _query(prom: str, expr: str) -> list:
    r = httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "success", (expr, r.text)
    return r.json()["data"]["result"]


def _wait_for(prom: str, expr: str, timeout: float = 30) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := _query(prom, expr):
            return result
        time.sleep(0.5)
    raise AssertionError(f"no data for {expr} within {timeout}s")


def _run_batch_job(url: str, folder: str) -> dict:
    with httpx.Client(base_url=url, timeout=30, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        r = c.post("/api/v1/jobs", data={"source_dir": folder, "priority": "normal", "chunk_size": "2",
                                         "name": "monitoring"})
        assert r.status_code == 201, r.text
        job = r.json()["job_id"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            p = c.get(f"/api/v1/jobs/{job}").json()
            if p["state"] != "running" and p["state"] != "pending":
                return p
            time.sleep(0.3)
    raise AssertionError(f"batch job {job} did not finish: {p}")


@pytest.fixture(scope="module")
def line(prometheus, gateway, env):
    _wait_for(prometheus, 'count(up == 1) == 4')  # every target scraped before any work
    job = _run_batch_job(gateway.url, env["ARCHIVE"])
    assert job["counts"]["completed"] == BATCH_IMAGES, job
    counts = _drive_line(gateway.url, seconds=8)
    assert counts["paired"] and counts["partial"] and counts["dual"], counts
    # the boards' counters in at least two scrapes, and the rules evaluated on them
    _wait_for(prometheus, "sum(rate(gateway_verdicts_total[1m])) > 0")
    _wait_for(prometheus, "pcb:inspections:rate5m > 0")
    return counts


def test_prometheus_scrapes_gateway_and_triton(prometheus, line):
    targets = httpx.get(f"{prometheus}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
    assert {t["labels"]["job"]: t["health"] for t in targets} == {"triton": "up", "gateway": "up",
                                                                  "batch-worker": "up", "prometheus": "up"}
    models = {r["metric"]["model"] for r in _query(prometheus, "nv_inference_request_success")}
    assert {"pcb_inspect", "pcb_dual_inspect", "pcb_detector"} <= models
    assert _query(prometheus, 'gateway_pairing_total{outcome="partial"} > 0')
    edges = {r["metric"]["device"] for r in _query(prometheus, "gateway_edge_last_seen_timestamp_seconds")}
    assert {"mon-left", "mon-right"} <= edges
    assert float(_query(prometheus, "max(gateway_edges_online)")[0]["value"][1]) >= 2
    assert float(_query(prometheus, "min(gateway_triton_ready)")[0]["value"][1]) == 1


def test_rules_load_and_evaluate_without_errors(prometheus, line):
    groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
    assert [g["name"] for g in groups] == ["pcb"] and len(groups[0]["rules"]) >= 19
    bad = [(r["name"], r.get("lastError")) for g in groups for r in g["rules"] if r["health"] != "ok"]
    assert not bad, bad


def test_every_dashboard_query_returns_data(prometheus, line):
    mod = _dashboards()
    names = set(httpx.get(f"{prometheus}/api/v1/label/__name__/values", timeout=10).json()["data"])

    def exported(metric: str) -> bool:
        return any(n == metric or n.startswith(metric + "_") for n in names)

    report, empty = [], []
    for uid in mod.DASHBOARDS:
        for title, expr in mod.queries(mod.build(uid)):
            missing = sorted({m for m in OPTIONAL.findall(expr) if not exported(m)})
            if missing:
                report.append({"dashboard": uid, "panel": title, "expr": expr, "skipped": f"not exported: {missing}"})
                continue
            result = _query(prometheus, expr)
            report.append({"dashboard": uid, "panel": title, "expr": expr, "series": len(result)})
            if not result:
                empty.append((uid, title, expr))
    out = ROOT / "build" / "monitoring"
    out.mkdir(parents=True, exist_ok=True)
    (out / "panel_queries.json").write_text(json.dumps(report, indent=2))
    assert not empty, f"panel queries without data: {empty}"
    skipped = [r["panel"] for r in report if "skipped" in r]
    assert set(skipped) == {"GPU utilisation and memory (GPU box only)"}, skipped


def test_edge_going_silent_shows_in_prometheus(prometheus, gateway, line):
    """The edge-offline signal end to end: a device that stops sending ages in Prometheus."""
    r = _query(prometheus, 'time() - gateway_edge_last_seen_timestamp_seconds{device="mon-right"}')
    age_before = float(r[0]["value"][1])
    time.sleep(2.5)
    r = _query(prometheus, 'time() - gateway_edge_last_seen_timestamp_seconds{device="mon-right"}')
    assert float(r[0]["value"][1]) > age_before + 1.5
