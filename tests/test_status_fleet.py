"""`nexus status` over a fleet: two real Tritons serving two releases (and a third address nobody answers),
each named by content, their disagreement, drift against `.nexus_meta.json`; one-line errors for bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers import GitRepo, free_port, make_torch_export
from nexus.cli import app
from nexus.registry import Project
from nexus.release import create_release, fleet_status, read_server_list
from nexus.release.fleet import _drift
from nexus.serving.model_config import ServingOptions
from nexus.serving.server import TritonServer
from nexus.serving.tuned import record


def _invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["status", *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.slow
def test_status_over_a_fleet_names_each_servers_release_their_disagreement_drift_and_an_unreachable_server(
    repo: GitRepo, models: dict[str, Path], tmp_path: Path
) -> None:
    project = Project.open()
    record(project, "m", ServingOptions(instances=1), {})  # one backend stub per server: a light machine
    project.store(models["torch_export"], "m")
    old = create_release(project, [("m", 1)]).release
    repo.gen({"train.py": "v2\n"}, commit="v2")
    project.store(make_torch_export(tmp_path / "v2.pt2", seed=2), "m")
    new = create_release(project, [("m", 2)]).release
    # the same model and version released again with other serving options: newer, but not what is served
    record(project, "m", ServingOptions(instances=1, max_batch_size=8), {})
    retuned = create_release(project, [("m", 2)]).release
    assert len({old.id, new.id, retuned.id}) == 3

    servers = []
    for release in (old, new):
        copy = tmp_path / f"serve-{release.id}"  # Triton's Python stubs write __pycache__: a copy, as nexus serve
        shutil.copytree(repo.root / "releases" / release.id, copy)
        http, grpc, metrics = free_port(), free_port(), free_port()
        servers.append(TritonServer(repository=str(copy), http_port=http, grpc_port=grpc, metrics_port=metrics))
    for server in servers:
        server.start()
    try:
        for server in servers:
            server.wait_ready(timeout=180)
        # after the releases: a newer stored version of m, and a model stored but in no release
        repo.gen({"train.py": "v3\n"}, commit="v3")
        project.store(make_torch_export(tmp_path / "v3.pt2", seed=3), "m")
        project.store(models["onnx"], "n")
        down = f"127.0.0.1:{free_port()}"
        addresses = [servers[0].url, servers[1].url, down]

        fleet = fleet_status(project, addresses)
        first, second, third = fleet.servers
        assert (first.reachable, first.ready, first.models, first.release) == (True, True, {"m": [1]}, old.id)
        assert (second.models, second.candidates, second.release) == ({"m": [2]}, [retuned.id, new.id], new.id)
        assert first.drift == ["m: serves v1, .nexus_meta.json says v3", "n: stored (latest v1) but not served"]
        assert second.drift == ["m: serves v2, .nexus_meta.json says v3", "n: stored (latest v1) but not served"]
        assert (third.server, third.reachable, third.ready, third.release) == (f"http://{down}", False, False, None)
        assert "refused" in (third.error or "").lower()
        assert fleet.agreed is None
        assert fleet.by_release == {old.id: [servers[0].url], new.id: [servers[1].url]}

        code, out, err = _invoke(*(arg for a in addresses for arg in ("--server", a)))
        assert (code, err) == (0, "")
        rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.lstrip().startswith("http")}
        assert rows[servers[0].url] == ["READY", old.id, "m:v1", "2"]
        assert rows[servers[1].url] == ["READY", new.id, "m:v2", "2"]
        assert rows[f"http://{down}"] == ["unreachable", "-", "-", "-"]
        assert "The servers do not agree on one release (a rollout in progress, or servers left behind)" in out
        assert f"release {old.id} on {servers[0].url}; release {new.id} on {servers[1].url}" in out
        assert f"drift {servers[1].url} m: serves v2, .nexus_meta.json says v3" in out
        assert f"unreachable http://{down}: " in out

        # a file of addresses, with comments; JSON for scripts
        listed = tmp_path / "servers.txt"
        listed.write_text(f"# the fleet\n{servers[0].url}\n\n  {servers[1].url}  # canary\n")
        code, out, _ = _invoke("--servers", str(listed), "--json")
        body = json.loads(out)
        assert code == 0
        assert (body["agreed"], body["releases"], body["latest"]) == (
            None,
            {old.id: [servers[0].url], new.id: [servers[1].url]},
            {"m": 3, "n": 1},
        )
        assert [(s["server"], s["ready"], s["release"], s["models"]) for s in body["servers"]] == [
            (servers[0].url, True, old.id, {"m": [1]}),
            (servers[1].url, True, new.id, {"m": [2]}),
        ]

        # a file of one server is a fleet that agrees; one --server keeps the single-server table
        (tmp_path / "one.txt").write_text(f"{servers[0].url}\n{servers[0].url}\n")
        code, out, _ = _invoke("--servers", str(tmp_path / "one.txt"))
        assert code == 0
        assert f"The server serves release {old.id}." in out
        code, out, _ = _invoke("--server", servers[0].url)
        assert code == 0
        assert out.split()[:5] == ["model", "latest", "commit", "published", "live"]
        assert f"server: {servers[0].url}" in out
        # a root without these releases names none
        empty_root = tmp_path / "no-releases"
        empty_root.mkdir()
        code, out, _ = _invoke("--server", servers[0].url, "--server", servers[1].url, "--root", str(empty_root))
        assert code == 0
        assert out.count("no release (hand-published or unknown)") == 3  # two rows and the summary
    finally:
        for server in servers:
            server.stop()


def test_servers_that_all_serve_no_release_or_are_down_are_rows_not_a_crash(
    repo: GitRepo, models: dict[str, Path]
) -> None:
    Project.open().store(models["onnx"], "m")
    ports = free_port(), free_port()
    code, out, err = _invoke("--server", f"127.0.0.1:{ports[0]}", "--server", f"127.0.0.1:{ports[1]}", "--json")
    assert (code, err) == (0, "")
    body = json.loads(out)
    assert body["agreed"] is None
    assert body["releases"] == {}
    assert [(s["reachable"], s["ready"], s["release"], s["drift"]) for s in body["servers"]] == [
        (False, False, None, []),
        (False, False, None, []),
    ]


def test_a_servers_file_takes_one_address_a_line_with_comments_and_each_once(tmp_path: Path) -> None:
    listed = tmp_path / "servers.txt"
    listed.write_text("# fleet\nhost-a:8000\nhttp://host-b:8000/  # canary\n\nhost-a:8000\nhttps://host-c\n")
    assert read_server_list(listed) == ["http://host-a:8000", "http://host-b:8000", "https://host-c"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("# nobody yet\n\n", "it lists no server"),
        ("host-a:8000\nhost-b:99999\n", "line 2, 'host-b:99999', is not a Triton address"),
        (b"\xff\xfe\x00", "is not UTF-8 text"),
        ("/", "cannot be read (Is a directory)"),
    ],
)
def test_a_bad_servers_file_is_a_one_line_error(
    repo: GitRepo, tmp_path: Path, content: str | bytes | None, message: str
) -> None:
    listed = tmp_path / "servers.txt"
    if content == "/":
        listed.mkdir()  # a folder, not a file
    elif isinstance(content, bytes):
        listed.write_bytes(content)
    elif content is not None:
        listed.write_text(content)
    code, out, err = _invoke("--servers", str(listed))
    assert code == 1
    assert err.startswith(f"Error: --servers {listed}: {message}; write one Triton address per line")
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in out + err


def test_a_fleet_with_a_repository_is_a_one_line_error(repo: GitRepo) -> None:
    code, _, err = _invoke("--server", "a:8000", "--server", "b:8000", "--repository", "elsewhere")
    assert code == 1
    assert err.startswith("Error: --repository compares one server with a repository")
    assert len(err.strip().splitlines()) == 1


def test_drift_names_an_old_version_a_model_not_served_and_a_model_not_stored() -> None:
    assert _drift({"m": [1, 2], "x": [4]}, {"m": 2, "n": 1}) == [
        "m: serves v1, v2, .nexus_meta.json says v2",
        "n: stored (latest v1) but not served",
        "x: serves v4, but the model is not stored in .nexus_meta.json",
    ]
    assert _drift({"m": [2]}, {"m": 2}) == []
