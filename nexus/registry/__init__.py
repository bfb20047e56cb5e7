"""The control plane: git-pinned, verified model versions recorded in `.nexus_meta.json`.

The flow through it: an artifact is recognised (:mod:`~nexus.registry.formats`), checked against its
signature (:mod:`~nexus.registry.signature`), pinned to HEAD (:mod:`~nexus.registry.git`), uploaded
create-only to :mod:`nexus.storage`, and recorded (:mod:`~nexus.registry.metadata`). Loads go through
the verified cache (:mod:`~nexus.registry.cache`). :class:`~nexus.registry.project.Project` is the API.

It imports the foundation modules (`nexus.errors`, `nexus.tensors`, `nexus.settings`, ...) and
`nexus.storage`; never the data plane (`nexus.serving`) or the CLI.
"""

from nexus.registry.project import LoadResult, Project, RollbackResult, StoreResult, init

__all__ = ["LoadResult", "Project", "RollbackResult", "StoreResult", "init"]
