"""Data pipeline throughput and memory on fashion-pets: fastvision vs fastai 2.8.12, measured in the same run.

(a) item pipeline: decode + `Resize(460)` + collate uint8, bs 64, 2 workers.
(b) presizing pipeline: `Resize(460)` + `aug_transforms(size=224, min_scale=0.75)`, batch augmentation
    on the CPU (fastvision defers the resize and resamples once at 224; fastai resizes twice).

What the clock holds. **cold**: from before `DataBlock.dataloaders()` is called to the end of the first
training epoch: listing the files, labelling, splitting, starting the workers and decoding every image of
the epoch (wherever each library decodes it). **steady**: the median of the following epochs. Imports
are outside the clock; the image files are in the OS page cache for both libraries (each runs several
times). **peak memory**: the highest proportional set size (PSS, so pages shared between the main
process and its workers count once) of the whole process tree, sampled every 250 ms from /proc.

Each library runs in its own subprocess (fastai with `~/fastai-env/bin/python`, or `--fastai-python`),
alternating, `--reps` times; figures are medians. Benchmarks print; they never fail.

    python bench/pipeline.py [--path /tmp/fashion-pets] [--n 2048] [--reps 3] [--epochs 3]

Data: `fastvision make-fashion-pets /tmp/fashion-pets --n 2048` (from the real Fashion-MNIST).
fastai: `python -m venv ~/fastai-env && ~/fastai-env/bin/pip install torch==2.14.1 torchvision==0.29.1
fastai==2.8.12`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

PAT = r"^(.+)_\d+\.jpg$"

# The same script for both libraries: only the import differs (fastvision's names match fastai's).
SCRIPT = r"""
import json, sys, time
from pathlib import Path
lib, path, n, bs, nw, epochs, full = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), sys.argv[7] == "1"
if lib == "fastai":
    from fastai.vision.all import DataBlock, ImageBlock, CategoryBlock, RandomSplitter, RegexLabeller, using_attr, Resize, aug_transforms
else:
    from fastvision.all import DataBlock, ImageBlock, CategoryBlock, RandomSplitter, RegexLabeller, using_attr, Resize, aug_transforms

def get_items(p):
    return sorted(Path(p).glob("*.jpg"))[:n]

t0 = time.perf_counter()
dblock = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_items, splitter=RandomSplitter(0.1, seed=0),
                   get_y=using_attr(RegexLabeller(r"^(.+)_\d+\.jpg$"), "name"), item_tfms=Resize(460),
                   batch_tfms=aug_transforms(size=224, min_scale=0.75) if full else None)
dls = dblock.dataloaders(path, bs=bs, num_workers=nw, device="cpu")
build = time.perf_counter() - t0
rates, k = [], 0
for e in range(epochs):
    t, k = time.perf_counter(), 0
    for xb, yb in dls.train:
        k += len(xb)
    rates.append(k / (time.perf_counter() - t))
    if e == 0:
        cold = k / (time.perf_counter() - t0)
print(json.dumps({"cold": cold, "build_s": build, "epochs": rates, "n_train": k}))
"""


def _pss_mb(pid: int) -> float:
    """PSS of `pid` and all its descendants, in MB (0 for processes that are gone)."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("Pss:")) / 1024
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except (OSError, StopIteration, ValueError):
            continue
    return total


def run(python: str, lib: str, a: argparse.Namespace, full: bool) -> dict | None:
    """Run one library's pipeline in a subprocess; return its figures and peak memory, None on failure."""
    args = [python, "-c", SCRIPT, lib, a.path, str(a.n), str(a.bs), str(a.workers), str(a.epochs)]
    proc = subprocess.Popen(
        [*args, "1" if full else "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    peak = [0.0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], _pss_mb(proc.pid))
            time.sleep(0.25)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, err = proc.communicate(timeout=3600)
    th.join()
    try:
        res = json.loads(out.strip().splitlines()[-1])
    except Exception:  # benchmarks never fail
        print(f"  {lib} failed (exit {proc.returncode}): {err.strip()[-800:]}")
        return None
    return {**res, "peak_mb": peak[0]}


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--path", default="/tmp/fashion-pets")
    ap.add_argument("--n", type=int, default=2048, help="images used (90%% go to the training loader)")
    ap.add_argument("--bs", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3, help="the cold epoch plus the steady-state ones")
    ap.add_argument("--only", choices=["item", "full"], default=None)
    ap.add_argument("--fastai-python", default=str(Path.home() / "fastai-env" / "bin" / "python"))
    a = ap.parse_args()
    n_files = len(list(Path(a.path).glob("*.jpg")))
    if n_files == 0:
        print(f"No images in {a.path}: run `fastvision make-fashion-pets {a.path} --n {a.n}`")
        return
    libs = [("fastvision", sys.executable)]
    if Path(a.fastai_python).exists():
        libs.append(("fastai", a.fastai_python))
    else:
        print(f"fastai not measured: {a.fastai_python} does not exist (see the module docstring)")
    print(
        f"machine: {os.cpu_count()} CPUs, python {sys.version.split()[0]}; {min(a.n, n_files)} images, "
        f"bs {a.bs}, {a.workers} workers, {a.epochs} epochs per run, median of {a.reps} runs"
    )
    pipelines = [
        ("(a) item pipeline, Resize(460)", False),
        ("(b) presizing, Resize(460)+aug_transforms(224)", True),
    ]
    results = {}
    for name, full in pipelines:
        if a.only and a.only != ("full" if full else "item"):
            continue
        print(name, "(each run as it ends, then the medians)", flush=True)
        runs: dict[str, list[dict]] = {lib: [] for lib, _ in libs}
        for _ in range(a.reps):  # alternate, so both libraries see the same machine load
            for lib, py in libs:
                r = run(py, lib, a, full)
                if r is not None:
                    runs[lib].append(r)
                    steady = med(r["epochs"][1:]) if len(r["epochs"]) > 1 else float("nan")
                    print(
                        f"  run: {lib:10s} cold {r['cold']:7.1f} img/s | steady {steady:7.1f} img/s | "
                        f"peak PSS {r['peak_mb']:6.0f} MB",
                        flush=True,
                    )
        summary = {}
        for lib, rs in runs.items():
            summary[lib] = {
                "cold": med([r["cold"] for r in rs]),
                "steady": med([med(r["epochs"][1:]) for r in rs if len(r["epochs"]) > 1]),
                "build_s": med([r["build_s"] for r in rs]),
                "peak_mb": med([r["peak_mb"] for r in rs]),
            }
        results[name] = summary
        print(name, flush=True)
        for lib, s in summary.items():
            print(
                f"  {lib:10s} cold {s['cold']:7.1f} img/s | steady {s['steady']:7.1f} img/s | "
                f"dataloaders() {s['build_s']:6.2f} s | peak PSS {s['peak_mb']:6.0f} MB"
            )
        if "fastai" in summary:
            fv, fa = summary["fastvision"], summary["fastai"]
            print(
                f"  ratio      cold {fv['cold'] / fa['cold']:.2f}x | steady {fv['steady'] / fa['steady']:.2f}x | "
                f"peak memory {fv['peak_mb'] / fa['peak_mb']:.2f}x fastai's"
            )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
