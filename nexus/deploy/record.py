"""`nexus-deploy.json`: which release a deployment folder renders, and which files nexus wrote there.

    {"format": 1, "target": "k8s", "release": ID, "root": ROOT, "uri": RELEASE_URI,
     "files": ["deployment.yaml", ...], "nexus": "0.1.0"}

`nexus release prune` keeps every release a tracked `nexus-deploy.json` names; a re-render replaces
the files it lists, and nothing else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from nexus import __version__
from nexus.errors import DeployError
from nexus.release import Release

RECORD = "nexus-deploy.json"
FORMAT = 1


@dataclass(frozen=True)
class DeployRecord:
    target: str
    release: str
    root: str
    uri: str
    files: tuple[str, ...] = ()
    nexus: str = field(default=__version__)

    @classmethod
    def for_release(cls, release: Release, target: str) -> DeployRecord:
        return cls(target=target, release=release.id, root=release.root, uri=release.uri)

    def to_json(self) -> str:
        body = {
            "format": FORMAT,
            "target": self.target,
            "release": self.release,
            "root": self.root,
            "uri": self.uri,
            "files": list(self.files),
            "nexus": self.nexus,
        }
        return json.dumps(body, indent=2) + "\n"


def read_record(folder: Path) -> DeployRecord | None:
    """The folder's `nexus-deploy.json`, or None when there is none.

    Raises:
        DeployError: the file is there but not one nexus wrote (or it was hand-edited out of shape).
    """
    path = folder / RECORD
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')!r}")
        files = data["files"]
        if not isinstance(files, list) or not all(
            isinstance(f, str) and f and "/" not in f and f not in (".", "..") for f in files
        ):
            raise ValueError("files is not a list of file names")
        return DeployRecord(
            target=str(data["target"]),
            release=str(data["release"]),
            root=str(data["root"]),
            uri=str(data["uri"]),
            files=tuple(files),
            nexus=str(data.get("nexus", "")),
        )
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise DeployError(
            f"{path} is not a nexus-deploy.json nexus can read ({e}); "
            f"restore it (`git checkout -- {path}`), or render into an empty folder"
        ) from None
