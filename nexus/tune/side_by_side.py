"""Configurations compared side by side: each one's rate under the target, searched in rounds on one Triton.

A served rate under a latency target follows the machine's speed, and on a shared machine that speed
moves by half within minutes (docs/tuning.md): two rates measured at different times say as much about
the clock as about the configurations. Here every configuration is searched once per round, in turn,
every other round backwards (A B C, C B A, ...), on the tuner's own Triton, so a drift falls on all of
them alike and each round starts on the configuration Triton already serves; what is compared
is each one's median over the rounds. `benchmarks/bench_tune.py` judges the tuner's picks against the
grid's best this way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime

from nexus.errors import TuneError
from nexus.registry import Project
from nexus.serving.model_config import ServingOptions
from nexus.tune.own_triton import own_triton
from nexus.tune.results import Contender, serpentine
from nexus.tune.session import TuneHooks
from nexus.tune.settings import MEASUREMENTS, TuneSettings


def side_by_side(
    project: Project,
    settings: TuneSettings,
    configurations: Sequence[ServingOptions],
    rounds: int = MEASUREMENTS,
    hooks: TuneHooks | None = None,
) -> list[Contender]:
    """Search the rate each configuration serves under ``settings.target``, ``rounds`` times each, in rounds.

    Only the model, version, target, window length, ``out`` and `tritonserver` of ``settings`` apply: every round is
    run whatever its budget. A configuration listed twice is measured once. Returns one contender per
    distinct configuration, in the order given: the first round's search and the later rounds' (its
    ``spread`` holds every rate). One that Triton could not load is searched once, with its ``error``.
    Triton's log goes to ``<out>/<model>/<time>-side-by-side/``.

    Raises:
        TuneError: bad settings, nothing to compare, or Triton could not serve the model.
    """
    settings.check()
    if rounds < 1:
        raise TuneError("a side-by-side comparison needs at least one round")
    distinct = list(dict.fromkeys(configurations))
    if not distinct:
        raise TuneError("give at least one configuration to compare")
    hooks = hooks or TuneHooks()
    version = project.resolve(settings.model, settings.version, settings.commit)
    folder = settings.report_folder(project.root, datetime.now(UTC), "-side-by-side")
    folder.mkdir(parents=True, exist_ok=True)
    with own_triton(project, settings, version, distinct[0], folder, math.inf, hooks) as session:
        contenders = [Contender(session.evaluate(options)) for options in distinct]
        loaded = [c for c in contenders if c.evaluation.error is None]
        for contender in serpentine(loaded, rounds)[len(loaded) :]:  # the first round is the searches above
            hooks.evaluating(contender.evaluation.options)
            again = session.remeasure(contender.evaluation)
            hooks.evaluated(again)
            contender.reruns.append(again)
    return contenders
