"""Atomic writes: permissions from the umask, stale temp files of killed saves, a full disk."""

import errno
import io
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from fastvision import checkpoint
from fastvision.checkpoint import atomic_save, load_checkpoint, save_checkpoint


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_files_get_the_permissions_of_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    f = save_checkpoint(tmp_path / "m.pth", nn.Linear(2, 2))
    assert f.stat().st_mode & 0o777 == mode


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_save_removes_the_temp_files_of_killed_saves_only(tmp_path):
    dead = tmp_path / f".m.pth.{_dead_pid()}-abc.tmp"
    live = tmp_path / f".m.pth.{os.getpid()}-def.tmp"  # a save of this very process still running
    other = tmp_path / f".other.pth.{_dead_pid()}-ghi.tmp"  # another file's: left to its own next save
    for f in (dead, live, other):
        f.write_bytes(b"\0" * 1000)
    atomic_save({"a": torch.ones(2)}, tmp_path / "m.pth")
    assert not dead.exists() and live.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name, "m.pth"])


class _FullDisk(io.RawIOBase):
    """A file that accepts `room` bytes, then fails like a full disk (ENOSPC)."""

    def __init__(self, f, room):
        self.f, self.room = f, room

    def writable(self):
        return True

    def write(self, b):
        if len(b) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(b)
        return self.f.write(b)

    def fileno(self):
        return self.f.fileno()

    def close(self):
        self.f.close()
        super().close()


def test_a_full_disk_names_the_file_and_keeps_the_previous_one(tmp_path, monkeypatch):
    good = nn.Linear(64, 64)
    f = save_checkpoint(tmp_path / "m.pth", good)
    before = f.read_bytes()
    real = os.fdopen
    monkeypatch.setattr(checkpoint.os, "fdopen", lambda fd, mode: _FullDisk(real(fd, mode), 2000))
    with pytest.raises(
        OSError, match=r"No space left on the disk while writing '.*m\.pth'.*previous file is intact"
    ) as e:
        save_checkpoint(f, nn.Linear(64, 64))
    assert e.value.errno == errno.ENOSPC
    assert "enforce fail" not in str(e.value)
    monkeypatch.undo()
    assert f.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["m.pth"]
    m = nn.Linear(64, 64)
    load_checkpoint(f, m)
    assert torch.equal(m.weight, good.weight)
