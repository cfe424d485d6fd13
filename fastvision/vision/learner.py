"""`vision_learner`: a `Learner` around a (pretrained) torchvision or fastvision body and a fastai head.

Pretrained weights come from torchvision's weight enums, cached in torch hub's checkpoint folder, or
from a local file (`weights='resnet18.pth'` or `.safetensors`). Without a connection the download
fails within seconds with the exact path to place the file at, instead of hanging.
"""

from __future__ import annotations

import copy
import inspect
import os
import socket
import threading
import urllib.request
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.parse import urlparse

import torch
import torchvision.models as tvm
from torch import nn

from ..learner import Learner
from ..optimizer import Adam
from .lighting import Normalize
from .models import ViTBody, apply_init, arch_meta, create_body, create_head, model_meta, num_features_model

__all__ = [
    "vision_learner",
    "cnn_learner",
    "create_vision_model",
    "torchvision_checkpoint_path",
    "load_weights_file",
    "load_state_dict_head",
]

CONNECT_TIMEOUT = 3.0  # seconds to reach the weights server before giving up


def torchvision_checkpoint_path(weights: tvm.WeightsEnum) -> Path:
    """Return where torch hub caches (and looks for) the file of a torchvision weights enum."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def _can_connect(url: str, timeout: float = CONNECT_TIMEOUT) -> bool:
    """Whether a TCP connection to `url`'s host (or the HTTPS proxy) opens within `timeout` seconds."""
    proxy = urllib.request.getproxies().get(urlparse(url).scheme)
    target = urlparse(proxy if proxy else url)
    host, port = target.hostname, target.port or (443 if target.scheme == "https" else 80)
    ok: list[bool] = []

    def attempt() -> None:  # in a thread: name resolution has no timeout of its own
        try:
            with socket.create_connection((host, port), timeout=timeout):
                ok.append(True)
        except OSError:
            ok.append(False)

    t = threading.Thread(target=attempt, daemon=True)
    t.start()
    t.join(timeout)
    return bool(ok and ok[0])


def _download(url: str, dst: Path) -> None:
    """Download `url` to `dst` (torch hub's downloader), with a 30 s socket timeout."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(dst), progress=True)
    finally:
        socket.setdefaulttimeout(old)


def _fetch_torchvision_weights(weights: tvm.WeightsEnum, arch: str) -> Path:
    """Make sure the weights file is in torch hub's cache, downloading it; fail fast when offline."""
    dst = torchvision_checkpoint_path(weights)
    if dst.exists():
        return dst
    host = urlparse(weights.url).hostname
    how = (
        f"Download {weights.url} on a machine with internet access and place it at {dst} "
        f"(or pass weights='/path/to/{dst.name}'), or pass pretrained=False to start from random weights."
    )
    if not _can_connect(weights.url):
        raise ConnectionError(
            f"Cannot download the pretrained weights of {arch} ({weights}): no connection to {host} within "
            f"{CONNECT_TIMEOUT:g} s. {how}"
        )
    try:
        _download(weights.url, dst)
    except (URLError, OSError) as e:
        raise ConnectionError(
            f"Downloading the pretrained weights of {arch} ({weights}) failed: {e}. {how}"
        ) from e
    return dst


def load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from `.safetensors` or a torch file (`weights_only=True`, so no pickled code)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No weights file {str(path)!r}. Pass an existing .pth/.safetensors file.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(
            f"{str(path)!r} is not a weights-only torch file (it needs pickled code to load: {e}). "
            "Save a `model.state_dict()` with torch.save, or use safetensors."
        ) from e
    if isinstance(sd, dict) and isinstance(sd.get("model"), dict):
        sd = sd["model"]  # a `learn.save` checkpoint with optimizer state
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ValueError(f"{str(path)!r} holds a {type(sd).__name__}, expected a state dict.")
    return sd


