"""`vision_learner`: a `Learner` around a (pretrained) torchvision, timm or fastvision body and a fastai head.

The model comes from `vision.arch.create_vision_model` (names, weights, body and head); this module adds the
normalisation the weights expect, freezing and the body/head parameter groups.
"""

from __future__ import annotations

import copy
import inspect
import warnings
from collections.abc import Callable
from typing import Any

from fastcore.meta import delegates
from torch import nn

from ..learner import Learner
from ..utils import signature_defaults, unexpected_kwargs
from .arch import create_vision_model
from .lighting import Normalize
from .models import (
    arch_meta,
)

__all__ = ["vision_learner", "cnn_learner"]


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


@delegates(create_vision_model)
@delegates(Learner, keep=True)
def vision_learner(
    dls: Any,
    arch: str | Callable[..., nn.Module],
    normalize: bool = True,
    n_out: int | None = None,
    pretrained: bool = True,
    weights: Any = None,
    *,
    splitter: Callable | None = None,
    **kwargs: Any,
) -> Learner:
    """Build a `Learner` for transfer learning: body of `arch` + new head, frozen when pretrained.

    `arch` is a model function or a torchvision, fastvision or timm name ('resnet34', 'resnet10t'; a name
    both have is torchvision's unless written 'timm/<name>'). `n_out` defaults to `dls.c`. With
    `normalize` and pretrained weights, `Normalize` with the architecture's stats (timm's from its
    pretrained config) is added to every loader that has none: `learn.dls` is then a copy of `dls` sharing
    its datasets, and the `dls` you passed is left unchanged. The parameter groups come from the registry
    (3 for resnets: `body[:6]`, `body[6:]`, head; body / head for timm), unless `splitter` is given;
    `learn.freeze()` runs when pretrained. Other keywords go to `Learner` (loss_func, opt_func, lr, cbs,
    metrics, wd, ...) or to `create_vision_model` (cut, n_in, init, custom_head, arch_kwargs and the head's
    arguments of `create_head`); the signature lists them with their defaults. Data with one class and a
    cross-entropy loss is refused (`ValueError`): that loss is 0 whatever the model predicts.
    """
    learner_keys = set(signature_defaults(Learner)) - {"splitter"}
    model_keys = set(inspect.signature(create_vision_model).parameters) - {
        "arch",
        "n_out",
        "pretrained",
        "weights",
    }
    unknown = set(kwargs) - learner_keys - model_keys
    if unknown:
        raise unexpected_kwargs("vision_learner", unknown, inspect.signature(vision_learner).parameters)
    learner_kw = {k: v for k, v in kwargs.items() if k in learner_keys}
    model_kw = {k: v for k, v in kwargs.items() if k in model_keys}
    if n_out is None:
        n_out = getattr(dls, "c", None)
    if n_out is None:
        raise ValueError(
            "vision_learner could not infer n_out from the data (`dls.c` is None); pass n_out=<number of outputs>."
        )
    name, meta = arch_meta(arch)
    if normalize and (pretrained or weights is not None):
        dls = _add_norm(
            dls, meta.norm_stats, model_kw.get("n_in", signature_defaults(create_vision_model)["n_in"])
        )
    model = create_vision_model(arch, n_out, pretrained=pretrained, weights=weights, **model_kw)
    learn = Learner(dls, model, splitter=splitter or meta.split, **learner_kw)
    _refuse_one_class(learn, n_out)
    if pretrained and meta.source != "fastvision":
        learn.freeze()
    learn.arch, learn.normalize, learn.n_out, learn.pretrained = name, normalize, n_out, pretrained
    return learn


def _refuse_one_class(learn: Learner, n_out: int) -> None:
    """Raise when a cross-entropy classifier would have one class: its loss is 0 whatever the weights."""
    from ..losses import CrossEntropyLossFlat, LabelSmoothingCrossEntropy, LabelSmoothingCrossEntropyFlat

    ce = (
        CrossEntropyLossFlat,
        LabelSmoothingCrossEntropyFlat,
        LabelSmoothingCrossEntropy,
        nn.CrossEntropyLoss,
    )
    if n_out == 1 and isinstance(learn.loss_func, ce):
        vocab = list(getattr(learn.dls, "vocab", None) or [])
        which = f" ({vocab[0]!r})" if len(vocab) == 1 else ""
        raise ValueError(
            f"vision_learner: the data has one class{which}, and cross-entropy over one class is 0 whatever the "
            "model predicts, so nothing would be learnt. A classifier needs two classes or more: check the "
            "labelling function (get_y) gives every class, e.g. dls.train_ds.target_labels()[:10]. For a single "
            "yes/no output use a single-logit loss such as BCEWithLogitsLossFlat()."
        )


@delegates(vision_learner)
def cnn_learner(dls: Any, arch: str | Callable[..., nn.Module], *args: Any, **kwargs: Any) -> Learner:
    """Deprecated name of `vision_learner`."""
    warnings.warn(
        "cnn_learner has been renamed vision_learner; use vision_learner.", DeprecationWarning, stacklevel=2
    )
    return vision_learner(dls, arch, *args, **kwargs)
