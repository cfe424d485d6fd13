"""The data pipeline end to end: items stay paths until a worker needs them, bad files, randomness, workers."""

import os
import pickle
import signal
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastvision.data.block import CategoryBlock, DataBlock
from fastvision.data.items import RandomSplitter, RegexLabeller, get_image_files, using_attr
from fastvision.data.load import DataLoader
from fastvision.testing import make_image_folder
from fastvision.transform import Transform
from fastvision.vision.block import ImageBlock
from fastvision.vision.data import ImageDataLoaders
from fastvision.vision.image import ImageLoadError
from fastvision.vision.resize import Resize

PAT = r"^(.+)_\d+.jpg$"
BAD = ("cat_100.jpg", "cat_101.jpg", "dog_102.jpg")  # truncated, empty, text


def pets_block(**kw):
    kw = {"splitter": RandomSplitter(seed=0), "item_tfms": Resize(16), **kw}
    return DataBlock(
        blocks=(ImageBlock, CategoryBlock),
        get_items=get_image_files,
        get_y=using_attr(RegexLabeller(PAT), "name"),
        **kw,
    )


@pytest.fixture
def bad_pets(tmp_path):
    path = make_image_folder(tmp_path / "imgs", classes=("cat", "dog"), n_per_class=8, layout="name")
    good = sorted(path.glob("*.jpg"))
    (path / BAD[0]).write_bytes(good[0].read_bytes()[:200])
    (path / BAD[1]).write_bytes(b"")
    (path / BAD[2]).write_text("not an image")
    return path


# ------------------------------------------------------------------------------ nothing decoded up front
def test_building_dataloaders_reads_no_pixels(tmp_path):
    path = make_image_folder(tmp_path / "imgs", classes=("cat", "dog"), n_per_class=6, layout="name")
    dls = pets_block().dataloaders(path, bs=4, num_workers=0, device="cpu")
    for f in path.glob("*.jpg"):  # replaced after dataloaders(): the batch must show the new pixels
        Image.new("RGB", (30, 20), (0, 255, 0)).save(f)
    xb, _ = dls.valid.one_batch()
    assert xb.shape[1:] == (3, 16, 16)
    assert xb.dtype == torch.float32 and xb[:, 1].mean() > 0.95 and xb[:, 0].mean() < 0.05


def test_datasets_hold_paths_and_workers_receive_no_pixels(tmp_path):
    path = make_image_folder(
        tmp_path / "imgs", classes=("cat", "dog"), n_per_class=40, layout="name", sizes=((200, 160),)
    )
    dls = pets_block().dataloaders(path, bs=8, num_workers=0, device="cpu")
    x, y = dls.train_ds[0]
    assert isinstance(y, int) and x.size == (25, 20)  # decoded on access, at 1/8 scale (Resize(16))
    sent = len(pickle.dumps(dls.train._fetcher))  # what a spawn worker receives
    pixels = 64 * 200 * 160 * 3
    assert sent < pixels // 10, f"the loader pickles {sent} bytes: pixels went with it"


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc")
def test_memory_of_building_dataloaders_does_not_grow_with_the_dataset(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "many"
    folder.mkdir()
    arr = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)  # 1,500 decoded images: 55 MB
    for i in range(1500):
        Image.fromarray(arr).save(folder / f"{'cat' if i % 2 else 'dog'}_{i}.jpg", quality=30)
    block = pets_block()
    block.dataloaders(folder, bs=8, num_workers=0, device="cpu")  # warm up imports and caches
    before = _rss_mb()
    dls = block.dataloaders(folder, bs=8, num_workers=0, device="cpu")
    grown = _rss_mb() - before
    assert len(dls.train_ds) + len(dls.valid_ds) == 1500
    assert grown < 15, f"building DataLoaders over 1,500 images grew RSS by {grown:.0f} MB"


# ------------------------------------------------------------------------------ bad files
@pytest.mark.parametrize("nw", [0, 2])
def test_bad_image_through_a_datablock_is_an_image_load_error(bad_pets, nw):
    dls = pets_block(splitter=RandomSplitter(0.5, seed=0)).dataloaders(bad_pets, bs=32, num_workers=nw)
    with pytest.raises(ImageLoadError) as e:
        for dl in dls.loaders:
            list(dl)
    assert Path(e.value.path).name in BAD and e.value.reason
    assert "on_bad_image='skip'" in str(e.value)


@pytest.mark.parametrize("nw", [0, 2])
def test_skip_through_datablock_and_image_dataloaders(bad_pets, nw):
    makers = [
        lambda: pets_block(splitter=RandomSplitter(0.5, seed=0)).dataloaders(
            bad_pets, bs=4, num_workers=nw, on_bad_image="skip", device="cpu"
        ),
        lambda: ImageDataLoaders.from_name_re(
            bad_pets,
            get_image_files(bad_pets),
            PAT,
            valid_pct=0.5,
            seed=0,
            item_tfms=Resize(16),
            bs=4,
            num_workers=nw,
            on_bad_image="skip",
            device="cpu",
        ),
    ]
    for make in makers:
        dls = make()
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            n = sum(len(b[0]) for dl in dls.loaders for b in dl.new(shuffle=False, drop_last=False))
        assert n == 16  # 19 files, 3 unreadable: each good one exactly once
        msgs = " ".join(str(x.message) for x in w if "unreadable" in str(x.message))
        assert all(name in msgs for name in BAD)


