"""KServe v2 inference over raw HTTP/1.1 keep-alive sockets: one request as bytes, and the checks on its answer.

The load generators that must cost the server the least (the batching benchmark's closed loop,
:mod:`nexus.loadtest.openloop`) build one request once, with Triton's binary tensor extension (a JSON
header of ``Inference-Header-Content-Length`` bytes, then the raw input bytes), send it again and again,
and check each answer without decoding it: status 200 and exactly the expected number of output bytes
after the answer's JSON header.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import numpy as np
import numpy.typing as npt

from nexus.errors import LoadTestError
from nexus.serving.endpoints import http_url
from nexus.tensors import DTYPES

#: numpy dtype names -> KServe v2 data types.
DATATYPES = {d.numpy: d.triton for d in DTYPES.values() if d.numpy}


def plain_http_address(server: str) -> tuple[str, int]:
    """`host:port` or `http://host:port` -> (host, port) for a raw socket.

    Raises:
        LoadTestError: an https:// address (these clients speak plain HTTP).
    """
    url = http_url(server)
    if url.startswith("https://"):
        raise LoadTestError(f"the open-loop client speaks plain HTTP, not {url}; give an http:// address")
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


def infer_request(
    host: str,
    port: int,
    model: str,
    inputs: Mapping[str, npt.NDArray[Any]],
    outputs: list[str],
    *,
    priority: int | None = None,
) -> bytes:
    """The bytes of one KServe v2 inference request with binary inputs and binary outputs.

    Args:
        priority: sent as the request parameter ``priority`` (Triton: 1 is the highest level, 0 or a
            level above the model's ``priority_levels`` means its default level); None sends none.
    """
    header: dict[str, Any] = {
        "inputs": [
            {
                "name": name,
                "shape": list(value.shape),
                "datatype": DATATYPES[str(value.dtype)],
                "parameters": {"binary_data_size": value.nbytes},
            }
            for name, value in inputs.items()
        ],
        "outputs": [{"name": name, "parameters": {"binary_data": True}} for name in outputs],
    }
    if priority is not None:
        header["parameters"] = {"priority": priority}
    json_part = json.dumps(header, separators=(",", ":")).encode()
    body = json_part + b"".join(np.ascontiguousarray(v).tobytes() for v in inputs.values())
    head = (
        f"POST /v2/models/{model}/infer HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Content-Type: application/octet-stream\r\n"
        f"Inference-Header-Content-Length: {len(json_part)}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Response(NamedTuple):
    """Where one whole HTTP response lies in the bytes read so far."""

    status: int
    #: offset of the body
    start: int
    #: the body's length (Content-Length)
    length: int
    #: the length of the body's JSON header (Inference-Header-Content-Length), -1 without one
    inference: int

    @property
    def end(self) -> int:
        """Offset just past this response: where the next one would begin."""
        return self.start + self.length


def parse_response(buffer: bytes) -> Response | None:
    """The response at the start of ``buffer`` once it is all there, else None.

    Raises:
        LoadTestError: the response has no Content-Length (Triton always sends one).
    """
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buffer[:end].decode("latin-1").lower()
    status = int(head[9:12])
    length = inference = -1
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key == "content-length":
            length = int(value)
        elif key == "inference-header-content-length":
            inference = int(value)
    if length < 0:
        raise LoadTestError(f"a response without Content-Length: {head[:300]!r}")
    if len(buffer) < end + 4 + length:
        return None
    return Response(status, end + 4, length, inference)


def check_response(buffer: bytes, response: Response, output_bytes: int | None) -> str | None:
    """Why ``response`` (parsed from ``buffer``) is not a good answer, or None.

    Args:
        output_bytes: the raw output bytes a good answer carries after its JSON header; None checks
            only that there is such a header (outputs whose size is not known beforehand).
    """
    if response.status != 200:
        body = buffer[response.start : response.end].decode(errors="replace")
        return f"HTTP {response.status}: {body[:300]}"
    if response.inference < 0:
        return "the answer has no Inference-Header-Content-Length: it is not a binary-tensor answer"
    got = response.length - response.inference
    if output_bytes is not None and got != output_bytes:
        return f"expected {output_bytes} output bytes, got {got}"
    return None


def exchange(sock: socket.socket, request: bytes) -> tuple[bytes, Response]:
    """Send ``request`` on a keep-alive socket and read its whole answer (blocking, the socket's timeout).

    Returns the bytes read and where the answer lies in them (check it with :func:`check_response`).

    Raises:
        LoadTestError: the connection closed before a whole answer.
        OSError: the socket failed or timed out (``TimeoutError``, ``ConnectionResetError``, ...).
    """
    sock.sendall(request)
    buffer = b""
    while (response := parse_response(buffer)) is None:
        chunk = sock.recv(65536)
        if not chunk:
            raise LoadTestError("the connection closed before an answer")
        buffer += chunk
    return buffer, response
