"""A tiny deterministic training run, used by tests/test_resume.py in this process and in subprocesses.

`python tests/resume_script.py OUT MODE`: MODE 'full' trains 3 epochs with a checkpoint every batch,
'slow' does the same but sleeps after each batch (so a test can SIGKILL it part-way), 'resume'
continues from the newest checkpoint in OUT/models, 'save_killed' saves a good checkpoint and then
starts a second save that writes slowly (so a test can SIGKILL it mid-write). Final weights go to
OUT/final.pt.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

from fastvision.callback.core import Callback
from fastvision.callback.resume import ResumableCheckpoint
from fastvision.data.load import DataLoader, DataLoaders
from fastvision.learner import Learner
from fastvision.metrics import accuracy
from fastvision.testing import make_tensor_data

N_EPOCH, LR = 3, 1e-2


def noise(x: torch.Tensor) -> torch.Tensor:
    """A random batch transform (uses the loader's RNG stream, or torch's global one when unseeded)."""
    return x + 0.01 * torch.randn_like(x) if x.is_floating_point() else x


def make_learner(path: str | Path, seed: int = 0) -> Learner:
    """8 training batches of 8 per epoch, with shuffling, a random transform and dropout."""
    torch.manual_seed(seed)
    x, y = make_tensor_data(80, 3, size=4, seed=1)
    kw = dict(num_workers=0, device="cpu", after_batch=[noise])
    train = DataLoader(TensorDataset(x[:64], y[:64]), bs=8, shuffle=True, drop_last=True, seed=3, **kw)
    valid = DataLoader(TensorDataset(x[64:], y[64:]), bs=8, **kw)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 3))
    return Learner(
        DataLoaders(train, valid, path=path), model, loss_func=nn.CrossEntropyLoss(), metrics=accuracy
    )


class Sleep(Callback):
    """Sleep after each training batch."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def after_batch(self) -> None:
        """Sleep."""
        if self.learn.training:
            time.sleep(self.seconds)


def _slow_save(obj: object, f: object, *args: object, **kwargs: object) -> None:
    f.write(b"\0" * 1_000_000)  # type: ignore[attr-defined]
    f.flush()  # type: ignore[attr-defined]
    print("WRITING", flush=True)
    time.sleep(60)


def main(out: str, mode: str) -> None:
    """Run one MODE (see the module docstring)."""
    torch.set_num_threads(1)
    learn = make_learner(out, seed=1 if mode == "resume" else 0)  # resumed: every weight from the file
    if mode == "save_killed":
        learn.save("ck")
        torch.save(learn.model.state_dict(), Path(out) / "good.pt")
        torch.save = _slow_save  # the next atomic_save writes slowly and never finishes
        learn.model[1].weight.data.zero_()
        learn.save("ck")
        return
    ckpt = ResumableCheckpoint(every_n_iters=1, keep_last=None)
    cbs = [ckpt, Sleep(0.15)] if mode == "slow" else [ckpt]
    learn.fit_one_cycle(N_EPOCH, LR, cbs=cbs, resume=True if mode == "resume" else None)
    torch.save(learn.model.state_dict(), Path(out) / "final.pt")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
