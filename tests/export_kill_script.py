"""Export a tiny model, then re-export it and SIGKILL this process at the K-th file-system step.

`python tests/export_kill_script.py OUT K`: writes the good export OUT/model (weights all 1.0), sets the
weights to 2.0 and re-exports, killing itself just before the K-th `os.replace`/`os.unlink` call of
that re-export (K=0: never). Used by tests/test_export.py to check that a killed re-export always
leaves a loadable export, the old one or the new one.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

from fastvision.data.load import DataLoaders
from fastvision.export import export
from fastvision.learner import Learner
from fastvision.testing import make_tensor_data


def make_learner(path: str, value: float) -> Learner:
    """A Linear model on 1 x 4 x 4 tensors whose weights all equal `value`."""
    x, y = make_tensor_data(16, 2, size=4)
    ds = TensorDataset(x, y)
    dls = DataLoaders.from_dsets(ds, ds, bs=4, num_workers=0, device="cpu", path=path)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)
    return Learner(dls, model, loss_func=nn.CrossEntropyLoss())


def main(out: str, k: int) -> None:
    """Export, then re-export and die at step `k`."""
    learn = make_learner(out, 1.0)
    export(learn, "model")
    with torch.no_grad():
        for p in learn.model.parameters():
            p.fill_(2.0)
    calls = 0

    def killing(f: Any) -> Any:
        def step(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == k:
                os.kill(os.getpid(), signal.SIGKILL)
            return f(*args, **kwargs)

        return step

    os.replace, os.unlink = killing(os.replace), killing(os.unlink)
    export(learn, "model")
    print("steps", calls)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