def load_state_dict_head(
    model: nn.Module, state_dict: dict[str, torch.Tensor], head_prefix: str = "1."
) -> list[str]:
    """Load `state_dict` into `model`, keeping the model's own head when the head's shapes differ.

    For `Sequential(body, head)` models (`head_prefix='1.'`) whose checkpoint was trained with another
    number of classes: the body must match exactly; head weights load when every shape matches, else
    the whole head keeps its fresh initialisation (with a warning). Returns the keys not loaded.
    """
    own = model.state_dict()
    body_missing = [k for k in own if k not in state_dict and not k.startswith(head_prefix)]
    body_extra = [k for k in state_dict if k not in own and not k.startswith(head_prefix)]
    body_bad = [
        f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in state_dict.items()
        if k in own and not k.startswith(head_prefix) and v.shape != own[k].shape
    ]
    if body_missing or body_extra or body_bad:
        raise ValueError(
            "The checkpoint's body does not match the model: "
            f"missing {body_missing[:5]}, unexpected {body_extra[:5]}, shape mismatches {body_bad[:5]}. "
            "Only the head (keys starting with {head_prefix!r}) may differ; check the architecture and n_in."
        )
    head_keys = {k for k in own if k.startswith(head_prefix)}
    head_ok = all(k in state_dict and state_dict[k].shape == own[k].shape for k in head_keys) and not any(
        k.startswith(head_prefix) and k not in own for k in state_dict
    )
    if head_ok:
        model.load_state_dict(state_dict)
        return []
    skipped = sorted(k for k in state_dict if k.startswith(head_prefix))
    model.load_state_dict(
        {k: v for k, v in state_dict.items() if not k.startswith(head_prefix)}, strict=False
    )
    shapes = {
        k: tuple(state_dict[k].shape) for k in skipped if k in own and state_dict[k].shape != own[k].shape
    }
    warnings.warn(
        f"The checkpoint's head does not fit this model (e.g. another number of classes: {shapes or skipped}); "
        "the head keeps its fresh initialisation and the body weights are loaded.",
        stacklevel=2,
    )
    return skipped


def _load_into_raw(model: nn.Module, sd: dict[str, torch.Tensor], path: Any) -> None:
    """Load a full classification network's state dict, skipping classifier weights of another shape."""
    own = model.state_dict()
    mismatched = [k for k, v in sd.items() if k in own and v.shape != own[k].shape]
    res = model.load_state_dict({k: v for k, v in sd.items() if k not in mismatched}, strict=False)
    if res.missing_keys or res.unexpected_keys:
        missing = [k for k in res.missing_keys if k not in mismatched]
        if missing or res.unexpected_keys:
            raise ValueError(
                f"Weights file {str(path)!r} does not fit {type(model).__name__}: missing keys {missing[:5]}, "
                f"unexpected keys {res.unexpected_keys[:5]}. Pass the file saved from the same architecture."
            )
    if mismatched:
        warnings.warn(f"Skipped weights of another shape in {str(path)!r}: {mismatched[:6]}.", stacklevel=3)


def _is_file(weights: Any) -> bool:
    return isinstance(weights, (str, os.PathLike)) and (
        Path(weights).suffix in (".pth", ".pt", ".bin", ".safetensors") or Path(weights).is_file()
    )


def _build_arch(
    name: str, meta: Any, pretrained: bool, weights: Any, n_in: int, n_out: int, kw: dict
) -> tuple:
    """Instantiate the network; return `(model, weights_loaded, state_dict_of_a_fastvision_model)`."""

    def plain() -> nn.Module:
        if meta.source == "fastvision":
            return meta.builder(n_in=n_in, n_out=n_out, **kw)
        return meta.builder(weights=None, **kw) if meta.source == "torchvision" else meta.builder(**kw)

    if _is_file(weights):
        sd, model = load_weights_file(weights), plain()
        if all(k.startswith(("0.", "1.")) for k in sd):
            return model, True, sd  # a fastvision Sequential(body, head) checkpoint
        _load_into_raw(model, sd, weights)
        return model, True, None
    if not pretrained and weights is None:
        return plain(), False, None
    if meta.source == "fastvision":
        warnings.warn(
            f"{name} has no pretrained weights: training from scratch (pass pretrained=False).", stacklevel=3
        )
        return plain(), False, None
    if not pretrained:
        warnings.warn("weights= given with pretrained=False: the weights are loaded anyway.", stacklevel=3)
    if meta.source == "torchvision":
        enum = tvm.get_model_weights(meta.builder).verify("DEFAULT" if weights is None else weights)
        _fetch_torchvision_weights(enum, name)
        return meta.builder(weights=enum, **kw), True, None
    params = inspect.signature(meta.builder).parameters
    if "weights" in params:
        return meta.builder(weights="DEFAULT" if weights is None else weights, **kw), True, None
    if "pretrained" in params:
        return meta.builder(pretrained=True, **kw), True, None
    warnings.warn(
        f"Cannot ask {name} for pretrained weights; pass weights='<file>' to load some.", stacklevel=3
    )
    return meta.builder(**kw), False, None


