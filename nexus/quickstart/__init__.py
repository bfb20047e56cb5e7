"""`nexus quickstart`: the whole job in a new folder, each step through the real `nexus` commands."""

from nexus.quickstart.run import Quickstart, Summary, check_folder

__all__ = ["Quickstart", "Summary", "check_folder"]
