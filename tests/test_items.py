import os
import pickle
from collections import namedtuple
from pathlib import Path

import pytest
import torch

from fastvision.data.items import (
    AttrGetter,
    ColReader,
    ColSplitter,
    EndSplitter,
    FileGetter,
    FileSplitter,
    FuncSplitter,
    GrandparentSplitter,
    ImageGetter,
    IndexSplitter,
    ItemGetter,
    LabelError,
    MaskSplitter,
    RandomSplitter,
    RandomSubsetSplitter,
    RegexLabeller,
    UsingAttr,
    get_files,
    get_image_files,
    image_extensions,
    label_error_context,
    parent_label,
    using_attr,
)


def touch(p: Path) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"x")
    return p


def test_image_extensions_guaranteed_and_decodable():
    assert {".webp", ".tif", ".tiff", ".jpg", ".jpeg", ".png", ".gif", ".bmp"} <= image_extensions
    assert ".svg" not in image_extensions and ".txt" not in image_extensions
    assert all(e.startswith(".") and e == e.lower() for e in image_extensions)


# ------------------------------------------------------------------------------------------ get_files
def test_get_files_sorted_case_insensitive_and_plain_list(tmp_path):
    for name in ["z.jpg", "b/y.JPG", "a.png", "b/a.Jpeg", "c/d/e.jpg", "notes.txt", "noext"]:
        touch(tmp_path / name)
    res = get_files(tmp_path, extensions=[".jpg", "jpeg"])
    assert type(res) is list and all(isinstance(p, Path) for p in res)
    assert [p.relative_to(tmp_path).as_posix() for p in res] == ["b/a.Jpeg", "b/y.JPG", "c/d/e.jpg", "z.jpg"]
    assert res == sorted(res, key=str)
    assert len(get_files(tmp_path)) == 7
    assert get_files(tmp_path, extensions=".png") == [tmp_path / "a.png"]


def test_get_files_skips_hidden_files_and_prunes_hidden_dirs(tmp_path):
    touch(tmp_path / ".hidden.jpg")
    touch(tmp_path / ".cache" / "x.jpg")
    touch(tmp_path / "cls" / ".DS_Store")
    touch(tmp_path / "cls" / "ok.jpg")
    assert get_image_files(tmp_path) == [tmp_path / "cls" / "ok.jpg"]


def test_get_files_folders_filters_first_level_only(tmp_path):
    for name in ["top.jpg", "train/cat/a.jpg", "train/valid/b.jpg", "valid/cat/c.jpg", "test/d.jpg"]:
        touch(tmp_path / name)
    rel = lambda res: [p.relative_to(tmp_path).as_posix() for p in res]  # noqa: E731
    assert rel(get_image_files(tmp_path, folders="train")) == ["train/cat/a.jpg", "train/valid/b.jpg"]
    assert rel(get_image_files(tmp_path, folders=["train", "valid"])) == [
        "train/cat/a.jpg",
        "train/valid/b.jpg",
        "valid/cat/c.jpg",
    ]
    assert rel(get_image_files(tmp_path, folders=["test", "."])) == ["test/d.jpg", "top.jpg"]
    assert rel(get_image_files(tmp_path, recurse=False, folders="train")) == ["top.jpg"]


def test_get_files_missing_path_and_file_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"folder '.*nowhere' does not exist"):
        get_files(tmp_path / "nowhere")
    f = touch(tmp_path / "a.jpg")
    with pytest.raises(NotADirectoryError, match="expects a folder, got the file"):
        get_image_files(f)


def test_get_image_files_on_generated_folder_and_empty_folder(parent_folder, tmp_path):
    touch(parent_folder / "cat" / "meta.mat")
    files = get_image_files(parent_folder)
    assert len(files) == 12 and {p.suffix for p in files} == {".jpg"}
    (tmp_path / "empty").mkdir()
    assert get_image_files(tmp_path / "empty") == []


@pytest.mark.skipif(os.name == "nt", reason="symlinks need privileges on Windows")
def test_get_files_survives_symlink_loop_and_follows_links(tmp_path):
    touch(tmp_path / "data" / "a" / "x.jpg")
    os.symlink(tmp_path / "data", tmp_path / "data" / "a" / "loop")
    touch(tmp_path / "other" / "y.jpg")
    os.symlink(tmp_path / "other", tmp_path / "data" / "link")
    res = [p.relative_to(tmp_path / "data").as_posix() for p in get_image_files(tmp_path / "data")]
    assert res == ["a/x.jpg", "link/y.jpg"]
    assert get_files(tmp_path / "data", followlinks=False) == [tmp_path / "data" / "a" / "x.jpg"]


