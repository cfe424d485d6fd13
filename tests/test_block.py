import pickle

import pytest
import torch
from PIL import Image

from fastvision.data.block import (
    CategoryBlock,
    CategoryMap,
    DataBlock,
    MultiCategoryBlock,
    RegressionBlock,
    TransformBlock,
)
from fastvision.data.items import (
    FuncSplitter,
    IndexSplitter,
    LabelError,
    RandomSplitter,
    RegexLabeller,
    get_image_files,
    parent_label,
    using_attr,
)
from fastvision.transform import ToTensor
from fastvision.vision.block import ImageBlock, PILImage, PILImageBW
from fastvision.vision.data import ImageDataLoaders
from fastvision.vision.lighting import IntToFloatTensor
from fastvision.vision.resize import Resize

PAT = r"(.+)_\d+.jpg$"


def pets_block(**kw):
    args = dict(
        blocks=(ImageBlock, CategoryBlock),
        get_items=get_image_files,
        splitter=RandomSplitter(seed=42),
        get_y=using_attr(RegexLabeller(PAT), "name"),
    )
    return DataBlock(**{**args, **kw})


# ----------------------------------------------------------------------------------------- CategoryMap
def test_category_map_sorts_python_style_and_drops_nan():
    v = CategoryMap(["pug", "Bengal", "beagle", float("nan"), "pug", "Abyssinian"])
    assert v == ["Abyssinian", "Bengal", "beagle", "pug"]  # uppercase first
    assert v.items == list(v) and v.o2i["beagle"] == 2 and len(v) == 4
    assert v.map_objs(["pug", "Bengal"]) == [3, 1] and v.map_ids([0]) == ["Abyssinian"]
    assert CategoryMap(["b", "a", "b"], sort=False) == ["b", "a"]
    assert CategoryMap(["b", "a"], add_na=True) == ["#na#", "a", "b"]


def test_category_map_keeps_pandas_categorical_order():
    pd = pytest.importorskip("pandas")
    col = pd.Series(pd.Categorical(["lo", "hi", "mid"], categories=["lo", "mid", "hi"]))
    assert CategoryMap(col) == ["lo", "mid", "hi"]


def test_category_map_strict_keeps_only_present_categories():
    """Issue #12 (fastai parity): strict=True drops the unused categories, keeping category order."""
    pd = pytest.importorskip("pandas")
    col = pd.Series(pd.Categorical(["hi", "lo", "hi"], categories=["lo", "mid", "hi", "top"]))
    assert CategoryMap(col) == ["lo", "mid", "hi", "top"]
    assert CategoryMap(col, strict=True) == ["lo", "hi"]
    assert CategoryMap(["b", "a"], strict=True) == ["a", "b"]  # plain values: only those present anyway


# ----------------------------------------------------------------------------------------- Datasets
def test_pets_datasets(pets_folder):
    dsets = pets_block().datasets(pets_folder)
    assert len(dsets) == 18 and [len(s) for s in dsets.splits] == [15, 3]
    assert len(dsets.train) == 15 and len(dsets.valid) == 3
    assert dsets.vocab == ["Abyssinian", "beagle", "pug"] and dsets.c == 3 and dsets.n_inp == 1
    x, y = dsets.train[0]
    assert isinstance(x, Image.Image) and x.mode == "RGB" and isinstance(y, int)
    assert dsets.decode((x, y))[1] == dsets.vocab[y]
    assert dsets.train.split_idx == 0 and dsets.valid.split_idx == 1 and dsets.train.vocab == dsets.vocab
    assert dsets.items[dsets.splits[0][0]] == dsets.train.items[0]
    assert dsets.tfms == ["PILImage.create", "UsingAttr -> Categorize"]
    a, b = dsets.loss_func, dsets.loss_func
    assert a is not b and type(a).__name__ == "CrossEntropyLossFlat"


