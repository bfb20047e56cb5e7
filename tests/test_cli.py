"""The `nexus` CLI: exact effects, exit codes and one-line errors, through Typer's CliRunner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from backends import Backend
from helpers import GitRepo
from nexus.cli import app
from nexus.registry.metadata import META_FILE


@pytest.fixture
def cli() -> CliRunner:
    return CliRunner()


def run(cli: CliRunner, *args: str):  # type: ignore[no-untyped-def]
    return cli.invoke(app, list(args), catch_exceptions=False)


def test_store_prints_what_was_stored_and_what_to_commit(
    cli: CliRunner, repo: GitRepo, backend: Backend, models: dict[str, Path]
) -> None:
    result = run(cli, "store", str(models["torchscript"]), "prod_model")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"Stored prod_model v1 (commit {repo.head[:8]}, torchscript, ")
    assert lines[1].strip() == f"{backend.uri}/prod_model/{repo.head}.pt"
    assert lines[2].strip().startswith("sha256 ")
    assert lines[3] == "Next: git add .nexus_meta.json && git commit -m 'nexus: store prod_model v1'"

    again = run(cli, "store", str(models["torchscript"]), "prod_model")
    assert again.exit_code == 0
    assert again.stdout.startswith("Already stored: prod_model v1")


def test_store_with_commit_commits_the_metadata(cli: CliRunner, repo: GitRepo, models: dict[str, Path]) -> None:
    result = run(cli, "store", str(models["torchscript"]), "m", "--commit")
    assert result.exit_code == 0, result.output
    assert f"Committed {META_FILE} as {repo.head[:8]}." in result.stdout
    assert repo.status() == ""


def test_list_shows_a_table_and_json(cli: CliRunner, repo: GitRepo, models: dict[str, Path]) -> None:
    run(cli, "store", str(models["torchscript"]), "a")
    run(cli, "store", str(models["onnx"]), "b")

    table = run(cli, "list")
    assert table.exit_code == 0
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["model", "version", "commit", "size", "created", "latest", "format", "author"]
    assert [r.split()[:3] for r in rows] == [["a", "1", repo.head[:8]], ["b", "1", repo.head[:8]]]
    assert all("*" in r and "Test User" in r for r in rows)

    data = json.loads(run(cli, "list", "b", "--json").stdout)
    assert [(v["model_name"], v["version"], v["format"], v["is_latest"]) for v in data] == [("b", 1, "onnx", True)]


def test_list_with_nothing_stored_says_how_to_start(cli: CliRunner, repo: GitRepo) -> None:
    result = run(cli, "list")
    assert result.exit_code == 0
    assert "nexus store PATH MODEL_NAME" in result.stdout


def test_load_rollback_and_history(cli: CliRunner, repo: GitRepo, models: dict[str, Path], tmp_path: Path) -> None:
    run(cli, "store", str(models["torchscript"]), "m", "--commit")
    repo.gen({"train.py": "v2\n"}, commit="v2")
    run(cli, "store", str(models["torchscript_b"]), "m", "--commit")

    loaded = run(cli, "load", "m", "-o", str(tmp_path / "x.pt"))
    assert loaded.exit_code == 0, loaded.output
    assert "Loaded m v2" in loaded.stdout
    assert "downloaded, sha256 verified" in loaded.stdout
    assert (tmp_path / "x.pt").read_bytes() == models["torchscript_b"].read_bytes()

    rolled = run(cli, "rollback", "m")
    assert rolled.exit_code == 0, rolled.output
    assert rolled.stdout.startswith("Rolled back m: latest is now v1")

    hist = run(cli, "history", "m")
    rows = [line.split() for line in hist.stdout.splitlines()[1:]]
    assert [r[2:6] for r in rows] == [
        ["store", "-", "v1", "Test"],
        ["store", "v1", "v2", "Test"],
        ["rollback", "v2", "v1", "Test"],
    ]

    at = run(cli, "history", "m", "--at", "2000-01-01T00:00:00Z")
    assert at.stdout.strip() == "m had no version yet at 2000-01-01T00:00:00Z."
    now = json.loads(run(cli, "history", "m", "--at", "2999-01-01T00:00:00Z", "--json").stdout)
    assert now["version"] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["store", "missing.pt", "m"], "model file missing.pt does not exist; check the path"),
        (["load", "nope"], "no model named 'nope' in .nexus_meta.json; store one first"),
        (["list", "nope"], "no model named 'nope'"),
        (["rollback", "nope"], "no model named 'nope'"),
        (["store", "{model}", "bad/name"], "invalid model name 'bad/name'"),
        (["history", "m", "--at", "yesterday"], "is not an ISO 8601 time"),
    ],
)
def test_user_errors_are_one_red_line_with_exit_code_1(
    cli: CliRunner, repo: GitRepo, models: dict[str, Path], args: list[str], message: str
) -> None:
    args = [a.replace("{model}", str(models["torchscript"])) for a in args]
    if args[0] == "history":
        run(cli, "store", str(models["torchscript"]), "m")
    result = run(cli, *args)

    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert message in lines[0]
    assert "Traceback" not in result.stderr


def test_debug_shows_the_traceback(cli: CliRunner, repo: GitRepo) -> None:
    result = cli.invoke(app, ["--debug", "load", "nope"])
    assert result.exit_code != 0
    assert type(result.exception).__name__ == "ModelNotFoundError"


def test_dirty_tree_error_lists_the_files(cli: CliRunner, repo: GitRepo, models: dict[str, Path]) -> None:
    repo.gen({"train.py": "changed\n"})
    result = run(cli, "store", str(models["torchscript"]), "m")
    assert result.exit_code == 1
    assert (
        "uncommitted changes to tracked files: train.py; commit or stash them, or pass --allow-dirty" in result.stderr
    )


def test_outside_git_is_an_error(cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run(cli, "list")
    assert result.exit_code == 1
    assert "is not inside a git repository; run `git init`" in result.stderr


def test_init_writes_nexusrc_and_refuses_to_overwrite(cli: CliRunner, repo: GitRepo) -> None:
    result = run(cli, "init", "--storage", "s3://bucket/models", "--region", "eu-west-1")
    assert result.exit_code == 0, result.output
    assert (repo.root / ".nexusrc").read_text().splitlines()[1:] == [
        "[storage]",
        'uri = "s3://bucket/models"',
        'region = "eu-west-1"',
        "[publish]",
        'repository = ".nexus/model_repository"',
    ]
    again = run(cli, "init", "--storage", "gs://bucket/x")
    assert again.exit_code == 1
    assert "already exists; edit it, or pass --force" in again.stderr
    assert run(cli, "init", "--storage", "gs://bucket/x", "--force").exit_code == 0


def test_repo_option_runs_elsewhere(
    cli: CliRunner, repo: GitRepo, models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = run(cli, "-C", str(repo.root), "store", str(models["torchscript"]), "m")
    assert result.exit_code == 0, result.output
    assert (repo.root / META_FILE).exists()


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        (
            "corrupt_meta",
            ["list"],
            ".nexus_meta.json is not valid NexusML metadata (invalid JSON at line 1); restore it",
        ),
        ("secret_rc", ["list"], "'storage.aws_secret_access_key' looks like a credential"),
        ("text_model", ["store", "notes.txt", "m"], "notes.txt is not a recognised model file"),
        ("pickle_model", ["store", "pickled.pt", "m"], "is a pickled PyTorch object"),
        ("bad_scheme", ["store", "model.pt", "m"], "unsupported storage scheme 'ftp://'; use a folder, file://"),
    ],
)
def test_more_user_errors_are_one_line(
    cli: CliRunner,
    repo: GitRepo,
    models: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    setup: str,
    args: list[str],
    message: str,
) -> None:
    if setup == "corrupt_meta":
        (repo.root / META_FILE).write_text("{oops")
    elif setup == "secret_rc":
        (repo.root / ".nexusrc").write_text('[storage]\naws_secret_access_key = "abc"\n')
    elif setup == "text_model":
        (repo.root / "notes.txt").write_text("not a model\n")
    elif setup == "pickle_model":
        (repo.root / "pickled.pt").write_bytes(models["state_dict"].read_bytes())
    elif setup == "bad_scheme":
        (repo.root / "model.pt").write_bytes(models["torchscript"].read_bytes())
        monkeypatch.setenv("NEXUS_STORAGE", "ftp://host/x")
    result = run(cli, *args)

    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]


def test_repo_without_commits_is_a_one_line_error(
    cli: CliRunner, tmp_path: Path, models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    GitRepo.create(tmp_path / "fresh")
    monkeypatch.chdir(tmp_path / "fresh")
    result = run(cli, "store", str(models["torchscript"]), "m")
    assert result.exit_code == 1
    assert "has no commits yet; commit your training code first" in result.stderr


def test_every_command_has_help_with_an_example_and_the_shell_completion_is_there() -> None:
    import typer.main

    group: Any = typer.main.get_command(app)  # a click group (Typer may vendor click)
    commands = [name for name, command in group.commands.items() if not command.hidden]
    assert {"store", "load", "list", "publish", "serve", "predict", "status", "loadtest", "quickstart"} <= set(commands)
    for name in commands:
        result = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, name
        assert f"Example: nexus {name}" in result.output, f"`nexus {name} --help` shows no example"
        options = [p for p in group.commands[name].params if p.param_type_name == "option"]
        assert all(o.help for o in options if o.name != "help"), f"an option of `nexus {name}` has no help"
    completion = subprocess.run(
        [str(Path(sys.executable).with_name("nexus")), "--show-completion", "bash"],
        capture_output=True, text=True, env={**os.environ, "SHELL": "/bin/bash"},
    )  # fmt: skip
    assert "_nexus_completion" in completion.stdout


def test_json_output_is_strict_json_with_nan_as_null() -> None:
    import json
    from dataclasses import asdict

    from nexus.cli.output import to_json
    from nexus.loadtest.openloop import Latency

    text = to_json({"latency": asdict(Latency.of([])), "rates": (1.5, float("inf"))})
    assert json.loads(text) == {
        "latency": {"p50": None, "p90": None, "p99": None, "max": None, "others": []},
        "rates": [1.5, None],
    }


def test_publish_says_how_each_batching_policy_serves() -> None:
    from nexus.cli.tables import serving_summary
    from nexus.registry.metadata import ModelVersion
    from nexus.serving.model_config import ServingOptions

    v = ModelVersion("m", 1, "a" * 40, "x", True, "b" * 64, 10, "torchscript", "t", "me")
    assert serving_summary(ServingOptions(), v) == "2 instances (auto), adaptive batches of up to 32"
    assert serving_summary(ServingOptions(max_queue_delay_us=0, instances=1), v) == (
        "1 instance, adaptive batches of up to 32, closed as formed (delay 0)"
    )
    assert serving_summary(ServingOptions.with_policy("window", max_batch_size=8), v) == (
        "2 instances (auto), batches of up to 8 in 50 ms windows"
    )
    assert serving_summary(ServingOptions.with_policy("none"), v) == "2 instances (auto), no batching"
