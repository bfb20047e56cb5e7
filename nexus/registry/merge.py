"""Merging two branches' `.nexus_meta.json` against their common ancestor: :func:`merge_metadata`.

A pure function on parsed metadata; :mod:`~nexus.registry.merge_driver` wires it to git and files.
The rules, per model (a model on one side only is taken as it is):

- **Versions.** A version is its artifact: (commit_hash, sha256, storage_uri); the same bytes at the
  same commit in another store are another version, as `nexus store` records them. Every version of
  either side is kept exactly once. Ours (the branch merged into) keeps all its numbers. A version
  only theirs has keeps its number if ours does not use it; the others get the next free numbers
  (above every number in use, in theirs' order). A version both sides hold keeps ours' number.
- **Renumbering.** Every version whose number on theirs changes gets a history entry
  ``{"action": "renumber", "from_version": OLD, "to_version": NEW}`` (OLD is the number it had on
  theirs, which may now name another version); :attr:`MergeResult.renumbered` lists them with the
  commit and sha256, for telling a stale published vN from the recorded one.
- **Fields of a shared version.** The signature merges three-way (a side that left it as in the
  ancestor takes the other's; "none recorded" counts as unchanged when there was no ancestor); two
  different new signatures are a conflict. The other fields come from the earlier-created record.
- **Latest.** Three-way: a side that left the ancestor's latest alone takes the other side's. When both
  moved it to different versions, the later promotion (the time of each side's last store, rollback
  or merge entry) wins, ours on a tie; if both last moves were rollbacks it is a conflict.
- **History.** Both histories, each in its own order, interleaved by time (ours first on a tie),
  an entry both sides hold (same action, time and author) once; theirs' entries use the new numbers.
  When the merged model differs from both sides, the renumber entries and a ``"merge"`` entry
  (from ours' latest to the merged latest, at ``at`` by ``by``) are appended.

Conflicts are never guessed: the result holds ours' choice for each one until ``resolve`` names the
side to take for that model, and :meth:`MergeResult.checked` raises while any is left.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from nexus.errors import MetadataError, MetaMergeConflictError
from nexus.registry.metadata import HistoryEvent, Metadata, ModelRecord, ModelVersion, parse_time

#: History actions that do not change which version is latest.
NOT_PROMOTIONS = frozenset({"renumber"})
SIDES = ("ours", "theirs")

Key = tuple[str, str, str]


def version_key(v: ModelVersion) -> Key:
    """What identifies a version across branches: the artifact, wherever its number went."""
    return (v.commit_hash, v.sha256, v.storage_uri)


@dataclass(frozen=True)
class Conflict:
    """A decision the merge does not make: which side's latest version, or signature, a model keeps."""

    model: str
    detail: str


@dataclass(frozen=True)
class Renumbering:
    """Theirs' ``old`` number of an artifact is ``new`` in the merged metadata."""

    model: str
    old: int
    new: int
    commit_hash: str
    sha256: str


@dataclass
class MergeResult:
    metadata: Metadata
    renumbered: list[Renumbering] = field(default_factory=list)
    #: Unresolved conflicts; :attr:`metadata` holds ours' side of each.
    conflicts: list[Conflict] = field(default_factory=list)

    def checked(self, how: str) -> Metadata:
        """The merged metadata; while conflicts are left, a :class:`MetaMergeConflictError` whose fix is
        ``how``, where ``{flags}`` becomes the `--resolve MODEL=ours` options that take ours' side."""
        if self.conflicts:
            flags = " ".join(f"--resolve {m}=ours" for m in sorted({c.model for c in self.conflicts}))
            raise MetaMergeConflictError([f"{c.model}: {c.detail}" for c in self.conflicts], how.format(flags=flags))
        return self.metadata


def merge_metadata(
    base: Metadata | None,
    ours: Metadata,
    theirs: Metadata,
    *,
    at: str,
    by: str,
    resolve: Mapping[str, str] | None = None,
) -> MergeResult:
    """Merge ``theirs`` into ``ours`` (``base``: their common ancestor, None when unknown) by the module's rules.

    Args:
        at: the time recorded for the merge (ISO 8601 UTC, as :func:`~nexus.registry.metadata.utc_now`).
        by: who merges (`Name <email>`).
        resolve: model name -> "ours" or "theirs": the side whose choice a conflicted model keeps.
    """
    resolve = dict(resolve or {})
    for name, side in resolve.items():
        if side not in SIDES:
            raise MetadataError(f"--resolve {name}={side}: the side must be ours or theirs")
    result = MergeResult(Metadata())
    conflicted: set[str] = set()
    for name in sorted(set(ours.models) | set(theirs.models)):
        o, t = ours.models.get(name), theirs.models.get(name)
        b = base.models.get(name) if base is not None else None
        if o is None or t is None:
            result.metadata.models[name] = _copy(o or t)  # type: ignore[arg-type]  # one of them is there
            continue
        merger = _ModelMerge(name, b, o, t, resolve.get(name))
        result.metadata.models[name] = merger.merge(at, by)
        result.renumbered += merger.renumbered
        result.conflicts += merger.conflicts
        if merger.had_conflict:
            conflicted.add(name)
    unused = sorted(set(resolve) - conflicted)
    if unused:
        raise MetadataError(f"--resolve {unused[0]}=...: {unused[0]!r} has no conflict to resolve; drop it")
    return result


def _copy(record: ModelRecord) -> ModelRecord:
    return ModelRecord(record.name, [replace(v) for v in record.versions], list(record.history))


