"""show_image / show_images grids and DataLoader.show_batch."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from PIL import Image

from fastvision.data.display import target_text
from fastvision.data.load import DataLoader
from fastvision.transform import Transform
from fastvision.vision.show import image_array, show_image, show_images


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


class Colours(torch.utils.data.Dataset):
    vocab = ["red", "green", "blue"]

    def __len__(self):
        return 12

    def __getitem__(self, i):
        img = torch.zeros(3, 6, 6, dtype=torch.uint8)
        img[i % 3] = 255
        img[:, :, 0] = 0  # a dark column, so a shift shows
        return img, i % 3


class ToFloat(Transform):
    def encodes(self, x, split_idx=None):
        return x.float() / 255 if x.dtype == torch.uint8 and x.ndim == 4 else x

    def decodes(self, x):
        return (x * 255).to(torch.uint8) if x.is_floating_point() and x.ndim == 4 else x


class Shift(Transform):
    """A random per-item shift, so `unique=True` copies differ."""

    split_idx = 0

    def encodes(self, x, split_idx=None):
        return torch.roll(x, int(torch.randint(0, 6, ())), dims=-1) if isinstance(x, torch.Tensor) else x


def test_image_array_layouts():
    assert image_array(torch.rand(3, 4, 5)).shape == (4, 5, 3)
    assert image_array(torch.zeros(1, 4, 5, dtype=torch.uint8)).shape == (4, 5)
    assert image_array(np.zeros((4, 5, 3), np.uint8)).shape == (4, 5, 3)
    assert image_array(Image.new("L", (5, 4))).shape == (4, 5)
    assert image_array(torch.full((3, 2, 2), 2.0)).max() == 1.0  # clipped
    with pytest.raises(ValueError, match="shape"):
        image_array(torch.zeros(2, 3, 4, 5))


def test_show_image_and_grid():
    ax = show_image(torch.rand(3, 8, 8), title="cat")
    assert ax.get_title() == "cat"
    fig = show_images([torch.rand(3, 8, 8)] * 5, titles=list("abcde"), colors=["green"] * 4 + ["red"])
    axes = fig.get_axes()
    assert len(axes) == 6  # 2 x 3 grid, the sixth cell left blank
    assert [a.get_title() for a in axes[:5]] == list("abcde") and axes[5].get_title() == ""
    assert tuple(fig.get_size_inches()) == (9, 6)
    assert axes[4].title.get_color() == "red"
    with pytest.raises(ValueError, match="titles"):
        show_images([torch.rand(3, 4, 4)] * 2, titles=["a"])


def test_show_batch_titles_with_labels_and_decodes():
    dl = DataLoader(Colours(), bs=8, after_batch=[ToFloat()], num_workers=0, device="cpu")
    fig = dl.show_batch(max_n=4)
    titled = [a for a in fig.get_axes() if a.get_title()]
    assert len(titled) == 4 and [a.get_title() for a in titled] == ["red", "green", "blue", "red"]
    img, lab = dl.decode_batch(dl.one_batch(), max_n=1)[0]
    assert img.dtype == torch.uint8 and img[0].max() == 255 and lab == "red"


def test_show_batch_unique_repeats_one_item_augmented():
    dl = DataLoader(Colours(), bs=4, after_item=[Shift()], split_idx=0, num_workers=0, device="cpu", seed=0)
    fig = dl.show_batch(max_n=9, unique=True, nrows=3)
    titles = [a.get_title() for a in fig.get_axes()]
    assert len(titles) == 9 and len(set(titles)) == 1
    arrays = [a.get_images()[0].get_array() for a in fig.get_axes()]
    assert any(not np.array_equal(arrays[0], a) for a in arrays[1:])  # each copy augmented on its own


def test_target_text():
    assert target_text(Colours(), torch.tensor(2)) == "blue"
    assert target_text(Colours(), torch.tensor([1.0, 0.0, 1.0])) == "red;blue"
    assert target_text(object(), 0.25) == "0.25"
