"""Screen changes to the demo's recipe at a fixed epoch count or time: one `run_demo` per variant, same seed.

Each variant is a JSON object of `run_demo` arguments applied on top of its defaults; the table gives the
validation accuracy (the held-out 5,000 training images: choose on this) and the test accuracy (read
once per run, after training), plain and with flip test-time augmentation, and the training time. Run
it on a quiet machine: the variants run one after the other, each a full training run (about 4.5
minutes at 5 epochs on 2 CPU cores).

    python bench/recipe.py [--epochs 5] ['{"aug": "affine"}' '{"lr_max": 0.012}' ...]
    python bench/recipe.py --budget 590 '{}' '{"widths": [32, 64, 128], "stem_stride": 2, "whiten": false}'   # full-budget demos

Without variants it runs the screen behind docs/benchmarks.md: the default recipe, the nets measured
against its 28 x 28 first stage, then one change at a time to the net before it (`MORNING`: hard-example
sampling, the average-pooling head, the former affine augmentation, lr_max, batch size, weight decay, no
label smoothing, and training tricks that did not pay: selective backprop, alternating flips,
progressive resizing).

`--epochs` counts full passes over the training set: a variant with `hard_keep=0.5` trains twice as many
(half-length) epochs, so every variant gets the same number of training batches. A variant may name
training callbacks defined here under "cbs" (`{"cbs": ["selective_backprop"]}`, see `CALLBACKS`).
"""

from __future__ import annotations

import argparse
import inspect
import json
import time

import torch
import torch.nn.functional as F

from fastvision.callback.core import Callback


class SelectiveBackprop(Callback):
    """Score each training batch with a no-grad forward pass, train on item `i` with probability `rank_i`.

    The BatchNorm running statistics are updated by the scoring pass (the whole batch), not by the
    training pass on the chosen items.
    """

    order = 5

    def before_fit(self) -> None:
        self.gen = torch.Generator().manual_seed(1)

    def before_batch(self) -> None:
        if not self.learn.training or self.learn.epoch < 1:  # the first epoch trains on every item
            return
        model = self.learn.model
        with torch.no_grad():
            out = model(*self.learn.xb)
        self.bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        self.moms = [m.momentum for m in self.bns]
        for m in self.bns:
            m.momentum = 0.0
        loss = F.cross_entropy(out, self.learn.yb[0], reduction="none")
        rank = (loss.argsort().argsort().float() + 1) / len(loss)
        idx = (torch.rand(len(loss), generator=self.gen) < rank).nonzero().squeeze(1)
        self.learn.xb = tuple(x[idx] for x in self.learn.xb)
        self.learn.yb = tuple(y[idx] for y in self.learn.yb)

    def after_pred(self) -> None:
        for m, mom in zip(getattr(self, "bns", []), getattr(self, "moms", [])):
            m.momentum = mom
        self.bns = []


class AlternateFlip(Callback):
    """Mirror a fixed random half of the training images, then every image at each new epoch."""

    def before_fit(self) -> None:
        x = self.learn.dls.train.dataset.x
        half = torch.rand(len(x), generator=torch.Generator().manual_seed(0)) < 0.5
        x[half] = x[half].flip(-1)

    def before_epoch(self) -> None:
        if self.learn.training and self.learn.epoch > 0:
            x = self.learn.dls.train.dataset.x
            x.copy_(x.flip(-1))


class ProgressiveResize(Callback):
    """Train the first `n_epochs` epochs on images resized to `size` (about half the cost at 20 px)."""

    def __init__(self, size: int = 20, n_epochs: int = 3):
        self.size, self.n_epochs = size, n_epochs

    def before_batch(self) -> None:
        if self.learn.training and self.learn.epoch < self.n_epochs:
            size = (self.size, self.size)
            self.learn.xb = tuple(
                F.interpolate(x, size=size, mode="bilinear", antialias=True).contiguous(
                    memory_format=torch.channels_last
                )
                for x in self.learn.xb
            )


CALLBACKS = {
    "selective_backprop": SelectiveBackprop,
    "alternate_flip": AlternateFlip,
    "resize20x3": ProgressiveResize,
}

MORNING = {"widths": [32, 64, 128], "stem_stride": 2}  # the net before the 28 x 28 first stage (2026-12-01)

SCREEN = [
    {},
    MORNING,
    {"widths": [16, 32, 64]},
    {"widths": [8, 32, 64, 128]},
    {**MORNING, "hard_keep": 0.5},
    {**MORNING, "hard_keep": 0.34},
    {**MORNING, "flat_head": False, "hard_keep": 0.5},
    {**MORNING, "flat_head": False},
    {**MORNING, "flat_head": False, "cbs": ["selective_backprop"], "epochs": 6},
    {**MORNING, "flat_head": False, "cbs": ["alternate_flip"], "aug": "none"},
    {**MORNING, "flat_head": False, "cbs": ["resize20x3"], "epochs": 6},
    {**MORNING, "flat_head": False, "aug": "affine", "lr_max": 5e-3},
    {**MORNING, "flat_head": False, "aug": "affine", "lr_max": 8e-3},
    {**MORNING, "flat_head": False, "aug": "affine", "lr_max": 1e-2, "wd": 0.01},
    {**MORNING, "flat_head": False, "lr_max": 5e-3},
    {**MORNING, "flat_head": False, "lr_max": 1.2e-2},
    {**MORNING, "flat_head": False, "bs": 128, "lr_max": 8e-3},
    {**MORNING, "flat_head": False, "bs": 128, "lr_max": 1e-2},
    {**MORNING, "flat_head": False, "label_smoothing": 0.0, "lr_max": 5e-3},
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=5, help="training epochs of every run (5)")
    ap.add_argument(
        "--budget", type=float, help="train each variant for this many seconds (TimeBudget), not --epochs"
    )
    ap.add_argument("variants", nargs="*", help="JSON objects of run_demo arguments (default: the screen)")
    a = ap.parse_args()
    from fastvision.demo import run_demo

    variants = [json.loads(v) for v in a.variants] or SCREEN
    rows = []
    for v in variants:
        t = time.time()
        kw = dict(v)
        cbs = [CALLBACKS[name]() for name in kw.pop("cbs", [])]
        keep = kw.get("hard_keep", inspect.signature(run_demo).parameters["hard_keep"].default)
        fixed = kw.pop("epochs", None)
        epochs = None if a.budget else fixed or round(a.epochs / keep)
        budget = {"budget": a.budget} if a.budget else {}
        r = run_demo(epochs=epochs, out="/tmp/bench-recipe", cbs=cbs, **budget, **kw)
        rows.append(
            f"| `{json.dumps(v)}` | {r['epochs']} | {r['lr_max']:.1e} | {r['valid_accuracy']:.4f} / {r['valid_accuracy_tta']:.4f} "
            f"| {r['accuracy']:.4f} / {r['accuracy_no_tta']:.4f} | {r['train_time']:.0f} s |"
        )
        print(f"{rows[-1]}  ({time.time() - t:.0f} s in all)", flush=True)
    length = f"{a.budget:.0f} s of training" if a.budget else f"{a.epochs} passes over the training set"
    print(f"\n{length} each (unless a variant sets its epochs)\n")
    print(
        "| change to the recipe | epochs | lr_max | valid acc (plain / flip TTA) | test acc (flip TTA / plain) "
        "| training |"
    )
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
