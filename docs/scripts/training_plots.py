"""Draw docs/img/lr_find.png and docs/img/one_cycle.png with the real `Learner` on tiny tensor data.

A small CNN on `make_tensor_data` (images whose brightness encodes the class), CPU, seeded: a few
seconds. `lr_find.png` is `learn.lr_find()`'s own plot with three suggestions marked (`steep` is left out:
on this curve it picks the noise after the divergence);
`one_cycle.png` is `learn.recorder.plot_sched()` after `fit_one_cycle(3, lr_max=1e-2)`.

    .venv/bin/python docs/scripts/training_plots.py [OUT_DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import TensorDataset  # noqa: E402

from fastvision.callback.schedule import minimum, slide, valley  # noqa: E402
from fastvision.data.load import DataLoaders  # noqa: E402
from fastvision.learner import Learner  # noqa: E402
from fastvision.metrics import accuracy  # noqa: E402
from fastvision.testing import make_tensor_data  # noqa: E402


def make_learner(seed: int = 0) -> Learner:
    """A 3-class CNN on 1,024 28 x 28 tensor images (bs 32: 26 training batches per epoch)."""
    torch.manual_seed(seed)
    x, y = make_tensor_data(n=1024, n_classes=3, seed=seed)
    x = x + 0.25 * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed + 1))  # harder
    dls = DataLoaders.from_dsets(
        TensorDataset(x[:832], y[:832]), TensorDataset(x[832:], y[832:]), bs=32, seed=seed, device="cpu"
    )
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 3),
    )  # fmt: skip
    return Learner(dls, model, loss_func=nn.CrossEntropyLoss(), metrics=accuracy)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    learn = make_learner()
    with learn.no_bar():
        sugg = learn.lr_find(num_it=100, suggest_funcs=(valley, slide, minimum))
    fig = plt.gcf()
    fig.set_size_inches(6.4, 4.2)
    fig.axes[0].set_title("learn.lr_find(suggest_funcs=(valley, slide, minimum))")
    fig.tight_layout()
    fig.savefig(out / "lr_find.png", dpi=90)
    plt.close("all")
    print(f"wrote {out / 'lr_find.png'}: {sugg}")

    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(3, lr_max=1e-2)
    fig = learn.recorder.plot_sched(figsize=(6.4, 4.8))
    for ax, key in zip(fig.axes, learn.recorder.hps):
        ax.set_ylabel({"lr": "learning rate", "mom": "momentum (beta1)"}.get(key, key))
    fig.axes[-1].set_xlabel("training batch")
    fig.suptitle("fit_one_cycle(3, lr_max=1e-2): pct_start=0.25, div=25, div_final=1e5")
    fig.tight_layout()
    fig.savefig(out / "one_cycle.png", dpi=90)
    plt.close("all")
    print(f"wrote {out / 'one_cycle.png'}; final accuracy {float(learn.recorder.values[-1][-1]):.3f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "img")
