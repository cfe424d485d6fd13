"""What runs inside DataLoader workers: build a batch from a `BatchRequest`, cache, report errors.

Everything here is picklable (plain module-level classes and functions), so it works under the `fork`,
`spawn` and `forkserver` start methods; a worker receives the dataset (paths and labels, never decoded
pixels) and the item transforms once. A worker never lets an exception escape: it returns a
`WorkerError` marker that the main process turns back into the original exception (torch would
otherwise re-raise it as a `RuntimeError` holding a traceback string).

Randomness: each batch is built under its own seed (`BatchRequest.seed`, applied to torch, `random` and
numpy), so a batch's item transforms draw the same values whichever worker builds it, with any number
of workers, after a restart, and when a resumed run skips the batches already done.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import pickle
import random
import sys
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NoReturn

import numpy as np
import torch
from PIL import Image

from ..transform import Pipeline
from .collate import collate, item_path
from .deferred import DeferredBatch, materialize_all
from .samplers import BatchRequest

__all__ = [
    "Fetcher",
    "Fetched",
    "WorkerError",
    "seeded",
    "run_batch_tfms",
    "raise_worker_error",
    "warn_bad_images",
]

_BATCH_SALT = 0x5BD1E995  # batch transforms draw from a stream apart from the item transforms'


def _is_bad_image(e: BaseException) -> bool:
    """True for decode failures: `ImageLoadError` (by name, its module is optional) and PIL's own."""
    return _is_load_error(e) or isinstance(e, Image.UnidentifiedImageError)


def _is_load_error(e: BaseException | None) -> bool:
    return e is not None and any(c.__name__ == "ImageLoadError" for c in type(e).__mro__)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with torch's CPU generator, `random` and numpy seeded from `seed`; restore them after."""
    cpu, py, npy = torch.get_rng_state(), random.getstate(), np.random.get_state()
    torch.default_generator.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        torch.set_rng_state(cpu)
        random.setstate(py)
        np.random.set_state(npy)


def _apply(t: Any, x: Any, split_idx: int | None) -> Any:
    if isinstance(x, tuple):
        return tuple(_apply(t, o, split_idx) for o in x)
    if isinstance(x, DeferredBatch) and not getattr(t, "accepts_pending", False):
        x = materialize_all(x)
    return t(x, split_idx) if hasattr(t, "encodes") else t(x)


def run_batch_tfms(b: tuple, tfms: Pipeline, seed: int) -> tuple:
    """Finish a collated batch (already on its device): the batch transforms under the batch's `seed`
    (the same draws in a worker and in the main process), then every deferred part materialized."""
    b = tuple(o.finish() if isinstance(o, DeferredBatch) else o for o in b)
    if tfms.tfms:
        with seeded((seed + _BATCH_SALT) % 2**63):
            for t in tfms.tfms:
                b = _apply(t, b, tfms.split_idx)
    return materialize_all(b)


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
    """A batch built by `Fetcher` (None when every item was unreadable and skipped), with its request,
    the `(index, path)` of the unreadable images left out of it, and whether the batch transforms ran."""

    batch: tuple | None
    request: BatchRequest
    bad: list[tuple[int, str]] = field(default_factory=list)
    done: bool = False

    def pin_memory(self) -> Fetched:
        """Pin the batch's tensors (called by torch's pin-memory thread)."""
        from torch.utils.data._utils.pin_memory import pin_memory

        batch = None if self.batch is None else pin_memory(self.batch)
        return Fetched(batch, self.request, self.bad, self.done)


def _marker(e: BaseException, index: int | None, path: str | None) -> WorkerError:
    try:
        pickle.dumps(e)
        exc: BaseException | None = e
    except Exception:
        exc = None
    tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    return WorkerError(exc, type(e).__qualname__, str(e), index, path, tb)


