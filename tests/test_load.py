"""DataLoader / DataLoaders: collate, workers, seeding, bad images, cache, device, wrapping plain datasets."""

import os
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastvision.data.load import DataLoader, DataLoaders, collate, default_num_workers
from fastvision.data.samplers import BatchSampler
from fastvision.transform import Transform
from fastvision.vision.image import ImageLoadError, load_image
from fastvision.vision.lazy import PendingBatch, PendingImage


# ----- tiny module-level datasets and transforms (picklable, so they also work under spawn) -----
class FolderDS(torch.utils.data.Dataset):
    """(PIL image, int label) from image files; optionally logs every decode to a file."""

    def __init__(self, files, log=None, split_idx=None):
        self.items, self.log, self.split_idx = [Path(f) for f in files], log, split_idx
        names = sorted({f.name.split("_")[0] for f in self.items})
        self.vocab = names
        self.labels = [
            names.index(f.name.split("_")[0]) if f.name.split("_")[0] in names else 0 for f in self.items
        ]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        if self.log:
            with open(self.log, "a") as f:
                f.write(f"{i}\n")
        return load_image(self.items[i]), self.labels[i]


class IndexDS(torch.utils.data.Dataset):
    """(uint8 image 3x8x8 whose pixels are the index, index) - cheap, no files."""

    def __init__(self, n=20, fail_at=None):
        self.n, self.fail_at = n, fail_at

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if i == self.fail_at:
            raise KeyError(f"no label for item {i}")
        return torch.full((3, 8, 8), i, dtype=torch.uint8), i


class Small(Transform):
    """PIL -> uint8 tensor 3x16x16."""

    order = 1

    def encodes(self, x, split_idx=None):
        if isinstance(x, Image.Image):
            return torch.from_numpy(np.array(x.resize((16, 16)))).permute(2, 0, 1).contiguous()
        return x


class Jitter(Transform):
    """Random brightness shift on uint8 image tensors (torch RNG), training only."""

    split_idx = 0

    def encodes(self, x, split_idx=None):
        if isinstance(x, torch.Tensor) and x.ndim >= 3:
            return x + torch.randint(0, 50, (1,), dtype=torch.uint8)
        return x


class Pid(Transform):
    """Replace the label by the id of the process that ran the item transforms."""

    def encodes(self, x, split_idx=None):
        return os.getpid() if isinstance(x, int) else x


class Unpicklable(Transform):
    def __init__(self):
        self.f = lambda x: x


def epoch(dl):
    return [tuple(t.clone() for t in b) for b in dl]


@pytest.fixture
def bad_folder(tmp_path):
    from fastvision.testing import make_image_folder

    path = make_image_folder(tmp_path / "imgs", classes=("cat", "dog"), n_per_class=4, layout="name")
    good = sorted(path.glob("*.jpg"))
    (path / "cat_trunc.jpg").write_bytes(good[0].read_bytes()[:200])
    (path / "cat_empty.jpg").write_bytes(b"")
    (path / "dog_text.jpg").write_text("not an image")
    return path


# ----- collate -----
def test_collate_keeps_uint8_and_converts_scalars():
    b = collate(
        [(torch.zeros(3, 4, 4, dtype=torch.uint8), 1, 0.5), (torch.ones(3, 4, 4, dtype=torch.uint8), 2, 1.5)]
    )
    assert b[0].dtype == torch.uint8 and b[0].shape == (2, 3, 4, 4)
    assert b[1].dtype == torch.long and b[1].tolist() == [1, 2]
    assert b[2].dtype == torch.float32
    pil = collate([(Image.new("RGB", (5, 4)),), (Image.new("RGB", (5, 4)),)])[0]
    assert pil.dtype == torch.uint8 and pil.shape == (2, 3, 4, 5)
    arr = collate([(np.zeros((2, 2), np.float32),)] * 3)[0]
    assert arr.shape == (3, 2, 2)


def test_collate_stacks_chw_views_of_hwc_memory_as_channels_last():
    hwc = [torch.randint(0, 255, (4, 5, 3), dtype=torch.uint8) for _ in range(2)]
    (b,) = collate([(x.permute(2, 0, 1),) for x in hwc])
    assert b.shape == (2, 3, 4, 5) and b.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(b, torch.stack([x.permute(2, 0, 1) for x in hwc]))


