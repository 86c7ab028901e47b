"""CIFAR-10 reading (both standard versions, written here byte for byte), its errors, augmentation, the CLI entry."""
import importlib
import io
import os
import pickle
import struct
import tarfile

import numpy as np
import pytest

import gpudl
from gpudl import data
from gpudl.data import DataFileError, DownloadError
from gpudl.data.augment import RandomCrop, RandomHorizontalFlip

from helpers import t

C = importlib.import_module("gpudl.data.cifar10")   # the module (gpudl.data.cifar10 is the function)
NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
TRAIN = [f"data_batch_{i}" for i in range(1, 6)]


def _images(n, seed):
    """Rows as the files hold them: (n, 3072) uint8, 1024 R then 1024 G then 1024 B, each 32x32 row-major."""
    return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


def _labels(n, seed):
    return [int(v) for v in np.random.default_rng(seed + 100).integers(0, 10, n)]


def _write_py(folder, per_file=3, pickler=lambda obj, f: pickle.dump(obj, f, protocol=2)):
    """cifar-10-batches-py/ with protocol-2 pickles of dicts with bytes keys, as the real files."""
    d = folder / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rows = {}
    for k, name in enumerate(TRAIN + ["test_batch"]):
        x, y = _images(per_file, k), _labels(per_file, k)
        with open(d / name, "wb") as f:
            pickler({b"batch_label": f"batch {k}".encode(), b"labels": y, b"data": x,
                     b"filenames": [b"img%d.png" % i for i in range(per_file)]}, f)
        rows[name] = (x, y)
    with open(d / "batches.meta", "wb") as f:
        pickler({b"num_cases_per_batch": per_file, b"label_names": NAMES, b"num_vis": 3072}, f)
    return d, rows


def _write_bin(folder, per_file=3):
    """cifar-10-batches-bin/: records of 1 label byte + 3072 pixel bytes."""
    d = folder / "cifar-10-batches-bin"
    d.mkdir(parents=True)
    rows = {}
    for k, name in enumerate(TRAIN + ["test_batch"]):
        x, y = _images(per_file, k), _labels(per_file, k)
        (d / f"{name}.bin").write_bytes(b"".join(bytes([lab]) + img.tobytes() for lab, img in zip(y, x)))
        rows[name] = (x, y)
    (d / "batches.meta.txt").write_text("\n".join(n.decode() for n in NAMES) + "\n\n")
    return d, rows


