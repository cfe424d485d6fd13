"""Datasets from the outside world: `URLs`, `untar_data`, downloads with resume and checksums, and
Fashion-MNIST from its IDX files (Debian's `dataset-fashion-mnist`, the cache, or a download)."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "URLs",
    "fastvision_home",
    "download_url",
    "untar_data",
    "FASHION_MNIST_CLASSES",
    "fashion_mnist_dir",
    "load_fashion_mnist",
    "fashion_mnist_folder",
    "read_idx",
    "TensorImageDataset",
    "fashion_mnist_datasets",
]

_S3 = "https://s3.amazonaws.com/fast-ai-"
# The official files over https (the S3 website endpoint in Zalando's README serves plain http only).
_FMNIST = "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"


class URLs:
    """Addresses of the datasets fastvision knows (fastai's names)."""

    PETS = f"{_S3}imageclas/oxford-iiit-pet.tgz"
    MNIST_SAMPLE = f"{_S3}sample/mnist_sample.tgz"
    MNIST_TINY = f"{_S3}sample/mnist_tiny.tgz"
    IMAGENETTE = f"{_S3}imageclas/imagenette2.tgz"
    IMAGENETTE_160 = f"{_S3}imageclas/imagenette2-160.tgz"
    IMAGENETTE_320 = f"{_S3}imageclas/imagenette2-320.tgz"
    IMAGEWOOF_160 = f"{_S3}imageclas/imagewoof2-160.tgz"
    CIFAR = f"{_S3}sample/cifar10.tgz"
    FASHION_MNIST = _FMNIST  # a folder of four IDX files rather than one archive


# (size in bytes, md5) of the files, as published by fastai (fastai/data/checks.txt) and Zalando.
CHECKS: dict[str, tuple[int, str]] = {
    URLs.PETS: (811706944, "e4db5c768afd933bb91f5f594d7417a4"),
    URLs.MNIST_SAMPLE: (3214948, "2dbc7ec6f9259b583af0072c55816a88"),
    URLs.MNIST_TINY: (342207, "56143e8f24db90d925d82a5a74141875"),
    URLs.IMAGENETTE: (1557161267, "2c774ecb40005b35d7937d50f5d42336"),
    URLs.IMAGENETTE_160: (99003388, "c475f8f7617a200ba35b9facc48443c3"),
    URLs.IMAGENETTE_320: (341663724, "1f1f74f133caff120e575856659b87a2"),
    URLs.IMAGEWOOF_160: (92612825, "3559b194123981a540b87132dbda412f"),
    URLs.CIFAR: (168168549, "a5f8c31371b63a406b23368042812d3c"),
    f"{_FMNIST}train-images-idx3-ubyte.gz": (26421880, "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
    f"{_FMNIST}train-labels-idx1-ubyte.gz": (29515, "25c81989df183df01b3e8a0aad5dffbe"),
    f"{_FMNIST}t10k-images-idx3-ubyte.gz": (4422102, "bef4ecab320f06d8554ea6380940ec79"),
    f"{_FMNIST}t10k-labels-idx1-ubyte.gz": (5148, "bb300cfdad3c16e7a12a480ee83cd310"),
}

FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def fastvision_home() -> Path:
    """Return the cache folder: `$FASTVISION_HOME` or `~/.fastvision`."""
    return Path(os.environ.get("FASTVISION_HOME", Path.home() / ".fastvision")).expanduser()


def _offline_error(url: str, dest: Path, err: Exception) -> ConnectionError:
    return ConnectionError(
        f"Could not download {url} ({getattr(err, 'reason', err)}). This machine cannot reach it: download "
        f"the file elsewhere and place it at '{dest}', then run again (fastvision uses a file found there)."
    )


def download_url(
    url: str,
    dest: str | Path,
    size: int | None = None,
    sha256: str | None = None,
    timeout: float = 10.0,
    show_progress: bool = True,
    md5: str | None = None,
) -> Path:
    """Download `url` to `dest` atomically, resuming a previous partial download, and check it.

    Args:
        url: the address (http, https or file).
        dest: the final file path; the data first goes to `dest.part`.
        size: expected size in bytes (None: not checked).
        sha256: expected hex digest (None: not checked).
        timeout: seconds to wait for the server before failing.
        show_progress: draw a fastprogress bar.
        md5: expected hex digest, where that is what the publisher gives (None: not checked).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the partial file is already complete
            resp = None
        else:
            raise ConnectionError(f"Downloading {url} failed with HTTP {e.code} {e.reason}.") from e
    except (urllib.error.URLError, OSError) as e:
        raise _offline_error(url, dest, e) from e
    if resp is not None:
        with resp:
            resumed = have and resp.status == 206
            total = int(resp.headers.get("Content-Length") or 0) + (have if resumed else 0)
            bar = _progress(total, url) if show_progress and total else None
            done = have if resumed else 0
            with open(part, "ab" if resumed else "wb") as f:
                try:
                    while chunk := resp.read(1 << 20):
                        f.write(chunk)
                        done += len(chunk)
                        if bar is not None:
                            bar.update(min(done, total))
                except (OSError, http.client.HTTPException):
                    pass  # reported below as an interrupted download; the partial file is kept
                f.flush()
                os.fsync(f.fileno())
            if total and done < total:
                raise ConnectionError(
                    f"Download of {url} stopped at {done} of {total} bytes. Run again to resume from '{part}'."
                )
    _check(part, url, size, sha256, md5)
    os.replace(part, dest)
    return dest


def _progress(total: int, url: str):
    try:
        from fastprogress.fastprogress import progress_bar

        bar = progress_bar(range(total), leave=False)
        bar.comment = url.rsplit("/", 1)[-1]
        bar.update(0)
        return bar
    except Exception:  # a progress bar is a nicety; never fail a download over it
        return None


def _check(path: Path, url: str, size: int | None, sha256: str | None, md5: str | None = None) -> None:
    got = path.stat().st_size
    if size is not None and got != size:
        path.unlink()
        raise OSError(
            f"Downloaded {url} is {got} bytes, expected {size}: the file is corrupt or the server has a new "
            "version. The partial file was removed; run again, or pass force_download=True."
        )
    for name, want in (("sha256", sha256), ("md5", md5)):
        if want is None:
            continue
        h = hashlib.new(name)
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        if h.hexdigest() != want:
            path.unlink()
            raise OSError(
                f"Downloaded {url} has {name} {h.hexdigest()}, expected {want}: the file is corrupt."
            )


def _dataset_name(url: str) -> str:
    """The archive's file name in `url` (query and fragment ignored); refuse names that are not a file name."""
    fname = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1])
    if fname in ("", ".", "..") or "/" in fname or "\\" in fname or fname.startswith("."):
        raise ValueError(
            f"Cannot name a dataset after {url!r}: its last path part {fname!r} is not a file name. Pass the "
            "address of the archive itself, e.g. https://host/path/data.tgz."
        )
    return fname


