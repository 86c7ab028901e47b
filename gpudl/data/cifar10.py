"""CIFAR-10: 60,000 colour images, 3x32x32, in 10 classes (Krizhevsky 2009).

>>> train = gpudl.data.cifar10("train")          # 50,000 samples
>>> train.images.shape, train.images.dtype       # ((50000, 3, 32, 32), uint8)
>>> x, y = train.get_batch(numpy.arange(128))     # float32 in [0, 1], int64
>>> train.classes[y[0]]                           # 'frog'

Either standard version is read, looked for in ``<root>/cifar10/`` and then
``<root>/`` (root: the ``root`` argument, else ``$GPUDL_DATA``, else
``~/.cache/gpudl``):

- ``cifar-10-batches-py/``: ``data_batch_1`` .. ``data_batch_5``,
  ``test_batch``, ``batches.meta`` -- Python 2 pickles of dicts with bytes
  keys (``b"data"``: 10000 x 3072 uint8, each row 1024 red, 1024 green,
  1024 blue values, each plane 32x32 row-major; ``b"labels"``: 10000 ints;
  ``b"label_names"`` in the meta file).  They are opened by an unpickler
  that admits only what those files hold (NumPy arrays, bytes, lists, dicts,
  numbers), never an arbitrary class or function;
- ``cifar-10-batches-bin/``: ``data_batch_1.bin`` .. ``test_batch.bin``,
  records of 1 label byte + 3072 pixel bytes (and ``batches.meta.txt``).

A downloaded ``cifar-10-python.tar.gz`` / ``cifar-10-binary.tar.gz`` lying in
one of those folders is unpacked there.  When nothing is found the tarball is
fetched from the authors' site (a few seconds at most; its sha256 is checked)
into ``<root>/cifar10/``; when that fails too the error says where to put
the folder.
"""
from __future__ import annotations

import codecs
import hashlib
import io
import os
import pickle
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path

import numpy

from ._util import (_NumpyUnpickler, DataFileError, DownloadError, atomic_write, data_root, fsync_dir,
                    report, search_dirs, try_download)
from .augment import RandomCrop, RandomHorizontalFlip
from .images import ImageDataset
from .transforms import Compose, Normalize

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SHAPE = (3, 32, 32)
PIXELS = 3 * 32 * 32                 # 3072 bytes an image
RECORD = 1 + PIXELS                  # one record of the binary version
PER_FILE = 10000                     # images in each standard batch file
SIZES = {"train": 50000, "test": 10000}
# per-channel mean and (population) std of the 50,000 training images, pixels in [0, 1]
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)

PY_DIR, BIN_DIR = "cifar-10-batches-py", "cifar-10-batches-bin"
FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
META = "batches.meta"
BIN_META = "batches.meta.txt"
# (size, md5) of the standard python-version files (the md5s torchvision checks); a file
# of its standard size must have that md5, whatever its source
STANDARD = {
    "data_batch_1": (31035704, "c99cafc152244af753f735de768cd75f"),
    "data_batch_2": (31035320, "d4bba439e000b95fd0a9bffe97cbabec"),
    "data_batch_3": (31035999, "54ebc095f3ab1f0389bbae665268c751"),
    "data_batch_4": (31035696, "634d18415352ddfa80567beed471001a"),
    "data_batch_5": (31035623, "482c414d41f54cd18b22e5b47cb7c3cb"),
    "test_batch": (31035526, "40351d587109b95175f43aff81a1287e"),
    "batches.meta": (158, "5ff9c542aee3614f3951f8cda6e48888"),
}

URLS = ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",)
TARBALLS = {PY_DIR: "cifar-10-python.tar.gz", BIN_DIR: "cifar-10-binary.tar.gz"}
TARBALL_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"  # 170,498,071 bytes
MIRROR_TIMEOUT = 5.0

_PY_LAYOUT = f"{', '.join(FILES['train'])}, {FILES['test'][0]} and {META}"
_BIN_LAYOUT = ", ".join(f"{n}.bin" for n in FILES["train"] + FILES["test"])


# ---- the restricted unpickler -------------------------------------------------------------

def _latin1_encode(text, encoding="latin1", errors="strict"):
    """``_codecs.encode`` as Python 3 protocol-2 pickles use it for bytes -- latin-1 only."""
    try:
        latin1 = codecs.lookup(encoding).name == "iso8859-1"
    except (LookupError, TypeError, ValueError):
        latin1 = False
    if not isinstance(text, str) or not latin1:
        raise pickle.UnpicklingError(f"refusing _codecs.encode({type(text).__name__}, {encoding!r}): "
                                     f"only the latin-1 encoding of a str is admitted")
    return text.encode("latin1", errors)


