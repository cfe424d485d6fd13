"""Export a trained learner as data (weights + JSON), and load it for inference without the training code.

`export(learn, 'export')` writes `export.<hash>.safetensors` (fp32 weights, no pickled code, named by
their content) and then `export.json` (how to rebuild the model, the input the model was trained on, the
vocab, the validation-time transforms, the output activation), so a killed re-export leaves the previous
pair loadable. The user's labelling functions, callbacks and datasets are not needed to load it, so a
learner trained with a lambda `get_y` in a notebook loads in a fresh process. `load_learner` imports no
module beyond fastvision, torch and torchvision unless told to, checks the description against the
weights before allocating the model, and refuses pickles unless told to trust them.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import importlib
import inspect
import json
import pickle
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from ._version import __version__
from .checkpoint import atomic_write, remove_stale_temps
from .data.load import DataLoader
from .distributed import rank_distrib
from .losses import loss_activation, loss_decodes
from .transform import Transform
from .utils import default_device, unwrap_model
from .vision.image import ImageLoadError, decode_image, load_image

__all__ = [
    "export",
    "export_onnx",
    "load_learner",
    "export_weights",
    "InferenceLearner",
    "FORMAT_VERSION",
    "TRUSTED_MODULES",
    "NN_LAYERS",
]

FORMAT, FORMAT_VERSION = "fastvision-export", 2
TRUSTED_MODULES = ("fastvision", "torch", "torchvision")  # the packages an export may name without consent
MAX_SIDE = 16384  # largest image side a stored transform may ask for
MAX_OUTPUTS = 10_000_000  # largest class count a description may ask for
_HASHED = re.compile(r"\.[0-9a-f]{16}$")  # the content part of `<base>.<hash>.safetensors`

# torch.nn layers an export may describe as data (type name -> class): nothing else is ever built.
NN_LAYERS: dict[str, type[nn.Module]] = {
    name: getattr(nn, name)
    for name in (
        "Sequential",
        "Identity",
        "Flatten",
        "Unflatten",
        "Linear",
        "Bilinear",
        "Conv1d",
        "Conv2d",
        "Conv3d",
        "ConvTranspose1d",
        "ConvTranspose2d",
        "ConvTranspose3d",
        "BatchNorm1d",
        "BatchNorm2d",
        "BatchNorm3d",
        "LayerNorm",
        "GroupNorm",
        "InstanceNorm1d",
        "InstanceNorm2d",
        "LocalResponseNorm",
        "ReLU",
        "ReLU6",
        "LeakyReLU",
        "PReLU",
        "ELU",
        "SELU",
        "CELU",
        "GELU",
        "SiLU",
        "Mish",
        "Hardswish",
        "Hardsigmoid",
        "Hardtanh",
        "Sigmoid",
        "Tanh",
        "Softplus",
        "Softmax",
        "LogSoftmax",
        "Dropout",
        "Dropout1d",
        "Dropout2d",
        "Dropout3d",
        "AlphaDropout",
        "MaxPool1d",
        "MaxPool2d",
        "MaxPool3d",
        "AvgPool1d",
        "AvgPool2d",
        "AvgPool3d",
        "AdaptiveAvgPool1d",
        "AdaptiveAvgPool2d",
        "AdaptiveAvgPool3d",
        "AdaptiveMaxPool1d",
        "AdaptiveMaxPool2d",
        "ZeroPad2d",
        "ConstantPad2d",
        "ReflectionPad2d",
        "ReplicationPad2d",
        "Upsample",
        "PixelShuffle",
    )
}


def _encode(v: Any) -> Any:
    """Turn a transform attribute into JSON data (tensors and tuples tagged); raise TypeError otherwise."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, torch.Tensor):
        return {"__tensor__": v.detach().cpu().tolist(), "dtype": str(v.dtype).replace("torch.", "")}
    if isinstance(v, tuple):
        return {"__tuple__": [_encode(o) for o in v]}
    if isinstance(v, list):
        return [_encode(o) for o in v]
    if isinstance(v, dict) and all(isinstance(k, str) for k in v):
        return {k: _encode(o) for k, o in v.items()}
    if isinstance(v, Transform):  # e.g. the parts of an AffineGroup
        return {"__transform__": _tfm_to_dict(v)}
    raise TypeError(f"cannot store a {type(v).__name__} as data")


def _decode(v: Any) -> Any:
    if isinstance(v, list):
        return [_decode(o) for o in v]
    if isinstance(v, dict):
        if "__tensor__" in v:
            dtype = getattr(torch, str(v.get("dtype")), None)
            if not isinstance(dtype, torch.dtype):
                raise ValueError(
                    f"A stored tensor has dtype {v.get('dtype')!r}; expected a torch dtype name."
                )
            return torch.tensor(v["__tensor__"], dtype=dtype)
        if "__tuple__" in v:
            return tuple(_decode(o) for o in v["__tuple__"])
        if "__transform__" in v:
            return _tfm_from_desc(v["__transform__"])
        return {k: _decode(o) for k, o in v.items()}
    return v


def _tfm_desc(tfms: Sequence[Any]) -> list[dict]:
    """Describe the transforms that run on validation data; skip (with a warning) what is not data."""
    out = []
    for t in tfms:
        if getattr(t, "split_idx", None) == 0:
            continue  # training-only augmentation
        try:
            out.append(_tfm_to_dict(t))
        except TypeError as e:
            warnings.warn(
                f"export skips the transform {type(t).__qualname__} ({e}): `load_learner` will not apply it, so "
                "predictions may differ from validation. Use fastvision transforms for inference preprocessing.",
                stacklevel=3,
            )
    return out


def _tfm_to_dict(t: Transform) -> dict:
    cls = type(t)
    if not cls.__module__.startswith("fastvision.") or "<" in cls.__qualname__:
        raise TypeError("only fastvision transforms are stored")
    args = {k: _encode(v) for k, v in vars(t).items() if not k.startswith("_")}
    return {"type": f"{cls.__module__}.{cls.__qualname__}", "args": args}


