"""The data plane: Triton model repositories rendered from stored versions, the servers that run them,
and the clients that talk to them.

The flow through it: a stored version is rendered (:mod:`~nexus.serving.model_config`,
:mod:`~nexus.serving.publish`) into a resolved repository (:mod:`~nexus.serving.repository`), which a
local `tritonserver` (:mod:`~nexus.serving.server`) serves under :func:`serve`, kept up by
:mod:`~nexus.serving.supervisor` and switched version to version by :mod:`~nexus.serving.hotswap`.
Everything that asks Triton about its models goes through :class:`~nexus.serving.admin.TritonAdmin`.

It imports the foundation modules, `nexus.storage` and the control plane (`nexus.registry`); never the CLI.
"""

from nexus.serving.admin import ModelCounters, TritonAdmin
from nexus.serving.hotswap import rollback, swap
from nexus.serving.predict import predict
from nexus.serving.publish import PublishResult, publish
from nexus.serving.repository import ModelRepository
from nexus.serving.serve import ServeHooks, serve
from nexus.serving.server import TritonServer
from nexus.serving.status import ModelStatus, model_status

__all__ = [
    "ModelCounters",
    "ModelRepository",
    "ModelStatus",
    "PublishResult",
    "ServeHooks",
    "TritonAdmin",
    "TritonServer",
    "model_status",
    "predict",
    "publish",
    "rollback",
    "serve",
    "swap",
]