def _py2_pickle(obj, f):
    """Protocol 2 as Python 2's cPickle wrote the real files: str (our bytes) as BINSTRING opcodes."""
    out = [b"\x80\x02"]

    def s(b):
        out.append(b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<i", len(b)) + b)

    def w(o):
        if isinstance(o, bytes):
            s(o)
        elif isinstance(o, bool):
            out.append(b"\x88" if o else b"\x89")
        elif isinstance(o, int):
            out.append(b"J" + struct.pack("<i", o))
        elif o is None:
            out.append(b"N")
        elif isinstance(o, (list, tuple, dict)):
            out.append({list: b"](", tuple: b"(", dict: b"}("}[type(o)])
            for v in (o if not isinstance(o, dict) else [kv for item in o.items() for kv in item]):
                w(v)
            out.append({list: b"e", tuple: b"t", dict: b"u"}[type(o)])
        else:  # ndarray: _reconstruct(ndarray, (0,), 'b') then __setstate__
            out.append(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n")
            w((0,))
            s(b"b")
            out.append(b"\x87R(")
            w(1)
            w(tuple(o.shape))
            out.append(b"cnumpy\ndtype\n")
            w((o.dtype.str[1:].encode(), 0, 1))
            out.append(b"R")
            w((3, b"|", None, None, None, -1, -1, 0))
            out.append(b"b")
            w(False)
            s(o.tobytes())
            out.append(b"tb")
    w(obj)
    f.write(b"".join(out) + b".")


def _expected(rows, names):
    x = np.concatenate([rows[n][0] for n in names])
    return x, np.concatenate([rows[n][1] for n in names])


# ---- reading -----------------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["python", "python2", "binary"])
def test_reads_both_versions(tmp_path, version):
    if version == "binary":
        _, rows = _write_bin(tmp_path / "cifar10")
    else:
        _, rows = _write_py(tmp_path / "cifar10", pickler=_py2_pickle if version == "python2" else
                            (lambda obj, f: pickle.dump(obj, f, protocol=2)))
    train, test = data.cifar10("train", root=tmp_path), data.cifar10("test", root=tmp_path)
    x, y = _expected(rows, TRAIN)
    assert train.images.shape == (15, 3, 32, 32) and train.images.dtype == np.uint8
    assert train.labels.dtype == np.int64 and train.labels.tolist() == y.tolist()
    assert test.images.shape == (3, 3, 32, 32)
    assert train.classes == tuple(n.decode() for n in NAMES)
    # pixel (c, r, s) of image n is byte c*1024 + r*32 + s of its row
    n, c, r, s = 7, 2, 5, 30
    assert train.images[n, c, r, s] == x[n, c * 1024 + r * 32 + s]
    np.testing.assert_array_equal(train.images.reshape(15, -1), x)
    np.testing.assert_array_equal(test.images.reshape(3, -1), rows["test_batch"][0])
    xb, yb = train.get_batch(np.array([3, 0]))
    assert xb.dtype == np.float32 and yb.dtype == np.int64 and xb.shape == (2, 3, 32, 32)
    np.testing.assert_allclose(xb[1], train.images[0] / 255.0, rtol=1e-6)
    assert 0.0 <= xb.min() and xb.max() <= 1.0


def test_looks_in_root_and_gpudl_data(tmp_path, monkeypatch):
    _write_bin(tmp_path)                      # <root>/cifar-10-batches-bin, not <root>/cifar10/
    monkeypatch.setenv("GPUDL_DATA", str(tmp_path))
    ds = data.cifar10("test")
    assert len(ds) == 3 and "cifar-10-batches-bin" in ds.source


def test_write_cifar10_round_trips(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (11, 3, 32, 32), dtype=np.uint8)
    y = np.arange(11) % 10
    for version in ("python", "binary"):
        data.write_cifar10(tmp_path / version, (x, y), (x[:4], y[:4]), version=version)
        ds = data.cifar10("train", root=tmp_path / version)
        np.testing.assert_array_equal(ds.images, x)
        np.testing.assert_array_equal(ds.labels, y)


def _tarball(tmp_path):
    """A CIFAR tarball of a tiny python-version folder in tmp_path/data: (open tar, rows)."""
    d, rows = _write_py(tmp_path / "src")
    tarball = tmp_path / "data" / "cifar-10-python.tar.gz"
    tarball.parent.mkdir()
    tar = tarfile.open(tarball, "w:gz")
    tar.add(d, arcname="cifar-10-batches-py")
    return tar, rows


def test_tarball_beside_is_unpacked_safely(tmp_path):
    tar, rows = _tarball(tmp_path)
    with tar:
        evil = tarfile.TarInfo("../evil.txt")
        evil.size = 4
        tar.addfile(evil, io.BytesIO(b"evil"))
        link = tarfile.TarInfo("cifar-10-batches-py/link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    ds = data.cifar10("test", root=tmp_path / "data")
    np.testing.assert_array_equal(ds.images.reshape(3, -1), rows["test_batch"][0])
    assert not (tmp_path / "evil.txt").exists()
    assert not (tmp_path / "data" / "cifar-10-batches-py" / "link").exists()


def test_unpacking_syncs_files_then_their_folder_then_the_parent(tmp_path, monkeypatch):
    """Durable before it is visible: every file, the folder they are in,
    then (after the rename) the folder it was renamed into."""
    import stat
    tar, _ = _tarball(tmp_path)
    tar.close()
    tarball = tmp_path / "data" / "cifar-10-python.tar.gz"
    events, real_fsync, real_rename = [], os.fsync, os.rename

    def fsync(fd):
        st = os.fstat(fd)
        events.append(("folder" if stat.S_ISDIR(st.st_mode) else "file", st.st_ino))
        real_fsync(fd)

    def rename(a, b):
        events.append(("rename", os.stat(a).st_ino))
        real_rename(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    C.extract_tarball(tarball, tmp_path / "data")
    kinds = [k for k, _ in events]
    n = len(list((tmp_path / "data" / "cifar-10-batches-py").iterdir()))
    assert kinds == ["file"] * n + ["folder", "rename", "folder"]
    folder_ino = events[n][1]
    assert events[n + 1][1] == folder_ino                      # the folder synced is the one renamed
    assert events[n + 2][1] == (tmp_path / "data").stat().st_ino


# ---- errors ------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["python", "binary"])
def test_missing_batch_names_the_file(tmp_path, version):
    d, _ = (_write_py if version == "python" else _write_bin)(tmp_path)
    name = "data_batch_3" + ("" if version == "python" else ".bin")
    (d / name).unlink()
    with pytest.raises(FileNotFoundError, match=rf"{name} is missing; expected data_batch_1.*data_batch_5"):
        data.cifar10("train", root=tmp_path)
    assert len(data.cifar10("test", root=tmp_path)) == 3        # the other split is whole


def test_truncated_batches_name_the_file(tmp_path):
    d, _ = _write_py(tmp_path / "py")
    raw = (d / "data_batch_2").read_bytes()
    (d / "data_batch_2").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataFileError, match=r"data_batch_2: cannot read it .*expected a pickled dict"):
        data.cifar10("train", root=tmp_path / "py")
    d, _ = _write_bin(tmp_path / "bin")
    raw = (d / "test_batch.bin").read_bytes()
    (d / "test_batch.bin").write_bytes(raw[:-100])
    with pytest.raises(DataFileError, match=r"test_batch.bin: truncated: 9,119 bytes, expected a whole number "
                                            r"of 3073-byte records"):
        data.cifar10("test", root=tmp_path / "bin")


def test_wrong_content_is_named(tmp_path):
    d, _ = _write_py(tmp_path)
    with open(d / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f, protocol=2)
    with pytest.raises(DataFileError, match=r"test_batch: data is uint8 of shape \(2, 100\), expected uint8 of "
                                            r"shape \(n, 3072\)"):
        data.cifar10("test", root=tmp_path)
    with open(d / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 12]}, f, protocol=2)
    with pytest.raises(DataFileError, match="labels must be classes 0-9, found 0..12"):
        data.cifar10("test", root=tmp_path)
    with open(d / "test_batch", "wb") as f:        # float labels are not silently truncated
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1.7, 2.2]}, f, protocol=2)
    with pytest.raises(DataFileError, match=r"test_batch: b'labels' is not a list of ints \(they are float64\)"):
        data.cifar10("test", root=tmp_path)
    with open(d / "test_batch", "wb") as f:        # keys of both kinds: still a message naming the file
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]}, f, protocol=2)
    with pytest.raises(DataFileError, match=r"test_batch: holds \['labels', b'data'\], expected a dict"):
        data.cifar10("test", root=tmp_path)
    (d / "batches.meta").write_bytes(b"x" * 158)        # the standard meta file's size: md5 checked first
    with pytest.raises(DataFileError, match="batches.meta: md5 is .*expected 5ff9c542aee3614f3951f8cda6e48888"):
        data.cifar10("train", root=tmp_path)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pickle_with_a_foreign_global_is_refused(tmp_path):
    d, _ = _write_py(tmp_path)
    marker = tmp_path / "pwned"
    with open(d / "data_batch_1", "wb") as f:
        pickle.dump({b"data": _Evil(marker), b"labels": [0]}, f, protocol=2)
    with pytest.raises(DataFileError, match=r"data_batch_1: cannot read it .*refusing to load global "
                                            r"(posix|os|nt)\.system"):
        data.cifar10("train", root=tmp_path)
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError, match="only the latin-1 encoding"):   # _codecs.encode is fenced too
        C._CifarUnpickler(io.BytesIO(pickle.dumps(b"x", protocol=2).replace(b"latin1", b"rot_13")),
                          encoding="bytes").load()


