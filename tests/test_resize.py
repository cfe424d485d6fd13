import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from PIL import Image

from fastvision.transform import ToTensor
from fastvision.vision.lazy import PendingImage, collate_pending
from fastvision.vision.resize import (
    CropPad,
    DihedralItem,
    FlipItem,
    RandomCrop,
    RandomResizedCrop,
    Resize,
)


def _img(w=40, h=30, mode="RGB", seed=0):
    """A smooth random image (upsampled noise) so interpolation differences stay small."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(h // 5, 2), max(w // 5, 2), 3), dtype=np.uint8)
    im = Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR)
    return im.convert(mode)


def _arr(im):
    return np.asarray(im).astype(np.float32)


def _grid_reference(p: PendingImage) -> torch.Tensor:
    """Materialise a PendingImage with F.grid_sample (align_corners=True, border): float C x H x W in 0..255."""
    _, h, w = p.pixels.shape
    x0, y0, x1, y1 = p.window
    xs, ys = torch.linspace(x0, x1, p.size[1]), torch.linspace(y0, y1, p.size[0])
    gx, gy = 2 * xs / (w - 1) - 1, 2 * ys / (h - 1) - 1
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), -1)[None]
    out = F.grid_sample(
        p.pixels[None].float(), grid, mode="bilinear", padding_mode="border", align_corners=True
    )
    return out[0]


def test_resize_crop_valid_is_centred_and_matches_torchvision():
    im = _img(40, 30)
    out = Resize(20)(im, 1)
    assert out.size == (20, 20)
    # largest square window: 30x30 centred at x0=5; torchvision crops then resizes (fastai's two steps)
    ref = TF.resized_crop(im, top=0, left=5, height=30, width=30, size=[20, 20])
    assert np.abs(_arr(out) - _arr(ref)).mean() < 2.0
    assert np.array_equal(
        np.asarray(out), np.asarray(im.resize((20, 20), Image.Resampling.BILINEAR, box=(5, 0, 35, 30)))
    )


def test_resize_size_tuple_is_height_width_and_split_none_is_centred():
    im = _img(40, 30)
    out = Resize((10, 20))(im)
    assert out.size == (20, 10)
    # 2:1 window: m = min(40/20, 30/10) = 2 -> 40 x 20, centred vertically at y0 = 5
    ref = im.resize((20, 10), Image.Resampling.BILINEAR, box=(0, 5, 40, 25))
    assert np.array_equal(np.asarray(out), np.asarray(ref))


def test_resize_crop_train_offsets_come_from_torch_rng():
    im = _img(40, 30)
    torch.manual_seed(3)
    out = Resize(20)(im, 0)
    torch.manual_seed(3)
    px, _ = torch.rand(2).tolist()
    x0 = px * 10
    ref = im.resize((20, 20), Image.Resampling.BILINEAR, box=(x0, 0, x0 + 30, 30))
    assert np.array_equal(np.asarray(out), np.asarray(ref))
    outs = {np.asarray(Resize(20)(im, 0)).tobytes() for _ in range(6)}
    assert len(outs) > 1  # random on train
    assert len({np.asarray(Resize(20)(im, 1)).tobytes() for _ in range(3)}) == 1  # fixed on valid


@pytest.mark.parametrize(
    "pad_mode,np_mode", [("zeros", "constant"), ("reflection", "reflect"), ("border", "edge")]
)
def test_resize_pad_matches_hand_padding(pad_mode, np_mode):
    im = _img(40, 20)
    out = Resize(20, method="pad", pad_mode=pad_mode)(im, 1)
    # m = max(40/20, 20/20) = 2 -> window 40 x 40, the image centred: 10 rows of padding above and below
    padded = Image.fromarray(np.pad(np.asarray(im), ((10, 10), (0, 0), (0, 0)), mode=np_mode))
    ref = padded.resize((20, 20), Image.Resampling.BILINEAR)
    assert out.size == (20, 20)
    assert np.abs(_arr(out) - _arr(ref)).max() <= 1
    if pad_mode == "zeros":
        assert np.asarray(out)[:4].max() == 0


def test_resize_squish_is_plain_resize():
    im = _img(40, 30)
    out = Resize((12, 16), method="squish")(im, 0)
    assert np.array_equal(np.asarray(out), np.asarray(im.resize((16, 12), Image.Resampling.BILINEAR)))


def test_resize_passes_non_images_and_checks_arguments():
    assert Resize(10)(3, 0) == 3
    t = torch.zeros(3, 5, 5)
    assert Resize(10)(t) is t
    with pytest.raises(ValueError, match="method='zoom' is not one of"):
        Resize(10, method="zoom")
    with pytest.raises(ValueError, match="pad_mode='edge' is not one of"):
        Resize(10, pad_mode="edge")
    with pytest.raises(ValueError, match=r"\(height, width\) pair"):
        Resize((1, 2, 3))


def test_lazy_window_convention_by_hand():
    im = _img(40, 30)
    r = Resize(60)
    r.lazy = True
    p = r(im, 1)
    assert isinstance(p, PendingImage) and p.size == (60, 60) and p.pixels.dtype == torch.uint8
    # box (5, 0, 35, 30), s = 0.5 per output pixel: corner centres at 5 + 0.25 - 0.5 = 4.75 and 35 - 0.25 - 0.5,
    # in coordinates of the pixels kept (integer bounding box starting at x = 4, no upsampling)
    assert p.pixels.shape == (3, 30, 32)
    assert p.window == pytest.approx((0.75, -0.25, 30.25, 29.25))
    assert p.shape == torch.Size((3, 60, 60))


@pytest.mark.parametrize(
    "tfm",
    [Resize(60), Resize((50, 70)), Resize((36, 50), method="squish"), Resize(24), Resize(50, method="pad")],
)
@pytest.mark.parametrize("split", [0, 1])
def test_lazy_matches_pil_resize(tfm, split):
    """Materialising the PendingImage with identity geometry samples where PIL's box resize does."""
    im = _img(40, 30)
    torch.manual_seed(0)
    ref = torch.from_numpy(_arr(tfm(im, split))).permute(2, 0, 1)
    tfm.lazy = True
    try:
        torch.manual_seed(0)
        p = tfm(im, split)
    finally:
        tfm.lazy = False
    if tfm.method != "pad" and tfm.size[0] > 30:  # upsampling (PIL anti-aliases downsampling), no padding
        assert (_grid_reference(p) - ref).abs().max() <= 1.5
    from fastvision.vision.sample import materialize

    out = materialize(collate_pending([p]))[0] * 255
    assert out.shape == ref.shape
    assert (out - ref).abs().mean() < 1.5