def test_collate_pending_images():
    p = PendingImage(torch.zeros(3, 5, 6, dtype=torch.uint8), (0.0, 0.0, 5.0, 4.0), (8, 8))
    q = PendingImage(torch.zeros(3, 7, 4, dtype=torch.uint8), (0.0, 0.0, 3.0, 6.0), (8, 8))
    b = collate([(p, 0), (q, 1)])
    assert isinstance(b[0], PendingBatch) and b[0].shape == (2, 3, 8, 8)


def test_collate_shape_mismatch_names_position_items_paths_and_fix():
    samples = [(torch.zeros(3, 8, 8), 0), (torch.zeros(3, 9, 8), 1), (torch.zeros(3, 8, 8), 0)]
    with pytest.raises(RuntimeError, match=r"tuple position 0") as e:
        collate(samples, idxs=[4, 5, 6], items=[f"img{i}.jpg" for i in range(10)])
    msg = str(e.value)
    assert "(3, 8, 8): items 4 (img4.jpg), 6 (img6.jpg)" in msg and "(3, 9, 8): item 5 (img5.jpg)" in msg
    assert "item_tfms=Resize(224)" in msg and "equal size" not in msg


@pytest.mark.parametrize("nw", [0, 2])
def test_loader_collate_error_in_worker_keeps_type_and_paths(parent_folder, nw):
    ds = FolderDS(sorted(parent_folder.rglob("*.jpg")))
    dl = DataLoader(ds, bs=4, num_workers=nw, device="cpu")
    with pytest.raises(RuntimeError, match=r"different shapes[\s\S]*\.jpg[\s\S]*Resize\(224\)"):
        next(iter(dl))


# ----- workers -----
def test_num_workers_default_and_exact():
    assert DataLoader(IndexDS()).num_workers == default_num_workers() == min(8, os.cpu_count())
    dl = DataLoader(IndexDS(), num_workers=1)
    assert dl.num_workers == 1 and dl._torch_loader().num_workers == 1


def test_workers_are_used_and_persistent():
    dl = DataLoader(IndexDS(16), bs=4, num_workers=2, after_item=[Pid()], device="cpu")
    pids1 = {p for b in dl for p in b[1].tolist()}
    pids2 = {p for b in dl for p in b[1].tolist()}
    assert len(pids1) == 2 and os.getpid() not in pids1
    assert pids1 == pids2  # the same worker processes serve the second epoch
    main = DataLoader(IndexDS(8), bs=4, num_workers=0, after_item=[Pid()], device="cpu")
    assert {p for b in main for p in b[1].tolist()} == {os.getpid()}


def test_spawn_start_method_gives_the_same_batches():
    ref = epoch(DataLoader(IndexDS(10), bs=4, num_workers=0, device="cpu"))
    dl = DataLoader(IndexDS(10), bs=4, num_workers=1, multiprocessing_context="spawn", device="cpu")
    got = epoch(dl)
    assert len(got) == len(ref) == 3
    assert all(torch.equal(a, b) for ga, gb in zip(got, ref) for a, b in zip(ga, gb))


def test_unpicklable_transform_under_spawn_says_how_to_fix():
    dl = DataLoader(
        IndexDS(4), bs=2, num_workers=1, after_item=[Unpicklable()], multiprocessing_context="spawn"
    )
    with pytest.raises(TypeError, match="module level.*num_workers=0"):
        next(iter(dl))


@pytest.mark.parametrize("nw", [0, 2])
def test_seeded_loaders_reproduce_order_and_augmentation(nw):
    def run(seed):
        dl = DataLoader(
            IndexDS(12),
            bs=4,
            shuffle=True,
            num_workers=nw,
            after_item=[Jitter()],
            after_batch=[Jitter()],
            split_idx=0,
            seed=seed,
            device="cpu",
        )
        return epoch(dl) + epoch(dl)

    a, b, c = run(1), run(1), run(2)
    assert all(torch.equal(x, y) for ba, bb in zip(a, b) for x, y in zip(ba, bb))
    assert not all(torch.equal(x, y) for ba, bc in zip(a, c) for x, y in zip(ba, bc))
    assert sorted(torch.cat([bt[1] for bt in a[:3]]).tolist()) == list(range(12))  # an epoch is a permutation


class PidLabel(Transform):
    """Batch transform: replace the labels by the id of the process that ran the batch transforms."""

    prefers_workers = True  # as augmentation: by default the workers run the batch transforms

    def encodes(self, x, split_idx=None):
        return torch.full_like(x, os.getpid()) if x.ndim == 1 else x


