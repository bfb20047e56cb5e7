"""A loopback TCP proxy that can cut every connection after a byte budget: a network failure, for real."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from types import TracebackType


class CuttingProxy:
    """Forward 127.0.0.1:<port> to ``target``; once ``budget`` client bytes have passed, cut everything.

    ``throttle_s`` sleeps after each chunk the client sends, to make a transfer slow enough to interrupt.

    After the cut, new connections are accepted and closed at once (a dead server that still listens).
    """

    def __init__(self, target_port: int, budget: int, throttle_s: float = 0.0) -> None:
        self.target_port = target_port
        self.budget = budget
        self.throttle_s = throttle_s
        self.sent = 0
        self.cut = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> CuttingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: tuple[type[BaseException], BaseException, TracebackType] | None) -> None:
        self._listener.close()
        self._close_all()

    def _close_all(self) -> None:
        with self._lock:
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self._sockets.clear()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.cut.is_set():
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, counts: bool) -> None:
        try:
            while data := src.recv(65536):
                if counts:
                    with self._lock:
                        self.sent += len(data)
                        over = self.sent > self.budget
                    if over:
                        self.cut.set()
                        self._close_all()
                        return
                    if self.throttle_s:
                        time.sleep(self.throttle_s)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.close()