def test_nothing_found_says_where_to_put_it_and_fails_fast(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError) as e:
        data.cifar10("train", root=tmp_path, download=False)
    where = str(tmp_path / "cifar10" / "cifar-10-batches-py" / "data_batch_1")
    assert where in str(e.value) and "cifar-10-batches-bin/" in str(e.value)
    monkeypatch.setattr(C, "URLS", ("http://127.0.0.1:9/cifar-10-python.tar.gz",))   # refused at once
    budgets = []
    real = C.try_download
    monkeypatch.setattr(C, "try_download", lambda *a, **k: (budgets.append(k.get("timeout")), real(*a, **k))[1])
    with pytest.raises(DownloadError) as e:
        data.cifar10("test", root=tmp_path)
    assert budgets == [C.MIRROR_TIMEOUT]          # the mirrors get a few seconds in all, no more
    assert where in str(e.value) and "127.0.0.1:9" in str(e.value)
    with pytest.raises(ValueError, match="expected split 'train' or 'test'"):
        data.cifar10("val", root=tmp_path)


# ---- augmentation, on each device ----------------------------------------------------------------

def _batch(device, n=16, c=3, h=8, w=8, seed=0):
    x = np.random.default_rng(seed).random((n, c, h, w)).astype(np.float32)
    return x, t(x, device)


