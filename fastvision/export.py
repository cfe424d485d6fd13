"""Export a trained learner as data (weights + JSON), and load it for inference without the training code.

`export(learn, 'export')` writes `export.safetensors` (fp32 weights, no pickled code) and `export.json`
(how to rebuild the model, the vocab, the validation-time transforms, the output activation). The
user's labelling functions, callbacks and datasets are not needed to load it, so a learner trained
with a lambda `get_y` in a notebook loads in a fresh process. `load_learner` refuses pickles unless
told to trust them.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
import json
import os
import pickle
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._version import __version__
from .data.collate import default_device
from .data.load import DataLoader
from .distributed import rank_distrib
from .losses import loss_activation, loss_decodes
from .transform import Transform
from .vision.image import load_image

__all__ = ["export", "load_learner", "InferenceLearner", "FORMAT_VERSION"]

FORMAT, FORMAT_VERSION = "fastvision-export", 1


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


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
            return torch.tensor(v["__tensor__"], dtype=getattr(torch, v["dtype"]))
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
    module, _, name = d["type"].rpartition(".")
    if not module.startswith("fastvision."):
        raise ValueError(f"Refusing to build transform {d['type']!r}: only fastvision transforms are loaded.")
    cls = getattr(importlib.import_module(module), name, None)
    if not (isinstance(cls, type) and issubclass(cls, Transform)):
        raise ValueError(f"{d['type']!r} is not a fastvision Transform (the file is from another version?).")
    args = _decode(d["args"])
    params = inspect.signature(cls.__init__).parameters
    t = cls(**{k: v for k, v in args.items() if k in params})
    for k, v in args.items():
        if k not in params:
            setattr(t, k, v)
    return t


def _probe_loss(loss_func: Any) -> dict:
    """Describe the loss's activation and decoding as data, by trying them on a fixed input."""
    x = torch.linspace(-2, 2, 12).view(4, 3)
    act, dec = loss_activation(loss_func), loss_decodes(loss_func)
    a = act(x)
    kind = next(
        (k for k, f in (("softmax", lambda o: o.softmax(-1)), ("sigmoid", torch.sigmoid), ("none", lambda o: o))
         if torch.allclose(a, f(x))), None,
    )  # fmt: skip
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


def _unwrap(model: nn.Module) -> nn.Module:
    for attr in ("_orig_mod", "module"):  # torch.compile, DDP / DataParallel
        model = getattr(model, attr, model) if isinstance(getattr(model, attr, None), nn.Module) else model
    return model


def _model_desc(model: nn.Module, model_kwargs: dict | None) -> dict:
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
    fix = (
        "fastvision rebuilds the model from a description, never from pickled code: build it with "
        "vision_learner (a registry architecture, no custom_head), or define the model class in an importable "
        "module and pass export(learn, model_kwargs={...its constructor arguments...})."
    )
    if kwargs is None:
        raise ValueError(f"Cannot export a {path} model without its constructor arguments. {fix}")
    if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
        raise ValueError(f"Cannot export {path}: the class is not importable from another process. {fix}")
    try:
        json.dumps(kwargs)
    except TypeError as e:
        raise ValueError(f"model_kwargs must be JSON data (numbers, strings, lists, dicts): {e}.") from e
    return {"kind": "class", "class": path, "kwargs": kwargs}


def _image_mode(dls: Any, n_in: int | None) -> str:
    ds = getattr(dls.valid, "dataset", None)
    for t in (getattr(ds, "type_tfms", None) or [[]])[0]:
        if getattr(t, "mode", None) in ("RGB", "L"):
            return t.mode
    return "L" if n_in == 1 else "RGB"


def export(learn: Any, fname: str | Path = "export", model_kwargs: dict | None = None) -> Path:
    """Write `<fname>.safetensors` (fp32 weights) and `<fname>.json` (everything else); return the JSON path.

    Args:
        learn: the trained `Learner`.
        fname: relative paths go under `learn.path`; an extension (.pkl, .json, ...) is dropped.
        model_kwargs: constructor arguments, for a model that is not from `vision_learner` (its class
            must be importable, e.g. `mypkg.nets.MyNet`).
    """
    base = Path(fname)
    base = base if base.is_absolute() else Path(getattr(learn, "path", ".")) / base
    if base.suffix in (".pkl", ".json", ".safetensors", ".pth", ".pt"):
        base = base.with_suffix("")
    if rank_distrib() != 0:  # under DDP only rank 0 writes
        return base.with_name(base.name + ".json")
    base.parent.mkdir(parents=True, exist_ok=True)
    model = _unwrap(learn.model)
    desc_model = _model_desc(model, model_kwargs)
    sd = {k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu().contiguous().clone()
          for k, v in model.state_dict().items()}  # fmt: skip
    dls, vocab = learn.dls, getattr(learn.dls, "vocab", None)
    valid = dls.valid if len(getattr(dls, "loaders", [0, 0])) > 1 else dls.train
    desc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fastvision_version": __version__,
        "model": desc_model,
        "vocab": [str(v) for v in vocab] if vocab is not None else None,
        "n_inp": int(getattr(dls, "n_inp", 1) or 1),
        "image_mode": _image_mode(dls, desc_model.get("n_in", (desc_model.get("kwargs") or {}).get("n_in"))),
        "item_tfms": _tfm_desc(getattr(valid, "after_item", [])),
        "batch_tfms": _tfm_desc(getattr(valid, "after_batch", [])),
        "loss": _probe_loss(learn.loss_func),
    }
    from safetensors.torch import save_file

    wfile = base.with_name(base.name + ".safetensors")
    _atomic_write(wfile, lambda tmp: save_file(sd, tmp, metadata={"format": FORMAT}))
    desc["weights"] = {"file": wfile.name, "sha256": hashlib.sha256(wfile.read_bytes()).hexdigest()}
    jfile = base.with_name(base.name + ".json")
    _atomic_write(jfile, lambda tmp: Path(tmp).write_text(json.dumps(desc, indent=1)))
    return jfile


