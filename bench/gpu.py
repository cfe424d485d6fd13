"""Every GPU figure of BENCH.md in one command, tested beforehand on the CPU with `--device cpu --quick`.

Sections, in order of importance (each in its own try/except, so one failure is reported and the others
still run; a section whose estimated time no longer fits in `--budget` seconds is skipped and says so):

1. `cuda_tests`: the `cuda`-marked tests (`pytest -m cuda`), in a subprocess.
2. `augment`: batch augmentation of a 64x3x460x460 uint8 batch to 224 (goal <= 2 ms on an H100) against
   the same draws done fastai-style (two resamples), with bench/augment.py's functions.
3. `sync_debug`: a fit with metrics (training and validation) under `torch.cuda.set_sync_debug_mode`,
   after a warm-up: the detector that mode 'error' raises on, run in mode 'warn' with every warning
   recorded, so one run names every synchronising call with its Python stack and how often it happened
   (per step or not); mode 'error' (the first call only) if this torch's warnings do not reach the
   recorder (checked on an `.item()` first). Variants: synthetic on-device batches (the loop alone, bf16
   and fp16), and fashion-pets with decoding in the workers and on the device.
4. `<arch>/<precision>/<data>`: training throughput of `vision_learner(dls, arch, pretrained=False)` with
   channels-last and `to_fp16`/`to_bf16`, timed over `--batches` batches after `--warmup` (the clock
   synchronises only at the two ends), on `synthetic` data already on the device, and end to end from the
   fashion-pets JPEG folder: `DataBlock(Resize(460)) + aug_transforms(size=224, min_scale=0.75)` with
   decoding in the loader workers (`workers`) and with `decode_on_device=True` (`device`, nvJPEG on a GPU).
   Peak GPU memory (`torch.cuda.max_memory_allocated`) per run.
5. `fastai/<arch>/<precision>`: the same end-to-end run with fastai 2.8.12 in its own interpreter
   (`--fastai-python`, default ~/fastai-env/bin/python), skipped when absent.

The fashion-pets folder (`make_fashion_pets` from the real Fashion-MNIST test split) is built in
background processes while the tests run, under `--data` (reused when already there).

Writes `<out>.json` and `<out>.md` after every section (default `bench/results/gpu-<device-name>`), and
prints the markdown: the device, the versions, a table of figure / value / goal / met?, and the
throughput of every run. Benchmarks print; they never fail.

    python bench/gpu.py                              # a single-GPU machine: < 8 minutes (--budget 450)
    python bench/gpu.py --device cpu --quick         # the same code paths on the CPU, tiny sizes (CI)
    python bench/gpu.py --only augment sync_debug    # some sections (names start with these)

On a bare GPU machine: `--fmnist DIR` (a folder holding t10k-images-idx3-ubyte.gz and
t10k-labels-idx1-ubyte.gz), `--fastai-python python3` when fastai is importable there, `--out PREFIX`.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a plain checkout (e.g. a GPU machine without the venv)
    sys.path.insert(0, str(ROOT))

from fastvision.callback.core import (  # noqa: E402
    Callback,
    CancelFitException,
    CancelTrainException,
    CancelValidException,
)

PAT = r"^(.+)_\d+\.jpg$"
# only the test files holding such tests are collected (the others may need packages a GPU machine lacks)
CUDA_MARK = "pytest.mark.cuda"
SYNC_MESSAGE = "called a synchronizing CUDA operation"
DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")
AMP = ("bf16", "fp16")
DATA_KINDS = ("synthetic", "workers", "device")


# ------------------------------------------------------------------------------------------ settings
@dataclass
class Settings:
    """What one run measures; `--quick` shrinks everything to a CPU smoke run of the same code paths."""

    device: str
    quick: bool
    models: list[str]
    precisions: list[str]
    bs: int
    item_size: int
    size: int
    warmup: int
    batches: int
    n_images: int
    workers: int
    aug_bs: int
    aug_side: int
    aug_reps: int
    run_timeout: float
    tests_timeout: float
    budget: float
    data: str
    fmnist: str | None
    fastai_python: str
    threads: int | None = None
    estimates: dict[str, float] = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        """Whether the runs go to a CUDA device."""
        return torch.device(self.device).type == "cuda"


def make_settings(a: argparse.Namespace) -> Settings:
    """Fill the defaults that depend on `--quick` and the device."""
    quick, cuda = a.quick, torch.device(a.device).type == "cuda"
    models = a.models or (["resnet18"] if quick else ["resnet34", "resnet50"])
    precisions = a.precisions or (["bf16", "fp16"] if quick else ["bf16", "fp16", "fp32"])
    bs = a.bs or (8 if quick else 128)
    warmup = a.warmup or (1 if quick else 10)
    batches = a.batches or (2 if quick else 30)
    # enough training images (90 %) for warm-up + timed batches in one epoch, within the 10k test split
    n_images = a.n_images or min(10_000, math.ceil((warmup + batches + 2) * bs / 0.9))
    workers = (
        a.workers if a.workers is not None else (1 if quick else max(1, min(16, os.cpu_count() or 2) - 1))
    )
    fmnist = a.fmnist or (str(DEBIAN_FMNIST) if DEBIAN_FMNIST.is_dir() else None)
    if cuda:
        estimates = {"tests": 90, "augment": 20, "sync": 60, "synthetic": 15, "e2e": 30, "fastai": 60}
    else:
        estimates = {"tests": 0, "augment": 10, "sync": 20, "synthetic": 5, "e2e": 10, "fastai": 45}
    if not quick and not cuda:  # full sizes on a CPU: everything is slower
        estimates = {k: v * 10 for k, v in estimates.items()}
    return Settings(
        device=a.device,
        quick=quick,
        models=models,
        precisions=precisions,
        bs=bs,
        item_size=a.item_size or (40 if quick else 460),
        size=a.size or (32 if quick else 224),
        warmup=warmup,
        batches=batches,
        n_images=n_images,
        workers=workers,
        aug_bs=8 if quick else 64,
        aug_side=64 if quick else 460,
        aug_reps=2 if quick else 20,
        run_timeout=60.0 if quick else 120.0,
        tests_timeout=240.0,
        budget=a.budget,
        data=a.data,
        fmnist=fmnist,
        fastai_python=a.fastai_python,
        # like tests/conftest.py: one intra-op thread on a small CPU, where workers oversubscribe it
        threads=a.threads if a.threads is not None else (1 if quick and not cuda else None),
        estimates=estimates,
    )


# ------------------------------------------------------------------------------------------ helpers
def sync(device: str | torch.device) -> None:
    """Wait for the device's queued work (no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: str) -> None:
    """Free cached blocks and restart the peak-memory counter (CUDA only)."""
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: str) -> float | None:
    """Peak memory allocated by tensors since `reset_peak`, in GiB (None on the CPU)."""
    if torch.device(device).type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