class FailOnBatch(Transform):
    def encodes(self, x, split_idx=None):
        raise ArithmeticError(f"batch transform failed on a batch of {len(x)}")


def test_batch_transforms_run_in_the_workers_on_the_cpu_with_the_same_draws():
    def run(in_workers, nw=2, **kw):
        tfms = [Jitter(), PidLabel()]
        dl = DataLoader(IndexDS(12), bs=4, shuffle=True, num_workers=nw, after_batch=tfms, split_idx=0,
                        seed=3, device="cpu", batch_in_workers=in_workers, **kw)  # fmt: skip
        return dl, epoch(dl)

    dl, here = run(True)
    _, main = run(False)
    _, nw0 = run(True, nw=0)
    pids = {p for b in here for p in b[1].tolist()}
    assert pids and os.getpid() not in pids  # the workers ran them
    assert {p for b in main + nw0 for p in b[1].tolist()} == {os.getpid()}
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[0], c[0]) for a, b, c in zip(here, main, nw0))
    assert all(a[0].dtype == torch.uint8 for a in here)
    # new batch transforms reach the workers (they restart); moving off the CPU brings them back to main
    dl.after_batch = [Jitter()]
    assert all(b[1].max() < 12 for b in epoch(dl))
    dl.after_batch = [PidLabel()]
    assert os.getpid() not in {p for b in epoch(dl) for p in b[1].tolist()}
    dl.device = "meta"
    assert dl._torch_dl is None and dl._workers_fetcher().after_batch is None


def test_elementwise_batch_transforms_stay_in_the_main_process_unless_asked():
    from fastvision.vision.augment import aug_transforms
    from fastvision.vision.lighting import IntToFloatTensor, Normalize

    def fetcher(tfms, **kw):
        return DataLoader(
            IndexDS(8), bs=4, num_workers=2, after_batch=tfms, device="cpu", **kw
        )._workers_fetcher()

    elementwise = [IntToFloatTensor(), Normalize.from_stats([0.5] * 3, [0.2] * 3)]
    assert fetcher(elementwise).after_batch is None  # float batches would be 4x the bytes to send
    assert fetcher(elementwise, batch_in_workers=True).after_batch is not None
    assert fetcher([*elementwise, *aug_transforms()]).after_batch is not None  # augmentation resamples
    assert fetcher(aug_transforms(size=4)).after_batch is not None
    assert fetcher(aug_transforms(), batch_in_workers=False).after_batch is None


def test_batch_transform_error_in_a_worker_keeps_its_type_and_message():
    dl = DataLoader(IndexDS(8), bs=4, num_workers=2, after_batch=[FailOnBatch()], device="cpu")
    with pytest.raises(ArithmeticError, match="batch transform failed on a batch of 4"):
        list(dl)


def test_worker_exception_keeps_type_and_names_item():
    dl = DataLoader(IndexDS(8, fail_at=5), bs=4, num_workers=2, device="cpu")
    with pytest.raises(KeyError, match="no label for item 5.*item 5"):
        list(dl)


# ----- bad images -----
@pytest.mark.parametrize("nw", [0, 2])
@pytest.mark.parametrize("name", ["cat_trunc.jpg", "cat_empty.jpg", "dog_text.jpg"])
def test_bad_image_raises_in_main_process_naming_the_file(bad_folder, nw, name):
    good = sorted(f for f in bad_folder.glob("*.jpg") if f.name[4:].split(".")[0].isdigit())
    ds = FolderDS([*good[:3], bad_folder / name], split_idx=1)
    dl = DataLoader(ds, bs=4, num_workers=nw, after_item=[Small()], device="cpu")
    with pytest.raises(ImageLoadError, match=name) as e:
        list(dl)
    assert str(bad_folder / name) in str(e.value.path) and e.value.reason
    assert "Traceback" not in str(e.value)


class FolderIdxDS(FolderDS):
    """(PIL image, dataset index): which items a batch really holds."""

    def __getitem__(self, i):
        return load_image(self.items[i]), i


BAD = ("cat_trunc.jpg", "cat_empty.jpg", "dog_text.jpg")


