"""save / load: nested containers of tensors in one ``.npz`` file, never a pickle.

The structure (dicts, lists, tuples, numbers, strings, None) goes into a JSON
manifest stored beside the arrays; tensors and arrays become npz members.
Files are written atomically (a temp file in the same folder, fsync, rename),
so a crash never leaves a half-written checkpoint, and are read with
``allow_pickle=False``.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy

from .tensor import Tensor, to_host
from .backend import resolve, cpu

_MANIFEST = "__gpudl_manifest__"
FORMAT = "gpudl-npz-1"


def _encode(obj, arrays):
    if isinstance(obj, Tensor):
        key = f"a{len(arrays)}"
        arrays[key] = obj.device.backend.to_numpy(obj.data)
        return {"__tensor__": key, "requires_grad": bool(obj.requires_grad)}
    if isinstance(obj, numpy.ndarray) or hasattr(obj, "__cuda_array_interface__"):
        arr = to_host(obj)
        if arr.dtype.hasobject:
            raise TypeError("save: cannot store an array of Python objects (it would need a pickle); "
                            "convert it to a numeric or string dtype")
        key = f"a{len(arrays)}"
        arrays[key] = arr
        return {"__array__": key}
    if isinstance(obj, numpy.generic):      # kept as a NumPy scalar of its dtype
        if obj.dtype.hasobject:
            raise TypeError("save: cannot store a NumPy object scalar (it would need a pickle)")
        key = f"a{len(arrays)}"
        arrays[key] = numpy.asarray(obj)
        return {"__scalar__": key}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            if any(k.startswith("__") and k.endswith("__") for k in obj):
                return {"__dict__": [[k, _encode(v, arrays)] for k, v in obj.items()]}
            return {k: _encode(v, arrays) for k, v in obj.items()}
        for k in obj:
            if not isinstance(k, (str, int, float, bool, numpy.bool_, numpy.number)) and k is not None:
                raise TypeError(f"save: dict keys must be str, int, float, bool or None, got {type(k).__name__}")
        # NumPy number keys (np.unique's, say) are stored as the Python numbers they equal
        return {"__dict__": [[k.item() if isinstance(k, numpy.generic) else k, _encode(v, arrays)]
                             for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, arrays) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, arrays) for v in obj]
    raise TypeError(f"save: cannot store an object of type {type(obj).__name__} "
                    f"(expected Tensors, arrays, numbers, strings, None, and dicts/lists/tuples of them)")


def _decode(obj, npz, device):
    if isinstance(obj, list):
        return [_decode(v, npz, device) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        arr = npz[obj["__tensor__"]]
        t = Tensor._make(device.backend.asarray(arr), device)
        t.requires_grad = obj.get("requires_grad", False)
        return t
    if "__array__" in obj:
        return npz[obj["__array__"]]
    if "__scalar__" in obj:
        return npz[obj["__scalar__"]][()]
    if "__tuple__" in obj:
        return tuple(_decode(v, npz, device) for v in obj["__tuple__"])
    if "__dict__" in obj:
        return {k: _decode(v, npz, device) for k, v in obj["__dict__"]}
    return {k: _decode(v, npz, device) for k, v in obj.items()}


def _default_perms():
    mask = os.umask(0)          # the only way to read it is to set it
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_write(path, mode="wb", perms=None):
    """Open a temporary file beside ``path``; rename it onto ``path`` only on success.

    Readers never see a half-written file; on an exception (Ctrl-C included)
    the temporary file is removed and ``path`` keeps what it had.  ``perms``:
    the file's mode bits (None: what ``open`` would give, 0o666 less the umask,
    not ``mkstemp``'s private 0o600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}.")
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _default_perms() if perms is None else perms)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def fsync_dir(folder):
    """Make a rename in ``folder`` durable (POSIX: the folder's entry is data
    of its own; without this a crash just after the rename can lose it).
    Where folders cannot be opened (Windows) there is nothing to do."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass            # some file systems refuse fsync on a folder
    finally:
        os.close(fd)


def save(obj, path):
    """Write ``obj`` (tensors, arrays and plain containers of them) to ``path`` atomically."""
    arrays = {}
    manifest = {"format": FORMAT, "root": _encode(obj, arrays)}
    arrays[_MANIFEST] = numpy.frombuffer(json.dumps(manifest).encode("utf-8"), dtype=numpy.uint8)
    with atomic_write(os.fspath(path)) as f:
        numpy.savez(f, **arrays)


def load(path, map_location=None):
    """Read what :func:`save` wrote; tensors land on ``map_location`` (default: the CPU)."""
    path = os.fspath(path)
    device = cpu() if map_location is None else resolve(map_location)
    if not os.path.exists(path):
        raise FileNotFoundError(f"load: no file at {path}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"load: {path} is not a gpudl checkpoint (expected an .npz zip archive)")
    try:
        with numpy.load(path, allow_pickle=False) as npz:
            if _MANIFEST not in npz.files:
                raise ValueError(f"load: {path} is an .npz file but not one written by gpudl.save "
                                 f"(no {_MANIFEST} member)")
            manifest = json.loads(bytes(npz[_MANIFEST]).decode("utf-8"))
            if manifest.get("format") != FORMAT:
                raise ValueError(f"load: {path} has format {manifest.get('format')!r}, expected {FORMAT!r}")
            return _decode(manifest["root"], {k: npz[k] for k in npz.files if k != _MANIFEST}, device)
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"load: {path} is not a readable gpudl checkpoint ({type(e).__name__}: {e})") from None
