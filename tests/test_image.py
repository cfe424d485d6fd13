import io
import pickle
import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

import fastvision.vision.image as image_mod
from fastvision.testing import make_image_folder
from fastvision.vision.image import (
    DecodedImage,
    ImageLoadError,
    ImageNotFoundError,
    decode_image,
    image_size,
    load_image,
    verify_image,
    verify_images,
)

HINT = r"The file may be truncated, empty or not an image; find all bad files with verify_images\(path\)"


@pytest.fixture
def no_warnings():
    """Turn every warning into an error for the duration of a test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def rgb(h=20, w=40, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_jpeg(path, arr=None, **kw):
    Image.fromarray(rgb() if arr is None else arr).save(path, "JPEG", quality=95, **kw)
    return path


def exif_with_orientation(o):
    exif = Image.Exif()
    exif[0x0112] = o
    return exif


# ------------------------------------------------------------------------------------------ errors
def test_image_load_error_attributes_message_and_pickle(tmp_path):
    e = ImageLoadError(tmp_path / "a.jpg", "image file is truncated")
    assert (
        e.path == tmp_path / "a.jpg" and e.reason == "image file is truncated" and isinstance(e, ValueError)
    )
    assert str(e).startswith(
        f"Cannot decode image '{tmp_path / 'a.jpg'}': image file is truncated. The file may"
    )
    assert "or pass on_bad_image='skip' to dataloaders." in str(e)
    e2 = pickle.loads(pickle.dumps(e))
    assert type(e2) is ImageLoadError and (e2.path, e2.reason, str(e2)) == (e.path, e.reason, str(e))
    nf = pickle.loads(pickle.dumps(ImageNotFoundError("x.jpg")))
    assert isinstance(nf, FileNotFoundError) and isinstance(nf, ImageLoadError) and nf.filename == "x.jpg"
    assert str(nf).startswith("Cannot decode image 'x.jpg': no such file.")


def test_missing_file(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"Cannot decode image '.*nope\.jpg': no such file\. Check the path"
    ):
        load_image(tmp_path / "nope.jpg")


def test_empty_file(tmp_path):
    (tmp_path / "e.jpg").write_bytes(b"")
    with pytest.raises(ImageLoadError, match=rf"e\.jpg': the file is empty \(0 bytes\)\. {HINT}"):
        load_image(tmp_path / "e.jpg")


def test_text_file_named_jpg(tmp_path):
    (tmp_path / "t.jpg").write_text("<html>not an image</html>")
    with pytest.raises(
        ImageLoadError, match=rf"t\.jpg': PIL cannot identify the format \(not an image\?\)\. {HINT}"
    ):
        load_image(tmp_path / "t.jpg")


def test_truncated_jpeg(tmp_path, no_warnings):
    data = write_jpeg(tmp_path / "full.jpg", rgb(64, 64)).read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match=rf"cut\.jpg': image file is truncated.*{HINT}") as ei:
        load_image(tmp_path / "cut.jpg")
    assert ei.value.path == tmp_path / "cut.jpg" and "truncated" in ei.value.reason


def test_directory_and_bad_bytes(tmp_path):
    with pytest.raises(ImageLoadError, match="Cannot decode image '.*'"):
        load_image(tmp_path)
    with pytest.raises(ImageLoadError, match="Cannot decode image from memory: PIL cannot identify"):
        load_image(b"definitely not an image")


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"mode='RGBA'; expected 'RGB' or 'L'"):
        load_image(rgb(), mode="RGBA")
    with pytest.raises(TypeError, match="cannot load a int; expected a path"):
        load_image(3)


# ------------------------------------------------------------------------------------------ EXIF
def test_exif_orientation_applied_once(tmp_path, no_warnings):
    p = write_jpeg(tmp_path / "o6.jpg", rgb(20, 40), exif=exif_with_orientation(6))
    im = load_image(p)
    assert im.size == (20, 40) and im.mode == "RGB"  # stored 40 wide x 20 high, displayed rotated
    with Image.open(p) as raw:
        oracle = ImageOps.exif_transpose(raw).convert("RGB")
    np.testing.assert_array_equal(np.asarray(im), np.asarray(oracle))
    assert load_image(im).size == (20, 40)  # orientation tag dropped: no second rotation
    assert image_size(p) == (20, 40)
    with Image.open(p) as raw:
        assert load_image(raw).size == (20, 40)  # PIL inputs are oriented too


@pytest.mark.parametrize("o,size", [(1, (40, 20)), (3, (40, 20)), (8, (20, 40)), (5, (20, 40))])
def test_every_orientation(tmp_path, o, size):
    p = write_jpeg(tmp_path / "o.jpg", rgb(20, 40), exif=exif_with_orientation(o))
    assert load_image(p).size == size


def test_corrupt_exif_warning_does_not_escape(tmp_path, no_warnings):
    exif = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x02\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06\x00\x00"
    exif += b"\x87\x69\x00\x04\x00\x00\x00\x01\x00\x00\xff\xff"  # an EXIF IFD pointer past the end
    p = write_jpeg(tmp_path / "bad_exif.jpg", rgb(20, 40), exif=exif)
    assert load_image(p).size == (20, 40)


# ------------------------------------------------------------------------------------------ modes
def mode_images():
    """(name, PIL image to save, format, expected RGB pixel at (0, 0))."""
    p = Image.new("P", (4, 4))
    p.putpalette([10, 20, 30] + [200, 0, 0] * 255)
    p_trns = p.copy()
    p_trns.info["transparency"] = bytes([0] + [255] * 255)  # index 0 transparent, given as bytes
    p_int = p.copy()
    p_int.info["transparency"] = 0  # GIF style: one transparent index
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))
    return [
        ("L", Image.new("L", (4, 4), 100), "PNG", (100, 100, 100)),
        ("LA_transparent", Image.new("LA", (4, 4), (0, 0)), "PNG", (255, 255, 255)),
        ("P", p, "PNG", (10, 20, 30)),
        ("P_bytes_transparency", p_trns, "PNG", (255, 255, 255)),
        ("RGBA_half", Image.new("RGBA", (4, 4), (255, 0, 0, 128)), "PNG", (255, 127, 127)),
        ("RGBA_opaque", Image.new("RGBA", (4, 4), (1, 2, 3, 255)), "PNG", (1, 2, 3)),
        ("CMYK", cmyk, "JPEG", (255, 0, 0)),
        ("I16", Image.fromarray(np.full((4, 4), 257 * 100, np.uint16)), "PNG", (100, 100, 100)),
        ("I32", Image.fromarray(np.full((4, 4), 65535, np.int32)), "TIFF", (255, 255, 255)),
        ("F_unit", Image.fromarray(np.full((4, 4), 0.5, np.float32)), "TIFF", (128, 128, 128)),
        ("F_255", Image.fromarray(np.full((4, 4), 300.0, np.float32)), "TIFF", (255, 255, 255)),
        ("1bit", Image.new("1", (4, 4), 1), "PNG", (255, 255, 255)),
        ("GIF_transparent", p_int, "GIF", (255, 255, 255)),
    ]


@pytest.mark.parametrize("name,src,fmt,expected", mode_images(), ids=[m[0] for m in mode_images()])
def test_every_mode_to_rgb_without_warnings(tmp_path, no_warnings, name, src, fmt, expected):
    path = tmp_path / f"{name}.{fmt.lower()}"
    src.save(path, fmt)
    im = load_image(path)
    assert im.mode == "RGB" and im.size == (4, 4)
    px = im.getpixel((0, 0))
    assert np.abs(np.array(px, int) - expected).max() <= (2 if fmt == "JPEG" else 1), (name, px)
    assert load_image(path, mode="L").mode == "L"


def test_palette_transparency_warning_is_what_we_avoid(tmp_path):
    src = mode_images()[3][1]
    with pytest.warns(UserWarning, match="Palette images with Transparency"):
        src.convert("RGB")  # what a plain convert would do


def test_sixteen_bit_png_scaled_not_clipped(tmp_path, no_warnings):
    a = np.array([[0, 256, 32768, 65535]], np.uint16)
    Image.fromarray(a).save(tmp_path / "g16.png")
    out = np.asarray(load_image(tmp_path / "g16.png", mode="L"))
    np.testing.assert_array_equal(out, [[0, 1, 128, 255]])


def test_sixteen_bit_rgb_png(tmp_path, no_warnings):
    raw = np.array([[[65535, 32768, 25700], [0, 256, 65535]]], ">u2")  # 1 x 2 pixels, RGB, 16 bits each
    rows = b"".join(b"\x00" + row.tobytes() for row in raw)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))  # noqa: E731
    ihdr = struct.pack(">IIBBBBB", 2, 1, 16, 2, 0, 0, 0)
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
    (tmp_path / "rgb16.png").write_bytes(png)
    np.testing.assert_array_equal(
        np.asarray(load_image(tmp_path / "rgb16.png")), [[[255, 128, 100], [0, 1, 255]]]
    )


def test_mode_l_uses_luma(tmp_path):
    write_jpeg(tmp_path / "c.jpg")
    im = load_image(tmp_path / "c.jpg", mode="L")
    assert im.mode == "L" and im.size == (40, 20)


# ------------------------------------------------------------------------------------------ sources
def test_arrays():
    a = rgb(6, 8)
    np.testing.assert_array_equal(np.asarray(load_image(a)), a)
    assert load_image(a[..., 0]).mode == "RGB" and load_image(a[..., :1]).size == (8, 6)
    rgba = np.concatenate([a, np.full((6, 8, 1), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(np.asarray(load_image(rgba)), a)
    assert load_image(np.full((2, 2), 0.5)).getpixel((0, 0)) == (128, 128, 128)
    assert load_image(np.full((2, 2), 65535, np.uint16)).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(np.ones((2, 2), bool)).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(np.full((2, 2), 7, np.int64)).getpixel((0, 0)) == (7, 7, 7)


def test_array_errors():
    with pytest.raises(
        ValueError, match=r"float array with values in \[0, 255\]; expected \[0, 1\]\. Divide"
    ):
        load_image(np.array([[0.0, 255.0]]))
    with pytest.raises(ValueError, match=r"int64 array with values in \[0, 300\]; expected 0\.\.255"):
        load_image(np.array([[0, 300]]))
    with pytest.raises(
        ValueError, match=r"array of shape \(3, 8, 9\); expected H x W or H x W x C.*transpose\(1, 2, 0\)"
    ):
        load_image(np.zeros((3, 8, 9), np.uint8))
    with pytest.raises(TypeError, match="array of dtype complex128"):
        load_image(np.zeros((2, 2), complex))


def test_tensors():
    a = rgb(6, 8)
    t = torch.from_numpy(a).permute(2, 0, 1)
    np.testing.assert_array_equal(np.asarray(load_image(t)), a)
    np.testing.assert_array_equal(np.asarray(load_image(t.float() / 255)), a)
    np.testing.assert_array_equal(np.asarray(load_image(t.half() / 255)), a)
    assert load_image(t[0]).size == (8, 6) and load_image(t[:1], mode="L").mode == "L"
    with pytest.raises(ValueError, match=r"tensor of shape \(1, 3, 6, 8\); expected C x H x W.*x\[0\]"):
        load_image(t[None])


def test_bytes_file_object_and_pil_inputs(tmp_path):
    p = write_jpeg(tmp_path / "a.jpg")
    data = p.read_bytes()
    assert load_image(data).size == (40, 20) and load_image(bytearray(data)).size == (40, 20)
    with open(p, "rb") as f:
        assert load_image(f).size == (40, 20)
    src = Image.new("RGBA", (3, 3), (0, 0, 0, 0))
    out = load_image(src)
    assert out.mode == "RGB" and src.mode == "RGBA" and out.getpixel((0, 0)) == (255, 255, 255)
    rgb_src = Image.new("RGB", (3, 3))
    assert load_image(rgb_src) is not rgb_src
    assert load_image(str(p)).size == (40, 20)


# ------------------------------------------------------------------------------------------ limits, draft
def test_pixel_limit(tmp_path, monkeypatch):
    p = write_jpeg(tmp_path / "big.jpg")
    monkeypatch.setattr(image_mod, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(
        ImageLoadError,
        match=r"800 pixels \(40 x 20\) is above MAX_IMAGE_PIXELS=100.*FASTVISION_MAX_IMAGE_PIXELS",
    ):
        load_image(p)
    monkeypatch.setattr(image_mod, "MAX_IMAGE_PIXELS", None)
    assert load_image(p).size == (40, 20)


def test_pil_own_bomb_limit_is_wrapped_and_its_warning_silenced(tmp_path, monkeypatch, no_warnings):
    p = write_jpeg(tmp_path / "big.jpg")  # 800 pixels
    monkeypatch.setattr(image_mod, "MAX_IMAGE_PIXELS", None)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # 800 > 500: PIL warns
    assert load_image(p).size == (40, 20)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 800 > 2 * 100: PIL raises
    with pytest.raises(ImageLoadError, match="decompression bomb.*PIL.Image.MAX_IMAGE_PIXELS"):
        load_image(p)


def test_env_var_sets_the_limit(monkeypatch):
    monkeypatch.setenv("FASTVISION_MAX_IMAGE_PIXELS", "400_000_000")
    assert image_mod._env_max_pixels() == 400_000_000
    monkeypatch.setenv("FASTVISION_MAX_IMAGE_PIXELS", "0")
    assert image_mod._env_max_pixels() is None
    monkeypatch.setenv("FASTVISION_MAX_IMAGE_PIXELS", "lots")
    with pytest.warns(UserWarning, match="FASTVISION_MAX_IMAGE_PIXELS='lots' is not a number"):
        assert image_mod._env_max_pixels(123) == 123
    monkeypatch.delenv("FASTVISION_MAX_IMAGE_PIXELS")
    assert image_mod._env_max_pixels() == 178_956_970


def test_min_size_draft_decodes_smaller_but_big_enough(tmp_path):
    p = write_jpeg(tmp_path / "d.jpg", rgb(192, 256))
    full = load_image(p)
    small = load_image(p, min_size=(40, 60))
    assert full.size == (256, 192) and small.size == (64, 48)  # 1/4 scale keeps h >= 40, w >= 60
    assert load_image(p, min_size=90).size == (128, 96)
    assert load_image(p, min_size=100).size == (256, 192)  # 192 / 2 < 100: full size
    assert load_image(p, min_size=(500, 500)).size == (256, 192)
    Image.fromarray(rgb(192, 256)).save(tmp_path / "d.png")
    assert load_image(tmp_path / "d.png", min_size=10).size == (256, 192)  # only JPEG has a draft mode
    with pytest.raises(ValueError, match=r"^load_image: min_size=\(0, 5\); expected a positive int") as ei:
        load_image(p, min_size=(0, 5))
    assert not isinstance(ei.value, ImageLoadError)  # a bad argument is not a bad file


def test_min_size_respects_exif_orientation(tmp_path):
    p = write_jpeg(
        tmp_path / "o.jpg", rgb(64, 256), exif=exif_with_orientation(6)
    )  # upright: 64 x 256 (w x h)
    im = load_image(p, min_size=(120, 30))  # (h, w) of the upright image
    assert im.size == (32, 128) and im.height >= 120 and im.width >= 30


# ------------------------------------------------------------------------------------------ verify
def test_verify_images_finds_exactly_the_bad_ones(tmp_path, no_warnings):
    folder = make_image_folder(tmp_path / "imgs", n_per_class=3)
    (folder / "cat" / "empty.jpg").write_bytes(b"")
    (folder / "dog" / "text.jpg").write_text("hello")
    good = folder / "dog" / "dog_0.jpg"
    data = good.read_bytes()
    (folder / "cat" / "cut.jpg").write_bytes(data[: len(data) // 2])
    bad = [folder / "cat" / "cut.jpg", folder / "cat" / "empty.jpg", folder / "dog" / "text.jpg"]
    assert verify_images(folder) == bad
    assert verify_images(folder, n_workers=0) == bad
    assert verify_images(str(folder), n_workers=4) == bad
    assert verify_images([bad[2], good, bad[0]], n_workers=2) == [bad[2], bad[0]]
    assert verify_image(good) is None and "truncated" in verify_image(bad[0]).lower()
    assert verify_images(good) == [] and verify_images([tmp_path / "gone.jpg"]) == [tmp_path / "gone.jpg"]
    with pytest.raises(FileNotFoundError, match="nope' does not exist"):
        verify_images(tmp_path / "nope")
    with pytest.raises(ValueError, match="n_workers=-1; expected 0"):
        verify_images(folder, n_workers=-1)


def test_threaded_decoding_leaves_warning_filters_alone(tmp_path):
    folder = make_image_folder(tmp_path / "imgs", n_per_class=4)
    before = list(warnings.filters)
    assert verify_images(folder, n_workers=4) == []
    assert warnings.filters == before


def test_image_size_errors(tmp_path):
    with pytest.raises(ImageNotFoundError):
        image_size(tmp_path / "missing.png")
    (tmp_path / "t.png").write_text("x")
    with pytest.raises(ImageLoadError, match="PIL cannot identify"):
        image_size(tmp_path / "t.png")


def test_load_bytes_roundtrip_png():
    buf = io.BytesIO()
    Image.new("LA", (2, 2), (10, 255)).save(buf, "PNG")
    assert load_image(buf.getvalue()).getpixel((0, 0)) == (10, 10, 10)


# ------------------------------------------------------------------------------------------ decode_image
def _chw(im):
    return (
        torch.from_numpy(np.array(im)).permute(2, 0, 1)
        if im.mode == "RGB"
        else torch.from_numpy(np.array(im))[None]
    )


@pytest.mark.parametrize("o", [1, 3, 6, 8])
def test_decode_image_jpeg_matches_load_image_with_exif(tmp_path, o, no_warnings):
    p = write_jpeg(tmp_path / "o.jpg", rgb(24, 40), exif=exif_with_orientation(o))
    d = decode_image(p)
    assert isinstance(d, DecodedImage) and d.pixels.dtype == torch.uint8 and d.size == load_image(p).size
    assert (d.pixels.int() - _chw(load_image(p)).int()).abs().max() <= 1


def test_decode_image_uses_torchvision_for_jpeg_and_pil_for_the_rest(tmp_path, monkeypatch):
    calls = []
    real = image_mod._tv_decode_jpeg
    monkeypatch.setattr(image_mod, "_tv_decode_jpeg", lambda *a, **k: calls.append(1) or real(*a, **k))
    jpg = write_jpeg(tmp_path / "a.jpg", rgb(64, 64))
    decode_image(jpg)
    assert calls == [1]
    Image.fromarray(rgb(64, 64)).save(tmp_path / "a.png")
    Image.fromarray(rgb(64, 64)).convert("CMYK").save(tmp_path / "cmyk.jpg")
    for p in (tmp_path / "a.png", tmp_path / "cmyk.jpg"):
        assert torch.equal(decode_image(p).pixels, _chw(load_image(p)))
    assert decode_image(jpg, min_size=16).size == (16, 16)  # a DCT downscale by 4: PIL's draft
    assert calls == [1]
    assert decode_image(jpg, mode="L").pixels.shape == (1, 64, 64)
    assert torch.equal(decode_image(rgb(8, 6)).pixels, _chw(load_image(rgb(8, 6))))  # arrays too


def test_decode_image_errors_match_load_image(tmp_path, monkeypatch, no_warnings):
    data = write_jpeg(tmp_path / "full.jpg", rgb(64, 64)).read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match=r"cut\.jpg': image file is truncated"):
        decode_image(tmp_path / "cut.jpg")
    with pytest.raises(ImageNotFoundError):
        decode_image(tmp_path / "missing.jpg")
    monkeypatch.setattr(image_mod, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ImageLoadError, match=r"4,096 pixels \(64 x 64\) is above MAX_IMAGE_PIXELS=100"):
        decode_image(tmp_path / "full.jpg")
