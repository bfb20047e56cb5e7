"""`config.pbtxt` for a published version, built as Triton's protobuf `ModelConfig` (never a template).

The rendered text is parsed back with :func:`parse_config` and checked against the signature before
anything is written, so a config Triton would reject never reaches a repository.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format, text_format

from nexus.errors import SignatureError
from nexus.registry.metadata import ModelVersion
from nexus.tensors import Signature, TensorSpec, from_triton

try:
    from tritonclient.grpc import model_config_pb2
except ImportError as e:  # pragma: no cover - tritonclient is a core dependency
    raise ImportError("nexus publish needs tritonclient; reinstall nexusml") from e

ModelConfig = model_config_pb2.ModelConfig

KINDS = {"auto": "KIND_AUTO", "cpu": "KIND_CPU", "gpu": "KIND_GPU"}

#: Keys of the `parameters` map that tell `model.py` what to load.
PARAM_ARTIFACT = "nexus_artifact"
PARAM_FORMAT = "nexus_format"
PARAM_COMMIT = "nexus_commit"
PARAM_SHA256 = "nexus_sha256"
PARAM_TORCH_THREADS = "nexus_torch_threads"
#: "auto" when the instance count was left to NexusML (re-publishing then decides again for the new artifact).
PARAM_INSTANCES = "nexus_instances"
#: The batching policy (:data:`POLICIES`) the config was rendered with.
PARAM_BATCHING = "nexus_batching"

#: How Triton's dynamic batcher forms batches, by the name `--batching` takes.
#:
#: - ``adaptive`` (the default): every size from 1 to ``max_batch_size`` is a preferred batch size, so
#:   a batch goes to a model instance as soon as one is free, holding whatever has queued; while all
#:   instances are busy, requests keep joining the batch that waits for the next one. A request waits
#:   for an instance, never for the delay: Triton waits on it only when no preferred size matches.
#:   It stays non-zero because with 0 Triton closes each batch as it forms it (``payload_saturated_``),
#:   so a batch waiting for an instance stops growing.
#: - ``window``: no preferred sizes; a batch that is not full waits out the whole queue delay, even
#:   with every instance idle (Triton's ``GetDynamicBatch`` in ``src/dynamic_batch_scheduler.cc``).
#: - ``none``: no dynamic batching; requests are executed one at a time and shapes are the model's own.
POLICIES = ("adaptive", "window", "none")

#: Instances per device when the count is left to NexusML: one batch is gathered, copied and answered
#: while the other one runs its forward pass (docs/batching.md measures the gain).
AUTO_INSTANCES = 2
#: Above this artifact size the automatic count is 1: a second copy of the weights costs more than it gains.
AUTO_ONE_INSTANCE_ABOVE = 1 << 30


@dataclass(frozen=True)
class ServingOptions:
    """How a version is served. The defaults are the product's: adaptive batches of up to 32, sent as
    soon as an instance is free, with the design's 50 ms delay kept for ``--batching window`` (:data:`POLICIES`)."""

    max_batch_size: int = 32
    max_queue_delay_us: int = 50_000
    batching: bool = True
    #: ``adaptive`` or ``window`` (:data:`POLICIES`); only read with ``batching``.
    policy: str = "adaptive"
    #: Model instances per device; None: automatic (:func:`instance_count`).
    instances: int | None = None
    kind: str = "auto"
    priority_levels: int = 0
    #: Requests waiting beyond this many are refused at once (HTTP 503); 0 means no bound.
    max_queue_size: int = 0
    warmup: bool = False
    torch_threads: int = 1

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise SignatureError(f"--kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if self.policy not in POLICIES[:2]:
            raise SignatureError(f"--batching must be one of {', '.join(POLICIES)}, not {self.policy!r}")
        for name in ("max_batch_size", "max_queue_delay_us", "priority_levels", "max_queue_size"):
            if getattr(self, name) < 0:
                raise SignatureError(f"--{name.replace('_', '-')} must be 0 or more")
        if (self.instances is not None and self.instances < 1) or self.torch_threads < 1:
            raise SignatureError("--instances and --torch-threads must be at least 1")
        if self.batching and self.max_batch_size < 1:
            raise SignatureError("--max-batch-size must be at least 1 with batching (or pass --batching none)")

    @property
    def batching_policy(self) -> str:
        """What `--batching` would be given to render these options: adaptive, window or none."""
        return self.policy if self.batching else "none"

    @classmethod
    def with_policy(cls, policy: str, **fields: Any) -> ServingOptions:
        """Options for ``--batching POLICY`` (adaptive, window or none), the other fields as given."""
        name = policy.strip().lower()
        if name not in POLICIES:
            raise SignatureError(f"--batching must be one of {', '.join(POLICIES)}, not {policy!r}")
        return cls(batching=name != "none", policy=name if name != "none" else "adaptive", **fields)


def parse_instances(text: str) -> int | None:
    """``--instances``: a positive count, or `auto` (None)."""
    if text.strip().lower() == "auto":
        return None
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise SignatureError(f"--instances must be auto or a count of at least 1, not {text!r}")
    return count


def instance_count(options: ServingOptions, version: ModelVersion) -> int:
    """How many instances per device serve ``version``: the count the user chose, else automatic.

    Automatic is :data:`AUTO_INSTANCES` (2), as Triton's optimization guide suggests and as Triton
    itself defaults CPU models of its ONNX Runtime and TensorFlow backends; with one instance the
    Python backend leaves the cores idle while it moves a batch in and out. Artifacts over
    :data:`AUTO_ONE_INSTANCE_ABOVE` (1 GiB) get one instance, where a second copy of the weights costs
    more memory than the overlap gains.
    """
    if options.instances is not None:
        return options.instances
    return 1 if version.size > AUTO_ONE_INSTANCE_ABOVE else AUTO_INSTANCES


def one_instance_without_prefetch(options: ServingOptions, version: ModelVersion) -> str | None:
    """A warning for a batched config with priority levels or a queue bound served by one instance.

    Either turns off the queue's prefetching in Triton's dynamic batcher (``scheduler_utils.cc``): the
    batcher then waits for an idle instance (``WaitForPayloadSlotAvailable``, up to 500 ms), and only a
    request arriving after the instance went idle wakes it earlier. Under closed-loop load the next
    requests arrive just before that, so one instance sits idle between batches: measured on the
    benchmark's MLP, 5-8x less throughput and a p99 of 0.5-1 s once requests queue
    (docs/batching.md). A second instance wakes the batcher when the first finishes.
    """
    if not options.batching or not (options.priority_levels or options.max_queue_size):
        return None
    if instance_count(options, version) > 1:
        return None
    what = "priority levels" if options.priority_levels else "a queue bound"
    return (
        f"with {what} and one instance, Triton's batcher can leave the instance idle for up to 500 ms "
        "between batches once requests queue (5-8x less throughput measured, docs/batching.md); "
        "publish with --instances 2 or more"
    )


def _tensor(spec: TensorSpec, batched: bool) -> dict[str, Any]:
    data_type = spec.servable_dtype().config_name
    dims = list(spec.shape)
    if batched:
        if not dims:
            raise SignatureError(f"tensor {spec.name!r} is a scalar; batching needs a batch dimension")
        if dims[0] not in (-1, 1):
            # A fixed first dimension other than 1 cannot be a batch: the model was exported for one size.
            raise SignatureError(
                f"tensor {spec.name!r} has a fixed first dimension {dims[0]}; export the model with a dynamic "
                "batch dimension, or publish with --batching none"
            )
        dims = dims[1:]
    tensor: dict[str, Any] = {"name": spec.name, "data_type": data_type, "dims": dims}
    if not dims:
        # one value per sample: Triton needs a dimension, and `reshape: []` says the model has none
        tensor.update(dims=[1], reshape={"shape": []})
    return tensor


def render_config(
    name: str, version: ModelVersion, signature: Signature, options: ServingOptions, artifact: str
) -> Any:
    """The `ModelConfig` protobuf message for serving ``version`` as model ``name``."""
    options.validate()
    if not signature.inputs or not signature.outputs:
        raise SignatureError(f"{name} v{version.version} has no inputs or no outputs in its signature")
    batched = options.batching
    config: dict[str, Any] = {
        "name": name,
        "backend": "python",
        "max_batch_size": options.max_batch_size if batched else 0,
        "input": [_tensor(t, batched) for t in signature.inputs],
        "output": [_tensor(t, batched) for t in signature.outputs],
        "version_policy": {"specific": {"versions": [version.version]}},
        "instance_group": [{"kind": KINDS[options.kind], "count": instance_count(options, version)}],
        "parameters": {
            key: {"string_value": value}
            for key, value in {
                PARAM_ARTIFACT: artifact,
                PARAM_FORMAT: version.format,
                PARAM_COMMIT: version.commit_hash,
                PARAM_SHA256: version.sha256,
                PARAM_TORCH_THREADS: str(options.torch_threads),
                PARAM_BATCHING: options.batching_policy,
                **({PARAM_INSTANCES: "auto"} if options.instances is None else {}),
            }.items()
        },
    }
    if batched:
        batching: dict[str, Any] = {"max_queue_delay_microseconds": options.max_queue_delay_us}
        if options.policy == "adaptive":
            batching["preferred_batch_size"] = list(range(1, options.max_batch_size + 1))
        if options.priority_levels:
            batching["priority_levels"] = options.priority_levels
            # Unmarked requests sit below the middle level: with 2 levels, `--priority 1` passes them all.
            batching["default_priority_level"] = options.priority_levels // 2 + 1
        if options.max_queue_size:
            batching["default_queue_policy"] = {"max_queue_size": options.max_queue_size}
        config["dynamic_batching"] = batching
    if options.warmup:
        config["model_warmup"] = [_warmup(signature, batched, options.max_batch_size)]
    names = [t.name for t in [*signature.inputs, *signature.outputs]]
    if len(set(names)) != len(names):
        raise SignatureError(f"tensor names must be unique across inputs and outputs: {names}")
    return json_format.ParseDict(config, ModelConfig())


def _warmup(signature: Signature, batched: bool, max_batch_size: int) -> dict[str, Any]:
    inputs = {}
    for spec in signature.inputs:
        tensor = _tensor(spec, batched)
        dims = [d if d > 0 else 1 for d in tensor["dims"]]
        inputs[spec.name] = {"data_type": tensor["data_type"], "dims": dims, "zero_data": True}
    return {"name": "nexus_warmup", "batch_size": max_batch_size if batched else 1, "inputs": inputs, "count": 1}


def config_to_text(config: Any) -> str:
    text: str = text_format.MessageToString(config)
    return text


def parse_config(text: str) -> Any:
    """Parse `config.pbtxt` text into a `ModelConfig` (raises on anything Triton's parser would reject)."""
    return text_format.Parse(text, ModelConfig())


_KIND_NAMES = {triton: name for name, triton in KINDS.items()}


def read_serving(config: Any) -> tuple[ServingOptions, Signature]:
    """The options and signature a rendered config was made from: the inverse of :func:`render_config`.

    Re-publishing another version with them keeps a model's serving choices (batch size, queue,
    instances, ...) as the user last set them.
    """
    batched = config.max_batch_size > 0
    batching = config.dynamic_batching
    group = config.instance_group[0] if config.instance_group else None
    params = {key: value.string_value for key, value in config.parameters.items()}
    options = ServingOptions(
        max_batch_size=config.max_batch_size if batched else ServingOptions.max_batch_size,
        max_queue_delay_us=batching.max_queue_delay_microseconds if batched else ServingOptions.max_queue_delay_us,
        batching=batched,
        policy=_policy(config, params.get(PARAM_BATCHING)) if batched else ServingOptions.policy,
        instances=None if params.get(PARAM_INSTANCES) == "auto" else (group.count if group and group.count else 1),
        kind=_KIND_NAMES[model_config_pb2.ModelInstanceGroup.Kind.Name(group.kind)] if group else "auto",
        priority_levels=batching.priority_levels,
        max_queue_size=batching.default_queue_policy.max_queue_size,
        warmup=bool(config.model_warmup),
        torch_threads=int(params.get(PARAM_TORCH_THREADS, "1") or 1),
    )

    def spec(tensor: Any) -> TensorSpec:
        dims = [] if tensor.HasField("reshape") and not tensor.reshape.shape else list(tensor.dims)
        data_type = model_config_pb2.DataType.Name(tensor.data_type)
        found = from_triton(data_type)
        if found is None:
            raise SignatureError(
                f"config.pbtxt gives tensor {tensor.name!r} {data_type}, which NexusML does not serve; "
                "publish the model again with `nexus publish`"
            )
        return TensorSpec(name=tensor.name, dtype=found.name, shape=[-1, *dims] if batched else dims)

    return options, Signature(inputs=[spec(t) for t in config.input], outputs=[spec(t) for t in config.output])


def _policy(config: Any, recorded: str | None) -> str:
    """The batching policy of a batched config: as recorded, else from its preferred sizes.

    Configs published before the policy was recorded have no preferred sizes: they are ``window``.
    """
    if recorded is not None and recorded in POLICIES[:2]:
        return recorded
    every_size = list(range(1, config.max_batch_size + 1))
    return "adaptive" if list(config.dynamic_batching.preferred_batch_size) == every_size else "window"