def test_target_labels_are_the_decoded_targets_and_read_no_image(pets_folder):
    dsets = pets_block().datasets(pets_folder)
    want = [dsets.decode(dsets.valid[i])[1] for i in range(len(dsets.valid))]
    for p in get_image_files(pets_folder):
        p.unlink()  # decoding an image now fails: the labels must come from what was built
    assert dsets.valid.target_labels() == want and all(isinstance(w, str) for w in want)
    assert dsets.valid.target_labels([2, 0]) == [want[2], want[0]]
    assert dsets.target_labels() == [RegexLabeller(PAT)(p.name) for p in dsets.items]


def test_datasets_pickle_without_user_lambdas(pets_folder):
    dsets = pets_block(get_y=lambda p: p.name.split("_")[0]).datasets(pets_folder)
    train = pickle.loads(pickle.dumps(dsets.train))  # what a spawned worker receives
    assert train[0][1] == dsets.train[0][1]


def test_vocab_comes_from_training_split_and_unseen_label_raises(pets_folder):
    valid_pug = FuncSplitter(lambda p: p.name.startswith("pug"))
    with pytest.raises(
        ValueError, match=r"Label 'pug' is not in the vocab .*'Abyssinian', 'beagle'.*item \d+ of 18"
    ):
        pets_block(splitter=valid_pug).datasets(pets_folder)
    dsets = pets_block(splitter=valid_pug, blocks=(ImageBlock, CategoryBlock(add_na=True))).datasets(
        pets_folder
    )
    assert dsets.vocab == ["#na#", "Abyssinian", "beagle"] and dsets.valid[0][1] == 0
    fixed = pets_block(
        splitter=valid_pug, blocks=(ImageBlock, CategoryBlock(vocab=["pug", "beagle", "Abyssinian"]))
    )
    assert fixed.datasets(pets_folder).vocab == ["Abyssinian", "beagle", "pug"]


def test_label_errors_name_the_item(pets_folder):
    with pytest.raises(LabelError, match=r"matched nothing in 'Abyssinian_0.jpg' \(item 0 of 18\)"):
        pets_block(get_y=using_attr(RegexLabeller(r"(.+)-\d+.png$"), "name")).datasets(pets_folder)

    def bad(p):
        raise KeyError("nope")

    with pytest.raises(ValueError, match=r"raised KeyError.*item 0 of 18"):
        pets_block(get_y=bad).datasets(pets_folder)


def test_empty_items_and_splits(tmp_path, pets_folder):
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        ValueError, match=r"get_image_files\('.*empty'\) found no items in .*get_image_files looks for"
    ):
        pets_block().datasets(tmp_path / "empty")
    with pytest.raises(ValueError, match="validation split is empty.*valid_pct"):
        pets_block(splitter=lambda items: (list(range(len(items))), [])).datasets(pets_folder)
    with pytest.raises(ValueError, match="training split is empty"):
        pets_block(splitter=lambda items: ([], list(range(len(items))))).datasets(pets_folder)
    few = sorted(get_image_files(pets_folder))[:4]
    with pytest.raises(
        ValueError, match=r"valid_pct=0.2 of 4 items rounds down to none: use valid_pct=0.25 or more"
    ):
        pets_block(get_items=lambda _: few, splitter=RandomSplitter(0.2, seed=0)).datasets(pets_folder)
    assert (
        len(
            pets_block(get_items=lambda _: few, splitter=RandomSplitter(0.25, seed=0))
            .datasets(pets_folder)
            .valid
        )
        == 1
    )
    with pytest.raises(ValueError, match="source has no items"):
        DataBlock().datasets([])


def test_datablock_argument_errors():
    with pytest.raises(
        TypeError, match=r"'get_itmes' \(did you mean 'get_items'\?\); valid ones: blocks, .*get_y"
    ):
        DataBlock(get_itmes=parent_label)
    with pytest.raises(TypeError, match=r"invalid keyword arguments 'label'; valid ones"):
        DataBlock(label=parent_label)
    with pytest.raises(ValueError, match=r"get_x has 2 functions for 1 input.*Pipeline"):
        DataBlock(blocks=(ImageBlock, CategoryBlock), get_x=[str, str])
    with pytest.raises(ValueError, match="MultiCategoryBlock\\(encoded=True\\) needs vocab"):
        MultiCategoryBlock(encoded=True)


