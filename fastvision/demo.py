"""`fastvision demo`: train a small ResNet on the real Fashion-MNIST within a time budget, then interpret
and export it. This is the main job behind `make demo`.

The recipe is chosen on a validation split held out from the 60,000 training images; the 10,000 test
images are read once, after training, for the reported test accuracy.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F

from .callback.core import Callback, RunMode
from .callback.hard import HardExampleSampling
from .callback.schedule import TimeBudget
from .memory import format_bytes, peak_rss
from .optimizer import Adam, ranger

__all__ = ["run_demo", "fashion_mnist_dls", "FASHION_MNIST_STATS", "FlipInputs", "ShiftInputs", "WeightEMA"]

# The range of the demo's peak lr (10 x lr_find's valley, clamped): 8e-3 to 1.2e-2 scored the same on the
# validation split at 5 epochs of one-cycle AdamW, both above 5e-3 (docs/benchmarks.md); ranger was measured
# at the floor, 8e-3 (lr_find's valley puts every run there).
LR_RANGE = (8e-3, 1.2e-2)

# Training images whose 3 x 3 patches set the whitened stem (7.8 million patches: the components are stable).
WHITEN_SAMPLE = 10_000


def _normalised(x: torch.Tensor) -> torch.Tensor:
    """uint8 Fashion-MNIST images -> float, normalised as the demo's pipeline does."""
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in FASHION_MNIST_STATS)
    return (x.float() / 255 - mean) / std


# The demo's optimizers: name -> (opt_func, fit policy, its default pct_start).
OPTIMIZERS: dict[str, tuple[Callable[..., torch.optim.Optimizer], str, float]] = {
    "adam": (Adam, "one_cycle", 0.25),
    "ranger": (partial(ranger, mom=0.9, eps=1e-5), "flat_cos", 0.72),
}

# The demo's training augmentations: name -> (max_rotate, max_zoom) of a flipping `aug_transforms`, or None.
AUGS: dict[str, tuple[float, float] | None] = {"affine": (5.0, 1.15), "flip": (0.0, 1.0), "none": None}

# Per-channel mean/std of the Fashion-MNIST training images in [0, 1].
FASHION_MNIST_STATS = ([0.2860], [0.3530])


def fashion_mnist_dls(
    bs: int = 256,
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 42,
    device: torch.device | str | None = None,
    aug: bool | str = True,
    n_valid: int = 0,
):
    """Return DataLoaders of Fashion-MNIST tensors with batched augmentation.

    Args:
        bs: batch size (256).
        n_train: use the first `n_train` training images (None: all 60,000).
        n_test: use the first `n_test` test images (None: all 10,000).
        seed: seed of the loaders' shuffling and of the held-out draw (42).
        device: where batches go (None: the default device).
        aug: the training batches' augmentation: True or 'affine' (flip, rotate 5 degrees and zoom up to
            1.15, in one resample), 'flip' (a horizontal flip only), False or 'none' (nothing).
        n_valid: 0 (default): the test set is the validation set, `dls.valid`. Otherwise hold out
            `n_valid` training images (a random draw fixed by `seed`) as `dls.valid`, train on the rest
            and put the test set in a third loader, `dls[2]`.
    """
    from .data.external import TensorImageDataset, fashion_mnist_datasets
    from .data.load import DataLoaders
    from .vision.augment import aug_transforms
    from .vision.lighting import IntToFloatTensor, Normalize

    train, test = fashion_mnist_datasets(n_train, n_test)
    if not 0 <= n_valid < len(train):
        raise ValueError(
            f"n_valid={n_valid}, but there are {len(train):,} training images; pass 0 (test set as "
            f"validation) or a number of training images to hold out below {len(train):,}."
        )
    dsets = [train, test]
    if n_valid:
        perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
        held, rest = perm[:n_valid].sort().values, perm[n_valid:].sort().values
        dsets = [
            TensorImageDataset(train.x[rest], train.y[rest], train.vocab),
            TensorImageDataset(train.x[held], train.y[held], train.vocab),
            test,
        ]
    kind = ("affine" if aug else "none") if isinstance(aug, bool) else aug
    if kind not in AUGS:
        raise ValueError(f"aug={aug!r}: pass 'affine' (the default), 'flip' or 'none'.")
    geometry = AUGS[kind]
    augs = (
        []
        if geometry is None
        else aug_transforms(
            max_rotate=geometry[0], max_zoom=geometry[1], max_warp=0.0, max_lighting=0.0, pad_mode="zeros"
        )
    )
    tfms = [IntToFloatTensor(), *augs, Normalize.from_stats(*FASHION_MNIST_STATS)]
    return DataLoaders.from_dsets(*dsets, bs=bs, after_batch=tfms, num_workers=0, seed=seed, device=device)


