"""Configurations compared side by side on the tuner's own Triton: searched in rounds (A B, B A), each search on
its own configuration as Triton served it, every rate kept (the figures are not asserted, only what they are)."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import GitRepo
from nexus.errors import TuneError
from nexus.registry import Project
from nexus.serving.admin import TritonAdmin
from nexus.serving.model_config import ServingOptions
from nexus.tune import Evaluation, Target, TuneHooks, TuneSettings, side_by_side
from test_tune import MLP_SIGNATURE

LOOSE = Target(99, 200)


@pytest.mark.slow
def test_configurations_are_searched_in_rounds_each_on_its_own_config(
    repo: GitRepo, models: dict[str, Path], tmp_path: Path
) -> None:
    project = Project.open()
    project.store(models["torchscript"], "m", signature=MLP_SIGNATURE)
    small = ServingOptions(max_batch_size=4, instances=1)
    window = ServingOptions(max_batch_size=16, instances=1, policy="window", max_queue_delay_us=1000)
    urls: list[str] = []
    order: list[int] = []
    served: list[tuple[int, int]] = []  # (the options' max batch size, the one Triton served during the search)

    def evaluated(e: Evaluation) -> None:
        config = TritonAdmin(urls[0]).ready_config("m")
        assert config is not None
        served.append((e.options.max_batch_size, int(config["max_batch_size"])))

    hooks = TuneHooks(started=urls.append, evaluating=lambda o: order.append(o.max_batch_size), evaluated=evaluated)
    settings = TuneSettings("m", LOOSE, quick=True, seconds=0.4, record=False, out=tmp_path / "out")

    # listed twice: measured once
    contenders = side_by_side(project, settings, [small, window, small], rounds=2, hooks=hooks)

    assert [c.evaluation.options for c in contenders] == [small, window]
    assert order == [4, 16, 16, 4]  # in rounds, back and forth, not one configuration after the other
    assert served == [(4, 4), (16, 16), (16, 16), (4, 4)]
    for c in contenders:
        assert c.evaluation.error is None
        assert len(c.reruns) == 1
        searches = [c.evaluation, *c.reruns]
        assert c.spread.rates == tuple(e.served for e in searches)
        assert all(e.served > 0 and e.at is not None and e.at.errors == 0 for e in searches)
        assert all(e.reference_ms is not None and e.reference_ms > 0 for e in searches)
    (folder,) = (tmp_path / "out" / "m").iterdir()
    assert folder.name.endswith("-side-by-side")
    # Triton started on a variant of the first and loaded it, then each change of configuration: 4 loads
    assert (folder / "triton.log").read_text().count("successfully loaded 'm'") == 4
    assert not (repo.root / ".nexus_serving.json").exists()


@pytest.mark.parametrize(
    ("configurations", "rounds", "message"),
    [
        ([], 3, "give at least one configuration to compare"),
        ([ServingOptions()], 0, "a side-by-side comparison needs at least one round"),
    ],
)
def test_nothing_to_compare_is_refused_before_a_triton_starts(
    repo: GitRepo, configurations: list[ServingOptions], rounds: int, message: str
) -> None:
    started: list[str] = []
    settings = TuneSettings("m", LOOSE, quick=True)
    with pytest.raises(TuneError, match=message):
        side_by_side(Project.open(), settings, configurations, rounds=rounds, hooks=TuneHooks(started=started.append))
    assert started == []