def test_defaults_getters_and_n_inp():
    db = DataBlock()
    assert len(db.blocks) == 2 and db.n_inp == 1 and all(isinstance(b, TransformBlock) for b in db.blocks)
    dsets = db.datasets(list(range(10)))  # no get_items: the source is the items
    assert dsets.train[0] == (dsets.items[dsets.splits[0][0]],) * 2
    db3 = DataBlock(blocks=(TransformBlock, TransformBlock, TransformBlock), get_x=[str, float], get_y=int)
    assert db3.n_inp == 2 and db3.getters == [str, float, int]


def test_tfms_merge_dedup_last_wins_and_sorted():
    user_i2f = IntToFloatTensor(div=2.0)
    db = DataBlock(blocks=(ImageBlock, CategoryBlock), item_tfms=[ToTensor, Resize(8)], batch_tfms=user_i2f)
    assert [type(t).__name__ for t in db.item_tfms] == ["Resize", "ToTensor"]
    assert db.batch_tfms == [user_i2f]
    assert db.new(item_tfms=Resize(4)).item_tfms[0].size == (4, 4) and db.item_tfms[0].size == (8, 8)
    assert [type(t).__name__ for t in db.new().item_tfms] == ["ToTensor"]


def test_lazy_resize_only_with_a_resampling_batch_tfm():
    from fastvision.vision.augment import aug_transforms

    rs = Resize(16)
    lazy = pets_block(item_tfms=rs, batch_tfms=aug_transforms(size=8))
    assert lazy.item_tfms[0].lazy is True and rs.lazy is False  # the user's instance is untouched
    assert pets_block(item_tfms=rs).item_tfms[0].lazy is False


def test_multicategory_and_regression(tmp_path):
    items = [("a b", 1.5), ("b", 2.0), ("c a", 0.5), ("a", 1.0), ("b c", 3.0)]
    split = IndexSplitter([4])
    db = DataBlock(
        blocks=(TransformBlock, MultiCategoryBlock),
        get_x=lambda o: o[1],
        get_y=lambda o: o[0].split(),
        splitter=split,
    )
    dsets = db.datasets(items)
    assert dsets.vocab == ["a", "b", "c"] and dsets.c == 3
    y = dsets.train[0][1]
    assert y.dtype == torch.float32 and y.tolist() == [1.0, 1.0, 0.0]
    assert dsets.decode(dsets.train[0])[1] == ["a", "b"]
    assert type(dsets.loss_func).__name__ == "BCEWithLogitsLossFlat"
    with pytest.raises(ValueError, match=r"Labels \['d'\] are not in the vocab.*item 5 of 6"):
        DataBlock(
            blocks=(TransformBlock, MultiCategoryBlock),
            get_y=lambda o: o[0].split(),
            splitter=IndexSplitter([4, 5]),
        ).datasets(items + [("d", 0.0)])
    enc = DataBlock(
        blocks=(TransformBlock, MultiCategoryBlock(encoded=True, vocab=["x", "y"])), get_y=lambda o: [1, 0]
    )
    assert enc.datasets(list(range(5))).train[0][1].tolist() == [1.0, 0.0]
    reg = DataBlock(blocks=(TransformBlock, RegressionBlock), get_y=lambda o: o[1], splitter=split).datasets(
        items
    )
    assert reg.train[0][1].dtype == torch.float32 and reg.c == 1 and reg.vocab is None
    assert type(reg.loss_func).__name__ == "MSELossFlat"


def test_greyscale_block_gives_one_channel(pets_folder):
    dsets = pets_block(blocks=(ImageBlock(PILImageBW), CategoryBlock)).datasets(pets_folder)
    assert dsets.train[0][0].mode == "L"
    assert PILImage.create(dsets.train[0][0]).mode == "RGB"
    dls = pets_block(blocks=(ImageBlock(PILImageBW), CategoryBlock), item_tfms=Resize(16)).dataloaders(
        pets_folder, bs=4, num_workers=0
    )
    assert dls.one_batch()[0].shape == (4, 1, 16, 16)


