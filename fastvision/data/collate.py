"""What runs inside DataLoader workers: fetch items, apply item transforms, collate, cache, report errors.

Everything here is picklable (plain module-level classes and functions), so it works under the `fork`,
`spawn` and `forkserver` start methods. A worker never lets an exception escape: it returns a
`WorkerError` marker that the main process turns back into the original exception (torch would
otherwise re-raise it as a `RuntimeError` holding a traceback string).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import random
import traceback
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..transform import Pipeline
from ..vision.lazy import PendingBatch, PendingImage, collate_pending

__all__ = ["collate"]


def _is_bad_image(e: BaseException) -> bool:
    """True for decode failures: `ImageLoadError` (by name, its module is optional) and PIL's own."""
    return _is_load_error(e) or isinstance(e, Image.UnidentifiedImageError)


def _is_load_error(e: BaseException | None) -> bool:
    return e is not None and any(c.__name__ == "ImageLoadError" for c in type(e).__mro__)


def _item_path(items: Any, i: int | None) -> str | None:
    """The path of item `i` when the dataset exposes a sized `.items`, else None."""
    if items is None or i is None:
        return None
    try:
        item = items[i]
    except Exception:
        return None
    return str(item) if isinstance(item, (str, os.PathLike)) else None


def _pil_to_tensor(img: Image.Image) -> torch.Tensor:
    arr = np.asarray(img)
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    return torch.from_numpy(np.array(arr.transpose(2, 0, 1), order="C"))  # a writable copy


