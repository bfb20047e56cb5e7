"""`make fleet`: the local fleet's long run, written to docs/scale-out.md.

Usage: python tests/fleet/report.py [--replicas 3] [--out docs/scale-out.md] [--load-s 30] [--render-only]

The figures are kept in build/fleet/results.json (``--results``); ``--render-only`` writes the page from them again.

The same harness as tests/fleet/test_fleet.py (real Tritons started with the rendered Deployment's args on
one moto S3 repository, the readiness-aware router, the Deployment controller's rolling update), with 3
replicas and every figure kept: each rollout's requests and failures, the time from the release to every
replica serving it, the broken release, the no-preStop controls, and the autoscaling metric over time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: helpers, fleet

from fleet.harness import (
    EXIT_TIMEOUT,
    PRESTOP,
    PROPAGATION,
    READINESS_FAILURES,
    READINESS_PERIOD,
    Harness,
    MetricSampler,
)
from fleet.load import Load, summary
from fleet.world import BUCKET, CREDENTIALS, World, build_world
from nexus.deploy.autoscale import AutoscaleSettings, render_hpa
from nexus.machine import cores, cpu_model
from nexus.release import Release

ROOT = Path(__file__).resolve().parents[2]
#: The autoscaling case's closed-loop load generators.
THREADS = 16


def _environment(tmp: Path) -> None:
    """What the test suite's sealed environment gives: a fake HOME, git identity, the bucket's keys."""
    os.environ.update(
        HOME=str(tmp / "home"),
        NEXUS_CACHE_DIR=str(tmp / "cache"),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_AUTHOR_NAME="Fleet",
        GIT_AUTHOR_EMAIL="fleet@example.com",
        GIT_COMMITTER_NAME="Fleet",
        GIT_COMMITTER_EMAIL="fleet@example.com",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=str(tmp / "aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp / "aws-credentials"),
        **CREDENTIALS,
    )


def rollout(h: Harness, target: Release, *, prestop: float | None = None, **load: Any) -> dict[str, Any]:
    """One rollout under load, from a settled fleet, with what the load generator saw."""
    with Load(h.router, h.world, **load) as gen:
        time.sleep(2)
        done = h.fleet.rollout(h.spec(target), prestop=prestop)
        h.fleet.settle()
        time.sleep(PROPAGATION + 1)
    outcomes = gen.snapshot()
    answered = [o for o in outcomes if o.error is None]
    by_target = [o.at - done.started for o in answered if o.answered_by == target.id]
    others = [o.at - done.started for o in answered if o.answered_by != target.id]
    return {
        **summary(outcomes),
        "pod_ready_s": done.ready_after,
        "complete_s": done.complete_after,
        "drained_s": done.drained_after,
        "first_new_s": min(by_target, default=None),
        "last_old_s": max(others, default=None),
        "endings": done.endings,
        "mismatched": sum(o.answered_by != o.release for o in outcomes if o.error is None),
    }


def broken(h: Harness, world: World, deadline: float) -> dict[str, Any]:
    old = list(h.fleet.pods)
    with Load(h.router, world) as gen:
        time.sleep(2)
        stalled = h.fleet.rollout(h.spec(world.broken), progress_deadline=deadline)
        pods = [p for p in h.fleet.pods if p.release == world.broken.id]
        started = time.monotonic()
        back = h.fleet.rollout(h.spec(world.old))
        rolled_back_s = time.monotonic() - started
        time.sleep(2)
    return {
        **summary(gen.snapshot()),
        "stalled": stalled.stalled,
        "surge_pods": len(pods),
        "restarts": sum(p.restarts for p in pods),
        "ever_ready": any(h.endpoints.ever(p) for p in pods),
        "old_kept": all(p in h.fleet.pods for p in old),
        "error": pods[0].server.errors().splitlines()[0] if pods else "",
        "deadline_s": deadline,
        "rolled_back_s": rolled_back_s,
        "back_stalled": back.stalled,
    }


def metric(h: Harness, world: World, load_s: float, window: float) -> dict[str, Any]:
    objects = render_hpa(world.old, AutoscaleSettings())
    target = float(objects["spec"]["metrics"][0]["pods"]["target"]["averageValue"])
    with MetricSampler(h.fleet, window=window) as sampler:
        time.sleep(3 * window + 0.5)
        started = time.monotonic() - sampler.started
        with Load(h.router, world, threads=THREADS, think=0) as gen:
            time.sleep(load_s)
        stopped = time.monotonic() - sampler.started
        time.sleep(5 * window + 0.5)
    return {
        **summary(gen.snapshot()),
        "target_us": target,
        "window_s": window,
        "load": [started, stopped],
        "samples": [(s.at, s.requests, s.queue_us) for s in sampler.samples],
    }


def desired(current: int, value: float, target: float, low: int, high: int) -> int:
    """The HPA's algorithm: ceil(current × value / target) outside a 10 % tolerance, within min and max."""
    ratio = value / target
    wanted = current if abs(ratio - 1) <= 0.1 else math.ceil(current * ratio)
    return max(low, min(high, wanted))


