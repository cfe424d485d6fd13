"""Exact resume: whole-state checkpoints, resume after SIGKILL, killed saves, KeyboardInterrupt."""

import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from resume_script import LR, N_EPOCH, make_learner

from fastvision.callback.core import Callback
from fastvision.callback.resume import ResumableCheckpoint, latest_checkpoint

SCRIPT = Path(__file__).with_name("resume_script.py")


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _reference(path):
    learn = make_learner(path)
    learn.fit_one_cycle(N_EPOCH, LR, cbs=ResumableCheckpoint(every_n_iters=1, keep_last=None))
    return learn


def _same_weights(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("at", [5, 8, 11])  # mid-epoch, after an epoch's last batch, mid-epoch 2
def test_resume_matches_uninterrupted_run(tmp_path, at):
    ref = _reference(tmp_path / "a")
    ckpt = tmp_path / "a" / "models" / f"resume_{at:07d}.pth"
    resumed = make_learner(tmp_path / "b", seed=123)  # other initial weights: all must come from the file
    resumed.fit_one_cycle(N_EPOCH, LR, resume=ckpt)
    assert _same_weights(ref.model, resumed.model)
    assert resumed.recorder.lrs == ref.recorder.lrs
    assert resumed.recorder.losses == ref.recorder.losses
    assert resumed.recorder.hps["lr"] == ref.recorder.hps["lr"]
    assert resumed.recorder.values == ref.recorder.values
    assert resumed.train_iter == ref.train_iter == 24


def test_resume_refuses_to_overwrite_an_earlier_runs_checkpoint(tmp_path):
    ref = _reference(tmp_path)
    learn = make_learner(tmp_path)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        learn.fit_one_cycle(N_EPOCH, LR, cbs=ResumableCheckpoint(every_n_iters=1), resume="resume_0000005")
    learn = make_learner(tmp_path)
    learn.fit_one_cycle(
        N_EPOCH, LR, cbs=ResumableCheckpoint(every_n_iters=1, overwrite=True), resume="resume_0000005"
    )
    assert _same_weights(learn.model, ref.model)


def test_resume_checks_the_fit_matches(tmp_path):
    _reference(tmp_path)
    with pytest.raises(ValueError, match="same call"):
        make_learner(tmp_path).fit_one_cycle(N_EPOCH + 1, LR, resume=True)
    with pytest.raises(FileNotFoundError, match="No resumable checkpoint"):
        make_learner(tmp_path).fit(1, resume="nope")


def test_checkpoint_numbering_keep_last_and_stale_temp_files(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    stale = models / ".resume_0000003.pth.abc.tmp"
    stale.write_bytes(b"half a checkpoint")
    learn = make_learner(tmp_path)
    cb = ResumableCheckpoint(every_n_iters=4, keep_last=2)
    learn.fit(2, cbs=cb)
    assert sorted(p.name for p in models.iterdir()) == ["resume_0000012.pth", "resume_0000016.pth"]
    assert latest_checkpoint(models) == models / "resume_0000016.pth" == cb.last
    state = torch.load(cb.last, weights_only=True)
    assert state["loop"] == {"epoch": 1, "iter": 8, "train_iter": 16, "n_epoch": 2, "n_iter": 8}


def _run(out, mode, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(SCRIPT), str(out), mode], env=env, **kw)


@pytest.mark.slow
def test_sigkill_at_a_random_batch_then_resume_gives_the_same_weights(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    ref = _run(full, "full")
    proc = _run(killed, "slow")
    k = random.Random().randint(3, 18)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        last = latest_checkpoint(killed / "models")
        if last is not None and int(last.stem.split("_")[1]) >= k:
            break
        if proc.poll() is not None:
            pytest.fail("the training process ended before it could be killed")
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "final.pt").exists()
    assert _run(killed, "resume").wait(timeout=120) == 0
    assert ref.wait(timeout=120) == 0
    a, b = torch.load(full / "final.pt"), torch.load(killed / "final.pt")
    assert all(torch.equal(a[n], b[n]) for n in a), f"killed after checkpoint {k}"


@pytest.mark.slow
def test_sigkill_during_a_save_leaves_the_previous_checkpoint(tmp_path):
    proc = _run(tmp_path, "save_killed", stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "WRITING"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    models = tmp_path / "models"
    assert list(models.glob(".ck.pth.*.tmp")), "the kill should have interrupted the second save"
    learn = make_learner(tmp_path, seed=9)
    learn.load("ck", with_opt=False)
    good = torch.load(tmp_path / "good.pt")
    assert all(torch.equal(v, good[k]) for k, v in learn.model.state_dict().items())
    learn.save("ck")  # the next save removes the killed one's full-size temp file
    assert not list(models.glob(".ck.pth.*.tmp"))


def test_a_truncated_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    ref = _reference(tmp_path / "a")
    models = tmp_path / "a" / "models"
    newest, previous = models / "resume_0000024.pth", models / "resume_0000023.pth"
    newest.write_bytes(newest.read_bytes()[:1000])  # e.g. a power cut before the data reached the disk
    learn = make_learner(tmp_path / "a", seed=5)
    with pytest.warns(UserWarning, match=f"newest checkpoint '{newest}'.*previous one, '{previous}'"):
        learn.fit_one_cycle(
            N_EPOCH, LR, resume=True, cbs=ResumableCheckpoint(every_n_iters=1, overwrite=True)
        )
    assert _same_weights(ref.model, learn.model)
    newest.write_bytes(b"")
    with pytest.raises(ValueError, match="Cannot read the checkpoint .*resume_0000024.pth.*damaged"):
        make_learner(tmp_path / "a").fit_one_cycle(N_EPOCH, LR, resume=newest)


class Interrupt(Callback):
    def after_batch(self):
        if self.learn.training and self.learn.epoch == 1 and self.learn.iter == 2:
            raise KeyboardInterrupt


def _interrupted_fit(learn, cbs):
    with pytest.raises(KeyboardInterrupt), warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        learn.fit_one_cycle(N_EPOCH, LR, cbs=cbs)
    return " ".join(str(x.message) for x in w)


def test_keyboard_interrupt_leaves_a_usable_learner_and_says_how_to_resume(tmp_path):
    learn = make_learner(tmp_path)
    msg = _interrupted_fit(learn, [ResumableCheckpoint(every_n_iters=1, keep_last=2), Interrupt()])
    ckpt = tmp_path / "models" / "resume_0000010.pth"  # the batch that was interrupted is not saved
    assert "KeyboardInterrupt" in msg and f"resume='{ckpt}'" in msg
    assert learn.run_mode is None and learn.dl is None
    assert not any(isinstance(c, (Interrupt, ResumableCheckpoint)) for c in learn.cbs)
    assert learn.progress.mbar is None and learn.progress.pbar is None
    assert all(p.grad is None for p in learn.model.parameters())
    learn.fit(1)  # usable
    assert len(learn.recorder.values) == 1
    resumed = make_learner(tmp_path / "b", seed=7)
    resumed.fit_one_cycle(N_EPOCH, LR, resume=ckpt)
    ref = make_learner(tmp_path / "c")
    ref.fit_one_cycle(N_EPOCH, LR)
    assert _same_weights(ref.model, resumed.model)


def test_keyboard_interrupt_without_checkpoints_explains_how_to_get_them(tmp_path):
    msg = _interrupted_fit(make_learner(tmp_path), [Interrupt()])
    assert "ResumableCheckpoint(every_n_iters=" in msg and "start_epoch=1" in msg