def create_vision_model(
    arch: str | Callable[..., nn.Module],
    n_out: int,
    pretrained: bool = True,
    weights: Any = None,
    cut: int | Callable | None = None,
    n_in: int = 3,
    init: Callable | None = nn.init.kaiming_normal_,
    custom_head: nn.Module | None = None,
    concat_pool: bool = True,
    pool: bool = True,
    lin_ftrs: Sequence[int] | None = None,
    ps: float | Sequence[float] = 0.5,
    first_bn: bool = True,
    bn_final: bool = False,
    lin_first: bool = False,
    y_range: tuple[float, float] | None = None,
    arch_kwargs: dict[str, Any] | None = None,
) -> nn.Sequential:
    """Build `Sequential(body, head)` from an architecture (function or registry name).

    Args:
        arch: a torchvision model function (`resnet34`), its name ('resnet34'), 'tinyvgg',
            'resnet_small', or any function returning an `nn.Module`.
        n_out: number of outputs. pretrained: load pretrained weights (True).
        weights: a torchvision weights enum or its name ('ResNet34_Weights.IMAGENET1K_V1'), 'DEFAULT', or
            a local `.pth`/`.safetensors` file (a full network's or a fastvision model's state dict).
        cut, n_in: see `create_body` (3 input channels). init: initialiser of the head (kaiming normal).
        custom_head: replaces the head. Other args: see `create_head`.
        arch_kwargs: extra arguments of the architecture function (e.g. `{'image_size': 64}` for ViT).
    """
    kw = dict(arch_kwargs or {})
    name, meta = arch_meta(arch)
    model, loaded, full_sd = _build_arch(name, meta, pretrained, weights, n_in, n_out, kw)
    body = create_body(model, n_in=n_in, pretrained=loaded, cut=meta.cut if cut is None else cut)
    head_kw = dict(lin_ftrs=lin_ftrs, ps=ps, pool=pool, concat_pool=concat_pool, first_bn=first_bn)
    head_kw.update(bn_final=bn_final, lin_first=lin_first, y_range=y_range)
    if isinstance(body, ViTBody):
        head_kw["pool"] = False  # the body returns the class token, N x hidden_dim
    if custom_head is None:
        head = create_head(num_features_model(body), n_out, **head_kw)
        apply_init(head, init)
    else:
        head = custom_head
    vm = nn.Sequential(body, head)
    if full_sd is not None:
        load_state_dict_head(vm, full_sd)
    by_name = (
        meta.source in ("torchvision", "fastvision") or name in model_meta
    )  # load_learner can rebuild it
    exportable = by_name and custom_head is None and (cut is None or isinstance(cut, int))
    head_kw["lin_ftrs"] = list(lin_ftrs) if lin_ftrs is not None else None
    head_kw["ps"] = ps if isinstance(ps, (int, float)) else list(ps)
    head_kw["y_range"] = list(y_range) if y_range is not None else None
    vm.arch_spec = {
        "kind": "vision",
        "arch": name,
        "source": meta.source,
        "n_out": n_out,
        "n_in": n_in,
        "cut": cut,
        "head": head_kw,
        "arch_kwargs": kw,
        "exportable": exportable,
    }
    return vm


def _has_normalize(dl: Any) -> bool:
    return any(isinstance(t, Normalize) for t in getattr(dl, "after_batch", []))