class FlipInputs(Callback):
    """Mirror every input batch left to right (the second pass of flip test-time augmentation)."""

    def before_batch(self) -> None:
        """Replace the inputs by their mirror image."""
        self.learn.xb = tuple(x.flip(-1) for x in self.learn.xb)


class ShiftInputs(Callback):
    """Shift every input batch `dx` pixels right and `dy` down (negative: left, up), optionally mirrored first.

    The pixels the shift uncovers take the value `fill`; the ones pushed past the edge are dropped. One
    view of the demo's test-time augmentation (`run_demo(tta=True)`).

    Args:
        dx, dy: the shift in pixels, each smaller than the images' width and height.
        fill: the uncovered pixels' value, in the units of the model's inputs (after normalisation): the
            background's, e.g. the value of a black pixel (0.0).
        flip: mirror the batch left to right before shifting it (False).
    """

    def __init__(self, dx: int = 0, dy: int = 0, fill: float = 0.0, flip: bool = False):
        self.dx, self.dy, self.fill, self.flip = int(dx), int(dy), float(fill), flip

    def before_batch(self) -> None:
        """Replace the inputs by their shifted (and mirrored) copies."""
        self.learn.xb = tuple(self._shift(x.flip(-1) if self.flip else x) for x in self.learn.xb)

    def _shift(self, x: torch.Tensor) -> torch.Tensor:
        (h, w), dx, dy = x.shape[-2:], self.dx, self.dy
        if abs(dx) >= w or abs(dy) >= h:
            raise ValueError(
                f"ShiftInputs(dx={dx}, dy={dy}) on {h} x {w} images: shift by less than their size."
            )
        out = torch.full_like(x, self.fill)  # keeps x's memory format
        out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = x[
            ..., max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)
        ]
        return out


class WeightEMA(Callback):
    """Keep an exponential moving average of the weights (and BatchNorm statistics) during a fit.

    The average is what validation sees during the fit, and what the model holds after it (`swap()` puts
    the last training weights back, and swaps again). The decay warms up as `min(decay, (1 + n) / (10 + n))`
    after `n` optimiser steps.

    Args:
        decay: weight of the old average at each step (0.998).
    """

    order = 60  # after the optimiser step, before recorders read validation results

    def __init__(self, decay: float = 0.998):
        self.decay = decay

    def _tensors(self) -> list[torch.Tensor]:
        sd = self.net.state_dict(keep_vars=True)
        return [t.data for t in sd.values() if t.is_floating_point()]

    def before_fit(self) -> None:
        """Start the average at the current weights."""
        self.net = self.learn.model  # kept: `swap()` also works after the fit
        self.avg = [t.clone() for t in self._tensors()]
        self.n = 0

    def after_step(self) -> None:
        """Move the average towards the weights just updated."""
        self.n += 1
        d = min(self.decay, (1 + self.n) / (10 + self.n))
        torch._foreach_lerp_(self.avg, self._tensors(), 1 - d)

    def swap(self) -> None:
        """Exchange the model's weights and the ones kept here (the average during the fit)."""
        for a, t in zip(self.avg, self._tensors()):
            tmp = t.clone()
            t.copy_(a)
            a.copy_(tmp)

    def before_validate(self) -> None:
        """Validate the averaged weights."""
        self.swap()

    def after_validate(self) -> None:
        """Put the training weights back."""
        self.swap()

    def after_fit(self) -> None:
        """Leave the averaged weights in the model (and the last training weights here)."""
        if self.learn.run_mode is RunMode.FIT:
            self.swap()