def _tfm_from_desc(d: dict) -> Any:
    module, _, name = str(d.get("type")).rpartition(".")
    if not module.startswith("fastvision."):
        raise ValueError(
            f"Refusing to build transform {d.get('type')!r}: only fastvision transforms are loaded."
        )
    cls = getattr(importlib.import_module(module), name, None)
    if not (isinstance(cls, type) and issubclass(cls, Transform)):
        raise ValueError(f"{d['type']!r} is not a fastvision Transform (the file is from another version?).")
    args = _decode(d.get("args", {}))
    params = inspect.signature(cls.__init__).parameters
    t = cls(**{k: v for k, v in args.items() if k in params})
    for k, v in args.items():
        if k not in params and not k.startswith("_") and not callable(getattr(cls, k, None)):
            setattr(t, k, v)
    return t


def _probe_loss(loss_func: Any) -> dict:
    """Describe the loss's activation and decoding as data, by trying them on a fixed input."""
    x = torch.linspace(-2, 2, 12).view(4, 3)
    act, dec = loss_activation(loss_func), loss_decodes(loss_func)
    a = act(x)
    kind = next(
        (
            k
            for k, f in (
                ("softmax", lambda o: o.softmax(-1)),
                ("sigmoid", torch.sigmoid),
                ("none", lambda o: o),
            )
            if torch.allclose(a, f(x))
        ),
        None,
    )
    if kind is None:
        warnings.warn(
            f"export: unknown activation of {type(loss_func).__name__}; storing 'none'.", stacklevel=3
        )
        kind = "none"
    d, thresh = dec(a), float(getattr(loss_func, "thresh", 0.5))
    decodes = "none"
    if d.shape == a.shape[:-1] and torch.equal(d.long(), a.argmax(-1)):
        decodes = "argmax"
    elif d.shape == a.shape and torch.equal(d.bool(), a > thresh):
        decodes = "threshold"
    return {"name": type(loss_func).__name__, "activation": kind, "decodes": decodes, "thresh": thresh}


# ---- the input contract: what the model was fed, recorded from the data ----


def _first_dataset(dls: Any) -> Any:
    for name in ("valid_ds", "train_ds"):
        with contextlib.suppress(AttributeError, IndexError):
            ds = getattr(dls, name)
            if ds is not None and len(ds):
                return ds
    return None


def _item(ds: Any, i: int) -> Any:
    s = ds[i]
    return s[0] if isinstance(s, (tuple, list)) else s


def _input_contract(dls: Any) -> dict:
    """Record the model input (channels, size, dtype) and the raw items (an image, or a tensor's dtype/range)."""
    contract: dict[str, Any] = {"channels": None, "size": None, "dtype": None, "source": None}
    ds = _first_dataset(dls)
    first = _item(ds, 0) if ds is not None else None
    if isinstance(first, Image.Image):
        contract["source"] = "image"
    elif isinstance(first, torch.Tensor):
        xs = [_item(ds, i) for i in range(min(len(ds), 16))]
        vals = torch.stack([torch.stack([x.min(), x.max()]).double() for x in xs])
        contract.update(
            source="tensor",
            item_dtype=str(first.dtype).replace("torch.", ""),
            item_range=[float(vals[:, 0].min()), float(vals[:, 1].max())],
        )
    loaders = [dl for dl in getattr(dls, "loaders", []) if len(getattr(dl, "dataset", ()))]
    dl = loaders[1] if len(loaders) > 1 else (loaders[0] if loaders else None)
    if dl is not None and hasattr(dl, "one_batch"):
        try:
            b = dl.one_batch()
        except Exception as e:  # a custom loader: the contract is best effort
            warnings.warn(f"export could not read a batch to record the model input ({e}).", stacklevel=3)
        else:
            xb = b[0] if isinstance(b, (tuple, list)) else b
            if isinstance(xb, torch.Tensor) and xb.ndim == 4:
                contract.update(channels=int(xb.shape[1]), size=[int(s) for s in xb.shape[-2:]])
            if isinstance(xb, torch.Tensor):
                contract["dtype"] = str(xb.dtype).replace("torch.", "")
    return contract


def _image_mode(dls: Any, contract: dict) -> str:
    with contextlib.suppress(AttributeError, IndexError):
        for t in (getattr(dls.valid.dataset, "type_tfms", None) or [[]])[0]:
            if getattr(t, "mode", None) in ("RGB", "L"):
                return t.mode
    if contract.get("channels") not in (None, 1, 3):
        warnings.warn(
            f"The model takes {contract['channels']} channels: `load_learner(...).predict` decodes images as "
            "RGB, so pass it tensors with that many channels instead of image files.",
            stacklevel=3,
        )
    return "L" if contract.get("channels") == 1 else "RGB"


def _sets_size(tfms: Sequence[Any]) -> bool:
    """True if one of `tfms` (or a part of one) resizes to a fixed size."""
    return any(getattr(t, "size", None) is not None or _sets_size(getattr(t, "parts", [])) for t in tfms)


def _contract_tfms(contract: dict, item_tfms: list, batch_tfms: list) -> tuple[list, list]:
    """Return the transforms that make a decoded image match the recorded model input, if the pipeline doesn't."""
    from .vision.lighting import IntToFloatTensor
    from .vision.resize import Resize

    add_item, add_batch = [], []
    size = contract.get("size")
    if size and not _sets_size([*item_tfms, *batch_tfms]):
        add_item.append(Resize(tuple(size)))
    if contract.get("source") == "tensor" and contract.get("item_dtype", "").startswith(("float", "bfloat")):
        if not any(isinstance(t, IntToFloatTensor) for t in batch_tfms):
            lo, hi = contract["item_range"]
            if lo >= 0 and hi <= 1:
                add_batch.append(IntToFloatTensor())
            elif lo >= 0 and hi <= 255:
                add_batch.append(IntToFloatTensor(div=1.0))
    return add_item, add_batch


