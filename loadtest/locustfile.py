"""Locust users for any model a Triton server serves (KServe v2), NexusML's or not.

    locust -f loadtest/locustfile.py --host http://127.0.0.1:8000 --model prod_model [--batch-size 8] [--binary]

`nexus loadtest` runs this file headless and summarises the results; it also works on its own, with
Locust's web UI. At the start of a test the model's metadata (`GET /v2/models/MODEL`) says which
inputs to send: random valid tensors are built once, for ``--batch-size`` samples per request, and
every user sends them in a closed loop (no wait between requests). Every answer is checked: an HTTP
error, a missing output, or an output whose shape or size is not what the metadata promises counts as
a failure, with the reason.

`TritonHttpUser` speaks KServe v2 over HTTP (Locust's FastHttpUser): JSON bodies, or Triton's binary
tensor extension with ``--binary`` (raw little-endian bytes after a JSON header). The gRPC user is in
`locustfile_grpc.py`, which shares this file's settings and checks.

Settings come from the command line, or the environment (NEXUS_LOADTEST_MODEL, ..._BATCH_SIZE,
..._BINARY, ..._PRIORITY, ..._GRPC_ADDRESS). ``--priority N`` sends every request at Triton priority N.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from locust import FastHttpUser, events, task
from locust.env import Environment

#: KServe v2 data types NexusML serves -> numpy dtypes (little-endian, as Triton's binary extension sends them).
#: This file runs in Locust's own process without NexusML; tests/test_tensors.py checks that the table
#: agrees with nexus/tensors.py (BF16 has no numpy type).
DTYPES = {
    "BOOL": "?",
    "UINT8": "<u1",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}
HEADER_LENGTH = "Inference-Header-Content-Length"


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    group = parser.add_argument_group("NexusML / Triton")
    group.add_argument("--model", env_var="NEXUS_LOADTEST_MODEL", default="", help="Model name on the server.")
    group.add_argument(
        "--batch-size", env_var="NEXUS_LOADTEST_BATCH_SIZE", type=int, default=1, help="Samples per request."
    )
    group.add_argument(
        "--binary",
        env_var="NEXUS_LOADTEST_BINARY",
        action="store_true",
        default=False,
        help="Send and receive tensors with Triton's binary extension instead of JSON.",
    )
    group.add_argument(
        "--priority",
        env_var="NEXUS_LOADTEST_PRIORITY",
        type=int,
        default=None,
        help="Send every request at this priority (1: the highest; 0: the model's default level).",
    )
    group.add_argument(
        "--grpc-address",
        env_var="NEXUS_LOADTEST_GRPC_ADDRESS",
        default="",
        help="HOST:PORT of Triton's gRPC endpoint (locustfile_grpc.py; default: the host's name, port 8001).",
    )


class LoadTestSetupError(RuntimeError):
    """The model cannot be load-tested as configured; the message names the fix."""


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str
    shape: list[int]


@dataclass
class Payload:
    """One request's tensors, in every form a user sends, and what a good answer looks like."""

    model: str
    #: the inputs sent, by name, with their KServe datatypes and shapes
    specs: list[Tensor]
    inputs: dict[str, np.ndarray[Any, Any]]
    #: the outputs expected, with their shapes (-1: any size)
    outputs: list[Tensor]
    json_body: bytes
    binary_body: bytes
    binary_header_length: int
    #: the priority every request is sent at (None: none sent, the model's default level)
    priority: int | None = None

    def check_shape(self, name: str, shape: list[int]) -> str | None:
        """Why an output's shape is wrong, or None."""
        spec = next((o for o in self.outputs if o.name == name), None)
        if spec is None:
            return f"unexpected output {name!r}"
        if len(shape) != len(spec.shape) or any(e not in (-1, g) for e, g in zip(spec.shape, shape, strict=True)):
            return f"output {name!r} has shape {shape}, expected {spec.shape}"
        return None


def _shape(dims: list[int], batched: bool, batch_size: int) -> list[int]:
    """Metadata dims with the batch filled in; other variable dims get 1."""
    return [batch_size if batched and i == 0 else (d if d > 0 else 1) for i, d in enumerate(dims)]


def _random(tensor: Tensor, rng: np.random.Generator) -> np.ndarray[Any, Any]:
    dtype = DTYPES.get(tensor.datatype)
    if dtype is None:
        raise LoadTestSetupError(f"input {tensor.name!r} is {tensor.datatype}; the load test sends numeric tensors")
    if tensor.datatype.startswith("FP"):
        return rng.standard_normal(tensor.shape).astype(dtype)
    if tensor.datatype == "BOOL":
        return rng.integers(0, 2, tensor.shape).astype(dtype)
    return rng.integers(0, 10, tensor.shape).astype(dtype)  # small non-negative ints: valid token ids


