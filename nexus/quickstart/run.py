"""`nexus quickstart [DIR]`: from nothing to a trained model served, queried and load-tested, on this machine.

Each step prints the command a user would type to do it by hand, then does it: a git repository
with a training script, training on scikit-learn's handwritten digits (shipped inside the package,
no download), `nexus store`, `nexus publish`, `nexus serve`, `nexus predict` on the test images
(checked against the model run in-process) and `nexus loadtest`. It ends with a summary, also
written to `DIR/quickstart.json`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console

from nexus.errors import QuickstartError
from nexus.quickstart.summary import Summary, print_summary
from nexus.serving.server import free_ports

MODEL = "digits"

#: The training script the quickstart's repository gets (a real script, linted with the package).
TRAIN_PY = Path(__file__).with_name("train_digits.py")

GITIGNORE = "model.pt2\n*.npy\nmetrics.json\nquickstart.json\n"


class Quickstart:
    def __init__(self, folder: Path, console: Console, users: int = 32, duration: float = 5.0) -> None:
        self.folder = folder
        self.console = console
        self.users = users
        self.duration = duration
        self.nexus = str(Path(sys.executable).with_name("nexus"))
        self.step = 0

    @contextmanager
    def _step(self, title: str, *commands: str) -> Iterator[None]:
        self.step += 1
        self.console.rule(f"[bold]{self.step}. {title}")
        for command in commands:
            self.console.print(f"[bold cyan]$ {command}[/]")
        start = time.monotonic()
        with self.console.status(f"{title}..."):
            yield
        self.console.print(f"[green]done[/] in {time.monotonic() - start:.1f}s")

    def _run(self, *args: str, show: bool = True) -> str:
        exe = {"nexus": [self.nexus], "python": [sys.executable]}.get(args[0], [args[0]])
        result = subprocess.run(
            [*exe, *args[1:]], cwd=self.folder, capture_output=True, text=True, check=False, env=self._env()
        )
        if show and result.stdout.strip():
            self.console.out(result.stdout.rstrip(), highlight=False)
        if result.returncode != 0:
            detail = (result.stderr.strip() or result.stdout.strip()).splitlines()
            raise QuickstartError(f"`{shlex.join(args)}` failed: {detail[-1] if detail else result.returncode}")
        return result.stdout

    @staticmethod
    def _env() -> dict[str, str]:
        env = dict(os.environ)
        for key, value in {
            "GIT_AUTHOR_NAME": "NexusML Quickstart",
            "GIT_AUTHOR_EMAIL": "quickstart@nexusml.invalid",
            "GIT_COMMITTER_NAME": "NexusML Quickstart",
            "GIT_COMMITTER_EMAIL": "quickstart@nexusml.invalid",
        }.items():
            env.setdefault(key, value)
        return env

    def run(self, keep_serving: bool = False) -> Summary:
        started = time.monotonic()
        folder = self.folder
        with self._step(
            "a git repository with a training script",
            f"mkdir {folder} && cd {folder} && git init",
            "git add train.py .gitignore && git commit -m 'Train a digit classifier'",
        ):
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "train.py").write_text(TRAIN_PY.read_text(encoding="utf-8"), encoding="utf-8")
            (folder / ".gitignore").write_text(GITIGNORE, encoding="utf-8")
            self._run("git", "init", "-q", "-b", "main", show=False)
            self._run("git", "add", "train.py", ".gitignore", show=False)
            self._run("git", "commit", "-q", "-m", "Train a digit classifier", show=False)

        with self._step("train on scikit-learn's handwritten digits and export", "python train.py"):
            self._run("python", "train.py")
            metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))

        with self._step(
            "store the model, pinned to the commit that trained it", f"nexus store model.pt2 {MODEL} --commit"
        ):
            self._run("nexus", "store", "model.pt2", MODEL, "--commit")
            from nexus.registry import Project

            project = Project.open(folder)
            version = project.resolve(MODEL)

        with self._step("publish it into a Triton model repository", f"nexus publish {MODEL}"):
            self._run("nexus", "publish", MODEL)
            repository = project.config.publish.repository

        ports = _ports()
        serve_args = ["--http-port", str(ports[0]), "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2])]
        shown_ports = "" if ports == (8000, 8001, 8002) else " " + shlex.join(serve_args)
        with self._step("serve it with Triton (dynamic batching, no Docker)", f"nexus serve{shown_ports} &"):
            server = subprocess.Popen(
                [self.nexus, "serve", *serve_args],
                cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self._env(),
            )  # fmt: skip
            url = f"http://127.0.0.1:{ports[0]}"
            self._wait_ready(server)
        try:
            with self._step(
                "query it with the test images, and compare with the model run in-process",
                f"nexus predict {MODEL} --input images=first_images.npy",
            ):
                served, first = self._predict(url, ports)
                self.console.out(first.rstrip(), highlight=False)
                import numpy as np
                import torch

                images = np.load(folder / "test_images.npy")
                labels = np.load(folder / "test_labels.npy")
                with open(folder / "model.pt2", "rb") as f, torch.inference_mode():
                    local = torch.export.load(f).module()(torch.from_numpy(images)).numpy()
                difference = float(np.abs(served - local).max())
                match = bool((served.argmax(1) == local.argmax(1)).all()) and difference < 1e-4
                served_accuracy = float((served.argmax(1) == labels).mean())
                self.console.print(
                    f"{len(images)} test images: served accuracy {served_accuracy:.4f}, in-process "
                    f"{metrics['accuracy']:.4f}; largest difference in the logits {difference:.2e}"
                )

            with self._step(
                f"load-test it: {self.users} users for {self.duration:g}s",
                f"nexus loadtest {MODEL} -u {self.users} -t {self.duration:g}s",
            ):
                from nexus.loadtest import LoadTestSettings, run_loadtest

                report = run_loadtest(
                    LoadTestSettings(
                        model=MODEL,
                        server=url,
                        users=self.users,
                        duration=self.duration,
                        results=folder / ".nexus" / "loadtest",
                    ),
                    time.strftime("%Y%m%d-%H%M%S"),
                )
            triton = report.triton if not isinstance(report.triton, str) else None
            batch = triton.average_batch if triton else None
            self.console.print(
                f"{report.requests} requests, {report.failures} failed, {report.requests_per_s:.0f} req/s, "
                f"p50 {report.p50_ms:.0f} ms, p99 {report.p99_ms:.0f} ms; Triton ran "
                + ("-" if batch is None else f"{batch:.1f}")
                + f" requests per forward pass. Locust's CSVs: {report.results}"
            )
            summary = Summary(
                folder=str(folder),
                model=MODEL,
                version=version.version,
                commit=version.commit_hash,
                stored_at=version.storage_uri,
                repository=str(repository),
                http=url,
                grpc=f"127.0.0.1:{ports[1]}",
                metrics=f"http://127.0.0.1:{ports[2]}/metrics",
                trained_accuracy=float(metrics["accuracy"]),
                served_accuracy=served_accuracy,
                test_images=int(metrics["test_images"]),
                predictions_match=match,
                max_abs_difference=difference,
                requests=report.requests,
                failures=report.failures,
                requests_per_s=report.requests_per_s,
                p50_ms=report.p50_ms,
                p99_ms=report.p99_ms,
                average_batch=batch,
                seconds=time.monotonic() - started,
            )
            (folder / "quickstart.json").write_text(json.dumps(asdict(summary), indent=2) + "\n", encoding="utf-8")
            print_summary(self.console, summary)
            if keep_serving:
                self._keep_serving(server, summary)
        finally:
            if server.poll() is None:
                server.send_signal(signal.SIGINT)
                try:
                    server.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    server.kill()
        return summary

    def _wait_ready(self, server: subprocess.Popen[str]) -> None:
        if server.stdout is None:  # pragma: no cover - started with stdout=PIPE
            raise QuickstartError("nexus serve has no output to read")
        lines: list[str] = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            line = server.stdout.readline()
            if not line:
                error = server.stderr.read().strip() if server.stderr else ""
                raise QuickstartError(f"nexus serve stopped: {error or ''.join(lines[-3:])}")
            lines.append(line)
            if line.startswith("Ready: "):
                self.console.out("".join(lines).rstrip(), highlight=False)
                return
        server.kill()
        raise QuickstartError("nexus serve was not ready after 300s; see .nexus/triton.log")

    def _predict(self, url: str, ports: tuple[int, int, int]) -> tuple[Any, str]:
        """All test images through Triton (32 per request, as the CLI would send them), and the CLI's output."""
        import numpy as np

        from nexus.serving.predict import predict

        images = np.load(self.folder / "test_images.npy")
        np.save(self.folder / "first_images.npy", images[:4])
        server = [] if ports[0] == 8000 else ["--server", url]
        first = self._run("nexus", "predict", MODEL, "--input", "images=first_images.npy", *server, show=False)
        chunks = []
        for start in range(0, len(images), 32):
            (output,) = predict(MODEL, {"images": images[start : start + 32]}, server=url).values()
            chunks.append(output)
        return np.concatenate(chunks), first

    def _keep_serving(self, server: subprocess.Popen[str], s: Summary) -> None:
        self.console.print(
            f"\nStill serving. From another terminal (cd {s.folder}):\n"
            f"  nexus predict {s.model} --random"
            + ("" if s.http.endswith(":8000") else f" --server {s.http}")
            + f"\n  nexus status\n  curl -s {s.http}/v2/models/{s.model}/infer -d "
            '\'{"inputs": [{"name": "images", "shape": [1, 8, 8], "datatype": "FP32", '
            '"data": ' + str([0.0] * 64).replace(" ", "") + "}]}'\n"
            "Press Ctrl-C to stop."
        )
        with suppress(KeyboardInterrupt):
            server.wait()


def _ports() -> tuple[int, int, int]:
    """8000/8001/8002 when they are free, else three free ports."""

    def free(port: int) -> bool:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
            return True

    if all(free(p) for p in (8000, 8001, 8002)):
        return 8000, 8001, 8002
    http, grpc, metrics = free_ports(3)
    return http, grpc, metrics


def check_folder(folder: Path) -> Path:
    """The quickstart's folder: new, or empty."""
    folder = folder.expanduser().resolve()
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise QuickstartError(f"{folder} is not an empty folder; give a new one: nexus quickstart DIR")
    if importlib.util.find_spec("sklearn") is None:
        raise QuickstartError("the quickstart trains with scikit-learn: pip install 'nexusml[quickstart]'")
    return folder