class _CifarUnpickler(_NumpyUnpickler):
    """NumPy arrays and plain containers (as :func:`load_numpy_pickle`), plus bytes pickled by Python 3."""

    def find_class(self, module, name):
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        return super().find_class(module, name)


def _check_md5(path, raw):
    size, want = STANDARD.get(path.name, (None, None))
    if len(raw) != size:
        return
    got = hashlib.md5(raw, usedforsecurity=False).hexdigest()
    if got != want:
        raise DataFileError(f"{path}: md5 is {got}, expected {want} for the standard {path.name} "
                            f"(corrupted or modified; delete it and fetch a fresh copy)")


def load_pickle(path):
    """The object in a CIFAR python-version file, unpickled with encoding='bytes' by the restricted unpickler.

    A file of a standard file's size must have its md5 (checked before
    unpickling).  Raises :class:`DataFileError` naming the file for a
    truncated or corrupt pickle, and for one that asks for any other global
    (such as ``os.system``).
    """
    raw = path.read_bytes()
    _check_md5(path, raw)
    try:
        return _CifarUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError,
            AttributeError, MemoryError) as e:
        raise DataFileError(f"{path}: cannot read it ({type(e).__name__}: {e}); expected a pickled dict of the "
                            f"CIFAR-10 python version (b'data': {PER_FILE} x {PIXELS} uint8 and b'labels' in a "
                            f"batch, b'label_names' in {META}); truncated or corrupt? fetch a fresh copy") from None


def _check_batch(path, images, labels):
    """(images (n, 3, 32, 32) uint8, labels (n,) int64) from one file's arrays, checked."""
    if images.dtype != numpy.uint8 or images.ndim != 2 or images.shape[1] != PIXELS:
        raise DataFileError(f"{path}: data is {images.dtype} of shape {images.shape}, expected uint8 of "
                            f"shape (n, {PIXELS}): 1024 red, 1024 green, 1024 blue values a row")
    if labels.shape != images.shape[:1]:
        raise DataFileError(f"{path}: {images.shape[0]} images but {labels.shape[0] if labels.ndim else 0} "
                            f"labels, expected one label per image")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataFileError(f"{path}: labels must be classes 0-9, found {labels.min()}..{labels.max()}")
    return images.reshape((-1,) + SHAPE), labels.astype(numpy.int64)


# ---- the two versions ------------------------------------------------------------------------

def _require(folder, name, layout):
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(f"cifar10: {path} is missing; expected {layout} in {folder}")
    return path


def read_python_batch(path):
    """(images (n, 3, 32, 32) uint8, labels (n,) int64) from a python-version batch file."""
    obj = load_pickle(path)
    if not isinstance(obj, dict) or b"data" not in obj or b"labels" not in obj:
        keys = sorted(obj, key=repr) if isinstance(obj, dict) else type(obj).__name__
        raise DataFileError(f"{path}: holds {keys}, expected a dict with keys b'data' and b'labels' "
                            f"(the CIFAR-10 python version)")
    try:
        images = numpy.asarray(obj[b"data"])
        raw = numpy.asarray(obj[b"labels"])
        if raw.size and raw.dtype.kind not in "iu":
            raise TypeError(f"they are {raw.dtype}")
        labels = raw.astype(numpy.int64)
    except (TypeError, ValueError) as e:
        raise DataFileError(f"{path}: b'labels' is not a list of ints ({e})") from None
    return _check_batch(path, images, labels)


def read_binary_batch(path):
    """(images (n, 3, 32, 32) uint8, labels (n,) int64) from a binary-version ``.bin`` file."""
    raw = path.read_bytes()
    if not raw or len(raw) % RECORD:
        raise DataFileError(f"{path}: truncated: {len(raw):,} bytes, expected a whole number of {RECORD}-byte "
                            f"records (1 label byte + {PIXELS} pixel bytes; {PER_FILE * RECORD:,} bytes "
                            f"for a standard batch)")
    records = numpy.frombuffer(raw, numpy.uint8).reshape(-1, RECORD)
    return _check_batch(path, numpy.ascontiguousarray(records[:, 1:]), records[:, 0].astype(numpy.int64))


def _python_classes(folder):
    path = _require(folder, META, _PY_LAYOUT)
    obj = load_pickle(path)
    names = obj.get(b"label_names") if isinstance(obj, dict) else None
    if not isinstance(names, list) or len(names) != 10 or not all(isinstance(n, (bytes, str)) for n in names):
        raise DataFileError(f"{path}: expected a dict with b'label_names', a list of 10 class names")
    try:
        return tuple(n.decode("utf-8") if isinstance(n, bytes) else n for n in names)
    except UnicodeDecodeError as e:
        raise DataFileError(f"{path}: a class name is not UTF-8 text ({e})") from None


