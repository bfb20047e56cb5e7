"""A Locust user for KServe v2 over gRPC, through tritonclient: the gRPC twin of `locustfile.py`.

    locust -f loadtest/locustfile_grpc.py --host http://127.0.0.1:8000 --model prod_model \\
        [--grpc-address 127.0.0.1:8001]

The HTTP host is still needed: the model's metadata is read from it once, at the start, exactly as
`locustfile.py` does (its settings and response checks are shared). Requests go to
``--grpc-address`` (default: the host's name, port 8001).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

import gevent
from locust import User, task

from locustfile import missing_outputs, payload


class TritonGrpcUser(User):
    """KServe v2 inference over gRPC through tritonclient, in a closed loop."""

    def on_start(self) -> None:
        import tritonclient.grpc as grpcclient

        options = self.environment.parsed_options
        address = getattr(options, "grpc_address", "") or f"{urlsplit(self.host or '').hostname or '127.0.0.1'}:8001"
        self.client = grpcclient.InferenceServerClient(address)
        p = payload()
        self.tensors: list[Any] = []
        for spec in p.specs:
            tensor = grpcclient.InferInput(spec.name, spec.shape, spec.datatype)
            tensor.set_data_from_numpy(p.inputs[spec.name])
            self.tensors.append(tensor)
        self.requested = [grpcclient.InferRequestedOutput(o.name) for o in p.outputs]
        hub = gevent.get_hub()
        hub.threadpool.maxsize = max(hub.threadpool.maxsize, self.environment.runner.user_count + 1)
        self.pool = hub.threadpool

    def on_stop(self) -> None:
        self.client.close()

    @task
    def infer(self) -> None:
        from tritonclient.utils import InferenceServerException

        p = payload()
        start = time.perf_counter()
        error: Exception | None = None
        length = 0
        try:
            # gRPC blocks in C: each call runs on a real thread, so Locust's other greenlets keep going
            options = {"outputs": self.requested, "priority": p.priority or 0}
            result = self.pool.apply(self.client.infer, (p.model, self.tensors), options)
            response = result.get_response()
            length = response.ByteSize()
            seen = set()
            for output in response.outputs:
                seen.add(output.name)
                if problem := p.check_shape(output.name, [int(d) for d in output.shape]):
                    raise ValueError(problem)
            if problem := missing_outputs(p, seen):
                raise ValueError(problem)
        except (InferenceServerException, ValueError) as e:
            error = e
        self.environment.events.request.fire(
            request_type="gRPC",
            name=f"{p.model} infer",
            response_time=(time.perf_counter() - start) * 1000,
            response_length=length,
            exception=error,
            context={},
        )
