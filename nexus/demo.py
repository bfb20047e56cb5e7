"""The control-plane demo: `nexus demo [DIR]` (what `make demo` runs).

It makes a git repository with a tiny training script, trains and stores two versions on the
default local store, lists them, loads one back and checks it computes what the trained model
computes, rolls back, and shows the history. Each step prints the `nexus` command it runs, so it
can be repeated by hand.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.rule import Rule

TRAIN_PY = '''\
"""Train a tiny classifier on synthetic data and export it as TorchScript."""
import sys

import numpy as np
import torch

EPOCHS = {epochs}

torch.manual_seed(0)
x = torch.randn(512, 8)
y = (x[:, 0] + x[:, 1] > 0).long()
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
for _ in range(EPOCHS):
    optimizer.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
model.eval()
accuracy = (model(x).argmax(1) == y).float().mean().item()
torch.jit.script(model).save(sys.argv[1])
np.save(sys.argv[1] + ".expected.npy", model(x[:4]).detach().numpy())
print(f"trained {{EPOCHS}} epochs: accuracy {{accuracy:.3f}}, exported {{sys.argv[1]}}")
'''

console = Console(highlight=False)


def _run(cmd: list[str], cwd: Path, expect_failure: bool = False) -> str:
    shown = " ".join(shlex.quote(c) for c in cmd)
    console.print(f"[bold cyan]$ {shown}[/]")
    nexus = str(Path(sys.executable).with_name("nexus"))
    exe = {"nexus": [nexus], "python": [sys.executable]}.get(cmd[0], [cmd[0]])
    result = subprocess.run([*exe, *cmd[1:]], cwd=cwd, capture_output=True, text=True, check=False)
    output = (result.stdout + result.stderr).rstrip()
    if output:
        console.out(output, highlight=False)
    if (result.returncode != 0) != expect_failure:
        raise SystemExit(f"demo step failed (exit {result.returncode}): {shown}")
    return result.stdout


def _check_outputs(workdir: Path, loaded: str, trained: str) -> None:
    import numpy as np
    import torch

    torch.manual_seed(0)
    x = torch.randn(512, 8)[:4]
    model = torch.jit.load(str(workdir / loaded))  # type: ignore[no-untyped-call]  # untyped in torch
    got = model(x).detach().numpy()
    expected = np.load(workdir / f"{trained}.expected.npy")
    if not np.array_equal(got, expected):
        raise SystemExit(f"{loaded} does not compute what the trained model computed")
    console.print(f"[green]OK[/] {loaded} computes exactly what the trained model computed on 4 samples.")


def run_demo(workdir: Path) -> None:
    env_home = workdir / ".demo-home"
    env_home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("NEXUS_CACHE_DIR", str(env_home / "cache"))
    os.environ.setdefault("GIT_AUTHOR_NAME", "NexusML Demo")
    os.environ.setdefault("GIT_AUTHOR_EMAIL", "demo@nexusml.invalid")
    os.environ.setdefault("GIT_COMMITTER_NAME", "NexusML Demo")
    os.environ.setdefault("GIT_COMMITTER_EMAIL", "demo@nexusml.invalid")
    repo = workdir / "project"
    repo.mkdir()
    (repo / ".gitignore").write_text("*.pt\n*.npy\n", encoding="utf-8")

    console.print(Rule("1. a git repository with a training script"))
    (repo / "train.py").write_text(TRAIN_PY.format(epochs=5), encoding="utf-8")
    _run(["git", "init", "-q", "-b", "main"], repo)
    _run(["git", "add", "-A"], repo)
    _run(["git", "commit", "-q", "-m", "train 5 epochs"], repo)

    console.print(Rule("2. train and store version 1 (pinned to the commit)"))
    _run(["python", "train.py", "model.pt"], repo)
    _run(["nexus", "store", "model.pt", "demo_model", "--commit"], repo)
    _run(["cp", "model.pt", "v1.pt"], repo)
    _run(["cp", "model.pt.expected.npy", "v1.pt.expected.npy"], repo)

    console.print(Rule("3. an uncommitted change is refused: the version would not match its commit"))
    (repo / "train.py").write_text(TRAIN_PY.format(epochs=60), encoding="utf-8")
    _run(["python", "train.py", "model.pt"], repo)
    _run(["nexus", "store", "model.pt", "demo_model"], repo, expect_failure=True)

    console.print(Rule("4. commit, retrain, store version 2"))
    _run(["git", "commit", "-q", "-am", "train 60 epochs"], repo)
    _run(["nexus", "store", "model.pt", "demo_model", "--commit"], repo)
    _run(["nexus", "store", "model.pt", "demo_model"], repo)
    _run(["nexus", "list"], repo)

    console.print(Rule("5. load the latest version back, verified"))
    _run(["nexus", "load", "demo_model", "-o", "loaded.pt"], repo)
    _check_outputs(repo, "loaded.pt", "model.pt")

    console.print(Rule("6. roll back to version 1, and see the history"))
    _run(["nexus", "rollback", "demo_model", "--commit"], repo)
    _run(["nexus", "load", "demo_model", "-o", "rolled_back.pt"], repo)
    _check_outputs(repo, "rolled_back.pt", "v1.pt")
    _run(["nexus", "history", "demo_model"], repo)
    _run(["git", "log", "--oneline"], repo)

    console.print(Rule("done"))
    console.print(f"The demo repository was {repo}, with its store in {repo / '.nexus' / 'storage'}.")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("dir", nargs="?", type=Path, help="where to create the demo (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        if any(args.dir.iterdir()):
            raise SystemExit(f"{args.dir} is not empty; give an empty or new folder")
        run_demo(args.dir.resolve())
        return
    with tempfile.TemporaryDirectory(prefix="nexus-demo-") as tmp:
        run_demo(Path(tmp))
    console.print("That folder was temporary and is gone; `nexus demo DIR` keeps the demo in DIR.")


if __name__ == "__main__":
    main()