def test_random_crop_is_a_shifted_window(device):
    x, xt = _batch(device)
    crop = RandomCrop(8, padding=2, seed=3)
    y = crop(xt)
    assert y.device == xt.device and y.shape == (16, 3, 8, 8) and y.dtype == xt.dtype
    off = crop.last_offsets
    assert off.shape == (16, 2) and off.min() >= 0 and off.max() <= 4
    padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    ref = np.stack([padded[i, :, a:a + 8, b:b + 8] for i, (a, b) in enumerate(off)])
    np.testing.assert_array_equal(y.numpy(), ref)
    # non-square output, uneven padding, edge mode, uint8 input
    crop = RandomCrop((5, 7), padding=(1, 0), padding_mode="edge", seed=1)
    u = (x * 255).astype(np.uint8)
    y = crop(t(u, device))
    assert y.shape == (16, 3, 5, 7) and y.dtype == np.uint8
    padded = np.pad(u, ((0, 0), (0, 0), (0, 0), (1, 1)), mode="edge")
    for i, (a, b) in enumerate(crop.last_offsets):
        assert 0 <= a <= 3 and 0 <= b <= 3
        np.testing.assert_array_equal(y.numpy()[i], padded[i, :, a:a + 5, b:b + 7])


def test_random_crop_covers_every_offset_uniformly():
    crop = RandomCrop(32, padding=4, seed=0)
    crop(np.zeros((8100, 1, 32, 32), np.float32))
    counts = np.bincount(crop.last_offsets[:, 0] * 9 + crop.last_offsets[:, 1], minlength=81)
    assert counts.size == 81 and counts.min() > 50 and counts.max() < 160      # 100 expected each


def test_random_flip(device):
    x, xt = _batch(device, n=64)
    flip = RandomHorizontalFlip(p=0.5, seed=5)
    y = flip(xt).numpy()
    f = flip.last_flipped
    assert 10 < f.sum() < 54
    np.testing.assert_array_equal(y[f], x[f][..., ::-1])
    np.testing.assert_array_equal(y[~f], x[~f])
    np.testing.assert_array_equal(RandomHorizontalFlip(p=1.0)(xt).numpy(), x[..., ::-1])
    np.testing.assert_array_equal(RandomHorizontalFlip(p=0.0)(xt).numpy(), x)


def test_augmentation_is_seeded_and_device_independent(device):
    x, xt = _batch(device)
    make = lambda seed: data.Compose([RandomCrop(8, padding=2, seed=seed), RandomHorizontalFlip(seed=seed + 1)])
    a, b, other = make(7), make(7), make(8)
    ya = [a(xt).numpy() for _ in range(3)]
    yb = [b(xt).numpy() for _ in range(3)]
    for u, v in zip(ya, yb):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(ya[0], ya[1])                      # a new draw each batch
    assert not np.array_equal(ya[0], other(xt).numpy())
    np.testing.assert_array_equal(ya[0], make(7)(x).numpy())     # host arrays give the same: one seed, every device
    state = a.transforms[0].state_dict()
    y1 = a.transforms[0](xt).numpy()
    a.transforms[0].load_state_dict(state)
    np.testing.assert_array_equal(a.transforms[0](xt).numpy(), y1)
    gpudl.manual_seed(11)
    u = RandomCrop(8, padding=2)(xt).numpy()
    gpudl.manual_seed(11)
    np.testing.assert_array_equal(RandomCrop(8, padding=2)(xt).numpy(), u)   # seed=None: from gpudl.random


def test_augmentation_in_the_loader(device, tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (10, 3, 32, 32), dtype=np.uint8)
    data.write_cifar10(tmp_path, (x, np.arange(10)), (x[:2], np.arange(2)))
    train_tf, test_tf = data.cifar10_transforms(seed=0)
    loader = data.DataLoader(data.cifar10("train", root=tmp_path), batch_size=4, shuffle=True, seed=0,
                             device=device, transform=train_tf)
    xs = [xb for xb, _ in loader]
    assert [tuple(v.shape) for v in xs] == [(4, 3, 32, 32), (4, 3, 32, 32), (2, 3, 32, 32)]
    assert all(v.device == device and v.dtype == np.float32 for v in xs)
    normed = test_tf(t(x[:2] / np.float32(255), device)).numpy()
    mean = np.array(C.MEAN, np.float32)[:, None, None]
    std = np.array(C.STD, np.float32)[:, None, None]
    np.testing.assert_allclose(normed, (x[:2] / np.float32(255) - mean) / std, rtol=1e-5, atol=1e-5)


