"""bench/gpu.py: the one-command GPU benchmark, run here on the CPU (`--device cpu --quick`), and its
report logic fed with GPU-shaped results, so the GPU session has nothing left to debug."""

import importlib.util
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "gpu.py"


def load_gpu_module():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_gpu"] = mod  # dataclasses look the module up by name
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def gpu():
    return load_gpu_module()


# ------------------------------------------------------------------ the whole command, on the CPU
@pytest.mark.slow
def test_quick_cpu_run_reports_every_section(tmp_path):
    out = tmp_path / "report"
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--device",
        "cpu",
        "--quick",
        "--out",
        str(out),
        "--data",
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=420)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(Path(f"{out}.json").read_text())
    secs = report["sections"]
    runs = [f"resnet18/{p}/{d}" for p in ("bf16", "fp16") for d in ("synthetic", "workers", "device")]
    assert set(secs) == {"cuda_tests", "augment", "sync_debug", "fastai/resnet18/bf16", *runs}
    for name, sec in secs.items():
        status = sec["status"]
        assert status == "ok" or (status.startswith("skipped: ") and len(status) > 12), (name, sec)
    # what the CPU cannot do is skipped with its reason, and nothing was skipped for the budget
    assert "no CUDA" in secs["cuda_tests"]["status"]
    assert all(
        "fp16 autocast needs CUDA" in secs[f"resnet18/fp16/{d}"]["status"]
        for d in ("synthetic", "workers", "device")
    )
    assert not any("budget" in sec["status"] for sec in secs.values())
    # figures
    assert secs["augment"]["fastvision_ms"] > 0 and secs["augment"]["fastai_style_ms"] > 0
    for d in ("synthetic", "workers", "device"):
        run = secs[f"resnet18/bf16/{d}"]
        assert run["status"] == "ok" and run["img_s"] > 0 and run["batches"] == 2, run
        assert run["peak_gib"] is None  # no GPU memory on the CPU
    # the sync check's fits ran (training and validation) even though the detector is CUDA-only
    sync = secs["sync_debug"]
    assert sync["status"].startswith("skipped: no CUDA")
    assert set(sync["variants"]) == {"synthetic/bf16", "workers/bf16", "device/bf16"}
    for v in sync["variants"].values():
        assert v["checked_train_batches"] == 2 and v["checked_valid_batches"] >= 1, v
    fa = secs["fastai/resnet18/bf16"]
    assert fa["status"] == "ok" and fa["img_s"] > 0 or fa["status"].startswith("skipped: no fastai"), fa
    # the markdown report, also printed
    md = Path(f"{out}.md").read_text()
    assert "| figure | value | goal | met? |" in md and "| run | img/s |" in md
    assert "resnet18 bf16 end to end (decode in workers) / synthetic" in md
    assert "## Skipped" in md and "resnet18/fp16/device" in md
    assert "- resnet18/bf16/device: decoded with libjpeg-turbo on the CPU (nvJPEG needs CUDA)" in md
    assert "| figure | value | goal | met? |" in proc.stdout
    assert report["env"]["torch"] == torch.__version__ and report["env"]["device"] == "cpu"


@pytest.mark.slow
def test_cuda_tests_command_runs_and_is_parsed(gpu):
    res = gpu.run_cuda_tests(timeout=240)
    assert res["status"] == "ok", res
    total = res["passed"] + res["failed"] + res["skipped"]
    assert total >= 3 and res["failed"] == 0, res  # test_augment and test_fp16 hold cuda tests
    if not torch.cuda.is_available():
        assert res["skipped"] == total


def test_budget_skips_sections_that_do_not_fit(gpu, tmp_path, capsys):
    report = gpu.main(
        ["--device", "cpu", "--quick", "--only", "augment", "--budget", "1", "--out", str(tmp_path / "r")]
    )
    assert report["sections"]["augment"]["status"].startswith("skipped: budget (needs ~10 s")
    assert "augment: budget" in Path(tmp_path / "r.md").read_text()
    assert "fastvision GPU benchmark" in capsys.readouterr().out


# ------------------------------------------------------------------ the sync check's window
class FakeDetector:
    """`torch.cuda.set_sync_debug_mode` and a layer that makes a synchronising call, for the CPU."""

    def __init__(self):
        self.mode, self.modes = "default", []

    def set_mode(self, mode):
        self.modes.append(mode)
        self.mode = mode

    def layer(self, message):
        det = self

        class FakeSync(nn.Module):  # what torch does at a synchronising call in modes 'warn' and 'error'
            def forward(self, x):
                if det.mode == "warn":
                    warnings.warn(message, stacklevel=1)
                elif det.mode == "error":
                    raise RuntimeError(message)
                return x

        return FakeSync()


def tiny_learner(layer, loss_func=None):
    from fastvision.data.load import DataLoaders
    from fastvision.learner import Learner

    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    dls = DataLoaders.from_dsets(
        TensorDataset(x[:48], y[:48]), TensorDataset(x[48:], y[48:]), bs=4, num_workers=0
    )
    return Learner(dls, nn.Sequential(layer, nn.Linear(4, 2)), loss_func=loss_func or nn.CrossEntropyLoss())


