"""Triton addresses as users type them, made into the one form each client needs. Every caller uses these.

=========================  ===========================  ====================
typed                      HTTP (:func:`http_url`)      gRPC (:func:`grpc_target`)
=========================  ===========================  ====================
``localhost:8000``         ``http://localhost:8000``    ``localhost:8000``
``http://host:8000/``      ``http://host:8000``         (refused: an HTTP URL)
``https://host``           ``https://host``             (refused)
``grpc://host:8001``       (refused)                    ``host:8001``
=========================  ===========================  ====================

`host:port` is the form `tritonclient`, perf_analyzer and Triton's own docs use.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from nexus.errors import ServerAddressError

DEFAULT_HTTP = "http://127.0.0.1:8000"
DEFAULT_GRPC = "127.0.0.1:8001"


def http_url(address: str) -> str:
    """`host:port`, `http://host:port` or `https://host:port` -> the URL, without a trailing slash."""
    text = address.strip().rstrip("/")
    if "://" not in text:
        text = f"http://{text}"
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query:
        raise ServerAddressError(address, "HOST:PORT, http://HOST:PORT or https://HOST:PORT")
    _check_port(address, parts.netloc)
    return f"{parts.scheme}://{parts.netloc}"


def grpc_target(address: str) -> str:
    """`host:port` or `grpc://host:port` -> `host:port`, as `tritonclient.grpc` takes it."""
    text = address.strip().rstrip("/")
    if text.startswith("grpc://"):
        text = text.removeprefix("grpc://")
    if "://" in text or "/" in text or not text:
        raise ServerAddressError(address, "HOST:PORT or grpc://HOST:PORT for gRPC")
    parts = urlsplit(f"grpc://{text}")
    if not parts.hostname:
        raise ServerAddressError(address, "HOST:PORT or grpc://HOST:PORT for gRPC")
    _check_port(address, parts.netloc)
    return text


def _check_port(address: str, netloc: str) -> None:
    try:
        urlsplit(f"//{netloc}").port  # noqa: B018 - raises for a port that is not a number in range
    except ValueError:
        raise ServerAddressError(address, "a port between 1 and 65535, e.g. localhost:8000") from None
