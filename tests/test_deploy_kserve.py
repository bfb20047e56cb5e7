"""`render_kserve`: the InferenceService validates against KServe's CRD, the rest against Kubernetes 1.35."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy_objects import SCHEMAS, check_golden, crds, dump, sample_release
from nexus.deploy.kserve import (
    RUNTIME_HTTP_PORT,
    S3_CREDENTIAL_KEYS,
    S3_CREDENTIALS_FILE,
    KServeSettings,
    render_kserve,
    secret_generator,
)
from nexus.deploy.validate import validate_objects
from nexus.errors import DeployError, ManifestInvalidError

MINIO = KServeSettings(s3_endpoint_url="http://minio.storage:9000", s3_region="eu-west-1")
KUBECTL = Path(sys.executable).with_name("kubectl")


def by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["kind"]: o for o in objects}


@pytest.mark.parametrize("mode", ["Standard", "Knative"])
def test_every_rendered_object_validates_strictly(mode: str) -> None:
    objects = render_kserve(sample_release(), KServeSettings(mode=mode, s3_endpoint_url="http://minio:9000"))
    assert validate_objects(objects, crds()) == [
        "ServiceAccount/nexus-triton",
        "Secret/nexus-triton-storage",
        "InferenceService/nexus-triton",
    ]


@pytest.mark.parametrize(
    ("where", "field"),
    [(("spec", "predictor", "model"), "storageURI"), (("spec", "predictor"), "maxReplica"), (("metadata",), "label")],
)
def test_a_misspelt_field_is_refused(where: tuple[str, ...], field: str) -> None:
    isvc = copy.deepcopy(by_kind(render_kserve(sample_release(), MINIO))["InferenceService"])
    node = isvc
    for key in where:
        node = node[key]
    node[field] = "x"
    with pytest.raises(ManifestInvalidError, match=field):
        validate_objects([isvc], crds())


def test_the_inference_service_serves_the_release_with_trailing_slash_on_tritons_runtime() -> None:
    release = sample_release()
    isvc = by_kind(render_kserve(release, MINIO))["InferenceService"]
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    predictor = isvc["spec"]["predictor"]
    model = predictor["model"]
    assert model["storageUri"] == "s3://ml-models/releases/20261202-101500-3f9a1c2e/"
    assert model["storageUri"].endswith("/")
    assert model["storageUri"] == release.uri + "/"
    assert (model["modelFormat"]["name"], model["protocolVersion"], model["runtime"]) == (
        "triton",
        "v2",
        "kserve-tritonserver",
    )
    assert model["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": RUNTIME_HTTP_PORT}
    assert predictor["deploymentStrategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (2, 8)
    assert "--strict-readiness=true" in model["args"]
    assert "--exit-timeout-secs=30" in model["args"]
    assert model["resources"]["limits"]["nvidia.com/gpu"] == 1  # "mlp" runs on a GPU when there is one
    assert predictor["terminationGracePeriodSeconds"] > 10 + 30  # preStop pause plus exit timeout
    assert predictor["labels"]["nexusml.io/release"] == release.id
    assert predictor["serviceAccountName"] == "nexus-triton"
    (volume,) = predictor["volumes"]
    assert volume["emptyDir"]["medium"] == "Memory"
    assert model["volumeMounts"][0]["mountPath"] == "/dev/shm"


def test_the_port_probed_is_the_one_the_shipped_runtime_gives_triton() -> None:
    runtime = yaml.safe_load((SCHEMAS / "kserve-tritonserver-runtime.yaml").read_text())
    (container,) = runtime["spec"]["containers"]
    assert f"--http-port={RUNTIME_HTTP_PORT}" in container["args"]
    assert "--model-store=/mnt/models" in container["args"]  # where the storage initializer copies the release
    assert {"name": "triton", "version": "2"}.items() <= runtime["spec"]["supportedModelFormats"][-1].items()


def test_the_s3_endpoint_is_annotated_on_the_service_account_and_the_secret() -> None:
    objects = by_kind(render_kserve(sample_release(), MINIO))
    expected = {
        "serving.kserve.io/s3-endpoint": "minio.storage:9000",
        "serving.kserve.io/s3-usehttps": "0",
        "serving.kserve.io/s3-verifyssl": "1",
        "serving.kserve.io/s3-region": "eu-west-1",
    }
    for kind in ("ServiceAccount", "Secret"):
        assert objects[kind]["metadata"]["annotations"] == expected
    assert objects["ServiceAccount"]["secrets"] == [{"name": "nexus-triton-storage"}]
    aws = by_kind(render_kserve(sample_release(), KServeSettings()))["Secret"]["metadata"]["annotations"]
    assert aws["serving.kserve.io/s3-endpoint"] == "s3.amazonaws.com"
    assert aws["serving.kserve.io/s3-usehttps"] == "1"


def test_no_credential_value_is_rendered_and_kustomize_merges_the_keys_from_the_ignored_file(tmp_path: Path) -> None:
    release = sample_release()
    objects = render_kserve(release, MINIO)
    text = dump(objects)
    secret = by_kind(objects)["Secret"]
    assert not {"data", "stringData"} & set(secret)
    assert not any(key in text for key in S3_CREDENTIAL_KEYS)

    # the base as the deployment folder holds it: the Secret's keys come only from the git-ignored file
    (tmp_path / "kserve.yaml").write_text(text)
    kustomization = {"resources": ["kserve.yaml"], "secretGenerator": [secret_generator(release, MINIO)]}
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
    missing = subprocess.run([str(KUBECTL), "kustomize", str(tmp_path)], capture_output=True, text=True)
    assert missing.returncode != 0
    assert S3_CREDENTIALS_FILE in missing.stderr
    (tmp_path / S3_CREDENTIALS_FILE).write_text("AWS_ACCESS_KEY_ID=AKIATEST\nAWS_SECRET_ACCESS_KEY=s3cr3t\n")
    built = subprocess.run([str(KUBECTL), "kustomize", str(tmp_path)], capture_output=True, text=True, check=True)
    merged = by_kind(list(yaml.safe_load_all(built.stdout)))
    assert set(merged["Secret"]["data"]) == set(S3_CREDENTIAL_KEYS)
    assert merged["Secret"]["metadata"]["name"] == merged["ServiceAccount"]["secrets"][0]["name"]
    assert merged["Secret"]["metadata"]["annotations"] == secret["metadata"]["annotations"]
    validate_objects(list(merged.values()), crds())


def test_knative_mode_renders_no_lifecycle_hook_nor_deployment_strategy() -> None:
    isvc = by_kind(render_kserve(sample_release(), KServeSettings(mode="Knative", min_replicas=0)))["InferenceService"]
    predictor = isvc["spec"]["predictor"]
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"
    assert "lifecycle" not in predictor["model"]
    assert "deploymentStrategy" not in predictor
    assert predictor["minReplicas"] == 0


def test_gpus_default_to_none_when_every_model_runs_on_cpu_and_gcs_keys_come_from_a_file() -> None:
    release = sample_release(root="gs://ml-models/releases", kind="cpu")
    objects = by_kind(render_kserve(release, KServeSettings()))
    assert "nvidia.com/gpu" not in objects["InferenceService"]["spec"]["predictor"]["model"]["resources"]["limits"]
    assert "annotations" not in objects["Secret"]["metadata"]
    assert secret_generator(release, KServeSettings())["files"] == ["gcloud-application-credentials.json"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (KServeSettings(mode="Serverless"), "--mode"),
        (KServeSettings(min_replicas=0), "--min-replicas"),
        (KServeSettings(min_replicas=3, max_replicas=2), "--max-replicas"),
    ],
)
def test_bad_settings_are_refused_with_the_option_to_fix(settings: KServeSettings, message: str) -> None:
    with pytest.raises(DeployError, match=message):
        render_kserve(sample_release(), settings)


def test_a_release_in_a_local_folder_is_refused() -> None:
    with pytest.raises(DeployError, match="s3:// or gs://"):
        render_kserve(sample_release(root="/srv/releases"), KServeSettings())


@pytest.mark.parametrize("mode", ["Standard", "Knative"])
def test_the_rendering_matches_its_golden_file(mode: str) -> None:
    settings = KServeSettings(mode=mode, s3_endpoint_url="http://minio.storage:9000", s3_region="eu-west-1")
    check_golden(f"kserve/{mode.lower()}.yaml", dump(render_kserve(sample_release(), settings)))
