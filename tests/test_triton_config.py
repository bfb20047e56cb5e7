"""`config.pbtxt` rendering: built as protobuf, parsed back, one test per serving option."""

from __future__ import annotations

import pytest

from nexus.errors import SignatureError
from nexus.registry.metadata import ModelVersion
from nexus.serving.model_config import ServingOptions, config_to_text, parse_config, read_serving, render_config
from nexus.tensors import Signature, TensorSpec, parse_tensor_spec

VERSION = ModelVersion("m", 7, "a" * 40, "s3://b/m/a.pt", True, "b" * 64, 10, "torchscript", "t", "me")
SIG = Signature(
    [TensorSpec("x", "float32", [-1, 3, 8]), TensorSpec("ids", "int64", [-1, -1])],
    [TensorSpec("y", "bfloat16", [-1, 2]), TensorSpec("ok", "bool", [-1])],
)


def rendered(options: ServingOptions | None = None, signature: Signature = SIG):  # type: ignore[no-untyped-def]
    """Render, serialise to text, and parse the text back: tests look at what Triton would read."""
    config = render_config("m", VERSION, signature, options or ServingOptions(), "model.pt")
    parsed = parse_config(config_to_text(config))
    assert parsed == config
    return parsed


def test_defaults_batch_32_within_50ms_on_the_python_backend() -> None:
    c = rendered()
    assert c.name == "m"
    assert c.backend == "python"
    assert c.max_batch_size == 32
    assert c.dynamic_batching.max_queue_delay_microseconds == 50_000
    assert c.dynamic_batching.priority_levels == 0
    assert not c.dynamic_batching.HasField("default_queue_policy")
    assert list(c.version_policy.specific.versions) == [7]
    assert [(g.kind, g.count) for g in c.instance_group] == [(0, 2)]  # KIND_AUTO, automatic count
    assert not c.model_warmup
    params = {k: v.string_value for k, v in c.parameters.items()}
    assert params == {
        "nexus_artifact": "model.pt",
        "nexus_format": "torchscript",
        "nexus_commit": "a" * 40,
        "nexus_sha256": "b" * 64,
        "nexus_torch_threads": "1",
        "nexus_batching": "adaptive",
        "nexus_instances": "auto",
    }


def test_inputs_and_outputs_drop_the_batch_dimension_and_map_dtypes() -> None:
    c = rendered()
    from tritonclient.grpc import model_config_pb2 as pb

    assert [(t.name, pb.DataType.Name(t.data_type), list(t.dims)) for t in c.input] == [
        ("x", "TYPE_FP32", [3, 8]),
        ("ids", "TYPE_INT64", [-1]),
    ]
    assert [(t.name, pb.DataType.Name(t.data_type), list(t.dims)) for t in c.output] == [
        ("y", "TYPE_BF16", [2]),
        ("ok", "TYPE_BOOL", [1]),
    ]


def test_the_default_is_adaptive_every_size_preferred_and_the_50ms_delay_kept_as_the_bound() -> None:
    c = rendered()
    assert c.max_batch_size == 32
    assert c.dynamic_batching.max_queue_delay_microseconds == 50_000
    assert list(c.dynamic_batching.preferred_batch_size) == list(range(1, 33))
    assert c.parameters["nexus_batching"].string_value == "adaptive"


def test_window_policy_has_no_preferred_sizes_so_every_batch_waits_out_the_delay() -> None:
    c = rendered(ServingOptions(policy="window"))
    assert c.dynamic_batching.max_queue_delay_microseconds == 50_000
    assert not c.dynamic_batching.preferred_batch_size
    assert c.parameters["nexus_batching"].string_value == "window"
    smaller = rendered(ServingOptions(max_batch_size=5))
    assert list(smaller.dynamic_batching.preferred_batch_size) == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(("policy", "batching"), [("adaptive", True), ("Window", True), ("none", False)])
def test_batching_policy_by_the_name_batching_takes(policy: str, batching: bool) -> None:
    options = ServingOptions.with_policy(policy, max_batch_size=8)
    assert options.batching is batching
    assert options.batching_policy == policy.lower()
    assert options.max_batch_size == 8


