"""`nexus quickstart`: the whole job in a new folder, each step through the real `nexus` commands."""

from nexus.quickstart.run import Quickstart, check_folder
from nexus.quickstart.summary import Summary

__all__ = ["Quickstart", "Summary", "check_folder"]