@pytest.mark.parametrize("nw", [0, 2])
def test_skip_leaves_bad_images_out_warns_once_and_later_epochs_exclude_them(bad_folder, nw):
    files = sorted(bad_folder.glob("*.jpg"))
    bad = sorted(i for i, f in enumerate(files) if f.name in BAD)
    good = [i for i in range(len(files)) if i not in bad]
    dl = DataLoader(
        FolderIdxDS(files), bs=4, num_workers=nw, after_item=[Small()], on_bad_image="skip", device="cpu"
    )
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        first = list(dl)
    ids = torch.cat([b[1] for b in first]).tolist()
    assert ids == good  # no neighbour stands in for a bad file, nothing repeated, order kept
    ours = [x for x in w if "unreadable" in str(x.message)]
    assert len(ours) == 1 and ours[0].filename == __file__
    assert all(name in str(ours[0].message) for name in BAD)
    assert sorted(dl.skipped) == bad and all(Path(p).name in BAD for p in dl.skipped.values())
    assert len(dl) == -(-len(good) // 4)  # the length counts the readable items once they are known
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        second = list(dl)
    assert [len(b[0]) for b in second] == [4, 4] and not [x for x in w if "unreadable" in str(x.message)]


# ----- cache -----
@pytest.mark.parametrize("nw", [0, 2])
def test_cache_avoids_decoding_again(parent_folder, tmp_path, nw):
    log = tmp_path / f"decodes{nw}.txt"
    ds = FolderDS(sorted(parent_folder.rglob("*.jpg")), log=log)
    dl = DataLoader(ds, bs=3, shuffle=True, num_workers=nw, after_item=[Small()], cache=True, device="cpu")
    list(dl)
    first = len(log.read_text().split())
    list(dl)
    second = len(log.read_text().split()) - first
    assert first == len(ds) and second == 0


def test_shard_sampler_keeps_indices_on_their_worker():
    for drop in (False, True):
        s = BatchSampler(
            23, 4, shuffle=True, drop_last=drop, gen=torch.Generator().manual_seed(0), n_shards=2
        )
        owner = {}
        for _ in range(3):
            batches = list(s)
            assert len(batches) == len(s) == (5 if drop else 6)
            flat = [i for b in batches for i in b]
            assert len(set(flat)) == len(flat) and (drop or sorted(flat) == list(range(23)))
            for k, b in enumerate(batches):
                for i in b:
                    assert owner.setdefault(i, k % 2) == k % 2


# ----- DataLoaders -----
def _dsets(train, valid, **attrs):
    return types.SimpleNamespace(train=train, valid=valid, **attrs)


def test_from_datasets_train_only_shuffle_and_drop_last():
    dls = DataLoaders.from_datasets(
        _dsets(IndexDS(10), IndexDS(6)), bs=4, num_workers=0, device="cpu", val_bs=5
    )
    assert (dls.train.shuffle, dls.train.drop_last, dls.train.split_idx) == (True, True, 0)
    assert (dls.valid.shuffle, dls.valid.drop_last, dls.valid.split_idx) == (False, False, 1)
    assert len(dls.train) == 2 and len(dls.valid) == 2 and dls.valid.bs == 5
    assert [b[1].tolist() for b in dls.valid] == [[0, 1, 2, 3, 4], [5]]
    assert dls.loss_func is None and dls.n_inp == 1


def test_batches_are_moved_to_the_device_and_tfm_tensors_follow():
    class Scale(Transform):
        def __init__(self):
            self.mean = torch.zeros(1)

    dls = DataLoaders.from_datasets(_dsets(IndexDS(8), IndexDS(4)), bs=4, num_workers=0, device="cpu")
    assert all(t.device.type == "cpu" for t in dls.one_batch())
    dl = DataLoader(IndexDS(8), bs=4, num_workers=0, device="meta")
    assert all(t.device.type == "meta" for t in next(iter(dl)))
    dls.train.after_batch = [Scale()]
    dls.device = "meta"
    assert dls.train.device.type == "meta" and dls.train.after_batch.tfms[0].mean.device.type == "meta"


def test_from_dsets_tensor_dataset():
    x, y = torch.randn(10, 2), torch.randint(0, 3, (10,))
    dls = DataLoaders.from_dsets(
        torch.utils.data.TensorDataset(x, y), torch.utils.data.TensorDataset(x, y), bs=4
    )
    assert dls.train.num_workers == 0 and len(dls.train) == 2 and len(dls.valid) == 3
    xb, yb = dls.valid.one_batch()
    assert xb.shape == (4, 2) and torch.equal(yb.cpu(), y[:4])
    assert dls.device == dls.train.device == dls.valid.device
    tdl = dls.test_dl(x[:5])
    assert [b[0].shape[0] for b in tdl] == [4, 1] and tdl.split_idx == 1 and not tdl.shuffle


class FakeFashion(torch.utils.data.Dataset):
    """Mimics torchvision.datasets.FashionMNIST(root, train, transform=ToTensor())."""

    classes = [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Boot",
    ]

    def __init__(self, root, train=True, transform=None):
        g = torch.Generator().manual_seed(int(train))
        self.data, self.targets = (
            torch.randint(0, 255, (12, 28, 28), generator=g, dtype=torch.uint8),
            torch.arange(12) % 10,
        )
        self.transform = transform

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        img = Image.fromarray(self.data[i].numpy(), mode="L")
        return (self.transform(img) if self.transform else img), int(self.targets[i])


def to_tensor(img):
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255)[None]


