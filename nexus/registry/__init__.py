"""The control plane: git-pinned, verified model versions recorded in `.nexus_meta.json`.

The flow through it: an artifact is recognised (:mod:`~nexus.registry.formats`), checked against its
signature (:mod:`~nexus.registry.signature`; or the signature is read off a run on samples,
:mod:`~nexus.registry.samples`), pinned to HEAD (:mod:`~nexus.registry.git`), uploaded create-only to
:mod:`nexus.storage`, and recorded (:mod:`~nexus.registry.store`, :mod:`~nexus.registry.metadata`).
Versions are found and promoted by :mod:`~nexus.registry.versions`; loads go through the verified
cache (:mod:`~nexus.registry.cache`). :class:`~nexus.registry.project.Project` is the API.

It imports the foundation modules (`nexus.errors`, `nexus.tensors`, `nexus.settings`, ...) and
`nexus.storage`; never the data plane (`nexus.serving`) or the CLI.
"""

from nexus.registry.project import LoadResult, Project, RollbackResult, SignatureResult, StoreResult, init

__all__ = ["LoadResult", "Project", "RollbackResult", "SignatureResult", "StoreResult", "init"]
