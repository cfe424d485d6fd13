"""ONNX export: a model with its elementwise preprocessing and output activation, for runtimes without PyTorch.

The graph (`DeploymentModel`) takes a batch of images that already have the model's input size and
computes what the validation pipeline does after that point: the uint8 -> float conversion
(`IntToFloatTensor`), the normalisation (`Normalize`), the model, and the output activation (softmax or
sigmoid, from the loss). Decoding files, resizing and cropping stay with the caller, as with any ONNX model.
The contract is also stored in the file's metadata (`onnx_metadata`), with the class names.

`fastvision.export.export_onnx` (and `learn.export_onnx`, `load_learner(...).export_onnx`) gathers these
parts from a learner; this module writes and checks the file. It needs the `onnx` extra:
`pip install fastvision[onnx]` (onnx, onnxruntime; onnxscript for `dynamo=True`).
"""

from __future__ import annotations

import copy
import importlib
import inspect
import io
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._version import __version__
from .checkpoint import atomic_write

__all__ = [
    "DeploymentModel",
    "onnx_preprocessing",
    "write_onnx",
    "onnx_metadata",
    "ONNX_INPUT",
    "ONNX_OUTPUT",
]

ONNX_INPUT, ONNX_OUTPUT = "input", "output"  # the graph's input and output names
METADATA_KEY = "fastvision"  # the `metadata_props` entry holding the JSON contract
ACTIVATIONS = ("softmax", "sigmoid", "none")


def _require(module: str, why: str = "ONNX export") -> Any:
    """Import `module`, or raise an ImportError that says how to install fastvision's `onnx` extra."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"{why} needs the '{module}' package, which cannot be imported ({e}). Install the ONNX extra: "
            "pip install fastvision[onnx]"
        ) from e


class DeploymentModel(nn.Module):
    """`model` with the uint8 -> float conversion, the normalisation and the output activation inside.

    `forward(x)`: `x.float() / div` (when `div` is set), then `(x - mean) / std` (when `mean` is set), then
    the model, then `softmax(-1)` / `sigmoid` (per `activation`). This is what the ONNX graph computes.

    Args:
        model: the trained network (not changed).
        div: divisor of integer pixels (255.0 for images), or None when the input is already float.
        mean: per-channel means (broadcastable to B x C x H x W), or None for no normalisation.
        std: per-channel standard deviations, like `mean`.
        activation: 'softmax', 'sigmoid' or 'none' (raw model outputs).
    """

    mean: torch.Tensor | None  # registered buffers, both set or both None
    std: torch.Tensor | None

    def __init__(
        self,
        model: nn.Module,
        div: float | None = None,
        mean: Any = None,
        std: Any = None,
        activation: str = "none",
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r} is not one of {ACTIVATIONS}.")
        if (mean is None) != (std is None):
            raise ValueError("DeploymentModel needs both mean and std, or neither (no normalisation).")
        self.model, self.div, self.activation = model, div, activation
        self.register_buffer("mean", None if mean is None else _stat(mean))
        self.register_buffer("std", None if std is None else _stat(std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convert, normalise, run the model and activate its output."""
        if self.div is not None:
            x = x.float() / self.div
        if self.mean is not None and self.std is not None:
            x = (x - self.mean) / self.std
        out = self.model(x)
        if self.activation == "softmax":
            return out.softmax(-1)
        return torch.sigmoid(out) if self.activation == "sigmoid" else out


def _stat(v: Any) -> torch.Tensor:
    v = torch.as_tensor(v, dtype=torch.float32).detach().cpu()
    return v.view(1, -1, 1, 1) if v.ndim == 1 else v