def test_file_getter_and_image_getter(train_valid_folder):
    touch(train_valid_folder / "train" / "readme.txt")
    assert len(ImageGetter("train")(train_valid_folder)) == 8
    assert FileGetter("train", extensions=".txt")(train_valid_folder) == [
        train_valid_folder / "train" / "readme.txt"
    ]
    assert len(pickle.loads(pickle.dumps(ImageGetter(folders="valid")))(train_valid_folder)) == 4
    assert repr(ImageGetter("x")) == "ImageGetter(suf='x', recurse=True, folders=None)"


# ------------------------------------------------------------------------------------------ labellers
def test_parent_label():
    assert parent_label(Path("a") / "cat" / "x.jpg") == "cat"
    assert parent_label("a/dog/x.jpg") == "dog"


def test_regex_labeller_search_match_and_separator():
    lab = RegexLabeller(r"([^/]+)_\d+\.jpg$")
    assert lab(Path("pets") / "great_pyrenees_12.jpg") == "great_pyrenees"
    assert lab(os.sep.join(["a", "b", "pug_1.jpg"])) == "pug"
    assert RegexLabeller(r"^(\w+)/", match=True)("cat/x.jpg") == "cat"
    with pytest.raises(LabelError):
        RegexLabeller(r"(x)", match=True)("ax")


def test_regex_labeller_no_match_message_and_context():
    lab = RegexLabeller(r"(.+)_\d+.jpg$")
    with pytest.raises(
        ValueError,
        match=r"^RegexLabeller pattern '\(\.\+\)_\\d\+\.jpg\$' matched nothing in 'IMG 0001\.jpeg'\. Check the pattern",
    ):
        lab("IMG 0001.jpeg")
    try:
        lab("IMG 0001.jpeg")
    except LabelError as e:
        ctx = label_error_context(e, "IMG 0001.jpeg", 17, 7390, ["a_1.jpg", "b_2.jpg", "c_3.jpg", "d_4.jpg"])
    assert isinstance(ctx, ValueError) and (ctx.index, ctx.total) == (17, 7390)
    assert (
        "matched nothing in 'IMG 0001.jpeg' (item 17 of 7390). Check the pattern against the first items: "
        in str(ctx)
    )
    assert str(ctx).endswith("'a_1.jpg', 'b_2.jpg', 'c_3.jpg'.")
    again = pickle.loads(pickle.dumps(ctx))
    assert str(again) == str(ctx) and again.index == 17


def test_regex_labeller_bad_patterns():
    with pytest.raises(ValueError, match="has no capture group"):
        RegexLabeller(r"\d+")
    with pytest.raises(ValueError, match="not a valid regular expression"):
        RegexLabeller(r"(unclosed")
    with pytest.raises(LabelError, match="left group 1 empty"):
        RegexLabeller(r"a(b)?")("a")


def test_label_error_context_wraps_other_errors():
    ctx = label_error_context(KeyError("label"), "row0", 3, 10)
    assert isinstance(ctx, LabelError)
    with pytest.raises(
        LabelError, match=r"Labelling 'row0' raised KeyError: 'label' \(item 3 of 10\)\. Check"
    ):
        raise ctx


def test_using_attr_is_picklable_and_applies_to_attr():
    f = using_attr(RegexLabeller(r"^(.+)_\d+"), "name")
    assert isinstance(f, UsingAttr)
    g = pickle.loads(pickle.dumps(f))
    assert g(Path("/x/beagle_3/pug_12.jpg")) == "pug"
    assert "UsingAttr(f=RegexLabeller(pat=" in repr(g)


