"""deploy/k8s: the base and both overlays rendered (tests/kustomize_lite.py, checked against
``kubectl kustomize`` where kubectl exists), validated against the Kubernetes schemas with
kubernetes-validate (strict: unknown fields fail), and checked for what the deployment
promises: N Triton GPU replicas on a read-only shared repository with readiness on
/v2/health/ready, an autoscaled gateway, independently scaled batch workers, Prometheus
discovery, settings that exist, no real secrets. No cluster here: nothing is applied."""

from __future__ import annotations

import shutil
import subprocess
import time

import httpx
import kubernetes_validate
import pytest
import yaml

from serving.cpu_server import free_port, wait_http
from settings.environment import Settings
from tests.conftest import ROOT
from tests.kustomize_lite import load_docs, render
from tests.triton_flags import assert_restricted_api_flags

K8S = ROOT / "deploy" / "k8s"
TARGETS = {"base": K8S / "base", "dev": K8S / "overlays" / "dev", "production": K8S / "overlays" / "production"}
K8S_VERSION = "1.30.0"  # the oldest release the manifests promise to run on (HPA v2, PVC retention)


def _key(o: dict) -> tuple:
    return o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict[tuple, dict]]:
    return {name: {_key(o): o for o in render(path)} for name, path in TARGETS.items()}


def _one(objs: dict, kind: str, name: str) -> dict:
    hits = [o for (k, _, n), o in objs.items() if k == kind and n == name]
    assert len(hits) == 1, (kind, name, len(hits))
    return hits[0]


def _pod(o: dict) -> dict:
    return o["spec"]["template"]["spec"]


