"""Errors of the data plane: publishing, Triton, addresses and ports, hot swap, predict, load tests."""

from __future__ import annotations

from pathlib import Path

from nexus.errors.base import NexusError

# --- publishing -----------------------------------------------------------------------------


class PublishError(NexusError):
    """The repository could not be written."""


# --- Triton ---------------------------------------------------------------------------------


class TritonError(NexusError):
    """Triton could not be found, started, or did not become ready."""


class TritonUnreachableError(TritonError, ConnectionError):
    def __init__(self, url: str, detail: str) -> None:
        self.url, self.detail = url, detail
        super().__init__(f"cannot reach Triton at {url} ({detail}); start it with `nexus serve` or pass --server")


class TritonRequestError(TritonError):
    """Triton answered an admin request with an error."""

    def __init__(self, what: str, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(f"{what} failed ({status}): {reason}")


class ServerAddressError(NexusError, ValueError):
    def __init__(self, address: str, expected: str) -> None:
        self.address = address
        super().__init__(f"{address!r} is not a Triton address; write {expected}")


class PortInUseError(NexusError, OSError):
    def __init__(self, host: str, port: int, option: str) -> None:
        self.host = host
        self.port = port
        super().__init__(
            f"port {port} on {host} is in use (another Triton or nexus serve?); stop it or pass {option} PORT"
        )


class PortClashError(NexusError, ValueError):
    def __init__(self, first: str, second: str, port: int) -> None:
        super().__init__(f"{first} and {second} are both {port}; give each a port of its own")


class HotSwapError(NexusError):
    """Triton could not switch a model to a new version; the previous one is served again."""


class PredictError(NexusError):
    """The request could not be made or was refused."""


class LoadTestError(NexusError):
    """The load test could not run, or produced no results."""


class TuneError(NexusError):
    """`nexus tune` was given a bad target or budget, or could not measure the model."""


class TargetUnreachableError(TuneError):
    """No configuration met the latency target at any rate the tuner tried."""


class ServingRecordError(NexusError):
    """`.nexus_serving.json` (the tuned serving options) cannot be read."""

    def __init__(self, path: Path, detail: str) -> None:
        self.path = path
        super().__init__(
            f"{path} is not a valid NexusML serving record ({detail}); restore it from git "
            f"(`git checkout -- {path.name}`), fix it by hand, or delete it and run `nexus tune` again"
        )


class QuickstartError(NexusError):
    """A quickstart step failed; the message names the step and the command to rerun by hand."""