def onnx_preprocessing(batch_tfms: Sequence[Any]) -> dict:
    """Return `{'div', 'mean', 'std'}` from the validation batch transforms: what the ONNX graph does first.

    `IntToFloatTensor` gives `div`, `Normalize` gives `mean` and `std` (None when absent). Geometric
    transforms (`AffineGroup`: the validation resize) are the caller's job, so they are left out;
    training-only transforms never run at inference; any other transform is left out with a warning.
    """
    from .vision.augment import AffineGroup
    from .vision.lighting import IntToFloatTensor, Normalize

    out: dict[str, Any] = {"div": None, "mean": None, "std": None}
    for t in batch_tfms:
        if getattr(t, "split_idx", None) == 0 or isinstance(t, AffineGroup):
            continue
        if isinstance(t, IntToFloatTensor):
            out["div"] = float(t.div)
        elif isinstance(t, Normalize):
            if t.mean is None:
                raise ValueError(
                    "The validation pipeline's Normalize has no statistics, so the ONNX graph cannot include "
                    "it: run a batch through the data first (dls.one_batch()) or pass mean/std to Normalize."
                )
            out["mean"], out["std"] = t.mean, t.std
        else:
            warnings.warn(
                f"export_onnx leaves the validation transform {type(t).__qualname__} out of the ONNX graph "
                "(only IntToFloatTensor and Normalize are included): apply it to the input yourself.",
                stacklevel=3,
            )
    return out


def _example(shape: Sequence[int], dtype: torch.dtype, n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(n)
    if dtype == torch.uint8:
        return torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g)
    return torch.rand(n, *shape, generator=g)


