"""Strategy and precision selection on the two logical CPUs tests/conftest.py sets up."""
import json

import pytest
import tensorflow as tf

from leukemia_tf.training import distribution as dist


def test_named_strategies_on_two_logical_cpus():
    assert len(tf.config.list_logical_devices("CPU")) == 2
    mirrored = dist.make_strategy("mirrored")
    assert mirrored.num_replicas_in_sync == 2 and dist.strategy_name(mirrored) == "mirrored"
    one = dist.make_strategy("one_device")
    assert one.num_replicas_in_sync == 1 and dist.strategy_name(one) == "one_device"
    default = dist.make_strategy("default")
    assert default is tf.distribute.get_strategy() and dist.strategy_name(default) == "default"
    # auto without GPUs: the default strategy (CPU replicas only on request)
    assert dist.strategy_name(dist.make_strategy("auto")) == "default"
    with pytest.raises(ValueError, match="unknown strategy"):
        dist.make_strategy("tpu")
    dist.split_cpu(2)   # already split: accepted
    dist.split_cpu(1)   # nothing to do


def test_tf_config_and_strategy_must_agree(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="needs TF_CONFIG"):
        dist.make_strategy("multi_worker")
    cluster = {"cluster": {"worker": ["localhost:1", "localhost:2"]},
               "task": {"type": "worker", "index": 0}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(cluster))
    with pytest.raises(ValueError, match="2 workers but --strategy=mirrored"):
        dist.make_strategy("mirrored")


def test_votes_and_the_chief():
    mirrored = dist.make_strategy("mirrored")
    assert dist.all_agree(mirrored, True) and not dist.all_agree(mirrored, False)
    assert dist.is_chief(mirrored) and not dist.is_multi_worker(mirrored)


def test_precision_resolution(monkeypatch):
    for name in ("float32", "mixed_float16", "mixed_bfloat16"):
        assert dist.resolve_precision(name) == name
    with pytest.raises(ValueError, match="unknown mixed precision"):
        dist.resolve_precision("float64")
    monkeypatch.setattr(dist, "cpu_has_bf16", lambda: True)
    assert dist.resolve_precision("auto") == "mixed_bfloat16"
    assert dist.resolve_precision("auto", "resnet_small") == "mixed_bfloat16"
    # depthwise convolutions are slower in bf16 on CPUs: the Lite backbones stay float32
    assert dist.resolve_precision("auto", "efficientnet_lite0") == "float32"
    assert dist.resolve_precision("mixed_bfloat16", "efficientnet_lite0") == "mixed_bfloat16"
    monkeypatch.setattr(dist, "cpu_has_bf16", lambda: False)
    assert dist.resolve_precision("auto") == "float32"


@pytest.mark.parametrize("capabilities, want", [
    ([(8, 0)], "mixed_bfloat16"),                  # A100 (Ampere)
    ([(9, 0), (8, 6)], "mixed_bfloat16"),          # H100 + RTX 30xx: the lowest decides
    ([(7, 5)], "mixed_float16"),                   # T4 (Turing)
    ([(8, 0), (7, 0)], "mixed_float16"),           # an A100 beside a V100
    ([(6, 1)], "float32"),                         # P4/P40 (Pascal)
])
def test_auto_precision_on_gpus(monkeypatch, capabilities, want):
    """GPU semantics without a GPU: the device list and details are TensorFlow's calls."""
    gpus = [f"GPU:{i}" for i in range(len(capabilities))]
    details = dict(zip(gpus, capabilities))
    monkeypatch.setattr(dist.tf.config, "list_physical_devices",
                        lambda kind=None: gpus if kind == "GPU" else [])
    monkeypatch.setattr(dist.tf.config.experimental, "get_device_details",
                        lambda gpu: {"compute_capability": details[gpu]})
    monkeypatch.setattr(dist, "cpu_has_bf16", lambda: True)
    for model in ("resnet_small", "efficientnet_lite0"):  # the CPU rule is not the GPU's
        assert dist.resolve_precision("auto", model) == want