def test_an_unknown_batching_policy_names_the_choices() -> None:
    with pytest.raises(SignatureError, match="--batching must be one of adaptive, window, none, not 'fixed'"):
        ServingOptions.with_policy("fixed")
    with pytest.raises(SignatureError, match="--batching must be one of"):
        rendered(ServingOptions(policy="none"))


def test_a_config_published_before_policies_were_recorded_reads_back_as_window_or_adaptive() -> None:
    for options, expected in ((ServingOptions(policy="window"), "window"), (ServingOptions(), "adaptive")):
        c = rendered(options)
        del c.parameters["nexus_batching"]
        assert read_serving(c)[0].policy == expected


def test_max_batch_size_and_queue_delay() -> None:
    c = rendered(ServingOptions(max_batch_size=8, max_queue_delay_us=0))
    assert c.max_batch_size == 8
    assert c.dynamic_batching.max_queue_delay_microseconds == 0
    assert c.HasField("dynamic_batching")


def test_no_batching_keeps_full_shapes_and_has_no_batcher() -> None:
    sig = Signature([TensorSpec("x", "float32", [1, 4])], [TensorSpec("y", "float32", [1, 3])])
    c = rendered(ServingOptions(batching=False), sig)
    assert c.max_batch_size == 0
    assert not c.HasField("dynamic_batching")
    assert list(c.input[0].dims) == [1, 4]


def test_instances_and_kind() -> None:
    from tritonclient.grpc import model_config_pb2 as pb

    c = rendered(ServingOptions(instances=3, kind="gpu"))
    assert [(pb.ModelInstanceGroup.Kind.Name(g.kind), g.count) for g in c.instance_group] == [("KIND_GPU", 3)]
    c = rendered(ServingOptions(kind="cpu"))
    assert pb.ModelInstanceGroup.Kind.Name(c.instance_group[0].kind) == "KIND_CPU"


def test_instances_are_automatic_by_default_two_or_one_for_a_big_artifact() -> None:
    from dataclasses import replace

    from tritonclient.grpc import model_config_pb2 as pb

    c = rendered()
    assert [(pb.ModelInstanceGroup.Kind.Name(g.kind), g.count) for g in c.instance_group] == [("KIND_AUTO", 2)]
    assert c.parameters["nexus_instances"].string_value == "auto"
    big = replace(VERSION, size=(1 << 30) + 1)
    assert render_config("m", big, SIG, ServingOptions(), "model.pt").instance_group[0].count == 1
    assert render_config("m", big, SIG, ServingOptions(instances=3), "model.pt").instance_group[0].count == 3
    assert "nexus_instances" not in rendered(ServingOptions(instances=2)).parameters
    # re-publishing decides again for the next artifact, but keeps a count the user chose
    assert read_serving(c)[0].instances is None
    assert read_serving(rendered(ServingOptions(instances=2)))[0].instances == 2


def test_priority_levels() -> None:
    c = rendered(ServingOptions(priority_levels=3))
    assert c.dynamic_batching.priority_levels == 3
    assert c.dynamic_batching.default_priority_level == 2


@pytest.mark.parametrize(("levels", "default"), [(1, 1), (2, 2), (3, 2), (4, 3)])
def test_requests_sent_without_a_priority_are_never_the_top_level_when_there_are_two_or_more(
    levels: int, default: int
) -> None:
    assert rendered(ServingOptions(priority_levels=levels)).dynamic_batching.default_priority_level == default


def test_priorities_or_a_queue_bound_with_one_instance_are_warned_about() -> None:
    from dataclasses import replace

    from nexus.serving.model_config import one_instance_without_prefetch as warning

    one = warning(ServingOptions(priority_levels=2, instances=1), VERSION)
    assert one is not None
    assert one.startswith("with priority levels and one instance, Triton's batcher can leave the instance idle")
    assert one.endswith("publish with --instances 2 or more")
    assert "a queue bound" in (warning(ServingOptions(max_queue_size=64, instances=1), VERSION) or "")
    big = replace(VERSION, size=(1 << 30) + 1)  # automatic: one instance
    assert warning(ServingOptions(priority_levels=2), big) is not None
    # two instances (automatic for this artifact), no batcher, or neither option: nothing to say
    assert warning(ServingOptions(priority_levels=2), VERSION) is None
    assert warning(ServingOptions(priority_levels=2, instances=2), big) is None
    assert warning(ServingOptions(priority_levels=2, instances=1, batching=False), VERSION) is None
    assert warning(ServingOptions(instances=1), VERSION) is None


