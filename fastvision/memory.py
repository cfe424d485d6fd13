"""Fresh batch-sized host tensors that cost less to fill: shared memory in a worker, huge pages outside.

A batch of 64 images at 460 px is 40 MB as uint8 and 160 MB as float. Allocating that every batch means
touching every page of it for the first time: on Linux each 4 KB page is a fault the kernel serves and
zeroes, and on this project's 2-core benchmark machine those faults cost more than the conversion that
writes the pixels (converting a 64 x 3 x 460 x 460 uint8 batch to float: ~120 ms with 4 KB pages, ~55 ms
with 2 MB pages).

- `batch_empty` allocates in shared memory inside a loader worker (the batch crosses to the main process
  without another copy, as torch's own collate does) and elsewhere asks the kernel for transparent huge
  pages on the new memory (`madvise(MADV_HUGEPAGE)` on that range only; nothing global changes, and
  where huge pages are unavailable the call is a no-op).
- `float_batch` is `x.float()` into such memory.
- `peak_rss` is the most resident memory this process has held so far (what `fastvision demo` reports).
"""

from __future__ import annotations

import ctypes
import sys
from typing import Any

import torch

try:
    import resource
except ImportError:  # Windows
    resource = None  # type: ignore[assignment]

__all__ = ["batch_empty", "float_batch", "peak_rss", "format_bytes"]

_HUGE = 2 << 20  # x86-64 / arm64 transparent huge page size
_MIN_BYTES = 4 * _HUGE  # below this a huge page rounds more than it saves
_MADV_HUGEPAGE = 14


def _load_madvise() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int], ctypes.c_int
    return fn


_madvise = _load_madvise()


def advise_huge_pages(t: torch.Tensor) -> torch.Tensor:
    """Ask for transparent huge pages on the whole 2 MB pages of `t`'s untouched CPU memory; return `t`."""
    n = t.untyped_storage().nbytes()
    if _madvise is None or t.device.type != "cpu" or n < _MIN_BYTES:
        return t
    start = t.untyped_storage().data_ptr()
    lo, hi = (start + _HUGE - 1) // _HUGE * _HUGE, (start + n) // _HUGE * _HUGE
    if hi > lo:
        _madvise(lo, hi - lo, _MADV_HUGEPAGE)  # a hint: failure (EINVAL where THP is off) changes nothing
    return t


def batch_empty(
    shape: tuple[int, ...], dtype: torch.dtype, like: torch.Tensor | None = None, channels_last: bool = False
) -> torch.Tensor:
    """An uninitialised CPU tensor for a batch: in shared memory inside a loader worker, else huge-paged.

    Args:
        shape: the tensor's shape (B x C x H x W when `channels_last`).
        dtype: its element type.
        like: a tensor whose storage type makes the shared storage (any CPU tensor of `dtype`; None: a new one).
        channels_last: lay out B x C x H x W memory as B x H x W x C (a `permute` of a dense tensor).
    """
    dense = (shape[0], *shape[2:], shape[1]) if channels_last else tuple(shape)
    if torch.utils.data.get_worker_info() is not None:
        like = like if like is not None and like.dtype == dtype else torch.empty(0, dtype=dtype)
        numel = 1
        for s in dense:
            numel *= s
        out = like.new(like._typed_storage()._new_shared(numel, device=like.device)).view(dense)
    else:
        out = advise_huge_pages(torch.empty(dense, dtype=dtype))
    return out.permute(0, 3, 1, 2) if channels_last else out


def float_batch(x: torch.Tensor) -> torch.Tensor:
    """`x.float()` (same memory format) written into fresh huge-paged memory on the CPU."""
    if x.device.type != "cpu" or x.numel() * 4 < _MIN_BYTES:
        return x.float()
    out = advise_huge_pages(torch.empty_like(x, dtype=torch.float32))
    return out.copy_(x)


def peak_rss() -> int | None:
    """The largest resident set this process has had so far, in bytes (None where the OS does not say).

    On Linux this is the `VmHWM` line of /proc/self/status: the peak of this program's own memory. (The
    `ru_maxrss` of `getrusage` is not: a process started with fork or vfork and exec keeps its parent's
    high-water mark, e.g. pytest's when a test spawns Python.) Elsewhere `ru_maxrss`. Loader workers are
    other processes and are not counted.
    """
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024  # "VmHWM:   123456 kB"
    except (OSError, ValueError, IndexError):
        pass
    if resource is None:
        return None
    kb_or_b = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb_or_b if sys.platform == "darwin" else kb_or_b * 1024  # the BSDs give kilobytes


def format_bytes(n: int | None) -> str:
    """`n` bytes as "1.23 GB" / "456 MB" (powers of 1000), "unknown" for None."""
    if n is None:
        return "unknown"
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"