class Fetcher(torch.utils.data.Dataset):
    """Build one batch from a `BatchRequest`: `dataset[i]`, `after_item`, collate, and `after_batch` when
    it is set (the loader sets it on the workers' copy when batches stay on the CPU).

    Used as the dataset of the wrapped torch loader (its sampler yields requests). With `cache=True`,
    samples (decoded images and labels, before item transforms) are kept in this object's dict, i.e. in
    each worker's memory, and reused in later epochs. With `on_bad_image='skip'`, an unreadable image is
    left out of its batch and reported in `Fetched.bad`.
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
        self.after_batch: Pipeline | None = None
        self.items = getattr(dataset, "items", None)
        self._cache: dict[int, Any] = {}
        self._bad: dict[int, str] = {}  # item index -> the path (or 'item i') of an image left out
        # Items that are rows of in-memory tensors (`dataset.tensors`, as `TensorDataset` has) and nothing to
        # do per item: one indexing op per batch instead of a Python loop over the items
        tensors = getattr(dataset, "tensors", None)
        rows = isinstance(tensors, tuple) and all(
            isinstance(t, torch.Tensor) and len(t) == len(dataset) for t in tensors
        )
        self._tensors = tensors if rows and not len(after_item) and collate_fn is None else None

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

    def __getitem__(self, req: BatchRequest) -> Fetched | WorkerError:
        if self._tensors is not None:
            idx = torch.as_tensor(req.idxs)
            return self._done(tuple(t[idx] for t in self._tensors), req, [])
        bad: list[tuple[int, str]] = []
        used, samples = [], []
        with seeded(req.seed):
            for i in req.idxs:
                i = int(i)
                if i in self._bad:
                    bad.append((i, self._bad[i]))
                    continue
                try:
                    samples.append(self._sample(i))
                except Exception as e:
                    if self.on_bad_image == "skip" and _is_bad_image(e):
                        path = getattr(e, "path", None) or item_path(self.items, i)  # rows have no path
                        self._bad[i] = str(path) if path is not None else f"item {i}"
                        bad.append((i, self._bad[i]))
                        continue
                    return _marker(e, i, item_path(self.items, i))
                used.append(i)
        if not samples:
            return Fetched(None, req, bad)
        try:
            b = collate(samples, used, self.items) if self.collate_fn is None else self.collate_fn(samples)
        except Exception as e:
            return _marker(e, None, None)
        return self._done(tuple(b) if isinstance(b, list) else b, req, bad)

    def _done(self, b: Any, req: BatchRequest, bad: list[tuple[int, str]]) -> Fetched | WorkerError:
        if self.after_batch is None:
            return Fetched(b, req, bad)
        try:
            return Fetched(run_batch_tfms(b, self.after_batch, req.seed), req, bad, done=True)
        except Exception as e:
            return _marker(e, None, None)


def _add_note(exc: BaseException, note: str) -> None:
    """`exc.add_note(note)` on Python 3.11+; Python 3.10's exceptions have no notes."""
    if sys.version_info >= (3, 11):
        exc.add_note(note)


def raise_worker_error(err: WorkerError) -> NoReturn:
    """Re-raise a worker's exception in the main process: same type and message, plus the item index."""
    exc, local = err.exc, err.exc is not None and err.exc.__traceback__ is not None
    if exc is not None and (err.index is None or _is_load_error(exc)):
        if not local and err.index is not None:
            _add_note(exc, f"(raised by a DataLoader worker while loading item {err.index})")
        raise exc
    where = f"item {err.index}" + (f" ({err.path})" if err.path else "")
    msg = f"{err.message} [raised while loading {where}]"
    new: BaseException
    try:
        new = type(exc)(msg) if exc is not None else RuntimeError(f"{err.type_name}: {msg}")
    except Exception:
        new = exc if exc is not None else RuntimeError(msg)
    if not local:
        _add_note(new, "Worker traceback:\n" + err.tb.rstrip())
    raise new from (exc if local else None)


def warn_bad_images(bad: list[str]) -> None:
    """Warn once, from the user's loop, about the unreadable images newly left out during an epoch."""
    if bad:
        shown = ", ".join(bad[:20]) + (f" and {len(bad) - 20} more" if len(bad) > 20 else "")
        warnings.warn(
            f"Left out {len(bad)} unreadable image(s): {shown}. Batches (and get_preds rows) hold the other "
            "items in order, and later epochs leave these out (`dl.skipped` maps their indices to paths). "
            "Remove them (see `verify_images`) to silence this warning.",
            stacklevel=3,
        )


def worker_init(worker_id: int) -> None:
    """Seed python's `random` and numpy from the torch seed torch gave this worker."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def identity(x: Any) -> Any:
    """Return `x` (the torch loader's collate function: `Fetcher` already collates)."""
    return x


def worker_loader(
    fetcher: Fetcher,
    sampler: torch.utils.data.Sampler,
    num_workers: int,
    pin_memory: bool,
    generator: torch.Generator,
    multiprocessing_context: Any = None,
    **kwargs: Any,
) -> torch.utils.data.DataLoader:
    """Return the torch loader whose workers run `fetcher` on the `BatchRequest`s of `sampler`.

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


def workers_alive(dl: torch.utils.data.DataLoader | None) -> bool:
    """False when a persistent worker of `dl` has died (e.g. a terminal's Ctrl-C reached its process)."""
    it = getattr(dl, "_iterator", None)
    return all(w.is_alive() for w in getattr(it, "_workers", None) or [])


def shutdown_workers(dl: torch.utils.data.DataLoader | None) -> None:
    """Stop the persistent workers of `dl`, dead or alive."""
    it = getattr(dl, "_iterator", None)
    if it is not None and hasattr(it, "_shutdown_workers"):
        with contextlib.suppress(Exception):
            it._shutdown_workers()
