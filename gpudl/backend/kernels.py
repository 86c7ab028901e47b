"""Finding, reading and compiling gpudl's CUDA kernel sources.

The ``.cu`` / ``.cuh`` files live in ``gpudl/_kernels/`` inside an installed
wheel and in ``<repo>/kernels/`` in a development checkout; :func:`kernel_dir`
looks in that order.  :func:`cupy_module_loader` returns the ``get_module``
callable that :func:`gpudl.backend.cupy_backend.make_backend` takes: it
compiles each file once per device as a ``cupy.RawModule`` and keeps it.

Nothing here imports CuPy at module level.
"""
from __future__ import annotations

import hashlib
import os
import threading

__all__ = ["KernelCompileError", "kernel_dir", "read_source", "cupy_module_loader"]

_PKG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # .../gpudl
_CANDIDATES = (
    os.path.join(_PKG_DIR, "_kernels"),                 # shipped in the wheel
    os.path.join(os.path.dirname(_PKG_DIR), "kernels"),  # development checkout
)


class KernelCompileError(RuntimeError):
    """A kernel source failed to compile; the message holds the compiler log."""


def kernel_dir() -> str:
    """The folder holding the kernel sources (``gpudl/_kernels`` first)."""
    for d in _CANDIDATES:
        if os.path.isdir(d) and any(f.endswith(".cu") for f in os.listdir(d)):
            return d
    raise FileNotFoundError(
        "gpudl's CUDA kernel sources were not found; looked for *.cu in "
        + " and ".join(repr(d) for d in _CANDIDATES))


def read_source(filename: str) -> str:
    """The text of one kernel source file, by bare name (``"conv2d.cu"``)."""
    if (not isinstance(filename, str) or not filename
            or os.path.basename(filename) != filename or filename in (".", "..")):
        raise ValueError(f"kernel source: expected a bare file name like 'conv2d.cu', got {filename!r}")
    path = os.path.join(kernel_dir(), filename)
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        have = sorted(f for f in os.listdir(kernel_dir()) if f.endswith((".cu", ".cuh")))
        raise FileNotFoundError(
            f"kernel source {filename!r} not found in {kernel_dir()!r} (it has: {', '.join(have)})"
        ) from None


def _headers_digest(d: str) -> str:
    h = hashlib.sha256()
    for name in sorted(os.listdir(d)):
        if name.endswith((".cuh", ".h")):
            h.update(name.encode())
            with open(os.path.join(d, name), "rb") as f:
                h.update(f.read())
    return h.hexdigest()[:16]


def cupy_module_loader(device_index: int):
    """``get_module(filename) -> cupy.RawModule``, compiled once for this device.

    CuPy's on-disk kernel cache is keyed by the source text and options, not
    by the headers the source includes, so the source handed to NVRTC starts
    with a digest of the headers (and a ``#line`` so logs keep the file's own
    line numbers): editing ``common.cuh`` recompiles everything that uses it.
    """
    import cupy

    device_index = int(device_index)
    cache: dict = {}
    lock = threading.Lock()

    def get_module(filename: str):
        mod = cache.get(filename)
        if mod is not None:
            return mod
        with lock:
            mod = cache.get(filename)
            if mod is not None:
                return mod
            d = kernel_dir()
            code = (f"// gpudl headers {_headers_digest(d)}\n#line 1 \"{filename}\"\n"
                    + read_source(filename))
            with cupy.cuda.Device(device_index):
                try:
                    mod = cupy.RawModule(code=code, options=(f"-I{d}", "--std=c++17"))
                    if hasattr(mod, "compile"):  # compile now, so errors surface here
                        mod.compile()
                except cupy.cuda.compiler.CompileException as e:
                    log = e.get_message() if hasattr(e, "get_message") else str(e)
                    raise KernelCompileError(
                        f"NVRTC failed to compile kernel source {filename!r} "
                        f"(from {d}) for cuda:{device_index}:\n{log}") from None
            cache[filename] = mod
            return mod

    return get_module