def _shape_mismatch(pos: int, shapes: list, idxs: Sequence[int] | None, items: Any) -> RuntimeError:
    groups: dict[tuple, list[int]] = {}
    for k, s in enumerate(shapes):
        groups.setdefault(tuple(s), []).append(k)
    lines = []
    for shape, ks in groups.items():
        where = []
        for k in ks[:3]:
            i = idxs[k] if idxs is not None else k
            path = _item_path(items, i)
            where.append(f"{i} ({path})" if path else str(i))
        more = f" and {len(ks) - 3} more" if len(ks) > 3 else ""
        lines.append(f"  shape {tuple(shape)}: item{'s' if len(ks) > 1 else ''} {', '.join(where)}{more}")
    return RuntimeError(
        f"Cannot collate the items of a batch at tuple position {pos}: they have {len(groups)} different "
        "shapes.\n" + "\n".join(lines) + "\nEvery item of a batch must have the same size: add a resize to "
        "the item transforms, e.g. `item_tfms=Resize(224)` (or `after_item=[Resize(224), ToTensor()]`)."
    )


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Stack into one tensor (in shared memory inside a worker, as torch does).

    Items that are C x H x W views of H x W x C memory (a `permute` without `.contiguous()`) are
    stacked as B x H x W x C, a plain copy, and returned as a B x C x H x W channels_last view.
    """
    elem = tensors[0]
    hwc = (
        elem.ndim == 3
        and not elem.is_contiguous()
        and all(t.permute(1, 2, 0).is_contiguous() for t in tensors)
    )
    if hwc:
        tensors = [t.permute(1, 2, 0) for t in tensors]
        elem = tensors[0]
    out = None
    if torch.utils.data.get_worker_info() is not None:
        storage = elem._typed_storage()._new_shared(sum(t.numel() for t in tensors), device=elem.device)
        out = elem.new(storage).resize_(len(tensors), *elem.shape)
    b = torch.stack(tensors, 0, out=out)
    return b.permute(0, 3, 1, 2) if hwc else b


def _collate_one(pos: int, elems: list, idxs: Sequence[int] | None, items: Any) -> Any:
    e = elems[0]
    if isinstance(e, PendingImage):
        return collate_pending(elems)
    if isinstance(e, Image.Image):
        elems = [_pil_to_tensor(o) for o in elems]
        e = elems[0]
    if isinstance(e, np.ndarray):
        shapes = [o.shape for o in elems]
        if any(s != shapes[0] for s in shapes):
            raise _shape_mismatch(pos, shapes, idxs, items)
        return torch.from_numpy(np.stack(elems))
    if isinstance(e, torch.Tensor):
        shapes = [o.shape for o in elems]
        if any(s != shapes[0] for s in shapes):
            raise _shape_mismatch(pos, shapes, idxs, items)
        return _stack(elems)
    if isinstance(e, bool):
        return torch.tensor(elems, dtype=torch.bool)
    if isinstance(e, (int, np.integer)):
        return torch.tensor(elems, dtype=torch.long)
    if isinstance(e, (float, np.floating)):
        return torch.tensor(elems, dtype=torch.float32)
    if isinstance(e, (tuple, list)) and not isinstance(e, str):
        return type(e)(_collate_one(pos, list(z), idxs, items) for z in zip(*elems))
    if isinstance(e, dict):
        return {k: _collate_one(pos, [o[k] for o in elems], idxs, items) for k in e}
    return list(elems)  # strings, paths, None: kept as a list


def collate(samples: Sequence[Any], idxs: Sequence[int] | None = None, items: Any = None) -> tuple:
    """Stack a list of sample tuples into one batch tuple.

    Tensors, numpy arrays and PIL images are stacked (dtypes kept, so uint8 stays uint8; PIL images
    become uint8 C x H x W), ints become a long tensor, floats a float32 tensor, `PendingImage`s a
    `PendingBatch`. Items of different shapes raise a `RuntimeError` naming the tuple position, the
    shapes, the item indices `idxs` (and their paths from `items`) and the fix.
    """
    if len(samples) == 0:
        raise ValueError("collate received an empty list of samples; a batch needs at least one item.")
    samples = [s if isinstance(s, tuple) else (s,) for s in samples]
    lengths = {len(s) for s in samples}
    if len(lengths) != 1:
        raise RuntimeError(f"Cannot collate samples with different numbers of elements {sorted(lengths)}.")
    return tuple(_collate_one(p, list(col), idxs, items) for p, col in enumerate(zip(*samples)))


@dataclass
class WorkerError:
    """An exception caught while building a batch, carried back to the main process."""

    exc: BaseException | None
    type_name: str
    message: str
    index: int | None
    path: str | None
    tb: str


@dataclass
class Fetched:
    """A batch built by `Fetcher`, with the paths of the bad images it skipped."""

    batch: tuple
    bad: list[str] = field(default_factory=list)

    def pin_memory(self) -> Fetched:
        """Pin the batch's tensors (called by torch's pin-memory thread)."""
        from torch.utils.data._utils.pin_memory import pin_memory

        return Fetched(pin_memory(self.batch), self.bad)


def _marker(e: BaseException, index: int | None, path: str | None) -> WorkerError:
    try:
        pickle.dumps(e)
        exc: BaseException | None = e
    except Exception:
        exc = None
    tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    return WorkerError(exc, type(e).__qualname__, str(e), index, path, tb)


class Fetcher(torch.utils.data.Dataset):
    """Build one batch from a list of indices: `dataset[i]`, `after_item`, collate.

    Used as the dataset of the wrapped torch loader (its sampler yields lists of indices). With
    `cache=True`, samples (decoded PIL images and labels, before item transforms) are kept in this
    object's dict, i.e. in each worker's memory, and reused in later epochs.
    """

    def __init__(
        self,
        dataset: Any,
        after_item: Pipeline,
        on_bad_image: str = "raise",
        cache: bool = False,
        collate_fn=None,
    ):
        self.dataset, self.after_item, self.on_bad_image = dataset, after_item, on_bad_image
        self.cache, self.collate_fn = cache, collate_fn
        self.items = getattr(dataset, "items", None)
        self._cache: dict[int, Any] = {}
        self._bad: set[int] = set()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_cache": {}}  # a new worker starts with an empty cache

    def __len__(self) -> int:
        return len(self.dataset)

    def _sample(self, i: int) -> Any:
        s = self._cache.get(i) if self.cache else None
        if s is None:
            s = self.dataset[i]
            s = tuple(s) if isinstance(s, list) else s
            if self.cache:
                for o in s if isinstance(s, tuple) else (s,):
                    if isinstance(o, Image.Image):
                        o.load()
                self._cache[i] = s
        return self.after_item(s)

    def _item(self, i: int, bad: list[str]) -> tuple[int, Any]:
        """Return `(index, sample)`, substituting the next good index for bad images when skipping."""
        n, j = len(self.dataset), i
        for _ in range(n):
            if j not in self._bad:
                try:
                    return j, self._sample(j)
                except Exception as e:
                    if self.on_bad_image != "skip" or not _is_bad_image(e):
                        raise
                    self._bad.add(j)
            bad.append(_item_path(self.items, j) or f"item {j}")
            j = (j + 1) % n
        raise RuntimeError(f"on_bad_image='skip' found no readable image among the {n} items of the dataset.")

    def __getitem__(self, idxs: Sequence[int]) -> Fetched | WorkerError:
        bad: list[str] = []
        used, samples = [], []
        for i in idxs:
            try:
                j, s = self._item(int(i), bad)
            except Exception as e:
                return _marker(e, int(i), _item_path(self.items, int(i)))
            used.append(j)
            samples.append(s)
        try:
            b = collate(samples, used, self.items) if self.collate_fn is None else self.collate_fn(samples)
            return Fetched(tuple(b) if isinstance(b, list) else b, sorted(set(bad)))
        except Exception as e:
            return _marker(e, None, None)


def raise_worker_error(err: WorkerError) -> None:
    """Re-raise a worker's exception in the main process: same type and message, plus the item index."""
    exc, local = err.exc, err.exc is not None and err.exc.__traceback__ is not None
    if exc is not None and (err.index is None or _is_load_error(exc)):
        if not local and err.index is not None:
            exc.add_note(f"(raised by a DataLoader worker while loading item {err.index})")
        raise exc
    where = f"item {err.index}" + (f" ({err.path})" if err.path else "")
    msg = f"{err.message} [raised while loading {where}]"
    new: BaseException
    try:
        new = type(exc)(msg) if exc is not None else RuntimeError(f"{err.type_name}: {msg}")
    except Exception:
        new = exc if exc is not None else RuntimeError(msg)
    if not local:
        new.add_note("Worker traceback:\n" + err.tb.rstrip())
    raise new from (exc if local else None)


