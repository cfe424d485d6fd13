"""Loop overhead: `Learner.fit_one_cycle` against a hand-written PyTorch loop on real Fashion-MNIST.

Both train the same small CNN with AdamW (betas 0.9/0.99, eps 1e-5, wd 0.01) under a one-cycle
schedule (`torch.optim.lr_scheduler.OneCycleLR` in the hand loop) for one epoch, then validate on
the test set, from the same in-memory tensors (TensorDataset + torch DataLoader, num_workers=0),
same batch size and seed. Runs alternate (hand, learner, learner, hand, ...) in one process; the
script prints each time, the medians and the ratio (goal: <= 1.05x). A second part times a
near-empty training step, where the loop itself dominates, and reports the overhead per batch. A
third part ("tiny problems") times 1,000 full-batch epochs of a 2-16-1 MLP on 800 points with a test
pass each epoch (goal: Learner within 2x of the hand loop), where the fixed per-epoch cost dominates.

    python bench/overhead.py            # full: 60k train / 10k test images, 2 runs each
    python bench/overhead.py --quick    # 8k / 2k images
    python bench/overhead.py --only mlp # the tiny-problem workload alone
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import statistics
import struct
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fastvision.data.load import DataLoader as FVDataLoader
from fastvision.data.load import DataLoaders
from fastvision.learner import Learner
from fastvision.metrics import accuracy as fv_accuracy

FMNIST = Path("/usr/share/datasets/fashion-mnist")


def read_idx(path: Path) -> np.ndarray:
    """Read a gzipped IDX file: 2 zero bytes, a dtype code (0x08 = uint8), the number of dims, big-endian dims."""
    with gzip.open(path, "rb") as f:
        zero, dtype, ndim = struct.unpack(">HBB", f.read(4))
        if zero != 0 or dtype != 0x08:
            raise ValueError(f"{path} is not a uint8 IDX file (header {zero:#x} {dtype:#x}).")
        dims = struct.unpack(f">{ndim}I", f.read(4 * ndim))
        return np.frombuffer(f.read(), dtype=np.uint8).reshape(dims)


def load_fmnist(n_train: int | None, n_valid: int | None) -> tuple[torch.Tensor, ...]:
    x = torch.from_numpy(read_idx(FMNIST / "train-images-idx3-ubyte.gz")[:n_train].copy())
    y = torch.from_numpy(read_idx(FMNIST / "train-labels-idx1-ubyte.gz")[:n_train].astype(np.int64))
    xv = torch.from_numpy(read_idx(FMNIST / "t10k-images-idx3-ubyte.gz")[:n_valid].copy())
    yv = torch.from_numpy(read_idx(FMNIST / "t10k-labels-idx1-ubyte.gz")[:n_valid].astype(np.int64))

    def prep(a: torch.Tensor) -> torch.Tensor:
        return ((a.float() / 255 - 0.286) / 0.353)[:, None]

    return prep(x), y, prep(xv), yv


def make_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, 10),
    )


class DLs:
    def __init__(self, train: DataLoader, valid: DataLoader) -> None:
        self.train, self.valid = train, valid


def loaders(data: tuple[torch.Tensor, ...], bs: int) -> tuple[DataLoader, DataLoader]:
    x, y, xv, yv = data
    g = torch.Generator().manual_seed(0)
    return (
        DataLoader(TensorDataset(x, y), batch_size=bs, shuffle=True, generator=g),
        DataLoader(TensorDataset(xv, yv), batch_size=bs * 2),
    )


def run_hand(make_model, data, bs: int, lr: float, epochs: int) -> tuple[float, float]:
    """The plain loop: AdamW + OneCycleLR, running loss kept on the device, validation loss and accuracy."""
    torch.manual_seed(0)
    model = make_model()
    train_dl, valid_dl = loaders(data, bs)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt,
        max_lr=lr,
        total_steps=epochs * len(train_dl),
        pct_start=0.25,
        div_factor=25.0,
        final_div_factor=1e5 / 25,
    )
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        running = torch.zeros(())
        for xb, yb in train_dl:
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
            running = torch.lerp(loss.detach(), running, 0.98)
        model.eval()
        total, correct, n = torch.zeros(()), torch.zeros(()), 0
        with torch.no_grad():
            for xb, yb in valid_dl:
                out = model(xb)
                total += F.cross_entropy(out, yb) * len(yb)
                correct += (out.argmax(1) == yb).sum()
                n += len(yb)
        msg = f"train_loss {running.item():.4f} valid_loss {(total / n).item():.4f} acc {(correct / n).item():.4f}"
        print(f"  hand    {msg}")
    return time.perf_counter() - start, (correct / n).item()


def accuracy(pred: torch.Tensor, targ: torch.Tensor) -> torch.Tensor:
    return (pred.argmax(1) == targ).float().mean()


def run_learner(
    make_model, data, bs: int, lr: float, epochs: int, quiet: bool = False
) -> tuple[float, float]:
    """The same training through `Learner.fit_one_cycle` with the default callbacks and an accuracy metric."""
    torch.manual_seed(0)
    learn = Learner(DLs(*loaders(data, bs)), make_model(), loss_func=nn.CrossEntropyLoss(), metrics=accuracy)
    start = time.perf_counter()
    learn.fit_one_cycle(epochs, lr)
    return time.perf_counter() - start, learn.recorder.values[-1][-1]


def compare(make_model, data, bs: int, lr: float, repeats: int) -> tuple[float, float]:
    """Median times; the order alternates (hand, Learner, Learner, hand, ...) so load drift cancels out."""
    hand, learner = [], []
    for i in range(repeats):
        for kind in ("hand", "learner") if i % 2 == 0 else ("learner", "hand"):
            run = run_hand if kind == "hand" else run_learner
            t, acc = run(make_model, data, bs, lr, 1)
            (hand if kind == "hand" else learner).append(t)
            print(f"run {i + 1}: {kind:8} {t:7.2f}s (acc {acc:.3f})", flush=True)
    return statistics.median(hand), statistics.median(learner)


def loop_overhead(n_batches: int = 400, repeats: int = 7) -> tuple[float, float]:
    """Seconds per batch of a near-empty step (Linear(8, 2), bs 4, pre-made batches): hand loop vs Learner (min of runs)."""
    g = torch.Generator().manual_seed(0)
    batches = [
        (torch.randn(4, 8, generator=g), torch.randint(0, 2, (4,), generator=g)) for _ in range(n_batches)
    ]
    valid = batches[: n_batches // 8]

    def hand() -> float:
        model = nn.Linear(8, 2)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), eps=1e-5)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=n_batches)
        start = time.perf_counter()
        model.train()
        running = torch.zeros(())
        for xb, yb in batches:
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
            running = torch.lerp(loss.detach(), running, 0.98)
        model.eval()
        total = torch.zeros(())
        with torch.no_grad():
            for xb, yb in valid:
                total += F.cross_entropy(model(xb), yb) * len(yb)
        (total / (4 * len(valid))).item()
        return time.perf_counter() - start

    def learner() -> float:
        learn = Learner(DLs(batches, valid), nn.Linear(8, 2), loss_func=nn.CrossEntropyLoss())
        start = time.perf_counter()
        with learn.no_logging():
            learn.fit_one_cycle(1, 1e-3)
        return time.perf_counter() - start

    hands, learners = [], []
    for _ in range(repeats):
        hands.append(hand())
        learners.append(learner())
    n = n_batches + len(valid)
    return min(hands) / n, min(learners) / n


def moons(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two interleaved half circles with noise: `(n, 2)` points and `(n, 1)` float labels."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    t = torch.rand(n, generator=g) * torch.pi
    x = torch.stack([torch.cos(t) + y * 1.0, torch.sin(t) * (1 - 2 * y) + y * 0.5], 1)
    return x + 0.1 * torch.randn(n, 2, generator=g), y[:, None].float()


def make_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 1))


def mlp_opt(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """AdamW as the Learner's default builds it: fastai's betas/eps, no weight decay on biases."""
    decay = [p for n, p in model.named_parameters() if not n.endswith("bias")]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias")]
    groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.01)


def mlp_hand(data: tuple[torch.Tensor, ...], epochs: int, lr: float) -> tuple[float, float]:
    """Full-batch training, one test pass per epoch, each epoch's losses and accuracy read as floats."""
    x, y, xv, yv = data
    torch.manual_seed(0)
    model = make_mlp()
    opt = mlp_opt(model, lr)
    history = []
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        loss = F.binary_cross_entropy_with_logits(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        model.eval()
        with torch.no_grad():
            out = model(xv)
            valid_loss = F.binary_cross_entropy_with_logits(out, yv)
            acc = ((out > 0).float() == yv).float().mean()
        history.append((loss.item(), valid_loss.item(), acc.item()))
    return time.perf_counter() - start, history[-1][-1]


def mlp_learner(dls, epochs: int, lr: float) -> tuple[float, float]:
    """The same through `Learner.fit` with the default callbacks and `accuracy`; the table goes to a buffer."""
    torch.manual_seed(0)
    learn = Learner(dls, make_mlp(), loss_func=nn.BCEWithLogitsLoss(), metrics=fv_accuracy, lr=lr)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # a plain line per epoch (off a TTY), not shown
        learn.fit(epochs)
    return time.perf_counter() - start, learn.recorder.values[-1][-1]


def tiny_problem(epochs: int = 1000, repeats: int = 5, lr: float = 1e-2) -> None:
    """1,000 full-batch epochs of a 2-16-1 MLP on 800 points (200 test points): ms per epoch, medians.

    The Learner reads the same in-memory batch each epoch (`dls.train = [(x, y)]`, as the hand loop
    uses `x, y`); a third line uses fastvision `DataLoader`s over `TensorDataset`s (bs 800, no shuffle,
    main process; `epochs // 5` epochs, it is slow) to show what the loader adds per epoch.
    """
    x, y = moons(800, 0)
    xv, yv = moons(200, 1)
    data = (x, y, xv, yv)
    in_memory = DLs([(x, y)], [(xv, yv)])
    fv_dls = DataLoaders(
        FVDataLoader(TensorDataset(x, y), bs=800, num_workers=0, device="cpu"),
        FVDataLoader(TensorDataset(xv, yv), bs=800, num_workers=0, device="cpu"),
    )
    times: dict[str, list[float]] = {"hand": [], "learner": [], "learner+loader": []}
    accs: dict[str, float] = {}
    mlp_hand(data, 20, lr), mlp_learner(in_memory, 20, lr)  # warm up
    for i in range(repeats):
        kinds = ["hand", "learner", "learner+loader"]
        for kind in kinds if i % 2 == 0 else kinds[::-1]:
            n = epochs // 5 if kind == "learner+loader" else epochs
            if kind == "hand":
                t, acc = mlp_hand(data, n, lr)
            else:
                t, acc = mlp_learner(in_memory if kind == "learner" else fv_dls, n, lr)
            times[kind].append(t / n)
            accs[kind] = acc
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    print(f"MLP 2-16-1, 800 points, {epochs} full-batch epochs + test pass, median of {repeats}:")
    print(f"  hand loop {med['hand']:.3f} ms/epoch (acc {accs['hand']:.3f})")
    print(f"  Learner.fit {med['learner']:.3f} ms/epoch (acc {accs['learner']:.3f}), in-memory batch")
    print(
        f"  Learner.fit {med['learner+loader']:.3f} ms/epoch with fastvision DataLoaders over TensorDataset "
        f"({epochs // 5} epochs)"
    )
    print(
        f"MLP ratio: Learner {med['learner'] / med['hand']:.2f}x the hand loop (goal <= 2x); with the "
        f"fastvision loader {med['learner+loader'] / med['hand']:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="8k train / 2k test images")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each loop, alternating (2)")
    parser.add_argument("--bs", type=int, default=128, help="batch size (128)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument(
        "--only", choices=("all", "cnn", "step", "mlp"), default="all", help="run one part (all)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    # The first optimizer built in a process imports torch._dynamo (seconds): do it before timing.
    torch.optim.AdamW(nn.Linear(1, 1).parameters())
    if args.only == "mlp":
        return tiny_problem()
    if not (FMNIST / "train-images-idx3-ubyte.gz").exists():
        sys.exit(f"Fashion-MNIST not found in {FMNIST} (apt-get install dataset-fashion-mnist).")
    n_train, n_valid = (8000, 2000) if args.quick else (None, None)
    data = load_fmnist(n_train, n_valid)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {len(data[0])} train / {len(data[2])} test"
    )
    if args.only in ("all", "cnn"):
        print(f"CNN, AdamW one-cycle lr 3e-3, bs {args.bs}, 1 epoch, {args.repeats} runs each, alternating")
        h, le = compare(make_cnn, data, args.bs, 3e-3, args.repeats)
        print(f"CNN median: hand loop {h:.2f}s, Learner {le:.2f}s, ratio {le / h:.3f}x (goal <= 1.05x)")
    if args.only in ("all", "step"):
        hb, lb = loop_overhead()
        print(
            f"Loop-bound step (Linear(8, 2), bs 4, min of 7): hand {hb * 1e6:.0f} us/batch, Learner "
            f"{lb * 1e6:.0f} us/batch: Learner overhead {(lb - hb) * 1e6:.0f} us per batch"
        )
    if args.only in ("all", "mlp"):
        tiny_problem()


if __name__ == "__main__":
    main()
