import subprocess
import sys

import fastvision
from fastvision.callback.core import EVENTS, Callback
from fastvision.testing import make_image_folder
from fastvision.transform import Pipeline, Transform


def test_version_is_a_string():
    assert isinstance(fastvision.__version__, str) and fastvision.__version__.count(".") == 2


def test_import_changes_no_global_state():
    code = (
        "import random, torch; torch.manual_seed(3); random.seed(3); a=(torch.rand(1).item(), random.random());"
        "torch.manual_seed(3); random.seed(3); import fastvision.all; b=(torch.rand(1).item(), random.random());"
        "assert a == b, (a, b); print('same')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "same" in out.stdout


def test_pipeline_sorts_by_order_and_respects_split():
    class Add(Transform):
        def __init__(self, v, order, split_idx=None):
            self.v, self.order, self.split_idx = v, order, split_idx

        def encodes(self, x, split_idx=None):
            return x * 10 + self.v

    p = Pipeline([Add(2, order=5), Add(1, order=1), Add(3, order=9, split_idx=0)], split_idx=1)
    assert p(0) == 12  # 1 then 2; the train-only step is skipped on the valid split
    assert Pipeline(p.tfms, split_idx=0)(0) == 123
    assert p((0, 0)) == (12, 12)


def test_callback_has_every_event_as_noop():
    cb = Callback()
    for e in EVENTS:
        assert getattr(cb, e)() is None


def test_make_image_folder_layouts(tmp_path):
    p = make_image_folder(tmp_path / "a", classes=("x", "y"), n_per_class=2, layout="train_valid")
    assert sorted(q.relative_to(p).as_posix() for q in p.rglob("*.jpg")) == [
        "train/x/x_0.jpg",
        "train/x/x_1.jpg",
        "train/y/y_0.jpg",
        "train/y/y_1.jpg",
        "valid/x/x_0.jpg",
        "valid/y/y_0.jpg",
    ]
