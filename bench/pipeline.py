"""Data pipeline throughput on fashion-pets: fastvision vs fastai 2.8.12, measured in the same run.

(a) item pipeline: decode + `Resize(460)` (PIL, not lazy) + collate uint8, bs 64, 2 workers.
(b) presizing pipeline: `Resize(460)` + `aug_transforms(size=224, min_scale=0.75)`, batch augmentation
    on the CPU (fastvision defers the resize and resamples once at 224; fastai resizes twice).

Each figure is the median img/s over `--reps` training epochs on the first `--n` images, after one
warm-up epoch (fastvision keeps its workers between epochs; fastai starts new ones every epoch, as
it does in training). fastai runs in a subprocess with `~/fastai-env/bin/python` when that env exists:
`python -m venv ~/fastai-env && ~/fastai-env/bin/pip install torch==2.14.1 torchvision==0.29.1 fastai==2.8.12`.
Data: `python ../shared/tools/make_fashion_pets.py /tmp/fashion-pets`. Benchmarks print; they never fail.

    .venv/bin/python bench/pipeline.py [--path /tmp/fashion-pets] [--n 448] [--reps 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

PAT = r"^(.+)_\d+\.jpg$"

FASTAI_SCRIPT = r"""
import json, re, sys, time
from pathlib import Path
from fastai.vision.all import *
path, n, bs, nw, reps, full = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6] == "1"
files = sorted(Path(path).glob("*.jpg"))[:n]
batch = aug_transforms(size=224, min_scale=0.75) if full else None
dls = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=lambda _: files, get_y=using_attr(RegexLabeller(r"^(.+)_\d+\.jpg$"), "name"),
                splitter=RandomSplitter(0.1, seed=0), item_tfms=Resize(460), batch_tfms=batch).dataloaders(path, bs=bs, num_workers=nw, device="cpu")
out = []
for r in range(reps + 1):
    t, k = time.perf_counter(), 0
    for xb, yb in dls.train:
        k += len(xb)
    if r:
        out.append(k / (time.perf_counter() - t))
print(json.dumps(out))
"""


def fastvision_rates(path: str, n: int, bs: int, nw: int, reps: int, full: bool) -> list[float]:
    """Return img/s of `reps` training epochs of the fastvision pipeline (after one warm-up epoch)."""
    from fastvision.data.block import CategoryBlock, DataBlock, ImageBlock
    from fastvision.data.items import RandomSplitter, RegexLabeller, using_attr
    from fastvision.vision.resize import Resize

    files = sorted(Path(path).glob("*.jpg"))[:n]
    batch = None
    if full:
        from fastvision.vision.augment import aug_transforms

        batch = aug_transforms(size=224, min_scale=0.75)
    dblock = DataBlock(
        blocks=(ImageBlock, CategoryBlock),
        get_items=lambda _: files,
        get_y=using_attr(RegexLabeller(PAT), "name"),
        splitter=RandomSplitter(0.1, seed=0),
        item_tfms=Resize(460),
        batch_tfms=batch,
    )
    dls = dblock.dataloaders(path, bs=bs, num_workers=nw, device="cpu")
    out = []
    for r in range(reps + 1):
        t, k = time.perf_counter(), 0
        for xb, _ in dls.train:
            k += len(xb)
        if r:
            out.append(k / (time.perf_counter() - t))
    return out


def fastai_rates(path: str, n: int, bs: int, nw: int, reps: int, full: bool) -> list[float] | None:
    """Return fastai's img/s per epoch from a subprocess, or None when ~/fastai-env is missing or fails."""
    py = Path.home() / "fastai-env" / "bin" / "python"
    if not py.exists():
        return None
    args = [str(py), "-c", FASTAI_SCRIPT, path, str(n), str(bs), str(nw), str(reps), "1" if full else "0"]
    try:
        res = subprocess.run(args, capture_output=True, text=True, timeout=1800)
        return json.loads(res.stdout.strip().splitlines()[-1])
    except Exception as e:  # benchmarks never fail
        print(f"  fastai run failed: {e}; stderr tail: {getattr(locals().get('res'), 'stderr', '')[-500:]}")
        return None


def report(name: str, ours: list[float] | None, theirs: list[float] | None) -> None:
    med = lambda v: statistics.median(v) if v else float("nan")  # noqa: E731
    line = f"{name}: fastvision {med(ours):7.1f} img/s"
    if theirs:
        line += f" | fastai {med(theirs):7.1f} img/s | ratio {med(ours) / med(theirs):.2f}x"
    else:
        line += " | fastai: not measured (no ~/fastai-env)"
    print(line, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--path", default="/tmp/fashion-pets")
    ap.add_argument("--n", type=int, default=448, help="images used (about 90%% go to the training loader)")
    ap.add_argument("--bs", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", choices=["item", "full"], default=None)
    a = ap.parse_args()
    if not any(Path(a.path).glob("*.jpg")):
        print(f"No images in {a.path}: run python ../shared/tools/make_fashion_pets.py {a.path}")
        return
    print(f"machine: {os.cpu_count()} CPUs, python {sys.version.split()[0]}; {a.n} images, bs {a.bs}, "
          f"{a.workers} workers, median of {a.reps} epochs after a warm-up")  # fmt: skip
    for name, full in (("(a) item pipeline  decode+Resize(460)+collate", False), ("(b) presizing  Resize(460)+aug_transforms(224)", True)):  # fmt: skip
        if a.only and a.only != ("full" if full else "item"):
            continue
        try:
            ours = fastvision_rates(a.path, a.n, a.bs, a.workers, a.reps, full)
        except ImportError as e:
            print(f"{name}: TODO, fastvision module missing ({e})")
            continue
        except Exception as e:  # benchmarks never fail
            print(f"{name}: fastvision run failed: {type(e).__name__}: {e}")
            ours = None
        report(name, ours, fastai_rates(a.path, a.n, a.bs, a.workers, a.reps, full))


if __name__ == "__main__":
    main()
