"""What `nexus tune` searches: the grid of serving options, the start point, and options <-> grid points."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from nexus.registry.metadata import ModelVersion
from nexus.serving.model_config import ServingOptions, instance_count
from nexus.tune.search import Point
from nexus.tune.target import Target

Space = Mapping[str, Sequence[Any]]

#: Every dimension the tuner moves along, in the order neighbours are tried.
FULL_SPACE: Space = {
    "instances": (1, 2, 3, 4),
    "max_batch_size": (1, 2, 4, 8, 16, 32, 64),
    "policy": ("adaptive", "window"),
    "max_queue_delay_us": (0, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000),
}
#: `--quick`: fewer values along each dimension (60 configurations instead of 504).
QUICK_SPACE: Space = {
    "instances": (1, 2, 3),
    "max_batch_size": (1, 4, 16, 32),
    "policy": ("adaptive", "window"),
    "max_queue_delay_us": (0, 1000, 5000, 20_000),
}


def adaptive_delay(space: Space, target: Target) -> int:
    """The queue delay every adaptive candidate gets: the largest on the grid within the target.

    With every batch size preferred, a batch leaves as soon as an instance is free, so the delay is
    never waited on (it only has to be non-zero for a waiting batch to keep growing); the largest within
    the target keeps the rendered config's bound consistent with it.
    """
    delays: list[int] = sorted(space["max_queue_delay_us"])
    return max([d for d in delays if d <= target.us] or delays[:1])


def start_point(space: Space, target: Target, base: ServingOptions, version: ModelVersion) -> Point:
    """What `nexus publish` renders now (``base``: a recorded pick, else the defaults; its instance
    count and batch size, adaptive), snapped onto the grid.

    Its delay coordinate is the largest on the grid within half the target: where a step to the
    window policy starts (a window that takes the whole target leaves no time to compute).
    """
    delays = sorted(space["max_queue_delay_us"])
    return {
        "instances": _nearest(space["instances"], instance_count(base, version)),
        "max_batch_size": _nearest(space["max_batch_size"], base.max_batch_size),
        "policy": "adaptive" if "adaptive" in space["policy"] else space["policy"][0],
        "max_queue_delay_us": max([d for d in delays if d <= target.us / 2] or delays[:1]),
    }


def _nearest(values: Sequence[int], wanted: int) -> int:
    return min(values, key=lambda v: (abs(v - wanted), v))


def canonical(point: Point, space: Space, target: Target) -> Point:
    """One point per configuration: adaptive candidates all get :func:`adaptive_delay`."""
    if point["policy"] == "adaptive":
        return {**point, "max_queue_delay_us": adaptive_delay(space, target)}
    return dict(point)


def options_at(base: ServingOptions, point: Point) -> ServingOptions:
    """``base`` (the recorded options or the defaults) with the point's values; batching on."""
    return replace(
        base,
        batching=True,
        policy=point["policy"],
        instances=point["instances"],
        max_batch_size=point["max_batch_size"],
        max_queue_delay_us=point["max_queue_delay_us"],
    )


def label(options: ServingOptions) -> str:
    """`2x adaptive mbs 32` / `1x window mbs 8 delay 2 ms`: a configuration in a table row or a plot legend."""
    text = f"{options.instances}x {options.policy} mbs {options.max_batch_size}"
    return text + (f" delay {options.max_queue_delay_us / 1000:g} ms" if options.policy == "window" else "")


def grid(space: Space, target: Target) -> list[Point]:
    """Every distinct configuration of ``space`` (canonical points), for an exhaustive search."""
    points: dict[tuple[tuple[str, Any], ...], Point] = {}
    for instances in space["instances"]:
        for batch in space["max_batch_size"]:
            for policy in space["policy"]:
                for delay in space["max_queue_delay_us"]:
                    point = canonical(
                        {
                            "instances": instances,
                            "max_batch_size": batch,
                            "policy": policy,
                            "max_queue_delay_us": delay,
                        },
                        space,
                        target,
                    )
                    points.setdefault(tuple(sorted(point.items())), point)
    return list(points.values())
