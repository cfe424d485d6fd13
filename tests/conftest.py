import os

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
# One intra-op thread per test process: DataLoader workers and the 2-core CI machine oversubscribe otherwise.
torch.set_num_threads(1)
os.environ.setdefault("FASTVISION_HOME", os.path.join(os.path.dirname(__file__), ".fastvision-test-home"))

from fastvision.testing import make_image_folder  # noqa: E402


@pytest.fixture
def pets_folder(tmp_path):
    """A Pets-shaped folder: `<class>_<i>.jpg` files in one directory, 3 classes x 6 images."""
    return make_image_folder(
        tmp_path / "images", classes=("Abyssinian", "beagle", "pug"), n_per_class=6, layout="name"
    )


@pytest.fixture
def parent_folder(tmp_path):
    """`path/<class>/<file>` layout, 2 classes x 6 images of mixed sizes."""
    return make_image_folder(tmp_path / "parent", n_per_class=6, layout="parent")


@pytest.fixture
def train_valid_folder(tmp_path):
    """`path/train/<class>/...` and `path/valid/<class>/...`."""
    return make_image_folder(tmp_path / "tv", n_per_class=4, valid_per_class=2, layout="train_valid")
