"""`nexus tune`: find the serving options under which a model serves the most requests within a latency target.

The model is served by a Triton of the tuner's own, on a temporary repository; configurations
(instances, max batch size, batching policy, queue delay) are applied through the model-repository
API and each is scored by the highest open-loop rate it serves with the chosen percentile under the
target and no errors (:mod:`~nexus.tune.rates`). The search is Model Analyzer's quick search,
coordinate hill climbing from the defaults (:mod:`~nexus.tune.search`). The winner is measured three
times, reported with its spread (:mod:`~nexus.tune.report`), and recorded in `.nexus_serving.json`
(:mod:`nexus.serving.tuned`), which `nexus publish` then serves it with.

It imports the foundation, `nexus.registry`, `nexus.serving` and `nexus.loadtest`; never the CLI.
"""

from nexus.tune.results import Evaluation, TuneResult
from nexus.tune.run import tune
from nexus.tune.session import TuneHooks
from nexus.tune.settings import TuneSettings
from nexus.tune.side_by_side import side_by_side
from nexus.tune.target import Target, parse_latency, parse_target, target_from_options

__all__ = [
    "Evaluation",
    "Target",
    "TuneHooks",
    "TuneResult",
    "TuneSettings",
    "parse_latency",
    "parse_target",
    "side_by_side",
    "target_from_options",
    "tune",
]