def test_max_queue_size_bounds_the_queue() -> None:
    c = rendered(ServingOptions(max_queue_size=100))
    assert c.dynamic_batching.default_queue_policy.max_queue_size == 100


def test_warmup_sends_a_full_batch_of_zeros() -> None:
    c = rendered(ServingOptions(warmup=True, max_batch_size=16))
    (warmup,) = c.model_warmup
    assert warmup.batch_size == 16
    assert {k: (list(v.dims), v.zero_data) for k, v in warmup.inputs.items()} == {
        "x": ([3, 8], True),
        "ids": ([1], True),
    }


def test_torch_threads() -> None:
    assert rendered(ServingOptions(torch_threads=4)).parameters["nexus_torch_threads"].string_value == "4"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (ServingOptions(kind="tpu"), "--kind must be one of auto, cpu, gpu"),
        (ServingOptions(max_batch_size=0), "--max-batch-size must be at least 1"),
        (ServingOptions(instances=0), "--instances and --torch-threads must be at least 1"),
        (ServingOptions(max_queue_size=-1), "--max-queue-size must be 0 or more"),
    ],
)
def test_bad_options_are_refused(options: ServingOptions, message: str) -> None:
    with pytest.raises(SignatureError, match=message):
        rendered(options)


@pytest.mark.parametrize(
    ("signature", "message"),
    [
        (Signature([TensorSpec("x", "float32", [8, 4])], SIG.outputs), "fixed first dimension 8"),
        (Signature([TensorSpec("x", "complex64", [-1, 4])], SIG.outputs), "dtype 'complex64'"),
        (Signature([TensorSpec("x", "float32", [])], SIG.outputs), "is a scalar"),
        (Signature([TensorSpec("y", "float32", [-1, 2])], SIG.outputs), "names must be unique"),
        (Signature([], SIG.outputs), "no inputs or no outputs"),
    ],
)
def test_signatures_triton_cannot_serve_are_refused(signature: Signature, message: str) -> None:
    with pytest.raises(SignatureError, match=message):
        rendered(signature=signature)


def test_tensor_specs_from_the_command_line() -> None:
    assert parse_tensor_spec("input__0:float32:3,224,224") == TensorSpec("input__0", "float32", [-1, 3, 224, 224])
    assert parse_tensor_spec("ids:int64:-1") == TensorSpec("ids", "int64", [-1, -1])
    assert parse_tensor_spec("x:float32:1,4", batched=False) == TensorSpec("x", "float32", [1, 4])
    with pytest.raises(SignatureError, match="is not NAME:DTYPE:DIMS"):
        parse_tensor_spec("x-float32")
    with pytest.raises(SignatureError, match="unknown dtype 'float'"):
        parse_tensor_spec("x:float:4")


@pytest.mark.parametrize(
    "options",
    [
        ServingOptions(),
        ServingOptions(max_batch_size=8, max_queue_delay_us=0, instances=2, kind="cpu", priority_levels=2),
        ServingOptions(max_queue_size=64, warmup=True, torch_threads=3, kind="gpu"),
        ServingOptions(instances=1),
        ServingOptions(policy="window"),
        ServingOptions(policy="window", max_batch_size=4, max_queue_delay_us=100, priority_levels=3),
        ServingOptions(policy="adaptive", max_batch_size=1),
    ],
)
def test_read_serving_recovers_the_options_and_signature_a_config_was_rendered_from(options: ServingOptions) -> None:
    config = rendered(options)
    assert read_serving(config) == (options, SIG)


def test_read_serving_without_batching() -> None:
    sig = Signature([TensorSpec("x", "float32", [1, 4])], [TensorSpec("y", "float32", [1, 3])])
    options = ServingOptions(batching=False)
    assert read_serving(rendered(options, sig)) == (options, sig)
