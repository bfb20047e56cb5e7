"""NexusML: git-pinned, verified PyTorch model versions, served by Triton with dynamic batching."""

from nexus.errors import NexusError

__version__ = "0.1.0"

__all__ = ["NexusError", "Project", "__version__"]


def __getattr__(name: str) -> object:
    # `Project` pulls in storage and git helpers; import it on first use to keep `import nexus` cheap.
    if name == "Project":
        from nexus.registry import Project

        return Project
    raise AttributeError(f"module 'nexus' has no attribute {name!r}")
