"""The model zoo's registry (no torch needed) and, where torch and a GPU exist, the runner."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
from igniter_opt.zoo import MODEL_NAMES, get_spec, parse_models
from igniter_opt.zoo.runner import split_idle

from igniter_opt.errors import InputError


def test_registry_names_and_bytes() -> None:
    assert MODEL_NAMES == ("alexnet", "resnet50", "vgg19", "ssd", "vit_b_16", "bert_base")
    assert get_spec("resnet50").input_bytes == 3 * 224 * 224 * 2
    assert get_spec("resnet50").output_bytes == 1000 * 2
    ssd = get_spec("ssd")
    assert ssd.inputs[0].shape == (3, 300, 300)
    assert ssd.output_bytes == 8732 * (4 + 91) * 2
    bert = get_spec("bert_base")
    assert bert.inputs[0].shape == (128,) and bert.inputs[0].dtype == "int64"
    assert bert.input_bytes == 128 * 8 and bert.output_bytes == 128 * 768 * 2


def test_parse_models() -> None:
    assert parse_models("all") == list(MODEL_NAMES)
    assert parse_models(" vgg19, alexnet,vgg19 ") == ["vgg19", "alexnet"]
    with pytest.raises(InputError, match="unknown model 'resnet'; the zoo has: alexnet, resnet50"):
        parse_models("resnet")
    with pytest.raises(InputError, match="no model given"):
        parse_models(" , ")


def test_zoo_imports_without_torch() -> None:
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['torchvision'] = None;"
        "import igniter_opt.zoo, igniter_opt.zoo.runner, igniter_opt.profiling.cli, igniter_opt.profiling.cuda;"
        "print(len(igniter_opt.zoo.MODEL_NAMES))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == "6\n"


def test_split_idle_groups_replays() -> None:
    # two replays of 3 kernels; gaps of 1 and 2 us in the first, an overlap in the second
    iv = [(0, 10), (11, 20), (22, 30), (100, 110), (105, 115), (116, 120)]
    kernels, idle_ms = split_idle(iv, 2)
    assert kernels == 3
    assert idle_ms == pytest.approx(((1 + 2) + 1) / 2 / 1000)
    with pytest.raises(RuntimeError, match="not a multiple"):
        split_idle(iv[:5], 2)


def _cuda() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


@pytest.mark.skipif(not _cuda(), reason="needs torch with a CUDA GPU")
def test_runner_builds_and_infers() -> None:  # pragma: no cover - GPU only
    import torch
    from igniter_opt.zoo.runner import ModelRunner

    r = ModelRunner("alexnet", [1, 4]).build()
    x = torch.randn(3, 3, 224, 224, dtype=torch.float16)
    (out,) = r.infer(x)
    assert tuple(out.shape) == (3, 1000)
    assert r.graph_batch_for(3) == 4
    times, _, _ = r.time_replays(4, min_iters=5, min_time_s=0.0)
    assert len(times) >= 5 and min(times) > 0
