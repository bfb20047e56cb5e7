"""docker-compose.yml and triton/: validated offline (no Docker engine is needed or used).

The Grafana dashboard's queries are checked against a real Triton's metrics (the binary in the
nvidia-pytriton wheel), so every metric and label they name is one Triton exposes.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import GitRepo, free_port, make_torch_export
from nexus.registry import Project
from nexus.serving.publish import publish
from nexus.serving.server import TritonServer

ROOT = Path(__file__).parents[1]
DASHBOARD = ROOT / "triton" / "grafana" / "dashboards" / "nexus-triton.json"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def mounts(service: dict[str, Any]) -> dict[str, tuple[Path | str, bool]]:
    """A service's volumes as container path -> (host path for a bind mount, else the volume name; read-only)."""
    found: dict[str, tuple[Path | str, bool]] = {}
    for volume in service["volumes"]:
        source, target, *mode = volume.split(":")
        found[target] = (ROOT / source if source.startswith(".") else source, mode == ["ro"])
    return found


def host_path(service: dict[str, Any], container_path: str) -> Path:
    """The file in the repository that ``container_path`` is inside the container (through a bind mount)."""
    for target, (source, _) in mounts(service).items():
        if isinstance(source, Path) and (container_path == target or container_path.startswith(target + "/")):
            return source / container_path[len(target) :].lstrip("/")
    raise AssertionError(f"{container_path} is not bind-mounted from the repository")


def env_example() -> dict[str, str]:
    return dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if "=" in line and line[0] != "#"
    )


# --- PromQL in the dashboard ------------------------------------------------------------------

_NOT_METRICS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}


def selectors(expr: str) -> list[tuple[str, dict[str, tuple[str, str]]]]:
    """Each metric a PromQL expression selects, with its label matchers (label -> (operator, value))."""
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range windows: [$__rate_interval]
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)  # label lists
    found = []
    for m in re.finditer(r"([A-Za-z_:][\w:]*)\s*(\{[^}]*\})?\s*(\()?", expr):
        name, matchers, call = m.groups()
        if call or name in _NOT_METRICS:  # a function or an aggregation
            continue
        labels = {k: (op, v) for k, op, v in re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', matchers or "")}
        found.append((name, labels))
    return found


def grouping_labels(expr: str) -> set[str]:
    return {
        label.strip() for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr) for label in group.split(",")
    }


def dashboard_targets(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [target for panel in dashboard["panels"] for target in panel["targets"]]


def model_variable(dashboard: dict[str, Any]) -> tuple[str, str]:
    """The metric and label that the `model` template variable lists values of."""
    (variable,) = [v for v in dashboard["templating"]["list"] if v["name"] == "model"]
    query = variable["query"] if isinstance(variable["query"], str) else variable["query"]["query"]
    m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query)
    assert m, f"the model variable should list label values, not {query!r}"
    return m[1], m[2]