def warn_bad_images(bad: list[str]) -> None:
    """Warn once, from the user's loop, about the unreadable images skipped during an epoch."""
    if bad:
        shown = ", ".join(bad[:20]) + (f" and {len(bad) - 20} more" if len(bad) > 20 else "")
        warnings.warn(
            f"Skipped {len(bad)} unreadable image(s) (each replaced by the next readable item): {shown}. "
            "Remove them (see `verify_images`) to silence this warning.",
            stacklevel=3,
        )


def worker_init(worker_id: int) -> None:
    """Seed python's `random` and numpy from the torch seed torch gave this worker."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


class BatchSampler(torch.utils.data.Sampler):
    """Yield lists of indices: shuffled or in order, the last partial batch kept unless `drop_last`.

    With `n_shards > 1` and shuffling (used by `cache=True` with workers), each index belongs to a
    fixed shard and batch `k` is drawn from shard `k % n_shards`. Torch deals batch `k` to worker
    `k % num_workers`, so every index is always loaded by the same worker and that worker's cache
    serves it from the second epoch on. The cost: a batch mixes items of one shard only (a fixed
    random 1/n_shards of the data), shuffled anew every epoch.
    """

    def __init__(
        self, n: int, bs: int, shuffle: bool, drop_last: bool, gen: torch.Generator, n_shards: int = 1
    ):
        self.n, self.bs, self.shuffle, self.drop_last, self.gen = n, bs, shuffle, drop_last, gen
        self.n_shards = n_shards if shuffle else 1
        if self.n_shards > 1:  # deal a fixed random permutation's chunks to shards, as batches are dealt
            shards: list[list[torch.Tensor]] = [[] for _ in range(self.n_shards)]
            for k, chunk in enumerate(torch.randperm(n, generator=gen).split(bs)):
                shards[k % self.n_shards].append(chunk)
            self.shards = [torch.cat(s) if s else torch.zeros(0, dtype=torch.long) for s in shards]

    def __len__(self) -> int:
        return self.n // self.bs if self.drop_last else -(-self.n // self.bs)

    def __iter__(self) -> Iterator[list[int]]:
        nb = len(self)
        if self.n_shards <= 1:
            order = torch.randperm(self.n, generator=self.gen) if self.shuffle else torch.arange(self.n)
            for k in range(nb):
                yield order[k * self.bs : (k + 1) * self.bs].tolist()
            return
        per_shard = []
        for s, idx in enumerate(self.shards):
            n_slots = len(range(s, nb, self.n_shards))
            size = min(len(idx), n_slots * self.bs)
            per_shard.append(idx[torch.randperm(len(idx), generator=self.gen)][:size].split(self.bs))
        for k in range(nb):
            yield per_shard[k % self.n_shards][k // self.n_shards].tolist()


def identity(x: Any) -> Any:
    """Return `x` (the torch loader's collate function: `Fetcher` already collates)."""
    return x


def default_device() -> torch.device:
    """Return CUDA if available, else Apple MPS if available, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def default_num_workers() -> int:
    """Return the worker count used when `num_workers=None`: `min(8, os.cpu_count())`."""
    return min(8, os.cpu_count() or 1)


def to_device(b: Any, device: torch.device, non_blocking: bool = False) -> Any:
    if isinstance(b, (torch.Tensor, PendingBatch)):
        return b.to(device, non_blocking=non_blocking)
    if isinstance(b, (tuple, list)):
        return tuple(to_device(o, device, non_blocking) for o in b)
    if isinstance(b, dict):
        return {k: to_device(v, device, non_blocking) for k, v in b.items()}
    return b


def tfm_list(tfms: Any) -> list:
    if tfms is None:
        return []
    if isinstance(tfms, Pipeline):
        return list(tfms.tfms)
    return list(tfms) if isinstance(tfms, (list, tuple)) else [tfms]


def materialize_all(x: Any) -> Any:
    if isinstance(x, PendingBatch):
        from ..vision.augment import materialize

        return materialize(x)
    if isinstance(x, tuple):
        return tuple(materialize_all(o) for o in x)
    return x


class ItemsDataset(torch.utils.data.Dataset):
    """Raw inputs (tensors, arrays) as a dataset of 1-tuples, for `test_dl` on plain datasets."""

    def __init__(self, items: Sequence):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple:
        return (self.items[i],)


def default_workers(ds: Any) -> int | None:
    return 0 if isinstance(ds, torch.utils.data.TensorDataset) else None


class PrivateRNG:
    """A loader's own torch RNG stream for main-process work, swapped in around it (when seeded)."""

    def __init__(self, seed: int | None):
        self.seed = seed
        self.state = None if seed is None else torch.Generator().manual_seed(seed).get_state()
        self.cuda_state: torch.Tensor | None = None

    @contextlib.contextmanager
    def __call__(self, device: torch.device) -> Iterator[None]:
        """Run the block on this stream (CPU, and CUDA when `device` is CUDA); no-op without a seed."""
        if self.seed is None:
            yield
            return
        cuda = device.type == "cuda" and torch.cuda.is_available()
        saved, saved_cuda = torch.get_rng_state(), (torch.cuda.get_rng_state(device) if cuda else None)
        torch.set_rng_state(self.state)
        if cuda and self.cuda_state is None:
            torch.cuda.manual_seed(self.seed)
        elif cuda:
            torch.cuda.set_rng_state(self.cuda_state, device)
        try:
            yield
        finally:
            self.state = torch.get_rng_state()
            torch.set_rng_state(saved)
            if cuda:
                self.cuda_state = torch.cuda.get_rng_state(device)
                torch.cuda.set_rng_state(saved_cuda, device)


def worker_loader(
    fetcher: Fetcher,
    sampler: BatchSampler,
    num_workers: int,
    pin_memory: bool,
    generator: torch.Generator,
    multiprocessing_context: Any = None,
    **kwargs: Any,
) -> torch.utils.data.DataLoader:
    """Return the torch loader whose workers run `fetcher` on the index lists of `sampler`.

    Under 'spawn'/'forkserver' the fetcher (dataset + item transforms) is pickled first, so an
    unpicklable lambda fails here with the fix instead of inside a worker.
    """
    ctx = multiprocessing_context
    method = (
        ctx if isinstance(ctx, str) else getattr(ctx, "_name", None) or multiprocessing.get_start_method()
    )
    if method != "fork":
        try:
            pickle.dumps(fetcher)
        except Exception as e:
            raise TypeError(
                f"The dataset or an item transform cannot be sent to '{method}' worker processes: {e}. "
                "Define functions and classes at module level (not lambdas or local functions), or "
                "pass num_workers=0 to load in the main process."
            ) from e
    return torch.utils.data.DataLoader(
        fetcher,
        batch_size=None,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=identity,
        pin_memory=pin_memory,
        worker_init_fn=worker_init,
        generator=generator,
        multiprocessing_context=ctx,
        **kwargs,
    )


def torch_loader_options(dl: torch.utils.data.DataLoader) -> dict:
    """Return the `DataLoader` arguments that reproduce a plain torch loader (its sampler must be plain)."""
    if type(dl.sampler) not in (torch.utils.data.RandomSampler, torch.utils.data.SequentialSampler):
        raise TypeError(
            f"Cannot wrap a torch DataLoader with a {type(dl.sampler).__name__}: fastvision's loader draws "
            "its own (shuffled or sequential) batches. Pass its dataset instead, e.g. "
            "DataLoaders.from_dsets(train_ds, valid_ds, bs=...)."
        )
    collate_fn = None if dl.collate_fn is torch.utils.data.default_collate else dl.collate_fn
    shuffle = isinstance(dl.sampler, torch.utils.data.RandomSampler)
    return dict(bs=dl.batch_size or 1, shuffle=shuffle, drop_last=dl.drop_last, num_workers=dl.num_workers,
                collate_fn=collate_fn, n_inp=1)  # fmt: skip
