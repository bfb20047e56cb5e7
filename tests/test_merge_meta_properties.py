"""Properties of :func:`nexus.registry.merge.merge_metadata` on histories built like nexus builds them.

A common ancestor is made by a run of stores and rollbacks; each side continues it with its own run
(stores draw from a small pool of artifacts, so both sides sometimes store the same one).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from nexus.errors import MetadataError, MetaMergeConflictError
from nexus.registry.merge import MergeResult, merge_metadata, version_key
from nexus.registry.metadata import Metadata, ModelVersion
from nexus.registry.versions import promote
from nexus.tensors import Signature, TensorSpec

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
MODELS = ("m", "n")


@dataclass(frozen=True)
class Op:
    model: str
    store: int | None  # an artifact of the pool, or None for a rollback
    rollback_to: int
    by: str


ops = st.lists(
    st.builds(
        Op,
        st.sampled_from(MODELS),
        st.one_of(st.none(), st.integers(0, 7)),
        st.integers(0, 20),
        st.sampled_from(["Ada <a@x>", "Bo <b@x>"]),
    ),
    max_size=8,
)


def stamp(tick: int) -> str:
    return (EPOCH + timedelta(seconds=tick)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def apply(meta: Metadata, run: list[Op], ticks: list[int]) -> Metadata:
    """``meta`` after ``run`` (a store of an artifact already recorded and a rollback to the latest do nothing)."""
    meta = copy.deepcopy(meta)
    for op, tick in zip(run, ticks, strict=True):
        record = meta.model(op.model)
        before = len(record.history)
        if op.store is not None:
            commit, sha = f"{op.store:040x}", f"{op.store + 100:064x}"
            uri = f"file:///store/{op.model}/{commit}.pt"
            if any(v.storage_uri == uri for v in record.versions):
                continue
            version = ModelVersion(
                op.model, record.next_version(), commit, uri, True, sha, 10, "torchscript", stamp(tick), op.by
            )
            promote(record, version, "store", op.by)
        elif record.versions:
            target = record.versions[op.rollback_to % len(record.versions)]
            if target.is_latest:
                continue
            promote(record, target, "rollback", op.by)
        if len(record.history) > before:
            record.history[-1] = replace(record.history[-1], at=stamp(tick))
    return Metadata({name: rec for name, rec in meta.models.items() if rec.versions})


@st.composite
def three_sides(draw: st.DrawFn) -> tuple[Metadata, Metadata, Metadata]:
    base_ops, ours_ops, theirs_ops = draw(ops), draw(ops), draw(ops)
    if draw(st.booleans()):  # m with three versions in the ancestor: room for rollbacks on both sides
        base_ops = [Op("m", artifact, 0, "Ada <a@x>") for artifact in (5, 6, 7)] + base_ops
    for run in (ours_ops, theirs_ops):  # often end with a rollback of m: two of them may be a conflict
        if draw(st.booleans()):
            run.append(Op("m", None, draw(st.integers(0, 20)), "Ada <a@x>"))
    base = apply(Metadata(), base_ops, [2 * i for i in range(len(base_ops))])
    start = 2 * len(base_ops)
    # each side's own times grow; the two sides interleave as drawn (odd and even ticks never collide)
    o_ticks = sorted(draw(st.lists(st.integers(0, 50), min_size=len(ours_ops), max_size=len(ours_ops))))
    t_ticks = sorted(draw(st.lists(st.integers(0, 50), min_size=len(theirs_ops), max_size=len(theirs_ops))))
    ours = apply(base, ours_ops, [start + 2 * t for t in o_ticks])
    theirs = apply(base, theirs_ops, [start + 2 * t + 1 for t in t_ticks])
    return base, ours, theirs


def merged(base: Metadata | None, ours: Metadata, theirs: Metadata, **kw: dict[str, str]) -> MergeResult:
    return merge_metadata(base, ours, theirs, at=stamp(10_000), by="Merger <m@x>", **kw)  # type: ignore[arg-type]


def keys(meta: Metadata) -> set[tuple[str, tuple[str, str, str]]]:
    return {(name, version_key(v)) for name, rec in meta.models.items() for v in rec.versions}


@settings(max_examples=300, deadline=None)
@given(three_sides())
def test_every_version_of_either_side_is_kept_once_under_unique_numbers_both_ways(
    sides: tuple[Metadata, Metadata, Metadata],
) -> None:
    base, ours, theirs = sides
    one, other = merged(base, ours, theirs), merged(base, theirs, ours)
    assert bool(one.conflicts) == bool(other.conflicts)
    assert keys(one.metadata) == keys(other.metadata) == keys(ours) | keys(theirs)
    for result in (one, other):
        text = result.metadata.to_json()
        assert Metadata.from_json(text, Path(".nexus_meta.json")).to_json() == text  # unique, ordered, one latest
    event("renumbered" if one.renumbered else "nothing renumbered")
    numbers = {(name, version_key(v)): v.version for name, rec in one.metadata.models.items() for v in rec.versions}
    for name, rec in ours.models.items():
        assert all(numbers[(name, version_key(v))] == v.version for v in rec.versions)  # ours keeps its numbers
    for r in one.renumbered:
        if not any((v.commit_hash, v.sha256) == (r.commit_hash, r.sha256) for v in ours.models[r.model].versions):
            assert r.new > r.old  # a version only theirs has moves up, never down
        assert any(e.action == "renumber" and (e.from_version, e.to_version) == (r.old, r.new)
                   for e in one.metadata.models[r.model].history)  # fmt: skip
    for name, rec in one.metadata.models.items():
        seen = {(e.action, e.at, e.by) for e in rec.history}
        for side in (ours, theirs):
            if name in side.models:
                assert {(e.action, e.at, e.by) for e in side.models[name].history} <= seen


@settings(max_examples=300, deadline=None)
@given(three_sides())
def test_merging_a_side_with_itself_or_with_the_unchanged_ancestor_changes_nothing(
    sides: tuple[Metadata, Metadata, Metadata],
) -> None:
    base, ours, _ = sides
    for theirs in (ours, base):
        result = merged(base, ours, theirs)
        assert not result.conflicts
        assert result.metadata.to_json() == ours.to_json()
    assert merged(base, base, ours).metadata.to_json() == ours.to_json()


@settings(max_examples=300, deadline=None)
@given(three_sides())
def test_a_conflict_is_decided_only_by_resolve_and_then_takes_that_side(
    sides: tuple[Metadata, Metadata, Metadata],
) -> None:
    base, ours, theirs = sides
    result = merged(base, ours, theirs)
    assert merged(base, ours, theirs).metadata.to_json() == result.metadata.to_json()  # deterministic
    event("conflict" if result.conflicts else "no conflict")
    if not result.conflicts:
        return
    for side, meta in (("ours", ours), ("theirs", theirs)):
        decided = merged(base, ours, theirs, resolve={c.model: side for c in result.conflicts})
        assert not decided.conflicts
        for c in result.conflicts:
            assert version_key(decided.metadata.models[c.model].current()) == version_key(
                meta.models[c.model].current()
            )


def signature(width: int) -> Signature:
    return Signature([TensorSpec("x", "float32", [-1, width])], [TensorSpec("y", "float32", [-1, 3])])


def with_signature(meta: Metadata, sig: Signature | None) -> Metadata:
    meta = copy.deepcopy(meta)
    meta.models["m"].versions[0].signature = sig
    return meta


def test_a_signature_recorded_on_one_side_is_kept_and_two_different_ones_are_a_conflict() -> None:
    base = apply(Metadata(), [Op("m", 1, 0, "Ada <a@x>"), Op("m", 2, 0, "Ada <a@x>")], [0, 2])
    one, two = with_signature(base, signature(4)), with_signature(base, signature(5))
    for ours, theirs in ((one, base), (base, one), (one, one)):
        result = merged(base, ours, theirs)
        assert not result.conflicts
        assert result.metadata.models["m"].versions[0].signature == signature(4)
    clash = merged(base, one, two)
    assert [c.detail for c in clash.conflicts] == [
        "both branches recorded a different signature for v1 (commit 00000000)"
    ]
    with pytest.raises(MetaMergeConflictError, match=r"m: both branches .* rerun with --resolve m=ours"):
        clash.checked("rerun with {flags}")
    decided = merged(base, one, two, resolve={"m": "theirs"})
    assert decided.metadata.models["m"].versions[0].signature == signature(5)
    assert decided.metadata.to_json() == two.to_json()  # the same as theirs: no merge entry to add


def test_a_resolve_that_names_no_conflict_or_no_side_is_refused() -> None:
    base = apply(Metadata(), [Op("m", 1, 0, "Ada <a@x>")], [0])
    with pytest.raises(MetadataError, match="has no conflict to resolve"):
        merged(base, base, base, resolve={"m": "ours"})
    with pytest.raises(MetadataError, match="must be ours or theirs"):
        merged(base, base, base, resolve={"m": "mine"})