def test_compose_file_matches_the_compose_spec() -> None:
    exe = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent))
    assert exe, "check-jsonschema is a test dependency"
    result = subprocess.run(
        [exe, "--builtin-schema", "vendor.compose-spec", str(ROOT / "docker-compose.yml")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_triton_service_runs_the_gpu_image_with_the_published_repository(compose: dict[str, Any]) -> None:
    triton = compose["services"]["triton"]
    assert triton["build"]["dockerfile"] == "triton/Dockerfile"
    assert (ROOT / "triton" / "Dockerfile").is_file()
    (device,) = triton["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"]
    assert "./.nexus/model_repository:/models:ro" in triton["volumes"]
    assert [p.split(":", 1)[1] for p in triton["ports"]] == ["8000:8000", "8001:8001", "8002:8002"]
    assert triton["shm_size"]
    assert "/v2/health/ready" in " ".join(triton["healthcheck"]["test"])
    assert triton["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"


def test_minio_creates_its_bucket_and_credentials_come_only_from_the_environment(compose: dict[str, Any]) -> None:
    minio, init = compose["services"]["minio"], compose["services"]["minio-init"]
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"
    assert "mc mb --ignore-existing" in " ".join(init["entrypoint"])
    for service in (minio, init):
        for key in ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"):
            assert service["environment"][key].startswith(f"${{{key}:?"), "no default secrets in the compose file"
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()
    example = env_example()
    assert {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(example)


def test_dockerfile_pins_what_the_python_backend_needs() -> None:
    text = (ROOT / "triton" / "Dockerfile").read_text()
    assert "FROM nvcr.io/nvidia/tritonserver:${TRITON_VERSION}-py3" in text
    assert "torch==${TORCH_VERSION}" in text
    assert '"numpy<2"' in text
    assert "--model-control-mode=explicit" in text
    assert "--metrics-config=summary_latencies=true" in text  # the quantiles the dashboard shows


def test_every_published_port_is_bound_to_loopback_only(compose: dict[str, Any]) -> None:
    ports = [p for service in compose["services"].values() for p in service.get("ports", [])]
    assert ports
    assert all(p.startswith("127.0.0.1:") for p in ports), ports


def test_prometheus_scrapes_the_metrics_port_of_the_triton_service(compose: dict[str, Any]) -> None:
    services = compose["services"]
    prometheus = services["prometheus"]
    assert re.fullmatch(r"prom/prometheus:v\d+\.\d+\.\d+", prometheus["image"]), "pin the official image"
    assert prometheus["ports"] == ["127.0.0.1:9090:9090"]
    config_file, read_only = mounts(prometheus)["/etc/prometheus/prometheus.yml"]
    assert read_only
    assert config_file == ROOT / "triton" / "prometheus" / "prometheus.yml"
    config = yaml.safe_load(config_file.read_text())
    (job,) = config["scrape_configs"]
    (static,) = job["static_configs"]
    (target,) = static["targets"]
    host, port = target.split(":")
    assert host in services, f"{target} names no service of the compose file"
    # Triton's default metrics port: the Dockerfile does not move it, and the triton service publishes it
    assert "--metrics-port" not in (ROOT / "triton" / "Dockerfile").read_text()
    assert port == "8002"
    assert any(p.endswith(f":{port}") for p in services[host]["ports"])
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert config["global"]["scrape_interval"] == "5s"
    assert prometheus["depends_on"]["triton"]["condition"] == "service_started"
    assert "/-/ready" in " ".join(prometheus["healthcheck"]["test"])
    assert "prometheus-data" in compose["volumes"]


def test_grafana_is_provisioned_from_the_repository_and_has_no_default_password(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    assert re.fullmatch(r"grafana/grafana:\d+\.\d+\.\d+", grafana["image"]), "pin the official image"
    assert grafana["ports"] == ["127.0.0.1:3000:3000"]
    assert grafana["depends_on"]["prometheus"]["condition"] == "service_healthy"
    env = grafana["environment"]
    assert env["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GF_ADMIN_PASSWORD:?"), "no default secrets"
    assert "GF_ADMIN_PASSWORD" in env_example()
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert all(read_only for _, read_only in mounts(grafana).values())

    provisioning = host_path(grafana, "/etc/grafana/provisioning")
    (datasources,) = provisioning.joinpath("datasources").glob("*.yml")
    (datasource,) = yaml.safe_load(datasources.read_text())["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    assert compose["services"]["prometheus"]["ports"][0].endswith(":9090")
    (providers,) = provisioning.joinpath("dashboards").glob("*.yml")
    (provider,) = yaml.safe_load(providers.read_text())["providers"]
    dashboards = host_path(grafana, provider["options"]["path"])
    assert sorted(dashboards.glob("*.json")) == [DASHBOARD]
    assert host_path(grafana, env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]) == DASHBOARD

    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    uses = [p["datasource"] for p in dashboard["panels"]] + [t["datasource"] for t in dashboard_targets(dashboard)]
    assert {(d["type"], d["uid"]) for d in uses} == {("prometheus", datasource["uid"])}


def test_dashboard_shows_throughput_latency_queue_batch_size_and_failures(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "nexus-triton"
    assert model_variable(dashboard) == ("nv_inference_request_success", "model")
    by_title = {
        panel["title"]: {name for t in panel["targets"] for name, _ in selectors(t["expr"])}
        for panel in dashboard["panels"]
    }
    assert by_title == {
        "Throughput": {"nv_inference_request_success", "nv_inference_count"},
        "Request latency p50 / p99": {"nv_inference_request_summary_us"},
        "Queue time": {
            "nv_inference_queue_duration_us",
            "nv_inference_request_success",
            "nv_inference_queue_summary_us",
        },
        "Compute time p50 / p99": {"nv_inference_compute_infer_summary_us"},
        "Average batch size": {"nv_inference_count", "nv_inference_exec_count"},
        "Pending requests": {"nv_inference_pending_request_count"},
        "Failures": {"nv_inference_request_failure"},
    }
    latency = dashboard["panels"][1]["targets"]
    assert [selectors(t["expr"])[0][1]["quantile"] for t in latency] == [("=", "0.5"), ("=", "0.99")]
    for target in dashboard_targets(dashboard):
        assert all(labels["model"] == ("=~", "$model") for _, labels in selectors(target["expr"])), target["expr"]
    # panels tile the grid without overlapping
    cells = [
        (x, y)
        for p in dashboard["panels"]
        for x in range(p["gridPos"]["x"], p["gridPos"]["x"] + p["gridPos"]["w"])
        for y in range(p["gridPos"]["y"], p["gridPos"]["y"] + p["gridPos"]["h"])
    ]
    assert len(cells) == len(set(cells))
    assert max(x for x, _ in cells) < 24


def test_selectors_read_metric_names_and_matchers_out_of_promql() -> None:
    expr = 'sum by (model) (rate(a_total{model=~"$m", q="0.5"}[$__rate_interval])) / max(b) + on(x) c{r!="s"}'
    assert selectors(expr) == [
        ("a_total", {"model": ("=~", "$m"), "q": ("=", "0.5")}),
        ("b", {}),
        ("c", {"r": ("!=", "s")}),
    ]
    assert grouping_labels(expr) == {"model"}


# --- the dashboard against a real Triton --------------------------------------------------------


def scrape(url: str) -> list[tuple[str, dict[str, str], float]]:
    """Prometheus' text exposition format, sample by sample, with names exactly as Prometheus stores them."""
    samples = []
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?", line.strip())
        assert m, f"not a sample line: {line!r}"
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m[2] or ""))
        samples.append((m[1], labels, float(m[3])))
    return samples


@pytest.mark.slow
def test_every_metric_and_label_the_dashboard_queries_is_in_a_real_triton_scrape(
    repo: GitRepo, tmp_path: Path, dashboard: dict[str, Any]
) -> None:
    project = Project.open(repo.root, env={})
    project.store(make_torch_export(tmp_path / "m.pt2"), "m")
    publish(project, "m", repository=tmp_path / "repository")
    server = TritonServer(
        repository=str(tmp_path / "repository"), http_port=free_port(), grpc_port=free_port(), metrics_port=free_port()
    )
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [0.5] * 4}]})

    def infer(_: int) -> int:
        request = urllib.request.Request(f"{server.url}/v2/models/m/infer", data=body.encode())
        with urllib.request.urlopen(request, timeout=60) as r:
            return int(r.status)

    with server:
        with ThreadPoolExecutor(8) as pool:  # concurrent requests, so the dynamic batcher batches some
            assert set(pool.map(infer, range(32))) == {200}
        deadline = time.monotonic() + 15
        while True:
            samples = scrape(f"http://127.0.0.1:{server.metrics_port}/metrics")
            done = [v for n, labels, v in samples if n == "nv_inference_request_success" and labels["model"] == "m"]
            if done == [32.0] or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert done == [32.0], server.logs(20)

    labels_of: dict[str, list[dict[str, str]]] = {}
    for name, labels, _ in samples:
        labels_of.setdefault(name, []).append(labels)
    metric, label = model_variable(dashboard)
    assert {"m"} == {labels[label] for labels in labels_of[metric]}
    for target in dashboard_targets(dashboard):
        expr = target["expr"]
        shown = grouping_labels(expr) | set(re.findall(r"\{\{(\w+)\}\}", target["legendFormat"]))
        for name, matchers in selectors(expr):
            assert name in labels_of, f"{name} (in {expr}) is not a metric Triton exposes"
            series = [labels for labels in labels_of[name] if labels.get("model") == "m"]
            assert series, f"no {name} series for the model"
            for key in shown | set(matchers):
                assert all(key in labels for labels in series), f"{name} has no label {key!r} (in {expr})"
            for key, (op, value) in matchers.items():
                if op == "=":
                    assert any(labels[key] == value for labels in series), f'no {name}{{{key}="{value}"}}'

    # the quantiles: real latencies, in microseconds
    for name in ("nv_inference_request_summary_us", "nv_inference_queue_summary_us"):
        quantiles = {labels["quantile"]: v for n, labels, v in samples if n == name and labels["model"] == "m"}
        assert {"0.5", "0.99"} <= set(quantiles), name
        assert all(math.isfinite(v) and v > 0 for v in quantiles.values()), quantiles
        assert quantiles["0.5"] <= quantiles["0.99"]