# ----------------------------------------------------------------------------------------- summary
def test_summary_without_resize_diagnoses_collate_error(pets_folder, capsys):
    with pytest.raises(RuntimeError, match="Cannot collate"):
        pets_block().summary(pets_folder, bs=4)
    out = capsys.readouterr().out
    assert "Found 18 items" in out and "2 datasets of sizes 15,3" in out
    assert "applying decode_image gives\n      DecodedImage mode=RGB size=" in out
    assert "Error! It's not possible to collate your items in a batch" in out
    assert "Could not collate the 0-th members of your tuples because got the following shapes" in out
    assert "torch.Size([3," in out and ".jpg: (3, " in out and "item_tfms=Resize(" in out


def test_summary_with_resize(pets_folder, capsys):
    pets_block(item_tfms=Resize(20)).summary(pets_folder, bs=4, show_batch=True)
    out = capsys.readouterr().out
    assert "Final sample: (DecodedImage mode=RGB size=" in out
    assert "applying ToTensor gives\n      (tensor uint8 3x20x20, " in out
    assert "Adding the next 3 samples" in out and "Error!" not in out
    assert "applying IntToFloatTensor gives\n      (tensor float32 4x3x20x20, tensor([" in out


def test_summary_lazy_trace(pets_folder, capsys):
    from fastvision.vision.augment import aug_transforms

    pets_block(item_tfms=Resize(24), batch_tfms=aug_transforms(size=12)).summary(pets_folder, bs=2)
    out = capsys.readouterr().out
    assert "PendingImage 3x" in out and "-> 3x24x24" in out and "PendingBatch 2x3x" in out
    assert "(tensor float32 2x3x12x12" in out


# ----------------------------------------------------------------------------------------- loaders
def test_pets_dataloaders_end_to_end(pets_folder):
    from fastvision.vision.augment import aug_transforms

    db = pets_block(item_tfms=Resize(32), batch_tfms=aug_transforms(size=16, min_scale=0.75))
    dls = db.dataloaders(pets_folder, bs=4, num_workers=0, seed=0)
    xb, yb = dls.one_batch()
    assert xb.shape == (4, 3, 16, 16) and xb.dtype == torch.float32 and yb.dtype == torch.long
    assert dls.vocab == ["Abyssinian", "beagle", "pug"] and dls.c == 3
    assert sum(len(b[1]) for b in dls.valid) == 3
    files = get_image_files(pets_folder)[:3]
    (tb,) = dls.test_dl(files + [Image.open(files[0])]).one_batch()
    assert tb.shape == (4, 3, 16, 16)
    xb, yb = dls.test_dl(files, with_labels=True).one_batch()
    assert yb.tolist() == [0, 0, 0]


def test_lambda_labels_with_a_worker(pets_folder):
    dls = ImageDataLoaders.from_name_func(
        pets_folder,
        get_image_files(pets_folder),
        lambda name: name.split("_")[0],
        item_tfms=Resize(16),
        bs=4,
        num_workers=1,
        seed=0,
    )
    assert dls.train.one_batch()[0].shape == (4, 3, 16, 16)
    assert len(list(dls.valid)) == 1


def test_image_dataloaders_factories(pets_folder, train_valid_folder, parent_folder, tmp_path):
    fnames = get_image_files(pets_folder)
    kw = dict(item_tfms=Resize(16), bs=4, num_workers=0)
    dls = ImageDataLoaders.from_folder(train_valid_folder, **kw)
    assert len(dls.train_ds) == 8 and len(dls.valid_ds) == 4 and dls.vocab == ["cat", "dog"]
    dls = ImageDataLoaders.from_folder(parent_folder, valid_pct=0.25, seed=0, **kw)
    assert len(dls.train_ds) == 9 and len(dls.valid_ds) == 3
    assert ImageDataLoaders.from_name_re(pets_folder, fnames, PAT, **kw).vocab == [
        "Abyssinian",
        "beagle",
        "pug",
    ]
    assert ImageDataLoaders.from_path_re(pets_folder, fnames, PAT, **kw).c == 3
    assert ImageDataLoaders.from_path_func(pets_folder, fnames, lambda p: p.stem[0], **kw).vocab == [
        "A",
        "b",
        "p",
    ]
    labels = [parent_label(f) for f in get_image_files(parent_folder)]
    dls = ImageDataLoaders.from_lists(parent_folder, get_image_files(parent_folder), labels, **kw)
    assert dls.vocab == ["cat", "dog"]
    floats = [float(i) for i in range(len(labels))]
    reg = ImageDataLoaders.from_lists(parent_folder, get_image_files(parent_folder), floats, **kw)
    assert reg.one_batch()[1].dtype == torch.float32
    with pytest.raises(ValueError, match="one label per file"):
        ImageDataLoaders.from_lists(parent_folder, fnames, labels[:2])


