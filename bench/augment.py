"""Batch-stage augmentation: fastvision's one-interpolation group vs a fastai-style two-interpolation pipeline.

Input: a 64 x 3 x 460 x 460 uint8 batch (what `Resize(460)` + collate gives fastai), output 224 x 224,
`aug_transforms(size=224, min_scale=0.75)` on the training split. Prints img/s and ms per batch for
each, and the ratio, measured in the same run (median of `--reps`). Never fails on timings.

    .venv/bin/python bench/augment.py [--bs 64] [--reps 5] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F

from fastvision.vision.augment import AffineGroup, aug_transforms
from fastvision.vision.lazy import PendingBatch
from fastvision.vision.lighting import IntToFloatTensor


def fastai_style(
    x_u8: torch.Tensor, geometry: AffineGroup, lighting, size: int = 224, min_scale: float = 0.75
) -> torch.Tensor:
    """The fastai recipe, naively: float conversion, affine+warp grid_sample at 460, then one random crop per
    batch resized with a second grid_sample (after fastai's `.item()` down-sampling guard), then lighting."""
    x = x_u8.float().div_(255)
    bs, _, h, w = x.shape
    mat = geometry.matrix(bs, h, w, split_idx=0).to(x.device)  # flip @ rotate @ zoom, then the warp
    eye = torch.eye(3, device=x.device)[:2].expand(bs, 2, 3)
    grid = F.affine_grid(eye, (bs, 3, h, w), align_corners=True)
    grid = torch.cat([grid, torch.ones_like(grid[..., :1])], -1) @ mat.transpose(1, 2)[:, None]
    x = F.grid_sample(
        x, grid[..., :2] / grid[..., 2:], mode="bilinear", padding_mode="reflection", align_corners=True
    )
    area = torch.empty(1).uniform_(min_scale, 1.0).item() * h * w  # one crop per batch, integer slice
    side = min(int(round(math.sqrt(area))), h, w)
    top, left = torch.randint(0, h - side + 1, (1,)).item(), torch.randint(0, w - side + 1, (1,)).item()
    x = x[..., top : top + side, left : left + side]
    grid = F.affine_grid(eye, (bs, 3, size, size), align_corners=True)
    z = 2 / (grid.max() - grid.min()).item()  # fastai's guard reads the grid back to the host
    d = min(x.shape[-2] / size, x.shape[-1] / size) / 2
    if d > 1 and d > z:
        x = F.interpolate(x, scale_factor=1 / d, mode="area", recompute_scale_factor=True)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=True)
    return lighting(x, split_idx=0)


def ours(pb: PendingBatch, tfms) -> torch.Tensor:
    for t in tfms:
        pb = t(pb, split_idx=0)
    return pb


def timeit(fns: list, reps: int, device: torch.device) -> list[tuple[float, float]]:
    """Median (wall s, CPU s) per function; the functions are interleaved so load changes hit all alike."""
    walls: list[list[float]] = [[] for _ in fns]
    cpus: list[list[float]] = [[] for _ in fns]
    for i in range(reps + 1):
        for j, fn in enumerate(fns):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i:  # the first round warms up
                walls[j].append(time.perf_counter() - t0)
                cpus[j].append(time.process_time() - c0)
    return [(statistics.median(w), statistics.median(c)) for w, c in zip(walls, cpus)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bs", type=int, default=64)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    bs, side = args.bs, 460
    canvas = torch.randint(0, 256, (bs, 3, side, side), dtype=torch.uint8)
    hw = torch.tensor([[side, side]]).expand(bs, 2).contiguous()
    window = torch.tensor([[0.0, 0.0, side - 1.0, side - 1.0]]).expand(bs, 4).contiguous()
    pb = PendingBatch(canvas, hw, window, (side, side)).to(device)
    tfms = [IntToFloatTensor(), *aug_transforms(size=224, min_scale=0.75)]
    group, lighting = tfms[1], tfms[2]
    geometry = AffineGroup(group.parts[:-1])  # the same parts without the folded crop
    geometry_only = tfms[:2]

    print(
        f"batch {bs}x3x{side}x{side} uint8 -> 224, device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    rows = [
        ("fastvision geometry (1 grid_sample)", lambda: ours(pb, geometry_only)),
        (
            "fastai-style geometry (2 grid_sample)",
            lambda: fastai_style(pb.canvas, geometry, lambda x, split_idx: x),
        ),
        ("fastvision geometry + lighting", lambda: ours(pb, tfms)),
        ("fastai-style geometry + lighting", lambda: fastai_style(pb.canvas, geometry, lighting)),
    ]
    res = dict(zip([r[0] for r in rows], timeit([r[1] for r in rows], args.reps, device)))
    for name, (wall, cpu) in res.items():
        print(
            f"{name:40s} {wall * 1e3:9.2f} ms/batch {bs / wall:7.0f} img/s   (CPU time {cpu * 1e3:8.1f} ms)"
        )
    for (a, _), (b, _) in [(rows[1], rows[0]), (rows[3], rows[2])]:
        print(f"{b} vs {a}: {res[a][0] / res[b][0]:.2f}x wall, {res[a][1] / res[b][1]:.2f}x CPU time")


if __name__ == "__main__":
    main()
