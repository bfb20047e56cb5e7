"""The one client for Triton's HTTP admin API: health, repository index, load/unload, readiness, config, stats.

Every part of NexusML that asks Triton about its models (status, hot swap, supervision, load tests,
the benchmark) goes through :class:`TritonAdmin`; nothing else speaks these endpoints. Answers are
typed (:class:`ModelCounters`, :class:`IndexEntry`), never dicts parsed anew by each caller.
Inference itself goes through `tritonclient` (:mod:`nexus.serving.predict`) or the load generators.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, fields
from typing import Any

from nexus.errors import TritonRequestError, TritonUnreachableError
from nexus.serving.endpoints import http_url

#: The header Triton checks on its model-repository API (load, unload, index) when `nexus serve` runs it.
API_KEY_HEADER = "nexus-api-key"
#: gRPC clients send the key under this metadata name (Triton prefixes restricted-protocol keys).
GRPC_API_KEY_HEADER = f"triton-grpc-protocol-{API_KEY_HEADER}"
#: Triton's health endpoints (also what a Deployment's probes ask).
LIVE_PATH = "/v2/health/live"
READY_PATH = "/v2/health/ready"


@dataclass(frozen=True)
class ModelCounters:
    """Triton's cumulative statistics for one model (all versions summed), from `/v2/models/M/stats`."""

    success: int = 0
    failure: int = 0
    inferences: int = 0
    executions: int = 0
    queue_ns: int = 0
    input_ns: int = 0
    infer_ns: int = 0
    output_ns: int = 0

    def __sub__(self, other: ModelCounters) -> ModelCounters:
        return ModelCounters(*(getattr(self, f.name) - getattr(other, f.name) for f in fields(self)))

    @property
    def average_batch(self) -> float | None:
        """Requests (samples) per executed batch."""
        return self.inferences / self.executions if self.executions else None

    def per_request_ms(self, ns: int) -> float | None:
        """``ns`` (one of the time totals) spread over the successful requests, in ms."""
        return ns / self.success / 1e6 if self.success else None

    @classmethod
    def parse(cls, stats: dict[str, Any]) -> ModelCounters:
        total = dict.fromkeys((f.name for f in fields(cls)), 0)
        for entry in stats.get("model_stats", []):
            inference = entry.get("inference_stats", {})
            for key, value in {
                "success": inference.get("success", {}).get("count", 0),
                "failure": inference.get("fail", {}).get("count", 0),
                "inferences": entry.get("inference_count", 0),
                "executions": entry.get("execution_count", 0),
                "queue_ns": inference.get("queue", {}).get("ns", 0),
                "input_ns": inference.get("compute_input", {}).get("ns", 0),
                "infer_ns": inference.get("compute_infer", {}).get("ns", 0),
                "output_ns": inference.get("compute_output", {}).get("ns", 0),
            }.items():
                total[key] += int(value)
        return cls(**total)


@dataclass(frozen=True)
class IndexEntry:
    """One model version in Triton's repository index."""

    name: str
    version: str
    state: str
    reason: str = ""


