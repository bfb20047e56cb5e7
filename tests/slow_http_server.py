"""A deliberately slow KServe v2 HTTP server, run as its own process: each inference is answered after
``--delay`` seconds, at most ``--concurrency`` at a time (the others wait for a turn, as in a server's
queue). Its answers are valid binary-tensor answers of ``--output-bytes`` bytes; every ``--fail-every``-th
request gets HTTP 500 instead. `GET /seen` answers the priority parameter of each request it got, in order.

    python tests/slow_http_server.py --delay 0.05 --concurrency 1   # prints its port, then serves
"""

from __future__ import annotations

import argparse
import json
import socketserver
import sys
import threading
import time
from typing import Any


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.args = args
        self.turns = threading.Semaphore(args.concurrency)
        self.lock = threading.Lock()
        self.seen: list[Any] = []


class Handler(socketserver.StreamRequestHandler):
    server: Server

    def handle(self) -> None:
        while True:
            request_line = self.rfile.readline()
            if not request_line:
                return
            headers = {}
            while (line := self.rfile.readline()) not in (b"\r\n", b""):
                key, _, value = line.decode("latin-1").partition(":")
                headers[key.strip().lower()] = value.strip()
            body = self.rfile.read(int(headers.get("content-length", 0)))
            if request_line.startswith(b"GET /seen"):
                with self.server.lock:
                    self.reply(200, json.dumps(self.server.seen).encode())
                continue
            header = json.loads(body[: int(headers["inference-header-content-length"])])
            with self.server.lock:
                self.server.seen.append(header.get("parameters", {}).get("priority"))
                number = len(self.server.seen)
            with self.server.turns:
                time.sleep(self.server.args.delay)
            every = self.server.args.fail_every
            if every and number % every == 0:
                self.reply(500, b'{"error":"failing on purpose"}')
                continue
            size = self.server.args.output_bytes
            answer = json.dumps(
                {
                    "outputs": [
                        {"name": "y", "datatype": "UINT8", "shape": [size], "parameters": {"binary_data_size": size}}
                    ]
                }
            ).encode()
            self.reply(200, answer + bytes(size), {"Inference-Header-Content-Length": str(len(answer))})

    def reply(self, status: int, body: bytes, extra: dict[str, str] | None = None) -> None:
        head = f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\nContent-Length: {len(body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in (extra or {}).items())
        self.wfile.write(head.encode() + b"\r\n" + body)
        self.wfile.flush()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--delay", type=float, default=0.05)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--output-bytes", type=int, default=12)
    parser.add_argument("--fail-every", type=int, default=0)
    server = Server(parser.parse_args())
    print(server.server_address[1], flush=True)
    sys.stdout.close()
    server.serve_forever()


if __name__ == "__main__":
    main()