def _stem(fname: str) -> str:
    for ext in (".tar.gz", ".tgz", ".tar", ".zip"):
        if fname.endswith(ext):
            return fname[: -len(ext)]
    return fname


_CORRUPT = (
    tarfile.ReadError,
    tarfile.CompressionError,
    zipfile.BadZipFile,
    EOFError,
    zlib.error,
    gzip.BadGzipFile,
)


def _capped(t: tarfile.TarFile, limit: int, archive: Path) -> Iterator[tarfile.TarInfo]:
    """Yield the members of `t` while their total size stays under `limit` bytes."""
    total = 0
    for m in t:
        total += m.size if m.isreg() else 0
        if total > limit:
            raise ValueError(_too_big(archive, total, limit))
        yield m


def _too_big(archive: Path, total: int, limit: int) -> str:
    return (
        f"Refusing to extract {archive}: it expands to more than {limit:,} bytes ({total:,} so far), over "
        f"max_expansion times its size of {archive.stat().st_size:,} bytes, or the free disk space. If you "
        "trust it, pass a larger max_expansion to untar_data (and check the free space)."
    )


def _extract(archive: Path, dest: Path, max_expansion: float) -> None:
    """Extract `archive` into `dest` (created atomically); the archive's single top folder becomes `dest`.

    Refuses members outside the folder, links and devices pointing out of it, and archives expanding to
    more than `max_expansion` times their size (or than the free disk space).
    """
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}-"))
    free = shutil.disk_usage(dest.parent).free
    limit = int(min(max(max_expansion * archive.stat().st_size, 1 << 20), free))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                total = sum(i.file_size for i in z.infolist())
                if total > limit:
                    raise ValueError(_too_big(archive, total, limit))
                for m in z.namelist():
                    if Path(m).is_absolute() or ".." in Path(m).parts:
                        raise ValueError(
                            f"Refusing to extract '{m}' from {archive}: it points outside the folder."
                        )
                z.extractall(tmp)
        else:
            with tarfile.open(archive) as t:  # the data filter rejects absolute paths, '..', outside links
                t.extractall(tmp, members=_capped(t, limit, archive), filter="data")
        entries = list(tmp.iterdir())
        one_dir = len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink()
        src = entries[0] if one_dir else tmp
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(src, dest)
    except _CORRUPT as e:
        archive.unlink(missing_ok=True)  # else every later call would fail on the same bad file
        raise ValueError(
            f"{archive} is not a valid archive ({type(e).__name__}: {' '.join(str(e).split())}); the server may have sent an error "
            "page. The file was removed: run again to download it anew."
        ) from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def untar_data(
    url: str,
    archive: str | Path | None = None,
    data: str | Path | None = None,
    force_download: bool = False,
    timeout: float = 10.0,
    max_expansion: float = 100.0,
) -> Path:
    """Download (with resume and checks) and extract `url` into the cache; return the extracted folder.

    Args:
        url: the archive's address, e.g. `URLs.PETS`.
        archive: folder for archives (default `fastvision_home()/archive`).
        data: folder for extracted data (default `fastvision_home()/data`).
        force_download: download and extract again even if present.
        timeout: seconds to wait for the server.
        max_expansion: refuse an archive whose files add up to more than this many times its size (100).
    """
    home = fastvision_home()
    archive = Path(archive) if archive else home / "archive"
    data = Path(data) if data else home / "data"
    fname = _dataset_name(url)
    dest = data / _stem(fname)
    if dest.exists() and not force_download:
        return dest
    data.mkdir(parents=True, exist_ok=True)
    arch = archive / fname
    size, md5 = CHECKS.get(url, (None, None))
    if force_download or not arch.exists():
        download_url(url, arch, size=size, md5=md5, timeout=timeout)
    _extract(arch, dest, max_expansion)
    return dest


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped), the format of MNIST and Fashion-MNIST."""
    path = Path(path)
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 8:
        raise ValueError(f"'{path}' is not an IDX file of unsigned bytes (header {raw[:4]!r}).")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = 4 + 4 * ndim + int(np.prod(dims))
    if len(raw) != expected:
        raise ValueError(
            f"'{path}' holds {len(raw)} bytes, its header promises {expected}: the file is truncated."
        )
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fashion_mnist_dir(download: bool = True, timeout: float = 10.0) -> Path:
    """Find the four Fashion-MNIST IDX files (Debian package, then cache), downloading them if allowed."""
    for d in (DEBIAN_FASHION_MNIST, fastvision_home() / "data" / "fashion-mnist"):
        if all((d / f).exists() for f in FASHION_MNIST_FILES):
            return d
    cache = fastvision_home() / "data" / "fashion-mnist"
    if not download:
        raise FileNotFoundError(
            f"Fashion-MNIST not found in {DEBIAN_FASHION_MNIST} or {cache}. Install it with "
            f"`apt-get install dataset-fashion-mnist`, or put the files {', '.join(FASHION_MNIST_FILES)} in {cache}."
        )
    for f in FASHION_MNIST_FILES:
        if not (cache / f).exists():
            size, md5 = CHECKS[URLs.FASHION_MNIST + f]
            try:
                download_url(URLs.FASHION_MNIST + f, cache / f, size=size, md5=md5, timeout=timeout)
            except ConnectionError as e:
                raise ConnectionError(
                    f"{e}\nAlternatively: `apt-get install dataset-fashion-mnist` puts the files in "
                    f"{DEBIAN_FASHION_MNIST}."
                ) from e
    return cache


def load_fashion_mnist(
    split: str = "train", path: str | Path | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return Fashion-MNIST as in-memory tensors: uint8 images N x 28 x 28 and int64 labels N.

    Args:
        split: 'train' (60,000 images) or 'test' (10,000).
        path: folder holding the IDX files (default: `fashion_mnist_dir()`).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r}; expected 'train' or 'test'.")
    d = Path(path) if path else fashion_mnist_dir()
    pre = "train" if split == "train" else "t10k"
    x = read_idx(d / f"{pre}-images-idx3-ubyte.gz")
    y = read_idx(d / f"{pre}-labels-idx1-ubyte.gz")
    if len(x) != len(y):
        raise ValueError(f"{d}: {len(x)} images but {len(y)} labels for split {split!r}.")
    return torch.from_numpy(x.copy()), torch.from_numpy(y.astype(np.int64))


def fashion_mnist_folder(
    dest: str | Path, n_per_split: int | None = None, path: str | Path | None = None
) -> Path:
    """Write Fashion-MNIST as PNG files `dest/{train,test}/<class>/<i>.png` for the DataBlock path."""
    from PIL import Image

    dest = Path(dest)
    for split in ("train", "test"):
        x, y = load_fashion_mnist(split, path)
        n = len(x) if n_per_split is None else min(n_per_split, len(x))
        for i in range(n):
            folder = dest / split / FASHION_MNIST_CLASSES[int(y[i])].replace("/", "_").replace(" ", "_")
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(x[i].numpy()).save(folder / f"{i}.png")
    return dest


class TensorImageDataset(torch.utils.data.Dataset):
    """In-memory images (uint8 N x C x H x W) and integer labels: the fast path for MNIST-sized data.

    `ds[i]` is `(image uint8 C x H x W, label int)`; `vocab`, `c`, `loss_func` and `decode` let
    `DataLoaders`, `Learner`, interpretation and export treat it like a DataBlock dataset.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, vocab: list[str] | tuple[str, ...]):
        if x.ndim == 3:
            x = x[:, None]
        if x.ndim != 4 or len(x) != len(y):
            raise ValueError(
                f"TensorImageDataset needs images N x C x H x W (or N x H x W) and N labels; got {tuple(x.shape)} "
                f"and {tuple(y.shape)}."
            )
        self.x, self.y, self.vocab = x, y.long(), list(vocab)
        self.c = len(self.vocab)

    @property
    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """`(images, labels)`: item `i` is row `i` of each, so loaders fetch a batch in one indexing op."""
        return self.x, self.y

    @property
    def loss_func(self):
        """The loss for single-label classification (a new instance each call)."""
        from ..losses import CrossEntropyLossFlat

        return CrossEntropyLossFlat()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], int(self.y[i])

    def decode(self, sample: tuple) -> tuple:
        """Turn a label index back into its class name."""
        x, *ys = sample
        return (x, *[self.vocab[int(y)] for y in ys])


def fashion_mnist_datasets(n_train: int | None = None, n_test: int | None = None):
    """Return `(train, test)` `TensorImageDataset`s of the real Fashion-MNIST (first n of each, if given)."""
    xs, ys = load_fashion_mnist("train")
    xt, yt = load_fashion_mnist("test")
    xs, ys, xt, yt = xs[:n_train], ys[:n_train], xt[:n_test], yt[:n_test]
    return TensorImageDataset(xs, ys, FASHION_MNIST_CLASSES), TensorImageDataset(
        xt, yt, FASHION_MNIST_CLASSES
    )
