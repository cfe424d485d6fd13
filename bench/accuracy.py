"""Fashion-MNIST accuracy in a fixed training-time budget: fastvision's demo recipe vs fastai 2.8.12.

Same data (the real Fashion-MNIST IDX files; the same `n_valid` training images, drawn with the same
seed, held out for validation; the test set evaluated once, after training), same model (the demo's
`resnet_small(n_in=1, widths, depth, stem_stride, img_size)`, re-declared in plain PyTorch inside the fastai
script), same batch size, same augmentation (the demo's `aug`, one `aug_transforms` call in each library),
the same whitened, frozen stem (`whiten_conv_`, re-written in the script), the same hard-example sampling (`HardExampleSampling`'s draw, re-written as a fastai callback), same
loss (label smoothing as the demo's), same optimiser settings (the demo's `opt`: AdamW-style Adam with
one-cycle, or ranger with `fit_flat_cos`; the demo's wd, pct_start and lr), same test-time
augmentation (flips and 1-pixel shifts, weighted as the demo's), same time budget: each fit runs for `--budget` seconds with its schedule spread over that
time (fastvision's `TimeBudget`, re-written as a fastai callback), so each library trains as many batches
as its speed allows.
The recipe is read from `run_demo`'s defaults, so the two stay in step with `fastvision demo`.
fastai runs in `~/fastai-env`:
`python -m venv ~/fastai-env && ~/fastai-env/bin/pip install torch==2.14.1 torchvision==0.29.1 fastai==2.8.12`.

    python bench/accuracy.py [--budget 590] [--lr LR]

Both libraries print their per-epoch table, and each its peak resident memory (the process's own high-water
mark, `VmHWM`: fastvision's read in this process after its run, fastai's in its own process; neither uses
loader workers). Without `--lr`, fastvision picks lr_max with the demo's rule
(lr_find) and fastai trains at the same value.
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import subprocess
import time
from pathlib import Path

FASTAI = r"""
import gzip, json, math, sys, time, numpy as np, torch
from functools import partial
from torch import nn
from fastai.vision.all import *
budget, lr, cfg = float(sys.argv[1]), float(sys.argv[2]), json.loads(sys.argv[3])
def peak_rss():  # as fastvision.memory.peak_rss on Linux: this program's own peak resident set (VmHWM), bytes
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:"))
bs, n_valid, eps, tta = cfg["bs"], cfg["n_valid"], cfg["label_smoothing"], cfg["tta"]
def read_idx(p):
    d = gzip.open(p).read(); nd = d[3]
    dims = [int.from_bytes(d[4+4*i:8+4*i], "big") for i in range(nd)]
    return np.frombuffer(d, np.uint8, offset=4+4*nd).reshape(dims)
S = "/usr/share/datasets/fashion-mnist/"
def xy(pre):
    x = torch.from_numpy(read_idx(S + pre + "-images-idx3-ubyte.gz").copy())[:, None]
    return x, torch.from_numpy(read_idx(S + pre + "-labels-idx1-ubyte.gz").astype(np.int64))
def ds(x, y): return [(TensorImage(a), TensorCategory(b)) for a, b in zip(x, y)]
x, y = xy("train")
perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(cfg["seed"]))  # as fashion_mnist_dls
held, rest = perm[:n_valid].sort().values, perm[n_valid:].sort().values
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
layers, ni = [conv_bn(1, cfg["widths"][0], cfg["stem_stride"])], cfg["widths"][0]
depths = cfg["depth"] if isinstance(cfg["depth"], list) else [cfg["depth"]] * len(cfg["widths"])
for i, (nf, d) in enumerate(zip(cfg["widths"], depths)):  # a first stage of depth 0 is empty
    layers.append(nn.Sequential(*[Res(ni if j == 0 else nf, nf, 2 if i > 0 and j == 0 else 1) for j in range(d)]))
    ni = nf
