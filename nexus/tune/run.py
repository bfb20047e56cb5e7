"""`nexus tune` as one library call: serve the model on a Triton of its own, climb the grid, confirm, report, record.

The user's repository and running server are never touched (except with ``apply_to``): the stored
version is served by a `tritonserver` of the tuner's own (:mod:`nexus.tune.own_triton`), and each
configuration is applied there (:mod:`nexus.tune.probe`). The search is Model Analyzer's
quick search (:func:`nexus.tune.search.hill_climb`) from the default configuration; each point's score
is the open-loop rate it serves under the target (:mod:`nexus.tune.rates`). The search's best is
measured twice more, and so are the start (what `nexus publish` serves now, on the grid) and the next
best within 20 % of it while the budget allows, in rounds; the highest median wins, so one lucky or
unlucky window does not decide, a challenger has to beat the start in the same rounds, and the report
shows the spread here. Beside every search the machine's speed is measured (:mod:`nexus.tune.reference`),
so a run says when the machine itself changed under it.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from nexus.errors import TargetUnreachableError
from nexus.registry import Project
from nexus.serving.model_config import ServingOptions
from nexus.serving.tuned import record, recorded_options
from nexus.tune.own_triton import own_triton
from nexus.tune.report import write_report
from nexus.tune.results import Contender, Evaluation, Machine, TuneResult, choose, serpentine
from nexus.tune.search import Point, hill_climb
from nexus.tune.session import Session, TuneHooks
from nexus.tune.settings import TuneSettings
from nexus.tune.space import Space, canonical, grid, options_at, start_point
from nexus.tune.target import Target

#: Configurations measured again after the search: its best, and the next ones within the share below of it.
CONTENDERS = 3
CONTENDER_SHARE = 0.8


def tune(project: Project, settings: TuneSettings, hooks: TuneHooks | None = None) -> TuneResult:
    """Find the serving options under which ``settings.model`` serves the most requests within the target.

    Raises:
        TuneError: bad settings, or Triton could not serve the model at all.
        TargetUnreachableError: no configuration met the target (the report is written first).
    """
    settings.check()
    hooks = hooks or TuneHooks()
    began = time.monotonic()
    deadline = began + settings.budget_s
    version = project.resolve(settings.model, settings.version, settings.commit)
    base = recorded_options(project, settings.model) or ServingOptions()
    space, target = settings.grid, settings.target
    start = start_point(space, target, base, version)
    date = datetime.now(UTC)
    report = settings.report_folder(project.root, date)
    report.mkdir(parents=True, exist_ok=True)
    first = options_at(base, canonical(start, space, target))
    with own_triton(project, settings, version, first, report, deadline, hooks) as session:

        def score(point: Point) -> float:
            best = max((e.served for e in session.evaluations), default=0.0)
            if best <= 0:
                return session.evaluate(options_at(base, point)).served
            gain = 1 + settings.min_gain
            return session.evaluate(options_at(base, point), beat=best * gain, tie=best / gain).served

        if settings.exhaustive:
            stopped = _every_point(session, base, space, target, settings.reruns)
            best = max(session.evaluations, key=lambda e: e.served)
        else:
            climb = hill_climb(
                space,
                start,
                score,
                min_gain=settings.min_gain,
                keep_going=lambda: session.time_for_another(settings.reruns),
                canonical=lambda p: canonical(p, space, target),
            )
            by_options = {e.options: e for e in session.evaluations}
            best, stopped = by_options[options_at(base, climb.best)], climb.stopped
        incumbent = next((e for e in session.evaluations if e.options == first), None)
        contenders = measure_again(session, best, settings.reruns, incumbent)
    chosen = choose(contenders) if contenders else Contender(best)
    winner = chosen.evaluation
    others = [c for c in contenders if c is not chosen]
    if others:
        runner_up: Evaluation | None = max(others, key=lambda c: c.spread.median).evaluation
    else:
        rest = [e for e in session.evaluations if e.options != winner.options]
        runner_up = max(rest, key=lambda e: e.served, default=None)
    result = TuneResult(
        model=settings.model,
        version=version,
        target=target,
        evaluations=session.evaluations,
        winner=winner,
        reruns=chosen.reruns,
        spread=chosen.spread,
        runner_up=runner_up,
        contenders=contenders,
        stopped=stopped,
        elapsed_s=time.monotonic() - began,
        machine=Machine.this(),
        date=date.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    result.report, result.files = write_report(result, report)
    if winner.served <= 0:
        raise TargetUnreachableError(
            f"no configuration served {target} with zero errors, even at 2% of its capacity; "
            f"see {result.report} and try a looser target"
        )
    if settings.record:
        result.record = record(project, settings.model, winner.options, _tuned(project, result))
    if settings.apply_to is not None:
        from nexus.serving.publish import publish

        applied = publish(
            project, settings.model, version=version.version, options=winner.options, server=settings.apply_to
        )
        result.applied = applied.server
    return result


def measure_again(
    session: Session, best: Evaluation, reruns: int, incumbent: Evaluation | None = None
) -> list[Contender]:
    """The search's best and up to :data:`CONTENDERS` - 1 others, each searched ``reruns`` more times: the
    search's best always (its time is reserved), the others as far as the budget allows. The others are the
    ``incumbent`` first (the search's start, what the model is published with now: a challenger has to beat
    it in the same rounds, however far below it one search put it), then those within
    :data:`CONTENDER_SHARE` of the best, a neighbour that only tied the best within the climb's gain (a
    coarse search) among them. One window's luck decided the search's order; the medians decide the winner.

    The searches go in rounds, every other one backwards (A B C, C B A: :func:`~nexus.tune.results.serpentine`),
    not one contender after another: the machine's speed drifts over minutes (:mod:`nexus.tune.reference`), and
    so a drift falls on every contender alike. The first round starts with the configuration Triton serves
    now, if it is a contender, and each later one with the last one's: those searches need no reload.
    """
    if best.served <= 0 or reruns == 0:
        return []
    bar = CONTENDER_SHARE * best.served
    # a coarse search's rate is a lower bound: one above the bar passed the best's rate less the climb's gain
    near = sorted((e for e in session.evaluations if e is not best and e.served >= bar), key=lambda e: -e.served)
    if incumbent is not None and incumbent is not best and incumbent.served > 0 and not incumbent.coarse:
        near = [incumbent, *(e for e in near if e is not incumbent)]
    contenders = [Contender(best)]
    for evaluation in near[: CONTENDERS - 1]:
        if not session.time_for_reruns(len(contenders) + 1, reruns):
            break
        contenders.append(Contender(evaluation))
    # the one Triton serves now (the search's last) first: that search needs no reload
    last = session.evaluations[-1] if session.evaluations else None
    order = sorted(contenders, key=lambda c: last is None or c.evaluation.options != last.options)
    for contender in serpentine(order, reruns):
        contender.reruns.append(session.remeasure(contender.evaluation))
    return contenders


def _every_point(session: Session, base: ServingOptions, space: Space, target: Target, reruns: int) -> str:
    """Evaluate the whole grid (the start first), each with the full search; why it stopped."""
    points = grid(space, target)
    for point in points:
        options = options_at(base, point)
        if any(e.options == options for e in session.evaluations):
            continue
        if session.evaluations and not session.time_for_another(reruns):
            return "budget"
        session.evaluate(options)
    return "exhaustive"


def _tuned(project: Project, result: TuneResult) -> dict[str, object]:
    """The `tuned` entry of `.nexus_serving.json`."""
    report = result.report
    if report is not None and report.is_relative_to(project.root):
        report = report.relative_to(project.root)
    spread = result.spread
    return {
        "target": {"percentile": result.target.percentile, "ms": result.target.ms},
        "served_rate": round(spread.median, 1),
        # the machine's speed during the run: a later run at another speed is not comparable with this one
        "reference_ms": None if result.speed is None else round(result.speed.median, 3),
        "spread": {"min": round(spread.min, 1), "median": round(spread.median, 1), "max": round(spread.max, 1)},
        "version": result.version.version,
        "commit": result.version.commit_hash,
        "machine": {"cpu": result.machine.cpu, "cores": result.machine.cores},
        "date": result.date,
        "report": str(report) if report is not None else None,
    }