def _s(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} s"


def _reasons(result: dict[str, Any]) -> str:
    return "; ".join(f"{n} × {why}" for why, n in result["reasons"].items()) or "none"


def render(r: dict[str, Any]) -> str:
    replicas = r["replicas"]
    lines = [
        "# Scale-out: the Deployment's semantics on a local fleet",
        "",
        f"Measured {r['date']} on {r['machine']}, with `make fleet` (`python tests/fleet/report.py "
        f"--replicas {replicas}`), NexusML at {r['commit']}, tritonserver from nvidia-pytriton {r['pytriton']}.",
        "",
        "**These are local processes playing a Kubernetes Deployment's semantics, not a cluster.** Each replica is "
        "a real `tritonserver` started with exactly the container `args` that `nexus deploy k8s` renders "
        "(kubelet's `$(VAR)` expansion applied; only the addresses and ports made local), on the rendered "
        "`s3://http://…/releases/<id>` repository served by moto over HTTP. A readiness-aware round-robin router "
        "(a client-side balancer, standing for kube-proxy and a load balancer) polls each replica's "
        "`/v2/health/ready` at the rendered period and failure threshold and hears of every change after a "
        f"propagation delay of {PROPAGATION} s. A harness plays the Deployment controller's rolling update "
        "(maxSurge 1, maxUnavailable 0) and kubelet's termination: out of the endpoints, the preStop pause, "
        "SIGTERM, SIGKILL at the end of the grace period. The code is tests/fleet/ (test harness, not product); "
        "tests/fleet/test_fleet.py runs the same with 2 replicas in `make test`.",
        "",
        f"Scaled-down settings (`K8sSettings`): readiness period {READINESS_PERIOD} s × {READINESS_FAILURES} "
        f"failures, preStop {PRESTOP} s, `--exit-timeout-secs={EXIT_TIMEOUT}`, terminationGracePeriodSeconds "
        f"{r['grace']:.0f} s (read back from the rendered Deployment). {replicas} replicas of one tiny model "
        "(a 4→8→3 MLP, torch.export, Python backend). The load: 3 threads, each sending one 2×4 batch every "
        "10 ms over keep-alive connections recycled every 20 requests, no retries; every answer is checked "
        "against the model run in-process, which also says which release answered. "
        f"Starting the first {replicas} replicas took {r['startup_s']:.1f} s.",
        "",
        "## Rollouts",
        "",
        "Times are seconds after the re-render (the new template applied).",
        "",
        "| rollout | requests | failed | failures | new pods Ready at | every replica on it | "
        "first answer of it | last answer of the old | old pods ended |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, res in r["rollouts"]:
        ready = ", ".join(f"{t:.1f}" for t in res["pod_ready_s"])
        lines.append(
            f"| {name} | {res['sent']} | {res['failed']} | {_reasons(res)} | {ready} | {_s(res['complete_s'])} | "
            f"{_s(res['first_new_s'])} | {_s(res['last_old_s'])} | {_s(res['drained_s'])} |"
        )
    endings = Counter(e for _, res in r["rollouts"] for e in res["endings"])
    exit_1 = any(e.startswith("exited 1") for e in endings)
    lines += [
        "",
        "Every answer came from the release of the pod the router chose "
        f"({sum(res['mismatched'] for _, res in r['rollouts'])} mismatches). How the old pods ended: "
        + "; ".join(f"{n} × {e}" for e, n in endings.most_common())
        + "."
        + (
            " An exit status 1 is Triton's `failed to stop server: Internal - Exit timeout expired. Exiting "
            "immediately.`: the Python-backend model was still unloading when `--exit-timeout-secs` ran out, with "
            "no request in flight (the router had stopped sending the pod requests before SIGTERM)."
            if exit_1
            else ""
        ),
        "",
        "## A release whose model fails to load",
        "",
    ]
    b = r["broken"]
    lines += [
        "A complete release (manifest last, every sha256 right) whose `config.pbtxt` does not parse. "
        f"The rollout to it, under the same load: {b['sent']} requests, {b['failed']} failed "
        f"({_reasons(b)}); answers by release: "
        + ", ".join(f"{n} from {rid}" for rid, n in b["answered_by"].items())
        + f". The one surge pod ({b['surge_pods']}: maxSurge 1) crash-looped ({b['restarts']} restarts; Triton: "
        f"`{b['error']}`), was {'ever' if b['ever_ready'] else 'never'} in the endpoints, and the rollout "
        f"{'stalled' if b['stalled'] else 'did not stall'} at the progress deadline ({b['deadline_s']:.0f} s, "
        "the harness's; the rendered one is the startup timeout + 120 s) with every old pod "
        f"{'kept' if b['old_kept'] else 'NOT kept'} (maxUnavailable 0). Rolling back to the old template deleted "
        f"the broken pod at once (never Ready, it counted for nothing) and left the old pods as they were "
        f"({'stalled' if b['back_stalled'] else 'done'} in {b['rolled_back_s']:.1f} s).",
        "",
        "## The controls: SIGTERM with no preStop pause",
        "",
        "The rollouts above again with the pause taken out (the harness's override; `nexus deploy k8s` refuses a "
        "preStop not longer than the readiness reaction), so SIGTERM comes while the router still sends the pod "
        f"requests for {PROPAGATION} s. This shows the harness can see failures.",
        "",
        "| control | requests | failed | failures |",
        "|---|---|---|---|",
    ]
    for name, res in r["controls"]:
        lines.append(f"| {name} | {res['sent']} | {res['failed']} | {_reasons(res)} |")
    lines += [
        "",
        "What Triton does on SIGTERM, as seen here: it keeps answering on the HTTP connections already open, "
        "waiting for them to close for up to `--exit-timeout-secs`, and resets every new connection at once. "
        "A client that only reuses old connections is therefore carried through the propagation delay by that "
        "drain (the second control); clients that open connections, as load balancers and a Service's "
        "clients do, are not, and only the preStop pause keeps them from failing.",
        "",
        "## The autoscaling metric",
        "",
    ]
    m = r["metric"]
    start, stop = m["load"]
    lines += [
        "`nexus_triton_queue_us_per_request` as the HPA would see it: each window's scrapes of every replica's "
        "`/metrics`, through `nexus.deploy.queue_metric.fleet_queue_us_per_request` (the adapter rule's formula: "
        "the queue time's increase over the successes' increase, per pod, averaged over the pods), with a "
        f"{m['window_s']:.0f} s window in place of the rule's 1 minute. Load ({THREADS} threads, closed loop) from "
        f"{start:.0f} s to {stop:.0f} s: {m['sent']} requests, {m['failed']} failed. The last column is what the "
        f"HPA's algorithm asks for at the rendered target ({m['target_us']:.0f} µs, min 2, max 8 replicas) from "
        f"{replicas} replicas.",
        "",
        "| t (s) | phase | requests in the window | queue µs per request | desired replicas |",
        "|---|---|---|---|---|",
    ]
    for at, requests, value in m["samples"]:
        overlap = max(0.0, min(at, stop) - max(at - m["window_s"], start)) / m["window_s"]
        phase = "load" if overlap > 0.9 else "idle" if overlap == 0 else f"load {overlap:.0%} of it"
        wanted = desired(replicas, value, m["target_us"], 2, 8)
        lines.append(f"| {at:.0f} | {phase} | {requests} | {value:.0f} | {wanted} |")
    peak = max((value for _, _, value in m["samples"]), default=0.0)
    scaled = max((desired(replicas, v, m["target_us"], 2, 8) for _, _, v in m["samples"]), default=replicas)
    lines += [
        "",
        f"The metric peaked at {peak:.0f} µs per request under load and fell to 0 once idle. "
        + (
            f"That is below the rendered target: for this load the HPA would ask for {scaled} replicas, the "
            "minimum (it scales on queue time per request, not on request rate; a scale-down waits out its "
            "300 s stabilization window)."
            if scaled < replicas
            else f"The HPA would have asked for up to {scaled} replicas."
        ),
        "",
        "## What this does not show",
        "",
        "No cluster ran: no kubelet, kube-proxy, EndpointSlice controller, Prometheus, prometheus-adapter or HPA. "
        "The harness plays their documented behaviour; the startup and liveness probes are not played (the "
        "readiness poll starts at once), the pods inherit this process's environment under the container's "
        "`env`, and the HPA's scaling itself is computed, not performed. The figures are from one 2-core machine "
        "shared with other work, where a Triton start takes seconds of CPU.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "scale-out.md")
    parser.add_argument("--load-s", type=float, default=30.0)
    parser.add_argument("--results", type=Path, default=ROOT / "build" / "fleet" / "results.json")
    parser.add_argument("--render-only", action="store_true", help="render --results again, run nothing")
    args = parser.parse_args()
    if args.render_only:
        args.out.write_text(render(json.loads(args.results.read_text(encoding="utf-8"))), encoding="utf-8")
        return
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="nexus-fleet-"))
    _environment(tmp)
    moto = ThreadedMotoServer("127.0.0.1", 0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    world = build_world(tmp, endpoint)
    h = Harness(world, args.replicas)
    results: dict[str, Any] = {"replicas": args.replicas, "grace": h.spec(world.old).grace}
    try:
        started = time.monotonic()
        h.fleet.create(h.spec(world.old))
        results["startup_s"] = time.monotonic() - started

        def step(what: str) -> None:
            print(f"[{time.monotonic() - started:6.0f} s] {what}", flush=True)

        step("rollout to the new release")
        forward = rollout(h, world.new)
        step("rollout back")
        back = rollout(h, world.old)
        results["rollouts"] = [("to the new release", forward), ("back to the old release", back)]
        step("broken release")
        results["broken"] = broken(h, world, deadline=30)
        step("control: no preStop")
        control = rollout(h, world.new, prestop=0)
        step("control: no preStop, keep-alive only")
        kept = rollout(h, world.old, prestop=0, per_connection=None)
        results["controls"] = [
            ("no preStop, to the new release (connections recycled every 20 requests)", control),
            ("no preStop, back to the old release (keep-alive connections never recycled)", kept),
        ]
        step("autoscaling metric")
        results["metric"] = metric(h, world, args.load_s, window=3.0)
        step("done")
    finally:
        h.close()
        moto.stop()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    results.update(
        date=f"{datetime.now(UTC):%Y-%m-%d}",
        machine=f"{cpu_model()}, {cores()} cores, {platform.system()} {platform.release()}",
        commit=commit.stdout.strip() or "?",
        pytriton=version("nvidia-pytriton"),
    )
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=1), encoding="utf-8")
    args.out.write_text(render(results), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