def _binary_classes(folder):
    path = folder / BIN_META
    if not path.is_file():
        return CLASSES
    names = tuple(s.strip() for s in path.read_text("utf-8", "replace").splitlines() if s.strip())
    if len(names) != 10:
        raise DataFileError(f"{path}: {len(names)} class names, expected 10, one a line")
    return names


def _load_folder(folder, split):
    """(images, labels, classes) of ``split`` from a ``cifar-10-batches-py`` or ``-bin`` folder."""
    if folder.name == PY_DIR:
        paths = [_require(folder, n, _PY_LAYOUT) for n in FILES[split]]
        classes = _python_classes(folder)
        parts = [read_python_batch(p) for p in paths]
    else:
        paths = [_require(folder, n + ".bin", _BIN_LAYOUT) for n in FILES[split]]
        classes = _binary_classes(folder)
        parts = [read_binary_batch(p) for p in paths]
    images = numpy.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    labels = numpy.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    return images, labels, classes


# ---- finding, unpacking and fetching ---------------------------------------------------------

def extract_tarball(tarball, dest):
    """Unpack the CIFAR-10 members of ``tarball`` into ``dest``; returns the folder made.

    Only regular files named ``cifar-10-batches-{py,bin}/<file>`` are taken: no
    links, no absolute paths, nothing outside ``dest``.  The folder is built in
    a temporary directory and renamed into place whole, and the compressed
    stream is read to its end (so gzip's CRC is checked): an interrupted or
    corrupt unpack never leaves a folder behind, and two processes unpacking
    at once both end with the complete one.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest, prefix=".tmp-cifar-"))
    try:
        made = set()
        try:
            with tarfile.open(tarball, "r:*") as tar:
                for m in tar:
                    parts = m.name.split("/")
                    if not m.isfile() or len(parts) != 2 or parts[0] not in TARBALLS or parts[1] in ("", ".", ".."):
                        continue
                    (tmp / parts[0]).mkdir(exist_ok=True)
                    with tar.extractfile(m) as src, open(tmp / parts[0] / parts[1], "wb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
                        out.flush()
                        os.fsync(out.fileno())    # on disk before the folder is renamed into place
                    made.add(parts[0])
                while tar.fileobj.read(1 << 20):    # to the end: the gzip trailer's CRC is checked
                    pass
        except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
            raise DataFileError(f"{tarball}: cannot unpack it ({type(e).__name__}: {e}); expected the gzipped "
                                f"tar of the CIFAR-10 python or binary version") from None
        if not made:
            raise DataFileError(f"{tarball}: holds no {PY_DIR}/ or {BIN_DIR}/ files; expected the CIFAR-10 tarball")
        for sub in sorted(made):
            fsync_dir(tmp / sub)                   # its entries, before it is renamed into place
            try:
                os.rename(tmp / sub, dest / sub)
            except OSError:
                if not (dest / sub).is_dir():      # (a folder already there: another process won)
                    raise
        fsync_dir(dest)
        return dest / sorted(made)[0]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _find_folder(dirs):
    """The first ``cifar-10-batches-py`` / ``-bin`` folder (unpacking a tarball found beside it), or None."""
    for d in dirs:
        for sub, tarball in TARBALLS.items():
            if (d / sub).is_dir():
                return d / sub
            if (d / tarball).is_file():
                report(f"CIFAR-10: unpacking {d / tarball}")
                return extract_tarball(d / tarball, d)
    return None


def _where_to_put(dirs):
    return (f"put the folder {PY_DIR}/ (the python version: {_PY_LAYOUT}) or {BIN_DIR}/ "
            f"(the binary version: {_BIN_LAYOUT}) in {dirs[0]}/ -- e.g. {dirs[0] / PY_DIR}/data_batch_1 -- "
            f"or in {dirs[1]}/, or point $GPUDL_DATA or root= at a folder that holds it; "
            f"the tarball is {URLS[0]}")


def _fetch(cache, dirs):
    """Download and unpack the python version into ``cache``; return (folder, URL)."""
    tarball = cache / TARBALLS[PY_DIR]
    try:
        url = try_download(list(URLS), tarball, timeout=MIRROR_TIMEOUT, sha256=TARBALL_SHA256)
    except DownloadError as e:
        raise DownloadError(f"CIFAR-10 was not found locally and could not be downloaded ({e}).\n"
                            f"To use it, {_where_to_put(dirs)}") from None
    folder = extract_tarball(tarball, cache)
    tarball.unlink(missing_ok=True)
    return folder, url


# ---- writing (synthetic data sets, subsets) ------------------------------------------------------

def write_cifar10(root, train, test, version="python", classes=CLASSES):
    """Write ``train`` and ``test`` ((images (N, 3, 32, 32) uint8, labels (N,)) pairs) as a CIFAR-10 folder.

    ``version="python"`` makes ``<root>/cifar-10-batches-py/`` (protocol-2
    pickles of dicts with bytes keys, as the real files), ``"binary"``
    ``<root>/cifar-10-batches-bin/``; the training set is split over the five
    ``data_batch`` files.  Each file is written atomically.  Returns the folder.
    """
    if version not in ("python", "binary"):
        raise ValueError(f"write_cifar10: expected version 'python' or 'binary', got {version!r}")
    folder = Path(root) / (PY_DIR if version == "python" else BIN_DIR)
    for split, (images, labels) in (("train", train), ("test", test)):
        images, labels = CIFAR10(images, labels).images, numpy.asarray(labels)  # checks the shapes
        names = FILES[split]
        parts = zip(numpy.array_split(images, len(names)), numpy.array_split(labels, len(names)))
        for k, (im, lab) in enumerate(parts):
            with atomic_write(folder / (names[k] + ("" if version == "python" else ".bin"))) as f:
                if version == "python":
                    pickle.dump({b"batch_label": f"{names[k]} (gpudl)".encode(), b"labels": [int(v) for v in lab],
                                 b"data": im.reshape(len(im), PIXELS),
                                 b"filenames": [f"{i}.png".encode() for i in range(len(im))]}, f, protocol=2)
                else:
                    rec = numpy.empty((len(im), RECORD), numpy.uint8)
                    rec[:, 0], rec[:, 1:] = lab, im.reshape(len(im), PIXELS)
                    f.write(rec.tobytes())
    with atomic_write(folder / (META if version == "python" else BIN_META)) as f:
        if version == "python":
            pickle.dump({b"num_cases_per_batch": PER_FILE, b"label_names": [c.encode() for c in classes],
                         b"num_vis": PIXELS}, f, protocol=2)
        else:
            f.write("".join(f"{c}\n" for c in classes).encode())
    return folder


# ---- the dataset -------------------------------------------------------------------------------

class CIFAR10(ImageDataset):
    """CIFAR-10 images held as NumPy arrays.

    ``images``: (N, 3, 32, 32) uint8, RGB planes; ``labels``: (N,) int64;
    ``classes``: the 10 class names.  Samples and batches (``ds[i]``,
    ``get_batch(indices)``) give images as float32 in [0, 1].  Augmentation
    (:mod:`gpudl.data.augment`) runs on the loader's device, on whole batches;
    a DataLoader moves the bytes and converts them there (``get_raw_batch``).
    """

    shape = SHAPE

    def __init__(self, images, labels, classes=CLASSES, split=None, source=None):
        super().__init__(images, labels, split, source)
        self.classes = tuple(classes)


def cifar10_transforms(augment=True, normalize=True, seed=None):
    """(train, test) batch transforms: RandomCrop(32, padding=4) + RandomHorizontalFlip (when
    ``augment``) then Normalize(MEAN, STD) (when ``normalize``) for training; Normalize alone for testing."""
    norm = [Normalize(MEAN, STD)] if normalize else []
    aug = []
    if augment:
        seeds = (None, None) if seed is None else (seed, seed + 1)
        aug = [RandomCrop(32, padding=4, seed=seeds[0]), RandomHorizontalFlip(0.5, seed=seeds[1])]
    return (Compose(aug + norm) if aug or norm else None), (Compose(norm) if norm else None)


def cifar10(split="train", root=None, download=True):
    """The CIFAR-10 ``split`` ("train": 50,000 samples, "test": 10,000) as a :class:`CIFAR10` dataset.

    Looks for ``cifar-10-batches-py/`` or ``cifar-10-batches-bin/`` in
    ``<root>/cifar10/`` then ``<root>/``; when neither is there and
    ``download`` is True, fetches the python version into ``<root>/cifar10/``.
    """
    if split not in FILES:
        raise ValueError(f"cifar10: expected split 'train' or 'test', got {split!r}")
    dirs = search_dirs(root, "cifar10")
    folder = _find_folder(dirs)
    if folder is not None:
        source = f"local files at {folder}"
    elif not download:
        raise FileNotFoundError(f"cifar10: no {PY_DIR}/ or {BIN_DIR}/ in {' or '.join(map(str, dirs))}; "
                                f"{_where_to_put(dirs)} (or pass download=True)")
    else:
        folder, url = _fetch(data_root(root) / "cifar10", dirs)
        source = f"downloaded from {url} (sha256 checked) into {folder}"
    images, labels, classes = _load_folder(folder, split)
    report(f"CIFAR-10 {split}: {source}")
    return CIFAR10(images, labels, classes, split=split, source=source)