@pytest.mark.parametrize("nw", [0, 2])
def test_test_dl_skip_never_gives_a_bad_file_a_neighbours_row(bad_pets, nw):
    dls = pets_block().dataloaders(bad_pets, bs=4, num_workers=0, device="cpu")
    files = sorted(bad_pets.glob("*.jpg"))
    dl = dls.test_dl(files, on_bad_image="skip", num_workers=nw)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        xs = torch.cat([b[0] for b in dl])
    kept = [i for i in range(len(files)) if i not in dl.skipped]
    assert sorted(Path(p).name for p in dl.skipped.values()) == sorted(BAD) and len(xs) == len(kept)
    alone = torch.cat([b[0] for b in dls.test_dl([files[i] for i in kept], num_workers=0)])
    assert torch.equal(xs, alone)  # row r is the r-th readable file, whatever was skipped before it


# ------------------------------------------------------------------------------ randomness
class Jitter(Transform):
    """A random item transform: adds a random integer to every pixel."""

    order = 6

    def encodes(self, x, split_idx=None):
        if isinstance(x, torch.Tensor) and x.dtype == torch.uint8 and x.ndim == 3:
            return (x.int() + int(torch.randint(0, 50, ()))).clamp(0, 255).to(torch.uint8)
        return x


class Idx(torch.utils.data.Dataset):
    def __init__(self, n=24):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return torch.full((3, 4, 4), i, dtype=torch.uint8), i


def _epochs(dl, n=2):
    return [[(b[0].clone(), b[1].clone()) for b in dl] for _ in range(n)]


def _same(a, b):
    return all(
        torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for ea, eb in zip(a, b) for x, y in zip(ea, eb)
    )


def test_batches_do_not_depend_on_the_number_of_workers():
    runs = [
        _epochs(DataLoader(Idx(), bs=5, shuffle=True, num_workers=nw, seed=3, after_item=[Jitter()]))
        for nw in (0, 1, 2)
    ]
    assert _same(runs[0], runs[1]) and _same(runs[0], runs[2])
    assert not torch.equal(runs[0][0][0][1], runs[0][1][0][1])  # epochs differ


def test_torch_manual_seed_before_iterating_makes_an_unseeded_loader_repeatable():
    dl = DataLoader(Idx(), bs=5, shuffle=True, num_workers=0, after_item=[Jitter()])  # built before seeding
    torch.manual_seed(7)
    a = _epochs(dl)
    torch.manual_seed(7)
    b = _epochs(dl)
    torch.manual_seed(8)
    c = _epochs(dl)
    assert _same(a, b) and not _same(a, c)


@pytest.mark.parametrize("nw", [0, 2])
def test_state_dict_mid_epoch_continues_with_the_same_batches(nw):
    dl = DataLoader(Idx(), bs=5, shuffle=True, num_workers=nw, seed=1, after_item=[Jitter()])
    list(dl)  # an epoch done: the state moves on
    it = iter(dl)
    done = [next(it) for _ in range(2)]
    state = dl.state_dict()
    rest = [(b[0].clone(), b[1].clone()) for b in it]
    dl2 = DataLoader(Idx(), bs=5, shuffle=True, num_workers=nw, seed=99, after_item=[Jitter()])
    dl2.load_state_dict(state)
    again = [(b[0].clone(), b[1].clone()) for b in dl2]
    assert state["pos"] == 2 and len(done) == 2 and _same([rest], [again])
    nxt1, nxt2 = [b[1].tolist() for b in dl], [b[1].tolist() for b in dl2]
    assert nxt1 == nxt2  # and the epoch after that too


def test_state_dict_between_epochs_restores_the_order():
    dl = DataLoader(Idx(), bs=5, shuffle=True, num_workers=0, seed=1)
    state = dl.state_dict()
    first = [b[1].tolist() for b in dl]
    dl.load_state_dict(state)
    assert [b[1].tolist() for b in dl] == first


# ------------------------------------------------------------------------------ workers
def test_workers_killed_by_ctrl_c_are_restarted():
    dl = DataLoader(Idx(40), bs=4, shuffle=True, num_workers=2, seed=0)
    first = [b[1] for b in dl]
    pids = [w.pid for w in dl._torch_dl._iterator._workers]
    for pid in pids:  # a terminal's Ctrl-C sends SIGINT to the whole process group
        os.kill(pid, signal.SIGINT)
    deadline = time.time() + 10
    while time.time() < deadline and any(w.is_alive() for w in dl._torch_dl._iterator._workers):
        time.sleep(0.05)
    second = [b[1] for b in dl]
    assert len(second) == len(first) == 10
    assert sorted(torch.cat(second).tolist()) == list(range(40))


# ------------------------------------------------------------------------------ decoding on the device
def _exif(o):
    exif = Image.Exif()
    exif[0x0112] = o
    return exif


