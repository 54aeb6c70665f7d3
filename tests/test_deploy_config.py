"""docker-compose.yml checked by loading it (no Docker engine on this machine)."""

import yaml

from tests.conftest import ROOT
from tests.triton_flags import assert_restricted_api_flags


def test_compose_triton_service():
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    t = doc["services"]["triton"]
    cmd = " ".join(t["command"])
    assert "--model-control-mode=explicit" in cmd and "--model-repository=/models" in cmd
    assert any(v.endswith(":/models") for v in t["volumes"])
    dev = t["deploy"]["resources"]["reservations"]["devices"][0]
    assert dev["driver"] == "nvidia" and "gpu" in dev["capabilities"]
    assert "/v2/health/ready" in " ".join(t["healthcheck"]["test"])
    # not on the LAN: nothing published, and the APIs that change what it runs need a key
    assert "ports" not in t and set(t["expose"]) == {"8000", "8001", "8002"}
    assert assert_restricted_api_flags(cmd.split()) == "$$TRITON_ADMIN_KEY"  # compose's escape: the shell expands it
    assert (ROOT / t["build"]["dockerfile"]).exists()


def _networks(svc: dict) -> set[str]:
    nets = svc.get("networks", ["default"])  # none named: compose's default network only
    return set(nets)


def test_compose_triton_is_fenced_off_on_an_internal_network():
    doc = _compose()
    services = doc["services"]
    t = services["triton"]
    assert "ports" not in t  # nothing published on the host
    assert _networks(t) == {"inference"}  # not on the default network the databases and Grafana share
    assert doc["networks"]["inference"]["internal"] is True  # no route out, nothing published on it
    on_inference = {n for n, svc in services.items() if "inference" in _networks(svc)}
    assert on_inference == {"triton", "gateway", "batch-worker", "prometheus"}
    for name in ("gateway", "batch-worker", "prometheus"):  # they still reach the databases, the broker, Grafana
        assert "default" in _networks(services[name]), name
    # the service names the clients use resolve on that network
    assert services["gateway"]["environment"]["TRITON_URL"].split(":")[0] == "triton"
    prom = yaml.safe_load((ROOT / "monitoring" / "prometheus.yml").read_text())
    assert ["triton:8002"] in [c["targets"] for j in prom["scrape_configs"] for c in j.get("static_configs", [])]


def test_compose_publishes_only_the_gateway_and_grafana_on_every_interface():
    services = _compose()["services"]
    everywhere = set()
    for name, svc in services.items():
        for port in svc.get("ports", []):
            if not str(port).startswith("127.0.0.1:"):
                everywhere.add((name, str(port)))
    # the TLS proxy is an opt-in profile in front of the gateway
    assert everywhere == {("gateway", "8080:8080"), ("grafana", "3000:3000"), ("tls-proxy", "8443:8443")}
    assert services["tls-proxy"]["profiles"] == ["tls-proxy"]
    prometheus = services["prometheus"]
    assert prometheus["ports"] == ["127.0.0.1:9090:9090"]
    # the lifecycle API (/-/quit, /-/reload) takes no credential: off
    assert not any("enable-lifecycle" in a for a in prometheus["command"])


# ---- the whole platform on one GPU box ---------------------------------------------------

