"""Model names. They become folder names, object keys and URL path segments, so each is checked where it
enters the library: one safe path component."""

from __future__ import annotations

import re

from nexus.errors import InvalidModelNameError

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def is_model_name(name: str) -> bool:
    """Whether ``name`` is a model name NexusML accepts (no separators, no `..`, no trailing dot)."""
    return bool(MODEL_NAME.match(name)) and not name.endswith(".") and ".." not in name


def validate_model_name(name: str) -> str:
    """Return ``name`` if it is a valid model name, else raise :class:`InvalidModelNameError`."""
    if not is_model_name(name):
        raise InvalidModelNameError(name)
    return name
