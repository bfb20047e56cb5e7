"""The autoscaling metric from a real Triton's scrapes: higher while requests queue than after the load."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from helpers import serve_one_model
from nexus.deploy.queue_metric import QUEUE_DURATION, REQUEST_SUCCESS, parse_exposition, replica_queue_us_per_request
from nexus.serving.model_config import ServingOptions

BODY = json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [0.5] * 4}]}).encode()


def counted(text: str) -> float:
    return sum(v for (name, _), v in parse_exposition(text).items() if name == REQUEST_SUCCESS)


@pytest.mark.slow
def test_the_queue_time_per_request_rises_under_load_and_falls_after(tmp_path: Path) -> None:
    # one instance, so concurrent requests wait for it
    server, _ = serve_one_model(tmp_path, ServingOptions(instances=1, max_batch_size=4))
    metrics = f"http://127.0.0.1:{server.metrics_port}/metrics"

    def infer() -> None:
        request = urllib.request.Request(f"{server.url}/v2/models/m/infer", data=BODY)
        with urllib.request.urlopen(request, timeout=60) as r:
            assert r.status == 200

    def scrape() -> str:
        with urllib.request.urlopen(metrics, timeout=10) as r:
            return str(r.read().decode())

    def settled(expected: float) -> str:
        """A scrape once Triton's counters include every request answered so far."""
        deadline = time.monotonic() + 15
        while True:
            text = scrape()
            if counted(text) >= expected or time.monotonic() > deadline:
                return text
            time.sleep(0.2)

    with server:
        infer()
        start = settled(1)
        assert any(name == QUEUE_DURATION for name, _ in parse_exposition(start))

        stop = threading.Event()
        done: list[int] = []

        def client() -> None:
            while not stop.is_set():
                infer()
                done.append(1)

        threads = [threading.Thread(target=client) for _ in range(24)]
        for t in threads:
            t.start()
        time.sleep(4)
        stop.set()
        for t in threads:
            t.join()
        loaded = settled(1 + len(done))

        for _ in range(40):  # after the load: the same requests, one at a time
            infer()
        after = settled(1 + len(done) + 40)

    under_load = replica_queue_us_per_request(start, loaded)
    afterwards = replica_queue_us_per_request(loaded, after)
    assert len(done) > 40, "the load sent too few requests to queue"
    assert under_load > 2 * afterwards, (under_load, afterwards)
    assert under_load > 0
