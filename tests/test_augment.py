import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from fastvision.transform import Pipeline
from fastvision.vision.augment import (
    AffineGroup,
    Dihedral,
    Flip,
    RandomResizedCropGPU,
    Rotate,
    Warp,
    Zoom,
    aug_transforms,
)
from fastvision.vision.lazy import PendingBatch, PendingImage, collate_pending
from fastvision.vision.lighting import (
    Brightness,
    Contrast,
    Hue,
    IntToFloatTensor,
    LightingGroup,
    Normalize,
    RandomErasing,
    Saturation,
    imagenet_stats,
)
from fastvision.vision.resize import RandomResizedCrop, Resize
from fastvision.vision.sample import materialize

# Interpolation tolerance: identical sampling positions give float32 round-off only.
ATOL = 1e-5


def batch(bs=2, c=3, h=6, w=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(bs, c, h, w, generator=g)


def uint8_pixels(c, h, w, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (c, h, w), generator=g, dtype=torch.uint8)


# ---------------------------------------------------------------- oracles: flips, dihedral, rotations
def test_flip_matches_torchvision():
    x = batch(h=5, w=7)
    torch.testing.assert_close(Flip(p=1.0)(x), TF.horizontal_flip(x), atol=ATOL, rtol=0)
    torch.testing.assert_close(Flip(p=1.0, draw=0)(x), x, atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    "k,oracle",
    [
        (0, lambda x: x),
        (1, TF.horizontal_flip),
        (2, TF.vertical_flip),
        (3, lambda x: TF.rotate(x, 90)),
        (4, lambda x: TF.rotate(x, 180)),
        (5, lambda x: TF.rotate(x, -90)),
        (6, lambda x: x.transpose(-1, -2)),
        (7, lambda x: TF.rotate(x, 180).transpose(-1, -2)),
    ],
)
def test_dihedral_matches_torchvision(k, oracle):
    x = batch(h=5, w=5)
    torch.testing.assert_close(Dihedral(p=1.0, draw=k)(x), oracle(x), atol=ATOL, rtol=0)


@pytest.mark.parametrize("deg", [90, -90, 180])
def test_rotate_right_angles_match_torchvision(deg):
    # fastai's convention: a positive angle turns the picture clockwise, torchvision's anticlockwise.
    x = batch(h=7, w=7)
    torch.testing.assert_close(Rotate(p=1.0, draw=deg)(x), TF.rotate(x, -deg), atol=ATOL, rtol=0)


def test_identity_parameters_return_input():
    x = batch(h=9, w=11)
    for t in [
        AffineGroup(),
        Flip(p=0.0),
        Rotate(p=1.0, draw=0),
        Zoom(p=1.0, draw=1.0),
        Warp(p=1.0, draw_x=0, draw_y=0),
    ]:
        torch.testing.assert_close(t(x), x, atol=ATOL, rtol=0)
    for t in aug_transforms():  # validation: identity geometry, no lighting
        x = t(x, split_idx=1)
    torch.testing.assert_close(x, batch(h=9, w=11), atol=ATOL, rtol=0)


def test_rotate_45_corners_reflection_vs_zeros():
    x = 0.5 + 0.5 * batch(h=16, w=16)
    refl = Rotate(p=1.0, draw=45)(x)
    zeros = Rotate(p=1.0, draw=45, pad_mode="zeros")(x)
    corners = (slice(None), slice(None), [0, 0, -1, -1], [0, -1, 0, -1])
    assert (refl[corners] > 0.4).all()
    assert (zeros[corners] == 0).all()
    torch.testing.assert_close(refl[..., 6:10, 6:10], zeros[..., 6:10, 6:10])


def test_warp_matches_fastai_documented_values():
    x = torch.zeros(4, 1, 5, 5)
    x[0, 0, 0, [0, 4]] = 1
    x[1, 0, 4, [0, 4]] = 1
    x[2, 0, [0, 4], 0] = 1
    x[3, 0, [0, 4], 4] = 1
    y = Warp(p=1.0, draw_x=[0.0, 0, -0.5, 0.5], draw_y=[-0.5, 0.5, 0.0, 0.0])(x, split_idx=0)
    expected = torch.zeros(4, 1, 5, 5)
    expected[0, 0, 0, [1, 3]] = 1
    expected[1, 0, 4, [1, 3]] = 1
    expected[2, 0, [1, 3], 0] = 1
    expected[3, 0, [1, 3], 4] = 1
    torch.testing.assert_close(y, expected, atol=ATOL, rtol=0)


def test_composed_matrix_is_closed_form_product():
    group = AffineGroup([Flip(p=1.0), Rotate(p=1.0, draw=30), Zoom(p=1.0, draw=1.25, draw_x=0.2, draw_y=0.9)])
    t = math.radians(30)
    flip = torch.tensor([[-1.0, 0, 0], [0, 1, 0], [0, 0, 1]])
    rot = torch.tensor([[math.cos(t), math.sin(t), 0], [-math.sin(t), math.cos(t), 0], [0, 0, 1]])
    s = 1 / 1.25
    zoom = torch.tensor([[s, 0, (1 - s) * (2 * 0.2 - 1)], [0, s, (1 - s) * (2 * 0.9 - 1)], [0, 0, 1]])
    expected = flip @ rot @ zoom
    torch.testing.assert_close(group.matrix(3, 8, 8)[1], expected)
    expected[0, 1] *= 8 / 16  # aspect correction of a 8 x 16 frame
    expected[1, 0] *= 16 / 8
    torch.testing.assert_close(group.matrix(3, 8, 16)[1], expected)
    torch.testing.assert_close(group.matrix(3, 8, 16, split_idx=1), torch.eye(3).expand(3, 3, 3))


def test_folded_crop_equals_sequential_affine_then_crop():
    # fastai order: affine + warp resampled at full size, then the crop resized; we do both in one sample
    yy, xx = torch.meshgrid(torch.linspace(0, 3, 32), torch.linspace(0, 2, 32), indexing="ij")
    x = (
        torch.stack([torch.sin(xx + yy), torch.cos(xx - yy), torch.sin(2 * xx) * 0.5]).expand(4, 3, 32, 32)
        * 0.4
        + 0.5
    )
    group = aug_transforms(size=16, min_scale=0.5)[0]
    torch.manual_seed(0)
    once = group(x, split_idx=0)
    torch.manual_seed(0)
    at_full = AffineGroup(group.parts[:-1])(x, split_idx=0)
    twice = AffineGroup(group.parts[-1:])(at_full, split_idx=0)
    torch.testing.assert_close(once, twice, atol=0.02, rtol=0)


# ---------------------------------------------------------------- validation split, randomness
def test_validation_equals_plain_centre_resize():
    x = batch(h=20, w=20)
    for t in aug_transforms(size=12, min_scale=0.75):
        x = t(x, split_idx=1)
    # align_corners=True resize: output corner pixel centres on input corner pixel centres.
    expected = F.interpolate(batch(h=20, w=20), size=(12, 12), mode="bilinear", align_corners=True)
    torch.testing.assert_close(x, expected, atol=ATOL, rtol=0)


def test_random_resized_crop_valid_is_centre_crop_of_ratio_window():
    x = batch(h=10, w=20)  # ratio (1, 1): centred 10 x 10 window of the 10 x 20 frame
    y = RandomResizedCropGPU(5, ratio=(1, 1))(x, split_idx=1)
    window = torch.tensor([[5.0, 0.0, 14.0, 9.0]])  # pixels 5..14, as fastai's integer slice
    assert y.shape == (2, 3, 5, 5)
    pb = PendingBatch(
        (x * 255).round().to(torch.uint8), torch.tensor([[10, 20]] * 2), window.expand(2, 4), (5, 5)
    )
    torch.testing.assert_close(y, materialize(pb), atol=1 / 255, rtol=0)


def test_parameters_differ_per_image_unless_batch():
    x = batch(bs=4, h=12, w=12)[:1].expand(4, -1, -1, -1)
    torch.manual_seed(0)
    y = AffineGroup([Rotate(p=1.0), Zoom(p=1.0, max_zoom=1.5)])(x, split_idx=0)
    assert all(not torch.allclose(y[0], y[i]) for i in range(1, 4))
    y = AffineGroup([Rotate(p=1.0, batch=True), Zoom(p=1.0, max_zoom=1.5, batch=True)])(x, split_idx=0)
    assert all(torch.allclose(y[0], y[i]) for i in range(1, 4))
    y = RandomResizedCropGPU(8, min_scale=0.3)(x, split_idx=0)
    assert not torch.allclose(y[0], y[1])


def test_seeded_runs_are_identical():
    x = batch(bs=4, h=16, w=16)
    tfms = Pipeline(
        aug_transforms(size=8, min_scale=0.5, flip_vert=True) + [RandomErasing(p=1.0)], split_idx=0
    )
    torch.manual_seed(3)
    a = tfms(x)
    torch.manual_seed(3)
    b = tfms(x)
    assert torch.equal(a, b)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(Rotate(p=1.0, generator=g1)(x), Rotate(p=1.0, generator=g2)(x))


def test_one_grid_sample_for_whole_pipeline(monkeypatch):
    calls = []
    real = F.grid_sample

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "grid_sample", counting)
    items = [PendingImage(uint8_pixels(3, 40, 50, i), (5.0, 0.0, 44.0, 39.0), (46, 46)) for i in range(2)]
    x = collate_pending(items)
    for t in sorted([IntToFloatTensor(), *aug_transforms(size=24, min_scale=0.75)], key=lambda t: t.order):
        x = t(x, split_idx=0)
    assert len(calls) == 1
    assert x.shape == (2, 3, 24, 24) and x.dtype == torch.float32
    assert 0 <= float(x.min()) and float(x.max()) <= 1


