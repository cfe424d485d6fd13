"""`DataLoader` and `DataLoaders`: batches of plain tensors on the device, after item and batch transforms.

Flow of one batch: the sampler (`data/samplers.py`) picks indices and the loader gives the batch a seed;
a worker process (or the main process when `num_workers=0`) builds it (`data/workers.py`): it reads
`dataset[i]` (decoding images there: a dataset holds paths, never pixels), applies the item transforms
and collates (`data/collate.py`); the main process moves the batch to `device` and applies the batch
transforms under the batch's seed. When `device` is the CPU and a batch transform resamples
(augmentation, presizing), the workers apply the batch transforms instead (the same draws, from the same
seed), so the augmentation runs in parallel rather than serially in the main process. Workers persist across epochs and are restarted when they died (a
terminal's Ctrl-C reaches them too); a worker's error (or, with `on_bad_image='skip'`, a warning
listing the unreadable files left out) reaches the main process.

Randomness is a function of the loader's seed and the batch's position: the shuffle order and every
batch's seed come from one generator, seeded by `seed=` or, when `seed=None`, anew at each epoch from
torch's global RNG (as `torch.utils.data.DataLoader` does), so `torch.manual_seed(s)` before a fit makes
it repeatable. `state_dict()`/`load_state_dict()` carry that state, including the position inside an
epoch, so a resumed epoch continues with the same batches.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import os
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure

from ..transform import Pipeline, tfm_list
from ..utils import default_device, to_device
from .collate import collate
from .display import decoded_pairs, show_pairs
from .samplers import BatchRequest, BatchSampler
from .workers import (
    Fetched,
    Fetcher,
    WorkerError,
    raise_worker_error,
    run_batch_tfms,
    shutdown_workers,
    warn_bad_images,
    worker_loader,
    workers_alive,
)

__all__ = ["DataLoader", "DataLoaders", "collate", "default_device", "default_num_workers"]


def default_num_workers() -> int:
    """Return the worker count used when `num_workers=None`: `min(8, os.cpu_count())`."""
    return min(8, os.cpu_count() or 1)


def default_workers(ds: Any) -> int | None:
    """0 (the main process) for in-memory `TensorDataset`s, else None (`default_num_workers()`)."""
    return 0 if isinstance(ds, torch.utils.data.TensorDataset) else None


class ItemsDataset(torch.utils.data.Dataset):
    """Raw inputs (tensors, arrays) as a dataset of 1-tuples, for `test_dl` on plain datasets."""

    def __init__(self, items: Sequence):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple:
        return (self.items[i],)


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
    return dict(
        bs=dl.batch_size or 1,
        shuffle=shuffle,
        drop_last=dl.drop_last,
        num_workers=dl.num_workers,
        collate_fn=collate_fn,
        n_inp=1,
    )


class _Requests(torch.utils.data.Sampler):
    """The torch loader's sampler: the current epoch's `BatchRequest`s of a fastvision `DataLoader`.

    It holds the loader weakly: a cycle (loader -> torch loader -> sampler -> loader) would keep a dropped
    loader's workers alive until the cyclic GC, which may run in a forked worker of another loader.
    """

    def __init__(self, dl: DataLoader):
        self._dl = weakref.ref(dl)

    def __len__(self) -> int:
        dl = self._dl()
        return 0 if dl is None else len(dl)

    def __iter__(self) -> Iterator[BatchRequest]:
        dl = self._dl()
        return iter(()) if dl is None else dl._requests()


class DataLoader:
    """Batches of `dataset` after item transforms (in workers) and batch transforms (on `device`).

    Args:
        dataset: any map-style dataset whose `ds[i]` is a tuple (or a single element).
        bs: batch size (64).
        shuffle: draw a new order every epoch (False; `DataLoaders.from_datasets` turns it on for training).
        drop_last: drop the last partial batch (False; on for training in `DataLoaders.from_datasets`).
        num_workers: worker processes; None uses `default_num_workers()`, 0 loads in the main process.
        after_item: transforms (or a `Pipeline`) run per item in the workers, with this loader's `split_idx`.
        after_batch: transforms (or a `Pipeline`) run per batch on `device`, with this loader's `split_idx`.
            On the CPU with workers, resampling ones run in the workers (see `batch_in_workers`).
        device: where batches go (default `default_device()`).
        split_idx: 0 train, 1 valid (default `dataset.split_idx`); transforms restricted to a split use it.
        n_inp: how many leading elements of a batch are inputs (default `dataset.n_inp` or 1).
        pin_memory: pin host batches (default True on CUDA).
        persistent_workers: keep workers alive across epochs (True).
        seed: seeds shuffling and every batch's transforms, so a run is reproducible; None draws a new
            seed from torch's global RNG at the start of each epoch (`torch.manual_seed` governs it).
        on_bad_image: 'raise' (an `ImageLoadError` naming the file, raised in the main process) or
            'skip' (leave unreadable images out of their batch, warn once naming each file, and leave
            them out of later epochs; `skipped` lists them).
        cache: keep decoded samples in RAM (in each worker) so later epochs skip decoding. Off by
            default: memory then grows with the dataset, so use it for small datasets only.
        multiprocessing_context: 'fork', 'spawn' or 'forkserver' (default: the platform's).
        prefetch_factor: batches each worker prepares ahead (torch's default 2).
        timeout: seconds to wait for a worker's batch (0: forever).
        collate_fn: replaces `collate` (a module-level function, so workers can receive it).
        batch_size: torch's name for `bs`, accepted so tutorial code runs; giving both with different
            values is a TypeError.
        batch_in_workers: where the batch transforms run when `device` is the CPU and `num_workers > 0`.
            None (default): in the workers, in parallel, when one of them resamples (`prefers_workers`:
            augmentation, presizing); in the main process when they are elementwise only
            (`IntToFloatTensor`, `Normalize`), cheaper than sending 4x the bytes (float32) from a worker.
            True: always in the workers; False: always in the main process. The random draws are the
            same wherever they run. Workers receive the transforms when they start: setting
            `after_batch` or `device` restarts them, but a transform changed in place during training is
            only seen by new workers (call `close()`, or pass False).
    """

    def __init__(
        self,
        dataset: Any,
        bs: int = 64,
        shuffle: bool = False,
        drop_last: bool = False,
        num_workers: int | None = None,
        after_item: Any = None,
        after_batch: Any = None,
        device: torch.device | str | None = None,
        split_idx: int | None = None,
        n_inp: int | None = None,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        seed: int | None = None,
        on_bad_image: str = "raise",
        cache: bool = False,
        multiprocessing_context: str | None = None,
        prefetch_factor: int | None = None,
        timeout: float = 0,
        collate_fn: Callable | None = None,
        batch_size: int | None = None,
        batch_in_workers: bool | None = None,
    ):
        if batch_size is not None:
            default = inspect.signature(type(self).__init__).parameters["bs"].default
            if bs not in (default, batch_size):
                raise TypeError(
                    f"DataLoader got bs={bs!r} and batch_size={batch_size!r}; they are the same setting "
                    "(batch_size is torch's name for it). Pass only one."
                )
            bs = batch_size
        if not isinstance(bs, int) or bs < 1:
            raise ValueError(f"bs must be a positive int, got {bs!r}.")
        if on_bad_image not in ("raise", "skip"):
            raise ValueError(f"on_bad_image={on_bad_image!r} is not one of 'raise', 'skip'.")
        if num_workers is not None and num_workers < 0:
            raise ValueError(f"num_workers must be >= 0 (0 loads in the main process), got {num_workers}.")
        self.dataset, self.bs, self.shuffle, self.drop_last = dataset, bs, shuffle, drop_last
        self.num_workers = default_num_workers() if num_workers is None else int(num_workers)
        self.split_idx = getattr(dataset, "split_idx", None) if split_idx is None else split_idx
        self.n_inp = n_inp if n_inp is not None else getattr(dataset, "n_inp", None) or 1
        self.device = default_device() if device is None else device
        self.pin_memory = self.device.type == "cuda" if pin_memory is None else pin_memory
        self.persistent_workers, self.on_bad_image, self.cache = persistent_workers, on_bad_image, cache
        self.seed = seed
        self.multiprocessing_context, self.prefetch_factor = multiprocessing_context, prefetch_factor
        self.timeout, self.collate_fn, self.batch_in_workers = timeout, collate_fn, batch_in_workers
        base = seed if seed is not None else int(torch.randint(0, 2**62, ()).item())
        self._sample_gen = torch.Generator().manual_seed(base)
        self._worker_gen = torch.Generator().manual_seed(base + 1)
        self.skipped: dict[int, str] = {}  # unreadable items left out (index -> path), with 'skip'
        self._epoch_state = self._sample_gen.get_state()
        self._epoch_seed, self._pos, self._in_epoch = 0, 0, False
        self._replay: tuple[torch.Tensor, int] | None = None
        self._item_tfms, self._batch_tfms = tfm_list(after_item), tfm_list(after_batch)
        self._reset()

    # ----- configuration -----
    @property
    def device(self) -> torch.device:
        """The device batches are moved to before the batch transforms."""
        return self._device

    @device.setter
    def device(self, device: torch.device | str) -> None:
        device = torch.device(device)
        if device != getattr(self, "_device", device):
            self._stop_workers()  # whether the workers run the batch transforms depends on the device
        self._device = device

    @property
    def after_item(self) -> Pipeline:
        """The item transforms, a `Pipeline` with this loader's `split_idx`."""
        return self._after_item

    @after_item.setter
    def after_item(self, tfms: Any) -> None:
        self._item_tfms = tfm_list(tfms)
        self._reset()

    @property
    def after_batch(self) -> Pipeline:
        """The batch transforms, a `Pipeline` with this loader's `split_idx`."""
        return self._after_batch

    @after_batch.setter
    def after_batch(self, tfms: Any) -> None:
        self._batch_tfms = tfm_list(tfms)
        self._after_batch = Pipeline(self._batch_tfms, split_idx=self.split_idx)
        self._stop_workers()  # workers running the batch transforms hold the old ones

    @property
    def batch_sampler(self) -> Any:
        """What picks each batch's indices: a `BatchSampler`, or any iterable of index lists with a `len`."""
        return self._sampler

    @batch_sampler.setter
    def batch_sampler(self, sampler: Any) -> None:
        self._stop_workers()  # the workers' queue holds requests of the old sampler
        self._sampler = sampler

    def _reset(self) -> None:
        """Rebuild the item pipeline, the fetcher and the sampler (workers restart on next use)."""
        self._after_item = Pipeline(self._item_tfms, split_idx=self.split_idx)
        self._after_batch = Pipeline(self._batch_tfms, split_idx=self.split_idx)
        self._fetcher = Fetcher(
            self.dataset, self._after_item, self.on_bad_image, self.cache, self.collate_fn
        )
        shards = self.num_workers if self.cache and self.num_workers > 1 else 1
        n, gen = len(self.dataset), self._sample_gen
        self._sampler = BatchSampler(n, self.bs, self.shuffle, self.drop_last, gen, shards, self.skipped)
        self._torch_dl: torch.utils.data.DataLoader | None = None

    def _kwargs(self) -> dict:
        names = "bs shuffle drop_last num_workers device split_idx n_inp pin_memory persistent_workers seed"
        names += " on_bad_image cache multiprocessing_context prefetch_factor timeout collate_fn"
        names += " batch_in_workers"
        kw = {k: getattr(self, k) for k in names.split()}
        return {**kw, "after_item": self._item_tfms, "after_batch": self._batch_tfms}

    @classmethod
    def from_torch(cls, dl: torch.utils.data.DataLoader, **kwargs: Any) -> DataLoader:
        """Return a fastvision loader with `dl`'s dataset, batch size, shuffle, drop_last, workers, collate_fn."""
        return cls(dl.dataset, **{**torch_loader_options(dl), **kwargs})

    def new(self, dataset: Any = None, **overrides: Any) -> DataLoader:
        """Return a loader like this one (same transform instances) on `dataset`, overriding some args."""
        kw = self._kwargs()
        if "batch_size" in overrides:  # torch's name for bs
            kw.pop("bs")
        if dataset is not None and "split_idx" not in overrides:
            kw["split_idx"] = getattr(dataset, "split_idx", None)
            kw["split_idx"] = self.split_idx if kw["split_idx"] is None else kw["split_idx"]
        return type(self)(self.dataset if dataset is None else dataset, **{**kw, **overrides})

    def __len__(self) -> int:
        return len(self._sampler)

    def __repr__(self) -> str:
        kw = ", ".join(
            f"{k}={getattr(self, k)}" for k in "bs shuffle drop_last num_workers split_idx device".split()
        )
        return f"{type(self).__name__}(n={len(self.dataset)}, {kw})"

    # ----- state -----
    def state_dict(self) -> dict[str, Any]:
        """Return what the next batches depend on: the generator at the start of the running epoch (or now,
        between epochs), how many batches of that epoch were drawn, and the items left out as unreadable."""
        mid = self._in_epoch and self._pos > 0
        return {
            "gen": (self._epoch_state if mid else self._sample_gen.get_state()).clone(),
            "pos": self._pos if mid else 0,
            "skipped": dict(self.skipped),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()`: a mid-epoch state makes the next iteration continue that epoch."""
        missing = {"gen", "pos"} - set(state)
        if missing:
            raise KeyError(
                f"DataLoader.load_state_dict: the state has no {sorted(missing)}; pass dl.state_dict()."
            )
        self._sample_gen.set_state(state["gen"])
        self.skipped.clear()
        self.skipped.update(state.get("skipped", {}))
        self._replay = (state["gen"].clone(), int(state["pos"])) if state["pos"] > 0 else None
        self._in_epoch = False

    def _begin_epoch(self) -> None:
        """Seed the epoch (or replay the one a loaded state was in) and reset the position."""
        gen = self._sample_gen
        if self._replay is not None:
            state, start = self._replay
            self._replay = None
            gen.set_state(state)
        else:
            start = 0
            if self.seed is None:  # like torch's DataLoader: each epoch's randomness from the global RNG
                gen.manual_seed(int(torch.randint(0, 2**62, ())))
        self._epoch_state = gen.get_state()
        self._epoch_seed = int(torch.randint(0, 2**62, (), generator=gen))
        self._pos, self._start, self._in_epoch = start, start, True

    def _requests(self) -> Iterator[BatchRequest]:
        """This epoch's batches from its start position, without the items known to be unreadable."""
        for k, idxs in enumerate(self._sampler):
            if k < self._start:
                continue
            if self.skipped:
                idxs = [i for i in idxs if i not in self.skipped]
            if idxs:
                yield BatchRequest(k, list(idxs), (self._epoch_seed + k) % 2**63)

    # ----- iteration -----
    def close(self) -> None:
        """Stop this loader's worker processes now (they restart at the next iteration)."""
        self._stop_workers()

    def _stop_workers(self) -> None:
        shutdown_workers(getattr(self, "_torch_dl", None))
        self._torch_dl = None

    def _workers_fetcher(self) -> Fetcher:
        """The fetcher the workers receive: with the batch transforms when batches stay on the CPU."""
        tfms = self._after_batch.tfms
        wanted = self.batch_in_workers
        if wanted is None:
            wanted = any(getattr(t, "prefers_workers", False) for t in tfms)
        if not (wanted and tfms and self.device.type == "cpu"):
            return self._fetcher
        fetcher = copy.copy(self._fetcher)
        fetcher.after_batch = self._after_batch
        return fetcher

    def _torch_loader(self) -> torch.utils.data.DataLoader:
        if self._torch_dl is not None and not workers_alive(self._torch_dl):
            self._stop_workers()  # killed (e.g. Ctrl-C in a terminal reaches the workers): start new ones
        if self._torch_dl is None:
            pin = self.pin_memory and torch.cuda.is_available()
            opts = dict(multiprocessing_context=self.multiprocessing_context, timeout=self.timeout)
            opts.update(prefetch_factor=self.prefetch_factor, persistent_workers=self.persistent_workers)
            self._torch_dl = worker_loader(
                self._workers_fetcher(), _Requests(self), self.num_workers, pin, self._worker_gen, **opts
            )
        return self._torch_dl

    def _fetch_main(self, req: BatchRequest) -> Fetched | WorkerError:
        res = self._fetcher[req]
        if isinstance(res, Fetched) and self.pin_memory and torch.cuda.is_available():
            res = res.pin_memory()
        return res

    def _raw(self) -> Iterator[Fetched | WorkerError]:
        if self.num_workers == 0:
            for req in self._requests():
                yield self._fetch_main(req)
        else:
            yield from self._torch_loader()

    def _finish(self, res: Fetched | WorkerError, bad: list[str]) -> tuple | None:
        """Raise a worker's error, or move the batch to the device and run the batch transforms."""
        if isinstance(res, WorkerError):
            raise_worker_error(res)
        for i, path in res.bad:
            if i not in self.skipped:
                self.skipped[i] = path
                bad.append(path)
        if res.batch is None:
            return None
        if res.done:  # a worker ran the batch transforms
            return res.batch
        b = to_device(res.batch, self.device, non_blocking=self.pin_memory)
        return run_batch_tfms(b, self._after_batch, res.request.seed)

    def __iter__(self) -> Iterator[tuple]:
        self._begin_epoch()
        bad: list[str] = []
        try:
            for res in self._raw():
                b = self._finish(res, bad)
                if isinstance(res, Fetched):
                    self._pos = res.request.k + 1
                if b is not None:
                    yield b
            self._in_epoch = False
        except KeyboardInterrupt:
            self._stop_workers()  # the same Ctrl-C may have reached (and ended) the workers
            raise
        finally:
            warn_bad_images(bad)

    def one_batch(self) -> tuple:
        """Return the first batch (of a shuffled order when shuffling), loaded in the main process."""
        if len(self) == 0:
            raise ValueError(
                f"This DataLoader does not contain any batches: its dataset has {len(self.dataset)} items "
                f"and bs={self.bs}, drop_last={self.drop_last}. Use a smaller bs or drop_last=False."
            )
        state = self._sample_gen.get_state()
        seed = int(torch.randint(0, 2**62, (), generator=self._sample_gen))
        idxs = next(iter(self._sampler))
        self._sample_gen.set_state(state)  # peeking does not change the epochs' order
        bad: list[str] = []
        b = self._finish(self._fetch_main(BatchRequest(0, idxs, seed)), bad)
        warn_bad_images(bad)
        if b is None:
            raise ValueError(f"Every image of the first batch is unreadable: {', '.join(bad)}.")
        return b

    # ----- decoding and display -----
    def decode(self, b: Sequence) -> tuple:
        """Undo the batch transforms (in reverse, via their `decodes`) and move the batch to the CPU."""
        b = self._after_batch.decode(tuple(b))
        return tuple(o.cpu() if isinstance(o, torch.Tensor) else o for o in b)

    def decode_batch(self, b: Sequence, max_n: int = 9) -> list[tuple[torch.Tensor, str | None]]:
        """Return up to `max_n` (image C x H x W, float in [0,1] or uint8; label string or None) pairs."""
        return decoded_pairs(self.decode(b), self.dataset, self.n_inp, max_n)

    def show_batch(
        self,
        b: Sequence | None = None,
        max_n: int = 9,
        nrows: int | None = None,
        ncols: int | None = None,
        figsize: tuple[float, float] | None = None,
        unique: bool = False,
    ) -> Figure:
        """Draw up to `max_n` decoded images (`nrows * ncols` when both are given); `unique=True` augments one item."""
        if nrows and ncols:
            max_n = nrows * ncols
        batch: Any = b
        if unique:  # one item (random when shuffling) repeated, each copy augmented on its own
            idx = int(torch.randint(len(self.dataset), ())) if self.shuffle else 0
            seed = int(torch.randint(0, 2**62, ()))
            batch = self._finish(self._fetch_main(BatchRequest(0, [idx] * max_n, seed)), [])
        elif batch is None:
            batch = self.one_batch()
        return show_pairs(self.decode_batch(batch, max_n), nrows=nrows, ncols=ncols, figsize=figsize)


def _with_wrapped_classes(ds: Any) -> Any:
    """Return `ds`, or a shallow copy with `classes` set when it is a `Subset` of a dataset with class names."""
    if getattr(ds, "vocab", None) is not None or getattr(ds, "classes", None) is not None:
        return ds
    inner = ds
    while isinstance(inner, torch.utils.data.Subset):
        inner = inner.dataset
        names = getattr(inner, "vocab", None)
        names = getattr(inner, "classes", None) if names is None else names
        if names is not None:
            ds = copy.copy(ds)
            ds.classes = names
            return ds
    return ds


class DataLoaders:
    """A training and a validation loader (and any others) sharing a device and a path.

    `DataLoaders(train_dl, valid_dl)` accepts fastvision `DataLoader`s, plain torch `DataLoader`s
    (wrapped, batches moved to the device) or plain `Dataset`s (wrapped; the first is shuffled).
    Attributes not found here are looked up on the training loader, then on its dataset.
    """

    def __init__(self, *loaders: Any, path: str | Path = ".", device: torch.device | str | None = None):
        self.loaders = [self._wrap(dl, i) for i, dl in enumerate(loaders)]
        self.path = Path(path)
        if device is not None:
            self.device = device

    @staticmethod
    def _wrap(dl: Any, i: int) -> DataLoader:
        if isinstance(dl, DataLoader):
            return dl
        if isinstance(dl, torch.utils.data.DataLoader):
            return DataLoader.from_torch(dl, split_idx=min(i, 1))
        if hasattr(dl, "__getitem__") and hasattr(dl, "__len__"):
            kw: dict[str, Any] = {"shuffle": i == 0, "drop_last": i == 0, "num_workers": default_workers(dl)}
            return DataLoader(dl, split_idx=min(i, 1), **kw)
        raise TypeError(f"DataLoaders takes DataLoaders or Datasets; argument {i} is a {type(dl).__name__}.")

    def __getitem__(self, i: int) -> DataLoader:
        return self.loaders[i]

    def __len__(self) -> int:
        return len(self.loaders)

    def __iter__(self) -> Iterator[DataLoader]:
        return iter(self.loaders)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or "loaders" not in self.__dict__ or not self.loaders:
            raise AttributeError(name)
        for obj in (self.train, self.train.dataset):
            with contextlib.suppress(AttributeError):
                return getattr(obj, name)
        raise AttributeError(
            f"'DataLoaders' has no attribute {name!r}, nor has its training loader or dataset."
        )

    def __repr__(self) -> str:
        return f"DataLoaders({', '.join(map(repr, self.loaders))}, device={self.device})"

    @property
    def train(self) -> DataLoader:
        """The training loader (`dls[0]`)."""
        return self.loaders[0]

    @property
    def valid(self) -> DataLoader:
        """The validation loader (`dls[1]`)."""
        if len(self.loaders) < 2:
            raise IndexError("This DataLoaders has no validation loader (it holds one loader).")
        return self.loaders[1]

    @property
    def train_ds(self) -> Any:
        """The training dataset."""
        return self.train.dataset

    @property
    def valid_ds(self) -> Any:
        """The validation dataset."""
        return self.valid.dataset

    @property
    def device(self) -> torch.device:
        """The device of the loaders; setting it moves every loader and its batch transforms' tensors."""
        return self.loaders[0].device if self.loaders else default_device()

    @device.setter
    def device(self, device: torch.device | str) -> None:
        device = torch.device(device)
        for dl in self.loaders:
            dl.device = device
            for t in dl.after_batch.tfms:
                for k, v in list(vars(t).items()):
                    if isinstance(v, torch.Tensor):
                        setattr(t, k, v.to(device))

    def close(self) -> None:
        """Stop the worker processes of every loader (they restart at the next iteration)."""
        for dl in self.loaders:
            dl.close()

    def to(self, device: torch.device | str) -> DataLoaders:
        """Move every loader to `device` and return self."""
        self.device = device
        return self

    def cpu(self) -> DataLoaders:
        """Move every loader to the CPU."""
        return self.to("cpu")

    def cuda(self) -> DataLoaders:
        """Move every loader to the current CUDA device."""
        return self.to("cuda")

    @property
    def vocab(self) -> Any:
        """The training dataset's vocabulary (`vocab`, or torchvision's `classes`), or None."""
        ds = self.train_ds
        vocab = getattr(ds, "vocab", None)
        return getattr(ds, "classes", None) if vocab is None else vocab

    @property
    def c(self) -> int | None:
        """The number of classes (or outputs): the dataset's `c`, else `len(vocab)`, else None."""
        c = getattr(self.train_ds, "c", None)
        return c if c is not None else (len(self.vocab) if self.vocab is not None else None)

    @property
    def n_inp(self) -> int:
        """How many leading elements of a batch are inputs."""
        return self.train.n_inp

    @property
    def loss_func(self) -> Any:
        """A new instance of the loss the training dataset asks for (`loss_func`), or None when unknown."""
        lf = getattr(self.train_ds, "loss_func", None)
        if lf is None and getattr(self.train_ds, "classes", None) is not None:  # torchvision classification
            lf = torch.nn.CrossEntropyLoss
        return lf() if isinstance(lf, type) else copy.deepcopy(lf)

    def one_batch(self) -> tuple:
        """Return the first batch of the training loader."""
        return self.train.one_batch()

    def add_tfms(self, tfms: Any, event: str = "after_batch", loaders: Sequence[int] | None = None) -> None:
        """Add `tfms` to the `after_item` or `after_batch` transforms of `loaders` (default: all)."""
        if event not in ("after_item", "after_batch"):
            raise ValueError(f"event={event!r} is not one of 'after_item', 'after_batch'.")
        for i in range(len(self.loaders)) if loaders is None else loaders:
            dl = self.loaders[i]
            setattr(dl, event, [*getattr(dl, event).tfms, *tfm_list(tfms)])

    def decode_batch(self, b: Sequence, max_n: int = 9) -> list[tuple[torch.Tensor, str | None]]:
        """Decode a training batch into (image, label) pairs (see `DataLoader.decode_batch`)."""
        return self.train.decode_batch(b, max_n)

    def show_batch(self, b: Sequence | None = None, max_n: int = 9, **kwargs: Any) -> Figure:
        """Draw a training batch (see `DataLoader.show_batch`)."""
        return self.train.show_batch(b, max_n=max_n, **kwargs)

    def test_dl(self, items: Sequence, with_labels: bool = False, **kwargs: Any) -> DataLoader:
        """Return an inference loader on raw `items` with the validation transforms (no shuffle, no drop).

        The dataset comes from `valid_ds.test_set(items, with_labels)` (fastvision `Datasets`: paths,
        PIL images, bytes, arrays or tensors; its `.valid` split is used when it has one); a dataset
        without `test_set` accepts tensors or arrays.
        """
        dl = self.valid if len(self.loaders) > 1 else self.train
        src = dl.dataset
        if hasattr(src, "test_set"):
            ds = src.test_set(items, with_labels=with_labels)
            ds = getattr(ds, "valid", ds)
        elif isinstance(items, torch.Tensor) or all(hasattr(o, "shape") for o in items):
            ds = ItemsDataset(items)
        else:
            raise TypeError(
                f"test_dl on raw items needs a dataset with test_set(items, with_labels) (fastvision Datasets "
                f"has it); {type(src).__name__} does not, so pass tensors or arrays (got {type(items[0]).__name__})."
            )
        kwargs = {"shuffle": False, "drop_last": False, "split_idx": 1, "cache": False, **kwargs}
        return dl.new(ds, **kwargs)

    @classmethod
    def from_datasets(
        cls,
        dsets: Any,
        after_item: Any = None,
        after_batch: Any = None,
        bs: int = 64,
        val_bs: int | None = None,
        shuffle: bool = True,
        drop_last: bool | None = None,
        num_workers: int | None = None,
        device: torch.device | str | None = None,
        on_bad_image: str = "raise",
        cache: bool = False,
        seed: int | None = None,
        path: str | Path = ".",
        **kwargs: Any,
    ) -> DataLoaders:
        """Build the training and validation loaders of `dsets` (with `.train` and `.valid`).

        Training: `bs`, `shuffle`, `drop_last` (default = `shuffle`). Validation: `val_bs` (default
        `bs`), no shuffle, keeps the last partial batch. Both share the transform instances; other
        kwargs go to both `DataLoader`s, and keys prefixed `val_` override the validation loader only.
        Transforms' `setup(train_loader)` runs once (e.g. `Normalize` without stats).
        """
        val_kw = {k[4:]: kwargs.pop(k) for k in list(kwargs) if k.startswith("val_")}
        kwargs.setdefault("n_inp", getattr(dsets, "n_inp", None))
        common = dict(after_item=after_item, after_batch=after_batch, num_workers=num_workers, device=device)
        common.update(on_bad_image=on_bad_image, cache=cache, seed=seed, **kwargs)
        drop = shuffle if drop_last is None else drop_last
        train = DataLoader(dsets.train, bs=bs, shuffle=shuffle, drop_last=drop, split_idx=0, **common)
        valid = DataLoader(
            dsets.valid, bs=val_bs or bs, shuffle=False, drop_last=False, split_idx=1, **{**common, **val_kw}
        )
        train.after_item.setup(train)
        train.after_batch.setup(train)
        return cls(train, valid, path=path)

    @classmethod
    def from_dsets(
        cls,
        *datasets: Any,
        bs: int = 64,
        shuffle: bool = True,
        device: torch.device | str | None = None,
        path: str | Path = ".",
        **kwargs: Any,
    ) -> DataLoaders:
        """Wrap any torch datasets (first = training, shuffled, drops its last partial batch).

        `kwargs` go to every `DataLoader` (e.g. `num_workers`, `after_batch`); in-memory
        `TensorDataset`s load in the main process unless `num_workers` is given. A `Subset` (e.g. from
        `random_split`) of a dataset with class names (`classes`, as torchvision's, or `vocab`) keeps them:
        the loader gets a shallow copy of the subset with `classes` set, so `dls.vocab`, `show_batch` and
        the loss show and use the names.
        """
        dls = []
        for i, ds in enumerate(datasets):
            ds = _with_wrapped_classes(ds)
            kw = {"num_workers": default_workers(ds), "shuffle": i == 0 and shuffle, **kwargs}
            kw.setdefault("drop_last", kw["shuffle"])
            dls.append(DataLoader(ds, bs=bs, device=device, split_idx=min(i, 1), **kw))
        return cls(*dls, path=path)
