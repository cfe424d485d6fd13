"""`fastvision demo`: train a small ResNet on the real Fashion-MNIST within a time budget, then interpret
and export it. This is the main job behind `make demo`."""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from .callback.core import Callback

__all__ = ["run_demo", "fashion_mnist_dls", "FASHION_MNIST_STATS"]

# Per-channel mean/std of the Fashion-MNIST training images in [0, 1].
FASHION_MNIST_STATS = ([0.2860], [0.3530])


def fashion_mnist_dls(
    bs: int = 256,
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 42,
    device: torch.device | str | None = None,
    aug: bool = True,
):
    """Return DataLoaders of Fashion-MNIST tensors (test set as validation) with batched augmentation."""
    from .data.external import fashion_mnist_datasets
    from .data.load import DataLoaders
    from .vision.augment import aug_transforms
    from .vision.lighting import IntToFloatTensor, Normalize

    train, test = fashion_mnist_datasets(n_train, n_test)
    augs = (
        aug_transforms(max_rotate=5.0, max_zoom=1.15, max_warp=0.0, max_lighting=0.0, pad_mode="zeros")
        if aug
        else []
    )
    tfms = [IntToFloatTensor(), *augs, Normalize.from_stats(*FASHION_MNIST_STATS)]
    return DataLoaders.from_dsets(
        train, test, bs=bs, after_batch=tfms, num_workers=0, seed=seed, device=device
    )


class _BatchTimer(Callback):
    """Record when each training batch ends, to estimate the time per batch."""

    def __init__(self):
        self.stamps: list[float] = []

    def after_batch(self) -> None:
        if self.learn.training:
            self.stamps.append(time.perf_counter())

    def per_batch(self) -> float:
        d = sorted(b - a for a, b in zip(self.stamps[5:], self.stamps[6:]))  # skip warm-up batches
        return d[len(d) // 2] if d else 1.0


def _epochs_for_budget(learn, budget: float, t_iter: float) -> int:
    n_train = len(learn.dls.train)
    n_valid = len(learn.dls.valid)
    per_epoch = t_iter * (n_train + 0.35 * n_valid) * 1.1  # validation: forward only; 10% margin
    return max(1, min(30, int(budget // per_epoch)))


def run_demo(
    epochs: int | None = None,
    budget: float = 540.0,
    out: str | Path = "out/demo",
    bs: int = 256,
    quick: bool = False,
    seed: int = 42,
    lr_max: float | None = None,
) -> dict:
    """Train, evaluate, interpret and export on Fashion-MNIST; print the results and return them.

    Args:
        epochs: training epochs (None: as many as fit in `budget` seconds, measured by lr_find).
        budget: seconds of training to aim for when `epochs` is None (540: 9 minutes).
        out: folder for the plots and the exported model.
        bs: batch size.
        quick: a 2,048-image subset and one epoch, for smoke tests.
        seed: seed of the whole run.
        lr_max: one-cycle peak lr (None: 10 x lr_find's valley, within [3e-3, 1e-2]).
    """
    import matplotlib

    matplotlib.use("Agg")
    from .interpret import ClassificationInterpretation
    from .learner import Learner
    from .metrics import accuracy
    from .vision.models import resnet_small

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    n_train, n_test = (2048, 512) if quick else (None, None)
    dls = fashion_mnist_dls(bs=bs, n_train=n_train, n_test=n_test, seed=seed)
    model = resnet_small(n_in=1, n_out=10, widths=(32, 64, 128), stem_stride=2).to(
        memory_format=torch.channels_last
    )
    learn = Learner(dls, model, metrics=accuracy, wd=0.05, path=out)
    print(
        f"fastvision demo: Fashion-MNIST, {len(dls.train_ds):,} training and {len(dls.valid_ds):,} test images, "
        f"{sum(p.numel() for p in model.parameters()):,}-parameter ResNet, batch size {bs}"
    )

    timer = _BatchTimer()
    with learn.added_cbs(timer):
        sugg = learn.lr_find(num_it=30 if quick else 60, show_plot=True)
    t_iter = timer.per_batch()
    import matplotlib.pyplot as plt

    plt.gcf().savefig(out / "lr_find.png", dpi=100)
    plt.close("all")
    lr = lr_max or float(min(max(sugg.valley * 10, 3e-3), 1e-2))  # valley is conservative for one-cycle
    if epochs is None:
        epochs = 1 if quick else _epochs_for_budget(learn, budget, t_iter)
    print(f"lr_find: valley {sugg.valley:.2e}; training {epochs} epochs of one-cycle at lr_max {lr:.2e}")

    t = time.time()
    learn.fit_one_cycle(epochs, lr)
    train_time = time.time() - t
    loss, acc = learn.validate()[:2]
    print(
        f"test accuracy: {acc:.4f} (loss {loss:.4f}), training time {train_time:.0f} s "
        f"({train_time / epochs:.0f} s/epoch)"
    )

    interp = ClassificationInterpretation.from_learner(learn)
    pairs = interp.most_confused(min_val=max(1, math.ceil(len(dls.valid_ds) * 0.002)))[:8]
    print("most confused (actual, predicted, count):")
    for a, p, n in pairs:
        print(f"  {a:<12} -> {p:<12} {n}")
    interp.plot_confusion_matrix(figsize=(8, 8)).savefig(out / "confusion_matrix.png", dpi=100)
    interp.plot_top_losses(9, figsize=(8, 8)).savefig(out / "top_losses.png", dpi=100)
    plt.close("all")
    exported = learn.export("model")  # relative to learn.path, which is `out`
    print(
        f"wrote {out / 'lr_find.png'}, {out / 'confusion_matrix.png'}, {out / 'top_losses.png'}, {exported}"
    )
    return {"accuracy": float(acc), "epochs": epochs, "train_time": train_time, "most_confused": pairs}