def _check_contract(contract: dict) -> None:
    """Warn at export when a decoded image cannot be turned into what the model was trained on."""
    if contract.get("source") != "tensor" or not contract.get("item_dtype", "").startswith(
        ("float", "bfloat")
    ):
        return
    lo, hi = contract["item_range"]
    if lo < 0 or hi > 255:
        warnings.warn(
            f"The training items are float tensors in [{lo:.3g}, {hi:.3g}] (already normalised?): "
            "`load_learner(...).predict` cannot turn an image file into that. Train with uint8 or [0, 1] "
            "items and a `Normalize` batch transform, or predict on tensors preprocessed like the training data.",
            stacklevel=3,
        )


# ---- models as data: a vision_learner spec, an importable class, or a tree of torch.nn layers ----


def _json_arg(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (tuple, list, torch.Size)):
        return [_json_arg(o) for o in v]
    raise TypeError(f"a {type(v).__name__} argument")


def _layer_args(m: nn.Module) -> dict:
    """Read a torch.nn layer's constructor arguments back from its attributes."""
    args = {}
    for name, p in inspect.signature(type(m).__init__).parameters.items():
        if name in ("self", "device", "dtype") or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if name == "bias" and isinstance(getattr(m, "bias", None), (torch.Tensor, type(None))):
            args[name] = m.bias is not None
        elif hasattr(m, name):
            args[name] = _json_arg(getattr(m, name))
        elif p.default is p.empty:
            raise TypeError(f"{type(m).__name__} does not keep its argument {name!r}")
    return args


def _is_sequential(m: nn.Module) -> bool:
    return isinstance(m, nn.Sequential) and type(m).forward is nn.Sequential.forward


def _nn_tree(m: nn.Module, custom: list[str]) -> dict:
    """Describe `m` as allow-listed torch.nn layers; a custom module becomes a Sequential of its children
    (its name is added to `custom`: the result must then be checked against the model's outputs)."""
    cls = type(m)
    if cls is not nn.Sequential and NN_LAYERS.get(cls.__name__) is cls:
        if any(True for _ in m.children()):
            raise TypeError(f"{cls.__name__} has sub-modules")
        return {"type": cls.__name__, "args": _layer_args(m)}
    if not _is_sequential(m):
        custom.append(cls.__qualname__)
    children = list(m.named_children())
    if isinstance(m, nn.modules.lazy.LazyModuleMixin):
        raise TypeError(
            f"{cls.__name__} is not initialised yet: run a batch through the model (e.g. learn.get_preds()) first"
        )
    if not children:
        raise TypeError(f"{cls.__qualname__} is not a torch.nn layer fastvision can describe")
    return {"type": "Sequential", "children": [[n, _nn_tree(c, custom)] for n, c in children]}


def _tuples(v: Any) -> Any:
    return tuple(_tuples(o) for o in v) if isinstance(v, list) else v


def _nn_build(node: Any, depth: int = 0) -> nn.Module:
    """Build a module from an `_nn_tree` description; only `NN_LAYERS` classes, only JSON arguments."""
    if not isinstance(node, dict) or depth > 64:
        raise ValueError(f"model.tree: expected a layer description (a dict), got {type(node).__name__}.")
    cls = NN_LAYERS.get(str(node.get("type")))
    if cls is None:
        raise ValueError(
            f"model.tree names the layer {node.get('type')!r}, which is not one of fastvision's allowed torch.nn "
            f"layers (fastvision.export.NN_LAYERS)."
        )
    if cls is nn.Sequential:
        kids = node.get("children")
        if not isinstance(kids, list) or not all(isinstance(k, list) and len(k) == 2 for k in kids):
            raise ValueError("model.tree: a Sequential needs 'children': [[name, layer], ...].")
        seq = nn.Sequential()
        for name, child in kids:
            seq.add_module(str(name), _nn_build(child, depth + 1))
        return seq
    args = node.get("args", {})
    if not isinstance(args, dict):
        raise ValueError(f"model.tree: the arguments of {node['type']} must be a dict, got {args!r}.")
    return cls(**{k: _tuples(v) for k, v in args.items()})


def _same_outputs(model: nn.Module, rebuilt: nn.Module, contract: dict) -> bool:
    """Load `model`'s weights into `rebuilt` and compare both on a random input of the recorded shape."""
    if not contract.get("channels") or not contract.get("size"):
        return False
    p = next(model.parameters(), None)
    dev = p.device if p is not None else torch.device("cpu")
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.to(dev).eval()
    was = model.training
    x = torch.rand(2, contract["channels"], *contract["size"], generator=torch.Generator().manual_seed(0))
    try:
        model.eval()
        with torch.no_grad():
            a, b = model(x.to(dev)), rebuilt(x.to(dev))
        return (
            isinstance(a, torch.Tensor)
            and a.shape == b.shape
            and torch.allclose(a, b, rtol=1e-4, atol=1e-5, equal_nan=True)
        )
    except Exception:
        return False
    finally:
        model.train(was)


def _nn_desc(model: nn.Module, contract: dict) -> tuple[dict | None, str]:
    """Return `({'kind': 'nn', 'tree': ...}, '')` if `model` is made of torch.nn layers, else `(None, why)`."""
    custom: list[str] = []
    try:
        tree = _nn_tree(model, custom)
        rebuilt = _nn_build(tree)
    except (TypeError, ValueError) as e:
        return None, str(e)
    own = {k: v.shape for k, v in model.state_dict().items()}
    if {k: v.shape for k, v in rebuilt.state_dict().items()} != own:
        return None, "its weights are not all inside torch.nn layers"
    checkable = bool(contract.get("channels") and contract.get("size"))
    if (custom or checkable) and not _same_outputs(model, rebuilt, contract):
        what = ", ".join(dict.fromkeys(custom)) or type(model).__qualname__
        return (
            None,
            f"the forward of {what} is not its sub-modules applied in order (checked on a random input)",
        )
    return {"kind": "nn", "tree": tree}, ""