def build_payload(
    model: str, metadata: dict[str, Any], config: dict[str, Any], batch_size: int, priority: int | None = None
) -> Payload:
    """Random valid inputs for ``model`` from its metadata and config, in JSON and binary form."""
    batched = int(config.get("max_batch_size", 0)) > 0
    if batched and batch_size > int(config["max_batch_size"]):
        raise LoadTestSetupError(
            f"--batch-size {batch_size} is above {model}'s max_batch_size {config['max_batch_size']}; lower it"
        )
    if not batched and batch_size != 1:
        raise LoadTestSetupError(f"{model} does not batch (max_batch_size 0); use --batch-size 1")
    rng = np.random.default_rng(0)
    specs = [Tensor(t["name"], t["datatype"], _shape(t["shape"], batched, batch_size)) for t in metadata["inputs"]]
    inputs = {t.name: _random(t, rng) for t in specs}
    outputs = [
        Tensor(t["name"], t["datatype"], [batch_size if batched and i == 0 else d for i, d in enumerate(t["shape"])])
        for t in metadata["outputs"]
    ]

    def request(binary: bool) -> tuple[bytes, int]:
        entries, blobs = [], []
        for spec in specs:
            array = inputs[spec.name]
            entry: dict[str, Any] = {"name": spec.name, "shape": spec.shape, "datatype": spec.datatype}
            if binary:
                blob = array.tobytes()
                entry["parameters"] = {"binary_data_size": len(blob)}
                blobs.append(blob)
            else:
                entry["data"] = array.flatten().tolist()
            entries.append(entry)
        body: dict[str, Any] = {
            "inputs": entries,
            "outputs": [{"name": o.name, "parameters": {"binary_data": binary}} for o in outputs],
        }
        if priority is not None:
            body["parameters"] = {"priority": priority}
        header = json.dumps(body).encode()
        return header + b"".join(blobs), len(header)

    json_body, _ = request(binary=False)
    binary_body, header_length = request(binary=True)
    return Payload(model, specs, inputs, outputs, json_body, binary_body, header_length, priority)


def _get_json(url: str) -> dict[str, Any]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=30) as r:  # noqa: S310 - the server under test
            data: dict[str, Any] = json.loads(r.read())
            return data
    except urllib.error.HTTPError as e:
        raise LoadTestSetupError(f"{url} answered {e.code}: {e.read().decode(errors='replace')}") from e
    except (urllib.error.URLError, OSError) as e:
        raise LoadTestSetupError(f"cannot reach {url} ({e}); start the server (nexus serve) or fix --host") from e


_payload: Payload | None = None


@events.test_start.add_listener
def _prepare(environment: Environment, **_: Any) -> None:
    """Read the model's metadata once and build the request every user sends."""
    global _payload
    options = environment.parsed_options
    host = (environment.host or "").rstrip("/")
    model = getattr(options, "model", "")
    if not model or not host:
        raise LoadTestSetupError("give --model NAME and --host http://HOST:PORT (the Triton HTTP endpoint)")
    metadata = _get_json(f"{host}/v2/models/{model}")
    config = _get_json(f"{host}/v2/models/{model}/config")
    batch_size = max(1, int(getattr(options, "batch_size", 1)))
    _payload = build_payload(model, metadata, config, batch_size, getattr(options, "priority", None))


def payload() -> Payload:
    if _payload is None:
        raise LoadTestSetupError("the test has not started: run this file with locust")
    return _payload


def check_binary_response(p: Payload, headers: Any, body: bytes) -> str | None:
    """Why a binary-extension response is wrong, or None."""
    length = int(headers.get(HEADER_LENGTH) or len(body))
    answer = json.loads(body[:length])
    offset = length
    seen = set()
    for output in answer.get("outputs", []):
        seen.add(output["name"])
        if problem := p.check_shape(output["name"], output["shape"]):
            return problem
        size = int(output.get("parameters", {}).get("binary_data_size", -1))
        itemsize = 2 if output["datatype"] == "BF16" else np.dtype(DTYPES.get(output["datatype"], "u1")).itemsize
        expected = math.prod(output["shape"]) * itemsize
        if size != expected:
            return f"output {output['name']!r} has {size} bytes, expected {expected}"
        offset += size
    if offset != len(body):
        return f"the response has {len(body)} bytes, its header accounts for {offset}"
    return missing_outputs(p, seen)


def check_json_response(p: Payload, body: bytes) -> str | None:
    """Why a JSON response is wrong, or None."""
    seen = set()
    for output in json.loads(body).get("outputs", []):
        seen.add(output["name"])
        if problem := p.check_shape(output["name"], output["shape"]):
            return problem
        if len(output.get("data", [])) != math.prod(output["shape"]):
            return f"output {output['name']!r} has {len(output.get('data', []))} values for shape {output['shape']}"
    return missing_outputs(p, seen)


def missing_outputs(p: Payload, seen: set[str]) -> str | None:
    missing = [o.name for o in p.outputs if o.name not in seen]
    return f"outputs {missing} are missing" if missing else None


class TritonHttpUser(FastHttpUser):
    """KServe v2 inference over HTTP, JSON or binary, in a closed loop."""

    @task
    def infer(self) -> None:
        p = payload()
        binary = bool(getattr(self.environment.parsed_options, "binary", False))
        body = p.binary_body if binary else p.json_body
        headers = {"Content-Type": "application/octet-stream" if binary else "application/json"}
        if binary:
            headers[HEADER_LENGTH] = str(p.binary_header_length)
        path = f"/v2/models/{p.model}/infer"
        # bytes are sent as they are (Locust's hint says str | dict)
        post = self.client.post(path, data=body, headers=headers, catch_response=True, name=path)  # type: ignore[arg-type]
        with post as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {(response.text or '')[:200]}")
                return
            content = response.content or b""
            try:
                if binary:
                    problem = check_binary_response(p, response.headers, content)
                else:
                    problem = check_json_response(p, content)
            except (ValueError, KeyError, TypeError) as e:
                problem = f"unreadable response ({e})"
            if problem:
                response.failure(problem)
