"""`nexus tune` as one library call: serve the model on a Triton of its own, climb the grid, confirm, report, record.

The user's repository and running server are never touched (except with ``apply_to``): the stored
version is published into a temporary repository, served by a `tritonserver` on free loopback ports,
and each configuration is applied there (:mod:`nexus.tune.probe`). The search is Model Analyzer's
quick search (:func:`nexus.tune.search.hill_climb`) from the default configuration; each point's score
is the open-loop rate it serves under the target (:mod:`nexus.tune.rates`). The search's best
is measured twice more, and so are the next best within 20 % of it while the budget allows, in rounds;
the highest median wins, so one lucky or unlucky window does not decide, and the report shows the
spread here. Beside every search the machine's speed is measured (:mod:`nexus.tune.reference`), so a
run says when the machine itself changed under it.
"""

from __future__ import annotations

import socket
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from nexus.errors import TargetUnreachableError, TuneError
from nexus.names import validate_model_name
from nexus.registry import Project
from nexus.serving.model_config import ServingOptions
from nexus.serving.publish import render_version
from nexus.serving.repository import ModelRepository
from nexus.serving.server import TritonServer
from nexus.serving.tuned import record, recorded_options
from nexus.tune.probe import Candidates, Windows, Workload
from nexus.tune.report import write_report
from nexus.tune.results import Contender, Evaluation, Machine, TuneResult, choose
from nexus.tune.search import Point, hill_climb
from nexus.tune.session import SearchShape, Session, TuneHooks
from nexus.tune.space import FULL_SPACE, QUICK_SPACE, Space, canonical, grid, options_at, start_point
from nexus.tune.target import Target

#: Measurements of the winner in all: the search's, and this many less one again.
MEASUREMENTS = 3
#: Configurations measured again after the search: its best, and the next ones within the share below of it.
CONTENDERS = 3
CONTENDER_SHARE = 0.8


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
    out = settings.out or project.root / ".nexus" / "tune"
    report = out / settings.model / date.strftime("%Y%m%dT%H%M%SZ")
    report.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="nexus-tune-") as tmp:
        folder = Path(tmp) / "repository"
        first = options_at(base, canonical(start, space, target))
        published = render_version(project, version, ModelRepository(folder, str(folder)), first)
        signature = ModelRepository(folder, str(folder)).read_published(settings.model)
        if signature is None:  # pragma: no cover - it was just written
            raise TuneError(f"{folder} holds no config for {settings.model}")
        http_port, grpc_port, metrics_port = _free_ports(3)
        server = TritonServer(
            repository=str(folder),
            http_port=http_port,
            grpc_port=grpc_port,
            metrics_port=metrics_port,
            load_models=[settings.model],
            log_file=report / "triton.log",  # kept with the report
            binary=settings.tritonserver,
        )
        with server:
            hooks.started(server.url)
            artifact = Path(published.files[1]).name
            candidates = Candidates(server.url, folder, version, signature.signature, artifact, published.config_text)
            workload = Workload.of(signature.signature)
            session = Session(candidates, workload, target, settings.shape(), deadline, hooks, server)

            def score(point: Point) -> float:
                best = max((e.served for e in session.evaluations), default=0.0)
                beat = best * (1 + settings.min_gain) if best > 0 else None
                return session.evaluate(options_at(base, point), beat).served

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
            contenders = measure_again(session, best, settings.reruns)
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


def measure_again(session: Session, best: Evaluation, reruns: int) -> list[Contender]:
    """The search's best and up to :data:`CONTENDERS` - 1 others within :data:`CONTENDER_SHARE` of it, each
    searched ``reruns`` more times: the search's best always (its time is reserved), the others as far as the
    budget allows. One window's luck decided the search's order; the medians decide the winner.

    The searches go in rounds (A B C, A B C), not one contender after another: the machine's speed drifts
    over minutes (:mod:`nexus.tune.reference`), and in rounds a drift falls on every contender alike.
    """
    if best.served <= 0 or reruns == 0:
        return []
    bar = CONTENDER_SHARE * best.served
    near = sorted(
        (e for e in session.evaluations if e is not best and not e.coarse and e.served >= bar), key=lambda e: -e.served
    )
    contenders = [Contender(best)]
    for evaluation in near[: CONTENDERS - 1]:
        if not session.time_for_reruns(len(contenders) + 1, reruns):
            break
        contenders.append(Contender(evaluation))
    for _ in range(reruns):
        for contender in contenders:
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


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (held open together, so the kernel cannot hand one out twice)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()
