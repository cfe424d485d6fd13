"""Data-parallel training across processes: the same script runs in one process and under `torchrun`.

What happens (docs/distributed.md has the command lines):
- Detection: torchrun sets WORLD_SIZE, RANK and LOCAL_RANK. With WORLD_SIZE > 1 every `fit` adds a
  `DistributedTrainer` (`learn.distrib_ctx(sync_bn=..., **ddp_kwargs)` adds one with chosen options);
  in a single process nothing changes.
- `before_fit` (of a fit; not of validate/get_preds): initialise the process group if needed (gloo on
  CPU, nccl for CUDA tensors), put each process on `cuda:LOCAL_RANK`, turn BatchNorm into
  SyncBatchNorm (CUDA and `sync_bn`), wrap `learn.model` in `DistributedDataParallel`, give the train
  and valid loaders a `DistributedBatchSampler`, and mute the bars, the table, `print` and the file
  loggers (CSVLogger, TensorBoardCallback, any callback with `rank0_only = True`) on ranks other than 0.
- Training batches: every rank permutes the items with `seed + epoch` (the loader's seed, broadcast
  from rank 0) and takes every `world`-th one, padded so all ranks run the same number of steps.
  `learn.loss` is averaged over the ranks after each batch (one scalar all-reduce), so the smoothed
  loss, NaN checks and lr_find's stopping decisions are the same everywhere.
- Validation: exact strided shards (no padding). In `after_validate`, before the Recorder (order 50)
  reads the values, each metric's accumulators are combined over the ranks with `sync_metric`, so the
  printed table and the trackers (SaveModel, EarlyStopping, ReduceLROnPlateau) see global numbers.
- `after_fit` runs in a second callback at order 100, after every other callback's `after_fit`, so a
  callback that copied `learn.model.state_dict()` inside the fit (EarlyStopping, LRFinder) restores it
  into the same wrapped model: then DDP is unwrapped, BatchNorm put back, samplers and output restored.
- Stalls: the process group is created with a `timeout` (`DEFAULT_TIMEOUT`, 10 minutes, instead of
  torch's 30; `setup_distrib(timeout=...)`, `distrib_ctx(learn, timeout=...)`,
  `DistributedTrainer(timeout=...)` or `FASTVISION_DIST_TIMEOUT` seconds in the environment): a
  collective call that waits longer for a stalled or dead rank raises an error instead of hanging.
- `learn.save` and `learn.export` write on rank 0 only; `learn.load` waits at a barrier first, so call
  them on every rank. `validate`, `get_preds` and `predict` outside a fit run on the full data in each
  process, with no collective calls (safe to call on rank 0 only).
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .callback.core import Callback

__all__ = [
    "rank_distrib",
    "num_distrib",
    "distrib_barrier",
    "rank0_first",
    "setup_distrib",
    "teardown_distrib",
    "sync_metric",
    "DistributedBatchSampler",
    "DistributedTrainer",
    "distrib_ctx",
    "DEFAULT_TIMEOUT",
]

DEFAULT_TIMEOUT = 600.0  # seconds a collective call waits for the other ranks (torch's default: 1800)

_MUTED = ("ProgressCallback", "CSVLogger", "TensorBoardCallback")  # class names, muted on ranks > 0


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank_distrib() -> int:
    """Return this process's rank: the process group's, else torchrun's `RANK`, else 0."""
    return dist.get_rank() if _initialized() else int(os.environ.get("RANK", 0))


def num_distrib() -> int:
    """Return the number of processes: the process group's size, else torchrun's `WORLD_SIZE`, else 1."""
    return dist.get_world_size() if _initialized() else int(os.environ.get("WORLD_SIZE", 1))


def distrib_barrier() -> None:
    """Wait until every process gets here (a no-op without a process group of more than one process)."""
    if _initialized() and dist.get_world_size() > 1:
        dist.barrier()


def _timeout(timeout: float | None) -> datetime.timedelta:
    """The process group timeout: `timeout` seconds, else `$FASTVISION_DIST_TIMEOUT`, else `DEFAULT_TIMEOUT`."""
    if timeout is None:
        env = os.environ.get("FASTVISION_DIST_TIMEOUT")
        try:
            timeout = float(env) if env else DEFAULT_TIMEOUT
        except ValueError:
            raise ValueError(
                f"FASTVISION_DIST_TIMEOUT={env!r}; expected a number of seconds, e.g. 600."
            ) from None
    if not (math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"timeout={timeout!r}; expected a positive number of seconds, e.g. 600.")
    return datetime.timedelta(seconds=timeout)