def test_a_resumed_loader_augments_the_same_way(tmp_path):
    """The loader's state carries the random transforms' generators (inside a Compose too)."""
    x = np.random.default_rng(1).integers(0, 256, (12, 3, 32, 32), dtype=np.uint8)
    data.write_cifar10(tmp_path, (x, np.arange(12) % 10), (x[:2], np.arange(2)))

    def loader(seed):
        train_tf, _ = data.cifar10_transforms(seed=seed)
        return data.DataLoader(data.cifar10("train", root=tmp_path), batch_size=4, shuffle=True,
                               seed=seed, transform=train_tf)
    a = loader(0)
    it = iter(a)
    next(it)
    gpudl.io.save({"loader": a.state_dict()}, tmp_path / "ckpt.npz")   # through a checkpoint file
    state = gpudl.io.load(tmp_path / "ckpt.npz")["loader"]
    rest = [xb.numpy() for xb, _ in it] + [xb.numpy() for xb, _ in a]   # rest of epoch 0, epoch 1
    b = loader(5)                                                       # other seeds everywhere
    b.load_state_dict(state)
    again = [xb.numpy() for xb, _ in b] + [xb.numpy() for xb, _ in b]
    assert len(again) == len(rest) == 5
    for u, v in zip(again, rest):
        np.testing.assert_array_equal(u, v)
    with pytest.raises(ValueError, match=r"holds 2 random transform\(s\), this loader has 0"):
        data.DataLoader(data.cifar10("train", root=tmp_path), batch_size=4, shuffle=True).load_state_dict(state)


def test_augmentation_errors():
    with pytest.raises(ValueError, match=r"expected a batch of images of shape \(N, C, H, W\), got \(3, 32, 32\)"):
        RandomCrop(32, padding=4)(np.zeros((3, 32, 32), np.float32))
    with pytest.raises(ValueError, match="a 40x40 crop does not fit 32x32 images padded by"):
        RandomCrop(40, padding=2)(np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(ValueError, match="padding_mode"):
        RandomCrop(32, padding=4, padding_mode="wrap")
    with pytest.raises(ValueError, match="probability"):
        RandomHorizontalFlip(p=1.5)


# ---- the command line ------------------------------------------------------------------------------

def test_cli_trains_resnet20_on_cifar10_with_the_paper_defaults(tmp_path, capsys):
    from gpudl import cli
    x = np.random.default_rng(0).integers(0, 256, (24, 3, 32, 32), dtype=np.uint8)
    data.write_cifar10(tmp_path / "data", (x, np.arange(24) % 10), (x[:8], np.arange(8) % 10), version="binary")
    rc = cli.main(["train", "--model", "resnet20", "--epochs", "1", "--data-root", str(tmp_path / "data"),
                   "--out", str(tmp_path / "run"), "--no-progress", "--device", "cpu"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "training resnet20 (269,722 parameters) on cifar10 (24 train / 8 test)" in out
    assert "batch 128, sgd lr 0.1, schedule cosine" in out
    assert (tmp_path / "run" / "checkpoint.npz").exists()
    train, test, (train_tf, test_tf), classes = cli.DATASETS["cifar10"][0](tmp_path / "data")
    assert classes == 10 and len(train_tf.transforms) == 3 and len(test_tf.transforms) == 1
    args = cli.build_parser().parse_args(argv := ["train", "--model", "vgg16", "--optimizer", "adam"])
    cli._apply_model_defaults(args, argv)
    assert (args.optimizer, args.lr, args.weight_decay, args.data) == ("adam", None, 5e-4, "cifar10")


def test_a_corrupt_or_cut_tarball_leaves_no_folder_behind(tmp_path):
    d, _ = _write_py(tmp_path / "src")
    good = tmp_path / "good.tar.gz"
    with tarfile.open(good, "w:gz") as tar:
        tar.add(d, arcname="cifar-10-batches-py")
    raw = bytearray(good.read_bytes())
    for name, blob in (("flipped", raw[:len(raw) // 2] + bytes(b ^ 0xFF for b in raw[len(raw) // 2:len(raw) // 2 + 16])
                        + raw[len(raw) // 2 + 16:]), ("cut", raw[:len(raw) * 2 // 3])):
        root = tmp_path / name
        root.mkdir()
        (root / "cifar-10-python.tar.gz").write_bytes(bytes(blob))
        with pytest.raises(DataFileError, match="cifar-10-python.tar.gz: cannot unpack it"):
            data.cifar10("train", root=root)
        assert sorted(p.name for p in root.iterdir()) == ["cifar-10-python.tar.gz"]   # no half folder
        (root / "cifar-10-python.tar.gz").write_bytes(good.read_bytes())       # the good one then works
        assert len(data.cifar10("test", root=root)) == 3


def test_class_names_that_are_not_utf8_name_the_file(tmp_path):
    d, _ = _write_py(tmp_path)
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [b"\xff"] * 10}, f, protocol=2)
    with pytest.raises(DataFileError, match="batches.meta: a class name is not UTF-8 text"):
        data.cifar10("test", root=tmp_path)
