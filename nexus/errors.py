"""The exceptions NexusML raises.

Every error a user can cause derives from :class:`NexusError`. Each subclass keeps the data it is
about (a path, a model name, a list of files) and builds a one-line message that ends with the fix.
The CLI turns them into exit codes; the library never prints and never exits.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class NexusError(Exception):
    """Root of every error NexusML raises on purpose."""

    #: Exit code the CLI uses for this error.
    exit_code: int = 1


# --- configuration --------------------------------------------------------------------------


class ConfigError(NexusError, ValueError):
    """`.nexusrc` or an environment variable holds a value NexusML cannot use."""

    def __init__(self, source: str, problem: str, fix: str) -> None:
        self.source = source
        self.problem = problem
        super().__init__(f"{source}: {problem}; {fix}")


class CredentialInConfigError(ConfigError):
    """`.nexusrc` is git-tracked, so it must never hold a secret."""

    def __init__(self, source: str, key: str) -> None:
        self.key = key
        super().__init__(
            source,
            f"'{key}' looks like a credential, and .nexusrc is committed to git",
            "remove it and use environment variables (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "GOOGLE_APPLICATION_CREDENTIALS) or the SDKs' standard chains (~/.aws/credentials, "
            "`gcloud auth application-default login`)",
        )


class MissingDependencyError(NexusError, ImportError):
    """An optional dependency for a storage backend or format is not installed."""

    def __init__(self, what: str, extra: str) -> None:
        self.what = what
        self.extra = extra
        super().__init__(f"{what} needs an optional dependency; install it with `pip install 'nexusml[{extra}]'`")


# --- git ------------------------------------------------------------------------------------


class GitError(NexusError):
    """Git could not answer a question NexusML asked it."""


class NotAGitRepoError(GitError):
    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(f"{path} is not inside a git repository; run `git init` (and commit your code) first")


class NoCommitsError(GitError):
    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(
            f"the git repository at {path} has no commits yet; commit your training code first "
            "(`git add -A && git commit -m 'initial'`)"
        )


class DirtyTreeError(GitError):
    """Tracked files are modified or staged, so HEAD does not describe the code that made the model."""

    def __init__(self, files: Sequence[str]) -> None:
        self.files = list(files)
        shown = ", ".join(self.files[:5]) + (f" (+{len(self.files) - 5} more)" if len(self.files) > 5 else "")
        super().__init__(
            f"the git tree has uncommitted changes to tracked files: {shown}; "
            "commit or stash them, or pass --allow-dirty to record the version as dirty"
        )


# --- models and versions --------------------------------------------------------------------


class InvalidModelNameError(NexusError, ValueError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"invalid model name {name!r}; use 1-64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit (it becomes a storage key and a Triton directory)"
        )


class ModelNotFoundError(NexusError, LookupError):
    def __init__(self, name: str, known: Sequence[str]) -> None:
        self.name = name
        self.known = list(known)
        hint = (
            f"known models: {', '.join(self.known)}" if self.known else "store one first with `nexus store PATH NAME`"
        )
        super().__init__(f"no model named {name!r} in .nexus_meta.json; {hint}")


class VersionNotFoundError(NexusError, LookupError):
    def __init__(self, name: str, wanted: str, available: Sequence[int]) -> None:
        self.name = name
        self.wanted = wanted
        super().__init__(
            f"model {name!r} has no version {wanted}; available versions: "
            f"{', '.join(str(v) for v in available)} (see `nexus list {name}`)"
        )


class AmbiguousVersionError(NexusError, LookupError):
    def __init__(self, name: str, wanted: str, matches: Sequence[int]) -> None:
        super().__init__(
            f"commit prefix {wanted!r} matches versions {', '.join(map(str, matches))} of {name!r}; "
            "give more characters of the commit or use --version N"
        )


class RollbackError(NexusError):
    """A rollback has nowhere to go."""


# --- artifacts and formats ------------------------------------------------------------------


class ArtifactNotFoundError(NexusError, FileNotFoundError):
    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(f"model file {path} does not exist; check the path")


class UnsupportedFormatError(NexusError, ValueError):
    def __init__(self, path: Path, detail: str) -> None:
        self.path = path
        super().__init__(
            f"{path} is {detail}; NexusML stores TorchScript archives (torch.jit.save), torch.export "
            "programs (torch.export.save, .pt2) and ONNX models"
        )


class PickledModelError(UnsupportedFormatError):
    """A `torch.save` pickle: not loadable without the Python class, and unsafe to unpickle."""

    def __init__(self, path: Path) -> None:
        NexusError.__init__(
            self,
            f"{path} is a pickled PyTorch object (torch.save of an nn.Module or state_dict), which cannot "
            "be served without its Python code; export it: `torch.jit.script(model).save('model.pt')` or "
            "`torch.export.save(torch.export.export(model, (example,)), 'model.pt2')`",
        )
        self.path = path


# --- storage --------------------------------------------------------------------------------


class StorageError(NexusError):
    """A storage backend failed."""


class BucketNotFoundError(StorageError, LookupError):
    def __init__(self, uri: str) -> None:
        self.uri = uri
        super().__init__(f"bucket for {uri} does not exist; create it or fix `storage.uri` in .nexusrc / NEXUS_STORAGE")


class StorageCredentialsError(StorageError, PermissionError):
    def __init__(self, uri: str, detail: str) -> None:
        self.uri = uri
        super().__init__(
            f"no usable credentials for {uri} ({detail}); set them in the environment or the SDK's standard "
            "chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE; GOOGLE_APPLICATION_CREDENTIALS)"
        )


class EndpointUnreachableError(StorageError, ConnectionError):
    def __init__(self, endpoint: str, detail: str) -> None:
        self.endpoint = endpoint
        super().__init__(
            f"cannot reach storage endpoint {endpoint} ({detail}); check that the server is up and "
            "`storage.endpoint_url` in .nexusrc / NEXUS_ENDPOINT_URL"
        )


class ObjectMissingError(StorageError, LookupError):
    def __init__(self, uri: str) -> None:
        self.uri = uri
        super().__init__(f"{uri} is missing from storage; it was deleted outside NexusML, store the version again")


class ObjectConflictError(StorageError, FileExistsError):
    """The storage key is taken by different bytes: stored versions are never overwritten."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        super().__init__(
            f"{uri} already holds different bytes for this commit and stored versions are never overwritten; "
            "commit your changes (a new commit gives a new version) and store again"
        )


