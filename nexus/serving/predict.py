"""`nexus predict`: one request to a served model through `tritonclient`, over HTTP or gRPC."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from nexus.errors import PredictError
from nexus.names import validate_model_name
from nexus.serving.endpoints import DEFAULT_GRPC, DEFAULT_HTTP, grpc_target, http_url
from nexus.tensors import DTYPES, load_arrays

Array = np.ndarray[Any, Any]

#: Triton data types -> numpy dtypes, from :data:`nexus.tensors.DTYPES` (BF16 has no numpy type and cannot be
#: sent this way).
NUMPY_DTYPES: dict[str, np.dtype[Any]] = {d.triton: np.dtype(d.numpy) for d in DTYPES.values() if d.numpy}


def _numpy_dtype(tensor: str, datatype: str) -> np.dtype[Any]:
    found = NUMPY_DTYPES.get(datatype)
    if found is None:
        raise PredictError(
            f"input {tensor!r} is {datatype}, which nexus predict cannot send as a numpy array; "
            "call Triton through tritonclient directly"
        )
    return found


def default_server(protocol: str) -> str:
    return DEFAULT_GRPC if protocol == "grpc" else DEFAULT_HTTP


def _client(server: str, protocol: str) -> Any:
    if protocol == "grpc":
        import tritonclient.grpc as client_module

        return client_module, client_module.InferenceServerClient(grpc_target(server))
    if protocol != "http":
        raise PredictError(f"unknown protocol {protocol!r}; use http or grpc")
    import tritonclient.http as client_module

    url = http_url(server)
    scheme, host_port = url.split("://", 1)
    return client_module, client_module.InferenceServerClient(host_port, ssl=scheme == "https")


def random_inputs(metadata: Mapping[str, Any], batch: int = 1, seed: int = 0) -> dict[str, Array]:
    """Valid inputs for a model from its metadata: normal floats, zeros for integers and booleans."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for tensor in metadata["inputs"]:
        dtype = _numpy_dtype(tensor["name"], tensor["datatype"])
        shape = [int(d) for d in tensor["shape"]]
        shape = [batch if i == 0 and d == -1 else (d if d > 0 else 2) for i, d in enumerate(shape)]
        if np.issubdtype(dtype, np.floating):
            arrays[tensor["name"]] = rng.standard_normal(shape).astype(dtype)
        else:
            arrays[tensor["name"]] = np.zeros(shape, dtype=dtype)
    return arrays


def load_inputs(pairs: list[str]) -> dict[str, Array]:
    """`--input NAME=FILE.npy` pairs -> arrays."""
    return load_arrays(pairs, "--input", PredictError)


def predict(
    model: str,
    inputs: Mapping[str, Array] | None = None,
    *,
    server: str | None = None,
    protocol: str = "http",
    priority: int | None = None,
) -> dict[str, Array]:
    """Send one request to ``model``; without ``inputs``, random valid ones from its metadata.

    Args:
        server: `host:port` or an `http(s)://` URL (gRPC: `host:port`); default 127.0.0.1:8000 / :8001.
        priority: Triton's request priority: 1 is the highest level; 0 or None, the model's default level.
    """
    validate_model_name(model)  # it becomes a URL path segment
    if priority is not None and priority < 0:
        raise PredictError(f"--priority {priority} is below 0; give 1 (the highest) or more, or 0 for the default")
    server = server or default_server(protocol)
    module, client = _client(server, protocol)
    from tritonclient.utils import InferenceServerException

    try:
        if not client.is_model_ready(model):
            raise PredictError(f"model {model!r} is not ready on {server}; publish it and check `nexus serve`")
        metadata = client.get_model_metadata(model)
        if protocol == "grpc":
            from google.protobuf import json_format

            metadata = json_format.MessageToDict(metadata, preserving_proto_field_name=True)
        arrays = dict(inputs) if inputs is not None else random_inputs(metadata)
        expected = {t["name"]: t["datatype"] for t in metadata["inputs"]}
        if set(arrays) != set(expected):
            raise PredictError(f"{model} takes inputs {sorted(expected)}, got {sorted(arrays)}")
        tensors = []
        for name, array in arrays.items():
            tensor = module.InferInput(name, list(array.shape), expected[name])
            tensor.set_data_from_numpy(array.astype(_numpy_dtype(name, expected[name]), copy=False))
            tensors.append(tensor)
        result = client.infer(model, tensors, priority=priority or 0)
        return {t["name"]: result.as_numpy(t["name"]) for t in metadata["outputs"]}
    except InferenceServerException as e:
        raise PredictError(f"{server} refused the request: {e.message()}") from e
    except ConnectionError as e:
        raise PredictError(
            f"cannot reach Triton at {server} ({e}); start it with `nexus serve` or pass --server"
        ) from e
    finally:
        client.close()