def test_random_resized_crop_valid_squishes_then_centre_crops():
    im = _img(40, 30)
    out = RandomResizedCrop(16)(im, 1)
    # xtra = ceil(16 * 0.14 / 8) * 8 = 8: squish to 24 x 24, centre-crop 16
    ref = TF.center_crop(im.resize((24, 24), Image.Resampling.BILINEAR), [16, 16])
    assert out.size == (16, 16)
    assert np.abs(_arr(out) - _arr(ref)).mean() < 2.0


def test_random_resized_crop_train_whole_image_when_scale_is_one():
    im = _img(40, 30)
    out = RandomResizedCrop((15, 20), min_scale=1.0, ratio=(4 / 3, 4 / 3))(im, 0)
    assert np.abs(_arr(out) - _arr(im.resize((20, 15), Image.Resampling.BILINEAR))).max() <= 1
    torch.manual_seed(0)
    sizes = {RandomResizedCrop(8)(im, 0).size for _ in range(5)}
    assert sizes == {(8, 8)}


def test_random_resized_crop_lazy():
    im = _img(40, 30)
    r = RandomResizedCrop(16)
    r.lazy = True
    p = r(im, 0)
    assert isinstance(p, PendingImage) and p.size == (16, 16)
    assert p.pixels.shape[1] <= 30 and p.pixels.shape[2] <= 40


def test_to_tensor():
    im = _img(7, 5)
    t = ToTensor()(im)
    assert t.dtype == torch.uint8 and t.shape == (3, 5, 7)
    assert np.array_equal(t.permute(1, 2, 0).numpy(), np.asarray(im))
    g = ToTensor()(im.convert("L"))
    assert g.shape == (1, 5, 7)
    p = PendingImage(torch.zeros(3, 4, 4, dtype=torch.uint8), (0, 0, 3, 3), (8, 8))
    assert ToTensor()(p) is p and ToTensor()(2) == 2
    assert ToTensor.order == 5 and Resize.order == 1


def test_crop_pad_and_random_crop():
    im = _img(10, 8)
    big = CropPad(12)(im)
    a = np.asarray(big)
    assert big.size == (12, 12) and a[:2].max() == 0 and a[:, 0].max() == 0
    assert np.array_equal(a[2:10, 1:11], np.asarray(im))
    small = CropPad((4, 6))(im)
    assert np.array_equal(np.asarray(small), np.asarray(im)[2:6, 2:8])
    assert np.array_equal(np.asarray(RandomCrop(4)(im, 1)), np.asarray(im)[2:6, 3:7])
    torch.manual_seed(0)
    crops = {np.asarray(RandomCrop(4)(im, 0)).tobytes() for _ in range(8)}
    assert len(crops) > 1 and RandomCrop(12)(im, 0).size == (12, 12)


def test_flip_and_dihedral():
    im = _img(10, 8)
    flipped = FlipItem(p=1.0)(im, 0)
    assert np.array_equal(np.asarray(flipped), np.asarray(im)[:, ::-1])
    assert FlipItem(p=1.0)(im, 1) is im  # train only
    assert FlipItem(p=0.0)(im, 0) is im
    t = torch.arange(6).view(1, 2, 3)
    assert torch.equal(FlipItem(p=1.0)(t, 0), t.flip(-1))
    torch.manual_seed(0)
    outs = {np.asarray(DihedralItem()(im, 0)).tobytes() for _ in range(40)}
    assert 4 < len(outs) <= 8


def test_datablock_resize_goes_straight_to_a_tensor_close_to_fastai():
    from fastvision.data.block import DataBlock, _set_lazy

    im = _img(50, 36)
    (fused, to_tensor) = _set_lazy([Resize(24), ToTensor()], [])
    assert fused.to_tensor and not fused.lazy
    out = to_tensor(fused(im, 1), 1)
    assert out.shape == (3, 24, 24) and out.dtype == torch.uint8
    # fastai: largest square (36) at int((50-36)*0.5) = 7, then a bilinear resize to 24
    ref = torch.from_numpy(np.array(im.crop((7, 0, 43, 36)).resize((24, 24), Image.Resampling.BILINEAR)))
    diff = (out.permute(1, 2, 0).float() - ref.float()).abs()
    assert diff.mean() < 1.5 and diff.max() <= 12
    assert DataBlock  # the DataBlock applies the same copy to its item_tfms


def test_fused_resize_keeps_pil_path_for_padding_and_palette():
    im = _img(40, 20)
    t = Resize(20, method="pad", pad_mode="zeros")
    t.to_tensor = True
    out = t(im, 1)
    assert isinstance(out, torch.Tensor) and out.shape == (3, 20, 20) and int(out[:, :4].max()) == 0