def _keys(record: ModelRecord | None, side: str) -> dict[Key, ModelVersion]:
    found: dict[Key, ModelVersion] = {}
    for v in record.versions if record else []:
        if (other := found.get(version_key(v))) is not None:
            raise MetadataError(
                f"{side}: {v.model_name} v{other.version} and v{v.version} record the same object "
                f"{v.storage_uri}; remove one by hand"
            )
        found[version_key(v)] = v
    return found


class _ModelMerge:
    """One model present on both sides."""

    def __init__(self, name: str, b: ModelRecord | None, o: ModelRecord, t: ModelRecord, side: str | None) -> None:
        self.name, self.b, self.o, self.t, self.side = name, b, o, t, side
        self.bk, self.ok, self.tk = _keys(b, "base"), _keys(o, "ours"), _keys(t, "theirs")
        self.renumbered: list[Renumbering] = []
        self.conflicts: list[Conflict] = []
        self.had_conflict = False
        by_uri = {v.storage_uri: v for v in o.versions}
        for v in t.versions:
            mine = by_uri.get(v.storage_uri)
            if mine is not None and mine.sha256 != v.sha256:
                raise MetadataError(
                    f"{name}: ours v{mine.version} and theirs v{v.version} record {v.storage_uri} with different "
                    "sha256, so one record does not match storage; check both with `nexus load` and fix by hand"
                )

    def _conflict(self, detail: str) -> str:
        """The side taken for a conflict: the one ``resolve`` names, else ours (and the conflict is reported)."""
        self.had_conflict = True
        if self.side is None:
            self.conflicts.append(Conflict(self.name, detail))
        return self.side or "ours"

    def merge(self, at: str, by: str) -> ModelRecord:
        numbers = self._numbers()
        versions = [self._version(key, v, numbers[key]) for key, v in self.ok.items()]
        versions += [replace(v, version=numbers[key]) for key, v in self.tk.items() if key not in self.ok]
        versions.sort(key=lambda v: v.version)
        latest = self._latest(numbers)
        for v in versions:
            v.is_latest = v.version == latest
        tmap = {v.version: numbers[key] for key, v in self.tk.items()}
        record = ModelRecord(self.name, versions, self._history(tmap))
        if record in (self.o, self.t):
            return record  # nothing new from the other side: nothing to record
        for key, v in self.tk.items():
            if numbers[key] != v.version:
                self.renumbered.append(Renumbering(self.name, v.version, numbers[key], v.commit_hash, v.sha256))
                record.history.append(HistoryEvent("renumber", at, by, v.version, numbers[key]))
        before = self.o.current().version
        record.history.append(HistoryEvent("merge", at, by, before, latest))
        return record

    def _numbers(self) -> dict[Key, int]:
        numbers = {key: v.version for key, v in self.ok.items()}
        used = set(numbers.values())
        waiting = []
        for key, v in self.tk.items():
            if key in numbers:
                continue
            if v.version in used:
                waiting.append(key)
            else:
                numbers[key] = v.version
                used.add(v.version)
        for key in waiting:
            numbers[key] = max(used) + 1
            used.add(numbers[key])
        return numbers

    def _version(self, key: Key, mine: ModelVersion, number: int) -> ModelVersion:
        other = self.tk.get(key)
        if other is None or other == mine:
            return replace(mine, version=number)
        first = other if parse_time(other.created_at) < parse_time(mine.created_at) else mine
        old = self.bk[key].signature if key in self.bk else None
        signature = mine.signature
        if mine.signature != other.signature:
            if mine.signature == old:
                signature = other.signature
            elif other.signature != old:
                detail = f"both branches recorded a different signature for v{number} (commit {mine.short_commit})"
                signature = other.signature if self._conflict(detail) == "theirs" else mine.signature
        return replace(first, version=number, signature=signature, is_latest=False)

    def _latest(self, numbers: dict[Key, int]) -> int:
        mine, theirs = version_key(self.o.current()), version_key(self.t.current())
        old = version_key(self.b.current()) if self.b is not None and self.b.latest is not None else None
        if mine == theirs or theirs == old:
            return numbers[mine]
        if mine == old:
            return numbers[theirs]
        o_event, t_event = _last_promotion(self.o), _last_promotion(self.t)
        if o_event is not None and t_event is not None and o_event.action == t_event.action == "rollback":
            detail = (
                f"both branches rolled it back since they diverged, ours to v{numbers[mine]} "
                f"(commit {mine[0][:8]}) and theirs to v{numbers[theirs]} (commit {theirs[0][:8]})"
            )
            return numbers[theirs] if self._conflict(detail) == "theirs" else numbers[mine]
        o_time = parse_time(o_event.at) if o_event else None
        t_time = parse_time(t_event.at) if t_event else None
        later = t_time is not None and (o_time is None or t_time > o_time)
        return numbers[theirs] if later else numbers[mine]

    def _history(self, tmap: dict[int, int]) -> list[HistoryEvent]:
        seen = {(e.action, e.at, e.by) for e in self.o.history}
        incoming = [_renumbered(e, tmap) for e in self.t.history if (e.action, e.at, e.by) not in seen]
        return list(heapq.merge(self.o.history, incoming, key=lambda e: parse_time(e.at)))


def _last_promotion(record: ModelRecord) -> HistoryEvent | None:
    return next((e for e in reversed(record.history) if e.action not in NOT_PROMOTIONS), None)


def _renumbered(event: HistoryEvent, tmap: dict[int, int]) -> HistoryEvent:
    """Theirs' ``event`` in the merged numbers (a renumber entry's ``from_version`` is a past number: kept)."""
    to = tmap.get(event.to_version, event.to_version)
    before = event.from_version
    if before is not None and event.action not in NOT_PROMOTIONS:
        before = tmap.get(before, before)
    return replace(event, from_version=before, to_version=to)
