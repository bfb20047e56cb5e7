"""The Deployment's container args run a real `tritonserver`: kubelet's `$(VAR)` expansion applied, only
the repository, the addresses and the ports swapped for local ones."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest

from deploy_objects import model, release
from helpers import free_port, serve_one_model
from nexus.deploy.k8s import K8sSettings, render_k8s
from nexus.deploy.triton_args import expand_env, localize
from nexus.serving.admin import API_KEY_HEADER, GRPC_API_KEY_HEADER, TritonAdmin
from nexus.serving.server import TritonServer

pytestmark = pytest.mark.slow


def _status(url: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=b"{}", method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def test_the_rendered_args_serve_a_published_repository_with_its_api_locked(tmp_path: Path) -> None:
    _, _ = serve_one_model(tmp_path)  # publishes model "m" to tmp_path/repository
    rendered = render_k8s(
        release(models=(model("m", instances=1, kind="cpu", max_batch_size=32, sample_bytes=28),)),
        K8sSettings(s3_endpoint="http://minio.storage:9000", gpus=0),
    )
    deployment = next(o for o in rendered if o["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    local = localize(expand_env(args, {"NEXUS_API_KEY": "k3y"}), repository=str(tmp_path / "repository"), **ports)
    assert [a for a in local if a not in args] == [
        f"--model-repository={tmp_path / 'repository'}",
        "--http-address=127.0.0.1",
        "--grpc-address=127.0.0.1",
        "--metrics-address=127.0.0.1",
        f"--http-port={ports['http_port']}",
        f"--grpc-port={ports['grpc_port']}",
        f"--metrics-port={ports['metrics_port']}",
        "--http-restricted-api=model-repository:nexus-api-key=k3y",
        "--grpc-restricted-protocol=model-repository:nexus-api-key=k3y",
    ]
    server = TritonServer(repository=str(tmp_path / "repository"), host="127.0.0.1", args=local, **ports)
    with server:
        assert server.command()[2:] == local
        assert TritonAdmin(server.url).is_ready()  # /v2/health/ready: every model loaded (strict readiness)
        assert TritonAdmin(server.url).is_model_ready("m")
        index = f"{server.url}/v2/repository/index"
        assert _status(index, {}) == 403
        assert _status(index, {API_KEY_HEADER: "wrong"}) == 403
        assert _status(index, {API_KEY_HEADER: "k3y"}) == 200

        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        client = grpcclient.InferenceServerClient(f"127.0.0.1:{ports['grpc_port']}")
        with pytest.raises(InferenceServerException, match="This protocol is restricted"):
            client.get_model_repository_index()
        assert client.get_model_repository_index(headers={GRPC_API_KEY_HEADER: "k3y"}).models[0].name == "m"