def test_from_df_and_from_csv(pets_folder):
    pd = pytest.importorskip("pandas")
    names = sorted(p.name for p in get_image_files(pets_folder))
    df = pd.DataFrame(
        {
            "fname": names,
            "label": [n.split("_")[0] for n in names],
            "is_valid": [i % 6 == 0 for i in range(18)],
        }
    )
    kw = dict(item_tfms=Resize(16), bs=4, num_workers=0)
    dls = ImageDataLoaders.from_df(
        df, pets_folder, fn_col="fname", label_col="label", valid_col="is_valid", **kw
    )
    assert len(dls.valid_ds) == 3 and dls.vocab == ["Abyssinian", "beagle", "pug"]
    df.to_csv(pets_folder / "labels.csv", index=False)
    dls = ImageDataLoaders.from_csv(pets_folder, fn_col=0, label_col=1, label_delim=" ", seed=0, **kw)
    assert type(dls.loss_func).__name__ == "BCEWithLogitsLossFlat" and dls.c == 3


def test_rows_naming_missing_files_fail_before_training_unless_skipped(pets_folder):
    names = sorted(p.name for p in get_image_files(pets_folder))
    gone = ["nope_1.jpg", *names, "nope_2.jpg"]
    labels = [n.split("_")[0] for n in gone]
    kw = dict(item_tfms=Resize(16), bs=4, num_workers=0, seed=0)
    with pytest.raises(
        FileNotFoundError,
        match=r"2 of 20 items name files that do not exist: '.*nope_1.jpg' \(item 0\), '.*nope_2.jpg' \(item 19\)\..*on_bad_image='skip'",
    ):
        ImageDataLoaders.from_lists(pets_folder, [pets_folder / n for n in gone], labels, **kw)
    dblock = DataBlock(
        blocks=(ImageBlock, CategoryBlock),
        get_x=lambda r: pets_folder / r[0],
        get_y=lambda r: r[1],
        item_tfms=Resize(16),
    )
    with pytest.raises(FileNotFoundError, match=r"2 of 20 items name files that do not exist"):
        dblock.summary(list(zip(gone, labels)))  # summary does not pass where dataloaders() fails
    dls = ImageDataLoaders.from_lists(
        pets_folder, [pets_folder / n for n in gone], labels, on_bad_image="skip", **kw
    )
    with pytest.warns(UserWarning, match="nope_"):
        n = sum(len(xb) for xb, _ in dls.train) + sum(len(xb) for xb, _ in dls.valid)
    assert n >= 16  # the rest load; a left-out image is replaced in its batch
    dls = pets_block().dataloaders(pets_folder, bs=4, num_workers=0)  # a listing of the disk: no check needed
    assert len(dls.train_ds) + len(dls.valid_ds) == 18


def test_test_set_uses_validation_tfms(pets_folder):
    dsets = pets_block().datasets(pets_folder)
    ts = dsets.test_set(get_image_files(pets_folder)[:3])
    assert len(ts.valid) == 3 and len(ts.valid[0]) == 1 and isinstance(ts.valid[0][0], Image.Image)
    labelled = dsets.test_set(get_image_files(pets_folder)[:2], with_labels=True)
    assert labelled.valid[0][1] == 0