@pytest.fixture
def oriented_pets(tmp_path):
    """JPEGs with every EXIF orientation, a PNG and a greyscale JPEG, Pets-style names."""
    path = tmp_path / "oriented"
    path.mkdir()
    rng = np.random.default_rng(0)
    for o in range(1, 9):
        arr = rng.integers(0, 256, (30 + o, 50, 3), dtype=np.uint8)
        Image.fromarray(arr).save(path / f"{'cat' if o % 2 else 'dog'}_{o}.jpg", quality=95, exif=_exif(o))
    Image.fromarray(rng.integers(0, 256, (40, 44, 3), dtype=np.uint8)).save(path / "cat_20.png")
    Image.fromarray(rng.integers(0, 256, (40, 44), dtype=np.uint8)).save(path / "dog_21.jpg")
    return path


@pytest.mark.parametrize("batch_tfms", [None, "aug"])
def test_decode_on_device_matches_decoding_in_the_workers(oriented_pets, batch_tfms):
    from fastvision.vision.augment import aug_transforms

    kw = {
        "get_items": lambda p: sorted(p.glob("*.*")),
        "splitter": lambda items: (list(range(len(items))), list(range(len(items)))),
        "get_y": lambda f: f.name.split("_")[0],
        "item_tfms": Resize(24),
        "batch_tfms": aug_transforms(size=20) if batch_tfms else None,
    }
    block = DataBlock(blocks=(ImageBlock, CategoryBlock), **kw)
    on_dev = block.dataloaders(oriented_pets, bs=16, num_workers=0, device="cpu", decode_on_device=True)
    assert type(on_dev.valid_ds.dsets.type_tfms[0][0]).__name__ == "ReadEncoded"
    x_dev, y_dev = on_dev.valid.one_batch()
    if batch_tfms:  # the same lazy resample either way: the same pixels
        x_wrk, y_wrk = block.dataloaders(oriented_pets, bs=16, num_workers=0, device="cpu").valid.one_batch()
        torch.testing.assert_close(x_dev, x_wrk, atol=2 / 255, rtol=0)
    else:  # one bilinear resample of the upright image at 24 x 24, whatever the orientation
        assert x_dev.shape == (10, 3, 24, 24) and x_dev.dtype == torch.float32
        x_wrk, y_wrk = on_dev.valid.one_batch()
    assert torch.equal(y_dev, y_wrk)


def test_decode_on_device_needs_a_single_item_resize(oriented_pets):
    from fastvision.vision.resize import FlipItem

    block = pets_block(item_tfms=[FlipItem(), Resize(24)])
    with pytest.raises(ValueError, match="decode_on_device=True needs item_tfms made only of one Resize"):
        block.dataloaders(oriented_pets, decode_on_device=True)


def test_decode_encoded_orients_like_pil_and_falls_back_to_pil(oriented_pets):
    from fastvision.vision.image import EncodedImage, decode_encoded, load_image, read_encoded

    files = sorted(oriented_pets.glob("*.jpg"))
    enc = [read_encoded(f) for f in files]
    assert all(
        isinstance(e, EncodedImage) for e in enc[:-1]
    )  # the greyscale JPEG is decoded (to RGB) at once
    enc = enc[:-1]
    broken = EncodedImage(enc[0].data[:-300].clone(), enc[0].size, 1, files[0], "RGB")
    for f, e, t in zip(files, enc, decode_encoded(enc, "cpu")):
        want = torch.from_numpy(np.array(load_image(f))).permute(2, 0, 1)
        assert t.shape == want.shape and (t.int() - want.int()).abs().max() <= 1, (f.name, e.orientation)
    with pytest.raises(ImageLoadError, match=files[0].name):
        decode_encoded([broken], "cpu")


def test_get_preds_rows_follow_the_readable_files_and_predict_refuses_a_bad_one(bad_pets):
    from torch import nn

    from fastvision.learner import Learner

    dls = pets_block().dataloaders(bad_pets, bs=4, num_workers=0, on_bad_image="skip", device="cpu")
    torch.manual_seed(0)
    learn = Learner(dls, nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 2)))
    files = sorted(bad_pets.glob("*.jpg"))
    dl = dls.test_dl(files)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        preds, _ = learn.get_preds(dl=dl)
    readable = [f for i, f in enumerate(files) if i not in dl.skipped]
    assert len(readable) == len(files) - 3 and preds.shape[0] == len(readable)
    alone, _ = learn.get_preds(dl=dls.test_dl(readable))
    torch.testing.assert_close(preds, alone)
    with pytest.raises(ImageLoadError, match=BAD[1]):
        learn.predict(bad_pets / BAD[1])


def test_close_stops_the_workers_and_the_next_epoch_starts_new_ones():
    dl = DataLoader(Idx(16), bs=4, num_workers=2, seed=0)
    first = [b[1] for b in dl]
    workers = list(dl._torch_dl._iterator._workers)
    dl.close()
    assert all(not w.is_alive() for w in workers)
    assert torch.equal(torch.cat([b[1] for b in dl]), torch.cat(first))
