"""What one `nexus tune` run is asked to do: :class:`TuneSettings`, and the search's shape that follows from it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from nexus.errors import TuneError
from nexus.names import validate_model_name
from nexus.tune.probe import Windows
from nexus.tune.session import SearchShape
from nexus.tune.space import FULL_SPACE, QUICK_SPACE, Space
from nexus.tune.target import Target

#: Measurements of the winner in all: the search's, and this many less one again.
MEASUREMENTS = 3


@dataclass(frozen=True)
class TuneSettings:
    """What `nexus tune` runs.

    Attributes:
        budget: seconds for the whole run (start-up and the winner's reruns included); default 10
            minutes, 2 with ``quick``. The search stops once another configuration would not fit.
        quick: the smaller grid (:data:`~nexus.tune.space.QUICK_SPACE`), 1 s windows, a coarser rate search.
        seconds: each rate window (default 2 s, quick 1 s), after a quarter of it as warm-up.
        apply_to: a running server to hot-swap the winner into (`nexus publish` with the winner's options).
        space: another grid (benchmarks, tests).
        exhaustive: measure every configuration of the grid, each with the full rate search (a benchmark's
            reference; the budget still applies), instead of climbing.
        reruns: measurements of the winner after the search's (2: three in all).
    """

    model: str
    target: Target
    version: int | None = None
    commit: str | None = None
    budget: float | None = None
    quick: bool = False
    seconds: float | None = None
    apply_to: str | None = None
    record: bool = True
    out: Path | None = None
    space: Space | None = None
    min_gain: float = 0.05
    tritonserver: Path | None = None
    exhaustive: bool = False
    reruns: int = MEASUREMENTS - 1

    def check(self) -> None:
        validate_model_name(self.model)
        if self.budget is not None and not self.budget > 0:
            raise TuneError("the budget must be positive; write e.g. --budget 10m")
        if self.reruns < 0:
            raise TuneError("reruns must be 0 or more")
        if self.seconds is not None and not self.seconds > 0:
            raise TuneError("the window must be positive")

    @property
    def budget_s(self) -> float:
        return self.budget if self.budget is not None else (120.0 if self.quick else 600.0)

    @property
    def grid(self) -> Space:
        return self.space or (QUICK_SPACE if self.quick else FULL_SPACE)

    def shape(self) -> SearchShape:
        seconds = self.seconds or (1.0 if self.quick else 2.0)
        # answers overdue by 10x the target (0.5 s at least) are errors: an overloaded window ends soon
        timeout = min(10.0, max(0.5, self.target.ms / 100))
        windows = Windows(seconds, seconds / 4, timeout)
        burst = Windows(max(0.5, seconds / 2), 0.25, 1.0)
        return SearchShape(windows, burst, resolution=0.1 if self.quick else 0.05, max_probes=10 if self.quick else 13)

    def report_folder(self, root: Path, when: datetime, suffix: str = "") -> Path:
        """Where a run's files go: ``<out>/<model>/<UTC time><suffix>``, ``out`` by default ``<root>/.nexus/tune``."""
        out = self.out or root / ".nexus" / "tune"
        return out / self.model / (when.strftime("%Y%m%dT%H%M%SZ") + suffix)
