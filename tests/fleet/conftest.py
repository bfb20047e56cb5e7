"""The fleet tests' fixtures: the releases on moto S3 (:func:`world`) and one fleet of 2 pods on the old
release, shared by the module's tests (each starts with :func:`fleet_on_old`: every pod Ready on the old
release, whatever the test before left), so the pods start once, not once per test."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from conftest import S3Server
from fleet.harness import Harness
from fleet.world import BUCKET, CREDENTIALS, World, build_world

#: The CI fleet: 2 replicas (`make fleet` runs 3).
REPLICAS = 2


@pytest.fixture(scope="module")
def world(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The releases (old, new, broken) in a bucket of the session's moto server, made once per module.

    Module-scoped fixtures run before the per-test sealed environment, so this one sets its own: a fake
    HOME and cache, and the bucket's keys (the pods' Secret holds the same)."""
    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's line per request
    root = tmp_path_factory.mktemp("fleet")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HOME", str(root / "home"))
        env.setenv("NEXUS_CACHE_DIR", str(root / "cache"))
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        for key, value in CREDENTIALS.items():
            env.setenv(key, value)
        s3_server.client().create_bucket(Bucket=BUCKET)
        yield build_world(root, s3_server.endpoint)


@pytest.fixture(scope="module")
def harness(world: World) -> Iterator[Harness]:
    fleet = Harness(world, REPLICAS)
    try:
        fleet.fleet.create(fleet.spec(world.old))
        yield fleet
    finally:
        fleet.close()


@pytest.fixture
def fleet_on_old(harness: Harness, world: World) -> Harness:
    """The shared fleet with every pod Ready on the old release and in the router's view, nothing terminating."""
    harness.fleet.rollout(harness.spec(world.old))
    harness.fleet.settle()
    _wait_heard(harness)
    return harness


def _wait_heard(harness: Harness) -> None:
    deadline = time.monotonic() + 30
    while set(harness.endpoints.view()) != set(harness.fleet.pods) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert set(harness.endpoints.view()) == set(harness.fleet.pods), "the router never heard of every pod"