def test_from_dsets_torchvision_style_dataset():
    dls = DataLoaders.from_dsets(
        FakeFashion(".", True, to_tensor), FakeFashion(".", False, to_tensor), bs=4, num_workers=0
    )
    xb, yb = dls.one_batch()
    assert xb.shape == (4, 1, 28, 28) and xb.dtype == torch.float32 and yb.dtype == torch.long
    assert dls.c == 10 and dls.vocab[1] == "Trouser"
    lf = dls.loss_func
    assert isinstance(lf, torch.nn.CrossEntropyLoss) and lf is not dls.loss_func
    assert [y for _, y in dls.valid.decode_batch(dls.valid.one_batch(), max_n=2)] == [
        "T-shirt/top",
        "Trouser",
    ]
    raw = DataLoaders.from_dsets(FakeFashion("."), bs=4, num_workers=0)  # PIL images are collated too
    assert raw.one_batch()[0].dtype == torch.uint8


def test_plain_torch_dataloaders_are_wrapped():
    ds = torch.utils.data.TensorDataset(torch.arange(10.0)[:, None], torch.arange(10))
    tdl = torch.utils.data.DataLoader(ds, batch_size=4, shuffle=True)
    vdl = torch.utils.data.DataLoader(ds, batch_size=4)
    dls = DataLoaders(tdl, vdl, device="cpu")
    assert dls.train.shuffle and not dls.valid.shuffle and len(dls.valid) == 3
    b = next(iter(dls.valid))
    assert isinstance(b, tuple) and b[1].tolist() == [0, 1, 2, 3] and b[0].device.type == "cpu"
    with pytest.raises(TypeError, match="WeightedRandomSampler"):
        DataLoaders(
            torch.utils.data.DataLoader(ds, sampler=torch.utils.data.WeightedRandomSampler([1.0] * 10, 5))
        )


def test_new_overrides_and_one_batch_errors():
    dl = DataLoader(IndexDS(10), bs=4, shuffle=True, drop_last=True, num_workers=0, device="cpu")
    nd = dl.new(shuffle=False, drop_last=False)
    assert (nd.shuffle, nd.drop_last, nd.bs, len(nd)) == (False, False, 4, 3)
    with pytest.raises(ValueError, match="does not contain any batches"):
        DataLoader(IndexDS(3), bs=4, drop_last=True, num_workers=0).one_batch()
    with pytest.raises(ValueError, match="on_bad_image"):
        DataLoader(IndexDS(3), on_bad_image="ignore")


# ----- end to end with DataBlock -----
def test_datablock_end_to_end(pets_folder):
    from fastvision.data.block import CategoryBlock, DataBlock
    from fastvision.data.items import RandomSplitter, RegexLabeller, get_image_files, using_attr
    from fastvision.vision.block import ImageBlock
    from fastvision.vision.resize import Resize

    dblock = DataBlock(
        blocks=(ImageBlock, CategoryBlock),
        get_items=get_image_files,
        get_y=using_attr(RegexLabeller(r"(.+)_\d+.jpg$"), "name"),
        splitter=RandomSplitter(seed=0),
        item_tfms=Resize(24),
    )
    dls = dblock.dataloaders(pets_folder, bs=4, num_workers=0, device="cpu")
    xb, yb = dls.one_batch()
    assert xb.shape[1:] == (3, 24, 24) and yb.dtype == torch.long
    assert list(dls.vocab) == ["Abyssinian", "beagle", "pug"] and dls.c == 3
    pairs = dls.valid.decode_batch(next(iter(dls.valid)), max_n=3)
    assert all(lab in dls.vocab for _, lab in pairs)
    files = get_image_files(pets_folder)[:3]
    tdl = dls.test_dl(files)
    (tb,) = next(iter(tdl))
    assert tb.shape[0] == 3 and tb.shape[-2:] == (24, 24)