def test_sync_check_records_every_sync_call_inside_its_window(gpu):
    det, recorder = FakeDetector(), gpu.SyncRecorder()
    learn = tiny_learner(det.layer(gpu.SYNC_MESSAGE + " (triggered internally)"))
    check = gpu.SyncCheck(warmup=2, n=3, set_mode=det.set_mode, recorder=recorder)
    with recorder.recording():
        warnings.warn("an unrelated warning, " + gpu.SYNC_MESSAGE, stacklevel=1)  # not torch's: ignored
    gpu.fit_checked(learn, check, recorder)
    n_valid = len(learn.dls.valid)
    assert n_valid > 1 and len(learn.dls.train) > 5
    assert check.checked_train == 3 and check.checked_valid == n_valid  # training stopped after 3 checked
    assert det.modes == ["warn", "default", "warn", "default"] and det.mode == "default"
    (site,) = recorder.sites.values()
    assert site["count"] == 3 + n_valid and site["phases"] == {"train": 3, "validate": n_valid}
    assert site["where"].startswith(__file__)  # the line that made the call
    assert "in forward" in site["stack"] and "learner.py" in site["stack"]


def test_sync_check_in_error_mode_records_the_first_call_and_turns_the_detector_off(gpu):
    det, recorder = FakeDetector(), gpu.SyncRecorder()
    learn = tiny_learner(det.layer(gpu.SYNC_MESSAGE))
    check = gpu.SyncCheck(warmup=2, n=3, set_mode=det.set_mode, recorder=recorder, mode="error")
    gpu.fit_checked(learn, check, recorder)  # the detector's error is recorded, not raised
    assert det.modes == ["error", "default"] and det.mode == "default"
    (site,) = recorder.sites.values()
    assert site["count"] == 1 and site["phases"] == {"train": 1} and site["where"].startswith(__file__)


def test_sync_check_finds_the_detector_error_in_a_chain_and_reraises_others(gpu):
    det = FakeDetector()

    def loss(pred, y):  # the learner re-raises loss errors as its own, chained
        if det.mode == "error":
            raise RuntimeError(gpu.SYNC_MESSAGE)
        return nn.functional.cross_entropy(pred, y)

    recorder = gpu.SyncRecorder()
    learn = tiny_learner(nn.Identity(), loss_func=loss)
    gpu.fit_checked(learn, gpu.SyncCheck(1, 2, det.set_mode, recorder, mode="error"), recorder)
    assert len(recorder.sites) == 1 and det.mode == "default"
    broken = tiny_learner(det.layer("an ordinary bug"))
    with pytest.raises(RuntimeError, match="an ordinary bug"):
        gpu.fit_checked(broken, gpu.SyncCheck(1, 2, det.set_mode, gpu.SyncRecorder(), mode="error"), recorder)
    assert det.mode == "default"


# ------------------------------------------------------------------ the report, fed GPU-shaped results
def gpu_settings(gpu, tmp_path):
    ap_ns = gpu.argparse.Namespace(
        device="cuda",
        quick=False,
        models=["resnet34", "resnet50"],
        precisions=["bf16", "fp16"],
        bs=None,
        item_size=None,
        size=None,
        warmup=None,
        batches=None,
        n_images=None,
        workers=4,
        budget=450.0,
        data=str(tmp_path),
        fmnist=None,
        fastai_python="none",
        threads=None,
    )
    return gpu.make_settings(ap_ns)


def run(arch, p, data, img_s):
    return {
        "status": "ok",
        "arch": arch,
        "precision": p,
        "data": data,
        "img_s": img_s,
        "ms_batch": 128e3 / img_s,
        "batches": 30,
        "peak_gib": 12.5,
    }


