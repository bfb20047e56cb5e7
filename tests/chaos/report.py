"""Render the chaos suite's recorded outcomes (JSON lines) as docs/reliability.md.

Usage: python tests/chaos/report.py OUTCOMES.jsonl docs/reliability.md

`make reliability` runs the suite with ``NEXUS_CHAOS_RECORD=OUTCOMES.jsonl`` and then this script.
One row per scenario: how often it was tried, what happened, how often each guarantee was broken
(zeros included: they are the point), and the details: what the fault proxy injected, how long a
server took to serve again, how many requests failed, what the server answered, its memory.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nexus.machine import cores, cpu_model

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
GROUP_ORDER = ["Storage faults", "Interrupts", "Concurrency", "Serving under stress", "Malformed requests"]
STATUS_NAMES = {"0": "no answer"}
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
    "slow or no recovery": "a kill (or a huge body) after which the server did not answer a good request "
    "within 30 s (a stub: the model reloads) or 60 s (Triton: it restarts)",
    "requests failed after recovery": "a good request not answered 200 once the server served again: 20 sent "
    "one after another after each kill, every request sent by the clients after the model was reloaded, 20 "
    "after the overload",
    "crash logs missing": "a Triton death after which `nexus serve` kept no `triton.crash-*.log`",
    "timeouts": "a request under overload that got no answer: none within 30 s, or its connection reset",
    "errors other than 503": "an answer under overload other than 200 or the bounded queue's 503",
    "slow refusals": "an overload run whose 503s took 1 s or more at the 99th percentile",
    "failed requests under steady load": "a good request not answered 200 during the sustained load",
    "memory growth over bound": "a sustained run in which Triton and its stubs together grew by 64 MB of "
    "resident memory or more (median of the last quarter of the samples against the second quarter)",
    "dead stubs unreported": "a killed stub that `nexus status` did not list as dead",
    "server deaths": "a malformed request after which Triton was no longer running",
    "wrong answers": "a 200 whose outputs differ from the model run in-process on the same inputs (rtol and atol 1e-5)",
    "bad refusals": "an answer that is neither a 200 nor a refusal naming its reason: a 4xx with an error, "
    "or Triton's 500 for a body its parser cannot read (matched by message)",
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
  services.

Serving, on Triton 2.51 (CPU, Python backend):

- Triton keeps a model READY when one of its Python-backend stubs dies and never starts a new one:
  every request sent to that instance fails ("Stub process is not healthy"). With two instances (the
  automatic count) the other one keeps answering: only the requests Triton sends to the dead one
  fail until the model is reloaded. `nexus serve` watches the stubs and reloads the model; `nexus
  status` lists dead stubs when nothing does (`test_status_shows_a_dead_stub_and_the_failed_requests`).
- Found and fixed: Triton skips a load request for a model whose version folders have not changed
  since it loaded it, so `nexus serve`'s reload was a no-op from the second stub death on (the first
  worked only because the first load writes `__pycache__` into the version folder), and the model
  stayed broken. `nexus serve` now touches the version folders before the load (a bucket: unloads
  first); the idle-stub scenario kills twice even in CI
  (`test_a_killed_backend_stub_is_detected_and_the_model_reloaded`).
- A JSON body of about 64 MB crashes Triton 2.51's HTTP frontend (no answer; the whole server
  dies). Upstream fixed it with `--http-max-input-size`, which 2.51 lacks; `nexus serve` restarts
  Triton on the same ports and keeps the dead server's log as `triton.crash-*.log`.
- Triton answers 500, not 400, for a body its JSON parser cannot parse (nearly every random-bytes
  body); the suite accepts exactly those 500s, by message.
- `nexus serve` gives up after more than 3 Triton deaths in a minute (a crash loop is not worth
  hiding); the Triton-kill scenario spaces its kills to stay within that.""".splitlines()


def _count(counter: Counter[str], unit: dict[str, str] | None = None) -> str:
    return ", ".join(f"{n} × {unit.get(k, k) if unit else k}" for k, n in counter.most_common())


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 or word.endswith("s") else f"{n} {word}s"


def _machine() -> str:
    return (
        f"{platform.system()} {platform.release()}, {cpu_model()}, {cores()} CPUs, Python {platform.python_version()}"
    )


