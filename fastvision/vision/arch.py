"""Architectures to models: a torchvision, timm or fastvision body by name or function, its pretrained weights,
and fastai's head on top (`create_vision_model`, which `vision_learner` and `load_learner` use).

Pretrained weights come from torchvision's weight enums (cached in torch hub's checkpoint folder), timm's
pretrained configs (cached by Hugging Face Hub), or a local file (`weights='resnet18.pth'` or
`.safetensors`). Without a connection the download fails within seconds with the exact file to fetch
and where to put it, instead of hanging.
"""

from __future__ import annotations

import inspect
import os
import socket
import threading
import urllib.request
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.parse import urlparse

import torch
import torchvision.models as tvm
from fastcore.meta import delegates
from torch import nn

from ..checkpoint import load_state_dict_head
from ..utils import signature_defaults, unexpected_kwargs
from .models import (
    TIMM_PREFIX,
    TimmBody,
    ViTBody,
    apply_init,
    arch_meta,
    create_body,
    create_head,
    import_timm,
    model_meta,
    num_features_model,
)

__all__ = ["create_vision_model", "torchvision_checkpoint_path", "load_weights_file"]


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


def _fetch_timm_weights(cfg: Any, arch: str) -> Path:
    """Return the Hugging Face cache file of timm's pretrained weights `cfg`, downloading it; fail fast offline."""
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

    files = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
    for f in files:
        cached = try_to_load_from_cache(cfg.hf_hub_id, f)
        if isinstance(cached, str):
            return Path(cached)
    url = f"{constants.ENDPOINT}/{cfg.hf_hub_id}/resolve/main/{files[0]}"
    how = (
        f"Download {url} on a machine with internet access and pass weights='/path/to/{files[0]}' (or copy "
        f"its Hugging Face cache: `hf download {cfg.hf_hub_id}`), or pass pretrained=False to start from "
        "random weights."
    )
    if not _can_connect(url):
        raise ConnectionError(
            f"Cannot download the pretrained weights of {arch} ({cfg.hf_hub_id}): no connection to "
            f"{urlparse(url).hostname} within {CONNECT_TIMEOUT:g} s. {how}"
        )
    errors = []
    for f in files:
        try:
            return Path(hf_hub_download(cfg.hf_hub_id, f))
        except Exception as e:  # huggingface_hub's errors have no common base but Exception
            errors.append(f"{f}: {e}")
    raise ConnectionError(
        f"Downloading the pretrained weights of {arch} ({cfg.hf_hub_id}) failed: {'; '.join(errors)}. {how}"
    )


def _load_timm_state(body: TimmBody, sd: dict[str, torch.Tensor], path: Any, n_in: int) -> None:
    """Load a full timm model's state dict into `body`: drop the classifier, adapt the first conv to `n_in`."""
    timm = import_timm()
    cfg: Any = body.model.pretrained_cfg  # timm's dict
    own = body.model.state_dict()
    classifiers = cfg.get("classifier") or ()
    classifiers = (classifiers,) if isinstance(classifiers, str) else tuple(classifiers)
    sd = {k: v for k, v in sd.items() if k in own or not k.startswith(tuple(c + "." for c in classifiers))}
    first = cfg.get("first_conv") or ()
    for conv in (first,) if isinstance(first, str) else first:
        key = f"{conv}.weight"
        if key in sd and key in own and sd[key].shape[1] != own[key].shape[1]:
            sd[key] = timm.models.adapt_input_conv(n_in, sd[key])
    _load_into_raw(body.model, sd, path)


def _build_timm(name: str, meta: Any, pretrained: bool, weights: Any, n_in: int, kw: dict) -> tuple:
    """Instantiate a timm body; return `(body, weights_loaded, state_dict_of_a_fastvision_model)`."""

    def plain() -> TimmBody:
        return meta.builder(name, n_in=n_in, pretrained=False, **kw)

    if _is_file(weights):
        sd = load_weights_file(weights)
        if all(k.startswith(("0.", "1.")) for k in sd):
            return plain(), True, sd  # a fastvision Sequential(body, head) checkpoint
        body = plain()
        _load_timm_state(body, sd, weights, n_in)
        return body, True, None
    if not pretrained and weights is None:
        return plain(), False, None
    if weights is not None:
        raise ValueError(
            f"weights={weights!r} for the timm architecture {name!r}: pass a local weights file, or pick timm's "
            f"pretrained weights with a tag in the name (e.g. '{TIMM_PREFIX}resnet10t.c3_in1k')."
        )
    cfg = import_timm().models.get_pretrained_cfg(name.removeprefix(TIMM_PREFIX))
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        warnings.warn(f"timm has no pretrained weights for {name}: training from scratch.", stacklevel=4)
        return plain(), False, None
    if cfg.hf_hub_id:
        path = _fetch_timm_weights(cfg, name)
        return (
            meta.builder(name, n_in=n_in, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **kw),
            True,
            None,
        )
    dst = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(cfg.url).path)
    if not dst.exists() and not _can_connect(cfg.url):
        raise ConnectionError(
            f"Cannot download the pretrained weights of {name}: no connection to {urlparse(cfg.url).hostname} "
            f"within {CONNECT_TIMEOUT:g} s. Download {cfg.url} on a machine with internet access and place it "
            f"at {dst}, or pass pretrained=False to start from random weights."
        )
    return meta.builder(name, n_in=n_in, pretrained=True, **kw), True, None  # timm downloads it to `dst`