def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _env_example(name: str) -> dict[str, str]:
    lines = (ROOT / "docker" / "env" / f"{name}.env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_compose_services_healthchecks_and_start_order():
    services = _compose()["services"]
    assert set(services) == {"triton", "gateway", "batch-worker", "flower", "mysql", "redis", "rabbitmq",
                             "prometheus", "grafana", "tls-proxy"}
    for name, svc in services.items():
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        for dep, cond in svc.get("depends_on", {}).items():
            assert dep in services and cond["condition"] in ("service_healthy", "service_started"), (name, dep)
    deps = {n: dict((d, c["condition"]) for d, c in s.get("depends_on", {}).items()) for n, s in services.items()}
    # the gateway migrates the database at start; workers need its schema and the broker
    assert {d: deps["gateway"][d] for d in ("mysql", "redis", "rabbitmq")} == dict.fromkeys(
        ("mysql", "redis", "rabbitmq"), "service_healthy")
    assert deps["batch-worker"]["gateway"] == deps["batch-worker"]["rabbitmq"] == "service_healthy"
    assert deps["grafana"]["prometheus"] == "service_healthy"
    # a start order exists (no cycle)
    order: list[str] = []
    while len(order) < len(services):
        ready = [n for n in services if n not in order and set(deps[n]) <= set(order)]
        assert ready, f"depends_on cycle among {set(services) - set(order)}"
        order += ready
    assert order.index("mysql") < order.index("gateway") < order.index("batch-worker")


def test_compose_app_services_share_one_image_and_run_the_right_commands():
    services = _compose()["services"]
    apps = {n: services[n] for n in ("gateway", "batch-worker", "flower")}
    assert {s["build"]["dockerfile"] for s in apps.values()} == {"docker/gateway.Dockerfile"}
    assert len({s["image"] for s in apps.values()}) == 1
    assert apps["batch-worker"]["command"] == ["python", "-m", "batch", "worker"]
    assert " ".join(apps["flower"]["command"]) == "celery --app batch.celery_app flower --port=5555"
    env = apps["gateway"]["environment"]
    assert env["TRITON_URL"] == "triton:8001" and env["TRITON_HTTP_URL"] == "triton:8000"
    assert env["REDIS_URL"].startswith("redis://redis:")
    # admin promotions rewrite config.pbtxt: the gateway mounts Triton's repository where it looks
    triton_repo = next(v for v in services["triton"]["volumes"] if v.endswith(":/models"))
    assert triton_repo in apps["gateway"]["volumes"] and env["MODEL_REPOSITORY"] == "/models"
    assert "8080:8080" in apps["gateway"]["ports"]


def test_compose_dockerfile_copies_every_package():
    """The gateway image installs the project: each package pyproject.toml includes is copied."""
    import tomllib

    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    dockerfile = (ROOT / "docker" / "gateway.Dockerfile").read_text()
    for pattern in include:
        pkg = pattern.rstrip("*")
        if (ROOT / pkg).is_dir():
            assert f"COPY {pkg} {pkg}" in dockerfile, f"docker/gateway.Dockerfile misses {pkg}/"
    assert "-c constraints.txt" in dockerfile and 'CMD ["python", "-m", "gateway.serve"]' in dockerfile
    serve = (ROOT / "gateway" / "serve.py").read_text()
    assert "workers=1" in serve and "FORWARDED_ALLOW_IPS" in serve  # one worker per container; no "*" proxies


def test_compose_volumes_are_named_and_declared():
    doc = _compose()
    declared = set(doc["volumes"])
    used = set()
    for svc in doc["services"].values():
        for v in svc.get("volumes", []):
            src = v.split(":", 1)[0]
            if not src.startswith((".", "/", "$")):
                used.add(src)
    assert used == declared, (used, declared)
    gw = doc["services"]["gateway"]["volumes"]
    assert any(v.endswith(":/data/gateway") for v in gw), "the outbox must outlive the container"
    assert doc["services"]["gateway"]["environment"]["OUTBOX_PATH"].startswith("/data/gateway/")
    assert "mysql-data:/var/lib/mysql" in doc["services"]["mysql"]["volumes"]


def test_compose_secrets_come_from_uncommitted_env_files():
    import subprocess

    services = _compose()["services"]
    for name, svc in services.items():
        for key in svc.get("environment", {}) or {}:
            assert not any(w in key for w in ("PASSWORD", "TOKEN", "SECRET", "PASS", "AUTH")), (name, key)
        for f in svc.get("env_file", []):
            example = ROOT / (f + ".example")
            assert example.exists(), f"{f}.example missing"
            ignored = subprocess.run(["git", "check-ignore", "-q", f], cwd=ROOT).returncode == 0
            assert ignored, f"{f} must be gitignored"
            tracked = subprocess.run(["git", "ls-files", "--error-unmatch", f], cwd=ROOT, capture_output=True)
            assert tracked.returncode != 0, f"{f} is committed"
    # the templates agree with each other (one password per service, used on both ends)
    gw, db, mq = _env_example("gateway"), _env_example("mysql"), _env_example("rabbitmq")
    assert f"{db['MARIADB_USER']}:{db['MARIADB_PASSWORD']}@mysql:3306/{db['MARIADB_DATABASE']}" in gw["DATABASE_URL"]
    assert gw["BATCH_BROKER_URL"].startswith(f"amqp://{mq['RABBITMQ_DEFAULT_USER']}:{mq['RABBITMQ_DEFAULT_PASS']}"
                                             "@rabbitmq:5672/")
    assert {"ADMIN_TOKEN", "FLOWER_BASIC_AUTH"} <= set(gw)


def test_compose_monitoring_is_wired_to_the_services():
    doc = _compose()
    services = doc["services"]
    assert "./monitoring:/etc/prometheus:ro" in services["prometheus"]["volumes"]
    prom = yaml.safe_load((ROOT / "monitoring" / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    assert jobs["triton"]["static_configs"][0]["targets"] == ["triton:8002"]
    assert jobs["gateway"]["static_configs"][0]["targets"] == ["gateway:8080"]
    sd = jobs["batch-worker"]["dns_sd_configs"][0]
    assert sd["names"] == ["batch-worker"]
    assert str(sd["port"]) == services["batch-worker"]["environment"]["BATCH_METRICS_PORT"]
    grafana = services["grafana"]
    mounts = dict(v.rsplit(":", 2)[:2] if v.endswith(":ro") else v.split(":", 1) for v in grafana["volumes"])
    assert mounts["./monitoring/grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = yaml.safe_load((ROOT / "monitoring" / "grafana" / "provisioning" / "dashboards" / "pcb.yml").read_text())
    assert mounts["./monitoring/grafana/dashboards"] == provider["providers"][0]["options"]["path"]
    assert grafana["environment"]["PROMETHEUS_URL"] == "http://prometheus:9090"


def test_probes_use_liveness_and_readiness_routes():
    gw = _compose()["services"]["gateway"]
    assert "/health/ready" in " ".join(gw["healthcheck"]["test"])
    dep = next(d for d in yaml.safe_load_all((ROOT / "deploy" / "k8s" / "base" / "gateway.yaml").read_text())
               if d and d.get("kind") == "StatefulSet")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health/live"


def test_compose_can_terminate_tls_in_front_of_the_gateway():
    """The opt-in ``tls-proxy`` profile: nginx with the plant's certificate, passing the
    browser's Host (the Origin check) and the client's address (the per-address limits)
    to the gateway, never buffering or capping the uploads the gateway bounds itself, and
    never on Triton's network."""
    proxy = _compose()["services"]["tls-proxy"]
    assert proxy.get("networks", ["default"]) == ["default"]
    assert "./docker/tls:/tls:ro" in proxy["volumes"]
    conf = (ROOT / "docker" / "tls-proxy" / "nginx.conf").read_text()
    for line in ("listen 8443 ssl;", "ssl_certificate     /tls/gateway.crt;", "proxy_pass http://gateway:8080;",
                 "proxy_set_header Host $http_host;", "proxy_set_header X-Forwarded-For $remote_addr;",
                 "proxy_request_buffering off;", "proxy_buffering off;"):
        assert line in conf, line
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in conf