def _model_desc(model: nn.Module, model_kwargs: dict | None, contract: dict) -> dict:
    spec = getattr(model, "arch_spec", None)
    if spec is not None and spec.get("exportable") and model_kwargs is None:
        try:
            json.dumps(spec)
        except TypeError as e:
            raise ValueError(
                f"Cannot export: the model's arguments are not JSON data ({e}); pass plain arch_kwargs."
            ) from e
        return {k: v for k, v in spec.items() if k != "exportable"}
    cls = type(model)
    kwargs = model_kwargs if model_kwargs is not None else getattr(model, "init_kwargs", None)
    path = f"{cls.__module__}.{cls.__qualname__}"
    importable = cls.__module__ != "__main__" and "<locals>" not in cls.__qualname__
    if kwargs is not None and importable:
        try:
            json.dumps(kwargs)
        except TypeError as e:
            raise ValueError(f"model_kwargs must be JSON data (numbers, strings, lists, dicts): {e}.") from e
        return {"kind": "class", "class": path, "kwargs": kwargs}
    desc, why = _nn_desc(model, contract)
    if desc is not None:
        return desc
    where = (
        "is defined in __main__ or inside a function"
        if not importable
        else "has no recorded constructor arguments"
    )
    raise ValueError(
        f"Cannot export the {path} model: it {where}, and it cannot be described as torch.nn layers ({why}). "
        "fastvision rebuilds models from data, never from pickled code. Either build it from torch.nn layers "
        "in an nn.Sequential (or a module whose forward applies its sub-modules in order); or use vision_learner "
        "with a registry architecture (no custom_head); or move the class to a module file (e.g. mynets.py), "
        "export with model_kwargs={...its constructor arguments...} and load with "
        "load_learner(f, trusted_modules=['mynets'])."
    )


def _import_model_class(path: str, trusted_modules: Sequence[str]) -> type:
    """Import the class `path` names, if its module is fastvision's, torch's, torchvision's or trusted."""
    module, _, name = path.rpartition(".")
    allowed = (*TRUSTED_MODULES, *trusted_modules)
    if not module or not any(module == m or module.startswith(m + ".") for m in allowed):
        raise ValueError(
            f"Refusing to import {module or path!r}: the export's model description names the class {path!r}, "
            "and importing a module runs its code. load_learner only imports fastvision, torch and torchvision "
            f"by itself. If you trust that module, pass load_learner(..., trusted_modules=[{module!r}])."
        )
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ImportError(f"The exported model class {path!r} cannot be imported here: {e}.") from e
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f"Refusing to call {path!r}: the description names something not an nn.Module.")
    return cls


def _build_model(d: dict, trusted_modules: Sequence[str] = ()) -> nn.Module:
    if d.get("kind") == "vision":
        from .vision.arch import create_vision_model

        head = dict(d["head"])
        head["y_range"] = tuple(head["y_range"]) if head.get("y_range") is not None else None
        return create_vision_model(
            d["arch"],
            d["n_out"],
            pretrained=False,
            cut=d.get("cut"),
            n_in=d["n_in"],
            init=None,
            arch_kwargs=d.get("arch_kwargs"),
            **head,
        )
    if d.get("kind") == "class":
        return _import_model_class(str(d.get("class")), trusted_modules)(**d["kwargs"])
    if d.get("kind") == "nn":
        return _nn_build(d.get("tree"))
    raise ValueError(f"Unknown model description kind {d.get('kind')!r}; expected 'vision', 'class' or 'nn'.")


# ---- writing ----


def _weights_name(base: Path, sha: str) -> Path:
    return base.with_name(f"{base.name}.{sha[:16]}.safetensors")


def _referenced_weights(jfile: Path) -> Path | None:
    """The weights file the current `jfile` names (None if there is no readable one)."""
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError, AttributeError):
        name = json.loads(jfile.read_text())["weights"]["file"]
        if isinstance(name, str) and Path(name).name == name:
            return jfile.with_name(name)
    return None


def _remove_old_weights(base: Path, keep: Path, previous: Path | None) -> None:
    """Remove the previous export's weights and those of killed exports (`<base>.<hash>.safetensors` only)."""
    ours = re.compile(re.escape(base.name) + r"\.[0-9a-f]{16}\.safetensors")
    olds = [p for p in base.parent.glob(f"{glob.escape(base.name)}.*.safetensors") if ours.fullmatch(p.name)]
    if previous is not None and previous.name == f"{base.name}.safetensors":  # a format-1 export
        olds.append(previous)
    for p in olds:
        if p != keep:
            with contextlib.suppress(OSError):
                p.unlink()
    remove_stale_temps(base.parent, f"{glob.escape(base.name)}.*.safetensors")


def export(learn: Any, fname: str | Path = "export", model_kwargs: dict | None = None) -> Path:
    """Write `<fname>.<hash>.safetensors` (fp32 weights) and then `<fname>.json` (everything else); return the JSON path.

    A re-export replaces the pair atomically: the new weights get a new name, the JSON is replaced last and
    the old weights are removed after it, so at any instant `load_learner` finds a complete export.

    Args:
        learn: the trained `Learner`.
        fname: relative paths go under `learn.path`; an extension (.pkl, .json, ...) is dropped.
        model_kwargs: constructor arguments, for a model that is not from `vision_learner` and not made of
            torch.nn layers (its class must be importable, e.g. `mypkg.nets.MyNet`; load it with
            `load_learner(f, trusted_modules=['mypkg'])`).
    """
    base = Path(fname)
    base = base if base.is_absolute() else Path(getattr(learn, "path", ".")) / base
    if base.suffix in (".pkl", ".json", ".safetensors", ".pth", ".pt"):
        base = base.with_suffix("")
    if rank_distrib() != 0:  # under DDP only rank 0 writes
        return base.with_name(base.name + ".json")
    model = unwrap_model(learn.model)
    dls, vocab = learn.dls, getattr(learn.dls, "vocab", None)
    contract = _input_contract(dls)
    _check_contract(contract)
    desc_model = _model_desc(model, model_kwargs, contract)
    sd = {
        k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu().contiguous().clone()
        for k, v in model.state_dict().items()
    }
    bad = [k for k, v in sd.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        warnings.warn(f"export: the weights {bad[:5]} hold NaN or infinite values.", stacklevel=2)
    valid = dls.valid if len(getattr(dls, "loaders", [0, 0])) > 1 else dls.train
    desc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fastvision_version": __version__,
        "model": desc_model,
        "vocab": [str(v) for v in vocab] if vocab is not None else None,
        "n_inp": int(getattr(dls, "n_inp", 1) or 1),
        "image_mode": _image_mode(dls, contract),
        "input": contract,
        "item_tfms": _tfm_desc(getattr(valid, "after_item", [])),
        "batch_tfms": _tfm_desc(getattr(valid, "after_batch", [])),
        "loss": _probe_loss(learn.loss_func),
    }
    from safetensors.torch import save

    data = save(sd, metadata={"format": FORMAT})
    sha = hashlib.sha256(data).hexdigest()
    base.parent.mkdir(parents=True, exist_ok=True)
    jfile = base.with_name(base.name + ".json")
    previous = _referenced_weights(jfile)
    wfile = atomic_write(_weights_name(base, sha), lambda f: f.write(data))
    desc["weights"] = {"file": wfile.name, "sha256": sha}
    atomic_write(jfile, lambda f: f.write(json.dumps(desc, indent=1).encode()))
    _remove_old_weights(base, wfile, previous)
    return jfile


