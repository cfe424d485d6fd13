import gzip
import hashlib
import http.server
import io
import socket
import tarfile
import threading
import time

import numpy as np
import pytest

from fastvision.data import external
from fastvision.data.external import download_url, fashion_mnist_dir, load_fashion_mnist, read_idx, untar_data


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with HTTP Range support; counts requests; can cut a response short."""

    cut_after: int | None = None
    requests: list = []

    def log_message(self, *a):
        pass

    def do_GET(self):
        type(self).requests.append(self.headers.get("Range"))
        path = self.translate_path(self.path)
        try:
            data = open(path, "rb").read()
        except OSError:
            self.send_error(404)
            return
        start = 0
        if rng := self.headers.get("Range"):
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if type(self).cut_after is not None:
            self.wfile.write(body[: type(self).cut_after])
            type(self).cut_after = None
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    RangeHandler.requests = []
    handler = lambda *a, **k: RangeHandler(*a, directory=str(root), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _make_tgz(path, top="tiny", files=("a/x.jpg", "b/y.jpg")):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for f in files:
            data = f.encode() * 100
            info = tarfile.TarInfo(f"{top}/{f}")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    return path


def test_untar_data_downloads_extracts_and_caches(server, tmp_path):
    root, base = server
    _make_tgz(root / "tiny.tgz")
    out = untar_data(f"{base}/tiny.tgz", archive=tmp_path / "arch", data=tmp_path / "data")
    assert out == tmp_path / "data" / "tiny"
    assert (out / "a" / "x.jpg").read_text().startswith("a/x.jpg")
    n = len(RangeHandler.requests)
    assert untar_data(f"{base}/tiny.tgz", archive=tmp_path / "arch", data=tmp_path / "data") == out
    assert len(RangeHandler.requests) == n  # cached: no new request


def test_download_resumes_a_partial_file(server, tmp_path):
    root, base = server
    payload = bytes(range(256)) * 4000
    (root / "big.bin").write_bytes(payload)
    RangeHandler.cut_after = 300_000
    with pytest.raises((ConnectionError, OSError)):
        download_url(f"{base}/big.bin", tmp_path / "big.bin", size=len(payload), show_progress=False)
    part = tmp_path / "big.bin.part"
    assert part.stat().st_size == 300_000
    out = download_url(f"{base}/big.bin", tmp_path / "big.bin", size=len(payload), show_progress=False)
    assert out.read_bytes() == payload
    assert RangeHandler.requests[-1] == "bytes=300000-"
    assert not part.exists()


def test_checksum_mismatch_is_a_clear_error(server, tmp_path):
    root, base = server
    (root / "f.bin").write_bytes(b"hello")
    with pytest.raises(OSError, match="sha256 .* expected 00"):
        download_url(f"{base}/f.bin", tmp_path / "f.bin", sha256="00" * 32, show_progress=False)
    with pytest.raises(OSError, match="is 5 bytes, expected 6"):
        download_url(f"{base}/f.bin", tmp_path / "g.bin", size=6, show_progress=False)
    assert not (tmp_path / "f.bin").exists() and not (tmp_path / "f.bin.part").exists()
    good = hashlib.sha256(b"hello").hexdigest()
    assert (
        download_url(f"{base}/f.bin", tmp_path / "f.bin", sha256=good, show_progress=False).read_bytes()
        == b"hello"
    )


def test_offline_fails_fast_and_says_where_to_put_the_file(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there: connection refused, like an offline machine
    t = time.time()
    with pytest.raises(ConnectionError, match="place it at .*oxford-iiit-pet.tgz"):
        untar_data(
            f"http://127.0.0.1:{port}/oxford-iiit-pet.tgz", archive=tmp_path / "a", data=tmp_path / "d"
        )
    assert time.time() - t < 5


def test_extraction_refuses_path_traversal(server, tmp_path):
    root, base = server
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        info = tarfile.TarInfo("../evil.txt")
        info.size = 1
        t.addfile(info, io.BytesIO(b"x"))
    (root / "evil.tgz").write_bytes(buf.getvalue())
    with pytest.raises(tarfile.TarError):
        untar_data(f"{base}/evil.tgz", archive=tmp_path / "a", data=tmp_path / "d")
    assert not (tmp_path / "evil.txt").exists()


def _write_idx(path, arr):
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_read_idx_and_fashion_mnist_from_a_folder(tmp_path):
    x = np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256
    for pre in ("train", "t10k"):
        _write_idx(tmp_path / f"{pre}-images-idx3-ubyte.gz", x)
        _write_idx(tmp_path / f"{pre}-labels-idx1-ubyte.gz", np.array([1, 2, 9]))
    xs, ys = load_fashion_mnist("test", tmp_path)
    assert xs.shape == (3, 28, 28) and xs.dtype.is_floating_point is False
    assert ys.tolist() == [1, 2, 9]
    assert (xs.numpy() == x).all()
    bad = tmp_path / "bad-idx.gz"
    with gzip.open(bad, "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + b"abc")
    with pytest.raises(ValueError, match="truncated"):
        read_idx(bad)
    with pytest.raises(ValueError, match="split='valid'"):
        load_fashion_mnist("valid", tmp_path)


def test_fashion_mnist_missing_without_download_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(external, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    monkeypatch.setenv("FASTVISION_HOME", str(tmp_path / "home"))
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist_dir(download=False)


@pytest.mark.skipif(not external.DEBIAN_FASHION_MNIST.exists(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist_shapes():
    x, y = load_fashion_mnist("test")
    assert x.shape == (10000, 28, 28) and y.shape == (10000,)
    assert sorted(y.unique().tolist()) == list(range(10))


def _tgz_bytes(add):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        add(t)
    return buf.getvalue()


def test_an_archive_of_one_symlink_to_dot_does_not_become_the_whole_cache(server, tmp_path):
    root, base = server

    def add(t):
        info = tarfile.TarInfo("top")
        info.type, info.linkname = tarfile.SYMTYPE, "."
        t.addfile(info)

    (root / "link.tgz").write_bytes(_tgz_bytes(add))
    data = tmp_path / "data"
    (data / "other_dataset").mkdir(parents=True)
    out = untar_data(f"{base}/link.tgz", archive=tmp_path / "a", data=data)
    assert out == data / "link" and out.is_dir() and not out.is_symlink()
    assert not (out / "other_dataset").exists() and out.resolve() != data.resolve()


def test_an_archive_that_expands_too_much_is_refused(server, tmp_path):
    root, base = server

    def add(t):
        info = tarfile.TarInfo("bomb/zeros.bin")
        info.size = 3_000_000
        t.addfile(info, io.BytesIO(b"\0" * info.size))

    (root / "bomb.tgz").write_bytes(_tgz_bytes(add))  # about 3 KB
    with pytest.raises(ValueError, match="Refusing to extract .*bomb.tgz.*max_expansion"):
        untar_data(f"{base}/bomb.tgz", archive=tmp_path / "a", data=tmp_path / "d")
    assert not (tmp_path / "d" / "bomb").exists() and not list((tmp_path / "d").iterdir())
    out = untar_data(f"{base}/bomb.tgz", archive=tmp_path / "a", data=tmp_path / "d", max_expansion=10_000)
    assert (out / "zeros.bin").stat().st_size == 3_000_000


def test_a_corrupt_archive_is_not_kept_in_the_cache(server, tmp_path):
    root, base = server
    (root / "data.tgz").write_bytes(b"<html><body>503 Service Unavailable</body></html>")
    with pytest.raises(ValueError, match="not a valid archive .*run again to download it anew"):
        untar_data(f"{base}/data.tgz", archive=tmp_path / "a", data=tmp_path / "d")
    assert not (tmp_path / "a" / "data.tgz").exists()
    _make_tgz(root / "data.tgz", top="data")  # the server is fixed: the next call downloads again
    assert (
        untar_data(f"{base}/data.tgz", archive=tmp_path / "a", data=tmp_path / "d") / "a" / "x.jpg"
    ).exists()


@pytest.mark.parametrize("tail", ["/..", "/.", "/", "/%2e%2e", "/sub/..?x=1"])
def test_a_url_that_names_no_file_is_refused(tmp_path, tail):
    with pytest.raises(ValueError, match="is not a file name"):
        untar_data(f"http://127.0.0.1:9{tail}", archive=tmp_path / "a", data=tmp_path / "d")


def test_built_in_urls_use_https_and_published_checksums():
    from fastvision.data.external import CHECKS, URLs

    urls = [v for k, v in vars(URLs).items() if k.isupper()]
    assert all(u.startswith("https://") for u in urls)
    archives = [u for u in urls if u.endswith(".tgz")]
    assert all(u in CHECKS for u in archives)
    fm = [u for u in CHECKS if u.startswith(URLs.FASHION_MNIST)]
    assert len(fm) == 4 and all(len(md5) == 32 for _, md5 in CHECKS.values())


def test_md5_mismatch_is_a_clear_error(server, tmp_path):
    root, base = server
    (root / "f.bin").write_bytes(b"hello")
    with pytest.raises(OSError, match="md5 5d41402abc4b2a76b9719d911017c592, expected 00"):
        download_url(f"{base}/f.bin", tmp_path / "f.bin", md5="00" * 16, show_progress=False)
    assert download_url(
        f"{base}/f.bin", tmp_path / "f.bin", md5="5d41402abc4b2a76b9719d911017c592", show_progress=False
    ).exists()
