"""Batch memory: shared in workers, huge-paged elsewhere, and the batch stage reading only what it needs."""

import subprocess
import sys

import pytest
import torch

import fastvision.vision.lazy as lazy
from fastvision.memory import advise_huge_pages, batch_empty, float_batch, format_bytes
from fastvision.vision.augment import Rotate, Warp
from fastvision.vision.lazy import PendingImage, collate_pending
from fastvision.vision.lighting import Brightness, Contrast, IntToFloatTensor, LightingGroup
from fastvision.vision.sample import resample


def _pixels(c, h, w, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (c, h, w), generator=g, dtype=torch.uint8)


class _Shapes(torch.utils.data.Dataset):
    def __len__(self):
        return 1

    def __getitem__(self, i):
        t = batch_empty((2, 3, 4, 5), torch.uint8, channels_last=True)
        return t.is_shared(), tuple(t.shape), t.permute(0, 2, 3, 1).is_contiguous()


def test_batch_empty_is_shared_in_a_worker_only():
    dl = torch.utils.data.DataLoader(_Shapes(), batch_size=None, num_workers=1)
    shared, shape, hwc = next(iter(dl))
    assert shared and tuple(shape) == (2, 3, 4, 5) and hwc
    here = batch_empty((2, 3, 4, 5), torch.uint8, channels_last=True)
    assert not here.is_shared() and here.shape == (2, 3, 4, 5)


def test_float_batch_equals_float_and_keeps_the_layout():
    x = _pixels(3, 460, 460, 0).expand(8, 3, 460, 460).contiguous(memory_format=torch.channels_last)
    y = float_batch(x)  # 20 MB: the huge-page path
    assert torch.equal(y, x.float()) and y.is_contiguous(memory_format=torch.channels_last)
    small = _pixels(3, 4, 4, 1)[None]
    assert torch.equal(float_batch(small), small.float())
    t = IntToFloatTensor()(x)
    torch.testing.assert_close(t, x.float() / 255, atol=0, rtol=0)


def test_advise_huge_pages_keeps_contents_and_ignores_small_tensors():
    big = torch.arange(3 << 20, dtype=torch.float32)  # 12 MB, already written
    assert advise_huge_pages(big) is big and torch.equal(
        big[-3:], torch.tensor([3145725.0, 3145726.0, 3145727.0])
    )
    small = torch.ones(3)
    assert advise_huge_pages(small) is small


def test_canvas_is_zero_around_every_item_even_in_dirty_memory(monkeypatch):
    def dirty(shape, dtype, like=None, channels_last=False):
        return torch.full(shape, 255, dtype=dtype)  # memory that held an earlier batch

    monkeypatch.setattr(lazy, "batch_empty", dirty)
    items = [
        PendingImage(_pixels(3, 9, 11, 0), (0.0, 0.0, 10.0, 8.0), (8, 8)),
        PendingImage(_pixels(3, 14, 6, 1), (0.0, 0.0, 5.0, 13.0), (8, 8)),
    ]
    canvas = collate_pending(items).canvas
    assert canvas.shape == (2, 3, 14, 11)
    for i, p in enumerate(items):
        h, w = p.pixels.shape[1:]
        assert torch.equal(canvas[i, :, :h, :w], p.pixels)
        inside = torch.zeros(14, 11, dtype=torch.bool)
        inside[:h, :w] = True
        assert int(canvas[i][:, ~inside].abs().sum()) == 0


@pytest.mark.parametrize("pad_mode", ["reflection", "border", "zeros"])
def test_reading_each_items_span_equals_reading_the_whole_canvas(pad_mode):
    # items of different sizes zoomed, rotated and warped: the per-item float copy must hold every
    # pixel the grid reads. The cache starts as NaN, so a pixel read outside an item's span shows.
    items = [
        PendingImage(_pixels(3, 40, 50, 0), (5.0, 2.0, 44.0, 37.0), (16, 16), pad_mode),
        PendingImage(_pixels(3, 23, 31, 1), (0.0, 0.0, 22.0, 22.0), (16, 16), pad_mode),
        PendingImage(_pixels(3, 35, 20, 2), (0.0, 4.0, 19.0, 23.0), (16, 16), pad_mode),
    ]
    pb = collate_pending(items)
    torch.manual_seed(0)
    lmat = Rotate(max_deg=30, p=1.0).matrix(3, 16, 16, 0) @ Warp(magnitude=0.3, p=1.0).matrix(3, 16, 16, 0)
    cache = {"buf": torch.full((pb.canvas.numel(),), float("nan"))}
    got = resample(pb.canvas, lmat, (12, 12), pb.hw, pb.window, "bilinear", pad_mode, True, cache)
    full = resample(pb.canvas, lmat, (12, 12), pb.hw, pb.window, "bilinear", pad_mode, True, None)
    assert not got.isnan().any()
    torch.testing.assert_close(got, full, atol=1e-6, rtol=0)
    assert cache["buf"].isnan().any()  # the copy really was partial: the test exercises the per-item path


def test_lighting_leaves_its_input_unchanged():
    x = torch.rand(2, 3, 5, 5)
    before = x.clone()
    y = LightingGroup([Brightness(p=1.0, draw=0.7), Contrast(p=1.0, draw=1.3)])(x, split_idx=0)
    assert torch.equal(x, before) and not torch.equal(y, x)
    half = x.half()
    assert LightingGroup([Brightness(p=1.0, draw=0.7)])(half, split_idx=0).dtype == torch.float16


_PEAK = """
import subprocess, sys
import numpy as np
from fastvision.memory import peak_rss
before = peak_rss()
a = np.ones(1_500_000_000 // 8)  # 1.5 GB, every page written: more than importing torch peaks at
child = subprocess.check_output([sys.executable, "-c", "from fastvision.memory import peak_rss; print(peak_rss())"])
print(before, peak_rss(), int(child))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="no getrusage on Windows")
def test_peak_rss_counts_what_the_process_touched_in_bytes_and_formats_it():
    out = subprocess.check_output([sys.executable, "-c", _PEAK], text=True)
    before, after, child = map(int, out.split())
    assert 20e6 < before < 1.4e9  # an interpreter with torch imported: tens to hundreds of MB
    assert after >= 1.5e9  # the peak holds the whole array, in bytes (Linux reports KB)
    assert after < 1.5e9 + before + 100e6
    assert 20e6 < child < 1.4e9  # its own peak, not its parent's (getrusage's ru_maxrss inherits that)
    assert format_bytes(1_234_000_000) == "1.23 GB" and format_bytes(456_400_000) == "456 MB"
    assert format_bytes(None) == "unknown"
