"""Finding a version in a model's record (by number, commit prefix or latest), and making one latest."""

from __future__ import annotations

import re

from nexus.errors import AmbiguousVersionError, VersionNotFoundError
from nexus.registry.metadata import HistoryEvent, ModelRecord, ModelVersion, utc_now

COMMIT_PREFIX = re.compile(r"^[0-9a-f]{4,40}$")


def parse_version_ref(ref: str) -> tuple[int | None, str | None]:
    """`"3"`/`"v3"` -> (3, None); a hex string of 7+ digits -> (None, prefix); else (None, None)."""
    text = ref.strip().lower()
    digits = text.removeprefix("v")
    if digits.isdigit() and (text.startswith("v") or len(digits) < 7):
        return int(digits), None
    if len(text) >= 7 and COMMIT_PREFIX.match(text):
        return None, text
    return None, None


def resolve(record: ModelRecord, version: int | None, commit: str | None) -> ModelVersion:
    """The version by number, by commit (prefix of at least 4 hex digits), or the latest."""
    available = [v.version for v in record.versions]
    if version is not None:
        found = record.get(version)
        if found is None:
            raise VersionNotFoundError(record.name, str(version), available)
        return found
    if commit is not None:
        prefix = commit.lower()
        if not COMMIT_PREFIX.match(prefix):
            raise VersionNotFoundError(record.name, f"for commit {commit!r} (give 4-40 hex digits)", available)
        matches = [v for v in record.versions if v.commit_hash.startswith(prefix)]
        if not matches:
            raise VersionNotFoundError(record.name, f"at commit {commit}", available)
        if len(matches) > 1:
            raise AmbiguousVersionError(record.name, commit, [v.version for v in matches])
        return matches[0]
    return record.current()


def promote(record: ModelRecord, version: ModelVersion, action: str, author: str) -> None:
    """Add ``version`` to the record if it is new, make it the latest, and append that to the history."""
    previous = record.latest
    if record.get(version.version) is None:
        record.versions.append(version)
    record.set_latest(version.version)
    record.history.append(
        HistoryEvent(
            action=action,
            at=utc_now(),
            by=author,
            from_version=previous.version if previous else None,
            to_version=version.version,
        )
    )
