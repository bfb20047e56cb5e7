"""What a tuning run found: one :class:`Evaluation` per configuration measured, and the :class:`TuneResult`."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from nexus.machine import cores, cpu_model
from nexus.registry.metadata import ModelVersion
from nexus.serving.model_config import ServingOptions
from nexus.tune.rates import Probe
from nexus.tune.space import label
from nexus.tune.target import Target

T = TypeVar("T")


@dataclass
class Evaluation:
    """One configuration: the rate it serves under the target, and every probe that found it.

    Attributes:
        served: the highest offered rate that passed (0: none did, or it did not load: ``error``).
        at: the probe at that rate (its percentile latency and batch size are the frontier's).
        coarse: the search stopped early (the configuration could not beat the best): ``served`` is a lower bound.
        reference_ms: the machine's speed when it was measured: one batch-of-one forward pass
            (:mod:`nexus.tune.reference`; None when it could not be measured).
    """

    options: ServingOptions
    served: float = 0.0
    at: Probe | None = None
    capacity: float = 0.0
    probes: list[Probe] = field(default_factory=list)
    bursts: list[Probe] = field(default_factory=list)
    load_s: float = 0.0
    measure_s: float = 0.0
    coarse: bool = False
    error: str | None = None
    reference_ms: float | None = None

    @property
    def label(self) -> str:
        return label(self.options)


#: The machine's speed moved too much for a run's figures to be compared when its slowest reference is this
#: many times its fastest.
DRIFT_WARNING = 1.25


@dataclass(frozen=True)
class Spread:
    """One figure over repeated measurements: the winner's served rate (the search's and the reruns'), or the
    machine's reference speed over a run."""

    rates: tuple[float, ...]

    @property
    def min(self) -> float:
        return min(self.rates)

    @property
    def median(self) -> float:
        return float(statistics.median(self.rates))

    @property
    def max(self) -> float:
        return max(self.rates)


@dataclass
class Contender:
    """A configuration that finished near the top of the search, measured again: its served rates in all."""

    evaluation: Evaluation
    reruns: list[Evaluation] = field(default_factory=list)

    @property
    def spread(self) -> Spread:
        return Spread((self.evaluation.served, *(r.served for r in self.reruns)))


def serpentine(items: Sequence[T], rounds: int) -> list[T]:
    """``items`` in ``rounds`` rounds, every other one backwards (A B C, C B A, A B C, ...).

    Two things follow. A drift of the machine's speed that is steady over the rounds falls on every item
    alike (A B C, A B C leaves the last item of each round later than the first, every time). And each
    round starts with the configuration the one before ended with, which Triton still serves, so that
    search needs no reload.
    """
    return [item for r in range(rounds) for item in (items if r % 2 == 0 else items[::-1])]


def choose(contenders: list[Contender]) -> Contender:
    """The contender with the highest median served rate; on a tie, the one listed first (the search's best)."""
    return max(contenders, key=lambda c: c.spread.median)


@dataclass(frozen=True)
class Machine:
    cpu: str
    cores: int

    @classmethod
    def this(cls) -> Machine:
        return cls(cpu_model(), cores())


@dataclass
class TuneResult:
    """A finished run.

    Attributes:
        evaluations: every configuration measured, in order (the first is the start: the defaults).
        winner: the contender with the highest median rate; ``reruns`` its extra measurements, ``spread`` all
            of its served rates.
        contenders: the search's best few, each measured again (the winner among them); the first is the
            search's best.
        runner_up: the next best configuration (by median among the contenders, else by the search);
            ``runner_up_within_spread`` when it served at least the winner's lowest rate (the machine's noise
            cannot tell them apart).
        stopped: why the search ended: converged, exhausted or budget.
        record: `.nexus_serving.json`, when the winner was recorded there.
        applied: the server the winner was switched into (`--apply`).
    """

    model: str
    version: ModelVersion
    target: Target
    evaluations: list[Evaluation]
    winner: Evaluation
    reruns: list[Evaluation]
    spread: Spread
    runner_up: Evaluation | None
    stopped: str
    elapsed_s: float
    machine: Machine
    date: str
    report: Path | None = None
    files: list[Path] = field(default_factory=list)
    record: Path | None = None
    applied: str | None = None
    contenders: list[Contender] = field(default_factory=list)

    @property
    def runner_up_rate(self) -> float:
        """The runner-up's median over its measurements (its search's rate when it was not measured again)."""
        if self.runner_up is None:
            return 0.0
        again = [c for c in self.contenders if c.evaluation is self.runner_up]
        return again[0].spread.median if again else self.runner_up.served

    @property
    def runner_up_within_spread(self) -> bool:
        return self.runner_up is not None and self.runner_up_rate >= self.spread.min

    @property
    def measured(self) -> list[Evaluation]:
        """Every search of the run: the evaluations and the contenders' reruns."""
        return [*self.evaluations, *(r for c in self.contenders for r in c.reruns)]

    @property
    def speed(self) -> Spread | None:
        """The machine's reference speed (ms of one batch of one) over every search; None if never measured."""
        references = tuple(e.reference_ms for e in self.measured if e.reference_ms is not None)
        return Spread(references) if references else None

    @property
    def drift(self) -> float | None:
        """The slowest reference over the fastest: how far the machine's speed moved during the run."""
        speed = self.speed
        return speed.max / speed.min if speed is not None and speed.min > 0 else None

    @property
    def frontier(self) -> list[Evaluation]:
        """Every configuration, best first."""
        return sorted(self.evaluations, key=lambda e: -e.served)
