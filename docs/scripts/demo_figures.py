"""Draw the figures of the Quickstart, Data, Augmentation and Interpretation pages from the real Fashion-MNIST.

- `docs/img/show_batch.jpg`: `dls.show_batch()` of the Pets recipe (`Resize(460)` +
  `aug_transforms(size=224, min_scale=0.75)`) on 64 fashion-pets photos (`make_fashion_pets`).
- `docs/img/show_batch_unique.jpg`: `dls.show_batch(unique=True)`, one photo under 8 augmentations.
- `docs/img/confusion_matrix.png`, `docs/img/top_losses.png`: what `fastvision demo` writes, from a
  shortened run: the demo's model and loaders (`fashion_mnist_dls`) on 6,000 training and 2,000 test
  images, 2 epochs of one-cycle without augmentation (84 % accuracy; the full demo reaches 93 %).

A few minutes on 2 CPU cores (photos as JPEG: their noise makes PNGs ten times larger). Needs the Fashion-MNIST IDX files (Debian's `dataset-fashion-mnist`, the
cache, or a download: see `fashion_mnist_dir`).

    .venv/bin/python docs/scripts/demo_figures.py [OUT_DIR]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from fastvision.data.block import CategoryBlock, DataBlock  # noqa: E402
from fastvision.data.fashion_pets import make_fashion_pets  # noqa: E402
from fastvision.data.items import RandomSplitter, RegexLabeller, get_image_files, using_attr  # noqa: E402
from fastvision.demo import fashion_mnist_dls  # noqa: E402
from fastvision.interpret import ClassificationInterpretation  # noqa: E402
from fastvision.learner import Learner  # noqa: E402
from fastvision.metrics import accuracy  # noqa: E402
from fastvision.vision.augment import aug_transforms  # noqa: E402
from fastvision.vision.block import ImageBlock  # noqa: E402
from fastvision.vision.models import resnet_small  # noqa: E402
from fastvision.vision.resize import Resize  # noqa: E402

DPI = 100  # figures are drawn at the size they are shown (the text column is about 880 px wide)


def batches(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = make_fashion_pets(Path(tmp) / "fashion-pets", n=64, seed=0)
        pets = DataBlock(
            blocks=(ImageBlock, CategoryBlock),
            get_items=get_image_files,
            splitter=RandomSplitter(seed=42),
            get_y=using_attr(RegexLabeller(r"(.+)_\d+.jpg$"), "name"),
            item_tfms=Resize(460),
            batch_tfms=aug_transforms(size=224, min_scale=0.75),
        )
        dls = pets.dataloaders(path, bs=16, num_workers=0, seed=1)
        torch.manual_seed(0)
        jpeg = {"dpi": DPI, "pil_kwargs": {"quality": 85, "optimize": True}}
        dls.show_batch(nrows=2, ncols=4, figsize=(8.8, 4.8)).savefig(out / "show_batch.jpg", **jpeg)
        dls.show_batch(unique=True, nrows=2, ncols=4, figsize=(8.8, 4.8)).savefig(
            out / "show_batch_unique.jpg", **jpeg
        )
        plt.close("all")


def interpretation(out: Path) -> None:
    torch.manual_seed(42)
    dls = fashion_mnist_dls(bs=64, n_train=6000, n_test=2000, seed=42, aug=False)
    model = resnet_small(n_in=1, n_out=10, widths=(32, 64, 128), stem_stride=2)
    learn = Learner(dls, model, metrics=accuracy, wd=0.05)
    with learn.no_logging():
        learn.fit_one_cycle(2, 1e-2)
    print(f"accuracy after 2 epochs: {learn.validate()[1]:.3f}")
    interp = ClassificationInterpretation.from_learner(learn)
    interp.plot_confusion_matrix(figsize=(7.5, 7.5)).savefig(out / "confusion_matrix.png", dpi=DPI)
    interp.plot_top_losses(9, nrows=3, figsize=(8, 8.4)).savefig(out / "top_losses.png", dpi=DPI)
    plt.close("all")


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    batches(out)
    interpretation(out)
    for name in ("show_batch.jpg", "show_batch_unique.jpg", "confusion_matrix.png", "top_losses.png"):
        print(f"wrote {out / name}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "img")
