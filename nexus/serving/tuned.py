"""`.nexus_serving.json`: the git-tracked serving options `nexus tune` chose, model by model.

Layout (next to `.nexus_meta.json`, at the project root)::

    {
      "format": 1,
      "models": {
        "prod_model": {
          "options": {"max_batch_size": 16, "max_queue_delay_us": 10000, "batching": true, "policy": "adaptive",
                      "instances": 2, "kind": "auto", "priority_levels": 0, "max_queue_size": 0,
                      "warmup": false, "torch_threads": 1},
          "tuned": {"target": {"percentile": 99, "ms": 20}, "served_rate": 812.0,
                    "spread": {"min": 790.0, "median": 812.0, "max": 830.0}, "version": 3, "commit": "<40 hex>",
                    "machine": {"cpu": "...", "cores": 2}, "date": "2026-12-02T10:00:00Z",
                    "report": ".nexus/tune/prod_model/20261202T100000Z"}
        }
      }
    }

`nexus publish` (and :func:`nexus.serving.publish` without ``options``) serves a model with its
recorded options; options typed on the command line override them field by field. The file is
replaced atomically; other models' entries are kept.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nexus.atomic import atomic_write_text
from nexus.errors import NexusError, ServingRecordError
from nexus.serving.model_config import ServingOptions

if TYPE_CHECKING:
    from nexus.registry import Project

SERVING_FILE = ".nexus_serving.json"
FORMAT = 1


@dataclass(frozen=True)
class Tuning:
    """One model's entry: the options to serve it with, and how they were found (``tuned``, free-form JSON)."""

    options: ServingOptions
    tuned: dict[str, Any]

    def describe(self) -> str:
        """`tuned for p99 ≤ 20 ms, .nexus_serving.json` (or without the target when it is not recorded)."""
        target = self.tuned.get("target")
        if isinstance(target, dict) and {"percentile", "ms"} <= set(target):
            return f"tuned for p{target['percentile']:g} ≤ {target['ms']:g} ms, {SERVING_FILE}"
        return f"recorded in {SERVING_FILE}"


def serving_file(project: Project) -> Path:
    return project.root / SERVING_FILE


def read_tunings(project: Project) -> dict[str, Tuning]:
    """Every model's entry; empty when the file does not exist.

    Raises:
        ServingRecordError: the file is not valid JSON or not in this layout.
    """
    path = serving_file(project)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ServingRecordError(path, f"not JSON: {e}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("models"), dict):
        raise ServingRecordError(path, f'expected {{"format": {FORMAT}, "models": {{...}}}}')
    return {name: _tuning(path, name, entry) for name, entry in data["models"].items()}


def recorded(project: Project, model: str) -> Tuning | None:
    return read_tunings(project).get(model)


def recorded_options(project: Project, model: str) -> ServingOptions | None:
    """The options recorded for ``model``, or None."""
    found = recorded(project, model)
    return found.options if found is not None else None


def record(project: Project, model: str, options: ServingOptions, tuned: dict[str, Any]) -> Path:
    """Record ``options`` for ``model`` (replacing its entry, keeping the others); returns the file written."""
    options.validate()
    path = serving_file(project)
    tunings = read_tunings(project)
    tunings[model] = Tuning(options, tuned)
    body = {
        "format": FORMAT,
        "models": {name: {"options": asdict(t.options), "tuned": t.tuned} for name, t in sorted(tunings.items())},
    }
    atomic_write_text(path, json.dumps(body, indent=2, ensure_ascii=False) + "\n")
    return path


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "max_batch_size": (int,),
    "max_queue_delay_us": (int,),
    "batching": (bool,),
    "policy": (str,),
    "instances": (int, type(None)),
    "kind": (str,),
    "priority_levels": (int,),
    "max_queue_size": (int,),
    "warmup": (bool,),
    "torch_threads": (int,),
}
if set(_FIELD_TYPES) != {f.name for f in fields(ServingOptions)}:  # pragma: no cover - a field added to one only
    raise ImportError("nexus.serving.tuned: _FIELD_TYPES must list every ServingOptions field")


def _tuning(path: Path, model: str, entry: Any) -> Tuning:
    if not isinstance(entry, dict) or not isinstance(entry.get("options"), dict):
        raise ServingRecordError(path, f'{model}: expected {{"options": {{...}}, "tuned": {{...}}}}')
    raw = entry["options"]
    for name, value in raw.items():
        kinds = _FIELD_TYPES.get(name)
        if kinds is None:
            raise ServingRecordError(path, f"{model}: unknown option {name!r}")
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise ServingRecordError(path, f"{model}: {name} is {value!r}")
    options = ServingOptions(**raw)
    try:
        options.validate()
    except NexusError as e:
        raise ServingRecordError(path, f"{model}: {e}") from None
    tuned = entry.get("tuned", {})
    return Tuning(options, tuned if isinstance(tuned, dict) else {})