def test_col_reader_on_dicts_namedtuples_sequences():
    Row = namedtuple("Row", ["fname", "labels"])
    assert ColReader("fname")({"fname": "a.jpg"}) == "a.jpg"
    assert ColReader("fname", pref="img/", suff=".png")(Row("a", "x")) == "img/a.png"
    assert ColReader(1, label_delim=" ")(Row("a", "x y")) == ["x", "y"]
    assert ColReader(0)(["a", "b"]) == "a"
    assert ColReader(["fname", 1])(Row("a", "b")) == ["a", "b"]
    assert ColReader("fname", pref=Path("root"))({"fname": "a"}) == f"root{os.sep}a"
    assert ColReader("l", label_delim=",")({"l": ""}) == []
    assert ColReader("l", label_delim=",")({"l": float("nan")}) == []
    with pytest.raises(KeyError, match=r"ColReader column 'label' not found in dict; available: \['fname'\]"):
        ColReader("label")({"fname": "a"})
    with pytest.raises(KeyError, match=r"column 5 not found in list; available: positions 0\.\.1"):
        ColReader(5)(["a", "b"])


def test_col_reader_on_pandas_rows():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"fname": ["a.jpg", "b.jpg"], "labels": ["x y", ""]}, index=[10, 11])
    row = df.iloc[0]
    assert ColReader("fname")(row) == "a.jpg" and ColReader(0)(row) == "a.jpg"
    assert ColReader("labels", label_delim=" ")(df.iloc[1]) == []
    tup = next(df.itertuples())
    assert ColReader("fname")(tup) == "a.jpg"
    with pytest.raises(KeyError, match=r"available: \['fname', 'labels'\]"):
        ColReader("nope")(row)


def test_item_and_attr_getters():
    assert ItemGetter(1)((5, 6)) == 6
    assert AttrGetter("name")(Path("a/b.jpg")) == "b.jpg"
    assert AttrGetter("nope", default=3)(Path("a")) == 3
    assert pickle.loads(pickle.dumps(ItemGetter("k")))({"k": 1}) == 1


# ------------------------------------------------------------------------------------------ splitters
def test_random_splitter_seeded_reproducible_and_partition():
    items = list(range(103))
    tr, va = RandomSplitter(0.2, seed=42)(items)
    assert type(tr) is list and all(type(i) is int for i in tr + va)
    assert len(va) == 20 and sorted(tr + va) == items
    assert RandomSplitter(0.2, seed=42)(items) == (tr, va)
    assert RandomSplitter(0.2, seed=43)(items) != (tr, va)


def test_random_splitter_matches_fastai_permutation_without_global_side_effect():
    with torch.random.fork_rng():
        torch.manual_seed(7)
        perm = torch.randperm(50).tolist()  # what fastai does (it seeds the global RNG)
    assert RandomSplitter(0.3, seed=7)(range(50)) == (perm[15:], perm[:15])
    torch.manual_seed(0)
    expected = torch.rand(5)
    torch.manual_seed(0)
    RandomSplitter(seed=1)(range(100))
    assert torch.equal(torch.rand(5), expected)


def test_random_splitter_unseeded_uses_global_rng():
    torch.manual_seed(3)
    a = RandomSplitter()(range(30))
    torch.manual_seed(3)
    assert RandomSplitter()(range(30)) == a


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, "0.2", True])
def test_fraction_arguments_validated(bad):
    with pytest.raises(
        ValueError, match=rf"RandomSplitter: valid_pct={bad!r}, expected a fraction strictly between 0 and 1"
    ):
        RandomSplitter(bad)
    with pytest.raises(ValueError, match="EndSplitter: valid_pct"):
        EndSplitter(bad)


def test_index_splitter():
    assert IndexSplitter([3, 1])(range(5)) == ([0, 2, 4], [3, 1])
    assert IndexSplitter([-1])(range(3)) == ([0, 1], [2])
    with pytest.raises(IndexError, match=r"valid_idx \[7\] out of range for 5 items"):
        IndexSplitter([1, 7])(range(5))


def test_end_splitter():
    assert EndSplitter(0.2)(range(10)) == ([0, 1, 2, 3, 4, 5, 6, 7], [8, 9])
    assert EndSplitter(0.2, valid_last=False)(range(10)) == ([2, 3, 4, 5, 6, 7, 8, 9], [0, 1])
    assert EndSplitter(0.2)(range(3)) == ([0, 1, 2], [])  # cut 0: nothing in valid (fastai put all in valid)


