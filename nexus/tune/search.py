"""Coordinate hill climbing over a grid of serving options: Model Analyzer's quick search, as a pure function.

Model Analyzer's quick search (`quick_run_config_generator.py`) walks a grid of coordinates (instance
count, max batch size) from a starting point, measures the neighbourhood of the current coordinate,
steps to the best one, and stops when the step would not move or would revisit a coordinate. Here the
grid is any set of named dimensions, each an ordered list of values; the neighbours of a point are one
step up or down along each dimension; the search steps to the best neighbour while it beats the
current point by at least ``min_gain`` (5 %), and stops when no neighbour does, when every neighbour
was measured, or when the budget says so. The score is a callback (the tuner's: requests per second
served under the latency target), so the search is tested on synthetic surfaces.

A ``canonical`` function maps points that are the same configuration to one (with adaptive batching,
the queue delay is never waited on and is fixed), so no configuration is measured twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: A point of the grid: dimension name -> value.
Point = dict[str, Any]
Key = tuple[tuple[str, Any], ...]


def key(point: Mapping[str, Any]) -> Key:
    return tuple(sorted(point.items()))


@dataclass
class Climb:
    """What a search measured and where it ended.

    Attributes:
        scores: every point measured, in order, with its score.
        path: the points the search stood on, from the start to ``best``.
        stopped: ``converged`` (no neighbour gains ``min_gain``), ``budget``, or ``exhausted`` (every
            neighbour had been measured and none was better).
    """

    best: Point
    best_score: float
    scores: list[tuple[Point, float]] = field(default_factory=list)
    path: list[Point] = field(default_factory=list)
    stopped: str = "converged"

    @property
    def evaluations(self) -> int:
        return len(self.scores)


def neighbours(space: Mapping[str, Sequence[Any]], point: Mapping[str, Any]) -> list[Point]:
    """The points one step up or down along each dimension (in the order of ``space``), the rest unchanged."""
    found = []
    for name, values in space.items():
        i = list(values).index(point[name])
        for j in (i + 1, i - 1):
            if 0 <= j < len(values):
                found.append({**point, name: values[j]})
    return found


def hill_climb(
    space: Mapping[str, Sequence[Any]],
    start: Mapping[str, Any],
    score: Callable[[Point], float],
    *,
    min_gain: float = 0.05,
    max_evaluations: int | None = None,
    keep_going: Callable[[], bool] = lambda: True,
    canonical: Callable[[Point], Point] = dict,
) -> Climb:
    """Climb from ``start`` to the best-scoring point reachable by steps that each gain ``min_gain``.

    Args:
        space: dimension -> its values in order (a step moves to the next or previous value).
        start: the first point measured (it must be on the grid).
        score: higher is better; called once per distinct (canonical) point.
        max_evaluations: at most this many calls of ``score`` (the start included).
        keep_going: asked before each call of ``score`` after the first; False ends the search (a wall-clock budget).
        canonical: maps a point to the one configuration it stands for (points with equal canonical forms are
            measured once).

    Returns:
        The best point measured and every measurement, with why the search stopped.
    """
    for name, value in start.items():
        if value not in space[name]:
            raise ValueError(f"the start's {name}={value!r} is not one of {list(space[name])}")
    measured: dict[Key, float] = {}
    climb = Climb(best=canonical(dict(start)), best_score=0.0)

    def evaluate(point: Point) -> float | None:
        """The point's score, measured now if it was not before; None when the budget is spent."""
        k = key(canonical(point))
        if k in measured:
            return measured[k]
        if measured and (not keep_going() or (max_evaluations is not None and len(measured) >= max_evaluations)):
            return None
        value = score(canonical(point))
        measured[k] = value
        climb.scores.append((canonical(point), value))
        return value

    current = dict(start)
    current_score = evaluate(current) or 0.0  # the first point is always measured
    climb.best, climb.best_score, climb.path = canonical(current), current_score, [canonical(current)]
    while True:
        best_next: tuple[Point, float] | None = None
        fresh = False
        for candidate in neighbours(space, current):
            if key(canonical(candidate)) == key(canonical(current)):
                continue
            fresh = fresh or key(canonical(candidate)) not in measured
            value = evaluate(candidate)
            if value is None:
                climb.stopped = "budget"
                _take(climb, best_next, current_score, min_gain, canonical)
                return climb
            if best_next is None or value > best_next[1]:
                best_next = (candidate, value)
        if best_next is None or not _take(climb, best_next, current_score, min_gain, canonical):
            climb.stopped = "converged" if fresh else "exhausted"
            return climb
        current, current_score = best_next


def _take(
    climb: Climb,
    best_next: tuple[Point, float] | None,
    current: float,
    min_gain: float,
    canonical: Callable[[Point], Point],
) -> bool:
    """Step to ``best_next`` if it gains ``min_gain`` over the current score (any gain from 0)."""
    if best_next is None or best_next[1] <= current * (1 + min_gain) or best_next[1] <= 0:
        return False
    climb.best, climb.best_score = canonical(best_next[0]), best_next[1]
    climb.path.append(canonical(best_next[0]))
    return True
