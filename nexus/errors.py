"""The exceptions NexusML raises.

Every error a user can cause derives from :class:`NexusError`. Each subclass keeps the data it is
about (a path, a model name, a list of files) and builds a one-line message that ends with the fix.
The CLI turns them into exit codes; the library never prints and never exits.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class NexusError(Exception):
    """Root of every error NexusML raises on purpose. The CLI's exit codes for them are in `nexus/cli/errors.py`."""


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


class KeyExistsError(StorageError, FileExistsError):
    """Internal: a create-only write found the key taken (the caller decides what that means)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        super().__init__(f"{uri} already exists")


class DiskFullError(StorageError, OSError):
    """A local write ran out of space (or quota): the user can make room, so it is no bug.

    Raised once the half-written file is gone, so the free space reported is what there really is.
    """

    def __init__(
        self, path: Path, needed: int | None = None, elsewhere: str | None = None, *, quota: bool = False
    ) -> None:
        import contextlib
        import errno
        import shutil

        self.path = path
        self.needed = needed
        self.elsewhere = elsewhere
        self.quota = quota
        sizes = [f"{_size(needed)} needed"] if needed is not None else []
        if not quota:  # the filesystem's free space says nothing about a quota
            folder = next((p for p in (path, *path.parents) if p.exists()), path)
            with contextlib.suppress(OSError):
                sizes.append(f"{_size(shutil.disk_usage(folder).free)} free there")
        why = "your disk quota is used up" if quota else "the device is full"
        detail = f"{why}, {', '.join(sizes)}" if sizes else why
        fix = f"free some space there or {elsewhere}" if elsewhere else "free some space there"
        super().__init__(f"no space left to write {path} ({detail}); {fix}, then run the command again")
        self.errno = errno.EDQUOT if quota else errno.ENOSPC


def _size(n: int) -> str:
    """`1536` -> `1.5 KiB` (the CLI's sizes; errors may not import the CLI)."""
    value, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):  # noqa: B007 - the last unit is kept
        if value < 1024:
            break
        value /= 1024
    return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"


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
            f"(`git checkout -- {_git_path(path)}`) or fix the JSON by hand"
        )


class MergeConflictError(CorruptMetadataError):
    """`.nexus_meta.json` holds git's conflict markers: a merge, rebase or stash pop stopped on it.

    The advice works in the unmerged tree (a plain `git checkout -- FILE` refuses an unmerged path).
    """

    def __init__(self, path: Path, line: int) -> None:
        self.path = path
        self.line = line
        name = _git_path(path)
        MetadataError.__init__(
            self,
            f"{path} has unresolved git merge-conflict markers (line {line}); keep one side with "
            f"`git checkout --ours -- {name}` (or `--theirs`; the other side's versions are then no longer "
            f"recorded) or edit the file to keep both, then `git add {name}` and finish with `git commit` "
            "(or `git rebase --continue`); `git merge --abort` undoes the merge instead",
        )


def _git_path(path: Path) -> str:
    """``path`` as git commands run from the current folder should name it (`.nexus_meta.json` at the root)."""
    import os

    try:
        return os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return str(path)


class LockTimeoutError(MetadataError, TimeoutError):
    def __init__(self, path: Path, seconds: float) -> None:
        self.path = path
        super().__init__(
            f"another nexus process has held {path} for over {seconds:.0f}s; wait for it to finish, "
            "or delete the lock file if no nexus process is running"
        )


# --- signatures and publishing --------------------------------------------------------------


class SignatureError(NexusError, ValueError):
    """The inputs/outputs cannot be served as given."""


class SignatureMissingError(SignatureError):
    """A version records no input/output signature (TorchScript), so it cannot be published yet."""

    def __init__(self, model: str, version: int, fmt: str, command: str) -> None:
        self.model = model
        self.version = version
        self.command = command
        super().__init__(
            f"{model} v{version} is {fmt}, which records no input/output signature, so it cannot be served "
            f"until one is given: {command}"
        )


class ModelLoadError(NexusError):
    """The artifact exists and has the right format, but its runtime cannot load it."""


class PublishError(NexusError):
    """The repository could not be written."""


# --- Triton ---------------------------------------------------------------------------------


class TritonError(NexusError):
    """Triton could not be found, started, or did not become ready."""


class TritonUnreachableError(TritonError, ConnectionError):
    def __init__(self, url: str, detail: str) -> None:
        self.url = url
        super().__init__(f"cannot reach Triton at {url} ({detail}); start it with `nexus serve` or pass --server")


class TritonRequestError(TritonError):
    """Triton answered an admin request with an error."""

    def __init__(self, what: str, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(f"{what} failed ({status}): {reason}")


class ServerAddressError(NexusError, ValueError):
    def __init__(self, address: str, expected: str) -> None:
        self.address = address
        super().__init__(f"{address!r} is not a Triton address; write {expected}")


class PortInUseError(NexusError, OSError):
    def __init__(self, host: str, port: int, option: str) -> None:
        self.host = host
        self.port = port
        super().__init__(
            f"port {port} on {host} is in use (another Triton or nexus serve?); stop it or pass {option} PORT"
        )


class PortClashError(NexusError, ValueError):
    def __init__(self, first: str, second: str, port: int) -> None:
        super().__init__(f"{first} and {second} are both {port}; give each a port of its own")


class HotSwapError(NexusError):
    """Triton could not switch a model to a new version; the previous one is served again."""


class PredictError(NexusError):
    """The request could not be made or was refused."""


class LoadTestError(NexusError):
    """The load test could not run, or produced no results."""


class QuickstartError(NexusError):
    """A quickstart step failed; the message names the step and the command to rerun by hand."""
