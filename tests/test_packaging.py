"""The wheel: built from the tree, installed (not editable) into a fresh virtual environment, and used."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from helpers import GitRepo, make_torch_export

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed; its dependencies come from this environment (no network)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(source)], check=True)
    # the tree as it is now, uncommitted changes included
    subprocess.run(
        ["git", "-C", str(ROOT), "diff", "HEAD", "--binary", "--output", str(root / "wip.patch")], check=True
    )
    if (root / "wip.patch").stat().st_size:
        subprocess.run(["git", "-C", str(source), "apply", str(root / "wip.patch")], check=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(root / "dist"), str(source)],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = (root / "dist").glob("nexusml-*.whl")
    env = root / "venv"
    venv.create(env, with_pip=False)
    purelib = Path(sysconfig.get_paths(vars={"base": str(env), "platbase": str(env)})["purelib"])
    # install the wheel by unpacking it (what pip does for a pure wheel), then reuse this environment's packages
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(purelib), str(wheel)],
        check=True, capture_output=True,
    )  # fmt: skip
    here = Path(sysconfig.get_paths()["purelib"])
    (purelib / "zz_nexus_test_deps.pth").write_text(f"{here}\n")
    script = env / "bin" / "nexus"
    script.write_text(f"#!{env / 'bin' / 'python'}\nimport sys\nfrom nexus.cli import main\nsys.exit(main())\n")
    script.chmod(0o755)
    return env


def test_the_wheel_carries_the_backend_and_the_locustfiles(installed: Path, tmp_path: Path) -> None:
    python = installed / "bin" / "python"
    code = (
        "import nexus, nexus.serving.repository, nexus.loadtest; "
        "print(nexus.__file__); "
        "print(len(nexus.serving.repository.template_source())); "
        "print(sorted(p.name for p in nexus.loadtest.locustfiles().glob('*.py')))"
    )
    out = subprocess.run(
        [str(python), "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert str(installed) in out[0], "nexus must come from the wheel, not the source tree"
    template = (ROOT / "model_repository_templates" / "python_backend" / "model.py").read_text()
    assert int(out[1]) == len(template)
    assert out[2] == "['locustfile.py', 'locustfile_grpc.py', 'stepload.py']"


def test_the_installed_cli_answers_help_version_and_publishes(installed: Path, tmp_path: Path) -> None:
    nexus = str(installed / "bin" / "nexus")
    help_text = subprocess.run([nexus, "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("store", "publish", "serve", "loadtest", "quickstart"):
        assert command in help_text
    version = subprocess.run([nexus, "--version"], capture_output=True, text=True, check=True).stdout
    assert version.startswith("nexus ")

    repo = GitRepo.create(tmp_path / "project")
    repo.gen({"train.py": "pass\n"}, commit="initial")
    model = make_torch_export(tmp_path / "m.pt2")
    subprocess.run([nexus, "store", str(model), "m"], cwd=repo.root, check=True, capture_output=True)
    published = subprocess.run([nexus, "publish", "m"], cwd=repo.root, capture_output=True, text=True)
    assert published.returncode == 0, published.stderr
    served = repo.root / ".nexus" / "model_repository" / "m" / "1" / "model.py"
    assert served.read_text() == (ROOT / "model_repository_templates" / "python_backend" / "model.py").read_text()


def test_the_wheel_carries_the_crds_nexus_deploy_validates_against(installed: Path, tmp_path: Path) -> None:
    python = installed / "bin" / "python"
    code = (
        "from nexus.deploy.schemas import CRD_FILES, FOLDER; from nexus.shipped import shipped; "
        "from nexus.deploy.validate import load_crds; "
        "paths = [shipped(f'{FOLDER}/{n}') for n in sorted(set(CRD_FILES.values()))]; "
        "print(all(str(p).startswith(__import__('nexus').__path__[0]) for p in paths)); "
        "print(sorted(k for _, k in load_crds(paths)))"
    )
    out = subprocess.run(
        [str(python), "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[0] == "True", "the CRDs must come from the wheel, not the source tree"
    assert out[1] == "['InferenceService', 'PodMonitor', 'PrometheusRule', 'ServiceMonitor']"