side = 4 if cfg["flat_head"] else 1  # the demo's flat head sees the whole 4 x 4 map of a 28 px image
pool = nn.Identity() if cfg["flat_head"] else nn.AdaptiveAvgPool2d(1)
model = nn.Sequential(*layers, pool, nn.Flatten(), nn.Linear(ni * side * side, 10))
if cfg["whiten"]:  # the demo's whiten_conv_: the stem's filters are the top components of 3x3 patches, frozen
    xs = (x[rest][:cfg["whiten_sample"]].double() / 255 - 0.2860) / 0.3530
    patches = torch.nn.functional.unfold(xs, 3).transpose(1, 2).reshape(-1, 9)
    ev, vec = torch.linalg.eigh(torch.cov(patches.T, correction=0))
    k = cfg["widths"][0] // 2; ev, vec = ev.flip(0)[:k].clamp(min=0), vec.flip(1)[:, :k]
    w = (vec / (ev + 5e-4).sqrt()).T.reshape(k, 1, 3, 3)
    with torch.no_grad(): layers[0][0].weight.copy_(torch.cat([w, -w]).float())
    layers[0][0].weight.requires_grad_(False)  # fastai's default splitter leaves it out of the optimizer
model = model.to(memory_format=torch.channels_last)
rz = cfg["aug_geometry"]  # the demo's (max_rotate, max_zoom), or None for no augmentation
augs = [] if rz is None else aug_transforms(max_rotate=rz[0], max_zoom=rz[1], max_warp=0.0, max_lighting=0.0,
                                            pad_mode="zeros")
tfms = [IntToFloatTensor(), *augs, Normalize.from_stats([0.2860], [0.3530], cuda=False)]
dls = DataLoaders.from_dsets(ds(x[rest], y[rest]), ds(x[held], y[held]), bs=bs, after_batch=tfms,
                             num_workers=0, device="cpu")
loss = LabelSmoothingCrossEntropyFlat(eps=eps) if eps else CrossEntropyLossFlat()
learn = Learner(dls, model, loss_func=loss, metrics=accuracy, wd=cfg["wd"])
class Hard(Callback):  # fastvision's HardExampleSampling: `keep` of the items per epoch, weight rank(loss)**beta
    def __init__(self, keep, beta): self.keep, self.beta, self.g = keep, beta, torch.Generator().manual_seed(1)
    def before_fit(self):
        dl = self.dls.train
        self.n = len(dl.dataset); self.k = round(self.n * self.keep); self.old_n = dl.n
        self.losses = torch.full((self.n,), float("inf"))
        dl.n, dl.get_idxs = self.k, self.get_idxs  # fastai batches get_idxs() in order (num_workers=0)
    def get_idxs(self):
        rank = torch.ones(self.n); seen = self.losses.isfinite().nonzero().squeeze(1)
        order = seen[self.losses[seen].argsort()]
        rank[order] = torch.arange(1, len(order) + 1, dtype=torch.float) / self.n
        idx = torch.multinomial(rank ** self.beta, self.k, replacement=False, generator=self.g)
        self.idx, self.b = idx[torch.randperm(self.k, generator=self.g)].tolist(), 0
        return self.idx
    def after_loss(self):
        if not self.training: return
        bs = self.dls.train.bs; ids = self.idx[self.b * bs:(self.b + 1) * bs]; self.b += 1
        old, self.learn.loss_func.reduction = self.learn.loss_func.reduction, "none"
        with torch.no_grad(): l = self.learn.loss_func(self.pred, *self.yb)
        self.learn.loss_func.reduction = old
        if len(ids) == len(l): self.losses[ids] = l.float()
    def after_fit(self):
        self.dls.train.n = self.old_n; del self.dls.train.get_idxs
