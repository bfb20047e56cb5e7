"""Does a server run a release's models as the release renders them? Triton's loaded config against the
release's `config.pbtxt`, on the fields that change how a model is served.

Triton fills in much of a config when it loads one (instance group names, `KIND_AUTO` resolved to a
device, optimisation defaults), so the two are not compared whole: only the batch size, the dynamic
batcher, the instance groups (count, and kind unless the release leaves it to Triton) and NexusML's
own parameters (artifact, sha256, commit, batching policy, torch threads).
"""

from __future__ import annotations

import io
from typing import Any

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from nexus.errors import StorageError, TritonError
from nexus.release.listing import ReleaseRoot
from nexus.release.manifest import Release
from nexus.serving.admin import TritonAdmin
from nexus.serving.model_config import ModelConfig, parse_config
from nexus.serving.repository import CONFIG

_AUTO = model_config_pb2.ModelInstanceGroup.Kind.Value("KIND_AUTO")


def serving_differences(released: Any, served: Any) -> list[str]:
    """What differs between a release's `ModelConfig` and the one Triton loaded, in words (empty: the same)."""
    found = []
    if released.max_batch_size != served.max_batch_size:
        found.append(f"max_batch_size {served.max_batch_size}, the release has {released.max_batch_size}")
    if released.HasField("dynamic_batching") != served.HasField("dynamic_batching"):
        found.append("dynamic batching " + ("off" if released.HasField("dynamic_batching") else "on"))
    elif json_format.MessageToDict(released.dynamic_batching) != json_format.MessageToDict(served.dynamic_batching):
        found.append("another dynamic batching")
    if _groups_differ(released, served):
        found.append("other instance groups")
    if _parameters(released) != _parameters(served):
        found.append("other nexus parameters (artifact, commit or serving options)")
    return found


def _groups_differ(released: Any, served: Any) -> bool:
    """Instance counts differ, or a kind the release names (`KIND_AUTO` is Triton's to resolve)."""
    if len(released.instance_group) != len(served.instance_group):
        return True
    return any(
        (r.count or 1) != (s.count or 1) or (r.kind != _AUTO and r.kind != s.kind)
        for r, s in zip(released.instance_group, served.instance_group, strict=True)
    )


def _parameters(config: Any) -> dict[str, str]:
    return {key: value.string_value for key, value in config.parameters.items() if key.startswith("nexus_")}


class ConfigMatcher:
    """Compares servers with releases model by model; each release's `config.pbtxt` is downloaded once."""

    def __init__(self, where: ReleaseRoot) -> None:
        self.where = where
        self._released: dict[tuple[str, str], Any] = {}

    def released(self, release: Release, model: str) -> Any | None:
        """The release's `ModelConfig` for ``model``; None when it cannot be read or parsed."""
        key = (release.id, model)
        if key not in self._released:
            buffer = io.BytesIO()
            try:
                self.where.storage.download(f"{release.id}/{model}/{CONFIG}", buffer)
                self._released[key] = parse_config(buffer.getvalue().decode("utf-8"))
            except (StorageError, UnicodeDecodeError, text_format.ParseError):
                self._released[key] = None
        return self._released[key]

    def differences(self, admin: TritonAdmin, release: Release) -> list[str]:
        """How ``admin``'s server serves ``release``'s models otherwise than the release renders them."""
        found = []
        for model in release.models:
            released = self.released(release, model.name)
            if released is None:
                found.append(f"{model.name}: the release's {CONFIG} cannot be read")
                continue
            try:
                serving = admin.ready_config(model.name)
                if serving is None:
                    found.append(f"{model.name}: no version is READY")
                    continue
                served = json_format.ParseDict(serving, ModelConfig(), ignore_unknown_fields=True)
            except (TritonError, json_format.ParseError) as e:
                found.append(f"{model.name}: Triton's config cannot be read ({e})")
                continue
            found.extend(f"{model.name}: {d}" for d in serving_differences(released, served))
        return found