def _to_proto(wrapped: nn.Module, x: torch.Tensor, opset: int | None, dynamo: bool) -> Any:
    """Trace `wrapped` on `x` into an ONNX ModelProto whose input and output have a dynamic batch axis."""
    onnx = _require("onnx")
    names: dict[str, Any] = dict(input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT])
    if dynamo:
        _require("onnxscript", "ONNX export with dynamo=True")
        batch = torch.export.Dim("batch")
        prog = torch.onnx.export(
            wrapped,
            (x,),
            dynamo=True,
            dynamic_shapes=({0: batch},),
            opset_version=opset or 18,
            verbose=False,
            **names,
        )
        return prog.model_proto  # type: ignore[union-attr]  # torch's stub: None only for dynamo=False
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:  # torch >= 2.5 (2.9+ defaults to True)
        names["dynamo"] = False
    buf = io.BytesIO()
    with (
        warnings.catch_warnings()
    ):  # the TorchScript exporter is deprecated (still in torch 2.14), not broken
        warnings.filterwarnings("ignore", ".*legacy TorchScript-based ONNX export", DeprecationWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        dynamic = {ONNX_INPUT: {0: "batch"}, ONNX_OUTPUT: {0: "batch"}}
        # torch's stub says `f: str | PathLike | None`; the TorchScript exporter also writes to a file object
        torch.onnx.export(
            wrapped,
            (x,),
            buf,  # type: ignore[arg-type]
            dynamic_axes=dynamic,
            opset_version=opset or 17,
            **names,
        )
    return onnx.load_from_string(buf.getvalue())


def _check(data: bytes, wrapped: nn.Module, shape: Sequence[int], dtype: torch.dtype, fname: Path) -> None:
    """Run the ONNX model in onnxruntime on two batch sizes and compare it with PyTorch."""
    ort = _require("onnxruntime", "Checking the ONNX export (check=True)")
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    for n in (1, 3):
        x = _example(shape, dtype, n)
        with torch.no_grad():
            want = wrapped(x).numpy()
        got = session.run([ONNX_OUTPUT], {ONNX_INPUT: x.numpy()})[0]
        err = float(abs(got - want).max()) if got.shape == want.shape else float("inf")
        if not err <= 1e-3 + 1e-3 * float(abs(want).max()):
            raise RuntimeError(
                f"The ONNX model for {str(fname)!r} does not match PyTorch on a batch of {n}: output shape "
                f"{got.shape} vs {want.shape}, largest difference {err:.3g}. The model probably does something "
                "the exporter cannot trace (data-dependent control flow); try dynamo=True, or check=False to "
                "write it anyway."
            )


def write_onnx(
    model: nn.Module,
    fname: str | Path,
    input_shape: Sequence[int],
    div: float | None = None,
    mean: Any = None,
    std: Any = None,
    activation: str = "none",
    metadata: dict | None = None,
    opset: int | None = None,
    dynamo: bool = False,
    check: bool = True,
) -> Path:
    """Write `DeploymentModel(model, div, mean, std, activation)` to `fname` as ONNX; return the path.

    The input is `ONNX_INPUT` ('input'), B x C x H x W with a dynamic batch axis `B`: uint8 when `div`
    is set, else float32. The output is `ONNX_OUTPUT` ('output'), B x n_out. The file is written
    atomically; a copy of the model is exported on the CPU in float32 (the model itself is not changed).

    Args:
        input_shape: `(C, H, W)`, the model's input without the batch axis.
        div: the pixel divisor baked in (see `DeploymentModel`).
        mean: the normalisation means baked in (see `DeploymentModel`).
        std: the normalisation standard deviations baked in (see `DeploymentModel`).
        activation: the activation baked in (see `DeploymentModel`).
        metadata: JSON data stored under the 'fastvision' key of the file's `metadata_props`, besides
            the input and output description (None).
        opset: the ONNX opset (None: 17 with the TorchScript exporter, 18 with dynamo).
        dynamo: use torch's `torch.export`-based exporter (needs onnxscript; slower) instead of the
            TorchScript one (False).
        check: run the file in onnxruntime on batches of 1 and 3 and compare with PyTorch (True).
    """
    fname = Path(fname)
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be (channels, height, width), got {tuple(input_shape)}.")
    net = copy.deepcopy(model).float().cpu().eval()
    wrapped = DeploymentModel(net, div, mean, std, activation).eval()
    dtype = torch.uint8 if div is not None else torch.float32
    proto = _to_proto(wrapped, _example(shape, dtype, 2), opset, dynamo)
    contract = {
        "fastvision_version": __version__,
        "input": {
            "name": ONNX_INPUT,
            "shape": ["batch", *shape],
            "dtype": str(dtype).replace("torch.", ""),
            "layout": "NCHW",
            "div": div,
            "mean": None if mean is None else _stat(mean).flatten().tolist(),
            "std": None if std is None else _stat(std).flatten().tolist(),
        },
        "output": {"name": ONNX_OUTPUT, "activation": activation},
        **(metadata or {}),
    }
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(contract)
    proto.producer_name, proto.doc_string = "fastvision", _describe(contract)
    _require("onnx").checker.check_model(proto)
    data = proto.SerializeToString()
    if check:
        _check(data, wrapped, shape, dtype, fname)
    return atomic_write(fname, lambda f: f.write(data))


def _describe(c: dict) -> str:
    i = c["input"]
    steps = [f"x.float() / {i['div']:g}"] if i["div"] is not None else []
    steps += ["(x - mean) / std"] if i["mean"] is not None else []
    act = c["output"]["activation"]
    return (
        f"input '{i['name']}': {i['dtype']} {'x'.join(map(str, i['shape']))} ({i['layout']}); "
        f"graph: {', '.join([*steps, 'model'])}; output '{c['output']['name']}': "
        + ("raw model outputs" if act == "none" else f"{act} probabilities")
    )


def onnx_metadata(fname: str | Path) -> dict:
    """Return the contract fastvision stored in an ONNX file: input (shape, dtype, div, mean, std), output, vocab."""
    onnx = _require("onnx", "Reading an ONNX file")
    proto = onnx.load(str(fname), load_external_data=False)
    for p in proto.metadata_props:
        if p.key == METADATA_KEY:
            return json.loads(p.value)
    raise ValueError(
        f"{str(fname)!r} has no fastvision metadata: it was not written by fastvision's export_onnx."
    )