# ---- ONNX ----


def export_onnx(
    learn: Any,
    fname: str | Path = "export.onnx",
    preprocess: bool = True,
    activation: bool = True,
    input_shape: Sequence[int] | None = None,
    **kwargs: Any,
) -> Path:
    """Write the model of a `Learner` or an `InferenceLearner` as an ONNX file with a dynamic batch axis; return its path.

    The input contract (also stored in the file, see `fastvision.onnx.onnx_metadata`): the input `input`
    is a B x C x H x W batch of images already resized (and cropped) to the training input size (C, H, W
    from the data, `description['input']`), channels in RGB order (L for one channel). With `preprocess`
    it is uint8 pixels 0-255 and the graph does `IntToFloatTensor` and `Normalize` as the validation
    pipeline does (a pipeline without `IntToFloatTensor` takes float32); without it the input is the
    float32 tensor the model itself takes, already normalised. The output `output` is B x n_out:
    probabilities (the loss's softmax or sigmoid) with `activation`, else raw model outputs. Decoding
    and resizing are not in the graph. Needs `pip install fastvision[onnx]`.

    Args:
        learn: a trained `Learner`, or what `load_learner` returns.
        fname: the `.onnx` file (suffix added when missing); relative paths go under `learn.path` for a
            `Learner`, the current folder otherwise.
        preprocess: put the uint8 -> float conversion and the normalisation in the graph (True).
        activation: put the output activation in the graph (True).
        input_shape: `(C, H, W)` when the data did not record it (None: from the data).
        kwargs: `opset`, `dynamo`, `check` of `fastvision.onnx.write_onnx`.
    """
    from .onnx import onnx_preprocessing, write_onnx

    if isinstance(learn, InferenceLearner):
        model, desc, batch_tfms = learn.model, learn.description, learn.batch_tfms
        base = Path(".")
    else:
        model, base, dls = unwrap_model(learn.model), Path(getattr(learn, "path", ".")), learn.dls
        contract = _input_contract(dls)
        valid = dls.valid if len(getattr(dls, "loaders", [0, 0])) > 1 else dls.train
        item_tfms = [t for t in getattr(valid, "after_item", []) if getattr(t, "split_idx", None) != 0]
        batch_tfms = [t for t in getattr(valid, "after_batch", []) if getattr(t, "split_idx", None) != 0]
        _, add_batch = _contract_tfms(contract, item_tfms, batch_tfms)
        batch_tfms = [*add_batch, *batch_tfms]
        vocab = getattr(dls, "vocab", None)
        desc = {
            "vocab": [str(v) for v in vocab] if vocab is not None else None,
            "image_mode": _image_mode(dls, contract),
            "input": contract,
            "loss": _probe_loss(learn.loss_func),
        }
    inp = desc.get("input") or {}
    if input_shape is None:
        if not (inp.get("channels") and inp.get("size")):
            raise ValueError(
                "export_onnx cannot tell the model's input size: the data recorded no B x C x H x W batch "
                f"(input: {inp}). Pass input_shape=(channels, height, width)."
            )
        input_shape = (inp["channels"], *inp["size"])
    pre = onnx_preprocessing(batch_tfms) if preprocess else {"div": None, "mean": None, "std": None}
    path = Path(fname)
    path = path if path.is_absolute() else base / path
    path = path if path.suffix == ".onnx" else path.with_name(path.name + ".onnx")
    meta = {"vocab": desc.get("vocab"), "image_mode": desc.get("image_mode"), "preprocess": preprocess}
    return write_onnx(
        model,
        path,
        input_shape,
        **pre,
        activation=desc["loss"]["activation"] if activation else "none",
        metadata=meta,
        **kwargs,
    )


# ---- loading ----


class _ItemsDataset(torch.utils.data.Dataset):
    """Raw inputs (paths, bytes, PIL images, arrays, tensors) decoded like the validation images: straight
    into a tensor (`decode_image`) when the item transforms take one, as `DataBlock` does, else to PIL."""

    def __init__(self, items: Sequence[Any], mode: str, item_tfms: Sequence[Any]):
        from .vision.block import decode_min_size  # the rule DataBlock decodes by

        self.items, self.mode, self.split_idx = list(items), mode, 1
        self.min_size = decode_min_size(list(item_tfms)) if item_tfms else False

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple:
        if self.min_size is False:
            return (load_image(self.items[i], self.mode),)
        return (decode_image(self.items[i], self.mode, self.min_size),)


class _InferenceData:
    """What an inference learner keeps of the data: vocab, device and `test_dl`."""

    def __init__(self, learn: InferenceLearner):
        self._learn, self.vocab, self.n_inp = learn, learn.vocab, learn.description["n_inp"]
        self.c = len(self.vocab) if self.vocab is not None else None

    @property
    def device(self) -> torch.device:
        return self._learn.device

    def test_dl(self, items: Sequence[Any], bs: int = 64, **kwargs: Any) -> DataLoader:
        """Return a loader of `items` with the exported validation transforms."""
        return self._learn.test_dl(items, bs, **kwargs)