def test_goal_rows_and_markdown_from_gpu_results(gpu, tmp_path):
    s = gpu_settings(gpu, tmp_path)
    assert s.bs == 128 and s.warmup == 10 and s.batches == 30 and s.size == 224 and s.item_size == 460
    # enough training images (90 %) for the warm-up and timed batches in one epoch
    assert s.n_images == 5974 and int(s.n_images * 0.9) >= (s.warmup + s.batches + 1) * s.bs
    site = {
        "where": "/x/fastvision/vision/augment.py:12",
        "count": 30,
        "phases": {"train": 30},
        "stack": "  File ...",
    }
    secs = {
        "cuda_tests": {"status": "ok", "passed": 5, "failed": 1, "skipped": 0, "failures": []},
        "augment": {
            "status": "ok",
            "shape": "64x3x460x460 uint8 -> 224",
            "fastvision_ms": 1.5,
            "fastai_style_ms": 6.0,
            "speedup": 4.0,
        },
        "sync_debug": {
            "status": "ok",
            "variants": {
                "synthetic/bf16": {"status": "ok", "no_sync": True, "sites": [], "syncs_per_step": 0.0},
                "workers/bf16": {"status": "ok", "no_sync": False, "sites": [site], "syncs_per_step": 1.0},
                "device/bf16": {"status": "ok", "no_sync": False, "sites": [site]},  # mode 'error': no rate
            },
        },
        "resnet34/bf16/synthetic": run("resnet34", "bf16", "synthetic", 5000.0),
        "resnet34/bf16/workers": run("resnet34", "bf16", "workers", 4750.0),
        "resnet34/bf16/device": run("resnet34", "bf16", "device", 4000.0),
        "fastai/resnet34/bf16": run("resnet34", "bf16", "workers", 2000.0),
        "resnet50/bf16/synthetic": run("resnet50", "bf16", "synthetic", 3000.0),
        "resnet50/fp16/synthetic": {"status": "skipped: budget (needs ~15 s, 3 s left of --budget 450)"},
        "resnet50/fp16/workers": {"status": "failed: RuntimeError: boom", "traceback": "Traceback: boom"},
    }
    rows = {r["figure"]: r for r in gpu.goal_rows(s, secs)}
    met = {k: r["met"] for k, r in rows.items()}
    assert met["cuda tests (pytest -m cuda)"] == "**NO**"
    assert met["batch augmentation 64x3x460x460 uint8 -> 224, fastvision"] == "yes"
    assert met["host sync per step, fit with metrics (synthetic/bf16)"] == "yes"
    assert met["host sync per step, fit with metrics (workers/bf16)"] == "**NO**"
    assert rows["host sync per step, fit with metrics (workers/bf16)"]["value"] == (
        "1.0 syncs/step at /x/fastvision/vision/augment.py:12"
    )
    assert rows["host sync per step, fit with metrics (device/bf16)"]["value"].startswith("syncs at /x/")
    assert rows["resnet34 bf16 end to end (decode in workers) / synthetic"]["value"].startswith("95%")
    assert met["resnet34 bf16 end to end (decode in workers) / synthetic"] == "yes"
    assert met["resnet34 bf16 end to end (decode_on_device) / synthetic"] == "**NO**"  # 80 %
    assert rows["resnet34 bf16 end to end (decode in workers) / fastai"]["value"].startswith("2.38x")
    assert met["resnet34 bf16 end to end (decode_on_device) / fastai"] == "yes"  # 2.0x
    assert met["resnet50 bf16 synthetic"] == "**NO**"  # 3000 < 3500
    report = {
        "env": {
            "device_name": "NVIDIA H200",
            "torch": "2.11",
            "torchvision": "0.26",
            "cuda": "13.0",
            "cudnn": 9,
            "python": "3.12",
            "fastvision": "0.1.0",
            "cpus": 16,
            "date": "today",
            "command": "python bench/gpu.py",
        },
        "settings": gpu.asdict(s),
        "sections": secs,
        "table": gpu.goal_rows(s, secs),
        "elapsed_s": 400.0,
    }
    md = gpu.markdown(report)
    assert md.startswith("# fastvision GPU benchmark: NVIDIA H200")
    assert "| resnet34/bf16/workers | 4750 | 26.9 | 95% | 12.50 GiB |" in md
    assert "| fastai/resnet34/bf16 | 2000 |" in md
    assert "`/x/fastvision/vision/augment.py:12` x30 (train 30)" in md
    assert "- resnet50/fp16/synthetic: budget (needs ~15 s" in md
    assert "- resnet50/fp16/workers: RuntimeError: boom" in md and "Traceback: boom" in md
    gpu.write(report, tmp_path / "sub" / "gpu-nvidia-h200")
    assert json.loads((tmp_path / "sub" / "gpu-nvidia-h200.json").read_text())["elapsed_s"] == 400.0


def test_plan_orders_sections_by_importance(gpu, tmp_path):
    s = gpu_settings(gpu, tmp_path)
    s.precisions = ["bf16", "fp16", "fp32"]
    names = [t.name for t in gpu.plan(s, gpu.PetsFolder(s))]
    assert names[:8] == [
        "cuda_tests",
        "augment",
        "sync_debug",
        "resnet34/bf16/synthetic",
        "resnet34/bf16/workers",
        "resnet34/bf16/device",
        "fastai/resnet34/bf16",
        "resnet50/bf16/synthetic",
    ]
    assert names.index("fastai/resnet34/fp16") < names.index("resnet34/fp32/synthetic")
    assert names[-1] == "fastai/resnet50/bf16" and "fastai/resnet34/fp32" not in names
    assert len(names) == 3 + 2 * 3 * 3 + 3


def test_junit_counts(gpu):
    xml = """<testsuites><testsuite>
      <testcase classname="tests.test_fp16" name="test_a"/>
      <testcase classname="tests.test_fp16" name="test_b"><failure message="assert 1 == 2"/></testcase>
      <testcase classname="tests.test_augment" name="test_c"><error message="fixture broke"/></testcase>
      <testcase classname="tests.test_augment" name="test_d"><skipped message="needs bf16"/></testcase>
    </testsuite></testsuites>"""
    res = gpu.junit_counts(xml)
    assert (res["passed"], res["failed"], res["skipped"]) == (1, 2, 1)
    assert res["failures"][0] == {"test": "tests.test_fp16::test_b", "message": "assert 1 == 2"}
