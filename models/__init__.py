"""The model zoo (package ``igniter_opt.zoo``): what igniter-opt profiles and serves.

Every model is built with random weights (nothing is downloaded), runs in fp16 on the GPU and
is executed through one CUDA graph per batch size (see :mod:`igniter_opt.zoo.runner`), so that
what the profiler measures is exactly what the executor serves.

This module needs no torch: the registry (names, input/output shapes and sizes) can be read on
a machine without a GPU. torch is imported only when a model is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from igniter_opt.errors import InputError

# Bytes per element of the dtypes used on the wire (host <-> GPU).
DTYPE_BYTES = {"float16": 2, "float32": 4, "int64": 8}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output tensor of a model, per sample (the batch dimension is left out)."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def bytes_per_sample(self) -> int:
        return math.prod(self.shape) * DTYPE_BYTES[self.dtype]


@dataclass(frozen=True)
class ModelSpec:
    """A zoo model: its name, how it is built and what goes in and out per sample."""

    name: str
    description: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    notes: str = ""

    @property
    def input_bytes(self) -> int:
        """Bytes copied host -> GPU per sample (``d_load`` of the iGniter model)."""
        return sum(t.bytes_per_sample for t in self.inputs)

    @property
    def output_bytes(self) -> int:
        """Bytes copied GPU -> host per sample (``d_fb`` of the iGniter model)."""
        return sum(t.bytes_per_sample for t in self.outputs)


_IMAGENET_IN = (TensorSpec("input", (3, 224, 224), "float16"),)
_LOGITS = (TensorSpec("logits", (1000,), "float16"),)
SSD_ANCHORS = 8732  # anchors of ssd300_vgg16 at 300x300
BERT_SEQ_LEN = 128

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("alexnet", "torchvision alexnet, 3x224x224", _IMAGENET_IN, _LOGITS),
        ModelSpec("resnet50", "torchvision resnet50, 3x224x224", _IMAGENET_IN, _LOGITS),
        ModelSpec("vgg19", "torchvision vgg19, 3x224x224", _IMAGENET_IN, _LOGITS),
        ModelSpec(
            "ssd",
            "torchvision ssd300_vgg16, 3x300x300",
            (TensorSpec("input", (3, 300, 300), "float16"),),
            (
                TensorSpec("bbox_regression", (SSD_ANCHORS, 4), "float16"),
                TensorSpec("cls_logits", (SSD_ANCHORS, 91), "float16"),
            ),
            notes=(
                "The CUDA graph covers the VGG-16 backbone and the SSD head on an already resized and "
                "normalised 300x300 input; it returns the raw head outputs for the 8732 anchors. Anchor "
                "decoding and non-maximum suppression have data-dependent shapes, cannot be captured, "
                "and are neither served nor profiled."
            ),
        ),
        ModelSpec("vit_b_16", "torchvision vit_b_16, 3x224x224", _IMAGENET_IN, _LOGITS),
        ModelSpec(
            "bert_base",
            "transformers BertModel(BertConfig()), sequence length 128",
            (TensorSpec("input_ids", (BERT_SEQ_LEN,), "int64"),),
            (TensorSpec("last_hidden_state", (BERT_SEQ_LEN, 768), "float16"),),
            notes="Encoder only (no pooler); token ids are random in [0, 30522), attention over all 128.",
        ),
    )
}

MODEL_NAMES: tuple[str, ...] = tuple(MODELS)


def get_spec(name: str) -> ModelSpec:
    """The zoo entry for ``name``, or a one-line error listing the known models."""
    try:
        return MODELS[name]
    except KeyError:
        raise InputError(f"unknown model '{name}'; the zoo has: {', '.join(MODEL_NAMES)}") from None


def parse_models(text: str) -> list[str]:
    """Parse a comma-separated model list (``all`` means every zoo model), keeping the order."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise InputError("no model given; pass --models with zoo names, e.g. --models resnet50,vgg19")
    if names == ["all"]:
        return list(MODEL_NAMES)
    out: list[str] = []
    for n in names:
        get_spec(n)
        if n not in out:
            out.append(n)
    return out


def __getattr__(name: str):  # lazy: the runner needs torch
    if name == "ModelRunner":
        from igniter_opt.zoo.runner import ModelRunner

        return ModelRunner
    raise AttributeError(name)


__all__ = ["MODELS", "MODEL_NAMES", "ModelSpec", "TensorSpec", "get_spec", "parse_models"]
