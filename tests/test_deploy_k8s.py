"""`nexus deploy k8s`'s objects: valid against Kubernetes 1.35, as the golden files say, built by kubectl
kustomize, re-rendered into a rollout, and free of secret values.

Golden files: `tests/data/deploy/golden/k8s/`. After an intended change, regenerate them with
``NEXUS_UPDATE_GOLDEN=1 pytest tests/test_deploy_k8s.py`` and review the diff.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy_objects import NEXT_ID, RELEASE_ID, model, release
from nexus.deploy.autoscale import AutoscaleSettings
from nexus.deploy.folders import write_k8s
from nexus.deploy.k8s import K8sSettings, render_k8s
from nexus.deploy.k8s_pod import RELEASE_LABEL
from nexus.deploy.kustomize import KUSTOMIZATION, write_base
from nexus.deploy.record import RECORD, DeployRecord, read_record
from nexus.deploy.triton_args import expand_env, release_repository, triton_args
from nexus.deploy.validate import KUBERNETES_VERSION, validate_builtin, validate_objects
from nexus.errors import DeployError, ManifestInvalidError

GOLDEN = Path(__file__).parent / "data" / "deploy" / "golden" / "k8s"
KUBECTL = Path(sys.executable).parent / "kubectl"
SETTINGS = K8sSettings(namespace="serving", s3_endpoint="http://minio.storage:9000", metrics_namespaces=("monitoring",))


def _kind(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind)


def _container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    container: dict[str, Any] = _kind(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return container


def _written(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(folder.iterdir())}


def test_every_rendered_object_validates_strictly_against_kubernetes_1_35() -> None:
    objects = render_k8s(release(), SETTINGS)
    assert KUBERNETES_VERSION == "1.35"
    assert validate_objects(objects) == [
        "ServiceAccount/nexus-triton",
        "NetworkPolicy/nexus-triton",
        "Service/nexus-triton",
        "Deployment/nexus-triton",
        "PodDisruptionBudget/nexus-triton",
    ]
    for obj in objects:
        assert validate_builtin(obj) == "1.35"


def test_a_gcs_release_with_its_credentials_file_validates_too() -> None:
    objects = render_k8s(release(root="gs://models/releases"), K8sSettings(gpus=0))
    validate_objects(objects)
    container = _container(objects)
    assert container["args"][0] == f"--model-repository=gs://models/releases/{RELEASE_ID}"
    env = {e["name"]: e for e in container["env"]}
    assert env["GOOGLE_APPLICATION_CREDENTIALS"]["value"].endswith("/credentials.json")
    assert "nvidia.com/gpu" not in container["resources"]["limits"]


@pytest.mark.parametrize(
    ("where", "edit"),
    [
        ("container", lambda c: c.update(bogus=1)),
        ("container", lambda c: c["lifecycle"]["preStop"]["sleep"].update(seconds="fifteen")),
        ("container", lambda c: c["ports"][0].update(containerPort="8000")),
    ],
)
def test_a_broken_object_is_refused_and_nothing_is_written(tmp_path: Path, where: str, edit: Any) -> None:
    objects = render_k8s(release(), SETTINGS)
    broken = copy.deepcopy(objects)
    edit(_container(broken))
    with pytest.raises(ManifestInvalidError, match="Deployment 'nexus-triton' is not valid"):
        validate_objects(broken)
    with pytest.raises(ManifestInvalidError):
        write_base(tmp_path / "k8s", broken, DeployRecord.for_release(release(), "k8s"))
    assert not (tmp_path / "k8s").exists()


def test_the_rendered_files_match_the_golden_ones(tmp_path: Path) -> None:
    write_k8s(release(), tmp_path / "k8s", SETTINGS, AutoscaleSettings())  # what `nexus deploy k8s` writes
    files = {n: t for n, t in _written(tmp_path / "k8s").items() if n != RECORD}
    if os.environ.get("NEXUS_UPDATE_GOLDEN"):
        GOLDEN.mkdir(parents=True, exist_ok=True)
        for old in GOLDEN.glob("*"):
            old.unlink()
        for name, text in files.items():
            (GOLDEN / name).write_text(text, encoding="utf-8")
    golden = {p.name: p.read_text(encoding="utf-8") for p in sorted(GOLDEN.glob("*"))}
    assert files == golden, "rendered objects changed: if intended, regenerate with NEXUS_UPDATE_GOLDEN=1"


def test_kubectl_kustomize_builds_the_base_into_the_same_objects(tmp_path: Path) -> None:
    objects = render_k8s(release(), SETTINGS)
    write_base(tmp_path / "k8s", objects, DeployRecord.for_release(release(), "k8s"))
    built = subprocess.run(
        [str(KUBECTL), "kustomize", str(tmp_path / "k8s")], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    parsed = list(yaml.safe_load_all(built))
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    assert sorted(parsed, key=key) == sorted(objects, key=key)


def test_a_re_render_with_a_new_release_changes_the_pod_template_and_keeps_the_selector(tmp_path: Path) -> None:
    folder = tmp_path / "k8s"
    first = render_k8s(release(), SETTINGS)
    write_base(folder, first, DeployRecord.for_release(release(), "k8s"))
    before = yaml.safe_load((folder / "deployment.yaml").read_text())
    new = release(NEXT_ID)
    write_base(folder, render_k8s(new, SETTINGS), DeployRecord.for_release(new, "k8s"))
    after = yaml.safe_load((folder / "deployment.yaml").read_text())
    assert after["spec"]["selector"] == before["spec"]["selector"] == {"matchLabels": SETTINGS.selector()}
    assert after["spec"]["template"] != before["spec"]["template"]
    assert after["spec"]["template"]["metadata"]["labels"][RELEASE_LABEL] == NEXT_ID
    assert (
        f"--model-repository=s3://http://minio.storage:9000/models/releases/{NEXT_ID}"
        in (after["spec"]["template"]["spec"]["containers"][0]["args"])
    )
    record = json.loads((folder / RECORD).read_text())
    assert record == {
        "format": 1,
        "target": "k8s",
        "release": NEXT_ID,
        "root": "s3://models/releases",
        "uri": f"s3://models/releases/{NEXT_ID}",
        "files": [
            "serviceaccount.yaml",
            "networkpolicy.yaml",
            "service.yaml",
            "deployment.yaml",
            "poddisruptionbudget.yaml",
            KUSTOMIZATION,
        ],
        "nexus": record["nexus"],
    }
    # the objects other than the Deployment do not change from one release to the next
    assert yaml.safe_load((folder / "service.yaml").read_text()) == _kind(first, "Service")


def test_a_re_render_removes_the_files_it_no_longer_writes_and_leaves_others_alone(tmp_path: Path) -> None:
    folder = tmp_path / "k8s"
    extra = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "extra"}, "data": {"a": "b"}}
    write_base(folder, render_k8s(release(), SETTINGS, [extra]), DeployRecord.for_release(release(), "k8s"))
    assert (folder / "configmap.yaml").exists()
    (folder / "README.md").write_text("ours\n")
    written = write_base(folder, render_k8s(release(), SETTINGS), DeployRecord.for_release(release(), "k8s"))
    assert written.removed == ("configmap.yaml",)
    assert not (folder / "configmap.yaml").exists()
    assert (folder / "README.md").read_text() == "ours\n"
    assert "configmap.yaml" not in yaml.safe_load((folder / KUSTOMIZATION).read_text())["resources"]


@pytest.mark.parametrize(
    ("foreign", "message"),
    [
        ("deployment.yaml", "deployment.yaml is there and nexus did not write it; move it away"),
        (KUSTOMIZATION, "kustomization.yaml is there and nexus did not write it; move it away"),
        (RECORD, "nexus-deploy.json is not a nexus-deploy.json nexus can read .*; restore it"),
    ],
)
def test_a_file_nexus_did_not_write_is_never_overwritten(tmp_path: Path, foreign: str, message: str) -> None:
    folder = tmp_path / "k8s"
    folder.mkdir()
    (folder / foreign).write_text("hand-written\n")
    with pytest.raises(DeployError, match=message) as e:
        write_base(folder, render_k8s(release(), SETTINGS), DeployRecord.for_release(release(), "k8s"))
    assert "\n" not in str(e.value)
    assert _written(folder) == {foreign: "hand-written\n"}


def test_a_hand_broken_record_is_refused_with_the_fix(tmp_path: Path) -> None:
    (tmp_path / RECORD).write_text(json.dumps({"format": 1, "files": ["../../etc/passwd"]}))
    with pytest.raises(DeployError, match="restore it"):
        read_record(tmp_path)


def test_the_container_runs_the_args_triton_args_builds_and_kubelet_expands_the_key() -> None:
    container = _container(render_k8s(release(), SETTINGS))
    repository = release_repository(release().uri, SETTINGS.s3_endpoint)
    assert repository == f"s3://http://minio.storage:9000/models/releases/{RELEASE_ID}"
    assert container["command"] == ["tritonserver"]
    assert container["args"] == triton_args(repository, exit_timeout=30, shm_region_bytes=1 << 20)
    for flag in [
        "--model-control-mode=explicit",
        "--load-model=*",
        "--strict-readiness=true",
        "--exit-timeout-secs=30",
        "--metrics-config=summary_latencies=true",
        "--http-port=8000",
        "--grpc-port=8001",
        "--metrics-port=8002",
    ]:
        assert flag in container["args"]
    expanded = expand_env(container["args"], {"NEXUS_API_KEY": "s3cr3t"})
    assert "--http-restricted-api=model-repository:nexus-api-key=s3cr3t" in expanded
    assert "--grpc-restricted-protocol=model-repository:nexus-api-key=s3cr3t" in expanded
    assert not any("$(" in a for a in expanded)
    key_env = next(e for e in container["env"] if e["name"] == "NEXUS_API_KEY")
    assert key_env == {"name": "NEXUS_API_KEY", "valueFrom": {"secretKeyRef": {"name": "nexus-api-key", "key": "key"}}}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(A)", "1"),
        ("x=$(A)$(B)", "x=12"),
        ("$$(A)", "$(A)"),
        ("$$$(A)", "$1"),
        ("$(MISSING)", "$(MISSING)"),
        ("$(A", "$(A"),
        ("$A", "$A"),
        ("end$", "end$"),
        ("$()", "$()"),
    ],
)
def test_expand_env_does_what_kubelet_does_with_container_args(text: str, expected: str) -> None:
    assert expand_env([text], {"A": "1", "B": "2"}) == [expected]


def test_shm_grows_with_instances_and_batch_size() -> None:
    def shm(**kwargs: Any) -> int:
        deployment = _kind(render_k8s(release(models=(model(**kwargs),)), K8sSettings(gpus=1)), "Deployment")
        size = deployment["spec"]["template"]["spec"]["volumes"][0]["emptyDir"]["sizeLimit"]
        return int(size.removesuffix("Mi")) if size.endswith("Mi") else int(size.removesuffix("Gi")) * 1024

    small = shm(instances=1, max_batch_size=8, sample_bytes=1 << 20)
    assert shm(instances=4, max_batch_size=8, sample_bytes=1 << 20) > small
    assert shm(instances=1, max_batch_size=64, sample_bytes=1 << 20) > small
    assert small == 64 + 1 * 2 * 8  # 64 MiB base + instances x 2 x one batch's region
    # a variable dimension falls back to 1 MiB a sample
    assert shm(instances=1, max_batch_size=8, sample_bytes=None) == small
    # kind cpu runs its instances once, not on each GPU
    assert shm(instances=2, kind="cpu", max_batch_size=8, sample_bytes=1 << 20) == 64 + 2 * 2 * 8


def test_gpus_default_to_one_unless_every_model_runs_on_cpu() -> None:
    def gpus(*kinds: str) -> object:
        models = tuple(model(f"m{i}", kind=k) for i, k in enumerate(kinds))
        limits = _container(render_k8s(release(models=models)))["resources"]["limits"]
        return limits.get("nvidia.com/gpu", 0)

    assert gpus("auto") == gpus("gpu") == gpus("cpu", "gpu") == 1
    assert gpus("cpu") == gpus("cpu", "cpu") == 0


def test_no_secret_value_appears_in_anything_rendered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    values = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "wJalrEXAMPLESECRET", "NEXUS_API_KEY": "k3y"}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    objects = render_k8s(release(), SETTINGS)
    write_base(tmp_path / "k8s", objects, DeployRecord.for_release(release(), "k8s"))
    text = "".join(_written(tmp_path / "k8s").values())
    for value in values.values():
        assert value not in text
    assert "kind: Secret\n" not in text
    for entry in _container(objects)["env"]:
        if entry["name"] in values:
            assert set(entry) == {"name", "valueFrom"}
            assert set(entry["valueFrom"]) == {"secretKeyRef"}


def test_the_pod_leaves_after_its_readiness_reaction_and_within_its_grace() -> None:
    settings = K8sSettings(readiness_period=4, readiness_failures=3, exit_timeout=20)
    spec = _kind(render_k8s(release(), settings), "Deployment")["spec"]["template"]["spec"]
    prestop = spec["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert prestop > 4 * 3
    assert spec["terminationGracePeriodSeconds"] == prestop + 20 + 5
    with pytest.raises(DeployError, match="must be longer than the readiness reaction"):
        K8sSettings(prestop=10)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "Nexus_Triton"}, "is not a Kubernetes name"),
        ({"replicas": 0}, "--replicas must be at least 1"),
        ({"gpus": -1}, "--gpus must be at least 0"),
    ],
)
def test_bad_settings_are_refused_with_one_line(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(DeployError, match=message) as e:
        K8sSettings(**kwargs)
    assert "\n" not in str(e.value)


def test_a_release_in_a_local_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DeployError, match="a folder pods cannot read; make the release under s3:// or gs://"):
        render_k8s(release(root=str(tmp_path / "releases")))