class _BatchTimer(Callback):
    """Record when each training batch ends, to estimate the time per batch."""

    def __init__(self):
        self.stamps: list[float] = []

    def after_batch(self) -> None:
        if self.learn.training:
            self.stamps.append(time.perf_counter())

    def per_batch(self) -> float:
        """Return the first quartile of the batch times after 5 warm-up batches (1.0 without any).

        Other work on the machine only ever slows batches down, so a low quantile is the closer estimate
        of the speed training will have: a busy spell during lr_find would otherwise cut the epoch count.
        """
        d = sorted(b - a for a, b in zip(self.stamps[5:], self.stamps[6:]))
        return d[len(d) // 4] if d else 1.0


def _epoch_seconds(learn, t_iter: float, keep: float = 1.0) -> float:
    """Estimate one epoch's seconds from the time of one training batch (validation: forward only).

    `keep`: the fraction of the training batches an epoch runs (`HardExampleSampling`).
    """
    return t_iter * (math.ceil(len(learn.dls.train) * keep) + 0.35 * len(learn.dls.valid))


# The demo's test-time shifts (dx, dy): one pixel each way, each of the image and of its mirror image.
TTA_SHIFTS = ((1, 0), (-1, 0), (0, 1), (0, -1))


def _predict(
    learn, ds_idx: int, tta: bool
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
    """Return `(probabilities, flip-TTA ones, flip-and-shift-TTA ones, targets)` on `dls[ds_idx]`.

    Without `tta` both TTA entries are None. Flip TTA averages the image's and its mirror image's
    probabilities; the full TTA averages that (weight 1/2) with the mean over the 8 `TTA_SHIFTS` views
    (1/2), the uncovered border black.
    """
    probs, targs = learn.get_preds(ds_idx=ds_idx)
    if not tta:
        return probs, None, None, targs
    flip = (probs + learn.get_preds(ds_idx=ds_idx, cbs=FlipInputs())[0]) / 2
    black = _normalised(torch.zeros(1, 1, 1, 1)).item()
    views = [ShiftInputs(dx, dy, black, flip=f) for dx, dy in TTA_SHIFTS for f in (False, True)]
    shifted = torch.stack([learn.get_preds(ds_idx=ds_idx, cbs=v)[0] for v in views]).mean(0)
    return probs, flip, (flip + shifted) / 2, targs


def _acc(probs: torch.Tensor, targs: torch.Tensor) -> float:
    return (probs.argmax(1) == targs).float().mean().item()


def run_demo(
    epochs: int | None = None,
    budget: float = 590.0,
    out: str | Path = "out/demo",
    bs: int = 256,
    quick: bool = False,
    seed: int = 42,
    lr_max: float | None = None,
    n_valid: int = 5000,
    label_smoothing: float = 0.1,
    tta: bool = True,
    ema: float | None = None,
    widths: Sequence[int] = (16, 32, 64, 128),
    depth: int | Sequence[int] = 1,
    stem_stride: int = 1,
    flat_head: bool = True,
    aug: str = "flip",
    wd: float = 0.05,
    hard_keep: float = 1.0,
    opt: str = "ranger",
    pct_start: float | None = None,
    whiten: bool = True,
    cbs: Sequence[Callback] = (),
) -> dict:
    """Train, evaluate, interpret and export on Fashion-MNIST; print the results and return them.

    The returned dict holds the accuracies, epochs and times, the peak resident memory (`peak_rss`, bytes,
    None where the OS does not report it), the most confused pairs, the `learn`er
    and the test set's `interp`retation (whose `preds` are the probabilities the test accuracy uses).

    Args:
        epochs: training epochs (None: train for `budget` seconds, with `TimeBudget`).
        budget: seconds of training when `epochs` is None (590: within the 10 minutes the demo promises;
            the one-cycle schedule spans that time and the last epoch is cut short at its end).
        out: folder for the plots and the exported model.
        bs: batch size.
        quick: a 2,048-image subset and one epoch, for smoke tests.
        seed: seed of the whole run.
        lr_max: the peak lr, flat_cos's flat part or one-cycle's peak (None: 10 x lr_find's valley, within
            [8e-3, 1.2e-2]).
        n_valid: training images held out for validation (5000); the test set is only used at the end.
        label_smoothing: `LabelSmoothingCrossEntropy` eps (0.1); 0 trains with plain cross entropy.
        tta: the test (and final validation) accuracy averages the predictions on the images and their
            mirror images (weight 1/2) with those on 8 copies shifted by one pixel (1/2: left, right, up
            and down, each of the image and its mirror image; `TTA_SHIFTS`) (True). The flips alone and
            no TTA are printed and returned too. Over six trained nets the shifts added 0.15 points to
            flips alone on the validation set and 0.10 on the test set, on average (docs/benchmarks.md).
        ema: decay of a `WeightEMA` of the weights, used after training (None: the last weights).
        widths, depth, stem_stride: of the `resnet_small` ((16, 32, 64, 128), 1, 1: a first stage at the
            full 28 x 28 pixels, then 14, 7 and 4). (32, 64, 128) with stem_stride 2 starts at 14 x 14:
            its epochs cost two thirds as much, yet its 13 epochs in the budget score 0.3-0.4 points
            lower on the test set than 8-9 of these; so does depth (0, 1, 1, 1), which keeps the whitened
            stem at 28 x 28 but drops the residual block there (12 epochs: 0.6 points lower on validation,
            docs/benchmarks.md).
        flat_head: the net's head flattens its last 4 x 4 feature map (`img_size=28`) rather than averaging
            it (True): it keeps where each feature is; +0.7 points of validation accuracy at the full
            budget, no change on the test set (docs/benchmarks.md).
        aug: the training augmentation, 'flip' (a horizontal flip), 'affine' (flip, rotate 5, zoom 1.15)
            or 'none' ('flip': at 5-10 epochs the net underfits and rotation/zoom cost accuracy).
        wd: the optimizer's decoupled weight decay (0.05).
        hard_keep: each epoch trains on this fraction of the training images, drawn by
            `HardExampleSampling` with a preference for those with high losses (1.0: all of them, every
            epoch). 0.5 scored higher in 5-epoch-long runs, but not at the full budget (docs/benchmarks.md).
        opt: 'ranger' (`ranger`: Lookahead around RAdam, betas 0.9 / 0.99 and eps 1e-5, with `fit_flat_cos`)
            or 'adam' (fastai's `Adam`, i.e. AdamW, with `fit_one_cycle`). At 10 epochs ranger scored
            0.5 points higher on validation and 0.2 on the test set (docs/benchmarks.md).
        pct_start: the fraction of the training (of the budget, with `TimeBudget`) before the lr anneals:
            one-cycle's warm-up (None: 0.25, fastai's default) or `fit_flat_cos`'s flat part (None: 0.72).
        whiten: the stem's 16 filters are the top 8 principal components of the training images' 3 x 3
            patches and their negatives, frozen (`whiten_conv_`), instead of trained from a random init
            (True): +0.5 points of test accuracy in the same training time (docs/benchmarks.md).
        cbs: callbacks for the training run only, e.g. `[MixUp()]` (none).
    """
    import matplotlib

    matplotlib.use("Agg")
    from .interpret import ClassificationInterpretation
    from .learner import Learner
    from .losses import CrossEntropyLossFlat, LabelSmoothingCrossEntropy
    from .metrics import accuracy
    from .vision.models import resnet_small, whiten_conv_

    if not 0 < hard_keep <= 1:
        raise ValueError(
            f"hard_keep={hard_keep}: pass the fraction of the training images per epoch, in (0, 1]."
        )
    if whiten and (widths[0] % 2 or widths[0] > 18):
        raise ValueError(
            f"whiten=True needs an even stem width of at most 18 (the top widths[0] / 2 of the 9 components "
            f"of 3 x 3 grayscale patches, each used as is and negated); got widths={tuple(widths)}. Pass "
            f"whiten=False (--no-whiten) or a narrower stem."
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    n_train, n_test = (2048, 512) if quick else (None, None)
    if quick:
        n_valid = min(n_valid, 512)
    dls = fashion_mnist_dls(bs=bs, n_train=n_train, n_test=n_test, seed=seed, n_valid=n_valid, aug=aug)
    if len(dls) < 3:
        raise ValueError(
            f"run_demo needs n_valid > 0 (a validation set apart from the test set); got {n_valid}."
        )
    model = resnet_small(
        n_in=1,
        n_out=10,
        widths=widths,
        depth=depth,
        stem_stride=stem_stride,
        img_size=28 if flat_head else None,
    ).to(memory_format=torch.channels_last)
    if whiten:
        stem = cast(torch.nn.Sequential, model[0])  # the stem: Conv2d, BatchNorm2d, ReLU
        whiten_conv_(cast(torch.nn.Conv2d, stem[0]), _normalised(dls.train_ds.x[:WHITEN_SAMPLE]))
    loss = LabelSmoothingCrossEntropy(label_smoothing) if label_smoothing else CrossEntropyLossFlat()
    if opt not in OPTIMIZERS:
        raise ValueError(f"opt={opt!r}: pass one of {sorted(OPTIMIZERS)}.")
    opt_func, policy, default_pct = OPTIMIZERS[opt]
    learn = Learner(dls, model, loss_func=loss, opt_func=opt_func, metrics=accuracy, wd=wd, path=out)
    print(
        f"fastvision demo: Fashion-MNIST, {len(dls.train_ds):,} training, {len(dls.valid_ds):,} validation "
        f"(held out from the training set) and {len(dls[2].dataset):,} test images, "
        f"{sum(p.numel() for p in model.parameters()):,}-parameter ResNet, batch size {bs}"
    )

    timer = _BatchTimer()
    with learn.added_cbs(timer):
        sugg = learn.lr_find(num_it=30 if quick else 60, show_plot=True)
    t_iter = timer.per_batch()
    import matplotlib.pyplot as plt

    plt.gcf().savefig(out / "lr_find.png", dpi=100)
    plt.close("all")
    lr = lr_max or float(min(max(sugg.valley * 10, LR_RANGE[0]), LR_RANGE[1]))  # valley is cautious
    timed: list[Callback] = []
    if epochs is None and quick:
        epochs = 1
    if epochs is None:  # the fit lasts `budget` seconds; the epoch count below is only an upper bound
        per_epoch = _epoch_seconds(learn, t_iter, hard_keep)
        epochs, timed = math.ceil(4 * budget / per_epoch) + 10, [TimeBudget(budget)]
        plan = f"training for {budget:.0f} s (about {budget / per_epoch:.0f} epochs of {per_epoch:.0f} s)"
    else:
        plan = f"training {epochs} epochs"
    hard = [HardExampleSampling(hard_keep)] if hard_keep < 1 else []
    extras = [f"label smoothing {label_smoothing}"] if label_smoothing else []
    extras += (
        [f"{hard[0]!r}: each epoch on {hard_keep:.0%} of the training images, high losses first"]
        if hard
        else []
    )
    extras += [f"weight EMA {ema}"] if ema else []
    extras += ["whitened stem (frozen)"] if whiten else []
    extras += [repr(cb) for cb in cbs]
    print(
        f"lr_find: valley {sugg.valley:.2e}; {plan} of "
        + ("one-cycle at lr_max" if policy == "one_cycle" else f"{opt}, flat then cosine, at lr")
        + f" {lr:.2e}"
        + "".join(f", {e}" for e in extras)
    )

    averager = WeightEMA(ema) if ema else None
    t = time.time()
    fit = learn.fit_one_cycle if policy == "one_cycle" else learn.fit_flat_cos
    pct = default_pct if pct_start is None else pct_start
    fit(epochs, lr, pct_start=pct, cbs=[*cbs, *hard, *timed, *([averager] if averager else [])])
    train_time = time.time() - t
    epochs = learn.epoch + 1  # with a time budget the last one is usually partial
    probs, _, tta_probs, targs = _predict(learn, 1, tta)
    valid_acc, valid_tta = _acc(probs, targs), None if tta_probs is None else _acc(tta_probs, targs)
    last = ""
    if averager is not None:  # the same accuracy without the average, to see what it brings
        averager.swap()
        last = f" (weight EMA; {_acc(learn.get_preds(ds_idx=1)[0], targs):.4f} for the last weights)"
        averager.swap()
    print(
        f"validation accuracy: {valid_acc:.4f}{last}"
        + ("" if valid_tta is None else f", {valid_tta:.4f} with TTA")
        + f"; training time {train_time:.0f} s ({epochs} epochs, {train_time / epochs:.1f} s each)"
    )

    t = time.time()  # the test set, once
    probs, flip_probs, tta_probs, targs = _predict(learn, 2, tta)
    final = probs if tta_probs is None else tta_probs
    acc, plain_acc = _acc(final, targs), _acc(probs, targs)
    flip_acc = None if flip_probs is None else _acc(flip_probs, targs)
    losses = F.nll_loss(final.clamp_min(1e-12).log(), targs, reduction="none")
    test_time = time.time() - t
    peak = peak_rss()  # training and the test pass; no loader workers here, so this process is all of it
    print(
        f"test accuracy: {acc:.4f}"
        + (
            f" with TTA (flips and 1-pixel shifts; {flip_acc:.4f} with flips only, {plain_acc:.4f} without)"
            if tta
            else ""
        )
        + f", cross-entropy {losses.mean():.4f}; training time {train_time:.0f} s; "
        f"test evaluation {test_time:.1f} s, after training; peak memory {format_bytes(peak)} (resident)"
    )

    interp = ClassificationInterpretation(learn, dls[2], final, targs, final.argmax(1), losses)
    pairs = interp.most_confused(min_val=max(1, math.ceil(len(targs) * 0.002)))[:8]
    print("most confused on the test set (actual, predicted, count):")
    for a, p, n in pairs:
        print(f"  {a:<12} -> {p:<12} {n}")
    exported = learn.export("model")  # first, the trained model (relative to learn.path, which is `out`)
    interp.plot_confusion_matrix(figsize=(8, 8)).savefig(out / "confusion_matrix.png", dpi=100)
    interp.plot_top_losses(9, figsize=(8, 8)).savefig(out / "top_losses.png", dpi=100)
    plt.close("all")
    print(
        f"wrote {out / 'lr_find.png'}, {out / 'confusion_matrix.png'}, {out / 'top_losses.png'}, {exported}"
    )
    return {
        "accuracy": acc,
        "accuracy_no_tta": plain_acc,
        "accuracy_flip_tta": flip_acc,
        "valid_accuracy": valid_acc,
        "valid_accuracy_tta": valid_tta,
        "epochs": epochs,
        "lr_max": lr,
        "train_time": train_time,
        "test_time": test_time,
        "peak_rss": peak,
        "most_confused": pairs,
        "learn": learn,
        "interp": interp,
    }
