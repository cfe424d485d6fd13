"""Fashion-MNIST accuracy in a fixed training-time budget: fastvision's demo recipe vs fastai 2.8.12.

Same data (the real Fashion-MNIST IDX files, test set as validation), same model (the demo's
`resnet_small(n_in=1, widths=(32, 64, 128), stem_stride=2)`, re-declared in plain PyTorch inside the
fastai script), same batch size, same augmentation (flip, rotate 5, zoom 1.15, one `aug_transforms` call
in each library), same optimiser settings (AdamW-style Adam, wd 0.05, one-cycle at the same lr_max),
same rule for the epoch count: as many epochs as fit the budget at the per-batch time each library
measures on its own first batches. fastai runs in `~/fastai-env`:
`python -m venv ~/fastai-env && ~/fastai-env/bin/pip install torch==2.14.1 torchvision==0.29.1 fastai==2.8.12`.

    python bench/accuracy.py [--budget 540] [--lr 5.4e-3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

FASTAI = r"""
import gzip, json, sys, time, numpy as np, torch
from torch import nn
from fastai.vision.all import *
budget, lr, bs = float(sys.argv[1]), float(sys.argv[2]), 256
def read_idx(p):
    d = gzip.open(p).read(); nd = d[3]
    dims = [int.from_bytes(d[4+4*i:8+4*i], "big") for i in range(nd)]
    return np.frombuffer(d, np.uint8, offset=4+4*nd).reshape(dims)
S = "/usr/share/datasets/fashion-mnist/"
def ds(pre):
    x = torch.from_numpy(read_idx(S + pre + "-images-idx3-ubyte.gz").copy())[:, None]
    y = torch.from_numpy(read_idx(S + pre + "-labels-idx1-ubyte.gz").astype(np.int64))
    return [(TensorImage(a), TensorCategory(b)) for a, b in zip(x, y)]
def conv_bn(ni, nf, stride=1, relu=True, zero=False):
    bn = nn.BatchNorm2d(nf)
    if zero: nn.init.zeros_(bn.weight)
    return nn.Sequential(nn.Conv2d(ni, nf, 3, stride, 1, bias=False), bn, *([nn.ReLU(inplace=True)] if relu else []))
class Res(nn.Module):
    def __init__(s, ni, nf, stride):
        super().__init__()
        s.convs = nn.Sequential(conv_bn(ni, nf, stride), conv_bn(nf, nf, relu=False, zero=True))
        sc = [nn.AvgPool2d(2, ceil_mode=True)] if stride != 1 else []
        if ni != nf: sc += [nn.Conv2d(ni, nf, 1, bias=False), nn.BatchNorm2d(nf)]
        s.shortcut = nn.Sequential(*sc); s.act = nn.ReLU(inplace=True)
    def forward(s, x): return s.act(s.convs(x) + s.shortcut(x))
model = nn.Sequential(conv_bn(1, 32, 2), nn.Sequential(Res(32, 32, 1)), nn.Sequential(Res(32, 64, 2)),
                      nn.Sequential(Res(64, 128, 2)), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10))
model = model.to(memory_format=torch.channels_last)
tfms = [IntToFloatTensor(), *aug_transforms(max_rotate=5.0, max_zoom=1.15, max_warp=0.0, max_lighting=0.0,
        pad_mode="zeros"), Normalize.from_stats([0.2860], [0.3530], cuda=False)]
dls = DataLoaders.from_dsets(ds("train"), ds("t10k"), bs=bs, after_batch=tfms, num_workers=0, device="cpu")
learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(), metrics=accuracy, wd=0.05)
class T(Callback):
    def before_fit(self): self.st = []
    def after_batch(self):
        if self.training: self.st.append(time.perf_counter())
        if self.training and len(self.st) >= 40: raise CancelFitException()
sd = {k: v.clone() for k, v in model.state_dict().items()}
t = T(); learn.fit(1, 1e-4, cbs=t); model.load_state_dict(sd)  # timing only: start from the same weights
d = sorted(b - a for a, b in zip(t.st[5:], t.st[6:])); tb = d[len(d)//2]
epochs = max(1, int(budget // (tb * (len(dls.train) + 0.35 * len(dls.valid)) * 1.1)))
learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(), metrics=accuracy, wd=0.05)
t0 = time.time(); learn.fit_one_cycle(epochs, lr); tt = time.time() - t0
loss, acc = learn.validate()
print(json.dumps({"epochs": epochs, "train_time": tt, "accuracy": float(acc)}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=540.0, help="training seconds for each library (540)")
    ap.add_argument("--lr", type=float, default=5.4e-3, help="one-cycle lr_max for both (5.4e-3)")
    a = ap.parse_args()
    from fastvision.demo import run_demo

    t = time.time()
    ours = run_demo(budget=a.budget, out="/tmp/bench-accuracy", lr_max=a.lr)
    print(f"fastvision: {ours['accuracy']:.4f} in {ours['train_time']:.0f} s ({ours['epochs']} epochs; "
          f"{time.time() - t:.0f} s in all)")  # fmt: skip
    fa = Path.home() / "fastai-env" / "bin" / "python"
    if not fa.exists():
        print("fastai: ~/fastai-env missing; see this script's docstring to create it")
        return
    out = subprocess.run([str(fa), "-c", FASTAI, str(a.budget), str(a.lr)], capture_output=True, text=True)
    if out.returncode != 0:
        print("fastai failed:", out.stderr[-2000:])
        return
    theirs = json.loads(out.stdout.strip().splitlines()[-1])
    print(
        f"fastai 2.8.12: {theirs['accuracy']:.4f} in {theirs['train_time']:.0f} s ({theirs['epochs']} epochs)"
    )
    print(f"same budget ({a.budget:.0f} s): accuracy {ours['accuracy']:.4f} vs {theirs['accuracy']:.4f}, "
          f"epochs {ours['epochs']} vs {theirs['epochs']}")  # fmt: skip


if __name__ == "__main__":
    main()
