"""Render the chaos suite's recorded outcomes (JSON lines) as docs/reliability.md.

Usage: python tests/chaos/report.py OUTCOMES.jsonl docs/reliability.md

`make reliability` runs the suite with ``NEXUS_CHAOS_RECORD=OUTCOMES.jsonl`` and then this script.
One row per scenario: how often it was tried, what happened, how often each guarantee was broken
(zeros included: they are the point), and what the fault proxy injected.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FAULT_NAMES = {
    "delay": "delayed",
    "error_500": "500",
    "error_503": "503 (S3 SlowDown / GCS backendError)",
    "cut_request": "cut mid-request",
    "cut_response": "cut mid-answer",
    "truncated_head": "answer cut after its status line or head",
    "corrupt": "byte flipped",
    "outage": "link died",
    "error_404": "404 (S3 NoSuchUpload / GCS notFound)",
}
GROUP_ORDER = ["Storage faults", "Interrupts", "Concurrency"]
GUARANTEE_TEXT = {
    "corrupt objects": "an object at a version's final key whose bytes are not the file's",
    "metadata changes": "`.nexus_meta.json` changed by an attempt that failed",
    "lost versions": "an attempt reported as done whose version is missing or wrong in the metadata, "
    "or a retry after the fault that could not store the same file",
    "unclean errors": "a failure other than a NexusML error (which the CLI prints as one line, exit 1 "
    "or 130 for Ctrl-C)",
    "corrupt cache files": "a cache entry whose bytes do not hash to its name, or a temporary file left",
    "stale uploads": "a multipart upload left open that NexusML knew of and could reach to abort",
    "wrong loads": "a load that returned other bytes, or left a file after failing",
    "gave up on transient faults": "a store or load that failed although no request was faulted more "
    "than twice in a row",
    "duplicate versions": "one object recorded as two versions",
    "history breaks": "a history event that does not start where the previous one ended, a version "
    "without its store event, or a reported rollback missing",
    "unrecorded objects": "an object in the bucket that no version records",
    "broken reads": "a `list` that saw a model without exactly one latest version, or a load of other bytes",
    "unexpected errors": "an operation that failed other than by a legitimate refusal (nothing to roll back)",
    "broken commits": "a git commit of `.nexus_meta.json` that does not parse",
}


#: What the suite found when it was written, and the limits it leaves: history, not measurements.
FINDINGS = """## What the suite found, and what it leaves

Found and fixed when the suite was written (each but the last has a test that fails without the
fix):

- An S3 download whose body was cut half-way failed the load: botocore retries a request only
  until its answer starts. `S3Storage.download` now asks for the rest with `Range`, pinned to the
  first answer's ETag with `If-Match` (`test_download_cut_mid_body_resumes_and_is_verified`).
- A lost answer to `CompleteMultipartUpload`, retried, meets `NoSuchUpload` (S3 and MinIO forget a
  completed upload): the store failed although the object was whole. It is now treated as "the key
  is taken", so NexusML hashes the stored bytes and records them (`test_lost_answer_...`).
- An answer cut right after its status line or its head reads as a complete, bodiless success:
  a missing `UploadId`, `ETag` or `Content-Length` became a `KeyError` ("a bug in nexus", exit 3),
  and an empty GCS JSON answer a `JSONDecodeError`. Both are now clean storage errors
  (`test_answers_cut_after_the_status_line_never_pass_for_success`).
- A GCS resumable session that the server stops accepting (a chunk it got only part of, then a
  resend it refuses; a session finished by an answer that was lost) failed the store; the upload
  now starts again in a new session, up to three times (`test_lost_answer_...[gcs-large]`).
- `store --commit` (and the new `rollback(commit=True)`) ran `git add`/`git commit` outside the
  work tree's lock, so two processes storing at once could fail on git's `index.lock` after
  recording their version; the commit and the dirty check now run under the lock
  (`test_store_commit_waits_for_another_commit_instead_of_failing_on_git_index_lock`).
- A Ctrl-C right after `CreateMultipartUpload` returned could leave the upload open: the abort now
  covers every line after it (found by reading the code for the interrupt scenario; no test hits
  a window that small).

Left as they are:

- A multipart upload whose creation answer is lost in transit stays open on the server (the
  client never learned its id). It is invisible and holds no object; a bucket lifecycle rule
  (`AbortIncompleteMultipartUpload`) removes it. The suite counts these apart and aborts them.
- The Python GCS SDK resends a cut chunk from the chunk's start instead of asking the session how
  much it kept; the emulator then refuses the session (real GCS documents the status query). With
  NexusML's restarts such uploads succeed or fail cleanly; "transient" runs do not cut chunks.
