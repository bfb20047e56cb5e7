"""The `nexus` command line: a thin layer over :mod:`nexus.registry`."""

from nexus.cli.app import app, main

__all__ = ["app", "main"]