# ---------------------------------------------------------------- PendingBatch geometry
def _crop_resize(pixels, window, size, pad=None):
    """Oracle: pad with torch, crop the (integer) window, resize with align_corners=True."""
    x = pixels[None].float()
    x0, y0, x1, y1 = window
    left, top = max(-x0, 0), max(-y0, 0)
    right, bottom = max(x1 - (pixels.shape[2] - 1), 0), max(y1 - (pixels.shape[1] - 1), 0)
    if pad is not None:
        kw = {"value": 0.0} if pad == "constant" else {}
        x = F.pad(x, (left, right, top, bottom), mode=pad, **kw)
        x0, x1, y0, y1 = x0 + left, x1 + left, y0 + top, y1 + top
    crop = x[..., y0 : y1 + 1, x0 : x1 + 1]
    return F.interpolate(crop, size=size, mode="bilinear", align_corners=True)[0] / 255


def test_materialize_equals_resizing_each_window():
    items = [
        PendingImage(uint8_pixels(3, 20, 30, 0), (4.0, 2.0, 19.0, 17.0), (10, 10)),
        PendingImage(uint8_pixels(3, 27, 18, 1), (0.0, 5.0, 17.0, 22.0), (10, 10)),
        PendingImage(uint8_pixels(3, 12, 12, 2), (0.0, 0.0, 11.0, 11.0), (10, 10)),
    ]
    out = materialize(collate_pending(items))
    assert out.shape == (3, 3, 10, 10) and out.dtype == torch.float32
    for i, p in enumerate(items):
        expected = _crop_resize(p.pixels, tuple(int(v) for v in p.window), (10, 10))
        torch.testing.assert_close(out[i], expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    "pad_mode,torch_pad", [("reflection", "reflect"), ("border", "replicate"), ("zeros", "constant")]
)
def test_window_past_the_image_is_padded_per_item(pad_mode, torch_pad):
    # the small item sits in a larger zero canvas: padding must come from its own pixels only
    items = [
        PendingImage(uint8_pixels(3, 9, 11, 3), (-3.0, -2.0, 13.0, 10.0), (9, 11), pad_mode),
        PendingImage(uint8_pixels(3, 20, 25, 4), (0.0, 0.0, 24.0, 19.0), (9, 11), pad_mode),
    ]
    out = materialize(collate_pending(items))
    expected = _crop_resize(items[0].pixels, (-3, -2, 13, 10), (9, 11), pad=torch_pad)
    torch.testing.assert_close(out[0], expected, atol=ATOL, rtol=0)