def _build_arch(
    name: str, meta: Any, pretrained: bool, weights: Any, n_in: int, n_out: int, kw: dict
) -> tuple:
    """Instantiate the network; return `(model, weights_loaded, state_dict_of_a_fastvision_model)`."""
    if meta.source == "timm":
        return _build_timm(name, meta, pretrained, weights, n_in, kw)

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


@delegates(create_head)
def create_vision_model(
    arch: str | Callable[..., nn.Module],
    n_out: int,
    pretrained: bool = True,
    weights: Any = None,
    cut: int | Callable | None = None,
    n_in: int = 3,
    init: Callable | None = nn.init.kaiming_normal_,
    custom_head: nn.Module | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> nn.Sequential:
    """Build `Sequential(body, head)` from an architecture (function or registry, torchvision or timm name).

    Args:
        arch: a torchvision model function (`resnet34`), its name ('resnet34'), a timm name ('resnet10t',
            'timm/convnext_atto'; needs `pip install fastvision[timm]`), 'tinyvgg', 'resnet_small', or any
            function returning an `nn.Module`.
        n_out: number of outputs.
        pretrained: load pretrained weights (True).
        weights: a torchvision weights enum or its name ('ResNet34_Weights.IMAGENET1K_V1'), 'DEFAULT', or
            a local `.pth`/`.safetensors` file (a full network's or a fastvision model's state dict).
        cut: where to cut the network, see `create_body`.
        n_in: input channels, see `create_body` (3).
        init: initialiser of the head (kaiming normal).
        custom_head: replaces the head.
        kwargs: the head's arguments, see `create_head`.
        arch_kwargs: extra arguments of the architecture function (e.g. `{'image_size': 64}` for ViT,
            `{'drop_path_rate': 0.1}` for timm).
    """
    head_kw = signature_defaults(create_head)
    if set(kwargs) - set(head_kw):
        raise unexpected_kwargs(
            "create_vision_model",
            set(kwargs) - set(head_kw),
            inspect.signature(create_vision_model).parameters,
        )
    head_kw.update(kwargs)
    kw = dict(arch_kwargs or {})
    name, meta = arch_meta(arch)
    model, loaded, full_sd = _build_arch(name, meta, pretrained, weights, n_in, n_out, kw)
    body: nn.Module
    head: nn.Module
    if isinstance(model, TimmBody) and cut is None:
        body = model  # timm built it without classifier (and n_in channels)
    else:
        body = create_body(model, n_in=n_in, pretrained=loaded, cut=meta.cut if cut is None else cut)
    if isinstance(body, ViTBody) or (isinstance(body, TimmBody) and body.pooled):
        head_kw["pool"] = False  # the body returns pooled features (the class token), N x hidden_dim
    if custom_head is None:
        head = create_head(num_features_model(body), n_out, **head_kw)
        apply_init(head, init)
    else:
        head = custom_head
    vm = nn.Sequential(body, head)
    if full_sd is not None:
        load_state_dict_head(vm, full_sd)
    by_name = (
        meta.source in ("torchvision", "fastvision", "timm") or name in model_meta
    )  # load_learner rebuilds it
    exportable = by_name and custom_head is None and (cut is None or isinstance(cut, int))
    for k in ("lin_ftrs", "y_range"):
        head_kw[k] = list(head_kw[k]) if head_kw[k] is not None else None
    head_kw["ps"] = head_kw["ps"] if isinstance(head_kw["ps"], (int, float)) else list(head_kw["ps"])
    # nn.Module takes any attribute; torch's `__setattr__` stub allows only tensors and modules
    vm.arch_spec = {  # type: ignore[assignment]
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
