"""A step-load shape for Locust: users rise in steps, to find the load where latency turns up (the knee).

    locust -f loadtest/locustfile.py,loadtest/stepload.py --headless --host http://127.0.0.1:8000 \\
        --model prod_model --step-users 8 --step-time 10 --max-users 64

Starts with ``--step-users`` users and adds as many every ``--step-time`` seconds until
``--max-users``, holds that for one more step, then stops. Locust's `*_stats_history.csv` (written
with ``--csv``) then has one stretch of rows per user count; `nexus loadtest --step-users` prints
requests/s and latency per step from it.
"""

from __future__ import annotations

import math
from typing import Any

from locust import LoadTestShape, events


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    group = parser.add_argument_group("Step load")
    group.add_argument("--step-users", type=int, default=8, help="Users added at each step.")
    group.add_argument("--step-time", type=float, default=10.0, help="Seconds each step lasts.")
    group.add_argument("--max-users", type=int, default=64, help="Users at the last step.")


def steps(step_users: int, max_users: int) -> list[int]:
    """The user count at each step: step_users, 2*step_users, ... up to max_users."""
    if step_users < 1 or max_users < 1:
        raise ValueError("--step-users and --max-users must be at least 1")
    count = math.ceil(max_users / step_users)
    return [min(step_users * (i + 1), max_users) for i in range(count)]


class StepLoadShape(LoadTestShape):
    """Users in steps; each step's users are spawned at once."""

    def tick(self) -> tuple[int, float] | None:
        options = self.runner.environment.parsed_options if self.runner else None
        step_users = int(getattr(options, "step_users", 8))
        step_time = float(getattr(options, "step_time", 10.0))
        levels = steps(step_users, int(getattr(options, "max_users", 64)))
        index = int(self.get_run_time() // step_time)
        if index > len(levels):  # the last level is held for one extra step
            return None
        users = levels[min(index, len(levels) - 1)]
        return users, float(users)