def short_trace(limit: int = 6000) -> str:
    """The current exception's traceback, its last `limit` characters."""
    return traceback.format_exc()[-limit:]


def device_name(device: str) -> str:
    """The GPU's name, or the CPU model for a CPU run."""
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return "CPU " + line.split(":", 1)[1].strip()
    return "CPU " + (platform.processor() or platform.machine())


def env_info(s: Settings) -> dict[str, Any]:
    """Versions and the machine, for the report's header."""
    import torchvision

    import fastvision

    info: dict[str, Any] = {
        "device": s.device,
        "device_name": device_name(s.device),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "fastvision": fastvision.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    if s.cuda:
        props = torch.cuda.get_device_properties(s.device)
        info.update(
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            capability=f"{props.major}.{props.minor}",
            sms=props.multi_processor_count,
            bf16_supported=torch.cuda.is_bf16_supported(),
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
            tf32_cudnn=torch.backends.cudnn.allow_tf32,
        )
    return info


# ------------------------------------------------------------------------------------------ data
def _build_part(dest: str, n: int, seed: int, source: str | None, log: str) -> None:
    """Write one part of the fashion-pets folder (in a child process); a failure goes to `log`."""
    try:
        from fastvision.data.fashion_pets import make_fashion_pets

        make_fashion_pets(dest, n=n, seed=seed, source=source, split="test")
    except BaseException:
        Path(log).write_text(traceback.format_exc())
        raise SystemExit(1) from None


class PetsFolder:
    """The fashion-pets JPEG folder, built in background processes (one part each, in parallel).

    The processes are forked (where the platform can) before this process touches the GPU, so they start
    at once with fastvision already imported; they only use PIL and numpy.
    """

    def __init__(self, s: Settings) -> None:
        self.parts = max(1, min(16, os.cpu_count() or 1, math.ceil(s.n_images / 16)))
        self.path = Path(s.data) / f"fashion-pets-{s.n_images}-{self.parts}"
        self.n, self.fmnist = s.n_images, s.fmnist
        self.procs: list[tuple[Any, Path]] = []
        self.error: str | None = None
        self.t0 = time.perf_counter()
        self.build_s: float | None = None

    def start(self) -> None:
        """Start one `make_fashion_pets` process per part (each returns at once when already built)."""
        import multiprocessing

        import fastvision.data.fashion_pets  # noqa: F401 - imported once, before the fork

        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
        per = math.ceil(self.n / self.parts)
        self.path.mkdir(parents=True, exist_ok=True)
        for i in range(self.parts):
            n = min(per, self.n - i * per)
            if n <= 0:
                break
            dest, log = self.path / f"part{i}", self.path / f"part{i}.log"
            log.unlink(missing_ok=True)
            proc = ctx.Process(target=_build_part, args=(str(dest), n, i, self.fmnist, str(log)), daemon=True)
            proc.start()
            self.procs.append((proc, log))

    def wait(self, timeout: float) -> Path:
        """Wait for every part; return the folder, or raise RuntimeError with the first failure's log."""
        deadline = time.perf_counter() + timeout
        for proc, log in self.procs:
            proc.join(max(1.0, deadline - time.perf_counter()))
            if proc.is_alive():
                proc.kill()
                proc.join()
                self.error = self.error or f"building took more than {timeout:.0f} s"
            elif proc.exitcode != 0 and self.error is None:
                tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
                self.error = f"make_fashion_pets exited with {proc.exitcode}: {tail.strip()}"
        self.procs = []
        if self.build_s is None:
            self.build_s = time.perf_counter() - self.t0
        if self.error:
            raise RuntimeError(f"the fashion-pets folder {self.path} could not be built: {self.error}")
        return self.path


def _wait(pets: PetsFolder | None, deadline: float) -> Path:
    """The built fashion-pets folder (waiting for it at most until `deadline`)."""
    if pets is None:
        raise ValueError("this run reads the fashion-pets folder, but none was given")
    return pets.wait(max(1.0, deadline - time.perf_counter()))


def pets_dls(s: Settings, path: Path, on_device: bool) -> Any:
    """The Pets chapter's DataLoaders on fashion-pets: Resize(item_size) + aug_transforms(size)."""
    from fastvision.data.block import CategoryBlock, DataBlock
    from fastvision.data.items import RandomSplitter, RegexLabeller, get_image_files, using_attr
    from fastvision.vision.augment import aug_transforms
    from fastvision.vision.block import ImageBlock
    from fastvision.vision.resize import Resize

    dblock = DataBlock(
        blocks=(ImageBlock, CategoryBlock),
        get_items=get_image_files,
        splitter=RandomSplitter(0.1, seed=0),
        get_y=using_attr(RegexLabeller(PAT), "name"),
        item_tfms=Resize(s.item_size),
        batch_tfms=aug_transforms(size=s.size, min_scale=0.75),
    )
    return dblock.dataloaders(
        path, bs=s.bs, num_workers=s.workers, device=s.device, decode_on_device=on_device
    )


class DeviceBatches:
    """`n` times the same batch, already on the device: training data that costs nothing to load."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, n: int) -> None:
        self.x, self.y, self.n, self.bs = x, y, n, len(x)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return iter([(self.x, self.y)] * self.n)

    def __len__(self) -> int:
        return self.n


class SyntheticDLs:
    """Train and valid `DeviceBatches` of random images and labels, shaped like the fashion-pets batches."""

    def __init__(self, s: Settings, n_train: int, n_valid: int = 2, c: int = 10) -> None:
        g = torch.Generator().manual_seed(0)
        x = torch.rand(s.bs, 3, s.size, s.size, generator=g).to(s.device)
        y = torch.randint(0, c, (s.bs,), generator=g).to(s.device)
        self.train, self.valid = DeviceBatches(x, y, n_train), DeviceBatches(x, y, n_valid)
        self.device, self.c, self.path, self.n_inp = torch.device(s.device), c, Path("."), 1


def make_learner(s: Settings, dls: Any, arch: str, precision: str, cbs: Any = None) -> Any:
    """`vision_learner(dls, arch, pretrained=False, metrics=[accuracy, error_rate])`, channels-last, AMP."""
    import torchvision.models as tvm

    from fastvision.losses import CrossEntropyLossFlat
    from fastvision.metrics import accuracy, error_rate
    from fastvision.vision.learner import vision_learner

    extra = {"n_out": dls.c, "loss_func": CrossEntropyLossFlat()} if isinstance(dls, SyntheticDLs) else {}
    learn = vision_learner(
        dls, getattr(tvm, arch), pretrained=False, metrics=[accuracy, error_rate], cbs=cbs, **extra
    )
    learn.to_channels_last()
    if precision in AMP:
        learn.to_fp16(amp_mode=precision)
    return learn


# ------------------------------------------------------------------------------------------ callbacks
class Clock(Callback):
    """Time `n` training batches after `warmup` ones, synchronising only at the two ends, then stop the fit.

    Validation is skipped (an epoch shorter than the run goes on to the next); past `deadline` (a
    `time.perf_counter()` value) the fit stops with the batches timed so far.
    """

    order = 100  # after every other callback's after_batch

    def __init__(self, warmup: int, n: int, deadline: float, device: str) -> None:
        self.warmup, self.n, self.deadline, self.device = warmup, n, deadline, device
        self.k, self.t0, self.t1, self.timed = 0, 0.0, 0.0, 0

    def before_validate(self) -> None:
        """Skip validation: only training steps are timed."""
        raise CancelValidException()

    def after_batch(self) -> None:
        """Start the clock after the warm-up, stop it after `n` more batches or at the deadline."""
        if not self.learn.training:
            return
        self.k += 1
        if self.k == self.warmup:
            sync(self.device)
            self.t0 = time.perf_counter()
        elif self.k > self.warmup and (self.k == self.warmup + self.n or time.perf_counter() > self.deadline):
            sync(self.device)
            self.t1, self.timed = time.perf_counter(), self.k - self.warmup
            raise CancelFitException()
        elif time.perf_counter() > self.deadline:
            raise CancelFitException()  # still warming up: nothing timed


class SyncRecorder:
    """Record each 'synchronizing CUDA operation' warning with its Python stack, by call site."""

    def __init__(self) -> None:
        self.sites: dict[str, dict[str, Any]] = {}
        self.phase = ""  # 'train' or 'validate', set by `SyncCheck`

    @contextlib.contextmanager
    def recording(self) -> Iterator[SyncRecorder]:
        """Route warnings to `self` for the block (every one, not just the first per site)."""
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            old = warnings.showwarning
            warnings.showwarning = self._show
            try:
                yield self
            finally:
                warnings.showwarning = old

    def _show(self, message: Any, category: Any, filename: str, lineno: int, *args: Any, **kw: Any) -> None:
        if not str(message).startswith(SYNC_MESSAGE):
            return
        where = f"{filename}:{lineno}"
        site = self.sites.setdefault(where, {"where": where, "count": 0, "phases": {}})
        site["count"] += 1
        if "stack" not in site:
            stack = traceback.format_stack()[:-2]  # without this handler and the warnings machinery
            site["stack"] = "".join(stack[-14:])
        site["phases"][self.phase] = site["phases"].get(self.phase, 0) + 1

    def add_error(self, e: BaseException) -> None:
        """Record the synchronising call that raised `e` in mode 'error' (its innermost frame)."""
        frames = traceback.extract_tb(e.__traceback__)
        last = frames[-1] if frames else None
        where = f"{last.filename}:{last.lineno}" if last else "?"
        stack = "".join(traceback.format_list(frames[-14:]))
        self.sites[where] = {"where": where, "count": 1, "phases": {self.phase: 1}, "stack": stack}


def _sync_error(e: BaseException) -> BaseException | None:
    """The exception in `e`'s chain that the sync detector raised in mode 'error', if any."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        if SYNC_MESSAGE in str(cur):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def fit_checked(learn: Any, check: SyncCheck, recorder: SyncRecorder) -> None:
    """`learn.fit(1)` inside the sync check's window; a detector error is recorded as a site, not raised."""
    with learn.no_logging(), learn.no_bar(), recorder.recording():
        try:
            learn.fit(1, 1e-3, cbs=[check])
        except Exception as e:
            err = _sync_error(e)
            if err is None:
                raise
            recorder.add_error(err)
        finally:
            check.switch(False)


def detector_mode() -> str:
    """'warn' when the sync warnings of this torch reach `SyncRecorder` (checked on an `.item()`), else 'error'."""
    rec, x = SyncRecorder(), torch.ones(1, device="cuda")
    with rec.recording():
        torch.cuda.set_sync_debug_mode("warn")
        try:
            x.item()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return "warn" if rec.sites else "error"


class SyncCheck(Callback):
    """Turn the sync detector on after `warmup` training batches, for `n` training batches and for the
    whole validation loop (metrics included); `set_mode` is `torch.cuda.set_sync_debug_mode`, and `mode`
    what it is set to inside the window: 'warn' (`SyncRecorder` records every call) or 'error'."""

    order = 100  # after every other callback, so their after_batch is inside the checked window

    def __init__(
        self,
        warmup: int,
        n: int,
        set_mode: Callable[[str], None],
        recorder: SyncRecorder,
        mode: str = "warn",
    ) -> None:
        self.warmup, self.n, self.set_mode, self.recorder, self.mode = warmup, n, set_mode, recorder, mode
        self.k, self.checked_train, self.checked_valid, self.on = 0, 0, 0, False

    def switch(self, on: bool, phase: str = "") -> None:
        """Turn the detector on (in `mode`) or off; on, tell the recorder which loop it checks."""
        if on != self.on:
            self.set_mode(self.mode if on else "default")
            self.on = on
        if on:
            self.recorder.phase = phase

    def after_batch(self) -> None:
        """Count checked batches; open the window after the warm-up, end training after `n` checked ones."""
        learn = self.learn
        if not learn.training:
            self.checked_valid += 1
            if learn.n_iter is not None and learn.iter >= learn.n_iter - 1:
                self.switch(False)
            return
        self.k += 1
        if self.k == self.warmup:
            self.switch(True, "train")
        elif self.k > self.warmup:
            self.checked_train += 1
            if self.checked_train >= self.n:
                self.switch(False)
                raise CancelTrainException()

    def before_validate(self) -> None:
        """Check the validation loop too (its metrics accumulate on the device)."""
        self.switch(True, "validate")

    def after_validate(self) -> None:
        """Close the window before the epoch's results are read (one sync per epoch is expected)."""
        self.switch(False)

    def after_fit(self) -> None:
        """Always leave the detector off."""
        self.switch(False)


# ------------------------------------------------------------------------------------------ sections
def junit_counts(text: str) -> dict[str, Any]:
    """Passed / failed (errors included) / skipped counts and the failures of a pytest junit XML report."""
    counts: dict[str, Any] = {"passed": 0, "failed": 0, "skipped": 0}
    failures = []
    for case in ET.fromstring(text).iter("testcase"):
        bad = case.find("failure")
        bad = case.find("error") if bad is None else bad
        if bad is not None:
            counts["failed"] += 1
            name = f"{case.get('classname')}::{case.get('name')}"
            failures.append({"test": name, "message": (bad.get("message") or "")[:500]})
        elif case.find("skipped") is not None:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
    return {**counts, "failures": failures}


def section_cuda_tests(s: Settings, deadline: float) -> dict[str, Any]:
    """Run `pytest -m cuda` in a subprocess (skipped without CUDA)."""
    if not s.cuda:
        return {"status": "skipped: no CUDA device (every cuda-marked test would skip)"}
    return run_cuda_tests(max(10.0, min(s.tests_timeout, deadline - time.perf_counter())))


def run_cuda_tests(timeout: float) -> dict[str, Any]:
    """Run the cuda-marked tests of the files that hold some; return the counts and the failures."""
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        args = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider"]
        files = sorted(
            str(f.relative_to(ROOT)) for f in (ROOT / "tests").glob("test_*.py") if CUDA_MARK in f.read_text()
        )
        if not files:
            return {"status": "skipped: no test file has a cuda-marked test"}
        args += ["-o", "addopts=", f"--junitxml={xml}", *files]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        try:
            proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else e.stdout
            return {
                "status": f"failed: pytest -m cuda ran past {timeout:.0f} s",
                "output": (out or "")[-3000:],
            }
        res: dict[str, Any] = {"status": "ok", "returncode": proc.returncode, "output": proc.stdout[-3000:]}
        if not xml.exists():
            res["status"] = f"failed: pytest exited with {proc.returncode} and wrote no report"
            res["output"] = (proc.stdout + proc.stderr)[-3000:]
            return res
        res.update(junit_counts(xml.read_text()))
        if res["passed"] + res["failed"] + res["skipped"] == 0:
            res["status"] = f"failed: no cuda test ran (pytest exit {proc.returncode})"
        return res


def section_augment(s: Settings, deadline: float) -> dict[str, Any]:
    """Time fastvision's one-resample batch augmentation against fastai-style (bench/augment.py)."""
    if str(ROOT / "bench") not in sys.path:
        sys.path.append(str(ROOT / "bench"))
    from augment import fastai_style, ours, timeit

    from fastvision.vision.augment import AffineGroup, aug_transforms
    from fastvision.vision.lazy import PendingBatch
    from fastvision.vision.lighting import IntToFloatTensor

    device = torch.device(s.device)
    torch.manual_seed(0)
    bs, side = s.aug_bs, s.aug_side
    canvas = torch.randint(0, 256, (bs, 3, side, side), dtype=torch.uint8)
    hw = torch.tensor([[side, side]]).expand(bs, 2).contiguous()
    window = torch.tensor([[0.0, 0.0, side - 1.0, side - 1.0]]).expand(bs, 4).contiguous()
    pb = PendingBatch(canvas, hw, window, (side, side)).to(device)
    tfms = [IntToFloatTensor(), *aug_transforms(size=s.size, min_scale=0.75)]
    group, lighting = tfms[1], tfms[2]
    geometry = AffineGroup(group.parts[:-1])  # the same parts without the folded crop
    fns = [
        lambda: ours(pb, tfms),
        lambda: fastai_style(pb.canvas, geometry, lighting, size=s.size),
        lambda: ours(pb, tfms[:2]),
        lambda: fastai_style(pb.canvas, geometry, lambda x, split_idx: x, size=s.size),
    ]
    (ours_s, _), (fa_s, _), (ours_geo, _), (fa_geo, _) = timeit(fns, s.aug_reps, device)
    return {
        "status": "ok",
        "shape": f"{bs}x3x{side}x{side} uint8 -> {s.size}",
        "reps": s.aug_reps,
        "fastvision_ms": ours_s * 1e3,
        "fastai_style_ms": fa_s * 1e3,
        "speedup": fa_s / ours_s,
        "fastvision_geometry_ms": ours_geo * 1e3,
        "fastai_style_geometry_ms": fa_geo * 1e3,
        "fastvision_img_s": bs / ours_s,
    }


def sync_variant(
    s: Settings, pets: PetsFolder | None, data: str, precision: str, deadline: float, mode: str = "warn"
) -> dict:
    """One fit with metrics under the sync detector (CUDA), or the same fit without it (CPU)."""
    arch = s.models[0]
    reset_peak(s.device)
    torch.manual_seed(0)
    n_check = max(2, s.batches // 3)
    if data == "synthetic":
        dls = SyntheticDLs(s, n_train=s.warmup + n_check + 1, n_valid=max(1, n_check // 2))
    else:
        dls = pets_dls(s, _wait(pets, deadline), on_device=data == "device")
    recorder = SyncRecorder()
    if s.cuda:
        set_mode: Callable[[str], None] = torch.cuda.set_sync_debug_mode
    else:
        set_mode = lambda mode: None  # noqa: E731 - the CPU has no sync detector
    check = SyncCheck(s.warmup, n_check, set_mode, recorder, mode)
    learn = make_learner(s, dls, arch, precision)
    fit_checked(learn, check, recorder)
    res = {
        "arch": arch,
        "precision": precision,
        "data": data,
        "checked_train_batches": check.checked_train,
        "checked_valid_batches": check.checked_valid,
        "sites": sorted(recorder.sites.values(), key=lambda d: -d["count"]),
    }
    if check.checked_train == 0:
        res["status"] = "failed: the fit ended before any batch was checked"
    elif not s.cuda:
        res["status"] = "skipped: no CUDA (the sync detector is CUDA-only); the same fit ran without it"
    else:
        res["status"] = "ok"
        res["no_sync"] = not recorder.sites
        steps = check.checked_train + check.checked_valid
        if mode == "warn":
            res["syncs_per_step"] = sum(site["count"] for site in recorder.sites.values()) / max(1, steps)
    del learn, dls
    return res


def section_sync(s: Settings, pets: PetsFolder, deadline: float) -> dict[str, Any]:
    """Check every variant; the section passes when no variant synchronises."""
    variants = [("synthetic", "bf16"), ("synthetic", "fp16"), ("workers", "bf16"), ("device", "bf16")]
    if not s.cuda:
        variants = [v for v in variants if v[1] != "fp16"]
    out: dict[str, Any] = {}
    mode = detector_mode() if s.cuda else "warn"
    # torch's default, as a user's fit has it: cuDNN's autotuning of a new shape (the last, smaller
    # validation batch) would otherwise show up as a one-off sync inside the checked window
    benchmark, torch.backends.cudnn.benchmark = torch.backends.cudnn.benchmark, False
    try:
        for data, precision in variants:
            name = f"{data}/{precision}"
            try:
                pets_or_none = None if data == "synthetic" else pets
                out[name] = sync_variant(s, pets_or_none, data, precision, deadline, mode)
            except Exception as e:  # one variant's failure is reported, the others still run
                out[name] = {"status": f"failed: {type(e).__name__}: {e}"[:400], "traceback": short_trace()}
    finally:
        torch.backends.cudnn.benchmark = benchmark
    fails = [k for k, v in out.items() if v["status"].startswith("failed")]
    if not s.cuda:
        status = "skipped: no CUDA (torch.cuda.set_sync_debug_mode is CUDA-only); the fits ran without it"
        status = f"failed: {', '.join(fails)}" if fails else status
    else:
        status = f"failed: {', '.join(fails)}" if fails else "ok"
    res: dict[str, Any] = {"status": status, "variants": out}
    if s.cuda:
        res["detector"] = mode + (" (every call recorded)" if mode == "warn" else " (the first call only)")
    if s.cuda and not fails:
        res["no_sync"] = all(v.get("no_sync") for v in out.values())
    return res


def run_fastvision(
    s: Settings, pets: PetsFolder | None, arch: str, precision: str, data: str, deadline: float
) -> dict[str, Any]:
    """Training throughput of one configuration (see the module docstring)."""
    reset_peak(s.device)
    torch.manual_seed(0)
    n = s.warmup + s.batches + 1
    if data == "synthetic":
        dls: Any = SyntheticDLs(s, n_train=n)
    else:
        dls = pets_dls(s, _wait(pets, deadline), on_device=data == "device")
    clock = Clock(s.warmup, s.batches, min(deadline, time.perf_counter() + s.run_timeout), s.device)
    learn = make_learner(s, dls, arch, precision)
    with learn.no_logging(), learn.no_bar():
        learn.fit(1000, 1e-3, cbs=[clock])
    res: dict[str, Any] = {"arch": arch, "precision": precision, "data": data, "bs": s.bs}
    if clock.timed == 0:
        res["status"] = f"failed: nothing timed: {clock.k} batches ran before the {s.run_timeout:.0f} s limit"
    else:
        dt = clock.t1 - clock.t0
        res.update(status="ok", img_s=clock.timed * s.bs / dt, ms_batch=dt / clock.timed * 1e3)
        res.update(batches=clock.timed, peak_gib=peak_gib(s.device))
        notes = []
        if data == "device" and not s.cuda:
            notes.append("decoded with libjpeg-turbo on the CPU (nvJPEG needs CUDA)")
        if clock.timed < s.batches:
            notes.append(f"stopped at the time limit after {clock.timed} of {s.batches} batches")
        if notes:
            res["note"] = "; ".join(notes)
    del learn, dls, clock
    reset_peak(s.device)
    return res


# The fastai side of the end-to-end runs: the same DataBlock and learner, in fastai's own interpreter.
FASTAI_SCRIPT = r"""
import json, sys, time
a = json.loads(sys.argv[1])
import torch, torchvision.models as tvm
import fastai
from fastai.vision.all import (DataBlock, ImageBlock, CategoryBlock, RandomSplitter, RegexLabeller, using_attr,
    Resize, aug_transforms, get_image_files, vision_learner, error_rate, accuracy, Callback, CancelFitException,
    CancelValidException)
dev, cuda = torch.device(a["device"]), a["device"].startswith("cuda")
torch.backends.cudnn.benchmark = True
def sync():
    if cuda: torch.cuda.synchronize(dev)
class Clock(Callback):
    order = 100
    def before_fit(self): self.k, self.t0, self.t1, self.timed, self.end = 0, 0.0, 0.0, 0, time.perf_counter() + a["timeout"]
    def before_validate(self): raise CancelValidException()
    def after_batch(self):
        if not self.training: return
        self.k += 1
        if self.k == a["warmup"]:
            sync(); self.t0 = time.perf_counter()
        elif self.k > a["warmup"] and (self.k == a["warmup"] + a["batches"] or time.perf_counter() > self.end):
            sync(); self.t1, self.timed = time.perf_counter(), self.k - a["warmup"]
            raise CancelFitException()
        elif time.perf_counter() > self.end:
            raise CancelFitException()
torch.manual_seed(0)
dblock = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files, splitter=RandomSplitter(0.1, seed=0),
                   get_y=using_attr(RegexLabeller(a["pat"]), "name"), item_tfms=Resize(a["item_size"]),
                   batch_tfms=aug_transforms(size=a["size"], min_scale=0.75))
dls = dblock.dataloaders(a["path"], bs=a["bs"], num_workers=a["workers"], device=dev)
learn = vision_learner(dls, getattr(tvm, a["arch"]), pretrained=False, metrics=[accuracy, error_rate])
amp = a["precision"] != "fp32"
learn.to_channelslast(use_amp=amp, amp_mode=a["precision"] if amp else "fp16")
if cuda: torch.cuda.reset_peak_memory_stats(dev)
clock = Clock()
with learn.no_bar(), learn.no_logging():
    learn.fit(1000, 1e-3, cbs=[clock])
dt = clock.t1 - clock.t0
print(json.dumps({"fastai": fastai.__version__, "timed": clock.timed, "k": clock.k,
                  "img_s": clock.timed * a["bs"] / dt if clock.timed else None,
                  "peak_gib": torch.cuda.max_memory_allocated(dev) / 2**30 if cuda else None}))
"""


def run_fastai(s: Settings, pets: PetsFolder, arch: str, precision: str, deadline: float) -> dict[str, Any]:
    """The same end-to-end run with fastai, in a subprocess; skipped without a fastai interpreter."""
    py = Path(s.fastai_python).expanduser()
    if not py.exists() and "/" not in s.fastai_python:  # a command name such as python3
        py = Path(shutil.which(s.fastai_python) or py)
    if not py.exists():
        return {"status": f"skipped: no fastai interpreter at {s.fastai_python} (pass --fastai-python)"}
    try:
        probe = subprocess.run(
            [str(py), "-c", "import fastai; print(fastai.__version__)"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    except subprocess.TimeoutExpired:
        return {"status": f"skipped: {py} took more than 120 s to import fastai"}
    if probe.returncode != 0:
        return {"status": f"skipped: {py} cannot import fastai: {probe.stderr.strip()[-300:]}"}
    path = pets.wait(max(1.0, deadline - time.perf_counter()))
    a = {
        "device": s.device,
        "path": str(path),
        "pat": PAT,
        "bs": s.bs,
        "workers": s.workers,
        "item_size": s.item_size,
        "size": s.size,
        "arch": arch,
        "precision": precision,
        "warmup": s.warmup,
        "batches": s.batches,
        "timeout": s.run_timeout,
    }
    timeout = max(10.0, min(s.run_timeout + 90, deadline - time.perf_counter()))
    try:
        env = {**os.environ, **({"OMP_NUM_THREADS": str(s.threads)} if s.threads else {})}
        proc = subprocess.run(
            [str(py), "-c", FASTAI_SCRIPT, json.dumps(a)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return {"status": f"failed: the fastai run took more than {timeout:.0f} s"}
    try:
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"status": f"failed: fastai exited with {proc.returncode}", "stderr": proc.stderr[-3000:]}
    res: dict[str, Any] = {"arch": arch, "precision": precision, "data": "workers", "bs": s.bs}
    res.update(fastai=out["fastai"], peak_gib=out["peak_gib"])
    if not out["timed"]:
        res["status"] = (
            f"failed: nothing timed: {out['k']} batches ran before the {s.run_timeout:.0f} s limit"
        )
        return res
    res.update(status="ok", img_s=out["img_s"], ms_batch=s.bs / out["img_s"] * 1e3, batches=out["timed"])
    if s.device.startswith("cpu") and precision != "fp32":
        res["note"] = "fastai's MixedPrecision autocasts on CUDA only"
    return res


# ------------------------------------------------------------------------------------------ plan
@dataclass
class Task:
    """One section: its name, the estimate key for the budget, and what runs (or why it is skipped)."""

    name: str
    kind: str
    fn: Callable[[float], dict[str, Any]] | None = None
    skip: str | None = None


def plan(s: Settings, pets: PetsFolder) -> list[Task]:
    """The sections in order of importance (see the module docstring)."""
    tasks = [
        Task("cuda_tests", "tests", lambda d: section_cuda_tests(s, d)),
        Task("augment", "augment", lambda d: section_augment(s, d)),
        Task("sync_debug", "sync", lambda d: section_sync(s, pets, d)),
    ]
    fastai_precisions = [p for p in s.precisions if p in AMP] if s.cuda else s.precisions[:1]
    order = sorted(s.precisions, key=lambda p: ("bf16", "fp16", "fp32").index(p))
    for p in order:
        for i, arch in enumerate(s.models):
            for data in DATA_KINDS:
                name = f"{arch}/{p}/{data}"
                if p == "fp16" and not s.cuda:
                    why = "skipped: fp16 autocast needs CUDA (MixedPrecision falls back to bf16 on the CPU)"
                    tasks.append(Task(name, "synthetic", skip=why))
                    continue
                kind = "synthetic" if data == "synthetic" else "e2e"
                tasks.append(
                    Task(name, kind, lambda d, a=arch, p=p, x=data: run_fastvision(s, pets, a, p, x, d))
                )
            if i == 0 and p in fastai_precisions:
                tasks.append(
                    Task(f"fastai/{arch}/{p}", "fastai", lambda d, a=arch, p=p: run_fastai(s, pets, a, p, d))
                )
    if s.cuda and "bf16" in s.precisions:  # the other models against fastai, last
        for arch in s.models[1:]:
            tasks.append(
                Task(f"fastai/{arch}/bf16", "fastai", lambda d, a=arch: run_fastai(s, pets, a, "bf16", d))
            )
    return tasks


# ------------------------------------------------------------------------------------------ report
def _met(ok: bool | None, cuda: bool) -> str:
    if not cuda:
        return "n/a (CPU)"
    return "-" if ok is None else ("yes" if ok else "**NO**")


def goal_rows(s: Settings, sections: dict[str, dict]) -> list[dict[str, str]]:
    """The table of figure / value / goal / met? from the sections that produced figures."""
    rows: list[dict[str, str]] = []

    def ok(name: str) -> dict | None:
        sec = sections.get(name)
        return sec if sec is not None and sec.get("status") == "ok" else None

    def add(figure: str, value: str, goal: str, met: str) -> None:
        rows.append({"figure": figure, "value": value, "goal": goal, "met": met})

    if t := ok("cuda_tests"):
        add(
            "cuda tests (pytest -m cuda)",
            f"{t['passed']} passed, {t['failed']} failed, {t['skipped']} skipped",
            "all pass",
            _met(t["failed"] == 0, s.cuda),
        )
    if a := ok("augment"):
        add(
            f"batch augmentation {a['shape']}, fastvision",
            f"{a['fastvision_ms']:.2f} ms",
            "<= 2 ms (H100)",
            _met(a["fastvision_ms"] <= 2.0, s.cuda),
        )
        add(
            "same draws fastai-style (2 resamples)",
            f"{a['fastai_style_ms']:.2f} ms ({a['speedup']:.1f}x slower)",
            "",
            "-",
        )
    sd = sections.get("sync_debug", {})
    for name, v in sd.get("variants", {}).items():
        if v.get("status") == "ok":
            where = f" at {v['sites'][0]['where']}" if v["sites"] else ""
            rate = v.get("syncs_per_step")  # absent in mode 'error', which stops at the first call
            value = f"{rate:.1f} syncs/step{where}" if rate is not None else f"syncs{where}"
            value = "no sync" if v["no_sync"] else value
            add(f"host sync per step, fit with metrics ({name})", value, "none", _met(v["no_sync"], True))
    for arch in s.models:
        for p in s.precisions:
            syn = ok(f"{arch}/{p}/synthetic")
            fa = ok(f"fastai/{arch}/{p}")
            if syn and arch == "resnet50" and p == "bf16":
                add(
                    "resnet50 bf16 synthetic",
                    f"{syn['img_s']:.0f} img/s",
                    ">= 3500 img/s (H100)",
                    _met(syn["img_s"] >= 3500, s.cuda),
                )
            for data, label in (("workers", "decode in workers"), ("device", "decode_on_device")):
                e2e = ok(f"{arch}/{p}/{data}")
                if not e2e:
                    continue
                if syn:
                    r = e2e["img_s"] / syn["img_s"]
                    add(
                        f"{arch} {p} end to end ({label}) / synthetic",
                        f"{r:.0%} ({e2e['img_s']:.0f} img/s)",
                        ">= 90%",
                        _met(r >= 0.9, s.cuda) if p in AMP else "-",
                    )
                if fa:
                    r = e2e["img_s"] / fa["img_s"]
                    add(
                        f"{arch} {p} end to end ({label}) / fastai",
                        f"{r:.2f}x ({fa['img_s']:.0f} img/s fastai)",
                        ">= 1.5x",
                        _met(r >= 1.5, s.cuda) if p in AMP else "-",
                    )
    return rows


def _fmt(x: Any, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def markdown(report: dict[str, Any]) -> str:
    """The report as markdown: header, goals table, throughput table, sync sites, skips and failures."""
    env, s, secs = report["env"], report["settings"], report["sections"]
    lines = [
        f"# fastvision GPU benchmark: {env['device_name']}",
        "",
        f"torch {env['torch']}, torchvision {env['torchvision']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}, "
        f"Python {env['python']}, fastvision {env['fastvision']}; {env['cpus']} CPUs; {env['date']}; "
        f"{report['elapsed_s']:.0f} s of a {s['budget']:.0f} s budget.",
        f"`{env['command']}`",
        "",
        "| figure | value | goal | met? |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['figure']} | {r['value']} | {r['goal']} | {r['met']} |" for r in report["table"]]
    runs = [(k, v) for k, v in secs.items() if "img_s" in v]
    if runs:
        lines += [
            "",
            f"Training throughput: {s['size']} px, bs {s['bs']}, channels-last, {s['batches']} batches timed "
            f"after {s['warmup']}; end to end = fashion-pets JPEGs, Resize({s['item_size']}) + "
            f"aug_transforms(size={s['size']}, min_scale=0.75), {s['workers']} workers.",
            "",
            "| run | img/s | ms/batch | % of synthetic | peak GPU memory |",
            "|---|---|---|---|---|",
        ]
        for name, v in runs:
            key = f"{v['arch']}/{v['precision']}/synthetic"
            syn = secs.get(key, {}).get("img_s")
            pct = "-" if not syn or v["data"] == "synthetic" else f"{v['img_s'] / syn:.0%}"
            mem = "-" if v.get("peak_gib") is None else f"{v['peak_gib']:.2f} GiB"
            lines.append(f"| {name} | {v['img_s']:.0f} | {v['ms_batch']:.1f} | {pct} | {mem} |")
    sites = [
        (n, site)
        for n, v in secs.get("sync_debug", {}).get("variants", {}).items()
        for site in v.get("sites", [])
    ]
    if sites:
        lines += ["", "## Synchronising calls (first stack of each)", ""]
        for name, site in sites:
            phases = ", ".join(f"{k} {c}" for k, c in site["phases"].items())
            lines += [
                f"- {name}: `{site['where']}` x{site['count']} ({phases})",
                "",
                "```",
                site["stack"].rstrip(),
                "```",
            ]
    skipped = [(k, v["status"]) for k, v in secs.items() if v["status"].startswith("skipped")]
    failed = [(k, v) for k, v in secs.items() if v["status"].startswith("failed")]
    notes = [(k, v["note"]) for k, v in secs.items() if v.get("note")]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {k}: {note}" for k, note in notes]
    if skipped:
        lines += ["", "## Skipped", ""] + [f"- {k}: {why[len('skipped: ') :]}" for k, why in skipped]
    if failed:
        lines += ["", "## Failed", ""]
        for k, v in failed:
            lines.append(f"- {k}: {v['status'][len('failed: ') :]}")
            detail = v.get("traceback") or v.get("stderr") or v.get("output")
            if detail:
                lines += ["", "```", detail.rstrip()[-3000:], "```"]
            for name, sub in v.get("variants", {}).items():
                if sub["status"].startswith("failed"):
                    lines += [
                        f"  - {name}: {sub['status']}",
                        "",
                        "```",
                        sub.get("traceback", "").rstrip(),
                        "```",
                    ]
    return "\n".join(lines) + "\n"


def default_out(s: Settings) -> Path:
    """bench/results/gpu-<device name>, lower case, dashes."""
    slug = re.sub(r"[^a-z0-9]+", "-", device_name(s.device).lower()).strip("-")
    return ROOT / "bench" / "results" / f"gpu-{slug if s.cuda else 'cpu'}"


def write(report: dict[str, Any], out: Path) -> None:
    """Write `<out>.json` and `<out>.md`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{out}.json").write_text(json.dumps(report, indent=1, default=str))
    Path(f"{out}.md").write_text(markdown(report))


def save(report: dict[str, Any], s: Settings, out: Path, t_start: float) -> None:
    """Refresh the elapsed time and the goals table, and write the report; a reporting bug is printed,
    the JSON is still written, and the measurements go on."""
    report["elapsed_s"] = time.perf_counter() - t_start
    try:
        report["table"] = goal_rows(s, report["sections"])
        write(report, out)
    except Exception:
        print(f"writing the report failed (the JSON is still written):\n{short_trace()}", flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        Path(f"{out}.json").write_text(json.dumps(report, indent=1, default=str))


def summary_line(name: str, res: dict[str, Any]) -> str:
    """One printed line per finished section."""
    fig = ""
    if "img_s" in res:
        fig = f"{res['img_s']:.0f} img/s"
    elif "fastvision_ms" in res:
        fig = f"{res['fastvision_ms']:.2f} ms vs {res['fastai_style_ms']:.2f} ms fastai-style"
    elif "passed" in res:
        fig = f"{res['passed']} passed, {res['failed']} failed, {res['skipped']} skipped"
    elif "no_sync" in res:
        fig = "no sync" if res["no_sync"] else "SYNCS (see the report)"
    return f"{name:32s} {res.get('elapsed_s', 0):6.1f} s  {res['status'][:90]}  {fig}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the plan within the budget; write and print the report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument(
        "--quick", action="store_true", help="tiny sizes: resnet18, 32 px, bs 8, 2 batches timed after 1"
    )
    ap.add_argument(
        "--budget", type=float, default=450.0, help="seconds; sections that would not fit are skipped"
    )
    ap.add_argument(
        "--out", default=None, help="path prefix of the .json and .md (default bench/results/gpu-<device>)"
    )
    ap.add_argument(
        "--data",
        default=str(Path(tempfile.gettempdir()) / "fastvision-bench-gpu"),
        help="where the fashion-pets folder is built (reused when already there)",
    )
    ap.add_argument("--fmnist", default=None, help="folder with the Fashion-MNIST t10k IDX files")
    ap.add_argument("--fastai-python", default=str(Path.home() / "fastai-env" / "bin" / "python"))
    ap.add_argument("--models", nargs="+", default=None)
    ap.add_argument("--precisions", nargs="+", choices=["bf16", "fp16", "fp32"], default=None)
    ap.add_argument("--bs", type=int, default=None)
    ap.add_argument("--item-size", type=int, default=None)
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--batches", type=int, default=None)
    ap.add_argument("--n-images", type=int, default=None)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's; 1 with --quick on a CPU)",
    )
    ap.add_argument(
        "--only", nargs="+", default=None, help="run only sections whose name starts with one of these"
    )
    a = ap.parse_args(argv)
    t_start = time.perf_counter()
    s = make_settings(a)
    if s.threads:
        torch.set_num_threads(s.threads)
    if s.cuda:
        torch.backends.cudnn.benchmark = True
    pets = PetsFolder(s)
    tasks = plan(s, pets)
    if a.only:
        tasks = [t for t in tasks if any(t.name.startswith(o) for o in a.only)]
    if any(t.kind in ("e2e", "fastai", "sync") and t.skip is None for t in tasks):
        pets.start()  # in the background (forked before CUDA starts), while the tests and augmentation run
    out = Path(a.out) if a.out else default_out(s)
    report: dict[str, Any] = {
        "env": env_info(s),
        "settings": asdict(s),
        "sections": {},
        "table": [],
        "elapsed_s": 0.0,
    }
    print(
        f"fastvision GPU benchmark on {report['env']['device_name']} ({s.device}), torch {torch.__version__}, "
        f"budget {s.budget:.0f} s, {len(tasks)} sections -> {out}.json/.md"
    )
    end = t_start + s.budget
    for task in tasks:
        t0 = time.perf_counter()
        est = s.estimates.get(task.kind, 30.0)
        if task.skip:
            res = {"status": task.skip}
        elif t0 + est > end:
            res = {
                "status": f"skipped: budget (needs ~{est:.0f} s, {max(0.0, end - t0):.0f} s left of --budget {s.budget:.0f})"
            }
        else:
            try:
                res = task.fn(end)  # type: ignore[misc]
            except Exception as e:  # benchmarks never fail: report and go on
                res = {"status": f"failed: {type(e).__name__}: {e}"[:400], "traceback": short_trace()}
            finally:
                if s.cuda:
                    with contextlib.suppress(Exception):
                        torch.cuda.set_sync_debug_mode("default")
            res["elapsed_s"] = time.perf_counter() - t0
            s.estimates[task.kind] = res["elapsed_s"]  # the next section of this kind costs about the same
        report["sections"][task.name] = res
        report["data"] = {"path": str(pets.path), "images": s.n_images, "build_s": pets.build_s}
        save(report, s, out, t_start)
        print(summary_line(task.name, res), flush=True)
    with contextlib.suppress(Exception):
        pets.wait(60.0)
    save(report, s, out, t_start)
    print()
    print(Path(f"{out}.md").read_text() if Path(f"{out}.md").exists() else json.dumps(report, default=str))
    return report


if __name__ == "__main__":
    main()
