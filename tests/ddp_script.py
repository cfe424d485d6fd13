"""One training script for tests/test_distributed.py: run unchanged in one process and under torchrun.

`python tests/ddp_script.py OUT BS` or `torchrun --nproc_per_node=2 tests/ddp_script.py OUT BS`: lr_find
(DDP detected automatically), fit_one_cycle inside `learn.distrib_ctx()` with SaveModelCallback and
CSVLogger, save/load, export, get_preds. Each rank writes OUT/result_<rank>.json with the recorded values
and the files it wrote (every `os.replace` and `Path.open` for writing is recorded).
`... OUT 8 checkpoints` trains shuffled with a checkpoint every batch, `... OUT 8 FILE` resumes from FILE;
both write each rank's final weights to OUT/final_<rank>.pt.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import sys
from collections.abc import Iterator

import torch
from torch import nn
from torch.utils.data import TensorDataset


class TinyNet(nn.Module):
    """Two linear layers (no BatchNorm or dropout, so DDP over 2 x bs equals one process with bs)."""

    def __init__(self, n_in: int = 16, n_out: int = 3) -> None:
        super().__init__()
        self.init_kwargs = {"n_in": n_in, "n_out": n_out}
        self.lin1, self.lin2 = nn.Linear(n_in, 32), nn.Linear(32, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Flatten, then linear, relu, linear."""
        return self.lin2(torch.relu(self.lin1(x.flatten(1))))


@contextlib.contextmanager
def recorded_writes() -> Iterator[list[str]]:
    """Record the files written through `os.replace` (atomic saves) and `Path.open` (CSV, JSON)."""
    writes: list[str] = []
    replace, open_ = os.replace, pathlib.Path.open

    def rec_replace(a, b, *args, **kwargs):  # noqa: ANN001, ANN202
        writes.append(str(b))
        return replace(a, b, *args, **kwargs)

    def rec_open(self, mode="r", *args, **kwargs):  # noqa: ANN001, ANN202
        if any(c in mode for c in "wax+"):
            writes.append(str(self))
        return open_(self, mode, *args, **kwargs)

    os.replace, pathlib.Path.open = rec_replace, rec_open
    try:
        yield writes
    finally:
        os.replace, pathlib.Path.open = replace, open_


def _probe(seen: list) -> object:
    """A callback recording, after each training phase, the model's type and the batches this process ran."""
    from fastvision.callback.core import Callback

    class Probe(Callback):
        def after_train(self) -> None:
            seen.append([type(self.learn.model).__name__, self.learn.n_iter])

    return Probe()


def make_learner(out: str, bs: int, shuffle: bool = False) -> object:
    """The tiny learner: 64 training items (no shuffle by default), 31 validation items (uneven shards)."""
    from fastvision.data.load import DataLoader, DataLoaders
    from fastvision.learner import Learner
    from fastvision.metrics import F1Score, accuracy
    from fastvision.testing import make_tensor_data

    if __name__ == "__main__":
        from ddp_script import TinyNet as Net  # importable by name, so export can describe it
    else:
        Net = TinyNet
    torch.manual_seed(0)
    x, y = make_tensor_data(95, 3, size=4, seed=1)
    kw = dict(num_workers=0, device="cpu")
    train = DataLoader(TensorDataset(x[:64], y[:64]), bs=bs, shuffle=shuffle, drop_last=True, seed=0, **kw)
    valid = DataLoader(TensorDataset(x[64:], y[64:]), bs=bs, **kw)
    return Learner(
        DataLoaders(train, valid, path=out),
        Net(),
        loss_func=nn.CrossEntropyLoss(),
        metrics=[accuracy, F1Score(average="macro")],
        lr=1e-2,
    )


def resume_main(out: str, resume: str | None) -> None:
    """Shuffled DDP training with a checkpoint every batch (or resumed from `resume`); weights to OUT/final_<rank>.pt."""
    from fastvision.callback.resume import ResumableCheckpoint
    from fastvision.distributed import rank_distrib

    learn = make_learner(out, 8, shuffle=True)
    if resume:
        learn.model.lin1.weight.data.add_(1)  # every weight must come from the checkpoint
    learn.fit_one_cycle(3, 1e-2, cbs=ResumableCheckpoint(every_n_iters=1, keep_last=None), resume=resume)
    torch.save(learn.model.state_dict(), os.path.join(out, f"final_{rank_distrib()}.pt"))


def main(out: str, bs: int) -> dict:
    """Train, save, export; return (and write) this rank's results."""
    from fastvision.callback.loggers import CSVLogger
    from fastvision.callback.tracker import SaveModelCallback
    from fastvision.distributed import num_distrib, rank_distrib

    learn = make_learner(out, bs)
    with recorded_writes() as writes:
        sugg = learn.lr_find(num_it=10, show_plot=False)
        with learn.distrib_ctx(sync_bn=True):
            seen: list = []
            learn.fit_one_cycle(2, 1e-2, cbs=[SaveModelCallback(), CSVLogger(), _probe(seen)])
        learn.save("final")
        learn.load("final")
        exported = learn.export("export")
        preds, targs = learn.get_preds()
    learn.splitter = lambda m: [list(m.lin1.parameters()), list(m.lin2.parameters())]
    learn.create_opt()
    with learn.no_logging():
        learn.fine_tune(1, freeze_epochs=1)  # freeze, fit (DDP over the head), unfreeze, fit (all)
    rank = rank_distrib()
    res = {
        "rank": rank,
        "world": num_distrib(),
        "values": learn.recorder.values,
        "lrs": learn.recorder.lrs,
        "valley": float(sugg.valley),
        "n_preds": len(preds),
        "accuracy": float((preds.argmax(1) == targs).float().mean()),
        "exported": str(exported),
        "model": type(learn.model).__name__,
        "in_fit": seen,
        "fine_tuned": [p.detach().sum().item() for p in learn.model.parameters()],
        "writes": writes,
    }
    with open(os.path.join(out, f"result_{rank}.json"), "w") as f:
        json.dump(res, f)
    return res


if __name__ == "__main__":
    torch.set_num_threads(1)
    if len(sys.argv) > 3:  # OUT BS checkpoints|RESUME_FILE
        resume_main(sys.argv[1], None if sys.argv[3] == "checkpoints" else sys.argv[3])
    else:
        main(sys.argv[1], int(sys.argv[2]))