@pytest.mark.parametrize("target", list(TARGETS))
def test_render_matches_kubectl_kustomize(target, rendered):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed: rendered by kustomize_lite only")
    out = subprocess.run([kubectl, "kustomize", str(TARGETS[target])], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    theirs = {_key(o): o for o in yaml.safe_load_all(out.stdout) if o}
    assert theirs == rendered[target]


@pytest.mark.parametrize("target", list(TARGETS))
def test_manifests_validate_against_kubernetes_schemas(target, rendered):
    for key, obj in rendered[target].items():
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{target} {key}: {e.message} at {list(e.path)}")


def test_templates_outside_the_kustomization_validate():
    for path in [K8S / "base" / "secret.example.yaml", *sorted((K8S / "jobs").glob("*.yaml"))]:
        for obj in load_docs(path):
            obj = {**obj, "metadata": {**obj["metadata"], "name": obj["metadata"].get("name", "x")}}
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


@pytest.mark.parametrize("target", ["dev", "production"])
def test_triton_replicas_share_a_read_only_repository(target, rendered):
    objs = rendered[target]
    triton = _one(objs, "Deployment", "triton")
    want = {"dev": 1, "production": 3}[target]
    assert triton["spec"]["replicas"] == want
    assert triton["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    c = _pod(triton)["containers"][0]
    args = " ".join(c["args"])
    assert "--model-control-mode=explicit" in args and "--model-repository=/models" in args
    assert "--strict-readiness=true" in args
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in c["volumeMounts"]
    vol = next(v for v in _pod(triton)["volumes"] if v["name"] == "models")
    claim = _one(objs, "PersistentVolumeClaim", vol["persistentVolumeClaim"]["claimName"])
    if target == "production":  # one NFS export, read-only for every replica
        assert claim["spec"]["accessModes"] == ["ReadOnlyMany"]
        pv = _one(objs, "PersistentVolume", claim["spec"]["volumeName"])
        assert pv["spec"]["accessModes"] == ["ReadOnlyMany"] and pv["spec"]["nfs"]["readOnly"] is True
        assert _one(objs, "PodDisruptionBudget", "triton")["spec"]["maxUnavailable"] == 1
    assert _one(objs, "Service", "triton-pods")["spec"]["clusterIP"] == "None"


@pytest.mark.parametrize("target", ["dev", "production"])
def test_gateway_autoscaled_and_workers_scaled_on_their_own(target, rendered):
    objs = rendered[target]
    gw = _one(objs, "StatefulSet", "gateway")
    hpa = _one(objs, "HorizontalPodAutoscaler", "gateway")
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["kind"], ref["name"]) == ("StatefulSet", "gateway")
    assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert {"dev": (1, 2), "production": (3, 12)}[target] == (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"])
    c = _pod(gw)["containers"][0]
    assert c["resources"]["requests"]["cpu"], "the HPA's CPU target needs a request"
    assert [t["metadata"]["name"] for t in gw["spec"]["volumeClaimTemplates"]] == ["outbox"]
    assert {"name": "outbox", "mountPath": "/data/gateway"} in c["volumeMounts"]
    svc = _one(objs, "Service", "gateway")
    assert svc["spec"]["selector"].items() <= gw["spec"]["template"]["metadata"]["labels"].items()
    worker = _one(objs, "Deployment", "batch-worker")
    assert _pod(worker)["containers"][0]["command"] == ["python", "-m", "batch", "worker"]
    assert worker["spec"]["replicas"] == {"dev": 1, "production": 4}[target]
    flower = _one(objs, "Deployment", "flower")
    assert " ".join(_pod(flower)["containers"][0]["command"]) == \
        "celery --app batch.celery_app flower --port=5555"


@pytest.mark.parametrize("target", list(TARGETS))
def test_references_resolve(target, rendered):
    """Every claim, config map, secret and service selector points at something rendered
    (the Secret pcb-secrets is created out of band, except in dev)."""
    objs = rendered[target]
    names = {(k, n) for k, _, n in objs}
    pods = [o for o in objs.values() if "template" in o.get("spec", {})]
    for o in pods:
        pod = _pod(o)
        templates = {t["metadata"]["name"] for t in o["spec"].get("volumeClaimTemplates", [])}
        for v in pod.get("volumes", []):
            if "persistentVolumeClaim" in v:
                assert ("PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"]) in names, v
        for c in pod["containers"]:
            for mount in c.get("volumeMounts", []):
                assert mount["name"] in {v["name"] for v in pod.get("volumes", [])} | templates, mount
            for src in c.get("envFrom", []):
                if "configMapRef" in src:
                    assert ("ConfigMap", src["configMapRef"]["name"]) in names
                elif target == "dev" or src["secretRef"]["name"] != "pcb-secrets":
                    assert ("Secret", src["secretRef"]["name"]) in names, src
    for (kind, _, name), svc in objs.items():
        if kind == "Service" and svc["spec"].get("selector"):
            sel = svc["spec"]["selector"].items()
            assert any(sel <= o["spec"]["template"]["metadata"]["labels"].items() for o in pods), name


def test_settings_and_secrets_are_real_settings_and_fake_values(rendered):
    fields = {f.upper() for f in Settings.model_fields}
    config = _one(rendered["base"], "ConfigMap", "pcb-config")["data"]
    assert set(config) <= fields, set(config) - fields
    example = load_docs(K8S / "base" / "secret.example.yaml")[0]["stringData"]
    assert set(example) - {"FLOWER_BASIC_AUTH"} <= fields
    assert not [k for k in rendered["production"] if k[0] == "Secret"], "production secrets come from outside git"
    for (kind, _, name), obj in rendered["dev"].items():
        if kind == "Secret":
            assert all("dev" in v or v == "pcb" for v in obj["stringData"].values()), name


@pytest.mark.parametrize("target", ["dev", "production"])
def test_prometheus_discovers_the_pods_by_annotation(target, rendered):
    objs = rendered[target]
    for kind, name, port in (("Deployment", "triton", 8002), ("StatefulSet", "gateway", 8080),
                             ("Deployment", "batch-worker", 9810)):
        o = _one(objs, kind, name)
        ann = o["spec"]["template"]["metadata"]["annotations"]
        assert ann["prometheus.io/scrape"] == "true" and int(ann["prometheus.io/port"]) == port
        ports = {p["containerPort"] for c in _pod(o)["containers"] for p in c.get("ports", [])}
        assert port in ports, (name, ports)
        # the job label comes from this name: the alert rules use job="triton" / "gateway"
        assert o["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == name
    cfg = yaml.safe_load(_one(objs, "ConfigMap", "prometheus-config")["data"]["prometheus.yml"])
    relabel = cfg["scrape_configs"][0]["relabel_configs"]
    assert {"source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_name"], "target_label": "job"} in relabel


def test_prometheus_relabeling_turns_annotated_pods_into_jobs(rendered, tmp_path):
    """The cluster scrape config in a real Prometheus. Debian's build has no Kubernetes
    discovery, so file discovery hands it the same __meta_kubernetes_* labels a pod would
    have; the relabeling (keep annotated running pods, port from the annotation, job from
    app.kubernetes.io/name) is Prometheus' own."""
    cfg = yaml.safe_load(_one(rendered["production"], "ConfigMap", "prometheus-config")["data"]["prometheus.yml"])
    job = cfg["scrape_configs"][0]
    job.pop("kubernetes_sd_configs")
    job["file_sd_configs"] = [{"files": [str(tmp_path / "pods.yml")]}]
    cfg["rule_files"] = []

    def pod(name, app, ip, port, scrape="true", phase="Running"):
        return {"targets": [f"{ip}:8000"], "labels": {
            "__meta_kubernetes_pod_name": name, "__meta_kubernetes_namespace": "pcb",
            "__meta_kubernetes_pod_phase": phase, "__meta_kubernetes_pod_label_app_kubernetes_io_name": app,
            "__meta_kubernetes_pod_annotation_prometheus_io_scrape": scrape,
            "__meta_kubernetes_pod_annotation_prometheus_io_port": str(port),
            "__meta_kubernetes_pod_annotation_prometheus_io_path": "/metrics"}}

    (tmp_path / "pods.yml").write_text(yaml.safe_dump([
        pod("triton-abc", "triton", "10.0.0.5", 8002), pod("gateway-0", "gateway", "10.0.0.6", 8080),
        pod("batch-worker-xyz", "batch-worker", "10.0.0.7", 9810),
        pod("mysql-1", "mysql", "10.0.0.8", 3306, scrape="false"),
        pod("triton-old", "triton", "10.0.0.9", 8002, phase="Succeeded")]))
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    tool = shutil.which("prometheus") or pytest.fail("prometheus not found: `make sysdeps` installs it")
    port = free_port()
    proc = subprocess.Popen([tool, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready", 30, proc)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            targets = httpx.get(f"http://127.0.0.1:{port}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
            if len(targets) >= 3:
                break
            time.sleep(0.3)
        got = {t["labels"]["job"]: (t["labels"]["instance"], t["scrapeUrl"]) for t in targets}
        assert got == {"triton": ("triton-abc", "http://10.0.0.5:8002/metrics"),
                       "gateway": ("gateway-0", "http://10.0.0.6:8080/metrics"),
                       "batch-worker": ("batch-worker-xyz", "http://10.0.0.7:9810/metrics")}
    finally:
        proc.terminate()
        proc.wait(15)


def test_model_rollout_job_goes_replica_by_replica(rendered):
    job = load_docs(K8S / "jobs" / "model-rollout.yaml")[0]
    pod = job["spec"]["template"]["spec"]
    script = pod["containers"][0]["args"][0]
    assert "triton-pods" in script and "python -m serving.admin --url \"$ip:8000\"" in script
    assert "/v2/health/ready" in script
    claim = pod["volumes"][0]["persistentVolumeClaim"]["claimName"]
    pvc = _one(rendered["production"], "PersistentVolumeClaim", claim)
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    pv = _one(rendered["production"], "PersistentVolume", pvc["spec"]["volumeName"])
    ro = _one(rendered["production"], "PersistentVolume", "pcb-model-repository-ro")
    assert pv["spec"]["nfs"]["path"] == ro["spec"]["nfs"]["path"], "admin and replicas see one repository"


def _selects(selector: dict, labels: dict) -> bool:
    """A Kubernetes label selector applied to ``labels`` (an empty selector selects all)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        have, key = labels.get(e["key"]), e["key"]
        if ((e["operator"] == "In" and have not in e["values"]) or (e["operator"] == "NotIn" and have in e["values"])
                or (e["operator"] == "Exists" and key not in labels)
                or (e["operator"] == "DoesNotExist" and key in labels)):
            return False
    return True


def _admits(policy: dict, labels: dict, namespace: str, port: int) -> bool:
    """Whether the NetworkPolicy lets a pod with ``labels`` in ``namespace`` reach ``port``."""
    for rule in policy["spec"].get("ingress", []):
        if rule.get("ports") and port not in {p["port"] for p in rule["ports"]}:
            continue
        if "from" not in rule:
            return True  # no peers named: everyone
        for peer in rule["from"]:
            assert "ipBlock" not in peer, "addresses are no identity on a pod network"
            ns_ok = (_selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": namespace})
                     if "namespaceSelector" in peer else namespace == policy["metadata"]["namespace"])
            if ns_ok and _selects(peer.get("podSelector", {}), labels):
                return True
    return False


@pytest.mark.parametrize("target", ["dev", "production"])
def test_triton_is_fenced_off_and_its_admin_apis_need_a_key(target, rendered):
    """In each rendered overlay: a NetworkPolicy selects Triton's pods and admits only the
    gateway and the batch workers (and the model-rollout job) to 8000/8001 and Prometheus,
    from its monitoring namespace, to the metrics on 8002; every other pod of the overlay
    (the databases and broker in dev, Flower) is shut out. Its repository, shared-memory,
    config, trace and logging APIs need the key from the Secret."""
    objs = rendered[target]
    triton = _one(objs, "Deployment", "triton")
    ns = triton["metadata"]["namespace"]
    pod_labels = triton["spec"]["template"]["metadata"]["labels"]
    fences = [o for (k, n, _), o in objs.items() if k == "NetworkPolicy" and n == ns
              and _selects(o["spec"]["podSelector"], pod_labels)]
    assert len(fences) == 1, f"{target}: {len(fences)} NetworkPolicies select Triton"
    policy = fences[0]
    assert "Ingress" in policy["spec"]["policyTypes"]
    workloads = {o["metadata"]["name"]: o["spec"]["template"]["metadata"]["labels"]
                 for o in objs.values() if "template" in o.get("spec", {})}
    assert {"gateway", "batch-worker", "flower", "triton"} <= set(workloads)
    for port in (8000, 8001):
        admitted = {name for name, labels in workloads.items() if _admits(policy, labels, ns, port)}
        assert admitted == {"gateway", "batch-worker"}, (target, port, admitted)
    rollout = load_docs(K8S / "jobs" / "model-rollout.yaml")[0]["spec"]["template"]["metadata"]["labels"]
    assert _admits(policy, rollout, ns, 8000)  # the replica-by-replica model rollout
    prometheus = {"app.kubernetes.io/name": "prometheus"}
    assert _admits(policy, prometheus, "monitoring", 8002)
    assert not _admits(policy, prometheus, "monitoring", 8001)  # metrics only, no inference
    assert not _admits(policy, prometheus, ns, 8002)  # a pod merely calling itself prometheus: no
    assert not _admits(policy, {"app.kubernetes.io/name": "mysql"}, "monitoring", 8002)
    assert not any(_admits(policy, labels, ns, 8002) for labels in workloads.values())
    c = _pod(triton)["containers"][0]
    assert assert_restricted_api_flags(c["args"]) == "$(TRITON_ADMIN_KEY)"
    key = next(e for e in c["env"] if e["name"] == "TRITON_ADMIN_KEY")
    assert key["valueFrom"]["secretKeyRef"] == {"name": "pcb-secrets", "key": "TRITON_ADMIN_KEY"}
