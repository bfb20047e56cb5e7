"""Errors of the control plane: settings, git, models and versions, artifacts, metadata, signatures."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from nexus.errors.base import NexusError

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
    ``hint`` is one more clause, e.g. that this clone lacks the merge driver `.gitattributes` asks for.
    """

    def __init__(self, path: Path, line: int, hint: str | None = None) -> None:
        self.path = path
        self.line = line
        name = _git_path(path)
        MetadataError.__init__(
            self,
            f"{path} has unresolved git merge-conflict markers (line {line}); merge both sides with "
            f"`nexus merge-meta :2:.nexus_meta.json :3:.nexus_meta.json --base :1:.nexus_meta.json -o {name}`, "
            f"or keep one side with `git checkout --ours -- {name}` (or `--theirs`; the other side's versions "
            f"are then no longer recorded); then `git add {name}` and finish with `git commit` "
            "(or `git rebase --continue`); `git merge --abort` undoes the merge instead"
            + (f"; {hint}" if hint else ""),
        )


class MetaMergeConflictError(MetadataError):
    """Merging two sides' metadata needs a decision the merge does not guess (see :mod:`nexus.registry.merge`)."""

    def __init__(self, conflicts: Sequence[str], how: str) -> None:
        self.conflicts = list(conflicts)
        super().__init__(f"cannot merge .nexus_meta.json without a decision: {'; '.join(conflicts)}; {how}")


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


class SampleError(SignatureError):
    """A sample (`--sample NAME=FILE.npy`) cannot be read, or does not fit the model's inputs."""


class ModelLoadError(NexusError):
    """The artifact exists and has the right format, but its runtime cannot load it."""