def _build_model(d: dict) -> nn.Module:
    if d.get("kind") == "vision":
        from .vision.learner import create_vision_model

        head = dict(d["head"])
        head["y_range"] = tuple(head["y_range"]) if head.get("y_range") is not None else None
        return create_vision_model(
            d["arch"], d["n_out"], pretrained=False, cut=d.get("cut"), n_in=d["n_in"], init=None,
            arch_kwargs=d.get("arch_kwargs"), **head,
        )  # fmt: skip
    if d.get("kind") == "class":
        module, _, name = d["class"].rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as e:
            raise ImportError(f"The exported model class {d['class']!r} cannot be imported here: {e}.") from e
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise ValueError(
                f"Refusing to call {d['class']!r}: the description names something not an nn.Module."
            )
        return cls(**d["kwargs"])
    raise ValueError(f"Unknown model description kind {d.get('kind')!r}.")


class _ItemsDataset(torch.utils.data.Dataset):
    """Raw inputs (paths, bytes, PIL images, arrays, tensors) decoded like the training images."""

    def __init__(self, items: Sequence[Any], mode: str):
        self.items, self.mode, self.split_idx = list(items), mode, 1

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple:
        return (load_image(self.items[i], self.mode),)


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
    """A model rebuilt from an export, with the validation preprocessing: `predict` and `get_preds` on items."""

    def __init__(self, model: nn.Module, description: dict, device: torch.device | str = "cpu"):
        self.description, self.device = description, torch.device(device)
        self.model = model.to(self.device).eval()
        self.vocab = description.get("vocab")
        self.item_tfms = [_tfm_from_desc(d) for d in description["item_tfms"]]
        self.batch_tfms = [_tfm_from_desc(d) for d in description["batch_tfms"]]
        self.loss = description["loss"]
        self.dls = _InferenceData(self)

    def test_dl(self, items: Sequence[Any], bs: int = 64, num_workers: int = 0, **kwargs: Any) -> DataLoader:
        """Return a loader on raw items (path, bytes, PIL image, array, tensor) with the validation transforms."""
        ds = _ItemsDataset(items, self.description["image_mode"])
        return DataLoader(
            ds, bs=bs, after_item=self.item_tfms, after_batch=self.batch_tfms, device=self.device, split_idx=1,
            num_workers=num_workers, n_inp=1, **kwargs,
        )  # fmt: skip

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
        dl = dl if dl is not None else self.test_dl(items, bs=bs)
        outs = []
        with torch.inference_mode():
            for b in dl:
                outs.append(self._activate(self.model(*b[:1]).float()).cpu())
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

    def __repr__(self) -> str:
        m = self.description["model"]
        return f"InferenceLearner({m.get('arch', m.get('class'))}, vocab={self.vocab}, device={self.device})"


def _refuse_pickle(path: Path, trust_pickle: bool) -> Any:
    if trust_pickle:
        warnings.warn(f"Loading {path} with pickle: this runs any code the file contains.", stacklevel=3)
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except RuntimeError:  # a plain pickle, not torch.save's format
            with open(path, "rb") as f:
                return pickle.load(f)
    raise ValueError(
        f"load_learner refuses {str(path)!r}: it is not a fastvision export (<name>.json + <name>.safetensors) "
        "but a pickle-based file, and unpickling can run arbitrary code. Re-export with fastvision's "
        "`learn.export()`, or pass trust_pickle=True only if you trust where the file comes from."
    )


def load_learner(
    fname: str | Path, cpu: bool = True, trust_pickle: bool = False, device: torch.device | str | None = None
) -> InferenceLearner:
    """Rebuild an exported learner for inference (no training code needed).

    Args:
        fname: the export's `.json`, its `.safetensors`, or the name without extension.
        cpu: load on the CPU (True); False uses `device` or the default device.
        trust_pickle: allow loading a pickled file (fastai-style `.pkl`): this runs its code.
        device: the device when `cpu=False`.
    """
    p = Path(fname)
    if p.suffix in (".json", ".safetensors"):
        jfile = p.with_suffix(".json")
    elif p.is_file():
        return _refuse_pickle(p, trust_pickle)
    else:
        jfile = next((c for c in (p.with_name(p.name + ".json"), p.with_suffix(".json")) if c.exists()), None)
        if jfile is None:
            raise FileNotFoundError(
                f"No export at {str(p)!r} (no {p.name}.json). Write one with learn.export()."
            )
    if not jfile.exists():
        raise FileNotFoundError(f"No export description {str(jfile)!r}. Write one with learn.export().")
    desc = json.loads(jfile.read_text())
    if desc.get("format") != FORMAT or desc.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{str(jfile)!r} is format {desc.get('format')!r} version {desc.get('format_version')}; this fastvision "
            f"({__version__}) reads {FORMAT!r} up to version {FORMAT_VERSION}. Upgrade fastvision."
        )
    wfile = jfile.with_name(desc["weights"]["file"])
    data = wfile.read_bytes()
    if hashlib.sha256(data).hexdigest() != desc["weights"]["sha256"]:
        raise ValueError(
            f"{str(wfile)!r} does not match {jfile.name} (checksum differs): re-export both files together."
        )
    from safetensors.torch import load

    model = _build_model(desc["model"])
    model.load_state_dict(load(data))
    dev = "cpu" if cpu else (device if device is not None else default_device())
    return InferenceLearner(model, desc, dev)