def setup_distrib(backend: str | None = None, timeout: float | None = None) -> bool:
    """Initialise the default process group from torchrun's environment if needed; True if this call did it.

    Args:
        backend: default gloo, plus nccl for CUDA tensors when CUDA is available; each process uses
            `cuda:LOCAL_RANK`.
        timeout: seconds a collective call (a barrier, an all-reduce) waits for the other ranks before it
            raises, e.g. when one is stopped or dead (None: `$FASTVISION_DIST_TIMEOUT` or `DEFAULT_TIMEOUT`).
    """
    if not dist.is_available() or _initialized() or int(os.environ.get("WORLD_SIZE", 1)) <= 1:
        return False
    delay = _timeout(timeout)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend or ("cpu:gloo,cuda:nccl" if cuda else "gloo"), timeout=delay)
    return True


def teardown_distrib() -> None:
    """Destroy the default process group if there is one."""
    if _initialized():
        dist.destroy_process_group()


def rank0_first(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run `func(*args, **kwargs)` on rank 0, then on the other ranks (e.g. a download or a cache build)."""
    setup_distrib()
    if rank_distrib() == 0:
        res = func(*args, **kwargs)
        distrib_barrier()
        return res
    distrib_barrier()
    return func(*args, **kwargs)


def _to_comm(t: torch.Tensor) -> torch.Tensor:
    """Move `t` where the process group can reduce it: CUDA for nccl alone, the CPU for gloo alone; else stay."""
    backend = dist.get_backend()
    if backend == "nccl" and t.device.type != "cuda":
        return t.to(torch.device("cuda", torch.cuda.current_device()))
    if backend == "gloo" and t.device.type != "cpu":
        return t.cpu()
    return t  # e.g. 'cpu:gloo,cuda:nccl': CUDA tensors reduce on the GPU without a host sync


def _gather_cat(xs: list[torch.Tensor], device: Any) -> list[torch.Tensor]:
    """Concatenate the tensors of every rank (rank order); ranks may hold different lengths or none."""
    local = torch.cat(xs).cpu() if xs else None
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, local)
    parts = [p for p in parts if p is not None]
    return [torch.cat(parts).to(xs[0].device if xs else device)] if parts else []


def sync_metric(m: Any, device: Any = "cpu") -> None:
    """Combine the state of metric `m` over all processes, in place (a no-op in one process).

    A metric with a `sync_distrib()` method does it itself; one with `total` and `count` (AvgMetric,
    the Recorder's loss) gets both summed; one with `preds` and `targs` lists (AccumMetric) gets the
    lists of every rank concatenated. Any other metric keeps its per-rank value, with a warning.
    """
    if not _initialized() or dist.get_world_size() < 2:
        return
    if callable(getattr(m, "sync_distrib", None)):
        m.sync_distrib()
    elif hasattr(m, "total") and hasattr(m, "count"):
        was = m.total
        total = _to_comm(torch.as_tensor(was, dtype=torch.float64).detach().clone())
        count = torch.tensor(float(m.count), dtype=torch.float64, device=total.device)
        dist.all_reduce(total)
        dist.all_reduce(count)
        m.total = total.to(was.device, torch.float32) if isinstance(was, torch.Tensor) else float(total)
        m.count = int(count.item())
    elif isinstance(getattr(m, "preds", None), list) and isinstance(getattr(m, "targs", None), list):
        m.preds, m.targs = _gather_cat(m.preds, device), _gather_cat(m.targs, device)
    elif not getattr(m, "_warned_distrib", False):
        warnings.warn(
            f"Metric {getattr(m, 'name', m)!r} has no `total`/`count`, no `preds`/`targs` and no "
            "`sync_distrib()`, so under DDP each process reports its own shard's value (rank 0's is "
            "printed). Define `sync_distrib()` to combine it; don't monitor it with EarlyStopping.",
            stacklevel=2,
        )
        m._warned_distrib = True


class DistributedBatchSampler(torch.utils.data.Sampler):
    """Yield this rank's batches: each epoch every rank permutes with `seed + epoch` and keeps items `rank::world`.

    Args:
        n: the number of items, as the loader's.
        bs: the batch size, as the loader's.
        shuffle: as the loader's.
        drop_last: as the loader's.
        seed: the same on every rank.
        rank: this process.
        world: the process count.
        pad: repeat items so every rank gets `ceil(n / world)` of them and runs as many batches as the
            others (training, where DDP steps together); False shards exactly (validation sums).
        fallback: the loader's own sampler, used while `active` is False (nested validate/get_preds).
    """

    def __init__(
        self,
        n: int,
        bs: int,
        shuffle: bool,
        drop_last: bool,
        seed: int,
        rank: int,
        world: int,
        pad: bool = True,
        fallback: Any = None,
    ) -> None:
        self.n, self.bs, self.shuffle, self.drop_last, self.seed = n, bs, shuffle, drop_last, seed
        self.rank, self.world, self.pad, self.fallback = rank, world, pad, fallback
        self.epoch, self.active = 0, True

    def set_epoch(self, epoch: int) -> None:
        """Use the permutation of `epoch` from the next iteration on."""
        self.epoch = epoch

    def _n_local(self) -> int:
        return math.ceil(self.n / self.world) if self.pad else len(range(self.rank, self.n, self.world))

    def __len__(self) -> int:
        if not self.active and self.fallback is not None:
            return len(self.fallback)
        k = self._n_local()
        return k // self.bs if self.drop_last else math.ceil(k / self.bs)

    def __iter__(self) -> Iterator[list[int]]:
        if not self.active and self.fallback is not None:
            yield from self.fallback
            return
        if self.shuffle:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(self.n)
        total = self._n_local() * self.world
        if self.pad and self.n and total > self.n:
            order = torch.cat([order, order.repeat(math.ceil(total / self.n))[: total - self.n]])
        mine = order[self.rank : total if self.pad else self.n : self.world]
        for k in range(len(self)):
            yield mine[k * self.bs : (k + 1) * self.bs].tolist()


def _swap_sync_bn(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    """Replace BatchNorm children by SyncBatchNorm sharing their parameters and buffers; return what to put back."""
    found: list[tuple[nn.Module, str, nn.Module]] = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, nn.SyncBatchNorm)
    ]
    for parent, name, child in found:
        setattr(parent, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))
    return found


class DistributedTrainer(Callback):
    """Train with `DistributedDataParallel` across the processes torchrun started (see the module docstring).

    Args:
        sync_bn: use SyncBatchNorm during the fit when training on CUDA (True).
        timeout: seconds before a collective call waiting for a stalled rank raises, if this callback
            creates the process group (None: see `setup_distrib`).
        **ddp_kwargs: passed to `DistributedDataParallel` (e.g. `find_unused_parameters=True`).
    """

    order = 5  # after ChannelsLast (-1), before MixedPrecision (10), the Recorder (50) and the trackers

    def __init__(self, sync_bn: bool = True, timeout: float | None = None, **ddp_kwargs: Any) -> None:
        self.sync_bn, self.timeout, self.ddp_kwargs = sync_bn, timeout, ddp_kwargs
        self.wrapped = False
        self._teardown = _DistributedTeardown(self)

    def _live(self) -> bool:
        return self.wrapped and self.learn.run_mode.trains

    def before_fit(self) -> None:
        """Wrap the model in DDP, shard the loaders and mute ranks other than 0 (fits only)."""
        learn = self.learn
        if not learn.run_mode.trains or self.wrapped:
            return
        if setup_distrib(
            timeout=self.timeout
        ):  # created here (no distrib_ctx): destroy it when the process ends
            atexit.register(teardown_distrib)
        if not _initialized() or dist.get_world_size() < 2:
            return
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self._bn, self._samplers, self._stdout, self.wrapped = [], [], None, True
        learn.add_cb(self._teardown)  # its after_fit undoes what follows, also after an error
        dev = self._place(learn)
        cuda = dev is not None and dev.type == "cuda"
        self._bn = _swap_sync_bn(learn.model) if self.sync_bn and cuda else []
        self._samplers = [self._shard(learn.dls.train, True)]
        with contextlib.suppress(IndexError, AttributeError):
            self._samplers.append(self._shard(learn.dls.valid, False))
        if self.rank != 0:
            for c in learn.cbs:  # `run` comes back on by itself after after_fit
                if type(c).__name__ in _MUTED or getattr(c, "rank0_only", False):
                    c.run = False
            self._stdout, sys.stdout = sys.stdout, open(os.devnull, "w")  # noqa: SIM115
        if any(p.requires_grad for p in learn.model.parameters()):
            kw = {"device_ids": [dev.index]} if cuda and dev is not None else {}
            learn.model = nn.parallel.DistributedDataParallel(learn.model, **{**kw, **self.ddp_kwargs})

    def _place(self, learn: Any) -> torch.device | None:
        """On CUDA, move the loaders and the model to `cuda:LOCAL_RANK`."""
        dev = learn.device
        if dev is not None and dev.type == "cuda":
            dev = torch.device(
                "cuda", int(os.environ.get("LOCAL_RANK", self.rank % torch.cuda.device_count()))
            )
            torch.cuda.set_device(dev)
            learn.dls.device = dev
            learn.prepare_device()
        return dev

    def _shard(self, dl: Any, train: bool) -> tuple[Any, Any, DistributedBatchSampler] | None:
        if not hasattr(dl, "batch_sampler") or not hasattr(dl, "seed"):
            warnings.warn(
                f"DistributedTrainer can't shard a {type(dl).__name__}; every process reads all of it. "
                "Use fastvision DataLoaders.",
                stacklevel=3,
            )
            return None
        seed = dl.seed if dl.seed is not None else int(torch.randint(0, 2**62, ()))
        t = _to_comm(torch.tensor([seed % 2**62], dtype=torch.int64))
        dist.broadcast(t, 0)  # the same permutation on every rank
        shuffle, drop = (dl.shuffle, dl.drop_last) if train else (False, False)
        old = dl.batch_sampler
        s = DistributedBatchSampler(
            len(dl.dataset), dl.bs, shuffle, drop, int(t.item()), self.rank, self.world, train, old
        )
        dl.batch_sampler = s  # the loader restarts its workers with the new sampler
        return dl, old, s

    def _activate(self, i: int) -> None:
        if self.wrapped and len(self._samplers) > i and (s := self._samplers[i]) is not None:
            s[2].active = self._live()

    def before_epoch(self) -> None:
        """Draw this epoch's permutation."""
        if self._live() and self._samplers[0] is not None:
            self._samplers[0][2].set_epoch(self.learn.epoch)

    def before_train(self) -> None:
        """Shard the training loader (not in a validate/get_preds nested in the fit)."""
        self._activate(0)

    def before_validate(self) -> None:
        """Shard the validation loader (not in a validate/get_preds nested in the fit)."""
        self._activate(1)

    def after_loss(self) -> None:
        """Average the (detached) training loss over the ranks."""
        learn = self.learn
        if learn.training and self._live() and isinstance(learn.loss, torch.Tensor):
            dev = learn.loss.device
            loss = _to_comm(learn.loss.detach().float().mean())
            dist.all_reduce(loss)
            learn.loss = (loss / self.world).to(dev)

    def _sync(self, valid: bool) -> None:
        rec = getattr(self.learn, "recorder", None)
        if not self._live() or rec is None:
            return
        mets = list(self.learn.metrics) if (rec.valid_metrics if valid else rec.train_metrics) else []
        for m in [rec.loss, *mets] if valid else mets:
            sync_metric(m, self.learn.device or "cpu")

    def after_train(self) -> None:
        """Combine the training metrics over the ranks (with `Recorder(train_metrics=True)`)."""
        self._sync(False)

    def after_validate(self) -> None:
        """Combine the validation loss and metrics over the ranks before the Recorder reads them."""
        self._sync(True)

    def unwrap(self) -> None:
        """Undo `before_fit`: unwrap the model from DDP, put BatchNorm, the loaders' samplers and stdout back."""
        learn = self.learn
        if isinstance(learn.model, nn.parallel.DistributedDataParallel):
            learn.model = learn.model.module
        for parent, name, child in self._bn:
            setattr(parent, name, child)
        for item in self._samplers:
            if item is not None:
                dl, old, _ = item
                dl.batch_sampler = old
        if self._stdout is not None:
            sys.stdout.close()
            sys.stdout = self._stdout
        self.wrapped = False


class _DistributedTeardown(Callback):
    """Undo `DistributedTrainer.before_fit` after every other callback's `after_fit`."""

    order = 100
    name = "distributed_teardown"

    def __init__(self, trainer: DistributedTrainer) -> None:
        self.trainer = trainer

    def after_fit(self) -> None:
        """Undo the trainer's `before_fit` (`DistributedTrainer.unwrap`) and remove this callback."""
        learn = self.learn
        if not learn.run_mode.trains or not self.trainer.wrapped:
            return
        self.trainer.unwrap()
        learn.remove_cb(self)


def auto_callbacks(learn: Any) -> list[Callback]:
    """Return `[DistributedTrainer()]` when torchrun started several processes and none is on `learn`."""
    if num_distrib() > 1 and not any(isinstance(c, DistributedTrainer) for c in learn.cbs):
        return [DistributedTrainer()]
    return []


@contextlib.contextmanager
def distrib_ctx(
    learn: Any, sync_bn: bool = True, timeout: float | None = None, **ddp_kwargs: Any
) -> Iterator[Any]:
    """Train `learn` with DDP inside the block when torchrun started several processes; else do nothing.

    Initialises the process group if needed, with `timeout` (see `setup_distrib`), and destroys it on exit
    if it did.
    """
    created = setup_distrib(timeout=timeout)
    cb = None
    if num_distrib() > 1:
        learn.remove_cb(DistributedTrainer)
        cb = DistributedTrainer(sync_bn, timeout, **ddp_kwargs)
        learn.add_cb(cb)
    try:
        yield learn
    finally:
        if cb is not None:
            learn.remove_cb(cb)
        if created:
            teardown_distrib()
