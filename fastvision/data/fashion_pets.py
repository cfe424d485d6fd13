"""An Oxford-Pets-shaped folder of JPEG photos built from the real Fashion-MNIST: `make_fashion_pets`.

Each file is one Fashion-MNIST image upscaled (bicubic) to a random photo-like size of 250-500 px a side,
tinted with a random foreground and background colour, lightly noised and saved as JPEG (quality 90),
named `<label>_<n>.jpg` like the Oxford-IIIT Pet images (`ankle_boot_173.jpg`), so the Pets chapter's
`RegexLabeller(r'(.+)_\\d+.jpg$')` labels it. Labels whose first letter is upper case stand for the
Pets cat breeds. The command line gives the same: `fastvision make-fashion-pets OUT_DIR`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from .external import FASHION_MNIST_FILES, fashion_mnist_dir, read_idx

__all__ = ["FASHION_PETS_LABELS", "make_fashion_pets"]

FASHION_PETS_LABELS = (
    "tshirt_top", "trouser", "Pullover", "dress", "Coat", "sandal", "shirt", "sneaker", "Bag", "ankle_boot",
)  # fmt: skip
"""The file-name label of each Fashion-MNIST class index (upper case: the "cats")."""

_MARKER = ".fashion_pets.json"  # written last: the folder is complete and was made with these settings


def _source_files(source: str | Path | None, split: str) -> tuple[Path, Path]:
    """Return the (images, labels) IDX files of `split`, from `source` or wherever fastvision finds them."""
    pre = "train" if split == "train" else "t10k"
    folder = Path(source).expanduser() if source is not None else fashion_mnist_dir()
    files = (folder / f"{pre}-images-idx3-ubyte.gz", folder / f"{pre}-labels-idx1-ubyte.gz")
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(
            f"make_fashion_pets: {', '.join(missing)} not found in '{folder}'. Expected a folder holding the "
            f"Fashion-MNIST IDX files ({', '.join(FASHION_MNIST_FILES)}). Get them with "
            "`apt-get install dataset-fashion-mnist` (into /usr/share/datasets/fashion-mnist), or pass "
            "source=None to let fastvision find or download them."
        )
    return files


def _photo(digit: np.ndarray, rng: np.random.Generator):
    """Turn one 28 x 28 uint8 image into a tinted, noisy RGB PIL image of a random size."""
    from PIL import Image

    w, h = int(rng.integers(250, 501)), int(rng.integers(250, 501))
    g = np.asarray(Image.fromarray(digit).resize((w, h), Image.Resampling.BICUBIC), np.float32) / 255.0
    fg, bg = rng.uniform(0.5, 1.0, 3), rng.uniform(0.0, 0.5, 3)
    rgb = bg[None, None] * (1 - g[..., None]) + fg[None, None] * g[..., None]
    rgb += rng.normal(0, 0.03, rgb.shape)
    return Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8))


def make_fashion_pets(
    dest: str | Path, n: int = 7390, seed: int = 42, source: str | Path | None = None, split: str = "train"
) -> Path:
    """Write `n` Fashion-MNIST images as Oxford-Pets-like JPEG files `dest/<label>_<k>.jpg`; return `dest`.

    The folder appears complete or not at all: the files are written to a hidden folder next to `dest`
    that is renamed to `dest` at the end, so an interrupted run leaves nothing half-made and a rerun
    starts afresh. Calling it again with the same settings on a finished folder returns at once. The
    same `seed` gives the same files.

    Args:
        dest: the folder to create (it must not exist, or be empty, or be a finished folder made by this
            function with the same `n`, `seed` and `split`).
        n: how many images (7390, the size of Oxford-IIIT Pet), at most the split's size.
        seed: seed of the choice of images, their sizes, colours and noise.
        source: a folder holding the Fashion-MNIST IDX files (`train-images-idx3-ubyte.gz`, ...). None:
            Debian's `dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist), else fastvision's cache,
            else a download (`fashion_mnist_dir()`).
        split: 'train' (60,000 images to choose from) or 'test' (10,000).
    """
    if split not in ("train", "test"):
        raise ValueError(f"make_fashion_pets: split={split!r}; expected 'train' or 'test'.")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"make_fashion_pets: n={n!r}; expected a positive number of images.")
    dest = Path(dest).expanduser()
    settings = {"n": n, "seed": seed, "split": split}
    if dest.exists():
        if not dest.is_dir():
            raise NotADirectoryError(
                f"make_fashion_pets: '{dest}' exists and is not a folder; pick another dest."
            )
        marker = dest / _MARKER
        if marker.is_file() and json.loads(marker.read_text()) == settings:
            return dest
        if any(dest.iterdir()):
            raise FileExistsError(
                f"make_fashion_pets: '{dest}' is not empty and is not a finished fashion-pets folder made with "
                f"{settings}. Remove it or choose another folder."
            )
    images, labels = _source_files(source, split)
    x, y = read_idx(images), read_idx(labels)
    if n > len(x):
        raise ValueError(
            f"make_fashion_pets: n={n} but the {split!r} split holds {len(x)} images; pass n <= {len(x)}."
        )

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)  # left by a killed run that had this process id
    tmp.mkdir()
    try:
        rng = np.random.default_rng(seed)
        counts: dict[str, int] = {}
        for i in rng.permutation(len(x))[:n]:
            label = FASHION_PETS_LABELS[int(y[i])]
            counts[label] = counts.get(label, 0) + 1
            _photo(x[i], rng).save(tmp / f"{label}_{counts[label]}.jpg", quality=90)
        (tmp / _MARKER).write_text(json.dumps(settings))
        if dest.exists():
            dest.rmdir()  # empty (checked above); rename cannot replace a folder on every platform
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
