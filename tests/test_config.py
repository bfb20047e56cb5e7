"""`.nexusrc`: TOML settings, environment overrides, and no credentials ever."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import GitRepo
from nexus.errors import ConfigError, CredentialInConfigError
from nexus.registry import Project, init
from nexus.settings import PublishSettings, StorageSettings, load_config, write_config
from nexus.storage import open_storage


def write_rc(root: Path, text: str) -> None:
    (root / ".nexusrc").write_text(text, encoding="utf-8")


def test_defaults_without_nexusrc_are_a_local_store_in_the_repo(tmp_path: Path) -> None:
    config = load_config(tmp_path, env={})
    assert config.storage == StorageSettings(uri=".nexus/storage")
    storage = open_storage(config.storage.uri, config.storage, tmp_path)
    assert storage.uri("m/x.pt") == ".nexus/storage/m/x.pt"


def test_nexusrc_is_read_and_environment_overrides_it(tmp_path: Path) -> None:
    write_rc(
        tmp_path,
        '[storage]\nuri = "s3://bucket/prefix"\nendpoint_url = "http://127.0.0.1:9000"\nregion = "eu-west-1"\n',
    )
    assert load_config(tmp_path, env={}).storage == StorageSettings(
        "s3://bucket/prefix", "http://127.0.0.1:9000", "eu-west-1"
    )
    env = {"NEXUS_STORAGE": "gs://other/p", "NEXUS_REGION": "us-east-2"}
    assert load_config(tmp_path, env=env).storage == StorageSettings(
        "gs://other/p", "http://127.0.0.1:9000", "us-east-2"
    )


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[storage]\nuri = "s3://b/p"\naws_secret_access_key = "x"\n', "storage.aws_secret_access_key"),
        ('[storage]\nuri = "s3://b/p"\naws_access_key_id = "AKIAIOSFODNN7EXAMPLE"\n', "storage.aws_access_key_id"),
        ('[storage]\nuri = "s3://b/p"\nregion = "AKIAIOSFODNN7EXAMPLE"\n', "storage.region"),
        (
            '[storage]\nuri = "s3://b/p"\nendpoint_url = "http://minio:minio123@127.0.0.1:9000"\n',
            "storage.endpoint_url",
        ),
        ('[gcs]\nprivate_key = "-----BEGIN PRIVATE KEY-----"\n', "gcs"),
        ('[storage]\nuri = "s3://b/p"\ntoken = "abc"\n', "storage.token"),
    ],
)
def test_anything_that_looks_like_a_credential_is_refused(tmp_path: Path, text: str, key: str) -> None:
    write_rc(tmp_path, text)
    with pytest.raises(CredentialInConfigError, match="environment variables") as info:
        load_config(tmp_path, env={})
    assert info.value.key.startswith(key)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[storage\nuri=", "not valid TOML"),
        ('[storage]\nurl = "s3://b"\n', r"unknown key\(s\) \['url'\]"),
        ('[storags]\nuri = "s3://b"\n', "unknown section"),
        ("[storage]\nuri = 3\n", "must be a non-empty string"),
    ],
)
def test_bad_nexusrc_is_an_error_naming_the_problem(tmp_path: Path, text: str, problem: str) -> None:
    write_rc(tmp_path, text)
    with pytest.raises(ConfigError, match=problem):
        load_config(tmp_path, env={})


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("ftp://host/x", "unsupported storage scheme 'ftp://'"),
        ("s3://B_/x", "not a valid bucket name"),
        ("file://host/x", "absolute"),
    ],
)
def test_bad_storage_uris_are_refused(tmp_path: Path, uri: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        open_storage(uri, StorageSettings(uri), tmp_path)


def test_init_writes_a_nexusrc_that_loads_back(repo: GitRepo) -> None:
    path = init(repo.root, StorageSettings("s3://bucket/models", "http://127.0.0.1:9000", "eu-west-1"))
    assert path == repo.root / ".nexusrc"
    assert load_config(repo.root, env={}).storage == StorageSettings(
        "s3://bucket/models", "http://127.0.0.1:9000", "eu-west-1"
    )
    assert Project.open(repo.root, env={}).config.storage.uri == "s3://bucket/models"


def test_init_refuses_credentials_in_an_endpoint(repo: GitRepo) -> None:
    with pytest.raises(CredentialInConfigError):
        write_config(repo.root, StorageSettings("s3://b/p", "http://user:secret@127.0.0.1:9000"))
    assert not (repo.root / ".nexusrc").exists()


def test_relative_folder_store_resolves_against_the_repo_root(repo: GitRepo, tmp_path: Path) -> None:
    storage = open_storage("models-store", StorageSettings("models-store"), repo.root)
    src = tmp_path / "f"
    src.write_bytes(b"abc")
    storage.put_file("m/a.pt", src)
    assert (repo.root / "models-store" / "m" / "a.pt").read_bytes() == b"abc"


def test_publish_repository_comes_from_nexusrc_and_environment(tmp_path: Path) -> None:
    assert load_config(tmp_path, env={}).publish == PublishSettings(".nexus/model_repository")
    write_rc(tmp_path, '[publish]\nrepository = "s3://bucket/triton"\n')
    assert load_config(tmp_path, env={}).publish.repository == "s3://bucket/triton"
    assert load_config(tmp_path, env={"NEXUS_REPOSITORY": "/srv/repo"}).publish.repository == "/srv/repo"
    write_rc(tmp_path, '[publish]\nrepo = "x"\n')
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['repo'\] in \[publish\]"):
        load_config(tmp_path, env={})
