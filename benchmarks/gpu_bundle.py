"""Pack what a GPU machine without a registry needs to run a real Triton: ``.gpu/bundle.tar.xz``.

The `nvidia-pytriton` wheel is too big to carry as it is; its `tritonserver` binary, the libraries it
links (``nvidia_pytriton.libs``), the Python backend and one backend stub (for the Python there) are
not. The bundle unpacks into a folder that, put on ``PYTHONPATH``, is what
:func:`nexus.serving.server.find_triton` looks for (a ``pytriton`` package holding ``tritonserver/``
beside ``nvidia_pytriton.libs``), with ``tritonclient`` (pure Python) beside it. ``gpu_check.sh``
unpacks it and runs the checks there.

    .venv/bin/python benchmarks/gpu_bundle.py                 # stubs for Python 3.12 (the GPU machine's)
    .venv/bin/python benchmarks/gpu_bundle.py --python 3.11   # for a machine like this one (to try it here)
"""

from __future__ import annotations

import argparse
import io
import tarfile
import tempfile
from pathlib import Path

import pytriton
import tritonclient

SITE = Path(pytriton.__file__).parent.parent
LIMIT = 60 << 20  # the device tool carries 64 MiB in all; leave room for the working tree


def members(python: str) -> list[tuple[Path, str]]:
    """(file on this machine, name in the bundle) for everything the bundle holds."""
    server = SITE / "pytriton" / "tritonserver"
    stub = server / "python_backend_stubs" / python
    if not stub.is_dir():
        raise SystemExit(f"nvidia-pytriton has no backend stub for Python {python}")
    folders = [server / "bin", server / "backends", server / "caches", stub, SITE / "nvidia_pytriton.libs"]
    folders.append(Path(tritonclient.__file__).parent)
    found = []
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                found.append((path, str(path.relative_to(SITE))))
    return found


def build(out: Path, python: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    target = out / "bundle.tar.xz"
    marker = b'"""Only the tritonserver of nvidia-pytriton, unpacked by NexusML\'s gpu_check.sh."""\n'
    init = tarfile.TarInfo("pytriton/__init__.py")
    init.size = len(marker)
    with (
        tempfile.NamedTemporaryFile(dir=out, suffix=".part", delete=False) as tmp,
        tarfile.open(fileobj=tmp, mode="w:xz", preset=9) as tar,
    ):
        tar.addfile(init, io.BytesIO(marker))
        for path, name in members(python):
            tar.add(path, arcname=name)
    Path(tmp.name).replace(target)
    size = target.stat().st_size
    print(f"wrote {target}: {size / (1 << 20):.1f} MiB (the limit to carry is {LIMIT >> 20} MiB)")
    if size > LIMIT:
        raise SystemExit("the bundle is too big to carry to the GPU machine")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--python", default="3.12", help="the Python version of the machine that unpacks it")
    parser.add_argument("--out", type=Path, default=Path(".gpu"))
    args = parser.parse_args()
    build(args.out, args.python)


if __name__ == "__main__":
    main()