class Budget(Callback):  # fastvision's TimeBudget: one-cycle spread over `seconds`, the fit ends within them
    order = -5
    def __init__(self, seconds): self.seconds = seconds
    def before_fit(self): self.t0, self.tb, self.tv, self.stop, self.n = time.perf_counter(), 0.0, 0.0, False, 0
    def before_train(self): self.last = None
    def before_batch(self):
        if not self.training: return
        now = time.perf_counter()
        if self.last is not None: self.tb = now - self.last
        self.last = now
        if self.n and now - self.t0 + self.tb + self.tv >= self.seconds: self.stop = True; raise CancelTrainException()
        self.n += 1; self.learn.pct_train = min((now - self.t0) / self.seconds, 1.0)
    def after_train(self): self.learn.recorder.cancel_train = False  # keep the cut epoch's train_loss in the table
    def before_validate(self): self.v0 = time.perf_counter()
    def after_validate(self):
        now = time.perf_counter(); self.tv = now - self.v0
        if now - self.t0 + self.tb + self.tv >= self.seconds: self.stop = True
    def before_epoch(self):
        if self.stop: raise CancelFitException()
class T(Callback):
    def before_fit(self): self.st = []
    def after_batch(self):
        if self.training: self.st.append(time.perf_counter())
        if self.training and len(self.st) >= 40: raise CancelFitException()
sd = {k: v.clone() for k, v in model.state_dict().items()}
t = T()
with learn.no_bar(): learn.fit(1, 1e-4, cbs=t)
model.load_state_dict(sd)  # timing only: start from the same weights
d = sorted(b - a for a, b in zip(t.st[5:], t.st[6:])); tb = d[len(d)//4]  # as the demo: first quartile
keep = cfg["hard_keep"]
per_epoch = tb * (math.ceil(len(dls.train) * keep) + 0.35 * len(dls.valid))
epochs = math.ceil(4 * budget / per_epoch) + 10  # an upper bound: Budget ends the fit
ranger_ = cfg["opt"] == "ranger"
print(f"fastai: {tb * 1e3:.0f} ms per batch on its first batches: {budget:.0f} s (about {budget / per_epoch:.0f} "
      f"epochs) of {'ranger, flat then cosine, at lr' if ranger_ else 'one-cycle at lr_max'} {lr:.2e}", flush=True)
opt_func = partial(ranger, mom=0.9, eps=1e-5) if ranger_ else Adam
learn = Learner(dls, model, loss_func=loss, opt_func=opt_func, metrics=accuracy, wd=cfg["wd"])
hard = [Hard(keep, cfg["hard_beta"])] if keep < 1 else []
fit = learn.fit_flat_cos if ranger_ else learn.fit_one_cycle
t0 = time.time(); fit(epochs, lr, pct_start=cfg["pct_start"], cbs=[*hard, Budget(budget)]); tt = time.time() - t0
epochs = len(learn.recorder.values)
valid_acc = float(learn.validate()[1])
xt, yt = xy("t10k")
class Valid(list): split_idx = 1  # else `new` on a plain list would apply the training augmentation
test_dl = dls.valid.new(Valid(ds(xt, yt)))
def shifted(x, dx, dy):  # the demo's ShiftInputs: move by (dx, dy) pixels, the uncovered border black
    h, w = x.shape[-2:]; p = torch.nn.functional.pad(x, (1, 1, 1, 1), value=(0 - 0.2860) / 0.3530)
    return p[..., 1 - dy : 1 - dy + h, 1 - dx : 1 - dx + w].contiguous(memory_format=torch.channels_last)
model.eval(); hits = hits_plain = hits_flip = 0
with torch.no_grad():
    for xb, yb in test_dl:
        p = model(xb).softmax(1); hits_plain += int((p.argmax(1) == yb).sum())
        if tta:  # the demo's TTA: the flip average (1/2) and the mean of 8 one-pixel shifts of both (1/2)
            p = (p + model(xb.flip(-1)).softmax(1)) / 2; hits_flip += int((p.argmax(1) == yb).sum())
            views = [shifted(v, dx, dy) for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)) for v in (xb, xb.flip(-1))]
            p = (p + torch.stack([model(v).softmax(1) for v in views]).mean(0)) / 2
        hits += int((p.argmax(1) == yb).sum())
print(json.dumps({"epochs": epochs, "train_time": tt, "valid_accuracy": valid_acc, "accuracy": hits / len(yt),
                  "accuracy_no_tta": hits_plain / len(yt), "accuracy_flip_tta": hits_flip / len(yt),
                  "peak_rss": peak_rss()}))
