"""The root of every error NexusML raises on purpose."""


class NexusError(Exception):
    """Root of every error NexusML raises on purpose. The CLI's exit codes for them are in `nexus/cli/errors.py`."""
