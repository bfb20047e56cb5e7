"""A pool of keep-alive sockets to one server, all watched by one ``epoll``, one request in flight on each.

The open-loop client (:mod:`nexus.loadtest.openloop`) takes a free connection for each request, opens
another while the pool is under its cap, and gives the connection back once the answer is read; a
connection that failed or fell out of step is closed and forgotten.
"""

from __future__ import annotations

import select
import socket
import struct

from nexus.errors import TritonUnreachableError


class Slot:
    """One connection: its socket, the bytes of the answer read so far, the request in flight (-1: none)."""

    __slots__ = ("buffer", "request", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.request = -1


class Pool:
    """Up to ``cap`` connections to ``host:port``; closes them all on exit.

    Args:
        timeout: seconds a connect or a send may block.
    """

    def __init__(self, host: str, port: int, cap: int, timeout: float) -> None:
        self.host, self.port, self.cap, self.timeout = host, port, cap, timeout
        self.poller = select.epoll()
        self.slots: dict[int, Slot] = {}
        self.free: list[Slot] = []
        self.busy: set[Slot] = set()
        #: the most connections open at once
        self.most = 0

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for slot in list(self.slots.values()):
            slot.sock.close()
        self.slots.clear()
        self.free.clear()
        self.busy.clear()
        self.poller.close()

    def _open(self) -> Slot:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        try:
            # blocking, so a send is one syscall (Python polls before each call on a socket with a timeout);
            # the kernel still gives up on a send blocked for ``timeout`` (the server stopped reading)
            sock.settimeout(None)
            seconds = int(self.timeout)
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", seconds, int((self.timeout - seconds) * 1e6))
            )
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.poller.register(sock.fileno(), select.EPOLLIN)
        except OSError:
            sock.close()
            raise
        slot = Slot(sock)
        self.slots[sock.fileno()] = slot
        self.most = max(self.most, len(self.slots))
        return slot

    def open_initial(self, count: int) -> None:
        """Open ``count`` free connections now, before the clock starts.

        Raises:
            TritonUnreachableError: the server does not accept connections.
        """
        for _ in range(count):
            try:
                self.free.append(self._open())
            except OSError as e:
                raise TritonUnreachableError(f"http://{self.host}:{self.port}", str(e)) from e

    def acquire(self) -> Slot | None:
        """A free connection, a new one while under the cap, or None when all ``cap`` are busy.

        Raises:
            OSError: a new connection could not be opened.
        """
        slot = self.free.pop() if self.free else (self._open() if len(self.slots) < self.cap else None)
        if slot is not None:
            self.busy.add(slot)
        return slot

    def release(self, slot: Slot) -> None:
        slot.request = -1
        self.busy.discard(slot)
        self.free.append(slot)

    def discard(self, slot: Slot) -> None:
        """Close ``slot`` and forget it (busy or free)."""
        self.busy.discard(slot)
        if slot in self.free:
            self.free.remove(slot)
        fd = slot.sock.fileno()
        if self.slots.get(fd) is slot:
            del self.slots[fd]
            self.poller.unregister(fd)
        slot.sock.close()

    def poll(self, timeout: float) -> list[tuple[int, int]]:
        return self.poller.poll(timeout)