class InferenceLearner:
    """A model rebuilt from an export, with the validation preprocessing: `predict` and `get_preds` on items.

    The preprocessing is the exported validation pipeline, completed from the recorded model input
    (`description['input']`): a `Resize` to the training size when the pipeline has none, and a
    conversion to float when the model was trained on float tensors.
    """

    def __init__(self, model: nn.Module, description: dict, device: torch.device | str = "cpu"):
        self.description, self.device = description, torch.device(device)
        self.model = model.to(self.device).eval()
        self.vocab = description.get("vocab")
        self.item_tfms = [_tfm_from_desc(d) for d in description["item_tfms"]]
        self.batch_tfms = [_tfm_from_desc(d) for d in description["batch_tfms"]]
        add_item, add_batch = _contract_tfms(description.get("input") or {}, self.item_tfms, self.batch_tfms)
        self.item_tfms, self.batch_tfms = [*add_item, *self.item_tfms], [*add_batch, *self.batch_tfms]
        self.loss = description["loss"]
        self.dls = _InferenceData(self)

    def test_dl(self, items: Sequence[Any], bs: int = 64, num_workers: int = 0, **kwargs: Any) -> DataLoader:
        """Return a loader on raw items (path, bytes, PIL image, array, tensor) with the validation transforms."""
        ds = _ItemsDataset(items, self.description["image_mode"], self.item_tfms)
        return DataLoader(
            ds,
            bs=bs,
            after_item=self.item_tfms,
            after_batch=self.batch_tfms,
            device=self.device,
            split_idx=1,
            num_workers=num_workers,
            n_inp=1,
            **kwargs,
        )

    def _activate(self, out: torch.Tensor) -> torch.Tensor:
        kind = self.loss["activation"]
        return out.softmax(-1) if kind == "softmax" else torch.sigmoid(out) if kind == "sigmoid" else out

    def _decode(self, probs: torch.Tensor) -> torch.Tensor:
        how = self.loss["decodes"]
        return (
            probs.argmax(-1)
            if how == "argmax"
            else probs > self.loss["thresh"]
            if how == "threshold"
            else probs
        )

    def get_preds(
        self, items: Sequence[Any] | None = None, dl: Any = None, with_decoded: bool = False, bs: int = 64
    ) -> Any:
        """Return the activated predictions (and decoded ones) for `items` or a loader `dl`, in order."""
        if dl is None:
            if items is None:
                raise ValueError("get_preds needs `items` or a loader `dl`; got neither.")
            dl = self.test_dl(items, bs=bs)
        outs = []
        try:
            with torch.inference_mode():
                for b in dl:
                    outs.append(self._activate(self.model(*b[:1]).float()).cpu())
        except ImageLoadError as e:
            if e.hint is not None:  # e.g. a missing file's "check the path"
                raise
            raise type(e)(e.path, e.reason, _PREDICT_HINT) from None  # not the training loader's advice
        preds = torch.cat(outs) if outs else torch.empty(0)
        return (preds, self._decode(preds)) if with_decoded else preds

    def _label(self, dec: torch.Tensor) -> Any:
        if self.vocab is None or self.loss["decodes"] == "none":
            return dec
        if dec.dtype == torch.bool:
            return [self.vocab[i] for i in torch.nonzero(dec).view(-1).tolist()]
        return self.vocab[int(dec)]

    def predict(self, item: Any, bs: int = 64) -> Any:
        """Return `(label, decoded, probs)` for one item, or a list of them for a list of items (order kept)."""
        many = isinstance(item, (list, tuple))
        preds, decoded = self.get_preds(list(item) if many else [item], with_decoded=True, bs=bs)
        res = [(self._label(d), d, p) for p, d in zip(preds, decoded)]
        return res if many else res[0]

    def export_onnx(self, fname: str | Path = "export.onnx", **kwargs: Any) -> Path:
        """Write the model as ONNX with its preprocessing and activation (see `export_onnx`); return the path."""
        return export_onnx(self, fname, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name in _TRAINING:
            raise AttributeError(
                f"InferenceLearner has no {name}: it predicts. To train further from this export, build a Learner "
                "on your data and load its weights: learn = vision_learner(dls, arch); learn.load('model.json') "
                "(strict='head' for other classes)."
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __repr__(self) -> str:
        m = self.description["model"]
        name = m.get("arch", m.get("class", m.get("kind")))
        return f"InferenceLearner({name}, vocab={self.vocab}, device={self.device})"


_TRAINING = (
    "fit",
    "fit_one_cycle",
    "fine_tune",
    "fit_flat_cos",
    "fit_sgdr",
    "lr_find",
    "freeze",
    "unfreeze",
)

_PREDICT_HINT = (
    "The file may be truncated, empty or not an image; verify_images(files) lists every unreadable file, to "
    "leave out before predicting."
)


def _refuse_pickle(path: Path, trust_pickle: bool) -> Any:
    with open(path, "rb") as f:
        head = f.read(4)
    if not head.startswith((b"\x80", b"PK\x03\x04")):  # neither a pickle nor torch.save's zip
        raise ValueError(
            f"load_learner cannot read {str(path)!r}: it is not a fastvision export. Pass the .json file that "
            "learn.export() wrote (next to its .safetensors weights)."
        )
    if trust_pickle:
        warnings.warn(f"Loading {path} with pickle: this runs any code the file contains.", stacklevel=3)
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except RuntimeError:  # a plain pickle, not torch.save's format
            with open(path, "rb") as f:
                return pickle.load(f)
    raise ValueError(
        f"load_learner refuses {str(path)!r}: it is not a fastvision export (<name>.json + <name>.<hash>.safetensors) "
        "but a pickle-based file, and unpickling can run arbitrary code. Re-export with fastvision's "
        "`learn.export()`, or pass trust_pickle=True only if you trust where the file comes from."
    )


def _find_json(p: Path) -> Path | None:
    """The description file of an export named by its .json, its weights file or its name; None for a pickle."""
    if p.is_dir():
        found = sorted(c.name for c in p.glob("*.json"))
        raise IsADirectoryError(
            f"{str(p)!r} is a folder; load_learner wants an export's .json file"
            + (f" (this folder has: {', '.join(found[:5])})." if found else " (this folder has none).")
        )
    if p.suffix == ".safetensors":
        stem = p.name[: -len(".safetensors")]
        return p.with_name(_HASHED.sub("", stem) + ".json")
    if p.suffix == ".json":
        return p
    if p.is_file():
        return None
    jfile = next((c for c in (p.with_name(p.name + ".json"), p.with_suffix(".json")) if c.exists()), None)
    if jfile is None:
        looked = sorted({f"{p.name}.json", p.with_suffix(".json").name})
        where = "" if p.is_absolute() else f" in {str(Path.cwd())!r}"
        raise FileNotFoundError(
            f"No export at {str(p)!r}{where} (no {' or '.join(looked)}). learn.export(name) writes name.json and "
            "a .safetensors file under learn.path when the name is relative: pass that .json (e.g. "
            "learn.path/'export.json'), or write one with learn.export()."
        )
    return jfile


def _read_desc(jfile: Path) -> dict:
    if not jfile.is_file():
        raise FileNotFoundError(f"No export description {str(jfile)!r}. Write one with learn.export().")
    try:
        desc = json.loads(jfile.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(
            f"{str(jfile)!r} is not a fastvision export: it is not valid JSON ({e}). Pass the .json that "
            "learn.export() wrote, or export again."
        ) from e
    if not isinstance(desc, dict) or desc.get("format") != FORMAT:
        got = desc.get("format") if isinstance(desc, dict) else type(desc).__name__
        raise ValueError(
            f"{str(jfile)!r} is not a fastvision export (format {got!r}, expected {FORMAT!r}). Pass the .json "
            "that learn.export() wrote."
        )
    version = desc.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{str(jfile)!r} is format {desc.get('format')!r} version {version}; this fastvision "
            f"({__version__}) reads {FORMAT!r} up to version {FORMAT_VERSION}. Upgrade fastvision."
        )
    return desc


def _need(cond: bool, jfile: Path, field: str, got: Any, want: str) -> None:
    if not cond:
        raise ValueError(
            f"{jfile.name}: field {field!r} is {got!r}; expected {want}. The file is damaged or was edited: "
            "export again."
        )


def _check_sizes(tfms: Any, field: str, jfile: Path) -> None:
    """Refuse a stored transform that asks for an absurd image size (e.g. Resize(40000))."""
    if isinstance(tfms, dict):
        for k, v in tfms.items():
            sub = f"{field}.{k}"
            if k == "size" and v is not None:
                sides = v.get("__tuple__", v) if isinstance(v, dict) else v
                sides = sides if isinstance(sides, list) else [sides]
                ok = all(isinstance(s, int) and not isinstance(s, bool) and 0 < s <= MAX_SIDE for s in sides)
                _need(ok, jfile, sub, v, f"image sides between 1 and {MAX_SIDE}")
            else:
                _check_sizes(v, sub, jfile)
    elif isinstance(tfms, list):
        for i, v in enumerate(tfms):
            _check_sizes(v, f"{field}[{i}]", jfile)


def _check_desc(desc: dict, jfile: Path) -> None:
    """Check the fields load_learner relies on, before anything is built."""
    m: Any  # untrusted JSON values, checked by `_need` before use
    w: Any
    loss: Any
    vocab: Any
    m, w, loss, vocab = desc.get("model"), desc.get("weights"), desc.get("loss"), desc.get("vocab")
    _need(
        isinstance(m, dict) and m.get("kind") in ("vision", "class", "nn"),
        jfile,
        "model",
        m,
        "a dict with kind 'vision', 'class' or 'nn'",
    )
    _need(isinstance(w, dict), jfile, "weights", w, "{'file': ..., 'sha256': ...}")
    wname = w.get("file")
    _need(
        isinstance(wname, str) and Path(wname).name == wname and wname.endswith(".safetensors"),
        jfile,
        "weights.file",
        wname,
        "a .safetensors file name in the same folder",
    )
    _need(isinstance(w.get("sha256"), str), jfile, "weights.sha256", w.get("sha256"), "a hex digest")
    _need(
        vocab is None or (isinstance(vocab, list) and all(isinstance(v, str) for v in vocab)),
        jfile,
        "vocab",
        vocab,
        "a list of class names or null",
    )
    _need(desc.get("image_mode") in ("RGB", "L"), jfile, "image_mode", desc.get("image_mode"), "'RGB' or 'L'")
    _need(desc.get("n_inp") == 1, jfile, "n_inp", desc.get("n_inp"), "1")
    _need(isinstance(loss, dict), jfile, "loss", loss, "a dict")
    _need(
        loss.get("activation") in ("softmax", "sigmoid", "none"),
        jfile,
        "loss.activation",
        loss.get("activation"),
        "'softmax', 'sigmoid' or 'none'",
    )
    _need(
        loss.get("decodes") in ("argmax", "threshold", "none"),
        jfile,
        "loss.decodes",
        loss.get("decodes"),
        "'argmax', 'threshold' or 'none'",
    )
    _need(isinstance(loss.get("thresh"), (int, float)), jfile, "loss.thresh", loss.get("thresh"), "a number")
    for field in ("item_tfms", "batch_tfms"):
        _need(isinstance(desc.get(field), list), jfile, field, desc.get(field), "a list of transforms")
        _check_sizes(desc[field], field, jfile)
    inp = desc.get("input") or {}
    _need(isinstance(inp, dict), jfile, "input", inp, "a dict")
    _check_sizes({"size": inp.get("size")}, "input", jfile)
    if m["kind"] == "vision":
        n_out = m.get("n_out")
        _need(
            isinstance(n_out, int) and 0 < n_out <= MAX_OUTPUTS,
            jfile,
            "model.n_out",
            n_out,
            f"a class count between 1 and {MAX_OUTPUTS:,}",
        )
        _need(
            isinstance(m.get("n_in"), int) and 0 < m["n_in"] <= 1024,
            jfile,
            "model.n_in",
            m.get("n_in"),
            "a channel count between 1 and 1024",
        )
        if vocab is not None and loss["decodes"] != "none":
            _need(
                len(vocab) == n_out,
                jfile,
                "vocab",
                f"{len(vocab)} classes",
                f"as many classes as model.n_out={n_out}",
            )
    if m["kind"] == "class":
        _need(isinstance(m.get("class"), str), jfile, "model.class", m.get("class"), "a dotted class path")
        _need(isinstance(m.get("kwargs"), dict), jfile, "model.kwargs", m.get("kwargs"), "a dict")


def _header(data: bytes, wfile: Path) -> dict[str, list[int]]:
    """Parse the safetensors header: `{key: shape}` (no tensor is read)."""
    try:
        n = int.from_bytes(data[:8], "little")
        head = json.loads(data[8 : 8 + n])
        return {k: list(v["shape"]) for k, v in head.items() if k != "__metadata__"}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{str(wfile)!r} is not a safetensors file ({e}). Export again.") from e


def _check_against_weights(
    desc: dict, shapes: dict[str, list[int]], trusted: Sequence[str], jfile: Path
) -> None:
    """Build the model on the meta device (no memory) and compare it with the weights file and the vocab."""
    try:
        with torch.device("meta"):
            model = _build_model(desc["model"], trusted)
    except (ValueError, ImportError):
        raise
    except Exception:  # a model that cannot be built on the meta device is checked after the real build
        return
    want = {k: list(v.shape) for k, v in model.state_dict().items()}
    missing, extra = sorted(set(want) - set(shapes)), sorted(set(shapes) - set(want))
    wrong = [f"{k}: model {want[k]}, file {shapes[k]}" for k in want if k in shapes and want[k] != shapes[k]]
    if missing or extra or wrong:
        raise ValueError(
            f"{jfile.name} describes a model that does not fit its weights file: missing keys {missing[:5]}, "
            f"unexpected keys {extra[:5]}, other shapes {wrong[:3]}. The files were edited or mixed up: export again."
        )
    inp, vocab = desc.get("input") or {}, desc.get("vocab")
    if inp.get("channels") and inp.get("size") and vocab is not None and desc["loss"]["decodes"] != "none":
        with contextlib.suppress(Exception):
            out = model.eval()(torch.empty(1, inp["channels"], *inp["size"], device="meta"))
            n_out = out.shape[-1]
            _need(
                n_out == len(vocab), jfile, "vocab", f"{len(vocab)} classes", f"the model's {n_out} outputs"
            )


def load_learner(
    fname: str | Path,
    cpu: bool = True,
    trust_pickle: bool = False,
    device: torch.device | str | None = None,
    trusted_modules: Sequence[str] = (),
) -> InferenceLearner:
    """Rebuild an exported learner for inference (no training code needed).

    Args:
        fname: the export's `.json`, its `.safetensors`, or the name without extension.
        cpu: load on the CPU (True); False uses `device` or the default device.
        trust_pickle: allow loading a pickled file (fastai-style `.pkl`): this runs its code.
        device: the device when `cpu=False`.
        trusted_modules: modules (and their sub-modules) a `class` export may import besides fastvision,
            torch and torchvision (none): importing a module runs its code.
    """
    if isinstance(trusted_modules, str):
        trusted_modules = (trusted_modules,)
    jfile = _find_json(Path(fname))
    if jfile is None:
        return _refuse_pickle(Path(fname), trust_pickle)
    desc, data, wfile = _read_export(jfile)
    _check_against_weights(desc, _header(data, wfile), trusted_modules, jfile)
    from safetensors.torch import load

    weights = load(data)
    _warn_non_finite(weights, wfile, stacklevel=2)
    model = _build_model(desc["model"], trusted_modules)
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise ValueError(f"{wfile.name} does not fit the model {jfile.name} describes: {e}") from e
    dev = "cpu" if cpu else (device if device is not None else default_device())
    return InferenceLearner(model, desc, dev)


def _read_export(jfile: Path) -> tuple[dict, bytes, Path]:
    """Read and check an export's description and its weights' bytes; return (description, bytes, weights file)."""
    for attempt in range(3):  # a concurrent re-export may replace the pair between the two reads
        desc = _read_desc(jfile)
        _check_desc(desc, jfile)
        wfile = jfile.with_name(desc["weights"]["file"])
        try:
            data = wfile.read_bytes()
        except FileNotFoundError:
            if attempt < 2:
                continue
            raise FileNotFoundError(
                f"{jfile.name} names the weights {wfile.name}, which is not in {str(jfile.parent)!r}. Copy both "
                "files of the export together."
            ) from None
        if hashlib.sha256(data).hexdigest() == desc["weights"]["sha256"] or attempt == 2:
            break
    if hashlib.sha256(data).hexdigest() != desc["weights"]["sha256"]:
        raise ValueError(
            f"{str(wfile)!r} does not match {jfile.name} (checksum differs): re-export both files together."
        )
    return desc, data, wfile


def _warn_non_finite(weights: dict[str, torch.Tensor], wfile: Path, stacklevel: int) -> None:
    """Warn when weights hold NaN or infinity; `stacklevel` as the caller would give `warnings.warn`."""
    bad = [k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        warnings.warn(
            f"{wfile.name}: the weights {bad[:5]} hold NaN or infinite values; predictions will be NaN.",
            stacklevel=stacklevel + 1,
        )


def export_weights(fname: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read an export's weights (checksum verified) and its description, without building its model.

    For training further from an export: `Learner.load('model.json')` calls it.
    """
    jfile = _find_json(Path(fname))
    if jfile is None:
        raise ValueError(
            f"{str(fname)!r} is not a fastvision export: pass the .json that learn.export() wrote."
        )
    desc, data, wfile = _read_export(jfile)
    from safetensors.torch import load

    weights = load(data)
    _warn_non_finite(weights, wfile, stacklevel=2)
    return weights, desc