def _add_norm(dls: Any, stats: tuple | None, n_in: int) -> Any:
    """Return `dls` with `Normalize.from_stats(*stats)` on every loader lacking one (a copy; `dls` is untouched)."""
    if stats is None or all(_has_normalize(dl) for dl in dls.loaders):
        return dls
    if n_in != len(stats[0]):
        warnings.warn(
            f"Not normalising with the pretrained stats: they have {len(stats[0])} channels and the model "
            f"takes n_in={n_in}. Add your own `Normalize` to batch_tfms.",
            stacklevel=3,
        )
        return dls
    norm = Normalize.from_stats(*stats)
    loaders = []
    for dl in dls.loaders:
        if _has_normalize(dl):
            loaders.append(dl)
            continue
        try:
            loaders.append(dl.new(after_batch=[*dl.after_batch.tfms, norm]))
        except TypeError:
            warnings.warn(
                f"Could not add Normalize to a {type(dl).__name__} (a wrapped torch loader); normalise its "
                f"inputs yourself with mean={stats[0]}, std={stats[1]}.",
                stacklevel=3,
            )
            loaders.append(dl)
    new = copy.copy(dls)
    new.loaders = loaders
    return new


def vision_learner(
    dls: Any,
    arch: str | Callable[..., nn.Module],
    normalize: bool = True,
    n_out: int | None = None,
    pretrained: bool = True,
    weights: Any = None,
    loss_func: Callable | None = None,
    opt_func: Callable = Adam,
    lr: float = 1e-3,
    splitter: Callable | None = None,
    cbs: Any = None,
    metrics: Any = None,
    path: str | Path | None = None,
    model_dir: str | Path = "models",
    wd: float | None = None,
    wd_bn_bias: bool = False,
    train_bn: bool = True,
    moms: tuple[float, float, float] = (0.95, 0.85, 0.95),
    cut: int | Callable | None = None,
    init: Callable | None = nn.init.kaiming_normal_,
    custom_head: nn.Module | None = None,
    concat_pool: bool = True,
    pool: bool = True,
    lin_ftrs: Sequence[int] | None = None,
    ps: float | Sequence[float] = 0.5,
    first_bn: bool = True,
    bn_final: bool = False,
    lin_first: bool = False,
    y_range: tuple[float, float] | None = None,
    n_in: int = 3,
    arch_kwargs: dict[str, Any] | None = None,
) -> Learner:
    """Build a `Learner` for transfer learning: body of `arch` + new head, frozen when pretrained.

    `n_out` defaults to `dls.c`. With `normalize` and pretrained weights, `Normalize` with the
    architecture's stats is added to every loader that has none: `learn.dls` is then a copy of `dls`
    sharing its datasets, and the `dls` you passed is left unchanged. The parameter groups come from the
    registry (3 for resnets: `body[:6]`, `body[6:]`, head); `learn.freeze()` runs when pretrained.
    Model arguments: see `create_vision_model`; Learner arguments: see `Learner`.
    """
    if n_out is None:
        n_out = getattr(dls, "c", None)
    if n_out is None:
        raise ValueError(
            "vision_learner could not infer n_out from the data (`dls.c` is None); pass n_out=<number of outputs>."
        )
    name, meta = arch_meta(arch)
    if normalize and (pretrained or weights is not None):
        dls = _add_norm(dls, meta.norm_stats, n_in)
    model = create_vision_model(
        arch, n_out, pretrained=pretrained, weights=weights, cut=cut, n_in=n_in, init=init,
        custom_head=custom_head, concat_pool=concat_pool, pool=pool, lin_ftrs=lin_ftrs, ps=ps, first_bn=first_bn,
        bn_final=bn_final, lin_first=lin_first, y_range=y_range, arch_kwargs=arch_kwargs,
    )  # fmt: skip
    learn = Learner(
        dls, model, loss_func=loss_func, opt_func=opt_func, lr=lr, splitter=splitter or meta.split, cbs=cbs,
        metrics=metrics, path=path, model_dir=model_dir, wd=wd, wd_bn_bias=wd_bn_bias, train_bn=train_bn,
        moms=moms,
    )  # fmt: skip
    if pretrained and meta.source != "fastvision":
        learn.freeze()
    learn.arch, learn.normalize, learn.n_out, learn.pretrained = name, normalize, n_out, pretrained
    return learn


def cnn_learner(*args: Any, **kwargs: Any) -> Learner:
    """Deprecated name of `vision_learner`."""
    warnings.warn(
        "cnn_learner has been renamed vision_learner; use vision_learner.", DeprecationWarning, stacklevel=2
    )
    return vision_learner(*args, **kwargs)