def _commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=False).stdout.strip()

    sha = git("rev-parse", "--short", "HEAD") or "unknown"
    return sha + (" with uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def render(
    lines: list[dict[str, Any]], iterations: str | None, args: str, settings: dict[str, str] | None = None
) -> str:
    """The report's markdown. ``settings``: the other make variables of the run (``SUSTAINED_S``, ...)."""
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
        + "".join(f" {name}={value}" for name, value in (settings or {}).items())
        + (f" CHAOS_ARGS='{args}'`" if args else "`")
        + f": {total} attempts in all, **{broken} broken guarantees**.",
        "",
        "Every scenario is a test in `tests/chaos/` that asserts its guarantees after each attempt;",
        "the same tests run in CI (`make test`) with one iteration each. Storage faults come from",
        "`tests/chaos/fault_proxy.py`, an HTTP proxy on loopback in front of the moto S3 server and the",
        "GCS emulator that decides, per request and from a seeded RNG, to delay it, answer 500, 503 or",
        "404 with the service's own error body, cut it mid-request, mid-answer or right after the answer's",
        "status line, flip a byte of the answer, or let the link die for good.",
        "",
        "The serving scenarios run a real Triton (2.51, the `tritonserver` of the nvidia-pytriton wheel,",
        "on CPU) serving a torch.export model through its Python backend. Most start `nexus serve` as a",
        "subprocess, as a user does, then SIGKILL one of the model's Python-backend stubs (on an idle",
        "server, or while 4 clients send requests) or Triton itself, send a 64 MB JSON body, or keep 8",
        "clients sending for minutes while the resident memory of Triton and its stubs is sampled twice a",
        "second. Recovery is the time from the kill (or the body) to the first good answer. The kills",
        "repeat `CHAOS_ITERATIONS` times in one server, at most 10 (an idle stub twice at least; Triton",
        "no more than 3 times a minute, beyond which `nexus serve` gives up by design), the 64 MB body at",
        "most 3 times; in CI the load lasts 20 s and each fuzz test sends 120 requests. The overload",
        "scenario points 48 clients at a slow model behind a bounded queue, and the `nexus status`",
        "scenario kills every stub with nothing to reload them, both on a bare Triton. The malformed",
        "requests are drawn by hypothesis (JSON with wrong names, shapes, datatypes and data; random",
        "bytes; binary-tensor requests whose header lengths lie) and sent to a running Triton, one row",
        "per kind and one attempt per request; every 200 is checked against the model run in-process.",
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
        "make reliability                        # CHAOS_ITERATIONS=50 SUSTAINED_S=300 FUZZ_EXAMPLES=2000: this report",
        "make reliability CHAOS_ITERATIONS=10    # a shorter run",
        "make reliability SUSTAINED_S=600        # ten minutes of steady load instead of five",
        "make reliability FUZZ_EXAMPLES=5000     # requests per fuzz test (half as many of random bytes)",
        "make reliability CHAOS_ARGS='-k serving'  # the serving scenarios alone (about 15 minutes)",
        ".venv/bin/pytest -m chaos               # the quick part alone (it also runs in `make test`)",
        "NEXUS_CHAOS_SEED=123 NEXUS_CHAOS_ITERATIONS=1 .venv/bin/pytest tests/chaos -k transient  # replay a seed",
        "NEXUS_SUSTAINED_S=60 .venv/bin/pytest tests/chaos/test_serving_stress.py -k sustained  # one scenario",
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
    parts += _serving_details(runs)
    return "; ".join(parts) or "–"


def _serving_details(runs: list[dict[str, Any]]) -> list[str]:
    """Recovery times, failed requests, answers by status, refusal latency, memory, body sizes."""
    parts = []
    recovery = sorted(r["recovery_s"] for r in runs if r.get("recovery_s") is not None)
    if len(recovery) == 1:
        parts.append(f"recovery {recovery[0]:.1f} s")
    elif recovery:
        parts.append(f"recovery median {statistics.median(recovery):.1f} s, max {recovery[-1]:.1f} s")
    if any("failed" in r for r in runs):
        load = sum(r.get("load_s", 0) for r in runs)
        parts.append(
            f"{sum(r.get('failed', 0) for r in runs)} of {sum(r.get('requests', 0) for r in runs)} requests failed"
            + (f" in {load:.0f} s" if load else "")
        )
    during: Counter[str] = Counter()
    for r in runs:
        during.update(r.get("during_reload", {}))
    if during:
        parts.append(f"sent between the kill and the reload: {during['failed']} failed, {during['answered']} answered")
    statuses: Counter[str] = Counter()
    for r in runs:
        statuses.update(r.get("statuses", {}))
    if statuses:
        parts.append("answers: " + _count(statuses, STATUS_NAMES))
    for r in runs:
        if r.get("refusal_ms"):
            parts.append(f"503 after {r['refusal_ms']['median']:.0f} ms median, {r['refusal_ms']['p99']:.0f} ms p99")
        if "rss_mb" in r:
            rss = r["rss_mb"]
            parts.append(
                f"Triton + stubs RSS {rss['first']:.0f} → {rss['last']:.0f} MB ({rss['last'] - rss['first']:+.0f} MB, "
                f"bound +{rss['bound']} MB; max {rss['max']:.0f} MB)"
                + (f", by tenth of the run: {', '.join(str(v) for v in rss['tenths'])} MB" if rss.get("tenths") else "")
            )
    sizes = [r["bytes"] for r in runs if "bytes" in r]
    if sizes:
        parts.append(f"bodies of {_size(min(sizes))} to {_size(max(sizes))}")
    return parts


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    return f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.1f} MiB"


def main() -> None:
    source, target = Path(sys.argv[1]), Path(sys.argv[2])
    lines = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise SystemExit(f"{source} holds no outcomes: run the suite with NEXUS_CHAOS_RECORD={source} first")
    iterations = os.environ.get("NEXUS_CHAOS_ITERATIONS")
    settings = {
        name: os.environ[f"NEXUS_{name}"] for name in ("SUSTAINED_S", "FUZZ_EXAMPLES") if f"NEXUS_{name}" in os.environ
    }
    target.write_text(render(lines, iterations, os.environ.get("CHAOS_ARGS", "").strip(), settings), encoding="utf-8")
    print(f"Wrote {target}: {len(lines)} attempts")


if __name__ == "__main__":
    main()
