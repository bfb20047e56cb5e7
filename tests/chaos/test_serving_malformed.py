"""Malformed inference requests, fuzzed with hypothesis against a real Triton serving a published model.

Every answer must be a refusal with a reason (4xx, or Triton's own 500 for a body its frontend cannot
parse), or, when the fuzzer happens to build a valid request, exactly what the model computes
in-process. The server must stay up and keep answering good requests.

Every request is recorded for docs/reliability.md (group "Malformed requests"): what Triton answered,
and whether it stayed up and answered correctly. ``$NEXUS_FUZZ_EXAMPLES`` sets how many requests each
test sends (120 in CI, half that of random bytes).
"""

from __future__ import annotations

import json
import math
import os
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chaos.conftest import Recorder
from helpers import serve_one_model
from nexus.serving.model_config import ServingOptions
from nexus.serving.server import TritonServer

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

GROUP = "Malformed requests"
EXAMPLES = int(os.environ.get("NEXUS_FUZZ_EXAMPLES", "120"))
#: Triton 2.51's HTTP frontend answers 500 (not 400) when it cannot parse the JSON or its data.
TRITON_PARSE_ERRORS = ("failed to parse the request JSON buffer", "Unable to parse", "failed to parse")


class Target:
    def __init__(self, server: TritonServer, artifact: Path) -> None:
        self.server = server
        self.module = torch.export.load(str(artifact)).module()
        self.answers: Counter[int] = Counter()

    def post(self, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
        """(status, body, headers) of the answer; status 0 when none came (refused, reset, timed out)."""
        request = urllib.request.Request(f"{self.server.url}/v2/models/m/infer", data=body, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=30) as r:
                return int(r.status), r.read(), dict(r.headers)
        except urllib.error.HTTPError as e:
            return int(e.code), e.read(), dict(e.headers)
        except OSError as e:
            return 0, str(e).encode(), {}

    def check(self, record: Recorder, scenario: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        """Send one request, record what came back and which guarantees it broke, then assert none."""
        status, answer, _ = self.post(body, headers)
        self.answers[status] += 1
        alive = self.server.is_alive()
        wrong, problem = 0, ""
        if status == 200:
            outcome = "answered 200, outputs correct"
            try:
                self.check_correct(body, answer, headers or {})
            except (AssertionError, ValueError, KeyError) as e:
                outcome, wrong, problem = "answered 200, outputs wrong", 1, f"{type(e).__name__}: {e}"
        else:
            error = _error(answer)
            if error and 400 <= status < 500:
                outcome = f"refused {status}"
            elif error and status == 500 and any(p in error for p in TRITON_PARSE_ERRORS):
                outcome = "refused 500 (Triton could not parse the body)"
            else:
                outcome = f"answered {status}: {error[:80]}" if status else "no answer"
                problem = f"{status}: {answer[:500]!r}"
        bad = int(status != 200 and bool(problem))
        record(
            GROUP,
            scenario,
            outcome,
            violations={"server deaths": int(not alive), "wrong answers": wrong, "bad refusals": bad},
            bytes=len(body),
        )
        assert alive, "Triton died"
        assert not wrong, problem
        assert not bad, f"neither an answer nor a refusal with a reason: {problem}"

    def check_correct(self, body: bytes, answer: bytes, headers: dict[str, str]) -> None:
        """A request the server accepted: its answer is what the model computes on those inputs."""
        length = int(headers.get("Inference-Header-Content-Length", len(body)))
        request = json.loads(body[:length])
        (tensor,) = request["inputs"]
        if "data" in tensor:
            x = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
        else:
            x = np.frombuffer(body[length:], dtype="<f4").reshape(tensor["shape"])
        with torch.inference_mode():
            expected = self.module(torch.from_numpy(x.copy())).numpy()
        output = json.loads(answer)["outputs"][0]
        got = np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)

    def still_serves(self) -> None:
        x = np.ones((1, 4), dtype=np.float32)
        body = json.dumps(
            {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": x.ravel().tolist()}]}
        )
        status, _, _ = self.post(body.encode())
        assert status == 200


def _error(answer: bytes) -> str:
    """The reason in a refusal's JSON body (``{"error": "..."}``), or "" if it names none."""
    try:
        error = json.loads(answer).get("error")
    except (ValueError, AttributeError):
        return ""
    return error if isinstance(error, str) else ""


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    server, artifact = serve_one_model(tmp_path_factory.mktemp("fuzz"), ServingOptions(max_queue_delay_us=500))
    with server:
        t = Target(server, artifact)
        yield t
        t.still_serves()
        print(f"fuzzed answers by status: {dict(sorted(t.answers.items()))}")  # also in docs/reliability.md
    assert t.answers.get(200), "the fuzzer also sends valid requests, and they are answered"
    assert t.answers.get(400), "and invalid ones, refused"


DATATYPES = st.sampled_from(["FP32", "FP16", "INT64", "INT8", "BOOL", "BYTES", "fp32", "FLOAT", ""])
SHAPES = st.lists(st.integers(min_value=-3, max_value=40), min_size=0, max_size=4)
VALUES = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.booleans(),
    st.text(max_size=5),
    st.none(),
)


@st.composite
def json_requests(draw: st.DrawFn) -> bytes:
    shape = draw(st.one_of(SHAPES, st.just([draw(st.integers(1, 40)), 4])))
    count = math.prod(s for s in shape if s > 0) if shape else 1
    size = draw(st.one_of(st.just(min(count, 4096)), st.integers(0, 64)))
    data: Any = draw(st.lists(VALUES, min_size=size, max_size=size))
    if draw(st.booleans()):
        data = [float(draw(st.floats(-10, 10, width=32))) for _ in range(min(count, 4096))]
    tensor: dict[str, Any] = {
        "name": draw(st.sampled_from(["input", "INPUT", "x", ""])),
        "shape": shape,
        "datatype": draw(DATATYPES),
        "data": data,
    }
    for key in draw(st.sets(st.sampled_from(["name", "shape", "datatype", "data"]), max_size=1)):
        del tensor[key]
    body: Any = {"inputs": draw(st.sampled_from([[tensor], [tensor, tensor], [], tensor]))}
    if draw(st.booleans()):
        body["outputs"] = [{"name": draw(st.sampled_from(["output", "nope", ""]))}]
    return json.dumps(body).encode()


@st.composite
def valid_requests(draw: st.DrawFn) -> bytes:
    rows = draw(st.integers(min_value=1, max_value=32))
    data = draw(st.lists(st.floats(-1e3, 1e3, width=32), min_size=rows * 4, max_size=rows * 4))
    return json.dumps({"inputs": [{"name": "input", "shape": [rows, 4], "datatype": "FP32", "data": data}]}).encode()


#: Short bodies and bodies of any length up to 2 KiB: `st.binary(max_size=2048)` alone stays under ~40 bytes.
RANDOM_BYTES = st.one_of(
    st.binary(max_size=64), st.integers(0, 2048).flatmap(lambda n: st.binary(min_size=n, max_size=n))
)
#: `record` is function-scoped on purpose: one recorder for every example of a test.
FUNCTION_SCOPED = [HealthCheck.function_scoped_fixture]


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=FUNCTION_SCOPED)
@given(body=st.one_of(json_requests(), valid_requests()))
def test_fuzzed_json_requests_are_refused_or_answered_correctly(target: Target, record: Recorder, body: bytes) -> None:
    target.check(record, "fuzzed JSON requests: wrong names, shapes, datatypes, data and outputs; some valid", body)


@settings(max_examples=EXAMPLES // 2, deadline=None, suppress_health_check=FUNCTION_SCOPED)
@given(body=RANDOM_BYTES)
def test_random_bytes_are_refused(target: Target, record: Recorder, body: bytes) -> None:
    target.check(record, "random bytes as the body (up to 2 KiB)", body)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=FUNCTION_SCOPED)
@given(
    rows=st.integers(min_value=1, max_value=40),
    declared=st.integers(min_value=-64, max_value=1 << 20),
    sent=st.integers(min_value=0, max_value=2048),
    header_delta=st.integers(min_value=-40, max_value=400),
)
def test_binary_requests_whose_headers_lie_about_sizes_are_refused(
    target: Target, record: Recorder, rows: int, declared: int, sent: int, header_delta: int
) -> None:
    header = json.dumps(
        {
            "inputs": [
                {"name": "input", "shape": [rows, 4], "datatype": "FP32", "parameters": {"binary_data_size": declared}}
            ]
        }
    ).encode()
    body = header + bytes(sent)
    target.check(
        record,
        "binary-tensor requests whose JSON header length and binary_data_size lie",
        body,
        {"Inference-Header-Content-Length": str(len(header) + header_delta)},
    )