- The emulators are lenient where S3 and GCS are not (the GCS emulator ignores
  `ifGenerationMatch`; http.server takes a request head cut between two lines for a whole one);
  the proxy's cuts are placed so that each fault means on the emulators what it means on the real
  services.""".splitlines()


def _count(counter: Counter[str], unit: dict[str, str] | None = None) -> str:
    return ", ".join(f"{n} × {unit.get(k, k) if unit else k}" for k, n in counter.most_common())


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 or word.endswith("s") else f"{n} {word}s"


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def _commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=False).stdout.strip()

    sha = git("rev-parse", "--short", "HEAD") or "unknown"
    return sha + (" with uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def render(lines: list[dict[str, Any]], iterations: str | None, args: str) -> str:
    scenarios: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for line in lines:
        scenarios[line["group"]][line["scenario"]].append(line)
    when = datetime.fromtimestamp(max((line["at"] for line in lines), default=0), UTC).strftime("%Y-%m-%d %H:%M UTC")
    total = len(lines)
    broken = sum(sum(line["violations"].values()) for line in lines)
    out = [
        "# Reliability: what the chaos suite tried, and what happened",
        "",
        "<!-- Generated by `make reliability` (tests/chaos/report.py); edit those, not this file. -->",
        "",
        f"Run on {when}, on {_machine()}, at commit {_commit()}, by",
        f"`make reliability CHAOS_ITERATIONS={iterations or '(quick defaults)'}"
        + (f" CHAOS_ARGS='{args}'`" if args else "`")
        + f": {total} attempts in all, **{broken} broken guarantees**.",
        "",
        "Every scenario is a test in `tests/chaos/` that asserts its guarantees after each attempt;",
        "the same tests run in CI (`make test`) with one iteration each. Faults come from",
        "`tests/chaos/fault_proxy.py`, an HTTP proxy on loopback in front of the moto S3 server and the",
        "GCS emulator that decides, per request and from a seeded RNG, to delay it, answer 500, 503 or",
        "404 with the service's own error body, cut it mid-request, mid-answer or right after the answer's",
        "status line, flip a byte of the answer, or let the link die for good.",
    ]
    for group in sorted(scenarios, key=lambda g: (GROUP_ORDER.index(g) if g in GROUP_ORDER else 99, g)):
        names = {name for runs in scenarios[group].values() for r in runs for name in r["violations"]}
        order = list(GUARANTEE_TEXT)
        columns = sorted(names, key=lambda n: (order.index(n) if n in order else len(order), n))
        out += ["", f"## {group}", "", "| scenario | tried | what happened | details |", "| --- | ---: | --- | --- |"]
        matrix = []
        for scenario, runs in scenarios[group].items():
            outcomes = Counter(r["outcome"] for r in runs)
            violations: Counter[str] = Counter()
            faults: Counter[str] = Counter()
            for r in runs:
                violations.update(r["violations"])
                faults.update(r.get("faults", {}))
            out.append(f"| {scenario} | {len(runs)} | {_count(outcomes)} | {_details(runs, faults)} |")
            checked = {name for r in runs for name in r["violations"]}
            cells = [(f"**{violations[c]}**" if violations[c] else "0") if c in checked else "–" for c in columns]
            matrix.append(f"| {scenario} | {' | '.join(cells)} |")
        if columns:
            out += [
                "",
                "Guarantees broken, counted after every attempt (– : not checked by the scenario;",
                "[what they mean](#the-guarantees)):",
                "",
                f"| scenario | {' | '.join(columns)} |",
                "| --- |" + " ---: |" * len(columns),
                *matrix,
            ]
    used = {name for line in lines for name in line["violations"]}
    out += ["", "## The guarantees", ""]
    out += [f"- **{name}**: {text}." for name, text in GUARANTEE_TEXT.items() if name in used]
    out += ["", *FINDINGS]
    out += [
        "",
        "## Running it",
        "",
        "```bash",
        "make reliability                        # NEXUS_CHAOS_ITERATIONS=50 and this report",
        "make reliability CHAOS_ITERATIONS=10    # a shorter run",
        ".venv/bin/pytest -m chaos               # the quick part alone (it also runs in `make test`)",
        "NEXUS_CHAOS_SEED=123 NEXUS_CHAOS_ITERATIONS=1 .venv/bin/pytest tests/chaos -k transient  # replay a seed",
        "```",
        "",
    ]
    return "\n".join(out)


def _details(runs: list[dict[str, Any]], faults: Counter[str]) -> str:
    parts = []
    requests = sum(r.get("requests", 0) for r in runs)
    if faults:
        parts.append(
            ("faults injected" + (f" in {requests} requests" if requests else "")) + ": " + _count(faults, FAULT_NAMES)
        )
    moments = Counter(r["moment"] for r in runs if "moment" in r)
    if moments:
        parts.append("signal during " + _count(moments))
    excused = sum(r.get("orphans_excused", 0) for r in runs)
    if excused:
        parts.append(f"{_plural(excused, 'upload')} orphaned by an answer lost in transit (aborted by the test)")
    operations: Counter[str] = Counter()
    actions: Counter[str] = Counter()
    for r in runs:
        operations.update(r.get("operations", {}))
        actions.update(r.get("store_actions", {}))
    if operations:
        parts.append("operations: " + _count(operations))
    if actions:
        parts.append("stores: " + _count(actions))
    seconds = [r["seconds"] for r in runs if "seconds" in r]
    if seconds:
        parts.append(f"{sum(seconds) / len(seconds):.1f} s per round")
    return "; ".join(parts) or "–"


def main() -> None:
    source, target = Path(sys.argv[1]), Path(sys.argv[2])
    lines = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise SystemExit(f"{source} holds no outcomes: run the suite with NEXUS_CHAOS_RECORD={source} first")
    iterations = os.environ.get("NEXUS_CHAOS_ITERATIONS")
    target.write_text(render(lines, iterations, os.environ.get("CHAOS_ARGS", "").strip()), encoding="utf-8")
    print(f"Wrote {target}: {len(lines)} attempts")


if __name__ == "__main__":
    main()
