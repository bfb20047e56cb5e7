"""Latency targets as a user types them: `--p99 20ms`, `--target p95=15ms`; latencies as `20ms`, `0.02s`, `500us`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from nexus.errors import TuneError

_LATENCY = re.compile(r"^(?P<value>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>ms|s|us|µs)$")
_TARGET = re.compile(r"^p(?P<percentile>\d+(?:\.\d+)?)\s*(?:=|<=|≤|<|:)\s*(?P<latency>.+)$")
_UNIT_MS = {"ms": 1.0, "s": 1000.0, "us": 0.001, "µs": 0.001}

LATENCY_FORMS = "20ms, 0.02s or 500us"
TARGET_FORMS = "p99=20ms, p95=15ms or p50=0.005s"


@dataclass(frozen=True)
class Target:
    """A latency percentile and the most it may be: p99 ≤ 20 ms is ``Target(99, 20.0)``."""

    percentile: float
    ms: float

    @property
    def name(self) -> str:
        """`p99`, `p99.9`."""
        return f"p{self.percentile:g}"

    @property
    def us(self) -> int:
        return round(self.ms * 1000)

    def __str__(self) -> str:
        return f"{self.name} ≤ {format_ms(self.ms)}"


def format_ms(ms: float) -> str:
    """`20 ms`, `0.5 ms`, `1.5 s`."""
    return f"{ms / 1000:g} s" if ms >= 1000 else f"{ms:g} ms"


def parse_latency(text: str) -> float:
    """`20ms`, `0.02s` or `500us` -> milliseconds (a unit is required; the value must be positive)."""
    match = _LATENCY.match(text.strip().lower())
    if match is None or float(match["value"]) <= 0:
        raise TuneError(f"cannot read the latency {text!r}; write a positive time with its unit: {LATENCY_FORMS}")
    return float(match["value"]) * _UNIT_MS[match["unit"]]


def parse_target(text: str) -> Target:
    """`p99=20ms` (also `p99<=20ms`, `p99:20ms`) -> ``Target(99, 20.0)``."""
    match = _TARGET.match(text.strip().lower())
    if match is None:
        raise TuneError(f"cannot read the target {text!r}; write PERCENTILE=LATENCY, e.g. {TARGET_FORMS}")
    return Target(_percentile(match["percentile"]), parse_latency(match["latency"]))


def _percentile(text: str) -> float:
    value = float(text)
    if not 0 < value < 100:
        raise TuneError(f"the percentile p{text} is not between 0 and 100; write e.g. {TARGET_FORMS}")
    return value


def target_from_options(target: str | None, **percentiles: str | None) -> Target:
    """The one target given as ``--target pNN=LATENCY`` or as ``--pNN LATENCY`` (``p99="20ms"``).

    Raises:
        TuneError: none, or more than one, was given, or one cannot be read.
    """
    given = [parse_target(target)] if target is not None else []
    given += [Target(_percentile(name.removeprefix("p")), parse_latency(v)) for name, v in percentiles.items() if v]
    if len(given) != 1:
        raise TuneError(
            f"give one latency target, e.g. --p99 20ms or --target p95=15ms ({len(given)} given); "
            f"latencies are written {LATENCY_FORMS}"
        )
    return given[0]
