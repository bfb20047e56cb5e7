"""`nexus loadtest --rate R`: open-loop load on a served model, with Triton's own statistics for the same run.

The model's metadata (`/v2/models/MODEL`) says what to send: random valid tensors, built once the way
`loadtest/locustfile.py` builds them (``batch_size`` samples; other variable dimensions 1; normal
floats, small non-negative integers), sent as binary tensors by :func:`nexus.loadtest.openloop.run_open_loop`
at ``rate`` requests a second. Triton's statistics before and after give the server-side split (queue,
compute input, infer, output per request, and the executed batch size) for the same run.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from nexus.errors import LoadTestError, TritonError
from nexus.loadtest.openloop import OpenLoopResult, OpenLoopSettings, PriorityShare, run_open_loop
from nexus.loadtest.runner import LoadTestSettings, check_model
from nexus.serving.admin import ModelCounters, TritonAdmin
from nexus.tensors import DTYPES

#: KServe v2 data types -> numpy dtypes (BF16 has none)
NUMPY = {d.triton: np.dtype(d.numpy) for d in DTYPES.values() if d.numpy}
_SHARE = re.compile(r"^(?P<percent>\d+(?:\.\d+)?)%:(?P<priority>\d+)$")


@dataclass(frozen=True)
class RateReport:
    settings: LoadTestSettings
    result: OpenLoopResult
    #: Triton's statistics over the run, or why there are none
    triton: ModelCounters | str


def parse_priority_mix(text: str) -> tuple[PriorityShare, ...]:
    """`5%:1` or `5%:1,20%:2` (SHARE%:PRIORITY, comma-separated) -> the shares."""
    shares = []
    for part in text.split(","):
        match = _SHARE.match(part.strip())
        if match is None:
            raise LoadTestError(
                f"cannot read the priority mix {text!r}; write SHARE%:PRIORITY, e.g. 5%:1 or 5%:1,20%:3"
            )
        shares.append(PriorityShare(float(match["percent"]) / 100, int(match["priority"])))
    if any(not 0 < s.share < 1 for s in shares) or sum(s.share for s in shares) >= 1:
        raise LoadTestError(f"the shares of {text!r} must each be above 0% and add up to under 100%")
    return tuple(shares)


def request_tensors(
    metadata: dict[str, Any], config: dict[str, Any], batch_size: int
) -> tuple[dict[str, npt.NDArray[Any]], list[str], int | None]:
    """The inputs of one request, the output names, and the raw output bytes of a good answer.

    The bytes are None when an output's size is not known beforehand (a variable dimension, strings).
    """
    batched = int(config.get("max_batch_size", 0)) > 0
    rng = np.random.default_rng(0)
    inputs = {}
    for tensor in metadata["inputs"]:
        dtype = NUMPY.get(tensor["datatype"])
        if dtype is None:
            raise LoadTestError(
                f"input {tensor['name']!r} is {tensor['datatype']}; the load test sends numeric tensors"
            )
        shape = [batch_size if batched and i == 0 else (d if d > 0 else 1) for i, d in enumerate(tensor["shape"])]
        if dtype.kind == "f":
            inputs[tensor["name"]] = rng.standard_normal(shape).astype(dtype)
        else:
            inputs[tensor["name"]] = rng.integers(0, 2 if dtype.kind == "b" else 10, shape).astype(dtype)
    total: int | None = 0
    for tensor in metadata["outputs"]:
        shape = [batch_size if batched and i == 0 else int(d) for i, d in enumerate(tensor["shape"])]
        datatype = tensor["datatype"]
        itemsize = 2 if datatype == "BF16" else (NUMPY[datatype].itemsize if datatype in NUMPY else 0)
        if total is not None and itemsize and min(shape, default=1) >= 0:
            total += math.prod(shape) * itemsize
        else:
            total = None
    return inputs, [t["name"] for t in metadata["outputs"]], total


def run_rate_test(settings: LoadTestSettings) -> RateReport:
    """Drive ``settings.model`` at ``settings.rate`` requests a second for ``settings.duration`` seconds.

    Errors in the answers are counted in the report, not raised; bad settings and an unreachable or
    unready server raise :class:`nexus.errors.NexusError`.
    """
    settings.check()
    if settings.rate is None:
        raise LoadTestError("give --rate REQUESTS_PER_SECOND for an open-loop load test")
    admin = TritonAdmin(settings.server)
    config = check_model(admin, settings)
    inputs, outputs, output_bytes = request_tensors(admin.model_metadata(settings.model), config, settings.batch_size)
    open_loop = OpenLoopSettings(
        server=admin.url,
        model=settings.model,
        inputs=inputs,
        outputs=outputs,
        output_bytes=output_bytes,
        rate=settings.rate,
        duration=settings.duration,
        priority=settings.priority,
        mix=settings.priority_mix,
    )
    before = admin.stats(settings.model)
    result = run_open_loop(open_loop)
    try:
        triton: ModelCounters | str = admin.stats(settings.model) - before
    except TritonError as e:  # the model went away during the run: the client's figures still stand
        triton = f"Triton's statistics are unavailable after the run ({e})"
    return RateReport(settings, result, triton)
