"""One tuning session on the tuner's own Triton: evaluate configurations (apply, capacity, rate search) in a budget."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from nexus.errors import TritonUnreachableError, TuneError
from nexus.registry.metadata import ModelVersion
from nexus.serving.model_config import ServingOptions
from nexus.serving.server import TritonServer
from nexus.tune.probe import Candidates, Windows, Workload, burst_connections, measure_rate
from nexus.tune.rates import Probe, estimate_capacity, passes, rate_search
from nexus.tune.reference import reference_ms
from nexus.tune.results import Evaluation
from nexus.tune.target import Target


def _ignore(*_: object) -> None:
    pass


@dataclass(frozen=True)
class TuneHooks:
    """What :func:`nexus.tune.tune` tells its caller as it goes; each defaults to nothing (the library never prints)."""

    #: The tuner's Triton is ready (its URL).
    started: Callable[[str], None] = _ignore
    #: A configuration is about to be applied and measured.
    evaluating: Callable[[ServingOptions], None] = _ignore
    probed: Callable[[Probe], None] = _ignore
    evaluated: Callable[[Evaluation], None] = _ignore
    message: Callable[[str], None] = _ignore


@dataclass(frozen=True)
class SearchShape:
    """How finely one configuration's rate is searched."""

    windows: Windows
    burst: Windows
    resolution: float
    max_probes: int
    #: Windows spent on a configuration after it failed the rate it had to pass to beat the best.
    coarse: int = 2
    #: Steps above a capacity that passed (:func:`~nexus.tune.rates.rate_search`).
    above: int = 3


class Session:
    """Evaluates configurations one after another on one served model, and keeps the clock."""

    def __init__(
        self,
        candidates: Candidates,
        workload: Workload,
        target: Target,
        shape: SearchShape,
        deadline: float,
        hooks: TuneHooks,
        server: TritonServer | None = None,
    ) -> None:
        self.candidates, self.workload, self.target, self.shape = candidates, workload, target, shape
        self.deadline, self.hooks, self.server = deadline, hooks, server
        self.evaluations: list[Evaluation] = []

    @property
    def version(self) -> ModelVersion:
        return self.candidates.version

    def ok(self, probe: Probe) -> bool:
        return passes(probe, self.target.ms)

    def _probe(self, rate: float, windows: Windows, connections: int = 256) -> Probe:
        try:
            probe = self._measure(rate, windows, connections)
        except TritonUnreachableError as e:
            if self.server is not None and not self.server.is_alive():
                raise TuneError(f"the tuner's tritonserver exited while measuring: {self.server.errors(3)}") from e
            raise
        self.hooks.probed(probe)
        return probe

    def _measure(self, rate: float, windows: Windows, connections: int) -> Probe:
        return measure_rate(
            self.candidates.url,
            self.version.model_name,
            self.workload,
            rate,
            windows,
            self.target.percentile,
            connections,
            late_ms=max(1.0, self.target.ms / 4),
        )

    def evaluate(self, options: ServingOptions, beat: float | None = None, tie: float | None = None) -> Evaluation:
        """Apply ``options`` and find the rate they serve under the target.

        Args:
            beat: the rate a configuration must serve to matter (the best so far plus the climb's gain);
                its search starts there, and stops after :attr:`SearchShape.coarse` more windows if it fails.
            tie: with ``beat``, the rate tried first after failing it (the best so far less the climb's
                gain): passing it, the configuration is within reach of the best.
        """
        self.hooks.evaluating(options)
        evaluation = Evaluation(options)
        try:
            evaluation.load_s = self.candidates.apply(options)
        except TuneError as e:
            evaluation.error = str(e)
            self.hooks.message(f"{evaluation.label}: {e}")
            self._done(evaluation)
            return evaluation
        start = time.monotonic()
        evaluation.reference_ms = self.reference()
        known = [e.capacity for e in self.evaluations if e.capacity > 0]
        connections = burst_connections(options, self.version)

        def burst(rate: float) -> float:
            probe = self._probe(rate, self.shape.burst, connections)
            evaluation.bursts.append(probe)
            return probe.achieved

        evaluation.capacity = estimate_capacity(burst, 2 * max(known, default=500.0))
        self.search(evaluation, first=beat, coarse=self.shape.coarse if beat else None, fallback=tie)
        evaluation.measure_s = time.monotonic() - start
        self._done(evaluation)
        return evaluation

    def search(
        self,
        evaluation: Evaluation,
        first: float | None = None,
        coarse: int | None = None,
        fallback: float | None = None,
    ) -> None:
        """The rate search of :mod:`nexus.tune.rates` on the applied configuration, into ``evaluation``."""
        found = rate_search(
            lambda rate: self._probe(rate, self.shape.windows),
            self.ok,
            evaluation.capacity,
            first=first,
            resolution=self.shape.resolution,
            max_probes=self.shape.max_probes,
            coarse=coarse,
            fallback=fallback,
            above=self.shape.above,
        )
        evaluation.probes += found.probes
        evaluation.served, evaluation.at, evaluation.coarse = found.rate, found.served, found.coarse

    def remeasure(self, winner: Evaluation) -> Evaluation:
        """The winner measured again: applied (if another configuration is loaded) and its rate searched anew,
        starting at the rate it served."""
        again = Evaluation(winner.options, capacity=winner.capacity)
        again.load_s = self.candidates.apply(winner.options)
        start = time.monotonic()
        again.reference_ms = self.reference()
        self.search(again, first=winner.served if winner.served > 0 else None)
        again.measure_s = time.monotonic() - start
        return again

    def reference(self) -> float | None:
        """The machine's speed now: one batch-of-one forward pass, in ms (:mod:`nexus.tune.reference`)."""
        return reference_ms(self.candidates.url, self.version.model_name, self.workload)

    def _done(self, evaluation: Evaluation) -> None:
        self.evaluations.append(evaluation)
        self.hooks.evaluated(evaluation)

    # -- the clock -------------------------------------------------------------------------

    def mean_cost(self) -> tuple[float, float]:
        """(load, measure) seconds of an evaluation so far, on average."""
        done = [e for e in self.evaluations if e.error is None] or [Evaluation(ServingOptions())]
        return sum(e.load_s for e in done) / len(done), sum(e.measure_s for e in done) / len(done)

    def time_for_reruns(self, contenders: int, reruns: int) -> bool:
        """Whether ``reruns`` more searches of each of ``contenders`` configurations, in rounds, fit the budget.

        In rounds, each search loads its configuration again, but for the first of each round after the first
        (the rounds go back and forth); one load in all for a single contender.
        """
        load, measure = self.mean_cost()
        loads = contenders * reruns - (reruns - 1) if contenders > 1 else 1
        return time.monotonic() + loads * load + contenders * reruns * measure <= self.deadline

    def time_for_another(self, reruns: int) -> bool:
        """Whether one more evaluation, and then ``reruns`` of the winner (and loading it again), fit the budget."""
        load, measure = self.mean_cost()
        return time.monotonic() + (load + measure) + load + reruns * measure <= self.deadline
