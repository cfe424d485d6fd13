"""Draw docs/img/augment_grid.png: one image under 8 default augmentations, fastvision vs fastai-style.

Top row: fastvision, `Resize(460)` left lazy + `aug_transforms(size=224, min_scale=0.75)`, one resample
from the native pixels. Middle row: the same geometry done the fastai way: the item resized to 460, the
affine/warp resampled at 460, then the crop resized to 224 (three interpolations). Bottom row: 4x
close-ups, fastvision | fastai-style, of the same region.

    .venv/bin/python docs/scripts/augment_grid.py [OUT.png]
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from fastvision.vision.augment import AffineGroup, _resample, aug_transforms  # noqa: E402
from fastvision.vision.lazy import PendingImage, collate_pending  # noqa: E402

FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
N, SEED = 8, 0


def scene(w: int = 480, h: int = 360) -> torch.Tensor:
    """A 480 x 360 RGB test image: a Fashion-MNIST item (if installed) with hard edges, text and fine lines."""
    yy, xx = np.mgrid[0:h, 0:w]
    bg = np.stack([90 + 80 * xx / w, 120 + 60 * yy / h, 170 - 60 * xx / w], -1).astype(np.uint8)
    img = Image.fromarray(bg)
    if FMNIST.exists():
        with gzip.open(FMNIST) as f:
            item = np.frombuffer(f.read(16 + 28 * 28 * 10), np.uint8)[16:].reshape(10, 28, 28)[
                0
            ]  # an ankle boot
        boot = Image.fromarray(item).resize((252, 252), Image.NEAREST)
        img.paste(Image.new("RGB", boot.size, (250, 240, 220)), (190, 60), boot)
    draw = ImageDraw.Draw(img)
    for i in range(0, 120, 6):  # 1-pixel lines, 6 px apart
        draw.line([(20 + i, 30), (20 + i, 150)], fill=(255, 255, 255))
        draw.line([(20, 190 + i), (150, 190 + i)], fill=(20, 20, 20))
    font = ImageFont.load_default(size=22)
    draw.text((20, 2), "fastvision 0123456789", fill=(255, 255, 0), font=font)
    draw.text((200, 322), "one interpolation", fill=(0, 0, 0), font=font)
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).contiguous()


def busiest_patch(img: torch.Tensor, size: int = 56) -> tuple[int, int]:
    """Top-left corner of the `size` x `size` patch with the largest gradient energy."""
    grey = img.mean(0)
    energy = (grey[1:, :-1] - grey[:-1, :-1]).abs() + (grey[:-1, 1:] - grey[:-1, :-1]).abs()
    pooled = F.avg_pool2d(energy[None, None], size, stride=8)[0, 0]
    idx = int(pooled.argmax())
    return (idx // pooled.shape[1]) * 8, (idx % pooled.shape[1]) * 8


def main(out: Path) -> None:
    pixels = scene()
    h, w = pixels.shape[1:]
    side = min(h, w)
    x0 = (w - side) / 2  # Resize(460) centre crop: the largest square, promised at 460 x 460
    pb = collate_pending([PendingImage(pixels, (x0, 0.0, x0 + side - 1, side - 1.0), (460, 460))] * N)
    group = aug_transforms(size=224, min_scale=0.75)[0]
    geometry, crop = AffineGroup(group.parts[:-1]), AffineGroup(group.parts[-1:])

    torch.manual_seed(SEED)
    ours = group(pb, split_idx=0)
    torch.manual_seed(SEED)  # the same draws, in the same order, applied in three steps
    m_affine, m_crop = geometry.matrix(N, 460, 460, split_idx=0), crop.matrix(N, 460, 460, split_idx=0)
    square = pixels[None, :, :, int(x0) : int(x0) + side].float()
    item460 = F.interpolate(square, size=(460, 460), mode="bilinear", antialias=True).expand(N, -1, -1, -1)
    at460 = _resample(item460, m_affine, (460, 460))
    theirs = (_resample(at460, m_crop, (224, 224)) / 255).clamp(0, 1)

    fig, axs = plt.subplots(3, N, figsize=(2 * N, 6.6))
    for i in range(N):
        axs[0, i].imshow(ours[i].permute(1, 2, 0).numpy())
        axs[1, i].imshow(theirs[i].permute(1, 2, 0).numpy())
    for j in range(N // 2):  # close-ups of the 56 x 56 patch with the most edges
        r, c = busiest_patch(ours[j])
        for k, img in enumerate((ours, theirs)):
            patch = img[j, :, r : r + 56, c : c + 56].permute(1, 2, 0).numpy()
            axs[2, 2 * j + k].imshow(patch, interpolation="nearest")
            axs[2, 2 * j + k].set_title(f"#{j} " + ("fastvision" if k == 0 else "fastai-style"), fontsize=9)
    for ax in axs.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axs[0, 0].set_ylabel("fastvision\n1 resample", fontsize=10)
    axs[1, 0].set_ylabel("fastai-style\nResize(460) +\n2 grid_samples", fontsize=10)
    axs[2, 0].set_ylabel("4x close-up", fontsize=10)
    fig.suptitle("aug_transforms(size=224, min_scale=0.75): same random draws, one vs three interpolations")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(
        Path(sys.argv[1])
        if len(sys.argv) > 1
        else Path(__file__).resolve().parents[1] / "img" / "augment_grid.png"
    )
