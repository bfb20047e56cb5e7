"""Stale version numbers: a repository or a server serving vN built from another artifact than `.nexus_meta.json`'s vN.

A version number means one artifact, identified by (commit, sha256). A branch merge can renumber a
version (:mod:`nexus.registry.merge`: theirs' v2 becomes v3 when ours has a v2 of its own), so what was
published or loaded as v2 before the merge may be another artifact than the merged metadata's v2.
Every published `config.pbtxt` records the commit and sha256 it serves (``nexus_commit``,
``nexus_sha256`` in its parameters), and Triton's config endpoint returns those of the config it has
loaded: comparing them with the metadata's version of the same number finds a stale number, in the
repository or on a server. `nexus status` reports it; `nexus publish` and `nexus serve` rewrite it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nexus.registry.metadata import ModelRecord, ModelVersion
from nexus.serving.model_config import PARAM_COMMIT, PARAM_SHA256

REPOSITORY = "repository"
SERVER = "server"


@dataclass(frozen=True)
class Served:
    """The artifact a config serves under a version number: what its parameters record."""

    version: int
    commit: str
    sha256: str

    @classmethod
    def from_parameters(cls, version: int | None, parameters: Mapping[str, str]) -> Served | None:
        """From a config's ``parameters`` (name -> string value); None without a version or the two records."""
        commit, sha256 = parameters.get(PARAM_COMMIT), parameters.get(PARAM_SHA256)
        if version is None or not commit or not sha256:
            return None
        return cls(version, commit, sha256)

    @classmethod
    def from_triton(cls, config: Mapping[str, Any]) -> Served | None:
        """From the JSON config Triton returns for a loaded model (`/v2/models/M/config`)."""
        versions = config.get("version_policy", {}).get("specific", {}).get("versions", [])
        parameters = {key: str(value.get("string_value", "")) for key, value in config.get("parameters", {}).items()}
        # int64 fields are strings in protobuf's JSON
        return cls.from_parameters(int(versions[0]) if len(versions) == 1 else None, parameters)

    def is_artifact_of(self, version: ModelVersion) -> bool:
        return (self.commit, self.sha256) == (version.commit_hash, version.sha256)


@dataclass(frozen=True)
class StaleNumber:
    """``served`` (in the repository, or on a server) is not the artifact `.nexus_meta.json` numbers so."""

    model: str
    #: :data:`REPOSITORY` or :data:`SERVER`.
    where: str
    served: Served
    #: The metadata's version of that number (None: the metadata has no such version).
    expected: ModelVersion | None
    #: The number the served artifact has in the metadata now (None: no version there is that artifact).
    now: int | None
    #: A merge's renumber entry in the history moved the served number to :attr:`now`.
    renumbered: bool

    @property
    def fix(self) -> str:
        """The command that repairs it."""
        if self.expected is None or self.expected.is_latest:
            return f"nexus publish {self.model}"
        return f"nexus publish {self.model} --version {self.expected.version}"

    def describe(self) -> str:
        """One line: which artifact is served as vN, which one vN is, why, and the fix."""
        n, served, expected = self.served.version, self.served, self.expected
        same_commit = expected is not None and expected.commit_hash == served.commit
        subject = f"repository's v{n} is" if self.where == REPOSITORY else f"server runs v{n} as"
        artifact = f"commit {served.commit[:8]}'s artifact" + (f" (sha256 {served.sha256[:12]})" if same_commit else "")
        if expected is None:
            meta = f".nexus_meta.json has no v{n}"
        elif same_commit:
            meta = f".nexus_meta.json's v{n} is sha256 {expected.sha256[:12]}"
        else:
            meta = f".nexus_meta.json's v{n} is commit {expected.commit_hash[:8]}'s"
        verb = "republish with" if self.where == REPOSITORY else "switch it with"
        return f"{subject} {artifact}, but {meta} ({self.why}): {verb} `{self.fix}`"

    @property
    def why(self) -> str:
        """Where the served artifact is in the metadata now."""
        if self.renumbered:
            return f"renumbered to v{self.now} by a branch merge"
        if self.now is not None:
            return f"that artifact is v{self.now} there"
        return "no version there is that artifact"

    def replaced(self) -> str:
        """What a publish replaced, for its report: `stale v2 (commit abc12345's artifact, renumbered ...)`."""
        return f"stale v{self.served.version} (commit {self.served.commit[:8]}'s artifact, {self.why})"


def stale_number(record: ModelRecord, where: str, served: Served | None) -> StaleNumber | None:
    """The stale number ``served`` is, against ``record`` (the metadata's model); None when it is the right one."""
    if served is None:
        return None
    expected = record.get(served.version)
    if expected is not None and served.is_artifact_of(expected):
        return None
    now = next((v.version for v in record.versions if served.is_artifact_of(v)), None)
    renumbered = now is not None and any(
        e.action == "renumber" and (e.from_version, e.to_version) == (served.version, now) for e in record.history
    )
    return StaleNumber(record.name, where, served, expected, now, renumbered)