def test_pending_group_on_valid_equals_materialize_at_size():
    items = [PendingImage(uint8_pixels(3, 30, 40, i), (5.0, 0.0, 34.0, 29.0), (30, 30)) for i in range(2)]
    pb = collate_pending(items)
    out = pb
    for t in aug_transforms(size=20, min_scale=0.75):
        out = t(out, split_idx=1)
    resized = PendingBatch(pb.canvas, pb.hw, pb.window, (20, 20))
    torch.testing.assert_close(out, materialize(resized), atol=ATOL, rtol=0)


def test_downsampling_is_antialiased():
    x = ((torch.arange(64).view(1, 64) + torch.arange(64).view(64, 1)) % 2).float().expand(1, 1, 64, 64)
    y = AffineGroup(size=8)(x)
    assert float(y.std()) < 0.1 and abs(float(y.mean()) - 0.5) < 0.1
    assert float(AffineGroup(size=8, mode="nearest")(x).std()) > 0.4  # no pre-filter for nearest


# ---------------------------------------------------------------- dtypes and devices
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_on_cpu(dtype):
    x = batch(h=12, w=12)
    torch.manual_seed(1)
    ref = Pipeline(aug_transforms(size=8, min_scale=0.75), split_idx=0)(x)
    torch.manual_seed(1)
    y = Pipeline(aug_transforms(size=8, min_scale=0.75), split_idx=0)(x.to(dtype))
    assert y.dtype == dtype and y.shape == (2, 3, 8, 8)
    torch.testing.assert_close(y.float(), ref, atol=2e-2, rtol=0)


