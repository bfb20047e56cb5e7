"""The one build rule pyproject.toml cannot say: copy the files NexusML ships from the repository's
top-level folders into the wheel, under `nexus/_shipped/` (see `nexus/shipped.py`)."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED = [
    "model_repository_templates/python_backend/model.py",
    "loadtest/locustfile.py",
    "loadtest/locustfile_grpc.py",
    "loadtest/stepload.py",
    # the CRDs `nexus deploy` validates custom resources against (nexus/deploy/schemas.py)
    "tests/data/k8s-schemas/README.md",
    "tests/data/k8s-schemas/serving.kserve.io_inferenceservices.yaml",
    "tests/data/k8s-schemas/monitoring.coreos.com_podmonitors.yaml",
    "tests/data/k8s-schemas/monitoring.coreos.com_servicemonitors.yaml",
    "tests/data/k8s-schemas/monitoring.coreos.com_prometheusrules.yaml",
]


class BuildWithShippedFiles(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads them in place
        for relative in SHIPPED:
            target = Path(self.build_lib) / "nexus" / "_shipped" / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(relative, target)


setup(cmdclass={"build_py": BuildWithShippedFiles})
