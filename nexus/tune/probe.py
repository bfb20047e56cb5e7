"""A candidate on the tuner's own Triton: apply its options, and measure one open-loop window at a rate.

A candidate is applied through Triton's model-repository API as `nexus publish` does it: its
`config.pbtxt` is rendered (the same :func:`~nexus.serving.model_config.render_config` publish uses)
into the tuner's temporary repository and the model is loaded again (``POST .../load``). Triton 2.51
skips a load whose files did not change; a changed `config.pbtxt` is a change, so every distinct
candidate is really reloaded, and applying the one already loaded costs nothing.

:func:`measure_rate` is the one place a rate is measured: the open-loop client
(:func:`nexus.loadtest.openloop.run_open_loop`), latency counted from each request's scheduled time,
and Triton's statistics around it for the executed batch size.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nexus.atomic import atomic_write_text
from nexus.errors import TritonRequestError, TuneError
from nexus.loadtest.openloop import OpenLoopResult, OpenLoopSettings, run_open_loop
from nexus.registry.metadata import ModelVersion
from nexus.serving.admin import TritonAdmin
from nexus.serving.model_config import ServingOptions, config_to_text, instance_count, render_config
from nexus.serving.repository import CONFIG
from nexus.tensors import Signature
from nexus.tune.rates import Probe

#: Requests a probe window holds at the least (within 4x its length).
MIN_SAMPLES = 200


@dataclass(frozen=True)
class Workload:
    """What every request of a probe sends: one sample of the model's signature, and the answer's size."""

    inputs: dict[str, np.ndarray[Any, Any]]
    outputs: list[str]
    output_bytes: int | None

    @classmethod
    def of(cls, signature: Signature, batched: bool = True) -> Workload:
        """One random sample (batch 1 when batched; dynamic sizes 1): normal floats, zeros otherwise."""
        rng = np.random.default_rng(0)
        inputs = {}
        for spec in signature.inputs:
            dtype = np.dtype(spec.servable_dtype().numpy or "float32")
            dims = [d if d > 0 else 1 for d in (spec.shape[1:] if batched else spec.shape)]
            shape = [1, *dims] if batched else dims
            floating = np.issubdtype(dtype, np.floating)
            inputs[spec.name] = rng.standard_normal(shape).astype(dtype) if floating else np.zeros(shape, dtype)
        total: int | None = 0
        for spec in signature.outputs:
            dims = spec.shape[1:] if batched else spec.shape
            numpy_name = spec.servable_dtype().numpy
            if total is None or numpy_name is None or any(d < 0 for d in dims):
                total = None
                continue
            total += math.prod(dims) * np.dtype(numpy_name).itemsize
        return cls(inputs, [s.name for s in signature.outputs], total)


@dataclass(frozen=True)
class Windows:
    """How long each probe sends: ``seconds`` measured after ``warmup``, answers due within ``timeout``."""

    seconds: float
    warmup: float
    timeout: float


def measure_rate(
    url: str,
    model: str,
    workload: Workload,
    rate: float,
    windows: Windows,
    percentile: float,
    connections: int = 256,
    late_ms: float = 1.0,
) -> Probe:
    """One open-loop window at ``rate`` requests/s against ``model``: latency at ``percentile``, errors, batch size.

    The window is stretched (up to 4x) to hold :data:`MIN_SAMPLES` requests, so that a high percentile at a
    low rate is more than the slowest request or two. A send later than ``late_ms`` counts as late.
    """
    admin = TritonAdmin(url)
    seconds = min(4 * windows.seconds, max(windows.seconds, MIN_SAMPLES / rate))
    before = admin.stats(model)
    settings = OpenLoopSettings(
        url,
        model,
        workload.inputs,
        workload.outputs,
        output_bytes=workload.output_bytes,
        rate=rate,
        duration=seconds,
        warmup=windows.warmup,
        max_connections=connections,
        timeout=windows.timeout,
        late_ms=late_ms,
        percentiles=(percentile,),
    )
    result: OpenLoopResult = run_open_loop(settings)
    delta = admin.stats(model) - before
    return Probe(
        offered=rate,
        achieved=result.achieved_rate,
        seconds=seconds,
        sent=result.sent,
        late=result.late,
        errors=result.errors,
        p50_ms=result.latency.p50,
        p90_ms=result.latency.p90,
        p99_ms=result.latency.p99,
        latency_ms=result.latency.at(percentile),
        avg_batch=delta.average_batch,
        first_error=result.first_error,
        scheduled=result.scheduled,
    )


def burst_connections(options: ServingOptions, version: ModelVersion) -> int:
    """Connections that keep a configuration busy: twice instances x max batch size (4 to 256)."""
    batch = options.max_batch_size if options.batching else 1
    return max(4, min(256, 2 * instance_count(options, version) * batch))


class Candidates:
    """The tuner's model on its own Triton: applies one candidate's options at a time."""

    def __init__(
        self, url: str, repository: Path, version: ModelVersion, signature: Signature, artifact: str, loaded: str
    ) -> None:
        self.admin = TritonAdmin(url)
        self.url, self.version, self.signature, self.artifact = url, version, signature, artifact
        self.config_path = repository / version.model_name / CONFIG
        self.loaded = loaded

    def render(self, options: ServingOptions) -> str:
        return config_to_text(
            render_config(self.version.model_name, self.version, self.signature, options, self.artifact)
        )

    def apply(self, options: ServingOptions, timeout: float = 300) -> float:
        """Serve ``options`` and wait until the model is READY; the seconds it took (0 when already served).

        Raises:
            TuneError: Triton could not load the model so configured (the reason is Triton's).
        """
        text = self.render(options)
        if text == self.loaded:
            return 0.0
        start = time.monotonic()
        atomic_write_text(self.config_path, text)
        self.loaded = ""  # unknown until the load succeeds
        model, number = self.version.model_name, self.version.version
        try:
            self.admin.load(model, timeout=timeout)
        except TritonRequestError as e:
            raise TuneError(f"Triton could not load {model} so configured: {e.reason}") from e
        if not self.admin.wait_model_ready(model, number, timeout):
            raise TuneError(f"{model} v{number} was not READY after {timeout:.0f}s")
        self.loaded = text
        return time.monotonic() - start
