"""Files NexusML ships from the repository's own top-level folders, not from inside the package.

The Python-backend `model.py` lives in `model_repository_templates/`, the Locust files in
`loadtest/`, where the project's layout puts them, and the Kubernetes CRDs `nexus deploy` validates
against in `tests/data/k8s-schemas/`, where they are vendored. A wheel carries copies under `nexus/_shipped/`
(`setup.py`'s build rule copies them there); a checkout, or an editable install, reads them in place.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGED = Path(__file__).parent / "_shipped"
_CHECKOUT = Path(__file__).parents[1]


def shipped(relative: str) -> Path:
    """The path of a shipped file or folder, e.g. `model_repository_templates/python_backend/model.py`."""
    packaged = _PACKAGED / relative
    return packaged if packaged.exists() else _CHECKOUT / relative