def test_tensor_dataset_fast_path_gives_the_per_item_batches():
    x, y = torch.randn(50, 3), torch.randint(0, 4, (50,))
    ds = torch.utils.data.TensorDataset(x, y)

    class PerItem(torch.utils.data.Dataset):  # the same data, fetched item by item
        def __len__(self):
            return 50

        def __getitem__(self, i):
            return x[i], y[i]

    fast = DataLoader(ds, bs=8, shuffle=True, num_workers=0, seed=5, device="cpu")
    slow = DataLoader(PerItem(), bs=8, shuffle=True, num_workers=0, seed=5, device="cpu")
    assert fast._fetcher._tensors is not None and slow._fetcher._tensors is None
    for _ in range(2):
        for (fx, fy), (sx, sy) in zip(fast, slow, strict=True):
            assert torch.equal(fx, sx) and torch.equal(fy, sy)


def test_tensor_image_dataset_batches_are_the_per_item_batches():
    from fastvision.data.external import TensorImageDataset

    x, y = torch.randint(0, 255, (30, 1, 4, 4), dtype=torch.uint8), torch.randint(0, 3, (30,))
    ds = TensorImageDataset(x, y, ["a", "b", "c"])
    fast = DataLoader(ds, bs=7, shuffle=True, num_workers=0, seed=2, device="cpu")
    assert fast._fetcher._tensors is not None
    items = [ds[i] for i in range(len(ds))]  # the per-item path, collated by hand
    for xb, yb in fast:
        idx = [int(torch.nonzero((x == xi).flatten(1).all(1))[0]) for xi in xb]
        assert torch.equal(xb, torch.stack([items[i][0] for i in idx])) and yb.dtype == torch.long
        assert yb.tolist() == [items[i][1] for i in idx]


class FakeFashionMNIST(torch.utils.data.Dataset):
    """Like torchvision's FashionMNIST: (1x8x8 float image, int target), class names in `.classes`."""

    classes = "T-shirt/top Trouser Pullover Dress Coat Sandal Shirt Sneaker Bag Boot".split()

    def __init__(self, n=20):
        self.x = torch.rand(n, 1, 8, 8)
        self.y = [i % 10 for i in range(n)]

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def test_from_dsets_keeps_class_names_of_subsets():
    full = FakeFashionMNIST()
    train, valid = torch.utils.data.random_split(full, [14, 6], generator=torch.Generator().manual_seed(0))
    nested = torch.utils.data.Subset(valid, [0, 1, 2])
    dls = DataLoaders.from_dsets(train, nested, bs=4, num_workers=0, device="cpu")
    assert dls.vocab == FakeFashionMNIST.classes and dls.c == 10
    assert isinstance(dls.loss_func, torch.nn.CrossEntropyLoss)
    assert dls.valid.dataset.classes == FakeFashionMNIST.classes
    assert not hasattr(train, "classes") and not hasattr(nested, "classes")  # the caller's are untouched
    x, y = dls.one_batch()
    labels = [label for _, label in dls.decode_batch((x, y))]
    assert labels == [FakeFashionMNIST.classes[int(t)] for t in y]
    plain = DataLoaders.from_dsets(torch.utils.data.TensorDataset(full.x), bs=4, num_workers=0, device="cpu")
    assert plain.vocab is None


def test_batch_size_is_an_alias_of_bs():
    ds = FakeFashionMNIST()
    dl = DataLoader(ds, batch_size=5, shuffle=True, num_workers=0, device="cpu")
    assert dl.bs == 5 and len(dl) == 4 and dl.one_batch()[0].shape[0] == 5
    assert DataLoader(ds, bs=5, batch_size=5, num_workers=0).bs == 5
    assert dl.new(batch_size=10).bs == 10 and dl.new(bs=2).bs == 2
    with pytest.raises(TypeError, match=r"bs=4 and batch_size=5.*Pass only one"):
        DataLoader(ds, bs=4, batch_size=5, num_workers=0)