"""


TABLE = re.compile(r"(epoch\s+train_loss|\d+\s+[-\d.]+\s)")


def recipe() -> dict:
    """Return the demo's recipe: `run_demo`'s defaults that the fastai script needs."""
    from fastvision.callback.hard import HardExampleSampling
    from fastvision.demo import AUGS, OPTIMIZERS, WHITEN_SAMPLE, run_demo

    names = "bs seed n_valid label_smoothing tta widths depth stem_stride flat_head aug wd hard_keep ema opt pct_start whiten".split()
    ps = inspect.signature(run_demo).parameters
    cfg = {k: ps[k].default for k in names}
    cfg["aug_geometry"] = AUGS[cfg["aug"]]
    if cfg["pct_start"] is None:  # the default of the demo's fit policy for its optimizer
        cfg["pct_start"] = OPTIMIZERS[cfg["opt"]][2]
    cfg["whiten_sample"] = WHITEN_SAMPLE
    cfg["hard_beta"] = inspect.signature(HardExampleSampling).parameters["beta"].default
    if cfg.pop("ema"):
        raise NotImplementedError("the fastai script has no weight EMA; add one to compare with it.")
    depth = cfg["depth"] if isinstance(cfg["depth"], int) else list(cfg["depth"])
    return {**cfg, "widths": list(cfg["widths"]), "depth": depth}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=590.0, help="training seconds for each library (590)")
    ap.add_argument(
        "--lr",
        type=float,
        default=None,
        help="one-cycle lr_max for both (default: the one the demo's rule picks)",
    )
    a = ap.parse_args()
    from fastvision.demo import run_demo
    from fastvision.memory import format_bytes

    cfg = recipe()
    print(f"recipe: {cfg}", flush=True)
    t = time.time()
    ours = run_demo(budget=a.budget, out="/tmp/bench-accuracy", lr_max=a.lr)
    print(f"fastvision: test {ours['accuracy']:.4f} (validation {ours['valid_accuracy']:.4f}) in "
          f"{ours['train_time']:.0f} s ({ours['epochs']} epochs; {time.time() - t:.0f} s in all); "
          f"peak memory {format_bytes(ours['peak_rss'])}", flush=True)  # fmt: skip
    fa = Path.home() / "fastai-env" / "bin" / "python"
    if not fa.exists():
        print("fastai: ~/fastai-env missing; see this script's docstring to create it")
        return
    lr = ours["lr_max"]
    args = [str(fa), "-c", FASTAI, str(a.budget), str(lr), json.dumps(cfg)]
    lines = []
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        for line in proc.stdout:  # fastai's per-epoch table, as it trains; the last line is the JSON
            lines.append(line)
            own = line.find("fastai: ")  # may follow a progress bar on the same line
            if own >= 0 or TABLE.match(line):  # the table and our own lines, not the bar's redraws
                print(line[max(own, 0) :].rstrip(), flush=True)
        err = proc.stderr.read()
    if proc.returncode != 0:
        print("fastai failed:", err[-2000:])
        return
    theirs = json.loads(lines[-1])
    print(
        f"fastai 2.8.12: test {theirs['accuracy']:.4f} with the demo's TTA ({theirs['accuracy_flip_tta']:.4f} with "
        f"flips only, {theirs['accuracy_no_tta']:.4f} without), "
        f"validation {theirs['valid_accuracy']:.4f}, in {theirs['train_time']:.0f} s ({theirs['epochs']} epochs); "
        f"peak memory {format_bytes(theirs['peak_rss'])}"
    )
    print(f"same budget ({a.budget:.0f} s), lr_max {lr:.2e}: test accuracy {ours['accuracy']:.4f} vs "
          f"{theirs['accuracy']:.4f}, epochs {ours['epochs']} vs {theirs['epochs']}, peak memory "
          f"{format_bytes(ours['peak_rss'])} vs {format_bytes(theirs['peak_rss'])} (resident set of each process)")  # fmt: skip


if __name__ == "__main__":
    main()