class TritonAdmin:
    """Triton's admin endpoints on one server.

    Args:
        address: `host:port`, `http://host:port` or `https://host:port`.
        key: the model-repository API key (`nexus serve` restricts load, unload and index to it).
        timeout: seconds per request; loads get their own, longer, timeout.
    """

    def __init__(self, address: str, *, key: str | None = None, timeout: float = 30) -> None:
        self.url = http_url(address)
        self.key = key
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"TritonAdmin({self.url!r})"

    # -- transport ---------------------------------------------------------------------------

    def _call(self, path: str, body: dict[str, Any] | None = None, timeout: float | None = None) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        headers = {API_KEY_HEADER: self.key} if self.key else {}
        request = urllib.request.Request(f"{self.url}{path}", data=data, headers=headers)  # noqa: S310 - Triton's URL
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout) as r:  # noqa: S310
                return int(r.status), r.read()
        except urllib.error.HTTPError as e:
            return int(e.code), e.read()
        except (urllib.error.URLError, OSError) as e:
            raise TritonUnreachableError(self.url, str(getattr(e, "reason", e))) from e

    def _json(self, what: str, path: str, body: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        status, answer = self._call(path, body, timeout)
        if status != 200:
            raise TritonRequestError(what, status, _reason(answer))
        return json.loads(answer) if answer else {}

    # -- health ------------------------------------------------------------------------------

    def is_live(self) -> bool:
        return self._call(LIVE_PATH)[0] == 200

    def is_ready(self) -> bool:
        """Server readiness; False (not an error) when nothing answers yet."""
        try:
            return self._call(READY_PATH, timeout=2)[0] == 200
        except TritonUnreachableError:
            return False

    def server_metadata(self) -> dict[str, Any]:
        """Name, version and extensions of the server."""
        metadata: dict[str, Any] = self._json("server metadata", "/v2")
        return metadata

    # -- models ------------------------------------------------------------------------------

    def index(self) -> list[IndexEntry]:
        """Every model version the repository holds, loaded or not."""
        entries = self._json(f"repository index on {self.url}", "/v2/repository/index", {})
        return [
            IndexEntry(e["name"], str(e.get("version", "")), e.get("state", ""), e.get("reason", "")) for e in entries
        ]

    def load(self, model: str, timeout: float = 300) -> None:
        """Ask Triton to (re)load ``model`` from its repository; Triton keeps the old version until then."""
        self._json(f"loading {model} on {self.url}", f"/v2/repository/models/{model}/load", {}, timeout)

    def unload(self, model: str, timeout: float = 300) -> None:
        self._json(f"unloading {model} on {self.url}", f"/v2/repository/models/{model}/unload", {}, timeout)

    def is_model_ready(self, model: str, version: int | None = None) -> bool:
        path = f"/v2/models/{model}" + (f"/versions/{version}" if version is not None else "") + "/ready"
        return self._call(path)[0] == 200

    def wait_model_ready(self, model: str, version: int, timeout: float = 300) -> bool:
        """Poll until ``version`` of ``model`` is READY; False when ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.is_model_ready(model, version):
                return True
            time.sleep(0.2)
        return False

    def model_versions(self, model: str) -> list[int] | None:
        """The versions Triton serves for ``model``; None when it does not know the model."""
        status, answer = self._call(f"/v2/models/{model}")
        if status != 200:
            return None
        return sorted(int(v) for v in json.loads(answer).get("versions", []))

    def ready_versions(self, model: str) -> list[int]:
        """The versions of ``model`` that are loaded and READY."""
        return [v for v in self.model_versions(model) or [] if self.is_model_ready(model, v)]

    def model_metadata(self, model: str) -> dict[str, Any]:
        """The model's inputs and outputs, with KServe datatypes and shapes (-1: any size; batch included)."""
        metadata: dict[str, Any] = self._json(f"metadata of {model} on {self.url}", f"/v2/models/{model}")
        return metadata

    def model_config(self, model: str, version: int | None = None) -> dict[str, Any]:
        """The config Triton loaded for ``model`` (its JSON form); with ``version``, the one that version serves.

        Without a version Triton answers for its latest available one, and while a reload hands over from
        one version to the next there may be none for a moment (404, "has no available versions").
        """
        path = f"/v2/models/{model}" + (f"/versions/{version}" if version is not None else "") + "/config"
        config: dict[str, Any] = self._json(f"config of {model} on {self.url}", path)
        return config

    def ready_config(self, model: str, tries: int = 3) -> dict[str, Any] | None:
        """The config the newest READY version of ``model`` serves; None when no version is READY.

        Asked by version, so a hand-over from one version to the next (when the unversioned path may
        answer 404) is no matter; a version unloaded between the two calls is asked again.
        """
        for attempt in range(tries):
            ready = self.ready_versions(model)
            if not ready:
                break
            try:
                return self.model_config(model, ready[-1])
            except TritonRequestError:
                if attempt == tries - 1:
                    raise
        return None

    def _stats(self, model: str) -> dict[str, Any]:
        stats: dict[str, Any] = self._json(f"statistics of {model} on {self.url}", f"/v2/models/{model}/stats")
        return stats

    def stats(self, model: str) -> ModelCounters:
        """Cumulative counters for ``model`` since it was loaded."""
        return ModelCounters.parse(self._stats(model))

    def batch_compute(self, model: str, size: int) -> tuple[int, int]:
        """(executions, compute ns) of ``model``'s batches of exactly ``size`` since it was loaded (all versions).

        Triton's ``batch_stats`` time the model's execute call per executed batch size, so this is the
        model's own compute for that size, without the queue or the request's input and output handling.
        """
        executions = ns = 0
        for entry in self._stats(model).get("model_stats", []):
            for batch in entry.get("batch_stats", []):
                if int(batch.get("batch_size", 0)) == size:
                    infer = batch.get("compute_infer", {})
                    executions += int(infer.get("count", 0))
                    ns += int(infer.get("ns", 0))
        return executions, ns


def _reason(answer: bytes) -> str:
    text = answer.decode(errors="replace")
    try:
        return str(json.loads(text).get("error", text))
    except (ValueError, AttributeError):
        return text