def test_uint8_tensor_input_outputs_float_in_unit_range():
    x = uint8_pixels(3, 8, 8, 0)[None]
    torch.testing.assert_close(AffineGroup()(x), x.float() / 255, atol=ATOL, rtol=0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu():
    items = [PendingImage(uint8_pixels(3, 40, 50, i), (5.0, 0.0, 44.0, 39.0), (46, 46)) for i in range(3)]
    pb = collate_pending(items)
    tfms = aug_transforms(size=24, min_scale=0.75)
    outs = []
    for dev in ("cpu", "cuda"):
        torch.manual_seed(0)
        x = pb.to(dev)
        for t in tfms:
            x = t(x, split_idx=0)
        outs.append(x.cpu())
    torch.testing.assert_close(outs[1], outs[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(materialize(pb.to("cuda")).cpu(), materialize(pb), atol=1e-4, rtol=0)


# ---------------------------------------------------------------- lighting and pixel transforms
def test_brightness_contrast_compose_in_logit_space():
    x = batch(bs=3)
    b, c = [0.3, 0.5, 0.8], [0.7, 1.0, 1.4]
    bt, ct = torch.tensor(b).view(3, 1, 1, 1), torch.tensor(c).view(3, 1, 1, 1)
    group = LightingGroup([Brightness(p=1.0, draw=b), Contrast(p=1.0, draw=c)])
    expected = torch.sigmoid((torch.logit(x.clamp(1e-7, 1 - 1e-7)) + torch.logit(bt)) * ct)
    torch.testing.assert_close(group(x, split_idx=0), expected)
    assert group(x, split_idx=1) is x  # train only


def test_saturation_and_hue():
    x = batch(bs=2)
    lx = torch.logit(x.clamp(1e-7, 1 - 1e-7))
    grey = (lx * torch.tensor([0.2989, 0.5870, 0.1140]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    expected = torch.sigmoid(lx * 0.5 + grey * 0.5)
    torch.testing.assert_close(Saturation(p=1.0, draw=0.5)(x), expected)
    torch.testing.assert_close(Hue(p=1.0, draw=0.0)(x), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(Hue(p=1.0, draw=0.1)(x), TF.adjust_hue(x, 0.1), atol=1e-4, rtol=0)


def test_lighting_probability_and_batch_draws():
    x = batch(bs=64, h=2, w=2)
    torch.manual_seed(0)
    y = Brightness(p=0.5)(x)
    unchanged = torch.isclose(y, x, atol=1e-6).flatten(1).all(1)
    assert 10 < int(unchanged.sum()) < 54
    y = Brightness(p=1.0, batch=True)(x)
    shift = torch.logit(y) - torch.logit(x)
    torch.testing.assert_close(shift, shift[:1, :1, :1, :1].expand_as(shift), atol=1e-3, rtol=0)


def test_int_to_float_tensor():
    t = IntToFloatTensor()
    x = uint8_pixels(3, 4, 4, 0)[None]
    y = t(x)
    torch.testing.assert_close(y, x.float() / 255)
    assert torch.equal(t.decodes(y), x)
    labels = torch.tensor([1, 2])
    assert t(labels) is labels
    pb = collate_pending([PendingImage(uint8_pixels(3, 4, 4, 0), (0.0, 0.0, 3.0, 3.0), (4, 4))])
    assert t(pb) is pb and IntToFloatTensor.accepts_pending and AffineGroup.accepts_pending


def test_normalize_from_stats_setup_and_decode():
    x = batch(bs=4)
    norm = Normalize.from_stats(*imagenet_stats)
    y = norm(x)
    mean = torch.tensor(imagenet_stats[0]).view(1, 3, 1, 1)
    torch.testing.assert_close(y, (x - mean) / torch.tensor(imagenet_stats[1]).view(1, 3, 1, 1))
    torch.testing.assert_close(norm.decodes(y), x)

    class FakeLoader:
        def one_batch(self):
            return (norm2(x), torch.tensor([0, 1, 0, 1]))

    norm2 = Normalize()
    norm2.setup(FakeLoader())
    z = norm2(x)
    torch.testing.assert_close(z.mean((0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std((0, 2, 3)), torch.ones(3), atol=1e-4, rtol=0)


def test_normalize_errors():
    with pytest.raises(RuntimeError, match="no statistics"):
        Normalize()(batch())
    with pytest.raises(ValueError, match="stats for 3 channels but the batch has 1"):
        Normalize.from_stats(*imagenet_stats)(batch(c=1))


def test_random_erasing():
    x = batch(bs=8, h=16, w=16)
    torch.manual_seed(0)
    y = RandomErasing(p=1.0, sl=0.1, sh=0.3, max_count=2)(x, split_idx=0)
    changed = (y != x).flatten(1).float().mean(1)
    assert (changed > 0.02).all() and (changed < 0.7).all()
    assert torch.equal(RandomErasing(p=0.0)(x, split_idx=0), x)
    assert RandomErasing(p=1.0)(x, split_idx=1) is x


# ---------------------------------------------------------------- aug_transforms and errors
def test_aug_transforms_structure():
    tfms = aug_transforms(size=224, min_scale=0.75)
    group, light = tfms
    assert isinstance(group, AffineGroup) and group.order == 30 and group.resamples
    assert [type(p).__name__ for p in group.parts] == [
        "Flip",
        "Warp",
        "Rotate",
        "Zoom",
        "RandomResizedCropGPU",
    ]
    assert group.out_size == (224, 224)
    assert isinstance(light, LightingGroup) and light.order == 40 and light.split_idx == 0
    assert [type(p).__name__ for p in light.parts] == ["Brightness", "Contrast"]
    assert isinstance(aug_transforms(flip_vert=True)[0].parts[0], Dihedral)
    assert not aug_transforms()[0].resamples
    assert aug_transforms(max_lighting=0, xtra_tfms=[RandomErasing()])[-1].order == 100
    flip = Flip().compose(Rotate())
    assert [type(p).__name__ for p in flip.parts] == ["Rotate"]


def test_user_errors():
    with pytest.raises(ValueError, match="pass the output size"):
        aug_transforms(min_scale=0.5)
    with pytest.raises(ValueError, match="mode='area' is not supported"):
        AffineGroup(mode="area")
    with pytest.raises(ValueError, match="pad_mode='wrap' is not supported"):
        Flip(pad_mode="wrap")
    with pytest.raises(ValueError, match="integers in 0..7"):
        Dihedral(p=1.0, draw=9)(batch())
    with pytest.raises(ValueError, match="draw has 1 values for a batch of 2"):
        Rotate(p=1.0, draw=[3.0])(batch())


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: Resize(0), r"Resize: size=0; expected a positive number of pixels"),
        (lambda: Resize((32, -1)), r"Resize: size=\(32, -1\)"),
        (lambda: Resize("big"), r"Resize: size must be an int or a \(height, width\) pair, got 'big'"),
        (lambda: RandomResizedCrop(32, min_scale=1.5), r"RandomResizedCrop: min_scale=1.5, max_scale=1.0"),
        (lambda: aug_transforms(size=0), r"aug_transforms: size=0"),
        (lambda: aug_transforms(size=32, min_scale=0), r"aug_transforms: min_scale=0"),
        (lambda: aug_transforms(p_affine=2), r"aug_transforms: p_affine=2 is not a probability"),
        (lambda: aug_transforms(p_lighting=-0.1), r"aug_transforms: p_lighting=-0.1 is not a probability"),
        (lambda: Rotate(p=1.5), r"Rotate: p=1.5 is not a probability"),
        (lambda: Brightness(p=7), r"Brightness: p=7 is not a probability"),
        (
            lambda: Normalize.from_stats([0.5, 0.5], [0.2, 0.0]),
            r"Normalize: std=\[0.2.*, 0.0\] has a value that is not positive",
        ),
    ],
)
def test_bad_sizes_scales_probabilities_and_stats_are_refused_when_built(make, match):
    """Not later, in a worker, as an empty crop or a batch of NaN."""
    with pytest.raises(ValueError, match=match):
        make()


def test_whole_number_sizes_are_accepted_in_any_numeric_type():
    assert Resize(224.0).size == (224, 224) and Resize((torch.tensor(3).item(), 5)).size == (3, 5)
    assert aug_transforms(size=(40, 24), min_scale=1.0)[0].size == (40, 24)