class IntegrityError(StorageError):
    """Bytes read back do not hash to what was recorded."""

    def __init__(self, uri: str, expected: str, actual: str, expected_size: int, actual_size: int) -> None:
        self.uri = uri
        self.expected = expected
        self.actual = actual
        what = (
            f"size {actual_size} != recorded {expected_size}"
            if expected_size != actual_size
            else f"sha256 {actual[:12]}… != recorded {expected[:12]}…"
        )
        super().__init__(
            f"{uri} failed verification ({what}); the stored object is corrupt or was replaced outside "
            "NexusML, nothing was written; store the version again from a good copy"
        )


class OutputExistsError(NexusError, FileExistsError):
    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(f"{path} already exists with different content; choose another -o PATH or pass --force")


# --- metadata -------------------------------------------------------------------------------


class MetadataError(NexusError):
    """`.nexus_meta.json` cannot be read or updated."""


class CorruptMetadataError(MetadataError):
    def __init__(self, path: Path, detail: str) -> None:
        self.path = path
        super().__init__(
            f"{path} is not valid NexusML metadata ({detail}); restore it from git "
            f"(`git checkout -- {path.name}`) or fix the JSON by hand"
        )


class LockTimeoutError(MetadataError, TimeoutError):
    def __init__(self, path: Path, seconds: float) -> None:
        self.path = path
        super().__init__(
            f"another nexus process has held {path} for over {seconds:.0f}s; wait for it to finish, "
            "or delete the lock file if no nexus process is running"
        )