def test_grandparent_splitter(train_valid_folder):
    files = get_image_files(train_valid_folder)
    tr, va = GrandparentSplitter()(files)
    assert len(tr) == 8 and len(va) == 4
    assert all(files[i].parent.parent.name == "valid" for i in va)
    items = ["r/train/a/x.jpg", "r/val/a/y.jpg", "r/test/a/z.jpg", "r/extra/a/w.jpg"]
    assert GrandparentSplitter(["train", "extra"], ["val", "test"])(items) == ([0, 3], [1, 2])
    assert GrandparentSplitter()(items) == ([0], [])  # neither name: dropped
    # fastai's order (issue #12): the items of the first name, then those of the next, not sorted by position
    mixed = ["r/valid/a/0.jpg", "r/train/a/1.jpg", "r/valid/b/2.jpg", "r/train/b/3.jpg", "r/test/a/4.jpg"]
    assert GrandparentSplitter(train_name=("train", "valid"), valid_name="test")(mixed) == ([1, 3, 0, 2], [4])


def test_func_mask_file_splitters(tmp_path):
    items = [Path(f"d/{n}.jpg") for n in "abcd"]
    assert FuncSplitter(lambda o: o.stem in "bd")(items) == ([0, 2], [1, 3])
    assert MaskSplitter([False, True, True, False])(items) == ([0, 3], [1, 2])
    assert MaskSplitter(torch.tensor([1, 0, 0, 0]).bool())(items) == ([1, 2, 3], [0])
    with pytest.raises(ValueError, match="mask has 2 entries for 4 items"):
        MaskSplitter([True, False])(items)
    (tmp_path / "valid.txt").write_text("a.jpg\n\nc.jpg\n")
    assert FileSplitter(tmp_path / "valid.txt")(items) == ([1, 3], [0, 2])
    with pytest.raises(
        FileNotFoundError, match=r"FileSplitter: list of validation file names '.*missing.txt'"
    ):
        FileSplitter(tmp_path / "missing.txt")(items)


def test_col_splitter_dataframe_and_rows():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"f": list("abcd"), "is_valid": [0, 1, 0, 1], "fold": [1, 2, 3, 1]})
    assert ColSplitter()(df) == ([0, 2], [1, 3])
    assert ColSplitter("fold", on=1)(df) == ([1, 2], [0, 3])
    assert ColSplitter("fold", on=[2, 3])(df) == ([0, 3], [1, 2])
    assert ColSplitter(1)(df) == ([0, 2], [1, 3])
    rows = [{"is_valid": False}, {"is_valid": True}]
    assert ColSplitter()(rows) == ([0], [1])
    assert ColSplitter()([r for _, r in df.iterrows()]) == ([0, 2], [1, 3])
    with pytest.raises(
        KeyError,
        match=r"ColSplitter column 'valid' not in the DataFrame; available: \['f', 'is_valid', 'fold'\]",
    ):
        ColSplitter("valid")(df)


def test_random_subset_splitter():
    tr, va = RandomSubsetSplitter(0.5, 0.2, seed=0)(range(100))
    assert len(tr) == 50 and len(va) == 20 and not set(tr) & set(va)
    assert RandomSubsetSplitter(0.5, 0.2, seed=0)(range(100)) == (tr, va)
    with pytest.raises(ValueError, match=r"train_sz \+ valid_sz = 1.3 > 1"):
        RandomSubsetSplitter(0.6, 0.7)
    with pytest.raises(ValueError, match="RandomSubsetSplitter: valid_sz=0"):
        RandomSubsetSplitter(0.5, 0)


def test_splitters_pickle_and_repr(tmp_path):
    splitters = [
        RandomSplitter(0.25, seed=1),
        IndexSplitter([0]),
        EndSplitter(),
        GrandparentSplitter(),
        MaskSplitter([True, False, False, False]),
        ColSplitter(),
        RandomSubsetSplitter(0.5, 0.25, seed=2),
        FuncSplitter(parent_label),
    ]
    items = [{"is_valid": i % 2} for i in range(4)]
    for s in splitters:
        t = pickle.loads(pickle.dumps(s))
        if not isinstance(s, (GrandparentSplitter, FuncSplitter)):
            assert t(items) == s(items)
    assert repr(RandomSplitter(0.25, seed=1)) == "RandomSplitter(valid_pct=0.25, seed=1)"
    assert repr(MaskSplitter([True] * 1000)) == f"MaskSplitter(mask={repr([True] * 1000)[:56]} ...)"


def test_make_image_folder_name_layout_labels(pets_folder):
    files = get_image_files(pets_folder)
    labels = [RegexLabeller(r"([^/]+)_\d+\.jpg$")(f) for f in files]
    assert sorted(set(labels)) == ["Abyssinian", "beagle", "pug"] and labels == sorted(labels)
