"""DDP across processes (2 gloo processes on the CPU via torchrun), helpers, torch.compile and channels-last."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import ddp_script
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from fastvision.callback.core import Callback
from fastvision.callback.fp16 import ChannelsLast
from fastvision.checkpoint import unwrap_model
from fastvision.data.load import DataLoader, DataLoaders
from fastvision.distributed import (
    DistributedBatchSampler,
    DistributedTrainer,
    distrib_barrier,
    num_distrib,
    rank0_first,
    rank_distrib,
    sync_metric,
)
from fastvision.export import load_learner
from fastvision.learner import Learner
from fastvision.metrics import AvgMetric, accuracy
from fastvision.testing import make_image_folder, make_tensor_data

TORCHRUN = Path(sys.executable).with_name("torchrun")


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_helpers_in_one_process():
    assert (rank_distrib(), num_distrib()) == (0, 1)
    distrib_barrier()  # no process group: returns at once
    assert rank0_first(lambda a, b=0: a + b, 2, b=3) == 5
    m = AvgMetric(accuracy)
    m.total, m.count = torch.tensor(3.0), 4
    sync_metric(m)  # nothing to combine
    assert (float(m.total), m.count) == (3.0, 4)


@pytest.mark.parametrize("shuffle,pad,n", [(True, True, 21), (False, True, 20), (False, False, 21)])
def test_distributed_batch_sampler_shards(shuffle, pad, n):
    world = 3
    shards = [
        DistributedBatchSampler(n, 4, shuffle, False, seed=7, rank=r, world=world, pad=pad)
        for r in range(world)
    ]
    for s in shards:
        s.set_epoch(2)
    got = [[i for b in s for i in b] for s in shards]
    flat = sorted(i for g in got for i in g)
    if pad:  # every rank the same count, each item at least once
        assert len({len(g) for g in got}) == 1 and len({len(s) for s in shards}) == 1
        assert set(flat) == set(range(n)) and len(flat) == -(-n // world) * world
    else:  # an exact partition
        assert flat == list(range(n))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(9)) if shuffle else torch.arange(n)
    assert got[1][0] == int(order[1])  # rank r takes items r, r + world, ... of the epoch's permutation
    shards[0].set_epoch(3)
    assert ([i for b in shards[0] for i in b] != got[0]) == shuffle


def test_distrib_ctx_is_a_no_op_in_one_process(tmp_path):
    learn = ddp_learner(tmp_path)
    seen = []
    with learn.distrib_ctx():
        learn.fit(1, cbs=_Spy(seen))
    assert seen == [False] and type(learn.model) is ddp_script.TinyNet
    assert not any(isinstance(c, DistributedTrainer) for c in learn.cbs)


class _Spy(Callback):
    def __init__(self, seen):
        self.seen = seen

    def before_fit(self):
        self.seen.append(any(isinstance(c, DistributedTrainer) for c in self.learn.cbs))


def ddp_learner(path, bs=16):
    x, y = make_tensor_data(48, 3, size=4, seed=1)
    kw = dict(num_workers=0, device="cpu")
    dls = DataLoaders(
        DataLoader(TensorDataset(x[:32], y[:32]), bs=bs, shuffle=True, seed=0, **kw),
        DataLoader(TensorDataset(x[32:], y[32:]), bs=bs, **kw),
        path=path,
    )
    return Learner(dls, ddp_script.TinyNet(), loss_func=nn.CrossEntropyLoss(), metrics=accuracy)


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_and_only_rank0_writes(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    single = ddp_script.main(str(one), 16)  # one process, batches of 16
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node=2", ddp_script.__file__, str(two), "8"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = (json.loads((two / f"result_{r}.json").read_text()) for r in (0, 1))
    assert (r0["world"], r1["world"]) == (2, 2) and r0["model"] == r1["model"] == "TinyNet"
    assert r0["in_fit"] == r1["in_fit"] == [["DistributedDataParallel", 4]] * 2  # 64 items / 2 ranks / bs 8
    assert single["in_fit"] == [["TinyNet", 4]] * 2  # 64 items / bs 16
    # 2 processes x 8 = the same batches as 1 x 16: same table (global loss and metrics), same weights
    for row, ref in zip(r0["values"], single["values"]):
        assert row == pytest.approx(ref, rel=1e-4, abs=1e-6)
    assert r1["values"] == r0["values"] and r0["lrs"] == pytest.approx(single["lrs"])
    assert r0["valley"] == pytest.approx(single["valley"], rel=1e-3)
    a = torch.load(one / "models" / "final.pth")["model"]
    b = torch.load(two / "models" / "final.pth")["model"]
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert r0["fine_tuned"] == r1["fine_tuned"]  # fine_tune under DDP kept the processes in step
    assert r0["fine_tuned"] == pytest.approx(single["fine_tuned"], rel=1e-4, abs=1e-5)
    assert r0["n_preds"] == r1["n_preds"] == 31 and r0["accuracy"] == r1["accuracy"]
    # files: rank 0 wrote the checkpoints, the CSV log and the export; rank 1 wrote nothing
    assert r1["writes"] == []
    names = {Path(w).name for w in r0["writes"]}
    assert {"model.pth", "final.pth", "history.csv", "export.json"} <= names
    assert any(n.startswith("export.") and n.endswith(".safetensors") for n in names)
    assert load_learner(two / "export.json", trusted_modules=["ddp_script"]).model.lin1.weight.shape == (
        32,
        16,
    )
    # output: one header and one row per epoch (rank 1 printed nothing)
    lines = proc.stdout.splitlines()
    assert sum(line.startswith("epoch") for line in lines) == 1, proc.stdout
    assert sum(line.split()[:1] in (["0"], ["1"]) for line in lines) == 2, proc.stdout


@pytest.mark.slow
def test_two_process_resume_matches_the_uninterrupted_run(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
    for out, mode in (
        (tmp_path / "a", "checkpoints"),
        (tmp_path / "b", str(tmp_path / "a/models/resume_0000005.pth")),
    ):
        cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node=2", ddp_script.__file__, str(out), "8", mode]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert len(list((tmp_path / "a/models").glob("resume_*.pth"))) == 12  # 3 epochs x 64 / 2 ranks / bs 8
    assert len(list((tmp_path / "b/models").glob("resume_*.pth"))) == 7  # batches 6 to 12
    for r in (0, 1):
        a, b = torch.load(tmp_path / f"a/final_{r}.pt"), torch.load(tmp_path / f"b/final_{r}.pt")
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_compile_keeps_state_dict_keys_freezing_save_and_export(tmp_path):
    learn = ddp_learner(tmp_path)
    learn.splitter = lambda m: [list(m.lin1.parameters()), list(m.lin2.parameters())]
    learn.compile(backend="eager")
    learn.freeze()
    before = learn.model.lin1.weight.detach().clone()
    learn.fit(1)
    assert torch.equal(learn.model.lin1.weight, before)  # frozen body
    learn.unfreeze()
    learn.fit(1)
    assert not torch.equal(learn.model.lin1.weight, before)
    state = torch.load(learn.save("c"), weights_only=True)["model"]
    assert set(state) == {"lin1.weight", "lin1.bias", "lin2.weight", "lin2.bias"}
    learn.load("c")
    assert load_learner(learn.export("e"), trusted_modules=["ddp_script"]).model.lin1.weight.shape == (32, 16)


def test_load_strips_the_prefixes_of_wrapped_models_checkpoints(tmp_path):
    learn = ddp_learner(tmp_path)
    sd = {f"module._orig_mod.{k}": v + 1 for k, v in learn.model.state_dict().items()}
    (tmp_path / "models").mkdir()
    torch.save(sd, tmp_path / "models" / "old.pth")
    learn.load("old", with_opt=False)
    assert torch.equal(learn.model.lin1.bias, sd["module._orig_mod.lin1.bias"])
    assert unwrap_model(nn.DataParallel(torch.compile(learn.model, backend="eager"))) is learn.model


def test_a_compiled_module_saves_without_the_orig_mod_prefix(tmp_path):
    learn = ddp_learner(tmp_path)
    learn.model = torch.compile(learn.model, backend="eager")
    learn.fit(1)
    state = torch.load(learn.save("c"), weights_only=True)["model"]
    assert not any(k.startswith("_orig_mod.") for k in state)
    plain = ddp_learner(tmp_path)
    plain.load("c")
    assert torch.equal(plain.model.lin2.weight, unwrap_model(learn.model).lin2.weight)


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("gcc") is None and shutil.which("cc") is None, reason="inductor needs a C compiler"
)
def test_compile_with_inductor_trains(tmp_path):
    learn = ddp_learner(tmp_path)
    learn.compile()
    learn.fit(1)
    assert all(torch.isfinite(p).all() for p in learn.model.parameters())


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.conv(x).mean((2, 3)))


def test_to_channels_last(tmp_path):
    learn = ddp_learner(tmp_path)
    learn.model = ConvNet()
    learn.to_channels_last().to_channels_last()
    assert sum(isinstance(c, ChannelsLast) for c in learn.cbs) == 1
    learn.fit(1)
    assert learn.model.conv.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.slow
def test_cli_train_with_nproc_2_runs_under_torchrun(tmp_path):
    data = make_image_folder(tmp_path / "data", classes=("red", "green"), n_per_class=8, layout="parent")
    out = tmp_path / "out"
    args = ["train", str(data), "--arch", "resnet_small", "--no-pretrained", "--epochs", "1", "--lr", "1e-2"]
    args += ["--size", "32", "--bs", "4", "--num-workers", "0", "--out", str(out), "--nproc", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "fastvision.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("exported") == 1 and proc.stdout.count("error_rate") == 2  # header + summary
    assert (out / "model.json").exists() and load_learner(out / "model.json").vocab == ["green", "red"]


def test_the_process_group_gets_a_timeout(monkeypatch):
    import datetime

    from fastvision import distributed

    seen = []
    monkeypatch.setattr(distributed, "_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda backend, timeout: seen.append(timeout))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("FASTVISION_DIST_TIMEOUT", raising=False)
    assert distributed.setup_distrib()
    monkeypatch.setenv("FASTVISION_DIST_TIMEOUT", "42")
    distributed.setup_distrib()
    distributed.setup_distrib(timeout=5)
    secs = [t.total_seconds() for t in seen]
    assert secs == [distributed.DEFAULT_TIMEOUT, 42, 5] and distributed.DEFAULT_TIMEOUT < 1800
    assert all(isinstance(t, datetime.timedelta) for t in seen)
    with pytest.raises(ValueError, match="timeout=0; expected a positive number of seconds"):
        distributed.setup_distrib(timeout=0)


_STALL = """
import os, signal, sys, time
import torch.distributed as dist
from fastvision.distributed import distrib_barrier, setup_distrib
setup_distrib(timeout=3)
if dist.get_rank() == 1:
    os.kill(os.getpid(), signal.SIGSTOP)  # a stalled rank
t = time.monotonic()
try:
    distrib_barrier()
except Exception as e:
    print(f"rank 0 gave up after {time.monotonic() - t:.0f} s: {type(e).__name__}", flush=True)
    os._exit(3)
"""


@pytest.mark.slow
def test_a_stalled_rank_makes_the_others_fail_after_the_timeout_not_hang(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"}
    env["MASTER_PORT"] = str(port)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _STALL],
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in (0, 1)
    ]
    try:
        out, err = procs[0].communicate(timeout=120)
    finally:
        procs[1].kill()
        procs[1].wait()
    assert procs[0].returncode == 3, out + err[-2000:]
    assert "rank 0 gave up after" in out and int(out.split("after ")[1].split()[0]) < 60
