"""What the executor needs to know about a served model: its tensors, from the model zoo.

The zoo (``igniter_opt.zoo``) is read lazily, so planning and dry runs work without it. Where
the zoo is not installed (or predates its registry), a built-in copy of the six zoo entries'
names and tensor shapes is used instead; the served ``model.py`` still needs the real zoo.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass

from igniter_opt.errors import ApplyError

log = logging.getLogger(__name__)

# Zoo dtype names -> Triton's config.pbtxt data types and the wire datatypes of the clients.
TRITON_DTYPES = {"float16": "TYPE_FP16", "float32": "TYPE_FP32", "int64": "TYPE_INT64"}
WIRE_DTYPES = {"float16": "FP16", "float32": "FP32", "int64": "INT64"}


@dataclass(frozen=True)
class Tensor:
    """One input or output of a served model, per request (no batch dimension)."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # zoo dtype name: float16, float32 or int64


@dataclass(frozen=True)
class ServedModel:
    """A model as Triton serves it: its name and tensors."""

    name: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]


# Used only where ``igniter_opt.zoo`` has no registry: the six names the zoo serves and their
# tensors (kept equal to the zoo's; the zoo is the source of truth whenever it is importable).
_IMAGENET_IN = (Tensor("input", (3, 224, 224), "float16"),)
_LOGITS = (Tensor("logits", (1000,), "float16"),)
BUILTIN_MODELS: dict[str, ServedModel] = {
    m.name: m
    for m in (
        ServedModel("alexnet", _IMAGENET_IN, _LOGITS),
        ServedModel("resnet50", _IMAGENET_IN, _LOGITS),
        ServedModel("vgg19", _IMAGENET_IN, _LOGITS),
        ServedModel(
            "ssd",
            (Tensor("input", (3, 300, 300), "float16"),),
            (Tensor("bbox_regression", (8732, 4), "float16"), Tensor("cls_logits", (8732, 91), "float16")),
        ),
        ServedModel("vit_b_16", _IMAGENET_IN, _LOGITS),
        ServedModel(
            "bert_base",
            (Tensor("input_ids", (128,), "int64"),),
            (Tensor("last_hidden_state", (128, 768), "float16"),),
        ),
    )
}

# The stand-in served by ``--echo-ms``: returns its input unchanged (any model name of a plan).
ECHO_TENSOR_SHAPE = (16,)


def echo_model(name: str) -> ServedModel:
    return ServedModel(
        name,
        (Tensor("INPUT", ECHO_TENSOR_SHAPE, "float32"),),
        (Tensor("OUTPUT", ECHO_TENSOR_SHAPE, "float32"),),
    )


def zoo_models() -> tuple[dict[str, ServedModel], str]:
    """The zoo's models and where they came from ('zoo' or 'built-in')."""
    try:
        specs = importlib.import_module("igniter_opt.zoo").MODELS
    except (ImportError, AttributeError):
        log.debug("igniter_opt.zoo has no registry; using the built-in list of zoo models")
        return dict(BUILTIN_MODELS), "built-in"
    out = {}
    for name, s in specs.items():
        out[name] = ServedModel(
            name,
            tuple(Tensor(t.name, tuple(t.shape), t.dtype) for t in s.inputs),
            tuple(Tensor(t.name, tuple(t.shape), t.dtype) for t in s.outputs),
        )
    return out, "zoo"


def served_model(name: str, *, echo: bool = False) -> ServedModel:
    """The served model of a plan's model name, or a one-line error naming the known models."""
    if echo:
        return echo_model(name)
    models, source = zoo_models()
    if name not in models:
        raise ApplyError(
            f"model '{name}' is not in the model zoo ({source} list: {', '.join(sorted(models))}); "
            "plan only zoo models, or pass --echo-ms to serve a stand-in"
        )
    return models[name]
